/*
 * test_tls.c — unit tests for common/tls.h (either backend, tls_openssl.c or tls_mbedtls.c,
 * plus tls_pin.c): TLS sessions over memory buffers.
 *
 * Everything runs in-process: certificates are generated into a temporary
 * directory with wp_cert_ensure(), and a client and a server session are
 * pumped against each other by moving each one's out-buffer into the other's
 * wp_tls_feed(). Covers verification modes (pin, CA file, hostname, IP SAN),
 * the cipher policy, bulk data with back-pressure, close_notify, hostile
 * input, limits, conf errors and conf reference counting.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cert.h"
#include "err.h"
#include "tls.h"
#include "wp_test.h"

static char g_dir[64];  /* first generated CA + server */
static char g_dir2[64]; /* a second, unrelated CA + server */
static wp_cert_paths g_p, g_p2;
static wp_tls_conf *g_server;
static int g_have_openssl;

/* ---- helpers ---- */

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Moves as much of from's ciphertext into to as to accepts. Returns bytes moved. */
static size_t xfer(wp_tls *from, wp_tls *to)
{
    wp_buf *o = wp_tls_out(from);
    size_t moved = 0;
    while (wp_buf_len(o) > 0) {
        size_t n = wp_buf_len(o);
        if (n > 4096)
            n = 4096;
        if (wp_tls_feed(to, wp_buf_ptr(o), n) != 0)
            break;
        wp_buf_consume(o, n);
        moved += n;
    }
    return moved;
}

/* Drives both handshakes until neither needs more input. */
static void pump_handshake(wp_tls *c, wp_tls *s, int *crc, int *src)
{
    *crc = *src = WP_ERR_NEED_MORE;
    for (int i = 0; i < 20; i++) {
        if (*crc == WP_ERR_NEED_MORE)
            *crc = wp_tls_handshake(c);
        xfer(c, s);
        if (*src == WP_ERR_NEED_MORE)
            *src = wp_tls_handshake(s);
        xfer(s, c);
        if (*crc != WP_ERR_NEED_MORE && *src != WP_ERR_NEED_MORE)
            break;
    }
}

static wp_tls_conf *client_conf(const char *ca_file, const uint8_t *pin, int insecure)
{
    wp_tls_client_opts o = {.ca_file = ca_file, .pin = pin, .insecure_skip_verify = insecure};
    wp_tls_conf *c = NULL;
    char err[256];
    int rc = wp_tls_conf_client_new(&c, &o, err, sizeof(err));
    WP_CHECK_EQ(rc, 0);
    if (rc != 0)
        printf("  client conf: %s\n", err);
    return c;
}

/* Client on conf cc against a fresh session on g_server. Returns the client rc. */
static int try_handshake(wp_tls_conf *cc, const char *name, char *why, size_t cap)
{
    wp_tls *c = NULL, *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&c, cc, name), 0);
    WP_CHECK_EQ(wp_tls_new(&s, g_server, NULL), 0);
    if (!c || !s) {
        wp_tls_free(c);
        wp_tls_free(s);
        return WP_ERR_INTERNAL;
    }
    int crc, src;
    pump_handshake(c, s, &crc, &src);
    if (why)
        snprintf(why, cap, "%s", wp_tls_last_error(c));
    if (crc == 0) {
        WP_CHECK_EQ(src, 0);
        WP_CHECK(wp_tls_handshake_done(c));
        WP_CHECK(wp_tls_handshake_done(s));
    } else {
        WP_CHECK(!wp_tls_handshake_done(c));
        WP_CHECK(strlen(wp_tls_last_error(c)) > 0);
    }
    wp_tls_free(c);
    wp_tls_free(s);
    return crc;
}

/* Connected pair with the client pinned to the server leaf. */
static void make_pair(wp_tls_conf **cc, wp_tls **c, wp_tls **s)
{
    uint8_t pin[WP_SHA256_LEN];
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.server_crt, pin), 0);
    *cc = client_conf(NULL, pin, 0);
    *c = *s = NULL;
    WP_CHECK_EQ(wp_tls_new(c, *cc, "localhost"), 0);
    WP_CHECK_EQ(wp_tls_new(s, g_server, NULL), 0);
    int crc, src;
    pump_handshake(*c, *s, &crc, &src);
    WP_CHECK_EQ(crc, 0);
    WP_CHECK_EQ(src, 0);
}

