/*
 * main.c — the wolfpack CLI: admin and user commands over wolfpackd's REST API
 * (libcurl; a one-shot command, so blocking transfers are fine here).
 *
 * This file holds the global flags, command dispatch and the commands that
 * exist today (version). Resource commands (nodes, sessions, tokens, events)
 * register in the same table as their API endpoints land.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "buf.h"
#include "crypto.h"
#include "err.h"
#include "json.h"
#include "opts.h"
#include "version.h"

#define WPC_MAX_RESPONSE (4 * 1024 * 1024)

typedef struct wpc_config {
    const char *server;
    const char *token;
    const char *token_file;
    const char *ca_file;
    int insecure;
    long long timeout_s;
    int help;
    int version;
    /* tokens create */
    const char *name;
    const char *role;
    const char *node_id;
    long long expires_in;
    /* resolved */
    char token_buf[512];
} wpc_config;

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
        {"name", 0, WP_OPT_STRING, &c->name, NULL, "NAME", "tokens create: a name for the token",
         NULL, 0, 0},
        {"role", 0, WP_OPT_STRING, &c->role, NULL, "ROLE", "tokens create: admin, user or agent",
         NULL, 0, 0},
        {"node-id", 0, WP_OPT_STRING, &c->node_id, NULL, "ID",
         "tokens create: bind an agent token to this node id", NULL, 0, 0},
        {"expires-in", 0, WP_OPT_INT, &c->expires_in, NULL, "SECONDS", "tokens create: lifetime",
         "never expires", 60, 316224000},
        {"help", 'h', WP_OPT_BOOL, &c->help, NULL, NULL, "show this help and exit", NULL, 0, 0},
        {"version", 'V', WP_OPT_BOOL, &c->version, NULL, NULL, "show version and exit", NULL, 0, 0},
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
    wp_opt t[16];
    memset(&c, 0, sizeof(c));
    size_t n = wpc_table(&c, t, 16);
    fprintf(out, "Usage: wolfpack [flags] <command> [args]\n"
                 "\n"
                 "wolfpack is the command-line client of the wolfpack control plane (wolfpackd).\n"
                 "\n"
                 "Commands:\n"
                 "  version                      this client's version; with --server, also the "
                 "server's\n"
                 "  nodes list|get|drain|undrain|delete   GPU nodes and their health\n"
                 "  sessions list|get|create|delete       streaming sessions\n"
                 "  tokens list|create|revoke             API and agent tokens\n"
                 "  events list                           the audit trail\n"
                 "\n"
                 "Flags (each also settable through the environment variable shown):\n");
    wp_opts_usage(out, t, n);
    fprintf(out, "\n"
                 "Output is JSON. Exit status: 0 success, 1 the server refused or failed,\n"
                 "2 usage error, 3 the server could not be reached.\n");
}

static size_t wpc_write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    wp_buf *b = ud;
    size_t n = size * nmemb;
    if (wp_buf_put(b, p, n) != 0)
        return 0; /* over WPC_MAX_RESPONSE: abort the transfer */
    return n;
}

/*
 * One request to the server: method + path, optional JSON body, optional bearer
 * token. Returns the HTTP status with the response in out, or -1 with err set.
 */
static long wpc_request(const wpc_config *c, const char *method, const char *path, const char *json,
                        const char *token, wp_buf *out, char *err, size_t cap)
{
    char url[2048];
    char errbuf[CURL_ERROR_SIZE] = {0};
    char auth[600];
    long status = -1;
    struct curl_slist *hdrs = NULL;
    size_t slen = strlen(c->server);
    while (slen > 0 && c->server[slen - 1] == '/')
        slen--;
    if (snprintf(url, sizeof(url), "%.*s%s", (int)slen, c->server, path) >= (int)sizeof(url)) {
        snprintf(err, cap, "server URL too long");
        return -1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, cap, "cannot initialize libcurl");
        return -1;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, wpc_write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)c->timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (json) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    }
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
        wp_secure_zero(auth, sizeof(auth));
    }
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        snprintf(err, cap, "%.200s: %.250s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return status;
}

/* The API token: --token / WOLFPACK_TOKEN, else the first line of --token-file. */
static const char *wpc_token(wpc_config *c)
{
    if (c->token)
        return c->token;
    if (!c->token_file)
        return NULL;
    FILE *f = fopen(c->token_file, "re");
    if (!f)
        return NULL;
    char *got = fgets(c->token_buf, sizeof(c->token_buf), f);
    fclose(f);
    if (!got)
        return NULL;
    c->token_buf[strcspn(c->token_buf, "\r\n")] = '\0';
    return c->token_buf[0] ? c->token_buf : NULL;
}

/*
 * Runs an API call and prints the JSON answer (pretty) on stdout, or the server's
 * error message on stderr. Returns the exit status.
 */
