/* SPDX-License-Identifier: MIT */
/* warmctl as a subprocess against a scripted fake daemon: output, errors, hints, exit codes. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fake-server.h"
#include "gw-test.h"

#ifndef WARMCTL_PATH
#define WARMCTL_PATH "warmctl"
#endif

#define UUID0 "GPU-8b7a2f0e-1c2d-4e5f-9a0b-123456789abc"
#define UUID1 "GPU-00112233-4455-6677-8899-aabbccddeeff"

static const char status_json[] =
	"{\"daemon\": {\"version\": \"0.1.0\", \"protocol\": 1, \"pid\": 1234, \"uptime_s\": 12.5,"
	" \"socket\": \"/run/gpu-warmd/gpu-warmd.sock\", \"staging_mib\": 1024, \"clients\": 2},"
	" \"driver\": {\"loaded\": true, \"library\": \"libcuda.so.1\", \"version\": 13000,"
	" \"checkpoint_api\": true, \"vmm_api\": true, \"error\": null},"
	" \"gpus\": [{\"index\": 0, \"uuid\": \"" UUID0 "\", \"pci_bus_id\": \"0000:3b:00.0\","
	" \"name\": \"NVIDIA H100 80GB HBM3\", \"memory_total_mib\": 81559,"
	" \"memory_free_mib\": 80000, \"state\": \"ready\", \"context\": \"primed\","
	" \"staging\": {\"bytes\": 1073741824, \"buffers\": 4, \"pin_ms\": 520.3},"
	" \"leases\": 1, \"in_flight\": 0, \"error\": null}],"
	" \"leases\": [{\"id\": 7, \"gpu\": 0, \"uuid\": \"" UUID0 "\", \"client_pid\": 99,"
	" \"client_uid\": 1000, \"age_s\": 3.2}],"
	" \"processes\": [{\"pid\": 4242, \"uid\": 1000, \"gpus\": [0, 1],"
	" \"vram_bytes\": 75161927680, \"ranges\": 136, \"state\": \"suspended\","
	" \"image\": {\"store\": \"memory\", \"data_bytes\": 3898466304},"
	" \"agent_tid\": 4250, \"attached\": true},"
	" {\"pid\": 77, \"agent_tid\": 78, \"attached\": false, \"ranges\": 2,"
	" \"vram_bytes\": 4194304, \"held_bytes\": 2097152, \"held_in\": \"file\"}],"
	" \"image_pool\": {\"bytes\": 8589934592, \"free_bytes\": 4691468288, \"pin_ms\": 4812,"
	" \"cache\": {\"entries\": 1, \"bytes\": 3898466304, \"hits\": 5, \"misses\": 2}},"
	" \"others\": {\"processes\": 3, \"leases\": 1},"
	" \"operations\": {\"lock\": {\"ok\": 3, \"failed\": 0}, \"checkpoint\": {\"ok\": 2,"
	" \"failed\": 1}}}";

struct script {
	unsigned hello_version;   /* 0: GW_PROTO_VERSION */
	bool hello_mismatch;
	bool hello_refused;       /* refuse the connection: an error with id 0, then close */
	bool silent;              /* answer nothing but Hello */
	const char *error_name;   /* answer every other request with this error */
	const char *error_message;
	int cuda_error;
};

