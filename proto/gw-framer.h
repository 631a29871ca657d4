/* SPDX-License-Identifier: MIT */
/*
 * The one frame reader and writer of the project, on top of gw-proto.h's decoder and socket
 * I/O: the daemon's connections, libgpuwarm and the shim's agent all read and write frames
 * through it. It carries out the FILE DESCRIPTORS rules of docs/protocol.md exactly.
 *
 * Reader: gw_framer_fill() reads once from the socket (a non-blocking one, or after poll()),
 * holding the batch of fds that read brought; gw_framer_next() hands out the next complete
 * message of what was read, with the fds it announced. A message takes the waiting batch when
 * its "fds" member says exactly that many. It is an error, after which the framer is unusable
 * and holds no fd any more (every fd it held is closed): a bad magic or length, a malformed
 * message, a message announcing another number than came, fds that no message announced (left
 * when everything read is consumed and no frame is in progress, or a second batch while one is
 * unclaimed), a truncated control message, or more than GW_FRAME_MAX_FDS fds in one read.
 *
 * Writer: struct gw_frame_out is one encoded frame on its way out, fds attached to its first
 * byte; gw_frame_out_send() sends what a non-blocking socket takes, gw_frame_out_flush() all of
 * it within a timeout.
 *
 * Like the rest of proto/, nothing here logs: errors come back as a negative errno, with words
 * for the peer or a log from gw_framer_error().
 */
#ifndef GW_FRAMER_H
#define GW_FRAMER_H

#include <stdbool.h>

#include "gw-proto.h"

/* The most bytes one gw_framer_fill() reads. */
#define GW_FRAMER_READ_SIZE 65536

struct gw_framer;

/* A reader of the socket sock (not owned: never closed here) for frames of at most max_payload
 * bytes (out of GW_FRAME_MIN_PAYLOAD .. GW_FRAME_MAX_PAYLOAD: GW_FRAME_MAX_PAYLOAD). */
int gw_framer_create(int sock, size_t max_payload, struct gw_framer **ret_framer);
/* Closes every fd still held. NULL is a no-op. */
void gw_framer_destroy(struct gw_framer *framer);

/*
 * Read once. Call it only when gw_framer_next() has returned 0 (what was read is consumed;
 * -EBUSY otherwise). Returns the bytes read (> 0), 0 at end of file, -EAGAIN when a non-blocking
 * socket has nothing, -EMSGSIZE (more than GW_FRAME_MAX_FDS fds or a truncated control message),
 * -EPROTO (a second batch of fds while one is unclaimed), another negative errno of recvmsg().
 */
ssize_t gw_framer_fill(struct gw_framer *framer);

/*
 * The next complete message of what was read. Returns 1 with *ret_msg set (the caller
 * gw_message_finish()es it) and the fds it announced in ret_fds[0 .. *ret_nfds) (capacity
 * GW_FRAME_MAX_FDS; the caller owns them), 0 when more must be read, or: -EBADMSG (bad magic),
 * -EMSGSIZE (length out of range), -EPROTO (a malformed message, or fds not as announced),
 * -ENOMEM.
 */
int gw_framer_next(struct gw_framer *framer, struct gw_message *ret_msg, int *ret_fds,
		   unsigned *ret_nfds);

/* After an error: what went wrong, in words, and in *ret_id (may be NULL) the id of the message
 * at fault, 0 when there is none. "" when there was no error. */
const char *gw_framer_error(const struct gw_framer *framer, uint64_t *ret_id);

/* True while a frame is half received or read bytes wait to be handed out: a frame's clock
 * runs. */
bool gw_framer_busy(const struct gw_framer *framer);

/* Bytes read and not yet handed out. */
size_t gw_framer_buffered(const struct gw_framer *framer);

/* ---- writer ---- */

struct gw_frame_out {
	uint8_t *buf;         /* header + payload */
	size_t len, off;      /* off: bytes sent so far */
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;        /* still to be attached (0 once the first byte is out) */
	bool own_fds;         /* close the fds once sent, or at finish */
};

/*
 * Encode the frame of payload[0 .. len) with fds (nfds <= GW_FRAME_MAX_FDS) attached to its first
 * byte. With own_fds the frame owns the fds from this call on, also when it fails; without it
 * they must stay open until the first byte is out. Returns 0, -EMSGSIZE (len out of range),
 * -EINVAL, -ENOMEM.
 */
int gw_frame_out_init(struct gw_frame_out *out, const char *payload, size_t len, const int *fds,
		      unsigned nfds, bool own_fds);
/* Frees the buffer and closes owned fds not yet sent. NULL is a no-op. */
void gw_frame_out_finish(struct gw_frame_out *out);

/* One sendmsg() of the rest. Returns the bytes sent (> 0), or -EAGAIN on a full non-blocking
 * socket, or another negative errno (-EPIPE: the peer is gone). */
ssize_t gw_frame_out_send(struct gw_frame_out *out, int sock);
bool gw_frame_out_done(const struct gw_frame_out *out);

/* Send the rest, waiting with poll() while the socket is full, at most timeout_ms in all (< 0:
 * no limit). Returns 0, -ETIMEDOUT, or a negative errno of gw_frame_out_send(). */
int gw_frame_out_flush(struct gw_frame_out *out, int sock, int timeout_ms);

#endif
