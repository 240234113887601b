/*
 * cmd_sessions.c — `wolfpack sessions list | get | create | delete (stop)` over
 * /api/v1/sessions (admin, or a user for their own sessions). create builds the request body
 * from flags (requirements, docker runner, video) or sends a whole body from --json FILE|-
 * as is; the server validates either the same way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define WPC_SESSIONS_USAGE                                                                         \
    "wolfpack sessions list [--status S] [--node ID] [--owner NAME] [--limit N] [--cursor C] "     \
    "| get ID | create --image IMG [flags] | create --json FILE|- | delete ID (alias stop)"

#define WPC_SESSIONS_CREATE_FLAGS                                                                  \
    (WPC_F_NAME | WPC_F_GPU_VENDOR | WPC_F_LABEL | WPC_F_NODE_ID | WPC_F_PREFER_LABEL |            \
     WPC_F_IMAGE | WPC_F_ENV | WPC_F_WIDTH | WPC_F_HEIGHT | WPC_F_REFRESH)

/*
 * Adds the k=v pairs of every item of l ("a=b" or "a=b,c=d") to the object o.
 * Returns 0, or WPC_EXIT_USAGE after printing which item is malformed.
 */
static int wpc_sessions_labels(const wp_strlist *l, const char *flag, cJSON *o)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *p = l->items[i];
        for (;;) {
            size_t len = strcspn(p, ",");
            const char *eq = memchr(p, '=', len);
            char key[128];
            if (!eq || eq == p || (size_t)(eq - p) >= sizeof(key))
                return wpc_usage_error("--%s: expected k=v[,k=v...], got \"%.64s\"", flag,
                                       l->items[i]);
            memcpy(key, p, (size_t)(eq - p));
            key[eq - p] = '\0';
            if (cJSON_GetObjectItemCaseSensitive(o, key))
                return wpc_usage_error("--%s: key \"%.64s\" given twice", flag, key);
            char *val = strndup(eq + 1, len - (size_t)(eq - p) - 1);
            int ok = val && cJSON_AddStringToObject(o, key, val) != NULL;
            free(val);
            if (!ok) {
                fprintf(stderr, "wolfpack: internal: out of memory\n");
                return WPC_EXIT_REFUSED;
            }
            if (p[len] == '\0')
                break;
            p += len + 1;
        }
    }
    return 0;
}

/* The create body from flags in *out (cJSON_free it). Returns 0 or the exit status. */
static int wpc_sessions_body(wpc_config *c, char **out)
{
    *out = NULL;
    if (!c->image)
        return wpc_usage_error("sessions create needs --image IMG (or --json FILE)");
    cJSON *o = cJSON_CreateObject();
    cJSON *rq = cJSON_CreateObject();
    cJSON *runner = o ? cJSON_AddObjectToObject(o, "runner") : NULL;
    int rc = 0;
    int ok = o && rq && runner && (!c->name || cJSON_AddStringToObject(o, "name", c->name)) &&
             cJSON_AddStringToObject(runner, "type", "docker") &&
             cJSON_AddStringToObject(runner, "image", c->image) &&
             (!c->gpu_vendor || cJSON_AddStringToObject(rq, "gpu_vendor", c->gpu_vendor)) &&
             (!c->node_id || cJSON_AddStringToObject(rq, "node_id", c->node_id));
    if (ok && c->label.n) {
        cJSON *l = cJSON_AddObjectToObject(rq, "labels");
        ok = l != NULL;
        if (ok)
            rc = wpc_sessions_labels(&c->label, "label", l);
    }
    if (ok && rc == 0 && c->prefer_label.n) {
        cJSON *l = cJSON_AddObjectToObject(rq, "prefer_labels");
        ok = l != NULL;
        if (ok)
            rc = wpc_sessions_labels(&c->prefer_label, "prefer-label", l);
    }
    if (ok && rc == 0 && c->env.n) {
        cJSON *env = cJSON_AddArrayToObject(runner, "env");
        ok = env != NULL;
        for (size_t i = 0; ok && i < c->env.n; i++) {
            if (!strchr(c->env.items[i], '=') || c->env.items[i][0] == '=') {
                rc = wpc_usage_error("--env: expected KEY=value, got \"%.64s\"", c->env.items[i]);
                break;
            }
            cJSON *s = cJSON_CreateString(c->env.items[i]);
            ok = s && cJSON_AddItemToArray(env, s);
            if (!ok)
                cJSON_Delete(s);
        }
    }
    if (ok && rc == 0 && (c->width || c->height || c->refresh_rate)) {
        cJSON *v = cJSON_AddObjectToObject(o, "video");
        ok = v && (!c->width || cJSON_AddNumberToObject(v, "width", (double)c->width)) &&
             (!c->height || cJSON_AddNumberToObject(v, "height", (double)c->height)) &&
             (!c->refresh_rate ||
              cJSON_AddNumberToObject(v, "refresh_rate", (double)c->refresh_rate));
    }
    if (ok && rc == 0 && rq->child) {
        ok = cJSON_AddItemToObject(o, "requirements", rq);
        if (ok)
            rq = NULL;
    }
    if (ok && rc == 0)
        *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(rq);
    cJSON_Delete(o);
    if (rc == 0 && !*out) {
        fprintf(stderr, "wolfpack: internal: out of memory\n");
        rc = WPC_EXIT_REFUSED;
    }
    return rc;
}

