/* SPDX-License-Identifier: MIT */
/* warmctl: the connection to gpu-warmd, and turning failures into messages, hints, exit codes. */
#include "warmctl.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static bool is_version_mismatch(int r, const struct gw_client_error *err)
{
	return r == -EPROTO && (strcmp(err->name, GW_ERROR_PROTOCOL_VERSION) == 0 ||
				strncmp(err->message, "protocol version mismatch", 25) == 0);
}

int wc_exit_code(int r, const struct gw_client_error *err)
{
	if (r >= 0)
		return WC_EXIT_OK;
	if (is_version_mismatch(r, err))
		return WC_EXIT_VERSION;
	switch (r) {
	case -EREMOTEIO:
		return strcmp(err->name, GW_ERROR_PERMISSION_DENIED) == 0 ? WC_EXIT_PERMISSION :
									    WC_EXIT_FAILED;
	case -EACCES:
	case -EPERM:
		return WC_EXIT_PERMISSION;
	case -ENOENT:
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -EPIPE:
	case -ETIMEDOUT:
	case -EPROTO:
	case -ENOTCONN:
	case -ENOTDIR:
	case -ENAMETOOLONG:
	case -ENOTSOCK:
	case -EPROTOTYPE:
		return WC_EXIT_UNREACHABLE;
	default:
		return WC_EXIT_FAILED;
	}
}

static int effective_timeout_ms(const struct wc_ctx *ctx, int op_timeout_ms)
{
	int t;

	if (ctx->reply_timeout_ms > 0)
		return ctx->reply_timeout_ms;
	t = ctx->cmd && ctx->cmd->default_timeout_ms > 0 ? ctx->cmd->default_timeout_ms :
							       WC_DEFAULT_TIMEOUT_MS;
	if (op_timeout_ms > 0 && op_timeout_ms + WC_TIMEOUT_MARGIN_MS > t)
		t = op_timeout_ms + WC_TIMEOUT_MARGIN_MS;
	return t;
}

static void socket_group_hint(const char *path, char *buf, size_t len)
{
	struct stat st;
	struct group *gr;

	if (stat(path, &st) == 0 && (gr = getgrgid(st.st_gid)) && st.st_gid != 0)
		snprintf(buf, len,
			 "add yourself to the group that owns the socket: `sudo usermod -aG %s "
			 "$USER`, then log in again", gr->gr_name);
	else
		snprintf(buf, len,
			 "add yourself to the group that owns the socket (`ls -l %s` shows it), "
			 "then log in again", path);
}

static const char *remote_hint(const struct wc_ctx *ctx, const char *name)
{
	bool per_pid = ctx->cmd && ctx->cmd->positional == WC_POS_PID;

	if (strcmp(name, GW_ERROR_PERMISSION_DENIED) == 0)
		return per_pid ? "acting on a process needs root or the uid that owns it (real, "
				 "effective and saved uid); run warmctl as that user or with sudo" :
				 "this needs root; run it with sudo";
	if (strcmp(name, GW_ERROR_DRIVER_UNAVAILABLE) == 0)
		return "the daemon has no usable CUDA driver or checkpoint API; `warmctl status` "
		       "shows why";
	if (strcmp(name, GW_ERROR_DRAINING) == 0)
		return "the GPU is drained or draining; `warmctl undrain GPU` brings it back";
	if (strcmp(name, GW_ERROR_NO_SUCH_GPU) == 0 || strcmp(name, GW_ERROR_NO_GPU_AVAILABLE) == 0)
		return "`warmctl status` lists the GPUs and their state";
	if (strcmp(name, GW_ERROR_BUSY) == 0)
		return "another operation on this process is running; retry when it has finished";
	if (strcmp(name, GW_ERROR_ILLEGAL_STATE) == 0)
		return "`warmctl state PID` shows the process's state";
	if (strcmp(name, GW_ERROR_TIMEOUT) == 0)
		return "pass a longer --timeout";
	if (strcmp(name, GW_ERROR_NO_SUCH_PROCESS) == 0)
		return "check the PID; the process may have exited";
	if (strcmp(name, GW_ERROR_IMAGE) == 0)
		return "`warmctl inspect FILE --verify` checks an image file";
	if (strcmp(name, GW_ERROR_NOT_CUDA) == 0)
		return "only processes that use CUDA can be suspended; check the PID";
	if (strcmp(name, GW_ERROR_LIMIT) == 0)
		return "wait for your other operations or connections to end, or ask the "
		       "administrator to raise the limit the message names";
	return NULL;
}

