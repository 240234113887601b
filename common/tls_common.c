/*
 * tls_common.c — the backend-neutral half of common/tls.h, shared by
 * tls_openssl.c and tls_mbedtls.c (see tls_internal.h): argument and state
 * checks, the out-buffer room rule, failure reasons in PROTOCOL.md §2.1's
 * words, the system CA bundle list and the trivial accessors.
 */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "tls_internal.h"

const char *const wp_tls_system_bundles[] = {
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
};
const size_t wp_tls_system_bundle_count =
    sizeof(wp_tls_system_bundles) / sizeof(wp_tls_system_bundles[0]);

/* The conf and session structs start with their base (tls_internal.h). */
static wp_tls_conf_base *wp_tls_conf_b(wp_tls_conf *c)
{
    return (wp_tls_conf_base *)(void *)c;
}

static const wp_tls_base *wp_tls_b(const wp_tls *t)
{
    return (const wp_tls_base *)(const void *)t;
}

void wp_tls_errf(char *err, size_t cap, const char *what, const char *detail)
{
    if (err && cap)
        snprintf(err, cap, "%s%s%s", what, detail && *detail ? ": " : "", detail ? detail : "");
}

void wp_tls_errf_file(char *err, size_t cap, const char *what, const char *path, const char *detail)
{
    if (err && cap)
        snprintf(err, cap, "%s %s%s%s", what, path, detail && *detail ? ": " : "",
                 detail ? detail : "");
}

int wp_tls_conf_args(int ok, const char *missing, char *err, size_t cap)
{
    if (err && cap)
        err[0] = '\0';
    if (ok)
        return 0;
    wp_tls_errf(err, cap, missing, NULL);
    return WP_ERR_INVAL;
}

int wp_tls_conf_base_client(wp_tls_conf_base *b, const wp_tls_client_opts *opts)
{
    if (opts->insecure_skip_verify) {
        b->insecure = 1;
        return WP_TLS_VERIFY_INSECURE;
    }
    if (opts->pin) {
        b->has_pin = 1;
        memcpy(b->pin, opts->pin, WP_SHA256_LEN);
        return WP_TLS_VERIFY_PIN;
    }
    return WP_TLS_VERIFY_CA;
}

void wp_tls_conf_ref(wp_tls_conf *c)
{
    if (c)
        wp_tls_conf_b(c)->refs++;
}

int wp_tls_new_check(const wp_tls_conf *conf, const char *server_name)
{
    const wp_tls_conf_base *c = (const wp_tls_conf_base *)(const void *)conf;
    if (server_name && (!*server_name || strlen(server_name) > WP_TLS_NAME_MAX))
        return WP_ERR_INVAL;
    /* A verifying client without a pin needs a name to check. */
    if (!c->is_server && !c->insecure && !c->has_pin && !server_name)
        return WP_ERR_INVAL;
    return 0;
}

void wp_tls_base_init(wp_tls_base *b, wp_tls_conf *conf)
{
    b->conf = conf;
    wp_tls_conf_ref(conf);
    wp_buf_init(&b->out, WP_TLS_OUT_MAX);
}

int wp_tls_pin_eq(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0;
    for (size_t i = 0; i < WP_SHA256_LEN; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

int wp_tls_fail_known(wp_tls_base *b)
{
    if (b->out_overflow) {
        snprintf(b->last_error, sizeof(b->last_error), "TLS out-buffer full");
        b->failed = WP_ERR_TLS;
    } else if (b->pin_mismatch) {
        snprintf(b->last_error, sizeof(b->last_error), "certificate pin mismatch");
        b->failed = WP_ERR_VERIFY;
    } else {
        return 0;
    }
    return b->failed;
}

int wp_tls_fail_verify(wp_tls_base *b, unsigned vflags, const char *info)
{
    /* PROTOCOL.md §2.1 names the reasons: say those words first. */
    const char *why = (vflags & WP_TLS_VF_EXPIRED)     ? "certificate expired"
                      : (vflags & WP_TLS_VF_FUTURE)    ? "certificate not yet valid"
                      : (vflags & WP_TLS_VF_UNTRUSTED) ? "unknown CA"
                      : (vflags & WP_TLS_VF_NAME)      ? "name mismatch"
                                                       : "verification failed";
    snprintf(b->last_error, sizeof(b->last_error), "%s (%s)", why,
             info && *info ? info : "no details");
    b->failed = WP_ERR_VERIFY;
    return b->failed;
}

int wp_tls_read_check(const wp_tls_base *b, size_t cap)
{
    if (b->failed)
        return b->failed;
    if (b->peer_closed)
        return WP_ERR_CLOSED;
    if (!b->hs_done)
        return WP_ERR_STATE;
    return cap == 0 ? WP_ERR_INVAL : 0;
}

int wp_tls_write_ready(const wp_tls_base *b, size_t len)
{
    if (b->failed)
        return b->failed;
    if (!b->hs_done)
        return WP_ERR_STATE;
    return len > 0;
}

int wp_tls_write_room(const wp_tls_base *b, size_t len, size_t frag)
{
    if (len > WP_TLS_OUT_MAX || frag == 0)
        return WP_ERR_INVAL; /* could never fit, even into an empty out-buffer */
    size_t need = len + (len / frag + 1) * WP_TLS_RECORD_OVERHEAD;
    if (need > WP_TLS_OUT_MAX)
        return WP_ERR_INVAL;
    return wp_buf_room(&b->out) < need ? WP_ERR_LIMIT : 0;
}

int wp_tls_handshake_done(const wp_tls *t)
{
    return wp_tls_b(t)->hs_done;
}

wp_buf *wp_tls_out(wp_tls *t)
{
    return &((wp_tls_base *)(void *)t)->out;
}

const char *wp_tls_last_error(const wp_tls *t)
{
    return wp_tls_b(t)->last_error;
}
