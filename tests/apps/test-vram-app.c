/* SPDX-License-Identifier: MIT */
/* gw-vram-app on the fake driver: its output contract, signals, and checkpoint cycles on it. */
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <time.h>

#include "fakecuda.h"
#include "gw-cuda.h"
#include "gw-test.h"

#define MIB ((size_t)1 << 20)
#define GPU0 "GPU-fa4ec0da-0000-4000-8000-000000000000"
#define GPU1 "GPU-fa4ec0da-0000-4000-8000-000000000001"

struct proc {
	pid_t pid;
	int out, err;
	char buf[8192];
	size_t len;
};

static char state_dir[64];
static pid_t kids[4];
static int nkids;

static void cleanup(void)
{
	DIR *d;

	for (int i = 0; i < nkids; i++) {
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
	}
	if (!state_dir[0] || !(d = opendir(state_dir)))
		return;
	for (struct dirent *e; (e = readdir(d));) {
		char path[PATH_MAX];

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", state_dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(state_dir);
	state_dir[0] = '\0';
}

static void kid_add(pid_t pid)
{
	for (int i = 0; i < nkids; i++) {
		if (kids[i] == 0) {
			kids[i] = pid;
			return;
		}
	}
	GW_ASSERT(nkids < (int)(sizeof(kids) / sizeof(kids[0])));
	kids[nkids++] = pid;
}

static void setup(void)
{
	static const char *const vars[] = { FAKECUDA_ENV_GPUS, FAKECUDA_ENV_MEM_MIB,
					    FAKECUDA_ENV_NO_DEVICE, FAKECUDA_ENV_NO_CHECKPOINT,
					    FAKECUDA_ENV_FAIL, FAKECUDA_ENV_SYNC_DELAY_MS,
					    FAKECUDA_ENV_PIN_US_PER_MIB };

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	setenv(GW_CUDA_LIBRARY_ENV, FAKECUDA_PATH, 1);
	strcpy(state_dir, "/tmp/fakecuda-app-XXXXXX");
	GW_ASSERT(mkdtemp(state_dir));
	setenv(FAKECUDA_ENV_STATE_DIR, state_dir, 1);
	/* grandchildren (--spawn-child) are reparented to us, so we can reap them */
	GW_ASSERT(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
	atexit(cleanup);
}

static void app_start(struct proc *p, const char *const *opts)
{
	const char *argv[16] = { GW_VRAM_APP_PATH };
	int out[2], err[2], n = 1;

	for (; opts && *opts && n < 15; opts++)
		argv[n++] = *opts;
	GW_ASSERT(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
	fflush(NULL);
	p->pid = fork();
	GW_ASSERT(p->pid >= 0);
	if (p->pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	kid_add(p->pid);
	close(out[1]);
	close(err[1]);
	p->out = out[0];
	p->err = err[0];
	p->len = 0;
}

/* The next stdout line: 0, -ETIMEDOUT or -EPIPE. */
static int app_line(struct proc *p, char *line, size_t len, int timeout_ms)
{
	for (;;) {
		char *nl = memchr(p->buf, '\n', p->len);
		struct pollfd pfd = { .fd = p->out, .events = POLLIN };
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - p->buf);

			GW_ASSERT(l < len);
			memcpy(line, p->buf, l);
			line[l] = '\0';
			memmove(p->buf, nl + 1, p->len - l - 1);
			p->len -= l + 1;
			return 0;
		}
		if (poll(&pfd, 1, timeout_ms) == 0)
			return -ETIMEDOUT;
		n = read(p->out, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n <= 0)
			return -EPIPE;
		p->len += (size_t)n;
	}
}

static void expect_line(struct proc *p, const char *want)
{
	char line[512];

	GW_ASSERT_INT_EQ(app_line(p, line, sizeof(line), 10000), 0);
	GW_ASSERT_STR_EQ(line, want);
}

/* Exit status after it ended by itself within 10 s; stderr into errbuf. */
static int app_wait(struct proc *p, char *errbuf, size_t len)
{
	size_t got = 0;
	ssize_t n;
	int status;

	while (got + 1 < len && (n = read(p->err, errbuf + got, len - 1 - got)) > 0)
		got += (size_t)n;
	errbuf[got] = '\0';
	GW_ASSERT(waitpid(p->pid, &status, 0) == p->pid);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == p->pid)
			kids[i] = 0;
	close(p->out);
	close(p->err);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void expect_ready(struct proc *p, int mib, const char *gpu)
{
	char want[256];

	snprintf(want, sizeof(want), "ready pid %d mib %d gpu %s", p->pid, mib, gpu);
	expect_line(p, want);
}

static void expect_verify_ok(struct proc *p, int mib, const char *gpu)
{
	char want[256];

	GW_ASSERT(kill(p->pid, SIGUSR1) == 0);
	snprintf(want, sizeof(want), "verify ok pid %d gpu %s mib %d", p->pid, gpu, mib);
	expect_line(p, want);
}

static void expect_clean_exit(struct proc *p)
{
	char err[4096];

	GW_ASSERT(kill(p->pid, SIGTERM) == 0);
	GW_ASSERT_INT_EQ(app_wait(p, err, sizeof(err)), 0);
	GW_ASSERT_STR_EQ(err, "");
}

static struct gw_cuda *caller(void)
{
	struct gw_cuda *cu = NULL;
	char err[256];

	if (gw_cuda_load(FAKECUDA_PATH, &cu, err, sizeof(err)) < 0)
		GW_FAIL("%s", err);
	GW_ASSERT_INT_EQ(cu->cuInit(0), CUDA_SUCCESS);
	return cu;
}

static size_t used_of(struct gw_cuda *cu, pid_t pid, int dev)
{
	fakecuda_process_get_mem_used_fn fn =
		(fakecuda_process_get_mem_used_fn)dlsym(cu->dl, FAKECUDA_PROCESS_GET_MEM_USED);
	size_t used = 0;

	GW_ASSERT(fn);
	GW_ASSERT_INT_EQ(fn(pid, dev, &used), CUDA_SUCCESS);
	return used;
}

static void cycle(struct gw_cuda *cu, pid_t pid, CUcheckpointRestoreArgs *ra)
{
	CUcheckpointLockArgs la = { .timeoutMs = 5000 };
	CUprocessState st;

	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(pid, &la), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(used_of(cu, pid, 0) + used_of(cu, pid, 1), 0);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(pid, ra), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(pid, &st), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(st, CU_PROCESS_STATE_RUNNING);
}

GW_TEST(app_ready_verify_and_term)
{
	static const char *const opts[] = { "--mib", "8", "--chunk-mib", "3", NULL };
	struct gw_cuda *cu;
	struct proc p;

	setup();
	app_start(&p, opts);
	expect_ready(&p, 8, GPU0);
	cu = caller();
	GW_ASSERT_INT_EQ(used_of(cu, p.pid, 0), 8 * MIB); /* 3 + 3 + 2 MiB */
	expect_verify_ok(&p, 8, GPU0);
	expect_verify_ok(&p, 8, GPU0); /* still right after the rewrite */
	expect_clean_exit(&p);
	cleanup();
}

GW_TEST(app_chunk_is_capped_at_total)
{
	static const char *const opts[] = { "--mib", "3", "--gpu", "1", NULL };
	struct gw_cuda *cu;
	struct proc p;

	setup();
	setenv(FAKECUDA_ENV_GPUS, "2", 1);
	app_start(&p, opts);
	expect_ready(&p, 3, GPU1);
	cu = caller();
	GW_ASSERT_INT_EQ(used_of(cu, p.pid, 1), 3 * MIB);
	GW_ASSERT_INT_EQ(used_of(cu, p.pid, 0), 0);
	expect_verify_ok(&p, 3, GPU1);
	expect_clean_exit(&p);
	cleanup();
}

GW_TEST(app_busy_survives_checkpoint_cycles)
{
	static const char *const opts[] = { "--mib", "16", "--chunk-mib", "4", "--busy", NULL };
	struct gw_cuda *cu;
	struct proc p;

	setup();
	setenv(FAKECUDA_ENV_SYNC_DELAY_MS, "1", 1);
	app_start(&p, opts);
	expect_ready(&p, 16, GPU0);
	cu = caller();
	GW_ASSERT_INT_EQ(used_of(cu, p.pid, 0), 17 * MIB); /* + the busy thread's scratch */
	for (int i = 0; i < 3; i++)
		cycle(cu, p.pid, NULL);
	GW_ASSERT_INT_EQ(used_of(cu, p.pid, 0), 17 * MIB);
	expect_verify_ok(&p, 16, GPU0);
	expect_clean_exit(&p);
	cleanup();
}

GW_TEST(app_verify_waits_while_locked)
{
	static const char *const opts[] = { "--mib", "2", NULL };
	struct gw_cuda *cu;
	struct proc p;
	char line[256], want[256];

	setup();
	app_start(&p, opts);
	expect_ready(&p, 2, GPU0);
	cu = caller();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(p.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT(kill(p.pid, SIGUSR1) == 0);
	GW_ASSERT_INT_EQ(app_line(&p, line, sizeof(line), 300), -ETIMEDOUT);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(p.pid, NULL), CUDA_SUCCESS);
	snprintf(want, sizeof(want), "verify ok pid %d gpu %s mib 2", p.pid, GPU0);
	expect_line(&p, want);
	expect_clean_exit(&p);
	cleanup();
}

GW_TEST(app_restored_onto_other_gpu)
{
	static const char *const opts[] = { "--mib", "4", "--chunk-mib", "2", NULL };
	CUcheckpointGpuPair pair;
	CUcheckpointRestoreArgs ra = { .gpuPairs = &pair, .gpuPairsCount = 1 };
	struct gw_cuda *cu;
	struct proc p;

	setup();
	setenv(FAKECUDA_ENV_GPUS, "2", 1);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse(GPU0, &pair.oldUuid), 0);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse(GPU1, &pair.newUuid), 0);
	app_start(&p, opts);
	expect_ready(&p, 4, GPU0);
	cu = caller();
	cycle(cu, p.pid, &ra);
	GW_ASSERT_INT_EQ(used_of(cu, p.pid, 1), 4 * MIB);
	expect_verify_ok(&p, 4, GPU1);
	expect_clean_exit(&p);
	cleanup();
}

