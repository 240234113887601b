/*
 * fuzz_opts_addr.c — fuzz target for the operator-facing string parsers:
 * wp_addr_parse / wp_addr_format / wp_hostport_split (common/addr.h),
 * wp_tls_pin_parse / wp_tls_pin_format (common/tls.h) and wp_opts_parse
 * (common/opts.h).
 *
 * The input up to the first NUL is one string for the address and pin
 * parsers; split at '\n' it is also an argv, and after the first NUL come
 * NAME=VALUE environment lines. Invariants checked:
 *   - wp_addr_parse: only 0 / WP_ERR_INVAL; outputs untouched on failure; a
 *     parsed address formats (within WP_ADDR_STRLEN) to text that parses back
 *     to the same address; an explicit port is kept;
 *   - wp_hostport_split: host non-empty, bracket-free unless IPv6, port
 *     1..65535; "host:port" / "[host]:port" rebuilt from the result splits to
 *     the same; a small host buffer gives WP_ERR_LIMIT exactly when the host
 *     does not fit;
 *   - wp_tls_pin_parse: success formats back to the lowercase input, failure
 *     leaves the output untouched; format then parse is the identity;
 *   - wp_opts_parse: documented codes only; on success every value is within
 *     its type's range and points into argv/env; on failure a one-line message
 *     that fits the buffer (also a tiny one).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <string.h>

#include "addr.h"
#include "err.h"
#include "fuzz.h"
#include "opts.h"
#include "tls.h"

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)(const void *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)(const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)(const void *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)(const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static void check_addr(const char *s)
{
    static const int defaults[] = {-1, 0, 8443};
    for (size_t d = 0; d < sizeof(defaults) / sizeof(defaults[0]); d++) {
        struct sockaddr_storage ss;
        socklen_t len = 12345;
        memset(&ss, 0x5a, sizeof(ss));
        int rc = wp_addr_parse(s, defaults[d], &ss, &len);
        WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_INVAL);
        if (rc != 0) {
            unsigned char pat[sizeof(ss)];
            memset(pat, 0x5a, sizeof(pat));
            WP_FUZZ_CHECK(len == 12345 && memcmp(&ss, pat, sizeof(ss)) == 0);
            continue;
        }
        WP_FUZZ_CHECK((ss.ss_family == AF_INET && len == sizeof(struct sockaddr_in)) ||
                      (ss.ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6)));
        char text[WP_ADDR_STRLEN];
        int n = wp_addr_format((const struct sockaddr *)&ss, text, sizeof(text));
        WP_FUZZ_CHECK(n > 0 && (size_t)n == strlen(text));
        struct sockaddr_storage back;
        socklen_t blen;
        WP_FUZZ_CHECK(wp_addr_parse(text, -1, &back, &blen) == 0);
        WP_FUZZ_CHECK(blen == len && same_addr(&ss, &back));
        /* too small a buffer: WP_ERR_LIMIT and "" */
        char small[4];
        WP_FUZZ_CHECK(wp_addr_format((const struct sockaddr *)&ss, small, sizeof(small)) ==
                          WP_ERR_LIMIT &&
                      small[0] == '\0');
        /* the port is the explicit one when given, else the default */
        int port = ntohs(ss.ss_family == AF_INET
                             ? ((const struct sockaddr_in *)(const void *)&ss)->sin_port
                             : ((const struct sockaddr_in6 *)(const void *)&ss)->sin6_port);
        const char *colon = strrchr(s, ':');
        const char *rb = strrchr(s, ']');
        int has_port = colon && (s[0] == '[' ? rb && colon > rb : strchr(s, ':') == colon);
        if (has_port)
            WP_FUZZ_CHECK(port == atoi(colon + 1));
        else
            WP_FUZZ_CHECK(port == defaults[d]);
    }
}

