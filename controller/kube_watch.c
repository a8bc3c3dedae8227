/*
 * kube_watch: watch stream decoding and the list-then-watch informer.
 *
 * The decoder finds object boundaries by tracking JSON nesting and strings
 * byte by byte (it does not trust newlines), copies at most max_event bytes
 * of one event, then hands the complete text to cJSON.
 *
 * The informer's memory per object is one small record (key, uid,
 * resourceVersion) in a chained hash table; whole objects are never kept.
 */
#include "kube_watch.h"

#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const event_names[] = {
	[KUBE_EVENT_ADDED] = "ADDED",
	[KUBE_EVENT_MODIFIED] = "MODIFIED",
	[KUBE_EVENT_DELETED] = "DELETED",
	[KUBE_EVENT_BOOKMARK] = "BOOKMARK",
	[KUBE_EVENT_ERROR] = "ERROR",
};

const char *kube_event_type_name(enum kube_event_type t)
{
	if ((unsigned)t < ARRAY_SIZE(event_names))
		return event_names[t];
	return "UNKNOWN";
}

/* ---- decoder ---- */

void kube_watch_decoder_init(struct kube_watch_decoder *d, size_t max_event)
{
	memset(d, 0, sizeof(*d));
	buf_init(&d->pending, max_event ? max_event : KUBE_WATCH_DEFAULT_MAX_EVENT);
}

void kube_watch_decoder_release(struct kube_watch_decoder *d)
{
	buf_release(&d->pending);
}

void kube_watch_decoder_reset(struct kube_watch_decoder *d)
{
	buf_reset(&d->pending);
	d->depth = 0;
	d->in_string = false;
	d->escape = false;
}

static int parse_event(const char *text, size_t len, enum kube_event_type *type,
		       cJSON **root, const cJSON **object, struct kube_error *err)
{
	*root = cJSON_ParseWithLength(text, len);
	if (!*root)
		return kube_error_set(err, KUBE_ERR_PROTOCOL, "watch event is not valid JSON");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(*root, "type");
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(*root, "object");
	if (!cJSON_IsString(t) || !cJSON_IsObject(o))
		return kube_error_set(err, KUBE_ERR_PROTOCOL,
				      "watch event lacks a type or an object");
	for (size_t i = 0; i < ARRAY_SIZE(event_names); i++) {
		if (strcmp(t->valuestring, event_names[i]) == 0) {
			*type = (enum kube_event_type)i;
			*object = o;
			return 0;
		}
	}
	return kube_error_set(err, KUBE_ERR_PROTOCOL, "unknown watch event type \"%.32s\"",
			      t->valuestring);
}

