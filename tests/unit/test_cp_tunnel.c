/*
 * test_cp_tunnel.c — the tunnel registry and endpoint without a database:
 * the API on a server without a registry (argument checks, "no tunnel"),
 * the upgrade route's checks that run before authentication (query string,
 * method, missing token, database down, shutting down), CONNECT's 407, and a
 * shutdown that leaves no handle open. Agents with real tunnels are covered
 * by tests/integration/test_tunnel_cp.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <wolfpack/proto.h>

#include "addr.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "server.h"
#include "tunnel.h"
#include "wp_test.h"

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

static void on_open(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    (void)err;
    (void)reason;
    (void)ud;
}

static void on_closed(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    (void)err;
    (void)reason;
    (void)ud;
}

static int shut_calls;
static void on_shut(cp_server *s)
{
    (void)s;
    shut_calls++;
}

static int http_closed;
static void on_http_closed(void *ud)
{
    (void)ud;
    http_closed = 1;
}

WP_TEST(tunnel_api_without_registry)
{
    cp_server s;
    memset(&s, 0, sizeof(s));
    cp_stream_callbacks cbs = {.on_open = on_open, .on_closed = on_closed};
    cp_stream *st = NULL;
    cp_tunnel_info info;
    WP_CHECK_EQ(cp_tunnel_count(&s), 0);
    WP_CHECK_EQ(cp_tunnel_count(NULL), 0);
    WP_CHECK_EQ(cp_tunnel_connected(&s, "gpu-1"), 0);
    WP_CHECK_EQ(cp_tunnel_connected(&s, NULL), 0);
    WP_CHECK_STR(cp_tunnel_replica_id(&s), "");
    WP_CHECK_EQ(cp_tunnel_info_get(&s, "gpu-1", &info), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(cp_tunnel_info_get(&s, NULL, &info), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_tunnel_foreach(&s, NULL, NULL), 0);
    WP_CHECK_EQ(cp_tunnel_disconnect_token(&s, "00000000-0000-0000-0000-000000000000"), 0);
    WP_CHECK_EQ(cp_tunnel_disconnect_token(&s, NULL), 0);
    WP_CHECK_EQ(cp_tunnel_close_node(&s, "gpu-1", "shutdown", NULL), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(cp_tunnel_close_node(&s, "gpu-1", "no-such-reason", NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_tunnel_close_node(&s, NULL, "shutdown", NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_tunnel_open_stream(&s, "gpu-1", "{\"service\":\"wolf\"}", &cbs, NULL, &st),
                WP_ERR_NOT_FOUND);
    WP_CHECK(st == NULL);
    WP_CHECK_EQ(cp_tunnel_open_stream(&s, "gpu-1", "", &cbs, NULL, &st), WP_ERR_INVAL);
    char big[WP_PREAMBLE_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    WP_CHECK_EQ(cp_tunnel_open_stream(&s, "gpu-1", big, &cbs, NULL, &st), WP_ERR_INVAL);
    cp_stream_callbacks nocb = {.on_open = on_open};
    WP_CHECK_EQ(cp_tunnel_open_stream(&s, "gpu-1", "{}", &nocb, NULL, &st), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_tunnel_open_stream(&s, NULL, "{}", &cbs, NULL, &st), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_stream_write(NULL, "x", 1), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_stream_consumed(NULL, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_stream_close_write(NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_stream_write_room(NULL), 0);
    WP_CHECK_EQ(cp_stream_id(NULL), 0);
    cp_stream_reset(NULL);
    shut_calls = 0;
    cp_tunnels_shutdown(&s, on_shut); /* no registry: at once */
    WP_CHECK_EQ(shut_calls, 1);
}

