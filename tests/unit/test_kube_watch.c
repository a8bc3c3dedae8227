/*
 * Unit tests for controller/kube_watch.c: the event decoder on a watch stream
 * recorded from the real kube-apiserver (data/watch-configmaps.jsonl), split
 * at every possible position, plus malformed and oversized input; and the
 * informer's bookkeeping that keeps events from being lost or repeated
 * across re-lists. Includes the .c to reach its static functions.
 */
#include "../../controller/kube_watch.c"

#include "test.h"

struct seen {
	int n;
	enum kube_event_type types[64];
	char names[64][64];
	int stop_after; /* return 1 from the callback after this many events */
};

static int collect(void *ud, enum kube_event_type type, const cJSON *obj)
{
	struct seen *s = ud;
	if (s->n < 64) {
		s->types[s->n] = type;
		const char *name = meta_str(obj, "name");
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name ? name : "");
	}
	s->n++;
	if (s->stop_after && s->n >= s->stop_after)
		return 1;
	return 0;
}

static char *recorded;
static size_t recorded_len;
static struct seen whole;

static void test_recorded_whole(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/watch-configmaps.jsonl", SBX_TEST_DATA);
	REQUIRE(read_file_bounded(path, 1 << 20, &recorded, &recorded_len) == 0);
	struct kube_watch_decoder d;
	kube_watch_decoder_init(&d, 0);
	struct kube_error e;
	memset(&whole, 0, sizeof(whole));
	CHECK_INT(kube_watch_decoder_feed(&d, recorded, recorded_len, collect, &whole, &e), 0);
	kube_watch_decoder_release(&d);
	/* the recording: w1 added, w1 modified, w2 added, w1 deleted, then a
	 * bookmark (see data/README.md for how it was made) */
	CHECK(whole.n >= 5);
	CHECK_INT(whole.types[0], KUBE_EVENT_ADDED);
	CHECK_STR(whole.names[0], "w1");
	CHECK_INT(whole.types[1], KUBE_EVENT_MODIFIED);
	CHECK_STR(whole.names[1], "w1");
	CHECK_INT(whole.types[2], KUBE_EVENT_ADDED);
	CHECK_STR(whole.names[2], "w2");
	CHECK_INT(whole.types[3], KUBE_EVENT_DELETED);
	CHECK_STR(whole.names[3], "w1");
	CHECK_INT(whole.types[whole.n - 1], KUBE_EVENT_BOOKMARK);
}

static void test_recorded_split_everywhere(void)
{
	REQUIRE(recorded);
	int mismatches = 0;
	for (size_t cut = 0; cut <= recorded_len; cut++) {
		struct kube_watch_decoder d;
		kube_watch_decoder_init(&d, 0);
		struct kube_error e;
		struct seen s = { 0 };
		int rc1 = kube_watch_decoder_feed(&d, recorded, cut, collect, &s, &e);
		int rc2 = kube_watch_decoder_feed(&d, recorded + cut, recorded_len - cut, collect,
						  &s, &e);
		if (rc1 || rc2 || s.n != whole.n ||
		    memcmp(s.types, whole.types, sizeof(s.types[0]) * (size_t)whole.n) != 0)
			mismatches++;
		kube_watch_decoder_release(&d);
	}
	CHECK_INT(mismatches, 0);
	/* and one byte at a time */
	struct kube_watch_decoder d;
	kube_watch_decoder_init(&d, 0);
	struct kube_error e;
	struct seen s = { 0 };
	int rc = 0;
	for (size_t i = 0; i < recorded_len && rc == 0; i++)
		rc = kube_watch_decoder_feed(&d, recorded + i, 1, collect, &s, &e);
	CHECK_INT(rc, 0);
	CHECK_INT(s.n, whole.n);
	kube_watch_decoder_release(&d);
}

static int feed_str(const char *text, size_t max_event, struct seen *s, struct kube_error *e)
{
	struct kube_watch_decoder d;
	kube_watch_decoder_init(&d, max_event);
	int rc = kube_watch_decoder_feed(&d, text, strlen(text), collect, s, e);
	/* nothing held beyond the limit, whatever happened */
	CHECK(d.pending.len <= d.pending.max);
	kube_watch_decoder_release(&d);
	return rc;
}

