/* SPDX-License-Identifier: MIT */
#include "shim-ops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gw-cuda.h"
#include "shim-driver.h"
#include "shim-trim.h"

#define LOCK_WAIT_MS 2000
#define MAX_DEVICE 4095
#define MAX_CTX 32

void shim_reply_finish(struct shim_reply *reply)
{
	if (!reply)
		return;
	cJSON_Delete(reply->result);
	cJSON_Delete(reply->error_extra);
	for (unsigned i = 0; i < reply->nfds; i++)
		close(reply->fds[i]);
	memset(reply, 0, sizeof(*reply));
}

__attribute__((format(printf, 4, 5)))
static void fail(struct shim_reply *reply, const char *name, CUresult cuda, const char *fmt, ...)
{
	va_list ap;

	cJSON_Delete(reply->result);
	reply->result = NULL;
	for (unsigned i = 0; i < reply->nfds; i++)
		close(reply->fds[i]);
	reply->nfds = 0;
	reply->error_name = name;
	va_start(ap, fmt);
	vsnprintf(reply->error_message, sizeof(reply->error_message), fmt, ap);
	va_end(ap);
	if (cuda != CUDA_SUCCESS) {
		if (!reply->error_extra)
			reply->error_extra = cJSON_CreateObject();
		if (reply->error_extra)
			cJSON_AddNumberToObject(reply->error_extra, "cuda_error", cuda);
	}
	shim_log("agent: %s", reply->error_message);
}

static void add_done(struct shim_reply *reply, const char *key, uint64_t n)
{
	if (!reply->error_extra)
		reply->error_extra = cJSON_CreateObject();
	if (reply->error_extra)
		cJSON_AddNumberToObject(reply->error_extra, key, (double)n);
}

/* The table lock, once no app thread is inside a tracked call (a frozen one may never leave). */
static int acquire_table(void)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };

	for (int waited = 0; waited < LOCK_WAIT_MS; waited += 5) {
		if (pthread_mutex_trylock(&shim_tbl.lock) == 0) {
			if (shim_tbl.ops_inflight == 0)
				return 0;
			pthread_mutex_unlock(&shim_tbl.lock);
		}
		nanosleep(&ts, NULL);
	}
	return -EBUSY;
}

/* The table lock alone, boundedly: a thread frozen inside a critical section never leaves it. */
static int acquire_plain(void)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };

	for (int waited = 0; waited < LOCK_WAIT_MS; waited += 5) {
		if (pthread_mutex_trylock(&shim_tbl.lock) == 0)
			return 0;
		nanosleep(&ts, NULL);
	}
	return -EBUSY;
}

static void busy(struct shim_reply *reply)
{
	fail(reply, GW_ERROR_AGENT, CUDA_SUCCESS,
	     "an application thread is inside a CUDA memory call (frozen there?): thaw and retry");
}

/* The primary contexts the agent works in, retained for one operation. */
struct ctxset {
	const struct shim_driver *d;
	CUdevice dev[MAX_CTX];
	CUcontext ctx[MAX_CTX];
	unsigned n;
	CUdevice extra; /* beyond MAX_CTX: retained one at a time */
	bool has_extra;
};

static CUresult ctx_use(struct ctxset *s, CUdevice dev)
{
	CUcontext ctx;
	CUresult r;

	for (unsigned i = 0; i < s->n; i++)
		if (s->dev[i] == dev)
			return s->d->cuCtxSetCurrent(s->ctx[i]);
	r = s->d->cuDevicePrimaryCtxRetain(&ctx, dev);
	if (r != CUDA_SUCCESS)
		return r;
	if (s->n < MAX_CTX) {
		s->dev[s->n] = dev;
		s->ctx[s->n++] = ctx;
	} else {
		if (s->has_extra)
			(void)s->d->cuDevicePrimaryCtxRelease(s->extra);
		s->extra = dev;
		s->has_extra = true;
	}
	return s->d->cuCtxSetCurrent(ctx);
}

static void ctx_finish(struct ctxset *s)
{
	(void)s->d->cuCtxSetCurrent(NULL);
	for (unsigned i = 0; i < s->n; i++)
		(void)s->d->cuDevicePrimaryCtxRelease(s->dev[i]);
	if (s->has_extra)
		(void)s->d->cuDevicePrimaryCtxRelease(s->extra);
	s->n = 0;
	s->has_extra = false;
}

