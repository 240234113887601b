/*
 * test_log.c — unit tests for common/log.c: exact line formats, escaping,
 * secret redaction, truncation, level filtering and option parsing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "log.h"
#include "wp_test.h"

#define TS "2026-11-23T18:00:00.123Z"
/* smallest capacity at which log.c guarantees a well-formed JSON line */
#define WP_LOG_MIN_JSON_CAP 9

static long long fixed_clock(void)
{
    return 1795456800123LL; /* 2026-11-23T18:00:00.123Z */
}

static char line[WP_LOG_LINE_MAX + 64];

static const char *fmt_line(int format, int level, const char *msg, const wp_log_field *f, size_t n)
{
    size_t len = wp_log_format_line(line, sizeof line, format, level, msg, f, n);
    if (len != strlen(line))
        return "LENGTH MISMATCH";
    return line;
}

WP_TEST(log_logfmt_exact)
{
    wp_log_field f[] = {WP_LS("addr", "0.0.0.0"), WP_LI("port", 8443), WP_LI("neg", -5),
                        WP_LE("err", WP_ERR_LIMIT), WP_LSECRET("token", "wpa_abcdefgh")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "listening", f, 5),
                 "ts=" TS " level=info msg=\"listening\" addr=0.0.0.0 port=8443 neg=-5 "
                 "err=\"limit exceeded\" token=[REDACTED]");
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_WARN, "x", NULL, 0),
                 "ts=" TS " level=warn msg=\"x\"");
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_DEBUG, NULL, NULL, 0),
                 "ts=" TS " level=debug msg=\"\"");
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_ERROR, "e", NULL, 0),
                 "ts=" TS " level=error msg=\"e\"");
    /* NONE fields are skipped, NULL strings print (null), unknown error codes */
    wp_log_field g[] = {
        {.type = WP_LF_NONE}, WP_LS("s", NULL), WP_LE("e", 12345), WP_LS("empty", "")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", g, 4),
                 "ts=" TS " level=info msg=\"m\" s=(null) e=\"unknown error\" empty=\"\"");
}

WP_TEST(log_json_exact)
{
    wp_log_field f[] = {WP_LS("addr", "0.0.0.0"), WP_LI("port", 8443), WP_LE("err", WP_ERR_TIMEOUT),
                        WP_LSECRET("token", "wpa_abcdefgh"), WP_LS("nul", NULL)};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_JSON, WP_LOG_ERROR, "listening", f, 5),
                 "{\"ts\":\"" TS
                 "\",\"level\":\"error\",\"msg\":\"listening\",\"addr\":\"0.0.0.0\","
                 "\"port\":8443,\"err\":\"timed out\",\"token\":\"[REDACTED]\",\"nul\":null}");
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_JSON, WP_LOG_INFO, "", NULL, 0),
                 "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"\"}");
}

WP_TEST(log_logfmt_escaping)
{
    wp_log_field f[] = {WP_LS("a", "has space"), WP_LS("b", "q\"uote"),
                        WP_LS("c", "k=v"),       WP_LS("d", "nl\nx"),
                        WP_LS("e", "bs\\x"),     WP_LS("f", "ctl\x01\x7f"),
                        WP_LS("g", "tab\tcr\r"), WP_LS("h", "caf\xc3\xa9"),
                        WP_LS("i", "bad\xff"),   WP_LS("bad key=\"", "v")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "say \"hi\"\n", f, 10),
                 "ts=" TS " level=info msg=\"say \\\"hi\\\"\\n\" a=\"has space\" b=\"q\\\"uote\" "
                 "c=\"k=v\" d=\"nl\\nx\" e=\"bs\\\\x\" f=\"ctl\\x01\\x7f\" g=\"tab\\tcr\\r\" "
                 "h=caf\xc3\xa9 i=\"bad\\xff\" bad_key__=v");
}

WP_TEST(log_json_escaping)
{
    wp_log_field f[] = {WP_LS("a", "q\"b\\s/"), WP_LS("c", "\x01\x1f\n\t\r"), WP_LS("k\"ey", "v"),
                        WP_LS("u", "\xc3\xa9\xff\xed\xa0\x80")};
    const char *got = fmt_line(WP_LOG_FMT_JSON, WP_LOG_INFO, "m\"\n", f, 4);
    WP_CHECK_STR(got, "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"m\\\"\\n\","
                      "\"a\":\"q\\\"b\\\\s/\",\"c\":\"\\u0001\\u001f\\n\\t\\r\",\"k\\\"ey\":\"v\","
                      "\"u\":\"\xc3\xa9\\ufffd\\ufffd\\ufffd\\ufffd\"}");
    cJSON *j = cJSON_Parse(got);
    WP_CHECK(j != NULL);
    WP_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "c")), "\x01\x1f\n\t\r");
    WP_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "k\"ey")), "v");
    cJSON_Delete(j);
}

