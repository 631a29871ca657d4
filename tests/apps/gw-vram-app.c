/* SPDX-License-Identifier: MIT */
/*
 * gw-vram-app: a CUDA process that holds VRAM filled with a known pattern, for tests and
 * benchmarks. Loads the driver through gw-cuda ($GPUWARM_CUDA_LIBRARY or libcuda.so.1), so it runs
 * on the fake driver in CI and on a real GPU alike.
 *
 *   gw-vram-app [--mib N] [--zero-mib Z] [--chunk-mib C] [--gpu I] [--second-gpu J] [--busy]
 *               [--spawn-child]
 *
 * --zero-mib Z adds Z MiB of allocations that hold zeros (like a KV cache nothing has written
 * yet); verify checks that they still do.
 * --second-gpu J puts every other chunk on device J (a process using two GPUs); its ready and
 * verify lines then end with "gpu2 <uuid>".
 *
 * Prints "ready pid <pid> mib <N> gpu <uuid>[ zero_mib <Z>]" once set up. SIGUSR1: verify every 1 MiB block and
 * print "verify ok pid <pid> gpu <uuid> mib <N>" or "verify CORRUPT pid <pid> at <chunk>/<block>",
 * then rewrite one block. SIGTERM/SIGINT: free everything, exit 0. Any CUDA error: its name on
 * stderr, exit 1. --spawn-child: once ready, start a second copy (same options) and print
 * "child pid <pid>" (the child then prints its own ready line); SIGUSR1/SIGTERM/SIGINT sent to
 * the parent are forwarded to the child, and the parent exits 0 only if the child did.
 */
#include <errno.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-cuda.h"

#define MIB ((size_t)1 << 20)
#define STAGE_MIB 64 /* pinned buffer for verification */

extern char **environ;

struct app {
	struct gw_cuda *cu;
	size_t mib, chunk_mib, nchunks;
	size_t zero_mib, ndata; /* chunks [ndata, nchunks) hold zeros */
	int gpu;
	int busy;
	CUdevice dev;
	CUcontext ctx;
	CUdeviceptr *chunks;
	CUdeviceptr scratch;
	void *stage;
	size_t stage_mib;
	pthread_t busy_thread;
	volatile int stop;
	pid_t child;
	CUresult (*ctx_get_device)(CUdevice *dev); /* optional cuCtxGetDevice */
	int gpu2;         /* --second-gpu, -1 without */
	CUdevice dev2;
	CUcontext ctx2;
};

static void check(const struct app *a, CUresult r, const char *what)
{
	char text[160];

	if (r == CUDA_SUCCESS)
		return;
	gw_cuda_describe(a->cu, r, text, sizeof(text));
	fprintf(stderr, "gw-vram-app[%d]: %s failed: %s\n", (int)getpid(), what, text);
	exit(1);
}

#define CK(a, call) check((a), (a)->cu->call, #call)

/* Differs per chunk and per 1 MiB block; the zero chunks' is 0. */
static uint32_t chunk_pattern(const struct app *a, size_t chunk, size_t block)
{
	if (chunk >= a->ndata)
		return 0;
	return 0x9e3779b9u * (uint32_t)(chunk * 65537 + block + 1) ^ 0x5a5a0000u;
}

#define pattern(c, b) chunk_pattern(a, (c), (b))

static size_t chunk_mib_of(const struct app *a, size_t c)
{
	size_t left = c < a->ndata ? a->mib - c * a->chunk_mib :
				     a->zero_mib - (c - a->ndata) * a->chunk_mib;

	return left < a->chunk_mib ? left : a->chunk_mib;
}

/* Make the context of chunk c's device current: odd chunks live on the second GPU. */
static void use_chunk_ctx(struct app *a, size_t c)
{
	CK(a, cuCtxSetCurrent(a->gpu2 >= 0 && c % 2 ? a->ctx2 : a->ctx));
}

static void fill_block(struct app *a, size_t c, size_t b)
{
	CK(a, cuMemsetD32(a->chunks[c] + b * MIB, pattern(c, b), MIB / 4));
}

/* The device our context is on now: a restore with gpuPairs may have moved it. */
static CUdevice current_device(struct app *a)
{
	CUdevice dev = a->dev;

	if (a->ctx_get_device)
		check(a, a->ctx_get_device(&dev), "cuCtxGetDevice");
	return dev;
}

static void device_uuid(struct app *a, char *buf, size_t len)
{
	CUuuid uuid;

	CK(a, cuDeviceGetUuid(&uuid, current_device(a)));
	gw_cuda_uuid_format(&uuid, buf, len);
}