/*
 * The local-memory reservation. The driver keeps per-thread stack size x resident threads of
 * VRAM for it (264 MiB on an H200 at the default 1 KiB), and its checkpoint copies all of it to
 * host memory and back. What it holds does not outlive a kernel, so Release sets each context's
 * stack size to 0 (the driver shrinks the reservation) and Map puts the app's value back: the
 * app, stopped in between, reads the same limit before and after. Under the table lock.
 */
static struct {
	CUdevice dev;
	size_t stack;
} lmem_saved[MAX_CTX];
static unsigned lmem_nsaved;

static void lmem_shrink(const struct ctxset *s)
{
	const struct shim_driver *d = s->d;

	for (unsigned i = 0; i < s->n && d->cuCtxGetLimit && d->cuCtxSetLimit; i++) {
		size_t stack = 0;
		bool saved = false;

		for (unsigned k = 0; k < lmem_nsaved; k++)
			saved |= lmem_saved[k].dev == s->dev[i];
		if (saved || lmem_nsaved >= MAX_CTX || d->cuCtxSetCurrent(s->ctx[i]) != CUDA_SUCCESS ||
		    d->cuCtxGetLimit(&stack, CU_LIMIT_STACK_SIZE) != CUDA_SUCCESS || stack == 0 ||
		    d->cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 0) != CUDA_SUCCESS)
			continue;
		lmem_saved[lmem_nsaved].dev = s->dev[i];
		lmem_saved[lmem_nsaved++].stack = stack;
		shim_log("agent: device %d: local memory dropped (stack size %zu -> 0 until Map)",
			 (int)s->dev[i], stack);
	}
}

static void lmem_restore(const struct ctxset *s)
{
	const struct shim_driver *d = s->d;

	for (unsigned i = 0; i < s->n; i++) {
		for (unsigned k = 0; k < lmem_nsaved; k++) {
			CUresult r;

			if (lmem_saved[k].dev != s->dev[i])
				continue;
			r = d->cuCtxSetCurrent(s->ctx[i]);
			if (r == CUDA_SUCCESS)
				r = d->cuCtxSetLimit(CU_LIMIT_STACK_SIZE, lmem_saved[k].stack);
			if (r != CUDA_SUCCESS) /* the driver grows it again at the next launch */
				shim_log("agent: device %d: stack size %zu not set back: CUDA error %d",
					 (int)s->dev[i], lmem_saved[k].stack, (int)r);
			lmem_saved[k] = lmem_saved[--lmem_nsaved];
			break;
		}
	}
}

static const struct shim_driver *need_driver(struct shim_reply *reply)
{
	const struct shim_driver *d = shim_driver_get();

	if (!d || !d->vmm) {
		fail(reply, GW_ERROR_AGENT, CUDA_SUCCESS,
		     "no CUDA driver with VMM in this process");
		return NULL;
	}
	return d;
}

static bool movable(const struct shim_range *r)
{
	return shim_range_reported(r) && !r->released;
}

