/* SPDX-License-Identifier: MIT */
#include "gwp-driver.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-ckpt.h"
#include "gw-cuda.h"

/* ---- the calls, made in the helper process ---- */

static int call_fail(struct gwp_driver *d, CUresult r, const char *call, pid_t pid, char *err,
		     size_t len)
{
	char text[160];

	snprintf(err, len, "%s(pid %d): %s", call, (int)pid,
		 gw_cuda_describe(d->cuda, r, text, sizeof(text)));
	return gw_cuda_errno(r);
}

static int call_state(struct gwp_driver *d, pid_t pid, enum gwp_state *ret_state,
		      pid_t *ret_tid, char *err, size_t len)
{
	CUprocessState st;
	CUresult r;
	int tid = 0;

	r = d->cuda->cuCheckpointProcessGetState(pid, &st);
	if (r != CUDA_SUCCESS)
		return call_fail(d, r, "cuCheckpointProcessGetState", pid, err, len);
	if (d->cuda->cuCheckpointProcessGetRestoreThreadId(pid, &tid) != CUDA_SUCCESS)
		tid = 0;
	*ret_state = (unsigned)st <= CU_PROCESS_STATE_FAILED ? (enum gwp_state)st :
							       GWP_STATE_UNKNOWN;
	*ret_tid = tid;
	return 0;
}

static int call_step(struct gwp_driver *d, pid_t pid, enum gwp_step step,
		     unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		     char *err, size_t len)
{
	static const enum gw_ckpt_step steps[] = {
		[GWP_STEP_LOCK] = GW_CKPT_LOCK,
		[GWP_STEP_CHECKPOINT] = GW_CKPT_CHECKPOINT,
		[GWP_STEP_RESTORE] = GW_CKPT_RESTORE,
		[GWP_STEP_UNLOCK] = GW_CKPT_UNLOCK,
	};
	CUcheckpointGpuPair cp[GWP_MAX_GPUS];
	struct gw_ckpt_args args = { .lock_timeout_ms = lock_timeout_ms, .pairs = cp,
				     .npairs = npairs };
	CUresult r;

	if (step < GWP_STEP_LOCK || step > GWP_STEP_UNLOCK || npairs > GWP_MAX_GPUS)
		return -EINVAL;
	for (unsigned i = 0; i < npairs; i++) {
		if (gw_cuda_uuid_parse(pairs[i].old_uuid, &cp[i].oldUuid) < 0 ||
		    gw_cuda_uuid_parse(pairs[i].new_uuid, &cp[i].newUuid) < 0) {
			snprintf(err, len, "bad GPU pair %s -> %s", pairs[i].old_uuid,
				 pairs[i].new_uuid);
			return -EINVAL;
		}
	}
	r = gw_ckpt_step(d->cuda, pid, steps[step], &args);
	if (r != CUDA_SUCCESS)
		return call_fail(d, r, gw_ckpt_step_call(steps[step]), pid, err, len);
	return 0;
}

static int call_gpus(struct gwp_driver *d, struct gwp_backend_gpu *gpus, unsigned max,
		     unsigned *ret_n, char *err, size_t len)
{
	const struct gw_cuda *cu = d->cuda;
	unsigned n = 0;
	int count = 0;
	CUresult r;

	r = cu->cuDeviceGetCount(&count);
	if (r != CUDA_SUCCESS)
		return call_fail(d, r, "cuDeviceGetCount", 0, err, len);
	for (int i = 0; i < count && n < max; i++) {
		int domain = 0, bus = 0, dev = 0;
		CUdevice dev_id;
		CUuuid uuid;

		if (cu->cuDeviceGet(&dev_id, i) != CUDA_SUCCESS ||
		    cu->cuDeviceGetUuid(&uuid, dev_id) != CUDA_SUCCESS)
			continue;
		gw_cuda_uuid_format(&uuid, gpus[n].gpu.uuid, GWP_UUID_LEN);
		gpus[n].gpu.usable = 1;
		gpus[n].pci[0] = '\0';
		if (cu->cuDeviceGetAttribute(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, dev_id) ==
			    CUDA_SUCCESS &&
		    cu->cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, dev_id) ==
			    CUDA_SUCCESS &&
		    cu->cuDeviceGetAttribute(&dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, dev_id) ==
			    CUDA_SUCCESS)
			snprintf(gpus[n].pci, GWP_PCI_LEN, "%04x:%02x:%02x.0", (unsigned)domain,
				 (unsigned)bus & 0xff, (unsigned)dev & 0xff);
		n++;
	}
	*ret_n = n;
	return 0;
}

