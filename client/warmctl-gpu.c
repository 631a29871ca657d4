/* SPDX-License-Identifier: MIT */
/* warmctl drain, undrain, lease: the commands about GPUs. */
#include "warmctl.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static int oom(void)
{
	fprintf(stderr, "warmctl: out of memory\n");
	return WC_EXIT_FAILED;
}

static cJSON *gpus_params(const struct wc_args *args)
{
	cJSON *params = cJSON_CreateObject(), *gpus;

	if (!params)
		return NULL;
	if (args->ngpus == 0)
		return params; /* absent: all */
	gpus = cJSON_AddArrayToObject(params, "gpus");
	if (!gpus)
		goto fail;
	for (size_t i = 0; i < args->ngpus; i++) {
		cJSON *s = cJSON_CreateString(args->gpus[i]);

		if (!s || !cJSON_AddItemToArray(gpus, s)) {
			cJSON_Delete(s);
			goto fail;
		}
	}
	return params;
fail:
	cJSON_Delete(params);
	return NULL;
}

static void print_gpu_states(const cJSON *result)
{
	static const char *const header[] = { "GPU", "UUID", "STATE" };
	const cJSON *gpus = cJSON_GetObjectItemCaseSensitive(result, "gpus"), *gpu;
	struct wc_table *t = wc_table_new(3);

	if (!t || wc_table_add(t, header) < 0) {
		wc_table_free(t);
		oom();
		return;
	}
	cJSON_ArrayForEach(gpu, gpus) {
		char idx[32], uuid[128], state[64];
		const char *row[] = { wc_num(gpu, "index", 0, idx, sizeof(idx)),
				      wc_str(gpu, "uuid", uuid, sizeof(uuid)),
				      wc_str(gpu, "state", state, sizeof(state)) };

		if (wc_table_add(t, row) < 0) {
			oom();
			break;
		}
	}
	wc_table_print(t, "");
	wc_table_free(t);
}

static int gpu_command(struct wc_ctx *ctx, const char *method, cJSON *params)
{
	cJSON *result = NULL;
	int r;

	r = wc_call(ctx, method, params, ctx->cmd->name, &result);
	cJSON_Delete(params);
	if (r != WC_EXIT_OK)
		return r;
	if (ctx->json)
		r = wc_print_json_result(ctx, result);
	else
		print_gpu_states(result);
	cJSON_Delete(result);
	return r;
}

int wc_cmd_drain(struct wc_ctx *ctx, const struct wc_args *args)
{
	cJSON *params = gpus_params(args);

	if (!params || !cJSON_AddBoolToObject(params, "wait", !args->no_wait) ||
	    (args->op_timeout_ms &&
	     !cJSON_AddNumberToObject(params, "timeout_ms", args->op_timeout_ms))) {
		cJSON_Delete(params);
		return oom();
	}
	return gpu_command(ctx, GW_METHOD_DRAIN, params);
}

int wc_cmd_undrain(struct wc_ctx *ctx, const struct wc_args *args)
{
	cJSON *params = gpus_params(args);

	if (!params)
		return oom();
	return gpu_command(ctx, GW_METHOD_UNDRAIN, params);
}

/*
 * Wait for SIGINT/SIGTERM, EOF on stdin, or the daemon closing the connection. Returns
 * WC_EXIT_OK for the first two, WC_EXIT_UNREACHABLE for the last.
 */
static int hold(struct wc_ctx *ctx, const sigset_t *mask)
{
	struct pollfd p[3] = {
		{ .fd = signalfd(-1, mask, SFD_CLOEXEC), .events = POLLIN },
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .fd = gw_client_fd(ctx->client), .events = POLLIN },
	};
	int r = WC_EXIT_OK;

	if (p[0].fd < 0) {
		fprintf(stderr, "warmctl: signalfd: %s\n", strerror(errno));
		return WC_EXIT_FAILED;
	}
	for (;;) {
		char buf[512];

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "warmctl: poll: %s\n", strerror(errno));
			r = WC_EXIT_FAILED;
			break;
		}
		if (p[0].revents) {
			struct signalfd_siginfo si[4];

			/* consume them, or unblocking at the end would deliver them */
			if (read(p[0].fd, si, sizeof(si)) < 0 && errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents & POLLNVAL) {
			p[1].fd = -1; /* no stdin at all: only a signal ends the hold */
		} else if (p[1].revents) {
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				break;
		}
		if (p[2].revents) {
			/* the daemon never speaks unasked: anything here means it went away */
			fprintf(stderr, "warmctl: lease: gpu-warmd closed the connection; "
					"the lease is gone\n");
			r = WC_EXIT_UNREACHABLE;
			break;
		}
	}
	close(p[0].fd);
	return r;
}

static int release(struct wc_ctx *ctx, double lease)
{
	cJSON *params = cJSON_CreateObject();
	int r;

	if (!params || !cJSON_AddNumberToObject(params, "lease", lease)) {
		cJSON_Delete(params);
		return oom();
	}
	r = wc_call(ctx, GW_METHOD_LEASE_RELEASE, params, "lease release", NULL);
	cJSON_Delete(params);
	return r;
}

int wc_cmd_lease(struct wc_ctx *ctx, const struct wc_args *args)
{
	cJSON *params = cJSON_CreateObject(), *result = NULL;
	sigset_t mask, old;
	double lease = -1;
	int r;

	if (!params || (args->gpu[0] && !cJSON_AddStringToObject(params, "gpu", args->gpu)) ||
	    (args->has_min_free &&
	     !cJSON_AddNumberToObject(params, "min_free_mib", (double)args->min_free_mib))) {
		cJSON_Delete(params);
		return oom();
	}
	/* block the signals that end --hold from the start, so none is lost in between */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	if (args->hold)
		sigprocmask(SIG_BLOCK, &mask, &old);

	r = wc_call(ctx, GW_METHOD_LEASE_ACQUIRE, params, "lease", &result);
	cJSON_Delete(params);
	if (r != WC_EXIT_OK)
		goto out;
	wc_get_double(result, "lease", &lease);
	if (ctx->json) {
		r = wc_print_json_result(ctx, result);
	} else {
		const cJSON *gpu = cJSON_GetObjectItemCaseSensitive(result, "gpu");
		char id[32], idx[32], uuid[128], pci[64];

		printf("lease %s: GPU %s, %s, %s\n", wc_num(result, "lease", 0, id, sizeof(id)),
		       wc_num(gpu, "index", 0, idx, sizeof(idx)),
		       wc_str(gpu, "uuid", uuid, sizeof(uuid)),
		       wc_str(gpu, "pci_bus_id", pci, sizeof(pci)));
		if (args->hold) {
			printf("holding it until Ctrl-C, SIGTERM or end of input\n");
		} else {
			/* a lease lasts as long as its connection: end it here and say so */
			wc_disconnect(ctx);
			printf("lease %s ended: warmctl closed its connection (--hold keeps a "
			       "lease)\n", id);
		}
		if (fflush(stdout) != 0)
			r = WC_EXIT_FAILED;
	}
	if (r != WC_EXIT_OK || !args->hold)
		goto out;

	r = hold(ctx, &mask);
	if (r == WC_EXIT_OK && lease >= 0) {
		/* quietly: in JSON mode stdout already has its one object */
		bool json = ctx->json;

		ctx->json = false;
		r = release(ctx, lease);
		ctx->json = json;
		if (r == WC_EXIT_OK && !ctx->json)
			printf("released lease %.0f\n", lease);
	}
out:
	cJSON_Delete(result);
	if (args->hold)
		sigprocmask(SIG_SETMASK, &old, NULL);
	return r;
}
