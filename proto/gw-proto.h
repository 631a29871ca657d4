/* SPDX-License-Identifier: MIT */
/*
 * gpu-warmd wire contract. This header is the whole protocol: framing, message shapes, method
 * and error names, the values of state members, limits; every program spells these only through
 * it. docs/protocol.md documents it with byte-level examples. Reading and writing frames on a
 * socket is gw-framer.h's job (one reader, one writer for the daemon, libgpuwarm and the shim).
 *
 * Transport: a SOCK_STREAM Unix socket. Every message is one frame:
 *
 *     offset 0  u32 little-endian  magic   GW_FRAME_MAGIC ("GWRM" in memory order)
 *     offset 4  u32 little-endian  length  payload bytes, 2 .. GW_FRAME_MAX_PAYLOAD
 *     offset 8  payload            UTF-8 JSON object, no NUL
 *
 * File descriptors ride as SCM_RIGHTS ancillary data on the sendmsg() that carries the frame's
 * first byte; a message that carries fds says how many in its "fds" member, so the receiver can
 * tell a lost fd from none. A receiver refuses fds that no message announces (gw-framer.h).
 *
 * Messages:
 *   request  {"id": u64, "method": "gpuwarm.Name", "params": {...}, "fds": n?}
 *   reply    {"id": u64, "result": {...}, "fds": n?}
 *   error    {"id": u64, "error": {"name": "gpuwarm.Error.Name", "message": "text", ...}}
 *   progress {"id": u64, "progress": {...}}: news of a request still running, sent only to a
 *            client that asked for it ("progress": true in the params); zero or more come
 *            before the request's reply or error
 *
 * The first request on a connection must be gpuwarm.Hello carrying GW_PROTO_VERSION; a peer
 * with another version is answered gpuwarm.Error.ProtocolVersionMismatch ("protocol version
 * mismatch (client X, server Y)") and dropped. Method and error names are never reused with
 * another meaning; a change of meaning gets a new name or a new protocol version.
 *
 * Nothing in proto/ logs or keeps global state.
 */
#ifndef GW_PROTO_H
#define GW_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#define GW_PROTO_VERSION 1

#define GW_FRAME_MAGIC 0x4d525747u /* bytes 'G' 'W' 'R' 'M' */
#define GW_FRAME_HEADER_SIZE 8
#define GW_FRAME_MIN_PAYLOAD 2            /* "{}" */
#define GW_FRAME_MAX_PAYLOAD (1u << 20)   /* 1 MiB */
#define GW_FRAME_MAX_FDS 200              /* per message (the kernel allows 253) */
/* Suspend/Resume "segment_fds": [i, ...], indexes among the request's fds, each once and never
 * "image_fd"'s: a VRAM image's segment files in order (docs/image-format.md, version 2), at most
 * this many, checked as "image_fd" is; given with "image_fd" (the head file) only. */
#define GW_IMAGE_MAX_SEGMENTS 16
#define GW_METHOD_MAX 64                  /* bytes of a method name, NUL included */
#define GW_ERROR_NAME_MAX 128             /* bytes of an error name, NUL included */
#define GW_STRING_MAX 4096                /* bytes of any string member a peer may send */
#define GW_JSON_MAX_DEPTH 16

/* Request params members (docs/protocol.md METHODS), as libgpuwarm's gw_req_*() build them. */
#define GW_PARAM_VERSION "version"                /* Hello */
#define GW_PARAM_CLIENT "client"                  /* Hello */
#define GW_PARAM_PID "pid"
#define GW_PARAM_TIMEOUT_MS "timeout_ms"          /* Drain; ProcessLock, Suspend: the lock's */
#define GW_PARAM_GPU "gpu"                        /* a GPU selector */
#define GW_PARAM_GPUS "gpus"                      /* Drain, Undrain: selectors */
#define GW_PARAM_GPU_PAIRS "gpu_pairs"            /* [["GPU-old", "GPU-new"], ...] */
#define GW_PARAM_WAIT "wait"                      /* Drain */
#define GW_PARAM_LEASE "lease"                    /* LeaseRelease */
#define GW_PARAM_MIN_FREE_MIB "min_free_mib"      /* LeaseAcquire */
#define GW_PARAM_IMAGE_FD "image_fd"              /* index among the request's fds */
#define GW_PARAM_SEGMENT_FDS "segment_fds"        /* indexes among the request's fds */
#define GW_PARAM_SPARSE "sparse"                  /* Suspend */
#define GW_PARAM_CHUNK_BYTES "chunk_bytes"        /* Suspend */
#define GW_PARAM_PROGRESS "progress"              /* Suspend, Resume: send progress messages */
#define GW_PARAM_THREADS_FROZEN "threads_frozen"  /* Resume, root */
#define GW_PARAM_AGENT_PID "agent_pid"            /* Resume, root */
#define GW_PARAM_AGENT_TID "agent_tid"            /* Resume, root */

