/*
 * tls_mbedtls.c — the mbedTLS backend of common/tls.h (WP_TLS_BACKEND=mbedtls):
 * TLS sessions over memory buffers. The pin helpers live in tls_pin.c.
 *
 * A wp_tls never touches a socket: the mbedTLS BIO callbacks read ciphertext
 * from the session's bounded in-buffer (WANT_READ when empty) and append
 * ciphertext to its bounded out-buffer (always accepted; a full out-buffer is
 * an error, never WANT_WRITE). wp_tls_write() checks room before encrypting,
 * so in normal use the out-buffer never overflows.
 *
 * A wp_tls_conf owns the mbedtls_ssl_config plus everything it points at
 * (certificates, key, RNG, cipher suite list). Its reference count is a plain
 * int: references are taken and dropped on one loop thread only.
 *
 * Client verification:
 *   - pin: authmode OPTIONAL plus a per-session verify callback that hashes
 *     the SubjectPublicKeyInfo of every certificate the server presented and
 *     aborts the handshake unless one equals the pin;
 *   - ca_file / system bundle: authmode REQUIRED and hostname check. mbedTLS
 *     before 3.6 ignores iPAddress SANs, so for an IP literal server_name the
 *     verify callback checks the leaf's iPAddress SANs itself;
 *   - insecure_skip_verify: authmode NONE.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "crypto.h"
#include "err.h"
#include "tls.h"

#if MBEDTLS_VERSION_MAJOR >= 3
#define WP_CRT_FIELD(c, f) ((c)->MBEDTLS_PRIVATE(f))
#else
#define WP_CRT_FIELD(c, f) ((c)->f)
#endif

/* mbedTLS 3.6 verifies iPAddress SANs itself; older versions need our check. */
#if MBEDTLS_VERSION_NUMBER >= 0x03060000
#define WP_TLS_NATIVE_IP_SAN 1
#else
#define WP_TLS_NATIVE_IP_SAN 0
#endif

#define WP_TLS_RECORD_OVERHEAD 64 /* header + explicit IV + AEAD tag, generously */
#define WP_TLS_ERR_MAX         200
#define WP_TLS_NAME_MAX        255
#define WP_TLS_SPKI_MAX        4096

static const char *const wp_tls_system_bundles[] = {
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
};

struct wp_tls_conf {
    int refs; /* loop-thread only: no atomics */
    int is_server;
    mbedtls_ssl_config ssl;
    mbedtls_x509_crt chain; /* server: own chain; client: CA chain */
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    int ciphersuites[8]; /* zero-terminated, referenced by ssl */
    int has_pin;
    uint8_t pin[WP_SHA256_LEN];
    int insecure;
};

struct wp_tls {
    wp_tls_conf *conf;
    mbedtls_ssl_context ssl;
    wp_buf in;
    wp_buf out;
    int hs_done;
    int failed;       /* sticky WP_ERR_* after a fatal error, 0 otherwise */
    int out_overflow; /* the send callback found the out-buffer full */
    int pin_matched;  /* pin mode: some presented certificate matched */
    int pin_mismatch; /* pin mode: the callback rejected the chain */
    int peer_closed;  /* close_notify received */
    size_t ip_len;    /* server_name is an IP literal of this many bytes */
    uint8_t ip[16];
    char last_error[WP_TLS_ERR_MAX];
};

/* ---- helpers ---- */

static void wp_tls_errf(char *err, size_t cap, const char *what, const char *detail)
{
    if (err && cap)
        snprintf(err, cap, "%s%s%s", what, detail && *detail ? ": " : "", detail ? detail : "");
}

static void wp_tls_mbed_reason(int ret, char *out, size_t cap)
{
    char tmp[WP_TLS_ERR_MAX - 32];
    mbedtls_strerror(ret, tmp, sizeof(tmp));
    snprintf(out, cap, "%s (-0x%04x)", tmp, (unsigned)-ret);
}

