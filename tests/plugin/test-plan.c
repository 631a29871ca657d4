/* SPDX-License-Identifier: MIT */
/* The plugin's decisions, its image file, its /proc readers and the CRIU ABI it declares. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "criu-plugin-abi.h"
#include "gw-test.h"
#include "gwp-image.h"
#include "gwp-pages.h"
#include "gw-ckpt.h"
#include "gwp-plan.h"
#include "gw-proto.h"
#include "gwp-proc.h"

/* Values and layout from CRIU's criu/include/criu-plugin.h (v4.0 .. master). */
GW_TEST(abi_matches_criu)
{
	GW_ASSERT_INT_EQ(GWP_CRIU_PLUGIN_VERSION, (0 << 16) + (2 << 8) + 0);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOK_RESUME_DEVICES_LATE, 9);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOK_PAUSE_DEVICES, 10);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOK_CHECKPOINT_DEVICES, 11);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOKS_3X, 10);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOKS_40, 12);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOKS_42, 13);
	GW_ASSERT_INT_EQ(GWP_CRIU_HOOK_POST_FORKING, 12);
	GW_ASSERT_INT_EQ(GWP_CRIU_STAGE_DUMP, 0);
	GW_ASSERT_INT_EQ(GWP_CRIU_STAGE_PRE_DUMP, 1);
	GW_ASSERT_INT_EQ(GWP_CRIU_STAGE_RESTORE, 2);
	GW_ASSERT_INT_EQ(GWP_CRIU_LOG_ERROR, 1);
	GW_ASSERT_INT_EQ(GWP_CRIU_LOG_DEBUG, 4);
	/* typedef struct { name; init; exit; unsigned version; unsigned max_hooks; void *hooks[]; } */
	GW_ASSERT_INT_EQ(offsetof(struct gwp_criu_plugin_desc, name), 0);
	GW_ASSERT_INT_EQ(offsetof(struct gwp_criu_plugin_desc, init), sizeof(void *));
	GW_ASSERT_INT_EQ(offsetof(struct gwp_criu_plugin_desc, exit), 2 * sizeof(void *));
	GW_ASSERT_INT_EQ(offsetof(struct gwp_criu_plugin_desc, version), 3 * sizeof(void *));
	GW_ASSERT_INT_EQ(offsetof(struct gwp_criu_plugin_desc, max_hooks),
			 3 * sizeof(void *) + sizeof(unsigned));
	GW_ASSERT_INT_EQ(offsetof(struct gwp_criu_plugin_desc, hooks),
			 3 * sizeof(void *) + 2 * sizeof(unsigned));
}

GW_TEST(next_step)
{
	static const struct {
		enum gwp_state cur, target;
		enum gwp_step step;
	} t[] = {
		{ GWP_STATE_RUNNING, GWP_STATE_RUNNING, GWP_STEP_DONE },
		{ GWP_STATE_RUNNING, GWP_STATE_LOCKED, GWP_STEP_LOCK },
		{ GWP_STATE_RUNNING, GWP_STATE_CHECKPOINTED, GWP_STEP_LOCK },
		{ GWP_STATE_LOCKED, GWP_STATE_CHECKPOINTED, GWP_STEP_CHECKPOINT },
		{ GWP_STATE_LOCKED, GWP_STATE_LOCKED, GWP_STEP_DONE },
		{ GWP_STATE_LOCKED, GWP_STATE_RUNNING, GWP_STEP_UNLOCK },
		{ GWP_STATE_CHECKPOINTED, GWP_STATE_RUNNING, GWP_STEP_RESTORE },
		{ GWP_STATE_CHECKPOINTED, GWP_STATE_LOCKED, GWP_STEP_RESTORE },
		{ GWP_STATE_CHECKPOINTED, GWP_STATE_CHECKPOINTED, GWP_STEP_DONE },
		{ GWP_STATE_FAILED, GWP_STATE_RUNNING, GWP_STEP_STUCK },
		{ GWP_STATE_UNKNOWN, GWP_STATE_LOCKED, GWP_STEP_STUCK },
		{ GWP_STATE_RUNNING, GWP_STATE_FAILED, GWP_STEP_STUCK },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		GW_ASSERT_STR_EQ(gwp_step_name(gwp_next_step(t[i].cur, t[i].target)),
				 gwp_step_name(t[i].step));
}

/* The graph the plugin walks is the daemon's: the resume of a locked process is only its unlock. */
GW_TEST(ckpt_next_step)
{
	static const struct {
		CUprocessState cur, target;
		int r;
		enum gw_ckpt_step step; /* with r 1 */
	} t[] = {
		{ CU_PROCESS_STATE_LOCKED, CU_PROCESS_STATE_RUNNING, 1, GW_CKPT_UNLOCK },
		{ CU_PROCESS_STATE_CHECKPOINTED, CU_PROCESS_STATE_RUNNING, 1, GW_CKPT_RESTORE },
		{ CU_PROCESS_STATE_RUNNING, CU_PROCESS_STATE_CHECKPOINTED, 1, GW_CKPT_LOCK },
		{ CU_PROCESS_STATE_RUNNING, CU_PROCESS_STATE_RUNNING, 0, GW_CKPT_CHECKPOINT },
		{ CU_PROCESS_STATE_FAILED, CU_PROCESS_STATE_RUNNING, -EINVAL, GW_CKPT_CHECKPOINT },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		enum gw_ckpt_step step = GW_CKPT_CHECKPOINT;

		GW_ASSERT_INT_EQ(gw_ckpt_next_step(t[i].cur, t[i].target, &step), t[i].r);
		GW_ASSERT_INT_EQ(step, t[i].step); /* untouched unless r is 1 */
	}
}

GW_TEST(state_names)
{
	enum gwp_state s = GWP_STATE_UNKNOWN;

	GW_ASSERT_INT_EQ(gwp_state_parse("checkpointed", &s), 0);
	GW_ASSERT_INT_EQ(s, GWP_STATE_CHECKPOINTED);
	GW_ASSERT_INT_EQ(gwp_state_parse("unknown", &s), -EINVAL);
	GW_ASSERT_INT_EQ(gwp_state_parse(NULL, &s), -EINVAL);
	GW_ASSERT_INT_EQ(s, GWP_STATE_CHECKPOINTED);
	GW_ASSERT_STR_EQ(gwp_state_name(GWP_STATE_LOCKED), "locked");
	GW_ASSERT_STR_EQ(gwp_state_name((enum gwp_state)42), "unknown");
}

GW_TEST(stage_mode)
{
	struct gwp_stage_input in = { .stage = GWP_CRIU_STAGE_DUMP };
	const char *why = "x";

	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_DUMP);
	GW_ASSERT(why == NULL);
	in.stage = GWP_CRIU_STAGE_PRE_DUMP;
	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_OFF);
	GW_ASSERT_STR_CONTAINS(why, "pre-dump");
	in.stage = GWP_CRIU_STAGE_RESTORE;
	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_RESTORE); /* CRIU 4.0: no inventory */
	in.inventory_known = 1;
	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_OFF);
	GW_ASSERT_STR_CONTAINS(why, "not dumped with gpuwarm_plugin");
	in.in_inventory = 1;
	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_RESTORE);
	in.old_criu = 1;
	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_OFF);
	GW_ASSERT_STR_CONTAINS(why, "no device hooks");
	in.old_criu = 0;
	in.stage = 7;
	GW_ASSERT_INT_EQ(gwp_stage_mode(&in, &why), GWP_MODE_OFF);
}

