/* SPDX-License-Identifier: MIT */
/* gw_criu_check(): the criu binary and version, the plugin directory, and which CUDA plugin
 * CRIU will use, against fake criu/cuda-checkpoint scripts and plugin directories. */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpuwarm-check.h"
#include "gw-test.h"

static char dir[64];

static void cleanup(void)
{
	char cmd[128];

	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
}

static void setup(void)
{
	strcpy(dir, "/tmp/gwp-check-XXXXXX");
	GW_ASSERT(mkdtemp(dir));
	atexit(cleanup);
	unsetenv("CRIU_LIBS_DIR");
}

static void make_file(const char *sub, const char *name, const char *text, int mode)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	f = fopen(path, "w");
	GW_ASSERT(f);
	fputs(text, f);
	fclose(f);
	GW_ASSERT(chmod(path, (mode_t)mode) == 0);
}

static const char *sub(const char *name)
{
	static char path[4][256];
	static int i;

	i = (i + 1) % 4;
	snprintf(path[i], sizeof(path[i]), "%s/%s", dir, name);
	return path[i];
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int truth(const cJSON *o, const char *key)
{
	return cJSON_IsTrue(cJSON_GetObjectItem(o, key));
}

/* The first "*.so" of d in readdir() order. */
static void first_so(const char *d, char *buf, size_t len)
{
	struct dirent *e;
	DIR *dd = opendir(d);

	buf[0] = '\0';
	GW_ASSERT(dd);
	while ((e = readdir(dd)))
		if (strstr(e->d_name, ".so") && !buf[0])
			snprintf(buf, len, "%.63s", e->d_name);
	closedir(dd);
}

GW_TEST(parse_version)
{
	char v[32] = "keep";
	int n = -1;

	GW_ASSERT_INT_EQ(gw_criu_parse_version("Version: 4.1.1\n", v, sizeof(v), &n), 0);
	GW_ASSERT_STR_EQ(v, "4.1.1");
	GW_ASSERT_INT_EQ(n, 40101);
	GW_ASSERT_INT_EQ(gw_criu_parse_version("Version: 3.17\nGitID: v3.17\n", v, sizeof(v), &n),
			 0);
	GW_ASSERT_INT_EQ(n, 31700);
	GW_ASSERT_INT_EQ(gw_criu_parse_version("criu: unknown option", v, sizeof(v), &n), -EINVAL);
	GW_ASSERT_INT_EQ(gw_criu_parse_version("Version: banana", v, sizeof(v), &n), -EINVAL);
	GW_ASSERT_INT_EQ(gw_criu_parse_version(NULL, v, sizeof(v), &n), -EINVAL);
	GW_ASSERT_STR_EQ(v, "3.17");
}

GW_TEST(only_ours_and_criu_found)
{
	struct gw_criu_check_opts o = { 0 };
	const cJSON *criu;
	cJSON *r;

	setup();
	make_file("bin", "criu", "#!/bin/sh\necho 'Version: 4.1.1'\n", 0755);
	make_file("plugins", "gpuwarm_plugin.so", "", 0644);
	make_file("plugins", "README", "", 0644);
	o.path = sub("bin");
	o.plugin_dir = sub("plugins");
	o.nvidia_proc = sub("nvidia-gpus"); /* absent */
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	criu = cJSON_GetObjectItem(r, "criu");
	GW_ASSERT_STR_EQ(str(criu, "path"), sub("bin/criu"));
	GW_ASSERT_STR_EQ(str(criu, "version"), "4.1.1");
	GW_ASSERT(truth(criu, "device_hooks"));
	GW_ASSERT_STR_EQ(str(r, "plugin_dir"), sub("plugins"));
	GW_ASSERT_STR_EQ(str(r, "plugin_dir_from"), "option");
	GW_ASSERT(truth(r, "plugin_dir_exists"));
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(r, "load_order")), 1);
	GW_ASSERT(truth(cJSON_GetObjectItem(r, "cuda_plugins"), "gpuwarm_plugin.so"));
	GW_ASSERT(!truth(cJSON_GetObjectItem(r, "cuda_plugins"), "cuda_plugin.so"));
	GW_ASSERT(truth(r, "gpuwarm_used"));
	GW_ASSERT_STR_CONTAINS(str(r, "reason"), "the only CUDA plugin");
	cJSON_Delete(r);
}

GW_TEST(old_criu_and_env_dir)
{
	struct gw_criu_check_opts o = { 0 };
	const cJSON *criu;
	cJSON *r;

	setup();
	make_file("bin", "criu", "#!/bin/sh\necho 'Version: 3.17.1'\n", 0755);
	make_file("libs", "cuda_plugin.so", "", 0644);
	setenv("CRIU_LIBS_DIR", sub("libs"), 1);
	o.path = sub("bin");
	o.nvidia_proc = sub("nvidia-gpus");
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	criu = cJSON_GetObjectItem(r, "criu");
	GW_ASSERT_STR_EQ(str(criu, "version"), "3.17.1");
	GW_ASSERT(!truth(criu, "device_hooks"));
	GW_ASSERT_STR_EQ(str(r, "plugin_dir"), sub("libs"));
	GW_ASSERT_STR_EQ(str(r, "plugin_dir_from"), "CRIU_LIBS_DIR");
	GW_ASSERT(!truth(r, "gpuwarm_used"));
	GW_ASSERT_STR_CONTAINS(str(r, "reason"), "gpuwarm_plugin.so is not in");
	/* no GPU: cuda_plugin would stand aside */
	GW_ASSERT(!truth(r, "cuda_plugin_enabled"));
	GW_ASSERT_STR_CONTAINS(str(r, "cuda_plugin_why"), "no NVIDIA GPU");
	cJSON_Delete(r);
}