/* One request on a fresh connection, answered while the loop runs. Returns the raw answer. */
static void http_ask(uv_loop_t *loop, int port, const char *req, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return;
    }
    size_t len = 0;
    for (int i = 0; i < 2000 && len + 1 < cap; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
        if (n > 0) {
            len += (size_t)n;
            out[len] = '\0';
            if (strstr(out, "\r\n\r\n") && strstr(out, "}}"))
                break;
        } else if (n == 0) {
            break;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            break;
        }
        usleep(1000);
    }
    close(fd);
    for (int i = 0; i < 20; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

WP_TEST(tunnel_route_checks_and_shutdown)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cp_config cfg;
    char err[256];
    char *argv[] = {"wolfpackd"};
    WP_CHECK_EQ(cp_config_parse(&cfg, 1, argv, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(cfg.heartbeat_interval_s, 10);
    WP_CHECK_EQ(cfg.max_tunnels, 1024);
    cp_server s;
    memset(&s, 0, sizeof(s));
    s.loop = &loop;
    s.cfg = &cfg;
    WP_CHECK_EQ(wp_http_server_new(&s.http, &loop, NULL), 0);
    char bound[64];
    WP_CHECK_EQ(wp_http_server_listen(s.http, "127.0.0.1:0", bound, sizeof(bound)), 0);
    char host[64];
    int port = 0;
    WP_CHECK_EQ(wp_hostport_split(bound, host, sizeof(host), &port), 0);
    WP_CHECK_EQ(cp_tunnels_init(&s), 0);
    const char *rid = cp_tunnel_replica_id(&s);
    WP_CHECK(strncmp(rid, "wolfpackd-", 10) == 0 && strlen(rid) == 18);
    WP_CHECK_EQ(cp_tunnel_count(&s), 0);

    static char resp[8192];
    http_ask(&loop, port, "GET /api/v1/tunnel?token=x HTTP/1.1\r\nHost: a\r\n\r\n", resp,
             sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 400", 12) == 0 && strstr(resp, "\"bad_request\""));
    http_ask(&loop, port, "POST /api/v1/tunnel HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
             resp, sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 405", 12) == 0 && strstr(resp, "Allow: GET"));
    http_ask(&loop, port, "GET /api/v1/tunnel HTTP/1.1\r\nHost: a\r\n\r\n", resp, sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 401", 12) == 0 &&
             strstr(resp, "WWW-Authenticate: Bearer realm=\"wolfpack\""));
    http_ask(&loop, port,
             "GET /api/v1/tunnel HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer wpagt_x\r\n\r\n",
             resp, sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 503", 12) == 0 && strstr(resp, "database_unavailable"));
    http_ask(&loop, port, "CONNECT gpu-1:wolf HTTP/1.1\r\nHost: gpu-1:wolf\r\n\r\n", resp,
             sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 407", 12) == 0 && strstr(resp, "Proxy-Authenticate: Bearer"));
    http_ask(&loop, port,
             "CONNECT gpu-1:wolf HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
             resp, sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 407", 12) == 0);

    /* shutting down: new tunnels and CONNECTs are refused, the callback comes from the loop */
    shut_calls = 0;
    cp_tunnels_shutdown(&s, on_shut);
    WP_CHECK_EQ(shut_calls, 0);
    cp_tunnels_shutdown(&s, on_shut); /* repeated: ignored */
    http_ask(&loop, port, "GET /api/v1/tunnel HTTP/1.1\r\nHost: a\r\n\r\n", resp, sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 503", 12) == 0 && strstr(resp, "over_capacity") &&
             strstr(resp, "Retry-After: 5"));
    http_ask(&loop, port, "CONNECT gpu-1:wolf HTTP/1.1\r\nHost: gpu-1:wolf\r\n\r\n", resp,
             sizeof(resp));
    WP_CHECK(strncmp(resp, "HTTP/1.1 503", 12) == 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    WP_CHECK_EQ(shut_calls, 1);
    WP_CHECK(s.tunnels == NULL);
    wp_http_server_close(s.http, on_http_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK(http_closed);
    WP_CHECK_LOOP_CLOSED(&loop);
    cp_config_free(&cfg);
}

int main(void)
{
    wp_log_set_level(WP_LOG_ERROR);
    WP_RUN(tunnel_api_without_registry);
    WP_RUN(tunnel_route_checks_and_shutdown);
    return wp_test_done();
}
