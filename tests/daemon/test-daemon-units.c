/* SPDX-License-Identifier: MIT */
/* Unit tests of the daemon's modules that need no running daemon. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "freeze.h"
#include "gpu.h"
#include "gw-pidgpu.h"
#include "gw-proto.h"
#include "gw-test.h"
#include "hostpool.h"
#include "imagefd.h"
#include "lease.h"
#include "pin.h"
#include "quota.h"
#include "route.h"
#include "vramstore.h"
#include "worker.h"

static void fake_table(struct gw_gpu *gpus, unsigned n)
{
	memset(gpus, 0, n * sizeof(*gpus));
	for (unsigned i = 0; i < n; i++) {
		gpus[i].index = i;
		for (int b = 0; b < 16; b++)
			gpus[i].uuid.bytes[b] = (char)(0x10 * i + b);
		gw_cuda_uuid_format(&gpus[i].uuid, gpus[i].uuid_text, sizeof(gpus[i].uuid_text));
		snprintf(gpus[i].pci_bus_id, sizeof(gpus[i].pci_bus_id), "0000:%02x:00.0", 0x3b + i);
	}
}

GW_TEST(gpu_selectors_resolve_like_nvidia_smi)
{
	struct gw_gpu gpus[3];
	char upper[64];

	fake_table(gpus, 3);
	GW_ASSERT(gw_gpu_find(gpus, 3, "0") == &gpus[0]);
	GW_ASSERT(gw_gpu_find(gpus, 3, "2") == &gpus[2]);
	GW_ASSERT(gw_gpu_find(gpus, 3, "3") == NULL);
	GW_ASSERT(gw_gpu_find(gpus, 3, gpus[1].uuid_text) == &gpus[1]);
	GW_ASSERT(gw_gpu_find(gpus, 3, gpus[1].uuid_text + 4) == &gpus[1]); /* no GPU- prefix */
	snprintf(upper, sizeof(upper), "%s", gpus[2].uuid_text);
	for (char *p = upper + 4; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	GW_ASSERT(gw_gpu_find(gpus, 3, upper) == &gpus[2]);
	GW_ASSERT(gw_gpu_find(gpus, 3, "0000:3c:00.0") == &gpus[1]);
	GW_ASSERT(gw_gpu_find(gpus, 3, "3C:00.0") == &gpus[1]);
	GW_ASSERT(gw_gpu_find(gpus, 3, "00000000:3d:00.0") == &gpus[2]);
	GW_ASSERT(gw_gpu_find(gpus, 3, "0000:3e:00.0") == NULL);
	GW_ASSERT(gw_gpu_find(gpus, 3, "") == NULL);
	GW_ASSERT(gw_gpu_find(gpus, 3, "-1") == NULL);
	GW_ASSERT(gw_gpu_find(gpus, 3, "GPU-zz") == NULL);
	GW_ASSERT(gw_gpu_find(gpus, 3, NULL) == NULL);
}

GW_TEST(lease_table_limits_and_removal)
{
	struct gw_lease_table t;
	struct ucred owner = { .pid = 1, .uid = 0, .gid = 0 };
	struct gw_lease *l, *first = NULL;
	int conn_a, conn_b;

	gw_lease_table_init(&t);
	for (int i = 0; i < GW_LEASES_PER_CONN_MAX; i++) {
		GW_ASSERT_INT_EQ(gw_lease_add(&t, 0, (void *)&conn_a, &owner, 0, &l), 0);
		if (!first)
			first = l;
	}
	GW_ASSERT_INT_EQ(gw_lease_add(&t, 0, (void *)&conn_a, &owner, 0, &l), -EMFILE);
	GW_ASSERT_INT_EQ(gw_lease_add(&t, 1, (void *)&conn_b, &owner, 0, &l), 0);
	GW_ASSERT_INT_EQ(gw_lease_count_conn(&t, (void *)&conn_a), GW_LEASES_PER_CONN_MAX);
	GW_ASSERT(gw_lease_find(&t, first->id) == first);
	GW_ASSERT_INT_EQ(gw_lease_remove(&t, l), 1);
	GW_ASSERT(gw_lease_find(&t, 9999) == NULL);
	GW_ASSERT_INT_EQ(t.count, GW_LEASES_PER_CONN_MAX);
	gw_lease_table_finish(&t);
	GW_ASSERT_INT_EQ(t.count, 0);
}

