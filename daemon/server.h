/* SPDX-License-Identifier: MIT */
/*
 * The socket side of the daemon: connections on the listening socket (listener.c adopts or
 * binds it, admits clients by the limits and checks the Hello), frames in and out through
 * proto's framer (gw-framer.h), the timeouts (handshake, frame, idle), the output limit, and
 * request/reply plumbing. Everything here runs on the event loop thread (worker.h). What a
 * request means is handlers.c's job.
 *
 * A connection handles one request at a time: while a request is outstanding (a handler may
 * answer later, from a worker's completion) nothing more is read from it.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "gw-proto.h"

struct gw_server;
struct gw_conn;

/*
 * Every deadline is absolute: the handshake's counts from the accept, a frame's from its first
 * byte, the idle time from the last answered request; bytes trickling in extend none of them.
 * Root is exempt from max_clients_per_uid, and root_reserve of max_clients are root's alone, so
 * CRIU's plugin always gets in. A refused client gets a gpuwarm.Error.LimitReached frame whose
 * "limit" member names the limit, then the close.
 */
struct gw_server_limits {
	unsigned max_clients;
	unsigned max_clients_per_uid;
	unsigned root_reserve;
	unsigned handshake_timeout_ms; /* Hello must arrive within this */
	unsigned frame_timeout_ms;     /* a started frame must complete within this */
	unsigned idle_timeout_ms;      /* no request for this long: closed (unless pinned) */
	size_t max_output_bytes;       /* unread replies queued beyond this: closed */
};

struct gw_request {
	struct gw_conn *conn;
	uint64_t id;
	struct gw_message msg;   /* msg.method, msg.body = params */
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;
	struct ucred peer;
};

struct gw_server_callbacks {
	/* A parsed request after the handshake. Must eventually call gw_request_reply or _fail. */
	void (*dispatch)(void *data, struct gw_request *req);
	/* A connection is gone (its leases end). */
	void (*conn_closed)(void *data, struct gw_conn *conn);
	/* True when the connection must not be closed for idleness (it holds a lease). */
	int (*conn_pinned)(void *data, struct gw_conn *conn);
};

int gw_server_create(struct event_base *base, const struct gw_server_limits *limits,
		     const struct gw_server_callbacks *callbacks, void *data,
		     struct gw_server **ret_server);
void gw_server_destroy(struct gw_server *server);

/*
 * Listen: adopt a socket passed by systemd (sd_listen_fds) if there is one, else bind path
 * (creating its directory, replacing a stale socket but never a live one) with the given mode and
 * group (gid -1: unchanged). *ret_activated says which.
 */
int gw_server_listen(struct gw_server *server, const char *path, mode_t mode, gid_t gid,
		     int *ret_activated, char *err, size_t errlen);
/* Stop accepting; existing connections go on. */
void gw_server_stop_listening(struct gw_server *server);
const char *gw_server_socket_path(const struct gw_server *server);
unsigned gw_server_client_count(const struct gw_server *server);

/* Answer a request; result is consumed (NULL: {}). Frees req and resumes reading. */
void gw_request_reply(struct gw_request *req, cJSON *result);
/* Answer with an error; extra (consumed, may be NULL) adds members to the error object. */
__attribute__((format(printf, 4, 5))) void gw_request_fail(struct gw_request *req, const char *name,
							   cJSON *extra, const char *fmt, ...);

/* A progress message for req, which stays pending (progress is consumed). */
void gw_request_progress(struct gw_request *req, cJSON *progress);

/* The daemon's own pointer for a connection (e.g. "this is pid N's agent"). */
void gw_conn_set_data(struct gw_conn *conn, void *data);
void *gw_conn_get_data(const struct gw_conn *conn);

/*
 * Send a request to the peer (the agent channel: the daemon asks, the app's agent answers).
 * One outgoing call per connection at a time (-EBUSY). params is not consumed; fds are sent and
 * then closed. done() runs exactly once on the loop thread: with the parsed reply or error
 * message (msg->kind tells; fds/nfds the descriptors that came with it, which done() owns), or
 * with msg == NULL when the connection closed first or no answer came in timeout_ms.
 */
typedef void (*gw_call_done_fn)(void *data, const struct gw_message *msg, int *fds,
				unsigned nfds);
int gw_conn_call(struct gw_conn *conn, const char *method, const cJSON *params, const int *fds,
		 unsigned nfds, unsigned timeout_ms, gw_call_done_fn done, void *data);

#endif