WP_TEST(log_secret_registry)
{
    wp_log_secret_clear();
    WP_CHECK_EQ(wp_log_secret_add(NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_log_secret_add(""), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_log_secret_add("short"), WP_ERR_INVAL); /* 5 bytes */
    WP_CHECK_EQ(wp_log_secret_add("s3cr3tTOKEN"), 0);
    WP_CHECK_EQ(wp_log_secret_add("s3cr3tTOKEN"), 0); /* duplicate is fine */

    /* in msg, values and keys, both formats */
    wp_log_field f[] = {WP_LS("v", "pre-s3cr3tTOKEN-post"), WP_LS("s3cr3tTOKEN", "x"),
                        WP_LS("two", "s3cr3tTOKENs3cr3tTOKEN")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "got s3cr3tTOKEN!", f, 3),
                 "ts=" TS " level=info msg=\"got [REDACTED]!\" v=pre-[REDACTED]-post "
                 "[REDACTED]=x two=[REDACTED]");
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_JSON, WP_LOG_INFO, "got s3cr3tTOKEN!", f, 3),
                 "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"got [REDACTED]!\","
                 "\"v\":\"pre-[REDACTED]-post\",\"[REDACTED]\":\"x\",\"two\":\"[REDACTED]\"}");
    WP_CHECK(strstr(line, "s3cr3t") == NULL);
    wp_log_secret_clear();
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "s3cr3tTOKEN", NULL, 0),
                 "ts=" TS " level=info msg=\"s3cr3tTOKEN\"");
}

WP_TEST(log_secret_escape_cannot_leak)
{
    /* a secret with characters that get escaped: redaction happens on raw bytes */
    wp_log_secret_clear();
    WP_CHECK_EQ(wp_log_secret_add("pa\"ss\nw\\rd"), 0);
    WP_CHECK_EQ(wp_log_secret_add(".*+?[](){}^$|"), 0); /* regex-ish: matched literally */
    wp_log_field f[] = {WP_LS("k", "x pa\"ss\nw\\rd y"), WP_LS("r", "a.*+?[](){}^$|b"),
                        WP_LS("r2", "aQQQQb")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_JSON, WP_LOG_INFO, "pa\"ss\nw\\rd", f, 3),
                 "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"[REDACTED]\","
                 "\"k\":\"x [REDACTED] y\",\"r\":\"a[REDACTED]b\",\"r2\":\"aQQQQb\"}");
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "pa\"ss\nw\\rd", f, 3),
                 "ts=" TS " level=info msg=\"[REDACTED]\" k=\"x [REDACTED] y\" r=a[REDACTED]b "
                 "r2=aQQQQb");
    wp_log_secret_clear();
}

WP_TEST(log_secret_overlapping)
{
    wp_log_secret_clear();
    WP_CHECK_EQ(wp_log_secret_add("abcabc"), 0);
    wp_log_field f[] = {WP_LS("a", "xabcabcabcy"), WP_LS("b", "abcab")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", f, 2),
                 "ts=" TS " level=info msg=\"m\" a=x[REDACTED]y b=abcab");
    /* two different secrets overlapping: no fragment of either survives */
    WP_CHECK_EQ(wp_log_secret_add("1111XY"), 0);
    WP_CHECK_EQ(wp_log_secret_add("XY2222"), 0);
    wp_log_field g[] = {WP_LS("a", "<1111XY2222>")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", g, 1),
                 "ts=" TS " level=info msg=\"m\" a=<[REDACTED]>");
    wp_log_secret_clear();
}