/* Reads everything currently decryptable from t into dst (cap). Returns count; *last = last rc. */
static size_t drain_read(wp_tls *t, uint8_t *dst, size_t cap, int *last)
{
    size_t got = 0;
    uint8_t tmp[7000];
    for (;;) {
        int n = wp_tls_read(t, tmp, sizeof(tmp));
        if (n <= 0) {
            *last = n;
            return got;
        }
        if (got + (size_t)n <= cap)
            memcpy(dst + got, tmp, (size_t)n);
        got += (size_t)n;
    }
}

/* Sends len bytes from a to b in pieces of `piece`, draining on WP_ERR_LIMIT. */
static void bulk(wp_tls *a, wp_tls *b, size_t len, size_t piece)
{
    uint8_t *src = malloc(len), *dst = malloc(len);
    WP_CHECK(src && dst);
    if (!src || !dst) {
        free(src);
        free(dst);
        return;
    }
    for (size_t i = 0; i < len; i++)
        src[i] = (uint8_t)(i * 131 + (i >> 9));
    size_t sent = 0, got = 0;
    int limits = 0, last = 0;
    for (int guard = 0; guard < 100000 && got < len; guard++) {
        if (sent < len) {
            size_t n = len - sent < piece ? len - sent : piece;
            int rc = wp_tls_write(a, src + sent, n);
            if (rc == 0) {
                sent += n;
                continue;
            }
            WP_CHECK_EQ(rc, WP_ERR_LIMIT);
            if (rc != WP_ERR_LIMIT)
                break;
            limits++;
        }
        /* drain: ciphertext a -> b, plaintext out of b */
        while (wp_buf_len(wp_tls_out(a)) > 0) {
            xfer(a, b);
            got += drain_read(b, dst + got, len - got, &last);
            WP_CHECK_EQ(last, WP_ERR_NEED_MORE);
        }
    }
    WP_CHECK_EQ(sent, len);
    WP_CHECK_EQ(got, len);
    WP_CHECK(memcmp(src, dst, len) == 0);
    if (len >= (size_t)WP_TLS_OUT_MAX)
        WP_CHECK(limits > 0); /* back-pressure was exercised */
    free(src);
    free(dst);
}

/* ---- tests ---- */

