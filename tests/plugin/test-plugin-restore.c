/* SPDX-License-Identifier: MIT */
/*
 * gpuwarm_plugin.so's restores beyond the plain one, driven by fake-criu as in test-plugin.c:
 * the record of the latest of several dumps into one images directory, a restore onto other
 * GPUs when the dump's are drained or gone, and the fast path's VRAM image among CRIU's images.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw-test.h"
#include "gw-vimg.h"
#include "gwp-image.h"
#include "pt-harness.h"

/* A record as a dump inside a container writes it: the process is pid 1 in its namespace; with
 * host_pid, it was dumped under that host pid (and a restore gave it another). */
static void as_container_pid1(const struct pt *p, pid_t pid, pid_t host_pid)
{
	struct gwp_image img;
	char path[512];
	int fd;

	GW_ASSERT_INT_EQ(pt_image(p, pid, &img), 0);
	img.vpid = 1;
	if (host_pid) {
		snprintf(path, sizeof(path), "%s/gpuwarm-%d.json", p->images, (int)pid);
		GW_ASSERT(unlink(path) == 0);
		img.pid = host_pid;
	}
	fd = open(p->images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(fd >= 0);
	GW_ASSERT_INT_EQ(gwp_image_write(fd, &img), 0);
	close(fd);
}

static size_t read_file(const char *dir, const char *name, char *buf, size_t len)
{
	char path[512];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (f) {
		n = fread(buf, 1, len, f);
		fclose(f);
	}
	return n;
}

static void write_file(const char *dir, const char *name, const char *buf, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	GW_ASSERT(f);
	GW_ASSERT(fwrite(buf, 1, len, f) == len);
	fclose(f);
}

/*
 * podman's checkpoint --keep (issue 7): dumps into one images directory, each leaving a record
 * for the container's pid 1. A restore into a new pid namespace (its process under a host pid
 * no record is named after; a fake /proc gives it NSpid 1) takes the record of the latest dump.
 * Dump 1 is of app a, dump 2 of app b (the container later on). Should the plugin have removed
 * dump 1's record, it is put back, as one that a cleanup could not remove.
 */
GW_TEST(stale_record_of_earlier_dump)
{
	char pid_a[16], pid_b[16], name_a[64], stale[GWP_IMAGE_MAX_BYTES], env[300];
	struct gwp_image img;
	struct pt_app a, b;
	struct pt p;
	size_t nstale;
	int removed;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_app_start(&b, NULL, NULL);
	pt_num(pid_a, sizeof(pid_a), a.pid);
	pt_num(pid_b, sizeof(pid_b), b.pid);

	/* dump 1, restored in place (checkpoint --keep, restore --keep) */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid_a), NULL), 0);
	as_container_pid1(&p, a.pid, 0);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid_a), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	pt_assert_verified(&a, 1);
	gwp_image_name(a.pid, name_a, sizeof(name_a));
	nstale = read_file(p.images, name_a, stale, sizeof(stale));
	GW_ASSERT(nstale > 0);

	/* dump 2 into the same directory */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid_b), NULL), 0);
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", b.pid, "0");
	removed = pt_image(&p, a.pid, &img) == -ENOENT;
	if (removed)
		write_file(p.images, name_a, stale, nstale);
	as_container_pid1(&p, b.pid, 4194000);

	snprintf(env, sizeof(env), "GPUWARM_PROC_ROOT=%s", pt_fake_nspid(&p, b.pid, 1));
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid_b), PT_ARGS(env)), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", b.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(b.pid), PT_RUNNING);
	pt_assert_verified(&b, 1);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	GW_ASSERT(removed); /* dump 2 removed dump 1's record */
	pt_finish();
}

