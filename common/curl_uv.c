/*
 * curl_uv.c — libcurl multi interface on a libuv loop (see curl_uv.h).
 *
 * libcurl calls wp_curlm_socket_cb to (un)watch a socket and wp_curlm_timer_fn
 * to (re)arm the one timeout; neither may call back into libcurl, so they only
 * touch libuv handles. The poll and timer callbacks call
 * curl_multi_socket_action() and then collect finished transfers
 * (wp_curlm_check), which is the only place done callbacks run.
 */
#include "curl_uv.h"

#include <stdlib.h>

#include "err.h"

typedef struct wp_curlm_xfer {
    struct wp_curlm_xfer *prev, *next;
    CURL *easy;
    wp_curlm_done_fn done;
    void *ud;
    int connect_only; /* stays in the multi after a successful done */
    int kept;         /* completed and kept (connect_only) */
} wp_curlm_xfer;

typedef struct wp_curlm_sock {
    uv_poll_t poll;
    struct wp_curlm_sock *prev, *next;
    wp_curlm *m;
    curl_socket_t fd;
} wp_curlm_sock;

struct wp_curlm {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    wp_curlm_xfer *xfers;
    wp_curlm_sock *socks;
    size_t nxfers;
    size_t open_handles; /* timer + polls whose close callback has not run */
    int closing;
    void (*closed)(void *ud);
    void *closed_ud;
};

static void wp_curlm_maybe_free(wp_curlm *m)
{
    if (!m->closing || m->open_handles > 0)
        return;
    void (*closed)(void *) = m->closed;
    void *ud = m->closed_ud;
    free(m);
    if (closed)
        closed(ud);
}

/* ---- transfers ---- */

static wp_curlm_xfer *wp_curlm_find(const wp_curlm *m, const CURL *easy)
{
    for (wp_curlm_xfer *x = m->xfers; x; x = x->next)
        if (x->easy == easy)
            return x;
    return NULL;
}

static void wp_curlm_unlink(wp_curlm *m, wp_curlm_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        m->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    m->nxfers--;
}

/* Hands finished transfers to their owners. Stops when a done callback closed m. */
static void wp_curlm_check(wp_curlm *m)
{
    CURLMsg *msg;
    int left = 0;
    while (!m->closing && (msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle; /* msg dies with curl_multi_remove_handle */
        CURLcode result = msg->data.result;
        wp_curlm_xfer *x = wp_curlm_find(m, easy);
        if (!x) {
            (void)curl_multi_remove_handle(m->multi, easy);
            continue;
        }
        if (x->kept)
            continue;
        if (x->connect_only && result == CURLE_OK) {
            x->kept = 1;
            x->done(easy, result, x->ud);
            continue;
        }
        wp_curlm_done_fn done = x->done;
        void *ud = x->ud;
        wp_curlm_unlink(m, x);
        free(x);
        (void)curl_multi_remove_handle(m->multi, easy);
        done(easy, result, ud);
    }
}

/* ---- sockets ---- */

static void wp_curlm_sock_closed(uv_handle_t *h)
{
    wp_curlm_sock *k = h->data;
    wp_curlm *m = k->m;
    free(k);
    m->open_handles--;
    wp_curlm_maybe_free(m);
}

/* Unlinks k and closes its poll handle (freed in the close callback). */
static void wp_curlm_sock_close(wp_curlm *m, wp_curlm_sock *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        m->socks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    uv_close((uv_handle_t *)&k->poll, wp_curlm_sock_closed);
}

static void wp_curlm_poll_cb(uv_poll_t *h, int status, int events)
{
    wp_curlm_sock *k = h->data;
    wp_curlm *m = k->m;
    int flags = 0;
    if (m->closing)
        return;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running = 0;
    (void)curl_multi_socket_action(m->multi, k->fd, flags, &running);
    wp_curlm_check(m);
}

static int wp_curlm_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    wp_curlm *m = userp;
    wp_curlm_sock *k = socketp;
    if (m->closing)
        return 0;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            (void)curl_multi_assign(m->multi, s, NULL);
            wp_curlm_sock_close(m, k);
        }
        return 0;
    }
    if (!k) {
        k = calloc(1, sizeof(*k));
        if (!k)
            return -1;
        if (uv_poll_init_socket(m->loop, &k->poll, s) != 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        k->m = m;
        k->fd = s;
        k->next = m->socks;
        if (m->socks)
            m->socks->prev = k;
        m->socks = k;
        m->open_handles++;
        if (curl_multi_assign(m->multi, s, k) != CURLM_OK) {
            wp_curlm_sock_close(m, k);
            return -1;
        }
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    if (uv_poll_start(&k->poll, ev, wp_curlm_poll_cb) != 0)
        return -1;
    return 0;
}

/* ---- the timeout ---- */

static void wp_curlm_timer_cb(uv_timer_t *t)
{
    wp_curlm *m = t->data;
    if (m->closing)
        return;
    int running = 0;
    (void)curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    wp_curlm_check(m);
}

static int wp_curlm_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    wp_curlm *m = userp;
    if (m->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&m->timer);
    else if (uv_timer_start(&m->timer, wp_curlm_timer_cb, (uint64_t)timeout_ms, 0) != 0)
        return -1;
    return 0;
}