static cJSON *range_json(const struct shim_range *r, int dev, const char *uuid)
{
	cJSON *o = cJSON_CreateObject();
	char va[24];

	snprintf(va, sizeof(va), "0x%" PRIx64, (uint64_t)r->va);
	if (!o || !cJSON_AddStringToObject(o, "va", va) ||
	    !cJSON_AddNumberToObject(o, "size", (double)r->size) ||
	    !cJSON_AddNumberToObject(o, "device", dev) ||
	    (uuid && !cJSON_AddStringToObject(o, "uuid", uuid))) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* cuCtxSynchronize on the primary context of every device holding a movable range. */
static int sync_devices(struct ctxset *s, struct shim_reply *reply)
{
	const struct shim_table *t = &shim_tbl.table;
	CUdevice devs[MAX_CTX];
	unsigned n = 0;
	CUresult r;

	if (acquire_table() < 0) {
		busy(reply);
		return -EBUSY;
	}
	for (size_t i = 0; i < t->nranges; i++) {
		unsigned k;

		if (!movable(t->ranges[i]))
			continue;
		for (k = 0; k < n; k++)
			if (devs[k] == t->ranges[i]->phys->dev)
				break;
		if (k == n && n < MAX_CTX)
			devs[n++] = t->ranges[i]->phys->dev;
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	for (unsigned k = 0; k < n; k++) {
		r = ctx_use(s, devs[k]);
		if (r == CUDA_SUCCESS)
			r = s->d->cuCtxSynchronize();
		if (r != CUDA_SUCCESS) {
			fail(reply, GW_ERROR_CUDA, r, "synchronizing device %d: CUDA error %d",
			     (int)devs[k], (int)r);
			return -EIO;
		}
	}
	return 0;
}

/* Offset 0 fixes the list: every movable range now, tagged with a new epoch. */
static void export_begin(void)
{
	const struct shim_table *t = &shim_tbl.table;

	shim_tbl.epoch++;
	shim_tbl.export_total = 0;
	for (size_t i = 0; i < t->nranges; i++) {
		if (movable(t->ranges[i])) {
			t->ranges[i]->export_epoch = shim_tbl.epoch;
			shim_tbl.export_total++;
		}
	}
}

void shim_op_export(const cJSON *params, struct shim_reply *reply)
{
	const struct shim_driver *d = need_driver(reply);
	struct ctxset s = { .d = d };
	const struct shim_table *t = &shim_tbl.table;
	uint64_t offset = 0, idx = 0, bytes = 0;
	cJSON *ranges;
	int ret;

	if (!d)
		return;
	ret = gw_json_get_u64(params, "offset", 0, UINT32_MAX, &offset);
	if (ret < 0 && ret != -ENOENT) {
		fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS, "\"offset\" must be a count");
		return;
	}
	reply->result = cJSON_CreateObject();
	ranges = cJSON_AddArrayToObject(reply->result, "ranges");
	if (!ranges) {
		fail(reply, GW_ERROR_INTERNAL, CUDA_SUCCESS, "out of memory");
		return;
	}
	if (offset == 0 && sync_devices(&s, reply) < 0)
		goto out;
	if (acquire_table() < 0) {
		busy(reply);
		goto out;
	}
	if (offset == 0)
		export_begin();
	else if (!shim_tbl.epoch)
		fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS, "no export under way");
	for (size_t i = 0; i < t->nranges && reply->result; i++) {
		struct shim_range *r = t->ranges[i];
		char uuid_text[48];
		CUuuid uuid;
		cJSON *o;
		int fd = -1;
		CUresult cr;

		if (r->export_epoch != shim_tbl.epoch || !movable(r))
			continue;
		if (idx++ < offset)
			continue;
		if (reply->nfds == GW_FRAME_MAX_FDS)
			break;
		if (r->phys->fd >= 0) {
			/* imported memory: the driver does not export it again, its fd is kept */
			fd = fcntl(r->phys->fd, F_DUPFD_CLOEXEC, 0);
			cr = fd < 0 ? CUDA_ERROR_OPERATING_SYSTEM : CUDA_SUCCESS;
		} else {
			cr = ctx_use(&s, r->phys->dev);
			if (cr == CUDA_SUCCESS)
				cr = d->cuMemExportToShareableHandle(
					&fd, r->phys->real, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
					0);
		}
		if (cr != CUDA_SUCCESS) {
			fail(reply, GW_ERROR_CUDA, cr, "exporting 0x%llx: CUDA error %d",
			     (unsigned long long)r->va, (int)cr);
			break;
		}
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* the app may fork and exec meanwhile */
		reply->fds[reply->nfds++] = fd;
		if (d->cuDeviceGetUuid(&uuid, r->phys->dev) == CUDA_SUCCESS)
			gw_cuda_uuid_format(&uuid, uuid_text, sizeof(uuid_text));
		else
			uuid_text[0] = '\0';
		o = range_json(r, r->phys->dev, uuid_text[0] ? uuid_text : NULL);
		if (!o || !cJSON_AddItemToArray(ranges, o)) {
			cJSON_Delete(o);
			fail(reply, GW_ERROR_INTERNAL, CUDA_SUCCESS, "out of memory");
			break;
		}
		bytes += r->size;
	}
	if (!reply->result)
		shim_tbl.epoch++; /* failed: a later Release touches none of this export */
	else if (!cJSON_AddNumberToObject(reply->result, "total", (double)shim_tbl.export_total))
		fail(reply, GW_ERROR_INTERNAL, CUDA_SUCCESS, "out of memory");
	pthread_mutex_unlock(&shim_tbl.lock);
	if (reply->result)
		shim_log("agent: exported %u ranges (%" PRIu64 " bytes) from %" PRIu64
			 " of %" PRIu64, reply->nfds, bytes, offset, shim_tbl.export_total);
out:
	ctx_finish(&s);
}

