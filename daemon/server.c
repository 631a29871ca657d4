/* SPDX-License-Identifier: MIT */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "gw-framer.h"
#include "listener.h"
#include "log.h"

#define GW_ACCEPT_PAUSE_MS 1000 /* after EMFILE and friends: stop accepting this long */

struct gw_outframe {
	struct gw_outframe *next;
	struct gw_frame_out out; /* owns its fds */
};

struct gw_conn {
	struct gw_server *server;
	struct gw_conn *prev, *next;
	int fd;
	struct ucred peer;
	struct event *read_ev, *write_ev, *timer_ev;
	struct gw_framer *framer; /* frames in, with the fds each announces */
	/* Deadlines are absolute: bytes trickling in do not extend them. */
	double accepted_ms;    /* Hello must complete within handshake_timeout_ms of this */
	double frame_start_ms; /* the first byte of the frame being received; 0: none */
	double last_active_ms; /* the last request answered: the idle timeout counts from here */
	struct gw_outframe *out_head, *out_tail;
	size_t out_bytes;
	int hello_done;
	struct gw_request *pending; /* the outstanding request, if any */
	int closing;                /* close once the output is flushed */
	int dead;                   /* closed; freed when pending completes */
	int processing;             /* inside conn_process_input */
	int reaped;                 /* on the graveyard list */
	struct gw_conn *next_dead;
	void *data;                 /* the daemon's */
	/* our outgoing call, if any */
	uint64_t call_id, next_call_id;
	gw_call_done_fn call_done;
	void *call_data;
	struct event *call_timer;
};

struct gw_server {
	struct event_base *base;
	struct gw_server_limits limits;
	struct gw_server_callbacks cb;
	void *cb_data;
	int listen_fd;
	int activated;
	char *path; /* ours to unlink, NULL when activated */
	struct event *accept_ev;
	struct gw_conn *conns;
	unsigned nconns, nconns_root;
	/* Closed connections are freed only from here, a loop callback of its own, never while a
	 * caller up the stack may still hold the pointer. */
	struct gw_conn *graveyard;
	struct event *reap_ev;
	struct event *accept_resume_ev; /* accepting paused after running out of descriptors */
	unsigned accept_failures;       /* during the current pause episode */
};

static void conn_close(struct gw_conn *conn, const char *why);
static void conn_process_input(struct gw_conn *conn);
static void conn_arm_timer(struct gw_conn *conn);

/* Hand a closed connection to the loop to be freed once every caller has let go of it. */
static void conn_bury(struct gw_conn *conn)
{
	struct gw_server *server = conn->server;

	if (conn->reaped)
		return;
	conn->reaped = 1;
	conn->next_dead = server->graveyard;
	server->graveyard = conn;
	event_active(server->reap_ev, EV_TIMEOUT, 0);
}

/* ---- output ---- */

static int conn_flush(struct gw_conn *conn)
{
	while (conn->out_head) {
		struct gw_outframe *f = conn->out_head;
		ssize_t n = gw_frame_out_send(&f->out, conn->fd);

		if (n == -EAGAIN) {
			event_add(conn->write_ev, NULL);
			return 0;
		}
		if (n < 0)
			return (int)n;
		conn->out_bytes -= (size_t)n;
		if (!gw_frame_out_done(&f->out))
			continue;
		conn->out_head = f->next;
		if (!conn->out_head)
			conn->out_tail = NULL;
		gw_frame_out_finish(&f->out);
		free(f);
	}
	event_del(conn->write_ev);
	if (conn->closing)
		return -ECONNRESET;
	return 0;
}

