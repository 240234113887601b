/*
 * tls_openssl.c — the OpenSSL backend of common/tls.h (WP_TLS_BACKEND=openssl, the default):
 * TLS sessions over memory buffers. The backend-neutral checks and error reasons
 * live in tls_common.c (tls_internal.h), the pin helpers in tls_pin.c.
 *
 * A wp_tls never touches a socket. Its SSL reads ciphertext from a memory BIO
 * (BIO_s_mem, fed by wp_tls_feed and bounded by WP_TLS_IN_MAX; empty = retry,
 * never EOF) and writes ciphertext through a small sink BIO straight into the
 * session's bounded out-buffer (always accepted; a full out-buffer is an
 * error, never WANT_WRITE; one copy less than a second memory BIO).
 * wp_tls_write() checks room before encrypting, so in normal use the
 * out-buffer never overflows.
 *
 * A wp_tls_conf owns one SSL_CTX (certificate chain, key, trust store). Its
 * reference count is a plain int: references are taken and dropped on one
 * loop thread only. OpenSSL's error queue is per thread; every call clears it
 * first so SSL_get_error() sees only its own errors.
 *
 * Policy: TLS 1.2 minimum (1.3 allowed); TLS 1.2 suites ECDHE with AES-GCM or
 * ChaCha20-Poly1305 only, TLS 1.3 suites AES-GCM / ChaCha20-Poly1305; AES-GCM
 * first and the server's order wins (AES-NI makes it the fastest here);
 * renegotiation off; no session tickets or cache (nothing resumes).
 *
 * Client verification runs in our certificate verify callback (it replaces
 * X509_verify_cert for the session's SSL_CTX):
 *   - pin: the chain the server presented is checked against the pin exactly
 *     as the mbedTLS backend does (leaf SPKI, or a presented certificate's
 *     SPKI that the leaf verifies up to, with that certificate as the only
 *     trust anchor); the trust store and host name are not consulted;
 *   - ca_file / system bundle: X509_verify_cert with the host name or IP set
 *     on the SSL's verify parameters; every error is collected (not only the
 *     first), so the reason names the most telling one like the mbedTLS
 *     backend: expired, not yet valid, unknown CA, name mismatch;
 *   - insecure_skip_verify: SSL_VERIFY_NONE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "tls.h"
#include "tls_internal.h"

#define WP_TLS_KEYFILE_MAX (64 * 1024)

/* TLS 1.2: ECDHE + AEAD only, AES-GCM first. TLS 1.3 suites are all AEAD with (EC)DHE. */
static const char wp_tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                       "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                       "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char wp_tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

struct wp_tls_conf {
    wp_tls_conf_base b; /* first (tls_internal.h) */
    SSL_CTX *ctx;
};

struct wp_tls {
    wp_tls_base b; /* first (tls_internal.h) */
    SSL *ssl;
    BIO *rbio;         /* ciphertext in (owned by ssl) */
    int verify_failed; /* CA mode: the callback rejected the chain */
    unsigned vflags;   /* WP_TLS_VF_* seen during verification */
    int verrs[3];      /* first distinct X509_V_ERR_* codes seen */
    size_t nverrs;
};

/* ---- helpers ---- */

/* The last queued OpenSSL error as one printable line (no secrets: codes and names only). */
static void wp_tls_ossl_reason(char *out, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        snprintf(out, cap, "unknown TLS error");
    } else {
        char tmp[WP_TLS_ERR_MAX];
        ERR_error_string_n(e, tmp, sizeof(tmp));
        snprintf(out, cap, "%s", tmp);
    }
    for (char *q = out; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
            *q = ' ';
    ERR_clear_error();
}

/* SHA-256 over the DER SubjectPublicKeyInfo of one certificate. 0 or WP_ERR_*. */
static int wp_tls_spki_hash(X509 *crt, uint8_t out[WP_SHA256_LEN])
{
    unsigned char *der = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(crt), &der);
    if (n <= 0)
        return WP_ERR_TLS;
    unsigned int len = 0;
    int ok = EVP_Digest(der, (size_t)n, out, &len, EVP_sha256(), NULL) == 1 && len == WP_SHA256_LEN;
    OPENSSL_free(der);
    return ok ? 0 : WP_ERR_CRYPTO;
}

