/* SPDX-License-Identifier: MIT */
#include "lease.h"

#include <errno.h>
#include <stdlib.h>

void gw_lease_table_init(struct gw_lease_table *table)
{
	table->head = NULL;
	table->count = 0;
	table->next_id = 1;
}

void gw_lease_table_finish(struct gw_lease_table *table)
{
	while (table->head)
		gw_lease_remove(table, table->head);
}

int gw_lease_add(struct gw_lease_table *table, unsigned gpu, const struct gw_conn *conn,
		 const struct ucred *owner, double now_ms, struct gw_lease **ret_lease)
{
	struct gw_lease *lease;

	if (table->count >= GW_LEASES_MAX ||
	    gw_lease_count_conn(table, conn) >= GW_LEASES_PER_CONN_MAX)
		return -EMFILE;
	lease = calloc(1, sizeof(*lease));
	if (!lease)
		return -ENOMEM;
	lease->id = table->next_id++;
	lease->gpu = gpu;
	lease->conn = conn;
	lease->owner = *owner;
	lease->created_ms = now_ms;
	lease->next = table->head;
	table->head = lease;
	table->count++;
	*ret_lease = lease;
	return 0;
}

struct gw_lease *gw_lease_find(struct gw_lease_table *table, uint64_t id)
{
	for (struct gw_lease *l = table->head; l; l = l->next)
		if (l->id == id)
			return l;
	return NULL;
}

unsigned gw_lease_remove(struct gw_lease_table *table, struct gw_lease *lease)
{
	unsigned gpu = lease->gpu;

	for (struct gw_lease **p = &table->head; *p; p = &(*p)->next) {
		if (*p == lease) {
			*p = lease->next;
			table->count--;
			break;
		}
	}
	free(lease);
	return gpu;
}

unsigned gw_lease_count_conn(const struct gw_lease_table *table, const struct gw_conn *conn)
{
	unsigned n = 0;

	for (const struct gw_lease *l = table->head; l; l = l->next)
		n += l->conn == conn;
	return n;
}
