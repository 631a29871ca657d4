/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of proto/'s frame reader and writer (gw-framer.h) over real socket pairs: frames
 * split over reads, many in one read, fds across frames, every refusal of the FILE DESCRIPTORS
 * rules with each fd held closed, and the writer's fd ownership and timeout.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "gw-framer.h"
#include "gw-test.h"

/* ---- helpers ---- */

struct pair {
	int tx, rx;
	struct gw_framer *framer; /* reads rx */
};

static void pair_open(struct pair *p)
{
	int sv[2];

	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	p->tx = sv[0];
	p->rx = sv[1];
	GW_ASSERT_INT_EQ(fcntl(p->rx, F_SETFL, O_NONBLOCK), 0);
	GW_ASSERT_INT_EQ(gw_framer_create(p->rx, 0, &p->framer), 0);
}

static void pair_close(struct pair *p)
{
	gw_framer_destroy(p->framer);
	close(p->tx);
	close(p->rx);
}

/* header + payload of a request with that id announcing nfds, into out; returns its size. */
static size_t request_frame(uint64_t id, unsigned nfds, uint8_t *out)
{
	char *text = gw_request_encode(id, GW_METHOD_STATUS, NULL, nfds);
	size_t len;

	GW_ASSERT(text);
	len = strlen(text);
	GW_ASSERT_INT_EQ(gw_frame_header_encode(len, out), 0);
	memcpy(out + GW_FRAME_HEADER_SIZE, text, len);
	free(text);
	return GW_FRAME_HEADER_SIZE + len;
}

static void send_bytes(int sock, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	GW_ASSERT_INT_EQ(gw_sendmsg_fds(sock, buf, len, fds, nfds), (ssize_t)len);
}

static void open_nulls(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		GW_ASSERT(fds[i] >= 0);
	}
}

static void close_all(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/* The next message, reading as needed; fails on anything else. */
static void expect_message(struct pair *p, uint64_t id, unsigned nfds, int *fds)
{
	struct gw_message msg;
	unsigned got = 99;
	int r;

	while ((r = gw_framer_next(p->framer, &msg, fds, &got)) == 0)
		GW_ASSERT(gw_framer_fill(p->framer) > 0);
	if (r != 1)
		GW_FAIL("no message %llu: %d (%s)", (unsigned long long)id, r,
			gw_framer_error(p->framer, NULL));
	GW_ASSERT_INT_EQ(msg.id, id);
	GW_ASSERT_INT_EQ(msg.nfds, nfds);
	GW_ASSERT_INT_EQ(got, nfds);
	gw_message_finish(&msg);
}

/* Read and decode until the framer refuses the stream; returns its error. */
static int expect_refusal(struct pair *p)
{
	int fds[GW_FRAME_MAX_FDS];
	struct gw_message msg;

	for (;;) {
		unsigned n = 0;
		ssize_t r = gw_framer_next(p->framer, &msg, fds, &n);

		if (r < 0)
			return (int)r;
		if (r == 1) {
			close_all(fds, n);
			gw_message_finish(&msg);
			continue;
		}
		r = gw_framer_fill(p->framer);
		if (r < 0 && r != -EAGAIN)
			return (int)r;
		GW_ASSERT(r > 0);
	}
}

/* ---- reading ---- */

GW_TEST(framer_split_frames)
{
	uint8_t buf[512];
	struct pair p;
	size_t len;
	struct gw_message msg;
	int fds[GW_FRAME_MAX_FDS];
	unsigned n;

	pair_open(&p);
	len = request_frame(7, 0, buf);
	/* one byte per read: nothing until the last one */
	for (size_t i = 0; i < len; i++) {
		send_bytes(p.tx, buf + i, 1, NULL, 0);
		GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), 1);
		if (i + 1 < len) {
			GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, fds, &n), 0);
			GW_ASSERT(gw_framer_busy(p.framer));
		}
	}
	expect_message(&p, 7, 0, fds);
	GW_ASSERT(!gw_framer_busy(p.framer));
	GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), -EAGAIN);
	GW_ASSERT_STR_EQ(gw_framer_error(p.framer, NULL), "");
	pair_close(&p);
}