WP_TEST(tls_handshake_policy_and_data)
{
    wp_tls_conf *cc;
    wp_tls *c, *s;
    make_pair(&cc, &c, &s);
    if (!c || !s)
        goto out;
    /* TLS 1.2 with an ECDHE AEAD suite (mbedTLS 2.28), or TLS 1.3 (OpenSSL: AEAD suites only,
     * always (EC)DHE) */
    const char *ver = wp_tls_version(c);
    WP_CHECK(strcmp(ver, "TLSv1.2") == 0 || strcmp(ver, "TLSv1.3") == 0);
    WP_CHECK_STR(wp_tls_version(s), ver);
    const char *suite = wp_tls_ciphersuite(c);
    if (strcmp(ver, "TLSv1.2") == 0)
        WP_CHECK(strstr(suite, "ECDHE") != NULL);
    else
        WP_CHECK(strncmp(suite, "TLS_", 4) == 0);
    WP_CHECK(strstr(suite, "GCM") != NULL || strstr(suite, "CHACHA") != NULL);
    WP_CHECK_STR(suite, wp_tls_ciphersuite(s));
    WP_CHECK_STR(wp_tls_last_error(c), "");

    /* small messages both ways */
    uint8_t buf[64];
    int last;
    WP_CHECK_EQ(wp_tls_write(c, (const uint8_t *)"ping", 4), 0);
    WP_CHECK_EQ(wp_tls_read(s, buf, sizeof(buf)), WP_ERR_NEED_MORE); /* nothing fed yet */
    xfer(c, s);
    WP_CHECK_EQ(drain_read(s, buf, sizeof(buf), &last), 4);
    WP_CHECK_EQ(last, WP_ERR_NEED_MORE);
    WP_CHECK(memcmp(buf, "ping", 4) == 0);
    WP_CHECK_EQ(wp_tls_write(s, (const uint8_t *)"pong!", 5), 0);
    WP_CHECK_EQ(wp_tls_write(c, (const uint8_t *)"", 0), 0);
    xfer(s, c);
    WP_CHECK_EQ(drain_read(c, buf, sizeof(buf), &last), 5);
    WP_CHECK(memcmp(buf, "pong!", 5) == 0);
    /* read with a tiny buffer: the rest stays buffered inside mbedTLS */
    WP_CHECK_EQ(wp_tls_write(c, (const uint8_t *)"abcdef", 6), 0);
    xfer(c, s);
    WP_CHECK_EQ(wp_tls_read(s, buf, 2), 2);
    WP_CHECK_EQ(wp_tls_read(s, buf + 2, 10), 4);
    WP_CHECK(memcmp(buf, "abcdef", 6) == 0);
    WP_CHECK_EQ(wp_tls_read(s, buf, 0), WP_ERR_INVAL);

    /* 1 MB each way; pieces smaller and larger than a TLS record */
    bulk(c, s, 1024 * 1024, 10000);
    bulk(s, c, 1024 * 1024, 60000);
    /* a write that could never fit is refused outright */
    static uint8_t huge[WP_TLS_OUT_MAX + 1];
    WP_CHECK_EQ(wp_tls_write(c, huge, sizeof(huge)), WP_ERR_INVAL);
out:
    wp_tls_free(c);
    wp_tls_free(s);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_pin_leaf_ca_and_wrong)
{
    uint8_t pin[WP_SHA256_LEN];
    char why[256];
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.server_crt, pin), 0);
    wp_tls_conf *cc = client_conf(NULL, pin, 0);
    /* the pin is the trust anchor: no hostname needed, a wrong one is ignored */
    WP_CHECK_EQ(try_handshake(cc, NULL, why, sizeof(why)), 0);
    WP_CHECK_EQ(try_handshake(cc, "example.com", why, sizeof(why)), 0);
    wp_tls_conf_unref(cc);

    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.ca_crt, pin), 0);
    cc = client_conf(NULL, pin, 0);
    WP_CHECK_EQ(try_handshake(cc, "localhost", why, sizeof(why)), 0);
    wp_tls_conf_unref(cc);

    /* the other CA's pin and the other server's pin must not match */
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p2.ca_crt, pin), 0);
    cc = client_conf(NULL, pin, 0);
    WP_CHECK_EQ(try_handshake(cc, "localhost", why, sizeof(why)), WP_ERR_VERIFY);
    WP_CHECK_STR(why, "certificate pin mismatch");
    wp_tls_conf_unref(cc);

    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.server_crt, pin), 0);
    pin[31] ^= 1;
    cc = client_conf(NULL, pin, 0);
    WP_CHECK_EQ(try_handshake(cc, "localhost", why, sizeof(why)), WP_ERR_VERIFY);
    WP_CHECK_STR(why, "certificate pin mismatch");
    wp_tls_conf_unref(cc);
}

/* Reads a whole small file into a malloc'd NUL-terminated string. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

/*
 * An attacker who knows the (public) pinned CA certificate presents their own
 * leaf followed by a copy of that CA. The pin must not match: the leaf does not
 * chain to the pinned CA.
 */
WP_TEST(tls_pin_forged_chain_rejected)
{
    char chain_path[128], *leaf2 = slurp(g_p2.server_crt), *ca1 = slurp(g_p.ca_crt);
    WP_CHECK(leaf2 && ca1);
    if (!leaf2 || !ca1) {
        free(leaf2);
        free(ca1);
        return;
    }
    char *end = strstr(leaf2, "-----END CERTIFICATE-----");
    WP_CHECK(end != NULL);
    if (end)
        end[strlen("-----END CERTIFICATE-----")] = '\0';
    snprintf(chain_path, sizeof(chain_path), "%s/forged.crt", g_dir2);
    FILE *f = fopen(chain_path, "w");
    WP_CHECK(f != NULL);
    if (f) {
        fprintf(f, "%s\n%s", leaf2, ca1);
        fclose(f);
    }
    free(leaf2);
    free(ca1);

    wp_tls_conf *forged = NULL;
    char err[256];
    WP_CHECK_EQ(wp_tls_conf_server_new(&forged, chain_path, g_p2.server_key, err, sizeof(err)), 0);
    uint8_t pin[WP_SHA256_LEN];
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.ca_crt, pin), 0);
    wp_tls_conf *cc = client_conf(NULL, pin, 0);
    if (forged && cc) {
        wp_tls *c = NULL, *s = NULL;
        WP_CHECK_EQ(wp_tls_new(&c, cc, "localhost"), 0);
        WP_CHECK_EQ(wp_tls_new(&s, forged, NULL), 0);
        int crc = 0, src = 0;
        if (c && s)
            pump_handshake(c, s, &crc, &src);
        WP_CHECK_EQ(crc, WP_ERR_VERIFY);
        WP_CHECK_STR(wp_tls_last_error(c), "certificate pin mismatch");
        wp_tls_free(c);
        wp_tls_free(s);
    }
    wp_tls_conf_unref(cc);
    wp_tls_conf_unref(forged);
    unlink(chain_path);
}