static void check_hostport(const char *s)
{
    char host[256], small[8];
    int port = -7, sport = -7;
    int rc = wp_hostport_split(s, host, sizeof(host), &port);
    int rs = wp_hostport_split(s, small, sizeof(small), &sport);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_INVAL || rc == WP_ERR_LIMIT);
    if (rc != 0) {
        WP_FUZZ_CHECK(port == -7);
        WP_FUZZ_CHECK(rs == rc);
        return;
    }
    size_t hn = strlen(host);
    WP_FUZZ_CHECK(hn > 0 && port >= 1 && port <= 65535);
    if (hn < sizeof(small))
        WP_FUZZ_CHECK(rs == 0 && sport == port && strcmp(small, host) == 0);
    else
        WP_FUZZ_CHECK(rs == WP_ERR_LIMIT && sport == -7);
    int v6 = strchr(host, ':') != NULL;
    if (v6) {
        struct in6_addr a;
        WP_FUZZ_CHECK(inet_pton(AF_INET6, host, &a) == 1);
    } else {
        for (const char *c = host; *c; c++)
            WP_FUZZ_CHECK(isalnum((unsigned char)*c) || *c == '.' || *c == '-' || *c == '_');
    }
    char again[300];
    snprintf(again, sizeof(again), v6 ? "[%s]:%d" : "%s:%d", host, port);
    char host2[256];
    int port2 = 0;
    WP_FUZZ_CHECK(wp_hostport_split(again, host2, sizeof(host2), &port2) == 0);
    WP_FUZZ_CHECK(port2 == port && strcmp(host2, host) == 0);
}

static void check_pin(const char *s, const uint8_t *raw, size_t rawn)
{
    uint8_t pin[WP_SHA256_LEN], pat[WP_SHA256_LEN];
    memset(pin, 0xa5, sizeof(pin));
    memset(pat, 0xa5, sizeof(pat));
    int rc = wp_tls_pin_parse(s, pin);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_INVAL);
    if (rc != 0) {
        WP_FUZZ_CHECK(memcmp(pin, pat, sizeof(pin)) == 0);
    } else {
        char out[80], lower[80];
        wp_tls_pin_format(pin, out, sizeof(out));
        size_t n = strlen(s);
        WP_FUZZ_CHECK(n == 7 + 2 * WP_SHA256_LEN);
        for (size_t i = 0; i <= n; i++)
            lower[i] = (char)tolower((unsigned char)s[i]);
        WP_FUZZ_CHECK(strcmp(out, lower) == 0);
    }
    /* format then parse: the identity on any 32 bytes */
    uint8_t any[WP_SHA256_LEN] = {0};
    memcpy(any, raw, rawn < sizeof(any) ? rawn : sizeof(any));
    char text[80];
    wp_tls_pin_format(any, text, sizeof(text));
    uint8_t back[WP_SHA256_LEN];
    WP_FUZZ_CHECK(wp_tls_pin_parse(text, back) == 0 && memcmp(back, any, sizeof(any)) == 0);
    char cut[10];
    wp_tls_pin_format(any, cut, sizeof(cut)); /* truncates, always terminated */
    WP_FUZZ_CHECK(strlen(cut) == sizeof(cut) - 1 && strncmp(cut, text, sizeof(cut) - 1) == 0);
}

/* ---- options ---- */

#define MAX_ARGS 24
#define MAX_ENV  8

static struct {
    char *name[MAX_ENV];
    char *value[MAX_ENV];
    size_t n;
} env;

static const char *fuzz_getenv(const char *name)
{
    for (size_t i = 0; i < env.n; i++)
        if (strcmp(env.name[i], name) == 0)
            return env.value[i];
    return NULL;
}

static int points_into(const char *p, char *const *strs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strs[i] && p >= strs[i] && p <= strs[i] + strlen(strs[i]))
            return 1;
    return 0;
}

