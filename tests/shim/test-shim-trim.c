/* SPDX-License-Identifier: MIT */
/* The agent's trim of host pages of zeros, on this test process's own memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gw-test.h"
#include "shim-trim.h"

#define NPAGES 64

/* shim-init.c's, which this test does not link */
void shim_log(const char *fmt, ...)
{
	(void)fmt;
}

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static bool resident(const void *addr)
{
	unsigned char v = 0;

	GW_ASSERT_INT_EQ(mincore((void *)addr, page_size(), &v), 0);
	return v & 1;
}

/* NPAGES pages: every third holds a byte of data, the others were written with zeros (so they
 * are resident, as the driver's host copy is). */
static unsigned char *populated(int flags)
{
	size_t pg = page_size();
	unsigned char *m = mmap(NULL, NPAGES * pg, PROT_READ | PROT_WRITE, flags, -1, 0);

	GW_ASSERT(m != MAP_FAILED);
	for (size_t i = 0; i < NPAGES; i++) {
		memset(m + i * pg, 0, pg);
		if (i % 3 == 0)
			m[i * pg + (i * 17) % pg] = (unsigned char)(i + 1);
	}
	for (size_t i = 0; i < NPAGES; i++)
		GW_ASSERT(resident(m + i * pg));
	return m;
}

static void assert_data(const unsigned char *m)
{
	size_t pg = page_size();

	for (size_t i = 0; i < NPAGES; i++)
		for (size_t b = 0; b < pg; b++) {
			unsigned char want = i % 3 == 0 && b == (i * 17) % pg ? (unsigned char)(i + 1) : 0;

			if (m[i * pg + b] != want)
				GW_FAIL("page %zu byte %zu: %u, want %u", i, b, m[i * pg + b], want);
		}
}

GW_TEST(trim_gives_back_zero_pages_and_keeps_data)
{
	size_t pg = page_size(), data_pages = (NPAGES + 2) / 3;
	unsigned char *m = populated(MAP_PRIVATE | MAP_ANONYMOUS);
	struct shim_trim_stats st = { 0 };
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	GW_ASSERT(fd >= 0);
	GW_ASSERT_INT_EQ(shim_trim_range((uintptr_t)m, (uintptr_t)m + NPAGES * pg, fd, &st), 0);
	close(fd);
	GW_ASSERT_INT_EQ(st.scanned_bytes, NPAGES * pg);
	GW_ASSERT_INT_EQ(st.zero_bytes, (NPAGES - data_pages) * pg);
	GW_ASSERT_INT_EQ(st.trimmed_bytes, st.zero_bytes);
	for (size_t i = 0; i < NPAGES; i++)
		if (resident(m + i * pg) != (i % 3 == 0))
			GW_FAIL("page %zu: resident %d after the trim", i, (int)resident(m + i * pg));
	assert_data(m); /* the zero pages read as zeros again, the data is where it was */
	munmap(m, NPAGES * pg);
}

