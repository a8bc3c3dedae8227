/*
 * Integration test of the builders against the real control plane, in the
 * sandbox namespace the harness labels pod-security.kubernetes.io/enforce=
 * restricted:
 *  - the Pod built for every template of docs/sample-config.yaml (and one
 *    with a runtimeClassName) is admitted, by a server-side dry run and by a
 *    real create (then deleted);
 *  - the same Pod weakened in one way at a time is rejected with 403 and a
 *    PodSecurity message, proving that enforcement is on and that what the
 *    builder sets is what keeps the Pod admissible;
 *  - the NetworkPolicy of every profile is created and read back unchanged.
 */
#include "cluster_env.h"
#include "config.h"
#include "sandbox_spec.h"
#include "test.h"
#include "util.h"

#include <stdlib.h>

static struct kube_client *admin;
static const char *ns;
static struct sbx_config *cfg;

static const struct kube_resource RES_RUNTIMECLASSES = { "/apis/node.k8s.io/v1",
							 "runtimeclasses", false };

/* docs/sample-config.yaml, found from this file's path (CMake compiles with
 * absolute paths) or from $SBX_SAMPLE_CONFIG. */
static struct sbx_config *load_sample(void)
{
	char path[1024];
	const char *env = getenv("SBX_SAMPLE_CONFIG");
	if (env) {
		snprintf(path, sizeof(path), "%s", env);
	} else {
		snprintf(path, sizeof(path), "%s", __FILE__);
		char *t = strstr(path, "tests/integration/");
		if (!t) {
			fprintf(stderr, "cannot locate docs/ from %s: set SBX_SAMPLE_CONFIG\n",
				__FILE__);
			exit(2);
		}
		snprintf(t, sizeof(path) - (size_t)(t - path), "docs/sample-config.yaml");
	}
	char *yaml = NULL;
	size_t len = 0;
	char err[512];
	struct sbx_config *c = NULL;
	if (read_file_bounded(path, CONFIG_MAX_FILE, &yaml, &len) != 0 ||
	    config_parse(yaml, len, &c, err, sizeof(err)) != 0) {
		fprintf(stderr, "cannot load %s: %s\n", path, yaml ? err : "unreadable");
		exit(2);
	}
	free(yaml);
	return c;
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
	const cJSON *y = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);
	return cJSON_IsString(y) ? y->valuestring : NULL;
}

static cJSON *new_pod(const struct sbx_template *t, char id[24])
{
	static const struct sbx_kv labels[] = { { "suite", "admission" } };
	static const struct sbx_kv env[] = { { "CLIENT_VAR", "x" } };
	if (sandbox_new_id(id) != 0)
		return NULL;
	int64_t now = wall_time_s();
	struct sbx_pod_request req = {
		.id = id,
		.tenant = "test",
		.created_at = now,
		.expires_at = now + t->default_lifetime_s,
		.labels = labels,
		.nlabels = 1,
		.env = env,
		.nenv = 1,
	};
	return sandbox_build_pod(cfg, t, &req);
}

/* POST the Pod with ?dryRun=All: admission runs in full, nothing is stored. */
static enum kube_err dry_run_create(const cJSON *pod, cJSON **out, struct kube_error *e)
{
	char *path = NULL;
	if (kube_resource_path(&KUBE_RES_PODS, ns, NULL, NULL, &path) != KUBE_OK)
		return KUBE_ERR_ARG;
	char *full = NULL;
	if (asprintf(&full, "%s?dryRun=All", path) < 0)
		full = NULL;
	free(path);
	char *body = cJSON_PrintUnformatted(pod);
	enum kube_err rc = KUBE_ERR_NOMEM;
	if (full && body)
		rc = kube_request(admin, "POST", full, "application/json", body, strlen(body),
				  false, out, e);
	free(full);
	free(body);
	return rc;
}

static void delete_pod(const char *name)
{
	struct kube_delete_opts now = { .grace_period_s = 0 };
	struct kube_error e;
	enum kube_err rc = kube_delete(admin, &KUBE_RES_PODS, ns, name, &now, NULL, &e);
	CHECK(rc == KUBE_OK || rc == KUBE_ERR_NOT_FOUND);
}

static void test_namespace_enforces_restricted(void)
{
	cJSON *n = NULL;
	struct kube_error e;
	REQUIRE(kube_get(admin, &KUBE_RES_NAMESPACES, NULL, ns, &n, &e) == KUBE_OK);
	const cJSON *labels =
		cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(n, "metadata"),
						 "labels");
	const cJSON *enforce =
		cJSON_GetObjectItemCaseSensitive(labels, "pod-security.kubernetes.io/enforce");
	CHECK(cJSON_IsString(enforce) && strcmp(enforce->valuestring, "restricted") == 0);
	cJSON_Delete(n);
}

