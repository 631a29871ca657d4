/* SPDX-License-Identifier: MIT */
#include "warmctl-harness.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-test.h"

#ifndef WARMCTL_PATH
#define WARMCTL_PATH "warmctl"
#endif

/* ---- the fake daemon ---- */

static const char status_json[] =
	"{\"daemon\": {\"version\": \"0.1.0\", \"protocol\": 1, \"pid\": 1234, \"uptime_s\": 12.5,"
	" \"socket\": \"/run/gpu-warmd/gpu-warmd.sock\", \"staging_mib\": 1024, \"clients\": 2},"
	" \"driver\": {\"loaded\": true, \"library\": \"libcuda.so.1\", \"version\": 13000,"
	" \"checkpoint_api\": true, \"vmm_api\": true, \"error\": null},"
	" \"gpus\": [{\"index\": 0, \"uuid\": \"" UUID0 "\", \"pci_bus_id\": \"0000:3b:00.0\","
	" \"name\": \"NVIDIA H100 80GB HBM3\", \"memory_total_mib\": 81559,"
	" \"memory_free_mib\": 80000, \"state\": \"ready\", \"context\": \"primed\","
	" \"staging\": {\"bytes\": 1073741824, \"buffers\": 4, \"pin_ms\": 520.3},"
	" \"leases\": 1, \"in_flight\": 0, \"error\": null}],"
	" \"leases\": [{\"id\": 7, \"gpu\": 0, \"uuid\": \"" UUID0 "\", \"client_pid\": 99,"
	" \"client_uid\": 1000, \"age_s\": 3.2}],"
	" \"processes\": [{\"pid\": 4242, \"uid\": 1000, \"gpus\": [0, 1],"
	" \"vram_bytes\": 75161927680, \"ranges\": 136, \"state\": \"suspended\","
	" \"image\": {\"store\": \"memory\", \"data_bytes\": 3898466304},"
	" \"agent_tid\": 4250, \"attached\": true},"
	" {\"pid\": 77, \"agent_tid\": 78, \"attached\": false, \"ranges\": 2,"
	" \"vram_bytes\": 4194304, \"held_bytes\": 2097152, \"held_in\": \"file\"}],"
	" \"image_pool\": {\"bytes\": 8589934592, \"free_bytes\": 4691468288, \"pin_ms\": 4812,"
	" \"cache\": {\"entries\": 1, \"bytes\": 3898466304, \"hits\": 5, \"misses\": 2}},"
	" \"others\": {\"processes\": 3, \"leases\": 1},"
	" \"operations\": {\"lock\": {\"ok\": 3, \"failed\": 0}, \"checkpoint\": {\"ok\": 2,"
	" \"failed\": 1}}}";

enum fake_action wt_handler(struct fake_conn *c, const struct gw_message *req, int *fds,
			    unsigned nfds, void *userdata)
{
	struct wt_script *sc = userdata;

	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (fake_is(req, GW_METHOD_HELLO)) {
		if (sc->hello_mismatch) {
			fake_error(c, req->id, GW_ERROR_PROTOCOL_VERSION,
				   "protocol version mismatch (client 1, server 2)", 0);
			return FAKE_CLOSE;
		}
		if (sc->hello_refused) {
			fake_error(c, 0, GW_ERROR_LIMIT, "too many clients (--max-clients 16)", 0);
			return FAKE_CLOSE;
		}
		fake_hello(c, req, sc->hello_version ? sc->hello_version : GW_PROTO_VERSION);
		return FAKE_CONTINUE;
	}
	if (sc->silent)
		return FAKE_CONTINUE;
	if (sc->error_name) {
		fake_error(c, req->id, sc->error_name, sc->error_message, sc->cuda_error);
		return FAKE_CONTINUE;
	}
	if (fake_is(req, GW_METHOD_STATUS))
		fake_reply(c, req->id, status_json, NULL, 0);
	else if (fake_is(req, GW_METHOD_SUSPEND))
		fake_reply(c, req->id,
			   "{\"pid\": 123, \"state\": \"checkpointed\", \"path\": \"driver\","
			   " \"duration_ms\": 812.0, \"steps\": ["
			   "{\"step\": \"lock\", \"duration_ms\": 1.2},"
			   " {\"step\": \"checkpoint\", \"duration_ms\": 810.8}]}", NULL, 0);
	else if (fake_is(req, GW_METHOD_DRAIN) || fake_is(req, GW_METHOD_UNDRAIN))
		fake_reply(c, req->id,
			   "{\"gpus\": [{\"index\": 0, \"uuid\": \"" UUID0 "\","
			   " \"state\": \"drained\"}]}",
			   NULL, 0);
	else if (fake_is(req, GW_METHOD_LEASE_ACQUIRE))
		fake_reply(c, req->id,
			   "{\"lease\": 7, \"gpu\": {\"index\": 0, \"uuid\": \"" UUID0 "\","
			   " \"pci_bus_id\": \"0000:3b:00.0\"}}", NULL, 0);
	else if (fake_is(req, GW_METHOD_PROCESS_STATE))
		fake_reply(c, req->id,
			   "{\"pid\": 123, \"state\": \"locked\", \"restore_tid\": 130}", NULL, 0);
	else
		fake_reply(c, req->id,
			   "{\"pid\": 123, \"state\": \"running\", \"duration_ms\": 12.3}",
			   NULL, 0);
	return FAKE_CONTINUE;
}

