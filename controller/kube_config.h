/*
 * kube_config: where the Kubernetes API server is and how to authenticate to
 * it, from a kubeconfig file or from the in-cluster service-account mount.
 *
 * Supported kubeconfig fields: current-context (or an explicit context),
 * contexts[].context.{cluster,user,namespace}, clusters[].cluster.{server,
 * certificate-authority, certificate-authority-data, insecure-skip-tls-verify,
 * tls-server-name}, users[].user.{token, tokenFile, client-certificate,
 * client-certificate-data, client-key, client-key-data}. Relative file paths
 * are resolved against the kubeconfig's directory, as kubectl does. Exec
 * plugins, auth providers and basic auth are refused with a clear error.
 *
 * Every string that can hold a secret (token, client key) is wiped on free.
 */
#ifndef SBX_KUBE_CONFIG_H
#define SBX_KUBE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* Upper bounds for what a config may hold; larger input is an error. */
#define KUBE_CONFIG_MAX_FILE (4u << 20)      /* kubeconfig file */
#define KUBE_CONFIG_MAX_PEM (1u << 20)       /* one CA bundle / cert / key */
#define KUBE_CONFIG_MAX_TOKEN (64u << 10)    /* one bearer token */

/* The default mount of a Pod's service-account credentials. */
#define KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct kube_config {
	char *server;          /* "https://host:port", no trailing slash */
	char *namespace;       /* default namespace, or NULL */
	char *tls_server_name; /* name to verify instead of the URL's host, or NULL */
	bool insecure_skip_tls_verify;
	char *ca_pem;          /* CA bundle (PEM); NULL means the system's CAs */
	size_t ca_len;
	char *cert_pem;        /* client certificate (PEM), or NULL */
	size_t cert_len;
	char *key_pem;         /* client private key (PEM, secret), or NULL */
	size_t key_len;
	char *token;           /* static bearer token (secret), or NULL */
	char *token_file;      /* file re-read for the bearer token, or NULL */
	char *source;          /* where this came from, for log lines (no secrets) */
};

/* Load a kubeconfig file. context may be NULL for current-context. On success
 * *out is a new config the caller frees with kube_config_free(); on failure
 * returns a negative errno-style code and writes a one-line reason naming the
 * offending key or file into err (never a secret). */
int kube_config_load_file(const char *path, const char *context,
			  struct kube_config **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The same for a kubeconfig already in memory; base_dir resolves relative
 * paths (NULL: the current directory). Used by tests and fuzzers. */
int kube_config_load_buffer(const char *yaml, size_t len, const char *base_dir,
			    const char *context, struct kube_config **out,
			    char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* In-cluster configuration: KUBERNETES_SERVICE_HOST/PORT from the
 * environment, and token, ca.crt and namespace from sa_dir (NULL: the
 * standard mount). The token is kept as token_file so that rotated projected
 * tokens are picked up. */
int kube_config_in_cluster(const char *sa_dir, struct kube_config **out,
			   char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The usual search order: explicit path if given, else $KUBECONFIG (first
 * entry), else in-cluster when KUBERNETES_SERVICE_HOST is set, else
 * ~/.kube/config. */
int kube_config_load_default(const char *path, const char *context,
			     struct kube_config **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Free a config, wiping secrets. NULL is a no-op. */
void kube_config_free(struct kube_config *cfg);

/* Decode standard base64, ignoring whitespace. On success *out is malloc'd
 * (NUL-terminated for convenience) and *outlen its length. Returns 0,
 * -EINVAL for bad input, -E2BIG when the result would exceed max. */
int kube_base64_decode(const char *in, size_t inlen, size_t max, char **out,
		       size_t *outlen) __attribute__((warn_unused_result));

#endif
