/* SPDX-License-Identifier: MIT */
/* The VRAM image format (common/gw-vimg.h): round trips, and refusal of every kind of damage. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw-chunksum.h"
#include "gw-crc32c.h"
#include "gw-test.h"
#include "gw-vimg.h"

#define CHUNK (64u << 10)

/* Three ranges: data/zero/data/zero chunks, all zero, all data with a partial last chunk. */
static void build(struct gw_vimg *v)
{
	static const int pattern0[] = { 1, 1, 0, 0, 0, 1, 0 };
	struct gw_chunk_scan scans[16];
	struct gw_vimg_range r;

	GW_ASSERT_INT_EQ(gw_vimg_init(v, CHUNK, GW_VIMG_F_SPARSE | GW_VIMG_F_SUMS), 0);
	memset(&r, 0, sizeof(r));
	r.va = 0x7f0000000000ull;
	r.size = 7 * CHUNK;
	r.uuid[0] = 0xab;
	for (int i = 0; i < 7; i++)
		scans[i] = (struct gw_chunk_scan){ (uint64_t)pattern0[i], 1000u + (uint64_t)i };
	GW_ASSERT_INT_EQ(gw_vimg_add_range(v, &r, scans), 0);
	r.va += 16 * CHUNK;
	r.size = 3 * CHUNK;
	r.app_device = 1;
	for (int i = 0; i < 3; i++)
		scans[i] = (struct gw_chunk_scan){ 0, 7 };
	GW_ASSERT_INT_EQ(gw_vimg_add_range(v, &r, scans), 0);
	r.va += 16 * CHUNK;
	r.size = 2 * CHUNK + 4096;
	GW_ASSERT_INT_EQ(gw_vimg_add_range(v, &r, NULL), 0);
	GW_ASSERT_INT_EQ(gw_vimg_finalize(v), 0);
}

static uint8_t *encode(const struct gw_vimg *v, size_t *len)
{
	uint8_t *buf = NULL;

	GW_ASSERT_INT_EQ(gw_vimg_encode(v, &buf, len), 0);
	return buf;
}

/* Rewrite the tables' CRC (and so the header's) after a deliberate change to the tables. */
static void reseal(uint8_t *buf, const struct gw_vimg *v)
{
	uint32_t crc = gw_crc32c(0, buf + GW_VIMG_HEADER_BYTES, gw_vimg_table_bytes(v));

	memcpy(buf + 248, &crc, 4); /* little-endian host */
	crc = gw_crc32c(0, buf, 252);
	memcpy(buf + 252, &crc, 4);
}

GW_TEST(runs_merge_and_totals_add_up)
{
	struct gw_vimg v;

	build(&v);
	GW_ASSERT_INT_EQ(v.nranges, 3);
	GW_ASSERT_INT_EQ(v.ranges[0].nruns, 4); /* 11 000 1 0 */
	GW_ASSERT_INT_EQ(v.ranges[1].nruns, 1);
	GW_ASSERT_INT_EQ(v.runs[v.ranges[1].first_run].zero, 1);
	GW_ASSERT_INT_EQ(v.ranges[2].nruns, 1);
	GW_ASSERT_INT_EQ(v.nchunks, 7 + 3 + 3);
	GW_ASSERT_INT_EQ(v.vram_bytes, 12 * CHUNK + 4096);
	GW_ASSERT_INT_EQ(v.data_bytes, 3 * CHUNK + 2 * CHUNK + 4096);
	GW_ASSERT_INT_EQ(v.zero_bytes, 7 * CHUNK);
	GW_ASSERT_INT_EQ(v.ranges[2].data_offset, 3 * CHUNK);
	GW_ASSERT_INT_EQ(v.data_offset % GW_VIMG_DATA_ALIGN, 0);
	GW_ASSERT_INT_EQ(v.file_bytes, v.data_offset + v.data_bytes);
	gw_vimg_clear(&v);
}

