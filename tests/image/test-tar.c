/* SPDX-License-Identifier: MIT */
/*
 * The tar reader (common/gw-tar.c) on archives built here byte by byte: ustar names with a
 * prefix, GNU base-256 sizes and long names, pax path and size, link targets (ustar, pax
 * linkpath, GNU 'K'), gzip, entries skipped with lseek on a file, and what it must refuse: bad
 * checksums, truncation, oversized headers and link names.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "gw-tar.h"
#include "gw-test.h"

struct arc {
	uint8_t *buf;
	size_t len;
};

static void put_block(struct arc *a, const uint8_t *b, size_t n)
{
	size_t padded = (n + 511) / 512 * 512;

	a->buf = realloc(a->buf, a->len + padded);
	GW_ASSERT(a->buf);
	memset(a->buf + a->len, 0, padded);
	memcpy(a->buf + a->len, b, n);
	a->len += padded;
}

/* n bytes of zeros, padded. */
static void zeros(struct arc *a, size_t n)
{
	size_t padded = (n + 511) / 512 * 512;

	a->buf = realloc(a->buf, a->len + padded);
	GW_ASSERT(a->buf);
	memset(a->buf + a->len, 0, padded);
	a->len += padded;
}

/* A header: name, type, size (octal; base-256 when size does not fit 11 digits or big), the
 * ustar link name field (link, or NULL). */
static void header_link(struct arc *a, const char *name, char type, uint64_t size, bool big,
			const char *link)
{
	uint8_t h[512] = { 0 };
	unsigned sum = 0;

	memcpy(h, name, strnlen(name, 100));
	if (link)
		memcpy(h + 157, link, strnlen(link, 100));
	memcpy(h + 100, "0000644", 7);
	if (big) {
		h[124] = 0x80;
		for (int i = 0; i < 8; i++)
			h[135 - i] = (uint8_t)(size >> (8 * i));
	} else {
		char octal[32];

		snprintf(octal, sizeof(octal), "%011llo", (unsigned long long)size);
		memcpy(h + 124, octal, 11);
	}
	h[156] = (uint8_t)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	put_block(a, h, 512);
}

static void header(struct arc *a, const char *name, char type, uint64_t size, bool big)
{
	header_link(a, name, type, size, big, NULL);
}

/* A pax extended header ('x') of one record "LEN key=value\n". */
static void pax_header(struct arc *a, const char *key, const char *value)
{
	size_t body = strlen(key) + strlen(value) + 3, n = body + 1, len;
	char *rec;

	while (body + (size_t)snprintf(NULL, 0, "%zu", n) != n)
		n = body + (size_t)snprintf(NULL, 0, "%zu", n);
	rec = malloc(n + 1);
	GW_ASSERT(rec);
	len = (size_t)snprintf(rec, n + 1, "%zu %s=%s\n", n, key, value);
	GW_ASSERT(len == n);
	header(a, "PaxHeaders/x", 'x', n, false);
	put_block(a, (const uint8_t *)rec, n);
	free(rec);
}

/* A GNU long name ('L') or long link name ('K') header with its data, NUL included. */
static void gnu_long(struct arc *a, char type, const char *value)
{
	header(a, "././@LongLink", type, strlen(value) + 1, false);
	put_block(a, (const uint8_t *)value, strlen(value) + 1);
}

static void file(struct arc *a, const char *name, const char *data)
{
	header(a, name, '0', strlen(data), false);
	put_block(a, (const uint8_t *)data, strlen(data));
}

static void end(struct arc *a)
{
	static const uint8_t zero[1024];

	put_block(a, zero, sizeof(zero));
}

/* Every entry as "name:size:data-or-*;" (data read when short; "name->target:..." for a link),
 * or "ERR:message". */
static void walk(struct gw_tar *t, char *out, size_t len)
{
	struct gw_tar_entry *e = malloc(sizeof(*e));
	char err[256] = "", data[64];
	size_t o = 0;
	int r;

	GW_ASSERT(e);
	out[0] = '\0';
	while ((r = gw_tar_next(t, e, err, sizeof(err))) > 0) {
		long n = e->size < 32 ? gw_tar_read(t, data, sizeof(data) - 1, err, sizeof(err)) : 0;

		GW_ASSERT(n >= 0);
		data[n] = '\0';
		o += (size_t)snprintf(out + o, len - o, "%s%s%s:%llu:%s;", e->name,
				      e->linkname[0] ? "->" : "", e->linkname,
				      (unsigned long long)e->size, n ? data : "*");
		GW_ASSERT(o < len);
	}
	if (r < 0)
		snprintf(out + o, len - o, "ERR:%s", err);
	free(e);
}

static void walk_mem(const struct arc *a, char *out, size_t len)
{
	struct gw_tar *t;

	GW_ASSERT_INT_EQ(gw_tar_open_mem(a->buf, a->len, &t), 0);
	walk(t, out, len);
	gw_tar_destroy(t);
}

