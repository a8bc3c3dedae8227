/*
 * Unit tests for api/audit.c: every line written by these tests is parsed
 * back with cJSON and its keys checked against the closed list a record may
 * hold; fields and their absence; the three argv modes; escaping, invalid
 * UTF-8 and truncation; secrets kept out; 10,000 records from 8 threads;
 * reopening for rotation; write errors.
 */
#include "audit.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/*
 * The event has no field for a token, key, JWT, header or env value. This
 * pins its layout: if it fails to compile, a field was added. Make sure the
 * new field can never carry a secret, then update this copy, the key list
 * below and the docs.
 */
struct audit_event_pinned {
	const char *request_id;
	const char *principal_id;
	const char *principal_kind;
	const char *tenant;
	const char *client_addr;
	const char *action;
	const char *sandbox_id;
	char *const *argv;
	size_t argc;
	enum audit_outcome outcome;
	int status;
	const char *reason;
	int64_t duration_ms;
};
_Static_assert(sizeof(struct audit_event) == sizeof(struct audit_event_pinned),
	       "struct audit_event changed: review it for secrets");
#define PIN(f)                                                                \
	_Static_assert(offsetof(struct audit_event, f) ==                     \
			       offsetof(struct audit_event_pinned, f),        \
		       "struct audit_event changed: " #f)
PIN(request_id);
PIN(principal_id);
PIN(principal_kind);
PIN(tenant);
PIN(client_addr);
PIN(action);
PIN(sandbox_id);
PIN(argv);
PIN(argc);
PIN(outcome);
PIN(status);
PIN(reason);
PIN(duration_ms);

/* Every key a line may hold. */
static const char *const line_keys[] = {
	"time", "type", "request_id", "principal", "tenant", "client_addr", "action",
	"sandbox", "argc", "argv", "program", "argv_sha256", "argv_truncated",
	"outcome", "status", "reason", "duration_ms",
};

static char tmpdir[64];
static int nfile;

static void new_path(char *out, size_t n)
{
	snprintf(out, n, "%s/audit-%d.log", tmpdir, nfile++);
}

static struct audit *open_file(const char *path, enum audit_argv_mode mode)
{
	char err[256] = "";
	struct audit_opts o = { .destination = path, .argv_mode = mode };
	struct audit *a = audit_new(&o, err, sizeof(err));
	if (!a)
		fprintf(stderr, "audit_new: %s\n", err);
	return a;
}

static char *slurp(const char *path)
{
	char *text = NULL;
	size_t len;
	if (read_file_bounded(path, 256u << 20, &text, &len) != 0)
		return NULL;
	return text;
}

static bool known_key(const char *k)
{
	for (size_t i = 0; i < ARRAY_SIZE(line_keys); i++)
		if (strcmp(k, line_keys[i]) == 0)
			return true;
	return false;
}

/* Parse every line of path; checks that each is one valid JSON object with
 * only known keys and type "audit". Returns the lines as a cJSON array
 * (caller deletes), NULL when the file cannot be read. */
static cJSON *parse_lines(const char *path)
{
	char *text = slurp(path);
	if (!text)
		return NULL;
	cJSON *arr = cJSON_CreateArray();
	char *p = text;
	while (*p) {
		char *nl = strchr(p, '\n');
		if (!nl) {
			t_failed++;
			fprintf(stderr, "[%s] unterminated line: %.80s\n", t_current, p);
			break;
		}
		*nl = '\0';
		if ((size_t)(nl - p) + 1 > AUDIT_LINE_MAX) {
			t_failed++;
			fprintf(stderr, "[%s] line of %zu bytes\n", t_current, (size_t)(nl - p));
		}
		const char *end = NULL;
		cJSON *o = cJSON_ParseWithOpts(p, &end, 1);
		if (!o || !cJSON_IsObject(o)) {
			t_failed++;
			fprintf(stderr, "[%s] not a JSON object: %.200s\n", t_current, p);
			cJSON_Delete(o);
		} else {
			for (cJSON *k = o->child; k; k = k->next) {
				if (!known_key(k->string)) {
					t_failed++;
					fprintf(stderr, "[%s] unknown key \"%s\"\n", t_current,
						k->string);
				}
			}
			const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
			if (!cJSON_IsString(type) || strcmp(type->valuestring, "audit") != 0) {
				t_failed++;
				fprintf(stderr, "[%s] no type audit\n", t_current);
			}
			cJSON_AddItemToArray(arr, o);
		}
		p = nl + 1;
	}
	free(text);
	return arr;
}

static const char *str_of(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long num_of(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? (long long)v->valuedouble : -999;
}

static bool has(const cJSON *o, const char *k)
{
	return cJSON_GetObjectItemCaseSensitive(o, k) != NULL;
}

static bool file_contains(const char *path, const char *needle)
{
	char *text = slurp(path);
	bool found = text && strstr(text, needle) != NULL;
	free(text);
	return found;
}

/* ---- tests ---- */

static void test_fields(void)
{
	char path[128];
	new_path(path, sizeof(path));
	struct audit *a = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(a);
	char *argv[] = { "python3", "-c", "print(1)" };
	struct audit_event e = {
		.request_id = "req-1",
		.principal_id = "key:k1",
		.principal_kind = "api_key",
		.tenant = "acme",
		.client_addr = "203.0.113.9",
		.action = AUDIT_EXEC,
		.sandbox_id = "sb-1a2b",
		.argv = argv,
		.argc = 3,
		.outcome = AUDIT_SUCCESS,
		.status = 200,
		.duration_ms = 42,
	};
	audit_record(a, &e);
	/* only what is there */
	audit_record(a, &(struct audit_event){ .action = AUDIT_SANDBOX_EXPIRE,
					       .sandbox_id = "sb-9",
					       .principal_kind = "system",
					       .outcome = AUDIT_SUCCESS });
	audit_record(a, &(struct audit_event){ .action = AUDIT_AUTH_FAILURE,
					       .client_addr = "198.51.100.7",
					       .request_id = "req-2",
					       .outcome = AUDIT_DENIED,
					       .status = 401,
					       .reason = "unknown_key",
					       .duration_ms = -1 });
	audit_record(a, &(struct audit_event){ 0 });
	audit_record(a, NULL);     /* ignored */
	audit_record(NULL, &e);    /* audit off */
	struct audit_stats st;
	audit_get_stats(a, &st);
	CHECK_INT(st.records, 4);
	CHECK_INT(st.failures, 0);
	audit_free(a);

	cJSON *lines = parse_lines(path);
	REQUIRE(lines);
	REQUIRE(cJSON_GetArraySize(lines) == 4);
	const cJSON *l = cJSON_GetArrayItem(lines, 0);
	const char *t = str_of(l, "time");
	REQUIRE(t);
	CHECK_INT(strlen(t), 24); /* 2025-05-01T12:00:00.123Z */
	CHECK(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
	CHECK_STR(str_of(l, "request_id"), "req-1");
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(l, "principal");
	CHECK_STR(str_of(pr, "id"), "key:k1");
	CHECK_STR(str_of(pr, "kind"), "api_key");
	CHECK_INT(cJSON_GetArraySize(pr), 2);
	CHECK_STR(str_of(l, "tenant"), "acme");
	CHECK_STR(str_of(l, "client_addr"), "203.0.113.9");
	CHECK_STR(str_of(l, "action"), "exec");
	CHECK_STR(str_of(l, "sandbox"), "sb-1a2b");
	CHECK_INT(num_of(l, "argc"), 3);
	const cJSON *av = cJSON_GetObjectItemCaseSensitive(l, "argv");
	CHECK(cJSON_IsArray(av) && cJSON_GetArraySize(av) == 3);
	for (int i = 0; i < 3; i++)
		CHECK_STR(cJSON_GetArrayItem(av, i)->valuestring, argv[i]);
	CHECK(!has(l, "argv_truncated"));
	CHECK_STR(str_of(l, "outcome"), "success");
	CHECK_INT(num_of(l, "status"), 200);
	CHECK_INT(num_of(l, "duration_ms"), 42);
	CHECK(!has(l, "reason"));
	CHECK_INT(cJSON_GetArraySize((cJSON *)l), 13);

	l = cJSON_GetArrayItem(lines, 1);
	CHECK_STR(str_of(l, "action"), "sandbox.expire");
	pr = cJSON_GetObjectItemCaseSensitive(l, "principal");
	CHECK_STR(str_of(pr, "kind"), "system");
	CHECK_INT(cJSON_GetArraySize(pr), 1);
	CHECK(!has(l, "request_id") && !has(l, "tenant") && !has(l, "argc") &&
	      !has(l, "argv") && !has(l, "status") && !has(l, "duration_ms") &&
	      !has(l, "client_addr") && !has(l, "reason"));
	CHECK_INT(cJSON_GetArraySize((cJSON *)l), 6);

	l = cJSON_GetArrayItem(lines, 2);
	CHECK_STR(str_of(l, "action"), "auth.failure");
	CHECK_STR(str_of(l, "outcome"), "denied");
	CHECK_STR(str_of(l, "reason"), "unknown_key");
	CHECK_INT(num_of(l, "status"), 401);
	CHECK_INT(num_of(l, "duration_ms"), -1);
	CHECK(!has(l, "principal"));

	l = cJSON_GetArrayItem(lines, 3);
	CHECK_INT(cJSON_GetArraySize((cJSON *)l), 2); /* time and type */
	cJSON_Delete(lines);
}

static void sha256_hex(const void *p, size_t n, char hex[65])
{
	unsigned char md[32];
	unsigned int len = 0;
	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static void test_argv_modes(void)
{
	static const char secret[] = "hunter2-S3CRET-in-argv";
	char *argv[] = { "/usr/bin/mysql", "-p", (char *)secret, "db" };
	char *empty_str[] = { "" };
	static const enum audit_argv_mode modes[] = { AUDIT_ARGV_FULL, AUDIT_ARGV_REDACTED,
						      AUDIT_ARGV_HASHED };
	for (size_t m = 0; m < ARRAY_SIZE(modes); m++) {
		char path[128];
		new_path(path, sizeof(path));
		struct audit *a = open_file(path, modes[m]);
		REQUIRE(a);
		audit_record(a, &(struct audit_event){ .action = "exec", .argv = argv, .argc = 4 });
		audit_record(a, &(struct audit_event){ .action = "exec", .argv = argv, .argc = 0 });
		audit_record(a, &(struct audit_event){ .action = "exec", .argv = empty_str, .argc = 1 });
		audit_free(a);
		cJSON *lines = parse_lines(path);
		REQUIRE(lines && cJSON_GetArraySize(lines) == 3);
		const cJSON *l0 = cJSON_GetArrayItem(lines, 0);
		const cJSON *l1 = cJSON_GetArrayItem(lines, 1);
		const cJSON *l2 = cJSON_GetArrayItem(lines, 2);
		CHECK_INT(num_of(l0, "argc"), 4);
		CHECK_INT(num_of(l1, "argc"), 0);
		CHECK_INT(num_of(l2, "argc"), 1);
		if (modes[m] == AUDIT_ARGV_FULL) {
			CHECK(file_contains(path, secret)); /* full is full */
			CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(l0, "argv")), 4);
			CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(l1, "argv")), 0);
			CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(l2, "argv")), 1);
			CHECK(!has(l0, "program") && !has(l0, "argv_sha256"));
		} else if (modes[m] == AUDIT_ARGV_REDACTED) {
			CHECK(!file_contains(path, secret));
			CHECK(!file_contains(path, "\"db\""));
			CHECK_STR(str_of(l0, "program"), "/usr/bin/mysql");
			CHECK(!has(l1, "program"));
			CHECK_STR(str_of(l2, "program"), "");
			CHECK(!has(l0, "argv") && !has(l0, "argv_sha256"));
		} else {
			CHECK(!file_contains(path, secret));
			CHECK(!file_contains(path, "mysql"));
			char want[65];
			static const char joined[] = "/usr/bin/mysql\0-p\0hunter2-S3CRET-in-argv\0db";
			sha256_hex(joined, sizeof(joined) - 1, want);
			CHECK_STR(str_of(l0, "argv_sha256"), want);
			sha256_hex("", 0, want);
			/* [] and [""] hash alike; argc tells them apart */
			CHECK_STR(str_of(l1, "argv_sha256"), want);
			CHECK_STR(str_of(l2, "argv_sha256"), want);
			CHECK(!has(l0, "argv") && !has(l0, "program"));
		}
		cJSON_Delete(lines);
	}
}

