/* SPDX-License-Identifier: MIT */
#include "sec-lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-test.h"

void sec_need_root(void)
{
	if (geteuid() != 0)
		GW_SKIP("needs root: the attacker and the victim must be different users");
}

int sec_wait_code(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int sec_drop(uid_t uid, gid_t gid)
{
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
		return -1;
	if (geteuid() != uid || setuid(0) == 0)
		return -1;
	/* A credential change made us non-dumpable; a process that exec'd would be dumpable. */
	prctl(PR_SET_DUMPABLE, 1);
	return 0;
}

pid_t sec_fork_as(uid_t uid, gid_t gid, int (*fn)(void *), void *data)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		GW_FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (uid != 0 && sec_drop(uid, gid == (gid_t)-1 ? uid : gid) < 0) {
			fprintf(stderr, "cannot drop to uid %u: %s\n", (unsigned)uid, strerror(errno));
			_exit(126);
		}
		fflush(NULL);
		_exit(fn(data));
	}
	return pid;
}

int sec_run_as(uid_t uid, gid_t gid, int (*fn)(void *), void *data)
{
	return sec_wait_code(sec_fork_as(uid, gid, fn, data));
}

const char *sec_user_dir(uid_t uid)
{
	static struct {
		uid_t uid;
		char path[512];
	} dirs[8];
	static int ndirs;

	if (uid == 0)
		return gwt_dir();
	for (int i = 0; i < ndirs; i++)
		if (dirs[i].uid == uid)
			return dirs[i].path;
	GW_ASSERT(ndirs < 8);
	snprintf(dirs[ndirs].path, sizeof(dirs[ndirs].path), "%s/u%u", gwt_dir(), (unsigned)uid);
	if (mkdir(dirs[ndirs].path, 0700) < 0 && errno != EEXIST)
		GW_FAIL("mkdir %s: %s", dirs[ndirs].path, strerror(errno));
	if (chown(dirs[ndirs].path, uid, uid) < 0)
		GW_FAIL("chown %s: %s", dirs[ndirs].path, strerror(errno));
	dirs[ndirs].uid = uid;
	return dirs[ndirs++].path;
}

int sec_set_next_pid(pid_t want)
{
	int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
	char buf[32];
	int n, ok;

	if (fd < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "%d", (int)want - 1);
	ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	return ok ? 0 : -1;
}

static const char *copied(const char *env, char **cache)
{
	const char *v = getenv(env);

	if (!v || !*v)
		GW_FAIL("%s is not set (run through meson test)", env);
	if (!*cache) {
		*cache = strdup(gw_test_world_runnable(v));
		GW_ASSERT(*cache);
	}
	return *cache;
}

static int read_line_fd(int fd, char *line, size_t len, unsigned timeout_ms)
{
	double deadline = gwt_now_ms() + timeout_ms;
	size_t n = 0;

	while (n + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(deadline - gwt_now_ms());
		char c;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) <= 0)
			continue;
		if (read(fd, &c, 1) != 1)
			return -EPIPE;
		if (c == '\n')
			break;
		line[n++] = c;
	}
	line[n] = '\0';
	return 0;
}

static char *app_copy, *shim_copy, *cuda_copy;

const char *sec_cuda_copy(void)
{
	return copied("GPUWARM_CUDA_LIBRARY", &cuda_copy);
}

int sec_app_verify(struct sec_app *app, char *line, size_t len)
{
	kill(app->pid, SIGUSR1);
	for (;;) {
		if (read_line_fd(app->out, line, len, 15000) < 0) {
			snprintf(line, len, "(no verify line)");
			return 0;
		}
		if (strncmp(line, "verify ", 7) == 0)
			return strncmp(line, "verify ok", 9) == 0;
	}
}