static enum fake_action handler(struct fake_conn *c, const struct gw_message *req, int *fds,
				unsigned nfds, void *userdata)
{
	struct script *sc = userdata;

	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (fake_is(req, GW_METHOD_HELLO)) {
		if (sc->hello_mismatch) {
			fake_error(c, req->id, GW_ERROR_PROTOCOL_VERSION,
				   "protocol version mismatch (client 1, server 2)", 0);
			return FAKE_CLOSE;
		}
		if (sc->hello_refused) {
			fake_error(c, 0, GW_ERROR_LIMIT, "too many clients (--max-clients 16)", 0);
			return FAKE_CLOSE;
		}
		fake_hello(c, req, sc->hello_version ? sc->hello_version : GW_PROTO_VERSION);
		return FAKE_CONTINUE;
	}
	if (sc->silent)
		return FAKE_CONTINUE;
	if (sc->error_name) {
		fake_error(c, req->id, sc->error_name, sc->error_message, sc->cuda_error);
		return FAKE_CONTINUE;
	}
	if (fake_is(req, GW_METHOD_STATUS))
		fake_reply(c, req->id, status_json, NULL, 0);
	else if (fake_is(req, GW_METHOD_SUSPEND))
		fake_reply(c, req->id,
			   "{\"pid\": 123, \"state\": \"checkpointed\", \"path\": \"driver\","
			   " \"duration_ms\": 812.0, \"steps\": ["
			   "{\"step\": \"lock\", \"duration_ms\": 1.2},"
			   " {\"step\": \"checkpoint\", \"duration_ms\": 810.8}]}", NULL, 0);
	else if (fake_is(req, GW_METHOD_DRAIN) || fake_is(req, GW_METHOD_UNDRAIN))
		fake_reply(c, req->id,
			   "{\"gpus\": [{\"index\": 0, \"uuid\": \"" UUID0 "\","
			   " \"state\": \"drained\"}]}",
			   NULL, 0);
	else if (fake_is(req, GW_METHOD_LEASE_ACQUIRE))
		fake_reply(c, req->id,
			   "{\"lease\": 7, \"gpu\": {\"index\": 0, \"uuid\": \"" UUID0 "\","
			   " \"pci_bus_id\": \"0000:3b:00.0\"}}", NULL, 0);
	else if (fake_is(req, GW_METHOD_PROCESS_STATE))
		fake_reply(c, req->id,
			   "{\"pid\": 123, \"state\": \"locked\", \"restore_tid\": 130}", NULL, 0);
	else
		fake_reply(c, req->id,
			   "{\"pid\": 123, \"state\": \"running\", \"duration_ms\": 12.3}",
			   NULL, 0);
	return FAKE_CONTINUE;
}

/* ---- running warmctl ---- */

struct child {
	pid_t pid;
	int in, out, err; /* our ends; in is -1 unless asked for */
};

static const char *warmctl_path(void)
{
	const char *env = getenv("WARMCTL");

	return env && *env ? env : WARMCTL_PATH;
}

