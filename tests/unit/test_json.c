/*
 * test_json.c — unit tests for common/json.c: bounded parsing (size, depth,
 * trailing garbage, NUL, UTF-8), the field-spec validator, getters and output.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "json.h"
#include "wp_test.h"

#define MAXLEN   65536
#define MAXDEPTH 16

static int parse_str(const char *s, cJSON **out)
{
    return wp_json_parse(s, strlen(s), MAXLEN, MAXDEPTH, out);
}

/* Parses s from an exactly-sized heap copy (no NUL after it) so ASan sees overreads. */
static int parse_exact(const char *s, size_t n, cJSON **out)
{
    char *copy = malloc(n ? n : 1);
    if (!copy)
        return WP_ERR_NOMEM;
    memcpy(copy, s, n);
    int rc = wp_json_parse(copy, n, MAXLEN, MAXDEPTH, out);
    free(copy);
    return rc;
}

WP_TEST(json_parse_valid)
{
    static const char *ok[] = {"{}",
                               "[]",
                               "1",
                               "-0.5e3",
                               "\"s\"",
                               "true",
                               "null",
                               " {\"a\": [1, 2, {\"b\": null}]} \r\n\t",
                               "{\"u\":\"\\u00e9\\ud83d\\ude00\xc3\xa9\"}"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cJSON *v = NULL;
        int rc = parse_exact(ok[i], strlen(ok[i]), &v);
        WP_CHECK_EQ(rc, 0);
        if (rc)
            printf("  rejected: %s\n", ok[i]);
        WP_CHECK(v != NULL);
        cJSON_Delete(v);
    }
    cJSON *v = NULL;
    WP_CHECK_EQ(parse_str("{\"a\":{\"b\":[true]}}", &v), 0);
    WP_CHECK(cJSON_IsTrue(cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(v, "a"), "b"), 0)));
    cJSON_Delete(v);
}

WP_TEST(json_parse_malformed)
{
    static const char *bad[] = {
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{} {}", "{}x", "[1] ]", "1 2", "tru",
        "nul", "\"unterminated", "\"bad \\q escape\"", "\"ctl \x01 char\"", "\"tab\tin string\"",
        "\"nul escape \\u0000\"", "\"lone \\ud800 surrogate\"", "\"overlong \xc0\xaf\"",
        "\"surrogate \xed\xa0\x80\"", "\"truncated \xe2\x82\"", "\"high \xf4\x90\x80\x80\"",
        "\"stray \x80\"", "\xef\xbb\xbf{}", "{\"a\":1}\"", "\"\\",
        /* numbers: RFC 8259 grammar, not strtod's */
        "01", "[-01]", "1.", "[1.e5]", "1e", "1e+", "-", "[-]", "1.5.2", "1-2", "{\"a\":00}",
        "[1E5e]", "-.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *v = (cJSON *)1;
        int rc = parse_exact(bad[i], strlen(bad[i]), &v);
        WP_CHECK_EQ(rc, WP_ERR_MALFORMED);
        WP_CHECK(v == NULL);
        if (rc != WP_ERR_MALFORMED)
            printf("  accepted (%d): %s\n", rc, bad[i]);
        cJSON_Delete(rc == 0 ? v : NULL);
    }
    /* embedded NUL, inside and outside strings */
    cJSON *v = NULL;
    WP_CHECK_EQ(parse_exact("{}\0", 3, &v), WP_ERR_MALFORMED);
    WP_CHECK_EQ(parse_exact("\"a\0b\"", 5, &v), WP_ERR_MALFORMED);
    WP_CHECK_EQ(parse_exact("[1,\0 2]", 7, &v), WP_ERR_MALFORMED);
    /* bad arguments */
    WP_CHECK_EQ(wp_json_parse(NULL, 0, MAXLEN, MAXDEPTH, &v), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_parse("{}", 2, MAXLEN, MAXDEPTH, NULL), WP_ERR_INVAL);
}

WP_TEST(json_parse_numbers_ok)
{
    static const char *good[] = {
        "0",        "-0",          "10",        "-12.5",           "1e5", "1E+5", "2.5e-3",
        "[0,1,-1]", "{\"a\":0.0}", "[ 7 , 8 ]", "9007199254740991"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cJSON *v = NULL;
        int rc = parse_exact(good[i], strlen(good[i]), &v);
        WP_CHECK_EQ(rc, 0);
        if (rc != 0)
            printf("  refused (%d): %s\n", rc, good[i]);
        cJSON_Delete(v);
    }
}

