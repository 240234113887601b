/*
 * wolfprobe.c — Wolf and Moonlight Web health probes over libcurl on the loop (see wolfprobe.h).
 *
 * One na_probe_check per check owns its easy handle for the life of the
 * prober and is reused every round. A round starts every configured check
 * that is not still in flight (a check slower than the interval skips
 * rounds); when the last one finishes the round is over and on_round runs.
 * A successful api check chains the round's lobby listing (its own easy
 * handle, counted in the round like a check) before the round ends.
 */
#include "wolfprobe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "err.h"
#include "json.h"
#include "log.h"

const double na_probe_lat_bounds_ms[NA_PROBE_LAT_BUCKETS] = {5,   10,   25,   50,   100,  250,
                                                             500, 1000, 2500, 5000, 10000};

enum { NA_PROBE_API = 0, NA_PROBE_HTTP, NA_PROBE_HTTPS, NA_PROBE_MOONLIGHT };

static const char *const na_probe_names[NA_PROBE_CHECKS] = {"api", "http", "https", "moonlight"};

#define NA_PROBE_PATH_HEALTH  "/api/v1/system/health"
#define NA_PROBE_PATH_OPENAPI "/api/v1/openapi-schema"
#define NA_PROBE_PATH_LOBBIES "/api/v1/lobbies"

typedef struct na_probe_check {
    na_wolfprobe *p;
    int kind;
    CURL *easy;
    char base[300];      /* scheme://authority, no path */
    char unix_path[256]; /* "" unless the service is unix: */
    int in_flight;
    int api_fallback; /* the health route answered 404 once: use openapi-schema */
    uint64_t started; /* loop time */
    wp_buf body;
    char errbuf[CURL_ERROR_SIZE];
} na_probe_check;

/* GET /api/v1/lobbies after a successful api check: not a health check. */
typedef struct na_probe_lobbies {
    CURL *easy; /* NULL unless the api check is configured */
    int in_flight;
    int count; /* -1 unknown */
    wp_buf body;
    char errbuf[CURL_ERROR_SIZE];
} na_probe_lobbies;

struct na_wolfprobe {
    uv_loop_t *loop;
    wp_curlm *m;
    const na_config *cfg;
    uv_timer_t timer;
    na_probe_check checks[NA_PROBE_CHECKS];
    na_probe_result results[NA_PROBE_CHECKS];
    na_probe_lobbies lobbies;
    int pending;
    uint64_t rounds;
    void (*on_round)(na_wolfprobe *p, void *ud);
    void *ud;
    int stopping;
    void (*closed)(void *ud);
    void *closed_ud;
};

/* ---- pure pieces ---- */

void na_probe_observe_latency(na_probe_result *r, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    r->lat_count++;
    r->lat_sum_ms += (double)ms;
    for (size_t i = 0; i < NA_PROBE_LAT_BUCKETS; i++)
        if ((double)ms <= na_probe_lat_bounds_ms[i])
            r->lat_buckets[i]++;
}

static const char *na_memmem(const char *h, size_t hl, const char *n)
{
    size_t nl = strlen(n);
    if (nl == 0 || hl < nl)
        return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nl) == 0)
            return h + i;
    return NULL;
}

int na_probe_serverinfo_check(const char *body, size_t len, char *err, size_t cap)
{
    if (!body)
        len = 0;
    if (!na_memmem(body, len, "status_code=\"200\"")) {
        snprintf(err, cap, "bad serverinfo: no status_code=\"200\"");
        return WP_ERR_MALFORMED;
    }
    const char *s = na_memmem(body, len, "<state>");
    const char *e = s ? na_memmem(s, len - (size_t)(s - body), "</state>") : NULL;
    if (!s || !e) {
        snprintf(err, cap, "bad serverinfo: no <state>");
        return WP_ERR_MALFORMED;
    }
    return 0;
}