GW_TEST(auth_owner_root_and_strangers)
{
	struct ucred me = { .pid = getpid(), .uid = getuid(), .gid = getgid() };
	struct ucred stranger = { .pid = 1, .uid = 4242, .gid = 4242 };
	struct ucred other_group = { .pid = 1, .uid = getuid(), .gid = getgid() + 1 };
	struct ucred root = { .pid = 1, .uid = 0, .gid = 0 };
	struct gw_pin pin;
	char why[256];

	GW_ASSERT_INT_EQ(gw_pin_open(getpid(), &pin), 0);
	GW_ASSERT(gw_pin_alive(&pin));
	GW_ASSERT_INT_EQ(gw_auth_may_act(&me, &pin, why, sizeof(why)), 0);
	GW_ASSERT_INT_EQ(gw_auth_may_act(&root, &pin, why, sizeof(why)), 0);
	GW_ASSERT_INT_EQ(gw_auth_may_act(&stranger, &pin, why, sizeof(why)), -EPERM);
	GW_ASSERT_STR_CONTAINS(why, "only root or the process's owner");
	if (getuid() != 0) {
		GW_ASSERT_INT_EQ(gw_auth_may_act(&other_group, &pin, why, sizeof(why)), -EPERM);
		GW_ASSERT_STR_CONTAINS(why, "group ids");
	}
	/* Not dumpable: the kernel's ptrace rule refuses the owner too. */
	pin.dumpable = 0;
	if (getuid() != 0) {
		GW_ASSERT_INT_EQ(gw_auth_may_act(&me, &pin, why, sizeof(why)), -EPERM);
		GW_ASSERT_STR_CONTAINS(why, "not dumpable");
	}
	GW_ASSERT_INT_EQ(gw_auth_may_act(&root, &pin, why, sizeof(why)), 0);
	gw_pin_close(&pin);
	gw_pin_close(&pin); /* twice is fine */
	GW_ASSERT(!gw_pin_alive(&pin));
	GW_ASSERT_INT_EQ(gw_pin_open(4000000, &pin), -ESRCH);
	GW_ASSERT_INT_EQ(gw_pin_open(0, &pin), -ESRCH);
	GW_ASSERT(gw_auth_is_root(&root));
	GW_ASSERT(!gw_auth_is_root(&stranger));
}

GW_TEST(pin_sees_its_process_exit_and_not_a_successor)
{
	struct gw_pin pin;
	uint64_t start = 0;
	pid_t child = fork();

	GW_ASSERT(child >= 0);
	if (child == 0) {
		pause();
		_exit(0);
	}
	GW_ASSERT_INT_EQ(gw_pin_open(child, &pin), 0);
	GW_ASSERT_INT_EQ(gw_proc_start_time(child, &start), 0);
	GW_ASSERT(start == pin.start_time);
	GW_ASSERT(pin.dumpable);
	GW_ASSERT(gw_pin_alive(&pin));
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	GW_ASSERT(!gw_pin_alive(&pin));
	gw_pin_close(&pin);
}

GW_TEST(quota_counts_per_uid_and_exempts_root)
{
	struct gw_quota q;

	gw_quota_init(&q, 2);
	GW_ASSERT_INT_EQ(gw_quota_take(&q, 1000), 0);
	GW_ASSERT_INT_EQ(gw_quota_take(&q, 1000), 0);
	GW_ASSERT_INT_EQ(gw_quota_take(&q, 1000), -EDQUOT);
	GW_ASSERT_INT_EQ(gw_quota_take(&q, 1001), 0);
	for (int i = 0; i < 10; i++)
		GW_ASSERT_INT_EQ(gw_quota_take(&q, 0), 0);
	GW_ASSERT_INT_EQ(gw_quota_used(&q, 0), 0);
	gw_quota_give(&q, 1000);
	GW_ASSERT_INT_EQ(gw_quota_used(&q, 1000), 1);
	GW_ASSERT_INT_EQ(gw_quota_take(&q, 1000), 0);
	gw_quota_give(&q, 4242); /* never taken: ignored */
	gw_quota_finish(&q);
}

/* --vram-store: made 0700 when missing, counted for Status; a relative path, a path with "..",
 * a directory others may write and a symlink are refused; closing twice is a no-op. */
GW_TEST(vram_store_is_made_private_and_counted)
{
	char dir[] = "/tmp/gw-vstore-XXXXXX", path[128], link[160], err[600];
	struct gw_vramstore s;
	struct stat st;
	cJSON *j;
	int fd;

	GW_ASSERT(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/store", dir);
	GW_ASSERT_INT_EQ(gw_vramstore_open(&s, path, err, sizeof(err)), 0);
	GW_ASSERT(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700);
	fd = openat(s.fd, "seg", O_WRONLY | O_CREAT, 0600);
	GW_ASSERT(fd >= 0 && write(fd, "12345", 5) == 5);
	close(fd);
	GW_ASSERT(symlinkat("/etc/passwd", s.fd, "link") == 0); /* not counted */
	j = gw_vramstore_status_json(&s);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(j, "path")->valuestring, path);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItemCaseSensitive(j, "files")->valuedouble, 1);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItemCaseSensitive(j, "bytes")->valuedouble, 5);
	cJSON_Delete(j);
	gw_vramstore_close(&s);
	gw_vramstore_close(&s);
	GW_ASSERT(gw_vramstore_status_json(&s) == NULL);

	GW_ASSERT_INT_EQ(gw_vramstore_open(&s, "relative", err, sizeof(err)), -EINVAL);
	snprintf(link, sizeof(link), "%s/../store", path);
	GW_ASSERT_INT_EQ(gw_vramstore_open(&s, link, err, sizeof(err)), -EINVAL);
	GW_ASSERT(chmod(path, 0777) == 0);
	GW_ASSERT_INT_EQ(gw_vramstore_open(&s, path, err, sizeof(err)), -EPERM);
	GW_ASSERT_STR_CONTAINS(err, "writable by no one else");
	GW_ASSERT(chmod(path, 0700) == 0);
	snprintf(link, sizeof(link), "%s/alias", dir);
	GW_ASSERT(symlink(path, link) == 0);
	GW_ASSERT_INT_EQ(gw_vramstore_open(&s, link, err, sizeof(err)), -ELOOP);
	GW_ASSERT_STR_CONTAINS(err, "a symlink");
	GW_ASSERT(s.fd < 0);

	snprintf(link, sizeof(link), "rm -rf '%s'", dir);
	GW_ASSERT(system(link) == 0);
}