WP_TEST(tls_verify_failure_is_sticky)
{
    uint8_t pin[WP_SHA256_LEN];
    memset(pin, 0xab, sizeof(pin));
    wp_tls_conf *cc = client_conf(NULL, pin, 0);
    wp_tls *c = NULL, *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&c, cc, "localhost"), 0);
    WP_CHECK_EQ(wp_tls_new(&s, g_server, NULL), 0);
    if (c && s) {
        int crc, src;
        pump_handshake(c, s, &crc, &src);
        WP_CHECK_EQ(crc, WP_ERR_VERIFY);
        WP_CHECK(src != 0); /* the server never completes with a rejecting client */
        WP_CHECK_EQ(wp_tls_handshake(c), WP_ERR_VERIFY);
        uint8_t b[8];
        WP_CHECK(wp_tls_write(c, b, sizeof(b)) < 0);
        WP_CHECK(wp_tls_read(c, b, sizeof(b)) < 0);
        WP_CHECK_STR(wp_tls_version(c), "");
    }
    wp_tls_free(c);
    wp_tls_free(s);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_ca_file_and_hostname)
{
    char why[256];
    wp_tls_conf *cc = client_conf(g_p.ca_crt, NULL, 0);
    WP_CHECK_EQ(try_handshake(cc, "localhost", why, sizeof(why)), 0);
    WP_CHECK_EQ(try_handshake(cc, "LOCALHOST", why, sizeof(why)), 0);
    WP_CHECK_EQ(try_handshake(cc, "example.com", why, sizeof(why)), WP_ERR_VERIFY);
    WP_CHECK(strncmp(why, "name mismatch", 13) == 0); /* PROTOCOL.md §2.1's words first */
    WP_CHECK(strchr(why, '\n') == NULL);
    /* IP SANs (checked by tls.c on mbedTLS < 3.6) */
    WP_CHECK_EQ(try_handshake(cc, "127.0.0.1", why, sizeof(why)), 0);
    WP_CHECK_EQ(try_handshake(cc, "::1", why, sizeof(why)), 0);
    WP_CHECK_EQ(try_handshake(cc, "127.0.0.2", why, sizeof(why)), WP_ERR_VERIFY);
    WP_CHECK_EQ(try_handshake(cc, "::2", why, sizeof(why)), WP_ERR_VERIFY);
    /* a verifying client without a pin needs a name */
    wp_tls *t = NULL;
    WP_CHECK_EQ(wp_tls_new(&t, cc, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_tls_new(&t, cc, ""), WP_ERR_INVAL);
    WP_CHECK(t == NULL);
    wp_tls_conf_unref(cc);

    /* a different CA does not vouch for this server */
    cc = client_conf(g_p2.ca_crt, NULL, 0);
    WP_CHECK_EQ(try_handshake(cc, "localhost", why, sizeof(why)), WP_ERR_VERIFY);
    WP_CHECK(strncmp(why, "unknown CA", 10) == 0);
    wp_tls_conf_unref(cc);

    /* insecure: anything goes */
    cc = client_conf(g_p2.ca_crt, NULL, 1);
    WP_CHECK_EQ(try_handshake(cc, "example.com", why, sizeof(why)), 0);
    WP_CHECK_EQ(try_handshake(cc, NULL, why, sizeof(why)), 0);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_system_bundle_rejects_self_signed)
{
    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) != 0) {
        printf("  note: no system CA bundle, skipping\n");
        return;
    }
    char why[256];
    wp_tls_conf *cc = client_conf(NULL, NULL, 0);
    WP_CHECK_EQ(try_handshake(cc, "localhost", why, sizeof(why)), WP_ERR_VERIFY);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_pin_matches_openssl)
{
    uint8_t pin[WP_SHA256_LEN];
    char mine[80];
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.server_crt, pin), 0);
    wp_tls_pin_format(pin, mine, sizeof(mine));
    WP_CHECK_EQ(strlen(mine), 7 + 64);
    if (!g_have_openssl) {
        printf("  note: openssl not found, skipping the cross-check\n");
        return;
    }
    char cmd[4400], line[256] = "";
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin -outform der | "
             "sha256sum",
             g_p.server_crt);
    FILE *f = popen(cmd, "r");
    WP_CHECK(f != NULL);
    if (!f)
        return;
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    WP_CHECK_EQ(pclose(f), 0);
    WP_CHECK(strlen(line) >= 64);
    line[64] = '\0';
    WP_CHECK_STR(mine + 7, line);
}