/* A progress message's members (Suspend, Resume: params "progress": true):
 *   "step"        the step running now ("copy", "fill", ...)
 *   "done_bytes"  data bytes moved so far, "total_bytes" of how many (0: not known yet)
 *   "elapsed_ms"  since the request began */
#define GW_PROGRESS_INTERVAL_MS 250 /* at most this often during a copy, besides at each step */

/* Limits of request members. */
#define GW_PID_MAX 4194304                /* pids and tids: the kernel's PID_MAX_LIMIT */
#define GW_LOCK_TIMEOUT_MAX_MS 60000      /* ProcessLock/Suspend "timeout_ms": a lock holds a
					   * worker thread while it waits */

/* The "limit" member of a gpuwarm.Error.LimitReached error: which limit was hit. */
#define GW_LIMIT_MAX_CLIENTS "max_clients"               /* --max-clients (less --root-reserve) */
#define GW_LIMIT_MAX_CLIENTS_PER_UID "max_clients_per_uid" /* --max-clients-per-uid */
#define GW_LIMIT_MAX_OPS_PER_UID "max_ops_per_uid"       /* --max-ops-per-uid */
#define GW_LIMIT_LEASES "leases"
#define GW_LIMIT_IMAGE_POOL "image_pool"                 /* --image-pool-mib */
#define GW_LIMIT_IMAGE_TABLES "image_tables"             /* an image's tables, non-root */
#define GW_LIMIT_IMAGE_CACHE "image_cache"               /* --image-cache-mib (and the pool) */

/* The "state" of a GPU (Status "gpus", Drain/Undrain results). */
#define GW_GPU_STATE_PRIMING "priming"   /* context and staging memory being set up */
#define GW_GPU_STATE_READY "ready"       /* primed, accepting work */
#define GW_GPU_STATE_DRAINING "draining" /* no new work; in-flight operations finishing */
#define GW_GPU_STATE_DRAINED "drained"   /* context and pinned memory released */
#define GW_GPU_STATE_FAILED "failed"     /* see its "error" */

/* The "state" of a process as the driver's cuCheckpointProcessGetState reports it
 * (ProcessState, ProcessLock/Checkpoint/Restore/Unlock, Suspend, Resume). */
#define GW_PROCESS_STATE_RUNNING "running"
#define GW_PROCESS_STATE_LOCKED "locked"
#define GW_PROCESS_STATE_CHECKPOINTED "checkpointed"
#define GW_PROCESS_STATE_FAILED "failed"
#define GW_PROCESS_STATE_UNKNOWN "unknown" /* not a wire value: a state that could not be read */

/* The "state" of a shimmed process in Status "processes" (its agent as the daemon sees it). */
#define GW_AGENT_STATE_RUNNING "running"
#define GW_AGENT_STATE_SUSPENDED "suspended" /* its VRAM is in an image the daemon holds */
#define GW_AGENT_STATE_BUSY "busy"           /* an operation runs */
#define GW_AGENT_STATE_DETACHED "detached"

#define GW_DEFAULT_SOCKET "/run/gpu-warmd/gpu-warmd.sock"
#define GW_SOCKET_ENV "GPUWARM_SOCKET"

