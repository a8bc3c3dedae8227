/*
 * Unit tests for controller/config.c: the sample configuration in docs/, the
 * defaults, one check per validation rule (each asserting that the message
 * names the key), environment and flag overrides and their precedence,
 * quantity and duration tables, and hostile YAML.
 */
#include "config.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define SAMPLE SBX_TEST_DATA "/../../../docs/sample-config.yaml"

static char tmpdir[256];

static char *write_tmp(const char *name, const char *content)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(content, f);
	fclose(f);
	return path;
}

/* ---- the sample ---- */

static void test_sample(void)
{
	char *yaml = NULL;
	size_t len = 0;
	REQUIRE(read_file_bounded(SAMPLE, CONFIG_MAX_FILE, &yaml, &len) == 0);
	struct sbx_config *cfg = NULL;
	char err[512] = "";
	int rc = config_parse(yaml, len, &cfg, err, sizeof(err));
	free(yaml);
	if (rc)
		fprintf(stderr, "  sample: %s\n", err);
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->namespace, "sandboxes");
	CHECK_STR(cfg->listen_address, "0.0.0.0");
	CHECK_INT(cfg->port, 8080);
	CHECK(cfg->kubeconfig == NULL);
	CHECK(cfg->kube_context == NULL);
	CHECK_INT(cfg->max_body_bytes, 1 << 20);
	CHECK_INT(cfg->max_env_vars, 64);
	CHECK_INT(cfg->max_env_bytes, 32 << 10);
	CHECK_INT(cfg->max_labels, 16);
	CHECK_INT(cfg->create_timeout_s, 120);
	CHECK_STR(cfg->log_level, "info");
	CHECK_STR(cfg->log_format, "json");
	REQUIRE(cfg->ntemplates == 3);

	const struct sbx_template *py = config_template(cfg, "python");
	REQUIRE(py);
	CHECK(py == &cfg->templates[0]);
	CHECK_STR(py->image, "python:3.12-slim");
	CHECK_INT(py->ncommand, 2);
	CHECK_STR(py->command[0], "sleep");
	CHECK_STR(py->command[1], "infinity");
	CHECK(py->command[2] == NULL);
	CHECK_STR(py->workspace_path, "/workspace");
	CHECK_STR(py->workspace_size, "1Gi");
	CHECK_STR(py->tmp_size, "256Mi");
	CHECK_INT(py->run_as_user, 1000);
	CHECK_INT(py->run_as_group, 1000);
	CHECK_STR(py->cpu_request, "100m");
	CHECK_STR(py->cpu_limit, "1");
	CHECK_STR(py->memory_request, "128Mi");
	CHECK_STR(py->memory_limit, "512Mi");
	CHECK_STR(py->ephemeral_request, "256Mi");
	CHECK_STR(py->ephemeral_limit, "2Gi");
	CHECK_INT(py->cpu_limit_milli, 1000);
	CHECK_INT(py->memory_limit_bytes, 512LL << 20);
	CHECK(py->runtime_class == NULL);
	CHECK_INT(py->nenv, 2);
	CHECK_STR(py->env[0].key, "PYTHONUNBUFFERED");
	CHECK_STR(py->env[0].value, "1");
	CHECK_STR(py->env[1].key, "PYTHONDONTWRITEBYTECODE");
	CHECK_INT(py->network, SBX_NET_NONE);
	CHECK_INT(py->negress, 0);
	CHECK_INT(py->default_lifetime_s, 3600);
	CHECK_INT(py->max_lifetime_s, 86400);

	const struct sbx_template *web = config_template(cfg, "web");
	REQUIRE(web);
	CHECK_INT(web->network, SBX_NET_INTERNET);
	CHECK_STR(web->workspace_path, "/home/sandbox");
	CHECK_INT(web->cpu_limit_milli, 2000);
	CHECK_INT(web->memory_limit_bytes, 1LL << 30);
	CHECK_INT(web->default_lifetime_s, 1800);
	CHECK_INT(web->max_lifetime_s, 4 * 3600);
	CHECK_STR(web->env[1].key, "npm_config_cache");

	const struct sbx_template *ci = config_template(cfg, "ci");
	REQUIRE(ci);
	CHECK_INT(ci->network, SBX_NET_ALLOWLIST);
	CHECK_INT(ci->run_as_user, 2000);
	REQUIRE(ci->negress == 3);
	CHECK_STR(ci->egress[0].cidr, "203.0.113.0/24");
	CHECK_INT(ci->egress[0].nports, 2);
	CHECK_INT(ci->egress[0].ports[0], 443);
	CHECK_INT(ci->egress[0].ports[1], 22);
	CHECK_STR(ci->egress[0].protocol, "TCP");
	CHECK_STR(ci->egress[1].cidr, "2001:db8:1::/48");
	CHECK_STR(ci->egress[2].protocol, "UDP");
	CHECK_INT(ci->egress[2].ports[0], 123);

	CHECK(config_template(cfg, "nope") == NULL);
	CHECK(config_template(cfg, NULL) == NULL);
	CHECK(config_template(NULL, "python") == NULL);
	config_free(cfg);
	config_free(NULL);
}

/* ---- a minimal valid file, and mutations of it ---- */

static const char *const base =
	"templates:\n"
	"  - name: t\n"
	"    image: img:1\n"
	"    command: [sleep, infinity]\n"
	"    workspace: {path: /workspace, size: 1Gi}\n"
	"    tmp_size: 64Mi\n"
	"    user: 1000\n"
	"    group: 1000\n"
	"    resources:\n"
	"      requests: {cpu: 100m, memory: 128Mi, ephemeral-storage: 128Mi}\n"
	"      limits: {cpu: \"1\", memory: 512Mi, ephemeral-storage: 2Gi}\n"
	"    network: {profile: none}\n"
	"    lifetime: {default: 1h, max: 24h}\n";

/* base with the first occurrence of old replaced by new (caller frees) */
static char *mutate(const char *old, const char *new_)
{
	const char *at = strstr(base, old);
	if (!at) {
		fprintf(stderr, "mutate: \"%s\" not in base\n", old);
		exit(2);
	}
	size_t n = strlen(base) - strlen(old) + strlen(new_) + 1;
	char *s = malloc(n);
	if (!s)
		exit(2);
	snprintf(s, n, "%.*s%s%s", (int)(at - base), base, new_, at + strlen(old));
	return s;
}

static int expect_error_at(const char *file, int line, const char *yaml, size_t len,
			   const char *want)
{
	struct sbx_config *cfg = NULL;
	char err[512] = "";
	int rc = config_parse(yaml, len, &cfg, err, sizeof(err));
	CHECK(rc != 0);
	CHECK(cfg == NULL);
	if (!strstr(err, want)) {
		fprintf(stderr, "%s:%d: error was \"%s\", expected it to contain \"%s\"\n", file,
			line, err, want);
		CHECK(strstr(err, want) != NULL);
	} else {
		t_passed++;
	}
	config_free(cfg);
	return rc;
}
#define expect_error(yaml, want) expect_error_at(__FILE__, __LINE__, (yaml), strlen(yaml), (want))

/* mutate base and expect an error naming want */
static void bad_at(const char *file, int line, const char *old, const char *new_,
		   const char *want)
{
	char *y = mutate(old, new_);
	expect_error_at(file, line, y, strlen(y), want);
	free(y);
}
#define bad(old, new_, want) bad_at(__FILE__, __LINE__, (old), (new_), (want))

