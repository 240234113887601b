/*
 * test_http_router.c — unit tests for the pure router in http_router.c: pattern
 * validation, matching, precedence, params, 405 Allow lists, %-decoding and
 * hostile params (encoded slashes, NUL, dot segments).
 */
#include <stdlib.h>

#include "err.h"
#include "http_internal.h"
#include "wp_test.h"

static void h_a(wp_http_req *req, void *ud)
{
    (void)req;
    (void)ud;
}

static int tag(const wp_http_match *m)
{
    return m->route ? (int)(intptr_t)m->route->ud : -1;
}

WP_TEST(router_add_validation)
{
    wp_http_router r;
    wp_http_router_init(&r);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/ok", h_a, NULL, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/ok", h_a, NULL, 0), WP_ERR_EXISTS);
    WP_CHECK_EQ(wp_http_router_add(&r, "POST", "/ok", h_a, NULL, 0), 0);
    const char *bad[] = {"",       "ok",        "/a//b",    "/a/",   "/{}",    "/{a",    "/a}/b",
                         "/{a b}", "/{x...}/y", "/{x}/{x}", "/x{y}", "/{...}", "/{a}{b}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = wp_http_router_add(&r, "GET", bad[i], h_a, NULL, 0);
        if (rc != WP_ERR_INVAL)
            printf("  accepted pattern \"%s\"\n", bad[i]);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
    }
    WP_CHECK_EQ(wp_http_router_add(&r, "G T", "/m", h_a, NULL, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET\r\n", "/m", h_a, NULL, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/m", NULL, NULL, 0), WP_ERR_INVAL);
    /* both flags together: a streaming route that may also hijack (the proxy) */
    WP_CHECK_EQ(wp_http_router_add(&r, "*", "/both/{rest...}", h_a, NULL,
                                   WP_HTTP_ROUTE_STREAM_BODY | WP_HTTP_ROUTE_UPGRADE),
                0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/m", h_a, NULL, 0x80), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/", h_a, NULL, 0), 0);
    wp_http_router_free(&r);
}

WP_TEST(router_match_precedence)
{
    wp_http_router r;
    wp_http_router_init(&r);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/healthz", h_a, (void *)1, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/api/v1/nodes/{id}", h_a, (void *)2, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/api/v1/nodes/self", h_a, (void *)3, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "DELETE", "/api/v1/nodes/{id}", h_a, (void *)4, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "*", "/api/v1/nodes/{id}/proxy/{service}/{path...}", h_a,
                                   (void *)5, 0),
                0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/api/v1/nodes/{id}/{rest...}", h_a, (void *)6, 0),
                0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/", h_a, (void *)7, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "*", "/any", h_a, (void *)8, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "POST", "/any", h_a, (void *)9, 0), 0);

    wp_http_match m;
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/healthz", &m), 0);
    WP_CHECK_EQ(tag(&m), 1);
    WP_CHECK_EQ(m.nparams, 0);
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/", &m), 0);
    WP_CHECK_EQ(tag(&m), 7);
    wp_http_match_free(&m);
    /* exact beats param */
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/api/v1/nodes/self", &m), 0);
    WP_CHECK_EQ(tag(&m), 3);
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/api/v1/nodes/n%2D1", &m), 0);
    WP_CHECK_EQ(tag(&m), 2);
    WP_CHECK_EQ(m.nparams, 1);
    WP_CHECK_STR(m.names[0], "id");
    WP_CHECK_STR(m.values[0], "n-1");
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "DELETE", "/api/v1/nodes/n1", &m), 0);
    WP_CHECK_EQ(tag(&m), 4);
    wp_http_match_free(&m);
    /* param beats rest */
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/api/v1/nodes/n1/proxy/web/a/b%20c", &m), 0);
    WP_CHECK_EQ(tag(&m), 5);
    WP_CHECK_EQ(m.nparams, 3);
    WP_CHECK_STR(m.values[0], "n1");
    WP_CHECK_STR(m.values[1], "web");
    WP_CHECK_STR(m.values[2], "a/b c");
    wp_http_match_free(&m);
    /* empty rest, with and without trailing slash */
    WP_CHECK_EQ(wp_http_router_match(&r, "PUT", "/api/v1/nodes/n1/proxy/web/", &m), 0);
    WP_CHECK_EQ(tag(&m), 5);
    WP_CHECK_STR(m.values[2], "");
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "PUT", "/api/v1/nodes/n1/proxy/web", &m), 0);
    WP_CHECK_EQ(tag(&m), 5);
    WP_CHECK_STR(m.values[2], "");
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/api/v1/nodes/n1/metrics/x", &m), 0);
    WP_CHECK_EQ(tag(&m), 6);
    WP_CHECK_STR(m.values[1], "metrics/x");
    wp_http_match_free(&m);
    /* specific method beats "*" on the same pattern */
    WP_CHECK_EQ(wp_http_router_match(&r, "POST", "/any", &m), 0);
    WP_CHECK_EQ(tag(&m), 9);
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "PATCH", "/any", &m), 0);
    WP_CHECK_EQ(tag(&m), 8);
    wp_http_match_free(&m);
    /* HEAD is served by GET routes */
    WP_CHECK_EQ(wp_http_router_match(&r, "HEAD", "/healthz", &m), 0);
    WP_CHECK_EQ(tag(&m), 1);
    wp_http_match_free(&m);
    /* not found: trailing slash, empty segment, case, unknown */
    const char *nf[] = {"/healthz/", "/Healthz", "/api/v1/nodes",    "//healthz",
                        "/nope",     "healthz",  "/api/v1/nodes//x", "/%68ealthz"};
    for (size_t i = 0; i < sizeof(nf) / sizeof(nf[0]); i++) {
        int rc = wp_http_router_match(&r, "GET", nf[i], &m);
        if (rc != WP_ERR_NOT_FOUND)
            printf("  matched \"%s\" (%d)\n", nf[i], rc);
        WP_CHECK_EQ(rc, WP_ERR_NOT_FOUND);
        wp_http_match_free(&m);
    }
    /* 405 with Allow */
    WP_CHECK_EQ(wp_http_router_match(&r, "POST", "/healthz", &m), WP_ERR_UNSUPPORTED);
    WP_CHECK_STR(m.allow, "GET");
    WP_CHECK_EQ(wp_http_router_match(&r, "PUT", "/api/v1/nodes/x", &m), WP_ERR_UNSUPPORTED);
    WP_CHECK_STR(m.allow, "GET, DELETE");
    wp_http_router_free(&r);
}

