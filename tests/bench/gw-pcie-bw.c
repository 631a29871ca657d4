/* SPDX-License-Identifier: MIT */
/*
 * Baseline for benchmarks: the PCIe link's pinned host<->device copy bandwidth, measured the
 * simplest way (one cuMemHostAlloc'd buffer, one device buffer, synchronous cuMemcpy both ways,
 * best of N). Prints one JSON line.
 *
 *   gw-pcie-bw [MIB (default 2048)] [ROUNDS (default 5)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw-cuda.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define CHECK(call)                                                                               \
	do {                                                                                      \
		CUresult r_ = (call);                                                             \
		if (r_ != CUDA_SUCCESS) {                                                         \
			char text_[160];                                                          \
			fprintf(stderr, "gw-pcie-bw: %s: %s\n", #call,                            \
				gw_cuda_describe(cuda, r_, text_, sizeof(text_)));                \
			return 1;                                                                 \
		}                                                                                 \
	} while (0)

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 2048, bytes = mib << 20;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	double best_h2d = 0, best_d2h = 0;
	struct gw_cuda *cuda;
	CUcontext ctx;
	CUdeviceptr dev;
	CUdevice d;
	char err[256];
	void *host;

	if (mib == 0 || rounds <= 0) {
		fprintf(stderr, "usage: gw-pcie-bw [MIB] [ROUNDS]\n");
		return 2;
	}
	if (gw_cuda_load(NULL, &cuda, err, sizeof(err)) < 0) {
		fprintf(stderr, "gw-pcie-bw: %s\n", err);
		return 1;
	}
	CHECK(cuda->cuInit(0));
	CHECK(cuda->cuDeviceGet(&d, 0));
	CHECK(cuda->cuDevicePrimaryCtxRetain(&ctx, d));
	CHECK(cuda->cuCtxSetCurrent(ctx));
	CHECK(cuda->cuMemAlloc(&dev, bytes));
	CHECK(cuda->cuMemHostAlloc(&host, bytes, 0));
	memset(host, 1, bytes);
	for (int i = 0; i < rounds; i++) {
		double t0 = now_s(), t1, t2;

		CHECK(cuda->cuMemcpyHtoD(dev, host, bytes));
		t1 = now_s();
		CHECK(cuda->cuMemcpyDtoH(host, dev, bytes));
		t2 = now_s();
		if (bytes / 1e9 / (t1 - t0) > best_h2d)
			best_h2d = bytes / 1e9 / (t1 - t0);
		if (bytes / 1e9 / (t2 - t1) > best_d2h)
			best_d2h = bytes / 1e9 / (t2 - t1);
	}
	printf("{\"tool\":\"pcie-bw\",\"mib\":%zu,\"h2d_gb_per_s\":%.2f,\"d2h_gb_per_s\":%.2f}\n", mib,
	       best_h2d, best_d2h);
	cuda->cuMemFreeHost(host);
	cuda->cuMemFree(dev);
	cuda->cuDevicePrimaryCtxRelease(d);
	gw_cuda_unload(cuda);
	return 0;
}
