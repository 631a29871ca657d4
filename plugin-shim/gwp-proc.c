/* SPDX-License-Identifier: MIT */
#include "gwp-proc.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw-proto.h"

/* The line of a status file that starts with key ("NSpid:"), without the key. */
static int status_line(const char *proc_root, pid_t pid, pid_t tid, const char *key, char *buf,
		       size_t len)
{
	char path[128], line[512];
	size_t klen = strlen(key);
	int r = -EBADMSG;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%d/task/%d/status", proc_root, (int)pid, (int)tid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT || errno == ESRCH ? -ENOENT : -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) == 0) {
			snprintf(buf, len, "%s", line + klen);
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

int gwp_proc_inner_tid(const char *proc_root, pid_t pid, pid_t tid, pid_t *ret_inner)
{
	char buf[512], *save = NULL, *tok, *last = NULL;
	int r = status_line(proc_root, pid, tid, "NSpid:", buf, sizeof(buf));
	long v;

	if (r < 0)
		return r;
	for (tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save))
		last = tok;
	if (!last)
		return -EBADMSG;
	errno = 0;
	v = strtol(last, &tok, 10);
	if (errno || *tok || v <= 0 || v > GW_PID_MAX)
		return -EBADMSG;
	*ret_inner = (pid_t)v;
	return 0;
}

int gwp_proc_find_inner_tid(const char *proc_root, pid_t pid, pid_t inner, pid_t *ret_tid)
{
	char dir[128];
	struct dirent *e;
	int found = 0;
	pid_t tid = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/%d/task", proc_root, (int)pid);
	d = opendir(dir);
	if (!d)
		return -ENOENT;
	while (!found && (e = readdir(d))) {
		pid_t t, in;
		char *end;

		if (e->d_name[0] == '.')
			continue;
		t = (pid_t)strtol(e->d_name, &end, 10);
		if (*end || t <= 0)
			continue;
		if (gwp_proc_inner_tid(proc_root, pid, t, &in) == 0 && in == inner) {
			tid = t;
			found = 1;
		}
	}
	closedir(d);
	if (!found)
		return -ENOENT;
	*ret_tid = tid;
	return 0;
}

int gwp_proc_seccomp(const char *proc_root, pid_t pid, pid_t tid)
{
	char buf[64];
	int r = status_line(proc_root, pid, tid, "Seccomp:", buf, sizeof(buf));

	if (r == -EBADMSG)
		return 0; /* a kernel without seccomp */
	if (r < 0)
		return r;
	return atoi(buf) != 0;
}

int gwp_proc_has_thread(const char *proc_root, pid_t pid, pid_t tid)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%d/task/%d", proc_root, (int)pid, (int)tid);
	return access(path, F_OK) == 0;
}
