/*
 * Unit tests for controller/kube_status.c: decoding of metav1.Status answers
 * recorded from the real kube-apiserver of the test control plane
 * (tests/unit/data/status-*.json, see data/README.md), plus synthetic edge
 * cases (Retry-After, non-JSON bodies, watch ERROR events).
 */
#include "kube_status.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>

static char *load(const char *name, size_t *len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", SBX_TEST_DATA, name);
	char *data = NULL;
	if (read_file_bounded(path, 1 << 20, &data, len) != 0) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	return data;
}

static void decode_file(const char *name, long http, const char *retry_after,
			struct kube_error *err)
{
	size_t len;
	char *body = load(name, &len);
	kube_status_decode(http, body, len, retry_after, err);
	free(body);
}

static void test_recorded(void)
{
	struct kube_error e;
	decode_file("status-notfound.json", 404, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_NOT_FOUND);
	CHECK_STR(e.reason, "NotFound");
	CHECK(strstr(e.message, "not found") != NULL);
	CHECK_INT(e.http_status, 404);
	CHECK_INT(e.retry_after_s, -1);

	decode_file("status-alreadyexists.json", 409, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_ALREADY_EXISTS);
	CHECK_STR(e.reason, "AlreadyExists");

	decode_file("status-conflict.json", 409, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_CONFLICT);
	CHECK_STR(e.reason, "Conflict");

	decode_file("status-invalid.json", 422, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_INVALID);
	CHECK_STR(e.reason, "Invalid");
	CHECK(e.ncauses >= 1);
	CHECK(e.causes[0].field[0] != '\0');
	CHECK(e.causes[0].reason[0] != '\0');

	decode_file("status-forbidden.json", 403, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_FORBIDDEN);
	CHECK_STR(e.reason, "Forbidden");
	CHECK(strstr(e.message, "cannot") != NULL);

	decode_file("status-unauthorized.json", 401, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_UNAUTHORIZED);

	decode_file("status-podsecurity.json", 403, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_FORBIDDEN);
	CHECK(strstr(e.message, "PodSecurity") != NULL);
}

static void test_watch_error_event(void)
{
	size_t len;
	char *text = load("watch-error-gone.json", &len);
	cJSON *ev = cJSON_ParseWithLength(text, len);
	free(text);
	REQUIRE(ev);
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
	struct kube_error e;
	CHECK_INT(kube_status_from_json(obj, &e), KUBE_ERR_GONE);
	CHECK_INT(e.http_status, 410);
	CHECK(strstr(e.message, "too old") != NULL);
	cJSON_Delete(ev);

	CHECK_INT(kube_status_from_json(NULL, &e), KUBE_ERR_PROTOCOL);
	cJSON *ok = cJSON_Parse("{\"kind\":\"Status\",\"code\":200}");
	CHECK_INT(kube_status_from_json(ok, &e), KUBE_ERR_PROTOCOL); /* an ERROR is never OK */
	cJSON_Delete(ok);
}

static void test_retry_after(void)
{
	/* The shape apimachinery's NewTooManyRequests produces. */
	const char *body = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
			   "\"message\":\"Too many requests, please try again later.\","
			   "\"reason\":\"TooManyRequests\",\"details\":{\"retryAfterSeconds\":3},"
			   "\"code\":429}";
	struct kube_error e;
	kube_status_decode(429, body, strlen(body), NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_TOO_MANY_REQUESTS);
	CHECK_INT(e.retry_after_s, 3);
	/* the header wins over the body */
	kube_status_decode(429, body, strlen(body), " 7", &e);
	CHECK_INT(e.retry_after_s, 7);
	/* absurd values are capped, dates become a short wait */
	kube_status_decode(429, NULL, 0, "99999999999", &e);
	CHECK_INT(e.retry_after_s, 3600);
	kube_status_decode(429, NULL, 0, "Wed, 21 Oct 2015 07:28:00 GMT", &e);
	CHECK_INT(e.retry_after_s, 1);
}

