/* SPDX-License-Identifier: MIT */
/*
 * Reading an image file's data section into pinned blocks, laid out as the memory store packs it
 * (daemon/copy.h: data offset X at blocks[X / block_bytes] + X % block_bytes), so that a fill from
 * the blocks restores exactly what the file holds. Blocking (a worker's); never logs.
 */
#ifndef GW_IMAGECACHE_READ_H
#define GW_IMAGECACHE_READ_H

#include <stddef.h>

#include "gw-vimg.h"

/* Readers at most (threads; a version 2 image uses one per segment up to this). */
#define GW_IMAGECACHE_READ_LANES 8

/* The data of image v (decoded and checked) from head_fd (version 1) or seg_fds[0..nsegments)
 * (version 2) into blocks. 0, or -errno with the cause in err. */
int gw_imagecache_read_data(const struct gw_vimg *v, int head_fd, const int *seg_fds,
			    void *const *blocks, size_t block_bytes, char *err, size_t errlen);

#endif
