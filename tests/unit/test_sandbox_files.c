/*
 * Unit tests for controller/sandbox_files.c:
 *  - sandbox_files_resolve: accepted shapes and their normal form, every
 *    refusal with its errno value and machine code, length limits at their
 *    edges, embedded NUL (resolve_n), bad workspaces, small output buffers;
 *  - the exit code -> HTTP mapping; the argv builders;
 *  - the parsers: GET header (whole, in pieces, malformed), listings (names
 *    with newlines and spaces, non-UTF-8 names, truncation, every malformed
 *    shape), PUT's result;
 *  - the scripts themselves, run here under every POSIX shell found (dash,
 *    bash, busybox sh) in a temporary workspace: write/read/list/delete,
 *    size limits and incomplete bodies leaving nothing behind, symlinks
 *    (final component, directory components inside and outside, workspace
 *    behind a symlink), make_parents, hostile names (no injection), fifos.
 */
#include "sandbox_files.h"
#include "test.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- resolve ---- */

#define WS "/workspace"

static void ok_path(const char *in, const char *want)
{
	char out[SBX_FILES_PATH_MAX];
	const char *code = NULL;
	int rc = sandbox_files_resolve(WS, in, out, sizeof(out), &code);
	if (rc != 0)
		fprintf(stderr, "  resolve(\"%s\") = %d %s\n", in, rc, code ? code : "");
	CHECK_INT(rc, 0);
	CHECK_STR(out, want);
	CHECK_STR(code, "ok");
}

static void bad_path(const char *in, int want_rc, const char *want_code)
{
	char out[SBX_FILES_PATH_MAX];
	const char *code = NULL;
	strcpy(out, "junk");
	int rc = sandbox_files_resolve(WS, in, out, sizeof(out), &code);
	if (rc != want_rc)
		fprintf(stderr, "  resolve(\"%s\") = %d, out \"%s\"\n", in, rc, out);
	CHECK_INT(rc, want_rc);
	CHECK_STR(code, want_code);
	CHECK_STR(out, "");
}

static void test_resolve_accepts(void)
{
	ok_path("a.txt", WS "/a.txt");
	ok_path("src/pkg/mod.py", WS "/src/pkg/mod.py");
	ok_path("./a", WS "/a");
	ok_path("a/./b/.", WS "/a/b");
	ok_path("a//b///c", WS "/a/b/c");
	ok_path("a/b/", WS "/a/b");
	ok_path(".", WS);
	ok_path("./", WS);
	ok_path("./././", WS);
	ok_path(WS, WS);
	ok_path(WS "/", WS);
	ok_path(WS "//", WS);
	ok_path(WS "/.", WS);
	ok_path(WS "/a//b/./c/", WS "/a/b/c");
	/* names that only look special */
	ok_path("...", WS "/...");
	ok_path("..a", WS "/..a");
	ok_path("a..", WS "/a..");
	ok_path(".hidden", WS "/.hidden");
	ok_path("-rf", WS "/-rf");
	ok_path("a b/c d", WS "/a b/c d");
	ok_path("$(touch x)`id`;'\"*?[]", WS "/$(touch x)`id`;'\"*?[]");
	ok_path("a\\b", WS "/a\\b");
	ok_path("workspace/x", WS "/workspace/x"); /* relative, not absolute */
	/* bytes >= 0x80 pass as they are, valid UTF-8 or not */
	ok_path("caf\xc3\xa9", WS "/caf\xc3\xa9");
	ok_path("\xff\xfe", WS "/\xff\xfe");
	/* another workspace */
	char out[64];
	const char *code;
	CHECK_INT(sandbox_files_resolve("/home/user/work", "x", out, sizeof(out), &code), 0);
	CHECK_STR(out, "/home/user/work/x");
	CHECK_INT(sandbox_files_resolve("/home/user/work", "/home/user/work/y", out, sizeof(out),
					&code),
		  0);
	CHECK_STR(out, "/home/user/work/y");
	/* code may be NULL */
	CHECK_INT(sandbox_files_resolve(WS, "x", out, sizeof(out), NULL), 0);
}

static void test_resolve_rejects(void)
{
	bad_path("", -EINVAL, "invalid_path");
	/* ".." anywhere, even when the result would stay inside */
	bad_path("..", -EINVAL, "invalid_path");
	bad_path("../etc/passwd", -EINVAL, "invalid_path");
	bad_path("a/../b", -EINVAL, "invalid_path");
	bad_path("a/b/..", -EINVAL, "invalid_path");
	bad_path("a/../../..", -EINVAL, "invalid_path");
	bad_path("./..", -EINVAL, "invalid_path");
	bad_path("a//..//b", -EINVAL, "invalid_path");
	bad_path(WS "/..", -EINVAL, "invalid_path");
	bad_path(WS "/../etc", -EINVAL, "invalid_path");
	bad_path(WS "/a/../b", -EINVAL, "invalid_path");
	/* control characters */
	bad_path("a\nb", -EINVAL, "invalid_path");
	bad_path("a\rb", -EINVAL, "invalid_path");
	bad_path("\t", -EINVAL, "invalid_path");
	bad_path("a\x01", -EINVAL, "invalid_path");
	bad_path("a\x1f", -EINVAL, "invalid_path");
	bad_path("a\x7f", -EINVAL, "invalid_path");
	bad_path(WS "/\x1b[31m", -EINVAL, "invalid_path");
	/* absolute, outside */
	bad_path("/", -EPERM, "path_outside_workspace");
	bad_path("/etc/passwd", -EPERM, "path_outside_workspace");
	bad_path("/workspacefoo", -EPERM, "path_outside_workspace");
	bad_path("/workspace.bak/x", -EPERM, "path_outside_workspace");
	bad_path("/work", -EPERM, "path_outside_workspace");
	bad_path("//workspace/x", -EPERM, "path_outside_workspace");
	bad_path("/./workspace/x", -EPERM, "path_outside_workspace");
	bad_path("/tmp/../workspace/x", -EPERM, "path_outside_workspace");
	bad_path("/WORKSPACE/x", -EPERM, "path_outside_workspace");
}

