/* SPDX-License-Identifier: MIT */
/* Unit tests of proto/'s socket I/O: fd passing with SCM_RIGHTS, whole frames on blocking and
 * non-blocking sockets. The frame reader and writer on top of it: test-framer.c. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "gw-proto.h"
#include "gw-test.h"

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p)
		GW_FAIL("out of memory");
	return p;
}

/* ---- fd passing ---- */

static int make_file(const char *dir, int i)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/f%d", dir, i);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	GW_ASSERT(fd >= 0);
	return fd;
}

GW_TEST(fd_passing_roundtrip)
{
	char dir[] = "/tmp/gw-proto-test.XXXXXX", path[300];
	int sv[2], fds[3], got[GW_FRAME_MAX_FDS];
	unsigned nfds = GW_FRAME_MAX_FDS;
	char *text = gw_request_encode(1, GW_METHOD_HELLO, NULL, 3), *payload = NULL;
	uint8_t buf[512];
	struct gw_frame_decoder dec;
	struct gw_message msg;
	size_t plen;
	ssize_t n;

	GW_ASSERT(mkdtemp(dir));
	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	for (int i = 0; i < 3; i++)
		fds[i] = make_file(dir, i);
	GW_ASSERT_INT_EQ(gw_send_frame(sv[0], text, strlen(text), fds, 3), 0);
	n = gw_recv_with_fds(sv[1], buf, sizeof(buf), got, &nfds);
	GW_ASSERT_INT_EQ(n, GW_FRAME_HEADER_SIZE + strlen(text));
	GW_ASSERT_INT_EQ(nfds, 3);
	for (int i = 0; i < 3; i++) {
		struct stat a, b;

		GW_ASSERT_INT_EQ(fstat(fds[i], &a), 0);
		GW_ASSERT_INT_EQ(fstat(got[i], &b), 0);
		GW_ASSERT(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
		GW_ASSERT(got[i] != fds[i]);
		GW_ASSERT(fcntl(got[i], F_GETFD) & FD_CLOEXEC);
	}
	gw_frame_decoder_init(&dec, 0);
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, buf, (size_t)n, &payload, &plen), n);
	GW_ASSERT(payload);
	GW_ASSERT_INT_EQ(gw_message_parse(payload, plen, &msg), 0);
	GW_ASSERT_INT_EQ(msg.nfds, 3);
	gw_message_finish(&msg);
	free(payload);
	gw_frame_decoder_finish(&dec);

	/* Without fds: none arrive; EOF reads 0. */
	GW_ASSERT_INT_EQ(gw_sendmsg_fds(sv[0], "xy", 2, NULL, 0), 2);
	nfds = GW_FRAME_MAX_FDS;
	GW_ASSERT_INT_EQ(gw_recv_with_fds(sv[1], buf, sizeof(buf), got, &nfds), 2);
	GW_ASSERT_INT_EQ(nfds, 0);
	close(sv[0]);
	nfds = GW_FRAME_MAX_FDS;
	GW_ASSERT_INT_EQ(gw_recv_with_fds(sv[1], buf, sizeof(buf), got, &nfds), 0);
	for (int i = 0; i < 3; i++) {
		close(fds[i]);
		close(got[i]);
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		unlink(path);
	}
	close(sv[1]);
	rmdir(dir);
	free(text);
}

GW_TEST(fd_passing_over_capacity)
{
	char dir[] = "/tmp/gw-proto-test.XXXXXX", path[300];
	int sv[2], fds[5], got[2] = { -1, -1 }, before, after;
	unsigned nfds = 2;
	uint8_t buf[64];

	GW_ASSERT(mkdtemp(dir));
	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	for (int i = 0; i < 5; i++)
		fds[i] = make_file(dir, i);
	before = gw_test_count_fds();
	GW_ASSERT_INT_EQ(gw_sendmsg_fds(sv[0], "GWRM", 4, fds, 5), 4);
	GW_ASSERT_INT_EQ(gw_recv_with_fds(sv[1], buf, sizeof(buf), got, &nfds), -EMSGSIZE);
	GW_ASSERT_INT_EQ(nfds, 0);
	after = gw_test_count_fds();
	GW_ASSERT_INT_EQ(after, before); /* every received fd was closed */

	/* Capacity 0 refuses any fd. */
	nfds = 0;
	GW_ASSERT_INT_EQ(gw_sendmsg_fds(sv[0], "GWRM", 4, fds, 1), 4);
	GW_ASSERT_INT_EQ(gw_recv_with_fds(sv[1], buf, sizeof(buf), NULL, &nfds), -EMSGSIZE);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	GW_ASSERT_INT_EQ(gw_sendmsg_fds(sv[0], "GWRM", 4, fds, GW_FRAME_MAX_FDS + 1), -EINVAL);

	for (int i = 0; i < 5; i++) {
		close(fds[i]);
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		unlink(path);
	}
	close(sv[0]);
	close(sv[1]);
	rmdir(dir);
}