/* Queue one frame; payload is consumed. fds (consumed) are sent with it. */
static int conn_queue(struct gw_conn *conn, char *payload, const int *fds, unsigned nfds)
{
	struct gw_outframe *f;

	if (!payload)
		goto fail;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto fail;
	if (gw_frame_out_init(&f->out, payload, strlen(payload), fds, nfds, true) < 0) {
		free(f);
		free(payload);
		conn_close(conn, "out of memory");
		return -ENOMEM;
	}
	free(payload);
	if (conn->out_tail)
		conn->out_tail->next = f;
	else
		conn->out_head = f;
	conn->out_tail = f;
	conn->out_bytes += f->out.len;
	if (conn->out_bytes > conn->server->limits.max_output_bytes) {
		conn_close(conn, "too much unread output");
		return -ENOBUFS;
	}
	if (conn_flush(conn) < 0) {
		conn_close(conn, conn->closing ? NULL : "write failed");
		return -EPIPE;
	}
	return 0;
fail:
	free(payload);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	conn_close(conn, "out of memory");
	return -ENOMEM;
}

static void send_error(struct gw_conn *conn, uint64_t id, const char *name, const char *message)
{
	conn_queue(conn, gw_error_encode(id, name, message, NULL), NULL, 0);
}

/* ---- requests ---- */

static void request_free(struct gw_request *req)
{
	for (unsigned i = 0; i < req->nfds; i++)
		if (req->fds[i] >= 0)
			close(req->fds[i]);
	gw_message_finish(&req->msg);
	free(req);
}

static void conn_free(struct gw_conn *conn)
{
	while (conn->out_head) {
		struct gw_outframe *f = conn->out_head;

		conn->out_head = f->next;
		gw_frame_out_finish(&f->out);
		free(f);
	}
	free(conn);
}

/* The reply for req is queued (or the connection is gone): forget req and read on. */
static void request_done(struct gw_request *req)
{
	struct gw_conn *conn = req->conn;

	conn->pending = NULL;
	request_free(req);
	if (conn->dead) {
		/* Not freed here: conn_process_input may be up the stack with this conn. */
		conn_bury(conn);
		return;
	}
	conn->last_active_ms = gw_now_ms();
	conn_arm_timer(conn);
	/* A handler that answered at once is inside conn_process_input's loop: it goes on. */
	if (!conn->processing)
		conn_process_input(conn);
}

void gw_request_reply(struct gw_request *req, cJSON *result)
{
	struct gw_conn *conn = req->conn;

	if (!conn->dead)
		conn_queue(conn, gw_reply_encode(req->id, result, 0), NULL, 0);
	cJSON_Delete(result);
	request_done(req);
}

void gw_request_fail(struct gw_request *req, const char *name, cJSON *extra, const char *fmt, ...)
{
	struct gw_conn *conn = req->conn;
	char message[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (!conn->dead)
		conn_queue(conn, gw_error_encode(req->id, name, message, extra), NULL, 0);
	cJSON_Delete(extra);
	request_done(req);
}

void gw_request_progress(struct gw_request *req, cJSON *progress)
{
	struct gw_conn *conn = req->conn;

	/* News only: when the client does not read them, the output limit closes it as usual. */
	if (progress && !conn->dead && !conn->closing)
		conn_queue(conn, gw_progress_encode(req->id, progress), NULL, 0);
	cJSON_Delete(progress);
}

static void call_finish(struct gw_conn *conn, const struct gw_message *msg, int *fds,
			unsigned nfds)
{
	gw_call_done_fn done = conn->call_done;
	void *data = conn->call_data;

	conn->call_done = NULL;
	conn->call_data = NULL;
	evtimer_del(conn->call_timer);
	done(data, msg, fds, nfds);
	if (!conn->dead)
		conn_arm_timer(conn);
}

static void on_call_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct gw_conn *conn = arg;

	(void)fd;
	(void)what;
	if (conn->call_done)
		call_finish(conn, NULL, NULL, 0);
}

