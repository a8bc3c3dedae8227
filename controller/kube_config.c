/*
 * kube_config: kubeconfig (libyaml document API) and in-cluster loading.
 *
 * The YAML is loaded as a node graph and read only at fixed, shallow paths, so
 * aliases and deep nesting in hostile input cannot make this code recurse or
 * loop; the size of the file is bounded before parsing.
 */
#include "kube_config.h"
#include "util.h"
#include "yaml_guard.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define ERR(...) snprintf(err, errlen, __VA_ARGS__)

void kube_config_free(struct kube_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->server);
	free(cfg->namespace);
	free(cfg->tls_server_name);
	free(cfg->ca_pem);
	free(cfg->cert_pem);
	if (cfg->key_pem) {
		secure_zero(cfg->key_pem, cfg->key_len);
		free(cfg->key_pem);
	}
	free_secret(cfg->token);
	free(cfg->token_file);
	free(cfg->source);
	free(cfg);
}

/* ---- base64 ---- */

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int kube_base64_decode(const char *in, size_t inlen, size_t max, char **out,
		       size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	size_t cap = inlen / 4 * 3 + 3;
	if (cap > max + 3)
		cap = max + 3;
	char *o = malloc(cap + 1);
	if (!o)
		return -ENOMEM;
	size_t n = 0;
	unsigned acc = 0;
	int bits = 0, pad = 0;
	int rc = -EINVAL;
	for (size_t i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad)
			goto fail; /* data after padding */
		int v = b64_value(c);
		if (v < 0)
			goto fail;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= max) {
				rc = -E2BIG;
				goto fail;
			}
			o[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	/* leftover bits must be zero and padding consistent */
	if (pad > 2 || bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
		goto fail;
	if (pad && (bits / 2) != pad)
		goto fail;
	o[n] = '\0';
	*out = o;
	*outlen = n;
	return 0;
fail:
	secure_zero(o, cap + 1);
	free(o);
	return rc;
}

/* ---- YAML helpers ---- */

static yaml_node_t *node_at(yaml_document_t *doc, int idx)
{
	return yaml_document_get_node(doc, idx);
}

/* The scalar value of node, or NULL when it is not a scalar. */
static const char *scalar(yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	return (const char *)n->data.scalar.value;
}

/* Value node for key in mapping m, or NULL. */
static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *m, const char *key)
{
	if (!m || m->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
	     p < m->data.mapping.pairs.top; p++) {
		const char *k = scalar(node_at(doc, p->key));
		if (k && strcmp(k, key) == 0)
			return node_at(doc, p->value);
	}
	return NULL;
}

/* In a sequence of {name: X, <field>: {...}}, the <field> mapping of the entry
 * named name, or NULL. */
static yaml_node_t *named_entry(yaml_document_t *doc, yaml_node_t *seq,
				const char *name, const char *field)
{
	if (!seq || seq->type != YAML_SEQUENCE_NODE)
		return NULL;
	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++) {
		yaml_node_t *e = node_at(doc, *it);
		const char *n = scalar(map_get(doc, e, "name"));
		if (n && strcmp(n, name) == 0)
			return map_get(doc, e, field);
	}
	return NULL;
}

static bool yaml_true(const char *s)
{
	return s && (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 ||
		     strcmp(s, "TRUE") == 0);
}

/* Resolve path against base_dir unless absolute. Caller frees. */
static char *resolve_path(const char *base_dir, const char *path)
{
	char *r = NULL;
	if (path[0] == '/' || !base_dir || !*base_dir)
		return strdup(path);
	if (asprintf(&r, "%s/%s", base_dir, path) < 0)
		return NULL;
	return r;
}

/* Load PEM-ish material either from an inline base64 "-data" key or from a
 * file key. Returns 0 (also when neither is present: *out stays NULL). */
