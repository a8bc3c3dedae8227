/*
 * exec_policy: see exec_policy.h.
 */
#include "exec_policy.h"

#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* $1 token, $2 workdir, $3 count of K=V, then the pairs, then argv. */
const char exec_run_script[] =
	"SBX_EXEC_ID=$1; export SBX_EXEC_ID; w=$2; n=$3; shift 3; "
	"while [ \"$n\" -gt 0 ]; do export \"$1\" || exit 126; shift; n=$((n-1)); done; "
	"if [ -n \"$w\" ]; then cd -- \"$w\" 2>/dev/null || "
	"{ echo \"sandbox-controller: cannot enter the working directory\" >&2; exit 126; }; fi; "
	"exec \"$@\"";

/* $1 token. At most 50 rounds of: find every process whose environment
 * holds the token, SIGKILL them. 0 when none is left. */
const char exec_kill_script[] =
	"t=$1; n=0; while [ $n -lt 50 ]; do "
	"p=$(grep -l -F -e \"SBX_EXEC_ID=$t\" /proc/[0-9]*/environ 2>/dev/null); "
	"[ -z \"$p\" ] && exit 0; "
	"for f in $p; do f=${f#/proc/}; kill -KILL \"${f%/environ}\" 2>/dev/null; done; "
	"n=$((n+1)); done; exit 3";

const char *exec_policy_code(enum exec_policy_result r)
{
	switch (r) {
	case EXEC_POLICY_OK:
		return "ok";
	case EXEC_POLICY_EMPTY:
		return "empty_command";
	case EXEC_POLICY_TOO_MANY_ARGS:
		return "too_many_args";
	case EXEC_POLICY_ARG_TOO_LONG:
		return "arg_too_long";
	case EXEC_POLICY_ARGV_TOO_LONG:
		return "argv_too_long";
	case EXEC_POLICY_BAD_PROGRAM:
		return "invalid_program";
	case EXEC_POLICY_NOT_ALLOWED:
		return "program_not_allowed";
	case EXEC_POLICY_DENIED:
		return "program_denied";
	}
	return "invalid_command";
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* A program as a client may name it: no control characters; when it holds
 * a '/', no empty, "." or ".." segment and no trailing '/'. */
static bool canonical_program(const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return false;
	if (!strchr(s, '/'))
		return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
	const char *seg = s[0] == '/' ? s + 1 : s;
	for (;;) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		if (!end)
			return true;
		seg = end + 1;
	}
}

enum exec_policy_result exec_policy_check(const struct sbx_exec_policy *e,
					  const char *const *argv, size_t argc, char *why,
					  size_t whylen)
{
	if (argc == 0 || !argv[0] || !argv[0][0]) {
		snprintf(why, whylen, "command must have at least one element, the program");
		return EXEC_POLICY_EMPTY;
	}
	if (argc > e->max_args) {
		snprintf(why, whylen, "command has %zu elements; at most %zu", argc, e->max_args);
		return EXEC_POLICY_TOO_MANY_ARGS;
	}
	size_t total = 0;
	for (size_t i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]);
		if (n > e->max_arg_bytes) {
			snprintf(why, whylen, "command[%zu] has %zu bytes; at most %zu", i, n,
				 e->max_arg_bytes);
			return EXEC_POLICY_ARG_TOO_LONG;
		}
		total += n;
	}
	if (total > e->max_argv_bytes) {
		snprintf(why, whylen, "command has %zu bytes in all; at most %zu", total,
			 e->max_argv_bytes);
		return EXEC_POLICY_ARGV_TOO_LONG;
	}
	const char *prog = argv[0];
	if (!canonical_program(prog)) {
		snprintf(why, whylen,
			 "the program must be a name or a canonical path (no control characters, no '.', '..' or empty segments)");
		return EXEC_POLICY_BAD_PROGRAM;
	}
	const char *base = base_name(prog);
	for (size_t i = 0; i < e->ndeny; i++) {
		const char *d = e->deny[i];
		if (strcmp(prog, d) == 0 || strcmp(base, base_name(d)) == 0) {
			snprintf(why, whylen, "the program \"%.64s\" is denied by this template", prog);
			return EXEC_POLICY_DENIED;
		}
	}
	if (e->nallow) {
		for (size_t i = 0; i < e->nallow; i++)
			if (strcmp(prog, e->allow[i]) == 0)
				return EXEC_POLICY_OK;
		snprintf(why, whylen, "the program \"%.64s\" is not in this template's allowlist",
			 prog);
		return EXEC_POLICY_NOT_ALLOWED;
	}
	return EXEC_POLICY_OK;
}

bool exec_env_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > EXEC_ENV_NAME_MAX || strcmp(name, "SBX_EXEC_ID") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

int exec_new_token(char out[EXEC_TOKEN_LEN + 1])
{
	unsigned char r[EXEC_TOKEN_LEN / 2];
	if (random_bytes(r, sizeof(r)) != 0)
		return -EIO;
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < sizeof(r); i++) {
		out[2 * i] = hex[r[i] >> 4];
		out[2 * i + 1] = hex[r[i] & 15];
	}
	out[EXEC_TOKEN_LEN] = '\0';
	return 0;
}

void exec_argv_free(char **argv)
{
	if (!argv)
		return;
	for (char **a = argv; *a; a++)
		free(*a);
	free(argv);
}

char **exec_argv_build(const char *const *parts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!parts[i])
			return NULL;
	char **out = calloc(n + 1, sizeof(*out));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (!(out[i] = strdup(parts[i]))) {
			exec_argv_free(out);
			return NULL;
		}
	}
	return out;
}

char **exec_wrap_argv(const char *shell, const char *token, const char *workdir,
		      const char *const *env, size_t nenv, const char *const *argv, size_t argc)
{
	char count[24];
	snprintf(count, sizeof(count), "%zu", nenv);
	size_t n = 7 + nenv + argc;
	const char **parts = calloc(n, sizeof(*parts));
	if (!parts)
		return NULL;
	size_t k = 0;
	parts[k++] = shell;
	parts[k++] = "-c";
	parts[k++] = exec_run_script;
	parts[k++] = "sbx-exec";
	parts[k++] = token;
	parts[k++] = workdir ? workdir : "";
	parts[k++] = count;
	for (size_t i = 0; i < nenv; i++)
		parts[k++] = env[i];
	for (size_t i = 0; i < argc; i++)
		parts[k++] = argv[i];
	char **out = exec_argv_build(parts, k);
	free(parts);
	return out;
}

char **exec_kill_argv(const char *shell, const char *token)
{
	const char *parts[] = { shell, "-c", exec_kill_script, "sbx-kill", token };
	return exec_argv_build(parts, 5);
}
