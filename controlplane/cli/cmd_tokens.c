/*
 * cmd_tokens.c — `wolfpack tokens list | create | revoke` over /api/v1/tokens (admin).
 * The secret a create answers with is printed once, as the API returns it; nothing else
 * prints a token.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define WPC_TOKENS_USAGE                                                                           \
    "wolfpack tokens list | create --name N --role admin|user|agent [--node-id ID] "               \
    "[--expires-in S] | revoke ID"

int wpc_cmd_tokens(wpc_config *c, const char **pos, size_t npos)
{
    const char *verb = npos >= 2 ? pos[1] : "";
    if (npos == 2 && strcmp(verb, "list") == 0) {
        if (wpc_flags_check(c, 0, "tokens list") != 0)
            return WPC_EXIT_USAGE;
        return wpc_api(c, "GET", "/api/v1/tokens", NULL);
    }
    if (npos == 3 && strcmp(verb, "revoke") == 0) {
        char path[WPC_ARG_MAX * 3 + 64];
        if (wpc_flags_check(c, 0, "tokens revoke") != 0)
            return WPC_EXIT_USAGE;
        int rc = wpc_path_id(c, "/api/v1/tokens", pos[2], "", path, sizeof(path));
        return rc != 0 ? rc : wpc_api(c, "DELETE", path, NULL);
    }
    if (npos == 2 && strcmp(verb, "create") == 0) {
        if (wpc_flags_check(c, WPC_F_NAME | WPC_F_ROLE | WPC_F_NODE_ID | WPC_F_EXPIRES_IN,
                            "tokens create") != 0)
            return WPC_EXIT_USAGE;
        if (!c->name || !c->role)
            return wpc_usage_error("tokens create needs --name and --role");
        cJSON *o = cJSON_CreateObject();
        int ok =
            o && cJSON_AddStringToObject(o, "name", c->name) &&
            cJSON_AddStringToObject(o, "role", c->role) &&
            (!c->node_id || cJSON_AddStringToObject(o, "node_id", c->node_id)) &&
            (!c->expires_in || cJSON_AddNumberToObject(o, "expires_in", (double)c->expires_in));
        char *json = ok ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (!json) {
            fprintf(stderr, "wolfpack: internal: out of memory\n");
            return WPC_EXIT_REFUSED;
        }
        int rc = wpc_api(c, "POST", "/api/v1/tokens", json);
        cJSON_free(json);
        return rc;
    }
    return wpc_usage_error("%s", WPC_TOKENS_USAGE);
}
