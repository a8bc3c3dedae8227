/*
 * auth: who is calling. Checks the Authorization header of an API request --
 * an API key or a JWT -- against key material read from files named in the
 * configuration (auth: section), and issues the short-lived sandbox-scoped
 * tokens. docs/authentication.md is the operator's view of all of this.
 *
 *   Authorization: Bearer sbx_<keyid>_<secret>     API key
 *   Authorization: Bearer <header>.<payload>.<sig>  JWT (compact JWS)
 *
 * API keys: "sbx_", a key id (generated: 12 of [a-z2-7]; chosen with
 * keygen --id: 1 to 32 of [a-z0-9-], a letter or digit at both ends), "_",
 * and 52 of [a-z2-7] (256 random bits, base32, no padding). The key file
 * keeps, per key id, the SHA-256 of the whole key, the tenant, the scopes,
 * an optional expiry and an optional "disabled: true"; the key itself is
 * never stored. Lookup by id, then a constant-time comparison (ct_equal) of
 * the digests. A salt would add nothing: the secret is 256 random bits, so a
 * stolen file gives no offline guessing attack to slow down, and a fast hash
 * keeps the check under a microsecond.
 *
 * JWTs: HS256 (a shared secret of at least 32 bytes, from a file or the
 * SBX_JWT_HS256_SECRET variable), RS256 (RSA >= 2048 bits) and ES256 (P-256),
 * the public keys from PEM files or a JWKS file. The header's alg picks the
 * key type: an HS256 token is only ever checked against the HMAC secret, an
 * RS256 one only against RSA keys, so a token "signed" with a public key as an
 * HMAC secret fails (algorithm confusion). Refused: alg none and any other
 * alg, a crit header, a kid that names no key (when no kid-less key of that
 * type exists), duplicate JSON keys, non-canonical base64url, a token over
 * AUTH_MAX_HEADER. Claims: exp required; nbf and iat (not in the future) with
 * the configured leeway; iss and aud when configured (aud a string or an
 * array); sub required (the principal id); the tenant from the configured
 * claim (a label value); scopes from "scope" (space-separated) and "scp"
 * (array or string) -- names this service does not define (openid, email,
 * ...) are ignored, since identity providers put their own there.
 *
 * Sandbox-scoped tokens are HS256 JWTs with kid AUTH_SCOPED_KID, signed with
 * the scoped-token secret (a file shared by replicas, or 32 random bytes per
 * process) and never with the JWT secret; auth_check verifies them like any
 * token and returns kind AUTH_KIND_SANDBOX with principal.sandbox set: the API
 * must compare it with the sandbox the request is for.
 *
 * Threads: auth_check and auth_issue_sandbox_token may run on any number of
 * threads while auth_reload runs on another; the key material is an
 * immutable snapshot swapped under a lock.
 */
#ifndef SBX_AUTH_H
#define SBX_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define AUTH_MAX_HEADER 8192            /* bytes of an Authorization value */
#define AUTH_MAX_KEYS_FILE (4u << 20)   /* bytes of the API key file */
#define AUTH_MAX_KEYS 10000             /* entries of the API key file */
#define AUTH_MAX_JWKS_FILE (256u << 10) /* bytes of the JWKS file */
#define AUTH_MAX_JWT_KEYS 32            /* JWKS keys + PEM files */
#define AUTH_MAX_SECRET_FILE 4096       /* bytes of an HMAC secret file */
#define AUTH_MIN_SECRET 32              /* bytes of an HMAC secret, at least */
#define AUTH_KEY_ID_MAX 32              /* chars of an API key id */
#define AUTH_SCOPED_KID "sbx-scoped"    /* JWT header kid of scoped tokens */
#define AUTH_SCOPED_MAX_TTL_S 86400     /* longest scoped token */
#define AUTH_ANONYMOUS_TENANT "default" /* the tenant of insecure dev mode */
#define AUTH_INSECURE_REPEAT_S 300      /* insecure mode is announced this often */

enum auth_scope {
	AUTH_SCOPE_SANDBOXES_READ = 1u << 0,  /* "sandboxes:read" */
	AUTH_SCOPE_SANDBOXES_WRITE = 1u << 1, /* "sandboxes:write" */
	AUTH_SCOPE_EXEC = 1u << 2,            /* "exec" */
	AUTH_SCOPE_FILES = 1u << 3,           /* "files" */
	AUTH_SCOPE_ADMIN = 1u << 4,           /* "admin": every scope, every tenant */
};
#define AUTH_SCOPES_ALL 0x1fu

