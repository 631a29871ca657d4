/* SPDX-License-Identifier: MIT */
/*
 * The copy engine's lower half (copy-io.h): moving a set's data between the GPU and an image in
 * files, through the pinned staging buffers, by I/O lanes on threads of their own; and the
 * helpers both halves use.
 */
#include "copy-io.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

int gw_copy_fail(const struct gw_copy_engine *e, const char *what, CUresult r, char *err,
		 size_t errlen)
{
	char text[160];

	snprintf(err, errlen, "%s: %s", what, gw_cuda_describe(e->cuda, r, text, sizeof(text)));
	return gw_cuda_errno(r);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int gw_copy_sync_all(const struct gw_copy_engine *e, char *err, size_t errlen)
{
	int ret = 0;

	for (unsigned k = 0; k < e->nstreams; k++) {
		CUresult r = e->cuda->cuStreamSynchronize(e->streams[k]);

		if (r != CUDA_SUCCESS && ret == 0)
			ret = err ? gw_copy_fail(e, "cuStreamSynchronize", r, err, errlen) : -EIO;
	}
	return ret;
}

/* The zero runs of every range of the set: memsets on one stream (synchronised by the caller). */
int gw_copy_memset_zero_runs(const struct gw_copy_engine *e, const struct gw_copy_set *set,
			     CUstream st, char *err, size_t errlen)
{
	const struct gw_vimg *v = set->v;

	for (unsigned i = 0; i < set->n; i++) {
		const struct gw_vimg_range *r = &v->ranges[set->ranges[i]];
		const struct gw_copy_map *m = &set->maps[set->ranges[i]];

		for (uint32_t k = 0; k < r->nruns; k++) {
			const struct gw_vimg_run *run = &v->runs[r->first_run + k];
			uint64_t off, len;
			CUresult cr;

			if (!run->zero)
				continue;
			gw_vimg_run_span(v, r, run, &off, &len);
			cr = e->cuda->cuMemsetD8Async(m->va + off, 0, len, st);
			if (cr != CUDA_SUCCESS)
				return gw_copy_fail(e, "cuMemsetD8Async", cr, err, errlen);
		}
	}
	return 0;
}

static int io_full(int fd, void *buf, size_t len, uint64_t offset, int write_it)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write_it ? pwrite(fd, (char *)buf + done, len - done,
					      (off_t)(offset + done)) :
				       pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return write_it ? -EIO : -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

/*
 * File stores. The image's pieces (gw_vimg_pieces_next: a range's data cut at stripe_bytes, or
 * at the lane buffer's size in a version 1 image) of every range of the set go into one queue per
 * file: a segment file each, or the one image file. Up to GW_COPY_IO_WRITE_LANES threads out
 * and GW_COPY_IO_LANES in, each with a slice of the pinned staging buffers and a stream, take
 * pieces from the queues: the lanes start spread over the queues, and a lane whose queue is
 * empty moves to the one with work left that the fewest lanes work on. Out, with as many
 * segments as lanes each lane writes its own file (writers of one file queue on its inode: the
 * single-file limit); in, readers of one file do not, so twice as many lanes read, two per file,
 * each a slice half as big. A process of many small ranges keeps every lane busy, since pieces
 * of all ranges are in the queues.
 * Out, a lane copies a piece's data runs down into half its buffer and writes them; in, it reads
 * a piece into half its buffer and copies its runs up; the halves alternate, so that a lane's DMA
 * overlaps its own file I/O (lane_run), and the lanes overlap each other's.
 */
#define GW_COPY_IO_LANES 16      /* in: what GW_GPU_STREAMS gives, a stream each */
#define GW_COPY_IO_WRITE_LANES 8 /* out: one per segment file */
#define GW_COPY_IO_MAX_SPLIT 4   /* a staging buffer serves at most this many lanes */

/* A data run of a range of the set: where its bytes are in the data section and on the GPU. */
struct extent {
	uint64_t data_offset, len;
	CUdeviceptr dev;
};

struct piece_item {
	uint64_t data_offset, len, file_offset;
};

struct piece_queue {
	struct piece_item *items;
	size_t n, cap;
	size_t next; /* claimed with __atomic_fetch_add */
	unsigned active; /* lanes working on it (atomic) */
	int fd;
	uint8_t *map;
};

struct io_plan {
	const struct gw_copy_engine *e;
	struct extent *ext;
	size_t next;
	struct piece_queue q[GW_VIMG_MAX_SEGMENTS];
	unsigned nq;
	unsigned nlanes;
	int out;
	int stop; /* a lane failed: the others stop at their next piece */
	uint64_t *progress; /* the store's, or NULL */
};

/* A stretch of a piece that fits half a lane's buffer. */
struct sub_piece {
	const struct piece_queue *q;
	uint64_t data_offset, len, file_offset;
};

struct io_lane {
	struct io_plan *p;
	unsigned index;
	void *buf;
	size_t buf_bytes;
	CUstream stream;
	uint64_t io_ns, io_bytes, pieces;
	int ret;
	char err[256];
	pthread_t thread;
	int started;
	/* double buffering: two halves of buf, an event per half marks its copy done */
	void *half[2];
	size_t half_bytes;
	CUevent ev[2];
	int pending[2];
	/* where the lane is in the queues */
	struct piece_queue *q;
	struct piece_item cur;
	uint64_t cur_done;
	unsigned from;
};

static void plan_free(struct io_plan *p)
{
	free(p->ext);
	for (unsigned i = 0; i < GW_VIMG_MAX_SEGMENTS; i++)
		free(p->q[i].items);
}

static int queue_push(struct piece_queue *q, const struct piece_item *it)
{
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		struct piece_item *items = realloc(q->items, cap * sizeof(*items));

		if (!items)
			return -ENOMEM;
		q->items = items;
		q->cap = cap;
	}
	q->items[q->n++] = *it;
	return 0;
}

