/* SPDX-License-Identifier: MIT */
/*
 * A process pinned by a pidfd: the identity the daemon acts on, never a bare pid. A pid is
 * reused once its process is gone; a pidfd keeps naming the process it was opened for, and tells
 * whether that process still runs. Records that outlive a request (agents, held images) are
 * keyed by pid + start time and checked against the pidfd before each step.
 */
#ifndef GW_PIN_H
#define GW_PIN_H

#include <stdint.h>
#include <sys/types.h>

struct gw_pin {
	pid_t pid;
	int pidfd;           /* -1: not pinned */
	uint64_t start_time; /* clock ticks after boot (/proc/PID/stat field 22) */
	uid_t uids[3];       /* real, effective, saved: read right after the pidfd was opened */
	gid_t gids[3];
	int dumpable;        /* /proc/PID is owned by its uid, not root (see gw_pin_open) */
};

#define GW_PIN_INIT { .pid = 0, .pidfd = -1 }

/* Open a pidfd for pid, then read its start time and credentials, then check the pidfd still
 * names a live process, so what was read belongs to the pinned process. -ESRCH if it is gone
 * (or a zombie), other negative errnos on failure. ret is untouched on failure. */
int gw_pin_open(pid_t pid, struct gw_pin *ret);
/* Close the pidfd (a no-op on an unpinned or zeroed pin). */
void gw_pin_close(struct gw_pin *pin);
/* Move src into dst (dst's own pin is closed first); src is left unpinned. */
void gw_pin_move(struct gw_pin *dst, struct gw_pin *src);
/* 1 while the pinned process runs, 0 once it has exited (or when nothing is pinned). */
int gw_pin_alive(const struct gw_pin *pin);
/* The start time of pid now, or a negative errno. */
int gw_proc_start_time(pid_t pid, uint64_t *ret);

#endif
