/*
 * db.c — asynchronous libpq connection pool on libuv (see db.h for the contract).
 *
 * Each connection (cp_db_conn) is a small state machine: WAIT (backoff timer
 * running, or closing its poll handle), RESOLVING (uv_getaddrinfo for a host
 * name), CONNECTING (PQconnectPoll driven by uv_poll), IDLE (watching for the
 * server going away) and BUSY (one statement in flight). One uv_timer per
 * connection serves as backoff, connect deadline, query deadline and
 * reserved-idle deadline. A connection whose socket changes (libpq may reopen
 * it while connecting) gets its uv_poll closed and re-created after the close
 * callback, so a handle is never re-initialized while closing. Requests that
 * wait for a connection sit in a bounded FIFO; transactions and sessions are
 * requests that, once dispatched, keep their connection (conn->tx) until they
 * end. Errors found while sending are reported from a 0 ms timer, never inside
 * the caller's stack. cp_db_close() closes every handle, and only after the
 * last close callback fails the leftover requests, frees the transactions and
 * the pool.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "err.h"
#include "log.h"

enum req_kind {
    REQ_QUERY,      /* parameterized statement, result to cb */
    REQ_SCRIPT,     /* multi-statement trusted script, result to cb */
    REQ_TX_BEGIN,   /* BEGIN, then tx to txcb */
    REQ_SESS_BEGIN, /* round trip, then tx to txcb */
    REQ_TX_END,     /* COMMIT/ROLLBACK/DISCARD ALL, then donecb, tx freed */
};

enum conn_state { C_WAIT, C_RESOLVING, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSED };

enum tx_kind { TX_TX, TX_SESSION };

typedef struct cp_db_req {
    struct cp_db_req *next;
    int kind;
    const char *sql; /* points into the allocation, or static for scripts */
    int nparams;
    const char **params;
    cp_db_result_cb cb;
    cp_db_tx_cb txcb;
    cp_db_done_cb donecb;
    void *ud;
    cp_db_tx *tx;
    unsigned timeout_ms;
    int is_commit; /* REQ_TX_END: COMMIT (check for ROLLBACK status) */
} cp_db_req;

typedef struct cp_db_conn {
    cp_db *db;
    int idx;
    int state;
    PGconn *pg;
    uv_poll_t poll;
    int poll_open;    /* poll handle initialized and not closing */
    int poll_closing; /* close requested, callback pending */
    int poll_fd;
    ino_t poll_ino;
    int want_events; /* events to watch once the poll handle is reopened */
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    int gai_active;
    cp_db_req *req;   /* in flight */
    PGresult *keep;   /* chosen result of the statement in flight */
    cp_db_tx *tx;     /* reservation */
    int fail_pending; /* error to report from the 0 ms timer */
    unsigned backoff_ms;
    int was_up; /* connected at least once since the last failure */
} cp_db_conn;

struct cp_db_tx {
    cp_db *db;
    cp_db_conn *conn; /* NULL once the connection is lost */
    int kind;
    int err;    /* why the connection was lost */
    int failed; /* a statement failed: the server aborted the transaction */
    int busy;   /* statement in flight */
    unsigned timeout_ms;
    cp_db_tx *prev, *next; /* db->txs */
};

struct cp_db {
    uv_loop_t *loop;
    char **kw; /* connection keywords/values for PQconnectStartParams (NULL-terminated) */
    char **vals;
    int hostaddr_idx;   /* index of the "hostaddr" slot we fill after resolving, or -1 */
    char *resolve_host; /* host name to resolve, NULL if none */
    char *resolve_port;
    char desc[256];
    cp_db_conn *conns;
    int nconns;
    cp_db_req *qhead, *qtail;
    size_t qlen;
    cp_db_tx *txs;
    unsigned query_timeout_ms;
    unsigned connect_timeout_ms;
    unsigned backoff_min_ms, backoff_max_ms;
    int down;  /* no connection up and the last attempt failed */
    int quiet; /* log at debug only (probes) */
    int closing;
    int pending_closes;
    cp_db_req *dead; /* requests to fail once closed */
    cp_db_close_cb close_cb;
    void *close_ud;
};

static void conn_start(cp_db_conn *c);
static void conn_broken(cp_db_conn *c, int err);
static int conn_watch(cp_db_conn *c, int events);
static void conn_poll_cb(uv_poll_t *h, int status, int events);
static void db_dispatch(cp_db *db);
static void db_close_step(cp_db *db);

/* ---------------------------------------------------------------- helpers */

const char *cp_db_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

int cp_db_result_err(const PGresult *res)
{
    if (!res)
        return WP_ERR_CLOSED;
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
    case PGRES_SINGLE_TUPLE:
        return 0;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        return WP_ERR_UNSUPPORTED;
    default:
        break;
    }
    const char *st = cp_db_sqlstate(res);
    if (strcmp(st, "23505") == 0)
        return WP_ERR_EXISTS;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0)
        return WP_ERR_BUSY;
    if (strcmp(st, "57014") == 0)
        return WP_ERR_TIMEOUT;
    return WP_ERR_IO;
}

