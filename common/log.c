/*
 * log.c — leveled, structured logging (logfmt or JSON lines), see log.h.
 *
 * A line is built in a fixed buffer: the message, every key and every string
 * value is first redacted (registered secrets replaced by "[REDACTED]" on the
 * raw bytes, before any escaping, so an escaped form cannot leak), then escaped
 * for the output format. Escape sequences are written whole or not at all; a
 * line that would exceed its limit ends with "..." inside the open string and
 * is closed properly, so a truncated JSON line is still valid JSON.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "log.h"

#define WP_LOG_REDACTED   "[REDACTED]"
#define WP_LOG_SECRET_MIN 6

static int wp_log_level_cur = WP_LOG_INFO;
static int wp_log_format_cur = WP_LOG_FMT_LOGFMT;
static FILE *wp_log_out;
static long long (*wp_log_clock)(void);

static pthread_mutex_t wp_log_secret_mu = PTHREAD_MUTEX_INITIALIZER;
static char *wp_log_secrets[WP_LOG_SECRETS_MAX];
static size_t wp_log_secret_lens[WP_LOG_SECRETS_MAX];
static size_t wp_log_nsecrets;

void wp_log_set_level(int level)
{
    wp_log_level_cur = level;
}

int wp_log_get_level(void)
{
    return wp_log_level_cur;
}

void wp_log_set_format(int format)
{
    wp_log_format_cur = format == WP_LOG_FMT_JSON ? WP_LOG_FMT_JSON : WP_LOG_FMT_LOGFMT;
}

void wp_log_set_output(FILE *f)
{
    wp_log_out = f;
}

void wp_log_set_clock(long long (*now_ms)(void))
{
    wp_log_clock = now_ms;
}

int wp_log_enabled(int level)
{
    return level >= wp_log_level_cur;
}

int wp_log_level_parse(const char *s, int *level)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {{"debug", WP_LOG_DEBUG},
                 {"info", WP_LOG_INFO},
                 {"warn", WP_LOG_WARN},
                 {"warning", WP_LOG_WARN},
                 {"error", WP_LOG_ERROR}};
    if (!s)
        return WP_ERR_INVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *level = names[i].level;
            return 0;
        }
    }
    return WP_ERR_INVAL;
}

int wp_log_format_parse(const char *s, int *format)
{
    if (!s)
        return WP_ERR_INVAL;
    if (strcasecmp(s, "logfmt") == 0) {
        *format = WP_LOG_FMT_LOGFMT;
        return 0;
    }
    if (strcasecmp(s, "json") == 0) {
        *format = WP_LOG_FMT_JSON;
        return 0;
    }
    return WP_ERR_INVAL;
}

static void wp_log_zero(void *p, size_t n)
{
    volatile char *v = p;
    while (n--)
        *v++ = 0;
}

int wp_log_secret_add(const char *secret)
{
    if (!secret)
        return WP_ERR_INVAL;
    size_t n = strlen(secret);
    if (n < WP_LOG_SECRET_MIN)
        return WP_ERR_INVAL;
    int rc = 0;
    pthread_mutex_lock(&wp_log_secret_mu);
    for (size_t i = 0; i < wp_log_nsecrets; i++) {
        if (wp_log_secret_lens[i] == n && memcmp(wp_log_secrets[i], secret, n) == 0)
            goto out; /* already registered */
    }
    if (wp_log_nsecrets >= WP_LOG_SECRETS_MAX) {
        rc = WP_ERR_LIMIT;
        goto out;
    }
    char *copy = malloc(n + 1);
    if (!copy) {
        rc = WP_ERR_NOMEM;
        goto out;
    }
    memcpy(copy, secret, n + 1);
    wp_log_secrets[wp_log_nsecrets] = copy;
    wp_log_secret_lens[wp_log_nsecrets] = n;
    wp_log_nsecrets++;
out:
    pthread_mutex_unlock(&wp_log_secret_mu);
    return rc;
}

void wp_log_secret_clear(void)
{
    pthread_mutex_lock(&wp_log_secret_mu);
    for (size_t i = 0; i < wp_log_nsecrets; i++) {
        wp_log_zero(wp_log_secrets[i], wp_log_secret_lens[i]);
        free(wp_log_secrets[i]);
        wp_log_secrets[i] = NULL;
        wp_log_secret_lens[i] = 0;
    }
    wp_log_nsecrets = 0;
    pthread_mutex_unlock(&wp_log_secret_mu);
}

/* Room for a redacted copy: no escaped line can show more raw bytes than this. */
#define WP_LOG_RAW_MAX (WP_LOG_LINE_MAX + sizeof(WP_LOG_REDACTED))

/*
 * Copies s[0..n) to out, replacing every byte covered by any occurrence of a
 * registered secret (occurrences may overlap) by one "[REDACTED]" per covered
 * run. Stops once WP_LOG_LINE_MAX output bytes exist (more can never be shown).
 * Caller holds wp_log_secret_mu. Returns the output length.
 */
