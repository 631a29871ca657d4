/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "gw-proto.h"

static const struct {
	int err;          /* negative errno */
	const char *name; /* GW_ERROR_* */
	int primary;      /* the name's errno (gw_errno_for_error) */
} table[] = {
	{ -EINVAL, GW_ERROR_INVALID_REQUEST, 1 },
	{ -EACCES, GW_ERROR_PERMISSION_DENIED, 1 },
	{ -EPERM, GW_ERROR_PERMISSION_DENIED, 0 },
	{ -ESRCH, GW_ERROR_NO_SUCH_PROCESS, 1 },
	{ -ENOEXEC, GW_ERROR_NOT_CUDA, 1 },
	{ -ENODEV, GW_ERROR_NO_SUCH_GPU, 1 },
	{ -ENODEV, GW_ERROR_DRAINING, 1 },
	{ -ENODEV, GW_ERROR_NO_GPU_AVAILABLE, 1 },
	{ -ENOENT, GW_ERROR_NO_SUCH_LEASE, 1 },
	{ -ENOTSUP, GW_ERROR_DRIVER_UNAVAILABLE, 1 },
	{ -EBADFD, GW_ERROR_ILLEGAL_STATE, 1 },
	{ -ETIMEDOUT, GW_ERROR_TIMEOUT, 1 },
	{ -EBUSY, GW_ERROR_BUSY, 1 },
	{ -EDQUOT, GW_ERROR_LIMIT, 1 },
	{ -EMFILE, GW_ERROR_LIMIT, 0 },
	{ -EILSEQ, GW_ERROR_IMAGE, 1 },
	{ -ENODATA, GW_ERROR_IMAGE, 0 },
	{ -ENOSPC, GW_ERROR_IMAGE, 0 },
	{ -EFBIG, GW_ERROR_IMAGE, 0 },
	{ -ENOTCONN, GW_ERROR_AGENT, 1 },
	{ -EPROTO, GW_ERROR_PROTOCOL_VERSION, 1 },
	{ -EPROTO, GW_ERROR_HELLO_REQUIRED, 1 },
	{ -EOPNOTSUPP, GW_ERROR_UNKNOWN_METHOD, 1 },
	{ -EIO, GW_ERROR_CUDA, 1 },
	{ -ENOMEM, GW_ERROR_INTERNAL, 1 },
};

const char *gw_error_for_errno(int err)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].err == err)
			return table[i].name;
	return GW_ERROR_INTERNAL;
}

int gw_errno_for_error(const char *name)
{
	if (!name)
		return -EIO;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].primary && strcmp(table[i].name, name) == 0)
			return table[i].err;
	return -EIO;
}