int cp_db_conninfo_describe(const char *conninfo, char *out, size_t cap)
{
    if (!conninfo || !out || cap == 0)
        return WP_ERR_INVAL;
    out[0] = '\0';
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (!opts) {
        PQfreemem(errmsg);
        return WP_ERR_INVAL;
    }
    const char *host = NULL, *db = NULL, *user = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    snprintf(out, cap, "host=%s dbname=%s", host ? host : "(default)",
             db ? db : (user ? user : "(default)"));
    PQconninfoFree(opts);
    return 0;
}

/* libpq messages span lines ("...\n\tThis probably means..."): one line, trimmed. */
static void str_trim_nl(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        char ch = (*r == '\n' || *r == '\r' || *r == '\t') ? ' ' : *r;
        if (ch == ' ' && (w == s || w[-1] == ' '))
            continue;
        *w++ = ch;
    }
    while (w > s && w[-1] == ' ')
        w--;
    *w = '\0';
}

static void log_pg_error(int level, const char *msg, cp_db_conn *c)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", c->pg ? PQerrorMessage(c->pg) : "");
    str_trim_nl(buf);
    if (c->db->quiet)
        level = WP_LOG_DEBUG;
    wp_log(level, msg, WP_LS("db", c->db->desc), WP_LI("conn", c->idx), WP_LS("detail", buf));
}

static int conn_is_up(const cp_db_conn *c)
{
    return c->state == C_IDLE || c->state == C_BUSY;
}

int cp_db_conns_up(const cp_db *db)
{
    int n = 0;
    for (int i = 0; i < db->nconns; i++)
        n += conn_is_up(&db->conns[i]);
    return n;
}

int cp_db_ready(const cp_db *db)
{
    return db && !db->closing && cp_db_conns_up(db) > 0;
}

size_t cp_db_queued(const cp_db *db)
{
    return db ? db->qlen : 0;
}

const char *cp_db_describe(const cp_db *db)
{
    return db ? db->desc : "";
}

/* ---------------------------------------------------------------- requests */

static cp_db_req *req_new(int kind, const char *sql, int nparams, const char *const *params,
                          int *err)
{
    *err = 0;
    if (nparams < 0 || (nparams > 0 && !params) || (!sql && kind == REQ_QUERY)) {
        *err = WP_ERR_INVAL;
        return NULL;
    }
    if (nparams > CP_DB_PARAMS_MAX) {
        *err = WP_ERR_LIMIT;
        return NULL;
    }
    size_t bytes = sizeof(cp_db_req) + (size_t)nparams * sizeof(char *);
    size_t sqllen = (kind == REQ_QUERY) ? strlen(sql) + 1 : 0;
    size_t payload = sqllen;
    for (int i = 0; i < nparams; i++) {
        if (params[i])
            payload += strlen(params[i]) + 1;
        if (payload > CP_DB_REQUEST_BYTES_MAX) {
            *err = WP_ERR_LIMIT;
            return NULL;
        }
    }
    if (payload > CP_DB_REQUEST_BYTES_MAX) {
        *err = WP_ERR_LIMIT;
        return NULL;
    }
    cp_db_req *r = calloc(1, bytes + payload);
    if (!r) {
        *err = WP_ERR_NOMEM;
        return NULL;
    }
    r->kind = kind;
    r->nparams = nparams;
    r->params = (const char **)(void *)(r + 1);
    char *p = (char *)(r + 1) + (size_t)nparams * sizeof(char *);
    if (kind == REQ_QUERY) {
        memcpy(p, sql, sqllen);
        r->sql = p;
        p += sqllen;
    } else {
        r->sql = sql;
    }
    for (int i = 0; i < nparams; i++) {
        if (!params[i]) {
            r->params[i] = NULL;
            continue;
        }
        size_t n = strlen(params[i]) + 1;
        memcpy(p, params[i], n);
        r->params[i] = p;
        p += n;
    }
    return r;
}

static void queue_push(cp_db *db, cp_db_req *r)
{
    r->next = NULL;
    if (db->qtail)
        db->qtail->next = r;
    else
        db->qhead = r;
    db->qtail = r;
    db->qlen++;
}

static cp_db_req *queue_pop(cp_db *db)
{
    cp_db_req *r = db->qhead;
    if (!r)
        return NULL;
    db->qhead = r->next;
    if (!db->qhead)
        db->qtail = NULL;
    db->qlen--;
    r->next = NULL;
    return r;
}

static void tx_unlink_free(cp_db_tx *tx)
{
    cp_db *db = tx->db;
    if (tx->prev)
        tx->prev->next = tx->next;
    else
        db->txs = tx->next;
    if (tx->next)
        tx->next->prev = tx->prev;
    free(tx);
}

