/* SPDX-License-Identifier: MIT */
/* Who may do what, from the peer credentials the kernel gives (SO_PEERCRED). */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

int gw_auth_is_root(const struct ucred *peer);

struct gw_pin;

/*
 * May peer act on the pinned process? The kernel's ptrace rule (ptrace_may_access), as far as
 * the peer's credentials tell: root may; anyone else only on a process whose real, effective and
 * saved uids all equal the peer's uid, whose real, effective and saved gids all equal the peer's
 * gid, and which is dumpable. (A non-root peer's CAP_SYS_PTRACE is not honoured.) Returns 0 or
 * -EPERM, with a sentence for the client in why.
 */
int gw_auth_may_act(const struct ucred *peer, const struct gw_pin *pin, char *why, size_t len);

/* The thread of pid whose id in pid's own (innermost) pid namespace is ns_tid, as a tid of
 * ours: what an agent inside a container reports (gettid()) mapped for ptrace. Returns the tid,
 * or -ESRCH. Without namespaces the two are the same. */
pid_t gw_proc_host_tid(pid_t pid, pid_t ns_tid);

#endif
