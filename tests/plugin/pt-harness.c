/* SPDX-License-Identifier: MIT */
#include "pt-harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-cuda.h"
#include "gw-test.h"

#define MAX_KIDS 32
#define LOG_MAX (1 << 18)

static char test_dir[128];
static pid_t kids[MAX_KIDS];
static unsigned nkids;

void pt_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *env_or_die(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		GW_FAIL("environment variable %s is not set (run through meson test)", name);
	return v;
}

void pt_finish(void)
{
	char cmd[256];

	for (unsigned i = 0; i < nkids; i++) {
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	}
	nkids = 0;
	if (test_dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", test_dir);
		test_dir[0] = '\0';
	}
}

static void track(pid_t pid)
{
	if (nkids < MAX_KIDS)
		kids[nkids++] = pid;
}

static void untrack(pid_t pid)
{
	for (unsigned i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = 0;
}

void pt_setup(struct pt *p)
{
	const char *tmp = getenv("TMPDIR");
	char so[300];

	memset(p, 0, sizeof(*p));
	/* Unix socket paths are short: a long $TMPDIR falls back to /tmp. */
	if (!tmp || !*tmp || strlen(tmp) > 60)
		tmp = "/tmp";
	snprintf(test_dir, sizeof(test_dir), "%s/gwpt-XXXXXX", tmp);
	if (!mkdtemp(test_dir))
		GW_FAIL("mkdtemp: %s", strerror(errno));
	atexit(pt_finish);
	/* grandchildren (gw-vram-app --spawn-child) come back to us when their parent dies */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	snprintf(p->dir, sizeof(p->dir), "%s", test_dir);
	snprintf(p->socket, sizeof(p->socket), "%s/s.sock", p->dir);
	snprintf(p->images, sizeof(p->images), "%s/images", p->dir);
	snprintf(p->plugins, sizeof(p->plugins), "%s/plugins", p->dir);
	snprintf(p->log, sizeof(p->log), "%s/criu.log", p->dir);
	snprintf(p->daemon_log, sizeof(p->daemon_log), "%s/daemon.log", p->dir);
	if (mkdir(p->images, 0700) < 0 || mkdir(p->plugins, 0700) < 0)
		GW_FAIL("mkdir: %s", strerror(errno));
	snprintf(so, sizeof(so), "%s/gpuwarm_plugin.so", p->plugins);
	if (symlink(env_or_die("GW_PLUGIN"), so) < 0)
		GW_FAIL("symlink: %s", strerror(errno));
	setenv("FAKECUDA_STATE_DIR", p->dir, 1);
	setenv(GW_SOCKET_ENV, p->socket, 1);
	unsetenv("FAKECUDA_GPUS");
	unsetenv("FAKECUDA_FAIL");
	unsetenv("FAKECUDA_SYNC_DELAY_MS");
	unsetenv("GPUWARM_PROC_ROOT");
	unsetenv("GPUWARM_CRIU_LEAVE_RUNNING");
	unsetenv("CRIU_LIBS_DIR");
}

static pid_t spawn(const char *const *argv, const char *const *env, int out_fd, int err_fd)
{
	pid_t pid = fork();

	if (pid < 0)
		GW_FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		/* a test killed by its timeout takes its daemon and apps along */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 0);
		if (out_fd >= 0)
			dup2(out_fd, 1);
		if (err_fd >= 0)
			dup2(err_fd, 2);
		for (; env && *env; env++)
			putenv((char *)*env);
		execv(argv[0], (char *const *)argv);
		perror(argv[0]);
		_exit(127);
	}
	track(pid);
	return pid;
}

pid_t pt_spawn(const char *const *argv)
{
	return spawn(argv, NULL, -1, -1);
}

