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
 * "sbx-net-internet", "sbx-net-<template>" for allowlists), selecting Pods by
 * the LABEL_NETWORK label; all ingress denied; egress per profile. Shared by
 * every sandbox with that profile.
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

/* The Pod for a request. Returns a new object (caller frees) or NULL when out
 * of memory. Template env comes first; client env may not override it (the
 * caller rejects such names). */
cJSON *sandbox_build_pod(const struct sbx_config *cfg, const struct sbx_template *t,
			 const struct sbx_pod_request *req);

/* The name of the NetworkPolicy a template's Pods use (static storage or
 * into buf of 64 bytes). */
const char *sandbox_network_policy_name(const struct sbx_template *t, char buf[64]);

/* The NetworkPolicy for a template's profile. Caller frees. */
cJSON *sandbox_build_network_policy(const struct sbx_config *cfg,
				    const struct sbx_template *t);

/* Validation of client input, shared by the API and the builders. */
/* A label key a client may use: 1..63 chars, [A-Za-z0-9._-], alnum at both ends. */
int sandbox_valid_label_key(const char *k);
/* A label value: 0..63 chars, same alphabet, alnum at both ends when not empty. */
int sandbox_valid_label_value(const char *v);
/* An environment variable name: [A-Za-z_][A-Za-z0-9_]*, 1..128 chars. */
int sandbox_valid_env_name(const char *n);

#endif
