/*
 * test_curl_uv.c — unit tests for curl_uv.c against local libuv servers (TCP and a
 * unix socket) on the same loop: a GET completes with its body, a silent server
 * times out, a closed port is refused, done never runs inside wp_curlm_add, a
 * cancelled transfer gets no done, a done callback may start the next transfer
 * or close the multi, closing with transfers in flight, and a CONNECT_ONLY
 * connection kept in the multi whose socket the caller can poll and write.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "curl_uv.h"
#include "err.h"
#include "wp_test.h"

/* ---- a tiny HTTP server: answers every request, or stays silent ---- */

#define SRV_MAX_CLIENTS 16

typedef struct srv srv;

typedef struct srv_client {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
    } h;
    srv *s;
    char buf[4096];
    size_t len;
    int answered;
    uv_write_t wr;
    int slot;
} srv_client;

struct srv {
    uv_loop_t *loop;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
    } l;
    int is_pipe;
    int port;
    char path[108];
    int silent;          /* accept and read, never answer */
    int requests;        /* complete request heads seen */
    char last_line[256]; /* request line of the last request */
    size_t bytes_after;  /* bytes received after the head (CONNECT_ONLY test) */
    srv_client *clients[SRV_MAX_CLIENTS];
};

static const char srv_reply[] = "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";

static void srv_client_closed(uv_handle_t *h)
{
    srv_client *c = h->data;
    c->s->clients[c->slot] = NULL;
    free(c);
}

static void srv_client_close(srv_client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->h.stream))
        uv_close((uv_handle_t *)&c->h.stream, srv_client_closed);
}

static void srv_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    srv_client *c = h->data;
    if (c->len >= sizeof(c->buf) - 1)
        c->len = 0; /* a test sends little; keep reading */
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void srv_written(uv_write_t *w, int status)
{
    (void)status;
    srv_client_close(w->data);
}

static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    srv_client *c = st->data;
    if (n < 0) {
        srv_client_close(c);
        return;
    }
    if (c->answered || c->s->silent == 2) {
        c->s->bytes_after += (size_t)n;
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (!strstr(c->buf, "\r\n\r\n"))
        return;
    c->answered = 1;
    c->s->requests++;
    size_t ll = strcspn(c->buf, "\r\n");
    if (ll >= sizeof(c->s->last_line))
        ll = sizeof(c->s->last_line) - 1;
    memcpy(c->s->last_line, c->buf, ll);
    c->s->last_line[ll] = '\0';
    if (c->s->silent)
        return;
    uv_buf_t out = uv_buf_init((char *)srv_reply, sizeof(srv_reply) - 1);
    c->wr.data = c;
    uv_write(&c->wr, st, &out, 1, srv_written);
}

static void srv_on_conn(uv_stream_t *l, int status)
{
    srv *s = l->data;
    if (status < 0)
        return;
    srv_client *c = calloc(1, sizeof(*c));
    int slot = -1;
    for (int i = 0; i < SRV_MAX_CLIENTS; i++)
        if (!s->clients[i]) {
            slot = i;
            break;
        }
    WP_CHECK(c != NULL && slot >= 0);
    if (!c || slot < 0) {
        free(c);
        return;
    }
    c->s = s;
    c->slot = slot;
    s->clients[slot] = c;
    if (s->is_pipe)
        uv_pipe_init(s->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(s->loop, &c->h.tcp);
    c->h.stream.data = c;
    WP_CHECK_EQ(uv_accept(l, &c->h.stream), 0);
    uv_read_start(&c->h.stream, srv_alloc, srv_read);
}

static void srv_start_tcp(srv *s, uv_loop_t *loop, int silent)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->silent = silent;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &s->l.tcp);
    s->l.stream.data = s;
    WP_CHECK_EQ(uv_tcp_bind(&s->l.tcp, (const struct sockaddr *)&sa, 0), 0);
    WP_CHECK_EQ(uv_listen(&s->l.stream, 16, srv_on_conn), 0);
    struct sockaddr_in got;
    int len = sizeof(got);
    uv_tcp_getsockname(&s->l.tcp, (struct sockaddr *)&got, &len);
    s->port = ntohs(got.sin_port);
}

static void srv_start_pipe(srv *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->is_pipe = 1;
    snprintf(s->path, sizeof(s->path), "/tmp/wp-test-curl-uv-%d.sock", (int)getpid());
    unlink(s->path);
    uv_pipe_init(loop, &s->l.pipe, 0);
    s->l.stream.data = s;
    WP_CHECK_EQ(uv_pipe_bind(&s->l.pipe, s->path), 0);
    WP_CHECK_EQ(uv_listen(&s->l.stream, 16, srv_on_conn), 0);
}

