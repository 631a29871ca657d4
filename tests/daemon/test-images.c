/* SPDX-License-Identifier: MIT */
/*
 * VRAM images end to end over the fake driver: sparse images in pinned memory and in files,
 * `warmctl inspect`, and every kind of bad image refused with the process left restorable.
 * The fake driver runs the chunk-scan kernel on the host (common/gw-chunksum.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-crc32c.h"
#include "gw-proto.h"
#include "gw-test.h"
#include "gw-vimg.h"
#include "harness.h"

#define MIB (1u << 20)

/* 64 MiB of data and 96 MiB of zeros, in 32 MiB allocations. */
static void start_sparse_app(const struct gwt_daemon *d, struct gwt_app *app)
{
	gwt_app_start_shimmed(d, app, 160,
			      GWT_ARGS("--mib", "64", "--zero-mib", "96", "--chunk-mib", "32"));
}

/* A path in the test's directory (eight static buffers in turn). */
static const char *image_path(const char *name)
{
	static char paths[8][512];
	static unsigned next;
	char *path = paths[next++ % 8];

	snprintf(path, 512, "%s/%s", gwt_dir(), name);
	return path;
}

static void assert_state(const struct gwt_daemon *d, pid_t pid, const char *state)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("state", gwt_pid(pid)));

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), state);
	cJSON_Delete(j);
}

static void verify(struct gwt_app *app)
{
	char line[256];

	if (!gwt_app_verify(app, line, sizeof(line)))
		GW_FAIL("app verify: %s", line);
}

/* Overwrite len bytes of a file at off. */
static void poke(const char *path, uint64_t off, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);

	GW_ASSERT(fd >= 0);
	GW_ASSERT(pwrite(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void peek(const char *path, uint64_t off, void *bytes, size_t len)
{
	int fd = open(path, O_RDONLY);

	GW_ASSERT(fd >= 0);
	GW_ASSERT(pread(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

/* Suspend the app into an image file; returns the parsed reply. */
static cJSON *suspend_to(const struct gwt_daemon *d, const struct gwt_app *app, const char *path)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("suspend", gwt_pid(app->pid), "--image", path));

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.image"), "file");
	return j;
}

/* The same into one file (--segments 1): a version 1 image, data in the head file, as written
 * before segments existed. */
static cJSON *suspend_single(const struct gwt_daemon *d, const struct gwt_app *app,
			     const char *path)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("suspend", gwt_pid(app->pid), "--image", path,
					  "--segments", "1"));

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.segments"), 0);
	return j;
}

GW_TEST(file_image_is_sparse_and_round_trips)
{
	const char *path = image_path("app.img");
	struct gwt_daemon d;
	struct gwt_app app;
	struct stat st;
	cJSON *j;

	/* No image pool at all: a file image needs none. */
	gwt_daemon_start(&d, GWT_ARGS("--chunk-kib", "1024"));
	start_sparse_app(&d, &app);
	j = suspend_single(&d, &app, path);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.vram_bytes"), 160 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 64 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.zero_bytes"), 96 * MIB);
	GW_ASSERT(gwt_json(j, "result.verified") && cJSON_IsTrue(gwt_json(j, "result.verified")));
	cJSON_Delete(j);
	GW_ASSERT(stat(path, &st) == 0);
	GW_ASSERT_INT_EQ(st.st_size, 64 * MIB + GW_VIMG_DATA_ALIGN); /* data + one page of tables */
	GW_ASSERT(access(image_path("app.img.partial"), F_OK) < 0);
	assert_state(&d, app.pid, "checkpointed");

	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", path, "--verify"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "verified");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.data_bytes"), 64 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.zero_runs"), 3);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.pid"), app.pid);
	GW_ASSERT(gwt_json_num(j, "result.images.0.predicted_restore_s") > 0);
	cJSON_Delete(j);
	{
		char out[8192], err[1024], want[64];

		GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
					    GWT_ARGS(getenv("GW_WARMCTL"), "--human", "inspect",
						     path)),
				 0);
		snprintf(want, sizeof(want), "VRAM image v1, id ");
		GW_ASSERT_STR_CONTAINS(out, want);
		snprintf(want, sizeof(want), ", pid %d, chunks of 1024 KiB", (int)app.pid);
		GW_ASSERT_STR_CONTAINS(out, want);
		GW_ASSERT_STR_CONTAINS(out, "data 64.0 MiB (40.0%), zero 96.0 MiB in 3 runs");
	}

	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "result.verified")));
	cJSON_Delete(j);
	verify(&app);
	/* Once more, the resume naming no file: the daemon kept the image's fd. */
	unlink(path);
	cJSON_Delete(suspend_single(&d, &app, path));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(memory_image_holds_only_the_data)
{
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	/* 64 MiB of pool for a 160 MiB process: enough, since only data chunks are kept. */
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64", "--chunk-kib", "1024"));
	start_sparse_app(&d, &app);
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.image"), "memory");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 64 * MIB);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.daemon.image_pool_free_bytes"), 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.processes.0.held_bytes"), 64 * MIB);
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	verify(&app);
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.daemon.image_pool_free_bytes"), 64 * MIB);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(dense_image_keeps_zero_chunks)
{
	const char *path = image_path("dense.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path, "--dense",
				    "--chunk-kib", "512"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 160 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.chunk_bytes"), 512 * 1024);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", path));
	GW_ASSERT(cJSON_IsFalse(gwt_json(j, "result.images.0.sparse")));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "none");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A flipped data byte: the GPU-side check refuses the image before the process is touched; with
 * the byte put back the same resume works. */
