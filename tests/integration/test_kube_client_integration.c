/*
 * Integration tests of the Kubernetes client against the real test control
 * plane (etcd + kube-apiserver with RBAC and PodSecurity admission + kwok):
 * CRUD with typed errors, optimistic concurrency, RBAC Forbidden through a
 * ServiceAccount token (and token-file rotation), and the informer: events in
 * order, surviving a kube-apiserver restart without losing or repeating
 * events, and listing again after 410 Gone.
 */
#include "cluster_env.h"
#include "kube_watch.h"
#include "test.h"
#include "util.h"

#include <pthread.h>
#include <unistd.h>

static struct kube_client *admin;
static const char *ns;

static cJSON *configmap(const char *name, const char *label, const char *value)
{
	cJSON *cm = cJSON_CreateObject();
	cJSON *m = cJSON_AddObjectToObject(cm, "metadata");
	cJSON_AddStringToObject(m, "name", name);
	if (label)
		cJSON_AddStringToObject(cJSON_AddObjectToObject(m, "labels"), "suite", label);
	cJSON_AddStringToObject(cJSON_AddObjectToObject(cm, "data"), "v", value);
	return cm;
}

static enum kube_err create_cm(const char *name, const char *label, const char *value,
			       cJSON **out, struct kube_error *err)
{
	cJSON *cm = configmap(name, label, value);
	enum kube_err rc = kube_create(admin, &KUBE_RES_CONFIGMAPS, ns, cm, out, err);
	cJSON_Delete(cm);
	return rc;
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
	const cJSON *y = cJSON_GetObjectItemCaseSensitive(x, b);
	return cJSON_IsString(y) ? y->valuestring : NULL;
}

static void test_server_version(void)
{
	cJSON *v = NULL;
	struct kube_error e;
	CHECK_INT(kube_request(admin, "GET", "/version", NULL, NULL, 0, true, &v, &e), KUBE_OK);
	const cJSON *gv = cJSON_GetObjectItemCaseSensitive(v, "gitVersion");
	CHECK(cJSON_IsString(gv) && strncmp(gv->valuestring, "v1.35.", 6) == 0);
	cJSON_Delete(v);
}