void na_probe_curl_error(int rc, long os_errno, const char *detail, int tls, char *err, size_t cap)
{
    const char *d = detail ? detail : "";
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(err, cap, "timeout");
        return;
    case CURLE_COULDNT_CONNECT:
        if (os_errno == ECONNREFUSED)
            snprintf(err, cap, "connection refused");
        else if (os_errno == ENOENT)
            snprintf(err, cap, "no such socket");
        else if (os_errno == EACCES || os_errno == EPERM)
            snprintf(err, cap, "permission denied");
        else if (os_errno == ETIMEDOUT)
            snprintf(err, cap, "timeout");
        else if (os_errno)
            snprintf(err, cap, "connect failed: %s", strerror((int)os_errno));
        else
            snprintf(err, cap, "connect failed: %.200s", d[0] ? d : "unknown reason");
        return;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(err, cap, "cannot resolve host");
        return;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        snprintf(err, cap, "response too large");
        return;
    default:
        break;
    }
    if (tls && (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
                rc == CURLE_GOT_NOTHING)) {
        /* OpenSSL reports a peer that closed before answering ClientHello as
         * SSL_ERROR_SYSCALL / "unexpected eof" with errno 0, or a reset. */
        int eof = os_errno == ECONNRESET || os_errno == EPIPE || strstr(d, "SSL_ERROR_SYSCALL") ||
                  strstr(d, "unexpected eof") || strstr(d, "Connection reset") ||
                  strstr(d, "connection reset");
        if (eof)
            snprintf(err, cap, "closed before tls handshake");
        else
            snprintf(err, cap, "tls handshake failed: %.200s",
                     d[0] ? d : curl_easy_strerror((CURLcode)rc));
        return;
    }
    if (tls) {
        snprintf(err, cap, "tls handshake failed: %.200s",
                 d[0] ? d : curl_easy_strerror((CURLcode)rc));
        return;
    }
    switch (rc) {
    case CURLE_GOT_NOTHING:
        snprintf(err, cap, "empty reply");
        return;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: /* HTTP/0.9: no status line at all */
        snprintf(err, cap, "bad http response");
        return;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        if (os_errno == ECONNRESET || os_errno == EPIPE) {
            snprintf(err, cap, "connection reset");
            return;
        }
        break;
    default:
        break;
    }
    snprintf(err, cap, "%.200s", d[0] ? d : curl_easy_strerror((CURLcode)rc));
}

/* ---- configuration ---- */

static const na_service *na_probe_service(const na_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        if (strcmp(cfg->services[i].name, name) == 0)
            return &cfg->services[i];
    return NULL;
}

/* "http://host:port" (IPv6 literals bracketed). 0 or WP_ERR_LIMIT. */
static int na_probe_base(char *out, size_t cap, const char *scheme, const char *host, int port)
{
    int ipv6 = strchr(host, ':') != NULL;
    int n =
        snprintf(out, cap, "%s://%s%s%s:%d", scheme, ipv6 ? "[" : "", host, ipv6 ? "]" : "", port);
    return n < 0 || (size_t)n >= cap ? WP_ERR_LIMIT : 0;
}

/* Fills c's target from the config; returns 1 when the check is configured. */
static int na_probe_configure(na_probe_check *c, const na_config *cfg)
{
    static const char *const svc_names[NA_PROBE_CHECKS] = {"wolf", "wolf-http", NULL, "moonlight"};
    if (c->kind == NA_PROBE_HTTPS) {
        const char *hp = cfg->wolf_https ? cfg->wolf_https : NA_DEFAULT_WOLF_HTTPS;
        char host[256];
        int port = 0;
        if (strcmp(hp, "none") == 0 || wp_hostport_split(hp, host, sizeof(host), &port) != 0 ||
            port <= 0)
            return 0;
        return na_probe_base(c->base, sizeof(c->base), "https", host, port) == 0;
    }
    const na_service *s = na_probe_service(cfg, svc_names[c->kind]);
    if (!s)
        return 0;
    if (s->kind == NA_SVC_UNIX) {
        snprintf(c->unix_path, sizeof(c->unix_path), "%s", s->target);
        snprintf(c->base, sizeof(c->base), "http://localhost");
        return 1;
    }
    return na_probe_base(c->base, sizeof(c->base), "http", s->target, s->port) == 0;
}

