/* SPDX-License-Identifier: MIT */
#include "agents.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "daemon.h"
#include "imagestore.h"
#include "log.h"
#include "opengine.h"

#define GW_FAST_MAX_RANGES 4096

void gw_agent_remove(struct gw_daemon *d, struct gw_agent *a)
{
	for (struct gw_agent **p = &d->agents; *p; p = &(*p)->next)
		if (*p == a) {
			*p = a->next;
			break;
		}
	if (a->conn)
		gw_conn_set_data(a->conn, NULL);
	if (a->exit_ev)
		event_free(a->exit_ev);
	gw_pin_close(&a->pin);
	gw_image_free(&d->hostpool, a->image);
	free(a);
}

/* Its process exited: what was held for it goes (an image in a file stays in the file). */
static void on_agent_exit(evutil_socket_t fd, short what, void *arg)
{
	struct gw_agent *a = arg;
	struct gw_daemon *d = a->d;

	(void)fd;
	(void)what;
	if (a->busy) {
		a->gone = 1; /* the operation fails on its next step; finish() removes us */
		return;
	}
	gw_info("pid %d exited: its agent record%s dropped", a->pid,
		a->image ? " and the VRAM image held for it are" : " is");
	gw_agent_remove(d, a);
	gw_op_changed(d);
}

/* Pin a (bound to the process in pin, which is moved in) and watch for its exit. */
static int agent_bind(struct gw_agent *a, struct gw_pin *pin)
{
	struct event *ev = event_new(a->d->base, pin->pidfd, EV_READ, on_agent_exit, a);

	if (!ev || event_add(ev, NULL) < 0) {
		if (ev)
			event_free(ev);
		return -ENOMEM;
	}
	if (a->exit_ev)
		event_free(a->exit_ev);
	a->exit_ev = ev;
	gw_pin_move(&a->pin, pin);
	a->pid = a->pin.pid;
	a->uid = a->pin.uids[0];
	return 0;
}

struct gw_agent *gw_fast_agent(struct gw_daemon *d, pid_t pid)
{
	/* A live pinned process owns its pid: no other process can have it meanwhile. */
	for (struct gw_agent *a = d->agents; a; a = a->next)
		if (a->pin.pidfd >= 0 && a->pin.pid == pid && !a->gone && gw_pin_alive(&a->pin))
			return a;
	return NULL;
}

int gw_fast_wants_suspend(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->conn && a->ranges > 0 && !a->image;
}

int gw_fast_wants_resume(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->image;
}

int gw_fast_bind(struct gw_daemon *d, pid_t from, const struct gw_pin *to, pid_t tid)
{
	struct gw_agent *a = NULL;
	struct gw_pin pin;
	int r;

	for (struct gw_agent *x = d->agents; x; x = x->next)
		if (x->pin.pidfd < 0 && x->pid == from && x->conn)
			a = x;
	if (!a)
		return -ENOENT;
	if (a->busy)
		return -EBUSY;
	if (gw_fast_agent(d, to->pid))
		return -EEXIST;
	r = gw_pin_open(to->pid, &pin); /* the agent's own pidfd, for as long as it lives */
	if (r < 0)
		return r;
	if (pin.start_time != to->start_time) {
		gw_pin_close(&pin);
		return -ESRCH;
	}
	r = agent_bind(a, &pin);
	if (r < 0) {
		gw_pin_close(&pin);
		return r;
	}
	if (tid > 0)
		a->tid = tid;
	gw_info("agent attached under pid %d is pid %d's now (thread %d)", from, a->pid, a->tid);
	return 0;
}

int gw_fast_has_agent(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->conn;
}

int gw_fast_driver_checkpoint_unsafe(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->foreign > 0;
}

int gw_fast_agent_pins_conn(const struct gw_agent *a)
{
	return a && (a->bytes > 0 || a->ranges > 0 || a->image || a->busy);
}