int kube_watch_decoder_feed(struct kube_watch_decoder *d, const char *data,
			    size_t len, kube_watch_event_fn fn, void *ud,
			    struct kube_error *err)
{
	size_t i = 0;
	while (i < len) {
		if (d->depth == 0) {
			/* between events: whitespace, then '{' */
			char ch = data[i];
			if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
				i++;
				continue;
			}
			if (ch != '{')
				return kube_error_set(err, KUBE_ERR_PROTOCOL,
						      "watch stream: expected '{' between events");
		}
		/* scan to the end of this object or of the data */
		size_t start = i;
		bool complete = false;
		for (; i < len; i++) {
			char ch = data[i];
			if (d->in_string) {
				if (d->escape)
					d->escape = false;
				else if (ch == '\\')
					d->escape = true;
				else if (ch == '"')
					d->in_string = false;
				continue;
			}
			if (ch == '"') {
				d->in_string = true;
			} else if (ch == '{' || ch == '[') {
				d->depth++;
			} else if (ch == '}' || ch == ']') {
				if (--d->depth == 0) {
					i++;
					complete = true;
					break;
				}
			}
		}
		int rc = buf_append(&d->pending, data + start, i - start);
		if (rc == -E2BIG)
			return kube_error_set(err, KUBE_ERR_TOO_LARGE,
					      "watch event larger than %zu bytes",
					      d->pending.max);
		if (rc)
			return kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
		if (!complete)
			return 0;
		enum kube_event_type type = KUBE_EVENT_ERROR;
		cJSON *root = NULL;
		const cJSON *obj = NULL;
		rc = parse_event(d->pending.data, d->pending.len, &type, &root, &obj, err);
		kube_watch_decoder_reset(d);
		if (rc == 0)
			rc = fn(ud, type, obj);
		cJSON_Delete(root);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- the informer's record of objects ---- */

struct record {
	struct record *next;
	char *key;          /* "ns/name" or "name" */
	char *uid;
	char *rv;
	uint64_t gen;       /* list generation that last saw it */
};

struct store {
	struct record **buckets;
	size_t nbuckets;
	size_t count;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static void record_free(struct record *r)
{
	if (!r)
		return;
	free(r->key);
	free(r->uid);
	free(r->rv);
	free(r);
}

static void store_release(struct store *s)
{
	for (size_t i = 0; i < s->nbuckets; i++) {
		struct record *r = s->buckets[i];
		while (r) {
			struct record *n = r->next;
			record_free(r);
			r = n;
		}
	}
	free(s->buckets);
	memset(s, 0, sizeof(*s));
}

static struct record *store_find(struct store *s, const char *key)
{
	if (!s->nbuckets)
		return NULL;
	for (struct record *r = s->buckets[hash_str(key) % s->nbuckets]; r; r = r->next)
		if (strcmp(r->key, key) == 0)
			return r;
	return NULL;
}

static int store_grow(struct store *s)
{
	size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
	struct record **b = calloc(n, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < s->nbuckets; i++) {
		struct record *r = s->buckets[i];
		while (r) {
			struct record *next = r->next;
			size_t j = hash_str(r->key) % n;
			r->next = b[j];
			b[j] = r;
			r = next;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = n;
	return 0;
}

static struct record *store_insert(struct store *s, const char *key)
{
	if (s->count + 1 > s->nbuckets && store_grow(s) != 0)
		return NULL;
	struct record *r = calloc(1, sizeof(*r));
	if (!r || !(r->key = strdup(key))) {
		free(r);
		return NULL;
	}
	size_t j = hash_str(key) % s->nbuckets;
	r->next = s->buckets[j];
	s->buckets[j] = r;
	s->count++;
	return r;
}

static void store_remove(struct store *s, const char *key)
{
	if (!s->nbuckets)
		return;
	struct record **pp = &s->buckets[hash_str(key) % s->nbuckets];
	for (; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->key, key) == 0) {
			struct record *r = *pp;
			*pp = r->next;
			record_free(r);
			s->count--;
			return;
		}
	}
}

static int set_str(char **dst, const char *src)
{
	if (*dst && src && strcmp(*dst, src) == 0)
		return 0;
	char *n = src ? strdup(src) : NULL;
	if (src && !n)
		return -ENOMEM;
	free(*dst);
	*dst = n;
	return 0;
}

/* ---- informer ---- */

struct kube_informer {
	struct kube_client *client;
	struct kube_informer_ops ops;
	void *ud;
	const struct kube_resource *resource;
	char *ns, *label_selector, *field_selector, *initial_rv;
	unsigned page_size;
	size_t max_event;
	int watch_timeout_s;
	int64_t backoff_base_ms, backoff_cap_ms;

	struct store store;
	uint64_t gen;
	char *rv;                 /* where the next watch starts */

