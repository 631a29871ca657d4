/* SPDX-License-Identifier: MIT */
#include "harness.h"

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
#include <time.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-test.h"

static char test_dir[256];

static const char *env_or_die(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		GW_FAIL("environment variable %s is not set (run through meson test)", name);
	return v;
}

void gwt_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

double gwt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void remove_tree(void)
{
	char cmd[300];

	if (!test_dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", test_dir);
	test_dir[0] = '\0';
}

const char *gwt_dir(void)
{
	if (!test_dir[0]) {
		const char *tmp = getenv("TMPDIR");

		snprintf(test_dir, sizeof(test_dir), "%s/gwt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(test_dir))
			GW_FAIL("mkdtemp: %s", strerror(errno));
		/* Other users (the permission tests run clients as nobody) must reach the socket. */
		chmod(test_dir, 0755);
		setenv("FAKECUDA_STATE_DIR", test_dir, 1);
		atexit(remove_tree);
		gw_test_at_case_end(remove_tree);
	}
	return test_dir;
}

static pid_t spawn_in(const char *const *argv, int in_fd, int out_fd, int err_fd, int uid)
{
	pid_t pid = fork();

	if (pid < 0)
		GW_FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		/* Die with the test: a failed case must not leave a daemon holding meson's pipes. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in_fd >= 0 ? in_fd : null, 0);
		if (out_fd >= 0)
			dup2(out_fd, 1);
		if (err_fd >= 0)
			dup2(err_fd, 2);
		if (uid >= 0 && (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 ||
				 setuid((uid_t)uid) < 0)) {
			perror("setuid");
			_exit(126);
		}
		execv(argv[0], (char *const *)argv);
		perror(argv[0]);
		_exit(127);
	}
	return pid;
}

static pid_t spawn(const char *const *argv, int out_fd, int err_fd, int uid)
{
	return spawn_in(argv, -1, out_fd, err_fd, uid);
}

static int wait_exit(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int gwt_run_as(int uid, char *out, size_t outlen, char *err, size_t errlen,
	       const char *const *argv)
{
	char out_path[300], err_path[300];
	int out_fd, err_fd, code;
	static unsigned seq;
	FILE *f;

	snprintf(out_path, sizeof(out_path), "%s/run-%d-%u.out", gwt_dir(), getpid(), seq);
	snprintf(err_path, sizeof(err_path), "%s/run-%d-%u.err", gwt_dir(), getpid(), seq++);
	out_fd = open(out_path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	err_fd = open(err_path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (out_fd < 0 || err_fd < 0)
		GW_FAIL("open: %s", strerror(errno));
	code = wait_exit(spawn(argv, out_fd, err_fd, uid));
	close(out_fd);
	close(err_fd);
	if (out && outlen) {
		size_t n = 0;

		f = fopen(out_path, "r");
		if (f) {
			n = fread(out, 1, outlen - 1, f);
			fclose(f);
		}
		out[n] = '\0';
	}
	if (err && errlen) {
		size_t n = 0;

		f = fopen(err_path, "r");
		if (f) {
			n = fread(err, 1, errlen - 1, f);
			fclose(f);
		}
		err[n] = '\0';
	}
	unlink(out_path);
	unlink(err_path);
	return code;
}

int gwt_warmctl(const struct gwt_daemon *d, int uid, cJSON **ret_json, char *err, size_t errlen,
		const char *const *args)
{
	const char *argv[32];
	static char out[1 << 16];
	size_t n = 0;
	int code;

	/* another user may not reach the checkout's build directory: run a copy */
	argv[n++] = uid >= 0 ? gw_test_world_runnable(env_or_die("GW_WARMCTL")) :
			       env_or_die("GW_WARMCTL");
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	argv[n++] = "--json";
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	code = gwt_run_as(uid, out, sizeof(out), err, errlen, argv);
	if (ret_json)
		*ret_json = cJSON_Parse(out);
	return code;
}

pid_t gwt_warmctl_spawn(const struct gwt_daemon *d, const char *const *args)
{
	const char *argv[32];
	size_t n = 0;
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int in[2];
	pid_t pid;

	argv[n++] = env_or_die("GW_WARMCTL");
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	argv[n++] = "--json";
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	/* stdin stays open (the write end is never closed): `lease --hold` ends on EOF. */
	if (pipe2(in, O_CLOEXEC) < 0)
		GW_FAIL("pipe: %s", strerror(errno));
	pid = spawn_in(argv, in[0], null, null, -1);
	close(in[0]);
	close(null);
	return pid;
}

int gwt_connect(const struct gwt_daemon *d)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(d->socket) >= sizeof(addr.sun_path))
		GW_FAIL("socket path too long: %s", d->socket);
	memcpy(addr.sun_path, d->socket, strlen(d->socket) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int gwt_status_ok(const struct gwt_daemon *d, cJSON **ret_result)
{
	struct gw_client_error err;
	struct gw_client *c;
	cJSON *result = NULL;
	int r;

	r = gw_client_connect(d->socket, "gwt", 5000, &c, &err);
	if (r < 0)
		return r;
	r = gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, &result, NULL, NULL, &err);
	gw_client_close(c);
	if (r < 0)
		return r;
	if (ret_result)
		*ret_result = result;
	else
		cJSON_Delete(result);
	return 0;
}

static int any_gpu_priming(const cJSON *status)
{
	const cJSON *gpu;

	cJSON_ArrayForEach(gpu, cJSON_GetObjectItem(status, "gpus")) {
		const cJSON *state = cJSON_GetObjectItem(gpu, "state");

		if (cJSON_IsString(state) && strcmp(state->valuestring, "priming") == 0)
			return 1;
	}
	return 0;
}

void gwt_daemon_start(struct gwt_daemon *d, const char *const *extra_args)
{
	const char *argv[40];
	size_t n = 0;
	double deadline;
	int log_fd;

	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "%s", gwt_dir());
	snprintf(d->socket, sizeof(d->socket), "%s/gpu-warmd.sock", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/gpu-warmd.log", d->dir);
	argv[n++] = env_or_die("GW_DAEMON");
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	argv[n++] = "--socket-mode";
	argv[n++] = "0666";
	argv[n++] = "--staging-mib";
	argv[n++] = "64";
	argv[n++] = "--verbose";
	for (; extra_args && *extra_args && n < 39; extra_args++)
		argv[n++] = *extra_args;
	argv[n] = NULL;
	log_fd = open(d->log, O_CREAT | O_APPEND | O_WRONLY | O_CLOEXEC, 0644);
	if (log_fd < 0)
		GW_FAIL("open %s: %s", d->log, strerror(errno));
	d->pid = spawn(argv, log_fd, log_fd, -1);
	close(log_fd);

	deadline = gwt_now_ms() + 10000;
	while (gwt_now_ms() < deadline) {
		cJSON *status = NULL;
		int status_code;

		if (waitpid(d->pid, &status_code, WNOHANG) == d->pid)
			GW_FAIL("gpu-warmd exited during start-up:\n%s", gwt_daemon_log(d));
		if (gwt_status_ok(d, &status) == 0) {
			int priming = any_gpu_priming(status);

			cJSON_Delete(status);
			if (!priming)
				return;
		}
		gwt_sleep_ms(20);
	}
	GW_FAIL("gpu-warmd did not become ready:\n%s", gwt_daemon_log(d));
}

int gwt_daemon_stop(struct gwt_daemon *d)
{
	int code;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	code = wait_exit(d->pid);
	d->pid = 0;
	return code;
}

const char *gwt_daemon_log(const struct gwt_daemon *d)
{
	static char buf[1 << 16];
	size_t n = 0;
	FILE *f = fopen(d->log, "r");

	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

static int read_line(FILE *f, char *line, size_t len, unsigned timeout_ms)
{
	struct pollfd p = { .fd = fileno(f), .events = POLLIN };
	double deadline = gwt_now_ms() + timeout_ms;

	/* f is unbuffered, so poll() sees every byte stdio has not consumed. */
	for (;;) {
		if (poll(&p, 1, 50) > 0) {
			if (!fgets(line, (int)len, f))
				return -1;
			line[strcspn(line, "\n")] = '\0';
			return 0;
		}
		if (gwt_now_ms() > deadline)
			return -ETIMEDOUT;
	}
}

void gwt_app_start(struct gwt_app *app, const char *const *extra_args)
{
	const char *argv[32];
	char line[256];
	size_t n = 0;
	int fds[2];

	memset(app, 0, sizeof(*app));
	gwt_dir();
	argv[n++] = env_or_die("GW_VRAM_APP");
	for (; extra_args && *extra_args && n < 31; extra_args++)
		argv[n++] = *extra_args;
	argv[n] = NULL;
	if (pipe2(fds, O_CLOEXEC) < 0)
		GW_FAIL("pipe: %s", strerror(errno));
	app->pid = spawn(argv, fds[1], -1, -1);
	close(fds[1]);
	app->out = fdopen(fds[0], "r");
	setvbuf(app->out, NULL, _IONBF, 0);
	if (read_line(app->out, line, sizeof(line), 15000) < 0)
		GW_FAIL("gw-vram-app printed no ready line");
	if (sscanf(line, "ready pid %*d mib %*u gpu %63s", app->gpu) != 1)
		GW_FAIL("unexpected first line from gw-vram-app: %s", line);
}

int gwt_app_verify(struct gwt_app *app, char *line, size_t len)
{
	kill(app->pid, SIGUSR1);
	for (;;) {
		if (read_line(app->out, line, len, 15000) < 0) {
			snprintf(line, len, "(no verify line)");
			return 0;
		}
		if (strncmp(line, "verify ", 7) == 0)
			return strncmp(line, "verify ok", 9) == 0;
	}
}

void gwt_app_stop(struct gwt_app *app)
{
	if (app->pid > 0) {
		kill(app->pid, SIGKILL);
		wait_exit(app->pid);
		app->pid = 0;
	}
	if (app->out)
		fclose(app->out);
	app->out = NULL;
}

const cJSON *gwt_json(const cJSON *o, const char *path)
{
	char key[64];

	while (o && *path) {
		size_t n = strcspn(path, ".");

		snprintf(key, sizeof(key), "%.*s", (int)n, path);
		o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(key)) : cJSON_GetObjectItem(o, key);
		path += n + (path[n] == '.');
	}
	return o;
}

const char *gwt_json_str(const cJSON *o, const char *path)
{
	const cJSON *v = gwt_json(o, path);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

double gwt_json_num(const cJSON *o, const char *path)
{
	const cJSON *v = gwt_json(o, path);

	if (!cJSON_IsNumber(v))
		GW_FAIL("%s is not a number", path);
	return v->valuedouble;
}

const char *gwt_pid(pid_t pid)
{
	static char buf[32];

	snprintf(buf, sizeof(buf), "%d", (int)pid);
	return buf;
}

cJSON *gwt_ctl(const struct gwt_daemon *d, int code, const char *const *args)
{
	char err[4096];
	cJSON *json = NULL;
	int rc = gwt_warmctl(d, -1, &json, err, sizeof(err), args);

	if (rc != code)
		GW_FAIL("warmctl %s ...: exit %d, expected %d; stderr: %s\ndaemon log:\n%s", args[0],
			rc, code, err, gwt_daemon_log(d));
	if (!json)
		GW_FAIL("warmctl %s printed no JSON; stderr: %s", args[0], err);
	return json;
}

void gwt_app_start_shimmed(const struct gwt_daemon *d, struct gwt_app *app, double vram_mib,
			   const char *const *extra_args)
{
	double want = vram_mib * 1048576.0;

	setenv("LD_PRELOAD", getenv("GW_SHIM"), 1);
	setenv(GW_SOCKET_ENV, d->socket, 1);
	gwt_app_start(app, extra_args);
	unsetenv("LD_PRELOAD");
	for (int i = 0; i < 300; i++) {
		cJSON *j = gwt_ctl(d, 0, GWT_ARGS("status"));
		const cJSON *p;
		int seen = 0;

		cJSON_ArrayForEach(p, gwt_json(j, "result.processes"))
			if (gwt_json_num(p, "pid") == app->pid && gwt_json_num(p, "vram_bytes") >= want)
				seen = 1;
		cJSON_Delete(j);
		if (seen)
			return;
		gwt_sleep_ms(20);
	}
	GW_FAIL("the app's agent never reported %.0f MiB:\n%s", vram_mib, gwt_daemon_log(d));
}