int gw_conn_call(struct gw_conn *conn, const char *method, const cJSON *params, const int *fds,
		 unsigned nfds, unsigned timeout_ms, gw_call_done_fn done, void *data)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	int dup_fds[GW_FRAME_MAX_FDS];
	char *payload;
	unsigned i;

	if (conn->dead || conn->closing)
		return -ECONNRESET;
	if (conn->call_done)
		return -EBUSY;
	if (nfds > GW_FRAME_MAX_FDS)
		return -EINVAL;
	for (i = 0; i < nfds; i++) {
		dup_fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
		if (dup_fds[i] < 0) {
			int r = -errno;

			while (i--)
				close(dup_fds[i]);
			return r;
		}
	}
	conn->call_id = ++conn->next_call_id;
	payload = gw_request_encode(conn->call_id, method, params, nfds);
	conn->call_done = done;
	conn->call_data = data;
	evtimer_add(conn->call_timer, &tv);
	conn_arm_timer(conn);
	/* conn_queue closes the conn on failure, which ends the call through conn_close. */
	if (conn_queue(conn, payload, dup_fds, nfds) < 0)
		return 0;
	return 0;
}

void gw_conn_set_data(struct gw_conn *conn, void *data)
{
	conn->data = data;
}

void *gw_conn_get_data(const struct gw_conn *conn)
{
	return conn->data;
}

static void protocol_error(struct gw_conn *conn, uint64_t id, const char *message)
{
	send_error(conn, id, GW_ERROR_INVALID_REQUEST, message);
}

/* A message before the Hello: only the Hello itself. Returns < 0 when the connection must close. */
static int conn_handshake(struct gw_conn *conn, struct gw_message *msg)
{
	const char *error_name = NULL;
	cJSON *result = NULL;
	char text[160];
	int r = gw_listener_hello(msg, &result, &error_name, text, sizeof(text));

	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		send_error(conn, msg->id, error_name, text);
		return -EPROTO;
	}
	conn->hello_done = 1;
	conn_queue(conn, gw_reply_encode(msg->id, result, 0), NULL, 0);
	cJSON_Delete(result);
	if (!conn->dead) {
		conn->last_active_ms = gw_now_ms();
		conn_arm_timer(conn); /* from now on the idle timeout applies */
	}
	return 0;
}

/* One complete message (consumed) with its fds (consumed): check, hand over. Returns < 0 when
 * the connection must close. */
static int conn_handle_message(struct gw_conn *conn, struct gw_message *msg, int *fds,
			       unsigned nfds)
{
	struct gw_request *req;
	int r;

	if (msg->kind != GW_MESSAGE_REQUEST) {
		if (conn->call_done && msg->id == conn->call_id) {
			call_finish(conn, msg, fds, nfds);
			gw_message_finish(msg);
			return 0;
		}
		protocol_error(conn, msg->id, "expected a request");
		r = -EBADMSG;
		goto fail;
	}
	if (!conn->hello_done) {
		r = conn_handshake(conn, msg);
		goto fail;
	}
	req = calloc(1, sizeof(*req));
	if (!req) {
		r = -ENOMEM;
		goto fail;
	}
	req->conn = conn;
	req->id = msg->id;
	req->msg = *msg;
	req->peer = conn->peer;
	req->nfds = nfds;
	memcpy(req->fds, fds, nfds * sizeof(int));
	conn->pending = req;
	conn->server->cb.dispatch(conn->server->cb_data, req);
	return 0;
fail:
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	gw_message_finish(msg);
	return r;
}

static void conn_fail_input(struct gw_conn *conn, const char *why)
{
	conn->closing = 1;
	if (conn_flush(conn) < 0 || !conn->out_head)
		conn_close(conn, why);
}

/* The framer refused the stream (its fds are closed): tell the peer why, then close. */
static void conn_framing_error(struct gw_conn *conn)
{
	uint64_t id = 0;
	char text[160];

	snprintf(text, sizeof(text), "%s", gw_framer_error(conn->framer, &id));
	protocol_error(conn, id, text);
	if (!conn->dead)
		conn_fail_input(conn, text);
}