	pthread_mutex_t mu;       /* guards stats */
	struct kube_informer_stats stats;
};

struct kube_informer *kube_informer_new(struct kube_client *client,
					const struct kube_informer_opts *opts,
					const struct kube_informer_ops *ops, void *ud)
{
	struct kube_informer *inf = calloc(1, sizeof(*inf));
	if (!inf)
		return NULL;
	pthread_mutex_init(&inf->mu, NULL);
	inf->client = client;
	inf->ops = *ops;
	inf->ud = ud;
	inf->resource = opts->resource;
	inf->page_size = opts->page_size ? opts->page_size : 500;
	inf->max_event = opts->max_event ? opts->max_event : KUBE_WATCH_DEFAULT_MAX_EVENT;
	inf->watch_timeout_s = opts->watch_timeout_s;
	inf->backoff_base_ms = opts->backoff_base_ms > 0 ? opts->backoff_base_ms : 200;
	inf->backoff_cap_ms = opts->backoff_cap_ms > 0 ? opts->backoff_cap_ms : 10000;
	if (set_str(&inf->ns, opts->ns) || set_str(&inf->label_selector, opts->label_selector) ||
	    set_str(&inf->field_selector, opts->field_selector) ||
	    set_str(&inf->initial_rv, opts->initial_resource_version)) {
		kube_informer_free(inf);
		return NULL;
	}
	return inf;
}

void kube_informer_free(struct kube_informer *inf)
{
	if (!inf)
		return;
	store_release(&inf->store);
	free(inf->ns);
	free(inf->label_selector);
	free(inf->field_selector);
	free(inf->initial_rv);
	free(inf->rv);
	pthread_mutex_destroy(&inf->mu);
	free(inf);
}

void kube_informer_get_stats(struct kube_informer *inf, struct kube_informer_stats *out)
{
	pthread_mutex_lock(&inf->mu);
	*out = inf->stats;
	out->objects = inf->store.count;
	pthread_mutex_unlock(&inf->mu);
}

#define STAT_INC(inf, field)                                                  \
	do {                                                                  \
		pthread_mutex_lock(&(inf)->mu);                               \
		(inf)->stats.field++;                                         \
		pthread_mutex_unlock(&(inf)->mu);                             \
	} while (0)

static int update_rv(struct kube_informer *inf, const char *rv)
{
	if (!rv || !*rv)
		return 0;
	if (set_str(&inf->rv, rv))
		return -ENOMEM;
	pthread_mutex_lock(&inf->mu);
	snprintf(inf->stats.resource_version, sizeof(inf->stats.resource_version), "%s", rv);
	pthread_mutex_unlock(&inf->mu);
	return 0;
}

static const char *meta_str(const cJSON *obj, const char *field)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, field);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "ns/name" or "name" into out; false when the object has no name. */
static bool object_key(const cJSON *obj, char *out, size_t cap)
{
	const char *name = meta_str(obj, "name");
	const char *ns = meta_str(obj, "namespace");
	if (!name || !*name)
		return false;
	int n = ns && *ns ? snprintf(out, cap, "%s/%s", ns, name)
			  : snprintf(out, cap, "%s", name);
	return n > 0 && (size_t)n < cap;
}

static void emit(struct kube_informer *inf, enum kube_event_type type, const cJSON *obj)
{
	STAT_INC(inf, events);
	if (inf->ops.on_event)
		inf->ops.on_event(inf->ud, type, obj);
}

/* A deletion we deduced: a minimal object naming what went away. */
static void emit_deleted_record(struct kube_informer *inf, const struct record *r)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *m = o ? cJSON_AddObjectToObject(o, "metadata") : NULL;
	if (!m) {
		cJSON_Delete(o);
		log_error("out of memory reporting the deletion of \"%s\"", r->key);
		return;
	}
	const char *slash = strchr(r->key, '/');
	if (slash) {
		char *ns = strndup(r->key, (size_t)(slash - r->key));
		if (ns)
			cJSON_AddStringToObject(m, "namespace", ns);
		free(ns);
		cJSON_AddStringToObject(m, "name", slash + 1);
	} else {
		cJSON_AddStringToObject(m, "name", r->key);
	}
	if (r->uid)
		cJSON_AddStringToObject(m, "uid", r->uid);
	if (r->rv)
		cJSON_AddStringToObject(m, "resourceVersion", r->rv);
	emit(inf, KUBE_EVENT_DELETED, o);
	cJSON_Delete(o);
}

/* Apply one observed state of an object (from a list or an ADDED/MODIFIED
 * event) to the store, and report it unless it is already known. */
static int observe(struct kube_informer *inf, const cJSON *obj)
{
	char key[512];
	if (!object_key(obj, key, sizeof(key))) {
		log_warn("ignoring a %s without a usable name", inf->resource->plural);
		return 0;
	}
	const char *uid = meta_str(obj, "uid");
	const char *rv = meta_str(obj, "resourceVersion");
	struct record *r = store_find(&inf->store, key);
	if (r && uid && r->uid && strcmp(uid, r->uid) != 0) {
		/* same name, new object: the old one went away meanwhile */
		emit_deleted_record(inf, r);
		store_remove(&inf->store, key);
		r = NULL;
	}
	if (r) {
		r->gen = inf->gen;
		if (rv && r->rv && strcmp(rv, r->rv) == 0)
			return 0; /* seen already: never report twice */
		if (set_str(&r->rv, rv))
			return -ENOMEM;
		emit(inf, KUBE_EVENT_MODIFIED, obj);
		return 0;
	}
	r = store_insert(&inf->store, key);
	if (!r || set_str(&r->uid, uid) || set_str(&r->rv, rv))
		return -ENOMEM;
	r->gen = inf->gen;
	emit(inf, KUBE_EVENT_ADDED, obj);
	return 0;
}

static void forget(struct kube_informer *inf, const cJSON *obj)
{
	char key[512];
	if (!object_key(obj, key, sizeof(key)))
		return;
	struct record *r = store_find(&inf->store, key);
	if (!r)
		return; /* already gone: never report twice */
	const char *uid = meta_str(obj, "uid");
	if (uid && r->uid && strcmp(uid, r->uid) != 0)
		return; /* a deletion of an older incarnation we never saw */
	emit(inf, KUBE_EVENT_DELETED, obj);
	store_remove(&inf->store, key);
}