/*
 * Pin check over a presented chain (leaf, plus the rest as presented). The pin
 * matches when it is the leaf's SPKI hash, or when it is the SPKI hash of a
 * certificate further up the presented chain AND the leaf verifies
 * (signatures, validity dates, CA constraints) up to that certificate used as
 * the only trust anchor. Merely presenting the pinned (public) CA certificate
 * next to an unrelated leaf is not enough. Returns 1 when it matches.
 */
static int wp_tls_pin_check_chain(const wp_tls_conf *c, X509 *leaf, STACK_OF(X509) * chain)
{
    uint8_t h[WP_SHA256_LEN];
    if (wp_tls_spki_hash(leaf, h) == 0 && wp_tls_pin_eq(h, c->b.pin))
        return 1;
    int n = chain ? sk_X509_num(chain) : 0;
    for (int i = 0; i < n; i++) {
        X509 *cur = sk_X509_value(chain, i);
        if (!cur || X509_cmp(cur, leaf) == 0)
            continue;
        if (wp_tls_spki_hash(cur, h) != 0 || !wp_tls_pin_eq(h, c->b.pin))
            continue;
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *vctx = X509_STORE_CTX_new();
        int ok = 0;
        if (store && vctx && X509_STORE_add_cert(store, cur) == 1 &&
            X509_STORE_CTX_init(vctx, store, leaf, chain) == 1) {
            /* the pinned certificate is the anchor even when it is an intermediate */
            X509_STORE_CTX_set_flags(vctx, X509_V_FLAG_PARTIAL_CHAIN);
            ok = X509_verify_cert(vctx) == 1;
        }
        X509_STORE_CTX_free(vctx);
        X509_STORE_free(store);
        if (ok)
            return 1;
    }
    return 0;
}

static wp_tls *wp_tls_from_store_ctx(X509_STORE_CTX *xctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    return ssl ? SSL_get_app_data(ssl) : NULL;
}

/* Per-certificate callback in CA mode: records every error and lets verification go on. */
static int wp_tls_collect_cb(int ok, X509_STORE_CTX *xctx)
{
    if (ok)
        return 1;
    wp_tls *t = wp_tls_from_store_ctx(xctx);
    if (!t)
        return 0;
    int e = X509_STORE_CTX_get_error(xctx);
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        t->vflags |= WP_TLS_VF_EXPIRED;
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        t->vflags |= WP_TLS_VF_FUTURE;
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
        t->vflags |= WP_TLS_VF_UNTRUSTED;
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        t->vflags |= WP_TLS_VF_NAME;
        break;
    default:
        t->vflags |= WP_TLS_VF_OTHER;
        break;
    }
    size_t i = 0;
    while (i < t->nverrs && t->verrs[i] != e)
        i++;
    if (i == t->nverrs && t->nverrs < sizeof(t->verrs) / sizeof(t->verrs[0]))
        t->verrs[t->nverrs++] = e;
    return 1;
}

/* Certificate verify callback (replaces X509_verify_cert): pin or CA verification. */
static int wp_tls_verify_cb(X509_STORE_CTX *xctx, void *arg)
{
    (void)arg;
    wp_tls *t = wp_tls_from_store_ctx(xctx);
    X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
    if (!t || !leaf) {
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_UNSPECIFIED);
        return 0;
    }
    if (t->b.conf->b.has_pin) {
        if (wp_tls_pin_check_chain(t->b.conf, leaf, X509_STORE_CTX_get0_untrusted(xctx))) {
            t->b.pin_matched = 1;
            X509_STORE_CTX_set_error(xctx, X509_V_OK);
            return 1;
        }
        t->b.pin_mismatch = 1;
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    t->vflags = 0;
    t->nverrs = 0;
    X509_STORE_CTX_set_verify_cb(xctx, wp_tls_collect_cb);
    int rc = X509_verify_cert(xctx);
    if (rc == 1 && t->vflags == 0)
        return 1;
    if (t->nverrs == 0) {
        int e = X509_STORE_CTX_get_error(xctx);
        t->verrs[t->nverrs++] = e != X509_V_OK ? e : X509_V_ERR_UNSPECIFIED;
        t->vflags |= WP_TLS_VF_OTHER;
    }
    t->verify_failed = 1;
    X509_STORE_CTX_set_error(xctx, t->verrs[0]);
    return 0;
}

