/*
 * test_cp_wolf.c — the Wolf API client (controlplane/wolf.h): id checks, the
 * incremental reply parser against Wolf's quirks (`HTTP/1.0 404 OK`, no
 * Content-Length, truncation, oversize, garbage), the result interpretation
 * (envelopes, non-JSON), argument checks of the calls, and the "node not
 * connected" path: reported from the loop, never inside the call, with no
 * handle left behind; cancellation. Calls over a real tunnel to a real agent
 * and a fake Wolf are covered by the integration tests.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "log.h"
#include "server.h"
#include "wolf.h"
#include "wp_test.h"

WP_TEST(wolf_id_checks)
{
    WP_CHECK_EQ(cp_wolf_id_numeric("0"), 1);
    WP_CHECK_EQ(cp_wolf_id_numeric("1"), 1);
    WP_CHECK_EQ(cp_wolf_id_numeric("9223372036854775808"), 1);  /* > INT64_MAX */
    WP_CHECK_EQ(cp_wolf_id_numeric("18446744073709551615"), 1); /* UINT64_MAX */
    WP_CHECK_EQ(cp_wolf_id_numeric("18446744073709551616"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("99999999999999999999"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("100000000000000000000"), 0); /* 21 digits */
    WP_CHECK_EQ(cp_wolf_id_numeric(""), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric(NULL), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("-1"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("+1"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric(" 1"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("1 "), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("01"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("12a"), 0);
    WP_CHECK_EQ(cp_wolf_id_numeric("0x10"), 0);

    WP_CHECK_EQ(cp_wolf_lobby_id_valid("3f2b9c1e-8a4d-4e21-9b7a-0c1d2e3f4a5b"), 1);
    WP_CHECK_EQ(cp_wolf_lobby_id_valid("a"), 1);
    WP_CHECK_EQ(cp_wolf_lobby_id_valid(""), 0);
    WP_CHECK_EQ(cp_wolf_lobby_id_valid(NULL), 0);
    WP_CHECK_EQ(cp_wolf_lobby_id_valid("a b"), 0);
    WP_CHECK_EQ(cp_wolf_lobby_id_valid("a\"b"), 0);
    WP_CHECK_EQ(cp_wolf_lobby_id_valid("../x"), 0);
    char long_id[66];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    WP_CHECK_EQ(cp_wolf_lobby_id_valid(long_id), 0);
    long_id[64] = '\0';
    WP_CHECK_EQ(cp_wolf_lobby_id_valid(long_id), 1);

    WP_CHECK_EQ(cp_wolf_pin_valid("1234"), 1);
    WP_CHECK_EQ(cp_wolf_pin_valid("0000"), 1);
    WP_CHECK_EQ(cp_wolf_pin_valid("123"), 0);
    WP_CHECK_EQ(cp_wolf_pin_valid("12345"), 0);
    WP_CHECK_EQ(cp_wolf_pin_valid("12a4"), 0);
    WP_CHECK_EQ(cp_wolf_pin_valid(NULL), 0);
}

/* Feeds text in pieces of `step` bytes; returns the last feed answer (and finish at FIN when
 * fin is set and the feed said "need more"). */
static int feed_all(cp_wolf_reply *r, const char *text, size_t len, size_t step, int fin)
{
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i += step) {
        size_t n = len - i < step ? len - i : step;
        rc = cp_wolf_reply_feed(r, text + i, n);
    }
    if (rc == 0 && fin)
        rc = cp_wolf_reply_finish(r);
    return rc;
}

/* Parses a whole reply (byte by byte and in one piece, which must agree) and interprets it. */
static int interpret(const char *text, int fin, int *status, const char **reason, char *msg,
                     size_t cap, cJSON **json)
{
    cp_wolf_reply a, b;
    cp_wolf_reply_init(&a, CP_WOLF_REPLY_MAX);
    cp_wolf_reply_init(&b, CP_WOLF_REPLY_MAX);
    int ra = feed_all(&a, text, strlen(text), 1, fin);
    int rb = feed_all(&b, text, strlen(text), strlen(text) + 1, fin);
    WP_CHECK_EQ(ra, rb);
    int err = ra;
    *json = NULL;
    if (ra == 1) {
        *status = a.status;
        err = cp_wolf_reply_result(&a, json, reason, msg, cap);
    }
    cp_wolf_reply_free(&a);
    cp_wolf_reply_free(&b);
    return err;
}

WP_TEST(wolf_reply_quirks)
{
    char msg[CP_WOLF_MESSAGE_MAX];
    const char *reason = NULL;
    int status = 0;
    cJSON *j = NULL;

    /* 404 with "OK" and an empty body: Wolf's unknown route */
    WP_CHECK_EQ(interpret("HTTP/1.0 404 OK\r\nContent-Length: 0\r\n\r\n", 0, &status, &reason, msg,
                          sizeof(msg), &j),
                WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(status, 404);
    WP_CHECK_STR(reason, "wolf_error");
    WP_CHECK_STR(msg, "Wolf answered HTTP 404");
    WP_CHECK(j == NULL);

    /* 500 "OK" with the error envelope */
    const char *e500 = "HTTP/1.0 500 OK\r\nContent-Length: 46\r\n\r\n"
                       "{\"success\":false,\"error\":\"Invalid session_id\"}";
    WP_CHECK_EQ(interpret(e500, 0, &status, &reason, msg, sizeof(msg), &j), WP_ERR_IO);
    WP_CHECK_EQ(status, 500);
    WP_CHECK_STR(reason, "wolf_error");
    WP_CHECK_STR(msg, "Invalid session_id");
    WP_CHECK(cJSON_IsObject(j));
    cJSON_Delete(j);

    /* success */
    const char *ok = "HTTP/1.0 200 OK\r\nContent-Length: 53\r\n\r\n"
                     "{\"success\":true,\"lobby_id\":\"3f2b9c1e-8a4d-4e21-9b7a\"}";
    WP_CHECK_EQ(interpret(ok, 0, &status, &reason, msg, sizeof(msg), &j), 0);
    WP_CHECK_EQ(status, 200);
    WP_CHECK_STR(reason, "ok");
    WP_CHECK_STR(wp_json_get_str(j, "lobby_id"), "3f2b9c1e-8a4d-4e21-9b7a");
    cJSON_Delete(j);

    /* 200 with success:false is still a Wolf error */
    WP_CHECK_EQ(interpret("HTTP/1.0 200 OK\r\nContent-Length: 17\r\n\r\n{\"success\":false}", 0,
                          &status, &reason, msg, sizeof(msg), &j),
                WP_ERR_IO);
    WP_CHECK_STR(reason, "wolf_error");
    WP_CHECK_STR(msg, "Wolf reported a failure");
    cJSON_Delete(j);

    /* no envelope (openapi-schema): ok; non-boolean success: bad */
    WP_CHECK_EQ(interpret("HTTP/1.0 200 OK\r\nContent-Length: 19\r\n\r\n{\"openapi\":\"3.1.0\"}", 0,
                          &status, &reason, msg, sizeof(msg), &j),
                0);
    cJSON_Delete(j);
    WP_CHECK_EQ(interpret("HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\n{\"success\":\"y\"}", 0,
                          &status, &reason, msg, sizeof(msg), &j),
                WP_ERR_PROTO);
    WP_CHECK_STR(reason, "bad_response");
    cJSON_Delete(j);

    /* no Content-Length: the body runs to FIN; HTTP/1.1 and another reason text are fine */
    WP_CHECK_EQ(interpret("HTTP/1.1 200 Whatever Reason\r\n\r\n{\"success\":true,\"sessions\":[]}",
                          1, &status, &reason, msg, sizeof(msg), &j),
                0);
    WP_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "sessions")));
    cJSON_Delete(j);
    WP_CHECK_EQ(interpret("HTTP/1.0 200\r\n\r\n{\"success\":true}", 1, &status, &reason, msg,
                          sizeof(msg), &j),
                0);
    cJSON_Delete(j);

    /* 2xx that is not JSON, or empty */
    WP_CHECK_EQ(interpret("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, &status, &reason,
                          msg, sizeof(msg), &j),
                WP_ERR_PROTO);
    WP_CHECK_STR(reason, "bad_response");
    WP_CHECK(strstr(msg, "not JSON") != NULL);
    WP_CHECK(j == NULL);
    WP_CHECK_EQ(interpret("HTTP/1.0 200 OK\r\n\r\n", 1, &status, &reason, msg, sizeof(msg), &j),
                WP_ERR_PROTO);
    WP_CHECK(strstr(msg, "empty") != NULL);
    /* non-JSON error body: status kept, generic message */
    WP_CHECK_EQ(interpret("HTTP/1.0 500 OK\r\nContent-Length: 4\r\n\r\noops", 0, &status, &reason,
                          msg, sizeof(msg), &j),
                WP_ERR_IO);
    WP_CHECK_STR(msg, "Wolf answered HTTP 500");

    /* Wolf's error text: control characters blanked, cut to the buffer */
    char small[12];
    WP_CHECK_EQ(interpret("HTTP/1.0 500 OK\r\nContent-Length: 44\r\n\r\n"
                          "{\"success\":false,\"error\":\"a\\nb\\u0007c-long\"}",
                          0, &status, &reason, small, sizeof(small), &j),
                WP_ERR_IO);
    WP_CHECK_STR(small, "a b c-long");
    cJSON_Delete(j);
    WP_CHECK_EQ(interpret("HTTP/1.0 500 OK\r\nContent-Length: 52\r\n\r\n"
                          "{\"success\":false,\"error\":\"0123456789abcdefghijklmn\"}",
                          0, &status, &reason, small, sizeof(small), &j),
                WP_ERR_IO);
    WP_CHECK_STR(small, "0123456789a");
    cJSON_Delete(j);
}

WP_TEST(wolf_reply_bounds_and_garbage)
{
    cp_wolf_reply r;
    size_t len;

    /* bytes past Content-Length are ignored */
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    const char *t = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 1);
    const char *b = cp_wolf_reply_body(&r, &len);
    WP_CHECK_EQ(len, 2);
    WP_CHECK(memcmp(b, "{}", 2) == 0);
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, "x", 1), 1); /* after completion: same answer */
    WP_CHECK_EQ(cp_wolf_reply_finish(&r), 1);
    cp_wolf_reply_free(&r);

    /* truncated: fewer body bytes than Content-Length at FIN */
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    t = "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 0);
    WP_CHECK_EQ(cp_wolf_reply_finish(&r), WP_ERR_MALFORMED);
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, "x", 1), WP_ERR_MALFORMED); /* sticky */
    cp_wolf_reply_free(&r);

    /* truncated head; nothing at all */
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    t = "HTTP/1.0 200 OK\r\nContent-Len";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 0);
    WP_CHECK_EQ(cp_wolf_reply_finish(&r), WP_ERR_MALFORMED);
    cp_wolf_reply_free(&r);
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    WP_CHECK_EQ(cp_wolf_reply_finish(&r), WP_ERR_MALFORMED);
    cp_wolf_reply_free(&r);

    /* body larger than the cap: announced (refused at once) or streamed to FIN */
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    t = "HTTP/1.0 200 OK\r\nContent-Length: 1048577\r\n\r\n";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), WP_ERR_LIMIT);
    cp_wolf_reply_free(&r);
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    t = "HTTP/1.0 200 OK\r\n\r\n";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 0);
    char *chunk = malloc(16384);
    memset(chunk, ' ', 16384);
    int rc = 0, chunks = 0;
    while (rc == 0 && chunks < 100) {
        rc = cp_wolf_reply_feed(&r, chunk, 16384);
        chunks++;
    }
    WP_CHECK_EQ(rc, WP_ERR_LIMIT);
    WP_CHECK_EQ(chunks, 64); /* 64 * 16 KiB crosses 1 MiB with the head */
    WP_CHECK(wp_buf_len(&r.in) <= CP_WOLF_REPLY_MAX);
    cp_wolf_reply_free(&r);
    /* exactly at the cap is fine */
    cp_wolf_reply_init(&r, 64);
    t = "HTTP/1.0 200 OK\r\nContent-Length: 25\r\n\r\n{\"success\":true,\"x\":\"ab\"}";
    WP_CHECK_EQ(strlen(t), 64);
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 1);
    cp_wolf_reply_free(&r);

    /* head without an end */
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    t = "HTTP/1.0 200 OK\r\nX: ";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 0);
    rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = cp_wolf_reply_feed(&r, chunk, 16384);
    WP_CHECK_EQ(rc, WP_ERR_LIMIT);
    cp_wolf_reply_free(&r);
    free(chunk);

    /* garbage */
    static const char *bad[] = {
        "FOO/1.0 200 OK\r\n\r\n",
        "<html>",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.2 200 OK\r\n\r\n",
        "HTTP/1.0 20 OK\r\n\r\n",
        "HTTP/1.0 2000 OK\r\n\r\n",
        "HTTP/1.0 099 OK\r\n\r\n",
        "HTTP/1.0 600 OK\r\n\r\n",
        "HTTP/1.0 200 O\x01K\r\n\r\n",
        "HTTP/1.0 200 OK\r\n folded: x\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n  continued\r\n\r\n",
        "HTTP/1.0 200 OK\r\nNo colon here\r\n\r\n",
        "HTTP/1.0 200 OK\r\n: empty-name\r\n\r\n",
        "HTTP/1.0 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 12a\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: \r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nX: a\rb\r\n\r\n",
        "HTTP/1.0 200 OK\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
        rc = feed_all(&r, bad[i], strlen(bad[i]), strlen(bad[i]), 1);
        if (rc != WP_ERR_MALFORMED)
            printf("  bad[%zu] gave %d\n", i, rc);
        WP_CHECK_EQ(rc, WP_ERR_MALFORMED);
        cp_wolf_reply_free(&r);
    }
    /* the same Content-Length twice, header names in any case, tabs around values: fine */
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    t = "HTTP/1.0 200 OK\r\ncontent-LENGTH:\t2 \r\nContent-Length: 2\r\n\r\n{}";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 1);
    cp_wolf_reply_free(&r);
}

