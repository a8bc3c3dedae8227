/*
 * Unit tests for controller/kube_config.c: kubeconfig parsing (valid, missing
 * pieces, malformed and hostile YAML, relative paths, missing files), the
 * base64 decoder, and in-cluster configuration.
 */
#include "kube_config.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static void write_file(const char *dir, const char *name, const char *content)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(content, f);
	fclose(f);
}

/* "-----BEGIN CERTIFICATE-----\nTEST\n" in base64, as a stand-in CA bundle */
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClRFU1QK"

static const char *const good =
	"apiVersion: v1\n"
	"kind: Config\n"
	"current-context: dev\n"
	"clusters:\n"
	"- name: other\n"
	"  cluster:\n"
	"    server: https://10.0.0.1:6443\n"
	"- name: local\n"
	"  cluster:\n"
	"    server: https://127.0.0.1:6443/\n"
	"    certificate-authority-data: " CA_B64 "\n"
	"contexts:\n"
	"- name: dev\n"
	"  context:\n"
	"    cluster: local\n"
	"    user: admin\n"
	"    namespace: sandboxes\n"
	"- name: second\n"
	"  context:\n"
	"    cluster: other\n"
	"    user: fileuser\n"
	"users:\n"
	"- name: admin\n"
	"  user:\n"
	"    token: s3cr3t-token\n"
	"- name: fileuser\n"
	"  user:\n"
	"    tokenFile: tok\n";

static void test_good(void)
{
	struct kube_config *cfg = NULL;
	char err[256] = "";
	int rc = kube_config_load_buffer(good, strlen(good), "/base", NULL, &cfg, err,
					 sizeof(err));
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->server, "https://127.0.0.1:6443"); /* trailing slash dropped */
	CHECK_STR(cfg->namespace, "sandboxes");
	CHECK_STR(cfg->token, "s3cr3t-token");
	CHECK(cfg->token_file == NULL);
	CHECK_INT(cfg->ca_len, 33);
	CHECK(cfg->ca_pem && strncmp(cfg->ca_pem, "-----BEGIN CERTIFICATE-----\nTEST\n", 33) == 0);
	CHECK(!cfg->insecure_skip_tls_verify);
	CHECK(cfg->source && strstr(cfg->source, "dev") != NULL);
	CHECK(strstr(cfg->source, "s3cr3t") == NULL);
	kube_config_free(cfg);
}

static void test_explicit_context_and_relative_token_file(void)
{
	struct kube_config *cfg = NULL;
	char err[256] = "";
	int rc = kube_config_load_buffer(good, strlen(good), "/base/dir", "second", &cfg,
					 err, sizeof(err));
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->server, "https://10.0.0.1:6443");
	CHECK_STR(cfg->token_file, "/base/dir/tok");
	CHECK(cfg->token == NULL);
	CHECK(cfg->namespace == NULL);
	CHECK(cfg->ca_pem == NULL);
	kube_config_free(cfg);
}

static void expect_error(const char *yaml, const char *context, int want_rc,
			 const char *want_substr)
{
	struct kube_config *cfg = NULL;
	char err[256] = "";
	int rc = kube_config_load_buffer(yaml, strlen(yaml), tmpdir, context, &cfg, err,
					 sizeof(err));
	CHECK(rc != 0);
	if (want_rc)
		CHECK_INT(rc, want_rc);
	CHECK(cfg == NULL);
	if (!strstr(err, want_substr)) {
		fprintf(stderr, "  error was \"%s\", expected it to mention \"%s\"\n", err,
			want_substr);
		CHECK(strstr(err, want_substr) != NULL);
	}
	/* no secret from the input in the message */
	CHECK(strstr(err, "s3cr3t") == NULL);
}

