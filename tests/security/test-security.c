/* SPDX-License-Identifier: MIT */
/*
 * Security suite: the real gpu-warmd over the fake driver, attacked by clients that run as other
 * users. Each case states the fixed behaviour (the contract in tests/security/README.md); the
 * README lists how each case failed on the daemon before the fixes. Runs as root (skipped
 * otherwise); attackers are forked children that dropped to uids 60001..60004.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-proto.h"
#include "gw-test.h"
#include "gw-vimg.h"
#include "harness.h"
#include "sec-lib.h"

#define STATUS_REQ "{\"id\":2,\"method\":\"gpuwarm.Status\",\"params\":{}}"

/* Failures collected so that a case reports every broken promise at once. */
static char soft_msgs[8192];
static int soft_count;

__attribute__((format(printf, 1, 2))) static void soft_fail(const char *fmt, ...)
{
	size_t n = strlen(soft_msgs);
	va_list ap;

	soft_count++;
	if (n + 2 >= sizeof(soft_msgs))
		return;
	va_start(ap, fmt);
	vsnprintf(soft_msgs + n, sizeof(soft_msgs) - n - 1, fmt, ap);
	va_end(ap);
	strncat(soft_msgs, "\n", sizeof(soft_msgs) - strlen(soft_msgs) - 1);
	fprintf(stderr, "FAIL: %s", soft_msgs + n);
}

static void soft_check_done(struct gwt_daemon *d)
{
	if (soft_count)
		GW_FAIL("%d failed check(s):\n%s\ndaemon log (start):\n%.4000s", soft_count, soft_msgs,
			d ? gwt_daemon_log(d) : "");
}

static cJSON *root_status(const struct gwt_daemon *d)
{
	cJSON *st = NULL;

	if (gwt_status_ok(d, &st) < 0)
		GW_FAIL("status failed:\n%s", gwt_daemon_log(d));
	return st;
}

static const cJSON *proc_record(const cJSON *status, pid_t pid)
{
	const cJSON *p;

	cJSON_ArrayForEach(p, cJSON_GetObjectItem(status, "processes")) {
		const cJSON *v = cJSON_GetObjectItem(p, "pid");

		if (cJSON_IsNumber(v) && v->valuedouble == pid)
			return p;
	}
	return NULL;
}

static const char *state_of(const struct gwt_daemon *d, pid_t pid)
{
	static char state[64];
	struct sec_raw r;
	char params[64];
	cJSON *m;

	snprintf(params, sizeof(params), "{\"pid\":%d}", (int)pid);
	if (sec_raw_hello(d->socket, &r, NULL) < 0)
		GW_FAIL("cannot connect for ProcessState");
	m = sec_raw_call(&r, 5, GW_METHOD_PROCESS_STATE, params, 5000);
	snprintf(state, sizeof(state), "%s",
		 gwt_json_str(m, "result.state") ? gwt_json_str(m, "result.state") :
		 sec_err(m)			 ? sec_err(m) :
						   "(no answer)");
	cJSON_Delete(m);
	sec_raw_close(&r);
	return state;
}

/* Closed by the peer within ms (EOF or reset), reading and dropping what comes. */
static int closed_within(int fd, unsigned ms)
{
	double deadline = gwt_now_ms() + ms;
	char buf[4096];

	while (gwt_now_ms() < deadline) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return 1;
		gwt_sleep_ms(20);
	}
	return 0;
}

static void stop_clean(struct gwt_daemon *d)
{
	int code;

	if (!sec_daemon_alive(d))
		GW_FAIL("the daemon is gone");
	sec_assert_clean_log(d);
	code = gwt_daemon_stop(d);
	if (code != 0)
		GW_FAIL("gpu-warmd exited %d on SIGTERM:\n%s", code, gwt_daemon_log(d));
}

static int wait_pool_free(const struct gwt_daemon *d, pid_t gone, unsigned ms, double *free_b,
			  double *total_b, int *has_record);

/* ======================= 1. use after free of a connection ======================= */

/* Hello (mostly waiting for its answer), then requests answered at once (Status), pipelined, and
 * the socket closed right away (every other time with SO_LINGER 0: a reset), `rounds` times. */
static void close_storm(const struct gwt_daemon *d, unsigned rounds)
{
	uint8_t frames[4096];
	size_t n = 0, ends[5];

	for (int k = 0; k < 5; k++) {
		const char *p = k == 0 ? SEC_HELLO : STATUS_REQ;

		gw_frame_header_encode(strlen(p), frames + n);
		memcpy(frames + n + GW_FRAME_HEADER_SIZE, p, strlen(p));
		n += GW_FRAME_HEADER_SIZE + strlen(p);
		ends[k] = n;
	}
	for (unsigned i = 0; i < rounds; i++) {
		int fd = gwt_connect(d);

		if (fd < 0)
			continue;
		if (i % 2) {
			struct linger lg = { 1, 0 };

			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		if (i % 4 == 3) {
			/* Hello plus 1..4 Status frames, in one write */
			(void)send(fd, frames, ends[1 + i % 4], MSG_NOSIGNAL);
		} else {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			char buf[512];

			/* Hello answered first; then the requests, and gone before their answers */
			(void)send(fd, frames, ends[0], MSG_NOSIGNAL);
			if (poll(&p, 1, 2000) > 0)
				(void)!recv(fd, buf, sizeof(buf), 0);
			(void)send(fd, frames + ends[0], ends[1 + i % 4] - ends[0], MSG_NOSIGNAL);
		}
		close(fd);
	}
}

/* Many requests answered at once, never read: the daemon's output for the client passes its
 * limit while a request is being answered, and it closes the connection there. */
static void output_flood(const struct gwt_daemon *d)
{
	size_t one = GW_FRAME_HEADER_SIZE + strlen(STATUS_REQ), count = 6000, len, off = 0;
	uint8_t *buf = malloc(GW_FRAME_HEADER_SIZE + strlen(SEC_HELLO) + count * one);
	double deadline = gwt_now_ms() + 10000;
	int fd = gwt_connect(d);

	GW_ASSERT(buf);
	if (fd < 0) { /* the daemon is gone: the caller says so */
		free(buf);
		return;
	}
	gw_frame_header_encode(strlen(SEC_HELLO), buf);
	memcpy(buf + GW_FRAME_HEADER_SIZE, SEC_HELLO, strlen(SEC_HELLO));
	len = GW_FRAME_HEADER_SIZE + strlen(SEC_HELLO);
	for (size_t i = 0; i < count; i++, len += one) {
		gw_frame_header_encode(strlen(STATUS_REQ), buf + len);
		memcpy(buf + len + GW_FRAME_HEADER_SIZE, STATUS_REQ, strlen(STATUS_REQ));
	}
	while (off < len && gwt_now_ms() < deadline) {
		ssize_t k = send(fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (k > 0)
			off += (size_t)k;
		else if (k < 0 && errno != EAGAIN && errno != EINTR)
			break; /* closed by the daemon: expected */
		else
			gwt_sleep_ms(5);
	}
	close(fd);
	free(buf);
}

GW_TEST(uaf_pipelined_requests_then_close_storm)
{
	struct gwt_daemon d;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	for (int round = 0; round < 8; round++) {
		close_storm(&d, 50);
		if (!sec_daemon_alive(&d))
			GW_FAIL("gpu-warmd died during the close storm (round %d)", round);
	}
	output_flood(&d);
	gwt_sleep_ms(300);
	if (!sec_daemon_alive(&d))
		GW_FAIL("gpu-warmd died when a client's unread output passed its limit");
	gwt_sleep_ms(300);
	if (!sec_daemon_alive(&d))
		GW_FAIL("gpu-warmd died after the close storm");
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, NULL), 0);
	stop_clean(&d);
}

/* A shimmed app whose suspend fails in its agent (the export), killed right after, and one
 * killed while its suspend runs: the daemon survives both and keeps answering. */
GW_TEST(uaf_agent_killed_around_failed_suspend)
{
	struct gwt_daemon d;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	for (int i = 0; i < 6; i++) {
		struct sec_app app;
		const char *env[] = { "FAKECUDA_FAIL=cuMemExportToShareableHandle=999", NULL };
		pid_t ctl;

		sec_app_start(&d, &app, 0, 1, 0, i % 2 ? NULL : env, GWT_ARGS("--mib", "8"));
		if (sec_wait_agent(&d, app.pid, 8.0 * 1048576, 10000) < 0)
			GW_FAIL("the app's agent never attached:\n%s", gwt_daemon_log(&d));
		ctl = gwt_warmctl_spawn(&d, GWT_ARGS("suspend", gwt_pid(app.pid)));
		if (i % 2 == 0)
			sec_wait_code(ctl); /* failed: the export fails */
		else
			gwt_sleep_ms(5 + 20 * (unsigned)i); /* mid-suspend */
		sec_app_stop(&app);
		if (i % 2)
			sec_wait_code(ctl);
		gwt_sleep_ms(100);
		if (!sec_daemon_alive(&d))
			GW_FAIL("gpu-warmd died after the app of round %d was killed", i);
	}
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, NULL), 0);
	stop_clean(&d);

	/* The daemon's own checkpoint fails after the app released its VRAM (it is mapped back);
	 * the app is killed right after the failure, or while the map-back runs. */
	setenv("FAKECUDA_FAIL", "cuCheckpointProcessCheckpoint=999", 1);
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	unsetenv("FAKECUDA_FAIL");
	for (int i = 0; i < 6; i++) {
		struct sec_app app;
		pid_t ctl;

		sec_app_start(&d, &app, 0, 1, 0, NULL, GWT_ARGS("--mib", "8"));
		if (sec_wait_agent(&d, app.pid, 8.0 * 1048576, 10000) < 0)
			GW_FAIL("the app's agent never attached:\n%s", gwt_daemon_log(&d));
		ctl = gwt_warmctl_spawn(&d, GWT_ARGS("suspend", gwt_pid(app.pid)));
		if (i % 2 == 0)
			sec_wait_code(ctl);
		else
			gwt_sleep_ms(2 + 5 * (unsigned)i);
		sec_app_stop(&app);
		if (i % 2)
			sec_wait_code(ctl);
		gwt_sleep_ms(100);
		if (!sec_daemon_alive(&d))
			GW_FAIL("gpu-warmd died after the app of round %d was killed (checkpoint "
				"failing)", i);
	}
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, NULL), 0);
	stop_clean(&d);
}