GW_TEST(corrupt_data_is_refused_and_process_stays_restorable)
{
	const char *path = image_path("app.img");
	struct gwt_daemon d;
	struct gwt_app app;
	unsigned char b, flipped;
	cJSON *j;

	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	cJSON_Delete(suspend_single(&d, &app, path));
	peek(path, GW_VIMG_DATA_ALIGN + 12345, &b, 1);
	flipped = b ^ 0x10;
	poke(path, GW_VIMG_DATA_ALIGN + 12345, &flipped, 1);

	j = gwt_ctl(&d, 1, GWT_ARGS("inspect", path, "--verify"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "MISMATCH");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.bad_chunks"), 1);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "checksum");
	cJSON_Delete(j);
	assert_state(&d, app.pid, "checkpointed");

	poke(path, GW_VIMG_DATA_ALIGN + 12345, &b, 1);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* Broken tables, truncation, another format version: refused with the cause named, the
 * process untouched, and the image the daemon holds still restores it. */
GW_TEST(bad_image_files_are_refused_with_the_cause)
{
	const char *path = image_path("app.img"), *bad = image_path("bad.img");
	struct gwt_daemon d;
	struct gwt_app app;
	uint8_t header[GW_VIMG_HEADER_BYTES], junk[24] = { 0xff };
	uint32_t version = 99, crc; /* 2 is the segmented layout now */
	char cmd[1200];
	cJSON *j;

	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	cJSON_Delete(suspend_single(&d, &app, path));
	peek(path, 0, header, sizeof(header));

	/* a run entry overwritten: the table CRC catches it */
	snprintf(cmd, sizeof(cmd), "cp %s %s", path, bad);
	GW_ASSERT(system(cmd) == 0);
	poke(bad, GW_VIMG_HEADER_BYTES + 5 * GW_VIMG_RANGE_BYTES, junk, sizeof(junk));
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", bad));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "tables are corrupt");
	cJSON_Delete(j);

	/* cut short */
	GW_ASSERT(system(cmd) == 0);
	GW_ASSERT(truncate(bad, 40 * MIB) == 0);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", bad));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "truncated");
	cJSON_Delete(j);

	/* another version, with a valid header CRC */
	GW_ASSERT(system(cmd) == 0);
	memcpy(header + 8, &version, 4);
	crc = gw_crc32c(0, header, 252);
	memcpy(header + 252, &crc, 4);
	poke(bad, 0, header, sizeof(header));
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", bad));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "version 99");
	cJSON_Delete(j);
	j = gwt_ctl(&d, 1, GWT_ARGS("inspect", bad));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "result.images.0.error"), "version 99");
	cJSON_Delete(j);

	/* not an image at all */
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", d.log));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "not a gpu-warmd VRAM image");
	cJSON_Delete(j);

	assert_state(&d, app.pid, "checkpointed");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(existing_file_is_never_overwritten)
{
	const char *path = image_path("taken.img");
	struct gwt_daemon d;
	struct gwt_app app;
	char data[6] = "";
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	GW_ASSERT(fd >= 0 && write(fd, "keep\n", 5) == 5);
	close(fd);
	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	cJSON_Delete(gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path)));
	peek(path, 0, data, 5);
	GW_ASSERT_STR_EQ(data, "keep\n");
	assert_state(&d, app.pid, "running");
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* The file system fills up: the dump fails before the app lets go of its VRAM. */
GW_TEST(full_disk_fails_the_dump_cleanly)
{
	const char *dir = image_path("small-fs"), *path = image_path("small-fs/app.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	GW_ASSERT(mkdir(dir, 0700) == 0);
	if (mount("gw-test", dir, "tmpfs", 0, "size=16m") < 0)
		GW_SKIP("cannot mount a small tmpfs here (%s): needs root in a mount namespace "
			"that allows it", strerror(errno));
	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	j = gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "full");
	cJSON_Delete(j);
	GW_ASSERT(access(path, F_OK) < 0);
	GW_ASSERT(access(image_path("small-fs/app.img.partial"), F_OK) < 0);
	assert_state(&d, app.pid, "running");
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
	umount(dir);
}

