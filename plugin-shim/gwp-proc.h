/* SPDX-License-Identifier: MIT */
/* What the plugin reads from /proc about a thread: its pid in its own pid namespace, its seccomp
 * mode, and the reverse (which thread of a process has a given namespace tid). */
#ifndef GWP_PROC_H
#define GWP_PROC_H

#include <sys/types.h>

/* The innermost value of the NSpid line of <proc_root>/<pid>/task/<tid>/status (the tid as the
 * thread itself sees it). Returns 0, -ENOENT (no such thread), -EBADMSG. */
int gwp_proc_inner_tid(const char *proc_root, pid_t pid, pid_t tid, pid_t *ret_inner);

/* The thread of pid whose innermost NSpid is inner. Returns 0 or -ENOENT. */
int gwp_proc_find_inner_tid(const char *proc_root, pid_t pid, pid_t inner, pid_t *ret_tid);

/* 1 when the thread runs under a seccomp filter or strict mode, 0 when not, negative errno. */
int gwp_proc_seccomp(const char *proc_root, pid_t pid, pid_t tid);

/* 1 when tid is a thread of pid. */
int gwp_proc_has_thread(const char *proc_root, pid_t pid, pid_t tid);

#endif
