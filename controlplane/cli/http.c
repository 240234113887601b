/*
 * http.c — the wolfpack CLI's one way to talk to wolfpackd: a libcurl request with the bearer
 * token, the answer printed as pretty JSON or as a one-line error, list pages followed through
 * next_cursor, and URL encoding of every value put into a path or query (curl_easy_escape).
 * A one-shot command, so blocking transfers are fine here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "crypto.h"
#include "json.h"

#define WPC_QUERY_MAX 8192 /* the server refuses longer URLs (414) */
#define WPC_MSG_MAX   400  /* characters of a server message or details on the error line */

int wpc_usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("wolfpack: usage: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return WPC_EXIT_USAGE;
}

void wpc_http_close(wpc_config *c)
{
    if (c->curl)
        curl_easy_cleanup(c->curl);
    c->curl = NULL;
    wp_secure_zero(c->token_buf, sizeof(c->token_buf));
}

void wpc_query_init(wpc_query *q)
{
    wp_buf_init(&q->buf, WPC_QUERY_MAX);
    q->failed = 0;
}

void wpc_query_free(wpc_query *q)
{
    wp_buf_free(&q->buf);
}

/* The run's curl handle, made on first use; NULL when libcurl cannot make one. */
static CURL *wpc_curl(wpc_config *c)
{
    if (!c->curl)
        c->curl = curl_easy_init();
    return c->curl;
}

void wpc_query_add(wpc_query *q, wpc_config *c, const char *name, const char *value)
{
    if (!value || q->failed)
        return;
    CURL *h = wpc_curl(c);
    char *esc = h ? curl_easy_escape(h, value, 0) : NULL;
    if (!esc || wp_buf_putf(&q->buf, "%s%s=%s", wp_buf_len(&q->buf) ? "&" : "", name, esc) != 0)
        q->failed = 1;
    curl_free(esc);
}

int wpc_path_id(wpc_config *c, const char *prefix, const char *id, const char *suffix, char *out,
                size_t cap)
{
    if (!id[0] || strlen(id) > WPC_ARG_MAX)
        return wpc_usage_error("an id of 1-%d characters", WPC_ARG_MAX);
    CURL *h = wpc_curl(c);
    char *esc = h ? curl_easy_escape(h, id, 0) : NULL;
    int n = esc ? snprintf(out, cap, "%s/%s%s", prefix, esc, suffix) : -1;
    curl_free(esc);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "wolfpack: internal: cannot build the request path\n");
        return WPC_EXIT_REFUSED;
    }
    return 0;
}

static size_t wpc_write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    wp_buf *b = ud;
    size_t n = size * nmemb;
    if (wp_buf_put(b, p, n) != 0)
        return 0; /* over WPC_MAX_RESPONSE: abort the transfer */
    return n;
}

