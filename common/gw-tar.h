/* SPDX-License-Identifier: MIT */
/*
 * A bounded, streaming tar reader for untrusted archives (what `podman container checkpoint
 * --export` writes, plain or gzip-compressed): ustar headers with their checksum, GNU long
 * names ('L'), long link names ('K') and base-256 sizes, pax extended headers ('x': path,
 * linkpath, size; 'g' is skipped).
 * Every size and count is bounded (GW_TAR_MAX_*); a malformed archive gets -EBADMSG and a
 * sentence in err, never a crash. The archive is read once, front to back: after
 * gw_tar_next() the entry's data can be read with gw_tar_read(); what is not read is skipped
 * by the next gw_tar_next(). gzip goes through zlib. This module never logs.
 */
#ifndef GW_TAR_H
#define GW_TAR_H

#include <stddef.h>
#include <stdint.h>

#define GW_TAR_BLOCK 512
#define GW_TAR_MAX_NAME 4096                  /* a path or link target, after long names */
#define GW_TAR_MAX_PAX_BYTES (64u << 10)      /* a pax or GNU long-name header's data */
#define GW_TAR_MAX_ENTRIES (1u << 20)
#define GW_TAR_MAX_ENTRY_BYTES ((uint64_t)1 << 44) /* 16 TiB */

struct gw_tar;

struct gw_tar_entry {
	char name[GW_TAR_MAX_NAME + 1];     /* without a leading "./" */
	char linkname[GW_TAR_MAX_NAME + 1]; /* a symlink's ('2') or hardlink's ('1') target as
					     * the archive holds it; "" for other entries */
	char type;                          /* '0' file, '5' directory, '2' symlink, ... */
	uint64_t size;                      /* data bytes (0 for anything but files) */
};

/* Read from fd (not taken: the caller closes it after gw_tar_destroy), gzip-compressed or
 * not (told by the first bytes). */
int gw_tar_open_fd(int fd, struct gw_tar **ret);
/* Read from len bytes at buf (not copied: they must outlive the reader). */
int gw_tar_open_mem(const void *buf, size_t len, struct gw_tar **ret);
void gw_tar_destroy(struct gw_tar *t);

/* The next entry: 1 (into *e), 0 at the end of the archive, or a negative errno with the
 * cause in err (-EBADMSG: not a tar archive, or a corrupt one). */
int gw_tar_next(struct gw_tar *t, struct gw_tar_entry *e, char *err, size_t errlen);
/* Up to len bytes of the current entry's data: the number read (0 at its end), or a negative
 * errno (-EBADMSG: the archive ends inside the entry). */
long gw_tar_read(struct gw_tar *t, void *buf, size_t len, char *err, size_t errlen);
/* Whether the archive is gzip-compressed, and the bytes read from the archive (compressed)
 * and out of it (uncompressed) so far. */
int gw_tar_compressed(const struct gw_tar *t);
uint64_t gw_tar_raw_bytes(const struct gw_tar *t);
uint64_t gw_tar_bytes(const struct gw_tar *t);

#endif
