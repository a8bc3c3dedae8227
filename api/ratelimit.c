/*
 * ratelimit: token buckets in a fixed array of max_keys entries, found
 * through a SipHash-keyed chained hash index and ordered by a doubly linked
 * least-recently-used list (both by array index, so nothing is allocated
 * after ratelimit_new). One mutex guards it all: a call is a hash, a short
 * chain walk and a few arithmetic operations.
 */
#include "ratelimit.h"

#include "util.h"

#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RL_NONE UINT32_MAX
#define RL_SHA256_LEN 32

struct rl_entry {
	uint64_t hash;
	double tokens;        /* as of last_ms */
	int64_t last_ms;
	uint32_t hnext;       /* next in the hash chain */
	uint32_t prev, next;  /* LRU list: prev is more recent */
	unsigned char klen;
	bool hashed;          /* key holds the SHA-256 of a long key */
	char key[RATELIMIT_KEY_INLINE];
};

struct ratelimit {
	pthread_mutex_t mu;
	double rate_per_ms;
	double rate_per_s;
	double burst;
	size_t max_keys;
	size_t count;          /* entries [0, count) are in use */
	uint32_t mask;         /* heads has mask + 1 slots */
	uint32_t *heads;
	struct rl_entry *e;
	uint32_t lru_first;    /* most recently used */
	uint32_t lru_last;     /* least recently used */
	uint64_t sipkey[2];
	uint64_t allowed, refused, evicted;
};

/* ---- SipHash-2-4 (Aumasson and Bernstein), 64-bit output ---- */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                              \
	do {                                                                  \
		v0 += v1;                                                     \
		v1 = ROTL64(v1, 13);                                          \
		v1 ^= v0;                                                     \
		v0 = ROTL64(v0, 32);                                          \
		v2 += v3;                                                     \
		v3 = ROTL64(v3, 16);                                          \
		v3 ^= v2;                                                     \
		v0 += v3;                                                     \
		v3 = ROTL64(v3, 21);                                          \
		v3 ^= v0;                                                     \
		v2 += v1;                                                     \
		v1 = ROTL64(v1, 17);                                          \
		v1 ^= v2;                                                     \
		v2 = ROTL64(v2, 32);                                          \
	} while (0)

