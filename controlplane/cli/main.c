/*
 * main.c — the wolfpack CLI: admin and user commands over wolfpackd's REST API.
 *
 * This file holds the flags (one table for parsing and --help), the check that a command
 * was given only flags it takes, and command dispatch. Requests go through http.c; each
 * resource's commands are in cmd_<resource>.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "cli.h"
#include "json.h"
#include "version.h"

#define WPC_OPTS_MAX 48
#define WPC_POS_MAX  8

static size_t wpc_table(wpc_config *c, wp_opt *t, size_t cap)
{
    const wp_opt opts[] = {
        {"server", 's', WP_OPT_STRING, &c->server, "WOLFPACK_SERVER", "URL",
         "control plane base URL, https://host:8443", NULL, 0, 0},
        {"token", 't', WP_OPT_STRING, &c->token, "WOLFPACK_TOKEN", "TOKEN",
         "API token (prefer --token-file or the env var: flags are visible in ps)", NULL, 0, 0},
        {"token-file", 0, WP_OPT_STRING, &c->token_file, "WOLFPACK_TOKEN_FILE", "FILE",
         "read the API token from FILE (e.g. <state-dir>/admin.token)", NULL, 0, 0},
        {"ca-file", 0, WP_OPT_STRING, &c->ca_file, "WOLFPACK_CA_FILE", "FILE",
         "CA to verify the server with (e.g. <state-dir>/tls/ca.crt)", "system CAs", 0, 0},
        {"insecure-skip-verify", 'k', WP_OPT_BOOL, &c->insecure, NULL, NULL,
         "do not verify the server certificate (DANGEROUS)", NULL, 0, 0},
        {"timeout", 0, WP_OPT_INT, &c->timeout_s, "WOLFPACK_TIMEOUT", "SECONDS",
         "give up on a request after this long", "30", 1, 3600},
        {"help", 'h', WP_OPT_BOOL, &c->help, NULL, NULL, "show this help and exit", NULL, 0, 0},
        {"version", 'V', WP_OPT_BOOL, &c->version, NULL, NULL, "show version and exit", NULL, 0, 0},
        /* list commands */
        {"status", 0, WP_OPT_STRING, &c->status, NULL, "S", "nodes/sessions list: only this status",
         NULL, 0, 0},
        {"gpu-vendor", 0, WP_OPT_STRING, &c->gpu_vendor, NULL, "V",
         "nodes list, sessions create: nvidia, amd, intel or none", NULL, 0, 0},
        {"label", 0, WP_OPT_LIST, &c->label, NULL, "k=v,...",
         "nodes list, sessions create: nodes with all these labels", NULL, 0, 0},
        {"node", 0, WP_OPT_STRING, &c->node, NULL, "ID", "sessions/events list: on this node", NULL,
         0, 0},
        {"session", 0, WP_OPT_STRING, &c->session, NULL, "ID", "events list: of this session", NULL,
         0, 0},
        {"owner", 0, WP_OPT_STRING, &c->owner, NULL, "NAME",
         "sessions list: of this owner (token name; admin only)", NULL, 0, 0},
        {"type", 0, WP_OPT_STRING, &c->type, NULL, "T",
         "events list: of this type, e.g. node.online", NULL, 0, 0},
        {"since", 0, WP_OPT_STRING, &c->since, NULL, "RFC3339",
         "events list: created at or after, e.g. 2026-01-02T15:04:05Z", NULL, 0, 0},
        {"limit", 0, WP_OPT_INT, &c->limit, NULL, "N",
         "list commands: at most N items (pages are followed up to 20)", "every page", 1,
         WPC_LIMIT_MAX},
        {"page-size", 0, WP_OPT_INT, &c->page_size, NULL, "N", "list commands: items per request",
         "500", 1, WPC_PAGE_MAX},
        {"cursor", 0, WP_OPT_STRING, &c->cursor, NULL, "C",
         "list commands: start after this next_cursor", NULL, 0, 0},
        /* nodes */
        {"force", 0, WP_OPT_BOOL, &c->force, NULL, NULL,
         "nodes delete: even with active sessions (they are stopped)", NULL, 0, 0},
        /* sessions create */
        {"image", 0, WP_OPT_STRING, &c->image, NULL, "IMG",
         "sessions create: the docker image to run", NULL, 0, 0},
        {"name", 0, WP_OPT_STRING, &c->name, NULL, "NAME", "sessions create, tokens create: a name",
         NULL, 0, 0},
        {"node-id", 0, WP_OPT_STRING, &c->node_id, NULL, "ID",
         "sessions create: on exactly this node; tokens create: bind an agent token to it", NULL, 0,
         0},
        {"prefer-label", 0, WP_OPT_LIST, &c->prefer_label, NULL, "k=v,...",
         "sessions create: prefer nodes with these labels", NULL, 0, 0},
        {"env", 0, WP_OPT_LIST, &c->env, NULL, "K=V", "sessions create: container environment",
         NULL, 0, 0},
        {"width", 0, WP_OPT_INT, &c->width, NULL, "W", "sessions create: video width", "1920", 1,
         100000},
        {"height", 0, WP_OPT_INT, &c->height, NULL, "H", "sessions create: video height", "1080", 1,
         100000},
        {"refresh-rate", 0, WP_OPT_INT, &c->refresh_rate, NULL, "R",
         "sessions create: video refresh rate (Hz)", "60", 1, 100000},
        {"json", 0, WP_OPT_STRING, &c->json, NULL, "FILE|-",
         "sessions create: send this request body as is (- reads stdin)", NULL, 0, 0},
        /* tokens create */
        {"role", 0, WP_OPT_STRING, &c->role, NULL, "ROLE", "tokens create: admin, user or agent",
         NULL, 0, 0},
        {"expires-in", 0, WP_OPT_INT, &c->expires_in, NULL, "SECONDS", "tokens create: lifetime",
         "never expires", 60, 316224000},
    };
    size_t n = sizeof(opts) / sizeof(opts[0]);
    if (n > cap)
        n = cap;
    memcpy(t, opts, n * sizeof(opts[0]));
    return n;
}

