/*
 * Integration tests of the files scripts (controller/sandbox_files.c) run
 * through the real exec path: kube-apiserver -> kwok, whose local exec runs
 * the command on THIS machine (as this test's user) in a per-Pod work
 * directory. So the "workspace" is a temporary host directory under
 * /var/tmp, and effects are checked directly on the host filesystem.
 *
 * Covered: a 10 MiB binary file written through exec stdin (sha256 of the
 * host file), read back one-shot and streamed (kube_exec_start, header
 * parsed from the first chunk, every byte compared), created vs replaced;
 * a listing with names holding a newline and a space, a directory and a
 * symlink; delete (file, empty directory, missing -> 404); missing file ->
 * 404; an over-size upload (unknown and announced size) and a short body
 * refused with nothing left behind (no temporary file); a symlink to /etc
 * refused for read, write and delete with /etc untouched; a symlinked
 * directory component to /etc refused for read, write (with and without
 * make_parents) and delete; ".." and outside paths refused by the resolver.
 */
#include "cluster_env.h"
#include "kube_exec.h"
#include "sandbox_files.h"
#include "test.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct kube_client *admin;
static struct kube_config *kcfg;
static struct kube_exec_client *ec;
static const char *ns;
static char pod[64];
static char workdir[1024];
static char ws[256]; /* the workspace: a host directory */

#define SHELL "/bin/sh"
#define MAX_FILE (16u << 20)

static const struct kube_resource RES_KWOK_EXECS = { "/apis/kwok.x-k8s.io/v1alpha1", "execs",
						     true };

static struct kube_exec_req req_for(char **argv)
{
	struct kube_exec_req r = { .namespace = ns, .pod = pod,
				   .argv = (const char *const *)argv, .with_stdout = true,
				   .with_stderr = true };
	return r;
}

/* ---- fixtures: the Pod and its kwok work directory ---- */

static bool pod_ready(void)
{
	struct kube_error e;
	cJSON *p = NULL;
	bool ready = false;
	if (kube_get(admin, &KUBE_RES_PODS, ns, pod, &p, &e) != KUBE_OK)
		return false;
	const cJSON *c;
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(
				      cJSON_GetObjectItemCaseSensitive(p, "status"), "conditions"))
	{
		const cJSON *ty = cJSON_GetObjectItemCaseSensitive(c, "type");
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "status");
		if (cJSON_IsString(ty) && strcmp(ty->valuestring, "Ready") == 0 &&
		    cJSON_IsString(st) && strcmp(st->valuestring, "True") == 0)
			ready = true;
	}
	cJSON_Delete(p);
	return ready;
}