WP_TEST(tls_pin_parse_format)
{
    uint8_t pin[WP_SHA256_LEN], back[WP_SHA256_LEN];
    char s[80];
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    char in[128];
    snprintf(in, sizeof(in), "sha256:%s", hex);
    WP_CHECK_EQ(wp_tls_pin_parse(in, pin), 0);
    WP_CHECK_EQ(pin[0], 0x00);
    WP_CHECK_EQ(pin[9], 0x99);
    WP_CHECK_EQ(pin[31], 0xff);
    wp_tls_pin_format(pin, s, sizeof(s));
    WP_CHECK_STR(s, "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    WP_CHECK_EQ(wp_tls_pin_parse(s, back), 0);
    WP_CHECK(memcmp(pin, back, sizeof(pin)) == 0);
    snprintf(in, sizeof(in), "SHA256:%s", hex);
    WP_CHECK_EQ(wp_tls_pin_parse(in, back), 0);

    memset(back, 0x5a, sizeof(back));
    WP_CHECK_EQ(wp_tls_pin_parse(hex, back), WP_ERR_INVAL);       /* no prefix */
    WP_CHECK_EQ(wp_tls_pin_parse("sha256:", back), WP_ERR_INVAL); /* empty */
    WP_CHECK_EQ(wp_tls_pin_parse("sha1:00", back), WP_ERR_INVAL); /* wrong algo */
    WP_CHECK_EQ(wp_tls_pin_parse(NULL, back), WP_ERR_INVAL);
    snprintf(in, sizeof(in), "sha256:%.63s", hex); /* truncated */
    WP_CHECK_EQ(wp_tls_pin_parse(in, back), WP_ERR_INVAL);
    snprintf(in, sizeof(in), "sha256:%s0", hex); /* trailing garbage */
    WP_CHECK_EQ(wp_tls_pin_parse(in, back), WP_ERR_INVAL);
    snprintf(in, sizeof(in), "sha256:%s ", hex);
    WP_CHECK_EQ(wp_tls_pin_parse(in, back), WP_ERR_INVAL);
    snprintf(in, sizeof(in), "sha256:%.62sg0", hex); /* non-hex */
    WP_CHECK_EQ(wp_tls_pin_parse(in, back), WP_ERR_INVAL);
    snprintf(in, sizeof(in), " sha256:%s", hex);
    WP_CHECK_EQ(wp_tls_pin_parse(in, back), WP_ERR_INVAL);
    for (size_t i = 0; i < sizeof(back); i++) /* failures leave pin untouched */
        WP_CHECK_EQ(back[i], 0x5a);
    /* small output buffers are truncated, never overrun */
    char small[10];
    wp_tls_pin_format(pin, small, sizeof(small));
    WP_CHECK_STR(small, "sha256:00");

    WP_CHECK_EQ(wp_tls_pin_from_cert_file("/nonexistent/x.crt", pin), WP_ERR_IO);
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.server_key, pin), WP_ERR_TLS); /* not a cert */
}

