/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the tar reader (common/gw-tar.c) that `warmctl inspect ARCHIVE` runs on
 * untrusted archives: whatever the input, it ends (error or end of archive) within its bounds,
 * every entry it returns has a bounded, NUL-terminated name without a leading "./", a bounded
 * link target only when it is a symlink or hardlink (and then no data), and reading an entry's
 * data never returns more than the entry holds. Mutations mostly break the header checksums, so
 * inputs of odd length get the checksums of their ustar-looking blocks fixed first: that drives
 * the parsing behind them.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw-tar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Statistics for fuzz-replay. */
unsigned long fuzz_proto_payloads, fuzz_proto_accepted;

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "fuzz-tar: %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
			abort();                                                                  \
		}                                                                                 \
	} while (0)

static void fix_checksums(uint8_t *buf, size_t size)
{
	for (size_t off = 0; off + GW_TAR_BLOCK <= size; off += GW_TAR_BLOCK) {
		uint8_t *h = buf + off;
		unsigned sum = 0;

		if (memcmp(h + 257, "ustar", 5) != 0)
			continue;
		memset(h + 148, ' ', 8);
		for (int i = 0; i < GW_TAR_BLOCK; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
	}
}

static void walk(const uint8_t *buf, size_t size)
{
	struct gw_tar_entry *e = malloc(sizeof(*e));
	struct gw_tar *t;
	char err[256] = "", data[777];
	unsigned n = 0;
	int r;

	if (!e || gw_tar_open_mem(buf, size, &t) < 0) {
		free(e);
		return;
	}
	while ((r = gw_tar_next(t, e, err, sizeof(err))) > 0) {
		uint64_t got = 0;
		long k;

		CHECK(strlen(e->name) <= GW_TAR_MAX_NAME);
		CHECK(strncmp(e->name, "./", 2) != 0);
		CHECK(strlen(e->linkname) <= GW_TAR_MAX_NAME);
		CHECK(e->linkname[0] == '\0' || e->type == '1' || e->type == '2');
		CHECK((e->type != '1' && e->type != '2') || e->size == 0);
		CHECK(e->size <= GW_TAR_MAX_ENTRY_BYTES);
		/* read some entries' data in odd-sized pieces, skip the others' */
		while (n++ % 2 == 0 &&
		       (k = gw_tar_read(t, data, sizeof(data), err, sizeof(err))) > 0)
			got += (uint64_t)k;
		CHECK(got <= e->size);
		fuzz_proto_payloads++;
	}
	if (r == 0)
		fuzz_proto_accepted++;
	else
		CHECK(r != -EBADMSG || err[0] != '\0');
	CHECK(gw_tar_bytes(t) <= (uint64_t)1 << 40);
	gw_tar_destroy(t);
	free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf;

	if (size > (4u << 20))
		return 0;
	buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (size & 1)
		fix_checksums(buf, size);
	walk(buf, size);
	free(buf);
	return 0;
}
