/*
 * sandbox_api: handlers for the v1 API (see sandbox_api.h).
 *
 * Layout: helpers (JSON, time, errors); validation of client input; read
 * handlers (server thread, cache only); write jobs (worker threads) and the
 * readiness waiter; the router.
 *
 * Ownership: a handler that hands a request to a worker stops touching it; the
 * job owns the request until it replies (exactly once) and frees itself.
 */
#include "sandbox_api.h"

#include "exec_api.h"
#include "exec_policy.h"
#include "exec_stream.h"
#include "files_api.h"
#include "sandbox_files.h"
#include "log.h"
#include "router.h"
#include "sandbox_spec.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000
#define LIST_MAX_LABEL_FILTERS 16

enum route_id {
	R_HEALTHZ,
	R_READYZ,
	R_CREATE,
	R_LIST,
	R_GET,
	R_DELETE,
	R_TIMEOUT,
	R_TOKENS,
	R_TEMPLATES,
	R_EXEC_RUN,
	R_EXEC_STREAM,
	R_FILES_GET,
	R_FILES_PUT,
	R_FILES_DELETE,
};

static const struct route routes[] = {
	{ "GET", "/healthz", R_HEALTHZ },
	{ "GET", "/readyz", R_READYZ },
	{ "POST", "/v1/sandboxes", R_CREATE },
	{ "GET", "/v1/sandboxes", R_LIST },
	{ "GET", "/v1/sandboxes/{id}", R_GET },
	{ "DELETE", "/v1/sandboxes/{id}", R_DELETE },
	{ "POST", "/v1/sandboxes/{id}/timeout", R_TIMEOUT },
	{ "POST", "/v1/sandboxes/{id}/tokens", R_TOKENS },
	{ "GET", "/v1/templates", R_TEMPLATES },
	{ "POST", "/v1/sandboxes/{id}/exec", R_EXEC_RUN },
	{ "GET", "/v1/sandboxes/{id}/exec", R_EXEC_STREAM },
	{ "GET", "/v1/sandboxes/{id}/files", R_FILES_GET },
	{ "PUT", "/v1/sandboxes/{id}/files", R_FILES_PUT },
	{ "DELETE", "/v1/sandboxes/{id}/files", R_FILES_DELETE },
};

/* What each route needs, and how it is audited (NULL: only refusals are). */
static const struct {
	unsigned scope;
	const char *action;
	const char *read_action;
} route_rules[] = {
	[R_HEALTHZ] = { 0, NULL, NULL },
	[R_READYZ] = { 0, NULL, NULL },
	[R_CREATE] = { AUTH_SCOPE_SANDBOXES_WRITE, AUDIT_SANDBOX_CREATE, NULL },
	[R_LIST] = { AUTH_SCOPE_SANDBOXES_READ, NULL, "sandbox.list" },
	[R_GET] = { AUTH_SCOPE_SANDBOXES_READ, NULL, "sandbox.get" },
	[R_DELETE] = { AUTH_SCOPE_SANDBOXES_WRITE, AUDIT_SANDBOX_DELETE, NULL },
	[R_TIMEOUT] = { AUTH_SCOPE_SANDBOXES_WRITE, AUDIT_SANDBOX_TIMEOUT, NULL },
	[R_TOKENS] = { AUTH_SCOPE_SANDBOXES_WRITE, AUDIT_TOKEN_CREATE, NULL },
	[R_TEMPLATES] = { AUTH_SCOPE_SANDBOXES_READ, NULL, "templates.list" },
	[R_EXEC_RUN] = { AUTH_SCOPE_EXEC, AUDIT_EXEC, NULL },
	[R_EXEC_STREAM] = { AUTH_SCOPE_EXEC, AUDIT_EXEC, NULL },
	[R_FILES_GET] = { AUTH_SCOPE_FILES, AUDIT_FILES_READ, NULL },
	[R_FILES_PUT] = { AUTH_SCOPE_FILES, AUDIT_FILES_WRITE, NULL },
	[R_FILES_DELETE] = { AUTH_SCOPE_FILES, AUDIT_FILES_WRITE, NULL },
};

/* One authenticated call: attached to the request, read by the audit hook. */
struct call {
	struct auth_principal p;
	char addr[CLIENT_ADDR_LEN];
	const char *action;       /* audited whatever the outcome */
	const char *read_action;  /* audited only when refused */
	char sandbox[SANDBOX_ID_MAX];
	char tenant[64];          /* of the sandbox acted on, when known */
	const char *reason;       /* a refusal's category */
	char **argv;              /* exec: the client's command, for the audit record */
	size_t argc;
};

struct sandbox_api {
	const struct sbx_config *cfg;
	struct kube_client *kube;
	struct sandbox_store *store;
	struct workq *wq;
	struct kube_informer *informer;
	struct sandbox_api_security sec;
	pthread_mutex_t np_mu;
	bool *np_ready; /* per template: its NetworkPolicy is known to exist */
	atomic_bool stopping;
	atomic_bool draining;
	/* creates accepted but not yet in the cache, per tenant, for quotas */
	pthread_mutex_t pending_mu;
	struct pending { char tenant[64]; int64_t sandboxes, cpu_milli, memory_bytes; } *pending;
	size_t npending;
	atomic_int inflight; /* requests handed to workers or waiters, not yet answered */
	struct exec_mgr *exec; /* NULL: exec and files answer 503 */
};

void sandbox_api_set_exec(struct sandbox_api *api, struct exec_mgr *m)
{
	api->exec = m;
}

void sandbox_api_shutdown(struct sandbox_api *api)
{
	api->stopping = true;
}

void sandbox_api_drain(struct sandbox_api *api)
{
	api->draining = true;
}

int sandbox_api_inflight(struct sandbox_api *api)
{
	return api->inflight + (api->exec ? exec_mgr_active(api->exec) : 0);
}

struct sandbox_api *sandbox_api_new(const struct sbx_config *cfg, struct kube_client *kube,
				    struct sandbox_store *store, struct workq *wq,
				    struct kube_informer *informer,
				    const struct sandbox_api_security *sec)
{
	if (!sec || !sec->auth)
		return NULL;
	struct sandbox_api *api = calloc(1, sizeof(*api));
	if (!api)
		return NULL;
	api->np_ready = calloc(cfg->ntemplates ? cfg->ntemplates : 1, sizeof(bool));
	if (!api->np_ready) {
		free(api);
		return NULL;
	}
	api->cfg = cfg;
	api->kube = kube;
	api->store = store;
	api->wq = wq;
	api->informer = informer;
	api->sec = *sec;
	pthread_mutex_init(&api->np_mu, NULL);
	pthread_mutex_init(&api->pending_mu, NULL);
	return api;
}

void sandbox_api_free(struct sandbox_api *api)
{
	if (!api)
		return;
	pthread_mutex_destroy(&api->np_mu);
	pthread_mutex_destroy(&api->pending_mu);
	free(api->pending);
	free(api->np_ready);
	free(api);
}

/* ---- helpers ---- */

static void fmt_time(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static cJSON *sandbox_json(const struct sandbox *sb)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	char t[32];
	cJSON_AddStringToObject(o, "id", sb->id);
	cJSON_AddStringToObject(o, "template", sb->template_name);
	cJSON_AddStringToObject(o, "state", sandbox_state_name(sb->state));
	fmt_time(sb->created_at, t);
	cJSON_AddStringToObject(o, "created_at", t);
	fmt_time(sb->expires_at, t);
	cJSON_AddStringToObject(o, "expires_at", t);
	cJSON *labels = cJSON_AddObjectToObject(o, "labels");
	for (size_t i = 0; i < sb->nlabels; i++)
		cJSON_AddStringToObject(labels, sb->labels[i].key, sb->labels[i].value);
	if (sb->reason[0])
		cJSON_AddStringToObject(o, "reason", sb->reason);
	if (sb->message)
		cJSON_AddStringToObject(o, "message", sb->message);
	return o;
}