GW_TEST(no_criu_no_dir)
{
	struct gw_criu_check_opts o = { 0 };
	const cJSON *criu;
	cJSON *r;

	setup();
	make_file("bin", "criu", "#!/bin/sh\nexit 3\n", 0644); /* not executable */
	o.path = sub("bin");
	o.plugin_dir = sub("nowhere");
	o.nvidia_proc = sub("nvidia-gpus");
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	criu = cJSON_GetObjectItem(r, "criu");
	/* the sbin fallback may find a real criu on this machine; ours was not executable */
	GW_ASSERT(!str(criu, "path") || strcmp(str(criu, "path"), sub("bin/criu")) != 0);
	GW_ASSERT(!truth(r, "plugin_dir_exists"));
	GW_ASSERT(!truth(r, "gpuwarm_used"));
	GW_ASSERT_STR_CONTAINS(str(r, "reason"), "cannot be read");
	cJSON_Delete(r);
}

GW_TEST(broken_criu_reported)
{
	struct gw_criu_check_opts o = { 0 };
	const cJSON *criu;
	cJSON *r;

	setup();
	make_file("bin", "criu", "#!/bin/sh\necho 'segfault' >&2\nexit 3\n", 0755);
	o.path = sub("bin");
	o.plugin_dir = sub("bin");
	o.nvidia_proc = sub("nvidia-gpus");
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	criu = cJSON_GetObjectItem(r, "criu");
	GW_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(criu, "version")));
	GW_ASSERT_STR_CONTAINS(str(criu, "error"), "exited 3: segfault");
	cJSON_Delete(r);
}

GW_TEST(hung_criu_times_out)
{
	struct gw_criu_check_opts o = { 0 };
	cJSON *r;

	setup();
	make_file("bin", "criu", "#!/bin/sh\nexec sleep 30\n", 0755);
	o.path = sub("bin");
	o.plugin_dir = sub("bin");
	o.nvidia_proc = sub("nvidia-gpus");
	o.timeout_ms = 300;
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	GW_ASSERT_STR_CONTAINS(str(cJSON_GetObjectItem(r, "criu"), "error"), "timed out");
	cJSON_Delete(r);
}

/* Both plugins: the directory order decides, unless cuda_plugin stands aside. */
GW_TEST(both_plugins_order_rule)
{
	struct gw_criu_check_opts o = { 0 };
	char first[64];
	cJSON *r;

	setup();
	make_file("bin", "criu", "#!/bin/sh\necho 'Version: 4.2'\n", 0755);
	make_file("plugins", "cuda_plugin.so", "", 0644);
	make_file("plugins", "gpuwarm_plugin.so", "", 0644);
	make_file("plugins", "amdgpu_plugin.so", "", 0644);
	make_file("nvidia-gpus", "0000:3b:00.0", "", 0644);
	first_so(sub("plugins"), first, sizeof(first));
	o.path = sub("bin");
	o.plugin_dir = sub("plugins");
	o.nvidia_proc = sub("nvidia-gpus");

	/* GPU present but no cuda-checkpoint: cuda_plugin is disabled, ours is used */
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	GW_ASSERT(!truth(r, "cuda_plugin_enabled"));
	GW_ASSERT_STR_CONTAINS(str(r, "cuda_plugin_why"), "cuda-checkpoint is not in PATH");
	GW_ASSERT(truth(r, "gpuwarm_used"));
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(r, "load_order")), 3);
	cJSON_Delete(r);

	/* with cuda-checkpoint: whichever CRIU reads first */
	make_file("bin", "cuda-checkpoint", "#!/bin/sh\nexit 0\n", 0755);
	GW_ASSERT_INT_EQ(gw_criu_check_with(&o, &r), 0);
	GW_ASSERT(truth(r, "cuda_plugin_enabled"));
	{
		int ours_before = -1, cuda_before = -1, i = 0;
		const cJSON *e;

		cJSON_ArrayForEach(e, cJSON_GetObjectItem(r, "load_order")) {
			if (strcmp(e->valuestring, "gpuwarm_plugin.so") == 0)
				ours_before = i;
			if (strcmp(e->valuestring, "cuda_plugin.so") == 0)
				cuda_before = i;
			i++;
		}
		GW_ASSERT(ours_before >= 0 && cuda_before >= 0);
		GW_ASSERT_INT_EQ(truth(r, "gpuwarm_used"), ours_before < cuda_before);
		GW_ASSERT_STR_CONTAINS(str(r, "reason"), "directory order");
	}
	GW_ASSERT_STR_EQ(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "load_order"), 0)->valuestring,
			 first);
	cJSON_Delete(r);
}

GW_TEST_MAIN();
