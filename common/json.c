/*
 * json.c — bounded JSON parsing, field-spec validation, getters and compact
 * output over cJSON (see json.h).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "err.h"
#include "json.h"

/* Largest integer magnitude accepted as WP_JSON_INT: exactly representable in a double. */
#define WP_JSON_INT_LIMIT 9007199254740992.0 /* 2^53 */

/* Length of the valid UTF-8 sequence at p (1..4) or 0 if invalid / truncated. */
size_t wp_utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* > U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

int wp_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = wp_utf8_seq_len(p + i, n - i);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

/*
 * Length of the RFC 8259 number at t (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?)
 * when the run of number characters there (what cJSON hands to strtod:
 * digits, + - . e E) is exactly one such number; 0 otherwise ("01", "1.",
 * "1e", "-", "1.5.2" are refused instead of being read leniently).
 */
static size_t wp_json_number_len(const unsigned char *t, size_t len)
{
    size_t run = 0;
    while (run < len && memchr("0123456789+-.eE", t[run], 15))
        run++;
    size_t i = 0;
    if (i < run && t[i] == '-')
        i++;
    if (i >= run || t[i] < '0' || t[i] > '9')
        return 0;
    if (t[i] == '0')
        i++;
    else
        while (i < run && t[i] >= '0' && t[i] <= '9')
            i++;
    if (i < run && t[i] == '.') {
        size_t d = ++i;
        while (i < run && t[i] >= '0' && t[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < run && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < run && (t[i] == '+' || t[i] == '-'))
            i++;
        size_t d = i;
        while (i < run && t[i] >= '0' && t[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == run ? run : 0;
}

/*
 * Pre-scan before cJSON: nesting depth, embedded NUL, raw control characters
 * and \u0000 escapes in strings, invalid UTF-8 in strings, number syntax.
 */
static int wp_json_prescan(const unsigned char *t, size_t len, int max_depth)
{
    long depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = t[i];
        if (c == 0)
            return WP_ERR_MALFORMED;
        if (in_str) {
            if (c == '\\') {
                if (i + 1 >= len)
                    return WP_ERR_MALFORMED;
                unsigned char e = t[i + 1];
                if (e == 'u') {
                    /* cJSON decodes a non-hex \u escape as U+0000, silently cutting the
                     * string: require four hex digits, and refuse \u0000 itself. */
                    if (len - i < 6 || memcmp(t + i + 2, "0000", 4) == 0)
                        return WP_ERR_MALFORMED;
                    for (size_t k = 2; k < 6; k++)
                        if (wp_hex_digit((char)t[i + k]) < 0)
                            return WP_ERR_MALFORMED;
                    i += 5;
                    continue;
                }
                if (!memchr("\"\\/bfnrt", e, 8) || e == 0)
                    return WP_ERR_MALFORMED;
                i++; /* the escaped character */
            } else if (c == '"') {
                in_str = 0;
            } else if (c < 0x20) {
                return WP_ERR_MALFORMED;
            } else if (c >= 0x80) {
                size_t l = wp_utf8_seq_len(t + i, len - i);
                if (l == 0)
                    return WP_ERR_MALFORMED;
                i += l - 1;
            }
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return WP_ERR_LIMIT;
        } else if (c == ']' || c == '}') {
            if (depth > 0)
                depth--;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t n = wp_json_number_len(t + i, len - i);
            if (n == 0)
                return WP_ERR_MALFORMED;
            i += n - 1;
        } else if (c >= 0x80) {
            return WP_ERR_MALFORMED;
        }
    }
    return 0;
}

int wp_json_parse(const char *text, size_t len, size_t max_len, int max_depth, cJSON **out)
{
    if (!out)
        return WP_ERR_INVAL;
    *out = NULL;
    if (!text)
        return WP_ERR_INVAL;
    if (len > max_len)
        return WP_ERR_LIMIT;
    if (len == 0)
        return WP_ERR_MALFORMED;
    int rc = wp_json_prescan((const unsigned char *)text, len, max_depth);
    if (rc < 0)
        return rc;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!v)
        return WP_ERR_MALFORMED;
    /* only whitespace may follow the value */
    size_t pos = end ? (size_t)(end - text) : len;
    while (pos < len &&
           (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r'))
        pos++;
    if (pos != len) {
        cJSON_Delete(v);
        return WP_ERR_MALFORMED;
    }
    *out = v;
    return 0;
}

/* Writes a field name for an error message: at most 64 bytes, printable ASCII only. */
static void wp_json_safe_name(const char *name, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    if (!name)
        name = "";
    for (; name[i] && o + 1 < cap && i < 64; i++) {
        unsigned char c = (unsigned char)name[i];
        out[o++] = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
    }
    if (name[i] && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static int wp_json_fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int wp_json_fail(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return WP_ERR_INVAL;
}

static const char *wp_json_type_name(int type)
{
    switch (type) {
    case WP_JSON_STRING:
        return "string";
    case WP_JSON_INT:
        return "integer";
    case WP_JSON_NUMBER:
        return "number";
    case WP_JSON_BOOL:
        return "boolean";
    case WP_JSON_OBJECT:
        return "object";
    case WP_JSON_ARRAY:
        return "array";
    default:
        return "unknown type";
    }
}

/* Nonzero if v is a number usable as WP_JSON_INT; stores it in *out. */
static int wp_json_as_int(const cJSON *v, long long *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d > WP_JSON_INT_LIMIT || d < -WP_JSON_INT_LIMIT)
        return 0;
    long long x = (long long)d; /* in range: the conversion is defined */
    if ((double)x != d)
        return 0; /* fractional */
    *out = x;
    return 1;
}

static size_t wp_json_count(const cJSON *v)
{
    size_t n = 0;
    for (const cJSON *c = v->child; c; c = c->next)
        n++;
    return n;
}

static int wp_json_cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Returns the first duplicated member name of obj, or NULL. *nomem set on allocation failure. */
static const char *wp_json_find_dup(const cJSON *obj, int *nomem)
{
    size_t n = wp_json_count(obj);
    *nomem = 0;
    if (n <= 32) {
        for (const cJSON *a = obj->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && strcmp(a->string, b->string) == 0)
                    return a->string;
        return NULL;
    }
    const char **names = malloc(n * sizeof *names);
    if (!names) {
        *nomem = 1;
        return NULL;
    }
    size_t k = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string)
            names[k++] = c->string;
    qsort(names, k, sizeof *names, wp_json_cmp_names);
    const char *dup = NULL;
    for (size_t i = 1; i < k && !dup; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            dup = names[i];
    free(names);
    return dup;
}

static int wp_json_check_field(const cJSON *v, const wp_json_field *f, const char *nm, char *err,
                               size_t cap)
{
    const char *tn = wp_json_type_name(f->type);
    switch (f->type) {
    case WP_JSON_STRING: {
        if (!cJSON_IsString(v) || !v->valuestring)
            return wp_json_fail(err, cap, "field \"%s\": expected %s", nm, tn);
        size_t l = strlen(v->valuestring);
        if (!wp_utf8_valid(v->valuestring, l))
            return wp_json_fail(err, cap, "field \"%s\": invalid UTF-8", nm);
        if (f->max_len && l > f->max_len)
            return wp_json_fail(err, cap, "field \"%s\": must be at most %zu bytes", nm,
                                f->max_len);
        return 0;
    }
    case WP_JSON_INT: {
        long long x;
        if (!wp_json_as_int(v, &x))
            return wp_json_fail(err, cap, "field \"%s\": expected %s", nm, tn);
        if ((f->min || f->max) && (x < f->min || x > f->max))
            return wp_json_fail(err, cap, "field \"%s\": must be between %lld and %lld", nm, f->min,
                                f->max);
        return 0;
    }
    case WP_JSON_NUMBER:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            return wp_json_fail(err, cap, "field \"%s\": expected %s", nm, tn);
        return 0;
    case WP_JSON_BOOL:
        if (!cJSON_IsBool(v))
            return wp_json_fail(err, cap, "field \"%s\": expected %s", nm, tn);
        return 0;
    case WP_JSON_OBJECT:
    case WP_JSON_ARRAY: {
        int ok = f->type == WP_JSON_OBJECT ? cJSON_IsObject(v) : cJSON_IsArray(v);
        if (!ok)
            return wp_json_fail(err, cap, "field \"%s\": expected %s", nm, tn);
        if (f->max_len && wp_json_count(v) > f->max_len)
            return wp_json_fail(err, cap, "field \"%s\": must have at most %zu %s", nm, f->max_len,
                                f->type == WP_JSON_OBJECT ? "members" : "items");
        return 0;
    }
    default:
        return wp_json_fail(err, cap, "field \"%s\": unsupported type in spec", nm);
    }
}

int wp_json_validate(const cJSON *obj, const wp_json_field *fields, size_t n, int unknown_policy,
                     char *err, size_t cap)
{
    char nm[80];
    if (err && cap)
        err[0] = '\0';
    if (!cJSON_IsObject(obj))
        return wp_json_fail(err, cap, "expected a JSON object");
    if (!fields && n)
        return wp_json_fail(err, cap, "invalid field spec");
    int nomem = 0;
    const char *dup = wp_json_find_dup(obj, &nomem);
    if (nomem)
        return wp_json_fail(err, cap, "out of memory");
    if (dup) {
        wp_json_safe_name(dup, nm, sizeof nm);
        return wp_json_fail(err, cap, "duplicate field \"%s\"", nm);
    }
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        if (!wp_utf8_valid(key, strlen(key))) {
            wp_json_safe_name(key, nm, sizeof nm);
            return wp_json_fail(err, cap, "field \"%s\": invalid UTF-8 in name", nm);
        }
        if (unknown_policy == WP_JSON_UNKNOWN_IGNORE)
            continue;
        size_t i = 0;
        while (i < n && strcmp(fields[i].name, key) != 0)
            i++;
        if (i == n) {
            wp_json_safe_name(key, nm, sizeof nm);
            return wp_json_fail(err, cap, "unknown field \"%s\"", nm);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const wp_json_field *f = &fields[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->name);
        wp_json_safe_name(f->name, nm, sizeof nm);
        if (!v) {
            if (f->required)
                return wp_json_fail(err, cap, "missing required field \"%s\"", nm);
            continue;
        }
        int rc = wp_json_check_field(v, f, nm, err, cap);
        if (rc < 0)
            return rc;
    }
    return 0;
}

const char *wp_json_get_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int wp_json_get_int(const cJSON *o, const char *name, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v)
        return WP_ERR_NOT_FOUND;
    long long x;
    if (!wp_json_as_int(v, &x))
        return WP_ERR_INVAL;
    *out = x;
    return 0;
}

int wp_json_get_bool(const cJSON *o, const char *name, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v)
        return WP_ERR_NOT_FOUND;
    if (!cJSON_IsBool(v))
        return WP_ERR_INVAL;
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

char *wp_json_print(const cJSON *v)
{
    if (!v)
        return NULL;
    return cJSON_PrintUnformatted(v);
}

/* Appends the escaped body of a JSON string (no quotes). */
static int wp_json_put_escaped(wp_buf *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the current run of bytes copied verbatim */
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        char esc[8];
        const char *e = NULL;
        size_t adv = 1;
        if (c == '"') {
            e = "\\\"";
        } else if (c == '\\') {
            e = "\\\\";
        } else if (c == '\n') {
            e = "\\n";
        } else if (c == '\r') {
            e = "\\r";
        } else if (c == '\t') {
            e = "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            e = esc;
        } else if (c >= 0x80) {
            size_t l = wp_utf8_seq_len(p + i, n - i);
            if (l == 0)
                e = "\\ufffd";
            else
                adv = l;
        }
        if (e) {
            int rc = wp_buf_put(out, p + run, i - run);
            if (rc == 0)
                rc = wp_buf_put_str(out, e);
            if (rc < 0)
                return rc;
            run = i + adv;
        }
        i += adv;
    }
    return wp_buf_put(out, p + run, n - run);
}

int wp_json_put_string(wp_buf *out, const char *s, size_t n)
{
    size_t before = wp_buf_len(out);
    int rc = wp_buf_put_u8(out, '"');
    if (rc == 0 && n)
        rc = wp_json_put_escaped(out, s, n);
    if (rc == 0)
        rc = wp_buf_put_u8(out, '"');
    if (rc < 0)
        out->end = out->off + before; /* roll back the partial append */
    return rc;
}

int wp_json_error_body(wp_buf *out, const char *code, const char *message)
{
    if (!out || !code)
        return WP_ERR_INVAL;
    if (!message)
        message = "";
    size_t before = wp_buf_len(out);
    int rc = wp_buf_put_str(out, "{\"error\":{\"code\":");
    if (rc == 0)
        rc = wp_json_put_string(out, code, strlen(code));
    if (rc == 0)
        rc = wp_buf_put_str(out, ",\"message\":");
    if (rc == 0)
        rc = wp_json_put_string(out, message, strlen(message));
    if (rc == 0)
        rc = wp_buf_put_str(out, "}}");
    if (rc < 0)
        out->end = out->off + before;
    return rc;
}
