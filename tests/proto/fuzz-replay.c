/* SPDX-License-Identifier: MIT */
/*
 * Replays every file of a corpus directory through LLVMFuzzerTestOneInput(), then feeds
 * MUTATIONS pseudo-random mutations of each (fixed seed, so a failure reproduces).
 * Usage: fuzz-replay DIR [MUTATIONS]
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLAY_MAX_FILE (2u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern unsigned long fuzz_proto_payloads, fuzz_proto_accepted;

static uint64_t next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static const uint8_t interesting[] = { 0x00, 0x01, 0x7f, 0x80, 0xff, '{', '}', '[', ']', '"',
				       '\\', ':', ',', '0', '9', '-', '.', 'e', 'G', 'W', 'R',
				       'M', 0xc3, 0xed, 0xf4 };

/* Mutate in[0..len) into out (capacity cap); returns the new length. */
static size_t mutate(const uint8_t *in, size_t len, uint8_t *out, size_t cap, uint64_t *s)
{
	size_t n = len < cap ? len : cap, rounds = 1 + next(s) % 4;

	memcpy(out, in, n);
	for (size_t i = 0; i < rounds; i++) {
		size_t pos = n ? next(s) % n : 0, m;

		switch (next(s) % 9) {
		case 0: /* flip a bit */
			if (n)
				out[pos] ^= (uint8_t)(1u << (next(s) % 8));
			break;
		case 1: /* random byte */
			if (n)
				out[pos] = (uint8_t)next(s);
			break;
		case 2: /* interesting byte */
			if (n)
				out[pos] = interesting[next(s) % sizeof(interesting)];
			break;
		case 3: /* insert a byte */
			if (n < cap) {
				memmove(out + pos + 1, out + pos, n - pos);
				out[pos] = interesting[next(s) % sizeof(interesting)];
				n++;
			}
			break;
		case 4: /* delete a run */
			if (n) {
				m = 1 + next(s) % 8;
				if (m > n - pos)
					m = n - pos;
				memmove(out + pos, out + pos + m, n - pos - m);
				n -= m;
			}
			break;
		case 5: /* duplicate a run */
			m = 1 + next(s) % 32;
			if (n && n + m <= cap) {
				size_t src = next(s) % n;

				if (m > n - src)
					m = n - src;
				memmove(out + pos + m, out + pos, n - pos);
				memmove(out + pos, out + (src >= pos ? src + m : src), m);
				n += m;
			}
			break;
		case 6: /* truncate */
			n = pos;
			break;
		case 7: /* rewrite the frame length field */
			if (n >= 8) {
				uint32_t v = (uint32_t)next(s);
				uint32_t choices[] = { 0, 1, 2, (uint32_t)(n - 8),
						       (uint32_t)(n - 7), 1u << 20,
						       (1u << 20) + 1, 0xffffffffu, v };

				v = choices[next(s) % (sizeof(choices) / sizeof(choices[0]))];
				out[4] = (uint8_t)v;
				out[5] = (uint8_t)(v >> 8);
				out[6] = (uint8_t)(v >> 16);
				out[7] = (uint8_t)(v >> 24);
			}
			break;
		default: /* the first byte chooses the chunking */
			if (n)
				out[0] = (uint8_t)next(s);
			break;
		}
	}
	return n;
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_file(const char *dir, const char *name, unsigned long mutations)
{
	char path[4096];
	uint8_t *data = NULL, *mut = NULL;
	size_t len, cap;
	uint64_t seed = 0x5eedULL;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	data = malloc(REPLAY_MAX_FILE);
	if (!data) {
		fclose(f);
		return -1;
	}
	len = fread(data, 1, REPLAY_MAX_FILE, f);
	fclose(f);
	/* Exact-size copy so that ASan catches reads past the end. */
	mut = malloc(len ? len : 1);
	memcpy(mut, data, len);
	LLVMFuzzerTestOneInput(mut, len);
	free(mut);

	for (const char *p = name; *p; p++)
		seed = seed * 131 + (uint8_t)*p;
	cap = len + 256;
	mut = malloc(cap);
	for (unsigned long i = 0; mut && i < mutations; i++) {
		size_t n = mutate(data, len, mut, cap, &seed);
		uint8_t *exact = malloc(n ? n : 1);

		if (!exact)
			break;
		memcpy(exact, mut, n);
		LLVMFuzzerTestOneInput(exact, n);
		free(exact);
	}
	free(mut);
	free(data);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long mutations = 2000;
	char **names = NULL;
	size_t count = 0;
	struct dirent *de;
	int failed = 0;
	DIR *d;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s CORPUS-DIR [MUTATIONS]\n", argv[0]);
		return 2;
	}
	if (argc == 3)
		mutations = strtoul(argv[2], NULL, 10);
	d = opendir(argv[1]);
	if (!d) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		char **grown;

		if (de->d_name[0] == '.')
			continue;
		grown = realloc(names, (count + 1) * sizeof(*names));
		if (!grown)
			return 1;
		names = grown;
		names[count++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, count, sizeof(*names), cmp);
	for (size_t i = 0; i < count; i++) {
		if (replay_file(argv[1], names[i], mutations) < 0)
			failed = 1;
		free(names[i]);
	}
	free(names);
	if (count == 0) {
		fprintf(stderr, "fuzz-replay: %s is empty\n", argv[1]);
		return 1;
	}
	printf("fuzz-replay: %zu files, %lu mutations each, %lu payloads parsed, "
	       "%lu accepted: %s\n", count, mutations, fuzz_proto_payloads, fuzz_proto_accepted,
	       failed ? "FAILED" : "ok");
	return failed;
}
