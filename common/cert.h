/*
 * cert.h — first-run certificate generation with mbedTLS x509write.
 *
 * wp_cert_ensure() makes sure a state directory holds a self-signed CA and a
 * server certificate signed by it, generating what is missing:
 *   <dir>/ca.crt, <dir>/ca.key        (ECDSA P-256 CA, 10 years, key 0600)
 *   <dir>/server.crt, <dir>/server.key (ECDSA P-256, 825 days, key 0600,
 *                                       SANs: localhost, 127.0.0.1, ::1, the
 *                                       host name, and any extra names given)
 * Files are written to a temporary name and renamed, so a crash never leaves
 * a half-written key. Existing files are left alone.
 */
#ifndef WP_CERT_H
#define WP_CERT_H

#include <stddef.h>

typedef struct wp_cert_paths {
    char ca_crt[4096];
    char ca_key[4096];
    char server_crt[4096];
    char server_key[4096];
} wp_cert_paths;

/*
 * Ensures the files above exist in dir (which must exist). extra_sans is an
 * optional NULL-terminated list of DNS names or IP literals. *generated is set
 * to 1 if anything was created. Returns 0 or WP_ERR_IO / WP_ERR_CRYPTO / WP_ERR_INVAL;
 * err (cap bytes) receives a one-line reason.
 */
int wp_cert_ensure(const char *dir, const char *const *extra_sans, wp_cert_paths *paths,
                   int *generated, char *err, size_t cap);

#endif