static int plan_build(struct io_plan *p, const struct gw_copy_set *set,
		      const struct gw_copy_store *s, uint64_t piece_bytes)
{
	const struct gw_vimg *v = set->v;
	struct gw_vimg_pieces it;
	struct gw_vimg_piece pc;
	uint8_t *mine = calloc(v->nranges ? v->nranges : 1, 1);
	size_t next = 0, total = 0;
	int r = 0;

	if (!mine)
		return -ENOMEM;
	for (unsigned i = 0; i < set->n; i++) {
		const struct gw_vimg_range *rg = &v->ranges[set->ranges[i]];

		mine[set->ranges[i]] = 1;
		total += rg->nruns;
	}
	p->ext = calloc(total ? total : 1, sizeof(*p->ext));
	if (!p->ext) {
		free(mine);
		return -ENOMEM;
	}
	/* In range order: their data offsets increase, so the extents are sorted. */
	for (uint32_t ri = 0; ri < v->nranges; ri++) {
		const struct gw_vimg_range *rg = &v->ranges[ri];

		if (!mine[ri])
			continue;
		for (uint32_t k = 0; k < rg->nruns; k++) {
			const struct gw_vimg_run *run = &v->runs[rg->first_run + k];
			uint64_t off, len;

			if (run->zero)
				continue;
			gw_vimg_run_span(v, rg, run, &off, &len);
			p->ext[next].data_offset = run->data_offset;
			p->ext[next].len = len;
			p->ext[next].dev = set->maps[ri].va + off;
			next++;
		}
	}
	p->next = next;
	p->nq = s->nsegments ? s->nsegments : 1;
	for (unsigned i = 0; i < p->nq; i++) {
		p->q[i].fd = s->nsegments ? s->seg_fds[i] : s->fd;
		p->q[i].map = s->nsegments ? NULL : s->map;
	}
	gw_vimg_pieces_start(v, piece_bytes, &it);
	while (r == 0 && gw_vimg_pieces_next(v, &it, &pc)) {
		struct piece_item item = { pc.data_offset, pc.len, pc.offset };

		if (!mine[pc.range])
			continue;
		if (pc.segment >= p->nq)
			r = -EINVAL; /* a version 2 image with more segments than files: never here */
		else
			r = queue_push(&p->q[pc.segment], &item);
	}
	free(mine);
	return r;
}

