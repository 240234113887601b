/*
 * test_na_agent.c — the agent's pure parts: backoff, tunnel URL, wire-limit checks,
 * hello/welcome JSON, preamble allow-list decisions and dial error mapping.
 */
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "err.h"
#include "json.h"
#include "services.h"
#include "wp_test.h"

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

static int mkcfg(na_config *c, int argc, char **argv)
{
    char err[256];
    return na_config_parse(c, argc, argv, no_env, err, sizeof(err));
}

WP_TEST(na_backoff)
{
    /* Upper bounds: min(30 s, 1 s * 2^n), inclusive. */
    WP_CHECK_EQ(na_backoff_delay_ms(0, 1000), 1000);
    WP_CHECK_EQ(na_backoff_delay_ms(0, 1001), 0);
    WP_CHECK_EQ(na_backoff_delay_ms(0, UINT64_MAX), UINT64_MAX % 1001);
    WP_CHECK_EQ(na_backoff_delay_ms(1, 2000), 2000);
    WP_CHECK_EQ(na_backoff_delay_ms(4, 16000), 16000);
    WP_CHECK_EQ(na_backoff_delay_ms(5, 30000), 30000); /* 32 s capped at 30 s */
    WP_CHECK_EQ(na_backoff_delay_ms(5, 30001), 0);
    WP_CHECK_EQ(na_backoff_delay_ms(0, 0), 0);
    /* Huge n must not overflow the shift. */
    for (unsigned n = 5; n < 200; n += 7) {
        WP_CHECK(na_backoff_delay_ms(n, UINT64_MAX) <= WP_BACKOFF_CAP_MS);
        WP_CHECK_EQ(na_backoff_delay_ms(n, 30000), 30000);
    }
    for (uint64_t r = 0; r < 5000; r += 37)
        WP_CHECK(na_backoff_delay_ms(2, r * 7919u) <= 4000);
}

