/* SPDX-License-Identifier: MIT */
/* A bounded, streaming tar reader (gw-tar.h). */
#include "gw-tar.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#define IN_BYTES (64u << 10)

struct gw_tar {
	int fd; /* -1: reading mem */
	const uint8_t *mem;
	size_t mem_len, mem_pos;
	bool gz, z_ready, z_end;
	bool seekable;      /* a plain regular file: data skipped with lseek() */
	uint64_t file_size; /* when seekable */
	z_stream z;
	uint8_t *in; /* compressed input (gz only) */
	uint64_t raw_bytes, out_bytes;
	uint64_t remaining; /* data bytes of the current entry not read yet */
	uint64_t pad;       /* padding after them */
	unsigned headers;
};

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* Bytes of the archive file itself: n, 0 at its end, or -errno. */
static long raw_read(struct gw_tar *t, void *buf, size_t len)
{
	long n;

	if (t->fd < 0) {
		n = (long)(t->mem_len - t->mem_pos < len ? t->mem_len - t->mem_pos : len);
		memcpy(buf, t->mem + t->mem_pos, (size_t)n);
		t->mem_pos += (size_t)n;
	} else {
		do
			n = read(t->fd, buf, len);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;
	}
	t->raw_bytes += (uint64_t)n;
	return n;
}

/* Uncompressed bytes: n (short only at the end), or -errno. */
static long src_read(struct gw_tar *t, uint8_t *buf, size_t len, char *err, size_t errlen)
{
	size_t done = 0;

	if (!t->gz) {
		while (done < len) {
			long n = raw_read(t, buf + done, len - done);

			if (n < 0)
				return fail(err, errlen, (int)n, "reading the archive: %s",
					    strerror((int)-n));
			if (n == 0)
				break;
			done += (size_t)n;
		}
		t->out_bytes += done;
		return (long)done;
	}
	t->z.next_out = buf;
	t->z.avail_out = (uInt)len;
	while (t->z.avail_out > 0 && !t->z_end) {
		int zr;

		if (t->z.avail_in == 0) {
			long n = raw_read(t, t->in, IN_BYTES);

			if (n < 0)
				return fail(err, errlen, (int)n, "reading the archive: %s",
					    strerror((int)-n));
			if (n == 0)
				break; /* truncated gzip: the tar layer says where */
			t->z.next_in = t->in;
			t->z.avail_in = (uInt)n;
		}
		zr = inflate(&t->z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END)
			t->z_end = true;
		else if (zr == Z_MEM_ERROR)
			return fail(err, errlen, -ENOMEM, "gzip: out of memory");
		else if (zr != Z_OK && zr != Z_BUF_ERROR)
			return fail(err, errlen, -EBADMSG, "gzip: corrupt data (%s)",
				    t->z.msg ? t->z.msg : "inflate failed");
	}
	done = len - t->z.avail_out;
	t->out_bytes += done;
	return (long)done;
}

static int open_common(struct gw_tar *t, struct gw_tar **ret)
{
	uint8_t magic[2];
	long n = raw_read(t, magic, sizeof(magic));

	if (n < 0) {
		free(t);
		return (int)n;
	}
	t->in = malloc(IN_BYTES);
	if (!t->in) {
		free(t);
		return -ENOMEM;
	}
	memcpy(t->in, magic, (size_t)n);
	t->gz = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
	if (t->gz) {
		/* 15 + 16: a gzip wrapper, not zlib's */
		if (inflateInit2(&t->z, 15 + 16) != Z_OK) {
			free(t->in);
			free(t);
			return -ENOMEM;
		}
		t->z_ready = true;
		t->z.next_in = t->in;
		t->z.avail_in = (uInt)n;
	} else {
		/* the two bytes peeked at are replayed by the plain reader */
		t->z.next_in = t->in;
		t->z.avail_in = (uInt)n;
	}
	*ret = t;
	return 0;
}

int gw_tar_open_fd(int fd, struct gw_tar **ret)
{
	struct gw_tar *t = calloc(1, sizeof(*t));
	struct stat st;

	if (!t)
		return -ENOMEM;
	t->fd = fd;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lseek(fd, 0, SEEK_CUR) == 0) {
		t->seekable = true;
		t->file_size = (uint64_t)st.st_size;
	}
	return open_common(t, ret);
}

