/* SPDX-License-Identifier: MIT */
/*
 * Fake CUDA driver: the cross-process checkpoint API. Every initialized process runs a "restore
 * thread" serving $FAKECUDA_STATE_DIR/<pid>.sock; cuCheckpointProcess*(pid) in another process
 * connects there, sends one text command line and reads "<CUresult> <value>\n" back.
 */
#include "fk-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CMD_MAX 8192
#define READ_TIMEOUT_S 5

/* ---- target side: the state machine ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int peer_gone(int c)
{
	struct pollfd p = { .fd = c, .events = POLLRDHUP };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* RUNNING -> LOCKED once no thread is inside the driver; new calls block meanwhile. */
static CUresult do_lock(unsigned timeout_ms, int c)
{
	uint64_t deadline = now_ms() + timeout_ms;
	CUresult r = CUDA_SUCCESS;

	if (fk.pstate != CU_PROCESS_STATE_RUNNING)
		return CUDA_ERROR_ILLEGAL_STATE;
	fk.locking = 1;
	while (fk.in_driver > 0) {
		struct timespec ts;
		uint64_t now = now_ms(), until = now + 20;

		if (timeout_ms && until > deadline)
			until = deadline;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)((until - now) / 1000);
		ts.tv_nsec += (long)((until - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_clockwait(&fk.cond, &fk.lock, CLOCK_MONOTONIC, &ts);
		if (fk.in_driver == 0)
			break;
		if (timeout_ms && now_ms() >= deadline) {
			r = CUDA_ERROR_NOT_READY;
			break;
		}
		if (peer_gone(c)) { /* a dead caller does not leave the process half-locked */
			r = CUDA_ERROR_UNKNOWN;
			break;
		}
	}
	fk.locking = 0;
	if (r == CUDA_SUCCESS)
		fk.pstate = CU_PROCESS_STATE_LOCKED;
	pthread_cond_broadcast(&fk.cond);
	return r;
}

static unsigned active_devs(void)
{
	unsigned mask = 0;

	for (int d = 0; d < fk.cfg.gpus; d++)
		if (fk.primary[d]->refcount > 0)
			mask |= 1u << d;
	return mask;
}

static CUresult do_checkpoint(void)
{
	CUresult r;

	if (fk.pstate != CU_PROCESS_STATE_LOCKED)
		return CUDA_ERROR_ILLEGAL_STATE;
	r = (CUresult)fk_mem_checkpoint();
	if (r != CUDA_SUCCESS)
		return r;
	fk.ckpt_devs = active_devs();
	fk.pstate = CU_PROCESS_STATE_CHECKPOINTED;
	return CUDA_SUCCESS;
}

static int uuid_dev(const CUuuid *uuid)
{
	for (int d = 0; d < fk.cfg.gpus; d++) {
		CUuuid u;

		fk_device_uuid(d, &u);
		if (memcmp(u.bytes, uuid->bytes, sizeof(u.bytes)) == 0)
			return d;
	}
	return -1;
}

/* map[old device] = new device, from the gpuPairs; identity without them. */
static CUresult build_map(const CUcheckpointGpuPair *pairs, unsigned n, int *map)
{
	unsigned seen = 0, targets = 0;

	for (int d = 0; d < FAKECUDA_MAX_GPUS; d++)
		map[d] = d;
	if (n == 0)
		return CUDA_SUCCESS;
	for (unsigned i = 0; i < n; i++) {
		int old = uuid_dev(&pairs[i].oldUuid);

		if (old < 0 || !(fk.ckpt_devs & (1u << old)))
			continue; /* a GPU this process did not use */
		if (seen & (1u << old))
			return CUDA_ERROR_INVALID_VALUE;
		seen |= 1u << old;
	}
	if ((seen & fk.ckpt_devs) != fk.ckpt_devs)
		return CUDA_ERROR_INVALID_VALUE; /* every checkpointed GPU needs a pair */
	for (unsigned i = 0; i < n; i++) {
		int old = uuid_dev(&pairs[i].oldUuid), new = uuid_dev(&pairs[i].newUuid);

		if (old < 0 || !(fk.ckpt_devs & (1u << old)))
			continue;
		if (new < 0)
			return CUDA_ERROR_INVALID_DEVICE;
		if (targets & (1u << new))
			return CUDA_ERROR_INVALID_VALUE;
		targets |= 1u << new;
		map[old] = new;
	}
	return CUDA_SUCCESS;
}

/* The contexts move with the process: a context object keeps its identity, its device changes. */
static void remap_contexts(const int *map)
{
	struct CUctx_st *np[FAKECUDA_MAX_GPUS] = { 0 };
	int taken[FAKECUDA_MAX_GPUS] = { 0 };

	for (int d = 0; d < FAKECUDA_MAX_GPUS; d++) {
		struct CUctx_st *ctx = fk.primary[d];

		if (ctx->refcount > 0) {
			ctx->dev = map[d];
			np[map[d]] = ctx;
			taken[ctx - fk.ctx_objs] = 1;
		}
	}
	for (int d = 0, k = 0; d < FAKECUDA_MAX_GPUS; d++) {
		if (np[d])
			continue;
		while (taken[k])
			k++;
		taken[k] = 1;
		np[d] = &fk.ctx_objs[k];
		np[d]->dev = d;
	}
	memcpy(fk.primary, np, sizeof(np));
}

static CUresult do_restore(const CUcheckpointGpuPair *pairs, unsigned n)
{
	int map[FAKECUDA_MAX_GPUS];
	CUresult r;

	if (fk.pstate != CU_PROCESS_STATE_CHECKPOINTED)
		return CUDA_ERROR_ILLEGAL_STATE;
	r = build_map(pairs, n, map);
	if (r != CUDA_SUCCESS)
		return r;
	if (fk.trap) {
		/* the real driver's trap: imported memory was mapped at checkpoint time */
		fk.pstate = CU_PROCESS_STATE_FAILED;
		pthread_cond_broadcast(&fk.cond);
		return CUDA_ERROR_NOT_SUPPORTED;
	}
	r = fk_mem_restore(map);
	if (r != CUDA_SUCCESS)
		return r;
	remap_contexts(map);
	fk.pstate = CU_PROCESS_STATE_LOCKED;
	return CUDA_SUCCESS;
}

static CUresult do_unlock(void)
{
	if (fk.pstate != CU_PROCESS_STATE_LOCKED)
		return CUDA_ERROR_ILLEGAL_STATE;
	fk.pstate = CU_PROCESS_STATE_RUNNING;
	pthread_cond_broadcast(&fk.cond);
	return CUDA_SUCCESS;
}

/* ---- target side: the restore thread ---- */

static int hex_uuid(const char *s, CUuuid *ret)
{
	for (int i = 0; i < 16; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		ret->bytes[i] = (char)v;
	}
	return 0;
}

static CUresult parse_restore(char *args, int c)
{
	CUcheckpointGpuPair pairs[FK_MAX_PAIRS];
	char *save = NULL, *tok;
	unsigned n, i = 0;
	CUresult r;

	tok = strtok_r(args, " ", &save);
	if (!tok || sscanf(tok, "%u", &n) != 1 || n > FK_MAX_PAIRS)
		return CUDA_ERROR_INVALID_VALUE;
	while ((tok = strtok_r(NULL, " ", &save)) && i < n) {
		if (strlen(tok) != 65 || tok[32] != ':' || hex_uuid(tok, &pairs[i].oldUuid) < 0 ||
		    hex_uuid(tok + 33, &pairs[i].newUuid) < 0)
			return CUDA_ERROR_INVALID_VALUE;
		i++;
	}
	if (i != n || tok)
		return CUDA_ERROR_INVALID_VALUE;
	(void)c;
	pthread_mutex_lock(&fk.lock);
	r = do_restore(pairs, n);
	pthread_mutex_unlock(&fk.lock);
	return r;
}

static CUresult dispatch(char *cmd, int c, long long *ret_value)
{
	CUresult r = CUDA_SUCCESS;
	unsigned v;

	if (strncmp(cmd, "restore ", 8) == 0)
		return parse_restore(cmd + 8, c);
	pthread_mutex_lock(&fk.lock);
	if (strcmp(cmd, "state") == 0)
		*ret_value = fk.pstate;
	else if (strcmp(cmd, "tid") == 0)
		*ret_value = fk.restore_tid;
	else if (sscanf(cmd, "lock %u", &v) == 1)
		r = do_lock(v, c);
	else if (strcmp(cmd, "checkpoint") == 0)
		r = do_checkpoint();
	else if (strcmp(cmd, "unlock") == 0)
		r = do_unlock();
	else if (sscanf(cmd, "used %u", &v) == 1 && v < FAKECUDA_MAX_GPUS)
		*ret_value = (long long)fk_used_bytes((int)v);
	else if (strcmp(cmd, "devs") == 0)
		*ret_value = active_devs();
	else
		r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_unlock(&fk.lock);
	return r;
}

static void reply(int c, CUresult r, long long value)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "%d %lld\n", r, value);

	(void)!send(c, buf, (size_t)n, MSG_NOSIGNAL);
}

