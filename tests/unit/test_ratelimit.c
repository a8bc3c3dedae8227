/*
 * Unit tests for api/ratelimit.c: burst and refusal, refill at the rate with
 * a hand-driven clock, Retry-After values, independent keys, long keys,
 * bounded memory under 1e5 rotating keys with the eviction policy keeping an
 * abuser's drained bucket, and 8 threads sharing a table.
 */
#include "ratelimit.c"

#include "test.h"

#include <pthread.h>
#include <stdio.h>

static void test_siphash_vector(void)
{
	/* the reference vector of the SipHash paper: key 00..0f, input 00..0e */
	uint64_t k[2] = { 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL };
	unsigned char in[15];
	for (int i = 0; i < 15; i++)
		in[i] = (unsigned char)i;
	CHECK(siphash24(k, in, sizeof(in)) == 0xa129ca6149be45e5ULL);
}

static void test_bad_params(void)
{
	CHECK(ratelimit_new(0, 10, 10) == NULL);
	CHECK(ratelimit_new(-1, 10, 10) == NULL);
	CHECK(ratelimit_new(NAN, 10, 10) == NULL);
	CHECK(ratelimit_new(INFINITY, 10, 10) == NULL);
	CHECK(ratelimit_new(1, 0.5, 10) == NULL);
	CHECK(ratelimit_new(1, 10, 0) == NULL);
	CHECK(ratelimit_new(1, 10, (size_t)RATELIMIT_MAX_KEYS + 1) == NULL);
	/* NULL: no limit, and free is a no-op */
	int ra = -7;
	CHECK(ratelimit_allow(NULL, "k", 0, &ra));
	CHECK_INT(ra, -7);
	ratelimit_free(NULL);
}

static void test_burst_then_refuse(void)
{
	struct ratelimit *rl = ratelimit_new(1, 5, 16);
	REQUIRE(rl);
	int ra = 0;
	for (int i = 0; i < 5; i++)
		CHECK(ratelimit_allow(rl, "key:a", 1000, &ra));
	CHECK(!ratelimit_allow(rl, "key:a", 1000, &ra));
	CHECK_INT(ra, 1);
	/* refusals take nothing: one second later exactly one token is back */
	for (int i = 0; i < 10; i++)
		CHECK(!ratelimit_allow(rl, "key:a", 1500, NULL));
	CHECK(ratelimit_allow(rl, "key:a", 2000, &ra));
	CHECK(!ratelimit_allow(rl, "key:a", 2000, &ra));
	struct ratelimit_stats st;
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 1);
	CHECK_INT(st.allowed, 6);
	CHECK_INT(st.refused, 12);
	CHECK_INT(st.evicted, 0);
	ratelimit_free(rl);
}

static void test_refill(void)
{
	struct ratelimit *rl = ratelimit_new(2, 4, 16); /* a token every 500 ms */
	REQUIRE(rl);
	int64_t t = 1000000;
	for (int i = 0; i < 4; i++)
		CHECK(ratelimit_allow(rl, "k", t, NULL));
	CHECK(!ratelimit_allow(rl, "k", t, NULL));
	CHECK(!ratelimit_allow(rl, "k", t + 499, NULL));
	CHECK(ratelimit_allow(rl, "k", t + 500, NULL));
	CHECK(!ratelimit_allow(rl, "k", t + 500, NULL));
	/* partial tokens accumulate across calls */
	CHECK(!ratelimit_allow(rl, "k", t + 750, NULL));
	CHECK(ratelimit_allow(rl, "k", t + 1000, NULL));
	/* a long pause refills to burst, not beyond */
	t += 3600 * 1000;
	int n = 0;
	while (ratelimit_allow(rl, "k", t, NULL) && n < 100)
		n++;
	CHECK_INT(n, 4);
	/* a clock going backwards (another thread's earlier now) adds nothing */
	CHECK(!ratelimit_allow(rl, "k", t - 10000, NULL));
	CHECK(!ratelimit_allow(rl, "k", t + 499, NULL));
	CHECK(ratelimit_allow(rl, "k", t + 500, NULL));
	/* the sustained rate over a minute, at 100 ms steps: 2/s */
	t += 100000;
	n = 0;
	while (ratelimit_allow(rl, "k", t, NULL))
		n++;
	CHECK_INT(n, 4);
	int allowed = 0;
	for (int ms = 100; ms <= 60000; ms += 100)
		allowed += ratelimit_allow(rl, "k", t + ms, NULL);
	CHECK_INT(allowed, 120);
	/* fractional rate with rounding: 0.1/s, one token every 10 s */
	struct ratelimit *slow = ratelimit_new(0.1, 1, 4);
	REQUIRE(slow);
	CHECK(ratelimit_allow(slow, "k", 0, NULL));
	for (int s = 1; s < 10; s++)
		CHECK(!ratelimit_allow(slow, "k", s * 1000, NULL));
	CHECK(ratelimit_allow(slow, "k", 10000, NULL));
	ratelimit_free(slow);
	ratelimit_free(rl);
}

