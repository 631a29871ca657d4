/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the fake driver's tests: a private state directory per case, a "target" child process
 * (loads the fake through gw_cuda_load, allocates and fills memory, then obeys one-line commands
 * on a socketpair) and short-hands for the checkpoint calls the test process makes on it.
 */
#include "fk-testlib.h"

#include <dirent.h>
#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <time.h>

char fkt_state_dir[64];
static pid_t fkt_kids[8];
static int fkt_nkids;

void fkt_cleanup(void)
{
	DIR *d;

	for (int i = 0; i < fkt_nkids; i++) {
		if (fkt_kids[i] > 0) {
			kill(fkt_kids[i], SIGKILL);
			waitpid(fkt_kids[i], NULL, 0);
			fkt_kids[i] = 0;
		}
	}
	if (!fkt_state_dir[0] || !(d = opendir(fkt_state_dir)))
		return;
	for (struct dirent *e; (e = readdir(d));) {
		char path[PATH_MAX];

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", fkt_state_dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(fkt_state_dir);
	fkt_state_dir[0] = '\0';
}

void fkt_kid_add(pid_t pid)
{
	for (int i = 0; i < fkt_nkids; i++) {
		if (fkt_kids[i] == 0) {
			fkt_kids[i] = pid;
			return;
		}
	}
	GW_ASSERT(fkt_nkids < (int)(sizeof(fkt_kids) / sizeof(fkt_kids[0])));
	fkt_kids[fkt_nkids++] = pid;
}

/* Every case: its own state directory, no configuration inherited from the caller's shell. */
void fkt_setup(void)
{
	static const char *const vars[] = { FAKECUDA_ENV_GPUS, FAKECUDA_ENV_MEM_MIB,
					    FAKECUDA_ENV_NO_DEVICE, FAKECUDA_ENV_NO_CHECKPOINT,
					    FAKECUDA_ENV_FAIL, FAKECUDA_ENV_SYNC_DELAY_MS,
					    FAKECUDA_ENV_PIN_US_PER_MIB };

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	strcpy(fkt_state_dir, "/tmp/fakecuda-test-XXXXXX");
	GW_ASSERT(mkdtemp(fkt_state_dir));
	setenv(FAKECUDA_ENV_STATE_DIR, fkt_state_dir, 1);
	atexit(fkt_cleanup);
}

uint64_t fkt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct gw_cuda *fkt_load(void)
{
	struct gw_cuda *cu = NULL;
	char err[256];
	int r = gw_cuda_load(FAKECUDA_PATH, &cu, err, sizeof(err));

	if (r < 0)
		GW_FAIL("gw_cuda_load: %s", err);
	return cu;
}

/* The caller: the test process itself, initialized. */
struct gw_cuda *fkt_caller(void)
{
	struct gw_cuda *cu = fkt_load();

	GW_ASSERT_INT_EQ(cu->cuInit(0), CUDA_SUCCESS);
	return cu;
}

void fkt_ctx_on(struct gw_cuda *cu, int dev)
{
	CUcontext ctx;

	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCtxSetCurrent(ctx), CUDA_SUCCESS);
}

uint32_t fkt_pattern(int alloc, size_t word)
{
	return 0xa5000000u ^ ((uint32_t)alloc << 20) ^ (uint32_t)word;
}

/* ---- messages on a SOCK_SEQPACKET socketpair, with an optional fd ---- */

int fkt_msg_send(int s, int fd, const char *fmt, ...)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cm;
	char buf[256];
	struct iovec iov = { .iov_base = buf };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	iov.iov_len = strlen(buf);
	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.b;
		mh.msg_controllen = sizeof(cm.b);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(s, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* 0, -ETIMEDOUT or -EPIPE. */
int fkt_msg_recv(int s, char *buf, size_t len, int *ret_fd, int timeout_ms)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cm;
	struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	struct pollfd p = { .fd = s, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, timeout_ms) == 0)
		return -ETIMEDOUT;
	n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		return -EPIPE;
	buf[n] = '\0';
	if (ret_fd) {
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

		*ret_fd = -1;
		if (c && c->cmsg_type == SCM_RIGHTS)
			memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	}
	return 0;
}

