/*
 * crypto.c — CSPRNG, tokens, SHA-256, constant-time compare and strict
 * hex / base64 codecs (see crypto.h). Randomness comes from one process-wide
 * mbedTLS CTR_DRBG seeded from the platform entropy source; it is protected
 * by a mutex and re-seeded from scratch when the process id changes (fork).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "crypto.h"
#include "err.h"

static pthread_mutex_t wp_rng_mu = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context wp_rng_entropy;
static mbedtls_ctr_drbg_context wp_rng_drbg;
static int wp_rng_seeded;
static pid_t wp_rng_pid;

/* (Re)seeds the DRBG. Caller holds wp_rng_mu. Returns 0 or WP_ERR_CRYPTO. */
static int wp_rng_seed(void)
{
    if (wp_rng_seeded) {
        mbedtls_ctr_drbg_free(&wp_rng_drbg);
        mbedtls_entropy_free(&wp_rng_entropy);
        wp_rng_seeded = 0;
    }
    mbedtls_entropy_init(&wp_rng_entropy);
    mbedtls_ctr_drbg_init(&wp_rng_drbg);
    pid_t pid = getpid();
    char pers[64];
    int pn = snprintf(pers, sizeof pers, "wolfpack-drbg-%ld", (long)pid);
    if (mbedtls_ctr_drbg_seed(&wp_rng_drbg, mbedtls_entropy_func, &wp_rng_entropy,
                              (const unsigned char *)pers, (size_t)pn) != 0) {
        mbedtls_ctr_drbg_free(&wp_rng_drbg);
        mbedtls_entropy_free(&wp_rng_entropy);
        return WP_ERR_CRYPTO;
    }
    mbedtls_ctr_drbg_set_prediction_resistance(&wp_rng_drbg, MBEDTLS_CTR_DRBG_PR_OFF);
    wp_rng_pid = pid;
    wp_rng_seeded = 1;
    return 0;
}

int wp_random_bytes(void *out, size_t n)
{
    int rc = 0;
    uint8_t *p = out;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&wp_rng_mu);
    if (!wp_rng_seeded || wp_rng_pid != getpid())
        rc = wp_rng_seed();
    while (rc == 0 && n > 0) {
        size_t chunk = n < MBEDTLS_CTR_DRBG_MAX_REQUEST ? n : MBEDTLS_CTR_DRBG_MAX_REQUEST;
        if (mbedtls_ctr_drbg_random(&wp_rng_drbg, p, chunk) != 0) {
            rc = WP_ERR_CRYPTO;
            break;
        }
        p += chunk;
        n -= chunk;
    }
    pthread_mutex_unlock(&wp_rng_mu);
    return rc;
}

int wp_token_generate(const char *prefix, char *out, size_t cap)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    if (plen > WP_TOKEN_PREFIX_MAX)
        return WP_ERR_INVAL;
    for (size_t i = 0; i < plen; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return WP_ERR_INVAL;
    }
    size_t need = (plen ? plen + 1 : 0) + WP_TOKEN_RANDOM_LEN + 1;
    if (!out || cap < need)
        return WP_ERR_LIMIT;
    uint8_t rnd[32];
    int rc = wp_random_bytes(rnd, sizeof rnd);
    if (rc < 0)
        return rc;
    size_t o = 0;
    if (plen) {
        memcpy(out, prefix, plen);
        out[plen] = '_';
        o = plen + 1;
    }
    rc = wp_base64url_encode(rnd, sizeof rnd, out + o, cap - o, NULL);
    wp_secure_zero(rnd, sizeof rnd);
    return rc;
}

void wp_sha256(const void *p, size_t n, uint8_t out[32])
{
#if MBEDTLS_VERSION_MAJOR >= 3
    (void)mbedtls_sha256(p, n, out, 0);
#else
    (void)mbedtls_sha256_ret(p, n, out, 0);
#endif
}

int wp_sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t d[32];
    wp_sha256(p, n, d);
    return wp_hex_encode(d, sizeof d, out, 65);
}

int wp_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (uint8_t)(x[i] ^ y[i]);
    return diff == 0;
}

int wp_ct_streq(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    size_t la = strlen(a), lb = strlen(b);
    /* on a length mismatch compare a with itself so the work depends on la only */
    const char *other = la == lb ? b : a;
    int eq = wp_ct_equal(a, other, la);
    return eq & (la == lb);
}

int wp_hex_encode(const void *p, size_t n, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *s = p;
    if (n > (SIZE_MAX - 1) / 2 || !out || cap < 2 * n + 1)
        return WP_ERR_LIMIT;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[s[i] >> 4];
        out[2 * i + 1] = digits[s[i] & 15];
    }
    out[2 * n] = '\0';
    return 0;
}

