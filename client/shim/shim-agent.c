/* SPDX-License-Identifier: MIT */
/*
 * The agent: a thread of the app that talks to gpu-warmd. It starts at the app's first CUDA
 * allocation (never earlier, never with GPUWARM_SHIM_DISABLE=1), connects, says AgentAttach
 * and then serves the daemon's gpuwarm.Agent.* requests on that connection; it sends AgentUpdate
 * (at most once a second) when the reported ranges change and ignores the replies.
 *
 * Allocations are converted only while the agent is attached. No daemon at the first
 * allocation: nothing is converted, and later allocations retry at most every 5 s. A connection
 * that drops after an attach: the app goes on untouched (converted ranges stay valid) and the
 * agent reconnects in the background, at once and then every 5 s.
 */
#include "shim-ops.h"
#include "shim-trim.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-framer.h"
#include "shim-driver.h"

#ifndef GW_VERSION
#define GW_VERSION "0.0.0"
#endif

#define CONNECT_TIMEOUT_MS 2000
#define ATTACH_REPLY_MS 5000
#define ATTACH_WAIT_MS 3000 /* an allocating thread waits at most this for the first attach */
#define RETRY_MS 5000
#define UPDATE_MIN_MS 1000
#define SEND_TIMEOUT_S 10

enum agent_state { AGENT_IDLE, AGENT_CONNECTING, AGENT_ATTACHED, AGENT_DOWN };

enum session_end {
	SESSION_UNREACHABLE, /* no daemon, or it did not take the attach in time */
	SESSION_REJECTED,    /* the daemon answered AgentAttach with an error */
	SESSION_DROPPED,     /* attached, then the connection ended */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; state changes */
	atomic_int state;
	bool running;        /* the thread exists */
	int64_t last_try_ms;
	atomic_int wake_fd;  /* eventfd: the table changed */
	int sock_fd;         /* the connection (a forked child closes its copy) */
	struct gw_client *client;
} ag = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.state = AGENT_IDLE,
	.wake_fd = -1,
	.sock_fd = -1,
};

static pthread_once_t agent_once = PTHREAD_ONCE_INIT;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
			       .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void cond_init(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&ag.cond, &attr);
	pthread_condattr_destroy(&attr);
}

static void set_state(enum agent_state s)
{
	atomic_store(&ag.state, (int)s);
	pthread_cond_broadcast(&ag.cond);
}

/* ---- the connection ---- */

struct conn {
	int fd;
	uint64_t next_id;
	uint64_t attach_id;
	bool attached;
	struct gw_framer *framer;
};

static int send_payload(struct conn *cn, char *payload, const int *fds, unsigned nfds)
{
	int r;

	if (!payload)
		return -ENOMEM;
	r = gw_send_frame(cn->fd, payload, strlen(payload), fds, nfds);
	free(payload);
	return r;
}

/* Sends method with params (consumed); returns the request id (> 0) or a negative errno. */
static int64_t send_request(struct conn *cn, const char *method, cJSON *params)
{
	uint64_t id = cn->next_id++;
	int r;

	if (!params)
		return -ENOMEM;
	r = send_payload(cn, gw_request_encode(id, method, params, 0), NULL, 0);
	cJSON_Delete(params);
	return r < 0 ? r : (int64_t)id;
}