/* ---- the sink BIO: ciphertext out, straight into the session's out-buffer ---- */

static int wp_tls_bio_write(BIO *b, const char *p, int n)
{
    wp_tls *t = BIO_get_data(b);
    if (n <= 0)
        return 0;
    if (wp_buf_put(&t->b.out, p, (size_t)n) != 0) {
        t->b.out_overflow = 1;
        return -1; /* never a retry: the caller checked room first */
    }
    return n;
}

static long wp_tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static int wp_tls_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *wp_tls_sink_method;

static void wp_tls_sink_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wolfpack tls out");
    if (!m)
        return;
    if (BIO_meth_set_write(m, wp_tls_bio_write) != 1 ||
        BIO_meth_set_ctrl(m, wp_tls_bio_ctrl) != 1 ||
        BIO_meth_set_create(m, wp_tls_bio_create) != 1) {
        BIO_meth_free(m);
        return;
    }
    wp_tls_sink_method = m;
}

static BIO_METHOD *wp_tls_sink(void)
{
    static CRYPTO_ONCE once = CRYPTO_ONCE_STATIC_INIT;
    if (!CRYPTO_THREAD_run_once(&once, wp_tls_sink_init))
        return NULL;
    return wp_tls_sink_method;
}

/* Records a fatal error on the session and returns the sticky WP_ERR_*. */
static int wp_tls_fail(wp_tls *t)
{
    int rc = wp_tls_fail_known(&t->b);
    if (!rc && t->verify_failed) {
        char info[WP_TLS_ERR_MAX] = "";
        size_t used = 0;
        for (size_t i = 0; i < t->nverrs && used < sizeof(info); i++) {
            int k = snprintf(info + used, sizeof(info) - used, "%s%s", i ? "; " : "",
                             X509_verify_cert_error_string(t->verrs[i]));
            if (k < 0)
                break;
            used += (size_t)k;
        }
        rc = wp_tls_fail_verify(&t->b, t->vflags, info);
    }
    if (rc) {
        ERR_clear_error();
        return rc;
    }
    wp_tls_ossl_reason(t->b.last_error, sizeof(t->b.last_error));
    t->b.failed = WP_ERR_TLS;
    return t->b.failed;
}

/* ---- conf ---- */

static wp_tls_conf *wp_tls_conf_alloc(int is_server, char *err, size_t cap, int *rc)
{
    ERR_clear_error();
    wp_tls_conf *c = calloc(1, sizeof(*c));
    if (!c) {
        *rc = WP_ERR_NOMEM;
        wp_tls_errf(err, cap, "out of memory", NULL);
        return NULL;
    }
    c->b.refs = 1;
    c->b.is_server = is_server;
    c->ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (!c->ctx || !wp_tls_sink()) {
        char why[WP_TLS_ERR_MAX];
        wp_tls_ossl_reason(why, sizeof(why));
        wp_tls_errf(err, cap, "TLS context setup failed", why);
        *rc = WP_ERR_TLS;
        goto fail;
    }
    /* Policy: TLS 1.2 minimum, ECDHE + AEAD suites only, no renegotiation. */
    if (SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(c->ctx, wp_tls12_ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(c->ctx, wp_tls13_suites) != 1) {
        char why[WP_TLS_ERR_MAX];
        wp_tls_ossl_reason(why, sizeof(why));
        wp_tls_errf(err, cap, "OpenSSL offers none of the allowed ECDHE AEAD cipher suites", why);
        *rc = WP_ERR_TLS;
        goto fail;
    }
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
    /*
     * Clients never resume (no session cache; the agent verifies every handshake). A server
     * sends one stateless TLS 1.3 ticket: besides letting clients resume, it gives the server
     * something to send right after the client's Finished, so a client that has Nagle on
     * (Python's http.client, many scripts) is not held ~40 ms by our delayed ACK before its
     * first request goes out.
     */
    if (!is_server)
        SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c->ctx, is_server ? 1 : 0);
    /* Pull whole buffered records from the memory BIO at once, not header then body. */
    SSL_CTX_set_read_ahead(c->ctx, 1);
    return c;

fail:
    wp_tls_conf_unref(c);
    return NULL;
}