GW_TEST(imagefd_refuses_kernel_interfaces_links_and_strangers)
{
	struct ucred me = { .pid = getpid(), .uid = getuid(), .gid = getgid() };
	struct ucred stranger = { .pid = 1, .uid = 4242, .gid = 4242 };
	char path[] = "/tmp/gw-imagefd-XXXXXX", link_path[64], why[256];
	int fd = mkstemp(path), proc;

	GW_ASSERT(fd >= 0);
	GW_ASSERT_INT_EQ(gw_imagefd_check(fd, &me, GW_IMAGEFD_WRITE, why, sizeof(why)), 0);
	GW_ASSERT_INT_EQ(gw_imagefd_check(fd, &me, GW_IMAGEFD_READ, why, sizeof(why)), 0);
	if (getuid() != 0) {
		GW_ASSERT_INT_EQ(gw_imagefd_check(fd, &stranger, GW_IMAGEFD_WRITE, why, sizeof(why)),
				 -EPERM);
	}
	snprintf(link_path, sizeof(link_path), "%s.link", path);
	GW_ASSERT_INT_EQ(link(path, link_path), 0);
	GW_ASSERT_INT_EQ(gw_imagefd_check(fd, &me, GW_IMAGEFD_WRITE, why, sizeof(why)), -EPERM);
	GW_ASSERT_STR_CONTAINS(why, "hard links");
	unlink(link_path);
	GW_ASSERT_INT_EQ(write(fd, "x", 1), 1);
	GW_ASSERT_INT_EQ(gw_imagefd_check(fd, &me, GW_IMAGEFD_WRITE, why, sizeof(why)), -EINVAL);
	close(fd);
	unlink(path);
	proc = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
	GW_ASSERT(proc >= 0);
	GW_ASSERT_INT_EQ(gw_imagefd_check(proc, &me, GW_IMAGEFD_READ, why, sizeof(why)), -EPERM);
	GW_ASSERT_STR_CONTAINS(why, "proc");
	close(proc);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	GW_ASSERT(f);
	fputs(text, f);
	fclose(f);
}

GW_TEST(pid_gpus_from_a_proc_tree)
{
	char root[] = "/tmp/gw-proc-XXXXXX", path[512];
	char pci[GW_PIDGPU_MAX][GW_PIDGPU_PCI_LEN];

	GW_ASSERT(mkdtemp(root));
	snprintf(path, sizeof(path), "mkdir -p %s/77/fd %s/driver/nvidia/gpus/0000:3B:00.0 "
		 "%s/driver/nvidia/gpus/0000:5e:00.0", root, root, root);
	GW_ASSERT_INT_EQ(system(path), 0);
	snprintf(path, sizeof(path), "%s/driver/nvidia/gpus/0000:3B:00.0/information", root);
	write_file(path, "Model: \t NVIDIA H100\nDevice Minor: \t 1\n");
	snprintf(path, sizeof(path), "%s/driver/nvidia/gpus/0000:5e:00.0/information", root);
	write_file(path, "Model: \t NVIDIA H100\nDevice Minor: \t 0\n");
	snprintf(path, sizeof(path), "%s/77/fd/3", root);
	GW_ASSERT_INT_EQ(symlink("/dev/nvidia1", path), 0);
	snprintf(path, sizeof(path), "%s/77/fd/4", root);
	GW_ASSERT_INT_EQ(symlink("/dev/nvidiactl", path), 0);
	snprintf(path, sizeof(path), "%s/77/fd/5", root);
	GW_ASSERT_INT_EQ(symlink("/dev/nvidia-uvm", path), 0);

	GW_ASSERT_INT_EQ(gw_pid_gpus(root, 77, pci, GW_PIDGPU_MAX), 1);
	GW_ASSERT_STR_EQ(pci[0], "0000:3b:00.0");
	GW_ASSERT_INT_EQ(gw_pid_gpus(root, 78, pci, GW_PIDGPU_MAX), -ESRCH);
	snprintf(path, sizeof(path), "rm -rf %s", root);
	GW_ASSERT_INT_EQ(system(path), 0);
}

