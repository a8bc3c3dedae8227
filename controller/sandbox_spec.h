/*
 * sandbox_spec: the pure builders that turn a template and a client request
 * into Kubernetes objects, and the label/annotation scheme that lets the
 * controller keep every durable fact on the Pod (it is stateless).
 *
 * The Pod passes Pod Security "restricted" and goes beyond it:
 * runAsNonRoot, runAsUser/runAsGroup/fsGroup from the template (never 0),
 * allowPrivilegeEscalation false, capabilities drop ALL, seccomp
 * RuntimeDefault, readOnlyRootFilesystem with emptyDir volumes (size-limited)
 * for the workspace and /tmp, automountServiceAccountToken false,
 * enableServiceLinks false, no host namespaces, hostPath or hostPorts,
 * requests and limits for cpu, memory and ephemeral storage, optional
 * runtimeClassName, terminationGracePeriodSeconds 5, restartPolicy Never.
 *
 * NetworkPolicies: one per network profile in use ("sbx-net-none",
 * "sbx-net-internet", "sbx-net-allow-<template>" for allowlists: the "allow-"
 * keeps a template named "none" or "internet" from colliding with the shared
 * ones), selecting Pods by the SBX_LABEL_NETWORK label; all ingress denied;
 * egress per profile. Shared by every sandbox with that profile.
 *
 * Everything here is pure: no I/O, no clock (except sandbox_new_id's
 * randomness); callers pass times in.
 */
#ifndef SBX_SANDBOX_SPEC_H
#define SBX_SANDBOX_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h"

/* Labels (selectable) and annotations (not) on every object we manage. */
#define SBX_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define SBX_MANAGED_BY "sandbox-controller"
#define SBX_LABEL_ID "sandbox-controller.dev/id"
#define SBX_LABEL_TEMPLATE "sandbox-controller.dev/template"
#define SBX_LABEL_TENANT "sandbox-controller.dev/tenant"
#define SBX_LABEL_NETWORK "sandbox-controller.dev/network"
#define SBX_LABEL_USER_PREFIX "user.sandbox-controller.dev/"   /* + client label key */
#define SBX_ANN_CREATED "sandbox-controller.dev/created-at"    /* unix seconds */
#define SBX_ANN_EXPIRES "sandbox-controller.dev/expires-at"    /* unix seconds */
#define SBX_SELECTOR SBX_LABEL_MANAGED_BY "=" SBX_MANAGED_BY
#define SBX_CONTAINER "sandbox"

struct sbx_pod_request {
	const char *id;            /* the Pod name, see sandbox_new_id */
	const char *tenant;        /* label value; "default" until auth lands */
	int64_t created_at;        /* unix seconds */
	int64_t expires_at;        /* unix seconds */
	const struct sbx_kv *labels;  /* client labels (validated by the caller) */
	size_t nlabels;
	const struct sbx_kv *env;     /* client env (validated by the caller) */
	size_t nenv;
};

/* A new sandbox id: "sb-" + 20 chars of lowercase base32 (100 random bits);
 * a valid Pod name. out must hold 24 bytes. Returns 0 or -EIO. */
int sandbox_new_id(char out[24]) __attribute__((warn_unused_result));

/* Non-zero when s has the shape sandbox_new_id produces ("sb-" and 20 of
 * [a-z2-7]): the API can answer 404 for anything else without a lookup. */
int sandbox_valid_id(const char *s);

/* The Pod for a request. Returns a new object (caller frees) or NULL when out
 * of memory. Env order: the template's env (file order), then HOME=workspace
 * path unless the template sets HOME, then the client's env (request order).
 * Client env may not override the template's: the caller rejects such names
 * (sandbox_env_conflict); the builder also drops them, and later duplicates
 * within the client env, so the template's values always stand. Labels:
 * SBX_LABEL_MANAGED_BY, _ID, _TEMPLATE, _TENANT (req->tenant, "default" when
 * NULL), _NETWORK (the policy name) and SBX_LABEL_USER_PREFIX + each client
 * key; annotations SBX_ANN_CREATED and SBX_ANN_EXPIRES (decimal seconds). */
cJSON *sandbox_build_pod(const struct sbx_config *cfg, const struct sbx_template *t,
			 const struct sbx_pod_request *req);

/* The name of the NetworkPolicy a template's Pods use (static storage or
 * into buf of 64 bytes): "sbx-net-none", "sbx-net-internet" or
 * "sbx-net-allow-<template>". */
const char *sandbox_network_policy_name(const struct sbx_template *t, char buf[64]);

/* The NetworkPolicy for a template's profile, in cfg->namespace, labelled
 * managed-by and network. Ingress: none. Egress: none -> nothing; internet ->
 * 0.0.0.0/0 and ::/0 except private, CGNAT, link-local and loopback ranges,
 * plus DNS; allowlist -> each rule's CIDR and ports, plus DNS. DNS is UDP and
 * TCP 53 to Pods labelled k8s-app=kube-dns in namespace kube-system. Caller
 * frees; NULL when out of memory. */
cJSON *sandbox_build_network_policy(const struct sbx_config *cfg,
				    const struct sbx_template *t);

/* Validation of client input, shared by the API and the builders. Each
 * returns non-zero when valid. */
/* A label key a client may use: 1..63 chars, [A-Za-z0-9._-], alnum at both ends. */
int sandbox_valid_label_key(const char *k);
/* A label value: 0..63 chars, same alphabet, alnum at both ends when not empty. */
int sandbox_valid_label_value(const char *v);
/* An environment variable name: [A-Za-z_][A-Za-z0-9_]*, 1..128 chars. */
int sandbox_valid_env_name(const char *n);

/* Non-zero when a client may not set env name n for template t because the
 * template sets it (its env, or HOME, which the builder always sets). The API
 * answers 422 for such a name. */
int sandbox_env_conflict(const struct sbx_template *t, const char *n);

#endif