static void serve(int c)
{
	struct timeval tv = { .tv_sec = READ_TIMEOUT_S };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char cmd[CMD_MAX];
	long long value = 0;
	size_t got = 0;
	char *nl = NULL;
	CUresult r;

	if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		reply(c, CUDA_ERROR_NOT_PERMITTED, 0);
		return;
	}
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (!nl && got < sizeof(cmd) - 1) {
		ssize_t n = recv(c, cmd + got, sizeof(cmd) - 1 - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* caller gone or silent: nothing was done */
		got += (size_t)n;
		cmd[got] = '\0';
		nl = strchr(cmd, '\n');
	}
	if (!nl) {
		reply(c, CUDA_ERROR_INVALID_VALUE, 0);
		return;
	}
	*nl = '\0';
	r = dispatch(cmd, c, &value);
	reply(c, r, value);
}

static void *restore_thread(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	pthread_mutex_lock(&fk.lock);
	fk.restore_tid = gettid();
	pthread_cond_broadcast(&fk.cond);
	pthread_mutex_unlock(&fk.lock);
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EBADF || errno == EINVAL || errno == ENOTSOCK)
				break;
			if (errno != EINTR && errno != ECONNABORTED)
				fk_sleep_us(10000);
			continue;
		}
		serve(c);
		close(c);
	}
	return NULL;
}