static void srv_stop(srv *s)
{
    for (int i = 0; i < SRV_MAX_CLIENTS; i++)
        if (s->clients[i])
            srv_client_close(s->clients[i]);
    uv_close((uv_handle_t *)&s->l.stream, NULL);
    if (s->is_pipe)
        unlink(s->path);
}

/* ---- a transfer with a bounded body ---- */

typedef struct xfer {
    CURL *easy;
    char body[256];
    size_t len;
    int done;
    CURLcode result;
    int in_add; /* set while wp_curlm_add runs */
    wp_curlm *m;
    struct xfer *next; /* started from done */
    int close_in_done; /* wp_curlm_close from done */
    int *closed_flag;
} xfer;

static size_t xfer_write(char *p, size_t sz, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = sz * n;
    if (x->len + len >= sizeof(x->body))
        return 0;
    memcpy(x->body + x->len, p, len);
    x->len += len;
    x->body[x->len] = '\0';
    return len;
}

static void closed_cb(void *ud)
{
    (*(int *)ud)++;
}

static void xfer_done(CURL *easy, CURLcode result, void *ud)
{
    xfer *x = ud;
    WP_CHECK(easy == x->easy);
    WP_CHECK(!x->in_add);
    x->done++;
    x->result = result;
    if (x->next)
        WP_CHECK_EQ(wp_curlm_add(x->m, x->next->easy, xfer_done, x->next), 0);
    if (x->close_in_done)
        wp_curlm_close(x->m, closed_cb, x->closed_flag);
}

static void xfer_init(xfer *x, wp_curlm *m, const char *url, long timeout_ms)
{
    memset(x, 0, sizeof(*x));
    x->m = m;
    x->easy = curl_easy_init();
    curl_easy_setopt(x->easy, CURLOPT_URL, url);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, xfer_write);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
}

static int xfer_add(xfer *x)
{
    x->in_add = 1;
    int rc = wp_curlm_add(x->m, x->easy, xfer_done, x);
    x->in_add = 0;
    return rc;
}