void shim_op_release(const cJSON *params, struct shim_reply *reply)
{
	const struct shim_driver *d = need_driver(reply);
	struct ctxset s = { .d = d };
	const struct shim_table *t = &shim_tbl.table;
	uint64_t n = 0, bytes = 0;

	(void)params;
	if (!d)
		return;
	if (acquire_table() < 0) {
		busy(reply);
		return;
	}
	for (size_t i = 0; i < t->nranges && shim_tbl.epoch; i++) {
		struct shim_range *r = t->ranges[i];
		CUresult cr;

		if (!movable(r) || r->export_epoch != shim_tbl.epoch)
			continue;
		cr = ctx_use(&s, r->phys->dev);
		if (cr == CUDA_SUCCESS)
			cr = d->cuMemUnmap(r->va, r->size);
		if (cr != CUDA_SUCCESS) {
			fail(reply, GW_ERROR_CUDA, cr, "unmapping 0x%llx: CUDA error %d",
			     (unsigned long long)r->va, (int)cr);
			add_done(reply, "released", n);
			break;
		}
		cr = d->cuMemRelease(r->phys->real);
		if (cr != CUDA_SUCCESS) /* unmapped all the same: its memory is unreachable */
			shim_log("agent: cuMemRelease of 0x%llx: CUDA error %d",
				 (unsigned long long)r->va, (int)cr);
		r->phys->real = 0;
		if (r->phys->fd >= 0)
			close(r->phys->fd);
		r->phys->fd = -1;
		r->phys->foreign = false;
		r->released = true;
		n++;
		bytes += r->size;
	}
	if (n)
		shim_tbl.table.gen++;
	if (n && !reply->error_name)
		lmem_shrink(&s);
	pthread_mutex_unlock(&shim_tbl.lock);
	ctx_finish(&s);
	if (!reply->error_name)
		shim_trim_note_release(); /* what the next trim leaves alone */
	shim_log("agent: released %" PRIu64 " ranges (%" PRIu64 " bytes), VA kept", n, bytes);
	if (reply->error_name)
		return;
	reply->result = cJSON_CreateObject();
	if (!reply->result || !cJSON_AddNumberToObject(reply->result, "released", (double)n) ||
	    !cJSON_AddNumberToObject(reply->result, "bytes", (double)bytes))
		fail(reply, GW_ERROR_INTERNAL, CUDA_SUCCESS, "out of memory");
}

struct map_item {
	uint64_t va, size, dev;
	struct shim_range *range;
};

static int parse_map(const cJSON *params, unsigned nfds, struct map_item *items,
		     struct shim_reply *reply)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(params, "ranges"), *o;
	int n = 0;

	if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != (int)nfds) {
		fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS,
		     "\"ranges\" must be an array with one entry per fd (%u)", nfds);
		return -EINVAL;
	}
	cJSON_ArrayForEach(o, arr) {
		struct map_item *it = &items[n];

		if (!cJSON_IsObject(o) || gw_json_get_hex_u64(o, "va", &it->va) < 0 ||
		    gw_json_get_u64(o, "size", 1, UINT64_MAX, &it->size) < 0 ||
		    gw_json_get_u64(o, "device", 0, MAX_DEVICE, &it->dev) < 0) {
			fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS,
			     "range %d: want {\"va\": \"0x..\", \"size\": n, \"device\": n}", n);
			return -EINVAL;
		}
		n++;
	}
	return n;
}

/* Called with the table lock held. */
static int check_map(struct map_item *items, int n, struct shim_reply *reply)
{
	for (int i = 0; i < n; i++) {
		struct shim_range *r = shim_table_find(&shim_tbl.table, items[i].va);

		for (int k = 0; k < i; k++) {
			if (items[k].va == items[i].va) {
				fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS,
				     "0x%llx is listed twice", (unsigned long long)items[i].va);
				return -EINVAL;
			}
		}
		if (!r || !shim_range_reported(r) || !r->released || r->size != items[i].size) {
			fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS,
			     "no released range of %llu bytes at 0x%llx",
			     (unsigned long long)items[i].size, (unsigned long long)items[i].va);
			return -EINVAL;
		}
		items[i].range = r;
	}
	return 0;
}