static void reply_sandbox(struct http_request *req, int status, const struct sandbox *sb)
{
	cJSON *o = sandbox_json(sb);
	if (!o) {
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	http_reply_json(req, status, o, NULL, 0);
}

/* Answer a failed Kubernetes call. */
static void reply_kube_error(struct http_request *req, const char *what, enum kube_err rc,
			     const struct kube_error *e)
{
	char ra[16];
	struct http_header retry = { "Retry-After", ra };
	switch (rc) {
	case KUBE_ERR_NOT_FOUND:
		http_reply_error(req, 404, "not_found", NULL, 0, "sandbox not found");
		return;
	case KUBE_ERR_FORBIDDEN:
		if (strstr(e->message, "PodSecurity") || strstr(e->message, "admission") ||
		    strstr(e->message, "quota")) {
			http_reply_error(req, 422, "rejected_by_admission", NULL, 0,
					 "%s: rejected by the cluster's admission control: %s", what,
					 e->message);
			return;
		}
		log_error("%s: the controller lacks a permission: %s", what, e->message);
		http_reply_error(req, 502, "kubernetes_forbidden", NULL, 0,
				 "%s: the controller is not allowed to do this in the cluster", what);
		return;
	case KUBE_ERR_INVALID:
		http_reply_error(req, 422, "rejected_by_kubernetes", NULL, 0, "%s: %s", what,
				 e->message);
		return;
	case KUBE_ERR_CONFLICT:
		http_reply_error(req, 409, "conflict", NULL, 0,
				 "%s: the sandbox changed meanwhile; try again", what);
		return;
	case KUBE_ERR_TOO_MANY_REQUESTS:
		snprintf(ra, sizeof(ra), "%d", e->retry_after_s > 0 ? e->retry_after_s : 1);
		http_reply_error(req, 503, "kubernetes_busy", &retry, 1,
				 "%s: the Kubernetes API server is busy", what);
		return;
	default:
		log_warn("%s failed: %s: %s", what, kube_strerror(rc), e->message);
		snprintf(ra, sizeof(ra), "2");
		http_reply_error(req, 503, "kubernetes_unavailable", &retry, 1,
				 "%s: the Kubernetes API server cannot be reached", what);
		return;
	}
}

static void free_kvs(struct sbx_kv *kv, size_t n, bool secret)
{
	for (size_t i = 0; kv && i < n; i++) {
		free(kv[i].key);
		if (secret)
			free_secret(kv[i].value);
		else
			free(kv[i].value);
	}
	free(kv);
}

/* ---- validation of the create request ---- */

struct create_input {
	const struct sbx_template *t;
	int64_t timeout_s;
	bool wait;
	struct sbx_kv *labels;
	size_t nlabels;
	struct sbx_kv *env;   /* values are secrets: never logged, wiped on free */
	size_t nenv;
};

static void create_input_release(struct create_input *in)
{
	free_kvs(in->labels, in->nlabels, false);
	free_kvs(in->env, in->nenv, true);
	in->labels = in->env = NULL;
	in->nlabels = in->nenv = 0;
}

/* Copy a JSON object of strings into kvs. Returns NULL on success or the
 * offending key (a type error) in *bad. */
static int object_to_kvs(const cJSON *obj, struct sbx_kv **out, size_t *n,
			 const char **bad)
{
	size_t count = (size_t)cJSON_GetArraySize(obj);
	*out = NULL;
	*n = 0;
	*bad = NULL;
	if (!count)
		return 0;
	struct sbx_kv *kv = calloc(count, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	const cJSON *it;
	cJSON_ArrayForEach(it, obj)
	{
		if (!cJSON_IsString(it)) {
			*bad = it->string;
			break;
		}
		/* JSON allows a key twice; we do not: which one would win? */
		for (size_t k = 0; k < *n; k++) {
			if (strcmp(kv[k].key, it->string) == 0) {
				*bad = it->string;
				*out = kv;
				return -EEXIST;
			}
		}
		kv[*n].key = strdup(it->string);
		kv[*n].value = strdup(it->valuestring);
		(*n)++;
		if (!kv[*n - 1].key || !kv[*n - 1].value) {
			*out = kv;
			return -ENOMEM;
		}
	}
	*out = kv;
	return *bad ? -EINVAL : 0;
}

/* Parse and validate; on failure replies and returns false. */
/* A JSON number without a fractional part, as an int64_t; integers beyond its
 * range saturate (so that 1e30 seconds is "too large", not "not an integer"),
 * and nothing out of range is ever converted (undefined behaviour in C). */
static bool json_integer(const cJSON *v, int64_t *out)
{
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != trunc(v->valuedouble))
		return false;
	if (!double_as_i64(v->valuedouble, INT64_MIN, INT64_MAX, out))
		*out = v->valuedouble > 0 ? INT64_MAX : INT64_MIN;
	return true;
}

static bool parse_create(struct sandbox_api *api, struct http_request *req,
			 struct create_input *in)
{
	size_t len;
	const char *body = http_request_body(req, &len);
	memset(in, 0, sizeof(*in));
	in->wait = true;
	const char *ctype = http_request_header(req, "content-type");
	if (ctype && strncmp(ctype, "application/json", 16) != 0) {
		http_reply_error(req, 415, "unsupported_media_type", NULL, 0,
				 "the body must be application/json");
		return false;
	}
	cJSON *j = cJSON_ParseWithLength(body, len);
	if (!j) {
		http_reply_error(req, 400, "invalid_json", NULL, 0, "the body is not valid JSON");
		return false;
	}
	bool ok = false;
	if (!cJSON_IsObject(j)) {
		http_reply_error(req, 400, "invalid_type", NULL, 0, "the body must be a JSON object");
		goto out;
	}
	static const char *const known[] = { "template", "timeout_seconds", "labels", "env",
					     "wait" };
	const cJSON *it;
	cJSON_ArrayForEach(it, j)
	{
		bool k = false;
		for (size_t i = 0; i < ARRAY_SIZE(known); i++)
			k = k || strcmp(it->string, known[i]) == 0;
		if (!k) {
			http_reply_error(req, 400, "unknown_field", NULL, 0, "unknown field \"%.64s\"",
					 it->string);
			goto out;
		}
	}
	const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(j, "template");
	const cJSON *timeout = cJSON_GetObjectItemCaseSensitive(j, "timeout_seconds");
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
	const cJSON *env = cJSON_GetObjectItemCaseSensitive(j, "env");
	const cJSON *wait = cJSON_GetObjectItemCaseSensitive(j, "wait");
	if (!cJSON_IsString(tmpl)) {
		http_reply_error(req, 400, tmpl ? "invalid_type" : "missing_field", NULL, 0,
				 "\"template\" must be a string naming a template");
		goto out;
	}
	int64_t timeout_s = 0;
	if (timeout && (!cJSON_IsNumber(timeout) ||
			!json_integer(timeout, &timeout_s))) {
		http_reply_error(req, 400, "invalid_type", NULL, 0,
				 "\"timeout_seconds\" must be an integer");
		goto out;
	}
	if ((labels && !cJSON_IsObject(labels)) || (env && !cJSON_IsObject(env))) {
		http_reply_error(req, 400, "invalid_type", NULL, 0,
				 "\"%s\" must be an object of strings",
				 labels && !cJSON_IsObject(labels) ? "labels" : "env");
		goto out;
	}
	if (wait && !cJSON_IsBool(wait)) {
		http_reply_error(req, 400, "invalid_type", NULL, 0, "\"wait\" must be a boolean");
		goto out;
	}
	const char *bad = NULL;
	int krc = labels ? object_to_kvs(labels, &in->labels, &in->nlabels, &bad) : 0;
	if (krc == 0 && env)
		krc = object_to_kvs(env, &in->env, &in->nenv, &bad);
	if (krc == -EEXIST) {
		http_reply_error(req, 400, "duplicate_key", NULL, 0, "\"%.64s\" appears twice",
				 bad);
		goto out;
	}
	if (krc) {
		http_reply_error(req, 400, "invalid_type", NULL, 0,
				 "labels and env values must be strings");
		goto out;
	}
	in->wait = wait ? cJSON_IsTrue(wait) : true;
	in->t = config_template(api->cfg, tmpl->valuestring);
	if (!in->t) {
		http_reply_error(req, 422, "unknown_template", NULL, 0, "no template named \"%.64s\"",
				 tmpl->valuestring);
		goto out;
	}
	in->timeout_s = timeout ? timeout_s : in->t->default_lifetime_s;
	if (in->timeout_s <= 0) {
		http_reply_error(req, 422, "invalid_timeout", NULL, 0,
				 "\"timeout_seconds\" must be positive");
		goto out;
	}
	if (in->timeout_s > in->t->max_lifetime_s) {
		http_reply_error(req, 422, "timeout_too_large", NULL, 0,
				 "\"timeout_seconds\" is above the template's maximum of %" PRId64,
				 in->t->max_lifetime_s);
		goto out;
	}
	if (in->nlabels > api->cfg->max_labels) {
		http_reply_error(req, 422, "too_many_labels", NULL, 0, "at most %zu labels",
				 api->cfg->max_labels);
		goto out;
	}
	for (size_t i = 0; i < in->nlabels; i++) {
		if (!sandbox_valid_label_key(in->labels[i].key) ||
		    !sandbox_valid_label_value(in->labels[i].value)) {
			http_reply_error(req, 422, "invalid_label", NULL, 0,
					 "label \"%.63s\": keys and values are at most 63 characters of "
					 "[A-Za-z0-9._-], starting and ending alphanumeric",
					 in->labels[i].key);
			goto out;
		}
	}
	if (in->nenv > api->cfg->max_env_vars) {
		http_reply_error(req, 422, "too_many_env", NULL, 0,
				 "at most %zu environment variables", api->cfg->max_env_vars);
		goto out;
	}
	size_t total = 0;
	for (size_t i = 0; i < in->nenv; i++) {
		/* names may be echoed back; values never are, nor logged */
		if (!sandbox_valid_env_name(in->env[i].key)) {
			http_reply_error(req, 422, "invalid_env", NULL, 0,
					 "\"%.64s\" is not a valid environment variable name",
					 in->env[i].key);
			goto out;
		}
		if (sandbox_env_conflict(in->t, in->env[i].key)) {
			http_reply_error(req, 422, "env_reserved", NULL, 0,
					 "environment variable \"%.64s\" is set by the template",
					 in->env[i].key);
			goto out;
		}
		total += strlen(in->env[i].key) + strlen(in->env[i].value);
	}
	if (total > api->cfg->max_env_bytes) {
		http_reply_error(req, 422, "env_too_large", NULL, 0,
				 "environment names and values total more than %zu bytes",
				 api->cfg->max_env_bytes);
		goto out;
	}
	ok = true;
out:
	cJSON_Delete(j);
	if (!ok)
		create_input_release(in);
	return ok;
}

/* ---- NetworkPolicies ---- */

static size_t template_index(const struct sandbox_api *api, const struct sbx_template *t)
{
	return (size_t)(t - api->cfg->templates);
}

/* Blocking: make sure t's NetworkPolicy exists. 0, or a kube_err. */
static enum kube_err ensure_policy(struct sandbox_api *api, const struct sbx_template *t,
				   bool force, struct kube_error *e)
{
	size_t i = template_index(api, t);
	pthread_mutex_lock(&api->np_mu);
	bool ready = api->np_ready[i];
	pthread_mutex_unlock(&api->np_mu);
	if (ready && !force)
		return KUBE_OK;
	char buf[64];
	const char *name = sandbox_network_policy_name(t, buf);
	cJSON *got = NULL;
	enum kube_err rc = kube_get(api->kube, &KUBE_RES_NETWORKPOLICIES, api->cfg->namespace,
				    name, &got, e);
	cJSON_Delete(got);
	if (rc == KUBE_ERR_NOT_FOUND) {
		cJSON *np = sandbox_build_network_policy(api->cfg, t);
		if (!np)
			return kube_error_set(e, KUBE_ERR_NOMEM, "out of memory");
		rc = kube_create(api->kube, &KUBE_RES_NETWORKPOLICIES, api->cfg->namespace, np,
				 NULL, e);
		cJSON_Delete(np);
		if (rc == KUBE_ERR_ALREADY_EXISTS)
			rc = KUBE_OK;
		if (rc == KUBE_OK)
			log_info("created NetworkPolicy \"%s\"", name);
	}
	pthread_mutex_lock(&api->np_mu);
	api->np_ready[i] = rc == KUBE_OK;
	pthread_mutex_unlock(&api->np_mu);
	return rc;
}

int sandbox_api_ensure_network_policies(struct sandbox_api *api)
{
	int failures = 0;
	for (size_t i = 0; i < api->cfg->ntemplates; i++) {
		struct kube_error e;
		enum kube_err rc = ensure_policy(api, &api->cfg->templates[i], true, &e);
		if (rc) {
			failures++;
			log_warn("cannot ensure the NetworkPolicy of template \"%s\": %s: %s",
				 api->cfg->templates[i].name, kube_strerror(rc), e.message);
		}
	}
	return failures ? -1 : 0;
}

/* ---- quotas ---- */

/* The in-flight record of a tenant (created on first use). pending_mu held. */
static struct pending *pending_slot(struct sandbox_api *api, const char *tenant)
{
	for (size_t i = 0; i < api->npending; i++)
		if (strcmp(api->pending[i].tenant, tenant) == 0)
			return &api->pending[i];
	struct pending *p = realloc(api->pending, (api->npending + 1) * sizeof(*p));
	if (!p)
		return NULL;
	api->pending = p;
	p = &api->pending[api->npending++];
	memset(p, 0, sizeof(*p));
	snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
	return p;
}

/* Add (sign 1) or remove (sign -1) a create in flight. */
static void pending_add(struct sandbox_api *api, const char *tenant,
			const struct sbx_template *t, int sign)
{
	pthread_mutex_lock(&api->pending_mu);
	struct pending *p = pending_slot(api, tenant);
	if (p) {
		p->sandboxes += sign;
		p->cpu_milli += sign * t->cpu_limit_milli;
		p->memory_bytes += sign * t->memory_limit_bytes;
	}
	pthread_mutex_unlock(&api->pending_mu);
}

/* Would one more sandbox of t exceed the tenant's quota? Counts live
 * sandboxes in the cache plus creates in flight. Returns the name of the
 * quota that would be exceeded, or NULL; on NULL the create is counted as
 * in flight (pending_add), atomically with the check. */
static const char *quota_take(struct sandbox_api *api, const char *tenant,
			      const struct sbx_template *t)
{
	const struct sbx_quota *q = config_quota(api->cfg, tenant);
	struct sandbox_usage u;
	sandbox_store_usage(api->store, api->cfg, tenant, &u);
	const char *over = NULL;
	pthread_mutex_lock(&api->pending_mu);
	struct pending *p = pending_slot(api, tenant);
	int64_t n = (int64_t)u.sandboxes + (p ? p->sandboxes : 0) + 1;
	int64_t cpu = u.cpu_milli + (p ? p->cpu_milli : 0) + t->cpu_limit_milli;
	int64_t mem = u.memory_bytes + (p ? p->memory_bytes : 0) + t->memory_limit_bytes;
	if (q->sandboxes && n > q->sandboxes)
		over = "sandboxes";
	else if (q->cpu_milli && cpu > q->cpu_milli)
		over = "cpu";
	else if (q->memory_bytes && mem > q->memory_bytes)
		over = "memory";
	if (!over && p) {
		p->sandboxes++;
		p->cpu_milli += t->cpu_limit_milli;
		p->memory_bytes += t->memory_limit_bytes;
	}
	pthread_mutex_unlock(&api->pending_mu);
	return over;
}

/* ---- create ---- */

/* The Pod's env values may be secrets: wipe them before the tree is freed
 * (kube_create already wiped the serialized body it sent). */
static void wipe_env_values(cJSON *pod)
{
	const cJSON *spec = cJSON_GetObjectItemCaseSensitive(pod, "spec");
	const cJSON *c;
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(spec, "containers"))
	{
		const cJSON *ev;
		cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(c, "env"))
		{
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, "value");
			if (cJSON_IsString(v))
				secure_zero(v->valuestring, strlen(v->valuestring));
		}
	}
}

