/*
 * proxy.c — HTTPS_PROXY / NO_PROXY egress for the tunnel dial (see proxy.h).
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "crypto.h"
#include "curl_uv.h"
#include "err.h"
#include "log.h"
#include "version.h"

typedef struct na_proxy_dial_req {
    struct na_proxy_dial_req *next;
    na_proxy *p;
    CURL *easy;
    wp_tls_conf *tls;
    char sni[256];
    uint64_t deadline;
    wp_conn_connect_cb cb;
    void *cud;
    char errbuf[CURL_ERROR_SIZE];
} na_proxy_dial_req;

struct na_proxy {
    uv_loop_t *loop;
    wp_curlm *curlm;
    char *url;     /* as configured (secret: holds the credentials) */
    char *noproxy; /* NULL: none */
    char display[NA_PROXY_URL_MAX + 16];
    int has_auth;
    int closing;
    na_proxy_dial_req *dials;
    size_t ndials;
    int failed;
    char failure[256];
    void (*closed_cb)(void *ud);
    void *closed_ud;
};

/* ---- environment ---- */

static const char *na_env_nonempty(wp_opts_getenv_fn getenv_fn, const char *name)
{
    const char *v = getenv_fn(name);
    return v && v[0] ? v : NULL;
}

void na_proxy_from_env(wp_opts_getenv_fn getenv_fn, const char **proxy, const char **noproxy)
{
    if (!getenv_fn)
        getenv_fn = wp_opts_getenv;
    if (proxy) {
        *proxy = na_env_nonempty(getenv_fn, "https_proxy");
        if (!*proxy)
            *proxy = na_env_nonempty(getenv_fn, "HTTPS_PROXY");
    }
    if (noproxy) {
        *noproxy = na_env_nonempty(getenv_fn, "no_proxy");
        if (!*noproxy)
            *noproxy = na_env_nonempty(getenv_fn, "NO_PROXY");
    }
}

/* ---- NO_PROXY ---- */

/* Parses an IP literal; returns AF_INET/AF_INET6 with the address in out (16 bytes), or 0. */
static int na_ip_parse(const char *s, unsigned char out[16])
{
    if (inet_pton(AF_INET, s, out) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, s, out) == 1)
        return AF_INET6;
    return 0;
}

/* host (an IP literal) inside "net/bits"? */
static int na_cidr_match(const char *net, const char *host)
{
    char addr[64];
    const char *slash = strchr(net, '/');
    size_t al = (size_t)(slash - net);
    if (al == 0 || al >= sizeof(addr))
        return 0;
    memcpy(addr, net, al);
    addr[al] = '\0';
    char *end = NULL;
    long bits = strtol(slash + 1, &end, 10);
    if (!end || *end || end == slash + 1)
        return 0;
    unsigned char a[16], h[16];
    int fa = na_ip_parse(addr, a), fh = na_ip_parse(host, h);
    if (!fa || fa != fh || bits < 0 || bits > (fa == AF_INET ? 32 : 128))
        return 0;
    size_t full = (size_t)bits / 8;
    if (memcmp(a, h, full) != 0)
        return 0;
    unsigned rest = (unsigned)bits % 8;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xffu << (8 - rest));
    return (a[full] & mask) == (h[full] & mask);
}

/* One NO_PROXY entry (already trimmed, NUL-terminated, writable) against host:port. */
static int na_noproxy_entry(char *e, const char *host, int port)
{
    if (strcmp(e, "*") == 0)
        return 1;
    /* optional :port — "[v6]:port", "name:port", "v4:port"; a bare v6 literal has no port */
    int want_port = 0;
    if (e[0] == '[') {
        char *close = strchr(e, ']');
        if (!close)
            return 0;
        if (close[1] == ':')
            want_port = atoi(close + 2);
        else if (close[1] != '\0')
            return 0;
        *close = '\0';
        e++;
    } else {
        char *colon = strchr(e, ':');
        if (colon && !strchr(colon + 1, ':')) {
            want_port = atoi(colon + 1);
            *colon = '\0';
        }
    }
    if (want_port && want_port != port)
        return 0;
    if (e[0] == '.')
        e++;
    size_t el = strlen(e);
    while (el > 0 && e[el - 1] == '.')
        e[--el] = '\0';
    if (el == 0)
        return 0;
    unsigned char tmp[16];
    if (na_ip_parse(host, tmp)) {
        if (strchr(e, '/'))
            return na_cidr_match(e, host);
        unsigned char ea[16];
        int f = na_ip_parse(e, ea);
        return f && f == na_ip_parse(host, tmp) && memcmp(ea, tmp, f == AF_INET ? 4 : 16) == 0;
    }
    size_t hl = strlen(host);
    while (hl > 0 && host[hl - 1] == '.')
        hl--;
    if (hl == el)
        return strncasecmp(host, e, el) == 0;
    return hl > el && host[hl - el - 1] == '.' && strncasecmp(host + hl - el, e, el) == 0;
}

