/* SPDX-License-Identifier: MIT */
/*
 * libgpuwarm: one blocking connection to gpu-warmd. The socket itself is non-blocking; every wait
 * is a poll() against a deadline, so a silent or stuck daemon costs at most the caller's timeout.
 * A transport or framing error leaves the byte stream in an unknown place, so it marks the
 * connection broken and later calls fail fast with -ENOTCONN.
 */
#include "gw-client.h"

#include "gw-framer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef GW_VERSION
#define GW_VERSION "0.0.0"
#endif

#define CLIENT_SERVER_MAX 256

struct gw_client {
	int fd;
	bool broken;
	uint64_t next_id;
	char *server;
	uint64_t server_pid;
	struct gw_framer *framer;
	bool got_message; /* a message was read on this connection */
	gw_client_progress_fn progress_fn;
	void *progress_data;
};

__attribute__((format(printf, 3, 4)))
static int fail(struct gw_client_error *err, int r, const char *fmt, ...)
{
	va_list ap;

	err->name[0] = '\0';
	err->cuda_error = 0;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return r;
}

/* strerror() is not thread-safe and this library runs inside other people's threads. */
struct errtext {
	char text[96];
};

static struct errtext errstr(int e)
{
	struct errtext t;
	const char *s = strerror_r(e, t.text, sizeof(t.text)); /* GNU: may return a static string */

	if (s != t.text)
		snprintf(t.text, sizeof(t.text), "%s", s);
	return t;
}

static void copy_string(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* timeout_ms <= 0: no deadline (-1). */
static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms > 0 ? now_ms() + timeout_ms : -1;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int timeout = -1, n;

		if (deadline >= 0) {
			int64_t left = deadline - now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			timeout = left > INT_MAX ? INT_MAX : (int)left;
		}
		n = poll(&p, 1, timeout);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n > 0)
			return 0; /* ready, or an error/hangup the next call reports */
	}
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static int mark_broken(struct gw_client *c, int r)
{
	c->broken = true;
	return r;
}

static int client_send(struct gw_client *c, const char *payload, const int *fds, unsigned nfds,
		       int64_t deadline, struct gw_client_error *err)
{
	size_t len = strlen(payload);
	struct gw_frame_out out;
	int timeout = -1, r;

	r = gw_frame_out_init(&out, payload, len, fds, nfds, false);
	if (r == -EMSGSIZE)
		return fail(err, r, "request of %zu bytes exceeds the frame limit", len);
	if (r < 0)
		return fail(err, r, "out of memory");
	if (deadline >= 0) {
		int64_t left = deadline - now_ms();

		timeout = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
	}
	r = gw_frame_out_flush(&out, c->fd, timeout);
	gw_frame_out_finish(&out);
	if (r == -ETIMEDOUT)
		return fail(err, r, "timed out sending the request");
	if (r == -EPIPE || r == -ECONNRESET)
		return fail(err, r, "the daemon closed the connection");
	if (r < 0)
		return fail(err, r, "sending the request: %s", errstr(-r).text);
	return 0;
}

/* Read until one whole message is parsed into *ret_msg, with the fds it announced in
 * ret_fds[0 .. *ret_nfds) (capacity GW_FRAME_MAX_FDS). */
static int client_read_message(struct gw_client *c, int64_t deadline, struct gw_message *ret_msg,
			       int *ret_fds, unsigned *ret_nfds, struct gw_client_error *err)
{
	for (;;) {
		ssize_t n;
		int r = gw_framer_next(c->framer, ret_msg, ret_fds, ret_nfds);

		if (r > 0)
			return 0;
		if (r == -ENOMEM)
			return fail(err, r, "out of memory");
		if (r < 0)
			return fail(err, -EPROTO, "malformed message from the daemon: %s",
				    gw_framer_error(c->framer, NULL));

		r = wait_fd(c->fd, POLLIN, deadline);
		if (r == -ETIMEDOUT)
			return fail(err, r, "no answer from the daemon in time");
		if (r < 0)
			return fail(err, r, "poll: %s", errstr(-r).text);

		n = gw_framer_fill(c->framer);
		if (n == -EAGAIN || n == -EINTR)
			continue;
		if (n == -EMSGSIZE || n == -EPROTO)
			return fail(err, -EPROTO, "the daemon sent fds wrongly: %s",
				    gw_framer_error(c->framer, NULL));
		if (n == 0 || n == -ECONNRESET || n == -EPIPE)
			return fail(err, -ECONNRESET, "the daemon closed the connection");
		if (n < 0)
			return fail(err, (int)n, "receiving: %s", errstr((int)-n).text);
	}
}