static void test_minimal_and_defaults(void)
{
	struct sbx_config *cfg = NULL;
	char err[512] = "";
	const char *y =
		"templates:\n"
		"- name: a\n"
		"  image: x\n"
		"  command: [run]\n"
		"  workspace: {size: 1Gi}\n"
		"  user: 1\n"
		"  group: 1\n"
		"  resources:\n"
		"    requests: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1Mi}\n"
		"    limits: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1088Mi}\n";
	int rc = config_parse(y, strlen(y), &cfg, err, sizeof(err));
	if (rc)
		fprintf(stderr, "  minimal: %s\n", err);
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->namespace, "sandboxes");
	CHECK_STR(cfg->listen_address, "0.0.0.0");
	CHECK_INT(cfg->port, 8080);
	CHECK_STR(cfg->log_level, "info");
	CHECK_STR(cfg->log_format, "json");
	CHECK_INT(cfg->max_body_bytes, 1 << 20);
	CHECK_INT(cfg->create_timeout_s, 120);
	const struct sbx_template *t = &cfg->templates[0];
	CHECK_STR(t->workspace_path, "/workspace");
	CHECK_STR(t->tmp_size, "64Mi");
	CHECK_INT(t->network, SBX_NET_NONE);
	CHECK_INT(t->default_lifetime_s, 3600);
	CHECK_INT(t->max_lifetime_s, 86400);
	CHECK_INT(t->nenv, 0);
	CHECK_INT(t->cpu_limit_milli, 1);
	CHECK(t->runtime_class == NULL);
	config_free(cfg);

	/* the base parses, and quoted numbers and explicit nulls are fine */
	rc = config_parse(base, strlen(base), &cfg, err, sizeof(err));
	CHECK_INT(rc, 0);
	config_free(cfg);
	char *q = mutate("    user: 1000\n", "    user: \"1000\"\n    runtime_class: ~\n");
	rc = config_parse(q, strlen(q), &cfg, err, sizeof(err));
	CHECK_INT(rc, 0);
	if (cfg)
		CHECK_INT(cfg->templates[0].run_as_user, 1000);
	config_free(cfg);
	free(q);

	/* every top-level section given */
	char *full = malloc(strlen(base) + 1024);
	REQUIRE(full);
	sprintf(full,
		"namespace: sbx-1\n"
		"listen: {address: \"::1\", port: 9000}\n"
		"kubernetes: {kubeconfig: /etc/kc, context: prod}\n"
		"limits: {max_body_bytes: 65536, max_env_vars: 0, max_env_bytes: 0,"
		" max_labels: 64, create_timeout: 5m}\n"
		"log: {level: warning, format: text}\n%s",
		base);
	rc = config_parse(full, strlen(full), &cfg, err, sizeof(err));
	free(full);
	if (rc)
		fprintf(stderr, "  full: %s\n", err);
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->namespace, "sbx-1");
	CHECK_STR(cfg->listen_address, "::1");
	CHECK_INT(cfg->port, 9000);
	CHECK_STR(cfg->kubeconfig, "/etc/kc");
	CHECK_STR(cfg->kube_context, "prod");
	CHECK_INT(cfg->max_body_bytes, 65536);
	CHECK_INT(cfg->max_env_vars, 0);
	CHECK_INT(cfg->max_env_bytes, 0);
	CHECK_INT(cfg->max_labels, 64);
	CHECK_INT(cfg->create_timeout_s, 300);
	CHECK_STR(cfg->log_level, "warn");
	CHECK_STR(cfg->log_format, "text");
	config_free(cfg);
}

