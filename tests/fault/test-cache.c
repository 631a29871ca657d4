/* SPDX-License-Identifier: MIT */
/*
 * The image cache (daemon/imagecache.h) end to end over the fake driver: a dump into a file is
 * cached too and a resume of that file is filled from RAM; a file written, touched or replaced
 * after the dump is never served from the cache; a full cache is evicted least recently used
 * first, for a new dump and for a suspend into the pool; a restarted daemon restores from the
 * file; `warmctl images` list, drop and load; other uids' entries stay invisible.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-client.h"
#include "gw-proto.h"
#include "gw-test.h"
#include "harness.h"

#define MIB (1u << 20)
#define UID_A 60001
#define UID_B 60002

/* 64 MiB of data (one pool block) and 32 MiB of zeros. */
static void start_app(const struct gwt_daemon *d, struct gwt_app *app)
{
	gwt_app_start_shimmed(d, app, 96,
			      GWT_ARGS("--mib", "64", "--zero-mib", "32", "--chunk-mib", "32"));
}

static void start_daemon(struct gwt_daemon *d, const char *pool_mib, const char *cache_mib)
{
	gwt_daemon_start(d, GWT_ARGS("--chunk-kib", "1024", "--image-pool-mib", pool_mib,
				     "--image-cache-mib", cache_mib));
}

static const char *path_of(const char *name)
{
	static char paths[8][512];
	static unsigned next;
	char *path = paths[next++ % 8];

	snprintf(path, 512, "%s/%s", gwt_dir(), name);
	return path;
}

static void verify(struct gwt_app *app)
{
	char line[256];

	if (!gwt_app_verify(app, line, sizeof(line)))
		GW_FAIL("app verify: %s", line);
}

static void suspend_to(const struct gwt_daemon *d, const struct gwt_app *app, const char *path,
		       const char *segments)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("suspend", gwt_pid(app->pid), "--image", path,
					  "--segments", segments));

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.image"), "file");
	cJSON_Delete(j);
}

/* `warmctl images` as root once `ready` entries are ready and none is being filled. */
static cJSON *wait_entries(const struct gwt_daemon *d, int ready)
{
	for (int i = 0; i < 500; i++) {
		cJSON *j = gwt_ctl(d, 0, GWT_ARGS("images")), *e;
		int n = 0, filling = 0;

		cJSON_ArrayForEach(e, gwt_json(j, "result.entries")) {
			if (strcmp(gwt_json_str(e, "state"), "ready") == 0)
				n++;
			else
				filling++;
		}
		if (n == ready && !filling && gwt_json_num(j, "result.stats.fills_running") == 0)
			return j;
		cJSON_Delete(j);
		gwt_sleep_ms(20);
	}
	GW_FAIL("the cache never held %d entries:\n%s", ready, gwt_daemon_log(d));
	return NULL;
}

static double stat_of(const struct gwt_daemon *d, const char *what)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("status"));
	char path[128];
	double v;

	snprintf(path, sizeof(path), "result.image_pool.cache.%s", what);
	v = gwt_json_num(j, path);
	cJSON_Delete(j);
	return v;
}

/* Resume from path; returns whether the reply says the cache served it. */
static int resume_from(const struct gwt_daemon *d, struct gwt_app *app, const char *path)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("resume", gwt_pid(app->pid), "--image", path));
	const cJSON *hit = gwt_json(j, "result.image_cache");
	int cached = cJSON_IsString(hit) && strcmp(hit->valuestring, "hit") == 0;
	int step = 0;
	const cJSON *s;

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
	cJSON_ArrayForEach(s, gwt_json(j, "result.steps"))
		if (strcmp(gwt_json_str(s, "step"), "cache hit") == 0)
			step = 1;
	GW_ASSERT_INT_EQ(step, cached);
	cJSON_Delete(j);
	verify(app);
	return cached;
}