static void *spin(void *arg)
{
	volatile unsigned long *n = arg;

	for (;;)
		(*n)++;
	return NULL;
}

static char thread_state(pid_t pid, pid_t tid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] ? p[2] : '?';
}

GW_TEST(freeze_stops_all_but_kept_threads_and_thaw_releases)
{
	int ready[2];
	pid_t child, kept_tid = 0;
	struct gw_frozen frozen;
	char c;

	GW_ASSERT_INT_EQ(pipe(ready), 0);
	child = fork();
	if (child == 0) {
		static unsigned long counters[3];
		pthread_t t[3];

		for (int i = 0; i < 3; i++)
			pthread_create(&t[i], NULL, spin, &counters[i]);
		c = 'r';
		if (write(ready[1], &c, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	GW_ASSERT_INT_EQ(read(ready[0], &c, 1), 1);
	kept_tid = child; /* keep the main thread running */
	GW_ASSERT_INT_EQ(gw_freeze(child, &kept_tid, 1, 5000, &frozen), 0);
	GW_ASSERT_INT_EQ(frozen.count, 3);
	for (unsigned i = 0; i < frozen.count; i++) {
		GW_ASSERT(frozen.tids[i] != child);
		GW_ASSERT_INT_EQ(thread_state(child, frozen.tids[i]), 't');
	}
	GW_ASSERT(thread_state(child, child) != 't');
	{
		pid_t tids[3];

		memcpy(tids, frozen.tids, sizeof(tids));
		gw_thaw(&frozen);
		gw_thaw(&frozen); /* idempotent */
		usleep(50000);
		for (int i = 0; i < 3; i++)
			GW_ASSERT(thread_state(child, tids[i]) != 't');
	}
	GW_ASSERT_INT_EQ(gw_freeze(4000000, NULL, 0, 100, &frozen), -ESRCH);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

static struct gw_cuda *load_fake(void)
{
	struct gw_cuda *cuda;
	char err[256];

	if (gw_cuda_load(NULL, &cuda, err, sizeof(err)) < 0)
		GW_FAIL("%s", err);
	GW_ASSERT_INT_EQ(cuda->cuInit(0), CUDA_SUCCESS);
	return cuda;
}

GW_TEST(hostpool_grows_takes_and_gives)
{
	struct gw_cuda *cuda = load_fake();
	struct gw_hostpool pool;
	void *blocks[20];
	CUdevice dev;
	CUcontext ctx;
	CUresult cu = CUDA_SUCCESS;

	GW_ASSERT_INT_EQ(cuda->cuDeviceGet(&dev, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cuda->cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cuda->cuCtxSetCurrent(ctx), CUDA_SUCCESS);
	gw_hostpool_init(&pool, cuda);
	GW_ASSERT_INT_EQ(gw_hostpool_take(&pool, 1, blocks), -ENOSPC);
	GW_ASSERT_INT_EQ(gw_hostpool_grow(&pool, 3 * GW_HOSTPOOL_BLOCK_BYTES + 1, &cu), 0);
	GW_ASSERT_INT_EQ(gw_hostpool_total_bytes(&pool), 4 * (size_t)GW_HOSTPOOL_BLOCK_BYTES);
	GW_ASSERT_INT_EQ(gw_hostpool_take(&pool, 5, blocks), -ENOSPC);
	GW_ASSERT_INT_EQ(gw_hostpool_take(&pool, 4, blocks), 0);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&pool), 0);
	memset(blocks[3], 0xab, GW_HOSTPOOL_BLOCK_BYTES); /* really usable memory */
	gw_hostpool_give(&pool, blocks, 4);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&pool), 4 * (size_t)GW_HOSTPOOL_BLOCK_BYTES);
	gw_hostpool_finish(&pool);
	gw_hostpool_finish(NULL);
	gw_cuda_unload(cuda);
}

static unsigned done_count;
static pthread_t loop_thread;

static void job_work(void *data)
{
	(*(int *)data) *= 2;
}

static void job_done(void *data)
{
	GW_ASSERT(pthread_equal(pthread_self(), loop_thread));
	GW_ASSERT_INT_EQ(*(int *)data % 2, 0);
	done_count++;
}

GW_TEST(worker_pool_runs_done_on_the_loop)
{
	struct event_base *base = event_base_new();
	struct gw_worker_pool *pool;
	int values[50];

	loop_thread = pthread_self();
	GW_ASSERT_INT_EQ(gw_worker_pool_create(base, 4, &pool), 0);
	for (int i = 0; i < 50; i++) {
		values[i] = i + 1;
		GW_ASSERT_INT_EQ(gw_worker_submit(pool, job_work, job_done, &values[i]), 0);
	}
	while (done_count < 50)
		event_base_loop(base, EVLOOP_ONCE);
	GW_ASSERT_INT_EQ(gw_worker_pending(pool), 0);
	for (int i = 0; i < 50; i++)
		GW_ASSERT_INT_EQ(values[i], 2 * (i + 1));
	gw_worker_pool_destroy(pool);
	gw_worker_pool_destroy(NULL);
	event_base_free(base);
}

GW_TEST(cuda_uuid_text_round_trip)
{
	CUuuid u, back;
	char text[64];

	for (int i = 0; i < 16; i++)
		u.bytes[i] = (char)(0xf0 + i);
	gw_cuda_uuid_format(&u, text, sizeof(text));
	GW_ASSERT_STR_EQ(text, "GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff");
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse(text, &back), 0);
	GW_ASSERT(memcmp(&u, &back, sizeof(u)) == 0);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse("GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfe", &back), -EINVAL);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse("GPU-f0f1f2f3f4f5-f6f7-f8f9-fafbfcfdfeff", &back), -EINVAL);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse("GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeffaa", &back),
			 -EINVAL);
	GW_ASSERT_INT_EQ(gw_cuda_uuid_parse(NULL, &back), -EINVAL);
}