static int wp_tls_file_err(int ret)
{
    if (ret == MBEDTLS_ERR_PK_FILE_IO_ERROR || ret == MBEDTLS_ERR_X509_FILE_IO_ERROR)
        return WP_ERR_IO;
    if (ret == MBEDTLS_ERR_PK_ALLOC_FAILED || ret == MBEDTLS_ERR_X509_ALLOC_FAILED)
        return WP_ERR_NOMEM;
    return WP_ERR_TLS;
}

static int wp_tls_sha256(const uint8_t *p, size_t n, uint8_t out[WP_SHA256_LEN])
{
#if MBEDTLS_VERSION_MAJOR >= 3
    return mbedtls_sha256(p, n, out, 0) == 0 ? 0 : WP_ERR_CRYPTO;
#else
    return mbedtls_sha256_ret(p, n, out, 0) == 0 ? 0 : WP_ERR_CRYPTO;
#endif
}

/* SHA-256 over the DER SubjectPublicKeyInfo of one certificate. */
static int wp_tls_spki_hash(const mbedtls_x509_crt *crt, uint8_t out[WP_SHA256_LEN])
{
    const mbedtls_x509_buf *raw = &WP_CRT_FIELD(crt, pk_raw);
    if (raw->p && raw->len)
        return wp_tls_sha256(raw->p, raw->len, out);
    /* Fallback: re-encode. pk_write_pubkey_der writes at the END of buf. */
    unsigned char *buf = malloc(WP_TLS_SPKI_MAX);
    if (!buf)
        return WP_ERR_NOMEM;
    int n = mbedtls_pk_write_pubkey_der((mbedtls_pk_context *)&crt->pk, buf, WP_TLS_SPKI_MAX);
    int rc = n > 0 ? wp_tls_sha256(buf + WP_TLS_SPKI_MAX - n, (size_t)n, out) : WP_ERR_TLS;
    free(buf);
    return rc;
}

static int wp_tls_pin_eq(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0;
    for (size_t i = 0; i < WP_SHA256_LEN; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

/*
 * Nonzero if the certificate's subjectAltName extension has an iPAddress entry
 * equal to ip[0..ip_len). Walks the raw v3 extensions with the ASN.1 getters.
 */
static int wp_tls_crt_has_ip_san(const mbedtls_x509_crt *crt, const uint8_t *ip, size_t ip_len)
{
    const mbedtls_x509_buf *ext = &WP_CRT_FIELD(crt, v3_ext);
    if (!ext->p || !ext->len)
        return 0;
    unsigned char *p = ext->p;
    const unsigned char *end = ext->p + ext->len;
    size_t len;
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return 0;
    end = p + len;
    while (p < end) {
        if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) !=
            0)
            return 0;
        const unsigned char *ext_end = p + len;
        size_t oid_len;
        if (mbedtls_asn1_get_tag(&p, ext_end, &oid_len, MBEDTLS_ASN1_OID) != 0)
            return 0;
        int is_san = oid_len == MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME) &&
                     memcmp(p, MBEDTLS_OID_SUBJECT_ALT_NAME, oid_len) == 0;
        p += oid_len;
        int critical = 0;
        if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN &&
            mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0)
            return 0;
        size_t val_len;
        if (mbedtls_asn1_get_tag(&p, ext_end, &val_len, MBEDTLS_ASN1_OCTET_STRING) != 0)
            return 0;
        if (is_san) {
            const unsigned char *v_end = p + val_len;
            size_t seq_len;
            if (mbedtls_asn1_get_tag(&p, v_end, &seq_len,
                                     MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
                return 0;
            v_end = p + seq_len;
            while (p < v_end) {
                unsigned char tag = *p++;
                size_t gn_len;
                if (mbedtls_asn1_get_len(&p, v_end, &gn_len) != 0)
                    return 0;
                if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && gn_len == ip_len &&
                    memcmp(p, ip, ip_len) == 0)
                    return 1;
                p += gn_len;
            }
            return 0;
        }
        p = (unsigned char *)ext_end;
    }
    return 0;
}