GW_TEST(trim_skips_pages_not_resident)
{
	size_t pg = page_size();
	unsigned char *m = mmap(NULL, NPAGES * pg, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct shim_trim_stats st = { 0 };
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	GW_ASSERT(m != MAP_FAILED && fd >= 0);
	m[5 * pg] = 7; /* one page of data, the rest never touched */
	GW_ASSERT_INT_EQ(shim_trim_range((uintptr_t)m, (uintptr_t)m + NPAGES * pg, fd, &st), 0);
	close(fd);
	GW_ASSERT_INT_EQ(st.scanned_bytes, pg);
	GW_ASSERT_INT_EQ(st.zero_bytes, 0);
	GW_ASSERT(!resident(m) && resident(m + 5 * pg) && m[5 * pg] == 7);
	munmap(m, NPAGES * pg);
}

GW_TEST(trim_takes_only_plain_private_anonymous_memory)
{
	static const struct {
		const char *perms, *path, *flags;
		bool ok;
	} cases[] = {
		{ "rw-p", "", "rd wr mr mw me ac sd", true },
		{ "rw-p", "[heap]", "rd wr mr mw me ac sd", true },
		{ "rw-p", "[anon:glibc malloc]", "rd wr mr mw me ac", true },
		{ "rw-p", "", "rd wr mr mw me ac sd lo", false },  /* locked */
		{ "rw-p", "", "rd wr mr mw me dc ac sd", false },  /* DONTFORK (RDMA) */
		{ "rw-p", "", "rd wr mr mw me dd ac", false },     /* DONTDUMP */
		{ "rw-p", "", "rd wr mr mw me ac um", false },     /* userfaultfd */
		{ "rw-p", "", "rd wr pf io", false },              /* PFN / I/O */
		{ "rw-p", "", "rd wr mr mw me ht", false },        /* hugetlb */
		{ "rw-s", "", "rd wr sh mr mw me", false },        /* shared */
		{ "r--p", "", "rd mr mw me ac", false },           /* read-only */
		{ "rw-p", "/usr/lib/libc.so.6", "rd wr mr mw me ac", false }, /* file: COW pages */
		{ "rw-p", "[stack]", "rd wr mr mw me gd ac", false },
		{ "rw-p", "/dev/nvidiactl", "rd wr sh mr mw me io pf", false },
		{ "rw", "", "rd wr", false },
		{ "rw-p", "", "rdwr", false },                     /* flags are two letters each */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (shim_trim_mapping_ok(cases[i].perms, cases[i].path, cases[i].flags) != cases[i].ok)
			GW_FAIL("%s %s [%s]: want %d", cases[i].perms, cases[i].path, cases[i].flags,
				(int)cases[i].ok);
}

GW_TEST(trim_process_leaves_shared_and_locked_memory)
{
	size_t pg = page_size();
	unsigned char *priv = populated(MAP_PRIVATE | MAP_ANONYMOUS);
	unsigned char *shared = populated(MAP_SHARED | MAP_ANONYMOUS);
	unsigned char *locked = populated(MAP_PRIVATE | MAP_ANONYMOUS);
	/* the system call itself: a sanitizer's mlock() does nothing */
	bool have_lock = syscall(SYS_mlock, locked, NPAGES * pg) == 0;
	struct shim_trim_stats st = { 0 };

	GW_ASSERT_INT_EQ(shim_trim_process(0, NULL, &st), 0);
	GW_ASSERT(!st.timed_out && st.mappings > 0 && st.trimmed_bytes >= (NPAGES * 2 / 3) * pg);
	GW_ASSERT(!resident(priv + pg) && resident(priv));
	for (size_t i = 0; i < NPAGES; i++) {
		GW_ASSERT(resident(shared + i * pg));
		if (have_lock)
			GW_ASSERT(resident(locked + i * pg));
	}
	assert_data(priv);
	assert_data(shared);
	assert_data(locked);
	if (have_lock)
		syscall(SYS_munlock, locked, NPAGES * pg);
	munmap(priv, NPAGES * pg);
	munmap(shared, NPAGES * pg);
	munmap(locked, NPAGES * pg);
}

GW_TEST(trim_stops_at_its_time_limit)
{
	unsigned char *m = populated(MAP_PRIVATE | MAP_ANONYMOUS);
	struct shim_trim_stats st = { 0 };

	GW_ASSERT_INT_EQ(shim_trim_process(1e-9, NULL, &st), 0);
	GW_ASSERT(st.timed_out);
	assert_data(m);
	munmap(m, NPAGES * page_size());
}

GW_TEST(trim_leaves_the_pages_resident_at_the_mark)
{
	size_t pg = page_size();
	unsigned char *old = mmap(NULL, NPAGES * pg, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct shim_trim_mark mark = { 0 };
	struct shim_trim_stats st = { 0 };
	unsigned char *fresh;

	GW_ASSERT(old != MAP_FAILED);
	memset(old, 0, NPAGES / 2 * pg); /* the app's pages of zeros, resident before the mark */
	GW_ASSERT_INT_EQ(shim_trim_mark_take(&mark), 0);
	GW_ASSERT(mark.valid && mark.n > 0);
	memset(old + NPAGES / 2 * pg, 0, NPAGES / 2 * pg); /* appeared after it */
	fresh = populated(MAP_PRIVATE | MAP_ANONYMOUS);     /* a mapping made after it */
	GW_ASSERT_INT_EQ(shim_trim_process(0, &mark, &st), 0);
	for (size_t i = 0; i < NPAGES; i++) {
		if (resident(old + i * pg) != (i < NPAGES / 2))
			GW_FAIL("page %zu of the old mapping: resident %d", i, (int)resident(old + i * pg));
		if (resident(fresh + i * pg) != (i % 3 == 0))
			GW_FAIL("page %zu of the new mapping: resident %d", i, (int)resident(fresh + i * pg));
	}
	assert_data(fresh);
	shim_trim_mark_clear(&mark);
	shim_trim_mark_clear(&mark); /* twice, and NULL: no-ops */
	shim_trim_mark_clear(NULL);
	GW_ASSERT(!mark.valid && mark.runs == NULL);
	munmap(old, NPAGES * pg);
	munmap(fresh, NPAGES * pg);
}

static void reply_free(struct shim_reply *reply)
{
	cJSON_Delete(reply->result);
	cJSON_Delete(reply->error_extra);
	memset(reply, 0, sizeof(*reply));
}

static cJSON *op_trim(const char *params_json, struct shim_reply *reply)
{
	cJSON *params = params_json ? cJSON_Parse(params_json) : NULL;

	memset(reply, 0, sizeof(*reply));
	shim_op_trim(params, reply);
	cJSON_Delete(params);
	return reply->result;
}

GW_TEST(trim_request_checks_its_limit_and_can_be_turned_off)
{
	struct shim_reply reply;
	cJSON *res;

	GW_ASSERT(op_trim("{\"max_ms\": -1}", &reply) == NULL);
	GW_ASSERT_STR_EQ(reply.error_name, GW_ERROR_INVALID_REQUEST);
	GW_ASSERT_STR_CONTAINS(reply.error_message, "max_ms");
	reply_free(&reply);
	GW_ASSERT(op_trim("{\"max_ms\": \"soon\"}", &reply) == NULL);
	GW_ASSERT_STR_EQ(reply.error_name, GW_ERROR_INVALID_REQUEST);
	reply_free(&reply);

	/* no Release before it: nothing is given back */
	res = op_trim("{\"max_ms\": 10000}", &reply);
	GW_ASSERT(res && cJSON_GetObjectItem(res, "trimmed_bytes")->valuedouble == 0 &&
		  cJSON_IsFalse(cJSON_GetObjectItem(res, "released_before")));
	reply_free(&reply);
	shim_trim_note_release();
	res = op_trim("{\"max_ms\": 10000}", &reply);
	GW_ASSERT(res && cJSON_IsNumber(cJSON_GetObjectItem(res, "trimmed_bytes")) &&
		  cJSON_IsFalse(cJSON_GetObjectItem(res, "timed_out")) &&
		  !cJSON_GetObjectItem(res, "released_before"));
	reply_free(&reply);
	res = op_trim("{}", &reply); /* one trim per Release */
	GW_ASSERT(res && cJSON_IsFalse(cJSON_GetObjectItem(res, "released_before")));
	reply_free(&reply);

	setenv(SHIM_ENV_NO_TRIM, "1", 1);
	res = op_trim("{}", &reply);
	GW_ASSERT(res && cJSON_IsTrue(cJSON_GetObjectItem(res, "disabled")) &&
		  !cJSON_GetObjectItem(res, "trimmed_bytes"));
	reply_free(&reply);
	unsetenv(SHIM_ENV_NO_TRIM);
}

GW_TEST_MAIN()