static int load_blob(yaml_document_t *doc, yaml_node_t *m, const char *data_key,
		     const char *file_key, const char *base_dir, char **out,
		     size_t *outlen, char *err, size_t errlen)
{
	const char *data = scalar(map_get(doc, m, data_key));
	const char *file = scalar(map_get(doc, m, file_key));
	*out = NULL;
	*outlen = 0;
	if (data && *data) {
		int rc = kube_base64_decode(data, strlen(data), KUBE_CONFIG_MAX_PEM,
					    out, outlen);
		if (rc) {
			ERR("%s: %s", data_key,
			    rc == -E2BIG ? "too large" : "not valid base64");
			return rc;
		}
		return 0;
	}
	if (file && *file) {
		char *p = resolve_path(base_dir, file);
		if (!p)
			return -ENOMEM;
		int rc = read_file_bounded(p, KUBE_CONFIG_MAX_PEM, out, outlen);
		if (rc)
			ERR("%s: cannot read \"%s\": %s", file_key, p,
			    rc == -EFBIG ? "file too large" : strerror(-rc));
		free(p);
		return rc;
	}
	return 0;
}

/* Trim trailing whitespace and newlines in place (token files end in \n). */
static void rtrim(char *s)
{
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' ||
		     s[n - 1] == '\t'))
		s[--n] = '\0';
}

static int check_server(const char *server, bool has_credentials, char *err,
			size_t errlen)
{
	if (strncmp(server, "https://", 8) == 0) {
		if (server[8] == '\0' || server[8] == '/') {
			ERR("cluster.server: no host in \"%s\"", server);
			return -EINVAL;
		}
	} else if (strncmp(server, "http://", 7) == 0) {
		if (has_credentials) {
			ERR("cluster.server: refusing to send credentials over plain http to \"%s\"",
			    server);
			return -EINVAL;
		}
	} else {
		ERR("cluster.server: \"%s\" is not an https:// URL", server);
		return -EINVAL;
	}
	for (const char *c = server; *c; c++) {
		if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '?' || *c == '#') {
			ERR("cluster.server: invalid character in URL");
			return -EINVAL;
		}
	}
	return 0;
}