static void *busy_main(void *arg)
{
	struct app *a = arg;

	CK(a, cuCtxSetCurrent(a->ctx));
	for (unsigned i = 0; !a->stop; i++) {
		CK(a, cuMemsetD32(a->scratch, i, 4096));
		CK(a, cuCtxSynchronize());
	}
	return NULL;
}

static void verify(struct app *a)
{
	const uint32_t *words = a->stage;
	char uuid[64];

	for (size_t c = 0; c < a->nchunks; c++) {
		size_t cmib = chunk_mib_of(a, c);

		for (size_t off = 0; off < cmib; off += a->stage_mib) {
			size_t n = cmib - off < a->stage_mib ? cmib - off : a->stage_mib;

			use_chunk_ctx(a, c);
			CK(a, cuMemcpyDtoH(a->stage, a->chunks[c] + off * MIB, n * MIB));
			for (size_t b = 0; b < n; b++) {
				uint32_t want = pattern(c, off + b);
				const uint32_t *w = words + b * (MIB / 4);

				for (size_t i = 0; i < MIB / 4; i++) {
					if (w[i] != want) {
						printf("verify CORRUPT pid %d at %zu/%zu\n",
						       (int)getpid(), c, off + b);
						return;
					}
				}
			}
		}
	}
	CK(a, cuCtxSetCurrent(a->ctx));
	device_uuid(a, uuid, sizeof(uuid));
	printf("verify ok pid %d gpu %s mib %zu", (int)getpid(), uuid, a->mib);
	if (a->gpu2 >= 0) {
		CK(a, cuCtxSetCurrent(a->ctx2));
		device_uuid(a, uuid, sizeof(uuid));
		printf(" gpu2 %s", uuid);
		CK(a, cuCtxSetCurrent(a->ctx));
	}
	printf("\n");
}

/* After a verification: new work on the (possibly restored) GPU, checked. */
static void rewrite_block(struct app *a)
{
	uint32_t word = 0;

	CK(a, cuCtxSetCurrent(a->ctx));
	fill_block(a, 0, 0);
	CK(a, cuCtxSynchronize());
	CK(a, cuMemcpyDtoH(&word, a->chunks[0] + MIB - 4, 4));
	if (word != pattern(0, 0)) {
		fprintf(stderr, "gw-vram-app[%d]: rewritten block reads back wrong\n",
			(int)getpid());
		exit(1);
	}
}

static void setup(struct app *a)
{
	gw_cuGetProcAddress_fn getproc;
	CUdriverProcAddressQueryResult st;
	char err[256], uuid[64];
	void *fn = NULL;

	if (gw_cuda_load(NULL, &a->cu, err, sizeof(err)) < 0) {
		fprintf(stderr, "gw-vram-app: %s\n", err);
		exit(1);
	}
	getproc = (gw_cuGetProcAddress_fn)dlsym(a->cu->dl, "cuGetProcAddress_v2");
	if (getproc && getproc("cuCtxGetDevice", &fn, 12080, 0, &st) == CUDA_SUCCESS && fn)
		a->ctx_get_device = (CUresult(*)(CUdevice *))fn;
	CK(a, cuInit(0));
	CK(a, cuDeviceGet(&a->dev, a->gpu));
	CK(a, cuDevicePrimaryCtxRetain(&a->ctx, a->dev));
	CK(a, cuCtxSetCurrent(a->ctx));
	if (a->gpu2 >= 0) {
		CK(a, cuDeviceGet(&a->dev2, a->gpu2));
		CK(a, cuDevicePrimaryCtxRetain(&a->ctx2, a->dev2));
	}

	a->ndata = (a->mib + a->chunk_mib - 1) / a->chunk_mib;
	a->nchunks = a->ndata + (a->zero_mib + a->chunk_mib - 1) / a->chunk_mib;
	a->chunks = calloc(a->nchunks, sizeof(*a->chunks));
	if (!a->chunks) {
		fprintf(stderr, "gw-vram-app: out of memory\n");
		exit(1);
	}
	for (size_t c = 0; c < a->nchunks; c++) {
		size_t cmib = chunk_mib_of(a, c);

		use_chunk_ctx(a, c);
		CK(a, cuMemAlloc(&a->chunks[c], cmib * MIB));
		for (size_t b = 0; b < cmib; b++)
			fill_block(a, c, b);
		CK(a, cuCtxSynchronize());
	}
	CK(a, cuCtxSetCurrent(a->ctx));
	a->stage_mib = a->chunk_mib < STAGE_MIB ? a->chunk_mib : STAGE_MIB;
	CK(a, cuMemHostAlloc(&a->stage, a->stage_mib * MIB, 0));
	CK(a, cuCtxSynchronize());
	if (a->busy) {
		int r;

		CK(a, cuMemAlloc(&a->scratch, MIB));
		r = pthread_create(&a->busy_thread, NULL, busy_main, a);
		if (r) {
			fprintf(stderr, "gw-vram-app: pthread_create: %s\n", strerror(r));
			exit(1);
		}
	}
	device_uuid(a, uuid, sizeof(uuid));
	printf("ready pid %d mib %zu gpu %s", (int)getpid(), a->mib, uuid);
	if (a->gpu2 >= 0) {
		CK(a, cuCtxSetCurrent(a->ctx2));
		device_uuid(a, uuid, sizeof(uuid));
		printf(" gpu2 %s", uuid);
		CK(a, cuCtxSetCurrent(a->ctx));
	}
	if (a->zero_mib)
		printf(" zero_mib %zu", a->zero_mib);
	printf("\n");
}