static size_t wp_log_redact(const char *s, size_t n, char *out)
{
    size_t olen = 0, cover_end = 0;
    int in_cover = 0;
    for (size_t i = 0; i < n && olen < WP_LOG_LINE_MAX; i++) {
        for (size_t k = 0; k < wp_log_nsecrets; k++) {
            size_t sl = wp_log_secret_lens[k];
            if (sl <= n - i && s[i] == wp_log_secrets[k][0] &&
                memcmp(s + i, wp_log_secrets[k], sl) == 0 && i + sl > cover_end)
                cover_end = i + sl;
        }
        if (i < cover_end) {
            if (!in_cover) {
                memcpy(out + olen, WP_LOG_REDACTED, sizeof(WP_LOG_REDACTED) - 1);
                olen += sizeof(WP_LOG_REDACTED) - 1;
                in_cover = 1;
            }
        } else {
            in_cover = 0;
            out[olen++] = s[i];
        }
    }
    return olen;
}

/* Line writer: appends stop at `lim`; closing text may use up to `hard`. */
struct wp_log_wr {
    char *p;
    size_t len;
    size_t lim;
    size_t hard;
    int full;
};

static int wp_log_put(struct wp_log_wr *w, const char *s, size_t n)
{
    if (w->full || n > w->lim - w->len) {
        w->full = 1;
        return -1;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
    return 0;
}

static int wp_log_puts(struct wp_log_wr *w, const char *s)
{
    return wp_log_put(w, s, strlen(s));
}

/* Appends closing text within the hard limit (reserved room), cutting if it must. */
static void wp_log_fin(struct wp_log_wr *w, const char *s)
{
    size_t n = strlen(s);
    if (n > w->hard - w->len)
        n = w->hard - w->len;
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* Nonzero if a logfmt value must be quoted. */
static int wp_log_needs_quote(const char *s, size_t n)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return 1;
        size_t l = wp_utf8_seq_len((const unsigned char *)s + i, n - i);
        if (l == 0)
            return 1;
        i += l;
    }
    return 0;
}

/*
 * Writes s escaped for the format (without surrounding quotes). Escape units
 * are atomic. Returns 0, or -1 when the line limit was reached.
 */
static int wp_log_escape(struct wp_log_wr *w, int format, const char *s, size_t n)
{
    char tmp[8];
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        const char *e = NULL;
        size_t elen = 0;
        size_t adv = 1;
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            break;
        }
        if (e) {
            elen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            if (format == WP_LOG_FMT_JSON)
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
            else
                snprintf(tmp, sizeof tmp, "\\x%02x", c);
            e = tmp;
            elen = strlen(tmp);
        } else if (c < 0x80) {
            e = s + i;
            elen = 1;
        } else {
            size_t l = wp_utf8_seq_len((const unsigned char *)s + i, n - i);
            if (l) {
                e = s + i;
                elen = l;
                adv = l;
            } else if (format == WP_LOG_FMT_JSON) {
                e = "\\ufffd";
                elen = 6;
            } else {
                snprintf(tmp, sizeof tmp, "\\x%02x", c);
                e = tmp;
                elen = 4;
            }
        }
        if (wp_log_put(w, e, elen) < 0)
            return -1;
        i += adv;
    }
    return 0;
}