static int from_document(yaml_document_t *doc, const char *base_dir,
			 const char *context, struct kube_config *cfg, char *err,
			 size_t errlen)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	if (!root || root->type != YAML_MAPPING_NODE) {
		ERR("kubeconfig: top level is not a mapping");
		return -EINVAL;
	}
	const char *ctx_name = context;
	if (!ctx_name || !*ctx_name)
		ctx_name = scalar(map_get(doc, root, "current-context"));
	if (!ctx_name || !*ctx_name) {
		ERR("current-context: not set and no context given");
		return -EINVAL;
	}
	yaml_node_t *ctx = named_entry(doc, map_get(doc, root, "contexts"), ctx_name,
				       "context");
	if (!ctx || ctx->type != YAML_MAPPING_NODE) {
		ERR("contexts: no context named \"%.100s\"", ctx_name);
		return -ENOENT;
	}
	const char *cluster_name = scalar(map_get(doc, ctx, "cluster"));
	const char *user_name = scalar(map_get(doc, ctx, "user"));
	const char *ns = scalar(map_get(doc, ctx, "namespace"));
	if (!cluster_name || !*cluster_name) {
		ERR("contexts[%.100s].context.cluster: missing", ctx_name);
		return -EINVAL;
	}
	yaml_node_t *cl = named_entry(doc, map_get(doc, root, "clusters"),
				      cluster_name, "cluster");
	if (!cl || cl->type != YAML_MAPPING_NODE) {
		ERR("clusters: no cluster named \"%.100s\"", cluster_name);
		return -ENOENT;
	}
	yaml_node_t *us = NULL;
	if (user_name && *user_name) {
		us = named_entry(doc, map_get(doc, root, "users"), user_name, "user");
		if (!us || us->type != YAML_MAPPING_NODE) {
			ERR("users: no user named \"%.100s\"", user_name);
			return -ENOENT;
		}
	}

	const char *server = scalar(map_get(doc, cl, "server"));
	if (!server || !*server) {
		ERR("clusters[%.100s].cluster.server: missing", cluster_name);
		return -EINVAL;
	}
	cfg->insecure_skip_tls_verify =
		yaml_true(scalar(map_get(doc, cl, "insecure-skip-tls-verify")));
	const char *sni = scalar(map_get(doc, cl, "tls-server-name"));
	int rc = load_blob(doc, cl, "certificate-authority-data",
			   "certificate-authority", base_dir, &cfg->ca_pem,
			   &cfg->ca_len, err, errlen);
	if (rc)
		return rc;

	if (us) {
		static const char *const unsupported[] = { "exec", "auth-provider",
							   "username", "password" };
		for (size_t i = 0; i < ARRAY_SIZE(unsupported); i++) {
			if (map_get(doc, us, unsupported[i])) {
				ERR("users[%.100s].user.%s: not supported; use token, tokenFile or a client certificate",
				    user_name, unsupported[i]);
				return -ENOTSUP;
			}
		}
		const char *tok = scalar(map_get(doc, us, "token"));
		const char *tokfile = scalar(map_get(doc, us, "tokenFile"));
		if (tok && *tok) {
			if (strlen(tok) > KUBE_CONFIG_MAX_TOKEN) {
				ERR("users[%.100s].user.token: too long", user_name);
				return -E2BIG;
			}
			cfg->token = strdup(tok);
			if (!cfg->token)
				return -ENOMEM;
		} else if (tokfile && *tokfile) {
			cfg->token_file = resolve_path(base_dir, tokfile);
			if (!cfg->token_file)
				return -ENOMEM;
		}
		rc = load_blob(doc, us, "client-certificate-data", "client-certificate",
			       base_dir, &cfg->cert_pem, &cfg->cert_len, err, errlen);
		if (rc)
			return rc;
		rc = load_blob(doc, us, "client-key-data", "client-key", base_dir,
			       &cfg->key_pem, &cfg->key_len, err, errlen);
		if (rc)
			return rc;
		if (!cfg->cert_pem != !cfg->key_pem) {
			ERR("users[%.100s].user: a client certificate needs both certificate and key",
			    user_name);
			return -EINVAL;
		}
	}
	bool creds = cfg->token || cfg->token_file || cfg->cert_pem;
	rc = check_server(server, creds, err, errlen);
	if (rc)
		return rc;
	cfg->server = strdup(server);
	if (!cfg->server)
		return -ENOMEM;
	size_t sl = strlen(cfg->server);
	while (sl > 8 && cfg->server[sl - 1] == '/')
		cfg->server[--sl] = '\0';
	if (ns && *ns && !(cfg->namespace = strdup(ns)))
		return -ENOMEM;
	if (sni && *sni && !(cfg->tls_server_name = strdup(sni)))
		return -ENOMEM;
	if (asprintf(&cfg->source, "kubeconfig context \"%.100s\"", ctx_name) < 0) {
		cfg->source = NULL;
		return -ENOMEM;
	}
	return 0;
}

