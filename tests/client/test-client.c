/* SPDX-License-Identifier: MIT */
/* libgpuwarm against a scripted fake daemon: connect, hello, replies, errors, timeouts, fds. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fake-server.h"
#include "gw-client.h"
#include "gw-test.h"

struct script {
	unsigned hello_version;  /* 0: GW_PROTO_VERSION */
	bool hello_mismatch;     /* answer Hello with gpuwarm.Error.ProtocolVersionMismatch */
	bool hello_silent;       /* never answer Hello */
	bool hello_refused;      /* refuse the connection: an error with id 0, then close */
	const char *mode;        /* how to answer everything else */
	int writer_fd;           /* for "writer": a pipe's write end to hand out */
};

static void send_pipe_with(struct fake_conn *c, uint64_t id, const char *const *texts,
			   unsigned n)
{
	int fds[GW_FRAME_MAX_FDS];

	for (unsigned i = 0; i < n; i++) {
		int p[2];

		GW_ASSERT(pipe2(p, O_CLOEXEC) == 0);
		GW_ASSERT(write(p[1], texts[i], strlen(texts[i])) == (ssize_t)strlen(texts[i]));
		close(p[1]);
		fds[i] = p[0];
	}
	fake_reply(c, id, "{\"fds\": \"sent\"}", fds, n);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static enum fake_action handler(struct fake_conn *c, const struct gw_message *req, int *fds,
				unsigned nfds, void *userdata)
{
	struct script *sc = userdata;
	const char *mode = sc->mode ? sc->mode : "ok";

	if (fake_is(req, GW_METHOD_HELLO)) {
		if (sc->hello_silent)
			return FAKE_CONTINUE;
		if (sc->hello_refused) {
			fake_error(c, 0, GW_ERROR_LIMIT,
				   "too many clients for uid 1000 (--max-clients-per-uid 4)", 0);
			return FAKE_CLOSE;
		}
		if (sc->hello_mismatch) {
			fake_error(c, req->id, GW_ERROR_PROTOCOL_VERSION,
				   "protocol version mismatch (client 1, server 2)", 0);
			return FAKE_CLOSE;
		}
		fake_hello(c, req, sc->hello_version ? sc->hello_version : GW_PROTO_VERSION);
		return FAKE_CONTINUE;
	}
	if (strcmp(mode, "ok") == 0) {
		cJSON *result = cJSON_CreateObject();
		char *text;

		cJSON_AddNumberToObject(result, "answer", 42);
		cJSON_AddNumberToObject(result, "id", (double)req->id);
		cJSON_AddItemToObject(result, "params", cJSON_Duplicate(req->body, 1));
		text = cJSON_PrintUnformatted(result);
		fake_reply(c, req->id, text, NULL, 0);
		free(text);
		cJSON_Delete(result);
	} else if (strcmp(mode, "cuda_error") == 0) {
		fake_error(c, req->id, GW_ERROR_CUDA,
			   "cuCheckpointProcessLock(pid 123): CUDA_ERROR_ILLEGAL_STATE (401): "
			   "operation not permitted", 401);
	} else if (strcmp(mode, "wrong_id") == 0) {
		fake_reply(c, req->id + 7, "{}", NULL, 0);
	} else if (strcmp(mode, "request") == 0) {
		char *text = gw_request_encode(req->id, "gpuwarm.Surprise", NULL, 0);

		fake_send_payload(c, text);
		free(text);
	} else if (strcmp(mode, "close") == 0) {
		return FAKE_CLOSE;
	} else if (strcmp(mode, "garbage") == 0) {
		fake_send_payload(c, "this is not json");
	} else if (strcmp(mode, "fds") == 0) {
		static const char *const texts[] = { "fd-one", "fd-two" };

		send_pipe_with(c, req->id, texts, 2);
	} else if (strcmp(mode, "writer") == 0) {
		fake_reply(c, req->id, "{}", &sc->writer_fd, 1);
	} else if (strcmp(mode, "many_writers") == 0) {
		int w[3] = { sc->writer_fd, sc->writer_fd, sc->writer_fd };

		fake_reply(c, req->id, "{}", w, 3);
	} else if (strcmp(mode, "read_fds") == 0) {
		/* echo what the client's fds hold */
		cJSON *result = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(result, "read");
		char *text;

		for (unsigned i = 0; i < nfds; i++) {
			char buf[64] = "";
			ssize_t n = read(fds[i], buf, sizeof(buf) - 1);

			buf[n > 0 ? n : 0] = '\0';
			cJSON_AddItemToArray(arr, cJSON_CreateString(buf));
		}
		text = cJSON_PrintUnformatted(result);
		fake_reply(c, req->id, text, NULL, 0);
		free(text);
		cJSON_Delete(result);
	}
	/* "silent": no answer */
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	return FAKE_CONTINUE;
}

static struct fake_server *start(struct script *sc)
{
	return fake_server_start(handler, sc);
}

static struct gw_client *connect_ok(struct fake_server *s)
{
	struct gw_client_error err;
	struct gw_client *c = NULL;
	int r = gw_client_connect(fake_server_path(s), "test-client", 5000, &c, &err);

	if (r < 0)
		GW_FAIL("connect: %d (%s)", r, err.message);
	GW_ASSERT(c);
	return c;
}

static long elapsed_ms(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

static char tmpdir[64];

static const char *temp_path(const char *name)
{
	static char path[96];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/gw-client-test-XXXXXX");
	GW_ASSERT(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	return path;
}

GW_TEST(client_connect_missing_socket_is_enoent)
{
	struct gw_client_error err;
	struct gw_client *c = (struct gw_client *)0x1;
	const char *path = temp_path("absent.sock");

	GW_ASSERT_INT_EQ(gw_client_connect(path, "t", 1000, &c, &err), -ENOENT);
	GW_ASSERT(c == (struct gw_client *)0x1); /* untouched on failure */
	GW_ASSERT_STR_EQ(err.name, "");
	GW_ASSERT_STR_CONTAINS(err.message, path);
	rmdir(tmpdir);
}

GW_TEST(client_connect_without_listener_is_refused)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct gw_client_error err;
	struct gw_client *c = NULL;
	const char *path = temp_path("dead.sock");
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	GW_ASSERT(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0); /* no listen() */
	GW_ASSERT_INT_EQ(gw_client_connect(path, "t", 1000, &c, &err), -ECONNREFUSED);
	GW_ASSERT(c == NULL);
	close(fd);
	unlink(path);
	rmdir(tmpdir);
}

GW_TEST(client_connect_uses_env_socket_and_says_hello)
{
	struct script sc = { 0 };
	struct fake_server *s = start(&sc);
	struct gw_client_error err;
	struct gw_client *c = NULL;
	char *hello;
	cJSON *params;

	GW_ASSERT(setenv(GW_SOCKET_ENV, fake_server_path(s), 1) == 0);
	GW_ASSERT_INT_EQ(gw_client_connect(NULL, "unit-test 9.9", 5000, &c, &err), 0);
	GW_ASSERT_STR_EQ(gw_client_server_version(c), "gpu-warmd 0.1.0");
	GW_ASSERT(gw_client_fd(c) >= 0);
	GW_ASSERT(fcntl(gw_client_fd(c), F_GETFD) & FD_CLOEXEC);
	hello = fake_server_last_params(s, GW_METHOD_HELLO);
	params = cJSON_Parse(hello);
	GW_ASSERT(params);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(params, "version")->valueint, GW_PROTO_VERSION);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(params, "client")->valuestring, "unit-test 9.9");
	cJSON_Delete(params);
	free(hello);
	gw_client_close(c);
	gw_client_close(NULL);
	fake_server_stop(s);
}