/* Not in the contract, found while writing the case above: an app killed while a fast suspend
 * has its threads frozen (ptrace) must not stay the daemon's tracee: its parent reaps it, the
 * suspend fails, and its record and pool memory go. */
GW_TEST(app_killed_mid_fast_suspend_is_released)
{
	static const char *const env[] = { "FAKECUDA_SYNC_DELAY_MS=3000", "FAKECUDA_SYNC_DELAY_SKIP=2",
					    NULL };
	struct gwt_daemon d;
	struct sec_app app;
	double free_b, total_b;
	int has_record, reaped;
	pid_t ctl, pid;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	/* the agent's export synchronizes first: 3 s in the driver, the app's threads frozen */
	sec_app_start(&d, &app, 0, 1, 0, env, GWT_ARGS("--mib", "8"));
	pid = app.pid;
	if (sec_wait_agent(&d, pid, 8.0 * 1048576, 10000) < 0)
		GW_FAIL("the app's agent never attached:\n%s", gwt_daemon_log(&d));
	ctl = gwt_warmctl_spawn(&d, GWT_ARGS("suspend", gwt_pid(pid)));
	gwt_sleep_ms(1000);
	reaped = sec_app_stop(&app);
	sec_wait_code(ctl);
	if (!reaped)
		soft_fail("the app killed mid-suspend (pid %d) could not be reaped by its parent "
			  "for 5 s: the daemon still traces it", (int)pid);
	if (!wait_pool_free(&d, pid, 4000, &free_b, &total_b, &has_record))
		soft_fail("4 s after the app died: pool free %.0f of %.0f, record %s", free_b,
			  total_b, has_record ? "still listed" : "gone");
	if (!sec_daemon_alive(&d))
		GW_FAIL("gpu-warmd died");
	soft_check_done(&d);
	stop_clean(&d);
}

/* ======================= 2. pid reuse and agent records ======================= */

struct attacker {
	const char *socket;
	int ready_w, go_r;
};

/* Runs as UID_B at the victim's old pid: a CUDA process of the fake driver, attaches as its own
 * agent with no VRAM, and asks for a Resume of its pid. Exit: 0 no Map and Resume failed (or
 * only restored its own driver state), 10 got Agent.Map fds (the victim's VRAM), 11 a fast
 * Resume succeeded, 3.. setup failures. */
static int attacker_main(void *data)
{
	const struct attacker *a = data;
	int (*cu_init)(unsigned);
	struct sec_raw r;
	char json[512];
	void *h;
	int got_map = 0, resume_ok = 0, done = 0;
	double deadline;
	cJSON *m;

	h = dlopen(getenv("GPUWARM_CUDA_LIBRARY"), RTLD_NOW);
	cu_init = h ? (int (*)(unsigned))dlsym(h, "cuInit") : NULL;
	if (!cu_init || cu_init(0) != 0) {
		fprintf(stderr, "attacker: cannot start the fake driver\n");
		return 3;
	}
	if (sec_raw_hello(a->socket, &r, NULL) < 0) {
		fprintf(stderr, "attacker: cannot connect\n");
		return 4;
	}
	snprintf(json, sizeof(json), "{\"pid\":%d,\"tid\":%d,\"ranges\":0,\"bytes\":0}", getpid(),
		 gettid());
	m = sec_raw_call(&r, 2, GW_METHOD_AGENT_ATTACH, json, 5000);
	if (!m || sec_err(m)) {
		fprintf(stderr, "attacker: attach refused: %s\n", m ? sec_err(m) : "(no answer)");
		/* refused to attach at all is fine: then there is nothing to resume into */
		cJSON_Delete(m);
		sec_raw_close(&r);
		(void)!write(a->ready_w, "x", 1);
		return 0;
	}
	cJSON_Delete(m);
	(void)!write(a->ready_w, "a", 1);
	(void)!read(a->go_r, json, 1);
	snprintf(json, sizeof(json),
		 "{\"id\":3,\"method\":\"gpuwarm.Resume\",\"params\":{\"pid\":%d}}", getpid());
	sec_raw_send(&r, json, NULL, 0);
	deadline = gwt_now_ms() + 10000;
	while (!done && gwt_now_ms() < deadline) {
		const cJSON *method, *id;

		if (sec_raw_recv(&r, 1000, &m) == 0)
			break;
		if (!m)
			continue;
		method = cJSON_GetObjectItem(m, "method");
		id = cJSON_GetObjectItem(m, "id");
		if (cJSON_IsString(method)) {
			const cJSON *nf = cJSON_GetObjectItem(m, "fds");
			unsigned n = cJSON_IsNumber(nf) ? (unsigned)nf->valuedouble : 0;

			if (strcmp(method->valuestring, GW_METHOD_AGENT_MAP) == 0 && n > 0) {
				got_map += (int)n;
				done = 1; /* seen enough */
				fprintf(stderr, "attacker: received gpuwarm.Agent.Map with %u fds\n", n);
				snprintf(json, sizeof(json), "{\"id\":%.0f,\"result\":{\"mapped\":%u}}",
					 id->valuedouble, n);
			} else if (strcmp(method->valuestring, GW_METHOD_AGENT_PING) == 0) {
				snprintf(json, sizeof(json),
					 "{\"id\":%.0f,\"result\":{\"pid\":%d,\"ranges\":0,\"bytes\":0}}",
					 id->valuedouble, getpid());
			} else {
				snprintf(json, sizeof(json), "{\"id\":%.0f,\"result\":{}}",
					 id->valuedouble);
			}
			sec_raw_send(&r, json, NULL, 0);
		} else if (cJSON_IsNumber(id) && id->valuedouble == 3) {
			const char *path = gwt_json_str(m, "result.path");

			/* The test made the attacker's own process checkpointed (so that the old
			 * daemon got as far as mapping): the driver restoring that process's own
			 * state is legitimate; a fast resume (an image) is not. */
			resume_ok = !sec_err(m) && !(path && strcmp(path, "driver") == 0);
			fprintf(stderr, "attacker: Resume of its pid: %s%s\n",
				sec_err(m) ? sec_err(m) : "succeeded, path ",
				sec_err(m) ? "" : path ? path : "?");
			done = 1;
		}
		cJSON_Delete(m);
	}
	sec_raw_close(&r);
	return got_map ? 10 : resume_ok ? 11 : 0;
}

/* One text command to the fake driver's per-process socket; the CUresult it answers. */
static int fake_cmd(const char *dir, pid_t pid, const char *cmd)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char buf[128] = "";
	ssize_t n;

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%d.sock", dir, (int)pid);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		GW_FAIL("cannot reach the fake driver of pid %d: %s", (int)pid, strerror(errno));
	dprintf(fd, "%s\n", cmd);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return atoi(buf);
}

/* Fork `fn` as uid at pid `want` (ns_last_pid), retrying: the child's pid, or -1. */
static pid_t fork_as_at(pid_t want, uid_t uid, int (*fn)(void *), void *data)
{
	for (int i = 0; i < 50; i++) {
		pid_t pid;

		if (sec_set_next_pid(want) < 0)
			GW_SKIP("the kernel refuses writes to /proc/sys/kernel/ns_last_pid");
		pid = sec_fork_as(uid, (gid_t)-1, fn, data);
		if (pid == want)
			return pid;
		kill(pid, SIGKILL);
		sec_wait_code(pid);
	}
	return -1;
}

static int wait_pool_free(const struct gwt_daemon *d, pid_t gone, unsigned ms, double *free_b,
			  double *total_b, int *has_record)
{
	double deadline = gwt_now_ms() + ms;

	for (;;) {
		cJSON *st = root_status(d);

		*free_b = gwt_json_num(st, "daemon.image_pool_free_bytes");
		*total_b = gwt_json_num(st, "daemon.image_pool_bytes");
		*has_record = proc_record(st, gone) != NULL;
		cJSON_Delete(st);
		if ((*free_b == *total_b && !*has_record) || gwt_now_ms() > deadline)
			return *free_b == *total_b && !*has_record;
		gwt_sleep_ms(100);
	}
}