static void test_missing_pieces(void)
{
	expect_error("", NULL, -EINVAL, "not a mapping");
	expect_error("- a\n- b\n", NULL, -EINVAL, "not a mapping");
	expect_error("clusters: []\n", NULL, -EINVAL, "current-context");
	expect_error(good, "nope", -ENOENT, "no context named \"nope\"");
	expect_error("current-context: x\ncontexts:\n- name: x\n  context:\n    user: u\n",
		     NULL, -EINVAL, "context.cluster: missing");
	expect_error("current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: c\n",
		     NULL, -ENOENT, "no cluster named \"c\"");
	expect_error("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
		     "clusters:\n- name: c\n  cluster: {server: 'https://h:1'}\n",
		     NULL, -ENOENT, "no user named \"u\"");
	expect_error("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\n"
		     "clusters:\n- name: c\n  cluster: {}\n",
		     NULL, -EINVAL, "server: missing");
	/* a context that is a scalar, a cluster list that is a mapping */
	expect_error("current-context: x\ncontexts:\n- name: x\n  context: oops\n", NULL,
		     -ENOENT, "no context");
	expect_error("current-context: x\ncontexts: {x: y}\n", NULL, -ENOENT, "no context");
}

static void test_refused_settings(void)
{
#define BASE "current-context: x\n" \
	     "contexts:\n- name: x\n  context: {cluster: c, user: u}\n" \
	     "clusters:\n- name: c\n  cluster: {server: '%s'}\n" \
	     "users:\n- name: u\n  user:\n    %s\n"
	char y[1024];
	snprintf(y, sizeof(y), BASE, "https://h:1", "exec: {command: /bin/evil}");
	expect_error(y, NULL, -ENOTSUP, "user.exec: not supported");
	snprintf(y, sizeof(y), BASE, "https://h:1", "auth-provider: {name: gcp}");
	expect_error(y, NULL, -ENOTSUP, "auth-provider");
	snprintf(y, sizeof(y), BASE, "https://h:1", "username: bob");
	expect_error(y, NULL, -ENOTSUP, "username");
	/* credentials over plain http are refused; a bare URL is not https */
	snprintf(y, sizeof(y), BASE, "http://h:1", "token: s3cr3t");
	expect_error(y, NULL, -EINVAL, "plain http");
	snprintf(y, sizeof(y), BASE, "ftp://h:1", "token: s3cr3t");
	expect_error(y, NULL, -EINVAL, "not an https:// URL");
	snprintf(y, sizeof(y), BASE, "https://", "token: s3cr3t");
	expect_error(y, NULL, -EINVAL, "no host");
	snprintf(y, sizeof(y), BASE, "https://h:1/?x", "token: s3cr3t");
	expect_error(y, NULL, -EINVAL, "invalid character");
	/* a certificate without its key */
	snprintf(y, sizeof(y), BASE, "https://h:1", "client-certificate-data: " CA_B64);
	expect_error(y, NULL, -EINVAL, "needs both");
	/* bad base64 */
	snprintf(y, sizeof(y), BASE, "https://h:1", "client-key-data: '!!notbase64!!'");
	expect_error(y, NULL, -EINVAL, "not valid base64");
}

