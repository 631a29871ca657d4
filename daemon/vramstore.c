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

#include "gw-privdir.h"

void gw_vramstore_init(struct gw_vramstore *s)
{
	s->fd = -1;
	s->path = NULL;
}

int gw_vramstore_open(struct gw_vramstore *s, const char *path, char *err, size_t len)
{
	int fd;

	gw_vramstore_init(s);
	fd = gw_privdir_open(path, true, err, len);
	if (fd < 0)
		return fd;
	s->path = strdup(path);
	if (!s->path) {
		snprintf(err, len, "out of memory");
		close(fd);
		return -ENOMEM;
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
