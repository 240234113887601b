/*
 * wp_test.h — the minimal unit-test harness used by tests/unit/ (header only).
 *
 *   WP_TEST(buf_put_limit) { ... WP_CHECK(x == 1); WP_CHECK_EQ(rc, WP_ERR_LIMIT); }
 *   int main(void) { WP_RUN(buf_put_limit); return wp_test_done(); }
 *
 * A failed check prints file:line and the expression, marks the test failed and
 * continues. wp_test_done() prints "N passed, N failed" and returns the exit code.
 * WP_CHECK_LOOP_CLOSED(loop) asserts that every handle on a libuv loop was closed.
 */
#ifndef WP_TEST_H
#define WP_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

static int wp_test_failed_checks_;
static int wp_test_passed_;
static int wp_test_failed_;

#define WP_TEST(name) static void test_##name(void)

#define WP_RUN(name)                                                                               \
    do {                                                                                           \
        int before_ = wp_test_failed_checks_;                                                      \
        test_##name();                                                                             \
        if (wp_test_failed_checks_ == before_) {                                                   \
            wp_test_passed_++;                                                                     \
            printf("ok   %s\n", #name);                                                            \
        } else {                                                                                   \
            wp_test_failed_++;                                                                     \
            printf("FAIL %s\n", #name);                                                            \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define WP_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            wp_test_failed_checks_++;                                                              \
            printf("  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                      \
        }                                                                                          \
    } while (0)

#define WP_CHECK_EQ(a, b)                                                                          \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            wp_test_failed_checks_++;                                                              \
            printf("  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, a_,     \
                   b_);                                                                            \
        }                                                                                          \
    } while (0)

#define WP_CHECK_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            wp_test_failed_checks_++;                                                              \
            printf("  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b,     \
                   a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                        \
        }                                                                                          \
    } while (0)

static inline void wp_test_walk_cb_(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        printf("  open handle left on loop: %s\n", uv_handle_type_name(uv_handle_get_type(h)));
}

/* Runs the loop until idle, then asserts uv_loop_close() == 0 (every handle closed). */
#define WP_CHECK_LOOP_CLOSED(loop)                                                                 \
    do {                                                                                           \
        uv_run((loop), UV_RUN_DEFAULT);                                                            \
        int rc_ = uv_loop_close(loop);                                                             \
        if (rc_ != 0)                                                                              \
            uv_walk((loop), wp_test_walk_cb_, NULL);                                               \
        WP_CHECK_EQ(rc_, 0);                                                                       \
    } while (0)

static inline int wp_test_done(void)
{
    printf("%d passed, %d failed\n", wp_test_passed_, wp_test_failed_);
    return wp_test_failed_ ? 1 : 0;
}

#endif