/* The first extent that ends after data offset x (x lies in the set's data). */
static size_t extent_at(const struct io_plan *p, uint64_t x)
{
	size_t lo = 0, hi = p->next;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->ext[mid].data_offset + p->ext[mid].len <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Bytes [x, x + n) of the data section between host and the GPU, queued on the lane's stream
 * (not waited for). */
static int lane_dma(struct io_lane *l, void *buf, uint64_t x, uint64_t n)
{
	const struct gw_cuda *cuda = l->p->e->cuda;
	const struct io_plan *p = l->p;
	uint64_t done = 0;
	CUresult cr;

	for (size_t k = extent_at(p, x); done < n; k++) {
		const struct extent *ex = k < p->next ? &p->ext[k] : NULL;
		uint64_t at = x + done, skip, len;
		char *host = (char *)buf + done;

		if (!ex || ex->data_offset > at) {
			snprintf(l->err, sizeof(l->err), "internal: data offset %llu is in no run",
				 (unsigned long long)at);
			return -EIO;
		}
		skip = at - ex->data_offset;
		len = ex->len - skip < n - done ? ex->len - skip : n - done;
		cr = p->out ? cuda->cuMemcpyDtoHAsync(host, ex->dev + skip, len, l->stream) :
			      cuda->cuMemcpyHtoDAsync(ex->dev + skip, host, len, l->stream);
		if (cr != CUDA_SUCCESS)
			return gw_copy_fail(p->e, p->out ? "cuMemcpyDtoHAsync" : "cuMemcpyHtoDAsync", cr,
				    l->err, sizeof(l->err));
		done += len;
	}
	return 0;
}

/* Mark half h's copies, queued on the lane's stream; wait for them. */
static int half_record(struct io_lane *l, unsigned h)
{
	CUresult cr = l->p->e->cuda->cuEventRecord(l->ev[h], l->stream);

	if (cr != CUDA_SUCCESS)
		return gw_copy_fail(l->p->e, "cuEventRecord", cr, l->err, sizeof(l->err));
	l->pending[h] = 1;
	return 0;
}

static int half_wait(struct io_lane *l, unsigned h)
{
	CUresult cr;

	if (!l->pending[h])
		return 0;
	l->pending[h] = 0;
	cr = l->p->e->cuda->cuEventSynchronize(l->ev[h]);
	return cr == CUDA_SUCCESS ? 0 : gw_copy_fail(l->p->e, "cuEventSynchronize", cr, l->err,
					     sizeof(l->err));
}

/*
 * Writers of one file serialise on its inode lock in write(2), so lanes writing one file through
 * pwrite do not scale (tmpfs: ~1.6-2.5 GB/s however many). Through a shared mapping they do: the
 * pages are made first with MADV_POPULATE_WRITE, which reports a full file system as an error
 * instead of the SIGBUS a plain store into the mapping would take, then filled with memcpy. Only
 * single-file (version 1) images are written so; segment files each have one writer: pwrite.
 */
static int write_mapped(uint8_t *map, const void *buf, size_t n, uint64_t off)
{
	uintptr_t page = 4096, start = (uintptr_t)(map + off) & ~(page - 1);
	uintptr_t end = ((uintptr_t)(map + off + n) + page - 1) & ~(page - 1);

	if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) < 0)
		return errno == ENOMEM || errno == EFAULT ? -ENOSPC : -errno;
	memcpy(map + off, buf, n);
	return 0;
}

static int lane_file_io(struct io_lane *l, const struct sub_piece *sp, void *buf)
{
	uint64_t t = now_ns();
	int r = l->p->out && sp->q->map ? write_mapped(sp->q->map, buf, sp->len, sp->file_offset) :
					  io_full(sp->q->fd, buf, sp->len, sp->file_offset, l->p->out);

	l->io_ns += now_ns() - t;
	if (r < 0) {
		snprintf(l->err, sizeof(l->err), "%s the image%s: %s%s",
			 l->p->out ? "writing" : "reading", l->p->nq > 1 ? "'s segment files" : "",
			 strerror(-r),
			 r == -ENODATA ? " (the file is truncated)" :
			 r == -ENOSPC ? " (the file system is full)" : "");
		return r;
	}
	l->io_bytes += sp->len;
	if (l->p->progress)
		__atomic_add_fetch(l->p->progress, sp->len, __ATOMIC_RELAXED);
	return 0;
}

/* The queue with work left that the fewest lanes work on, looked for from queue `from` on (the
 * first idle one found): a lane shares a file with another only when every file with work left
 * has a lane already. */
static struct piece_queue *pick_queue(struct io_plan *p, unsigned from)
{
	struct piece_queue *best = NULL;
	unsigned best_active = ~0u;

	for (unsigned t = 0; t < p->nq; t++) {
		struct piece_queue *q = &p->q[(from + t) % p->nq];
		unsigned a;

		if (__atomic_load_n(&q->next, __ATOMIC_RELAXED) >= q->n)
			continue;
		a = __atomic_load_n(&q->active, __ATOMIC_RELAXED);
		if (a < best_active) {
			best = q;
			best_active = a;
			if (a == 0)
				break;
		}
	}
	return best;
}

/* The lane's next sub-piece: the rest of its piece, or a new piece from its queue, or from the
 * queue pick_queue() gives. 0 when there is no work left (or the lanes stop). */