int pt_wait(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	untrack(pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- the daemon ---- */

static int any_priming(const cJSON *status)
{
	const cJSON *gpu;

	cJSON_ArrayForEach(gpu, cJSON_GetObjectItem(status, "gpus")) {
		const cJSON *state = cJSON_GetObjectItem(gpu, "state");

		if (cJSON_IsString(state) && strcmp(state->valuestring, "priming") == 0)
			return 1;
	}
	return 0;
}

int pt_daemon_call(struct pt *p, const char *method, cJSON *params, cJSON **ret_result)
{
	struct gw_client_error err;
	struct gw_client *c;
	cJSON *result = NULL;
	int r;

	r = gw_client_connect(p->socket, "plugin-test", 5000, &c, &err);
	if (r < 0)
		return r;
	r = gw_client_call(c, method, params, NULL, 0, 30000, &result, NULL, NULL, &err);
	gw_client_close(c);
	if (r < 0)
		return r;
	if (ret_result)
		*ret_result = result;
	else
		cJSON_Delete(result);
	return 0;
}

cJSON *pt_daemon_status(struct pt *p)
{
	cJSON *result = NULL;

	return pt_daemon_call(p, GW_METHOD_STATUS, NULL, &result) == 0 ? result : NULL;
}

int pt_daemon_ops_ok(struct pt *p, const char *op)
{
	cJSON *status = pt_daemon_status(p);
	const cJSON *ok;
	int n = -1;

	if (!status)
		return -1;
	ok = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(status, "operations"), op),
				 "ok");
	if (cJSON_IsNumber(ok))
		n = ok->valueint;
	cJSON_Delete(status);
	return n;
}