static void test_crud_and_errors(void)
{
	struct kube_error e;
	cJSON *created = NULL, *got = NULL, *patched = NULL;
	CHECK_INT(create_cm("crud", "crud", "one", &created, &e), KUBE_OK);
	REQUIRE(created);
	char uid[64], rv1[64];
	snprintf(uid, sizeof(uid), "%s", str_at(created, "metadata", "uid"));
	snprintf(rv1, sizeof(rv1), "%s", str_at(created, "metadata", "resourceVersion"));

	CHECK_INT(kube_get(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", &got, &e), KUBE_OK);
	CHECK_STR(str_at(got, "data", "v"), "one");
	cJSON_Delete(got);

	/* already exists */
	CHECK_INT(create_cm("crud", NULL, "two", NULL, &e), KUBE_ERR_ALREADY_EXISTS);
	CHECK_INT(e.http_status, 409);
	CHECK_STR(e.reason, "AlreadyExists");

	/* merge patch */
	CHECK_INT(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", KUBE_PATCH_MERGE,
			     "{\"data\":{\"v\":\"two\"}}", &patched, &e),
		  KUBE_OK);
	CHECK_STR(str_at(patched, "data", "v"), "two");
	CHECK(strcmp(str_at(patched, "metadata", "resourceVersion"), rv1) != 0);
	cJSON_Delete(patched);

	/* a write based on a stale resourceVersion is a conflict */
	char stale[256];
	snprintf(stale, sizeof(stale),
		 "{\"metadata\":{\"resourceVersion\":\"%s\"},\"data\":{\"v\":\"three\"}}", rv1);
	CHECK_INT(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", KUBE_PATCH_MERGE, stale,
			     NULL, &e),
		  KUBE_ERR_CONFLICT);
	CHECK_INT(e.http_status, 409);
	CHECK_STR(e.reason, "Conflict");

	/* JSON patch with a failing test operation changes nothing */
	CHECK(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", KUBE_PATCH_JSON,
			 "[{\"op\":\"test\",\"path\":\"/data/v\",\"value\":\"nope\"},"
			 "{\"op\":\"replace\",\"path\":\"/data/v\",\"value\":\"bad\"}]",
			 NULL, &e) != KUBE_OK);
	CHECK_INT(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", KUBE_PATCH_JSON,
			     "[{\"op\":\"test\",\"path\":\"/data/v\",\"value\":\"two\"},"
			     "{\"op\":\"replace\",\"path\":\"/data/v\",\"value\":\"four\"}]",
			     &patched, &e),
		  KUBE_OK);
	CHECK_STR(str_at(patched, "data", "v"), "four");
	cJSON_Delete(patched);

	/* patch of something absent */
	CHECK_INT(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "absent", KUBE_PATCH_MERGE, "{}",
			     NULL, &e),
		  KUBE_ERR_NOT_FOUND);

	/* invalid object: the causes name the field */
	cJSON *bad = configmap("Not_A_Valid_Name", NULL, "x");
	CHECK_INT(kube_create(admin, &KUBE_RES_CONFIGMAPS, ns, bad, NULL, &e), KUBE_ERR_INVALID);
	cJSON_Delete(bad);
	CHECK_INT(e.http_status, 422);
	CHECK(e.ncauses >= 1);
	CHECK_STR(e.causes[0].field, "metadata.name");

	/* a hostile name is escaped into one path segment, not interpreted */
	CHECK_INT(kube_get(admin, &KUBE_RES_CONFIGMAPS, ns, "crud/../../../../api", &got, &e),
		  KUBE_ERR_NOT_FOUND);

	/* delete with preconditions: a wrong uid is a conflict, the right one works */
	struct kube_delete_opts wrong = { .uid = "00000000-0000-0000-0000-000000000000",
					  .grace_period_s = -1 };
	CHECK_INT(kube_delete(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", &wrong, NULL, &e),
		  KUBE_ERR_CONFLICT);
	struct kube_delete_opts right = { .uid = uid, .grace_period_s = 0,
					  .propagation = "Background" };
	CHECK_INT(kube_delete(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", &right, NULL, &e), KUBE_OK);
	CHECK_INT(kube_get(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", &got, &e), KUBE_ERR_NOT_FOUND);
	CHECK_STR(e.reason, "NotFound");
	CHECK_INT(kube_delete(admin, &KUBE_RES_CONFIGMAPS, ns, "crud", NULL, NULL, &e),
		  KUBE_ERR_NOT_FOUND);
	cJSON_Delete(created);
}

static void test_list_selector_and_pages(void)
{
	struct kube_error e;
	char name[32];
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "page-%d", i);
		CHECK_INT(create_cm(name, "paging", "x", NULL, &e), KUBE_OK);
	}
	CHECK_INT(create_cm("other", "elsewhere", "x", NULL, &e), KUBE_OK);
	int total = 0, pages = 0;
	char *cont = NULL;
	do {
		struct kube_list_opts o = { .label_selector = "suite=paging", .limit = 2,
					    .continue_token = cont };
		cJSON *list = NULL;
		enum kube_err rc = kube_list(admin, &KUBE_RES_CONFIGMAPS, ns, &o, &list, &e);
		CHECK_INT(rc, KUBE_OK);
		free(cont);
		cont = NULL;
		if (rc)
			break;
		pages++;
		const cJSON *it;
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(list, "items"))
		{
			CHECK(strncmp(str_at(it, "metadata", "name"), "page-", 5) == 0);
			total++;
		}
		const char *c = str_at(list, "metadata", "continue");
		if (c && *c)
			cont = strdup(c);
		cJSON_Delete(list);
	} while (cont && pages < 10);
	CHECK_INT(total, 5);
	CHECK_INT(pages, 3);
}

/* ---- RBAC ---- */

static char *mint_token(const char *sa)
{
	struct kube_error e;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "metadata"), "name", sa);
	enum kube_err rc = kube_create(admin, &KUBE_RES_SERVICEACCOUNTS, ns, o, NULL, &e);
	cJSON_Delete(o);
	if (rc && rc != KUBE_ERR_ALREADY_EXISTS)
		return NULL;
	cJSON *tr = cJSON_Parse("{\"apiVersion\":\"authentication.k8s.io/v1\","
				"\"kind\":\"TokenRequest\",\"spec\":{\"expirationSeconds\":600}}");
	cJSON *out = NULL;
	rc = kube_create_sub(admin, &KUBE_RES_SERVICEACCOUNTS, ns, sa, "token", tr, &out, &e);
	cJSON_Delete(tr);
	char *tok = NULL;
	if (rc == KUBE_OK && str_at(out, "status", "token"))
		tok = strdup(str_at(out, "status", "token"));
	else
		fprintf(stderr, "TokenRequest failed: %s %s\n", kube_strerror(rc), e.message);
	cJSON_Delete(out);
	return tok;
}