GW_TEST(pid_reuse_never_hands_over_vram_image)
{
	struct gwt_daemon d;
	struct sec_app victim;
	struct attacker at;
	double free_b, total_b;
	int has_record, p1[2], p2[2], code;
	pid_t vpid, apid;
	char c = 0;
	cJSON *j;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	if (sec_set_next_pid(1000) < 0)
		GW_SKIP("the kernel refuses writes to /proc/sys/kernel/ns_last_pid");
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	sec_app_start(&d, &victim, UID_A, 1, 0, NULL, GWT_ARGS("--mib", "16"));
	vpid = victim.pid;
	if (sec_wait_agent(&d, vpid, 16.0 * 1048576, 10000) < 0)
		GW_FAIL("the victim's agent never attached:\n%s", gwt_daemon_log(&d));
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(vpid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
	cJSON_Delete(j);
	j = root_status(&d);
	GW_ASSERT(gwt_json_num(j, "daemon.image_pool_free_bytes") <
		  gwt_json_num(j, "daemon.image_pool_bytes"));
	cJSON_Delete(j);

	/* the victim dies: its image and its record go with it */
	sec_app_stop(&victim);
	if (!wait_pool_free(&d, vpid, 4000, &free_b, &total_b, &has_record))
		soft_fail("4 s after the victim (pid %d) died: image pool free %.0f of %.0f bytes, "
			  "record of the pid %s",
			  (int)vpid, free_b, total_b, has_record ? "still listed" : "gone");

	/* an attacker of another uid gets the pid, attaches as its agent and resumes */
	GW_ASSERT(pipe2(p1, O_CLOEXEC) == 0 && pipe2(p2, O_CLOEXEC) == 0);
	at.socket = d.socket;
	at.ready_w = p1[1];
	at.go_r = p2[0];
	{
		char *lib = strdup(getenv("GPUWARM_CUDA_LIBRARY"));

		/* A forked child's /proc/PID/environ is the test's: the daemon finds the
		 * attacker's fake-driver socket in its own state dir only, so open that up. */
		GW_ASSERT(chmod(gwt_dir(), 01777) == 0);
		setenv("GPUWARM_CUDA_LIBRARY", sec_cuda_copy(), 1);
		apid = fork_as_at(vpid, UID_B, attacker_main, &at);
		setenv("GPUWARM_CUDA_LIBRARY", lib, 1);
		free(lib);
	}
	if (apid < 0)
		GW_SKIP("could not get pid %d again (other processes fork too fast)", (int)vpid);
	close(p1[1]);
	close(p2[0]);
	if (read(p1[0], &c, 1) != 1)
		GW_FAIL("the attacker did not get ready");
	if (c == 'a') {
		/* make the attacker look like a suspended process: its fake driver checkpointed */
		int r1 = fake_cmd(gwt_dir(), apid, "lock 5000");
		int r2 = fake_cmd(gwt_dir(), apid, "checkpoint");

		if (r1 || r2)
			fprintf(stderr, "note: checkpointing the attacker gave %d %d\n", r1, r2);
	}
	(void)!write(p2[1], "g", 1);
	code = sec_wait_code(apid);
	if (code == 10)
		soft_fail("the attacker (uid %d) at pid %d received the victim's VRAM "
			  "(gpuwarm.Agent.Map with fds)", UID_B, (int)vpid);
	else if (code == 11)
		soft_fail("the attacker's Resume of pid %d succeeded", (int)vpid);
	else if (code != 0)
		soft_fail("the attacker failed to run (exit %d)", code);

	/* a second victim: the pool does not stay full either */
	{
		struct sec_app v2;

		sec_app_start(&d, &v2, UID_A, 1, 0, NULL, GWT_ARGS("--mib", "16"));
		if (sec_wait_agent(&d, v2.pid, 16.0 * 1048576, 10000) == 0) {
			cJSON *r = NULL;
			char err[4096];
			int rc = gwt_warmctl(&d, -1, &r, err, sizeof(err),
					     GWT_ARGS("suspend", gwt_pid(v2.pid)));

			if (rc != 0)
				soft_fail("a second victim's suspend into the pool failed (exit %d): %s "
					  "(the pool is still full of the first one's image?)",
					  rc, err);
			cJSON_Delete(r);
			sec_app_stop(&v2);
			if (!wait_pool_free(&d, v2.pid, 4000, &free_b, &total_b, &has_record))
				soft_fail("4 s after the second victim died: pool free %.0f of %.0f, "
					  "record %s",
					  free_b, total_b, has_record ? "still listed" : "gone");
		} else {
			soft_fail("the second victim's agent never attached");
			sec_app_stop(&v2);
		}
	}
	soft_check_done(&d);
	stop_clean(&d);
}

/* ======================= 3. queued operations and starvation ======================= */

static const char *const busy_env[] = { "FAKECUDA_SYNC_DELAY_MS=7000", "FAKECUDA_SYNC_DELAY_SKIP=2",
					 NULL };

/* Send a request on a fresh raw connection and leave it running; returns the connection. */
static struct sec_raw *start_call(const char *socket, const char *method, const char *params)
{
	struct sec_raw *r = calloc(1, sizeof(*r));
	char json[512];

	GW_ASSERT(r);
	if (sec_raw_hello(socket, r, NULL) < 0)
		GW_FAIL("cannot connect to start %s", method);
	snprintf(json, sizeof(json), "{\"id\":9,\"method\":\"%s\",\"params\":%s}", method, params);
	GW_ASSERT_INT_EQ(sec_raw_send(r, json, NULL, 0), 0);
	return r;
}

struct queued_lock {
	const char *socket;
	pid_t pid;
	int result_w; /* 1 byte: 'o' ok, 'n' NoSuchProcess, 'e' other error, 't' none */
};

static int queued_lock_as_a(void *data)
{
	const struct queued_lock *q = data;
	struct sec_raw r;
	char params[64];
	cJSON *m;
	char res;

	snprintf(params, sizeof(params), "{\"pid\":%d,\"timeout_ms\":5000}", (int)q->pid);
	if (sec_raw_hello(q->socket, &r, NULL) < 0)
		return 3;
	m = sec_raw_call(&r, 4, GW_METHOD_PROCESS_LOCK, params, 40000);
	res = !m ? 't' : !sec_err(m) ? 'o' : strcmp(sec_err(m), GW_ERROR_NO_SUCH_PROCESS) == 0 ? 'n' : 'e';
	if (m && sec_err(m))
		fprintf(stderr, "uid %d's queued lock: %s: %s\n", UID_A, sec_err(m),
			gwt_json_str(m, "error.message"));
	(void)!write(q->result_w, &res, 1);
	cJSON_Delete(m);
	sec_raw_close(&r);
	return 0;
}

GW_TEST(queued_op_never_acts_on_reused_pid)
{
	struct gwt_daemon d;
	struct sec_app blockers[6], victim, other;
	struct sec_raw *calls[6];
	struct queued_lock q;
	pid_t child, vpid;
	int p[2], got = 0, answered_early = 0;
	char res = 't';
	const char *state;

	sec_need_root();
	if (sec_set_next_pid(1000) < 0)
		GW_SKIP("the kernel refuses writes to /proc/sys/kernel/ns_last_pid");
	gwt_daemon_start(&d, NULL); /* 4 workers + 1 per GPU */
	for (int i = 0; i < 6; i++)
		sec_app_start(&d, &blockers[i], 0, 0, 0, busy_env,
			      GWT_ARGS("--mib", "1", "--busy"));
	/* busy too: should A's lock run at once, it waits in the driver until the kill */
	sec_app_start(&d, &victim, UID_A, 0, 0, busy_env, GWT_ARGS("--mib", "1", "--busy"));
	vpid = victim.pid;
	/* every worker waits in a lock behind a thread that sits in the driver for 7 s */
	for (int i = 0; i < 6; i++) {
		char params[64];

		snprintf(params, sizeof(params), "{\"pid\":%d,\"timeout_ms\":20000}",
			 (int)blockers[i].pid);
		calls[i] = start_call(d.socket, GW_METHOD_PROCESS_LOCK, params);
	}
	gwt_sleep_ms(500);
	/* uid A's lock of its own process queues behind them */
	GW_ASSERT(pipe2(p, O_CLOEXEC) == 0);
	q.socket = d.socket;
	q.pid = vpid;
	q.result_w = p[1];
	child = sec_fork_as(UID_A, (gid_t)-1, queued_lock_as_a, &q);
	close(p[1]);
	gwt_sleep_ms(500);
	{
		struct pollfd pf = { .fd = p[0], .events = POLLIN };

		if (poll(&pf, 1, 0) > 0) {
			(void)!read(p[0], &res, 1);
			fprintf(stderr, "note: uid %d's lock was answered (%c) before its process "
				"exited\n", UID_A, res);
			answered_early = 1;
		}
	}
	/* A's process exits; uid B's process gets its pid */
	sec_app_stop(&victim);
	for (int i = 0; i < 30 && !got; i++) {
		int r = sec_app_start(&d, &other, UID_B, 0, vpid, NULL, GWT_ARGS("--mib", "1"));

		got = r == 0;
	}
	if (!got)
		GW_SKIP("could not get pid %d again", (int)vpid);
	/* the workers come free; the queued lock runs (or fails) */
	if (!answered_early) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };

		if (poll(&pf, 1, 30000) > 0)
			(void)!read(p[0], &res, 1);
	}
	sec_wait_code(child);
	state = state_of(&d, other.pid);
	if (strcmp(state, "running") != 0)
		soft_fail("uid %d's process that reused pid %d is \"%s\", not running: uid %d's "
			  "queued lock acted on it", UID_B, (int)vpid, state, UID_A);
	if (res == 'o' && !answered_early)
		soft_fail("uid %d's queued lock of pid %d succeeded although its process exited",
			  UID_A, (int)vpid);
	else if (res == 't')
		soft_fail("uid %d's queued lock got no answer", UID_A);
	else if (res == 'e')
		fprintf(stderr, "note: the queued lock failed, but not with %s\n",
			GW_ERROR_NO_SUCH_PROCESS);
	for (int i = 0; i < 6; i++) {
		sec_raw_close(calls[i]);
		free(calls[i]);
		sec_app_stop(&blockers[i]);
	}
	sec_app_stop(&other);
	soft_check_done(&d);
	stop_clean(&d);
}

struct three_ops {
	const char *socket;
	pid_t pids[3];
	const char *load; /* the third: an image cache load of this new file, not a lock */
};

