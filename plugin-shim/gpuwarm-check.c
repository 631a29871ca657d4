/* SPDX-License-Identifier: MIT */
#include "gpuwarm-check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef GW_CRIU_PLUGIN_DIR
#define GW_CRIU_PLUGIN_DIR GW_CRIU_DEFAULT_PLUGIN_DIR
#endif

#define VERSION_OUTPUT_MAX 4096
#define MAX_PLUGINS 256
#define SBIN_FALLBACK "/usr/local/sbin:/usr/sbin:/sbin"

/* The first executable name in the colon-separated dirs. */
static int find_in_path(const char *dirs, const char *name, char *ret_path, size_t len)
{
	const char *p = dirs;

	while (p && *p) {
		const char *end = strchr(p, ':');
		size_t dlen = end ? (size_t)(end - p) : strlen(p);
		char path[PATH_MAX];
		struct stat st;
		int n;

		n = snprintf(path, sizeof(path), "%.*s/%s", (int)dlen, dlen ? p : ".", name);
		if (n > 0 && (size_t)n < sizeof(path) && (size_t)n < len && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode) && access(path, X_OK) == 0) {
			memcpy(ret_path, path, (size_t)n + 1);
			return 0;
		}
		p = end ? end + 1 : NULL;
	}
	return -ENOENT;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run "path --version", its stdout and stderr into out. Returns the exit code or -errno. */
