/*
 * test_conn.c — unit tests for conn.c over real loopback sockets: plain and TLS
 * echo, bounded write queue with on_drain, close from inside on_data, connect
 * failures/timeouts, and the TLS handshake gate (limit, FIFO, timeouts).
 */
#include <stdlib.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "cert.h"
#include "conn.h"
#include "err.h"
#include "tls.h"
#include "wp_test.h"

/* ---- a tiny echo server on a listener ---- */

typedef struct echo_srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    wp_tls_conf *tls;
    wp_conn_gate gate;
    wp_conn_limits lim;
    int accepted, busy, closed, errors, ready;
    int close_in_data; /* close the conn from inside on_data */
    wp_conn *conns[16];
    int nconns;
} echo_srv;

static void srv_on_data(wp_conn *c, const uint8_t *p, size_t n, void *ud)
{
    echo_srv *s = ud;
    if (s->close_in_data) {
        wp_conn_close(c);
        wp_conn_close(c); /* idempotent */
        WP_CHECK_EQ(wp_conn_write(c, p, n), WP_ERR_CLOSED);
        return;
    }
    WP_CHECK_EQ(wp_conn_write(c, p, n), 0);
}

static void srv_on_eof(wp_conn *c, void *ud)
{
    (void)ud;
    wp_conn_shutdown(c);
    wp_conn_close(c);
}

static void srv_on_error(wp_conn *c, int err, void *ud)
{
    echo_srv *s = ud;
    (void)c;
    (void)err;
    s->errors++;
}

static void srv_on_ready(wp_conn *c, void *ud)
{
    echo_srv *s = ud;
    WP_CHECK(wp_conn_is_tls(c));
    s->ready++;
}

static void srv_on_close(wp_conn *c, void *ud)
{
    echo_srv *s = ud;
    s->closed++;
    for (int i = 0; i < s->nconns; i++)
        if (s->conns[i] == c)
            s->conns[i] = NULL;
}

static const wp_conn_callbacks srv_cbs = {.on_ready = srv_on_ready,
                                          .on_data = srv_on_data,
                                          .on_eof = srv_on_eof,
                                          .on_error = srv_on_error,
                                          .on_close = srv_on_close};

static void srv_on_conn(uv_stream_t *l, int status)
{
    echo_srv *s = l->data;
    WP_CHECK_EQ(status, 0);
    wp_conn *c = NULL;
    int rc = wp_conn_accept(l, s->tls, &s->gate, &s->lim, &srv_cbs, s, &c);
    if (rc == WP_ERR_BUSY) {
        s->busy++;
        return;
    }
    WP_CHECK_EQ(rc, 0);
    if (rc == 0) {
        s->accepted++;
        if (s->nconns < 16)
            s->conns[s->nconns++] = c;
    }
}

static void srv_start(echo_srv *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    wp_conn_limits_default(&s->lim);
    wp_conn_gate_init(&s->gate, 64, 64);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_storage ss;
    socklen_t len;
    WP_CHECK_EQ(wp_addr_parse("127.0.0.1:0", -1, &ss, &len), 0);
    WP_CHECK_EQ(uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0), 0);
    WP_CHECK_EQ(uv_listen((uv_stream_t *)&s->listener, 64, srv_on_conn), 0);
    int n = sizeof(ss);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &n);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void srv_stop(echo_srv *s)
{
    uv_close((uv_handle_t *)&s->listener, NULL);
    for (int i = 0; i < s->nconns; i++)
        if (s->conns[i])
            wp_conn_close(s->conns[i]);
}

/* ---- client ---- */

typedef struct client {
    echo_srv *srv;
    wp_conn *c;
    int status, done, closed, eof, drains, errors;
    size_t want;
    wp_buf got;
    int limit_hits;
    size_t sent, total;
    uint8_t *payload;
} client;

static void cli_on_data(wp_conn *c, const uint8_t *p, size_t n, void *ud)
{
    client *cl = ud;
    WP_CHECK_EQ(wp_buf_put(&cl->got, p, n), 0);
    if (wp_buf_len(&cl->got) >= cl->want) {
        wp_conn_close(c);
    }
}

static void cli_on_eof(wp_conn *c, void *ud)
{
    client *cl = ud;
    cl->eof++;
    wp_conn_close(c);
}