static int setup_pod(void)
{
	unsigned char r[4];
	if (random_bytes(r, sizeof(r)) != 0)
		return -1;
	snprintf(pod, sizeof(pod), "files-it-%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
	char json[2048];
	snprintf(json, sizeof(json),
		 "{\"metadata\":{\"name\":\"%s\",\"labels\":{\"suite\":\"sandbox-files\"}},"
		 "\"spec\":{\"automountServiceAccountToken\":false,\"enableServiceLinks\":false,"
		 "\"securityContext\":{\"runAsNonRoot\":true,\"runAsUser\":1000,\"runAsGroup\":1000,"
		 "\"seccompProfile\":{\"type\":\"RuntimeDefault\"}},"
		 "\"containers\":[{\"name\":\"sandbox\",\"image\":\"python:3.12-slim\","
		 "\"command\":[\"sleep\",\"infinity\"],\"securityContext\":{"
		 "\"allowPrivilegeEscalation\":false,\"capabilities\":{\"drop\":[\"ALL\"]},"
		 "\"readOnlyRootFilesystem\":true}}]}}",
		 pod);
	cJSON *obj = cJSON_Parse(json);
	struct kube_error e;
	enum kube_err rc = kube_create(admin, &KUBE_RES_PODS, ns, obj, NULL, &e);
	cJSON_Delete(obj);
	if (rc != KUBE_OK) {
		fprintf(stderr, "creating pod %s: %s: %s\n", pod, kube_strerror(rc), e.message);
		return -1;
	}
	int64_t t0 = now_ms();
	while (!pod_ready()) {
		if (now_ms() - t0 > 60000) {
			fprintf(stderr, "pod %s not Ready after 60 s\n", pod);
			return -1;
		}
		usleep(100000);
	}
	snprintf(workdir, sizeof(workdir), "%s/%s", cluster_env("KWOK_EXEC_WORKDIR"), pod);
	if (mkdir(workdir, 0700) != 0) {
		perror(workdir);
		return -1;
	}
	cJSON *ex = cJSON_CreateObject();
	cJSON_AddStringToObject(ex, "apiVersion", "kwok.x-k8s.io/v1alpha1");
	cJSON_AddStringToObject(ex, "kind", "Exec");
	cJSON *m = cJSON_AddObjectToObject(ex, "metadata");
	cJSON_AddStringToObject(m, "name", pod);
	cJSON_AddStringToObject(m, "namespace", ns);
	cJSON *execs = cJSON_AddArrayToObject(cJSON_AddObjectToObject(ex, "spec"), "execs");
	cJSON *one = cJSON_CreateObject();
	cJSON_AddStringToObject(cJSON_AddObjectToObject(one, "local"), "workDir", workdir);
	cJSON_AddItemToArray(execs, one);
	rc = kube_create(admin, &RES_KWOK_EXECS, ns, ex, NULL, &e);
	cJSON_Delete(ex);
	if (rc != KUBE_OK) {
		fprintf(stderr, "creating the kwok Exec: %s: %s\n", kube_strerror(rc), e.message);
		return -1;
	}
	/* it applies to the next exec kwok sees; poll until it does */
	static const char *const pwd[] = { "pwd", NULL };
	struct kube_exec_req req = req_for((char **)pwd);
	char want[1100];
	snprintf(want, sizeof(want), "%s\n", workdir);
	/* kwok learns of the Exec through its informer: seconds on a busy
	 * machine (a clean-clone CI run gave up after 10 s), so allow a minute */
	char last[128] = "";
	for (int i = 0; i < 600; i++) {
		struct kube_exec_result res;
		enum kube_err x = kube_exec_run(ec, &req, NULL, 0, 4096, 10000, &res);
		bool ok = x == KUBE_OK && res.exit_code == 0 && strcmp(res.stdout_data, want) == 0;
		snprintf(last, sizeof(last), "%s", x == KUBE_OK ? res.stdout_data : kube_strerror(x));
		kube_exec_result_release(&res);
		if (ok) {
			printf("pod %s/%s Ready, exec in %s after %lld ms\n", ns, pod, workdir,
			       (long long)(now_ms() - t0));
			return 0;
		}
		usleep(100000);
	}
	fprintf(stderr, "kwok never ran exec in %s (last: \"%.100s\")\n", workdir, last);
	return -1;
}

static void teardown_pod(void)
{
	struct kube_error e;
	struct kube_delete_opts o = { .grace_period_s = 0 };
	if (kube_delete(admin, &KUBE_RES_PODS, ns, pod, &o, NULL, &e) != KUBE_OK)
		fprintf(stderr, "deleting pod %s: %s\n", pod, e.message);
	if (kube_delete(admin, &RES_KWOK_EXECS, ns, pod, NULL, NULL, &e) != KUBE_OK)
		fprintf(stderr, "deleting Exec %s: %s\n", pod, e.message);
}

/* ---- helpers ---- */

static const char *resolve(const char *rel)
{
	static char out[SBX_FILES_PATH_MAX];
	const char *code;
	if (sandbox_files_resolve(ws, rel, out, sizeof(out), &code) != 0) {
		fprintf(stderr, "resolve %s: %s\n", rel, code);
		abort();
	}
	return out;
}

static void host_path(char *buf, size_t n, const char *rel)
{
	snprintf(buf, n, "%s/%s", ws, rel);
}

static bool host_exists(const char *rel)
{
	char p[PATH_MAX];
	struct stat st;
	host_path(p, sizeof(p), rel);
	return lstat(p, &st) == 0;
}

static int host_put(const char *rel, const void *data, size_t len)
{
	char p[PATH_MAX];
	host_path(p, sizeof(p), rel);
	FILE *f = fopen(p, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(data, 1, len, f);
	return fclose(f) == 0 && w == len ? 0 : -1;
}

static int count_temp_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, ".sbx-upload", 11) == 0)
			n++;
	closedir(d);
	return n;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
	unsigned int len = 32;
	EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

