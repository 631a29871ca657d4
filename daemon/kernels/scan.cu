// SPDX-License-Identifier: MIT
// The per-chunk scan of a VRAM range, run by gpu-warmd on the GPU before it copies the range out
// and after it fills it back: which chunks are all zero (never cross PCIe; filled with a memset),
// and each chunk's checksum (verified after a restore). The definition, and a host version that
// must agree bit for bit, is common/gw-chunksum.h.
//
// scan.ptx beside this file is what the daemon loads (cuModuleLoadData); regenerate it with
//   nvcc -ptx -arch=compute_75 -o daemon/kernels/scan.ptx daemon/kernels/scan.cu
// compute_75 PTX is JIT-compiled by the driver for any newer GPU.

#define GW_CHUNKSUM_KEY 0x9E3779B97F4A7C15ull
#define GW_CHUNKSUM_MUL 0xBF58476D1CE4E5B9ull
#define GW_SCAN_THREADS 256

// One block per chunk. out[2 * chunk] = nonzero (0/1), out[2 * chunk + 1] = sum.
extern "C" __global__ void __launch_bounds__(GW_SCAN_THREADS)
gw_scan_chunks(const unsigned long long *__restrict__ words, unsigned long long nwords,
	       unsigned long long chunk_words, unsigned long long *__restrict__ out)
{
	__shared__ unsigned long long any_s[GW_SCAN_THREADS / 32], sum_s[GW_SCAN_THREADS / 32];
	unsigned long long chunk = blockIdx.x + (unsigned long long)blockIdx.y * gridDim.x;
	unsigned long long first = chunk * chunk_words;
	unsigned long long end = first + chunk_words < nwords ? first + chunk_words : nwords;
	unsigned long long any = 0, sum = 0;

	if (first >= nwords)
		return;
	for (unsigned long long g = first + threadIdx.x; g < end; g += GW_SCAN_THREADS) {
		unsigned long long w = words[g];
		unsigned long long x = (w ^ (g * GW_CHUNKSUM_KEY)) * GW_CHUNKSUM_MUL;

		any |= w;
		sum += x ^ (x >> 31);
	}
	for (int off = 16; off > 0; off /= 2) {
		any |= __shfl_down_sync(0xffffffffu, any, off);
		sum += __shfl_down_sync(0xffffffffu, sum, off);
	}
	if ((threadIdx.x & 31) == 0) {
		any_s[threadIdx.x / 32] = any;
		sum_s[threadIdx.x / 32] = sum;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int i = 1; i < GW_SCAN_THREADS / 32; i++) {
			any |= any_s[i];
			sum += sum_s[i];
		}
		out[2 * chunk] = any != 0;
		out[2 * chunk + 1] = sum;
	}
}
