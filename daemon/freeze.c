/* SPDX-License-Identifier: MIT */
#include "freeze.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static int is_kept(pid_t tid, const pid_t *keep, unsigned nkeep)
{
	for (unsigned i = 0; i < nkeep; i++)
		if (keep[i] == tid)
			return 1;
	return 0;
}

static int is_frozen(const struct gw_frozen *f, pid_t tid)
{
	for (unsigned i = 0; i < f->count; i++)
		if (f->tids[i] == tid)
			return 1;
	return 0;
}

/* The thread's state letter in /proc ('t': a ptrace stop), or 0 when it is gone. */
static char thread_state(pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/*
 * Wait for tid's ptrace stop, polling so a thread stuck in the kernel cannot hang us. The stop
 * is seen by waitpid, or in /proc when another thread of the daemon collected it first (the
 * loop reaps its dead tracees on SIGCHLD, and ptrace stops raise SIGCHLD too).
 */
static int wait_stopped(pid_t tid, double deadline)
{
	for (;;) {
		int status;
		pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
		char state;

		if (r == tid) {
			if (WIFEXITED(status) || WIFSIGNALED(status))
				return -ESRCH;
			return 0;
		}
		if (r < 0 && errno == ECHILD)
			return -ESRCH; /* dead, and collected already */
		if (r < 0 && errno != EINTR)
			return -errno;
		state = thread_state(tid);
		if (state == 't')
			return 0;
		if (state == 0 || state == 'Z' || state == 'X')
			return -ESRCH;
		if (gw_now_ms() > deadline)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
}

/* One pass over /proc/pid/task; returns how many new threads were frozen, or < 0. */
static int freeze_pass(struct gw_frozen *f, const pid_t *keep, unsigned nkeep, double deadline)
{
	char path[64];
	struct dirent *e;
	int added = 0, r = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)f->pid);
	d = opendir(path);
	if (!d)
		return -ESRCH;
	while ((e = readdir(d))) {
		pid_t tid = (pid_t)atoi(e->d_name);

		if (tid <= 0 || is_kept(tid, keep, nkeep) || is_frozen(f, tid))
			continue;
		if (f->count >= GW_FREEZE_MAX_THREADS) {
			r = -E2BIG;
			break;
		}
		if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) < 0) {
			if (errno == ESRCH)
				continue; /* exited meanwhile */
			r = -errno;
			break;
		}
		f->tids[f->count++] = tid;
		if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) < 0 && errno != ESRCH) {
			r = -errno;
			break;
		}
		r = wait_stopped(tid, deadline);
		if (r == -ESRCH) {
			f->count--; /* the thread exited: nothing to thaw */
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		added++;
	}
	closedir(d);
	return r < 0 ? r : added;
}

int gw_freeze(pid_t pid, const pid_t *keep, unsigned nkeep, unsigned timeout_ms,
	      struct gw_frozen *ret)
{
	double deadline = gw_now_ms() + timeout_ms;
	struct gw_frozen f = { .pid = pid };
	int r;

	f.tids = calloc(GW_FREEZE_MAX_THREADS, sizeof(*f.tids));
	if (!f.tids)
		return -ENOMEM;
	/* Threads created while we scan are caught by the next pass; stop when one adds none. */
	do
		r = freeze_pass(&f, keep, nkeep, deadline);
	while (r > 0);
	if (r < 0) {
		gw_thaw(&f);
		return r;
	}
	*ret = f;
	return 0;
}

void gw_thaw(struct gw_frozen *frozen)
{
	if (!frozen || !frozen->tids)
		return;
	for (unsigned i = 0; i < frozen->count; i++) {
		pid_t tid = frozen->tids[i];
		int status;

		if (ptrace(PTRACE_DETACH, tid, NULL, NULL) == 0 || errno != ESRCH)
			continue;
		/* Not in a ptrace stop: killed meanwhile. A traced thread that died is reported to
		 * its tracer first, and its parent cannot reap the process until we have: collect
		 * it (a live thread left running, which can only be a thread in the middle of dying,
		 * is detached by the kernel when it is gone). */
		(void)waitpid(tid, &status, __WALL | WNOHANG);
	}
	free(frozen->tids);
	frozen->tids = NULL;
	frozen->count = 0;
}