/* The third operation: a lock of pids[2], or a load of a file of our own (its fd in *ret_fd). */
static void third_op(const struct three_ops *t, char *json, size_t len, int *ret_fd)
{
	*ret_fd = -1;
	if (!t->load) {
		snprintf(json, len,
			 "{\"id\":7,\"method\":\"gpuwarm.ProcessLock\",\"params\":{\"pid\":%d,"
			 "\"timeout_ms\":10000}}", (int)t->pids[2]);
		return;
	}
	*ret_fd = open(t->load, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (*ret_fd < 0 || write(*ret_fd, "not yet read", 12) != 12)
		fprintf(stderr, "cannot make %s: %s\n", t->load, strerror(errno));
	snprintf(json, len, "{\"id\":7,\"method\":\"%s\",\"params\":{\"action\":\"load\","
		 "\"image_fd\":0},\"fds\":1}", GW_METHOD_IMAGES);
}

/* As UID_A: two locks run (their apps sit in the driver), the third is refused at once. */
static int three_ops_as_a(void *data)
{
	const struct three_ops *t = data;
	struct sec_raw r[3];
	char json[256];
	cJSON *m = NULL;
	int rc, ret = 0, fd;
	double start;

	for (int i = 0; i < 3; i++)
		if (sec_raw_hello(t->socket, &r[i], NULL) < 0)
			return 3;
	for (int i = 0; i < 2; i++) {
		snprintf(json, sizeof(json),
			 "{\"id\":7,\"method\":\"gpuwarm.ProcessLock\",\"params\":{\"pid\":%d,"
			 "\"timeout_ms\":10000}}", (int)t->pids[i]);
		sec_raw_send(&r[i], json, NULL, 0);
	}
	gwt_sleep_ms(400);
	third_op(t, json, sizeof(json), &fd);
	start = gwt_now_ms();
	sec_raw_send(&r[2], json, fd >= 0 ? &fd : NULL, fd >= 0);
	if (fd >= 0)
		close(fd);
	rc = sec_raw_recv(&r[2], 15000, &m);
	if (rc != 1) {
		fprintf(stderr, "the third operation got no answer\n");
		ret = 1;
	} else if (!sec_err(m)) {
		fprintf(stderr, "the third operation of uid %d ran (succeeded after %.0f ms)\n", UID_A,
			gwt_now_ms() - start);
		ret = 1;
	} else if (strcmp(sec_err(m), GW_ERROR_LIMIT) != 0 ||
		   !gwt_json_str(m, "error.limit") ||
		   strcmp(gwt_json_str(m, "error.limit"), "max_ops_per_uid") != 0) {
		char *t2 = cJSON_PrintUnformatted(m);

		fprintf(stderr, "the third operation: %s, expected %s with limit max_ops_per_uid\n",
			t2, GW_ERROR_LIMIT);
		free(t2);
		ret = 1;
	} else if (gwt_now_ms() - start > 2000) {
		fprintf(stderr, "the refusal took %.0f ms\n", gwt_now_ms() - start);
		ret = 1;
	}
	cJSON_Delete(m);
	for (int i = 0; i < 3; i++)
		sec_raw_close(&r[i]);
	return ret;
}

/* UID_A runs two locks and asks for a third operation (t->load: an image cache load). */
static void run_three_ops(const char *const *daemon_args, const char *load)
{
	static const char *const env[] = { "FAKECUDA_SYNC_DELAY_MS=5000", "FAKECUDA_SYNC_DELAY_SKIP=2",
					    NULL };
	struct gwt_daemon d;
	struct sec_app apps[3];
	struct three_ops t = { .load = load };
	int code;

	sec_need_root();
	gwt_daemon_start(&d, daemon_args);
	for (int i = 0; i < 3; i++) {
		sec_app_start(&d, &apps[i], UID_A, 0, 0, env, GWT_ARGS("--mib", "1", "--busy"));
		t.pids[i] = apps[i].pid;
	}
	t.socket = d.socket;
	code = sec_run_as(UID_A, (gid_t)-1, three_ops_as_a, &t);
	for (int i = 0; i < 3; i++)
		sec_app_stop(&apps[i]);
	if (code != 0)
		GW_FAIL("uid %d's third concurrent operation (%s) was not refused with "
			"max_ops_per_uid (exit %d)", UID_A, load ? "an image load" : "a lock", code);
	stop_clean(&d);
}

GW_TEST(ops_per_uid_are_limited)
{
	run_three_ops(NULL, NULL);
}

/* A load reads a whole image on a worker: it is one of the user's operations too, so a user
 * cannot occupy the workers with loads either. */
GW_TEST(image_cache_loads_count_against_ops_per_uid)
{
	char dir[512], path[600];

	snprintf(dir, sizeof(dir), "%s/uid-a", gwt_dir());
	GW_ASSERT(mkdir(dir, 0700) == 0 && chown(dir, UID_A, (gid_t)-1) == 0);
	snprintf(path, sizeof(path), "%s/golden.img", dir);
	run_three_ops(GWT_ARGS("--image-pool-mib", "64", "--image-cache-mib", "64"), path);
}

struct long_lock {
	const char *socket;
	pid_t pid;
};

/* As UID_A on its own process: locks past 60 s are refused, the bound itself is fine. */
static int long_locks_as_a(void *data)
{
	const struct long_lock *l = data;
	struct sec_raw r;
	char params[128];
	cJSON *m;
	int bad = 0;

	static const struct {
		const char *method;
		unsigned timeout_ms;
	} calls[] = { { GW_METHOD_PROCESS_LOCK, 60001 }, { GW_METHOD_SUSPEND, 3600000 } };

	if (sec_raw_hello(l->socket, &r, NULL) < 0)
		return 3;
	for (unsigned i = 0; i < 2; i++) {
		snprintf(params, sizeof(params), "{\"pid\":%d,\"timeout_ms\":%u}", (int)l->pid,
			 calls[i].timeout_ms);
		m = sec_raw_call(&r, 3 + 2 * i, calls[i].method, params, 10000);
		if (!sec_err(m) || strcmp(sec_err(m), GW_ERROR_INVALID_REQUEST) != 0) {
			fprintf(stderr, "%s with timeout_ms %u: %s, expected %s\n", calls[i].method,
				calls[i].timeout_ms,
				m ? (sec_err(m) ? sec_err(m) : "accepted") : "no answer",
				GW_ERROR_INVALID_REQUEST);
			bad = 1;
		}
		if (m && !sec_err(m)) { /* accepted: let the process go again */
			snprintf(params, sizeof(params), "{\"pid\":%d}", (int)l->pid);
			cJSON_Delete(sec_raw_call(&r, 4 + 2 * i, i == 0 ? GW_METHOD_PROCESS_UNLOCK :
						  GW_METHOD_RESUME, params, 10000));
		}
		cJSON_Delete(m);
	}
	sec_raw_close(&r);
	return bad;
}

/* A non-root caller's lock may wait at most 60 s (it holds a shared worker meanwhile); root's
 * (CRIU's plugin) has threads of its own and may wait longer. */
GW_TEST(lock_timeout_above_60s_is_refused)
{
	struct gwt_daemon d;
	struct sec_app app, mine;
	struct long_lock l;
	struct sec_raw r;
	char params[128];
	cJSON *m;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	sec_app_start(&d, &app, UID_A, 0, 0, NULL, GWT_ARGS("--mib", "1"));
	l.socket = d.socket;
	l.pid = app.pid;
	if (sec_wait_code(sec_fork_as(UID_A, (gid_t)-1, long_locks_as_a, &l)) != 0)
		soft_fail("uid %d's locks past 60 s were not refused", UID_A);
	sec_app_start(&d, &mine, 0, 0, 0, NULL, GWT_ARGS("--mib", "1"));
	GW_ASSERT_INT_EQ(sec_raw_hello(d.socket, &r, NULL), 0);
	snprintf(params, sizeof(params), "{\"pid\":%d,\"timeout_ms\":3600000}", (int)mine.pid);
	m = sec_raw_call(&r, 3, GW_METHOD_PROCESS_LOCK, params, 10000);
	if (!m || sec_err(m))
		soft_fail("root's lock with timeout_ms 3600000 was refused: %s",
			  m ? sec_err(m) : "no answer");
	cJSON_Delete(m);
	snprintf(params, sizeof(params), "{\"pid\":%d}", (int)mine.pid);
	cJSON_Delete(sec_raw_call(&r, 4, GW_METHOD_PROCESS_UNLOCK, params, 10000));
	sec_raw_close(&r);
	sec_app_stop(&mine);
	sec_app_stop(&app);
	soft_check_done(&d);
	stop_clean(&d);
}

struct hog {
	const char *socket;
	pid_t pids[2];
	int ready_w, go_r, go_w;
};

/* Two 60 s locks on the uid's own apps that sit in the driver; held until told to go. */
static int hog_as_user(void *data)
{
	const struct hog *h = data;
	struct sec_raw r[2];
	char json[256];

	close(h->go_w); /* the parent's end: its close is the signal to go */
	for (int i = 0; i < 2; i++) {
		if (sec_raw_hello(h->socket, &r[i], NULL) < 0)
			return 3;
		snprintf(json, sizeof(json),
			 "{\"id\":7,\"method\":\"gpuwarm.ProcessLock\",\"params\":{\"pid\":%d,"
			 "\"timeout_ms\":60000}}", (int)h->pids[i]);
		sec_raw_send(&r[i], json, NULL, 0);
	}
	(void)!write(h->ready_w, "r", 1);
	(void)!read(h->go_r, json, 1);
	for (int i = 0; i < 2; i++)
		sec_raw_close(&r[i]);
	return 0;
}

static double timed_call(const struct gwt_daemon *d, const char *method, pid_t pid,
			 const char *extra, const char **ret_err)
{
	static char errbuf[128];
	struct sec_raw r;
	char params[128];
	double start;
	cJSON *m;

	snprintf(params, sizeof(params), "{\"pid\":%d%s}", (int)pid, extra ? extra : "");
	start = gwt_now_ms();
	if (sec_raw_hello(d->socket, &r, NULL) < 0) {
		*ret_err = "cannot connect";
		return gwt_now_ms() - start;
	}
	m = sec_raw_call(&r, 3, method, params, 8000);
	snprintf(errbuf, sizeof(errbuf), "%s", !m ? "no answer in 8 s" : sec_err(m) ? sec_err(m) : "");
	*ret_err = errbuf;
	cJSON_Delete(m);
	sec_raw_close(&r);
	return gwt_now_ms() - start;
}

GW_TEST(root_is_not_starved_by_users_long_locks)
{
	static const char *const env[] = { "FAKECUDA_SYNC_DELAY_MS=20000", "FAKECUDA_SYNC_DELAY_SKIP=2",
					    NULL };
	static const uid_t uids[4] = { UID_A, UID_B, UID_C, UID_D };
	struct gwt_daemon d;
	struct sec_app apps[4][2], idle;
	struct hog h[4];
	pid_t kids[4];
	int go[2];
	const char *err;
	double ms;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	GW_ASSERT(pipe2(go, O_CLOEXEC) == 0);
	sec_app_start(&d, &idle, 0, 0, 0, NULL, GWT_ARGS("--mib", "1"));
	for (int u = 0; u < 4; u++) {
		int ready[2];
		char c;

		GW_ASSERT(pipe2(ready, O_CLOEXEC) == 0);
		for (int i = 0; i < 2; i++) {
			sec_app_start(&d, &apps[u][i], uids[u], 0, 0, env,
				      GWT_ARGS("--mib", "1", "--busy"));
			h[u].pids[i] = apps[u][i].pid;
		}
		h[u].socket = d.socket;
		h[u].ready_w = ready[1];
		h[u].go_r = go[0];
		h[u].go_w = go[1];
		kids[u] = sec_fork_as(uids[u], (gid_t)-1, hog_as_user, &h[u]);
		close(ready[1]);
		if (read(ready[0], &c, 1) != 1)
			GW_FAIL("uid %u's locks did not start", (unsigned)uids[u]);
		close(ready[0]);
	}
	gwt_sleep_ms(1000);
	ms = timed_call(&d, GW_METHOD_PROCESS_STATE, idle.pid, NULL, &err);
	if (ms > 2000 || *err)
		soft_fail("root's ProcessState took %.0f ms (%s)", ms, *err ? err : "ok");
	ms = timed_call(&d, GW_METHOD_PROCESS_LOCK, idle.pid, ",\"timeout_ms\":5000", &err);
	if (ms > 2000 || *err)
		soft_fail("root's ProcessLock of an idle process took %.0f ms (%s)", ms,
			  *err ? err : "ok");
	ms = timed_call(&d, GW_METHOD_PROCESS_UNLOCK, idle.pid, NULL, &err);
	if (ms > 2000 || *err)
		soft_fail("root's ProcessUnlock took %.0f ms (%s)", ms, *err ? err : "ok");
	close(go[1]);
	for (int u = 0; u < 4; u++) {
		sec_wait_code(kids[u]);
		for (int i = 0; i < 2; i++)
			sec_app_stop(&apps[u][i]);
	}
	sec_app_stop(&idle);
	soft_check_done(&d);
	stop_clean(&d);
}

/* ======================= 4. descriptors ======================= */

static int count_settled(pid_t pid, int want, unsigned ms)
{
	double deadline = gwt_now_ms() + ms;
	int n;

	do {
		n = sec_count_fds(pid);
		if (n <= want)
			return n;
		gwt_sleep_ms(50);
	} while (gwt_now_ms() < deadline);
	return n;
}

/* A frame with fds attached whose JSON announces none (or fewer): InvalidRequest, the
 * connection closed, every one of those fds closed in the daemon. */
GW_TEST(unannounced_fds_are_a_protocol_error)
{
	static const char *const reqs[] = {
		STATUS_REQ,
		"{\"id\":2,\"method\":\"gpuwarm.Status\",\"params\":{},\"fds\":1}",
	};
	struct gwt_daemon d;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	gwt_sleep_ms(200);
	for (size_t k = 0; k < 2; k++) {
		int before = sec_count_fds(d.pid), fds[8], after;
		struct sec_raw r;
		cJSON *m = NULL;

		GW_ASSERT_INT_EQ(sec_raw_hello(d.socket, &r, NULL), 0);
		for (int i = 0; i < 8; i++)
			fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		GW_ASSERT_INT_EQ(sec_raw_send(&r, reqs[k], fds, 8), 0);
		for (int i = 0; i < 8; i++)
			close(fds[i]);
		if (sec_raw_recv(&r, 5000, &m) != 1)
			soft_fail("[%s] no answer", reqs[k]);
		else if (!sec_err(m) || strcmp(sec_err(m), GW_ERROR_INVALID_REQUEST) != 0)
			soft_fail("[%zu: 8 fds, %s announced] answered %s, expected %s", k,
				  k ? "1" : "none", sec_err(m) ? sec_err(m) : "with a result",
				  GW_ERROR_INVALID_REQUEST);
		cJSON_Delete(m);
		if (!closed_within(r.fd, 2000))
			soft_fail("[%zu] the connection stayed open", k);
		sec_raw_close(&r);
		after = count_settled(d.pid, before, 2000);
		if (after > before)
			soft_fail("[%zu] the daemon holds %d fds, %d before the connection", k, after,
				  before);
	}
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, NULL), 0);
	soft_check_done(&d);
	stop_clean(&d);
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