int gw_tar_open_mem(const void *buf, size_t len, struct gw_tar **ret)
{
	struct gw_tar *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->fd = -1;
	t->mem = buf;
	t->mem_len = len;
	return open_common(t, ret);
}

void gw_tar_destroy(struct gw_tar *t)
{
	if (!t)
		return;
	if (t->z_ready)
		inflateEnd(&t->z);
	free(t->in);
	free(t);
}

/* Plain archives: the peeked bytes first, then the file. */
static long plain_read(struct gw_tar *t, uint8_t *buf, size_t len, char *err, size_t errlen)
{
	size_t first = 0;
	long n;

	if (!t->gz && t->z.avail_in > 0) {
		first = t->z.avail_in < len ? t->z.avail_in : len;
		memcpy(buf, t->z.next_in, first);
		t->z.next_in += first;
		t->z.avail_in -= (uInt)first;
		t->out_bytes += first;
		if (first == len)
			return (long)len;
	}
	n = src_read(t, buf + first, len - first, err, errlen);
	return n < 0 ? n : (long)first + n;
}

/* Skip n bytes: 0, or -EBADMSG when the archive ends first. */
static int skip(struct gw_tar *t, uint64_t n, char *err, size_t errlen)
{
	uint8_t buf[8192];

	if (n > 0 && !t->gz && t->seekable && t->z.avail_in == 0) { /* the peeked bytes are read */
		if (t->file_size < t->raw_bytes || t->file_size - t->raw_bytes < n)
			return fail(err, errlen, -EBADMSG, "the archive ends inside an entry");
		if (lseek(t->fd, (off_t)n, SEEK_CUR) < 0)
			return fail(err, errlen, -errno, "seeking in the archive: %s",
				    strerror(errno));
		t->raw_bytes += n;
		t->out_bytes += n;
		return 0;
	}
	while (n > 0) {
		size_t want = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		long got = plain_read(t, buf, want, err, errlen);

		if (got < 0)
			return (int)got;
		if ((size_t)got < want)
			return fail(err, errlen, -EBADMSG, "the archive ends inside an entry");
		n -= (uint64_t)got;
	}
	return 0;
}

/* An octal or (GNU) base-256 number field. */
static int parse_number(const uint8_t *f, size_t len, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) { /* base-256, big-endian, the top bit a flag */
		if (f[0] != 0x80)
			return -1; /* negative, or too big */
		for (i = 1; i < len; i++) {
			if (v >> 56)
				return -1;
			v = v << 8 | f[i];
		}
		*ret = v;
		return 0;
	}
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return -1;
		v = v << 3 | (uint64_t)(f[i] - '0');
	}
	if (i < len && f[i] != ' ' && f[i] != '\0')
		return -1;
	*ret = v;
	return 0;
}

static bool checksum_ok(const uint8_t *h)
{
	uint64_t want;
	unsigned long u = 0;
	long s = 0;

	if (parse_number(h + 148, 8, &want) < 0)
		return false;
	for (int i = 0; i < GW_TAR_BLOCK; i++) {
		uint8_t c = i >= 148 && i < 156 ? ' ' : h[i];

		u += c;
		s += (signed char)c;
	}
	return want == u || (long)want == s;
}

static int set_name(struct gw_tar_entry *e, const char *name, size_t len)
{
	if (len > GW_TAR_MAX_NAME || memchr(name, '\0', len))
		return -1;
	while (len >= 2 && name[0] == '.' && name[1] == '/') {
		name += 2;
		len -= 2;
		while (len && name[0] == '/') {
			name++;
			len--;
		}
	}
	memcpy(e->name, name, len);
	e->name[len] = '\0';
	return 0;
}

/* A symlink's or hardlink's target, as the archive holds it (bounded like a name). */
static int set_link(struct gw_tar_entry *e, const char *link, size_t len)
{
	if (len > GW_TAR_MAX_NAME || memchr(link, '\0', len))
		return -1;
	memcpy(e->linkname, link, len);
	e->linkname[len] = '\0';
	return 0;
}