/* ---- running checks ---- */

static size_t na_probe_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    na_probe_check *c = ud;
    size_t n = size * nmemb;
    if (wp_buf_put(&c->body, ptr, n) != 0)
        return 0; /* over NA_PROBE_BODY_MAX: CURLE_WRITE_ERROR */
    return n;
}

static void na_probe_done(CURL *easy, CURLcode result, void *ud);

/* Options every probe request shares (one fresh connection, no proxy). 1 ok, 0 failed. */
static int na_probe_setopts(CURL *e, const char *url, long timeout_ms, char *errbuf,
                            const char *unix_path)
{
    int ok = curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PROXY, "") == CURLE_OK && /* never via HTTPS_PROXY */
             curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    if (ok && unix_path[0])
        ok = curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, unix_path) == CURLE_OK;
    return ok;
}

/* (Re)starts check c. 0 or a WP_ERR_* (then the check is recorded as failed by the caller). */
static int na_probe_launch(na_probe_check *c)
{
    na_wolfprobe *p = c->p;
    const na_config *cfg = p->cfg;
    CURL *e = c->easy;
    char url[400];
    curl_easy_reset(e);
    wp_buf_reset(&c->body);
    c->errbuf[0] = '\0';
    long timeout_ms = (long)cfg->probe_timeout_s * 1000L;
    switch (c->kind) {
    case NA_PROBE_API:
        snprintf(url, sizeof(url), "%s%s", c->base,
                 c->api_fallback ? NA_PROBE_PATH_OPENAPI : NA_PROBE_PATH_HEALTH);
        break;
    case NA_PROBE_HTTP:
        snprintf(url, sizeof(url), "%s/serverinfo", c->base);
        break;
    case NA_PROBE_HTTPS:
        snprintf(url, sizeof(url), "%s/", c->base);
        timeout_ms = (long)cfg->probe_tls_timeout_s * 1000L;
        break;
    default:
        snprintf(url, sizeof(url), "%s/api/authenticate", c->base);
        break;
    }
    int ok = na_probe_setopts(e, url, timeout_ms, c->errbuf, c->unix_path);
    if (ok && c->kind == NA_PROBE_HTTPS) {
        /* A handshake only: Wolf's certificate is self-signed per install and nothing is
         * sent, so there is nothing to verify it against and nothing to protect. */
        ok = curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) == CURLE_OK;
    } else if (ok) {
        ok = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, na_probe_write_cb) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_WRITEDATA, c) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)NA_PROBE_BODY_MAX) ==
                 CURLE_OK;
    }
    if (!ok)
        return WP_ERR_INTERNAL;
    int rc = wp_curlm_add(p->m, e, na_probe_done, c);
    if (rc != 0)
        return rc;
    c->in_flight = 1;
    p->pending++;
    return 0;
}

static int64_t na_probe_wall_ms(void)
{
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void na_probe_record(na_probe_check *c, int ok, int64_t latency_ms, const char *error)
{
    na_probe_result *r = &c->p->results[c->kind];
    int was_ok = r->runs == 0 || r->ok;
    r->runs++;
    r->ok = ok;
    r->latency_ms = latency_ms < 0 ? 0 : latency_ms;
    r->last_run_ms = na_probe_wall_ms();
    na_probe_observe_latency(r, r->latency_ms);
    if (ok) {
        r->error[0] = '\0';
        r->consecutive_failures = 0;
        if (!was_ok)
            wp_log_info("health probe recovered", WP_LS("check", r->name),
                        WP_LI("latency_ms", r->latency_ms));
    } else {
        snprintf(r->error, sizeof(r->error), "%s", error);
        if (c->kind == NA_PROBE_API)
            c->p->lobbies.count = -1; /* Wolf's API is not answering: lobbies unknown */
        r->failures++;
        r->consecutive_failures++;
        if (was_ok)
            wp_log_warn("health probe failed", WP_LS("check", r->name), WP_LS("error", r->error),
                        WP_LI("latency_ms", r->latency_ms));
    }
}

static void na_probe_round_end(na_wolfprobe *p)
{
    p->rounds++;
    if (p->on_round)
        p->on_round(p, p->ud);
}

/* ---- the lobby listing ---- */

static size_t na_lobbies_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    na_probe_lobbies *l = ud;
    size_t n = size * nmemb;
    if (wp_buf_put(&l->body, ptr, n) != 0)
        return 0; /* over NA_PROBE_LOBBIES_MAX: CURLE_WRITE_ERROR */
    return n;
}