/* ---- the target process ---- */



struct tstate {
	struct gw_cuda *cu;
	CUcontext ctx;
	CUdeviceptr a[FKT_MAX_ALLOCS];
	const struct fkt_opts *o;
	CUdeviceptr vmm_va, imp_va;
	CUmemGenericAllocationHandle vmm_h, imp_h;
	size_t imp_size;
	CUdeviceptr scratch;
	volatile unsigned long busy_loops;
	volatile CUresult busy_err;
};

static void *busy_main(void *arg)
{
	struct tstate *t = arg;
	CUresult r = t->cu->cuCtxSetCurrent(t->ctx);

	for (unsigned i = 0; r == CUDA_SUCCESS; i++) {
		r = t->cu->cuMemsetD32(t->scratch, i, 256);
		if (r == CUDA_SUCCESS)
			r = t->cu->cuCtxSynchronize();
		t->busy_loops++;
	}
	t->busy_err = r;
	return NULL;
}

CUmemAllocationProp fkt_vmm_prop(int dev)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .requestedHandleTypes = FKT_FD,
				     .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
	return prop;
}

/* Reserve + map + make read-write, `size` bytes of handle h. */
CUresult fkt_vmm_map(struct gw_cuda *cu, CUmemGenericAllocationHandle h, size_t size,
			int dev, CUdeviceptr *ret_va)
{
	CUmemAccessDesc acc = { { CU_MEM_LOCATION_TYPE_DEVICE, dev },
				CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUdeviceptr va;
	CUresult r = cu->cuMemAddressReserve(&va, size, 0, 0, 0);

	if (r == CUDA_SUCCESS)
		r = cu->cuMemMap(va, size, 0, h, 0);
	if (r == CUDA_SUCCESS)
		r = cu->cuMemSetAccess(va, size, &acc, 1);
	if (r == CUDA_SUCCESS)
		*ret_va = va;
	return r;
}

CUresult fkt_fill(struct gw_cuda *cu, CUdeviceptr va, size_t size, int id)
{
	uint32_t *buf = malloc(size);
	CUresult r;

	if (!buf)
		return CUDA_ERROR_OUT_OF_MEMORY;
	for (size_t w = 0; w < size / 4; w++)
		buf[w] = fkt_pattern(id, w);
	r = cu->cuMemcpyHtoD(va, buf, size);
	free(buf);
	return r;
}

/* CUDA_SUCCESS and *bad = 0 when [va, va+size) holds pattern id. */
CUresult fkt_check(struct gw_cuda *cu, CUdeviceptr va, size_t size, int id, int *bad)
{
	uint32_t *buf = malloc(size);
	CUresult r;

	if (!buf)
		return CUDA_ERROR_OUT_OF_MEMORY;
	r = cu->cuMemcpyDtoH(buf, va, size);
	*bad = 0;
	for (size_t w = 0; r == CUDA_SUCCESS && w < size / 4 && !*bad; w++)
		*bad = buf[w] != fkt_pattern(id, w);
	free(buf);
	return r;
}

static void target_command(struct tstate *t, int s, const char *cmd, int fd)
{
	struct gw_cuda *cu = t->cu;
	uint32_t word = 0;
	CUresult r = CUDA_SUCCESS;
	int bad = 0;

	if (strcmp(cmd, "verify") == 0) {
		for (int i = 0; i < t->o->nallocs && r == CUDA_SUCCESS && !bad; i++)
			r = fkt_check(cu, t->a[i], t->o->size, i, &bad);
		if (t->o->vmm && r == CUDA_SUCCESS && !bad)
			r = fkt_check(cu, t->vmm_va, 2 * GRAN, 100, &bad);
		fkt_msg_send(s, -1, "verify %d %s", r, bad ? "bad" : "ok");
	} else if (strcmp(cmd, "info") == 0) {
		size_t free_b = 0, total = 0;
		CUdevice dev = -1;
		CUuuid uuid;
		char text[64] = "";

		r = cu->cuMemGetInfo(&free_b, &total);
		if (r == CUDA_SUCCESS)
			r = ((fakecuda_ctx_get_device_fn)dlsym(cu->dl, "cuCtxGetDevice"))(&dev);
		if (r == CUDA_SUCCESS)
			r = cu->cuDeviceGetUuid(&uuid, dev);
		if (r == CUDA_SUCCESS)
			gw_cuda_uuid_format(&uuid, text, sizeof(text));
		fkt_msg_send(s, -1, "info %d %zu %zu %d %s %lu %d", r, free_b, total, dev, text,
			 t->busy_loops, t->busy_err);
	} else if (strcmp(cmd, "sync") == 0) {
		fkt_msg_send(s, -1, "sync %d", cu->cuCtxSynchronize());
	} else if (strcmp(cmd, "export") == 0) {
		int out = -1;

		r = cu->cuMemExportToShareableHandle(&out, t->vmm_h, FKT_FD, 0);
		fkt_msg_send(s, out, "export %d", r);
		if (out >= 0)
			close(out);
	} else if (strcmp(cmd, "readvmm") == 0) {
		r = cu->cuMemcpyDtoH(&word, t->vmm_va, 4);
		fkt_msg_send(s, -1, "word %d %08x", r, word);
	} else if (sscanf(cmd, "import %zu", &t->imp_size) == 1) {
		r = cu->cuMemImportFromShareableHandle(&t->imp_h, (void *)(intptr_t)fd, FKT_FD);
		if (r == CUDA_SUCCESS)
			r = fkt_vmm_map(cu, t->imp_h, t->imp_size, t->o->dev, &t->imp_va);
		if (r == CUDA_SUCCESS)
			r = cu->cuMemcpyDtoH(&word, t->imp_va, 4);
		fkt_msg_send(s, -1, "imported %d %08x", r, word);
	} else if (strcmp(cmd, "unimport") == 0) {
		r = cu->cuMemUnmap(t->imp_va, t->imp_size);
		if (r == CUDA_SUCCESS)
			r = cu->cuMemRelease(t->imp_h);
		if (r == CUDA_SUCCESS)
			r = cu->cuMemAddressFree(t->imp_va, t->imp_size);
		fkt_msg_send(s, -1, "unimported %d", r);
	} else {
		fkt_msg_send(s, -1, "unknown");
	}
	if (fd >= 0)
		close(fd);
}

static CUresult target_setup(struct tstate *t)
{
	struct gw_cuda *cu = t->cu;
	CUresult r = cu->cuInit(0);

	for (int d = 0; d < 16 && r == CUDA_SUCCESS; d++) {
		CUcontext ctx;

		if (!(t->o->ctx_mask & (1u << d)) && d != t->o->dev)
			continue;
		r = cu->cuDevicePrimaryCtxRetain(&ctx, d);
		if (d == t->o->dev)
			t->ctx = ctx;
	}
	if (r == CUDA_SUCCESS)
		r = cu->cuCtxSetCurrent(t->ctx);
	for (int i = 0; i < t->o->nallocs && r == CUDA_SUCCESS; i++) {
		r = cu->cuMemAlloc(&t->a[i], t->o->size);
		if (r == CUDA_SUCCESS)
			r = fkt_fill(cu, t->a[i], t->o->size, i);
	}
	if (t->o->vmm && r == CUDA_SUCCESS) {
		CUmemAllocationProp prop = fkt_vmm_prop(t->o->dev);

		/* one 4 MiB handle in two 2 MiB mappings: copies cross the seam */
		r = cu->cuMemCreate(&t->vmm_h, 2 * GRAN, &prop, 0);
		if (r == CUDA_SUCCESS)
			r = fkt_vmm_map(cu, t->vmm_h, 2 * GRAN, t->o->dev, &t->vmm_va);
		if (r == CUDA_SUCCESS)
			r = fkt_fill(cu, t->vmm_va, 2 * GRAN, 100);
	}
	if (t->o->busy && r == CUDA_SUCCESS) {
		pthread_t th;

		r = cu->cuMemAlloc(&t->scratch, 4096);
		if (r == CUDA_SUCCESS && pthread_create(&th, NULL, busy_main, t) != 0)
			r = CUDA_ERROR_OPERATING_SYSTEM;
	}
	return r;
}

static void target_main(int s, const struct fkt_opts *o)
{
	struct tstate t = { .o = o };
	char cmd[256];
	int fd;
	CUresult r;

	t.cu = fkt_load();
	r = target_setup(&t);
	if (r != CUDA_SUCCESS) {
		fkt_msg_send(s, -1, "setup failed %d", r);
		_exit(1);
	}
	fkt_msg_send(s, -1, "ready");
	while (fkt_msg_recv(s, cmd, sizeof(cmd), &fd, -1) == 0)
		target_command(&t, s, cmd, fd);
	_exit(0);
}

struct fkt_target fkt_target_start(const struct fkt_opts *o)
{
	struct fkt_target t;
	int sv[2];
	char buf[256];

	GW_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	fflush(NULL);
	t.pid = fork();
	GW_ASSERT(t.pid >= 0);
	if (t.pid == 0) {
		close(sv[0]);
		target_main(sv[1], o);
	}
	close(sv[1]);
	t.sock = sv[0];
	fkt_kid_add(t.pid);
	GW_ASSERT_INT_EQ(fkt_msg_recv(t.sock, buf, sizeof(buf), NULL, 10000), 0);
	GW_ASSERT_STR_EQ(buf, "ready");
	return t;
}

/* A target with n allocations of size bytes on device 0. */
struct fkt_target fkt_target_simple(int n, size_t size)
{
	struct fkt_opts o = { .nallocs = n, .size = size };

	return fkt_target_start(&o);
}

void fkt_ask(struct fkt_target *t, const char *cmd, int fd, char *reply, size_t len)
{
	GW_ASSERT_INT_EQ(fkt_msg_send(t->sock, fd, "%s", cmd), 0);
	GW_ASSERT_INT_EQ(fkt_msg_recv(t->sock, reply, len, NULL, 10000), 0);
}

void fkt_expect_verify_ok(struct fkt_target *t)
{
	char reply[256];

	fkt_ask(t, "verify", -1, reply, sizeof(reply));
	GW_ASSERT_STR_EQ(reply, "verify 0 ok");
}

CUprocessState fkt_state_of(struct gw_cuda *cu, pid_t pid)
{
	CUprocessState st = (CUprocessState)-1;

	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(pid, &st), CUDA_SUCCESS);
	return st;
}

