/* SPDX-License-Identifier: MIT */
/*
 * The fast path's per-GPU jobs (one worker job per GPU, in parallel): map the app's memory here
 * and scan it, copy its data chunks out into the image, or create new memory and fill it from
 * the image. Worker threads; each job writes only its GPU's slots of the operation.
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fastop.h"
#include "hostpool.h"
#include "log.h"

struct gw_gpu *gw_fastcopy_range_gpu(struct gw_daemon *d, const struct gw_vimg_range *r)
{
	CUuuid uuid;

	memcpy(uuid.bytes, r->uuid, sizeof(uuid.bytes));
	return gw_gpu_find_uuid(d->gpu_table.gpus, d->gpu_table.count, &uuid);
}

static void engine_for(const struct gw_fast_op *op, unsigned gpu, struct gw_copy_engine *e)
{
	struct gw_gpu *g = &op->op.d->gpu_table.gpus[gpu];

	memset(e, 0, sizeof(*e));
	e->cuda = op->op.d->cuda;
	e->context = g->handles.context;
	e->device = g->device;
	e->streams = g->handles.streams;
	e->nstreams = g->handles.nstreams;
	e->scan = g->handles.scan;
	e->staging = g->handles.staging.buffers;
	e->nstaging = g->handles.staging.count;
	e->staging_bytes = g->handles.staging.buffer_bytes;
	e->staging_lock = &g->staging_lock;
}

/* The ranges being moved: the export list while suspending, the image's while resuming. */
static size_t op_nranges(const struct gw_fast_op *op)
{
	return op->xranges ? op->nx : op->image ? op->image->v.nranges : 0;
}

static const struct gw_vimg_range *op_range(const struct gw_fast_op *op, size_t i)
{
	return op->xranges ? &op->xranges[i] : &op->image->v.ranges[i];
}

static int on_gpu(const struct gw_fast_op *op, size_t i, unsigned gpu)
{
	struct gw_gpu *g = gw_fastcopy_range_gpu(op->op.d, op_range(op, i));

	return g && g->index == gpu;
}

/* One scan-results buffer for all of a job's ranges, sized for its largest. */
static void engine_scan_buffer(const struct gw_fast_op *op, unsigned gpu, struct gw_copy_engine *e,
			       uint64_t chunk_bytes)
{
	uint64_t most = 0;

	for (size_t i = 0; i < op_nranges(op); i++) {
		uint64_t n = (op_range(op, i)->size + chunk_bytes - 1) / chunk_bytes;

		if (on_gpu(op, i, gpu) && n > most)
			most = n;
	}
	gw_copy_scan_buffer(e, most);
}

/* Suspend, first round: map the app's memory here and scan it. The mappings stay for the copy. */
void gw_fastcopy_dump_scan(struct gw_op *o, unsigned gpu)
{
	struct gw_fast_op *op = GW_FAST(o);
	struct gw_copy_engine e;
	char err[256] = "";
	int r = 0;

	engine_for(op, gpu, &e);
	if (op->sparse)
		engine_scan_buffer(op, gpu, &e, op->chunk_bytes);
	for (size_t i = 0; i < op->nx && r == 0; i++) {
		const struct gw_vimg_range *x = &op->xranges[i];

		if (!on_gpu(op, i, gpu))
			continue;
		r = gw_copy_import(&e, &op->maps[i], op->fds[i], x->size, err, sizeof(err));
		if (r == 0 && op->sparse && e.scan) {
			op->scans[i] = calloc((x->size + op->chunk_bytes - 1) / op->chunk_bytes,
					      sizeof(**op->scans));
			r = op->scans[i] ? gw_copy_scan(&e, &op->maps[i], op->chunk_bytes,
							op->scans[i], err, sizeof(err)) :
					   -ENOMEM;
		}
	}
	gw_copy_scan_buffer_free(&e);
	if (r < 0)
		gw_op_job_fail(&op->op, gpu, r, err);
}

/* The ranges of the op on one GPU, as a copy set over maps (indexed by range index). */
static int gpu_set(struct gw_fast_op *op, unsigned gpu, const struct gw_vimg *v,
		   struct gw_copy_map *maps, struct gw_copy_set *set, uint32_t **ret_list)
{
	uint32_t *list = calloc(op_nranges(op) ? op_nranges(op) : 1, sizeof(*list));
	unsigned n = 0;

	*ret_list = list;
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < op_nranges(op); i++)
		if (on_gpu(op, i, gpu))
			list[n++] = (uint32_t)i;
	set->v = v;
	set->ranges = list;
	set->n = n;
	set->maps = maps;
	memset(&op->cstats[gpu], 0, sizeof(op->cstats[gpu])); /* a resume after a failed suspend */
	op->cstats[gpu].ran = 1;
	op->cstats[gpu].ranges = n;
	for (unsigned k = 0; k < n; k++)
		op->cstats[gpu].data_bytes += v->ranges[list[k]].data_bytes;
	return 0;
}

