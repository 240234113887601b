/*
 * test_cp_api_parse.c — the pure input checks of the nodes and events API: label rules and
 * selectors, page limits, event cursors, RFC 3339 times, event types and ids, status /
 * vendor / replica names. Hostile inputs: SQL, control characters, invalid UTF-8,
 * oversized and truncated values, trailing garbage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api_events.h"
#include "api_nodes.h"
#include "err.h"
#include "events.h"
#include "nodes.h"
#include "wp_test.h"

WP_TEST(label_rules)
{
    WP_CHECK(cp_node_label_valid("zone", "eu-west-1"));
    WP_CHECK(cp_node_label_valid("example.com/tier", "A100 80GB"));
    WP_CHECK(cp_node_label_valid("k", ""));
    WP_CHECK(cp_node_label_valid("k", "grüße ✓"));
    WP_CHECK(cp_node_label_valid("k", "'; DROP TABLE nodes; --"));
    WP_CHECK(!cp_node_label_valid("", "v"));
    WP_CHECK(!cp_node_label_valid("bad key", "v"));
    WP_CHECK(!cp_node_label_valid("k=v", "v"));
    WP_CHECK(!cp_node_label_valid("k'", "v"));
    WP_CHECK(!cp_node_label_valid("k", "line\nbreak"));
    WP_CHECK(!cp_node_label_valid("k", "tab\there"));
    WP_CHECK(!cp_node_label_valid("k", "del\x7f"));
    WP_CHECK(!cp_node_label_valid("k", "\xff\xfe"));
    WP_CHECK(!cp_node_label_valid("k", "\xc3")); /* truncated UTF-8 */
    WP_CHECK(!cp_node_label_valid(NULL, "v"));
    WP_CHECK(!cp_node_label_valid("k", NULL));
    char key[80], val[140];
    memset(key, 'k', sizeof key);
    key[CP_NODE_LABEL_KEY_MAX] = '\0';
    WP_CHECK(cp_node_label_valid(key, "v"));
    key[CP_NODE_LABEL_KEY_MAX] = 'k';
    key[CP_NODE_LABEL_KEY_MAX + 1] = '\0';
    WP_CHECK(!cp_node_label_valid(key, "v"));
    memset(val, 'v', sizeof val);
    val[CP_NODE_LABEL_VALUE_MAX] = '\0';
    WP_CHECK(cp_node_label_valid("k", val));
    val[CP_NODE_LABEL_VALUE_MAX] = 'v';
    val[CP_NODE_LABEL_VALUE_MAX + 1] = '\0';
    WP_CHECK(!cp_node_label_valid("k", val));
}