/* ---- running warmctl ---- */

static const char *warmctl_path(void)
{
	const char *env = getenv("WARMCTL");

	return env && *env ? env : WARMCTL_PATH;
}

void wt_spawn(const char *const *args, bool want_stdin, bool as_nobody, struct wt_child *ret)
{
	const char *argv[32] = { "warmctl" }, *program;
	int in[2] = { -1, -1 }, out[2], err[2];
	size_t n = 1;

	for (; args[n - 1] && n < 31; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	GW_ASSERT(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
	if (want_stdin)
		GW_ASSERT(pipe2(in, O_CLOEXEC) == 0);
	/* nobody may not reach the checkout: a copy it can run, made before we become nobody */
	program = as_nobody ? gw_test_world_runnable(warmctl_path()) : warmctl_path();
	fflush(NULL);
	ret->pid = fork();
	GW_ASSERT(ret->pid >= 0);
	if (ret->pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(want_stdin ? in[0] : devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		if (as_nobody && (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
				  setresuid(65534, 65534, 65534) < 0))
			_exit(126);
		execv(program, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	if (want_stdin)
		close(in[0]);
	ret->in = in[1];
	ret->out = out[0];
	ret->err = err[0];
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
	char *b = realloc(*buf, *len + n + 1);

	GW_ASSERT(b);
	memcpy(b + *len, data, n);
	*len += n;
	b[*len] = '\0';
	*buf = b;
}

int wt_finish(struct wt_child *ch, char **ret_out, char **ret_err)
{
	char *bufs[2] = { NULL, NULL };
	size_t lens[2] = { 0, 0 };
	struct pollfd p[2] = { { .fd = ch->out, .events = POLLIN },
			       { .fd = ch->err, .events = POLLIN } };
	int open_fds = 2, status;

	append(&bufs[0], &lens[0], "", 0);
	append(&bufs[1], &lens[1], "", 0);
	while (open_fds > 0) {
		GW_ASSERT(poll(p, 2, -1) > 0);
		for (int i = 0; i < 2; i++) {
			char chunk[4096];
			ssize_t n;

			if (p[i].fd < 0 || !p[i].revents)
				continue;
			n = read(p[i].fd, chunk, sizeof(chunk));
			if (n <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				open_fds--;
			} else {
				append(&bufs[i], &lens[i], chunk, (size_t)n);
			}
		}
	}
	if (ch->in >= 0)
		close(ch->in);
	GW_ASSERT(waitpid(ch->pid, &status, 0) == ch->pid);
	*ret_out = bufs[0];
	*ret_err = bufs[1];
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int wt_run(const char *const *args, char **out, char **err)
{
	struct wt_child ch;

	wt_spawn(args, false, false, &ch);
	return wt_finish(&ch, out, err);
}

cJSON *wt_parse_single_json(const char *out)
{
	const char *end = NULL;
	cJSON *doc = cJSON_ParseWithOpts(out, &end, false);

	if (!doc)
		GW_FAIL("stdout is not JSON: '%s'", out);
	GW_ASSERT_STR_EQ(end, "\n"); /* exactly one object, one line */
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(doc, "version")->valueint, 1);
	return doc;
}

void wt_bare_listen(struct wt_bare *b)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	snprintf(b->dir, sizeof(b->dir), "/tmp/gw-warmctl-test-XXXXXX");
	GW_ASSERT(mkdtemp(b->dir));
	snprintf(b->path, sizeof(b->path), "%s/sock", b->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", b->path);
	b->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	GW_ASSERT(b->fd >= 0);
	GW_ASSERT(bind(b->fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	GW_ASSERT(listen(b->fd, 8) == 0);
}

void wt_bare_assert_untouched_and_close(struct wt_bare *b)
{
	GW_ASSERT(accept(b->fd, NULL, NULL) < 0 && errno == EAGAIN);
	close(b->fd);
	unlink(b->path);
	rmdir(b->dir);
}