static void fill_remote_error(const struct gw_message *msg, struct gw_client_error *err)
{
	const cJSON *cuda = cJSON_GetObjectItemCaseSensitive(msg->body, "cuda_error");
	const char *message = msg->error_message;

	copy_string(err->name, sizeof(err->name), msg->error_name);
	copy_string(err->message, sizeof(err->message),
		    message && *message ? message : "(the daemon gave no message)");
	err->cuda_error = 0;
	if (cJSON_IsNumber(cuda) && cuda->valuedouble >= INT_MIN && cuda->valuedouble <= INT_MAX)
		err->cuda_error = (int)cuda->valuedouble;
}

/* The first frame of the connection is an error with id 0: the daemon refused the connection
 * itself (a limit) and closed it. Its name and message are the answer. */
static int client_refused(struct gw_client *c, struct gw_message *msg, int *fds, unsigned nfds,
			  struct gw_client_error *err)
{
	c->got_message = true;
	fill_remote_error(msg, err);
	gw_message_finish(msg);
	close_fds(fds, nfds);
	mark_broken(c, -EREMOTEIO);
	return -EREMOTEIO;
}

/* Read until the answer to request id, handing its progress messages to the callback. */
static int client_await(struct gw_client *c, uint64_t id, int64_t deadline,
			struct gw_message *ret_msg, int *ret_fds, unsigned *ret_nfds,
			struct gw_client_error *err)
{
	for (;;) {
		int r = client_read_message(c, deadline, ret_msg, ret_fds, ret_nfds, err);

		if (r < 0)
			return r;
		if (ret_msg->kind != GW_MESSAGE_PROGRESS || ret_msg->id != id)
			return 0;
		/* News of this request, which still runs. */
		if (c->progress_fn)
			c->progress_fn(c->progress_data, ret_msg->body);
		close_fds(ret_fds, *ret_nfds);
		gw_message_finish(ret_msg);
	}
}

/* Is msg an answer to request id? 0 or -EPROTO. */
static int check_answer(const struct gw_message *msg, uint64_t id, struct gw_client_error *err)
{
	if (msg->kind == GW_MESSAGE_REQUEST)
		return fail(err, -EPROTO, "the daemon sent a request (%s) instead of a reply",
			    msg->method);
	if (msg->id != id && !(msg->kind == GW_MESSAGE_ERROR && msg->error_name &&
			       strcmp(msg->error_name, GW_ERROR_PROTOCOL_VERSION) == 0))
		return fail(err, -EPROTO, "reply id %llu does not match request id %llu",
			    (unsigned long long)msg->id, (unsigned long long)id);
	return 0;
}

/*
 * Send one request and read its answer. Returns 0 with *ret_msg set (a reply or an error reply
 * with the request's id) and the reply's fds in fds[0..*ret_nfds) (capacity GW_FRAME_MAX_FDS).
 */
static int client_roundtrip(struct gw_client *c, const char *method, const cJSON *params,
			    const int *fds, unsigned nfds, int timeout_ms,
			    struct gw_message *ret_msg, int *ret_fds, unsigned *ret_nfds,
			    struct gw_client_error *err)
{
	int64_t deadline = deadline_after(timeout_ms);
	struct gw_message msg;
	uint64_t id;
	char *payload;
	int r;

	if (c->broken)
		return fail(err, -ENOTCONN, "the connection is unusable after an earlier error");
	if (!method || strlen(method) >= GW_METHOD_MAX)
		return fail(err, -EINVAL, "invalid method name");
	if (nfds > GW_FRAME_MAX_FDS || (nfds && !fds))
		return fail(err, -EINVAL, "too many fds for one request");
	if (params && !cJSON_IsObject(params))
		return fail(err, -EINVAL, "params must be a JSON object");

	id = c->next_id++;
	payload = gw_request_encode(id, method, params, nfds);
	if (!payload)
		return fail(err, -ENOMEM, "out of memory");
	r = client_send(c, payload, fds, nfds, deadline, err);
	free(payload);
	if (r < 0 && !c->got_message && (r == -EPIPE || r == -ECONNRESET)) {
		/* A daemon that refuses a connection (a limit) sends one error frame with id 0 and
		 * closes: the frame may be waiting for us even though our request could not go. */
		struct gw_client_error why = *err;

		if (client_read_message(c, now_ms() + 1000, &msg, ret_fds, ret_nfds, err) == 0) {
			if (msg.kind == GW_MESSAGE_ERROR && msg.id == 0)
				return client_refused(c, &msg, ret_fds, *ret_nfds, err);
			close_fds(ret_fds, *ret_nfds);
			gw_message_finish(&msg);
		}
		*err = why;
	}
	if (r < 0)
		return mark_broken(c, r);