GW_TEST(client_version_mismatch_error_is_eproto_with_daemon_message)
{
	struct script sc = { .hello_mismatch = true };
	struct fake_server *s = start(&sc);
	struct gw_client_error err;
	struct gw_client *c = NULL;

	GW_ASSERT_INT_EQ(gw_client_connect(fake_server_path(s), "t", 5000, &c, &err), -EPROTO);
	GW_ASSERT(c == NULL);
	GW_ASSERT_STR_EQ(err.name, GW_ERROR_PROTOCOL_VERSION);
	GW_ASSERT_STR_EQ(err.message, "protocol version mismatch (client 1, server 2)");
	fake_server_stop(s);
}

/* A daemon that refuses the connection (a limit) sends one error with id 0 and closes: connect
 * fails with that error's name and message, not with a transport error. */
GW_TEST(client_refused_connection_reports_the_daemons_error)
{
	struct script sc = { .hello_refused = true };
	struct fake_server *s = start(&sc);
	struct gw_client_error err;
	struct gw_client *c = NULL;

	GW_ASSERT_INT_EQ(gw_client_connect(fake_server_path(s), "t", 5000, &c, &err), -EREMOTEIO);
	GW_ASSERT(c == NULL);
	GW_ASSERT_STR_EQ(err.name, GW_ERROR_LIMIT);
	GW_ASSERT_STR_EQ(err.message, "too many clients for uid 1000 (--max-clients-per-uid 4)");
	fake_server_stop(s);
}

GW_TEST(client_version_mismatch_in_hello_result_is_eproto)
{
	struct script sc = { .hello_version = 7 };
	struct fake_server *s = start(&sc);
	struct gw_client_error err;
	struct gw_client *c = NULL;

	GW_ASSERT_INT_EQ(gw_client_connect(fake_server_path(s), "t", 5000, &c, &err), -EPROTO);
	GW_ASSERT_STR_CONTAINS(err.message, "protocol version mismatch (client 1, server 7)");
	fake_server_stop(s);
}

