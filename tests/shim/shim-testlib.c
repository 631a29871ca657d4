/* SPDX-License-Identifier: MIT */
#include "shim-testlib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- environment ---- */

void st_setup(struct st_env *e)
{
	memset(e, 0, sizeof(*e));
	strcpy(e->dir, "/tmp/gw-shim-XXXXXX");
	GW_ASSERT(mkdtemp(e->dir));
	snprintf(e->sock, sizeof(e->sock), "%s/gpu-warmd.sock", e->dir);
	snprintf(e->fkstate, sizeof(e->fkstate), "%s/fk", e->dir);
	GW_ASSERT(setenv("FAKECUDA_STATE_DIR", e->fkstate, 1) == 0);
	GW_ASSERT(getenv(GW_CUDA_LIBRARY_ENV)); /* set by the test environment */
}

static void rm_tree(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *de;

	if (!dir) {
		unlink(path);
		return;
	}
	while ((de = readdir(dir))) {
		char sub[512];

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		rm_tree(sub);
	}
	closedir(dir);
	rmdir(path);
}

void st_cleanup(struct st_env *e)
{
	rm_tree(e->dir);
}

/* ---- the app ---- */

static void child_env(const struct st_env *e, const char *const *extra_env)
{
	const char *asan = getenv("ASAN_OPTIONS");
	char buf[1024];

	setenv("LD_PRELOAD", SHIM_PATH, 1);
	setenv("GPUWARM_SOCKET", e->sock, 1);
	setenv("FAKECUDA_STATE_DIR", e->fkstate, 1);
	setenv("GPUWARM_SHIM_DEBUG", "1", 1);
	/* the shim is preloaded ahead of an instrumented app's runtime in sanitizer builds */
	snprintf(buf, sizeof(buf), "%s%sverify_asan_link_order=0", asan ? asan : "",
		 asan && *asan ? ":" : "");
	setenv("ASAN_OPTIONS", buf, 1);
	for (; extra_env && *extra_env; extra_env++) {
		const char *eq = strchr(*extra_env, '=');
		char name[128];

		if (!eq || (size_t)(eq - *extra_env) >= sizeof(name))
			_exit(126);
		memcpy(name, *extra_env, (size_t)(eq - *extra_env));
		name[eq - *extra_env] = '\0';
		setenv(name, eq + 1, 1);
	}
}