GW_TEST(max_hooks)
{
	GW_ASSERT_INT_EQ(gwp_max_hooks(1, 1, 1), 13); /* CRIU 4.2: POST_FORKING */
	GW_ASSERT_INT_EQ(gwp_max_hooks(1, 1, 0), 12); /* 4.0, 4.1 would reject 13 */
	GW_ASSERT_INT_EQ(gwp_max_hooks(1, 0, 0), 10); /* CRIU 3.x would reject 12 and fail the run */
	GW_ASSERT_INT_EQ(gwp_max_hooks(0, 0, 0), 13); /* not CRIU: nothing to fit */
}

GW_TEST(route)
{
	GW_ASSERT_INT_EQ(gwp_route(GWP_AVAIL_UNTRIED, GWP_AVAIL_UNTRIED),
			 GWP_ROUTE_CONNECT_DAEMON);
	GW_ASSERT_INT_EQ(gwp_route(GWP_AVAIL_UP, GWP_AVAIL_DOWN), GWP_ROUTE_DAEMON);
	GW_ASSERT_INT_EQ(gwp_route(GWP_AVAIL_UP, GWP_AVAIL_UP), GWP_ROUTE_DAEMON);
	GW_ASSERT_INT_EQ(gwp_route(GWP_AVAIL_DOWN, GWP_AVAIL_UNTRIED), GWP_ROUTE_LOAD_DRIVER);
	GW_ASSERT_INT_EQ(gwp_route(GWP_AVAIL_DOWN, GWP_AVAIL_UP), GWP_ROUTE_DRIVER);
	GW_ASSERT_INT_EQ(gwp_route(GWP_AVAIL_DOWN, GWP_AVAIL_DOWN), GWP_ROUTE_NONE);
}

static int leave_running(const char *const *argv)
{
	char buf[512];
	size_t len = 0;

	for (; *argv; argv++) {
		size_t n = strlen(*argv) + 1;

		memcpy(buf + len, *argv, n);
		len += n;
	}
	return gwp_cmdline_leave_running(buf, len);
}

#define ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })

GW_TEST(cmdline_leave_running)
{
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-t", "1", "-D", "d")), 0);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-t", "1", "-R")), 1);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "--leave-running", "-t", "1")), 1);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "-R", "dump", "-t", "1")), 1);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-Rv", "-t", "1")), 1);
	/* -v takes an optional glued value: "-vR" is verbosity "R" to getopt */
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-vR", "-t", "1")), 0);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-jR", "-t", "1")), 1);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-v4", "-t", "1")), 0);
	/* -D takes a value: "-R" is a directory name here, "-tR" is pid "R" */
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-D", "-R", "-t", "1")), 0);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "-tR")), 0);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "--", "-R")), 0);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "dump", "--leave-runnings")), 0);
	/* RPC: the options come over a socket */
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "swrk", "3")), -1);
	GW_ASSERT_INT_EQ(leave_running(ARGV("criu", "service", "--address", "x")), -1);
	GW_ASSERT_INT_EQ(gwp_cmdline_leave_running("", 0), 0);
}