CUresult fk_restore_thread_start(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t thread;
	int fd, n, err;

	if (mkdir(fk.cfg.state_dir, 0700) < 0 && errno != EEXIST)
		return CUDA_ERROR_OPERATING_SYSTEM;
	n = snprintf(fk.sock_path, sizeof(fk.sock_path), "%s/%d.sock", fk.cfg.state_dir,
		     (int)fk.pid);
	if (n < 0 || (size_t)n >= sizeof(fk.sock_path)) {
		fk.sock_path[0] = '\0';
		return CUDA_ERROR_OPERATING_SYSTEM;
	}
	memcpy(addr.sun_path, fk.sock_path, (size_t)n + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail_path;
	unlink(fk.sock_path); /* a stale one of an earlier process with this pid */
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0)
		goto fail_fd;

	/* the thread starts with every signal blocked: the application's signals are not its */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	fk.restore_tid = 0;
	err = pthread_create(&thread, &attr, restore_thread, (void *)(intptr_t)fd);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		goto fail_bound;
	while (fk.restore_tid == 0)
		pthread_cond_wait(&fk.cond, &fk.lock);
	fk.listen_fd = fd;
	return CUDA_SUCCESS;
fail_bound:
	unlink(fk.sock_path);
fail_fd:
	close(fd);
fail_path:
	fk.sock_path[0] = '\0';
	return CUDA_ERROR_OPERATING_SYSTEM;
}

