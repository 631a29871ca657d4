/* SPDX-License-Identifier: MIT */
/*
 * Access control (issue 6, acceptance 2): a user who does not own a process can do nothing to it
 * through gpu-warmd. Root runs the target (and holds a lease); a child that dropped to nobody
 * makes every mutating call, through warmctl and through the protocol directly, and each is
 * refused with the permission error: the daemon checks the caller's SO_PEERCRED credentials, not
 * anything the caller says. Needs root to have two users: skipped otherwise.
 */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-proto.h"
#include "gw-test.h"
#include "harness.h"

#define NOBODY 65534

static void need_root(void)
{
	if (geteuid() != 0)
		GW_SKIP("needs root: the target and the refused caller must be different users");
}

static int wait_code(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Fork, drop to uid (groups, gid, uid: no way back), run fn, exit with what it returned. */
static int run_as_child(uid_t uid, int (*fn)(void *), void *data)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		GW_FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 || setuid(uid) < 0) {
			fprintf(stderr, "cannot drop to uid %u: %s\n", (unsigned)uid, strerror(errno));
			_exit(126);
		}
		if (getuid() != uid || geteuid() != uid || setuid(0) == 0) {
			fprintf(stderr, "still privileged after dropping to %u\n", (unsigned)uid);
			_exit(126);
		}
		/* The uid change made us non-dumpable (fs.suid_dumpable 0); a process that exec'd
		 * would be dumpable, and the owner check follows ptrace's rule, which wants that. */
		prctl(PR_SET_DUMPABLE, 1);
		_exit(fn(data));
	}
	return wait_code(pid);
}

struct raw_calls {
	const char *socket;
	pid_t target;
	double lease;
};

/* One call as the unprivileged child; 0 when refused with want (a GW_ERROR_*). */
static int call_refused(struct gw_client *c, const char *method, cJSON *params, const char *want)
{
	struct gw_client_error err;
	cJSON *result = NULL;
	int r = gw_client_call(c, method, params, NULL, 0, 10000, &result, NULL, NULL, &err);

	cJSON_Delete(params);
	cJSON_Delete(result);
	if (r == 0) {
		fprintf(stderr, "%s was allowed\n", method);
		return 1;
	}
	if (strcmp(err.name, want) != 0) {
		fprintf(stderr, "%s: refused with \"%s\" (%s), expected %s\n", method, err.name,
			err.message, want);
		return 1;
	}
	return 0;
}

static cJSON *pid_params(pid_t pid)
{
	cJSON *p = cJSON_CreateObject();

	cJSON_AddNumberToObject(p, "pid", pid);
	return p;
}

static int raw_calls_as_nobody(void *data)
{
	const struct raw_calls *rc = data;
	static const char *const pid_methods[] = {
		GW_METHOD_SUSPEND,	   GW_METHOD_RESUME,	       GW_METHOD_PROCESS_LOCK,
		GW_METHOD_PROCESS_CHECKPOINT, GW_METHOD_PROCESS_RESTORE, GW_METHOD_PROCESS_UNLOCK,
		GW_METHOD_PROCESS_STATE,
	};
	struct gw_client_error err;
	struct gw_client *c;
	cJSON *p;
	int bad = 0;

	if (gw_client_connect(rc->socket, "gwt-nobody", 5000, &c, &err) < 0) {
		fprintf(stderr, "nobody cannot connect to %s: %s\n", rc->socket, err.message);
		return 2;
	}
	for (size_t i = 0; i < sizeof(pid_methods) / sizeof(pid_methods[0]); i++)
		bad |= call_refused(c, pid_methods[i], pid_params(rc->target),
				    GW_ERROR_PERMISSION_DENIED);
	/* a resume that claims CRIU froze the threads, a restore onto other GPUs */
	p = pid_params(rc->target);
	cJSON_AddBoolToObject(p, "threads_frozen", 1);
	bad |= call_refused(c, GW_METHOD_RESUME, p, GW_ERROR_PERMISSION_DENIED);
	p = pid_params(rc->target);
	cJSON_AddStringToObject(p, "gpu", "0");
	bad |= call_refused(c, GW_METHOD_PROCESS_RESTORE, p, GW_ERROR_PERMISSION_DENIED);
	bad |= call_refused(c, GW_METHOD_DRAIN, NULL, GW_ERROR_PERMISSION_DENIED);
	bad |= call_refused(c, GW_METHOD_UNDRAIN, NULL, GW_ERROR_PERMISSION_DENIED);
	/* posing as the target's shim agent */
	p = pid_params(rc->target);
	cJSON_AddNumberToObject(p, "tid", rc->target);
	cJSON_AddNumberToObject(p, "ranges", 0);
	cJSON_AddNumberToObject(p, "bytes", 0);
	cJSON_AddBoolToObject(p, "on_behalf", 1);
	bad |= call_refused(c, GW_METHOD_AGENT_ATTACH, p, GW_ERROR_PERMISSION_DENIED);
	/* root's lease is not nobody's to end: to nobody it does not exist */
	p = cJSON_CreateObject();
	cJSON_AddNumberToObject(p, "lease", rc->lease);
	bad |= call_refused(c, GW_METHOD_LEASE_RELEASE, p, GW_ERROR_NO_SUCH_LEASE);
	gw_client_close(c);
	return bad;
}

