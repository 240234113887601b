/*
 * cmd_events.c — `wolfpack events list` over GET /api/v1/events (admin): the audit trail,
 * oldest first, filtered by node, session, type and time, pages followed through next_cursor.
 */
#include <string.h>

#include "cli.h"

int wpc_cmd_events(wpc_config *c, const char **pos, size_t npos)
{
    if (npos != 2 || strcmp(pos[1], "list") != 0)
        return wpc_usage_error("wolfpack events list [--node ID] [--session ID] [--type T] "
                               "[--since RFC3339] [--limit N] [--cursor C]");
    if (wpc_flags_check(c,
                        WPC_F_NODE | WPC_F_SESSION | WPC_F_TYPE | WPC_F_SINCE | WPC_F_LIMIT |
                            WPC_F_PAGE_SIZE | WPC_F_CURSOR,
                        "events list") != 0)
        return WPC_EXIT_USAGE;
    wpc_query q;
    wpc_query_init(&q);
    wpc_query_add(&q, c, "node", c->node);
    wpc_query_add(&q, c, "session", c->session);
    wpc_query_add(&q, c, "type", c->type);
    wpc_query_add(&q, c, "since", c->since);
    int rc = wpc_api_list(c, "/api/v1/events", &q, "events");
    wpc_query_free(&q);
    return rc;
}
