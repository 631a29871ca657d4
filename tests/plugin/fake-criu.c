/* SPDX-License-Identifier: MIT */
/*
 * fake-criu: loads CRIU plugins and drives their device hooks the way CRIU 4.1 does, on live
 * processes, without dumping anything else. Built with -rdynamic, it offers plugins the CRIU
 * internals they look up (print_on_level, criu_get_image_dir, the inventory functions,
 * set_compel_interrupt_only_mode, checkpoint_devices); built with -DFAKE_CRIU_3X it is a CRIU
 * 3.x (10 hooks, none of those 4.x internals).
 *
 *   fake-criu dump|pre-dump|restore -t PID [-t PID...] -D IMAGES -L PLUGINS [-o LOG]
 *             [-R|--leave-running] [--timeout S] [--stop-after-pause] [--fail-after-checkpoint]
 *
 * What CRIU does and we copy (criu/plugin.c, criu/seize.c, criu/cr-dump.c, criu/cr-restore.c):
 *  - plugins: every "*.so" of -L in readdir() order; CR_PLUGIN_DESC version and max_hooks
 *    checked; init(stage) != 0 fails the run; a hook chain ends at the first answer that is
 *    not -ENOTSUP.
 *  - dump: alarm(--timeout, default 10); per task, depth first from each -t:
 *    PAUSE_DEVICES(pid) while the task still runs, then every thread PTRACE_SEIZE +
 *    PTRACE_INTERRUPT, then its children (/proc/PID/task/TID/children); alarm(0);
 *    CHECKPOINT_DEVICES(pid) for every task; the memory pages written (a pattern, into
 *    pages-1.img, opened by name as CRIU does, so through a link); exit(DUMP, ret) with the
 *    tasks still stopped; then the tasks are let go. (CRIU kills them after a dump without -R; we detach them so
 *    that a later "restore" can continue the same processes.)
 *  - pre-dump: as dump up to the freezing, no CHECKPOINT_DEVICES, no exit().
 *  - restore: the inventory's plugin list (IMAGES/fake-inventory, written by dump) checked
 *    after every init(); the memory pages read back (through a link) and checked, the
 *    restore failing on a mismatch; every thread seized (CRIU has them stopped before sigreturn then);
 *    RESUME_DEVICES_LATE(pid) per task, its result only logged; exit(RESTORE, 0); detach.
 * Every hook call is logged as "hook NAME(pid) = ret". After the device hooks and at the end,
 * "self after WHEN: N threads, CUDA driver mapped|not mapped" says what the plugins left in this
 * process (CRIU setns()es into mount namespaces after CHECKPOINT_DEVICES: that needs a single
 * thread). Exit code: 0 success, 1 failure.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "criu-plugin-abi.h"

#ifdef FAKE_CRIU_3X
#define HOOK_MAX GWP_CRIU_HOOKS_3X
#else
#define HOOK_MAX GWP_CRIU_HOOKS_42
#endif
#define MAX_PLUGINS 16
#define MAX_TASKS 64
#define MAX_THREADS 4096
#define MAX_INVENTORY 16
#define INVENTORY_FILE "fake-inventory"

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

struct plugin {
	void *dl;
	struct gwp_criu_plugin_desc *d;
};

struct task {
	pid_t pid;
	pid_t threads[MAX_THREADS];
	unsigned nthreads;
};

static struct {
	int stage;
	int image_fd;
	FILE *log;
	struct plugin plugins[MAX_PLUGINS];
	unsigned nplugins;
	struct task tasks[MAX_TASKS];
	unsigned ntasks;
	char inventory[MAX_INVENTORY][64];
	unsigned ninventory;
	int inventory_loaded; /* restore: the images had a plugin list */
	const char *images; /* -D */
	int interrupt_only;
	unsigned alarms;
} C = { .image_fd = -1 };

static const char *hook_name(int hook)
{
	switch (hook) {
	case GWP_CRIU_HOOK_PAUSE_DEVICES:
		return "PAUSE_DEVICES";
	case GWP_CRIU_HOOK_CHECKPOINT_DEVICES:
		return "CHECKPOINT_DEVICES";
	case GWP_CRIU_HOOK_RESUME_DEVICES_LATE:
		return "RESUME_DEVICES_LATE";
	}
	return "?";
}

/* ---- what CRIU exports to plugins ---- */

