/*
 * test_na_proxy.c — unit tests for the agent's pure egress and status pieces:
 * HTTPS_PROXY/NO_PROXY selection and matching (proxy.c), counters (stats.c)
 * and the /metrics rendering (status.c).
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "proxy.h"
#include "stats.h"
#include "status.h"
#include "wp_test.h"

#include <curl/curl.h>

static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; fake_env && fake_env[i]; i += 2)
        if (strcmp(fake_env[i], name) == 0)
            return fake_env[i + 1];
    return NULL;
}

WP_TEST(proxy_env_lowercase_wins)
{
    const char *p = NULL, *np = NULL;
    static const char *const e1[] = {"HTTPS_PROXY", "http://upper:1",
                                     "https_proxy", "http://lower:2",
                                     "NO_PROXY",    "UP",
                                     "no_proxy",    "low",
                                     NULL};
    fake_env = e1;
    na_proxy_from_env(fake_getenv, &p, &np);
    WP_CHECK_STR(p, "http://lower:2");
    WP_CHECK_STR(np, "low");
    static const char *const e2[] = {"HTTPS_PROXY", "http://upper:1", "https_proxy", "", NULL};
    fake_env = e2;
    na_proxy_from_env(fake_getenv, &p, &np);
    WP_CHECK_STR(p, "http://upper:1"); /* empty lowercase counts as unset */
    WP_CHECK(np == NULL);
    fake_env = NULL;
    na_proxy_from_env(fake_getenv, &p, &np);
    WP_CHECK(p == NULL && np == NULL);
}

WP_TEST(proxy_noproxy_matching)
{
    WP_CHECK(na_proxy_excluded("*", "cp.example.com", 443));
    WP_CHECK(na_proxy_excluded("example.com", "cp.example.com", 443));
    WP_CHECK(na_proxy_excluded(".example.com", "cp.example.com", 443));
    WP_CHECK(na_proxy_excluded("example.com", "EXAMPLE.com.", 443));
    WP_CHECK(!na_proxy_excluded("example.com", "badexample.com", 443));
    WP_CHECK(!na_proxy_excluded("cp.example.com", "example.com", 443));
    WP_CHECK(na_proxy_excluded("foo, bar.org ,example.com", "cp.example.com", 8443));
    WP_CHECK(na_proxy_excluded("10.1.2.3", "10.1.2.3", 443));
    WP_CHECK(!na_proxy_excluded("10.1.2.3", "10.1.2.4", 443));
    WP_CHECK(na_proxy_excluded("10.0.0.0/8", "10.200.1.1", 443));
    WP_CHECK(!na_proxy_excluded("10.0.0.0/8", "11.0.0.1", 443));
    WP_CHECK(na_proxy_excluded("192.168.1.0/25", "192.168.1.127", 443));
    WP_CHECK(!na_proxy_excluded("192.168.1.0/25", "192.168.1.128", 443));
    WP_CHECK(na_proxy_excluded("fd00::/8", "fd12::1", 443));
    WP_CHECK(na_proxy_excluded("::1", "::1", 443));
    WP_CHECK(na_proxy_excluded("[::1]:8443", "::1", 8443));
    WP_CHECK(!na_proxy_excluded("[::1]:8443", "::1", 443));
    WP_CHECK(na_proxy_excluded("cp.example.com:8443", "cp.example.com", 8443));
    WP_CHECK(!na_proxy_excluded("cp.example.com:8443", "cp.example.com", 443));
    WP_CHECK(!na_proxy_excluded("10.0.0.0/8", "cp.example.com", 443)); /* CIDR vs name */
    WP_CHECK(!na_proxy_excluded("", "cp.example.com", 443));
    WP_CHECK(!na_proxy_excluded(NULL, "cp.example.com", 443));
    WP_CHECK(!na_proxy_excluded(", ,", "cp.example.com", 443));
    WP_CHECK(!na_proxy_excluded("10.0.0.0/x", "10.0.0.1", 443));
}

WP_TEST(proxy_new_validates)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256] = "";
    na_proxy *p = NULL;
    WP_CHECK_EQ(na_proxy_new(&loop, "ftp://h:21", NULL, &p, err, sizeof(err)), WP_ERR_CONFIG);
    WP_CHECK(strstr(err, "unsupported proxy scheme") != NULL);
    WP_CHECK_EQ(na_proxy_new(&loop, "http://h:3128/some/path", NULL, &p, err, sizeof(err)),
                WP_ERR_CONFIG);
    WP_CHECK_EQ(na_proxy_new(&loop, "http://user:pa%40ss-word@proxy.corp:3128", "x.org", &p, err,
                             sizeof(err)),
                0);
    WP_CHECK_STR(na_proxy_display(p), "http://proxy.corp:3128");
    WP_CHECK(na_proxy_has_auth(p));
    WP_CHECK(na_proxy_applies(p, "cp.example.com", 443));
    WP_CHECK(!na_proxy_applies(p, "a.x.org", 443));
    WP_CHECK_EQ(na_proxy_take_failure(p, err, sizeof(err)), 0);
    na_proxy_close(p, NULL, NULL);
    p = NULL;
    WP_CHECK_EQ(na_proxy_new(&loop, "proxy.corp:3128", NULL, &p, err, sizeof(err)), 0);
    WP_CHECK_STR(na_proxy_display(p), "http://proxy.corp:3128"); /* scheme-less = http */
    WP_CHECK(!na_proxy_has_auth(p));
    na_proxy_close(p, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_LOOP_CLOSED(&loop);
}

