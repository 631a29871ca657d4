/* SPDX-License-Identifier: MIT */
/*
 * The fake CUDA driver (libfakecuda.so, tests only): its configuration variables and the few
 * fake-only entry points it adds to the real driver API. Reach those through cuGetProcAddress or
 * dlsym on the library; a real driver does not have them.
 */
#ifndef FAKECUDA_H
#define FAKECUDA_H

#include <stddef.h>

#include "gw-cuda-abi.h"

/* Environment, read by cuInit (FAKECUDA_NO_CHECKPOINT: by cuGetProcAddress). */
#define FAKECUDA_ENV_GPUS "FAKECUDA_GPUS"                   /* devices, 1..16 (1) */
#define FAKECUDA_ENV_MEM_MIB "FAKECUDA_MEM_MIB"             /* MiB per device (81559) */
#define FAKECUDA_ENV_NO_DEVICE "FAKECUDA_NO_DEVICE"         /* 1: cuInit -> NO_DEVICE */
#define FAKECUDA_ENV_NO_CHECKPOINT "FAKECUDA_NO_CHECKPOINT" /* 1: no cuCheckpoint* */
#define FAKECUDA_ENV_FAIL "FAKECUDA_FAIL"                   /* "cuName=code[:n][,...]" */
#define FAKECUDA_ENV_SYNC_DELAY_MS "FAKECUDA_SYNC_DELAY_MS" /* synchronize sleeps (0) */
#define FAKECUDA_ENV_SYNC_DELAY_SKIP "FAKECUDA_SYNC_DELAY_SKIP" /* ... except the first n (0) */
#define FAKECUDA_ENV_PIN_US_PER_MIB "FAKECUDA_PIN_US_PER_MIB" /* cuMemHostAlloc cost (0) */
#define FAKECUDA_ENV_STATE_DIR "FAKECUDA_STATE_DIR"         /* /tmp/fakecuda-<euid> */

#define FAKECUDA_MAX_GPUS 16
#define FAKECUDA_DEVICE_NAME "Fake NVIDIA H100 80GB HBM3"
#define FAKECUDA_DRIVER_VERSION 13000
#define FAKECUDA_GRANULARITY (2u << 20)

/*
 * Bytes of device memory the CUDA process pid holds on device ordinal (cuMemAlloc allocations plus
 * cuMemCreate physical memory it created, not counting what is checkpointed): what cuMemGetInfo
 * there would report as used. Works in every process state; same errors as the checkpoint calls.
 */
typedef CUresult (*fakecuda_process_get_mem_used_fn)(int pid, int ordinal, size_t *used);
#define FAKECUDA_PROCESS_GET_MEM_USED "cuFakeProcessGetMemUsed"

/* Bit mask of the device ordinals on which process pid holds a primary context now (after a
 * restore with gpuPairs: the new devices). */
typedef CUresult (*fakecuda_process_get_devices_fn)(int pid, unsigned int *mask);
#define FAKECUDA_PROCESS_GET_DEVICES "cuFakeProcessGetDevices"

/* The real driver's cuCtxGetDevice (not in gw-cuda's lists): the device of the current context. */
typedef CUresult (*fakecuda_ctx_get_device_fn)(CUdevice *dev);

#endif
