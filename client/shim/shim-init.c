/* SPDX-License-Identifier: MIT */
/* Configuration from the environment, the shim's own address range, and debug logging. */
#include "shim.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct shim_config shim_cfg = { .min_bytes = SHIM_DEFAULT_MIN_BYTES };

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static const void *own_base;

static bool env_flag(const char *name)
{
	const char *s = getenv(name);

	return s && strcmp(s, "1") == 0;
}

/* "N", "Nk", "Nm", "Ng" (binary units), N >= 1. */
static int parse_bytes(const char *s, size_t *ret)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K':
		shift = 10;
		break;
	case 'm': case 'M':
		shift = 20;
		break;
	case 'g': case 'G':
		shift = 30;
		break;
	default:
		return -EINVAL;
	}
	if (*end && end[1])
		return -EINVAL;
	if (v == 0 || v > (SIZE_MAX >> shift))
		return -EINVAL;
	*ret = (size_t)(v << shift);
	return 0;
}

static void init_once_fn(void)
{
	const char *min = getenv(SHIM_ENV_MIN_BYTES);
	Dl_info info;

	shim_cfg.disabled = env_flag(SHIM_ENV_DISABLE);
	shim_cfg.debug = env_flag(SHIM_ENV_DEBUG);
	if (min && *min && parse_bytes(min, &shim_cfg.min_bytes) < 0)
		shim_log("ignoring %s=%s (want bytes, optionally with k, m or g)",
			 SHIM_ENV_MIN_BYTES, min);
	if (dladdr((const void *)init_once_fn, &info))
		own_base = info.dli_fbase;
	shim_dlsym_init();
	shim_log("loaded%s, converting allocations of %zu bytes and more",
		 shim_cfg.disabled ? " but disabled" : "", shim_cfg.min_bytes);
}

void shim_init(void)
{
	pthread_once(&init_once, init_once_fn);
}

bool shim_is_own(const void *fn)
{
	Dl_info info;

	return fn && own_base && dladdr(fn, &info) && info.dli_fbase == own_base;
}

void shim_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n, m;

	if (!shim_cfg.debug)
		return;
	n = snprintf(buf, sizeof(buf), "gpuwarm-shim[%d]: ", (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(buf))
		return;
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* one write: lines from several threads do not mix */
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		return;
}
