/*
 * version.c — accessors for the generated wp_version.h (see version.h).
 */
#include "version.h"

#include <stdio.h>

#include "wp_version.h"

const char *wp_version(void)
{
    return WP_VERSION;
}

const char *wp_git_commit(void)
{
#if WP_GIT_DIRTY
    return WP_GIT_COMMIT "-dirty";
#else
    return WP_GIT_COMMIT;
#endif
}

const char *wp_build_time(void)
{
    return WP_BUILD_TIME;
}

void wp_version_print(const char *prog)
{
    printf("%s %s (commit %s, built %s)\n", prog, wp_version(), wp_git_commit(), wp_build_time());
}
