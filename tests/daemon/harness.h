/* SPDX-License-Identifier: MIT */
/*
 * Integration harness: start the real gpu-warmd on a private socket over the fake driver, the
 * VRAM test app, and warmctl, and read what they print. Paths come from the environment meson
 * sets: GW_DAEMON, GW_WARMCTL, GW_VRAM_APP, GPUWARM_CUDA_LIBRARY.
 */
#ifndef GWT_HARNESS_H
#define GWT_HARNESS_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <sys/types.h>

struct gwt_daemon {
	pid_t pid;
	char dir[256];    /* private directory: socket, fake driver state */
	char socket[300];
	char log[300];    /* the daemon's stderr */
};

/* The private directory every process of a test shares (FAKECUDA_STATE_DIR points there). */
const char *gwt_dir(void);

/* Start gpu-warmd with extra arguments (NULL-terminated) and wait until it answers status with
 * no GPU still priming. */
void gwt_daemon_start(struct gwt_daemon *d, const char *const *extra_args);
/* SIGTERM and wait; returns its exit status (the code, or 128 + signal). */
int gwt_daemon_stop(struct gwt_daemon *d);
/* The daemon's log so far (static buffer). */
const char *gwt_daemon_log(const struct gwt_daemon *d);

struct gwt_app {
	pid_t pid;
	FILE *out; /* the app's stdout */
	char gpu[64];
};

/* Start gw-vram-app with extra arguments; waits for its "ready" line. */
void gwt_app_start(struct gwt_app *app, const char *const *extra_args);
/* The same under the in-process shim ($GW_SHIM), pointed at d; waits until its agent reports
 * at least vram_mib MiB to the daemon. */
void gwt_app_start_shimmed(const struct gwt_daemon *d, struct gwt_app *app, double vram_mib,
			   const char *const *extra_args);
/* SIGUSR1 and read its verify line into line; returns 1 for "verify ok". */
int gwt_app_verify(struct gwt_app *app, char *line, size_t len);
void gwt_app_stop(struct gwt_app *app);

/* Run argv as uid (-1: ourselves); capture stdout and stderr. Returns the exit code. */
int gwt_run_as(int uid, char *out, size_t outlen, char *err, size_t errlen,
	       const char *const *argv);
/* warmctl --socket d->socket --json ARGS...; parsed stdout in *ret_json (may be NULL). */
int gwt_warmctl(const struct gwt_daemon *d, int uid, cJSON **ret_json, char *err, size_t errlen,
		const char *const *args);

/* Start warmctl --socket d->socket --json ARGS... in the background, output discarded. */
pid_t gwt_warmctl_spawn(const struct gwt_daemon *d, const char *const *args);

/* Connect a raw stream socket to the daemon. */
int gwt_connect(const struct gwt_daemon *d);
/* A status call through the client library on a fresh connection: 0 when it answers. */
int gwt_status_ok(const struct gwt_daemon *d, cJSON **ret_result);

/* Look up "a.b.0.c" in a JSON document (array items by index); NULL if absent. */
const cJSON *gwt_json(const cJSON *o, const char *path);
/* The string / number there; the number's absence fails the test. */
const char *gwt_json_str(const cJSON *o, const char *path);
double gwt_json_num(const cJSON *o, const char *path);
/* A pid as text, in a static buffer (valid until the next call). */
const char *gwt_pid(pid_t pid);
/* warmctl --json ARGS as ourselves; fails the test unless it exits with `code` and prints JSON.
 * Returns the parsed output (caller deletes). */
cJSON *gwt_ctl(const struct gwt_daemon *d, int code, const char *const *args);

/* Helpers */
void gwt_sleep_ms(unsigned ms);
double gwt_now_ms(void);

#define GWT_ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

#endif
