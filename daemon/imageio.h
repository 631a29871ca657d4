/* SPDX-License-Identifier: MIT */
/*
 * The files of a VRAM image in a file (docs/image-format.md): the head file the client passed as
 * "image_fd" and, for a version 2 image, its segment files ("segment_fds", docs/protocol.md).
 * Taking the fds from a request and checking them, the free-space check, sizing and labelling
 * the segments at suspend, checking them at resume, and the reply's I/O figures. The daemon
 * never opens a path: every file here came as an fd from a client that could open it.
 */
#ifndef GW_IMAGEIO_H
#define GW_IMAGEIO_H

#include <cjson/cJSON.h>

#include "copy.h"
#include "server.h"

struct gw_image;
struct gw_fast_params;

/* "segment_fds" of a Suspend/Resume request: check every fd as "image_fd" is checked (a regular
 * file; suspend: empty, O_RDWR, not appending; resume: readable), take them from the request into
 * f->segment_fds. 0 (none, or taken), or < 0 after failing the request. has_image: "image_fd"
 * came too (segments without a head are refused). */
int gw_imageio_take_segment_fds(struct gw_request *req, int suspend, int has_image,
				struct gw_fast_params *f);
/* Close the fds f still holds (image and segments) and forget them. */
void gw_imageio_params_close(struct gw_fast_params *f);

/* Suspend: lay the finalized image v out over nsegments segments (0: a version 1 image), with a
 * stripe fitted to its data. Finalizes again. */
int gw_imageio_layout(struct gw_vimg *v, unsigned nsegments);
/* Does the image fit where its files are (the head and every segment, summed per file system)?
 * 0, or -ENOSPC with the message in err. */
int gw_imageio_check_space(const struct gw_image *image, char *err, size_t errlen);
/* Suspend: size every segment file and write its segment header (the image's id set). */
int gw_imageio_segments_prepare(struct gw_image *image, char *err, size_t errlen);
/* Resume: check fds[0..n) as the segments of image->v (count, identity, size) and take them into
 * the image; on failure they are closed. -EBADMSG etc. with the cause in err. */
int gw_imageio_segments_take(struct gw_image *image, int *fds, unsigned n, char *err,
			     size_t errlen);
/* Move image b's files (head fd and segments) into a, closing a's: a resume gave fresh fds of
 * an image the daemon holds. */
void gw_imageio_files_move(struct gw_image *a, struct gw_image *b);
/* Truncate every file of a failed suspend's image to nothing. */
void gw_imageio_files_truncate(struct gw_image *image);
void gw_imageio_files_close(struct gw_image *image);

/* Per GPU job of a fast operation: where its time went. */
struct gw_copy_stats {
	double create_ms, copy_ms, verify_ms, export_ms, unmap_ms;
	uint64_t io_ns, io_bytes, pieces;
	uint64_t data_bytes; /* of its ranges */
	unsigned lanes, ranges;
	int ran;
};

void gw_copy_stats_add(struct gw_copy_stats *st, const struct gw_copy_store *s);
/* The reply's I/O figures: "segments", "io_lanes", "file_write_bytes_per_s" (suspend) or
 * "file_read_bytes_per_s" (resume), and "gpu_jobs": per GPU its sub-steps. */
void gw_imageio_result(cJSON *result, const struct gw_image *image, const struct gw_copy_stats *st,
		       unsigned ngpus, int suspend);

#endif