GW_TEST(encode_decode_round_trip)
{
	struct gw_vimg v, w;
	char err[256] = "";
	size_t len;
	uint8_t *buf;

	build(&v);
	v.pid = 4242;
	v.copy_in_bps = 55000000000ull;
	memset(v.id, 0x5a, sizeof(v.id));
	buf = encode(&v, &len);
	GW_ASSERT_INT_EQ(len, v.data_offset);
	if (gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0)
		GW_FAIL("decode: %s", err);
	GW_ASSERT_INT_EQ(w.pid, 4242);
	GW_ASSERT_INT_EQ(w.copy_in_bps, 55000000000ull);
	GW_ASSERT(memcmp(w.id, v.id, 16) == 0);
	GW_ASSERT_INT_EQ(w.nranges, v.nranges);
	GW_ASSERT_INT_EQ(w.nruns, v.nruns);
	for (uint32_t i = 0; i < v.nranges; i++) {
		GW_ASSERT_INT_EQ(w.ranges[i].va, v.ranges[i].va);
		GW_ASSERT_INT_EQ(w.ranges[i].size, v.ranges[i].size);
		GW_ASSERT_INT_EQ(w.ranges[i].app_device, v.ranges[i].app_device);
		GW_ASSERT_INT_EQ(w.ranges[i].data_bytes, v.ranges[i].data_bytes);
		GW_ASSERT(memcmp(w.ranges[i].uuid, v.ranges[i].uuid, 16) == 0);
	}
	for (uint64_t i = 0; i < v.nruns; i++) {
		GW_ASSERT_INT_EQ(w.runs[i].zero, v.runs[i].zero);
		GW_ASSERT_INT_EQ(w.runs[i].nchunks, v.runs[i].nchunks);
		GW_ASSERT_INT_EQ(w.runs[i].data_offset, v.runs[i].data_offset);
	}
	for (uint64_t i = 0; i < v.nchunks; i++)
		GW_ASSERT_INT_EQ(w.sums[i], v.sums[i]);
	free(buf);
	gw_vimg_clear(&v);
	gw_vimg_clear(&w);
}

GW_TEST(every_header_bit_flip_is_refused)
{
	struct gw_vimg v, w;
	char err[256];
	size_t len;
	uint8_t *buf;

	build(&v);
	buf = encode(&v, &len);
	for (size_t bit = 0; bit < GW_VIMG_HEADER_BYTES * 8; bit++) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
		GW_ASSERT(w.ranges == NULL);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	free(buf);
	gw_vimg_clear(&v);
}

GW_TEST(table_damage_is_refused)
{
	struct gw_vimg v, w;
	char err[256] = "";
	size_t len;
	uint8_t *buf;

	build(&v);
	buf = encode(&v, &len);
	buf[GW_VIMG_HEADER_BYTES + 70] ^= 1; /* inside the tables: CRC catches it */
	GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "tables are corrupt");
	buf[GW_VIMG_HEADER_BYTES + 70] ^= 1;
	GW_ASSERT(gw_vimg_decode(&w, buf, GW_VIMG_HEADER_BYTES + gw_vimg_table_bytes(&v) / 2, err,
				 sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "only part");
	free(buf);
	gw_vimg_clear(&v);
}

/* A run table that is wrong yet carries a valid CRC (a bug or a forgery) is refused too. */
GW_TEST(corrupt_run_table_with_valid_crc_is_refused)
{
	static const struct {
		size_t field; /* byte offset in the first run */
		uint32_t value;
		const char *expect;
	} cases[] = {
		{ 8, 3, "run table is corrupt" },       /* nchunks: overlaps the next run */
		{ 12, 2, "run table is corrupt" },      /* kind */
		{ 16, 12345, "run table is corrupt" },  /* data offset */
		{ 0, 1, "run table is corrupt" },       /* first chunk: a gap */
	};
	struct gw_vimg v, w;
	char err[256];

	build(&v);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		uint8_t *buf = encode(&v, &len);
		uint8_t *run0 = buf + GW_VIMG_HEADER_BYTES + v.nranges * GW_VIMG_RANGE_BYTES;

		memcpy(run0 + cases[i].field, &cases[i].value, 4);
		reseal(buf, &v);
		err[0] = 0;
		GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
		GW_ASSERT_STR_CONTAINS(err, cases[i].expect);
		GW_ASSERT(w.ranges == NULL);
		free(buf);
	}
	gw_vimg_clear(&v);
}

