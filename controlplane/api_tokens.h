/*
 * api_tokens.h — /api/v1/tokens: mint (secret shown once), list (never secrets), revoke.
 */
#ifndef CP_API_TOKENS_H
#define CP_API_TOKENS_H

#include "server.h"

/* Registers the token routes (admin only). 0 or a WP_ERR_* from the router. */
int cp_api_tokens_register(cp_server *s);

#endif
