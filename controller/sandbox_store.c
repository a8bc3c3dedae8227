/*
 * sandbox_store: the sandbox cache and readiness waiters (see sandbox_store.h).
 *
 * Records live in an array of pointers sorted by id (binary search for gets,
 * memmove for inserts): simple, cache-friendly, and cheap at the scale of a
 * namespace's Pods. Waiter callbacks are always called with the lock released.
 */
#include "sandbox_store.h"

#include "sandbox_spec.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {
	[SANDBOX_PENDING] = "pending",
	[SANDBOX_READY] = "ready",
	[SANDBOX_TERMINATING] = "terminating",
	[SANDBOX_FAILED] = "failed",
};

const char *sandbox_state_name(enum sandbox_state s)
{
	return (unsigned)s < ARRAY_SIZE(state_names) ? state_names[s] : "unknown";
}

/* ---- records ---- */

void sandbox_release(struct sandbox *sb)
{
	if (!sb)
		return;
	FREE_AND_NULL(sb->message);
	for (size_t i = 0; i < sb->nlabels; i++) {
		free(sb->labels[i].key);
		free(sb->labels[i].value);
	}
	FREE_AND_NULL(sb->labels);
	sb->nlabels = 0;
}

int sandbox_copy(struct sandbox *dst, const struct sandbox *src)
{
	*dst = *src;
	dst->message = NULL;
	dst->labels = NULL;
	dst->nlabels = 0;
	if (src->message && !(dst->message = strdup(src->message)))
		goto nomem;
	if (src->nlabels) {
		dst->labels = calloc(src->nlabels, sizeof(*dst->labels));
		if (!dst->labels)
			goto nomem;
		for (size_t i = 0; i < src->nlabels; i++) {
			dst->labels[i].key = strdup(src->labels[i].key);
			dst->labels[i].value = strdup(src->labels[i].value);
			dst->nlabels++;
			if (!dst->labels[i].key || !dst->labels[i].value)
				goto nomem;
		}
	}
	return 0;
nomem:
	sandbox_release(dst);
	return -ENOMEM;
}

