/*
 * Unit tests for controller/sandbox_store.c: records derived from a Pod's
 * life recorded on the real control plane (data/watch-pods.jsonl), failure
 * states, listing with filters and pages, expiry, and readiness waiters.
 */
#include "sandbox_store.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <stdatomic.h>

static cJSON *events[16];
static int nevents;

static int keep_event(void *ud, enum kube_event_type type, const cJSON *obj)
{
	(void)ud;
	cJSON *e = cJSON_CreateObject();
	cJSON_AddStringToObject(e, "type", kube_event_type_name(type));
	cJSON_AddItemToObject(e, "object", cJSON_Duplicate(obj, 1));
	if (nevents < 16)
		events[nevents++] = e;
	else
		cJSON_Delete(e);
	return 0;
}

static void load_recording(void)
{
	char path[512], *text;
	size_t len;
	snprintf(path, sizeof(path), "%s/watch-pods.jsonl", SBX_TEST_DATA);
	if (read_file_bounded(path, 1 << 20, &text, &len) != 0)
		exit(2);
	struct kube_watch_decoder d;
	struct kube_error e;
	kube_watch_decoder_init(&d, 0);
	if (kube_watch_decoder_feed(&d, text, len, keep_event, NULL, &e) != 0)
		exit(2);
	kube_watch_decoder_release(&d);
	free(text);
}

static const cJSON *ev_obj(int i)
{
	return cJSON_GetObjectItemCaseSensitive(events[i], "object");
}

static enum kube_event_type ev_type(int i)
{
	const char *t = cJSON_GetObjectItemCaseSensitive(events[i], "type")->valuestring;
	return strcmp(t, "ADDED") == 0 ? KUBE_EVENT_ADDED
	       : strcmp(t, "DELETED") == 0 ? KUBE_EVENT_DELETED
					   : KUBE_EVENT_MODIFIED;
}

struct waited {
	atomic_int calls;
	enum sandbox_wait_result r;
	enum sandbox_state state;
	char reason[40];
};

static void on_wait(void *ud, enum sandbox_wait_result r, const struct sandbox *sb)
{
	struct waited *w = ud;
	w->calls++;
	w->r = r;
	if (sb) {
		w->state = sb->state;
		snprintf(w->reason, sizeof(w->reason), "%s", sb->reason);
	}
}

