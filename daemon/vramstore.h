/* SPDX-License-Identifier: MIT */
/*
 * The VRAM store (--vram-store DIR): a directory where CRIU's plugin puts the data of the VRAM
 * images it dumps, linking them from CRIU's images directory, so that a checkpoint (and
 * podman's --export archive of it) holds links instead of the data. The daemon only makes the
 * directory ready at start (created 0700 when missing; it must be ours, writable by no one
 * else), tells root's Status where it is, and counts what it holds. It never opens a file
 * there by a name a client gives: images come to it as file descriptors.
 */
#ifndef GW_VRAMSTORE_H
#define GW_VRAMSTORE_H

#include <cjson/cJSON.h>

struct gw_vramstore {
	int fd;      /* the directory; -1: no store */
	char *path;  /* absolute, as given */
};

/* No store (the default). */
void gw_vramstore_init(struct gw_vramstore *s);
/* The store at path (absolute), made if missing: 0, or a negative errno with why in err. */
int gw_vramstore_open(struct gw_vramstore *s, const char *path, char *err, size_t len);
void gw_vramstore_close(struct gw_vramstore *s); /* init'd or open: both fine */
/* {"path", "files", "bytes"}; NULL without a store. */
cJSON *gw_vramstore_status_json(const struct gw_vramstore *s);

#endif
