/* SPDX-License-Identifier: MIT */
/* Unit tests of the operation engine's step runner (daemon/opengine.h), on a daemon with no
 * driver: steps that only log where and in which order they ran. */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "gw-test.h"
#include "opengine.h"

struct test_op {
	struct gw_op op;
	char log[512];        /* "name," per step run, in order */
	pthread_mutex_t lock;
	int finished;
	int fail_at;          /* a step named "fail" fails with this */
	pthread_t threads[8]; /* of the steps named "t<i>" */
	struct event *later;  /* an asynchronous step's completion */
	int nasync;
	cJSON *reply;
};

#define T(o) GW_OP_OF(o, struct test_op)

static void note(struct gw_op *op, const char *what)
{
	struct test_op *t = T(op);

	pthread_mutex_lock(&t->lock);
	strncat(t->log, what, sizeof(t->log) - strlen(t->log) - 1);
	strncat(t->log, ",", sizeof(t->log) - strlen(t->log) - 1);
	pthread_mutex_unlock(&t->lock);
}

/* Every step logs the name of the step the runner is on (current is set before it starts). */
static int step_note(struct gw_op *op)
{
	const char *name = op->current->name ? op->current->name : "-";

	note(op, name);
	if (name[0] == 't' && name[1] >= '0' && name[1] <= '7')
		T(op)->threads[name[1] - '0'] = pthread_self();
	if (strcmp(name, "fail") == 0) {
		gw_op_fail(op, "test.Error", "the step failed on purpose");
		return T(op)->fail_at;
	}
	if (strcmp(name, "slow") == 0) {
		struct timespec ts = { 0, 30 * 1000000 };

		nanosleep(&ts, NULL);
	}
	return 0;
}

static int step_skip(struct gw_op *op)
{
	note(op, "skip");
	return GW_STEP_SKIP;
}

static int undo_fails(struct gw_op *op)
{
	note(op, op->current->name);
	return -EIO;
}

static void gpu_note(struct gw_op *op, unsigned gpu)
{
	char what[16];

	snprintf(what, sizeof(what), "gpu%u", gpu);
	note(op, what); /* order between GPUs is not fixed: the test sorts nothing, it counts */
}

static int never(struct gw_op *op)
{
	(void)op;
	return 0;
}

static uint64_t two_gpus(struct gw_op *op)
{
	(void)op;
	return 3;
}

static void finish(struct gw_op *op)
{
	struct test_op *t = T(op);

	t->finished++;
	note(op, "finish");
	if (!op->failed)
		t->reply = gw_op_result_json(op);
	gw_op_release(op);
	event_base_loopbreak(op->d->base);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct test_op *t = arg;

	(void)fd;
	(void)what;
	note(&t->op, "later");
	gw_op_step_done(&t->op, t->nasync == 2 ? -EIO : 0); /* the second one fails */
}

/* Completes later, from a timer on the loop. */
static int step_async(struct gw_op *op)
{
	struct timeval tv = { 0, 20 * 1000 };
	struct test_op *t = T(op);

	note(op, op->current->name);
	t->nasync++;
	if (t->later)
		event_free(t->later);
	t->later = evtimer_new(op->d->base, on_later, t);
	evtimer_add(t->later, &tv);
	return GW_STEP_ASYNC;
}

/* Completes before it returns (an agent call that failed at once). */
static int step_async_early(struct gw_op *op)
{
	note(op, op->current->name);
	gw_op_step_done(op, 0);
	return GW_STEP_ASYNC;
}

struct fixture {
	struct event_base *base;
	struct gw_daemon d;
};

static void fixture_init(struct fixture *fx)
{
	memset(fx, 0, sizeof(*fx));
	fx->base = event_base_new();
	GW_ASSERT(fx->base != NULL);
	fx->d.base = fx->base;
	fx->d.gpu_table.count = 2;
	for (unsigned i = 0; i < 2; i++) {
		fx->d.gpu_table.gpus[i].index = i;
		fx->d.gpu_table.gpus[i].state = GW_GPU_READY;
	}
	GW_ASSERT_INT_EQ(gw_worker_pool_create(fx->base, 2, &fx->d.workers), 0);
}

static void fixture_finish(struct fixture *fx)
{
	gw_worker_pool_destroy(fx->d.workers);
	gw_opengine_finish(&fx->d);
	event_base_free(fx->base);
}