static void test_recorded_life(void)
{
	REQUIRE(nevents == 5);
	struct sandbox sb;
	const char *id = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(ev_obj(0), "metadata"), "name")->valuestring;
	CHECK_INT(sandbox_from_pod(ev_obj(0), &sb), 0);
	CHECK_STR(sb.id, id);
	CHECK_STR(sb.template_name, "python");
	CHECK_STR(sb.tenant, "default");
	CHECK_INT(sb.state, SANDBOX_PENDING);
	CHECK_INT(sb.created_at, 1700000000);
	CHECK_INT(sb.expires_at, 1700003600);
	CHECK_INT(sb.nlabels, 1);
	CHECK_STR(sb.labels[0].key, "team");
	CHECK_STR(sb.labels[0].value, "blue");
	sandbox_release(&sb);

	struct sandbox_store *st = sandbox_store_new();
	struct waited before = { 0 }, gone = { 0 };
	/* a waiter registered before the Pod is even seen */
	CHECK_INT(sandbox_store_wait(st, id, now_ms() + 60000, on_wait, &before), 0);
	sandbox_store_on_event(st, ev_type(0), ev_obj(0));
	CHECK_INT(before.calls, 0);
	CHECK_INT(sandbox_store_get(st, id, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_PENDING);
	sandbox_release(&sb);
	sandbox_store_on_event(st, ev_type(1), ev_obj(1));
	CHECK_INT(before.calls, 1);
	CHECK_INT(before.r, SANDBOX_WAIT_READY);
	CHECK_INT(before.state, SANDBOX_READY);
	/* a waiter registered after readiness fires at once */
	struct waited after = { 0 };
	CHECK_INT(sandbox_store_wait(st, id, now_ms() + 60000, on_wait, &after), 0);
	CHECK_INT(after.calls, 1);
	CHECK_INT(after.r, SANDBOX_WAIT_READY);
	sandbox_store_on_event(st, ev_type(2), ev_obj(2));
	CHECK_INT(sandbox_store_get(st, id, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_TERMINATING);
	sandbox_release(&sb);
	/* terminating sandboxes are not "expired" again */
	char ids[4][SANDBOX_ID_MAX];
	CHECK_INT(sandbox_store_expired(st, 1800000000, ids, 4), 0);
	sandbox_store_on_event(st, ev_type(3), ev_obj(3));
	CHECK_INT(sandbox_store_wait(st, "sb-other", now_ms() + 60000, on_wait, &gone), 0);
	sandbox_store_on_event(st, ev_type(4), ev_obj(4));
	CHECK_INT(sandbox_store_get(st, id, &sb), -ENOENT);
	CHECK_INT(sandbox_store_count(st), 0);
	CHECK_INT(before.calls, 1); /* exactly once */
	CHECK_INT(gone.calls, 0);
	sandbox_store_free(st);
}

/* The recorded ADDED Pod with its status replaced. */
static cJSON *pod_with_status(const char *status_json)
{
	cJSON *p = cJSON_Duplicate(ev_obj(0), 1);
	cJSON_ReplaceItemInObject(p, "status", cJSON_Parse(status_json));
	return p;
}

static void test_failures(void)
{
	struct sandbox sb;
	cJSON *p = pod_with_status(
		"{\"phase\":\"Pending\",\"containerStatuses\":[{\"name\":\"sandbox\",\"state\":"
		"{\"waiting\":{\"reason\":\"ImagePullBackOff\",\"message\":\"Back-off pulling image\"}}}]}");
	CHECK_INT(sandbox_from_pod(p, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_FAILED);
	CHECK_STR(sb.reason, "image_pull_failed");
	CHECK(sb.message && strstr(sb.message, "Back-off pulling image"));
	sandbox_release(&sb);

	/* a waiter learns of the failure */
	struct sandbox_store *st = sandbox_store_new();
	struct waited w = { 0 };
	CHECK_INT(sandbox_store_wait(st, sb.id, now_ms() + 60000, on_wait, &w), 0);
	sandbox_store_on_event(st, KUBE_EVENT_MODIFIED, p);
	CHECK_INT(w.calls, 1);
	CHECK_INT(w.r, SANDBOX_WAIT_FAILED);
	CHECK_STR(w.reason, "image_pull_failed");
	cJSON_Delete(p);

	p = pod_with_status("{\"phase\":\"Pending\",\"conditions\":[{\"type\":\"PodScheduled\","
			    "\"status\":\"False\",\"reason\":\"Unschedulable\",\"message\":"
			    "\"0/3 nodes are available: 3 Insufficient cpu.\"}]}");
	CHECK_INT(sandbox_from_pod(p, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_PENDING);
	CHECK_STR(sb.reason, "unschedulable");
	CHECK(sb.message && strstr(sb.message, "Insufficient cpu"));
	sandbox_release(&sb);
	cJSON_Delete(p);

	p = pod_with_status("{\"phase\":\"Running\",\"containerStatuses\":[{\"name\":\"sandbox\","
			    "\"state\":{\"terminated\":{\"reason\":\"OOMKilled\",\"exitCode\":137}}}]}");
	CHECK_INT(sandbox_from_pod(p, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_FAILED);
	CHECK_STR(sb.reason, "container_failed");
	CHECK(strstr(sb.message, "OOMKilled") != NULL);
	sandbox_release(&sb);
	cJSON_Delete(p);

	p = pod_with_status("{\"phase\":\"Failed\",\"message\":\"evicted\"}");
	CHECK_INT(sandbox_from_pod(p, &sb), 0);
	CHECK_STR(sb.reason, "pod_failed");
	sandbox_release(&sb);
	cJSON_Delete(p);

	/* not a sandbox: no id label, or id differs from the name */
	cJSON *q = cJSON_Parse("{\"metadata\":{\"name\":\"x\",\"labels\":{}}}");
	CHECK_INT(sandbox_from_pod(q, &sb), -EINVAL);
	cJSON_Delete(q);
	q = cJSON_Parse("{\"metadata\":{\"name\":\"x\",\"labels\":{\"sandbox-controller.dev/id\":\"y\"}}}");
	CHECK_INT(sandbox_from_pod(q, &sb), -EINVAL);
	sandbox_store_on_event(st, KUBE_EVENT_ADDED, q); /* ignored, not cached */
	CHECK_INT(sandbox_store_count(st), 1);            /* only the failed sandbox */
	cJSON_Delete(q);
	sandbox_store_free(st);
}

static cJSON *synthetic(int i, const char *team, int64_t expires)
{
	char buf[1024], id[32];
	snprintf(id, sizeof(id), "sb-%04d", i);
	snprintf(buf, sizeof(buf),
		 "{\"metadata\":{\"name\":\"%s\",\"uid\":\"u%d\",\"labels\":{"
		 "\"sandbox-controller.dev/id\":\"%s\",\"user.sandbox-controller.dev/team\":\"%s\"},"
		 "\"annotations\":{\"sandbox-controller.dev/expires-at\":\"%lld\"}},\"status\":{}}",
		 id, i, id, team, (long long)expires);
	return cJSON_Parse(buf);
}

static bool team_is(const struct sandbox *sb, void *ud)
{
	for (size_t i = 0; i < sb->nlabels; i++)
		if (strcmp(sb->labels[i].key, "team") == 0 && strcmp(sb->labels[i].value, ud) == 0)
			return true;
	return false;
}

static void test_list_pages_expiry(void)
{
	struct sandbox_store *st = sandbox_store_new();
	/* inserted out of order */
	for (int k = 0; k < 250; k++) {
		int i = (k * 97) % 250;
		cJSON *p = synthetic(i, i % 2 ? "red" : "blue", i < 10 ? 100 : 5000000000LL);
		sandbox_store_on_event(st, KUBE_EVENT_ADDED, p);
		cJSON_Delete(p);
	}
	CHECK_INT(sandbox_store_count(st), 250);
	struct sandbox out[100];
	bool more;
	size_t n = sandbox_store_list(st, NULL, 100, NULL, NULL, out, &more);
	CHECK_INT(n, 100);
	CHECK(more);
	CHECK_STR(out[0].id, "sb-0000");
	CHECK_STR(out[99].id, "sb-0099");
	for (size_t i = 0; i < n; i++)
		sandbox_release(&out[i]);
	/* pages of the red ones continue after the last id seen */
	int total = 0, pages = 0;
	bool have_cursor = false;
	char cursor[SANDBOX_ID_MAX];
	do {
		n = sandbox_store_list(st, have_cursor ? cursor : NULL, 40, team_is, "red", out,
				       &more);
		pages++;
		total += (int)n;
		if (n) {
			snprintf(cursor, sizeof(cursor), "%s", out[n - 1].id);
			have_cursor = true;
		}
		for (size_t i = 0; i < n; i++) {
			CHECK(team_is(&out[i], "red"));
			sandbox_release(&out[i]);
		}
	} while (more && pages < 20);
	CHECK_INT(total, 125);
	CHECK_INT(pages, 4);
	/* a cursor that no longer exists still continues in order */
	n = sandbox_store_list(st, "sb-0099x", 1, NULL, NULL, out, &more);
	CHECK_INT(n, 1);
	CHECK_STR(out[0].id, "sb-0100");
	sandbox_release(&out[0]);
	/* expiry: the first ten expired at t=100 */
	char ids[50][SANDBOX_ID_MAX];
	CHECK_INT(sandbox_store_expired(st, 1000, ids, 50), 10);
	CHECK_STR(ids[0], "sb-0000");
	CHECK_INT(sandbox_store_expired(st, 1000, ids, 3), 3);
	sandbox_store_free(st);
}

static void test_waiter_timeout_and_gone(void)
{
	struct sandbox_store *st = sandbox_store_new();
	struct waited t = { 0 }, g = { 0 };
	int64_t now = now_ms();
	CHECK_INT(sandbox_store_wait(st, "sb-0001", now + 1000, on_wait, &t), 0);
	cJSON *p = synthetic(2, "x", 1);
	sandbox_store_on_event(st, KUBE_EVENT_ADDED, p);
	CHECK_INT(sandbox_store_wait(st, "sb-0002", now + 1000, on_wait, &g), 0);
	sandbox_store_tick(st, now + 999);
	CHECK_INT(t.calls, 0);
	sandbox_store_on_event(st, KUBE_EVENT_DELETED, p);
	CHECK_INT(g.calls, 1);
	CHECK_INT(g.r, SANDBOX_WAIT_GONE);
	sandbox_store_tick(st, now + 1000);
	CHECK_INT(t.calls, 1);
	CHECK_INT(t.r, SANDBOX_WAIT_TIMEOUT);
	sandbox_store_tick(st, now + 5000);
	CHECK_INT(t.calls, 1);
	CHECK_INT(g.calls, 1);
	cJSON_Delete(p);
	/* waiters still pending at free are called, once, with a timeout */
	struct waited z = { 0 };
	CHECK_INT(sandbox_store_wait(st, "sb-9", now + 99999, on_wait, &z), 0);
	sandbox_store_free(st);
	CHECK_INT(z.calls, 1);
	CHECK_INT(z.r, SANDBOX_WAIT_TIMEOUT);
}

static void test_usage(void)
{
	struct sbx_template tmpl[2] = { 0 };
	tmpl[0].name = "python";
	tmpl[0].cpu_limit_milli = 1000;
	tmpl[0].memory_limit_bytes = 512LL << 20;
	tmpl[1].name = "big";
	tmpl[1].cpu_limit_milli = 4000;
	tmpl[1].memory_limit_bytes = 8LL << 30;
	struct sbx_config cfg = { .templates = tmpl, .ntemplates = 2 };
	struct sandbox_store *st = sandbox_store_new();
	const char *pods[] = {
		/* tenant a: python ready, big pending, python terminating (not counted) */
		"{\"metadata\":{\"name\":\"sb-1\",\"labels\":{\"sandbox-controller.dev/id\":\"sb-1\","
		"\"sandbox-controller.dev/template\":\"python\",\"sandbox-controller.dev/tenant\":\"a\"}},"
		"\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}",
		"{\"metadata\":{\"name\":\"sb-2\",\"labels\":{\"sandbox-controller.dev/id\":\"sb-2\","
		"\"sandbox-controller.dev/template\":\"big\",\"sandbox-controller.dev/tenant\":\"a\"}}}",
		"{\"metadata\":{\"name\":\"sb-3\",\"deletionTimestamp\":\"2026-01-01T00:00:00Z\","
		"\"labels\":{\"sandbox-controller.dev/id\":\"sb-3\","
		"\"sandbox-controller.dev/template\":\"python\",\"sandbox-controller.dev/tenant\":\"a\"}}}",
		/* tenant b */
		"{\"metadata\":{\"name\":\"sb-4\",\"labels\":{\"sandbox-controller.dev/id\":\"sb-4\","
		"\"sandbox-controller.dev/template\":\"python\",\"sandbox-controller.dev/tenant\":\"b\"}}}",
	};
	for (size_t i = 0; i < ARRAY_SIZE(pods); i++) {
		cJSON *p = cJSON_Parse(pods[i]);
		REQUIRE(p);
		sandbox_store_on_event(st, KUBE_EVENT_ADDED, p);
		cJSON_Delete(p);
	}
	struct sandbox_usage u;
	sandbox_store_usage(st, &cfg, "a", &u);
	CHECK_INT(u.sandboxes, 2);
	CHECK_INT(u.cpu_milli, 5000);
	CHECK_INT(u.memory_bytes, (512LL << 20) + (8LL << 30));
	sandbox_store_usage(st, &cfg, "b", &u);
	CHECK_INT(u.sandboxes, 1);
	CHECK_INT(u.cpu_milli, 1000);
	sandbox_store_usage(st, &cfg, "nobody", &u);
	CHECK_INT(u.sandboxes, 0);
	sandbox_store_usage(st, &cfg, NULL, &u);
	CHECK_INT(u.sandboxes, 3);
	sandbox_store_free(st);
}

static void test_prime(void)
{
	struct sandbox_store *st = sandbox_store_new();
	struct sandbox sb;
	const char *id = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(ev_obj(0), "metadata"), "name")->valuestring;
	/* the created Pod is visible at once */
	sandbox_store_prime(st, ev_obj(0));
	CHECK_INT(sandbox_store_get(st, id, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_PENDING);
	sandbox_release(&sb);
	/* the informer's newer state wins, and a late prime does not undo it */
	sandbox_store_on_event(st, KUBE_EVENT_MODIFIED, ev_obj(1));
	sandbox_store_prime(st, ev_obj(0));
	CHECK_INT(sandbox_store_get(st, id, &sb), 0);
	CHECK_INT(sb.state, SANDBOX_READY);
	sandbox_release(&sb);
	/* nor does it resurrect a deleted sandbox */
	sandbox_store_on_event(st, KUBE_EVENT_DELETED, ev_obj(4));
	sandbox_store_prime(st, ev_obj(0));
	CHECK_INT(sandbox_store_get(st, id, &sb), -ENOENT);
	sandbox_store_free(st);
}

int main(void)
{
	load_recording();
	RUN(test_recorded_life);
	RUN(test_failures);
	RUN(test_list_pages_expiry);
	RUN(test_waiter_timeout_and_gone);
	RUN(test_usage);
	RUN(test_prime);
	for (int i = 0; i < nevents; i++)
		cJSON_Delete(events[i]);
	return test_summary();
}
