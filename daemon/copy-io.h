/* SPDX-License-Identifier: MIT */
/*
 * The copy engine's lower half, for copy.c only: a set's data to or from an image in files by
 * I/O lanes (threads, each with a slice of the pinned staging buffers and a stream), and the
 * helpers both halves use. Worker threads; never logs.
 */
#ifndef GW_COPY_IO_H
#define GW_COPY_IO_H

#include "copy.h"

/* err = "what: the driver's words for r"; returns r as -errno. */
int gw_copy_fail(const struct gw_copy_engine *e, const char *what, CUresult r, char *err,
		 size_t errlen);
/* Wait for every stream of e: 0, or the first failure (in err unless err is NULL: -EIO). */
int gw_copy_sync_all(const struct gw_copy_engine *e, char *err, size_t errlen);
/* The zero runs of every range of the set: memsets on st (synchronised by the caller). */
int gw_copy_memset_zero_runs(const struct gw_copy_engine *e, const struct gw_copy_set *set,
			     CUstream st, char *err, size_t errlen);
/* A file store (s->fd or its segments): out, the data runs into the files; in, from them (the
 * zero runs memset first). Takes the GPU's staging lock. */
int gw_copy_file(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		 struct gw_copy_store *s, int out, char *err, size_t errlen);

#endif