	r = client_await(c, id, deadline, &msg, ret_fds, ret_nfds, err);
	if (r < 0)
		return mark_broken(c, r);
	if (!c->got_message && msg.kind == GW_MESSAGE_ERROR && msg.id == 0)
		return client_refused(c, &msg, ret_fds, *ret_nfds, err);
	c->got_message = true;
	r = check_answer(&msg, id, err);
	if (r < 0) {
		close_fds(ret_fds, *ret_nfds);
		gw_message_finish(&msg);
		return mark_broken(c, r);
	}
	*ret_msg = msg;
	return 0;
}

static int client_hello(struct gw_client *c, const char *client_name, int timeout_ms,
			struct gw_client_error *err)
{
	struct gw_message msg;
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds = 0;
	const char *server = NULL;
	uint64_t version = 0, pid = 0;
	cJSON *params;
	int r;

	params = cJSON_CreateObject();
	if (!params || !cJSON_AddNumberToObject(params, "version", GW_PROTO_VERSION) ||
	    !cJSON_AddStringToObject(params, "client", client_name)) {
		cJSON_Delete(params);
		return fail(err, -ENOMEM, "out of memory");
	}
	r = client_roundtrip(c, GW_METHOD_HELLO, params, NULL, 0, timeout_ms, &msg, fds, &nfds,
			     err);
	cJSON_Delete(params);
	if (r < 0)
		return r;
	close_fds(fds, nfds);

	if (msg.kind == GW_MESSAGE_ERROR) {
		fill_remote_error(&msg, err);
		r = msg.error_name && strcmp(msg.error_name, GW_ERROR_PROTOCOL_VERSION) == 0 ?
			    -EPROTO : -EREMOTEIO;
		goto out;
	}
	r = gw_json_get_u64(msg.body, "version", 0, UINT32_MAX, &version);
	if (r < 0) {
		r = fail(err, -EPROTO, "malformed hello reply: no protocol version");
		goto out;
	}
	if (version != GW_PROTO_VERSION) {
		r = fail(err, -EPROTO, "protocol version mismatch (client %d, server %llu)",
			 GW_PROTO_VERSION, (unsigned long long)version);
		goto out;
	}
	if (gw_json_get_string(msg.body, "server", CLIENT_SERVER_MAX, &server) < 0) {
		r = fail(err, -EPROTO, "malformed hello reply: no server string");
		goto out;
	}
	(void)gw_json_get_u64(msg.body, "pid", 1, INT_MAX, &pid);
	c->server = strdup(server);
	if (!c->server) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	c->server_pid = pid;
	r = 0;
out:
	gw_message_finish(&msg);
	return r;
}

