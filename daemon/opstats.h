/* SPDX-License-Identifier: MIT */
/* The kinds of process operation and their counters (status "operations", metrics). Pure. */
#ifndef GW_OPSTATS_H
#define GW_OPSTATS_H

#include <stdint.h>

enum gw_op_kind {
	GW_OP_LOCK,
	GW_OP_CHECKPOINT,
	GW_OP_RESTORE,
	GW_OP_UNLOCK,
	GW_OP_SUSPEND,
	GW_OP_RESUME,
	GW_OP_KIND_COUNT,
};

/* Upper bounds (seconds) of the duration histogram's buckets; the last one is +Inf. */
#define GW_OP_BUCKET_BOUNDS { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
#define GW_OP_BUCKETS 12

struct gw_op_stats {
	uint64_t ok, failed;
	double total_ms;
	uint64_t buckets[GW_OP_BUCKETS]; /* non-cumulative counts per bucket */
	uint64_t bytes;                  /* VRAM moved by the fast path */
};

const char *gw_op_kind_name(enum gw_op_kind kind);
/* Count one finished operation. */
void gw_op_stats_record(struct gw_op_stats *stats, int ok, double ms, uint64_t bytes);

#endif
