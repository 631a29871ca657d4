/* SPDX-License-Identifier: MIT */
#include "gw-privdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool plain_absolute(const char *path)
{
	size_t n = strlen(path);

	return path[0] == '/' && n <= GW_PRIVDIR_PATH_MAX && !strstr(path, "//") &&
	       !strstr(path, "/./") && !strstr(path, "/../") &&
	       !(n >= 2 && strcmp(path + n - 2, "/.") == 0) &&
	       !(n >= 3 && strcmp(path + n - 3, "/..") == 0) && !(n > 1 && path[n - 1] == '/');
}

int gw_privdir_open(const char *path, bool create, char *err, size_t len)
{
	struct stat st;
	int fd, r;

	if (!plain_absolute(path)) {
		snprintf(err, len, "%s: the path must be absolute, of at most %d bytes, without "
			 "\"//\", \".\", \"..\" or a trailing \"/\"", path, GW_PRIVDIR_PATH_MAX);
		return -EINVAL;
	}
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, len, "cannot create %s: %s", path, strerror(-r));
		return r;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			r = -ELOOP; /* O_DIRECTORY answers ENOTDIR for a link to a directory */
		snprintf(err, len, "cannot open %s: %s%s", path, strerror(-r),
			 r == -ELOOP ? " (a symlink: give the directory itself)" : "");
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(err, len, "cannot stat %s: %s", path, strerror(-r));
		close(fd);
		return r;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 022)) {
		snprintf(err, len, "%s must be owned by uid %u and writable by no one else (it is "
			 "uid %u, mode %04o)", path, (unsigned)geteuid(), (unsigned)st.st_uid,
			 (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	return fd;
}