GW_TEST(fd_exhaustion_does_not_spin)
{
	struct gwt_daemon d;
	struct rlimit low = { 128, 128 };
	int fds[400], n = 0, last = -1, stable = 0;
	long log0, log1;
	double t0;

	sec_need_root();
	gwt_daemon_start(&d, GWT_ARGS("--max-clients", "1000", "--max-clients-per-uid", "1000"));
	/* A low hard limit (the fixed daemon raises its soft limit to the hard one at start). */
	if (prlimit(d.pid, RLIMIT_NOFILE, &low, NULL) < 0)
		GW_FAIL("prlimit: %s", strerror(errno));
	/* connect until the daemon stops accepting (its fd count stops growing) */
	while (n < 400) {
		int c = gwt_connect(&d), cnt;

		if (c < 0)
			break;
		fds[n++] = c;
		if (n % 8)
			continue;
		gwt_sleep_ms(50);
		cnt = sec_count_fds(d.pid);
		stable = cnt == last ? stable + 1 : 0;
		last = cnt;
		if (stable >= 3)
			break;
	}
	if (stable < 3)
		GW_FAIL("the daemon kept accepting (%d fds with a limit of 128)", last);
	log0 = file_size(d.log);
	t0 = gwt_now_ms();
	do {
		gwt_sleep_ms(250);
		log1 = file_size(d.log);
	} while (gwt_now_ms() - t0 < 10000 && log1 - log0 <= 1024 * 1024); /* spares the disk */
	if (!sec_daemon_alive(&d))
		GW_FAIL("gpu-warmd died at descriptor exhaustion");
	if (log1 - log0 > 64 * 1024)
		soft_fail("the daemon wrote %ld bytes of log in %.0f ms of descriptor exhaustion "
			  "(it spins on accept)", log1 - log0, gwt_now_ms() - t0);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	t0 = gwt_now_ms();
	{
		int ok = 0;

		while (!ok && gwt_now_ms() - t0 < 2000)
			ok = gwt_status_ok(&d, NULL) == 0;
		if (!ok)
			soft_fail("no Status answer within 2 s after the connections closed");
	}
	if (soft_count)
		GW_FAIL("%d failed check(s):\n%s\nlog tail:\n%s", soft_count, soft_msgs,
			gwt_daemon_log(&d) + (strlen(gwt_daemon_log(&d)) > 2000 ?
						     strlen(gwt_daemon_log(&d)) - 2000 : 0));
	stop_clean(&d);
}

/* ======================= 5. image_fd checks ======================= */

struct image_try {
	const char *socket;
	pid_t pid;
	int fd;
	char name[128]; /* out: the error name, or "" for success */
};

static int suspend_with_fd(struct image_try *t)
{
	struct sec_raw r;
	char json[256];
	cJSON *m = NULL;

	if (sec_raw_hello(t->socket, &r, NULL) < 0)
		return 3;
	snprintf(json, sizeof(json),
		 "{\"id\":3,\"method\":\"gpuwarm.Suspend\",\"params\":{\"pid\":%d,\"image_fd\":0},"
		 "\"fds\":1}", (int)t->pid);
	if (sec_raw_send(&r, json, &t->fd, 1) < 0 || sec_raw_recv(&r, 20000, &m) != 1) {
		sec_raw_close(&r);
		return 4;
	}
	snprintf(t->name, sizeof(t->name), "%s", sec_err(m) ? sec_err(m) : "");
	cJSON_Delete(m);
	sec_raw_close(&r);
	return 0;
}

struct image_case {
	const char *socket;
	pid_t pid;
	const char *path; /* file to open read-write */
	char result[256];
};

/* As the app's owner: open path read-write, Suspend into it; exit 0 when refused with Image. */
static int image_case_as_owner(void *data)
{
	struct image_case *c = data;
	struct image_try t = { .socket = c->socket, .pid = c->pid };
	int r;

	t.fd = open(c->path, O_RDWR | O_CLOEXEC);
	if (t.fd < 0) {
		fprintf(stderr, "cannot open %s: %s\n", c->path, strerror(errno));
		return 5;
	}
	r = suspend_with_fd(&t);
	close(t.fd);
	if (r)
		return r;
	if (strcmp(t.name, GW_ERROR_IMAGE) != 0) {
		fprintf(stderr, "Suspend into %s: %s, expected %s\n", c->path,
			t.name[0] ? t.name : "accepted (the image was written)", GW_ERROR_IMAGE);
		return 1;
	}
	return 0;
}

static void image_fd_case(const char *what, const char *(*make)(pid_t app, uid_t owner),
			  int (*unchanged)(const char *path))
{
	struct gwt_daemon d;
	struct sec_app app;
	struct image_case c;
	int code;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	gwt_daemon_start(&d, NULL);
	sec_app_start(&d, &app, UID_A, 1, 0, NULL, GWT_ARGS("--mib", "4"));
	if (sec_wait_agent(&d, app.pid, 4.0 * 1048576, 10000) < 0)
		GW_FAIL("the app's agent never attached:\n%s", gwt_daemon_log(&d));
	c.socket = d.socket;
	c.pid = app.pid;
	c.path = make(app.pid, UID_A);
	code = sec_run_as(UID_A, (gid_t)-1, image_case_as_owner, &c);
	if (code != 0)
		soft_fail("%s (%s): not refused with %s (exit %d)", what, c.path, GW_ERROR_IMAGE,
			  code);
	if (unchanged && !unchanged(c.path))
		soft_fail("%s: %s was written to", what, c.path);
	if (strcmp(state_of(&d, app.pid), "running") != 0)
		soft_fail("the app is %s after the refused suspend", state_of(&d, app.pid));
	sec_app_stop(&app);
	soft_check_done(&d);
	stop_clean(&d);
}

static char proc_before[256];

static const char *make_proc_file(pid_t app, uid_t owner)
{
	static char path[64];
	FILE *f;

	(void)owner;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)app);
	f = fopen(path, "r");
	GW_ASSERT(f);
	GW_ASSERT(fgets(proc_before, sizeof(proc_before), f));
	fclose(f);
	return path;
}

static int proc_unchanged(const char *path)
{
	char now[256] = "";
	FILE *f = fopen(path, "r");

	if (!f)
		return 1; /* the app is gone: checked elsewhere */
	if (!fgets(now, sizeof(now), f))
		now[0] = '\0';
	fclose(f);
	if (strcmp(now, proc_before) != 0)
		fprintf(stderr, "%s: \"%s\" became \"%s\"\n", path, proc_before, now);
	return strcmp(now, proc_before) == 0;
}

static const char *make_other_owner_file(pid_t app, uid_t owner)
{
	static char path[512];
	int fd;

	(void)app;
	(void)owner;
	snprintf(path, sizeof(path), "%s/owned-by-%d.img", gwt_dir(), UID_B);
	fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0666);
	GW_ASSERT(fd >= 0);
	GW_ASSERT(fchown(fd, UID_B, UID_B) == 0);
	GW_ASSERT(fchmod(fd, 0666) == 0);
	close(fd);
	return path;
}

static int still_empty(const char *path)
{
	return file_size(path) == 0;
}

static const char *make_linked_file(pid_t app, uid_t owner)
{
	static char path[512], other[600];
	int fd;

	(void)app;
	snprintf(path, sizeof(path), "%s/linked.img", sec_user_dir(owner));
	snprintf(other, sizeof(other), "%s/second-name.img", sec_user_dir(owner));
	fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	GW_ASSERT(fd >= 0);
	GW_ASSERT(fchown(fd, owner, owner) == 0);
	close(fd);
	GW_ASSERT(link(path, other) == 0);
	return path;
}