static void conn_process_input(struct gw_conn *conn)
{
	conn->processing = 1;
	while (!conn->pending && !conn->dead && !conn->closing) {
		int fds[GW_FRAME_MAX_FDS];
		unsigned nfds = 0;
		struct gw_message msg;
		int r = gw_framer_next(conn->framer, &msg, fds, &nfds);

		if (r < 0) {
			conn_framing_error(conn);
			break;
		}
		if (r == 0) {
			/* a half-received frame: its clock starts with its first byte */
			if (gw_framer_busy(conn->framer) && conn->frame_start_ms == 0)
				conn->frame_start_ms = gw_now_ms();
			break;
		}
		conn->frame_start_ms = 0;
		if (conn_handle_message(conn, &msg, fds, nfds) < 0) {
			if (!conn->dead)
				conn_fail_input(conn, "protocol error");
			break;
		}
		/* The first byte of the next frame may already be in: its clock starts now. */
		if (!conn->dead && gw_framer_buffered(conn->framer) > 0 && conn->frame_start_ms == 0)
			conn->frame_start_ms = gw_now_ms();
	}
	conn->processing = 0;
	if (conn->dead || conn->closing)
		return;
	if (!conn->pending && gw_framer_buffered(conn->framer) == 0)
		event_add(conn->read_ev, NULL);
	else
		event_del(conn->read_ev);
	conn_arm_timer(conn);
}

static void on_conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct gw_conn *conn = arg;
	ssize_t n;

	(void)fd;
	(void)what;
	n = gw_framer_fill(conn->framer);
	if (n == -EAGAIN)
		return;
	if (n == -EMSGSIZE || n == -EPROTO) {
		conn_framing_error(conn);
		return;
	}
	if (n <= 0) {
		/* (a failed read hands over no descriptors: the framer closed any) */
		conn_close(conn, n == 0 ? NULL : "read failed");
		return;
	}
	conn_process_input(conn);
}

static void on_conn_write(evutil_socket_t fd, short what, void *arg)
{
	struct gw_conn *conn = arg;

	(void)fd;
	(void)what;
	if (conn_flush(conn) < 0)
		conn_close(conn, conn->closing ? NULL : "write failed");
}

/* When the connection must be closed unless something completes first; 0: no limit now. */
static double conn_deadline(struct gw_conn *conn, const char **ret_why)
{
	const struct gw_server_limits *l = &conn->server->limits;

	if (!conn->hello_done) {
		*ret_why = "no hello in time";
		return conn->accepted_ms + l->handshake_timeout_ms;
	}
	if (conn->pending || conn->call_done)
		return 0; /* an operation or a call of ours is in flight: each has its own limit */
	if (conn->frame_start_ms > 0) {
		*ret_why = "frame not completed in time";
		return conn->frame_start_ms + l->frame_timeout_ms;
	}
	if (conn->server->cb.conn_pinned && conn->server->cb.conn_pinned(conn->server->cb_data, conn))
		return 0;
	*ret_why = "idle";
	return conn->last_active_ms + l->idle_timeout_ms;
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
	struct gw_conn *conn = arg;
	const char *why = NULL;
	double deadline = conn_deadline(conn, &why);

	(void)fd;
	(void)what;
	if (deadline > 0 && gw_now_ms() >= deadline) {
		conn_close(conn, why);
		return;
	}
	conn_arm_timer(conn);
}

static void conn_arm_timer(struct gw_conn *conn)
{
	const char *why = NULL;
	double deadline = conn_deadline(conn, &why), left;
	struct timeval tv;

	if (deadline <= 0) {
		event_del(conn->timer_ev);
		return;
	}
	left = deadline - gw_now_ms();
	if (left < 1)
		left = 1;
	tv.tv_sec = (time_t)(left / 1000);
	tv.tv_usec = (suseconds_t)((left - (double)tv.tv_sec * 1000) * 1000);
	event_add(conn->timer_ev, &tv);
}

