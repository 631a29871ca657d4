/* SPDX-License-Identifier: MIT */
/*
 * `warmctl inspect ARCHIVE` on exported checkpoints built here: a checkpoint directory laid out
 * as podman exports it (CRIU's images, the plugin's record, a VRAM image with its segment files
 * written by gpu-warmd over the fake driver, podman's config.dump), archived with tar(1) as
 * ustar, GNU, pax and tar.gz; then the archives it must refuse or flag: truncated, corrupt,
 * a segment missing, --verify. And the checkpoint as gpu-warmd's --vram-store leaves it: the
 * segment files symlinks into the store, archived as links (GNU 'K', pax linkpath) and shown
 * as kept outside the archive.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-test.h"
#include "harness.h"

#define MIB (1u << 20)
/* Long enough that every link target to it is a GNU long link name or a pax linkpath. */
#define STORE "vram-store/gpu-warmd-vram-store-named-long-enough-for-a-long-link-name-in-any-tar"

static const char *path_in(const char *name)
{
	static char paths[8][512];
	static unsigned next;
	char *p = paths[next++ % 8];

	snprintf(p, 512, "%s/%s", gwt_dir(), name);
	return p;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	GW_ASSERT(f);
	GW_ASSERT(fputs(text, f) >= 0);
	GW_ASSERT(fclose(f) == 0);
}

static void sh(const char *cmd)
{
	char out[4096], err[4096];

	if (gwt_run_as(-1, out, sizeof(out), err, sizeof(err), GWT_ARGS("/bin/sh", "-c", cmd)) != 0)
		GW_FAIL("%s: %s", cmd, err);
}

/* ctr/ with checkpoint/ as podman exports it; the VRAM image of a suspended shimmed app. */
static pid_t make_checkpoint(struct gwt_daemon *d, struct gwt_app *app)
{
	char img[600], rec[600], cmd[2048];
	cJSON *j;

	sh("mkdir -p \"$GW_TEST_DIR_ARC\"/ctr/checkpoint");
	gwt_daemon_start(d, GWT_ARGS("--chunk-kib", "1024"));
	gwt_app_start_shimmed(d, app, 160,
			      GWT_ARGS("--mib", "64", "--zero-mib", "96", "--chunk-mib", "32"));
	snprintf(img, sizeof(img), "%s/ctr/checkpoint/gpuwarm-vram-%d.img", gwt_dir(),
		 (int)app->pid);
	j = gwt_ctl(d, 0, GWT_ARGS("suspend", gwt_pid(app->pid), "--image", img));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.segments"), 8);
	cJSON_Delete(j);
	snprintf(rec, sizeof(rec), "%s/ctr/checkpoint/gpuwarm-%d.json", gwt_dir(), (int)app->pid);
	snprintf(cmd, sizeof(cmd),
		 "{\"format\":1,\"pid\":%d,\"vpid\":1,\"restore_tid\":%d,\"restore_vtid\":2,"
		 "\"state\":\"running\",\"fast\":true,\"agent_tid\":%d,\"vram_file\":true,"
		 "\"gpus\":[{\"uuid\":\"GPU-00000000-0000-0000-0000-000000000000\","
		 "\"pci_bus_id\":\"0000:3b:00.0\"}]}",
		 (int)app->pid, (int)app->pid + 1, (int)app->pid + 2);
	write_text(rec, cmd);
	write_text(path_in("ctr/config.dump"),
		   "{\"name\":\"model-srv\",\"rootfsImageName\":\"localhost/model:1\"}");
	sh("cd \"$GW_TEST_DIR_ARC\"/ctr && head -c 300000 /dev/urandom >checkpoint/pages-1.img && "
	   "head -c 70000 /dev/urandom >checkpoint/pages-2.img && "
	   "printf x >checkpoint/inventory.img && printf x >checkpoint/pstree.img && "
	   "for i in 1 2 3; do printf x >checkpoint/core-$i.img; done && "
	   "printf x >checkpoint/mm-1.img && head -c 5000 /dev/zero >rootfs-diff.tar && "
	   "printf '{}' >spec.dump");
	return app->pid;
}

static void check_archive(const struct gwt_daemon *d, const char *archive, int compressed)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("inspect", archive));

	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "result.criu_checkpoint")));
	GW_ASSERT_INT_EQ(cJSON_IsTrue(gwt_json(j, "result.compressed")), compressed);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.page_bytes"), 370000);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.criu_threads"), 3);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.criu_pids.0"), 1);
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.page_images.0.name"), "pages-1.img");
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.container.name"), "model-srv");
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.container.rootfsImageName"), "localhost/model:1");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.gpuwarm_records.0.vpid"), 1);
	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "result.gpuwarm_records.0.fast")));
	GW_ASSERT(!gwt_json(j, "result.images.0.error"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.data_bytes"), 64 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.vram_bytes"), 160 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.segments"), 8);
	GW_ASSERT(!gwt_json(j, "result.images.0.segment_files.7.error"));
	GW_ASSERT(gwt_json_num(j, "result.images.0.predicted_restore_s") > 0);
	GW_ASSERT(gwt_json_num(j, "result.predicted_vram_restore_s") ==
		  gwt_json_num(j, "result.images.0.predicted_restore_s"));
	GW_ASSERT(gwt_json_num(j, "result.vram_image_bytes") > 64 * MIB);
	GW_ASSERT(gwt_json_num(j, "result.unpacked_bytes") > 64 * MIB);
	GW_ASSERT(compressed ? gwt_json_num(j, "result.archive_bytes") < 32 * MIB
			     : gwt_json_num(j, "result.archive_bytes") ==
				       gwt_json_num(j, "result.unpacked_bytes"));
	cJSON_Delete(j);
}