/* Run argv through pods/exec; returns the exit code (-1 without one). */
static int exec_run(char **argv, const void *in, size_t inlen, size_t max_out,
		    struct kube_exec_result *res)
{
	struct kube_exec_req req = req_for(argv);
	enum kube_err rc = kube_exec_run(ec, &req, in, inlen, max_out, 120000, res);
	if (rc != KUBE_OK) {
		fprintf(stderr, "exec: %s: %s\n", kube_strerror(rc), res->error.message);
		return -1;
	}
	if (res->stderr_len)
		fprintf(stderr, "  (stderr: %.*s)\n", (int)res->stderr_len, res->stderr_data);
	return res->exit_code;
}

static int do_write(const char *rel, const void *data, size_t len, uint64_t max,
		    int64_t expected, bool mk, bool *created)
{
	char **a = sandbox_files_write_argv(SHELL, ws, resolve(rel), max, expected, mk);
	struct kube_exec_result res;
	int x = exec_run(a, data, len, 4096, &res);
	if (x == 0 && created && sandbox_files_parse_write_result(res.stdout_data,
								   res.stdout_len, created) != 0)
		x = -2;
	kube_exec_result_release(&res);
	sandbox_files_argv_free(a);
	return x;
}

static int do_read(const char *rel, uint64_t max, struct kube_exec_result *res)
{
	char **a = sandbox_files_read_argv(SHELL, ws, resolve(rel), max, SBX_FILES_MAX_ENTRIES);
	size_t cap = max + 64 > SBX_FILES_MAX_LISTING_BYTES ? max + 64
							    : SBX_FILES_MAX_LISTING_BYTES;
	int x = exec_run(a, NULL, 0, cap, res);
	sandbox_files_argv_free(a);
	return x;
}

static int do_read_rc(const char *rel)
{
	struct kube_exec_result res;
	int x = do_read(rel, MAX_FILE, &res);
	kube_exec_result_release(&res);
	return x;
}

static int do_delete(const char *rel)
{
	char **a = sandbox_files_delete_argv(SHELL, ws, resolve(rel));
	struct kube_exec_result res;
	int x = exec_run(a, NULL, 0, 4096, &res);
	kube_exec_result_release(&res);
	sandbox_files_argv_free(a);
	return x;
}

/* ---- a streamed read ---- */

struct stream {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char head[32];
	size_t head_len;
	bool head_done, head_bad;
	struct sandbox_files_head h;
	EVP_MD_CTX *md;
	size_t body;
	size_t chunks;
	int exit_code;
	bool closed;
	struct kube_error close_err;
};

static void s_stdout(void *ud, const char *data, size_t len)
{
	struct stream *s = ud;
	pthread_mutex_lock(&s->mu);
	s->chunks++;
	if (!s->head_done && !s->head_bad) {
		/* the header may come split: collect up to its end */
		size_t take = len < sizeof(s->head) - s->head_len ? len
								  : sizeof(s->head) - s->head_len;
		memcpy(s->head + s->head_len, data, take);
		ssize_t hl = sandbox_files_parse_head(s->head, s->head_len + take, &s->h);
		if (hl < 0 || (hl == 0 && s->head_len + take == sizeof(s->head))) {
			s->head_bad = true;
		} else if (hl > 0) {
			size_t from_this = (size_t)hl - s->head_len;
			s->head_done = true;
			data += from_this;
			len -= from_this;
		} else {
			s->head_len += take;
			len = 0;
		}
	}
	if (s->head_done && len) {
		EVP_DigestUpdate(s->md, data, len);
		s->body += len;
	}
	pthread_mutex_unlock(&s->mu);
}

static void s_exit(void *ud, int code, const struct kube_error *st)
{
	(void)st;
	struct stream *s = ud;
	pthread_mutex_lock(&s->mu);
	s->exit_code = code;
	pthread_mutex_unlock(&s->mu);
}