static cJSON *counts(uint64_t *ret_gen, bool *ret_released)
{
	cJSON *o = shim_op_counts(ret_gen, ret_released);

	if (o && (!cJSON_AddNumberToObject(o, "pid", getpid()) ||
		  !cJSON_AddNumberToObject(o, "tid", gettid()))) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static int send_attach(struct conn *cn, uint64_t *ret_gen)
{
	bool released = false;
	cJSON *params = counts(ret_gen, &released);
	int64_t id;

	/* ranges without memory behind them: the process was suspended and needs Agent.Map */
	if (params && released && !cJSON_AddBoolToObject(params, "restored", 1)) {
		cJSON_Delete(params);
		params = NULL;
	}
	id = send_request(cn, GW_METHOD_AGENT_ATTACH, params);
	if (id < 0)
		return (int)id;
	cn->attach_id = (uint64_t)id;
	return 0;
}

static int send_update(struct conn *cn, uint64_t *ret_gen)
{
	cJSON *params = shim_op_counts(ret_gen, NULL);
	int64_t id = send_request(cn, GW_METHOD_AGENT_UPDATE, params);

	return id < 0 ? (int)id : 0;
}

static void close_fds(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static int answer(struct conn *cn, const struct gw_message *msg, const int *fds, unsigned nfds)
{
	struct shim_reply reply = { 0 };
	char *payload;
	int r;

	if (strcmp(msg->method, GW_METHOD_AGENT_PING) == 0) {
		reply.result = counts(NULL, NULL);
		if (!reply.result) {
			reply.error_name = GW_ERROR_AGENT;
			strcpy(reply.error_message, "the range table stays locked");
		}
	} else if (strcmp(msg->method, GW_METHOD_AGENT_EXPORT) == 0) {
		shim_op_export(msg->body, &reply);
	} else if (strcmp(msg->method, GW_METHOD_AGENT_RELEASE) == 0) {
		shim_op_release(msg->body, &reply);
	} else if (strcmp(msg->method, GW_METHOD_AGENT_MAP) == 0) {
		shim_op_map(msg->body, fds, nfds, &reply);
	} else if (strcmp(msg->method, GW_METHOD_AGENT_TRIM) == 0) {
		shim_op_trim(msg->body, &reply);
	} else {
		reply.error_name = GW_ERROR_UNKNOWN_METHOD;
		strcpy(reply.error_message, "the agent does not know this method");
	}
	if (reply.error_name)
		payload = gw_error_encode(msg->id, reply.error_name, reply.error_message,
					  reply.error_extra);
	else
		payload = gw_reply_encode(msg->id, reply.result, reply.nfds);
	r = send_payload(cn, payload, reply.fds, reply.error_name ? 0 : reply.nfds);
	shim_reply_finish(&reply); /* closes our copies of the exported fds */
	return r;
}

/* One whole message with its fds (closed here). Returns 0, or a negative errno /
 * -ECONNREFUSED (attach rejected). */
static int handle(struct conn *cn, const struct gw_message *msg, const int *fds, unsigned n)
{
	int r = 0;

	switch (msg->kind) {
	case GW_MESSAGE_REQUEST:
		r = answer(cn, msg, fds, n);
		break;
	case GW_MESSAGE_REPLY:
		if (msg->id == cn->attach_id && !cn->attached) {
			cn->attached = true;
			pthread_mutex_lock(&ag.lock);
			set_state(AGENT_ATTACHED);
			pthread_mutex_unlock(&ag.lock);
			shim_log("agent: attached to the daemon (tid %d)", (int)gettid());
		}
		break; /* AgentUpdate replies: nothing to do */
	case GW_MESSAGE_ERROR:
		if (msg->id == cn->attach_id && !cn->attached) {
			shim_log("agent: the daemon refused AgentAttach: %s: %s",
				 msg->error_name ? msg->error_name : "?",
				 msg->error_message ? msg->error_message : "");
			r = -ECONNREFUSED;
		}
		break;
	case GW_MESSAGE_PROGRESS:
		break; /* never asked for */
	}
	close_fds(fds, n);
	return r;
}

/* Reads what is there and handles every complete message. */
static int receive(struct conn *cn)
{
	ssize_t n = gw_framer_fill(cn->framer);

	if (n == -EAGAIN || n == -EINTR)
		return 0;
	if (n == 0)
		return -ECONNRESET;
	if (n < 0)
		return (int)n;
	for (;;) {
		int fds[GW_FRAME_MAX_FDS];
		unsigned nfds = 0;
		struct gw_message msg;
		int r = gw_framer_next(cn->framer, &msg, fds, &nfds);

		if (r <= 0)
			return r;
		r = handle(cn, &msg, fds, nfds);
		gw_message_finish(&msg);
		if (r < 0)
			return r;
	}
}

static void drain(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) > 0)
		;
}

static int serve(struct conn *cn)
{
	int64_t attach_deadline = now_ms() + ATTACH_REPLY_MS, last_update = 0;
	uint64_t sent_gen = 0;
	int r = send_attach(cn, &sent_gen);

	while (r == 0) {
		struct pollfd p[2] = { { .fd = cn->fd, .events = POLLIN },
				       { .fd = atomic_load(&ag.wake_fd), .events = POLLIN } };
		int64_t now = now_ms(), timeout = -1;
		uint64_t gen = sent_gen;
		cJSON *probe;

		if (!cn->attached) {
			if (now >= attach_deadline)
				return -ETIMEDOUT;
			timeout = attach_deadline - now;
		} else {
			probe = shim_op_counts(&gen, NULL);
			cJSON_Delete(probe);
			if (gen != sent_gen) {
				if (now - last_update >= UPDATE_MIN_MS) {
					r = send_update(cn, &sent_gen);
					last_update = now;
					continue;
				}
				timeout = UPDATE_MIN_MS - (now - last_update);
			}
		}
		if (timeout > INT_MAX)
			timeout = INT_MAX;
		if (poll(p, p[1].fd >= 0 ? 2 : 1, (int)timeout) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents & POLLIN)
			drain(p[1].fd);
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
			r = receive(cn);
	}
	return r;
}

static enum session_end session(void)
{
	struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
	struct gw_client_error err;
	struct gw_client *client = NULL;
	enum session_end end;
	struct conn *cn;
	int r, flags;