static void spawn(const char *const *args, bool want_stdin, bool as_nobody, struct child *ret)
{
	const char *argv[32] = { "warmctl" }, *program;
	int in[2] = { -1, -1 }, out[2], err[2];
	size_t n = 1;

	for (; args[n - 1] && n < 31; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	GW_ASSERT(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
	if (want_stdin)
		GW_ASSERT(pipe2(in, O_CLOEXEC) == 0);
	/* nobody may not reach the checkout: a copy it can run, made before we become nobody */
	program = as_nobody ? gw_test_world_runnable(warmctl_path()) : warmctl_path();
	fflush(NULL);
	ret->pid = fork();
	GW_ASSERT(ret->pid >= 0);
	if (ret->pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(want_stdin ? in[0] : devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		if (as_nobody && (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
				  setresuid(65534, 65534, 65534) < 0))
			_exit(126);
		execv(program, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	if (want_stdin)
		close(in[0]);
	ret->in = in[1];
	ret->out = out[0];
	ret->err = err[0];
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
	char *b = realloc(*buf, *len + n + 1);

	GW_ASSERT(b);
	memcpy(b + *len, data, n);
	*len += n;
	b[*len] = '\0';
	*buf = b;
}

/* Read stdout and stderr to EOF, reap; returns the exit status (128 + signal if killed). */
static int finish(struct child *ch, char **ret_out, char **ret_err)
{
	char *bufs[2] = { NULL, NULL };
	size_t lens[2] = { 0, 0 };
	struct pollfd p[2] = { { .fd = ch->out, .events = POLLIN },
			       { .fd = ch->err, .events = POLLIN } };
	int open_fds = 2, status;

	append(&bufs[0], &lens[0], "", 0);
	append(&bufs[1], &lens[1], "", 0);
	while (open_fds > 0) {
		GW_ASSERT(poll(p, 2, -1) > 0);
		for (int i = 0; i < 2; i++) {
			char chunk[4096];
			ssize_t n;

			if (p[i].fd < 0 || !p[i].revents)
				continue;
			n = read(p[i].fd, chunk, sizeof(chunk));
			if (n <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				open_fds--;
			} else {
				append(&bufs[i], &lens[i], chunk, (size_t)n);
			}
		}
	}
	if (ch->in >= 0)
		close(ch->in);
	GW_ASSERT(waitpid(ch->pid, &status, 0) == ch->pid);
	*ret_out = bufs[0];
	*ret_err = bufs[1];
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static int run(const char *const *args, char **out, char **err)
{
	struct child ch;

	spawn(args, false, false, &ch);
	return finish(&ch, out, err);
}

#define RUN(out, err, ...) run((const char *const[]){ __VA_ARGS__, NULL }, out, err)

static cJSON *parse_single_json(const char *out)
{
	const char *end = NULL;
	cJSON *doc = cJSON_ParseWithOpts(out, &end, false);

	if (!doc)
		GW_FAIL("stdout is not JSON: '%s'", out);
	GW_ASSERT_STR_EQ(end, "\n"); /* exactly one object, one line */
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(doc, "version")->valueint, 1);
	return doc;
}

/* A listening socket nobody accepts on, to tell whether warmctl connected at all. */
struct bare {
	char dir[64], path[96];
	int fd;
};

static void bare_listen(struct bare *b)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	snprintf(b->dir, sizeof(b->dir), "/tmp/gw-warmctl-test-XXXXXX");
	GW_ASSERT(mkdtemp(b->dir));
	snprintf(b->path, sizeof(b->path), "%s/sock", b->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", b->path);
	b->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	GW_ASSERT(b->fd >= 0);
	GW_ASSERT(bind(b->fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	GW_ASSERT(listen(b->fd, 8) == 0);
}

static void bare_assert_untouched_and_close(struct bare *b)
{
	GW_ASSERT(accept(b->fd, NULL, NULL) < 0 && errno == EAGAIN);
	close(b->fd);
	unlink(b->path);
	rmdir(b->dir);
}

/* ---- cases ---- */

GW_TEST(warmctl_missing_socket_exits_3_with_hint)
{
	char dir[] = "/tmp/gw-warmctl-test-XXXXXX", path[128], *out, *err;
	cJSON *doc, *error;

	GW_ASSERT(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/none.sock", dir);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", path, "status"), 3);
	GW_ASSERT_STR_CONTAINS(err, "warmctl: ");
	GW_ASSERT_STR_CONTAINS(err, path);
	GW_ASSERT_STR_CONTAINS(err, "is gpu-warmd running? start it with `systemctl start "
				    "gpu-warmd` or pass --socket");
	/* stdout is a pipe: JSON mode, the error is on stdout too */
	doc = parse_single_json(out);
	error = cJSON_GetObjectItem(doc, "error");
	GW_ASSERT(cJSON_IsString(cJSON_GetObjectItem(error, "name")));
	GW_ASSERT(cJSON_IsString(cJSON_GetObjectItem(error, "message")));
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(doc, "command")->valuestring, "status");
	cJSON_Delete(doc);
	free(out);
	free(err);
	/* $GPUWARM_SOCKET is used when there is no --socket */
	GW_ASSERT(setenv(GW_SOCKET_ENV, path, 1) == 0);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "status"), 3);
	GW_ASSERT_STR_CONTAINS(err, path);
	GW_ASSERT_STR_EQ(out, "");
	free(out);
	free(err);
	rmdir(dir);
}

GW_TEST(warmctl_version_mismatch_exits_5)
{
	struct script sc = { .hello_mismatch = true };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "status"), 5);
	GW_ASSERT_STR_CONTAINS(err, "protocol version mismatch (client 1, server 2)");
	GW_ASSERT_STR_CONTAINS(out, GW_ERROR_PROTOCOL_VERSION);
	free(out);
	free(err);
	fake_server_stop(s);

	/* a daemon that says hello with another version */
	sc = (struct script){ .hello_version = 3 };
	s = fake_server_start(handler, &sc);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "status"), 5);
	GW_ASSERT_STR_CONTAINS(err, "protocol version mismatch (client 1, server 3)");
	free(out);
	free(err);
	fake_server_stop(s);
}

