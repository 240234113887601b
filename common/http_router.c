/*
 * http_router.c — path-pattern routing for the HTTP server (pure; see http_internal.h).
 *
 * Patterns are split into '/'-separated segments: literals, {param} (one
 * segment) and {rest...} (the remainder, last only). Matching walks every
 * route (route tables are small) and keeps the most specific match: compared
 * segment by segment, literal > param > rest. Literal segments compare
 * against the RAW path, params are %-decoded afterwards and rejected if they
 * would smuggle a separator or a dot segment.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "err.h"
#include "http_internal.h"

void wp_http_router_init(wp_http_router *r)
{
    memset(r, 0, sizeof(*r));
}

static void route_free(wp_http_route *rt)
{
    free(rt->method);
    free(rt->pattern);
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i].text);
}

void wp_http_router_free(wp_http_router *r)
{
    for (size_t i = 0; i < r->n; i++)
        route_free(&r->routes[i]);
    free(r->routes);
    memset(r, 0, sizeof(*r));
}

static int is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int name_ok(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
              (p[i] >= '0' && p[i] <= '9') || p[i] == '_' || p[i] == '-'))
            return 0;
    return 1;
}

static int pattern_compile(wp_http_route *rt, const char *pattern)
{
    if (pattern[0] != '/')
        return WP_ERR_INVAL;
    const char *p = pattern + 1;
    rt->nsegs = 0;
    if (*p == '\0')
        return 0; /* "/" : zero segments */
    for (;;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (rt->nsegs >= WP_HTTP_MAX_SEGS)
            return WP_ERR_INVAL;
        wp_http_seg *sg = &rt->segs[rt->nsegs];
        if (n >= 2 && p[0] == '{' && p[n - 1] == '}') {
            const char *nm = p + 1;
            size_t nn = n - 2;
            sg->kind = WP_HTTP_SEG_PARAM;
            if (nn > 3 && memcmp(nm + nn - 3, "...", 3) == 0) {
                sg->kind = WP_HTTP_SEG_REST;
                nn -= 3;
                if (e)
                    return WP_ERR_INVAL; /* rest must be last */
            }
            if (!name_ok(nm, nn))
                return WP_ERR_INVAL;
            for (size_t i = 0; i < rt->nsegs; i++)
                if (rt->segs[i].kind != WP_HTTP_SEG_LIT && strlen(rt->segs[i].text) == nn &&
                    memcmp(rt->segs[i].text, nm, nn) == 0)
                    return WP_ERR_INVAL; /* duplicate name */
            sg->text = strndup(nm, nn);
        } else {
            if (n == 0 || memchr(p, '{', n) || memchr(p, '}', n))
                return WP_ERR_INVAL;
            sg->kind = WP_HTTP_SEG_LIT;
            sg->text = strndup(p, n);
        }
        if (!sg->text)
            return WP_ERR_NOMEM;
        rt->nsegs++;
        if (!e)
            break;
        p = e + 1;
        if (*p == '\0')
            return WP_ERR_INVAL; /* trailing slash patterns are not supported */
    }
    size_t np = 0;
    for (size_t i = 0; i < rt->nsegs; i++)
        np += rt->segs[i].kind != WP_HTTP_SEG_LIT;
    return np > WP_HTTP_MAX_PARAMS ? WP_ERR_INVAL : 0;
}

