/*
 * workq: a fixed pool of worker threads for blocking work (calls to the
 * Kubernetes API server), so that the event loop never blocks on them.
 *
 * Jobs run in submission order per pool (FIFO), each on one worker. The queue
 * is bounded: submission fails with -EAGAIN when it is full, and the caller
 * answers 503 rather than queueing without limit.
 */
#ifndef SBX_WORKQ_H
#define SBX_WORKQ_H

#include <stddef.h>

struct workq;

typedef void (*workq_fn)(void *arg);

/* Start nthreads workers with room for max_queued waiting jobs. */
struct workq *workq_new(unsigned nthreads, size_t max_queued);

/* Queue fn(arg). Returns 0, -EAGAIN when the queue is full, or -ESHUTDOWN
 * after workq_free has begun. On failure fn is not called and arg stays the
 * caller's. */
int workq_submit(struct workq *q, workq_fn fn, void *arg) __attribute__((warn_unused_result));

/* Jobs waiting (not running). */
size_t workq_pending(struct workq *q);

/* Run every queued job, stop the workers and free the pool. NULL is a no-op. */
void workq_free(struct workq *q);

#endif
