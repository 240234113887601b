/*
 * http_internal.h — private interface between http_server.c and http_router.c.
 *
 * The router is pure (no I/O): it compiles path patterns and matches raw
 * request paths, %-decoding parameters. Tests drive it directly.
 */
#ifndef WP_HTTP_INTERNAL_H
#define WP_HTTP_INTERNAL_H

#include <stddef.h>

#include "http.h"

#define WP_HTTP_MAX_PARAMS 16
#define WP_HTTP_MAX_SEGS   32

typedef struct wp_http_seg {
    char *text; /* literal text, or the param name */
    int kind;   /* WP_HTTP_SEG_* */
} wp_http_seg;

enum { WP_HTTP_SEG_LIT = 0, WP_HTTP_SEG_PARAM = 1, WP_HTTP_SEG_REST = 2 };

typedef struct wp_http_route {
    char *method; /* "GET", ..., or "*" */
    char *pattern;
    wp_http_seg segs[WP_HTTP_MAX_SEGS];
    size_t nsegs;
    wp_http_handler h;
    void *ud;
    unsigned flags;
} wp_http_route;

typedef struct wp_http_router {
    wp_http_route *routes;
    size_t n, cap;
} wp_http_router;

typedef struct wp_http_match {
    const wp_http_route *route;
    size_t nparams;
    const char *names[WP_HTTP_MAX_PARAMS];
    char *values[WP_HTTP_MAX_PARAMS]; /* malloc'd, decoded */
    char allow[256];                  /* for 405: "GET, POST" */
} wp_http_match;

void wp_http_router_init(wp_http_router *r);
void wp_http_router_free(wp_http_router *r);
/* Same contract as wp_http_server_route. */
int wp_http_router_add(wp_http_router *r, const char *method, const char *pattern,
                       wp_http_handler h, void *ud, unsigned flags);
/*
 * Matches a raw path (no query). GET routes also serve HEAD (an explicit HEAD route wins). Returns
 * 0 (m->route and params set; free with wp_http_match_free), WP_ERR_NOT_FOUND (no pattern matches),
 * WP_ERR_UNSUPPORTED (a pattern matches but not for this method; m->allow lists the methods),
 * WP_ERR_INVAL (the best route's param has bad %-encoding or decodes to "/",
 * NUL, "." or ".."), WP_ERR_NOMEM.
 */
int wp_http_router_match(const wp_http_router *r, const char *method, const char *path,
                         wp_http_match *m);
void wp_http_match_free(wp_http_match *m);

/*
 * %-decodes n bytes of s into out (cap bytes incl. NUL); plus_space maps '+' to ' '.
 * Returns the decoded length, WP_ERR_INVAL (bad escape or decoded NUL) or WP_ERR_LIMIT.
 */
int wp_http_pct_decode(const char *s, size_t n, char *out, size_t cap, int plus_space);

#endif