GW_TEST(image_needs_the_shim)
{
	const char *path = image_path("noshim.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	gwt_daemon_start(&d, NULL);
	gwt_app_start(&app, GWT_ARGS("--mib", "16"));
	j = gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_ILLEGAL_STATE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "shim");
	cJSON_Delete(j);
	GW_ASSERT(access(path, F_OK) < 0);
	assert_state(&d, app.pid, "running");
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A raw client handing the daemon an fd it must not write through: refused before use. */
GW_TEST(image_fd_is_checked_before_use)
{
	const char *path = image_path("ro.img");
	struct gwt_daemon d;
	struct gwt_app app;
	struct gw_client *c = NULL;
	struct gw_client_error e;
	cJSON *params;
	int fd, r;

	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	GW_ASSERT(gw_client_connect(d.socket, "test", 5000, &c, &e) == 0);
	params = cJSON_CreateObject();
	cJSON_AddNumberToObject(params, "pid", app.pid);
	cJSON_AddNumberToObject(params, "image_fd", 0);
	/* a read-only fd */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	close(fd);
	fd = open(path, O_RDONLY);
	r = gw_client_call(c, GW_METHOD_SUSPEND, params, &fd, 1, 5000, NULL, NULL, NULL, &e);
	GW_ASSERT_INT_EQ(r, -EREMOTEIO);
	GW_ASSERT_STR_CONTAINS(e.message, "O_RDWR");
	close(fd);
	/* a pipe */
	{
		int p[2];

		GW_ASSERT(pipe(p) == 0);
		r = gw_client_call(c, GW_METHOD_SUSPEND, params, &p[1], 1, 5000, NULL, NULL,
				   NULL, &e);
		GW_ASSERT_INT_EQ(r, -EREMOTEIO);
		GW_ASSERT_STR_CONTAINS(e.message, "regular file");
		close(p[0]);
		close(p[1]);
	}
	/* an index past the fds sent */
	r = gw_client_call(c, GW_METHOD_SUSPEND, params, NULL, 0, 5000, NULL, NULL, NULL, &e);
	GW_ASSERT_INT_EQ(r, -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_INVALID_REQUEST);
	cJSON_Delete(params);
	gw_client_close(c);
	assert_state(&d, app.pid, "running");
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A process with VRAM on two GPUs: one job per GPU writes its ranges' regions of one file. */
GW_TEST(file_image_of_a_two_gpu_process)
{
	const char *path = image_path("two.img");
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	setenv("FAKECUDA_GPUS", "2", 1);
	gwt_daemon_start(&d, NULL);
	gwt_app_start_shimmed(&d, &app, 96,
			      GWT_ARGS("--mib", "64", "--zero-mib", "32", "--chunk-mib", "8",
				       "--second-gpu", "1"));
	j = suspend_to(&d, &app, path);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.ranges"), 12);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 64 * MIB);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", path, "--verify"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "verified");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.ranges.1.device"), 1);
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	GW_ASSERT_STR_CONTAINS(line, "gpu2 GPU-fa4ec0da-0000-4000-8000-000000000001");
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A file another user owns is written with pwrite rather than through a mapping (a truncation
 * under a mapping would be SIGBUS in the daemon); the image is the same. Raw client: the test
 * creates the file and hands it over, as warmctl would. */
GW_TEST(image_of_another_users_file_is_written_with_pwrite)
{
	const char *path = image_path("user.img");
	struct gwt_daemon d;
	struct gwt_app app;
	struct gw_client *c = NULL;
	struct gw_client_error e;
	cJSON *params, *result = NULL;
	char line[256];
	int fd;

	if (geteuid() != 0)
		GW_SKIP("needs root to give the file to another user");
	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	GW_ASSERT(fd >= 0 && fchown(fd, 65534, 65534) == 0);
	GW_ASSERT(gw_client_connect(d.socket, "test", 5000, &c, &e) == 0);
	params = cJSON_CreateObject();
	cJSON_AddNumberToObject(params, "pid", app.pid);
	cJSON_AddNumberToObject(params, "image_fd", 0);
	if (gw_client_call(c, GW_METHOD_SUSPEND, params, &fd, 1, 60000, &result, NULL, NULL, &e) < 0)
		GW_FAIL("suspend: %s", e.message);
	GW_ASSERT_INT_EQ(gwt_json_num(result, "data_bytes"), 64 * MIB);
	GW_ASSERT_STR_EQ(gwt_json_str(result, "file_writes"), "pwrite");
	cJSON_Delete(result);
	cJSON_Delete(params);
	close(fd);
	gw_client_close(c);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("inspect", path, "--verify")));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* gpuwarm.Prefill (CRIU's plugin at POST_FORKING): the image's VRAM is filled ahead, and the
 * resume of the same file only restores and maps. */
static cJSON *prefill(const struct gwt_daemon *d, const char *path, struct gw_client_error *err)
{
	struct gw_client *c;
	cJSON *params = cJSON_CreateObject(), *result = NULL, *segs;
	int fds[17], r;
	unsigned n = 0;
	char seg[600];

	fds[n++] = open(path, O_RDONLY | O_CLOEXEC);
	GW_ASSERT(fds[0] >= 0 && params);
	cJSON_AddNumberToObject(params, "image_fd", 0);
	/* the head's segment files, as warmctl names them */
	for (unsigned k = 0; k < 16; k++) {
		snprintf(seg, sizeof(seg), "%s.seg-%u", path, k);
		if (access(seg, F_OK) < 0)
			break;
		fds[n++] = open(seg, O_RDONLY | O_CLOEXEC);
	}
	if (n > 1) {
		segs = cJSON_AddArrayToObject(params, "segment_fds");
		for (unsigned k = 1; k < n; k++)
			cJSON_AddItemToArray(segs, cJSON_CreateNumber(k));
	}
	GW_ASSERT_INT_EQ(gw_client_connect(d->socket, "gwt-prefill", 5000, &c, err), 0);
	r = gw_client_call(c, GW_METHOD_PREFILL, params, fds, n, 20000, &result, NULL, NULL, err);
	gw_client_close(c);
	cJSON_Delete(params);
	for (unsigned k = 0; k < n; k++)
		close(fds[k]);
	return r == 0 ? result : NULL;
}

GW_TEST(prefill_fills_ahead_of_the_resume)
{
	const char *path = image_path("prefill.img");
	struct gw_client_error err;
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--chunk-kib", "1024"));
	start_sparse_app(&d, &app);
	cJSON_Delete(suspend_to(&d, &app, path));
	j = prefill(&d, path, &err);
	if (!j)
		GW_FAIL("prefill: %s %s", err.name, err.message);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "data_bytes"), 64 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "vram_bytes"), 160 * MIB);
	cJSON_Delete(j);
	/* A second prefill of the same file is a no-op. */
	j = prefill(&d, path, &err);
	GW_ASSERT(j && cJSON_IsTrue(gwt_json(j, "already")));
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, &j), 0);
	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "prefills.0.ready")));
	cJSON_Delete(j);

	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "result.prefilled")));
	cJSON_Delete(j);
	verify(&app);
	GW_ASSERT_INT_EQ(gwt_status_ok(&d, &j), 0);
	GW_ASSERT(gwt_json(j, "prefills") && cJSON_GetArraySize(gwt_json(j, "prefills")) == 0);
	cJSON_Delete(j);

	/* A bad image is refused by the prefill, and the resume still works from the file. */
	cJSON_Delete(suspend_to(&d, &app, image_path("prefill2.img")));
	{
		char junk[4096];
		int fd = open(image_path("junk.img"), O_RDWR | O_CREAT | O_EXCL, 0600);

		memset(junk, 0x5a, sizeof(junk));
		GW_ASSERT(fd >= 0 && write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
		close(fd);
	}
	GW_ASSERT(prefill(&d, image_path("junk.img"), &err) == NULL);
	GW_ASSERT_STR_EQ(err.name, GW_ERROR_IMAGE);
	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", image_path("prefill2.img")));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
	GW_ASSERT(!gwt_json(j, "result.prefilled"));
	cJSON_Delete(j);
	verify(&app);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

/* ---- segment files (version 2 images) ---- */

static const char *seg_path(const char *image, unsigned k)
{
	static char paths[4][600];
	static unsigned next;
	char *path = paths[next++ % 4];

	snprintf(path, 600, "%s.seg-%u", image, k);
	return path;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	GW_ASSERT(stat(path, &st) == 0);
	return (uint64_t)st.st_size;
}

/* The default: the head file and 8 segment files; sparse data spread over them, read back. */
GW_TEST(segmented_image_round_trips)
{
	char path[512], partial[512];
	uint64_t total = 0;
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	snprintf(path, sizeof(path), "%s", image_path("seg.img")); /* image_path's buffers rotate */
	snprintf(partial, sizeof(partial), "%s", image_path("seg.img.partial"));
	gwt_daemon_start(&d, GWT_ARGS("--chunk-kib", "1024"));
	start_sparse_app(&d, &app);
	j = suspend_to(&d, &app, path);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.segments"), 8);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 64 * MIB);
	GW_ASSERT(gwt_json_num(j, "result.io_lanes") >= 1);
	GW_ASSERT(gwt_json_num(j, "result.file_write_bytes_per_s") > 0);
	GW_ASSERT(gwt_json_num(j, "result.copy_gb_per_s") > 0);
	GW_ASSERT(gwt_json_num(j, "result.file_io_ms") > 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.gpu_jobs.0.data_bytes"), 64 * MIB);
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.file_writes"), "pwrite");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.image_head_bytes"), GW_VIMG_DATA_ALIGN);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.image_bytes"),
			 GW_VIMG_DATA_ALIGN + 64 * MIB + 8 * GW_VIMG_SEG_HEADER_BYTES);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(file_size(path), GW_VIMG_DATA_ALIGN); /* the head: header and tables */
	for (unsigned k = 0; k < 8; k++) {
		uint64_t n = file_size(seg_path(path, k));

		GW_ASSERT(n > GW_VIMG_SEG_HEADER_BYTES); /* every segment got data */
		total += n - GW_VIMG_SEG_HEADER_BYTES;
		GW_ASSERT(access(seg_path(partial, k), F_OK) < 0);
	}
	GW_ASSERT_INT_EQ(total, 64 * MIB);
	GW_ASSERT(access(seg_path(path, 8), F_OK) < 0);

	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", path, "--verify"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "verified");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.format_version"), 2);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.segments"), 8);
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.segment_files.7.path"), seg_path(path, 7));
	GW_ASSERT(!gwt_json(j, "result.images.0.segment_files.0.error"));
	cJSON_Delete(j);
	/* the directory view: one image, its segments not counted as CRIU's files */
	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", gwt_dir()));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.vram_segment_files"), 8);
	cJSON_Delete(j);
	{
		char out[8192], err[1024];

		GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
					    GWT_ARGS(getenv("GW_WARMCTL"), "--human", "inspect",
						     path)),
				 0);
		GW_ASSERT_STR_CONTAINS(out, "data in 8 segment files");
		GW_ASSERT_STR_CONTAINS(out, ".seg-7");
	}

	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
	GW_ASSERT(gwt_json_num(j, "result.file_read_bytes_per_s") > 0);
	GW_ASSERT(gwt_json(j, "result.gpu_jobs.0.verify_ms"));
	cJSON_Delete(j);
	verify(&app);
	/* Again, resumed naming no file: the daemon kept the fds of all the files. */
	for (unsigned k = 0; k < 8; k++)
		unlink(seg_path(path, k));
	unlink(path);
	cJSON_Delete(suspend_to(&d, &app, path));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* Dense, 3 segments, smaller chunks; then many small ranges with 8 lanes at work. */