/* Archives to refuse (exit 1 with the cause) or to flag. */
static void check_bad_archives(const struct gwt_daemon *d)
{
	cJSON *j;

	sh("cd \"$GW_TEST_DIR_ARC\" && head -c 300000 a.tar >trunc.tar && "
	   "cp a.tar bad-header.tar && printf Z | dd of=bad-header.tar bs=1 seek=3 conv=notrunc "
	   "2>/dev/null && cp a.tar.gz bad.tar.gz && head -c 4096 /dev/urandom | "
	   "dd of=bad.tar.gz bs=1 seek=2000 conv=notrunc 2>/dev/null && "
	   "(cd ctr && tar --exclude='*.seg-3' -cf ../noseg.tar .)");
	j = gwt_ctl(d, 1, GWT_ARGS("inspect", path_in("trunc.tar")));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "the archive ends inside");
	cJSON_Delete(j);
	j = gwt_ctl(d, 1, GWT_ARGS("inspect", path_in("bad-header.tar")));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "not a tar archive");
	cJSON_Delete(j);
	j = gwt_ctl(d, 1, GWT_ARGS("inspect", path_in("bad.tar.gz")));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "bad.tar.gz: ");
	cJSON_Delete(j);
	j = gwt_ctl(d, 1, GWT_ARGS("inspect", path_in("noseg.tar")));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.images.0.segment_files.3.error"),
			 "not in the archive");
	GW_ASSERT(!gwt_json(j, "result.images.0.segment_files.2.error"));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "result.images.0.error"), "segment file");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(d, 2, GWT_ARGS("inspect", path_in("a.tar"), "--verify")));
}

GW_TEST(inspect_exported_archives)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char out[16384], err[1024], want[128];
	cJSON *j, *dir;

	setenv("GW_TEST_DIR_ARC", gwt_dir(), 1);
	make_checkpoint(&d, &app);
	sh("cd \"$GW_TEST_DIR_ARC\"/ctr && tar --format=ustar -cf ../a.tar . && "
	   "tar --format=gnu -czf ../a.tar.gz . && tar --format=pax -cf ../pax.tar * && "
	   "tar --format=gnu -cf ../gnu.tar *");
	check_archive(&d, path_in("a.tar"), 0);
	check_archive(&d, path_in("a.tar.gz"), 1);
	check_archive(&d, path_in("pax.tar"), 0);
	check_archive(&d, path_in("gnu.tar"), 0);
	/* the same prediction as the directory view of the unpacked checkpoint */
	dir = gwt_ctl(&d, 0, GWT_ARGS("inspect", path_in("ctr/checkpoint")));
	j = gwt_ctl(&d, 0, GWT_ARGS("inspect", path_in("a.tar.gz")));
	GW_ASSERT(gwt_json_num(dir, "result.images.0.predicted_restore_s") ==
		  gwt_json_num(j, "result.images.0.predicted_restore_s"));
	GW_ASSERT_STR_EQ(gwt_json_str(dir, "result.images.0.id"),
			 gwt_json_str(j, "result.images.0.id"));
	cJSON_Delete(dir);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
				    GWT_ARGS(getenv("GW_WARMCTL"), "--human", "inspect",
					     path_in("a.tar.gz"))),
			 0);
	GW_ASSERT_STR_CONTAINS(out, "gzip-compressed tar with a CRIU checkpoint");
	GW_ASSERT_STR_CONTAINS(out, "container model-srv, image localhost/model:1");
	GW_ASSERT_STR_CONTAINS(out, "1 processes, 3 threads");
	GW_ASSERT_STR_CONTAINS(out, "data 64.0 MiB (40.0%), zero 96.0 MiB in 3 runs");
	GW_ASSERT_STR_CONTAINS(out, "data in 8 segment files");
	snprintf(want, sizeof(want), "pid %d (1 in the container), running, fast path",
		 (int)app.pid);
	GW_ASSERT_STR_CONTAINS(out, want);
	GW_ASSERT_STR_CONTAINS(out, "restore: VRAM images predict");
	/* the process comes back from the image in the directory */
	check_bad_archives(&d);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* linked/: ctr/ with each segment file moved into STORE and a symlink to it left in its place,
 * as a checkpoint taken with `gpu-warmd --vram-store DIR` holds them; archived. */
