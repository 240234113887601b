/*
 * fuzz_proxy_head.c — fuzz target for the proxy's upstream response-head
 * parsing: llhttp (HTTP_RESPONSE, as controlplane/proxy.c sets it up) feeding
 * the header arena of controlplane/proxy_head.h, driven the way proxy.c
 * drives it (interim 1xx heads dropped, the first final head or a 101 ends
 * the head phase, a second final response is an error, parsing stops at the
 * end of the final response).
 *
 * Input layout: byte 0 seeds the piece sizes, the rest is what the node's
 * service sends. The stream is parsed in one piece and in pseudo-random
 * pieces.
 *
 * Invariants checked:
 *   - the arena never holds more than CP_PROXY_RHDR_MAX bytes nor more than
 *     CP_PROXY_RHDR_COUNT headers; every failure names a reason;
 *   - at the final head: iterating the arena yields exactly `count` headers,
 *     names non-empty token characters, values without NUL/CR/LF, all inside
 *     the arena; cp_proxy_head_get finds the first of each name;
 *   - both chunkings agree on the outcome (head reached or not, status,
 *     the exact header list) and, unless llhttp refused the bytes, on
 *     whether the arena refused them.
 */
#include <llhttp.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "fuzz.h"
#include "proxy_head.h"

typedef struct pfz {
    cp_proxy_head h;
    int status;    /* final (or 101) status; 0 before */
    int head_done; /* the head phase ended */
    int complete;  /* the final response ended */
    int failed;    /* a callback failed */
    int llerr;     /* llhttp itself refused the bytes */
    char snap[CP_PROXY_RHDR_MAX];
    size_t snap_len, snap_count;
} pfz;

static uint32_t rng_state;

