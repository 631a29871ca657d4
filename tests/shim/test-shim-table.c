/* SPDX-License-Identifier: MIT */
/* The shim's range table, on its own. */
#include <errno.h>
#include <stdlib.h>

#include "gw-test.h"
#include "shim-table.h"

#define MIB ((size_t)1 << 20)

static struct shim_range *range(CUdeviceptr va, size_t size, struct shim_phys *p)
{
	struct shim_range *r = calloc(1, sizeof(*r));

	GW_ASSERT(r);
	r->va = va;
	r->size = size;
	r->phys = p;
	if (p)
		p->nmaps++;
	return r;
}

static struct shim_phys *phys(size_t size, bool exportable)
{
	struct shim_phys *p = shim_phys_new();

	GW_ASSERT(p && p->fd == -1);
	p->size = size;
	p->exportable = exportable;
	p->real = 0x1234;
	return p;
}

GW_TEST(ranges_sorted_and_found)
{
	struct shim_table t;
	struct shim_range *a = range(0x30000000, 2 * MIB, phys(2 * MIB, true));
	struct shim_range *b = range(0x10000000, 4 * MIB, phys(4 * MIB, true));
	struct shim_range *c = range(0x20000000, 2 * MIB, phys(2 * MIB, true));

	shim_table_init(&t);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, a), 0);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, b), 0);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, c), 0);
	GW_ASSERT_INT_EQ(t.nranges, 3);
	GW_ASSERT(t.ranges[0] == b && t.ranges[1] == c && t.ranges[2] == a);
	GW_ASSERT(shim_table_find(&t, 0x20000000) == c);
	GW_ASSERT(shim_table_find(&t, 0x20000001) == NULL);
	GW_ASSERT(shim_table_lookup(&t, 0x20000001) == c);
	GW_ASSERT(shim_table_lookup(&t, 0x10000000 + 4 * MIB - 1) == b);
	GW_ASSERT(shim_table_lookup(&t, 0x10000000 + 4 * MIB) == NULL);
	GW_ASSERT(shim_table_lookup(&t, 0x0fffffff) == NULL);
	GW_ASSERT(shim_table_lookup(&t, 0x40000000) == NULL);
	GW_ASSERT_INT_EQ(shim_table_index_from(&t, 0x10000100), 0);
	GW_ASSERT_INT_EQ(shim_table_index_from(&t, 0x10000000 + 4 * MIB), 1);
	GW_ASSERT_INT_EQ(shim_table_index_from(&t, 0x50000000), 3);
	shim_table_finish(&t); /* frees the ranges and their (converted: vid 0) memory */
	GW_ASSERT_INT_EQ(t.nranges, 0);
}

GW_TEST(overlapping_ranges_refused)
{
	struct shim_table t;
	struct shim_range *a = range(0x10000000, 4 * MIB, phys(4 * MIB, true));
	struct shim_range *over = range(0x10000000 + 2 * MIB, 4 * MIB, NULL);
	struct shim_range *under = range(0x10000000 - 2 * MIB, 4 * MIB, NULL);
	struct shim_range *next = range(0x10000000 + 4 * MIB, 2 * MIB, phys(2 * MIB, true));
	uint64_t gen;

	shim_table_init(&t);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, a), 0);
	gen = t.gen;
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, over), -EEXIST);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, under), -EEXIST);
	GW_ASSERT_INT_EQ(t.gen, gen);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, next), 0); /* adjacent is fine */
	GW_ASSERT(t.gen > gen);
	gen = t.gen;
	shim_table_remove_range(&t, a);
	GW_ASSERT(t.gen > gen);
	GW_ASSERT_INT_EQ(t.nranges, 1);
	GW_ASSERT(shim_table_lookup(&t, 0x10000000) == NULL);
	shim_table_remove_range(&t, a); /* not there any more: nothing happens */
	GW_ASSERT_INT_EQ(t.nranges, 1);
	shim_phys_free(a->phys);
	free(a);
	free(over);
	free(under);
	shim_table_finish(&t);
}

GW_TEST(virtual_handles)
{
	struct shim_table t;
	struct shim_phys *p[3];

	shim_table_init(&t);
	for (int i = 0; i < 3; i++) {
		p[i] = phys(2 * MIB, true);
		GW_ASSERT_INT_EQ(shim_table_add_phys(&t, p[i]), 0);
		GW_ASSERT(shim_is_vhandle(p[i]->vid));
		GW_ASSERT(i == 0 || p[i]->vid > p[i - 1]->vid);
	}
	GW_ASSERT(!shim_is_vhandle(0xfa4e000000000001ull));
	GW_ASSERT(shim_table_find_phys(&t, p[1]->vid) == p[1]);
	shim_table_remove_phys(&t, p[1]);
	GW_ASSERT(shim_table_find_phys(&t, p[1]->vid) == NULL);
	GW_ASSERT(shim_table_find_phys(&t, p[2]->vid) == p[2]);
	GW_ASSERT(shim_table_find_phys(&t, p[0]->vid) == p[0]);
	shim_phys_free(p[1]);
	shim_table_finish(&t);
	GW_ASSERT_INT_EQ(t.nphys, 0);
}

GW_TEST(reported_ranges_and_totals)
{
	struct shim_table t;
	struct shim_phys *app = phys(8 * MIB, true), *plain = phys(4 * MIB, false);
	struct shim_range *conv = range(0x10000000, 4 * MIB, phys(4 * MIB, true));
	struct shim_range *half1 = range(0x20000000, 4 * MIB, app);
	struct shim_range *plain_r = range(0x30000000, 4 * MIB, plain);
	struct shim_range *released = range(0x40000000, 2 * MIB, phys(2 * MIB, true));
	struct shim_range *foreign = range(0x50000000, 2 * MIB, phys(2 * MIB, true));
	struct shim_totals tot;

	shim_table_init(&t);
	GW_ASSERT_INT_EQ(shim_table_add_phys(&t, app), 0);
	GW_ASSERT_INT_EQ(shim_table_add_phys(&t, plain), 0);
	conv->converted = true;
	released->released = true;
	foreign->phys->foreign = true;
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, conv), 0);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, half1), 0);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, plain_r), 0);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, released), 0);
	GW_ASSERT_INT_EQ(shim_table_add_range(&t, foreign), 0);
	/* half of an 8 MiB allocation mapped: not movable as one range */
	GW_ASSERT(!shim_range_reported(half1));
	GW_ASSERT(!shim_range_reported(plain_r));
	GW_ASSERT(shim_range_reported(conv));
	shim_table_totals(&t, &tot);
	GW_ASSERT_INT_EQ(tot.ranges, 3);
	GW_ASSERT_INT_EQ(tot.bytes, 8 * MIB);
	GW_ASSERT_INT_EQ(tot.released, 1);
	GW_ASSERT_INT_EQ(tot.foreign, 1);
	/* the whole allocation mapped once: it is */
	half1->size = 8 * MIB;
	GW_ASSERT(shim_range_reported(half1));
	shim_table_finish(&t);
}

GW_TEST_MAIN()
