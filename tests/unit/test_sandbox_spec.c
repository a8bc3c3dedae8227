/*
 * Unit tests for controller/sandbox_spec.c: every field of the built Pod
 * (security context at both levels, volumes, env order and collisions,
 * labels and annotations, no nodeName), the NetworkPolicy of each profile,
 * sandbox ids (shape, uniqueness and use of all 100 bits over 10,000 draws),
 * and the validators of client input.
 */
#include "config.h"
#include "sandbox_spec.h"
#include "test.h"
#include "util.h"

#include <stdlib.h>

#define SAMPLE SBX_TEST_DATA "/../../../docs/sample-config.yaml"

static struct sbx_config *sample;

/* ---- JSON access ---- */

static const cJSON *at(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* Follow a dotted path of object keys, with [n] for array items. */
static const cJSON *path(const cJSON *o, const char *p)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", p);
	char *save = NULL;
	for (char *tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
		char *br = strchr(tok, '[');
		if (br) {
			*br = '\0';
			if (*tok)
				o = at(o, tok);
			o = cJSON_GetArrayItem(o, atoi(br + 1));
		} else {
			o = at(o, tok);
		}
	}
	return o;
}

static const char *str(const cJSON *o, const char *p)
{
	const cJSON *v = path(o, p);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long num(const cJSON *o, const char *p)
{
	const cJSON *v = path(o, p);
	return cJSON_IsNumber(v) ? (long long)v->valuedouble : -999;
}

/* 1 true, 0 false, -1 absent or not a boolean */
static int boolean(const cJSON *o, const char *p)
{
	const cJSON *v = path(o, p);
	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

static int count(const cJSON *o, const char *p)
{
	const cJSON *v = path(o, p);
	return v ? cJSON_GetArraySize(v) : -1;
}

/* ---- the Pod ---- */

static const struct sbx_kv client_labels[] = { { "team", "ml" }, { "run", "42" } };
static const struct sbx_kv client_env[] = {
	{ "FOO", "bar" },
	{ "PYTHONUNBUFFERED", "0" }, /* the template's: dropped */
	{ "HOME", "/root" },         /* set by the builder: dropped */
	{ "FOO", "again" },          /* a duplicate: dropped */
	{ "EMPTY", "" },
};

static cJSON *build(const struct sbx_template *t, const char *tenant)
{
	struct sbx_pod_request req = {
		.id = "sb-abcdefghijklmnopqrst",
		.tenant = tenant,
		.created_at = 1700000000,
		.expires_at = 1700003600,
		.labels = client_labels,
		.nlabels = ARRAY_SIZE(client_labels),
		.env = client_env,
		.nenv = ARRAY_SIZE(client_env),
	};
	return sandbox_build_pod(sample, t, &req);
}

static void check_security_context(const cJSON *sc, int64_t uid, int64_t gid)
{
	CHECK_INT(boolean(sc, "runAsNonRoot"), 1);
	CHECK_INT(num(sc, "runAsUser"), uid);
	CHECK_INT(num(sc, "runAsGroup"), gid);
	CHECK_STR(str(sc, "seccompProfile.type"), "RuntimeDefault");
}

static void test_pod(void)
{
	const struct sbx_template *t = config_template(sample, "python");
	REQUIRE(t);
	cJSON *pod = build(t, "acme");
	REQUIRE(pod);
	CHECK_STR(str(pod, "apiVersion"), "v1");
	CHECK_STR(str(pod, "kind"), "Pod");

	/* metadata */
	CHECK_STR(str(pod, "metadata.name"), "sb-abcdefghijklmnopqrst");
	CHECK_STR(str(pod, "metadata.namespace"), "sandboxes");
	const cJSON *labels = path(pod, "metadata.labels");
	CHECK_INT(cJSON_GetArraySize(labels), 7);
	CHECK_STR(at(labels, "app.kubernetes.io/managed-by")->valuestring,
		  SBX_MANAGED_BY);
	const cJSON *l;
	l = at(labels, SBX_LABEL_ID);
	CHECK(l && strcmp(l->valuestring, "sb-abcdefghijklmnopqrst") == 0);
	l = at(labels, SBX_LABEL_TEMPLATE);
	CHECK(l && strcmp(l->valuestring, "python") == 0);
	l = at(labels, SBX_LABEL_TENANT);
	CHECK(l && strcmp(l->valuestring, "acme") == 0);
	l = at(labels, SBX_LABEL_NETWORK);
	CHECK(l && strcmp(l->valuestring, "sbx-net-none") == 0);
	l = at(labels, "user.sandbox-controller.dev/team");
	CHECK(l && strcmp(l->valuestring, "ml") == 0);
	l = at(labels, SBX_LABEL_USER_PREFIX "run");
	CHECK(l && strcmp(l->valuestring, "42") == 0);
	CHECK(at(labels, "team") == NULL);
	const cJSON *ann = path(pod, "metadata.annotations");
	CHECK_INT(cJSON_GetArraySize(ann), 2);
	l = at(ann, SBX_ANN_CREATED);
	CHECK(l && strcmp(l->valuestring, "1700000000") == 0);
	l = at(ann, SBX_ANN_EXPIRES);
	CHECK(l && strcmp(l->valuestring, "1700003600") == 0);

	/* pod spec */
	const cJSON *spec = at(pod, "spec");
	REQUIRE(spec);
	CHECK_STR(str(spec, "restartPolicy"), "Never");
	CHECK_INT(num(spec, "terminationGracePeriodSeconds"), 5);
	CHECK_INT(boolean(spec, "automountServiceAccountToken"), 0);
	CHECK_INT(boolean(spec, "enableServiceLinks"), 0);
	CHECK_INT(boolean(spec, "hostNetwork"), 0);
	CHECK_INT(boolean(spec, "hostPID"), 0);
	CHECK_INT(boolean(spec, "hostIPC"), 0);
	CHECK(at(spec, "nodeName") == NULL);
	CHECK(at(spec, "runtimeClassName") == NULL);
	CHECK(at(spec, "serviceAccountName") == NULL);
	CHECK(at(spec, "hostUsers") == NULL);
	CHECK(at(spec, "initContainers") == NULL);
	const cJSON *psc = at(spec, "securityContext");
	check_security_context(psc, 1000, 1000);
	CHECK_INT(num(psc, "fsGroup"), 1000);

	/* the container */
	CHECK_INT(count(spec, "containers"), 1);
	const cJSON *c = path(spec, "containers[0]");
	REQUIRE(c);
	CHECK_STR(str(c, "name"), SBX_CONTAINER);
	CHECK_STR(str(c, "name"), "sandbox");
	CHECK_STR(str(c, "image"), "python:3.12-slim");
	CHECK_STR(str(c, "imagePullPolicy"), "IfNotPresent");
	CHECK_INT(count(c, "command"), 2);
	CHECK_STR(str(c, "command[0]"), "sleep");
	CHECK_STR(str(c, "command[1]"), "infinity");
	CHECK(at(c, "args") == NULL);
	CHECK_STR(str(c, "workingDir"), "/workspace");
	CHECK(at(c, "ports") == NULL);
	CHECK_STR(str(c, "resources.requests.cpu"), "100m");
	CHECK_STR(str(c, "resources.requests.memory"), "128Mi");
	CHECK_STR(str(c, "resources.requests.ephemeral-storage"), "256Mi");
	CHECK_STR(str(c, "resources.limits.cpu"), "1");
	CHECK_STR(str(c, "resources.limits.memory"), "512Mi");
	CHECK_STR(str(c, "resources.limits.ephemeral-storage"), "2Gi");
	const cJSON *csc = at(c, "securityContext");
	check_security_context(csc, 1000, 1000);
	CHECK_INT(boolean(csc, "allowPrivilegeEscalation"), 0);
	CHECK_INT(boolean(csc, "privileged"), 0);
	CHECK_INT(boolean(csc, "readOnlyRootFilesystem"), 1);
	CHECK_INT(count(csc, "capabilities.drop"), 1);
	CHECK_STR(str(csc, "capabilities.drop[0]"), "ALL");
	CHECK(path(csc, "capabilities.add") == NULL);
	CHECK(at(csc, "procMount") == NULL);

	/* env: template (file order), HOME, then client; collisions dropped */
	CHECK_INT(count(c, "env"), 5);
	CHECK_STR(str(c, "env[0].name"), "PYTHONUNBUFFERED");
	CHECK_STR(str(c, "env[0].value"), "1");
	CHECK_STR(str(c, "env[1].name"), "PYTHONDONTWRITEBYTECODE");
	CHECK_STR(str(c, "env[1].value"), "1");
	CHECK_STR(str(c, "env[2].name"), "HOME");
	CHECK_STR(str(c, "env[2].value"), "/workspace");
	CHECK_STR(str(c, "env[3].name"), "FOO");
	CHECK_STR(str(c, "env[3].value"), "bar");
	CHECK_STR(str(c, "env[4].name"), "EMPTY");
	CHECK_STR(str(c, "env[4].value"), "");

	/* volumes and mounts */
	CHECK_INT(count(c, "volumeMounts"), 2);
	CHECK_STR(str(c, "volumeMounts[0].name"), "workspace");
	CHECK_STR(str(c, "volumeMounts[0].mountPath"), "/workspace");
	CHECK(path(c, "volumeMounts[0].readOnly") == NULL);
	CHECK_STR(str(c, "volumeMounts[1].name"), "tmp");
	CHECK_STR(str(c, "volumeMounts[1].mountPath"), "/tmp");
	CHECK_INT(count(spec, "volumes"), 2);
	CHECK_STR(str(spec, "volumes[0].name"), "workspace");
	CHECK_STR(str(spec, "volumes[0].emptyDir.sizeLimit"), "1Gi");
	CHECK_STR(str(spec, "volumes[1].name"), "tmp");
	CHECK_STR(str(spec, "volumes[1].emptyDir.sizeLimit"), "256Mi");
	CHECK_INT(cJSON_GetArraySize(path(spec, "volumes[0]")), 2); /* name and emptyDir only */
	CHECK_INT(cJSON_GetArraySize(path(spec, "volumes[1]")), 2);

	/* nothing host-level anywhere in the serialised object */
	char *json = cJSON_PrintUnformatted(pod);
	REQUIRE(json);
	CHECK(strstr(json, "nodeName") == NULL);
	CHECK(strstr(json, "hostPath") == NULL);
	CHECK(strstr(json, "hostPort") == NULL);
	CHECK(strstr(json, "\"privileged\":true") == NULL);
	CHECK(strstr(json, "\"/root\"") == NULL);
	CHECK(strstr(json, "again") == NULL);
	free(json);
	cJSON_Delete(pod);
}

static void test_pod_variants(void)
{
	/* no tenant: "default"; the web template's own workspace path */
	const struct sbx_template *web = config_template(sample, "web");
	REQUIRE(web);
	cJSON *pod = build(web, NULL);
	REQUIRE(pod);
	const cJSON *l = path(pod, "metadata.labels");
	CHECK_STR(at(l, SBX_LABEL_TENANT)->valuestring, "default");
	CHECK_STR(at(l, SBX_LABEL_NETWORK)->valuestring, "sbx-net-internet");
	CHECK_STR(at(l, SBX_LABEL_TEMPLATE)->valuestring, "web");
	CHECK_STR(str(pod, "spec.containers[0].workingDir"), "/home/sandbox");
	CHECK_STR(str(pod, "spec.containers[0].volumeMounts[0].mountPath"), "/home/sandbox");
	CHECK_STR(str(pod, "spec.containers[0].env[2].name"), "HOME");
	CHECK_STR(str(pod, "spec.containers[0].env[2].value"), "/home/sandbox");
	cJSON_Delete(pod);

	const struct sbx_template *ci = config_template(sample, "ci");
	REQUIRE(ci);
	pod = build(ci, "t");
	REQUIRE(pod);
	CHECK_STR(at(path(pod, "metadata.labels"), SBX_LABEL_NETWORK)->valuestring,
		  "sbx-net-allow-ci");
	check_security_context(path(pod, "spec.securityContext"), 2000, 2000);
	CHECK_INT(num(pod, "spec.securityContext.fsGroup"), 2000);
	check_security_context(path(pod, "spec.containers[0].securityContext"), 2000, 2000);
	cJSON_Delete(pod);

	/* a template with a runtime class, its own HOME and distinct uid/gid */
	const char *y =
		"templates:\n"
		"- name: kata\n"
		"  image: img@sha256:0123\n"
		"  command: [/bin/run, --flag, \"\"]\n"
		"  workspace: {path: /data/work, size: 1Gi}\n"
		"  user: 4242\n"
		"  group: 4343\n"
		"  runtime_class: kata-qemu\n"
		"  env: {HOME: /data, A: \"1\"}\n"
		"  resources:\n"
		"    requests: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1Mi}\n"
		"    limits: {cpu: 1m, memory: 1Mi, ephemeral-storage: 2Gi}\n";
	struct sbx_config *cfg = NULL;
	char err[512];
	REQUIRE(config_parse(y, strlen(y), &cfg, err, sizeof(err)) == 0);
	struct sbx_pod_request req = { .id = "sb-22222222222222222222", .tenant = "x",
				       .created_at = 1, .expires_at = 2 };
	pod = sandbox_build_pod(cfg, &cfg->templates[0], &req);
	REQUIRE(pod);
	CHECK_STR(str(pod, "spec.runtimeClassName"), "kata-qemu");
	CHECK_STR(str(pod, "spec.containers[0].image"), "img@sha256:0123");
	CHECK_INT(count(pod, "spec.containers[0].command"), 3);
	CHECK_STR(str(pod, "spec.containers[0].command[2]"), "");
	CHECK_INT(num(pod, "spec.securityContext.runAsUser"), 4242);
	CHECK_INT(num(pod, "spec.securityContext.runAsGroup"), 4343);
	CHECK_INT(num(pod, "spec.securityContext.fsGroup"), 4343);
	CHECK_INT(num(pod, "spec.containers[0].securityContext.runAsUser"), 4242);
	CHECK_INT(count(pod, "spec.containers[0].env"), 2);
	CHECK_STR(str(pod, "spec.containers[0].env[0].name"), "HOME");
	CHECK_STR(str(pod, "spec.containers[0].env[0].value"), "/data");
	CHECK_STR(str(pod, "spec.containers[0].env[1].name"), "A");
	CHECK(path(pod, "spec.containers[0].volumes") == NULL);
	CHECK_STR(str(pod, "spec.volumes[1].emptyDir.sizeLimit"), "64Mi");
	CHECK_INT(cJSON_GetArraySize(path(pod, "metadata.labels")), 5);
	CHECK_STR(cJSON_GetObjectItemCaseSensitive(path(pod, "metadata.annotations"),
						   SBX_ANN_EXPIRES)->valuestring, "2");
	CHECK(sandbox_env_conflict(&cfg->templates[0], "HOME"));
	CHECK(sandbox_env_conflict(&cfg->templates[0], "A"));
	CHECK(!sandbox_env_conflict(&cfg->templates[0], "B"));
	CHECK(!sandbox_env_conflict(&cfg->templates[0], "home"));
	cJSON_Delete(pod);
	config_free(cfg);
}

/* ---- ids ---- */

static int cmp_id(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static void test_ids(void)
{
	enum { N = 10000 };
	char(*ids)[24] = malloc(sizeof(*ids) * N);
	REQUIRE(ids);
	unsigned seen[20][32] = { { 0 } };
	int bad = 0;
	for (int i = 0; i < N; i++) {
		if (sandbox_new_id(ids[i]) != 0) {
			bad++;
			continue;
		}
		if (!sandbox_valid_id(ids[i]) || strlen(ids[i]) != 23 ||
		    strncmp(ids[i], "sb-", 3) != 0)
			bad++;
		for (int k = 0; k < 20; k++) {
			const char *p = strchr("abcdefghijklmnopqrstuvwxyz234567", ids[i][3 + k]);
			if (!p || !ids[i][3 + k])
				bad++;
			else
				seen[k][p - "abcdefghijklmnopqrstuvwxyz234567"]++;
		}
	}
	CHECK_INT(bad, 0);
	qsort(ids, N, sizeof(*ids), cmp_id);
	int dups = 0;
	for (int i = 1; i < N; i++)
		dups += strcmp(ids[i - 1], ids[i]) == 0;
	CHECK_INT(dups, 0);
	/* every position takes every value, each close to N/32 = 312: all 100
	 * bits are used and none is stuck */
	int skewed = 0;
	for (int k = 0; k < 20; k++)
		for (int v = 0; v < 32; v++)
			if (seen[k][v] < 200 || seen[k][v] > 450)
				skewed++;
	CHECK_INT(skewed, 0);
	free(ids);

	CHECK(sandbox_valid_id("sb-abcdefghijklmnopqrst"));
	CHECK(sandbox_valid_id("sb-22222222222222222222"));
	CHECK(!sandbox_valid_id(NULL));
	CHECK(!sandbox_valid_id(""));
	CHECK(!sandbox_valid_id("sb-"));
	CHECK(!sandbox_valid_id("sb-abcdefghijklmnopqrs"));
	CHECK(!sandbox_valid_id("sb-abcdefghijklmnopqrstu"));
	CHECK(!sandbox_valid_id("sb-Abcdefghijklmnopqrst"));
	CHECK(!sandbox_valid_id("sb-abcdefghijklmnopqrs1"));
	CHECK(!sandbox_valid_id("sb-abcdefghijklmnopqrs8"));
	CHECK(!sandbox_valid_id("sx-abcdefghijklmnopqrst"));
	CHECK(!sandbox_valid_id("sb-abcdefghij/lmnopqrst"));
}

/* ---- NetworkPolicies ---- */

static void check_policy_common(const cJSON *np, const char *name)
{
	CHECK_STR(str(np, "apiVersion"), "networking.k8s.io/v1");
	CHECK_STR(str(np, "kind"), "NetworkPolicy");
	CHECK_STR(str(np, "metadata.name"), name);
	CHECK_STR(str(np, "metadata.namespace"), "sandboxes");
	const cJSON *labels = path(np, "metadata.labels");
	CHECK_STR(at(labels, SBX_LABEL_MANAGED_BY)->valuestring, SBX_MANAGED_BY);
	CHECK_STR(at(labels, SBX_LABEL_NETWORK)->valuestring, name);
	const cJSON *ml = path(np, "spec.podSelector.matchLabels");
	CHECK_INT(cJSON_GetArraySize(ml), 1);
	CHECK_STR(at(ml, SBX_LABEL_NETWORK)->valuestring, name);
	CHECK_INT(count(np, "spec.policyTypes"), 2);
	CHECK_STR(str(np, "spec.policyTypes[0]"), "Ingress");
	CHECK_STR(str(np, "spec.policyTypes[1]"), "Egress");
	CHECK(cJSON_IsArray(path(np, "spec.ingress")));
	CHECK_INT(count(np, "spec.ingress"), 0);
	CHECK(cJSON_IsArray(path(np, "spec.egress")));
}

static void check_dns_rule(const cJSON *rule)
{
	CHECK_INT(count(rule, "to"), 1);
	const cJSON *peer = path(rule, "to[0]");
	CHECK(at(peer, "ipBlock") == NULL);
	CHECK_STR(at(path(peer, "namespaceSelector.matchLabels"), "kubernetes.io/metadata.name")
			  ->valuestring,
		  "kube-system");
	CHECK_STR(str(peer, "podSelector.matchLabels.k8s-app"), "kube-dns");
	CHECK_INT(count(rule, "ports"), 2);
	CHECK_STR(str(rule, "ports[0].protocol"), "UDP");
	CHECK_INT(num(rule, "ports[0].port"), 53);
	CHECK_STR(str(rule, "ports[1].protocol"), "TCP");
	CHECK_INT(num(rule, "ports[1].port"), 53);
}

static void test_network_policies(void)
{
	char buf[64];
	const struct sbx_template *py = config_template(sample, "python");
	const struct sbx_template *web = config_template(sample, "web");
	const struct sbx_template *ci = config_template(sample, "ci");
	REQUIRE(py && web && ci);
	CHECK_STR(sandbox_network_policy_name(py, buf), "sbx-net-none");
	CHECK_STR(sandbox_network_policy_name(web, buf), "sbx-net-internet");
	CHECK_STR(sandbox_network_policy_name(ci, buf), "sbx-net-allow-ci");

	/* none: deny everything */
	cJSON *np = sandbox_build_network_policy(sample, py);
	REQUIRE(np);
	check_policy_common(np, "sbx-net-none");
	CHECK_INT(count(np, "spec.egress"), 0);
	cJSON_Delete(np);

	/* internet: public v4 and v6, then DNS */
	np = sandbox_build_network_policy(sample, web);
	REQUIRE(np);
	check_policy_common(np, "sbx-net-internet");
	CHECK_INT(count(np, "spec.egress"), 2);
	const cJSON *r0 = path(np, "spec.egress[0]");
	CHECK(at(r0, "ports") == NULL);
	CHECK_INT(count(r0, "to"), 2);
	CHECK_STR(str(r0, "to[0].ipBlock.cidr"), "0.0.0.0/0");
	static const char *const v4[] = { "10.0.0.0/8",     "172.16.0.0/12",  "192.168.0.0/16",
					  "100.64.0.0/10",  "169.254.0.0/16", "127.0.0.0/8" };
	CHECK_INT(count(r0, "to[0].ipBlock.except"), ARRAY_SIZE(v4));
	for (size_t i = 0; i < ARRAY_SIZE(v4); i++)
		CHECK_STR(cJSON_GetArrayItem(path(r0, "to[0].ipBlock.except"), (int)i)->valuestring,
			  v4[i]);
	CHECK_STR(str(r0, "to[1].ipBlock.cidr"), "::/0");
	static const char *const v6[] = { "fc00::/7", "fe80::/10", "::1/128" };
	CHECK_INT(count(r0, "to[1].ipBlock.except"), ARRAY_SIZE(v6));
	for (size_t i = 0; i < ARRAY_SIZE(v6); i++)
		CHECK_STR(cJSON_GetArrayItem(path(r0, "to[1].ipBlock.except"), (int)i)->valuestring,
			  v6[i]);
	check_dns_rule(path(np, "spec.egress[1]"));
	cJSON_Delete(np);

	/* allowlist: one rule per entry, then DNS */
	np = sandbox_build_network_policy(sample, ci);
	REQUIRE(np);
	check_policy_common(np, "sbx-net-allow-ci");
	CHECK_INT(count(np, "spec.egress"), 4);
	CHECK_INT(count(np, "spec.egress[0].to"), 1);
	CHECK_STR(str(np, "spec.egress[0].to[0].ipBlock.cidr"), "203.0.113.0/24");
	CHECK(path(np, "spec.egress[0].to[0].ipBlock.except") == NULL);
	CHECK_INT(count(np, "spec.egress[0].ports"), 2);
	CHECK_STR(str(np, "spec.egress[0].ports[0].protocol"), "TCP");
	CHECK_INT(num(np, "spec.egress[0].ports[0].port"), 443);
	CHECK_INT(num(np, "spec.egress[0].ports[1].port"), 22);
	CHECK_STR(str(np, "spec.egress[1].to[0].ipBlock.cidr"), "2001:db8:1::/48");
	CHECK_STR(str(np, "spec.egress[2].to[0].ipBlock.cidr"), "198.51.100.123/32");
	CHECK_STR(str(np, "spec.egress[2].ports[0].protocol"), "UDP");
	CHECK_INT(num(np, "spec.egress[2].ports[0].port"), 123);
	check_dns_rule(path(np, "spec.egress[3]"));
	cJSON_Delete(np);

	/* a rule without ports allows every port; a template named like a
	 * shared policy cannot collide with it */
	const char *y =
		"templates:\n"
		"- name: none\n"
		"  image: i\n"
		"  command: [x]\n"
		"  workspace: {size: 1Mi}\n"
		"  user: 1\n"
		"  group: 1\n"
		"  resources:\n"
		"    requests: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1Mi}\n"
		"    limits: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1Gi}\n"
		"  network: {profile: allowlist, egress: [{cidr: 192.0.2.0/24}]}\n";
	struct sbx_config *cfg = NULL;
	char err[512];
	REQUIRE(config_parse(y, strlen(y), &cfg, err, sizeof(err)) == 0);
	CHECK_STR(sandbox_network_policy_name(&cfg->templates[0], buf), "sbx-net-allow-none");
	np = sandbox_build_network_policy(cfg, &cfg->templates[0]);
	REQUIRE(np);
	CHECK_INT(count(np, "spec.egress"), 2);
	CHECK(path(np, "spec.egress[0].ports") == NULL);
	CHECK_STR(str(np, "spec.egress[0].to[0].ipBlock.cidr"), "192.0.2.0/24");
	cJSON_Delete(np);
	config_free(cfg);

	/* each template's Pods carry the label their policy selects */
	for (size_t i = 0; i < sample->ntemplates; i++) {
		const struct sbx_template *t = &sample->templates[i];
		cJSON *pod = build(t, "x");
		np = sandbox_build_network_policy(sample, t);
		REQUIRE(pod && np);
		CHECK_STR(at(path(pod, "metadata.labels"), SBX_LABEL_NETWORK)->valuestring,
			  at(path(np, "spec.podSelector.matchLabels"), SBX_LABEL_NETWORK)->valuestring);
		cJSON_Delete(pod);
		cJSON_Delete(np);
	}
}

/* ---- validators ---- */

static void test_validators(void)
{
	static const struct {
		const char *s;
		int key, value;
	} labels[] = {
		{ "a", 1, 1 },
		{ "team", 1, 1 },
		{ "Team_1.x-y", 1, 1 },
		{ "", 0, 1 },
		{ "-a", 0, 0 },
		{ "a-", 0, 0 },
		{ ".a", 0, 0 },
		{ "a_", 0, 0 },
		{ "a/b", 0, 0 },
		{ "a b", 0, 0 },
		{ "a\nb", 0, 0 },
		{ "ä", 0, 0 },
		{ "a=b", 0, 0 },
		{ "a,b", 0, 0 },
		{ "123456789012345678901234567890123456789012345678901234567890123", 1, 1 },
		{ "1234567890123456789012345678901234567890123456789012345678901234", 0, 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(labels); i++) {
		if (!!sandbox_valid_label_key(labels[i].s) != labels[i].key ||
		    !!sandbox_valid_label_value(labels[i].s) != labels[i].value)
			fprintf(stderr, "  label \"%s\"\n", labels[i].s);
		CHECK_INT(!!sandbox_valid_label_key(labels[i].s), labels[i].key);
		CHECK_INT(!!sandbox_valid_label_value(labels[i].s), labels[i].value);
	}
	CHECK(!sandbox_valid_label_key(NULL));
	CHECK(!sandbox_valid_label_value(NULL));

	static const struct {
		const char *s;
		int ok;
	} envs[] = {
		{ "A", 1 },     { "_", 1 },    { "a_B_9", 1 }, { "_9", 1 }, { "PATH", 1 },
		{ "", 0 },      { "9A", 0 },   { "A-B", 0 },   { "A.B", 0 }, { "A B", 0 },
		{ "A=B", 0 },   { "Ä", 0 },    { "A\n", 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(envs); i++) {
		if (!!sandbox_valid_env_name(envs[i].s) != envs[i].ok)
			fprintf(stderr, "  env name \"%s\"\n", envs[i].s);
		CHECK_INT(!!sandbox_valid_env_name(envs[i].s), envs[i].ok);
	}
	char longname[130];
	memset(longname, 'A', 128);
	longname[128] = '\0';
	CHECK(sandbox_valid_env_name(longname));
	longname[128] = 'A';
	longname[129] = '\0';
	CHECK(!sandbox_valid_env_name(longname));
	CHECK(!sandbox_valid_env_name(NULL));

	const struct sbx_template *py = config_template(sample, "python");
	CHECK(sandbox_env_conflict(py, "HOME"));
	CHECK(sandbox_env_conflict(py, "PYTHONUNBUFFERED"));
	CHECK(!sandbox_env_conflict(py, "FOO"));
}

int main(void)
{
	char *yaml = NULL;
	size_t len = 0;
	char err[512];
	if (read_file_bounded(SAMPLE, CONFIG_MAX_FILE, &yaml, &len) != 0 ||
	    config_parse(yaml, len, &sample, err, sizeof(err)) != 0) {
		fprintf(stderr, "cannot load %s: %s\n", SAMPLE, err);
		return 2;
	}
	free(yaml);
	RUN(test_pod);
	RUN(test_pod_variants);
	RUN(test_ids);
	RUN(test_network_policies);
	RUN(test_validators);
	config_free(sample);
	return test_summary();
}