static void test_escaping(void)
{
	char path[128];
	new_path(path, sizeof(path));
	struct audit *a = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(a);
	char *argv[] = { "sh", "-c", "echo \"a\\b\"\n\ttab\x01\x7f end", "caf\xc3\xa9 \xe2\x82\xac" };
	audit_record(a, &(struct audit_event){
				.tenant = "t\"}\n{\"injected\":1",
				.sandbox_id = "bad\xff\xfeutf8\xc3",
				.client_addr = "\xed\xa0\x80surrogate",
				.argv = argv,
				.argc = 4 });
	audit_free(a);
	cJSON *lines = parse_lines(path);
	REQUIRE(lines && cJSON_GetArraySize(lines) == 1);
	const cJSON *l = cJSON_GetArrayItem(lines, 0);
	CHECK_STR(str_of(l, "tenant"), "t\"}\n{\"injected\":1");
	CHECK(!has(l, "injected"));
	CHECK_STR(str_of(l, "sandbox"), "bad\xef\xbf\xbd\xef\xbf\xbdutf8\xef\xbf\xbd");
	CHECK_STR(str_of(l, "client_addr"),
		  "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdsurrogate");
	const cJSON *av = cJSON_GetObjectItemCaseSensitive(l, "argv");
	CHECK_STR(cJSON_GetArrayItem(av, 2)->valuestring, argv[2]);
	CHECK_STR(cJSON_GetArrayItem(av, 3)->valuestring, argv[3]);
	cJSON_Delete(lines);
	/* one line only: the raw newline never reached the file */
	char *text = slurp(path);
	REQUIRE(text);
	CHECK(strchr(text, '\n') == text + strlen(text) - 1);
	free(text);
}