static void cli_on_error(wp_conn *c, int err, void *ud)
{
    client *cl = ud;
    (void)c;
    (void)err;
    cl->errors++;
}

static void cli_on_close(wp_conn *c, void *ud)
{
    client *cl = ud;
    (void)c;
    cl->closed++;
    cl->c = NULL;
}

static void cli_pump(client *cl)
{
    while (cl->sent < cl->total) {
        size_t k = cl->total - cl->sent < 100000 ? cl->total - cl->sent : 100000;
        int rc = wp_conn_write(cl->c, cl->payload + cl->sent, k);
        if (rc == WP_ERR_LIMIT) {
            cl->limit_hits++;
            return;
        }
        WP_CHECK_EQ(rc, 0);
        if (rc < 0)
            return;
        cl->sent += k;
    }
}

static void cli_on_drain(wp_conn *c, void *ud)
{
    client *cl = ud;
    (void)c;
    cl->drains++;
    cli_pump(cl);
}

static const wp_conn_callbacks cli_cbs = {.on_data = cli_on_data,
                                          .on_eof = cli_on_eof,
                                          .on_error = cli_on_error,
                                          .on_drain = cli_on_drain,
                                          .on_close = cli_on_close};

static void cli_connected(wp_conn *c, int status, void *ud)
{
    client *cl = ud;
    cl->done++;
    cl->status = status;
    cl->c = c;
    if (!c)
        return;
    WP_CHECK(wp_conn_loop(c) != NULL);
    wp_conn_set_callbacks(c, &cli_cbs, cl);
    WP_CHECK_EQ(wp_conn_read_start(c), 0);
    cli_pump(cl);
}

static void fill_payload(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + (i >> 9));
}

static void run_echo(wp_tls_conf *srv_tls, wp_tls_conf *cli_tls, size_t total, size_t max_wq)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    echo_srv s;
    srv_start(&s, &loop);
    s.tls = srv_tls;
    client cl;
    memset(&cl, 0, sizeof(cl));
    cl.total = cl.want = total;
    cl.payload = malloc(total);
    fill_payload(cl.payload, total);
    wp_buf_init(&cl.got, total + 1);
    wp_conn_limits lim;
    wp_conn_limits_default(&lim);
    lim.max_write_queue = max_wq;
    WP_CHECK_EQ(wp_conn_connect(&loop, "localhost", s.port, cli_tls, "localhost", 5000, &lim,
                                cli_connected, &cl),
                0);
    while (cl.closed == 0 && (cl.done == 0 || cl.c))
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(cl.done, 1);
    WP_CHECK_EQ(cl.status, 0);
    WP_CHECK_EQ(wp_buf_len(&cl.got), total);
    WP_CHECK(wp_buf_len(&cl.got) == total && memcmp(wp_buf_ptr(&cl.got), cl.payload, total) == 0);
    if (total > max_wq) {
        WP_CHECK(cl.limit_hits > 0);
        WP_CHECK(cl.drains > 0);
    }
    if (srv_tls)
        WP_CHECK_EQ(s.ready, 1);
    srv_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(s.closed, s.accepted);
    free(cl.payload);
    wp_buf_free(&cl.got);
}

WP_TEST(conn_plain_echo_small)
{
    run_echo(NULL, NULL, 5, 1 << 20);
}

WP_TEST(conn_plain_echo_backpressure)
{
    /* 3 MB through a 256 KiB write queue: WP_ERR_LIMIT then on_drain */
    run_echo(NULL, NULL, 3u << 20, 256 * 1024);
}

WP_TEST(conn_close_inside_on_data)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    echo_srv s;
    srv_start(&s, &loop);
    s.close_in_data = 1;
    client cl;
    memset(&cl, 0, sizeof(cl));
    cl.total = 1000;
    cl.want = 1;
    cl.payload = malloc(cl.total);
    fill_payload(cl.payload, cl.total);
    wp_buf_init(&cl.got, 100);
    WP_CHECK_EQ(
        wp_conn_connect(&loop, "127.0.0.1", s.port, NULL, NULL, 5000, NULL, cli_connected, &cl), 0);
    while (cl.closed == 0)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(cl.status, 0);
    WP_CHECK_EQ(wp_buf_len(&cl.got), 0);
    WP_CHECK(cl.eof + cl.errors == 1); /* server closed on us */
    srv_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(s.closed, 1);
    free(cl.payload);
    wp_buf_free(&cl.got);
}