GW_TEST(segmented_dense_and_many_small_ranges)
{
	const char *path = image_path("dense3.img"), *many = image_path("many.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--staging-mib", "256"));
	start_sparse_app(&d, &app);
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path, "--dense",
				    "--chunk-kib", "512", "--segments", "3"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 160 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.segments"), 3);
	cJSON_Delete(j);
	GW_ASSERT(access(seg_path(path, 2), F_OK) == 0 && access(seg_path(path, 3), F_OK) < 0);
	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "none");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	verify(&app);
	gwt_app_stop(&app);

	/* 64 ranges of 2 MiB: every lane gets pieces, across ranges */
	gwt_app_start_shimmed(&d, &app, 128,
			      GWT_ARGS("--mib", "96", "--zero-mib", "32", "--chunk-mib", "2"));
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", many));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.ranges"), 64);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.io_lanes"), 8);
	GW_ASSERT(gwt_json_num(j, "result.gpu_jobs.0.pieces") >= 48);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", many, "--verify"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.checksums"), "verified");
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", many));
	/* readers of a file do not queue on its inode: two lanes a file */
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.io_lanes"), 16);
	cJSON_Delete(j);
	verify(&app);
	/* the pinned pool takes all ranges at once too */
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A raw Resume with the head and the segment fds given (in that order unless fds says). */
static int raw_call(const struct gwt_daemon *d, const char *method, pid_t pid, const int *fds,
		    unsigned nfds, const cJSON *segment_fds, struct gw_client_error *e)
{
	struct gw_client *c = NULL;
	cJSON *params = cJSON_CreateObject();
	int r;

	GW_ASSERT(gw_client_connect(d->socket, "test", 5000, &c, e) == 0);
	cJSON_AddNumberToObject(params, "pid", pid);
	cJSON_AddNumberToObject(params, "image_fd", 0);
	if (segment_fds)
		cJSON_AddItemToObject(params, "segment_fds", cJSON_Duplicate(segment_fds, 1));
	r = gw_client_call(c, method, params, fds, nfds, 60000, NULL, NULL, NULL, e);
	cJSON_Delete(params);
	gw_client_close(c);
	return r;
}