static void test_codes(void)
{
	char path[128];
	new_path(path, sizeof(path));
	struct audit *a = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(a);
	static const char token[] = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
	audit_record(a, &(struct audit_event){ .action = "auth.failure", .reason = token,
					       .principal_kind = "JWT Bearer" });
	audit_record(a, &(struct audit_event){ .action = "Exec; rm -rf /", .reason = "",
					       .principal_id = "sub-1" });
	char long_code[100];
	memset(long_code, 'a', sizeof(long_code) - 1);
	long_code[sizeof(long_code) - 1] = '\0';
	audit_record(a, &(struct audit_event){ .action = long_code,
					       .reason = "bad_signature" });
	audit_free(a);
	CHECK(!file_contains(path, "eyJ"));
	CHECK(!file_contains(path, "Bearer"));
	cJSON *lines = parse_lines(path);
	REQUIRE(lines && cJSON_GetArraySize(lines) == 3);
	const cJSON *l = cJSON_GetArrayItem(lines, 0);
	CHECK_STR(str_of(l, "reason"), "invalid");
	CHECK_STR(str_of(cJSON_GetObjectItem(l, "principal"), "kind"), "invalid");
	l = cJSON_GetArrayItem(lines, 1);
	CHECK_STR(str_of(l, "action"), "invalid");
	CHECK_STR(str_of(l, "reason"), "invalid");
	CHECK_STR(str_of(cJSON_GetObjectItem(l, "principal"), "id"), "sub-1");
	l = cJSON_GetArrayItem(lines, 2);
	CHECK_STR(str_of(l, "action"), "invalid");
	CHECK_STR(str_of(l, "reason"), "bad_signature");
	cJSON_Delete(lines);
	CHECK_STR(audit_outcome_name(AUDIT_FAILURE), "failure");
	CHECK(audit_outcome_name(AUDIT_OUTCOME_NONE) == NULL);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void test_truncation(void)
{
	char path[128];
	new_path(path, sizeof(path));
	struct audit *a = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(a);
	/* 100 KB fields, each byte escaping to 6 */
	size_t big = 100000;
	char *ctl = malloc(big + 1);
	char *plain = malloc(big + 1);
	REQUIRE(ctl && plain);
	memset(ctl, '\x01', big);
	ctl[big] = '\0';
	memset(plain, 'x', big);
	plain[big] = '\0';
	char *many[200];
	for (int i = 0; i < 200; i++)
		many[i] = i % 2 ? ctl : plain;
	struct audit_event worst = {
		.request_id = ctl, .principal_id = ctl, .principal_kind = ctl,
		.tenant = ctl, .client_addr = ctl, .action = ctl, .sandbox_id = ctl,
		.argv = many, .argc = 200, .outcome = AUDIT_FAILURE, .status = 599,
		.reason = ctl, .duration_ms = INT64_MAX,
	};
	audit_record(a, &worst);
	/* a multi-byte character is never cut in half */
	char *euro = malloc(3 * 200 + 1);
	REQUIRE(euro);
	for (int i = 0; i < 200; i++)
		memcpy(euro + 3 * i, "\xe2\x82\xac", 3);
	euro[600] = '\0';
	char *one[] = { plain };
	audit_record(a, &(struct audit_event){ .tenant = euro, .argv = one, .argc = 1 });
	/* just at the limit: not cut */
	plain[AUDIT_FIELD_MAX] = '\0';
	audit_record(a, &(struct audit_event){ .tenant = plain });
	plain[AUDIT_FIELD_MAX] = 'x';
	plain[AUDIT_FIELD_MAX + 1] = '\0';
	audit_record(a, &(struct audit_event){ .tenant = plain });
	audit_free(a);

	cJSON *lines = parse_lines(path);
	REQUIRE(lines && cJSON_GetArraySize(lines) == 4);
	const cJSON *l = cJSON_GetArrayItem(lines, 0);
	const char *s = str_of(l, "tenant");
	REQUIRE(s);
	CHECK(ends_with(s, "...(truncated)"));
	CHECK(strlen(s) < 100);            /* 6-byte escapes: few fit in 256 */
	CHECK_INT(num_of(l, "argc"), 200);
	const cJSON *av = cJSON_GetObjectItemCaseSensitive(l, "argv");
	int n = cJSON_GetArraySize(av);
	CHECK(n > 0 && n < 200);
	CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "argv_truncated")));
	CHECK(ends_with(cJSON_GetArrayItem(av, 0)->valuestring, "...(truncated)"));
	CHECK(strlen(cJSON_GetArrayItem(av, 0)->valuestring) <= AUDIT_ARG_MAX);
	CHECK_STR(str_of(l, "action"), "invalid");
	CHECK_STR(str_of(l, "reason"), "invalid");
	l = cJSON_GetArrayItem(lines, 1);
	s = str_of(l, "tenant");
	REQUIRE(s);
	CHECK(ends_with(s, "\xe2\x82\xac...(truncated)"));
	CHECK_INT((strlen(s) - strlen("...(truncated)")) % 3, 0);
	CHECK(strlen(s) <= AUDIT_FIELD_MAX);
	CHECK(!has(l, "argv_truncated"));
	CHECK_INT(strlen(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "argv"), 0)->valuestring),
		  AUDIT_ARG_MAX);
	l = cJSON_GetArrayItem(lines, 2);
	CHECK_INT(strlen(str_of(l, "tenant")), AUDIT_FIELD_MAX);
	CHECK(!ends_with(str_of(l, "tenant"), "...(truncated)"));
	l = cJSON_GetArrayItem(lines, 3);
	CHECK_INT(strlen(str_of(l, "tenant")), AUDIT_FIELD_MAX);
	CHECK(ends_with(str_of(l, "tenant"), "...(truncated)"));
	cJSON_Delete(lines);
	free(ctl);
	free(plain);
	free(euro);
}

