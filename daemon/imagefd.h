/* SPDX-License-Identifier: MIT */
/*
 * Is a descriptor a client passed fit to hold a VRAM image? The daemon is root and never opens
 * a path for a client: the client opens the file (which shows it may), the daemon checks what it
 * got. A regular file, on a file system that stores data (not proc, sysfs, cgroup, debugfs and
 * the other kernel interfaces whose regular files are controls: writing VRAM bytes into
 * /proc/PID/oom_score_adj must be impossible), owned by the client unless the client is root, one
 * link (no hard link to somebody else's file), opened as the operation needs.
 */
#ifndef GW_IMAGEFD_H
#define GW_IMAGEFD_H

#include <stddef.h>
#include <sys/socket.h>

enum gw_imagefd_use {
	GW_IMAGEFD_WRITE, /* suspend: a new, empty file opened O_RDWR, not appending */
	GW_IMAGEFD_READ,  /* resume: readable */
};

/* 0, or -EINVAL / -EPERM / -EBADF with a sentence for the client in why. */
int gw_imagefd_check(int fd, const struct ucred *peer, enum gw_imagefd_use use, char *why,
		     size_t len);

#endif
