/*
 * audit: the audit trail, one JSON object per line, to stdout, stderr or a
 * file; apart from the daemon's log (log.h), which it never goes through.
 *
 * A record looks like this (one line; absent fields are left out):
 *   {"time":"2025-05-01T12:00:00.123Z","type":"audit",
 *    "request_id":"7f3a...","principal":{"id":"k1","kind":"key"},
 *    "tenant":"acme","client_addr":"203.0.113.9","action":"exec",
 *    "sandbox":"sb-1a2b","argc":3,"argv":["python3","-c","print(1)"],
 *    "outcome":"success","status":200,"duration_ms":42}
 * With AUDIT_ARGV_REDACTED, "argv" becomes "program":"python3" (argv[0]
 * only; "argc" stays); with AUDIT_ARGV_HASHED it becomes
 * "argv_sha256":"<64 hex>", the SHA-256 of argv[0] NUL argv[1] NUL ...
 * argv[argc-1] (NUL between elements, none after the last; "argc" tells
 * [] from [""]). Hashing lets one match records of the same command; it
 * hides nothing from whoever can guess the command, so it is no protection
 * for a secret passed in argv.
 *
 * What is recorded is what struct audit_event has, and nothing else: it has
 * no field for a token, key, JWT, password, header or environment value, by
 * design (tests/unit/test_audit.c pins its layout and the keys a line may
 * hold). "reason" is a category (auth_result_name(): "unknown_key",
 * "expired", "bad_signature"; or "rate_limited", "quota_sandboxes", ...),
 * never a credential or a message quoting one: a reason, action or
 * principal kind outside [a-z0-9_.-]{1,64} is replaced by "invalid".
 *
 * Strings are JSON-escaped; invalid UTF-8 becomes U+FFFD; a string longer
 * than its limit (AUDIT_FIELD_MAX bytes once escaped, AUDIT_ARG_MAX for an
 * argv element) is cut at a character boundary and ends in "...(truncated)";
 * argv elements after AUDIT_ARGV_MAX bytes are left out and
 * "argv_truncated":true is added. A line is therefore at most
 * AUDIT_LINE_MAX bytes. Each line goes out in one write(2) under a mutex,
 * so lines from any number of threads never interleave.
 */
#ifndef SBX_AUDIT_H
#define SBX_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_FIELD_MAX 256   /* escaped bytes of one string field */
#define AUDIT_ARG_MAX 1024    /* escaped bytes of one argv element */
#define AUDIT_ARGV_MAX 8192   /* escaped bytes of the whole argv array */
#define AUDIT_CODE_MAX 64     /* action, principal kind, reason */
#define AUDIT_LINE_MAX 16384  /* a whole line, newline included */

/* Actions, for a consistent vocabulary (any [a-z0-9_.-] string works). */
#define AUDIT_SANDBOX_CREATE "sandbox.create"
#define AUDIT_SANDBOX_DELETE "sandbox.delete"
#define AUDIT_SANDBOX_EXPIRE "sandbox.expire"   /* deleted by the reconciler */
#define AUDIT_SANDBOX_TIMEOUT "sandbox.timeout" /* lifetime changed */
#define AUDIT_TOKEN_CREATE "token.create"       /* a scoped token was issued */
#define AUDIT_EXEC "exec"
#define AUDIT_FILES_READ "files.read"
#define AUDIT_FILES_WRITE "files.write"
#define AUDIT_AUTH_FAILURE "auth.failure"
/* A refusal (rate limit, quota, scope) records the action that was tried,
 * with AUDIT_DENIED and a reason such as "rate_limited". */

enum audit_argv_mode {
	AUDIT_ARGV_FULL = 0,  /* every element, as given */
	AUDIT_ARGV_REDACTED,  /* argv[0] and the count */
	AUDIT_ARGV_HASHED,    /* SHA-256 of the elements and the count */
};

enum audit_outcome {
	AUDIT_OUTCOME_NONE = 0, /* not recorded */
	AUDIT_SUCCESS,          /* "success" */
	AUDIT_FAILURE,          /* "failure": the action was tried and failed */
	AUDIT_DENIED,           /* "denied": authentication, authorization,
				   quota or rate limit said no */
};

struct audit_opts {
	const char *destination;        /* "stdout" (also NULL or ""), "stderr",
					   or a file path: appended to,
					   created with mode 0600 */
	enum audit_argv_mode argv_mode;
};

/* One event. Everything is borrowed for the call only; NULL strings, a zero
 * status, a zero duration_ms and AUDIT_OUTCOME_NONE are left out of the
 * line. argv is left out when NULL (an empty argv is argv non-NULL and
 * argc 0). */
struct audit_event {
	const char *request_id;     /* the X-Request-Id of the request */
	const char *principal_id;   /* the API key id or the JWT subject
				       (struct auth_principal.id) */
	const char *principal_kind; /* auth_kind_name(): "key", "jwt",
				       "sandbox", "anonymous"; or "system"
				       for the controller's own acts (expiry) */
	const char *tenant;
	const char *client_addr;    /* from client_addr_resolve */
	const char *action;         /* AUDIT_* above */
	const char *sandbox_id;
	char *const *argv;          /* exec only: the command, argc elements */
	size_t argc;
	enum audit_outcome outcome;
	int status;                 /* HTTP status sent */
	const char *reason;         /* a category, never a credential: for
				       auth failures auth_result_name() */
	int64_t duration_ms;
};

struct audit;

struct audit_stats {
	uint64_t records;  /* lines written */
	uint64_t failures; /* lines lost to write errors */
};

/* Open the trail. o NULL means stdout with full argv. Returns NULL with a
 * reason in err when the file cannot be opened or argv_mode is unknown, or
 * when out of memory. Free with audit_free. */
struct audit *audit_new(const struct audit_opts *o, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Close the file (if any) and free. NULL is a no-op. */
void audit_free(struct audit *a);

/* Write one record. Thread-safe; never fails from the caller's view: a
 * write error is counted (audit_get_stats) and logged once until writes
 * succeed again. a NULL is a no-op (audit off). */
void audit_record(struct audit *a, const struct audit_event *e);

/* Reopen the file by its path, for log rotation (call it on SIGHUP, from
 * the thread that handles signals, not from the handler). Records in
 * flight go to the old file or the new one, never half to each. Returns 0
 * (also for stdout and stderr, where there is nothing to do) or a negated
 * errno with the old file kept. */
int audit_reopen(struct audit *a) __attribute__((warn_unused_result));

void audit_get_stats(struct audit *a, struct audit_stats *out);

/* The text of an outcome ("success", ...), NULL for AUDIT_OUTCOME_NONE. */
const char *audit_outcome_name(enum audit_outcome o);

#endif