static unsigned open_set(const char *path, unsigned nseg, int *fds, int flags)
{
	fds[0] = open(path, flags);
	GW_ASSERT(fds[0] >= 0);
	for (unsigned k = 0; k < nseg; k++) {
		fds[k + 1] = open(seg_path(path, k), flags);
		GW_ASSERT(fds[k + 1] >= 0);
	}
	return nseg + 1;
}

static void close_set(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/* Missing, short, swapped or foreign segments: gpuwarm.Error.Image, the process untouched and
 * still restorable from the good image. */
GW_TEST(bad_segments_are_refused_before_the_process_is_touched)
{
	char path[512], other[512];
	cJSON *seg = cJSON_CreateIntArray((const int[]){ 1, 2, 3 }, 3), *j;
	struct gw_client_error e;
	struct gwt_daemon d;
	struct gwt_app app, app2;
	char cmd[1400];
	int fds[8];
	unsigned n;

	snprintf(path, sizeof(path), "%s", image_path("s.img")); /* image_path's buffers rotate */
	snprintf(other, sizeof(other), "%s", image_path("other.img"));
	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path,
					     "--segments", "3")));
	assert_state(&d, app.pid, "checkpointed");

	/* one segment fd short */
	n = open_set(path, 3, fds, O_RDONLY);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_RESUME, app.pid, fds, 3,
				  cJSON_CreateIntArray((const int[]){ 1, 2 }, 2), &e),
			 -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(e.message, "3 segment files, 2 came");
	/* none at all */
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_RESUME, app.pid, fds, 1, NULL, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_IMAGE);
	/* swapped */
	{
		int swapped[4] = { fds[0], fds[1], fds[3], fds[2] };

		GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_RESUME, app.pid, swapped, 4, seg, &e),
				 -EREMOTEIO);
		GW_ASSERT_STR_EQ(e.name, GW_ERROR_IMAGE);
		GW_ASSERT_STR_CONTAINS(e.message, "mixed up");
	}
	close_set(fds, n);
	/* the same through warmctl, files renamed */
	GW_ASSERT(rename(seg_path(path, 1), image_path("tmp-seg")) == 0);
	GW_ASSERT(rename(seg_path(path, 2), seg_path(path, 1)) == 0);
	GW_ASSERT(rename(image_path("tmp-seg"), seg_path(path, 2)) == 0);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "segment 1");
	cJSON_Delete(j);
	j = gwt_ctl(&d, 1, GWT_ARGS("inspect", path));
	GW_ASSERT(gwt_json(j, "result.images.0.segment_files.1.error"));
	cJSON_Delete(j);
	GW_ASSERT(rename(seg_path(path, 1), image_path("tmp-seg")) == 0);
	GW_ASSERT(rename(seg_path(path, 2), seg_path(path, 1)) == 0);
	GW_ASSERT(rename(image_path("tmp-seg"), seg_path(path, 2)) == 0);
	/* short: a copy cut by a page */
	snprintf(cmd, sizeof(cmd), "cp %s %s && cp %s %s", seg_path(path, 2),
		 image_path("keep-seg"), seg_path(path, 2), image_path("cut-seg"));
	GW_ASSERT(system(cmd) == 0);
	GW_ASSERT(truncate(seg_path(path, 2), (off_t)file_size(seg_path(path, 2)) - 4096) == 0);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "truncated");
	cJSON_Delete(j);
	GW_ASSERT(rename(image_path("keep-seg"), seg_path(path, 2)) == 0);
	/* missing: warmctl says which file */
	GW_ASSERT(rename(seg_path(path, 0), image_path("keep-seg")) == 0);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), ".seg-0");
	cJSON_Delete(j);
	GW_ASSERT(rename(image_path("keep-seg"), seg_path(path, 0)) == 0);
	/* a segment of another dump, of the same shape */
	start_sparse_app(&d, &app2);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app2.pid), "--image", other,
					     "--segments", "3")));
	n = open_set(path, 3, fds, O_RDONLY);
	close(fds[2]);
	fds[2] = open(seg_path(other, 1), O_RDONLY);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_RESUME, app.pid, fds, 4, seg, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(e.message, "another image");
	close_set(fds, n);

	assert_state(&d, app.pid, "checkpointed");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	verify(&app);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app2.pid), "--image", other)));
	verify(&app2);
	cJSON_Delete(seg);
	gwt_app_stop(&app);
	gwt_app_stop(&app2);
	gwt_daemon_stop(&d);
}