GW_TEST(client_call_returns_result_and_ids_increase)
{
	struct script sc = { .mode = "ok" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	cJSON *params = cJSON_CreateObject(), *result = NULL;
	double last_id = 0;

	cJSON_AddNumberToObject(params, "pid", 123);
	for (int i = 0; i < 3; i++) {
		GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, params, NULL, 0, 5000, &result,
						NULL, NULL, &err), 0);
		GW_ASSERT_INT_EQ(cJSON_GetObjectItem(result, "answer")->valueint, 42);
		GW_ASSERT_INT_EQ(cJSON_GetObjectItem(cJSON_GetObjectItem(result, "params"),
						     "pid")->valueint, 123);
		GW_ASSERT(cJSON_GetObjectItem(result, "id")->valuedouble > last_id);
		last_id = cJSON_GetObjectItem(result, "id")->valuedouble;
		cJSON_Delete(result);
	}
	/* NULL params and NULL ret_result are fine */
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), 0);
	GW_ASSERT_INT_EQ(fake_server_count(s, GW_METHOD_STATUS), 4);
	cJSON_Delete(params);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_error_reply_is_eremoteio_with_name_message_cuda_error)
{
	struct script sc = { .mode = "cuda_error" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	cJSON *result = (cJSON *)0x1;

	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_PROCESS_LOCK, NULL, NULL, 0, 5000, &result,
					NULL, NULL, &err), -EREMOTEIO);
	GW_ASSERT(result == (cJSON *)0x1);
	GW_ASSERT_STR_EQ(err.name, GW_ERROR_CUDA);
	GW_ASSERT_STR_CONTAINS(err.message, "CUDA_ERROR_ILLEGAL_STATE (401)");
	GW_ASSERT_INT_EQ(err.cuda_error, 401);
	/* an error reply leaves the connection usable */
	sc.mode = "ok";
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), 0);
	GW_ASSERT_INT_EQ(err.cuda_error, 0);
	GW_ASSERT_STR_EQ(err.name, "");
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_reply_with_wrong_id_is_eproto_then_unusable)
{
	struct script sc = { .mode = "wrong_id" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;

	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), -EPROTO);
	GW_ASSERT_STR_CONTAINS(err.message, "does not match");
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), -ENOTCONN);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_request_instead_of_reply_is_eproto)
{
	struct script sc = { .mode = "request" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;

	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), -EPROTO);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_garbage_reply_is_eproto)
{
	struct script sc = { .mode = "garbage" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;

	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), -EPROTO);
	GW_ASSERT_STR_CONTAINS(err.message, "malformed");
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_silent_daemon_times_out)
{
	struct script sc = { .mode = "silent" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	struct timespec t0;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 300, NULL, NULL, NULL,
					&err), -ETIMEDOUT);
	ms = elapsed_ms(&t0);
	GW_ASSERT(ms >= 290 && ms < 5000);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_silent_hello_times_out)
{
	struct script sc = { .hello_silent = true };
	struct fake_server *s = start(&sc);
	struct gw_client_error err;
	struct gw_client *c = NULL;
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	GW_ASSERT_INT_EQ(gw_client_connect(fake_server_path(s), "t", 300, &c, &err), -ETIMEDOUT);
	GW_ASSERT(elapsed_ms(&t0) < 5000);
	GW_ASSERT(c == NULL);
	fake_server_stop(s);
}

GW_TEST(client_daemon_going_away_is_econnreset_without_sigpipe)
{
	struct script sc = { .mode = "close" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	int r;

	signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill this test */
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), -ECONNRESET);
	gw_client_close(c);
	/* and sending into a closed connection */
	c = connect_ok(s);
	usleep(1000);
	fake_server_stop(s);
	r = gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL, &err);
	GW_ASSERT(r == -EPIPE || r == -ECONNRESET);
	gw_client_close(c);
}

