/*
 * reconciler: the controller's background loop. Idempotent, level-driven
 * (reads the cache, compares with what should be, writes the difference):
 *   - fires readiness waiters whose deadline passed (every 200 ms);
 *   - deletes sandboxes whose expiry passed, or that carry no expiry (every
 *     second, once the cache is synced); expiry is read from the Pod, so it
 *     survives restarts;
 *   - every 30 s: makes sure each template's NetworkPolicy exists (through
 *     the ensure hook) and deletes NetworkPolicies we labelled that no
 *     template uses any more (orphans). Objects without our managed-by label
 *     are never touched.
 * A failed step is logged and retried on the next round; the loop never exits
 * on it.
 */
#ifndef SBX_RECONCILER_H
#define SBX_RECONCILER_H

#include <stdint.h>

#include "config.h"
#include "kube_client.h"
#include "sandbox_store.h"

struct reconciler_opts {
	const struct sbx_config *cfg;
	struct kube_client *kube;
	struct sandbox_store *store;
	int (*ensure_policies)(void *ud); /* may be NULL */
	void *ensure_ud;
	/* called after an expired sandbox was deleted (for the audit); may be NULL */
	void (*on_expired)(void *ud, const char *id);
	void *expired_ud;
	int64_t expiry_interval_ms;       /* default 1000 */
	int64_t policy_interval_ms;       /* default 30000 */
};

struct reconciler_stats {
	uint64_t expired_deleted;
	uint64_t orphans_deleted;
	uint64_t errors;
	uint64_t rounds;
};

struct reconciler;

struct reconciler *reconciler_new(const struct reconciler_opts *opts);
void reconciler_free(struct reconciler *r);
/* Run until *stop; call from a dedicated thread. */
void reconciler_run(struct reconciler *r, const volatile int *stop);
void reconciler_get_stats(struct reconciler *r, struct reconciler_stats *out);

#endif
