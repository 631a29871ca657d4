/* SPDX-License-Identifier: MIT */
/*
 * Per-uid counts of operations queued or running, so that no user can occupy the daemon's
 * workers (a lock may wait its whole timeout on a thread) or its queue. Root is not counted:
 * its work (CRIU's plugin) has threads of its own (worker.h). Loop thread only.
 */
#ifndef GW_QUOTA_H
#define GW_QUOTA_H

#include <sys/types.h>

struct gw_quota_entry;

struct gw_quota {
	struct gw_quota_entry *head;
	unsigned max_per_uid;
};

void gw_quota_init(struct gw_quota *q, unsigned max_per_uid);
void gw_quota_finish(struct gw_quota *q);
/* Count one more operation of uid: 0, or -EDQUOT when uid has max_per_uid already, -ENOMEM.
 * Root always gets 0 and is not counted. */
int gw_quota_take(struct gw_quota *q, uid_t uid);
/* That operation ended (a no-op for root). */
void gw_quota_give(struct gw_quota *q, uid_t uid);
unsigned gw_quota_used(const struct gw_quota *q, uid_t uid);

#endif
