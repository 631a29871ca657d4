/* SPDX-License-Identifier: MIT */
/*
 * A scripted stand-in for gpu-warmd, for testing libgpuwarm and warmctl without the daemon: a
 * thread that listens on a Unix socket in a private temp dir, reads framed requests with proto/
 * and hands each to a handler that answers as the test wants.
 */
#ifndef FAKE_SERVER_H
#define FAKE_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "gw-proto.h"

struct fake_conn;
struct fake_server;

enum fake_action {
	FAKE_CONTINUE,  /* keep reading requests */
	FAKE_CLOSE,     /* close this connection */
};

/* fds: those that came with the request; the handler owns (closes) them. */
typedef enum fake_action (*fake_handler_fn)(struct fake_conn *conn, const struct gw_message *req,
					    int *fds, unsigned nfds, void *userdata);

/* Start listening; the path lives in a fresh mkdtemp() dir. Aborts the test on failure. */
struct fake_server *fake_server_start(fake_handler_fn fn, void *userdata);
const char *fake_server_path(const struct fake_server *s);
/* Stop the thread, close everything, remove the socket and its dir. NULL is a no-op. */
void fake_server_stop(struct fake_server *s);
/* Number of requests seen with this method, and a copy of the params of the last (caller
 * frees; NULL if none). */
unsigned fake_server_count(struct fake_server *s, const char *method);
char *fake_server_last_params(struct fake_server *s, const char *method);

/* Answers. */
void fake_reply(struct fake_conn *c, uint64_t id, const char *result_json, const int *fds,
		unsigned nfds);
void fake_error(struct fake_conn *c, uint64_t id, const char *name, const char *message,
		int cuda_error);
void fake_send_payload(struct fake_conn *c, const char *payload);
/* The usual hello answer with the given protocol version. */
void fake_hello(struct fake_conn *c, const struct gw_message *req, unsigned version);
bool fake_is(const struct gw_message *req, const char *method);

#endif