static void test_template_errors(void)
{
	/* keys */
	bad("    image: img:1\n", "    imagee: img:1\n", "templates[0].imagee: unknown key");
	bad("    image: img:1\n", "    image: img:1\n    image: img:2\n",
	    "templates[0].image: duplicate key");
	bad("    network: {profile: none}\n", "    network: {profile: none, mode: x}\n",
	    "templates[0].network.mode: unknown key");
	/* name */
	bad("name: t\n", "name: Bad_Name\n", "templates[0].name: \"Bad_Name\" is not a valid");
	bad("name: t\n", "name: -t\n", "templates[0].name");
	bad("name: t\n", "name: t-\n", "templates[0].name");
	bad("name: t\n", "name: abcdefghijabcdefghijabcdefghijabcdefghijk\n", "templates[0].name");
	bad("  - name: t\n", "  - image: x\n", "templates[0].image: duplicate key");
	bad("  - name: t\n    image: img:1\n", "  - image: img:1\n", "templates[0].name: missing");
	{
		size_t n = strlen(base) * 2 + 16;
		char *two = malloc(n);
		REQUIRE(two);
		snprintf(two, n, "%s%s", base, strstr(base, "  - name"));
		expect_error(two, "templates[1].name: duplicate template name \"t\"");
		free(two);
	}
	/* image */
	bad("image: img:1\n", "image: \"\"\n", "templates[0].image: must not be empty");
	bad("image: img:1\n", "image: \"img 1\"\n", "templates[0].image: must not contain whitespace");
	bad("image: img:1\n", "image: \"img\\t1\"\n", "templates[0].image");
	bad("    image: img:1\n", "", "templates[0].image: missing");
	bad("image: img:1\n", "image: [a]\n", "templates[0].image: expected a scalar, found a list");
	/* command */
	bad("command: [sleep, infinity]\n", "command: []\n", "templates[0].command: must not be empty");
	bad("command: [sleep, infinity]\n", "command: sleep\n", "templates[0].command: expected a list");
	bad("command: [sleep, infinity]\n", "command: [\"\"]\n", "templates[0].command[0]");
	bad("command: [sleep, infinity]\n", "command: [sleep, {a: b}]\n",
	    "templates[0].command[1]: expected a scalar");
	bad("command: [sleep, infinity]\n", "command: [sleep, ~]\n", "templates[0].command[1]");
	bad("    command: [sleep, infinity]\n", "", "templates[0].command: missing");
	{
		char line[512] = "command: [x";
		for (int i = 0; i < CONFIG_MAX_COMMAND; i++)
			strcat(line, ",a");
		strcat(line, "]\n");
		bad("command: [sleep, infinity]\n", line, "templates[0].command: too many");
	}
	/* user and group: never 0 */
	bad("user: 1000\n", "user: 0\n",
	    "templates[0].user: must be a positive integer (not 0): root is never allowed");
	bad("group: 1000\n", "group: 0\n",
	    "templates[0].group: must be a positive integer (not 0): root is never allowed");
	bad("user: 1000\n", "user: -1\n", "templates[0].user: \"-1\" is not a positive integer");
	bad("user: 1000\n", "user: 010\n", "templates[0].user");
	bad("user: 1000\n", "user: 1e3\n", "templates[0].user");
	bad("user: 1000\n", "user: 2147483648\n", "templates[0].user");
	bad("    user: 1000\n", "", "templates[0].user: missing");
	bad("    group: 1000\n", "", "templates[0].group: missing");
	/* quantities */
	bad("limits: {cpu: \"1\"", "limits: {cpu: 1x", "templates[0].resources.limits.cpu: \"1x\" is not a quantity");
	bad("limits: {cpu: \"1\"", "limits: {cpu: -1", "templates[0].resources.limits.cpu");
	bad("limits: {cpu: \"1\"", "limits: {cpu: \"0\"",
	    "templates[0].resources.limits.cpu: must be greater than zero");
	bad("limits: {cpu: \"1\"", "limits: {cpu: 0.0001", "templates[0].resources.limits.cpu: \"0.0001\" is finer than 1m");
	bad("requests: {cpu: 100m, memory: 128Mi", "requests: {cpu: 100m, memory: 128m",
	    "templates[0].resources.requests.memory: \"128m\" is not a whole number of bytes");
	bad("memory: 512Mi", "memory: 99999999999Ei", "templates[0].resources.limits.memory: \"99999999999Ei\" is too large");
	bad("ephemeral-storage: 2Gi", "ephemeral-storage: 2GB", "templates[0].resources.limits.ephemeral-storage");
	/* requests <= limits, one per resource */
	bad("requests: {cpu: 100m", "requests: {cpu: \"2\"",
	    "templates[0].resources.requests.cpu: 2 exceeds the limit 1");
	bad("memory: 128Mi", "memory: 1Gi",
	    "templates[0].resources.requests.memory: 1Gi exceeds the limit 512Mi");
	bad("ephemeral-storage: 128Mi", "ephemeral-storage: 3Gi",
	    "templates[0].resources.requests.ephemeral-storage: 3Gi exceeds the limit 2Gi");
	bad("      limits: {cpu: \"1\", memory: 512Mi, ephemeral-storage: 2Gi}\n", "",
	    "templates[0].resources.limits: missing");
	bad("requests: {cpu: 100m, memory: 128Mi, ", "requests: {cpu: 100m, ",
	    "templates[0].resources.requests.memory: missing");
	bad("limits: {cpu: \"1\", ", "limits: {gpu: \"1\", cpu: \"1\", ",
	    "templates[0].resources.limits.gpu: unknown key");
	bad("    resources:\n", "    resources: {}\n    x:\n", "templates[0].x: unknown key");
	bad("ephemeral-storage: 2Gi", "ephemeral-storage: 1Gi",
	    "templates[0].resources.limits.ephemeral-storage: 1Gi is less than workspace.size + tmp_size");
	/* workspace */
	bad("path: /workspace", "path: workspace", "templates[0].workspace.path: \"workspace\" must be an absolute path");
	bad("path: /workspace", "path: /a/../b", "templates[0].workspace.path");
	bad("path: /workspace", "path: /a/./b", "templates[0].workspace.path");
	bad("path: /workspace", "path: /", "templates[0].workspace.path: \"/\" must not be \"/\"");
	bad("path: /workspace", "path: /tmp", "templates[0].workspace.path: \"/tmp\" must not be /tmp");
	bad("path: /workspace", "path: /tmp/w", "templates[0].workspace.path");
	bad("path: /workspace", "path: /proc", "templates[0].workspace.path");
	bad("path: /workspace", "path: /workspace/", "templates[0].workspace.path");
	bad("path: /workspace", "path: //w", "templates[0].workspace.path");
	bad("path: /workspace", "path: \"/w s\"", "templates[0].workspace.path");
	bad("workspace: {path: /workspace, size: 1Gi}", "workspace: {path: /workspace}",
	    "templates[0].workspace.size: missing");
	bad("size: 1Gi", "size: lots", "templates[0].workspace.size");
	bad("    workspace: {path: /workspace, size: 1Gi}\n", "", "templates[0].workspace: missing");
	bad("tmp_size: 64Mi", "tmp_size: 64MB", "templates[0].tmp_size: \"64MB\" is not a quantity");
	/* lifetimes */
	bad("default: 1h", "default: 0", "templates[0].lifetime.default: must be at least 1s");
	bad("max: 24h", "max: 0s", "templates[0].lifetime.max: must be at least 1s");
	bad("default: 1h", "default: 2d", "templates[0].lifetime.default: 172800s exceeds lifetime.max (86400s)");
	bad("default: 1h", "default: 1x", "templates[0].lifetime.default: \"1x\" is not a duration");
	bad("max: 24h", "max: 3651d", "templates[0].lifetime.max: must be at most");
	/* network */
	bad("profile: none", "profile: open", "templates[0].network.profile: \"open\" is not a network profile");
	bad("{profile: none}", "{profile: none, egress: [{cidr: 10.0.0.0/8}]}",
	    "templates[0].network.egress: only allowed with profile allowlist");
	bad("{profile: none}", "{profile: internet, egress: []}", "templates[0].network.egress: only allowed");
	bad("{profile: none}", "{profile: allowlist}", "templates[0].network.egress: profile allowlist needs at least one rule");
	bad("{profile: none}", "{profile: allowlist, egress: []}", "templates[0].network.egress: profile allowlist needs");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 300.0.0.0/8}]}",
	    "templates[0].network.egress[0].cidr: \"300.0.0.0/8\" not a valid IPv4 address");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0}]}",
	    "templates[0].network.egress[0].cidr: \"10.0.0.0\" needs a prefix length");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/33}]}",
	    "templates[0].network.egress[0].cidr: \"10.0.0.0/33\" prefix length must be");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: \"2001:db8::/129\"}]}",
	    "templates[0].network.egress[0].cidr");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: \"2001:db8::g/32\"}]}",
	    "templates[0].network.egress[0].cidr: \"2001:db8::g/32\" not a valid IPv6 address");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.1/8}]}",
	    "templates[0].network.egress[0].cidr: \"10.0.0.1/8\" has bits set after the /8 prefix");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/08}]}",
	    "templates[0].network.egress[0].cidr");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 010.0.0.0/8}]}",
	    "templates[0].network.egress[0].cidr");
	bad("{profile: none}", "{profile: allowlist, egress: [{ports: [443]}]}",
	    "templates[0].network.egress[0].cidr: missing");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, ports: [0]}]}",
	    "templates[0].network.egress[0].ports[0]: \"0\" is not a port number");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, ports: [80, 65536]}]}",
	    "templates[0].network.egress[0].ports[1]");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, ports: 443}]}",
	    "templates[0].network.egress[0].ports: expected a list");
	bad("{profile: none}",
	    "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, ports: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}]}",
	    "templates[0].network.egress[0].ports: too many ports");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, ports: [1], protocol: SCTP}]}",
	    "templates[0].network.egress[0].protocol: \"SCTP\" is not TCP or UDP");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, protocol: UDP}]}",
	    "templates[0].network.egress[0].protocol: needs ports");
	bad("{profile: none}", "{profile: allowlist, egress: [{cidr: 10.0.0.0/8, port: 1}]}",
	    "templates[0].network.egress[0].port: unknown key");
	/* env */
	bad("    network:", "    env: {1BAD: x}\n    network:",
	    "templates[0].env.1BAD: not a valid environment variable name");
	bad("    network:", "    env: {\"A-B\": x}\n    network:", "templates[0].env.A-B: not a valid");
	bad("    network:", "    env: {X: }\n    network:", "templates[0].env.X: must be a string");
	bad("    network:", "    env: {X: [1]}\n    network:", "templates[0].env.X: expected a scalar");
	bad("    network:", "    env: {X: a, X: b}\n    network:", "templates[0].env.X: duplicate key");
	bad("    network:", "    env: [X]\n    network:", "templates[0].env: expected a mapping");
	{
		size_t n = CONFIG_MAX_ENV_VALUE + 64;
		char *line = malloc(n);
		REQUIRE(line);
		int k = snprintf(line, n, "    env: {X: \"");
		memset(line + k, 'v', CONFIG_MAX_ENV_VALUE + 1);
		strcpy(line + k + CONFIG_MAX_ENV_VALUE + 1, "\"}\n    network:");
		bad("    network:", line, "templates[0].env.X: value too long");
		free(line);
	}
	{
		char *line = malloc(64 * 200);
		REQUIRE(line);
		strcpy(line, "    env: {");
		for (int i = 0; i < CONFIG_MAX_TEMPLATE_ENV + 1; i++)
			sprintf(line + strlen(line), "V%d: x, ", i);
		strcat(line, "}\n    network:");
		bad("    network:", line, "templates[0].env: too many entries");
		free(line);
	}
	/* runtime class */
	bad("    network:", "    runtime_class: Bad_Class\n    network:",
	    "templates[0].runtime_class: \"Bad_Class\" is not a valid RuntimeClass name");
	/* structure */
	expect_error("templates: []\n", "templates: at least one template is required");
	expect_error("namespace: x\n", "templates: at least one template is required");
	expect_error("", "templates: at least one template is required");
	expect_error("templates: {a: b}\n", "templates: expected a list, found a mapping");
	expect_error("templates: [x]\n", "templates[0]: expected a mapping, found a scalar");
	expect_error("- a\n", "(top level): expected a mapping, found a list");
	expect_error("[a]: b\n", "(top level): keys must be scalars");
	{
		char *many = malloc(32 * (CONFIG_MAX_TEMPLATES + 2));
		REQUIRE(many);
		strcpy(many, "templates:\n");
		for (int i = 0; i <= CONFIG_MAX_TEMPLATES; i++)
			strcat(many, "- {}\n");
		expect_error(many, "templates: too many templates");
		free(many);
	}
}