static double root_lease(const struct gwt_daemon *d)
{
	for (int i = 0; i < 250; i++) {
		cJSON *j = gwt_ctl(d, 0, GWT_ARGS("status"));
		const cJSON *l = gwt_json(j, "result.leases.0");
		double id = l ? gwt_json_num(l, "id") : 0;

		if (l)
			GW_ASSERT_INT_EQ(gwt_json_num(l, "client_uid"), 0);
		cJSON_Delete(j);
		if (id > 0)
			return id;
		gwt_sleep_ms(20);
	}
	GW_FAIL("root's lease never showed up");
}

static void assert_lease_held(const struct gwt_daemon *d, double id)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("status"));

	GW_ASSERT_INT_EQ(cJSON_GetArraySize(gwt_json(j, "result.leases")), 1);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.leases.0.id"), id);
	cJSON_Delete(j);
}

static void assert_root_app_untouched(const struct gwt_daemon *d, struct gwt_app *app)
{
	char line[256];
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("state", gwt_pid(app->pid)));

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
	cJSON_Delete(j);
	if (!gwt_app_verify(app, line, sizeof(line)))
		GW_FAIL("root's app does not verify: %s", line);
}

/* Every mutating call (and the state read) on root's process, as nobody: refused. */
GW_TEST(unprivileged_user_refused_every_call)
{
	static const char *const steps[] = { "suspend", "resume",     "lock",  "checkpoint",
					     "restore", "unlock",     "state" };
	struct gwt_daemon d;
	struct gwt_app app;
	struct raw_calls rc;
	char err[4096];
	pid_t holder;
	cJSON *j;
	int rc_code;

	need_root();
	gwt_daemon_start(&d, NULL); /* socket 0666 in a 0755 directory: nobody reaches it */
	gwt_app_start(&app, GWT_ARGS("--mib", "16"));
	holder = gwt_warmctl_spawn(&d, GWT_ARGS("lease", "--gpu", "0", "--hold"));
	rc.socket = d.socket;
	rc.target = app.pid;
	rc.lease = root_lease(&d);

	/* warmctl, run as nobody: exit 4 and the permission error for each */
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int code = gwt_warmctl(&d, NOBODY, &j, err, sizeof(err),
				       GWT_ARGS(steps[i], gwt_pid(app.pid)));

		if (code != 4)
			GW_FAIL("warmctl %s of root's pid as nobody: exit %d, expected 4 (%s)",
				steps[i], code, err);
		GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_PERMISSION_DENIED);
		cJSON_Delete(j);
	}
	for (const char *const *cmd = (const char *const[]){ "drain", "undrain", NULL }; *cmd;
	     cmd++) {
		int code = gwt_warmctl(&d, NOBODY, &j, err, sizeof(err), GWT_ARGS(*cmd));

		if (code != 4)
			GW_FAIL("warmctl %s as nobody: exit %d, expected 4 (%s)", *cmd, code, err);
		GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_PERMISSION_DENIED);
		cJSON_Delete(j);
	}
	/* the protocol itself, from a child that dropped to nobody */
	rc_code = run_as_child(NOBODY, raw_calls_as_nobody, &rc);
	if (rc_code != 0)
		GW_FAIL("the unprivileged child's calls were not all refused (exit %d):\n%s",
			rc_code, gwt_daemon_log(&d));

	assert_root_app_untouched(&d, &app);
	assert_lease_held(&d, rc.lease);
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.gpus.0.state"), "ready");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.operations.suspend.ok"), 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.operations.lock.ok"), 0);
	cJSON_Delete(j);
	GW_ASSERT_STR_CONTAINS(gwt_daemon_log(&d), "may not act on pid");
	/* and root (the owner) may: the refusals were about the caller */
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid))));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	assert_root_app_untouched(&d, &app);
	kill(holder, SIGTERM);
	wait_code(holder);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A process of nobody's own: nobody may act on it (the check is ownership, not root-only). */
static int own_process_as_nobody(void *data)
{
	const char *socket = data;
	struct gw_client_error err;
	struct gw_client *c;
	cJSON *result = NULL, *p;
	pid_t own;
	int r;

	own = fork();
	if (own == 0) {
		pause();
		_exit(0);
	}
	if (gw_client_connect(socket, "gwt-nobody", 5000, &c, &err) < 0)
		return 2;
	p = pid_params(own);
	r = gw_client_call(c, GW_METHOD_SUSPEND, p, NULL, 0, 10000, &result, NULL, NULL, &err);
	cJSON_Delete(p);
	cJSON_Delete(result);
	gw_client_close(c);
	kill(own, SIGKILL);
	waitpid(own, NULL, 0);
	/* not a CUDA process: the daemon got past the permission check */
	if (r == 0 || strcmp(err.name, GW_ERROR_NOT_CUDA) != 0) {
		fprintf(stderr, "suspend of nobody's own pid: \"%s\" %s\n", err.name, err.message);
		return 1;
	}
	return 0;
}

GW_TEST(unprivileged_user_may_act_on_own_pid)
{
	struct gwt_daemon d;

	need_root();
	gwt_daemon_start(&d, NULL);
	GW_ASSERT_INT_EQ(run_as_child(NOBODY, own_process_as_nobody, d.socket), 0);
	gwt_daemon_stop(&d);
}

GW_TEST_MAIN()