static void s_close(void *ud, const struct kube_error *err)
{
	struct stream *s = ud;
	pthread_mutex_lock(&s->mu);
	s->closed = true;
	s->close_err = *err;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* ---- tests ---- */

static unsigned char *big;
static size_t big_len = 10u << 20;

static void test_roundtrip_10mib(void)
{
	big = malloc(big_len);
	REQUIRE(big);
	REQUIRE(random_bytes(big, big_len) == 0);
	bool created = false;
	int64_t t0 = now_ms();
	CHECK_INT(do_write("data/blob.bin", big, big_len, MAX_FILE, (int64_t)big_len, true,
			   &created),
		  0);
	int64_t t_write = now_ms() - t0;
	CHECK(created);
	/* on the host */
	char p[PATH_MAX];
	host_path(p, sizeof(p), "data/blob.bin");
	char *c = NULL;
	size_t n = 0;
	REQUIRE(read_file_bounded(p, 64 << 20, &c, &n) == 0);
	unsigned char a[32], b[32];
	sha256(big, big_len, a);
	sha256(c, n, b);
	CHECK_INT(n, big_len);
	CHECK(memcmp(a, b, 32) == 0);
	free(c);
	host_path(p, sizeof(p), "data");
	CHECK_INT(count_temp_files(p), 0);

	/* one-shot read */
	struct kube_exec_result res;
	t0 = now_ms();
	CHECK_INT(do_read("data/blob.bin", MAX_FILE, &res), 0);
	int64_t t_read = now_ms() - t0;
	struct sandbox_files_head h = { 0 };
	ssize_t hl = sandbox_files_parse_head(res.stdout_data, res.stdout_len, &h);
	CHECK(hl > 0);
	CHECK_INT(h.kind, SBX_FILES_KIND_FILE);
	CHECK_INT(h.size, big_len);
	CHECK(hl > 0 && res.stdout_len == (size_t)hl + big_len &&
	      memcmp(res.stdout_data + hl, big, big_len) == 0);
	kube_exec_result_release(&res);
	printf("10 MiB: written in %lld ms, read back in %lld ms, sha256 %s\n",
	       (long long)t_write, (long long)t_read, memcmp(a, b, 32) == 0 ? "equal" : "DIFFERENT");

	/* streamed read: header from the first chunk(s), then the bytes */
	struct stream s;
	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	s.md = EVP_MD_CTX_new();
	s.exit_code = -2;
	REQUIRE(s.md && EVP_DigestInit_ex(s.md, EVP_sha256(), NULL) == 1);
	char **argv = sandbox_files_read_argv(SHELL, ws, resolve("data/blob.bin"), MAX_FILE, 1);
	struct kube_exec_req req = req_for(argv);
	static const struct kube_exec_ops ops = { .on_stdout = s_stdout, .on_exit = s_exit,
						  .on_close = s_close };
	struct kube_exec_session *sess = NULL;
	struct kube_error e;
	REQUIRE(kube_exec_start(ec, &req, &ops, &s, &sess, &e) == KUBE_OK);
	pthread_mutex_lock(&s.mu);
	while (!s.closed)
		pthread_cond_wait(&s.cv, &s.mu);
	pthread_mutex_unlock(&s.mu);
	kube_exec_release(sess);
	sandbox_files_argv_free(argv);
	unsigned char d[32];
	unsigned int dl = 32;
	EVP_DigestFinal_ex(s.md, d, &dl);
	EVP_MD_CTX_free(s.md);
	CHECK(s.head_done && !s.head_bad);
	CHECK_INT(s.h.kind, SBX_FILES_KIND_FILE);
	CHECK_INT(s.h.size, big_len);
	CHECK_INT(s.body, big_len);
	CHECK(memcmp(d, a, 32) == 0);
	CHECK_INT(s.exit_code, 0);
	CHECK_INT(s.close_err.code, KUBE_OK);
	printf("streamed read: %zu bytes in %zu chunks, sha256 %s\n", s.body, s.chunks,
	       memcmp(d, a, 32) == 0 ? "equal" : "DIFFERENT");
	pthread_cond_destroy(&s.cv);
	pthread_mutex_destroy(&s.mu);

	/* replaced */
	CHECK_INT(do_write("data/blob.bin", "small", 5, MAX_FILE, 5, false, &created), 0);
	CHECK(!created);
	host_path(p, sizeof(p), "data/blob.bin");
	REQUIRE(read_file_bounded(p, 100, &c, &n) == 0);
	CHECK(n == 5 && memcmp(c, "small", 5) == 0);
	free(c);
}

static void test_listing(void)
{
	char p[PATH_MAX];
	host_path(p, sizeof(p), "list");
	REQUIRE(mkdir(p, 0755) == 0);
	REQUIRE(host_put("list/with space", "12345", 5) == 0);
	REQUIRE(host_put("list/new\nline", "123", 3) == 0);
	REQUIRE(host_put("list/.hidden", "", 0) == 0);
	host_path(p, sizeof(p), "list/subdir");
	REQUIRE(mkdir(p, 0755) == 0);
	host_path(p, sizeof(p), "list/etc");
	REQUIRE(symlink("/etc", p) == 0);

	struct kube_exec_result res;
	CHECK_INT(do_read("list", MAX_FILE, &res), 0);
	struct sandbox_files_head h = { 0 };
	ssize_t hl = sandbox_files_parse_head(res.stdout_data, res.stdout_len, &h);
	CHECK_INT(hl, 2);
	CHECK_INT(h.kind, SBX_FILES_KIND_DIR);
	cJSON *l = NULL;
	CHECK_INT(sandbox_files_parse_listing(resolve("list"), res.stdout_data + 2,
					      res.stdout_len - 2, &l),
		  0);
	kube_exec_result_release(&res);
	REQUIRE(l);
	char *json = cJSON_PrintUnformatted(l);
	printf("listing: %s\n", json);
	free(json);
	const cJSON *entries = cJSON_GetObjectItemCaseSensitive(l, "entries");
	CHECK_INT(cJSON_GetArraySize(entries), 5);
	CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(l, "truncated")));
	static const struct {
		const char *name, *type;
		int size;
	} want[] = { { "etc", "symlink", 0 },   { "new\nline", "file", 3 },
		     { "subdir", "dir", 0 },    { "with space", "file", 5 },
		     { ".hidden", "file", 0 } };
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		const cJSON *en = cJSON_GetArrayItem(entries, (int)i);
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(en, "name");
		const cJSON *ty = cJSON_GetObjectItemCaseSensitive(en, "type");
		const cJSON *sz = cJSON_GetObjectItemCaseSensitive(en, "size");
		CHECK(cJSON_IsString(nm) && strcmp(nm->valuestring, want[i].name) == 0);
		CHECK(cJSON_IsString(ty) && strcmp(ty->valuestring, want[i].type) == 0);
		CHECK(cJSON_IsNumber(sz) && (int)sz->valuedouble == want[i].size);
	}
	cJSON_Delete(l);

	/* the workspace root lists too */
	CHECK_INT(do_read(".", MAX_FILE, &res), 0);
	CHECK(res.stdout_len > 2 && memcmp(res.stdout_data, "D\n", 2) == 0);
	CHECK_INT(sandbox_files_parse_listing(ws, res.stdout_data + 2, res.stdout_len - 2, &l), 0);
	cJSON_Delete(l);
	kube_exec_result_release(&res);
}