WP_TEST(na_tunnel_url_forms)
{
    char out[NA_URL_MAX];
    WP_CHECK_EQ(na_tunnel_url("wss://cp.example.com:8443", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "wss://cp.example.com:8443/api/v1/tunnel");
    WP_CHECK_EQ(na_tunnel_url("https://cp:8443/", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "wss://cp:8443/api/v1/tunnel");
    WP_CHECK_EQ(na_tunnel_url("wss://[::1]:8443", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "wss://[::1]:8443/api/v1/tunnel");
    WP_CHECK_EQ(na_tunnel_url("wss://cp", out, sizeof(out)), 0);
    const char *bad[] = {"ws://cp:8443",
                         "http://cp:8443",
                         "wss://",
                         "wss:///x",
                         "wss://cp:8443/api/v1/tunnel",
                         "wss://cp:8443/?token=secret",
                         "wss://cp:8443?token=secret",
                         "wss://cp:8443#frag",
                         "wss://user:pw@cp:8443",
                         "wss://cp host:8443",
                         "wss://cp\r\n:8443",
                         "wss://cp:8443//",
                         "cp:8443",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        WP_CHECK_EQ(na_tunnel_url(bad[i], out, sizeof(out)), WP_ERR_INVAL);
    WP_CHECK_EQ(na_tunnel_url(NULL, out, sizeof(out)), WP_ERR_INVAL);
    WP_CHECK_EQ(na_tunnel_url("wss://cp:8443", out, 20), WP_ERR_LIMIT);
    char longurl[400];
    memset(longurl, 'a', sizeof(longurl));
    memcpy(longurl, "wss://", 6);
    longurl[sizeof(longurl) - 1] = '\0';
    WP_CHECK_EQ(na_tunnel_url(longurl, out, sizeof(out)), WP_ERR_INVAL);
}

WP_TEST(na_labels_tokens)
{
    WP_CHECK(na_label_valid("zone", "eu-west-1"));
    WP_CHECK(na_label_valid("k8s.io/tier", "a100 x8"));
    WP_CHECK(na_label_valid("a", ""));
    WP_CHECK(!na_label_valid("Zone", "x"));
    WP_CHECK(!na_label_valid("-zone", "x"));
    WP_CHECK(!na_label_valid("", "x"));
    WP_CHECK(!na_label_valid("zone", "tab\there"));
    WP_CHECK(!na_label_valid("zone", "caf\xc3\xa9"));
    char v[80];
    memset(v, 'v', 63);
    v[63] = '\0';
    WP_CHECK(na_label_valid("k", v));
    v[63] = 'v';
    v[64] = '\0';
    WP_CHECK(!na_label_valid("k", v));
    WP_CHECK(!na_label_valid(NULL, "x"));

    WP_CHECK(na_token_valid("wpa_abcdefghijklmnop"));
    WP_CHECK(!na_token_valid(""));
    WP_CHECK(!na_token_valid(NULL));
    WP_CHECK(!na_token_valid("abc def"));
    WP_CHECK(!na_token_valid("abc\r\nX-Evil: 1"));
    WP_CHECK(!na_token_valid("abc\x7f"));
}

WP_TEST(na_check_config)
{
    na_config c;
    char err[256];
    char *ok[] = {"a", "--node-id", "n1", "--label", "zone=eu", "-s", "web=tcp:127.0.0.1:80"};
    WP_CHECK_EQ(mkcfg(&c, 7, ok), 0);
    WP_CHECK_EQ(na_agent_check_config(&c, err, sizeof(err)), 0);
    na_config_free(&c);

    char *upper[] = {"a", "--node-id", "n1", "--label", "Zone=eu"};
    WP_CHECK_EQ(mkcfg(&c, 5, upper), 0);
    WP_CHECK_EQ(na_agent_check_config(&c, err, sizeof(err)), WP_ERR_CONFIG);
    WP_CHECK(strstr(err, "Zone") != NULL);
    na_config_free(&c);

    char *under[] = {"a", "--node-id", "n1", "-s", "my_svc=tcp:127.0.0.1:80"};
    WP_CHECK_EQ(mkcfg(&c, 5, under), 0);
    WP_CHECK_EQ(na_agent_check_config(&c, err, sizeof(err)), WP_ERR_CONFIG);
    na_config_free(&c);

    char *reserved[] = {"a", "--node-id", "n1", "-s", "sandbox=tcp:127.0.0.1:80"};
    WP_CHECK_EQ(mkcfg(&c, 5, reserved), 0);
    WP_CHECK_EQ(na_agent_check_config(&c, err, sizeof(err)), WP_ERR_CONFIG);
    WP_CHECK(strstr(err, "reserved") != NULL);
    na_config_free(&c);

    char *probe[] = {"a", "--node-id", "n1", "-s", "probe=unix:/x"};
    WP_CHECK_EQ(mkcfg(&c, 5, probe), 0);
    WP_CHECK_EQ(na_agent_check_config(&c, err, sizeof(err)), WP_ERR_CONFIG);
    na_config_free(&c);
    WP_CHECK_EQ(na_agent_check_config(NULL, err, sizeof(err)), WP_ERR_INVAL);
}

WP_TEST(na_hello)
{
    na_config c;
    char *argv[] = {"a", "--node-id", "gpu-3", "--label", "zone=eu", "--max-sessions", "8"};
    WP_CHECK_EQ(mkcfg(&c, 7, argv), 0);
    char *s = na_hello_json(&c, NULL, NULL, "00112233445566778899aabbccddeeff", 0);
    WP_CHECK(s != NULL);
    cJSON *o = NULL;
    WP_CHECK_EQ(wp_json_parse(s, strlen(s), 65536, 8, &o), 0);
    WP_CHECK_STR(wp_json_get_str(o, "type"), "hello");
    WP_CHECK_STR(wp_json_get_str(o, "node_id"), "gpu-3");
    WP_CHECK_STR(wp_json_get_str(o, "instance_id"), "00112233445566778899aabbccddeeff");
    long long v = 0;
    WP_CHECK_EQ(wp_json_get_int(o, "protocol", &v), 0);
    WP_CHECK_EQ(v, 1);
    WP_CHECK_EQ(wp_json_get_int(o, "max_sessions", &v), 0);
    WP_CHECK_EQ(v, 8);
    int b = 1;
    WP_CHECK_EQ(wp_json_get_bool(o, "draining", &b), 0);
    WP_CHECK_EQ(b, 0);
    const cJSON *svcs = cJSON_GetObjectItemCaseSensitive(o, "services");
    WP_CHECK_EQ(cJSON_GetArraySize(svcs), 3); /* the default allow-list */
    WP_CHECK_STR(cJSON_GetArrayItem(svcs, 0)->valuestring, "wolf");
    const cJSON *gpu = cJSON_GetObjectItemCaseSensitive(o, "gpu");
    WP_CHECK_STR(wp_json_get_str(gpu, "vendor"), "none");
    WP_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(gpu, "devices")), 0);
    WP_CHECK_STR(wp_json_get_str(cJSON_GetObjectItemCaseSensitive(o, "labels"), "zone"), "eu");
    WP_CHECK(cJSON_GetObjectItemCaseSensitive(o, "lobbies") == NULL); /* absent = unknown */
    WP_CHECK(cJSON_GetObjectItemCaseSensitive(o, "sessions") == NULL);
    /* PROTOCOL.md §4.2: agents announce WP_STREAM_WINDOW_MAX (4 MiB), an integer within
     * WP_STREAM_INITIAL_WINDOW .. 2^31-1 */
    v = 0;
    WP_CHECK_EQ(wp_json_get_int(o, "stream_window_max", &v), 0);
    WP_CHECK_EQ(v, 4194304);
    WP_CHECK_EQ(v, WP_STREAM_WINDOW_MAX);
    WP_CHECK(v >= (long long)WP_STREAM_INITIAL_WINDOW && v <= (long long)WP_STREAM_WINDOW_LIMIT);
    WP_CHECK(strstr(s, "\"stream_window_max\":4194304") != NULL); /* no fraction or exponent */
    cJSON_Delete(o);
    cJSON_free(s);

    na_sandbox_policy sb = {.enabled = 1, .ports = {9876}, .nports = 1};
    s = na_hello_json(&c, &sb, NULL, "00112233445566778899aabbccddeeff", 1);
    WP_CHECK(s != NULL && strstr(s, "\"sandbox\"") != NULL && strstr(s, "\"draining\":true"));
    WP_CHECK(s != NULL && strstr(s, "\"stream_window_max\":4194304") != NULL);
    cJSON_free(s);
    /* with an inventory: hello.gpu is na_gpu_inventory_json of it */
    na_gpu_inventory *inv = calloc(1, sizeof(*inv));
    WP_CHECK(inv != NULL);
    if (inv) {
        snprintf(inv->vendor, sizeof(inv->vendor), "amd");
        inv->n = 1;
        inv->dev[0] = (na_gpu_device){.index = 0,
                                      .vendor = "amd",
                                      .vendor_id = "0x1002",
                                      .render_node = "/dev/dri/renderD128",
                                      .memory_total = 1024,
                                      .memory_used = -1,
                                      .utilization = -1,
                                      .temperature = -1};
        s = na_hello_json(&c, NULL, inv, "00112233445566778899aabbccddeeff", 0);
        WP_CHECK(s != NULL);
        o = NULL;
        WP_CHECK_EQ(wp_json_parse(s ? s : "", s ? strlen(s) : 0, 65536, 8, &o), 0);
        gpu = cJSON_GetObjectItemCaseSensitive(o, "gpu");
        WP_CHECK_STR(wp_json_get_str(gpu, "vendor"), "amd");
        const cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(gpu, "devices"), 0);
        WP_CHECK_STR(wp_json_get_str(d0, "render_node"), "/dev/dri/renderD128");
        WP_CHECK_EQ(wp_json_get_int(d0, "memory_total", &v), 0);
        WP_CHECK_EQ(v, 1024);
        WP_CHECK(cJSON_GetObjectItemCaseSensitive(d0, "memory_used") == NULL); /* unknown */
        WP_CHECK_EQ(wp_json_get_int(o, "stream_window_max", &v), 0);
        WP_CHECK_EQ(v, WP_STREAM_WINDOW_MAX);
        cJSON_Delete(o);
        cJSON_free(s);
        free(inv);
    }
    WP_CHECK(na_hello_json(NULL, NULL, NULL, "x", 0) == NULL);
    na_config_free(&c);
}

static int welcome_of(const char *text, na_welcome *w, char *err)
{
    cJSON *o = NULL;
    int rc = wp_json_parse(text, strlen(text), 65536, 8, &o);
    if (rc != 0)
        return rc;
    rc = na_welcome_parse(o, w, err, 200);
    cJSON_Delete(o);
    return rc;
}

WP_TEST(na_welcome)
{
    na_welcome w;
    char err[200];
    WP_CHECK_EQ(welcome_of("{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"wolfpackd-7c9f\","
                           "\"replica_count\":2,\"heartbeat_interval_ms\":10000,\"server_time\":"
                           "1718000000123,\"node_id\":\"gpu-node-1\",\"version\":\"0.1.0\","
                           "\"future\":{\"x\":1}}",
                           &w, err),
                0);
    WP_CHECK_STR(w.replica_id, "wolfpackd-7c9f");
    WP_CHECK_STR(w.node_id, "gpu-node-1");
    WP_CHECK_EQ(w.replica_count, 2);
    WP_CHECK_EQ(w.heartbeat_interval_ms, 10000);
    WP_CHECK_EQ(w.server_time, 1718000000123LL);
    /* clamps */
    WP_CHECK_EQ(welcome_of("{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\","
                           "\"replica_count\":99,\"heartbeat_interval_ms\":5,\"server_time\":0,"
                           "\"node_id\":\"n\"}",
                           &w, err),
                0);
    WP_CHECK_EQ(w.replica_count, WP_MAX_REPLICAS);
    WP_CHECK_EQ(w.heartbeat_interval_ms, WP_HEARTBEAT_MIN_MS);
    WP_CHECK_EQ(welcome_of("{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\","
                           "\"replica_count\":1,\"heartbeat_interval_ms\":999999999,"
                           "\"server_time\":0,\"node_id\":\"n\"}",
                           &w, err),
                0);
    WP_CHECK_EQ(w.heartbeat_interval_ms, WP_HEARTBEAT_MAX_MS);
    /* invalid ones */
    WP_CHECK_EQ(welcome_of("{\"type\":\"welcome\",\"protocol\":2,\"replica_id\":\"r\","
                           "\"replica_count\":1,\"heartbeat_interval_ms\":1000,\"server_time\":0,"
                           "\"node_id\":\"n\"}",
                           &w, err),
                WP_ERR_UNSUPPORTED);
    const char *bad[] = {
        "{\"type\":\"welcome\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r s\",\"replica_count\":1,"
        "\"heartbeat_interval_ms\":1000,\"server_time\":0,\"node_id\":\"n\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\",\"replica_count\":0,"
        "\"heartbeat_interval_ms\":1000,\"server_time\":0,\"node_id\":\"n\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\",\"replica_count\":1,"
        "\"heartbeat_interval_ms\":\"1000\",\"server_time\":0,\"node_id\":\"n\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\",\"replica_count\":1,"
        "\"heartbeat_interval_ms\":1000.5,\"server_time\":0,\"node_id\":\"n\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\",\"replica_count\":1,"
        "\"heartbeat_interval_ms\":1000,\"server_time\":0,\"node_id\":\"N_1\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"\",\"replica_count\":1,"
        "\"heartbeat_interval_ms\":1000,\"server_time\":0,\"node_id\":\"n\"}",
        "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r\",\"replica_count\":1,"
        "\"heartbeat_interval_ms\":-1,\"server_time\":0,\"node_id\":\"n\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        WP_CHECK_EQ(welcome_of(bad[i], &w, err), WP_ERR_PROTO);
    WP_CHECK_EQ(na_welcome_parse(NULL, &w, err, sizeof(err)), WP_ERR_INVAL);
}

/* A valid welcome with `"stream_window_max":<member>` appended (member NULL: absent). */
static int welcome_window(const char *member, na_welcome *w, char *err)
{
    char text[512];
    snprintf(text, sizeof(text),
             "{\"type\":\"welcome\",\"protocol\":1,\"replica_id\":\"r1\",\"replica_count\":1,"
             "\"heartbeat_interval_ms\":10000,\"server_time\":0,\"node_id\":\"n\"%s%s}",
             member ? ",\"stream_window_max\":" : "", member ? member : "");
    memset(w, 0xa5, sizeof(*w)); /* the parse must set every member it reports */
    err[0] = '\0';
    return welcome_of(text, w, err);
}

WP_TEST(na_welcome_stream_window_max)
{
    na_welcome w;
    char err[200];
    /* absent: the server accepts no growth, windows stay at the initial one (§4.3, §7.1) */
    WP_CHECK_EQ(welcome_window(NULL, &w, err), 0);
    WP_CHECK_EQ(w.stream_window_max, WP_STREAM_INITIAL_WINDOW);
    WP_CHECK_EQ(w.stream_window_max, 262144);
    /* what servers send, and both ends of the range */
    WP_CHECK_EQ(welcome_window("4194304", &w, err), 0);
    WP_CHECK_EQ(w.stream_window_max, WP_STREAM_WINDOW_MAX);
    WP_CHECK_EQ(welcome_window("262144", &w, err), 0);
    WP_CHECK_EQ(w.stream_window_max, 262144);
    WP_CHECK_EQ(welcome_window("2147483647", &w, err), 0);
    WP_CHECK_EQ(w.stream_window_max, 2147483647LL); /* reported as sent; the mux caps its use */
    WP_CHECK_EQ(welcome_window("1048576", &w, err), 0);
    WP_CHECK_EQ(w.stream_window_max, 1048576);
    WP_CHECK_STR(w.replica_id, "r1"); /* the rest of the welcome still parsed */
    WP_CHECK_EQ(w.heartbeat_interval_ms, 10000);
    /* out of range or mistyped: an invalid welcome, a protocol error naming the member (§4.1) */
    const char *bad[] = {"262143",
                         "0",
                         "-1",
                         "-4194304",
                         "2147483648",
                         "4294967296",
                         "9007199254740993",
                         "4194304.5",
                         "\"4194304\"",
                         "null",
                         "true",
                         "[4194304]",
                         "{}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        WP_CHECK_EQ(welcome_window(bad[i], &w, err), WP_ERR_PROTO);
        if (!strstr(err, "stream_window_max"))
            printf("  welcome with stream_window_max %s: err \"%s\"\n", bad[i], err);
        WP_CHECK(strstr(err, "stream_window_max") != NULL);
    }
}

static int resolve(const na_config *c, const na_sandbox_policy *sb, const char *json, na_target *t,
                   const char **code)
{
    char msg[200];
    *code = NULL;
    return na_services_resolve(c, sb, json, strlen(json), t, code, msg, sizeof(msg));
}

WP_TEST(na_preamble_decisions)
{
    na_config c;
    char *argv[] = {"a",
                    "--node-id",
                    "n1",
                    "-s",
                    "moonlight=tcp:127.0.0.1:8080",
                    "-s",
                    "wolf=unix:/run/wolf.sock"};
    WP_CHECK_EQ(mkcfg(&c, 7, argv), 0);
    na_target t;
    const char *code;
    WP_CHECK_EQ(resolve(&c, NULL, "{\"service\":\"wolf\"}", &t, &code), 0);
    WP_CHECK_EQ(t.kind, NA_SVC_UNIX);
    WP_CHECK_STR(t.addr, "/run/wolf.sock");
    WP_CHECK_EQ(resolve(&c, NULL, "{\"service\":\"moonlight\",\"extra\":[1,{}]}", &t, &code), 0);
    WP_CHECK_EQ(t.kind, NA_SVC_TCP);
    WP_CHECK_STR(t.addr, "127.0.0.1");
    WP_CHECK_EQ(t.port, 8080);
    WP_CHECK_STR(t.service, "moonlight");

    /* not allowed */
    const char *na[] = {"{\"service\":\"ssh\"}",
                        "{\"service\":\"probe\"}",
                        "{\"service\":\"Wolf\"}",
                        "{\"service\":\"\"}",
                        "{\"service\":\"-wolf\"}",
                        "{\"service\":\"wolf/../x\"}",
                        "{\"service\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":9876}"};
    for (size_t i = 0; i < sizeof(na) / sizeof(na[0]); i++) {
        WP_CHECK_EQ(resolve(&c, NULL, na[i], &t, &code), WP_ERR_PERM);
        WP_CHECK_STR(code, "not_allowed");
    }
    /* malformed */
    const char *pr[] = {"",
                        "[]",
                        "\"wolf\"",
                        "{}",
                        "{\"service\":1}",
                        "{\"service\":null}",
                        "{\"service\":\"wolf\"} trailing",
                        "{\"service\":\"wolf\"",
                        "{\"service\":\"wolf\",\"host\":\"x\"}",
                        "{\"service\":\"wolf\",\"port\":1}",
                        "{\"service\":\"sandbox\"}",
                        "{\"service\":\"sandbox\",\"host\":1,\"port\":9876}",
                        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":\"9876\"}",
                        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":98.5}",
                        "{\"service\":\"w\\u0000olf\"}",
                        "{\"a\":[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]}"};
    for (size_t i = 0; i < sizeof(pr) / sizeof(pr[0]); i++) {
        WP_CHECK_EQ(resolve(&c, NULL, pr[i], &t, &code), WP_ERR_PROTO);
        WP_CHECK_STR(code, "protocol");
    }
    /* oversized (more than WP_PREAMBLE_MAX) */
    char big[1200];
    memset(big, ' ', sizeof(big));
    memcpy(big, "{\"service\":\"wolf\"}", 18);
    big[sizeof(big) - 1] = '\0';
    WP_CHECK_EQ(resolve(&c, NULL, big, &t, &code), WP_ERR_PROTO);

    /* sandbox enabled */
    na_sandbox_policy sb = {.enabled = 1, .ports = {9876, 47989}, .nports = 2};
    WP_CHECK_EQ(resolve(&c, &sb, "{\"service\":\"sandbox\",\"host\":\"sess-42.c\",\"port\":9876}",
                        &t, &code),
                0);
    WP_CHECK_STR(t.addr, "sess-42.c");
    WP_CHECK_EQ(t.port, 9876);
    WP_CHECK_EQ(t.kind, NA_SVC_TCP);
    const char *sbna[] = {
        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":22}",
        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":0}",
        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":-9876}",
        "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":75412}",
        "{\"service\":\"sandbox\",\"host\":\"-c1\",\"port\":9876}",
        "{\"service\":\"sandbox\",\"host\":\"c1:80\",\"port\":9876}",
        "{\"service\":\"sandbox\",\"host\":\"c1/x\",\"port\":9876}",
        "{\"service\":\"sandbox\",\"host\":\"\",\"port\":9876}",
        "{\"service\":\"sandbox\",\"host\":\"10.0.0.1 \",\"port\":9876}",
    };
    for (size_t i = 0; i < sizeof(sbna) / sizeof(sbna[0]); i++) {
        WP_CHECK_EQ(resolve(&c, &sb, sbna[i], &t, &code), WP_ERR_PERM);
        WP_CHECK_STR(code, "not_allowed");
    }
    /* port optional: the first allowed one; name pattern; address override */
    WP_CHECK_EQ(resolve(&c, &sb, "{\"service\":\"sandbox\",\"host\":\"c1\"}", &t, &code), 0);
    WP_CHECK_EQ(t.port, 9876);
    WP_CHECK_EQ(resolve(&c, NULL, "{\"service\":\"sandbox\",\"host\":\"c1\"}", &t, &code),
                WP_ERR_PERM);
    na_sandbox_policy pat = {.enabled = 1, .ports = {9876}, .nports = 1};
    snprintf(pat.name_pattern, sizeof(pat.name_pattern), "wolfpack-*");
    WP_CHECK_EQ(
        resolve(&c, &pat, "{\"service\":\"sandbox\",\"host\":\"wolfpack-ab12\"}", &t, &code), 0);
    WP_CHECK_STR(t.addr, "wolfpack-ab12");
    WP_CHECK_EQ(resolve(&c, &pat, "{\"service\":\"sandbox\",\"host\":\"postgres\"}", &t, &code),
                WP_ERR_PERM);
    WP_CHECK_STR(code, "not_allowed");
    snprintf(pat.address, sizeof(pat.address), "127.0.0.1");
    WP_CHECK_EQ(resolve(&c, &pat, "{\"service\":\"sandbox\",\"host\":\"wolfpack-x\",\"port\":9876}",
                        &t, &code),
                0);
    WP_CHECK_STR(t.addr, "127.0.0.1");
    WP_CHECK(na_sandbox_name_match("wolfpack-*", "wolfpack-"));
    WP_CHECK(na_sandbox_name_match("a*b?c", "aXXbYc"));
    WP_CHECK(!na_sandbox_name_match("a*b?c", "aXXbc"));
    WP_CHECK(!na_sandbox_name_match("wolfpack-*", "xwolfpack-1"));
    WP_CHECK(na_sandbox_pattern_valid("wolfpack-*") && !na_sandbox_pattern_valid("a/b") &&
             !na_sandbox_pattern_valid(""));
    na_sandbox_policy off = {.enabled = 0, .ports = {9876}, .nports = 1};
    WP_CHECK_EQ(
        resolve(&c, &off, "{\"service\":\"sandbox\",\"host\":\"c1\",\"port\":9876}", &t, &code),
        WP_ERR_PERM);
    WP_CHECK_EQ(na_services_resolve(NULL, NULL, "{}", 2, &t, &code, NULL, 0), WP_ERR_INVAL);
    /* the message never echoes an invalid name */
    char msg[200];
    const char *xss = "{\"service\":\"<script>\"}";
    WP_CHECK_EQ(na_services_resolve(&c, NULL, xss, strlen(xss), &t, &code, msg, sizeof(msg)),
                WP_ERR_PERM);
    /* a length that cuts the JSON short is malformed, not a different service */
    WP_CHECK_EQ(na_services_resolve(&c, NULL, xss, strlen(xss) - 1, &t, &code, msg, sizeof(msg)),
                WP_ERR_PROTO);
    WP_CHECK(strstr(msg, "<script>") == NULL);
    na_config_free(&c);
}

WP_TEST(na_names)
{
    WP_CHECK(na_service_name_valid("wolf-http"));
    WP_CHECK(na_service_name_valid("a"));
    WP_CHECK(!na_service_name_valid("a_b"));
    WP_CHECK(!na_service_name_valid(NULL));
    char h[140];
    memset(h, 'a', 128);
    h[128] = '\0';
    WP_CHECK(na_sandbox_host_valid(h));
    h[128] = 'a';
    h[129] = '\0';
    WP_CHECK(!na_sandbox_host_valid(h));
    WP_CHECK(na_sandbox_host_valid("A.b_c-d"));
    WP_CHECK(!na_sandbox_host_valid("_a"));
    WP_CHECK(!na_sandbox_host_valid("a b"));
}

WP_TEST(na_dial_errors)
{
    WP_CHECK_STR(na_services_dial_error_code(UV_ECONNREFUSED, 0), "refused");
    WP_CHECK_STR(na_services_dial_error_code(UV_ENOENT, 0), "refused");
    WP_CHECK_STR(na_services_dial_error_code(UV_ETIMEDOUT, 0), "timeout");
    WP_CHECK_STR(na_services_dial_error_code(UV_EHOSTUNREACH, 0), "unreachable");
    WP_CHECK_STR(na_services_dial_error_code(UV_EACCES, 0), "unreachable");
    WP_CHECK_STR(na_services_dial_error_code(UV_EAI_NONAME, 1), "unreachable");
    WP_CHECK_STR(na_services_dial_error_code(UV_ENOMEM, 0), "internal");
}

int main(void)
{
    WP_RUN(na_backoff);
    WP_RUN(na_tunnel_url_forms);
    WP_RUN(na_labels_tokens);
    WP_RUN(na_check_config);
    WP_RUN(na_hello);
    WP_RUN(na_welcome);
    WP_RUN(na_welcome_stream_window_max);
    WP_RUN(na_preamble_decisions);
    WP_RUN(na_names);
    WP_RUN(na_dial_errors);
    return wp_test_done();
}
