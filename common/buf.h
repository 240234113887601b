/*
 * buf.h — bounded byte buffers and read cursors (in the spirit of OpenSSH's sshbuf).
 *
 * A wp_buf owns a growable byte array that never holds more than `max` bytes.
 * Data is appended at the end and consumed from the front. Every get checks
 * the length first: a read past the end returns WP_ERR_NEED_MORE (the data may
 * still arrive), never reads out of bounds. WP_ERR_MALFORMED is reserved for
 * decoders built on top (a value that can never be valid). Appending beyond
 * `max` returns WP_ERR_LIMIT and leaves the buffer unchanged.
 *
 * A wp_rd is a non-owning read cursor over a fixed span of memory with the
 * same checked getters; decoders use it to parse without copying.
 *
 * Multi-byte integers are big-endian (network order).
 */
#ifndef WP_BUF_H
#define WP_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wp_buf {
    uint8_t *data; /* allocation (NULL until first append) */
    size_t off;    /* read offset: first unread byte */
    size_t end;    /* one past the last valid byte */
    size_t alloc;  /* bytes allocated at data */
    size_t max;    /* most bytes the buffer may hold (end - off) */
} wp_buf;

/* Initializes an empty buffer that will hold at most `max` bytes. Never fails. */
void wp_buf_init(wp_buf *b, size_t max);
/* Frees storage (zeroing it first) and leaves the buffer empty but usable. */
void wp_buf_free(wp_buf *b);
/* Drops all content, keeps storage. */
void wp_buf_reset(wp_buf *b);

/* Bytes currently held. */
size_t wp_buf_len(const wp_buf *b);
/* Pointer to the first unread byte (valid until the next mutating call). May be NULL if empty. */
const uint8_t *wp_buf_ptr(const wp_buf *b);
uint8_t *wp_buf_mutable_ptr(wp_buf *b);
/* Bytes that may still be appended before hitting max. */
size_t wp_buf_room(const wp_buf *b);

/*
 * Appending. All return 0, WP_ERR_LIMIT (would exceed max, nothing appended) or
 * WP_ERR_NOMEM (nothing appended).
 */
int wp_buf_put(wp_buf *b, const void *p, size_t n);
int wp_buf_put_u8(wp_buf *b, uint8_t v);
int wp_buf_put_u16(wp_buf *b, uint16_t v);
int wp_buf_put_u32(wp_buf *b, uint32_t v);
int wp_buf_put_u64(wp_buf *b, uint64_t v);
int wp_buf_put_str(wp_buf *b, const char *s); /* without the NUL */
/* printf-style append; WP_ERR_LIMIT if the formatted text does not fit (nothing appended). */
int wp_buf_putf(wp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int wp_buf_vputf(wp_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/*
 * Reserve n writable bytes at the end (for read(2)-style fills): on success
 * *out points at them; call wp_buf_commit(b, k) with k <= n bytes actually
 * written. Returns 0, WP_ERR_LIMIT or WP_ERR_NOMEM.
 */
int wp_buf_reserve(wp_buf *b, size_t n, uint8_t **out);
void wp_buf_commit(wp_buf *b, size_t n);

/*
 * Consuming. All return 0 or WP_ERR_NEED_MORE (fewer than the requested bytes
 * held; nothing consumed).
 */
int wp_buf_consume(wp_buf *b, size_t n);
int wp_buf_get(wp_buf *b, void *out, size_t n);
int wp_buf_get_u8(wp_buf *b, uint8_t *v);
int wp_buf_get_u16(wp_buf *b, uint16_t *v);
int wp_buf_get_u32(wp_buf *b, uint32_t *v);
int wp_buf_get_u64(wp_buf *b, uint64_t *v);
/* Peek without consuming at offset `at` from the read position. 0 or WP_ERR_NEED_MORE. */
int wp_buf_peek(const wp_buf *b, size_t at, void *out, size_t n);
int wp_buf_peek_u16(const wp_buf *b, size_t at, uint16_t *v);
int wp_buf_peek_u32(const wp_buf *b, size_t at, uint32_t *v);

/* Read cursor over borrowed memory. */
typedef struct wp_rd {
    const uint8_t *p;
    size_t len; /* bytes remaining */
} wp_rd;

void wp_rd_init(wp_rd *r, const void *p, size_t len);
/* All return 0 or WP_ERR_NEED_MORE (cursor unchanged). */
int wp_rd_skip(wp_rd *r, size_t n);
int wp_rd_get(wp_rd *r, void *out, size_t n);
int wp_rd_get_u8(wp_rd *r, uint8_t *v);
int wp_rd_get_u16(wp_rd *r, uint16_t *v);
int wp_rd_get_u32(wp_rd *r, uint32_t *v);
int wp_rd_get_u64(wp_rd *r, uint64_t *v);
/* Borrow n bytes: *out points into the underlying memory. */
int wp_rd_borrow(wp_rd *r, size_t n, const uint8_t **out);

#endif