/* Dump a, whose record must name the one GPU uuid at pci. */
static void dump_on_gpu(struct pt *p, const struct pt_app *a, const char *pid, const char *uuid,
			const char *pci)
{
	struct gwp_image img;

	GW_ASSERT_INT_EQ(pt_criu(p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_INT_EQ(pt_image(p, a->pid, &img), 0);
	GW_ASSERT_INT_EQ(img.ngpus, 1);
	GW_ASSERT_STR_EQ(img.gpus[0].uuid, uuid);
	GW_ASSERT_STR_EQ(img.gpus[0].pci, pci);
}

/* After its restore, a runs again and its data checks out on GPU uuid. */
static void assert_restored_onto(const struct pt *p, struct pt_app *a, const char *uuid)
{
	char line[256], gpu[64];

	pt_assert_hook(p, "RESUME_DEVICES_LATE", a->pid, "0");
	GW_ASSERT_INT_EQ(pt_app_verify(a, line, sizeof(line)), 1);
	pt_verify_gpu(line, gpu, sizeof(gpu));
	GW_ASSERT_STR_EQ(gpu, uuid);
}

/* The app used GPU 0; GPU 0 is drained before the restore: it comes back on GPU 1. */
GW_TEST(restore_onto_other_gpu_when_drained)
{
	char pid[16], gpu0[64], gpu1[64], expect[256];
	struct pt_app a;
	struct pt p;
	cJSON *params, *status;

	if (geteuid() != 0) { /* meson's skip code does not pass through gw-test */
		fprintf(stderr, "not root: gpuwarm.Drain needs root; "
				"restore_onto_other_gpu_when_absent covers the remapping\n");
		return;
	}
	pt_setup(&p);
	setenv("FAKECUDA_GPUS", "2", 1);
	pt_gpu_uuid(0, gpu0, sizeof(gpu0));
	pt_gpu_uuid(1, gpu1, sizeof(gpu1));
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	GW_ASSERT_STR_EQ(a.gpu, gpu0);
	setenv("GPUWARM_PROC_ROOT", pt_fake_proc(&p, a.pid, 0, 2), 1);
	pt_num(pid, sizeof(pid), a.pid);

	dump_on_gpu(&p, &a, pid, gpu0, "0000:3b:00.0");

	params = cJSON_Parse("{\"gpus\": [\"0\"]}");
	GW_ASSERT_INT_EQ(pt_daemon_call(&p, GW_METHOD_DRAIN, params, NULL), 0);
	cJSON_Delete(params);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	snprintf(expect, sizeof(expect), "GPU %s is gone or drained: restoring onto %s", gpu0,
		 gpu1);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), expect);
	assert_restored_onto(&p, &a, gpu1);
	status = pt_daemon_status(&p); /* the restore's lease is given back */
	GW_ASSERT(status);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(status, "leases")), 0);
	cJSON_Delete(status);
	pt_finish();
}

/* Without the daemon: the app used GPU 1, the restoring side sees one GPU only. */
GW_TEST(restore_onto_other_gpu_when_absent)
{
	char pid[16], gpu0[64], gpu1[64];
	struct pt_app a;
	struct pt p;

	pt_setup(&p);
	setenv("FAKECUDA_GPUS", "2", 1);
	pt_gpu_uuid(0, gpu0, sizeof(gpu0));
	pt_gpu_uuid(1, gpu1, sizeof(gpu1));
	pt_app_start(&a, PT_ARGS("--gpu", "1"), NULL);
	GW_ASSERT_STR_EQ(a.gpu, gpu1);
	setenv("GPUWARM_PROC_ROOT", pt_fake_proc(&p, a.pid, 1, 2), 1);
	pt_num(pid, sizeof(pid), a.pid);

	dump_on_gpu(&p, &a, pid, gpu1, "0000:3c:00.0");

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), PT_ARGS("FAKECUDA_GPUS=1")),
			 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "is gone or drained: restoring onto");
	assert_restored_onto(&p, &a, gpu0);
	pt_finish();
}