/* Suspend, second round: the data chunks of all the GPU's ranges into the image at once (unless
 * the op is failing), then unmap: the daemon must never keep the app's memory mapped
 * (DESIGN.md's first trap). */
void gw_fastcopy_dump_copy(struct gw_op *o, unsigned gpu)
{
	struct gw_fast_op *op = GW_FAST(o);
	struct gw_copy_stats *st = &op->cstats[gpu];
	struct gw_copy_engine e;
	struct gw_copy_store s;
	struct gw_copy_set set;
	uint32_t *list = NULL;
	char err[256] = "";
	double t;
	int r = 0;

	engine_for(op, gpu, &e);
	if (!op->copy_abort) {
		gw_image_store(op->image, &s);
		s.progress = &op->op.progress_bytes;
		r = gpu_set(op, gpu, &op->image->v, op->maps, &set, &list);
		t = gw_now_ms();
		if (r == 0)
			r = gw_copy_out_set(&e, &set, &s, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "out of memory");
		st->copy_ms = gw_now_ms() - t;
		gw_copy_stats_add(st, &s);
		op->io_ns[gpu] = s.io_ns;
	}
	t = gw_now_ms();
	for (size_t i = 0; i < op->nx; i++)
		if (on_gpu(op, i, gpu))
			gw_copy_unmap(&e, &op->maps[i]);
	st->unmap_ms = gw_now_ms() - t;
	free(list);
	if (r < 0)
		gw_op_job_fail(&op->op, gpu, r, err);
}

/* Resume: new memory for every range of the GPU, then all of it filled from the image at once
 * (zero runs memset, data pieces by every I/O lane), then each range checked against its
 * checksums and exported for the agent. */
void gw_fastcopy_fill(struct gw_op *o, unsigned gpu)
{
	struct gw_fast_op *op = GW_FAST(o);
	const struct gw_vimg *v = &op->image->v;
	struct gw_copy_stats *st = &op->cstats[gpu];
	int verify = (v->flags & GW_VIMG_F_SUMS) != 0;
	struct gw_copy_map *maps = calloc(v->nranges, sizeof(*maps));
	struct gw_copy_engine e;
	struct gw_copy_store s;
	struct gw_copy_set set = { 0 };
	uint32_t *list = NULL;
	char err[256] = "";
	double t;
	int r = 0;

	engine_for(op, gpu, &e);
	gw_image_store(op->image, &s);
	s.progress = &op->op.progress_bytes;
	if (verify)
		engine_scan_buffer(op, gpu, &e, v->chunk_bytes);
	if (verify && !e.scan) {
		verify = 0;
		gw_warn("GPU %u has no chunk scan: the VRAM of pid %d is restored unverified",
			gpu, op->op.pid);
	}
	r = maps ? gpu_set(op, gpu, v, maps, &set, &list) : -ENOMEM;
	if (r < 0)
		snprintf(err, sizeof(err), "out of memory");
	t = gw_now_ms();
	for (unsigned k = 0; k < set.n && r == 0; k++)
		r = gw_copy_create(&e, &maps[list[k]], v->ranges[list[k]].size, err, sizeof(err));
	st->create_ms = gw_now_ms() - t;
	t = gw_now_ms();
	if (r == 0)
		r = gw_copy_in_set(&e, &set, &s, err, sizeof(err));
	st->copy_ms = gw_now_ms() - t;
	gw_copy_stats_add(st, &s);
	t = gw_now_ms();
	for (unsigned k = 0; k < set.n && r == 0 && verify; k++)
		r = gw_copy_verify(&e, v, list[k], &maps[list[k]], err, sizeof(err));
	st->verify_ms = gw_now_ms() - t;
	t = gw_now_ms();
	for (unsigned k = 0; k < set.n && r == 0; k++)
		r = gw_copy_export(&e, &maps[list[k]], &op->fds[list[k]], err, sizeof(err));
	st->export_ms = gw_now_ms() - t;
	t = gw_now_ms();
	for (unsigned k = 0; maps && k < set.n; k++)
		gw_copy_unmap(&e, &maps[list[k]]);
	st->unmap_ms = gw_now_ms() - t;
	op->io_ns[gpu] = s.io_ns;
	gw_copy_scan_buffer_free(&e);
	free(list);
	free(maps);
	if (r < 0)
		gw_op_job_fail(&op->op, gpu, r, err);
}

uint64_t gw_fastcopy_gpus(const struct gw_fast_op *op)
{
	uint64_t mask = 0;

	for (size_t i = 0; i < op_nranges(op); i++) {
		struct gw_gpu *g = gw_fastcopy_range_gpu(op->op.d, op_range(op, i));

		if (g)
			mask |= (uint64_t)1 << g->index;
	}
	return mask;
}

uint64_t gw_fastcopy_io_ns(const struct gw_fast_op *op)
{
	uint64_t ns = 0;

	for (unsigned g = 0; g < GW_GPU_MAX; g++)
		ns = op->io_ns[g] > ns ? op->io_ns[g] : ns; /* GPUs run in parallel */
	return ns;
}