GW_TEST(framer_many_frames_in_one_read)
{
	uint8_t buf[4096];
	size_t len = 0;
	struct pair p;
	int fds[GW_FRAME_MAX_FDS];
	struct gw_message msg;
	unsigned n;

	pair_open(&p);
	for (uint64_t id = 1; id <= 20; id++)
		len += request_frame(id, 0, buf + len);
	send_bytes(p.tx, buf, len, NULL, 0);
	GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), (ssize_t)len);
	for (uint64_t id = 1; id <= 20; id++) {
		GW_ASSERT(gw_framer_buffered(p.framer) > 0);
		/* the rest waits: a fill now is a caller's mistake */
		GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), -EBUSY);
		expect_message(&p, id, 0, fds);
	}
	GW_ASSERT_INT_EQ(gw_framer_buffered(p.framer), 0);
	GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, fds, &n), 0);
	pair_close(&p);
}

GW_TEST(framer_fds_across_frames)
{
	uint8_t a[512], b[512];
	size_t la, lb;
	int fds[3], got[GW_FRAME_MAX_FDS];
	struct pair p;
	struct stat st1, st2;
	int before;

	pair_open(&p);
	before = gw_test_count_fds();
	open_nulls(fds, 3);
	la = request_frame(1, 0, a);
	lb = request_frame(2, 3, b);
	/* frame 1's end and frame 2's start in one read, the fds with frame 2's first byte */
	send_bytes(p.tx, a, la - 5, NULL, 0);
	GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), (ssize_t)(la - 5));
	memmove(a, a + la - 5, 5);
	memcpy(a + 5, b, 10);
	send_bytes(p.tx, a, 5, NULL, 0);
	send_bytes(p.tx, a + 5, 10, fds, 3);
	send_bytes(p.tx, b + 10, lb - 10, NULL, 0);
	expect_message(&p, 1, 0, got);
	expect_message(&p, 2, 3, got);
	for (int i = 0; i < 3; i++) {
		GW_ASSERT_INT_EQ(fstat(fds[i], &st1), 0);
		GW_ASSERT_INT_EQ(fstat(got[i], &st2), 0);
		GW_ASSERT(st1.st_ino == st2.st_ino && got[i] != fds[i]);
	}
	close_all(got, 3);
	close_all(fds, 3);
	/* and the next frame without fds is fine */
	la = request_frame(3, 0, a);
	send_bytes(p.tx, a, la, NULL, 0);
	expect_message(&p, 3, 0, got);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	pair_close(&p);
}

GW_TEST(framer_bad_magic_and_length)
{
	static const uint8_t bad_magic[] = { 'G', 'W', 'R', 'X', 2, 0, 0, 0, '{', '}' };
	static const uint8_t too_long[] = { 'G', 'W', 'R', 'M', 1, 0, 0x10, 0 };
	static const uint8_t too_short[] = { 'G', 'W', 'R', 'M', 1, 0, 0, 0, '{' };
	const struct {
		const uint8_t *bytes;
		size_t len;
		int r;
		const char *text;
	} cases[] = {
		{ bad_magic, sizeof(bad_magic), -EBADMSG, "bad frame header" },
		{ too_long, sizeof(too_long), -EMSGSIZE, "frame too large" },
		{ too_short, sizeof(too_short), -EMSGSIZE, "frame too large" },
		{ (const uint8_t *)"GWRM\x03\0\0\0{x}", 11, -EPROTO, "malformed message" },
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		int fds[GW_FRAME_MAX_FDS], before = gw_test_count_fds();
		struct gw_message msg;
		struct pair p;
		unsigned n;

		pair_open(&p);
		open_nulls(fds, 2);
		/* fds held by the framer are closed by the refusal */
		send_bytes(p.tx, cases[k].bytes, cases[k].len, fds, 2);
		close_all(fds, 2);
		GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), (ssize_t)cases[k].len);
		GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, fds, &n), cases[k].r);
		GW_ASSERT_STR_EQ(gw_framer_error(p.framer, NULL), cases[k].text);
		GW_ASSERT_INT_EQ(gw_test_count_fds(), before + 2);
		/* the stream stays refused */
		GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, fds, &n), -EPROTO);
		GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), -EPROTO);
		pair_close(&p);
		GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	}
}