WP_TEST(tls_close_notify)
{
    wp_tls_conf *cc;
    wp_tls *c, *s;
    make_pair(&cc, &c, &s);
    if (c && s) {
        uint8_t b[16];
        int last;
        WP_CHECK_EQ(wp_tls_write(c, (const uint8_t *)"bye", 3), 0);
        WP_CHECK_EQ(wp_tls_close_notify(c), 0);
        xfer(c, s);
        WP_CHECK_EQ(drain_read(s, b, sizeof(b), &last), 3); /* data before the alert */
        WP_CHECK_EQ(last, WP_ERR_CLOSED);
        WP_CHECK_EQ(wp_tls_read(s, b, sizeof(b)), WP_ERR_CLOSED); /* stays closed */
        /* the server may still answer with its own close_notify */
        WP_CHECK_EQ(wp_tls_close_notify(s), 0);
        xfer(s, c);
        WP_CHECK_EQ(wp_tls_read(c, b, sizeof(b)), WP_ERR_CLOSED);
    }
    wp_tls_free(c);
    wp_tls_free(s);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_hostile_input)
{
    /* plaintext HTTP to a TLS server */
    wp_tls *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&s, g_server, NULL), 0);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    WP_CHECK_EQ(wp_tls_feed(s, (const uint8_t *)http, strlen(http)), 0);
    WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_TLS);
    WP_CHECK(strlen(wp_tls_last_error(s)) > 0);
    WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_TLS); /* sticky */
    wp_tls_free(s);

    /* a record header announcing a huge record */
    s = NULL;
    WP_CHECK_EQ(wp_tls_new(&s, g_server, NULL), 0);
    static const uint8_t rec[] = {0x16, 0x03, 0x03, 0xff, 0xff, 0x01, 0x00};
    WP_CHECK_EQ(wp_tls_feed(s, rec, sizeof(rec)), 0);
    WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_TLS);
    wp_tls_free(s);

    /* random bytes to a client that is waiting for ServerHello */
    uint8_t pin[WP_SHA256_LEN] = {0};
    wp_tls_conf *cc = client_conf(NULL, pin, 0);
    wp_tls *c = NULL;
    WP_CHECK_EQ(wp_tls_new(&c, cc, "localhost"), 0);
    if (c) {
        WP_CHECK_EQ(wp_tls_handshake(c), WP_ERR_NEED_MORE);
        WP_CHECK(wp_buf_len(wp_tls_out(c)) > 0); /* ClientHello queued */
        uint8_t junk[3000];
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (uint8_t)(i * 7919 >> 3);
        junk[0] = 0x16, junk[1] = 0x03, junk[2] = 0x03, junk[3] = 0x0b, junk[4] = 0xb0;
        WP_CHECK_EQ(wp_tls_feed(c, junk, sizeof(junk)), 0);
        WP_CHECK_EQ(wp_tls_handshake(c), WP_ERR_TLS);
    }
    wp_tls_free(c);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_truncated_handshake)
{
    uint8_t pin[WP_SHA256_LEN];
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(g_p.server_crt, pin), 0);
    wp_tls_conf *cc = client_conf(NULL, pin, 0);
    wp_tls *c = NULL, *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&c, cc, "localhost"), 0);
    WP_CHECK_EQ(wp_tls_new(&s, g_server, NULL), 0);
    if (c && s) {
        WP_CHECK_EQ(wp_tls_handshake(c), WP_ERR_NEED_MORE);
        wp_buf *o = wp_tls_out(c);
        size_t hello = wp_buf_len(o);
        WP_CHECK(hello > 10);
        /* half the ClientHello, byte by byte at the end: still just "need more" */
        WP_CHECK_EQ(wp_tls_feed(s, wp_buf_ptr(o), hello / 2), 0);
        WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_NEED_MORE);
        WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_NEED_MORE);
        WP_CHECK_EQ(wp_buf_len(wp_tls_out(s)), 0); /* nothing answered yet */
        for (size_t i = hello / 2; i < hello - 1; i++) {
            WP_CHECK_EQ(wp_tls_feed(s, wp_buf_ptr(o) + i, 1), 0);
            WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_NEED_MORE);
        }
        WP_CHECK_EQ(wp_buf_len(wp_tls_out(s)), 0);
        WP_CHECK_EQ(wp_tls_feed(s, wp_buf_ptr(o) + hello - 1, 1), 0);
        wp_buf_consume(o, hello);
        WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_NEED_MORE);
        WP_CHECK(wp_buf_len(wp_tls_out(s)) > 0); /* ServerHello .. ServerHelloDone */
        int crc, src;
        pump_handshake(c, s, &crc, &src);
        WP_CHECK_EQ(crc, 0);
        WP_CHECK_EQ(src, 0);
    }
    wp_tls_free(c);
    wp_tls_free(s);
    wp_tls_conf_unref(cc);
}