WP_TEST(conn_connect_failures)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    client cl;
    memset(&cl, 0, sizeof(cl));
    /* invalid arguments: returns < 0, callback never called */
    WP_CHECK_EQ(wp_conn_connect(&loop, "", 80, NULL, NULL, 1000, NULL, cli_connected, &cl),
                WP_ERR_INVAL);
    WP_CHECK_EQ(wp_conn_connect(&loop, "127.0.0.1", 0, NULL, NULL, 1000, NULL, cli_connected, &cl),
                WP_ERR_INVAL);
    WP_CHECK_EQ(
        wp_conn_connect(&loop, "127.0.0.1", 70000, NULL, NULL, 1000, NULL, cli_connected, &cl),
        WP_ERR_INVAL);
    WP_CHECK_EQ(wp_conn_connect(&loop, "127.0.0.1", 80, NULL, NULL, 0, NULL, cli_connected, &cl),
                WP_ERR_INVAL);
    /* refused: find a free port by binding and closing */
    uv_tcp_t t;
    uv_tcp_init(&loop, &t);
    struct sockaddr_storage ss;
    socklen_t len;
    wp_addr_parse("127.0.0.1:0", -1, &ss, &len);
    uv_tcp_bind(&t, (struct sockaddr *)&ss, 0);
    int n = sizeof(ss);
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &n);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(
        wp_conn_connect(&loop, "127.0.0.1", port, NULL, NULL, 2000, NULL, cli_connected, &cl), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(cl.done, 1);
    WP_CHECK_EQ(cl.status, WP_ERR_IO);
    WP_CHECK(cl.c == NULL);
    /* unresolvable name */
    memset(&cl, 0, sizeof(cl));
    WP_CHECK_EQ(wp_conn_connect(&loop, "no-such-host.invalid", 80, NULL, NULL, 3000, NULL,
                                cli_connected, &cl),
                0);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(cl.done, 1);
    WP_CHECK(cl.status == WP_ERR_IO || cl.status == WP_ERR_TIMEOUT);
    WP_CHECK_LOOP_CLOSED(&loop);
}

/* A TCP server that accepts but never answers: TLS client times out. */
static void mute_on_conn(uv_stream_t *l, int status)
{
    (void)status;
    uv_tcp_t *t = malloc(sizeof(*t));
    uv_tcp_init(l->loop, t);
    uv_accept(l, (uv_stream_t *)t);
    uv_handle_t **slot = l->data;
    *slot = (uv_handle_t *)t;
}

static void free_close_cb(uv_handle_t *h)
{
    free(h);
}

/* ---- TLS ---- */

static char g_certdir[256];
static wp_cert_paths g_paths;
static int g_have_certs;

static int certs_setup(void)
{
    strcpy(g_certdir, "/tmp/wp_test_conn_XXXXXX");
    if (!mkdtemp(g_certdir))
        return -1;
    int gen = 0;
    char err[256];
    int rc = wp_cert_ensure(g_certdir, NULL, &g_paths, &gen, err, sizeof(err));
    if (rc < 0) {
        printf("  wp_cert_ensure: %s\n", err);
        return rc;
    }
    g_have_certs = 1;
    return 0;
}

static void certs_cleanup(void)
{
    if (!g_have_certs)
        return;
    unlink(g_paths.ca_crt);
    unlink(g_paths.ca_key);
    unlink(g_paths.server_crt);
    unlink(g_paths.server_key);
    rmdir(g_certdir);
}

static void tls_confs(wp_tls_conf **srv, wp_tls_conf **cli)
{
    char err[256];
    *srv = *cli = NULL;
    WP_CHECK_EQ(
        wp_tls_conf_server_new(srv, g_paths.server_crt, g_paths.server_key, err, sizeof(err)), 0);
    wp_tls_client_opts o = {.ca_file = g_paths.ca_crt};
    WP_CHECK_EQ(wp_tls_conf_client_new(cli, &o, err, sizeof(err)), 0);
}

