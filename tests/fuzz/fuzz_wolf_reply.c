/*
 * fuzz_wolf_reply.c — fuzz target for the control plane's Wolf reply parser
 * and its interpretation (controlplane/wolf.h: cp_wolf_reply_*), the code
 * that reads what a node's Wolf (through a possibly compromised agent) sends.
 *
 * Input layout: byte 0 seeds the piece sizes, byte 1 picks the reply bound
 * (bit 7 set: a small bound, 64..1072 bytes, so the limit paths run; else
 * CP_WOLF_REPLY_MAX) and the message capacity (bits 0..6: 1..128 bytes);
 * the rest is the byte stream from the node. The stream is parsed twice,
 * in one piece and in pseudo-random pieces (empty feeds included), each
 * followed by cp_wolf_reply_finish when the feeds did not complete it, as
 * the client does at FIN; a complete reply is then interpreted with
 * cp_wolf_reply_result.
 *
 * Invariants checked:
 *   - feed returns 0, 1 or WP_ERR_MALFORMED/LIMIT/NOMEM; finish 1 or an error;
 *     once complete or failed, further feeds/finish answer the same and change
 *     nothing;
 *   - memory stays within the bound (held bytes and allocation <= max);
 *   - a complete reply: status 100..599, the stream starts with
 *     "HTTP/1.x NNN" with that status, the head ends at the stream's first
 *     CRLFCRLF, the body is the stream's bytes right after it, exactly
 *     Content-Length of them when there is one, and head + body <= max;
 *   - both chunkings agree on complete vs failed, and on status,
 *     Content-Length, head length and body bytes when complete;
 *   - the result: err 0 only for a 2xx status with a JSON body whose
 *     "success" is not false (reason "ok"); non-2xx → "wolf_error" with
 *     WP_ERR_NOT_FOUND exactly for 404, else WP_ERR_IO; the message is
 *     NUL-terminated within its capacity, valid UTF-8, without control bytes.
 */
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "fuzz.h"
#include "json.h"
#include "wolf.h"

typedef struct outcome {
    int rc; /* 1 complete, else the error */
    int status;
    long long content_len;
    size_t head_len;
    const char *body;
    size_t body_len;
} outcome;

static uint32_t rng_state;

static uint32_t rng_next(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

static void check_feed_rc(int rc)
{
    WP_FUZZ_CHECK(rc == 0 || rc == 1 || rc == WP_ERR_MALFORMED || rc == WP_ERR_LIMIT ||
                  rc == WP_ERR_NOMEM);
}

static void check_bounded(const cp_wolf_reply *r, size_t max)
{
    WP_FUZZ_CHECK(wp_buf_len(&r->in) <= max);
    WP_FUZZ_CHECK(r->in.alloc <= max);
}

/* Feeds after the end and finish again: same answer, nothing changed. */
static void check_sticky(cp_wolf_reply *r, int rc, const uint8_t *d, size_t n)
{
    size_t len = wp_buf_len(&r->in), hl = r->head_len;
    int st = r->status;
    int again = cp_wolf_reply_feed(r, d, n);
    WP_FUZZ_CHECK(again == rc);
    WP_FUZZ_CHECK(cp_wolf_reply_finish(r) == rc);
    WP_FUZZ_CHECK(wp_buf_len(&r->in) == len && r->head_len == hl && r->status == st);
}

/* Runs the stream through r in pieces (pieces == 0: one piece), then finish. */
static int run(cp_wolf_reply *r, size_t max, const uint8_t *d, size_t n, int pieces)
{
    int rc = 0;
    size_t off = 0;
    while (off < n) {
        size_t k = n - off;
        if (pieces) {
            uint32_t x = rng_next();
            /* mostly small pieces, sometimes empty, sometimes big */
            size_t want = (x & 7) == 0 ? 0 : (x & 7) == 1 ? (x >> 3) % 4096 : (x >> 3) % 17 + 1;
            if (want < k)
                k = want;
        }
        rc = cp_wolf_reply_feed(r, d + off, k);
        check_feed_rc(rc);
        check_bounded(r, max);
        off += k;
        if (rc != 0)
            break;
    }
    if (rc == 0) {
        rc = cp_wolf_reply_finish(r);
        WP_FUZZ_CHECK(rc == 1 || rc == WP_ERR_MALFORMED || rc == WP_ERR_LIMIT ||
                      rc == WP_ERR_NOMEM);
    }
    check_sticky(r, rc, d, n);
    return rc;
}

static const uint8_t *find_crlfcrlf(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(d + i, "\r\n\r\n", 4) == 0)
            return d + i;
    return NULL;
}

