/*
 * test_cp_proxy_head.c — the proxy's upstream response-head arena
 * (controlplane/proxy_head.h): headers collected from split llhttp callbacks
 * and read back in order and by name, the count and byte bounds, refused
 * values, and the empty header name llhttp lets through (found by
 * fuzz_proxy_head: it slipped past the header count and reached the client
 * response as a nameless header).
 */
#include <string.h>

#include "err.h"
#include "proxy_head.h"
#include "wp_test.h"

static int add(cp_proxy_head *h, const char *name, const char *value)
{
    int rc = cp_proxy_head_field(h, name, strlen(name));
    if (rc == 0)
        rc = cp_proxy_head_field_done(h);
    if (rc == 0)
        rc = cp_proxy_head_value(h, value, strlen(value));
    if (rc == 0)
        rc = cp_proxy_head_value_done(h);
    return rc;
}

WP_TEST(proxy_head_collects_split_headers)
{
    cp_proxy_head h;
    cp_proxy_head_init(&h);
    /* a name and a value in pieces, as llhttp delivers them across reads */
    WP_CHECK_EQ(cp_proxy_head_field(&h, "Cont", 4), 0);
    WP_CHECK_EQ(cp_proxy_head_field(&h, "", 0), 0);
    WP_CHECK_EQ(cp_proxy_head_field(&h, "ent-Type", 8), 0);
    WP_CHECK_EQ(cp_proxy_head_field_done(&h), 0);
    size_t off = 0;
    const char *v;
    WP_CHECK(cp_proxy_head_next(&h, &off, &v) == NULL); /* value not complete yet */
    WP_CHECK_EQ(cp_proxy_head_value(&h, "text/", 5), 0);
    WP_CHECK_EQ(cp_proxy_head_value(&h, "html", 4), 0);
    WP_CHECK_EQ(cp_proxy_head_value_done(&h), 0);
    WP_CHECK_EQ(add(&h, "X-Empty", ""), 0);
    WP_CHECK_EQ(add(&h, "content-type", "second"), 0);
    WP_CHECK_EQ(h.count, 3);
    off = 0;
    const char *n = cp_proxy_head_next(&h, &off, &v);
    WP_CHECK(n && strcmp(n, "Content-Type") == 0 && strcmp(v, "text/html") == 0);
    n = cp_proxy_head_next(&h, &off, &v);
    WP_CHECK(n && strcmp(n, "X-Empty") == 0 && strcmp(v, "") == 0);
    n = cp_proxy_head_next(&h, &off, &v);
    WP_CHECK(n && strcmp(v, "second") == 0);
    WP_CHECK(cp_proxy_head_next(&h, &off, &v) == NULL);
    const char *g = cp_proxy_head_get(&h, "CONTENT-TYPE");
    WP_CHECK(g && strcmp(g, "text/html") == 0);
    WP_CHECK(cp_proxy_head_get(&h, "missing") == NULL);
    WP_CHECK(h.err == NULL);
    cp_proxy_head_reset(&h);
    WP_CHECK_EQ(h.count, 0);
    off = 0;
    WP_CHECK(cp_proxy_head_next(&h, &off, &v) == NULL);
    cp_proxy_head_free(&h);
}

WP_TEST(proxy_head_bounds_and_bad_input)
{
    cp_proxy_head h;
    char name[32];

    /* at most CP_PROXY_RHDR_COUNT headers */
    cp_proxy_head_init(&h);
    for (int i = 0; i < CP_PROXY_RHDR_COUNT; i++) {
        snprintf(name, sizeof(name), "X-%d", i);
        WP_CHECK_EQ(add(&h, name, "v"), 0);
    }
    WP_CHECK_EQ(cp_proxy_head_field(&h, "X-more", 6), WP_ERR_LIMIT);
    WP_CHECK(h.err && strstr(h.err, "too many"));
    cp_proxy_head_free(&h);

    /* at most CP_PROXY_RHDR_MAX bytes */
    cp_proxy_head_init(&h);
    static char big[CP_PROXY_RHDR_MAX];
    memset(big, 'b', sizeof(big));
    WP_CHECK_EQ(cp_proxy_head_field(&h, "X-Big", 5), 0);
    WP_CHECK_EQ(cp_proxy_head_field_done(&h), 0);
    WP_CHECK_EQ(cp_proxy_head_value(&h, big, sizeof(big) - 6), 0); /* "X-Big\0" + value: full */
    WP_CHECK_EQ(cp_proxy_head_value_done(&h), WP_ERR_LIMIT);
    WP_CHECK(h.err && strstr(h.err, "too large"));
    WP_CHECK(wp_buf_len(&h.hdr) <= CP_PROXY_RHDR_MAX);
    cp_proxy_head_free(&h);

    /* values with NUL, CR or LF */
    static const char *const bad[] = {"a\rb", "a\nb", "a"};
    for (size_t i = 0; i < 3; i++) {
        cp_proxy_head_init(&h);
        size_t len = i == 2 ? 2 : strlen(bad[i]); /* "a\0" */
        WP_CHECK_EQ(cp_proxy_head_field(&h, "X", 1), 0);
        WP_CHECK_EQ(cp_proxy_head_field_done(&h), 0);
        WP_CHECK_EQ(cp_proxy_head_value(&h, bad[i], len), WP_ERR_MALFORMED);
        WP_CHECK(h.err != NULL);
        cp_proxy_head_free(&h);
    }

    /* an empty name (llhttp accepts ": x" in a response): refused, not counted around */
    cp_proxy_head_init(&h);
    WP_CHECK_EQ(cp_proxy_head_field_done(&h), WP_ERR_MALFORMED);
    WP_CHECK(h.err && strstr(h.err, "empty"));
    cp_proxy_head_free(&h);
}

int main(void)
{
    WP_RUN(proxy_head_collects_split_headers);
    WP_RUN(proxy_head_bounds_and_bad_input);
    return wp_test_done();
}