WP_TEST(log_secret_limit)
{
    wp_log_secret_clear();
    char s[32];
    for (int i = 0; i < WP_LOG_SECRETS_MAX; i++) {
        snprintf(s, sizeof s, "secret-%03d", i);
        WP_CHECK_EQ(wp_log_secret_add(s), 0);
    }
    WP_CHECK_EQ(wp_log_secret_add("secret-one-too-many"), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_log_secret_add("secret-005"), 0); /* already known */
    wp_log_field f[] = {WP_LS("k", "secret-063 secret-000 secret-one-too-many")};
    WP_CHECK_STR(fmt_line(WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", f, 1),
                 "ts=" TS " level=info msg=\"m\" k=\"[REDACTED] [REDACTED] secret-one-too-many\"");
    wp_log_secret_clear();
    WP_CHECK_EQ(wp_log_secret_add("secret-one-too-many"), 0);
    wp_log_secret_clear();
}

WP_TEST(log_truncation_json_valid)
{
    size_t big = 10 * 1024;
    char *v = malloc(big + 1);
    WP_CHECK(v != NULL);
    if (!v)
        return;
    /* mix of plain bytes and bytes that escape to 2 and 6 characters */
    for (size_t i = 0; i < big; i++)
        v[i] = (i % 7 == 0) ? '"' : (i % 11 == 0) ? '\x01' : 'a';
    v[big] = '\0';
    wp_log_field f[] = {WP_LS("big", v), WP_LI("after", 1)};
    for (size_t cap = WP_LOG_LINE_MAX + 64; cap >= WP_LOG_MIN_JSON_CAP;
         cap = cap > 300 ? cap - 97 : cap - 1) {
        size_t n = wp_log_format_line(line, cap, WP_LOG_FMT_JSON, WP_LOG_INFO, "m", f, 2);
        WP_CHECK(n < cap);
        WP_CHECK(n <= WP_LOG_LINE_MAX);
        WP_CHECK_EQ(n, strlen(line));
        cJSON *j = cJSON_Parse(line);
        WP_CHECK(j != NULL);
        if (!j) {
            printf("  cap %zu: %s\n", cap, line);
            break;
        }
        const char *bv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "big"));
        if (bv) {
            size_t bl = strlen(bv);
            WP_CHECK(bl >= 3 && strcmp(bv + bl - 3, "...") == 0);
        }
        WP_CHECK(cJSON_GetObjectItemCaseSensitive(j, "after") == NULL);
        cJSON_Delete(j);
    }
    /* logfmt: truncated quoted value ends with ..." */
    size_t n = wp_log_format_line(line, sizeof line, WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", f, 2);
    WP_CHECK(n <= WP_LOG_LINE_MAX);
    WP_CHECK(n >= 4 && strcmp(line + n - 4, "...\"") == 0);
    WP_CHECK(strstr(line, "after=") == NULL);
    /* a long key truncates too and the JSON stays valid */
    wp_log_field g[] = {WP_LI("k", 1), {.key = v, .type = WP_LF_INT, .i = 2}};
    n = wp_log_format_line(line, sizeof line, WP_LOG_FMT_JSON, WP_LOG_INFO, "m", g, 2);
    cJSON *j = cJSON_Parse(line);
    WP_CHECK(j != NULL);
    WP_CHECK(cJSON_GetObjectItemCaseSensitive(j, "k") != NULL);
    cJSON_Delete(j);
    free(v);
}

