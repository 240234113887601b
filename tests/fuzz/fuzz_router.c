/*
 * fuzz_router.c — fuzz target for the HTTP router (common/http_internal.h).
 *
 * Input: "METHOD\nPATH" (no newline: the whole input is the path of a GET).
 * The path is matched against a fixed route table like the control plane's.
 * Invariants checked against an independent reference matcher:
 *   - a match (0) names a route whose pattern matches the raw path and whose
 *     method accepts the request, and no other such route is more specific
 *     (literal > param > rest, segment by segment; exact method > GET-for-HEAD
 *     > "*" between equals);
 *   - its params are exactly the %-decoded path segments: never NUL (decoded
 *     length == strlen), never '/' (except the {rest...} param), never a "."
 *     or ".." (dot) segment, never empty (except the rest);
 *   - WP_ERR_NOT_FOUND only when no pattern matches; WP_ERR_UNSUPPORTED only
 *     when patterns match but none for this method, with an Allow list of
 *     those routes' methods; WP_ERR_INVAL only when an acceptable route matched;
 *   - wp_http_pct_decode agrees with a reference decoder, including its
 *     errors, and reports WP_ERR_LIMIT for a buffer one byte short.
 */
#include <string.h>

#include "err.h"
#include "fuzz.h"
#include "http_internal.h"

static const struct {
    const char *method, *pattern;
} table[] = {
    {"GET", "/"},
    {"GET", "/healthz"},
    {"GET", "/api/v1/nodes"},
    {"POST", "/api/v1/nodes"},
    {"GET", "/api/v1/nodes/{id}"},
    {"DELETE", "/api/v1/nodes/{id}"},
    {"HEAD", "/api/v1/nodes/{id}"},
    {"GET", "/api/v1/nodes/{id}/gpu"},
    {"PUT", "/api/v1/sessions/{sid}/lobby/{lid}"},
    {"*", "/api/v1/proxy/{node}/{service}/{path...}"},
    {"GET", "/static/{file...}"},
    {"GET", "/a/{x}/c"},
    {"GET", "/a/b/{y}"},
    {"POST", "/a/b/c"},
    {"*", "/any/{one}"},
    {"GET", "/deep/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}/{p10}/{p11}/{p12}/{p13}/{p14}/"
            "{p15}/{p16}"},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

static wp_http_router router;
static int router_ready;

static void h_dummy(wp_http_req *req, void *ud)
{
    (void)req;
    (void)ud;
}

static void router_cleanup(void)
{
    wp_http_router_free(&router);
}

static void router_setup(void)
{
    if (router_ready)
        return;
    wp_http_router_init(&router);
    for (size_t i = 0; i < NTABLE; i++)
        WP_FUZZ_CHECK(
            wp_http_router_add(&router, table[i].method, table[i].pattern, h_dummy, NULL, 0) == 0);
    WP_FUZZ_CHECK(router.n == NTABLE);
    router_ready = 1;
    atexit(router_cleanup);
}

/* ---- reference implementation ---- */

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..n) into out (n + 1 bytes). Returns the length or -1 (bad escape / NUL). */
static long ref_decode(const char *s, size_t n, char *out, int plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3 || hexv(s[i + 1]) < 0 || hexv(s[i + 2]) < 0)
                return -1;
            c = hexv(s[i + 1]) * 16 + hexv(s[i + 2]);
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c == 0)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

typedef struct segs {
    const char *p[1024];
    size_t len[1024];
    size_t n;
} segs;

/* Splits an absolute path at '/'. Returns 0, or -1 (not absolute / too many). */
static int ref_split(const char *path, segs *s)
{
    s->n = 0;
    if (path[0] != '/')
        return -1;
    if (path[1] == '\0')
        return 0;
    const char *p = path + 1;
    for (;;) {
        if (s->n >= sizeof(s->p) / sizeof(s->p[0]))
            return -1;
        const char *e = strchr(p, '/');
        s->p[s->n] = p;
        s->len[s->n] = e ? (size_t)(e - p) : strlen(p);
        s->n++;
        if (!e)
            return 0;
        p = e + 1;
    }
}

