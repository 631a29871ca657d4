/* SPDX-License-Identifier: MIT */
/* warmctl status: the daemon's gpuwarm.Status result as text. */
#include "warmctl.h"

#include <stdio.h>
#include <string.h>

#define CELL 256

static void format_uptime(const cJSON *obj, const char *key, char *buf, size_t len)
{
	double s;

	if (!wc_get_double(obj, key, &s) || s < 0)
		snprintf(buf, len, "-");
	else if (s < 120)
		snprintf(buf, len, "%.1f s", s);
	else if (s < 7200)
		snprintf(buf, len, "%.0f min", s / 60);
	else if (s < 172800)
		snprintf(buf, len, "%.1f h", s / 3600);
	else
		snprintf(buf, len, "%.1f days", s / 86400);
}

static const char *yes_no(const cJSON *obj, const char *key)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsBool(item) ? (cJSON_IsTrue(item) ? "yes" : "no") : "-";
}

static void format_bytes(double bytes, char *buf, size_t len)
{
	if (bytes >= 1024.0 * 1024 * 1024)
		snprintf(buf, len, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
	else
		snprintf(buf, len, "%.0f MiB", bytes / (1024.0 * 1024));
}

static const cJSON *member(const cJSON *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static void print_daemon(const cJSON *d)
{
	char ver[CELL], proto[32], pid[32], up[32], clients[32], sock[CELL], staging[32];

	format_uptime(d, "uptime_s", up, sizeof(up));
	printf("daemon:   gpu-warmd %s, protocol %s, pid %s, up %s, %s client(s)\n",
	       wc_str(d, "version", ver, sizeof(ver)),
	       wc_num(d, "protocol", 0, proto, sizeof(proto)),
	       wc_num(d, "pid", 0, pid, sizeof(pid)), up,
	       wc_num(d, "clients", 0, clients, sizeof(clients)));
	printf("socket:   %s\n", wc_str(d, "socket", sock, sizeof(sock)));
	printf("staging:  %s MiB configured per GPU\n",
	       wc_num(d, "staging_mib", 0, staging, sizeof(staging)));
}

static void print_driver(const cJSON *d, size_t width)
{
	const cJSON *loaded = member(d, "loaded");
	char lib[CELL], err[CELL], line[3 * CELL], cuda[64] = "";
	double version;

	if (!cJSON_IsTrue(loaded)) {
		snprintf(line, sizeof(line), "%s", wc_str(d, "error", err, sizeof(err)));
		wc_print_wrapped("driver:   not loaded: ", "          ", line, width);
		return;
	}
	if (wc_get_double(d, "version", &version) && version > 0 && version < 1e6)
		snprintf(cuda, sizeof(cuda), ", CUDA %d.%d (%d)", (int)version / 1000,
			 (int)version % 1000 / 10, (int)version);
	snprintf(line, sizeof(line), "%s%s, checkpoint API %s, VMM API %s",
		 wc_str(d, "library", lib, sizeof(lib)), cuda, yes_no(d, "checkpoint_api"),
		 yes_no(d, "vmm_api"));
	wc_print_wrapped("driver:   ", "          ", line, width);
}

/* "image_pool": {...} of newer daemons; else the daemon's image_pool_* members. */
static void print_image_pool(const cJSON *result, size_t width)
{
	const cJSON *pool = member(result, "image_pool"), *d = member(result, "daemon");
	const cJSON *cache = member(pool, "cache");
	double bytes, free_bytes, pin_ms, v;
	char line[512], a[32], b[32];
	size_t n = 0;

	if (cJSON_IsObject(pool)) {
		if (!wc_get_double(pool, "bytes", &bytes))
			return;
		if (!wc_get_double(pool, "free_bytes", &free_bytes))
			free_bytes = -1;
		if (!wc_get_double(pool, "pin_ms", &pin_ms))
			pin_ms = -1;
	} else {
		if (!wc_get_double(d, "image_pool_bytes", &bytes))
			return;
		if (!wc_get_double(d, "image_pool_free_bytes", &free_bytes))
			free_bytes = -1;
		if (!wc_get_double(d, "image_pool_pin_ms", &pin_ms))
			pin_ms = -1;
	}
	if (bytes <= 0) {
		wc_print_wrapped("images:   ", "          ",
				 "no pinned image pool (gpu-warmd --image-pool-mib N); suspend "
				 "--image FILE writes VRAM images to files", width);
		return;
	}
	format_bytes(bytes, a, sizeof(a));
	n += (size_t)snprintf(line + n, sizeof(line) - n, "pool of %s pinned", a);
	if (pin_ms >= 0)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " in %.0f ms", pin_ms);
	if (free_bytes >= 0) {
		format_bytes(free_bytes, b, sizeof(b));
		n += (size_t)snprintf(line + n, sizeof(line) - n, ", %s free", b);
	}
	if (cJSON_IsObject(cache)) {
		char e[32], h[32], m[32];

		if (wc_get_double(cache, "bytes", &v))
			format_bytes(v, a, sizeof(a));
		else
			snprintf(a, sizeof(a), "-");
		snprintf(line + n, sizeof(line) - n,
			 "; cache: %s entries, %s, %s hits, %s misses",
			 wc_num(cache, "entries", 0, e, sizeof(e)), a,
			 wc_num(cache, "hits", 0, h, sizeof(h)),
			 wc_num(cache, "misses", 0, m, sizeof(m)));
	}
	wc_print_wrapped("images:   ", "          ", line, width);
}

/* "vram_store" (root's view of gpu-warmd --vram-store). */
static void print_vram_store(const cJSON *result, size_t width)
{
	const cJSON *store = member(result, "vram_store");
	char line[700], path[520], size[32], files[32];
	double bytes;

	if (!cJSON_IsObject(store))
		return;
	if (!wc_get_double(store, "bytes", &bytes))
		bytes = 0;
	format_bytes(bytes, size, sizeof(size));
	snprintf(line, sizeof(line), "%s: %s in %s files (CRIU's checkpoints link their VRAM "
		 "data there)", wc_str(store, "path", path, sizeof(path)), size,
		 wc_num(store, "files", 0, files, sizeof(files)));
	wc_print_wrapped("store:    ", "          ", line, width);
}

static void note_left_out(const char *what, const char *left_out, size_t width)
{
	char line[512];

	if (!*left_out)
		return;
	snprintf(line, sizeof(line), "(%s: %s left out for the terminal's width; --wide shows "
		 "them)", what, left_out);
	wc_print_wrapped("", " ", line, width);
}

static int print_gpus(const cJSON *gpus, size_t width)
{
	static const char *const header[] = { "GPU", "NAME", "UUID", "PCI", "MEMORY USED/TOTAL",
					      "STATE", "CONTEXT", "STAGING", "PIN TIME",
					      "LEASES", "IN FLIGHT" };
	/* what goes first when the terminal is narrow: UUID and pin time, then ... */
	static const unsigned priority[] = { 0, 1, 6, 3, 0, 0, 4, 2, 5, 2, 2 };
	static const size_t min_width[] = { 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	struct wc_table *t = wc_table_new(11);
	const cJSON *gpu;
	char left_out[256];
	int r = -1;

	if (!t || wc_table_add(t, header) < 0)
		goto out;
	cJSON_ArrayForEach(gpu, gpus) {
		const cJSON *staging = member(gpu, "staging");
		char idx[32], name[CELL], uuid[CELL], pci[CELL], mem[96], state[CELL];
		char context[CELL], stg[48], pin[48], leases[32], inflight[32];
		double total, free_mib, bytes, pin_ms;

		if (wc_get_double(gpu, "memory_total_mib", &total) &&
		    wc_get_double(gpu, "memory_free_mib", &free_mib))
			snprintf(mem, sizeof(mem), "%.0f/%.0f MiB", total - free_mib, total);
		else
			snprintf(mem, sizeof(mem), "-");
		if (wc_get_double(staging, "bytes", &bytes))
			snprintf(stg, sizeof(stg), "%.0f MiB", bytes / (1024.0 * 1024.0));
		else
			snprintf(stg, sizeof(stg), "-");
		if (wc_get_double(staging, "pin_ms", &pin_ms))
			snprintf(pin, sizeof(pin), "%.1f ms", pin_ms);
		else
			snprintf(pin, sizeof(pin), "-");
		const char *row[] = {
			wc_num(gpu, "index", 0, idx, sizeof(idx)),
			wc_str(gpu, "name", name, sizeof(name)),
			wc_str(gpu, "uuid", uuid, sizeof(uuid)),
			wc_str(gpu, "pci_bus_id", pci, sizeof(pci)),
			mem,
			wc_str(gpu, "state", state, sizeof(state)),
			wc_str(gpu, "context", context, sizeof(context)),
			stg,
			pin,
			wc_num(gpu, "leases", 0, leases, sizeof(leases)),
			wc_num(gpu, "in_flight", 0, inflight, sizeof(inflight)),
		};
		if (wc_table_add(t, row) < 0)
			goto out;
	}
	printf("\n");
	if (cJSON_GetArraySize(gpus) == 0) {
		printf("gpus:     none\n");
	} else {
		wc_table_print_fit(t, "", width, priority, min_width, left_out, sizeof(left_out));
		note_left_out("GPUs", left_out, width);
	}
	cJSON_ArrayForEach(gpu, gpus) {
		const cJSON *e = member(gpu, "error");
		char idx[32], msg[CELL], first[64];

		if (cJSON_IsString(e)) {
			snprintf(first, sizeof(first), "GPU %s error: ",
				 wc_num(gpu, "index", 0, idx, sizeof(idx)));
			wc_print_wrapped(first, "  ", wc_str(gpu, "error", msg, sizeof(msg)), width);
		}
	}
	r = 0;
out:
	wc_table_free(t);
	return r;
}

/* The GPUs of a process: "gpus": [0, 1] -> "0,1". */
static void format_gpu_list(const cJSON *gpus, char *buf, size_t len)
{
	const cJSON *g;
	size_t n = 0;

	buf[0] = '\0';
	cJSON_ArrayForEach(g, gpus) {
		if (!cJSON_IsNumber(g) || n + 16 >= len)
			continue;
		n += (size_t)snprintf(buf + n, len - n, "%s%.0f", n ? "," : "", g->valuedouble);
	}
	if (!n)
		snprintf(buf, len, "-");
}

/* "image": {"store", "data_bytes"} | null; older daemons: "held_in", "held_bytes". */
static void format_image(const cJSON *p, char *buf, size_t len)
{
	const cJSON *image = member(p, "image");
	char store[32], size[32];
	double bytes;

	if (cJSON_IsObject(image)) {
		wc_str(image, "store", store, sizeof(store));
		if (wc_get_double(image, "data_bytes", &bytes))
			format_bytes(bytes, size, sizeof(size));
		else
			snprintf(size, sizeof(size), "-");
	} else if (!image && cJSON_IsString(member(p, "held_in"))) {
		wc_str(p, "held_in", store, sizeof(store));
		if (wc_get_double(p, "held_bytes", &bytes))
			format_bytes(bytes, size, sizeof(size));
		else
			snprintf(size, sizeof(size), "-");
	} else {
		snprintf(buf, len, "-");
		return;
	}
	snprintf(buf, len, "%s %s", store, size);
}

static int print_processes(const cJSON *procs, size_t width)
{
	static const char *const header[] = { "PID", "UID", "GPU", "VRAM", "RANGES", "STATE",
					      "IMAGE", "AGENT TID", "ATTACHED" };
	static const unsigned priority[] = { 0, 0, 0, 0, 2, 0, 0, 3, 1 };
	struct wc_table *t;
	const cJSON *p;
	char left_out[256];
	int r = -1;

	printf("\n");
	if (cJSON_GetArraySize(procs) == 0) {
		printf("processes: none under the shim\n");
		return 0;
	}
	t = wc_table_new(9);
	if (!t || wc_table_add(t, header) < 0)
		goto out;
	cJSON_ArrayForEach(p, procs) {
		char pid[32], uid[32], gpus[128], vram[32], ranges[32], state[64], image[96];
		char tid[32];
		const char *attached = cJSON_IsBool(member(p, "attached")) ?
					       (cJSON_IsTrue(member(p, "attached")) ? "yes" : "no") :
					       "-";
		double bytes;

		if (wc_get_double(p, "vram_bytes", &bytes))
			format_bytes(bytes, vram, sizeof(vram));
		else
			snprintf(vram, sizeof(vram), "-");
		format_gpu_list(member(p, "gpus"), gpus, sizeof(gpus));
		format_image(p, image, sizeof(image));
		const char *row[] = {
			wc_num(p, "pid", 0, pid, sizeof(pid)),
			wc_num(p, "uid", 0, uid, sizeof(uid)),
			gpus,
			vram,
			wc_num(p, "ranges", 0, ranges, sizeof(ranges)),
			wc_str(p, "state", state, sizeof(state)),
			image,
			wc_num(p, "agent_tid", 0, tid, sizeof(tid)),
			attached,
		};
		if (wc_table_add(t, row) < 0)
			goto out;
	}
	wc_table_print_fit(t, "", width, priority, NULL, left_out, sizeof(left_out));
	note_left_out("processes", left_out, width);
	r = 0;
out:
	wc_table_free(t);
	return r;
}

static int print_leases(const cJSON *leases, size_t width)
{
	static const char *const header[] = { "LEASE", "GPU", "UUID", "CLIENT PID", "UID", "AGE" };
	static const unsigned priority[] = { 0, 0, 1, 0, 0, 0 };
	struct wc_table *t;
	const cJSON *lease;
	char left_out[256];
	int r = -1;

	printf("\n");
	if (cJSON_GetArraySize(leases) == 0) {
		printf("leases:   none\n");
		return 0;
	}
	t = wc_table_new(6);
	if (!t || wc_table_add(t, header) < 0)
		goto out;
	cJSON_ArrayForEach(lease, leases) {
		char id[32], gpu[32], uuid[CELL], pid[32], uid[32], age[32];

		format_uptime(lease, "age_s", age, sizeof(age));
		const char *row[] = {
			wc_num(lease, "id", 0, id, sizeof(id)),
			wc_num(lease, "gpu", 0, gpu, sizeof(gpu)),
			wc_str(lease, "uuid", uuid, sizeof(uuid)),
			wc_num(lease, "client_pid", 0, pid, sizeof(pid)),
			wc_num(lease, "client_uid", 0, uid, sizeof(uid)),
			age,
		};
		if (wc_table_add(t, row) < 0)
			goto out;
	}
	wc_table_print_fit(t, "", width, priority, NULL, left_out, sizeof(left_out));
	note_left_out("leases", left_out, width);
	r = 0;
out:
	wc_table_free(t);
	return r;
}

/* "others": what other users have, for callers who may not see it. */
static void print_others(const cJSON *others)
{
	char procs[32], leases[32];

	if (!cJSON_IsObject(others))
		return;
	printf("other users: %s process(es), %s lease(s) (not shown)\n",
	       wc_num(others, "processes", 0, procs, sizeof(procs)),
	       wc_num(others, "leases", 0, leases, sizeof(leases)));
}

static void print_operations(const cJSON *ops, size_t width)
{
	const cJSON *op;
	char line[2048];
	size_t n = 0;

	if (!cJSON_IsObject(ops) || !ops->child)
		return;
	line[0] = '\0';
	cJSON_ArrayForEach(op, ops) {
		char ok[32], failed[32], name[64];
		size_t i;

		/* member names come from the daemon too */
		for (i = 0; op->string && op->string[i] && i + 1 < sizeof(name); i++) {
			char ch = op->string[i];

			name[i] = (unsigned char)ch <= 0x20 || ch == 0x7f ? '?' : ch;
		}
		name[i] = '\0';
		if (n + 128 >= sizeof(line))
			break;
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s %s/%s", n ? ", " : "",
				      name, wc_num(op, "ok", 0, ok, sizeof(ok)),
				      wc_num(op, "failed", 0, failed, sizeof(failed)));
	}
	printf("\n");
	wc_print_wrapped("operations (ok/failed): ", "  ", line, width);
}

int wc_cmd_status(struct wc_ctx *ctx, const struct wc_args *args)
{
	cJSON *result = NULL;
	size_t width = args->wide ? 0 : wc_terminal_width();
	int r;

	r = wc_call(ctx, GW_METHOD_STATUS, NULL, "status", &result);
	if (r != WC_EXIT_OK)
		return r;
	if (ctx->json) {
		r = wc_print_json_result(ctx, result);
	} else {
		print_daemon(member(result, "daemon"));
		print_driver(member(result, "driver"), width);
		print_image_pool(result, width);
		print_vram_store(result, width);
		if (print_gpus(member(result, "gpus"), width) < 0 ||
		    print_processes(member(result, "processes"), width) < 0 ||
		    print_leases(member(result, "leases"), width) < 0) {
			fprintf(stderr, "warmctl: out of memory\n");
			r = WC_EXIT_FAILED;
		}
		print_others(member(result, "others"));
		print_operations(member(result, "operations"), width);
		if (fflush(stdout) != 0)
			r = WC_EXIT_FAILED;
	}
	cJSON_Delete(result);
	return r;
}