WP_TEST(stats_reasons)
{
    na_stats s;
    na_stats_init(&s);
    na_stats_reconnect(&s); /* nothing recorded: connection_lost */
    na_stats_end(&s, NA_RECONNECT_PROXY_FAILED);
    na_stats_end(&s, NA_RECONNECT_DIAL_FAILED); /* the first cause wins */
    na_stats_reconnect(&s);
    WP_CHECK_EQ(s.reconnects_total[NA_RECONNECT_CONNECTION_LOST], 1);
    WP_CHECK_EQ(s.reconnects_total[NA_RECONNECT_PROXY_FAILED], 1);
    WP_CHECK_EQ(s.reconnects_total[NA_RECONNECT_DIAL_FAILED], 0);
    WP_CHECK_EQ(na_stats_connect_reason(WP_ERR_PERM), NA_RECONNECT_AUTH_REFUSED);
    WP_CHECK_EQ(na_stats_connect_reason(WP_ERR_VERIFY), NA_RECONNECT_TLS_FAILED);
    WP_CHECK_EQ(na_stats_connect_reason(WP_ERR_TIMEOUT), NA_RECONNECT_DIAL_FAILED);
    WP_CHECK_EQ(na_stats_connect_reason(WP_ERR_PROTO), NA_RECONNECT_HANDSHAKE_FAILED);
    na_stats_dial_failed(&s, "not_allowed");
    na_stats_dial_failed(&s, "busy");
    WP_CHECK_EQ(s.dial_failures_total[NA_DIAL_NOT_ALLOWED], 1);
    WP_CHECK_EQ(s.dial_failures_total[NA_DIAL_OTHER], 1);
    na_stats_dial_ok(&s, 0.003);
    na_stats_dial_ok(&s, 100);
    WP_CHECK_EQ(s.streams_opened_total, 2);
    WP_CHECK_EQ(s.dial_lat_buckets[2], 1); /* <= 0.005 */
    WP_CHECK_EQ(s.dial_lat_count, 2);
}

WP_TEST(status_render)
{
    na_stats s;
    na_stats_init(&s);
    s.tunnel_state = NA_TUNNEL_CONNECTED;
    s.bytes_in_total = 1234;
    na_stats_dial_ok(&s, 0.003);
    na_stats_end(&s, NA_RECONNECT_DEAD_PEER);
    na_stats_reconnect(&s);
    na_status_sources src = {.stats = &s};
    wp_buf b;
    wp_buf_init(&b, NA_STATUS_METRICS_MAX);
    WP_CHECK_EQ(na_status_render_metrics(&src, &b), 0);
    WP_CHECK_EQ(wp_buf_put_u8(&b, 0), 0);
    const char *t = (const char *)wp_buf_ptr(&b);
    WP_CHECK(strstr(t, "\nwolfpack_agent_tunnel_connected 1\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_tunnel_state{state=\"connected\"} 1\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_tunnel_state{state=\"hello\"} 0\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_reconnects_total{reason=\"dead_peer\"} 1\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_tunnel_bytes_total{direction=\"in\"} 1234\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_stream_dial_seconds_bucket{le=\"0.005\"} 1\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_stream_dial_seconds_bucket{le=\"5\"} 1\n") != NULL);
    WP_CHECK(strstr(t, "# TYPE wolfpack_agent_stream_dial_seconds histogram\n") != NULL);
    WP_CHECK(strstr(t, "wolfpack_agent_gpu") == NULL); /* no GPU source */
    WP_CHECK(strstr(t, "wolfpack_agent_probe") == NULL);
    wp_buf_free(&b);
    wp_buf_init(&b, 64);
    WP_CHECK_EQ(na_status_render_metrics(&src, &b), WP_ERR_LIMIT);
    wp_buf_free(&b);
    WP_CHECK_EQ(na_status_render_metrics(NULL, &b), WP_ERR_INVAL);
    WP_CHECK(na_status_disabled("none") && na_status_disabled("NONE"));
    WP_CHECK(!na_status_disabled("127.0.0.1:9465"));
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    WP_RUN(proxy_env_lowercase_wins);
    WP_RUN(proxy_noproxy_matching);
    WP_RUN(proxy_new_validates);
    WP_RUN(stats_reasons);
    WP_RUN(status_render);
    curl_global_cleanup();
    return wp_test_done();
}
