/*
 * Unit tests for api/router.c: a table of (method, path) cases against the
 * v1 routes plus a few shapes chosen to exercise precedence, parameters,
 * the trailing-slash policy, 405 + Allow, and every BAD_PATH rule.
 */
#include "router.h"
#include "test.h"

enum {
	R_LIST = 1, R_CREATE, R_GET, R_DELETE, R_TIMEOUT, R_TEMPLATES, R_HEALTHZ,
	R_SEARCH, R_FILE, R_ROOT, R_FOUR, R_FIVE, R_OPTIONS_X, R_HEAD_X,
	R_PUT_X, R_BAD1, R_BAD2, R_GET_X,
};

static const struct route routes[] = {
	{ "GET", "/v1/sandboxes", R_LIST },
	{ "POST", "/v1/sandboxes", R_CREATE },
	{ "GET", "/v1/sandboxes/{id}", R_GET },
	{ "DELETE", "/v1/sandboxes/{id}", R_DELETE },
	{ "POST", "/v1/sandboxes/{id}/timeout", R_TIMEOUT },
	{ "GET", "/v1/templates", R_TEMPLATES },
	{ "GET", "/healthz", R_HEALTHZ },
	/* a literal next to a parameter: the literal wins whatever the order */
	{ "GET", "/v1/sandboxes/search", R_SEARCH },
	{ "GET", "/v1/sandboxes/{id}/files/{path}", R_FILE },
	{ "GET", "/", R_ROOT },
	{ "GET", "/p/{a}/{b}/{c}/{d}", R_FOUR },
	/* more parameters than ROUTER_MAX_PARAMS: never matches */
	{ "GET", "/q/{a}/{b}/{c}/{d}/{e}", R_FIVE },
	{ "OPTIONS", "/x", R_OPTIONS_X },
	{ "HEAD", "/x", R_HEAD_X },
	{ "PUT", "/x", R_PUT_X },
	{ "GET", "/x", R_GET_X },
	/* malformed patterns never match */
	{ "GET", "/bad/{id", R_BAD1 },
	{ "GET", "/bad2/{}", R_BAD2 },
};

struct tcase {
	const char *method;
	const char *path;
	enum router_result rc;
	int id;
	const char *params; /* "name=value;name=value" */
	const char *allow;
};

