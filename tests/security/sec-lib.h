/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the security suite (tests/security/README.md): unprivileged attackers in forked
 * children (setresgid/setgroups/setresuid to numeric uids, no passwd entry needed), gw-vram-app
 * started as another user (optionally under the shim, optionally at a chosen pid through
 * /proc/sys/kernel/ns_last_pid), and a raw protocol connection that also collects the fds the
 * daemon sends. Code that runs in a child that dropped privileges must not use GW_FAIL (its exit()
 * would run the harness's cleanup as that user): it returns codes and prints to stderr.
 */
#ifndef GW_SEC_LIB_H
#define GW_SEC_LIB_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <sys/types.h>

#include "gw-proto.h"
#include "harness.h"

#define UID_A 60001
#define UID_B 60002
#define UID_C 60003
#define UID_D 60004

#define SEC_HELLO "{\"id\":1,\"method\":\"gpuwarm.Hello\",\"params\":{\"version\":1}}"

void sec_need_root(void);
int sec_wait_code(pid_t pid);

/* Drop to uid/gid for good (groups, gid, uid) and stay dumpable, like a process that exec'd.
 * 0 or -1. */
int sec_drop(uid_t uid, gid_t gid);
/* Fork; the child drops to uid/gid (gid == uid when gid is (gid_t)-1), dies with us, and exits
 * with fn(data). */
pid_t sec_fork_as(uid_t uid, gid_t gid, int (*fn)(void *), void *data);
int sec_run_as(uid_t uid, gid_t gid, int (*fn)(void *), void *data);

/* A directory of the test's tree owned by uid, 0700 (its apps' FAKECUDA_STATE_DIR).
 * uid 0: gwt_dir() itself. Returns a static-lifetime string. */
const char *sec_user_dir(uid_t uid);

/* The next fork() of anyone gets pid `want` if nobody forks in between: 0, or -1 when the
 * kernel refuses (then skip). */
int sec_set_next_pid(pid_t want);

/* gw-vram-app as uid (gid == uid). env: "K=V" strings added (may be NULL); want_pid > 0: at
 * that pid (returns -EAGAIN when another pid came). Waits for its ready line. */
struct sec_app {
	pid_t pid;
	int out; /* its stdout */
};
int sec_app_start(const struct gwt_daemon *d, struct sec_app *app, uid_t uid, int shimmed,
		  pid_t want_pid, const char *const *env, const char *const *args);
/* SIGKILL and reap, waiting at most 5 s: 1 when reaped. */
int sec_app_stop(struct sec_app *app);
/* SIGUSR1 and read its verify line into line; 1 for "verify ok". */
int sec_app_verify(struct sec_app *app, char *line, size_t len);
/* A copy of the fake driver any user may load. */
const char *sec_cuda_copy(void);
/* Wait until the daemon knows the agent of pid with at least min_bytes attached. 0 or -1. */
int sec_wait_agent(const struct gwt_daemon *d, pid_t pid, double min_bytes, unsigned timeout_ms);

/* A raw protocol connection. */
struct sec_raw {
	int fd;
	struct gw_frame_decoder dec;
	size_t off, len;
	int fds[2 * GW_FRAME_MAX_FDS]; /* received, not yet taken */
	unsigned nfds;
	char buf[65536];
};
/* Connect (no Hello): 0 or -errno. */
int sec_raw_connect(const char *socket_path, struct sec_raw *r);
/* Connect and say Hello: 0, or -1 (then *ret_refusal, when not NULL, gets what came instead:
 * the daemon's first message, or NULL if none). */
int sec_raw_hello(const char *socket_path, struct sec_raw *r, cJSON **ret_refusal);
int sec_raw_send(struct sec_raw *r, const char *json, const int *fds, unsigned nfds);
/* One message within timeout_ms: 1 (parsed into *ret), 0 when the daemon closed the connection,
 * -ETIMEDOUT, -EBADMSG. */
int sec_raw_recv(struct sec_raw *r, unsigned timeout_ms, cJSON **ret);
/* Send a request with id and wait for the message with that id (others are dropped). NULL when
 * none came in time or the connection closed. */
cJSON *sec_raw_call(struct sec_raw *r, unsigned id, const char *method, const char *params,
		    unsigned timeout_ms);
void sec_raw_close(struct sec_raw *r);
/* The error name of a message, or NULL when it is not an error. */
const char *sec_err(const cJSON *m);

/* Number of open fds of a process. */
int sec_count_fds(pid_t pid);
/* 1 while the daemon runs; otherwise reaps it, prints its log and exit status and returns 0. */
int sec_daemon_alive(struct gwt_daemon *d);
/* The daemon's log must show no sanitizer report. */
void sec_assert_clean_log(const struct gwt_daemon *d);

#endif