__attribute__((visibility("default"), format(printf, 2, 3))) void
print_on_level(unsigned int loglevel, const char *format, ...)
{
	static const char *const tags[] = { "msg", "err", "warn", "info", "debug" };
	struct timespec ts;
	va_list ap;

	if (!C.log)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	fprintf(C.log, "(%5ld.%06ld) %-5s ", (long)ts.tv_sec % 100000, ts.tv_nsec / 1000,
		loglevel < 5 ? tags[loglevel] : "?");
	va_start(ap, format);
	vfprintf(C.log, format, ap);
	va_end(ap);
	fflush(C.log);
}

#define pr(level, ...) print_on_level(level, __VA_ARGS__)

__attribute__((visibility("default"))) int criu_get_image_dir(void)
{
	return C.image_fd;
}

#ifndef FAKE_CRIU_3X
__attribute__((visibility("default"))) int add_inventory_plugin(const char *name)
{
	for (unsigned i = 0; i < C.ninventory; i++)
		if (strcmp(C.inventory[i], name) == 0)
			return 0;
	if (C.ninventory >= MAX_INVENTORY || strlen(name) >= sizeof(C.inventory[0]))
		return -1;
	strcpy(C.inventory[C.ninventory++], name);
	pr(GWP_CRIU_LOG_INFO, "inventory: + %s\n", name);
	return 0;
}

__attribute__((visibility("default"))) bool check_and_remove_inventory_plugin(const char *name,
									       size_t n)
{
	if (!C.inventory_loaded)
		return true; /* images without a plugin list: everyone is in (CRIU's rule) */
	for (unsigned i = 0; i < C.ninventory; i++) {
		if (strncmp(name, C.inventory[i], n) == 0) {
			memmove(&C.inventory[i], &C.inventory[i + 1],
				(C.ninventory - i - 1) * sizeof(C.inventory[0]));
			C.ninventory--;
			return true;
		}
	}
	return false;
}

__attribute__((visibility("default"))) void set_compel_interrupt_only_mode(void)
{
	C.interrupt_only = 1;
	pr(GWP_CRIU_LOG_INFO, "compel: interrupt-only mode\n");
}

static int run_hook(int hook, int pid);

/* A CRIU 4.2 function: its presence tells the plugin POST_FORKING is there. */
__attribute__((visibility("default"))) void kerndat_warn_about_madv_guards(void)
{
}

__attribute__((visibility("default"))) int checkpoint_devices(void)
{
	for (unsigned i = 0; i < C.ntasks; i++) {
		int r = run_hook(GWP_CRIU_HOOK_CHECKPOINT_DEVICES, C.tasks[i].pid);

		if (r < 0 && r != -ENOTSUP)
			return -1;
	}
	return 0;
}
#endif

/* ---- plugins ---- */

static int run_hook(int hook, int pid)
{
	int r = -ENOTSUP;

	for (unsigned i = 0; i < C.nplugins; i++) {
		struct gwp_criu_plugin_desc *d = C.plugins[i].d;

		if ((unsigned)hook >= d->max_hooks || !d->hooks[hook])
			continue;
		r = ((int (*)(int))d->hooks[hook])(pid);
		if (r != -ENOTSUP)
			break;
	}
	pr(GWP_CRIU_LOG_INFO, "hook %s(%d) = %d\n", hook_name(hook), pid, r);
	return r;
}

#ifndef FAKE_CRIU_3X
/* POST_FORKING takes no argument; CRIU stops at the first plugin answering other than -ENOTSUP. */
static int run_post_forking(void)
{
	int r = -ENOTSUP;

	for (unsigned i = 0; i < C.nplugins; i++) {
		struct gwp_criu_plugin_desc *d = C.plugins[i].d;

		if (d->max_hooks <= GWP_CRIU_HOOK_POST_FORKING || !d->hooks[GWP_CRIU_HOOK_POST_FORKING])
			continue;
		r = ((int (*)(void))d->hooks[GWP_CRIU_HOOK_POST_FORKING])();
		if (r != -ENOTSUP)
			break;
	}
	pr(GWP_CRIU_LOG_INFO, "hook POST_FORKING() = %d\n", r);
	return r;
}
#endif