static void wp_curlm_timer_closed(uv_handle_t *h)
{
    wp_curlm *m = h->data;
    m->open_handles--;
    wp_curlm_maybe_free(m);
}

/* ---- API ---- */

int wp_curlm_new(uv_loop_t *loop, wp_curlm **out)
{
    if (!loop || !out)
        return WP_ERR_INVAL;
    *out = NULL;
    wp_curlm *m = calloc(1, sizeof(*m));
    if (!m)
        return WP_ERR_NOMEM;
    m->loop = loop;
    m->multi = curl_multi_init();
    if (!m->multi) {
        free(m);
        return WP_ERR_INTERNAL;
    }
    if (curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, wp_curlm_socket_cb) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, wp_curlm_timer_fn) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m) != CURLM_OK) {
        curl_multi_cleanup(m->multi);
        free(m);
        return WP_ERR_INTERNAL;
    }
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->open_handles = 1;
    *out = m;
    return 0;
}

static int wp_curlm_add_x(wp_curlm *m, CURL *easy, wp_curlm_done_fn done, void *ud,
                          int connect_only)
{
    if (!m || !easy || !done)
        return WP_ERR_INVAL;
    if (m->closing)
        return WP_ERR_STATE;
    if (wp_curlm_find(m, easy))
        return WP_ERR_INVAL;
    wp_curlm_xfer *x = calloc(1, sizeof(*x));
    if (!x)
        return WP_ERR_NOMEM;
    x->easy = easy;
    x->done = done;
    x->ud = ud;
    x->connect_only = connect_only;
    x->next = m->xfers;
    if (m->xfers)
        m->xfers->prev = x;
    m->xfers = x;
    m->nxfers++;
    CURLMcode mc = curl_multi_add_handle(m->multi, easy);
    if (mc != CURLM_OK) {
        wp_curlm_unlink(m, x);
        free(x);
        return mc == CURLM_OUT_OF_MEMORY ? WP_ERR_NOMEM : WP_ERR_INTERNAL;
    }
    return 0;
}

int wp_curlm_add(wp_curlm *m, CURL *easy, wp_curlm_done_fn done, void *ud)
{
    return wp_curlm_add_x(m, easy, done, ud, 0);
}

int wp_curlm_add_connect_only(wp_curlm *m, CURL *easy, wp_curlm_done_fn done, void *ud)
{
    return wp_curlm_add_x(m, easy, done, ud, 1);
}

void wp_curlm_remove(wp_curlm *m, CURL *easy)
{
    if (!m || !easy || m->closing)
        return;
    wp_curlm_xfer *x = wp_curlm_find(m, easy);
    if (!x)
        return;
    wp_curlm_unlink(m, x);
    free(x);
    (void)curl_multi_remove_handle(m->multi, easy);
}

size_t wp_curlm_count(const wp_curlm *m)
{
    return m ? m->nxfers : 0;
}

void wp_curlm_close(wp_curlm *m, void (*closed)(void *ud), void *ud)
{
    if (!m || m->closing)
        return;
    m->closing = 1;
    m->closed = closed;
    m->closed_ud = ud;
    while (m->xfers) {
        wp_curlm_xfer *x = m->xfers;
        wp_curlm_unlink(m, x);
        (void)curl_multi_remove_handle(m->multi, x->easy);
        free(x);
    }
    /* Stop watching before libcurl closes the descriptors of cached connections. */
    while (m->socks) {
        wp_curlm_sock *k = m->socks;
        (void)curl_multi_assign(m->multi, k->fd, NULL);
        wp_curlm_sock_close(m, k);
    }
    curl_multi_cleanup(m->multi);
    m->multi = NULL;
    uv_close((uv_handle_t *)&m->timer, wp_curlm_timer_closed);
}
