/*
 * test_cp_config.c — wolfpackd configuration parsing.
 */
#include <stdio.h>
#include <stdlib.h>
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

static const char *env_sessions(const char *name)
{
    if (strcmp(name, "WOLFPACK_WOLF_TIMEOUT") == 0)
        return "45";
    if (strcmp(name, "WOLFPACK_SCHEDULE_ATTEMPTS") == 0)
        return "5";
    if (strcmp(name, "WOLFPACK_NODE_COOLDOWN") == 0)
        return "0";
    if (strcmp(name, "WOLFPACK_WOLF_PROFILE_ID") == 0)
        return "env-profile";
    if (strcmp(name, "WOLFPACK_REAP_ORPHANS") == 0)
        return "yes";
    return NULL;
}

static const char *bad_env_name;
static const char *bad_env_value;

static const char *env_one_bad(const char *name)
{
    return strcmp(name, bad_env_name) == 0 ? bad_env_value : NULL;
}

/* One line, non-empty, naming what was wrong. */
static int one_line_naming(const char *err, const char *what)
{
    return err[0] != '\0' && strchr(err, '\n') == NULL && strstr(err, what) != NULL;
}

WP_TEST(cp_session_flags_defaults)
{
    cp_config c;
    char err[256];
    char *argv[] = {"wolfpackd"};
    WP_CHECK_EQ(cp_config_parse(&c, 1, argv, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.wolf_timeout_s, 30);
    WP_CHECK_EQ(c.schedule_attempts, 3);
    WP_CHECK_EQ(c.node_cooldown_s, 60);
    WP_CHECK_STR(c.wolf_profile_id, "moonlight-profile-id");
    WP_CHECK_EQ(c.reap_orphans, 0);
    cp_config_free(&c);
}

WP_TEST(cp_session_flags_set)
{
    cp_config c;
    char err[256];
    char *argv[] = {"wolfpackd",  "--wolf-timeout",  "7",   "--schedule-attempts",
                    "2",          "--node-cooldown", "120", "--wolf-profile-id",
                    "my-profile", "--reap-orphans"};
    WP_CHECK_EQ(cp_config_parse(&c, 10, argv, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.wolf_timeout_s, 7);
    WP_CHECK_EQ(c.schedule_attempts, 2);
    WP_CHECK_EQ(c.node_cooldown_s, 120);
    WP_CHECK_STR(c.wolf_profile_id, "my-profile");
    WP_CHECK_EQ(c.reap_orphans, 1);
    cp_config_free(&c);
    /* --flag=value form and the bounds themselves */
    char *a2[] = {"wolfpackd", "--wolf-timeout=600", "--schedule-attempts=20", "--node-cooldown=0",
                  "--reap-orphans=false"};
    WP_CHECK_EQ(cp_config_parse(&c, 5, a2, env_sessions, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.wolf_timeout_s, 600);
    WP_CHECK_EQ(c.schedule_attempts, 20);
    WP_CHECK_EQ(c.node_cooldown_s, 0);
    WP_CHECK_EQ(c.reap_orphans, 0);                 /* the flag wins over WOLFPACK_REAP_ORPHANS */
    WP_CHECK_STR(c.wolf_profile_id, "env-profile"); /* not given as a flag: env applies */
    cp_config_free(&c);
}

WP_TEST(cp_session_flags_env)
{
    cp_config c;
    char err[256];
    char *argv[] = {"wolfpackd"};
    WP_CHECK_EQ(cp_config_parse(&c, 1, argv, env_sessions, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.wolf_timeout_s, 45);
    WP_CHECK_EQ(c.schedule_attempts, 5);
    WP_CHECK_EQ(c.node_cooldown_s, 0);
    WP_CHECK_STR(c.wolf_profile_id, "env-profile");
    WP_CHECK_EQ(c.reap_orphans, 1);
    cp_config_free(&c);
    /* a flag overrides its env var */
    char *a2[] = {"wolfpackd", "--wolf-timeout", "9", "--wolf-profile-id", "flag-profile"};
    WP_CHECK_EQ(cp_config_parse(&c, 5, a2, env_sessions, err, sizeof(err)), 0);
    WP_CHECK_EQ(c.wolf_timeout_s, 9);
    WP_CHECK_STR(c.wolf_profile_id, "flag-profile");
    WP_CHECK_EQ(c.schedule_attempts, 5);
    cp_config_free(&c);
}

WP_TEST(cp_session_flags_rejects)
{
    static const struct {
        const char *flag, *value, *names;
    } bad[] = {
        {"--wolf-timeout", "0", "--wolf-timeout"},
        {"--wolf-timeout", "601", "--wolf-timeout"},
        {"--wolf-timeout", "-5", "--wolf-timeout"},
        {"--wolf-timeout", "30s", "--wolf-timeout"},
        {"--wolf-timeout", "", "--wolf-timeout"},
        {"--schedule-attempts", "0", "--schedule-attempts"},
        {"--schedule-attempts", "21", "--schedule-attempts"},
        {"--schedule-attempts", "three", "--schedule-attempts"},
        {"--node-cooldown", "-1", "--node-cooldown"},
        {"--node-cooldown", "86401", "--node-cooldown"},
        {"--node-cooldown", "1.5", "--node-cooldown"},
        {"--wolf-profile-id", "", "--wolf-profile-id"},
        {"--reap-orphans", "maybe", "--reap-orphans"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cp_config c;
        char err[256] = "";
        char arg[160];
        snprintf(arg, sizeof(arg), "%s=%s", bad[i].flag, bad[i].value);
        char *argv[] = {"wolfpackd", arg};
        int rc = cp_config_parse(&c, 2, argv, no_env, err, sizeof(err));
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
        WP_CHECK(one_line_naming(err, bad[i].names));
        cp_config_free(&c);
    }
    /* a profile id longer than 128 bytes */
    char longid[160];
    memset(longid, 'p', 129);
    longid[129] = '\0';
    char arg[200];
    snprintf(arg, sizeof(arg), "--wolf-profile-id=%s", longid);
    cp_config c;
    char err[256] = "";
    char *a1[] = {"wolfpackd", arg};
    WP_CHECK_EQ(cp_config_parse(&c, 2, a1, no_env, err, sizeof(err)), WP_ERR_INVAL);
    WP_CHECK(one_line_naming(err, "--wolf-profile-id"));
    cp_config_free(&c);
    longid[128] = '\0'; /* exactly 128 is fine */
    snprintf(arg, sizeof(arg), "--wolf-profile-id=%s", longid);
    WP_CHECK_EQ(cp_config_parse(&c, 2, a1, no_env, err, sizeof(err)), 0);
    WP_CHECK_EQ(strlen(c.wolf_profile_id), 128);
    cp_config_free(&c);
    /* bad env values name the variable */
    static const struct {
        const char *env, *value;
    } bad_env[] = {
        {"WOLFPACK_WOLF_TIMEOUT", "0"},       {"WOLFPACK_WOLF_TIMEOUT", "abc"},
        {"WOLFPACK_SCHEDULE_ATTEMPTS", "99"}, {"WOLFPACK_NODE_COOLDOWN", "-3"},
        {"WOLFPACK_WOLF_PROFILE_ID", ""},     {"WOLFPACK_REAP_ORPHANS", "2"},
    };
    for (size_t i = 0; i < sizeof(bad_env) / sizeof(bad_env[0]); i++) {
        bad_env_name = bad_env[i].env;
        bad_env_value = bad_env[i].value;
        char *argv[] = {"wolfpackd"};
        err[0] = '\0';
        WP_CHECK_EQ(cp_config_parse(&c, 1, argv, env_one_bad, err, sizeof(err)), WP_ERR_INVAL);
        WP_CHECK(one_line_naming(err, bad_env[i].env) || one_line_naming(err, "--wolf-profile-id"));
        cp_config_free(&c);
    }
    /* a missing value */
    char *a2[] = {"wolfpackd", "--wolf-timeout"};
    WP_CHECK_EQ(cp_config_parse(&c, 2, a2, no_env, err, sizeof(err)), WP_ERR_INVAL);
    WP_CHECK(one_line_naming(err, "--wolf-timeout"));
    cp_config_free(&c);
}

WP_TEST(cp_session_flags_in_help)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    WP_CHECK(f != NULL);
    if (!f)
        return;
    cp_config_usage(f);
    fclose(f);
    static const char *const want[] = {"--wolf-timeout",
                                       "WOLFPACK_WOLF_TIMEOUT",
                                       "--schedule-attempts",
                                       "WOLFPACK_SCHEDULE_ATTEMPTS",
                                       "--node-cooldown",
                                       "WOLFPACK_NODE_COOLDOWN",
                                       "--wolf-profile-id",
                                       "WOLFPACK_WOLF_PROFILE_ID",
                                       "--reap-orphans",
                                       "WOLFPACK_REAP_ORPHANS",
                                       "--help",
                                       "--version"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        WP_CHECK(strstr(buf, want[i]) != NULL);
    free(buf);
}

int main(void)
{
    WP_RUN(cp_commands);
    WP_RUN(cp_defaults);
    WP_RUN(cp_env_and_flags);
    WP_RUN(cp_rejects);
    WP_RUN(cp_session_flags_defaults);
    WP_RUN(cp_session_flags_set);
    WP_RUN(cp_session_flags_env);
    WP_RUN(cp_session_flags_rejects);
    WP_RUN(cp_session_flags_in_help);
    return wp_test_done();
}
