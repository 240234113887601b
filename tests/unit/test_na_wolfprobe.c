/*
 * test_na_wolfprobe.c — unit tests for wolfprobe.c: the /serverinfo check, the
 * stable error texts, the latency histogram, and one real round
 * (na_wolfprobe_run_once) against local sockets: a missing unix socket, a
 * refused TCP port, a silent server (timeout), a disabled https check; and
 * the lobby count: rounds of a real prober against a unix-socket fake Wolf
 * API answering /api/v1/system/health and /api/v1/lobbies.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "json.h"
#include "wolfprobe.h"
#include "wp_test.h"

WP_TEST(serverinfo)
{
    char err[256];
    const char *good = "<?xml version=\"1.0\" encoding=\"utf-8\"?><root status_code=\"200\">"
                       "<hostname>x</hostname><state>SUNSHINE_SERVER_FREE</state></root>";
    WP_CHECK_EQ(na_probe_serverinfo_check(good, strlen(good), err, sizeof(err)), 0);
    const char *s500 = "<root status_code=\"500\"><state>X</state></root>";
    WP_CHECK_EQ(na_probe_serverinfo_check(s500, strlen(s500), err, sizeof(err)), WP_ERR_MALFORMED);
    WP_CHECK_STR(err, "bad serverinfo: no status_code=\"200\"");
    const char *nostate = "<root status_code=\"200\"><hostname>x</hostname></root>";
    WP_CHECK_EQ(na_probe_serverinfo_check(nostate, strlen(nostate), err, sizeof(err)),
                WP_ERR_MALFORMED);
    WP_CHECK_STR(err, "bad serverinfo: no <state>");
    const char *open = "<root status_code=\"200\"><state>X";
    WP_CHECK_EQ(na_probe_serverinfo_check(open, strlen(open), err, sizeof(err)), WP_ERR_MALFORMED);
    WP_CHECK_STR(err, "bad serverinfo: no <state>");
    /* bounded: the match must lie within len */
    WP_CHECK_EQ(na_probe_serverinfo_check(good, 20, err, sizeof(err)), WP_ERR_MALFORMED);
    WP_CHECK_EQ(na_probe_serverinfo_check(NULL, 0, err, sizeof(err)), WP_ERR_MALFORMED);
    const char garbage[] = "\x00\x01 this is not xml at all <<<";
    WP_CHECK_EQ(na_probe_serverinfo_check(garbage, sizeof(garbage) - 1, err, sizeof(err)),
                WP_ERR_MALFORMED);
    WP_CHECK_STR(err, "bad serverinfo: no status_code=\"200\"");
}

WP_TEST(error_texts)
{
    char err[256];
    na_probe_curl_error(CURLE_OPERATION_TIMEDOUT, 0, "Operation timed out after 1000 ms", 0, err,
                        sizeof(err));
    WP_CHECK_STR(err, "timeout");
    na_probe_curl_error(CURLE_OPERATION_TIMEDOUT, 0, "", 1, err, sizeof(err));
    WP_CHECK_STR(err, "timeout");
    na_probe_curl_error(CURLE_COULDNT_CONNECT, ECONNREFUSED, "", 0, err, sizeof(err));
    WP_CHECK_STR(err, "connection refused");
    na_probe_curl_error(CURLE_COULDNT_CONNECT, ENOENT, "", 0, err, sizeof(err));
    WP_CHECK_STR(err, "no such socket");
    na_probe_curl_error(CURLE_COULDNT_CONNECT, EACCES, "", 0, err, sizeof(err));
    WP_CHECK_STR(err, "permission denied");
    na_probe_curl_error(CURLE_WRITE_ERROR, 0, "", 0, err, sizeof(err));
    WP_CHECK_STR(err, "response too large");
    na_probe_curl_error(CURLE_GOT_NOTHING, 0, "", 0, err, sizeof(err));
    WP_CHECK_STR(err, "empty reply");
    na_probe_curl_error(CURLE_UNSUPPORTED_PROTOCOL, 0, "Received HTTP/0.9 when not allowed", 0, err,
                        sizeof(err));
    WP_CHECK_STR(err, "bad http response");
    na_probe_curl_error(CURLE_SSL_CONNECT_ERROR, 0,
                        "OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to 127.0.0.1:1 ", 1,
                        err, sizeof(err));
    WP_CHECK_STR(err, "closed before tls handshake");
    na_probe_curl_error(CURLE_SSL_CONNECT_ERROR, 0, "error:0A00010B:SSL routines::wrong version", 1,
                        err, sizeof(err));
    WP_CHECK_STR(err, "tls handshake failed: error:0A00010B:SSL routines::wrong version");
}

