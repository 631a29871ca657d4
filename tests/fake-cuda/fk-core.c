/* SPDX-License-Identifier: MIT */
/* Fake CUDA driver: configuration, cuInit, the API gate, error injection, devices, contexts,
 * streams and events. */
#include "fk-internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct fk_state fk = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.listen_fd = -1,
};

const char *const fk_ep_names[FK_EP_COUNT] = {
#define FK_EP_NAME(name, params) [FK_EP_##name] = #name,
	GW_CUDA_REQUIRED_ENTRY_POINTS(FK_EP_NAME)
	GW_CUDA_OPTIONAL_ENTRY_POINTS(FK_EP_NAME)
	FK_EXTRA_ENTRY_POINTS(FK_EP_NAME)
#undef FK_EP_NAME
};

static __thread struct {
	struct CUctx_st *ctx;
	unsigned gen;
} fk_tls;

static int fk_pinned;

static const struct {
	CUresult code;
	const char *name;
	const char *text;
} fk_errors[] = {
	{ CUDA_SUCCESS, "CUDA_SUCCESS", "no error" },
	{ CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument" },
	{ CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory" },
	{ CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error" },
	{ CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down" },
	{ CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected" },
	{ CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal" },
	{ CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context" },
	{ CUDA_ERROR_ALREADY_MAPPED, "CUDA_ERROR_ALREADY_MAPPED", "resource already mapped" },
	{ CUDA_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM",
	  "OS call failed or operation not supported on this OS" },
	{ CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle" },
	{ CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE",
	  "the operation cannot be performed in the present state" },
	{ CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found" },
	{ CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready" },
	{ CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
	  "an illegal memory access was encountered" },
	{ CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted" },
	{ CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported" },
	{ CUDA_ERROR_TIMEOUT, "CUDA_ERROR_TIMEOUT", "the operation timed out" },
	{ CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error" },
};

const char *fk_error_name(CUresult r)
{
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++)
		if (fk_errors[i].code == r)
			return fk_errors[i].name;
	return NULL;
}

const char *fk_error_string(CUresult r)
{
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++)
		if (fk_errors[i].code == r)
			return fk_errors[i].text;
	return NULL;
}

void fk_sleep_us(uint64_t us)
{
	struct timespec ts = { .tv_sec = (time_t)(us / 1000000),
			       .tv_nsec = (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- configuration ---- */

static int parse_uint(const char *name, unsigned long long max, unsigned long long def,
		      unsigned long long *ret)
{
	const char *s = getenv(name);
	unsigned long long v;
	char *end;

	if (!s || !*s) {
		*ret = def;
		return 0;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || *s == '-' || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_fail_rules(struct fk_config *cfg)
{
	const char *s = getenv(FAKECUDA_ENV_FAIL);
	char buf[1024], *save = NULL, *tok;

	if (!s || !*s)
		return 0;
	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct fk_fail_rule *rule;
		char *eq = strchr(tok, '='), *end;
		long code;
		int ep;

		if (!eq || cfg->nrules >= FK_MAX_FAIL_RULES)
			return -EINVAL;
		*eq = '\0';
		for (ep = 0; ep < FK_EP_COUNT; ep++)
			if (strcmp(fk_ep_names[ep], tok) == 0)
				break;
		if (ep == FK_EP_COUNT)
			return -EINVAL;
		rule = &cfg->rules[cfg->nrules];
		rule->ep = (enum fk_ep)ep;
		errno = 0;
		code = strtol(eq + 1, &end, 10);
		if (errno || end == eq + 1 || code <= 0 || code > 100000)
			return -EINVAL;
		rule->code = (CUresult)code;
		rule->nth = 0;
		if (*end == ':') {
			const char *n = end + 1;

			rule->nth = strtoul(n, &end, 10);
			if (end == n || *n == '-' || rule->nth == 0)
				return -EINVAL;
		}
		if (*end)
			return -EINVAL;
		cfg->nrules++;
	}
	return 0;
}

static CUresult load_config(struct fk_config *cfg)
{
	unsigned long long v;
	const char *dir;

	memset(cfg, 0, sizeof(*cfg));
	if (parse_uint(FAKECUDA_ENV_GPUS, FAKECUDA_MAX_GPUS, 1, &v) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	cfg->gpus = (int)v;
	if (parse_uint(FAKECUDA_ENV_MEM_MIB, 1ull << 30, 81559, &v) < 0 || v == 0)
		return CUDA_ERROR_INVALID_VALUE;
	cfg->mem_bytes = (size_t)v << 20;
	if (parse_uint(FAKECUDA_ENV_NO_DEVICE, 1, 0, &v) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	cfg->no_device = (int)v;
	if (parse_uint(FAKECUDA_ENV_SYNC_DELAY_MS, 3600000, 0, &v) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	cfg->sync_delay_ms = (unsigned)v;
	if (parse_uint(FAKECUDA_ENV_SYNC_DELAY_SKIP, 1u << 30, 0, &v) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	cfg->sync_delay_skip = (unsigned)v;
	if (parse_uint(FAKECUDA_ENV_PIN_US_PER_MIB, 10000000, 0, &v) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	cfg->pin_us_per_mib = (unsigned)v;
	dir = getenv(FAKECUDA_ENV_STATE_DIR);
	if (dir && *dir) {
		if (strlen(dir) >= sizeof(cfg->state_dir))
			return CUDA_ERROR_INVALID_VALUE;
		strcpy(cfg->state_dir, dir);
	} else {
		snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/tmp/fakecuda-%u",
			 (unsigned)geteuid());
	}
	if (parse_fail_rules(cfg) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_SUCCESS;
}

/* ---- error injection and the gate ---- */

static CUresult inject_locked(enum fk_ep ep)
{
	CUresult r = CUDA_SUCCESS;
	unsigned long n;

	if (!fk.config_loaded || fk.init_result != CUDA_SUCCESS)
		return CUDA_SUCCESS;
	n = ++fk.calls[ep];
	for (unsigned i = 0; i < fk.cfg.nrules && r == CUDA_SUCCESS; i++) {
		const struct fk_fail_rule *rule = &fk.cfg.rules[i];

		if (rule->ep == ep && (rule->nth == 0 || rule->nth == n))
			r = rule->code;
	}
	return r;
}

CUresult fk_check(enum fk_ep ep)
{
	CUresult r;

	pthread_mutex_lock(&fk.lock);
	r = inject_locked(ep);
	if (r == CUDA_SUCCESS && !fk.initialized)
		r = CUDA_ERROR_NOT_INITIALIZED;
	pthread_mutex_unlock(&fk.lock);
	return r;
}

/* Injection only: for the entry points that work before cuInit. */
CUresult fk_inject(enum fk_ep ep)
{
	CUresult r;

	pthread_mutex_lock(&fk.lock);
	r = inject_locked(ep);
	pthread_mutex_unlock(&fk.lock);
	return r;
}

/* Returns with fk.lock held and the caller counted "in the driver", or unlocked with an error. */
CUresult fk_enter(enum fk_ep ep)
{
	CUresult r;

	pthread_mutex_lock(&fk.lock);
	r = inject_locked(ep);
	if (r == CUDA_SUCCESS && !fk.initialized)
		r = CUDA_ERROR_NOT_INITIALIZED;
	while (r == CUDA_SUCCESS && (fk.pstate != CU_PROCESS_STATE_RUNNING || fk.locking)) {
		if (fk.pstate == CU_PROCESS_STATE_FAILED)
			r = CUDA_ERROR_ILLEGAL_STATE;
		else
			pthread_cond_wait(&fk.cond, &fk.lock);
	}
	if (r != CUDA_SUCCESS) {
		pthread_mutex_unlock(&fk.lock);
		return r;
	}
	fk.in_driver++;
	return CUDA_SUCCESS;
}

void fk_leave(void)
{
	if (--fk.in_driver == 0 && fk.locking)
		pthread_cond_broadcast(&fk.cond);
	pthread_mutex_unlock(&fk.lock);
}

/* ---- cuInit and fork ---- */

static void atfork_prepare(void)
{
	pthread_mutex_lock(&fk.lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&fk.lock);
}

/* CUDA does not survive fork: the child starts uninitialized and a cuInit there starts afresh. */
static void atfork_child(void)
{
	pthread_mutex_init(&fk.lock, NULL);
	pthread_cond_init(&fk.cond, NULL);
	fk.initialized = 0;
	fk.config_loaded = 0;
	fk.init_result = CUDA_SUCCESS;
	fk.in_driver = 0;
	fk.locking = 0;
	fk.pstate = CU_PROCESS_STATE_RUNNING;
	fk_restore_thread_forget();
}

__attribute__((constructor)) static void fk_load(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Once initialized, the library stays loaded: its restore thread runs until the process exits. */
static void pin_library(void)
{
	Dl_info info;

	if (dladdr((void *)cuInit, &info) && info.dli_fname)
		(void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

CUresult fk_init(unsigned int flags)
{
	CUresult r;

	pthread_mutex_lock(&fk.lock);
	if (!fk.config_loaded) {
		fk.init_result = load_config(&fk.cfg);
		if (fk.init_result == CUDA_SUCCESS && (fk.cfg.no_device || fk.cfg.gpus == 0))
			fk.init_result = CUDA_ERROR_NO_DEVICE;
		memset(fk.calls, 0, sizeof(fk.calls));
		fk.config_loaded = 1;
	}
	r = inject_locked(FK_EP_cuInit);
	if (r != CUDA_SUCCESS)
		goto out;
	if (flags != 0) {
		r = CUDA_ERROR_INVALID_VALUE;
		goto out;
	}
	r = fk.init_result;
	if (r != CUDA_SUCCESS || fk.initialized)
		goto out;

	fk_mem_teardown(); /* what a forked child inherited */
	fk.gen++;
	fk.pid = getpid();
	fk.va_next = FK_VA_BASE;
	fk.next_handle = 0xfa4e000000000001ull;
	for (int i = 0; i < FAKECUDA_MAX_GPUS; i++) {
		fk.ctx_objs[i] = (struct CUctx_st){ .dev = i, .refcount = 0 };
		fk.primary[i] = &fk.ctx_objs[i];
		fk.stack_size[i] = FK_DEFAULT_STACK_SIZE;
	}
	fk.pstate = CU_PROCESS_STATE_RUNNING;
	fk.locking = 0;
	fk.trap = 0;
	fk.ckpt_devs = 0;
	if (!fk_pinned) {
		pin_library();
		fk_pinned = 1;
	}
	r = fk_restore_thread_start();
	if (r == CUDA_SUCCESS)
		fk.initialized = 1;
out:
	pthread_mutex_unlock(&fk.lock);
	return r;
}

/* ---- devices ---- */

int fk_dev_valid(int dev)
{
	return dev >= 0 && dev < fk.cfg.gpus;
}

void fk_device_uuid(int dev, CUuuid *ret_uuid)
{
	static const unsigned char base[16] = { 0xfa, 0x4e, 0xc0, 0xda, 0x00, 0x00, 0x40, 0x00,
						0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 };

	memcpy(ret_uuid->bytes, base, sizeof(base));
	ret_uuid->bytes[15] = (char)dev;
}

CUresult fk_device_get_name(char *name, int len, CUdevice dev)
{
	if (!name || len <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(dev))
		return CUDA_ERROR_INVALID_DEVICE;
	snprintf(name, (size_t)len, "%s", FAKECUDA_DEVICE_NAME);
	return CUDA_SUCCESS;
}

CUresult fk_device_get_uuid(CUuuid *uuid, CUdevice dev)
{
	if (!uuid)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(dev))
		return CUDA_ERROR_INVALID_DEVICE;
	fk_device_uuid(dev, uuid);
	return CUDA_SUCCESS;
}

CUresult fk_device_get_attribute(int *pi, int attrib, CUdevice dev)
{
	int v;

	if (!pi)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(dev))
		return CUDA_ERROR_INVALID_DEVICE;
	switch (attrib) {
	case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
		v = 0x3b + dev;
		break;
	case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID:
	case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID:
		v = 0;
		break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
		v = 9;
		break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
		v = 0;
		break;
	case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
	case 103: /* HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED */
		v = 1;
		break;
	case 16: /* MULTIPROCESSOR_COUNT */
		v = 132;
		break;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	*pi = v;
	return CUDA_SUCCESS;
}

/* ---- contexts ---- */

static int ctx_valid(const struct CUctx_st *ctx)
{
	uintptr_t p = (uintptr_t)ctx, lo = (uintptr_t)&fk.ctx_objs[0];

	if (p < lo || p >= (uintptr_t)&fk.ctx_objs[FAKECUDA_MAX_GPUS] ||
	    (p - lo) % sizeof(fk.ctx_objs[0]))
		return 0;
	return ctx->refcount > 0;
}

CUresult fk_current_dev(int *ret_dev)
{
	if (fk_tls.gen != fk.gen || !fk_tls.ctx || !ctx_valid(fk_tls.ctx))
		return CUDA_ERROR_INVALID_CONTEXT;
	*ret_dev = fk_tls.ctx->dev;
	return CUDA_SUCCESS;
}

CUresult fk_ctx_retain(CUcontext *pctx, CUdevice dev)
{
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(dev))
		return CUDA_ERROR_INVALID_DEVICE;
	fk.primary[dev]->refcount++;
	*pctx = fk.primary[dev];
	return CUDA_SUCCESS;
}

CUresult fk_ctx_release(CUdevice dev)
{
	struct CUctx_st *ctx;

	if (!fk_dev_valid(dev))
		return CUDA_ERROR_INVALID_DEVICE;
	ctx = fk.primary[dev];
	if (ctx->refcount == 0)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (--ctx->refcount == 0)
		fk_mem_free_dev(dev); /* the context dies with its allocations */
	return CUDA_SUCCESS;
}

CUresult fk_ctx_set_current(CUcontext ctx)
{
	if (ctx && !ctx_valid(ctx))
		return CUDA_ERROR_INVALID_CONTEXT;
	fk_tls.ctx = ctx;
	fk_tls.gen = fk.gen;
	return CUDA_SUCCESS;
}

CUresult fk_ctx_get_device(CUdevice *dev)
{
	int d;
	CUresult r;

	if (!dev)
		return CUDA_ERROR_INVALID_VALUE;
	r = fk_current_dev(&d);
	if (r == CUDA_SUCCESS)
		*dev = d;
	return r;
}

/* ---- streams and events ---- */

CUresult fk_stream_create(CUstream *stream, unsigned int flags)
{
	struct CUstream_st *s;
	int dev;

	if (!stream || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
		return CUDA_ERROR_INVALID_VALUE;
	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	s = calloc(1, sizeof(*s));
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;
	s->flags = flags;
	s->next = fk.streams;
	fk.streams = s;
	*stream = s;
	return CUDA_SUCCESS;
}

CUresult fk_stream_check(CUstream stream)
{
	int dev;

	/* NULL, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD: the current context's streams */
	if ((uintptr_t)stream <= 2)
		return fk_current_dev(&dev);
	for (struct CUstream_st *s = fk.streams; s; s = s->next)
		if (s == stream)
			return CUDA_SUCCESS;
	return CUDA_ERROR_INVALID_HANDLE;
}

CUresult fk_stream_destroy(CUstream stream)
{
	for (struct CUstream_st **p = &fk.streams; *p; p = &(*p)->next) {
		if (*p == stream) {
			*p = stream->next;
			free(stream);
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_HANDLE;
}

static struct CUevent_st *event_find(CUevent event)
{
	for (struct CUevent_st *e = fk.events; e; e = e->next)
		if (e == event)
			return e;
	return NULL;
}

CUresult fk_event_create(CUevent *event, unsigned int flags)
{
	struct CUevent_st *e;
	int dev;

	if (!event || (flags & ~0x7u))
		return CUDA_ERROR_INVALID_VALUE;
	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	e = calloc(1, sizeof(*e));
	if (!e)
		return CUDA_ERROR_OUT_OF_MEMORY;
	e->flags = flags;
	e->next = fk.events;
	fk.events = e;
	*event = e;
	return CUDA_SUCCESS;
}

CUresult fk_event_destroy(CUevent event)
{
	for (struct CUevent_st **p = &fk.events; *p; p = &(*p)->next) {
		if (*p == event) {
			*p = event->next;
			free(event);
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_HANDLE;
}

CUresult fk_event_record(CUevent event, CUstream stream)
{
	struct CUevent_st *e = event_find(event);
	CUresult r;

	if (!e)
		return CUDA_ERROR_INVALID_HANDLE;
	r = fk_stream_check(stream);
	if (r == CUDA_SUCCESS)
		e->recorded = 1;
	return r;
}

CUresult fk_event_sync(CUevent event)
{
	return event_find(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
