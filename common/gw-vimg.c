/* SPDX-License-Identifier: MIT */
/* The VRAM image's contents: ranges, runs and chunk sums built at dump, the totals and the
 * placement of the data worked out, its segments walked piece by piece. Its bytes on disk are
 * gw-vimg-format.c's. */
#include "gw-vimg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gw-vimg-private.h"

uint64_t gw_vimg_data_offset(uint64_t table_bytes)
{
	uint64_t a = GW_VIMG_DATA_ALIGN;

	return (GW_VIMG_HEADER_BYTES + table_bytes + a - 1) / a * a;
}

int gw_vimg_chunk_bytes_valid(uint64_t c)
{
	return c >= GW_VIMG_MIN_CHUNK_BYTES && c <= GW_VIMG_MAX_CHUNK_BYTES && (c & (c - 1)) == 0;
}

void gw_vimg_run_span(const struct gw_vimg *v, const struct gw_vimg_range *r,
		      const struct gw_vimg_run *run, uint64_t *offset, uint64_t *len)
{
	uint64_t start = run->first_chunk * v->chunk_bytes;
	uint64_t end = (run->first_chunk + run->nchunks) * v->chunk_bytes;

	if (end > r->size)
		end = r->size;
	*offset = start;
	*len = end > start ? end - start : 0;
}

/* ---- building ---- */

int gw_vimg_init(struct gw_vimg *v, uint64_t chunk_bytes, uint32_t flags)
{
	memset(v, 0, sizeof(*v));
	if (!gw_vimg_chunk_bytes_valid(chunk_bytes) || (flags & ~GW_VIMG_F_KNOWN))
		return -EINVAL;
	v->version = GW_VIMG_VERSION;
	v->chunk_bytes = chunk_bytes;
	v->flags = flags;
	return 0;
}

