/*
 * api_events.c — the events resource (see api_events.h).
 *
 *   GET /api/v1/events?node=&session=&type=&since=&limit=&cursor=
 *       → {"events":[...], "next_cursor": "<id>" | null}, OLDEST FIRST (ascending id).
 *       since: RFC 3339 time (events created at or after it; encode '+' as %2B);
 *       cursor: an event id (events after it; next_cursor is the last id of a full page, so
 *       a client tails the log by passing the last id it saw). limit 1..500, default 100.
 *   GET /api/v1/events/stream?node=&session=&type=[&cursor=]   (text/event-stream)
 *       Each event: "id: <id>\nevent: <type>\ndata: <event JSON>\n\n". Starts after
 *       Last-Event-ID (header) or cursor; otherwise with the events created after the
 *       response headers were sent. ": keepalive" every 15 s of silence.
 *
 * Streams: each stream owns a uv_timer polling the table every CP_SSE_POLL_MS (at most
 * CP_SSE_BATCH rows; a full batch is followed by another poll at once). Event ids come from
 * a sequence, so a transaction that drew id 10 may commit after the one that drew 11: a
 * stream that sees 11 but not 10 stops at the gap until the row after it is
 * CP_SSE_SETTLE_MS old (by then 10 committed or never will: rolled back). Output waits in a
 * bounded buffer while the socket is slow (backpressure: wp_http_resp_on_drain); no poll
 * runs while it is full. A stream ends when the client goes away or the server closes
 * (both arrive as on_abort): its timer is closed and it is freed once the timer's close
 * callback ran and no query is in flight, so wolfpackd's loop closes cleanly.
 */
#include "api_events.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_nodes.h"
#include "auth.h"
#include "buf.h"
#include "err.h"
#include "events.h"
#include "ids.h"
#include "json.h"
#include "log.h"
#include "pgjson.h"
#include "store.h"

#define CP_EVENT_COLUMNS                                                                           \
    "id, type, " CP_SQL_TS("created_at") " AS created_at, node_id, session_id, token_id, "         \
                                         "replica_id, message, data"

#define CP_EVENTS_FILTER                                                                           \
    "($1::text IS NULL OR node_id = $1) AND ($2::uuid IS NULL OR session_id = $2::uuid) AND "      \
    "($3::text IS NULL OR type = $3)"

#define CP_SSE_STR_(x) #x
#define CP_SSE_STR(x)  CP_SSE_STR_(x)

static size_t cp_sse_active;

size_t cp_api_events_streams(void)
{
    return cp_sse_active;
}

/* ---- pure parsing ---- */

static int cp_events_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

int cp_api_events_time_valid(const char *s)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec;
    if (!s || strlen(s) < 20)
        return 0;
    if (!cp_events_digits(s, 4, &y) || s[4] != '-' || !cp_events_digits(s + 5, 2, &mo) ||
        s[7] != '-' || !cp_events_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !cp_events_digits(s + 11, 2, &h) || s[13] != ':' || !cp_events_digits(s + 14, 2, &mi) ||
        s[16] != ':' || !cp_events_digits(s + 17, 2, &sec))
        return 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 0;
    const char *p = s + 19;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++)
            n++;
        if (n < 1 || n > 9)
            return 0;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return 1;
    int oh, om;
    if ((*p != '+' && *p != '-') || strlen(p) != 6 || !cp_events_digits(p + 1, 2, &oh) ||
        p[3] != ':' || !cp_events_digits(p + 4, 2, &om))
        return 0;
    return oh <= 14 && om <= 59;
}

int cp_api_events_cursor_parse(const char *s, long long *out)
{
    if (!s)
        return WP_ERR_INVAL;
    size_t n = strlen(s);
    if (n < 1 || n > 16)
        return WP_ERR_INVAL;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return WP_ERR_INVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > (1LL << 53))
        return WP_ERR_INVAL;
    *out = v;
    return 0;
}

/* ---- shared request parsing ---- */

typedef struct cp_events_filter {
    char node[WP_NODE_ID_MAX + 1];
    char session[40];
    char type[CP_EVENT_TYPE_MAX + 1];
    char since[48];
    char cursor[24];
    char limit[16];
    int has_node, has_session, has_type, has_since, has_cursor, has_limit;
} cp_events_filter;