int na_proxy_excluded(const char *noproxy, const char *host, int port)
{
    if (!noproxy || !host || !host[0])
        return 0;
    const char *p = noproxy;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, ", \t");
        if (n > 0 && n < 300) {
            char e[300];
            memcpy(e, p, n);
            e[n] = '\0';
            if (na_noproxy_entry(e, host, port))
                return 1;
        }
        p += n;
    }
    return 0;
}

/* ---- the dialer ---- */

int na_proxy_new(uv_loop_t *loop, const char *proxy_url, const char *noproxy, na_proxy **out,
                 char *err, size_t cap)
{
    if (!loop || !proxy_url || !out)
        return WP_ERR_INVAL;
    if (strlen(proxy_url) > NA_PROXY_URL_MAX) {
        snprintf(err, cap, "HTTPS_PROXY is longer than %d bytes", NA_PROXY_URL_MAX);
        return WP_ERR_CONFIG;
    }
    na_proxy *p = calloc(1, sizeof(*p));
    if (!p)
        return WP_ERR_NOMEM;
    p->loop = loop;
    int rc = WP_ERR_CONFIG;
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *pass = NULL, *path = NULL,
         *query = NULL;
    CURLU *u = curl_url();
    size_t ul = strlen(proxy_url) + 8;
    p->url = malloc(ul);
    if (!u || !p->url) {
        rc = WP_ERR_NOMEM;
        goto out;
    }
    /* curl reads a scheme-less proxy as http:// */
    snprintf(p->url, ul, "%s%s", strstr(proxy_url, "://") ? "" : "http://", proxy_url);
    if (curl_url_set(u, CURLUPART_URL, p->url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
        snprintf(err, cap,
                 "HTTPS_PROXY is not a valid proxy URL (expected http://[user:pass@]host:port)");
        goto out;
    }
    static const char *const schemes[] = {"http",    "https",  "socks4",
                                          "socks4a", "socks5", "socks5h"};
    int known = 0;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        known |= strcasecmp(scheme, schemes[i]) == 0;
    if (!known) {
        snprintf(err, cap,
                 "HTTPS_PROXY: unsupported proxy scheme \"%.16s\" (http, https, socks4, "
                 "socks4a, socks5, socks5h)",
                 scheme);
        goto out;
    }
    if ((curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0) ||
        curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK) {
        snprintf(err, cap, "HTTPS_PROXY: a proxy URL has no path or query");
        goto out;
    }
    CURLUcode pc = curl_url_get(u, CURLUPART_PORT, &port, 0);
    snprintf(p->display, sizeof(p->display), "%s://%s%s%s", scheme, host,
             pc == CURLUE_OK ? ":" : "", pc == CURLUE_OK ? port : "");
    if (curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE) == CURLUE_OK && user[0]) {
        p->has_auth = 1;
        (void)wp_log_secret_add(user); /* short ones are refused; they are never logged anyway */
        if (curl_url_get(u, CURLUPART_PASSWORD, &pass, CURLU_URLDECODE) == CURLUE_OK && pass[0])
            (void)wp_log_secret_add(pass);
    }
    if (p->has_auth)
        (void)wp_log_secret_add(p->url);
    if (noproxy && !(p->noproxy = strdup(noproxy))) {
        rc = WP_ERR_NOMEM;
        goto out;
    }
    rc = wp_curlm_new(loop, &p->curlm);
out:
    if (user)
        wp_secure_zero(user, strlen(user));
    if (pass)
        wp_secure_zero(pass, strlen(pass));
    curl_free(scheme), curl_free(host), curl_free(port), curl_free(user), curl_free(pass);
    curl_free(path), curl_free(query);
    curl_url_cleanup(u);
    if (rc != 0) {
        if (p->url) {
            wp_secure_zero(p->url, strlen(p->url));
            free(p->url);
        }
        free(p->noproxy);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

const char *na_proxy_display(const na_proxy *p)
{
    return p ? p->display : "";
}

int na_proxy_has_auth(const na_proxy *p)
{
    return p && p->has_auth;
}

int na_proxy_applies(const na_proxy *p, const char *host, int port)
{
    return p && !na_proxy_excluded(p->noproxy, host, port);
}

int na_proxy_take_failure(na_proxy *p, char *msg, size_t cap)
{
    if (!p || !p->failed)
        return 0;
    p->failed = 0;
    if (msg && cap)
        snprintf(msg, cap, "%s", p->failure);
    return 1;
}

static void na_proxy_unlink(na_proxy *p, na_proxy_dial_req *d)
{
    for (na_proxy_dial_req **pp = &p->dials; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            p->ndials--;
            return;
        }
    }
}

static void na_proxy_fail(na_proxy_dial_req *d, int status, const char *why)
{
    na_proxy *p = d->p;
    p->failed = 1;
    snprintf(p->failure, sizeof(p->failure), "%s", why);
    wp_conn_connect_cb cb = d->cb;
    void *cud = d->cud;
    free(d);
    cb(NULL, status, cud);
}

static void na_proxy_done(CURL *easy, CURLcode result, void *ud)
{
    na_proxy_dial_req *d = ud;
    na_proxy *p = d->p;
    na_proxy_unlink(p, d);
    if (result != CURLE_OK) {
        long code = 0;
        (void)curl_easy_getinfo(easy, CURLINFO_HTTP_CONNECTCODE, &code);
        char why[256];
        if (code == 407 || code == 401) /* 407 per RFC 9110; tinyproxy's BasicAuth answers 401 */
            snprintf(why, sizeof(why), "proxy authentication failed (%ld)", code);
        else if (code >= 300)
            snprintf(why, sizeof(why), "proxy refused the tunnel (%ld)", code);
        else if (result == CURLE_OPERATION_TIMEDOUT)
            snprintf(why, sizeof(why), "proxy did not answer in time");
        else
            snprintf(why, sizeof(why), "proxy connect failed: %.200s",
                     d->errbuf[0] ? d->errbuf : curl_easy_strerror(result));
        curl_easy_cleanup(easy);
        na_proxy_fail(d, result == CURLE_OPERATION_TIMEDOUT ? WP_ERR_TIMEOUT : WP_ERR_IO, why);
        return;
    }
    curl_socket_t sock = CURL_SOCKET_BAD;
    int fd = -1;
    if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &sock) == CURLE_OK &&
        sock != CURL_SOCKET_BAD)
        fd = fcntl(sock, F_DUPFD_CLOEXEC, 0); /* ours: curl closes its own below */
    wp_curlm_remove(p->curlm, easy);
    curl_easy_cleanup(easy);
    if (fd < 0) {
        na_proxy_fail(d, WP_ERR_IO, "proxy connect failed: no socket");
        return;
    }
    uint64_t now = uv_now(p->loop);
    int left = d->deadline > now ? (int)(d->deadline - now) : 1;
    wp_conn_connect_cb cb = d->cb;
    void *cud = d->cud;
    int rc = wp_conn_open_fd(p->loop, fd, d->tls, d->sni, left, NULL, cb, cud);
    free(d);
    if (rc < 0)
        cb(NULL, rc, cud); /* from a loop callback: allowed by the dial contract */
}