/* Completes a request with err/res: runs its callback and frees it (and a finished tx). */
static void req_complete(cp_db_req *r, int err, PGresult *res)
{
    switch (r->kind) {
    case REQ_QUERY:
    case REQ_SCRIPT:
        if (r->tx)
            r->tx->busy = 0;
        r->cb(err, res, r->ud);
        break;
    case REQ_TX_BEGIN:
    case REQ_SESS_BEGIN:
        if (err) {
            tx_unlink_free(r->tx);
            r->txcb(err, NULL, r->ud);
        } else {
            r->txcb(0, r->tx, r->ud);
        }
        break;
    case REQ_TX_END:
        tx_unlink_free(r->tx);
        if (r->donecb)
            r->donecb(err, r->ud);
        break;
    default:
        break;
    }
    free(r);
}

/* Fails every queued request with err (the pool went down). */
static void queue_fail_all(cp_db *db, int err)
{
    cp_db_req *r;
    while ((r = queue_pop(db)) != NULL)
        req_complete(r, err, NULL);
}

/* ---------------------------------------------------------------- connection I/O */

static void conn_timer_start(cp_db_conn *c, unsigned ms);

static void conn_poll_closed_cb(uv_handle_t *h)
{
    cp_db_conn *c = h->data;
    cp_db *db = c->db;
    c->poll_closing = 0;
    if (db->closing) {
        db->pending_closes--;
        db_close_step(db);
        return;
    }
    if (c->want_events && c->pg && c->state != C_WAIT) {
        if (conn_watch(c, c->want_events) != 0)
            conn_broken(c, WP_ERR_CLOSED);
    } else if (c->state == C_WAIT && !uv_is_active((uv_handle_t *)&c->timer))
        conn_timer_start(c, c->backoff_ms);
}

/*
 * Starts watching PQsocket for events, (re)creating the poll handle when the socket
 * changed (same fd number is not enough: compare the socket inode too). Returns 0
 * (watching, or resuming from the close callback) or WP_ERR_CLOSED / WP_ERR_IO;
 * the caller then treats the connection as broken.
 */
static int conn_watch(cp_db_conn *c, int events)
{
    c->want_events = events;
    if (c->poll_closing)
        return 0; /* conn_poll_closed_cb resumes */
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return WP_ERR_CLOSED;
    struct stat st;
    ino_t ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
    if (c->poll_open && (c->poll_fd != fd || c->poll_ino != ino)) {
        c->poll_open = 0;
        c->poll_closing = 1;
        uv_close((uv_handle_t *)&c->poll, conn_poll_closed_cb);
        return 0;
    }
    if (!c->poll_open) {
        if (uv_poll_init(c->db->loop, &c->poll, fd) != 0)
            return WP_ERR_IO;
        c->poll.data = c;
        c->poll_open = 1;
        c->poll_fd = fd;
        c->poll_ino = ino;
    }
    return uv_poll_start(&c->poll, events, conn_poll_cb) == 0 ? 0 : WP_ERR_IO;
}

static void conn_timer_cb(uv_timer_t *t);

