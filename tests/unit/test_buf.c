/*
 * test_buf.c — unit tests for common/buf.c: bounded buffers and read cursors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "wp_test.h"

WP_TEST(buf_roundtrip_all_widths)
{
    wp_buf b;
    wp_buf_init(&b, 1024);
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    WP_CHECK(wp_buf_ptr(&b) == NULL);
    WP_CHECK_EQ(wp_buf_put_u8(&b, 0xab), 0);
    WP_CHECK_EQ(wp_buf_put_u16(&b, 0xbeef), 0);
    WP_CHECK_EQ(wp_buf_put_u32(&b, 0xdeadbeefu), 0);
    WP_CHECK_EQ(wp_buf_put_u64(&b, 0x0102030405060708ull), 0);
    WP_CHECK_EQ(wp_buf_put_u64(&b, UINT64_MAX), 0);
    WP_CHECK_EQ(wp_buf_put_str(&b, "hello"), 0);
    WP_CHECK_EQ(wp_buf_put(&b, "xyz", 3), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 1 + 2 + 4 + 8 + 8 + 5 + 3);

    uint8_t u8 = 0;
    uint16_t u16 = 0;
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    char s[9] = {0};
    WP_CHECK_EQ(wp_buf_get_u8(&b, &u8), 0);
    WP_CHECK_EQ(u8, 0xab);
    WP_CHECK_EQ(wp_buf_get_u16(&b, &u16), 0);
    WP_CHECK_EQ(u16, 0xbeef);
    WP_CHECK_EQ(wp_buf_get_u32(&b, &u32), 0);
    WP_CHECK(u32 == 0xdeadbeefu);
    WP_CHECK_EQ(wp_buf_get_u64(&b, &u64), 0);
    WP_CHECK(u64 == 0x0102030405060708ull);
    WP_CHECK_EQ(wp_buf_get_u64(&b, &u64), 0);
    WP_CHECK(u64 == UINT64_MAX);
    WP_CHECK_EQ(wp_buf_get(&b, s, 8), 0);
    WP_CHECK_STR(s, "helloxyz");
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    WP_CHECK_EQ(wp_buf_get_u8(&b, &u8), WP_ERR_NEED_MORE);
    wp_buf_free(&b);
    WP_CHECK(b.data == NULL);
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    /* usable after free */
    WP_CHECK_EQ(wp_buf_put_u8(&b, 1), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 1);
    wp_buf_free(&b);
}

WP_TEST(buf_big_endian_layout)
{
    wp_buf b;
    wp_buf_init(&b, 64);
    WP_CHECK_EQ(wp_buf_put_u16(&b, 0x1234), 0);
    WP_CHECK_EQ(wp_buf_put_u32(&b, 0x56789abcu), 0);
    WP_CHECK_EQ(wp_buf_put_u64(&b, 0x0011223344556677ull), 0);
    static const uint8_t want[] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x00,
                                   0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
    WP_CHECK_EQ(wp_buf_len(&b), sizeof want);
    WP_CHECK(memcmp(wp_buf_ptr(&b), want, sizeof want) == 0);

    uint16_t p16 = 0;
    uint32_t p32 = 0;
    WP_CHECK_EQ(wp_buf_peek_u16(&b, 0, &p16), 0);
    WP_CHECK_EQ(p16, 0x1234);
    WP_CHECK_EQ(wp_buf_peek_u32(&b, 2, &p32), 0);
    WP_CHECK(p32 == 0x56789abcu);
    WP_CHECK_EQ(wp_buf_peek_u32(&b, 11, &p32), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_peek_u16(&b, 12, &p16), 0);
    WP_CHECK_EQ(p16, 0x6677);
    WP_CHECK_EQ(wp_buf_peek_u16(&b, 13, &p16), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_peek_u16(&b, SIZE_MAX, &p16), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_len(&b), sizeof want); /* peeks consume nothing */
    wp_buf_free(&b);
}