static int client_open_socket(const char *path, int timeout_ms, struct gw_client_error *err)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000 };
	int fd, r;

	if (strlen(path) >= sizeof(addr.sun_path))
		return fail(err, -ENAMETOOLONG, "socket path too long: %s", path);
	memcpy(addr.sun_path, path, strlen(path) + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(err, -errno, "socket: %s", errstr(errno).text);
	/* A blocking connect waits (up to SO_SNDTIMEO) while the daemon's backlog is full. */
	if (timeout_ms > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	do {
		r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	} while (r < 0 && errno == EINTR);
	if (r < 0) {
		r = errno == EAGAIN ? -ETIMEDOUT : -errno;
		fail(err, r, "connect to %s: %s", path, errstr(-r).text);
		goto fail;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		r = fail(err, -errno, "fcntl: %s", errstr(errno).text);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

int gw_client_connect(const char *path, const char *client_name, int timeout_ms,
		      struct gw_client **ret_client, struct gw_client_error *err)
{
	struct gw_client_error dummy;
	struct gw_client *c;
	int64_t deadline = deadline_after(timeout_ms);
	int r, left;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	if (!ret_client)
		return fail(err, -EINVAL, "no place for the client");
	if (!path || !*path)
		path = getenv(GW_SOCKET_ENV);
	if (!path || !*path)
		path = GW_DEFAULT_SOCKET;
	if (!client_name || !*client_name)
		client_name = "libgpuwarm " GW_VERSION;

	c = calloc(1, sizeof(*c));
	if (!c)
		return fail(err, -ENOMEM, "out of memory");
	c->next_id = 1;

	r = client_open_socket(path, timeout_ms, err);
	if (r < 0)
		goto fail;
	c->fd = r;
	r = gw_framer_create(c->fd, GW_FRAME_MAX_PAYLOAD, &c->framer);
	if (r < 0) {
		r = fail(err, r, "out of memory");
		goto fail_fd;
	}

	left = 0;
	if (deadline >= 0) {
		int64_t rest = deadline - now_ms();

		if (rest <= 0) {
			r = fail(err, -ETIMEDOUT, "connect to %s: timed out", path);
			goto fail_fd;
		}
		left = (int)rest;
	}
	r = client_hello(c, client_name, left, err);
	if (r < 0)
		goto fail_fd;

	*ret_client = c;
	return 0;

fail_fd:
	gw_framer_destroy(c->framer);
	close(c->fd);
fail:
	free(c->server);
	free(c);
	return r;
}

void gw_client_close(struct gw_client *client)
{
	if (!client)
		return;
	gw_framer_destroy(client->framer);
	close(client->fd);
	free(client->server);
	free(client);
}

const char *gw_client_server_version(const struct gw_client *client)
{
	return client ? client->server : NULL;
}

int gw_client_fd(const struct gw_client *client)
{
	return client ? client->fd : -EBADF;
}

void gw_client_set_progress(struct gw_client *client, gw_client_progress_fn fn, void *data)
{
	if (!client)
		return;
	client->progress_fn = fn;
	client->progress_data = data;
}

int gw_client_send(struct gw_client *client, const char *method, const cJSON *params,
		   const int *fds, unsigned nfds, int timeout_ms, struct gw_client_error *err)
{
	struct gw_client_error dummy;
	char *payload;
	int r;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	if (!client || client->broken)
		return fail(err, -ENOTCONN, "the connection is unusable");
	if (!method || strlen(method) >= GW_METHOD_MAX || nfds > GW_FRAME_MAX_FDS ||
	    (nfds && !fds) || (params && !cJSON_IsObject(params)))
		return fail(err, -EINVAL, "invalid request");
	payload = gw_request_encode(client->next_id++, method, params, nfds);
	if (!payload)
		return fail(err, -ENOMEM, "out of memory");
	r = client_send(client, payload, fds, nfds, deadline_after(timeout_ms), err);
	free(payload);
	/* Its reply stays unread: no call may follow on this connection. */
	return mark_broken(client, r < 0 ? r : 0);
}

int gw_client_call(struct gw_client *client, const char *method, const cJSON *params,
		   const int *fds, unsigned nfds, int timeout_ms, cJSON **ret_result, int *ret_fds,
		   unsigned *ret_nfds, struct gw_client_error *err)
{
	struct gw_client_error dummy;
	struct gw_message msg;
	int got[GW_FRAME_MAX_FDS];
	unsigned ngot = 0;
	cJSON *result;
	int r;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	if (!client)
		return fail(err, -EINVAL, "no client");
	if (ret_fds && !ret_nfds)
		return fail(err, -EINVAL, "ret_fds needs ret_nfds");

	r = client_roundtrip(client, method, params, fds, nfds, timeout_ms, &msg, got, &ngot, err);
	if (r < 0)
		return r;

	if (msg.kind == GW_MESSAGE_ERROR) {
		fill_remote_error(&msg, err);
		r = -EREMOTEIO;
		goto fail;
	}
	if (ngot && (!ret_fds || ngot > *ret_nfds)) {
		if (ret_fds) {
			r = fail(err, -EPROTO, "the reply carried %u fds, room for %u", ngot,
				 *ret_nfds);
			goto fail;
		}
		close_fds(got, ngot); /* the caller wants none */
		ngot = 0;
	}
	result = NULL;
	if (ret_result) {
		result = cJSON_DetachItemViaPointer(msg.root, (cJSON *)msg.body);
		if (!result) {
			r = fail(err, -EPROTO, "malformed reply: no result");
			goto fail;
		}
	}
	gw_message_finish(&msg);
	if (ret_result)
		*ret_result = result;
	if (ret_fds) {
		memcpy(ret_fds, got, ngot * sizeof(int));
		*ret_nfds = ngot;
	} else if (ret_nfds) {
		*ret_nfds = 0;
	}
	return 0;

fail:
	close_fds(got, ngot);
	gw_message_finish(&msg);
	return r;
}