GW_TEST(app_spawn_child_makes_a_tree)
{
	static const char *const opts[] = { "--mib", "4", "--spawn-child", NULL };
	struct gw_cuda *cu;
	struct proc p;
	char line[256], want[256], err[4096];
	int child = 0, seen = 0;

	setup();
	app_start(&p, opts);
	expect_ready(&p, 4, GPU0); /* the parent's, always first */
	GW_ASSERT_INT_EQ(app_line(&p, line, sizeof(line), 10000), 0);
	GW_ASSERT_INT_EQ(sscanf(line, "child pid %d", &child), 1);
	GW_ASSERT(child > 0 && child != p.pid);
	kid_add(child);
	snprintf(want, sizeof(want), "ready pid %d mib 4 gpu %s", child, GPU0);
	expect_line(&p, want);

	/* both processes are CUDA processes of their own */
	cu = caller();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(p.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(child, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(p.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(child, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(child, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(p.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(child, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(p.pid, NULL), CUDA_SUCCESS);

	/* SIGUSR1 to the parent verifies both */
	GW_ASSERT(kill(p.pid, SIGUSR1) == 0);
	for (int i = 0; i < 2; i++) {
		int pid;
		char gpu[64];

		GW_ASSERT_INT_EQ(app_line(&p, line, sizeof(line), 10000), 0);
		GW_ASSERT_INT_EQ(sscanf(line, "verify ok pid %d gpu %63s mib 4", &pid, gpu), 2);
		seen |= pid == p.pid ? 1 : pid == child ? 2 : 4;
	}
	GW_ASSERT_INT_EQ(seen, 3);
	/* SIGTERM to the parent ends both, cleanly */
	GW_ASSERT(kill(p.pid, SIGTERM) == 0);
	GW_ASSERT_INT_EQ(app_wait(&p, err, sizeof(err)), 0); /* 0 only if the child exited 0 */
	GW_ASSERT(kill(child, 0) < 0 && errno == ESRCH);      /* and it reaped it */
	for (int i = 0; i < nkids; i++)
		if (kids[i] == child)
			kids[i] = 0;
	cleanup();
}

GW_TEST(app_cuda_error_exits_nonzero_with_name)
{
	static const char *const opts[] = { "--mib", "4", "--chunk-mib", "1", NULL };
	struct proc p;
	char err[4096], line[256];

	setup();
	setenv(FAKECUDA_ENV_FAIL, "cuMemAlloc=2:3", 1);
	app_start(&p, opts);
	GW_ASSERT_INT_EQ(app_line(&p, line, sizeof(line), 10000), -EPIPE); /* never ready */
	GW_ASSERT_INT_EQ(app_wait(&p, err, sizeof(err)), 1);
	GW_ASSERT_STR_CONTAINS(err, "cuMemAlloc");
	GW_ASSERT_STR_CONTAINS(err, "CUDA_ERROR_OUT_OF_MEMORY (2)");

	setenv(FAKECUDA_ENV_FAIL, "", 1);
	setenv(FAKECUDA_ENV_NO_DEVICE, "1", 1);
	app_start(&p, opts);
	GW_ASSERT_INT_EQ(app_wait(&p, err, sizeof(err)), 1);
	GW_ASSERT_STR_CONTAINS(err, "CUDA_ERROR_NO_DEVICE");
	cleanup();
}

GW_TEST(app_bad_options_exit_2)
{
	static const char *const bad[][3] = {
		{ "--mib", "0", NULL }, { "--mib", "x", NULL }, { "--chunk-mib", NULL, NULL },
		{ "--bogus", NULL, NULL }, { "--gpu", "-1", NULL },
	};
	struct proc p;
	char err[4096];

	setup();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		app_start(&p, bad[i]);
		GW_ASSERT_INT_EQ(app_wait(&p, err, sizeof(err)), 2);
		GW_ASSERT_STR_CONTAINS(err, "usage: gw-vram-app");
	}
	cleanup();
}

/* A caller configured with another FAKECUDA_STATE_DIR still finds the app (via its environment). */
GW_TEST(app_found_from_another_state_dir)
{
	static const char *const opts[] = { "--mib", "2", NULL };
	char other[64] = "/tmp/fakecuda-app-XXXXXX";
	struct gw_cuda *cu;
	CUprocessState st;
	struct proc p;

	setup();
	app_start(&p, opts);
	expect_ready(&p, 2, GPU0);
	GW_ASSERT(mkdtemp(other));
	setenv(FAKECUDA_ENV_STATE_DIR, other, 1);
	cu = caller();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(p.pid, &st), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(st, CU_PROCESS_STATE_RUNNING);
	cycle(cu, p.pid, NULL);
	expect_verify_ok(&p, 2, GPU0);
	expect_clean_exit(&p);
	{
		char path[128];

		snprintf(path, sizeof(path), "%s/%d.sock", other, getpid());
		unlink(path);
		rmdir(other);
	}
	cleanup();
}

GW_TEST_MAIN()