/*
 * ---- the driver helper process ----
 *
 * The driver is never loaded into CRIU's process: an initialized driver has threads, and a
 * multi-threaded CRIU cannot setns() into a container's mount namespace ("Can't setns 26/mnt:
 * Invalid argument"). A child forked on the first driver call of a hook loads it, makes the
 * calls the parent sends it over a socketpair (one request, one reply), and _exit()s when the
 * parent closes its end at the end of the hook (gwp_backend_idle()) or goes away. SIGCHLD stays
 * blocked while it lives, so that CRIU's own SIGCHLD handler (restore) never sees it end.
 */

/* In the helper: load the driver as load_driver() did in-process. */
static int helper_load(struct gwp_driver *d, char *why, size_t len)
{
	char err[256], text[160];
	CUresult r;

	if (gw_cuda_load(NULL, &d->cuda, err, sizeof(err)) < 0) {
		snprintf(why, len, "%s", err);
		return -ENOTSUP;
	}
	if (!gw_cuda_has_checkpoint(d->cuda)) {
		snprintf(why, len, "%s has no checkpoint API (cuCheckpointProcess* needs driver 550 "
			 "or newer)", d->cuda->path);
		return -ENOTSUP;
	}
	r = d->cuda->cuInit(0);
	if (r != CUDA_SUCCESS) {
		snprintf(why, len, "cuInit: %s", gw_cuda_describe(d->cuda, r, text, sizeof(text)));
		return -ENOTSUP;
	}
	snprintf(why, len, "%s", d->cuda->path);
	return 0;
}

/* In the helper: every descriptor but fd (moved to 3) and stdin/out/err closed. */
static int helper_fds(int fd)
{
	DIR *d;
	struct dirent *e;

	if (fd != 3 && (dup2(fd, 3) < 0 || close(fd) < 0))
		return -1;
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4U, ~0U, 0U) == 0)
		return 0;
#endif
	d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		int n = atoi(e->d_name);

		if (n > 3 && n != dirfd(d))
			close(n);
	}
	closedir(d);
	return 0;
}