/* Start gw-vram-app under the in-process shim and wait until gpu-warmd sees its VRAM. */
static void start_shimmed_app(struct pt *p, struct pt_app *a, const char *const *args)
{
	char preload[600];

	if (!getenv("GW_SHIM"))
		GW_SKIP("no in-process shim in this build");
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", getenv("GW_SHIM"));
	pt_app_start(a, args, PT_ARGS(preload));
	for (int i = 0; i < 300; i++) {
		cJSON *st = pt_daemon_status(p), *proc;
		int seen = 0;

		cJSON_ArrayForEach(proc, cJSON_GetObjectItemCaseSensitive(st, "processes"))
			if (cJSON_GetObjectItemCaseSensitive(proc, "pid")->valuedouble == a->pid &&
			    cJSON_GetObjectItemCaseSensitive(proc, "vram_bytes")->valuedouble > 0)
				seen = 1;
		cJSON_Delete(st);
		if (seen)
			return;
		pt_sleep_ms(20);
	}
	GW_FAIL("the shimmed app's agent never showed up");
}

/* The fast path through CRIU: the VRAM goes into gpuwarm-vram-<pid>.img among CRIU's images,
 * sparse (zero chunks left out) and checksummed, and comes back from there. */
GW_TEST(fast_path_writes_vram_image_into_the_images)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16], vram[600], magic[8] = "";
	struct gw_vimg v;
	char err[256];
	int fd;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	start_shimmed_app(&p, &a, PT_ARGS("--mib", "32", "--zero-mib", "64", "--chunk-mib", "16"));
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "(fast path) into gpuwarm-vram-");
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0);
	GW_ASSERT(img.fast && img.vram_file && img.agent_vtid > 0);
	snprintf(vram, sizeof(vram), "%s/gpuwarm-vram-%d.img", p.images, (int)a.pid);
	fd = open(vram, O_RDONLY);
	GW_ASSERT(fd >= 0);
	GW_ASSERT(read(fd, magic, 8) == 8 && memcmp(magic, GW_VIMG_MAGIC, 8) == 0);
	if (gw_vimg_read_fd(fd, &v, err, sizeof(err)) < 0)
		GW_FAIL("%s: %s", vram, err);
	GW_ASSERT_INT_EQ(v.vram_bytes, 96u << 20);
	GW_ASSERT_INT_EQ(v.data_bytes, 32u << 20);
	GW_ASSERT(v.flags & GW_VIMG_F_SUMS);
	/* its data in segment files beside it, one per I/O lane */
	GW_ASSERT_INT_EQ(v.nsegments, GWP_VRAM_SEGMENTS);
	for (uint32_t k = 0; k < v.nsegments; k++) {
		char seg[640];
		int sfd;

		snprintf(seg, sizeof(seg), "%s.seg-%u", vram, k);
		sfd = open(seg, O_RDONLY);
		GW_ASSERT(sfd >= 0);
		if (gw_vimg_check_segment_fd(&v, k, sfd, err, sizeof(err)) < 0)
			GW_FAIL("%s: %s", seg, err);
		close(sfd);
	}
	gw_vimg_clear(&v);
	close(fd);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restored by gpu-warmd (fast path)");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* The image in CRIU's directory is all a restore needs: a daemon that never saw the dump (it
 * was restarted in between) restores from it. */