int kube_config_load_buffer(const char *yaml, size_t len, const char *base_dir,
			    const char *context, struct kube_config **out,
			    char *err, size_t errlen)
{
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	if (len > KUBE_CONFIG_MAX_FILE) {
		ERR("kubeconfig: larger than %u bytes", KUBE_CONFIG_MAX_FILE);
		return -EFBIG;
	}
	/* a kubeconfig nests 4 levels deep; 32 leaves room for any extension */
	int drc = yaml_check_depth(yaml, len, 32, err, errlen);
	if (drc)
		return drc;
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		ERR("kubeconfig: invalid YAML at line %zu: %s",
		    parser.problem_mark.line + 1,
		    parser.problem ? parser.problem : "parse error");
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	struct kube_config *cfg = calloc(1, sizeof(*cfg));
	int rc = -ENOMEM;
	if (cfg)
		rc = from_document(&doc, base_dir, context, cfg, err, errlen);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (rc) {
		kube_config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}

int kube_config_load_file(const char *path, const char *context,
			  struct kube_config **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	*out = NULL;
	int rc = read_file_bounded(path, KUBE_CONFIG_MAX_FILE, &data, &len);
	if (rc) {
		ERR("kubeconfig \"%s\": %s", path,
		    rc == -EFBIG ? "file too large" : strerror(-rc));
		return rc;
	}
	char *dir = strdup(path);
	if (!dir) {
		free_secret(data);
		return -ENOMEM;
	}
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	rc = kube_config_load_buffer(data, len, dir[0] ? dir : "/", context, out,
				     err, errlen);
	free(dir);
	secure_zero(data, len);
	free(data);
	if (rc == 0) {
		char *src = NULL;
		if (asprintf(&src, "%s in \"%s\"", (*out)->source, path) >= 0) {
			free((*out)->source);
			(*out)->source = src;
		}
	}
	return rc;
}

int kube_config_in_cluster(const char *sa_dir, struct kube_config **out,
			   char *err, size_t errlen)
{
	*out = NULL;
	if (!sa_dir)
		sa_dir = KUBE_SA_DIR;
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	if (!host || !*host || !port || !*port) {
		ERR("in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set");
		return -ENOENT;
	}
	for (const char *c = port; *c; c++)
		if (*c < '0' || *c > '9') {
			ERR("in-cluster: KUBERNETES_SERVICE_PORT is not a number");
			return -EINVAL;
		}
	for (const char *c = host; *c; c++)
		if ((unsigned char)*c <= 0x20 || strchr("/?#@", *c)) {
			ERR("in-cluster: KUBERNETES_SERVICE_HOST is not a host name");
			return -EINVAL;
		}
	struct kube_config *cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	int rc = -ENOMEM;
	char *path = NULL;
	bool v6 = strchr(host, ':') != NULL;
	if (asprintf(&cfg->server, v6 ? "https://[%s]:%s" : "https://%s:%s", host,
		     port) < 0) {
		cfg->server = NULL;
		goto fail;
	}
	if (asprintf(&cfg->token_file, "%s/token", sa_dir) < 0) {
		cfg->token_file = NULL;
		goto fail;
	}
	/* The token must be readable now; it is re-read later as it rotates. */
	char *tok = NULL;
	size_t toklen = 0;
	rc = read_file_bounded(cfg->token_file, KUBE_CONFIG_MAX_TOKEN, &tok, &toklen);
	if (rc) {
		ERR("in-cluster: cannot read \"%s\": %s", cfg->token_file,
		    strerror(-rc));
		goto fail;
	}
	free_secret(tok);
	if (asprintf(&path, "%s/ca.crt", sa_dir) < 0) {
		path = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	rc = read_file_bounded(path, KUBE_CONFIG_MAX_PEM, &cfg->ca_pem, &cfg->ca_len);
	if (rc) {
		ERR("in-cluster: cannot read \"%s\": %s", path, strerror(-rc));
		goto fail;
	}
	FREE_AND_NULL(path);
	if (asprintf(&path, "%s/namespace", sa_dir) < 0) {
		path = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	size_t nslen;
	if (read_file_bounded(path, 256, &cfg->namespace, &nslen) == 0) {
		rtrim(cfg->namespace);
		if (!cfg->namespace[0])
			FREE_AND_NULL(cfg->namespace);
	}
	FREE_AND_NULL(path);
	cfg->source = strdup("in-cluster service account");
	if (!cfg->source) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = cfg;
	return 0;
fail:
	free(path);
	kube_config_free(cfg);
	return rc;
}

int kube_config_load_default(const char *path, const char *context,
			     struct kube_config **out, char *err, size_t errlen)
{
	if (path && *path)
		return kube_config_load_file(path, context, out, err, errlen);
	const char *env = getenv("KUBECONFIG");
	if (env && *env) {
		char *first = strdup(env);
		if (!first)
			return -ENOMEM;
		char *colon = strchr(first, ':');
		if (colon)
			*colon = '\0';
		int rc = kube_config_load_file(first, context, out, err, errlen);
		free(first);
		return rc;
	}
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	if (host && *host)
		return kube_config_in_cluster(NULL, out, err, errlen);
	const char *home = getenv("HOME");
	if (!home || !*home) {
		ERR("no kubeconfig: set --kubeconfig or KUBECONFIG");
		return -ENOENT;
	}
	char *p = NULL;
	if (asprintf(&p, "%s/.kube/config", home) < 0)
		return -ENOMEM;
	int rc = kube_config_load_file(p, context, out, err, errlen);
	free(p);
	return rc;
}