GW_TEST(cuda_loader_explains_a_missing_library)
{
	struct gw_cuda *cuda = NULL;
	char err[256];

	GW_ASSERT_INT_EQ(gw_cuda_load("/nonexistent/libcuda.so.1", &cuda, err, sizeof(err)),
			 -ENOENT);
	GW_ASSERT(cuda == NULL);
	GW_ASSERT_STR_CONTAINS(err, "/nonexistent/libcuda.so.1");
	GW_ASSERT_INT_EQ(gw_cuda_load("libc.so.6", &cuda, err, sizeof(err)), -ENOSYS);
	GW_ASSERT_STR_CONTAINS(err, "not a CUDA driver");
	gw_cuda_unload(NULL);
}

GW_TEST(host_tid_of_our_own_threads)
{
	pid_t me = getpid();

	/* no pid namespace in between: a thread's id is the same seen from both sides */
	GW_ASSERT_INT_EQ(gw_proc_host_tid(me, me), me);
	GW_ASSERT_INT_EQ(gw_proc_host_tid(me, 4000000), -ESRCH);
	GW_ASSERT_INT_EQ(gw_proc_host_tid(4000000, 1), -ESRCH);
}

/* ---- the GPU table: states, transitions, counts ---- */

struct table_log {
	unsigned primes, releases, changes;
	int prime_result, release_result;
};

static int log_prime(void *data, const struct gw_gpu *gpu)
{
	struct table_log *log = data;

	(void)gpu;
	log->primes++;
	return log->prime_result;
}

static int log_release(void *data, const struct gw_gpu *gpu, struct gw_gpu_handles *handles)
{
	struct table_log *log = data;

	(void)gpu;
	(void)handles;
	log->releases++;
	return log->release_result;
}

static void log_changed(void *data)
{
	((struct table_log *)data)->changes++;
}

static const struct gw_gpu_table_hooks log_hooks = {
	.prime = log_prime, .release = log_release, .changed = log_changed,
};

/* n GPUs, primed through the hooks (primes counted in log). */
static void primed_table(struct gw_gpu_table *t, struct table_log *log, unsigned n)
{
	struct gw_gpu_handles ok = { 0 };

	memset(log, 0, sizeof(*log));
	gw_gpu_table_init(t, &log_hooks, log);
	fake_table(t->gpus, n);
	t->count = n;
	gw_gpu_table_prime_all(t);
	for (unsigned i = 0; i < n; i++) {
		GW_ASSERT_INT_EQ(t->gpus[i].state, GW_GPU_PRIMING);
		gw_gpu_table_primed(t, i, &ok, 0);
		GW_ASSERT_INT_EQ(t->gpus[i].state, GW_GPU_READY);
	}
	GW_ASSERT_INT_EQ(log->primes, n);
}

