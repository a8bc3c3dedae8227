/*
 * exec_policy: what may be run in a sandbox, and how a command is wrapped so
 * that the controller can give it an environment, a working directory, and
 * stop it -- with everything it started -- when its time is up.
 *
 * Policy (per template, struct sbx_exec_policy): argv count and sizes, an
 * allowlist and a denylist of programs. The program is argv[0] as given:
 *   - allow entry "python3" (no '/') matches argv[0] == "python3" exactly,
 *     i.e. a program found through the image's PATH; it does NOT match
 *     "/tmp/x/python3", which would let a client run any file it names so;
 *   - allow entry "/usr/bin/git" matches argv[0] == "/usr/bin/git" exactly;
 *   - deny entries are broader: "bash" refuses "bash" and every path whose
 *     last segment is "bash"; "/bin/bash" refuses that path and "bash".
 *   - argv[0] that is a path must be canonical (absolute or relative without
 *     "." or ".." segments, no "//", no trailing '/'), so that spelling a
 *     path differently cannot slip past either list.
 * A policy restricts what is launched, not what the launched program does:
 * allowing a shell or an interpreter allows whatever it can run. The Pod
 * (non-root, no capabilities, read-only root, default-deny network) is the
 * sandbox; the policy is a guard rail on top.
 *
 * Wrapping (when the template's exec.shell is set, "/bin/sh" by default):
 * the Kubernetes command becomes
 *   SHELL -c RUN_SCRIPT sbx-exec TOKEN WORKDIR NENV K=V... ARGV...
 * The script exports SBX_EXEC_ID=TOKEN and the K=V pairs, enters WORKDIR,
 * and exec()s ARGV -- the client's argv is passed as separate positional
 * parameters and is never joined into a shell string. TOKEN is 32 random hex
 * digits, fresh per call. Every process the command starts inherits
 * SBX_EXEC_ID, so the kill command
 *   SHELL -c KILL_SCRIPT sbx-kill TOKEN
 * finds them through /proc/<pid>/environ (grep -l -F) and sends SIGKILL,
 * repeating until none is left (bounded rounds), which also catches children
 * that called setsid() or were re-parented. What the image needs: the shell,
 * grep, and /proc (always mounted by Kubernetes). A process that clears its
 * environment before forking escapes; deleting the sandbox stops everything.
 */
#ifndef SBX_EXEC_POLICY_H
#define SBX_EXEC_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define EXEC_TOKEN_LEN 32 /* hex digits */
#define EXEC_ENV_NAME_MAX 128

enum exec_policy_result {
	EXEC_POLICY_OK = 0,
	EXEC_POLICY_EMPTY,          /* no argv, or argv[0] empty */
	EXEC_POLICY_TOO_MANY_ARGS,  /* argc > max_args */
	EXEC_POLICY_ARG_TOO_LONG,   /* one element > max_arg_bytes */
	EXEC_POLICY_ARGV_TOO_LONG,  /* all elements > max_argv_bytes */
	EXEC_POLICY_BAD_PROGRAM,    /* argv[0] not canonical, or has control chars */
	EXEC_POLICY_NOT_ALLOWED,    /* allowlist set and argv[0] not on it */
	EXEC_POLICY_DENIED,         /* on the denylist */
};

/* Stable machine-readable code of a result ("argv_too_long", ...). */
const char *exec_policy_code(enum exec_policy_result r);

/* Check argv (argc elements) against e. why gets a one-line reason that
 * may quote argv[0] (at most 64 bytes of it). */
enum exec_policy_result exec_policy_check(const struct sbx_exec_policy *e,
					  const char *const *argv, size_t argc, char *why,
					  size_t whylen);

/* An environment variable name a client may set: [A-Za-z_][A-Za-z0-9_]*,
 * at most EXEC_ENV_NAME_MAX bytes, and not SBX_EXEC_ID. */
bool exec_env_name_valid(const char *name);

/* A fresh random token (EXEC_TOKEN_LEN hex digits and a NUL). 0 or -EIO. */
int exec_new_token(char out[EXEC_TOKEN_LEN + 1]);

/*
 * The wrapped argv (NULL-terminated, malloc'd array of malloc'd strings; free
 * with exec_argv_free), or NULL when out of memory. workdir may be NULL or
 * "" (stay where the runtime starts the command); env holds nenv "K=V"
 * strings (already validated).
 */
char **exec_wrap_argv(const char *shell, const char *token, const char *workdir,
		      const char *const *env, size_t nenv, const char *const *argv, size_t argc);

/* The kill command for token. */
char **exec_kill_argv(const char *shell, const char *token);

/* Exit status of the wrapper when it cannot enter the working directory, and
 * of the kill command when processes were still appearing after its last
 * round. */
#define EXEC_WRAP_BAD_WORKDIR 126
#define EXEC_KILL_GAVE_UP 3

void exec_argv_free(char **argv);

/* A NULL-terminated copy of the n strings of parts (none may be NULL:
 * then, or out of memory, NULL); free with exec_argv_free. */
char **exec_argv_build(const char *const *parts, size_t n);

/* The scripts, exported for tests and docs. */
extern const char exec_run_script[];
extern const char exec_kill_script[];

#endif
