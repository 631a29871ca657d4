/* SPDX-License-Identifier: MIT */
/*
 * gpuwarm.Images (docs/protocol.md): list, drop and load (preload) image cache entries. A
 * non-root peer lists and drops only its own uid's entries (the others are counted), and loads
 * only a file it owns (daemon/imagefd.h checks the fd it passed).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "fastpath.h"
#include "handlers.h"
#include "imagecache-ops.h"
#include "imagecache.h"
#include "imagefd.h"
#include "imageio.h"
#include "log.h"

static void images_list(struct gw_daemon *d, struct gw_request *req)
{
	cJSON *result = gw_imagecache_list_json(d->imagecache, &req->peer, gw_now_ms());

	if (!result) {
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	cJSON_AddItemToObject(result, "stats", gw_imagecache_status_json(d->imagecache));
	gw_request_reply(req, result);
}

static void images_drop(struct gw_daemon *d, struct gw_request *req)
{
	cJSON *result;
	uint64_t id = 0;
	int all = 0, r;
	unsigned n;

	if (gw_json_get_bool(req->msg.body, "all", &all) == -EINVAL ||
	    (r = gw_json_get_u64(req->msg.body, "id", 1, UINT64_MAX >> 11, &id)) == -EINVAL ||
	    (all && r == 0) || (!all && r == -ENOENT)) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"drop needs \"id\" (an entry's id) or \"all\": true");
		return;
	}
	if (all) {
		n = gw_imagecache_drop_all(d->imagecache, req->peer.uid);
	} else {
		r = gw_imagecache_drop(d->imagecache, id, req->peer.uid);
		if (r == -ENOENT) {
			gw_request_fail(req, GW_ERROR_NO_SUCH_IMAGE, NULL,
					"no image cache entry %llu%s", (unsigned long long)id,
					req->peer.uid ? " of yours" : "");
			return;
		}
		if (r == -EBUSY) {
			gw_request_fail(req, GW_ERROR_BUSY, NULL, "image cache entry %llu is in use "
					"(a restore reads it, or it is being filled)",
					(unsigned long long)id);
			return;
		}
		n = 1;
	}
	gw_info("image cache: uid %u dropped %u entries", req->peer.uid, n);
	result = cJSON_CreateObject();
	if (result)
		cJSON_AddNumberToObject(result, "dropped", n);
	gw_request_reply(req, result);
}

/* "image_fd": readable, the peer's own file unless root (as a resume's). -1 absent, -2 failed. */
static int take_head_fd(struct gw_request *req)
{
	uint64_t index;
	char why[256];
	int fd, r;

	r = gw_json_get_u64(req->msg.body, "image_fd", 0, GW_FRAME_MAX_FDS - 1, &index);
	if (r == -ENOENT)
		return -1;
	if (r < 0 || index >= req->nfds || req->fds[index] < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"image_fd\" must index a file descriptor sent with the request "
				"(%u came)", req->nfds);
		return -2;
	}
	fd = req->fds[index];
	if (gw_imagefd_check(fd, &req->peer, GW_IMAGEFD_READ, why, sizeof(why)) < 0) {
		gw_warn("uid %u pid %d: image refused: %s", req->peer.uid, req->peer.pid, why);
		gw_request_fail(req, GW_ERROR_IMAGE, NULL, "%s", why);
		return -2;
	}
	req->fds[index] = -1; /* ours now */
	return fd;
}

static void images_load(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_fast_params f;
	int fd, r;

	if (!gw_imagecache_enabled(d->imagecache)) {
		cJSON *extra = cJSON_CreateObject();

		if (extra)
			cJSON_AddStringToObject(extra, "limit", GW_LIMIT_IMAGE_CACHE);
		gw_request_fail(req, GW_ERROR_LIMIT, extra, "the image cache is off: start "
				"gpu-warmd with --image-cache-mib N (and an --image-pool-mib to "
				"hold it)");
		return;
	}
	fd = take_head_fd(req);
	if (fd == -1)
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "load needs \"image_fd\"");
	if (fd < 0)
		return;
	memset(&f, 0, sizeof(f));
	f.pin.pidfd = -1;
	f.image_fd = fd;
	if (gw_imageio_take_segment_fds(req, 0, 1, &f) < 0) {
		gw_imageio_params_close(&f);
		return;
	}
	/* A load holds a worker while it reads: it counts as one of the user's operations. */
	if (gw_handlers_take_quota(d, req, req->peer.uid) < 0) {
		gw_imageio_params_close(&f);
		return;
	}
	gw_info("image cache: uid %u loads an image (%u segment files)", req->peer.uid,
		f.nsegment_fds);
	r = gw_imagecache_fill_start(d, req, req->peer.uid, "load", fd, f.segment_fds,
				     f.nsegment_fds, NULL);
	if (r < 0) {
		gw_quota_give(&d->quota, req->peer.uid);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "cannot start the load: %s",
				strerror(-r));
	}
}

void gw_imagecache_handle(struct gw_daemon *d, struct gw_request *req)
{
	const char *action = NULL;

	if (gw_json_get_string(req->msg.body, "action", 16, &action) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				GW_METHOD_IMAGES " needs \"action\": \"list\", \"drop\" or \"load\"");
		return;
	}
	if (strcmp(action, "list") == 0)
		images_list(d, req);
	else if (strcmp(action, "drop") == 0)
		images_drop(d, req);
	else if (strcmp(action, "load") == 0)
		images_load(d, req);
	else
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"unknown action \"%s\" (list, drop or load)", action);
}
