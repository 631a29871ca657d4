/* SPDX-License-Identifier: MIT */
/*
 * For pydaemon.py (KIND torch protocol): an app linked against libcuda (direct symbol calls) and
 * the static CUDA runtime (cudaMalloc). Manual GPU smoke test, built on the GPU machine:
 *   nvcc -I../../../common -o direct_app direct_app.c -lcuda
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw-cuda-abi.h"

CUresult cuInit(unsigned int flags);
CUresult cuDeviceGet(CUdevice *dev, int ordinal);
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuCtxSynchronize(void);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size);
CUresult cuMemFree_v2(CUdeviceptr dptr);
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int value, size_t n);
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n);
/* the CUDA runtime (cudaSuccess is 0) */
int cudaMalloc(void **p, size_t size);
int cudaMemset(void *p, int value, size_t size);
int cudaFree(void *p);

#define N 4
#define SZ (96u << 20)

static CUdeviceptr bufs[N];
static unsigned *host;

static unsigned long long sum_of(CUdeviceptr p)
{
	unsigned long long s = 0;

	if (cuMemcpyDtoH_v2(host, p, SZ))
		exit(3);
	for (size_t i = 0; i < SZ / 4; i++)
		s += host[i] ^ (unsigned)i;
	return s;
}

static void print_sums(const char *tag, const char *tail)
{
	printf("%s [", tag);
	for (int i = 0; i < N; i++)
		printf("%s%llu", i ? ", " : "", sum_of(bufs[i]));
	printf("]%s\n", tail);
	fflush(stdout);
}

int main(void)
{
	CUcontext ctx;
	CUdevice dev;
	char line[64];
	void *rt = NULL;

	host = malloc(SZ);
	if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) ||
	    cuCtxSetCurrent(ctx))
		return 2;
	for (int i = 0; i < N - 1; i++)
		if (cuMemAlloc_v2(&bufs[i], SZ) || cuMemsetD32_v2(bufs[i], 0x1000u * (i + 1), SZ / 4))
			return 2;
	if (cudaMalloc(&rt, SZ) != 0 || cudaMemset(rt, 0x5a, SZ) != 0)
		return 2;
	bufs[N - 1] = (CUdeviceptr)rt;
	cuCtxSynchronize();
	print_sums("ready", " 0");
	while (fgets(line, sizeof(line), stdin)) {
		if (strncmp(line, "check", 5) == 0)
			print_sums("sums", " new 1.0");
		else if (strncmp(line, "quit", 4) == 0)
			break;
	}
	for (int i = 0; i < N - 1; i++)
		if (cuMemFree_v2(bufs[i]))
			return 4;
	if (cudaFree(rt) != 0)
		return 4;
	return 0;
}