int sec_app_start(const struct gwt_daemon *d, struct sec_app *app, uid_t uid, int shimmed,
		  pid_t want_pid, const char *const *env, const char *const *args)
{
	const char *argv[32], *dir = sec_user_dir(uid);
	char line[512];
	size_t n = 0;
	int p[2];
	pid_t pid;

	memset(app, 0, sizeof(*app));
	app->out = -1;
	argv[n++] = copied("GW_VRAM_APP", &app_copy);
	for (; args && *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	copied("GPUWARM_CUDA_LIBRARY", &cuda_copy);
	if (shimmed)
		copied("GW_SHIM", &shim_copy);
	if (pipe2(p, O_CLOEXEC) < 0)
		GW_FAIL("pipe: %s", strerror(errno));
	fflush(NULL);
	if (want_pid > 0 && sec_set_next_pid(want_pid) < 0)
		GW_SKIP("the kernel refuses writes to /proc/sys/kernel/ns_last_pid");
	pid = fork();
	if (pid < 0)
		GW_FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 0);
		dup2(p[1], 1);
		setenv("FAKECUDA_STATE_DIR", dir, 1);
		setenv("GPUWARM_CUDA_LIBRARY", cuda_copy, 1);
		unsetenv("LD_PRELOAD");
		if (shimmed) {
			setenv("LD_PRELOAD", shim_copy, 1);
			setenv(GW_SOCKET_ENV, d->socket, 1);
		}
		for (; env && *env; env++)
			putenv((char *)*env);
		if (uid != 0 && sec_drop(uid, uid) < 0) {
			perror("drop");
			_exit(126);
		}
		execv(argv[0], (char *const *)argv);
		perror(argv[0]);
		_exit(127);
	}
	close(p[1]);
	app->pid = pid;
	app->out = p[0];
	if (want_pid > 0 && pid != want_pid) {
		sec_app_stop(app);
		return -EAGAIN;
	}
	if (read_line_fd(app->out, line, sizeof(line), 20000) < 0 || strncmp(line, "ready", 5) != 0)
		GW_FAIL("gw-vram-app as uid %u printed no ready line (got \"%s\")", (unsigned)uid,
			line);
	return 0;
}

int sec_app_stop(struct sec_app *app)
{
	int reaped = 1;

	if (app->pid > 0) {
		double deadline = gwt_now_ms() + 5000;
		int status;

		kill(app->pid, SIGKILL);
		/* Bounded: a process the daemon still ptraces cannot be reaped by its parent. */
		for (reaped = 0; !reaped && gwt_now_ms() < deadline;) {
			pid_t r = waitpid(app->pid, &status, WNOHANG);

			if (r == app->pid || (r < 0 && errno != EINTR))
				reaped = 1;
			else
				gwt_sleep_ms(20);
		}
		if (!reaped)
			fprintf(stderr, "note: pid %d could not be reaped 5 s after SIGKILL\n",
				(int)app->pid);
		app->pid = 0;
	}
	if (app->out >= 0)
		close(app->out);
	app->out = -1;
	return reaped;
}

int sec_wait_agent(const struct gwt_daemon *d, pid_t pid, double min_bytes, unsigned timeout_ms)
{
	double deadline = gwt_now_ms() + timeout_ms;

	while (gwt_now_ms() < deadline) {
		cJSON *st = NULL;
		const cJSON *p;
		int seen = 0;

		if (gwt_status_ok(d, &st) == 0) {
			cJSON_ArrayForEach(p, cJSON_GetObjectItem(st, "processes")) {
				const cJSON *ppid = cJSON_GetObjectItem(p, "pid");
				const cJSON *bytes = cJSON_GetObjectItem(p, "vram_bytes");

				if (cJSON_IsNumber(ppid) && ppid->valuedouble == pid &&
				    cJSON_IsNumber(bytes) && bytes->valuedouble >= min_bytes &&
				    cJSON_IsTrue(cJSON_GetObjectItem(p, "attached")))
					seen = 1;
			}
			cJSON_Delete(st);
		}
		if (seen)
			return 0;
		gwt_sleep_ms(30);
	}
	return -1;
}

int sec_raw_connect(const char *socket_path, struct sec_raw *r)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	memset(r, 0, sizeof(*r));
	r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (r->fd < 0)
		return -errno;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	if (connect(r->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;

		close(r->fd);
		r->fd = -1;
		return -e;
	}
	gw_frame_decoder_init(&r->dec, GW_FRAME_MAX_PAYLOAD);
	return 0;
}

int sec_raw_send(struct sec_raw *r, const char *json, const int *fds, unsigned nfds)
{
	return gw_send_frame(r->fd, json, strlen(json), fds, nfds);
}

