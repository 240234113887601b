/*
 * tls_internal.h — what the two TLS backends of common/tls.h (tls_openssl.c,
 * tls_mbedtls.c) share; not part of the public API. tls_common.c holds the
 * backend-neutral policy (argument and state checks, the out-buffer room
 * rule, error reasons worded as PROTOCOL.md §2.1 names them, the system CA
 * bundle list); tls_pin.c the mbedTLS certificate helpers (SPKI hash, file
 * error mapping) that the mbedTLS backend uses too.
 *
 * Each backend's struct wp_tls_conf starts with a wp_tls_conf_base and its
 * struct wp_tls with a wp_tls_base (first member, named b), so the common
 * accessors work on either.
 */
#ifndef WP_TLS_INTERNAL_H
#define WP_TLS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "tls.h"

#define WP_TLS_RECORD_OVERHEAD 64    /* header + explicit IV / inner type + AEAD tag, generously */
#define WP_TLS_RECORD_MAX      16384 /* TLS plaintext record limit */
#define WP_TLS_ERR_MAX         200
#define WP_TLS_NAME_MAX        255

/* System CA bundles, tried in this order when a client has no ca_file and no pin. */
extern const char *const wp_tls_system_bundles[];
extern const size_t wp_tls_system_bundle_count;

/* Verification failure classes; the reason names the first one set in this order. */
enum {
    WP_TLS_VF_EXPIRED = 1 << 0,
    WP_TLS_VF_FUTURE = 1 << 1,
    WP_TLS_VF_UNTRUSTED = 1 << 2,
    WP_TLS_VF_NAME = 1 << 3,
    WP_TLS_VF_OTHER = 1 << 4,
};

/* How a client conf verifies the server (from wp_tls_client_opts). */
enum { WP_TLS_VERIFY_INSECURE, WP_TLS_VERIFY_PIN, WP_TLS_VERIFY_CA };

typedef struct wp_tls_conf_base {
    int refs; /* loop-thread only: no atomics */
    int is_server;
    int has_pin;
    uint8_t pin[WP_SHA256_LEN];
    int insecure;
} wp_tls_conf_base;

typedef struct wp_tls_base {
    wp_tls_conf *conf; /* holds a reference */
    wp_buf out;        /* ciphertext to send, bounded by WP_TLS_OUT_MAX */
    int hs_done;
    int failed;       /* sticky WP_ERR_* after a fatal error, 0 otherwise */
    int out_overflow; /* the backend's output hook found the out-buffer full */
    int pin_matched;  /* pin mode: the presented chain matched */
    int pin_mismatch; /* pin mode: the verify callback rejected the chain */
    int peer_closed;  /* close_notify received */
    char last_error[WP_TLS_ERR_MAX];
} wp_tls_base;

/* "what: detail" (or "what" when detail is NULL/empty) into err (cap bytes; NULL = none). */
void wp_tls_errf(char *err, size_t cap, const char *what, const char *detail);
/* "what path: detail" into err, the same way. */
void wp_tls_errf_file(char *err, size_t cap, const char *what, const char *path,
                      const char *detail);

/*
 * Start of each conf constructor: clears err, then returns 0 when ok is
 * nonzero, else WP_ERR_INVAL with err = missing.
 */
int wp_tls_conf_args(int ok, const char *missing, char *err, size_t cap);

/* Fills b's verification fields from opts. Returns WP_TLS_VERIFY_*. */
int wp_tls_conf_base_client(wp_tls_conf_base *b, const wp_tls_client_opts *opts);

/* 0 when a session on conf may use server_name (NULL allowed), else WP_ERR_INVAL. */
int wp_tls_new_check(const wp_tls_conf *conf, const char *server_name);

/* Initialises a session's base on conf (takes a reference). Cannot fail. */
void wp_tls_base_init(wp_tls_base *b, wp_tls_conf *conf);

/* Constant-time comparison of two SHA-256 pins. Nonzero when equal. */
int wp_tls_pin_eq(const uint8_t *a, const uint8_t *b);

/*
 * When the session failed for a backend-neutral reason (out-buffer overflow,
 * pin mismatch), records it (last_error, sticky failed) and returns the
 * WP_ERR_*; returns 0 otherwise.
 */
int wp_tls_fail_known(wp_tls_base *b);
/*
 * Records a failed certificate verification: last_error "<class> (<info>)"
 * with the class from vflags (WP_TLS_VF_*), sticky WP_ERR_VERIFY. Returns
 * WP_ERR_VERIFY.
 */
int wp_tls_fail_verify(wp_tls_base *b, unsigned vflags, const char *info);

/*
 * wp_tls_read() preconditions: 0 when the backend may read into cap bytes,
 * else what wp_tls_read() returns (sticky error, WP_ERR_CLOSED, WP_ERR_STATE,
 * WP_ERR_INVAL).
 */
int wp_tls_read_check(const wp_tls_base *b, size_t cap);
/*
 * wp_tls_write() preconditions: 1 when len bytes may be encrypted now, 0 when
 * there is nothing to do, else what wp_tls_write() returns (sticky error,
 * WP_ERR_STATE).
 */
int wp_tls_write_ready(const wp_tls_base *b, size_t len);
/*
 * Room rule of wp_tls_write(): 0 when len plaintext bytes in records of at
 * most frag bytes fit the out-buffer now; WP_ERR_INVAL when they never could;
 * WP_ERR_LIMIT when the out-buffer must drain first.
 */
int wp_tls_write_room(const wp_tls_base *b, size_t len, size_t frag);

/* mbedTLS helpers (tls_pin.c): mbedtls_x509_crt is `struct mbedtls_x509_crt` in 2.28 and 3.x. */
struct mbedtls_x509_crt;
/* SHA-256 of one certificate's DER SubjectPublicKeyInfo. 0 or WP_ERR_NOMEM/CRYPTO/TLS. */
int wp_tls_mbed_spki_hash(const struct mbedtls_x509_crt *crt, uint8_t out[WP_SHA256_LEN]);
/* WP_ERR_* for a negative mbedTLS PK/X.509 file-loading error: IO, NOMEM or TLS. */
int wp_tls_mbed_file_err(int ret);

#endif