/* 0 when path opens for reading, else WP_ERR_IO with err = "<what> <path>: <errno text>". */
static int wp_tls_check_readable(const char *path, const char *what, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        wp_tls_errf_file(err, cap, what, path, strerror(errno));
        return WP_ERR_IO;
    }
    fclose(f);
    return 0;
}

/* Refuses to prompt for a passphrase (an encrypted key is an error). */
static int wp_tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/*
 * Reads a PEM private key file through our own buffer, which is cleansed
 * afterwards (key material). Returns the key or NULL with *rc and why set.
 */
static EVP_PKEY *wp_tls_read_key(const char *path, int *rc, char *why, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = WP_ERR_IO;
        snprintf(why, cap, "%s", strerror(errno));
        return NULL;
    }
    char *buf = malloc(WP_TLS_KEYFILE_MAX);
    size_t n = buf ? fread(buf, 1, WP_TLS_KEYFILE_MAX, f) : 0;
    int rerr = ferror(f);
    fclose(f);
    if (!buf) {
        *rc = WP_ERR_NOMEM;
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    EVP_PKEY *key = NULL;
    if (rerr) {
        *rc = WP_ERR_IO;
        snprintf(why, cap, "read error");
    } else if (n == WP_TLS_KEYFILE_MAX) {
        *rc = WP_ERR_TLS;
        snprintf(why, cap, "file too large for a key");
    } else {
        BIO *b = BIO_new_mem_buf(buf, (int)n);
        key = b ? PEM_read_bio_PrivateKey(b, NULL, wp_tls_no_passphrase, NULL) : NULL;
        BIO_free(b);
        if (!key) {
            *rc = WP_ERR_TLS;
            wp_tls_ossl_reason(why, cap); /* codes and names only, never key bytes */
        }
    }
    OPENSSL_cleanse(buf, WP_TLS_KEYFILE_MAX);
    free(buf);
    return key;
}

int wp_tls_conf_server_new(wp_tls_conf **out, const char *cert_file, const char *key_file,
                           char *err, size_t cap)
{
    int rc =
        wp_tls_conf_args(out && cert_file && key_file, "missing certificate or key file", err, cap);
    if (rc)
        return rc;
    wp_tls_conf *c = wp_tls_conf_alloc(1, err, cap, &rc);
    if (!c)
        return rc;
    char why[WP_TLS_ERR_MAX];
    EVP_PKEY *key = NULL;

    rc = wp_tls_check_readable(cert_file, "cannot load certificate", err, cap);
    if (rc)
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(c->ctx, cert_file) != 1) {
        rc = WP_ERR_TLS;
        wp_tls_ossl_reason(why, sizeof(why));
        wp_tls_errf_file(err, cap, "cannot load certificate", cert_file, why);
        goto fail;
    }
    key = wp_tls_read_key(key_file, &rc, why, sizeof(why));
    if (!key) {
        wp_tls_errf_file(err, cap, "cannot load private key", key_file, why);
        goto fail;
    }
    X509 *leaf = SSL_CTX_get0_certificate(c->ctx);
    if (!leaf || X509_check_private_key(leaf, key) != 1) {
        rc = WP_ERR_TLS;
        ERR_clear_error();
        wp_tls_errf(err, cap, "certificate and key do not match", NULL);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey(c->ctx, key) != 1 || SSL_CTX_check_private_key(c->ctx) != 1) {
        rc = WP_ERR_TLS;
        wp_tls_ossl_reason(why, sizeof(why));
        wp_tls_errf(err, cap, "cannot use certificate", why);
        goto fail;
    }
    EVP_PKEY_free(key);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    *out = c;
    return 0;

