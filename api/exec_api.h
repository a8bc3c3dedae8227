/*
 * exec_api: running commands in sandboxes for the HTTP API.
 *
 *   - slots: every exec call, exec stream and file transfer holds one slot
 *     while it runs; slots are capped per sandbox (template exec.max_streams),
 *     per tenant (quotas exec_streams) and per replica
 *     (limits.max_exec_streams). Over a cap -> 429 with a code naming it.
 *   - one-shot exec (POST /v1/sandboxes/{id}/exec): parse and check the JSON
 *     request (exec_request_parse), then exec_mgr_run starts the command over
 *     pods/exec and answers when it ends. Output beyond the cap is dropped
 *     and flagged; output that is not UTF-8 (or holds NUL) comes back base64.
 *   - timeouts: a timer thread watches deadlines; at the deadline the stream
 *     is closed and, when the template has a shell, the kill command of
 *     exec_policy.h stops the command and every process it started, before
 *     the reply goes out ("timed_out": true, "killed": true/false).
 *
 * Nothing here blocks the HTTP service thread: the run proceeds on the exec
 * client's thread and replies from there.
 */
#ifndef SBX_EXEC_API_H
#define SBX_EXEC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http_server.h"
#include "kube_exec.h"

struct exec_mgr;

/* cfg and kx are borrowed and must outlive the manager. kx may be NULL
 * (tests of parsing and slots): runs then fail with 503. */
struct exec_mgr *exec_mgr_new(const struct sbx_config *cfg, struct kube_exec_client *kx);

/* Stop the timer. Runs still open are cancelled (and their commands killed
 * when possible) and answered; returns once every run has ended, waiting at
 * most about 20 s. NULL is a no-op. */
void exec_mgr_free(struct exec_mgr *m);

/* The exec client (NULL when none). */
struct kube_exec_client *exec_mgr_client(struct exec_mgr *m);

/* Exec calls, streams and transfers open now (slots held). */
int exec_mgr_active(struct exec_mgr *m);

/* ---- slots ---- */

enum exec_slot_result {
	EXEC_SLOT_OK = 0,
	EXEC_SLOT_SANDBOX_FULL,  /* the template's exec.max_streams for this sandbox */
	EXEC_SLOT_TENANT_QUOTA,  /* the tenant's quotas exec_streams */
	EXEC_SLOT_REPLICA_FULL,  /* limits.max_exec_streams */
};

/* Take a slot, or say which cap is full. tenant_quota 0 = no limit. */
enum exec_slot_result exec_mgr_acquire(struct exec_mgr *m, const char *sandbox,
				       const char *tenant, int per_sandbox,
				       int64_t tenant_quota);
void exec_mgr_release(struct exec_mgr *m, const char *sandbox, const char *tenant);

/* Take a slot for a request, or answer it with 429 (codes
 * "too_many_streams", "quota_exceeded", "exec_capacity") and return false. */
bool exec_mgr_admit(struct exec_mgr *m, struct http_request *req, const char *sandbox,
		    const char *tenant, const struct sbx_template *t);

/* ---- one-shot ---- */

struct exec_request {
	char **argv;             /* NULL-terminated; argc elements */
	size_t argc;
	char **env;              /* "K=V", nenv of them; values are secrets (wiped) */
	size_t nenv;
	char *workdir;           /* NULL: the template's workspace */
	char *stdin_data;        /* NULL: no stdin */
	size_t stdin_len;
	int64_t timeout_s;
	size_t max_output;       /* per stream */
};

/*
 * Parse a POST /v1/sandboxes/{id}/exec body against template t:
 *   {"command": [argv...], "stdin"?: string, "stdin_encoding"?: "utf-8"|"base64",
 *    "env"?: {K: V}, "workdir"?: string, "timeout_seconds"?: int,
 *    "max_output_bytes"?: int}
 * Returns 0, or an HTTP status (400 bad JSON/types/unknown fields/NUL,
 * 422 policy or limits) with a stable code in *code and a reason in why.
 * max_env/max_env_bytes bound env like sandbox creation does.
 */
int exec_request_parse(const char *body, size_t len, const struct sbx_template *t,
		       size_t max_env, size_t max_env_bytes, struct exec_request *out,
		       const char **code, char *why, size_t whylen);
void exec_request_release(struct exec_request *r);

/*
 * Run r in the sandbox (Pod pod in namespace ns), holding the slot the
 * caller took with exec_mgr_admit (released here, always). Takes r (and
 * leaves it empty) and the request, answered exactly once:
 *   200 {"exit_code", "stdout", "stdout_encoding", "stdout_truncated",
 *        "stderr", ..., "timed_out", "killed"?, "duration_ms"}
 *   502 exec_failed (the command could not be started: e.g. the template's
 *       shell is missing from the image), 503 exec_unavailable.
 */
void exec_mgr_run(struct exec_mgr *m, struct http_request *req, const char *ns,
		  const char *pod, const char *tenant, const struct sbx_template *t,
		  struct exec_request *r);

/* Output encoding: whether len bytes are UTF-8 that JSON can carry as a
 * string (no NUL). Exported for tests. */
bool exec_output_is_text(const char *data, size_t len);

/* ---- raw runs (file transfers) ---- */

struct exec_raw_result {
	bool have_exit;           /* exit_code is valid */
	int exit_code;
	bool timed_out;           /* cancelled at the deadline */
	const char *out;          /* stdout (NUL-terminated), up to max_output */
	size_t out_len;
	bool out_truncated;
	const char *err;          /* stderr, likewise */
	size_t err_len;
	const struct kube_error *error; /* why there is no exit code */
};

/* Called once, on the exec client's thread (or the caller's, when the run
 * cannot start); the result is valid during the call only. */
typedef void (*exec_raw_done_fn)(void *ud, const struct exec_raw_result *res);

/*
 * Run argv as it is (no wrapper, no kill at the deadline) in the Pod,
 * holding the slot the caller took (released after done). argv and
 * stdin_data (NULL: no stdin) are taken; stdout and stderr are each kept up
 * to max_output bytes.
 */
void exec_mgr_run_raw(struct exec_mgr *m, const char *ns, const char *pod, const char *tenant,
		      char **argv, char *stdin_data, size_t stdin_len, size_t max_output,
		      int64_t timeout_s, exec_raw_done_fn done, void *ud);

/* ---- kill ---- */

/* Start the kill command for token in the sandbox (fire and forget; logged
 * when it fails). For streams whose client went away. */
void exec_mgr_kill(struct exec_mgr *m, const char *ns, const char *pod, const char *shell,
		   const char *token);

#endif