static void copy_file(const char *from, const char *to)
{
	char buf[1 << 16];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ssize_t n;

	GW_ASSERT(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		GW_ASSERT(write(out, buf, (size_t)n) == n);
	close(in);
	close(out);
}

GW_TEST(cache_dump_is_cached_and_resume_hits)
{
	const char *path = path_of("hit.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "4");
	j = wait_entries(&d, 1);
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.entries.0.origin"), "dump");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.entries.0.data_bytes"), 64 * MIB);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.entries.0.files"), 5);
	cJSON_Delete(j);
	GW_ASSERT(resume_from(&d, &app, path));
	GW_ASSERT_INT_EQ(stat_of(&d, "hits"), 1);
	GW_ASSERT_INT_EQ(stat_of(&d, "entries"), 1);
	/* The data was the pool's only while the resume read it. */
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.image_pool.free_bytes"), 192 * MIB);
	cJSON_Delete(j);
	{
		char out[65536], err[1024];

		GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
					    GWT_ARGS(getenv("GW_WARMCTL"), "--socket", d.socket,
						     "metrics")), 0);
		GW_ASSERT_STR_CONTAINS(out, "gpuwarm_image_cache_hits_total 1\n");
		GW_ASSERT_STR_CONTAINS(out, "gpuwarm_image_cache_entries 1\n");
	}
	/* A single-file (version 1) image too, resumed by pid alone (the held fd). */
	suspend_to(&d, &app, path_of("one.img"), "1");
	cJSON_Delete(wait_entries(&d, 2));
	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.image_cache"), "hit");
	cJSON_Delete(j);
	verify(&app);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

/* gpuwarm.Prefill of path (a single-file image), as CRIU's plugin asks at POST_FORKING. */
static cJSON *prefill(const struct gwt_daemon *d, const char *path)
{
	struct gw_client_error err;
	struct gw_client *c;
	cJSON *params = cJSON_CreateObject(), *result = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	GW_ASSERT(fd >= 0 && params);
	cJSON_AddNumberToObject(params, "image_fd", 0);
	GW_ASSERT_INT_EQ(gw_client_connect(d->socket, "gwt-prefill", 5000, &c, &err), 0);
	if (gw_client_call(c, GW_METHOD_PREFILL, params, &fd, 1, 20000, &result, NULL, NULL,
			   &err) < 0)
		GW_FAIL("prefill: %s %s", err.name, err.message);
	gw_client_close(c);
	cJSON_Delete(params);
	close(fd);
	return result;
}