	r = gw_client_connect(NULL, "gpuwarm-shim " GW_VERSION, CONNECT_TIMEOUT_MS, &client, &err);
	if (r < 0) {
		shim_log("agent: no daemon (%s)", err.message);
		return SESSION_UNREACHABLE;
	}
	cn = calloc(1, sizeof(*cn));
	if (!cn) {
		gw_client_close(client);
		return SESSION_UNREACHABLE;
	}
	cn->fd = gw_client_fd(client);
	cn->next_id = 1u << 20;
	if (gw_framer_create(cn->fd, GW_FRAME_MAX_PAYLOAD, &cn->framer) < 0) {
		free(cn);
		gw_client_close(client);
		return SESSION_UNREACHABLE;
	}
	/* blocking sends with a deadline; reads only after poll() */
	flags = fcntl(cn->fd, F_GETFL);
	if (flags >= 0)
		(void)fcntl(cn->fd, F_SETFL, flags & ~O_NONBLOCK);
	(void)setsockopt(cn->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	pthread_mutex_lock(&ag.lock);
	ag.sock_fd = cn->fd;
	ag.client = client;
	pthread_mutex_unlock(&ag.lock);

	r = serve(cn);
	shim_log("agent: connection ended (error %d)", -r);

	pthread_mutex_lock(&ag.lock);
	ag.sock_fd = -1;
	ag.client = NULL;
	pthread_mutex_unlock(&ag.lock);
	gw_framer_destroy(cn->framer);
	gw_client_close(client);
	if (r == -ECONNREFUSED)
		end = SESSION_REJECTED;
	else if (cn->attached)
		end = SESSION_DROPPED;
	else
		end = SESSION_UNREACHABLE;
	free(cn);
	return end;
}

static void *agent_main(void *arg)
{
	bool background = false;

	(void)arg;
	for (;;) {
		enum session_end end = session();

		pthread_mutex_lock(&ag.lock);
		ag.last_try_ms = now_ms();
		set_state(AGENT_DOWN);
		if (end == SESSION_DROPPED) {
			background = true; /* it was there: keep trying */
		} else if (end == SESSION_REJECTED || !background) {
			ag.running = false;
			pthread_mutex_unlock(&ag.lock);
			return NULL;
		}
		pthread_mutex_unlock(&ag.lock);
		if (end != SESSION_DROPPED)
			sleep_ms(RETRY_MS);
		pthread_mutex_lock(&ag.lock);
		set_state(AGENT_CONNECTING);
		pthread_mutex_unlock(&ag.lock);
	}
}

/* ---- fork ---- */

static void atfork_prepare(void)
{
	shim_driver_atfork_prepare();
	pthread_mutex_lock(&ag.lock);
	pthread_mutex_lock(&shim_tbl.lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&shim_tbl.lock);
	pthread_mutex_unlock(&ag.lock);
	shim_driver_atfork_parent();
}

/* The child has no agent until its own first allocation. */
static void atfork_child(void)
{
	int wake = atomic_load(&ag.wake_fd);

	shim_driver_atfork_child();
	shim_tables_reset_child();
	pthread_mutex_init(&ag.lock, NULL);
	cond_init();
	if (ag.sock_fd >= 0)
		close(ag.sock_fd); /* the parent's connection; its client struct stays behind */
	if (wake >= 0)
		close(wake);
	ag.sock_fd = -1;
	atomic_store(&ag.wake_fd, -1);
	ag.running = false;
	ag.last_try_ms = 0;
	atomic_store(&ag.state, AGENT_IDLE);
}

static void agent_once_init(void)
{
	pthread_mutex_lock(&ag.lock);
	cond_init();
	pthread_mutex_unlock(&ag.lock);
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---- the app side ---- */

/* Called with ag.lock held. */
static void start_locked(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t thread;
	int r;

	ag.last_try_ms = now_ms();
	if (atomic_load(&ag.wake_fd) < 0)
		atomic_store(&ag.wake_fd, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	set_state(AGENT_CONNECTING);
	/* signals stay with the app's threads */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&thread, &attr, agent_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		shim_log("agent: cannot start a thread: %s", strerror(r));
		set_state(AGENT_DOWN);
		return;
	}
	ag.running = true;
}

bool shim_agent_ready(bool wait)
{
	bool attached;

	if (shim_cfg.disabled)
		return false;
	if (atomic_load(&ag.state) == AGENT_ATTACHED)
		return true;
	pthread_once(&agent_once, agent_once_init);
	pthread_mutex_lock(&ag.lock);
	if (!ag.running) {
		int s = atomic_load(&ag.state);

		if (s == AGENT_IDLE || (s == AGENT_DOWN && now_ms() - ag.last_try_ms >= RETRY_MS))
			start_locked();
	}
	if (wait) {
		struct timespec deadline;

		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += ATTACH_WAIT_MS / 1000;
		while (atomic_load(&ag.state) == AGENT_CONNECTING && ag.running)
			if (pthread_cond_timedwait(&ag.cond, &ag.lock, &deadline) == ETIMEDOUT)
				break;
	}
	attached = atomic_load(&ag.state) == AGENT_ATTACHED;
	pthread_mutex_unlock(&ag.lock);
	return attached;
}

void shim_agent_changed(void)
{
	uint64_t one = 1;
	int fd = atomic_load(&ag.wake_fd);

	if (fd >= 0 && atomic_load(&ag.state) == AGENT_ATTACHED && write(fd, &one, sizeof(one)) < 0)
		return; /* full: a wake-up is pending anyway */
}
