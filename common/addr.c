/*
 * addr.c — literal address parsing/formatting for listeners and dialers (see addr.h).
 *
 * Pure functions: inet_pton/inet_ntop only, never getaddrinfo.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "err.h"

/* Parses a decimal port "0".."65535" spanning exactly [p, p+n). Returns the port or -1. */
static int addr_port_parse(const char *p, size_t n)
{
    if (n == 0 || n > 5)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v > 65535 ? -1 : v;
}

/* Splits s into host span and port span. Brackets are stripped from v6 hosts.
 * has_port is set when a ":port" suffix exists. Returns 0 or WP_ERR_INVAL. */
static int addr_split(const char *s, const char **h, size_t *hn, const char **pp, size_t *pn,
                      int *bracketed)
{
    size_t n = strlen(s);
    *pp = NULL;
    *pn = 0;
    *bracketed = 0;
    if (n == 0)
        return WP_ERR_INVAL;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return WP_ERR_INVAL;
        *h = s + 1;
        *hn = (size_t)(close - s - 1);
        *bracketed = 1;
        const char *rest = close + 1;
        if (*rest == '\0')
            return 0;
        if (*rest != ':')
            return WP_ERR_INVAL;
        *pp = rest + 1;
        *pn = strlen(rest + 1);
        if (*pn == 0)
            return WP_ERR_INVAL;
        return 0;
    }
    const char *first = memchr(s, ':', n);
    const char *last = strrchr(s, ':');
    if (first && first != last) {
        /* several colons and no brackets: a bare IPv6 literal without port */
        *h = s;
        *hn = n;
        return 0;
    }
    if (!last) {
        *h = s;
        *hn = n;
        return 0;
    }
    *h = s;
    *hn = (size_t)(last - s);
    *pp = last + 1;
    *pn = strlen(last + 1);
    if (*pn == 0)
        return WP_ERR_INVAL;
    return 0;
}

int wp_addr_parse(const char *s, int default_port, struct sockaddr_storage *out, socklen_t *len)
{
    if (!s || !out || !len || default_port > 65535)
        return WP_ERR_INVAL;
    const char *h, *pp;
    size_t hn, pn;
    int bracketed;
    if (addr_split(s, &h, &hn, &pp, &pn, &bracketed) < 0)
        return WP_ERR_INVAL;
    int port = default_port;
    if (pp) {
        port = addr_port_parse(pp, pn);
        if (port < 0)
            return WP_ERR_INVAL;
    }
    if (port < 0)
        return WP_ERR_INVAL;
    char host[64];
    if (hn >= sizeof(host) || memchr(h, '\0', hn))
        return WP_ERR_INVAL;
    memcpy(host, h, hn);
    host[hn] = '\0';

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (!bracketed) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        const char *lit = host;
        if (hn == 0)
            lit = "0.0.0.0";
        else if (strcmp(host, "localhost") == 0)
            lit = "127.0.0.1";
        if (!pp && hn == 0)
            return WP_ERR_INVAL;
        if (inet_pton(AF_INET, lit, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)port);
            *out = ss;
            *len = (socklen_t)sizeof(struct sockaddr_in);
            return 0;
        }
        if (pp)
            return WP_ERR_INVAL; /* "::1:80" style without brackets is ambiguous */
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (hn == 0 || inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
        return WP_ERR_INVAL;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    *out = ss;
    *len = (socklen_t)sizeof(struct sockaddr_in6);
    return 0;
}

int wp_addr_format(const struct sockaddr *sa, char *out, size_t cap)
{
    if (!sa || !out)
        return WP_ERR_INVAL;
    char ip[INET6_ADDRSTRLEN];
    int port, n;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        if (!inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip)))
            return WP_ERR_INVAL;
        port = ntohs(sin->sin_port);
        n = snprintf(out, cap, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)))
            return WP_ERR_INVAL;
        port = ntohs(sin6->sin6_port);
        n = snprintf(out, cap, "[%s]:%d", ip, port);
    } else {
        return WP_ERR_INVAL;
    }
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            out[0] = '\0';
        return WP_ERR_LIMIT;
    }
    return n;
}

static int addr_hostname_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_'))
            return 0;
    }
    return h[0] != '-' && h[0] != '.';
}

int wp_hostport_split(const char *s, char *host, size_t hcap, int *port)
{
    if (!s || !host || !port || hcap == 0)
        return WP_ERR_INVAL;
    const char *h, *pp;
    size_t hn, pn;
    int bracketed;
    if (addr_split(s, &h, &hn, &pp, &pn, &bracketed) < 0 || !pp)
        return WP_ERR_INVAL;
    int p = addr_port_parse(pp, pn);
    if (p <= 0)
        return WP_ERR_INVAL;
    if (hn == 0 || memchr(h, '\0', hn))
        return WP_ERR_INVAL;
    char tmp[256];
    if (hn >= sizeof(tmp))
        return WP_ERR_INVAL;
    memcpy(tmp, h, hn);
    tmp[hn] = '\0';
    if (bracketed) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return WP_ERR_INVAL;
    } else if (!addr_hostname_ok(tmp, hn)) {
        return WP_ERR_INVAL;
    }
    if (hn >= hcap)
        return WP_ERR_LIMIT;
    memcpy(host, tmp, hn + 1);
    *port = p;
    return 0;
}