/* ---- 8 threads, 10,000 records ---- */

#define NTHREADS 8
#define NRECORDS 10000

struct worker {
	struct audit *a;
	int id;
	char *bigarg; /* lines over PIPE_BUF now and then */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = w->id; i < NRECORDS; i += NTHREADS) {
		char rid[32];
		snprintf(rid, sizeof(rid), "r-%d", i);
		char *b = i % 10 == 0 ? w->bigarg : "x";
		char *argv[] = { "bash", "-c", b, b, b, b };
		audit_record(w->a, &(struct audit_event){ .request_id = rid,
							  .action = "exec",
							  .tenant = "t",
							  .argv = argv,
							  .argc = 6,
							  .outcome = AUDIT_SUCCESS,
							  .status = 200,
							  .duration_ms = i + 1 });
	}
	return NULL;
}

static void test_threads(void)
{
	char path[128];
	new_path(path, sizeof(path));
	struct audit *a = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(a);
	char bigarg[1000];
	memset(bigarg, '"', sizeof(bigarg) - 1); /* escapes to 2 bytes: ~1 KiB, cut */
	bigarg[sizeof(bigarg) - 1] = '\0';
	pthread_t th[NTHREADS];
	struct worker w[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .a = a, .id = i, .bigarg = bigarg };
		REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	struct audit_stats st;
	audit_get_stats(a, &st);
	CHECK_INT(st.records, NRECORDS);
	audit_free(a);

	int before = t_failed;
	cJSON *lines = parse_lines(path);
	REQUIRE(lines);
	CHECK_INT(cJSON_GetArraySize(lines), NRECORDS);
	CHECK_INT(t_failed, before); /* every line parsed */
	static unsigned char seen[NRECORDS];
	int dup = 0, bad = 0;
	cJSON *l;
	cJSON_ArrayForEach(l, lines)
	{
		const char *rid = str_of(l, "request_id");
		int i = rid ? atoi(rid + 2) : -1;
		if (i < 0 || i >= NRECORDS || num_of(l, "duration_ms") != i + 1)
			bad++;
		else if (seen[i]++)
			dup++;
	}
	CHECK_INT(bad, 0);
	CHECK_INT(dup, 0);
	cJSON_Delete(lines);
}