static void write_token(const char *path, const char *tok)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", tok);
	fclose(f);
}

static struct kube_client *client_with_token_file(const char *path)
{
	struct kube_config cfg = { 0 };
	cfg.server = (char *)cluster_env("KUBE_SERVER");
	size_t len = 0;
	if (read_file_bounded(cluster_env("KUBE_CA_FILE"), 1 << 20, &cfg.ca_pem, &len) != 0)
		return NULL;
	cfg.ca_len = len;
	cfg.token_file = (char *)path;
	char err[256];
	struct kube_client *c = kube_client_new(&cfg, NULL, err, sizeof(err));
	free(cfg.ca_pem);
	return c;
}

static void test_forbidden_and_token_rotation(void)
{
	char *tok = mint_token("limited");
	REQUIRE(tok);
	char path[] = "/tmp/sbx-token-XXXXXX";
	int fd = mkstemp(path);
	REQUIRE(fd >= 0);
	close(fd);

	/* a bad token in the file: 401, even after the one forced re-read */
	write_token(path, "not-a-real-token");
	struct kube_client *c = client_with_token_file(path);
	REQUIRE(c);
	struct kube_error e;
	cJSON *out = NULL;
	struct kube_list_opts lo = { 0 };
	CHECK_INT(kube_list(c, &KUBE_RES_CONFIGMAPS, ns, &lo, &out, &e), KUBE_ERR_UNAUTHORIZED);
	CHECK_INT(e.http_status, 401);

	/* the token rotates: the next 401 makes the client read the file again */
	write_token(path, tok);
	CHECK_INT(kube_list(c, &KUBE_RES_CONFIGMAPS, ns, &lo, &out, &e), KUBE_ERR_FORBIDDEN);
	CHECK_INT(e.http_status, 403);
	CHECK_STR(e.reason, "Forbidden");
	CHECK(strstr(e.message, "cannot list resource \"configmaps\"") != NULL);
	struct kube_client_stats st;
	kube_client_get_stats(c, &st);
	CHECK(st.token_reloads >= 3);

	/* grant list on configmaps: the same client now succeeds */
	char role[512], binding[1024];
	snprintf(role, sizeof(role),
		 "{\"metadata\":{\"name\":\"cm-reader\"},\"rules\":[{\"apiGroups\":[\"\"],"
		 "\"resources\":[\"configmaps\"],\"verbs\":[\"get\",\"list\"]}]}");
	snprintf(binding, sizeof(binding),
		 "{\"metadata\":{\"name\":\"cm-reader\"},\"roleRef\":{\"apiGroup\":"
		 "\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":\"cm-reader\"},"
		 "\"subjects\":[{\"kind\":\"ServiceAccount\",\"name\":\"limited\",\"namespace\":\"%s\"}]}",
		 ns);
	cJSON *r = cJSON_Parse(role), *b = cJSON_Parse(binding);
	CHECK_INT(kube_create(admin, &KUBE_RES_ROLES, ns, r, NULL, &e), KUBE_OK);
	CHECK_INT(kube_create(admin, &KUBE_RES_ROLEBINDINGS, ns, b, NULL, &e), KUBE_OK);
	cJSON_Delete(r);
	cJSON_Delete(b);
	enum kube_err rc = KUBE_ERR_FORBIDDEN;
	for (int i = 0; i < 50 && rc == KUBE_ERR_FORBIDDEN; i++) {
		rc = kube_list(c, &KUBE_RES_CONFIGMAPS, ns, &lo, &out, &e);
		if (rc == KUBE_ERR_FORBIDDEN)
			usleep(100000); /* RBAC caches update asynchronously */
	}
	CHECK_INT(rc, KUBE_OK);
	cJSON_Delete(out);
	/* ...but still may not write */
	cJSON *cm = configmap("by-limited", NULL, "x");
	CHECK_INT(kube_create(c, &KUBE_RES_CONFIGMAPS, ns, cm, NULL, &e), KUBE_ERR_FORBIDDEN);
	cJSON_Delete(cm);
	kube_client_free(c);
	unlink(path);
	free_secret(tok);
}

/* ---- informer ---- */

struct recorder {
	pthread_mutex_t mu;
	int n;
	char lines[256][96];
	int synced;
};