static void test_tricky_strings(void)
{
	const char *t =
		"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"},"
		"\"data\":{\"k\":\"}}}{{[\\\"\\\\\",\"u\":\"\\u007d\"}}}\n"
		"  \r\n\t{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"b\"}}}";
	struct seen s = { 0 };
	struct kube_error e;
	CHECK_INT(feed_str(t, 0, &s, &e), 0);
	CHECK_INT(s.n, 2);
	CHECK_STR(s.names[0], "a");
	CHECK_INT(s.types[1], KUBE_EVENT_DELETED);
}

static void test_malformed(void)
{
	struct seen s = { 0 };
	struct kube_error e;
	CHECK_INT(feed_str("garbage{\"type\":\"ADDED\",\"object\":{}}", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(e.code, KUBE_ERR_PROTOCOL);
	CHECK_INT(feed_str("{\"type\":\"ADDED\",\"object\":{]}", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(feed_str("{\"object\":{}}", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(feed_str("{\"type\":\"ADDED\",\"object\":[]}", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(feed_str("{\"type\":\"EXPLODED\",\"object\":{}}", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK(strstr(e.message, "EXPLODED") != NULL);
	CHECK_INT(feed_str("{\"type\":1,\"object\":{}}", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(feed_str("[1,2]", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(feed_str("{\"type\":\"ADDED\",\"object\":{}} x", 0, &s, &e), KUBE_ERR_PROTOCOL);
	CHECK_INT(s.n, 1); /* the good event before the junk was delivered */
	/* unterminated: not an error yet, just incomplete */
	memset(&s, 0, sizeof(s));
	CHECK_INT(feed_str("{\"type\":\"ADDED\",\"object\":{\"a\":\"}", 0, &s, &e), 0);
	CHECK_INT(s.n, 0);
}

static void test_oversized(void)
{
	char big[4096];
	int n = snprintf(big, sizeof(big), "{\"type\":\"ADDED\",\"object\":{\"data\":\"");
	memset(big + n, 'x', 3000);
	strcpy(big + n + 3000, "\"}}");
	struct seen s = { 0 };
	struct kube_error e;
	CHECK_INT(feed_str(big, 1024, &s, &e), KUBE_ERR_TOO_LARGE);
	CHECK(strstr(e.message, "1024") != NULL);
	CHECK_INT(s.n, 0);
	/* just under the limit passes */
	CHECK_INT(feed_str(big, strlen(big), &s, &e), 0);
	CHECK_INT(s.n, 1);
	/* a limit that is hit across many small reads */
	struct kube_watch_decoder d;
	kube_watch_decoder_init(&d, 1024);
	int rc = 0;
	for (size_t i = 0; big[i] && rc == 0; i += 7) {
		size_t len = strlen(big + i) < 7 ? strlen(big + i) : 7;
		rc = kube_watch_decoder_feed(&d, big + i, len, collect, &s, &e);
	}
	CHECK_INT(rc, KUBE_ERR_TOO_LARGE);
	CHECK(d.pending.len <= 1024);
	kube_watch_decoder_release(&d);
}

static void test_callback_stops(void)
{
	const char *t = "{\"type\":\"ADDED\",\"object\":{}}{\"type\":\"ADDED\",\"object\":{}}"
			"{\"type\":\"ADDED\",\"object\":{}}";
	struct seen s = { .stop_after = 2 };
	struct kube_error e;
	CHECK_INT(feed_str(t, 0, &s, &e), 1);
	CHECK_INT(s.n, 2);
}

/* ---- informer bookkeeping ---- */

struct trace {
	int n;
	char lines[32][96];
};

static void trace_event(void *ud, enum kube_event_type type, const cJSON *obj)
{
	struct trace *t = ud;
	if (t->n < 32)
		snprintf(t->lines[t->n], sizeof(t->lines[0]), "%s %s/%s %s",
			 kube_event_type_name(type), meta_str(obj, "namespace"),
			 meta_str(obj, "name"),
			 meta_str(obj, "resourceVersion") ? meta_str(obj, "resourceVersion") : "-");
	t->n++;
}

static cJSON *obj(const char *name, const char *uid, const char *rv)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *m = cJSON_AddObjectToObject(o, "metadata");
	cJSON_AddStringToObject(m, "namespace", "ns");
	cJSON_AddStringToObject(m, "name", name);
	cJSON_AddStringToObject(m, "uid", uid);
	cJSON_AddStringToObject(m, "resourceVersion", rv);
	return o;
}

static void observe_one(struct kube_informer *inf, const char *name, const char *uid,
			const char *rv)
{
	cJSON *o = obj(name, uid, rv);
	CHECK_INT(observe(inf, o), 0);
	cJSON_Delete(o);
}

static void forget_one(struct kube_informer *inf, const char *name, const char *uid,
		       const char *rv)
{
	cJSON *o = obj(name, uid, rv);
	forget(inf, o);
	cJSON_Delete(o);
}

static void test_informer_no_repeats_no_losses(void)
{
	struct trace t = { 0 };
	struct kube_informer_opts o = { .resource = &KUBE_RES_CONFIGMAPS, .ns = "ns" };
	struct kube_informer_ops ops = { .on_event = trace_event };
	struct kube_informer *inf = kube_informer_new(NULL, &o, &ops, &t);
	REQUIRE(inf);
	inf->gen = 1;
	observe_one(inf, "a", "u-a", "10");  /* ADDED */
	observe_one(inf, "a", "u-a", "10");  /* replayed after a resume: silent */
	observe_one(inf, "a", "u-a", "11");  /* MODIFIED */
	observe_one(inf, "b", "u-b", "12");  /* ADDED */
	forget_one(inf, "b", "u-b", "13");   /* DELETED */
	forget_one(inf, "b", "u-b", "13");   /* repeated: silent */
	forget_one(inf, "zz", "u-zz", "14"); /* never known: silent */
	observe_one(inf, "a", "u-a2", "15"); /* same name, new object */
	/* a re-list at generation 2 that sees c but no longer a */
	inf->gen = 2;
	observe_one(inf, "c", "u-c", "16");
	sweep_unseen(inf);
	CHECK_INT(t.n, 8);
	CHECK_STR(t.lines[0], "ADDED ns/a 10");
	CHECK_STR(t.lines[1], "MODIFIED ns/a 11");
	CHECK_STR(t.lines[2], "ADDED ns/b 12");
	CHECK_STR(t.lines[3], "DELETED ns/b 13");
	CHECK_STR(t.lines[4], "DELETED ns/a 11");
	CHECK_STR(t.lines[5], "ADDED ns/a 15");
	CHECK_STR(t.lines[6], "ADDED ns/c 16");
	CHECK_STR(t.lines[7], "DELETED ns/a 15");
	struct kube_informer_stats st;
	kube_informer_get_stats(inf, &st);
	CHECK_INT(st.objects, 1);
	CHECK_INT(st.events, 8);
	kube_informer_free(inf);
}

static void test_informer_store_growth(void)
{
	struct trace t = { 0 };
	struct kube_informer_opts o = { .resource = &KUBE_RES_CONFIGMAPS };
	struct kube_informer_ops ops = { .on_event = trace_event };
	struct kube_informer *inf = kube_informer_new(NULL, &o, &ops, &t);
	REQUIRE(inf);
	char name[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "o%d", i);
		observe_one(inf, name, name, "1");
	}
	CHECK_INT(inf->store.count, 5000);
	for (int i = 0; i < 5000; i += 2) {
		snprintf(name, sizeof(name), "o%d", i);
		forget_one(inf, name, name, "2");
	}
	CHECK_INT(inf->store.count, 2500);
	CHECK(store_find(&inf->store, "ns/o1") != NULL);
	CHECK(store_find(&inf->store, "ns/o2") == NULL);
	CHECK_INT(t.n, 7500);
	kube_informer_free(inf);
}

int main(void)
{
	RUN(test_recorded_whole);
	RUN(test_recorded_split_everywhere);
	RUN(test_tricky_strings);
	RUN(test_malformed);
	RUN(test_oversized);
	RUN(test_callback_stops);
	RUN(test_informer_no_repeats_no_losses);
	RUN(test_informer_store_growth);
	free(recorded);
	return test_summary();
}
