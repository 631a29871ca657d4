/* SPDX-License-Identifier: MIT */
/*
 * The VRAM image: what gpu-warmd keeps of a process's device memory while it is suspended, in
 * memory or in a file (docs/image-format.md). Each range of the process's VRAM is cut into
 * chunks; runs of all-zero chunks are recorded, never stored, and refilled with a memset; data
 * chunks are stored back to back. Every chunk has a checksum (common/gw-chunksum.h) that the
 * daemon verifies on the GPU after a restore.
 *
 * File layout, little-endian:
 *     header   256 bytes, CRC-32C of its first 252 bytes in its last 4
 *     ranges   64 bytes each      \
 *     runs     24 bytes each       } "tables", CRC-32C in the header
 *     sums     8 bytes per chunk   |
 *     segments 8 bytes each       /  (version 2 only)
 *     padding  to 4096
 *     data     the data chunks, range after range, run after run (version 1)
 *
 * Version 2 keeps the data out of that "head" file: it is split by pieces of stripe_bytes over
 * nsegments segment files (each a 4096-byte segment header, then its pieces back to back), so
 * that writers and readers of different segments never share an inode. gw_vimg_pieces_next()
 * is the mapping; docs/image-format.md says it in words. Images without segments are written as
 * version 1, byte for byte as before.
 *
 * This module encodes and decodes, and checks everything it decodes (sizes, counts, the runs'
 * cover of each range, data offsets, CRCs): a file or buffer is untrusted input. It never logs.
 */
#ifndef GW_VIMG_H
#define GW_VIMG_H

#include <stddef.h>
#include <stdint.h>

#include "gw-chunksum.h"

#define GW_VIMG_MAGIC "GWVRAMIM"
#define GW_VIMG_VERSION 1          /* images with their data in the head file */
#define GW_VIMG_VERSION_SEGMENTS 2 /* images with their data in segment files */
#define GW_VIMG_HEADER_BYTES 256
#define GW_VIMG_RANGE_BYTES 64
#define GW_VIMG_RUN_BYTES 24
#define GW_VIMG_DATA_ALIGN 4096
#define GW_VIMG_MAX_RANGES 4096
#define GW_VIMG_MAX_CHUNKS (1u << 24)
#define GW_VIMG_MAX_RUNS GW_VIMG_MAX_CHUNKS
#define GW_VIMG_MIN_CHUNK_BYTES (64u << 10)
#define GW_VIMG_MAX_CHUNK_BYTES (1u << 30)
#define GW_VIMG_MAX_RANGE_BYTES ((uint64_t)1 << 42)
#define GW_VIMG_DEFAULT_CHUNK_BYTES (2u << 20)
#define GW_VIMG_MAX_SEGMENTS 16
#define GW_VIMG_SEGMENT_BYTES 8           /* a segment table entry */
#define GW_VIMG_SEG_MAGIC "GWVRAMSG"
#define GW_VIMG_SEG_HEADER_BYTES 4096     /* a segment file's header; its data follows */
#define GW_VIMG_MIN_STRIPE_BYTES (64u << 10)
#define GW_VIMG_MAX_STRIPE_BYTES (1u << 30)

#define GW_VIMG_F_SPARSE 0x1 /* zero chunks were looked for (else every chunk is data) */
#define GW_VIMG_F_SUMS 0x2   /* the sums are chunk checksums (else all 0: not verifiable) */
#define GW_VIMG_F_KNOWN (GW_VIMG_F_SPARSE | GW_VIMG_F_SUMS)

struct gw_vimg_run {
	uint64_t first_chunk; /* within its range */
	uint32_t nchunks;
	uint32_t zero;        /* 1: all-zero chunks, not stored */
	uint64_t data_offset; /* data runs: where its bytes start in the data section */
};

