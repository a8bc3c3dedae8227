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

/* Bounds on what a configuration may hold (hostile or mistaken files fail
 * with a message rather than exhausting memory). */
#define CONFIG_MAX_FILE (1u << 20)            /* bytes of the YAML file */
#define CONFIG_MAX_DEPTH 32                   /* nesting of lists and mappings */
#define CONFIG_MAX_TEMPLATES 64
#define CONFIG_MAX_COMMAND 64                 /* argv entries of a template's command */
#define CONFIG_MAX_ARG 4096                   /* bytes of one argv entry */
#define CONFIG_MAX_TEMPLATE_ENV 128           /* env entries of one template */
#define CONFIG_MAX_ENV_VALUE 4096             /* bytes of one template env value */
#define CONFIG_MAX_TEMPLATE_ENV_BYTES (32u << 10) /* names + values of one template */
#define CONFIG_MAX_EGRESS 64                  /* allowlist rules of one template */
#define CONFIG_MAX_LIFETIME_S (3650LL * 86400) /* ten years */

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
	char *protocol;        /* "TCP" (default) or "UDP"; applies to ports, so
				  it may be given only together with ports */
};

struct sbx_kv {
	char *key;
	char *value;
};

/*
 * Command policy and limits of a template (templates[i].exec). A guard rail
 * on what is launched, not a sandbox: the Pod is the sandbox. Allowing a
 * shell or an interpreter allows whatever it can run.
 */
#define CONFIG_MAX_PROGRAMS 256                /* entries of allow or deny */
struct sbx_exec_policy {
	char *shell;             /* exec.shell: POSIX shell used to wrap commands
				    (env, workdir, kill on timeout); default "/bin/sh";
				    NULL when "none": no wrapper, no env/workdir, and
				    timeouts cannot stop the command */
	char **allow;            /* exec.allow: programs; empty = any program */
	size_t nallow;
	char **deny;             /* exec.deny: programs refused */
	size_t ndeny;
	size_t max_args;         /* exec.max_args: argv entries; default 256, 1..4096 */
	size_t max_arg_bytes;    /* exec.max_arg_bytes: one entry; default 32Ki, <= 1Mi */
	size_t max_argv_bytes;   /* exec.max_argv_bytes: all entries; default 256Ki, <= 1Mi */
	int64_t default_timeout_s; /* exec.default_timeout: one-shot; default 5m */
	int64_t max_timeout_s;   /* exec.max_timeout: default 1h, <= 1d */
	size_t default_output_bytes; /* exec.default_output: per stream, one-shot; default 1Mi */
	size_t max_output_bytes; /* exec.max_output: default 16Mi, <= 64Mi */
	int max_streams;         /* exec.max_streams: concurrent exec calls and streams
				    (file transfers included) per sandbox; default 16, 1..1024 */
	size_t max_file_bytes;   /* exec.max_file_bytes: one file up or down; default 64Mi, <= 4Gi */
};

struct sbx_template {
	char *name;              /* [a-z0-9-], 1..40 chars, starting and ending
				    with a letter or digit (it is a label value) */
	char *image;
	char **command;          /* argv of the long-running sandbox process; NULL-terminated */
	size_t ncommand;
	char *workspace_path;    /* absolute, canonical, e.g. "/workspace" (the default);
				    never "/", /tmp, /proc, /sys, /dev or below them */
	char *workspace_size;    /* Kubernetes quantity, e.g. "1Gi" */
	char *tmp_size;          /* size limit of the /tmp emptyDir, e.g. "256Mi";
				    default "64Mi". workspace + tmp <= the
				    ephemeral-storage limit (checked) */
	int64_t run_as_user;     /* 1..2147483647 */
	int64_t run_as_group;    /* 1..2147483647; also the Pod's fsGroup */
	char *cpu_request, *cpu_limit;           /* quantities, all required */
	char *memory_request, *memory_limit;
	char *ephemeral_request, *ephemeral_limit;
	char *runtime_class;     /* NULL: cluster default */
	struct sbx_kv *env;      /* static environment, in file order, names unique */
	size_t nenv;
	enum sbx_net_profile network;
	struct sbx_egress_rule *egress;  /* SBX_NET_ALLOWLIST only */
	size_t negress;
	int64_t default_lifetime_s;   /* > 0; default 1h */
	int64_t max_lifetime_s;       /* >= default, <= CONFIG_MAX_LIFETIME_S; default 24h */
	struct sbx_exec_policy exec; /* exec and files (templates[i].exec) */
	/* totals used by quotas later: millicores and bytes of the limits */
	int64_t cpu_limit_milli;
	int64_t memory_limit_bytes;
};