GW_TEST(gpu_table_drain_waits_for_in_flight_then_releases)
{
	struct gw_gpu_table t;
	struct table_log log;
	unsigned changes;

	primed_table(&t, &log, 2);
	GW_ASSERT(gw_gpu_table_all(&t) == 3 && gw_gpu_table_accepting(&t) == 3);
	gw_gpu_op_begin(&t, 1);
	gw_gpu_op_begin(&t, 3);
	GW_ASSERT_INT_EQ(t.gpus[0].in_flight, 2);
	GW_ASSERT_INT_EQ(t.gpus[1].in_flight, 1);
	changes = log.changes;
	gw_gpu_table_drain(&t, 1);
	GW_ASSERT(log.changes > changes);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_DRAINING);
	GW_ASSERT_STR_EQ(gw_gpu_state_name(t.gpus[0].state), "draining");
	GW_ASSERT_INT_EQ(t.gpus[1].state, GW_GPU_READY);
	GW_ASSERT(gw_gpu_table_accepting(&t) == 2);
	GW_ASSERT_INT_EQ(log.releases, 0);
	gw_gpu_op_end(&t, 3);
	gw_gpu_table_changed(&t);
	GW_ASSERT_INT_EQ(log.releases, 0); /* one still in flight on GPU 0 */
	gw_gpu_op_end(&t, 1);
	GW_ASSERT_INT_EQ(log.releases, 0); /* counted only; the owner's clean-up comes first */
	gw_gpu_table_changed(&t);
	GW_ASSERT_INT_EQ(log.releases, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_RELEASING);
	GW_ASSERT_STR_EQ(gw_gpu_state_name(t.gpus[0].state), "draining");
	gw_gpu_table_released(&t, 0);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_DRAINED);
	GW_ASSERT_INT_EQ(t.gpus[1].in_flight, 0);
	/* Undrain of a drained GPU primes it again. */
	gw_gpu_table_undrain(&t, 1);
	GW_ASSERT_INT_EQ(log.primes, 3);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_PRIMING);
	gw_gpu_table_primed(&t, 0, &(struct gw_gpu_handles){ 0 }, 0);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_READY);
}

GW_TEST(gpu_table_drain_and_undrain_in_every_state)
{
	struct gw_gpu_table t;
	struct table_log log;
	struct gw_gpu_handles failed = { 0 };

	/* Undrain of a draining GPU: ready again, nothing released or primed. */
	primed_table(&t, &log, 1);
	gw_gpu_op_begin(&t, 1);
	gw_gpu_table_drain(&t, 1);
	gw_gpu_table_undrain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_READY);
	GW_ASSERT(log.primes == 1 && log.releases == 0);
	gw_gpu_op_end(&t, 1);

	/* Drain asked while priming: drains once primed. */
	primed_table(&t, &log, 1);
	gw_gpu_table_drain(&t, 1);
	gw_gpu_table_released(&t, 0);
	gw_gpu_table_undrain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_PRIMING);
	gw_gpu_table_drain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_PRIMING);
	gw_gpu_table_primed(&t, 0, &failed, 0);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_RELEASING);
	GW_ASSERT_INT_EQ(log.releases, 2);

	/* Undrain while releasing: primed again once released. */
	gw_gpu_table_undrain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_RELEASING);
	gw_gpu_table_released(&t, 0);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_PRIMING);
	GW_ASSERT_INT_EQ(log.primes, 3);

	/* Undrain while priming cancels a drain asked meanwhile. */
	gw_gpu_table_drain(&t, 1);
	gw_gpu_table_undrain(&t, 1);
	gw_gpu_table_primed(&t, 0, &failed, 0);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_READY);

	/* A failed GPU drains (nothing to wait for) and undrains by priming again. */
	primed_table(&t, &log, 1);
	gw_gpu_table_drain(&t, 1);
	gw_gpu_table_released(&t, 0);
	gw_gpu_table_undrain(&t, 1);
	snprintf(failed.error, sizeof(failed.error), "no memory");
	gw_gpu_table_primed(&t, 0, &failed, -ENOMEM);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_FAILED);
	GW_ASSERT_STR_EQ(t.gpus[0].error, "no memory");
	GW_ASSERT(!gw_gpu_accepts_work(&t.gpus[0]));
	gw_gpu_table_undrain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_PRIMING);
	gw_gpu_table_primed(&t, 0, &failed, -ENOMEM);
	gw_gpu_table_drain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_RELEASING);
}

GW_TEST(gpu_table_refuses_illegal_transitions)
{
	struct gw_gpu_table t;
	struct table_log log;

	primed_table(&t, &log, 2);
	/* Undrain of a ready GPU, drain of a drained or releasing one: nothing happens. */
	gw_gpu_table_undrain(&t, 3);
	GW_ASSERT(t.gpus[0].state == GW_GPU_READY && log.primes == 2);
	gw_gpu_table_drain(&t, 1);
	GW_ASSERT_INT_EQ(t.gpus[0].state, GW_GPU_RELEASING);
	gw_gpu_table_drain(&t, 1);
	GW_ASSERT_INT_EQ(log.releases, 1);
	gw_gpu_table_released(&t, 0);
	gw_gpu_table_drain(&t, 1);
	GW_ASSERT(t.gpus[0].state == GW_GPU_DRAINED && log.releases == 1);
	/* Jobs and counts for GPUs that do not exist, and counts below zero. */
	gw_gpu_table_primed(&t, 7, &(struct gw_gpu_handles){ 0 }, 0);
	gw_gpu_table_released(&t, 7);
	gw_gpu_op_end(&t, 2);
	GW_ASSERT_INT_EQ(t.gpus[1].in_flight, 0);
	gw_gpu_op_begin(&t, (uint64_t)1 << 5);
	gw_gpu_lease_add(&t, 9);
	gw_gpu_lease_drop(&t, 1);
	GW_ASSERT(t.gpus[1].leases == 0 && t.gpus[1].state == GW_GPU_READY);
	/* Bits past the table are ignored. */
	gw_gpu_table_drain(&t, ~(uint64_t)3);
	GW_ASSERT_INT_EQ(t.gpus[1].state, GW_GPU_READY);
}