void st_exec_start(struct st_app *a, const struct st_env *e, const char *const *extra_env,
		   char *const argv[])
{
	int in[2], out[2];

	GW_ASSERT(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
	fflush(NULL);
	a->pid = fork();
	GW_ASSERT(a->pid >= 0);
	if (a->pid == 0) {
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		child_env(e, extra_env);
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	a->in = in[1];
	a->out = out[0];
	a->len = 0;
}

void st_app_start(struct st_app *a, const struct st_env *e, const char *const *extra_env)
{
	char *argv[] = { (char *)SHIM_APP_PATH, NULL };

	st_exec_start(a, e, extra_env, argv);
}

void st_app_send(struct st_app *a, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	GW_ASSERT(n > 0 && (size_t)n < sizeof(line) - 1);
	line[n++] = '\n';
	GW_ASSERT(write(a->in, line, (size_t)n) == n);
}

void st_app_recv(struct st_app *a, char *buf, size_t len)
{
	int64_t deadline = now_ms() + ST_TIMEOUT_MS;

	for (;;) {
		char *nl = memchr(a->buf, '\n', a->len);
		struct pollfd p = { .fd = a->out, .events = POLLIN };
		int64_t left;
		ssize_t n;

		if (nl) {
			size_t line = (size_t)(nl - a->buf);

			GW_ASSERT(line < len);
			memcpy(buf, a->buf, line);
			buf[line] = '\0';
			memmove(a->buf, nl + 1, a->len - line - 1);
			a->len -= line + 1;
			return;
		}
		GW_ASSERT(a->len < sizeof(a->buf));
		left = deadline - now_ms();
		if (left <= 0 || poll(&p, 1, (int)left) != 1)
			GW_FAIL("no answer from the app in %d ms", ST_TIMEOUT_MS);
		n = read(a->out, a->buf + a->len, sizeof(a->buf) - a->len);
		if (n <= 0)
			GW_FAIL("the app ended without answering");
		a->len += (size_t)n;
	}
}

char *st_app_ok(struct st_app *a, char *buf, size_t len, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	st_app_send(a, "%s", line);
	st_app_recv(a, buf, len);
	if (strncmp(buf, "ok", 2) != 0)
		GW_FAIL("app command \"%s\" answered \"%s\"", line, buf);
	return buf[2] ? buf + 3 : buf + 2;
}

int st_app_err(struct st_app *a, const char *fmt, ...)
{
	char line[512], buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	st_app_send(a, "%s", line);
	st_app_recv(a, buf, sizeof(buf));
	if (strncmp(buf, "err ", 4) != 0)
		GW_FAIL("app command \"%s\" answered \"%s\", expected an error", line, buf);
	return atoi(buf + 4);
}

int st_app_stop(struct st_app *a)
{
	int status = 0;

	close(a->in);
	while (waitpid(a->pid, &status, 0) < 0 && errno == EINTR)
		;
	close(a->out);
	return status;
}

struct st_alloc st_alloc(struct st_app *a, const char *route, size_t bytes)
{
	struct st_alloc r = { 0 };
	char buf[256], *s = st_app_ok(a, buf, sizeof(buf), "alloc %s %zu", route, bytes);

	GW_ASSERT(sscanf(s, "%d %" SCNx64 " %zu", &r.slot, &r.va, &r.used) == 3);
	return r;
}

/* ---- the fake daemon ---- */

void st_daemon_listen(struct st_daemon *d, const struct st_env *e)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	memset(d, 0, sizeof(*d));
	d->fd = -1;
	d->next_id = 1;
	gw_frame_decoder_init(&d->dec, GW_FRAME_MAX_PAYLOAD);
	d->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	GW_ASSERT(d->lfd >= 0);
	GW_ASSERT(strlen(e->sock) < sizeof(addr.sun_path));
	memcpy(addr.sun_path, e->sock, strlen(e->sock) + 1);
	unlink(e->sock);
	GW_ASSERT(bind(d->lfd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	GW_ASSERT(listen(d->lfd, 8) == 0);
	d->owns_lfd = 1;
}

void st_daemon_second(struct st_daemon *d2, const struct st_daemon *d)
{
	memset(d2, 0, sizeof(*d2));
	d2->fd = -1;
	d2->lfd = d->lfd;
	d2->next_id = 1;
	gw_frame_decoder_init(&d2->dec, GW_FRAME_MAX_PAYLOAD);
}

static void send_msg(struct st_daemon *d, char *payload, const int *fds, unsigned nfds)
{
	GW_ASSERT(payload);
	GW_ASSERT(gw_send_frame(d->fd, payload, strlen(payload), fds, nfds) == 0);
	free(payload);
}

static void reply_empty(struct st_daemon *d, uint64_t id)
{
	send_msg(d, gw_reply_encode(id, NULL, 0), NULL, 0);
}

int st_daemon_read(struct st_daemon *d, struct gw_message *msg, int *fds, unsigned *nfds,
		   int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		while (d->roff < d->rlen) {
			char *payload = NULL;
			size_t plen = 0;
			ssize_t n = gw_frame_decoder_feed(&d->dec, d->rbuf + d->roff,
							  d->rlen - d->roff, &payload, &plen);

			GW_ASSERT(n >= 0);
			d->roff += (size_t)n;
			if (!payload)
				continue;
			GW_ASSERT(gw_message_parse(payload, plen, msg) == 0);
			free(payload);
			GW_ASSERT(msg->nfds <= d->npending);
			memcpy(fds, d->pending, msg->nfds * sizeof(int));
			memmove(d->pending, d->pending + msg->nfds,
				(d->npending - msg->nfds) * sizeof(int));
			d->npending -= msg->nfds;
			*nfds = msg->nfds;
			return 0;
		}
		{
			struct pollfd p = { .fd = d->fd, .events = POLLIN };
			int64_t left = deadline - now_ms();
			unsigned cap = 2 * GW_FRAME_MAX_FDS - d->npending;
			ssize_t n;

			if (left <= 0 || poll(&p, 1, (int)left) == 0)
				return -ETIMEDOUT;
			n = gw_recv_with_fds(d->fd, d->rbuf, sizeof(d->rbuf),
					     d->pending + d->npending, &cap);
			if (n == 0 || n == -ECONNRESET)
				return -ECONNRESET;
			GW_ASSERT(n > 0);
			d->npending += cap;
			d->roff = 0;
			d->rlen = (size_t)n;
		}
	}
}

static void note_update(struct st_daemon *d, const struct gw_message *msg)
{
	cJSON_Delete(d->update);
	d->update = cJSON_Duplicate(msg->body, 1);
	d->updates++;
	reply_empty(d, msg->id);
}

int st_daemon_try_accept(struct st_daemon *d, int timeout_ms)
{
	struct pollfd p = { .fd = d->lfd, .events = POLLIN };
	struct gw_message msg;
	const char *client = "";
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;
	cJSON *res;

	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	d->fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC);
	GW_ASSERT(d->fd >= 0);
	d->roff = d->rlen = 0;
	d->npending = 0;
	gw_frame_decoder_finish(&d->dec);
	gw_frame_decoder_init(&d->dec, GW_FRAME_MAX_PAYLOAD);

	GW_ASSERT(st_daemon_read(d, &msg, fds, &nfds, ST_TIMEOUT_MS) == 0);
	GW_ASSERT(msg.kind == GW_MESSAGE_REQUEST);
	GW_ASSERT_STR_EQ(msg.method, GW_METHOD_HELLO);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "version"), GW_PROTO_VERSION);
	(void)gw_json_get_string(msg.body, "client", 100, &client);
	snprintf(d->hello_client, sizeof(d->hello_client), "%s", client);
	res = cJSON_CreateObject();
	cJSON_AddNumberToObject(res, "version", GW_PROTO_VERSION);
	cJSON_AddStringToObject(res, "server", "fake-daemon");
	cJSON_AddNumberToObject(res, "pid", getpid());
	send_msg(d, gw_reply_encode(msg.id, res, 0), NULL, 0);
	cJSON_Delete(res);
	gw_message_finish(&msg);

	GW_ASSERT(st_daemon_read(d, &msg, fds, &nfds, ST_TIMEOUT_MS) == 0);
	GW_ASSERT(msg.kind == GW_MESSAGE_REQUEST);
	GW_ASSERT_STR_EQ(msg.method, GW_METHOD_AGENT_ATTACH);
	GW_ASSERT_INT_EQ(nfds, 0);
	cJSON_Delete(d->attach);
	d->attach = cJSON_Duplicate(msg.body, 1);
	reply_empty(d, msg.id);
	gw_message_finish(&msg);
	return 0;
}