/* "sandboxes:read" -> AUTH_SCOPE_SANDBOXES_READ, etc. 0, or -EINVAL for a
 * name this service does not define (and for NULL). */
int auth_scope_parse(const char *name, unsigned *bit) __attribute__((warn_unused_result));

/* The name of one scope bit, or NULL when bit is not exactly one scope. */
const char *auth_scope_name(unsigned bit);

/* The names of the bits of scopes, in enum order, joined with sep (e.g. " "
 * for a JWT "scope" claim, "," for a log line) into buf; "" for none. Returns
 * the length written, or -ENOSPC when buf is too small (buf then holds "").
 * 64 bytes always suffice. */
int auth_scopes_format(unsigned scopes, const char *sep, char *buf, size_t len);

enum auth_kind {
	AUTH_KIND_NONE = 0,   /* not authenticated */
	AUTH_KIND_KEY,        /* an API key: id is the key id */
	AUTH_KIND_JWT,        /* a JWT: id is its sub */
	AUTH_KIND_SANDBOX,    /* a sandbox-scoped token: id is the sub of the
				 principal that asked for it */
	AUTH_KIND_ANONYMOUS,  /* no header, insecure dev mode: admin */
	AUTH_KIND_CERT,       /* a verified TLS client certificate listed in
				 auth.client_certs: id is its subject CN */
};

/* "none", "key", "jwt", "sandbox", "anonymous", "cert". */
const char *auth_kind_name(enum auth_kind k);

struct auth_principal {
	enum auth_kind kind;
	char id[128];        /* key id or JWT sub: safe to log; never a secret.
				On a failed API key check, the key id when the
				key was well formed (for the audit), else "". */
	char tenant[64];     /* [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?: a label value */
	unsigned scopes;     /* enum auth_scope bits */
	char sandbox[32];    /* non-empty: valid for this sandbox only (scoped token) */
	int64_t expires_at;  /* unix seconds; 0 = none */
};

/* Whether p may use every scope in need: admin holds them all. */
bool auth_allows(const struct auth_principal *p, unsigned need);

enum auth_result {
	AUTH_OK = 0,
	AUTH_MISSING,         /* no Authorization header (or an empty one) */
	AUTH_MALFORMED,       /* not "Bearer <token>", not an API key or a compact
				 JWS, bad base64url or JSON, duplicate JSON keys,
				 a crit header, over AUTH_MAX_HEADER */
	AUTH_UNKNOWN_KEY,     /* no such key id, or the secret does not match */
	AUTH_REVOKED,         /* the right key, marked disabled in the key file */
	AUTH_EXPIRED,         /* key past its expiry; JWT past exp + leeway */
	AUTH_NOT_YET_VALID,   /* nbf or iat later than now + leeway */
	AUTH_BAD_SIGNATURE,   /* no candidate key verifies the signature */
	AUTH_BAD_ALGORITHM,   /* alg none, unknown, not configured, or not the
				 type of the key its kid names */
	AUTH_BAD_ISSUER,      /* iss missing or not the configured issuer */
	AUTH_BAD_AUDIENCE,    /* aud missing or without the configured audience */
	AUTH_UNKNOWN_KID,     /* kid names no key, and no kid-less key of the type */
	AUTH_NO_TENANT,       /* the tenant claim is missing */
	AUTH_BAD_CLAIMS,      /* exp missing; a claim of the wrong type; sub
				 missing; tenant not a valid label value; a
				 scoped token without a valid sandbox */
	AUTH_UNKNOWN_CERT,    /* a verified client certificate whose subject CN
				 auth.client_certs does not list */
};

/* A stable reason category for logs and audit ("ok", "missing", "malformed",
 * "unknown_key", "revoked", "expired", "not_yet_valid", "bad_signature",
 * "bad_algorithm", "bad_issuer", "bad_audience", "unknown_kid", "no_tenant",
 * "bad_claims", "unknown_client_cert"); never anything from the token itself. */
const char *auth_result_name(enum auth_result r);

struct auth;