GW_TEST(exit_undo)
{
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_DUMP, 0, 0), 0);
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_DUMP, -1, 0), 1);
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_DUMP, 1, 0), 1);
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_DUMP, 0, 1), 1);
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_DUMP, 0, -1), 1);
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_RESTORE, -1, 1), 0);
	GW_ASSERT_INT_EQ(gwp_exit_needs_undo(GWP_CRIU_STAGE_PRE_DUMP, -1, 1), 0);
}

GW_TEST(lock_timeout)
{
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(0), GWP_LOCK_DEFAULT_TIMEOUT_MS);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(10000), 9000);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(2001), 1001);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(2000), 1000);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(1000), 500);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(1), 1);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(1ul << 40), GW_LOCK_TIMEOUT_MAX_MS);
	GW_ASSERT_INT_EQ(gwp_lock_timeout_ms(3600 * 1000), GW_LOCK_TIMEOUT_MAX_MS); /* criu's
										 * --timeout */
}

#define G0 "GPU-fa4ec0da-0000-4000-8000-000000000000"
#define G1 "GPU-fa4ec0da-0000-4000-8000-000000000001"
#define G2 "GPU-fa4ec0da-0000-4000-8000-000000000002"
#define G3 "GPU-fa4ec0da-0000-4000-8000-000000000003"

GW_TEST(plan_pairs)
{
	char src[2][GWP_UUID_LEN] = { G0, G1 };
	struct gwp_gpu gpus[4] = { { G0, 1 }, { G1, 1 }, { G2, 1 }, { G3, 1 } };
	struct gwp_pair pairs[4];
	unsigned n = 99;

	/* every source usable: plain restore */
	GW_ASSERT_INT_EQ(gwp_plan_pairs((const char(*)[GWP_UUID_LEN])src, 2, gpus, 4, pairs, 4, &n),
			 0);
	GW_ASSERT_INT_EQ(n, 0);
	/* G0 drained: G0 -> G2 (not a source), G1 stays with an identity pair */
	gpus[0].usable = 0;
	GW_ASSERT_INT_EQ(gwp_plan_pairs((const char(*)[GWP_UUID_LEN])src, 2, gpus, 4, pairs, 4, &n),
			 0);
	GW_ASSERT_INT_EQ(n, 2);
	GW_ASSERT_STR_EQ(pairs[0].old_uuid, G0);
	GW_ASSERT_STR_EQ(pairs[0].new_uuid, G2);
	GW_ASSERT_STR_EQ(pairs[1].old_uuid, G1);
	GW_ASSERT_STR_EQ(pairs[1].new_uuid, G1);
	/* both gone (absent from the list): G2 and G3, in order */
	GW_ASSERT_INT_EQ(gwp_plan_pairs((const char(*)[GWP_UUID_LEN])src, 2, gpus + 2, 2, pairs, 4,
					&n), 0);
	GW_ASSERT_INT_EQ(n, 2);
	GW_ASSERT_STR_EQ(pairs[0].new_uuid, G2);
	GW_ASSERT_STR_EQ(pairs[1].new_uuid, G3);
	/* not enough free GPUs: untouched outputs */
	gpus[2].usable = 0;
	gpus[3].usable = 0;
	n = 77;
	GW_ASSERT_INT_EQ(gwp_plan_pairs((const char(*)[GWP_UUID_LEN])src, 2, gpus, 4, pairs, 4, &n),
			 -ENODEV);
	GW_ASSERT_INT_EQ(n, 77);
	/* case-insensitive UUIDs; no sources at all */
	gpus[0].usable = 1;
	snprintf(src[0], GWP_UUID_LEN, "%s", "GPU-FA4EC0DA-0000-4000-8000-000000000000");
	GW_ASSERT_INT_EQ(gwp_plan_pairs((const char(*)[GWP_UUID_LEN])src, 2, gpus, 4, pairs, 4, &n),
			 0);
	GW_ASSERT_INT_EQ(n, 0);
	GW_ASSERT_INT_EQ(gwp_plan_pairs(NULL, 0, gpus, 4, pairs, 4, &n), 0);
	GW_ASSERT_INT_EQ(n, 0);
	/* output too small */
	gpus[0].usable = 0;
	gpus[2].usable = 1;
	GW_ASSERT_INT_EQ(gwp_plan_pairs((const char(*)[GWP_UUID_LEN])src, 2, gpus, 4, pairs, 1, &n),
			 -EINVAL);
}

static struct gwp_image sample(void)
{
	struct gwp_image img = { .pid = 1234, .vpid = 7, .restore_tid = 1240, .restore_vtid = 13,
				 .state = GWP_STATE_LOCKED, .ngpus = 2 };