static int load_plugins(const char *dir)
{
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d) {
		pr(GWP_CRIU_LOG_ERROR, "Unable to open directory %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		struct gwp_criu_plugin_desc *desc;
		char path[4096];
		void *h;

		if (len < 3 || strcmp(e->d_name + len - 3, ".so") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		h = dlopen(path, RTLD_LAZY);
		if (!h) {
			pr(GWP_CRIU_LOG_ERROR, "Unable to load %s: %s\n", path, dlerror());
			goto fail;
		}
		desc = dlsym(h, GWP_CRIU_DESC_SYMBOL);
		if (!desc || desc->version > GWP_CRIU_PLUGIN_VERSION || desc->max_hooks > HOOK_MAX ||
		    C.nplugins >= MAX_PLUGINS) {
			pr(GWP_CRIU_LOG_ERROR, "Corrupted plugin %s (version %#x, %u hooks)\n", path,
			   desc ? desc->version : 0, desc ? desc->max_hooks : 0);
			dlclose(h);
			goto fail;
		}
		pr(GWP_CRIU_LOG_INFO, "plugin %s: \"%s\" version %#x hooks %u\n", e->d_name,
		   desc->name, desc->version, desc->max_hooks);
		if (desc->init && desc->init(C.stage)) {
			pr(GWP_CRIU_LOG_ERROR, "Failed in init(%d) of \"%s\"\n", C.stage, desc->name);
			dlclose(h);
			goto fail;
		}
		C.plugins[C.nplugins].dl = h;
		C.plugins[C.nplugins++].d = desc;
	}
	closedir(d);
	if (C.stage == GWP_CRIU_STAGE_RESTORE && C.inventory_loaded && C.ninventory > 0) {
		for (unsigned i = 0; i < C.ninventory; i++)
			pr(GWP_CRIU_LOG_ERROR, "Missing required plugin: %s\n", C.inventory[i]);
		return -1;
	}
	return 0;
fail:
	closedir(d);
	return -1;
}

static void plugins_fini(int ret)
{
	for (unsigned i = 0; i < C.nplugins; i++) {
		if (C.plugins[i].d->exit)
			C.plugins[i].d->exit(C.stage, ret);
		dlclose(C.plugins[i].dl);
	}
	C.nplugins = 0;
}

/* ---- inventory file ---- */

static void inventory_save(void)
{
	int fd = openat(C.image_fd, INVENTORY_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (!f) {
		pr(GWP_CRIU_LOG_ERROR, "cannot write the inventory\n");
		return;
	}
	for (unsigned i = 0; i < C.ninventory; i++)
		fprintf(f, "%s\n", C.inventory[i]);
	fclose(f);
}

static void inventory_load(void)
{
	int fd = openat(C.image_fd, INVENTORY_FILE, O_RDONLY | O_CLOEXEC);
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	char line[128];

	if (!f)
		return;
	C.inventory_loaded = 1;
	while (fgets(line, sizeof(line), f) && C.ninventory < MAX_INVENTORY) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] && strlen(line) < sizeof(C.inventory[0]))
			strcpy(C.inventory[C.ninventory++], line);
	}
	fclose(f);
}

/* ---- memory pages ---- */

/* CRIU's page image, as CRIU writes it: opened by name (through a link), truncated, written.
 * The small pagemap-fake.img says what it holds: a restore checks it. */
#define PAGES_FILE "pages-1.img"
#define PAGEMAP_FILE "pagemap-fake.img"
#define PAGES_BYTES (256u << 10)

static uint32_t pages_word(uint64_t seed, size_t i)
{
	uint64_t x = seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull);

	x ^= x >> 31;
	return (uint32_t)(x * 0xbf58476d1ce4e5b9ull >> 32);
}