static void reap_closed(struct gw_server *server)
{
	while (server->graveyard) {
		struct gw_conn *conn = server->graveyard;

		server->graveyard = conn->next_dead;
		conn_free(conn);
	}
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	reap_closed(arg);
}

static void conn_close(struct gw_conn *conn, const char *why)
{
	struct gw_server *server = conn->server;

	if (conn->dead)
		return;
	if (why)
		gw_debug("client pid %d uid %u: closing connection: %s", conn->peer.pid,
			 conn->peer.uid, why);
	conn->dead = 1;
	if (conn->call_done)
		call_finish(conn, NULL, NULL, 0);
	event_free(conn->call_timer);
	event_free(conn->read_ev);
	event_free(conn->write_ev);
	event_free(conn->timer_ev);
	gw_framer_destroy(conn->framer);
	conn->framer = NULL;
	close(conn->fd);
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		server->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	server->nconns--;
	server->nconns_root -= conn->peer.uid == 0;
	if (server->cb.conn_closed)
		server->cb.conn_closed(server->cb_data, conn);
	/* Callers up the stack may still look at conn: free it from the loop, not here. A
	 * pending request keeps it until the request is answered (request_done buries it). */
	if (!conn->pending)
		conn_bury(conn);
}

/* ---- accepting ---- */

static unsigned clients_of_uid(const struct gw_server *server, uid_t uid)
{
	unsigned n = 0;

	for (const struct gw_conn *c = server->conns; c; c = c->next)
		n += c->peer.uid == uid;
	return n;
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct gw_server *server = arg;

	(void)fd;
	(void)what;
	if (!server->accept_ev)
		return;
	if (server->accept_failures > 1)
		gw_notice("accepting connections again (%u more failed while paused)",
			  server->accept_failures - 1);
	server->accept_failures = 0;
	event_add(server->accept_ev, NULL);
}

/* Out of descriptors or memory: the pending connection stays in the backlog and the listening
 * socket stays readable, so stop watching it for a while instead of spinning; log once. */
static void pause_accepting(struct gw_server *server, int err)
{
	struct timeval tv = { GW_ACCEPT_PAUSE_MS / 1000, (GW_ACCEPT_PAUSE_MS % 1000) * 1000 };

	if (server->accept_failures++ == 0)
		gw_warn("cannot accept connections: %s; pausing for %d ms", strerror(err),
			GW_ACCEPT_PAUSE_MS);
	event_del(server->accept_ev);
	evtimer_add(server->accept_resume_ev, &tv);
}

