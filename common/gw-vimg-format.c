/* SPDX-License-Identifier: MIT */
/* The VRAM image's bytes: header, tables and segment headers written and read, every field
 * checked on the way in. What the image holds is built in gw-vimg.c. */
#include "gw-vimg.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-crc32c.h"
#include "gw-vimg-private.h"

/* Header field offsets. */
enum {
	H_MAGIC = 0,
	H_VERSION = 8,
	H_HEADER_BYTES = 12,
	H_FLAGS = 16,
	H_PID = 20,
	H_CHUNK_BYTES = 24,
	H_NRANGES = 32,
	H_NRUNS = 40,
	H_NCHUNKS = 48,
	H_TABLE_BYTES = 56,
	H_DATA_OFFSET = 64,
	H_DATA_BYTES = 72,
	H_VRAM_BYTES = 80,
	H_ZERO_BYTES = 88,
	H_FILE_BYTES = 96,
	H_ID = 104,
	H_CREATED = 120,
	H_COPY_OUT = 128,
	H_COPY_IN = 136,
	H_WRITE = 144,
	H_READ = 152,
	H_RESTORE_FIXED = 160,
	H_DEVICE = 168,
	H_NSEGMENTS = 176, /* version 2 */
	H_SEG_RESERVED = 180,
	H_STRIPE = 184,
	H_RESERVED = 192, /* to H_TABLE_CRC: 0 (version 1: from H_NSEGMENTS) */
	H_TABLE_CRC = 248,
	H_HEADER_CRC = 252,
};

/* The header's numbers that are a field of struct gw_vimg as they stand: encoding and decoding
 * both walk this one list. FIELD() refuses a field of another width than the header's. */
#define FIELD(at, width, f)                                                                       \
	{ at, width,                                                                              \
	  offsetof(struct gw_vimg, f) +                                                           \
		  0 * sizeof(char[sizeof(((struct gw_vimg *)0)->f) == (width) ? 1 : -1]) }

static const struct header_field {
	unsigned at, width;
	size_t field;
} header_fields[] = {
	FIELD(H_FLAGS, 4, flags),
	FIELD(H_PID, 4, pid),
	FIELD(H_CHUNK_BYTES, 8, chunk_bytes),
	FIELD(H_NRANGES, 4, nranges),
	FIELD(H_NRUNS, 8, nruns),
	FIELD(H_NCHUNKS, 8, nchunks),
	FIELD(H_DATA_OFFSET, 8, data_offset),
	FIELD(H_DATA_BYTES, 8, data_bytes),
	FIELD(H_VRAM_BYTES, 8, vram_bytes),
	FIELD(H_ZERO_BYTES, 8, zero_bytes),
	FIELD(H_FILE_BYTES, 8, file_bytes),
	FIELD(H_CREATED, 8, created_ns),
	FIELD(H_COPY_OUT, 8, copy_out_bps),
	FIELD(H_COPY_IN, 8, copy_in_bps),
	FIELD(H_WRITE, 8, write_bps),
	FIELD(H_READ, 8, read_bps),
	FIELD(H_RESTORE_FIXED, 8, restore_fixed_ns),
	FIELD(H_DEVICE, 8, device_bps),
};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						      ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static void put32(uint8_t *p, uint32_t x)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static void put64(uint8_t *p, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t x = 0;

	for (int i = 3; i >= 0; i--)
		x = x << 8 | p[i];
	return x;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t x = 0;

	for (int i = 7; i >= 0; i--)
		x = x << 8 | p[i];
	return x;
}

static void put_fields(const struct gw_vimg *v, uint8_t *h)
{
	for (size_t i = 0; i < sizeof(header_fields) / sizeof(header_fields[0]); i++) {
		const struct header_field *f = &header_fields[i];
		const uint8_t *field = (const uint8_t *)v + f->field;
		uint32_t x32;
		uint64_t x64;

		if (f->width == 4) {
			memcpy(&x32, field, 4);
			put32(h + f->at, x32);
		} else {
			memcpy(&x64, field, 8);
			put64(h + f->at, x64);
		}
	}
}

