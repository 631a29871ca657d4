/* SPDX-License-Identifier: MIT */
#include "gwp-pages.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "pages-"
#define SUFFIX ".img"
#define ID_DIGITS_MAX 10

bool gwp_pages_is_image_name(const char *name)
{
	size_t n = strlen(name), p = strlen(PREFIX), s = strlen(SUFFIX), digits;

	if (n <= p + s || strncmp(name, PREFIX, p) != 0 || strcmp(name + n - s, SUFFIX) != 0)
		return false;
	digits = n - p - s;
	if (digits > ID_DIGITS_MAX)
		return false;
	for (size_t i = p; i < p + digits; i++)
		if (name[i] < '0' || name[i] > '9')
			return false;
	return true;
}

/* The directory dirfd, to read (its own fd: closedir() must not close dirfd). */
static DIR *open_dir(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d)
		close(fd);
	return d;
}

static bool is_link(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

bool gwp_pages_has_links(int dirfd)
{
	DIR *d = open_dir(dirfd);
	struct dirent *e;
	bool found = false;

	if (!d)
		return false;
	while (!found && (e = readdir(d)))
		found = gwp_pages_is_image_name(e->d_name) && is_link(dirfd, e->d_name);
	closedir(d);
	return found;
}

int gwp_pages_unlink_links(const struct gwp_store *s, int dirfd)
{
	DIR *d = open_dir(dirfd);
	struct dirent *e;
	int n = 0, r = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		int u;

		if (!gwp_pages_is_image_name(e->d_name) || !is_link(dirfd, e->d_name))
			continue;
		u = gwp_store_unlink(s, dirfd, e->d_name);
		if (u == 0)
			n++;
		else if (u != -ENOENT)
			r = u;
	}
	closedir(d);
	return r < 0 ? r : n;
}

int gwp_pages_relink(const struct gwp_store *s, int dirfd, unsigned *links, char *err,
		     size_t len)
{
	DIR *d = open_dir(dirfd);
	struct dirent *e;
	int r = 0;

	*links = 0;
	if (!d) {
		r = -errno;
		snprintf(err, len, "cannot read the images directory: %s", strerror(-r));
		return r;
	}
	while (r >= 0 && (e = readdir(d))) {
		if (!gwp_pages_is_image_name(e->d_name) || !is_link(dirfd, e->d_name))
			continue;
		r = gwp_store_relink_relative(s, dirfd, e->d_name, err, len);
		if (r > 0)
			(*links)++;
	}
	closedir(d);
	return r < 0 ? r : 0;
}

int gwp_pages_to_store(const struct gwp_store *s, int dirfd, unsigned *files, uint64_t *bytes,
		       char *err, size_t len)
{
	struct dirent *e;
	DIR *d;
	int r = 0;

	*files = 0;
	*bytes = 0;
	if (s->fd < 0)
		return 0;
	d = open_dir(dirfd);
	if (!d) {
		r = -errno;
		snprintf(err, len, "cannot read the images directory: %s", strerror(-r));
		return r;
	}
	while (r == 0 && (e = readdir(d))) {
		uint64_t moved = 0;

		if (!gwp_pages_is_image_name(e->d_name))
			continue;
		r = gwp_store_adopt(s, dirfd, e->d_name, &moved, err, len);
		if (r > 0) {
			(*files)++;
			*bytes += moved;
			r = 0;
		}
	}
	closedir(d);
	return r;
}