/* Reads --json FILE (or stdin for "-") into *out (free it). Returns 0 or the exit status. */
static int wpc_sessions_read_json(const char *file, char **out)
{
    *out = NULL;
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "re");
    if (!f)
        return wpc_usage_error("--json: cannot open %.200s", file);
    char *b = malloc(WPC_MAX_BODY + 1);
    size_t n = b ? fread(b, 1, WPC_MAX_BODY + 1, f) : 0;
    int failed = ferror(f);
    if (f != stdin)
        fclose(f);
    int rc = 0;
    if (!b) {
        fprintf(stderr, "wolfpack: internal: out of memory\n");
        rc = WPC_EXIT_REFUSED;
    } else if (failed) {
        rc = wpc_usage_error("--json: cannot read %.200s", file);
    } else if (n > WPC_MAX_BODY) {
        rc = wpc_usage_error("--json: the body is larger than %d bytes", WPC_MAX_BODY);
    } else if (memchr(b, '\0', n)) {
        rc = wpc_usage_error("--json: the file holds a NUL byte: not JSON text");
    }
    if (rc != 0) {
        free(b);
        return rc;
    }
    b[n] = '\0';
    *out = b;
    return 0;
}

static int wpc_sessions_create(wpc_config *c)
{
    char *body = NULL;
    int rc;
    if (c->json) {
        if (wpc_flags_check(c, WPC_F_JSON, "sessions create --json") != 0)
            return WPC_EXIT_USAGE;
        rc = wpc_sessions_read_json(c->json, &body);
        if (rc == 0)
            rc = wpc_api(c, "POST", "/api/v1/sessions", body);
        free(body);
        return rc;
    }
    if (wpc_flags_check(c, WPC_SESSIONS_CREATE_FLAGS, "sessions create") != 0)
        return WPC_EXIT_USAGE;
    rc = wpc_sessions_body(c, &body);
    if (rc == 0)
        rc = wpc_api(c, "POST", "/api/v1/sessions", body);
    cJSON_free(body);
    return rc;
}

static int wpc_sessions_list(wpc_config *c)
{
    if (wpc_flags_check(c,
                        WPC_F_STATUS | WPC_F_NODE | WPC_F_OWNER | WPC_F_LIMIT | WPC_F_PAGE_SIZE |
                            WPC_F_CURSOR,
                        "sessions list") != 0)
        return WPC_EXIT_USAGE;
    wpc_query q;
    wpc_query_init(&q);
    wpc_query_add(&q, c, "status", c->status);
    wpc_query_add(&q, c, "node", c->node);
    wpc_query_add(&q, c, "owner", c->owner);
    int rc = wpc_api_list(c, "/api/v1/sessions", &q, "sessions");
    wpc_query_free(&q);
    return rc;
}

int wpc_cmd_sessions(wpc_config *c, const char **pos, size_t npos)
{
    const char *verb = npos >= 2 ? pos[1] : "";
    char path[WPC_ARG_MAX * 3 + 64];
    if (npos == 2 && strcmp(verb, "list") == 0)
        return wpc_sessions_list(c);
    if (npos == 2 && strcmp(verb, "create") == 0)
        return wpc_sessions_create(c);
    if (npos == 3 &&
        (strcmp(verb, "get") == 0 || strcmp(verb, "delete") == 0 || strcmp(verb, "stop") == 0)) {
        int get = strcmp(verb, "get") == 0;
        char what[32];
        snprintf(what, sizeof(what), "sessions %s", verb);
        if (wpc_flags_check(c, 0, what) != 0)
            return WPC_EXIT_USAGE;
        int rc = wpc_path_id(c, "/api/v1/sessions", pos[2], "", path, sizeof(path));
        return rc != 0 ? rc : wpc_api(c, get ? "GET" : "DELETE", path, NULL);
    }
    return wpc_usage_error("%s", WPC_SESSIONS_USAGE);
}
