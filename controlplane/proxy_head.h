/*
 * proxy_head.h — the upstream response head the proxy (proxy.c) collects
 * while llhttp parses what a node's service sends: header names and values
 * gathered from llhttp's callbacks into one bounded arena, then read back by
 * name or in order. Pure (no I/O, no loop), so a fuzz target and unit tests
 * drive it with llhttp directly (tests/fuzz/fuzz_proxy_head.c).
 *
 * Bounds: at most CP_PROXY_RHDR_COUNT headers and CP_PROXY_RHDR_MAX arena
 * bytes (names + values + one NUL each); empty names and values with NUL,
 * CR or LF are refused. Every failing call stores a static reason in err (first one kept).
 */
#ifndef CP_PROXY_HEAD_H
#define CP_PROXY_HEAD_H

#include <stddef.h>

#include "buf.h"

#define CP_PROXY_RHDR_MAX   (16u * 1024u) /* upstream response header arena */
#define CP_PROXY_RHDR_COUNT 100

typedef struct cp_proxy_head {
    wp_buf hdr;      /* name\0value\0name\0value\0... */
    size_t count;    /* headers begun */
    int in_field;    /* inside a header name (llhttp may split it) */
    const char *err; /* why a call failed, static text; NULL if none did */
} cp_proxy_head;

/* Prepares an empty head. Never fails. */
void cp_proxy_head_init(cp_proxy_head *h);

/* Frees the arena; h may be initialized again. */
void cp_proxy_head_free(cp_proxy_head *h);

/* A new response begins (llhttp on_message_begin): forgets the headers (not err). */
void cp_proxy_head_reset(cp_proxy_head *h);

/*
 * llhttp's header callbacks, in the order llhttp calls them: field (one or more
 * pieces of a name), field_done, value (zero or more pieces), value_done.
 * Each returns 0, or WP_ERR_LIMIT (too many headers, arena full) or
 * WP_ERR_MALFORMED (empty name, value with NUL/CR/LF), with err set.
 */
int cp_proxy_head_field(cp_proxy_head *h, const char *at, size_t n);
int cp_proxy_head_field_done(cp_proxy_head *h);
int cp_proxy_head_value(cp_proxy_head *h, const char *at, size_t n);
int cp_proxy_head_value_done(cp_proxy_head *h);

/*
 * Iterates the complete headers in arrival order: start with *off = 0; returns
 * the next name (NUL-terminated) with its value in *v, or NULL at the end. A
 * header whose value is not complete yet is never returned.
 */
const char *cp_proxy_head_next(const cp_proxy_head *h, size_t *off, const char **v);

/* The value of the first header named name (case-insensitive), or NULL. */
const char *cp_proxy_head_get(const cp_proxy_head *h, const char *name);

#endif