static void test_mapping(void)
{
	struct kube_error e;
	kube_status_decode(504, "{\"kind\":\"Status\",\"reason\":\"Timeout\",\"code\":504}", 48,
			   NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_TIMEOUT);
	kube_status_decode(500, "{\"kind\":\"Status\",\"reason\":\"InternalError\"}", 42, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_SERVER);
	kube_status_decode(410, "{\"kind\":\"Status\",\"reason\":\"Expired\"}", 36, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_GONE);
	kube_status_decode(400, NULL, 0, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_BAD_REQUEST);
	CHECK_STR(e.message, "HTTP 400");
	kube_status_decode(418, NULL, 0, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_BAD_REQUEST);
	kube_status_decode(302, NULL, 0, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_PROTOCOL);
	kube_status_decode(503, NULL, 0, NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_SERVER);
	/* a proxy's HTML page: status mapped, message printable and bounded */
	char html[2000];
	memset(html, 'x', sizeof(html));
	memcpy(html, "<html>\x01\x02", 8);
	kube_status_decode(502, html, sizeof(html), NULL, &e);
	CHECK_INT(e.code, KUBE_ERR_SERVER);
	CHECK(strlen(e.message) <= 200);
	CHECK(strncmp(e.message, "<html>  ", 8) == 0);
	/* a Status with more causes than we keep, and non-object causes */
	struct kube_error e2;
	cJSON *st = cJSON_Parse("{\"kind\":\"Status\",\"code\":422,\"reason\":\"Invalid\","
				"\"details\":{\"causes\":[1,2,{},{},{},{},{},{},{},{},{},{}]}}");
	char *s = cJSON_PrintUnformatted(st);
	kube_status_decode(422, s, strlen(s), NULL, &e2);
	CHECK_INT(e2.ncauses, KUBE_MAX_CAUSES);
	free(s);
	cJSON_Delete(st);
	/* every code has a stable name */
	for (int c = KUBE_OK; c >= KUBE_ERR_CANCELLED; c--)
		CHECK(strcmp(kube_strerror((enum kube_err)c), "unknown") != 0);
	CHECK_STR(kube_strerror(KUBE_ERR_NOT_FOUND), "not_found");
}

/* Numbers a hostile body can hold: far beyond any integer type, fractions,
 * infinity (cJSON reads 1e999 as inf). A CI fuzz run found the status code
 * 406666666666666666666666666666666663 converted to long without a check. */
static void test_out_of_range_numbers(void)
{
	static const char *const codes[] = { "406666666666666666666666666666666663", "-1e300",
					     "1e999", "404.5", "-404" };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		char body[160];
		snprintf(body, sizeof(body), "{\"kind\":\"Status\",\"code\":%s,"
			 "\"details\":{\"retryAfterSeconds\":%s}}", codes[i], codes[i]);
		cJSON *st = cJSON_Parse(body);
		CHECK(st != NULL);
		struct kube_error e;
		kube_status_from_json(st, &e);
		CHECK_INT(e.http_status, 500);
		CHECK(e.code != KUBE_OK);
		CHECK(e.retry_after_s <= 3600);
		cJSON_Delete(st);
		kube_status_decode(400, body, strlen(body), NULL, &e);
		CHECK(e.retry_after_s <= 3600);
	}

	int64_t v = -7;
	CHECK(double_as_i64(0.0, 0, 10, &v) && v == 0);
	CHECK(double_as_i64(-3.0, -5, 10, &v) && v == -3);
	CHECK(double_as_i64(9007199254740992.0, 0, INT64_MAX, &v) && v == 9007199254740992LL);
	CHECK(double_as_i64(-0x1p63, INT64_MIN, 0, &v) && v == INT64_MIN);
	v = 42;
	CHECK(!double_as_i64(0x1p63, INT64_MIN, INT64_MAX, &v));
	CHECK(!double_as_i64(1e30, INT64_MIN, INT64_MAX, &v));
	CHECK(!double_as_i64(-1e30, INT64_MIN, INT64_MAX, &v));
	CHECK(!double_as_i64(1.5, 0, 10, &v));
	CHECK(!double_as_i64(HUGE_VAL, INT64_MIN, INT64_MAX, &v));
	CHECK(!double_as_i64(-HUGE_VAL, INT64_MIN, INT64_MAX, &v));
	CHECK(!double_as_i64(NAN, INT64_MIN, INT64_MAX, &v));
	CHECK(!double_as_i64(11.0, 0, 10, &v));
	CHECK(!double_as_i64(-1.0, 0, 10, &v));
	CHECK_INT(v, 42); /* untouched when refused */
}

int main(void)
{
	RUN(test_recorded);
	RUN(test_watch_error_event);
	RUN(test_retry_after);
	RUN(test_mapping);
	RUN(test_out_of_range_numbers);
	return test_summary();
}