static void wpc_usage(FILE *out)
{
    wpc_config c;
    wp_opt t[WPC_OPTS_MAX];
    memset(&c, 0, sizeof(c));
    size_t n = wpc_table(&c, t, WPC_OPTS_MAX);
    fprintf(out,
            "Usage: wolfpack [flags] <command> [args]\n"
            "\n"
            "wolfpack is the command-line client of the wolfpack control plane (wolfpackd).\n"
            "\n"
            "Commands:\n"
            "  version                   this client's version; with --server, also the server's\n"
            "  nodes list [--status S] [--gpu-vendor V] [--label k=v,...]\n"
            "  nodes get|drain|undrain ID\n"
            "  nodes delete ID [--force]\n"
            "  sessions list [--status S] [--node ID] [--owner NAME]\n"
            "  sessions get ID\n"
            "  sessions create --image IMG [--name N] [--gpu-vendor V] [--label k=v,...]\n"
            "                  [--node-id ID] [--prefer-label k=v,...] [--env K=V]...\n"
            "                  [--width W] [--height H] [--refresh-rate R]\n"
            "  sessions create --json FILE|-      the whole request body (see the API docs)\n"
            "  sessions delete|stop ID\n"
            "  tokens list\n"
            "  tokens create --name N --role admin|user|agent [--node-id ID] [--expires-in S]\n"
            "  tokens revoke ID\n"
            "  events list [--node ID] [--session ID] [--type T] [--since RFC3339]\n"
            "  (list commands also take --limit N, --page-size N and --cursor C)\n"
            "\n"
            "Flags (the first ones also settable through the environment variable shown):\n");
    wp_opts_usage(out, t, n);
    fprintf(out, "\n"
                 "Output is the API's JSON, pretty-printed; list commands follow next_cursor and\n"
                 "print every page's items in one list. Errors are one line on stderr,\n"
                 "\"wolfpack: <code>: <message>\". Exit status: 0 success, 1 the server refused\n"
                 "or failed, 2 usage error, 3 the server could not be reached.\n");
}