/* A connection the daemon refuses (a limit): warmctl prints the daemon's message, not "the
 * daemon closed the connection". */
GW_TEST(warmctl_refused_connection_prints_the_daemons_message)
{
	struct script sc = { .hello_refused = true };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;
	int code = RUN(&out, &err, "--socket", fake_server_path(s), "--json", "status");

	GW_ASSERT(code != 0);
	GW_ASSERT_STR_CONTAINS(err, "too many clients (--max-clients 16)");
	GW_ASSERT(!strstr(err, "closed the connection"));
	GW_ASSERT_STR_CONTAINS(out, GW_ERROR_LIMIT);
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_daemon_permission_denied_exits_4_with_hint)
{
	struct script sc = { .error_name = GW_ERROR_PERMISSION_DENIED,
			     .error_message = "pid 123 belongs to uid 1000" };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "suspend", "123"), 4);
	GW_ASSERT_STR_CONTAINS(err, "warmctl: suspend pid 123: pid 123 belongs to uid 1000");
	GW_ASSERT_STR_CONTAINS(err, "needs root or the uid that owns it");
	free(out);
	free(err);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "drain"), 4);
	GW_ASSERT_STR_CONTAINS(err, "this needs root");
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_socket_eacces_exits_4_with_group_hint)
{
	struct bare b;
	struct child ch;
	char *out, *err;
	bool root = geteuid() == 0;

	bare_listen(&b);
	if (root) {
		/* root passes every permission check: try as nobody instead */
		GW_ASSERT(chmod(b.dir, 0755) == 0);
		GW_ASSERT(chmod(b.path, 0600) == 0);
	} else {
		GW_ASSERT(chmod(b.path, 0) == 0);
	}
	spawn((const char *const[]){ "--socket", b.path, "status", NULL }, false, root, &ch);
	GW_ASSERT_INT_EQ(finish(&ch, &out, &err), 4);
	GW_ASSERT_STR_CONTAINS(err, "Permission denied");
	GW_ASSERT_STR_CONTAINS(err, "add yourself to the group that owns the socket");
	free(out);
	free(err);
	bare_assert_untouched_and_close(&b);
}