size_t fkt_used_of(struct gw_cuda *cu, pid_t pid, int dev)
{
	fakecuda_process_get_mem_used_fn fn =
		(fakecuda_process_get_mem_used_fn)dlsym(cu->dl, FAKECUDA_PROCESS_GET_MEM_USED);
	size_t used = 0;

	GW_ASSERT(fn);
	GW_ASSERT_INT_EQ(fn(pid, dev, &used), CUDA_SUCCESS);
	return used;
}

unsigned fkt_devices_of(struct gw_cuda *cu, pid_t pid)
{
	fakecuda_process_get_devices_fn fn =
		(fakecuda_process_get_devices_fn)dlsym(cu->dl, FAKECUDA_PROCESS_GET_DEVICES);
	unsigned mask = 0;

	GW_ASSERT(fn);
	GW_ASSERT_INT_EQ(fn(pid, &mask), CUDA_SUCCESS);
	return mask;
}

void fkt_lock_checkpoint(struct gw_cuda *cu, pid_t pid)
{
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, pid), CU_PROCESS_STATE_CHECKPOINTED);
}

void fkt_restore_unlock(struct gw_cuda *cu, pid_t pid, CUcheckpointRestoreArgs *args)
{
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(pid, args), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, pid), CU_PROCESS_STATE_LOCKED);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, pid), CU_PROCESS_STATE_RUNNING);
}

CUuuid fkt_uuid_of(int dev)
{
	char text[64];
	CUuuid u;

	snprintf(text, sizeof(text), "GPU-fa4ec0da-0000-4000-8000-0000000000%02x", dev);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse(text, &u), 0);
	return u;
}

