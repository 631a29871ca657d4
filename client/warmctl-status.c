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
	printf("staging:  %s MiB configured\n",
	       wc_num(d, "staging_mib", 0, staging, sizeof(staging)));
}

static void print_driver(const cJSON *d)
{
	const cJSON *loaded = cJSON_GetObjectItemCaseSensitive(d, "loaded");
	char lib[CELL], err[CELL];
	double version;

	if (!cJSON_IsTrue(loaded)) {
		printf("driver:   not loaded: %s\n", wc_str(d, "error", err, sizeof(err)));
		return;
	}
	printf("driver:   %s", wc_str(d, "library", lib, sizeof(lib)));
	if (wc_get_double(d, "version", &version) && version > 0 && version < 1e6)
		printf(", CUDA %d.%d (%d)", (int)version / 1000, (int)version % 1000 / 10,
		       (int)version);
	printf(", checkpoint API %s, VMM API %s\n", yes_no(d, "checkpoint_api"),
	       yes_no(d, "vmm_api"));
}

static int print_gpus(const cJSON *gpus)
{
	static const char *const header[] = { "GPU", "NAME", "UUID", "PCI", "MEMORY USED/TOTAL",
					      "STATE", "CONTEXT", "STAGING", "PIN TIME",
					      "LEASES", "IN FLIGHT" };
	struct wc_table *t = wc_table_new(11);
	const cJSON *gpu;
	int r = -1;

	if (!t || wc_table_add(t, header) < 0)
		goto out;
	cJSON_ArrayForEach(gpu, gpus) {
		const cJSON *staging = cJSON_GetObjectItemCaseSensitive(gpu, "staging");
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
	if (cJSON_GetArraySize(gpus) == 0)
		printf("gpus:     none\n");
	else
		wc_table_print(t, "");
	cJSON_ArrayForEach(gpu, gpus) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(gpu, "error");
		char idx[32], msg[CELL];

		if (cJSON_IsString(e))
			printf("GPU %s error: %s\n", wc_num(gpu, "index", 0, idx, sizeof(idx)),
			       wc_str(gpu, "error", msg, sizeof(msg)));
	}
	r = 0;
out:
	wc_table_free(t);
	return r;
}

static int print_leases(const cJSON *leases)
{
	static const char *const header[] = { "LEASE", "GPU", "UUID", "CLIENT PID", "UID", "AGE" };
	struct wc_table *t;
	const cJSON *lease;
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
	wc_table_print(t, "");
	r = 0;
out:
	wc_table_free(t);
	return r;
}

static void print_operations(const cJSON *ops)
{
	const cJSON *op;
	const char *sep = "";

	if (!cJSON_IsObject(ops) || !ops->child)
		return;
	printf("\noperations (ok/failed):");
	cJSON_ArrayForEach(op, ops) {
		char ok[32], failed[32], name[64];
		size_t i;

		/* member names come from the daemon too */
		for (i = 0; op->string && op->string[i] && i + 1 < sizeof(name); i++) {
			char ch = op->string[i];

			name[i] = (unsigned char)ch < 0x20 || ch == 0x7f ? '?' : ch;
		}
		name[i] = '\0';
		printf("%s %s %s/%s", sep, name, wc_num(op, "ok", 0, ok, sizeof(ok)),
		       wc_num(op, "failed", 0, failed, sizeof(failed)));
		sep = ",";
	}
	printf("\n");
}

int wc_cmd_status(struct wc_ctx *ctx, const struct wc_args *args)
{
	cJSON *result = NULL;
	int r;

	(void)args;
	r = wc_call(ctx, GW_METHOD_STATUS, NULL, "status", &result);
	if (r != WC_EXIT_OK)
		return r;
	if (ctx->json) {
		r = wc_print_json_result(ctx, result);
	} else {
		print_daemon(cJSON_GetObjectItemCaseSensitive(result, "daemon"));
		print_driver(cJSON_GetObjectItemCaseSensitive(result, "driver"));
		if (print_gpus(cJSON_GetObjectItemCaseSensitive(result, "gpus")) < 0 ||
		    print_leases(cJSON_GetObjectItemCaseSensitive(result, "leases")) < 0) {
			fprintf(stderr, "warmctl: out of memory\n");
			r = WC_EXIT_FAILED;
		}
		print_operations(cJSON_GetObjectItemCaseSensitive(result, "operations"));
		if (fflush(stdout) != 0)
			r = WC_EXIT_FAILED;
	}
	cJSON_Delete(result);
	return r;
}
