/* SPDX-License-Identifier: MIT */
#include "opstats.h"

const char *gw_op_kind_name(enum gw_op_kind kind)
{
	static const char *const names[GW_OP_KIND_COUNT] = {
		[GW_OP_LOCK] = "lock",       [GW_OP_CHECKPOINT] = "checkpoint",
		[GW_OP_RESTORE] = "restore", [GW_OP_UNLOCK] = "unlock",
		[GW_OP_SUSPEND] = "suspend", [GW_OP_RESUME] = "resume",
	};
	return kind < GW_OP_KIND_COUNT ? names[kind] : "unknown";
}

void gw_op_stats_record(struct gw_op_stats *stats, int ok, double ms, uint64_t bytes)
{
	static const double bounds[] = GW_OP_BUCKET_BOUNDS;
	unsigned b = 0;

	while (b < GW_OP_BUCKETS - 1 && ms / 1e3 > bounds[b])
		b++;
	stats->buckets[b]++;
	stats->total_ms += ms;
	stats->bytes += bytes;
	if (ok)
		stats->ok++;
	else
		stats->failed++;
}