/* After a list: whatever it did not see is gone. */
static void sweep_unseen(struct kube_informer *inf)
{
	for (size_t i = 0; i < inf->store.nbuckets; i++) {
		struct record *r = inf->store.buckets[i];
		while (r) {
			struct record *next = r->next;
			if (r->gen != inf->gen) {
				emit_deleted_record(inf, r);
				store_remove(&inf->store, r->key);
			}
			r = next;
		}
	}
}

/* List every page, applying each object; then report what disappeared. */
static enum kube_err do_list(struct kube_informer *inf, const volatile int *stop,
			     struct kube_error *err)
{
	char *cont = NULL;
	char *list_rv = NULL;
	enum kube_err rc = KUBE_OK;
	inf->gen++;
	do {
		struct kube_list_opts lo = {
			.label_selector = inf->label_selector,
			.field_selector = inf->field_selector,
			.limit = inf->page_size,
			.continue_token = cont,
		};
		cJSON *page = NULL;
		rc = kube_list(inf->client, inf->resource, inf->ns, &lo, &page, err);
		FREE_AND_NULL(cont);
		if (rc)
			goto out;
		const cJSON *items = cJSON_GetObjectItemCaseSensitive(page, "items");
		const cJSON *meta = cJSON_GetObjectItemCaseSensitive(page, "metadata");
		const cJSON *prv = cJSON_GetObjectItemCaseSensitive(meta, "resourceVersion");
		const cJSON *pc = cJSON_GetObjectItemCaseSensitive(meta, "continue");
		if (!cJSON_IsArray(items) && !cJSON_IsNull(items) && items) {
			cJSON_Delete(page);
			rc = kube_error_set(err, KUBE_ERR_PROTOCOL, "list without items");
			goto out;
		}
		const cJSON *it;
		cJSON_ArrayForEach(it, items)
		{
			if (observe(inf, it)) {
				cJSON_Delete(page);
				rc = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
				goto out;
			}
		}
		if (cJSON_IsString(prv) && set_str(&list_rv, prv->valuestring)) {
			cJSON_Delete(page);
			rc = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
			goto out;
		}
		if (cJSON_IsString(pc) && pc->valuestring[0] && !(cont = strdup(pc->valuestring))) {
			cJSON_Delete(page);
			rc = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
			goto out;
		}
		cJSON_Delete(page);
		if (stop && *stop) {
			rc = kube_error_set(err, KUBE_ERR_CANCELLED, "stopped");
			goto out;
		}
	} while (cont);
	if (!list_rv) {
		rc = kube_error_set(err, KUBE_ERR_PROTOCOL, "list without a resourceVersion");
		goto out;
	}
	sweep_unseen(inf);
	if (update_rv(inf, list_rv)) {
		rc = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&inf->mu);
	inf->stats.lists++;
	inf->stats.synced = true;
	pthread_mutex_unlock(&inf->mu);
	if (inf->ops.on_synced)
		inf->ops.on_synced(inf->ud);
out:
	free(cont);
	free(list_rv);
	return rc;
}

struct watch_ctx {
	struct kube_informer *inf;
	struct kube_watch_decoder dec;
	struct kube_error *err;
	uint64_t delivered;
};

static int on_watch_event(void *ud, enum kube_event_type type, const cJSON *obj)
{
	struct watch_ctx *w = ud;
	struct kube_informer *inf = w->inf;
	w->delivered++;
	switch (type) {
	case KUBE_EVENT_BOOKMARK:
		STAT_INC(inf, bookmarks);
		break;
	case KUBE_EVENT_ERROR:
		return kube_status_from_json(obj, w->err);
	case KUBE_EVENT_ADDED:
	case KUBE_EVENT_MODIFIED:
		if (observe(inf, obj))
			return kube_error_set(w->err, KUBE_ERR_NOMEM, "out of memory");
		break;
	case KUBE_EVENT_DELETED:
		forget(inf, obj);
		break;
	}
	if (update_rv(inf, meta_str(obj, "resourceVersion")))
		return kube_error_set(w->err, KUBE_ERR_NOMEM, "out of memory");
	return 0;
}