static int pages_save(void)
{
	static uint32_t buf[PAGES_BYTES / 4];
	struct timespec ts;
	uint64_t seed;
	FILE *f;
	int fd;

	clock_gettime(CLOCK_REALTIME, &ts);
	seed = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	for (size_t i = 0; i < PAGES_BYTES / 4; i++)
		buf[i] = pages_word(seed, i);
	fd = openat(C.image_fd, PAGES_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
		pr(GWP_CRIU_LOG_ERROR, "cannot write %s: %s\n", PAGES_FILE, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	fd = openat(C.image_fd, PAGEMAP_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		pr(GWP_CRIU_LOG_ERROR, "cannot write %s\n", PAGEMAP_FILE);
		return -1;
	}
	fprintf(f, "%llu %u\n", (unsigned long long)seed, PAGES_BYTES);
	fclose(f);
	return 0;
}

/* PAGES_FILE, opened through the images' fd and read: 0 when it holds the pages of seed. */
static int pages_read_back(unsigned long long seed)
{
	static uint32_t buf[PAGES_BYTES / 4];
	int fd = openat(C.image_fd, PAGES_FILE, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	for (size_t i = 0; n == (ssize_t)sizeof(buf) && i < PAGES_BYTES / 4; i++)
		if (buf[i] != pages_word(seed, i))
			n = -1;
	return n == (ssize_t)sizeof(buf) ? 0 : -EILSEQ;
}

/* As CRIU's restorer reads the pages again: from inside the restored task's root (here a chroot
 * to an empty directory, in a user and mount namespace of a child), through the images' fd.
 * Where namespaces are not allowed, from this root (the log says so). */
static int pages_read_back_in_task_root(unsigned long long seed)
{
	char root[PATH_MAX];
	int status, r;
	pid_t pid;

	snprintf(root, sizeof(root), "%s/fake-task-root", C.images);
	if (mkdir(root, 0700) < 0 && errno != EEXIST)
		return -errno;
	pid = fork();
	if (pid == 0) {
		int chrooted = unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 && chroot(root) == 0 &&
			       chdir("/") == 0;

		if (!chrooted)
			pr(GWP_CRIU_LOG_INFO, "no namespaces here: pages read in CRIU's root\n");
		_exit(-pages_read_back(seed) & 0xff);
	}
	r = pid < 0 ? -errno : waitpid(pid, &status, 0) < 0 ? -errno :
			       WIFEXITED(status) ? -WEXITSTATUS(status) : -EINTR;
	rmdir(root);
	return r;
}

/* The pages the dump wrote, read as CRIU reads them (following links; once in CRIU's root, once
 * in the task's): 0 when they are. */
static int pages_check(void)
{
	unsigned long long seed;
	unsigned bytes = 0;
	int fd = openat(C.image_fd, PAGEMAP_FILE, O_RDONLY | O_CLOEXEC), r;
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;

	if (!f)
		return 0; /* images of a dump without pages */
	if (fscanf(f, "%llu %u", &seed, &bytes) != 2 || bytes != PAGES_BYTES) {
		fclose(f);
		pr(GWP_CRIU_LOG_ERROR, "%s: unreadable\n", PAGEMAP_FILE);
		return -1;
	}
	fclose(f);
	r = pages_read_back(seed);
	if (r == 0)
		r = pages_read_back_in_task_root(seed);
	if (r < 0) {
		pr(GWP_CRIU_LOG_ERROR, "%s does not hold the dump's pages: %s\n", PAGES_FILE,
		   strerror(-r));
		return -1;
	}
	pr(GWP_CRIU_LOG_INFO, "%s: %u bytes of pages restored\n", PAGES_FILE, bytes);
	return 0;
}

/* ---- seizing ---- */

static int wait_event_stop(pid_t tid)
{
	for (int n = 0; n < 64; n++) {
		int status;

		if (waitpid(tid, &status, __WALL) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!WIFSTOPPED(status))
			return -ESRCH;
		if ((status >> 16) == PTRACE_EVENT_STOP)
			return 0;
		/* a signal got there first: let the thread have it, stop again */
		if (ptrace(PTRACE_CONT, tid, NULL, (void *)(long)WSTOPSIG(status)) < 0 ||
		    ptrace(PTRACE_INTERRUPT, tid, NULL, 0) < 0)
			return -errno;
	}
	return -EIO;
}

static int has_thread(const struct task *t, pid_t tid)
{
	for (unsigned i = 0; i < t->nthreads; i++)
		if (t->threads[i] == tid)
			return 1;
	return 0;
}

/* Every thread of t->pid, until a pass finds no new one (as criu's collect_threads). */
static int seize_task(struct task *t)
{
	char dir[64];
	int added = 1;

	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)t->pid);
	while (added) {
		struct dirent *e;
		DIR *d = opendir(dir);

		if (!d)
			return -errno;
		added = 0;
		while ((e = readdir(d))) {
			pid_t tid = (pid_t)atoi(e->d_name);
			int r;

			if (tid <= 0 || has_thread(t, tid) || t->nthreads >= MAX_THREADS)
				continue;
			if (ptrace(PTRACE_SEIZE, tid, NULL, 0) < 0 ||
			    ptrace(PTRACE_INTERRUPT, tid, NULL, 0) < 0) {
				if (errno == ESRCH)
					continue; /* exited meanwhile */
				r = -errno;
				closedir(d);
				return r;
			}
			r = wait_event_stop(tid);
			if (r < 0) {
				closedir(d);
				return r;
			}
			ptrace(PTRACE_SETOPTIONS, tid, NULL, (void *)(long)PTRACE_O_TRACESYSGOOD);
			t->threads[t->nthreads++] = tid;
			added = 1;
		}
		closedir(d);
	}
	pr(GWP_CRIU_LOG_INFO, "seized %d (%u threads)\n", (int)t->pid, t->nthreads);
	return 0;
}

static void release_tasks(void)
{
	for (unsigned i = 0; i < C.ntasks; i++)
		for (unsigned k = 0; k < C.tasks[i].nthreads; k++)
			ptrace(PTRACE_DETACH, C.tasks[i].threads[k], NULL, 0);
	C.ntasks = 0;
}

static int collect(pid_t pid, int device_hooks)
{
	struct task *t;
	int r;

	for (unsigned i = 0; i < C.ntasks; i++)
		if (C.tasks[i].pid == pid)
			return 0;
	if (C.ntasks >= MAX_TASKS)
		return -1;
	if (device_hooks) {
		r = run_hook(GWP_CRIU_HOOK_PAUSE_DEVICES, pid);
		if (r < 0 && r != -ENOTSUP)
			return -1;
	}
	t = &C.tasks[C.ntasks++]; /* a static array: t stays valid across the recursion */
	memset(t, 0, sizeof(*t));
	t->pid = pid;
	r = seize_task(t);
	if (r < 0) {
		pr(GWP_CRIU_LOG_ERROR, "cannot seize %d: %s\n", (int)pid, strerror(-r));
		return -1;
	}
	/* children of every thread, depth first */
	for (unsigned i = 0; i < t->nthreads; i++) {
		char path[128];
		FILE *f;
		int child;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid,
			 (int)t->threads[i]);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fscanf(f, "%d", &child) == 1) {
			if (collect(child, device_hooks) < 0) {
				fclose(f);
				return -1;
			}
		}
		fclose(f);
	}
	return 0;
}