static void rec_event(void *ud, enum kube_event_type type, const cJSON *obj)
{
	struct recorder *r = ud;
	pthread_mutex_lock(&r->mu);
	if (r->n < 256)
		snprintf(r->lines[r->n], sizeof(r->lines[0]), "%s %s", kube_event_type_name(type),
			 str_at(obj, "metadata", "name"));
	r->n++;
	pthread_mutex_unlock(&r->mu);
}

static void rec_synced(void *ud)
{
	struct recorder *r = ud;
	pthread_mutex_lock(&r->mu);
	r->synced++;
	pthread_mutex_unlock(&r->mu);
}

struct runner {
	struct kube_informer *inf;
	volatile int stop;
	pthread_t th;
};

static void *run_informer(void *ud)
{
	struct runner *r = ud;
	kube_informer_run(r->inf, &r->stop);
	return NULL;
}

static void runner_start(struct runner *r, struct recorder *rec, const char *selector,
			 const char *initial_rv)
{
	memset(rec, 0, sizeof(*rec));
	pthread_mutex_init(&rec->mu, NULL);
	struct kube_informer_opts o = {
		.resource = &KUBE_RES_CONFIGMAPS,
		.ns = ns,
		.label_selector = selector,
		.backoff_base_ms = 100,
		.backoff_cap_ms = 1000,
		.initial_resource_version = initial_rv,
	};
	struct kube_informer_ops ops = { .on_event = rec_event, .on_synced = rec_synced };
	r->stop = 0;
	r->inf = kube_informer_new(admin, &o, &ops, rec);
	pthread_create(&r->th, NULL, run_informer, r);
}

static void runner_stop(struct runner *r)
{
	r->stop = 1;
	pthread_join(r->th, NULL);
	kube_informer_free(r->inf);
}

/* Wait until the recorder holds at least n events (or 20 s pass). */
static int wait_events(struct recorder *rec, int n)
{
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&rec->mu);
		int have = rec->n;
		pthread_mutex_unlock(&rec->mu);
		if (have >= n)
			return have;
		usleep(100000);
	}
	return rec->n;
}

static int wait_watches(struct runner *r, uint64_t n)
{
	struct kube_informer_stats st;
	for (int i = 0; i < 200; i++) {
		kube_informer_get_stats(r->inf, &st);
		if (st.watches >= n)
			return 1;
		usleep(100000);
	}
	return 0;
}

static void dump(struct recorder *rec)
{
	for (int i = 0; i < rec->n && i < 256; i++)
		fprintf(stderr, "  event %d: %s\n", i, rec->lines[i]);
}

static void test_watch_in_order(void)
{
	struct recorder rec;
	struct runner r;
	runner_start(&r, &rec, "suite=order", NULL);
	CHECK(wait_watches(&r, 1));
	struct kube_error e;
	CHECK_INT(create_cm("o1", "order", "a", NULL, &e), KUBE_OK);
	CHECK_INT(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "o1", KUBE_PATCH_MERGE,
			     "{\"data\":{\"v\":\"b\"}}", NULL, &e),
		  KUBE_OK);
	CHECK_INT(create_cm("o2", "order", "a", NULL, &e), KUBE_OK);
	CHECK_INT(kube_delete(admin, &KUBE_RES_CONFIGMAPS, ns, "o1", NULL, NULL, &e), KUBE_OK);
	/* not ours: must not show up */
	CHECK_INT(create_cm("o3", "not-order", "a", NULL, &e), KUBE_OK);
	CHECK_INT(wait_events(&rec, 4), 4);
	usleep(500000);
	runner_stop(&r);
	CHECK_INT(rec.n, 4);
	CHECK_INT(rec.synced, 1);
	CHECK_STR(rec.lines[0], "ADDED o1");
	CHECK_STR(rec.lines[1], "MODIFIED o1");
	CHECK_STR(rec.lines[2], "ADDED o2");
	CHECK_STR(rec.lines[3], "DELETED o1");
	if (t_failed)
		dump(&rec);
}

static int count_lines(struct recorder *rec, const char *line)
{
	int n = 0;
	for (int i = 0; i < rec->n && i < 256; i++)
		if (strcmp(rec->lines[i], line) == 0)
			n++;
	return n;
}