void fk_restore_thread_forget(void)
{
	if (fk.listen_fd >= 0)
		close(fk.listen_fd);
	fk.listen_fd = -1;
	fk.restore_tid = 0;
	fk.sock_path[0] = '\0';
}

__attribute__((destructor)) static void fk_exit(void)
{
	if (fk.listen_fd >= 0 && fk.pid == getpid() && fk.sock_path[0])
		unlink(fk.sock_path);
}

/* ---- caller side ---- */

static int try_connect(const char *dir, int pid)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, n;

	n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%d.sock", dir, pid);
	if (n < 0 || (size_t)n >= sizeof(addr.sun_path))
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	while (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

/* FAKECUDA_STATE_DIR as the target process was started with, if we may read it. */
static int target_state_dir(int pid, char *dir, size_t len)
{
	static const char key[] = FAKECUDA_ENV_STATE_DIR "=";
	char path[64], *buf;
	ssize_t n, got = 0;
	int fd, r = -1;

	snprintf(path, sizeof(path), "/proc/%d/environ", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	buf = malloc(65536);
	if (buf) {
		while (got < 65535 && (n = read(fd, buf + got, (size_t)(65535 - got))) > 0)
			got += n;
		buf[got] = '\0';
		for (char *s = buf; s < buf + got; s += strlen(s) + 1) {
			if (strncmp(s, key, sizeof(key) - 1) == 0 && s[sizeof(key) - 1] &&
			    strlen(s + sizeof(key) - 1) < len) {
				strcpy(dir, s + sizeof(key) - 1);
				r = 0;
			}
		}
		free(buf);
	}
	close(fd);
	return r;
}

static int connect_target(int pid)
{
	char dir[PATH_MAX], path[64];
	struct stat st;
	int fd;

	pthread_mutex_lock(&fk.lock);
	strcpy(dir, fk.cfg.state_dir);
	pthread_mutex_unlock(&fk.lock);
	fd = try_connect(dir, pid);
	if (fd >= 0)
		return fd;
	if (target_state_dir(pid, dir, sizeof(dir)) == 0 && (fd = try_connect(dir, pid)) >= 0)
		return fd;
	snprintf(path, sizeof(path), "/proc/%d", pid);
	if (stat(path, &st) == 0) {
		snprintf(dir, sizeof(dir), "/tmp/fakecuda-%u", (unsigned)st.st_uid);
		fd = try_connect(dir, pid);
	}
	return fd;
}

CUresult fk_remote(enum fk_ep ep, int pid, const char *cmd, long long *ret_value)
{
	char buf[64];
	size_t len = strlen(cmd), off = 0, got = 0;
	long long value = 0;
	CUresult r;
	int c, code;

	r = fk_check(ep);
	if (r != CUDA_SUCCESS)
		return r;
	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
		return CUDA_ERROR_INVALID_VALUE;
	c = connect_target(pid);
	if (c < 0)
		return CUDA_ERROR_NOT_FOUND;
	while (off < len) {
		ssize_t n = send(c, cmd + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(c);
			return CUDA_ERROR_UNKNOWN;
		}
		off += (size_t)n;
	}
	while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
		ssize_t n = recv(c, buf + got, sizeof(buf) - 1 - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(c);
	buf[got] = '\0';
	if (!memchr(buf, '\n', got) || sscanf(buf, "%d %lld", &code, &value) != 2)
		return CUDA_ERROR_UNKNOWN; /* the target died mid-command */
	if (code == CUDA_SUCCESS && ret_value)
		*ret_value = value;
	return (CUresult)code;
}