/* The data of a long-name or pax header, NUL-terminated, into a new buffer. */
static int read_meta(struct gw_tar *t, uint64_t size, char **ret, char *err, size_t errlen)
{
	uint64_t padded = (size + GW_TAR_BLOCK - 1) / GW_TAR_BLOCK * GW_TAR_BLOCK;
	char *buf;
	long n;

	if (size > GW_TAR_MAX_PAX_BYTES)
		return fail(err, errlen, -EBADMSG, "an extended header of %llu bytes (at most %u)",
			    (unsigned long long)size, GW_TAR_MAX_PAX_BYTES);
	buf = malloc((size_t)padded + 1);
	if (!buf)
		return -ENOMEM;
	n = plain_read(t, (uint8_t *)buf, (size_t)padded, err, errlen);
	if (n < 0 || (uint64_t)n < padded) {
		free(buf);
		return n < 0 ? (int)n : fail(err, errlen, -EBADMSG,
					     "the archive ends inside an extended header");
	}
	buf[size] = '\0';
	*ret = buf;
	return 0;
}

struct pending {
	bool has_name, has_link, has_size;
	uint64_t size;
	struct gw_tar_entry *e;
};

static bool pax_key_is(const char *key, const char *eq, const char *want)
{
	size_t n = strlen(want);

	return (size_t)(eq - key) == n && memcmp(key, want, n) == 0;
}

/* A pax size record's value (v .. end, end excluded) into pd. */
static int pax_size(const char *v, const char *end, struct pending *pd, char *err, size_t errlen)
{
	uint64_t size = 0;

	if (v == end)
		return fail(err, errlen, -EBADMSG, "an empty pax size");
	for (; v < end; v++) {
		if (*v < '0' || *v > '9' || size > GW_TAR_MAX_ENTRY_BYTES)
			return fail(err, errlen, -EBADMSG, "a bad pax size");
		size = size * 10 + (uint64_t)(*v - '0');
	}
	pd->size = size;
	pd->has_size = true;
	return 0;
}

/* Records "LEN key=value\n" of a pax header: path, linkpath and size are used. */
static int parse_pax(const char *p, size_t len, struct pending *pd, char *err, size_t errlen)
{
	size_t off = 0;

	while (off < len) {
		const char *rec = p + off, *sp, *eq;
		uint64_t n = 0;
		size_t vlen;

		for (sp = rec; sp < p + len && *sp >= '0' && *sp <= '9'; sp++) {
			n = n * 10 + (uint64_t)(*sp - '0');
			if (n > len)
				break;
		}
		if (sp == rec || sp >= p + len || *sp != ' ' || n > len - off ||
		    n < (uint64_t)(sp - rec) + 3 || rec[n - 1] != '\n')
			return fail(err, errlen, -EBADMSG, "a malformed pax record");
		eq = memchr(sp + 1, '=', (size_t)(rec + n - 1 - (sp + 1)));
		if (!eq)
			return fail(err, errlen, -EBADMSG, "a pax record without '='");
		vlen = (size_t)(rec + n - 1 - (eq + 1));
		if (pax_key_is(sp + 1, eq, "path")) {
			if (set_name(pd->e, eq + 1, vlen) < 0)
				return fail(err, errlen, -EBADMSG,
					    "a pax path too long or with NUL");
			pd->has_name = true;
		} else if (pax_key_is(sp + 1, eq, "linkpath")) {
			if (set_link(pd->e, eq + 1, vlen) < 0)
				return fail(err, errlen, -EBADMSG,
					    "a pax linkpath too long or with NUL");
			pd->has_link = true;
		} else if (pax_key_is(sp + 1, eq, "size")) {
			int r = pax_size(eq + 1, rec + n - 1, pd, err, errlen);

			if (r < 0)
				return r;
		}
		off += (size_t)n;
	}
	return 0;
}

/* A header block's meta entry ('L', 'x', 'g', 'K'): 1 when it was one (consumed), 0 when not. */
static int meta_entry(struct gw_tar *t, char type, uint64_t size, struct pending *pd, char *err,
		      size_t errlen)
{
	char *data = NULL;
	int r;

	if (type != 'L' && type != 'K' && type != 'x' && type != 'g')
		return 0;
	r = read_meta(t, size, &data, err, errlen);
	if (r < 0)
		return r;
	if (type == 'L') {
		size_t len = strnlen(data, (size_t)size);

		if (set_name(pd->e, data, len) < 0)
			r = fail(err, errlen, -EBADMSG, "a GNU long name too long");
		else
			pd->has_name = true;
	} else if (type == 'K') {
		if (set_link(pd->e, data, strnlen(data, (size_t)size)) < 0)
			r = fail(err, errlen, -EBADMSG, "a GNU long link name too long");
		else
			pd->has_link = true;
	} else if (type == 'x') {
		r = parse_pax(data, (size_t)size, pd, err, errlen);
	}
	free(data);
	return r < 0 ? r : 1;
}

