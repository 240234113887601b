/*
 * cli.h — what the wolfpack CLI's files share: the parsed flags, the one request path to
 * wolfpackd (http.c) and the command entry points (cmd_*.c).
 *
 * Exit statuses, the same for every command: WPC_EXIT_OK 0, WPC_EXIT_REFUSED 1 (the server
 * answered with an error, or an answer we cannot use), WPC_EXIT_USAGE 2 (bad flags or
 * arguments, no server or token), WPC_EXIT_UNREACHABLE 3 (no answer: DNS, connect, TLS,
 * timeout). Errors are one line on stderr: "wolfpack: <code>: <message>".
 */
#ifndef WPC_CLI_H
#define WPC_CLI_H

#include <stddef.h>

#include <curl/curl.h>

#include "buf.h"
#include "opts.h"

#define WPC_EXIT_OK          0
#define WPC_EXIT_REFUSED     1
#define WPC_EXIT_USAGE       2
#define WPC_EXIT_UNREACHABLE 3

#define WPC_MAX_RESPONSE (4 * 1024 * 1024) /* one answer */
#define WPC_MAX_BODY     (1024 * 1024)     /* sessions create --json: the server's body limit */
#define WPC_PAGE_MAX     500               /* the API's largest page */
#define WPC_PAGES_MAX    20                /* list commands follow next_cursor this often */
#define WPC_LIMIT_MAX    (WPC_PAGE_MAX * WPC_PAGES_MAX)
#define WPC_ARG_MAX      512 /* a positional id or a flag value put into a URL */

/* Bits of the per-command flags given, to refuse the ones a command does not take. */
enum {
    WPC_F_NAME = 1u << 0,
    WPC_F_ROLE = 1u << 1,
    WPC_F_NODE_ID = 1u << 2,
    WPC_F_EXPIRES_IN = 1u << 3,
    WPC_F_STATUS = 1u << 4,
    WPC_F_GPU_VENDOR = 1u << 5,
    WPC_F_LABEL = 1u << 6,
    WPC_F_LIMIT = 1u << 7,
    WPC_F_CURSOR = 1u << 8,
    WPC_F_FORCE = 1u << 9,
    WPC_F_NODE = 1u << 10,
    WPC_F_SESSION = 1u << 11,
    WPC_F_OWNER = 1u << 12,
    WPC_F_SINCE = 1u << 13,
    WPC_F_TYPE = 1u << 14,
    WPC_F_IMAGE = 1u << 15,
    WPC_F_ENV = 1u << 16,
    WPC_F_PREFER_LABEL = 1u << 17,
    WPC_F_WIDTH = 1u << 18,
    WPC_F_HEIGHT = 1u << 19,
    WPC_F_REFRESH = 1u << 20,
    WPC_F_JSON = 1u << 21,
    WPC_F_PAGE_SIZE = 1u << 22,
};

typedef struct wpc_config {
    /* global */
    const char *server;
    const char *token;
    const char *token_file;
    const char *ca_file;
    int insecure;
    long long timeout_s;
    int help;
    int version;
    /* per command (see wpc_given) */
    const char *name;
    const char *role;
    const char *node_id;
    long long expires_in;
    const char *status;
    const char *gpu_vendor;
    wp_strlist label;
    long long limit;
    long long page_size;
    const char *cursor;
    int force;
    const char *node;
    const char *session;
    const char *owner;
    const char *since;
    const char *type;
    const char *image;
    wp_strlist env;
    wp_strlist prefer_label;
    long long width, height, refresh_rate;
    const char *json;
    /* resolved */
    CURL *curl; /* one handle for every request of the run (connection reuse across pages) */
    char token_buf[512];
} wpc_config;

/* Query parameters under construction ("a=1&b=x%20y", no '?'); bounded by its wp_buf. */
typedef struct wpc_query {
    wp_buf buf;
    int failed; /* an escape or append failed: the caller answers "out of memory" */
} wpc_query;

/* ---- http.c ---- */

/* Frees whatever the request path holds (the token copy is wiped). */
void wpc_http_close(wpc_config *c);

/*
 * Appends "name=<value URL-encoded with curl_easy_escape>" to q (NULL value: nothing).
 * Failures latch q->failed. wpc_query_init/free bracket its life.
 */
void wpc_query_init(wpc_query *q);
void wpc_query_add(wpc_query *q, wpc_config *c, const char *name, const char *value);
void wpc_query_free(wpc_query *q);

/*
 * Writes "<prefix>/<id URL-encoded><suffix>" into out. Returns 0, or WPC_EXIT_USAGE after
 * printing why (empty or too long id).
 */
int wpc_path_id(wpc_config *c, const char *prefix, const char *id, const char *suffix, char *out,
                size_t cap);

/*
 * The one path every API command takes: sends method + path (+ JSON body) with the bearer
 * token, prints the answer's JSON pretty on stdout (nothing for an empty 2xx answer) or the
 * error as one line on stderr. Returns the exit status.
 */
int wpc_api(wpc_config *c, const char *method, const char *path, const char *json);

/*
 * A list command: GETs path + query (q may be empty) page after page, following next_cursor
 * (c->page_size items a request, at most WPC_PAGES_MAX pages; with c->limit, until that many
 * items), and prints one
 * object {"<key>": [every item], "next_cursor": <the last page's>}. Returns the exit status.
 */
int wpc_api_list(wpc_config *c, const char *path, wpc_query *q, const char *key);

/*
 * One unauthenticated request (version): the HTTP status with the answer in out, or -1 with
 * a one-line reason in err.
 */
long wpc_request(wpc_config *c, const char *method, const char *path, const char *json,
                 const char *token, wp_buf *out, char *err, size_t cap);

/* Prints "wolfpack: usage: <text>" on stderr; returns WPC_EXIT_USAGE. */
int wpc_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- main.c ---- */

/*
 * Refuses per-command flags outside `allowed` (WPC_F_* bits), naming the first one.
 * Returns 0, or WPC_EXIT_USAGE after printing which flag does not apply to `what`.
 */
int wpc_flags_check(const wpc_config *c, unsigned allowed, const char *what);

/* ---- cmd_*.c: each returns the exit status; pos[0] is the resource word ---- */

int wpc_cmd_tokens(wpc_config *c, const char **pos, size_t npos);
int wpc_cmd_nodes(wpc_config *c, const char **pos, size_t npos);
int wpc_cmd_sessions(wpc_config *c, const char **pos, size_t npos);
int wpc_cmd_events(wpc_config *c, const char **pos, size_t npos);

#endif
