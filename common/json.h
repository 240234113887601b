/*
 * json.h — JSON helpers over cJSON with input validation.
 *
 * wp_json_parse() is the only way untrusted JSON enters wolfpack: it bounds
 * the input size and nesting depth (checked by a scan before cJSON runs, so
 * deep input cannot exhaust the stack), requires the whole input to be one
 * JSON value (trailing whitespace only), valid UTF-8, no raw control
 * characters in strings and no "\u0000" escapes. wp_json_validate() then
 * checks an object against a field spec so handlers read only typed, bounded,
 * known fields. Output helpers produce compact JSON.
 */
#ifndef WP_JSON_H
#define WP_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "buf.h"

/*
 * Parses text[0..len) (need not be NUL-terminated) into *out (free with
 * cJSON_Delete). Returns 0, WP_ERR_INVAL (NULL arguments), WP_ERR_LIMIT
 * (len > max_len, or containers nested deeper than max_depth: "[]" is depth 1),
 * WP_ERR_MALFORMED (not exactly one valid JSON value, embedded NUL, invalid
 * UTF-8, control character or \u0000 in a string) or WP_ERR_NOMEM. *out is
 * NULL on failure.
 */
int wp_json_parse(const char *text, size_t len, size_t max_len, int max_depth, cJSON **out);

enum wp_json_type {
    WP_JSON_STRING = 1,
    WP_JSON_INT,    /* integral number with |v| <= 2^53 (exact in a double) */
    WP_JSON_NUMBER, /* any finite number */
    WP_JSON_BOOL,
    WP_JSON_OBJECT,
    WP_JSON_ARRAY
};

enum wp_json_unknown { WP_JSON_UNKNOWN_REJECT = 0, WP_JSON_UNKNOWN_IGNORE = 1 };

typedef struct wp_json_field {
    const char *name;
    int type; /* enum wp_json_type */
    int required;
    size_t max_len;     /* strings: bytes; arrays: items; objects: members; 0 = no limit */
    long long min, max; /* ints only; both 0 = no range */
} wp_json_field;

/*
 * Checks that obj is an object whose members match fields[0..n): types, limits,
 * integer ranges, required fields present, valid UTF-8 strings, no duplicate
 * keys, and (with WP_JSON_UNKNOWN_REJECT) no members outside the spec. JSON null
 * is not accepted for any type. Returns 0 or WP_ERR_INVAL with a message for the
 * client in err (NUL-terminated, truncated to cap; err may be NULL), e.g.
 * `field "name": expected string`, `unknown field "x"`, `missing required field
 * "image"`, `field "max_sessions": must be between 1 and 1000`, `duplicate field "x"`.
 */
int wp_json_validate(const cJSON *obj, const wp_json_field *fields, size_t n, int unknown_policy,
                     char *err, size_t cap);

/* The string member `name` of o, or NULL if absent or not a string. */
const char *wp_json_get_str(const cJSON *o, const char *name);
/* 0 and *out set; WP_ERR_NOT_FOUND if absent; WP_ERR_INVAL if not an integer (as WP_JSON_INT). */
int wp_json_get_int(const cJSON *o, const char *name, long long *out);
/* 0 and *out set to 0/1; WP_ERR_NOT_FOUND if absent; WP_ERR_INVAL if not a boolean. */
int wp_json_get_bool(const cJSON *o, const char *name, int *out);

/* Nonzero if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
int wp_utf8_valid(const char *s, size_t n);

/*
 * Length (1..4) of the valid UTF-8 sequence at p (n bytes available), or 0 if
 * the bytes there are not valid UTF-8 (overlong, surrogate, > U+10FFFF,
 * truncated, stray continuation byte).
 */
size_t wp_utf8_seq_len(const unsigned char *p, size_t n);

/* Compact JSON text of v; free with cJSON_free. NULL on allocation failure. */
char *wp_json_print(const cJSON *v);

/*
 * Appends s[0..n) as a quoted JSON string (escaping quotes, backslashes and
 * control characters; invalid UTF-8 bytes become U+FFFD). Returns 0,
 * WP_ERR_LIMIT or WP_ERR_NOMEM; nothing is appended on failure.
 */
int wp_json_put_string(wp_buf *out, const char *s, size_t n);

/*
 * Appends exactly {"error":{"code":"<code>","message":"<message>"}} with both
 * strings escaped. Returns 0, WP_ERR_INVAL (NULL code), WP_ERR_LIMIT or
 * WP_ERR_NOMEM; nothing is appended on failure.
 */
int wp_json_error_body(wp_buf *out, const char *code, const char *message);

#endif