struct create_job {
	struct sandbox_api *api;
	struct http_request *req;
	struct create_input in;
	char id[SANDBOX_ID_MAX];
	char tenant[64];
	int64_t created_at, expires_at;
	bool counted;    /* in api->inflight */
	bool quota_held; /* counted as pending for the tenant's quota */
};

static void create_job_free(struct create_job *j)
{
	/* by now the sandbox is in the cache (ready or failed) or was never made */
	if (j->quota_held)
		pending_add(j->api, j->tenant, j->in.t, -1);
	create_input_release(&j->in);
	if (j->counted)
		j->api->inflight--;
	free(j);
}

struct delete_job {
	struct sandbox_api *api;
	struct http_request *req; /* NULL: clean-up, nobody to answer */
	char id[SANDBOX_ID_MAX];
};

static void run_delete(void *arg);

/* Remove a sandbox we half-created; best effort (the reconciler deletes it at
 * expiry otherwise). */
static void cleanup_sandbox(struct sandbox_api *api, const char *id)
{
	if (api->stopping) {
		log_info("shutting down: sandbox \"%s\" is left to expire", id);
		return;
	}
	struct delete_job *d = calloc(1, sizeof(*d));
	if (d) {
		d->api = api;
		snprintf(d->id, sizeof(d->id), "%s", id);
		if (workq_submit(api->wq, run_delete, d) == 0)
			return;
		free(d);
	}
	log_warn("cannot queue the clean-up of sandbox \"%s\"; it will be deleted at expiry", id);
}