static void test_top_level_errors(void)
{
	char buf[4096];
	static const struct {
		const char *prefix, *want;
	} cases[] = {
		{ "namespce: x\n", "namespce: unknown key" },
		{ "namespace: Bad_NS\n", "namespace: \"Bad_NS\" is not a valid namespace name" },
		{ "namespace: a234567890123456789012345678901234567890123456789012345678901234\n",
		  "namespace:" },
		{ "namespace: \"\"\n", "namespace: must not be empty" },
		{ "namespace: -a\n", "namespace:" },
		{ "listen: {port: 0}\n", "listen.port: \"0\" is not a port number from 1 to 65535" },
		{ "listen: {port: 65536}\n", "listen.port: \"65536\" is not a port number" },
		{ "listen: {port: http}\n", "listen.port: \"http\" is not a port number" },
		{ "listen: {address: example.com}\n",
		  "listen.address: \"example.com\" is not an IPv4 or IPv6 address" },
		{ "listen: {prot: 1}\n", "listen.prot: unknown key" },
		{ "listen: 8080\n", "listen: expected a mapping, found a scalar" },
		{ "kubernetes: {context: \"\"}\n", "kubernetes.context: must not be empty" },
		{ "kubernetes: {config: x}\n", "kubernetes.config: unknown key" },
		{ "log: {level: verbose}\n", "log.level: \"verbose\" is not a log level" },
		{ "log: {format: xml}\n", "log.format: \"xml\" is not a log format" },
		{ "limits: {max_body_bytes: 10}\n", "limits.max_body_bytes: must be from 1Ki to 64Mi" },
		{ "limits: {max_body_bytes: 1Gi}\n", "limits.max_body_bytes" },
		{ "limits: {max_body_bytes: big}\n", "limits.max_body_bytes: \"big\" is not a quantity" },
		{ "limits: {max_env_vars: 2000}\n", "limits.max_env_vars: 2000 is out of range" },
		{ "limits: {max_env_vars: -1}\n", "limits.max_env_vars: \"-1\" is not a non-negative" },
		{ "limits: {max_env_bytes: 2Mi}\n", "limits.max_env_bytes: must be at most 1Mi" },
		{ "limits: {max_labels: 65}\n", "limits.max_labels: 65 is out of range" },
		{ "limits: {create_timeout: 0}\n", "limits.create_timeout: must be at least 1s" },
		{ "limits: {create_timeout: 2h}\n", "limits.create_timeout: must be at most 3600s" },
		{ "limits: {timeout: 2h}\n", "limits.timeout: unknown key" },
		{ "namespace: a\nnamespace: b\n", "namespace: duplicate key" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(buf, sizeof(buf), "%s%s", cases[i].prefix, base);
		expect_error_at(__FILE__, __LINE__, buf, strlen(buf), cases[i].want);
	}
	/* not YAML, or more than one document */
	expect_error("templates: [unclosed\n", "invalid YAML at line");
	expect_error("a: b: c\n", "invalid YAML");
	expect_error("---\nnamespace: a\n---\nnamespace: b\n", "more than one YAML document");
	/* a NUL byte in a double-quoted scalar */
	bad("image: img:1\n", "image: \"img\\0x\"\n", "templates[0].image: contains a NUL byte");
	bad("  - name: t\n", "  - \"na\\0me\": t\n    name: t\n", "templates[0].na: key contains a NUL byte");
}

/* ---- hostile input ---- */

static void test_hostile_yaml(void)
{
	/* alias fan-out: nothing is expanded, the alias is just a wrong type */
	const char *laughs =
		"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
		"templates: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n";
	expect_error(laughs, "a: unknown key");
	expect_error("templates: &b [[*b, *b], [*b, *b]]\n", "templates[0]: expected a mapping");
	/* a list that contains itself, and a mapping that contains itself */
	expect_error("templates: &t [*t]\n", "templates[0]: expected a mapping, found a list");
	{
		char *y = mutate("    image: img:1\n", "    image: &i [*i]\n");
		expect_error(y, "templates[0].image: expected a scalar");
		free(y);
		y = mutate("    command: [sleep, infinity]\n", "    command: &c [sleep, *c]\n");
		expect_error(y, "templates[0].command[1]: expected a scalar");
		free(y);
		y = mutate("    network: {profile: none}\n", "    network: &n {profile: *n}\n");
		expect_error(y, "templates[0].network.profile: expected a scalar");
		free(y);
	}
	/* the same template twice through an alias */
	{
		const char *twice =
			"templates:\n"
			"- &t {name: t, image: i, command: [x], workspace: {size: 1Mi}, user: 1, group: 1,"
			" resources: {requests: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1Mi},"
			" limits: {cpu: 1m, memory: 1Mi, ephemeral-storage: 1Gi}}}\n"
			"- *t\n";
		expect_error(twice, "templates[1].name: duplicate template name");
	}
	/* deep nesting, flow and block: refused at CONFIG_MAX_DEPTH, quickly
	 * (libyaml alone is quadratic in flow depth: minutes for this file) */
	{
		size_t depth = CONFIG_MAX_FILE / 2 - 64;
		char *deep = malloc(2 * depth + 64);
		REQUIRE(deep);
		size_t n = (size_t)sprintf(deep, "templates: ");
		memset(deep + n, '[', depth);
		n += depth;
		memset(deep + n, ']', depth);
		n += depth;
		deep[n] = '\0';
		int64_t t0 = now_ms();
		expect_error_at(__FILE__, __LINE__, deep, n, "nested deeper than 32 levels");
		memcpy(deep + 11, "{a: ", 4); /* a mapping inside the lists */
		expect_error_at(__FILE__, __LINE__, deep, n, "invalid YAML");
		int64_t dt = now_ms() - t0;
		printf("deep nesting refused in %lld ms\n", (long long)dt);
		CHECK(dt < 2000);
		n = (size_t)sprintf(deep, "templates:\n");
		for (int i = 0; i < 40; i++)
			n += (size_t)sprintf(deep + n, "%*s-\n", i, "");
		expect_error_at(__FILE__, __LINE__, deep, n, "nested deeper than 32 levels");
		free(deep);
		/* 32 levels are still parsed (and then refused for their content) */
		char ok[128];
		n = (size_t)sprintf(ok, "templates: ");
		for (int i = 0; i < 31; i++)
			ok[n++] = '[';
		for (int i = 0; i < 31; i++)
			ok[n++] = ']';
		ok[n] = '\0';
		expect_error_at(__FILE__, __LINE__, ok, n, "templates[0]: expected a mapping");
	}
	/* very many keys: refused quickly, never a quadratic scan */
	{
		size_t count = 60000;
		char *y = malloc(count * 16 + 4096);
		REQUIRE(y);
		size_t n = 0;
		for (size_t i = 0; i < count; i++)
			n += (size_t)sprintf(y + n, "namespace: a\n");
		int64_t t0 = now_ms();
		expect_error_at(__FILE__, __LINE__, y, n, "namespace: duplicate key");
		const char *net = strstr(base, "    network:");
		n = (size_t)sprintf(y, "%.*s    env: {", (int)(net - base), base);
		for (size_t i = 0; i < count; i++)
			n += (size_t)sprintf(y + n, "V%zu: x,", i);
		n += (size_t)sprintf(y + n, "}\n%s", net);
		expect_error_at(__FILE__, __LINE__, y, n, "templates[0].env: too many entries");
		n = 0;
		for (size_t i = 0; i < count; i++)
			n += (size_t)sprintf(y + n, "- x\n");
		expect_error_at(__FILE__, __LINE__, y, n, "(top level): expected a mapping, found a list");
		int64_t dt = now_ms() - t0;
		CHECK(dt < 5000);
		free(y);
	}
	/* NUL bytes and binary junk */
	{
		const char junk[] = "namespace: x\0\xff\xfe\x01garbage";
		struct sbx_config *cfg = NULL;
		char err[256];
		CHECK(config_parse(junk, sizeof(junk) - 1, &cfg, err, sizeof(err)) != 0);
		CHECK(cfg == NULL);
		const char bad_utf8[] = "namespace: \xc3\x28\n";
		CHECK(config_parse(bad_utf8, sizeof(bad_utf8) - 1, &cfg, err, sizeof(err)) != 0);
	}
	/* over the size limit: refused before parsing */
	{
		struct sbx_config *cfg = NULL;
		char err[256];
		CHECK_INT(config_parse("x", CONFIG_MAX_FILE + 1, &cfg, err, sizeof(err)), -EFBIG);
		CHECK(strstr(err, "larger than") != NULL);
	}
	/* an unknown key full of control characters is shown escaped and cut */
	{
		char y[512];
		snprintf(y, sizeof(y), "\"\\e[31m%s\": 1\n%s",
			 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
			 base);
		struct sbx_config *cfg = NULL;
		char err[512] = "";
		CHECK(config_parse(y, strlen(y), &cfg, err, sizeof(err)) != 0);
		CHECK(strchr(err, '\x1b') == NULL);
		CHECK(strstr(err, "...: unknown key") != NULL);
	}
	/* random mutations of the sample never crash or leak (ASan checks) */
	{
		char *yaml = NULL;
		size_t len = 0;
		REQUIRE(read_file_bounded(SAMPLE, CONFIG_MAX_FILE, &yaml, &len) == 0);
		char *m = malloc(len + 1);
		REQUIRE(m);
		srand(12345);
		int ok = 0;
		for (int i = 0; i < 3000; i++) {
			memcpy(m, yaml, len + 1);
			int edits = 1 + rand() % 4;
			for (int e = 0; e < edits; e++) {
				size_t at = (size_t)rand() % len;
				static const char chars[] = " :-[]{}&*!|>'\"#\n\t0aZ/\\,?%@`";
				m[at] = chars[rand() % (int)(sizeof(chars) - 1)];
			}
			struct sbx_config *cfg = NULL;
			char err[512];
			if (config_parse(m, len, &cfg, err, sizeof(err)) == 0) {
				ok++;
				CHECK(cfg && cfg->ntemplates >= 1);
			} else {
				CHECK(cfg == NULL && err[0] != '\0');
			}
			config_free(cfg);
		}
		printf("mutations: %d of 3000 still valid\n", ok);
		free(m);
		free(yaml);
	}
}

/* ---- quantities and durations ---- */

static void test_quantities(void)
{
	static const struct {
		const char *q;
		int64_t milli; /* -1: invalid */
		int64_t bytes; /* -1: invalid */
	} cases[] = {
		{ "100m", 100, -1 },
		{ "1", 1000, 1 },
		{ "0", 0, 0 },
		{ "1.5", 1500, -1 },
		{ "2", 2000, 2 },
		{ "0.1", 100, -1 },
		{ "0.001", 1, -1 },
		{ "0.0005", -1, -1 },
		{ "1000m", 1000, 1 },
		{ "1500m", 1500, -1 },
		{ "2e3", 2000000, 2000 },
		{ "2E3", 2000000, 2000 },
		{ "1e-3", 1, -1 },
		{ "1e+2", 100000, 100 },
		{ "1k", 1000000, 1000 },
		{ "1M", 1000000000, 1000000 },
		{ "1G", 1000000000000LL, 1000000000 },
		{ "1T", 1000000000000000LL, 1000000000000LL },
		{ "1P", 1000000000000000000LL, 1000000000000000LL },
		{ "1E", -1, 1000000000000000000LL },
		{ "1Ki", 1024000, 1024 },
		{ "128Mi", 134217728000LL, 134217728 },
		{ "1Gi", 1073741824000LL, 1073741824 },
		{ "1.5Gi", 1610612736000LL, 1610612736 },
		{ "0.5Ki", 512000, 512 },
		{ "1Ti", 1099511627776000LL, 1099511627776LL },
		{ "1Pi", 1125899906842624000LL, 1125899906842624LL },
		{ "7Ei", -1, 8070450532247928832LL },
		{ "8Ei", -1, -1 },
		{ "9223372036854775807", -1, INT64_MAX },
		{ "9223372036854775808", -1, -1 },
		{ "9223372036854775m", 9223372036854775LL, -1 },
		{ "99999999999999999999999", -1, -1 },
		{ "1.0000000000000000000000000000", 1000, 1 },
		{ "0.0000000000000000000000000001", -1, -1 },
		{ "1e9999", -1, -1 },
		{ "1e-9999", -1, -1 },
		{ "0e9999", 0, 0 },
		{ "1e99999", -1, -1 },
		{ "", -1, -1 },
		{ "-1", -1, -1 },
		{ "+1", -1, -1 },
		{ "1x", -1, -1 },
		{ ".5", -1, -1 },
		{ "5.", -1, -1 },
		{ "1.5.5", -1, -1 },
		{ " 1", -1, -1 },
		{ "1 ", -1, -1 },
		{ "1mi", -1, -1 },
		{ "1KI", -1, -1 },
		{ "1K", -1, -1 },
		{ "1e", -1, -1 },
		{ "1e+", -1, -1 },
		{ "1Gi1", -1, -1 },
		{ "Mi", -1, -1 },
		{ "0x10", -1, -1 },
		{ "1,5", -1, -1 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int64_t v = -42;
		int rc = quantity_parse_milli(cases[i].q, &v);
		if (cases[i].milli < 0) {
			if (rc != -EINVAL)
				fprintf(stderr, "  milli \"%s\" accepted as %lld\n", cases[i].q,
					(long long)v);
			CHECK_INT(rc, -EINVAL);
		} else {
			if (rc != 0 || v != cases[i].milli)
				fprintf(stderr, "  milli \"%s\": rc %d v %lld\n", cases[i].q, rc,
					(long long)v);
			CHECK(rc == 0 && v == cases[i].milli);
		}
		v = -42;
		rc = quantity_parse_bytes(cases[i].q, &v);
		if (cases[i].bytes < 0) {
			if (rc != -EINVAL)
				fprintf(stderr, "  bytes \"%s\" accepted as %lld\n", cases[i].q,
					(long long)v);
			CHECK_INT(rc, -EINVAL);
		} else {
			if (rc != 0 || v != cases[i].bytes)
				fprintf(stderr, "  bytes \"%s\": rc %d v %lld\n", cases[i].q, rc,
					(long long)v);
			CHECK(rc == 0 && v == cases[i].bytes);
		}
	}
	int64_t v;
	CHECK_INT(quantity_parse_bytes(NULL, &v), -EINVAL);
	char longq[80];
	memset(longq, '1', sizeof(longq) - 1);
	longq[sizeof(longq) - 1] = '\0';
	CHECK_INT(quantity_parse_bytes(longq, &v), -EINVAL);
}

static void test_durations(void)
{
	static const struct {
		const char *s;
		int64_t v; /* -1: invalid */
	} cases[] = {
		{ "90", 90 },
		{ "90s", 90 },
		{ "15m", 900 },
		{ "2h", 7200 },
		{ "1d", 86400 },
		{ "0", 0 },
		{ "0s", 0 },
		{ "3650d", 315360000 },
		{ "9223372036854775807", INT64_MAX },
		{ "9223372036854775807s", INT64_MAX },
		{ "9223372036854775808", -1 },
		{ "106751991167301d", -1 },
		{ "99999999999999999999", -1 },
		{ "153722867280912931m", -1 },
		{ "", -1 },
		{ "-1", -1 },
		{ "+1", -1 },
		{ "1x", -1 },
		{ "1h30m", -1 },
		{ "s", -1 },
		{ "01", -1 },
		{ " 1", -1 },
		{ "1 s", -1 },
		{ "1.5h", -1 },
		{ "1S", -1 },
		{ "1ms", -1 },
		{ "1w", -1 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int64_t v = -42;
		int rc = duration_parse(cases[i].s, &v);
		if (cases[i].v < 0) {
			if (rc != -EINVAL)
				fprintf(stderr, "  duration \"%s\" accepted as %lld\n", cases[i].s,
					(long long)v);
			CHECK_INT(rc, -EINVAL);
		} else {
			if (rc != 0 || v != cases[i].v)
				fprintf(stderr, "  duration \"%s\": rc %d v %lld\n", cases[i].s, rc,
					(long long)v);
			CHECK(rc == 0 && v == cases[i].v);
		}
	}
	int64_t v;
	CHECK_INT(duration_parse(NULL, &v), -EINVAL);
}

/* ---- config_load: file, environment, flags ---- */

static const char *const env_vars[] = { "SBX_NAMESPACE",    "SBX_LISTEN_ADDRESS", "SBX_PORT",
					"SBX_KUBECONFIG",   "SBX_KUBE_CONTEXT",   "SBX_LOG_LEVEL",
					"SBX_LOG_FORMAT" };

static void clear_env(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(env_vars); i++)
		unsetenv(env_vars[i]);
}

static int load(const char *path, int argc, char **argv, struct sbx_config **cfg, char *err,
		size_t errlen)
{
	*cfg = NULL;
	return config_load(path, argc, argv, cfg, err, errlen);
}

#define ARGV(...) ((char *[]){ "sandbox-controller", __VA_ARGS__, NULL })
#define ARGC(...) ((int)(sizeof((char *[]){ "sandbox-controller", __VA_ARGS__ }) / sizeof(char *)))

static void test_load_env_and_flags(void)
{
	struct sbx_config *cfg;
	char err[512];
	clear_env();

	/* the file alone */
	char *argv0[] = { "sandbox-controller", NULL };
	CHECK_INT(load(SAMPLE, 1, argv0, &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->namespace, "sandboxes");
	CHECK_INT(cfg->ntemplates, 3);
	config_free(cfg);

	/* environment over the file */
	setenv("SBX_NAMESPACE", "env-ns", 1);
	setenv("SBX_LISTEN_ADDRESS", "127.0.0.1", 1);
	setenv("SBX_PORT", "9090", 1);
	setenv("SBX_KUBECONFIG", "/env/kubeconfig", 1);
	setenv("SBX_KUBE_CONTEXT", "env-ctx", 1);
	setenv("SBX_LOG_LEVEL", "debug", 1);
	setenv("SBX_LOG_FORMAT", "text", 1);
	CHECK_INT(load(SAMPLE, 1, argv0, &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->namespace, "env-ns");
	CHECK_STR(cfg->listen_address, "127.0.0.1");
	CHECK_INT(cfg->port, 9090);
	CHECK_STR(cfg->kubeconfig, "/env/kubeconfig");
	CHECK_STR(cfg->kube_context, "env-ctx");
	CHECK_STR(cfg->log_level, "debug");
	CHECK_STR(cfg->log_format, "text");
	config_free(cfg);

	/* flags over the environment, both spellings, last one wins */
	char **argv = ARGV("--namespace", "flag-ns", "--listen=::1", "--port", "7070",
			   "--kubeconfig=/flag/kc", "--context", "flag-ctx", "--log-level",
			   "warning", "--log-format=json", "--port=7071", "--help", "--version",
			   "--check", "-h");
	int argc = ARGC("--namespace", "flag-ns", "--listen=::1", "--port", "7070",
			"--kubeconfig=/flag/kc", "--context", "flag-ctx", "--log-level", "warning",
			"--log-format=json", "--port=7071", "--help", "--version", "--check",
			"-h");
	int rc = load(SAMPLE, argc, argv, &cfg, err, sizeof(err));
	if (rc)
		fprintf(stderr, "  flags: %s\n", err);
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->namespace, "flag-ns");
	CHECK_STR(cfg->listen_address, "::1");
	CHECK_INT(cfg->port, 7071);
	CHECK_STR(cfg->kubeconfig, "/flag/kc");
	CHECK_STR(cfg->kube_context, "flag-ctx");
	CHECK_STR(cfg->log_level, "warn");
	CHECK_STR(cfg->log_format, "json");
	config_free(cfg);

	/* an empty variable counts as unset */
	clear_env();
	setenv("SBX_NAMESPACE", "", 1);
	CHECK_INT(load(SAMPLE, 1, argv0, &cfg, err, sizeof(err)), 0);
	if (cfg)
		CHECK_STR(cfg->namespace, "sandboxes");
	config_free(cfg);

	/* invalid values name their variable or flag */
	static const struct {
		const char *var, *value, *want;
	} env_cases[] = {
		{ "SBX_NAMESPACE", "Bad_NS", "SBX_NAMESPACE: \"Bad_NS\" is not a valid namespace" },
		{ "SBX_LISTEN_ADDRESS", "localhost", "SBX_LISTEN_ADDRESS: \"localhost\" is not an IPv4" },
		{ "SBX_PORT", "0", "SBX_PORT: \"0\" is not a port number" },
		{ "SBX_PORT", "80x", "SBX_PORT: \"80x\" is not a port number" },
		{ "SBX_LOG_LEVEL", "loud", "SBX_LOG_LEVEL: \"loud\" is not a log level" },
		{ "SBX_LOG_FORMAT", "xml", "SBX_LOG_FORMAT: \"xml\" is not a log format" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(env_cases); i++) {
		clear_env();
		setenv(env_cases[i].var, env_cases[i].value, 1);
		err[0] = '\0';
		CHECK_INT(load(SAMPLE, 1, argv0, &cfg, err, sizeof(err)), -EINVAL);
		CHECK(cfg == NULL);
		if (!strstr(err, env_cases[i].want))
			fprintf(stderr, "  env error \"%s\", want \"%s\"\n", err, env_cases[i].want);
		CHECK(strstr(err, env_cases[i].want) != NULL);
	}
	clear_env();
	static const struct {
		const char *a, *b, *want;
	} flag_cases[] = {
		{ "--port", "99999", "--port: \"99999\" is not a port number" },
		{ "--port=-1", NULL, "--port: \"-1\" is not a port number" },
		{ "--namespace", "a_b", "--namespace: \"a_b\" is not a valid namespace" },
		{ "--listen", "1.2.3", "--listen: \"1.2.3\" is not an IPv4 or IPv6 address" },
		{ "--log-level", "trace", "--log-level: \"trace\" is not a log level" },
		{ "--log-format=yaml", NULL, "--log-format: \"yaml\" is not a log format" },
		{ "--context=", NULL, "--context: must be a context name" },
		{ "--kubeconfig=", NULL, "--kubeconfig: must be a file path" },
		{ "--bogus", NULL, "--bogus: unknown flag" },
		{ "--bogus=1", NULL, "--bogus: unknown flag" },
		{ "-x", NULL, "-x: unknown flag" },
		{ "--", "extra", "--: unknown flag" },
		{ "extra", NULL, "extra: unexpected argument" },
		{ "--port", NULL, "--port: needs a value" },
		{ "--config", NULL, "--config: needs a value" },
		{ "--config=", NULL, "--config: needs a file path" },
		{ "--help=yes", NULL, "--help: unknown flag" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(flag_cases); i++) {
		char *av[] = { "sandbox-controller", (char *)flag_cases[i].a,
			       (char *)flag_cases[i].b, NULL };
		int ac = flag_cases[i].b ? 3 : 2;
		err[0] = '\0';
		rc = load(SAMPLE, ac, av, &cfg, err, sizeof(err));
		CHECK_INT(rc, -EINVAL);
		CHECK(cfg == NULL);
		if (!strstr(err, flag_cases[i].want))
			fprintf(stderr, "  flag error \"%s\", want \"%s\"\n", err, flag_cases[i].want);
		CHECK(strstr(err, flag_cases[i].want) != NULL);
	}
	/* a flag's error wins over a valid environment, and flags are checked
	 * before the file is even read */
	rc = load("/nonexistent/config.yaml", 2, ARGV("--bogus"), &cfg, err, sizeof(err));
	CHECK_INT(rc, -EINVAL);
	CHECK(strstr(err, "--bogus") != NULL);

	/* --config replaces the path argument */
	rc = load("/nonexistent/config.yaml", 3, ARGV("--config", SAMPLE), &cfg, err, sizeof(err));
	CHECK_INT(rc, 0);
	if (cfg)
		CHECK_INT(cfg->ntemplates, 3);
	config_free(cfg);
	rc = load(NULL, 2, ARGV("--config=" SAMPLE), &cfg, err, sizeof(err));
	CHECK_INT(rc, 0);
	config_free(cfg);

	/* file problems begin with the file's path */
	rc = load("/nonexistent/config.yaml", 1, argv0, &cfg, err, sizeof(err));
	CHECK_INT(rc, -ENOENT);
	CHECK(strstr(err, "/nonexistent/config.yaml: cannot read") != NULL);
	char *zero = mutate("user: 1000\n", "user: 0\n");
	char *path = write_tmp("root.yaml", zero);
	free(zero);
	rc = load(path, 1, argv0, &cfg, err, sizeof(err));
	CHECK_INT(rc, -EINVAL);
	CHECK(strncmp(err, path, strlen(path)) == 0);
	CHECK(strstr(err, ": templates[0].user: must be a positive integer (not 0)") != NULL);
	/* without any file, the message says what is missing */
	rc = load(NULL, 1, argv0, &cfg, err, sizeof(err));
	CHECK_INT(rc, -EINVAL);
	CHECK(strstr(err, "templates: at least one template is required") != NULL);
	CHECK(strstr(err, "--config") != NULL);
	/* a file over the limit */
	{
		char *big = malloc(CONFIG_MAX_FILE + 2);
		REQUIRE(big);
		memset(big, '#', CONFIG_MAX_FILE + 1);
		big[CONFIG_MAX_FILE + 1] = '\0';
		path = write_tmp("big.yaml", big);
		free(big);
		rc = load(path, 1, argv0, &cfg, err, sizeof(err));
		CHECK_INT(rc, -EFBIG);
		CHECK(strstr(err, "larger than") != NULL);
	}
	/* a directory */
	rc = load(tmpdir, 1, argv0, &cfg, err, sizeof(err));
	CHECK(rc != 0);
	CHECK(cfg == NULL);
}

/* ---- auth ---- */

/* tls.client_ca_file and auth.client_certs (mTLS) */
static void test_client_certs(void)
{
	struct sbx_config *cfg = NULL;
	char err[1024] = "", buf[4096];
	static const char tls[] = "tls: {cert_file: /c.pem, key_file: /k.pem, client_ca_file: /ca.pem}\n";
	snprintf(buf, sizeof(buf),
		 "%sauth:\n"
		 "  client_certs:\n"
		 "    - {subject_cn: ci-runner.acme, tenant: acme, scopes: [sandboxes:read, exec]}\n"
		 "    - subject_cn: \"svc@ops:1_A-b\"\n"
		 "      tenant: ops\n"
		 "      scopes: [admin]\n%s",
		 tls, base);
	int rc = config_parse(buf, strlen(buf), &cfg, err, sizeof(err));
	if (rc)
		fprintf(stderr, "  client certs: %s\n", err);
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->tls_client_ca_file, "/ca.pem");
	REQUIRE(cfg->auth.nclient_certs == 2);
	CHECK_STR(cfg->auth.client_certs[0].subject_cn, "ci-runner.acme");
	CHECK_STR(cfg->auth.client_certs[0].tenant, "acme");
	REQUIRE(cfg->auth.client_certs[0].nscopes == 2);
	CHECK_STR(cfg->auth.client_certs[0].scopes[1], "exec");
	CHECK_STR(cfg->auth.client_certs[1].subject_cn, "svc@ops:1_A-b");
	CHECK_INT(config_check_credentials(cfg, err, sizeof(err)), 0); /* they count */
	config_free(cfg);

	/* one without the other: refused by config_check_credentials */
	snprintf(buf, sizeof(buf),
		 "auth: {client_certs: [{subject_cn: a, tenant: t, scopes: [exec]}]}\n%s", base);
	CHECK_INT(config_parse(buf, strlen(buf), &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_INT(config_check_credentials(cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "auth.client_certs: client certificates are only asked for with tls.client_ca_file") != NULL);
	config_free(cfg);
	snprintf(buf, sizeof(buf), "%sauth: {api_keys_file: /k}\n%s", tls, base);
	CHECK_INT(config_parse(buf, strlen(buf), &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK_INT(config_check_credentials(cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "tls.client_ca_file: no certificate subject is mapped") != NULL);
	config_free(cfg);

	static const struct {
		const char *yaml, *want;
	} cases[] = {
		{ "tls: {client_ca_file: /ca.pem}\n", "tls.client_ca_file: client certificates need TLS" },
		{ "tls: {cert_file: /c, key_file: /k, client_ca_file: \"\"}\n", "tls.client_ca_file: must not be empty" },
		{ "auth: {client_certs: {a: b}}\n", "auth.client_certs: expected a list of {subject_cn, tenant, scopes}, found a mapping" },
		{ "auth: {client_certs: [x]}\n", "auth.client_certs[0]: expected a mapping, found a scalar" },
		{ "auth: {client_certs: [{tenant: t, scopes: [exec]}]}\n", "auth.client_certs[0].subject_cn: missing" },
		{ "auth: {client_certs: [{subject_cn: a, scopes: [exec]}]}\n", "auth.client_certs[0].tenant: missing" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: t}]}\n", "auth.client_certs[0].scopes: missing" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: t, scopes: exec}]}\n", "auth.client_certs[0].scopes: expected a list of scope names, found a scalar" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: t, scopes: []}]}\n", "auth.client_certs[0].scopes: list 1 to 16 scopes" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: t, scopes: [[x]]}]}\n", "auth.client_certs[0].scopes[0]: expected a scalar" },
		{ "auth: {client_certs: [{subject_cn: \"two words\", tenant: t, scopes: [exec]}]}\n", "auth.client_certs[0].subject_cn: \"two words\" is not 1 to 64 of [A-Za-z0-9._@:-]" },
		{ "auth: {client_certs: [{subject_cn: \"a/b\", tenant: t, scopes: [exec]}]}\n", "auth.client_certs[0].subject_cn: \"a/b\" is not" },
		{ "auth: {client_certs: [{subject_cn: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, tenant: t, scopes: [exec]}]}\n", "auth.client_certs[0].subject_cn:" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: Acme, scopes: [exec]}]}\n", "auth.client_certs[0].tenant: \"Acme\" is not a tenant name" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: t, scopes: [exec]}, {subject_cn: a, tenant: u, scopes: [exec]}]}\n", "auth.client_certs[1].subject_cn: the same subject_cn as auth.client_certs[0]" },
		{ "auth: {client_certs: [{subject_cn: a, tenant: t, scopes: [exec], kid: x}]}\n", "auth.client_certs[0].kid: unknown key" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(buf, sizeof(buf), "%s%s", cases[i].yaml, base);
		expect_error_at(__FILE__, __LINE__, buf, strlen(buf), cases[i].want);
	}
	CHECK(config_valid_client_cn("a"));
	CHECK(!config_valid_client_cn(""));
	CHECK(!config_valid_client_cn(NULL));
	CHECK(!config_valid_client_cn("caf\xc3\xa9"));
}