GW_TEST(gpu_table_counts_leases_and_survives_failed_queues)
{
	struct gw_gpu_table t;
	struct table_log log;

	primed_table(&t, &log, 2);
	gw_gpu_lease_add(&t, 1);
	gw_gpu_lease_add(&t, 1);
	gw_gpu_lease_drop(&t, 1);
	GW_ASSERT(t.gpus[0].leases == 0 && t.gpus[1].leases == 1);
	/* A release that cannot be queued happens at once; a prime that cannot, fails the GPU. */
	log.release_result = -ENOMEM;
	log.prime_result = -ENOMEM;
	gw_gpu_table_drain(&t, 2);
	GW_ASSERT_INT_EQ(t.gpus[1].state, GW_GPU_DRAINED);
	gw_gpu_table_undrain(&t, 2);
	GW_ASSERT_INT_EQ(t.gpus[1].state, GW_GPU_FAILED);
	GW_ASSERT_STR_CONTAINS(t.gpus[1].error, "cannot queue priming");
	/* accepts_work per state */
	for (int s = GW_GPU_PRIMING; s <= GW_GPU_FAILED; s++)
		GW_ASSERT_INT_EQ(gw_gpu_state_accepts_work((enum gw_gpu_state)s),
				 s == GW_GPU_READY);
	GW_ASSERT(gw_gpu_table_any_context(&t) == NULL);
}

/* ---- route(): which path a process request takes ---- */

static struct gw_route_in route_in(enum gw_op_kind kind)
{
	struct gw_route_in in = { .kind = kind, .pid = 42, .ngpus = 2 };

	in.gpu_states[0] = in.gpu_states[1] = GW_GPU_READY;
	return in;
}

static void route_expect(const struct gw_route_in *in, enum gw_route_path path,
			 enum gw_route_reason why)
{
	struct gw_route_out out;

	GW_ASSERT_INT_EQ(gw_route(in, &out), 0);
	GW_ASSERT_INT_EQ(out.path, path);
	GW_ASSERT_INT_EQ(out.reason, why);
	GW_ASSERT(strcmp(gw_route_reason_text(why), "unknown") != 0);
}

static void route_refused(const struct gw_route_in *in, enum gw_route_reason why, int error,
			  const char *error_name, const char *text)
{
	struct gw_route_out out;

	GW_ASSERT_INT_EQ(gw_route(in, &out), error);
	GW_ASSERT_INT_EQ(out.path, GW_ROUTE_REFUSE);
	GW_ASSERT_INT_EQ(out.reason, why);
	GW_ASSERT_STR_EQ(out.error_name, error_name);
	GW_ASSERT_STR_CONTAINS(out.message, text);
	GW_ASSERT(strcmp(gw_route_reason_text(why), "unknown") != 0);
}

GW_TEST(route_picks_the_fast_path_the_driver_or_a_prefill)
{
	static const enum gw_op_kind driver_kinds[] = { GW_OP_LOCK, GW_OP_CHECKPOINT,
							GW_OP_RESTORE, GW_OP_UNLOCK,
							GW_OP_SUSPEND, GW_OP_RESUME };
	struct gw_route_in in;
	struct gw_route_out out;

	for (size_t i = 0; i < sizeof(driver_kinds) / sizeof(driver_kinds[0]); i++) {
		in = route_in(driver_kinds[i]);
		route_expect(&in, GW_ROUTE_DRIVER, GW_ROUTE_WHY_DRIVER_OP);
	}
	in = route_in(GW_OP_LOCK);
	gw_route(&in, &out);
	GW_ASSERT(out.gpu_mask == 3); /* every ready GPU */
	in.gpu_states[0] = GW_GPU_DRAINED;
	gw_route(&in, &out);
	GW_ASSERT(out.gpu_mask == 2);
	in.gpu_mask = 2;
	gw_route(&in, &out);
	GW_ASSERT(out.gpu_mask == 2); /* those named */
	in = route_in(GW_OP_LOCK);
	in.ngpus = 0;
	route_expect(&in, GW_ROUTE_DRIVER, GW_ROUTE_WHY_DRIVER_OP);

	in = route_in(GW_OP_SUSPEND);
	in.has_agent = in.agent_has_vram = 1;
	route_expect(&in, GW_ROUTE_FAST_SUSPEND, GW_ROUTE_WHY_AGENT_VRAM);
	in.image_given = 1;
	in.checkpoint_unsafe = 1; /* the fast path takes imported memory too */
	route_expect(&in, GW_ROUTE_FAST_SUSPEND, GW_ROUTE_WHY_AGENT_VRAM);

	in = route_in(GW_OP_RESUME);
	in.has_agent = in.holds_image = 1;
	route_expect(&in, GW_ROUTE_FAST_RESUME, GW_ROUTE_WHY_IMAGE_HELD);
	in.holds_image = 0;
	in.image_given = 1;
	route_expect(&in, GW_ROUTE_FAST_RESUME, GW_ROUTE_WHY_IMAGE_FILE);
	in.gpu_map_given = 1; /* a map is fine for an image file */
	route_expect(&in, GW_ROUTE_FAST_RESUME, GW_ROUTE_WHY_IMAGE_FILE);

	in = (struct gw_route_in){ .prefill = 1, .driver_ready = 1, .image_given = 1 };
	route_expect(&in, GW_ROUTE_PREFILL, GW_ROUTE_WHY_PREFILL);
	GW_ASSERT_STR_EQ(gw_route_path_name(GW_ROUTE_FAST_RESUME), "fast resume");
	GW_ASSERT_STR_EQ(gw_route_reason_text(GW_ROUTE_WHY_COUNT), "unknown");
}