GW_TEST(warmctl_error_reply_exits_1_with_daemon_message)
{
	struct script sc = { .error_name = GW_ERROR_CUDA,
			     .error_message = "cuCheckpointProcessLock(pid 123): "
					      "CUDA_ERROR_ILLEGAL_STATE (401): not permitted",
			     .cuda_error = 401 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;
	cJSON *doc, *error;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "lock", "123"), 1);
	GW_ASSERT_STR_CONTAINS(err, "warmctl: lock pid 123: cuCheckpointProcessLock(pid 123): "
				    "CUDA_ERROR_ILLEGAL_STATE (401)");
	doc = parse_single_json(out);
	error = cJSON_GetObjectItem(doc, "error");
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(error, "name")->valuestring, GW_ERROR_CUDA);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(error, "cuda_error")->valueint, 401);
	GW_ASSERT(!cJSON_GetObjectItem(doc, "result"));
	cJSON_Delete(doc);
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_status_json_is_one_envelope)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;
	cJSON *doc, *result, *gpu;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "status", "--json"), 0);
	GW_ASSERT_STR_EQ(err, "");
	doc = parse_single_json(out);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(doc, "command")->valuestring, "status");
	result = cJSON_GetObjectItem(doc, "result");
	gpu = cJSON_GetArrayItem(cJSON_GetObjectItem(result, "gpus"), 0);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(gpu, "uuid")->valuestring, UUID0);
	GW_ASSERT_INT_EQ(
		cJSON_GetObjectItem(cJSON_GetObjectItem(result, "daemon"), "pid")->valueint, 1234);
	cJSON_Delete(doc);
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_status_human_has_the_gpu_table)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "status",
			     "--wide"), 0);
	GW_ASSERT_STR_CONTAINS(out, "UUID");
	GW_ASSERT_STR_CONTAINS(out, UUID0);
	GW_ASSERT_STR_CONTAINS(out, "NVIDIA H100 80GB HBM3");
	GW_ASSERT_STR_CONTAINS(out, "0000:3b:00.0");
	GW_ASSERT_STR_CONTAINS(out, "1559/81559 MiB");
	GW_ASSERT_STR_CONTAINS(out, "1024 MiB");
	GW_ASSERT_STR_CONTAINS(out, "520.3 ms");
	GW_ASSERT_STR_CONTAINS(out, "ready");
	GW_ASSERT_STR_CONTAINS(out, "primed");
	GW_ASSERT_STR_CONTAINS(out, "CUDA 13.0");
	GW_ASSERT(out[0] != '{');
	free(out);
	free(err);
	fake_server_stop(s);
}

static size_t widest_line(const char *text)
{
	size_t widest = 0;

	for (const char *p = text; *p;) {
		size_t n = strcspn(p, "\n");

		if (n > widest)
			widest = n;
		p += n + (p[n] == '\n');
	}
	return widest;
}

/* The processes, the image pool, what other users have; within $COLUMNS. */
GW_TEST(warmctl_status_human_fits_the_width_and_shows_processes)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	static const char *const widths[] = { "80", "100", "132" };
	char *out, *err;

	for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
		setenv("COLUMNS", widths[i], 1);
		GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s),
				     "status"), 0);
		GW_ASSERT(widest_line(out) <= (size_t)atoi(widths[i]));
		GW_ASSERT_STR_CONTAINS(out, "\n4242 "); /* a row of the processes table */
		GW_ASSERT_STR_CONTAINS(out, "1000");
		GW_ASSERT_STR_CONTAINS(out, "0,1");
		GW_ASSERT_STR_CONTAINS(out, "70.0 GiB");
		GW_ASSERT_STR_CONTAINS(out, "suspended");
		GW_ASSERT_STR_CONTAINS(out, "memory 3.6 GiB");
		GW_ASSERT_STR_CONTAINS(out, "\n77 ");
		GW_ASSERT_STR_CONTAINS(out, "file 2 MiB"); /* an older daemon's held_in */
		GW_ASSERT_STR_CONTAINS(out, "pool of 8.0 GiB pinned in 4812 ms, 4.4 GiB free");
		GW_ASSERT_STR_CONTAINS(out, "1 entries");
		GW_ASSERT_STR_CONTAINS(out, "other users: 3 process(es), 1 lease(s)");
		GW_ASSERT_STR_CONTAINS(out, "\n7 "); /* the lease */
		free(out);
		free(err);
	}
	setenv("COLUMNS", "80", 1);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "status"),
			 0);
	GW_ASSERT_STR_CONTAINS(out, "--wide shows them");
	free(out);
	free(err);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "status",
			     "--wide"), 0);
	GW_ASSERT(widest_line(out) > 100);
	GW_ASSERT(!strstr(out, "--wide shows them"));
	unsetenv("COLUMNS");
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_version_option_needs_no_daemon)
{
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", "/nonexistent/sock", "--version"), 0);
	GW_ASSERT_STR_EQ(out, "warmctl " GW_VERSION "\n");
	free(out);
	free(err);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "-V"), 0);
	GW_ASSERT_STR_EQ(out, "warmctl " GW_VERSION "\n");
	free(out);
	free(err);
}