/* Parses and checks the filters; answers 400 and returns -1 when they are invalid. */
static int cp_events_filter_parse(cp_call *call, cp_events_filter *f)
{
    memset(f, 0, sizeof(*f));
    if ((f->has_node = cp_call_query(call, "node", f->node, sizeof(f->node))) < 0 ||
        (f->has_session = cp_call_query(call, "session", f->session, sizeof(f->session))) < 0 ||
        (f->has_type = cp_call_query(call, "type", f->type, sizeof(f->type))) < 0 ||
        (f->has_since = cp_call_query(call, "since", f->since, sizeof(f->since))) < 0 ||
        (f->has_cursor = cp_call_query(call, "cursor", f->cursor, sizeof(f->cursor))) < 0 ||
        (f->has_limit = cp_call_query(call, "limit", f->limit, sizeof(f->limit))) < 0)
        return -1;
    long long c;
    const char *why = NULL;
    if (f->has_node && !wp_node_id_valid(f->node))
        why = "query parameter \"node\": must be a node id";
    else if (f->has_session && !wp_uuid_valid(f->session))
        why = "query parameter \"session\": must be a UUID";
    else if (f->has_type && !cp_event_type_valid(f->type))
        why = "query parameter \"type\": must be an event type such as node.online";
    else if (f->has_since && !cp_api_events_time_valid(f->since))
        why = "query parameter \"since\": must be an RFC 3339 time such as "
              "2024-05-01T12:00:00Z";
    else if (f->has_cursor && cp_api_events_cursor_parse(f->cursor, &c) != 0)
        why = "query parameter \"cursor\": must be an event id";
    if (why) {
        cp_call_respond_error(call, 400, "invalid_request", why);
        return -1;
    }
    return 0;
}

/* ---- GET /api/v1/events ---- */

static void cp_events_listed(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    cp_call_respond_page(call, err, res, "events", (int)(intptr_t)call->data);
}

static void cp_events_list(cp_call *call)
{
    cp_events_filter f;
    if (cp_events_filter_parse(call, &f) != 0)
        return;
    int limit =
        cp_api_page_limit(f.has_limit ? f.limit : NULL, CP_EVENTS_PAGE_DEFAULT, CP_EVENTS_PAGE_MAX);
    if (limit < 0) {
        cp_call_respond_error(call, 400, "invalid_request",
                              "query parameter \"limit\": must be an integer between 1 and 500");
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit + 1);
    const char *params[] = {f.has_node ? f.node : NULL,    f.has_session ? f.session : NULL,
                            f.has_type ? f.type : NULL,    f.has_since ? f.since : NULL,
                            f.has_cursor ? f.cursor : "0", lim};
    call->data = (void *)(intptr_t)limit;
    int rc = cp_db_query(cp_store_db(call->server->store),
                         "SELECT " CP_EVENT_COLUMNS " FROM events WHERE " CP_EVENTS_FILTER " AND "
                         "($4::timestamptz IS NULL OR created_at >= $4::timestamptz) AND "
                         "id > $5::bigint ORDER BY id LIMIT $6::int",
                         6, params, cp_events_listed, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

/* ---- GET /api/v1/events/stream ---- */

typedef struct cp_sse {
    cp_server *server;
    wp_http_req *req; /* NULL once finished or aborted */
    uv_timer_t timer;
    int timer_closed;
    int inflight; /* a poll query is running */
    int dead;     /* stopped: waiting for the timer close and the query */
    int blocked;  /* the write queue is full: waiting for on_drain */
    long long cursor;
    uint64_t last_write;
    wp_buf pending;
    cp_events_filter f;
} cp_sse;

static void cp_sse_poll(cp_sse *s);

static void cp_sse_maybe_free(cp_sse *s)
{
    if (s->dead && s->timer_closed && !s->inflight) {
        wp_buf_free(&s->pending);
        free(s);
    }
}

static void cp_sse_timer_closed(uv_handle_t *h)
{
    cp_sse *s = h->data;
    s->timer_closed = 1;
    cp_sse_maybe_free(s);
}

/* Stops polling; s is freed later (never inside this call). */
static void cp_sse_stop(cp_sse *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    cp_sse_active--;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, cp_sse_timer_closed);
}

/* Ends the response from our side (write failure) and stops. */
static void cp_sse_end(cp_sse *s)
{
    wp_http_req *req = s->req;
    s->req = NULL;
    if (req) {
        wp_http_req_on_abort(req, NULL, NULL);
        wp_http_resp_on_drain(req, NULL, NULL);
        wp_http_resp_end(req);
    }
    cp_sse_stop(s);
}

static void cp_sse_aborted(wp_http_req *req, void *ud)
{
    (void)req;
    cp_sse *s = ud;
    s->req = NULL;
    cp_sse_stop(s);
}

static void cp_sse_flush(cp_sse *s)
{
    if (!s->req || s->blocked || wp_buf_len(&s->pending) == 0)
        return;
    int rc = wp_http_resp_write(s->req, wp_buf_ptr(&s->pending), wp_buf_len(&s->pending));
    if (rc == 0) {
        wp_buf_reset(&s->pending);
        s->last_write = uv_now(s->server->loop);
    } else if (rc == WP_ERR_LIMIT) {
        s->blocked = 1;
    } else {
        cp_sse_end(s);
    }
}

static void cp_sse_drained(wp_http_req *req, void *ud)
{
    (void)req;
    cp_sse *s = ud;
    s->blocked = 0;
    cp_sse_flush(s);
    if (!s->dead && !s->blocked)
        cp_sse_poll(s);
}

/* Appends one event as an SSE message; 0, or WP_ERR_LIMIT when the buffer is full. */
static int cp_sse_put_event(cp_sse *s, PGresult *res, int row)
{
    cJSON *o = cp_pgjson_row(res, row);
    if (!o)
        return WP_ERR_NOMEM;
    cJSON_DeleteItemFromObjectCaseSensitive(o, "match");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "settled");
    char *text = wp_json_print(o);
    cJSON_Delete(o);
    if (!text)
        return WP_ERR_NOMEM;
    int rc = wp_buf_putf(&s->pending, "id: %s\nevent: %s\ndata: %s\n\n", PQgetvalue(res, row, 2),
                         PQgetvalue(res, row, 3), text);
    cJSON_free(text);
    if (rc != 0 && wp_buf_len(&s->pending) == 0) {
        /* larger than the whole buffer: it can never be sent, skip it */
        wp_log_warn("event too large for the stream, skipped",
                    WP_LS("id", PQgetvalue(res, row, 2)));
        return 0;
    }
    return rc;
}

