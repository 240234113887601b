/*
 * opts.c — table-driven parsing of flags and WOLFPACK_* env vars (see opts.h).
 */
#include "opts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "log.h"

static const wp_opt *opts_find_long(const wp_opt *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

static const wp_opt *opts_find_short(const wp_opt *opts, size_t n, char c)
{
    for (size_t i = 0; i < n; i++) {
        if (opts[i].short_name && opts[i].short_name == c)
            return &opts[i];
    }
    return NULL;
}

const char *wp_opts_getenv(const char *name)
{
    return getenv(name);
}

int wp_opts_parse_bool(const char *s, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return WP_ERR_INVAL;
}

static int opts_list_add(wp_strlist *l, const char *v)
{
    if (l->n >= WP_STRLIST_MAX)
        return WP_ERR_LIMIT;
    l->items[l->n++] = v;
    return 0;
}

/* Stores one value. `what` names the source for messages ("--listen" or "WOLFPACK_LISTEN"). */
static int opts_set(const wp_opt *o, const char *v, int from_env, const char *what, char *err,
                    size_t cap)
{
    switch (o->type) {
    case WP_OPT_STRING:
        if (*v == '\0') {
            snprintf(err, cap, "%s: empty value", what);
            return WP_ERR_INVAL;
        }
        *(const char **)o->dst = v;
        return 0;
    case WP_OPT_BOOL: {
        int b;
        if (wp_opts_parse_bool(v, &b) != 0) {
            snprintf(err, cap, "%s: expected true or false", what);
            return WP_ERR_INVAL;
        }
        *(int *)o->dst = b;
        return 0;
    }
    case WP_OPT_INT: {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0') {
            snprintf(err, cap, "%s: not a number", what);
            return WP_ERR_INVAL;
        }
        if ((o->min || o->max) && (x < o->min || x > o->max)) {
            snprintf(err, cap, "%s: must be between %lld and %lld", what, o->min, o->max);
            return WP_ERR_INVAL;
        }
        *(long long *)o->dst = x;
        return 0;
    }
    case WP_OPT_LIST: {
        wp_strlist *l = o->dst;
        if (!from_env) {
            if (*v == '\0') {
                snprintf(err, cap, "%s: empty value", what);
                return WP_ERR_INVAL;
            }
            if (opts_list_add(l, v) != 0) {
                snprintf(err, cap, "%s: given more than %d times", what, WP_STRLIST_MAX);
                return WP_ERR_INVAL;
            }
            return 0;
        }
        free(l->env_copy);
        l->env_copy = strdup(v);
        if (!l->env_copy) {
            snprintf(err, cap, "%s: out of memory", what);
            return WP_ERR_NOMEM;
        }
        char *save = NULL;
        for (char *tok = strtok_r(l->env_copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            if (*tok == '\0')
                continue;
            if (opts_list_add(l, tok) != 0) {
                snprintf(err, cap, "%s: more than %d items", what, WP_STRLIST_MAX);
                return WP_ERR_INVAL;
            }
        }
        return 0;
    }
    default:
        snprintf(err, cap, "%s: bad option table", what);
        return WP_ERR_INTERNAL;
    }
}

int wp_opts_parse(const wp_opt *opts, size_t n, int argc, char **argv, int first,
                  wp_opts_getenv_fn getenv_fn, const char **positional, size_t max_positional,
                  size_t *npositional, char *err, size_t cap)
{
    unsigned char seen[256] = {0};
    size_t npos = 0;
    int rc;
    if (n > sizeof(seen))
        return WP_ERR_INVAL;
    err[0] = '\0';

    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const wp_opt *o = NULL;
        const char *val = NULL;
        char what[96];

        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (npos >= max_positional) {
                    snprintf(err, cap, "unexpected argument");
                    return WP_ERR_INVAL;
                }
                positional[npos++] = argv[i];
            }
            break;
        }
        if (a[0] == '-' && a[1] == '-' && a[2] != '\0') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            o = opts_find_long(opts, n, name, len);
            if (!o) {
                snprintf(err, cap, "unknown flag --%.*s (see --help)", (int)(len > 64 ? 64 : len),
                         name);
                return WP_ERR_INVAL;
            }
            if (eq)
                val = eq + 1;
        } else if (a[0] == '-' && a[1] != '\0' && a[1] != '-') {
            o = opts_find_short(opts, n, a[1]);
            if (!o || a[2] != '\0') {
                snprintf(err, cap, "unknown flag -%c (see --help)", a[1]);
                return WP_ERR_INVAL;
            }
        } else {
            if (npos >= max_positional) {
                snprintf(err, cap, "unexpected argument '%.64s' (see --help)", a);
                return WP_ERR_INVAL;
            }
            positional[npos++] = a;
            continue;
        }
        snprintf(what, sizeof(what), "--%s", o->name);
        if (!val) {
            if (o->type == WP_OPT_BOOL) {
                val = "true";
            } else {
                if (i + 1 >= argc) {
                    snprintf(err, cap, "%s needs a value", what);
                    return WP_ERR_INVAL;
                }
                val = argv[++i];
            }
        }
        rc = opts_set(o, val, 0, what, err, cap);
        if (rc != 0)
            return rc;
        seen[o - opts] = 1;
    }

    for (size_t k = 0; k < n && getenv_fn; k++) {
        const wp_opt *o = &opts[k];
        if (seen[k] || !o->env)
            continue;
        const char *v = getenv_fn(o->env);
        if (!v)
            continue;
        rc = opts_set(o, v, 1, o->env, err, cap);
        if (rc != 0)
            return rc;
    }
    *npositional = npos;
    return 0;
}

void wp_opts_usage(FILE *out, const wp_opt *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const wp_opt *o = &opts[i];
        char left[80];
        if (o->short_name)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name, o->name,
                     o->metavar ? " " : "", o->metavar ? o->metavar : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", o->name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        fprintf(out, "  %-30s %s", left, o->help ? o->help : "");
        if (o->def)
            fprintf(out, " (default: %s)", o->def);
        if (o->type == WP_OPT_LIST)
            fprintf(out, " [repeatable]");
        if (o->env)
            fprintf(out, " [env: %s]", o->env);
        fputc('\n', out);
    }
}

void wp_strlist_free(wp_strlist *l)
{
    free(l->env_copy);
    memset(l, 0, sizeof(*l));
}

int wp_opts_log_apply(const char *format_raw, const char *level_raw, int *format, int *level,
                      char *err, size_t cap)
{
    if (format_raw && wp_log_format_parse(format_raw, format) != 0) {
        snprintf(err, cap, "--log-format: expected logfmt or json");
        return WP_ERR_INVAL;
    }
    if (level_raw && wp_log_level_parse(level_raw, level) != 0) {
        snprintf(err, cap, "--log-level: expected debug, info, warn or error");
        return WP_ERR_INVAL;
    }
    return 0;
}
