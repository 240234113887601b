/*
 * rlimit.h — process resource limits the daemons raise at start.
 */
#ifndef WP_RLIMIT_H
#define WP_RLIMIT_H

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit (connection and stream caps
 * assume thousands of descriptors; many systems default the soft limit to
 * 1024). Returns the soft limit in force afterwards, or -1 when unknown.
 */
long wp_rlimit_raise_nofile(void);

#endif