static void get_fields(struct gw_vimg *v, const uint8_t *h)
{
	for (size_t i = 0; i < sizeof(header_fields) / sizeof(header_fields[0]); i++) {
		const struct header_field *f = &header_fields[i];
		uint8_t *field = (uint8_t *)v + f->field;
		uint32_t x32;
		uint64_t x64;

		if (f->width == 4) {
			x32 = get32(h + f->at);
			memcpy(field, &x32, 4);
		} else {
			x64 = get64(h + f->at);
			memcpy(field, &x64, 8);
		}
	}
}

static void encode_header(const struct gw_vimg *v, uint8_t *h, uint32_t table_crc)
{
	memset(h, 0, GW_VIMG_HEADER_BYTES);
	memcpy(h + H_MAGIC, GW_VIMG_MAGIC, 8);
	put32(h + H_VERSION, v->nsegments ? GW_VIMG_VERSION_SEGMENTS : GW_VIMG_VERSION);
	put32(h + H_HEADER_BYTES, GW_VIMG_HEADER_BYTES);
	put_fields(v, h);
	put64(h + H_TABLE_BYTES, gw_vimg_table_bytes(v));
	memcpy(h + H_ID, v->id, 16);
	if (v->nsegments) {
		put32(h + H_NSEGMENTS, v->nsegments);
		put64(h + H_STRIPE, v->stripe_bytes);
	}
	put32(h + H_TABLE_CRC, table_crc);
	put32(h + H_HEADER_CRC, gw_crc32c(0, h, H_HEADER_CRC));
}

int gw_vimg_encode(const struct gw_vimg *v, uint8_t **ret_buf, size_t *ret_len)
{
	uint8_t *buf, *p;

	if (v->data_offset < GW_VIMG_HEADER_BYTES + gw_vimg_table_bytes(v))
		return -EINVAL; /* not finalized */
	buf = calloc(1, (size_t)v->data_offset);
	if (!buf)
		return -ENOMEM;
	p = buf + GW_VIMG_HEADER_BYTES;
	for (uint32_t i = 0; i < v->nranges; i++, p += GW_VIMG_RANGE_BYTES) {
		const struct gw_vimg_range *r = &v->ranges[i];

		put64(p, r->va);
		put64(p + 8, r->size);
		memcpy(p + 16, r->uuid, 16);
		put32(p + 32, r->app_device);
		put32(p + 36, r->nruns);
		put64(p + 40, r->first_run);
		put64(p + 48, r->data_offset);
		put64(p + 56, r->first_chunk);
	}
	for (uint64_t i = 0; i < v->nruns; i++, p += GW_VIMG_RUN_BYTES) {
		put64(p, v->runs[i].first_chunk);
		put32(p + 8, v->runs[i].nchunks);
		put32(p + 12, v->runs[i].zero);
		put64(p + 16, v->runs[i].data_offset);
	}
	for (uint64_t i = 0; i < v->nchunks; i++, p += 8)
		put64(p, v->sums[i]);
	for (uint32_t i = 0; i < v->nsegments; i++, p += GW_VIMG_SEGMENT_BYTES)
		put64(p, v->seg_bytes[i]);
	encode_header(v, buf, gw_crc32c(0, buf + GW_VIMG_HEADER_BYTES, gw_vimg_table_bytes(v)));
	*ret_buf = buf;
	*ret_len = (size_t)v->data_offset;
	return 0;
}

/* ---- reading ---- */

