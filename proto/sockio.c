/* SPDX-License-Identifier: MIT */
/* Socket I/O with SCM_RIGHTS fd passing. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "gw-proto.h"

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
	uint8_t header[GW_FRAME_HEADER_SIZE];
	struct iovec iov[2];
	size_t total, sent = 0;
	int r;

	if (!payload)
		return -EINVAL;
	r = gw_frame_header_encode(len, header);
	if (r < 0)
		return r;
	if (nfds > GW_FRAME_MAX_FDS || (nfds && !fds))
		return -EINVAL;
	total = sizeof(header) + len;
	while (sent < total) {
		int iovcnt = 0;
		ssize_t n;

		if (sent < sizeof(header)) {
			iov[iovcnt].iov_base = header + sent;
			iov[iovcnt++].iov_len = sizeof(header) - sent;
			iov[iovcnt].iov_base = (void *)payload;
			iov[iovcnt++].iov_len = len;
		} else {
			iov[iovcnt].iov_base = (void *)(payload + (sent - sizeof(header)));
			iov[iovcnt++].iov_len = total - sent;
		}
		/* The fds ride with the first byte only. */
		n = sendmsg_iov(sock, iov, iovcnt, sent == 0 ? fds : NULL, sent == 0 ? nfds : 0);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EPIPE;
		sent += (size_t)n;
	}
	return 0;
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