static void test_reopen(void)
{
	char dir[128], path[256], rotated[160], dir2[160];
	snprintf(dir, sizeof(dir), "%s/rot", tmpdir);
	REQUIRE(mkdir(dir, 0700) == 0);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(rotated, sizeof(rotated), "%s/audit.log.1", dir);
	struct audit *a = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(a);
	struct stat sb;
	REQUIRE(stat(path, &sb) == 0);
	CHECK_INT(sb.st_mode & 0777, 0600);
	audit_record(a, &(struct audit_event){ .request_id = "before" });
	REQUIRE(rename(path, rotated) == 0);
	audit_record(a, &(struct audit_event){ .request_id = "late" }); /* still the old file */
	CHECK_INT(audit_reopen(a), 0);
	audit_record(a, &(struct audit_event){ .request_id = "after" });
	CHECK(file_contains(rotated, "\"before\""));
	CHECK(file_contains(rotated, "\"late\""));
	CHECK(!file_contains(rotated, "\"after\""));
	CHECK(file_contains(path, "\"after\""));
	CHECK(!file_contains(path, "\"before\""));
	/* appending: a second handle on the same file adds, never truncates */
	struct audit *b = open_file(path, AUDIT_ARGV_FULL);
	REQUIRE(b);
	audit_record(b, &(struct audit_event){ .request_id = "second" });
	audit_free(b);
	CHECK(file_contains(path, "\"after\""));
	CHECK(file_contains(path, "\"second\""));
	/* reopen failing (the directory is gone): the old file is kept */
	snprintf(dir2, sizeof(dir2), "%s/rot-moved", tmpdir);
	REQUIRE(rename(dir, dir2) == 0);
	CHECK_INT(audit_reopen(a), -ENOENT);
	audit_record(a, &(struct audit_event){ .request_id = "kept" });
	snprintf(path, sizeof(path), "%s/audit.log", dir2);
	CHECK(file_contains(path, "\"kept\""));
	struct audit_stats st;
	audit_get_stats(a, &st);
	CHECK_INT(st.records, 4);
	audit_free(a);
	/* stdout and stderr: nothing to reopen */
	char err[128];
	struct audit *o = audit_new(&(struct audit_opts){ .destination = "stderr" }, err,
				    sizeof(err));
	REQUIRE(o);
	CHECK_INT(audit_reopen(o), 0);
	audit_free(o);
	o = audit_new(NULL, err, sizeof(err));
	REQUIRE(o);
	CHECK_INT(audit_reopen(o), 0);
	audit_free(o);
	CHECK_INT(audit_reopen(NULL), 0);
	audit_free(NULL);
}