int wp_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int wp_hex_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *olen)
{
    if (slen % 2 != 0)
        return WP_ERR_MALFORMED;
    for (size_t i = 0; i < slen; i++)
        if (wp_hex_digit(s[i]) < 0)
            return WP_ERR_MALFORMED;
    if (cap < slen / 2)
        return WP_ERR_LIMIT;
    for (size_t i = 0; i < slen / 2; i++)
        out[i] = (uint8_t)(wp_hex_digit(s[2 * i]) << 4 | wp_hex_digit(s[2 * i + 1]));
    if (olen)
        *olen = slen / 2;
    return 0;
}

static const char wp_b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char wp_b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t wp_base64_encoded_len(size_t n)
{
    if (n / 3 > (SIZE_MAX - 4) / 4)
        return SIZE_MAX;
    return (n / 3 + (n % 3 ? 1 : 0)) * 4;
}

size_t wp_base64url_encoded_len(size_t n)
{
    if (n / 3 > (SIZE_MAX - 4) / 4)
        return SIZE_MAX;
    size_t r = n % 3;
    return n / 3 * 4 + (r == 0 ? 0 : r + 1);
}

static int wp_b64_encode(const char *alpha, int pad, const void *p, size_t n, char *out, size_t cap,
                         size_t *olen)
{
    const uint8_t *s = p;
    size_t need = pad ? wp_base64_encoded_len(n) : wp_base64url_encoded_len(n);
    if (need == SIZE_MAX || !out || cap <= need)
        return WP_ERR_LIMIT;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    if (olen)
        *olen = o;
    return 0;
}

static int wp_b64_val(int url, char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

static int wp_b64_decode(int url, const char *s, size_t slen, uint8_t *out, size_t cap,
                         size_t *olen)
{
    size_t data = slen;
    if (!url) {
        if (slen % 4 != 0)
            return WP_ERR_MALFORMED;
        if (data > 0 && s[data - 1] == '=')
            data--;
        if (data > 0 && s[data - 1] == '=')
            data--;
        /* padding must complete the last quantum exactly */
        if ((slen - data) != (4 - data % 4) % 4)
            return WP_ERR_MALFORMED;
    }
    size_t rem = data % 4;
    if (rem == 1)
        return WP_ERR_MALFORMED;
    size_t nout = data / 4 * 3 + (rem ? rem - 1 : 0);
    for (size_t i = 0; i < data; i++)
        if (wp_b64_val(url, s[i]) < 0)
            return WP_ERR_MALFORMED;
    /* non-canonical encodings (stray low bits in the last character) are refused */
    if (rem == 2 && (wp_b64_val(url, s[data - 1]) & 15) != 0)
        return WP_ERR_MALFORMED;
    if (rem == 3 && (wp_b64_val(url, s[data - 1]) & 3) != 0)
        return WP_ERR_MALFORMED;
    if (cap < nout)
        return WP_ERR_LIMIT;
    size_t o = 0, i = 0;
    for (; i + 4 <= data; i += 4) {
        uint32_t v = (uint32_t)wp_b64_val(url, s[i]) << 18 |
                     (uint32_t)wp_b64_val(url, s[i + 1]) << 12 |
                     (uint32_t)wp_b64_val(url, s[i + 2]) << 6 | (uint32_t)wp_b64_val(url, s[i + 3]);
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    if (rem >= 2) {
        uint32_t v = (uint32_t)wp_b64_val(url, s[i]) << 18 | (uint32_t)wp_b64_val(url, s[i + 1])
                                                                 << 12;
        if (rem == 3)
            v |= (uint32_t)wp_b64_val(url, s[i + 2]) << 6;
        out[o++] = (uint8_t)(v >> 16);
        if (rem == 3)
            out[o++] = (uint8_t)(v >> 8);
    }
    if (olen)
        *olen = o;
    return 0;
}

int wp_base64_encode(const void *p, size_t n, char *out, size_t cap, size_t *olen)
{
    return wp_b64_encode(wp_b64_std, 1, p, n, out, cap, olen);
}

int wp_base64_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *olen)
{
    return wp_b64_decode(0, s, slen, out, cap, olen);
}

int wp_base64url_encode(const void *p, size_t n, char *out, size_t cap, size_t *olen)
{
    return wp_b64_encode(wp_b64_url, 0, p, n, out, cap, olen);
}

int wp_base64url_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *olen)
{
    return wp_b64_decode(1, s, slen, out, cap, olen);
}

void wp_secure_zero(void *p, size_t n)
{
    if (p && n)
        mbedtls_platform_zeroize(p, n);
}