GW_TEST(fast_path_restore_needs_only_the_image_file)
{
	struct pt_app a;
	struct pt p;
	char pid[16];
	cJSON *st;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	start_shimmed_app(&p, &a, PT_ARGS("--mib", "32", "--zero-mib", "32", "--chunk-mib", "16"));
	pt_num(pid, sizeof(pid), a.pid);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "(fast path) into gpuwarm-vram-");

	pt_daemon_kill(&p);
	pt_daemon_start(&p, NULL);
	/* the app's agent finds the new daemon by itself */
	for (int i = 0; i < 300; i++) {
		cJSON *proc;
		int seen = 0;

		st = pt_daemon_status(&p);
		cJSON_ArrayForEach(proc, cJSON_GetObjectItemCaseSensitive(st, "processes"))
			seen |= cJSON_GetObjectItemCaseSensitive(proc, "pid")->valuedouble == a.pid;
		cJSON_Delete(st);
		if (seen)
			break;
		pt_sleep_ms(50);
	}
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	fprintf(stderr, "%s", pt_log(&p));
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restored by gpu-warmd (fast path)");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* The largest file of the dump's VRAM image (its data segment): a byte near its end flipped. */
static void corrupt_vram_data(const struct pt *p, pid_t pid)
{
	char path[640], best[640] = "";
	off_t best_size = 0;
	struct stat st;
	char byte;
	int fd;

	for (unsigned k = 0; k < GWP_VRAM_SEGMENTS; k++) {
		snprintf(path, sizeof(path), "%s/gpuwarm-vram-%d.img.seg-%u", p->images, (int)pid, k);
		if (stat(path, &st) == 0 && st.st_size > best_size) {
			best_size = st.st_size;
			snprintf(best, sizeof(best), "%s", path);
		}
	}
	GW_ASSERT(best_size > 4096);
	fd = open(best, O_RDWR);
	GW_ASSERT(fd >= 0);
	GW_ASSERT(pread(fd, &byte, 1, best_size - 100) == 1);
	byte = (char)(byte ^ 0x5a);
	GW_ASSERT(pwrite(fd, &byte, 1, best_size - 100) == 1);
	close(fd);
}

/* A shimmed app dumped through the fast path by a daemon whose driver synchronises slowly (the
 * fake's FAKECUDA_SYNC_DELAY_MS; fail_rule: a FAKECUDA_FAIL=... too, or NULL): its prefill is
 * surely still filling when RESUME_DEVICES_LATE comes. */
static void dump_with_slow_fill(struct pt *p, struct pt_app *a, char *pid, size_t len,
				const char *fail_rule)
{
	pt_setup(p);
	pt_daemon_start(p, PT_ARGS("FAKECUDA_SYNC_DELAY_MS=60", fail_rule)); /* NULL ends the list */
	start_shimmed_app(p, a, PT_ARGS("--mib", "48", "--zero-mib", "16", "--chunk-mib", "16"));
	pt_num(pid, len, a->pid);
	GW_ASSERT_INT_EQ(pt_criu(p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
}

/* CRIU's restore does not wait for the prefill (POST_FORKING) to finish before the driver's
 * restore: the two overlap, and the resume joins the fill before the map. The fake driver's
 * synchronisations are slowed so that the fill is surely still running at RESUME_DEVICES_LATE. */
GW_TEST(fast_path_restore_overlaps_the_prefill)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	dump_with_slow_fill(&p, &a, pid, sizeof(pid), NULL);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "prefill join");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "its VRAM was prefilled while CRIU restored memory");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* ...and a fill that fails while the driver restores fails the restore, saying why. */
GW_TEST(fast_path_restore_fails_when_the_overlapped_prefill_does)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	dump_with_slow_fill(&p, &a, pid, sizeof(pid), NULL);
	corrupt_vram_data(&p, a.pid);
	pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL); /* fake-criu: the hook's result */
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "-1");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "gpu-warmd: prefill: refilling VRAM failed");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "does not match its checksum");
	pt_finish();
}

/* ...and a driver restore that fails while the fill runs: the restore fails, and the VRAM the
 * fill then makes is released at once, not held for a resume that will never come. */
GW_TEST(overlapped_prefill_released_when_the_restore_fails)
{
	struct pt_app a;
	struct pt p;
	char pid[16];
	cJSON *st = NULL;
	int left = -1;

	dump_with_slow_fill(&p, &a, pid, sizeof(pid), "FAKECUDA_FAIL=cuCheckpointProcessRestore=999");
	pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "-1");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "cuCheckpointProcessRestore");
	for (int i = 0; i < 200 && left != 0; i++) {
		cJSON_Delete(st);
		st = pt_daemon_status(&p);
		left = st ? cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(st, "prefills")) : -1;
		if (left != 0)
			pt_sleep_ms(25);
	}
	cJSON_Delete(st);
	GW_ASSERT_INT_EQ(left, 0);
	{
		static char log[1 << 20];
		size_t n = read_file(p.dir, "daemon.log", log, sizeof(log) - 1);

		log[n] = '\0';
		GW_ASSERT_STR_CONTAINS(log, "the resume it was for has ended");
	}
	pt_finish();
}