static void test_watch_survives_apiserver_restart(void)
{
	struct recorder rec;
	struct runner r;
	struct kube_error e;
	/* objects that exist before the informer starts come from the list */
	CHECK_INT(create_cm("r0", "restart", "a", NULL, &e), KUBE_OK);
	runner_start(&r, &rec, "suite=restart", NULL);
	CHECK(wait_watches(&r, 1));
	CHECK_INT(create_cm("r1", "restart", "a", NULL, &e), KUBE_OK);
	CHECK_INT(create_cm("r2", "restart", "a", NULL, &e), KUBE_OK);
	CHECK_INT(wait_events(&rec, 3), 3);

	int failed_before = t_failed;
	CHECK_INT(cluster_py("restart-apiserver --down-seconds 2"), 0);
	/* written while the informer is still reconnecting (it backs off) */
	CHECK_INT(create_cm("r3", "restart", "a", NULL, &e), KUBE_OK);
	CHECK_INT(kube_patch(admin, &KUBE_RES_CONFIGMAPS, ns, "r1", KUBE_PATCH_MERGE,
			     "{\"data\":{\"v\":\"b\"}}", NULL, &e),
		  KUBE_OK);
	CHECK_INT(kube_delete(admin, &KUBE_RES_CONFIGMAPS, ns, "r2", NULL, NULL, &e), KUBE_OK);
	CHECK_INT(wait_events(&rec, 6), 6);
	sleep(2); /* anything repeated would arrive now */
	struct kube_informer_stats st;
	kube_informer_get_stats(r.inf, &st);
	runner_stop(&r);
	printf("restart: %d events, %llu lists, %llu watches, %llu errors, %llu gone\n", rec.n,
	       (unsigned long long)st.lists, (unsigned long long)st.watches,
	       (unsigned long long)st.errors, (unsigned long long)st.gone);
	CHECK_INT(rec.n, 6);
	CHECK_INT(count_lines(&rec, "ADDED r0"), 1);
	CHECK_INT(count_lines(&rec, "ADDED r1"), 1);
	CHECK_INT(count_lines(&rec, "ADDED r2"), 1);
	CHECK_INT(count_lines(&rec, "ADDED r3"), 1);
	CHECK_INT(count_lines(&rec, "MODIFIED r1"), 1);
	CHECK_INT(count_lines(&rec, "DELETED r2"), 1);
	CHECK(st.watches >= 2); /* it really reconnected */
	CHECK_INT(st.objects, 3);
	if (t_failed != failed_before)
		dump(&rec);
}

static void test_gone_leads_to_list(void)
{
	struct recorder rec;
	struct runner r;
	struct kube_error e;
	CHECK_INT(create_cm("g1", "gone", "a", NULL, &e), KUBE_OK);
	CHECK_INT(create_cm("g2", "gone", "a", NULL, &e), KUBE_OK);
	/* Make resourceVersion 1 truly too old: compact etcd past it, and
	 * restart the API server so that its watch cache begins after the
	 * compaction (as after a long disconnect in production). */
	CHECK_INT(cluster_compact_etcd(), 0);
	CHECK_INT(cluster_py("restart-apiserver --down-seconds 1"), 0);
	/* resume from that resourceVersion: 410 Gone, then a fresh list */
	runner_start(&r, &rec, "suite=gone", "1");
	CHECK_INT(wait_events(&rec, 2), 2);
	CHECK(wait_watches(&r, 2));
	struct kube_informer_stats st;
	kube_informer_get_stats(r.inf, &st);
	runner_stop(&r);
	printf("gone: %llu gone, %llu lists, %llu watches\n", (unsigned long long)st.gone,
	       (unsigned long long)st.lists, (unsigned long long)st.watches);
	CHECK(st.gone >= 1);
	CHECK(st.lists >= 1);
	CHECK_INT(rec.synced, (int)st.lists);
	CHECK_INT(count_lines(&rec, "ADDED g1"), 1);
	CHECK_INT(count_lines(&rec, "ADDED g2"), 1);
	CHECK_INT(rec.n, 2);
}

int main(void)
{
	cluster_env_load();
	admin = cluster_admin_client();
	ns = cluster_new_namespace(admin, "kit");
	RUN(test_server_version);
	RUN(test_crud_and_errors);
	RUN(test_list_selector_and_pages);
	RUN(test_forbidden_and_token_rotation);
	RUN(test_watch_in_order);
	RUN(test_watch_survives_apiserver_restart);
	RUN(test_gone_leads_to_list);
	kube_client_free(admin);
	return test_summary();
}