/*
 * Pin check over a presented chain (crt = leaf, crt->next = the rest). The pin
 * matches when it is the leaf's SPKI hash, or when it is the SPKI hash of a
 * certificate further up the presented chain AND the leaf verifies
 * (signatures, validity dates, CA constraints) up to that certificate used as
 * the only trust anchor. Merely presenting the pinned (public) CA certificate
 * next to an unrelated leaf is not enough. Returns 1 when it matches.
 */
static int wp_tls_pin_check_chain(const wp_tls_conf *c, mbedtls_x509_crt *crt)
{
    uint8_t h[WP_SHA256_LEN];
    if (wp_tls_spki_hash(crt, h) == 0 && wp_tls_pin_eq(h, c->pin))
        return 1;
    for (const mbedtls_x509_crt *cur = crt->next; cur && cur->raw.p; cur = cur->next) {
        if (wp_tls_spki_hash(cur, h) != 0 || !wp_tls_pin_eq(h, c->pin))
            continue;
        mbedtls_x509_crt anchor;
        uint32_t vflags = 0;
        int ok = 0;
        mbedtls_x509_crt_init(&anchor);
        if (mbedtls_x509_crt_parse_der(&anchor, cur->raw.p, cur->raw.len) == 0 &&
            mbedtls_x509_crt_verify(crt, &anchor, NULL, NULL, &vflags, NULL, NULL) == 0 &&
            vflags == 0)
            ok = 1;
        mbedtls_x509_crt_free(&anchor);
        if (ok)
            return 1;
    }
    return 0;
}

/* Verify callback (per session): pin matching and IP SAN checks. */
static int wp_tls_verify_cb(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    wp_tls *t = arg;
    wp_tls_conf *c = t->conf;
    if (c->has_pin) {
        /* The pin (checked below against the chain it anchors) replaces the system trust
         * store and the host name: those errors do not apply in pin mode. */
        *flags = 0;
        if (depth != 0)
            return 0;
        if (wp_tls_pin_check_chain(c, crt)) {
            t->pin_matched = 1;
            return 0;
        }
        t->pin_mismatch = 1;
        return MBEDTLS_ERR_X509_FATAL_ERROR; /* abort the handshake now */
    }
    if (depth == 0 && t->ip_len && !WP_TLS_NATIVE_IP_SAN &&
        !wp_tls_crt_has_ip_san(crt, t->ip, t->ip_len))
        *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

/* BIO send: always accept into the out-buffer, or fail (never WANT_WRITE). */
static int wp_tls_bio_send(void *arg, const unsigned char *p, size_t n)
{
    wp_tls *t = arg;
    if (n > INT_MAX)
        n = INT_MAX;
    int rc = wp_buf_put(&t->out, p, n);
    if (rc != 0) {
        t->out_overflow = 1;
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    }
    return (int)n;
}

/* BIO recv: take from the in-buffer, or WANT_READ when it is empty. */
static int wp_tls_bio_recv(void *arg, unsigned char *p, size_t n)
{
    wp_tls *t = arg;
    size_t have = wp_buf_len(&t->in);
    if (have == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > have)
        n = have;
    if (n > INT_MAX)
        n = INT_MAX;
    if (wp_buf_get(&t->in, p, n) != 0)
        return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    return (int)n;
}

/* Records a fatal mbedTLS error on the session and returns the sticky WP_ERR_*. */
static int wp_tls_fail(wp_tls *t, int ret)
{
    if (t->out_overflow) {
        snprintf(t->last_error, sizeof(t->last_error), "TLS out-buffer full");
        t->failed = WP_ERR_TLS;
        return t->failed;
    }
    if (t->pin_mismatch) {
        snprintf(t->last_error, sizeof(t->last_error), "certificate pin mismatch");
        t->failed = WP_ERR_VERIFY;
        return t->failed;
    }
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char info[WP_TLS_ERR_MAX];
        uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
        if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags) < 0)
            info[0] = '\0';
        /* one line: join the per-flag lines */
        size_t n = strlen(info);
        while (n && info[n - 1] == '\n')
            info[--n] = '\0';
        for (char *q = info; *q; q++)
            if (*q == '\n')
                *q = ';';
        /* PROTOCOL.md §2.1 names the reasons: say those words first. */
        const char *why = (flags & MBEDTLS_X509_BADCERT_EXPIRED)       ? "certificate expired"
                          : (flags & MBEDTLS_X509_BADCERT_FUTURE)      ? "certificate not yet valid"
                          : (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) ? "unknown CA"
                          : (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) ? "name mismatch"
                                                                       : "verification failed";
        snprintf(t->last_error, sizeof(t->last_error), "%s (%s)", why,
                 info[0] ? info : "no details");
        t->failed = WP_ERR_VERIFY;
        return t->failed;
    }
    wp_tls_mbed_reason(ret, t->last_error, sizeof(t->last_error));
    t->failed = WP_ERR_TLS;
    return t->failed;
}