GW_TEST(names_sizes_and_long_names)
{
	struct arc a = { 0 };
	char out[2048], pax[] = "33 path=checkpoint/long-name.img\n16 size=1000000\n";
	char longname[300];

	file(&a, "./config.dump", "{}");
	header(&a, "big.img", '0', 600, true); /* GNU base-256 size */
	zeros(&a, 600);
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	header(&a, "././@LongLink", 'L', strlen(longname) + 1, false);
	put_block(&a, (const uint8_t *)longname, strlen(longname) + 1);
	file(&a, "short", "ab");
	header(&a, "PaxHeaders/x", 'x', strlen(pax), false);
	put_block(&a, (const uint8_t *)pax, strlen(pax));
	header(&a, "x", '0', 999, false); /* pax size wins */
	zeros(&a, 1000000);
	header(&a, "dir/", '5', 0, false);
	end(&a);
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_INT_EQ(strncmp(out, "config.dump:2:{};big.img:600:*;nnnn", 35), 0);
	GW_ASSERT_STR_CONTAINS(out, "nnn:2:ab;checkpoint/long-name.img:1000000:*;dir/:0:*;");
	GW_ASSERT(!strstr(out, "ERR"));
	free(a.buf);
}

/* What a `podman container checkpoint --export` of a checkpoint taken with gpu-warmd's VRAM
 * store holds: segment files as symlinks, their targets in each format tar(1) writes. */
GW_TEST(symlinks_pax_linkpath_and_gnu_long_link_names)
{
	struct arc a = { 0 };
	char out[16384], want[12288], target[301], name[201];

	memset(target, 't', sizeof(target) - 1);
	target[0] = '/';
	target[sizeof(target) - 1] = '\0';
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	/* ustar: the 100-byte link name field; a symlink's size field is not its data */
	header_link(&a, "./checkpoint/gpuwarm-vram-7.img.seg-0", '2', 0, false,
		    "/var/lib/gpu-warmd/vram/gpuwarm-vram-7.img.seg-0.1a2b3c");
	header_link(&a, "hard", '1', 0, false, "./checkpoint/inventory.img");
	/* pax linkpath, over the header's own field */
	pax_header(&a, "linkpath", target);
	header_link(&a, "checkpoint/gpuwarm-vram-7.img.seg-1", '2', 0, false, "short");
	/* GNU: a long link name ('K') and a long name ('L') */
	gnu_long(&a, 'K', target);
	gnu_long(&a, 'L', name);
	header_link(&a, "cut", '2', 0, false, "cut-target");
	/* a file's link name field is no target; nor does a pax linkpath make it one */
	header_link(&a, "file", '0', 2, false, "junk");
	put_block(&a, (const uint8_t *)"ab", 2);
	pax_header(&a, "linkpath", "stray");
	file(&a, "file2", "cd");
	end(&a);
	walk_mem(&a, out, sizeof(out));
	snprintf(want, sizeof(want), "checkpoint/gpuwarm-vram-7.img.seg-0->/var/lib/gpu-warmd/vram/"
		 "gpuwarm-vram-7.img.seg-0.1a2b3c:0:*;hard->./checkpoint/inventory.img:0:*;"
		 "checkpoint/gpuwarm-vram-7.img.seg-1->%s:0:*;%s->%s:0:*;file:2:ab;file2:2:cd;",
		 target, name, target);
	GW_ASSERT_STR_EQ(out, want);
	free(a.buf);
}

/* The length of the link target of an archive's only entry, a symlink. */
static size_t only_link_bytes(const struct arc *a)
{
	struct gw_tar_entry *e = malloc(sizeof(*e));
	struct gw_tar *t;
	char err[256] = "";
	size_t n;

	GW_ASSERT(e);
	GW_ASSERT_INT_EQ(gw_tar_open_mem(a->buf, a->len, &t), 0);
	GW_ASSERT_INT_EQ(gw_tar_next(t, e, err, sizeof(err)), 1);
	GW_ASSERT(e->type == '2');
	n = strlen(e->linkname);
	GW_ASSERT_INT_EQ(gw_tar_next(t, e, err, sizeof(err)), 0);
	gw_tar_destroy(t);
	free(e);
	return n;
}

/* a's headers so far, then a symlink entry "l" and the end: walked, the walk is want. */
static void link_entry_walks_as(struct arc *a, const char *want)
{
	char out[1024];

	header(a, "l", '2', 0, false);
	end(a);
	walk_mem(a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, want);
	free(a->buf);
	memset(a, 0, sizeof(*a));
}