/* Read every file cfg names (API keys, HS256 secret or SBX_JWT_HS256_SECRET
 * when cfg->jwt_hs256_secret_env, PEM public keys, JWKS, scoped-token
 * secret) and build the checker. cfg is only read during the call. Returns
 * NULL with a one-line reason in err (naming the file and, inside it, the
 * entry: "/etc/keys.yaml: keys[2].scopes[0]: \"exec2\" is not a scope") when
 * a file is missing or invalid, or when nothing could authenticate a request
 * and insecure dev mode is off. With insecure dev mode on, logs a warning
 * saying so. */
struct auth *auth_new(const struct sbx_auth_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* A request that came with a TLS client certificate the HTTP server verified
 * against tls.client_ca_file (http_request_client_cert) and no Authorization
 * header: the principal auth.client_certs maps its subject CN to (kind
 * AUTH_KIND_CERT, id the CN, that tenant and those scopes), or
 * AUTH_UNKNOWN_CERT with only id set (to the CN, when it is one
 * config_valid_client_cn accepts; for the audit) (AUTH_MISSING for NULL or
 * ""). The list is fixed at auth_new. */
enum auth_result auth_check_client_cert(const struct auth *a, const char *cn,
					struct auth_principal *out);

/* Free a and every secret it holds (wiped first). NULL is a no-op. */
void auth_free(struct auth *a);

/* Authenticate header, the raw Authorization value (NULL when absent), at
 * now (unix seconds). Fills *out on AUTH_OK; on failure *out has kind
 * AUTH_KIND_NONE (and id, see struct auth_principal). With insecure dev mode
 * on, a request without the header is AUTH_OK as AUTH_KIND_ANONYMOUS, tenant
 * AUTH_ANONYMOUS_TENANT, every scope; a header that is present is checked
 * normally. Thread-safe; secrets are compared in constant time. Does not
 * block on I/O. */
enum auth_result auth_check(struct auth *a, const char *header, int64_t now,
			    struct auth_principal *out);

/* Re-read the files when one changed (device, inode, size or mtime; a
 * Kubernetes Secret update swaps a symlink and so the inode), or every file
 * when force (SIGHUP). A failed reload keeps the old keys, logs the reason
 * once per change of the files, and returns the negative errno; success logs
 * what was loaded. Returns 1 reloaded, 0 unchanged, < 0 error. A few stat()
 * calls when nothing changed: cheap enough to call every second. Also repeats
 * the insecure dev mode warning every AUTH_INSECURE_REPEAT_S seconds. */
int auth_reload(struct auth *a, bool force);

/* Issue a sandbox-scoped token for sandbox_id (sandbox_valid_id), whose
 * tenant is tenant (the sandbox's: the caller has looked the sandbox up and
 * checked that issuer may see it), carrying scopes (a non-empty subset of
 * sandboxes:read, sandboxes:write, exec, files that the issuer holds; admin
 * is never delegated) for ttl_s seconds (1..AUTH_SCOPED_MAX_TTL_S) from now,
 * on behalf of issuer (its id becomes the token's sub). The token never
 * outlives the issuer's own credential; a non-admin issuer may only issue for
 * its own tenant, and a scoped issuer only for its own sandbox. Returns 0,
 * *token (malloc'd; free it with free_secret) and *expires_at; -EINVAL (bad
 * sandbox id, tenant, ttl or scopes), -EPERM (the issuer lacks a scope, is of
 * another tenant or sandbox, or has expired) or -ENOMEM. */
int auth_issue_sandbox_token(struct auth *a, const struct auth_principal *issuer,
			     const char *sandbox_id, const char *tenant, unsigned scopes,
			     int ttl_s, int64_t now, char **token, int64_t *expires_at)
	__attribute__((warn_unused_result));

/* Whether insecure dev mode is on. */
bool auth_insecure(const struct auth *a);

/*
 * `sandbox-controller keygen --tenant T --scopes a,b [--expires 30d|RFC3339]
 * [--id ID] [--description TEXT]`: generate an API key. argv[0] is
 * "keygen". Prints the key alone on stdout (shown once; never stored), and on
 * stderr a comment line and the entry to append under "keys:" in the key
 * file. The secret is never taken from argv. Returns 0, 2 on a usage error
 * (message on stderr), 1 when randomness fails.
 */
int auth_keygen_main(int argc, char **argv);

#endif