static void test_delete_and_missing(void)
{
	REQUIRE(host_put("gone.txt", "x", 1) == 0);
	CHECK_INT(do_delete("gone.txt"), 0);
	CHECK(!host_exists("gone.txt"));
	const char *code = NULL;
	int x = do_delete("gone.txt");
	CHECK_INT(x, SBX_FILES_EXIT_NOT_FOUND);
	CHECK_INT(sandbox_files_exit_http(x, &code), 404);
	CHECK_STR(code, "not_found");
	x = do_read_rc("gone.txt");
	CHECK_INT(x, SBX_FILES_EXIT_NOT_FOUND);
	CHECK_INT(sandbox_files_exit_http(x, &code), 404);
	CHECK_INT(do_read_rc("no/such/dir/file"), SBX_FILES_EXIT_NOT_FOUND);
	/* directories: empty removed, non-empty refused, root refused */
	char p[PATH_MAX];
	host_path(p, sizeof(p), "emptydir");
	REQUIRE(mkdir(p, 0755) == 0);
	CHECK_INT(do_delete("emptydir"), 0);
	CHECK(!host_exists("emptydir"));
	CHECK_INT(do_delete("list"), SBX_FILES_EXIT_NOT_EMPTY);
	CHECK(host_exists("list/with space"));
	CHECK_INT(do_delete("."), SBX_FILES_EXIT_IS_DIR);
	CHECK(access(ws, F_OK) == 0);
}