int gw_vimg_decode_header(struct gw_vimg *v, const uint8_t *h, size_t len, char *err,
			  size_t errlen)
{
	uint64_t table_bytes;

	memset(v, 0, sizeof(*v));
	if (len < GW_VIMG_HEADER_BYTES)
		return fail(err, errlen, "too short for a gpu-warmd VRAM image (%zu bytes)", len);
	if (memcmp(h + H_MAGIC, GW_VIMG_MAGIC, 8) != 0)
		return fail(err, errlen, "not a gpu-warmd VRAM image, or one whose writing never "
			    "finished (bad magic)");
	v->version = get32(h + H_VERSION);
	if (v->version != GW_VIMG_VERSION && v->version != GW_VIMG_VERSION_SEGMENTS)
		return fail(err, errlen, "VRAM image format version %u; this gpu-warmd reads "
			    "versions %d and %d only", v->version, GW_VIMG_VERSION,
			    GW_VIMG_VERSION_SEGMENTS);
	if (get32(h + H_HEADER_CRC) != gw_crc32c(0, h, H_HEADER_CRC))
		return fail(err, errlen, "the image header is corrupt (checksum mismatch)");
	if (get32(h + H_HEADER_BYTES) != GW_VIMG_HEADER_BYTES)
		return fail(err, errlen, "bad header size %u", get32(h + H_HEADER_BYTES));
	get_fields(v, h);
	memcpy(v->id, h + H_ID, 16);
	table_bytes = get64(h + H_TABLE_BYTES);
	if (v->flags & ~GW_VIMG_F_KNOWN)
		return fail(err, errlen, "unknown flags 0x%x", v->flags);
	if (v->version == GW_VIMG_VERSION_SEGMENTS) {
		v->nsegments = get32(h + H_NSEGMENTS);
		v->stripe_bytes = get64(h + H_STRIPE);
		if (v->nsegments == 0 || v->nsegments > GW_VIMG_MAX_SEGMENTS)
			return fail(err, errlen, "bad segment count %u (1 to %d)", v->nsegments,
				    GW_VIMG_MAX_SEGMENTS);
		if (!gw_vimg_stripe_bytes_valid(v->stripe_bytes))
			return fail(err, errlen, "bad stripe size %llu",
				    (unsigned long long)v->stripe_bytes);
	}
	for (size_t i = v->nsegments ? H_SEG_RESERVED : H_NSEGMENTS; i < H_TABLE_CRC; i++)
		if (h[i] && (!v->nsegments || i < H_STRIPE || i >= H_RESERVED))
			return fail(err, errlen, "reserved header byte %zu is set", i);
	if (get32(h + H_NRANGES + 4))
		return fail(err, errlen, "reserved header bytes are set");
	if (!gw_vimg_chunk_bytes_valid(v->chunk_bytes))
		return fail(err, errlen, "bad chunk size %llu", (unsigned long long)v->chunk_bytes);
	if (v->nranges == 0 || v->nranges > GW_VIMG_MAX_RANGES || v->nruns < v->nranges ||
	    v->nruns > GW_VIMG_MAX_RUNS || v->nchunks < v->nruns ||
	    v->nchunks > GW_VIMG_MAX_CHUNKS)
		return fail(err, errlen, "bad counts: %u ranges, %llu runs, %llu chunks", v->nranges,
			    (unsigned long long)v->nruns, (unsigned long long)v->nchunks);
	if (table_bytes != gw_vimg_table_bytes(v))
		return fail(err, errlen, "table size %llu does not match the counts",
			    (unsigned long long)table_bytes);
	if (v->data_offset != gw_vimg_data_offset(table_bytes) ||
	    v->data_bytes > v->vram_bytes || v->zero_bytes != v->vram_bytes - v->data_bytes ||
	    v->file_bytes != v->data_offset + (v->nsegments ? 0 : v->data_bytes) ||
	    v->vram_bytes > (uint64_t)GW_VIMG_MAX_RANGES * GW_VIMG_MAX_RANGE_BYTES)
		return fail(err, errlen, "inconsistent sizes in the header");
	return 0;
}

static int overlaps(const struct gw_vimg *v)
{
	/* Ranges are few (<= 4096): sort a copy of (va, size) pairs by va. */
	struct span {
		uint64_t va, end;
	} *s = malloc(v->nranges * sizeof(*s));
	int bad = 0;

	if (!s)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->nranges; i++) {
		struct span x = { v->ranges[i].va, v->ranges[i].va + v->ranges[i].size };
		uint32_t k = i;

		while (k > 0 && s[k - 1].va > x.va) { /* insertion sort: fine for these sizes */
			s[k] = s[k - 1];
			k--;
		}
		s[k] = x;
	}
	for (uint32_t i = 1; i < v->nranges && !bad; i++)
		bad = s[i].va < s[i - 1].end;
	free(s);
	return bad;
}