static int wpc_api(wpc_config *c, const char *method, const char *path, const char *json)
{
    char err[512];
    if (!c->server) {
        fprintf(stderr, "wolfpack: no server: set --server or WOLFPACK_SERVER\n");
        return 2;
    }
    const char *token = wpc_token(c);
    if (!token) {
        fprintf(stderr, "wolfpack: no token: set WOLFPACK_TOKEN or --token-file%s\n",
                c->token_file ? " (cannot read it)" : "");
        return 2;
    }
    wp_buf body;
    wp_buf_init(&body, WPC_MAX_RESPONSE);
    long status = wpc_request(c, method, path, json, token, &body, err, sizeof(err));
    int rc = 0;
    cJSON *doc = NULL;
    if (status < 0) {
        fprintf(stderr, "wolfpack: %s\n", err);
        rc = 3;
    } else {
        if (wp_buf_len(&body) > 0)
            wp_json_parse((const char *)wp_buf_ptr(&body), wp_buf_len(&body), WPC_MAX_RESPONSE, 64,
                          &doc);
        if (status >= 200 && status < 300) {
            char *text = doc ? cJSON_Print(doc) : NULL;
            if (text)
                printf("%s\n", text);
            cJSON_free(text);
        } else {
            const cJSON *e = doc ? cJSON_GetObjectItemCaseSensitive(doc, "error") : NULL;
            const char *msg = e ? wp_json_get_str(e, "message") : NULL;
            const char *code = e ? wp_json_get_str(e, "code") : NULL;
            fprintf(stderr, "wolfpack: %s %s: %ld %s: %s\n", method, path, status,
                    code ? code : "error", msg ? msg : "no details");
            rc = 1;
        }
    }
    cJSON_Delete(doc);
    wp_buf_free(&body);
    wp_secure_zero(c->token_buf, sizeof(c->token_buf));
    return rc;
}

static int wpc_cmd_tokens(wpc_config *c, const char **pos, size_t npos)
{
    if (npos == 2 && strcmp(pos[1], "list") == 0)
        return wpc_api(c, "GET", "/api/v1/tokens", NULL);
    if (npos == 3 && strcmp(pos[1], "revoke") == 0) {
        char path[256];
        if (strlen(pos[2]) > 64 || strchr(pos[2], '/') || strchr(pos[2], '?')) {
            fprintf(stderr, "wolfpack: invalid token id\n");
            return 2;
        }
        snprintf(path, sizeof(path), "/api/v1/tokens/%s", pos[2]);
        return wpc_api(c, "DELETE", path, NULL);
    }
    if (npos == 2 && strcmp(pos[1], "create") == 0) {
        if (!c->name || !c->role) {
            fprintf(stderr, "wolfpack: tokens create needs --name and --role\n");
            return 2;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddStringToObject(o, "role", c->role);
        if (c->node_id)
            cJSON_AddStringToObject(o, "node_id", c->node_id);
        if (c->expires_in)
            cJSON_AddNumberToObject(o, "expires_in", (double)c->expires_in);
        char *json = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!json) {
            fprintf(stderr, "wolfpack: out of memory\n");
            return 1;
        }
        int rc = wpc_api(c, "POST", "/api/v1/tokens", json);
        cJSON_free(json);
        return rc;
    }
    fprintf(stderr,
            "wolfpack: usage: wolfpack tokens list | create --name N --role R | revoke ID\n");
    return 2;
}

static int wpc_cmd_version(const wpc_config *c)
{
    wp_version_print("wolfpack");
    if (!c->server)
        return 0;
    wp_buf body;
    char err[512];
    cJSON *doc = NULL;
    wp_buf_init(&body, WPC_MAX_RESPONSE);
    long status = wpc_request(c, "GET", "/version", NULL, NULL, &body, err, sizeof(err));
    int rc = 0;
    if (status < 0) {
        fprintf(stderr, "wolfpack: %s\n", err);
        rc = 3;
    } else if (status != 200 || wp_json_parse((const char *)wp_buf_ptr(&body), wp_buf_len(&body),
                                              WPC_MAX_RESPONSE, 16, &doc) != 0) {
        fprintf(stderr, "wolfpack: server answered %ld to GET /version\n", status);
        rc = 1;
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

int main(int argc, char **argv)
{
    wpc_config c;
    wp_opt t[16];
    const char *pos[8];
    size_t npos = 0;
    char err[512];

    memset(&c, 0, sizeof(c));
    c.timeout_s = 30;
    size_t n = wpc_table(&c, t, 16);
    if (wp_opts_parse(t, n, argc, argv, 1, wp_opts_getenv, pos, 8, &npos, err, sizeof(err)) != 0) {
        fprintf(stderr, "wolfpack: %s\n", err);
        return 2;
    }
    if (c.help || (npos > 0 && strcmp(pos[0], "help") == 0)) {
        wpc_usage(stdout);
        return 0;
    }
    if (c.version || (npos > 0 && strcmp(pos[0], "version") == 0)) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "wolfpack: cannot initialize libcurl\n");
            return 3;
        }
        int rc = wpc_cmd_version(&c);
        curl_global_cleanup();
        return rc;
    }
    if (npos == 0) {
        wpc_usage(stderr);
        return 2;
    }
    if (strcmp(pos[0], "tokens") == 0) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "wolfpack: cannot initialize libcurl\n");
            return 3;
        }
        int rc = wpc_cmd_tokens(&c, pos, npos);
        curl_global_cleanup();
        return rc;
    }
    if (strcmp(pos[0], "nodes") == 0 || strcmp(pos[0], "sessions") == 0 ||
        strcmp(pos[0], "events") == 0) {
        fprintf(stderr, "wolfpack: '%s' needs a control plane API this build does not have yet\n",
                pos[0]);
        return 2;
    }
    fprintf(stderr, "wolfpack: unknown command '%.64s' (see --help)\n", pos[0]);
    return 2;
}