/* Methods. Params and results are documented in docs/protocol.md. */
#define GW_METHOD_HELLO "gpuwarm.Hello"                   /* {version, client} -> {version, server, pid} */
#define GW_METHOD_STATUS "gpuwarm.Status"                 /* {} -> daemon, driver, gpus, leases, operations */
#define GW_METHOD_DRAIN "gpuwarm.Drain"                   /* {gpus?, wait?, timeout_ms?} -> {gpus} */
#define GW_METHOD_UNDRAIN "gpuwarm.Undrain"               /* {gpus?} -> {gpus} */
#define GW_METHOD_LEASE_ACQUIRE "gpuwarm.LeaseAcquire"    /* {gpu? | min_free_mib?} -> {lease, gpu} */
#define GW_METHOD_LEASE_RELEASE "gpuwarm.LeaseRelease"    /* {lease} -> {} */
#define GW_METHOD_PROCESS_STATE "gpuwarm.ProcessState"    /* {pid} -> {pid, state, restore_tid} */
#define GW_METHOD_PROCESS_LOCK "gpuwarm.ProcessLock"      /* {pid, timeout_ms?} -> {pid, state, duration_ms} */
#define GW_METHOD_PROCESS_CHECKPOINT "gpuwarm.ProcessCheckpoint" /* {pid} -> same */
#define GW_METHOD_PROCESS_RESTORE "gpuwarm.ProcessRestore" /* {pid, gpu?, gpu_pairs?} -> same */
#define GW_METHOD_PROCESS_UNLOCK "gpuwarm.ProcessUnlock"  /* {pid} -> same */
#define GW_METHOD_SUSPEND "gpuwarm.Suspend"               /* {pid, timeout_ms?, image_fd?, segment_fds?} -> {pid, state, steps} */
#define GW_METHOD_RESUME "gpuwarm.Resume"                 /* {pid, gpu?, gpu_pairs?, image_fd?, segment_fds?} -> {pid, state, steps} */
#define GW_METHOD_PREFILL "gpuwarm.Prefill"  /* root: {image_fd, segment_fds?} -> {vram_bytes, data_bytes,
					     * steps}: fill an image file's VRAM ahead of its Resume */
#define GW_METHOD_IMAGES "gpuwarm.Images" /* {action: "list"} -> {entries, cache, others?};
					   * {action: "drop", id | all} -> {dropped};
					   * {action: "load", image_fd, segment_fds?} -> {id, ...} */

/*
 * The in-process shim's agent channel (fast VRAM path). An agent thread in a shimmed app connects,
 * says Hello, then AgentAttach; from then on the connection carries requests both ways: the
 * daemon sends gpuwarm.Agent.* requests that the agent answers, and the agent may send
 * AgentUpdate whose reply it ignores. Each side must accept a reply and a request interleaved.
 *
 * Virtual addresses travel as hex strings ("0x7f2a00000000"): JSON numbers stop at 2^53.
 */
#define GW_METHOD_AGENT_ATTACH "gpuwarm.AgentAttach"  /* {pid, tid, ranges, bytes, restored?} -> {} */
#define GW_METHOD_AGENT_UPDATE "gpuwarm.AgentUpdate"  /* {ranges, bytes} -> {} */
/* daemon -> agent */
#define GW_METHOD_AGENT_EXPORT "gpuwarm.Agent.Export"
	/* {"offset": k} -> {"total": N, "ranges": [{"va": "0x..", "size": n, "device": ordinal,
	 * "uuid": "GPU-.."}], "fds": m}: ranges k .. k+m-1 of N (m <= GW_FRAME_MAX_FDS), one
	 * exported POSIX fd each, in order. The daemon asks again with offset k+m until it has N.
	 * On offset 0 the agent synchronises its contexts and fixes the list for the whole export. */
#define GW_METHOD_AGENT_RELEASE "gpuwarm.Agent.Release"
	/* {} -> {"released": n, "bytes": b}: unmap + release every range's memory, keep the VA */
#define GW_METHOD_AGENT_MAP "gpuwarm.Agent.Map"
	/* {"ranges": [{"va": "0x..", "size": n, "device": ordinal}], "fds": n} -> {"mapped": n}:
	 * import each fd and map it read-write at va; at most GW_FRAME_MAX_FDS ranges per call, the
	 * daemon sends as many calls as it needs */
#define GW_METHOD_AGENT_TRIM "gpuwarm.Agent.Trim"
	/* {"max_ms": m} -> {"mappings", "scanned_bytes", "zero_bytes", "trimmed_bytes", "ms",
	 * "timed_out"} (or {"disabled": true}): after the checkpoint, with the app's threads
	 * stopped, the agent gives its process's resident pages of zeros back to the kernel
	 * (private anonymous memory only), for at most m ms (0: no limit) */