static uint64_t load_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t siphash24(const uint64_t k[2], const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t v0 = 0x736f6d6570736575ULL ^ k[0];
	uint64_t v1 = 0x646f72616e646f6dULL ^ k[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ k[0];
	uint64_t v3 = 0x7465646279746573ULL ^ k[1];
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t m = load_le64(p + i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t j = 0; i + j < len; j++)
		b |= (uint64_t)p[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- keys ---- */

struct rl_key {
	unsigned char len;
	bool hashed;
	char bytes[RATELIMIT_KEY_INLINE];
};

/* The stored form of key: itself when short, else its SHA-256. 0, or -1 when
 * the digest failed (out of memory inside OpenSSL). */
static int key_form(const char *key, struct rl_key *k)
{
	size_t n = strlen(key);
	if (n < RATELIMIT_KEY_INLINE) {
		k->len = (unsigned char)n;
		k->hashed = false;
		memcpy(k->bytes, key, n);
		return 0;
	}
	unsigned char md[RL_SHA256_LEN];
	unsigned int mdlen = 0;
	if (EVP_Digest(key, n, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != RL_SHA256_LEN)
		return -1;
	k->len = RL_SHA256_LEN;
	k->hashed = true;
	memcpy(k->bytes, md, RL_SHA256_LEN);
	return 0;
}

static bool key_equal(const struct rl_entry *e, const struct rl_key *k)
{
	return e->hashed == k->hashed && e->klen == k->len &&
	       memcmp(e->key, k->bytes, k->len) == 0;
}

/* ---- LRU list and hash chains, all by index ---- */

static void lru_unlink(struct ratelimit *rl, uint32_t i)
{
	struct rl_entry *e = &rl->e[i];
	if (e->prev != RL_NONE)
		rl->e[e->prev].next = e->next;
	else
		rl->lru_first = e->next;
	if (e->next != RL_NONE)
		rl->e[e->next].prev = e->prev;
	else
		rl->lru_last = e->prev;
	e->prev = e->next = RL_NONE;
}

static void lru_push_first(struct ratelimit *rl, uint32_t i)
{
	struct rl_entry *e = &rl->e[i];
	e->prev = RL_NONE;
	e->next = rl->lru_first;
	if (rl->lru_first != RL_NONE)
		rl->e[rl->lru_first].prev = i;
	else
		rl->lru_last = i;
	rl->lru_first = i;
}

static void chain_remove(struct ratelimit *rl, uint32_t i)
{
	uint32_t *link = &rl->heads[rl->e[i].hash & rl->mask];
	while (*link != RL_NONE && *link != i)
		link = &rl->e[*link].hnext;
	if (*link == i)
		*link = rl->e[i].hnext;
	rl->e[i].hnext = RL_NONE;
}

/* Tokens in e's bucket at time now, without changing it. */
static double tokens_at(const struct ratelimit *rl, const struct rl_entry *e, int64_t now)
{
	if (now <= e->last_ms)
		return e->tokens;
	double t = e->tokens + (double)(now - e->last_ms) * rl->rate_per_ms;
	return t < rl->burst ? t : rl->burst;
}

/* Free a slot by evicting one bucket (see the policy in ratelimit.h). */
static uint32_t evict(struct ratelimit *rl, int64_t now)
{
	uint32_t victim = rl->lru_last, i = rl->lru_last;
	double most = -1.0;
	for (int n = 0; n < RATELIMIT_EVICT_SCAN && i != RL_NONE; n++) {
		double t = tokens_at(rl, &rl->e[i], now);
		if (t >= rl->burst) {
			victim = i;
			break;
		}
		if (t > most) {
			most = t;
			victim = i;
		}
		i = rl->e[i].prev;
	}
	chain_remove(rl, victim);
	lru_unlink(rl, victim);
	rl->evicted++;
	return victim;
}

/* ---- public ---- */

struct ratelimit *ratelimit_new(double rate_per_s, double burst, size_t max_keys)
{
	if (!(rate_per_s > 0) || !isfinite(rate_per_s) || !(burst >= 1) ||
	    !isfinite(burst) || max_keys < 1 || max_keys > RATELIMIT_MAX_KEYS)
		return NULL;
	struct ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return NULL;
	size_t nheads = 16;
	while (nheads < 2 * max_keys)
		nheads *= 2;
	rl->heads = malloc(nheads * sizeof(*rl->heads));
	rl->e = calloc(max_keys, sizeof(*rl->e));
	if (!rl->heads || !rl->e || random_bytes(rl->sipkey, sizeof(rl->sipkey)) != 0 ||
	    pthread_mutex_init(&rl->mu, NULL) != 0) {
		free(rl->heads);
		free(rl->e);
		free(rl);
		return NULL;
	}
	memset(rl->heads, 0xff, nheads * sizeof(*rl->heads)); /* RL_NONE */
	rl->mask = (uint32_t)(nheads - 1);
	rl->rate_per_s = rate_per_s;
	rl->rate_per_ms = rate_per_s / 1000.0;
	rl->burst = burst;
	rl->max_keys = max_keys;
	rl->lru_first = rl->lru_last = RL_NONE;
	return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
	if (!rl)
		return;
	pthread_mutex_destroy(&rl->mu);
	free(rl->heads);
	free(rl->e);
	free(rl);
}

/* The entry for k, or RL_NONE. Called with the lock. */
static uint32_t find(const struct ratelimit *rl, const struct rl_key *k, uint64_t h)
{
	for (uint32_t i = rl->heads[h & rl->mask]; i != RL_NONE; i = rl->e[i].hnext)
		if (rl->e[i].hash == h && key_equal(&rl->e[i], k))
			return i;
	return RL_NONE;
}

/* The entry for k, made the most recent, created (full) when missing.
 * Called with the lock. */
static struct rl_entry *lookup(struct ratelimit *rl, const struct rl_key *k, int64_t now)
{
	uint64_t h = siphash24(rl->sipkey, k->bytes, k->len);
	uint32_t i = find(rl, k, h);
	if (i != RL_NONE) {
		lru_unlink(rl, i);
		lru_push_first(rl, i);
		return &rl->e[i];
	}
	uint32_t *head = &rl->heads[h & rl->mask];
	i = rl->count < rl->max_keys ? (uint32_t)rl->count++ : evict(rl, now);
	struct rl_entry *e = &rl->e[i];
	e->hash = h;
	e->tokens = rl->burst;
	e->last_ms = now;
	e->klen = k->len;
	e->hashed = k->hashed;
	memcpy(e->key, k->bytes, k->len);
	e->hnext = *head;
	*head = i;
	lru_push_first(rl, i);
	return e;
}

/* The stored form of key (NULL counts as ""). */
static void key_of(const char *key, struct rl_key *k)
{
	if (key_form(key ? key : "", k) != 0) {
		/* no digest: fall back on the key's first bytes, still a bucket */
		k->len = RATELIMIT_KEY_INLINE - 1;
		k->hashed = true;
		memcpy(k->bytes, key, k->len);
	}
}

/* The epsilon absorbs rounding in the refill (0.1 * 10 < 1). */
static bool has_token(double tokens)
{
	return tokens >= 1.0 - 1e-9;
}

/* Whole seconds until a bucket holding tokens has one, in [1, max]. */
static int retry_after(const struct ratelimit *rl, double tokens)
{
	/* rounded up; the epsilon keeps 2.0000000001 at 2 */
	double s = (1.0 - tokens) / rl->rate_per_s - 1e-9;
	if (s > RATELIMIT_MAX_RETRY_S)
		s = RATELIMIT_MAX_RETRY_S;
	int whole = (int)s;
	if (whole < s)
		whole++;
	return whole < 1 ? 1 : whole;
}

bool ratelimit_allow(struct ratelimit *rl, const char *key, int64_t now_ms,
		     int *retry_after_s)
{
	if (!rl)
		return true;
	struct rl_key k;
	key_of(key, &k);
	pthread_mutex_lock(&rl->mu);
	struct rl_entry *e = lookup(rl, &k, now_ms);
	if (now_ms > e->last_ms) {
		e->tokens = tokens_at(rl, e, now_ms);
		e->last_ms = now_ms;
	}
	bool ok = has_token(e->tokens);
	if (ok) {
		e->tokens = e->tokens >= 1.0 ? e->tokens - 1.0 : 0.0;
		rl->allowed++;
	} else {
		rl->refused++;
		if (retry_after_s)
			*retry_after_s = retry_after(rl, e->tokens);
	}
	pthread_mutex_unlock(&rl->mu);
	return ok;
}

bool ratelimit_peek(struct ratelimit *rl, const char *key, int64_t now_ms,
		    int *retry_after_s)
{
	if (!rl)
		return true;
	struct rl_key k;
	key_of(key, &k);
	uint64_t h = siphash24(rl->sipkey, k.bytes, k.len);
	pthread_mutex_lock(&rl->mu);
	uint32_t i = find(rl, &k, h);
	double tokens = i == RL_NONE ? rl->burst : tokens_at(rl, &rl->e[i], now_ms);
	bool ok = has_token(tokens);
	if (!ok && retry_after_s)
		*retry_after_s = retry_after(rl, tokens);
	pthread_mutex_unlock(&rl->mu);
	return ok;
}

void ratelimit_get_stats(struct ratelimit *rl, struct ratelimit_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!rl)
		return;
	pthread_mutex_lock(&rl->mu);
	out->keys = rl->count;
	out->allowed = rl->allowed;
	out->refused = rl->refused;
	out->evicted = rl->evicted;
	pthread_mutex_unlock(&rl->mu);
}
