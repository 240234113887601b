/*
 * fuzz_json.c — fuzz target for the JSON entry point (common/json.h).
 *
 * The input is untrusted JSON text. Invariants checked:
 *   - wp_json_parse returns only its documented codes; success under tight
 *     limits (64 bytes, depth 2) implies success under loose ones with an
 *     equal document; a parsed document is valid UTF-8 text without NUL,
 *     with only well-formed string escapes, and nests no deeper than max_depth;
 *   - printing a parsed document (wp_json_print) and parsing the text again
 *     yields an equal document (cJSON_Compare, and an order-sensitive
 *     comparison that also covers duplicate keys), and printing is stable;
 *   - wp_json_validate with a fixed field spec returns 0 or WP_ERR_INVAL,
 *     rejecting unknown fields is never more permissive than ignoring them, the
 *     message is printable ASCII and a truncated message is a prefix of the
 *     full one; the typed getters agree with what validation accepted;
 *   - wp_json_put_string on the raw input always produces text that
 *     wp_json_parse accepts as one string, equal to the input when that is
 *     valid UTF-8, and wp_json_error_body produces a parseable object.
 */
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "fuzz.h"
#include "json.h"

#define LOOSE_LEN   (1024u * 1024u)
#define LOOSE_DEPTH 16
#define TIGHT_LEN   64u
#define TIGHT_DEPTH 2

static const wp_json_field spec[] = {
    {"name", WP_JSON_STRING, 1, 16, 0, 0},  {"count", WP_JSON_INT, 0, 0, 1, 1000},
    {"ratio", WP_JSON_NUMBER, 0, 0, 0, 0},  {"enabled", WP_JSON_BOOL, 0, 0, 0, 0},
    {"labels", WP_JSON_OBJECT, 0, 4, 0, 0}, {"items", WP_JSON_ARRAY, 0, 8, 0, 0},
    {"big", WP_JSON_INT, 0, 0, 0, 0},       {"any", WP_JSON_STRING, 0, 0, 0, 0},
};
#define NSPEC (sizeof(spec) / sizeof(spec[0]))

/* Containers on the deepest path ("[]" is depth 1). */
static int doc_depth(const cJSON *v)
{
    if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
        return 0;
    int d = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        int cd = doc_depth(c);
        if (cd > d)
            d = cd;
    }
    return d + 1;
}

/* Nonzero if some number in v is not finite (cJSON prints those as null). */
static int has_nonfinite(const cJSON *v)
{
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
        return 1;
    for (const cJSON *c = v->child; c; c = c->next)
        if (has_nonfinite(c))
            return 1;
    return 0;
}

/* Nonzero if some object in v has two members with the same name. */
static int has_dup_keys(const cJSON *v)
{
    if (cJSON_IsObject(v))
        for (const cJSON *a = v->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && strcmp(a->string, b->string) == 0)
                    return 1;
    for (const cJSON *c = v->child; c; c = c->next)
        if (has_dup_keys(c))
            return 1;
    return 0;
}

/*
 * Printed numbers must read back as the same number. cJSON 1.7 prints with 15
 * significant digits whenever that reads back within DBL_EPSILON (relative),
 * so beyond 10^15 only that much is promised; below it integers are exact.
 */
static int same_number(double a, double b)
{
    if (a == b)
        return 1;
    if (floor(a) == a && fabs(a) < 1e15)
        return 0;
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= m * DBL_EPSILON;
}

/* Order-sensitive structural equality (member names, types, values). */
static int doc_equal(const cJSON *a, const cJSON *b)
{
    if ((a->type & 0xff) != (b->type & 0xff))
        return 0;
    if ((a->string == NULL) != (b->string == NULL) ||
        (a->string && strcmp(a->string, b->string) != 0))
        return 0;
    if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring) != 0)
        return 0;
    if (cJSON_IsNumber(a) && !same_number(a->valuedouble, b->valuedouble))
        return 0;
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next)
        if (!doc_equal(x, y))
            return 0;
    return x == NULL && y == NULL;
}

/*
 * Nonzero if every string in text[0..len) uses only RFC 8259 escapes: a
 * backslash followed by one of "\/bfnrt, or by u and exactly 4 hex digits.
 * (cJSON 1.7 decodes a malformed \u escape as U+0000, silently cutting the
 * string short, so a parse that succeeds must not contain one.)
 */