static int grow(void **p, uint64_t *cap, uint64_t need, size_t elem)
{
	uint64_t n = *cap ? *cap : 16;
	void *q;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	q = realloc(*p, (size_t)n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static int push_run(struct gw_vimg *v, uint64_t first, uint32_t zero)
{
	struct gw_vimg_run *run;

	if (v->nruns >= GW_VIMG_MAX_RUNS)
		return -E2BIG;
	if (grow((void **)&v->runs, &v->cap_runs, v->nruns + 1, sizeof(*v->runs)) < 0)
		return -ENOMEM;
	run = &v->runs[v->nruns++];
	memset(run, 0, sizeof(*run));
	run->first_chunk = first;
	run->zero = zero;
	return 0;
}

int gw_vimg_add_range(struct gw_vimg *v, const struct gw_vimg_range *in,
		      const struct gw_chunk_scan *scans)
{
	struct gw_vimg_range *r;
	uint64_t nchunks, cap_ranges = v->cap_ranges;
	int ret;

	if (in->size == 0 || in->size % 8 || in->size > GW_VIMG_MAX_RANGE_BYTES ||
	    in->va + in->size < in->va || in->app_device > 1024)
		return -EINVAL;
	if (v->nranges >= GW_VIMG_MAX_RANGES)
		return -E2BIG;
	nchunks = (in->size + v->chunk_bytes - 1) / v->chunk_bytes;
	if (v->nchunks + nchunks > GW_VIMG_MAX_CHUNKS)
		return -E2BIG;
	if (grow((void **)&v->ranges, &cap_ranges, v->nranges + 1, sizeof(*v->ranges)) < 0 ||
	    grow((void **)&v->sums, &v->cap_chunks, v->nchunks + nchunks, sizeof(*v->sums)) < 0) {
		v->cap_ranges = (uint32_t)cap_ranges;
		return -ENOMEM;
	}
	v->cap_ranges = (uint32_t)cap_ranges;
	r = &v->ranges[v->nranges];
	memset(r, 0, sizeof(*r));
	r->va = in->va;
	r->size = in->size;
	memcpy(r->uuid, in->uuid, sizeof(r->uuid));
	r->app_device = in->app_device;
	r->first_run = v->nruns;
	r->first_chunk = v->nchunks;
	for (uint64_t c = 0; c < nchunks; c++) {
		uint32_t zero = scans && !scans[c].nonzero;
		struct gw_vimg_run *last = v->nruns > r->first_run ? &v->runs[v->nruns - 1] : NULL;

		if (!last || last->zero != zero || last->nchunks == UINT32_MAX) {
			ret = push_run(v, c, zero);
			if (ret < 0) {
				v->nruns = r->first_run;
				return ret;
			}
			last = &v->runs[v->nruns - 1];
		}
		last->nchunks++;
		v->sums[v->nchunks + c] = scans ? scans[c].sum : 0;
	}
	r->nruns = (uint32_t)(v->nruns - r->first_run);
	v->nchunks += nchunks;
	v->nranges++;
	return 0;
}

uint64_t gw_vimg_table_bytes(const struct gw_vimg *v)
{
	return (uint64_t)v->nranges * GW_VIMG_RANGE_BYTES + v->nruns * GW_VIMG_RUN_BYTES +
	       v->nchunks * 8 + (uint64_t)v->nsegments * GW_VIMG_SEGMENT_BYTES;
}

int gw_vimg_stripe_bytes_valid(uint64_t s)
{
	return s >= GW_VIMG_MIN_STRIPE_BYTES && s <= GW_VIMG_MAX_STRIPE_BYTES && (s & (s - 1)) == 0;
}

int gw_vimg_set_segments(struct gw_vimg *v, uint32_t nsegments, uint64_t stripe_bytes)
{
	if (nsegments == 0) {
		v->nsegments = 0;
		v->stripe_bytes = 0;
		v->version = GW_VIMG_VERSION;
		return 0;
	}
	if (nsegments > GW_VIMG_MAX_SEGMENTS || !gw_vimg_stripe_bytes_valid(stripe_bytes))
		return -EINVAL;
	v->nsegments = nsegments;
	v->stripe_bytes = stripe_bytes;
	v->version = GW_VIMG_VERSION_SEGMENTS;
	return 0;
}

/* ---- pieces ---- */

void gw_vimg_pieces_start(const struct gw_vimg *v, uint64_t piece_bytes, struct gw_vimg_pieces *it)
{
	memset(it, 0, sizeof(*it));
	it->piece_bytes = v->nsegments ? v->stripe_bytes : piece_bytes;
	if (it->piece_bytes == 0)
		it->piece_bytes = GW_VIMG_MAX_STRIPE_BYTES;
}

int gw_vimg_pieces_next(const struct gw_vimg *v, struct gw_vimg_pieces *it,
			struct gw_vimg_piece *p)
{
	const struct gw_vimg_range *r;

	while (it->range < v->nranges && it->done >= v->ranges[it->range].data_bytes) {
		it->range++;
		it->done = 0;
	}
	if (it->range >= v->nranges)
		return 0;
	r = &v->ranges[it->range];
	p->range = it->range;
	p->data_offset = r->data_offset + it->done;
	p->len = r->data_bytes - it->done < it->piece_bytes ? r->data_bytes - it->done :
							       it->piece_bytes;
	if (v->nsegments) {
		p->segment = (uint32_t)(it->next_piece % v->nsegments);
		p->offset = GW_VIMG_SEG_HEADER_BYTES + it->fill[p->segment];
		it->fill[p->segment] += p->len;
	} else {
		p->segment = 0;
		p->offset = v->data_offset + p->data_offset;
	}
	it->next_piece++;
	it->done += p->len;
	return 1;
}

void gw_vimg_segment_sizes(const struct gw_vimg *v, uint64_t *sizes)
{
	struct gw_vimg_pieces it;
	struct gw_vimg_piece p;

	memset(sizes, 0, GW_VIMG_MAX_SEGMENTS * sizeof(*sizes));
	if (!v->nsegments)
		return;
	gw_vimg_pieces_start(v, 0, &it);
	while (gw_vimg_pieces_next(v, &it, &p))
		sizes[p.segment] += p.len;
}

int gw_vimg_finalize(struct gw_vimg *v)
{
	uint64_t data = 0, vram = 0;

	for (uint32_t i = 0; i < v->nranges; i++) {
		struct gw_vimg_range *r = &v->ranges[i];

		r->data_offset = data;
		r->data_bytes = 0;
		for (uint32_t k = 0; k < r->nruns; k++) {
			struct gw_vimg_run *run = &v->runs[r->first_run + k];
			uint64_t off, len;

			gw_vimg_run_span(v, r, run, &off, &len);
			run->data_offset = run->zero ? 0 : data;
			if (!run->zero) {
				data += len;
				r->data_bytes += len;
			}
		}
		vram += r->size;
	}
	v->vram_bytes = vram;
	v->data_bytes = data;
	v->zero_bytes = vram - data;
	v->data_offset = gw_vimg_data_offset(gw_vimg_table_bytes(v));
	v->file_bytes = v->nsegments ? v->data_offset : v->data_offset + data;
	gw_vimg_segment_sizes(v, v->seg_bytes);
	return 0;
}

void gw_vimg_clear(struct gw_vimg *v)
{
	if (!v)
		return;
	/* each table with its count and capacity */
	free(v->ranges);
	v->ranges = NULL;
	v->nranges = v->cap_ranges = 0;
	free(v->runs);
	v->runs = NULL;
	v->nruns = v->cap_runs = 0;
	free(v->sums);
	v->sums = NULL;
	v->nchunks = v->cap_chunks = 0;
}

double gw_vimg_predict_restore_s(const struct gw_vimg *v, double *ret_read_bps,
				 double *ret_device_bps, double *ret_fixed_s)
{
	double rate = v->read_bps ? (double)v->read_bps : v->write_bps ? (double)v->write_bps : 5e9;
	double device = v->device_bps ? (double)v->device_bps : 100e9;
	double fixed = v->restore_fixed_ns ? (double)v->restore_fixed_ns / 1e9 : 0.3;

	if (ret_read_bps)
		*ret_read_bps = rate;
	if (ret_device_bps)
		*ret_device_bps = device;
	if (ret_fixed_s)
		*ret_fixed_s = fixed;
	return fixed + (double)v->data_bytes / rate + (double)v->vram_bytes / device;
}