WP_TEST(histogram)
{
    na_probe_result r;
    memset(&r, 0, sizeof(r));
    na_probe_observe_latency(&r, 3);
    na_probe_observe_latency(&r, 100);
    na_probe_observe_latency(&r, 20000);
    na_probe_observe_latency(&r, -1);
    WP_CHECK_EQ(r.lat_count, 4);
    WP_CHECK(r.lat_sum_ms == 20103.0);
    WP_CHECK_EQ(r.lat_buckets[0], 2);  /* <= 5 */
    WP_CHECK_EQ(r.lat_buckets[3], 2);  /* <= 50 */
    WP_CHECK_EQ(r.lat_buckets[4], 3);  /* <= 100 */
    WP_CHECK_EQ(r.lat_buckets[10], 3); /* <= 10000; 20000 only in +Inf */
    WP_CHECK(na_probe_lat_bounds_ms[NA_PROBE_LAT_BUCKETS - 1] == 10000.0);
}

/* ---- one real round ---- */

typedef struct silent_srv {
    uv_tcp_t l;
    uv_tcp_t c[8];
    int n;
    int port;
} silent_srv;

static void silent_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)h;
    static char buf[4096];
    (void)sz;
    *b = uv_buf_init(buf, sizeof(buf));
}

static void silent_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)s, (void)n, (void)b;
}

static void silent_conn(uv_stream_t *l, int status)
{
    silent_srv *s = l->data;
    if (status < 0 || s->n >= 8)
        return;
    uv_tcp_t *c = &s->c[s->n++];
    uv_tcp_init(l->loop, c);
    if (uv_accept(l, (uv_stream_t *)c) == 0)
        uv_read_start((uv_stream_t *)c, silent_alloc, silent_read);
}

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

