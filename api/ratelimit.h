/*
 * ratelimit: token buckets keyed by a string, in bounded memory.
 *
 * A key is whatever the caller limits: a principal ("key:k1", "sub:alice")
 * or a client address ("ip:203.0.113.9"). Each key has a bucket holding up
 * to burst tokens, refilled continuously at rate_per_s; a request takes one
 * token or is refused. Use one table per kind of key (principals, addresses):
 * keys of one kind then cannot push the other kind's buckets out.
 *
 * Memory is fixed at creation: at most max_keys buckets, allocated once.
 * Keys up to RATELIMIT_KEY_INLINE - 1 bytes are kept as given; longer keys
 * are kept as their SHA-256, so the length of a key never costs memory.
 * Lookups use SipHash with a random per-table key, so chosen keys cannot
 * pile into one hash chain.
 *
 * Eviction, when a new key arrives and the table is full: among the
 * RATELIMIT_EVICT_SCAN least recently used buckets, the first that has
 * refilled to burst goes (a full bucket is the same as no bucket: nothing
 * is lost); failing that, the one holding the most tokens goes (the least
 * is lost). An abuser's bucket, drained and used at every request, is
 * therefore evicted only when at least max_keys other keys were used since
 * its last request, and even then it restarts at burst: rotating max_keys
 * keys buys at most burst extra requests for one key. Size max_keys above
 * the number of clients active within burst / rate seconds.
 */
#ifndef SBX_RATELIMIT_H
#define SBX_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_KEY_INLINE 80       /* keys this long or longer are hashed */
#define RATELIMIT_EVICT_SCAN 8        /* LRU candidates examined per eviction */
#define RATELIMIT_MAX_KEYS (1u << 24) /* upper bound on max_keys */
#define RATELIMIT_MAX_RETRY_S 86400   /* retry_after_s never exceeds this */

struct ratelimit;

struct ratelimit_stats {
	size_t keys;       /* buckets held now (<= max_keys) */
	uint64_t allowed;  /* calls that took a token */
	uint64_t refused;  /* calls refused */
	uint64_t evicted;  /* buckets evicted to make room */
};

/* A table of buckets: rate_per_s > 0 tokens per second, burst >= 1 tokens
 * at most, 1 <= max_keys <= RATELIMIT_MAX_KEYS buckets. Returns NULL when a
 * parameter is out of range, memory is short or no random hash key could
 * be had. Free with ratelimit_free. */
struct ratelimit *ratelimit_new(double rate_per_s, double burst, size_t max_keys)
	__attribute__((warn_unused_result));

/* Free the table. NULL is a no-op. */
void ratelimit_free(struct ratelimit *rl);

/* Take a token from key's bucket (created full on first use) at time now_ms
 * (the now_ms() clock; a time earlier than the bucket's last one counts as
 * no time passed). Returns true when allowed. When refused, *retry_after_s
 * (if not NULL) gets the whole seconds until a token will be there, at
 * least 1 and at most RATELIMIT_MAX_RETRY_S: the value for Retry-After.
 * A refused call takes nothing. Thread-safe. rl NULL means no limit: always
 * true. key NULL counts as "". */
bool ratelimit_allow(struct ratelimit *rl, const char *key, int64_t now_ms,
		     int *retry_after_s);

/* Whether ratelimit_allow would allow key now, without taking a token,
 * creating a bucket or changing the LRU order (so peeking at many keys
 * costs no memory and evicts nothing). For limits that count only
 * failures: peek before the costly check, take (ratelimit_allow) only when
 * it fails. *retry_after_s as for ratelimit_allow when false. Thread-safe;
 * rl NULL: true. */
bool ratelimit_peek(struct ratelimit *rl, const char *key, int64_t now_ms,
		    int *retry_after_s);

/* Counters and the number of buckets held. Thread-safe. */
void ratelimit_get_stats(struct ratelimit *rl, struct ratelimit_stats *out);

#endif
