/* SPDX-License-Identifier: MIT */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

struct gw_job {
	gw_work_fn work;
	gw_done_fn done;
	void *data;
	enum gw_work_class cls;
	struct gw_job *next;
};

struct gw_job_queue {
	struct gw_job *head, *tail;
};

struct gw_worker_pool {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct gw_job_queue todo[2];  /* by class; protected by lock */
	unsigned running_user;        /* user jobs on threads now; protected by lock */
	struct gw_job_queue finished; /* protected by lock */
	int stopping;                 /* protected by lock */
	unsigned pending;             /* loop thread only */
	unsigned nthreads;
	pthread_t *threads;
	int event_fd;
	struct event *done_ev;
};

static void queue_push(struct gw_job_queue *q, struct gw_job *job)
{
	job->next = NULL;
	if (q->tail)
		q->tail->next = job;
	else
		q->head = job;
	q->tail = job;
}

static struct gw_job *queue_pop(struct gw_job_queue *q)
{
	struct gw_job *job = q->head;

	if (job) {
		q->head = job->next;
		if (!q->head)
			q->tail = NULL;
	}
	return job;
}

/* The next job a free thread may take: privileged ones first; a user job only while another
 * thread stays free for privileged work. Called with the lock held. */
static struct gw_job *next_job(struct gw_worker_pool *pool)
{
	struct gw_job *job = queue_pop(&pool->todo[GW_WORK_PRIVILEGED]);

	if (job)
		return job;
	if (pool->running_user + 1 >= pool->nthreads && pool->nthreads > 1)
		return NULL;
	job = queue_pop(&pool->todo[GW_WORK_USER]);
	if (job)
		pool->running_user++;
	return job;
}

static void *worker_main(void *arg)
{
	struct gw_worker_pool *pool = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct gw_job *job = next_job(pool);

		if (!job) {
			if (pool->stopping && !pool->todo[0].head && !pool->todo[1].head)
				break;
			pthread_cond_wait(&pool->wake, &pool->lock);
			continue;
		}
		pthread_mutex_unlock(&pool->lock);
		job->work(job->data);
		pthread_mutex_lock(&pool->lock);
		if (job->cls == GW_WORK_USER) {
			pool->running_user--;
			pthread_cond_broadcast(&pool->wake); /* a queued user job may go now */
		}
		queue_push(&pool->finished, job);
		if (write(pool->event_fd, &one, sizeof(one)) < 0)
			gw_warn("worker: cannot signal the event loop: %m, ignoring");
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void run_finished(struct gw_worker_pool *pool)
{
	for (;;) {
		struct gw_job *job;

		pthread_mutex_lock(&pool->lock);
		job = queue_pop(&pool->finished);
		pthread_mutex_unlock(&pool->lock);
		if (!job)
			break;
		pool->pending--;
		if (job->done)
			job->done(job->data);
		free(job);
	}
}

static void on_jobs_done(evutil_socket_t fd, short what, void *arg)
{
	uint64_t count;

	(void)what;
	if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		gw_warn("worker: reading the event fd failed: %m, ignoring");
	run_finished(arg);
}

int gw_worker_pool_create(struct event_base *base, unsigned threads,
			  struct gw_worker_pool **ret_pool)
{
	struct gw_worker_pool *pool;
	int r;

	if (threads == 0)
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->event_fd = -1;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pool->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pool->event_fd < 0) {
		r = -errno;
		goto fail;
	}
	pool->done_ev = event_new(base, pool->event_fd, EV_READ | EV_PERSIST, on_jobs_done, pool);
	if (!pool->done_ev || event_add(pool->done_ev, NULL) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	pool->threads = calloc(threads, sizeof(*pool->threads));
	if (!pool->threads) {
		r = -ENOMEM;
		goto fail;
	}
	for (; pool->nthreads < threads; pool->nthreads++) {
		r = -pthread_create(&pool->threads[pool->nthreads], NULL, worker_main, pool);
		if (r < 0)
			goto fail;
	}
	*ret_pool = pool;
	return 0;
fail:
	gw_worker_pool_destroy(pool);
	return r;
}

void gw_worker_pool_destroy(struct gw_worker_pool *pool)
{
	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = 1;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	run_finished(pool);
	free(pool->threads);
	if (pool->done_ev)
		event_free(pool->done_ev);
	if (pool->event_fd >= 0)
		close(pool->event_fd);
	pthread_cond_destroy(&pool->wake);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

int gw_worker_submit_class(struct gw_worker_pool *pool, enum gw_work_class cls, gw_work_fn work,
			   gw_done_fn done, void *data)
{
	struct gw_job *job = calloc(1, sizeof(*job));

	if (!job)
		return -ENOMEM;
	job->work = work;
	job->done = done;
	job->data = data;
	job->cls = cls == GW_WORK_USER ? GW_WORK_USER : GW_WORK_PRIVILEGED;
	pthread_mutex_lock(&pool->lock);
	if (pool->stopping) {
		pthread_mutex_unlock(&pool->lock);
		free(job);
		return -ESHUTDOWN;
	}
	queue_push(&pool->todo[job->cls], job);
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	pool->pending++;
	return 0;
}

int gw_worker_submit(struct gw_worker_pool *pool, gw_work_fn work, gw_done_fn done, void *data)
{
	return gw_worker_submit_class(pool, GW_WORK_PRIVILEGED, work, done, data);
}

unsigned gw_worker_pending(const struct gw_worker_pool *pool)
{
	return pool->pending;
}