static void run_op(struct fixture *fx, struct test_op *t, const struct gw_op_plan *plan)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	gw_op_init(&t->op, &fx->d, NULL, plan, 42, 0, 0);
	gw_op_gpus_begin(&t->op, 1);
	GW_ASSERT_INT_EQ(fx->d.gpu_table.gpus[0].in_flight, 1);
	gw_op_start(&t->op);
	if (!t->finished)
		event_base_dispatch(fx->base);
	GW_ASSERT_INT_EQ(t->finished, 1);
	GW_ASSERT_INT_EQ(fx->d.gpu_table.gpus[0].in_flight, 0);
	if (t->later)
		event_free(t->later);
	pthread_mutex_destroy(&t->lock);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct gw_step order_steps[] = {
	{ .name = "a", .thread = GW_STEP_LOOP, .run = step_note },
	{ .name = "t0", .thread = GW_STEP_WORKER, .run = step_note },
	{ .name = "t1", .thread = GW_STEP_TRACER, .run = step_note },
	{ .name = "copy", .thread = GW_STEP_GPUS, .run_gpu = gpu_note },
	{ .name = "passed by", .thread = GW_STEP_LOOP, .when = never, .run = step_note },
	{ .name = "skip", .thread = GW_STEP_LOOP, .run = step_skip },
	{ .thread = GW_STEP_WORKER, .run = step_note },
	{ .name = "t2", .thread = GW_STEP_TRACER, .run = step_note },
	{ .name = "z", .thread = GW_STEP_LOOP, .run = step_note },
};
static const struct gw_step order_always[] = {
	{ .name = "t3", .thread = GW_STEP_TRACER, .run = step_note },
};
static const struct gw_op_plan order_plan = {
	.operation = "order", .steps = order_steps, .nsteps = N(order_steps),
	.always = order_always, .nalways = N(order_always), .gpus = two_gpus, .finish = finish,
};

GW_TEST(step_runner_walks_the_plan_in_order)
{
	struct fixture fx;
	struct test_op t;
	cJSON *steps;

	fixture_init(&fx);
	run_op(&fx, &t, &order_plan);
	GW_ASSERT(strncmp(t.log, "a,t0,t1,", 8) == 0);
	GW_ASSERT_STR_CONTAINS(t.log, "gpu0,");
	GW_ASSERT_STR_CONTAINS(t.log, "gpu1,");
	GW_ASSERT_STR_CONTAINS(t.log, ",skip,-,t2,z,t3,finish,");
	GW_ASSERT(strstr(t.log, "passed by") == NULL);
	/* Recorded: the named steps that worked, not the skipped or unnamed ones. */
	GW_ASSERT_INT_EQ(t.op.res.nsteps, 6);
	GW_ASSERT_STR_EQ(t.op.res.steps[0].name, "a");
	GW_ASSERT_STR_EQ(t.op.res.steps[3].name, "copy");
	GW_ASSERT_STR_EQ(t.op.res.steps[5].name, "z");
	/* The tracer steps share one thread, which is not the loop's. */
	GW_ASSERT(pthread_equal(t.threads[1], t.threads[2]));
	GW_ASSERT(pthread_equal(t.threads[1], t.threads[3]));
	GW_ASSERT(!pthread_equal(t.threads[1], pthread_self()));
	GW_ASSERT(!pthread_equal(t.threads[0], pthread_self()));
	/* The reply is built from the record. */
	GW_ASSERT(t.reply != NULL);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(t.reply, "pid") ? 1 : 0, 0); /* res.pid not set */
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(t.reply, "operation")->valuestring, "order");
	steps = cJSON_GetObjectItem(t.reply, "steps");
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(steps), 6);
	GW_ASSERT_STR_EQ(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, 1), "step")->valuestring,
			 "t0");
	cJSON_Delete(t.reply);
	fixture_finish(&fx);
}

static const struct gw_step undo_a[] = {
	{ .name = "undo a", .thread = GW_STEP_WORKER, .run = step_note },
};
static const struct gw_step undo_b[] = {
	{ .name = "undo b1", .thread = GW_STEP_LOOP, .run = step_note },
	{ .name = "undo b2", .thread = GW_STEP_TRACER, .run = step_note },
};
static const struct gw_step undo_fail[] = {
	{ .name = "undo fail", .thread = GW_STEP_WORKER, .run = step_note },
};
static const struct gw_step undo_steps[] = {
	{ .name = "a", .thread = GW_STEP_LOOP, .run = step_note, .undo = undo_a, .nundo = 1 },
	{ .name = "b", .thread = GW_STEP_WORKER, .run = step_note, .undo = undo_b, .nundo = 2 },
	{ .name = "fail", .thread = GW_STEP_WORKER, .run = step_note, .undo = undo_fail,
	  .nundo = 1 },
	{ .name = "never", .thread = GW_STEP_LOOP, .run = step_note, .undo = undo_a, .nundo = 1 },
};
static const struct gw_step undo_always[] = {
	{ .name = "always", .thread = GW_STEP_LOOP, .run = step_note },
};
static const struct gw_op_plan undo_plan = {
	.operation = "undo", .steps = undo_steps, .nsteps = N(undo_steps),
	.always = undo_always, .nalways = 1, .gpus = two_gpus, .finish = finish,
};

