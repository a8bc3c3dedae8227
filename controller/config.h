/*
 * config: the controller's configuration: one YAML file (libyaml), then
 * environment variables (SBX_*), then command-line flags, each overriding the
 * one before. Everything is validated at start; an error names the key and
 * the problem, e.g. "templates[1].user: must be a positive integer (not 0)".
 *
 * Templates are the operator's: they fix image, command, user, resources,
 * runtime class, network profile and lifetimes. Clients choose a template by
 * name and may add only labels, env (bounded) and a timeout (capped).
 */
#ifndef SBX_CONFIG_H
#define SBX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sbx_net_profile {
	SBX_NET_NONE = 0,      /* no egress at all (ingress is always denied) */
	SBX_NET_INTERNET,      /* public egress: 0.0.0.0/0 and ::/0 except private,
				  link-local (incl. 169.254.169.254), loopback and CGNAT
				  ranges; DNS to the cluster resolver allowed */
	SBX_NET_ALLOWLIST,     /* only the listed CIDRs and ports; DNS allowed */
};

struct sbx_egress_rule {
	char *cidr;            /* "203.0.113.0/24" or "2001:db8::/32", validated */
	int ports[16];         /* 1..65535; nports 0 means every port */
	size_t nports;
	char *protocol;        /* "TCP" (default) or "UDP" */
};

struct sbx_kv {
	char *key;
	char *value;
};

struct sbx_template {
	char *name;              /* [a-z0-9-], 1..40 chars */
	char *image;
	char **command;          /* argv of the long-running sandbox process; NULL-terminated */
	size_t ncommand;
	char *workspace_path;    /* absolute, e.g. "/workspace" */
	char *workspace_size;    /* Kubernetes quantity, e.g. "1Gi" */
	char *tmp_size;          /* size limit of the /tmp emptyDir, e.g. "256Mi" */
	int64_t run_as_user;     /* > 0 */
	int64_t run_as_group;    /* > 0 */
	char *cpu_request, *cpu_limit;           /* quantities, all required */
	char *memory_request, *memory_limit;
	char *ephemeral_request, *ephemeral_limit;
	char *runtime_class;     /* NULL: cluster default */
	struct sbx_kv *env;      /* static environment */
	size_t nenv;
	enum sbx_net_profile network;
	struct sbx_egress_rule *egress;  /* SBX_NET_ALLOWLIST only */
	size_t negress;
	int64_t default_lifetime_s;   /* > 0 */
	int64_t max_lifetime_s;       /* >= default */
	/* totals used by quotas later: millicores and bytes of the limits */
	int64_t cpu_limit_milli;
	int64_t memory_limit_bytes;
};

struct sbx_config {
	char *namespace;          /* where sandboxes live; default "sandboxes" */
	char *listen_address;     /* default "0.0.0.0" */
	int port;                 /* default 8080 */
	char *kubeconfig;         /* NULL: the usual search (kube_config_load_default) */
	char *kube_context;
	size_t max_body_bytes;    /* default 1 MiB */
	size_t max_env_vars;      /* client env entries per sandbox; default 64 */
	size_t max_env_bytes;     /* total of names and values; default 32 KiB */
	size_t max_labels;        /* client labels per sandbox; default 16 */
	int create_timeout_s;     /* wait=true deadline; default 120 */
	char *log_level;          /* "info" */
	char *log_format;         /* "json" */
	struct sbx_template *templates;
	size_t ntemplates;
};

/* Load and validate: path (may be NULL for defaults only, which then fail
 * validation for lack of templates), then the environment (SBX_NAMESPACE,
 * SBX_LISTEN_ADDRESS, SBX_PORT, SBX_KUBECONFIG, SBX_LOG_LEVEL, ...), then argv
 * flags (--config is read first; --namespace, --port, --listen, --kubeconfig,
 * --context, --log-level, --log-format). Returns 0 and *out, or a negative
 * code with a one-line reason in err. --help/--version are handled by the
 * caller before this. */
int config_load(const char *path, int argc, char **argv, struct sbx_config **out,
		char *err, size_t errlen) __attribute__((warn_unused_result));

/* Parse from a YAML string (tests, fuzzers); no env or flags applied. */
int config_parse(const char *yaml, size_t len, struct sbx_config **out, char *err,
		 size_t errlen) __attribute__((warn_unused_result));

void config_free(struct sbx_config *cfg);

/* The template named name, or NULL. */
const struct sbx_template *config_template(const struct sbx_config *cfg,
					   const char *name);

/* Parse a Kubernetes quantity ("500m", "1", "1.5", "128Mi", "1G", "2e3")
 * into milli-units (cpu) or bytes (memory). Returns 0 or -EINVAL. */
int quantity_parse_milli(const char *q, int64_t *milli);
int quantity_parse_bytes(const char *q, int64_t *bytes);

/* Parse a duration: "90" (seconds), "90s", "15m", "2h", "1d". */
int duration_parse(const char *s, int64_t *seconds);

#endif