void st_daemon_accept(struct st_daemon *d, int timeout_ms)
{
	if (st_daemon_try_accept(d, timeout_ms) < 0)
		GW_FAIL("no agent connected within %d ms", timeout_ms);
}

void st_daemon_call(struct st_daemon *d, const char *method, cJSON *params, const int *fds,
		    unsigned nfds, struct gw_message *ret, int *rfds, unsigned *rnfds)
{
	uint64_t id = d->next_id++;

	send_msg(d, gw_request_encode(id, method, params, nfds), fds, nfds);
	cJSON_Delete(params);
	for (;;) {
		struct gw_message msg;
		int got[GW_FRAME_MAX_FDS];
		unsigned ngot = 0;

		GW_ASSERT(st_daemon_read(d, &msg, got, &ngot, ST_TIMEOUT_MS) == 0);
		if (msg.kind == GW_MESSAGE_REQUEST) {
			GW_ASSERT_STR_EQ(msg.method, GW_METHOD_AGENT_UPDATE);
			note_update(d, &msg);
			gw_message_finish(&msg);
			continue;
		}
		GW_ASSERT_INT_EQ(msg.id, id);
		GW_ASSERT(ngot <= GW_FRAME_MAX_FDS);
		memcpy(rfds, got, ngot * sizeof(int));
		*rnfds = ngot;
		*ret = msg;
		return;
	}
}