	snprintf(img.gpus[0].uuid, GWP_UUID_LEN, G0);
	snprintf(img.gpus[0].pci, GWP_PCI_LEN, "0000:3b:00.0");
	snprintf(img.gpus[1].uuid, GWP_UUID_LEN, G1);
	snprintf(img.gpus[1].pci, GWP_PCI_LEN, "0000:3c:00.0");
	return img;
}

GW_TEST(image_roundtrip)
{
	struct gwp_image img = sample(), back;
	char *text = gwp_image_encode(&img);

	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(gwp_image_parse(text, strlen(text), &back), 0);
	free(text);
	GW_ASSERT_INT_EQ(back.pid, 1234);
	GW_ASSERT_INT_EQ(back.vpid, 7);
	GW_ASSERT_INT_EQ(back.restore_tid, 1240);
	GW_ASSERT_INT_EQ(back.restore_vtid, 13);
	GW_ASSERT_INT_EQ(back.state, GWP_STATE_LOCKED);
	GW_ASSERT_INT_EQ(back.ngpus, 2);
	GW_ASSERT_STR_EQ(back.gpus[1].uuid, G1);
	GW_ASSERT_STR_EQ(back.gpus[1].pci, "0000:3c:00.0");
}

GW_TEST(image_rejects_bad_input)
{
	static const char *const bad[] = {
		"",
		"[]",
		"{\"format\":2,\"pid\":1,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"running\",\"gpus\":[]}",
		"{\"format\":1,\"pid\":0,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"running\",\"gpus\":[]}",
		"{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"sleeping\",\"gpus\":[]}",
		"{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"running\"}",
		"{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"running\",\"gpus\":[{\"uuid\":\"nope\",\"pci_bus_id\":\"\"}]}",
		"{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"running\",\"gpus\":[{\"uuid\":\"GPU-" "0123456789012345678901234567890123456"
		"7890123456789\",\"pci_bus_id\":\"\"}]}",
		"{\"format\":1,\"pid\":99999999,\"vpid\":1,\"restore_tid\":2,\"restore_vtid\":2,"
		"\"state\":\"running\",\"gpus\":[]}",
	};
	struct gwp_image img = sample(), keep = img;
	char many[4096];
	int n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		GW_ASSERT_INT_EQ(gwp_image_parse(bad[i], strlen(bad[i]), &img), -EBADMSG);
		GW_ASSERT_INT_EQ(img.pid, keep.pid);
	}
	/* more GPUs than an image holds */
	n = snprintf(many, sizeof(many), "{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,"
		     "\"restore_vtid\":2,\"state\":\"running\",\"gpus\":[");
	for (int i = 0; i <= GWP_IMAGE_MAX_GPUS; i++)
		n += snprintf(many + n, sizeof(many) - (size_t)n, "%s{\"uuid\":\"%s\","
			      "\"pci_bus_id\":\"\"}", i ? "," : "", G0);
	snprintf(many + n, sizeof(many) - (size_t)n, "]}");
	GW_ASSERT_INT_EQ(gwp_image_parse(many, strlen(many), &img), -EBADMSG);
}

GW_TEST(image_files)
{
	char dir[] = "/tmp/gwp-image-XXXXXX", path[128], to[128];
	struct gwp_image img = sample(), back;
	int fd;

	GW_ASSERT(mkdtemp(dir));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(fd >= 0);
	GW_ASSERT_INT_EQ(gwp_image_read(fd, 1234, &back), -ENOENT);
	GW_ASSERT_INT_EQ(gwp_image_write(fd, &img), 0);
	snprintf(path, sizeof(path), "%s/gpuwarm-1234.json", dir);
	GW_ASSERT(access(path, R_OK) == 0);
	GW_ASSERT_INT_EQ(gwp_image_read(fd, 1234, &back), 0);
	GW_ASSERT_INT_EQ(back.restore_tid, 1240);
	/* restored under another host pid: found by the pid inside the namespace */
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, NULL, 7, &back), 0);
	GW_ASSERT_INT_EQ(back.pid, 1234);
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, NULL, 8, &back), -ENOENT);
	/* two candidates: ambiguous */
	img.pid = 4321;
	GW_ASSERT_INT_EQ(gwp_image_write(fd, &img), 0);
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, NULL, 7, &back), -ENOTUNIQ);
	/* a file whose pid does not match its name */
	snprintf(path, sizeof(path), "%s/gpuwarm-4321.json", dir);
	snprintf(to, sizeof(to), "%s/gpuwarm-55.json", dir);
	GW_ASSERT(rename(path, to) == 0);
	GW_ASSERT_INT_EQ(gwp_image_read(fd, 55, &back), -EBADMSG);
	close(fd);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	GW_ASSERT(system(path) == 0);
}

/* The VRAM image's files: created as a set (old ones gone), opened back by what the head says,
 * removed as a set. */