GW_TEST(image_fd_on_procfs_is_refused)
{
	image_fd_case("an image_fd of /proc/PID/comm", make_proc_file, proc_unchanged);
}

GW_TEST(image_fd_of_another_owner_is_refused)
{
	image_fd_case("an image_fd of a file owned by another uid", make_other_owner_file,
		      still_empty);
}

GW_TEST(image_fd_with_two_links_is_refused)
{
	image_fd_case("an image_fd of a file with two hard links", make_linked_file, still_empty);
}

/* oom_score_adj, as the contract names it: refused with Image, and its value unchanged. */
static int oom_case_as_owner(void *data)
{
	struct image_case *c = data;
	struct image_try t = { .socket = c->socket, .pid = c->pid };
	int r;

	t.fd = open(c->path, O_RDWR | O_CLOEXEC);
	if (t.fd < 0)
		return 5;
	r = suspend_with_fd(&t);
	close(t.fd);
	snprintf(c->result, sizeof(c->result), "%s", t.name);
	if (r)
		return r;
	if (strcmp(t.name, GW_ERROR_IMAGE) != 0)
		fprintf(stderr, "Suspend into %s: %s, expected %s\n", c->path,
			t.name[0] ? t.name : "accepted", GW_ERROR_IMAGE);
	return strcmp(t.name, GW_ERROR_IMAGE) == 0 ? 0 : 1;
}

GW_TEST(image_fd_on_oom_score_adj_is_refused)
{
	struct gwt_daemon d;
	struct sec_app app;
	struct image_case c;
	char path[64], before[64] = "", after[64] = "";
	FILE *f;
	int code;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	gwt_daemon_start(&d, NULL);
	sec_app_start(&d, &app, UID_A, 1, 0, NULL, GWT_ARGS("--mib", "4"));
	if (sec_wait_agent(&d, app.pid, 4.0 * 1048576, 10000) < 0)
		GW_FAIL("the app's agent never attached");
	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", (int)app.pid);
	f = fopen(path, "r");
	GW_ASSERT(f && fgets(before, sizeof(before), f));
	fclose(f);
	c.socket = d.socket;
	c.pid = app.pid;
	c.path = path;
	code = sec_run_as(UID_A, (gid_t)-1, oom_case_as_owner, &c);
	if (code != 0)
		soft_fail("Suspend into %s: not refused with %s (exit %d)", path, GW_ERROR_IMAGE,
			  code);
	f = fopen(path, "r");
	GW_ASSERT(f && fgets(after, sizeof(after), f));
	fclose(f);
	if (strcmp(before, after) != 0)
		soft_fail("%s changed from %s to %s", path, before, after);
	sec_app_stop(&app);
	soft_check_done(&d);
	stop_clean(&d);
}

/* ======================= 6. big images, failed resumes, idle agents ======================= */

/* A valid image whose tables are big (2^21 chunks of 64 KiB, a run per chunk: ~64 MB of
 * tables) on a GPU this host does not have; the data section is a hole. */
static const char *make_big_image(void)
{
	static char path[512];
	struct gw_vimg v;
	uint8_t *buf;
	size_t len;
	const uint32_t nranges = 2048, chunks_per_range = 1024;
	struct gw_chunk_scan *scans = calloc(chunks_per_range, sizeof(*scans));
	int fd;

	GW_ASSERT(scans);
	for (uint32_t i = 0; i < chunks_per_range; i++) {
		scans[i].nonzero = i % 2;
		scans[i].sum = i % 2 ? 0x1234567800000000ull + i : gw_chunksum_zero(0, 8192);
	}
	GW_ASSERT_INT_EQ(gw_vimg_init(&v, 64u << 10, GW_VIMG_F_SPARSE), 0);
	for (uint32_t r = 0; r < nranges; r++) {
		struct gw_vimg_range range = { 0 };

		range.va = 0x7e0000000000ull + (uint64_t)r * chunks_per_range * (64u << 10);
		range.size = (uint64_t)chunks_per_range * (64u << 10);
		memset(range.uuid, 0xee, sizeof(range.uuid)); /* no such GPU here */
		GW_ASSERT_INT_EQ(gw_vimg_add_range(&v, &range, scans), 0);
	}
	GW_ASSERT_INT_EQ(gw_vimg_finalize(&v), 0);
	GW_ASSERT_INT_EQ(gw_vimg_encode(&v, &buf, &len), 0);
	snprintf(path, sizeof(path), "%s/big.img", gwt_dir());
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	GW_ASSERT(fd >= 0);
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, buf + off, len - off);

		GW_ASSERT(n > 0);
		off += (size_t)n;
	}
	GW_ASSERT(ftruncate(fd, (off_t)v.file_bytes) == 0);
	close(fd);
	fprintf(stderr, "big image: %zu bytes of header and tables, %llu runs, file %llu bytes\n",
		len, (unsigned long long)v.nruns, (unsigned long long)v.file_bytes);
	free(buf);
	free(scans);
	gw_vimg_clear(&v);
	return path;
}

struct resumers {
	const char *socket, *image;
	pid_t pid;
	unsigned ms;
};

/* Four connections resume pid with the big image, over and over, for ms. */
static int resumers_main(void *data)
{
	const struct resumers *rs = data;
	struct sec_raw r[4];
	double end = gwt_now_ms() + rs->ms;
	char json[256];
	int fd = open(rs->image, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 3;
	for (int i = 0; i < 4; i++)
		if (sec_raw_hello(rs->socket, &r[i], NULL) < 0)
			return 4;
	snprintf(json, sizeof(json),
		 "{\"id\":3,\"method\":\"gpuwarm.Resume\",\"params\":{\"pid\":%d,\"image_fd\":0},"
		 "\"fds\":1}", (int)rs->pid);
	while (gwt_now_ms() < end) {
		for (int i = 0; i < 4; i++)
			sec_raw_send(&r[i], json, &fd, 1);
		for (int i = 0; i < 4; i++) {
			cJSON *m = NULL;

			if (sec_raw_recv(&r[i], 30000, &m) != 1)
				return 5;
			cJSON_Delete(m);
		}
	}
	for (int i = 0; i < 4; i++)
		sec_raw_close(&r[i]);
	close(fd);
	return 0;
}

GW_TEST(big_image_resumes_do_not_stall_the_loop)
{
	struct gwt_daemon d;
	struct sec_app app;
	struct resumers rs;
	double worst = 0, end;
	pid_t kid;
	int calls = 0, code;
	cJSON *st;
	const cJSON *rec;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	rs.image = make_big_image();
	gwt_daemon_start(&d, NULL);
	sec_app_start(&d, &app, 0, 1, 0, NULL, GWT_ARGS("--mib", "2"));
	if (sec_wait_agent(&d, app.pid, 2.0 * 1048576, 10000) < 0)
		GW_FAIL("the app's agent never attached");
	rs.socket = d.socket;
	rs.pid = app.pid;
	rs.ms = 4000;
	kid = sec_fork_as(0, 0, resumers_main, &rs);
	gwt_sleep_ms(300);
	end = gwt_now_ms() + 3500;
	while (gwt_now_ms() < end) {
		double t0 = gwt_now_ms(), dt;

		if (gwt_status_ok(&d, NULL) < 0)
			soft_fail("a Status call failed during the resumes");
		dt = gwt_now_ms() - t0;
		worst = dt > worst ? dt : worst;
		calls++;
		gwt_sleep_ms(50);
	}
	code = sec_wait_code(kid);
	if (code != 0)
		soft_fail("the resuming clients failed (exit %d)", code);
	if (worst > 500)
		soft_fail("Status took up to %.0f ms (%d calls) while 4 clients resumed with a big "
			  "image", worst, calls);
	st = root_status(&d);
	rec = proc_record(st, app.pid);
	if (rec && (cJSON_GetObjectItem(rec, "held_in") ||
		    gwt_json_num(rec, "held_bytes") != 0))
		soft_fail("after the failed resumes pid %d still has an image attached (held_in %s)",
			  (int)app.pid, gwt_json_str(rec, "held_in"));
	cJSON_Delete(st);
	sec_app_stop(&app);
	soft_check_done(&d);
	stop_clean(&d);
}

GW_TEST(agent_without_vram_gets_the_idle_timeout)
{
	struct gwt_daemon d;
	struct sec_raw r;
	char params[128];
	cJSON *m;
	double t0;

	sec_need_root();
	gwt_daemon_start(&d, GWT_ARGS("--idle-timeout", "2"));
	GW_ASSERT_INT_EQ(sec_raw_hello(d.socket, &r, NULL), 0);
	snprintf(params, sizeof(params), "{\"pid\":%d,\"tid\":%d,\"ranges\":0,\"bytes\":0}",
		 getpid(), gettid());
	m = sec_raw_call(&r, 2, GW_METHOD_AGENT_ATTACH, params, 5000);
	if (!m || sec_err(m))
		GW_FAIL("AgentAttach with no VRAM: %s", m ? sec_err(m) : "no answer");
	cJSON_Delete(m);
	t0 = gwt_now_ms();
	if (!closed_within(r.fd, 5000))
		GW_FAIL("an agent with no VRAM was still connected %.0f ms after attaching "
			"(--idle-timeout 2)", gwt_now_ms() - t0);
	sec_raw_close(&r);
	stop_clean(&d);
}

/* ======================= 7. absolute deadlines ======================= */

/* Drip bytes of data, one a second, until the daemon closes; the time it took from the start. */
static double drip_until_closed(int fd, const uint8_t *data, size_t len, double start,
				unsigned max_ms)
{
	size_t i = 0;

	while (gwt_now_ms() - start < max_ms) {
		if (i < len)
			(void)send(fd, data + i++, 1, MSG_NOSIGNAL);
		if (closed_within(fd, 1000))
			return gwt_now_ms() - start;
	}
	return -1;
}

GW_TEST(handshake_deadline_is_absolute)
{
	struct gwt_daemon d;
	uint8_t frame[256];
	double start, took;
	int fd;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	gw_frame_header_encode(strlen(SEC_HELLO), frame);
	memcpy(frame + GW_FRAME_HEADER_SIZE, SEC_HELLO, strlen(SEC_HELLO));
	fd = gwt_connect(&d);
	start = gwt_now_ms();
	GW_ASSERT(fd >= 0);
	took = drip_until_closed(fd, frame, GW_FRAME_HEADER_SIZE + strlen(SEC_HELLO) - 1, start,
				 14000);
	close(fd);
	if (took < 0)
		GW_FAIL("a client dripping its Hello one byte a second was still connected after "
			"14 s (the handshake timeout is 10 s from the connect)");
	if (took < 9000 || took > 11500)
		GW_FAIL("closed %.0f ms after the connect, expected 10 s", took);
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, NULL), 0);
	stop_clean(&d);
}

