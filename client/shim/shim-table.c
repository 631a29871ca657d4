/* SPDX-License-Identifier: MIT */
#include "shim-table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct shim_phys *shim_phys_new(void)
{
	struct shim_phys *p = calloc(1, sizeof(*p));

	if (p)
		p->fd = -1;
	return p;
}

void shim_phys_free(struct shim_phys *p)
{
	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	free(p);
}

void shim_table_init(struct shim_table *t)
{
	memset(t, 0, sizeof(*t));
	t->next_serial = 1;
}

void shim_table_finish(struct shim_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nranges; i++) {
		struct shim_range *r = t->ranges[i];

		if (r->phys && r->phys->vid == 0)
			shim_phys_free(r->phys); /* a converted allocation's own memory */
		free(r);
	}
	for (size_t i = 0; i < t->nphys; i++)
		shim_phys_free(t->phys[i]);
	free(t->ranges);
	free(t->phys);
	shim_table_init(t);
}

static int grow(void **array, size_t *cap, size_t need)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 16;
	if (ncap < need || ncap > SIZE_MAX / sizeof(void *))
		return -ENOMEM;
	p = realloc(*array, ncap * sizeof(void *));
	if (!p)
		return -ENOMEM;
	*array = p;
	*cap = ncap;
	return 0;
}

/* The first index in [0, n) whose entry is not below key; below() is true up to some index
 * and false from it on (the arrays are sorted). */
static size_t bisect(const struct shim_table *t, size_t n,
		     bool (*below)(const struct shim_table *t, size_t i, uint64_t key), uint64_t key)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (below(t, mid, key))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool range_below(const struct shim_table *t, size_t i, uint64_t va)
{
	return t->ranges[i]->va < va;
}

static bool phys_below(const struct shim_table *t, size_t i, uint64_t vid)
{
	return t->phys[i]->vid < vid;
}

/* Index of the first range with va >= the given one. */
static size_t lower_bound(const struct shim_table *t, CUdeviceptr va)
{
	return bisect(t, t->nranges, range_below, va);
}

static bool overlaps(const struct shim_range *r, CUdeviceptr va, size_t size)
{
	return va < r->va + r->size && r->va < va + size;
}

int shim_table_add_range(struct shim_table *t, struct shim_range *r)
{
	size_t i;
	int ret;

	if (!r->size || r->va + r->size < r->va)
		return -EINVAL;
	i = lower_bound(t, r->va);
	if ((i < t->nranges && overlaps(t->ranges[i], r->va, r->size)) ||
	    (i > 0 && overlaps(t->ranges[i - 1], r->va, r->size)))
		return -EEXIST;
	ret = grow((void **)&t->ranges, &t->cap_ranges, t->nranges + 1);
	if (ret < 0)
		return ret;
	memmove(t->ranges + i + 1, t->ranges + i, (t->nranges - i) * sizeof(*t->ranges));
	t->ranges[i] = r;
	t->nranges++;
	t->gen++;
	return 0;
}

void shim_table_remove_range(struct shim_table *t, struct shim_range *r)
{
	size_t i = lower_bound(t, r->va);

	if (i >= t->nranges || t->ranges[i] != r)
		return;
	memmove(t->ranges + i, t->ranges + i + 1, (t->nranges - i - 1) * sizeof(*t->ranges));
	t->nranges--;
	t->gen++;
}

struct shim_range *shim_table_find(const struct shim_table *t, CUdeviceptr va)
{
	size_t i = lower_bound(t, va);

	return i < t->nranges && t->ranges[i]->va == va ? t->ranges[i] : NULL;
}

struct shim_range *shim_table_lookup(const struct shim_table *t, CUdeviceptr addr)
{
	size_t i = lower_bound(t, addr);

	if (i < t->nranges && t->ranges[i]->va == addr)
		return t->ranges[i];
	if (i > 0 && addr - t->ranges[i - 1]->va < t->ranges[i - 1]->size)
		return t->ranges[i - 1];
	return NULL;
}

size_t shim_table_index_from(const struct shim_table *t, CUdeviceptr va)
{
	size_t i = lower_bound(t, va);

	if (i > 0 && va - t->ranges[i - 1]->va < t->ranges[i - 1]->size)
		i--;
	return i;
}

static size_t phys_lower_bound(const struct shim_table *t, uint64_t vid)
{
	return bisect(t, t->nphys, phys_below, vid);
}

int shim_table_add_phys(struct shim_table *t, struct shim_phys *p)
{
	int ret;

	if (t->next_serial > ~SHIM_VHANDLE_MASK)
		return -EOVERFLOW;
	ret = grow((void **)&t->phys, &t->cap_phys, t->nphys + 1);
	if (ret < 0)
		return ret;
	/* serials only grow: appending keeps the array sorted */
	p->vid = SHIM_VHANDLE_TAG | t->next_serial++;
	t->phys[t->nphys++] = p;
	return 0;
}

void shim_table_remove_phys(struct shim_table *t, struct shim_phys *p)
{
	size_t i = phys_lower_bound(t, p->vid);

	if (i >= t->nphys || t->phys[i] != p)
		return;
	memmove(t->phys + i, t->phys + i + 1, (t->nphys - i - 1) * sizeof(*t->phys));
	t->nphys--;
}

struct shim_phys *shim_table_find_phys(const struct shim_table *t, uint64_t vid)
{
	size_t i = phys_lower_bound(t, vid);

	return i < t->nphys && t->phys[i]->vid == vid ? t->phys[i] : NULL;
}

bool shim_range_reported(const struct shim_range *r)
{
	const struct shim_phys *p = r->phys;

	return p && p->exportable && r->offset == 0 && r->size == p->size && p->nmaps == 1;
}

void shim_table_totals(const struct shim_table *t, struct shim_totals *ret)
{
	struct shim_totals s = { 0 };

	for (size_t i = 0; i < t->nranges; i++) {
		const struct shim_range *r = t->ranges[i];

		if (!shim_range_reported(r))
			continue;
		s.ranges++;
		s.bytes += r->size;
		if (r->released)
			s.released++;
		else if (r->phys->foreign)
			s.foreign++;
	}
	*ret = s;
}
