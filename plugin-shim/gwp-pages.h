/* SPDX-License-Identifier: MIT */
/*
 * CRIU's memory page images (pages-<n>.img, the bulk of a dump after the VRAM) and gpu-warmd's
 * store: with a store, a dump of CUDA processes moves them there and leaves links of the same
 * names, as it does for the VRAM segment files (gwp-store.h), so that podman's --export archive
 * holds links, not data. CRIU's restore opens them through the links, which the plugin makes
 * relative first (gwp_store_relink_relative() says why).
 *
 * CRIU writes a page image by opening its name, which follows a link: before a dump into
 * images that hold such links, the links go, with the store's files they point to (as an
 * earlier dump's VRAM segment files go: gwp_image_remove_stale()).
 */
#ifndef GWP_PAGES_H
#define GWP_PAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gwp-store.h"

/* pages-<digits>.img */
bool gwp_pages_is_image_name(const char *name);
/* Does dirfd hold a page image that is a link? */
bool gwp_pages_has_links(int dirfd);
/* Remove every page image in dirfd that is a link, and the file of s it links to (s may have
 * no store: then only the links go): how many, or a negative errno. */
int gwp_pages_unlink_links(const struct gwp_store *s, int dirfd);
/* Make dirfd's page images that are absolute links into s relative: 0 with *links how many,
 * or a negative errno with why in err. */
int gwp_pages_relink(const struct gwp_store *s, int dirfd, unsigned *links, char *err,
		     size_t len);
/* Move dirfd's page images into the store: 0 with *files and *bytes what moved, or a negative
 * errno with why in err (the files not moved stay as they were: the images are whole either
 * way). */
int gwp_pages_to_store(const struct gwp_store *s, int dirfd, unsigned *files, uint64_t *bytes,
		       char *err, size_t len);

#endif