/* Runs the loop until *flag becomes nonzero (bounded by a few seconds of iterations). */
static void run_until(uv_loop_t *loop, const int *flag)
{
    uint64_t start = uv_now(loop);
    while (!*flag && uv_now(loop) - start < 10000) {
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
}

WP_TEST(get_ok_and_unix_socket)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    srv s, p;
    srv_start_tcp(&s, &loop, 0);
    srv_start_pipe(&p, &loop);
    wp_curlm *m = NULL;
    WP_CHECK_EQ(wp_curlm_new(&loop, &m), 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/serverinfo", s.port);
    xfer a, b;
    xfer_init(&a, m, url, 5000);
    xfer_init(&b, m, "http://localhost/api/v1/openapi-schema", 5000);
    curl_easy_setopt(b.easy, CURLOPT_UNIX_SOCKET_PATH, p.path);
    WP_CHECK_EQ(xfer_add(&a), 0);
    WP_CHECK_EQ(xfer_add(&b), 0);
    WP_CHECK_EQ(wp_curlm_add(m, a.easy, xfer_done, &a), WP_ERR_INVAL); /* already added */
    WP_CHECK_EQ(wp_curlm_count(m), 2);
    WP_CHECK_EQ(a.done + b.done, 0);
    while (!(a.done && b.done) && uv_run(&loop, UV_RUN_ONCE))
        ;
    WP_CHECK_EQ(a.done, 1);
    WP_CHECK_EQ(b.done, 1);
    WP_CHECK_EQ(a.result, CURLE_OK);
    WP_CHECK_EQ(b.result, CURLE_OK);
    WP_CHECK_STR(a.body, "hello");
    WP_CHECK_STR(b.body, "hello");
    WP_CHECK_STR(p.last_line, "GET /api/v1/openapi-schema HTTP/1.1");
    long code = 0;
    curl_easy_getinfo(a.easy, CURLINFO_RESPONSE_CODE, &code);
    WP_CHECK_EQ(code, 200);
    WP_CHECK_EQ(wp_curlm_count(m), 0);
    /* The easy belongs to the caller again: it can be reused on the same multi. */
    a.len = 0;
    a.done = 0;
    WP_CHECK_EQ(xfer_add(&a), 0);
    run_until(&loop, &a.done);
    WP_CHECK_EQ(a.done, 1);
    WP_CHECK_STR(a.body, "hello");
    WP_CHECK_EQ(s.requests, 2);
    int closed = 0;
    wp_curlm_close(m, closed_cb, &closed);
    WP_CHECK_EQ(closed, 0); /* never from inside the call */
    srv_stop(&s);
    srv_stop(&p);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(closed, 1);
    curl_easy_cleanup(a.easy);
    curl_easy_cleanup(b.easy);
}

WP_TEST(timeout_refused_cancel)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    srv s;
    srv_start_tcp(&s, &loop, 1); /* silent */
    /* A port that was just free: nothing listens there. */
    srv tmp;
    srv_start_tcp(&tmp, &loop, 0);
    int dead_port = tmp.port;
    srv_stop(&tmp);
    uv_run(&loop, UV_RUN_NOWAIT);
    wp_curlm *m = NULL;
    WP_CHECK_EQ(wp_curlm_new(&loop, &m), 0);
    char url[128];
    xfer silent, refused, cancelled;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
    xfer_init(&silent, m, url, 300);
    xfer_init(&cancelled, m, url, 300);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", dead_port);
    xfer_init(&refused, m, url, 3000);
    WP_CHECK_EQ(xfer_add(&silent), 0);
    WP_CHECK_EQ(xfer_add(&refused), 0);
    WP_CHECK_EQ(xfer_add(&cancelled), 0);
    wp_curlm_remove(m, cancelled.easy);
    wp_curlm_remove(m, cancelled.easy); /* not in m any more: ignored */
    WP_CHECK_EQ(wp_curlm_count(m), 2);
    uint64_t t0 = uv_now(&loop);
    while (!(silent.done && refused.done) && uv_run(&loop, UV_RUN_ONCE))
        ;
    uv_update_time(&loop);
    WP_CHECK_EQ(silent.result, CURLE_OPERATION_TIMEDOUT);
    WP_CHECK_EQ(refused.result, CURLE_COULDNT_CONNECT);
    long oserr = 0;
    curl_easy_getinfo(refused.easy, CURLINFO_OS_ERRNO, &oserr);
    WP_CHECK_EQ(oserr, ECONNREFUSED);
    WP_CHECK(uv_now(&loop) - t0 >= 250 && uv_now(&loop) - t0 < 3000);
    WP_CHECK_EQ(cancelled.done, 0);
    WP_CHECK_EQ(s.requests, 1); /* the cancelled one may have connected, never requested */
    int closed = 0;
    wp_curlm_close(m, closed_cb, &closed);
    wp_curlm_close(NULL, closed_cb, &closed);
    srv_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(closed, 1);
    WP_CHECK_EQ(cancelled.done, 0);
    curl_easy_cleanup(silent.easy);
    curl_easy_cleanup(refused.easy);
    curl_easy_cleanup(cancelled.easy);
}

WP_TEST(chain_and_close_from_done)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    srv s, q;
    srv_start_tcp(&s, &loop, 0);
    srv_start_tcp(&q, &loop, 1);
    wp_curlm *m = NULL;
    WP_CHECK_EQ(wp_curlm_new(&loop, &m), 0);
    char url[128], qurl[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/a", s.port);
    snprintf(qurl, sizeof(qurl), "http://127.0.0.1:%d/slow", q.port);
    xfer first, second, pending;
    int closed = 0;
    xfer_init(&first, m, url, 5000);
    xfer_init(&second, m, url, 5000);
    xfer_init(&pending, m, qurl, 60000);
    first.next = &second;     /* first's done starts second */
    second.close_in_done = 1; /* second's done closes the multi */
    second.closed_flag = &closed;
    WP_CHECK_EQ(xfer_add(&first), 0);
    WP_CHECK_EQ(xfer_add(&pending), 0); /* in flight when the multi closes */
    run_until(&loop, &closed);
    WP_CHECK_EQ(first.done, 1);
    WP_CHECK_EQ(second.done, 1);
    WP_CHECK_EQ(first.result, CURLE_OK);
    WP_CHECK_EQ(second.result, CURLE_OK);
    WP_CHECK_STR(second.body, "hello");
    WP_CHECK_EQ(pending.done, 0);
    WP_CHECK_EQ(closed, 1);
    srv_stop(&s);
    srv_stop(&q);
    WP_CHECK_LOOP_CLOSED(&loop);
    curl_easy_cleanup(first.easy);
    curl_easy_cleanup(second.easy);
    curl_easy_cleanup(pending.easy);
}