/* CRIU's way: the prefill fills from the cache, and the resume's reply says so. */
GW_TEST(cache_serves_the_prefill_and_the_resume_says_so)
{
	const char *path = path_of("criu.img");
	struct gwt_daemon d;
	struct gwt_app app;
	const cJSON *s;
	int step = 0;
	cJSON *j;

	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "1");
	cJSON_Delete(wait_entries(&d, 1));
	j = prefill(&d, path);
	cJSON_ArrayForEach(s, gwt_json(j, "steps"))
		if (strcmp(gwt_json_str(s, "step"), "cache hit") == 0)
			step = 1;
	GW_ASSERT(step);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "result.prefilled")));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.image_cache"), "hit");
	cJSON_Delete(j);
	verify(&app);
	GW_ASSERT_INT_EQ(stat_of(&d, "hits"), 1);
	GW_ASSERT_INT_EQ(stat_of(&d, "entries"), 1); /* unpinned, still there */
	j = gwt_ctl(&d, 0, GWT_ARGS("images"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.entries.0.in_use"), 0);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

GW_TEST(cache_never_serves_a_file_written_after_the_dump)
{
	const char *path = path_of("stale.img");
	struct gwt_daemon d;
	struct gwt_app app;
	struct stat st;
	char byte, flipped;
	int fd;
	cJSON *j;

	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "1");
	cJSON_Delete(wait_entries(&d, 1));
	/* One data byte changed: the file's data is now bad; the cache's copy is not, but it
	 * must not be used: the resume reads the file and refuses it. */
	GW_ASSERT(stat(path, &st) == 0);
	fd = open(path, O_RDWR);
	GW_ASSERT(fd >= 0 && pread(fd, &byte, 1, st.st_size - 1) == 1);
	flipped = (char)(byte ^ 0x5a);
	GW_ASSERT(pwrite(fd, &flipped, 1, st.st_size - 1) == 1);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--image", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(stat_of(&d, "hits"), 0);
	/* The byte put back: the data is the dump's again, but the file was written since: still
	 * read from the file (and good). */
	GW_ASSERT(pwrite(fd, &byte, 1, st.st_size - 1) == 1);
	close(fd);
	GW_ASSERT(!resume_from(&d, &app, path));
	GW_ASSERT_INT_EQ(stat_of(&d, "hits"), 0);
	GW_ASSERT(stat_of(&d, "misses") >= 2);

	/* Touched only (times changed, same bytes): a miss too. */
	suspend_to(&d, &app, path_of("touched.img"), "2");
	cJSON_Delete(wait_entries(&d, 1)); /* the stale entry went, the new one came */
	GW_ASSERT(utimensat(AT_FDCWD, path_of("touched.img"), NULL, 0) == 0);
	GW_ASSERT(!resume_from(&d, &app, path_of("touched.img")));
	GW_ASSERT_INT_EQ(stat_of(&d, "hits"), 0);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

GW_TEST(cache_never_serves_a_replaced_file)
{
	const char *path = path_of("replaced.img"), *copy = path_of("replaced.img.new");
	struct gwt_daemon d;
	struct gwt_app app;

	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "1");
	cJSON_Delete(wait_entries(&d, 1));
	/* The same bytes under the same name, in a new inode. */
	copy_file(path, copy);
	GW_ASSERT(rename(copy, path) == 0);
	GW_ASSERT(!resume_from(&d, &app, path));
	GW_ASSERT_INT_EQ(stat_of(&d, "hits"), 0);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

static double entry_id(const cJSON *j, int i)
{
	char path[64];

	snprintf(path, sizeof(path), "result.entries.%d.id", i);
	return gwt_json_num(j, path);
}

GW_TEST(cache_full_evicts_the_least_recently_used_for_a_new_dump)
{
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	start_daemon(&d, "512", "128"); /* two entries of one 64 MiB block */
	start_app(&d, &app);
	suspend_to(&d, &app, path_of("a.img"), "1");
	cJSON_Delete(wait_entries(&d, 1));
	GW_ASSERT(resume_from(&d, &app, path_of("a.img")));
	suspend_to(&d, &app, path_of("b.img"), "1");
	cJSON_Delete(wait_entries(&d, 2));
	GW_ASSERT(resume_from(&d, &app, path_of("b.img")));
	/* a is the least recently used: c takes its room */
	suspend_to(&d, &app, path_of("c.img"), "1");
	j = wait_entries(&d, 2);
	GW_ASSERT_INT_EQ(entry_id(j, 0), 3);
	GW_ASSERT_INT_EQ(entry_id(j, 1), 2);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(stat_of(&d, "evictions"), 1);
	GW_ASSERT(resume_from(&d, &app, path_of("c.img")));
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

GW_TEST(cache_makes_way_for_a_suspend_into_the_pool)
{
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	start_daemon(&d, "128", "128"); /* the cache may take the whole pool */
	start_app(&d, &app);
	suspend_to(&d, &app, path_of("a.img"), "1");
	cJSON_Delete(wait_entries(&d, 1));
	GW_ASSERT(resume_from(&d, &app, path_of("a.img")));
	suspend_to(&d, &app, path_of("b.img"), "1");
	cJSON_Delete(wait_entries(&d, 2));
	GW_ASSERT(resume_from(&d, &app, path_of("b.img")));
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.image_pool.free_bytes"), 0);
	cJSON_Delete(j);
	/* Into the pool: a (least recently used) is evicted, the suspend succeeds. */
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.image"), "memory");
	cJSON_Delete(j);
	j = wait_entries(&d, 1);
	GW_ASSERT_INT_EQ(entry_id(j, 0), 2);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(stat_of(&d, "evictions"), 1);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	verify(&app);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

GW_TEST(cache_is_gone_after_a_restart_and_the_file_restores)
{
	const char *path = path_of("restart.img");
	struct gwt_daemon d, d2;
	struct gwt_app app;

	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "2");
	cJSON_Delete(wait_entries(&d, 1));
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
	start_daemon(&d2, "256", "256");
	/* the app's agent comes back to the new daemon by itself */
	for (int i = 0; i < 500; i++) {
		cJSON *j = gwt_ctl(&d2, 0, GWT_ARGS("status"));
		int seen = gwt_json(j, "result.processes.0") != NULL;

		cJSON_Delete(j);
		if (seen)
			break;
		gwt_sleep_ms(20);
	}
	GW_ASSERT_INT_EQ(stat_of(&d2, "entries"), 0);
	GW_ASSERT(!resume_from(&d2, &app, path));
	GW_ASSERT_INT_EQ(stat_of(&d2, "misses"), 1);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d2), 0);
}

GW_TEST(cache_images_list_drop_load)
{
	const char *path = path_of("golden.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "3");
	cJSON_Delete(wait_entries(&d, 1));
	j = gwt_ctl(&d, 1, GWT_ARGS("images", "drop", "99"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_NO_SUCH_IMAGE);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("images", "drop", "1"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.dropped"), 1);
	cJSON_Delete(j);
	cJSON_Delete(wait_entries(&d, 0));
	/* Preloaded: the golden image serves the resume. */
	j = gwt_ctl(&d, 0, GWT_ARGS("images", "load", path));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.id"), 2);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.data_bytes"), 64 * MIB);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("images", "load", path));
	GW_ASSERT(cJSON_IsTrue(gwt_json(j, "result.already")));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.id"), 2);
	cJSON_Delete(j);
	j = wait_entries(&d, 1);
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.entries.0.origin"), "load");
	cJSON_Delete(j);
	GW_ASSERT(resume_from(&d, &app, path));
	/* Not an image: refused with the cause. */
	j = gwt_ctl(&d, 1, GWT_ARGS("images", "load", d.log));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_IMAGE);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("images", "drop", "--all"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.dropped"), 1);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

GW_TEST(cache_off_by_default)
{
	const char *path = path_of("off.img");
	struct gwt_daemon d;
	struct gwt_app app;
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "256"));
	start_app(&d, &app);
	suspend_to(&d, &app, path, "1");
	GW_ASSERT(!resume_from(&d, &app, path));
	GW_ASSERT_INT_EQ(stat_of(&d, "entries"), 0);
	GW_ASSERT_INT_EQ(stat_of(&d, "misses"), 0);
	j = gwt_ctl(&d, 1, GWT_ARGS("images", "load", path));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_LIMIT);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