GW_TEST(failure_part_way_runs_the_undo_steps_latest_first)
{
	struct fixture fx;
	struct test_op t;

	fixture_init(&fx);
	run_op(&fx, &t, &undo_plan);
	GW_ASSERT_STR_EQ(t.log, "a,b,fail,undo fail,undo b1,undo b2,undo a,always,finish,");
	GW_ASSERT(t.op.failed);
	GW_ASSERT_STR_EQ(t.op.error_name, "test.Error");
	GW_ASSERT_STR_EQ(t.op.error, "the step failed on purpose");
	/* Only the steps that worked are recorded: none of the undo. */
	GW_ASSERT_INT_EQ(t.op.res.nsteps, 2);
	fixture_finish(&fx);
}

static const struct gw_step undo_b_fails[] = {
	{ .name = "undo b1", .thread = GW_STEP_LOOP, .run = undo_fails },
	{ .name = "undo b2", .thread = GW_STEP_LOOP, .run = step_note },
};
static const struct gw_step undo_fails_steps[] = {
	{ .name = "a", .thread = GW_STEP_LOOP, .run = step_note, .undo = undo_a, .nundo = 1 },
	{ .name = "b", .thread = GW_STEP_LOOP, .run = step_note, .undo = undo_b_fails, .nundo = 2 },
	{ .name = "fail", .thread = GW_STEP_LOOP, .run = step_note },
};
static const struct gw_op_plan undo_fails_plan = {
	.operation = "undo", .steps = undo_fails_steps, .nsteps = N(undo_fails_steps),
	.gpus = two_gpus, .finish = finish,
};

GW_TEST(a_failed_undo_step_ends_only_its_own_list)
{
	struct fixture fx;
	struct test_op t;

	fixture_init(&fx);
	run_op(&fx, &t, &undo_fails_plan);
	GW_ASSERT_STR_EQ(t.log, "a,b,fail,undo b1,undo a,finish,");
	fixture_finish(&fx);
}

static const struct gw_step timed_steps[] = {
	{ .name = "quick", .thread = GW_STEP_LOOP, .run = step_note },
	{ .name = "slow", .thread = GW_STEP_WORKER, .run = step_note },
	{ .thread = GW_STEP_WORKER, .run = step_note },
	{ .name = "quick", .thread = GW_STEP_LOOP, .run = step_note },
};
static const struct gw_op_plan timed_plan = {
	.operation = "timed", .steps = timed_steps, .nsteps = N(timed_steps), .gpus = two_gpus,
	.finish = finish,
};

GW_TEST(step_times_are_recorded)
{
	struct fixture fx;
	struct test_op t;

	fixture_init(&fx);
	run_op(&fx, &t, &timed_plan);
	GW_ASSERT_INT_EQ(t.op.res.nsteps, 3);
	GW_ASSERT_STR_EQ(t.op.res.steps[1].name, "slow");
	GW_ASSERT(t.op.res.steps[1].ms >= 25);
	GW_ASSERT(t.op.res.steps[0].ms < 25);
	GW_ASSERT(t.op.res.steps[2].ms < 25);
	GW_ASSERT(gw_op_step_ms(&t.op, "slow") == t.op.res.steps[1].ms);
	fixture_finish(&fx);
}

static const struct gw_step async_steps[] = {
	{ .name = "call", .thread = GW_STEP_LOOP, .run = step_async },
	{ .name = "early", .thread = GW_STEP_LOOP, .run = step_async_early },
	{ .name = "next", .thread = GW_STEP_WORKER, .run = step_note },
	{ .name = "fails later", .thread = GW_STEP_LOOP, .run = step_async, .undo = undo_a,
	  .nundo = 1 },
	{ .name = "never", .thread = GW_STEP_LOOP, .run = step_note },
};
static const struct gw_op_plan async_plan = {
	.operation = "async", .steps = async_steps, .nsteps = N(async_steps), .gpus = two_gpus,
	.finish = finish,
};

GW_TEST(async_steps_complete_back_into_the_runner)
{
	struct fixture fx;
	struct test_op t;

	fixture_init(&fx);
	run_op(&fx, &t, &async_plan);
	GW_ASSERT_STR_EQ(t.log, "call,later,early,next,fails later,later,undo a,finish,");
	GW_ASSERT(t.op.failed); /* with the runner's own message: the step set none */
	GW_ASSERT_STR_CONTAINS(t.op.error, "fails later");
	GW_ASSERT_INT_EQ(t.op.res.nsteps, 3);
	GW_ASSERT_STR_EQ(t.op.res.steps[0].name, "call");
	GW_ASSERT(t.op.res.steps[0].ms >= 15);
	fixture_finish(&fx);
}

GW_TEST_MAIN()