static int ref_matches(const wp_http_route *rt, const segs *s)
{
    for (size_t i = 0; i < rt->nsegs; i++) {
        const wp_http_seg *sg = &rt->segs[i];
        if (sg->kind == WP_HTTP_SEG_REST)
            return 1;
        if (i >= s->n)
            return 0;
        if (sg->kind == WP_HTTP_SEG_LIT &&
            (strlen(sg->text) != s->len[i] || memcmp(sg->text, s->p[i], s->len[i]) != 0))
            return 0;
        if (sg->kind == WP_HTTP_SEG_PARAM && s->len[i] == 0)
            return 0;
    }
    return rt->nsegs == s->n;
}

/* 3 exact method, 2 GET serving HEAD, 1 "*", 0 not acceptable. */
static int method_rank(const wp_http_route *rt, const char *method)
{
    if (strcmp(rt->method, method) == 0)
        return 3;
    if (strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0)
        return 2;
    return strcmp(rt->method, "*") == 0 ? 1 : 0;
}

/* >0 if a is more specific than b (both match the same path). */
static int specificity(const wp_http_route *a, const wp_http_route *b)
{
    size_t n = a->nsegs < b->nsegs ? a->nsegs : b->nsegs;
    for (size_t i = 0; i < n; i++)
        if (a->segs[i].kind != b->segs[i].kind)
            return a->segs[i].kind < b->segs[i].kind ? 1 : -1;
    /* same kinds on the common prefix: the shorter pattern is the tighter one */
    return a->nsegs == b->nsegs ? 0 : a->nsegs < b->nsegs ? 1 : -1;
}