/* A daemon message that already names `warmctl status` gets no hint saying the same. */
GW_TEST(warmctl_hint_is_not_repeated)
{
	struct script sc = { .error_name = GW_ERROR_NO_SUCH_GPU,
			     .error_message = "no GPU matches \"7\" (give an index, a UUID or a "
					      "PCI bus id; `warmctl status` lists them)" };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "drain", "7"),
			 1);
	GW_ASSERT_STR_CONTAINS(err, "no GPU matches");
	GW_ASSERT(!strstr(err, "hint:"));
	free(out);
	free(err);
	sc.error_message = "no GPU matches \"7\"";
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "drain", "7"),
			 1);
	GW_ASSERT_STR_CONTAINS(err, "hint: `warmctl status` lists the GPUs");
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_lease_without_hold_says_it_ended)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "lease"), 0);
	GW_ASSERT_STR_CONTAINS(out, "lease 7: GPU 0");
	GW_ASSERT_STR_CONTAINS(out, "lease 7 ended");
	free(out);
	free(err);
	fake_server_stop(s);
}

/* A directory with neither a VRAM image nor a CRIU checkpoint is not inspected as one. */
GW_TEST(warmctl_inspect_of_an_ordinary_directory_fails)
{
	char dir[] = "/tmp/gw-inspect-XXXXXX", path[64], *out, *err;
	FILE *f;

	GW_ASSERT(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/notes.txt", dir);
	GW_ASSERT((f = fopen(path, "w")) && fputs("hello\n", f) >= 0 && fclose(f) == 0);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "inspect", dir), 1);
	GW_ASSERT_STR_CONTAINS(err, "neither a VRAM image nor a checkpoint directory");
	free(out);
	free(err);
	snprintf(path, sizeof(path), "%s/inventory.img", dir);
	GW_ASSERT((f = fopen(path, "w")) && fputs("criu\n", f) >= 0 && fclose(f) == 0);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "inspect", dir), 0);
	GW_ASSERT_STR_CONTAINS(out, "CRIU image:");
	free(out);
	free(err);
	unlink(path);
	snprintf(path, sizeof(path), "%s/notes.txt", dir);
	unlink(path);
	rmdir(dir);
}

GW_TEST(warmctl_usage_errors_exit_2_without_connecting)
{
	static const char *const bad[][6] = {
		{ "suspend", "abc" },
		{ "suspend", "0" },
		{ "suspend", "4194305" },
		{ "suspend", "-5" },
		{ "suspend", "12x" },
		{ "suspend" },
		{ "suspend", "1", "2" },
		{ "state", " 12" },
		{ "lock", "12", "--timeout", "0" },
		{ "lock", "12", "--timeout", "-1" },
		{ "drain", "--timeout", "soon" },
		{ "drain", "GPU-zz" },
		{ "drain", "3b:00" },
		{ "resume", "12", "--gpu-map", "GPU-1=GPU-2" },
		{ "resume", "12", "--gpu-map", UUID0 },
		{ "resume", "12", "--gpu-map", UUID0 "=" UUID1 "," },
		{ "resume", "12", "--gpu-map", UUID0 "=" UUID1 "," UUID0 "=" UUID1 },
		{ "restore", "12", "--gpu", "nope" },
		{ "lease", "--gpu", "0", "--min-free-mib", "10" },
		{ "lease", "--min-free-mib", "many" },
		{ "status", "extra" },
		{ "status", "--no-wait" },
		{ "suspend", "12", "--image", "x.img", "--segments", "0" },
		{ "suspend", "12", "--image", "x.img", "--segments", "17" },
		{ "resume", "12", "--segments", "2" },
		{ "frobnicate" },
	};
	struct bare b;

	bare_listen(&b);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[10] = { "--socket", b.path };
		char *out, *err;
		int code;

		for (size_t k = 0; k < 6 && bad[i][k]; k++)
			args[2 + k] = bad[i][k];
		code = run(args, &out, &err);
		if (code != 2)
			GW_FAIL("warmctl %s %s: exit %d, stderr '%s'", bad[i][0],
				bad[i][1] ? bad[i][1] : "", code, err);
		GW_ASSERT_STR_CONTAINS(err, "warmctl: ");
		free(out);
		free(err);
	}
	bare_assert_untouched_and_close(&b);
}