GW_TEST(vram_files)
{
	char dir[] = "/tmp/gwp-image-XXXXXX", path[128], err[256];
	int dfd, fds[GWP_VRAM_MAX_FILES];
	struct gwp_store none;
	unsigned n = 0;

	gwp_store_init(&none);
	GW_ASSERT(mkdtemp(dir));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(dfd >= 0);
	GW_ASSERT_INT_EQ(gwp_vram_files_open(dfd, 77, 0, &none, fds, GWP_VRAM_MAX_FILES, &n, err,
					     sizeof(err)), -ENOENT);
	GW_ASSERT_STR_CONTAINS(err, "gpuwarm-vram-77.img");
	/* a stale segment of an earlier dump with more segments goes too */
	snprintf(path, sizeof(path), "%s/gpuwarm-vram-77.img.seg-12", dir);
	close(open(path, O_RDWR | O_CREAT, 0600));
	GW_ASSERT_INT_EQ(gwp_vram_files_open(dfd, 77, 1, &none, fds, GWP_VRAM_MAX_FILES, &n, err,
					     sizeof(err)), 0);
	GW_ASSERT_INT_EQ(n, 1 + GWP_VRAM_SEGMENTS);
	GW_ASSERT(access(path, F_OK) < 0);
	for (unsigned i = 0; i < n; i++)
		GW_ASSERT((fcntl(fds[i], F_GETFL) & O_ACCMODE) == O_RDWR);
	gwp_vram_files_close(fds, n);
	snprintf(path, sizeof(path), "%s/gpuwarm-vram-77.img.seg-7", dir);
	GW_ASSERT(access(path, F_OK) == 0);
	/* creating again while they exist: the old set is replaced */
	GW_ASSERT_INT_EQ(gwp_vram_files_open(dfd, 77, 1, &none, fds, GWP_VRAM_MAX_FILES, &n, err,
					     sizeof(err)), 0);
	gwp_vram_files_close(fds, n);
	/* an empty head (no image in it): opened alone, gpu-warmd will say why */
	GW_ASSERT_INT_EQ(gwp_vram_files_open(dfd, 77, 0, &none, fds, GWP_VRAM_MAX_FILES, &n, err,
					     sizeof(err)), 0);
	GW_ASSERT_INT_EQ(n, 1);
	gwp_vram_files_close(fds, n);
	GW_ASSERT_INT_EQ(gwp_vram_files_unlink(dfd, 77, &none), 0);
	GW_ASSERT(access(path, F_OK) < 0);
	snprintf(path, sizeof(path), "%s/gpuwarm-vram-77.img", dir);
	GW_ASSERT(access(path, F_OK) < 0);
	close(dfd);
	GW_ASSERT(rmdir(dir) == 0);
}

static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	GW_ASSERT(d);
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* With a VRAM store, the segments are made there and linked from the images directory; a
 * restore opens them through the links, and removing the set removes the store's files too. */
GW_TEST(vram_files_in_a_store)
{
	char dir[] = "/tmp/gwp-image-XXXXXX", st[] = "/tmp/gwp-store-XXXXXX", err[512];
	char path[256], target[512];
	int dfd, fds[GWP_VRAM_MAX_FILES];
	struct gwp_store store;
	unsigned n = 0;
	ssize_t len;

	GW_ASSERT(mkdtemp(dir) && mkdtemp(st));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(dfd >= 0);
	GW_ASSERT_INT_EQ(gwp_store_open(&store, st, err, sizeof(err)), 0);
	GW_ASSERT_INT_EQ(gwp_vram_files_open(dfd, 5, 1, &store, fds, GWP_VRAM_MAX_FILES, &n, err,
					     sizeof(err)), 0);
	GW_ASSERT_INT_EQ(n, 1 + GWP_VRAM_SEGMENTS);
	GW_ASSERT(write(fds[1], "seg", 3) == 3);
	gwp_vram_files_close(fds, n);
	GW_ASSERT_INT_EQ(count_files(st), GWP_VRAM_SEGMENTS);
	/* the head is a file here, each segment a link into the store */
	snprintf(path, sizeof(path), "%s/gpuwarm-vram-5.img", dir);
	GW_ASSERT(readlink(path, target, sizeof(target)) < 0 && access(path, F_OK) == 0);
	snprintf(path, sizeof(path), "%s/gpuwarm-vram-5.img.seg-0", dir);
	len = readlink(path, target, sizeof(target) - 1);
	GW_ASSERT(len > 0);
	target[len] = '\0';
	GW_ASSERT(strncmp(target, st, strlen(st)) == 0 && target[strlen(st)] == '/');
	/* opened back through the link: the same file */
	{
		int fd = gwp_store_open_file(&store, dfd, "gpuwarm-vram-5.img.seg-0", err, sizeof(err));
		char buf[4] = "";

		GW_ASSERT(fd >= 0);
		GW_ASSERT(read(fd, buf, 3) == 3 && memcmp(buf, "seg", 3) == 0);
		close(fd);
	}
	/* without the store, or with another one, the link is refused, saying why */
	{
		struct gwp_store none;

		gwp_store_init(&none);
		GW_ASSERT(gwp_store_open_file(&none, dfd, "gpuwarm-vram-5.img.seg-0", err,
					      sizeof(err)) == -EPERM);
		GW_ASSERT_STR_CONTAINS(err, "no VRAM store");
	}
	/* a link out of the store, a link with a path in the store, a FIFO: refused */
	GW_ASSERT(symlinkat("/etc/passwd", dfd, "evil-1") == 0);
	GW_ASSERT(gwp_store_open_file(&store, dfd, "evil-1", err, sizeof(err)) == -EPERM);
	GW_ASSERT_STR_CONTAINS(err, "not a file of gpu-warmd's VRAM store");
	snprintf(target, sizeof(target), "%s/../etc/passwd", st);
	GW_ASSERT(symlinkat(target, dfd, "evil-2") == 0);
	GW_ASSERT(gwp_store_open_file(&store, dfd, "evil-2", err, sizeof(err)) == -EPERM);
	GW_ASSERT(mkfifoat(dfd, "evil-3", 0600) == 0);
	GW_ASSERT(gwp_store_open_file(&store, dfd, "evil-3", err, sizeof(err)) == -EINVAL);
	GW_ASSERT_STR_CONTAINS(err, "not a regular file");
	/* a store file that is gone: the error names the link and its target */
	snprintf(path, sizeof(path), "%s/gpuwarm-vram-5.img.seg-1", dir);
	len = readlink(path, target, sizeof(target) - 1);
	GW_ASSERT(len > 0);
	target[len] = '\0';
	GW_ASSERT(unlink(target) == 0);
	GW_ASSERT_INT_EQ(gwp_store_open_file(&store, dfd, "gpuwarm-vram-5.img.seg-1", err,
					     sizeof(err)), -ENOENT);
	GW_ASSERT_STR_CONTAINS(err, "a link to");
	/* removing the set removes the store's files */
	GW_ASSERT_INT_EQ(gwp_vram_files_unlink(dfd, 5, &store), 0);
	GW_ASSERT_INT_EQ(count_files(st), 0);
	GW_ASSERT_INT_EQ(gwp_store_unlink(&store, dfd, "evil-1"), 0); /* the link only */
	GW_ASSERT(access("/etc/passwd", F_OK) == 0);
	unlinkat(dfd, "evil-2", 0);
	unlinkat(dfd, "evil-3", 0);
	gwp_store_close(&store);
	gwp_store_close(&store); /* twice: a no-op */
	close(dfd);
	GW_ASSERT(rmdir(dir) == 0 && rmdir(st) == 0);
}