static void test_retry_after(void)
{
	int ra = 0;
	/* 2/s: half a second to the next token, rounded up to 1 */
	struct ratelimit *rl = ratelimit_new(2, 1, 4);
	REQUIRE(rl);
	CHECK(ratelimit_allow(rl, "k", 0, &ra));
	CHECK(!ratelimit_allow(rl, "k", 0, &ra));
	CHECK_INT(ra, 1);
	ratelimit_free(rl);
	/* 0.5/s: 2 s, then 1 s once half a token is back */
	rl = ratelimit_new(0.5, 1, 4);
	REQUIRE(rl);
	CHECK(ratelimit_allow(rl, "k", 0, &ra));
	CHECK(!ratelimit_allow(rl, "k", 0, &ra));
	CHECK_INT(ra, 2);
	CHECK(!ratelimit_allow(rl, "k", 1000, &ra));
	CHECK_INT(ra, 1);
	CHECK(!ratelimit_allow(rl, "k", 1999, &ra));
	CHECK_INT(ra, 1);
	CHECK(ratelimit_allow(rl, "k", 2000, &ra));
	ratelimit_free(rl);
	/* 0.1/s after 3 s: 0.3 tokens, 7 s to go */
	rl = ratelimit_new(0.1, 1, 4);
	REQUIRE(rl);
	CHECK(ratelimit_allow(rl, "k", 0, &ra));
	CHECK(!ratelimit_allow(rl, "k", 3000, &ra));
	CHECK_INT(ra, 7);
	CHECK(!ratelimit_allow(rl, "k", 3001, &ra));
	CHECK_INT(ra, 7);
	CHECK(!ratelimit_allow(rl, "k", 9999, &ra));
	CHECK_INT(ra, 1);
	ratelimit_free(rl);
	/* a tiny rate is capped */
	rl = ratelimit_new(1e-9, 1, 4);
	REQUIRE(rl);
	CHECK(ratelimit_allow(rl, "k", 0, &ra));
	CHECK(!ratelimit_allow(rl, "k", 0, &ra));
	CHECK_INT(ra, RATELIMIT_MAX_RETRY_S);
	ratelimit_free(rl);
}

static void test_independent_keys(void)
{
	struct ratelimit *rl = ratelimit_new(1, 3, 16);
	REQUIRE(rl);
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_allow(rl, "ip:203.0.113.9", 0, NULL));
	CHECK(!ratelimit_allow(rl, "ip:203.0.113.9", 0, NULL));
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_allow(rl, "ip:203.0.113.10", 0, NULL));
	CHECK(!ratelimit_allow(rl, "ip:203.0.113.10", 0, NULL));
	CHECK(ratelimit_allow(rl, "key:abc", 0, NULL));
	CHECK(ratelimit_allow(rl, "", 0, NULL));
	CHECK(ratelimit_allow(rl, NULL, 0, NULL)); /* the same bucket as "" */
	CHECK(ratelimit_allow(rl, "", 0, NULL));
	CHECK(!ratelimit_allow(rl, NULL, 0, NULL));
	/* long keys are hashed: two that differ only at the end stay apart,
	 * and the same long key finds its bucket again */
	char a[300], b[300];
	memset(a, 'x', sizeof(a) - 1);
	a[sizeof(a) - 1] = '\0';
	memcpy(b, a, sizeof(a));
	b[sizeof(b) - 2] = 'y';
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_allow(rl, a, 0, NULL));
	CHECK(!ratelimit_allow(rl, a, 0, NULL));
	CHECK(ratelimit_allow(rl, b, 0, NULL));
	/* a key just under the inline limit, and one at it */
	char c[RATELIMIT_KEY_INLINE + 1];
	memset(c, 'c', sizeof(c));
	c[RATELIMIT_KEY_INLINE - 1] = '\0';
	CHECK(ratelimit_allow(rl, c, 0, NULL));
	c[RATELIMIT_KEY_INLINE - 1] = 'c';
	c[RATELIMIT_KEY_INLINE] = '\0';
	CHECK(ratelimit_allow(rl, c, 0, NULL));
	struct ratelimit_stats st;
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 8);
	ratelimit_free(rl);
}