/* Segment fds checked as image_fd is, before anything is done. */
GW_TEST(segment_fds_are_checked_before_use)
{
	const char *path = image_path("u.img");
	struct gw_client_error e;
	struct gwt_daemon d;
	struct gwt_app app;
	int fds[20], p[2];
	cJSON *idx;

	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app);
	for (unsigned k = 0; k < 3; k++) {
		int fd = open(seg_path(path, k), O_RDWR | O_CREAT | O_EXCL, 0600);

		GW_ASSERT(fd >= 0);
		close(fd);
	}
	fds[0] = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	fds[1] = open(seg_path(path, 0), O_RDWR);
	fds[2] = open(seg_path(path, 1), O_RDONLY); /* read-only */
	GW_ASSERT(pipe(p) == 0);
	idx = cJSON_CreateIntArray((const int[]){ 1, 2 }, 2);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 3, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(e.message, "segment 1");
	GW_ASSERT_STR_CONTAINS(e.message, "O_RDWR");
	/* a pipe */
	close(fds[2]);
	fds[2] = p[1];
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 3, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_CONTAINS(e.message, "regular file");
	/* not empty */
	fds[2] = open(seg_path(path, 2), O_RDWR);
	GW_ASSERT(write(fds[2], "x", 1) == 1);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 3, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_CONTAINS(e.message, "empty");
	cJSON_Delete(idx);
	/* an index past the fds sent, the same fd twice, the head named as a segment */
	idx = cJSON_CreateIntArray((const int[]){ 1, 5 }, 2);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 2, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_INVALID_REQUEST);
	cJSON_Delete(idx);
	idx = cJSON_CreateIntArray((const int[]){ 1, 1 }, 2);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 2, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_CONTAINS(e.message, "twice");
	cJSON_Delete(idx);
	idx = cJSON_CreateIntArray((const int[]){ 0 }, 1);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 2, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_INVALID_REQUEST);
	cJSON_Delete(idx);
	/* more than 16, and not an array */
	for (unsigned i = 3; i < 20; i++)
		fds[i] = fds[1];
	{
		int many[17];

		for (int i = 0; i < 17; i++)
			many[i] = i + 1;
		idx = cJSON_CreateIntArray(many, 17);
		GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 18, idx, &e),
				 -EREMOTEIO);
		GW_ASSERT_STR_CONTAINS(e.message, "1 to 16");
		cJSON_Delete(idx);
	}
	idx = cJSON_CreateString("1");
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 2, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_INVALID_REQUEST);
	cJSON_Delete(idx);
	close(fds[0]);
	close(fds[1]);
	close(fds[2]);
	close(p[0]);
	close(p[1]);
	assert_state(&d, app.pid, "running");
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* One segment on a file system without room: refused before the app lets go of its VRAM. */
GW_TEST(full_file_system_under_one_segment_fails_the_dump_cleanly)
{
	const char *dir = image_path("tiny-fs"), *path = image_path("big.img");
	struct gw_client_error e;
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *idx = cJSON_CreateIntArray((const int[]){ 1, 2 }, 2);
	int fds[3];

	GW_ASSERT(mkdir(dir, 0700) == 0);
	if (mount("gw-test", dir, "tmpfs", 0, "size=8m") < 0)
		GW_SKIP("cannot mount a small tmpfs here (%s): needs root in a mount namespace "
			"that allows it", strerror(errno));
	gwt_daemon_start(&d, NULL);
	start_sparse_app(&d, &app); /* 64 MiB of data: 32 MiB per segment */
	fds[0] = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	fds[1] = open(seg_path(path, 0), O_RDWR | O_CREAT | O_EXCL, 0600);
	fds[2] = open(image_path("tiny-fs/big.img.seg-1"), O_RDWR | O_CREAT | O_EXCL, 0600);
	GW_ASSERT(fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0);
	GW_ASSERT_INT_EQ(raw_call(&d, GW_METHOD_SUSPEND, app.pid, fds, 3, idx, &e), -EREMOTEIO);
	GW_ASSERT_STR_EQ(e.name, GW_ERROR_IMAGE);
	GW_ASSERT_STR_CONTAINS(e.message, "full");
	close_set(fds, 3);
	GW_ASSERT_INT_EQ(file_size(path), 0); /* nothing written, nothing left */
	GW_ASSERT_INT_EQ(file_size(image_path("tiny-fs/big.img.seg-1")), 0);
	assert_state(&d, app.pid, "running");
	verify(&app);
	cJSON_Delete(idx);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
	unlink(image_path("tiny-fs/big.img.seg-1"));
	umount(dir);
}

