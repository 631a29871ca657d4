/* SPDX-License-Identifier: MIT */
/* warmctl inspect: what the file/directory view (warmctl-inspect.c) and the archive view
 * (warmctl-archive.c) share. */
#ifndef WARMCTL_INSPECT_H
#define WARMCTL_INSPECT_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "gw-vimg.h"
#include "warmctl.h"

/* A decoded image's header and tables, and the restore time they predict, into o. */
void wc_inspect_image_fields(cJSON *o, const struct gw_vimg *v);
/* One image object of `inspect`'s result, as text. */
void wc_inspect_print_image(const cJSON *o);

/* Whether the regular file at path is a tar archive, gzip-compressed or not (by its first
 * bytes), rather than a VRAM image. */
bool wc_inspect_is_archive(const char *path);
/* `warmctl inspect ARCHIVE`: an exported checkpoint read once, front to back. Returns an exit
 * code. */
int wc_inspect_archive(struct wc_ctx *ctx, const struct wc_args *args);

#endif