/* CRIU's page images, moved into a store in st from the images in dir: each becomes a link
 * into st with its bytes whole; a second move, a link or another file changes nothing; the
 * links' removal takes the store's files with them. */
static void pages_through_store(const char *dir, const char *st)
{
	char err[512], path[512], target[512], buf[8] = "";
	struct gwp_store store;
	unsigned files = 0;
	uint64_t bytes = 0;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd;
	ssize_t len;

	GW_ASSERT(dfd >= 0);
	GW_ASSERT_INT_EQ(gwp_store_open(&store, st, err, sizeof(err)), 0);
	for (int i = 1; i <= 2; i++) {
		snprintf(path, sizeof(path), "pages-%d.img", i);
		fd = openat(dfd, path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		GW_ASSERT(fd >= 0 && write(fd, i == 1 ? "pages-1" : "pages-2", 7) == 7);
		close(fd);
	}
	fd = openat(dfd, "pagemap-1.img", O_WRONLY | O_CREAT | O_EXCL, 0600);
	GW_ASSERT(fd >= 0);
	close(fd);
	GW_ASSERT(!gwp_pages_has_links(dfd));
	GW_ASSERT_INT_EQ(gwp_pages_to_store(&store, dfd, &files, &bytes, err, sizeof(err)), 0);
	GW_ASSERT_INT_EQ(files, 2);
	GW_ASSERT_INT_EQ(bytes, 14);
	GW_ASSERT_INT_EQ(count_files(st), 2);
	GW_ASSERT(gwp_pages_has_links(dfd));
	snprintf(path, sizeof(path), "%s/pages-2.img", dir);
	len = readlink(path, target, sizeof(target) - 1);
	GW_ASSERT(len > 0);
	target[len] = '\0';
	/* absolute, as podman's --import takes it */
	GW_ASSERT(strncmp(target, st, strlen(st)) == 0 && target[strlen(st)] == '/');
	/* a restore makes it relative: up to / (40 times ".."), then the store's path */
	GW_ASSERT_INT_EQ(gwp_pages_relink(&store, dfd, &files, err, sizeof(err)), 0);
	GW_ASSERT_INT_EQ(files, 2);
	len = readlink(path, target, sizeof(target) - 1);
	GW_ASSERT(len > 0);
	target[len] = '\0';
	GW_ASSERT(strncmp(target, "../../", 6) == 0);
	GW_ASSERT(strstr(target, st + 1) == target + 3 * GWP_STORE_LINK_UPS);
	GW_ASSERT_INT_EQ(gwp_pages_relink(&store, dfd, &files, err, sizeof(err)), 0);
	GW_ASSERT_INT_EQ(files, 0); /* relative already */
	fd = open(path, O_RDONLY); /* as CRIU opens it: through the link */
	GW_ASSERT(fd >= 0 && read(fd, buf, 7) == 7 && memcmp(buf, "pages-2", 7) == 0);
	close(fd);
	fd = gwp_store_open_file(&store, dfd, "pages-2.img", err, sizeof(err)); /* a store file */
	GW_ASSERT(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/pagemap-1.img", dir);
	GW_ASSERT(readlink(path, target, sizeof(target)) < 0); /* not a page image: stays */
	GW_ASSERT_INT_EQ(gwp_pages_to_store(&store, dfd, &files, &bytes, err, sizeof(err)), 0);
	GW_ASSERT_INT_EQ(files, 0);
	GW_ASSERT_INT_EQ(count_files(st), 2);
	/* before the next dump: links and store files go, the rest stays */
	GW_ASSERT_INT_EQ(gwp_pages_unlink_links(&store, dfd), 2);
	GW_ASSERT_INT_EQ(count_files(st), 0);
	GW_ASSERT(!gwp_pages_has_links(dfd));
	GW_ASSERT(unlinkat(dfd, "pagemap-1.img", 0) == 0);
	gwp_store_close(&store);
	close(dfd);
}

GW_TEST(page_images_move_into_a_store)
{
	char dir[] = "/tmp/gwp-image-XXXXXX", st[] = "/tmp/gwp-store-XXXXXX";
	char shm[] = "/dev/shm/gwp-store-XXXXXX", err[256];
	struct stat a, b;
	struct gwp_store none;
	unsigned files = 9;
	uint64_t bytes = 9;
	int dfd;

	GW_ASSERT(mkdtemp(dir) && mkdtemp(st));
	pages_through_store(dir, st); /* one file system: hard links */
	GW_ASSERT(rmdir(st) == 0);
	/* a store on another file system: copies */
	if (mkdtemp(shm) && stat(shm, &a) == 0 && stat(dir, &b) == 0 && a.st_dev != b.st_dev)
		pages_through_store(dir, shm);
	else
		printf("# /dev/shm is on the images' file system here: the copy is not tested\n");
	rmdir(shm);
	/* without a store nothing moves */
	gwp_store_init(&none);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(dfd >= 0);
	GW_ASSERT(close(openat(dfd, "pages-1.img", O_WRONLY | O_CREAT, 0600)) == 0);
	GW_ASSERT_INT_EQ(gwp_pages_to_store(&none, dfd, &files, &bytes, err, sizeof(err)), 0);
	GW_ASSERT(files == 0 && bytes == 0);
	GW_ASSERT(unlinkat(dfd, "pages-1.img", 0) == 0);
	close(dfd);
	GW_ASSERT(rmdir(dir) == 0);
	GW_ASSERT(gwp_pages_is_image_name("pages-12.img") && !gwp_pages_is_image_name("pages-.img") &&
		  !gwp_pages_is_image_name("pages-1.img.x") && !gwp_pages_is_image_name("pages-a.img"));
}

/* A store directory others may write, a relative path or one through "..", is refused (the
 * daemon's rules: gw-privdir.h). */
GW_TEST(vram_store_must_be_private)
{
	char st[] = "/tmp/gwp-store-XXXXXX", err[1024], up[64];
	struct gwp_store store;

	GW_ASSERT(mkdtemp(st));
	GW_ASSERT(chmod(st, 0777) == 0);
	GW_ASSERT_INT_EQ(gwp_store_open(&store, st, err, sizeof(err)), -EPERM);
	GW_ASSERT_STR_CONTAINS(err, "writable by no one else");
	GW_ASSERT(store.fd < 0);
	GW_ASSERT_INT_EQ(gwp_store_open(&store, "relative/dir", err, sizeof(err)), -EINVAL);
	snprintf(up, sizeof(up), "%s/../%s", st, st + 5);
	GW_ASSERT_INT_EQ(gwp_store_open(&store, up, err, sizeof(err)), -EINVAL);
	GW_ASSERT_INT_EQ(gwp_store_open(&store, "/nonexistent-gwp-store", err, sizeof(err)),
			 -ENOENT);
	GW_ASSERT(rmdir(st) == 0);
}

/* Records of two dumps into one directory (podman's checkpoint --keep). */
GW_TEST(image_dumps)
{
	char dir[] = "/tmp/gwp-image-XXXXXX", path[128], d1[GWP_DUMP_ID_LEN], d2[GWP_DUMP_ID_LEN];
	char got[GWP_DUMP_ID_LEN];
	struct gwp_image img = sample(), back;
	struct gwp_store none;
	char *text;
	int fd;

	gwp_store_init(&none);
	gwp_dump_id_new(d1, sizeof(d1));
	gwp_dump_id_new(d2, sizeof(d2));
	GW_ASSERT_INT_EQ(strlen(d1), 32);
	GW_ASSERT(strspn(d1, "0123456789abcdef") == 32);
	GW_ASSERT(strcmp(d1, d2) != 0);
	GW_ASSERT(mkdtemp(dir));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(fd >= 0);

	/* the id goes through the record; records without one parse as before */
	snprintf(img.dump, sizeof(img.dump), "%s", d1);
	text = gwp_image_encode(&img);
	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(gwp_image_parse(text, strlen(text), &back), 0);
	GW_ASSERT_STR_EQ(back.dump, d1);
	free(text);
	{
		static const char old[] = "{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,"
					  "\"restore_vtid\":2,\"state\":\"running\",\"gpus\":[]}";
		static const char bad[] = "{\"format\":1,\"pid\":1,\"vpid\":1,\"restore_tid\":2,"
					  "\"restore_vtid\":2,\"state\":\"running\",\"gpus\":[],"
					  "\"dump\":7}";

		GW_ASSERT_INT_EQ(gwp_image_parse(old, strlen(old), &back), 0);
		GW_ASSERT_STR_EQ(back.dump, "");
		GW_ASSERT_INT_EQ(gwp_image_parse(bad, strlen(bad), &back), -EBADMSG);
	}

	/* dump 1: pid 1234, vpid 7; dump 2: the same process (vpid 7) as host pid 2000 */
	GW_ASSERT_INT_EQ(gwp_dump_marked(fd, got, sizeof(got)), -ENOENT);
	GW_ASSERT_INT_EQ(gwp_image_write(fd, &img), 0);
	GW_ASSERT_INT_EQ(gwp_dump_mark(fd, d1), 0);
	img.pid = 2000;
	snprintf(img.dump, sizeof(img.dump), "%s", d2);
	GW_ASSERT_INT_EQ(gwp_image_write(fd, &img), 0);
	/* an unparseable record, and a legacy one without a dump id, also for vpid 7 */
	snprintf(path, sizeof(path), "%s/gpuwarm-3000.json", dir);
	{
		FILE *f = fopen(path, "w");

		GW_ASSERT(f);
		fputs("{\"format\":1,\"pid\":3000,\"vpid\":7,\"restore_tid\":2,\"restore_vtid\":2,"
		      "\"state\":\"running\",\"gpus\":[]}", f);
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/gpuwarm-3001.json", dir);
	{
		FILE *f = fopen(path, "w");

		GW_ASSERT(f);
		fputs("not json", f);
		fclose(f);
	}
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, NULL, 7, &back), -ENOTUNIQ);
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, d1, 7, &back), 0);
	GW_ASSERT_INT_EQ(back.pid, 1234);
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, d2, 7, &back), 0);
	GW_ASSERT_INT_EQ(back.pid, 2000);

	/* dump 2 completes: everything but its own record goes, and it is the marked one */
	GW_ASSERT_INT_EQ(gwp_image_remove_stale(fd, d2, &none), 3);
	GW_ASSERT_INT_EQ(gwp_dump_mark(fd, d2), 0);
	GW_ASSERT_INT_EQ(gwp_dump_marked(fd, got, sizeof(got)), 0);
	GW_ASSERT_STR_EQ(got, d2);
	GW_ASSERT_INT_EQ(gwp_image_read(fd, 1234, &back), -ENOENT);
	GW_ASSERT_INT_EQ(gwp_image_read(fd, 2000, &back), 0);
	GW_ASSERT_INT_EQ(gwp_image_find_vpid(fd, NULL, 7, &back), 0);
	GW_ASSERT_INT_EQ(gwp_image_remove_stale(fd, d2, &none), 0);

	/* a broken gpuwarm-dump.json is not taken for a dump */
	snprintf(path, sizeof(path), "%s/" GWP_DUMP_FILE, dir);
	{
		FILE *f = fopen(path, "w");

		GW_ASSERT(f);
		fputs("{\"format\":1,\"dump\":\"\"}", f);
		fclose(f);
	}
	GW_ASSERT_INT_EQ(gwp_dump_marked(fd, got, sizeof(got)), -EBADMSG);
	close(fd);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	GW_ASSERT(system(path) == 0);
}