/* A link name out of bounds is refused as a name is. */
GW_TEST(bad_link_names_are_refused)
{
	struct arc a = { 0 };
	char out[1024], *huge = malloc(GW_TAR_MAX_NAME + 2);
	char nul[] = "15 linkpath=ab\n";

	GW_ASSERT(huge);
	memset(huge, 'k', GW_TAR_MAX_NAME + 1);
	huge[GW_TAR_MAX_NAME + 1] = '\0';
	gnu_long(&a, 'K', huge);
	link_entry_walks_as(&a, "ERR:a GNU long link name too long");

	pax_header(&a, "linkpath", huge);
	link_entry_walks_as(&a, "ERR:a pax linkpath too long or with NUL");

	nul[12] = '\0';
	header(&a, "p", 'x', sizeof(nul) - 1, false);
	put_block(&a, (const uint8_t *)nul, sizeof(nul) - 1);
	link_entry_walks_as(&a, "ERR:a pax linkpath too long or with NUL");

	/* just under the bound: taken whole */
	huge[GW_TAR_MAX_NAME] = '\0';
	gnu_long(&a, 'K', huge);
	header(&a, "l", '2', 0, false);
	end(&a);
	GW_ASSERT_INT_EQ(only_link_bytes(&a), GW_TAR_MAX_NAME);
	free(a.buf);

	/* a long link name with no entry after it: the archive ends inside a header */
	memset(&a, 0, sizeof(a));
	file(&a, "a", "1");
	gnu_long(&a, 'K', "target");
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, "a:1:1;ERR:the archive ends inside a header");
	free(a.buf);
	free(huge);
}

GW_TEST(gzip_and_lseek_over_a_file)
{
	struct arc a = { 0 };
	char out[1024], path[] = "gw-test-tar-XXXXXX"; /* in the test's directory */
	uint8_t *gz = malloc(1 << 21);
	z_stream z = { 0 };
	struct gw_tar *t;
	int fd;

	GW_ASSERT(gz);
	file(&a, "a", "1");
	header(&a, "pages-1.img", '0', 1 << 20, false);
	zeros(&a, 1 << 20);
	file(&a, "b", "2");
	end(&a);
	GW_ASSERT_INT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = a.buf;
	z.avail_in = (uInt)a.len;
	z.next_out = gz;
	z.avail_out = 1 << 21;
	GW_ASSERT_INT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
	GW_ASSERT_INT_EQ(gw_tar_open_mem(gz, z.total_out, &t), 0);
	walk(t, out, sizeof(out));
	GW_ASSERT(gw_tar_compressed(t) && gw_tar_raw_bytes(t) == z.total_out);
	gw_tar_destroy(t);
	GW_ASSERT_STR_EQ(out, "a:1:1;pages-1.img:1048576:*;b:1:2;");
	deflateEnd(&z);
	/* a plain file: the big entry is skipped with lseek, and a cut one is found out */
	fd = mkstemp(path);
	GW_ASSERT(fd >= 0 && write(fd, a.buf, a.len) == (ssize_t)a.len);
	GW_ASSERT(lseek(fd, 0, SEEK_SET) == 0);
	GW_ASSERT_INT_EQ(gw_tar_open_fd(fd, &t), 0);
	walk(t, out, sizeof(out));
	GW_ASSERT(!gw_tar_compressed(t) && gw_tar_bytes(t) == a.len - 512); /* 1 end block read */
	gw_tar_destroy(t);
	GW_ASSERT_STR_EQ(out, "a:1:1;pages-1.img:1048576:*;b:1:2;");
	GW_ASSERT(ftruncate(fd, 4096) == 0 && lseek(fd, 0, SEEK_SET) == 0);
	GW_ASSERT_INT_EQ(gw_tar_open_fd(fd, &t), 0);
	walk(t, out, sizeof(out));
	gw_tar_destroy(t);
	GW_ASSERT_STR_EQ(out, "a:1:1;pages-1.img:1048576:*;ERR:the archive ends inside an entry");
	close(fd);
	unlink(path);
	free(gz);
	free(a.buf);
}

GW_TEST(corrupt_archives_are_refused)
{
	struct arc a = { 0 };
	char out[1024], pax[] = "99 path=x\n";

	file(&a, "a", "1");
	file(&a, "b", "2");
	end(&a);
	a.buf[512 + 520] ^= 1; /* b's header */
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, "a:1:1;ERR:a header with a bad checksum (corrupt archive)");
	a.len = 1024 + 300;
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, "a:1:1;ERR:the archive ends inside a header");
	a.buf[0] ^= 1;
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, "ERR:not a tar archive");
	free(a.buf);

	memset(&a, 0, sizeof(a));
	header(&a, "p", 'x', strlen(pax), false);
	put_block(&a, (const uint8_t *)pax, strlen(pax));
	file(&a, "a", "1");
	end(&a);
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, "ERR:a malformed pax record");
	free(a.buf);

	memset(&a, 0, sizeof(a));
	header(&a, "p", 'x', GW_TAR_MAX_PAX_BYTES + 1, false);
	end(&a);
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_CONTAINS(out, "ERR:an extended header of 65537 bytes");
	free(a.buf);

	memset(&a, 0, sizeof(a));
	header(&a, "huge", '0', GW_TAR_MAX_ENTRY_BYTES + 1, true);
	end(&a);
	walk_mem(&a, out, sizeof(out));
	GW_ASSERT_STR_EQ(out, "ERR:a header with a bad size");
	free(a.buf);
}

GW_TEST_MAIN()
