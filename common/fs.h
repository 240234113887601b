/*
 * fs.h — small filesystem helpers shared by the binaries (state directories).
 */
#ifndef WP_FS_H
#define WP_FS_H

#include <sys/types.h>

/*
 * Creates path and its missing parents with mode (like mkdir -p); existing
 * directories are left as they are. Returns 0, WP_ERR_INVAL (empty or longer
 * than 4095 bytes) or WP_ERR_IO (errno tells why).
 */
int wp_mkdir_p(const char *path, mode_t mode);

#endif