GW_TEST(route_refuses_with_the_error_and_reason)
{
	struct gw_route_in in;

	in = (struct gw_route_in){ .prefill = 1, .driver_error = "cuInit failed", .image_given = 1 };
	route_refused(&in, GW_ROUTE_WHY_NO_DRIVER, -ENODEV, GW_ERROR_DRIVER_UNAVAILABLE,
		      "cuInit failed");
	in = (struct gw_route_in){ .prefill = 1, .driver_ready = 1 };
	route_refused(&in, GW_ROUTE_WHY_PREFILL_NO_IMAGE, -EINVAL, GW_ERROR_INVALID_REQUEST,
		      "needs \"image_fd\"");

	in = route_in(GW_OP_SUSPEND);
	in.image_given = 1;
	route_refused(&in, GW_ROUTE_WHY_IMAGE_NO_AGENT, -EINVAL, GW_ERROR_ILLEGAL_STATE,
		      "pid 42 has no gpu-warmd agent");
	in.has_agent = 1;
	route_refused(&in, GW_ROUTE_WHY_NOTHING_TO_MOVE, -EINVAL, GW_ERROR_ILLEGAL_STATE,
		      "no VRAM for the fast path to move");

	in = route_in(GW_OP_CHECKPOINT);
	in.has_agent = in.holds_image = 1;
	route_refused(&in, GW_ROUTE_WHY_HELD_NEEDS_RESUME, -EINVAL, GW_ERROR_ILLEGAL_STATE,
		      "only `warmctl resume 42`");
	in.kind = GW_OP_RESUME;
	in.gpu_map_given = 1;
	route_refused(&in, GW_ROUTE_WHY_HELD_NEEDS_RESUME, -EINVAL, GW_ERROR_ILLEGAL_STATE,
		      "gpu-warmd holds its VRAM");
	in.gpu_map_given = 0;
	in.has_agent = 0;
	route_refused(&in, GW_ROUTE_WHY_AGENT_AWAY, -EAGAIN, GW_ERROR_AGENT,
		      "the agent of pid 42 is not connected");

	in = route_in(GW_OP_CHECKPOINT);
	in.checkpoint_unsafe = 1;
	route_refused(&in, GW_ROUTE_WHY_CHECKPOINT_UNSAFE, -EINVAL, GW_ERROR_ILLEGAL_STATE,
		      "only the fast path");
	in.kind = GW_OP_SUSPEND; /* no VRAM for the fast path: the driver would checkpoint it */
	route_refused(&in, GW_ROUTE_WHY_CHECKPOINT_UNSAFE, -EINVAL, GW_ERROR_ILLEGAL_STATE,
		      "cannot be restored");
	in.kind = GW_OP_LOCK;
	route_expect(&in, GW_ROUTE_DRIVER, GW_ROUTE_WHY_DRIVER_OP);

	in = route_in(GW_OP_UNLOCK);
	in.busy = 1;
	route_refused(&in, GW_ROUTE_WHY_BUSY, -EBUSY, GW_ERROR_BUSY,
		      "another operation on pid 42 is in progress");

	in = route_in(GW_OP_RESTORE);
	in.gpu_mask = 2;
	in.gpu_states[1] = GW_GPU_RELEASING;
	route_refused(&in, GW_ROUTE_WHY_GPU_NOT_READY, -ENODEV, GW_ERROR_DRAINING,
		      "GPU 1 is draining: it takes no new operations");
	in.gpu_mask = 0;
	in.gpu_states[0] = GW_GPU_FAILED;
	route_refused(&in, GW_ROUTE_WHY_NO_GPU_READY, -ENODEV, GW_ERROR_DRAINING,
		      "every GPU is drained or draining");
}

GW_TEST_MAIN()