static int conn_setup(struct gw_server *server, struct gw_conn *conn)
{
	if (gw_framer_create(conn->fd, GW_FRAME_MAX_PAYLOAD, &conn->framer) < 0)
		return -ENOMEM;
	conn->read_ev = event_new(server->base, conn->fd, EV_READ | EV_PERSIST, on_conn_read, conn);
	conn->write_ev = event_new(server->base, conn->fd, EV_WRITE | EV_PERSIST, on_conn_write,
				   conn);
	conn->timer_ev = evtimer_new(server->base, on_conn_timer, conn);
	conn->call_timer = evtimer_new(server->base, on_call_timeout, conn);
	if (conn->read_ev && conn->write_ev && conn->timer_ev && conn->call_timer)
		return 0;
	if (conn->call_timer)
		event_free(conn->call_timer);
	if (conn->read_ev)
		event_free(conn->read_ev);
	if (conn->write_ev)
		event_free(conn->write_ev);
	if (conn->timer_ev)
		event_free(conn->timer_ev);
	gw_framer_destroy(conn->framer);
	conn->framer = NULL;
	return -ENOMEM;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct gw_server *server = arg;

	(void)what;
	for (;;) {
		struct gw_admission_counts counts;
		struct gw_conn *conn;
		const char *limit;
		char text[256];
		socklen_t len;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				pause_accepting(server, errno);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				gw_warn("accept failed: %m, ignoring");
			return;
		}
		conn = calloc(1, sizeof(*conn));
		if (!conn) {
			close(fd);
			pause_accepting(server, ENOMEM);
			return;
		}
		conn->fd = fd;
		conn->server = server;
		len = sizeof(conn->peer);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &conn->peer, &len) < 0) {
			gw_warn("SO_PEERCRED failed: %m; refusing the client");
			free(conn);
			close(fd);
			continue;
		}
		counts.clients = server->nconns;
		counts.root_clients = server->nconns_root;
		counts.uid_clients = clients_of_uid(server, conn->peer.uid);
		limit = gw_listener_admit(&server->limits, &counts, conn->peer.uid, text,
					  sizeof(text));
		if (limit) {
			gw_warn("client pid %d uid %u refused: %s", conn->peer.pid, conn->peer.uid,
				text);
			gw_listener_refuse(fd, limit, text);
			free(conn);
			continue;
		}
		if (conn_setup(server, conn) < 0) {
			free(conn);
			close(fd);
			pause_accepting(server, ENOMEM);
			return;
		}
		conn->accepted_ms = conn->last_active_ms = gw_now_ms();
		conn->next = server->conns;
		if (server->conns)
			server->conns->prev = conn;
		server->conns = conn;
		server->nconns++;
		server->nconns_root += conn->peer.uid == 0;
		gw_debug("client pid %d uid %u connected", conn->peer.pid, conn->peer.uid);
		event_add(conn->read_ev, NULL);
		conn_arm_timer(conn);
	}
}

int gw_server_create(struct event_base *base, const struct gw_server_limits *limits,
		     const struct gw_server_callbacks *callbacks, void *data,
		     struct gw_server **ret_server)
{
	struct gw_server *server = calloc(1, sizeof(*server));

	if (!server)
		return -ENOMEM;
	server->base = base;
	server->limits = *limits;
	server->cb = *callbacks;
	server->cb_data = data;
	server->listen_fd = -1;
	server->reap_ev = event_new(base, -1, 0, on_reap, server);
	server->accept_resume_ev = evtimer_new(base, on_accept_resume, server);
	if (!server->reap_ev || !server->accept_resume_ev) {
		if (server->reap_ev)
			event_free(server->reap_ev);
		if (server->accept_resume_ev)
			event_free(server->accept_resume_ev);
		free(server);
		return -ENOMEM;
	}
	*ret_server = server;
	return 0;
}

void gw_server_destroy(struct gw_server *server)
{
	if (!server)
		return;
	gw_server_stop_listening(server);
	while (server->conns)
		conn_close(server->conns, NULL);
	reap_closed(server);
	event_free(server->reap_ev);
	event_free(server->accept_resume_ev);
	free(server);
}

int gw_server_listen(struct gw_server *server, const char *path, mode_t mode, gid_t gid,
		     int *ret_activated, char *err, size_t errlen)
{
	int fd = gw_listener_open(path, mode, gid, &server->activated, &server->path, err, errlen);

	if (fd < 0)
		return fd;
	server->listen_fd = fd;
	server->accept_ev = event_new(server->base, server->listen_fd, EV_READ | EV_PERSIST,
				      on_accept, server);
	if (!server->accept_ev || event_add(server->accept_ev, NULL) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*ret_activated = server->activated;
	return 0;
}

void gw_server_stop_listening(struct gw_server *server)
{
	evtimer_del(server->accept_resume_ev);
	if (server->accept_ev) {
		event_free(server->accept_ev);
		server->accept_ev = NULL;
	}
	if (server->listen_fd >= 0) {
		close(server->listen_fd);
		server->listen_fd = -1;
	}
	if (server->path) {
		(void)unlink(server->path);
		free(server->path);
		server->path = NULL;
	}
}

const char *gw_server_socket_path(const struct gw_server *server)
{
	return server->path;
}

unsigned gw_server_client_count(const struct gw_server *server)
{
	return server->nconns;
}