static void conn_timer_start(cp_db_conn *c, unsigned ms)
{
    uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

static void db_update_down(cp_db *db)
{
    if (cp_db_conns_up(db) > 0) {
        db->down = 0;
        return;
    }
    if (!db->down) {
        db->down = 1;
        wp_log(db->quiet ? WP_LOG_DEBUG : WP_LOG_WARN, "database unavailable",
               WP_LS("db", db->desc));
    }
    queue_fail_all(db, WP_ERR_CLOSED);
}

/* Drops the PGconn and the poll handle; the timer restarts the connection after backoff. */
static void conn_teardown(cp_db_conn *c)
{
    uv_timer_stop(&c->timer);
    c->want_events = 0;
    if (c->poll_open) {
        c->poll_open = 0;
        c->poll_closing = 1;
        uv_close((uv_handle_t *)&c->poll, conn_poll_closed_cb);
    }
    if (c->keep) {
        PQclear(c->keep);
        c->keep = NULL;
    }
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->state = C_WAIT;
    if (!c->poll_closing)
        conn_timer_start(c, c->backoff_ms);
}

static unsigned backoff_next(const cp_db *db, unsigned cur)
{
    if (cur < db->backoff_min_ms)
        return db->backoff_min_ms;
    unsigned n = cur * 2;
    return n > db->backoff_max_ms ? db->backoff_max_ms : n;
}

/* A connect attempt failed. */
static void conn_attempt_failed(cp_db_conn *c)
{
    cp_db *db = c->db;
    log_pg_error(db->down ? WP_LOG_DEBUG : WP_LOG_INFO, "database connect failed", c);
    c->backoff_ms = backoff_next(db, c->backoff_ms);
    c->was_up = 0;
    conn_teardown(c);
    db_update_down(db);
}

/* An established connection broke (or was reset on a deadline): fails its work, reconnects. */
static void conn_broken(cp_db_conn *c, int err)
{
    cp_db *db = c->db;
    if (c->state == C_CONNECTING || c->state == C_RESOLVING) {
        conn_attempt_failed(c);
        return;
    }
    cp_db_req *r = c->req;
    cp_db_tx *tx = c->tx;
    c->req = NULL;
    c->tx = NULL;
    c->fail_pending = 0;
    if (tx) {
        tx->conn = NULL;
        tx->err = err;
    }
    if (err == WP_ERR_TIMEOUT)
        wp_log_warn("database query timed out, resetting connection", WP_LS("db", db->desc),
                    WP_LI("conn", c->idx));
    else
        log_pg_error(WP_LOG_WARN, "database connection lost", c);
    /* A healthy connection that broke retries at once; backoff grows on failed attempts. */
    c->backoff_ms = 0;
    conn_teardown(c);
    /* Not "down" yet: the immediate reconnect decides (a failed attempt marks the pool down
     * and fails the queue); until then queued requests wait. */
    if (r)
        req_complete(r, err, NULL);
}

static void conn_connected(cp_db_conn *c)
{
    cp_db *db = c->db;
    uv_timer_stop(&c->timer);
    PQsetnonblocking(c->pg, 1);
    c->state = C_IDLE;
    c->backoff_ms = 0;
    c->was_up = 1;
    if (db->down)
        wp_log_info("database available", WP_LS("db", db->desc));
    db->down = 0;
    wp_log_debug("database connection up", WP_LS("db", db->desc), WP_LI("conn", c->idx));
    if (conn_watch(c, UV_READABLE) != 0) {
        conn_broken(c, WP_ERR_CLOSED);
        return;
    }
    db_dispatch(db);
}

static void conn_connect_step(cp_db_conn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    switch (st) {
    case PGRES_POLLING_OK:
        conn_connected(c);
        break;
    case PGRES_POLLING_READING:
        if (conn_watch(c, UV_READABLE) != 0)
            conn_attempt_failed(c);
        break;
    case PGRES_POLLING_WRITING:
        if (conn_watch(c, UV_WRITABLE) != 0)
            conn_attempt_failed(c);
        break;
    default:
        conn_attempt_failed(c);
        break;
    }
}

static void conn_notice_cb(void *arg, const char *message)
{
    cp_db_conn *c = arg;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", message);
    str_trim_nl(buf);
    wp_log_debug("database notice", WP_LS("db", c->db->desc), WP_LS("notice", buf));
}

static void conn_begin_connect(cp_db_conn *c, const char *hostaddr)
{
    cp_db *db = c->db;
    if (db->hostaddr_idx >= 0)
        db->vals[db->hostaddr_idx] = (char *)hostaddr;
    c->pg = PQconnectStartParams((const char *const *)db->kw, (const char *const *)db->vals, 0);
    if (db->hostaddr_idx >= 0)
        db->vals[db->hostaddr_idx] = NULL;
    c->state = C_CONNECTING;
    conn_timer_start(c, db->connect_timeout_ms);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_attempt_failed(c);
        return;
    }
    PQsetNoticeProcessor(c->pg, conn_notice_cb, c);
    if (conn_watch(c, UV_WRITABLE) != 0)
        conn_attempt_failed(c);
}