/* ---- CONNECT_ONLY kept in the multi ---- */

typedef struct co_state {
    uv_loop_t *loop;
    wp_curlm *m;
    CURL *easy;
    int done;
    CURLcode result;
    uv_poll_t poll;
    int polled;
    int closed;
} co_state;

static void co_poll_closed(uv_handle_t *h)
{
    co_state *c = h->data;
    c->closed = 1;
}

static void co_poll_cb(uv_poll_t *h, int status, int events)
{
    co_state *c = h->data;
    WP_CHECK_EQ(status, 0);
    if (!(events & UV_WRITABLE))
        return;
    size_t sent = 0;
    WP_CHECK_EQ(curl_easy_send(c->easy, "ping", 4, &sent), CURLE_OK);
    WP_CHECK_EQ(sent, 4);
    c->polled = 1;
    uv_close((uv_handle_t *)h, co_poll_closed);
}

static void co_done2(CURL *easy, CURLcode result, void *ud);

WP_TEST(connect_only_kept)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    srv s;
    srv_start_tcp(&s, &loop, 2); /* counts bytes, never answers */
    wp_curlm *m = NULL;
    WP_CHECK_EQ(wp_curlm_new(&loop, &m), 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
    co_state c;
    memset(&c, 0, sizeof(c));
    c.m = m;
    c.loop = &loop;
    c.easy = curl_easy_init();
    curl_easy_setopt(c.easy, CURLOPT_URL, url);
    curl_easy_setopt(c.easy, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(c.easy, CURLOPT_TIMEOUT_MS, 5000L);
    WP_CHECK_EQ(wp_curlm_add_connect_only(m, c.easy, co_done2, &c), 0);
    run_until(&loop, &c.done);
    WP_CHECK_EQ(c.done, 1);
    WP_CHECK_EQ(c.result, CURLE_OK);
    run_until(&loop, &c.closed);
    WP_CHECK(c.polled);
    for (int i = 0; i < 200 && s.bytes_after < 4; i++)
        uv_run(&loop, UV_RUN_ONCE);
    WP_CHECK_EQ(s.bytes_after, 4);
    wp_curlm_remove(m, c.easy);
    WP_CHECK_EQ(wp_curlm_count(m), 0);
    int closed = 0;
    wp_curlm_close(m, closed_cb, &closed);
    srv_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(closed, 1);
    WP_CHECK_EQ(c.done, 1);
    curl_easy_cleanup(c.easy);
}

static void co_done2(CURL *easy, CURLcode result, void *ud)
{
    co_state *c = ud;
    uv_loop_t *loop = c->loop;
    c->done++;
    c->result = result;
    WP_CHECK_EQ(wp_curlm_count(c->m), 1); /* still in the multi */
    curl_socket_t fd = CURL_SOCKET_BAD;
    WP_CHECK_EQ(curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &fd), CURLE_OK);
    WP_CHECK(fd != CURL_SOCKET_BAD);
    /* libcurl no longer watches the socket, so the caller can. */
    WP_CHECK_EQ(uv_poll_init_socket(loop, &c->poll, fd), 0);
    c->poll.data = c;
    WP_CHECK_EQ(uv_poll_start(&c->poll, UV_WRITABLE, co_poll_cb), 0);
}

WP_TEST(bad_args)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    wp_curlm *m = NULL;
    WP_CHECK_EQ(wp_curlm_new(NULL, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_curlm_new(&loop, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_curlm_new(&loop, &m), 0);
    WP_CHECK_EQ(wp_curlm_add(m, NULL, xfer_done, NULL), WP_ERR_INVAL);
    CURL *e = curl_easy_init();
    WP_CHECK_EQ(wp_curlm_add(m, e, NULL, NULL), WP_ERR_INVAL);
    wp_curlm_remove(m, e);
    int closed = 0;
    wp_curlm_close(m, closed_cb, &closed);
    WP_CHECK_LOOP_CLOSED(&loop);
    WP_CHECK_EQ(closed, 1);
    curl_easy_cleanup(e);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    WP_RUN(get_ok_and_unix_socket);
    WP_RUN(timeout_refused_cancel);
    WP_RUN(chain_and_close_from_done);
    WP_RUN(connect_only_kept);
    WP_RUN(bad_args);
    curl_global_cleanup();
    return wp_test_done();
}
