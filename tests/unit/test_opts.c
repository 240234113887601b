/*
 * test_opts.c — unit tests for common/opts (flags + WOLFPACK_* env parsing).
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "opts.h"
#include "wp_test.h"

static const char *fake_env_keys[8];
static const char *fake_env_vals[8];
static size_t fake_env_n;

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < fake_env_n; i++)
        if (strcmp(fake_env_keys[i], name) == 0)
            return fake_env_vals[i];
    return NULL;
}

static void fake_env_set(const char *k, const char *v)
{
    fake_env_keys[fake_env_n] = k;
    fake_env_vals[fake_env_n] = v;
    fake_env_n++;
}

struct vals {
    const char *listen;
    int flag;
    long long num;
    wp_strlist list;
};

static size_t table(struct vals *v, wp_opt *t)
{
    const wp_opt o[] = {
        {"listen", 'l', WP_OPT_STRING, &v->listen, "WP_T_LISTEN", "ADDR", "listen", "x", 0, 0},
        {"flag", 0, WP_OPT_BOOL, &v->flag, "WP_T_FLAG", NULL, "a flag", NULL, 0, 0},
        {"num", 0, WP_OPT_INT, &v->num, "WP_T_NUM", "N", "a number", "1", 1, 10},
        {"item", 'i', WP_OPT_LIST, &v->list, "WP_T_ITEMS", "X", "items", NULL, 0, 0},
    };
    memcpy(t, o, sizeof(o));
    return sizeof(o) / sizeof(o[0]);
}

static int parse(struct vals *v, int argc, char **argv, const char **pos, size_t *npos, char *err)
{
    wp_opt t[8];
    memset(v, 0, sizeof(*v));
    size_t n = table(v, t);
    return wp_opts_parse(t, n, argc, argv, 1, fake_getenv, pos, 4, npos, err, 256);
}

WP_TEST(opts_forms)
{
    struct vals v;
    const char *pos[4];
    size_t npos;
    char err[256];
    char *argv[] = {"prog", "--listen", "a:1", "--flag", "--num=7",   "-i",
                    "x",    "--item=y", "run", "--",     "--notaflag"};
    fake_env_n = 0;
    WP_CHECK_EQ(parse(&v, 11, argv, pos, &npos, err), 0);
    WP_CHECK_STR(v.listen, "a:1");
    WP_CHECK_EQ(v.flag, 1);
    WP_CHECK_EQ(v.num, 7);
    WP_CHECK_EQ(v.list.n, 2);
    WP_CHECK_STR(v.list.items[1], "y");
    WP_CHECK_EQ(npos, 2);
    WP_CHECK_STR(pos[0], "run");
    WP_CHECK_STR(pos[1], "--notaflag");
    wp_strlist_free(&v.list);
}

WP_TEST(opts_env_and_precedence)
{
    struct vals v;
    const char *pos[4];
    size_t npos;
    char err[256];
    char *argv[] = {"prog", "--num", "3"};
    fake_env_n = 0;
    fake_env_set("WP_T_LISTEN", "env:1");
    fake_env_set("WP_T_NUM", "9");
    fake_env_set("WP_T_FLAG", "off");
    fake_env_set("WP_T_ITEMS", "a, b,,c");
    WP_CHECK_EQ(parse(&v, 3, argv, pos, &npos, err), 0);
    WP_CHECK_STR(v.listen, "env:1");
    WP_CHECK_EQ(v.num, 3); /* flag beats env */
    WP_CHECK_EQ(v.flag, 0);
    WP_CHECK_EQ(v.list.n, 3);
    WP_CHECK_STR(v.list.items[0], "a");
    WP_CHECK_STR(v.list.items[1], "b");
    WP_CHECK_STR(v.list.items[2], "c");
    wp_strlist_free(&v.list);
    fake_env_n = 0;
}

WP_TEST(opts_errors)
{
    struct vals v;
    const char *pos[4];
    size_t npos;
    char err[256];
    fake_env_n = 0;
    char *a1[] = {"prog", "--lisen", "x"};
    WP_CHECK_EQ(parse(&v, 3, a1, pos, &npos, err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "unknown flag --lisen") != NULL);
    char *a2[] = {"prog", "--num", "11"};
    WP_CHECK_EQ(parse(&v, 3, a2, pos, &npos, err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "between 1 and 10") != NULL);
    char *a3[] = {"prog", "--num", "7x"};
    WP_CHECK_EQ(parse(&v, 3, a3, pos, &npos, err), WP_ERR_INVAL);
    char *a4[] = {"prog", "--listen"};
    WP_CHECK_EQ(parse(&v, 2, a4, pos, &npos, err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "needs a value") != NULL);
    char *a5[] = {"prog", "--flag=maybe"};
    WP_CHECK_EQ(parse(&v, 2, a5, pos, &npos, err), WP_ERR_INVAL);
    char *a6[] = {"prog", "--listen="};
    WP_CHECK_EQ(parse(&v, 2, a6, pos, &npos, err), WP_ERR_INVAL);
    char *a7[] = {"prog", "a", "b", "c", "d", "e"};
    WP_CHECK_EQ(parse(&v, 6, a7, pos, &npos, err), WP_ERR_INVAL);
    char *a8[] = {"prog", "-x"};
    WP_CHECK_EQ(parse(&v, 2, a8, pos, &npos, err), WP_ERR_INVAL);
    fake_env_set("WP_T_NUM", "zero");
    char *a9[] = {"prog"};
    WP_CHECK_EQ(parse(&v, 1, a9, pos, &npos, err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "WP_T_NUM") != NULL);
    fake_env_n = 0;
    /* A value that may be secret is never echoed back in the error. */
    fake_env_set("WP_T_FLAG", "hunter2-secret");
    WP_CHECK_EQ(parse(&v, 1, a9, pos, &npos, err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "hunter2") == NULL);
    fake_env_n = 0;
}

WP_TEST(opts_list_limit)
{
    struct vals v;
    const char *pos[4];
    size_t npos;
    char err[256];
    char *argv[2 + 2 * (WP_STRLIST_MAX + 1)];
    int argc = 1;
    argv[0] = "prog";
    for (int i = 0; i < WP_STRLIST_MAX + 1; i++) {
        argv[argc++] = "-i";
        argv[argc++] = "v";
    }
    fake_env_n = 0;
    WP_CHECK_EQ(parse(&v, argc, argv, pos, &npos, err), WP_ERR_INVAL);
    wp_strlist_free(&v.list);
}

WP_TEST(opts_usage_mentions_env)
{
    struct vals v;
    wp_opt t[8];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    size_t n = table(&v, t);
    wp_opts_usage(f, t, n);
    fclose(f);
    WP_CHECK(strstr(buf, "--listen ADDR") != NULL);
    WP_CHECK(strstr(buf, "[env: WP_T_LISTEN]") != NULL);
    WP_CHECK(strstr(buf, "[repeatable]") != NULL);
    free(buf);
}

int main(void)
{
    WP_RUN(opts_forms);
    WP_RUN(opts_env_and_precedence);
    WP_RUN(opts_errors);
    WP_RUN(opts_list_limit);
    WP_RUN(opts_usage_mentions_env);
    return wp_test_done();
}