static int is_dot(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* Nonzero if some param of rt, taken from the path, fails to decode or decodes to a separator,
 * a dot segment or NUL (what the router must refuse). */
static int ref_params_bad(const wp_http_route *rt, const segs *s, const char *path)
{
    int bad = 0;
    for (size_t i = 0; i < rt->nsegs && !bad; i++) {
        const wp_http_seg *sg = &rt->segs[i];
        if (sg->kind == WP_HTTP_SEG_LIT)
            continue;
        const char *raw =
            sg->kind == WP_HTTP_SEG_REST ? (i < s->n ? s->p[i] : path + strlen(path)) : s->p[i];
        size_t rn = sg->kind == WP_HTTP_SEG_REST ? strlen(raw) : s->len[i];
        char *dec = malloc(rn + 1);
        WP_FUZZ_CHECK(dec != NULL);
        long dn = ref_decode(raw, rn, dec, 0);
        if (dn < 0) {
            bad = 1;
        } else if (sg->kind == WP_HTTP_SEG_PARAM) {
            bad = strchr(dec, '/') != NULL || is_dot(dec, (size_t)dn);
        } else {
            for (const char *q = dec;;) {
                const char *e = strchr(q, '/');
                if (is_dot(q, e ? (size_t)(e - q) : strlen(q)))
                    bad = 1;
                if (!e)
                    break;
                q = e + 1;
            }
        }
        free(dec);
    }
    return bad;
}

static void check_params(const wp_http_match *m, const segs *s, const char *path)
{
    const wp_http_route *rt = m->route;
    size_t k = 0;
    for (size_t i = 0; i < rt->nsegs; i++) {
        const wp_http_seg *sg = &rt->segs[i];
        if (sg->kind == WP_HTTP_SEG_LIT)
            continue;
        WP_FUZZ_CHECK(k < m->nparams);
        WP_FUZZ_CHECK(strcmp(m->names[k], sg->text) == 0);
        const char *v = m->values[k];
        WP_FUZZ_CHECK(v != NULL);
        size_t vn = strlen(v);
        const char *raw;
        size_t rn;
        if (sg->kind == WP_HTTP_SEG_REST) {
            raw = i < s->n ? s->p[i] : path + strlen(path);
            rn = strlen(raw);
        } else {
            raw = s->p[i];
            rn = s->len[i];
            WP_FUZZ_CHECK(rn > 0 && vn > 0);
            WP_FUZZ_CHECK(strchr(v, '/') == NULL);
            WP_FUZZ_CHECK(!is_dot(v, vn));
        }
        char *dec = malloc(rn + 1);
        WP_FUZZ_CHECK(dec != NULL);
        long dn = ref_decode(raw, rn, dec, 0);
        /* the value is the decoded raw text, whole: no NUL hides a tail */
        WP_FUZZ_CHECK(dn >= 0 && (size_t)dn == vn && memcmp(dec, v, vn) == 0);
        free(dec);
        if (sg->kind == WP_HTTP_SEG_REST)
            for (const char *q = v;;) {
                const char *e = strchr(q, '/');
                size_t qn = e ? (size_t)(e - q) : strlen(q);
                WP_FUZZ_CHECK(!is_dot(q, qn));
                if (!e)
                    break;
                q = e + 1;
            }
        k++;
    }
    WP_FUZZ_CHECK(k == m->nparams);
}

static void check_match(const char *method, const char *path)
{
    static segs s; /* large: keep it off the stack */
    wp_http_match m;
    int rc = wp_http_router_match(&router, method, path, &m);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_NOT_FOUND || rc == WP_ERR_UNSUPPORTED ||
                  rc == WP_ERR_INVAL);
    int split_ok = ref_split(path, &s) == 0;
    const wp_http_route *best = NULL;
    int any = 0;
    for (size_t i = 0; split_ok && i < router.n; i++) {
        const wp_http_route *rt = &router.routes[i];
        if (!ref_matches(rt, &s))
            continue;
        any = 1;
        if (!method_rank(rt, method))
            continue;
        if (!best || specificity(rt, best) > 0 ||
            (specificity(rt, best) == 0 && method_rank(rt, method) > method_rank(best, method)))
            best = rt;
    }
    if (!split_ok && path[0] == '/')
        return; /* more segments than the reference holds: nothing to compare */
    switch (rc) {
    case 0:
        WP_FUZZ_CHECK(m.route != NULL && m.route == best);
        WP_FUZZ_CHECK(!ref_params_bad(best, &s, path));
        check_params(&m, &s, path);
        break;
    case WP_ERR_NOT_FOUND:
        WP_FUZZ_CHECK(!any);
        WP_FUZZ_CHECK(m.nparams == 0);
        break;
    case WP_ERR_UNSUPPORTED: {
        WP_FUZZ_CHECK(any && !best);
        WP_FUZZ_CHECK(m.allow[0] != '\0' && m.nparams == 0);
        /* each listed method belongs to a route matching the path */
        char allow[sizeof(m.allow)];
        memcpy(allow, m.allow, sizeof(allow));
        WP_FUZZ_CHECK(memchr(allow, '\0', sizeof(allow)) != NULL);
        char *save = NULL;
        for (char *t = strtok_r(allow, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            int found = 0;
            for (size_t i = 0; i < router.n && !found; i++)
                found =
                    strcmp(router.routes[i].method, t) == 0 && ref_matches(&router.routes[i], &s);
            WP_FUZZ_CHECK(found);
            WP_FUZZ_CHECK(strcmp(t, method) != 0);
        }
        break;
    }
    default: /* WP_ERR_INVAL: the best acceptable route's params did not decode cleanly */
        WP_FUZZ_CHECK(best != NULL && ref_params_bad(best, &s, path));
        WP_FUZZ_CHECK(m.nparams == 0);
        break;
    }
    wp_http_match_free(&m);
}

static void check_decode(const char *s, size_t n, int plus)
{
    char *out = malloc(n + 1), *ref = malloc(n + 1);
    WP_FUZZ_CHECK(out && ref);
    int rc = wp_http_pct_decode(s, n, out, n + 1, plus);
    long want = ref_decode(s, n, ref, plus);
    if (want < 0) {
        WP_FUZZ_CHECK(rc == WP_ERR_INVAL);
    } else {
        WP_FUZZ_CHECK(rc == want && strlen(out) == (size_t)rc && memcmp(out, ref, (size_t)rc) == 0);
        /* one byte short of room for the terminator */
        WP_FUZZ_CHECK(wp_http_pct_decode(s, n, out, (size_t)rc, plus) == WP_ERR_LIMIT);
    }
    free(out);
    free(ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    router_setup();
    char *buf = malloc(size + 1);
    WP_FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *method = "GET", *path = buf;
    char *nl = memchr(buf, '\n', size);
    if (nl) {
        *nl = '\0';
        method = buf;
        path = nl + 1;
    }
    size_t plen = strlen(path); /* an embedded NUL ends the path, as it would in a C string */
    check_decode(path, plen, 0);
    check_decode(path, plen, 1);
    if (*method)
        check_match(method, path);
    check_match("HEAD", path);
    free(buf);
    return 0;
}