static void check_opts(char *args, size_t args_len, char *envs, size_t envs_len)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = (char *)"wolfpack-fuzz";
    for (char *p = args; p && p < args + args_len && argc < MAX_ARGS;) {
        char *nl = memchr(p, '\n', (size_t)(args + args_len - p));
        if (nl)
            *nl = '\0';
        argv[argc++] = p;
        p = nl ? nl + 1 : NULL;
    }
    argv[argc] = NULL;
    env.n = 0;
    for (char *p = envs; p && p < envs + envs_len && env.n < MAX_ENV;) {
        char *nl = memchr(p, '\n', (size_t)(envs + envs_len - p));
        if (nl)
            *nl = '\0';
        char *eq = strchr(p, '=');
        if (eq) {
            *eq = '\0';
            env.name[env.n] = p;
            env.value[env.n] = eq + 1;
            env.n++;
        }
        p = nl ? nl + 1 : NULL;
    }

    const char *listen = NULL, *token = NULL;
    int verbose = -1, insecure = -1;
    long long port = -99, sessions = -99;
    wp_strlist labels;
    memset(&labels, 0, sizeof(labels));
    const wp_opt opts[] = {
        {"listen", 'l', WP_OPT_STRING, &listen, "WOLFPACK_LISTEN", "ADDR", "listen", NULL, 0, 0},
        {"token", 't', WP_OPT_STRING, &token, "WOLFPACK_TOKEN", "T", "secret", NULL, 0, 0},
        {"verbose", 'v', WP_OPT_BOOL, &verbose, "WOLFPACK_VERBOSE", NULL, "log more", NULL, 0, 0},
        {"insecure-skip-verify", 0, WP_OPT_BOOL, &insecure, NULL, NULL, "no", NULL, 0, 0},
        {"port", 'p', WP_OPT_INT, &port, "WOLFPACK_PORT", "N", "port", NULL, 1, 65535},
        {"max-sessions", 0, WP_OPT_INT, &sessions, "WOLFPACK_MAX_SESSIONS", "N", "n", NULL, 0, 0},
        {"label", 'L', WP_OPT_LIST, &labels, "WOLFPACK_LABELS", "K=V", "labels", NULL, 0, 0},
    };
    const size_t nopts = sizeof(opts) / sizeof(opts[0]);
    const char *pos[4];
    size_t npos = 99;
    char err[128];
    int rc =
        wp_opts_parse(opts, nopts, argc, argv, 1, fuzz_getenv, pos, 4, &npos, err, sizeof(err));
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_INVAL || rc == WP_ERR_NOMEM);
    WP_FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL && strchr(err, '\n') == NULL);
    char *all[MAX_ARGS + MAX_ENV];
    size_t nall = 0;
    for (int i = 0; i < argc; i++)
        all[nall++] = argv[i];
    for (size_t i = 0; i < env.n; i++)
        all[nall++] = env.value[i];
    if (rc == 0) {
        WP_FUZZ_CHECK(err[0] == '\0');
        WP_FUZZ_CHECK(npos <= 4);
        for (size_t i = 0; i < npos; i++)
            WP_FUZZ_CHECK(points_into(pos[i], all, nall));
        WP_FUZZ_CHECK(!listen || (*listen && points_into(listen, all, nall)));
        WP_FUZZ_CHECK(!token || (*token && points_into(token, all, nall)));
        WP_FUZZ_CHECK(verbose == -1 || verbose == 0 || verbose == 1);
        WP_FUZZ_CHECK(insecure == -1 || insecure == 0 || insecure == 1);
        WP_FUZZ_CHECK(port == -99 || (port >= 1 && port <= 65535));
        WP_FUZZ_CHECK(labels.n <= WP_STRLIST_MAX);
        const char *lenv = fuzz_getenv("WOLFPACK_LABELS");
        for (size_t i = 0; i < labels.n; i++)
            WP_FUZZ_CHECK(labels.items[i][0] != '\0' &&
                          (points_into(labels.items[i], all, nall) ||
                           (labels.env_copy && lenv && labels.items[i] >= labels.env_copy &&
                            labels.items[i] < labels.env_copy + strlen(lenv))));
    } else {
        WP_FUZZ_CHECK(err[0] != '\0');
    }
    wp_strlist_free(&labels);

    /* the same parse into a tiny message buffer: same verdict, message truncated safely */
    memset(&labels, 0, sizeof(labels));
    listen = token = NULL;
    char tiny[6];
    int rc2 =
        wp_opts_parse(opts, nopts, argc, argv, 1, fuzz_getenv, pos, 4, &npos, tiny, sizeof(tiny));
    WP_FUZZ_CHECK(rc2 == rc);
    WP_FUZZ_CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);
    WP_FUZZ_CHECK(strncmp(tiny, err, strlen(tiny)) == 0);
    wp_strlist_free(&labels);

    int b = -1;
    int br = wp_opts_parse_bool(argv[argc - 1], &b);
    WP_FUZZ_CHECK((br == 0 && (b == 0 || b == 1)) || (br == WP_ERR_INVAL && b == -1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    WP_FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    check_addr(s);
    check_hostport(s);
    check_pin(s, data, size);
    size_t first = strlen(s); /* argv part: up to the first NUL; env part: the rest */
    char *envs = first < size ? s + first + 1 : NULL;
    check_opts(s, first, envs, envs ? size - first - 1 : 0);
    free(s);
    return 0;
}