int na_proxy_dial(void *ud, uv_loop_t *loop, const char *host, int port, wp_tls_conf *tls,
                  const char *server_name, int timeout_ms, wp_conn_connect_cb cb, void *cud)
{
    na_proxy *p = ud;
    if (!p || loop != p->loop || !host || !host[0] || port <= 0 || port > 65535 ||
        timeout_ms <= 0 || !cb || strlen(host) > 253)
        return WP_ERR_INVAL;
    if (p->closing)
        return WP_ERR_STATE;
    if (p->ndials >= NA_PROXY_DIALS_MAX)
        return WP_ERR_LIMIT;
    na_proxy_dial_req *d = calloc(1, sizeof(*d));
    if (!d)
        return WP_ERR_NOMEM;
    d->p = p;
    d->tls = tls;
    snprintf(d->sni, sizeof(d->sni), "%s", server_name ? server_name : host);
    d->cb = cb;
    d->cud = cud;
    d->deadline = uv_now(loop) + (uint64_t)timeout_ms;
    d->easy = curl_easy_init();
    if (!d->easy) {
        free(d);
        return WP_ERR_NOMEM;
    }
    char url[300], ua[64];
    int v6 = strchr(host, ':') != NULL;
    snprintf(url, sizeof(url), "http://%s%s%s:%d/", v6 ? "[" : "", host, v6 ? "]" : "", port);
    snprintf(ua, sizeof(ua), "wolfpack-agent/%s", wp_version());
    CURL *e = d->easy;
    int ok = curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PROXY, p->url) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_NOPROXY, "") == CURLE_OK && /* decided by us */
             curl_easy_setopt(e, CURLOPT_HTTPPROXYTUNNEL, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_USERAGENT, ua) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf) == CURLE_OK;
    int rc = ok ? wp_curlm_add_connect_only(p->curlm, e, na_proxy_done, d) : WP_ERR_INTERNAL;
    if (rc != 0) {
        curl_easy_cleanup(e);
        free(d);
        return rc;
    }
    d->next = p->dials;
    p->dials = d;
    p->ndials++;
    return 0;
}