GW_TEST(client_fds_in_reply_are_passed_out)
{
	struct script sc = { .mode = "fds" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	int fds[4] = { -1, -1, -1, -1 };
	unsigned nfds = 4;
	char buf[16];
	cJSON *result = NULL;

	GW_ASSERT_INT_EQ(gw_client_call(c, "gpuwarm.Fds", NULL, NULL, 0, 5000, &result, fds, &nfds,
					&err), 0);
	GW_ASSERT_INT_EQ(nfds, 2);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(result, "fds")->valuestring, "sent");
	GW_ASSERT(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
	memset(buf, 0, sizeof(buf));
	GW_ASSERT_INT_EQ(read(fds[0], buf, sizeof(buf) - 1), 6);
	GW_ASSERT_STR_EQ(buf, "fd-one");
	memset(buf, 0, sizeof(buf));
	GW_ASSERT_INT_EQ(read(fds[1], buf, sizeof(buf) - 1), 6);
	GW_ASSERT_STR_EQ(buf, "fd-two");
	close(fds[0]);
	close(fds[1]);
	cJSON_Delete(result);
	gw_client_close(c);
	fake_server_stop(s);
}

/* The reply's fd is the write end of a pipe; once every copy is closed the read end sees EOF. */
static void assert_writer_closed(int read_end)
{
	struct pollfd p = { .fd = read_end, .events = POLLIN };
	char ch;

	GW_ASSERT_INT_EQ(poll(&p, 1, 2000), 1);
	GW_ASSERT_INT_EQ(read(read_end, &ch, 1), 0);
}

GW_TEST(client_unwanted_fds_are_closed)
{
	struct script sc = { .mode = "writer" };
	struct fake_server *s;
	struct gw_client *c;
	struct gw_client_error err;
	int p[2];

	GW_ASSERT(pipe2(p, O_CLOEXEC) == 0);
	sc.writer_fd = p[1];
	s = start(&sc);
	c = connect_ok(s);
	GW_ASSERT_INT_EQ(gw_client_call(c, "gpuwarm.Fds", NULL, NULL, 0, 5000, NULL, NULL, NULL,
					&err), 0);
	close(p[1]); /* ours; the client's copy must be gone already */
	assert_writer_closed(p[0]);
	close(p[0]);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_too_many_fds_for_the_caller_is_eproto_and_closes_them)
{
	struct script sc = { .mode = "many_writers" };
	struct fake_server *s;
	struct gw_client *c;
	struct gw_client_error err;
	int fds[1] = { -1 };
	unsigned nfds = 1;
	int p[2];

	GW_ASSERT(pipe2(p, O_CLOEXEC) == 0);
	sc.writer_fd = p[1];
	s = start(&sc);
	c = connect_ok(s);
	GW_ASSERT_INT_EQ(gw_client_call(c, "gpuwarm.Fds", NULL, NULL, 0, 5000, NULL, fds, &nfds,
					&err), -EPROTO);
	GW_ASSERT_STR_CONTAINS(err.message, "3 fds");
	GW_ASSERT_INT_EQ(nfds, 1); /* untouched */
	GW_ASSERT_INT_EQ(fds[0], -1);
	close(p[1]);
	assert_writer_closed(p[0]); /* all three copies were closed */
	close(p[0]);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_fds_are_sent_with_the_request)
{
	struct script sc = { .mode = "read_fds" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	cJSON *result = NULL, *read_arr;
	int a[2], b[2], fds[2];

	GW_ASSERT(pipe(a) == 0 && pipe(b) == 0);
	GW_ASSERT(write(a[1], "alpha", 5) == 5 && write(b[1], "beta", 4) == 4);
	fds[0] = a[0];
	fds[1] = b[0];
	GW_ASSERT_INT_EQ(gw_client_call(c, "gpuwarm.ReadFds", NULL, fds, 2, 5000, &result, NULL,
					NULL, &err), 0);
	read_arr = cJSON_GetObjectItem(result, "read");
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(read_arr), 2);
	GW_ASSERT_STR_EQ(cJSON_GetArrayItem(read_arr, 0)->valuestring, "alpha");
	GW_ASSERT_STR_EQ(cJSON_GetArrayItem(read_arr, 1)->valuestring, "beta");
	/* sending does not take our fds */
	GW_ASSERT(fcntl(a[0], F_GETFD) >= 0);
	cJSON_Delete(result);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST(client_bad_arguments_are_einval)
{
	struct script sc = { .mode = "ok" };
	struct fake_server *s = start(&sc);
	struct gw_client *c = connect_ok(s);
	struct gw_client_error err;
	cJSON *array = cJSON_CreateArray();
	int fds[GW_FRAME_MAX_FDS + 1] = { 0 };

	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, array, NULL, 0, 5000, NULL, NULL, NULL,
					&err), -EINVAL);
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, fds, GW_FRAME_MAX_FDS + 1, 5000,
					NULL, NULL, NULL, &err), -EINVAL);
	GW_ASSERT_INT_EQ(gw_client_call(NULL, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL,
					NULL, &err), -EINVAL);
	/* still usable: nothing was sent */
	GW_ASSERT_INT_EQ(gw_client_call(c, GW_METHOD_STATUS, NULL, NULL, 0, 5000, NULL, NULL, NULL,
					NULL), 0);
	cJSON_Delete(array);
	gw_client_close(c);
	fake_server_stop(s);
}

GW_TEST_MAIN()
