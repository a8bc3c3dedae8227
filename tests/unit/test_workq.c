/*
 * Unit tests for controller/workq.c: every job runs once, a full queue
 * refuses instead of growing, and freeing drains what was queued.
 */
#include "test.h"
#include "util.h"
#include "workq.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static atomic_int ran;

static void count(void *arg)
{
	(void)arg;
	ran++;
}

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;

static void blocked(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&gate); /* held by the test until it opens the gate */
	pthread_mutex_unlock(&gate);
	ran++;
}

static void test_runs_all(void)
{
	ran = 0;
	struct workq *q = workq_new(4, 2000);
	REQUIRE(q);
	for (int i = 0; i < 1000; i++)
		CHECK_INT(workq_submit(q, count, NULL), 0);
	workq_free(q);
	CHECK_INT(ran, 1000);
}

static void test_bounded(void)
{
	ran = 0;
	pthread_mutex_lock(&gate);
	struct workq *q = workq_new(1, 3);
	REQUIRE(q);
	CHECK_INT(workq_submit(q, blocked, NULL), 0);
	/* wait until the worker holds the first job */
	for (int i = 0; i < 100 && workq_pending(q) != 0; i++)
		usleep(10000);
	CHECK_INT(workq_pending(q), 0);
	CHECK_INT(workq_submit(q, blocked, NULL), 0);
	CHECK_INT(workq_submit(q, blocked, NULL), 0);
	CHECK_INT(workq_submit(q, blocked, NULL), 0);
	CHECK_INT(workq_submit(q, blocked, NULL), -EAGAIN);
	CHECK_INT(workq_pending(q), 3);
	pthread_mutex_unlock(&gate);
	workq_free(q);
	CHECK_INT(ran, 4);
	CHECK(workq_new(0, 1) == NULL);
	workq_free(NULL);
}

int main(void)
{
	RUN(test_runs_all);
	RUN(test_bounded);
	return test_summary();
}
