/* SPDX-License-Identifier: MIT */
#include "auth.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

int gw_auth_is_root(const struct ucred *peer)
{
	return peer->uid == 0;
}

int gw_proc_uids(pid_t pid, uid_t ret_uids[3])
{
	char path[64], line[256];
	unsigned long r, e, s;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Uid: %lu %lu %lu", &r, &e, &s) == 3) {
			found = 1;
			break;
		}
	}
	fclose(f);
	if (!found)
		return -ESRCH; /* a zombie has no Uid line worth trusting */
	ret_uids[0] = (uid_t)r;
	ret_uids[1] = (uid_t)e;
	ret_uids[2] = (uid_t)s;
	return 0;
}

int gw_auth_may_act_on_pid(const struct ucred *peer, pid_t pid, char *why, size_t len)
{
	uid_t uids[3];
	int r;

	if (pid <= 0) {
		snprintf(why, len, "pid %d is not a process id", (int)pid);
		return -ESRCH;
	}
	r = gw_proc_uids(pid, uids);
	if (r < 0) {
		snprintf(why, len, "no process with pid %d", (int)pid);
		return r == -ESRCH ? -ESRCH : -EPERM;
	}
	if (gw_auth_is_root(peer))
		return 0;
	if (uids[0] == peer->uid && uids[1] == peer->uid && uids[2] == peer->uid)
		return 0;
	snprintf(why, len,
		 "uid %u may not act on pid %d (owned by uid %u): only root or the process's owner may",
		 (unsigned)peer->uid, (int)pid, (unsigned)uids[0]);
	return -EPERM;
}

/* The last number of the "NSpid:" line of /proc/PID/task/TID/status, or -1. */
static long innermost_tid(pid_t pid, const char *task)
{
	char path[320], line[256];
	long last = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, task);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *end;

		if (strncmp(line, "NSpid:", 6) != 0)
			continue;
		for (p += 6;; p = end) {
			long v = strtol(p, &end, 10);

			if (end == p)
				break;
			last = v;
		}
		break;
	}
	fclose(f);
	return last;
}

pid_t gw_proc_host_tid(pid_t pid, pid_t ns_tid)
{
	char path[64];
	struct dirent *e;
	pid_t found = -ESRCH;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return -ESRCH;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (innermost_tid(pid, e->d_name) == ns_tid) {
			found = (pid_t)atoi(e->d_name);
			break;
		}
	}
	closedir(d);
	return found;
}