static void on_ready(void *ud, enum sandbox_wait_result r, const struct sandbox *sb)
{
	struct create_job *j = ud;
	struct http_request *req = j->req;
	switch (r) {
	case SANDBOX_WAIT_READY:
		log_info("sandbox \"%s\" ready", j->id);
		reply_sandbox(req, 201, sb);
		break;
	case SANDBOX_WAIT_FAILED: {
		const char *reason = sb && sb->reason[0] ? sb->reason : "sandbox_failed";
		int status = strcmp(reason, "unschedulable") == 0 ? 503 : 502;
		if (sb && sb->state == SANDBOX_TERMINATING) {
			reason = "sandbox_deleted";
			status = 409;
		}
		log_warn("sandbox \"%s\" failed to start (%s); removing it", j->id, reason);
		cleanup_sandbox(j->api, j->id);
		http_reply_error(req, status, reason, NULL, 0, "the sandbox did not start: %s",
				 sb && sb->message ? sb->message : reason);
		break;
	}
	case SANDBOX_WAIT_GONE:
		http_reply_error(req, 409, "sandbox_deleted", NULL, 0,
				 "the sandbox was deleted before it was ready");
		break;
	case SANDBOX_WAIT_TIMEOUT:
		log_warn("sandbox \"%s\" not ready after %d s; removing it", j->id,
			 j->api->cfg->create_timeout_s);
		cleanup_sandbox(j->api, j->id);
		http_reply_error(req, 504, "sandbox_timeout", NULL, 0,
				 "the sandbox was not ready within %d seconds",
				 j->api->cfg->create_timeout_s);
		break;
	}
	create_job_free(j);
}

static void run_create(void *arg)
{
	struct create_job *j = arg;
	struct sandbox_api *api = j->api;
	struct kube_error e;
	enum kube_err rc = ensure_policy(api, j->in.t, false, &e);
	if (rc) {
		/* never start a sandbox without its NetworkPolicy */
		reply_kube_error(j->req, "creating the sandbox's NetworkPolicy", rc, &e);
		create_job_free(j);
		return;
	}
	for (int attempt = 0;; attempt++) {
		struct sbx_pod_request pr = {
			.id = j->id,
			.tenant = j->tenant,
			.created_at = j->created_at,
			.expires_at = j->expires_at,
			.labels = j->in.labels,
			.nlabels = j->in.nlabels,
			.env = j->in.env,
			.nenv = j->in.nenv,
		};
		cJSON *pod = sandbox_build_pod(api->cfg, j->in.t, &pr);
		if (!pod) {
			http_reply_error(j->req, 500, "internal", NULL, 0, "out of memory");
			create_job_free(j);
			return;
		}
		cJSON *created = NULL;
		rc = kube_create(api->kube, &KUBE_RES_PODS, api->cfg->namespace, pod, &created, &e);
		wipe_env_values(pod);
		cJSON_Delete(pod);
		if (created) {
			/* read-your-writes: GET and DELETE find it at once */
			sandbox_store_prime(api->store, created);
			wipe_env_values(created);
			cJSON_Delete(created);
		}
		if (rc != KUBE_ERR_ALREADY_EXISTS || attempt > 0)
			break;
		/* 100 random bits collided: draw again, once */
		if (sandbox_new_id(j->id) != 0)
			break;
	}
	if (rc) {
		reply_kube_error(j->req, "creating the sandbox", rc, &e);
		create_job_free(j);
		return;
	}
	log_info("sandbox \"%s\" created (template \"%s\", expires in %" PRId64 " s)", j->id,
		 j->in.t->name, j->expires_at - j->created_at);
	if (!j->in.wait) {
		struct sandbox sb = { .state = SANDBOX_PENDING,
				      .created_at = j->created_at,
				      .expires_at = j->expires_at,
				      .labels = j->in.labels,
				      .nlabels = j->in.nlabels };
		snprintf(sb.id, sizeof(sb.id), "%s", j->id);
		snprintf(sb.template_name, sizeof(sb.template_name), "%s", j->in.t->name);
		reply_sandbox(j->req, 201, &sb);
		create_job_free(j);
		return;
	}
	int64_t deadline = now_ms() + (int64_t)api->cfg->create_timeout_s * 1000;
	if (sandbox_store_wait(api->store, j->id, deadline, on_ready, j) != 0) {
		cleanup_sandbox(api, j->id);
		http_reply_error(j->req, 500, "internal", NULL, 0, "out of memory");
		create_job_free(j);
	}
	/* from here on_ready owns j */
}

