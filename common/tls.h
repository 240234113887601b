/*
 * tls.h — TLS through memory buffers (the h2o pattern), with one of two backends
 * chosen at configure time (cmake -DWP_TLS_BACKEND=openssl|mbedtls):
 *   - tls_openssl.c (default): OpenSSL 3. Ciphertext in through a memory BIO,
 *     out through a sink BIO that appends to the out-buffer. TLS 1.2 and 1.3;
 *     its AES-GCM (AES-NI) is ~20x faster than mbedTLS 2.28's on x86-64, and
 *     wolfpackd decrypts and re-encrypts every tunnel byte;
 *   - tls_mbedtls.c: mbedTLS 2.28 / 3.x with BIO callbacks; TLS 1.2 only (2.28).
 * tls_pin.c (pins, both backends) and cert.c/crypto.c always use mbedTLS; the
 * PEM files are the same either way. Both backends give the same results,
 * return codes and error reasons; only the names wp_tls_version() and
 * wp_tls_ciphersuite() return are each library's own.
 *
 * A wp_tls is one TLS session that never touches a socket. The owner feeds
 * ciphertext read from the network with wp_tls_feed(), drives the session
 * with wp_tls_handshake()/wp_tls_read()/wp_tls_write(), and after every call
 * drains the ciphertext to send from wp_tls_out() (then wp_buf_consume()s
 * what it wrote). The library's output always goes into that out-buffer
 * (bounded; overflow is an error, never WANT_WRITE). The owner may also take
 * the out-buffer's storage whole (swap it with an empty wp_buf of its own).
 *
 * A wp_tls_conf holds the library's config (SSL_CTX / mbedtls_ssl_config)
 * with its certificates, key and trust store. It is reference counted: each
 * session holds a reference, so a server can swap in a reloaded conf (SIGHUP)
 * while old sessions finish on the old one.
 *
 * Policy (both sides): TLS 1.2 minimum (1.3 with OpenSSL), AEAD cipher suites
 * only (ECDHE with AES-GCM / ChaCha20-Poly1305; TLS 1.3's AES-GCM /
 * ChaCha20-Poly1305), renegotiation disabled, no session resumption. OpenSSL
 * prefers AES-GCM; mbedTLS 2.28 ChaCha20 (its faster AEAD).
 *
 * Client verification is always on unless insecure_skip_verify is set:
 *   - pin set: the pin is the trust anchor (like kubeadm's
 *     --discovery-token-ca-cert-hash). It matches when it is the SHA-256 of the
 *     leaf certificate's SubjectPublicKeyInfo, or of a certificate further up
 *     the presented chain (e.g. the CA) AND the leaf verifies up to that
 *     certificate (signatures, validity, CA constraints). Presenting a copy of
 *     the pinned CA next to an unrelated leaf does not match. Host names and
 *     the system trust store are not consulted;
 *   - otherwise: chain to ca_file (or the system CA bundle) and hostname.
 */
#ifndef WP_TLS_H
#define WP_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define WP_TLS_OUT_MAX (256 * 1024) /* max ciphertext queued in a session's out-buffer */
#define WP_TLS_IN_MAX  (64 * 1024)  /* max ciphertext fed but not yet consumed */
#define WP_SHA256_LEN  32

typedef struct wp_tls_conf wp_tls_conf;
typedef struct wp_tls wp_tls;

typedef struct wp_tls_client_opts {
    const char *ca_file;      /* PEM bundle; NULL = system CAs */
    const uint8_t *pin;       /* WP_SHA256_LEN bytes, or NULL */
    int insecure_skip_verify; /* nonzero: no verification at all (caller warns loudly) */
} wp_tls_client_opts;

/*
 * Server conf from PEM files. Returns 0 or a WP_ERR_* (WP_ERR_IO unreadable file,
 * WP_ERR_TLS bad cert/key or mismatch). On failure *out is untouched; `err`
 * (if not NULL, cap bytes) receives a one-line reason without secrets.
 */
int wp_tls_conf_server_new(wp_tls_conf **out, const char *cert_file, const char *key_file,
                           char *err, size_t cap);
/* Client conf. Same return contract. */
int wp_tls_conf_client_new(wp_tls_conf **out, const wp_tls_client_opts *opts, char *err,
                           size_t cap);
void wp_tls_conf_ref(wp_tls_conf *c);
void wp_tls_conf_unref(wp_tls_conf *c); /* frees on last reference */

/*
 * New session on conf (takes a reference). For clients, server_name is used for
 * SNI and hostname verification (may be NULL with a pin). 0 or WP_ERR_NOMEM/WP_ERR_TLS.
 */
int wp_tls_new(wp_tls **out, wp_tls_conf *conf, const char *server_name);
void wp_tls_free(wp_tls *t); /* zeroes key material, drops the conf reference */

/* Appends received ciphertext. 0 or WP_ERR_LIMIT (more than WP_TLS_IN_MAX unconsumed). */
int wp_tls_feed(wp_tls *t, const uint8_t *data, size_t len);

/*
 * Advances the handshake. Returns 0 when complete, WP_ERR_NEED_MORE when it
 * needs more input (flush wp_tls_out() first), WP_ERR_VERIFY when peer
 * verification failed, WP_ERR_TLS on any other failure.
 */
int wp_tls_handshake(wp_tls *t);
int wp_tls_handshake_done(const wp_tls *t);

/*
 * Decrypts up to cap bytes of application data. Returns >0 bytes, WP_ERR_NEED_MORE
 * (no complete record buffered), WP_ERR_CLOSED (peer sent close_notify), or
 * WP_ERR_TLS. Call in a loop until it returns <= 0.
 */
int wp_tls_read(wp_tls *t, uint8_t *out, size_t cap);

/*
 * Encrypts len bytes into the out-buffer. Returns 0 (all consumed) or
 * WP_ERR_LIMIT (out-buffer full: drain it first; nothing partial is lost, the
 * call consumed nothing) or WP_ERR_TLS/WP_ERR_STATE (handshake not done).
 */
int wp_tls_write(wp_tls *t, const uint8_t *data, size_t len);

/* Queues a close_notify alert into the out-buffer. 0 or WP_ERR_TLS. */
int wp_tls_close_notify(wp_tls *t);

/* Ciphertext waiting to be sent. Caller writes it and wp_buf_consume()s. */
wp_buf *wp_tls_out(wp_tls *t);

/* Negotiated protocol and cipher suite names after the handshake ("" before). */
const char *wp_tls_version(const wp_tls *t);
const char *wp_tls_ciphersuite(const wp_tls *t);
/* One-line description of the last error (no secrets), "" if none. */
const char *wp_tls_last_error(const wp_tls *t);

/* Parses "sha256:<64 hex>" (case-insensitive hex). 0 or WP_ERR_INVAL. */
int wp_tls_pin_parse(const char *s, uint8_t pin[WP_SHA256_LEN]);
/* Formats "sha256:<hex>" into out (cap >= 72). */
void wp_tls_pin_format(const uint8_t pin[WP_SHA256_LEN], char *out, size_t cap);
/* SHA-256 of the SubjectPublicKeyInfo of the first certificate in a PEM file. */
int wp_tls_pin_from_cert_file(const char *cert_file, uint8_t pin[WP_SHA256_LEN]);

#endif