/* ---- conf ---- */

static wp_tls_conf *wp_tls_conf_alloc(int endpoint, char *err, size_t cap, int *rc)
{
    wp_tls_conf *c = calloc(1, sizeof(*c));
    if (!c) {
        *rc = WP_ERR_NOMEM;
        wp_tls_errf(err, cap, "out of memory", NULL);
        return NULL;
    }
    c->refs = 1;
    c->is_server = endpoint == MBEDTLS_SSL_IS_SERVER;
    mbedtls_ssl_config_init(&c->ssl);
    mbedtls_x509_crt_init(&c->chain);
    mbedtls_pk_init(&c->key);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);

    static const char pers[] = "wolfpack-tls";
    int ret = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret != 0) {
        char why[WP_TLS_ERR_MAX];
        wp_tls_mbed_reason(ret, why, sizeof(why));
        wp_tls_errf(err, cap, "seeding the RNG failed", why);
        *rc = WP_ERR_CRYPTO;
        goto fail;
    }
    ret = mbedtls_ssl_config_defaults(&c->ssl, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        char why[WP_TLS_ERR_MAX];
        wp_tls_mbed_reason(ret, why, sizeof(why));
        wp_tls_errf(err, cap, "TLS config defaults failed", why);
        *rc = WP_ERR_TLS;
        goto fail;
    }
    mbedtls_ssl_conf_rng(&c->ssl, mbedtls_ctr_drbg_random, &c->drbg);

    /* Policy: TLS 1.2 minimum, ECDHE + AEAD suites only, no renegotiation. */
#if MBEDTLS_VERSION_MAJOR >= 3
    mbedtls_ssl_conf_min_tls_version(&c->ssl, MBEDTLS_SSL_VERSION_TLS1_2);
