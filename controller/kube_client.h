/*
 * kube_client: a small Kubernetes REST client on libcurl and cJSON.
 *
 * Every call the controller makes to the API server goes through here: one
 * place for credentials, TLS, timeouts, retries, size limits and the decoding
 * of errors into struct kube_error.
 *
 * Threads: a client may be shared by any number of threads. Each call borrows
 * a curl easy handle from a small pool; all handles share one connection
 * cache, so connections to the API server are reused across calls and threads.
 *
 * Retries: calls marked idempotent (GET, LIST, DELETE) are retried with
 * jittered exponential backoff on transport errors, timeouts, 429 and 5xx.
 * Non-idempotent calls (create, patch) are retried only when the server
 * certainly did not act on them: a failed connect, or 429 Too Many Requests.
 * Retry-After is honoured (capped by the retry budget).
 *
 * Credentials: a bearer token from the config or re-read from a token file
 * (at most once a minute, and at once after a 401 so that rotated projected
 * tokens keep working), or a client certificate. Tokens are wiped from memory
 * when replaced and never logged.
 */
#ifndef SBX_KUBE_CLIENT_H
#define SBX_KUBE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "kube_config.h"
#include "kube_status.h"

struct kube_client;

struct kube_client_opts {
	long timeout_ms;          /* per attempt; default 15000 */
	long connect_timeout_ms;  /* default 5000 */
	unsigned max_attempts;    /* for retryable failures; default 4 */
	int64_t retry_base_ms;    /* default 100 */
	int64_t retry_cap_ms;     /* default 5000 */
	size_t max_response;      /* bytes of one response body; default 32 MiB */
	const char *user_agent;   /* default "sandbox-controller/VERSION" */
};

/* A resource type: the API group/version prefix and the plural name. */
struct kube_resource {
	const char *prefix;   /* "/api/v1" or "/apis/<group>/<version>" */
	const char *plural;   /* "pods" */
	bool namespaced;
};

extern const struct kube_resource KUBE_RES_PODS;
extern const struct kube_resource KUBE_RES_CONFIGMAPS;
extern const struct kube_resource KUBE_RES_SECRETS;
extern const struct kube_resource KUBE_RES_SERVICEACCOUNTS;
extern const struct kube_resource KUBE_RES_NAMESPACES;
extern const struct kube_resource KUBE_RES_NODES;
extern const struct kube_resource KUBE_RES_NETWORKPOLICIES;
extern const struct kube_resource KUBE_RES_LEASES;
extern const struct kube_resource KUBE_RES_ROLES;
extern const struct kube_resource KUBE_RES_ROLEBINDINGS;

struct kube_list_opts {
	const char *label_selector;   /* NULL: none */
	const char *field_selector;   /* NULL: none */
	unsigned limit;               /* 0: no limit */
	const char *continue_token;   /* NULL: first page */
	const char *resource_version; /* NULL: most recent (quorum read) */
};

struct kube_delete_opts {
	const char *uid;               /* precondition, or NULL */
	const char *resource_version;  /* precondition, or NULL */
	long grace_period_s;           /* < 0: the object's default */
	const char *propagation;       /* "Background", "Foreground", "Orphan" or NULL */
};

enum kube_patch_type {
	KUBE_PATCH_MERGE,      /* application/merge-patch+json (RFC 7386) */
	KUBE_PATCH_JSON,       /* application/json-patch+json (RFC 6902) */
	KUBE_PATCH_STRATEGIC,  /* application/strategic-merge-patch+json */
};

/* Create a client for cfg (copied: the client does not keep cfg). opts may
 * be NULL for defaults. Returns NULL and a reason in err on failure. */
struct kube_client *kube_client_new(const struct kube_config *cfg,
				    const struct kube_client_opts *opts,
				    char *err, size_t errlen);

/* Free a client; no call may be in progress. NULL is a no-op. */
void kube_client_free(struct kube_client *c);

/* The API server base URL, e.g. "https://127.0.0.1:6443". Owned by c. */
const char *kube_client_server(const struct kube_client *c);

/* Build "/api/v1/namespaces/NS/pods/NAME/SUB" into out (malloc'd; caller
 * frees), escaping every segment. ns is ignored for cluster-scoped
 * resources; name and sub may be NULL. Returns KUBE_ERR_ARG for an empty,
 * "." or ".." segment or a namespaced resource without a namespace. */
