/*
 * test_na_wolfprobe.c — unit tests for wolfprobe.c: the /serverinfo check, the
 * stable error texts, the latency histogram, and one real round
 * (na_wolfprobe_run_once) against local sockets: a missing unix socket, a
 * refused TCP port, a silent server (timeout), a disabled https check.
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

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    WP_RUN(serverinfo);
    WP_RUN(error_texts);
    WP_RUN(histogram);
    WP_RUN(run_once_failures);
    curl_global_cleanup();
    return wp_test_done();
}