int wp_http_router_add(wp_http_router *r, const char *method, const char *pattern,
                       wp_http_handler h, void *ud, unsigned flags)
{
    if (!method || !*method || !pattern || !h || strlen(method) > 32)
        return WP_ERR_INVAL;
    if (flags & ~(WP_HTTP_ROUTE_STREAM_BODY | WP_HTTP_ROUTE_UPGRADE))
        return WP_ERR_INVAL;
    if (strcmp(method, "*") != 0)
        for (const char *m = method; *m; m++)
            if (!is_tchar(*m))
                return WP_ERR_INVAL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->routes[i].method, method) == 0 && strcmp(r->routes[i].pattern, pattern) == 0)
            return WP_ERR_EXISTS;
    wp_http_route rt;
    memset(&rt, 0, sizeof(rt));
    int rc = pattern_compile(&rt, pattern);
    if (rc == 0) {
        rt.method = strdup(method);
        rt.pattern = strdup(pattern);
        if (!rt.method || !rt.pattern)
            rc = WP_ERR_NOMEM;
    }
    if (rc == 0 && r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 16;
        wp_http_route *nr = realloc(r->routes, nc * sizeof(*nr));
        if (!nr)
            rc = WP_ERR_NOMEM;
        else {
            r->routes = nr;
            r->cap = nc;
        }
    }
    if (rc < 0) {
        route_free(&rt);
        return rc;
    }
    rt.h = h;
    rt.ud = ud;
    rt.flags = flags;
    r->routes[r->n++] = rt;
    return 0;
}

int wp_http_pct_decode(const char *s, size_t n, char *out, size_t cap, int plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return WP_ERR_INVAL;
            int hi = wp_hex_digit(s[i + 1]), lo = wp_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return WP_ERR_INVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c == '\0')
            return WP_ERR_INVAL;
        if (o + 1 >= cap)
            return WP_ERR_LIMIT;
        out[o++] = c;
    }
    if (cap == 0)
        return WP_ERR_LIMIT;
    out[o] = '\0';
    return (int)o;
}

/* Splits path into segment spans. Returns count or -1 if too many / not absolute. */
static int path_split(const char *path, const char **seg, size_t *len, size_t max)
{
    if (path[0] != '/')
        return -1;
    const char *p = path + 1;
    size_t n = 0;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *e = strchr(p, '/');
        if (n >= max)
            return -1;
        seg[n] = p;
        len[n] = e ? (size_t)(e - p) : strlen(p);
        n++;
        if (!e)
            break;
        p = e + 1;
    }
    return (int)n;
}

/* Compares specificity; >0 if a is more specific than b. */
static int route_cmp(const wp_http_route *a, const wp_http_route *b)
{
    size_t n = a->nsegs < b->nsegs ? a->nsegs : b->nsegs;
    for (size_t i = 0; i < n; i++) {
        int ka = a->segs[i].kind, kb = b->segs[i].kind;
        if (ka != kb)
            return kb - ka; /* LIT(0) beats PARAM(1) beats REST(2) */
    }
    /* equal prefix: the longer one only matched through an empty rest, so it is less specific */
    return (int)b->nsegs - (int)a->nsegs;
}

/* Is method already in the comma-separated allow list? */
static int allow_has(const char *allow, const char *method)
{
    size_t ml = strlen(method);
    for (const char *p = allow; *p;) {
        const char *e = strstr(p, ", ");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == ml && memcmp(p, method, n) == 0)
            return 1;
        if (!e)
            break;
        p = e + 2;
    }
    return 0;
}

/* Does rt's pattern match the split path? */
static int route_matches(const wp_http_route *rt, const char **seg, const size_t *len, int nseg)
{
    size_t i;
    for (i = 0; i < rt->nsegs; i++) {
        const wp_http_seg *sg = &rt->segs[i];
        if (sg->kind == WP_HTTP_SEG_REST)
            return 1;
        if ((int)i >= nseg)
            return 0;
        if (sg->kind == WP_HTTP_SEG_LIT) {
            if (strlen(sg->text) != len[i] || memcmp(sg->text, seg[i], len[i]) != 0)
                return 0;
        } else if (len[i] == 0) {
            return 0;
        }
    }
    return (int)i == nseg;
}