WP_TEST(router_hostile_params)
{
    wp_http_router r;
    wp_http_router_init(&r);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/n/{id}", h_a, (void *)1, 0), 0);
    WP_CHECK_EQ(wp_http_router_add(&r, "GET", "/p/{path...}", h_a, (void *)2, 0), 0);
    wp_http_match m;
    const char *bad[] = {"/n/a%2Fb",  "/n/a%2fb", "/n/%00",  "/n/a%0",    "/n/a%zz",
                         "/n/%2e%2e", "/n/..",    "/n/.",    "/p/a/../b", "/p/%2e%2E/x",
                         "/p/a%00b",  "/p/./x",   "/p/a/%2e"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = wp_http_router_match(&r, "GET", bad[i], &m);
        if (rc != WP_ERR_INVAL)
            printf("  accepted \"%s\" (%d)\n", bad[i], rc);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
        WP_CHECK_EQ(m.nparams, 0);
    }
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/n/a..b", &m), 0);
    WP_CHECK_STR(m.values[0], "a..b");
    wp_http_match_free(&m);
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", "/p/a%2Fb", &m), 0); /* rest may hold '/' */
    WP_CHECK_STR(m.values[0], "a/b");
    wp_http_match_free(&m);
    /* very deep paths only reach rest routes */
    char deep[400] = "/p";
    for (int i = 0; i < 60; i++)
        strcat(deep, "/x");
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", deep, &m), 0);
    WP_CHECK_EQ(tag(&m), 2);
    wp_http_match_free(&m);
    deep[1] = 'n';
    WP_CHECK_EQ(wp_http_router_match(&r, "GET", deep, &m), WP_ERR_NOT_FOUND);
    wp_http_router_free(&r);
}

WP_TEST(pct_decode)
{
    char out[16];
    WP_CHECK_EQ(wp_http_pct_decode("a%20b+c", 7, out, sizeof(out), 1), 5);
    WP_CHECK_STR(out, "a b c");
    WP_CHECK_EQ(wp_http_pct_decode("a%20b+c", 7, out, sizeof(out), 0), 5);
    WP_CHECK_STR(out, "a b+c");
    WP_CHECK_EQ(wp_http_pct_decode("%", 1, out, sizeof(out), 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_pct_decode("%4", 2, out, sizeof(out), 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_pct_decode("%4g", 3, out, sizeof(out), 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_pct_decode("%00", 3, out, sizeof(out), 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_http_pct_decode("abcdefghijklmnopq", 17, out, sizeof(out), 0), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_http_pct_decode("", 0, out, sizeof(out), 0), 0);
    WP_CHECK_STR(out, "");
    WP_CHECK_EQ(wp_http_pct_decode("x", 1, out, 0, 0), WP_ERR_LIMIT);
}

int main(void)
{
    (void)wp_test_walk_cb_; /* wp_test.h helper, only used by loop tests */
    WP_RUN(router_add_validation);
    WP_RUN(router_match_precedence);
    WP_RUN(router_hostile_params);
    WP_RUN(pct_decode);
    return wp_test_done();
}