struct gw_vimg_range {
	uint64_t va;         /* where the process maps it */
	uint64_t size;       /* bytes, a multiple of 8 */
	uint8_t uuid[16];    /* the GPU it lives on */
	uint32_t app_device; /* the process's ordinal for that GPU */
	uint32_t nruns;
	uint64_t first_run;   /* index into runs[] */
	uint64_t first_chunk; /* index into sums[] */
	uint64_t data_offset; /* where its data starts in the data section */
	uint64_t data_bytes;  /* derived */
};

struct gw_vimg {
	uint32_t version;
	uint32_t flags;
	int32_t pid; /* at dump time, for people reading it */
	uint64_t chunk_bytes;
	uint8_t id[16]; /* random: tells images apart */
	uint64_t created_ns; /* CLOCK_REALTIME */
	/* Speeds measured by the daemon that wrote it, bytes/s, 0 = unknown: what a restore's
	 * time is predicted from. */
	uint64_t copy_out_bps, copy_in_bps, write_bps, read_bps;
	uint64_t device_bps;       /* VRAM bytes per second of a fill's device-side work (create,
				    * memset, copy, checksum scan) besides reading the file */
	uint64_t restore_fixed_ns; /* freeze + driver restore + map, last measured */

	/* Segments (version 2): 0 = the data is in the head file (version 1). */
	uint32_t nsegments;
	uint64_t stripe_bytes;                      /* the piece size of the split */
	uint64_t seg_bytes[GW_VIMG_MAX_SEGMENTS];   /* data bytes in each segment (derived) */

	struct gw_vimg_range *ranges;
	uint32_t nranges;
	struct gw_vimg_run *runs;
	uint64_t nruns;
	uint64_t *sums; /* one per chunk, ranges in order */
	uint64_t nchunks;

	/* Totals and placement (gw_vimg_finalize fills them; decode checks them). */
	uint64_t vram_bytes, data_bytes, zero_bytes;
	uint64_t data_offset; /* file offset of the data section */
	uint64_t file_bytes;

	/* builder state */
	uint32_t cap_ranges;
	uint64_t cap_runs, cap_chunks;
};

static inline uint64_t gw_vimg_range_chunks(const struct gw_vimg *v, const struct gw_vimg_range *r)
{
	return (r->size + v->chunk_bytes - 1) / v->chunk_bytes;
}

/* The device bytes a run covers within its range: [*offset, *offset + *len). */
void gw_vimg_run_span(const struct gw_vimg *v, const struct gw_vimg_range *r,
		      const struct gw_vimg_run *run, uint64_t *offset, uint64_t *len);

/* ---- building (the daemon, at dump) ---- */

/* Start an empty image; chunk_bytes must be a power of two within the limits. */
int gw_vimg_init(struct gw_vimg *v, uint64_t chunk_bytes, uint32_t flags);
/* Append a range (va, size, uuid, app_device taken from r). scans: one per chunk, or NULL when
 * nothing was scanned (one data run, sums 0). */
int gw_vimg_add_range(struct gw_vimg *v, const struct gw_vimg_range *r,
		      const struct gw_chunk_scan *scans);
/* Split the data over nsegments segment files (1..GW_VIMG_MAX_SEGMENTS) by pieces of
 * stripe_bytes (a power of two within the limits): a version 2 image. Before finalize. 0 segments:
 * version 1 (the default). */
int gw_vimg_set_segments(struct gw_vimg *v, uint32_t nsegments, uint64_t stripe_bytes);
/* Compute offsets and totals (and the segments' sizes); after the last range. */
int gw_vimg_finalize(struct gw_vimg *v);
/* Header and tables, padded to data_offset bytes: what goes at the start of the file. */
int gw_vimg_encode(const struct gw_vimg *v, uint8_t **ret_buf, size_t *ret_len);

/* ---- reading (untrusted) ---- */

/* Decode and check the header alone (GW_VIMG_HEADER_BYTES). Fills the scalar fields. */
int gw_vimg_decode_header(struct gw_vimg *v, const uint8_t *buf, size_t len, char *err,
			  size_t errlen);
/* Decode and check the tables that follow a decoded header (table bytes as the header says). */
int gw_vimg_decode_tables(struct gw_vimg *v, const uint8_t *buf, size_t len, char *err,
			  size_t errlen);