GW_TEST(overlapping_ranges_are_refused)
{
	struct gw_vimg v, w;
	char err[256] = "";
	size_t len;
	uint8_t *buf;

	build(&v);
	buf = encode(&v, &len);
	/* Range 1 starts inside range 0. */
	uint64_t va = v.ranges[0].va + CHUNK;
	memcpy(buf + GW_VIMG_HEADER_BYTES + GW_VIMG_RANGE_BYTES, &va, 8);
	reseal(buf, &v);
	GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "overlap");
	free(buf);
	gw_vimg_clear(&v);
}

GW_TEST(other_version_is_named)
{
	struct gw_vimg v, w;
	char err[256] = "";
	size_t len;
	uint8_t *buf;
	uint32_t version = 7, crc;

	build(&v);
	buf = encode(&v, &len);
	memcpy(buf + 8, &version, 4);
	crc = gw_crc32c(0, buf, 252);
	memcpy(buf + 252, &crc, 4);
	GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "version 7");
	memcpy(buf, "NOTANIMG", 8);
	GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "not a gpu-warmd VRAM image");
	free(buf);
	gw_vimg_clear(&v);
}

static int write_image(const struct gw_vimg *v, const char *path, uint64_t cut)
{
	size_t len;
	uint8_t *buf = encode(v, &len);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	GW_ASSERT(fd >= 0);
	GW_ASSERT(write(fd, buf, len) == (ssize_t)len);
	GW_ASSERT(ftruncate(fd, (off_t)(v->file_bytes - cut)) == 0);
	free(buf);
	return fd;
}