int sec_raw_recv(struct sec_raw *r, unsigned timeout_ms, cJSON **ret)
{
	double deadline = gwt_now_ms() + timeout_ms;

	*ret = NULL;
	for (;;) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int fds[GW_FRAME_MAX_FDS];
		unsigned nfds = GW_FRAME_MAX_FDS;
		ssize_t got;
		int left;

		while (r->off < r->len) {
			char *payload = NULL;
			size_t plen = 0;
			ssize_t k = gw_frame_decoder_feed(&r->dec, r->buf + r->off, r->len - r->off,
							  &payload, &plen);

			if (k < 0)
				return -EBADMSG;
			r->off += (size_t)k;
			if (payload) {
				*ret = cJSON_Parse(payload);
				free(payload);
				return *ret ? 1 : -EBADMSG;
			}
		}
		r->off = r->len = 0;
		left = (int)(deadline - gwt_now_ms());
		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) <= 0)
			continue;
		got = gw_recv_with_fds(r->fd, r->buf, sizeof(r->buf), fds, &nfds);
		if (got == -EAGAIN || got == -EINTR)
			continue;
		for (unsigned i = 0; got >= 0 && i < nfds; i++) {
			if (r->nfds < sizeof(r->fds) / sizeof(r->fds[0]))
				r->fds[r->nfds++] = fds[i];
			else
				close(fds[i]);
		}
		if (got <= 0)
			return 0;
		r->len = (size_t)got;
	}
}

int sec_raw_hello(const char *socket_path, struct sec_raw *r, cJSON **ret_refusal)
{
	cJSON *m = NULL;
	int rc;

	if (ret_refusal)
		*ret_refusal = NULL;
	if (sec_raw_connect(socket_path, r) < 0)
		return -1;
	/* A refused connection may be closed already: the refusal still waits to be read. */
	(void)gw_send_frame(r->fd, SEC_HELLO, strlen(SEC_HELLO), NULL, 0);
	rc = sec_raw_recv(r, 5000, &m);
	if (rc == 1 && cJSON_GetObjectItem(m, "result")) {
		cJSON_Delete(m);
		return 0;
	}
	if (ret_refusal)
		*ret_refusal = m;
	else
		cJSON_Delete(m);
	return -1;
}

cJSON *sec_raw_call(struct sec_raw *r, unsigned id, const char *method, const char *params,
		    unsigned timeout_ms)
{
	char json[8192];
	double deadline = gwt_now_ms() + timeout_ms;

	snprintf(json, sizeof(json), "{\"id\":%u,\"method\":\"%s\",\"params\":%s}", id, method,
		 params ? params : "{}");
	if (sec_raw_send(r, json, NULL, 0) < 0)
		return NULL;
	for (;;) {
		cJSON *m = NULL;
		const cJSON *mid;
		int left = (int)(deadline - gwt_now_ms());

		if (left <= 0 || sec_raw_recv(r, (unsigned)left, &m) != 1)
			return NULL;
		mid = cJSON_GetObjectItem(m, "id");
		if (!cJSON_GetObjectItem(m, "method") && cJSON_IsNumber(mid) && mid->valuedouble == id)
			return m;
		cJSON_Delete(m);
	}
}

void sec_raw_close(struct sec_raw *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	for (unsigned i = 0; i < r->nfds; i++)
		close(r->fds[i]);
	r->nfds = 0;
	gw_frame_decoder_finish(&r->dec);
}

const char *sec_err(const cJSON *m)
{
	const cJSON *name = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "error"), "name");

	return cJSON_IsString(name) ? name->valuestring : NULL;
}

int sec_count_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((e = readdir(dir)))
		n += e->d_name[0] != '.';
	closedir(dir);
	return n;
}

int sec_daemon_alive(struct gwt_daemon *d)
{
	int status;

	if (d->pid <= 0)
		return 0;
	if (waitpid(d->pid, &status, WNOHANG) != d->pid)
		return 1;
	fprintf(stderr, "gpu-warmd died: %s %d; its log:\n%s\n",
		WIFEXITED(status) ? "exit" : "signal",
		WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), gwt_daemon_log(d));
	d->pid = 0;
	return 0;
}

void sec_assert_clean_log(const struct gwt_daemon *d)
{
	const char *log = gwt_daemon_log(d);

	if (strstr(log, "AddressSanitizer") || strstr(log, "runtime error:") ||
	    strstr(log, "LeakSanitizer"))
		GW_FAIL("the daemon's log has a sanitizer report:\n%s", log);
}