static int self_seccomp(void)
{
	char line[256];
	int mode = 0;
	FILE *f = fopen("/proc/self/status", "r");

	GW_ASSERT(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	fclose(f);
	return mode != 0;
}

GW_TEST(proc_readers)
{
	pid_t inner = 0, tid = 0;

	GW_ASSERT_INT_EQ(gwp_proc_inner_tid("/proc", getpid(), getpid(), &inner), 0);
	GW_ASSERT(inner > 0); /* == getpid() unless the test runs in a pid namespace */
	GW_ASSERT_INT_EQ(gwp_proc_find_inner_tid("/proc", getpid(), inner, &tid), 0);
	GW_ASSERT_INT_EQ(tid, getpid());
	GW_ASSERT_INT_EQ(gwp_proc_find_inner_tid("/proc", getpid(), 4194304, &tid), -ENOENT);
	GW_ASSERT_INT_EQ(gwp_proc_inner_tid("/proc", getpid(), 4194304, &inner), -ENOENT);
	GW_ASSERT_INT_EQ(gwp_proc_seccomp("/proc", getpid(), getpid()), self_seccomp());
	GW_ASSERT_INT_EQ(gwp_proc_has_thread("/proc", getpid(), getpid()), 1);
	GW_ASSERT_INT_EQ(gwp_proc_has_thread("/proc", getpid(), 4194304), 0);
}

GW_TEST_MAIN();