fail:
    EVP_PKEY_free(key);
    wp_tls_conf_unref(c);
    return rc;
}

int wp_tls_conf_client_new(wp_tls_conf **out, const wp_tls_client_opts *opts, char *err, size_t cap)
{
    int rc = wp_tls_conf_args(out && opts, "missing client options", err, cap);
    if (rc)
        return rc;
    wp_tls_conf *c = wp_tls_conf_alloc(0, err, cap, &rc);
    if (!c)
        return rc;
    char why[WP_TLS_ERR_MAX];

    int mode = wp_tls_conf_base_client(&c->b, opts);
    if (mode == WP_TLS_VERIFY_INSECURE) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    } else if (mode == WP_TLS_VERIFY_PIN) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_cert_verify_callback(c->ctx, wp_tls_verify_cb, NULL);
    } else {
        if (opts->ca_file) {
            rc = wp_tls_check_readable(opts->ca_file, "cannot load CA file", err, cap);
            if (rc)
                goto fail;
            if (SSL_CTX_load_verify_locations(c->ctx, opts->ca_file, NULL) != 1) {
                rc = WP_ERR_TLS;
                wp_tls_ossl_reason(why, sizeof(why));
                wp_tls_errf_file(err, cap, "cannot load CA file", opts->ca_file, why);
                goto fail;
            }
        } else {
            /* System bundle: the first one that loads. */
            int loaded = 0;
            for (size_t i = 0; !loaded && i < wp_tls_system_bundle_count; i++)
                loaded = SSL_CTX_load_verify_locations(c->ctx, wp_tls_system_bundles[i], NULL) == 1;
            ERR_clear_error();
            if (!loaded) {
                rc = WP_ERR_IO;
                wp_tls_errf(err, cap, "no usable system CA bundle found", wp_tls_system_bundles[0]);
                goto fail;
            }
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_cert_verify_callback(c->ctx, wp_tls_verify_cb, NULL);
    }
    *out = c;
    return 0;

fail:
    wp_tls_conf_unref(c);
    return rc;
}

void wp_tls_conf_unref(wp_tls_conf *c)
{
    if (!c || --c->b.refs > 0)
        return;
    SSL_CTX_free(c->ctx); /* frees the key (OpenSSL clears private key material) */
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

/* ---- sessions ---- */

int wp_tls_new(wp_tls **out, wp_tls_conf *conf, const char *server_name)
{
    if (!out || !conf || wp_tls_new_check(conf, server_name) != 0)
        return WP_ERR_INVAL;
    ERR_clear_error();
    wp_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return WP_ERR_NOMEM;
    wp_tls_base_init(&t->b, conf);
    int rc = WP_ERR_NOMEM;
    t->ssl = SSL_new(conf->ctx);
    t->rbio = BIO_new(BIO_s_mem());
    BIO *wbio = wp_tls_sink() ? BIO_new(wp_tls_sink()) : NULL;
    if (!t->ssl || !t->rbio || !wbio) {
        BIO_free(t->rbio);
        BIO_free(wbio);
        t->rbio = NULL;
        goto fail;
    }
    BIO_set_mem_eof_return(t->rbio, -1); /* empty = "retry", not EOF */
    BIO_set_data(wbio, t);
    SSL_set_bio(t->ssl, t->rbio, wbio); /* the SSL owns both BIOs now */
    SSL_set_app_data(t->ssl, t);
    rc = WP_ERR_TLS;
    if (conf->b.is_server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (server_name) {
            uint8_t ip[16];
            int is_ip = inet_pton(AF_INET, server_name, ip) == 1 ||
                        inet_pton(AF_INET6, server_name, ip) == 1;
            /* No SNI for IP literals (RFC 6066). */
            if (!is_ip && SSL_set_tlsext_host_name(t->ssl, server_name) != 1)
                goto fail;
            if (!conf->b.insecure && !conf->b.has_pin) {
                X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
                if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, server_name) != 1
                          : SSL_set1_host(t->ssl, server_name) != 1)
                    goto fail;
            }
        }
    }
    *out = t;
    return 0;