static void cp_sse_polled(int err, PGresult *res, void *ud)
{
    cp_sse *s = ud;
    s->inflight = 0;
    if (s->dead) {
        cp_sse_maybe_free(s);
        return;
    }
    if (err != 0)
        return; /* database trouble: try again at the next tick */
    int n = PQntuples(res), stopped = 0;
    for (int i = 0; i < n; i++) {
        long long id = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        int settled = PQgetvalue(res, i, 1)[0] == 't';
        if (id != s->cursor + 1 && !settled) {
            stopped = 1; /* an earlier id may still commit */
            break;
        }
        if (PQgetvalue(res, i, 0)[0] == 't' && cp_sse_put_event(s, res, i) != 0) {
            stopped = 1; /* buffer full: continue from here once it drained */
            break;
        }
        s->cursor = id;
    }
    cp_sse_flush(s);
    if (!stopped && n == CP_SSE_BATCH && !s->dead && !s->blocked)
        cp_sse_poll(s);
}

static void cp_sse_poll(cp_sse *s)
{
    if (s->dead || s->inflight || s->blocked)
        return;
    cp_db *db = cp_store_db(s->server->store);
    if (!db)
        return;
    char cur[24], lim[16];
    snprintf(cur, sizeof(cur), "%lld", s->cursor);
    snprintf(lim, sizeof(lim), "%d", CP_SSE_BATCH);
    const cp_events_filter *f = &s->f;
    const char *params[] = {f->has_node ? f->node : NULL, f->has_session ? f->session : NULL,
                            f->has_type ? f->type : NULL, cur, lim};
    int rc =
        cp_db_query(db,
                    "SELECT coalesce(" CP_EVENTS_FILTER ", false) AS match, "
                    "created_at < clock_timestamp() - make_interval(secs => " CP_SSE_STR(
                        CP_SSE_SETTLE_MS) " / 1000.0) AS settled, " CP_EVENT_COLUMNS " FROM events "
                                          "WHERE id > $4::bigint ORDER BY id LIMIT $5::int",
                    5, params, cp_sse_polled, s);
    if (rc == 0)
        s->inflight = 1;
}

static void cp_sse_tick(uv_timer_t *t)
{
    cp_sse *s = t->data;
    uint64_t now = uv_now(s->server->loop);
    if (!s->blocked && wp_buf_len(&s->pending) == 0 && now - s->last_write >= CP_SSE_KEEPALIVE_MS) {
        wp_buf_put_str(&s->pending, ": keepalive\n\n");
        cp_sse_flush(s);
    }
    cp_sse_poll(s);
}

