/* SPDX-License-Identifier: MIT */
/* libgpuwarm's typed request builders: the params each one builds, and what each refuses. */
#include <errno.h>

#include "gw-client.h"
#include "gw-test.h"

/* params must equal the JSON text want (member order aside), and survive a request frame. */
static void assert_params(cJSON *params, const char *want)
{
	cJSON *expected = cJSON_Parse(want);
	char *text, *got;
	struct gw_message msg;

	GW_ASSERT(expected);
	GW_ASSERT(params);
	got = cJSON_PrintUnformatted(params);
	if (!cJSON_Compare(params, expected, 1))
		GW_FAIL("built %s, expected %s", got, want);
	text = gw_request_encode(1, GW_METHOD_STATUS, params, 0);
	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(gw_message_parse(text, strlen(text), &msg), 0);
	GW_ASSERT(cJSON_Compare(msg.body, expected, 1));
	gw_message_finish(&msg);
	free(text);
	free(got);
	cJSON_Delete(expected);
	cJSON_Delete(params);
}

GW_TEST(req_simple_methods)
{
	static const char *const gpus[] = { "0", "3b:00.0" };
	cJSON *p = NULL;

	GW_ASSERT_INT_EQ(gw_req_status(&p), 0);
	assert_params(p, "{}");
	GW_ASSERT_INT_EQ(gw_req_drain(gpus, 2, true, 30000, &p), 0);
	assert_params(p, "{\"gpus\":[\"0\",\"3b:00.0\"],\"wait\":true,\"timeout_ms\":30000}");
	GW_ASSERT_INT_EQ(gw_req_drain(NULL, 0, false, -1, &p), 0);
	assert_params(p, "{\"wait\":false}");
	GW_ASSERT_INT_EQ(gw_req_undrain(gpus, 1, &p), 0);
	assert_params(p, "{\"gpus\":[\"0\"]}");
	GW_ASSERT_INT_EQ(gw_req_undrain(NULL, 0, &p), 0);
	assert_params(p, "{}");
	GW_ASSERT_INT_EQ(gw_req_lease_acquire("GPU-1", 0, &p), 0);
	assert_params(p, "{\"gpu\":\"GPU-1\"}");
	GW_ASSERT_INT_EQ(gw_req_lease_acquire(NULL, 4096, &p), 0);
	assert_params(p, "{\"min_free_mib\":4096}");
	GW_ASSERT_INT_EQ(gw_req_lease_acquire("", 0, &p), 0);
	assert_params(p, "{}");
	GW_ASSERT_INT_EQ(gw_req_lease_release(7, &p), 0);
	assert_params(p, "{\"lease\":7}");
	GW_ASSERT_INT_EQ(gw_req_process(123, &p), 0);
	assert_params(p, "{\"pid\":123}");
	GW_ASSERT_INT_EQ(gw_req_lock(123, 10000, &p), 0);
	assert_params(p, "{\"pid\":123,\"timeout_ms\":10000}");
	GW_ASSERT_INT_EQ(gw_req_lock(123, 0, &p), 0);
	assert_params(p, "{\"pid\":123,\"timeout_ms\":0}");
	GW_ASSERT_INT_EQ(gw_req_lock(GW_PID_MAX, -1, &p), 0);
	assert_params(p, "{\"pid\":4194304}");
	/* past GW_LOCK_TIMEOUT_MAX_MS: the daemon refuses it to non-root callers, not the builder */
	GW_ASSERT_INT_EQ(gw_req_lock(1, GW_LOCK_TIMEOUT_MAX_MS + 1, &p), 0);
	assert_params(p, "{\"pid\":1,\"timeout_ms\":60001}");
}

GW_TEST(req_restore_targets)
{
	static const struct gw_gpu_pair pairs[] = { { "GPU-a", "GPU-b" }, { "GPU-c", "GPU-d" } };
	struct gw_req_target t = { .gpu = "1" };
	cJSON *p = NULL;

	GW_ASSERT_INT_EQ(gw_req_restore(5, NULL, &p), 0);
	assert_params(p, "{\"pid\":5}");
	GW_ASSERT_INT_EQ(gw_req_restore(5, &t, &p), 0);
	assert_params(p, "{\"pid\":5,\"gpu\":\"1\"}");
	t.gpu = NULL;
	t.pairs = pairs;
	t.npairs = 2;
	GW_ASSERT_INT_EQ(gw_req_restore(5, &t, &p), 0);
	assert_params(p, "{\"pid\":5,\"gpu_pairs\":[[\"GPU-a\",\"GPU-b\"],[\"GPU-c\",\"GPU-d\"]]}");
}