static void conn_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cp_db_conn *c = req->data;
    cp_db *db = c->db;
    c->gai_active = 0;
    if (db->closing) {
        uv_freeaddrinfo(res);
        db->pending_closes--;
        db_close_step(db);
        return;
    }
    if (c->state != C_RESOLVING) { /* timed out meanwhile; the attempt was already failed */
        uv_freeaddrinfo(res);
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (status == 0 && res) {
        const void *a =
            res->ai_family == AF_INET6
                ? (const void *)&((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr
                : (const void *)&((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        wp_log(db->down ? WP_LOG_DEBUG : WP_LOG_INFO, "database host did not resolve",
               WP_LS("db", db->desc), WP_LS("error", status ? uv_strerror(status) : "no address"));
        c->state = C_CONNECTING; /* so conn_attempt_failed applies */
        conn_attempt_failed(c);
        return;
    }
    conn_begin_connect(c, ip);
}

static void conn_start(cp_db_conn *c)
{
    cp_db *db = c->db;
    if (db->resolve_host) {
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        c->gai.data = c;
        c->state = C_RESOLVING;
        conn_timer_start(c, db->connect_timeout_ms);
        if (uv_getaddrinfo(db->loop, &c->gai, conn_gai_cb, db->resolve_host, db->resolve_port,
                           &hints) != 0) {
            c->state = C_CONNECTING;
            conn_attempt_failed(c);
            return;
        }
        c->gai_active = 1;
        return;
    }
    conn_begin_connect(c, NULL);
}

static void conn_timer_cb(uv_timer_t *t)
{
    cp_db_conn *c = t->data;
    if (c->db->closing)
        return;
    switch (c->state) {
    case C_WAIT:
        if (c->gai_active) /* a timed-out resolution still runs: wait for it to end */
            conn_timer_start(c, 100);
        else
            conn_start(c);
        break;
    case C_RESOLVING:
        /* the resolver keeps running; its callback sees state != RESOLVING and ignores it */
        wp_log_info("database host resolution timed out", WP_LS("db", c->db->desc));
        uv_cancel((uv_req_t *)&c->gai);
        c->state = C_CONNECTING;
        conn_attempt_failed(c);
        break;
    case C_CONNECTING:
        wp_log(c->db->down ? WP_LOG_DEBUG : WP_LOG_INFO, "database connect timed out",
               WP_LS("db", c->db->desc), WP_LI("conn", c->idx));
        conn_attempt_failed(c);
        break;
    case C_BUSY:
        conn_broken(c, c->fail_pending ? c->fail_pending : WP_ERR_TIMEOUT);
        break;
    case C_IDLE:
        /* a reserved connection idle too long: reset it (the server rolls back) */
        if (c->tx) {
            wp_log_warn("database transaction idle too long, resetting connection",
                        WP_LS("db", c->db->desc));
            conn_broken(c, WP_ERR_TIMEOUT);
        }
        break;
    default:
        break;
    }
}

/* The statement in flight finished: hands the result over and frees the connection. */
static void conn_finish_req(cp_db_conn *c)
{
    cp_db *db = c->db;
    cp_db_req *r = c->req;
    PGresult *res = c->keep;
    c->req = NULL;
    c->keep = NULL;
    uv_timer_stop(&c->timer);
    c->state = C_IDLE;
    int err = cp_db_result_err(res);
    if (err == WP_ERR_UNSUPPORTED) {
        /* COPY or similar left the connection in a state we do not drive: reset it. */
        PQclear(res);
        c->req = r;
        conn_broken(c, WP_ERR_UNSUPPORTED);
        return;
    }
    cp_db_tx *tx = r->tx;
    switch (r->kind) {
    case REQ_TX_BEGIN:
    case REQ_SESS_BEGIN:
        if (err == 0) {
            tx->conn = c;
            c->tx = tx;
        }
        break;
    case REQ_TX_END:
        c->tx = NULL;
        if (err == 0 && r->is_commit && strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
            err = WP_ERR_STATE;
        break;
    default:
        if (tx && err && tx->kind == TX_TX)
            tx->failed = 1;
        break;
    }
    /* an unreserved connection left inside a transaction (a caller ran BEGIN through
     * cp_db_query, or an end statement failed) must not serve the next caller */
    int dirty = !c->tx && PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    int lost = conn_watch(c, UV_READABLE) != 0;
    if (c->tx)
        conn_timer_start(c, CP_DB_TX_IDLE_TIMEOUT_MS);
    req_complete(r, err, res);
    PQclear(res);
    if (db->closing)
        return;
    if (lost || (dirty && c->state == C_IDLE && !c->tx && !c->req)) {
        if (dirty)
            wp_log_warn("database connection left inside a transaction, resetting",
                        WP_LS("db", db->desc));
        conn_broken(c, WP_ERR_CLOSED);
        return;
    }
    db_dispatch(db);
}

static void conn_collect(cp_db_conn *c)
{
    while (c->pg && c->req && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            conn_finish_req(c);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            conn_broken(c, WP_ERR_UNSUPPORTED);
            return;
        }
        /* keep the first error, else the last result */
        if (c->keep && cp_db_result_err(c->keep) != 0) {
            PQclear(r);
        } else {
            PQclear(c->keep);
            c->keep = r;
        }
    }
}

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
    cp_db_conn *c = h->data;
    if (c->db->closing || !c->pg)
        return;
    if (status < 0)
        events = UV_READABLE | UV_WRITABLE; /* let libpq find the error */
    switch (c->state) {
    case C_CONNECTING:
        conn_connect_step(c);
        break;
    case C_IDLE:
        if (events & UV_READABLE) {
            if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
                conn_broken(c, WP_ERR_CLOSED);
                return;
            }
            PGnotify *n;
            while ((n = PQnotifies(c->pg)) != NULL)
                PQfreemem(n);
        }
        break;
    case C_BUSY:
        if (c->fail_pending)
            return;
        if (events & UV_READABLE) {
            if (!PQconsumeInput(c->pg)) {
                conn_broken(c, WP_ERR_CLOSED);
                return;
            }
        }
        if (events & (UV_WRITABLE | UV_READABLE)) {
            int f = PQflush(c->pg);
            if (f < 0) {
                conn_broken(c, WP_ERR_CLOSED);
                return;
            }
            if (f == 0 && (c->want_events & UV_WRITABLE) && conn_watch(c, UV_READABLE) != 0) {
                conn_broken(c, WP_ERR_CLOSED);
                return;
            }
        }
        conn_collect(c);
        break;
    default:
        break;
    }
}

/* Sends r on idle connection c. Failures are reported from the timer, never from here. */
static void conn_send(cp_db_conn *c, cp_db_req *r)
{
    int ok;
    c->req = r;
    c->state = C_BUSY;
    c->keep = NULL;
    switch (r->kind) {
    case REQ_QUERY:
        ok = PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, r->params, NULL, NULL, 0);
        break;
    case REQ_SESS_BEGIN:
        ok = PQsendQueryParams(c->pg, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, NULL, 0);
        break;
    default: /* scripts, BEGIN, COMMIT, ROLLBACK, DISCARD ALL: simple protocol */
        ok = PQsendQuery(c->pg, r->sql);
        break;
    }
    int f = ok ? PQflush(c->pg) : -1;
    if (f < 0) {
        log_pg_error(WP_LOG_WARN, "database send failed", c);
        c->fail_pending = WP_ERR_CLOSED;
        conn_timer_start(c, 0);
        return;
    }
    if (conn_watch(c, f == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE) != 0) {
        c->fail_pending = WP_ERR_CLOSED;
        conn_timer_start(c, 0);
        return;
    }
    conn_timer_start(c, r->timeout_ms);
}

static void db_dispatch(cp_db *db)
{
    for (int i = 0; i < db->nconns && db->qhead && !db->closing; i++) {
        cp_db_conn *c = &db->conns[i];
        if (c->state != C_IDLE || c->tx || c->req)
            continue;
        cp_db_req *r = queue_pop(db);
        conn_send(c, r);
    }
}

/* ---------------------------------------------------------------- public API */

static int db_parse_conninfo(cp_db *db, const char *conninfo)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (!opts) {
        PQfreemem(errmsg);
        return WP_ERR_INVAL;
    }
    size_t n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    int rc = WP_ERR_NOMEM;
    db->kw = calloc(n + 2, sizeof(char *));
    db->vals = calloc(n + 2, sizeof(char *));
    if (!db->kw || !db->vals)
        goto out;
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    size_t k = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        db->kw[k] = strdup(o->keyword);
        db->vals[k] = strdup(o->val);
        if (!db->kw[k] || !db->vals[k])
            goto out;
        k++;
    }
    db->hostaddr_idx = -1;
    if (host && host[0] && host[0] != '/' && host[0] != '@' && !hostaddr) {
        if (strchr(host, ',')) {
            rc = WP_ERR_UNSUPPORTED;
            wp_log_error("database: several hosts by name are not supported (use hostaddr=)");
            goto out;
        }
        unsigned char a[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1) {
            db->resolve_host = strdup(host);
            db->resolve_port = strdup(port && port[0] ? port : "5432");
            db->kw[k] = strdup("hostaddr");
            if (!db->resolve_host || !db->resolve_port || !db->kw[k])
                goto out;
            db->hostaddr_idx = (int)k; /* vals[k] stays NULL until an address is known */
        }
    }
    rc = 0;
