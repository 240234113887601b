/*
 * err.h — wolfpack's one error convention.
 *
 * Every fallible function in wolfpack returns 0 (or a non-negative count) on
 * success and a negative WP_ERR_* code on failure. wp_strerror() maps a code to
 * a short, stable, human-readable string. Codes never carry secrets.
 */
#ifndef WP_ERR_H
#define WP_ERR_H

enum wp_err {
    WP_OK = 0,
    WP_ERR_NOMEM = -1,        /* allocation failed */
    WP_ERR_INVAL = -2,        /* invalid argument */
    WP_ERR_NEED_MORE = -3,    /* input is a valid prefix; more bytes are needed */
    WP_ERR_MALFORMED = -4,    /* input can never become valid */
    WP_ERR_LIMIT = -5,        /* a configured size/count limit would be exceeded */
    WP_ERR_IO = -6,           /* I/O error (see errno / libuv code in logs) */
    WP_ERR_TIMEOUT = -7,      /* deadline passed */
    WP_ERR_CLOSED = -8,       /* peer or object closed */
    WP_ERR_TLS = -9,          /* TLS failure (handshake, alert, bad record) */
    WP_ERR_VERIFY = -10,      /* peer certificate / pin verification failed */
    WP_ERR_NOT_FOUND = -11,   /* no such object / file / route */
    WP_ERR_EXISTS = -12,      /* already exists */
    WP_ERR_PERM = -13,        /* permission denied / unauthorized */
    WP_ERR_PROTO = -14,       /* peer violated the protocol */
    WP_ERR_BUSY = -15,        /* resource busy, try later (e.g. handshake limit) */
    WP_ERR_UNSUPPORTED = -16, /* feature or value not supported */
    WP_ERR_CRYPTO = -17,      /* crypto library failure (RNG, hash, keygen) */
    WP_ERR_CONFIG = -18,      /* invalid configuration */
    WP_ERR_STATE = -19,       /* call not valid in the object's current state */
    WP_ERR_INTERNAL = -20,    /* bug: an invariant did not hold */
    WP_ERR_MIN_ = -21         /* sentinel: one below the last valid code */
};

/* Returns a static string for a WP_ERR_* code (or "unknown error" for others). Never NULL. */
const char *wp_strerror(int err);

/* Returns the symbolic name ("WP_ERR_LIMIT") of a code, or "WP_ERR_UNKNOWN". Never NULL. */
const char *wp_errname(int err);

#endif
