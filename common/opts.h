/*
 * opts.h — command-line flags and WOLFPACK_* environment variables, one table for both.
 *
 * Each binary describes its options once (name, env var, type, default, help);
 * wp_opts_parse() fills the caller's variables from argv and then, for options
 * not given on the command line, from the environment (flags beat env, env
 * beats defaults). wp_opts_usage() prints the option reference for --help from
 * the same table, so the help text can never drift from what is parsed.
 * Pure: no I/O besides reading the environment through a caller-given getter.
 */
#ifndef WP_OPTS_H
#define WP_OPTS_H

#include <stddef.h>
#include <stdio.h>

enum wp_opt_type {
    WP_OPT_STRING, /* dst: const char ** (points into argv / environ; not copied) */
    WP_OPT_BOOL,   /* dst: int * ; "--x", "--x=true|false|1|0|yes|no|on|off" */
    WP_OPT_INT,    /* dst: long long * ; checked against [min, max] */
    WP_OPT_LIST    /* dst: wp_strlist * ; repeatable; env value is comma-separated */
};

#define WP_STRLIST_MAX 32

typedef struct wp_strlist {
    const char *items[WP_STRLIST_MAX];
    size_t n;
    char *env_copy; /* owned copy of a comma-separated env value (freed by wp_strlist_free) */
} wp_strlist;

typedef struct wp_opt {
    const char *name;    /* long flag without dashes: "listen" */
    char short_name;     /* 'l', or 0 */
    int type;            /* enum wp_opt_type */
    void *dst;           /* where the value goes (see enum) */
    const char *env;     /* "WOLFPACK_LISTEN", or NULL */
    const char *metavar; /* "ADDR" shown in help */
    const char *help;    /* one line */
    const char *def;     /* default shown in help (the caller initializes dst itself) */
    long long min, max;  /* WP_OPT_INT range */
} wp_opt;

/* Reads an environment variable; NULL if unset. */
typedef const char *(*wp_opts_getenv_fn)(const char *name);

/* getenv() with the wp_opts_getenv_fn signature. */
const char *wp_opts_getenv(const char *name);

/*
 * Parses argv[first..argc) then the environment. Non-option arguments (and
 * everything after "--") are collected in order into positional[] (at most
 * max_positional; more -> error). On error returns WP_ERR_INVAL with a one-line
 * message in err (e.g. `unknown flag --lisen`, `--max-sessions: not a number: x`,
 * `WOLFPACK_LISTEN: empty value`); values that may be secret are never echoed.
 * On success returns 0 and sets *npositional.
 */
int wp_opts_parse(const wp_opt *opts, size_t n, int argc, char **argv, int first,
                  wp_opts_getenv_fn getenv_fn, const char **positional, size_t max_positional,
                  size_t *npositional, char *err, size_t cap);

/* Prints "  -l, --listen ADDR   help (default: x) [env: WOLFPACK_LISTEN]" lines. */
void wp_opts_usage(FILE *out, const wp_opt *opts, size_t n);

/* Frees what parsing allocated for a list. */
void wp_strlist_free(wp_strlist *l);

/* Parses a boolean word; 0 or WP_ERR_INVAL. */
int wp_opts_parse_bool(const char *s, int *out);

/*
 * The --log-format / --log-level rows every binary shares: expand inside a
 * wp_opt table with the addresses of two `const char *` that receive the raw
 * words, then turn them into log.h values with wp_opts_log_apply().
 */
#define WP_OPTS_LOG_ROWS(format_raw, level_raw)                                                    \
    {"log-format",                                                                                 \
     0,                                                                                            \
     WP_OPT_STRING,                                                                                \
     (format_raw),                                                                                 \
     "WOLFPACK_LOG_FORMAT",                                                                        \
     "FMT",                                                                                        \
     "logfmt or json",                                                                             \
     "logfmt",                                                                                     \
     0,                                                                                            \
     0},                                                                                           \
    {                                                                                              \
        "log-level", 0, WP_OPT_STRING, (level_raw), "WOLFPACK_LOG_LEVEL", "LEVEL",                 \
            "debug, info, warn or error", "info", 0, 0                                             \
    }

/*
 * Parses the raw --log-format / --log-level words (NULL = keep *format /
 * *level). 0, or WP_ERR_INVAL with a one-line message in err.
 */
int wp_opts_log_apply(const char *format_raw, const char *level_raw, int *format, int *level,
                      char *err, size_t cap);

#endif
