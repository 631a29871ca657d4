/* SPDX-License-Identifier: MIT */
/* What test-warmctl.c's cases share: a scripted fake daemon, warmctl run as a subprocess, a
 * socket nobody answers on. */
#ifndef WARMCTL_HARNESS_H
#define WARMCTL_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "fake-server.h"

#define UUID0 "GPU-8b7a2f0e-1c2d-4e5f-9a0b-123456789abc"
#define UUID1 "GPU-00112233-4455-6677-8899-aabbccddeeff"

/* What the fake daemon does: by default it answers every method with a canned reply. */
struct wt_script {
	unsigned hello_version;   /* 0: GW_PROTO_VERSION */
	bool hello_mismatch;
	bool hello_refused;       /* refuse the connection: an error with id 0, then close */
	bool silent;              /* answer nothing but Hello */
	const char *error_name;   /* answer every other request with this error */
	const char *error_message;
	int cuda_error;
};

/* fake_server_start(wt_handler, &script) */
enum fake_action wt_handler(struct fake_conn *c, const struct gw_message *req, int *fds,
			    unsigned nfds, void *userdata);

/* ---- running warmctl ---- */

struct wt_child {
	pid_t pid;
	int in, out, err; /* our ends; in is -1 unless asked for */
};

/* warmctl with args (NULL-terminated), stdin a pipe (ret->in) when want_stdin, else /dev/null;
 * as_nobody: as uid and gid 65534. */
void wt_spawn(const char *const *args, bool want_stdin, bool as_nobody, struct wt_child *ret);
/* Read stdout and stderr to EOF, reap; returns the exit status (128 + signal if killed). */
int wt_finish(struct wt_child *ch, char **ret_out, char **ret_err);
int wt_run(const char *const *args, char **out, char **err);
#define RUN(out, err, ...) wt_run((const char *const[]){ __VA_ARGS__, NULL }, out, err)

/* stdout as exactly one JSON envelope of version 1, on one line. */
cJSON *wt_parse_single_json(const char *out);

/* A listening socket nobody accepts on, to tell whether warmctl connected at all. */
struct wt_bare {
	char dir[64], path[96];
	int fd;
};

void wt_bare_listen(struct wt_bare *b);
void wt_bare_assert_untouched_and_close(struct wt_bare *b);

#endif