void st_daemon_wait_update(struct st_daemon *d, uint64_t ranges, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (!d->update || st_json_u64(d->update, "ranges") != ranges) {
		struct gw_message msg;
		int fds[GW_FRAME_MAX_FDS];
		unsigned nfds;
		int64_t left = deadline - now_ms();

		if (left <= 0)
			GW_FAIL("no AgentUpdate with %" PRIu64 " ranges in %d ms", ranges,
				timeout_ms);
		if (st_daemon_read(d, &msg, fds, &nfds, (int)left) < 0)
			continue;
		GW_ASSERT(msg.kind == GW_MESSAGE_REQUEST);
		GW_ASSERT_STR_EQ(msg.method, GW_METHOD_AGENT_UPDATE);
		GW_ASSERT(st_json_u64(msg.body, "bytes") >= st_json_u64(msg.body, "ranges"));
		note_update(d, &msg);
		gw_message_finish(&msg);
	}
}

uint64_t st_json_u64(const cJSON *o, const char *key)
{
	uint64_t v = 0;

	if (gw_json_get_u64(o, key, 0, UINT64_MAX, &v) < 0)
		GW_FAIL("no integer \"%s\"", key);
	return v;
}

void st_daemon_drop(struct st_daemon *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	for (unsigned i = 0; i < d->npending; i++)
		close(d->pending[i]);
	d->npending = 0;
}

void st_daemon_close(struct st_daemon *d)
{
	st_daemon_drop(d);
	if (d->lfd >= 0 && d->owns_lfd)
		close(d->lfd);
	d->lfd = -1;
	gw_frame_decoder_finish(&d->dec);
	cJSON_Delete(d->attach);
	cJSON_Delete(d->update);
	d->attach = d->update = NULL;
}

/* ---- the driver in this process ---- */

#define CK(call) GW_ASSERT_INT_EQ((call), CUDA_SUCCESS)

struct gw_cuda *st_cuda(void)
{
	struct gw_cuda *cu = NULL;
	CUcontext ctx;
	CUdevice dev;
	char err[256];

	if (gw_cuda_load(NULL, &cu, err, sizeof(err)) < 0)
		GW_FAIL("%s", err);
	CK(cu->cuInit(0));
	CK(cu->cuDeviceGet(&dev, 0));
	CK(cu->cuDevicePrimaryCtxRetain(&ctx, dev));
	CK(cu->cuCtxSetCurrent(ctx));
	return cu;
}

static CUdeviceptr map_here(struct gw_cuda *cu, CUmemGenericAllocationHandle h, size_t size)
{
	CUmemAccessDesc acc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUdeviceptr va = 0;

	CK(cu->cuMemAddressReserve(&va, size, 0, 0, 0));
	CK(cu->cuMemMap(va, size, 0, h, 0));
	CK(cu->cuMemSetAccess(va, size, &acc, 1));
	return va;
}

static void unmap_here(struct gw_cuda *cu, CUmemGenericAllocationHandle h, CUdeviceptr va,
		       size_t size)
{
	CK(cu->cuMemUnmap(va, size));
	CK(cu->cuMemAddressFree(va, size));
	CK(cu->cuMemRelease(h));
}

void st_cuda_read_fd(struct gw_cuda *cu, int fd, size_t size, unsigned char *buf)
{
	CUmemGenericAllocationHandle h = 0;
	CUdeviceptr va;

	CK(cu->cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd,
					      CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
	va = map_here(cu, h, size);
	CK(cu->cuMemcpyDtoH(buf, va, size));
	unmap_here(cu, h, va, size);
}

int st_cuda_make_fd_bytes(struct gw_cuda *cu, const unsigned char *bytes, size_t size)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .requestedHandleTypes =
					     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
				     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
	CUmemGenericAllocationHandle h = 0;
	CUdeviceptr va;
	int fd = -1;

	CK(cu->cuMemCreate(&h, size, &prop, 0));
	va = map_here(cu, h, size);
	CK(cu->cuMemcpyHtoD(va, bytes, size));
	CK(cu->cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
	unmap_here(cu, h, va, size);
	return fd;
}

int st_cuda_make_fd(struct gw_cuda *cu, size_t size, unsigned seed)
{
	unsigned char *buf = malloc(size);
	int fd;

	GW_ASSERT(buf);
	for (size_t i = 0; i < size; i++)
		buf[i] = st_pattern(seed, i);
	fd = st_cuda_make_fd_bytes(cu, buf, size);
	free(buf);
	return fd;
}