GW_TEST(warmctl_gpu_map_message_is_clear)
{
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", "/nonexistent/sock", "resume", "12",
			     "--gpu-map", "GPU-1=GPU-2"), 2);
	GW_ASSERT_STR_CONTAINS(err, "--gpu-map");
	GW_ASSERT_STR_CONTAINS(err, "GPU UUIDs");
	GW_ASSERT_STR_CONTAINS(err, "warmctl resume --help");
	free(out);
	free(err);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "suspend", "0"), 2);
	GW_ASSERT_STR_CONTAINS(err, "invalid PID '0'");
	free(out);
	free(err);
}

GW_TEST(warmctl_every_command_has_help)
{
	static const char *const commands[] = { "status", "drain", "undrain", "suspend", "resume",
						"state", "lock", "checkpoint", "restore", "unlock",
						"lease", "version" };
	char *out, *err;
	char *main_help;

	GW_ASSERT_INT_EQ(RUN(&main_help, &err, "--help"), 0);
	free(err);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char usage[64];

		snprintf(usage, sizeof(usage), "Usage: warmctl %s", commands[i]);
		/* --help wins even over bad arguments, and never connects */
		GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", "/nonexistent/sock", commands[i],
				     "bad", "--help"), 0);
		GW_ASSERT_STR_CONTAINS(out, usage);
		GW_ASSERT_STR_CONTAINS(out, "Exit status");
		GW_ASSERT_STR_EQ(err, "");
		free(out);
		free(err);
		snprintf(usage, sizeof(usage), "\n  %s ", commands[i]);
		GW_ASSERT_STR_CONTAINS(main_help, usage);
	}
	GW_ASSERT_STR_CONTAINS(main_help, "5  protocol version mismatch");
	free(main_help);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "help", "lease"), 0);
	GW_ASSERT_STR_CONTAINS(out, "--hold");
	free(out);
	free(err);
}

GW_TEST(warmctl_suspend_sends_params_and_prints_steps)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err, *params;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "suspend",
			     "123", "--timeout", "2.5"), 0);
	GW_ASSERT_STR_CONTAINS(out, "pid 123: checkpointed in 812.0 ms");
	GW_ASSERT_STR_CONTAINS(out, "checkpoint  810.8 ms");
	params = fake_server_last_params(s, GW_METHOD_SUSPEND);
	GW_ASSERT_STR_EQ(params, "{\"pid\":123,\"timeout_ms\":2500}");
	free(params);
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_resume_and_drain_send_canonical_selectors)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err, *params;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "resume", "77", "--gpu",
			     "00000000:3B:00.0", "--gpu-map",
			     "8B7A2F0E-1C2D-4E5F-9A0B-123456789ABC=" UUID1), 0);
	params = fake_server_last_params(s, GW_METHOD_RESUME);
	GW_ASSERT_STR_EQ(params, "{\"pid\":77,\"gpu\":\"0000:3b:00.0\",\"gpu_pairs\":[[\"" UUID0
				 "\",\"" UUID1 "\"]]}");
	free(params);
	free(out);
	free(err);

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "drain", "1", "3b:00.0",
			     UUID0, "--no-wait", "--timeout", "5"), 0);
	params = fake_server_last_params(s, GW_METHOD_DRAIN);
	GW_ASSERT_STR_EQ(params, "{\"gpus\":[\"1\",\"0000:3b:00.0\",\"" UUID0 "\"],\"wait\":false,"
				 "\"timeout_ms\":5000}");
	free(params);
	free(out);
	free(err);

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "undrain"), 0);
	params = fake_server_last_params(s, GW_METHOD_UNDRAIN);
	GW_ASSERT_STR_EQ(params, "{}");
	GW_ASSERT_STR_CONTAINS(out, UUID0);
	free(params);
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_silent_daemon_times_out_with_exit_3)
{
	struct script sc = { .silent = true };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "--timeout", "0.3",
			     "status"), 3);
	GW_ASSERT_STR_CONTAINS(err, "no answer");
	GW_ASSERT_STR_CONTAINS(err, "--timeout");
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_version_reports_both)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;
	cJSON *doc, *result;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "version"), 0);
	doc = parse_single_json(out);
	result = cJSON_GetObjectItem(doc, "result");
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(result, "warmctl")->valuestring, GW_VERSION);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(result, "daemon")->valuestring, "gpu-warmd 0.1.0");
	cJSON_Delete(doc);
	free(out);
	free(err);
	fake_server_stop(s);

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", "/nonexistent/sock", "version"), 0);
	doc = parse_single_json(out);
	GW_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "result"), "daemon")));
	cJSON_Delete(doc);
	free(out);
	free(err);
}

