/* SPDX-License-Identifier: MIT */
#include "gwp-store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_BYTES 200  /* a store file's name */
#define CREATE_TRIES 8
#define COPY_CHUNK (64u << 20) /* bytes per sendfile() */

void gwp_store_init(struct gwp_store *s)
{
	s->fd = -1;
	s->path[0] = '\0';
}

int gwp_store_open(struct gwp_store *s, const char *path, char *err, size_t len)
{
	char why[GWP_STORE_PATH_MAX + 160];
	int fd;

	gwp_store_init(s);
	fd = gw_privdir_open(path, false, why, sizeof(why));
	if (fd < 0) {
		snprintf(err, len, "gpu-warmd's VRAM store: %s", why);
		return fd;
	}
	s->fd = fd;
	snprintf(s->path, sizeof(s->path), "%s", path);
	return 0;
}

void gwp_store_close(struct gwp_store *s)
{
	if (s->fd >= 0)
		close(s->fd);
	gwp_store_init(s);
}

/* A store file's name: letters, digits, '.', '_', '-'; not "." or "..". */
static bool plain_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > NAME_MAX_BYTES || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* The store's file a link target names, or NULL when it names no file of s's: "<store>/<name>",
 * or a relative link's "../../<store without its leading '/'>/<name>"
 * (gwp_store_relink_relative()). */
static const char *store_name(const struct gwp_store *s, const char *target)
{
	const char *path = s->path;
	size_t n;

	if (s->fd < 0)
		return NULL;
	if (strncmp(target, "../", 3) == 0) {
		while (strncmp(target, "../", 3) == 0)
			target += 3;
		path++; /* the store's path without its leading '/' */
	}
	n = strlen(path);
	if (strncmp(target, path, n) != 0 || target[n] != '/')
		return NULL;
	return plain_name(target + n + 1) ? target + n + 1 : NULL;
}

/* name's link target into buf: 0, -EINVAL (not a link), or another negative errno. */
static int read_link(int dirfd, const char *name, char *buf, size_t len)
{
	ssize_t n = readlinkat(dirfd, name, buf, len - 1);

	if (n < 0)
		return -errno;
	if ((size_t)n >= len - 1)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	return 0;
}

/* The store's name for the i-th try at a new file for name: name.<ns>-<n>. */
static int new_name(const char *name, int i, char *file, size_t len)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if ((size_t)snprintf(file, len, "%s.%" PRIx64 "-%x", name,
			     (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
			     (unsigned)getpid() ^ (unsigned)i) >= len ||
	    !plain_name(file))
		return -EINVAL;
	return 0;
}