static const char *file_text(const char *path)
{
	static char buf[LOG_MAX];
	size_t n = 0;
	FILE *f = fopen(path, "r");

	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

void pt_daemon_start(struct pt *p, const char *const *env)
{
	pt_daemon_start_with(p, env, NULL);
}

void pt_daemon_start_with(struct pt *p, const char *const *env, const char *const *args)
{
	const char *argv[32] = { env_or_die("GW_DAEMON"), "--socket", p->socket, "--socket-mode",
				 "0666", "--staging-mib", "64", "--verbose", NULL };
	double deadline = now_ms() + 15000;
	size_t n = 8;

	for (size_t i = 0; args && args[i] && n < sizeof(argv) / sizeof(argv[0]) - 1; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	int fd = open(p->daemon_log, O_CREAT | O_APPEND | O_WRONLY | O_CLOEXEC, 0644);

	if (fd < 0)
		GW_FAIL("open %s: %s", p->daemon_log, strerror(errno));
	p->daemon = spawn(argv, env, fd, fd);
	close(fd);
	while (now_ms() < deadline) {
		cJSON *status;
		int code;

		if (waitpid(p->daemon, &code, WNOHANG) == p->daemon)
			GW_FAIL("gpu-warmd exited during start-up:\n%s", file_text(p->daemon_log));
		status = pt_daemon_status(p);
		if (status) {
			int priming = any_priming(status);

			cJSON_Delete(status);
			if (!priming)
				return;
		}
		pt_sleep_ms(20);
	}
	GW_FAIL("gpu-warmd did not become ready:\n%s", file_text(p->daemon_log));
}

void pt_daemon_kill(struct pt *p)
{
	if (p->daemon <= 0)
		return;
	kill(p->daemon, SIGKILL);
	pt_wait(p->daemon);
	p->daemon = 0;
}

/* ---- the app ---- */

static int read_line(FILE *f, char *line, size_t len, unsigned timeout_ms)
{
	struct pollfd pfd = { .fd = fileno(f), .events = POLLIN };
	double deadline = now_ms() + timeout_ms;

	for (;;) {
		if (poll(&pfd, 1, 50) > 0) {
			if (!fgets(line, (int)len, f))
				return -1;
			line[strcspn(line, "\n")] = '\0';
			return 0;
		}
		if (now_ms() > deadline)
			return -ETIMEDOUT;
	}
}

void pt_app_start(struct pt_app *a, const char *const *args, const char *const *env)
{
	const char *argv[32];
	char line[256];
	size_t n = 0;
	int fds[2], spawn_child = 0, readies = 0, want;

	memset(a, 0, sizeof(*a));
	argv[n++] = env_or_die("GW_VRAM_APP");
	for (; args && *args && n < 31; args++) {
		spawn_child |= strcmp(*args, "--spawn-child") == 0;
		argv[n++] = *args;
	}
	argv[n] = NULL;
	if (pipe2(fds, O_CLOEXEC) < 0)
		GW_FAIL("pipe: %s", strerror(errno));
	a->pid = spawn(argv, env, fds[1], -1);
	close(fds[1]);
	a->out = fdopen(fds[0], "r");
	setvbuf(a->out, NULL, _IONBF, 0);
	want = spawn_child ? 2 : 1;
	while (readies < want || (spawn_child && !a->child)) {
		int pid;
		char gpu[64];

		if (read_line(a->out, line, sizeof(line), 20000) < 0)
			GW_FAIL("gw-vram-app printed no ready line");
		if (sscanf(line, "child pid %d", &pid) == 1) {
			a->child = pid;
			track(pid);
			continue;
		}
		if (sscanf(line, "ready pid %d mib %*u gpu %63s", &pid, gpu) != 2)
			GW_FAIL("unexpected line from gw-vram-app: %s", line);
		snprintf(pid == a->pid ? a->gpu : a->child_gpu, 64, "%s", gpu);
		readies++;
	}
}

int pt_app_verify(struct pt_app *a, char *line, size_t len)
{
	int want = a->child ? 2 : 1, ok = 0;

	kill(a->pid, SIGUSR1);
	for (int seen = 0; seen < want;) {
		if (read_line(a->out, line, len, 20000) < 0) {
			snprintf(line, len, "(no verify line)");
			return ok;
		}
		if (strncmp(line, "verify ", 7) != 0)
			continue;
		seen++;
		ok += strncmp(line, "verify ok", 9) == 0;
	}
	return ok;
}

void pt_verify_gpu(const char *line, char *gpu, size_t len)
{
	const char *g = strstr(line, " gpu ");

	gpu[0] = '\0';
	if (g)
		snprintf(gpu, len, "%.*s", (int)strcspn(g + 5, " "), g + 5);
}

/* ---- fake-criu ---- */

static void criu_argv(struct pt *p, int old, const char *mode, const char *const *args,
		      const char **argv)
{
	size_t n = 0;

	argv[n++] = env_or_die(old ? "GW_FAKE_CRIU_OLD" : "GW_FAKE_CRIU");
	argv[n++] = mode;
	argv[n++] = "-D";
	argv[n++] = p->images;
	argv[n++] = "-L";
	argv[n++] = p->plugins;
	argv[n++] = "-o";
	argv[n++] = p->log;
	for (; args && *args && n < 39; args++)
		argv[n++] = *args;
	argv[n] = NULL;
}

pid_t pt_criu_spawn(struct pt *p, const char *mode, const char *const *args,
		    const char *const *env)
{
	const char *argv[40];
	int fd;

	criu_argv(p, 0, mode, args, argv);
	unlink(p->log);
	fd = open(p->log, O_CREAT | O_APPEND | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		GW_FAIL("open %s: %s", p->log, strerror(errno));
	{
		pid_t pid = spawn(argv, env, fd, fd);

		close(fd);
		return pid;
	}
}

int pt_criu(struct pt *p, int old, const char *mode, const char *const *args,
	    const char *const *env)
{
	const char *argv[40];
	int fd, code;

	criu_argv(p, old, mode, args, argv);
	unlink(p->log);
	fd = open(p->log, O_CREAT | O_APPEND | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		GW_FAIL("open %s: %s", p->log, strerror(errno));
	code = pt_wait(spawn(argv, env, fd, fd));
	close(fd);
	fprintf(stderr, "---- fake-criu %s: exit %d\n%s", mode, code, pt_log(p));
	return code;
}

const char *pt_log(const struct pt *p)
{
	return file_text(p->log);
}

int pt_log_count(const struct pt *p, const char *needle)
{
	const char *s = pt_log(p);
	int n = 0;

	while ((s = strstr(s, needle))) {
		n++;
		s += strlen(needle);
	}
	return n;
}

/* ---- the fake driver, from this process ---- */

int pt_cuda_state(pid_t pid)
{
	static struct gw_cuda *cu;
	CUprocessState st;
	char err[256];

	if (!cu) {
		if (gw_cuda_load(NULL, &cu, err, sizeof(err)) < 0)
			GW_FAIL("cannot load the fake driver: %s", err);
		if (cu->cuInit(0) != CUDA_SUCCESS)
			GW_FAIL("cuInit failed");
	}
	if (cu->cuCheckpointProcessGetState(pid, &st) != CUDA_SUCCESS)
		return -1;
	return (int)st;
}

int pt_image(const struct pt *p, pid_t pid, struct gwp_image *ret_img)
{
	int fd = open(p->images, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = gwp_image_read(fd, pid, ret_img);
	close(fd);
	return r;
}

void pt_gpu_uuid(int i, char *buf, size_t len)
{
	snprintf(buf, len, "GPU-fa4ec0da-0000-4000-8000-0000000000%02x", i);
}

const char *pt_fake_proc(struct pt *p, pid_t pid, int minor, int ngpus)
{
	static char root[192];
	char path[512], target[64];
	FILE *f;

	snprintf(root, sizeof(root), "%s/proc", p->dir);
	snprintf(path, sizeof(path), "mkdir -p '%s/%d/fd' '%s/driver/nvidia/gpus'", root, (int)pid,
		 root);
	if (system(path) != 0)
		GW_FAIL("cannot make %s", root);
	snprintf(path, sizeof(path), "%s/%d/fd/7", root, (int)pid);
	snprintf(target, sizeof(target), "/dev/nvidia%d", minor);
	if (symlink(target, path) < 0)
		GW_FAIL("symlink %s: %s", path, strerror(errno));
	snprintf(path, sizeof(path), "%s/%d/fd/8", root, (int)pid);
	if (symlink("/dev/nvidiactl", path) < 0)
		GW_FAIL("symlink %s: %s", path, strerror(errno));
	for (int i = 0; i < ngpus; i++) {
		snprintf(path, sizeof(path), "%s/driver/nvidia/gpus/0000:%02x:00.0", root, 0x3b + i);
		mkdir(path, 0755);
		snprintf(path, sizeof(path), "%s/driver/nvidia/gpus/0000:%02x:00.0/information",
			 root, 0x3b + i);
		f = fopen(path, "w");
		if (!f)
			GW_FAIL("cannot write %s", path);
		fprintf(f, "Model: \t\t Fake NVIDIA H100 80GB HBM3\nIRQ:   \t\t 42\n"
			   "Device Minor: \t %d\nBus Location: \t 0000:%02x:00.0\n", i, 0x3b + i);
		fclose(f);
	}
	return root;
}

const char *pt_fake_nspid(struct pt *p, pid_t pid, pid_t inner)
{
	static char root[192];
	char path[512];
	FILE *f;

	snprintf(root, sizeof(root), "%s/proc", p->dir);
	snprintf(path, sizeof(path), "mkdir -p '%s/%d/task/%d'", root, (int)pid, (int)pid);
	if (system(path) != 0)
		GW_FAIL("cannot make %s", root);
	snprintf(path, sizeof(path), "%s/%d/task/%d/status", root, (int)pid, (int)pid);
	f = fopen(path, "w");
	if (!f)
		GW_FAIL("cannot write %s", path);
	fprintf(f, "Name:\tgw-vram-app\nTgid:\t%d\nPid:\t%d\nNSpid:\t%d\t%d\n", (int)pid,
		(int)pid, (int)pid, (int)inner);
	fclose(f);
	return root;
}

/* ---- assertions ---- */

const char *pt_num(char *buf, size_t len, long v)
{
	snprintf(buf, len, "%ld", v);
	return buf;
}

void pt_assert_hook(const struct pt *p, const char *hook, pid_t pid, const char *ret)
{
	char line[128];

	snprintf(line, sizeof(line), "hook %s(%d) = %s\n", hook, (int)pid, ret);
	GW_ASSERT_STR_CONTAINS(pt_log(p), line);
}

void pt_assert_no_hook(const struct pt *p, const char *hook, pid_t pid)
{
	char line[128];

	snprintf(line, sizeof(line), "hook %s(%d) = ", hook, (int)pid);
	if (strstr(pt_log(p), line))
		GW_FAIL("%s ran for %d", hook, (int)pid);
}

void pt_assert_verified(struct pt_app *a, int n)
{
	char line[256];

	GW_ASSERT_INT_EQ(pt_app_verify(a, line, sizeof(line)), n);
}

int pt_file_has(const char *dir, const char *name, const char *needle)
{
	char path[512], buf[4096];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}