static void test_resolve_nul(void)
{
	char out[SBX_FILES_PATH_MAX];
	const char *code = NULL;
	CHECK_INT(sandbox_files_resolve_n(WS, "a\0b", 3, out, sizeof(out), &code), -EINVAL);
	CHECK_STR(code, "invalid_path");
	CHECK_INT(sandbox_files_resolve_n(WS, "\0", 1, out, sizeof(out), &code), -EINVAL);
	CHECK_INT(sandbox_files_resolve_n(WS, "a.txt\0", 6, out, sizeof(out), &code), -EINVAL);
	/* the length is respected: the bytes after pathlen are not read */
	CHECK_INT(sandbox_files_resolve_n(WS, "abc/def", 3, out, sizeof(out), &code), 0);
	CHECK_STR(out, WS "/abc");
	CHECK_INT(sandbox_files_resolve_n(WS, "abc", 0, out, sizeof(out), &code), -EINVAL);
	CHECK_INT(sandbox_files_resolve(WS, NULL, out, sizeof(out), &code), -EINVAL);
	CHECK_STR(code, "invalid_path");
}

static void test_resolve_lengths(void)
{
	char in[2 * SBX_FILES_PATH_MAX], out[SBX_FILES_PATH_MAX];
	const char *code;
	/* a segment of 255 bytes passes, 256 does not */
	memset(in, 'a', 255);
	in[255] = '\0';
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), 0);
	CHECK_INT(strlen(out), strlen(WS) + 1 + 255);
	memset(in, 'a', 256);
	in[256] = '\0';
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), -ENAMETOOLONG);
	CHECK_STR(code, "path_too_long");
	/* the result: 4095 bytes pass, 4096 do not. WS + '/' = 11 bytes; then
	 * segments of 100 'b' + '/' ... */
	size_t target = SBX_FILES_PATH_MAX - 1 - strlen(WS) - 1; /* relative bytes */
	size_t k = 0;
	while (k < target) {
		size_t seg = target - k > 200 ? 199 : target - k;
		memset(in + k, 'b', seg);
		k += seg;
		if (k < target)
			in[k++] = '/';
	}
	in[k] = '\0';
	CHECK_INT(strlen(in), target);
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), 0);
	CHECK_INT(strlen(out), SBX_FILES_PATH_MAX - 1);
	/* one more byte */
	in[k] = 'b';
	in[k + 1] = '\0';
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), -ENAMETOOLONG);
	CHECK_STR(code, "path_too_long");
	/* input itself too long, even if it would collapse */
	memset(in, '/', SBX_FILES_PATH_MAX);
	in[0] = 'a';
	in[SBX_FILES_PATH_MAX] = '\0';
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), -ENAMETOOLONG);
	in[SBX_FILES_PATH_MAX - 1] = '\0'; /* 4095 bytes of "a////..." */
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), 0);
	CHECK_STR(out, WS "/a");
	/* a control character is reported as such even in a too-long path */
	memset(in, 'c', sizeof(in) - 1);
	in[sizeof(in) - 1] = '\0';
	in[5000] = '\n';
	CHECK_INT(sandbox_files_resolve(WS, in, out, sizeof(out), &code), -EINVAL);
	CHECK_STR(code, "invalid_path");
	/* out too small */
	char small[13];
	CHECK_INT(sandbox_files_resolve(WS, "a", small, 12, &code), -ENAMETOOLONG);
	CHECK_STR(code, "path_too_long");
	CHECK_STR(small, "");
	CHECK_INT(sandbox_files_resolve(WS, "a", small, 13, &code), 0); /* 12 + NUL */
	CHECK_STR(small, WS "/a");
	CHECK_INT(sandbox_files_resolve(WS, ".", small, 11, &code), 0);
	CHECK_STR(small, WS);
	CHECK_INT(sandbox_files_resolve(WS, ".", small, 10, &code), -ENAMETOOLONG);
	CHECK_INT(sandbox_files_resolve(WS, ".", NULL, 0, &code), -ENAMETOOLONG);
}

static void test_resolve_workspace(void)
{
	char out[64];
	const char *code;
	static const char *const bad[] = { "",         "/",       "workspace", "/workspace/",
					   "/a//b",    "/a/./b",  "/a/../b",   "/a/.",
					   "/a\nb",    "./w",     "//" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		code = NULL;
		CHECK_INT(sandbox_files_resolve(bad[i], "x", out, sizeof(out), &code), -EINVAL);
		CHECK_STR(code, "invalid_workspace");
	}
	CHECK_INT(sandbox_files_resolve(NULL, "x", out, sizeof(out), &code), -EINVAL);
	CHECK_STR(code, "invalid_workspace");
	CHECK_INT(sandbox_files_resolve("/a", "x", out, sizeof(out), &code), 0);
	CHECK_STR(out, "/a/x");
}

/* ---- exit codes, argv ---- */

