/*
 * reconciler: expiry, waiter deadlines, NetworkPolicy presence and orphans
 * (see reconciler.h).
 */
#include "reconciler.h"

#include "log.h"
#include "sandbox_spec.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPIRE_BATCH 64
#define RECENT_MAX 256
#define RECENT_TTL_MS 15000

struct recent {
	char id[SANDBOX_ID_MAX];
	int64_t at_ms;
};

struct reconciler {
	struct reconciler_opts o;
	pthread_mutex_t mu;
	struct reconciler_stats stats;
	/* deletions we asked for recently: not asked again until the cache
	 * shows the Pod terminating or gone, or RECENT_TTL_MS pass */
	struct recent recent[RECENT_MAX];
};

struct reconciler *reconciler_new(const struct reconciler_opts *opts)
{
	struct reconciler *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->o = *opts;
	if (r->o.expiry_interval_ms <= 0)
		r->o.expiry_interval_ms = 1000;
	if (r->o.policy_interval_ms <= 0)
		r->o.policy_interval_ms = 30000;
	pthread_mutex_init(&r->mu, NULL);
	return r;
}

void reconciler_free(struct reconciler *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void reconciler_get_stats(struct reconciler *r, struct reconciler_stats *out)
{
	pthread_mutex_lock(&r->mu);
	*out = r->stats;
	pthread_mutex_unlock(&r->mu);
}

#define STAT_ADD(r, f, n)                                                     \
	do {                                                                  \
		pthread_mutex_lock(&(r)->mu);                                 \
		(r)->stats.f += (n);                                          \
		pthread_mutex_unlock(&(r)->mu);                               \
	} while (0)

static bool recently_deleted(struct reconciler *r, const char *id, int64_t now)
{
	for (size_t i = 0; i < RECENT_MAX; i++)
		if (r->recent[i].at_ms && now - r->recent[i].at_ms < RECENT_TTL_MS &&
		    strcmp(r->recent[i].id, id) == 0)
			return true;
	return false;
}

static void remember_deleted(struct reconciler *r, const char *id, int64_t now)
{
	size_t oldest = 0;
	for (size_t i = 0; i < RECENT_MAX; i++) {
		if (r->recent[i].at_ms == 0 || now - r->recent[i].at_ms >= RECENT_TTL_MS) {
			oldest = i;
			break;
		}
		if (r->recent[i].at_ms < r->recent[oldest].at_ms)
			oldest = i;
	}
	snprintf(r->recent[oldest].id, sizeof(r->recent[oldest].id), "%s", id);
	r->recent[oldest].at_ms = now;
}

static void expire(struct reconciler *r)
{
	char ids[EXPIRE_BATCH][SANDBOX_ID_MAX];
	size_t n = sandbox_store_expired(r->o.store, wall_time_s(), ids, EXPIRE_BATCH);
	int64_t now = now_ms();
	for (size_t i = 0; i < n; i++) {
		if (recently_deleted(r, ids[i], now))
			continue;
		struct kube_error e;
		struct kube_delete_opts o = { .grace_period_s = -1, .propagation = "Background" };
		enum kube_err rc = kube_delete(r->o.kube, &KUBE_RES_PODS, r->o.cfg->namespace,
					       ids[i], &o, NULL, &e);
		if (rc == KUBE_OK || rc == KUBE_ERR_NOT_FOUND) {
			remember_deleted(r, ids[i], now);
			STAT_ADD(r, expired_deleted, 1);
			log_info("sandbox \"%s\" expired; deleted", ids[i]);
			if (r->o.on_expired)
				r->o.on_expired(r->o.expired_ud, ids[i]);
		} else {
			STAT_ADD(r, errors, 1);
			log_warn("cannot delete expired sandbox \"%s\": %s: %s", ids[i],
				 kube_strerror(rc), e.message);
		}
	}
}

static bool wanted_policy(const struct sbx_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->ntemplates; i++) {
		char buf[64];
		if (strcmp(sandbox_network_policy_name(&cfg->templates[i], buf), name) == 0)
			return true;
	}
	return false;
}

static void policies(struct reconciler *r)
{
	if (r->o.ensure_policies && r->o.ensure_policies(r->o.ensure_ud) != 0)
		STAT_ADD(r, errors, 1);
	struct kube_list_opts lo = { .label_selector = SBX_SELECTOR };
	cJSON *list = NULL;
	struct kube_error e;
	enum kube_err rc = kube_list(r->o.kube, &KUBE_RES_NETWORKPOLICIES, r->o.cfg->namespace,
				     &lo, &list, &e);
	if (rc) {
		STAT_ADD(r, errors, 1);
		log_warn("cannot list NetworkPolicies: %s: %s", kube_strerror(rc), e.message);
		return;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(list, "items"))
	{
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "metadata");
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
		const cJSON *uid = cJSON_GetObjectItemCaseSensitive(m, "uid");
		if (!cJSON_IsString(name) || wanted_policy(r->o.cfg, name->valuestring))
			continue;
		struct kube_delete_opts o = {
			.uid = cJSON_IsString(uid) ? uid->valuestring : NULL,
			.grace_period_s = -1,
		};
		rc = kube_delete(r->o.kube, &KUBE_RES_NETWORKPOLICIES, r->o.cfg->namespace,
				 name->valuestring, &o, NULL, &e);
		if (rc == KUBE_OK || rc == KUBE_ERR_NOT_FOUND) {
			STAT_ADD(r, orphans_deleted, 1);
			log_info("deleted orphaned NetworkPolicy \"%s\"", name->valuestring);
		} else {
			STAT_ADD(r, errors, 1);
			log_warn("cannot delete orphaned NetworkPolicy \"%s\": %s", name->valuestring,
				 e.message);
		}
	}
	cJSON_Delete(list);
}

void reconciler_run(struct reconciler *r, const volatile int *stop)
{
	int64_t next_expire = 0, next_policy = 0;
	while (!(stop && *stop)) {
		int64_t now = now_ms();
		sandbox_store_tick(r->o.store, now);
		if (sandbox_store_synced(r->o.store)) {
			if (now >= next_expire) {
				expire(r);
				next_expire = now + r->o.expiry_interval_ms;
			}
			if (now >= next_policy) {
				policies(r);
				next_policy = now + r->o.policy_interval_ms;
			}
		}
		STAT_ADD(r, rounds, 1);
		sleep_ms_interruptible(200, stop);
	}
}