GW_TEST(files_truncated_or_not_regular_are_refused)
{
	char dir[] = "/tmp/gw-vimg-XXXXXX", path[64], err[256] = "";
	struct gw_vimg v, w;
	int fd, pipefd[2];

	GW_ASSERT(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/img", dir);
	build(&v);
	fd = write_image(&v, path, 0);
	if (gw_vimg_read_fd(fd, &w, err, sizeof(err)) < 0)
		GW_FAIL("read: %s", err);
	GW_ASSERT_INT_EQ(w.data_bytes, v.data_bytes);
	gw_vimg_clear(&w);
	close(fd);
	fd = write_image(&v, path, 1);
	GW_ASSERT(gw_vimg_read_fd(fd, &w, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "truncated");
	close(fd);
	fd = write_image(&v, path, v.file_bytes - 100);
	GW_ASSERT(gw_vimg_read_fd(fd, &w, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "too short");
	close(fd);
	unlink(path);
	rmdir(dir);
	GW_ASSERT(pipe(pipefd) == 0);
	GW_ASSERT(gw_vimg_read_fd(pipefd[0], &w, err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "not a regular file");
	gw_vimg_clear(&v);
}

GW_TEST(builder_refuses_bad_input)
{
	struct gw_vimg v;
	struct gw_vimg_range r = { .va = 0x1000, .size = 12 };

	GW_ASSERT_INT_EQ(gw_vimg_init(&v, 3 << 20, 0), -EINVAL); /* not a power of two */
	GW_ASSERT_INT_EQ(gw_vimg_init(&v, 4096, 0), -EINVAL);    /* below the minimum */
	GW_ASSERT_INT_EQ(gw_vimg_init(&v, CHUNK, 0x80), -EINVAL);
	GW_ASSERT_INT_EQ(gw_vimg_init(&v, CHUNK, 0), 0);
	GW_ASSERT_INT_EQ(gw_vimg_add_range(&v, &r, NULL), -EINVAL); /* size not a multiple of 8 */
	r.size = 0;
	GW_ASSERT_INT_EQ(gw_vimg_add_range(&v, &r, NULL), -EINVAL);
	gw_vimg_clear(&v);
}

/* The host chunk scan: zero chunks found; a moved chunk changes its sum. */
GW_TEST(chunksum_finds_zeros_and_position)
{
	enum { WORDS = 4096, CW = 1024 };
	uint64_t *a = calloc(WORDS, 8);
	struct gw_chunk_scan s[4], t[4];

	for (int i = 0; i < CW; i++)
		a[i] = 0x1234 + (uint64_t)i;
	a[3 * CW + 5] = 1;
	gw_chunksum_range(a, WORDS * 8, CW * 8, s);
	GW_ASSERT_INT_EQ(s[0].nonzero, 1);
	GW_ASSERT_INT_EQ(s[1].nonzero, 0);
	GW_ASSERT_INT_EQ(s[2].nonzero, 0);
	GW_ASSERT_INT_EQ(s[3].nonzero, 1);
	GW_ASSERT_INT_EQ(s[1].sum, gw_chunksum_zero(CW, CW));
	GW_ASSERT(s[1].sum != s[2].sum); /* keyed by position */
	memcpy(a + CW, a, CW * 8);       /* chunk 0's content also at chunk 1 */
	gw_chunksum_range(a, WORDS * 8, CW * 8, t);
	GW_ASSERT(t[1].sum != t[0].sum);
	GW_ASSERT_INT_EQ(t[0].sum, s[0].sum);
	free(a);
}

GW_TEST(crc32c_known_value)
{
	/* The standard check value of CRC-32C. */
	GW_ASSERT_INT_EQ(gw_crc32c(0, "123456789", 9), 0xE3069283u);
	GW_ASSERT_INT_EQ(gw_crc32c(gw_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

/* Version 2: the data split over segments by pieces; round trip, the mapping, refusals. */
static void build_segmented(struct gw_vimg *v, uint32_t k, uint64_t stripe)
{
	static const int pattern0[] = { 1, 1, 0, 0, 0, 1, 0 };
	struct gw_chunk_scan scans[16];
	struct gw_vimg_range r;

	GW_ASSERT_INT_EQ(gw_vimg_init(v, CHUNK, GW_VIMG_F_SPARSE | GW_VIMG_F_SUMS), 0);
	GW_ASSERT_INT_EQ(gw_vimg_set_segments(v, k, stripe), 0);
	memset(&r, 0, sizeof(r));
	r.va = 0x7f0000000000ull;
	r.size = 7 * CHUNK;
	for (int i = 0; i < 7; i++)
		scans[i] = (struct gw_chunk_scan){ (uint64_t)pattern0[i], 1000u + (uint64_t)i };
	GW_ASSERT_INT_EQ(gw_vimg_add_range(v, &r, scans), 0);
	r.va += 16 * CHUNK;
	r.size = 5 * CHUNK + 4096;
	GW_ASSERT_INT_EQ(gw_vimg_add_range(v, &r, NULL), 0);
	GW_ASSERT_INT_EQ(gw_vimg_finalize(v), 0);
}

GW_TEST(segmented_image_round_trips_and_maps_pieces)
{
	struct gw_vimg v, w;
	struct gw_vimg_pieces it;
	struct gw_vimg_piece p;
	char err[256] = "";
	uint64_t fill[GW_VIMG_MAX_SEGMENTS] = { 0 }, next_data = 0;
	unsigned n = 0;
	size_t len;
	uint8_t *buf;

	build_segmented(&v, 3, CHUNK);
	/* range 0: 3 data chunks (3 pieces); range 1: 5 chunks + 4096 (6 pieces) */
	GW_ASSERT_INT_EQ(v.version, 2);
	GW_ASSERT_INT_EQ(v.file_bytes, v.data_offset); /* the head holds no data */
	GW_ASSERT_INT_EQ(v.seg_bytes[0], 3 * CHUNK);
	GW_ASSERT_INT_EQ(v.seg_bytes[1], 3 * CHUNK);
	GW_ASSERT_INT_EQ(v.seg_bytes[2], 2 * CHUNK + 4096);
	gw_vimg_pieces_start(&v, 12345, &it);
	while (gw_vimg_pieces_next(&v, &it, &p)) {
		GW_ASSERT_INT_EQ(p.segment, n % 3);
		GW_ASSERT_INT_EQ(p.offset, GW_VIMG_SEG_HEADER_BYTES + fill[p.segment]);
		GW_ASSERT_INT_EQ(p.data_offset, next_data);
		GW_ASSERT_INT_EQ(p.range, n < 3 ? 0 : 1);
		fill[p.segment] += p.len;
		next_data += p.len;
		n++;
	}
	GW_ASSERT_INT_EQ(n, 9);
	GW_ASSERT_INT_EQ(next_data, v.data_bytes);
	memset(v.id, 0x77, sizeof(v.id));
	buf = encode(&v, &len);
	GW_ASSERT_INT_EQ(buf[8], 2);
	if (gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0)
		GW_FAIL("decode: %s", err);
	GW_ASSERT_INT_EQ(w.nsegments, 3);
	GW_ASSERT_INT_EQ(w.stripe_bytes, CHUNK);
	for (int k = 0; k < 3; k++)
		GW_ASSERT_INT_EQ(w.seg_bytes[k], v.seg_bytes[k]);
	gw_vimg_clear(&w);
	/* a segment size that does not match the pieces, behind a valid CRC */
	{
		uint64_t bad = v.seg_bytes[1] + 8;

		memcpy(buf + GW_VIMG_HEADER_BYTES + gw_vimg_table_bytes(&v) - 16, &bad, 8);
		reseal(buf, &v);
		GW_ASSERT(gw_vimg_decode(&w, buf, len, err, sizeof(err)) < 0);
		GW_ASSERT_STR_CONTAINS(err, "segment table");
	}
	free(buf);
	/* version 1 pieces: where the data section is, cut by the caller's size */
	gw_vimg_clear(&v);
	build(&v);
	GW_ASSERT_INT_EQ(v.version, 1);
	gw_vimg_pieces_start(&v, CHUNK, &it);
	GW_ASSERT(gw_vimg_pieces_next(&v, &it, &p));
	GW_ASSERT_INT_EQ(p.offset, v.data_offset);
	GW_ASSERT_INT_EQ(p.segment, 0);
	gw_vimg_clear(&v);
}

GW_TEST(segment_files_are_checked)
{
	char dir[] = "/tmp/gw-vimg-XXXXXX", path[64], err[256] = "";
	uint8_t h[GW_VIMG_SEG_HEADER_BYTES];
	struct gw_vimg v, other;
	int fd[3];

	GW_ASSERT(mkdtemp(dir));
	build_segmented(&v, 3, CHUNK);
	memset(v.id, 0x11, sizeof(v.id));
	for (int k = 0; k < 3; k++) {
		snprintf(path, sizeof(path), "%s/seg-%d", dir, k);
		fd[k] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		GW_ASSERT(fd[k] >= 0);
		gw_vimg_segment_header(&v, (uint32_t)k, h);
		GW_ASSERT(pwrite(fd[k], h, sizeof(h), 0) == (ssize_t)sizeof(h));
		GW_ASSERT(ftruncate(fd[k], (off_t)gw_vimg_segment_file_bytes(&v, (uint32_t)k)) == 0);
	}
	for (int k = 0; k < 3; k++)
		if (gw_vimg_check_segment_fd(&v, (uint32_t)k, fd[k], err, sizeof(err)) < 0)
			GW_FAIL("segment %d: %s", k, err);
	/* swapped */
	GW_ASSERT(gw_vimg_check_segment_fd(&v, 0, fd[1], err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "is segment 1 of 3");
	/* of another image */
	other = v;
	memset(other.id, 0x22, sizeof(other.id));
	GW_ASSERT(gw_vimg_check_segment_fd(&other, 0, fd[0], err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "another image");
	/* short */
	GW_ASSERT(ftruncate(fd[2], 4096 + 100) == 0);
	GW_ASSERT(gw_vimg_check_segment_fd(&v, 2, fd[2], err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "truncated");
	/* a header bit flipped */
	h[40] ^= 1;
	GW_ASSERT(pwrite(fd[2], h, sizeof(h), 0) == (ssize_t)sizeof(h));
	GW_ASSERT(gw_vimg_check_segment_fd(&v, 2, fd[2], err, sizeof(err)) < 0);
	GW_ASSERT_STR_CONTAINS(err, "corrupt");
	for (int k = 0; k < 3; k++) {
		close(fd[k]);
		snprintf(path, sizeof(path), "%s/seg-%d", dir, k);
		unlink(path);
	}
	rmdir(dir);
	GW_ASSERT(gw_vimg_set_segments(&v, GW_VIMG_MAX_SEGMENTS + 1, CHUNK) < 0);
	GW_ASSERT(gw_vimg_set_segments(&v, 2, CHUNK + 1) < 0);
	gw_vimg_clear(&v);
}

GW_TEST_MAIN()
