/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the shim's tests: a private directory, the shimmed app (tests/shim/shim-app.c)
 * driven line by line over pipes, a fake daemon on a Unix socket that speaks the agent channel,
 * and the fake driver in the test process itself (to import exported fds and create memory).
 */
#ifndef SHIM_TESTLIB_H
#define SHIM_TESTLIB_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "gw-cuda.h"
#include "gw-proto.h"
#include "gw-test.h"

#define MIB ((size_t)1 << 20)
#define ST_TIMEOUT_MS 20000

struct st_env {
	char dir[64];
	char sock[128];
	char fkstate[128];
};

/* mkdtemp'd directory; FAKECUDA_STATE_DIR points into it for this process and its apps. */
void st_setup(struct st_env *e);
void st_cleanup(struct st_env *e);

/* The byte pattern shim-app writes and checks. */
static inline unsigned char st_pattern(unsigned seed, size_t i)
{
	return (unsigned char)(seed * 131u + i * 7u + (i >> 12) * 13u);
}

struct st_app {
	pid_t pid;
	int in;  /* its stdin */
	int out; /* its stdout */
	char buf[8192];
	size_t len;
};

/* Start shim-app under LD_PRELOAD=libgpuwarm-shim.so, GPUWARM_SOCKET=e->sock, the shim's debug
 * log on; extra_env: NULL or a NULL-terminated list of "NAME=value" set on top. */
void st_app_start(struct st_app *a, const struct st_env *e, const char *const *extra_env);
/* Start any program (argv[0] is its path) with the same environment; stdout piped to a->out. */
void st_exec_start(struct st_app *a, const struct st_env *e, const char *const *extra_env,
		   char *const argv[]);
__attribute__((format(printf, 2, 3))) void st_app_send(struct st_app *a, const char *fmt, ...);
/* One line of its output (newline stripped), waiting at most ST_TIMEOUT_MS. */
void st_app_recv(struct st_app *a, char *buf, size_t len);
/* Send a command and require an "ok" answer; returns what follows "ok " (in buf). */
__attribute__((format(printf, 4, 5)))
char *st_app_ok(struct st_app *a, char *buf, size_t len, const char *fmt, ...);
/* Send a command and return its "err CODE" code (failing on "ok"). */
__attribute__((format(printf, 2, 3))) int st_app_err(struct st_app *a, const char *fmt, ...);
/* Close its stdin and wait for it; returns the exit status word. */
int st_app_stop(struct st_app *a);

/* shim-app's "alloc" answer parsed */
struct st_alloc {
	int slot;
	uint64_t va;
	size_t used;
};
struct st_alloc st_alloc(struct st_app *a, const char *route, size_t bytes);

struct st_daemon {
	int lfd;   /* listening */
	int owns_lfd;
	int fd;    /* the agent's connection */
	struct gw_frame_decoder dec;
	char rbuf[16384];
	size_t roff, rlen;
	int pending[2 * GW_FRAME_MAX_FDS];
	unsigned npending;
	uint64_t next_id;
	/* what the agent said */
	cJSON *attach;     /* AgentAttach params */
	cJSON *update;     /* the latest AgentUpdate params */
	unsigned updates;
	char hello_client[128];
};

void st_daemon_listen(struct st_daemon *d, const struct st_env *e);
/* A second connection on d's listening socket (d keeps owning it). */
void st_daemon_second(struct st_daemon *d2, const struct st_daemon *d);
/* Accept the agent and answer Hello and AgentAttach; fails the test after timeout_ms. */
void st_daemon_accept(struct st_daemon *d, int timeout_ms);
/* Like it, but returns -ETIMEDOUT instead of failing when nobody connects. */
int st_daemon_try_accept(struct st_daemon *d, int timeout_ms);
/* Next message from the agent; its fds (caller closes) in fds[*nfds]. -ETIMEDOUT, -ECONNRESET. */
int st_daemon_read(struct st_daemon *d, struct gw_message *msg, int *fds, unsigned *nfds,
		   int timeout_ms);
/*
 * Call method on the agent (params consumed, may be NULL) and wait for its answer, answering
 * AgentUpdate meanwhile. *ret is a reply or an error (caller gw_message_finish()es it); the
 * reply's fds land in rfds (capacity GW_FRAME_MAX_FDS), count in *rnfds.
 */
void st_daemon_call(struct st_daemon *d, const char *method, cJSON *params, const int *fds,
		    unsigned nfds, struct gw_message *ret, int *rfds, unsigned *rnfds);
/* Wait until an AgentUpdate with "ranges" == ranges arrived (answering it). */
void st_daemon_wait_update(struct st_daemon *d, uint64_t ranges, int timeout_ms);
/* A u64 member of a JSON object, failing the test when absent. */
uint64_t st_json_u64(const cJSON *o, const char *key);
void st_daemon_drop(struct st_daemon *d);   /* close the agent's connection */
void st_daemon_close(struct st_daemon *d);  /* and stop listening (a second: just drop) */

/* The fake driver in this process, a context current on device 0. */
struct gw_cuda *st_cuda(void);
/* Import fd, map it and read size bytes from its start. */
void st_cuda_read_fd(struct gw_cuda *cu, int fd, size_t size, unsigned char *buf);
/* Exportable memory of size bytes holding st_pattern(seed), or a copy of bytes[size]; returns an
 * fd for it. */
int st_cuda_make_fd(struct gw_cuda *cu, size_t size, unsigned seed);
int st_cuda_make_fd_bytes(struct gw_cuda *cu, const unsigned char *bytes, size_t size);

#endif