int wpc_flags_check(const wpc_config *c, unsigned allowed, const char *what)
{
    const struct {
        unsigned bit;
        int given;
        const char *flag;
    } f[] = {
        {WPC_F_NAME, c->name != NULL, "name"},
        {WPC_F_ROLE, c->role != NULL, "role"},
        {WPC_F_NODE_ID, c->node_id != NULL, "node-id"},
        {WPC_F_EXPIRES_IN, c->expires_in != 0, "expires-in"},
        {WPC_F_STATUS, c->status != NULL, "status"},
        {WPC_F_GPU_VENDOR, c->gpu_vendor != NULL, "gpu-vendor"},
        {WPC_F_LABEL, c->label.n > 0, "label"},
        {WPC_F_LIMIT, c->limit != 0, "limit"},
        {WPC_F_CURSOR, c->cursor != NULL, "cursor"},
        {WPC_F_FORCE, c->force != 0, "force"},
        {WPC_F_NODE, c->node != NULL, "node"},
        {WPC_F_SESSION, c->session != NULL, "session"},
        {WPC_F_OWNER, c->owner != NULL, "owner"},
        {WPC_F_SINCE, c->since != NULL, "since"},
        {WPC_F_TYPE, c->type != NULL, "type"},
        {WPC_F_IMAGE, c->image != NULL, "image"},
        {WPC_F_ENV, c->env.n > 0, "env"},
        {WPC_F_PREFER_LABEL, c->prefer_label.n > 0, "prefer-label"},
        {WPC_F_WIDTH, c->width != 0, "width"},
        {WPC_F_HEIGHT, c->height != 0, "height"},
        {WPC_F_REFRESH, c->refresh_rate != 0, "refresh-rate"},
        {WPC_F_JSON, c->json != NULL, "json"},
        {WPC_F_PAGE_SIZE, c->page_size != 0, "page-size"},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (f[i].given && !(allowed & f[i].bit)) {
            wpc_usage_error("--%s does not apply to %s (see --help)", f[i].flag, what);
            return WPC_EXIT_USAGE;
        }
    return 0;
}

static int wpc_cmd_version(wpc_config *c)
{
    wp_version_print("wolfpack");
    if (!c->server)
        return WPC_EXIT_OK;
    wp_buf body;
    char err[512];
    cJSON *doc = NULL;
    wp_buf_init(&body, WPC_MAX_RESPONSE);
    long status = wpc_request(c, "GET", "/version", NULL, NULL, &body, err, sizeof(err));
    int rc = WPC_EXIT_OK;
    if (status == -1) {
        fprintf(stderr, "wolfpack: unreachable: %s\n", err);
        rc = WPC_EXIT_UNREACHABLE;
    } else if (status != 200 || wp_json_parse((const char *)wp_buf_ptr(&body), wp_buf_len(&body),
                                              WPC_MAX_RESPONSE, 16, &doc) != 0) {
        fprintf(stderr, "wolfpack: bad_response: server answered %ld to GET /version\n", status);
        rc = WPC_EXIT_REFUSED;
    } else {
        const char *v = wp_json_get_str(doc, "version");
        const char *commit = wp_json_get_str(doc, "commit");
        const char *bt = wp_json_get_str(doc, "build_time");
        printf("server %s (commit %s, built %s)\n", v ? v : "?", commit ? commit : "?",
               bt ? bt : "?");
    }
    cJSON_Delete(doc);
    wp_buf_free(&body);
    return rc;
}

/* Runs the command named by pos[0]; returns the exit status. */
static int wpc_dispatch(wpc_config *c, const char **pos, size_t npos)
{
    static const struct {
        const char *name;
        int (*fn)(wpc_config *, const char **, size_t);
    } cmds[] = {
        {"nodes", wpc_cmd_nodes},
        {"sessions", wpc_cmd_sessions},
        {"tokens", wpc_cmd_tokens},
        {"events", wpc_cmd_events},
    };
    if (c->version || strcmp(pos[0], "version") == 0)
        return wpc_cmd_version(c);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(pos[0], cmds[i].name) == 0)
            return cmds[i].fn(c, pos, npos);
    return wpc_usage_error("unknown command '%.64s' (see --help)", pos[0]);
}

int main(int argc, char **argv)
{
    wpc_config c;
    wp_opt t[WPC_OPTS_MAX];
    const char *pos[WPC_POS_MAX];
    size_t npos = 0;
    char err[512];

    memset(&c, 0, sizeof(c));
    c.timeout_s = 30;
    size_t n = wpc_table(&c, t, WPC_OPTS_MAX);
    int rc;
    if (wp_opts_parse(t, n, argc, argv, 1, wp_opts_getenv, pos, WPC_POS_MAX, &npos, err,
                      sizeof(err)) != 0) {
        fprintf(stderr, "wolfpack: usage: %s\n", err);
        rc = WPC_EXIT_USAGE;
    } else if (c.help || (npos > 0 && strcmp(pos[0], "help") == 0)) {
        wpc_usage(stdout);
        rc = WPC_EXIT_OK;
    } else if (npos == 0 && !c.version) {
        wpc_usage(stderr);
        rc = WPC_EXIT_USAGE;
    } else if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "wolfpack: internal: cannot initialize libcurl\n");
        rc = WPC_EXIT_REFUSED;
    } else {
        static const char *version_word[] = {"version"};
        rc = wpc_dispatch(&c, npos ? pos : version_word, npos ? npos : 1);
        wpc_http_close(&c);
        curl_global_cleanup();
    }
    wp_strlist_free(&c.label);
    wp_strlist_free(&c.prefer_label);
    wp_strlist_free(&c.env);
    return rc;
}