static int dot_segment(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

void wp_http_match_free(wp_http_match *m)
{
    for (size_t i = 0; i < m->nparams; i++)
        free(m->values[i]);
    m->nparams = 0;
}

int wp_http_router_match(const wp_http_router *r, const char *method, const char *path,
                         wp_http_match *m)
{
    memset(m, 0, sizeof(*m));
    const char *seg[WP_HTTP_MAX_SEGS + 1];
    size_t len[WP_HTTP_MAX_SEGS + 1];
    int nseg = path_split(path, seg, len, WP_HTTP_MAX_SEGS + 1);
    if (nseg < 0) {
        /* too deep for any non-rest pattern: only rest routes may still match */
        nseg = -1;
    }
    const wp_http_route *best = NULL, *best_any = NULL;
    int best_rank = 0;
    int deep = nseg < 0;
    if (deep) {
        nseg = WP_HTTP_MAX_SEGS + 1; /* the spans filled so far are valid */
        if (path[0] != '/')
            return WP_ERR_NOT_FOUND;
    }
    for (size_t i = 0; i < r->n; i++) {
        const wp_http_route *rt = &r->routes[i];
        if (deep && (rt->nsegs == 0 || rt->segs[rt->nsegs - 1].kind != WP_HTTP_SEG_REST))
            continue;
        if (!route_matches(rt, seg, len, nseg))
            continue;
        if (!best_any || route_cmp(rt, best_any) > 0)
            best_any = rt;
        /* exact method > GET serving HEAD > "*" among equally specific patterns */
        int mrank = strcmp(rt->method, method) == 0                                   ? 3
                    : (strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0) ? 2
                    : strcmp(rt->method, "*") == 0                                    ? 1
                                                                                      : 0;
        if (mrank) {
            int c = best ? route_cmp(rt, best) : 1;
            if (c > 0 || (c == 0 && mrank > best_rank)) {
                best = rt;
                best_rank = mrank;
            }
        }
    }
    if (!best_any)
        return WP_ERR_NOT_FOUND;
    if (!best) {
        /* 405: collect the methods of every route matching the path */
        size_t o = 0;
        for (size_t i = 0; i < r->n; i++) {
            const wp_http_route *rt = &r->routes[i];
            if (deep && (rt->nsegs == 0 || rt->segs[rt->nsegs - 1].kind != WP_HTTP_SEG_REST))
                continue;
            if (!route_matches(rt, seg, len, nseg))
                continue;
            size_t ml = strlen(rt->method);
            if (allow_has(m->allow, rt->method))
                continue;
            if (o + ml + 3 >= sizeof(m->allow))
                break;
            if (o) {
                memcpy(m->allow + o, ", ", 2);
                o += 2;
            }
            memcpy(m->allow + o, rt->method, ml);
            o += ml;
            m->allow[o] = '\0';
        }
        return WP_ERR_UNSUPPORTED;
    }
    for (size_t i = 0; i < best->nsegs; i++) {
        const wp_http_seg *sg = &best->segs[i];
        if (sg->kind == WP_HTTP_SEG_LIT)
            continue;
        const char *v;
        size_t vn;
        if (sg->kind == WP_HTTP_SEG_REST) {
            if ((int)i < nseg) {
                v = seg[i];
                vn = strlen(seg[i]);
            } else {
                v = "";
                vn = 0;
            }
        } else {
            v = seg[i];
            vn = len[i];
        }
        char *out = malloc(vn + 1);
        if (!out) {
            wp_http_match_free(m);
            return WP_ERR_NOMEM;
        }
        int dn = wp_http_pct_decode(v, vn, out, vn + 1, 0);
        if (dn < 0 || (sg->kind == WP_HTTP_SEG_PARAM &&
                       (memchr(out, '/', (size_t)dn) || dot_segment(out, (size_t)dn)))) {
            free(out);
            wp_http_match_free(m);
            return WP_ERR_INVAL;
        }
        if (sg->kind == WP_HTTP_SEG_REST) {
            /* a decoded rest may hold '/', but no decoded dot segment either */
            const char *q = out;
            for (;;) {
                const char *e = strchr(q, '/');
                size_t sn = e ? (size_t)(e - q) : strlen(q);
                if (dot_segment(q, sn)) {
                    free(out);
                    wp_http_match_free(m);
                    return WP_ERR_INVAL;
                }
                if (!e)
                    break;
                q = e + 1;
            }
        }
        m->names[m->nparams] = sg->text;
        m->values[m->nparams] = out;
        m->nparams++;
    }
    m->route = best;
    return 0;
}