/* Logfmt keys are bare words: anything that would break parsing becomes '_'. */
static int wp_log_put_key_logfmt(struct wp_log_wr *w, const char *s, size_t n)
{
    if (n == 0)
        return wp_log_put(w, "_", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char o = (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\') ? '_' : (char)c;
        if (wp_log_put(w, &o, 1) < 0)
            return -1;
    }
    return 0;
}

static const char *wp_log_level_name(int level)
{
    if (level <= WP_LOG_DEBUG)
        return "debug";
    if (level == WP_LOG_INFO)
        return "info";
    if (level == WP_LOG_WARN)
        return "warn";
    return "error";
}

static long long wp_log_now_ms(void)
{
    if (wp_log_clock)
        return wp_log_clock();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wp_log_format_ts(char *out, size_t cap)
{
    long long ms = wp_log_now_ms();
    if (ms < 0)
        ms = 0;
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&sec, &tm)) {
        snprintf(out, cap, "1970-01-01T00:00:00.000Z");
        return;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", date, (int)(ms % 1000));
}

/* Bytes reserved at the end of a line for closing text ("...\"}"). */
#define WP_LOG_RESERVE 5
/* Below this capacity no structural guarantee is attempted: the line is just cut. */
#define WP_LOG_MIN_CAP 8

/* One key=value / "key":value member; `str` may be NULL (JSON null). */
struct wp_log_member {
    const char *key;
    const char *str; /* string value (escaped), or NULL with is_int / is_null */
    long long ival;
    int is_int;
    int is_null;
};

/*
 * Writes one member preceded by its separator. On overflow, rolls back to the
 * last complete member or closes the open string value with "...". Returns -1
 * once the line is full.
 */
static int wp_log_member_put(struct wp_log_wr *w, int format, const struct wp_log_member *m,
                             char *raw)
{
    size_t mark = w->len;
    size_t klen = wp_log_redact(m->key ? m->key : "", m->key ? strlen(m->key) : 0, raw);
    int json = format == WP_LOG_FMT_JSON;
    if (json) {
        if (wp_log_put(w, mark > 1 ? ",\"" : "\"", mark > 1 ? 2 : 1) < 0 ||
            wp_log_escape(w, format, raw, klen) < 0 || wp_log_put(w, "\":", 2) < 0)
            goto rollback;
    } else {
        if ((mark > 0 && wp_log_put(w, " ", 1) < 0) || wp_log_put_key_logfmt(w, raw, klen) < 0 ||
            wp_log_put(w, "=", 1) < 0)
            goto rollback;
    }
    if (m->is_int) {
        char num[32];
        int nn = snprintf(num, sizeof num, "%lld", m->ival);
        if (wp_log_put(w, num, (size_t)nn) < 0)
            goto rollback;
        return 0;
    }
    if (m->is_null) {
        if (wp_log_puts(w, json ? "null" : "(null)") < 0)
            goto rollback;
        return 0;
    }
    size_t vlen = wp_log_redact(m->str, strlen(m->str), raw);
    int quote = json || wp_log_needs_quote(raw, vlen);
    if (quote && wp_log_put(w, "\"", 1) < 0)
        goto rollback;
    if (wp_log_escape(w, format, raw, vlen) < 0) {
        wp_log_fin(w, quote ? "...\"" : "...");
        return -1;
    }
    if (quote && wp_log_put(w, "\"", 1) < 0) {
        wp_log_fin(w, "...\"");
        return -1;
    }
    return 0;
rollback:
    w->len = mark;
    w->full = 1;
    if (!json)
        wp_log_fin(w, " ...");
    return -1;
}

size_t wp_log_format_line(char *out, size_t cap, int format, int level, const char *msg,
                          const wp_log_field *fields, size_t nfields)
{
    if (!out || cap == 0)
        return 0;
    char raw[WP_LOG_RAW_MAX];
    char ts[40];
    size_t total = cap - 1 < WP_LOG_LINE_MAX ? cap - 1 : WP_LOG_LINE_MAX;
    struct wp_log_wr w = {.p = out, .len = 0, .hard = total};
    w.lim = total >= WP_LOG_MIN_CAP ? total - WP_LOG_RESERVE : total;
    int json = format == WP_LOG_FMT_JSON;

    wp_log_format_ts(ts, sizeof ts);
    struct wp_log_member m = {0};
    pthread_mutex_lock(&wp_log_secret_mu);
    if (json && wp_log_put(&w, "{", 1) < 0)
        goto done;
    m.key = "ts";
    m.str = ts;
    if (wp_log_member_put(&w, format, &m, raw) < 0)
        goto done;
    m.str = wp_log_level_name(level);
    m.key = "level";
    if (wp_log_member_put(&w, format, &m, raw) < 0)
        goto done;
    if (!json) {
        /* msg is always quoted in logfmt */
        size_t mlen = wp_log_redact(msg ? msg : "", msg ? strlen(msg) : 0, raw);
        size_t mark = w.len;
        if (wp_log_put(&w, " msg=\"", 6) < 0) {
            w.len = mark;
            wp_log_fin(&w, " ...");
            goto done;
        }
        if (wp_log_escape(&w, format, raw, mlen) < 0 || wp_log_put(&w, "\"", 1) < 0) {
            wp_log_fin(&w, "...\"");
            goto done;
        }
    } else {
        m.key = "msg";
        m.str = msg ? msg : "";
        if (wp_log_member_put(&w, format, &m, raw) < 0)
            goto done;
    }
    for (size_t i = 0; i < nfields; i++) {
        const wp_log_field *f = &fields[i];
        memset(&m, 0, sizeof m);
        m.key = f->key ? f->key : "_";
        switch (f->type) {
        case WP_LF_STR:
            if (f->s)
                m.str = f->s;
            else
                m.is_null = 1;
            break;
        case WP_LF_INT:
            m.is_int = 1;
            m.ival = f->i;
            break;
        case WP_LF_ERR:
            m.str = wp_strerror(f->i < INT32_MIN || f->i > INT32_MAX ? 1 : (int)f->i);
            break;
        case WP_LF_SECRET:
            m.str = WP_LOG_REDACTED;
            break;
        default:
            continue;
        }
        if (wp_log_member_put(&w, format, &m, raw) < 0)
            goto done;
    }
done:
    pthread_mutex_unlock(&wp_log_secret_mu);
    if (json)
        wp_log_fin(&w, "}");
    wp_log_zero(raw, sizeof raw);
    out[w.len] = '\0';
    return w.len;
}

void wp_log_fields(int level, const char *msg, const wp_log_field *fields, size_t nfields)
{
    if (!wp_log_enabled(level))
        return;
    char line[WP_LOG_LINE_MAX + 1];
    /* the whole line, newline included, is at most WP_LOG_LINE_MAX bytes */
    size_t n =
        wp_log_format_line(line, WP_LOG_LINE_MAX, wp_log_format_cur, level, msg, fields, nfields);
    line[n++] = '\n';
    FILE *f = wp_log_out ? wp_log_out : stderr;
    fwrite(line, 1, n, f);
    fflush(f);
}