/* The tables as they are in buf (checked by check_tables()). */
static int read_tables(struct gw_vimg *v, const uint8_t *buf)
{
	const uint8_t *p = buf;

	v->ranges = calloc(v->nranges, sizeof(*v->ranges));
	v->runs = calloc((size_t)v->nruns, sizeof(*v->runs));
	v->sums = calloc((size_t)v->nchunks, sizeof(*v->sums));
	if (!v->ranges || !v->runs || !v->sums) {
		gw_vimg_clear(v);
		return -ENOMEM;
	}
	v->cap_ranges = v->nranges;
	v->cap_runs = v->nruns;
	v->cap_chunks = v->nchunks;
	for (uint32_t i = 0; i < v->nranges; i++, p += GW_VIMG_RANGE_BYTES) {
		struct gw_vimg_range *rg = &v->ranges[i];

		rg->va = get64(p);
		rg->size = get64(p + 8);
		memcpy(rg->uuid, p + 16, 16);
		rg->app_device = get32(p + 32);
		rg->nruns = get32(p + 36);
		rg->first_run = get64(p + 40);
		rg->data_offset = get64(p + 48);
		rg->first_chunk = get64(p + 56);
	}
	for (uint64_t i = 0; i < v->nruns; i++, p += GW_VIMG_RUN_BYTES) {
		v->runs[i].first_chunk = get64(p);
		v->runs[i].nchunks = get32(p + 8);
		v->runs[i].zero = get32(p + 12);
		v->runs[i].data_offset = get64(p + 16);
	}
	for (uint64_t i = 0; i < v->nchunks; i++, p += 8)
		v->sums[i] = get64(p);
	for (uint32_t i = 0; i < v->nsegments; i++, p += GW_VIMG_SEGMENT_BYTES)
		v->seg_bytes[i] = get64(p);
	return 0;
}

/* Every range's runs cover its chunks exactly, in order; data sits back to back; the tables add
 * up to the header's totals, no two ranges overlap, the segment table is what the ranges make. */
static int check_tables(struct gw_vimg *v, char *err, size_t errlen)
{
	uint64_t run = 0, chunk = 0, data = 0, vram = 0;
	int r;

	for (uint32_t i = 0; i < v->nranges; i++) {
		struct gw_vimg_range *rg = &v->ranges[i];
		uint64_t nch, next = 0;

		if (rg->size == 0 || rg->size % 8 || rg->size > GW_VIMG_MAX_RANGE_BYTES ||
		    rg->va + rg->size < rg->va || rg->app_device > 1024)
			return fail(err, errlen, "the range table is corrupt: range %u's size or "
				    "address", i);
		nch = gw_vimg_range_chunks(v, rg);
		if (rg->first_run != run || rg->nruns == 0 || rg->nruns > v->nruns - run ||
		    rg->first_chunk != chunk || nch > v->nchunks - chunk || rg->data_offset != data)
			return fail(err, errlen, "the range table is corrupt: range %u's runs, "
				    "chunks or data offset", i);
		rg->data_bytes = 0;
		for (uint32_t k = 0; k < rg->nruns; k++) {
			const struct gw_vimg_run *rn = &v->runs[run + k];
			uint64_t off, n;

			if (rn->first_chunk != next || rn->nchunks == 0 ||
			    rn->nchunks > nch - next || rn->zero > 1 ||
			    (!rn->zero && rn->data_offset != data) || (rn->zero && rn->data_offset))
				return fail(err, errlen, "the run table is corrupt: range %u, run %u",
					    i, k);
			if (rn->zero && !(v->flags & GW_VIMG_F_SPARSE))
				return fail(err, errlen, "zero run in an image that was not scanned");
			next += rn->nchunks;
			gw_vimg_run_span(v, rg, rn, &off, &n);
			if (!rn->zero) {
				data += n;
				rg->data_bytes += n;
			}
		}
		if (next != nch)
			return fail(err, errlen, "the run table is corrupt: range %u's runs cover "
				    "%llu of its %llu chunks", i, (unsigned long long)next,
				    (unsigned long long)nch);
		run += rg->nruns;
		chunk += nch;
		vram += rg->size;
	}
	if (run != v->nruns || chunk != v->nchunks || data != v->data_bytes || vram != v->vram_bytes)
		return fail(err, errlen, "the tables do not add up to the header's totals");
	r = overlaps(v);
	if (r < 0)
		return r;
	if (r)
		return fail(err, errlen, "two ranges overlap");
	if (v->nsegments) {
		uint64_t want[GW_VIMG_MAX_SEGMENTS];

		gw_vimg_segment_sizes(v, want);
		for (uint32_t i = 0; i < v->nsegments; i++)
			if (v->seg_bytes[i] != want[i])
				return fail(err, errlen, "the segment table is corrupt: segment %u "
					    "holds %llu bytes, its pieces %llu", i,
					    (unsigned long long)v->seg_bytes[i],
					    (unsigned long long)want[i]);
	}
	return 0;
}