WP_TEST(conn_tls_echo)
{
    wp_tls_conf *srv, *cli;
    tls_confs(&srv, &cli);
    if (!srv || !cli)
        return;
    run_echo(srv, cli, 100, 1 << 20);
    run_echo(srv, cli, 2u << 20, 128 * 1024); /* backpressure through TLS */
    wp_tls_conf_unref(srv);
    wp_tls_conf_unref(cli);
}

WP_TEST(conn_tls_client_timeout)
{
    wp_tls_conf *srv, *cli;
    tls_confs(&srv, &cli);
    if (!srv || !cli)
        return;
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t l;
    uv_handle_t *accepted = NULL;
    uv_tcp_init(&loop, &l);
    l.data = &accepted;
    struct sockaddr_storage ss;
    socklen_t len;
    wp_addr_parse("127.0.0.1:0", -1, &ss, &len);
    uv_tcp_bind(&l, (struct sockaddr *)&ss, 0);
    uv_listen((uv_stream_t *)&l, 8, mute_on_conn);
    int n = sizeof(ss);
    uv_tcp_getsockname(&l, (struct sockaddr *)&ss, &n);
    client cl;
    memset(&cl, 0, sizeof(cl));
    WP_CHECK_EQ(wp_conn_connect(&loop, "127.0.0.1", ntohs(((struct sockaddr_in *)&ss)->sin_port),
                                cli, "localhost", 200, NULL, cli_connected, &cl),
                0);
    while (!cl.done)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(cl.status, WP_ERR_TIMEOUT);
    uv_close((uv_handle_t *)&l, NULL);
    if (accepted)
        uv_close(accepted, free_close_cb);
    WP_CHECK_LOOP_CLOSED(&loop);
    /* wrong server name: verification fails */
    uv_loop_init(&loop);
    echo_srv s;
    srv_start(&s, &loop);
    s.tls = srv;
    memset(&cl, 0, sizeof(cl));
    WP_CHECK_EQ(wp_conn_connect(&loop, "127.0.0.1", s.port, cli, "wrong.example.com", 3000, NULL,
                                cli_connected, &cl),
                0);
    while (!cl.done)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK(cl.status == WP_ERR_VERIFY || cl.status == WP_ERR_TLS);
    WP_CHECK(cl.c == NULL);
    for (int i = 0; i < 20 && s.closed < s.accepted; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(5000);
    srv_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_tls_conf_unref(srv);
    wp_tls_conf_unref(cli);
}

/* Raw TCP clients that never send a ClientHello. */
typedef struct raw_cli {
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_write_t wreq;
    int connected, eof, send_bytes;
} raw_cli;

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char buf[4096];
    (void)h;
    (void)s;
    *b = uv_buf_init(buf, sizeof(buf));
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    raw_cli *r = st->data;
    (void)b;
    if (n < 0) {
        r->eof = 1;
        uv_read_stop(st);
    }
}

static void raw_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status;
}

static void raw_connected(uv_connect_t *req, int status)
{
    raw_cli *r = req->data;
    /* the first 4 bytes of a TLS handshake record: a ClientHello that never completes */
    static char partial_hello[] = {0x16, 0x03, 0x01, 0x00};
    r->connected = status == 0;
    if (status != 0)
        return;
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    if (r->send_bytes) {
        uv_buf_t b = uv_buf_init(partial_hello, sizeof(partial_hello));
        uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
    }
}

static void raw_connect(uv_loop_t *loop, raw_cli *r, int port, int send_bytes)
{
    memset(r, 0, sizeof(*r));
    uv_tcp_init(loop, &r->tcp);
    r->tcp.data = r;
    r->req.data = r;
    r->send_bytes = send_bytes;
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", port, &sin);
    uv_tcp_connect(&r->req, &r->tcp, (struct sockaddr *)&sin, raw_connected);
}

static void real_client_roundtrip(uv_loop_t *loop, wp_tls_conf *cli, int port, uint64_t max_ms)
{
    client cl;
    memset(&cl, 0, sizeof(cl));
    cl.total = cl.want = 64;
    cl.payload = malloc(64);
    fill_payload(cl.payload, 64);
    wp_buf_init(&cl.got, 128);
    uint64_t t1 = uv_now(loop);
    WP_CHECK_EQ(
        wp_conn_connect(loop, "127.0.0.1", port, cli, "localhost", 5000, NULL, cli_connected, &cl),
        0);
    while (cl.closed == 0 && !(cl.done && !cl.c) && uv_now(loop) - t1 < 5000)
        uv_run(loop, UV_RUN_ONCE);
    WP_CHECK_EQ(cl.status, 0);
    WP_CHECK_EQ(wp_buf_len(&cl.got), 64);
    if (max_ms)
        WP_CHECK(uv_now(loop) - t1 < max_ms);
    free(cl.payload);
    wp_buf_free(&cl.got);
}

