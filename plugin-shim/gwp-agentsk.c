/* SPDX-License-Identifier: MIT */
/*
 * The shim agent's connection to gpu-warmd across a dump and restore: CRIU would refuse a
 * socket whose peer is outside the dump, so the plugin claims it at dump (noting whose it is in
 * gpuwarm-sk-<id>) and hands the restored process a fresh connection attached as its agent.
 */
#include "gwp-plugin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Which of our fast-path tasks owns socket inode id? */
static struct gwp_task *socket_owner(const struct gwp_plugin *p, int id)
{
	char want[48], dir[64], link[400], target[64];

	snprintf(want, sizeof(want), "socket:[%d]", id);
	for (struct gwp_task *t = p->tasks; t; t = t->next) {
		struct dirent *e;
		DIR *d;

		if (!t->fast)
			continue;
		snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)t->pid);
		d = opendir(dir);
		if (!d)
			continue;
		while ((e = readdir(d))) {
			ssize_t n;

			snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
			n = readlink(link, target, sizeof(target) - 1);
			if (n <= 0)
				continue;
			target[n] = '\0';
			if (strcmp(target, want) == 0) {
				closedir(d);
				return t;
			}
		}
		closedir(d);
	}
	return NULL;
}

/*
 * A shimmed process's agent is connected to gpu-warmd, a peer outside the dump: CRIU would
 * refuse it. Claim it, and note whose it is, so that the restore can hand the process a fresh
 * connection attached as its agent.
 */
int gwp_agentsk_dump(struct gwp_plugin *p, int fd, int id)
{
	int is_cwd, dir = gwp_criu_image_dir(&p->criu, &is_cwd), out;
	struct gwp_task *t;
	char name[64], line[64];

	if (p->mode != GWP_MODE_DUMP || !p->be || !gwp_backend_agent_socket(p->be, fd))
		return -ENOTSUP;
	t = socket_owner(p, id);
	if (!t) {
		LOG(p, WARN, "socket %d is connected to gpu-warmd but belongs to no process whose "
		    "VRAM gpu-warmd moved: not claimed", id);
		return -ENOTSUP;
	}
	snprintf(name, sizeof(name), "gpuwarm-sk-%d", id);
	out = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	snprintf(line, sizeof(line), "%d %d\n", (int)t->pid, (int)t->agent_tid);
	if (out < 0 || write(out, line, strlen(line)) != (ssize_t)strlen(line)) {
		LOG(p, ERROR, "cannot write %s: %s", name, strerror(errno));
		if (out >= 0)
			close(out);
		return -1;
	}
	close(out);
	LOG(p, INFO, "pid %d: its agent's connection to gpu-warmd (socket %d) is ours to restore",
	    (int)t->pid, id);
	return 0;
}

int gwp_agentsk_restore(struct gwp_plugin *p, int id)
{
	int is_cwd, dir = gwp_criu_image_dir(&p->criu, &is_cwd), in, pid, tid, fd;
	char name[64], line[64] = "", err[GWP_ERR_LEN] = "";
	ssize_t n;

	if (p->mode != GWP_MODE_RESTORE)
		return -ENOTSUP;
	snprintf(name, sizeof(name), "gpuwarm-sk-%d", id);
	in = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -ENOTSUP;
	n = read(in, line, sizeof(line) - 1);
	close(in);
	if (n <= 0 || sscanf(line, "%d %d", &pid, &tid) != 2 || pid <= 0 || tid <= 0) {
		LOG(p, ERROR, "%s is unreadable", name);
		return -1;
	}
	/*
	 * No gwp_backend_ready() here: CRIU runs this hook inside the task it restores, while it
	 * puts the task's files at their numbers; a connection kept open here would sit on one of
	 * them ("fd 8 already in use", seen with podman restore --import). The reattach makes its
	 * own connection, and only the fd handed back stays.
	 */
	fd = gwp_backend_reattach(p->be, pid, tid, err, sizeof(err));
	if (fd < 0) {
		LOG(p, ERROR, "pid %d: cannot give its agent a connection to gpu-warmd: %s", pid,
		    err);
		return -1;
	}
	LOG(p, INFO, "pid %d: its agent has a new connection to gpu-warmd", pid);
	return fd;
}