static int lane_next(struct io_lane *l, struct sub_piece *sp)
{
	struct io_plan *p = l->p;

	for (;;) {
		if (__atomic_load_n(&p->stop, __ATOMIC_RELAXED))
			return 0;
		if (l->q && l->cur_done < l->cur.len) {
			sp->q = l->q;
			sp->data_offset = l->cur.data_offset + l->cur_done;
			sp->file_offset = l->cur.file_offset + l->cur_done;
			sp->len = l->cur.len - l->cur_done < l->half_bytes ? l->cur.len - l->cur_done :
									   l->half_bytes;
			l->cur_done += sp->len;
			return 1;
		}
		if (l->q) {
			size_t k = __atomic_fetch_add(&l->q->next, 1, __ATOMIC_RELAXED);

			if (k < l->q->n) {
				l->cur = l->q->items[k];
				l->cur_done = 0;
				l->pieces++;
				continue;
			}
			__atomic_sub_fetch(&l->q->active, 1, __ATOMIC_RELAXED);
			l->from = (unsigned)(l->q - p->q) + 1;
			l->q = NULL;
		}
		l->q = pick_queue(p, l->from);
		if (!l->q)
			return 0;
		__atomic_add_fetch(&l->q->active, 1, __ATOMIC_RELAXED);
		l->cur.len = l->cur_done = 0;
	}
}

/*
 * A lane's pipeline over its sub-pieces, alternating the two halves of its buffer so that its
 * DMA and its file I/O overlap. Out: queue the copy down of sub-piece i into one half, then write
 * sub-piece i-1 from the other (its copy waited for). In: read sub-piece i into one half (its
 * previous copy up waited for), then queue its copy up.
 */
static int lane_run(struct io_lane *l)
{
	struct sub_piece sp, prev;
	int have_prev = 0, r = 0;
	unsigned h = 0;

	while (r == 0 && lane_next(l, &sp)) {
		if (l->p->out) {
			r = lane_dma(l, l->half[h], sp.data_offset, sp.len);
			if (r == 0)
				r = half_record(l, h);
			if (r == 0 && have_prev) {
				r = half_wait(l, h ^ 1);
				if (r == 0)
					r = lane_file_io(l, &prev, l->half[h ^ 1]);
			}
			prev = sp;
			have_prev = 1;
		} else {
			r = half_wait(l, h);
			if (r == 0)
				r = lane_file_io(l, &sp, l->half[h]);
			if (r == 0)
				r = lane_dma(l, l->half[h], sp.data_offset, sp.len);
			if (r == 0)
				r = half_record(l, h);
		}
		h ^= 1;
	}
	if (r == 0 && l->p->out && have_prev) {
		r = half_wait(l, h ^ 1);
		if (r == 0)
			r = lane_file_io(l, &prev, l->half[h ^ 1]);
	}
	/* Every copy of this lane done before its buffer goes back (also after a failure). */
	for (unsigned k = 0; k < 2; k++)
		if (half_wait(l, k) < 0 && r == 0)
			r = -EIO;
	if (l->q)
		__atomic_sub_fetch(&l->q->active, 1, __ATOMIC_RELAXED);
	l->q = NULL;
	return r;
}

static void *lane_main(void *arg)
{
	struct io_lane *l = arg;
	struct io_plan *p = l->p;
	const struct gw_cuda *cuda = p->e->cuda;
	unsigned nev = 0;
	CUresult cr;

	cr = cuda->cuCtxSetCurrent(p->e->context);
	/* Blocking: a lane waiting for its copy sleeps and leaves the CPU to the other lanes' file
	 * I/O (the primary context's default may spin). */
	for (; cr == CUDA_SUCCESS && nev < 2; nev++)
		cr = cuda->cuEventCreate(&l->ev[nev], CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING);
	if (cr != CUDA_SUCCESS) {
		l->ret = gw_copy_fail(p->e, nev ? "cuEventCreate" : "cuCtxSetCurrent", cr, l->err,
			      sizeof(l->err));
		nev = nev ? nev - 1 : 0;
	} else {
		/* Halves, page-aligned: the lanes start spread over the files, lane i of n on file
		 * i * nfiles / n. */
		l->half_bytes = l->buf_bytes / 2 & ~(size_t)4095;
		l->half[0] = l->buf;
		l->half[1] = (char *)l->buf + l->half_bytes;
		l->from = p->nlanes ? l->index * p->nq / p->nlanes : 0;
		if (l->half_bytes) {
			l->ret = lane_run(l);
		} else {
			snprintf(l->err, sizeof(l->err), "staging buffers too small for a lane");
			l->ret = -ENOBUFS;
		}
	}
	if (l->ret < 0)
		__atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
	while (nev > 0)
		cuda->cuEventDestroy(l->ev[--nev]);
	return NULL;
}