/* ---- what the plugins left in this process ---- */

static void report_self(const char *when)
{
	const char *lib = getenv("GPUWARM_CUDA_LIBRARY"), *base;
	char line[4096];
	int threads = -1, mapped = 0;
	FILE *f;

	base = lib && *lib ? strrchr(lib, '/') : NULL;
	base = base ? base + 1 : lib && *lib ? lib : "libcuda.so";
	f = fopen("/proc/self/status", "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &threads) == 1)
			break;
	if (f)
		fclose(f);
	f = fopen("/proc/self/maps", "re");
	while (f && fgets(line, sizeof(line), f))
		mapped |= strstr(line, base) != NULL || strstr(line, "/libcuda.so") != NULL;
	if (f)
		fclose(f);
	pr(GWP_CRIU_LOG_INFO, "self after %s: %d threads, CUDA driver %s\n", when, threads,
	   mapped ? "mapped" : "not mapped");
}

/* ---- the alarm, as cr-dump.c's ---- */

static void alarm_handler(int sig)
{
	(void)sig;
	if (C.alarms++ < 5) {
		alarm(1);
		return; /* the current syscall ends with EINTR */
	}
	abort();
}

static void setup_alarm(void)
{
	struct sigaction sa = { .sa_handler = alarm_handler, .sa_flags = 0 };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr, "usage: fake-criu dump|pre-dump|restore -t PID... -D DIR -L DIR [-o LOG] "
			"[-R] [--timeout S] [--stop-after-pause] [--fail-after-checkpoint]\n");
	exit(2);
}

struct options {
	const char *images, *libdir, *logpath, *cmd;
	pid_t roots[MAX_TASKS];
	unsigned nroots, timeout;
	int leave_running, stop_after_pause, fail_after;
};

