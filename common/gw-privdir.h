/* SPDX-License-Identifier: MIT */
/*
 * A private directory given by path: absolute and plain (no "//", ".", ".." or trailing "/"),
 * not a symlink, owned by this process's user and writable by no one else. gpu-warmd's VRAM
 * store is one (the daemon makes it ready at start, CRIU's plugin opens it again), so both ends
 * apply the same rules.
 */
#ifndef GW_PRIVDIR_H
#define GW_PRIVDIR_H

#include <stdbool.h>
#include <stddef.h>

#define GW_PRIVDIR_PATH_MAX 511

/* The directory's fd (O_RDONLY, close-on-exec), made with mode 0700 first when create is set
 * and it is missing; or a negative errno with why in err (the path and the cause). */
int gw_privdir_open(const char *path, bool create, char *err, size_t len);

#endif
