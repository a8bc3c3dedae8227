/*
 * kube_watch: the watch event stream decoder and an informer built on it.
 *
 * The decoder turns the bytes of a watch response (a sequence of JSON objects
 * {"type":..., "object":...}) into events, whatever the read boundaries, with
 * a hard bound on the size of one event: an oversized or malformed event is an
 * error, never a crash or an unbounded allocation.
 *
 * The informer lists a resource, then watches from the list's resourceVersion
 * with bookmarks; resumes from the last resourceVersion it saw after a
 * dropped connection or an API server restart; lists again after 410 Gone;
 * reconnects with jittered backoff. It remembers (namespace/name -> uid,
 * resourceVersion) for every object, so that after a re-list it reports only
 * real differences: no event is lost and none is reported twice.
 */
#ifndef SBX_KUBE_WATCH_H
#define SBX_KUBE_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "kube_client.h"

enum kube_event_type {
	KUBE_EVENT_ADDED,
	KUBE_EVENT_MODIFIED,
	KUBE_EVENT_DELETED,
	KUBE_EVENT_BOOKMARK,
	KUBE_EVENT_ERROR,
};

const char *kube_event_type_name(enum kube_event_type t);

/* ---- decoder ---- */

#define KUBE_WATCH_DEFAULT_MAX_EVENT (1u << 20)

struct kube_watch_decoder {
	struct buf pending;   /* bytes of the object being read */
	int depth;            /* nesting depth inside the current object */
	bool in_string;
	bool escape;
};

/* Called once per complete event; object is borrowed for the call. Return 0
 * to go on, non-zero to stop decoding (that value is returned by feed). */
typedef int (*kube_watch_event_fn)(void *ud, enum kube_event_type type,
				   const cJSON *object);

void kube_watch_decoder_init(struct kube_watch_decoder *d, size_t max_event);
void kube_watch_decoder_release(struct kube_watch_decoder *d);
/* Forget any partial event (after a reconnect). */
void kube_watch_decoder_reset(struct kube_watch_decoder *d);

/* Feed bytes. Returns 0, the callback's non-zero value, KUBE_ERR_TOO_LARGE
 * (event over max_event), KUBE_ERR_PROTOCOL (not an event stream; err says
 * why) or KUBE_ERR_NOMEM. After an error the decoder must be reset. */
int kube_watch_decoder_feed(struct kube_watch_decoder *d, const char *data,
			    size_t len, kube_watch_event_fn fn, void *ud,
			    struct kube_error *err);

/* ---- informer ---- */

struct kube_informer_ops {
	/* An object was added, changed or deleted, as seen by a watch or
	 * deduced from a re-list. For a deletion deduced from a re-list, obj
	 * holds only metadata.{namespace,name,uid,resourceVersion}. */
	void (*on_event)(void *ud, enum kube_event_type type, const cJSON *obj);
	/* Every list (the first and each re-list) has been applied. */
	void (*on_synced)(void *ud);
};

struct kube_informer_opts {
	const struct kube_resource *resource;
	const char *ns;                /* NULL: all namespaces */
	const char *label_selector;    /* NULL: none */
	const char *field_selector;    /* NULL: none */
	unsigned page_size;            /* list page size; default 500 */
	size_t max_event;              /* default KUBE_WATCH_DEFAULT_MAX_EVENT */
	int watch_timeout_s;           /* server-side watch timeout; default 300..600 random */
	int64_t backoff_base_ms;       /* default 200 */
	int64_t backoff_cap_ms;        /* default 10000 */
	/* Start by watching from this resourceVersion instead of listing
	 * (resume from a saved position); NULL: list first. */
	const char *initial_resource_version;
};

struct kube_informer_stats {
	uint64_t lists;        /* complete lists */
	uint64_t watches;      /* watch streams opened (HTTP 200) */
	uint64_t events;       /* events delivered to on_event */
	uint64_t bookmarks;
	uint64_t gone;         /* 410 Gone answers (each leads to a list) */
	uint64_t errors;       /* failed lists and watches */
	size_t objects;        /* objects known now */
	char resource_version[64];
	bool synced;           /* a list has completed */
	bool watching;         /* a watch stream is open right now */
};

struct kube_informer;

/* The informer copies opts' strings; client and ops are borrowed and must
 * outlive it. Returns NULL when out of memory. */
struct kube_informer *kube_informer_new(struct kube_client *client,
					const struct kube_informer_opts *opts,
					const struct kube_informer_ops *ops, void *ud);
void kube_informer_free(struct kube_informer *inf);

/* Run until *stop becomes non-zero (checked at least once a second). Calls
 * ops from this thread. Returns 0 when stopped. */
int kube_informer_run(struct kube_informer *inf, const volatile int *stop);

/* A snapshot of the counters; safe from any thread. */
void kube_informer_get_stats(struct kube_informer *inf, struct kube_informer_stats *out);

#endif