static void test_oversize(void)
{
	size_t lim = 1u << 20;
	char p[PATH_MAX];
	REQUIRE(big);
	host_path(p, sizeof(p), "data");
	/* unknown size, one byte over */
	int x = do_write("data/over.bin", big, lim + 1, lim, -1, false, NULL);
	CHECK_INT(x, SBX_FILES_EXIT_TOO_LARGE);
	CHECK_INT(sandbox_files_exit_http(x, NULL), 413);
	CHECK(!host_exists("data/over.bin"));
	CHECK_INT(count_temp_files(p), 0);
	/* much larger (the command stops reading; the stream still ends) */
	CHECK_INT(do_write("data/over.bin", big, big_len, lim, -1, false, NULL),
		  SBX_FILES_EXIT_TOO_LARGE);
	CHECK(!host_exists("data/over.bin"));
	CHECK_INT(count_temp_files(p), 0);
	/* announced over the limit: refused before reading */
	CHECK_INT(do_write("data/over.bin", big, 10, lim, (int64_t)lim + 1, false, NULL),
		  SBX_FILES_EXIT_TOO_LARGE);
	CHECK(!host_exists("data/over.bin"));
	/* exactly the limit passes */
	CHECK_INT(do_write("data/limit.bin", big, lim, lim, -1, false, NULL), 0);
	struct stat st;
	host_path(p, sizeof(p), "data/limit.bin");
	CHECK(stat(p, &st) == 0 && (size_t)st.st_size == lim);
	/* a short body (client went away): refused, the old file kept */
	x = do_write("data/limit.bin", big, 100, lim, 1000, false, NULL);
	CHECK_INT(x, SBX_FILES_EXIT_SIZE_MISMATCH);
	CHECK_INT(sandbox_files_exit_http(x, NULL), 400);
	CHECK(stat(p, &st) == 0 && (size_t)st.st_size == lim);
	/* reading over the limit */
	struct kube_exec_result res;
	CHECK_INT(do_read("data/limit.bin", lim - 1, &res), SBX_FILES_EXIT_TOO_LARGE);
	CHECK_INT(res.stdout_len, 0);
	kube_exec_result_release(&res);
	host_path(p, sizeof(p), "data");
	CHECK_INT(count_temp_files(p), 0);
}

static void file_unchanged(const char *path, const char *before, size_t blen)
{
	char *c = NULL;
	size_t n = 0;
	CHECK(read_file_bounded(path, 1 << 20, &c, &n) == 0 && n == blen &&
	      memcmp(c, before, n) == 0);
	free(c);
}

