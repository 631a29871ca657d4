/* SPDX-License-Identifier: MIT */
#include "gw-test.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

int gw_test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	GW_ASSERT(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void (*case_end_fns[8])(void);
static unsigned ncase_end_fns;

void gw_test_at_case_end(void (*fn)(void))
{
	if (ncase_end_fns < sizeof(case_end_fns) / sizeof(case_end_fns[0]))
		case_end_fns[ncase_end_fns++] = fn;
}

/* 0: passed, 1: failed, 2: skipped. */
static int run_case(const struct gw_test_case *tc, int timeout_s)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		alarm((unsigned)timeout_s);
		tc->fn();
		while (ncase_end_fns)
			case_end_fns[--ncase_end_fns]();
		fflush(NULL);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("waitpid");
			return 1;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		printf("ok - %s\n", tc->name);
		return 0;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == GW_TEST_SKIP_CODE) {
		printf("ok - %s # SKIP\n", tc->name);
		return 2;
	}
	if (WIFSIGNALED(status))
		printf("not ok - %s (killed by signal %d%s)\n", tc->name, WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? ": timeout" : "");
	else
		printf("not ok - %s (exit %d)\n", tc->name, WEXITSTATUS(status));
	return 1;
}

int gw_test_main(int argc, char **argv)
{
	const char *env = getenv("GW_TEST_TIMEOUT_S");
	int timeout_s = env ? atoi(env) : 30, failed = 0, skipped = 0, ran = 0;

	if (timeout_s <= 0)
		timeout_s = 30;
	if (argc > 1 && strcmp(argv[1], "--list") == 0) {
		for (int i = 0; i < gw_test_case_count; i++)
			printf("%s\n", gw_test_cases[i].name);
		return 0;
	}
	for (int i = 0; i < gw_test_case_count; i++) {
		int wanted = argc <= 1;

		for (int a = 1; a < argc; a++)
			wanted |= strcmp(argv[a], gw_test_cases[i].name) == 0;
		if (!wanted)
			continue;
		ran++;
		switch (run_case(&gw_test_cases[i], timeout_s)) {
		case 1:
			failed++;
			break;
		case 2:
			skipped++;
			break;
		}
	}
	if (ran == 0) {
		fprintf(stderr, "no test case matches\n");
		return 2;
	}
	if (failed)
		return 1;
	return skipped == ran ? GW_TEST_SKIP_CODE : 0;
}

static char world_dir[256];

static void world_cleanup(void)
{
	char cmd[300];

	if (!world_dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", world_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", world_dir);
	world_dir[0] = '\0';
}

const char *gw_test_world_runnable(const char *path)
{
	static char copy[512];
	const char *tmp = getenv("TMPDIR"), *base = strrchr(path, '/');
	char buf[65536];
	int in, out;
	ssize_t n;

	if (!world_dir[0]) {
		snprintf(world_dir, sizeof(world_dir), "%s/gwt-bin-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(world_dir) || chmod(world_dir, 0755) < 0)
			GW_FAIL("cannot make a directory for %s: %s", path, strerror(errno));
		atexit(world_cleanup);
		gw_test_at_case_end(world_cleanup);
	}
	snprintf(copy, sizeof(copy), "%s/%s", world_dir, base ? base + 1 : path);
	in = open(path, O_RDONLY | O_CLOEXEC);
	out = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (in < 0 || out < 0)
		GW_FAIL("cannot copy %s to %s: %s", path, copy, strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			GW_FAIL("cannot copy %s: %s", path, strerror(errno));
	close(in);
	close(out);
	return copy;
}
