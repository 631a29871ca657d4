/* SPDX-License-Identifier: MIT */
#include "fake-server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gw-framer.h"
#include "gw-test.h"

#define FAKE_MAX_RECORDS 64

struct record {
	char method[GW_METHOD_MAX];
	char *params;
};

struct fake_conn {
	int fd;
	struct fake_server *server;
};

struct fake_server {
	char dir[64];
	char path[96];
	int listen_fd;
	int stop_pipe[2];
	pthread_t thread;
	fake_handler_fn fn;
	void *userdata;
	pthread_mutex_t lock;
	struct record records[FAKE_MAX_RECORDS];
	unsigned nrecords;
};

static void record(struct fake_server *s, const struct gw_message *m)
{
	pthread_mutex_lock(&s->lock);
	if (s->nrecords < FAKE_MAX_RECORDS) {
		struct record *r = &s->records[s->nrecords++];

		snprintf(r->method, sizeof(r->method), "%s", m->method);
		r->params = cJSON_PrintUnformatted(m->body);
	}
	pthread_mutex_unlock(&s->lock);
}

unsigned fake_server_count(struct fake_server *s, const char *method)
{
	unsigned n = 0;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nrecords; i++)
		n += strcmp(s->records[i].method, method) == 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}

char *fake_server_last_params(struct fake_server *s, const char *method)
{
	char *copy = NULL;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = s->nrecords; i-- > 0;) {
		if (strcmp(s->records[i].method, method) == 0) {
			copy = strdup(s->records[i].params ? s->records[i].params : "null");
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return copy;
}

bool fake_is(const struct gw_message *req, const char *method)
{
	return req->kind == GW_MESSAGE_REQUEST && strcmp(req->method, method) == 0;
}

void fake_send_payload(struct fake_conn *c, const char *payload)
{
	/* the peer may be gone already; that is its business */
	(void)gw_send_frame(c->fd, payload, strlen(payload), NULL, 0);
}

void fake_reply(struct fake_conn *c, uint64_t id, const char *result_json, const int *fds,
		unsigned nfds)
{
	cJSON *result = cJSON_Parse(result_json ? result_json : "{}");
	char *text;

	GW_ASSERT(result);
	text = gw_reply_encode(id, result, nfds);
	GW_ASSERT(text);
	(void)gw_send_frame(c->fd, text, strlen(text), fds, nfds);
	free(text);
	cJSON_Delete(result);
}

void fake_error(struct fake_conn *c, uint64_t id, const char *name, const char *message,
		int cuda_error)
{
	cJSON *extra = cJSON_CreateObject();
	char *text;

	GW_ASSERT(extra);
	if (cuda_error)
		cJSON_AddNumberToObject(extra, "cuda_error", cuda_error);
	text = gw_error_encode(id, name, message, extra);
	GW_ASSERT(text);
	fake_send_payload(c, text);
	free(text);
	cJSON_Delete(extra);
}

void fake_hello(struct fake_conn *c, const struct gw_message *req, unsigned version)
{
	char result[160];

	snprintf(result, sizeof(result),
		 "{\"version\": %u, \"server\": \"gpu-warmd 0.1.0\", \"pid\": %d}", version,
		 (int)getpid());
	fake_reply(c, req->id, result, NULL, 0);
}

/* Hand every complete message read to the handler. Returns false when the connection ends. */
static bool handle_read(struct fake_server *s, struct fake_conn *conn, struct gw_framer *framer)
{
	for (;;) {
		int fds[GW_FRAME_MAX_FDS];
		unsigned nfds = 0;
		struct gw_message msg;
		int r = gw_framer_next(framer, &msg, fds, &nfds);
		bool close_it;

		if (r <= 0)
			return r == 0;
		record(s, &msg);
		close_it = s->fn(conn, &msg, fds, nfds, s->userdata) == FAKE_CLOSE;
		gw_message_finish(&msg);
		if (close_it)
			return false;
	}
}

/* Serve one connection until EOF, a handler's FAKE_CLOSE, or stop. */
static void serve(struct fake_server *s, int fd)
{
	struct fake_conn conn = { .fd = fd, .server = s };
	struct gw_framer *framer = NULL;

	if (gw_framer_create(fd, GW_FRAME_MAX_PAYLOAD, &framer) < 0) {
		close(fd);
		return;
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = s->stop_pipe[0], .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		n = gw_framer_fill(framer);
		if (n == -EAGAIN || n == -EINTR)
			continue;
		if (n <= 0 || !handle_read(s, &conn, framer))
			break;
	}
	gw_framer_destroy(framer);
	close(fd);
}

static void *server_thread(void *arg)
{
	struct fake_server *s = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = s->listen_fd, .events = POLLIN },
				       { .fd = s->stop_pipe[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			serve(s, fd);
	}
	return NULL;
}

struct fake_server *fake_server_start(fake_handler_fn fn, void *userdata)
{
	struct fake_server *s = calloc(1, sizeof(*s));
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	GW_ASSERT(s);
	snprintf(s->dir, sizeof(s->dir), "/tmp/gw-client-test-XXXXXX");
	GW_ASSERT(mkdtemp(s->dir));
	snprintf(s->path, sizeof(s->path), "%s/sock", s->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", s->path);
	s->fn = fn;
	s->userdata = userdata;
	pthread_mutex_init(&s->lock, NULL);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	GW_ASSERT(s->listen_fd >= 0);
	GW_ASSERT(bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	GW_ASSERT(listen(s->listen_fd, 8) == 0);
	GW_ASSERT(pipe2(s->stop_pipe, O_CLOEXEC) == 0);
	GW_ASSERT(pthread_create(&s->thread, NULL, server_thread, s) == 0);
	return s;
}

const char *fake_server_path(const struct fake_server *s)
{
	return s->path;
}

void fake_server_stop(struct fake_server *s)
{
	if (!s)
		return;
	GW_ASSERT(write(s->stop_pipe[1], "x", 1) == 1);
	pthread_join(s->thread, NULL);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	close(s->listen_fd);
	unlink(s->path);
	rmdir(s->dir);
	for (unsigned i = 0; i < s->nrecords; i++)
		free(s->records[i].params);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