static void test_files_relative_and_missing(void)
{
	write_file(tmpdir, "ca.crt", "-----BEGIN CERTIFICATE-----\nCA\n");
	write_file(tmpdir, "client.crt", "CERT");
	write_file(tmpdir, "client.key", "KEY");
	char y[2048];
	snprintf(y, sizeof(y),
		 "current-context: x\n"
		 "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
		 "clusters:\n- name: c\n  cluster:\n    server: https://h:1\n"
		 "    certificate-authority: ca.crt\n    insecure-skip-tls-verify: true\n"
		 "    tls-server-name: kubernetes.default\n"
		 "users:\n- name: u\n  user:\n    client-certificate: client.crt\n"
		 "    client-key: %s/client.key\n",
		 tmpdir);
	char path[512];
	snprintf(path, sizeof(path), "%s/kubeconfig", tmpdir);
	write_file(tmpdir, "kubeconfig", y);
	struct kube_config *cfg = NULL;
	char err[256] = "";
	int rc = kube_config_load_file(path, NULL, &cfg, err, sizeof(err));
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->ca_pem, "-----BEGIN CERTIFICATE-----\nCA\n");
	CHECK_STR(cfg->cert_pem, "CERT");
	CHECK_STR(cfg->key_pem, "KEY");
	CHECK_INT(cfg->key_len, 3);
	CHECK(cfg->insecure_skip_tls_verify);
	CHECK_STR(cfg->tls_server_name, "kubernetes.default");
	CHECK(strstr(cfg->source, path) != NULL);
	kube_config_free(cfg);

	/* a referenced file that does not exist is named in the error */
	snprintf(y, sizeof(y),
		 "current-context: x\n"
		 "contexts:\n- name: x\n  context: {cluster: c}\n"
		 "clusters:\n- name: c\n  cluster:\n    server: https://h:1\n"
		 "    certificate-authority: missing-ca.crt\n");
	write_file(tmpdir, "kubeconfig2", y);
	snprintf(path, sizeof(path), "%s/kubeconfig2", tmpdir);
	rc = kube_config_load_file(path, NULL, &cfg, err, sizeof(err));
	CHECK_INT(rc, -ENOENT);
	CHECK(strstr(err, "missing-ca.crt") != NULL);
	CHECK(strstr(err, "certificate-authority") != NULL);

	/* the kubeconfig itself missing */
	snprintf(path, sizeof(path), "%s/does-not-exist", tmpdir);
	rc = kube_config_load_file(path, NULL, &cfg, err, sizeof(err));
	CHECK_INT(rc, -ENOENT);
	CHECK(strstr(err, "does-not-exist") != NULL);
}

static void test_hostile_yaml(void)
{
	/* malformed */
	expect_error("current-context: [unclosed\n", NULL, -EINVAL, "invalid YAML");
	expect_error("a: b: c: d\n", NULL, -EINVAL, "invalid YAML");
	expect_error("\t- tab\n", NULL, -EINVAL, "invalid YAML");
	/* an alias used where a scalar is expected, and alias fan-out: the
	 * loader keeps aliases as references, nothing is expanded */
	const char *laughs =
		"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
		"b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
		"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
		"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
		"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
		"f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
		"current-context: *f\n";
	expect_error(laughs, NULL, -EINVAL, "current-context");
	/* a context list whose entry refers to itself */
	expect_error("current-context: x\ncontexts: &l\n- name: x\n  context: *l\n", NULL,
		     -ENOENT, "no context");
	/* deep nesting: refused by the depth pre-pass before libyaml's scanner,
	 * which is quadratic in nesting depth, can spin on it (regression: a
	 * file of 50,000 "[" took seconds, 1 MiB of them would take hours) */
	size_t big_n = KUBE_CONFIG_MAX_FILE - 64;
	char *deep = malloc(big_n + 64);
	REQUIRE(deep);
	size_t n = (size_t)sprintf(deep, "current-context: ");
	memset(deep + n, '[', big_n - n);
	n = big_n;
	deep[n] = '\0';
	struct kube_config *cfg = NULL;
	char err[256];
	int rc = kube_config_load_buffer(deep, n, NULL, NULL, &cfg, err, sizeof(err));
	CHECK_INT(rc, -EINVAL);
	CHECK(strstr(err, "nested deeper") != NULL);
	CHECK(cfg == NULL);
	free(deep);
	/* NUL bytes and binary junk */
	const char junk[] = "current-context: x\0\xff\xfe\x01garbage";
	rc = kube_config_load_buffer(junk, sizeof(junk) - 1, NULL, NULL, &cfg, err, sizeof(err));
	CHECK(rc != 0);
	/* over the size limit: refused before parsing */
	rc = kube_config_load_buffer("x", KUBE_CONFIG_MAX_FILE + 1, NULL, NULL, &cfg, err,
				     sizeof(err));
	CHECK_INT(rc, -EFBIG);
	/* a token of absurd length */
	size_t big = KUBE_CONFIG_MAX_TOKEN + 10;
	char *y = malloc(big + 512);
	REQUIRE(y);
	int off = sprintf(y, "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
			     "clusters:\n- name: c\n  cluster: {server: 'https://h:1'}\n"
			     "users:\n- name: u\n  user:\n    token: ");
	memset(y + off, 'A', big);
	strcpy(y + off + big, "\n");
	rc = kube_config_load_buffer(y, strlen(y), NULL, NULL, &cfg, err, sizeof(err));
	CHECK_INT(rc, -E2BIG);
	CHECK(strstr(err, "token: too long") != NULL);
	free(y);
}