/* Header, table CRC and tables from a buffer holding at least the file's start up to the end of
 * its tables (the decoder the fuzz target drives). */
int gw_vimg_decode(struct gw_vimg *v, const uint8_t *buf, size_t len, char *err, size_t errlen);
/* Size of the tables a decoded header announces. */
uint64_t gw_vimg_table_bytes(const struct gw_vimg *v);
/* Read and check a whole image file's header and tables (the data is read by the caller): a
 * regular file whose size is the header's. */
int gw_vimg_read_fd(int fd, struct gw_vimg *v, char *err, size_t errlen);
/* The same, refusing (-E2BIG, before allocating) an image whose tables exceed max_table_bytes. */
int gw_vimg_read_fd_max(int fd, uint64_t max_table_bytes, struct gw_vimg *v, char *err,
			size_t errlen);

void gw_vimg_clear(struct gw_vimg *v);

/* ---- where the data is ----
 *
 * The data section (data_bytes, the data runs range after range) is cut into pieces: each
 * range's data bytes from its start in pieces of stripe_bytes, its last piece shorter; a piece
 * never spans two ranges. Pieces are numbered in order over all ranges; piece j lives in segment
 * j mod nsegments, right after that segment's earlier pieces. A version 1 image is one segment,
 * the head file itself from data_offset: its pieces lie where they are in the data section, and
 * the caller's piece_bytes cuts them. */
struct gw_vimg_piece {
	uint32_t range;       /* the range it is of */
	uint64_t data_offset; /* where it starts in the data section */
	uint64_t len;
	uint32_t segment;     /* version 1: 0 */
	uint64_t offset;      /* where it starts in its file: the head (version 1) or segment */
};

struct gw_vimg_pieces {
	uint32_t range;
	uint64_t done; /* of the range's data bytes */
	uint64_t next_piece;
	uint64_t piece_bytes;
	uint64_t fill[GW_VIMG_MAX_SEGMENTS];
};

/* Start walking the pieces; piece_bytes is used for version 1 only (version 2: stripe_bytes). */
void gw_vimg_pieces_start(const struct gw_vimg *v, uint64_t piece_bytes, struct gw_vimg_pieces *it);
/* The next piece: 1, or 0 after the last. */
int gw_vimg_pieces_next(const struct gw_vimg *v, struct gw_vimg_pieces *it,
			struct gw_vimg_piece *p);

/* A segment file's header (GW_VIMG_SEG_HEADER_BYTES) for segment k of a finalized image: what
 * identifies it as that segment of that image (docs/image-format.md). */
void gw_vimg_segment_header(const struct gw_vimg *v, uint32_t k, uint8_t *out);
/* Check that fd is segment k of image v: a regular file of the right size whose segment header
 * names v's id, k, the count and its size. -EBADMSG with the cause in err. */
int gw_vimg_check_segment_fd(const struct gw_vimg *v, uint32_t k, int fd, char *err,
			     size_t errlen);
/* Bytes of segment file k (its header and data). */
static inline uint64_t gw_vimg_segment_file_bytes(const struct gw_vimg *v, uint32_t k)
{
	return GW_VIMG_SEG_HEADER_BYTES + v->seg_bytes[k];
}

/* pread() all of len bytes at offset: 0, -ENODATA at the end of the file, or -errno. */
int gw_vimg_pread(int fd, void *buf, size_t len, uint64_t offset);

/* The time a restore of this image from its file should take, in seconds: the fixed part (freeze,
 * driver restore, map), the data at the file read rate, and every VRAM byte at the device-side
 * rate, as the daemon last measured them (defaults 0.3 s, 5 GB/s and 100 GB/s). The rates and the
 * fixed part used come back through the pointers that are not NULL. */
double gw_vimg_predict_restore_s(const struct gw_vimg *v, double *ret_read_bps,
				 double *ret_device_bps, double *ret_fixed_s);

#endif
