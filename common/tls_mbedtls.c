/*
 * tls_mbedtls.c — the mbedTLS backend of common/tls.h (WP_TLS_BACKEND=mbedtls):
 * TLS sessions over memory buffers. The pin helpers live in tls_pin.c, the
 * backend-neutral checks and error reasons in tls_common.c (tls_internal.h).
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
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "crypto.h"
#include "err.h"
#include "tls.h"
#include "tls_internal.h"

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

struct wp_tls_conf {
    wp_tls_conf_base b; /* first (tls_internal.h) */
    mbedtls_ssl_config ssl;
    mbedtls_x509_crt chain; /* server: own chain; client: CA chain */
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    int ciphersuites[8]; /* zero-terminated, referenced by ssl */
};

struct wp_tls {
    wp_tls_base b; /* first (tls_internal.h) */
    mbedtls_ssl_context ssl;
    wp_buf in;
    size_t ip_len; /* server_name is an IP literal of this many bytes */
    uint8_t ip[16];
};

/* ---- helpers ---- */

static void wp_tls_mbed_reason(int ret, char *out, size_t cap)
{
    char tmp[WP_TLS_ERR_MAX - 32];
    mbedtls_strerror(ret, tmp, sizeof(tmp));
    snprintf(out, cap, "%s (-0x%04x)", tmp, (unsigned)-ret);
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
    if (wp_tls_mbed_spki_hash(crt, h) == 0 && wp_tls_pin_eq(h, c->b.pin))
        return 1;
    for (const mbedtls_x509_crt *cur = crt->next; cur && cur->raw.p; cur = cur->next) {
        if (wp_tls_mbed_spki_hash(cur, h) != 0 || !wp_tls_pin_eq(h, c->b.pin))
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
    wp_tls_conf *c = t->b.conf;
    if (c->b.has_pin) {
        /* The pin (checked below against the chain it anchors) replaces the system trust
         * store and the host name: those errors do not apply in pin mode. */
        *flags = 0;
        if (depth != 0)
            return 0;
        if (wp_tls_pin_check_chain(c, crt)) {
            t->b.pin_matched = 1;
            return 0;
        }
        t->b.pin_mismatch = 1;
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
    int rc = wp_buf_put(&t->b.out, p, n);
    if (rc != 0) {
        t->b.out_overflow = 1;
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
    int rc = wp_tls_fail_known(&t->b);
    if (rc)
        return rc;
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
        unsigned vf = 0;
        if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
            vf |= WP_TLS_VF_EXPIRED;
        if (flags & MBEDTLS_X509_BADCERT_FUTURE)
            vf |= WP_TLS_VF_FUTURE;
        if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
            vf |= WP_TLS_VF_UNTRUSTED;
        if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
            vf |= WP_TLS_VF_NAME;
        return wp_tls_fail_verify(&t->b, vf, info);
    }
    wp_tls_mbed_reason(ret, t->b.last_error, sizeof(t->b.last_error));
    t->b.failed = WP_ERR_TLS;
    return t->b.failed;
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
    c->b.refs = 1;
    c->b.is_server = endpoint == MBEDTLS_SSL_IS_SERVER;
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

/*
 * Parses every certificate of a PEM file into chain. 0, or WP_ERR_IO/NOMEM/TLS
 * with err = "<what> <path>: <reason>".
 */
static int wp_tls_load_chain(mbedtls_x509_crt *chain, const char *what, const char *path, char *err,
                             size_t cap)
{
    int ret = mbedtls_x509_crt_parse_file(chain, path);
    if (ret == 0)
        return 0;
    char why[WP_TLS_ERR_MAX];
    if (ret < 0)
        wp_tls_mbed_reason(ret, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "%d certificate(s) could not be parsed", ret);
    wp_tls_errf_file(err, cap, what, path, why);
    return ret < 0 ? wp_tls_mbed_file_err(ret) : WP_ERR_TLS;
}

int wp_tls_conf_server_new(wp_tls_conf **out, const char *cert_file, const char *key_file,
                           char *err, size_t cap)
{
    int rc =
        wp_tls_conf_args(out && cert_file && key_file, "missing certificate or key file", err, cap);
    if (rc)
        return rc;
    wp_tls_conf *c = wp_tls_conf_alloc(MBEDTLS_SSL_IS_SERVER, err, cap, &rc);
    if (!c)
        return rc;
    char why[WP_TLS_ERR_MAX];

    rc = wp_tls_load_chain(&c->chain, "cannot load certificate", cert_file, err, cap);
    if (rc)
        goto fail;
    int ret;
#if MBEDTLS_VERSION_MAJOR >= 3
    ret = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL, mbedtls_ctr_drbg_random, &c->drbg);
#else
    ret = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL);
#endif
    if (ret != 0) {
        rc = wp_tls_mbed_file_err(ret);
        /* mbedTLS key errors never echo key bytes; the code text is safe. */
        wp_tls_mbed_reason(ret, why, sizeof(why));
        wp_tls_errf_file(err, cap, "cannot load private key", key_file, why);
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
    int rc = wp_tls_conf_args(out && opts, "missing client options", err, cap);
    if (rc)
        return rc;
    wp_tls_conf *c = wp_tls_conf_alloc(MBEDTLS_SSL_IS_CLIENT, err, cap, &rc);
    if (!c)
        return rc;

    int mode = wp_tls_conf_base_client(&c->b, opts);
    if (mode == WP_TLS_VERIFY_INSECURE) {
        mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_NONE);
    } else if (mode == WP_TLS_VERIFY_PIN) {
        mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_OPTIONAL);
    } else {
        if (opts->ca_file) {
            rc = wp_tls_load_chain(&c->chain, "cannot load CA file", opts->ca_file, err, cap);
            if (rc)
                goto fail;
        } else {
            /* System bundle: tolerate a few unparsable entries, need at least one. */
            for (size_t i = 0; i < wp_tls_system_bundle_count; i++) {
                int ret = mbedtls_x509_crt_parse_file(&c->chain, wp_tls_system_bundles[i]);
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

void wp_tls_conf_unref(wp_tls_conf *c)
{
    if (!c || --c->b.refs > 0)
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
    if (!out || !conf || wp_tls_new_check(conf, server_name) != 0)
        return WP_ERR_INVAL;
    wp_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return WP_ERR_NOMEM;
    wp_tls_base_init(&t->b, conf);
    mbedtls_ssl_init(&t->ssl);
    wp_buf_init(&t->in, WP_TLS_IN_MAX);

    int ret = mbedtls_ssl_setup(&t->ssl, &conf->ssl);
    if (ret != 0)
        goto fail;
    if (!conf->b.is_server && server_name) {
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
    if (!conf->b.is_server && !conf->b.insecure)
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
    wp_buf_free(&t->b.out);
    wp_tls_conf_unref(t->b.conf);
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
    if (t->b.failed)
        return t->b.failed;
    if (t->b.hs_done)
        return 0;
    int ret = mbedtls_ssl_handshake(&t->ssl);
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return WP_ERR_NEED_MORE;
    if (ret != 0)
        return wp_tls_fail(t, ret);
    if (t->b.conf->b.has_pin && !t->b.pin_matched) {
        /* Belt and braces: the callback did not run or did not match. */
        t->b.pin_mismatch = 1;
        mbedtls_ssl_send_alert_message(&t->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                       MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
        return wp_tls_fail(t, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
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
    int ret = mbedtls_ssl_read(&t->ssl, out, cap);
    if (ret > 0)
        return ret;
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return WP_ERR_NEED_MORE;
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        t->b.peer_closed = 1;
        return WP_ERR_CLOSED;
    }
    return wp_tls_fail(t, ret);
}

int wp_tls_write(wp_tls *t, const uint8_t *data, size_t len)
{
    int rc = wp_tls_write_ready(&t->b, len);
    if (rc <= 0)
        return rc;
    int frag = mbedtls_ssl_get_max_out_record_payload(&t->ssl);
    if (frag <= 0)
        return wp_tls_fail(t, frag < 0 ? frag : MBEDTLS_ERR_SSL_INTERNAL_ERROR);
    rc = wp_tls_write_room(&t->b, len, (size_t)frag);
    if (rc)
        return rc;
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
    if (t->b.failed)
        return WP_ERR_TLS;
    int ret = mbedtls_ssl_close_notify(&t->ssl);
    if (ret != 0) {
        wp_tls_fail(t, ret);
        return WP_ERR_TLS;
    }
    return 0;
}

const char *wp_tls_version(const wp_tls *t)
{
    if (!t->b.hs_done)
        return "";
    const char *v = mbedtls_ssl_get_version(&t->ssl);
    return v ? v : "";
}

const char *wp_tls_ciphersuite(const wp_tls *t)
{
    if (!t->b.hs_done)
        return "";
    const char *s = mbedtls_ssl_get_ciphersuite(&t->ssl);
    return s ? s : "";
}