static void test_errors(void)
{
	char err[256] = "";
	char path[160];
	snprintf(path, sizeof(path), "%s/no/such/dir/audit.log", tmpdir);
	CHECK(audit_new(&(struct audit_opts){ .destination = path }, err, sizeof(err)) == NULL);
	char want[300];
	snprintf(want, sizeof(want), "audit: cannot open \"%s\": %s", path, strerror(ENOENT));
	CHECK_STR(err, want);
	CHECK(audit_new(&(struct audit_opts){ .destination = tmpdir }, err, sizeof(err)) == NULL);
	CHECK(audit_new(&(struct audit_opts){ .argv_mode = (enum audit_argv_mode)7 }, err,
			sizeof(err)) == NULL);
	CHECK_STR(err, "audit: unknown argv mode 7");
	/* writes failing: counted, the caller never sees it */
	struct audit *a = audit_new(&(struct audit_opts){ .destination = "/dev/full" }, err,
				    sizeof(err));
	REQUIRE(a);
	int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
	REQUIRE(saved >= 0 && devnull >= 0);
	dup2(devnull, 2); /* the one error log line */
	audit_record(a, &(struct audit_event){ .action = "exec" });
	audit_record(a, &(struct audit_event){ .action = "exec" });
	dup2(saved, 2);
	close(saved);
	close(devnull);
	struct audit_stats st;
	audit_get_stats(a, &st);
	CHECK_INT(st.records, 0);
	CHECK_INT(st.failures, 2);
	audit_free(a);
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_audit.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_fields);
	RUN(test_argv_modes);
	RUN(test_escaping);
	RUN(test_codes);
	RUN(test_truncation);
	RUN(test_threads);
	RUN(test_reopen);
	RUN(test_errors);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return test_summary();
}
