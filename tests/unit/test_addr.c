/*
 * test_addr.c — unit tests for addr.c: listen-address parsing, formatting and host:port splitting.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "addr.h"
#include "err.h"
#include "wp_test.h"

/* Parses s and formats it back; returns the parse result, out receives the text. */
static int roundtrip(const char *s, int defport, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    int rc = wp_addr_parse(s, defport, &ss, &len);
    if (rc < 0)
        return rc;
    if (ss.ss_family == AF_INET && len != sizeof(struct sockaddr_in))
        return WP_ERR_INTERNAL;
    if (ss.ss_family == AF_INET6 && len != sizeof(struct sockaddr_in6))
        return WP_ERR_INTERNAL;
    int n = wp_addr_format((const struct sockaddr *)&ss, out, cap);
    return n < 0 ? n : 0;
}

WP_TEST(addr_parse_valid)
{
    char out[WP_ADDR_STRLEN];
    WP_CHECK_EQ(roundtrip("0.0.0.0:8443", -1, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "0.0.0.0:8443");
    WP_CHECK_EQ(roundtrip("127.0.0.1:0", -1, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "127.0.0.1:0");
    WP_CHECK_EQ(roundtrip("[::1]:8443", -1, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "[::1]:8443");
    WP_CHECK_EQ(roundtrip("[::]:65535", -1, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "[::]:65535");
    WP_CHECK_EQ(roundtrip(":8443", -1, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "0.0.0.0:8443");
    WP_CHECK_EQ(roundtrip("localhost:8443", -1, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "127.0.0.1:8443");
    WP_CHECK_EQ(roundtrip("10.1.2.3", 7000, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "10.1.2.3:7000");
    WP_CHECK_EQ(roundtrip("::1", 80, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "[::1]:80");
    WP_CHECK_EQ(roundtrip("[fe80::1]", 443, out, sizeof(out)), 0);
    WP_CHECK_STR(out, "[fe80::1]:443");
}

WP_TEST(addr_parse_invalid)
{
    struct sockaddr_storage ss;
    socklen_t len = 1234;
    const char *bad[] = {"",
                         ":",
                         "127.0.0.1:",
                         "127.0.0.1:65536",
                         "127.0.0.1:-1",
                         "127.0.0.1:+80",
                         "127.0.0.1:80x",
                         "127.0.0.1:080000",
                         "127.0.0.1 :80",
                         "256.0.0.1:80",
                         "example.com:80",
                         "[::1]",
                         "[::1]x:80",
                         "[::1:80",
                         "[]:80",
                         "[127.0.0.1]:80",
                         "::1:80x",
                         "1.2.3.4:5:6",
                         "localhostx:80",
                         "[::1]:",
                         "127.0.0.1:99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = wp_addr_parse(bad[i], -1, &ss, &len);
        if (rc != WP_ERR_INVAL)
            printf("  accepted: \"%s\"\n", bad[i]);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
    }
    WP_CHECK_EQ(len, 1234); /* untouched on failure */
    WP_CHECK_EQ(wp_addr_parse(NULL, 80, &ss, &len), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_addr_parse("1.2.3.4", 70000, &ss, &len), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_addr_parse("1.2.3.4", -1, &ss, &len), WP_ERR_INVAL); /* port required */
}

WP_TEST(addr_format_limits)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(8443);
    inet_pton(AF_INET, "192.168.100.200", &sin.sin_addr);
    char out[8];
    WP_CHECK_EQ(wp_addr_format((struct sockaddr *)&sin, out, sizeof(out)), WP_ERR_LIMIT);
    WP_CHECK_STR(out, "");
    char big[WP_ADDR_STRLEN];
    WP_CHECK_EQ(wp_addr_format((struct sockaddr *)&sin, big, sizeof(big)), 20);
    WP_CHECK_STR(big, "192.168.100.200:8443");
    struct sockaddr_storage other;
    memset(&other, 0, sizeof(other));
    other.ss_family = AF_UNIX;
    WP_CHECK_EQ(wp_addr_format((struct sockaddr *)&other, big, sizeof(big)), WP_ERR_INVAL);
}

WP_TEST(hostport_split)
{
    char host[64];
    int port = 0;
    WP_CHECK_EQ(wp_hostport_split("cp.example.com:8443", host, sizeof(host), &port), 0);
    WP_CHECK_STR(host, "cp.example.com");
    WP_CHECK_EQ(port, 8443);
    WP_CHECK_EQ(wp_hostport_split("[::1]:443", host, sizeof(host), &port), 0);
    WP_CHECK_STR(host, "::1");
    WP_CHECK_EQ(port, 443);
    WP_CHECK_EQ(wp_hostport_split("10.0.0.1:1", host, sizeof(host), &port), 0);
    WP_CHECK_STR(host, "10.0.0.1");
    WP_CHECK_EQ(port, 1);

    const char *bad[] = {"cp.example.com", "cp.example.com:", ":8443",        "host:0",
                         "host:65536",     "ho st:80",        "host:80:90",   "[::1]",
                         "[nothex]:80",    "-host:80",        "host/evil:80", "[::1]:80x",
                         "host\r\nx:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = wp_hostport_split(bad[i], host, sizeof(host), &port);
        if (rc != WP_ERR_INVAL)
            printf("  accepted: \"%s\"\n", bad[i]);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
    }
    char tiny[4];
    WP_CHECK_EQ(wp_hostport_split("example.com:80", tiny, sizeof(tiny), &port), WP_ERR_LIMIT);
    char longname[300];
    memset(longname, 'a', 260);
    strcpy(longname + 260, ":80");
    WP_CHECK_EQ(wp_hostport_split(longname, host, sizeof(host), &port), WP_ERR_INVAL);
}

int main(void)
{
    (void)wp_test_walk_cb_; /* wp_test.h helper, only used by loop tests */
    WP_RUN(addr_parse_valid);
    WP_RUN(addr_parse_invalid);
    WP_RUN(addr_format_limits);
    WP_RUN(hostport_split);
    return wp_test_done();
}
