/* SPDX-License-Identifier: MIT */
/*
 * The agent registry: the in-process shim's agent of every shimmed process (Attach, Update,
 * hang-up), bound to its process by a pidfd whose exit is watched on the loop, and what the
 * request handlers ask of it: which path an operation takes, status "processes". Loop only.
 */
#ifndef GW_AGENTS_H
#define GW_AGENTS_H

#include <cjson/cJSON.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "pin.h"
#include "server.h"

struct gw_daemon;
struct gw_image;

/*
 * A shimmed process's agent. Bound agents belong to one process instance, pinned by a pidfd: the
 * record and the VRAM image it holds go when that process exits (watched on the loop), and a
 * later process with the same pid never sees them. An agent attached by root on a process's
 * behalf (CRIU's plugin, restoring) is unbound until a Resume from root binds it to the restored
 * process.
 */
struct gw_agent {
	struct gw_agent *next;
	struct gw_daemon *d;
	pid_t pid, tid;          /* pid: the bound process's, or the pid it was attached under */
	struct gw_pin pin;       /* pidfd -1: unbound */
	uid_t uid;               /* the process's owner (unbound: the attaching peer's) */
	struct event *exit_ev;   /* the pidfd turned readable: the process exited */
	struct gw_conn *conn;    /* NULL once the app hung up */
	uint64_t ranges, bytes;  /* as it last reported */
	uint64_t foreign;        /* of them, memory made by another process (mapped back by us) */
	struct gw_image *image;  /* VRAM held for it while fast-suspended */
	int busy;
	int gone;                /* its process exited while an operation ran */
};

/* Requests from an agent. */
void gw_fast_handle_attach(struct gw_daemon *d, struct gw_request *req);
void gw_fast_handle_update(struct gw_daemon *d, struct gw_request *req);
void gw_fast_conn_closed(struct gw_daemon *d, struct gw_conn *conn);

struct gw_agent *gw_fast_agent(struct gw_daemon *d, pid_t pid);
/* Is the fast path the way for this operation? (an agent with ranges, or a held image) */
int gw_fast_wants_suspend(struct gw_daemon *d, pid_t pid);
int gw_fast_wants_resume(struct gw_daemon *d, pid_t pid);
/* Would a driver checkpoint of pid hit the imported-memory trap (DESIGN.md: it "succeeds", then
 * restore fails with 801 and the process is stuck)? True when its agent reports memory that
 * another process created, i.e. VRAM the daemon mapped back after a fast resume. */
int gw_fast_driver_checkpoint_unsafe(struct gw_daemon *d, pid_t pid);
int gw_fast_has_agent(struct gw_daemon *d, pid_t pid);
/* Root's resume of a restored process: the unbound agent attached under pid from (its dump's
 * pid) belongs to the pinned process now (its agent thread tid, 0: as attached). -ENOENT (no
 * such agent), -EBUSY, -EEXIST (the process has a bound agent already), -ESRCH. */
int gw_fast_bind(struct gw_daemon *d, pid_t from, const struct gw_pin *to, pid_t tid);
/* Status "processes": one object per agent; a non-root peer sees only its own, and
 * *ret_others counts the rest. */
cJSON *gw_fast_status(struct gw_daemon *d, const struct ucred *peer, unsigned *ret_others);
/* Agents worth keeping a connection open for (VRAM to move, or an image held). */
int gw_fast_agent_pins_conn(const struct gw_agent *a);
/* Drop the record (and the image it holds) of a. */
void gw_agent_remove(struct gw_daemon *d, struct gw_agent *a);

#endif