WP_TEST(log_truncation_never_leaks_secret_prefix)
{
    wp_log_secret_clear();
    WP_CHECK_EQ(wp_log_secret_add("ZZSECRETZZ"), 0);
    char v[WP_LOG_LINE_MAX + 64];
    for (size_t off = WP_LOG_LINE_MAX - 120; off < WP_LOG_LINE_MAX - 40; off++) {
        memset(v, 'a', sizeof v);
        memcpy(v + off, "ZZSECRETZZ", 10);
        v[sizeof v - 1] = '\0';
        wp_log_field f[] = {WP_LS("v", v)};
        wp_log_format_line(line, sizeof line, WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", f, 1);
        WP_CHECK(strstr(line, "ZZS") == NULL);
        wp_log_format_line(line, sizeof line, WP_LOG_FMT_JSON, WP_LOG_INFO, "m", f, 1);
        WP_CHECK(strstr(line, "ZZS") == NULL);
    }
    wp_log_secret_clear();
}

WP_TEST(log_tiny_cap)
{
    char small[8];
    WP_CHECK_EQ(wp_log_format_line(small, 0, WP_LOG_FMT_JSON, WP_LOG_INFO, "m", NULL, 0), 0);
    size_t n = wp_log_format_line(small, sizeof small, WP_LOG_FMT_JSON, WP_LOG_INFO, "m", NULL, 0);
    WP_CHECK(n < sizeof small);
    WP_CHECK_EQ(strlen(small), n);
    n = wp_log_format_line(small, 1, WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", NULL, 0);
    WP_CHECK_EQ(n, 0);
    WP_CHECK_EQ(small[0], '\0');
}

WP_TEST(log_levels_and_output)
{
    int lvl = -1, fmt = -1;
    WP_CHECK_EQ(wp_log_level_parse("debug", &lvl), 0);
    WP_CHECK_EQ(lvl, WP_LOG_DEBUG);
    WP_CHECK_EQ(wp_log_level_parse("INFO", &lvl), 0);
    WP_CHECK_EQ(lvl, WP_LOG_INFO);
    WP_CHECK_EQ(wp_log_level_parse("warn", &lvl), 0);
    WP_CHECK_EQ(lvl, WP_LOG_WARN);
    WP_CHECK_EQ(wp_log_level_parse("error", &lvl), 0);
    WP_CHECK_EQ(lvl, WP_LOG_ERROR);
    lvl = 77;
    WP_CHECK_EQ(wp_log_level_parse("verbose", &lvl), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_log_level_parse("", &lvl), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_log_level_parse(NULL, &lvl), WP_ERR_INVAL);
    WP_CHECK_EQ(lvl, 77);
    WP_CHECK_EQ(wp_log_format_parse("json", &fmt), 0);
    WP_CHECK_EQ(fmt, WP_LOG_FMT_JSON);
    WP_CHECK_EQ(wp_log_format_parse("logfmt", &fmt), 0);
    WP_CHECK_EQ(fmt, WP_LOG_FMT_LOGFMT);
    WP_CHECK_EQ(wp_log_format_parse("xml", &fmt), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_log_format_parse(NULL, &fmt), WP_ERR_INVAL);

    FILE *f = tmpfile();
    WP_CHECK(f != NULL);
    if (!f)
        return;
    wp_log_set_output(f);
    wp_log_set_level(WP_LOG_WARN);
    WP_CHECK_EQ(wp_log_get_level(), WP_LOG_WARN);
    WP_CHECK(!wp_log_enabled(WP_LOG_INFO));
    WP_CHECK(wp_log_enabled(WP_LOG_ERROR));
    wp_log_set_format(WP_LOG_FMT_LOGFMT);
    wp_log_info("hidden", WP_LI("n", 1));
    wp_log_warn("shown", WP_LI("n", 2));
    wp_log_error("also");
    wp_log_set_format(WP_LOG_FMT_JSON);
    wp_log_debug("hidden too");
    wp_log(WP_LOG_ERROR, "json", WP_LS("k", "v"));
    wp_log_set_output(NULL);
    wp_log_set_level(WP_LOG_INFO);
    wp_log_set_format(WP_LOG_FMT_LOGFMT);

    char got[1024] = {0};
    rewind(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    WP_CHECK_STR(got, "ts=" TS " level=warn msg=\"shown\" n=2\n"
                      "ts=" TS " level=error msg=\"also\"\n"
                      "{\"ts\":\"" TS "\",\"level\":\"error\",\"msg\":\"json\",\"k\":\"v\"}\n");
    WP_CHECK(n > 0);
}

WP_TEST(log_real_clock)
{
    wp_log_set_clock(NULL);
    size_t n = wp_log_format_line(line, sizeof line, WP_LOG_FMT_LOGFMT, WP_LOG_INFO, "m", NULL, 0);
    /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
    WP_CHECK(n > 28);
    WP_CHECK(strncmp(line, "ts=20", 5) == 0);
    WP_CHECK_EQ(line[13], 'T');
    WP_CHECK_EQ(line[26], 'Z');
    wp_log_set_clock(fixed_clock);
}

int main(void)
{
    wp_log_set_clock(fixed_clock);
    WP_RUN(log_logfmt_exact);
    WP_RUN(log_json_exact);
    WP_RUN(log_logfmt_escaping);
    WP_RUN(log_json_escaping);
    WP_RUN(log_secret_registry);
    WP_RUN(log_secret_escape_cannot_leak);
    WP_RUN(log_secret_overlapping);
    WP_RUN(log_secret_limit);
    WP_RUN(log_truncation_json_valid);
    WP_RUN(log_truncation_never_leaks_secret_prefix);
    WP_RUN(log_tiny_cap);
    WP_RUN(log_levels_and_output);
    WP_RUN(log_real_clock);
    return wp_test_done();
}