/*
 * auth: where the credentials live (docs/authentication.md). Only paths and
 * settings: no secret is ever held here. Every field is optional; whether the
 * combination leaves any way to authenticate is config_check_credentials's
 * question, not config_parse's.
 */
#define CONFIG_MAX_JWT_PUBLIC_KEYS 16

/* auth.client_certs[i]: a client certificate subject CN the API accepts. */
struct sbx_client_cert {
	char *subject_cn;             /* exact match; [A-Za-z0-9._@:-], 1..64 */
	char *tenant;                 /* a label value */
	char **scopes;                /* names; auth_new checks them */
	size_t nscopes;
};

#define CONFIG_MAX_CLIENT_CERTS 1000
#define CONFIG_CLIENT_CN_MAX 64

/* Whether s can be a client certificate CN in auth.client_certs: 1 to
 * CONFIG_CLIENT_CN_MAX of [A-Za-z0-9._@:-] (safe to log and to use as a
 * rate-limit and audit id). */
bool config_valid_client_cn(const char *s);

struct sbx_auth_config {
	char *api_keys_file;          /* auth.api_keys_file: YAML key file (hashes only) */
	char *jwt_hs256_secret_file;  /* auth.jwt.hs256_secret_file */
	bool jwt_hs256_secret_env;    /* set by config_load when SBX_JWT_HS256_SECRET
					 is non-empty; auth_new reads the variable */
	char **jwt_public_keys;       /* auth.jwt.public_keys: PEM files (RS256/ES256) */
	size_t njwt_public_keys;      /* at most CONFIG_MAX_JWT_PUBLIC_KEYS */
	char *jwt_jwks_file;          /* auth.jwt.jwks_file */
	char *jwt_issuer;             /* auth.jwt.issuer: NULL = not checked */
	char *jwt_audience;           /* auth.jwt.audience: NULL = not checked */
	char *jwt_tenant_claim;       /* auth.jwt.tenant_claim; default "tenant" */
	int64_t jwt_leeway_s;         /* auth.jwt.leeway; default 30 s, 0..600 s */
	char *scoped_token_secret_file; /* NULL: a random secret per process */
	bool insecure_dev_mode;       /* auth.insecure_dev_mode; file only, never
					 from the environment or a flag */
	struct sbx_client_cert *client_certs; /* auth.client_certs (needs
						 tls.client_ca_file) */
	size_t nclient_certs;
};

/* Per-tenant limits on live sandboxes; 0 means no limit. */
struct sbx_quota {
	int64_t sandboxes;
	int64_t exec_streams;   /* concurrent exec calls, streams and file transfers */
	int64_t cpu_milli;      /* sum of the templates' cpu limits */
	int64_t memory_bytes;   /* sum of the templates' memory limits */
};

struct sbx_tenant_quota {
	char *tenant;
	struct sbx_quota q;
};

struct sbx_config {
	char *namespace;          /* where sandboxes live; default "sandboxes" */
	char *listen_address;     /* an IPv4 or IPv6 literal; default "0.0.0.0" */
	int port;                 /* default 8080 */
	char *kubeconfig;         /* NULL: the usual search (kube_config_load_default) */
	char *kube_context;
	size_t max_body_bytes;    /* default 1 MiB; 1 KiB..64 MiB */
	size_t max_env_vars;      /* client env entries per sandbox; default 64; <= 1024 */
	size_t max_env_bytes;     /* total of names and values; default 32 KiB; <= 1 MiB */
	size_t max_labels;        /* client labels per sandbox; default 16; <= 64 */
	int create_timeout_s;     /* wait=true deadline; default 120; 1..3600 */
	int max_exec_streams;     /* limits.max_exec_streams: exec calls, streams and file
				     transfers open at once on this replica; default 1024,
				     1..100000 */
	char *log_level;          /* "debug", "info" (default), "warn", "error" */
	char *log_format;         /* "json" (default) or "text" */
	struct sbx_template *templates;
	size_t ntemplates;
	struct sbx_auth_config auth;

	/* limits.rate: token buckets (docs/security.md) */
	bool rate_enabled;            /* limits.rate.enabled; default true */
	double rate_principal;        /* limits.rate.per_principal.rate, per second; default 20 */
	double rate_principal_burst;  /* limits.rate.per_principal.burst; default 40 */
	double rate_address;          /* limits.rate.per_address.rate: failed or
					 unauthenticated attempts; default 1 */
	double rate_address_burst;    /* limits.rate.per_address.burst; default 20 */
	size_t rate_max_keys;         /* limits.rate.max_keys; default 10000 */
	char **trusted_proxies;       /* trusted_proxies: CIDRs whose X-Forwarded-For is believed */
	size_t ntrusted_proxies;
	char *audit_destination;      /* audit.destination: stdout (default), stderr or a path */
	int audit_argv;               /* audit.argv: 0 full (default), 1 redacted, 2 hashed */
	char *tls_cert_file;          /* tls.cert_file and tls.key_file: HTTPS when both set */
	char *tls_key_file;
	char *tls_client_ca_file;     /* tls.client_ca_file: ask for and verify
					 client certificates (mTLS, optional
					 for the client) */
	struct sbx_quota quota;       /* quotas.default: per tenant; 0 = no limit */
	struct sbx_tenant_quota *tenant_quotas; /* quotas.tenants: overrides */
	size_t ntenant_quotas;
};