#else
    mbedtls_ssl_conf_min_version(&c->ssl, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
    static const int wanted[] = {
        /* ChaCha20-Poly1305 first: in mbedTLS 2.28 it runs ~1.6x faster than its
         * AES-GCM on x86-64 (tests/bench/README.md), and every tunnel byte is
         * decrypted and re-encrypted by wolfpackd. */
        MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
        if (mbedtls_ssl_ciphersuite_from_id(wanted[i]) != NULL)
            c->ciphersuites[n++] = wanted[i];
    c->ciphersuites[n] = 0;
    if (n == 0) {
        wp_tls_errf(err, cap, "mbedTLS offers none of the allowed ECDHE AEAD cipher suites", NULL);
        *rc = WP_ERR_TLS;
        goto fail;
    }
    mbedtls_ssl_conf_ciphersuites(&c->ssl, c->ciphersuites);
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    mbedtls_ssl_conf_renegotiation(&c->ssl, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    mbedtls_ssl_conf_legacy_renegotiation(&c->ssl, MBEDTLS_SSL_LEGACY_NO_RENEGOTIATION);
    return c;

fail:
    wp_tls_conf_unref(c);
    return NULL;
}

int wp_tls_conf_server_new(wp_tls_conf **out, const char *cert_file, const char *key_file,
                           char *err, size_t cap)
{
    if (err && cap)
        err[0] = '\0';
    if (!out || !cert_file || !key_file) {
        wp_tls_errf(err, cap, "missing certificate or key file", NULL);
        return WP_ERR_INVAL;
    }
    int rc = 0;
    wp_tls_conf *c = wp_tls_conf_alloc(MBEDTLS_SSL_IS_SERVER, err, cap, &rc);
    if (!c)
        return rc;
    char why[WP_TLS_ERR_MAX];
    char what[WP_TLS_ERR_MAX + 64];

    int ret = mbedtls_x509_crt_parse_file(&c->chain, cert_file);
    if (ret != 0) {
        rc = ret < 0 ? wp_tls_file_err(ret) : WP_ERR_TLS;
        if (ret < 0)
            wp_tls_mbed_reason(ret, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "%d certificate(s) could not be parsed", ret);
        snprintf(what, sizeof(what), "cannot load certificate %s", cert_file);
        wp_tls_errf(err, cap, what, why);
        goto fail;
    }
#if MBEDTLS_VERSION_MAJOR >= 3
    ret = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL, mbedtls_ctr_drbg_random, &c->drbg);
#else
    ret = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL);
#endif
    if (ret != 0) {
        rc = wp_tls_file_err(ret);
        /* mbedTLS key errors never echo key bytes; the code text is safe. */
        wp_tls_mbed_reason(ret, why, sizeof(why));
        snprintf(what, sizeof(what), "cannot load private key %s", key_file);
        wp_tls_errf(err, cap, what, why);
        goto fail;
    }
#if MBEDTLS_VERSION_MAJOR >= 3
    ret = mbedtls_pk_check_pair(&c->chain.pk, &c->key, mbedtls_ctr_drbg_random, &c->drbg);
#else
    ret = mbedtls_pk_check_pair(&c->chain.pk, &c->key);
#endif
    if (ret != 0) {
        rc = WP_ERR_TLS;
        wp_tls_errf(err, cap, "certificate and key do not match", NULL);
        goto fail;
    }
    ret = mbedtls_ssl_conf_own_cert(&c->ssl, &c->chain, &c->key);
    if (ret != 0) {
        rc = WP_ERR_TLS;
        wp_tls_mbed_reason(ret, why, sizeof(why));
        wp_tls_errf(err, cap, "cannot use certificate", why);
        goto fail;
    }
    mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_NONE);
    *out = c;
    return 0;

fail:
    wp_tls_conf_unref(c);
    return rc;
}

