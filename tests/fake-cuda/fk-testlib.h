/* SPDX-License-Identifier: MIT */
/* Helpers shared by the fake driver's tests (see fk-testlib.c). Failures end the case. */
#ifndef FK_TESTLIB_H
#define FK_TESTLIB_H

#include <stdint.h>

#include "fakecuda.h"
#include "gw-cuda.h"
#include "gw-test.h"

#define MIB ((size_t)1 << 20)
#define GRAN ((size_t)FAKECUDA_GRANULARITY)
#define FKT_FD CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
#define FKT_MAX_ALLOCS 8

/* The case's private FAKECUDA_STATE_DIR. */
extern char fkt_state_dir[64];

struct fkt_opts {
	unsigned ctx_mask; /* devices with a retained primary context (default: dev) */
	int dev;           /* current device, where the allocations go */
	int nallocs;
	size_t size;
	int busy;          /* a thread doing memset + synchronize in a loop */
	int vmm;           /* plus a 4 MiB exportable VMM allocation in two mappings */
};
struct fkt_target {
	pid_t pid;
	int sock;
};

/* Per case: a fresh state directory, no FAKECUDA_* from the environment, cleanup at exit. */
void fkt_setup(void);
/* Kill the children, remove the state directory; call at the end of a case (idempotent). */
void fkt_cleanup(void);
void fkt_kid_add(pid_t pid); /* a child fkt_cleanup() kills */
uint64_t fkt_now_ms(void);

/* The fake, loaded through gw_cuda_load; fkt_caller() also runs cuInit. */
struct gw_cuda *fkt_load(void);
struct gw_cuda *fkt_caller(void);
/* Retain device dev's primary context and make it current. */
void fkt_ctx_on(struct gw_cuda *cu, int dev);

/* Test data: word `word` of allocation `alloc`; fill and check whole ranges with it. */
uint32_t fkt_pattern(int alloc, size_t word);
CUresult fkt_fill(struct gw_cuda *cu, CUdeviceptr va, size_t size, int id);
CUresult fkt_check(struct gw_cuda *cu, CUdeviceptr va, size_t size, int id, int *bad);
/* Exportable VMM properties, and reserve + map + set read-write access of a handle. */
CUmemAllocationProp fkt_vmm_prop(int dev);
CUresult fkt_vmm_map(struct gw_cuda *cu, CUmemGenericAllocationHandle h, size_t size, int dev,
		     CUdeviceptr *ret_va);

/* Messages on a SOCK_SEQPACKET socketpair with an optional fd; recv: 0, -ETIMEDOUT, -EPIPE. */
int fkt_msg_send(int s, int fd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int fkt_msg_recv(int s, char *buf, size_t len, int *ret_fd, int timeout_ms);

/*
 * A target process, ready when this returns. Commands (reply): verify ("verify <r> ok|bad"),
 * info ("info <r> <free> <total> <dev> <uuid> <busy loops> <busy error>"), sync ("sync <r>"),
 * export (fd of the VMM memory; "export <r>"), readvmm ("word <r> <hex>"), import <size> with an
 * fd ("imported <r> <first word>"), unimport ("unimported <r>").
 */
struct fkt_target fkt_target_start(const struct fkt_opts *o);
struct fkt_target fkt_target_simple(int n, size_t size); /* n allocations of size on GPU 0 */
void fkt_ask(struct fkt_target *t, const char *cmd, int fd, char *reply, size_t len);
void fkt_expect_verify_ok(struct fkt_target *t);

CUprocessState fkt_state_of(struct gw_cuda *cu, pid_t pid);
size_t fkt_used_of(struct gw_cuda *cu, pid_t pid, int dev);
unsigned fkt_devices_of(struct gw_cuda *cu, pid_t pid);
void fkt_lock_checkpoint(struct gw_cuda *cu, pid_t pid);
void fkt_restore_unlock(struct gw_cuda *cu, pid_t pid, CUcheckpointRestoreArgs *args);
/* The fake's UUID of GPU dev (any dev, existing or not). */
CUuuid fkt_uuid_of(int dev);

#endif
