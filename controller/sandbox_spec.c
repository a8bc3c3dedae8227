/*
 * sandbox_spec: the pure builders for sandbox Pods and their NetworkPolicies,
 * the sandbox id, and the validators of client input (see sandbox_spec.h).
 *
 * What the Pod may do is decided here and only here, from the operator's
 * template: a client contributes an id we generated, labels under our own
 * prefix and environment variables, never a securityContext, volume, host
 * setting or image.
 */
#include "sandbox_spec.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define ID_PREFIX "sb-"
#define ID_CHARS 20

static const char base32[] = "abcdefghijklmnopqrstuvwxyz234567";

int sandbox_new_id(char out[24])
{
	unsigned char r[13]; /* 104 bits, of which the first 100 are used */
	if (random_bytes(r, sizeof(r)) != 0)
		return -EIO;
	memcpy(out, ID_PREFIX, 3);
	for (int i = 0; i < ID_CHARS; i++) {
		int bit = i * 5;
		unsigned w = ((unsigned)r[bit / 8] << 8) | r[bit / 8 + 1];
		out[3 + i] = base32[(w >> (11 - bit % 8)) & 31];
	}
	out[3 + ID_CHARS] = '\0';
	secure_zero(r, sizeof(r));
	return 0;
}

int sandbox_valid_id(const char *s)
{
	if (!s || strncmp(s, ID_PREFIX, 3) != 0 || strlen(s) != 3 + ID_CHARS)
		return 0;
	for (const char *c = s + 3; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '2' && *c <= '7')))
			return 0;
	return 1;
}

