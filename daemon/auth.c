/* SPDX-License-Identifier: MIT */
#include "auth.h"
#include "pin.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

int gw_auth_is_root(const struct ucred *peer)
{
	return peer->uid == 0;
}

int gw_auth_may_act(const struct ucred *peer, const struct gw_pin *pin, char *why, size_t len)
{
	const uid_t *u = pin->uids;
	const gid_t *g = pin->gids;

	if (gw_auth_is_root(peer))
		return 0;
	if (u[0] != peer->uid || u[1] != peer->uid || u[2] != peer->uid) {
		snprintf(why, len, "uid %u may not act on pid %d (owned by uid %u): only root or "
			 "the process's owner may", (unsigned)peer->uid, (int)pin->pid,
			 (unsigned)u[0]);
		return -EPERM;
	}
	if (g[0] != peer->gid || g[1] != peer->gid || g[2] != peer->gid) {
		snprintf(why, len, "uid %u gid %u may not act on pid %d: its group ids (%u/%u/%u) "
			 "differ from the caller's, as ptrace would refuse", (unsigned)peer->uid,
			 (unsigned)peer->gid, (int)pin->pid, (unsigned)g[0], (unsigned)g[1],
			 (unsigned)g[2]);
		return -EPERM;
	}
	if (!pin->dumpable) {
		snprintf(why, len, "pid %d is not dumpable (a setuid program, or it called "
			 "prctl(PR_SET_DUMPABLE, 0)): only root may act on it", (int)pin->pid);
		return -EPERM;
	}
	return 0;
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