/*
 * The lobby count of a GET /api/v1/lobbies reply (len bytes): the size of the
 * `lobbies` array of {"success":true,"lobbies":[...]}, or -1. A 1 MiB body
 * holds fewer than 2^20 array items, so the count fits the heartbeat's range.
 */
static int na_lobbies_parse(const char *body, size_t len)
{
    cJSON *o = NULL;
    if (len == 0 || wp_json_parse(body, len, NA_PROBE_LOBBIES_MAX, 32, &o) != 0)
        return -1;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "lobbies");
    int n = cJSON_IsObject(o) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "success")) &&
                    cJSON_IsArray(arr)
                ? cJSON_GetArraySize(arr)
                : -1;
    cJSON_Delete(o);
    return n;
}

static void na_lobbies_done(CURL *easy, CURLcode result, void *ud)
{
    na_wolfprobe *p = ud;
    na_probe_lobbies *l = &p->lobbies;
    l->in_flight = 0;
    p->pending--;
    long status = 0;
    if (result == CURLE_OK)
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    l->count = result == CURLE_OK && status == 200
                   ? na_lobbies_parse((const char *)wp_buf_ptr(&l->body), wp_buf_len(&l->body))
                   : -1;
    if (l->count < 0) {
        char err[256];
        if (result != CURLE_OK) {
            long os_errno = 0;
            curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
            na_probe_curl_error((int)result, os_errno, l->errbuf, 0, err, sizeof(err));
        } else if (status != 200) {
            snprintf(err, sizeof(err), "http status %ld", status);
        } else {
            snprintf(err, sizeof(err), "bad lobbies reply");
        }
        wp_log_debug("cannot list Wolf lobbies", WP_LS("error", err));
    }
    wp_buf_reset(&l->body);
    if (p->pending == 0)
        na_probe_round_end(p);
}

/* Starts the lobby listing after a successful api check c; on failure the count is unknown. */
static void na_lobbies_launch(na_probe_check *c)
{
    na_wolfprobe *p = c->p;
    na_probe_lobbies *l = &p->lobbies;
    if (!l->easy || l->in_flight)
        return; /* a listing slower than the interval: keep the last count */
    CURL *e = l->easy;
    char url[400];
    curl_easy_reset(e);
    wp_buf_reset(&l->body);
    l->errbuf[0] = '\0';
    snprintf(url, sizeof(url), "%s%s", c->base, NA_PROBE_PATH_LOBBIES);
    int ok =
        na_probe_setopts(e, url, (long)p->cfg->probe_timeout_s * 1000L, l->errbuf, c->unix_path) &&
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, na_lobbies_write_cb) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_WRITEDATA, l) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)NA_PROBE_LOBBIES_MAX) ==
            CURLE_OK;
    int rc = ok ? wp_curlm_add(p->m, e, na_lobbies_done, p) : WP_ERR_INTERNAL;
    if (rc != 0) {
        l->count = -1;
        wp_log_debug("cannot list Wolf lobbies", WP_LE("err", rc));
        return;
    }
    l->in_flight = 1;
    p->pending++;
}