static void handle_create(struct sandbox_api *api, struct http_request *req)
{
	struct create_job *j = calloc(1, sizeof(*j));
	if (!j) {
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	if (!parse_create(api, req, &j->in)) {
		free(j);
		return;
	}
	struct call *c = http_request_context(req);
	j->api = api;
	j->req = req;
	snprintf(j->tenant, sizeof(j->tenant), "%s", c ? c->p.tenant : AUTH_ANONYMOUS_TENANT);
	j->created_at = wall_time_s();
	j->expires_at = j->created_at + j->in.timeout_s;
	if (sandbox_new_id(j->id) != 0) {
		create_job_free(j);
		http_reply_error(req, 500, "internal", NULL, 0, "no randomness available");
		return;
	}
	if (c) {
		snprintf(c->sandbox, sizeof(c->sandbox), "%s", j->id);
		snprintf(c->tenant, sizeof(c->tenant), "%s", j->tenant);
	}
	const char *over = quota_take(api, j->tenant, j->in.t);
	if (over) {
		const struct sbx_quota *q = config_quota(api->cfg, j->tenant);
		if (c)
			c->reason = "quota";
		http_reply_error(req, 429, "quota_exceeded", NULL, 0,
				 "tenant \"%s\" would exceed its %s quota (%lld sandboxes, %lld millicores, %lld bytes of memory)",
				 j->tenant, over, (long long)q->sandboxes, (long long)q->cpu_milli,
				 (long long)q->memory_bytes);
		create_job_free(j);
		return;
	}
	j->quota_held = true;
	j->counted = true;
	api->inflight++;
	if (workq_submit(api->wq, run_create, j) != 0) {
		create_job_free(j);
		struct http_header h = { "Retry-After", "1" };
		http_reply_error(req, 503, "overloaded", &h, 1, "too many requests in flight");
	}
}

/* ---- delete ---- */

static void run_delete(void *arg)
{
	struct delete_job *d = arg;
	struct kube_error e;
	struct kube_delete_opts o = { .grace_period_s = -1, .propagation = "Background" };
	enum kube_err rc = kube_delete(d->api->kube, &KUBE_RES_PODS, d->api->cfg->namespace,
				       d->id, &o, NULL, &e);
	if (rc == KUBE_OK || rc == KUBE_ERR_NOT_FOUND) {
		log_info("sandbox \"%s\" deleted%s", d->id, d->req ? "" : " (clean-up)");
		if (d->req)
			http_reply_empty(d->req, 204, NULL, 0);
	} else if (d->req) {
		reply_kube_error(d->req, "deleting the sandbox", rc, &e);
	} else {
		log_warn("clean-up of sandbox \"%s\" failed: %s: %s", d->id, kube_strerror(rc),
			 e.message);
	}
	if (d->req)
		d->api->inflight--;
	free(d);
}

/* The sandbox id names, if the caller may see it: another tenant's sandbox
 * (or, for a sandbox-scoped token, any other sandbox) is "not found" too, so
 * that ids of others cannot even be confirmed. */
static bool lookup(struct sandbox_api *api, struct http_request *req, const char *id,
		   struct sandbox *sb)
{
	struct call *c = http_request_context(req);
	if (!sandbox_valid_id(id) || sandbox_store_get(api->store, id, sb) != 0) {
		http_reply_error(req, 404, "not_found", NULL, 0, "no sandbox \"%.40s\"", id);
		return false;
	}
	bool admin = c && (c->p.scopes & AUTH_SCOPE_ADMIN) && !c->p.sandbox[0];
	if (c && !admin &&
	    (strcmp(sb->tenant, c->p.tenant) != 0 || (c->p.sandbox[0] && strcmp(c->p.sandbox, id) != 0))) {
		sandbox_release(sb);
		http_reply_error(req, 404, "not_found", NULL, 0, "no sandbox \"%.40s\"", id);
		return false;
	}
	if (c)
		snprintf(c->tenant, sizeof(c->tenant), "%s", sb->tenant);
	return true;
}

static void handle_delete(struct sandbox_api *api, struct http_request *req, const char *id)
{
	struct sandbox sb;
	if (!lookup(api, req, id, &sb))
		return;
	sandbox_release(&sb);
	struct delete_job *d = calloc(1, sizeof(*d));
	if (!d) {
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	d->api = api;
	d->req = req;
	snprintf(d->id, sizeof(d->id), "%s", id);
	api->inflight++;
	if (workq_submit(api->wq, run_delete, d) != 0) {
		api->inflight--;
		free(d);
		struct http_header h = { "Retry-After", "1" };
		http_reply_error(req, 503, "overloaded", &h, 1, "too many requests in flight");
	}
}

/* ---- timeout ---- */

struct timeout_job {
	struct sandbox_api *api;
	struct http_request *req;
	char id[SANDBOX_ID_MAX];
	int64_t expires_at;
};

static void run_timeout(void *arg)
{
	struct timeout_job *t = arg;
	char patch[160];
	snprintf(patch, sizeof(patch), "{\"metadata\":{\"annotations\":{\"%s\":\"%" PRId64 "\"}}}",
		 SBX_ANN_EXPIRES, t->expires_at);
	cJSON *pod = NULL;
	struct kube_error e;
	enum kube_err rc = kube_patch(t->api->kube, &KUBE_RES_PODS, t->api->cfg->namespace,
				      t->id, KUBE_PATCH_MERGE, patch, &pod, &e);
	struct sandbox sb;
	if (rc == KUBE_OK && sandbox_from_pod(pod, &sb) == 0) {
		log_info("sandbox \"%s\" now expires at %" PRId64, t->id, t->expires_at);
		reply_sandbox(t->req, 200, &sb);
		sandbox_release(&sb);
	} else if (rc == KUBE_OK) {
		http_reply_error(t->req, 500, "internal", NULL, 0, "unexpected answer from Kubernetes");
	} else {
		reply_kube_error(t->req, "changing the timeout", rc, &e);
	}
	cJSON_Delete(pod);
	t->api->inflight--;
	free(t);
}

static void handle_timeout(struct sandbox_api *api, struct http_request *req, const char *id)
{
	size_t len;
	const char *body = http_request_body(req, &len);
	cJSON *j = cJSON_ParseWithLength(body, len);
	if (!j) {
		http_reply_error(req, 400, "invalid_json", NULL, 0, "the body is not valid JSON");
		return;
	}
	const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "timeout_seconds");
	const cJSON *it;
	bool unknown = false;
	cJSON_ArrayForEach(it, j) unknown = unknown || strcmp(it->string, "timeout_seconds") != 0;
	if (!cJSON_IsObject(j) || unknown) {
		http_reply_error(req, 400, unknown ? "unknown_field" : "invalid_type", NULL, 0,
				 "the body must be {\"timeout_seconds\": N}");
		cJSON_Delete(j);
		return;
	}
	int64_t secs = 0;
	if (!cJSON_IsNumber(ts) || !json_integer(ts, &secs)) {
		http_reply_error(req, ts ? 400 : 400, ts ? "invalid_type" : "missing_field", NULL, 0,
				 "\"timeout_seconds\" must be an integer");
		cJSON_Delete(j);
		return;
	}
	cJSON_Delete(j);
	struct sandbox sb;
	if (!lookup(api, req, id, &sb))
		return;
	const struct sbx_template *t = config_template(api->cfg, sb.template_name);
	int64_t max = t ? t->max_lifetime_s : 0;
	int64_t created = sb.created_at;
	enum sandbox_state state = sb.state;
	sandbox_release(&sb);
	if (state == SANDBOX_TERMINATING) {
		http_reply_error(req, 409, "sandbox_terminating", NULL, 0, "the sandbox is being deleted");
		return;
	}
	if (secs <= 0) {
		http_reply_error(req, 422, "invalid_timeout", NULL, 0, "\"timeout_seconds\" must be positive");
		return;
	}
	if (secs > max) {
		http_reply_error(req, 422, "timeout_too_large", NULL, 0,
				 "\"timeout_seconds\" is above the template's maximum of %" PRId64, max);
		return;
	}
	struct timeout_job *tj = calloc(1, sizeof(*tj));
	if (!tj) {
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	tj->api = api;
	tj->req = req;
	snprintf(tj->id, sizeof(tj->id), "%s", id);
	/* now + timeout, but the whole life never beyond the template's maximum */
	tj->expires_at = wall_time_s() + secs;
	if (created > 0 && tj->expires_at > created + max)
		tj->expires_at = created + max;
	api->inflight++;
	if (workq_submit(api->wq, run_timeout, tj) != 0) {
		api->inflight--;
		free(tj);
		struct http_header h = { "Retry-After", "1" };
		http_reply_error(req, 503, "overloaded", &h, 1, "too many requests in flight");
	}
}

/* ---- sandbox-scoped tokens ---- */

static void handle_tokens(struct sandbox_api *api, struct http_request *req, const char *id)
{
	struct call *c = http_request_context(req);
	size_t len;
	const char *body = http_request_body(req, &len);
	cJSON *j = cJSON_ParseWithLength(body, len);
	if (!j) {
		http_reply_error(req, 400, "invalid_json", NULL, 0, "the body is not valid JSON");
		return;
	}
	const cJSON *it;
	const char *unknown = NULL;
	cJSON_ArrayForEach(it, j)
	{
		if (strcmp(it->string, "ttl_seconds") != 0 && strcmp(it->string, "scopes") != 0 &&
		    !unknown)
			unknown = it->string;
	}
	const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(j, "ttl_seconds");
	const cJSON *scopes = cJSON_GetObjectItemCaseSensitive(j, "scopes");
	if (!cJSON_IsObject(j) || unknown) {
		http_reply_error(req, 400, unknown ? "unknown_field" : "invalid_type", NULL, 0,
				 "the body must be {\"ttl_seconds\": N, \"scopes\": [...]}");
		cJSON_Delete(j);
		return;
	}
	int64_t ttl_s = 0;
	if (!cJSON_IsNumber(ttl) || !json_integer(ttl, &ttl_s) ||
	    !cJSON_IsArray(scopes)) {
		http_reply_error(req, 400, ttl && scopes ? "invalid_type" : "missing_field", NULL, 0,
				 "\"ttl_seconds\" (integer) and \"scopes\" (array) are required");
		cJSON_Delete(j);
		return;
	}
	unsigned want = 0;
	cJSON_ArrayForEach(it, scopes)
	{
		unsigned bit = 0;
		if (!cJSON_IsString(it) || auth_scope_parse(it->valuestring, &bit) != 0 ||
		    bit == AUTH_SCOPE_ADMIN) {
			http_reply_error(req, 422, "invalid_scope", NULL, 0,
					 "scopes are \"sandboxes:read\", \"sandboxes:write\", \"exec\" or \"files\"");
			cJSON_Delete(j);
			return;
		}
		want |= bit;
	}
	cJSON_Delete(j);
	if (!want || ttl_s < 1 || ttl_s > AUTH_SCOPED_MAX_TTL_S) {
		http_reply_error(req, 422, "invalid_token_request", NULL, 0,
				 "at least one scope, and ttl_seconds from 1 to %d", AUTH_SCOPED_MAX_TTL_S);
		return;
	}
	struct sandbox sb;
	if (!lookup(api, req, id, &sb))
		return;
	char *token = NULL;
	int64_t expires = 0;
	int rc = auth_issue_sandbox_token(api->sec.auth, &c->p, id, sb.tenant, want, ttl_s,
					  wall_time_s(), &token, &expires);
	sandbox_release(&sb);
	if (rc == -EPERM) {
		c->reason = "scope";
		http_reply_error(req, 403, "forbidden", NULL, 0,
				 "a token may carry only scopes its issuer holds, for a sandbox it may see");
		return;
	}
	if (rc) {
		http_reply_error(req, rc == -EINVAL ? 422 : 500,
				 rc == -EINVAL ? "invalid_token_request" : "internal", NULL, 0,
				 "cannot issue the token");
		return;
	}
	char t[32], sc[128];
	fmt_time(expires, t);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "token", token);
	cJSON_AddStringToObject(o, "sandbox", id);
	cJSON_AddStringToObject(o, "expires_at", t);
	cJSON *arr = cJSON_AddArrayToObject(o, "scopes");
	if (auth_scopes_format(want, " ", sc, sizeof(sc)) >= 0) {
		char *save = NULL;
		for (char *w = strtok_r(sc, " ", &save); w; w = strtok_r(NULL, " ", &save))
			cJSON_AddItemToArray(arr, cJSON_CreateString(w));
	}
	free_secret(token);
	/* the reply holds the token once; the server frees (not wipes) it */
	http_reply_json(req, 201, o, NULL, 0);
}

/* ---- exec ---- */

/* Exec and files need a running sandbox: 409 with the reason otherwise. */
static bool require_ready(struct http_request *req, const struct sandbox *sb)
{
	switch (sb->state) {
	case SANDBOX_READY:
		return true;
	case SANDBOX_PENDING:
		http_reply_error(req, 409, "sandbox_pending", NULL, 0,
				 "sandbox \"%s\" is not ready yet; retry once it is", sb->id);
		return false;
	case SANDBOX_TERMINATING:
		http_reply_error(req, 409, "sandbox_terminating", NULL, 0,
				 "sandbox \"%s\" is being deleted", sb->id);
		return false;
	case SANDBOX_FAILED:
		http_reply_error(req, 409, "sandbox_failed", NULL, 0,
				 "sandbox \"%s\" has failed (%s)", sb->id,
				 sb->reason[0] ? sb->reason : "unknown");
		return false;
	}
	return false;
}

/* Look up a sandbox for exec or files: tenant, readiness, template. */
static const struct sbx_template *exec_target(struct sandbox_api *api, struct http_request *req,
					      const char *id, struct sandbox *sb)
{
	if (!api->exec) {
		http_reply_error(req, 503, "exec_unavailable", NULL, 0,
				 "exec is not available on this replica");
		return NULL;
	}
	if (!lookup(api, req, id, sb))
		return NULL;
	const struct sbx_template *t = NULL;
	if (require_ready(req, sb)) {
		t = config_template(api->cfg, sb->template_name);
		if (!t)
			http_reply_error(req, 409, "template_gone", NULL, 0,
					 "the template \"%s\" of this sandbox is no longer configured",
					 sb->template_name);
	}
	if (!t)
		sandbox_release(sb);
	return t;
}

static void handle_exec_run(struct sandbox_api *api, struct http_request *req, const char *id)
{
	struct sandbox sb;
	const struct sbx_template *t = exec_target(api, req, id, &sb);
	if (!t)
		return;
	const char *ctype = http_request_header(req, "content-type");
	if (ctype && strncmp(ctype, "application/json", 16) != 0) {
		sandbox_release(&sb);
		http_reply_error(req, 415, "unsupported_media_type", NULL, 0,
				 "the body must be application/json");
		return;
	}
	struct exec_request er;
	const char *code = "invalid_request";
	char why[256];
	size_t blen;
	const char *body = http_request_body(req, &blen);
	int st = exec_request_parse(body, blen, t, api->cfg->max_env_vars, api->cfg->max_env_bytes,
				    &er, &code, why, sizeof(why));
	if (st) {
		sandbox_release(&sb);
		http_reply_error(req, st, code, NULL, 0, "%s", why);
		return;
	}
	struct call *c = http_request_context(req);
	if (c && (c->argv = exec_argv_build((const char *const *)er.argv, er.argc)) != NULL)
		c->argc = er.argc;
	/* the refusal's reply runs the audit hook, which frees c: set the
	 * reason first */
	if (c)
		c->reason = "exec_limit";
	if (!exec_mgr_admit(api->exec, req, sb.id, sb.tenant, t)) {
		exec_request_release(&er);
		sandbox_release(&sb);
		return;
	}
	if (c)
		c->reason = NULL;
	exec_mgr_run(api->exec, req, api->cfg->namespace, sb.id, sb.tenant, t, &er);
	sandbox_release(&sb);
}

static void handle_exec_stream(struct sandbox_api *api, struct http_request *req,
			       const char *id)
{
	if (!http_request_is_websocket(req)) {
		http_reply_error(req, 400, "websocket_required", NULL, 0,
				 "this endpoint is a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io); use POST for a one-shot command");
		return;
	}
	struct sandbox sb;
	const struct sbx_template *t = exec_target(api, req, id, &sb);
	if (!t)
		return;
	struct exec_stream_params p;
	const char *code = "invalid_request";
	char why[256];
	int st = exec_stream_parse(req, t, &p, &code, why, sizeof(why));
	if (st) {
		sandbox_release(&sb);
		http_reply_error(req, st, code, NULL, 0, "%s", why);
		return;
	}
	struct call *c = http_request_context(req);
	if (c && (c->argv = exec_argv_build((const char *const *)p.argv, p.argc)) != NULL)
		c->argc = p.argc;
	/* the refusal's reply runs the audit hook, which frees c: set the
	 * reason first */
	if (c)
		c->reason = "exec_limit";
	if (!exec_mgr_admit(api->exec, req, sb.id, sb.tenant, t)) {
		exec_stream_params_release(&p);
		sandbox_release(&sb);
		return;
	}
	if (c)
		c->reason = NULL;
	exec_stream_start(api->exec, req, api->cfg->namespace, sb.id, sb.tenant, t, &p);
	sandbox_release(&sb);
}

static void handle_files(struct sandbox_api *api, struct http_request *req, const char *id)
{
	struct sandbox sb;
	const struct sbx_template *t = exec_target(api, req, id, &sb);
	if (!t)
		return;
	char path[SBX_FILES_PATH_MAX];
	if (!files_api_path(req, t, path, sizeof(path))) {
		sandbox_release(&sb);
		return;
	}
	/* the audit record names the file as argv: [method, path] */
	struct call *c = http_request_context(req);
	const char *const fa[] = { http_request_method(req), path };
	if (c && (c->argv = exec_argv_build(fa, 2)) != NULL)
		c->argc = 2;
	/* the refusal's reply runs the audit hook, which frees c: set the
	 * reason first */
	if (c)
		c->reason = "exec_limit";
	if (!exec_mgr_admit(api->exec, req, sb.id, sb.tenant, t)) {
		sandbox_release(&sb);
		return;
	}
	if (c)
		c->reason = NULL;
	files_api_start(api->exec, req, http_request_method(req), api->cfg->namespace, sb.id,
			sb.tenant, t, path);
	sandbox_release(&sb);
}

/* ---- reads ---- */

static void handle_get(struct sandbox_api *api, struct http_request *req, const char *id)
{
	struct sandbox sb;
	if (!lookup(api, req, id, &sb))
		return;
	reply_sandbox(req, 200, &sb);
	sandbox_release(&sb);
}

struct label_filter {
	const char *keys[LIST_MAX_LABEL_FILTERS];
	const char *values[LIST_MAX_LABEL_FILTERS];
	size_t n;
	const char *tenant; /* NULL: every tenant (admin) */
};

static bool match_labels(const struct sandbox *sb, void *ud)
{
	const struct label_filter *f = ud;
	if (f->tenant && strcmp(sb->tenant, f->tenant) != 0)
		return false;
	for (size_t i = 0; i < f->n; i++) {
		bool ok = false;
		for (size_t k = 0; k < sb->nlabels && !ok; k++)
			ok = strcmp(sb->labels[k].key, f->keys[i]) == 0 &&
			     strcmp(sb->labels[k].value, f->values[i]) == 0;
		if (!ok)
			return false;
	}
	return true;
}

static void handle_list(struct sandbox_api *api, struct http_request *req)
{
	static const char *const allowed[] = { "label", "limit", "continue", NULL };
	const char *unknown = NULL;
	if (http_request_query_unknown(req, allowed, &unknown)) {
		http_reply_error(req, 400, "unknown_parameter", NULL, 0,
				 "unknown query parameter \"%.64s\"", unknown);
		return;
	}
	size_t limit = LIST_DEFAULT_LIMIT;
	const char *ls = http_request_query(req, "limit");
	if (ls) {
		char *end;
		long v = strtol(ls, &end, 10);
		if (!*ls || *end || v < 1 || v > LIST_MAX_LIMIT) {
			http_reply_error(req, 400, "invalid_limit", NULL, 0,
					 "limit must be an integer from 1 to %d", LIST_MAX_LIMIT);
			return;
		}
		limit = (size_t)v;
	}
	const char *cont = http_request_query(req, "continue");
	if (cont && (strlen(cont) >= SANDBOX_ID_MAX || strncmp(cont, "sb-", 3) != 0)) {
		http_reply_error(req, 400, "invalid_continue", NULL, 0, "invalid continue token");
		return;
	}
	struct label_filter f = { 0 };
	const char *raw[LIST_MAX_LABEL_FILTERS + 1];
	size_t nraw = http_request_query_all(req, "label", raw, ARRAY_SIZE(raw));
	if (nraw > LIST_MAX_LABEL_FILTERS) {
		http_reply_error(req, 400, "too_many_filters", NULL, 0, "at most %d label filters",
				 LIST_MAX_LABEL_FILTERS);
		return;
	}
	char split[LIST_MAX_LABEL_FILTERS][192];
	for (size_t i = 0; i < nraw; i++) {
		const char *eq = strchr(raw[i], '=');
		if (!eq || strlen(raw[i]) >= sizeof(split[0])) {
			http_reply_error(req, 400, "invalid_label_filter", NULL, 0,
					 "label filters are key=value");
			return;
		}
		snprintf(split[i], sizeof(split[i]), "%s", raw[i]);
		split[i][eq - raw[i]] = '\0';
		f.keys[i] = split[i];
		f.values[i] = split[i] + (eq - raw[i]) + 1;
		if (!sandbox_valid_label_key(f.keys[i]) || !sandbox_valid_label_value(f.values[i])) {
			http_reply_error(req, 400, "invalid_label_filter", NULL, 0,
					 "invalid label key or value in filter");
			return;
		}
	}
	f.n = nraw;
	struct call *c = http_request_context(req);
	f.tenant = c && !(c->p.scopes & AUTH_SCOPE_ADMIN) ? c->p.tenant : NULL;
	struct sandbox *items = calloc(limit, sizeof(*items));
	cJSON *o = cJSON_CreateObject();
	cJSON *arr = o ? cJSON_AddArrayToObject(o, "items") : NULL;
	if (!items || !arr) {
		free(items);
		cJSON_Delete(o);
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	bool more = false;
	size_t n = sandbox_store_list(api->store, cont, limit, f.n || f.tenant ? match_labels : NULL,
				      &f, items, &more);
	for (size_t i = 0; i < n; i++) {
		cJSON_AddItemToArray(arr, sandbox_json(&items[i]));
		if (more && i == n - 1)
			cJSON_AddStringToObject(o, "continue", items[i].id);
	}
	for (size_t i = 0; i < n; i++)
		sandbox_release(&items[i]);
	free(items);
	http_reply_json(req, 200, o, NULL, 0);
}

static void handle_templates(struct sandbox_api *api, struct http_request *req)
{
	static const char *const nets[] = { "none", "internet", "allowlist" };
	cJSON *o = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(o, "items");
	for (size_t i = 0; i < api->cfg->ntemplates; i++) {
		const struct sbx_template *t = &api->cfg->templates[i];
		cJSON *x = cJSON_CreateObject();
		cJSON_AddStringToObject(x, "name", t->name);
		cJSON_AddStringToObject(x, "image", t->image);
		cJSON_AddStringToObject(x, "network", nets[t->network]);
		cJSON_AddNumberToObject(x, "default_timeout_seconds", (double)t->default_lifetime_s);
		cJSON_AddNumberToObject(x, "max_timeout_seconds", (double)t->max_lifetime_s);
		cJSON *r = cJSON_AddObjectToObject(x, "resources");
		cJSON_AddStringToObject(r, "cpu", t->cpu_limit);
		cJSON_AddStringToObject(r, "memory", t->memory_limit);
		cJSON_AddStringToObject(r, "ephemeral_storage", t->ephemeral_limit);
		cJSON_AddStringToObject(x, "workspace", t->workspace_path);
		if (t->runtime_class)
			cJSON_AddStringToObject(x, "runtime_class", t->runtime_class);
		cJSON_AddItemToArray(arr, x);
	}
	http_reply_json(req, 200, o, NULL, 0);
}

static void handle_readyz(struct sandbox_api *api, struct http_request *req)
{
	bool synced = sandbox_store_synced(api->store);
	bool watching = true;
	if (api->informer) {
		struct kube_informer_stats st;
		kube_informer_get_stats(api->informer, &st);
		watching = st.watching;
	}
	bool ready = synced && watching && !api->draining;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", ready ? "ready" : "not_ready");
	cJSON_AddBoolToObject(o, "cache_synced", synced);
	cJSON_AddBoolToObject(o, "api_server_reachable", watching);
	cJSON_AddBoolToObject(o, "draining", api->draining);
	http_reply_json(req, ready ? 200 : 503, o, NULL, 0);
}

/* ---- authentication, limits, audit ---- */

static enum audit_outcome outcome_of(int status)
{
	if (status < 400)
		return AUDIT_SUCCESS;
	if (status == 401 || status == 403 || status == 429)
		return AUDIT_DENIED;
	return AUDIT_FAILURE;
}

void sandbox_api_on_reply(void *ud, struct http_request *req, int status)
{
	struct sandbox_api *api = ud;
	struct call *c = http_request_context(req);
	if (!c)
		return;
	enum audit_outcome out = outcome_of(status);
	const char *action = c->action ? c->action : (out == AUDIT_DENIED ? c->read_action : NULL);
	if (action && api->sec.audit) {
		struct audit_event e = {
			.request_id = http_request_id(req),
			.principal_id = c->p.id[0] ? c->p.id : NULL,
			.principal_kind = c->p.kind != AUTH_KIND_NONE ? auth_kind_name(c->p.kind) : NULL,
			.tenant = c->tenant[0] ? c->tenant : (c->p.tenant[0] ? c->p.tenant : NULL),
			.client_addr = c->addr,
			.action = action,
			.sandbox_id = c->sandbox[0] ? c->sandbox : NULL,
			.argv = c->argv,
			.argc = c->argc,
			.outcome = out,
			.status = status,
			.reason = c->reason,
			.duration_ms = now_ms() - http_request_start_ms(req),
		};
		audit_record(api->sec.audit, &e);
	}
	http_request_set_context(req, NULL);
	exec_argv_free(c->argv);
	free(c);
}

/* Refusals are audited at most once a second per key (address or
 * principal): a flood must not become a flood of audit records. */
static void sample_audit(struct sandbox_api *api, struct call *c, const char *key)
{
	if (!ratelimit_allow(api->sec.audit_sampler, key, now_ms(), NULL)) {
		c->action = NULL;
		c->read_action = NULL;
	}
}

static void reply_rate_limited(struct sandbox_api *api, struct http_request *req,
			       struct call *c, const char *key, int retry_after)
{
	char ra[16];
	snprintf(ra, sizeof(ra), "%d", retry_after > 0 ? retry_after : 1);
	struct http_header h = { "Retry-After", ra };
	c->reason = "rate_limited";
	sample_audit(api, c, key);
	http_reply_error(req, 429, "rate_limited", &h, 1, "too many requests; retry in %s s", ra);
}

/* Authenticate and rate-limit; false when the request has been answered. */
static bool admit(struct sandbox_api *api, struct http_request *req, struct call *c)
{
	char akey[CLIENT_ADDR_KEY_LEN];
	client_addr_resolve(api->sec.client_addr, http_request_peer(req),
			    http_request_header(req, "x-forwarded-for"), c->addr, sizeof(c->addr));
	client_addr_limit_key(c->addr, akey, sizeof(akey));
	int ra = 0;
	/* an address that keeps failing is refused before its credential is even
	 * looked at; only failures spend its tokens */
	if (!ratelimit_peek(api->sec.per_address, akey, now_ms(), &ra)) {
		reply_rate_limited(api, req, c, akey, ra);
		return false;
	}
	/* a bearer token, when one is sent, decides; otherwise a verified TLS
	 * client certificate (tls.client_ca_file) that auth.client_certs lists */
	const char *authz = http_request_header(req, "authorization");
	const char *cn = http_request_client_cert(req);
	enum auth_result r = !authz && cn ? auth_check_client_cert(api->sec.auth, cn, &c->p)
					  : auth_check(api->sec.auth, authz, wall_time_s(), &c->p);
	if (r != AUTH_OK) {
		(void)ratelimit_allow(api->sec.per_address, akey, now_ms(), &ra);
		c->reason = auth_result_name(r);
		c->action = AUDIT_AUTH_FAILURE;
		sample_audit(api, c, akey);
		struct http_header h = { "WWW-Authenticate", "Bearer realm=\"sandbox-controller\"" };
		http_reply_error(req, 401, "unauthorized", &h, 1,
				 "missing, invalid or expired credentials");
		return false;
	}
	char pkey[256];
	if (c->p.kind == AUTH_KIND_KEY)
		snprintf(pkey, sizeof(pkey), "key:%s", c->p.id);
	else if (c->p.kind == AUTH_KIND_CERT)
		snprintf(pkey, sizeof(pkey), "cert:%s", c->p.id);
	else if (c->p.kind == AUTH_KIND_ANONYMOUS)
		snprintf(pkey, sizeof(pkey), "%s", akey);
	else
		snprintf(pkey, sizeof(pkey), "sub:%s/%s", c->p.tenant, c->p.id);
	if (!ratelimit_allow(api->sec.per_principal, pkey, now_ms(), &ra)) {
		reply_rate_limited(api, req, c, pkey, ra);
		return false;
	}
	return true;
}

void sandbox_api_handle(void *ud, struct http_request *req)
{
	struct sandbox_api *api = ud;
	struct route_match m;
	enum router_result r = router_match(routes, ARRAY_SIZE(routes), http_request_method(req),
					    http_request_path(req), &m);
	if (r == ROUTER_MATCH && m.id == R_HEALTHZ) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "status", "ok");
		http_reply_json(req, 200, o, NULL, 0);
		return;
	}
	if (r == ROUTER_MATCH && m.id == R_READYZ) {
		handle_readyz(api, req);
		return;
	}
	/* everything else: who is calling, before anything about the path is
	 * revealed */
	struct call *c = calloc(1, sizeof(*c));
	if (!c) {
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	if (r == ROUTER_MATCH) {
		c->action = route_rules[m.id].action;
		c->read_action = route_rules[m.id].read_action;
	}
	http_request_set_context(req, c); /* freed by sandbox_api_on_reply */
	if (!admit(api, req, c))
		return;
	if (r == ROUTER_BAD_PATH) {
		http_reply_error(req, 400, "bad_path", NULL, 0, "malformed path");
		return;
	}
	if (r == ROUTER_NOT_FOUND) {
		http_reply_error(req, 404, "not_found", NULL, 0, "no such endpoint");
		return;
	}
	if (r == ROUTER_METHOD_NOT_ALLOWED) {
		struct http_header h = { "Allow", m.allow };
		http_reply_error(req, 405, "method_not_allowed", &h, 1, "allowed: %s", m.allow);
		return;
	}
	const char *id = route_param(&m, "id");
	if (id)
		snprintf(c->sandbox, sizeof(c->sandbox), "%.31s", id);
	if (c->p.sandbox[0] && !id) {
		c->reason = "scope";
		http_reply_error(req, 403, "forbidden", NULL, 0,
				 "a sandbox-scoped token is valid for its own sandbox only");
		return;
	}
	if (!auth_allows(&c->p, route_rules[m.id].scope)) {
		char name[64] = "";
		auth_scopes_format(route_rules[m.id].scope, " ", name, sizeof(name));
		c->reason = "scope";
		http_reply_error(req, 403, "forbidden", NULL, 0,
				 "this credential lacks the scope \"%s\"", name);
		return;
	}
	if (api->draining) {
		struct http_header h = { "Retry-After", "1" };
		http_reply_error(req, 503, "shutting_down", &h, 1,
				 "this replica is shutting down; retry on another");
		return;
	}
	/* until the first list, the cache would answer "nothing there" and
	 * quotas would count nothing: say "not yet" instead */
	if (!sandbox_store_synced(api->store)) {
		struct http_header h = { "Retry-After", "1" };
		http_reply_error(req, 503, "not_ready", &h, 1,
				 "the controller is still loading the cluster's state");
		return;
	}
	switch ((enum route_id)m.id) {
	case R_CREATE:
		handle_create(api, req);
		return;
	case R_LIST:
		handle_list(api, req);
		return;
	case R_GET:
		handle_get(api, req, id);
		return;
	case R_DELETE:
		handle_delete(api, req, id);
		return;
	case R_TIMEOUT:
		handle_timeout(api, req, id);
		return;
	case R_TOKENS:
		handle_tokens(api, req, id);
		return;
	case R_TEMPLATES:
		handle_templates(api, req);
		return;
	case R_EXEC_RUN:
		handle_exec_run(api, req, id);
		return;
	case R_EXEC_STREAM:
		handle_exec_stream(api, req, id);
		return;
	case R_FILES_GET:
	case R_FILES_PUT:
	case R_FILES_DELETE:
		handle_files(api, req, id);
		return;
	case R_HEALTHZ:
	case R_READYZ:
		break;
	}
	http_reply_error(req, 500, "internal", NULL, 0, "unrouted request");
}