int wp_tls_conf_client_new(wp_tls_conf **out, const wp_tls_client_opts *opts, char *err, size_t cap)
{
    if (err && cap)
        err[0] = '\0';
    if (!out || !opts) {
        wp_tls_errf(err, cap, "missing client options", NULL);
        return WP_ERR_INVAL;
    }
    int rc = 0;
    wp_tls_conf *c = wp_tls_conf_alloc(MBEDTLS_SSL_IS_CLIENT, err, cap, &rc);
    if (!c)
        return rc;
    char why[WP_TLS_ERR_MAX];
    char what[WP_TLS_ERR_MAX + 64];

    if (opts->insecure_skip_verify) {
        c->insecure = 1;
        mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_NONE);
    } else if (opts->pin) {
        c->has_pin = 1;
        memcpy(c->pin, opts->pin, WP_SHA256_LEN);
        mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_OPTIONAL);
    } else {
        int ret;
        if (opts->ca_file) {
            ret = mbedtls_x509_crt_parse_file(&c->chain, opts->ca_file);
            if (ret != 0) {
                rc = ret < 0 ? wp_tls_file_err(ret) : WP_ERR_TLS;
                if (ret < 0)
                    wp_tls_mbed_reason(ret, why, sizeof(why));
                else
                    snprintf(why, sizeof(why), "%d certificate(s) could not be parsed", ret);
                snprintf(what, sizeof(what), "cannot load CA file %s", opts->ca_file);
                wp_tls_errf(err, cap, what, why);
                goto fail;
            }
        } else {
            /* System bundle: tolerate a few unparsable entries, need at least one. */
            ret = MBEDTLS_ERR_X509_FILE_IO_ERROR;
            for (size_t i = 0; i < sizeof(wp_tls_system_bundles) / sizeof(char *); i++) {
                ret = mbedtls_x509_crt_parse_file(&c->chain, wp_tls_system_bundles[i]);
                if (ret >= 0 && c->chain.raw.p)
                    break;
            }
            if (!c->chain.raw.p) {
                rc = WP_ERR_IO;
                wp_tls_errf(err, cap, "no usable system CA bundle found", wp_tls_system_bundles[0]);
                goto fail;
            }
        }
        mbedtls_ssl_conf_ca_chain(&c->ssl, &c->chain, NULL);
        mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_REQUIRED);
    }
    *out = c;
    return 0;

fail:
    wp_tls_conf_unref(c);
    return rc;
}

void wp_tls_conf_ref(wp_tls_conf *c)
{
    if (c)
        c->refs++;
}

void wp_tls_conf_unref(wp_tls_conf *c)
{
    if (!c || --c->refs > 0)
        return;
    mbedtls_ssl_config_free(&c->ssl);
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_pk_free(&c->key);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    mbedtls_platform_zeroize(c, sizeof(*c));
    free(c);
}

/* ---- sessions ---- */

int wp_tls_new(wp_tls **out, wp_tls_conf *conf, const char *server_name)
{
    if (!out || !conf)
        return WP_ERR_INVAL;
    if (server_name && (!*server_name || strlen(server_name) > WP_TLS_NAME_MAX))
        return WP_ERR_INVAL;
    /* A verifying client without a pin needs a name to check. */
    if (!conf->is_server && !conf->insecure && !conf->has_pin && !server_name)
        return WP_ERR_INVAL;
    wp_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return WP_ERR_NOMEM;
    t->conf = conf;
    conf->refs++;
    mbedtls_ssl_init(&t->ssl);
    wp_buf_init(&t->in, WP_TLS_IN_MAX);
    wp_buf_init(&t->out, WP_TLS_OUT_MAX);

    int ret = mbedtls_ssl_setup(&t->ssl, &conf->ssl);
    if (ret != 0)
        goto fail;
    if (!conf->is_server && server_name) {
        struct in6_addr a6;
        if (inet_pton(AF_INET, server_name, t->ip) == 1) {
            t->ip_len = 4;
        } else if (inet_pton(AF_INET6, server_name, &a6) == 1) {
            memcpy(t->ip, &a6, 16);
            t->ip_len = 16;
        }
        /* No SNI for IP literals (RFC 6066); pre-3.6 mbedTLS cannot match IP SANs. */
        if (!t->ip_len || WP_TLS_NATIVE_IP_SAN) {
            ret = mbedtls_ssl_set_hostname(&t->ssl, server_name);
            if (ret != 0)
                goto fail;
        }
    }
    if (!conf->is_server && !conf->insecure)
        mbedtls_ssl_set_verify(&t->ssl, wp_tls_verify_cb, t);
    mbedtls_ssl_set_bio(&t->ssl, t, wp_tls_bio_send, wp_tls_bio_recv, NULL);
    *out = t;
    return 0;

fail:
    wp_tls_free(t);
    return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WP_ERR_NOMEM : WP_ERR_TLS;
}

void wp_tls_free(wp_tls *t)
{
    if (!t)
        return;
    mbedtls_ssl_free(&t->ssl);
    wp_buf_free(&t->in);
    wp_buf_free(&t->out);
    wp_tls_conf_unref(t->conf);
    mbedtls_platform_zeroize(t, sizeof(*t));
    free(t);
}