#define GW_METHOD_AGENT_PING "gpuwarm.Agent.Ping"    /* {} -> {pid, ranges, bytes} */

/* Errors: the "name" of an error reply. */
#define GW_ERROR_PROTOCOL_VERSION "gpuwarm.Error.ProtocolVersionMismatch"
#define GW_ERROR_HELLO_REQUIRED "gpuwarm.Error.HelloRequired"
#define GW_ERROR_INVALID_REQUEST "gpuwarm.Error.InvalidRequest"   /* bad JSON, member or type */
#define GW_ERROR_UNKNOWN_METHOD "gpuwarm.Error.UnknownMethod"
#define GW_ERROR_PERMISSION_DENIED "gpuwarm.Error.PermissionDenied"
#define GW_ERROR_NO_SUCH_PROCESS "gpuwarm.Error.NoSuchProcess"
#define GW_ERROR_NO_SUCH_GPU "gpuwarm.Error.NoSuchGpu"
#define GW_ERROR_NO_SUCH_LEASE "gpuwarm.Error.NoSuchLease"
#define GW_ERROR_NO_SUCH_IMAGE "gpuwarm.Error.NoSuchImage"       /* no image cache entry (you may see) */
#define GW_ERROR_NO_GPU_AVAILABLE "gpuwarm.Error.NoGpuAvailable" /* none fits the lease request */
#define GW_ERROR_DRAINING "gpuwarm.Error.Draining"               /* GPU drained or draining */
#define GW_ERROR_DRIVER_UNAVAILABLE "gpuwarm.Error.DriverUnavailable" /* no driver, or no checkpoint API */
#define GW_ERROR_CUDA "gpuwarm.Error.Cuda"                       /* the driver failed; has cuda_error */
#define GW_ERROR_ILLEGAL_STATE "gpuwarm.Error.IllegalState"      /* wrong process state for the call */
#define GW_ERROR_TIMEOUT "gpuwarm.Error.Timeout"
#define GW_ERROR_BUSY "gpuwarm.Error.Busy"                       /* another operation on that pid runs */
#define GW_ERROR_LIMIT "gpuwarm.Error.LimitReached"              /* clients, leases, ... */
#define GW_ERROR_AGENT "gpuwarm.Error.Agent"                   /* the app's agent failed a step */
#define GW_ERROR_IMAGE "gpuwarm.Error.Image"    /* an image file is bad, or cannot be written */
#define GW_ERROR_NOT_CUDA "gpuwarm.Error.NotCudaProcess" /* a live process the driver does not know */
#define GW_ERROR_INTERNAL "gpuwarm.Error.Internal"

/* ---- errors: one table, both ways ----
 * Every negative errno the daemon reports has one wire name, and every wire name one errno (the
 * driver's CUresults become errnos in common/gw-cuda.h gw_cuda_errno()). */

/* The wire name for -err (an unknown errno gives GW_ERROR_INTERNAL). */
const char *gw_error_for_errno(int err);
/* The negative errno for a wire name (an unknown name gives -EIO). */
int gw_errno_for_error(const char *name);

/* ---- framing ---- */

/* Write the 8-byte header for a payload of len bytes. -EMSGSIZE when len is out of range. */
int gw_frame_header_encode(size_t len, uint8_t header[GW_FRAME_HEADER_SIZE]);

/* Incremental decoder: feed bytes as they arrive, in chunks of any size. */
struct gw_frame_decoder {
	uint8_t header[GW_FRAME_HEADER_SIZE];
	size_t header_have;
	char *payload;        /* len + 1 bytes, NUL-terminated when complete */
	size_t payload_len;
	size_t payload_have;
	size_t max_payload;
};

void gw_frame_decoder_init(struct gw_frame_decoder *dec, size_t max_payload);
void gw_frame_decoder_finish(struct gw_frame_decoder *dec);
/*
 * Consume up to len bytes. Returns the number of bytes consumed (>= 0), stopping right after a
 * frame completes; then *ret_payload (malloc'd, NUL-terminated, caller frees) and *ret_len are
 * set, otherwise *ret_payload is NULL. Errors: -EBADMSG (wrong magic), -EMSGSIZE (length out of
 * range), -ENOMEM. After an error the stream is unusable.
 */
ssize_t gw_frame_decoder_feed(struct gw_frame_decoder *dec, const void *data, size_t len,
			      char **ret_payload, size_t *ret_len);