/* Whether the daemon's message already gives the hint's advice: the command the hint quotes
 * (between its first pair of backquotes) appears in the message. */
static bool already_says(const char *message, const char *hint)
{
	const char *open = strchr(hint, '`'), *close = open ? strchr(open + 1, '`') : NULL;
	char cmd[128];

	if (!close || close - open - 1 <= 0 || (size_t)(close - open - 1) >= sizeof(cmd))
		return false;
	memcpy(cmd, open + 1, (size_t)(close - open - 1));
	cmd[close - open - 1] = '\0';
	return strstr(message, cmd) != NULL;
}

int wc_report(struct wc_ctx *ctx, const char *what, int r, const struct gw_client_error *err)
{
	int code = wc_exit_code(r, err);
	const char *name, *message = err->message, *hint = NULL;
	char hintbuf[512], msgbuf[640];

	if (r == -EREMOTEIO) {
		name = err->name;
		hint = remote_hint(ctx, name);
	} else if (code == WC_EXIT_VERSION) {
		name = GW_ERROR_PROTOCOL_VERSION;
		hint = "warmctl and gpu-warmd come from different releases; install matching "
		       "versions";
	} else if (code == WC_EXIT_PERMISSION) {
		name = "warmctl.Error.PermissionDenied";
		message = strerror(-r);
		socket_group_hint(ctx->socket_path, hintbuf, sizeof(hintbuf));
		hint = hintbuf;
	} else if (code == WC_EXIT_UNREACHABLE) {
		name = "warmctl.Error.Unreachable";
		if (r == -ENOENT || r == -ECONNREFUSED) {
			message = strerror(-r);
			hint = "is gpu-warmd running? start it with `systemctl start gpu-warmd` or "
			       "pass --socket";
		} else if (r == -ETIMEDOUT) {
			snprintf(msgbuf, sizeof(msgbuf), "%s (waited %.1f s)", err->message,
				 ctx->used_timeout_ms / 1000.0);
			message = msgbuf;
			hint = "pass a longer --timeout, or check `systemctl status gpu-warmd`";
		} else if (r == -ECONNRESET || r == -EPIPE) {
			hint = "check `journalctl -u gpu-warmd`";
		}
	} else {
		name = "warmctl.Error.Failed";
	}
	if (!*message)
		message = strerror(-r);
	if (hint && already_says(message, hint))
		hint = NULL;

	fprintf(stderr, "warmctl: %s: %s\n", what, message);
	if (hint)
		fprintf(stderr, "warmctl: hint: %s\n", hint);
	if (ctx->json)
		wc_print_json_error(ctx, name, message, err->cuda_error, hint);
	return code;
}

int wc_connect(struct wc_ctx *ctx, struct gw_client_error *err)
{
	int timeout = effective_timeout_ms(ctx, 0);

	if (ctx->client)
		return 0;
	if (timeout > WC_CONNECT_TIMEOUT_MS)
		timeout = WC_CONNECT_TIMEOUT_MS;
	ctx->used_timeout_ms = timeout;
	return gw_client_connect(ctx->socket_path, "warmctl " GW_VERSION, timeout, &ctx->client,
				 err);
}

void wc_disconnect(struct wc_ctx *ctx)
{
	gw_client_close(ctx->client);
	ctx->client = NULL;
}

int wc_call(struct wc_ctx *ctx, const char *method, const cJSON *params, const char *what,
	    cJSON **ret_result)
{
	return wc_call_fds(ctx, method, params, NULL, 0, what, ret_result);
}

int wc_call_fds(struct wc_ctx *ctx, const char *method, const cJSON *params, const int *fds,
		unsigned nfds, const char *what, cJSON **ret_result)
{
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(params, "timeout_ms");
	struct gw_client_error err;
	char where[600];
	int r;

	r = wc_connect(ctx, &err);
	if (r < 0) {
		snprintf(where, sizeof(where), "cannot talk to gpu-warmd at %s", ctx->socket_path);
		return wc_report(ctx, where, r, &err);
	}
	ctx->used_timeout_ms = effective_timeout_ms(ctx, cJSON_IsNumber(op) ? op->valueint : 0);
	gw_client_set_progress(ctx->client, ctx->progress_fn, ctx->progress_data);
	r = gw_client_call(ctx->client, method, params, fds, nfds, ctx->used_timeout_ms,
			   ret_result, NULL, NULL, &err);
	if (r < 0)
		return wc_report(ctx, what, r, &err);
	return WC_EXIT_OK;
}