static void test_exit_http(void)
{
	static const struct {
		int exit_code, http;
		const char *code;
	} t[] = {
		{ 0, 200, "ok" },
		{ SBX_FILES_EXIT_NOT_FOUND, 404, "not_found" },
		{ SBX_FILES_EXIT_OUTSIDE, 403, "path_outside_workspace" },
		{ SBX_FILES_EXIT_IS_DIR, 409, "is_a_directory" },
		{ SBX_FILES_EXIT_TOO_LARGE, 413, "file_too_large" },
		{ SBX_FILES_EXIT_NOT_DIR, 409, "not_a_directory" },
		{ SBX_FILES_EXIT_NOT_EMPTY, 409, "directory_not_empty" },
		{ SBX_FILES_EXIT_SYMLINK, 403, "symlink_not_followed" },
		{ SBX_FILES_EXIT_NOT_REGULAR, 409, "not_a_regular_file" },
		{ SBX_FILES_EXIT_NO_WORKSPACE, 500, "workspace_unavailable" },
		{ SBX_FILES_EXIT_IO, 500, "io_error" },
		{ SBX_FILES_EXIT_BAD_ARGS, 500, "internal_error" },
		{ SBX_FILES_EXIT_SIZE_MISMATCH, 400, "incomplete_body" },
		{ 1, 500, "internal_error" },
		{ 2, 500, "internal_error" },
		{ 127, 500, "internal_error" },
		{ 137, 500, "internal_error" },
		{ -1, 500, "internal_error" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		const char *code = NULL;
		CHECK_INT(sandbox_files_exit_http(t[i].exit_code, &code), t[i].http);
		CHECK_STR(code, t[i].code);
	}
	CHECK_INT(sandbox_files_exit_http(40, NULL), 404);
}

static int argc_of(char **a)
{
	int n = 0;
	while (a && a[n])
		n++;
	return n;
}

static void test_argv(void)
{
	char **a = sandbox_files_read_argv("/bin/sh", WS, WS "/a b", 1024, 50);
	REQUIRE(a);
	CHECK_INT(argc_of(a), 8);
	CHECK_STR(a[0], "/bin/sh");
	CHECK_STR(a[1], "-c");
	CHECK_STR(a[2], sandbox_files_read_script);
	CHECK_STR(a[3], "sbx-files");
	CHECK_STR(a[4], WS);
	CHECK_STR(a[5], WS "/a b");
	CHECK_STR(a[6], "1024");
	CHECK_STR(a[7], "50");
	sandbox_files_argv_free(a);
	a = sandbox_files_read_argv("sh", WS, WS, UINT64_C(4294967296), 0);
	REQUIRE(a);
	CHECK_STR(a[6], "4294967296");
	CHECK_STR(a[7], "1");
	sandbox_files_argv_free(a);
	a = sandbox_files_read_argv("sh", WS, WS, 1, 1000000);
	REQUIRE(a);
	CHECK_STR(a[7], "10000");
	sandbox_files_argv_free(a);

	a = sandbox_files_write_argv("/bin/sh", WS, WS "/x", 64 << 20, -1, false);
	REQUIRE(a);
	CHECK_INT(argc_of(a), 9);
	CHECK_STR(a[2], sandbox_files_write_script);
	CHECK_STR(a[3], "sbx-files");
	CHECK_STR(a[4], WS);
	CHECK_STR(a[5], WS "/x");
	CHECK_STR(a[6], "67108864");
	CHECK_STR(a[7], "-");
	CHECK_STR(a[8], "0");
	sandbox_files_argv_free(a);
	a = sandbox_files_write_argv("/bin/sh", WS, WS "/x", UINT64_MAX, 12345, true);
	REQUIRE(a);
	CHECK_STR(a[6], "9223372036854775806");
	CHECK_STR(a[7], "12345");
	CHECK_STR(a[8], "1");
	sandbox_files_argv_free(a);

	a = sandbox_files_delete_argv("/bin/sh", WS, WS "/x");
	REQUIRE(a);
	CHECK_INT(argc_of(a), 6);
	CHECK_STR(a[2], sandbox_files_delete_script);
	CHECK_STR(a[5], WS "/x");
	sandbox_files_argv_free(a);

	CHECK(sandbox_files_read_argv(NULL, WS, WS, 1, 1) == NULL);
	CHECK(sandbox_files_write_argv("sh", NULL, WS, 1, 1, false) == NULL);
	CHECK(sandbox_files_delete_argv("sh", WS, NULL) == NULL);
	sandbox_files_argv_free(NULL);
}

/* ---- parsers ---- */

static void test_parse_head(void)
{
	struct sandbox_files_head h;
	CHECK_INT(sandbox_files_parse_head("D\n", 2, &h), 2);
	CHECK_INT(h.kind, SBX_FILES_KIND_DIR);
	CHECK_INT(sandbox_files_parse_head("D\nf0\0a\0E1\0\0", 12, &h), 2);
	CHECK_INT(sandbox_files_parse_head("F 0\n", 4, &h), 4);
	CHECK_INT(h.kind, SBX_FILES_KIND_FILE);
	CHECK_INT(h.size, 0);
	CHECK_INT(sandbox_files_parse_head("F 10485760\nbody", 15, &h), 11);
	CHECK_INT(h.size, 10485760);
	CHECK_INT(sandbox_files_parse_head("F 18446744073709551615\n", 23, &h), 23);
	CHECK(h.size == UINT64_MAX);
	/* incomplete: need more */
	CHECK_INT(sandbox_files_parse_head("", 0, &h), 0);
	CHECK_INT(sandbox_files_parse_head("D", 1, &h), 0);
	CHECK_INT(sandbox_files_parse_head("F", 1, &h), 0);
	CHECK_INT(sandbox_files_parse_head("F ", 2, &h), 0);
	CHECK_INT(sandbox_files_parse_head("F 123", 5, &h), 0);
	CHECK_INT(sandbox_files_parse_head("F 12345678901234567890", 22, &h), 0);
	/* malformed */
	CHECK_INT(sandbox_files_parse_head("F 123456789012345678901", 23, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("F 18446744073709551616\n", 23, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("F \n", 3, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("F -1\n", 5, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("F 1 \n", 5, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("F\n", 2, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("Dx", 2, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("X\n", 2, &h), -EPROTO);
	CHECK_INT(sandbox_files_parse_head("sh: 1: boom\n", 12, &h), -EPROTO);
}

static const cJSON *entry(const cJSON *l, int i)
{
	return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(l, "entries"), i);
}

static const char *estr(const cJSON *l, int i, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry(l, i), k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double enum_(const cJSON *l, int i, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry(l, i), k);
	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int nentries(const cJSON *l)
{
	return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(l, "entries"));
}

static bool truncated(const cJSON *l)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "truncated"));
}

#define L(s) s, sizeof(s) - 1

static void test_parse_listing(void)
{
	cJSON *l = NULL;
	CHECK_INT(sandbox_files_parse_listing(WS "/d",
					      L("f12\0a b\0d0\0sub\0l0\0link\0o0\0fifo\0"
						"f0\0new\nline\0E5\0\0"),
					      &l),
		  0);
	REQUIRE(l);
	CHECK_STR(cJSON_GetObjectItemCaseSensitive(l, "path")->valuestring, WS "/d");
	CHECK_INT(nentries(l), 5);
	CHECK(!truncated(l));
	CHECK_STR(estr(l, 0, "name"), "a b");
	CHECK_STR(estr(l, 0, "type"), "file");
	CHECK(enum_(l, 0, "size") == 12);
	CHECK_STR(estr(l, 1, "type"), "dir");
	CHECK_STR(estr(l, 2, "type"), "symlink");
	CHECK_STR(estr(l, 3, "type"), "other");
	CHECK_STR(estr(l, 4, "name"), "new\nline");
	CHECK(estr(l, 4, "name_base64") == NULL);
	char *json = cJSON_PrintUnformatted(l);
	CHECK(json && strstr(json, "\"new\\nline\""));
	free(json);
	cJSON_Delete(l);

	/* empty directory, no path */
	CHECK_INT(sandbox_files_parse_listing(NULL, L("E0\0\0"), &l), 0);
	REQUIRE(l);
	CHECK_INT(nentries(l), 0);
	CHECK(cJSON_GetObjectItemCaseSensitive(l, "path") == NULL);
	cJSON_Delete(l);

	/* non-UTF-8 names: U+FFFD for display, exact bytes in base64 */
	CHECK_INT(sandbox_files_parse_listing(
			  NULL, L("f1\0\xff\xfe" "a\0f1\0caf\xc3\xa9\0f1\0\xc3\0f1\0\xed\xa0\x80\0E4\0\0"),
			  &l),
		  0);
	REQUIRE(l);
	CHECK_INT(nentries(l), 4);
	CHECK_STR(estr(l, 0, "name"), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
	CHECK_STR(estr(l, 0, "name_base64"), "//5h");
	CHECK_STR(estr(l, 1, "name"), "caf\xc3\xa9");
	CHECK(estr(l, 1, "name_base64") == NULL);
	CHECK_STR(estr(l, 2, "name"), "\xEF\xBF\xBD");     /* truncated sequence */
	CHECK_STR(estr(l, 2, "name_base64"), "ww==");
	CHECK_STR(estr(l, 3, "name_base64"), "7aCA"); /* a surrogate */
	cJSON_Delete(l);

	/* truncated by the script */
	CHECK_INT(sandbox_files_parse_listing(NULL, L("f1\0a\0f2\0b\0T2\0\0"), &l), 0);
	REQUIRE(l);
	CHECK_INT(nentries(l), 2);
	CHECK(truncated(l));
	cJSON_Delete(l);

	/* a 255-byte name passes; large sizes keep their value */
	char big[300 + 64];
	size_t n = 0;
	memcpy(big, "f4294967296", 11);
	n = 11;
	big[n++] = '\0';
	memset(big + n, 'x', 255);
	n += 255;
	big[n++] = '\0';
	memcpy(big + n, "E1\0\0", 4);
	n += 4;
	CHECK_INT(sandbox_files_parse_listing(NULL, big, n, &l), 0);
	REQUIRE(l);
	CHECK(enum_(l, 0, "size") == 4294967296.0);
	CHECK_INT(strlen(estr(l, 0, "name")), 255);
	cJSON_Delete(l);

	/* malformed */
	static const struct {
		const char *s;
		size_t n;
	} bad[] = {
		{ L("") },                          /* nothing, not even a trailer */
		{ L("f1\0a\0") },                   /* no trailer: output cut */
		{ L("f1\0a\0E1\0") },               /* trailer cut */
		{ L("f1\0a\0E2\0\0") },             /* count disagrees */
		{ L("f1\0a\0E1\0\0x") },            /* bytes after the trailer */
		{ L("f1\0a\0E1\0\0E1\0\0") },       /* two trailers */
		{ L("E1\0x\0") },                   /* a trailer with a name */
		{ L("x1\0a\0E1\0\0") },             /* unknown type */
		{ L("f\0a\0E1\0\0") },              /* no size */
		{ L("f-1\0a\0E1\0\0") },            /* bad size */
		{ L("f1x\0a\0E1\0\0") },            /* bad size */
		{ L("f99999999999999999999\0a\0E1\0\0") }, /* overflow */
		{ L("f1\0\0E1\0\0") },              /* empty name */
		{ L("d0\0.\0E1\0\0") },             /* "." */
		{ L("d0\0..\0E1\0\0") },            /* ".." */
		{ L("f1\0a/b\0E1\0\0") },           /* '/' */
		{ L("f1\0a") },                     /* name cut */
		{ L("f1") },                        /* size cut */
		{ L("sh: 1: error\n") },            /* not a listing */
		{ L("D\nE0\0\0") },                 /* header left in */
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		l = (cJSON *)1;
		int rc = sandbox_files_parse_listing(NULL, bad[i].s, bad[i].n, &l);
		if (rc != -EPROTO)
			fprintf(stderr, "  bad listing %zu accepted\n", i);
		CHECK_INT(rc, -EPROTO);
		CHECK(l == NULL);
	}
	/* a 256-byte name */
	big[11 + 1 + 255] = 'x';
	memcpy(big + 11 + 1 + 256, "\0E1\0\0", 5);
	CHECK_INT(sandbox_files_parse_listing(NULL, big, 11 + 1 + 256 + 5, &l), -EPROTO);
}

static void test_parse_listing_cap(void)
{
	/* more records than SBX_FILES_MAX_ENTRIES (a script given a larger
	 * cap): the rest is dropped and flagged, and the count still checked */
	size_t total = SBX_FILES_MAX_ENTRIES + 5;
	size_t cap = total * 16 + 32, n = 0;
	char *b = malloc(cap);
	REQUIRE(b);
	for (size_t i = 0; i < total; i++)
		n += (size_t)snprintf(b + n, cap - n, "f1%c%zu%c", 0, i, 0);
	n += (size_t)snprintf(b + n, cap - n, "E%zu%c%c", total, 0, 0);
	cJSON *l = NULL;
	CHECK_INT(sandbox_files_parse_listing(NULL, b, n, &l), 0);
	REQUIRE(l);
	CHECK_INT(nentries(l), SBX_FILES_MAX_ENTRIES);
	CHECK(truncated(l));
	cJSON_Delete(l);
	free(b);
	CHECK(SBX_FILES_MAX_LISTING_BYTES >= (size_t)SBX_FILES_MAX_ENTRIES * 278);
}

static void test_parse_write_result(void)
{
	bool created = false;
	CHECK_INT(sandbox_files_parse_write_result(L("created\n"), &created), 0);
	CHECK(created);
	CHECK_INT(sandbox_files_parse_write_result(L("replaced\n"), &created), 0);
	CHECK(!created);
	CHECK_INT(sandbox_files_parse_write_result(L("created"), &created), -EPROTO);
	CHECK_INT(sandbox_files_parse_write_result(L(""), &created), -EPROTO);
	CHECK_INT(sandbox_files_parse_write_result(L("replaced\nx"), &created), -EPROTO);
}

/* ---- the scripts, under real shells ---- */

static char root[256];     /* temporary directory of this test */
static char ws[512];       /* root/ws: the workspace */
static char outside[512];  /* root/outside: a directory outside it */
static const char *shell;
static const char *child_path; /* PATH of the commands, or NULL: inherited */

/* Run argv with stdin from data (or /dev/null), stdout kept in *out
 * (malloc'd, NUL-terminated); returns the exit status (128+N for a signal). */
static int run(char **argv, const void *data, size_t len, char **out, size_t *outlen)
{
	char in_path[PATH_MAX + 16], out_path[PATH_MAX + 16];
	snprintf(in_path, sizeof(in_path), "%s/stdin", root);
	snprintf(out_path, sizeof(out_path), "%s/stdout", root);
	FILE *f = fopen(in_path, "wb");
	if (!f)
		return -1;
	if (len && fwrite(data, 1, len, f) != len) {
		fclose(f);
		return -1;
	}
	fclose(f);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int i = open(data ? in_path : "/dev/null", O_RDONLY);
		int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (i < 0 || o < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0)
			_exit(120);
		/* the commands run from somewhere else than the workspace */
		if (chdir("/") != 0)
			_exit(121);
		if (child_path && setenv("PATH", child_path, 1) != 0)
			_exit(123);
		execvp(argv[0], argv);
		_exit(122);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	char *o = NULL;
	size_t n = 0;
	if (read_file_bounded(out_path, 64 << 20, &o, &n) != 0)
		return -1;
	if (out) {
		*out = o;
		*outlen = n;
	} else {
		free(o);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void wpath(char *buf, size_t n, const char *rel)
{
	snprintf(buf, n, "%s/%s", ws, rel);
}

/* resolve rel against ws; abort the test on failure */
static const char *res(const char *rel)
{
	static char out[SBX_FILES_PATH_MAX];
	const char *code;
	if (sandbox_files_resolve(ws, rel, out, sizeof(out), &code) != 0) {
		fprintf(stderr, "resolve %s: %s\n", rel, code);
		abort();
	}
	return out;
}

static int do_write(const char *rel, const void *data, size_t len, uint64_t max,
		    int64_t expected, bool mk, char **out)
{
	char **a = sandbox_files_write_argv(shell, ws, res(rel), max, expected, mk);
	size_t n;
	char *o = NULL;
	int rc = run(a, data, len, &o, &n);
	sandbox_files_argv_free(a);
	if (out)
		*out = o;
	else
		free(o);
	return rc;
}

static int do_read(const char *rel, uint64_t max, size_t entries, char **out, size_t *outlen)
{
	char **a = sandbox_files_read_argv(shell, ws, res(rel), max, entries);
	int rc = run(a, NULL, 0, out, outlen);
	sandbox_files_argv_free(a);
	return rc;
}

static int do_delete(const char *rel)
{
	char **a = sandbox_files_delete_argv(shell, ws, res(rel));
	int rc = run(a, NULL, 0, NULL, NULL);
	sandbox_files_argv_free(a);
	return rc;
}

static bool exists(const char *rel)
{
	char p[PATH_MAX + 300];
	struct stat st;
	wpath(p, sizeof(p), rel);
	return lstat(p, &st) == 0;
}

static void put_file(const char *abs, const char *content)
{
	FILE *f = fopen(abs, "wb");
	if (f) {
		fputs(content, f);
		fclose(f);
	}
}

/* Entries of dir whose name starts with ".sbx-upload" */
static int temp_files(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, ".sbx-upload", 11) == 0)
			n++;
	closedir(d);
	return n;
}

static char *file_content(const char *rel, size_t *len)
{
	char p[PATH_MAX + 300];
	wpath(p, sizeof(p), rel);
	char *c = NULL;
	if (read_file_bounded(p, 64 << 20, &c, len) != 0)
		return NULL;
	return c;
}

static void script_write_read(void)
{
	char *o = NULL;
	CHECK_INT(do_write("a.txt", "hello\n", 6, 1024, -1, false, &o), 0);
	CHECK_STR(o, "created\n");
	bool created = false;
	CHECK_INT(sandbox_files_parse_write_result(o, strlen(o), &created), 0);
	CHECK(created);
	free(o);
	size_t n;
	char *c = file_content("a.txt", &n);
	CHECK(c && n == 6 && memcmp(c, "hello\n", 6) == 0);
	free(c);
	CHECK_INT(do_write("a.txt", "bye", 3, 1024, 3, false, &o), 0);
	CHECK_STR(o, "replaced\n");
	free(o);
	c = file_content("a.txt", &n);
	CHECK(c && n == 3 && memcmp(c, "bye", 3) == 0);
	free(c);

	/* binary with NULs, then read back: header + exact bytes */
	unsigned char bin[4096];
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (unsigned char)(i * 7);
	CHECK_INT(do_write("bin", bin, sizeof(bin), sizeof(bin), (int64_t)sizeof(bin), false,
			   NULL),
		  0);
	char *out = NULL;
	size_t olen = 0;
	CHECK_INT(do_read("bin", sizeof(bin), 100, &out, &olen), 0);
	struct sandbox_files_head h;
	ssize_t hl = sandbox_files_parse_head(out, olen, &h);
	CHECK_INT(hl, 7);
	CHECK_INT(h.kind, SBX_FILES_KIND_FILE);
	CHECK_INT(h.size, sizeof(bin));
	CHECK(hl > 0 && olen == (size_t)hl + sizeof(bin) && memcmp(out + hl, bin, sizeof(bin)) == 0);
	free(out);
	/* over the read limit */
	CHECK_INT(do_read("bin", sizeof(bin) - 1, 100, &out, &olen), SBX_FILES_EXIT_TOO_LARGE);
	CHECK_INT(olen, 0);
	free(out);
	/* empty file */
	CHECK_INT(do_write("empty", "", 0, 10, 0, false, NULL), 0);
	CHECK_INT(do_read("empty", 10, 100, &out, &olen), 0);
	CHECK(olen == 4 && memcmp(out, "F 0\n", 4) == 0);
	free(out);
	/* the exact limit passes */
	CHECK_INT(do_write("lim", "12345", 5, 5, -1, false, NULL), 0);
	CHECK_INT(do_read("lim", 5, 100, &out, &olen), 0);
	CHECK(olen == 9 && memcmp(out, "F 5\n12345", 9) == 0);
	free(out);
	CHECK_INT(temp_files(ws), 0);
}

static void script_write_limits(void)
{
	/* one byte over: refused, nothing created, no temporary file */
	CHECK_INT(do_write("big", "123456", 6, 5, -1, false, NULL), SBX_FILES_EXIT_TOO_LARGE);
	CHECK(!exists("big"));
	CHECK_INT(temp_files(ws), 0);
	/* an existing file is left as it was */
	CHECK_INT(do_write("keep", "old", 3, 5, -1, false, NULL), 0);
	CHECK_INT(do_write("keep", "1234567890", 10, 5, -1, false, NULL),
		  SBX_FILES_EXIT_TOO_LARGE);
	size_t n;
	char *c = file_content("keep", &n);
	CHECK(c && n == 3 && memcmp(c, "old", 3) == 0);
	free(c);
	/* expected over the limit: refused at once */
	CHECK_INT(do_write("big", "", 0, 5, 6, false, NULL), SBX_FILES_EXIT_TOO_LARGE);
	CHECK(!exists("big"));
	/* a shorter body than announced (stdin ended early) */
	CHECK_INT(do_write("keep", "12", 2, 100, 3, false, NULL), SBX_FILES_EXIT_SIZE_MISMATCH);
	CHECK_INT(do_write("short", "", 0, 100, 3, false, NULL), SBX_FILES_EXIT_SIZE_MISMATCH);
	CHECK(!exists("short"));
	c = file_content("keep", &n);
	CHECK(c && n == 3 && memcmp(c, "old", 3) == 0);
	free(c);
	CHECK_INT(temp_files(ws), 0);
	/* a pre-existing temporary name is skipped, never reused */
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/.sbx-upload-0-0", ws);
	put_file(p, "x");
	CHECK_INT(do_write("new", "abc", 3, 100, 3, false, NULL), 0);
	CHECK_INT(temp_files(ws), 1);
	unlink(p);
}

static void script_paths(void)
{
	char p[PATH_MAX + 64];
	/* missing */
	CHECK_INT(do_read("nope", 100, 10, NULL, NULL), SBX_FILES_EXIT_NOT_FOUND);
	CHECK_INT(do_read("nodir/nope", 100, 10, NULL, NULL), SBX_FILES_EXIT_NOT_FOUND);
	CHECK_INT(do_delete("nope"), SBX_FILES_EXIT_NOT_FOUND);
	CHECK_INT(do_write("nodir/x", "a", 1, 10, -1, false, NULL), SBX_FILES_EXIT_NOT_FOUND);
	CHECK(!exists("nodir"));
	/* make_parents */
	CHECK_INT(do_write("p/q/r.txt", "a", 1, 10, -1, true, NULL), 0);
	CHECK(exists("p/q/r.txt"));
	/* a parent that is a file */
	CHECK_INT(do_write("p/q/r.txt/x", "a", 1, 10, -1, true, NULL), SBX_FILES_EXIT_NOT_DIR);
	CHECK_INT(do_read("p/q/r.txt/x", 100, 10, NULL, NULL), SBX_FILES_EXIT_NOT_DIR);
	/* directories: PUT onto one, DELETE non-empty, empty, the root */
	CHECK_INT(do_write("p", "a", 1, 10, -1, false, NULL), SBX_FILES_EXIT_IS_DIR);
	CHECK_INT(do_write(".", "a", 1, 10, -1, false, NULL), SBX_FILES_EXIT_IS_DIR);
	CHECK_INT(do_delete("p"), SBX_FILES_EXIT_NOT_EMPTY);
	CHECK_INT(do_delete("."), SBX_FILES_EXIT_IS_DIR);
	CHECK_INT(do_delete("p/q/r.txt"), 0);
	CHECK(!exists("p/q/r.txt"));
	CHECK_INT(do_delete("p/q"), 0);
	CHECK(!exists("p/q"));
	CHECK(exists("p"));
	CHECK(access(ws, F_OK) == 0);
	/* a fifo: not read (it would block), not replaced, deleted */
	wpath(p, sizeof(p), "fifo");
	CHECK(mkfifo(p, 0600) == 0);
	CHECK_INT(do_read("fifo", 100, 10, NULL, NULL), SBX_FILES_EXIT_NOT_REGULAR);
	CHECK_INT(do_write("fifo", "a", 1, 10, -1, false, NULL), SBX_FILES_EXIT_NOT_REGULAR);
	CHECK_INT(do_delete("fifo"), 0);
	CHECK(!exists("fifo"));
	/* hostile names are data, never code */
	static const char *const names[] = { "$(touch pwned)", "`touch pwned`", "a'b\"c",
					     "-n", "--", "*", "a;touch pwned", "x y  z",
					     "\\\\", "%s%n", "\xff\xfe" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		CHECK_INT(do_write(names[i], "v", 1, 10, -1, false, NULL), 0);
		CHECK(exists(names[i]));
		char *out = NULL;
		size_t olen;
		CHECK_INT(do_read(names[i], 10, 10, &out, &olen), 0);
		CHECK(olen == 5 && memcmp(out, "F 1\nv", 5) == 0);
		free(out);
		CHECK_INT(do_delete(names[i]), 0);
		CHECK(!exists(names[i]));
	}
	CHECK(!exists("pwned"));
	CHECK(access("/pwned", F_OK) != 0);
	/* shapes the resolver never produces are refused by the scripts */
	char *a[] = { (char *)shell, "-c", (char *)sandbox_files_read_script, "sbx-files", ws,
		      "/etc", "10", "10", NULL };
	CHECK_INT(run(a, NULL, 0, NULL, NULL), SBX_FILES_EXIT_BAD_ARGS);
	char bad[PATH_MAX + 64];
	snprintf(bad, sizeof(bad), "%s/../outside", ws);
	a[5] = bad;
	CHECK_INT(run(a, NULL, 0, NULL, NULL), SBX_FILES_EXIT_BAD_ARGS);
	snprintf(bad, sizeof(bad), "%s//x", ws);
	CHECK_INT(run(a, NULL, 0, NULL, NULL), SBX_FILES_EXIT_BAD_ARGS);
	snprintf(bad, sizeof(bad), "%sx", ws);
	CHECK_INT(run(a, NULL, 0, NULL, NULL), SBX_FILES_EXIT_BAD_ARGS);
	a[4] = "relative";
	a[5] = "relative/x";
	CHECK_INT(run(a, NULL, 0, NULL, NULL), SBX_FILES_EXIT_BAD_ARGS);
	/* a workspace that is not there */
	snprintf(bad, sizeof(bad), "%s/gone", root);
	a[4] = bad;
	a[5] = bad;
	CHECK_INT(run(a, NULL, 0, NULL, NULL), SBX_FILES_EXIT_NO_WORKSPACE);
}

static void script_symlinks(void)
{
	char p[PATH_MAX + 64], q[PATH_MAX + 64];
	snprintf(q, sizeof(q), "%s/secret", outside);
	put_file(q, "secret");
	/* final component: a link to a file outside */
	wpath(p, sizeof(p), "to-secret");
	CHECK(symlink(q, p) == 0);
	CHECK_INT(do_read("to-secret", 100, 10, NULL, NULL), SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_write("to-secret", "pwned", 5, 100, -1, false, NULL),
		  SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_delete("to-secret"), SBX_FILES_EXIT_SYMLINK);
	CHECK(exists("to-secret"));
	size_t n;
	char *c = NULL;
	CHECK(read_file_bounded(q, 100, &c, &n) == 0 && n == 6 && memcmp(c, "secret", 6) == 0);
	free(c);
	/* ... and inside: refused all the same */
	CHECK_INT(do_write("target", "t", 1, 10, -1, false, NULL), 0);
	wpath(p, sizeof(p), "to-target");
	CHECK(symlink("target", p) == 0);
	CHECK_INT(do_read("to-target", 100, 10, NULL, NULL), SBX_FILES_EXIT_SYMLINK);
	/* dangling */
	wpath(p, sizeof(p), "dangling");
	CHECK(symlink("/nonexistent/x", p) == 0);
	CHECK_INT(do_read("dangling", 100, 10, NULL, NULL), SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_write("dangling", "x", 1, 10, -1, false, NULL), SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_read("dangling/x", 100, 10, NULL, NULL), SBX_FILES_EXIT_NOT_DIR);

	/* a directory component outside */
	wpath(p, sizeof(p), "out");
	CHECK(symlink(outside, p) == 0);
	CHECK_INT(do_read("out/secret", 100, 10, NULL, NULL), SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_write("out/secret", "pwned", 5, 100, -1, false, NULL),
		  SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_write("out/new", "pwned", 5, 100, -1, true, NULL), SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_write("out/newdir/x", "pwned", 5, 100, -1, true, NULL),
		  SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_delete("out/secret"), SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_read("out", 100, 10, NULL, NULL), SBX_FILES_EXIT_SYMLINK);
	snprintf(q, sizeof(q), "%s/newdir", outside);
	CHECK(access(q, F_OK) != 0);
	snprintf(q, sizeof(q), "%s/new", outside);
	CHECK(access(q, F_OK) != 0);
	snprintf(q, sizeof(q), "%s/secret", outside);
	CHECK(read_file_bounded(q, 100, &c, &n) == 0 && n == 6 && memcmp(c, "secret", 6) == 0);
	free(c);
	CHECK_INT(temp_files(outside), 0);
	/* deeper: a link in the middle of the path, to the parent of ws */
	CHECK_INT(do_write("deep/x", "1", 1, 10, -1, true, NULL), 0);
	wpath(p, sizeof(p), "deep/up");
	CHECK(symlink(root, p) == 0);
	CHECK_INT(do_read("deep/up/outside/secret", 100, 10, NULL, NULL), SBX_FILES_EXIT_OUTSIDE);
	/* a link that goes out and comes back in is refused at its first
	 * step: every directory on the way must be inside */
	CHECK_INT(do_read("deep/up/ws/deep/x", 100, 10, NULL, NULL), SBX_FILES_EXIT_OUTSIDE);

	/* a directory component that stays inside: followed */
	wpath(p, sizeof(p), "alias");
	CHECK(symlink("deep", p) == 0);
	char *out = NULL;
	size_t olen;
	CHECK_INT(do_read("alias/x", 100, 10, &out, &olen), 0);
	CHECK(olen == 5 && memcmp(out, "F 1\n1", 5) == 0);
	free(out);
	CHECK_INT(do_write("alias/y", "2", 1, 10, -1, false, NULL), 0);
	CHECK(exists("deep/y"));
	wpath(p, sizeof(p), "self");
	CHECK(symlink(ws, p) == 0); /* absolute, to the workspace itself */
	CHECK_INT(do_read("self/deep/x", 100, 10, NULL, NULL), 0);

	/* the workspace itself behind a symlink: resolved once, physically */
	char wsl[300], saved[sizeof(ws)];
	snprintf(wsl, sizeof(wsl), "%s/wslink", root);
	CHECK(symlink(ws, wsl) == 0);
	snprintf(saved, sizeof(saved), "%s", ws);
	snprintf(ws, sizeof(ws), "%s", wsl);
	CHECK_INT(do_read("deep/x", 100, 10, NULL, NULL), 0);
	CHECK_INT(do_read("self/deep/x", 100, 10, NULL, NULL), 0);
	CHECK_INT(do_read("out/secret", 100, 10, NULL, NULL), SBX_FILES_EXIT_OUTSIDE);
	snprintf(ws, sizeof(ws), "%s", saved);
	unlink(wsl);
}

static void script_listing(void)
{
	char p[PATH_MAX + 64];
	CHECK(mkdir(res("L") + 0, 0700) == 0 || errno == EEXIST);
	static const char *const files[] = { "a b", "new\nline", ".hidden", "..dots", "-x",
					     "*", "\xff\xfe" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "L/%s", files[i]);
		wpath(p, sizeof(p), rel);
		put_file(p, "12345");
	}
	wpath(p, sizeof(p), "L/sub");
	CHECK(mkdir(p, 0700) == 0);
	wpath(p, sizeof(p), "L/ln");
	CHECK(symlink("/etc", p) == 0);
	wpath(p, sizeof(p), "L/ff");
	CHECK(mkfifo(p, 0600) == 0);

	char *out = NULL;
	size_t olen;
	CHECK_INT(do_read("L", 100, 100, &out, &olen), 0);
	struct sandbox_files_head h;
	ssize_t hl = sandbox_files_parse_head(out, olen, &h);
	CHECK_INT(hl, 2);
	CHECK_INT(h.kind, SBX_FILES_KIND_DIR);
	cJSON *l = NULL;
	CHECK_INT(sandbox_files_parse_listing(res("L"), out + 2, olen - 2, &l), 0);
	free(out);
	REQUIRE(l);
	CHECK_INT(nentries(l), 10);
	CHECK(!truncated(l));
	/* glob order (LC_ALL=C: bytes): names not starting with '.', then
	 * ".[!.]*", then "..?*" */
	static const char *const order[] = { "*",  "-x",        "a b", "ff",      "ln",
					     "new\nline", "sub",  "\xEF\xBF\xBD\xEF\xBF\xBD",
					     ".hidden", "..dots" };
	static const char *const types[] = { "file", "file", "file", "other", "symlink",
					     "file", "dir",  "file", "file",  "file" };
	for (int i = 0; i < 10; i++) {
		CHECK_STR(estr(l, i, "name"), order[i]);
		CHECK_STR(estr(l, i, "type"), types[i]);
		CHECK(enum_(l, i, "size") == (strcmp(types[i], "file") == 0 ? 5 : 0));
	}
	CHECK_STR(estr(l, 7, "name_base64"), "//4=");
	cJSON_Delete(l);

	/* truncated */
	CHECK_INT(do_read("L", 100, 3, &out, &olen), 0);
	CHECK_INT(sandbox_files_parse_listing(NULL, out + 2, olen - 2, &l), 0);
	free(out);
	REQUIRE(l);
	CHECK_INT(nentries(l), 3);
	CHECK(truncated(l));
	cJSON_Delete(l);

	/* empty directory; the workspace root */
	CHECK_INT(do_read("L/sub", 100, 100, &out, &olen), 0);
	CHECK(olen == 6 && memcmp(out, "D\nE0\0\0", 6) == 0);
	free(out);
	CHECK_INT(do_read(".", 100, 100, &out, &olen), 0);
	CHECK_INT(sandbox_files_parse_listing(NULL, out + 2, olen - 2, &l), 0);
	free(out);
	REQUIRE(l);
	CHECK(nentries(l) > 5);
	cJSON_Delete(l);
	/* the link to /etc is listed, never entered */
	CHECK_INT(do_read("L/ln", 100, 100, NULL, NULL), SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_read("L/ln/passwd", 100, 100, NULL, NULL), SBX_FILES_EXIT_OUTSIDE);
}

static int rm_rf(const char *p)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", p); /* our own mkdtemp path */
	return system(cmd);
}

static void test_scripts(void)
{
	static const char *const shells[][2] = {
		{ "/bin/sh", NULL }, { "/usr/bin/dash", NULL }, { "/bin/bash", NULL },
		{ "/bin/busybox", "busybox-sh" },
	};
	int ran = 0;
	for (size_t i = 0; i < ARRAY_SIZE(shells); i++) {
		if (access(shells[i][0], X_OK) != 0)
			continue;
		char bb[PATH_MAX], bbsh[PATH_MAX + 8];
		if (shells[i][1]) {
			/* busybox: its shell and every tool the scripts use,
			 * as applets first in PATH */
			static const char *const applets[] = { "sh",    "cat",   "head",
							       "wc",    "ls",    "mv",
							       "rm",    "rmdir", "mkdir" };
			snprintf(bb, sizeof(bb), "/tmp/sbx-files-bb-XXXXXX");
			if (!mkdtemp(bb))
				continue;
			for (size_t k = 0; k < ARRAY_SIZE(applets); k++) {
				snprintf(bbsh, sizeof(bbsh), "%s/%s", bb, applets[k]);
				if (symlink(shells[i][0], bbsh) != 0)
					fprintf(stderr, "symlink %s: %s\n", bbsh, strerror(errno));
			}
			snprintf(bbsh, sizeof(bbsh), "%s/sh", bb);
			shell = bbsh;
			child_path = bb;
		} else {
			shell = shells[i][0];
			child_path = NULL;
		}
		snprintf(root, sizeof(root), "/tmp/sbx-files-test-XXXXXX");
		REQUIRE(mkdtemp(root));
		snprintf(ws, sizeof(ws), "%s/ws", root);
		snprintf(outside, sizeof(outside), "%s/outside", root);
		REQUIRE(mkdir(ws, 0700) == 0 && mkdir(outside, 0700) == 0);
		int before = t_failed;
		RUN(script_write_read);
		RUN(script_write_limits);
		RUN(script_paths);
		RUN(script_symlinks);
		RUN(script_listing);
		t_current = "test_scripts";
		printf("scripts under %s (%s): %s\n", shells[i][0], shell,
		       t_failed == before ? "ok" : "FAILED");
		ran++;
		rm_rf(root);
		if (shells[i][1])
			rm_rf(bb);
	}
	CHECK(ran > 0);
}

int main(void)
{
	RUN(test_resolve_accepts);
	RUN(test_resolve_rejects);
	RUN(test_resolve_nul);
	RUN(test_resolve_lengths);
	RUN(test_resolve_workspace);
	RUN(test_exit_http);
	RUN(test_argv);
	RUN(test_parse_head);
	RUN(test_parse_listing);
	RUN(test_parse_listing_cap);
	RUN(test_parse_write_result);
	RUN(test_scripts);
	return test_summary();
}