static void test_symlinks(void)
{
	char p[PATH_MAX];
	char *hostname = NULL;
	size_t hlen = 0;
	REQUIRE(read_file_bounded("/etc/hostname", 1 << 20, &hostname, &hlen) == 0);

	/* final component: a symlink to a file in /etc */
	host_path(p, sizeof(p), "hostname");
	REQUIRE(symlink("/etc/hostname", p) == 0);
	const char *code = NULL;
	int x = do_read_rc("hostname");
	CHECK_INT(x, SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(sandbox_files_exit_http(x, &code), 403);
	CHECK_STR(code, "symlink_not_followed");
	CHECK_INT(do_write("hostname", "pwned\n", 6, MAX_FILE, 6, false, NULL),
		  SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_delete("hostname"), SBX_FILES_EXIT_SYMLINK);
	CHECK(host_exists("hostname"));
	/* refused before reading a large body: the script drains stdin, so
	 * the exit status still arrives (not a transport error) */
	if (big)
		CHECK_INT(do_write("hostname", big, big_len, MAX_FILE, (int64_t)big_len, false,
				   NULL),
			  SBX_FILES_EXIT_SYMLINK);
	file_unchanged("/etc/hostname", hostname, hlen);
	/* ... and the listing link to the /etc directory */
	CHECK_INT(do_read_rc("list/etc"), SBX_FILES_EXIT_SYMLINK);
	CHECK_INT(do_delete("list/etc"), SBX_FILES_EXIT_SYMLINK);

	/* a directory component pointing outside */
	x = do_read_rc("list/etc/hostname");
	CHECK_INT(x, SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(sandbox_files_exit_http(x, &code), 403);
	CHECK_STR(code, "path_outside_workspace");
	CHECK_INT(do_read_rc("list/etc/passwd"), SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_write("list/etc/hostname", "pwned\n", 6, MAX_FILE, 6, false, NULL),
		  SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_write("list/etc/sbx-files-it", "x", 1, MAX_FILE, 1, true, NULL),
		  SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_write("list/etc/sbx-files-it/x", "x", 1, MAX_FILE, 1, true, NULL),
		  SBX_FILES_EXIT_OUTSIDE);
	CHECK_INT(do_delete("list/etc/hostname"), SBX_FILES_EXIT_OUTSIDE);
	CHECK(access("/etc/sbx-files-it", F_OK) != 0);
	CHECK_INT(count_temp_files("/etc"), 0);
	file_unchanged("/etc/hostname", hostname, hlen);
	free(hostname);

	/* a symlinked directory that stays inside is followed */
	host_path(p, sizeof(p), "alias");
	REQUIRE(symlink("list", p) == 0);
	struct kube_exec_result res;
	CHECK_INT(do_read("alias/with space", MAX_FILE, &res), 0);
	CHECK(res.stdout_len == 9 && memcmp(res.stdout_data, "F 5\n12345", 9) == 0);
	kube_exec_result_release(&res);
}

static void test_resolver_dotdot(void)
{
	char out[SBX_FILES_PATH_MAX], p[600];
	const char *code = NULL;
	CHECK_INT(sandbox_files_resolve(ws, "../etc/passwd", out, sizeof(out), &code), -EINVAL);
	CHECK_STR(code, "invalid_path");
	CHECK_INT(sandbox_files_resolve(ws, "list/../../etc", out, sizeof(out), &code), -EINVAL);
	CHECK_INT(sandbox_files_resolve(ws, "list/..", out, sizeof(out), &code), -EINVAL);
	snprintf(p, sizeof(p), "%s/../etc/passwd", ws);
	CHECK_INT(sandbox_files_resolve(ws, p, out, sizeof(out), &code), -EINVAL);
	CHECK_INT(sandbox_files_resolve(ws, "/etc/passwd", out, sizeof(out), &code), -EPERM);
	CHECK_STR(code, "path_outside_workspace");
	snprintf(p, sizeof(p), "%s-other/x", ws);
	CHECK_INT(sandbox_files_resolve(ws, p, out, sizeof(out), &code), -EPERM);
	/* and a path the resolver would never give is refused inside too */
	snprintf(p, sizeof(p), "%s/../etc/passwd", ws);
	char **a = sandbox_files_read_argv(SHELL, ws, p, MAX_FILE, 10);
	struct kube_exec_result res;
	CHECK_INT(exec_run(a, NULL, 0, 4096, &res), SBX_FILES_EXIT_BAD_ARGS);
	CHECK_INT(res.stdout_len, 0);
	kube_exec_result_release(&res);
	sandbox_files_argv_free(a);
}

static int rm_rf(const char *p)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", p); /* our own mkdtemp path */
	return system(cmd);
}

int main(void)
{
	cluster_env_load();
	admin = cluster_admin_client();
	ns = cluster_env("KUBE_NAMESPACE");
	char err[512];
	if (kube_config_load_file(cluster_env("KUBECONFIG"), NULL, &kcfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "kubeconfig: %s\n", err);
		return 2;
	}
	ec = kube_exec_client_new(kcfg, err, sizeof(err));
	if (!ec) {
		fprintf(stderr, "kube_exec_client_new: %s\n", err);
		return 2;
	}
	snprintf(ws, sizeof(ws), "/var/tmp/sbx-files-ws-XXXXXX");
	if (!mkdtemp(ws)) {
		perror("mkdtemp");
		return 2;
	}
	if (setup_pod() != 0) {
		kube_exec_client_free(ec);
		rm_rf(ws);
		return 1;
	}
	printf("workspace (host): %s\n", ws);
	RUN(test_roundtrip_10mib);
	RUN(test_listing);
	RUN(test_delete_and_missing);
	RUN(test_oversize);
	RUN(test_symlinks);
	RUN(test_resolver_dotdot);
	CHECK_INT(kube_exec_client_active(ec), 0);
	kube_exec_client_free(ec);
	teardown_pod();
	kube_config_free(kcfg);
	kube_client_free(admin);
	free(big);
	rm_rf(ws);
	return test_summary();
}
