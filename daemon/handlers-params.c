/* SPDX-License-Identifier: MIT */
/* Params and results that several handler files share. */
#include <errno.h>

#include "handlers.h"

cJSON *gw_handlers_gpu_states(const struct gw_gpu_table *t, uint64_t mask)
{
	cJSON *result = cJSON_CreateObject();
	cJSON *gpus = result ? cJSON_AddArrayToObject(result, "gpus") : NULL;

	for (unsigned i = 0; gpus && i < t->count; i++) {
		cJSON *o;

		if (!(mask & ((uint64_t)1 << i)))
			continue;
		o = cJSON_CreateObject();
		if (!o)
			break;
		cJSON_AddNumberToObject(o, "index", i);
		cJSON_AddStringToObject(o, "uuid", t->gpus[i].uuid_text);
		cJSON_AddStringToObject(o, "state", gw_gpu_state_name(t->gpus[i].state));
		cJSON_AddItemToArray(gpus, o);
	}
	return result;
}

int gw_handlers_take_quota(struct gw_daemon *d, struct gw_request *req, uid_t owner)
{
	cJSON *extra;

	if (gw_quota_take(&d->quota, owner) == 0)
		return 0;
	extra = cJSON_CreateObject();
	if (extra)
		cJSON_AddStringToObject(extra, "limit", GW_LIMIT_MAX_OPS_PER_UID);
	gw_request_fail(req, GW_ERROR_LIMIT, extra,
			"uid %u has %u operations queued or running, its limit "
			"(--max-ops-per-uid %u): wait for one to finish",
			(unsigned)owner, gw_quota_used(&d->quota, owner), d->quota.max_per_uid);
	return -EDQUOT;
}

int gw_handlers_parse_timeout(struct gw_request *req, unsigned def_ms, unsigned max_ms,
			      unsigned *ret_ms)
{
	uint64_t v;
	int r = gw_json_get_u64(req->msg.body, "timeout_ms", 0, max_ms, &v);

	if (r == -ENOENT) {
		*ret_ms = def_ms;
		return 0;
	}
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"timeout_ms\" must be an integer from 0 to %u", max_ms);
		return r;
	}
	*ret_ms = (unsigned)v;
	return 0;
}