/* "foreign" is optional: older agents do not send it. */
static void read_foreign(struct gw_request *req, struct gw_agent *a)
{
	uint64_t foreign;

	if (gw_json_get_u64(req->msg.body, "foreign", 0, GW_FAST_MAX_RANGES, &foreign) == 0)
		a->foreign = foreign;
}

static int read_counts(struct gw_request *req, uint64_t *ranges, uint64_t *bytes)
{
	if (gw_json_get_u64(req->msg.body, "ranges", 0, GW_FAST_MAX_RANGES, ranges) < 0 ||
	    gw_json_get_u64(req->msg.body, "bytes", 0, (uint64_t)1 << 50, bytes) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"ranges\" and \"bytes\" must be counts");
		return -EINVAL;
	}
	return 0;
}

/* An agent speaks for the process at the other end of its socket, as the kernel names it: pin
 * that process; its tid as reported inside a container is mapped to ours. */
static int attach_own(struct gw_request *req, uint64_t tid, struct gw_pin *ret_pin,
		      pid_t *ret_tid)
{
	pid_t host_tid;
	int r = gw_pin_open(req->peer.pid, ret_pin);

	if (r < 0) {
		gw_request_fail(req, GW_ERROR_NO_SUCH_PROCESS, NULL,
				"the attaching process %d is gone", req->peer.pid);
		return r;
	}
	host_tid = gw_proc_host_tid(req->peer.pid, (pid_t)tid);
	if (host_tid < 0) {
		gw_pin_close(ret_pin);
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "process %d has no thread %llu",
				req->peer.pid, (unsigned long long)tid);
		return -ESRCH;
	}
	*ret_tid = host_tid;
	return 0;
}

void gw_fast_handle_attach(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_pin pin = GW_PIN_INIT;
	uint64_t pid, tid, ranges, bytes;
	struct gw_agent *a;
	int on_behalf = 0;
	pid_t host_tid = 0;

	if (gw_conn_get_data(req->conn)) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "this connection is attached");
		return;
	}
	if (gw_json_get_u64(req->msg.body, "pid", 1, GW_PID_MAX, &pid) < 0 ||
	    gw_json_get_u64(req->msg.body, "tid", 1, GW_PID_MAX, &tid) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"pid\" and \"tid\" required");
		return;
	}
	if (read_counts(req, &ranges, &bytes) < 0)
		return;
	/* An agent speaks for its own process only; root (CRIU's plugin giving a restored process
	 * its connection back) may attach a connection on a process's behalf: unbound until a
	 * Resume from root binds it. */
	if (gw_json_get_bool(req->msg.body, "on_behalf", &on_behalf) < 0)
		on_behalf = 0;
	if (on_behalf && req->peer.uid != 0) {
		gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL,
				"only root may attach an agent on another process's behalf");
		return;
	}
	if (!on_behalf) {
		if (attach_own(req, tid, &pin, &host_tid) < 0)
			return;
		a = gw_fast_agent(d, pin.pid);
		if (a && a->conn) {
			gw_pin_close(&pin);
			gw_request_fail(req, GW_ERROR_BUSY, NULL,
					"pid %d already has an agent attached", req->peer.pid);
			return;
		}
		if (a) {
			/* The same process reconnecting (what is held for it is still its). */
			gw_pin_close(&pin);
			a->tid = host_tid;
			goto attach;
		}
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		gw_pin_close(&pin);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	a->d = d;
	a->pin.pidfd = -1;
	a->pid = (pid_t)pid;
	a->tid = on_behalf ? (pid_t)tid : host_tid;
	a->uid = req->peer.uid;
	if (!on_behalf && agent_bind(a, &pin) < 0) {
		gw_pin_close(&pin);
		free(a);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	a->next = d->agents;
	d->agents = a;
attach:
	a->conn = req->conn;
	a->ranges = ranges;
	a->bytes = bytes;
	read_foreign(req, a);
	gw_conn_set_data(req->conn, a);
	gw_info("agent of pid %d attached%s (thread %d): %" PRIu64 " ranges, %.1f MiB", a->pid,
		on_behalf ? " on its behalf by CRIU's plugin" : "", a->tid, ranges,
		(double)bytes / 1048576.0);
	gw_request_reply(req, NULL);
}

void gw_fast_handle_update(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_agent *a = gw_conn_get_data(req->conn);
	uint64_t ranges, bytes;

	(void)d;
	if (!a) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "attach first");
		return;
	}
	if (read_counts(req, &ranges, &bytes) < 0)
		return;
	a->ranges = ranges;
	a->bytes = bytes;
	read_foreign(req, a);
	gw_request_reply(req, NULL);
}