/* Files in dir that are not links, and in images the links to the store. */
static int count_regular(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	GW_ASSERT(d);
	while ((e = readdir(d)) != NULL) {
		struct stat st;

		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			n++;
	}
	closedir(d);
	return n;
}

/* gpu-warmd --vram-store: the dump's VRAM data and CRIU's page images go into the store, CRIU's
 * images get links to them (so that podman's --export archive is small), the restore reads
 * through them; a later dump into the same images replaces the store's files; a store file gone
 * fails the restore, naming it. */
GW_TEST(fast_path_vram_store_keeps_the_data_out_of_the_images)
{
	char pid[16], store[600], link[700], target[700], pages[800], pages_file[1500];
	char pages_link[700];
	struct pt_app a;
	struct pt p;
	cJSON *st;
	ssize_t n;

	pt_setup(&p);
	snprintf(store, sizeof(store), "%s/vram-store", p.dir);
	pt_daemon_start_with(&p, NULL, PT_ARGS("--vram-store", store));
	st = pt_daemon_status(&p);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(
				 cJSON_GetObjectItemCaseSensitive(st, "vram_store"), "path")->valuestring,
			 store);
	cJSON_Delete(st);
	start_shimmed_app(&p, &a, PT_ARGS("--mib", "32", "--zero-mib", "32", "--chunk-mib", "16"));
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "gpu-warmd's VRAM store: ");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "moved CRIU's page images into gpu-warmd's store: 1 files");
	GW_ASSERT_INT_EQ(count_regular(store), GWP_VRAM_SEGMENTS + 1);
	snprintf(link, sizeof(link), "%s/pages-1.img", p.images);
	n = readlink(link, pages, sizeof(pages) - 1);
	GW_ASSERT(n > 0);
	pages[n] = '\0';
	GW_ASSERT(strncmp(pages, store, strlen(store)) == 0); /* absolute, for podman's --import */
	snprintf(pages_file, sizeof(pages_file), "%s", pages);
	GW_ASSERT(access(pages_file, F_OK) == 0);
	snprintf(link, sizeof(link), "%s/gpuwarm-vram-%d.img.seg-0", p.images, (int)a.pid);
	n = readlink(link, target, sizeof(target) - 1);
	GW_ASSERT(n > 0);
	target[n] = '\0';
	GW_ASSERT(strncmp(target, store, strlen(store)) == 0);
	st = pt_daemon_status(&p);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItemCaseSensitive(
				 cJSON_GetObjectItemCaseSensitive(st, "vram_store"), "files")->valuedouble,
			 GWP_VRAM_SEGMENTS + 1);
	cJSON_Delete(st);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "pages-1.img: 262144 bytes of pages restored");
	/* the restore made the link relative (fake-criu read it inside a chroot too) */
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "1 page images linked into gpu-warmd's store: links "
			       "made relative");
	snprintf(pages_link, sizeof(pages_link), "%s/pages-1.img", p.images);
	n = readlink(pages_link, pages, sizeof(pages) - 1);
	GW_ASSERT(n > 0);
	pages[n] = '\0';
	GW_ASSERT(strncmp(pages, "../", 3) == 0 && strstr(pages, store + 1));
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);

	/* dumped again into the same images: the first dump's store files go, CRIU writes its
	 * pages into a file of its own, not through the old link */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "removed 1 links of an earlier dump's page images");
	GW_ASSERT_INT_EQ(count_regular(store), GWP_VRAM_SEGMENTS + 1);
	GW_ASSERT(access(target, F_OK) < 0);
	GW_ASSERT(access(pages_file, F_OK) < 0);
	n = readlink(link, target, sizeof(target) - 1);
	GW_ASSERT(n > 0);
	target[n] = '\0';
	GW_ASSERT(unlink(target) == 0);
	pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL); /* fake-criu: the hook's result */
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "-1");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "in gpu-warmd's VRAM store): No such file");
	pt_finish();
}

GW_TEST_MAIN();