GW_TEST(req_suspend_and_resume)
{
	struct gw_suspend_opts so = { .timeout_ms = -1 };
	struct gw_resume_opts ro = { 0 };
	struct gw_req_image img = { .nfiles = 3 };
	cJSON *p = NULL;

	GW_ASSERT_INT_EQ(gw_req_suspend(9, NULL, &p), 0);
	assert_params(p, "{\"pid\":9}");
	so.timeout_ms = 5000;
	so.image.nfiles = 1;
	so.dense = true;
	so.chunk_bytes = 1 << 20;
	so.progress = true;
	GW_ASSERT_INT_EQ(gw_req_suspend(9, &so, &p), 0);
	assert_params(p, "{\"pid\":9,\"timeout_ms\":5000,\"image_fd\":0,\"sparse\":false,"
			 "\"chunk_bytes\":1048576,\"progress\":true}");
	so = (struct gw_suspend_opts){ .timeout_ms = -1, .image = { .nfiles = 9 } };
	GW_ASSERT_INT_EQ(gw_req_suspend(9, &so, &p), 0);
	assert_params(p, "{\"pid\":9,\"image_fd\":0,\"segment_fds\":[1,2,3,4,5,6,7,8]}");

	GW_ASSERT_INT_EQ(gw_req_resume(9, NULL, &p), 0);
	assert_params(p, "{\"pid\":9}");
	GW_ASSERT_INT_EQ(gw_req_resume(9, &ro, &p), 0); /* zeroed: the defaults too */
	assert_params(p, "{\"pid\":9}");
	ro.target.gpu = "0";
	ro.image.nfiles = 2;
	ro.image.first = 1;
	ro.threads_frozen = true;
	ro.agent_pid = 40;
	ro.agent_tid = 41;
	ro.progress = true;
	GW_ASSERT_INT_EQ(gw_req_resume(9, &ro, &p), 0);
	assert_params(p, "{\"pid\":9,\"gpu\":\"0\",\"image_fd\":1,\"segment_fds\":[2],"
			 "\"threads_frozen\":true,\"agent_pid\":40,\"agent_tid\":41,"
			 "\"progress\":true}");
	GW_ASSERT_INT_EQ(gw_req_prefill(&img, &p), 0);
	assert_params(p, "{\"image_fd\":0,\"segment_fds\":[1,2]}");
}

GW_TEST(req_refuses_out_of_range)
{
	static const struct gw_gpu_pair half[] = { { "GPU-a", NULL } };
	struct gw_req_target t = { .pairs = half, .npairs = 1 };
	struct gw_suspend_opts so = { .timeout_ms = -1 };
	struct gw_resume_opts ro = { .agent_tid = GW_PID_MAX + 1 };
	struct gw_req_image none = { 0 }, many = { .nfiles = GW_IMAGE_MAX_SEGMENTS + 2 };
	cJSON *sentinel = (cJSON *)&so, *p = sentinel;

	GW_ASSERT_INT_EQ(gw_req_process(0, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_process(GW_PID_MAX + 1, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_drain(NULL, 1, true, -1, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_lease_release(UINT64_MAX, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_restore(1, &t, &p), -EINVAL);
	so.chunk_bytes = 3 << 20; /* not a power of two */
	GW_ASSERT_INT_EQ(gw_req_suspend(1, &so, &p), -EINVAL);
	so.chunk_bytes = 4096;    /* below the image format's smallest chunk */
	GW_ASSERT_INT_EQ(gw_req_suspend(1, &so, &p), -EINVAL);
	so.chunk_bytes = 0;
	so.image = many;
	GW_ASSERT_INT_EQ(gw_req_suspend(1, &so, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_resume(1, &ro, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_prefill(&none, &p), -EINVAL);
	GW_ASSERT_INT_EQ(gw_req_prefill(NULL, &p), -EINVAL);
	GW_ASSERT(p == sentinel); /* untouched on failure */
}

GW_TEST_MAIN()
