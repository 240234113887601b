/*
 * tls_pin.c — SPKI pins for common/tls.h, the same for both TLS backends:
 * "sha256:<hex>" parsing and formatting, and the SHA-256 of a certificate
 * file's SubjectPublicKeyInfo (parsed with mbedTLS, like cert.c; PEM files are
 * the same whichever library runs the TLS sessions). The mbedTLS backend
 * hashes presented certificates and maps file errors with the same helpers
 * (tls_internal.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
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

#define WP_TLS_SPKI_MAX 4096

static int wp_pin_sha256(const uint8_t *p, size_t n, uint8_t out[WP_SHA256_LEN])
{
#if MBEDTLS_VERSION_MAJOR >= 3
    return mbedtls_sha256(p, n, out, 0) == 0 ? 0 : WP_ERR_CRYPTO;
#else
    return mbedtls_sha256_ret(p, n, out, 0) == 0 ? 0 : WP_ERR_CRYPTO;
#endif
}

int wp_tls_mbed_spki_hash(const mbedtls_x509_crt *crt, uint8_t out[WP_SHA256_LEN])
{
    const mbedtls_x509_buf *raw = &WP_CRT_FIELD(crt, pk_raw);
    if (raw->p && raw->len)
        return wp_pin_sha256(raw->p, raw->len, out);
    /* Fallback: re-encode. pk_write_pubkey_der writes at the END of buf. */
    unsigned char *buf = malloc(WP_TLS_SPKI_MAX);
    if (!buf)
        return WP_ERR_NOMEM;
    int n = mbedtls_pk_write_pubkey_der((mbedtls_pk_context *)&crt->pk, buf, WP_TLS_SPKI_MAX);
    int rc = n > 0 ? wp_pin_sha256(buf + WP_TLS_SPKI_MAX - n, (size_t)n, out) : WP_ERR_TLS;
    free(buf);
    return rc;
}

int wp_tls_mbed_file_err(int ret)
{
    if (ret == MBEDTLS_ERR_PK_FILE_IO_ERROR || ret == MBEDTLS_ERR_X509_FILE_IO_ERROR)
        return WP_ERR_IO;
    if (ret == MBEDTLS_ERR_PK_ALLOC_FAILED || ret == MBEDTLS_ERR_X509_ALLOC_FAILED)
        return WP_ERR_NOMEM;
    return WP_ERR_TLS;
}

int wp_tls_pin_parse(const char *s, uint8_t pin[WP_SHA256_LEN])
{
    static const char prefix[] = "sha256:";
    if (!s || strncasecmp(s, prefix, sizeof(prefix) - 1) != 0)
        return WP_ERR_INVAL;
    s += sizeof(prefix) - 1;
    if (strlen(s) != 2 * WP_SHA256_LEN)
        return WP_ERR_INVAL;
    uint8_t tmp[WP_SHA256_LEN];
    size_t n = 0;
    if (wp_hex_decode(s, 2 * WP_SHA256_LEN, tmp, sizeof(tmp), &n) != 0 || n != WP_SHA256_LEN)
        return WP_ERR_INVAL;
    memcpy(pin, tmp, WP_SHA256_LEN);
    return 0;
}

void wp_tls_pin_format(const uint8_t pin[WP_SHA256_LEN], char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[8 + 2 * WP_SHA256_LEN];
    memcpy(tmp, "sha256:", 7);
    for (size_t i = 0; i < WP_SHA256_LEN; i++) {
        tmp[7 + 2 * i] = hex[pin[i] >> 4];
        tmp[7 + 2 * i + 1] = hex[pin[i] & 15];
    }
    tmp[7 + 2 * WP_SHA256_LEN] = '\0';
    if (out && cap)
        snprintf(out, cap, "%s", tmp);
}

int wp_tls_pin_from_cert_file(const char *cert_file, uint8_t pin[WP_SHA256_LEN])
{
    if (!cert_file)
        return WP_ERR_INVAL;
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int ret = mbedtls_x509_crt_parse_file(&crt, cert_file);
    int rc;
    if (ret < 0)
        rc = wp_tls_mbed_file_err(ret);
    else if (ret > 0 || !crt.raw.p)
        rc = WP_ERR_TLS;
    else
        rc = wp_tls_mbed_spki_hash(&crt, pin); /* first certificate of the file */
    mbedtls_x509_crt_free(&crt);
    return rc;
}