WP_TEST(run_once_failures)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    na_config cfg;
    char err[256] = "";
    char *argv[] = {"wolfpack-agent", "probe", "--node-id", "n1", "--probe-timeout", "1",
                    "--wolf-https",   "none",  NULL};
    WP_CHECK_EQ(na_config_parse(&cfg, 8, argv, no_env, err, sizeof(err)), 0);
    /* wolf: a unix socket that does not exist; wolf-http: a refused port; moonlight: removed. */
    char path[128];
    snprintf(path, sizeof(path), "/tmp/wp-test-wolfprobe-%d.sock", (int)getpid());
    unlink(path);
    uv_tcp_t tmp;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &tmp);
    uv_tcp_bind(&tmp, (const struct sockaddr *)&sa, 0);
    struct sockaddr_in got;
    int glen = sizeof(got);
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&got, &glen);
    int dead_port = ntohs(got.sin_port);
    uv_close((uv_handle_t *)&tmp, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    size_t nm = 0;
    for (size_t i = 0; i < cfg.nservices; i++) {
        na_service *s = &cfg.services[i];
        if (strcmp(s->name, "wolf") == 0)
            snprintf(s->target, sizeof(s->target), "%s", path);
        if (strcmp(s->name, "wolf-http") == 0) {
            snprintf(s->target, sizeof(s->target), "127.0.0.1");
            s->port = dead_port;
        }
        if (strcmp(s->name, "moonlight") != 0)
            cfg.services[nm++] = *s;
    }
    cfg.nservices = nm;
    cJSON *out = NULL;
    int healthy = -1;
    WP_CHECK_EQ(na_wolfprobe_run_once(&loop, &cfg, &out, &healthy, err, sizeof(err)), 0);
    WP_CHECK_EQ(healthy, 0);
    WP_CHECK(out != NULL);
    const cJSON *api = cJSON_GetObjectItemCaseSensitive(out, "api");
    const cJSON *http = cJSON_GetObjectItemCaseSensitive(out, "http");
    const cJSON *https = cJSON_GetObjectItemCaseSensitive(out, "https");
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(out, "moonlight");
    WP_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(api, "configured")));
    WP_CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(api, "ok")));
    WP_CHECK_STR(wp_json_get_str(api, "error"), "no such socket");
    WP_CHECK_STR(wp_json_get_str(http, "error"), "connection refused");
    WP_CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(https, "configured")));
    WP_CHECK(cJSON_GetObjectItemCaseSensitive(https, "ok") == NULL);
    WP_CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(ml, "configured")));
    cJSON_Delete(out);

    /* A server that accepts and never answers: "timeout" after --probe-timeout. */
    silent_srv s;
    memset(&s, 0, sizeof(s));
    uv_tcp_init(&loop, &s.l);
    s.l.data = &s;
    uv_tcp_bind(&s.l, (const struct sockaddr *)&sa, 0);
    glen = sizeof(got);
    uv_tcp_getsockname(&s.l, (struct sockaddr *)&got, &glen);
    uv_listen((uv_stream_t *)&s.l, 8, silent_conn);
    for (size_t i = 0; i < cfg.nservices; i++)
        if (strcmp(cfg.services[i].name, "wolf-http") == 0)
            cfg.services[i].port = ntohs(got.sin_port);
    uint64_t t0 = uv_now(&loop);
    WP_CHECK_EQ(na_wolfprobe_run_once(&loop, &cfg, &out, &healthy, err, sizeof(err)), 0);
    uv_update_time(&loop);
    WP_CHECK(uv_now(&loop) - t0 >= 900);
    WP_CHECK(uv_now(&loop) - t0 < 5000);
    http = cJSON_GetObjectItemCaseSensitive(out, "http");
    WP_CHECK_STR(wp_json_get_str(http, "error"), "timeout");
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(http, "latency_ms");
    WP_CHECK(cJSON_IsNumber(lat) && lat->valuedouble >= 900);
    cJSON_Delete(out);
    for (int i = 0; i < s.n; i++)
        uv_close((uv_handle_t *)&s.c[i], NULL);
    uv_close((uv_handle_t *)&s.l, NULL);
    na_config_free(&cfg);
    WP_CHECK_LOOP_CLOSED(&loop);
}

/* ---- the lobby count: a unix-socket fake of Wolf's API ---- */

#define API_MAX_CLIENTS 8

typedef struct api_srv api_srv;

typedef struct api_client {
    uv_pipe_t h;
    api_srv *s;
    char buf[2048];
    size_t len;
    int answered;
    uv_write_t wr;
    char reply[1024];
    int slot;
} api_client;

struct api_srv {
    uv_pipe_t l;
    char path[108];
    const char *health;  /* full HTTP reply to GET /api/v1/system/health */
    const char *lobbies; /* full HTTP reply to GET /api/v1/lobbies */
    int health_reqs, lobbies_reqs;
    api_client *clients[API_MAX_CLIENTS];
};

static void api_client_closed(uv_handle_t *h)
{
    api_client *c = h->data;
    c->s->clients[c->slot] = NULL;
    free(c);
}

static void api_client_close(api_client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->h))
        uv_close((uv_handle_t *)&c->h, api_client_closed);
}

static void api_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    api_client *c = h->data;
    if (c->len >= sizeof(c->buf) - 1)
        c->len = 0;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void api_written(uv_write_t *w, int status)
{
    (void)status;
    api_client_close(w->data);
}

/* Wolf's quirks: HTTP/1.0, reason always "OK", Content-Length only, close after one reply. */
static void api_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    api_client *c = st->data;
    if (n < 0) {
        api_client_close(c);
        return;
    }
    if (c->answered)
        return;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (!strstr(c->buf, "\r\n\r\n"))
        return;
    c->answered = 1;
    const char *reply = "HTTP/1.0 404 OK\r\nContent-Length: 0\r\n\r\n";
    if (strncmp(c->buf, "GET /api/v1/system/health ", 26) == 0) {
        c->s->health_reqs++;
        reply = c->s->health;
    } else if (strncmp(c->buf, "GET /api/v1/lobbies ", 20) == 0) {
        c->s->lobbies_reqs++;
        reply = c->s->lobbies;
    }
    snprintf(c->reply, sizeof(c->reply), "%s", reply);
    uv_buf_t out = uv_buf_init(c->reply, (unsigned)strlen(c->reply));
    c->wr.data = c;
    uv_write(&c->wr, st, &out, 1, api_written);
}