/* Found by fuzzing: cJSON turns a non-hex \u escape into U+0000 and cuts the string. */
WP_TEST(json_parse_bad_escapes)
{
    static const char *bad[] = {
        "{\"name\":\"admin\\uZZZZ-evil\"}",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\x41\"",
        "\"\\\xc8\"",
        "\"\\u0000\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *doc = NULL;
        WP_CHECK_EQ(wp_json_parse(bad[i], strlen(bad[i]), 1024, 8, &doc), WP_ERR_MALFORMED);
        cJSON_Delete(doc);
    }
    cJSON *doc = NULL;
    const char *ok = "\"a\\u00e9\\n\\\"\\/\\\\\"";
    WP_CHECK_EQ(wp_json_parse(ok, strlen(ok), 1024, 8, &doc), 0);
    WP_CHECK(doc && cJSON_IsString(doc) && strcmp(doc->valuestring, "a\xc3\xa9\n\"/\\") == 0);
    cJSON_Delete(doc);
}

WP_TEST(json_parse_not_terminated)
{
    /* a prefix of a longer buffer: only len bytes count */
    const char *s = "{\"a\":1}GARBAGE";
    cJSON *v = NULL;
    WP_CHECK_EQ(wp_json_parse(s, 7, MAXLEN, MAXDEPTH, &v), 0);
    long long a = 0;
    WP_CHECK_EQ(wp_json_get_int(v, "a", &a), 0);
    WP_CHECK_EQ(a, 1);
    cJSON_Delete(v);
    WP_CHECK_EQ(wp_json_parse(s, 8, MAXLEN, MAXDEPTH, &v), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_json_parse(s, 6, MAXLEN, MAXDEPTH, &v), WP_ERR_MALFORMED);
    /* exact-size heap buffers with values ending right at the edge */
    static const char *edge[] = {"123", "true", "null", "\"x\"", "[1]", "-1e5"};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        WP_CHECK_EQ(parse_exact(edge[i], strlen(edge[i]), &v), 0);
        cJSON_Delete(v);
        v = NULL;
    }
    WP_CHECK_EQ(parse_exact("12", 1, &v), 0);
    WP_CHECK(cJSON_IsNumber(v) && v->valuedouble == 1.0);
    cJSON_Delete(v);
}

WP_TEST(json_parse_limits)
{
    cJSON *v = NULL;
    WP_CHECK_EQ(wp_json_parse("[1,2]", 5, 4, MAXDEPTH, &v), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_json_parse("[1,2]", 5, 5, MAXDEPTH, &v), 0);
    cJSON_Delete(v);
    /* depth: max_depth containers ok, one more refused */
    WP_CHECK_EQ(wp_json_parse("[[[]]]", 6, MAXLEN, 3, &v), 0);
    cJSON_Delete(v);
    WP_CHECK_EQ(wp_json_parse("[[[[]]]]", 8, MAXLEN, 3, &v), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_json_parse("{\"a\":{\"b\":[{}]}}", 16, MAXLEN, 3, &v), WP_ERR_LIMIT);
    /* brackets inside strings do not count */
    const char *s = "{\"a\":\"[[[[[[[[{{{{\\\"[[[[\"}";
    WP_CHECK_EQ(wp_json_parse(s, strlen(s), MAXLEN, 1, &v), 0);
    cJSON_Delete(v);
    /* sequential (not nested) containers do not accumulate */
    WP_CHECK_EQ(parse_str("[[],[],[],[],[],[],[],[],[],[],[],[],[],[],[],[],[],[],[],[]]", &v), 0);
    cJSON_Delete(v);
    /* 100000 '[' : refused by the scan, no stack blow-up */
    size_t n = 100000;
    char *deep = malloc(2 * n);
    WP_CHECK(deep != NULL);
    if (!deep)
        return;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    WP_CHECK_EQ(wp_json_parse(deep, 2 * n, 4 * n, MAXDEPTH, &v), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_json_parse(deep, n, 4 * n, 200000, &v) < 0, 1); /* cJSON's own limit */
    WP_CHECK(v == NULL);
    free(deep);
    /* scalars need no depth */
    WP_CHECK_EQ(wp_json_parse("7", 1, MAXLEN, 0, &v), 0);
    cJSON_Delete(v);
    WP_CHECK_EQ(wp_json_parse("[]", 2, MAXLEN, 0, &v), WP_ERR_LIMIT);
}