/* Judges a finished HTTP check: 1 ok, 0 failed with err filled, -1 restarted (api fallback). */
static int na_probe_judge_http(na_probe_check *c, char *err, size_t cap)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    const char *body = (const char *)wp_buf_ptr(&c->body);
    size_t len = wp_buf_len(&c->body);
    switch (c->kind) {
    case NA_PROBE_API:
        if (status == 404 && !c->api_fallback) {
            c->api_fallback = 1; /* not the Helix fork: use the OpenAPI schema from now on */
            wp_log_debug("Wolf has no /api/v1/system/health: probing /api/v1/openapi-schema");
            if (na_probe_launch(c) == 0)
                return -1;
            snprintf(err, cap, "http status 404");
            return 0;
        }
        if (status != 200) {
            snprintf(err, cap, "http status %ld", status);
            return 0;
        }
        if (!c->api_fallback) {
            cJSON *o = NULL;
            if (len == 0 || wp_json_parse(body, len, NA_PROBE_BODY_MAX, 32, &o) != 0 ||
                !cJSON_IsObject(o)) {
                cJSON_Delete(o);
                snprintf(err, cap, "bad health reply");
                return 0;
            }
            const char *st = wp_json_get_str(o, "overall_status");
            int healthy = !st || strcmp(st, "healthy") == 0;
            if (!healthy)
                snprintf(err, cap, "wolf overall_status: %.64s", st);
            cJSON_Delete(o);
            return healthy;
        }
        return 1;
    case NA_PROBE_HTTP:
        if (status != 200) {
            snprintf(err, cap, "http status %ld", status);
            return 0;
        }
        return na_probe_serverinfo_check(body, len, err, cap) == 0;
    default: /* moonlight */
        if (status != 200 && status != 401) {
            snprintf(err, cap, "http status %ld", status);
            return 0;
        }
        return 1;
    }
}

static void na_probe_done(CURL *easy, CURLcode result, void *ud)
{
    na_probe_check *c = ud;
    na_wolfprobe *p = c->p;
    char err[256] = "";
    int ok;
    int64_t latency = (int64_t)(uv_now(p->loop) - c->started);
    c->in_flight = 0;
    p->pending--;
    if (result != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
        na_probe_curl_error((int)result, os_errno, c->errbuf, c->kind == NA_PROBE_HTTPS, err,
                            sizeof(err));
        ok = 0;
    } else if (c->kind == NA_PROBE_HTTPS) {
        curl_off_t us = 0;
        if (curl_easy_getinfo(easy, CURLINFO_APPCONNECT_TIME_T, &us) == CURLE_OK && us > 0)
            latency = (int64_t)(us / 1000);
        ok = 1;
    } else {
        ok = na_probe_judge_http(c, err, sizeof(err));
        if (ok < 0)
            return; /* relaunched within this round; c->started stays */
    }
    na_probe_record(c, ok, latency, err);
    if (c->kind == NA_PROBE_API && ok)
        na_lobbies_launch(c);
    if (p->pending == 0)
        na_probe_round_end(p);
}

static void na_probe_round(uv_timer_t *t)
{
    na_wolfprobe *p = t->data;
    int started = 0;
    for (int i = 0; i < NA_PROBE_CHECKS; i++) {
        na_probe_check *c = &p->checks[i];
        if (!p->results[i].configured || c->in_flight)
            continue;
        c->started = uv_now(p->loop);
        int rc = na_probe_launch(c);
        if (rc != 0) {
            char err[128];
            snprintf(err, sizeof(err), "cannot start probe: %s", wp_strerror(rc));
            na_probe_record(c, 0, 0, err);
        } else {
            started++;
        }
    }
    if (started == 0 && p->pending == 0)
        na_probe_round_end(p);
}

/* ---- lifecycle ---- */

static void na_probe_free(na_wolfprobe *p)
{
    for (int i = 0; i < NA_PROBE_CHECKS; i++) {
        if (p->checks[i].easy)
            curl_easy_cleanup(p->checks[i].easy);
        wp_buf_free(&p->checks[i].body);
    }
    if (p->lobbies.easy)
        curl_easy_cleanup(p->lobbies.easy);
    wp_buf_free(&p->lobbies.body);
    free(p);
}