GW_TEST(fd_passing_truncated_control)
{
	int sv[2], fds[GW_FRAME_MAX_FDS + 8], got[GW_FRAME_MAX_FDS], before;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(fds))];
	} cbuf;
	struct iovec iov = { .iov_base = "GWRM", .iov_len = 4 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf) };
	struct cmsghdr *cm;
	unsigned nfds = GW_FRAME_MAX_FDS;
	uint8_t buf[64];
	int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	GW_ASSERT(null_fd >= 0);
	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		fds[i] = null_fd;
	memset(&cbuf, 0, sizeof(cbuf));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	before = gw_test_count_fds();
	/* More fds than any frame may carry: the control buffer overflows (MSG_CTRUNC). */
	GW_ASSERT_INT_EQ(sendmsg(sv[0], &mh, 0), 4);
	GW_ASSERT_INT_EQ(gw_recv_with_fds(sv[1], buf, sizeof(buf), got, &nfds), -EMSGSIZE);
	GW_ASSERT_INT_EQ(nfds, 0);
	GW_ASSERT_INT_EQ(gw_test_count_fds(), before);
	close(sv[0]);
	close(sv[1]);
	close(null_fd);
}

GW_TEST(send_frame_large_short_writes)
{
	int sv[2], sndbuf = 4096;
	char *payload = xmalloc(GW_FRAME_MAX_PAYLOAD + 1), *got = NULL;
	struct gw_frame_decoder dec;
	pid_t pid;
	size_t plen = 0;
	int status;

	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	GW_ASSERT_INT_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	/* A maximal valid message. */
	memset(payload, 'x', GW_FRAME_MAX_PAYLOAD);
	memcpy(payload, "{\"id\":1,\"result\":{\"", 19);
	memcpy(payload + GW_FRAME_MAX_PAYLOAD - 6, "\":0}} ", 6);
	payload[GW_FRAME_MAX_PAYLOAD] = '\0';
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		close(sv[1]);
		_exit(gw_send_frame(sv[0], payload, GW_FRAME_MAX_PAYLOAD, NULL, 0) == 0 ? 0 : 1);
	}
	close(sv[0]);
	gw_frame_decoder_init(&dec, 0);
	while (!got) {
		uint8_t buf[3000];
		unsigned nfds = 0;
		ssize_t n = gw_recv_with_fds(sv[1], buf, sizeof(buf), NULL, &nfds), off = 0;

		GW_ASSERT(n > 0);
		while (off < n && !got) {
			ssize_t r = gw_frame_decoder_feed(&dec, buf + off, (size_t)(n - off), &got,
							  &plen);
			GW_ASSERT(r >= 0);
			off += r;
		}
		GW_ASSERT(off == n);
	}
	GW_ASSERT_INT_EQ(plen, GW_FRAME_MAX_PAYLOAD);
	GW_ASSERT(memcmp(got, payload, plen) == 0);
	GW_ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
	GW_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Frames out of range are refused before anything is sent. */
	GW_ASSERT_INT_EQ(gw_send_frame(sv[1], "{", 1, NULL, 0), -EMSGSIZE);
	GW_ASSERT_INT_EQ(gw_send_frame(sv[1], payload, GW_FRAME_MAX_PAYLOAD + 1, NULL, 0),
			 -EMSGSIZE);
	gw_frame_decoder_finish(&dec);
	free(got);
	free(payload);
	close(sv[1]);
}

GW_TEST(nonblocking_eagain_and_epipe)
{
	int sv[2];
	char buf[4096] = { 0 };
	unsigned nfds = 0;
	ssize_t n;

	GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	GW_ASSERT_INT_EQ(gw_recv_with_fds(sv[1], buf, sizeof(buf), NULL, &nfds), -EAGAIN);
	do
		n = gw_sendmsg_fds(sv[0], buf, sizeof(buf), NULL, 0);
	while (n > 0);
	GW_ASSERT_INT_EQ(n, -EAGAIN);
	close(sv[1]);
	/* MSG_NOSIGNAL: EPIPE comes back as an error, not as SIGPIPE. */
	GW_ASSERT_INT_EQ(gw_sendmsg_fds(sv[0], buf, 1, NULL, 0), -EPIPE);
	GW_ASSERT_INT_EQ(gw_send_frame(sv[0], "{}", 2, NULL, 0), -EPIPE);
	close(sv[0]);
}

GW_TEST_MAIN()
