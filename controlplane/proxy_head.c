/*
 * proxy_head.c — the upstream response head arena of the proxy (see proxy_head.h).
 */
#include "proxy_head.h"

#include <string.h>
#include <strings.h>

#include "err.h"

void cp_proxy_head_init(cp_proxy_head *h)
{
    memset(h, 0, sizeof(*h));
    wp_buf_init(&h->hdr, CP_PROXY_RHDR_MAX);
}

void cp_proxy_head_free(cp_proxy_head *h)
{
    wp_buf_free(&h->hdr);
    h->count = 0;
    h->in_field = 0;
}

void cp_proxy_head_reset(cp_proxy_head *h)
{
    wp_buf_reset(&h->hdr);
    h->count = 0;
    h->in_field = 0;
}

static int head_fail(cp_proxy_head *h, int err, const char *why)
{
    if (!h->err)
        h->err = why;
    return err;
}

static int head_put(cp_proxy_head *h, const void *p, size_t n)
{
    return wp_buf_put(&h->hdr, p, n) == 0
               ? 0
               : head_fail(h, WP_ERR_LIMIT, "response headers too large");
}

int cp_proxy_head_field(cp_proxy_head *h, const char *at, size_t n)
{
    if (n == 0)
        return 0;
    if (!h->in_field) {
        if (h->count >= CP_PROXY_RHDR_COUNT)
            return head_fail(h, WP_ERR_LIMIT, "too many response headers");
        h->count++;
        h->in_field = 1;
    }
    return head_put(h, at, n);
}

int cp_proxy_head_field_done(cp_proxy_head *h)
{
    if (!h->in_field) /* llhttp lets an empty name (": x") through */
        return head_fail(h, WP_ERR_MALFORMED, "empty response header name");
    h->in_field = 0;
    return head_put(h, "", 1);
}

int cp_proxy_head_value(cp_proxy_head *h, const char *at, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (at[i] == '\0' || at[i] == '\r' || at[i] == '\n')
            return head_fail(h, WP_ERR_MALFORMED, "invalid response header value");
    return head_put(h, at, n);
}

int cp_proxy_head_value_done(cp_proxy_head *h)
{
    return head_put(h, "", 1);
}

const char *cp_proxy_head_next(const cp_proxy_head *h, size_t *off, const char **v)
{
    const char *base = (const char *)wp_buf_ptr(&h->hdr);
    size_t len = wp_buf_len(&h->hdr);
    if (!base || *off >= len)
        return NULL;
    const char *name = base + *off;
    const char *ne = memchr(name, '\0', len - *off);
    if (!ne)
        return NULL; /* a name still arriving */
    const char *val = ne + 1;
    size_t vo = (size_t)(val - base);
    const char *ve = vo < len ? memchr(val, '\0', len - vo) : NULL;
    if (!ve)
        return NULL; /* a value still arriving */
    *v = val;
    *off = (size_t)(ve - base) + 1;
    return name;
}

const char *cp_proxy_head_get(const cp_proxy_head *h, const char *name)
{
    size_t off = 0;
    const char *v, *n;
    while ((n = cp_proxy_head_next(h, &off, &v)) != NULL)
        if (strcasecmp(n, name) == 0)
            return v;
    return NULL;
}