enum kube_err kube_resource_path(const struct kube_resource *r, const char *ns,
				 const char *name, const char *sub, char **out);

/* Percent-encode s (all but ALPHA / DIGIT / "-" / "." / "_" / "~") into a
 * new string. Returns NULL when out of memory. */
char *kube_escape(const char *s);

/*
 * The generic call. path begins with "/" and may carry a query string whose
 * values the caller escaped (kube_escape). body may be NULL. On success (2xx)
 * returns KUBE_OK and, when out is not NULL, *out is the parsed JSON response
 * (owned by the caller; NULL for an empty body). On failure returns the code
 * and fills err (which may be NULL if the caller only wants the code).
 */
enum kube_err kube_request(struct kube_client *c, const char *method,
			   const char *path, const char *content_type,
			   const char *body, size_t body_len, bool idempotent,
			   cJSON **out, struct kube_error *err)
	__attribute__((warn_unused_result));

/* Typed helpers. They build the path with kube_resource_path and call
 * kube_request. Objects passed in are borrowed; *out is owned by the caller. */
enum kube_err kube_get(struct kube_client *c, const struct kube_resource *r,
		       const char *ns, const char *name, cJSON **out,
		       struct kube_error *err) __attribute__((warn_unused_result));
enum kube_err kube_list(struct kube_client *c, const struct kube_resource *r,
			const char *ns, const struct kube_list_opts *opts,
			cJSON **out, struct kube_error *err)
	__attribute__((warn_unused_result));
enum kube_err kube_create(struct kube_client *c, const struct kube_resource *r,
			  const char *ns, const cJSON *obj, cJSON **out,
			  struct kube_error *err) __attribute__((warn_unused_result));
/* Create on a subresource, e.g. serviceaccounts/NAME/token (TokenRequest). */
enum kube_err kube_create_sub(struct kube_client *c, const struct kube_resource *r,
			      const char *ns, const char *name, const char *sub,
			      const cJSON *obj, cJSON **out, struct kube_error *err)
	__attribute__((warn_unused_result));
enum kube_err kube_patch(struct kube_client *c, const struct kube_resource *r,
			 const char *ns, const char *name, enum kube_patch_type type,
			 const char *patch, cJSON **out, struct kube_error *err)
	__attribute__((warn_unused_result));
enum kube_err kube_delete(struct kube_client *c, const struct kube_resource *r,
			  const char *ns, const char *name,
			  const struct kube_delete_opts *opts, cJSON **out,
			  struct kube_error *err) __attribute__((warn_unused_result));

/* Append "?labelSelector=...&limit=..." for opts to a malloc'd path; returns
 * the new string (the old one is freed) or NULL when out of memory. Extra
 * query parameters may follow in extra (already escaped, no leading '&'). */
char *kube_list_query(char *path, const struct kube_list_opts *opts,
		      const char *extra);

/*
 * Streaming GET for watches: body bytes are handed to on_data as they arrive;
 * on_data is first called once with (NULL, 0) when a 2xx answer's headers
 * are in, so that the consumer knows the stream is open before any data.
 * on_data returns 0 to continue, anything else to stop (that value is then
 * returned as KUBE_ERR_CANCELLED unless it is a kube_err, which is returned as
 * is). Never retried. timeout_ms bounds the whole stream; stop, when not NULL,
 * is polled about once a second and ends the stream with KUBE_ERR_CANCELLED.
 * A non-2xx answer is decoded into err as for kube_request.
 */
typedef int (*kube_stream_fn)(void *ud, const char *data, size_t len);
enum kube_err kube_stream(struct kube_client *c, const char *path, long timeout_ms,
			  kube_stream_fn on_data, void *ud,
			  const volatile int *stop, struct kube_error *err)
	__attribute__((warn_unused_result));

/* Counters, for metrics and tests. */
struct kube_client_stats {
	uint64_t requests;      /* HTTP attempts made */
	uint64_t retries;       /* attempts beyond the first */
	uint64_t token_reloads; /* times the token file was read */
};
void kube_client_get_stats(struct kube_client *c, struct kube_client_stats *out);

#endif
