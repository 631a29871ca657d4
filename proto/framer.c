/* SPDX-License-Identifier: MIT */
/* The frame reader with its fd batch, and the frame writer (gw-framer.h). */
#include "gw-framer.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct gw_framer {
	int sock;
	bool broken;
	struct gw_frame_decoder dec;
	/* The fds of the one read that brought them, until the message they came with takes
	 * them (the kernel hands a batch over with the read holding its frame's first byte). */
	int batch[GW_FRAME_MAX_FDS];
	unsigned nbatch;
	uint64_t error_id;
	char error[160];
	size_t len, pos; /* buf[pos .. len) is read and not yet fed to the decoder */
	char buf[GW_FRAMER_READ_SIZE];
};

static void close_all(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

int gw_framer_create(int sock, size_t max_payload, struct gw_framer **ret_framer)
{
	struct gw_framer *f;

	if (sock < 0 || !ret_framer)
		return -EINVAL;
	f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->sock = sock;
	f->broken = false;
	f->nbatch = 0;
	f->error_id = 0;
	f->error[0] = '\0';
	f->len = f->pos = 0;
	gw_frame_decoder_init(&f->dec, max_payload);
	*ret_framer = f;
	return 0;
}

void gw_framer_destroy(struct gw_framer *framer)
{
	if (!framer)
		return;
	close_all(framer->batch, framer->nbatch);
	gw_frame_decoder_finish(&framer->dec);
	free(framer);
}

/* The stream is out of step: close every fd held, remember why, refuse all further work. */
__attribute__((format(printf, 4, 5)))
static int framer_fail(struct gw_framer *f, int r, uint64_t id, const char *fmt, ...)
{
	va_list ap;

	close_all(f->batch, f->nbatch);
	f->nbatch = 0;
	f->broken = true;
	f->len = f->pos = 0;
	f->error_id = id;
	va_start(ap, fmt);
	vsnprintf(f->error, sizeof(f->error), fmt, ap);
	va_end(ap);
	return r;
}

const char *gw_framer_error(const struct gw_framer *framer, uint64_t *ret_id)
{
	if (ret_id)
		*ret_id = framer->error_id;
	return framer->error;
}

bool gw_framer_busy(const struct gw_framer *framer)
{
	return framer->pos < framer->len || !gw_frame_decoder_idle(&framer->dec);
}

size_t gw_framer_buffered(const struct gw_framer *framer)
{
	return framer->len - framer->pos;
}

ssize_t gw_framer_fill(struct gw_framer *framer)
{
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds = GW_FRAME_MAX_FDS;
	ssize_t n;

	if (framer->broken)
		return -EPROTO;
	if (framer->pos < framer->len)
		return -EBUSY;
	n = gw_recv_with_fds(framer->sock, framer->buf, sizeof(framer->buf), fds, &nfds);
	if (n == -EMSGSIZE) /* gw_recv_with_fds closed what came */
		return framer_fail(framer, -EMSGSIZE, 0,
				   "too many file descriptors in one message");
	if (n <= 0) {
		if (n == 0)
			close_all(fds, nfds);
		return n;
	}
	if (nfds > 0 && framer->nbatch > 0) {
		/* A second batch while the first is unclaimed: one was never announced. */
		close_all(fds, nfds);
		return framer_fail(framer, -EPROTO, 0,
				   "file descriptors came with a message that announced none");
	}
	if (nfds) {
		memcpy(framer->batch, fds, nfds * sizeof(int));
		framer->nbatch = nfds;
	}
	framer->len = (size_t)n;
	framer->pos = 0;
	return n;
}

/* Hand msg the batch it announces; returns 0 or an error for msg. */
static int claim_fds(struct gw_framer *f, const struct gw_message *msg, int *ret_fds,
		     unsigned *ret_nfds)
{
	if (msg->nfds == 0) {
		/* It announces none while a batch waits, and nothing follows in this read: no
		 * later message can claim the batch (it came with this read), so it was this one's. */
		if (f->nbatch > 0 && !gw_framer_busy(f))
			return framer_fail(f, -EPROTO, msg->id, "%u file descriptors came with a "
					   "message that announced none", f->nbatch);
		*ret_nfds = 0;
		return 0;
	}
	if (msg->nfds != f->nbatch)
		return framer_fail(f, -EPROTO, msg->id, "the message announces %u file "
				   "descriptors but %u came with it", msg->nfds, f->nbatch);
	memcpy(ret_fds, f->batch, f->nbatch * sizeof(int));
	*ret_nfds = f->nbatch;
	f->nbatch = 0;
	return 0;
}

/* A decoded payload (consumed) into a message with its fds. */
static int framer_take(struct gw_framer *f, char *payload, size_t len,
		       struct gw_message *ret_msg, int *ret_fds, unsigned *ret_nfds)
{
	struct gw_message msg;
	int r = gw_message_parse(payload, len, &msg);

	free(payload);
	if (r == -ENOMEM)
		return framer_fail(f, -ENOMEM, 0, "out of memory");
	if (r < 0)
		return framer_fail(f, -EPROTO, 0, "malformed message");
	r = claim_fds(f, &msg, ret_fds, ret_nfds);
	if (r < 0) {
		gw_message_finish(&msg);
		return r;
	}
	*ret_msg = msg;
	return 1;
}

int gw_framer_next(struct gw_framer *framer, struct gw_message *ret_msg, int *ret_fds,
		   unsigned *ret_nfds)
{
	struct gw_framer *f = framer;

	if (f->broken)
		return -EPROTO;
	while (f->pos < f->len) {
		char *payload = NULL;
		size_t plen = 0;
		ssize_t n = gw_frame_decoder_feed(&f->dec, f->buf + f->pos, f->len - f->pos,
						  &payload, &plen);

		if (n == -EMSGSIZE)
			return framer_fail(f, -EMSGSIZE, 0, "frame too large");
		if (n == -ENOMEM)
			return framer_fail(f, -ENOMEM, 0, "out of memory");
		if (n < 0)
			return framer_fail(f, -EBADMSG, 0, "bad frame header");
		f->pos += (size_t)n;
		if (payload)
			return framer_take(f, payload, plen, ret_msg, ret_fds, ret_nfds);
	}
	/* Everything read is consumed and no frame is half received, yet fds are left: they came
	 * with a message that did not announce them. */
	if (f->nbatch > 0 && gw_frame_decoder_idle(&f->dec))
		return framer_fail(f, -EPROTO, 0,
				   "file descriptors came with a message that announced none");
	return 0;
}

/* ---- writer ---- */

int gw_frame_out_init(struct gw_frame_out *out, const char *payload, size_t len, const int *fds,
		      unsigned nfds, bool own_fds)
{
	uint8_t header[GW_FRAME_HEADER_SIZE];
	int r;

	memset(out, 0, sizeof(*out));
	if (!payload || nfds > GW_FRAME_MAX_FDS || (nfds && !fds)) {
		r = -EINVAL;
		goto fail;
	}
	r = gw_frame_header_encode(len, header);
	if (r < 0)
		goto fail;
	out->buf = malloc(GW_FRAME_HEADER_SIZE + len);
	if (!out->buf) {
		r = -ENOMEM;
		goto fail;
	}
	memcpy(out->buf, header, sizeof(header));
	memcpy(out->buf + GW_FRAME_HEADER_SIZE, payload, len);
	out->len = GW_FRAME_HEADER_SIZE + len;
	if (nfds)
		memcpy(out->fds, fds, nfds * sizeof(int));
	out->nfds = nfds;
	out->own_fds = own_fds;
	return 0;
fail:
	if (own_fds && fds && nfds <= GW_FRAME_MAX_FDS)
		close_all(fds, nfds);
	return r;
}

void gw_frame_out_finish(struct gw_frame_out *out)
{
	if (!out)
		return;
	if (out->own_fds)
		close_all(out->fds, out->nfds);
	out->nfds = 0;
	free(out->buf);
	out->buf = NULL;
	out->len = out->off = 0;
}

bool gw_frame_out_done(const struct gw_frame_out *out)
{
	return out->off >= out->len;
}

ssize_t gw_frame_out_send(struct gw_frame_out *out, int sock)
{
	ssize_t n;

	if (gw_frame_out_done(out))
		return -EINVAL;
	/* The fds ride with the first byte only. */
	n = gw_sendmsg_fds(sock, out->buf + out->off, out->len - out->off, out->fds, out->nfds);
	if (n < 0)
		return n;
	if (n == 0)
		return -EPIPE;
	if (out->own_fds)
		close_all(out->fds, out->nfds);
	out->nfds = 0;
	out->off += (size_t)n;
	return n;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int gw_frame_out_flush(struct gw_frame_out *out, int sock, int timeout_ms)
{
	int64_t deadline = timeout_ms >= 0 ? monotonic_ms() + timeout_ms : -1;

	while (!gw_frame_out_done(out)) {
		struct pollfd p = { .fd = sock, .events = POLLOUT };
		ssize_t n = gw_frame_out_send(out, sock);
		int wait = -1;

		if (n > 0)
			continue;
		if (n != -EAGAIN)
			return (int)n;
		if (deadline >= 0) {
			int64_t left = deadline - monotonic_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			wait = left > 1000000 ? 1000000 : (int)left;
		}
		if (poll(&p, 1, wait) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}
