/*
 * test_cp_config.c — wolfpackd configuration parsing.
 */
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "wp_test.h"

static const char *env_json(const char *name)
{
    if (strcmp(name, "WOLFPACK_LOG_FORMAT") == 0)
        return "json";
    if (strcmp(name, "WOLFPACK_LISTEN") == 0)
        return "127.0.0.1:9000";
    return NULL;
}

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

WP_TEST(cp_defaults)
{
    cp_config c;
    char err[256];
    char *argv[] = {"wolfpackd"};
    WP_CHECK_EQ(cp_config_parse(&c, 1, argv, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.command, CP_CMD_SERVE);
    WP_CHECK_STR(c.listen, "0.0.0.0:8443");
    WP_CHECK_STR(c.state_dir, "/var/lib/wolfpack");
    WP_CHECK_EQ(c.no_tls, 0);
    WP_CHECK_EQ(c.log_format, WP_LOG_FMT_LOGFMT);
    WP_CHECK_EQ(c.header_timeout_s, 10);
    cp_config_free(&c);
}

WP_TEST(cp_env_and_flags)
{
    cp_config c;
    char err[256];
    char *argv[] = {"wolfpackd", "--listen", "[::1]:8443", "--log-level", "debug", "--no-tls"};
    WP_CHECK_EQ(cp_config_parse(&c, 6, argv, env_json, err, sizeof(err)), 0);
    WP_CHECK_STR(c.listen, "[::1]:8443");
    WP_CHECK_EQ(c.log_format, WP_LOG_FMT_JSON);
    WP_CHECK_EQ(c.log_level, WP_LOG_DEBUG);
    WP_CHECK_EQ(c.no_tls, 1);
    cp_config_free(&c);
}

WP_TEST(cp_rejects)
{
    cp_config c;
    char err[256];
    char *a1[] = {"wolfpackd", "--tls-cert", "/x.pem"};
    WP_CHECK_EQ(cp_config_parse(&c, 3, a1, no_env, err, sizeof(err)), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "together") != NULL);
    cp_config_free(&c);
    char *a2[] = {"wolfpackd", "--no-tls", "--tls-cert", "a", "--tls-key", "b"};
    WP_CHECK_EQ(cp_config_parse(&c, 6, a2, no_env, err, sizeof(err)), WP_ERR_INVAL);
    cp_config_free(&c);
    char *a3[] = {"wolfpackd", "--log-format", "xml"};
    WP_CHECK_EQ(cp_config_parse(&c, 3, a3, no_env, err, sizeof(err)), WP_ERR_INVAL);
    cp_config_free(&c);
    char *a4[] = {"wolfpackd", "serve-please"};
    WP_CHECK_EQ(cp_config_parse(&c, 2, a4, no_env, err, sizeof(err)), WP_ERR_INVAL);
    cp_config_free(&c);
    char *a5[] = {"wolfpackd", "--http-header-timeout", "0"};
    WP_CHECK_EQ(cp_config_parse(&c, 3, a5, no_env, err, sizeof(err)), WP_ERR_INVAL);
    cp_config_free(&c);
}

WP_TEST(cp_commands)
{
    cp_config c;
    char err[256];
    char *a1[] = {"wolfpackd", "migrate", "--database-url", "postgresql://x/y"};
    WP_CHECK_EQ(cp_config_parse(&c, 4, a1, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.command, CP_CMD_MIGRATE);
    WP_CHECK_STR(c.database_url, "postgresql://x/y");
    cp_config_free(&c);
    char *a2[] = {"wolfpackd", "serve"};
    WP_CHECK_EQ(cp_config_parse(&c, 2, a2, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.command, CP_CMD_SERVE);
    cp_config_free(&c);
    char *a3[] = {"wolfpackd", "migrate", "now"};
    WP_CHECK_EQ(cp_config_parse(&c, 3, a3, no_env, err, sizeof(err)), WP_ERR_INVAL);
    cp_config_free(&c);
    char *a4[] = {"wolfpackd", "--advertise-url", "https://cp:8443"};
    WP_CHECK_EQ(cp_config_parse(&c, 3, a4, no_env, err, sizeof(err)), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "wss://") != NULL);
    cp_config_free(&c);
    /* The database URL may hold a password: a bad value is never echoed. */
    char *a5[] = {"wolfpackd", "--database-url="};
    WP_CHECK_EQ(cp_config_parse(&c, 2, a5, no_env, err, sizeof(err)), WP_ERR_INVAL);
    cp_config_free(&c);
}

int main(void)
{
    WP_RUN(cp_commands);
    WP_RUN(cp_defaults);
    WP_RUN(cp_env_and_flags);
    WP_RUN(cp_rejects);
    return wp_test_done();
}