long wpc_request(wpc_config *c, const char *method, const char *path, const char *json,
                 const char *token, wp_buf *out, char *err, size_t cap)
{
    char url[WPC_QUERY_MAX + 1024];
    char errbuf[CURL_ERROR_SIZE] = {0};
    char auth[600];
    long status = -1;
    struct curl_slist *hdrs = NULL;
    size_t slen = strlen(c->server);
    while (slen > 0 && c->server[slen - 1] == '/')
        slen--;
    if (snprintf(url, sizeof(url), "%.*s%s", (int)slen, c->server, path) >= (int)sizeof(url)) {
        snprintf(err, cap, "server URL too long");
        return -1;
    }
    CURL *h = wpc_curl(c);
    if (!h) {
        snprintf(err, cap, "cannot initialize libcurl");
        return -1;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, wpc_write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)c->timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (json) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    }
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
        wp_secure_zero(auth, sizeof(auth));
    }
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_WRITE_ERROR) {
        snprintf(err, cap, "the answer is larger than %d bytes", WPC_MAX_RESPONSE);
        status = -2;
    } else if (rc != CURLE_OK) {
        snprintf(err, cap, "%.200s: %.250s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    /* the handle keeps the header list pointer until the next reset: drop it now */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    return status;
}

/* The API token: --token / WOLFPACK_TOKEN, else the first line of --token-file. */
static const char *wpc_token(wpc_config *c)
{
    if (c->token)
        return c->token;
    if (!c->token_file)
        return NULL;
    if (c->token_buf[0])
        return c->token_buf;
    FILE *f = fopen(c->token_file, "re");
    if (!f)
        return NULL;
    char *got = fgets(c->token_buf, sizeof(c->token_buf), f);
    fclose(f);
    if (!got)
        return NULL;
    c->token_buf[strcspn(c->token_buf, "\r\n")] = '\0';
    return c->token_buf[0] ? c->token_buf : NULL;
}

/* Prints s (at most max characters) with control characters replaced: one line. */
static void wpc_print_line(FILE *out, const char *s, size_t max)
{
    size_t i = 0;
    for (; s[i] && i < max; i++)
        fputc((unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i], out);
    if (s[i])
        fputs("...", out);
}

/* "wolfpack: <code>: <message>[ <details JSON>] (HTTP <status>)" from an error answer. */
static void wpc_print_api_error(long status, const cJSON *doc)
{
    const cJSON *e = doc ? cJSON_GetObjectItemCaseSensitive(doc, "error") : NULL;
    const char *msg = e ? wp_json_get_str(e, "message") : NULL;
    const char *code = e ? wp_json_get_str(e, "code") : NULL;
    const cJSON *details = e ? cJSON_GetObjectItemCaseSensitive(e, "details") : NULL;
    char fallback[32];
    if (!code) {
        snprintf(fallback, sizeof(fallback), "http_%ld", status);
        code = fallback;
    }
    fputs("wolfpack: ", stderr);
    wpc_print_line(stderr, code, 64);
    fputs(": ", stderr);
    wpc_print_line(stderr, msg ? msg : "the server gave no details", WPC_MSG_MAX);
    char *d = details ? cJSON_PrintUnformatted(details) : NULL;
    if (d) {
        fputc(' ', stderr);
        wpc_print_line(stderr, d, WPC_MSG_MAX);
    }
    cJSON_free(d);
    fprintf(stderr, " (HTTP %ld)\n", status);
}

/*
 * One authenticated call: the parsed 2xx answer in *doc (NULL when the answer was empty).
 * Returns WPC_EXIT_OK, or the exit status after printing the error line.
 */
static int wpc_call(wpc_config *c, const char *method, const char *path, const char *json,
                    cJSON **doc)
{
    char err[512];
    *doc = NULL;
    if (!c->server)
        return wpc_usage_error("no server: set --server or WOLFPACK_SERVER");
    const char *token = wpc_token(c);
    if (!token)
        return wpc_usage_error("no token: set WOLFPACK_TOKEN or --token-file%s",
                               c->token_file ? " (cannot read it)" : "");
    wp_buf body;
    wp_buf_init(&body, WPC_MAX_RESPONSE);
    long status = wpc_request(c, method, path, json, token, &body, err, sizeof(err));
    int rc = WPC_EXIT_OK;
    cJSON *parsed = NULL;
    int bad = 0;
    if (status == -2) {
        fprintf(stderr, "wolfpack: bad_response: %s\n", err);
        rc = WPC_EXIT_REFUSED;
    } else if (status < 0) {
        fprintf(stderr, "wolfpack: unreachable: %s\n", err);
        rc = WPC_EXIT_UNREACHABLE;
    } else {
        if (wp_buf_len(&body) > 0)
            bad = wp_json_parse((const char *)wp_buf_ptr(&body), wp_buf_len(&body),
                                WPC_MAX_RESPONSE, 64, &parsed) != 0;
        if (status < 200 || status >= 300) {
            wpc_print_api_error(status, parsed);
            rc = WPC_EXIT_REFUSED;
        } else if (bad) {
            fprintf(stderr, "wolfpack: bad_response: %s %s: the answer is not JSON (HTTP %ld)\n",
                    method, path, status);
            rc = WPC_EXIT_REFUSED;
        } else {
            *doc = parsed;
            parsed = NULL;
        }
    }
    cJSON_Delete(parsed);
    wp_buf_free(&body);
    return rc;
}

/* Prints doc pretty on stdout; WPC_EXIT_OK, or WPC_EXIT_REFUSED when out of memory. */
static int wpc_print_doc(const cJSON *doc)
{
    char *text = cJSON_Print(doc);
    if (!text) {
        fprintf(stderr, "wolfpack: internal: out of memory\n");
        return WPC_EXIT_REFUSED;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return WPC_EXIT_OK;
}

int wpc_api(wpc_config *c, const char *method, const char *path, const char *json)
{
    cJSON *doc = NULL;
    int rc = wpc_call(c, method, path, json, &doc);
    if (rc == WPC_EXIT_OK && doc)
        rc = wpc_print_doc(doc);
    cJSON_Delete(doc);
    return rc;
}

/* The page's items array and next_cursor (string or NULL); 0, or -1 if the shape is wrong. */
static int wpc_page_parts(const cJSON *doc, const char *key, cJSON **items, const char **next)
{
    *items = doc ? cJSON_GetObjectItemCaseSensitive(doc, key) : NULL;
    const cJSON *nc = doc ? cJSON_GetObjectItemCaseSensitive(doc, "next_cursor") : NULL;
    if (!cJSON_IsArray(*items) || (nc && !cJSON_IsNull(nc) && !cJSON_IsString(nc)))
        return -1;
    *next = cJSON_IsString(nc) ? nc->valuestring : NULL;
    return 0;
}

int wpc_api_list(wpc_config *c, const char *path, wpc_query *q, const char *key)
{
    cJSON *all = NULL, *items = NULL;
    const char *next = c->cursor;
    char *next_copy = NULL;
    long long got = 0;
    int rc = WPC_EXIT_OK, pages = 0;
    for (; pages < WPC_PAGES_MAX; pages++) {
        long long page = c->page_size ? c->page_size : WPC_PAGE_MAX;
        long long want = c->limit && c->limit - got < page ? c->limit - got : page;
        char lim[24];
        snprintf(lim, sizeof(lim), "%lld", want);
        wpc_query pq;
        wpc_query_init(&pq);
        if (wp_buf_put(&pq.buf, wp_buf_ptr(&q->buf), wp_buf_len(&q->buf)) != 0)
            pq.failed = 1;
        wpc_query_add(&pq, c, "limit", lim);
        wpc_query_add(&pq, c, "cursor", next);
        char full[WPC_QUERY_MAX + 256];
        int n = pq.failed || q->failed
                    ? -1
                    : snprintf(full, sizeof(full), "%s?%.*s", path, (int)wp_buf_len(&pq.buf),
                               (const char *)wp_buf_ptr(&pq.buf));
        wpc_query_free(&pq);
        if (n < 0 || (size_t)n >= sizeof(full)) {
            rc = wpc_usage_error("the query is too long");
            break;
        }
        cJSON *doc = NULL;
        rc = wpc_call(c, "GET", full, NULL, &doc);
        if (rc != WPC_EXIT_OK)
            break;
        cJSON *page_items;
        const char *page_next;
        if (wpc_page_parts(doc, key, &page_items, &page_next) != 0) {
            fprintf(stderr, "wolfpack: bad_response: GET %s: no \"%s\" list in the answer\n", path,
                    key);
            cJSON_Delete(doc);
            rc = WPC_EXIT_REFUSED;
            break;
        }
        got += cJSON_GetArraySize(page_items);
        if (!all) {
            all = doc;
            items = page_items;
        } else {
            cJSON *it;
            while ((it = cJSON_DetachItemFromArray(page_items, 0)) != NULL)
                cJSON_AddItemToArray(items, it);
        }
        free(next_copy);
        next_copy = page_next ? strdup(page_next) : NULL;
        if (all != doc)
            cJSON_Delete(doc);
        next = next_copy;
        if (page_next && !next_copy) {
            fprintf(stderr, "wolfpack: internal: out of memory\n");
            rc = WPC_EXIT_REFUSED;
            break;
        }
        if (!next || (c->limit && got >= c->limit))
            break;
    }
    if (rc == WPC_EXIT_OK && all) {
        cJSON_DeleteItemFromObjectCaseSensitive(all, "next_cursor");
        int ok = next_copy ? cJSON_AddStringToObject(all, "next_cursor", next_copy) != NULL
                           : cJSON_AddNullToObject(all, "next_cursor") != NULL;
        rc = ok ? wpc_print_doc(all) : WPC_EXIT_REFUSED;
        if (next_copy && pages >= WPC_PAGES_MAX)
            fprintf(stderr,
                    "wolfpack: note: stopped after %d pages; continue with --cursor %s "
                    "(or narrow the list)\n",
                    WPC_PAGES_MAX, next_copy);
    }
    free(next_copy);
    cJSON_Delete(all);
    return rc;
}