static void link_segments(void)
{
	sh("cd \"$GW_TEST_DIR_ARC\" && s=\"$GW_TEST_DIR_ARC/" STORE "\" && mkdir -p \"$s\" && "
	   "cp -a ctr linked && for f in linked/checkpoint/*.seg-*; do b=${f##*/}; "
	   "mv \"$f\" \"$s/$b.1a2b3c\" && ln -s \"$s/$b.1a2b3c\" \"$f\" || exit 1; done && "
	   "mv linked/checkpoint/pages-1.img \"$s/pages-1.img.1a2b3c\" && "
	   "ln -s \"../../../../../../../../../../../../../../../..$s/pages-1.img.1a2b3c\" "
	   "linked/checkpoint/pages-1.img && "
	   "ln -s \"$s/pages-1.img.gone\" linked/checkpoint/pages-3.img && "
	   "cd linked && tar --format=gnu -cf ../linked-gnu.tar . && "
	   "tar --format=pax -czf ../linked-pax.tar.gz . && "
	   "tar --format=gnu --exclude='*.seg-3' -cf ../linked-noseg.tar .");
}

/* An archive of linked/ (all but segment file `missing` linked; -1: none missing): each link
 * shown with its target, the data counted outside, the image usable and its prediction kept. */
static void check_linked_archive(const struct gwt_daemon *d, const char *archive, pid_t pid,
				 int missing, double predicted)
{
	cJSON *j = gwt_ctl(d, missing < 0 ? 0 : 1, GWT_ARGS("inspect", archive));
	char key[128], want[1024];

	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.images.0.segments"), 8);
	for (int k = 0; k < 8; k++) {
		snprintf(key, sizeof(key), "result.images.0.segment_files.%d.error", k);
		if (k == missing) {
			GW_ASSERT_STR_EQ(gwt_json_str(j, key), "not in the archive");
			continue;
		}
		GW_ASSERT(!gwt_json(j, key));
		snprintf(key, sizeof(key), "result.images.0.segment_files.%d.outside", k);
		GW_ASSERT(cJSON_IsTrue(gwt_json(j, key)));
		snprintf(key, sizeof(key), "result.images.0.segment_files.%d.link", k);
		snprintf(want, sizeof(want), "%s/" STORE "/gpuwarm-vram-%d.img.seg-%d.1a2b3c",
			 gwt_dir(), (int)pid, k);
		GW_ASSERT_STR_EQ(gwt_json_str(j, key), want);
	}
	GW_ASSERT_INT_EQ(!gwt_json(j, "result.images.0.error"), missing < 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.vram_outside_segment_files"),
			 missing < 0 ? 8 : 7);
	if (missing < 0)
		GW_ASSERT_INT_EQ(gwt_json_num(j, "result.vram_outside_bytes"), 64 * MIB);
	GW_ASSERT(gwt_json_num(j, "result.images.0.predicted_restore_s") == predicted);
	/* page images: pages-1 a link to a store file here, pages-2 a file, pages-3 a link to
	 * nothing */
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.page_outside_files"), 2);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.page_outside_files_found"), 1);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.page_outside_bytes"), 300000);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.page_bytes"), 70000);
	/* the VRAM data stays on the host: the archive holds the image's head only */
	GW_ASSERT(gwt_json_num(j, "result.vram_image_bytes") < MIB);
	GW_ASSERT(gwt_json_num(j, "result.unpacked_bytes") < 2 * MIB);
	cJSON_Delete(j);
}

GW_TEST(inspect_archive_with_segments_linked_into_the_vram_store)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char out[16384], err[1024];
	double predicted;
	cJSON *dir;

	setenv("GW_TEST_DIR_ARC", gwt_dir(), 1);
	make_checkpoint(&d, &app);
	link_segments();
	dir = gwt_ctl(&d, 0, GWT_ARGS("inspect", path_in("ctr/checkpoint")));
	predicted = gwt_json_num(dir, "result.images.0.predicted_restore_s");
	GW_ASSERT(predicted > 0);
	cJSON_Delete(dir);
	check_linked_archive(&d, path_in("linked-gnu.tar"), app.pid, -1, predicted);
	check_linked_archive(&d, path_in("linked-pax.tar.gz"), app.pid, -1, predicted);
	check_linked_archive(&d, path_in("linked-noseg.tar"), app.pid, 3, predicted);
	GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
				    GWT_ARGS(getenv("GW_WARMCTL"), "--human", "inspect",
					     path_in("linked-gnu.tar"))),
			 0);
	GW_ASSERT_STR_CONTAINS(out, "VRAM images: 0.0 MiB in 1 images (0 segment files)");
	GW_ASSERT_STR_CONTAINS(out, "VRAM data kept outside the archive (links into gpu-warmd's "
			       "VRAM store): 64.0 MiB in 8 segment files");
	GW_ASSERT_STR_CONTAINS(out, ".img.seg-0  ");
	GW_ASSERT_STR_CONTAINS(out, " (outside the archive)");
	GW_ASSERT_STR_CONTAINS(out, "page images kept outside the archive (links into gpu-warmd's "
			       "store): 2, 0.3 MiB in the 1 found on this host");
	GW_ASSERT_STR_CONTAINS(out, "pages-3.img");
	GW_ASSERT_STR_CONTAINS(out, "(outside the archive; not on this host)");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST_MAIN()