static int escapes_strict(const uint8_t *t, size_t len)
{
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        if (!in_str) {
            in_str = t[i] == '"';
            continue;
        }
        if (t[i] == '"') {
            in_str = 0;
        } else if (t[i] == '\\') {
            if (i + 1 >= len)
                return 0;
            uint8_t e = t[++i];
            if (e == 'u') {
                if (len - i < 5)
                    return 0;
                for (size_t k = 1; k <= 4; k++)
                    if (!isxdigit(t[i + k]))
                        return 0;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == 0) {
                return 0;
            }
        }
    }
    return 1;
}

static void check_message(const char *err, size_t cap)
{
    size_t n = strnlen(err, cap);
    WP_FUZZ_CHECK(n < cap);
    for (size_t i = 0; i < n; i++)
        WP_FUZZ_CHECK(err[i] >= 0x20 && err[i] < 0x7f);
}

static void check_validate(const cJSON *doc)
{
    char full[256], small[12], ign[256];
    int rej = wp_json_validate(doc, spec, NSPEC, WP_JSON_UNKNOWN_REJECT, full, sizeof(full));
    int rej2 = wp_json_validate(doc, spec, NSPEC, WP_JSON_UNKNOWN_REJECT, small, sizeof(small));
    int ig = wp_json_validate(doc, spec, NSPEC, WP_JSON_UNKNOWN_IGNORE, ign, sizeof(ign));
    WP_FUZZ_CHECK(rej == 0 || rej == WP_ERR_INVAL);
    WP_FUZZ_CHECK(ig == 0 || ig == WP_ERR_INVAL);
    WP_FUZZ_CHECK(rej2 == rej);
    check_message(full, sizeof(full));
    check_message(small, sizeof(small));
    check_message(ign, sizeof(ign));
    WP_FUZZ_CHECK(strncmp(full, small, strlen(small)) == 0);
    WP_FUZZ_CHECK(rej != 0 || ig == 0); /* rejecting unknown fields is stricter */
    if (rej == 0)
        WP_FUZZ_CHECK(full[0] == '\0');
    else
        WP_FUZZ_CHECK(full[0] != '\0');
    WP_FUZZ_CHECK(wp_json_validate(doc, spec, NSPEC, WP_JSON_UNKNOWN_IGNORE, NULL, 0) == ig);
    if (!cJSON_IsObject(doc))
        WP_FUZZ_CHECK(ig == WP_ERR_INVAL);

    /* getters agree with what validation accepted */
    const char *name = wp_json_get_str(doc, "name");
    long long count = 0;
    int cr = wp_json_get_int(doc, "count", &count);
    int enabled = -1;
    int br = wp_json_get_bool(doc, "enabled", &enabled);
    WP_FUZZ_CHECK(cr == 0 || cr == WP_ERR_NOT_FOUND || cr == WP_ERR_INVAL);
    WP_FUZZ_CHECK(br == 0 || br == WP_ERR_NOT_FOUND || br == WP_ERR_INVAL);
    if (br == 0)
        WP_FUZZ_CHECK(enabled == 0 || enabled == 1);
    if (ig == 0) {
        WP_FUZZ_CHECK(name != NULL && strlen(name) <= 16);
        WP_FUZZ_CHECK(wp_utf8_valid(name, strlen(name)));
        WP_FUZZ_CHECK(cr == 0 || cr == WP_ERR_NOT_FOUND);
        if (cr == 0)
            WP_FUZZ_CHECK(count >= 1 && count <= 1000);
        WP_FUZZ_CHECK(br == 0 || br == WP_ERR_NOT_FOUND);
    }
}

/* wp_json_print then wp_json_parse again gives an equal document; printing is stable. */
static void check_roundtrip(const cJSON *doc)
{
    char *text = wp_json_print(doc);
    WP_FUZZ_CHECK(text != NULL);
    if (has_nonfinite(doc)) { /* 1e999 prints as null: nothing to compare */
        cJSON_free(text);
        return;
    }
    cJSON *again = NULL;
    int rc = wp_json_parse(text, strlen(text), LOOSE_LEN * 2, LOOSE_DEPTH, &again);
    WP_FUZZ_CHECK(rc == 0);
    WP_FUZZ_CHECK(doc_equal(doc, again));
    if (!has_dup_keys(doc))
        WP_FUZZ_CHECK(cJSON_Compare(doc, again, 1));
    char *text2 = wp_json_print(again);
    WP_FUZZ_CHECK(text2 != NULL && strcmp(text, text2) == 0);
    cJSON_free(text2);
    cJSON_free(text);
    cJSON_Delete(again);
}

