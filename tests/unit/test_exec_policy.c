/*
 * Unit tests: command policy (exec_policy.c), the exec request parser and
 * output encoding (exec_api.c), slots, the exec section of the config, and
 * the wrapper/kill scripts run through a real /bin/sh here.
 */
#include "test.h"

#include "config.h"
#include "exec_api.h"
#include "exec_policy.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

static const char BASE[] =
	"templates:\n"
	"  - name: t\n"
	"    image: busybox\n"
	"    command: [sleep, infinity]\n"
	"    workspace: {size: 256Mi}\n"
	"    user: 1000\n"
	"    group: 1000\n"
	"    resources:\n"
	"      requests: {cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}\n"
	"      limits: {cpu: 500m, memory: 256Mi, ephemeral-storage: 1Gi}\n";

static struct sbx_config *parse_with(const char *exec_yaml, char *err, size_t errlen)
{
	char y[4096];
	snprintf(y, sizeof(y), "%s%s", BASE, exec_yaml);
	struct sbx_config *cfg = NULL;
	if (config_parse(y, strlen(y), &cfg, err, errlen) != 0)
		return NULL;
	return cfg;
}

static void test_config_defaults_and_errors(void)
{
	char err[512];
	struct sbx_config *cfg = parse_with("", err, sizeof(err));
	if (!cfg)
		fprintf(stderr, "config: %s\n", err);
	REQUIRE(cfg);
	const struct sbx_exec_policy *e = &cfg->templates[0].exec;
	CHECK_STR(e->shell, "/bin/sh");
	CHECK_INT(e->max_args, 256);
	CHECK_INT(e->max_streams, 16);
	CHECK_INT(e->default_timeout_s, 300);
	CHECK_INT(e->max_output_bytes, 16u << 20);
	CHECK_INT(cfg->max_exec_streams, 1024);
	config_free(cfg);

	cfg = parse_with("    exec: {shell: none, allow: [python3, /usr/bin/git], deny: [bash],"
			 " max_args: 8, max_output: 1Mi, default_output: 4Ki, max_timeout: 10m,"
			 " default_timeout: 1m, max_streams: 2}\n",
			 err, sizeof(err));
	REQUIRE(cfg);
	e = &cfg->templates[0].exec;
	CHECK(e->shell == NULL);
	CHECK_INT(e->nallow, 2);
	CHECK_STR(e->allow[1], "/usr/bin/git");
	CHECK_INT(e->ndeny, 1);
	CHECK_INT(e->max_args, 8);
	CHECK_INT(e->max_output_bytes, 1u << 20);
	CHECK_INT(e->default_output_bytes, 4096);
	CHECK_INT(e->max_timeout_s, 600);
	CHECK_INT(e->max_streams, 2);
	config_free(cfg);

	static const struct {
		const char *yaml, *key;
	} bad[] = {
		{ "    exec: {shell: sh}\n", "templates[0].exec.shell" },
		{ "    exec: {shell: /bin/../sh}\n", "templates[0].exec.shell" },
		{ "    exec: {allow: [usr/bin/git]}\n", "templates[0].exec.allow[0]" },
		{ "    exec: {deny: [/bin/]}\n", "templates[0].exec.deny[0]" },
		{ "    exec: {deny: [..]}\n", "templates[0].exec.deny[0]" },
		{ "    exec: {allow: python3}\n", "templates[0].exec.allow" },
		{ "    exec: {max_args: 0}\n", "templates[0].exec.max_args" },
		{ "    exec: {max_streams: 1025}\n", "templates[0].exec.max_streams" },
		{ "    exec: {max_output: 65Mi}\n", "templates[0].exec.max_output" },
		{ "    exec: {default_timeout: 2h, max_timeout: 1h}\n",
		  "templates[0].exec.default_timeout" },
		{ "    exec: {default_output: 2Mi, max_output: 1Mi}\n",
		  "templates[0].exec.default_output" },
		{ "    exec: {max_arg_bytes: 2Ki, max_argv_bytes: 1Ki}\n",
		  "templates[0].exec.max_arg_bytes" },
		{ "    exec: {shel: /bin/sh}\n", "templates[0].exec" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cfg = parse_with(bad[i].yaml, err, sizeof(err));
		CHECK(cfg == NULL);
		if (!strstr(err, bad[i].key))
			fprintf(stderr, "  case %zu: error \"%s\" does not name %s\n", i, err,
				bad[i].key);
		CHECK(strstr(err, bad[i].key) != NULL);
		config_free(cfg);
	}
}

static enum exec_policy_result check(const struct sbx_exec_policy *e, const char *a0,
				     const char *a1)
{
	const char *argv[] = { a0, a1, NULL };
	char why[256];
	return exec_policy_check(e, argv, a1 ? 2 : 1, why, sizeof(why));
}

static void test_policy(void)
{
	char *allow[] = { "python3", "/usr/bin/git" };
	char *deny[] = { "bash", "/usr/bin/perl" };
	struct sbx_exec_policy e = {
		.allow = allow, .nallow = 2, .deny = deny, .ndeny = 2,
		.max_args = 3, .max_arg_bytes = 20, .max_argv_bytes = 30,
	};
	CHECK_INT(check(&e, "python3", "x"), EXEC_POLICY_OK);
	CHECK_INT(check(&e, "/usr/bin/git", NULL), EXEC_POLICY_OK);
	/* a basename entry admits only PATH lookup, not any file so named */
	CHECK_INT(check(&e, "/tmp/python3", NULL), EXEC_POLICY_NOT_ALLOWED);
	CHECK_INT(check(&e, "bin/python3", NULL), EXEC_POLICY_NOT_ALLOWED);
	CHECK_INT(check(&e, "git", NULL), EXEC_POLICY_NOT_ALLOWED);
	CHECK_INT(check(&e, "/usr/local/bin/git", NULL), EXEC_POLICY_NOT_ALLOWED);
	/* deny is broad: by name and by last segment */
	CHECK_INT(check(&e, "bash", NULL), EXEC_POLICY_DENIED);
	CHECK_INT(check(&e, "/bin/bash", NULL), EXEC_POLICY_DENIED);
	CHECK_INT(check(&e, "perl", NULL), EXEC_POLICY_DENIED);
	CHECK_INT(check(&e, "/opt/perl", NULL), EXEC_POLICY_DENIED);
	/* spelling a path differently does not help */
	CHECK_INT(check(&e, "/usr/bin/../bin/git", NULL), EXEC_POLICY_BAD_PROGRAM);
	CHECK_INT(check(&e, "/usr//bin/git", NULL), EXEC_POLICY_BAD_PROGRAM);
	CHECK_INT(check(&e, "/usr/bin/./git", NULL), EXEC_POLICY_BAD_PROGRAM);
	CHECK_INT(check(&e, "./python3", NULL), EXEC_POLICY_BAD_PROGRAM);
	CHECK_INT(check(&e, "/usr/bin/git/", NULL), EXEC_POLICY_BAD_PROGRAM);
	CHECK_INT(check(&e, "pyth\non3", NULL), EXEC_POLICY_BAD_PROGRAM);
	CHECK_INT(check(&e, "", NULL), EXEC_POLICY_EMPTY);
	CHECK_INT(check(&e, "python3", "0123456789abcdefghijk"), EXEC_POLICY_ARG_TOO_LONG);
	CHECK_INT(check(&e, "/usr/bin/git", "0123456789abcdefghi"), EXEC_POLICY_ARGV_TOO_LONG);
	CHECK_INT(check(&e, "/usr/bin/git", "0123456789abcdefgh"), EXEC_POLICY_OK);
	const char *four[] = { "python3", "a", "b", "c" };
	char why[256];
	CHECK_INT(exec_policy_check(&e, four, 4, why, sizeof(why)), EXEC_POLICY_TOO_MANY_ARGS);
	CHECK_INT(exec_policy_check(&e, four, 0, why, sizeof(why)), EXEC_POLICY_EMPTY);
	/* no allowlist: anything not denied */
	e.nallow = 0;
	CHECK_INT(check(&e, "/tmp/x/tool", NULL), EXEC_POLICY_OK);
	CHECK_INT(check(&e, "/tmp/x/bash", NULL), EXEC_POLICY_DENIED);
	CHECK_STR(exec_policy_code(EXEC_POLICY_DENIED), "program_denied");
	CHECK_STR(exec_policy_code(EXEC_POLICY_NOT_ALLOWED), "program_not_allowed");

	CHECK(exec_env_name_valid("PATH"));
	CHECK(exec_env_name_valid("_x1"));
	CHECK(!exec_env_name_valid("1X"));
	CHECK(!exec_env_name_valid("A-B"));
	CHECK(!exec_env_name_valid("A=B"));
	CHECK(!exec_env_name_valid(""));
	CHECK(!exec_env_name_valid("SBX_EXEC_ID"));

	char t1[EXEC_TOKEN_LEN + 1], t2[EXEC_TOKEN_LEN + 1];
	REQUIRE(exec_new_token(t1) == 0 && exec_new_token(t2) == 0);
	CHECK_INT(strlen(t1), EXEC_TOKEN_LEN);
	CHECK(strspn(t1, "0123456789abcdef") == EXEC_TOKEN_LEN);
	CHECK(strcmp(t1, t2) != 0);
}

static int parse(const struct sbx_template *t, const char *json, struct exec_request *r,
		 const char **code)
{
	char why[256];
	*code = "";
	return exec_request_parse(json, strlen(json), t, 4, 64, r, code, why, sizeof(why));
}

static void test_request_parse(void)
{
	char err[512];
	struct sbx_config *cfg = parse_with("    exec: {max_args: 4, default_output: 1Ki,"
					    " max_output: 1Mi, max_timeout: 10m}\n",
					    err, sizeof(err));
	REQUIRE(cfg);
	const struct sbx_template *t = &cfg->templates[0];
	struct exec_request r;
	const char *code;
	CHECK_INT(parse(t, "{\"command\":[\"echo\",\"a b\"],\"env\":{\"K\":\"v=1\"},"
			   "\"stdin\":\"aGk=\",\"stdin_encoding\":\"base64\",\"timeout_seconds\":5}",
			&r, &code),
		  0);
	CHECK_INT(r.argc, 2);
	CHECK_STR(r.argv[1], "a b");
	CHECK_INT(r.nenv, 1);
	CHECK_STR(r.env[0], "K=v=1");
	CHECK_INT(r.stdin_len, 2);
	CHECK(r.stdin_data && memcmp(r.stdin_data, "hi", 2) == 0);
	CHECK_INT(r.timeout_s, 5);
	CHECK_INT(r.max_output, 1024);
	CHECK_STR(r.workdir, "/workspace");
	exec_request_release(&r);

	CHECK_INT(parse(t, "{\"command\":[\"ls\"],\"workdir\":\"sub/dir\",\"max_output_bytes\":0}",
			&r, &code),
		  0);
	CHECK_STR(r.workdir, "/workspace/sub/dir");
	CHECK_INT(r.max_output, 0);
	CHECK(r.stdin_data == NULL);
	exec_request_release(&r);

	static const struct {
		const char *json;
		int status;
		const char *code;
	} bad[] = {
		{ "", 400, "invalid_json" },
		{ "[]", 400, "invalid_json" },
		{ "{\"command\":\"ls\"}", 400, "invalid_command" },
		{ "{\"command\":[1]}", 400, "invalid_command" },
		{ "{\"command\":[]}", 422, "empty_command" },
		{ "{\"command\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 422, "too_many_args" },
		{ "{\"command\":[\"a\\u0000b\"]}", 400, "nul_byte" },
		{ "{\"command\":[\"a\\u0000\"]}", 400, "nul_byte" },
		{ "{\"command\":[\"ls\"],\"x\":1}", 400, "unknown_field" },
		{ "{\"command\":[\"ls\"],\"env\":[]}", 400, "invalid_env" },
		{ "{\"command\":[\"ls\"],\"env\":{\"A\":1}}", 400, "invalid_env" },
		{ "{\"command\":[\"ls\"],\"env\":{\"1A\":\"x\"}}", 422, "invalid_env" },
		{ "{\"command\":[\"ls\"],\"env\":{\"A\":\"1\",\"B\":\"2\",\"C\":\"3\",\"D\":\"4\",\"E\":\"5\"}}",
		  422, "too_many_env" },
		{ "{\"command\":[\"ls\"],\"env\":{\"A\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}}",
		  422, "env_too_large" },
		{ "{\"command\":[\"ls\"],\"workdir\":\"\"}", 400, "invalid_workdir" },
		{ "{\"command\":[\"ls\"],\"workdir\":\"a\\nb\"}", 400, "invalid_workdir" },
		{ "{\"command\":[\"ls\"],\"timeout_seconds\":601}", 422, "invalid_timeout" },
		{ "{\"command\":[\"ls\"],\"timeout_seconds\":0}", 422, "invalid_timeout" },
		{ "{\"command\":[\"ls\"],\"timeout_seconds\":1.5}", 422, "invalid_timeout" },
		{ "{\"command\":[\"ls\"],\"timeout_seconds\":1e30}", 422, "invalid_timeout" },
		{ "{\"command\":[\"ls\"],\"timeout_seconds\":-1e300}", 422, "invalid_timeout" },
		{ "{\"command\":[\"ls\"],\"max_output_bytes\":1e999}", 422, "invalid_max_output" },
		{ "{\"command\":[\"ls\"],\"max_output_bytes\":1048577}", 422, "invalid_max_output" },
		{ "{\"command\":[\"ls\"],\"stdin\":5}", 400, "invalid_stdin" },
		{ "{\"command\":[\"ls\"],\"stdin\":\"abc\",\"stdin_encoding\":\"base64\"}", 400,
		  "invalid_stdin" },
		{ "{\"command\":[\"ls\"],\"stdin\":\"a\",\"stdin_encoding\":\"rot13\"}", 400,
		  "invalid_stdin" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int st = parse(t, bad[i].json, &r, &code);
		if (st != bad[i].status || strcmp(code, bad[i].code) != 0)
			fprintf(stderr, "  case %zu (%s): %d %s\n", i, bad[i].json, st, code);
		CHECK_INT(st, bad[i].status);
		CHECK_STR(code, bad[i].code);
		CHECK(r.argv == NULL && r.env == NULL && r.stdin_data == NULL); /* nothing kept */
	}
	/* "\\u0000" is an escaped backslash followed by text, not a NUL */
	CHECK_INT(parse(t, "{\"command\":[\"echo\",\"\\\\u0000\"]}", &r, &code), 0);
	CHECK_STR(r.argv[1], "\\u0000");
	exec_request_release(&r);
	config_free(cfg);

	/* without a shell: no env, no workdir */
	cfg = parse_with("    exec: {shell: none}\n", err, sizeof(err));
	REQUIRE(cfg);
	CHECK_INT(parse(&cfg->templates[0], "{\"command\":[\"ls\"],\"env\":{\"A\":\"b\"}}", &r, &code),
		  422);
	CHECK_STR(code, "unsupported");
	CHECK_INT(parse(&cfg->templates[0], "{\"command\":[\"ls\"]}", &r, &code), 0);
	CHECK(r.workdir == NULL);
	exec_request_release(&r);
	config_free(cfg);
}

static void test_output_is_text(void)
{
	CHECK(exec_output_is_text("", 0));
	CHECK(exec_output_is_text("hello\n", 6));
	CHECK(exec_output_is_text("\xc3\xa9t\xc3\xa9", 5));
	CHECK(!exec_output_is_text("a\0b", 3));
	CHECK(!exec_output_is_text("\xff", 1));
	CHECK(!exec_output_is_text("\xc3", 1));          /* cut */
	CHECK(!exec_output_is_text("\xed\xa0\x80", 3));  /* surrogate */
	CHECK(!exec_output_is_text("\xc0\xaf", 2));      /* overlong */
}

static void test_slots(void)
{
	char err[512];
	struct sbx_config *cfg = parse_with("", err, sizeof(err));
	REQUIRE(cfg);
	cfg->max_exec_streams = 5;
	struct exec_mgr *m = exec_mgr_new(cfg, NULL);
	REQUIRE(m);
	CHECK_INT(exec_mgr_acquire(m, "sb-a", "t1", 2, 0), EXEC_SLOT_OK);
	CHECK_INT(exec_mgr_acquire(m, "sb-a", "t1", 2, 0), EXEC_SLOT_OK);
	CHECK_INT(exec_mgr_acquire(m, "sb-a", "t1", 2, 0), EXEC_SLOT_SANDBOX_FULL);
	CHECK_INT(exec_mgr_acquire(m, "sb-b", "t1", 2, 3), EXEC_SLOT_OK);
	CHECK_INT(exec_mgr_acquire(m, "sb-c", "t1", 2, 3), EXEC_SLOT_TENANT_QUOTA);
	CHECK_INT(exec_mgr_acquire(m, "sb-c", "t2", 2, 3), EXEC_SLOT_OK);
	CHECK_INT(exec_mgr_acquire(m, "sb-d", "t3", 2, 0), EXEC_SLOT_OK);
	CHECK_INT(exec_mgr_active(m), 5);
	CHECK_INT(exec_mgr_acquire(m, "sb-e", "t4", 2, 0), EXEC_SLOT_REPLICA_FULL);
	exec_mgr_release(m, "sb-a", "t1");
	CHECK_INT(exec_mgr_acquire(m, "sb-a", "t1", 2, 0), EXEC_SLOT_OK);
	exec_mgr_release(m, "sb-a", "t1");
	exec_mgr_release(m, "sb-a", "t1");
	exec_mgr_release(m, "sb-b", "t1");
	exec_mgr_release(m, "sb-c", "t2");
	exec_mgr_release(m, "sb-d", "t3");
	CHECK_INT(exec_mgr_active(m), 0);
	/* every count went back to zero: the caps are whole again */
	CHECK_INT(exec_mgr_acquire(m, "sb-a", "t1", 1, 1), EXEC_SLOT_OK);
	exec_mgr_release(m, "sb-a", "t1");
	exec_mgr_free(m);
	config_free(cfg);
}

/* Run argv through fork/exec here (the wrapper and kill scripts are plain
 * POSIX sh), capturing stdout. */
static int run_here(char **argv, char *out, size_t outlen, pid_t *bg)
{
	int p[2];
	if (pipe(p) != 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	size_t n = 0;
	ssize_t r;
	while (n + 1 < outlen && (r = read(p[0], out + n, outlen - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	if (bg)
		*bg = pid;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_scripts_with_a_real_shell(void)
{
	char tok[EXEC_TOKEN_LEN + 1];
	REQUIRE(exec_new_token(tok) == 0);
	const char *env[] = { "GREETING=hello world", "EMPTY=" };
	const char *argv[] = { "/bin/sh", "-c",
			       "printf '%s|%s|%s|%s|' \"$GREETING\" \"$EMPTY\" \"$SBX_EXEC_ID\" \"$1\"; pwd",
			       "zero", "$(id) `x` ;*" };
	char **w = exec_wrap_argv("/bin/sh", tok, "/", env, 2, argv, 5);
	REQUIRE(w);
	char out[4096];
	CHECK_INT(run_here(w, out, sizeof(out), NULL), 0);
	char want[512];
	snprintf(want, sizeof(want), "hello world||%s|$(id) `x` ;*|/\n", tok);
	CHECK_STR(out, want);
	exec_argv_free(w);

	const char *fail_argv[] = { "/bin/true" };
	w = exec_wrap_argv("/bin/sh", tok, "/nonexistent-dir-for-test", NULL, 0, fail_argv, 1);
	REQUIRE(w);
	CHECK_INT(run_here(w, out, sizeof(out), NULL), EXEC_WRAP_BAD_WORKDIR);
	exec_argv_free(w);

	/* the kill script finds a detached descendant by its environment */
	const char *bg_argv[] = { "/bin/sh", "-c", "(setsid sleep 97 &) ; sleep 98 & echo started" };
	w = exec_wrap_argv("/bin/sh", tok, "", NULL, 0, bg_argv, 3);
	REQUIRE(w);
	CHECK_INT(run_here(w, out, sizeof(out), NULL), 0);
	exec_argv_free(w);
	/* give them a moment to exec */
	usleep(200000);
	char **k = exec_kill_argv("/bin/sh", tok);
	REQUIRE(k);
	CHECK_INT(run_here(k, out, sizeof(out), NULL), 0);
	/* a second run finds nothing left */
	CHECK_INT(run_here(k, out, sizeof(out), NULL), 0);
	exec_argv_free(k);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "grep -l -F -e SBX_EXEC_ID=%s /proc/[0-9]*/environ 2>/dev/null | grep -q .", tok);
	CHECK(system(cmd) != 0); /* no process holds the token any more */
}

int main(void)
{
	signal(SIGCHLD, SIG_DFL);
	RUN(test_config_defaults_and_errors);
	RUN(test_policy);
	RUN(test_request_parse);
	RUN(test_output_is_text);
	RUN(test_slots);
	RUN(test_scripts_with_a_real_shell);
	return test_summary();
}