static void api_on_conn(uv_stream_t *l, int status)
{
    api_srv *s = l->data;
    if (status < 0)
        return;
    int slot = -1;
    for (int i = 0; i < API_MAX_CLIENTS; i++)
        if (!s->clients[i]) {
            slot = i;
            break;
        }
    api_client *c = slot >= 0 ? calloc(1, sizeof(*c)) : NULL;
    WP_CHECK(c != NULL);
    if (!c)
        return;
    c->s = s;
    c->slot = slot;
    s->clients[slot] = c;
    uv_pipe_init(l->loop, &c->h, 0);
    c->h.data = c;
    WP_CHECK_EQ(uv_accept(l, (uv_stream_t *)&c->h), 0);
    uv_read_start((uv_stream_t *)&c->h, api_alloc, api_read);
}

static char *http_reply(char *out, size_t cap, int status, const char *body)
{
    snprintf(out, cap, "HTTP/1.0 %d OK\r\nContent-Length: %zu\r\n\r\n%s", status, strlen(body),
             body);
    return out;
}

typedef struct lobby_round {
    int rounds;
    int count;   /* na_wolfprobe_lobby_count at the end of the first round */
    int healthy; /* na_wolfprobe_wolf_healthy then */
    int api_ok;
    int closed;
} lobby_round;

static void lobby_round_cb(na_wolfprobe *p, void *ud)
{
    lobby_round *r = ud;
    if (r->rounds++ > 0)
        return;
    r->count = na_wolfprobe_lobby_count(p);
    r->healthy = na_wolfprobe_wolf_healthy(p);
    const na_probe_result *res = NULL;
    WP_CHECK_EQ(na_wolfprobe_results(p, &res), NA_PROBE_CHECKS);
    r->api_ok = res[0].ok;
}

static void lobby_closed(void *ud)
{
    *(int *)ud = 1;
}

/* One round of a real prober against s with the given replies; fills *r. */
static void lobby_run(uv_loop_t *loop, const na_config *cfg, api_srv *s, const char *health,
                      const char *lobbies, lobby_round *r)
{
    memset(r, 0, sizeof(*r));
    s->health = health;
    s->lobbies = lobbies;
    s->health_reqs = s->lobbies_reqs = 0;
    wp_curlm *m = NULL;
    WP_CHECK_EQ(wp_curlm_new(loop, &m), 0);
    na_wolfprobe *p = NULL;
    WP_CHECK_EQ(na_wolfprobe_start(loop, m, cfg, lobby_round_cb, r, &p), 0);
    WP_CHECK_EQ(na_wolfprobe_lobby_count(p), -1); /* unknown before the first round */
    while (r->rounds == 0 && uv_run(loop, UV_RUN_ONCE))
        ;
    WP_CHECK_EQ(r->rounds, 1);
    na_wolfprobe_stop(p, lobby_closed, &r->closed);
    while (!r->closed && uv_run(loop, UV_RUN_ONCE))
        ;
    int mclosed = 0;
    wp_curlm_close(m, lobby_closed, &mclosed);
    while (!mclosed && uv_run(loop, UV_RUN_ONCE))
        ;
}

