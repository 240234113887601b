/*
 * api_events.h — /api/v1/events: the audit log as cursor pages, and live as
 * Server-Sent Events (GET /api/v1/events/stream), admin only.
 */
#ifndef CP_API_EVENTS_H
#define CP_API_EVENTS_H

#include <stddef.h>

#include "server.h"

#define CP_EVENTS_PAGE_DEFAULT 100
#define CP_EVENTS_PAGE_MAX     500
#define CP_SSE_STREAMS_MAX     64        /* concurrent streams per process; more get 503 */
#define CP_SSE_POLL_MS         1000      /* each stream polls the events table this often */
#define CP_SSE_KEEPALIVE_MS    15000     /* ": keepalive" comment after this much silence */
#define CP_SSE_SETTLE_MS       3000      /* how long a gap in event ids may still fill */
#define CP_SSE_BATCH           200       /* rows read per poll */
#define CP_SSE_PENDING_MAX     (1 << 20) /* bytes of SSE text waiting for the socket */

/* Registers the event routes (admin only). 0 or a WP_ERR_* from the router. */
int cp_api_events_register(cp_server *s);

/*
 * Nonzero if s is an RFC 3339 date-time PostgreSQL accepts:
 * YYYY-MM-DD('T'|'t')HH:MM:SS[.1-9 digits]('Z'|'z'|('+'|'-')HH:MM), year >= 1, a real
 * calendar day (leap years), hour <= 23, minute <= 59, second <= 60, offset <= 14:59.
 */
int cp_api_events_time_valid(const char *s);

/*
 * Parses an event cursor / Last-Event-ID: 1 to 16 decimal digits, value <= 2^53.
 * Returns 0 with *out set, or WP_ERR_INVAL.
 */
int cp_api_events_cursor_parse(const char *s, long long *out);

/* Open SSE streams now (all servers of the process). */
size_t cp_api_events_streams(void);

#endif