static void check_put_string(const uint8_t *data, size_t size)
{
    if (memchr(data, 0, size))
        return; /* NUL is escaped as \u0000, which wp_json_parse refuses by design */
    wp_buf b;
    wp_buf_init(&b, 6 * size + 16);
    WP_FUZZ_CHECK(wp_json_put_string(&b, (const char *)data, size) == 0);
    cJSON *s = NULL;
    int rc = wp_json_parse((const char *)wp_buf_ptr(&b), wp_buf_len(&b), wp_buf_len(&b), 1, &s);
    WP_FUZZ_CHECK(rc == 0 && cJSON_IsString(s));
    WP_FUZZ_CHECK(wp_utf8_valid(s->valuestring, strlen(s->valuestring)));
    if (wp_utf8_valid((const char *)data, size))
        WP_FUZZ_CHECK(strlen(s->valuestring) == size && memcmp(s->valuestring, data, size) == 0);
    cJSON_Delete(s);

    /* a full buffer: nothing appended */
    wp_buf tiny;
    wp_buf_init(&tiny, size + 1);
    WP_FUZZ_CHECK(wp_buf_put_u8(&tiny, 'x') == 0);
    rc = wp_json_put_string(&tiny, (const char *)data, size);
    WP_FUZZ_CHECK(rc == WP_ERR_LIMIT);
    WP_FUZZ_CHECK(wp_buf_len(&tiny) == 1);
    wp_buf_free(&tiny);

    /* an error body with the input as the message */
    char *msg = malloc(size + 1);
    WP_FUZZ_CHECK(msg != NULL);
    memcpy(msg, data, size);
    msg[size] = '\0';
    wp_buf_free(&b);
    wp_buf_init(&b, 6 * size + 64);
    WP_FUZZ_CHECK(wp_json_error_body(&b, "bad_request", msg) == 0);
    cJSON *e = NULL;
    rc = wp_json_parse((const char *)wp_buf_ptr(&b), wp_buf_len(&b), wp_buf_len(&b), 2, &e);
    WP_FUZZ_CHECK(rc == 0);
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(e, "error");
    WP_FUZZ_CHECK(inner && wp_json_get_str(inner, "code") &&
                  strcmp(wp_json_get_str(inner, "code"), "bad_request") == 0);
    WP_FUZZ_CHECK(wp_json_get_str(inner, "message") != NULL);
    cJSON_Delete(e);
    free(msg);
    wp_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    cJSON *loose = NULL, *tight = NULL;
    int rl = wp_json_parse(text, size, LOOSE_LEN, LOOSE_DEPTH, &loose);
    int rt = wp_json_parse(text, size, TIGHT_LEN, TIGHT_DEPTH, &tight);
    WP_FUZZ_CHECK(rl == 0 || rl == WP_ERR_LIMIT || rl == WP_ERR_MALFORMED);
    WP_FUZZ_CHECK(rt == 0 || rt == WP_ERR_LIMIT || rt == WP_ERR_MALFORMED);
    WP_FUZZ_CHECK((rl == 0) == (loose != NULL));
    WP_FUZZ_CHECK((rt == 0) == (tight != NULL));
    if (size > TIGHT_LEN)
        WP_FUZZ_CHECK(rt == WP_ERR_LIMIT);
    if (rt == 0) {
        WP_FUZZ_CHECK(rl == 0);
        WP_FUZZ_CHECK(doc_equal(loose, tight));
        WP_FUZZ_CHECK(doc_depth(tight) <= TIGHT_DEPTH);
    }
    if (rl == 0) {
        WP_FUZZ_CHECK(doc_depth(loose) <= LOOSE_DEPTH);
        WP_FUZZ_CHECK(memchr(data, 0, size) == NULL);
        WP_FUZZ_CHECK(wp_utf8_valid(text, size));
        WP_FUZZ_CHECK(escapes_strict(data, size));
        check_roundtrip(loose);
        check_validate(loose);
        /* each member value validated on its own (nested objects) */
        for (const cJSON *c = loose->child; c; c = c->next)
            if (cJSON_IsObject(c))
                check_validate(c);
    }
    cJSON_Delete(loose);
    cJSON_Delete(tight);
    if (size <= 4096)
        check_put_string(data, size);
    return 0;
}