static void na_proxy_closed(void *ud)
{
    na_proxy *p = ud;
    void (*cb)(void *) = p->closed_cb;
    void *cud = p->closed_ud;
    wp_secure_zero(p->url, strlen(p->url));
    free(p->url);
    free(p->noproxy);
    free(p);
    if (cb)
        cb(cud);
}

void na_proxy_close(na_proxy *p, void (*closed)(void *ud), void *ud)
{
    if (!p || p->closing)
        return;
    p->closing = 1;
    p->closed_cb = closed;
    p->closed_ud = ud;
    while (p->dials) {
        na_proxy_dial_req *d = p->dials;
        p->dials = d->next;
        p->ndials--;
        wp_curlm_remove(p->curlm, d->easy);
        curl_easy_cleanup(d->easy);
        wp_conn_connect_cb cb = d->cb;
        void *cud = d->cud;
        free(d);
        cb(NULL, WP_ERR_CLOSED, cud);
    }
    wp_curlm_close(p->curlm, na_proxy_closed, p);
}

int na_proxy_setup(uv_loop_t *loop, const char *tunnel_url, wp_opts_getenv_fn getenv_fn,
                   na_proxy **out, char *err, size_t cap)
{
    if (!loop || !tunnel_url || !out)
        return WP_ERR_INVAL;
    *out = NULL;
    const char *proxy = NULL, *noproxy = NULL;
    na_proxy_from_env(getenv_fn, &proxy, &noproxy);
    if (!proxy)
        return 0;
    char *host = NULL, *port = NULL;
    int portnum = 443;
    CURLU *u = curl_url();
    if (!u)
        return WP_ERR_NOMEM;
    int rc = 0;
    if (curl_url_set(u, CURLUPART_URL, tunnel_url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, cap, "--url: cannot read the control plane's host");
        rc = WP_ERR_CONFIG;
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
        portnum = atoi(port);
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') { /* NO_PROXY compares bare literals */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    if (na_proxy_excluded(noproxy, host, portnum)) {
        wp_log_info("HTTPS_PROXY is set but NO_PROXY excludes the control plane: dialing directly",
                    WP_LS("host", host));
        goto out;
    }
    rc = na_proxy_new(loop, proxy, noproxy, out, err, cap);
    if (rc == 0)
        wp_log_info("egress through an HTTP proxy (CONNECT)",
                    WP_LS("proxy", na_proxy_display(*out)),
                    WP_LS("auth", na_proxy_has_auth(*out) ? "basic" : "none"));
out:
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}