WP_TEST(tls_limits_and_state)
{
    wp_tls *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&s, g_server, NULL), 0);
    if (!s)
        return;
    uint8_t *big = calloc(1, WP_TLS_IN_MAX + 1);
    WP_CHECK(big != NULL);
    if (big) {
        WP_CHECK_EQ(wp_tls_feed(s, big, WP_TLS_IN_MAX + 1), WP_ERR_LIMIT);
        WP_CHECK_EQ(wp_tls_feed(s, big, WP_TLS_IN_MAX - 10), 0);
        WP_CHECK_EQ(wp_tls_feed(s, big, 11), WP_ERR_LIMIT);
        WP_CHECK_EQ(wp_tls_feed(s, big, 10), 0);
        WP_CHECK_EQ(wp_tls_feed(s, big, 1), WP_ERR_LIMIT);
        WP_CHECK_EQ(wp_tls_feed(s, big, 0), 0);
    }
    free(big);
    /* not handshaken yet */
    uint8_t b[4] = {1, 2, 3, 4};
    WP_CHECK_EQ(wp_tls_write(s, b, sizeof(b)), WP_ERR_STATE);
    WP_CHECK_EQ(wp_tls_read(s, b, sizeof(b)), WP_ERR_STATE);
    WP_CHECK_STR(wp_tls_version(s), "");
    WP_CHECK_STR(wp_tls_ciphersuite(s), "");
    WP_CHECK_EQ(wp_tls_handshake_done(s), 0);
    /* all-zero input is not TLS */
    WP_CHECK_EQ(wp_tls_handshake(s), WP_ERR_TLS);
    wp_tls_free(s);
    wp_tls_free(NULL);
    wp_tls_conf_unref(NULL);
    WP_CHECK_EQ(wp_tls_new(&s, NULL, NULL), WP_ERR_INVAL);
}

WP_TEST(tls_conf_errors)
{
    wp_tls_conf *c = NULL;
    char err[256];
    /* cert of one pair with the key of the other */
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, g_p.server_crt, g_p2.server_key, err, sizeof(err)),
                WP_ERR_TLS);
    WP_CHECK_STR(err, "certificate and key do not match");
    WP_CHECK(c == NULL);
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, "/nonexistent/s.crt", g_p.server_key, err, sizeof(err)),
                WP_ERR_IO);
    WP_CHECK(strstr(err, "/nonexistent/s.crt") != NULL);
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, g_p.server_crt, "/nonexistent/s.key", err, sizeof(err)),
                WP_ERR_IO);
    WP_CHECK(strstr(err, "/nonexistent/s.key") != NULL);
    /* a key where the certificate should be, and vice versa: no key bytes in the message */
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, g_p.server_key, g_p.server_key, err, sizeof(err)),
                WP_ERR_TLS);
    WP_CHECK(strstr(err, "BEGIN") == NULL);
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, g_p.server_crt, g_p.server_crt, err, sizeof(err)),
                WP_ERR_TLS);
    WP_CHECK(strstr(err, "BEGIN") == NULL);
    WP_CHECK(strstr(err, "cannot load private key") != NULL);
    WP_CHECK(c == NULL);
    /* small error buffer: truncated, not overrun */
    char tiny[8];
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, "/nonexistent", "/nonexistent", tiny, sizeof(tiny)),
                WP_ERR_IO);
    WP_CHECK_EQ(strlen(tiny), sizeof(tiny) - 1);
    WP_CHECK_EQ(wp_tls_conf_server_new(&c, "/nonexistent", "/nonexistent", NULL, 0), WP_ERR_IO);

    wp_tls_client_opts o = {.ca_file = "/nonexistent/ca.crt"};
    WP_CHECK_EQ(wp_tls_conf_client_new(&c, &o, err, sizeof(err)), WP_ERR_IO);
    WP_CHECK(strstr(err, "/nonexistent/ca.crt") != NULL);
    o.ca_file = g_p.ca_key; /* not a certificate */
    WP_CHECK_EQ(wp_tls_conf_client_new(&c, &o, err, sizeof(err)), WP_ERR_TLS);
    WP_CHECK(c == NULL);
    WP_CHECK_EQ(wp_tls_conf_client_new(&c, NULL, err, sizeof(err)), WP_ERR_INVAL);
}

WP_TEST(tls_rsa_server_key)
{
    if (!g_have_openssl) {
        printf("  note: openssl not found, skipping RSA key test\n");
        return;
    }
    char crt[128], key[128], cmd[512];
    snprintf(crt, sizeof(crt), "%s/rsa.crt", g_dir);
    snprintf(key, sizeof(key), "%s/rsa.key", g_dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 2 "
             "-subj /CN=localhost >/dev/null 2>&1",
             key, crt);
    WP_CHECK_EQ(system(cmd), 0);
    wp_tls_conf *sc = NULL;
    char err[256];
    WP_CHECK_EQ(wp_tls_conf_server_new(&sc, crt, key, err, sizeof(err)), 0);
    if (!sc)
        return;
    uint8_t pin[WP_SHA256_LEN];
    WP_CHECK_EQ(wp_tls_pin_from_cert_file(crt, pin), 0);
    wp_tls_conf *cc = client_conf(NULL, pin, 0);
    wp_tls *c = NULL, *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&c, cc, "localhost"), 0);
    WP_CHECK_EQ(wp_tls_new(&s, sc, NULL), 0);
    if (c && s) {
        int crc, src;
        pump_handshake(c, s, &crc, &src);
        WP_CHECK_EQ(crc, 0);
        WP_CHECK_EQ(src, 0);
        /* TLS 1.3 suite names do not name the key exchange or signature */
        if (strcmp(wp_tls_version(c), "TLSv1.2") == 0)
            WP_CHECK(strstr(wp_tls_ciphersuite(c), "ECDHE-RSA") != NULL);
        else
            WP_CHECK_STR(wp_tls_version(c), "TLSv1.3");
    }
    wp_tls_free(c);
    wp_tls_free(s);
    wp_tls_conf_unref(cc);
    wp_tls_conf_unref(sc);
    /* RSA cert with the EC key: mismatch */
    WP_CHECK_EQ(wp_tls_conf_server_new(&sc, crt, g_p.server_key, err, sizeof(err)), WP_ERR_TLS);
    WP_CHECK_STR(err, "certificate and key do not match");
}