WP_TEST(labels_object)
{
    char err[256];
    cJSON *o = cJSON_Parse("{\"a\":\"1\",\"b\":\"2\"}");
    WP_CHECK_EQ(cp_node_labels_check(o, 32, err, sizeof err), 0);
    WP_CHECK_EQ(cp_node_labels_check(o, 1, err, sizeof err), WP_ERR_INVAL);
    WP_CHECK(strstr(err, "at most 1") != NULL);
    cJSON_Delete(o);
    const char *bad[] = {"[]",
                         "\"x\"",
                         "{\"a\":1}",
                         "{\"a\":null}",
                         "{\"a\":{}}",
                         "{\"bad key\":\"v\"}",
                         "{\"a\":\"1\",\"a\":\"2\"}",
                         "{\"\":\"v\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = cJSON_Parse(bad[i]);
        WP_CHECK(o != NULL);
        err[0] = '\0';
        WP_CHECK_EQ(cp_node_labels_check(o, 32, err, sizeof err), WP_ERR_INVAL);
        WP_CHECK(err[0] != '\0');
        cJSON_Delete(o);
    }
    WP_CHECK_EQ(cp_node_labels_check(NULL, 32, NULL, 0), WP_ERR_INVAL);
    o = cJSON_CreateObject();
    for (int i = 0; i < 33; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        cJSON_AddStringToObject(o, k, "v");
    }
    WP_CHECK_EQ(cp_node_labels_check(o, CP_NODE_LABELS_MAX, NULL, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_node_labels_check(o, CP_NODE_LABELS_HELLO_MAX, NULL, 0), 0);
    cJSON_Delete(o);
}

WP_TEST(selector)
{
    char err[256];
    cJSON *o = NULL;
    WP_CHECK_EQ(cp_node_selector_parse("zone=eu,tier=a100", &o, err, sizeof err), 0);
    WP_CHECK(o != NULL);
    WP_CHECK_STR(cJSON_GetObjectItemCaseSensitive(o, "zone")->valuestring, "eu");
    WP_CHECK_STR(cJSON_GetObjectItemCaseSensitive(o, "tier")->valuestring, "a100");
    WP_CHECK_EQ(cJSON_GetArraySize(o), 2);
    cJSON_Delete(o);
    WP_CHECK_EQ(cp_node_selector_parse("k=a=b", &o, err, sizeof err), 0); /* value "a=b" */
    WP_CHECK_STR(cJSON_GetObjectItemCaseSensitive(o, "k")->valuestring, "a=b");
    cJSON_Delete(o);
    WP_CHECK_EQ(cp_node_selector_parse("k=", &o, err, sizeof err), 0); /* empty value */
    WP_CHECK_STR(cJSON_GetObjectItemCaseSensitive(o, "k")->valuestring, "");
    cJSON_Delete(o);
    WP_CHECK_EQ(cp_node_selector_parse("k='; DROP TABLE nodes; --", &o, err, sizeof err), 0);
    cJSON_Delete(o);
    const char *bad[] = {"",         "zone",  "=eu",     "zone=eu,",      ",zone=eu",
                         "a=1,,b=2", "a b=1", "a=1,a=2", "k=line\nbreak", "k=\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = (cJSON *)1;
        err[0] = '\0';
        WP_CHECK_EQ(cp_node_selector_parse(bad[i], &o, err, sizeof err), WP_ERR_INVAL);
        WP_CHECK(o == NULL);
        WP_CHECK(err[0] != '\0');
    }
    WP_CHECK_EQ(cp_node_selector_parse(NULL, &o, NULL, 0), WP_ERR_INVAL);
    /* too many pairs, and an oversized key */
    char many[2048] = "";
    for (int i = 0; i <= CP_NODE_LABELS_HELLO_MAX; i++) {
        char part[16];
        snprintf(part, sizeof part, "%sk%d=v", i ? "," : "", i);
        strcat(many, part);
    }
    WP_CHECK_EQ(cp_node_selector_parse(many, &o, err, sizeof err), WP_ERR_INVAL);
    char big[300];
    memset(big, 'k', sizeof big);
    big[200] = '=';
    big[201] = 'v';
    big[202] = '\0';
    WP_CHECK_EQ(cp_node_selector_parse(big, &o, err, sizeof err), WP_ERR_INVAL);
}

WP_TEST(page_limit)
{
    WP_CHECK_EQ(cp_api_page_limit(NULL, 100, 500), 100);
    WP_CHECK_EQ(cp_api_page_limit("", 100, 500), 100);
    WP_CHECK_EQ(cp_api_page_limit("1", 100, 500), 1);
    WP_CHECK_EQ(cp_api_page_limit("500", 100, 500), 500);
    WP_CHECK_EQ(cp_api_page_limit("007", 100, 500), 7);
    const char *bad[] = {"0", "501", "-1", "+5", " 5", "5 ", "5x", "1e2", "99999999999", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        WP_CHECK_EQ(cp_api_page_limit(bad[i], 100, 500), WP_ERR_INVAL);
}

WP_TEST(event_cursor)
{
    long long v = -1;
    WP_CHECK_EQ(cp_api_events_cursor_parse("0", &v), 0);
    WP_CHECK_EQ(v, 0);
    WP_CHECK_EQ(cp_api_events_cursor_parse("123456", &v), 0);
    WP_CHECK_EQ(v, 123456);
    WP_CHECK_EQ(cp_api_events_cursor_parse("9007199254740992", &v), 0); /* 2^53 */
    const char *bad[] = {"",    "-1", "1.5",  "12a", " 1", "9007199254740993", "99999999999999999",
                         "0x1", "1 ", "'; --"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        WP_CHECK_EQ(cp_api_events_cursor_parse(bad[i], &v), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_api_events_cursor_parse(NULL, &v), WP_ERR_INVAL);
}

WP_TEST(rfc3339)
{
    const char *good[] = {"2024-05-01T12:00:00Z",           "2024-05-01t12:00:00z",
                          "2024-02-29T23:59:60Z",           "2000-02-29T00:00:00+00:00",
                          "2024-05-01T12:00:00.123456789Z", "0001-01-01T00:00:00-14:59",
                          "2024-12-31T23:59:59.5+05:30"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        WP_CHECK(cp_api_events_time_valid(good[i]));
    const char *bad[] = {"",
                         "2024-05-01",
                         "2024-05-01 12:00:00Z",
                         "2024-05-01T12:00:00",
                         "2023-02-29T00:00:00Z",
                         "1900-02-29T00:00:00Z",
                         "2024-13-01T00:00:00Z",
                         "2024-00-01T00:00:00Z",
                         "2024-04-31T00:00:00Z",
                         "2024-05-01T24:00:00Z",
                         "2024-05-01T12:60:00Z",
                         "2024-05-01T12:00:61Z",
                         "0000-01-01T00:00:00Z",
                         "2024-05-01T12:00:00.Z",
                         "2024-05-01T12:00:00.1234567890Z",
                         "2024-05-01T12:00:00+15:00",
                         "2024-05-01T12:00:00+0100",
                         "2024-05-01T12:00:00Zjunk",
                         "2024-05-01T12:00:00Z'; DROP TABLE events; --",
                         "now",
                         "yesterday",
                         "2024-5-1T1:0:0Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cp_api_events_time_valid(bad[i]))
            printf("  accepted: %s\n", bad[i]);
        WP_CHECK(!cp_api_events_time_valid(bad[i]));
    }
    WP_CHECK(!cp_api_events_time_valid(NULL));
}

WP_TEST(names)
{
    WP_CHECK(cp_node_status_valid("online") && cp_node_status_valid("degraded") &&
             cp_node_status_valid("draining") && cp_node_status_valid("offline"));
    WP_CHECK(!cp_node_status_valid("Online") && !cp_node_status_valid("") &&
             !cp_node_status_valid("online ") && !cp_node_status_valid(NULL));
    WP_CHECK(cp_node_gpu_vendor_valid("nvidia") && cp_node_gpu_vendor_valid("none"));
    WP_CHECK(!cp_node_gpu_vendor_valid("mixed") && !cp_node_gpu_vendor_valid(NULL));
    WP_CHECK(cp_node_replica_valid("wolfpackd-7c9f") && cp_node_replica_valid("A.b_c-1"));
    WP_CHECK(!cp_node_replica_valid("") && !cp_node_replica_valid("a b") &&
             !cp_node_replica_valid("a/b") && !cp_node_replica_valid(NULL));
    char r[70];
    memset(r, 'r', sizeof r);
    r[64] = '\0';
    WP_CHECK(cp_node_replica_valid(r));
    r[64] = 'r';
    r[65] = '\0';
    WP_CHECK(!cp_node_replica_valid(r));
    WP_CHECK(cp_event_type_valid("node.online") && cp_event_type_valid("session.lost_2"));
    WP_CHECK(!cp_event_type_valid("Node.online") && !cp_event_type_valid(".x") &&
             !cp_event_type_valid("node-online") && !cp_event_type_valid("node online") &&
             !cp_event_type_valid(NULL));
    cp_event ok = {.type = "node.online", .node_id = "gpu-1", .replica_id = "r1"};
    WP_CHECK_EQ(cp_event_check(&ok), 0);
    cp_event bad = ok;
    bad.replica_id = "r 1";
    WP_CHECK_EQ(cp_event_check(&bad), WP_ERR_INVAL);
    bad = ok;
    bad.token_id = "x";
    WP_CHECK_EQ(cp_event_check(&bad), WP_ERR_INVAL);
    char msg[CP_EVENT_MESSAGE_MAX + 2];
    memset(msg, 'm', sizeof msg);
    msg[CP_EVENT_MESSAGE_MAX + 1] = '\0';
    bad = ok;
    bad.message = msg;
    WP_CHECK_EQ(cp_event_check(&bad), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_event_check(NULL), WP_ERR_INVAL);
}

WP_TEST(hello_check)
{
    char err[256];
    cJSON *svc = cJSON_Parse("[\"wolf\",\"wolf-http\",\"sandbox\"]");
    cJSON *gpus = cJSON_Parse("[{\"index\":0,\"vendor\":\"nvidia\"}]");
    cp_node_hello h = {
        .node_id = "gpu-1", .version = "0.1.0", .max_sessions = 0, .services = svc, .gpus = gpus};
    WP_CHECK_EQ(cp_node_hello_check(&h, err, sizeof err), 0);
    cp_node_hello b = h;
    b.version = NULL;
    WP_CHECK_EQ(cp_node_hello_check(&b, err, sizeof err), WP_ERR_INVAL);
    char v[70];
    memset(v, '1', sizeof v);
    v[65] = '\0';
    b = h;
    b.version = v;
    WP_CHECK_EQ(cp_node_hello_check(&b, err, sizeof err), WP_ERR_INVAL);
    v[64] = '\0';
    WP_CHECK_EQ(cp_node_hello_check(&b, err, sizeof err), 0);
    cJSON *svc_bad = cJSON_Parse("[\"-wolf\"]");
    b = h;
    b.services = svc_bad;
    WP_CHECK_EQ(cp_node_hello_check(&b, err, sizeof err), WP_ERR_INVAL);
    cJSON *gpus_bad = cJSON_Parse("[1]");
    b = h;
    b.gpus = gpus_bad;
    WP_CHECK_EQ(cp_node_hello_check(&b, err, sizeof err), WP_ERR_INVAL);
    cJSON *many = cJSON_CreateArray();
    for (int i = 0; i <= CP_NODE_SERVICES_MAX; i++)
        cJSON_AddItemToArray(many, cJSON_CreateString("wolf"));
    b = h;
    b.services = many;
    WP_CHECK_EQ(cp_node_hello_check(&b, err, sizeof err), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_node_hello_check(NULL, NULL, 0), WP_ERR_INVAL);
    cJSON_Delete(many);
    cJSON_Delete(svc_bad);
    cJSON_Delete(gpus_bad);
    cJSON_Delete(svc);
    cJSON_Delete(gpus);
}

int main(void)
{
    WP_RUN(label_rules);
    WP_RUN(labels_object);
    WP_RUN(selector);
    WP_RUN(page_limit);
    WP_RUN(event_cursor);
    WP_RUN(rfc3339);
    WP_RUN(names);
    WP_RUN(hello_check);
    return wp_test_done();
}
