/*
 * cluster_env: what an integration test needs to know about the running test
 * control plane, read from the env file tests/cluster/cluster.py writes
 * (path in $SBX_CLUSTER_ENV).
 */
#ifndef SBX_CLUSTER_ENV_H
#define SBX_CLUSTER_ENV_H

#include "kube_client.h"

/* Load the env file; exits the test with status 2 when it is missing.
 * Prints the control plane's versions line. */
void cluster_env_load(void);

/* A value from the env file, or NULL. */
const char *cluster_env(const char *key);

/* A client for the cluster's admin kubeconfig; exits on failure. */
struct kube_client *cluster_admin_client(void);

/* Run cluster.py with the given subcommand and arguments (e.g.
 * "restart-apiserver --down-seconds 2"); returns its exit status. */
int cluster_py(const char *args);

/* Compact etcd's history up to its current revision (through etcd's JSON
 * gateway), so that older resourceVersions become "too old" once the API
 * server's watch cache no longer holds them. Returns 0 on success. */
int cluster_compact_etcd(void);

/* Create a namespace with a unique name starting with prefix; returns it
 * (static storage). Exits on failure. */
const char *cluster_new_namespace(struct kube_client *c, const char *prefix);

#endif
