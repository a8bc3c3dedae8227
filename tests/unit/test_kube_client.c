/*
 * Unit tests for the pure parts of controller/kube_client.c: escaping of
 * names and query values, resource paths, list queries. (Calls to a real API
 * server are in tests/integration/test_kube_client_integration.c.)
 */
#include "kube_client.h"
#include "test.h"

static void test_escape(void)
{
	char *e = kube_escape("a-b.c_d~e");
	CHECK_STR(e, "a-b.c_d~e");
	free(e);
	e = kube_escape("app=web,tier in (a, b)");
	CHECK_STR(e, "app%3Dweb%2Ctier%20in%20%28a%2C%20b%29");
	free(e);
	e = kube_escape("../../etc/passwd?x=1&y#z");
	CHECK_STR(e, "..%2F..%2Fetc%2Fpasswd%3Fx%3D1%26y%23z");
	free(e);
	e = kube_escape("\xc3\xa9\n\x7f");
	CHECK_STR(e, "%C3%A9%0A%7F");
	free(e);
	e = kube_escape("");
	CHECK_STR(e, "");
	free(e);
}

static void test_paths(void)
{
	char *p = NULL;
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "sandboxes", "sb-1", NULL, &p), KUBE_OK);
	CHECK_STR(p, "/api/v1/namespaces/sandboxes/pods/sb-1");
	free(p);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "sandboxes", "sb-1", "exec", &p), KUBE_OK);
	CHECK_STR(p, "/api/v1/namespaces/sandboxes/pods/sb-1/exec");
	free(p);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, NULL, NULL, NULL, &p), KUBE_OK);
	CHECK_STR(p, "/api/v1/pods"); /* all namespaces */
	free(p);
	CHECK_INT(kube_resource_path(&KUBE_RES_NETWORKPOLICIES, "ns", NULL, NULL, &p), KUBE_OK);
	CHECK_STR(p, "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies");
	free(p);
	CHECK_INT(kube_resource_path(&KUBE_RES_NODES, "ignored", "n1", NULL, &p), KUBE_OK);
	CHECK_STR(p, "/api/v1/nodes/n1");
	free(p);
	/* hostile names are escaped, never interpreted */
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", "a/../../secrets/x", NULL, &p), KUBE_OK);
	CHECK_STR(p, "/api/v1/namespaces/ns/pods/a%2F..%2F..%2Fsecrets%2Fx");
	free(p);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", "x?watch=1", NULL, &p), KUBE_OK);
	CHECK_STR(p, "/api/v1/namespaces/ns/pods/x%3Fwatch%3D1");
	free(p);
	/* segments that would change the path are refused */
	p = (char *)1;
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", "..", NULL, &p), KUBE_ERR_ARG);
	CHECK(p == NULL);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", ".", NULL, &p), KUBE_ERR_ARG);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", "", NULL, &p), KUBE_ERR_ARG);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "..", "x", NULL, &p), KUBE_ERR_ARG);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, NULL, "x", NULL, &p), KUBE_ERR_ARG);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", NULL, "exec", &p), KUBE_ERR_ARG);
	CHECK_INT(kube_resource_path(&KUBE_RES_PODS, "ns", "x", "..", &p), KUBE_ERR_ARG);
}

static void test_list_query(void)
{
	struct kube_list_opts o = {
		.label_selector = "app.kubernetes.io/managed-by=sandbox-controller,tenant!=x",
		.field_selector = "status.phase=Running",
		.limit = 50,
		.continue_token = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTIzfQ==",
		.resource_version = "123",
	};
	char *p = kube_list_query(strdup("/api/v1/pods"), &o, NULL);
	CHECK_STR(p, "/api/v1/pods?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsandbox-controller%2Ctenant%21%3Dx"
		     "&fieldSelector=status.phase%3DRunning&limit=50"
		     "&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTIzfQ%3D%3D&resourceVersion=123");
	free(p);
	p = kube_list_query(strdup("/api/v1/pods"), NULL, "watch=1");
	CHECK_STR(p, "/api/v1/pods?watch=1");
	free(p);
	struct kube_list_opts empty = { 0 };
	p = kube_list_query(strdup("/api/v1/pods"), &empty, NULL);
	CHECK_STR(p, "/api/v1/pods");
	free(p);
}

static void test_request_rejects_bad_path(void)
{
	/* a client for an unreachable server: argument checks happen first */
	struct kube_config cfg = { .server = "https://127.0.0.1:1" };
	char err[128];
	struct kube_client *c = kube_client_new(&cfg, NULL, err, sizeof(err));
	REQUIRE(c);
	CHECK_STR(kube_client_server(c), "https://127.0.0.1:1");
	struct kube_error e;
	CHECK_INT(kube_request(c, "GET", "api/v1", NULL, NULL, 0, true, NULL, &e), KUBE_ERR_ARG);
	cJSON *out = NULL;
	CHECK_INT(kube_get(c, &KUBE_RES_PODS, "ns", "..", &out, &e), KUBE_ERR_ARG);
	CHECK(out == NULL);
	CHECK_INT(kube_patch(c, &KUBE_RES_PODS, "ns", "x", (enum kube_patch_type)9, "{}", NULL, &e),
		  KUBE_ERR_ARG);
	struct kube_client_stats st;
	kube_client_get_stats(c, &st);
	CHECK_INT(st.requests, 0); /* nothing was sent */
	kube_client_free(c);
	kube_client_free(NULL);
}

static void test_connection_refused_is_transport_and_retried(void)
{
	/* port 1 on loopback refuses at once: a connect failure is retried for
	 * any method (nothing reached a server) and reported as transport */
	struct kube_config cfg = { .server = "https://127.0.0.1:1" };
	struct kube_client_opts o = { .max_attempts = 3, .retry_base_ms = 1, .retry_cap_ms = 2 };
	char err[128];
	struct kube_client *c = kube_client_new(&cfg, &o, err, sizeof(err));
	REQUIRE(c);
	struct kube_error e;
	cJSON *obj = cJSON_Parse("{\"metadata\":{\"name\":\"x\"}}");
	CHECK_INT(kube_create(c, &KUBE_RES_CONFIGMAPS, "ns", obj, NULL, &e), KUBE_ERR_TRANSPORT);
	CHECK_INT(e.http_status, 0);
	struct kube_client_stats st;
	kube_client_get_stats(c, &st);
	CHECK_INT(st.requests, 3);
	CHECK_INT(st.retries, 2);
	cJSON_Delete(obj);
	kube_client_free(c);
}

int main(void)
{
	RUN(test_escape);
	RUN(test_paths);
	RUN(test_list_query);
	RUN(test_request_rejects_bad_path);
	RUN(test_connection_refused_is_transport_and_retried);
	return test_summary();
}