static int run_version(const char *path, int timeout_ms, char *out, size_t len)
{
	long long deadline = now_ms() + timeout_ms;
	size_t got = 0;
	int fds[2], status, r = 0;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(fds[0]);
		close(fds[1]);
		return r;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		if (null >= 0)
			dup2(null, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		execl(path, path, "--version", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		long long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			continue;
		n = read(fds[0], out + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == len - 1)
			break;
	}
	out[got] = '\0';
	close(fds[0]);
	if (r < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (r < 0)
		return r;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int gw_criu_parse_version(const char *text, char *ret_version, size_t len, int *ret_number)
{
	const char *v = text ? strstr(text, "Version:") : NULL;
	unsigned major = 0, minor = 0, patch = 0;
	char word[32];
	int n;

	if (!v || sscanf(v, "Version: %31s", word) != 1)
		return -EINVAL;
	n = sscanf(word, "%u.%u.%u", &major, &minor, &patch);
	if (n < 2 || major > 99 || minor > 99 || patch > 99)
		return -EINVAL;
	snprintf(ret_version, len, "%s", word);
	*ret_number = (int)(major * 10000 + minor * 100 + patch);
	return 0;
}

static cJSON *check_criu(const char *dirs, int timeout_ms)
{
	char path[PATH_MAX], version[32], *out;
	cJSON *o = cJSON_CreateObject();
	int code, number;

	if (!o)
		return NULL;
	if (find_in_path(dirs, "criu", path, sizeof(path)) < 0 &&
	    find_in_path(SBIN_FALLBACK, "criu", path, sizeof(path)) < 0) {
		cJSON_AddNullToObject(o, "path");
		cJSON_AddNullToObject(o, "version");
		cJSON_AddNullToObject(o, "device_hooks");
		cJSON_AddStringToObject(o, "error", "criu not found in PATH or " SBIN_FALLBACK);
		return o;
	}
	cJSON_AddStringToObject(o, "path", path);
	out = malloc(VERSION_OUTPUT_MAX);
	if (!out) {
		cJSON_Delete(o);
		return NULL;
	}
	code = run_version(path, timeout_ms, out, VERSION_OUTPUT_MAX);
	if (code == 0 && gw_criu_parse_version(out, version, sizeof(version), &number) == 0) {
		cJSON_AddStringToObject(o, "version", version);
		cJSON_AddBoolToObject(o, "device_hooks", number >= 40000);
		cJSON_AddNullToObject(o, "error");
	} else {
		char why[PATH_MAX + 160];

		if (code < 0)
			snprintf(why, sizeof(why), "%s --version: %s", path, strerror(-code));
		else
			snprintf(why, sizeof(why), "%s --version exited %d: %.80s", path, code,
				 out);
		cJSON_AddNullToObject(o, "version");
		cJSON_AddNullToObject(o, "device_hooks");
		cJSON_AddStringToObject(o, "error", why);
	}
	free(out);
	return o;
}

/* "*.so" names in readdir() order, as CRIU sees them. Returns the count or -errno. */
static int plugin_files(const char *dir, cJSON *order, int *ret_ours, int *ret_cuda)
{
	struct dirent *e;
	int n = 0;
	DIR *d = opendir(dir);

	*ret_ours = *ret_cuda = -1;
	if (!d)
		return -errno;
	while ((e = readdir(d)) && n < MAX_PLUGINS) {
		size_t len = strlen(e->d_name);

		if (len < 3 || strcmp(e->d_name + len - 3, ".so") != 0)
			continue;
		if (strcmp(e->d_name, GW_CRIU_PLUGIN_FILE) == 0)
			*ret_ours = n;
		if (strcmp(e->d_name, GW_CRIU_CUDA_PLUGIN_FILE) == 0)
			*ret_cuda = n;
		cJSON_AddItemToArray(order, cJSON_CreateString(e->d_name));
		n++;
	}
	closedir(d);
	return n;
}

int gw_criu_check_with(const struct gw_criu_check_opts *opts, cJSON **ret_report)
{
	const char *dirs = opts->path ? opts->path : getenv("PATH");
	const char *env_dir = getenv("CRIU_LIBS_DIR");
	const char *dir = opts->plugin_dir, *from = "option";
	const char *nvidia = opts->nvidia_proc ? opts->nvidia_proc : "/proc/driver/nvidia/gpus";
	int timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
	char tool[PATH_MAX], why[PATH_MAX + 64], reason[PATH_MAX + 512];
	cJSON *report = cJSON_CreateObject(), *criu, *order, *plugins;
	int n, ours, cuda, cuda_enabled, used;

	if (!report)
		return -ENOMEM;
	if (!dir && env_dir && *env_dir) {
		dir = env_dir;
		from = "CRIU_LIBS_DIR";
	} else if (!dir) {
		dir = GW_CRIU_DEFAULT_PLUGIN_DIR;
		from = "default";
	}
	criu = check_criu(dirs ? dirs : "", timeout_ms);
	order = cJSON_CreateArray();
	plugins = cJSON_CreateObject();
	if (!criu || !order || !plugins) {
		cJSON_Delete(criu);
		cJSON_Delete(order);
		cJSON_Delete(plugins);
		cJSON_Delete(report);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(report, "criu", criu);
	cJSON_AddStringToObject(report, "plugin_dir", dir);
	cJSON_AddStringToObject(report, "plugin_dir_from", from);
	n = plugin_files(dir, order, &ours, &cuda);
	cJSON_AddBoolToObject(report, "plugin_dir_exists", n >= 0);
	cJSON_AddStringToObject(report, "installed_dir", GW_CRIU_PLUGIN_DIR);
	cJSON_AddItemToObject(report, "load_order", order);
	cJSON_AddBoolToObject(plugins, GW_CRIU_CUDA_PLUGIN_FILE, cuda >= 0);
	cJSON_AddBoolToObject(plugins, GW_CRIU_PLUGIN_FILE, ours >= 0);
	cJSON_AddItemToObject(report, "cuda_plugins", plugins);

	/* cuda_plugin_init(): disabled without an NVIDIA GPU or without cuda-checkpoint. */
	if (access(nvidia, F_OK) != 0) {
		cuda_enabled = 0;
		snprintf(why, sizeof(why), "no NVIDIA GPU (%s is absent)", nvidia);
	} else if (find_in_path(dirs ? dirs : "", "cuda-checkpoint", tool, sizeof(tool)) < 0) {
		cuda_enabled = 0;
		snprintf(why, sizeof(why), "cuda-checkpoint is not in PATH");
	} else {
		cuda_enabled = 1;
		snprintf(why, sizeof(why), "NVIDIA GPU present and %s found", tool);
	}
	cJSON_AddBoolToObject(report, "cuda_plugin_enabled", cuda >= 0 && cuda_enabled);
	cJSON_AddStringToObject(report, "cuda_plugin_why", cuda < 0 ? "cuda_plugin.so is not in "
				"the plugin directory" : why);

	if (n < 0) {
		used = 0;
		snprintf(reason, sizeof(reason), "the plugin directory %s cannot be read: %s", dir,
			 strerror(-n));
	} else if (ours < 0) {
		used = 0;
		snprintf(reason, sizeof(reason), "%s is not in %s", GW_CRIU_PLUGIN_FILE, dir);
	} else if (cuda < 0) {
		used = 1;
		snprintf(reason, sizeof(reason), "the only CUDA plugin in %s", dir);
	} else if (ours < cuda) {
		used = 1;
		snprintf(reason, sizeof(reason), "CRIU reads it before %s (directory order)",
			 GW_CRIU_CUDA_PLUGIN_FILE);
	} else if (!cuda_enabled) {
		used = 1;
		snprintf(reason, sizeof(reason), "%s comes first but stands aside: %s",
			 GW_CRIU_CUDA_PLUGIN_FILE, why);
	} else {
		used = 0;
		snprintf(reason, sizeof(reason), "CRIU reads %s first (directory order) and it "
			 "handles every process: remove it from %s or pass -L with a directory "
			 "holding only %s", GW_CRIU_CUDA_PLUGIN_FILE, dir, GW_CRIU_PLUGIN_FILE);
	}
	cJSON_AddBoolToObject(report, "gpuwarm_used", used);
	cJSON_AddStringToObject(report, "reason", reason);
	*ret_report = report;
	return 0;
}

int gw_criu_check(cJSON **ret_report)
{
	struct gw_criu_check_opts opts = { 0 };

	return gw_criu_check_with(&opts, ret_report);
}
