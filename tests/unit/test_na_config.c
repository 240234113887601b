/*
 * test_na_config.c — wolfpack-agent configuration: node id, services, labels, pin.
 */
#include <string.h>

#include "config.h"
#include "err.h"
#include "wp_test.h"

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

static int parse(na_config *c, int argc, char **argv, char *err)
{
    return na_config_parse(c, argc, argv, no_env, err, 256);
}

WP_TEST(na_node_id)
{
    WP_CHECK(na_node_id_valid("gpu-1"));
    WP_CHECK(na_node_id_valid("a"));
    WP_CHECK(na_node_id_valid("0abc"));
    WP_CHECK(!na_node_id_valid(""));
    WP_CHECK(!na_node_id_valid("-gpu"));
    WP_CHECK(!na_node_id_valid("GPU"));
    WP_CHECK(!na_node_id_valid("gpu_1"));
    WP_CHECK(!na_node_id_valid("gpu.1"));
    char long_id[70];
    memset(long_id, 'a', 63);
    long_id[63] = '\0';
    WP_CHECK(na_node_id_valid(long_id));
    long_id[63] = 'a';
    long_id[64] = '\0';
    WP_CHECK(!na_node_id_valid(long_id));
}

WP_TEST(na_sandbox_flags)
{
    na_config c;
    char err[256];
    char *def[] = {"a", "--node-id", "n1"};
    WP_CHECK_EQ(parse(&c, 3, def, err), 0);
    WP_CHECK_EQ(c.nsandbox_ports, 0u); /* sandbox disabled by default */
    WP_CHECK_STR(c.sandbox_name_pattern, "wolfpack-*");
    WP_CHECK(c.sandbox_address == NULL);
    na_config_free(&c);
    char *ok[] = {"a",        "--node-id",         "n1",       "--sandbox-port",
                  "9876",     "--sandbox-port",    "5900",     "--sandbox-name-pattern",
                  "sess-?-*", "--sandbox-address", "127.0.0.1"};
    WP_CHECK_EQ(parse(&c, 11, ok, err), 0);
    WP_CHECK_EQ(c.nsandbox_ports, 2u);
    WP_CHECK_EQ(c.sandbox_ports[0], 9876);
    WP_CHECK_EQ(c.sandbox_ports[1], 5900);
    WP_CHECK_STR(c.sandbox_name_pattern, "sess-?-*");
    WP_CHECK_STR(c.sandbox_address, "127.0.0.1");
    na_config_free(&c);
    const char *bad[][2] = {{"--sandbox-port", "0"},        {"--sandbox-port", "65536"},
                            {"--sandbox-port", "12x"},      {"--sandbox-port", ""},
                            {"--sandbox-name-pattern", ""}, {"--sandbox-name-pattern", "a/b"},
                            {"--sandbox-address", "a b"},   {"--sandbox-address", "x;rm"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[] = {"a", "--node-id", "n1", (char *)bad[i][0], (char *)bad[i][1]};
        WP_CHECK_EQ(parse(&c, 5, argv, err), WP_ERR_INVAL);
        WP_CHECK(strstr(err, bad[i][0] + 2) != NULL);
        na_config_free(&c);
    }
}

WP_TEST(na_defaults_and_overrides)
{
    na_config c;
    char err[256];
    char *argv[] = {"wolfpack-agent",
                    "run",
                    "--node-id",
                    "gpu-7",
                    "--service",
                    "wolf=unix:/run/w.sock",
                    "-s",
                    "sandbox-x=tcp:127.0.0.1:9876",
                    "--label",
                    "region=eu",
                    "--max-sessions",
                    "8"};
    WP_CHECK_EQ(parse(&c, 12, argv, err), 0);
    WP_CHECK_EQ(c.command, NA_CMD_RUN);
    WP_CHECK_STR(c.node_id, "gpu-7");
    WP_CHECK_EQ(c.nservices, 4);
    WP_CHECK_STR(c.services[0].name, "wolf");
    WP_CHECK_STR(c.services[0].target, "/run/w.sock");
    WP_CHECK_EQ(c.services[1].kind, NA_SVC_TCP);
    WP_CHECK_EQ(c.services[1].port, 8080);
    WP_CHECK_STR(c.services[3].name, "sandbox-x");
    WP_CHECK_EQ(c.services[3].port, 9876);
    WP_CHECK_EQ(c.nlabels, 1);
    WP_CHECK_STR(c.labels[0].key, "region");
    WP_CHECK_STR(c.labels[0].value, "eu");
    WP_CHECK_EQ(c.max_sessions, 8);
    na_config_free(&c);
}

WP_TEST(na_service_none_removes)
{
    na_config c;
    char err[256];
    char *argv[] = {"wolfpack-agent", "run",
                    "--node-id",      "gpu-7",
                    "--service",      "moonlight=none",
                    "--service",      "echo=tcp:127.0.0.1:7",
                    "--service",      "echo=none",
                    "--service",      "nothere=none"};
    WP_CHECK_EQ(parse(&c, 12, argv, err), 0);
    WP_CHECK_EQ(c.nservices, 2); /* wolf and wolf-http left; moonlight and echo removed */
    WP_CHECK_STR(c.services[0].name, "wolf");
    WP_CHECK_STR(c.services[1].name, "wolf-http");
    na_config_free(&c);
    char *bad[] = {"wolfpack-agent", "run", "--node-id", "gpu-7", "--service", "Bad_Name=none"};
    WP_CHECK_EQ(parse(&c, 6, bad, err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "bad service name") != NULL);
    na_config_free(&c);
    char *empty[] = {"wolfpack-agent", "run", "--node-id", "gpu-7", "--service", "=none"};
    WP_CHECK_EQ(parse(&c, 6, empty, err), WP_ERR_INVAL);
    na_config_free(&c);
}

WP_TEST(na_rejects)
{
    na_config c;
    char err[256];
    struct {
        int argc;
        char *argv[4];
        const char *want;
    } cases[] = {
        {3, {"a", "--node-id", "Bad_Id"}, "--node-id"},
        {3, {"a", "--service", "wolf"}, "--service"},
        {3, {"a", "--service", "wolf=udp:1.2.3.4:5"}, "unknown kind"},
        {3, {"a", "--service", "wolf=unix:relative"}, "absolute"},
        {3, {"a", "--service", "wolf=tcp:host"}, "tcp:host:port"},
        {3, {"a", "--label", "novalue"}, "key=value"},
        {3, {"a", "--ca-pin", "sha256:abcd"}, "--ca-pin"},
        {3, {"a", "--url", "http://x"}, "wss://"},
        {3, {"a", "--max-sessions", "0"}, "between"},
        {2, {"a", "dance"}, "unknown command"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[5] = {cases[i].argv[0], cases[i].argv[1], cases[i].argv[2], cases[i].argv[3],
                         "--node-id=ok"};
        int argc = cases[i].argc;
        /* Put a valid node id last unless the case tests the node id. */
        if (strcmp(cases[i].want, "--node-id") != 0)
            argv[argc++] = "--node-id=ok";
        int rc = parse(&c, argc, argv, err);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
        if (!strstr(err, cases[i].want))
            printf("  case %zu: err=\"%s\" want \"%s\"\n", i, err, cases[i].want);
        WP_CHECK(strstr(err, cases[i].want) != NULL);
        na_config_free(&c);
    }
}

WP_TEST(na_pin_and_commands)
{
    na_config c;
    char err[256];
    char pin[80] = "sha256:";
    for (int i = 0; i < 64; i++)
        pin[7 + i] = "0123456789abcdef"[i % 16];
    pin[71] = '\0';
    char *argv[] = {"a", "probe", "--node-id", "n1", "--ca-pin", pin};
    WP_CHECK_EQ(parse(&c, 6, argv, err), 0);
    WP_CHECK_EQ(c.command, NA_CMD_PROBE);
    WP_CHECK_EQ(c.has_ca_pin, 1);
    WP_CHECK_EQ(c.ca_pin[0], 0x01);
    WP_CHECK_EQ(c.ca_pin[1], 0x23);
    na_config_free(&c);
    char *h[] = {"a", "--help"};
    WP_CHECK_EQ(parse(&c, 2, h, err), 0);
    WP_CHECK_EQ(c.command, NA_CMD_HELP);
    na_config_free(&c);
}

int main(void)
{
    WP_RUN(na_node_id);
    WP_RUN(na_sandbox_flags);
    WP_RUN(na_defaults_and_overrides);
    WP_RUN(na_service_none_removes);
    WP_RUN(na_rejects);
    WP_RUN(na_pin_and_commands);
    return wp_test_done();
}
