/*
 * workq: worker threads fed from a bounded FIFO ring (see workq.h).
 */
#include "workq.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct job {
	workq_fn fn;
	void *arg;
};

struct workq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *ring;
	size_t cap, head, count;
	bool stopping;
	pthread_t *threads;
	unsigned nthreads;
};

static void *worker(void *ud)
{
	struct workq *q = ud;
	for (;;) {
		pthread_mutex_lock(&q->mu);
		while (q->count == 0 && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->count == 0) { /* stopping and drained */
			pthread_mutex_unlock(&q->mu);
			return NULL;
		}
		struct job j = q->ring[q->head];
		q->head = (q->head + 1) % q->cap;
		q->count--;
		pthread_mutex_unlock(&q->mu);
		j.fn(j.arg);
	}
}

struct workq *workq_new(unsigned nthreads, size_t max_queued)
{
	if (nthreads == 0 || max_queued == 0)
		return NULL;
	struct workq *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->ring = calloc(max_queued, sizeof(*q->ring));
	q->threads = calloc(nthreads, sizeof(*q->threads));
	if (!q->ring || !q->threads) {
		free(q->ring);
		free(q->threads);
		free(q);
		return NULL;
	}
	q->cap = max_queued;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	for (unsigned i = 0; i < nthreads; i++) {
		if (pthread_create(&q->threads[i], NULL, worker, q) != 0)
			break;
		q->nthreads++;
	}
	if (q->nthreads == 0) {
		workq_free(q);
		return NULL;
	}
	return q;
}

int workq_submit(struct workq *q, workq_fn fn, void *arg)
{
	int rc = 0;
	pthread_mutex_lock(&q->mu);
	if (q->stopping) {
		rc = -ESHUTDOWN;
	} else if (q->count == q->cap) {
		rc = -EAGAIN;
	} else {
		q->ring[(q->head + q->count) % q->cap] = (struct job){ fn, arg };
		q->count++;
		pthread_cond_signal(&q->cv);
	}
	pthread_mutex_unlock(&q->mu);
	return rc;
}

size_t workq_pending(struct workq *q)
{
	pthread_mutex_lock(&q->mu);
	size_t n = q->count;
	pthread_mutex_unlock(&q->mu);
	return n;
}

void workq_free(struct workq *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = true;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q->ring);
	free(q->threads);
	free(q);
}
