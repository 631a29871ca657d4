/* SPDX-License-Identifier: MIT */
/*
 * warmctl cdi: a Container Device Interface spec that gives a container the shim with one flag,
 * `podman run --device gpu-warmd.dev/gpuwarm=shim`: the shim library (and the libcjson it
 * needs, preloaded first so that a container image without it works) bind-mounted read-only
 * at the host's paths, the daemon's socket directory bind-mounted, LD_PRELOAD and
 * GPUWARM_SOCKET set. Bind mounts, not recursive ones: CRIU refuses a mount below a bound
 * directory that the container's configuration does not name (docs/podman.md). Each mount says
 * "type": "bind": crun (1.21 at least) restores a container by walking its mounts' types, and
 * one without a type crashes it (`podman container restore`: "container create failed (no
 * logs from conmon)", and a leftover criu-root directory that fails the next try).
 */
#include "warmctl.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef GW_SHIM_INSTALL_PATH
#define GW_SHIM_INSTALL_PATH "/usr/lib/gpu-warmd/libgpuwarm-shim.so"
#endif

#define CDI_VERSION "0.6.0"
#define CDI_KIND "gpu-warmd.dev/gpuwarm"
#define CDI_DEVICE "shim"
#define CDI_SOCKET_NAME "gpu-warmd.sock"

/* The file libcjson was loaded from (warmctl links the one the shim links) when it is the
 * system's (under /usr or /lib): "" otherwise. A private copy elsewhere (a directory in
 * LD_LIBRARY_PATH, under /dev/shm...) is not mounted: the container then needs its own. */
static void cjson_path(char *buf, size_t len)
{
	Dl_info info;

	buf[0] = '\0';
	if (dladdr((void *)cJSON_Parse, &info) && info.dli_fname &&
	    strstr(info.dli_fname, "libcjson") &&
	    (strncmp(info.dli_fname, "/usr/", 5) == 0 || strncmp(info.dli_fname, "/lib", 4) == 0))
		snprintf(buf, len, "%s", info.dli_fname);
}

static cJSON *cdi_mount(const char *host, const char *container, bool ro)
{
	cJSON *m = cJSON_CreateObject(), *opts;

	if (!m)
		return NULL;
	cJSON_AddStringToObject(m, "hostPath", host);
	cJSON_AddStringToObject(m, "containerPath", container);
	cJSON_AddStringToObject(m, "type", "bind");
	opts = cJSON_AddArrayToObject(m, "options");
	if (opts) {
		if (ro)
			cJSON_AddItemToArray(opts, cJSON_CreateString("ro"));
		cJSON_AddItemToArray(opts, cJSON_CreateString("nosuid"));
		cJSON_AddItemToArray(opts, cJSON_CreateString("nodev"));
		cJSON_AddItemToArray(opts, cJSON_CreateString("bind"));
	}
	return m;
}

/* The spec for a shim at shim, a socket directory dir and libcjson at cjson ("": none). */
static cJSON *cdi_spec(const char *shim, const char *dir, const char *cjson)
{
	cJSON *spec = cJSON_CreateObject(), *devs, *dev, *edits, *env, *mounts;
	char preload[2 * PATH_MAX + 16], sock[PATH_MAX + 32];

	if (!spec)
		return NULL;
	cJSON_AddStringToObject(spec, "cdiVersion", CDI_VERSION);
	cJSON_AddStringToObject(spec, "kind", CDI_KIND);
	devs = cJSON_AddArrayToObject(spec, "devices");
	dev = cJSON_CreateObject();
	if (!devs || !dev || !cJSON_AddItemToArray(devs, dev)) {
		cJSON_Delete(dev);
		cJSON_Delete(spec);
		return NULL;
	}
	cJSON_AddStringToObject(dev, "name", CDI_DEVICE);
	edits = cJSON_AddObjectToObject(dev, "containerEdits");
	env = edits ? cJSON_AddArrayToObject(edits, "env") : NULL;
	mounts = edits ? cJSON_AddArrayToObject(edits, "mounts") : NULL;
	if (!env || !mounts) {
		cJSON_Delete(spec);
		return NULL;
	}
	/* libcjson at the host's path in the container, preloaded before the shim: the
	 * loader then takes it for the shim's DT_NEEDED libcjson.so.1 */
	if (cjson[0])
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s %s", cjson, shim);
	else
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", shim);
	snprintf(sock, sizeof(sock), GW_SOCKET_ENV "=%s/" CDI_SOCKET_NAME, dir);
	cJSON_AddItemToArray(env, cJSON_CreateString(preload));
	cJSON_AddItemToArray(env, cJSON_CreateString(sock));
	cJSON_AddItemToArray(mounts, cdi_mount(shim, shim, true));
	if (cjson[0])
		cJSON_AddItemToArray(mounts, cdi_mount(cjson, cjson, true));
	cJSON_AddItemToArray(mounts, cdi_mount(dir, dir, false));
	return spec;
}

/* text into path, atomically (a temporary file renamed), mode 0644. */
static int write_file(const char *path, const char *text)
{
	char tmp[PATH_MAX];
	size_t len = strlen(text), done = 0;
	int fd, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (done < len && r == 0) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0 && errno != EINTR)
			r = -errno;
		else if (n > 0)
			done += (size_t)n;
	}
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static int check_args(struct wc_ctx *ctx, const char *shim, const char *dir)
{
	if (shim[0] != '/' || !strrchr(shim, '/')[1])
		return wc_usage_error(ctx, "--shim '%s': expected an absolute path of a file",
				      shim);
	if (dir[0] != '/' || strlen(dir) >= PATH_MAX)
		return wc_usage_error(ctx, "--socket-dir '%s': expected an absolute path", dir);
	if (strlen(shim) >= PATH_MAX)
		return wc_usage_error(ctx, "--shim: path too long");
	return -1;
}

int wc_cmd_cdi(struct wc_ctx *ctx, const struct wc_args *args)
{
	const char *shim = args->cdi_shim ? args->cdi_shim : GW_SHIM_INSTALL_PATH;
	const char *dir = args->cdi_socket_dir ? args->cdi_socket_dir : "/run/gpu-warmd";
	char cjson[PATH_MAX], *text;
	cJSON *spec;
	int code = check_args(ctx, shim, dir), r;

	if (code >= 0)
		return code;
	cjson_path(cjson, sizeof(cjson));
	spec = cdi_spec(shim, dir, cjson);
	text = spec ? cJSON_Print(spec) : NULL;
	cJSON_Delete(spec);
	if (!text) {
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	if (!args->cdi_output) { /* the spec itself, whatever --json says */
		code = printf("%s\n", text) < 0 || fflush(stdout) != 0 ? WC_EXIT_FAILED :
									WC_EXIT_OK;
		free(text);
		return code;
	}
	r = write_file(args->cdi_output, text);
	free(text);
	if (r < 0)
		return wc_image_error(ctx, "%s: %s", args->cdi_output, strerror(-r));
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "output", args->cdi_output);
		cJSON_AddStringToObject(o, "device", CDI_KIND "=" CDI_DEVICE);
		cJSON_AddStringToObject(o, "shim", shim);
		cJSON_AddStringToObject(o, "socket_dir", dir);
		code = wc_print_json_result(ctx, o);
		cJSON_Delete(o);
		return code;
	}
	printf("wrote %s: podman run --device " CDI_KIND "=" CDI_DEVICE " ...\n", args->cdi_output);
	return fflush(stdout) != 0 ? WC_EXIT_FAILED : WC_EXIT_OK;
}