int na_wolfprobe_start(uv_loop_t *loop, wp_curlm *m, const na_config *cfg,
                       void (*on_round)(na_wolfprobe *p, void *ud), void *ud, na_wolfprobe **out)
{
    if (!loop || !m || !cfg || !out)
        return WP_ERR_INVAL;
    *out = NULL;
    na_wolfprobe *p = calloc(1, sizeof(*p));
    if (!p)
        return WP_ERR_NOMEM;
    p->loop = loop;
    p->m = m;
    p->cfg = cfg;
    p->on_round = on_round;
    p->ud = ud;
    p->lobbies.count = -1;
    wp_buf_init(&p->lobbies.body, NA_PROBE_LOBBIES_MAX);
    for (int i = 0; i < NA_PROBE_CHECKS; i++) {
        na_probe_check *c = &p->checks[i];
        c->p = p;
        c->kind = i;
        wp_buf_init(&c->body, NA_PROBE_BODY_MAX);
        p->results[i].name = na_probe_names[i];
        p->results[i].configured = na_probe_configure(c, cfg);
        if (p->results[i].configured && !(c->easy = curl_easy_init())) {
            na_probe_free(p);
            return WP_ERR_NOMEM;
        }
    }
    if (p->results[NA_PROBE_API].configured && !(p->lobbies.easy = curl_easy_init())) {
        na_probe_free(p);
        return WP_ERR_NOMEM;
    }
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uint64_t every = (uint64_t)(cfg->probe_interval_s > 0 ? cfg->probe_interval_s : 10) * 1000u;
    uv_timer_start(&p->timer, na_probe_round, 0, every);
    *out = p;
    return 0;
}

static void na_probe_timer_closed(uv_handle_t *h)
{
    na_wolfprobe *p = h->data;
    void (*closed)(void *) = p->closed;
    void *ud = p->closed_ud;
    na_probe_free(p);
    if (closed)
        closed(ud);
}

void na_wolfprobe_stop(na_wolfprobe *p, void (*closed)(void *ud), void *ud)
{
    if (!p || p->stopping)
        return;
    p->stopping = 1;
    p->closed = closed;
    p->closed_ud = ud;
    for (int i = 0; i < NA_PROBE_CHECKS; i++) {
        if (p->checks[i].in_flight) {
            wp_curlm_remove(p->m, p->checks[i].easy);
            p->checks[i].in_flight = 0;
        }
    }
    if (p->lobbies.in_flight) {
        wp_curlm_remove(p->m, p->lobbies.easy);
        p->lobbies.in_flight = 0;
    }
    p->pending = 0;
    uv_close((uv_handle_t *)&p->timer, na_probe_timer_closed);
}

size_t na_wolfprobe_results(const na_wolfprobe *p, const na_probe_result **out)
{
    if (!p) {
        if (out)
            *out = NULL;
        return 0;
    }
    if (out)
        *out = p->results;
    return NA_PROBE_CHECKS;
}

int na_wolfprobe_wolf_healthy(const na_wolfprobe *p)
{
    if (!p)
        return 1;
    for (int i = NA_PROBE_API; i <= NA_PROBE_HTTPS; i++) {
        const na_probe_result *r = &p->results[i];
        if (r->configured && r->runs > 0 && !r->ok)
            return 0;
    }
    return 1;
}

int na_wolfprobe_lobby_count(const na_wolfprobe *p)
{
    return p ? p->lobbies.count : -1;
}

uint64_t na_wolfprobe_rounds(const na_wolfprobe *p)
{
    return p ? p->rounds : 0;
}