/* Dry run, then a real create, get and delete: admitted both times. */
static void check_admitted(const struct sbx_template *t, const char *what)
{
	char id[24];
	cJSON *pod = new_pod(t, id);
	REQUIRE(pod);
	struct kube_error e;
	cJSON *out = NULL;
	enum kube_err rc = dry_run_create(pod, &out, &e);
	if (rc != KUBE_OK)
		fprintf(stderr, "  %s: dry run rejected: %ld %s: %s\n", what, e.http_status,
			e.reason, e.message);
	CHECK_INT(rc, KUBE_OK);
	CHECK_STR(str_at(out, "metadata", "name"), id);
	cJSON_Delete(out);
	out = NULL;
	/* nothing was stored */
	CHECK_INT(kube_get(admin, &KUBE_RES_PODS, ns, id, &out, &e), KUBE_ERR_NOT_FOUND);

	rc = kube_create(admin, &KUBE_RES_PODS, ns, pod, &out, &e);
	if (rc != KUBE_OK)
		fprintf(stderr, "  %s: create rejected: %ld %s: %s\n", what, e.http_status,
			e.reason, e.message);
	CHECK_INT(rc, KUBE_OK);
	cJSON_Delete(out);
	out = NULL;
	if (rc == KUBE_OK) {
		/* what was stored is what was built: the server added nothing that
		 * weakens it and dropped nothing */
		CHECK_INT(kube_get(admin, &KUBE_RES_PODS, ns, id, &out, &e), KUBE_OK);
		const cJSON *spec = cJSON_GetObjectItemCaseSensitive(out, "spec");
		const cJSON *want = cJSON_GetObjectItemCaseSensitive(pod, "spec");
		const char *fields[] = { "securityContext", "volumes",
					 "automountServiceAccountToken", "enableServiceLinks" };
		for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
			int same = cJSON_Compare(cJSON_GetObjectItemCaseSensitive(spec, fields[i]),
						 cJSON_GetObjectItemCaseSensitive(want, fields[i]),
						 true);
			if (!same)
				fprintf(stderr, "  %s: spec.%s changed by the server\n", what,
					fields[i]);
			CHECK(same);
		}
		const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(spec, "containers"), 0);
		const cJSON *wc = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(want, "containers"), 0);
		CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(c, "securityContext"),
				    cJSON_GetObjectItemCaseSensitive(wc, "securityContext"), true));
		CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(c, "env"),
				    cJSON_GetObjectItemCaseSensitive(wc, "env"), true));
		cJSON_Delete(out);
		delete_pod(id);
	}
	cJSON_Delete(pod);
}

static void test_sample_templates_admitted(void)
{
	for (size_t i = 0; i < cfg->ntemplates; i++) {
		printf("template %s\n", cfg->templates[i].name);
		check_admitted(&cfg->templates[i], cfg->templates[i].name);
	}
}

static void test_runtime_class_admitted(void)
{
	/* the RuntimeClass admission plugin needs the class to exist */
	cJSON *rcl = cJSON_CreateObject();
	cJSON_AddStringToObject(rcl, "apiVersion", "node.k8s.io/v1");
	cJSON_AddStringToObject(rcl, "kind", "RuntimeClass");
	cJSON_AddStringToObject(cJSON_AddObjectToObject(rcl, "metadata"), "name", "sbx-test-gvisor");
	cJSON_AddStringToObject(rcl, "handler", "runsc");
	struct kube_error e;
	enum kube_err rc = kube_create(admin, &RES_RUNTIMECLASSES, NULL, rcl, NULL, &e);
	cJSON_Delete(rcl);
	CHECK(rc == KUBE_OK || rc == KUBE_ERR_ALREADY_EXISTS);
	struct sbx_template t = cfg->templates[0];
	t.runtime_class = "sbx-test-gvisor";
	check_admitted(&t, "python with runtimeClassName");
	/* and a class that does not exist is refused, so the check above meant something */
	t.runtime_class = "sbx-test-missing";
	char id[24];
	cJSON *pod = new_pod(&t, id);
	REQUIRE(pod);
	CHECK(dry_run_create(pod, NULL, &e) != KUBE_OK);
	cJSON_Delete(pod);
	CHECK_INT(kube_delete(admin, &RES_RUNTIMECLASSES, NULL, "sbx-test-gvisor", NULL, NULL, &e),
		  KUBE_OK);
}