static void parse_options(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->cmd = argc > 1 ? argv[1] : "";
	o->timeout = 10;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "-t") == 0 && v && o->nroots < MAX_TASKS)
			o->roots[o->nroots++] = (pid_t)atoi(argv[++i]);
		else if (strcmp(a, "-D") == 0 && v)
			o->images = argv[++i];
		else if (strcmp(a, "-L") == 0 && v)
			o->libdir = argv[++i];
		else if (strcmp(a, "-o") == 0 && v)
			o->logpath = argv[++i];
		else if (strcmp(a, "--timeout") == 0 && v)
			o->timeout = (unsigned)atoi(argv[++i]);
		else if (strcmp(a, "-R") == 0 || strcmp(a, "--leave-running") == 0)
			o->leave_running = 1;
		else if (strcmp(a, "--stop-after-pause") == 0)
			o->stop_after_pause = 1;
		else if (strcmp(a, "--fail-after-checkpoint") == 0)
			o->fail_after = 1;
		else
			usage();
	}
	if (strcmp(o->cmd, "dump") == 0)
		C.stage = GWP_CRIU_STAGE_DUMP;
	else if (strcmp(o->cmd, "pre-dump") == 0)
		C.stage = GWP_CRIU_STAGE_PRE_DUMP;
	else if (strcmp(o->cmd, "restore") == 0)
		C.stage = GWP_CRIU_STAGE_RESTORE;
	else
		usage();
	if (!o->images || !o->libdir || o->nroots == 0)
		usage();
}

/* CRIU's restore: collect the tasks, POST_FORKING, RESUME_DEVICES_LATE for each. */
static int restore(const struct options *o)
{
	int ret = 0;

	for (unsigned i = 0; i < o->nroots && ret == 0; i++)
		ret = collect(o->roots[i], 0);
	if (ret == 0)
		ret = pages_check();
#ifndef FAKE_CRIU_3X
	if (ret == 0) {
		int r = run_post_forking();

		if (r < 0 && r != -ENOTSUP)
			ret = -1;
	}
#endif
	for (unsigned i = 0; ret == 0 && i < C.ntasks; i++)
		run_hook(GWP_CRIU_HOOK_RESUME_DEVICES_LATE, C.tasks[i].pid);
	report_self("RESUME_DEVICES_LATE");
	plugins_fini(ret);
	report_self("the plugins' exit");
	release_tasks();
	pr(GWP_CRIU_LOG_INFO, "restore %s\n", ret ? "FAILED" : "finished");
	return ret ? 1 : 0;
}

/* CRIU's dump (and pre-dump): seize under the --timeout alarm, CHECKPOINT_DEVICES, inventory. */
static int dump(const struct options *o)
{
	int ret = 0;

	setup_alarm();
	alarm(o->timeout);
	for (unsigned i = 0; i < o->nroots && ret == 0; i++)
		ret = collect(o->roots[i], HOOK_MAX > GWP_CRIU_HOOK_PAUSE_DEVICES);
	alarm(0);
	if (ret == 0 && o->stop_after_pause) {
		pr(GWP_CRIU_LOG_INFO, "stopping after the freeze\n");
		raise(SIGSTOP);
	}
	if (C.stage == GWP_CRIU_STAGE_PRE_DUMP) {
		release_tasks();
		pr(GWP_CRIU_LOG_INFO, "pre-dump %s\n", ret ? "FAILED" : "finished");
		return ret ? 1 : 0;
	}
#ifndef FAKE_CRIU_3X
	if (ret == 0)
		ret = checkpoint_devices();
#endif
	report_self("CHECKPOINT_DEVICES");
	if (ret == 0 && o->fail_after) {
		pr(GWP_CRIU_LOG_ERROR, "failing the dump after CHECKPOINT_DEVICES, as asked\n");
		ret = -1;
	}
	if (ret == 0)
		inventory_save();
	if (ret == 0)
		ret = pages_save();
	plugins_fini(ret);
	report_self("the plugins' exit");
	release_tasks();
	pr(GWP_CRIU_LOG_INFO, "dump %s\n", ret ? "FAILED" : "finished");
	return ret ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct options o;

	parse_options(argc, argv, &o);
	C.images = o.images;
	C.image_fd = open(o.images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (C.image_fd < 0 || chdir(o.images) < 0) {
		perror(o.images);
		return 1;
	}
	if (o.logpath) {
		C.log = fopen(o.logpath, "ae");
		if (!C.log) {
			perror(o.logpath);
			return 1;
		}
	} else {
		C.log = stderr;
	}
	pr(GWP_CRIU_LOG_INFO, "fake-criu %s (%d hooks)%s\n", o.cmd, HOOK_MAX,
	   o.leave_running ? " --leave-running" : "");
	if (C.stage == GWP_CRIU_STAGE_RESTORE)
		inventory_load();
	if (load_plugins(o.libdir) < 0) {
		plugins_fini(-1);
		return 1;
	}
	return C.stage == GWP_CRIU_STAGE_RESTORE ? restore(&o) : dump(&o);
}