static const wp_json_field spec[] = {
    {.name = "image", .type = WP_JSON_STRING, .required = 1, .max_len = 16},
    {.name = "max_sessions", .type = WP_JSON_INT, .min = 1, .max = 1000},
    {.name = "offset", .type = WP_JSON_INT},
    {.name = "ratio", .type = WP_JSON_NUMBER},
    {.name = "enabled", .type = WP_JSON_BOOL},
    {.name = "labels", .type = WP_JSON_OBJECT, .max_len = 2},
    {.name = "gpus", .type = WP_JSON_ARRAY, .max_len = 3},
};
#define NSPEC (sizeof spec / sizeof spec[0])

static int validate(const char *text, int policy, char *err, size_t cap)
{
    cJSON *v = NULL;
    int rc = parse_str(text, &v);
    if (rc < 0) {
        snprintf(err, cap, "PARSE FAILED %d", rc);
        return 1;
    }
    rc = wp_json_validate(v, spec, NSPEC, policy, err, cap);
    cJSON_Delete(v);
    return rc;
}

WP_TEST(json_validate_ok)
{
    char err[128] = "untouched";
    WP_CHECK_EQ(validate("{\"image\":\"steam\"}", WP_JSON_UNKNOWN_REJECT, err, sizeof err), 0);
    WP_CHECK_STR(err, "");
    WP_CHECK_EQ(validate("{\"image\":\"0123456789abcdef\",\"max_sessions\":1000,\"offset\":-"
                         "9007199254740992,\"ratio\":1.5e10,\"enabled\":false,\"labels\":{\"a\":"
                         "1,\"b\":2},\"gpus\":[0,1,2]}",
                         WP_JSON_UNKNOWN_REJECT, err, sizeof err),
                0);
    WP_CHECK_STR(err, "");
    WP_CHECK_EQ(validate("{\"image\":\"x\",\"extra\":1}", WP_JSON_UNKNOWN_IGNORE, err, sizeof err),
                0);
    WP_CHECK_EQ(
        validate("{\"image\":\"x\",\"max_sessions\":1.0}", WP_JSON_UNKNOWN_REJECT, err, sizeof err),
        0);
    WP_CHECK_EQ(validate("{\"image\":\"caf\xc3\xa9\"}", 0, err, sizeof err), 0);
}

