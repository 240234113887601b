/*
 * err.c — strings for the WP_ERR_* codes declared in err.h.
 */
#include <stddef.h>

#include "err.h"

struct wp_err_desc {
    const char *name;
    const char *text;
};

static const struct wp_err_desc wp_err_table[] = {
    [0] = {"WP_OK", "success"},
    [1] = {"WP_ERR_NOMEM", "out of memory"},
    [2] = {"WP_ERR_INVAL", "invalid argument"},
    [3] = {"WP_ERR_NEED_MORE", "more input needed"},
    [4] = {"WP_ERR_MALFORMED", "malformed input"},
    [5] = {"WP_ERR_LIMIT", "limit exceeded"},
    [6] = {"WP_ERR_IO", "i/o error"},
    [7] = {"WP_ERR_TIMEOUT", "timed out"},
    [8] = {"WP_ERR_CLOSED", "closed"},
    [9] = {"WP_ERR_TLS", "tls error"},
    [10] = {"WP_ERR_VERIFY", "peer verification failed"},
    [11] = {"WP_ERR_NOT_FOUND", "not found"},
    [12] = {"WP_ERR_EXISTS", "already exists"},
    [13] = {"WP_ERR_PERM", "permission denied"},
    [14] = {"WP_ERR_PROTO", "protocol error"},
    [15] = {"WP_ERR_BUSY", "busy"},
    [16] = {"WP_ERR_UNSUPPORTED", "not supported"},
    [17] = {"WP_ERR_CRYPTO", "crypto failure"},
    [18] = {"WP_ERR_CONFIG", "invalid configuration"},
    [19] = {"WP_ERR_STATE", "invalid state"},
    [20] = {"WP_ERR_INTERNAL", "internal error"},
};

static const struct wp_err_desc *wp_err_lookup(int err)
{
    if (err > 0 || err <= WP_ERR_MIN_)
        return NULL;
    return &wp_err_table[-err];
}

const char *wp_strerror(int err)
{
    const struct wp_err_desc *d = wp_err_lookup(err);
    return d ? d->text : "unknown error";
}

const char *wp_errname(int err)
{
    const struct wp_err_desc *d = wp_err_lookup(err);
    return d ? d->name : "WP_ERR_UNKNOWN";
}