static void helper_send(int fd, const struct gwp_driver_reply *rep)
{
	while (send(fd, rep, sizeof(*rep), MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			_exit(1);
}

__attribute__((noreturn)) static void helper_main(struct gwp_driver *d, int fd, pid_t parent)
{
	struct gwp_driver_reply *rep = calloc(1, sizeof(*rep));
	struct gwp_driver_request req;
	struct sigaction dfl;
	sigset_t none;

	/* CRIU's handlers are not for this process, nor its blocked signals. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (!rep || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent ||
	    helper_fds(fd) < 0)
		_exit(1);
	fd = 3;
	d->criu = NULL; /* no logging from here: CRIU's log is the parent's */
	rep->r = helper_load(d, rep->err, sizeof(rep->err));
	helper_send(fd, rep);
	if (rep->r < 0)
		_exit(0);
	for (;;) {
		ssize_t n = recv(fd, &req, sizeof(req), 0);
		enum gwp_state state = GWP_STATE_UNKNOWN;

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			_exit(0);
		if (n != (ssize_t)sizeof(req))
			_exit(1);
		memset(rep, 0, sizeof(*rep));
		switch (req.op) {
		case GWP_DRIVER_STATE:
			rep->r = call_state(d, req.pid, &state, &rep->tid, rep->err,
					      sizeof(rep->err));
			rep->state = (int)state;
			break;
		case GWP_DRIVER_STEP:
			rep->r = call_step(d, req.pid, (enum gwp_step)req.step, req.lock_timeout_ms,
					     req.pairs, req.npairs < GWP_MAX_GPUS ? req.npairs :
										   GWP_MAX_GPUS,
					     rep->err, sizeof(rep->err));
			break;
		case GWP_DRIVER_GPUS:
			rep->r = call_gpus(d, rep->gpus, GWP_MAX_GPUS, &rep->ngpus, rep->err,
					     sizeof(rep->err));
			break;
		default:
			rep->r = -EINVAL;
			snprintf(rep->err, sizeof(rep->err), "unknown request %d", req.op);
		}
		helper_send(fd, rep);
	}
}

/* The reply to what was sent, or -EIO (err says why) when the helper is gone. */
static int helper_recv(struct gwp_driver *d, struct gwp_driver_reply *rep, char *err,
		       size_t len)
{
	ssize_t n;
	int status;

	do
		n = recv(d->fd, rep, sizeof(*rep), 0);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(*rep))
		return 0;
	if (n < 0)
		snprintf(err, len, "the driver helper process %d: %s", (int)d->helper,
			 strerror(errno));
	else if (n == 0 && waitpid(d->helper, &status, 0) == d->helper) {
		d->helper = -d->helper; /* reaped: gwp_driver_stop() only restores the mask */
		if (WIFSIGNALED(status))
			snprintf(err, len, "the driver helper process %d died of signal %d", -d->helper,
				 WTERMSIG(status));
		else
			snprintf(err, len, "the driver helper process %d exited with status %d",
				 -d->helper, WEXITSTATUS(status));
	} else {
		snprintf(err, len, "the driver helper process %d answered nonsense", (int)d->helper);
	}
	return -EIO;
}

void gwp_driver_stop(struct gwp_driver *d)
{
	int status;

	if (!d->helper)
		return;
	close(d->fd);
	d->fd = -1;
	if (d->helper > 0)
		while (waitpid(d->helper, &status, 0) < 0 && errno == EINTR)
			;
	d->helper = 0;
	sigprocmask(SIG_SETMASK, &d->mask, NULL);
}

/* Fork the helper and read its greeting: 0, or a negative errno with d->why set. */
int gwp_driver_start(struct gwp_driver *d)
{
	struct gwp_driver_reply *rep;
	pid_t parent = getpid(), pid;
	sigset_t chld;
	int sv[2], r;

	if (d->helper)
		return 0;
	rep = calloc(1, sizeof(*rep));
	if (!rep || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(d->why, sizeof(d->why), "cannot start a driver helper "
			 "process: %s", rep ? strerror(errno) : "out of memory");
		free(rep);
		return -ENOMEM;
	}
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &d->mask);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		helper_main(d, sv[1], parent);
	}
	close(sv[1]);
	if (pid < 0) {
		r = -errno;
		close(sv[0]);
		sigprocmask(SIG_SETMASK, &d->mask, NULL);
		snprintf(d->why, sizeof(d->why), "cannot start a driver helper "
			 "process: %s", strerror(-r));
		free(rep);
		return r;
	}
	d->helper = pid;
	d->fd = sv[0];
	gwp_criu_log(d->criu, GWP_CRIU_LOG_DEBUG, "driver helper process %d started", (int)pid);
	r = helper_recv(d, rep, d->why, sizeof(d->why));
	if (r == 0 && rep->r < 0) {
		snprintf(d->why, sizeof(d->why), "%s", rep->err);
		r = rep->r;
	} else if (r == 0) {
		snprintf(d->path, sizeof(d->path), "%.255s", rep->err);
	}
	if (r < 0)
		gwp_driver_stop(d);
	free(rep);
	return r;
}

int gwp_driver_call(struct gwp_driver *d, const struct gwp_driver_request *req,
		    struct gwp_driver_reply *rep, char *err, size_t len)
{
	ssize_t n;
	int r;

	if (!d->helper && gwp_driver_start(d) < 0) {
		/* it was usable in an earlier hook */
		d->avail = GWP_AVAIL_DOWN;
		snprintf(err, len, "the CUDA driver is no longer usable: %s", d->why);
		return -ENOTSUP;
	}
	do
		n = send(d->fd, req, sizeof(*req), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(*req)) {
		snprintf(err, len, "the driver helper process %d: %s", (int)d->helper,
			 n < 0 ? strerror(errno) : "short send");
		r = -EIO;
	} else {
		r = helper_recv(d, rep, err, len);
	}
	if (r < 0) {
		if (d->helper > 0)
			kill(d->helper, SIGKILL);
		gwp_driver_stop(d); /* the next call starts another */
		return r;
	}
	if (rep->r < 0)
		snprintf(err, len, "%s", rep->err);
	return rep->r;
}
