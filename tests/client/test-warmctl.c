/* SPDX-License-Identifier: MIT */
/* warmctl as a subprocess against a scripted fake daemon: output, errors, hints, exit codes. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-test.h"
#include "warmctl-harness.h"

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
	doc = wt_parse_single_json(out);
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
	struct wt_script sc = { .hello_mismatch = true };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
	char *out, *err;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "status"), 5);
	GW_ASSERT_STR_CONTAINS(err, "protocol version mismatch (client 1, server 2)");
	GW_ASSERT_STR_CONTAINS(out, GW_ERROR_PROTOCOL_VERSION);
	free(out);
	free(err);
	fake_server_stop(s);

	/* a daemon that says hello with another version */
	sc = (struct wt_script){ .hello_version = 3 };
	s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { .hello_refused = true };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { .error_name = GW_ERROR_PERMISSION_DENIED,
			     .error_message = "pid 123 belongs to uid 1000" };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_bare b;
	struct wt_child ch;
	char *out, *err;
	bool root = geteuid() == 0;

	wt_bare_listen(&b);
	if (root) {
		/* root passes every permission check: try as nobody instead */
		GW_ASSERT(chmod(b.dir, 0755) == 0);
		GW_ASSERT(chmod(b.path, 0600) == 0);
	} else {
		GW_ASSERT(chmod(b.path, 0) == 0);
	}
	wt_spawn((const char *const[]){ "--socket", b.path, "status", NULL }, false, root, &ch);
	GW_ASSERT_INT_EQ(wt_finish(&ch, &out, &err), 4);
	GW_ASSERT_STR_CONTAINS(err, "Permission denied");
	GW_ASSERT_STR_CONTAINS(err, "add yourself to the group that owns the socket");
	free(out);
	free(err);
	wt_bare_assert_untouched_and_close(&b);
}

GW_TEST(warmctl_error_reply_exits_1_with_daemon_message)
{
	struct wt_script sc = { .error_name = GW_ERROR_CUDA,
			     .error_message = "cuCheckpointProcessLock(pid 123): "
					      "CUDA_ERROR_ILLEGAL_STATE (401): not permitted",
			     .cuda_error = 401 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
	char *out, *err;
	cJSON *doc, *error;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "lock", "123"), 1);
	GW_ASSERT_STR_CONTAINS(err, "warmctl: lock pid 123: cuCheckpointProcessLock(pid 123): "
				    "CUDA_ERROR_ILLEGAL_STATE (401)");
	doc = wt_parse_single_json(out);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
	char *out, *err;
	cJSON *doc, *result, *gpu;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "status", "--json"), 0);
	GW_ASSERT_STR_EQ(err, "");
	doc = wt_parse_single_json(out);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { .error_name = GW_ERROR_NO_SUCH_GPU,
			     .error_message = "no GPU matches \"7\" (give an index, a UUID or a "
					      "PCI bus id; `warmctl status` lists them)" };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_bare b;

	wt_bare_listen(&b);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[10] = { "--socket", b.path };
		char *out, *err;
		int code;

		for (size_t k = 0; k < 6 && bad[i][k]; k++)
			args[2 + k] = bad[i][k];
		code = wt_run(args, &out, &err);
		if (code != 2)
			GW_FAIL("warmctl %s %s: exit %d, stderr '%s'", bad[i][0],
				bad[i][1] ? bad[i][1] : "", code, err);
		GW_ASSERT_STR_CONTAINS(err, "warmctl: ");
		free(out);
		free(err);
	}
	wt_bare_assert_untouched_and_close(&b);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { .silent = true };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
	char *out, *err;
	cJSON *doc, *result;

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", fake_server_path(s), "version"), 0);
	doc = wt_parse_single_json(out);
	result = cJSON_GetObjectItem(doc, "result");
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(result, "warmctl")->valuestring, GW_VERSION);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(result, "daemon")->valuestring, "gpu-warmd 0.1.0");
	cJSON_Delete(doc);
	free(out);
	free(err);
	fake_server_stop(s);

	GW_ASSERT_INT_EQ(RUN(&out, &err, "--socket", "/nonexistent/sock", "version"), 0);
	doc = wt_parse_single_json(out);
	GW_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "result"), "daemon")));
	cJSON_Delete(doc);
	free(out);
	free(err);
}

static void lease_hold(bool by_signal)
{
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
	struct wt_child ch;
	char line[512], *out, *err, *params;
	size_t len = 0;
	cJSON *doc;

	wt_spawn((const char *const[]){ "--socket", fake_server_path(s), "lease", "--gpu", "0",
				     "--hold", NULL },
	      true, false, &ch);
	/* the lease is printed first, while warmctl holds it */
	while (len < sizeof(line) - 1 && (len == 0 || line[len - 1] != '\n')) {
		ssize_t n = read(ch.out, line + len, sizeof(line) - 1 - len);

		GW_ASSERT(n > 0);
		len += (size_t)n;
	}
	line[len] = '\0';
	doc = wt_parse_single_json(line);
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
	GW_ASSERT_INT_EQ(wt_finish(&ch, &out, &err), 0);
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
	struct wt_script sc = { 0 };
	struct fake_server *s = fake_server_start(wt_handler, &sc);
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
