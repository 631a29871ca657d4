/* SPDX-License-Identifier: MIT */
/*
 * gpu-warmd's VRAM store (its --vram-store DIR), as the plugin uses it: with a store, a dump's
 * VRAM segment files are made in DIR, and CRIU's images directory gets a symlink of the usual
 * name to each (an absolute path). The head stays in the images directory. A checkpoint then
 * stays small (podman's --export archives the links, not the data), and is restorable on the
 * host that holds the store.
 *
 * Opening an image file for a restore follows a link only into the store, to a plain name
 * there, and opens regular files only: an images directory comes from an archive someone
 * made, and the plugin runs as root.
 */
#ifndef GWP_STORE_H
#define GWP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "gw-privdir.h"

#define GWP_STORE_PATH_MAX (GW_PRIVDIR_PATH_MAX + 1) /* what gw_privdir_open() takes */
#define GWP_STORE_LINK_UPS 40 /* "../" in a page image's link: deeper images are not reached */
#define GWP_STORE_LINK_MAX (GWP_STORE_LINK_UPS * 3 + GWP_STORE_PATH_MAX + 256)

struct gwp_store {
	int fd; /* the directory; -1: no store */
	char path[GWP_STORE_PATH_MAX];
};

/* No store. */
void gwp_store_init(struct gwp_store *s);
/* The store at path: a private directory (gw-privdir.h), as the daemon made it. */
int gwp_store_open(struct gwp_store *s, const char *path, char *err, size_t len);
void gwp_store_close(struct gwp_store *s); /* of an init'd store: a no-op without one */

/* A new file for name in dirfd: in the store, with name a link to it (s has a store), or
 * name itself (it has none). The fd, open for reading and writing, or a negative errno. */
int gwp_store_create(const struct gwp_store *s, int dirfd, const char *name, char *err,
		     size_t len);
/* name in dirfd, for reading: a regular file there, or a link to one in the store (s may
 * have none: then links are refused). The fd, or a negative errno with why in err. */
int gwp_store_open_file(const struct gwp_store *s, int dirfd, const char *name, char *err,
			size_t len);
/* Move the regular file name in dirfd into the store (a hard link there, or a copy on another
 * file system), then replace name by a link to it (absolute, as podman's --import accepts) in
 * one rename: 1 with *bytes its size, 0 when there is nothing to move (no store, name is a link
 * or not a regular file), or a negative errno with why in err (name is left as it was). */
int gwp_store_adopt(const struct gwp_store *s, int dirfd, const char *name, uint64_t *bytes,
		    char *err, size_t len);
/* name, an absolute link to a file of the store, replaced (one rename) by a relative link to
 * the same file: forty "../" and then the store's path. CRIU's restorer opens a page image again
 * from inside the restored container's root, through the images directory's fd: an absolute
 * link resolves against the container's "/" there, a relative one walks up the host's tree from
 * the images directory (surplus ".." stop at "/"). podman's --import refuses relative links that
 * leave the checkpoint, so the dump leaves absolute ones and the restore makes them relative.
 * 1 done, 0 nothing to do (not such a link), or a negative errno with why in err. */
int gwp_store_relink_relative(const struct gwp_store *s, int dirfd, const char *name,
			      char *err, size_t len);
/* Remove name from dirfd, and the store's file it links to (if it is one of the store's).
 * 0, or a negative errno (-ENOENT: there was no name). */
int gwp_store_unlink(const struct gwp_store *s, int dirfd, const char *name);

#endif