static void test_auth_section(void)
{
	struct sbx_config *cfg = NULL;
	char err[1024] = "";

	/* absent: defaults, and config_parse does not insist on credentials,
	 * config_check_credentials does */
	CHECK_INT(config_parse(base, strlen(base), &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK(cfg->auth.api_keys_file == NULL);
	CHECK(cfg->auth.jwt_hs256_secret_file == NULL);
	CHECK(!cfg->auth.jwt_hs256_secret_env);
	CHECK_INT(cfg->auth.njwt_public_keys, 0);
	CHECK(cfg->auth.jwt_jwks_file == NULL);
	CHECK(cfg->auth.jwt_issuer == NULL);
	CHECK(cfg->auth.jwt_audience == NULL);
	CHECK_STR(cfg->auth.jwt_tenant_claim, "tenant");
	CHECK_INT(cfg->auth.jwt_leeway_s, 30);
	CHECK(cfg->auth.scoped_token_secret_file == NULL);
	CHECK(!cfg->auth.insecure_dev_mode);
	CHECK_INT(config_check_credentials(cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "auth: no credentials are configured") != NULL);
	CHECK(strstr(err, "auth.api_keys_file") != NULL);
	CHECK(strstr(err, "insecure_dev_mode") != NULL);
	config_free(cfg);

	/* every key */
	char *full = malloc(strlen(base) + 1024);
	REQUIRE(full);
	sprintf(full,
		"auth:\n"
		"  api_keys_file: /etc/sbx/keys/keys.yaml\n"
		"  jwt:\n"
		"    hs256_secret_file: /etc/sbx/jwt/hs256\n"
		"    public_keys: [/etc/sbx/jwt/rs.pem, /etc/sbx/jwt/es.pem]\n"
		"    jwks_file: /etc/sbx/jwt/jwks.json\n"
		"    issuer: https://issuer.example\n"
		"    audience: sandbox-controller\n"
		"    tenant_claim: https://example.com/tenant\n"
		"    leeway: 1m\n"
		"  scoped_token_secret_file: /etc/sbx/scoped/secret\n"
		"  insecure_dev_mode: false\n%s",
		base);
	int rc = config_parse(full, strlen(full), &cfg, err, sizeof(err));
	free(full);
	if (rc)
		fprintf(stderr, "  auth full: %s\n", err);
	CHECK_INT(rc, 0);
	REQUIRE(cfg);
	CHECK_STR(cfg->auth.api_keys_file, "/etc/sbx/keys/keys.yaml");
	CHECK_STR(cfg->auth.jwt_hs256_secret_file, "/etc/sbx/jwt/hs256");
	REQUIRE(cfg->auth.njwt_public_keys == 2);
	CHECK_STR(cfg->auth.jwt_public_keys[0], "/etc/sbx/jwt/rs.pem");
	CHECK_STR(cfg->auth.jwt_public_keys[1], "/etc/sbx/jwt/es.pem");
	CHECK_STR(cfg->auth.jwt_jwks_file, "/etc/sbx/jwt/jwks.json");
	CHECK_STR(cfg->auth.jwt_issuer, "https://issuer.example");
	CHECK_STR(cfg->auth.jwt_audience, "sandbox-controller");
	CHECK_STR(cfg->auth.jwt_tenant_claim, "https://example.com/tenant");
	CHECK_INT(cfg->auth.jwt_leeway_s, 60);
	CHECK_STR(cfg->auth.scoped_token_secret_file, "/etc/sbx/scoped/secret");
	CHECK(!cfg->auth.insecure_dev_mode);
	CHECK_INT(config_check_credentials(cfg, err, sizeof(err)), 0);
	config_free(cfg);

	/* each credential alone is enough; so is the explicit insecure mode;
	 * a scoped token secret alone is not (it authenticates nobody) */
	static const struct {
		const char *prefix;
		int want;
	} creds[] = {
		{ "auth: {api_keys_file: /k}\n", 0 },
		{ "auth: {jwt: {hs256_secret_file: /s}}\n", 0 },
		{ "auth: {jwt: {public_keys: [/p.pem]}}\n", 0 },
		{ "auth: {jwt: {jwks_file: /j.json}}\n", 0 },
		{ "auth: {insecure_dev_mode: true}\n", 0 },
		{ "auth: {insecure_dev_mode: false}\n", -EINVAL },
		{ "auth: {scoped_token_secret_file: /s}\n", -EINVAL },
		{ "auth: {jwt: {public_keys: [], issuer: x}}\n", -EINVAL },
		{ "auth: {}\n", -EINVAL },
		{ "auth:\n", -EINVAL },
	};
	char buf[4096];
	for (size_t i = 0; i < ARRAY_SIZE(creds); i++) {
		snprintf(buf, sizeof(buf), "%s%s", creds[i].prefix, base);
		rc = config_parse(buf, strlen(buf), &cfg, err, sizeof(err));
		CHECK_INT(rc, 0);
		if (rc) {
			fprintf(stderr, "  creds[%zu]: %s\n", i, err);
			continue;
		}
		rc = config_check_credentials(cfg, err, sizeof(err));
		if (rc != creds[i].want)
			fprintf(stderr, "  creds[%zu]: check_credentials %d\n", i, rc);
		CHECK_INT(rc, creds[i].want);
		config_free(cfg);
	}

	/* every error names its key */
	static const struct {
		const char *prefix, *want;
	} cases[] = {
		{ "auth: [a]\n", "auth: expected a mapping, found a list" },
		{ "auth: {api_key_file: /k}\n", "auth.api_key_file: unknown key" },
		{ "auth: {api_keys_file: \"\"}\n", "auth.api_keys_file: must not be empty" },
		{ "auth: {api_keys_file: [a]}\n", "auth.api_keys_file: expected a scalar" },
		{ "auth: {api_keys_file: \"/a\\tb\"}\n", "auth.api_keys_file: must not contain control characters" },
		{ "auth: {scoped_token_secret_file: \"\"}\n", "auth.scoped_token_secret_file: must not be empty" },
		{ "auth: {insecure_dev_mode: yes}\n", "auth.insecure_dev_mode: \"yes\" is not a boolean (true or false)" },
		{ "auth: {insecure_dev_mode: 1}\n", "auth.insecure_dev_mode: \"1\" is not a boolean" },
		{ "auth: {secret: x}\n", "auth.secret: unknown key" },
		{ "auth: {jwt: x}\n", "auth.jwt: expected a mapping, found a scalar" },
		{ "auth: {jwt: {alg: HS256}}\n", "auth.jwt.alg: unknown key" },
		{ "auth: {jwt: {hs256_secret: abc}}\n", "auth.jwt.hs256_secret: unknown key" },
		{ "auth: {jwt: {hs256_secret_file: \"\"}}\n", "auth.jwt.hs256_secret_file: must not be empty" },
		{ "auth: {jwt: {jwks_file: {a: b}}}\n", "auth.jwt.jwks_file: expected a scalar, found a mapping" },
		{ "auth: {jwt: {public_keys: /a.pem}}\n", "auth.jwt.public_keys: expected a list of PEM file paths, found a scalar" },
		{ "auth: {jwt: {public_keys: [/a.pem, /a.pem]}}\n", "auth.jwt.public_keys[1]: the same file as auth.jwt.public_keys[0]" },
		{ "auth: {jwt: {public_keys: [\"\"]}}\n", "auth.jwt.public_keys[0]: must be a file path" },
		{ "auth: {jwt: {public_keys: [[a]]}}\n", "auth.jwt.public_keys[0]: expected a scalar" },
		{ "auth: {jwt: {public_keys: [/a, /b, /c, /d, /e, /f, /g, /h, /i, /j, /k, /l, /m, /n, /o, /p, /q]}}\n",
		  "auth.jwt.public_keys: too many files (at most 16)" },
		{ "auth: {jwt: {issuer: \"\"}}\n", "auth.jwt.issuer: must not be empty" },
		{ "auth: {jwt: {audience: \"a\\nb\"}}\n", "auth.jwt.audience: must not contain control characters" },
		{ "auth: {jwt: {tenant_claim: \"\"}}\n", "auth.jwt.tenant_claim: must not be empty" },
		{ "auth: {jwt: {leeway: soon}}\n", "auth.jwt.leeway: \"soon\" is not a duration" },
		{ "auth: {jwt: {leeway: 11m}}\n", "auth.jwt.leeway: must be at most 600s" },
		{ "auth: {jwt: {leeway: -1}}\n", "auth.jwt.leeway: \"-1\" is not a duration" },
		{ "auth: {api_keys_file: /a}\nauth: {api_keys_file: /b}\n", "auth: duplicate key" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(buf, sizeof(buf), "%s%s", cases[i].prefix, base);
		expect_error_at(__FILE__, __LINE__, buf, strlen(buf), cases[i].want);
	}
	/* leeway 0 is allowed; an empty jwt mapping is fine */
	snprintf(buf, sizeof(buf), "auth: {jwt: {leeway: 0}}\n%s", base);
	CHECK_INT(config_parse(buf, strlen(buf), &cfg, err, sizeof(err)), 0);
	if (cfg)
		CHECK_INT(cfg->auth.jwt_leeway_s, 0);
	config_free(cfg);

	/* the environment: SBX_JWT_HS256_SECRET is noted (never copied), and
	 * SBX_INSECURE_DEV_MODE is refused */
	clear_env();
	char *argv0[] = { "sandbox-controller", NULL };
	const char *plain = write_tmp("auth-plain.yaml", base);
	setenv("SBX_JWT_HS256_SECRET", "0123456789abcdef0123456789abcdef", 1);
	CHECK_INT(load(plain, 1, argv0, &cfg, err, sizeof(err)), 0);
	REQUIRE(cfg);
	CHECK(cfg->auth.jwt_hs256_secret_env);
	CHECK_INT(config_check_credentials(cfg, err, sizeof(err)), 0);
	config_free(cfg);
	snprintf(buf, sizeof(buf), "auth: {jwt: {hs256_secret_file: /s}}\n%s", base);
	const char *withfile = write_tmp("auth-file.yaml", buf);
	CHECK_INT(load(withfile, 1, argv0, &cfg, err, sizeof(err)), -EINVAL);
	CHECK(cfg == NULL);
	CHECK(strstr(err, "SBX_JWT_HS256_SECRET: auth.jwt.hs256_secret_file is set too") != NULL);
	CHECK(strstr(err, "0123456789abcdef") == NULL); /* never the secret */
	setenv("SBX_JWT_HS256_SECRET", "", 1);
	CHECK_INT(load(withfile, 1, argv0, &cfg, err, sizeof(err)), 0);
	if (cfg)
		CHECK(!cfg->auth.jwt_hs256_secret_env);
	config_free(cfg);
	unsetenv("SBX_JWT_HS256_SECRET");

	setenv("SBX_INSECURE_DEV_MODE", "1", 1);
	plain = write_tmp("auth-plain.yaml", base);
	CHECK_INT(load(plain, 1, argv0, &cfg, err, sizeof(err)), -EINVAL);
	CHECK(cfg == NULL);
	CHECK(strstr(err, "SBX_INSECURE_DEV_MODE: not supported") != NULL);
	setenv("SBX_INSECURE_DEV_MODE", "", 1);
	CHECK_INT(load(plain, 1, argv0, &cfg, err, sizeof(err)), 0);
	config_free(cfg);
	unsetenv("SBX_INSECURE_DEV_MODE");
	/* and there is no flag for it */
	char *argv1[] = { "sandbox-controller", "--insecure-dev-mode", NULL };
	CHECK_INT(load(plain, 2, argv1, &cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "--insecure-dev-mode: unknown flag") != NULL);
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sbx-test-config-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_sample);
	RUN(test_minimal_and_defaults);
	RUN(test_template_errors);
	RUN(test_top_level_errors);
	RUN(test_hostile_yaml);
	RUN(test_quantities);
	RUN(test_durations);
	RUN(test_load_env_and_flags);
	RUN(test_auth_section);
	RUN(test_client_certs);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", tmpdir);
	return test_summary();
}
