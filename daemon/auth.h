/* SPDX-License-Identifier: MIT */
/* Who may do what, from the peer credentials the kernel gives (SO_PEERCRED). */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

int gw_auth_is_root(const struct ucred *peer);

/*
 * May peer act on pid? Root may; anyone else only on a process whose real, effective and saved
 * uids all equal the peer's uid (the rule ptrace uses). Returns 0, -ESRCH (no such process) or
 * -EPERM, with a sentence for the client in why.
 */
int gw_auth_may_act_on_pid(const struct ucred *peer, pid_t pid, char *why, size_t len);

/* Read a process's real/effective/saved uids from /proc/<pid>/status. -ESRCH if it is gone. */
int gw_proc_uids(pid_t pid, uid_t ret_uids[3]);

/* The thread of pid whose id in pid's own (innermost) pid namespace is ns_tid, as a tid of
 * ours: what an agent inside a container reports (gettid()) mapped for ptrace. Returns the tid,
 * or -ESRCH. Without namespaces the two are the same. */
pid_t gw_proc_host_tid(pid_t pid, pid_t ns_tid);

#endif