void gw_fast_conn_closed(struct gw_daemon *d, struct gw_conn *conn)
{
	struct gw_agent *a = gw_conn_get_data(conn);

	if (!a)
		return;
	a->conn = NULL;
	/* An image in a file is the caller's to pass back at resume: once the process is gone, the
	 * daemon's fd would only keep a deleted file's space alive. */
	if (!a->busy && a->image && a->image->fd >= 0) {
		gw_info("agent of pid %d gone: its VRAM image stays in its file only", a->pid);
		gw_image_free(&d->hostpool, a->image);
		a->image = NULL;
	}
	/* Keep the record while it holds VRAM in memory for a process that still runs (it
	 * reconnects); the process's exit drops it. */
	if (!a->busy && (!a->image || a->pin.pidfd < 0)) {
		gw_info("agent of pid %d detached", a->pid);
		gw_agent_remove(d, a);
	} else {
		gw_warn("agent of pid %d hung up while %s", a->pid,
			a->busy ? "an operation runs" : "its VRAM is held here");
	}
}

static const char *agent_state(const struct gw_agent *a)
{
	if (a->busy)
		return GW_AGENT_STATE_BUSY;
	if (a->image)
		return GW_AGENT_STATE_SUSPENDED;
	if (!a->conn)
		return GW_AGENT_STATE_DETACHED;
	return GW_AGENT_STATE_RUNNING;
}

static cJSON *agent_json(const struct gw_agent *a)
{
	cJSON *o = cJSON_CreateObject(), *img;

	if (!o)
		return NULL;
	cJSON_AddNumberToObject(o, "pid", a->pid);
	cJSON_AddNumberToObject(o, "uid", a->uid);
	cJSON_AddNumberToObject(o, "agent_tid", a->tid);
	cJSON_AddBoolToObject(o, "attached", a->conn != NULL);
	cJSON_AddBoolToObject(o, "bound", a->pin.pidfd >= 0);
	cJSON_AddStringToObject(o, "state", agent_state(a));
	cJSON_AddNumberToObject(o, "ranges", (double)a->ranges);
	cJSON_AddNumberToObject(o, "vram_bytes", (double)a->bytes);
	cJSON_AddNumberToObject(o, "foreign_ranges", (double)a->foreign);
	cJSON_AddNumberToObject(o, "held_bytes", a->image ? (double)a->image->v.data_bytes : 0);
	if (a->image) {
		cJSON_AddStringToObject(o, "held_in", a->image->fd >= 0 ? "file" : "memory");
		img = cJSON_AddObjectToObject(o, "image");
		if (img) {
			cJSON_AddStringToObject(img, "store", a->image->fd >= 0 ? "file" : "memory");
			cJSON_AddNumberToObject(img, "data_bytes", (double)a->image->v.data_bytes);
			cJSON_AddNumberToObject(img, "vram_bytes", (double)a->image->v.vram_bytes);
		}
	} else {
		cJSON_AddNullToObject(o, "image");
	}
	return o;
}

cJSON *gw_fast_status(struct gw_daemon *d, const struct ucred *peer, unsigned *ret_others)
{
	cJSON *array = cJSON_CreateArray();
	unsigned others = 0;

	for (struct gw_agent *a = d->agents; array && a; a = a->next) {
		if (peer->uid != 0 && a->uid != peer->uid) {
			others++;
			continue;
		}
		cJSON_AddItemToArray(array, agent_json(a));
	}
	*ret_others = others;
	return array;
}