out:
    PQconninfoFree(opts);
    return rc;
}

static void db_free(cp_db *db)
{
    if (db->kw) {
        for (int i = 0; db->kw[i]; i++) {
            free(db->kw[i]);
            if (db->vals[i]) {
                /* zero values: they may hold a password */
                memset(db->vals[i], 0, strlen(db->vals[i]));
                free(db->vals[i]);
            }
        }
    }
    free(db->kw);
    free(db->vals);
    free(db->resolve_host);
    free(db->resolve_port);
    free(db->conns);
    free(db);
}

int cp_db_new(uv_loop_t *loop, const char *conninfo, int pool_size, cp_db **out)
{
    if (!loop || !conninfo || !out || pool_size > CP_DB_POOL_MAX)
        return WP_ERR_INVAL;
    if (pool_size <= 0)
        pool_size = CP_DB_POOL_DEFAULT;
    cp_db *db = calloc(1, sizeof *db);
    if (!db)
        return WP_ERR_NOMEM;
    db->loop = loop;
    db->query_timeout_ms = CP_DB_QUERY_TIMEOUT_MS;
    db->connect_timeout_ms = CP_DB_CONNECT_TIMEOUT_MS;
    db->backoff_min_ms = CP_DB_BACKOFF_MIN_MS;
    db->backoff_max_ms = CP_DB_BACKOFF_MAX_MS;
    int rc = db_parse_conninfo(db, conninfo);
    if (rc == 0)
        rc = cp_db_conninfo_describe(conninfo, db->desc, sizeof db->desc);
    if (rc == 0) {
        db->conns = calloc((size_t)pool_size, sizeof *db->conns);
        if (!db->conns)
            rc = WP_ERR_NOMEM;
    }
    if (rc != 0) {
        db_free(db);
        return rc;
    }
    db->nconns = pool_size;
    for (int i = 0; i < pool_size; i++) {
        cp_db_conn *c = &db->conns[i];
        c->db = db;
        c->idx = i;
        c->state = C_WAIT;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        conn_start(c);
    }
    *out = db;
    return 0;
}

