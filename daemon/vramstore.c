/* SPDX-License-Identifier: MIT */
#include "vramstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_PATH_MAX 511 /* the plugin's bound too (gwp-store.h) */

void gw_vramstore_init(struct gw_vramstore *s)
{
	s->fd = -1;
	s->path = NULL;
}

static int check_dir(int fd, const char *path, char *err, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		snprintf(err, len, "cannot stat %s: %s", path, strerror(errno));
		return -errno;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 022)) {
		snprintf(err, len, "%s must be owned by uid %u and writable by no one else (it is "
			 "uid %u, mode %04o)", path, (unsigned)geteuid(), (unsigned)st.st_uid,
			 (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

int gw_vramstore_open(struct gw_vramstore *s, const char *path, char *err, size_t len)
{
	size_t n = strlen(path);
	int fd, r;

	gw_vramstore_init(s);
	if (path[0] != '/' || n > STORE_PATH_MAX || strstr(path, "//") || strstr(path, "/./") ||
	    strstr(path, "/../") || (n > 1 && path[n - 1] == '/')) {
		snprintf(err, len, "the path must be absolute, of at most %d bytes, without "
			 "\"//\", \".\", \"..\" or a trailing \"/\"", STORE_PATH_MAX);
		return -EINVAL;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, len, "cannot create %s: %s", path, strerror(-r));
		return r;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		struct stat st;

		r = -errno;
		if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			r = -ELOOP;
		snprintf(err, len, "cannot open %s: %s%s", path, strerror(-r),
			 r == -ELOOP ? " (a symlink: give the directory itself)" : "");
		return r;
	}
	r = check_dir(fd, path, err, len);
	s->path = r == 0 ? strdup(path) : NULL;
	if (r == 0 && !s->path) {
		snprintf(err, len, "out of memory");
		r = -ENOMEM;
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	s->fd = fd;
	return 0;
}

void gw_vramstore_close(struct gw_vramstore *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	gw_vramstore_init(s);
}

cJSON *gw_vramstore_status_json(const struct gw_vramstore *s)
{
	uint64_t files = 0, bytes = 0;
	struct dirent *e;
	cJSON *o;
	DIR *d;
	int fd;

	if (s->fd < 0)
		return NULL;
	fd = openat(s->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d && fd >= 0)
		close(fd);
	while (d && (e = readdir(d)) != NULL) {
		struct stat st;

		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode)) {
			files++;
			bytes += (uint64_t)st.st_size;
		}
	}
	if (d)
		closedir(d);
	o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "path", s->path);
		cJSON_AddNumberToObject(o, "files", (double)files);
		cJSON_AddNumberToObject(o, "bytes", (double)bytes);
	}
	return o;
}