static int on_watch_data(void *ud, const char *data, size_t len)
{
	struct watch_ctx *w = ud;
	if (!data) {
		/* the stream is open */
		pthread_mutex_lock(&w->inf->mu);
		w->inf->stats.watches++;
		w->inf->stats.watching = true;
		pthread_mutex_unlock(&w->inf->mu);
		return 0;
	}
	return kube_watch_decoder_feed(&w->dec, data, len, on_watch_event, w, w->err);
}

static enum kube_err do_watch(struct kube_informer *inf, const volatile int *stop,
			      struct kube_error *err, uint64_t *delivered)
{
	char *path = NULL, *extra = NULL;
	enum kube_err rc = kube_resource_path(inf->resource, inf->ns, NULL, NULL, &path);
	if (rc)
		return kube_error_set(err, rc, "invalid resource path");
	int timeout_s = inf->watch_timeout_s;
	if (timeout_s <= 0)
		timeout_s = 300 + (int)(random_unit() * 300);
	char *rv = kube_escape(inf->rv ? inf->rv : "");
	if (!rv || asprintf(&extra, "watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d",
			    rv, timeout_s) < 0) {
		free(rv);
		free(path);
		return kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
	}
	free(rv);
	struct kube_list_opts lo = {
		.label_selector = inf->label_selector,
		.field_selector = inf->field_selector,
	};
	path = kube_list_query(path, &lo, extra);
	free(extra);
	if (!path)
		return kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
	struct watch_ctx w = { .inf = inf, .err = err };
	kube_watch_decoder_init(&w.dec, inf->max_event);
	struct kube_error serr;
	rc = kube_stream(inf->client, path, (long)(timeout_s + 30) * 1000, on_watch_data, &w,
			 stop, &serr);
	pthread_mutex_lock(&inf->mu);
	inf->stats.watching = false;
	pthread_mutex_unlock(&inf->mu);
	/* an error found in the stream (event decoding, ERROR event) is in err;
	 * one from the transfer itself is in serr */
	if (rc != KUBE_OK && err->code != rc)
		*err = serr;
	kube_watch_decoder_release(&w.dec);
	free(path);
	*delivered = w.delivered;
	return rc;
}

int kube_informer_run(struct kube_informer *inf, const volatile int *stop)
{
	bool need_list = true;
	unsigned failures = 0;   /* consecutive failed lists or watches */
	unsigned gone_in_row = 0;
	if (inf->initial_rv) {
		if (update_rv(inf, inf->initial_rv))
			return -ENOMEM;
		need_list = false;
	}
	while (!(stop && *stop)) {
		struct kube_error err;
		kube_error_clear(&err);
		enum kube_err rc;
		if (need_list) {
			rc = do_list(inf, stop, &err);
			if (rc == KUBE_ERR_CANCELLED)
				break;
			if (rc) {
				STAT_INC(inf, errors);
				int64_t wait = backoff_ms(failures++, inf->backoff_base_ms,
							  inf->backoff_cap_ms);
				log_warn("list %s failed (%s: %s); retrying in %lld ms",
					 inf->resource->plural, kube_strerror(rc), err.message,
					 (long long)wait);
				sleep_ms_interruptible(wait, stop);
				continue;
			}
			need_list = false;
			failures = 0;
			log_debug("listed %s at resourceVersion %s", inf->resource->plural,
				  inf->rv);
		}
		uint64_t delivered = 0;
		kube_error_clear(&err);
		rc = do_watch(inf, stop, &err, &delivered);
		if (stop && *stop)
			break;
		if (delivered) {
			failures = 0;
			gone_in_row = 0;
		}
		if (rc == KUBE_OK)
			continue; /* the server ended the watch at its timeout: resume at once */
		if (rc == KUBE_ERR_GONE) {
			STAT_INC(inf, gone);
			log_info("watch %s: resourceVersion %s is too old (410 Gone); listing again",
				 inf->resource->plural, inf->rv ? inf->rv : "");
			need_list = true;
			/* list at once, but back off if Gone repeats: a broken server
			 * must not make us spin */
			if (gone_in_row++ == 0)
				continue;
		} else {
			STAT_INC(inf, errors);
		}
		int64_t wait = backoff_ms(failures++, inf->backoff_base_ms, inf->backoff_cap_ms);
		if (rc != KUBE_ERR_GONE)
			log_warn("watch %s from resourceVersion %s ended (%s: %s); reconnecting in %lld ms",
				 inf->resource->plural, inf->rv ? inf->rv : "",
				 kube_strerror(rc), err.message, (long long)wait);
		sleep_ms_interruptible(wait, stop);
	}
	return 0;
}
