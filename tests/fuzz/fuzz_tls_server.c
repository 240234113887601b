/*
 * fuzz_tls_server.c — fuzz target for a wp_tls server session (common/tls.h).
 *
 * The input is what a hostile client sends first: ClientHello bytes (and
 * whatever follows), fed to a fresh server session in irregular chunks while
 * the handshake is driven with wp_tls_handshake() and, should it ever
 * complete, wp_tls_read(). The certificate is generated once per process with
 * wp_cert_ensure() in a mkdtemp directory that is removed at exit.
 * Invariants checked:
 *   - wp_tls_feed returns 0 or WP_ERR_LIMIT, wp_tls_handshake only its
 *     documented codes, and a failure is sticky (later calls return it);
 *   - the ciphertext the server queues stays within WP_TLS_OUT_MAX and starts
 *     with a whole TLS record (content type 20..23);
 *   - wp_tls_write before the handshake is refused; wp_tls_last_error is a
 *     printable one-line string; nothing leaks (ASan) and wp_tls_free is clean.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "cert.h"
#include "err.h"
#include "fuzz.h"
#include "tls.h"

static wp_tls_conf *conf;
static char dir[64];

static void tls_cleanup(void)
{
    if (conf)
        wp_tls_conf_unref(conf);
    conf = NULL;
    if (!dir[0])
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[sizeof(dir) + 256];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
    dir[0] = '\0';
}

static void tls_setup(void)
{
    if (conf)
        return;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/wpfuzz-tls-XXXXXX",
             tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    WP_FUZZ_CHECK(mkdtemp(dir) != NULL);
    atexit(tls_cleanup);
    wp_cert_paths paths;
    int generated = 0;
    char err[256];
    if (wp_cert_ensure(dir, NULL, &paths, &generated, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_tls_server: wp_cert_ensure: %s\n", err);
        WP_FUZZ_CHECK(!"certificate generation failed");
    }
    if (wp_tls_conf_server_new(&conf, paths.server_crt, paths.server_key, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_tls_server: wp_tls_conf_server_new: %s\n", err);
        WP_FUZZ_CHECK(!"server configuration failed");
    }
}

static void check_last_error(const wp_tls *t)
{
    const char *e = wp_tls_last_error(t);
    WP_FUZZ_CHECK(e != NULL);
    for (; *e; e++)
        WP_FUZZ_CHECK((unsigned char)*e >= 0x20 && (unsigned char)*e < 0x7f);
}

/* Checks and discards what the server queued for the client. */
static void drain_out(wp_tls *t, int *first_seen)
{
    wp_buf *out = wp_tls_out(t);
    size_t n = wp_buf_len(out);
    WP_FUZZ_CHECK(n <= WP_TLS_OUT_MAX);
    if (n && !*first_seen) {
        const uint8_t *p = wp_buf_ptr(out);
        /* a record header; mbedTLS may echo a bogus client record version in an alert */
        WP_FUZZ_CHECK(n >= 5 && p[0] >= 20 && p[0] <= 23);
        WP_FUZZ_CHECK(n >= 5u + ((size_t)p[3] << 8 | p[4])); /* the whole first record */
        *first_seen = 1;
    }
    WP_FUZZ_CHECK(wp_buf_consume(out, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[] = {5, 1, 64, 3, 517, 16, 2, 4096, 7, 300};
    tls_setup();
    wp_tls *t = NULL;
    WP_FUZZ_CHECK(wp_tls_new(&t, conf, NULL) == 0);
    WP_FUZZ_CHECK(!wp_tls_handshake_done(t));
    WP_FUZZ_CHECK(wp_tls_write(t, (const uint8_t *)"x", 1) < 0);
    int first_seen = 0, failed = 0;
    size_t pos = 0, k = size % (sizeof(chunks) / sizeof(chunks[0]));
    uint8_t plain[2048];
    while (pos < size) {
        size_t c = chunks[k++ % (sizeof(chunks) / sizeof(chunks[0]))];
        if (c > size - pos)
            c = size - pos;
        int fr = wp_tls_feed(t, data + pos, c);
        WP_FUZZ_CHECK(fr == 0 || fr == WP_ERR_LIMIT);
        if (fr == 0)
            pos += c;
        int hr = wp_tls_handshake(t);
        WP_FUZZ_CHECK(hr == 0 || hr == WP_ERR_NEED_MORE || hr == WP_ERR_TLS || hr == WP_ERR_VERIFY);
        drain_out(t, &first_seen);
        if (hr == WP_ERR_TLS || hr == WP_ERR_VERIFY) {
            failed = hr;
            break;
        }
        if (hr == 0) {
            WP_FUZZ_CHECK(wp_tls_handshake_done(t));
            for (;;) {
                int rr = wp_tls_read(t, plain, sizeof(plain));
                WP_FUZZ_CHECK(rr == WP_ERR_NEED_MORE || rr == WP_ERR_CLOSED || rr == WP_ERR_TLS ||
                              (rr > 0 && (size_t)rr <= sizeof(plain)));
                drain_out(t, &first_seen);
                if (rr <= 0) {
                    if (rr == WP_ERR_TLS)
                        failed = rr;
                    break;
                }
            }
            if (failed)
                break;
        }
        if (fr == WP_ERR_LIMIT && hr == WP_ERR_NEED_MORE)
            break; /* the session buffers no more and wants more: a client would be dropped */
    }
    if (failed) {
        /* sticky */
        WP_FUZZ_CHECK(wp_tls_handshake(t) == failed);
        WP_FUZZ_CHECK(wp_tls_read(t, plain, sizeof(plain)) == failed);
        WP_FUZZ_CHECK(wp_tls_write(t, (const uint8_t *)"x", 1) == failed);
        WP_FUZZ_CHECK(wp_tls_last_error(t)[0] != '\0');
    }
    check_last_error(t);
    if (!wp_tls_handshake_done(t))
        WP_FUZZ_CHECK(strcmp(wp_tls_version(t), "") == 0 && strcmp(wp_tls_ciphersuite(t), "") == 0);
    wp_tls_free(t);
    return 0;
}
