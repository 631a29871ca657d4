/* SPDX-License-Identifier: MIT */
/*
 * A tiny test harness. A test binary defines cases with GW_TEST(name) and ends with
 * GW_TEST_MAIN(). Run as `binary CASE` it runs one case, `binary` runs all, `binary --list`
 * lists them. Every case runs in a forked child with a timeout (GW_TEST_TIMEOUT_S, default 30 s),
 * so a crash or hang fails that case alone. meson registers one test() per case. A case that
 * cannot run here (needs root, a tool) calls GW_SKIP(why): meson reports it skipped (exit 77).
 */
#ifndef GW_TEST_H
#define GW_TEST_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*gw_test_fn)(void);

struct gw_test_case {
	const char *name;
	gw_test_fn fn;
};

#define GW_TEST_MAX_CASES 256
extern struct gw_test_case gw_test_cases[GW_TEST_MAX_CASES];
extern int gw_test_case_count;

#define GW_TEST(name)                                                                             \
	static void gw_test_##name(void);                                                         \
	__attribute__((constructor)) static void gw_test_register_##name(void)                    \
	{                                                                                         \
		if (gw_test_case_count < GW_TEST_MAX_CASES)                                       \
			gw_test_cases[gw_test_case_count++] =                                     \
				(struct gw_test_case){ #name, gw_test_##name };                   \
	}                                                                                         \
	static void gw_test_##name(void)

#define GW_FAIL(...)                                                                              \
	do {                                                                                      \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                   \
		fprintf(stderr, __VA_ARGS__);                                                     \
		fprintf(stderr, "\n");                                                            \
		exit(1);                                                                          \
	} while (0)

/* The exit code meson reads as "skipped". */
#define GW_TEST_SKIP_CODE 77

/* End the case as skipped, saying why (exit, not _exit: temp dirs are removed at exit). */
#define GW_SKIP(...)                                                                              \
	do {                                                                                      \
		fprintf(stderr, "skipped: ");                                                     \
		fprintf(stderr, __VA_ARGS__);                                                     \
		fprintf(stderr, "\n");                                                            \
		exit(GW_TEST_SKIP_CODE);                                                          \
	} while (0)

#define GW_ASSERT(cond)                                                                           \
	do {                                                                                      \
		if (!(cond))                                                                      \
			GW_FAIL("assertion failed: %s", #cond);                                   \
	} while (0)

#define GW_ASSERT_INT_EQ(a, b)                                                                    \
	do {                                                                                      \
		long long a_ = (long long)(a), b_ = (long long)(b);                               \
		if (a_ != b_)                                                                     \
			GW_FAIL("%s == %lld, expected %s == %lld", #a, a_, #b, b_);               \
	} while (0)

#define GW_ASSERT_STR_EQ(a, b)                                                                    \
	do {                                                                                      \
		const char *a_ = (a), *b_ = (b);                                                  \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                            \
			GW_FAIL("%s == \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)",          \
				b_ ? b_ : "(null)");                                              \
	} while (0)

#define GW_ASSERT_STR_CONTAINS(hay, needle)                                                       \
	do {                                                                                      \
		const char *h_ = (hay), *n_ = (needle);                                           \
		if (!h_ || !strstr(h_, n_))                                                       \
			GW_FAIL("%s == \"%s\" does not contain \"%s\"", #hay, h_ ? h_ : "(null)", \
				n_);                                                              \
	} while (0)

int gw_test_main(int argc, char **argv);
/* How many descriptors this process has open (a leak check: compare before and after). */
int gw_test_count_fds(void);
/* Run fn when the current case passes too (a case runs in a forked process that ends with
 * _exit(), which skips atexit() handlers; a failing case exit()s and runs those). */
void gw_test_at_case_end(void (*fn)(void));

/*
 * A copy of the program at path that any user may run: tests that run a program as another
 * user (nobody) must not depend on the checkout's directories being open to everyone (a clone
 * under /root is not). The copy lives in a fresh 0755 directory under $TMPDIR or /tmp, removed
 * at exit. Returns its path (static storage).
 */
const char *gw_test_world_runnable(const char *path);

#define GW_TEST_MAIN()                                                                            \
	struct gw_test_case gw_test_cases[GW_TEST_MAX_CASES];                                     \
	int gw_test_case_count;                                                                   \
	int main(int argc, char **argv) { return gw_test_main(argc, argv); }

#endif
