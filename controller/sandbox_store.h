/*
 * sandbox_store: the controller's cache of sandboxes, fed by the Pod
 * informer. One compact record per sandbox (not the Pod JSON), sorted by id,
 * behind a read-write lock: API reads never call the API server.
 *
 * It also holds "waiters": a request that asked to wait until a sandbox is
 * ready registers a callback that fires exactly once when the sandbox becomes
 * ready, fails, disappears, or the deadline passes (sandbox_store_tick).
 */
#ifndef SBX_SANDBOX_STORE_H
#define SBX_SANDBOX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "kube_watch.h"

enum sandbox_state {
	SANDBOX_PENDING = 0,
	SANDBOX_READY,
	SANDBOX_TERMINATING,
	SANDBOX_FAILED,
};

const char *sandbox_state_name(enum sandbox_state s);

#define SANDBOX_ID_MAX 32

struct sandbox {
	char id[SANDBOX_ID_MAX];
	char template_name[48];
	char tenant[64];
	char uid[48];
	enum sandbox_state state;
	char reason[40];        /* machine code when failed or stuck: "image_pull_failed",
				   "unschedulable", "container_failed", "pod_failed"; else "" */
	char *message;          /* human-readable detail, or NULL */
	int64_t created_at;     /* unix seconds */
	int64_t expires_at;     /* unix seconds; 0 when the Pod lacks the annotation */
	struct sbx_kv *labels;  /* client labels (prefix removed) */
	size_t nlabels;
};

/* Derive a record from a Pod. Returns 0, or -EINVAL when the Pod is not a
 * sandbox (no id label) or malformed, or -ENOMEM. On success out owns its
 * strings; free with sandbox_release. */
int sandbox_from_pod(const cJSON *pod, struct sandbox *out) __attribute__((warn_unused_result));

/* Deep copy; 0 or -ENOMEM. */
int sandbox_copy(struct sandbox *dst, const struct sandbox *src) __attribute__((warn_unused_result));

/* Free what a record owns (not the struct). */
void sandbox_release(struct sandbox *sb);

struct sandbox_store;

struct sandbox_store *sandbox_store_new(void);
/* Frees the store; waiters still pending are called with SANDBOX_WAIT_TIMEOUT. */
void sandbox_store_free(struct sandbox_store *st);

/* Informer callbacks (see kube_informer_ops). */
void sandbox_store_on_event(void *st, enum kube_event_type type, const cJSON *pod);
void sandbox_store_on_synced(void *st);

/* Read-your-writes: put a Pod the caller just created into the cache now,
 * unless the informer already has it or saw it deleted in the last minute.
 * (The watch delivers it a few milliseconds later and then wins.) */
void sandbox_store_prime(struct sandbox_store *st, const cJSON *pod);

bool sandbox_store_synced(struct sandbox_store *st);
size_t sandbox_store_count(struct sandbox_store *st);

/* Copy of the record for id: 0, or -ENOENT. */
int sandbox_store_get(struct sandbox_store *st, const char *id, struct sandbox *out)
	__attribute__((warn_unused_result));

/* Records with ids greater than after (NULL: from the first), in id order,
 * that pass filter (NULL: all), at most limit of them, copied into out.
 * Returns how many were copied; *more says whether more would follow. */
typedef bool (*sandbox_filter_fn)(const struct sandbox *sb, void *ud);
size_t sandbox_store_list(struct sandbox_store *st, const char *after, size_t limit,
			  sandbox_filter_fn filter, void *ud, struct sandbox *out,
			  bool *more);

/* Ids of sandboxes that expired (expires_at <= now_s) or carry no expiry, and
 * are not already terminating; at most max. */
size_t sandbox_store_expired(struct sandbox_store *st, int64_t now_s,
			     char (*ids)[SANDBOX_ID_MAX], size_t max);

/* What a tenant's live sandboxes (not terminating, not failed) hold, for
 * quotas: their count and the sum of their templates' cpu and memory limits.
 * tenant NULL: all tenants. */
struct sandbox_usage {
	size_t sandboxes;
	int64_t cpu_milli;
	int64_t memory_bytes;
};
void sandbox_store_usage(struct sandbox_store *st, const struct sbx_config *cfg,
			 const char *tenant, struct sandbox_usage *out);

enum sandbox_wait_result {
	SANDBOX_WAIT_READY,
	SANDBOX_WAIT_FAILED,    /* sb->reason says why */
	SANDBOX_WAIT_GONE,      /* deleted before it was ready */
	SANDBOX_WAIT_TIMEOUT,
};

/* Called exactly once, from the informer's thread, the thread of
 * sandbox_store_tick, or (when the outcome is already known) the caller's
 * thread inside sandbox_store_wait. sb is NULL for GONE and may be NULL for
 * TIMEOUT; it is borrowed for the call. Must not block. */
typedef void (*sandbox_wait_fn)(void *ud, enum sandbox_wait_result r,
				const struct sandbox *sb);

/* Wait for id to become ready, until deadline_ms (monotonic, now_ms()). */
int sandbox_store_wait(struct sandbox_store *st, const char *id, int64_t deadline_ms,
		       sandbox_wait_fn fn, void *ud) __attribute__((warn_unused_result));

/* Fire the waiters whose deadline passed. */
void sandbox_store_tick(struct sandbox_store *st, int64_t now_ms);

#endif
