/*
 * log.h — leveled, structured logging for all wolfpack binaries.
 *
 * One line per event, logfmt by default (`ts=... level=info msg="..." k=v`),
 * or one JSON object per line. Fields are typed (string, integer, error code,
 * secret). Two guarantees about secrets:
 *   - a field built with WP_LSECRET() always prints as "[REDACTED]";
 *   - any string registered with wp_log_secret_add() is replaced by
 *     "[REDACTED]" wherever it would appear in a line (message, keys, values).
 * Logging never allocates unboundedly: each line is truncated at
 * WP_LOG_LINE_MAX bytes.
 *
 * Usage:
 *   wp_log(WP_LOG_INFO, "listening", WP_LS("addr", addr), WP_LI("port", port));
 *   wp_log(WP_LOG_WARN, "tls handshake failed", WP_LE("err", rc));
 */
#ifndef WP_LOG_H
#define WP_LOG_H

#include <stddef.h>
#include <stdio.h>

#define WP_LOG_LINE_MAX    4096
#define WP_LOG_SECRETS_MAX 64

enum wp_log_level { WP_LOG_DEBUG = 0, WP_LOG_INFO = 1, WP_LOG_WARN = 2, WP_LOG_ERROR = 3 };
enum wp_log_format { WP_LOG_FMT_LOGFMT = 0, WP_LOG_FMT_JSON = 1 };

enum wp_log_field_type {
    WP_LF_NONE = 0, /* sentinel, ignored */
    WP_LF_STR,
    WP_LF_INT,
    WP_LF_ERR,   /* a WP_ERR_* code, printed as its wp_strerror() text */
    WP_LF_SECRET /* never printed */
};

typedef struct wp_log_field {
    const char *key;
    int type;
    const char *s;
    long long i;
} wp_log_field;

#define WP_LS(k, v)      ((wp_log_field){.key = (k), .type = WP_LF_STR, .s = (v)})
#define WP_LI(k, v)      ((wp_log_field){.key = (k), .type = WP_LF_INT, .i = (long long)(v)})
#define WP_LE(k, v)      ((wp_log_field){.key = (k), .type = WP_LF_ERR, .i = (long long)(v)})
#define WP_LSECRET(k, v) ((wp_log_field){.key = (k), .type = WP_LF_SECRET, .s = (v)})

/* Process-wide configuration (call from main before starting loops). */
void wp_log_set_level(int level);
int wp_log_get_level(void);
void wp_log_set_format(int format);
/* Output stream; default stderr. Not owned. */
void wp_log_set_output(FILE *f);
/* "debug"|"info"|"warn"|"error" -> level; 0 or WP_ERR_INVAL. */
int wp_log_level_parse(const char *s, int *level);
/* "logfmt"|"json" -> format; 0 or WP_ERR_INVAL. */
int wp_log_format_parse(const char *s, int *format);
/* Nonzero if a line at `level` would be written. */
int wp_log_enabled(int level);

/*
 * Registers a secret: every later line has every occurrence of it replaced by
 * "[REDACTED]". Strings shorter than 6 bytes are refused (WP_ERR_INVAL: they
 * would redact ordinary words). WP_ERR_LIMIT past WP_LOG_SECRETS_MAX. The
 * string is copied.
 */
int wp_log_secret_add(const char *secret);
/* Forgets all registered secrets (zeroing the copies). */
void wp_log_secret_clear(void);

/* Formats a line into out (NUL-terminated, truncated to cap). Returns its length. Pure
 * apart from the secret registry and the clock; used by wp_log_fields and by tests. */
size_t wp_log_format_line(char *out, size_t cap, int format, int level, const char *msg,
                          const wp_log_field *fields, size_t nfields);

void wp_log_fields(int level, const char *msg, const wp_log_field *fields, size_t nfields);

#define wp_log(level, msg, ...)                                                                    \
    do {                                                                                           \
        if (wp_log_enabled(level)) {                                                               \
            const wp_log_field wp_lf_[] = {{.type = WP_LF_NONE}, ##__VA_ARGS__};                   \
            wp_log_fields((level), (msg), wp_lf_ + 1, sizeof(wp_lf_) / sizeof(wp_lf_[0]) - 1);     \
        }                                                                                          \
    } while (0)

#define wp_log_debug(msg, ...) wp_log(WP_LOG_DEBUG, msg, ##__VA_ARGS__)
#define wp_log_info(msg, ...)  wp_log(WP_LOG_INFO, msg, ##__VA_ARGS__)
#define wp_log_warn(msg, ...)  wp_log(WP_LOG_WARN, msg, ##__VA_ARGS__)
#define wp_log_error(msg, ...) wp_log(WP_LOG_ERROR, msg, ##__VA_ARGS__)

/*
 * TEST ONLY: replaces the clock used for the "ts" field (milliseconds since the
 * Unix epoch). NULL restores the real clock (CLOCK_REALTIME). Not for production use.
 */
void wp_log_set_clock(long long (*now_ms)(void));

#endif
