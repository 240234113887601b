/*
 * buf.c — bounded byte buffers and read cursors (see buf.h).
 *
 * Storage grows geometrically but never beyond the buffer's max; consumed
 * space at the front is reclaimed with memmove when it is large. Storage is
 * zeroed before it is released because buffers may carry secrets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"

#define WP_BUF_MIN_ALLOC 64

/* explicit_bzero: a memset the compiler may not drop (a volatile byte loop cost ~10% of the
 * tunnel's CPU: every freed or regrown buffer is zeroed). */
static void wp_buf_zero(void *p, size_t n)
{
    explicit_bzero(p, n);
}

void wp_buf_init(wp_buf *b, size_t max)
{
    b->data = NULL;
    b->off = 0;
    b->end = 0;
    b->alloc = 0;
    b->max = max;
}

void wp_buf_free(wp_buf *b)
{
    if (b->data) {
        wp_buf_zero(b->data, b->alloc);
        free(b->data);
    }
    b->data = NULL;
    b->off = 0;
    b->end = 0;
    b->alloc = 0;
}

void wp_buf_reset(wp_buf *b)
{
    b->off = 0;
    b->end = 0;
}

size_t wp_buf_len(const wp_buf *b)
{
    return b->end - b->off;
}

const uint8_t *wp_buf_ptr(const wp_buf *b)
{
    return b->data ? b->data + b->off : NULL;
}

uint8_t *wp_buf_mutable_ptr(wp_buf *b)
{
    return b->data ? b->data + b->off : NULL;
}

size_t wp_buf_room(const wp_buf *b)
{
    size_t len = wp_buf_len(b);
    return len >= b->max ? 0 : b->max - len;
}

/* Moves unread bytes to the front of the allocation. */
static void wp_buf_compact(wp_buf *b)
{
    size_t len = b->end - b->off;
    if (b->off == 0)
        return;
    if (len)
        memmove(b->data, b->data + b->off, len);
    b->off = 0;
    b->end = len;
}

/*
 * Ensures n more bytes can be written at data + end. Returns 0, WP_ERR_LIMIT
 * or WP_ERR_NOMEM; on failure the buffer content is unchanged.
 */
static int wp_buf_make_room(wp_buf *b, size_t n)
{
    size_t len = b->end - b->off;
    if (n > b->max || len > b->max - n)
        return WP_ERR_LIMIT;
    size_t need = len + n; /* <= max, no overflow */
    if (b->alloc - b->end >= n) {
        /* fits at the tail; still compact if the dead prefix dominates */
        if (b->off > 0 && b->off >= len && b->off >= 4096)
            wp_buf_compact(b);
        return 0;
    }
    if (b->alloc >= need) {
        /* enough total space: reclaim the consumed prefix */
        wp_buf_compact(b);
        return 0;
    }
    size_t nalloc = b->alloc < WP_BUF_MIN_ALLOC ? WP_BUF_MIN_ALLOC : b->alloc;
    while (nalloc < need) {
        if (nalloc > SIZE_MAX / 2) {
            nalloc = need;
            break;
        }
        nalloc *= 2;
    }
    if (nalloc > b->max)
        nalloc = b->max;
    if (nalloc < need)
        nalloc = need;
    uint8_t *nd = malloc(nalloc);
    if (!nd)
        return WP_ERR_NOMEM;
    if (len)
        memcpy(nd, b->data + b->off, len);
    if (b->data) {
        wp_buf_zero(b->data, b->alloc);
        free(b->data);
    }
    b->data = nd;
    b->alloc = nalloc;
    b->off = 0;
    b->end = len;
    return 0;
}

int wp_buf_reserve(wp_buf *b, size_t n, uint8_t **out)
{
    int rc = wp_buf_make_room(b, n);
    if (rc < 0)
        return rc;
    *out = b->data ? b->data + b->end : NULL;
    return 0;
}

void wp_buf_commit(wp_buf *b, size_t n)
{
    /* Never commit past the allocation or the max, whatever the caller asks. */
    if (n > b->alloc - b->end)
        n = b->alloc - b->end;
    if (n > wp_buf_room(b))
        n = wp_buf_room(b);
    b->end += n;
}