/* The quota of a tenant: quotas.tenants[tenant] or quotas.default. */
const struct sbx_quota *config_quota(const struct sbx_config *cfg, const char *tenant);

/* Load and validate: path (may be NULL for defaults only, which then fail
 * validation for lack of templates), then the environment (SBX_NAMESPACE,
 * SBX_LISTEN_ADDRESS, SBX_PORT, SBX_KUBECONFIG, SBX_KUBE_CONTEXT,
 * SBX_LOG_LEVEL, SBX_LOG_FORMAT; an empty variable counts as unset;
 * SBX_JWT_HS256_SECRET only sets auth.jwt_hs256_secret_env -- it is an error
 * together with auth.jwt.hs256_secret_file -- and SBX_INSECURE_DEV_MODE is
 * refused, since the insecure mode must be written in the file), then argv
 * flags (--config FILE is read first and replaces path; --namespace, --port,
 * --listen, --kubeconfig, --context, --log-level, --log-format, each as
 * "--flag VALUE" or "--flag=VALUE"; the last occurrence wins). argv[0] is the
 * program name and is skipped. --help, -h, --version and --check belong to
 * the caller and are ignored here; any other flag or a positional argument is
 * an error. Returns 0 and *out (free with config_free), or -EINVAL (invalid
 * flag, value or file; the message names the key, variable or flag), -ENOENT
 * and other negated errnos (file unreadable), -EFBIG (file over
 * CONFIG_MAX_FILE) or -ENOMEM, with a one-line reason in err; file errors
 * begin with the file's path. */
int config_load(const char *path, int argc, char **argv, struct sbx_config **out,
		char *err, size_t errlen) __attribute__((warn_unused_result));

/* Secure by default: whether cfg configures at least one way to
 * authenticate (auth.api_keys_file, a JWT key -- auth.jwt.hs256_secret_file,
 * SBX_JWT_HS256_SECRET, auth.jwt.public_keys, auth.jwt.jwks_file) or
 * explicitly turns on auth.insecure_dev_mode. Returns 0, or -EINVAL with a
 * message in err that says how to configure credentials. Kept apart from
 * config_parse/config_load (which accept a file without an auth section) so
 * that main.c decides when to enforce it: the daemon calls it before it
 * serves; tests and --help do not need credentials. */
int config_check_credentials(const struct sbx_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Parse and validate a YAML string of len bytes (tests, fuzzers); no env or
 * flags applied. Same results as config_load. */
int config_parse(const char *yaml, size_t len, struct sbx_config **out, char *err,
		 size_t errlen) __attribute__((warn_unused_result));

/* Free everything cfg holds and cfg itself. NULL is a no-op. */
void config_free(struct sbx_config *cfg);

/* The template named name, or NULL. */
const struct sbx_template *config_template(const struct sbx_config *cfg,
					   const char *name);

/* Parse a Kubernetes quantity ("500m", "1", "1.5", "128Mi", "1G", "2e3")
 * into milli-units (cpu) or bytes (memory). Strict: digits with an optional
 * fraction ("1.5", not ".5", "5." or a sign), then one suffix (m k M G T P E,
 * Ki Mi Gi Ti Pi Ei, or e/E and a signed exponent). The value must be a whole
 * number of milli-units (bytes) and at most INT64_MAX. Returns 0 or -EINVAL
 * (also for "", negatives, "1x", "128m" as bytes and overflow). */
int quantity_parse_milli(const char *q, int64_t *milli);
int quantity_parse_bytes(const char *q, int64_t *bytes);

/* Whether the n bytes at s are 1..max of [a-z0-9-] with a letter or digit at
 * both ends (an RFC 1123 label: namespaces, template names, tenants). */
bool config_valid_label_n(const char *s, size_t n, size_t max);

/* Parse a duration: "90" (seconds), "90s", "15m", "2h", "1d": decimal digits
 * without a sign or leading zeros, then at most one unit. Returns 0 or
 * -EINVAL (also for "", "-1", "1x", "1h30m" and overflow). */
int duration_parse(const char *s, int64_t *seconds);

#endif