WP_TEST(json_validate_errors)
{
    static const struct {
        const char *in;
        const char *err;
    } cases[] = {
        {"{}", "missing required field \"image\""},
        {"{\"image\":5}", "field \"image\": expected string"},
        {"{\"image\":null}", "field \"image\": expected string"},
        {"{\"image\":\"0123456789abcdefX\"}", "field \"image\": must be at most 16 bytes"},
        {"{\"image\":\"x\",\"x\":1}", "unknown field \"x\""},
        {"{\"image\":\"x\",\"image\":\"y\"}", "duplicate field \"image\""},
        {"{\"image\":\"x\",\"max_sessions\":0}",
         "field \"max_sessions\": must be between 1 and 1000"},
        {"{\"image\":\"x\",\"max_sessions\":1001}",
         "field \"max_sessions\": must be between 1 and 1000"},
        {"{\"image\":\"x\",\"max_sessions\":1.5}", "field \"max_sessions\": expected integer"},
        {"{\"image\":\"x\",\"offset\":1e300}", "field \"offset\": expected integer"},
        {"{\"image\":\"x\",\"offset\":9007199254740994}", "field \"offset\": expected integer"},
        {"{\"image\":\"x\",\"offset\":\"5\"}", "field \"offset\": expected integer"},
        {"{\"image\":\"x\",\"ratio\":1e999}", "field \"ratio\": expected number"},
        {"{\"image\":\"x\",\"ratio\":true}", "field \"ratio\": expected number"},
        {"{\"image\":\"x\",\"enabled\":1}", "field \"enabled\": expected boolean"},
        {"{\"image\":\"x\",\"labels\":[]}", "field \"labels\": expected object"},
        {"{\"image\":\"x\",\"labels\":{\"a\":1,\"b\":2,\"c\":3}}",
         "field \"labels\": must have at most 2 members"},
        {"{\"image\":\"x\",\"gpus\":{}}", "field \"gpus\": expected array"},
        {"{\"image\":\"x\",\"gpus\":[1,2,3,4]}", "field \"gpus\": must have at most 3 items"},
        {"{\"image\":\"x\",\"bad\\nname\\\"\":1}", "unknown field \"bad?name?\""},
        {"[]", "expected a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[128] = "";
        int rc = validate(cases[i].in, WP_JSON_UNKNOWN_REJECT, err, sizeof err);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
        WP_CHECK_STR(err, cases[i].err);
    }
    /* small error buffers truncate, NULL is allowed */
    char tiny[8];
    WP_CHECK_EQ(validate("{}", 0, tiny, sizeof tiny), WP_ERR_INVAL);
    WP_CHECK_STR(tiny, "missing");
    cJSON *v = cJSON_CreateObject();
    WP_CHECK_EQ(wp_json_validate(v, spec, NSPEC, 0, NULL, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_validate(NULL, spec, NSPEC, 0, NULL, 0), WP_ERR_INVAL);
    cJSON_Delete(v);
    /* a very long unknown name is cut in the message */
    char in[400], err[256];
    memset(in, 0, sizeof in);
    strcpy(in, "{\"image\":\"x\",\"");
    memset(in + strlen(in), 'k', 200);
    strcat(in, "\":1}");
    WP_CHECK_EQ(validate(in, 0, err, sizeof err), WP_ERR_INVAL);
    WP_CHECK(strlen(err) < 100);
    WP_CHECK(strstr(err, "kkk...\"") != NULL);
}

WP_TEST(json_validate_duplicates_many)
{
    /* many members exercise the sorted duplicate check */
    wp_buf b;
    wp_buf_init(&b, 1 << 20);
    WP_CHECK_EQ(wp_buf_put_str(&b, "{"), 0);
    for (int i = 0; i < 500; i++)
        WP_CHECK_EQ(wp_buf_putf(&b, "%s\"k%d\":%d", i ? "," : "", i, i), 0);
    size_t base = wp_buf_len(&b);
    char err[64];
    cJSON *v = NULL;
    /* without a duplicate it passes */
    WP_CHECK_EQ(wp_buf_put_str(&b, "}"), 0);
    WP_CHECK_EQ(wp_json_parse((const char *)wp_buf_ptr(&b), wp_buf_len(&b), 1 << 20, 4, &v), 0);
    WP_CHECK_EQ(wp_json_validate(v, NULL, 0, WP_JSON_UNKNOWN_IGNORE, err, sizeof err), 0);
    cJSON_Delete(v);
    /* with one it is refused */
    b.end = b.off + base;
    WP_CHECK_EQ(wp_buf_put_str(&b, ",\"k250\":0}"), 0);
    WP_CHECK_EQ(wp_json_parse((const char *)wp_buf_ptr(&b), wp_buf_len(&b), 1 << 20, 4, &v), 0);
    WP_CHECK_EQ(wp_json_validate(v, NULL, 0, WP_JSON_UNKNOWN_IGNORE, err, sizeof err),
                WP_ERR_INVAL);
    WP_CHECK_STR(err, "duplicate field \"k250\"");
    cJSON_Delete(v);
    wp_buf_free(&b);
}

WP_TEST(json_validate_utf8)
{
    /* strings built without the parser (which already rejects these) */
    static const char *bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* UTF-16 surrogate U+D800 */
        "\xed\xbf\xbf",     /* surrogate U+DFFF */
        "\xe2\x82",         /* truncated */
        "abc\xf0\x9f\x98",  /* truncated at end */
        "\x80",             /* stray continuation */
        "\xf4\x90\x80\x80", /* > U+10FFFF */
        "\xff",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "image", bad[i]);
        char err[64] = "";
        WP_CHECK_EQ(wp_json_validate(o, spec, NSPEC, 0, err, sizeof err), WP_ERR_INVAL);
        WP_CHECK_STR(err, "field \"image\": invalid UTF-8");
        cJSON_Delete(o);
        WP_CHECK(!wp_utf8_valid(bad[i], strlen(bad[i])));
    }
    static const char *good[] = {"",
                                 "ascii",
                                 "\xc2\x80",
                                 "\xe0\xa0\x80",
                                 "\xed\x9f\xbf",
                                 "\xee\x80\x80",
                                 "\xf0\x90\x80\x80",
                                 "\xf4\x8f\xbf\xbf",
                                 "\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        WP_CHECK(wp_utf8_valid(good[i], strlen(good[i])));
    /* invalid UTF-8 in a member name */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", "x");
    cJSON_AddNumberToObject(o, "k\xff", 1);
    char err[64] = "";
    WP_CHECK_EQ(wp_json_validate(o, spec, NSPEC, WP_JSON_UNKNOWN_IGNORE, err, sizeof err),
                WP_ERR_INVAL);
    WP_CHECK_STR(err, "field \"k?\": invalid UTF-8 in name");
    cJSON_Delete(o);
}

WP_TEST(json_getters)
{
    cJSON *v = NULL;
    WP_CHECK_EQ(
        parse_str("{\"s\":\"str\",\"i\":-42,\"f\":2.5,\"b\":true,\"n\":null,\"big\":1e20}", &v), 0);
    long long i = 7;
    int b = 7;
    WP_CHECK_STR(wp_json_get_str(v, "s"), "str");
    WP_CHECK(wp_json_get_str(v, "i") == NULL);
    WP_CHECK(wp_json_get_str(v, "missing") == NULL);
    WP_CHECK(wp_json_get_str(v, "S") == NULL); /* case-sensitive */
    WP_CHECK_EQ(wp_json_get_int(v, "i", &i), 0);
    WP_CHECK_EQ(i, -42);
    i = 7;
    WP_CHECK_EQ(wp_json_get_int(v, "f", &i), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_get_int(v, "big", &i), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_get_int(v, "s", &i), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_get_int(v, "n", &i), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_get_int(v, "missing", &i), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(i, 7);
    WP_CHECK_EQ(wp_json_get_bool(v, "b", &b), 0);
    WP_CHECK_EQ(b, 1);
    WP_CHECK_EQ(wp_json_get_bool(v, "i", &b), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_json_get_bool(v, "missing", &b), WP_ERR_NOT_FOUND);
    cJSON_Delete(v);
}

WP_TEST(json_print_and_error_body)
{
    cJSON *v = NULL;
    WP_CHECK_EQ(parse_str("{ \"a\" : [ 1 , \"x\" ] }", &v), 0);
    char *s = wp_json_print(v);
    WP_CHECK_STR(s, "{\"a\":[1,\"x\"]}");
    cJSON_free(s);
    cJSON_Delete(v);
    WP_CHECK(wp_json_print(NULL) == NULL);

    wp_buf b;
    wp_buf_init(&b, 4096);
    WP_CHECK_EQ(wp_json_error_body(&b, "not_found", "no such node"), 0);
    const char *want = "{\"error\":{\"code\":\"not_found\",\"message\":\"no such node\"}}";
    WP_CHECK_EQ(wp_buf_len(&b), strlen(want));
    WP_CHECK(memcmp(wp_buf_ptr(&b), want, strlen(want)) == 0);
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_json_error_body(&b, "bad\"code", "line1\nq\"\\ \x01 \xff caf\xc3\xa9"), 0);
    want = "{\"error\":{\"code\":\"bad\\\"code\",\"message\":\"line1\\nq\\\"\\\\ \\u0001 \\ufffd "
           "caf\xc3\xa9\"}}";
    WP_CHECK_EQ(wp_buf_len(&b), strlen(want));
    WP_CHECK(memcmp(wp_buf_ptr(&b), want, strlen(want)) == 0);
    /* the body parses back with our own strict parser */
    cJSON *e = NULL;
    WP_CHECK_EQ(wp_json_parse((const char *)wp_buf_ptr(&b), wp_buf_len(&b), 4096, 4, &e), 0);
    WP_CHECK_STR(wp_json_get_str(cJSON_GetObjectItemCaseSensitive(e, "error"), "code"),
                 "bad\"code");
    cJSON_Delete(e);
    WP_CHECK_EQ(wp_json_error_body(&b, NULL, "x"), WP_ERR_INVAL);
    wp_buf_free(&b);

    /* LIMIT leaves the buffer exactly as it was */
    wp_buf_init(&b, 60);
    WP_CHECK_EQ(wp_buf_put_str(&b, "pre"), 0);
    WP_CHECK_EQ(wp_json_error_body(&b, "code", "a message that is far too long to fit here"),
                WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 3);
    WP_CHECK(memcmp(wp_buf_ptr(&b), "pre", 3) == 0);
    WP_CHECK_EQ(
        wp_json_put_string(&b, "0123456789012345678901234567890123456789012345678901234567", 58),
        WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 3);
    WP_CHECK_EQ(wp_json_put_string(&b, "", 0), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 5);
    wp_buf_free(&b);
}

int main(void)
{
    WP_RUN(json_parse_valid);
    WP_RUN(json_parse_malformed);
    WP_RUN(json_parse_numbers_ok);
    WP_RUN(json_parse_bad_escapes);
    WP_RUN(json_parse_not_terminated);
    WP_RUN(json_parse_limits);
    WP_RUN(json_validate_ok);
    WP_RUN(json_validate_errors);
    WP_RUN(json_validate_duplicates_many);
    WP_RUN(json_validate_utf8);
    WP_RUN(json_getters);
    WP_RUN(json_print_and_error_body);
    return wp_test_done();
}