static void check_complete(const cp_wolf_reply *r, size_t max, const uint8_t *d, size_t n,
                           outcome *o)
{
    o->status = r->status;
    o->content_len = r->content_len;
    o->head_len = r->head_len;
    o->body = cp_wolf_reply_body(r, &o->body_len);
    WP_FUZZ_CHECK(o->body != NULL);
    WP_FUZZ_CHECK(r->status >= 100 && r->status <= 599);
    WP_FUZZ_CHECK(n >= 12 && memcmp(d, "HTTP/1.", 7) == 0 && (d[7] == '0' || d[7] == '1') &&
                  d[8] == ' ');
    WP_FUZZ_CHECK((d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0') == r->status);
    const uint8_t *e = find_crlfcrlf(d, n);
    WP_FUZZ_CHECK(e != NULL && (size_t)(e - d) + 4 == r->head_len);
    WP_FUZZ_CHECK(r->head_len <= CP_WOLF_HEAD_MAX + 4);
    WP_FUZZ_CHECK(r->head_len + o->body_len <= max);
    WP_FUZZ_CHECK(r->head_len + o->body_len <= n);
    if (r->content_len >= 0)
        WP_FUZZ_CHECK(o->body_len == (unsigned long long)r->content_len);
    else
        WP_FUZZ_CHECK(r->head_len + o->body_len == n); /* read to FIN */
    WP_FUZZ_CHECK(memcmp(o->body, d + r->head_len, o->body_len) == 0);
}

static void check_result(const cp_wolf_reply *r, size_t cap)
{
    char msg[129];
    memset(msg, 'x', sizeof(msg));
    cJSON *j = (cJSON *)0x1; /* must be overwritten */
    const char *reason = NULL;
    int err = cp_wolf_reply_result(r, &j, &reason, msg, cap);
    WP_FUZZ_CHECK(j != (cJSON *)0x1);
    WP_FUZZ_CHECK(reason != NULL);
    size_t ml = strnlen(msg, cap);
    WP_FUZZ_CHECK(ml < cap); /* NUL within cap */
    WP_FUZZ_CHECK(wp_utf8_valid(msg, ml));
    for (size_t i = 0; i < ml; i++)
        WP_FUZZ_CHECK((unsigned char)msg[i] >= 0x20 && msg[i] != 0x7f);
    int ok2xx = r->status >= 200 && r->status <= 299;
    size_t blen;
    (void)cp_wolf_reply_body(r, &blen);
    if (blen == 0)
        WP_FUZZ_CHECK(j == NULL);
    if (!ok2xx) {
        WP_FUZZ_CHECK(strcmp(reason, "wolf_error") == 0);
        WP_FUZZ_CHECK(err == (r->status == 404 ? WP_ERR_NOT_FOUND : WP_ERR_IO));
    } else if (err == 0) {
        WP_FUZZ_CHECK(strcmp(reason, "ok") == 0);
        WP_FUZZ_CHECK(j != NULL);
        const cJSON *s = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "success") : NULL;
        WP_FUZZ_CHECK(s == NULL || cJSON_IsTrue(s));
    } else {
        WP_FUZZ_CHECK(err == WP_ERR_IO || err == WP_ERR_PROTO);
        WP_FUZZ_CHECK(strcmp(reason, err == WP_ERR_IO ? "wolf_error" : "bad_response") == 0);
        if (err == WP_ERR_IO) { /* 2xx with {"success":false} */
            const cJSON *s =
                cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "success") : NULL;
            WP_FUZZ_CHECK(cJSON_IsFalse(s));
        }
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t seed = size > 0 ? data[0] : 0, sel = size > 1 ? data[1] : 0;
    const uint8_t *d = size > 2 ? data + 2 : data;
    size_t n = size > 2 ? size - 2 : 0;
    size_t max = (sel & 0x80) ? 64 + (size_t)(sel & 0x3f) * 16 : CP_WOLF_REPLY_MAX;
    size_t cap = (size_t)(sel & 0x7f) + 1;

    cp_wolf_reply a, b;
    cp_wolf_reply_init(&a, max);
    cp_wolf_reply_init(&b, max);
    int ra = run(&a, max, d, n, 0);
    rng_state = 0x9e3779b9u ^ seed;
    int rb = run(&b, max, d, n, 1);
    WP_FUZZ_CHECK((ra == 1) == (rb == 1));
    if (ra == 1) {
        outcome oa, ob;
        check_complete(&a, max, d, n, &oa);
        check_complete(&b, max, d, n, &ob);
        WP_FUZZ_CHECK(oa.status == ob.status && oa.content_len == ob.content_len &&
                      oa.head_len == ob.head_len && oa.body_len == ob.body_len);
        WP_FUZZ_CHECK(memcmp(oa.body, ob.body, oa.body_len) == 0);
        check_result(&a, cap);
        check_result(&a, 128);
    } else {
        WP_FUZZ_CHECK(ra == WP_ERR_MALFORMED || ra == WP_ERR_LIMIT || ra == WP_ERR_NOMEM);
    }
    cp_wolf_reply_free(&a);
    cp_wolf_reply_free(&b);
    return 0;
}
