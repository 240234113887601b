/*
 * crypto.h — small crypto helpers shared by all wolfpack binaries: a
 * process-wide CSPRNG (mbedTLS CTR_DRBG), API token generation, SHA-256,
 * constant-time comparison, hex and base64 / base64url codecs, secure zeroing.
 *
 * Encoders write a NUL-terminated string and need cap >= encoded length + 1.
 * Decoders are strict: no whitespace, no non-canonical trailing bits; they do
 * not NUL-terminate. All return 0 on success, WP_ERR_LIMIT when `cap` is too
 * small (nothing useful written), WP_ERR_MALFORMED for invalid input, or
 * WP_ERR_CRYPTO when the crypto library fails.
 */
#ifndef WP_CRYPTO_H
#define WP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/* Length of the random part of a token: 32 bytes base64url without padding. */
#define WP_TOKEN_RANDOM_LEN 43
/* Longest accepted token prefix. */
#define WP_TOKEN_PREFIX_MAX 16

/*
 * Fills out with n cryptographically secure random bytes. Thread-safe; seeds
 * lazily and reseeds in a forked child. Returns 0 or WP_ERR_CRYPTO.
 */
int wp_random_bytes(void *out, size_t n);

/*
 * Writes "<prefix>_<43 base64url chars>" (32 random bytes), or just the 43
 * characters when prefix is NULL or "". prefix must be 1..WP_TOKEN_PREFIX_MAX
 * characters of [A-Za-z0-9]. Returns 0, WP_ERR_INVAL (bad prefix), WP_ERR_LIMIT
 * (cap too small) or WP_ERR_CRYPTO.
 */
int wp_token_generate(const char *prefix, char *out, size_t cap);

/* SHA-256 of p[0..n) into out. Cannot fail. */
void wp_sha256(const void *p, size_t n, uint8_t out[32]);
/* SHA-256 as 64 lowercase hex characters plus NUL. Returns 0. */
int wp_sha256_hex(const void *p, size_t n, char out[65]);

/* Constant-time comparison of n bytes: 1 if equal, 0 if not. */
int wp_ct_equal(const void *a, const void *b, size_t n);
/*
 * Compares two NUL-terminated strings in time independent of their content
 * (only a length difference may be observable): 1 if equal, 0 if not (or NULL).
 */
int wp_ct_streq(const char *a, const char *b);

/* Lowercase hex of p[0..n); needs cap >= 2n + 1. Returns 0 or WP_ERR_LIMIT. */
int wp_hex_encode(const void *p, size_t n, char *out, size_t cap);
/*
 * Decodes slen hex characters (either case) into out; *olen (may be NULL) gets
 * slen / 2. Returns 0, WP_ERR_MALFORMED (odd length, non-hex) or WP_ERR_LIMIT.
 */
/* Value of one hex digit (either case), or -1. */
int wp_hex_digit(char c);
int wp_hex_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *olen);

/* Encoded length of n bytes (without NUL); SIZE_MAX if it would overflow. */
size_t wp_base64_encoded_len(size_t n);
size_t wp_base64url_encoded_len(size_t n);

/*
 * Standard base64 (RFC 4648 §4, with '=' padding) / base64url (§5, no padding).
 * Encoders: *olen (may be NULL) gets the string length. Returns 0 or WP_ERR_LIMIT.
 * Decoders: *olen (may be NULL) gets the byte count. Returns 0, WP_ERR_MALFORMED
 * (bad character, bad padding or length, non-zero trailing bits) or WP_ERR_LIMIT.
 */
int wp_base64_encode(const void *p, size_t n, char *out, size_t cap, size_t *olen);
int wp_base64_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *olen);
int wp_base64url_encode(const void *p, size_t n, char *out, size_t cap, size_t *olen);
int wp_base64url_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *olen);

/* Zeroes n bytes in a way the compiler cannot optimize out. */
void wp_secure_zero(void *p, size_t n);

#endif