GW_TEST(frame_deadline_is_absolute)
{
	struct gwt_daemon d;
	struct sec_raw r;
	uint8_t frame[2048];
	char payload[1500];
	double start, took;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	GW_ASSERT_INT_EQ(sec_raw_hello(d.socket, &r, NULL), 0);
	snprintf(payload, sizeof(payload),
		 "{\"id\":2,\"method\":\"gpuwarm.Status\",\"params\":{},\"pad\":\"%01400d\"}", 0);
	gw_frame_header_encode(strlen(payload), frame);
	memcpy(frame + GW_FRAME_HEADER_SIZE, payload, strlen(payload));
	start = gwt_now_ms();
	took = drip_until_closed(r.fd, frame, GW_FRAME_HEADER_SIZE + strlen(payload), start,
				 14000);
	sec_raw_close(&r);
	if (took < 0)
		GW_FAIL("a frame dripped one byte a second was still open after 14 s (the frame "
			"timeout is 10 s from its first byte)");
	if (took > 11500)
		GW_FAIL("closed %.0f ms after the frame's first byte, expected within 10 s", took);
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, NULL), 0);
	stop_clean(&d);
}

/* ======================= 8. the owner check follows ptrace's rule ======================= */

static int pause_nondumpable(void *data)
{
	(void)data;
	prctl(PR_SET_DUMPABLE, 0);
	for (;;)
		pause();
	return 0;
}

static int pause_dumpable(void *data)
{
	(void)data;
	for (;;)
		pause();
	return 0;
}

struct owner_calls {
	const char *socket;
	pid_t nondumpable, other_gid, control;
};

static int owner_calls_as_a(void *data)
{
	static const char *const methods[] = { GW_METHOD_SUSPEND, GW_METHOD_PROCESS_LOCK,
					       GW_METHOD_PROCESS_STATE };
	const struct owner_calls *o = data;
	const pid_t targets[3] = { o->nondumpable, o->other_gid, o->control };
	static const char *const what[3] = { "a non-dumpable process of the same uid",
					     "a process of the same uid with another gid",
					     "a dumpable process of the same uid and gid" };
	struct sec_raw r;
	int bad = 0;

	if (sec_raw_hello(o->socket, &r, NULL) < 0)
		return 3;
	for (int t = 0; t < 3; t++)
		for (int k = 0; k < 3; k++) {
			char params[64];
			cJSON *m;
			const char *name, *want = t < 2 ? GW_ERROR_PERMISSION_DENIED :
							  GW_ERROR_NO_SUCH_PROCESS;

			snprintf(params, sizeof(params), "{\"pid\":%d}", (int)targets[t]);
			m = sec_raw_call(&r, (unsigned)(10 + t * 3 + k), methods[k], params, 10000);
			name = m ? sec_err(m) : "(no answer)";
			/* The control is no CUDA process: past the permission check it is refused as
			 * not a CUDA process (NoSuchProcess before that error existed). */
			if (t == 2 && name && strcmp(name, GW_ERROR_NOT_CUDA) == 0)
				name = want;
			if (!name || strcmp(name, want) != 0) {
				fprintf(stderr, "%s on %s: %s, expected %s\n", methods[k], what[t],
					name ? name : "allowed", want);
				bad = 1;
			}
			cJSON_Delete(m);
		}
	sec_raw_close(&r);
	return bad;
}

GW_TEST(owner_check_follows_ptrace_rule)
{
	struct gwt_daemon d;
	struct owner_calls o;
	int code;

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	o.socket = d.socket;
	o.nondumpable = sec_fork_as(UID_A, UID_A, pause_nondumpable, NULL);
	o.other_gid = sec_fork_as(UID_A, 60099, pause_dumpable, NULL);
	o.control = sec_fork_as(UID_A, UID_A, pause_dumpable, NULL);
	gwt_sleep_ms(200);
	code = sec_run_as(UID_A, UID_A, owner_calls_as_a, &o);
	kill(o.nondumpable, SIGKILL);
	kill(o.other_gid, SIGKILL);
	kill(o.control, SIGKILL);
	sec_wait_code(o.nondumpable);
	sec_wait_code(o.other_gid);
	sec_wait_code(o.control);
	if (code != 0)
		GW_FAIL("uid %d's calls on its own non-dumpable / other-gid processes were not "
			"refused with %s (exit %d)", UID_A, GW_ERROR_PERMISSION_DENIED, code);
	stop_clean(&d);
}

/* ======================= 9. connection limits ======================= */

struct conns {
	const char *socket;
	int n;
	int out_w; /* one line per connection */
	int go_r, go_w;
};

static int conns_as_user(void *data)
{
	const struct conns *c = data;
	struct sec_raw r[16];

	close(c->go_w);
	for (int i = 0; i < c->n && i < 16; i++) {
		cJSON *refusal = NULL;
		char line[1024];

		if (sec_raw_hello(c->socket, &r[i], &refusal) == 0) {
			snprintf(line, sizeof(line), "ok\n");
		} else if (sec_err(refusal)) {
			snprintf(line, sizeof(line), "refused id=%.0f name=%s limit=%s message=%s\n",
				 gwt_json(refusal, "id") ? gwt_json(refusal, "id")->valuedouble : -1,
				 sec_err(refusal),
				 gwt_json_str(refusal, "error.limit") ?
					 gwt_json_str(refusal, "error.limit") : "(none)",
				 gwt_json_str(refusal, "error.message") ?
					 gwt_json_str(refusal, "error.message") : "");
		} else {
			snprintf(line, sizeof(line), "closed without an error frame\n");
		}
		cJSON_Delete(refusal);
		(void)!write(c->out_w, line, strlen(line));
	}
	(void)!read(c->go_r, r, 1);
	return 0;
}

static pid_t open_conns(const struct gwt_daemon *d, uid_t uid, int n, const int go[2],
			char lines[][1024])
{
	struct conns c = { .socket = d->socket, .n = n, .go_r = go[0], .go_w = go[1] };
	int p[2];
	pid_t kid;
	FILE *f;

	GW_ASSERT(pipe2(p, O_CLOEXEC) == 0);
	c.out_w = p[1];
	kid = sec_fork_as(uid, (gid_t)-1, conns_as_user, &c);
	close(p[1]);
	f = fdopen(p[0], "r");
	for (int i = 0; i < n; i++) {
		if (!fgets(lines[i], 1024, f))
			GW_FAIL("uid %u's connection %d: no report", (unsigned)uid, i);
		lines[i][strcspn(lines[i], "\n")] = '\0';
	}
	fclose(f);
	return kid;
}

static void check_refusal(const char *line, uid_t uid, int i, const char *limit)
{
	char want[128];
	const char *msg = strstr(line, " message=");

	snprintf(want, sizeof(want), "limit=%s ", limit);
	if (strncmp(line, "refused id=0 name=" GW_ERROR_LIMIT " ", 18 + strlen(GW_ERROR_LIMIT) + 1) != 0 ||
	    !strstr(line, want) || !msg ||
	    (!strstr(msg, "max-clients") && !strstr(msg, "max_clients") &&
	     !strstr(msg, "root-reserve") && !strstr(msg, "root_reserve")))
		soft_fail("uid %u connection %d: \"%s\", expected a refusal {id 0, %s, limit %s, a "
			  "message naming the option}",
			  (unsigned)uid, i, line, GW_ERROR_LIMIT, limit);
}

GW_TEST(connection_limits_keep_a_root_reserve)
{
	struct gwt_daemon d;
	char lines[8][1024];
	pid_t kids[4];
	int go[2], root_fds[6], nroot = 0;
	char err[4096];
	cJSON *j = NULL;
	int code;

	sec_need_root();
	gwt_daemon_start(&d, GWT_ARGS("--max-clients", "16", "--max-clients-per-uid", "4"));
	gwt_sleep_ms(200); /* the start-up probe's connections are gone */
	GW_ASSERT(pipe2(go, O_CLOEXEC) == 0);

	/* uid A: 4 connections, the 5th refused by the per-uid limit */
	kids[0] = open_conns(&d, UID_A, 5, go, lines);
	for (int i = 0; i < 4; i++)
		if (strcmp(lines[i], "ok") != 0)
			soft_fail("uid %d connection %d: %s", UID_A, i, lines[i]);
	check_refusal(lines[4], UID_A, 4, "max_clients_per_uid");
	/* uid B: 4 more: non-root clients now hold 16 - 8 */
	kids[1] = open_conns(&d, UID_B, 4, go, lines);
	for (int i = 0; i < 4; i++)
		if (strcmp(lines[i], "ok") != 0)
			soft_fail("uid %d connection %d: %s", UID_B, i, lines[i]);
	/* uid C and D: refused, the rest is root's reserve */
	kids[2] = open_conns(&d, UID_C, 4, go, lines);
	for (int i = 0; i < 4; i++)
		check_refusal(lines[i], UID_C, i, "max_clients");
	kids[3] = open_conns(&d, UID_D, 4, go, lines);
	for (int i = 0; i < 4; i++)
		check_refusal(lines[i], UID_D, i, "max_clients");
	/* warmctl, refused, says what the daemon said */
	code = gwt_warmctl(&d, UID_D, &j, err, sizeof(err), GWT_ARGS("status"));
	if (code == 0 || strstr(err, "closed the connection") ||
	    (!strstr(err, "max-clients") && !strstr(err, "max_clients") &&
	     !strstr(err, "root-reserve") && !strstr(err, "root_reserve")))
		soft_fail("warmctl status as uid %d while refused: exit %d, stderr \"%s\": expected "
			  "the daemon's refusal message", UID_D, code, err);
	cJSON_Delete(j);
	/* root: beyond the per-uid limit, into the reserve */
	for (int i = 0; i < 5; i++) {
		struct sec_raw r;
		cJSON *refusal = NULL;

		if (sec_raw_hello(d.socket, &r, &refusal) == 0) {
			root_fds[nroot++] = r.fd;
			r.fd = -1;
		} else {
			char *t = refusal ? cJSON_PrintUnformatted(refusal) : NULL;

			soft_fail("root's connection %d was refused: %s", i, t ? t : "(closed)");
			free(t);
			cJSON_Delete(refusal);
		}
		sec_raw_close(&r);
	}
	if (gwt_status_ok(&d, NULL) != 0)
		soft_fail("root's Status failed with the users' connections open");
	close(go[1]);
	for (int i = 0; i < 4; i++)
		sec_wait_code(kids[i]);
	for (int i = 0; i < nroot; i++)
		close(root_fds[i]);
	soft_check_done(&d);
	stop_clean(&d);
}

