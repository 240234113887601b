/*
 * fs.c — filesystem helpers (see fs.h).
 */
#include "fs.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"

int wp_mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    size_t len = path ? strlen(path) : 0;
    if (len == 0 || len >= sizeof(tmp))
        return WP_ERR_INVAL;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST)
            return WP_ERR_IO;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return WP_ERR_IO;
    return 0;
}
