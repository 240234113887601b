/*
 * test_err.c — unit tests for common/err.c: every WP_ERR_* code has a distinct
 * message and name; anything else maps to the "unknown" strings.
 */
#include <limits.h>
#include <string.h>

#include "err.h"
#include "wp_test.h"

WP_TEST(err_codes_distinct)
{
    for (int a = WP_ERR_NOMEM; a >= WP_ERR_INTERNAL; a--) {
        const char *s = wp_strerror(a), *n = wp_errname(a);
        WP_CHECK(s != NULL && n != NULL);
        if (!s || !n)
            continue;
        WP_CHECK(strcmp(s, "unknown error") != 0);
        WP_CHECK(strcmp(n, "WP_ERR_UNKNOWN") != 0);
        WP_CHECK(strncmp(n, "WP_ERR_", 7) == 0);
        WP_CHECK(s[0] != '\0');
        for (int b = a - 1; b >= WP_ERR_INTERNAL; b--) {
            WP_CHECK(strcmp(s, wp_strerror(b)) != 0);
            WP_CHECK(strcmp(n, wp_errname(b)) != 0);
        }
    }
}

WP_TEST(err_known_names)
{
    WP_CHECK_STR(wp_errname(WP_ERR_NOMEM), "WP_ERR_NOMEM");
    WP_CHECK_STR(wp_errname(WP_ERR_LIMIT), "WP_ERR_LIMIT");
    WP_CHECK_STR(wp_errname(WP_ERR_NEED_MORE), "WP_ERR_NEED_MORE");
    WP_CHECK_STR(wp_errname(WP_ERR_INTERNAL), "WP_ERR_INTERNAL");
    WP_CHECK_STR(wp_errname(WP_OK), "WP_OK");
    WP_CHECK(strcmp(wp_strerror(WP_ERR_NEED_MORE), wp_strerror(WP_ERR_MALFORMED)) != 0);
}

WP_TEST(err_unknown_codes)
{
    static const int unknown[] = {WP_ERR_MIN_, WP_ERR_MIN_ - 1, -1000, INT_MIN, 1, 2, 42, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        WP_CHECK_STR(wp_strerror(unknown[i]), "unknown error");
        WP_CHECK_STR(wp_errname(unknown[i]), "WP_ERR_UNKNOWN");
    }
}

int main(void)
{
    WP_RUN(err_codes_distinct);
    WP_RUN(err_known_names);
    WP_RUN(err_unknown_codes);
    return wp_test_done();
}
