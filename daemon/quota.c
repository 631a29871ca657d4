/* SPDX-License-Identifier: MIT */
#include "quota.h"

#include <errno.h>
#include <stdlib.h>

struct gw_quota_entry {
	struct gw_quota_entry *next;
	uid_t uid;
	unsigned used;
};

void gw_quota_init(struct gw_quota *q, unsigned max_per_uid)
{
	q->head = NULL;
	q->max_per_uid = max_per_uid;
}

void gw_quota_finish(struct gw_quota *q)
{
	while (q->head) {
		struct gw_quota_entry *e = q->head;

		q->head = e->next;
		free(e);
	}
}

static struct gw_quota_entry **find(struct gw_quota *q, uid_t uid)
{
	struct gw_quota_entry **p = &q->head;

	while (*p && (*p)->uid != uid)
		p = &(*p)->next;
	return p;
}

int gw_quota_take(struct gw_quota *q, uid_t uid)
{
	struct gw_quota_entry **p, *e;

	if (uid == 0)
		return 0;
	p = find(q, uid);
	e = *p;
	if (e && e->used >= q->max_per_uid)
		return -EDQUOT;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			return -ENOMEM;
		e->uid = uid;
		*p = e;
	}
	e->used++;
	return 0;
}

void gw_quota_give(struct gw_quota *q, uid_t uid)
{
	struct gw_quota_entry **p, *e;

	if (uid == 0)
		return;
	p = find(q, uid);
	e = *p;
	if (!e)
		return;
	if (--e->used == 0) {
		*p = e->next;
		free(e);
	}
}

unsigned gw_quota_used(const struct gw_quota *q, uid_t uid)
{
	for (const struct gw_quota_entry *e = q->head; e; e = e->next)
		if (e->uid == uid)
			return e->used;
	return 0;
}