static uint32_t rng_next(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int rc_of(pfz *z, int rc)
{
    WP_FUZZ_CHECK(wp_buf_len(&z->h.hdr) <= CP_PROXY_RHDR_MAX);
    WP_FUZZ_CHECK(z->h.count <= CP_PROXY_RHDR_COUNT);
    if (rc == 0)
        return 0;
    WP_FUZZ_CHECK(rc == WP_ERR_LIMIT || rc == WP_ERR_MALFORMED);
    WP_FUZZ_CHECK(z->h.err != NULL);
    z->failed = 1;
    return HPE_USER;
}

static int on_begin(llhttp_t *ps)
{
    pfz *z = ps->data;
    cp_proxy_head_reset(&z->h);
    WP_FUZZ_CHECK(wp_buf_len(&z->h.hdr) == 0 && z->h.count == 0);
    return 0;
}

static int on_field(llhttp_t *ps, const char *at, size_t n)
{
    pfz *z = ps->data;
    return rc_of(z, cp_proxy_head_field(&z->h, at, n));
}

static int on_field_done(llhttp_t *ps)
{
    pfz *z = ps->data;
    return rc_of(z, cp_proxy_head_field_done(&z->h));
}

static int on_value(llhttp_t *ps, const char *at, size_t n)
{
    pfz *z = ps->data;
    return rc_of(z, cp_proxy_head_value(&z->h, at, n));
}

static int on_value_done(llhttp_t *ps)
{
    pfz *z = ps->data;
    return rc_of(z, cp_proxy_head_value_done(&z->h));
}

/* The head as proxy.c reads it: checks the arena and snapshots it. */
static void check_head(pfz *z)
{
    size_t off = 0, k = 0;
    const char *v, *n;
    const char *base = (const char *)wp_buf_ptr(&z->h.hdr);
    size_t len = wp_buf_len(&z->h.hdr);
    while ((n = cp_proxy_head_next(&z->h, &off, &v)) != NULL) {
        k++;
        WP_FUZZ_CHECK(base != NULL && n >= base && v > n && off <= len);
        WP_FUZZ_CHECK(v + strlen(v) < base + len);
        WP_FUZZ_CHECK(*n != '\0');
        for (const char *q = n; *q; q++)
            WP_FUZZ_CHECK(is_tchar((unsigned char)*q));
        WP_FUZZ_CHECK(strpbrk(v, "\r\n") == NULL);
        const char *g = cp_proxy_head_get(&z->h, n);
        WP_FUZZ_CHECK(g != NULL && g <= v);
    }
    WP_FUZZ_CHECK(k == z->h.count);
    WP_FUZZ_CHECK(off == len); /* every byte belongs to a complete header */
    memcpy(z->snap, base ? base : "", len);
    z->snap_len = len;
    z->snap_count = k;
}

static int on_headers_done(llhttp_t *ps)
{
    pfz *z = ps->data;
    int st = ps->status_code;
    if (st == 101) {
        z->status = st;
        z->head_done = 1;
        check_head(z);
        return HPE_PAUSED; /* the proxy hands the connection over here */
    }
    if (st < 200)
        return 0;
    if (z->head_done) {
        z->failed = 1;
        return HPE_USER; /* second response from the service */
    }
    z->status = st;
    z->head_done = 1;
    check_head(z);
    return 0;
}

static int on_complete(llhttp_t *ps)
{
    pfz *z = ps->data;
    if (!z->head_done)
        return 0;
    z->complete = 1;
    return HPE_PAUSED;
}

static void run(pfz *z, const uint8_t *d, size_t n, int pieces)
{
    llhttp_settings_t set;
    llhttp_t ps;
    llhttp_settings_init(&set);
    set.on_message_begin = on_begin;
    set.on_header_field = on_field;
    set.on_header_field_complete = on_field_done;
    set.on_header_value = on_value;
    set.on_header_value_complete = on_value_done;
    set.on_headers_complete = on_headers_done;
    set.on_message_complete = on_complete;
    llhttp_init(&ps, HTTP_RESPONSE, &set);
    ps.data = z;
    cp_proxy_head_init(&z->h);
    size_t off = 0;
    int stop = 0;
    while (off < n && !stop) {
        size_t k = n - off;
        if (pieces) {
            uint32_t x = rng_next();
            size_t want = (x & 7) == 0 ? (x >> 3) % 2048 + 1 : (x >> 3) % 13 + 1;
            if (want < k)
                k = want;
        }
        const char *p = (const char *)d + off;
        llhttp_errno_t e = llhttp_execute(&ps, p, k);
        off += k;
        if (e == HPE_OK)
            continue;
        if (e == HPE_PAUSED) {
            if (z->status == 101 || z->complete)
                stop = 1;
            else
                WP_FUZZ_CHECK(0); /* nothing else pauses */
            continue;
        }
        stop = 1; /* error (ours or llhttp's) or an upgrade: the proxy gives up */
        if (e == HPE_USER)
            WP_FUZZ_CHECK(z->failed);
        else
            z->failed = z->llerr = 1;
    }
    if (!stop && !z->failed && !z->complete) {
        llhttp_errno_t e = llhttp_finish(&ps);
        if (e != HPE_OK && e != HPE_PAUSED)
            z->failed = z->llerr = 1;
    }
    cp_proxy_head_free(&z->h);
}

static pfz za, zb;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t seed = size > 0 ? data[0] : 0;
    const uint8_t *d = size > 1 ? data + 1 : data;
    size_t n = size > 1 ? size - 1 : 0;
    memset(&za, 0, sizeof(za));
    memset(&zb, 0, sizeof(zb));
    run(&za, d, n, 0);
    rng_state = 0x85ebca6bu ^ seed;
    run(&zb, d, n, 1);
    WP_FUZZ_CHECK(za.head_done == zb.head_done);
    if (za.head_done) {
        WP_FUZZ_CHECK(za.status == zb.status);
        WP_FUZZ_CHECK(za.snap_count == zb.snap_count && za.snap_len == zb.snap_len);
        WP_FUZZ_CHECK(memcmp(za.snap, zb.snap, za.snap_len) == 0);
    }
    /*
     * The arena fails the same way whatever the pieces, unless llhttp refused the
     * bytes: it hands a span over at the end of each piece, so with small pieces
     * the arena may see (and refuse) bytes that llhttp rejects first in one piece.
     */
    if (!za.llerr && !zb.llerr)
        WP_FUZZ_CHECK((za.h.err != NULL) == (zb.h.err != NULL));
    return 0;
}
