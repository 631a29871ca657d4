/* SPDX-License-Identifier: MIT */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "gw-framer.h"
#include "server.h"

#define GW_LISTEN_BACKLOG 128

/* Is somebody listening on path? */
static int socket_is_live(const struct sockaddr_un *addr)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), live;

	if (fd < 0)
		return 0;
	live = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0;
	close(fd);
	return live;
}

static int make_parent_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int bind_own(const char *path, mode_t mode, gid_t gid, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "socket path %s is longer than %zu bytes", path,
			 sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	r = make_parent_dir(path);
	if (r < 0) {
		snprintf(err, errlen, "cannot create the directory of %s: %s", path, strerror(-r));
		return r;
	}
	if (socket_is_live(&addr)) {
		snprintf(err, errlen,
			 "another daemon already listens on %s; stop it or pass --socket", path);
		return -EADDRINUSE;
	}
	(void)unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return r;
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    chmod(path, mode) < 0 || (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) ||
	    listen(fd, GW_LISTEN_BACKLOG) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

static int adopt_activated(char *err, size_t errlen)
{
	int fd = SD_LISTEN_FDS_START;

	if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
		snprintf(err, errlen, "the socket systemd passed is not a listening Unix stream "
			 "socket");
		return -EINVAL;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		snprintf(err, errlen, "fcntl on the socket systemd passed: %s", strerror(errno));
		return -errno;
	}
	return fd;
}

int gw_listener_open(const char *path, mode_t mode, gid_t gid, int *ret_activated,
		     char **ret_path, char *err, size_t errlen)
{
	int n = sd_listen_fds(1), fd;
	char *copy;

	if (n > 1) {
		snprintf(err, errlen, "systemd passed %d sockets; expected one", n);
		return -EINVAL;
	}
	if (n == 1) {
		fd = adopt_activated(err, errlen);
		if (fd >= 0) {
			*ret_activated = 1;
			*ret_path = NULL;
		}
		return fd;
	}
	fd = bind_own(path, mode, gid, err, errlen);
	if (fd < 0)
		return fd;
	copy = strdup(path);
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		(void)unlink(path);
		return -ENOMEM;
	}
	*ret_activated = 0;
	*ret_path = copy;
	return fd;
}

const char *gw_listener_admit(const struct gw_server_limits *limits,
			      const struct gw_admission_counts *counts, uid_t uid, char *text,
			      size_t len)
{
	const struct gw_server_limits *l = limits;
	unsigned users = counts->clients - counts->root_clients;
	unsigned user_cap = l->max_clients > l->root_reserve ? l->max_clients - l->root_reserve : 0;

	if (counts->clients >= l->max_clients) {
		snprintf(text, len, "gpu-warmd serves %u clients, its limit (--max-clients %u)",
			 counts->clients, l->max_clients);
		return GW_LIMIT_MAX_CLIENTS;
	}
	if (uid == 0)
		return NULL; /* root (CRIU's plugin) is exempt from the rest */
	if (users >= user_cap) {
		snprintf(text, len, "gpu-warmd serves %u non-root clients, its limit (--max-clients "
			 "%u less --root-reserve %u kept for root)", users, l->max_clients,
			 l->root_reserve);
		return GW_LIMIT_MAX_CLIENTS;
	}
	if (counts->uid_clients >= l->max_clients_per_uid) {
		snprintf(text, len, "uid %u has %u connections to gpu-warmd, its limit "
			 "(--max-clients-per-uid %u)", (unsigned)uid, l->max_clients_per_uid,
			 l->max_clients_per_uid);
		return GW_LIMIT_MAX_CLIENTS_PER_UID;
	}
	return NULL;
}

void gw_listener_refuse(int fd, const char *limit, const char *message)
{
	cJSON *extra = cJSON_CreateObject();
	struct gw_frame_out out = { 0 };
	char *payload;

	if (extra)
		cJSON_AddStringToObject(extra, "limit", limit);
	payload = gw_error_encode(0, GW_ERROR_LIMIT, message, extra);
	/* Non-blocking: a frame this small fits an empty socket buffer. */
	if (payload && gw_frame_out_init(&out, payload, strlen(payload), NULL, 0, false) == 0)
		(void)gw_frame_out_send(&out, fd);
	gw_frame_out_finish(&out);
	free(payload);
	cJSON_Delete(extra);
	close(fd);
}

int gw_listener_hello(const struct gw_message *msg, cJSON **ret_result,
		      const char **ret_error_name, char *text, size_t len)
{
	uint64_t version = 0;
	cJSON *result;

	*ret_error_name = GW_ERROR_INVALID_REQUEST;
	if (msg->nfds > 0) {
		snprintf(text, len, GW_METHOD_HELLO " carries no file descriptors");
		return -EBADMSG;
	}
	if (strcmp(msg->method, GW_METHOD_HELLO) != 0) {
		*ret_error_name = GW_ERROR_HELLO_REQUIRED;
		snprintf(text, len, "the first request must be " GW_METHOD_HELLO);
		return -EPROTO;
	}
	if (gw_json_get_u64(msg->body, "version", 0, UINT32_MAX, &version) < 0) {
		snprintf(text, len, GW_METHOD_HELLO " needs an integer \"version\"");
		return -EPROTO;
	}
	if (version != GW_PROTO_VERSION) {
		*ret_error_name = GW_ERROR_PROTOCOL_VERSION;
		snprintf(text, len, "protocol version mismatch (client %llu, server %d)",
			 (unsigned long long)version, GW_PROTO_VERSION);
		return -EPROTO;
	}
	result = cJSON_CreateObject();
	if (!result || !cJSON_AddNumberToObject(result, "version", GW_PROTO_VERSION) ||
	    !cJSON_AddStringToObject(result, "server", "gpu-warmd " GW_VERSION) ||
	    !cJSON_AddNumberToObject(result, "pid", getpid())) {
		cJSON_Delete(result);
		return -ENOMEM;
	}
	*ret_result = result;
	return 0;
}