/* ---- validators ---- */

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* [A-Za-z0-9._-]{min,63}, alphanumeric at both ends when not empty. */
static int valid_label_text(const char *s, size_t min)
{
	if (!s)
		return 0;
	size_t n = strlen(s);
	if (n < min || n > 63)
		return 0;
	if (n == 0)
		return 1;
	if (!is_alnum(s[0]) || !is_alnum(s[n - 1]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

int sandbox_valid_label_key(const char *k)
{
	return valid_label_text(k, 1);
}

int sandbox_valid_label_value(const char *v)
{
	return valid_label_text(v, 0);
}

int sandbox_valid_env_name(const char *n)
{
	if (!n || !*n || strlen(n) > 128)
		return 0;
	if (!((*n >= 'A' && *n <= 'Z') || (*n >= 'a' && *n <= 'z') || *n == '_'))
		return 0;
	for (const char *c = n; *c; c++)
		if (!is_alnum(*c) && *c != '_')
			return 0;
	return 1;
}

static bool template_sets_env(const struct sbx_template *t, const char *n)
{
	for (size_t i = 0; i < t->nenv; i++)
		if (strcmp(t->env[i].key, n) == 0)
			return true;
	return false;
}

int sandbox_env_conflict(const struct sbx_template *t, const char *n)
{
	return strcmp(n, "HOME") == 0 || template_sets_env(t, n);
}

/* ---- JSON building: every add is checked once, at the end ---- */

struct jb {
	bool ok;
};

static cJSON *jb_check(struct jb *b, cJSON *item)
{
	if (!item)
		b->ok = false;
	return item;
}

static cJSON *add_obj(struct jb *b, cJSON *parent, const char *key)
{
	return jb_check(b, cJSON_AddObjectToObject(parent, key));
}

static cJSON *add_arr(struct jb *b, cJSON *parent, const char *key)
{
	return jb_check(b, cJSON_AddArrayToObject(parent, key));
}

static void add_str(struct jb *b, cJSON *parent, const char *key, const char *v)
{
	jb_check(b, cJSON_AddStringToObject(parent, key, v));
}

static void add_num(struct jb *b, cJSON *parent, const char *key, double v)
{
	jb_check(b, cJSON_AddNumberToObject(parent, key, v));
}

static void add_bool(struct jb *b, cJSON *parent, const char *key, bool v)
{
	jb_check(b, cJSON_AddBoolToObject(parent, key, v));
}

/* Append item to array arr (taking ownership of item in every case). */
static cJSON *push(struct jb *b, cJSON *arr, cJSON *item)
{
	if (!item || !arr || !cJSON_AddItemToArray(arr, item)) {
		cJSON_Delete(item);
		b->ok = false;
		return NULL;
	}
	return item;
}

static cJSON *push_obj(struct jb *b, cJSON *arr)
{
	return push(b, arr, cJSON_CreateObject());
}

static void push_str(struct jb *b, cJSON *arr, const char *s)
{
	push(b, arr, cJSON_CreateString(s));
}

/* ---- the Pod ---- */

static void add_security_context_common(struct jb *b, cJSON *sc, const struct sbx_template *t)
{
	add_bool(b, sc, "runAsNonRoot", true);
	add_num(b, sc, "runAsUser", (double)t->run_as_user);
	add_num(b, sc, "runAsGroup", (double)t->run_as_group);
	add_str(b, add_obj(b, sc, "seccompProfile"), "type", "RuntimeDefault");
}

static void add_env(struct jb *b, cJSON *arr, const char *name, const char *value)
{
	cJSON *e = push_obj(b, arr);
	add_str(b, e, "name", name);
	add_str(b, e, "value", value);
}

/* Has a client entry before index i the same name? */
static bool client_env_seen(const struct sbx_pod_request *req, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (strcmp(req->env[j].key, req->env[i].key) == 0)
			return true;
	return false;
}

static void build_env(struct jb *b, cJSON *c, const struct sbx_template *t,
		      const struct sbx_pod_request *req)
{
	cJSON *env = add_arr(b, c, "env");
	for (size_t i = 0; i < t->nenv; i++)
		add_env(b, env, t->env[i].key, t->env[i].value);
	if (!template_sets_env(t, "HOME"))
		add_env(b, env, "HOME", t->workspace_path);
	for (size_t i = 0; i < req->nenv; i++) {
		if (sandbox_env_conflict(t, req->env[i].key) || client_env_seen(req, i))
			continue;
		add_env(b, env, req->env[i].key, req->env[i].value);
	}
}

static void build_resources(struct jb *b, cJSON *c, const struct sbx_template *t)
{
	cJSON *res = add_obj(b, c, "resources");
	cJSON *rq = add_obj(b, res, "requests");
	add_str(b, rq, "cpu", t->cpu_request);
	add_str(b, rq, "memory", t->memory_request);
	add_str(b, rq, "ephemeral-storage", t->ephemeral_request);
	cJSON *lim = add_obj(b, res, "limits");
	add_str(b, lim, "cpu", t->cpu_limit);
	add_str(b, lim, "memory", t->memory_limit);
	add_str(b, lim, "ephemeral-storage", t->ephemeral_limit);
}

static void build_metadata(struct jb *b, cJSON *pod, const struct sbx_config *cfg,
			   const struct sbx_template *t, const struct sbx_pod_request *req)
{
	char netbuf[64], num[32], key[128];
	cJSON *md = add_obj(b, pod, "metadata");
	add_str(b, md, "name", req->id);
	add_str(b, md, "namespace", cfg->namespace);
	cJSON *labels = add_obj(b, md, "labels");
	add_str(b, labels, SBX_LABEL_MANAGED_BY, SBX_MANAGED_BY);
	add_str(b, labels, SBX_LABEL_ID, req->id);
	add_str(b, labels, SBX_LABEL_TEMPLATE, t->name);
	add_str(b, labels, SBX_LABEL_TENANT, req->tenant ? req->tenant : "default");
	add_str(b, labels, SBX_LABEL_NETWORK, sandbox_network_policy_name(t, netbuf));
	for (size_t i = 0; i < req->nlabels; i++) {
		snprintf(key, sizeof(key), "%s%s", SBX_LABEL_USER_PREFIX, req->labels[i].key);
		/* a repeated key keeps its first value, like the env */
		if (!cJSON_GetObjectItemCaseSensitive(labels, key))
			add_str(b, labels, key, req->labels[i].value);
	}
	cJSON *ann = add_obj(b, md, "annotations");
	snprintf(num, sizeof(num), "%lld", (long long)req->created_at);
	add_str(b, ann, SBX_ANN_CREATED, num);
	snprintf(num, sizeof(num), "%lld", (long long)req->expires_at);
	add_str(b, ann, SBX_ANN_EXPIRES, num);
}

cJSON *sandbox_build_pod(const struct sbx_config *cfg, const struct sbx_template *t,
			 const struct sbx_pod_request *req)
{
	struct jb b = { .ok = true };
	cJSON *pod = cJSON_CreateObject();
	if (!pod)
		return NULL;
	add_str(&b, pod, "apiVersion", "v1");
	add_str(&b, pod, "kind", "Pod");
	build_metadata(&b, pod, cfg, t, req);

	cJSON *spec = add_obj(&b, pod, "spec");
	add_str(&b, spec, "restartPolicy", "Never");
	add_num(&b, spec, "terminationGracePeriodSeconds", 5);
	add_bool(&b, spec, "automountServiceAccountToken", false);
	add_bool(&b, spec, "enableServiceLinks", false);
	add_bool(&b, spec, "hostNetwork", false);
	add_bool(&b, spec, "hostPID", false);
	add_bool(&b, spec, "hostIPC", false);
	if (t->runtime_class)
		add_str(&b, spec, "runtimeClassName", t->runtime_class);
	cJSON *psc = add_obj(&b, spec, "securityContext");
	add_security_context_common(&b, psc, t);
	add_num(&b, psc, "fsGroup", (double)t->run_as_group);

	cJSON *c = push_obj(&b, add_arr(&b, spec, "containers"));
	add_str(&b, c, "name", SBX_CONTAINER);
	add_str(&b, c, "image", t->image);
	add_str(&b, c, "imagePullPolicy", "IfNotPresent");
	cJSON *cmd = add_arr(&b, c, "command");
	for (size_t i = 0; i < t->ncommand; i++)
		push_str(&b, cmd, t->command[i]);
	add_str(&b, c, "workingDir", t->workspace_path);
	build_env(&b, c, t, req);
	build_resources(&b, c, t);
	cJSON *csc = add_obj(&b, c, "securityContext");
	add_security_context_common(&b, csc, t);
	add_bool(&b, csc, "allowPrivilegeEscalation", false);
	add_bool(&b, csc, "privileged", false);
	add_bool(&b, csc, "readOnlyRootFilesystem", true);
	push_str(&b, add_arr(&b, add_obj(&b, csc, "capabilities"), "drop"), "ALL");
	cJSON *mounts = add_arr(&b, c, "volumeMounts");
	cJSON *m = push_obj(&b, mounts);
	add_str(&b, m, "name", "workspace");
	add_str(&b, m, "mountPath", t->workspace_path);
	m = push_obj(&b, mounts);
	add_str(&b, m, "name", "tmp");
	add_str(&b, m, "mountPath", "/tmp");

	cJSON *vols = add_arr(&b, spec, "volumes");
	cJSON *v = push_obj(&b, vols);
	add_str(&b, v, "name", "workspace");
	add_str(&b, add_obj(&b, v, "emptyDir"), "sizeLimit", t->workspace_size);
	v = push_obj(&b, vols);
	add_str(&b, v, "name", "tmp");
	add_str(&b, add_obj(&b, v, "emptyDir"), "sizeLimit", t->tmp_size);

	if (!b.ok) {
		cJSON_Delete(pod);
		return NULL;
	}
	return pod;
}

/* ---- NetworkPolicies ---- */

const char *sandbox_network_policy_name(const struct sbx_template *t, char buf[64])
{
	switch (t->network) {
	case SBX_NET_INTERNET:
		return "sbx-net-internet";
	case SBX_NET_ALLOWLIST:
		snprintf(buf, 64, "sbx-net-allow-%s", t->name);
		return buf;
	case SBX_NET_NONE:
	default:
		return "sbx-net-none";
	}
}

/* Ranges a sandbox with "internet" egress must not reach: RFC 1918 private,
 * CGNAT (RFC 6598), link-local (with the cloud metadata address
 * 169.254.169.254), loopback; IPv6 unique-local (with fd00:ec2::254),
 * link-local, loopback. */
static const char *const private_v4[] = { "10.0.0.0/8",     "172.16.0.0/12",
					  "192.168.0.0/16", "100.64.0.0/10",
					  "169.254.0.0/16", "127.0.0.0/8" };
static const char *const private_v6[] = { "fc00::/7", "fe80::/10", "::1/128" };

static void add_ip_block(struct jb *b, cJSON *to, const char *cidr, const char *const *except,
			 size_t nexcept)
{
	cJSON *blk = add_obj(b, push_obj(b, to), "ipBlock");
	add_str(b, blk, "cidr", cidr);
	if (nexcept) {
		cJSON *ex = add_arr(b, blk, "except");
		for (size_t i = 0; i < nexcept; i++)
			push_str(b, ex, except[i]);
	}
}

static void add_port(struct jb *b, cJSON *ports, const char *protocol, int port)
{
	cJSON *p = push_obj(b, ports);
	add_str(b, p, "protocol", protocol);
	add_num(b, p, "port", port);
}

/* UDP and TCP 53 to the cluster DNS Pods (k8s-app=kube-dns in kube-system);
 * policies see Pod IPs after the Service is resolved, so this also covers
 * the kube-dns Service address. */
static void add_dns_rule(struct jb *b, cJSON *egress)
{
	cJSON *rule = push_obj(b, egress);
	cJSON *peer = push_obj(b, add_arr(b, rule, "to"));
	add_str(b, add_obj(b, add_obj(b, peer, "namespaceSelector"), "matchLabels"),
		"kubernetes.io/metadata.name", "kube-system");
	add_str(b, add_obj(b, add_obj(b, peer, "podSelector"), "matchLabels"), "k8s-app",
		"kube-dns");
	cJSON *ports = add_arr(b, rule, "ports");
	add_port(b, ports, "UDP", 53);
	add_port(b, ports, "TCP", 53);
}

cJSON *sandbox_build_network_policy(const struct sbx_config *cfg, const struct sbx_template *t)
{
	struct jb b = { .ok = true };
	char buf[64];
	const char *name = sandbox_network_policy_name(t, buf);
	cJSON *np = cJSON_CreateObject();
	if (!np)
		return NULL;
	add_str(&b, np, "apiVersion", "networking.k8s.io/v1");
	add_str(&b, np, "kind", "NetworkPolicy");
	cJSON *md = add_obj(&b, np, "metadata");
	add_str(&b, md, "name", name);
	add_str(&b, md, "namespace", cfg->namespace);
	cJSON *labels = add_obj(&b, md, "labels");
	add_str(&b, labels, SBX_LABEL_MANAGED_BY, SBX_MANAGED_BY);
	add_str(&b, labels, SBX_LABEL_NETWORK, name);

	cJSON *spec = add_obj(&b, np, "spec");
	add_str(&b, add_obj(&b, add_obj(&b, spec, "podSelector"), "matchLabels"),
		SBX_LABEL_NETWORK, name);
	cJSON *types = add_arr(&b, spec, "policyTypes");
	push_str(&b, types, "Ingress");
	push_str(&b, types, "Egress");
	add_arr(&b, spec, "ingress");
	cJSON *egress = add_arr(&b, spec, "egress");

	if (t->network == SBX_NET_INTERNET) {
		cJSON *to = add_arr(&b, push_obj(&b, egress), "to");
		add_ip_block(&b, to, "0.0.0.0/0", private_v4, ARRAY_SIZE(private_v4));
		add_ip_block(&b, to, "::/0", private_v6, ARRAY_SIZE(private_v6));
		add_dns_rule(&b, egress);
	} else if (t->network == SBX_NET_ALLOWLIST) {
		for (size_t i = 0; i < t->negress; i++) {
			const struct sbx_egress_rule *r = &t->egress[i];
			cJSON *rule = push_obj(&b, egress);
			add_ip_block(&b, add_arr(&b, rule, "to"), r->cidr, NULL, 0);
			if (r->nports) {
				cJSON *ports = add_arr(&b, rule, "ports");
				for (size_t j = 0; j < r->nports; j++)
					add_port(&b, ports, r->protocol ? r->protocol : "TCP",
						 r->ports[j]);
			}
		}
		add_dns_rule(&b, egress);
	}

	if (!b.ok) {
		cJSON_Delete(np);
		return NULL;
	}
	return np;
}