/* ======================= 10. status privacy ======================= */

struct privacy {
	const char *socket;
	pid_t own, others[2];
};

static int status_as_a(void *data)
{
	const struct privacy *p = data;
	struct sec_raw r;
	const cJSON *item;
	cJSON *m;
	int bad = 0, own_seen = 0, nleases = 0;

	if (sec_raw_hello(p->socket, &r, NULL) < 0)
		return 3;
	m = sec_raw_call(&r, 2, GW_METHOD_LEASE_ACQUIRE, "{\"gpu\":\"0\"}", 5000);
	if (!m || sec_err(m)) {
		fprintf(stderr, "uid %d could not take a lease\n", UID_A);
		return 4;
	}
	cJSON_Delete(m);
	m = sec_raw_call(&r, 3, GW_METHOD_STATUS, NULL, 5000);
	if (!m || sec_err(m))
		return 5;
	cJSON_ArrayForEach(item, gwt_json(m, "result.processes")) {
		const cJSON *pid = cJSON_GetObjectItem(item, "pid"), *uid = cJSON_GetObjectItem(item, "uid");

		if (!cJSON_IsNumber(uid) || uid->valuedouble != UID_A) {
			fprintf(stderr, "uid %d's status lists pid %.0f of uid %s\n", UID_A,
				cJSON_IsNumber(pid) ? pid->valuedouble : -1,
				cJSON_IsNumber(uid) ? "other" : "(no uid member)");
			bad = 1;
		}
		if (cJSON_IsNumber(pid) && pid->valuedouble == p->own)
			own_seen = 1;
	}
	if (!own_seen) {
		fprintf(stderr, "uid %d's status does not list its own process\n", UID_A);
		bad = 1;
	}
	cJSON_ArrayForEach(item, gwt_json(m, "result.leases")) {
		const cJSON *uid = cJSON_GetObjectItem(item, "client_uid");

		nleases++;
		if (!cJSON_IsNumber(uid) || uid->valuedouble != UID_A) {
			fprintf(stderr, "uid %d's status lists another user's lease\n", UID_A);
			bad = 1;
		}
	}
	if (nleases != 1) {
		fprintf(stderr, "uid %d's status lists %d leases, expected its own 1\n", UID_A,
			nleases);
		bad = 1;
	}
	if (!cJSON_IsNumber(gwt_json(m, "result.others.processes")) ||
	    gwt_json(m, "result.others.processes")->valuedouble != 2 ||
	    !cJSON_IsNumber(gwt_json(m, "result.others.leases")) ||
	    gwt_json(m, "result.others.leases")->valuedouble != 1) {
		char *t = cJSON_PrintUnformatted(gwt_json(m, "result.others"));

		fprintf(stderr, "\"others\" is %s, expected {\"processes\": 2, \"leases\": 1}\n",
			t ? t : "absent");
		free(t);
		bad = 1;
	}
	cJSON_Delete(m);
	sec_raw_close(&r);
	return bad;
}

GW_TEST(status_shows_users_only_their_own)
{
	struct gwt_daemon d;
	struct sec_app root_app, a_app, b_app;
	struct privacy p;
	pid_t holder;
	int code;
	cJSON *st;

	sec_need_root();
	if (!getenv("GW_SHIM"))
		GW_SKIP("no shim in this build");
	gwt_daemon_start(&d, NULL);
	sec_app_start(&d, &root_app, 0, 1, 0, NULL, GWT_ARGS("--mib", "2"));
	sec_app_start(&d, &a_app, UID_A, 1, 0, NULL, GWT_ARGS("--mib", "2"));
	sec_app_start(&d, &b_app, UID_B, 1, 0, NULL, GWT_ARGS("--mib", "2"));
	GW_ASSERT_INT_EQ(sec_wait_agent(&d, root_app.pid, 2.0 * 1048576, 10000), 0);
	GW_ASSERT_INT_EQ(sec_wait_agent(&d, a_app.pid, 2.0 * 1048576, 10000), 0);
	GW_ASSERT_INT_EQ(sec_wait_agent(&d, b_app.pid, 2.0 * 1048576, 10000), 0);
	holder = gwt_warmctl_spawn(&d, GWT_ARGS("lease", "--gpu", "0", "--hold"));
	for (int i = 0; i < 200; i++) {
		st = root_status(&d);
		code = cJSON_GetArraySize(gwt_json(st, "leases"));
		cJSON_Delete(st);
		if (code >= 1)
			break;
		gwt_sleep_ms(20);
	}
	p.socket = d.socket;
	p.own = a_app.pid;
	p.others[0] = root_app.pid;
	p.others[1] = b_app.pid;
	code = sec_run_as(UID_A, (gid_t)-1, status_as_a, &p);
	if (code != 0)
		soft_fail("uid %d's Status is not limited to its own processes and leases (exit %d)",
			  UID_A, code);
	/* root sees everything, with owners */
	st = root_status(&d);
	if (!proc_record(st, root_app.pid) || !proc_record(st, a_app.pid) ||
	    !proc_record(st, b_app.pid))
		soft_fail("root's status does not list every process");
	else if (!cJSON_IsNumber(gwt_json(proc_record(st, a_app.pid), "uid")) ||
		 gwt_json_num(proc_record(st, a_app.pid), "uid") != UID_A)
		soft_fail("root's status has no \"uid\" %d for uid %d's process", UID_A, UID_A);
	cJSON_Delete(st);
	kill(holder, SIGTERM);
	sec_wait_code(holder);
	sec_app_stop(&root_app);
	sec_app_stop(&a_app);
	sec_app_stop(&b_app);
	soft_check_done(&d);
	stop_clean(&d);
}

/* ======================= 11. unit hardening ======================= */

GW_TEST(unit_exposure_is_at_most_3_5)
{
	const char *unit = getenv("GW_UNIT_SERVICE");
	char cmd[1024], out[1 << 16];
	const char *at;
	double exposure;
	size_t n;
	FILE *f;

	if (!unit || !*unit || access(unit, R_OK) != 0)
		GW_SKIP("no configured unit file (GW_UNIT_SERVICE)");
	if (system("command -v systemd-analyze >/dev/null 2>&1") != 0)
		GW_SKIP("no systemd-analyze");
	snprintf(cmd, sizeof(cmd), "systemd-analyze security --offline=true '%s' 2>&1", unit);
	f = popen(cmd, "r");
	GW_ASSERT(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	pclose(f);
	at = strstr(out, "Overall exposure level for");
	if (!at || !(at = strchr(at, ':')) || sscanf(at + 1, "%lf", &exposure) != 1)
		GW_SKIP("systemd-analyze security --offline=true gave no exposure:\n%s", out);
	if (exposure > 3.5)
		GW_FAIL("systemd-analyze security rates %s at %.1f, expected at most 3.5:\n%s", unit,
			exposure, out);
}

/* ======================= 12. others are served meanwhile ======================= */

static int abuse_main(void *data)
{
	const struct gwt_daemon *d = data;
	double end = gwt_now_ms() + 8000;
	int drips[4];
	uint8_t hdr[GW_FRAME_HEADER_SIZE];

	gw_frame_header_encode(1000, hdr);
	for (int i = 0; i < 4; i++)
		drips[i] = gwt_connect(d);
	while (gwt_now_ms() < end) {
		struct sec_raw r;
		int fds[4];

		close_storm(d, 20);
		for (int i = 0; i < 4; i++)
			if (drips[i] >= 0)
				(void)send(drips[i], hdr, 1, MSG_NOSIGNAL);
		if (sec_raw_hello(d->socket, &r, NULL) == 0) {
			for (int i = 0; i < 4; i++)
				fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
			sec_raw_send(&r, STATUS_REQ, fds, 4);
			for (int i = 0; i < 4; i++)
				close(fds[i]);
		}
		sec_raw_close(&r);
	}
	for (int i = 0; i < 4; i++)
		if (drips[i] >= 0)
			close(drips[i]);
	return 0;
}

GW_TEST(others_are_served_during_abuse)
{
	struct gwt_daemon d;
	struct sec_app app;
	pid_t kids[2];
	double worst = 0, end;
	char line[256];

	sec_need_root();
	gwt_daemon_start(&d, NULL);
	sec_app_start(&d, &app, 0, 0, 0, NULL, GWT_ARGS("--mib", "8"));
	kids[0] = sec_fork_as(UID_A, (gid_t)-1, abuse_main, &d);
	kids[1] = sec_fork_as(UID_B, (gid_t)-1, abuse_main, &d);
	gwt_sleep_ms(300);
	end = gwt_now_ms() + 6000;
	while (gwt_now_ms() < end) {
		double t0 = gwt_now_ms();

		int sr = gwt_status_ok(&d, NULL);

		if (sr < 0 && sec_daemon_alive(&d))
			soft_fail("a Status call failed during the abuse: %s", strerror(-sr));
		if (!sec_daemon_alive(&d))
			GW_FAIL("gpu-warmd died during the abuse");
		worst = gwt_now_ms() - t0 > worst ? gwt_now_ms() - t0 : worst;
		gwt_sleep_ms(100);
	}
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid))));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	sec_wait_code(kids[0]);
	sec_wait_code(kids[1]);
	if (worst > 2000)
		soft_fail("Status took up to %.0f ms during the abuse", worst);
	if (!sec_app_verify(&app, line, sizeof(line)))
		soft_fail("the app's data did not come back: %s", line);
	sec_app_stop(&app);
	soft_check_done(&d);
	stop_clean(&d);
}

GW_TEST_MAIN()