static const cJSON *get(const cJSON *o, const char *k)
{
	return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *get_str(const cJSON *o, const char *k)
{
	const cJSON *v = get(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t parse_i64(const char *s)
{
	if (!s || !*s)
		return 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	return (*end == '\0' && v > 0) ? (int64_t)v : 0;
}

static void set_failure(struct sandbox *sb, const char *reason, const char *detail)
{
	sb->state = SANDBOX_FAILED;
	snprintf(sb->reason, sizeof(sb->reason), "%s", reason);
	free(sb->message);
	sb->message = detail ? strdup(detail) : NULL;
}

/* Container waiting reasons that will not fix themselves. */
static const char *const fatal_waiting[][2] = {
	{ "ErrImagePull", "image_pull_failed" },
	{ "ImagePullBackOff", "image_pull_failed" },
	{ "InvalidImageName", "image_pull_failed" },
	{ "ErrImageNeverPull", "image_pull_failed" },
	{ "CreateContainerConfigError", "container_failed" },
	{ "CreateContainerError", "container_failed" },
	{ "RunContainerError", "container_failed" },
	{ "CrashLoopBackOff", "container_failed" },
};

static void derive_state(const cJSON *pod, struct sandbox *sb)
{
	const cJSON *meta = get(pod, "metadata");
	const cJSON *status = get(pod, "status");
	const char *phase = get_str(status, "phase");
	sb->state = SANDBOX_PENDING;
	sb->reason[0] = '\0';
	if (get_str(meta, "deletionTimestamp")) {
		sb->state = SANDBOX_TERMINATING;
		return;
	}
	if (phase && (strcmp(phase, "Failed") == 0 || strcmp(phase, "Succeeded") == 0)) {
		char msg[256];
		const char *m = get_str(status, "message");
		snprintf(msg, sizeof(msg), "the sandbox's Pod ended (%s)%s%s", phase, m ? ": " : "",
			 m ? m : "");
		set_failure(sb, "pod_failed", msg);
		return;
	}
	const cJSON *cs;
	cJSON_ArrayForEach(cs, get(status, "containerStatuses"))
	{
		const cJSON *st = get(cs, "state");
		const cJSON *waiting = get(st, "waiting");
		const cJSON *term = get(st, "terminated");
		const char *wr = get_str(waiting, "reason");
		for (size_t i = 0; wr && i < ARRAY_SIZE(fatal_waiting); i++) {
			if (strcmp(wr, fatal_waiting[i][0]) == 0) {
				char msg[300];
				const char *m = get_str(waiting, "message");
				snprintf(msg, sizeof(msg), "%s%s%s", wr, m ? ": " : "", m ? m : "");
				set_failure(sb, fatal_waiting[i][1], msg);
				return;
			}
		}
		if (term) {
			char msg[256];
			const char *r = get_str(term, "reason");
			snprintf(msg, sizeof(msg), "the sandbox container exited (%s)",
				 r ? r : "unknown reason");
			set_failure(sb, "container_failed", msg);
			return;
		}
	}
	const cJSON *cond;
	cJSON_ArrayForEach(cond, get(status, "conditions"))
	{
		const char *type = get_str(cond, "type");
		const char *cst = get_str(cond, "status");
		if (!type || !cst)
			continue;
		if (strcmp(type, "Ready") == 0 && strcmp(cst, "True") == 0) {
			sb->state = SANDBOX_READY;
			return;
		}
		if (strcmp(type, "PodScheduled") == 0 && strcmp(cst, "False") == 0) {
			const char *r = get_str(cond, "reason");
			if (r && strcmp(r, "Unschedulable") == 0) {
				/* still pending (an autoscaler may add a node) but say why */
				snprintf(sb->reason, sizeof(sb->reason), "unschedulable");
				const char *m = get_str(cond, "message");
				free(sb->message);
				sb->message = m ? strdup(m) : NULL;
			}
		}
	}
}

int sandbox_from_pod(const cJSON *pod, struct sandbox *out)
{
	memset(out, 0, sizeof(*out));
	const cJSON *meta = get(pod, "metadata");
	const cJSON *labels = get(meta, "labels");
	const cJSON *ann = get(meta, "annotations");
	const char *id = get_str(labels, SBX_LABEL_ID);
	const char *name = get_str(meta, "name");
	if (!id || !name || strcmp(id, name) != 0 || strlen(id) >= sizeof(out->id))
		return -EINVAL;
	snprintf(out->id, sizeof(out->id), "%s", id);
	snprintf(out->template_name, sizeof(out->template_name), "%s",
		 get_str(labels, SBX_LABEL_TEMPLATE) ? get_str(labels, SBX_LABEL_TEMPLATE) : "");
	snprintf(out->tenant, sizeof(out->tenant), "%s",
		 get_str(labels, SBX_LABEL_TENANT) ? get_str(labels, SBX_LABEL_TENANT) : "");
	snprintf(out->uid, sizeof(out->uid), "%s", get_str(meta, "uid") ? get_str(meta, "uid") : "");
	out->created_at = parse_i64(get_str(ann, SBX_ANN_CREATED));
	out->expires_at = parse_i64(get_str(ann, SBX_ANN_EXPIRES));
	const size_t plen = strlen(SBX_LABEL_USER_PREFIX);
	const cJSON *l;
	size_t n = 0;
	cJSON_ArrayForEach(l, labels)
	{
		if (cJSON_IsString(l) && strncmp(l->string, SBX_LABEL_USER_PREFIX, plen) == 0)
			n++;
	}
	if (n) {
		out->labels = calloc(n, sizeof(*out->labels));
		if (!out->labels)
			return -ENOMEM;
		cJSON_ArrayForEach(l, labels)
		{
			if (!cJSON_IsString(l) ||
			    strncmp(l->string, SBX_LABEL_USER_PREFIX, plen) != 0)
				continue;
			struct sbx_kv *kv = &out->labels[out->nlabels++];
			kv->key = strdup(l->string + plen);
			kv->value = strdup(l->valuestring);
			if (!kv->key || !kv->value) {
				sandbox_release(out);
				return -ENOMEM;
			}
		}
	}
	derive_state(pod, out);
	return 0;
}

/* ---- the store ---- */

struct waiter {
	struct waiter *next;
	char id[SANDBOX_ID_MAX];
	int64_t deadline_ms;
	sandbox_wait_fn fn;
	void *ud;
	/* outcome, set when fired */
	enum sandbox_wait_result result;
	struct sandbox snap;
	bool has_snap;
};

#define TOMBSTONES 256
#define TOMBSTONE_MS 60000

struct sandbox_store {
	pthread_rwlock_t lock;
	/* ids deleted recently, so that a late prime cannot resurrect them */
	struct {
		char id[SANDBOX_ID_MAX];
		int64_t at_ms;
	} tomb[TOMBSTONES];
	size_t tomb_next;
	struct sandbox **items; /* sorted by id */
	size_t n, cap;
	bool synced;
	pthread_mutex_t wmu;    /* guards waiters; taken after lock, never before */
	struct waiter *waiters;
};

static void fire(struct waiter *fired);

struct sandbox_store *sandbox_store_new(void)
{
	struct sandbox_store *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	pthread_rwlock_init(&st->lock, NULL);
	pthread_mutex_init(&st->wmu, NULL);
	return st;
}

void sandbox_store_free(struct sandbox_store *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n; i++) {
		sandbox_release(st->items[i]);
		free(st->items[i]);
	}
	free(st->items);
	/* every waiter is called exactly once: the ones still waiting time out */
	struct waiter *fired = NULL;
	while (st->waiters) {
		struct waiter *w = st->waiters;
		st->waiters = w->next;
		w->result = SANDBOX_WAIT_TIMEOUT;
		w->next = fired;
		fired = w;
	}
	fire(fired);
	pthread_rwlock_destroy(&st->lock);
	pthread_mutex_destroy(&st->wmu);
	free(st);
}

/* Index of id, or of where it would go (*found false). Lock held. */
static size_t find(const struct sandbox_store *st, const char *id, bool *found)
{
	size_t lo = 0, hi = st->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(st->items[mid]->id, id);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* Move the waiters for id whose outcome is decided onto *fired. wmu held. */
static void collect_waiters(struct sandbox_store *st, const char *id,
			    const struct sandbox *sb, bool gone, struct waiter **fired)
{
	struct waiter **pp = &st->waiters;
	while (*pp) {
		struct waiter *w = *pp;
		bool decided = false;
		if (strcmp(w->id, id) == 0) {
			if (gone) {
				w->result = SANDBOX_WAIT_GONE;
				decided = true;
			} else if (sb->state == SANDBOX_READY) {
				w->result = SANDBOX_WAIT_READY;
				decided = true;
			} else if (sb->state == SANDBOX_FAILED ||
				   sb->state == SANDBOX_TERMINATING ||
				   strcmp(sb->reason, "unschedulable") == 0) {
				w->result = SANDBOX_WAIT_FAILED;
				decided = true;
			}
		}
		if (!decided) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		w->has_snap = !gone && sandbox_copy(&w->snap, sb) == 0;
		w->next = *fired;
		*fired = w;
	}
}

static void fire(struct waiter *fired)
{
	while (fired) {
		struct waiter *w = fired;
		fired = w->next;
		w->fn(w->ud, w->result, w->has_snap ? &w->snap : NULL);
		if (w->has_snap)
			sandbox_release(&w->snap);
		free(w);
	}
}

static bool tombstoned(const struct sandbox_store *st, const char *name)
{
	int64_t now = now_ms();
	for (size_t i = 0; i < TOMBSTONES; i++)
		if (st->tomb[i].at_ms && now - st->tomb[i].at_ms < TOMBSTONE_MS &&
		    strcmp(st->tomb[i].id, name) == 0)
			return true;
	return false;
}

/* Apply an event; prime: only insert an unknown, not recently deleted Pod. */
static void apply(struct sandbox_store *st, enum kube_event_type type, const cJSON *pod,
		  bool prime)
{
	struct waiter *fired = NULL;
	const cJSON *meta = get(pod, "metadata");
	const char *name = get_str(meta, "name");
	if (!name)
		return;
	pthread_rwlock_wrlock(&st->lock);
	bool found;
	size_t i = find(st, name, &found);
	if (prime && (found || tombstoned(st, name)))
		goto out;
	if (type == KUBE_EVENT_DELETED) {
		snprintf(st->tomb[st->tomb_next].id, SANDBOX_ID_MAX, "%s", name);
		st->tomb[st->tomb_next].at_ms = now_ms();
		st->tomb_next = (st->tomb_next + 1) % TOMBSTONES;
		if (found) {
			sandbox_release(st->items[i]);
			free(st->items[i]);
			memmove(&st->items[i], &st->items[i + 1],
				(st->n - i - 1) * sizeof(st->items[0]));
			st->n--;
		}
		pthread_mutex_lock(&st->wmu);
		collect_waiters(st, name, NULL, true, &fired);
		pthread_mutex_unlock(&st->wmu);
		goto out;
	}
	struct sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb || sandbox_from_pod(pod, sb) != 0) {
		if (sb)
			log_warn("ignoring Pod \"%s\": not a well-formed sandbox", name);
		free(sb);
		goto out;
	}
	if (found) {
		sandbox_release(st->items[i]);
		free(st->items[i]);
		st->items[i] = sb;
	} else {
		if (st->n == st->cap) {
			size_t cap = st->cap ? st->cap * 2 : 64;
			struct sandbox **p = realloc(st->items, cap * sizeof(*p));
			if (!p) {
				sandbox_release(sb);
				free(sb);
				log_error("out of memory caching sandbox \"%s\"", name);
				goto out;
			}
			st->items = p;
			st->cap = cap;
		}
		memmove(&st->items[i + 1], &st->items[i], (st->n - i) * sizeof(st->items[0]));
		st->items[i] = sb;
		st->n++;
	}
	pthread_mutex_lock(&st->wmu);
	collect_waiters(st, sb->id, sb, false, &fired);
	pthread_mutex_unlock(&st->wmu);
out:
	pthread_rwlock_unlock(&st->lock);
	fire(fired);
}

void sandbox_store_on_event(void *ud, enum kube_event_type type, const cJSON *pod)
{
	apply(ud, type, pod, false);
}

void sandbox_store_prime(struct sandbox_store *st, const cJSON *pod)
{
	apply(st, KUBE_EVENT_ADDED, pod, true);
}

void sandbox_store_on_synced(void *ud)
{
	struct sandbox_store *st = ud;
	pthread_rwlock_wrlock(&st->lock);
	st->synced = true;
	pthread_rwlock_unlock(&st->lock);
}

bool sandbox_store_synced(struct sandbox_store *st)
{
	pthread_rwlock_rdlock(&st->lock);
	bool s = st->synced;
	pthread_rwlock_unlock(&st->lock);
	return s;
}

size_t sandbox_store_count(struct sandbox_store *st)
{
	pthread_rwlock_rdlock(&st->lock);
	size_t n = st->n;
	pthread_rwlock_unlock(&st->lock);
	return n;
}

int sandbox_store_get(struct sandbox_store *st, const char *id, struct sandbox *out)
{
	int rc = -ENOENT;
	pthread_rwlock_rdlock(&st->lock);
	bool found;
	size_t i = find(st, id, &found);
	if (found)
		rc = sandbox_copy(out, st->items[i]);
	pthread_rwlock_unlock(&st->lock);
	return rc;
}

size_t sandbox_store_list(struct sandbox_store *st, const char *after, size_t limit,
			  sandbox_filter_fn filter, void *ud, struct sandbox *out,
			  bool *more)
{
	size_t n = 0;
	*more = false;
	pthread_rwlock_rdlock(&st->lock);
	size_t i = 0;
	if (after) {
		bool found;
		i = find(st, after, &found);
		if (found)
			i++;
	}
	for (; i < st->n; i++) {
		if (filter && !filter(st->items[i], ud))
			continue;
		if (n == limit) {
			*more = true;
			break;
		}
		if (sandbox_copy(&out[n], st->items[i]) != 0)
			break;
		n++;
	}
	pthread_rwlock_unlock(&st->lock);
	return n;
}

size_t sandbox_store_expired(struct sandbox_store *st, int64_t now_s,
			     char (*ids)[SANDBOX_ID_MAX], size_t max)
{
	size_t n = 0;
	pthread_rwlock_rdlock(&st->lock);
	for (size_t i = 0; i < st->n && n < max; i++) {
		const struct sandbox *sb = st->items[i];
		if (sb->state == SANDBOX_TERMINATING)
			continue;
		if (sb->expires_at == 0 || sb->expires_at <= now_s)
			snprintf(ids[n++], SANDBOX_ID_MAX, "%s", sb->id);
	}
	pthread_rwlock_unlock(&st->lock);
	return n;
}

int sandbox_store_wait(struct sandbox_store *st, const char *id, int64_t deadline_ms,
		       sandbox_wait_fn fn, void *ud)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	snprintf(w->id, sizeof(w->id), "%s", id);
	w->deadline_ms = deadline_ms;
	w->fn = fn;
	w->ud = ud;
	struct waiter *fired = NULL;
	/* Register and check under the same lock the informer updates under,
	 * so that no transition can slip between the check and the wait. */
	pthread_rwlock_rdlock(&st->lock);
	pthread_mutex_lock(&st->wmu);
	w->next = st->waiters;
	st->waiters = w;
	bool found;
	size_t i = find(st, id, &found);
	if (found)
		collect_waiters(st, id, st->items[i], false, &fired);
	pthread_mutex_unlock(&st->wmu);
	pthread_rwlock_unlock(&st->lock);
	fire(fired);
	return 0;
}

void sandbox_store_tick(struct sandbox_store *st, int64_t now)
{
	struct waiter *fired = NULL;
	pthread_mutex_lock(&st->wmu);
	struct waiter **pp = &st->waiters;
	while (*pp) {
		struct waiter *w = *pp;
		if (w->deadline_ms > now) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		w->result = SANDBOX_WAIT_TIMEOUT;
		w->next = fired;
		fired = w;
	}
	pthread_mutex_unlock(&st->wmu);
	fire(fired);
}

void sandbox_store_usage(struct sandbox_store *st, const struct sbx_config *cfg,
			 const char *tenant, struct sandbox_usage *out)
{
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&st->lock);
	for (size_t i = 0; i < st->n; i++) {
		const struct sandbox *sb = st->items[i];
		if (sb->state == SANDBOX_TERMINATING || sb->state == SANDBOX_FAILED)
			continue;
		if (tenant && strcmp(sb->tenant, tenant) != 0)
			continue;
		out->sandboxes++;
		const struct sbx_template *t = config_template(cfg, sb->template_name);
		if (t) {
			out->cpu_milli += t->cpu_limit_milli;
			out->memory_bytes += t->memory_limit_bytes;
		}
	}
	pthread_rwlock_unlock(&st->lock);
}