int wp_tls_feed(wp_tls *t, const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0;
    return wp_buf_put(&t->in, data, len);
}

int wp_tls_handshake(wp_tls *t)
{
    if (t->failed)
        return t->failed;
    if (t->hs_done)
        return 0;
    int ret = mbedtls_ssl_handshake(&t->ssl);
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return WP_ERR_NEED_MORE;
    if (ret != 0)
        return wp_tls_fail(t, ret);
    if (t->conf->has_pin && !t->pin_matched) {
        /* Belt and braces: the callback did not run or did not match. */
        t->pin_mismatch = 1;
        mbedtls_ssl_send_alert_message(&t->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                       MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
        return wp_tls_fail(t, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
    }
    t->hs_done = 1;
    return 0;
}

int wp_tls_handshake_done(const wp_tls *t)
{
    return t->hs_done;
}

int wp_tls_read(wp_tls *t, uint8_t *out, size_t cap)
{
    if (t->failed)
        return t->failed;
    if (t->peer_closed)
        return WP_ERR_CLOSED;
    if (!t->hs_done)
        return WP_ERR_STATE;
    if (cap == 0)
        return WP_ERR_INVAL;
    if (cap > INT_MAX)
        cap = INT_MAX;
    int ret = mbedtls_ssl_read(&t->ssl, out, cap);
    if (ret > 0)
        return ret;
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return WP_ERR_NEED_MORE;
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        t->peer_closed = 1;
        return WP_ERR_CLOSED;
    }
    return wp_tls_fail(t, ret);
}

int wp_tls_write(wp_tls *t, const uint8_t *data, size_t len)
{
    if (t->failed)
        return t->failed;
    if (!t->hs_done)
        return WP_ERR_STATE;
    if (len == 0)
        return 0;
    int frag = mbedtls_ssl_get_max_out_record_payload(&t->ssl);
    if (frag <= 0)
        return wp_tls_fail(t, frag < 0 ? frag : MBEDTLS_ERR_SSL_INTERNAL_ERROR);
    if (len > WP_TLS_OUT_MAX)
        return WP_ERR_INVAL; /* could never fit, even into an empty out-buffer */
    size_t need = len + (len / (size_t)frag + 1) * WP_TLS_RECORD_OVERHEAD;
    if (need > WP_TLS_OUT_MAX)
        return WP_ERR_INVAL;
    if (wp_buf_room(&t->out) < need)
        return WP_ERR_LIMIT;
    size_t done = 0;
    while (done < len) {
        size_t n = len - done;
        if (n > INT_MAX)
            n = INT_MAX;
        int ret = mbedtls_ssl_write(&t->ssl, data + done, n);
        if (ret <= 0)
            /* Cannot happen with room checked; treat as fatal (stream state unknown). */
            return wp_tls_fail(t, ret == 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : ret);
        done += (size_t)ret;
    }
    return 0;
}

int wp_tls_close_notify(wp_tls *t)
{
    if (t->failed)
        return WP_ERR_TLS;
    int ret = mbedtls_ssl_close_notify(&t->ssl);
    if (ret != 0) {
        wp_tls_fail(t, ret);
        return WP_ERR_TLS;
    }
    return 0;
}

wp_buf *wp_tls_out(wp_tls *t)
{
    return &t->out;
}

const char *wp_tls_version(const wp_tls *t)
{
    if (!t->hs_done)
        return "";
    const char *v = mbedtls_ssl_get_version(&t->ssl);
    return v ? v : "";
}

const char *wp_tls_ciphersuite(const wp_tls *t)
{
    if (!t->hs_done)
        return "";
    const char *s = mbedtls_ssl_get_ciphersuite(&t->ssl);
    return s ? s : "";
}

const char *wp_tls_last_error(const wp_tls *t)
{
    return t->last_error;
}