/* ---- weakened Pods ---- */

static cJSON *container0(cJSON *pod)
{
	return cJSON_GetArrayItem(
		cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "spec"),
						 "containers"),
		0);
}

static void weaken_no_ape(cJSON *pod)
{
	cJSON_DeleteItemFromObjectCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(container0(pod), "securityContext"),
		"allowPrivilegeEscalation");
}

static void weaken_root(cJSON *pod)
{
	cJSON *psc = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "spec"),
						      "securityContext");
	cJSON *csc = cJSON_GetObjectItemCaseSensitive(container0(pod), "securityContext");
	cJSON_ReplaceItemInObjectCaseSensitive(psc, "runAsUser", cJSON_CreateNumber(0));
	cJSON_ReplaceItemInObjectCaseSensitive(csc, "runAsUser", cJSON_CreateNumber(0));
}

static void weaken_host_path(cJSON *pod)
{
	cJSON *spec = cJSON_GetObjectItemCaseSensitive(pod, "spec");
	cJSON *v = cJSON_CreateObject();
	cJSON_AddStringToObject(v, "name", "host");
	cJSON_AddStringToObject(cJSON_AddObjectToObject(v, "hostPath"), "path", "/etc");
	cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(spec, "volumes"), v);
}

/* privileged with allowPrivilegeEscalation false is invalid (422) before
 * admission: make it a coherent privileged container */
static void weaken_privileged(cJSON *pod)
{
	cJSON *csc = cJSON_GetObjectItemCaseSensitive(container0(pod), "securityContext");
	cJSON_ReplaceItemInObjectCaseSensitive(csc, "privileged", cJSON_CreateTrue());
	cJSON_DeleteItemFromObjectCaseSensitive(csc, "allowPrivilegeEscalation");
}

static void weaken_capabilities(cJSON *pod)
{
	cJSON *caps = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(container0(pod), "securityContext"), "capabilities");
	cJSON *add = cJSON_AddArrayToObject(caps, "add");
	cJSON_AddItemToArray(add, cJSON_CreateString("SYS_ADMIN"));
}

static void weaken_host_network(cJSON *pod)
{
	cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "spec"),
					       "hostNetwork", cJSON_CreateTrue());
}

static void weaken_no_seccomp(cJSON *pod)
{
	cJSON_DeleteItemFromObjectCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "spec"),
						 "securityContext"),
		"seccompProfile");
	cJSON_DeleteItemFromObjectCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(container0(pod), "securityContext"),
		"seccompProfile");
}

