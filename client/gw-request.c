/* SPDX-License-Identifier: MIT */
/* libgpuwarm's typed request builders (gw-client.h): params objects from C arguments. */
#include "gw-client.h"

#include <errno.h>
#include <string.h>

#include "gw-vimg.h"

/* cJSON numbers are doubles: integers are exact up to 2^53. */
#define REQ_INT_MAX (UINT64_C(1) << 53)

static int add_number(cJSON *o, const char *key, double v)
{
	return cJSON_AddNumberToObject(o, key, v) ? 0 : -ENOMEM;
}

static int add_bool(cJSON *o, const char *key, bool v)
{
	return cJSON_AddBoolToObject(o, key, v) ? 0 : -ENOMEM;
}

static int add_string(cJSON *o, const char *key, const char *v)
{
	if (!v || strlen(v) >= GW_STRING_MAX)
		return -EINVAL;
	return cJSON_AddStringToObject(o, key, v) ? 0 : -ENOMEM;
}

/* The new params object with "pid" set, or NULL (*r says why). */
static cJSON *with_pid(pid_t pid, int *r)
{
	cJSON *o;

	*r = -EINVAL;
	if (pid < 1 || pid > GW_PID_MAX)
		return NULL;
	*r = -ENOMEM;
	o = cJSON_CreateObject();
	if (!o || add_number(o, GW_PARAM_PID, pid) < 0) {
		cJSON_Delete(o);
		return NULL;
	}
	*r = 0;
	return o;
}

/* Hand over o, or delete it on failure r. */
static int finish(cJSON *o, int r, cJSON **ret_params)
{
	if (r < 0) {
		cJSON_Delete(o);
		return r;
	}
	*ret_params = o;
	return 0;
}

int gw_req_status(cJSON **ret_params)
{
	cJSON *o = cJSON_CreateObject();

	return finish(o, o ? 0 : -ENOMEM, ret_params);
}

static int add_gpus(cJSON *o, const char *const *gpus, unsigned ngpus)
{
	cJSON *list;

	if (ngpus == 0)
		return 0; /* absent: all */
	if (!gpus)
		return -EINVAL;
	list = cJSON_AddArrayToObject(o, GW_PARAM_GPUS);
	if (!list)
		return -ENOMEM;
	for (unsigned i = 0; i < ngpus; i++) {
		cJSON *s;

		if (!gpus[i] || strlen(gpus[i]) >= GW_STRING_MAX)
			return -EINVAL;
		s = cJSON_CreateString(gpus[i]);
		if (!s || !cJSON_AddItemToArray(list, s)) {
			cJSON_Delete(s);
			return -ENOMEM;
		}
	}
	return 0;
}

int gw_req_drain(const char *const *gpus, unsigned ngpus, bool wait, int timeout_ms,
		 cJSON **ret_params)
{
	cJSON *o = cJSON_CreateObject();
	int r = o ? add_gpus(o, gpus, ngpus) : -ENOMEM;

	if (r == 0)
		r = add_bool(o, GW_PARAM_WAIT, wait);
	if (r == 0 && timeout_ms >= 0)
		r = add_number(o, GW_PARAM_TIMEOUT_MS, timeout_ms);
	return finish(o, r, ret_params);
}

int gw_req_undrain(const char *const *gpus, unsigned ngpus, cJSON **ret_params)
{
	cJSON *o = cJSON_CreateObject();

	return finish(o, o ? add_gpus(o, gpus, ngpus) : -ENOMEM, ret_params);
}

int gw_req_lease_acquire(const char *gpu, uint64_t min_free_mib, cJSON **ret_params)
{
	cJSON *o = cJSON_CreateObject();
	int r = o ? 0 : -ENOMEM;

	if (r == 0 && gpu && *gpu)
		r = add_string(o, GW_PARAM_GPU, gpu);
	else if (r == 0 && min_free_mib > 0)
		r = min_free_mib > REQ_INT_MAX ? -EINVAL :
		    add_number(o, GW_PARAM_MIN_FREE_MIB, (double)min_free_mib);
	return finish(o, r, ret_params);
}

int gw_req_lease_release(uint64_t lease, cJSON **ret_params)
{
	cJSON *o;

	if (lease > REQ_INT_MAX)
		return -EINVAL;
	o = cJSON_CreateObject();
	return finish(o, o ? add_number(o, GW_PARAM_LEASE, (double)lease) : -ENOMEM, ret_params);
}

int gw_req_process(pid_t pid, cJSON **ret_params)
{
	int r;
	cJSON *o = with_pid(pid, &r);

	return finish(o, r, ret_params);
}

int gw_req_lock(pid_t pid, int timeout_ms, cJSON **ret_params)
{
	int r;
	cJSON *o = with_pid(pid, &r);

	/* (non-root callers are held to GW_LOCK_TIMEOUT_MAX_MS by the daemon; root is not) */
	if (r == 0 && timeout_ms >= 0)
		r = add_number(o, GW_PARAM_TIMEOUT_MS, timeout_ms);
	return finish(o, r, ret_params);
}

