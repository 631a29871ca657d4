/* SPDX-License-Identifier: MIT */
/*
 * Zero pages given back to the kernel (gpuwarm.Agent.Trim), so that CRIU neither writes nor
 * reads them: after the driver's checkpoint a process holds the driver's host copy of the
 * device state the shim did not move, and most of it is zeros (an H200 torch server: 624 of its
 * 632 MiB, and 1,030 of the 2,015 MiB of anonymous memory CRIU would dump).
 *
 * A private anonymous page that holds only zeros reads the same after madvise(MADV_DONTNEED):
 * the kernel hands out a zero page on the next touch. That holds only while nothing writes the
 * page between the check and the madvise, so the agent trims while the daemon holds every other
 * thread of the process stopped (the driver's restore thread is idle after the checkpoint), and
 * never the page range of its own stack. Only pages that appeared since the app's VRAM was
 * released are looked at (the driver's), never the app's own; and mappings that something may
 * hold pinned or that are not plain anonymous memory are left alone (shim_trim_mapping_ok).
 */
#ifndef SHIM_TRIM_H
#define SHIM_TRIM_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "shim.h"
#include "shim-ops.h"

#define SHIM_ENV_NO_TRIM "GPUWARM_SHIM_NO_TRIM"

struct shim_trim_stats {
	uint64_t mappings;      /* mappings looked at */
	uint64_t scanned_bytes; /* their resident anonymous pages */
	uint64_t zero_bytes;    /* of those, pages of zeros */
	uint64_t trimmed_bytes; /* given back (zero_bytes less failed madvise calls) */
	double ms;
	bool timed_out;         /* stopped at max_ms: the rest is left as it was */
};

/* May this mapping lose its zero pages? From its /proc/PID/smaps header fields (perms as
 * "rw-p", path: "" for anonymous) and its VmFlags line's flags ("rd wr mr mw me ac"). Only
 * readable, writable, private anonymous memory (the heap, unnamed or [anon:...] mappings) that
 * is not locked, DONTFORK (RDMA registrations), DONTDUMP, I/O, PFN or mixed, hugetlb or
 * registered with userfaultfd. */
bool shim_trim_mapping_ok(const char *perms, const char *path, const char *vmflags) SHIM_HIDDEN;

/* Give back the resident pages of zeros in [start, end) (page aligned); pagemap_fd is
 * /proc/self/pagemap. Adds to st. Returns 0 or a negative errno (pagemap unreadable). */
int shim_trim_range(uintptr_t start, uintptr_t end, int pagemap_fd,
		    struct shim_trim_stats *st) SHIM_HIDDEN;

/* Runs of resident pages, in address order: what the process held before the checkpoint. */
struct shim_trim_mark {
	struct {
		uintptr_t start, end;
	} *runs;
	size_t n, cap;
	bool valid; /* taken */
};

/* Every mapping of this process that shim_trim_mapping_ok takes, but the one holding the
 * caller's stack, for at most max_ms (0: no limit), leaving keep's pages alone (NULL: none). */
int shim_trim_process(double max_ms, const struct shim_trim_mark *keep,
		      struct shim_trim_stats *st) SHIM_HIDDEN;

/* Note the resident pages of the mappings shim_trim_process looks at. 0 or -ENOMEM / the
 * errno of reading /proc/self (the mark is then cleared). */
int shim_trim_mark_take(struct shim_trim_mark *mark) SHIM_HIDDEN;
void shim_trim_mark_clear(struct shim_trim_mark *mark) SHIM_HIDDEN;

/* At Release (agent thread, the app's threads stopped): the pages the app holds now, which
 * the next Trim leaves alone, so that it only gives back pages that appeared during the
 * driver's checkpoint (the driver's host copy) and never touches the app's own memory: not
 * even memory the app registered with the driver (cuMemHostRegister pins what it registers,
 * so all of it is resident here). */
void shim_trim_note_release(void) SHIM_HIDDEN;

/* {"max_ms": m} -> {"mappings", "scanned_bytes", "zero_bytes", "trimmed_bytes", "ms",
 * "timed_out"}: pages that appeared since the latest Release ({"trimmed_bytes": 0,
 * "released_before": false} without one; {"disabled": true} with GPUWARM_SHIM_NO_TRIM=1). */
void shim_op_trim(const cJSON *params, struct shim_reply *reply) SHIM_HIDDEN;

#endif