static int decode_tables(struct gw_vimg *v, const uint8_t *buf, size_t len, char *err,
			 size_t errlen)
{
	uint64_t table_bytes = gw_vimg_table_bytes(v);
	int r;

	if (len != table_bytes)
		return fail(err, errlen, "table size %zu, the header says %llu", len,
			    (unsigned long long)table_bytes);
	r = read_tables(v, buf);
	return r < 0 ? r : check_tables(v, err, errlen);
}

int gw_vimg_decode_tables(struct gw_vimg *v, const uint8_t *buf, size_t len, char *err,
			  size_t errlen)
{
	int r = decode_tables(v, buf, len, err, errlen);

	if (r < 0)
		gw_vimg_clear(v); /* nothing half-checked stays behind */
	return r;
}

int gw_vimg_decode(struct gw_vimg *v, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	uint64_t table_bytes;
	int r;

	r = gw_vimg_decode_header(v, buf, len, err, errlen);
	if (r < 0)
		return r;
	table_bytes = gw_vimg_table_bytes(v);
	if (len - GW_VIMG_HEADER_BYTES < table_bytes)
		return fail(err, errlen, "%zu bytes hold only part of the image's tables", len);
	if (get32(buf + H_TABLE_CRC) != gw_crc32c(0, buf + GW_VIMG_HEADER_BYTES, table_bytes))
		return fail(err, errlen, "the image's tables are corrupt (checksum mismatch)");
	return gw_vimg_decode_tables(v, buf + GW_VIMG_HEADER_BYTES, (size_t)table_bytes, err,
				     errlen);
}

int gw_vimg_pread(int fd, void *buf, size_t len, uint64_t offset)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

int gw_vimg_read_fd(int fd, struct gw_vimg *v, char *err, size_t errlen)
{
	return gw_vimg_read_fd_max(fd, UINT64_MAX, v, err, errlen);
}

int gw_vimg_read_fd_max(int fd, uint64_t max_table_bytes, struct gw_vimg *v, char *err,
			size_t errlen)
{
	uint8_t header[GW_VIMG_HEADER_BYTES], *buf;
	uint64_t table_bytes;
	struct stat st;
	int r;

	memset(v, 0, sizeof(*v));
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, "not a regular file");
	if ((uint64_t)st.st_size < GW_VIMG_HEADER_BYTES)
		return fail(err, errlen, "%lld bytes: too short for a gpu-warmd VRAM image "
			    "(truncated?)", (long long)st.st_size);
	r = gw_vimg_pread(fd, header, sizeof(header), 0);
	if (r < 0)
		return fail(err, errlen, "cannot read the header: %s", strerror(-r));
	r = gw_vimg_decode_header(v, header, sizeof(header), err, errlen);
	if (r < 0)
		return r;
	if ((uint64_t)st.st_size != v->file_bytes)
		return fail(err, errlen, "the file has %lld bytes, its header says %llu: it is "
			    "truncated or was extended", (long long)st.st_size,
			    (unsigned long long)v->file_bytes);
	table_bytes = gw_vimg_table_bytes(v);
	if (table_bytes > max_table_bytes) {
		fail(err, errlen, "its tables are %llu MiB", (unsigned long long)(table_bytes >> 20));
		return -E2BIG;
	}
	buf = malloc(GW_VIMG_HEADER_BYTES + (size_t)table_bytes);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, header, GW_VIMG_HEADER_BYTES);
	r = gw_vimg_pread(fd, buf + GW_VIMG_HEADER_BYTES, (size_t)table_bytes, GW_VIMG_HEADER_BYTES);
	if (r < 0) {
		free(buf);
		return fail(err, errlen, "cannot read the tables: %s", strerror(-r));
	}
	r = gw_vimg_decode(v, buf, GW_VIMG_HEADER_BYTES + (size_t)table_bytes, err, errlen);
	free(buf);
	return r;
}