WP_TEST(buf_truncated_get_leaves_unchanged)
{
    wp_buf b;
    wp_buf_init(&b, 64);
    WP_CHECK_EQ(wp_buf_put(&b, "\x01\x02\x03", 3), 0);
    uint32_t u32 = 0x11111111u;
    uint64_t u64 = 7;
    uint16_t u16 = 0;
    uint8_t tmp[4] = {9, 9, 9, 9};
    WP_CHECK_EQ(wp_buf_get_u32(&b, &u32), WP_ERR_NEED_MORE);
    WP_CHECK(u32 == 0x11111111u);
    WP_CHECK_EQ(wp_buf_get_u64(&b, &u64), WP_ERR_NEED_MORE);
    WP_CHECK(u64 == 7);
    WP_CHECK_EQ(wp_buf_get(&b, tmp, 4), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(tmp[0], 9);
    WP_CHECK_EQ(wp_buf_consume(&b, 4), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_len(&b), 3);
    WP_CHECK(memcmp(wp_buf_ptr(&b), "\x01\x02\x03", 3) == 0);
    WP_CHECK_EQ(wp_buf_get_u16(&b, &u16), 0);
    WP_CHECK_EQ(u16, 0x0102);
    WP_CHECK_EQ(wp_buf_get_u16(&b, &u16), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(u16, 0x0102);
    WP_CHECK_EQ(wp_buf_len(&b), 1);
    wp_buf_free(&b);
}

WP_TEST(buf_limit_exact)
{
    wp_buf b;
    wp_buf_init(&b, 100);
    uint8_t blob[101];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (uint8_t)i;
    WP_CHECK_EQ(wp_buf_put(&b, blob, 101), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    WP_CHECK_EQ(wp_buf_put(&b, blob, 100), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 100);
    WP_CHECK_EQ(wp_buf_room(&b), 0);
    WP_CHECK_EQ(wp_buf_put_u8(&b, 1), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_put_u64(&b, 1), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_put_str(&b, "x"), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 100);
    WP_CHECK(memcmp(wp_buf_ptr(&b), blob, 100) == 0);
    WP_CHECK(b.alloc <= 100);
    /* consuming frees room again (and compaction keeps content) */
    WP_CHECK_EQ(wp_buf_consume(&b, 10), 0);
    WP_CHECK_EQ(wp_buf_room(&b), 10);
    WP_CHECK_EQ(wp_buf_put(&b, blob, 10), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 100);
    WP_CHECK(memcmp(wp_buf_ptr(&b), blob + 10, 90) == 0);
    WP_CHECK(memcmp(wp_buf_ptr(&b) + 90, blob, 10) == 0);
    WP_CHECK_EQ(wp_buf_put_u8(&b, 1), WP_ERR_LIMIT);
    wp_buf_free(&b);

    /* a max-0 buffer accepts nothing but zero-length appends */
    wp_buf_init(&b, 0);
    WP_CHECK_EQ(wp_buf_put_u8(&b, 1), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_put(&b, NULL, 0), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    wp_buf_free(&b);
}

WP_TEST(buf_huge_sizes_refused)
{
    wp_buf b;
    wp_buf_init(&b, SIZE_MAX);
    uint8_t *w = NULL;
    WP_CHECK_EQ(wp_buf_put_u32(&b, 1), 0);
    WP_CHECK_EQ(wp_buf_reserve(&b, SIZE_MAX, &w), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_reserve(&b, SIZE_MAX - 2, &w), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_put(&b, &w, SIZE_MAX - 3), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 4);
    uint8_t x;
    WP_CHECK_EQ(wp_buf_get(&b, &x, SIZE_MAX), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_consume(&b, SIZE_MAX), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_peek(&b, 2, &x, SIZE_MAX - 1), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_len(&b), 4);
    wp_buf_free(&b);

    wp_buf_init(&b, 1 << 20);
    WP_CHECK_EQ(wp_buf_put_u8(&b, 1), 0);
    WP_CHECK_EQ(wp_buf_reserve(&b, SIZE_MAX, &w), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_put(&b, &x, SIZE_MAX), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 1);
    wp_buf_free(&b);
}

WP_TEST(buf_reserve_commit)
{
    wp_buf b;
    wp_buf_init(&b, 32);
    uint8_t *w = NULL;
    WP_CHECK_EQ(wp_buf_put_str(&b, "ab"), 0);
    WP_CHECK_EQ(wp_buf_reserve(&b, 10, &w), 0);
    WP_CHECK(w != NULL);
    memcpy(w, "cdefg", 5);
    wp_buf_commit(&b, 5);
    WP_CHECK_EQ(wp_buf_len(&b), 7);
    WP_CHECK(memcmp(wp_buf_ptr(&b), "abcdefg", 7) == 0);
    WP_CHECK_EQ(wp_buf_reserve(&b, 25, &w), 0);
    wp_buf_commit(&b, 0);
    WP_CHECK_EQ(wp_buf_len(&b), 7);
    WP_CHECK_EQ(wp_buf_reserve(&b, 26, &w), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 7);
    /* reserve after consuming reuses the prefix */
    WP_CHECK_EQ(wp_buf_consume(&b, 7), 0);
    WP_CHECK_EQ(wp_buf_reserve(&b, 32, &w), 0);
    memset(w, 'z', 32);
    wp_buf_commit(&b, 32);
    WP_CHECK_EQ(wp_buf_len(&b), 32);
    WP_CHECK_EQ(wp_buf_room(&b), 0);
    /* committing more than reserved room is clamped, never overflows max */
    wp_buf_commit(&b, 1000);
    WP_CHECK_EQ(wp_buf_len(&b), 32);
    wp_buf_free(&b);
}

WP_TEST(buf_putf)
{
    wp_buf b;
    wp_buf_init(&b, 16);
    WP_CHECK_EQ(wp_buf_putf(&b, "%d-%s", 42, "ab"), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 5);
    WP_CHECK(memcmp(wp_buf_ptr(&b), "42-ab", 5) == 0);
    /* 12 bytes would make 17 > 16: refused, nothing appended */
    WP_CHECK_EQ(wp_buf_putf(&b, "%s", "0123456789AB"), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 5);
    WP_CHECK(memcmp(wp_buf_ptr(&b), "42-ab", 5) == 0);
    /* exactly filling max works even though the NUL would not fit */
    WP_CHECK_EQ(wp_buf_putf(&b, "%s", "0123456789A"), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 16);
    WP_CHECK(memcmp(wp_buf_ptr(&b), "42-ab0123456789A", 16) == 0);
    WP_CHECK_EQ(wp_buf_putf(&b, "%s", ""), 0);
    WP_CHECK_EQ(wp_buf_putf(&b, "x"), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 16);
    wp_buf_free(&b);

    /* an over-long format with a large buffer still works */
    wp_buf_init(&b, 100000);
    WP_CHECK_EQ(wp_buf_putf(&b, "%5000d|", 7), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 5001);
    WP_CHECK_EQ(wp_buf_ptr(&b)[4999], '7');
    WP_CHECK_EQ(wp_buf_ptr(&b)[5000], '|');
    wp_buf_free(&b);
}

WP_TEST(rd_cursor)
{
    static const uint8_t data[] = {0xab, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 1,  2,
                                   3,    4,    5,    6,    7,    8,    'h',  'i'};
    wp_rd r;
    wp_rd_init(&r, data, sizeof data);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    const uint8_t *bp = NULL;
    WP_CHECK_EQ(wp_rd_get_u8(&r, &u8), 0);
    WP_CHECK_EQ(u8, 0xab);
    WP_CHECK_EQ(wp_rd_get_u16(&r, &u16), 0);
    WP_CHECK_EQ(u16, 0xbeef);
    WP_CHECK_EQ(wp_rd_get_u32(&r, &u32), 0);
    WP_CHECK(u32 == 0xdeadbeefu);
    WP_CHECK_EQ(wp_rd_get_u64(&r, &u64), 0);
    WP_CHECK(u64 == 0x0102030405060708ull);
    WP_CHECK_EQ(r.len, 2);
    WP_CHECK_EQ(wp_rd_get_u32(&r, &u32), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_rd_get_u64(&r, &u64), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_rd_skip(&r, 3), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_rd_skip(&r, SIZE_MAX), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_rd_borrow(&r, 3, &bp), WP_ERR_NEED_MORE);
    WP_CHECK(bp == NULL);
    WP_CHECK_EQ(r.len, 2);
    WP_CHECK_EQ(wp_rd_borrow(&r, 2, &bp), 0);
    WP_CHECK(bp == data + 15);
    WP_CHECK_EQ(r.len, 0);
    WP_CHECK_EQ(wp_rd_get_u8(&r, &u8), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_rd_skip(&r, 0), 0);

    wp_rd_init(&r, data, sizeof data);
    WP_CHECK_EQ(wp_rd_skip(&r, 3), 0);
    uint8_t four[4];
    WP_CHECK_EQ(wp_rd_get(&r, four, 4), 0);
    WP_CHECK(memcmp(four, data + 3, 4) == 0);

    /* zero-length and NULL spans */
    wp_rd_init(&r, NULL, 0);
    WP_CHECK_EQ(wp_rd_skip(&r, 0), 0);
    WP_CHECK_EQ(wp_rd_get(&r, four, 0), 0);
    WP_CHECK_EQ(wp_rd_borrow(&r, 0, &bp), 0);
    WP_CHECK_EQ(wp_rd_get_u8(&r, &u8), WP_ERR_NEED_MORE);
}

WP_TEST(buf_zero_length_ops)
{
    wp_buf b;
    wp_buf_init(&b, 8);
    uint8_t *w = NULL;
    WP_CHECK_EQ(wp_buf_put(&b, NULL, 0), 0);
    WP_CHECK_EQ(wp_buf_put_str(&b, ""), 0);
    WP_CHECK_EQ(wp_buf_get(&b, NULL, 0), 0);
    WP_CHECK_EQ(wp_buf_consume(&b, 0), 0);
    WP_CHECK_EQ(wp_buf_peek(&b, 0, NULL, 0), 0);
    WP_CHECK_EQ(wp_buf_peek(&b, 1, NULL, 0), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_buf_reserve(&b, 0, &w), 0);
    wp_buf_commit(&b, 0);
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    WP_CHECK_EQ(wp_buf_room(&b), 8);
    WP_CHECK_EQ(wp_buf_put_str(&b, "abc"), 0);
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_buf_len(&b), 0);
    WP_CHECK_EQ(wp_buf_room(&b), 8);
    wp_buf_free(&b);
    wp_buf_free(&b); /* double free of an empty buffer is harmless */
}

/* A simple model: a flat array of everything ever put, with a read index. */
WP_TEST(buf_random_stress_vs_model)
{
    enum { MAX = 5000, TOTAL = 400000 };
    uint8_t *model = malloc(TOTAL + 64);
    WP_CHECK(model != NULL);
    if (!model)
        return;
    size_t mput = 0, mget = 0;
    wp_buf b;
    wp_buf_init(&b, MAX);
    uint32_t seed = 12345;
    uint8_t tmp[700];
    int ops = 0;
    while (mput < TOTAL && ops < 200000) {
        ops++;
        seed = seed * 1103515245u + 12345u;
        uint32_t r = seed >> 8;
        size_t n = (r >> 4) % 700;
        if (mput + n > TOTAL)
            n = TOTAL - mput;
        switch (r & 7) {
        case 0:
        case 1:
        case 2: { /* put */
            for (size_t i = 0; i < n; i++)
                tmp[i] = (uint8_t)(mput + i);
            int rc = wp_buf_put(&b, tmp, n);
            if (mput - mget + n > MAX) {
                WP_CHECK_EQ(rc, WP_ERR_LIMIT);
            } else {
                WP_CHECK_EQ(rc, 0);
                memcpy(model + mput, tmp, n);
                mput += n;
            }
            break;
        }
        case 3: { /* reserve + partial commit */
            uint8_t *w = NULL;
            int rc = wp_buf_reserve(&b, n, &w);
            if (mput - mget + n > MAX) {
                WP_CHECK_EQ(rc, WP_ERR_LIMIT);
            } else {
                WP_CHECK_EQ(rc, 0);
                size_t k = n / 2;
                for (size_t i = 0; i < k; i++)
                    w[i] = model[mput + i] = (uint8_t)(mput + i * 3);
                wp_buf_commit(&b, k);
                mput += k;
            }
            break;
        }
        case 4:
        case 5: { /* get */
            int rc = wp_buf_get(&b, tmp, n);
            if (n > mput - mget) {
                WP_CHECK_EQ(rc, WP_ERR_NEED_MORE);
            } else {
                WP_CHECK_EQ(rc, 0);
                WP_CHECK(memcmp(tmp, model + mget, n) == 0);
                mget += n;
            }
            break;
        }
        case 6: { /* consume */
            int rc = wp_buf_consume(&b, n);
            if (n > mput - mget) {
                WP_CHECK_EQ(rc, WP_ERR_NEED_MORE);
            } else {
                WP_CHECK_EQ(rc, 0);
                mget += n;
            }
            break;
        }
        default: { /* u32 put + get checks */
            int rc = wp_buf_put_u32(&b, r);
            if (mput - mget + 4 > MAX) {
                WP_CHECK_EQ(rc, WP_ERR_LIMIT);
            } else {
                WP_CHECK_EQ(rc, 0);
                model[mput] = (uint8_t)(r >> 24);
                model[mput + 1] = (uint8_t)(r >> 16);
                model[mput + 2] = (uint8_t)(r >> 8);
                model[mput + 3] = (uint8_t)r;
                mput += 4;
            }
            break;
        }
        }
        WP_CHECK_EQ(wp_buf_len(&b), mput - mget);
        WP_CHECK(b.alloc <= MAX);
        if (wp_buf_len(&b))
            WP_CHECK(memcmp(wp_buf_ptr(&b), model + mget, mput - mget) == 0);
        if (wp_test_failed_checks_)
            break;
    }
    WP_CHECK(mput > TOTAL / 2);
    wp_buf_free(&b);
    free(model);
}

int main(void)
{
    WP_RUN(buf_roundtrip_all_widths);
    WP_RUN(buf_big_endian_layout);
    WP_RUN(buf_truncated_get_leaves_unchanged);
    WP_RUN(buf_limit_exact);
    WP_RUN(buf_huge_sizes_refused);
    WP_RUN(buf_reserve_commit);
    WP_RUN(buf_putf);
    WP_RUN(rd_cursor);
    WP_RUN(buf_zero_length_ops);
    WP_RUN(buf_random_stress_vs_model);
    return wp_test_done();
}