GW_TEST(framer_too_many_fds)
{
	int fds[GW_FRAME_MAX_FDS + 1], before = gw_test_count_fds();
	uint8_t buf[512];
	struct msghdr mh = { 0 };
	struct iovec iov;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * (GW_FRAME_MAX_FDS + 1))];
	} cbuf;
	struct cmsghdr *cm;
	struct pair p;

	pair_open(&p);
	open_nulls(fds, GW_FRAME_MAX_FDS + 1);
	iov.iov_base = buf;
	iov.iov_len = request_frame(1, GW_FRAME_MAX_FDS, buf);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf.buf;
	mh.msg_controllen = sizeof(cbuf.buf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * (GW_FRAME_MAX_FDS + 1));
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * (GW_FRAME_MAX_FDS + 1));
	GW_ASSERT_INT_EQ(sendmsg(p.tx, &mh, 0), (ssize_t)iov.iov_len);
	close_all(fds, GW_FRAME_MAX_FDS + 1);
	GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), -EMSGSIZE);
	GW_ASSERT_STR_CONTAINS(gw_framer_error(p.framer, NULL), "too many file descriptors");
	pair_close(&p);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
}

GW_TEST(framer_unannounced_fds)
{
	int fds[4], got[GW_FRAME_MAX_FDS], before = gw_test_count_fds();
	uint8_t buf[512];
	uint64_t id = 0;
	struct gw_message msg;
	struct pair p;
	unsigned n;
	size_t len;

	/* the only message of the read announces none: the batch was its */
	pair_open(&p);
	open_nulls(fds, 4);
	len = request_frame(5, 0, buf);
	send_bytes(p.tx, buf, len, fds, 4);
	close_all(fds, 4);
	GW_ASSERT(gw_framer_fill(p.framer) > 0);
	GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, got, &n), -EPROTO);
	GW_ASSERT_STR_EQ(gw_framer_error(p.framer, &id),
			 "4 file descriptors came with a message that announced none");
	GW_ASSERT_INT_EQ(id, 5);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before + 2);
	pair_close(&p);

	/* it announces another number */
	pair_open(&p);
	open_nulls(fds, 4);
	len = request_frame(6, 3, buf);
	send_bytes(p.tx, buf, len, fds, 4);
	close_all(fds, 4);
	GW_ASSERT(gw_framer_fill(p.framer) > 0);
	GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, got, &n), -EPROTO);
	GW_ASSERT_STR_EQ(gw_framer_error(p.framer, &id),
			 "the message announces 3 file descriptors but 4 came with it");
	GW_ASSERT_INT_EQ(id, 6);
	pair_close(&p);

	/* fds with a read that completes no frame, then nothing claims them */
	pair_open(&p);
	open_nulls(fds, 1);
	send_bytes(p.tx, "GW", 2, fds, 1);
	close_all(fds, 1);
	GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), 2);
	GW_ASSERT_INT_EQ(gw_framer_next(p.framer, &msg, got, &n), 0); /* half a header */
	pair_close(&p);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
}

GW_TEST(framer_second_batch_while_one_waits)
{
	int fds[2], before = gw_test_count_fds();
	uint8_t buf[512];
	struct pair p;
	size_t len;

	pair_open(&p);
	open_nulls(fds, 2);
	len = request_frame(1, 1, buf);
	/* the first half with one fd, the second half with another */
	send_bytes(p.tx, buf, len / 2, fds, 1);
	send_bytes(p.tx, buf + len / 2, len - len / 2, fds + 1, 1);
	close_all(fds, 2);
	GW_ASSERT_INT_EQ(expect_refusal(&p), -EPROTO);
	GW_ASSERT_STR_CONTAINS(gw_framer_error(p.framer, NULL), "announced none");
	pair_close(&p);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
}

