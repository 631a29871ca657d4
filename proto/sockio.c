/* SPDX-License-Identifier: MIT */
/* Socket I/O with SCM_RIGHTS fd passing. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "gw-framer.h"

union gw_cmsg_buf {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int) * GW_FRAME_MAX_FDS)];
};

static ssize_t sendmsg_iov(int sock, struct iovec *iov, int iovcnt, const int *fds, unsigned nfds)
{
	union gw_cmsg_buf cbuf;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
	ssize_t n;

	if (nfds > GW_FRAME_MAX_FDS || (nfds && !fds))
		return -EINVAL;
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
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return n;
}

ssize_t gw_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	if (!buf || len == 0 || len > SSIZE_MAX)
		return -EINVAL;
	return sendmsg_iov(sock, &iov, 1, fds, nfds);
}

int gw_send_frame(int sock, const char *payload, size_t len, const int *fds, unsigned nfds)
{
	struct gw_frame_out out;
	int r = gw_frame_out_init(&out, payload, len, fds, nfds, false);

	while (r == 0 && !gw_frame_out_done(&out)) {
		ssize_t n = gw_frame_out_send(&out, sock);

		if (n < 0)
			r = (int)n;
	}
	gw_frame_out_finish(&out);
	return r;
}

static void close_cmsg_fds(struct msghdr *mh)
{
	struct cmsghdr *cm;

	for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
}

ssize_t gw_recv_with_fds(int sock, void *buf, size_t len, int *fds, unsigned *nfds)
{
	union gw_cmsg_buf cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	struct cmsghdr *cm;
	unsigned cap, count = 0;
	ssize_t n;

	if (!buf || len == 0 || len > SSIZE_MAX || !nfds || (*nfds && !fds))
		return -EINVAL;
	cap = *nfds;
	memset(&cbuf, 0, sizeof(cbuf));
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	if (mh.msg_flags & MSG_CTRUNC) {
		close_cmsg_fds(&mh);
		*nfds = 0;
		return -EMSGSIZE;
	}
	/* Count first so that an over-capacity message is refused as a whole. */
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			count += (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
	if (count > cap) {
		close_cmsg_fds(&mh);
		*nfds = 0;
		return -EMSGSIZE;
	}
	count = 0;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		memcpy(fds + count, CMSG_DATA(cm), k * sizeof(int));
		count += (unsigned)k;
	}
	*nfds = count;
	return n;
}