int cp_db_set_query_timeout(cp_db *db, unsigned ms)
{
    if (!db || ms == 0)
        return WP_ERR_INVAL;
    db->query_timeout_ms = ms;
    return 0;
}

int cp_db_set_connect_timeout(cp_db *db, unsigned ms)
{
    if (!db || ms == 0)
        return WP_ERR_INVAL;
    db->connect_timeout_ms = ms;
    return 0;
}

void cp_db_set_quiet(cp_db *db, int quiet)
{
    if (db)
        db->quiet = quiet != 0;
}

int cp_db_set_backoff(cp_db *db, unsigned min_ms, unsigned max_ms)
{
    if (!db || min_ms == 0 || min_ms > max_ms)
        return WP_ERR_INVAL;
    db->backoff_min_ms = min_ms;
    db->backoff_max_ms = max_ms;
    return 0;
}

/* Common admission for requests that need a connection from the queue. */
static int db_admit(cp_db *db)
{
    if (db->closing)
        return WP_ERR_CLOSED;
    if (db->down && cp_db_conns_up(db) == 0)
        return WP_ERR_CLOSED;
    if (db->qlen >= CP_DB_QUEUE_MAX)
        return WP_ERR_LIMIT;
    return 0;
}

int cp_db_query(cp_db *db, const char *sql, int nparams, const char *const *params,
                cp_db_result_cb cb, void *ud)
{
    if (!db || !sql || !cb)
        return WP_ERR_INVAL;
    int rc = db_admit(db);
    if (rc)
        return rc;
    cp_db_req *r = req_new(REQ_QUERY, sql, nparams, params, &rc);
    if (!r)
        return rc;
    r->cb = cb;
    r->ud = ud;
    r->timeout_ms = db->query_timeout_ms;
    queue_push(db, r);
    db_dispatch(db);
    return 0;
}

static int db_reserve(cp_db *db, int kind, cp_db_tx_cb cb, void *ud)
{
    if (!db || !cb)
        return WP_ERR_INVAL;
    int rc = db_admit(db);
    if (rc)
        return rc;
    cp_db_req *r = req_new(kind == TX_TX ? REQ_TX_BEGIN : REQ_SESS_BEGIN, "BEGIN", 0, NULL, &rc);
    if (!r)
        return rc;
    cp_db_tx *tx = calloc(1, sizeof *tx);
    if (!tx) {
        free(r);
        return WP_ERR_NOMEM;
    }
    tx->db = db;
    tx->kind = kind;
    tx->timeout_ms = db->query_timeout_ms;
    tx->next = db->txs;
    if (db->txs)
        db->txs->prev = tx;
    db->txs = tx;
    r->tx = tx;
    r->txcb = cb;
    r->ud = ud;
    r->timeout_ms = db->query_timeout_ms;
    queue_push(db, r);
    db_dispatch(db);
    return 0;
}

int cp_db_tx_begin(cp_db *db, cp_db_tx_cb cb, void *ud)
{
    return db_reserve(db, TX_TX, cb, ud);
}

int cp_db_session_begin(cp_db *db, cp_db_tx_cb cb, void *ud)
{
    return db_reserve(db, TX_SESSION, cb, ud);
}

static int tx_usable(cp_db_tx *tx)
{
    if (tx->db->closing)
        return WP_ERR_CLOSED;
    if (tx->busy)
        return WP_ERR_BUSY;
    if (!tx->conn)
        return tx->err ? tx->err : WP_ERR_CLOSED;
    return 0;
}

static int tx_send(cp_db_tx *tx, int kind, const char *sql, int nparams, const char *const *params,
                   cp_db_result_cb cb, void *ud)
{
    if (!tx || !sql || !cb)
        return WP_ERR_INVAL;
    int rc = tx_usable(tx);
    if (rc)
        return rc;
    cp_db_req *r = req_new(kind, sql, nparams, params, &rc);
    if (!r)
        return rc;
    r->cb = cb;
    r->ud = ud;
    r->tx = tx;
    r->timeout_ms = tx->timeout_ms;
    tx->busy = 1;
    uv_timer_stop(&tx->conn->timer);
    conn_send(tx->conn, r);
    return 0;
}

int cp_db_tx_query(cp_db_tx *tx, const char *sql, int nparams, const char *const *params,
                   cp_db_result_cb cb, void *ud)
{
    return tx_send(tx, REQ_QUERY, sql, nparams, params, cb, ud);
}