/* Starts streaming after cursor; ends the call (the stream owns the request from here). */
static void cp_sse_start(cp_call *call, const cp_events_filter *f, long long cursor)
{
    wp_http_req *req = cp_call_req(call);
    if (!req) {
        cp_call_done(call); /* the client went away */
        return;
    }
    if (cp_sse_active >= CP_SSE_STREAMS_MAX) {
        cp_call_respond_error(call, 503, "too_many_streams",
                              "too many event streams are open, retry later");
        return;
    }
    cp_sse *s = calloc(1, sizeof(*s));
    if (!s) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    s->server = call->server;
    s->f = *f;
    s->cursor = cursor;
    wp_buf_init(&s->pending, CP_SSE_PENDING_MAX);
    wp_http_resp_header(req, "Cache-Control", "no-cache");
    wp_http_resp_header(req, "X-Accel-Buffering", "no");
    if (wp_http_resp_begin(req, 200, "text/event-stream") != 0) {
        wp_buf_free(&s->pending);
        free(s);
        cp_call_respond_error(call, 500, "internal", "cannot start the stream");
        return;
    }
    uv_timer_init(s->server->loop, &s->timer);
    s->timer.data = s;
    s->req = req;
    cp_sse_active++;
    /* The stream owns the request now: end the call without answering (that clears its
     * on_abort), then take over on_abort. */
    cp_call_done(call);
    wp_http_req_on_abort(req, cp_sse_aborted, s);
    wp_http_resp_on_drain(req, cp_sse_drained, s);
    wp_log_debug("event stream opened", WP_LI("cursor", cursor),
                 WP_LI("streams", (long long)cp_sse_active));
    s->last_write = uv_now(s->server->loop);
    wp_buf_put_str(&s->pending, "retry: 3000\n: connected\n\n");
    cp_sse_flush(s);
    if (!s->dead)
        uv_timer_start(&s->timer, cp_sse_tick, 0, CP_SSE_POLL_MS);
}

typedef struct cp_sse_opening {
    cp_events_filter f;
} cp_sse_opening;

static void cp_sse_max_id(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    cp_sse_opening *o = call->data;
    call->data = NULL;
    if (err != 0 || PQntuples(res) != 1) {
        free(o);
        cp_call_respond_db_error(call, err ? err : WP_ERR_INTERNAL);
        return;
    }
    long long cursor = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    cp_sse_start(call, &o->f, cursor);
    free(o);
}

static void cp_events_stream(cp_call *call)
{
    cp_events_filter f;
    if (cp_events_filter_parse(call, &f) != 0)
        return;
    if (f.has_since || f.has_limit) {
        cp_call_respond_error(call, 400, "invalid_request",
                              "the stream takes node, session, type and cursor (or "
                              "Last-Event-ID), not since or limit");
        return;
    }
    long long cursor = 0;
    const char *last = wp_http_req_header(cp_call_req(call), "Last-Event-ID");
    if (last && cp_api_events_cursor_parse(last, &cursor) != 0) {
        cp_call_respond_error(call, 400, "invalid_request",
                              "Last-Event-ID: must be an event id this stream sent");
        return;
    }
    if (!last && f.has_cursor)
        cp_api_events_cursor_parse(f.cursor, &cursor);
    if (last || f.has_cursor) {
        cp_sse_start(call, &f, cursor);
        return;
    }
    if (cp_sse_active >= CP_SSE_STREAMS_MAX) {
        cp_call_respond_error(call, 503, "too_many_streams",
                              "too many event streams are open, retry later");
        return;
    }
    /* No starting point: start after the newest event, fixed before the headers go out. */
    cp_sse_opening *o = malloc(sizeof(*o));
    if (!o) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    o->f = f;
    call->data = o;
    int rc = cp_db_query(cp_store_db(call->server->store),
                         "SELECT coalesce(max(id), 0) FROM events", 0, NULL, cp_sse_max_id, call);
    if (rc != 0) {
        call->data = NULL;
        free(o);
        cp_call_respond_db_error(call, rc);
    }
}

int cp_api_events_register(cp_server *s)
{
    int rc;
    if ((rc = cp_auth_route(s, "GET", "/api/v1/events", CP_ROLE_ADMIN, cp_events_list)) != 0 ||
        (rc = cp_auth_route(s, "GET", "/api/v1/events/stream", CP_ROLE_ADMIN, cp_events_stream)) !=
            0)
        return rc;
    return 0;
}