WP_TEST(lobby_count)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    na_config cfg;
    char err[256] = "";
    char *argv[] = {"wolfpack-agent", "probe", "--node-id", "n1", "--probe-timeout", "2",
                    "--wolf-https",   "none",  NULL};
    WP_CHECK_EQ(na_config_parse(&cfg, 8, argv, no_env, err, sizeof(err)), 0);
    api_srv s;
    memset(&s, 0, sizeof(s));
    snprintf(s.path, sizeof(s.path), "/tmp/wp-test-wolfprobe-api-%d.sock", (int)getpid());
    unlink(s.path);
    uv_pipe_init(&loop, &s.l, 0);
    s.l.data = &s;
    WP_CHECK_EQ(uv_pipe_bind(&s.l, s.path), 0);
    WP_CHECK_EQ(uv_listen((uv_stream_t *)&s.l, 8, api_on_conn), 0);
    /* Only the api check: the wolf service on the fake's socket. */
    size_t nm = 0;
    for (size_t i = 0; i < cfg.nservices; i++) {
        na_service *sv = &cfg.services[i];
        if (strcmp(sv->name, "wolf") == 0) {
            snprintf(sv->target, sizeof(sv->target), "%s", s.path);
            cfg.services[nm++] = *sv;
        }
    }
    cfg.nservices = nm;
    WP_CHECK_EQ(nm, 1);
    WP_CHECK_EQ(na_wolfprobe_lobby_count(NULL), -1);

    char health[256], lob[1024];
    http_reply(health, sizeof(health), 200, "{\"success\":true,\"overall_status\":\"healthy\"}");
    lobby_round r;

    /* Two lobbies (Wolf's shape) → 2. */
    lobby_run(&loop, &cfg, &s, health,
              http_reply(lob, sizeof(lob), 200,
                         "{\"success\":true,\"lobbies\":[{\"id\":\"1\",\"name\":\"a\","
                         "\"multi_user\":true,\"runner\":{\"type\":\"process\",\"run_cmd\":"
                         "\"x\"},\"connected_sessions\":[\"5\"]},{\"id\":\"2\",\"name\":\"b\","
                         "\"connected_sessions\":[]}]}"),
              &r);
    WP_CHECK_EQ(s.health_reqs, 1);
    WP_CHECK_EQ(s.lobbies_reqs, 1);
    WP_CHECK_EQ(r.count, 2);
    WP_CHECK_EQ(r.api_ok, 1);
    WP_CHECK_EQ(r.healthy, 1);

    /* No lobbies → 0 (known). */
    lobby_run(&loop, &cfg, &s, health,
              http_reply(lob, sizeof(lob), 200, "{\"success\":true,\"lobbies\":[]}"), &r);
    WP_CHECK_EQ(r.count, 0);
    WP_CHECK_EQ(r.api_ok, 1);

    /* Garbage, a wrong shape, an error envelope, a 404: unknown, and the api check stays ok. */
    const char *bad[][2] = {
        {"200", "this is not json {"},
        {"200", "{\"success\":true,\"lobbies\":{}}"},
        {"200", "{\"success\":false,\"lobbies\":[1]}"},
        {"200", "[1,2,3]"},
        {"200", ""},
        {"500", "{\"success\":false,\"error\":\"boom\"}"},
        {"404", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lobby_run(&loop, &cfg, &s, health, http_reply(lob, sizeof(lob), atoi(bad[i][0]), bad[i][1]),
                  &r);
        WP_CHECK_EQ(s.lobbies_reqs, 1);
        WP_CHECK_EQ(r.count, -1);
        WP_CHECK_EQ(r.api_ok, 1);
        WP_CHECK_EQ(r.healthy, 1);
    }

    /* A failing api check: no listing at all, count unknown. */
    char sick[256];
    lobby_run(
        &loop, &cfg, &s,
        http_reply(sick, sizeof(sick), 200, "{\"success\":true,\"overall_status\":\"critical\"}"),
        http_reply(lob, sizeof(lob), 200, "{\"success\":true,\"lobbies\":[]}"), &r);
    WP_CHECK_EQ(s.health_reqs, 1);
    WP_CHECK_EQ(s.lobbies_reqs, 0);
    WP_CHECK_EQ(r.api_ok, 0);
    WP_CHECK_EQ(r.healthy, 0);
    WP_CHECK_EQ(r.count, -1);

    for (int i = 0; i < API_MAX_CLIENTS; i++)
        if (s.clients[i])
            api_client_close(s.clients[i]);
    uv_close((uv_handle_t *)&s.l, NULL);
    unlink(s.path);
    na_config_free(&cfg);
    WP_CHECK_LOOP_CLOSED(&loop);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    WP_RUN(serverinfo);
    WP_RUN(error_texts);
    WP_RUN(histogram);
    WP_RUN(run_once_failures);
    WP_RUN(lobby_count);
    curl_global_cleanup();
    return wp_test_done();
}