static void test_eviction_bounded(void)
{
	struct ratelimit *rl = ratelimit_new(1, 10, 1000);
	REQUIRE(rl);
	/* an abuser drains its bucket, then keeps trying while 1e5 other keys
	 * come and go: the table stays at 1000 buckets and the abuser's
	 * bucket is never reset to full */
	int64_t t = 0;
	for (int i = 0; i < 10; i++)
		CHECK(ratelimit_allow(rl, "ip:198.51.100.1", t, NULL));
	int abuser_allowed = 0, abuser_tries = 0, others_allowed = 0;
	char key[64];
	for (int i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "ip:10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
		others_allowed += ratelimit_allow(rl, key, t, NULL);
		if (i % 500 == 0) {
			abuser_allowed += ratelimit_allow(rl, "ip:198.51.100.1", t, NULL);
			abuser_tries++;
		}
	}
	CHECK_INT(others_allowed, 100000);
	CHECK_INT(abuser_allowed, 0);
	CHECK_INT(abuser_tries, 200);
	struct ratelimit_stats st;
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 1000);
	CHECK_INT(st.evicted, 100000 + 1 - 1000);
	CHECK_INT(st.allowed, 10 + 100000);
	CHECK_INT(st.refused, 200);
	/* the table still works: recent keys are found, old ones start full */
	CHECK(ratelimit_allow(rl, "ip:10.1.134.159", t, NULL)); /* i = 99999 */
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 1000);
	ratelimit_free(rl);
}

static void test_eviction_policy(void)
{
	/* rate 1/s, burst 2, room for 3 */
	struct ratelimit *rl = ratelimit_new(1, 2, 3);
	REQUIRE(rl);
	CHECK(ratelimit_allow(rl, "abuser", 0, NULL));
	CHECK(ratelimit_allow(rl, "abuser", 0, NULL)); /* drained, least recent */
	CHECK(ratelimit_allow(rl, "x", 0, NULL));      /* 1 token left */
	CHECK(ratelimit_allow(rl, "y", 0, NULL));      /* 1 token left */
	/* full: plain LRU would drop the abuser; the policy drops the bucket
	 * with the most tokens among the LRU candidates: x */
	CHECK(ratelimit_allow(rl, "z", 0, NULL));
	CHECK(!ratelimit_allow(rl, "abuser", 0, NULL));
	/* x was dropped: it comes back full (2 tokens), evicting again */
	CHECK(ratelimit_allow(rl, "x", 0, NULL));
	CHECK(ratelimit_allow(rl, "x", 0, NULL));
	CHECK(!ratelimit_allow(rl, "x", 0, NULL));
	CHECK(!ratelimit_allow(rl, "abuser", 0, NULL));
	/* two seconds on, every bucket has refilled: a full one goes (nothing
	 * is lost), and the abuser, drained again, stays */
	CHECK(ratelimit_allow(rl, "abuser", 2000, NULL)); /* 2 -> 1 */
	CHECK(ratelimit_allow(rl, "abuser", 2000, NULL)); /* 1 -> 0 */
	CHECK(ratelimit_allow(rl, "w", 2000, NULL));
	struct ratelimit_stats st;
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 3);
	CHECK(!ratelimit_allow(rl, "abuser", 2000, NULL));
	ratelimit_free(rl);
}

