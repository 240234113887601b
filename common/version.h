/*
 * version.h — the build's identity (version, git commit, build time), baked in
 * at build time from cmake/wp_version.h.in. Only version.c includes the
 * generated header, so a new commit recompiles one file.
 */
#ifndef WP_VERSION_API_H
#define WP_VERSION_API_H

const char *wp_version(void);    /* "0.1.0" */
const char *wp_git_commit(void); /* 40 hex chars, with "-dirty" if built from a modified tree */
const char *wp_build_time(void); /* RFC 3339 UTC */
/* Prints "<prog> <version> (commit <sha>, built <time>)\n" to stdout. */
void wp_version_print(const char *prog);

#endif