int cp_db_tx_exec_script(cp_db_tx *tx, const char *sql, cp_db_result_cb cb, void *ud)
{
    return tx_send(tx, REQ_SCRIPT, sql, 0, NULL, cb, ud);
}

int cp_db_tx_set_timeout(cp_db_tx *tx, unsigned ms)
{
    if (!tx || ms == 0)
        return WP_ERR_INVAL;
    tx->timeout_ms = ms;
    return 0;
}

static int tx_end(cp_db_tx *tx, const char *sql, int is_commit, cp_db_done_cb cb, void *ud,
                  int require_cb)
{
    if (!tx || (require_cb && !cb))
        return WP_ERR_INVAL;
    if (tx->db->closing)
        return WP_ERR_CLOSED;
    if (tx->busy)
        return WP_ERR_BUSY;
    if (!tx->conn) {
        int err = tx->err ? tx->err : WP_ERR_CLOSED;
        tx_unlink_free(tx);
        return err;
    }
    cp_db_conn *c = tx->conn;
    int rc = 0;
    cp_db_req *r = req_new(REQ_TX_END, sql, 0, NULL, &rc);
    if (!r)
        return rc;
    r->donecb = cb;
    r->ud = ud;
    r->tx = tx;
    r->is_commit = is_commit;
    r->timeout_ms = tx->timeout_ms;
    tx->busy = 1;
    uv_timer_stop(&c->timer);
    conn_send(c, r);
    return 0;
}

int cp_db_tx_commit(cp_db_tx *tx, cp_db_done_cb cb, void *ud)
{
    return tx_end(tx, "COMMIT", 1, cb, ud, 1);
}

int cp_db_tx_rollback(cp_db_tx *tx, cp_db_done_cb cb, void *ud)
{
    return tx_end(tx, "ROLLBACK", 0, cb, ud, 1);
}

/*
 * What DISCARD ALL does, but allowed in the implicit transaction of a multi-statement
 * string, after a ROLLBACK that ends whatever the session left open (outside a
 * transaction ROLLBACK only warns).
 */
static const char db_session_reset_sql[] =
    "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL;"
    " SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES;"
    " UNLISTEN *";

int cp_db_session_end(cp_db_tx *tx, cp_db_done_cb cb, void *ud)
{
    return tx_end(tx, db_session_reset_sql, 0, cb, ud, 1);
}

/* ---------------------------------------------------------------- close */

static void db_handle_closed_cb(uv_handle_t *h)
{
    cp_db_conn *c = h->data;
    cp_db *db = c->db;
    db->pending_closes--;
    db_close_step(db);
}

static void db_close_step(cp_db *db)
{
    if (db->pending_closes > 0)
        return;
    /* every handle is closed: fail what is left, from the loop */
    cp_db_req *r;
    while ((r = db->dead) != NULL) {
        db->dead = r->next;
        req_complete(r, WP_ERR_CLOSED, NULL);
    }
    while ((r = queue_pop(db)) != NULL)
        req_complete(r, WP_ERR_CLOSED, NULL);
    while (db->txs)
        tx_unlink_free(db->txs);
    cp_db_close_cb cb = db->close_cb;
    void *ud = db->close_ud;
    db_free(db);
    if (cb)
        cb(ud);
}

int cp_db_close(cp_db *db, cp_db_close_cb cb, void *ud)
{
    if (!db)
        return WP_ERR_INVAL;
    if (db->closing)
        return WP_ERR_STATE;
    db->closing = 1;
    db->close_cb = cb;
    db->close_ud = ud;
    db->pending_closes = 1; /* held until every close is requested */
    for (int i = 0; i < db->nconns; i++) {
        cp_db_conn *c = &db->conns[i];
        if (c->req) {
            c->req->next = db->dead;
            db->dead = c->req;
            c->req = NULL;
        }
        if (c->keep) {
            PQclear(c->keep);
            c->keep = NULL;
        }
        if (c->poll_open) {
            c->poll_open = 0;
            db->pending_closes++;
            uv_close((uv_handle_t *)&c->poll, db_handle_closed_cb);
        } else if (c->poll_closing) {
            db->pending_closes++; /* conn_poll_closed_cb counts it down */
        }
        if (c->gai_active) {
            db->pending_closes++; /* conn_gai_cb counts it down */
            uv_cancel((uv_req_t *)&c->gai);
        }
        db->pending_closes++;
        uv_close((uv_handle_t *)&c->timer, db_handle_closed_cb);
        if (c->pg) {
            PQfinish(c->pg);
            c->pg = NULL;
        }
        c->state = C_CLOSED;
    }
    /* Requests are failed in db_close_step, which runs from a close callback (the
     * timers guarantee there is at least one), never inside this call. */
    db->pending_closes--;
    return 0;
}