static void test_peek(void)
{
	struct ratelimit *rl = ratelimit_new(1, 2, 2);
	REQUIRE(rl);
	int ra = 0;
	/* peeking creates nothing: many keys, no bucket, no eviction */
	int peeked = 0;
	for (int i = 0; i < 100; i++) {
		char key[32];
		snprintf(key, sizeof(key), "ip:%d", i);
		peeked += ratelimit_peek(rl, key, 0, &ra);
	}
	CHECK_INT(peeked, 100);
	struct ratelimit_stats st;
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 0);
	CHECK_INT(st.allowed + st.refused, 0);
	/* failures only: peek, then take on failure */
	CHECK(ratelimit_allow(rl, "ip:a", 0, NULL));
	CHECK(ratelimit_peek(rl, "ip:a", 0, NULL));
	CHECK(ratelimit_peek(rl, "ip:a", 0, NULL)); /* peeking takes nothing */
	CHECK(ratelimit_allow(rl, "ip:a", 0, NULL));
	CHECK(!ratelimit_peek(rl, "ip:a", 0, &ra));
	CHECK_INT(ra, 1);
	CHECK(!ratelimit_peek(rl, "ip:a", 999, &ra));
	CHECK(ratelimit_peek(rl, "ip:a", 1000, &ra));
	/* and does not touch the LRU order: with a and b both at one token,
	 * the older (a) is evicted, peeked at or not */
	CHECK(ratelimit_allow(rl, "ip:a", 5000, NULL)); /* refilled: 2 -> 1 */
	CHECK(ratelimit_allow(rl, "ip:b", 5000, NULL)); /* new: 2 -> 1 */
	CHECK(ratelimit_peek(rl, "ip:a", 5000, NULL));
	CHECK(ratelimit_allow(rl, "ip:c", 5000, NULL));
	ratelimit_get_stats(rl, &st);
	CHECK_INT(st.keys, 2);
	CHECK_INT(st.evicted, 1);
	CHECK(ratelimit_allow(rl, "ip:b", 5000, NULL));  /* b kept its bucket */
	CHECK(!ratelimit_allow(rl, "ip:b", 5000, NULL));
	CHECK(ratelimit_peek(NULL, "x", 0, NULL));
	ratelimit_free(rl);
}

/* ---- threads ---- */

#define NTHREADS 8
#define NCALLS 20000

struct worker {
	struct ratelimit *shared; /* one hot key, fixed clock */
	struct ratelimit *churn;  /* many keys, small table, moving clock */
	int id;
	int shared_allowed;
	int churn_calls;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char key[64];
	for (int i = 0; i < NCALLS; i++) {
		int ra = 0;
		if (ratelimit_allow(w->shared, "key:hot", 5000, &ra))
			w->shared_allowed++;
		else if (ra != 1)
			w->shared_allowed = -1000000; /* a wrong Retry-After */
		snprintf(key, sizeof(key), "ip:t%d-%d", w->id, i % 97);
		(void)ratelimit_allow(w->churn, key, i, NULL);
		w->churn_calls++;
	}
	return NULL;
}

static void test_threads(void)
{
	struct ratelimit *shared = ratelimit_new(1, 100, 64);
	struct ratelimit *churn = ratelimit_new(50, 5, 64);
	REQUIRE(shared && churn);
	pthread_t th[NTHREADS];
	struct worker w[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .shared = shared, .churn = churn, .id = i };
		REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
	}
	int allowed = 0, calls = 0;
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		allowed += w[i].shared_allowed;
		calls += w[i].churn_calls;
	}
	/* the clock does not move: exactly burst tokens were handed out */
	CHECK_INT(allowed, 100);
	struct ratelimit_stats st;
	ratelimit_get_stats(shared, &st);
	CHECK_INT(st.allowed, 100);
	CHECK_INT(st.refused, NTHREADS * NCALLS - 100);
	CHECK_INT(st.keys, 1);
	ratelimit_get_stats(churn, &st);
	CHECK_INT(calls, NTHREADS * NCALLS);
	CHECK_INT(st.allowed + st.refused, NTHREADS * NCALLS);
	CHECK_INT(st.keys, 64);
	CHECK(st.evicted > 0);
	ratelimit_free(shared);
	ratelimit_free(churn);
}

int main(void)
{
	RUN(test_siphash_vector);
	RUN(test_bad_params);
	RUN(test_burst_then_refuse);
	RUN(test_refill);
	RUN(test_retry_after);
	RUN(test_independent_keys);
	RUN(test_eviction_bounded);
	RUN(test_eviction_policy);
	RUN(test_peek);
	RUN(test_threads);
	return test_summary();
}