static void lease_hold(bool by_signal)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	struct child ch;
	char line[512], *out, *err, *params;
	size_t len = 0;
	cJSON *doc;

	spawn((const char *const[]){ "--socket", fake_server_path(s), "lease", "--gpu", "0",
				     "--hold", NULL },
	      true, false, &ch);
	/* the lease is printed first, while warmctl holds it */
	while (len < sizeof(line) - 1 && (len == 0 || line[len - 1] != '\n')) {
		ssize_t n = read(ch.out, line + len, sizeof(line) - 1 - len);

		GW_ASSERT(n > 0);
		len += (size_t)n;
	}
	line[len] = '\0';
	doc = parse_single_json(line);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "result"), "lease")->valueint,
			 7);
	cJSON_Delete(doc);
	GW_ASSERT_INT_EQ(fake_server_count(s, GW_METHOD_LEASE_RELEASE), 0);
	usleep(100 * 1000);
	GW_ASSERT(waitpid(ch.pid, NULL, WNOHANG) == 0); /* still holding */
	if (by_signal) {
		GW_ASSERT(kill(ch.pid, SIGTERM) == 0);
	} else {
		close(ch.in);
		ch.in = -1;
	}
	GW_ASSERT_INT_EQ(finish(&ch, &out, &err), 0);
	GW_ASSERT_STR_EQ(out, ""); /* one JSON object in all */
	params = fake_server_last_params(s, GW_METHOD_LEASE_RELEASE);
	GW_ASSERT_STR_EQ(params, "{\"lease\":7}");
	free(params);
	params = fake_server_last_params(s, GW_METHOD_LEASE_ACQUIRE);
	GW_ASSERT_STR_EQ(params, "{\"gpu\":\"0\"}");
	free(params);
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST(warmctl_lease_hold_until_stdin_eof)
{
	lease_hold(false);
}

GW_TEST(warmctl_lease_hold_until_sigterm)
{
	lease_hold(true);
}

GW_TEST(warmctl_process_steps_human_output)
{
	struct script sc = { 0 };
	struct fake_server *s = fake_server_start(handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "state",
			     "123"), 0);
	GW_ASSERT_STR_CONTAINS(out, "pid 123: locked, restore thread 130");
	free(out);
	free(err);
	GW_ASSERT_INT_EQ(RUN(&out, &err, "--human", "--socket", fake_server_path(s), "unlock",
			     "123"), 0);
	GW_ASSERT_STR_CONTAINS(out, "pid 123: running in 12.3 ms");
	free(out);
	free(err);
	fake_server_stop(s);
}

GW_TEST_MAIN()