static int create_in_store(const struct gwp_store *s, int dirfd, const char *name, char *err,
			   size_t len)
{
	char file[NAME_MAX_BYTES + 1], target[GWP_STORE_PATH_MAX + NAME_MAX_BYTES + 2];
	int fd = -1, r;

	for (int i = 0; i < CREATE_TRIES && fd < 0; i++) {
		if (new_name(name, i, file, sizeof(file)) < 0) {
			snprintf(err, len, "%s: not a name a store file can take", name);
			return -EINVAL;
		}
		fd = openat(s->fd, file, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0) {
		r = -errno;
		snprintf(err, len, "cannot create a file in gpu-warmd's VRAM store %s: %s", s->path,
			 strerror(-r));
		return r;
	}
	snprintf(target, sizeof(target), "%s/%s", s->path, file);
	if (symlinkat(target, dirfd, name) < 0) {
		r = -errno;
		snprintf(err, len, "cannot link %s to %s: %s", name, target, strerror(-r));
		unlinkat(s->fd, file, 0);
		close(fd);
		return r;
	}
	return fd;
}

/* in's data into the new store file file (another file system than in's: no hard link). */
static int copy_into_store(const struct gwp_store *s, int in, const char *file, uint64_t size)
{
	int out = openat(s->fd, file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	uint64_t done = 0;
	int r = 0;

	if (out < 0)
		return -errno;
	while (done < size) {
		ssize_t n = sendfile(out, in, NULL, size - done > COPY_CHUNK ? COPY_CHUNK :
						     (size_t)(size - done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO; /* the file shrank under us */
			break;
		}
		done += (uint64_t)n;
	}
	if (close(out) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlinkat(s->fd, file, 0);
	return r;
}

/* name's data under a new name in the store: a hard link, or a copy across file systems. */
static int put_in_store(const struct gwp_store *s, int dirfd, const char *name, int in,
			uint64_t size, char *file, size_t flen)
{
	int r = -EEXIST;

	for (int i = 0; i < CREATE_TRIES && r == -EEXIST; i++) {
		if (new_name(name, i, file, flen) < 0)
			return -EINVAL;
		r = linkat(dirfd, name, s->fd, file, 0) < 0 ? -errno : 0;
		if (r == -EXDEV || r == -EPERM) /* another file system; or hard links refused */
			r = copy_into_store(s, in, file, size);
	}
	return r;
}

/* "../" up to / from any images directory, then path (absolute) and file: a target that CRIU's
 * restorer, opening the page image from inside the restored container's root through the images
 * directory's fd, resolves in the host's tree. */
static void link_up(char *buf, size_t len, const char *path, const char *file)
{
	size_t at = 0;

	for (int i = 0; i < GWP_STORE_LINK_UPS && at + 3 < len; i++, at += 3)
		memcpy(buf + at, "../", 3);
	snprintf(buf + at, len - at, "%s/%s", path + 1, file);
}

/* name in dirfd replaced by a symlink to target in one rename (through name.gwlink): 0, or a
 * negative errno (name as it was). */
static int replace_by_link(int dirfd, const char *name, const char *target)
{
	char tmp[NAME_MAX_BYTES + 16];
	int r;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.gwlink", name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	unlinkat(dirfd, tmp, 0);
	if (symlinkat(target, dirfd, tmp) < 0)
		return -errno;
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		r = -errno;
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	return 0;
}

int gwp_store_adopt(const struct gwp_store *s, int dirfd, const char *name, uint64_t *bytes,
		    char *err, size_t len)
{
	char file[NAME_MAX_BYTES + 1], target[GWP_STORE_LINK_MAX];
	struct stat st;
	int in, r;

	*bytes = 0;
	if (s->fd < 0)
		return 0;
	in = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (in < 0) {
		r = -errno;
		if (r == -ELOOP)
			return 0; /* a link already */
		snprintf(err, len, "cannot open %s: %s", name, strerror(-r));
		return r;
	}
	if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(in);
		return 0; /* not a file to move */
	}
	if (strlen(name) > NAME_MAX_BYTES) {
		close(in);
		snprintf(err, len, "%s: not a name a store file can take", name);
		return -EINVAL;
	}
	r = put_in_store(s, dirfd, name, in, (uint64_t)st.st_size, file, sizeof(file));
	close(in);
	if (r < 0) {
		snprintf(err, len, "cannot put %s into gpu-warmd's VRAM store %s: %s", name, s->path,
			 strerror(-r));
		return r;
	}
	/* The link replaces the file in one rename: name is never missing. */
	snprintf(target, sizeof(target), "%s/%s", s->path, file);
	r = replace_by_link(dirfd, name, target);
	if (r < 0) {
		snprintf(err, len, "cannot replace %s by a link to %s: %s", name, target,
			 strerror(-r));
		unlinkat(s->fd, file, 0);
		return r;
	}
	*bytes = (uint64_t)st.st_size;
	return 1;
}

int gwp_store_relink_relative(const struct gwp_store *s, int dirfd, const char *name,
			      char *err, size_t len)
{
	char target[GWP_STORE_LINK_MAX], file[NAME_MAX_BYTES + 1];
	const char *in_store;
	int r = read_link(dirfd, name, target, sizeof(target));

	if (r < 0 || target[0] != '/')
		return 0; /* not a link, or relative already */
	in_store = store_name(s, target);
	if (!in_store)
		return 0;
	snprintf(file, sizeof(file), "%s", in_store); /* plain_name(): it fits */
	link_up(target, sizeof(target), s->path, file);
	r = replace_by_link(dirfd, name, target);
	if (r < 0) {
		snprintf(err, len, "cannot make the link %s relative: %s", name, strerror(-r));
		return r;
	}
	return 1;
}

int gwp_store_create(const struct gwp_store *s, int dirfd, const char *name, char *err,
		     size_t len)
{
	int fd, r;

	if (s->fd >= 0)
		return create_in_store(s, dirfd, name, err, len);
	fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, len, "cannot create %s: %s", name, strerror(-r));
		return r;
	}
	return fd;
}

/* fd is a regular file: fd, else it is closed and -EINVAL. */
static int regular_only(int fd, const char *what, char *err, size_t len)
{
	struct stat st;
	int flags = fcntl(fd, F_GETFL);

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, len, "%s is not a regular file", what);
		close(fd);
		return -EINVAL;
	}
	if (flags >= 0)
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	return fd;
}

int gwp_store_open_file(const struct gwp_store *s, int dirfd, const char *name, char *err,
			size_t len)
{
	const int how = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC; /* a FIFO must not block */
	char target[GWP_STORE_LINK_MAX];
	const char *file;
	int fd, r;

	fd = openat(dirfd, name, how);
	if (fd >= 0)
		return regular_only(fd, name, err, len);
	if (errno != ELOOP) {
		r = -errno;
		snprintf(err, len, "cannot open %s: %s", name, strerror(-r));
		return r;
	}
	r = read_link(dirfd, name, target, sizeof(target));
	if (r < 0) {
		snprintf(err, len, "cannot read the link %s: %s", name, strerror(-r));
		return r;
	}
	file = store_name(s, target);
	if (!file) {
		if (s->fd < 0)
			snprintf(err, len, "%s is a link to %s, and gpu-warmd has no VRAM store "
				 "(--vram-store) for it to be in", name, target);
		else
			snprintf(err, len, "%s is a link to %s, which is not a file of gpu-warmd's "
				 "VRAM store %s", name, target, s->path);
		return -EPERM;
	}
	fd = openat(s->fd, file, how);
	if (fd < 0) {
		r = -errno;
		snprintf(err, len, "cannot open %s (a link to %s in gpu-warmd's VRAM store): %s%s",
			 name, target, strerror(-r),
			 r == -ENOENT ? "; a checkpoint whose VRAM data is in a store restores "
					"only where that file is (the host that dumped it, or a "
					"copy of the file)" : "");
		return r;
	}
	return regular_only(fd, target, err, len);
}

int gwp_store_unlink(const struct gwp_store *s, int dirfd, const char *name)
{
	char target[GWP_STORE_LINK_MAX];
	const char *file = NULL;
	int r = 0;

	if (read_link(dirfd, name, target, sizeof(target)) == 0)
		file = store_name(s, target);
	if (unlinkat(dirfd, name, 0) < 0)
		r = -errno;
	if (file && unlinkat(s->fd, file, 0) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	return r;
}