static int add_target(cJSON *o, const struct gw_req_target *t)
{
	cJSON *list;
	int r;

	if (!t)
		return 0;
	if (t->gpu && *t->gpu) {
		r = add_string(o, GW_PARAM_GPU, t->gpu);
		if (r < 0)
			return r;
	}
	if (t->npairs == 0)
		return 0;
	if (!t->pairs)
		return -EINVAL;
	list = cJSON_AddArrayToObject(o, GW_PARAM_GPU_PAIRS);
	if (!list)
		return -ENOMEM;
	for (unsigned i = 0; i < t->npairs; i++) {
		const char *pair[2] = { t->pairs[i].from_uuid, t->pairs[i].to_uuid };
		cJSON *item;

		if (!pair[0] || !pair[1] || strlen(pair[0]) >= GW_STRING_MAX ||
		    strlen(pair[1]) >= GW_STRING_MAX)
			return -EINVAL;
		item = cJSON_CreateStringArray(pair, 2);
		if (!item || !cJSON_AddItemToArray(list, item)) {
			cJSON_Delete(item);
			return -ENOMEM;
		}
	}
	return 0;
}

int gw_req_restore(pid_t pid, const struct gw_req_target *target, cJSON **ret_params)
{
	int r;
	cJSON *o = with_pid(pid, &r);

	if (r == 0)
		r = add_target(o, target);
	return finish(o, r, ret_params);
}

/* "image_fd": first and "segment_fds": [first + 1 .. first + nfiles - 1]. */
static int add_image(cJSON *o, const struct gw_req_image *img)
{
	cJSON *list;
	int r;

	if (!img || img->nfiles == 0)
		return 0;
	if (img->nfiles - 1 > GW_IMAGE_MAX_SEGMENTS ||
	    img->first + img->nfiles > GW_FRAME_MAX_FDS)
		return -EINVAL;
	r = add_number(o, GW_PARAM_IMAGE_FD, img->first);
	if (r < 0 || img->nfiles == 1)
		return r;
	list = cJSON_AddArrayToObject(o, GW_PARAM_SEGMENT_FDS);
	if (!list)
		return -ENOMEM;
	for (unsigned i = 1; i < img->nfiles; i++) {
		cJSON *n = cJSON_CreateNumber(img->first + i);

		if (!n || !cJSON_AddItemToArray(list, n)) {
			cJSON_Delete(n);
			return -ENOMEM;
		}
	}
	return 0;
}

static bool chunk_bytes_valid(uint64_t v)
{
	return v == 0 || ((v & (v - 1)) == 0 && v >= GW_VIMG_MIN_CHUNK_BYTES &&
			  v <= GW_VIMG_MAX_CHUNK_BYTES);
}

int gw_req_suspend(pid_t pid, const struct gw_suspend_opts *opts, cJSON **ret_params)
{
	static const struct gw_suspend_opts defaults = { .timeout_ms = -1 };
	const struct gw_suspend_opts *so = opts ? opts : &defaults;
	int r;
	cJSON *o = with_pid(pid, &r);

	if (r == 0 && !chunk_bytes_valid(so->chunk_bytes))
		r = -EINVAL;
	if (r == 0 && so->timeout_ms >= 0)
		r = add_number(o, GW_PARAM_TIMEOUT_MS, so->timeout_ms);
	if (r == 0)
		r = add_image(o, &so->image);
	if (r == 0 && so->dense)
		r = add_bool(o, GW_PARAM_SPARSE, false);
	if (r == 0 && so->chunk_bytes)
		r = add_number(o, GW_PARAM_CHUNK_BYTES, (double)so->chunk_bytes);
	if (r == 0 && so->progress)
		r = add_bool(o, GW_PARAM_PROGRESS, true);
	return finish(o, r, ret_params);
}

int gw_req_resume(pid_t pid, const struct gw_resume_opts *opts, cJSON **ret_params)
{
	static const struct gw_resume_opts defaults;
	const struct gw_resume_opts *ro = opts ? opts : &defaults;
	int r;
	cJSON *o = with_pid(pid, &r);

	if (r == 0 && (ro->agent_pid < 0 || ro->agent_pid > GW_PID_MAX || ro->agent_tid < 0 ||
		       ro->agent_tid > GW_PID_MAX))
		r = -EINVAL;
	if (r == 0)
		r = add_target(o, &ro->target);
	if (r == 0)
		r = add_image(o, &ro->image);
	if (r == 0 && ro->threads_frozen)
		r = add_bool(o, GW_PARAM_THREADS_FROZEN, true);
	if (r == 0 && ro->agent_pid > 0)
		r = add_number(o, GW_PARAM_AGENT_PID, ro->agent_pid);
	if (r == 0 && ro->agent_tid > 0)
		r = add_number(o, GW_PARAM_AGENT_TID, ro->agent_tid);
	if (r == 0 && ro->progress)
		r = add_bool(o, GW_PARAM_PROGRESS, true);
	return finish(o, r, ret_params);
}

int gw_req_prefill(const struct gw_req_image *image, cJSON **ret_params)
{
	cJSON *o;

	if (!image || image->nfiles == 0)
		return -EINVAL;
	o = cJSON_CreateObject();
	return finish(o, o ? add_image(o, image) : -ENOMEM, ret_params);
}
