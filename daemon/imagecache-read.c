/* SPDX-License-Identifier: MIT */
#include "imagecache-read.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Pieces of a version 1 image (the head file is one stream; lanes take pieces in turn). */
#define PIECE_BYTES (16u << 20)

struct lane {
	const struct gw_vimg *v;
	int head_fd;
	const int *seg_fds;
	void *const *blocks;
	size_t block_bytes;
	unsigned index, nlanes;
	int error;
	uint64_t at; /* where the error was (data offset) */
};

/* One piece's bytes into the blocks it spans. */
static int read_piece(const struct lane *l, int fd, uint64_t file_off, uint64_t data_off,
		      uint64_t len)
{
	while (len > 0) {
		uint64_t in = data_off % l->block_bytes, n = l->block_bytes - in;
		int r;

		if (n > len)
			n = len;
		r = gw_vimg_pread(fd, (char *)l->blocks[data_off / l->block_bytes] + in, n, file_off);
		if (r < 0)
			return r;
		file_off += n;
		data_off += n;
		len -= n;
	}
	return 0;
}

static void *lane_run(void *arg)
{
	struct lane *l = arg;
	const struct gw_vimg *v = l->v;
	struct gw_vimg_pieces it;
	struct gw_vimg_piece p;
	uint64_t k = 0;

	gw_vimg_pieces_start(v, PIECE_BYTES, &it);
	for (; gw_vimg_pieces_next(v, &it, &p); k++) {
		unsigned who = v->nsegments ? p.segment % l->nlanes : (unsigned)(k % l->nlanes);
		int fd = v->nsegments ? l->seg_fds[p.segment] : l->head_fd;

		if (who != l->index)
			continue;
		l->error = read_piece(l, fd, p.offset, p.data_offset, p.len);
		if (l->error < 0) {
			l->at = p.data_offset;
			break;
		}
	}
	return NULL;
}

int gw_imagecache_read_data(const struct gw_vimg *v, int head_fd, const int *seg_fds,
			    void *const *blocks, size_t block_bytes, char *err, size_t errlen)
{
	struct lane lanes[GW_IMAGECACHE_READ_LANES];
	pthread_t threads[GW_IMAGECACHE_READ_LANES];
	unsigned n = v->nsegments ? v->nsegments : 4, started = 0;
	int r = 0;

	if (n > GW_IMAGECACHE_READ_LANES)
		n = GW_IMAGECACHE_READ_LANES;
	if ((uint64_t)n * PIECE_BYTES > v->data_bytes && !v->nsegments)
		n = 1;
	for (unsigned i = 0; i < n; i++) {
		lanes[i] = (struct lane){ .v = v, .head_fd = head_fd, .seg_fds = seg_fds,
					  .blocks = blocks, .block_bytes = block_bytes,
					  .index = i, .nlanes = n };
		if (i > 0 && pthread_create(&threads[i], NULL, lane_run, &lanes[i]) == 0)
			started |= 1u << i;
	}
	/* Lane 0 runs here, then every lane that got no thread of its own. */
	for (unsigned i = 0; i < n; i++)
		if (!(started & (1u << i)))
			lane_run(&lanes[i]);
	for (unsigned i = 1; i < n; i++)
		if (started & (1u << i))
			pthread_join(threads[i], NULL);
	for (unsigned i = 0; i < n && r == 0; i++) {
		if (lanes[i].error < 0) {
			r = lanes[i].error;
			snprintf(err, errlen, "reading the image's data at data offset %llu: %s",
				 (unsigned long long)lanes[i].at,
				 r == -ENODATA ? "the file is shorter than its header says" :
						 strerror(-r));
		}
	}
	return r;
}
