/*
 * api_sessions.h — /api/v1/sessions: create, list, get and stop streaming
 * sessions (admins: every session; users: only their own, others answer 404).
 */
#ifndef CP_API_SESSIONS_H
#define CP_API_SESSIONS_H

#include "server.h"

#define CP_SESSIONS_PAGE_DEFAULT 100
#define CP_SESSIONS_PAGE_MAX     500

/* Registers the session routes. 0 or a WP_ERR_* from the router. */
int cp_api_sessions_register(cp_server *s);

#endif