GW_TEST(framer_destroy_closes_held_fds)
{
	int fds[3], before = gw_test_count_fds();
	uint8_t buf[512];
	struct pair p;
	size_t len;

	pair_open(&p);
	open_nulls(fds, 3);
	len = request_frame(1, 3, buf);
	send_bytes(p.tx, buf, len - 1, fds, 3); /* the frame never completes */
	close_all(fds, 3);
	GW_ASSERT(gw_framer_fill(p.framer) > 0);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before + 2 + 3);
	pair_close(&p);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	gw_framer_destroy(NULL);
}

GW_TEST(framer_eof_and_arguments)
{
	struct gw_framer *f = NULL;
	struct pair p;

	GW_ASSERT_INT_EQ(gw_framer_create(-1, 0, &f), -EINVAL);
	pair_open(&p);
	close(p.tx);
	p.tx = -1;
	GW_ASSERT_INT_EQ(gw_framer_fill(p.framer), 0);
	pair_close(&p);
}

/* ---- writing ---- */

GW_TEST(frame_out_owned_fds_close_once_sent)
{
	int fds[2], got[GW_FRAME_MAX_FDS], before = gw_test_count_fds();
	char *text = gw_reply_encode(9, NULL, 2);
	struct gw_frame_out out;
	struct pair p;

	pair_open(&p);
	open_nulls(fds, 2);
	GW_ASSERT_INT_EQ(gw_frame_out_init(&out, text, strlen(text), fds, 2, true), 0);
	GW_ASSERT(!gw_frame_out_done(&out));
	GW_ASSERT_INT_EQ(gw_frame_out_flush(&out, p.tx, 1000), 0);
	GW_ASSERT(gw_frame_out_done(&out));
	gw_frame_out_finish(&out);
	GW_ASSERT_INT_EQ(fcntl(fds[0], F_GETFD), -1); /* ours are closed */
	expect_message(&p, 9, 2, got);
	close_all(got, 2);
	pair_close(&p);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	gw_frame_out_finish(NULL);
	free(text);
}

GW_TEST(frame_out_refuses_and_closes_owned)
{
	int fds[1], before = gw_test_count_fds();
	struct gw_frame_out out;

	open_nulls(fds, 1);
	GW_ASSERT_INT_EQ(gw_frame_out_init(&out, "{", 1, fds, 1, true), -EMSGSIZE);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	open_nulls(fds, 1);
	GW_ASSERT_INT_EQ(gw_frame_out_init(&out, "{}", 2, fds, GW_FRAME_MAX_FDS + 1, false),
			 -EINVAL);
	GW_ASSERT_INT_EQ(gw_frame_out_init(&out, "{}", 2, fds, 1, false), 0);
	gw_frame_out_finish(&out);
	GW_ASSERT(fcntl(fds[0], F_GETFD) >= 0); /* not owned: still open */
	close(fds[0]);
}

GW_TEST(frame_out_flush_times_out_on_a_full_socket)
{
	size_t len = GW_FRAME_MAX_PAYLOAD;
	char *text = malloc(len + 1);
	struct gw_frame_out out;
	int sv[2], sndbuf = 4096;

	GW_ASSERT(text);
	memset(text, ' ', len);
	memcpy(text, "{}", 2);
	text[len] = '\0';
	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	GW_ASSERT_INT_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	GW_ASSERT_INT_EQ(gw_frame_out_init(&out, text, len, NULL, 0, false), 0);
	GW_ASSERT_INT_EQ(gw_frame_out_flush(&out, sv[0], 100), -ETIMEDOUT);
	GW_ASSERT(out.off > 0 && !gw_frame_out_done(&out));
	close(sv[1]);
	GW_ASSERT_INT_EQ(gw_frame_out_flush(&out, sv[0], 100), -EPIPE);
	gw_frame_out_finish(&out);
	close(sv[0]);
	free(text);
}

GW_TEST_MAIN()
