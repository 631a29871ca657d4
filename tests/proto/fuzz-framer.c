/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for proto/'s frame reader (gw-framer.h) over a real socket pair: the input is
 * written in chunks whose sizes follow a pattern chosen by its length and last byte, cut where
 * a frame starts; a frame's first chunk mostly carries as many fds as it announces, other chunks
 * now and then some. The framer reads and decodes after every chunk. Invariants (any
 * violation aborts): a message comes with exactly the fds it announced, each one open; after a
 * refusal the framer refuses everything and holds no fd; no fd leaks, whatever the input.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw-framer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Statistics for fuzz-replay: messages handed out, and those that carried fds. */
unsigned long fuzz_proto_payloads, fuzz_proto_accepted;

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "fuzz-framer: %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
			abort();                                                                  \
		}                                                                                 \
	} while (0)

#define FUZZ_SNDBUF (256 * 1024)

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	CHECK(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

struct run {
	int tx, rx;
	struct gw_framer *framer;
	int refused;
};

/* Everything there is to read and decode now. */
static void drain(struct run *run)
{
	for (;;) {
		int fds[GW_FRAME_MAX_FDS];
		unsigned nfds = 12345;
		struct gw_message msg;
		int r = gw_framer_next(run->framer, &msg, fds, &nfds);
		ssize_t n;

		if (run->refused) {
			CHECK(r == -EPROTO);
			CHECK(gw_framer_fill(run->framer) == -EPROTO);
			return;
		}
		if (r == 1) {
			fuzz_proto_payloads++;
			fuzz_proto_accepted += nfds > 0;
			CHECK(nfds == msg.nfds && nfds <= GW_FRAME_MAX_FDS);
			for (unsigned i = 0; i < nfds; i++) {
				CHECK(fcntl(fds[i], F_GETFD) >= 0);
				close(fds[i]);
			}
			gw_message_finish(&msg);
			continue;
		}
		if (r < 0) {
			CHECK(r == -EBADMSG || r == -EMSGSIZE || r == -EPROTO || r == -ENOMEM);
			CHECK(gw_framer_error(run->framer, NULL)[0] != '\0');
			run->refused = 1;
			continue;
		}
		CHECK(gw_framer_buffered(run->framer) == 0);
		n = gw_framer_fill(run->framer);
		if (n == -EAGAIN)
			return;
		if (n == -EMSGSIZE || n == -EPROTO) {
			run->refused = 1;
			continue;
		}
		CHECK(n > 0);
	}
}

/* 0, 1, 2 or 3 fds mostly, now and then one more than a frame may carry. */
static unsigned fds_for(unsigned pick)
{
	if (pick % 61 == 60)
		return GW_FRAME_MAX_FDS + 1;
	return pick % 7 < 4 ? 0 : pick % 7 - 3;
}

/* Does a frame start at p? Then how many fds its payload announces ("fds":N), else 0. */
static bool frame_starts(const uint8_t *p, size_t left, unsigned *ret_announced)
{
	static const char key[] = "\"fds\":";
	size_t len, i;

	if (left < GW_FRAME_HEADER_SIZE || memcmp(p, "GWRM", 4) != 0)
		return false;
	len = (size_t)p[4] | (size_t)p[5] << 8 | (size_t)p[6] << 16 | (size_t)p[7] << 24;
	if (len > left - GW_FRAME_HEADER_SIZE)
		len = left - GW_FRAME_HEADER_SIZE;
	*ret_announced = 0;
	for (i = GW_FRAME_HEADER_SIZE; i + sizeof(key) - 1 < GW_FRAME_HEADER_SIZE + len; i++) {
		if (memcmp(p + i, key, sizeof(key) - 1) == 0) {
			*ret_announced = (unsigned)strtoul((const char *)p + i + sizeof(key) - 1,
							   NULL, 10) % (GW_FRAME_MAX_FDS + 2);
			break;
		}
	}
	return true;
}

/* The next chunk from off: its size, and in *ret_nfds the fds to attach. Chunks end where a
 * frame starts; a frame's first chunk mostly carries the fds it announces. */
static size_t next_chunk(const uint8_t *data, size_t size, size_t off, unsigned pick,
			 unsigned *ret_nfds)
{
	size_t chunk = 1 + (pick >> 8) % ((pick & 3) == 3 ? 4096 : 97), end;
	unsigned announced;

	if (chunk > size - off)
		chunk = size - off;
	end = off + chunk;
	for (size_t i = off + 1; i < end; i++) {
		if (data[i] == 'G' && frame_starts(data + i, size - i, &announced)) {
			chunk = i - off;
			break;
		}
	}
	*ret_nfds = (pick >> 20) % 16 == 0 ? fds_for(pick >> 24) : 0;
	if (frame_starts(data + off, size - off, &announced) && (pick >> 28) % 4 != 0)
		*ret_nfds = announced;
	return chunk;
}

static void send_chunk(struct run *run, const uint8_t *p, size_t len, unsigned nfds)
{
	int fds[GW_FRAME_MAX_FDS + 1];
	struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * (GW_FRAME_MAX_FDS + 1))];
	} cbuf;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	for (unsigned i = 0; i < nfds; i++) {
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		CHECK(fds[i] >= 0);
	}
	if (nfds) {
		struct cmsghdr *cm;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	n = sendmsg(run->tx, &mh, MSG_NOSIGNAL);
	CHECK(n == (ssize_t)len);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run run = { 0 };
	unsigned seed, k = 0;
	int sv[2], before, sndbuf = FUZZ_SNDBUF;
	size_t off = 0;

	if (size == 0)
		return 0;
	/* The pattern: from the length and the last byte, so that a frame's own start is kept. */
	seed = (unsigned)size * 31u + data[size - 1];
	before = count_fds();
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	run.tx = sv[0];
	run.rx = sv[1];
	CHECK(gw_framer_create(run.rx, 0, &run.framer) == 0);
	while (off < size && !run.refused) {
		unsigned pick = (seed + k++) * 2654435761u, nfds;
		size_t chunk = next_chunk(data, size, off, pick, &nfds);

		send_chunk(&run, data + off, chunk, nfds);
		off += chunk;
		drain(&run);
	}
	gw_framer_destroy(run.framer);
	close(run.tx);
	close(run.rx);
	/* Whatever was sent and not handed out is closed: the socket's queue went with it. */
	CHECK(count_fds() == before);
	return 0;
}