/* ---- calls without a tunnel ---- */

static int cb_calls;
static int cb_err;
static int cb_status;
static char cb_reason[32];
static char cb_message[CP_WOLF_MESSAGE_MAX];
static int cb_had_body;
static cp_wolf_call *cb_self;

static void on_result(const cp_wolf_result *r, void *ud)
{
    (void)ud;
    cb_calls++;
    cb_err = r->err;
    cb_status = r->status;
    snprintf(cb_reason, sizeof(cb_reason), "%s", r->reason);
    snprintf(cb_message, sizeof(cb_message), "%s", r->message);
    cb_had_body = r->body != NULL;
    WP_CHECK(r->agent_reason != NULL);
    if (cb_self)
        cp_wolf_call_cancel(cb_self); /* inside the callback: harmless */
}

static void cb_reset(void)
{
    cb_calls = 0;
    cb_err = 1;
    cb_status = -1;
    cb_reason[0] = cb_message[0] = '\0';
    cb_had_body = -1;
    cb_self = NULL;
}

WP_TEST(wolf_call_argument_checks)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cp_server s;
    memset(&s, 0, sizeof(s));
    s.loop = &loop;
    cb_reset();
    cp_wolf_call *c = (cp_wolf_call *)&s; /* must be cleared on failure */
    WP_CHECK_EQ(
        cp_wolf_call_start(&s, "GPU 1", "GET", "/api/v1/apps", NULL, 1000, on_result, NULL, &c),
        WP_ERR_INVAL);
    WP_CHECK(c == NULL);
    WP_CHECK_EQ(
        cp_wolf_call_start(&s, "gpu-1", "get", "/api/v1/apps", NULL, 1000, on_result, NULL, NULL),
        WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_call_start(&s, "gpu-1", "GET", "/other", NULL, 1000, on_result, NULL, NULL),
                WP_ERR_INVAL);
    WP_CHECK_EQ(
        cp_wolf_call_start(&s, "gpu-1", "GET", "/api/v1/apps x", NULL, 1000, on_result, NULL, NULL),
        WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_call_start(&s, "gpu-1", "GET", "/api/v1/apps\r\nX: y", NULL, 1000,
                                   on_result, NULL, NULL),
                WP_ERR_INVAL);
    WP_CHECK_EQ(
        cp_wolf_call_start(&s, "gpu-1", "GET", "/api/v1/apps", NULL, 0, on_result, NULL, NULL),
        WP_ERR_INVAL);
    WP_CHECK_EQ(
        cp_wolf_call_start(&s, "gpu-1", "GET", "/api/v1/apps", NULL, 1000, NULL, NULL, NULL),
        WP_ERR_INVAL);
    WP_CHECK_EQ(
        cp_wolf_call_start(NULL, "gpu-1", "GET", "/api/v1/apps", NULL, 1000, on_result, NULL, NULL),
        WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_session_stop(&s, "gpu-1", "12a", 1000, on_result, NULL, &c), WP_ERR_INVAL);
    WP_CHECK(c == NULL);
    WP_CHECK_EQ(cp_wolf_session_stop(&s, "gpu-1", "-1", 1000, on_result, NULL, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_session_stop(&s, "gpu-1", NULL, 1000, on_result, NULL, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_lobby_stop(&s, "gpu-1", "a b", NULL, 1000, on_result, NULL, NULL),
                WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_lobby_stop(&s, "gpu-1", "abc", "123", 1000, on_result, NULL, NULL),
                WP_ERR_INVAL);
    cJSON *arr = cJSON_CreateArray();
    WP_CHECK_EQ(cp_wolf_lobby_create(&s, "gpu-1", arr, 1000, on_result, NULL, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_wolf_lobby_create(&s, "gpu-1", NULL, 1000, on_result, NULL, NULL), WP_ERR_INVAL);
    cJSON_Delete(arr);
    cJSON *req = cJSON_Parse("{\"name\":\"x\",\"pin\":[1,2,3]}");
    WP_CHECK_EQ(cp_wolf_lobby_create(&s, "gpu-1", req, 1000, on_result, NULL, NULL), WP_ERR_INVAL);
    cJSON_Delete(req);
    req = cJSON_Parse("{\"name\":\"x\",\"pin\":[1,2,3,10]}");
    WP_CHECK_EQ(cp_wolf_lobby_create(&s, "gpu-1", req, 1000, on_result, NULL, NULL), WP_ERR_INVAL);
    cJSON_Delete(req);
    /* body over CP_WOLF_REQUEST_MAX */
    char *big = malloc(CP_WOLF_REQUEST_MAX + 1);
    memset(big, 'x', CP_WOLF_REQUEST_MAX);
    big[CP_WOLF_REQUEST_MAX] = '\0';
    req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "name", big);
    WP_CHECK_EQ(cp_wolf_lobby_create(&s, "gpu-1", req, 1000, on_result, NULL, NULL), WP_ERR_LIMIT);
    cJSON_Delete(req);
    free(big);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(cb_calls, 0);
    WP_CHECK_LOOP_CLOSED(&loop);
}

WP_TEST(wolf_call_node_not_connected)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cp_server s;
    memset(&s, 0, sizeof(s));
    s.loop = &loop;

    /* reported through the callback, from the loop */
    cb_reset();
    cp_wolf_call *c = NULL;
    WP_CHECK_EQ(cp_wolf_lobbies_list(&s, "gpu-1", 5000, on_result, NULL, &c), 0);
    WP_CHECK(c != NULL);
    WP_CHECK_EQ(cb_calls, 0);
    cb_self = c; /* the callback cancels its own call: a no-op */
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(cb_calls, 1);
    WP_CHECK_EQ(cb_err, WP_ERR_CLOSED);
    WP_CHECK_EQ(cb_status, 0);
    WP_CHECK_STR(cb_reason, "node_unreachable");
    WP_CHECK(strstr(cb_message, "not connected") != NULL);
    WP_CHECK_EQ(cb_had_body, 0);

    /* the typed helpers take the same path */
    cb_reset();
    WP_CHECK_EQ(
        cp_wolf_session_stop(&s, "gpu-1", "18446744073709551615", 5000, on_result, NULL, NULL), 0);
    WP_CHECK_EQ(
        cp_wolf_lobby_stop(&s, "gpu-1", "3f2b9c1e-8a4d", "1234", 5000, on_result, NULL, NULL), 0);
    cJSON *req = cJSON_Parse("{\"name\":\"x\",\"pin\":[1,2,3,4]}");
    WP_CHECK_EQ(cp_wolf_lobby_create(&s, "gpu-1", req, 5000, on_result, NULL, NULL), 0);
    cJSON_Delete(req); /* the call keeps its own copy of the body */
    WP_CHECK_EQ(cp_wolf_sessions_list(&s, "gpu-1", 5000, on_result, NULL, NULL), 0);
    WP_CHECK_EQ(cb_calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(cb_calls, 4);
    WP_CHECK_STR(cb_reason, "node_unreachable");

    /* cancelled before the loop ran: no callback, nothing left open */
    cb_reset();
    WP_CHECK_EQ(cp_wolf_call_start(&s, "gpu-1", "GET", "/api/v1/openapi-schema", NULL, 5000,
                                   on_result, NULL, &c),
                0);
    cp_wolf_call_cancel(c);
    cp_wolf_call_cancel(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(cb_calls, 0);
    WP_CHECK_LOOP_CLOSED(&loop);
}

/*
 * Found by fuzz_wolf_reply: bytes after a complete reply, arriving in the same
 * piece, counted against the bound (WP_ERR_LIMIT instead of complete). Also the
 * blank line split across pieces, and a reply fed byte by byte.
 */
WP_TEST(wolf_reply_trailing_bytes_and_pieces)
{
    cp_wolf_reply r;
    size_t len;
    const char *t = "HTTP/1.0 200 OK\r\nContent-Length: 25\r\n\r\n{\"success\":true,\"x\":\"ab\"}"
                    "trailing bytes well past the bound of 64";
    cp_wolf_reply_init(&r, 64);
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), 1);
    const char *b = cp_wolf_reply_body(&r, &len);
    WP_CHECK_EQ(len, 25);
    WP_CHECK(memcmp(b, "{\"success\":true,\"x\":\"ab\"}", 25) == 0);
    WP_CHECK(wp_buf_len(&r.in) <= 64);
    cp_wolf_reply_free(&r);

    /* no Content-Length: the same bytes run past the bound */
    cp_wolf_reply_init(&r, 64);
    t = "HTTP/1.0 200 OK\r\n\r\n{\"success\":true} and more and more and more and more bytes";
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, strlen(t)), WP_ERR_LIMIT);
    cp_wolf_reply_free(&r);

    /* the blank line split between pieces, then byte by byte */
    t = "HTTP/1.0 404 OK\r\nContent-Length: 2\r\n\r\n{}";
    size_t split = strlen("HTTP/1.0 404 OK\r\nContent-Length: 2\r\n\r");
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t, split), 0);
    WP_CHECK_EQ(cp_wolf_reply_feed(&r, t + split, strlen(t) - split), 1);
    WP_CHECK_EQ(r.status, 404);
    cp_wolf_reply_free(&r);
    cp_wolf_reply_init(&r, CP_WOLF_REPLY_MAX);
    int rc = 0;
    for (size_t i = 0; i < strlen(t) && rc == 0; i++)
        rc = cp_wolf_reply_feed(&r, t + i, 1);
    WP_CHECK_EQ(rc, 1);
    b = cp_wolf_reply_body(&r, &len);
    WP_CHECK_EQ(len, 2);
    WP_CHECK(memcmp(b, "{}", 2) == 0);
    cp_wolf_reply_free(&r);
}

int main(void)
{
    wp_log_set_level(WP_LOG_ERROR);
    WP_RUN(wolf_id_checks);
    WP_RUN(wolf_reply_quirks);
    WP_RUN(wolf_reply_bounds_and_garbage);
    WP_RUN(wolf_reply_trailing_bytes_and_pieces);
    WP_RUN(wolf_call_argument_checks);
    WP_RUN(wolf_call_node_not_connected);
    return wp_test_done();
}