static void test_base64(void)
{
	char *out;
	size_t len;
	CHECK_INT(kube_base64_decode("aGVsbG8=", 8, 100, &out, &len), 0);
	CHECK_INT(len, 5);
	CHECK_STR(out, "hello");
	free(out);
	CHECK_INT(kube_base64_decode("aGVs\nbG8", 8, 100, &out, &len), 0); /* unpadded, wrapped */
	CHECK_STR(out, "hello");
	free(out);
	CHECK_INT(kube_base64_decode("", 0, 100, &out, &len), 0);
	CHECK_INT(len, 0);
	free(out);
	CHECK_INT(kube_base64_decode("a", 1, 100, &out, &len), -EINVAL);
	CHECK_INT(kube_base64_decode("aGVsbG8=x", 9, 100, &out, &len), -EINVAL);
	CHECK_INT(kube_base64_decode("aGVsbG8===", 10, 100, &out, &len), -EINVAL);
	CHECK_INT(kube_base64_decode("====", 4, 100, &out, &len), -EINVAL);
	CHECK_INT(kube_base64_decode("aG#s", 4, 100, &out, &len), -EINVAL);
	CHECK_INT(kube_base64_decode("aGVsbG8=", 8, 4, &out, &len), -E2BIG);
	CHECK(out == NULL);
}

static void test_in_cluster(void)
{
	char sa[300];
	snprintf(sa, sizeof(sa), "%s/sa", tmpdir);
	mkdir(sa, 0700);
	struct kube_config *cfg = NULL;
	char err[256];
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "KUBERNETES_SERVICE_HOST") != NULL);

	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	/* no token file yet */
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "/token") != NULL);
	write_file(sa, "token", "s3cr3t-sa-token\n");
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "ca.crt") != NULL);
	write_file(sa, "ca.crt", "PEM");
	write_file(sa, "namespace", "sandboxes\n");
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->server, "https://10.96.0.1:443");
	CHECK_STR(cfg->namespace, "sandboxes");
	CHECK_STR(cfg->ca_pem, "PEM");
	CHECK(cfg->token == NULL); /* kept as a file, re-read as it rotates */
	CHECK(cfg->token_file && strstr(cfg->token_file, "/sa/token"));
	kube_config_free(cfg);

	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->server, "https://[fd00::1]:443");
	kube_config_free(cfg);

	setenv("KUBERNETES_SERVICE_HOST", "evil/path", 1);
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), -EINVAL);
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443x", 1);
	CHECK_INT(kube_config_in_cluster(sa, &cfg, err, sizeof(err)), -EINVAL);
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_default_order(void)
{
	struct kube_config *cfg = NULL;
	char err[256];
	char path[512];
	snprintf(path, sizeof(path), "%s/kubeconfig-default", tmpdir);
	write_file(tmpdir, "kubeconfig-default", good);
	char env[1100];
	snprintf(env, sizeof(env), "%s:/nonexistent/second", path);
	setenv("KUBECONFIG", env, 1);
	CHECK_INT(kube_config_load_default(NULL, NULL, &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->server, "https://127.0.0.1:6443");
	kube_config_free(cfg);
	/* an explicit path wins over KUBECONFIG */
	CHECK_INT(kube_config_load_default("/nonexistent/explicit", NULL, &cfg, err,
					   sizeof(err)),
		  -ENOENT);
	CHECK(strstr(err, "/nonexistent/explicit") != NULL);
	unsetenv("KUBECONFIG");
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_kube_config.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_good);
	RUN(test_explicit_context_and_relative_token_file);
	RUN(test_missing_pieces);
	RUN(test_refused_settings);
	RUN(test_files_relative_and_missing);
	RUN(test_hostile_yaml);
	RUN(test_base64);
	RUN(test_in_cluster);
	RUN(test_default_order);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", tmpdir);
	return test_summary();
}
