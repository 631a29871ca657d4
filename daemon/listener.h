/* SPDX-License-Identifier: MIT */
/*
 * The way in to the daemon: its listening socket (the one systemd passes, or one of our own),
 * whether a new client fits the connection limits (and telling a refused one why), and the
 * Hello handshake. server.c runs the connections.
 */
#ifndef GW_LISTENER_H
#define GW_LISTENER_H

#include <sys/types.h>

#include "gw-proto.h"

struct gw_server_limits;

/*
 * A listening, non-blocking, close-on-exec Unix stream socket: the one systemd passed
 * (sd_listen_fds; *ret_path NULL, *ret_activated 1), else path bound by us (creating its
 * directory, replacing a stale socket but never a live one) with mode and group (gid -1:
 * unchanged); *ret_path is then a malloc'd copy of path to unlink at the end. Returns the fd or
 * a negative errno with a sentence in err.
 */
int gw_listener_open(const char *path, mode_t mode, gid_t gid, int *ret_activated,
		     char **ret_path, char *err, size_t errlen);

/* The connections a server has now: all, root's, and those of the new client's uid. */
struct gw_admission_counts {
	unsigned clients, root_clients, uid_clients;
};

/* May a client of uid connect? NULL, or the GW_LIMIT_* it hits with a sentence in text. Root is
 * exempt from max_clients_per_uid and root_reserve of max_clients are root's alone. */
const char *gw_listener_admit(const struct gw_server_limits *limits,
			      const struct gw_admission_counts *counts, uid_t uid, char *text,
			      size_t len);

/* Send a refused client (fd, non-blocking, closed here) a gpuwarm.Error.LimitReached frame
 * naming limit, with message. */
void gw_listener_refuse(int fd, const char *limit, const char *message);

/*
 * The answer to a connection's first message, which must be a gpuwarm.Hello of our protocol
 * version carrying no fds: 0 with *ret_result (the reply's result, caller deletes it), or
 * -EPROTO/-EBADMSG with *ret_error_name and a sentence in text (the error to answer before
 * closing), or -ENOMEM.
 */
int gw_listener_hello(const struct gw_message *msg, cJSON **ret_result,
		      const char **ret_error_name, char *text, size_t len);

#endif
