/* SPDX-License-Identifier: MIT */
#include "pin.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

int gw_proc_start_time(pid_t pid, uint64_t *ret)
{
	char path[64], buf[1024], *p;
	unsigned long long start;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return -EIO;
	/* After ')': field 3 (state) ... field 22 (starttime) is the 20th. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
		   "%*d %*d %llu", &start) != 1)
		return -EIO;
	if (p[2] == 'Z' || p[2] == 'X')
		return -ESRCH;
	*ret = start;
	return 0;
}

static int read_ids(pid_t pid, uid_t uids[3], gid_t gids[3])
{
	char path[64], line[256];
	unsigned long r, e, s;
	int have = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (fgets(line, sizeof(line), f) && have != 3) {
		if (sscanf(line, "Uid: %lu %lu %lu", &r, &e, &s) == 3) {
			uids[0] = (uid_t)r;
			uids[1] = (uid_t)e;
			uids[2] = (uid_t)s;
			have |= 1;
		} else if (sscanf(line, "Gid: %lu %lu %lu", &r, &e, &s) == 3) {
			gids[0] = (gid_t)r;
			gids[1] = (gid_t)e;
			gids[2] = (gid_t)s;
			have |= 2;
		}
	}
	fclose(f);
	return have == 3 ? 0 : -ESRCH; /* a zombie has no ids worth trusting */
}

int gw_pin_alive(const struct gw_pin *pin)
{
	struct pollfd p;

	if (!pin || pin->pidfd < 0)
		return 0;
	p.fd = pin->pidfd;
	p.events = POLLIN;
	p.revents = 0;
	/* A pidfd polls readable once its process has exited. */
	return poll(&p, 1, 0) == 0;
}

int gw_pin_open(pid_t pid, struct gw_pin *ret)
{
	struct gw_pin pin = GW_PIN_INIT;
	char path[64];
	struct stat st;
	int r;

	if (pid <= 0)
		return -ESRCH;
	pin.pid = pid;
	pin.pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pin.pidfd < 0)
		return errno == ESRCH ? -ESRCH : -errno;
	/* (pidfds are always close-on-exec) */
	r = gw_proc_start_time(pid, &pin.start_time);
	if (r == 0)
		r = read_ids(pid, pin.uids, pin.gids);
	/* The kernel makes the files under /proc/PID root's (the directory keeps its owner) when
	 * the process is not dumpable (a setuid program, one that changed its ids while
	 * fs.suid_dumpable is 0, prctl(PR_SET_DUMPABLE, 0)): the ptrace rule's last condition. */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (r == 0 && stat(path, &st) < 0)
		r = errno == ENOENT ? -ESRCH : -errno;
	if (r == 0)
		pin.dumpable = st.st_uid == pin.uids[0] && st.st_uid == pin.uids[1];
	/* Read after the pidfd was opened and the process still runs: all of it was its. */
	if (r == 0 && !gw_pin_alive(&pin))
		r = -ESRCH;
	if (r < 0) {
		close(pin.pidfd);
		return r;
	}
	*ret = pin;
	return 0;
}

void gw_pin_close(struct gw_pin *pin)
{
	if (!pin)
		return;
	if (pin->pidfd >= 0)
		close(pin->pidfd);
	pin->pidfd = -1;
}

void gw_pin_move(struct gw_pin *dst, struct gw_pin *src)
{
	if (dst == src)
		return;
	gw_pin_close(dst);
	*dst = *src;
	src->pidfd = -1;
}