static int header_name(const uint8_t *h, struct gw_tar_entry *e)
{
	char buf[256 + 1];
	size_t n = strnlen((const char *)h, 100), p = 0;

	if (memcmp(h + 257, "ustar\0", 6) == 0) /* POSIX: a prefix; GNU's has other fields there */
		p = strnlen((const char *)h + 345, 155);
	if (p) {
		memcpy(buf, h + 345, p);
		buf[p++] = '/';
	}
	memcpy(buf + p, h, n);
	return set_name(e, buf, p + n);
}

/* The ustar link name field (no prefix: 100 bytes at most). */
static int header_link(const uint8_t *h, struct gw_tar_entry *e)
{
	return set_link(e, (const char *)h + 157, strnlen((const char *)h + 157, 100));
}

int gw_tar_next(struct gw_tar *t, struct gw_tar_entry *e, char *err, size_t errlen)
{
	struct pending pd = { .e = e };
	uint8_t h[GW_TAR_BLOCK];
	int r;

	r = skip(t, t->remaining + t->pad, err, errlen);
	if (r < 0)
		return r;
	t->remaining = t->pad = 0;
	for (;;) {
		static const uint8_t zero[GW_TAR_BLOCK];
		uint64_t size;
		long n;
		char type;

		n = plain_read(t, h, sizeof(h), err, errlen);
		if (n < 0)
			return (int)n;
		if (n == 0 && t->headers > 0 && !pd.has_name && !pd.has_link && !pd.has_size)
			return 0; /* no end blocks: the end of the file ends it */
		if (n < GW_TAR_BLOCK)
			return fail(err, errlen, -EBADMSG, t->headers ? "the archive ends inside "
						  "a header" : "not a tar archive (too short)");
		if (memcmp(h, zero, sizeof(h)) == 0)
			return t->headers ? 0 : fail(err, errlen, -EBADMSG, "an empty tar archive");
		if (!checksum_ok(h))
			return fail(err, errlen, -EBADMSG, "%s", t->headers ?
				    "a header with a bad checksum (corrupt archive)" :
				    "not a tar archive");
		if (++t->headers > GW_TAR_MAX_ENTRIES)
			return fail(err, errlen, -E2BIG, "more than %u entries",
				    GW_TAR_MAX_ENTRIES);
		if (parse_number(h + 124, 12, &size) < 0 || size > GW_TAR_MAX_ENTRY_BYTES)
			return fail(err, errlen, -EBADMSG, "a header with a bad size");
		type = h[156] ? (char)h[156] : '0';
		r = meta_entry(t, type, size, &pd, err, errlen);
		if (r < 0)
			return r;
		if (r)
			continue;
		if (!pd.has_name && header_name(h, e) < 0)
			return fail(err, errlen, -EBADMSG, "a header with a bad name");
		if (!pd.has_link && header_link(h, e) < 0)
			return fail(err, errlen, -EBADMSG, "a header with a bad link name");
		if (type != '1' && type != '2')
			e->linkname[0] = '\0'; /* only links have a target */
		if (pd.has_size)
			size = pd.size;
		e->type = type == '7' ? '0' : type;
		if (strchr("123456", type))
			size = 0; /* links, devices, directories, fifos: no data */
		e->size = size;
		t->remaining = size;
		t->pad = (GW_TAR_BLOCK - size % GW_TAR_BLOCK) % GW_TAR_BLOCK;
		return 1;
	}
}

long gw_tar_read(struct gw_tar *t, void *buf, size_t len, char *err, size_t errlen)
{
	long n;

	if (len > t->remaining)
		len = (size_t)t->remaining;
	if (len == 0)
		return 0;
	n = plain_read(t, buf, len, err, errlen);
	if (n < 0)
		return n;
	if ((size_t)n < len)
		return fail(err, errlen, -EBADMSG, "the archive ends inside an entry");
	t->remaining -= (uint64_t)n;
	return n;
}

int gw_tar_compressed(const struct gw_tar *t)
{
	return t->gz;
}

uint64_t gw_tar_raw_bytes(const struct gw_tar *t)
{
	return t->raw_bytes;
}

uint64_t gw_tar_bytes(const struct gw_tar *t)
{
	return t->out_bytes;
}
