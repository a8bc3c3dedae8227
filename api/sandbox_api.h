/*
 * sandbox_api: the v1 HTTP API over the sandbox cache and the Kubernetes
 * client: routing, input validation, JSON in and out, and the asynchronous
 * writes (create, delete, extend) that run on the worker pool.
 *
 *   GET    /healthz, /readyz                       (unauthenticated)
 *   POST   /v1/sandboxes                           create (wait by default)
 *   GET    /v1/sandboxes                           list (?label=k=v, limit, continue)
 *   GET    /v1/sandboxes/{id}
 *   DELETE /v1/sandboxes/{id}
 *   POST   /v1/sandboxes/{id}/timeout              extend or shorten
 *   POST   /v1/sandboxes/{id}/tokens               a token valid for that sandbox only
 *   POST   /v1/sandboxes/{id}/exec                 run a command, answer when it ends
 *   GET    /v1/sandboxes/{id}/exec                 WebSocket exec stream (v5/v4.channel.k8s.io)
 *   GET    /v1/templates
 *
 * Every call but /healthz and /readyz is authenticated (API key or JWT, see
 * auth.h), rate-limited, checked for scope, and confined to the caller's
 * tenant (another tenant's sandbox is 404, as if it did not exist). Writes,
 * token issuance and every refusal are audited.
 *
 * Reads are answered on the server's thread from the cache; writes go to a
 * worker and are answered from there (or from the informer's thread when a
 * create waits for readiness). docs/api.md and docs/openapi.yaml describe it.
 */
#ifndef SBX_SANDBOX_API_H
#define SBX_SANDBOX_API_H

#include <stdbool.h>

#include "audit.h"
#include "auth.h"
#include "client_addr.h"
#include "config.h"
#include "http_server.h"
#include "ratelimit.h"
#include "kube_client.h"
#include "kube_watch.h"
#include "sandbox_store.h"
#include "workq.h"

struct sandbox_api;

/* Who may call, how often, and the record of what they did. auth is
 * required; a NULL limiter means no limit, a NULL audit no audit. */
struct sandbox_api_security {
	struct auth *auth;
	struct ratelimit *per_principal;  /* requests of one principal */
	struct ratelimit *per_address;    /* failed or unauthenticated attempts of one address */
	struct ratelimit *audit_sampler;  /* at most one "rate_limited" record per key and second */
	struct client_addr_cfg *client_addr;
	struct audit *audit;
};

/* All borrowed; they must outlive the api. informer may be NULL (tests). */
struct sandbox_api *sandbox_api_new(const struct sbx_config *cfg, struct kube_client *kube,
				    struct sandbox_store *store, struct workq *wq,
				    struct kube_informer *informer,
				    const struct sandbox_api_security *sec);

/* The http_server_opts.on_reply hook: writes the audit record of a call. */
void sandbox_api_on_reply(void *api, struct http_request *req, int status);
void sandbox_api_free(struct sandbox_api *api);

/* Begin a graceful stop: /readyz turns 503 (so load balancers move away)
 * and new API calls answer 503 shutting_down; calls in flight go on. */
void sandbox_api_drain(struct sandbox_api *api);

/* Calls handed to workers or waiting for readiness, not yet answered. */
int sandbox_api_inflight(struct sandbox_api *api);

/* Shutting down: stop queueing clean-ups (the workers are being drained;
 * half-created sandboxes are left to the reconciler's expiry). */
void sandbox_api_shutdown(struct sandbox_api *api);

struct exec_mgr;
/* Give the api its exec manager (borrowed; outlives the api). Without one,
 * exec and file calls answer 503 exec_unavailable. */
void sandbox_api_set_exec(struct sandbox_api *api, struct exec_mgr *m);

/* The http_handler_fn to give http_server_new, with the api as ud. */
void sandbox_api_handle(void *api, struct http_request *req);

/* Make sure the NetworkPolicy of every template exists (create when missing).
 * Blocking; for the reconciler and start-up. Returns 0 when all exist. */
int sandbox_api_ensure_network_policies(struct sandbox_api *api);

#endif