/* ---- segment files ---- */

enum {
	S_MAGIC = 0,
	S_VERSION = 8,
	S_HEADER_BYTES = 12,
	S_ID = 16,
	S_INDEX = 32,
	S_COUNT = 36,
	S_DATA_BYTES = 40,
	S_STRIPE = 48,
	S_RESERVED = 56,
	S_CRC = 60,
	S_END = 64, /* zero from here to GW_VIMG_SEG_HEADER_BYTES */
};

void gw_vimg_segment_header(const struct gw_vimg *v, uint32_t k, uint8_t *h)
{
	memset(h, 0, GW_VIMG_SEG_HEADER_BYTES);
	memcpy(h + S_MAGIC, GW_VIMG_SEG_MAGIC, 8);
	put32(h + S_VERSION, GW_VIMG_VERSION_SEGMENTS);
	put32(h + S_HEADER_BYTES, GW_VIMG_SEG_HEADER_BYTES);
	memcpy(h + S_ID, v->id, 16);
	put32(h + S_INDEX, k);
	put32(h + S_COUNT, v->nsegments);
	put64(h + S_DATA_BYTES, k < GW_VIMG_MAX_SEGMENTS ? v->seg_bytes[k] : 0);
	put64(h + S_STRIPE, v->stripe_bytes);
	put32(h + S_CRC, gw_crc32c(0, h, S_CRC));
}

int gw_vimg_check_segment_fd(const struct gw_vimg *v, uint32_t k, int fd, char *err,
			     size_t errlen)
{
	uint8_t h[GW_VIMG_SEG_HEADER_BYTES];
	struct stat st;
	int r;

	if (k >= v->nsegments)
		return fail(err, errlen, "segment %u of an image of %u segments", k, v->nsegments);
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, "segment %u is not a regular file", k);
	if ((uint64_t)st.st_size < GW_VIMG_SEG_HEADER_BYTES)
		return fail(err, errlen, "segment %u has %lld bytes: too short for a segment "
			    "(truncated?)", k, (long long)st.st_size);
	r = gw_vimg_pread(fd, h, sizeof(h), 0);
	if (r < 0)
		return fail(err, errlen, "cannot read segment %u's header: %s", k, strerror(-r));
	if (memcmp(h + S_MAGIC, GW_VIMG_SEG_MAGIC, 8) != 0)
		return fail(err, errlen, "segment %u is not a gpu-warmd VRAM image segment (bad "
			    "magic)", k);
	if (get32(h + S_CRC) != gw_crc32c(0, h, S_CRC))
		return fail(err, errlen, "segment %u's header is corrupt (checksum mismatch)", k);
	if (get32(h + S_VERSION) != GW_VIMG_VERSION_SEGMENTS ||
	    get32(h + S_HEADER_BYTES) != GW_VIMG_SEG_HEADER_BYTES || get32(h + S_RESERVED))
		return fail(err, errlen, "segment %u: unknown segment header version or layout", k);
	for (size_t i = S_END; i < sizeof(h); i++)
		if (h[i])
			return fail(err, errlen, "segment %u: reserved header byte %zu is set", k, i);
	if (memcmp(h + S_ID, v->id, 16) != 0)
		return fail(err, errlen, "segment %u belongs to another image (its image id "
			    "differs): a segment of another dump?", k);
	if (get32(h + S_COUNT) != v->nsegments || get32(h + S_INDEX) != k)
		return fail(err, errlen, "the file given as segment %u is segment %u of %u: "
			    "segments mixed up?", k, get32(h + S_INDEX), get32(h + S_COUNT));
	if (get64(h + S_DATA_BYTES) != v->seg_bytes[k] || get64(h + S_STRIPE) != v->stripe_bytes)
		return fail(err, errlen, "segment %u's header does not match the image's segment "
			    "table", k);
	if ((uint64_t)st.st_size != gw_vimg_segment_file_bytes(v, k))
		return fail(err, errlen, "segment %u has %lld bytes, the image says %llu: it is "
			    "truncated or was extended", k, (long long)st.st_size,
			    (unsigned long long)gw_vimg_segment_file_bytes(v, k));
	return 0;
}