static void teardown(struct app *a)
{
	if (a->busy) {
		a->stop = 1;
		pthread_join(a->busy_thread, NULL);
		CK(a, cuMemFree(a->scratch));
	}
	for (size_t c = 0; c < a->nchunks; c++) {
		use_chunk_ctx(a, c);
		CK(a, cuMemFree(a->chunks[c]));
	}
	CK(a, cuCtxSetCurrent(a->ctx));
	CK(a, cuMemFreeHost(a->stage));
	if (a->gpu2 >= 0) {
		CK(a, cuCtxSetCurrent(a->ctx2));
		CK(a, cuDevicePrimaryCtxRelease(current_device(a)));
		CK(a, cuCtxSetCurrent(a->ctx));
	}
	CK(a, cuDevicePrimaryCtxRelease(current_device(a)));
	free(a->chunks);
	gw_cuda_unload(a->cu);
}

/* The same command line without --spawn-child. */
static pid_t spawn_child(int argc, char **argv)
{
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	pid_t pid;
	int n = 0, r;

	if (!args)
		return -ENOMEM;
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--spawn-child") != 0)
			args[n++] = argv[i];
	r = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ);
	free(args);
	return r ? -r : pid;
}

static int parse_size(const char *s, size_t max, size_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = (size_t)v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: gw-vram-app [--mib N] [--zero-mib Z] [--chunk-mib C] [--gpu I] "
		   "[--second-gpu J] [--busy] [--spawn-child]\n");
}

int main(int argc, char **argv)
{
	struct app a = { .mib = 64, .chunk_mib = 256, .gpu2 = -1 };
	int spawn = 0, status = 0, failed = 0;
	sigset_t mask;
	size_t v;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(opt, "--mib") == 0 && parse_size(val, (size_t)1 << 22, &a.mib) == 0 &&
		    a.mib > 0) {
			i++;
		} else if (strcmp(opt, "--zero-mib") == 0 &&
			   parse_size(val, (size_t)1 << 22, &a.zero_mib) == 0) {
			i++;
		} else if (strcmp(opt, "--chunk-mib") == 0 &&
			   parse_size(val, (size_t)1 << 22, &a.chunk_mib) == 0 && a.chunk_mib > 0) {
			i++;
		} else if (strcmp(opt, "--gpu") == 0 && parse_size(val, 1023, &v) == 0) {
			a.gpu = (int)v;
			i++;
		} else if (strcmp(opt, "--second-gpu") == 0 && parse_size(val, 1023, &v) == 0) {
			a.gpu2 = (int)v;
			i++;
		} else if (strcmp(opt, "--busy") == 0) {
			a.busy = 1;
		} else if (strcmp(opt, "--spawn-child") == 0) {
			spawn = 1;
		} else if (strcmp(opt, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (a.chunk_mib > a.mib)
		a.chunk_mib = a.mib;

	/* the main thread takes the signals synchronously; every other thread has them blocked */
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);

	setup(&a);
	if (spawn) { /* posix_spawn execs at once: fine for a CUDA process, unlike a bare fork */
		a.child = spawn_child(argc, argv);
		if (a.child < 0) {
			fprintf(stderr, "gw-vram-app: spawn: %s\n", strerror((int)-a.child));
			teardown(&a);
			return 1;
		}
		printf("child pid %d\n", (int)a.child);
	}
	for (;;) {
		int sig = sigwaitinfo(&mask, NULL);

		if (sig < 0)
			continue; /* EINTR, e.g. around a checkpoint */
		if (a.child > 0)
			kill(a.child, sig);
		if (sig != SIGUSR1)
			break;
		verify(&a);
		rewrite_block(&a);
	}
	teardown(&a);
	if (a.child > 0) {
		while (waitpid(a.child, &status, 0) < 0 && errno == EINTR)
			;
		failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	return failed;
}