static const struct tcase cases[] = {
	/* plain matches */
	{ "GET", "/v1/sandboxes", ROUTER_MATCH, R_LIST, "", NULL },
	{ "POST", "/v1/sandboxes", ROUTER_MATCH, R_CREATE, "", NULL },
	{ "GET", "/v1/sandboxes/sb-abc123", ROUTER_MATCH, R_GET, "id=sb-abc123", NULL },
	{ "DELETE", "/v1/sandboxes/sb-abc123", ROUTER_MATCH, R_DELETE, "id=sb-abc123", NULL },
	{ "POST", "/v1/sandboxes/x/timeout", ROUTER_MATCH, R_TIMEOUT, "id=x", NULL },
	{ "GET", "/v1/templates", ROUTER_MATCH, R_TEMPLATES, "", NULL },
	{ "GET", "/healthz", ROUTER_MATCH, R_HEALTHZ, "", NULL },
	{ "GET", "/", ROUTER_MATCH, R_ROOT, "", NULL },
	/* precedence: literal beats parameter; the parameter still serves others */
	{ "GET", "/v1/sandboxes/search", ROUTER_MATCH, R_SEARCH, "", NULL },
	{ "DELETE", "/v1/sandboxes/search", ROUTER_MATCH, R_DELETE, "id=search", NULL },
	/* two parameters; decoded values are passed through as they are */
	{ "GET", "/v1/sandboxes/a/files/b", ROUTER_MATCH, R_FILE, "id=a;path=b", NULL },
	{ "GET", "/v1/sandboxes/s b/files/%2F", ROUTER_MATCH, R_FILE, "id=s b;path=%2F", NULL },
	{ "GET", "/v1/sandboxes/\xc3\xa9t\xc3\xa9", ROUTER_MATCH, R_GET, "id=\xc3\xa9t\xc3\xa9", NULL },
	{ "GET", "/v1/sandboxes/.hidden", ROUTER_MATCH, R_GET, "id=.hidden", NULL },
	{ "GET", "/v1/sandboxes/...", ROUTER_MATCH, R_GET, "id=...", NULL },
	{ "GET", "/p/1/2/3/4", ROUTER_MATCH, R_FOUR, "a=1;b=2;c=3;d=4", NULL },
	/* HEAD uses GET routes unless it has its own; OPTIONS only its own */
	{ "HEAD", "/v1/sandboxes/abc", ROUTER_MATCH, R_GET, "id=abc", NULL },
	{ "HEAD", "/x", ROUTER_MATCH, R_HEAD_X, "", NULL },
	{ "OPTIONS", "/x", ROUTER_MATCH, R_OPTIONS_X, "", NULL },
	{ "OPTIONS", "/v1/sandboxes", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, POST" },
	/* 405 with Allow in canonical order */
	{ "PUT", "/v1/sandboxes", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, POST" },
	{ "PATCH", "/v1/sandboxes/abc", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, DELETE" },
	{ "GET", "/v1/sandboxes/abc/timeout", ROUTER_METHOD_NOT_ALLOWED, -1, "", "POST" },
	{ "POST", "/v1/sandboxes/search", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, DELETE" },
	{ "DELETE", "/x", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, PUT, OPTIONS" },
	{ "post", "/v1/sandboxes", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, POST" },
	{ NULL, "/v1/sandboxes", ROUTER_METHOD_NOT_ALLOWED, -1, "", "GET, HEAD, POST" },
	/* not found */
	{ "GET", "/v1", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/v2/sandboxes", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/V1/sandboxes", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/v1/sandboxes/a/b", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/v1/sandboxesx", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/v1/sandboxes/a/timeoutx", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/q/1/2/3/4/5", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/bad/{id", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/bad/x", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/bad2/x", ROUTER_NOT_FOUND, -1, "", NULL },
	/* trailing slash: not stripped, so nothing matches */
	{ "GET", "/v1/sandboxes/", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/v1/sandboxes/abc/", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "POST", "/v1/sandboxes/abc/timeout/", ROUTER_NOT_FOUND, -1, "", NULL },
	{ "GET", "/healthz/", ROUTER_NOT_FOUND, -1, "", NULL },
	/* bad paths */
	{ "GET", "", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", NULL, ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "v1/sandboxes", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "//", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1//sandboxes", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "//v1/sandboxes", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes//", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes/..", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes/.", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/../v1/sandboxes", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/./v1/sandboxes", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/..", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes/a\nb", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes/a\tb", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes/a\x7f", ROUTER_BAD_PATH, -1, "", NULL },
	{ "GET", "/v1/sandboxes/a\x01", ROUTER_BAD_PATH, -1, "", NULL },
	{ "DELETE", "/nowhere/..", ROUTER_BAD_PATH, -1, "", NULL },
};

/* Check m's parameters against "a=1;b=2". */
static void check_params(const struct tcase *tc, const struct route_match *m)
{
	char want[256];
	snprintf(want, sizeof(want), "%s", tc->params);
	size_t n = 0;
	for (char *save = NULL, *kv = strtok_r(want, ";", &save); kv;
	     kv = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(kv, '=');
		*eq = '\0';
		const char *got = route_param(m, kv);
		if (!got || strcmp(got, eq + 1) != 0) {
			t_failed++;
			fprintf(stderr, "[%s %s] param %s is \"%s\", expected \"%s\"\n",
				tc->method, tc->path, kv, got ? got : "(null)", eq + 1);
		} else {
			t_passed++;
		}
		n++;
	}
	CHECK_INT(m->nparams, n);
}

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *tc = &cases[i];
		struct route_match m;
		enum router_result rc = router_match(routes, sizeof(routes) / sizeof(routes[0]),
						     tc->method, tc->path, &m);
		if (rc != tc->rc || (tc->rc == ROUTER_MATCH && m.id != tc->id)) {
			t_failed++;
			fprintf(stderr, "case %zu [%s %s]: rc %d id %d, expected rc %d id %d\n",
				i, tc->method ? tc->method : "(null)",
				tc->path ? tc->path : "(null)", rc, m.id, tc->rc, tc->id);
			continue;
		}
		t_passed++;
		if (rc == ROUTER_MATCH)
			check_params(tc, &m);
		if (rc == ROUTER_METHOD_NOT_ALLOWED)
			CHECK_STR(m.allow, tc->allow);
		else
			CHECK_STR(m.allow, "");
	}
}

static void test_lengths(void)
{
	struct route_match m;
	char path[ROUTER_MAX_PATH + 8];

	/* a parameter holds up to 255 bytes */
	memcpy(path, "/v1/sandboxes/", 14);
	memset(path + 14, 'a', 255);
	path[14 + 255] = '\0';
	CHECK_INT(router_match(routes, sizeof(routes) / sizeof(routes[0]), "GET", path, &m),
		  ROUTER_MATCH);
	CHECK_INT(strlen(route_param(&m, "id")), 255);
	path[14 + 255] = 'a';
	path[14 + 256] = '\0';
	CHECK_INT(router_match(routes, sizeof(routes) / sizeof(routes[0]), "GET", path, &m),
		  ROUTER_BAD_PATH);

	/* the path as a whole: ROUTER_MAX_PATH bytes at most (5 x 201 + 19) */
	size_t n = 0;
	for (int i = 0; i < 5; i++) {
		path[n++] = '/';
		memset(path + n, 'b', 200);
		n += 200;
	}
	path[n++] = '/';
	memset(path + n, 'c', 18);
	n += 18;
	path[n] = '\0';
	CHECK_INT(strlen(path), ROUTER_MAX_PATH);
	CHECK_INT(router_match(routes, sizeof(routes) / sizeof(routes[0]), "GET", path, &m),
		  ROUTER_NOT_FOUND);
	path[n] = 'c';
	path[n + 1] = '\0';
	CHECK_INT(router_match(routes, sizeof(routes) / sizeof(routes[0]), "GET", path, &m),
		  ROUTER_BAD_PATH);
}

static void test_param_lookup(void)
{
	struct route_match m;
	CHECK_INT(router_match(routes, sizeof(routes) / sizeof(routes[0]), "GET",
			       "/v1/sandboxes/abc/files/f", &m), ROUTER_MATCH);
	CHECK_STR(route_param(&m, "id"), "abc");
	CHECK_STR(route_param(&m, "path"), "f");
	CHECK(route_param(&m, "i") == NULL);       /* prefix of a name */
	CHECK(route_param(&m, "idx") == NULL);
	CHECK(route_param(&m, "") == NULL);
	CHECK(route_param(&m, NULL) == NULL);
	CHECK(route_param(NULL, "id") == NULL);
	CHECK_INT(m.params[0].name_len, 2);
	CHECK(strncmp(m.params[0].name, "id}", 3) == 0); /* points into the pattern */

	/* a failed match leaves nothing behind */
	CHECK_INT(router_match(routes, sizeof(routes) / sizeof(routes[0]), "GET",
			       "/nope", &m), ROUTER_NOT_FOUND);
	CHECK_INT(m.nparams, 0);
	CHECK_INT(m.id, -1);
	CHECK(route_param(&m, "id") == NULL);

	/* no routes at all */
	CHECK_INT(router_match(NULL, 0, "GET", "/", &m), ROUTER_NOT_FOUND);
	CHECK_INT(router_match(routes, 0, "GET", "/..", &m), ROUTER_BAD_PATH);
}

static void test_table_order(void)
{
	/* the same routes reversed: the literal still wins */
	static const struct route rev[] = {
		{ "GET", "/v1/sandboxes/{id}/files/{path}", 3 },
		{ "GET", "/v1/sandboxes/{id}", 2 },
		{ "GET", "/v1/sandboxes/search", 1 },
		{ "GET", "/v1/{kind}/search", 4 },
	};
	struct route_match m;
	CHECK_INT(router_match(rev, 4, "GET", "/v1/sandboxes/search", &m), ROUTER_MATCH);
	CHECK_INT(m.id, 1);
	CHECK_INT(router_match(rev, 4, "GET", "/v1/others/search", &m), ROUTER_MATCH);
	CHECK_INT(m.id, 4);
	CHECK_STR(route_param(&m, "kind"), "others");
	/* the earlier segment decides: /v1/sandboxes/{id} beats /v1/{kind}/search */
	static const struct route rev2[] = {
		{ "GET", "/v1/{kind}/search", 4 },
		{ "GET", "/v1/sandboxes/{id}", 2 },
	};
	CHECK_INT(router_match(rev2, 2, "GET", "/v1/sandboxes/search", &m), ROUTER_MATCH);
	CHECK_INT(m.id, 2);
	/* duplicates: the first in the table */
	static const struct route dup[] = {
		{ "GET", "/a/{x}", 7 },
		{ "GET", "/a/{y}", 8 },
	};
	CHECK_INT(router_match(dup, 2, "GET", "/a/1", &m), ROUTER_MATCH);
	CHECK_INT(m.id, 7);
	CHECK_STR(route_param(&m, "x"), "1");
	CHECK(route_param(&m, "y") == NULL);
}

static void test_allow_unusual(void)
{
	static const struct route r[] = {
		{ "PURGE", "/c", 1 },
		{ "GET", "/c", 2 },
		{ "LINK", "/c", 3 },
		{ "PURGE", "/c", 4 },
	};
	struct route_match m;
	CHECK_INT(router_match(r, 4, "DELETE", "/c", &m), ROUTER_METHOD_NOT_ALLOWED);
	CHECK_STR(m.allow, "GET, HEAD, PURGE, LINK");
}

int main(void)
{
	RUN(test_table);
	RUN(test_lengths);
	RUN(test_param_lookup);
	RUN(test_table_order);
	RUN(test_allow_unusual);
	return test_summary();
}