/* Wait for the lanes with threads; their figures into s, the first failure (unless ret is one
 * already) into err. */
static int lanes_join(struct io_lane *lanes, unsigned nlanes, struct gw_copy_store *s, int ret,
		      char *err, size_t errlen)
{
	unsigned started = 0;
	uint64_t io_ns = 0;

	for (unsigned i = 1; i < nlanes; i++)
		if (lanes[i].started)
			pthread_join(lanes[i].thread, NULL);
	for (unsigned i = 0; i < nlanes; i++) {
		io_ns = lanes[i].io_ns > io_ns ? lanes[i].io_ns : io_ns;
		s->io_bytes += lanes[i].io_bytes;
		s->pieces += lanes[i].pieces;
		started += i > 0 && lanes[i].started;
		if (lanes[i].ret < 0 && ret == 0) {
			ret = lanes[i].ret;
			snprintf(err, errlen, "%s", lanes[i].err);
		}
	}
	s->io_ns += io_ns; /* the lanes ran in parallel */
	if (started + 1 > s->lanes)
		s->lanes = started + 1; /* the lanes that had a thread (lane 0 is this one) */
	return ret;
}

int gw_copy_file(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		 struct gw_copy_store *s, int out, char *err, size_t errlen)
{
	struct io_lane lanes[GW_COPY_IO_LANES];
	struct io_plan plan;
	unsigned per_buffer = 1, nlanes, max = out ? GW_COPY_IO_WRITE_LANES : GW_COPY_IO_LANES;
	uint64_t items = 0;
	size_t lane_bytes;
	int ret = 0;

	if (e->nstaging == 0 || e->nstreams == 0) {
		snprintf(err, errlen, "no pinned staging buffers on this GPU (--staging-mib 0)");
		return -ENOBUFS;
	}
	/* Lanes: each staging buffer split into up to GW_COPY_IO_MAX_SPLIT, at most max. */
	while (per_buffer < GW_COPY_IO_MAX_SPLIT && e->nstaging * per_buffer * 2 <= max)
		per_buffer *= 2;
	lane_bytes = e->staging_bytes / per_buffer;
	memset(&plan, 0, sizeof(plan));
	plan.e = e;
	plan.progress = s->progress;
	plan.out = out;
	ret = plan_build(&plan, set, s, lane_bytes);
	if (ret < 0) {
		plan_free(&plan);
		snprintf(err, errlen, "cannot plan the copy: %s", strerror(-ret));
		return ret;
	}
	for (unsigned i = 0; i < plan.nq; i++)
		items += plan.q[i].n;
	nlanes = e->nstaging * per_buffer;
	if (nlanes > max)
		nlanes = max;
	if (nlanes > items)
		nlanes = (unsigned)items;
	plan.nlanes = nlanes;

	pthread_mutex_lock(e->staging_lock);
	/* The zero runs first: memsets on the last stream, synchronised with everything at the
	 * end. */
	if (!out)
		ret = gw_copy_memset_zero_runs(e, set, e->streams[e->nstreams - 1], err, errlen);
	memset(lanes, 0, sizeof(lanes));
	for (unsigned i = 0; i < nlanes && ret == 0; i++) {
		struct io_lane *l = &lanes[i];

		l->p = &plan;
		l->index = i;
		l->buf = (char *)e->staging[i / per_buffer] + (i % per_buffer) * lane_bytes;
		l->buf_bytes = lane_bytes;
		l->stream = e->streams[i % e->nstreams];
		/* Lane 0 runs on this thread, after the others have started. */
		if (i > 0 && pthread_create(&l->thread, NULL, lane_main, l) == 0)
			l->started = 1;
	}
	/* Lanes without a thread of their own: their queues are shared, the others take them. */
	if (nlanes > 0 && ret == 0)
		lane_main(&lanes[0]);
	if (nlanes > 0)
		ret = lanes_join(lanes, nlanes, s, ret, err, errlen);
	if (ret == 0)
		ret = gw_copy_sync_all(e, err, errlen); /* the memsets */
	else
		gw_copy_sync_all(e, NULL, 0);
	pthread_mutex_unlock(e->staging_lock);
	plan_free(&plan);
	return ret;
}