/* True when no partial frame is buffered. */
int gw_frame_decoder_idle(const struct gw_frame_decoder *dec);

/* ---- messages ---- */

enum gw_message_kind {
	GW_MESSAGE_REQUEST = 1,
	GW_MESSAGE_REPLY,
	GW_MESSAGE_ERROR,
	GW_MESSAGE_PROGRESS,
};

struct gw_message {
	enum gw_message_kind kind;
	uint64_t id;
	unsigned nfds;        /* the "fds" member, 0 when absent */
	char method[GW_METHOD_MAX];   /* request */
	cJSON *root;          /* the whole parsed document, owned */
	const cJSON *body;    /* request: params (an object, never NULL: {} when absent);
			       * reply: result (object); error: the error object; progress: its object */
	const char *error_name;    /* error */
	const char *error_message; /* error */
};

/*
 * Parse and validate one frame's payload: a JSON object no deeper than GW_JSON_MAX_DEPTH with
 * exactly one of method/result/error/progress, an integer id in [0, 2^53], a method name of
 * [A-Za-z0-9.] < GW_METHOD_MAX, params/result/progress objects, an error object with a name of
 * [A-Za-z0-9.] < GW_ERROR_NAME_MAX and a string message, fds in [0, GW_FRAME_MAX_FDS].
 * Returns 0 or -EBADMSG (malformed; ret untouched), -ENOMEM.
 */
int gw_message_parse(const char *payload, size_t len, struct gw_message *ret_msg);
void gw_message_finish(struct gw_message *msg);

/* Encoders return a malloc'd JSON text (caller frees) or NULL on allocation failure. They do not
 * take ownership of params/result (NULL means {}). */
char *gw_request_encode(uint64_t id, const char *method, const cJSON *params, unsigned nfds);
char *gw_reply_encode(uint64_t id, const cJSON *result, unsigned nfds);
char *gw_progress_encode(uint64_t id, const cJSON *progress);
/* extra: optional object whose members are added to the error object (e.g. cuda_error). */
char *gw_error_encode(uint64_t id, const char *name, const char *message, const cJSON *extra);

/* ---- typed access to untrusted JSON ---- */

/* All return 0, -ENOENT (member absent or null), or -EINVAL (wrong type, out of range, too long).
 * ret_* is untouched on failure. */
int gw_json_get_string(const cJSON *obj, const char *key, size_t max_len, const char **ret);
int gw_json_get_u64(const cJSON *obj, const char *key, uint64_t min, uint64_t max, uint64_t *ret);
int gw_json_get_bool(const cJSON *obj, const char *key, int *ret);
/* A hex string "0x..." (at most 16 digits) as a 64-bit address. */
int gw_json_get_hex_u64(const cJSON *obj, const char *key, uint64_t *ret);
/* An array of at most max_items strings each shorter than GW_STRING_MAX. */
int gw_json_get_string_array(const cJSON *obj, const char *key, size_t max_items,
			     const cJSON **ret_array);

/* ---- socket I/O with fd passing (gw-framer.h builds frames on these) ---- */

/* One sendmsg() of buf[0..len) with fds attached (nfds <= GW_FRAME_MAX_FDS, may be 0), MSG_NOSIGNAL.
 * Returns bytes sent (possibly short) or a negative errno (-EAGAIN on a full non-blocking socket).
 * A frame's fds go with its first byte (struct gw_frame_out does this). */
ssize_t gw_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds);

/* Encode and send a whole frame on a blocking socket, retrying short writes and EINTR.
 * Returns 0 or a negative errno (-EAGAIN when SO_SNDTIMEO ran out). */
int gw_send_frame(int sock, const char *payload, size_t len, const int *fds, unsigned nfds);

/*
 * recvmsg() up to len bytes, collecting SCM_RIGHTS fds (received close-on-exec) into fds[],
 * at most *nfds (in: capacity, out: count). Fds beyond the capacity are closed and -EMSGSIZE is
 * returned; a truncated control message gives -EMSGSIZE too. Returns bytes read, 0 on EOF,
 * or a negative errno (-EAGAIN on a non-blocking socket with nothing to read).
 */
ssize_t gw_recv_with_fds(int sock, void *buf, size_t len, int *fds, unsigned *nfds);

#endif
