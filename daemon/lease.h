/* SPDX-License-Identifier: MIT */
/* Leases: a client's claim on a GPU to restore onto. A lease lives until released or until the
 * connection that took it closes. Loop thread only. */
#ifndef GW_LEASE_H
#define GW_LEASE_H

#include <stdint.h>
#include <sys/socket.h>

struct gw_conn;

#define GW_LEASES_MAX 1024
#define GW_LEASES_PER_CONN_MAX 16

struct gw_lease {
	struct gw_lease *next;
	uint64_t id;
	unsigned gpu;
	const struct gw_conn *conn;
	struct ucred owner;
	double created_ms;
};

struct gw_lease_table {
	struct gw_lease *head;
	unsigned count;
	uint64_t next_id;
};

void gw_lease_table_init(struct gw_lease_table *table);
void gw_lease_table_finish(struct gw_lease_table *table);
/* -EMFILE past the limits. */
int gw_lease_add(struct gw_lease_table *table, unsigned gpu, const struct gw_conn *conn,
		 const struct ucred *owner, double now_ms, struct gw_lease **ret_lease);
struct gw_lease *gw_lease_find(struct gw_lease_table *table, uint64_t id);
/* Unlink and free; returns the GPU index it held. */
unsigned gw_lease_remove(struct gw_lease_table *table, struct gw_lease *lease);
unsigned gw_lease_count_conn(const struct gw_lease_table *table, const struct gw_conn *conn);

#endif