int wp_buf_put(wp_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = wp_buf_make_room(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return 0;
}

int wp_buf_put_u8(wp_buf *b, uint8_t v)
{
    return wp_buf_put(b, &v, 1);
}

int wp_buf_put_u16(wp_buf *b, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return wp_buf_put(b, t, sizeof t);
}

int wp_buf_put_u32(wp_buf *b, uint32_t v)
{
    uint8_t t[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return wp_buf_put(b, t, sizeof t);
}

int wp_buf_put_u64(wp_buf *b, uint64_t v)
{
    uint8_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (uint8_t)(v >> (56 - 8 * i));
    return wp_buf_put(b, t, sizeof t);
}

int wp_buf_put_str(wp_buf *b, const char *s)
{
    return wp_buf_put(b, s, strlen(s));
}

int wp_buf_vputf(wp_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return WP_ERR_INVAL;
    if (n == 0)
        return 0;
    /* vsnprintf needs room for the NUL; reserve n+1 internally but commit n. */
    size_t need = (size_t)n;
    if (need > wp_buf_room(b))
        return WP_ERR_LIMIT;
    /* make room for n bytes within max, plus 1 byte of scratch beyond if needed */
    int rc = wp_buf_make_room(b, need);
    if (rc < 0)
        return rc;
    if (b->alloc - b->end < need + 1) {
        /* the allocation is exactly at the limit: format via a temporary */
        char *tmp = malloc(need + 1);
        if (!tmp)
            return WP_ERR_NOMEM;
        vsnprintf(tmp, need + 1, fmt, ap);
        memcpy(b->data + b->end, tmp, need);
        wp_buf_zero(tmp, need + 1);
        free(tmp);
    } else {
        vsnprintf((char *)b->data + b->end, need + 1, fmt, ap);
    }
    b->end += need;
    return 0;
}

int wp_buf_putf(wp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = wp_buf_vputf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int wp_buf_consume(wp_buf *b, size_t n)
{
    if (n > wp_buf_len(b))
        return WP_ERR_NEED_MORE;
    b->off += n;
    if (b->off == b->end) {
        b->off = 0;
        b->end = 0;
    }
    return 0;
}

int wp_buf_peek(const wp_buf *b, size_t at, void *out, size_t n)
{
    size_t len = wp_buf_len(b);
    if (at > len || n > len - at)
        return WP_ERR_NEED_MORE;
    if (n)
        memcpy(out, b->data + b->off + at, n);
    return 0;
}

int wp_buf_get(wp_buf *b, void *out, size_t n)
{
    int rc = wp_buf_peek(b, 0, out, n);
    if (rc < 0)
        return rc;
    return wp_buf_consume(b, n);
}

static uint16_t wp_be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t wp_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t wp_be64(const uint8_t *p)
{
    return (uint64_t)wp_be32(p) << 32 | wp_be32(p + 4);
}

int wp_buf_get_u8(wp_buf *b, uint8_t *v)
{
    return wp_buf_get(b, v, 1);
}

int wp_buf_get_u16(wp_buf *b, uint16_t *v)
{
    uint8_t t[2];
    int rc = wp_buf_get(b, t, sizeof t);
    if (rc == 0)
        *v = wp_be16(t);
    return rc;
}

int wp_buf_get_u32(wp_buf *b, uint32_t *v)
{
    uint8_t t[4];
    int rc = wp_buf_get(b, t, sizeof t);
    if (rc == 0)
        *v = wp_be32(t);
    return rc;
}

int wp_buf_get_u64(wp_buf *b, uint64_t *v)
{
    uint8_t t[8];
    int rc = wp_buf_get(b, t, sizeof t);
    if (rc == 0)
        *v = wp_be64(t);
    return rc;
}

int wp_buf_peek_u16(const wp_buf *b, size_t at, uint16_t *v)
{
    uint8_t t[2];
    int rc = wp_buf_peek(b, at, t, sizeof t);
    if (rc == 0)
        *v = wp_be16(t);
    return rc;
}

int wp_buf_peek_u32(const wp_buf *b, size_t at, uint32_t *v)
{
    uint8_t t[4];
    int rc = wp_buf_peek(b, at, t, sizeof t);
    if (rc == 0)
        *v = wp_be32(t);
    return rc;
}

void wp_rd_init(wp_rd *r, const void *p, size_t len)
{
    r->p = p;
    r->len = p ? len : 0;
}

int wp_rd_skip(wp_rd *r, size_t n)
{
    if (n > r->len)
        return WP_ERR_NEED_MORE;
    if (n == 0)
        return 0;
    r->p += n;
    r->len -= n;
    return 0;
}

int wp_rd_borrow(wp_rd *r, size_t n, const uint8_t **out)
{
    if (n > r->len)
        return WP_ERR_NEED_MORE;
    *out = r->p;
    if (n == 0)
        return 0;
    r->p += n;
    r->len -= n;
    return 0;
}

int wp_rd_get(wp_rd *r, void *out, size_t n)
{
    if (n > r->len)
        return WP_ERR_NEED_MORE;
    if (n == 0)
        return 0;
    memcpy(out, r->p, n);
    r->p += n;
    r->len -= n;
    return 0;
}

int wp_rd_get_u8(wp_rd *r, uint8_t *v)
{
    return wp_rd_get(r, v, 1);
}

int wp_rd_get_u16(wp_rd *r, uint16_t *v)
{
    uint8_t t[2];
    int rc = wp_rd_get(r, t, sizeof t);
    if (rc == 0)
        *v = wp_be16(t);
    return rc;
}

int wp_rd_get_u32(wp_rd *r, uint32_t *v)
{
    uint8_t t[4];
    int rc = wp_rd_get(r, t, sizeof t);
    if (rc == 0)
        *v = wp_be32(t);
    return rc;
}

int wp_rd_get_u64(wp_rd *r, uint64_t *v)
{
    uint8_t t[8];
    int rc = wp_rd_get(r, t, sizeof t);
    if (rc == 0)
        *v = wp_be64(t);
    return rc;
}