/* {ok, latency_ms, error?} (+ configured when full), or NULL on allocation failure. */
static cJSON *na_probe_result_json(const na_probe_result *r, int full)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int ok = 1;
    if (full)
        ok = cJSON_AddBoolToObject(o, "configured", r->configured) != NULL;
    if (full && !r->configured)
        return ok ? o : (cJSON_Delete(o), NULL);
    ok = ok && cJSON_AddBoolToObject(o, "ok", r->ok) &&
         cJSON_AddNumberToObject(o, "latency_ms", (double)r->latency_ms);
    if (ok && !r->ok)
        ok = cJSON_AddStringToObject(o, "error", r->error) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *na_wolfprobe_heartbeat_json(const na_wolfprobe *p)
{
    cJSON *w = cJSON_CreateObject();
    if (!w || !p)
        return w;
    for (int i = NA_PROBE_API; i <= NA_PROBE_HTTPS; i++) {
        const na_probe_result *r = &p->results[i];
        if (!r->configured || r->runs == 0)
            continue;
        cJSON *o = na_probe_result_json(r, 0);
        if (!o) {
            cJSON_Delete(w);
            return NULL;
        }
        cJSON_AddItemToObject(w, r->name, o);
    }
    return w;
}

cJSON *na_wolfprobe_moonlight_json(const na_wolfprobe *p)
{
    if (!p)
        return NULL;
    const na_probe_result *r = &p->results[NA_PROBE_MOONLIGHT];
    if (!r->configured || r->runs == 0)
        return NULL;
    return na_probe_result_json(r, 0);
}

/* ---- one round for `wolfpack-agent probe` ---- */

typedef struct na_probe_once {
    int rounds;
    int probe_closed;
    int multi_closed;
} na_probe_once;

static void na_probe_once_round(na_wolfprobe *p, void *ud)
{
    (void)p;
    ((na_probe_once *)ud)->rounds++;
}

static void na_probe_once_closed(void *ud)
{
    *(int *)ud = 1;
}

int na_wolfprobe_run_once(uv_loop_t *loop, const na_config *cfg, cJSON **out, int *healthy,
                          char *err, size_t cap)
{
    if (!loop || !cfg || !out || !healthy) {
        snprintf(err, cap, "invalid arguments");
        return WP_ERR_INVAL;
    }
    *out = NULL;
    wp_curlm *m = NULL;
    int rc = wp_curlm_new(loop, &m);
    if (rc != 0) {
        snprintf(err, cap, "cannot set up libcurl: %s", wp_strerror(rc));
        return rc;
    }
    na_probe_once st = {0};
    na_wolfprobe *p = NULL;
    rc = na_wolfprobe_start(loop, m, cfg, na_probe_once_round, &st, &p);
    if (rc != 0) {
        snprintf(err, cap, "cannot start the probes: %s", wp_strerror(rc));
        wp_curlm_close(m, na_probe_once_closed, &st.multi_closed);
        while (!st.multi_closed && uv_run(loop, UV_RUN_ONCE))
            ;
        return rc;
    }
    while (st.rounds == 0 && uv_run(loop, UV_RUN_ONCE))
        ;
    cJSON *o = cJSON_CreateObject();
    const na_probe_result *res = NULL;
    size_t n = na_wolfprobe_results(p, &res);
    for (size_t i = 0; o && i < n; i++) {
        cJSON *r = na_probe_result_json(&res[i], 1);
        if (!r) {
            cJSON_Delete(o);
            o = NULL;
            break;
        }
        cJSON_AddItemToObject(o, res[i].name, r);
    }
    *healthy = na_wolfprobe_wolf_healthy(p);
    na_wolfprobe_stop(p, na_probe_once_closed, &st.probe_closed);
    while (!st.probe_closed && uv_run(loop, UV_RUN_ONCE))
        ;
    wp_curlm_close(m, na_probe_once_closed, &st.multi_closed);
    while (!st.multi_closed && uv_run(loop, UV_RUN_ONCE))
        ;
    if (!o) {
        snprintf(err, cap, "out of memory");
        return WP_ERR_NOMEM;
    }
    *out = o;
    return 0;
}