static CUresult map_one(const struct shim_driver *d, struct ctxset *s, struct map_item *it,
			int fd)
{
	struct shim_range *r = it->range;
	CUmemGenericAllocationHandle h = 0;
	CUdevice dev = (CUdevice)it->dev;
	CUmemAccessDesc own;
	CUresult cr;
	int keep;

	cr = ctx_use(s, dev);
	if (cr != CUDA_SUCCESS)
		return cr;
	/* the next Export hands this fd out again: the driver will not export the import */
	keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (keep < 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	cr = d->cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd,
					       CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	if (cr != CUDA_SUCCESS)
		goto fail_fd;
	cr = d->cuMemMap(r->va, r->size, 0, h, 0);
	if (cr != CUDA_SUCCESS)
		goto fail_handle;
	/* the access it had, when it comes back to the same device; else read-write there */
	if (!r->naccess || r->phys->dev != dev) {
		own.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
		own.location.id = dev;
		own.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
		r->access[0] = own;
		r->naccess = 1;
	}
	cr = d->cuMemSetAccess(r->va, r->size, r->access, r->naccess);
	if (cr != CUDA_SUCCESS)
		goto fail_map;
	r->phys->real = h;
	r->phys->dev = dev;
	r->phys->foreign = true;
	r->phys->fd = keep;
	r->released = false;
	return CUDA_SUCCESS;
fail_map:
	(void)d->cuMemUnmap(r->va, r->size);
fail_handle:
	(void)d->cuMemRelease(h);
fail_fd:
	close(keep);
	return cr;
}

void shim_op_map(const cJSON *params, const int *fds, unsigned nfds, struct shim_reply *reply)
{
	const struct shim_driver *d = need_driver(reply);
	struct map_item items[GW_FRAME_MAX_FDS];
	struct ctxset s = { .d = d };
	uint64_t bytes = 0;
	int n, mapped = 0;

	if (!d)
		return;
	if (nfds > GW_FRAME_MAX_FDS) {
		fail(reply, GW_ERROR_INVALID_REQUEST, CUDA_SUCCESS, "too many fds");
		return;
	}
	n = parse_map(params, nfds, items, reply);
	if (n < 0)
		return;
	if (acquire_table() < 0) {
		busy(reply);
		return;
	}
	if (check_map(items, n, reply) < 0) {
		pthread_mutex_unlock(&shim_tbl.lock);
		return;
	}
	for (; mapped < n; mapped++) {
		CUresult cr = map_one(d, &s, &items[mapped], fds[mapped]);

		if (cr != CUDA_SUCCESS) {
			fail(reply, GW_ERROR_CUDA, cr, "mapping 0x%llx: CUDA error %d",
			     (unsigned long long)items[mapped].va, (int)cr);
			add_done(reply, "mapped", (uint64_t)mapped);
			break;
		}
		bytes += items[mapped].size;
	}
	if (mapped)
		shim_tbl.table.gen++;
	lmem_restore(&s);
	pthread_mutex_unlock(&shim_tbl.lock);
	ctx_finish(&s);
	shim_log("agent: mapped %d ranges (%" PRIu64 " bytes)", mapped, bytes);
	if (reply->error_name)
		return;
	reply->result = cJSON_CreateObject();
	if (!reply->result || !cJSON_AddNumberToObject(reply->result, "mapped", mapped))
		fail(reply, GW_ERROR_INTERNAL, CUDA_SUCCESS, "out of memory");
}

cJSON *shim_op_counts(uint64_t *ret_gen, bool *ret_any_released)
{
	struct shim_totals tot;
	cJSON *o;

	if (acquire_plain() < 0)
		return NULL;
	shim_table_totals(&shim_tbl.table, &tot);
	if (ret_gen)
		*ret_gen = shim_tbl.table.gen;
	pthread_mutex_unlock(&shim_tbl.lock);
	if (ret_any_released)
		*ret_any_released = tot.released > 0;
	o = cJSON_CreateObject();
	if (!o || !cJSON_AddNumberToObject(o, "ranges", (double)tot.ranges) ||
	    !cJSON_AddNumberToObject(o, "bytes", (double)tot.bytes) ||
	    !cJSON_AddNumberToObject(o, "released", (double)tot.released) ||
	    !cJSON_AddNumberToObject(o, "foreign", (double)tot.foreign)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}