WP_TEST(conn_tls_handshake_gate)
{
    wp_tls_conf *srv, *cli;
    tls_confs(&srv, &cli);
    if (!srv || !cli)
        return;
    uv_loop_t loop;
    uv_loop_init(&loop);
    echo_srv s;
    srv_start(&s, &loop);
    s.tls = srv;
    wp_conn_gate_init(&s.gate, 1, 3);
    s.lim.handshake_timeout_ms = 300;
    raw_cli raw[9];
    /* phase A: five clients send a partial ClientHello: 1 takes the slot, 3 queue, the
     * 5th finds the queue full and is closed; the stalled ones hit the deadline */
    for (int i = 0; i < 5; i++)
        raw_connect(&loop, &raw[i], s.port, 1);
    uint64_t t0 = uv_now(&loop);
    while ((s.gate.active + s.gate.queued < 4 || s.errors < 1) && uv_now(&loop) - t0 < 2000)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(s.accepted, 5);
    WP_CHECK_EQ(s.gate.active, 1);
    WP_CHECK_EQ(s.gate.queued, 3);
    WP_CHECK_EQ(s.errors, 1); /* queue full */
    while (s.errors < 5 && uv_now(&loop) - t0 < 3000)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(s.errors, 5); /* handshake / queue timeouts */
    WP_CHECK(uv_now(&loop) - t0 >= 250);
    WP_CHECK_EQ(s.gate.active, 0);
    WP_CHECK_EQ(s.gate.queued, 0);

    /* phase B: silent connections hold no handshake slot: a real client succeeds at once
     * while four of them are open, and they are closed at their deadline */
    for (int i = 5; i < 9; i++)
        raw_connect(&loop, &raw[i], s.port, 0);
    while (s.accepted < 9 && uv_now(&loop) - t0 < 4000)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(s.accepted, 9);
    WP_CHECK_EQ(s.gate.active, 0);
    real_client_roundtrip(&loop, cli, s.port, 250);
    WP_CHECK_EQ(s.ready, 1);

    /* phase C: a real client queued behind a stalled slot holder gets through when the
     * holder's deadline passes */
    raw_cli holder;
    raw_connect(&loop, &holder, s.port, 1);
    while (s.gate.active < 1 && uv_now(&loop) - t0 < 5000)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(s.gate.active, 1);
    real_client_roundtrip(&loop, cli, s.port, 0);
    WP_CHECK_EQ(s.ready, 2);

    uint64_t t2 = uv_now(&loop);
    while (!holder.eof && uv_now(&loop) - t2 < 3000)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 9; i++) {
        while (!raw[i].eof && uv_now(&loop) - t2 < 3000)
            uv_run(&loop, UV_RUN_ONCE);
        WP_CHECK(raw[i].connected);
        WP_CHECK(raw[i].eof);
        uv_close((uv_handle_t *)&raw[i].tcp, NULL);
    }
    WP_CHECK(holder.eof);
    uv_close((uv_handle_t *)&holder.tcp, NULL);
    srv_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(s.gate.active, 0);
    WP_CHECK_EQ(s.gate.queued, 0);
    wp_tls_conf_unref(srv);
    wp_tls_conf_unref(cli);
}

int main(void)
{
    WP_RUN(conn_plain_echo_small);
    WP_RUN(conn_plain_echo_backpressure);
    WP_RUN(conn_close_inside_on_data);
    WP_RUN(conn_connect_failures);
    if (certs_setup() == 0) {
        WP_RUN(conn_tls_echo);
        WP_RUN(conn_tls_client_timeout);
        WP_RUN(conn_tls_handshake_gate);
    } else {
        printf("FAIL tls tests: could not generate certificates\n");
        wp_test_failed_++;
    }
    certs_cleanup();
    return wp_test_done();
}