/* ---- other uids (security suite too) ---- */

/* A copy of path owned by uid, in a directory only uid can enter. */
static const char *users_copy(const char *path, uid_t uid, const char *name)
{
	static char dir[512], copy[700];
	int fd;

	snprintf(dir, sizeof(dir), "%s/home-%u", gwt_dir(), uid);
	GW_ASSERT(mkdir(dir, 0700) == 0 || errno == EEXIST);
	GW_ASSERT(chown(dir, uid, uid) == 0);
	snprintf(copy, sizeof(copy), "%s/%s", dir, name);
	copy_file(path, copy);
	fd = open(copy, O_RDONLY);
	GW_ASSERT(fd >= 0 && fchown(fd, uid, uid) == 0);
	close(fd);
	return copy;
}

GW_TEST(owner_entries_of_other_uids_stay_invisible)
{
	const char *path = path_of("root.img"), *mine;
	struct gwt_daemon d;
	struct gwt_app app;
	char err[1024];
	cJSON *j;

	if (geteuid() != 0) {
		fprintf(stderr, "needs root: skipped\n");
		exit(77);
	}
	start_daemon(&d, "256", "256");
	start_app(&d, &app);
	suspend_to(&d, &app, path, "1"); /* root's entry 1 */
	cJSON_Delete(wait_entries(&d, 1));
	mine = users_copy(path, UID_A, "mine.img");
	/* A user sees none of root's entries, only their count, and cannot drop them. */
	GW_ASSERT_INT_EQ(gwt_warmctl(&d, UID_A, &j, err, sizeof(err), GWT_ARGS("images")), 0);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(gwt_json(j, "result.entries")), 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.others.entries"), 1);
	cJSON_Delete(j);
	GW_ASSERT(gwt_warmctl(&d, UID_A, &j, err, sizeof(err), GWT_ARGS("images", "drop", "1")));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_NO_SUCH_IMAGE);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(gwt_warmctl(&d, UID_A, &j, err, sizeof(err),
				     GWT_ARGS("images", "drop", "--all")), 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.dropped"), 0);
	cJSON_Delete(j);
	/* Their own file they may load; the entry is theirs. */
	GW_ASSERT_INT_EQ(gwt_warmctl(&d, UID_A, &j, err, sizeof(err),
				     GWT_ARGS("images", "load", mine)), 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.id"), 2);
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(gwt_warmctl(&d, UID_A, &j, err, sizeof(err), GWT_ARGS("images")), 0);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(gwt_json(j, "result.entries")), 1);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.entries.0.owner_uid"), UID_A);
	cJSON_Delete(j);
	/* Another user sees neither and drops neither. */
	GW_ASSERT_INT_EQ(gwt_warmctl(&d, UID_B, &j, err, sizeof(err), GWT_ARGS("images")), 0);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(gwt_json(j, "result.entries")), 0);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.others.entries"), 2);
	cJSON_Delete(j);
	GW_ASSERT(gwt_warmctl(&d, UID_B, &j, err, sizeof(err), GWT_ARGS("images", "drop", "2")));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_NO_SUCH_IMAGE);
	cJSON_Delete(j);
	/* Root sees both and drops the user's. */
	j = gwt_ctl(&d, 0, GWT_ARGS("images"));
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(gwt_json(j, "result.entries")), 2);
	cJSON_Delete(j);
	j = gwt_ctl(&d, 0, GWT_ARGS("images", "drop", "2"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.dropped"), 1);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	GW_ASSERT_INT_EQ(gwt_daemon_stop(&d), 0);
}

GW_TEST_MAIN()