fail:
    ERR_clear_error();
    wp_tls_free(t);
    return rc;
}

void wp_tls_free(wp_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs; OpenSSL cleanses its key material */
    wp_buf_free(&t->b.out);
    wp_tls_conf_unref(t->b.conf);
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}

int wp_tls_feed(wp_tls *t, const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0;
    size_t have = BIO_ctrl_pending(t->rbio);
    if (len > WP_TLS_IN_MAX || have > WP_TLS_IN_MAX - len)
        return WP_ERR_LIMIT;
    if (BIO_write(t->rbio, data, (int)len) != (int)len)
        return WP_ERR_NOMEM;
    return 0;
}

int wp_tls_handshake(wp_tls *t)
{
    if (t->b.failed)
        return t->b.failed;
    if (t->b.hs_done)
        return 0;
    ERR_clear_error();
    int ret = SSL_do_handshake(t->ssl);
    if (ret != 1) {
        int e = SSL_get_error(t->ssl, ret);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && !t->b.out_overflow)
            return WP_ERR_NEED_MORE;
        return wp_tls_fail(t);
    }
    if (t->b.conf->b.has_pin && !t->b.pin_matched) {
        /* Belt and braces: the callback did not run or did not match. */
        t->b.pin_mismatch = 1;
        return wp_tls_fail(t);
    }
    t->b.hs_done = 1;
    return 0;
}

int wp_tls_read(wp_tls *t, uint8_t *out, size_t cap)
{
    int rc = wp_tls_read_check(&t->b, cap);
    if (rc)
        return rc;
    if (cap > INT_MAX)
        cap = INT_MAX;
    ERR_clear_error();
    size_t n = 0;
    int ret = SSL_read_ex(t->ssl, out, cap, &n);
    if (ret == 1)
        return (int)n;
    int e = SSL_get_error(t->ssl, ret);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && !t->b.out_overflow)
        return WP_ERR_NEED_MORE;
    if (e == SSL_ERROR_ZERO_RETURN) {
        t->b.peer_closed = 1;
        return WP_ERR_CLOSED;
    }
    return wp_tls_fail(t);
}

int wp_tls_write(wp_tls *t, const uint8_t *data, size_t len)
{
    int rc = wp_tls_write_ready(&t->b, len);
    if (rc <= 0)
        return rc;
    rc = wp_tls_write_room(&t->b, len, WP_TLS_RECORD_MAX);
    if (rc)
        return rc;
    ERR_clear_error();
    size_t done = 0;
    int ret = SSL_write_ex(t->ssl, data, len, &done);
    if (ret != 1 || done != len)
        /* Cannot happen with room checked; treat as fatal (stream state unknown). */
        return wp_tls_fail(t);
    return 0;
}

int wp_tls_close_notify(wp_tls *t)
{
    if (t->b.failed)
        return WP_ERR_TLS;
    if (!t->b.hs_done)
        return 0; /* nothing to close yet (like mbedTLS: no alert before the handshake) */
    ERR_clear_error();
    int ret = SSL_shutdown(t->ssl);
    if (ret < 0) {
        int e = SSL_get_error(t->ssl, ret);
        /* 0/"want read": our close_notify is queued, the peer's has not arrived */
        if (e != SSL_ERROR_WANT_READ || t->b.out_overflow) {
            wp_tls_fail(t);
            return WP_ERR_TLS;
        }
        ERR_clear_error();
    }
    return 0;
}

const char *wp_tls_version(const wp_tls *t)
{
    if (!t->b.hs_done)
        return "";
    const char *v = SSL_get_version(t->ssl);
    return v ? v : "";
}

const char *wp_tls_ciphersuite(const wp_tls *t)
{
    if (!t->b.hs_done)
        return "";
    const char *s = SSL_get_cipher_name(t->ssl);
    return s ? s : "";
}