WP_TEST(tls_conf_refcount)
{
    /* fresh confs that only the sessions keep alive */
    wp_tls_conf *sc = NULL, *cc = NULL;
    char err[256];
    WP_CHECK_EQ(wp_tls_conf_server_new(&sc, g_p.server_crt, g_p.server_key, err, sizeof(err)), 0);
    cc = client_conf(g_p.ca_crt, NULL, 0);
    if (!sc || !cc)
        return;
    wp_tls *c = NULL, *s = NULL;
    WP_CHECK_EQ(wp_tls_new(&c, cc, "localhost"), 0);
    WP_CHECK_EQ(wp_tls_new(&s, sc, NULL), 0);
    wp_tls_conf_ref(sc);
    wp_tls_conf_unref(sc); /* ref/unref pair keeps it */
    wp_tls_conf_unref(sc); /* the server session holds the last reference */
    wp_tls_conf_unref(cc);
    if (c && s) {
        int crc, src;
        pump_handshake(c, s, &crc, &src);
        WP_CHECK_EQ(crc, 0);
        WP_CHECK_EQ(src, 0);
        uint8_t b[8];
        WP_CHECK_EQ(wp_tls_write(s, (const uint8_t *)"still", 5), 0);
        xfer(s, c);
        WP_CHECK_EQ(wp_tls_read(c, b, sizeof(b)), 5);
    }
    wp_tls_free(c); /* frees cc (ASan reports a leak or use-after-free otherwise) */
    wp_tls_free(s); /* frees sc */
}

int main(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/wp_tls_XXXXXX");
    snprintf(g_dir2, sizeof(g_dir2), "/tmp/wp_tls_XXXXXX");
    if (!mkdtemp(g_dir) || !mkdtemp(g_dir2)) {
        perror("mkdtemp");
        return 1;
    }
    char err[256];
    int gen = 0;
    int rc = wp_cert_ensure(g_dir, NULL, &g_p, &gen, err, sizeof(err));
    int rc2 = wp_cert_ensure(g_dir2, NULL, &g_p2, &gen, err, sizeof(err));
    if (rc == 0 && rc2 == 0)
        rc = wp_tls_conf_server_new(&g_server, g_p.server_crt, g_p.server_key, err, sizeof(err));
    if (rc != 0 || rc2 != 0) {
        printf("setup failed: %s\n", err);
        rm_rf(g_dir);
        rm_rf(g_dir2);
        return 1;
    }
    g_have_openssl = system("openssl version >/dev/null 2>&1") == 0;

    WP_RUN(tls_handshake_policy_and_data);
    WP_RUN(tls_pin_leaf_ca_and_wrong);
    WP_RUN(tls_pin_forged_chain_rejected);
    WP_RUN(tls_verify_failure_is_sticky);
    WP_RUN(tls_ca_file_and_hostname);
    WP_RUN(tls_system_bundle_rejects_self_signed);
    WP_RUN(tls_pin_matches_openssl);
    WP_RUN(tls_pin_parse_format);
    WP_RUN(tls_close_notify);
    WP_RUN(tls_hostile_input);
    WP_RUN(tls_truncated_handshake);
    WP_RUN(tls_limits_and_state);
    WP_RUN(tls_conf_errors);
    WP_RUN(tls_rsa_server_key);
    WP_RUN(tls_conf_refcount);

    wp_tls_conf_unref(g_server);
    rm_rf(g_dir);
    rm_rf(g_dir2);
    return wp_test_done();
}