/* A driver failure in the middle of the lanes' work: a suspend leaves the app running and no
 * files; a resume leaves it checkpointed, and the next resume works. */
GW_TEST(lane_failures_leave_the_process_restorable)
{
	char path[512], partial[512], line[256];
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	snprintf(path, sizeof(path), "%s", image_path("lf.img"));
	snprintf(partial, sizeof(partial), "%s", image_path("lf.img.partial"));
	/* the daemon's 5th copy down and 3rd copy up fail (only resumes copy up here) */
	setenv("FAKECUDA_FAIL", "cuMemcpyDtoHAsync=999:5,cuMemcpyHtoDAsync=999:3", 1);
	gwt_daemon_start(&d, GWT_ARGS("--chunk-kib", "1024"));
	unsetenv("FAKECUDA_FAIL");
	start_sparse_app(&d, &app);
	j = gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "cuMemcpyDtoHAsync");
	cJSON_Delete(j);
	GW_ASSERT(access(path, F_OK) < 0 && access(partial, F_OK) < 0);
	for (unsigned k = 0; k < 8; k++)
		GW_ASSERT(access(seg_path(path, k), F_OK) < 0 && access(seg_path(partial, k), F_OK) < 0);
	assert_state(&d, app.pid, "running");
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));

	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid), "--image", path)));
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "cuMemcpyHtoDAsync");
	cJSON_Delete(j);
	assert_state(&d, app.pid, "checkpointed");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path)));
	verify(&app);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST_MAIN()