static void test_weakened_pods_rejected(void)
{
	static const struct {
		const char *what;
		void (*weaken)(cJSON *pod);
		const char *mention; /* in the PodSecurity message */
	} cases[] = {
		{ "allowPrivilegeEscalation removed", weaken_no_ape, "allowPrivilegeEscalation" },
		{ "runAsUser 0", weaken_root, "runAsUser=0" },
		{ "hostPath volume", weaken_host_path, "hostPath" },
		{ "privileged", weaken_privileged, "privileged" },
		{ "capability SYS_ADMIN added", weaken_capabilities, "SYS_ADMIN" },
		{ "hostNetwork", weaken_host_network, "hostNetwork" },
		{ "seccompProfile removed", weaken_no_seccomp, "seccompProfile" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char id[24];
		cJSON *pod = new_pod(&cfg->templates[0], id);
		REQUIRE(pod);
		cases[i].weaken(pod);
		for (int dry = 1; dry >= 0; dry--) {
			struct kube_error e;
			kube_error_clear(&e);
			enum kube_err rc = dry ? dry_run_create(pod, NULL, &e)
					       : kube_create(admin, &KUBE_RES_PODS, ns, pod, NULL, &e);
			printf("%s (%s): %ld %s\n", cases[i].what, dry ? "dry run" : "create",
			       e.http_status, e.message);
			CHECK_INT(rc, KUBE_ERR_FORBIDDEN);
			CHECK_INT(e.http_status, 403);
			CHECK_STR(e.reason, "Forbidden");
			CHECK(strstr(e.message, "PodSecurity") != NULL);
			CHECK(strstr(e.message, "restricted") != NULL);
			if (!strstr(e.message, cases[i].mention))
				fprintf(stderr, "  %s: message does not mention %s\n", cases[i].what,
					cases[i].mention);
			CHECK(strstr(e.message, cases[i].mention) != NULL);
			if (rc == KUBE_OK)
				delete_pod(id);
		}
		cJSON *out = NULL;
		struct kube_error e;
		CHECK_INT(kube_get(admin, &KUBE_RES_PODS, ns, id, &out, &e), KUBE_ERR_NOT_FOUND);
		cJSON_Delete(out);
		cJSON_Delete(pod);
	}
}

/* ---- NetworkPolicies ---- */

/* An array member of o, where a missing one counts as empty (the server
 * omits empty lists). */
static bool same_list(const cJSON *got, const cJSON *want)
{
	int ng = got ? cJSON_GetArraySize(got) : 0;
	int nw = want ? cJSON_GetArraySize(want) : 0;
	if (ng == 0 || nw == 0)
		return ng == nw;
	return cJSON_Compare(got, want, true);
}

static void test_network_policies(void)
{
	for (size_t i = 0; i < cfg->ntemplates; i++) {
		const struct sbx_template *t = &cfg->templates[i];
		char buf[64];
		const char *name = sandbox_network_policy_name(t, buf);
		cJSON *np = sandbox_build_network_policy(cfg, t);
		REQUIRE(np);
		struct kube_error e;
		struct kube_delete_opts now = { .grace_period_s = 0 };
		enum kube_err rc = kube_delete(admin, &KUBE_RES_NETWORKPOLICIES, ns, name, &now,
					       NULL, &e);
		CHECK(rc == KUBE_OK || rc == KUBE_ERR_NOT_FOUND);
		rc = kube_create(admin, &KUBE_RES_NETWORKPOLICIES, ns, np, NULL, &e);
		if (rc != KUBE_OK)
			fprintf(stderr, "  %s: %s: %s\n", name, kube_strerror(rc), e.message);
		CHECK_INT(rc, KUBE_OK);
		cJSON *got = NULL;
		CHECK_INT(kube_get(admin, &KUBE_RES_NETWORKPOLICIES, ns, name, &got, &e), KUBE_OK);
		REQUIRE(got);
		printf("networkpolicy %s read back\n", name);
		const cJSON *gm = cJSON_GetObjectItemCaseSensitive(got, "metadata");
		const cJSON *wm = cJSON_GetObjectItemCaseSensitive(np, "metadata");
		CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(gm, "labels"),
				    cJSON_GetObjectItemCaseSensitive(wm, "labels"), true));
		const cJSON *gs = cJSON_GetObjectItemCaseSensitive(got, "spec");
		const cJSON *ws = cJSON_GetObjectItemCaseSensitive(np, "spec");
		static const char *const parts[] = { "podSelector", "policyTypes" };
		for (size_t k = 0; k < ARRAY_SIZE(parts); k++)
			CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(gs, parts[k]),
					    cJSON_GetObjectItemCaseSensitive(ws, parts[k]), true));
		CHECK(same_list(cJSON_GetObjectItemCaseSensitive(gs, "ingress"),
				cJSON_GetObjectItemCaseSensitive(ws, "ingress")));
		bool eg = same_list(cJSON_GetObjectItemCaseSensitive(gs, "egress"),
				    cJSON_GetObjectItemCaseSensitive(ws, "egress"));
		if (!eg) {
			char *a = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(gs, "egress"));
			fprintf(stderr, "  %s: egress read back as %s\n", name, a ? a : "?");
			free(a);
		}
		CHECK(eg);
		/* the egress the profile promises */
		int nrules = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(gs, "egress"));
		CHECK_INT(nrules, t->network == SBX_NET_NONE       ? 0
				  : t->network == SBX_NET_INTERNET ? 2
								   : (int)t->negress + 1);
		cJSON_Delete(got);
		cJSON_Delete(np);
		CHECK_INT(kube_delete(admin, &KUBE_RES_NETWORKPOLICIES, ns, name, &now, NULL, &e),
			  KUBE_OK);
	}
}

int main(void)
{
	cluster_env_load();
	admin = cluster_admin_client();
	ns = cluster_env("KUBE_NAMESPACE");
	if (!ns) {
		fprintf(stderr, "KUBE_NAMESPACE missing from the cluster env\n");
		return 2;
	}
	cfg = load_sample();
	free(cfg->namespace);
	cfg->namespace = strdup(ns);
	RUN(test_namespace_enforces_restricted);
	RUN(test_sample_templates_admitted);
	RUN(test_runtime_class_admitted);
	RUN(test_weakened_pods_rejected);
	RUN(test_network_policies);
	config_free(cfg);
	kube_client_free(admin);
	return test_summary();
}
