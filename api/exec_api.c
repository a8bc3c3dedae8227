/*
 * exec_api: slots, one-shot exec, timeouts and kills (see exec_api.h).
 *
 * Threads: exec_mgr_run is called on the HTTP service thread and only
 * starts the session; the kube_exec client's thread runs the callbacks and
 * replies; the timer thread cancels sessions whose deadline passed. The
 * manager's mutex protects the slot counts, the list of runs and, of each
 * run, the fields the timer reads (s, phase, deadline, timed_out). No
 * kube_exec callback runs with it held, and the only kube_exec call made
 * with it held is kube_exec_cancel, which takes the session's own lock only.
 */
#include "exec_api.h"

#include "buf.h"
#include "exec_policy.h"
#include "log.h"
#include "sandbox_spec.h"
#include "sandbox_store.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KILL_TIMEOUT_MS 15000
#define TIMER_TICK_MS 100
#define FREE_WAIT_MS 20000
#define MAX_STDIN_DECODED (64u << 20)

/* ---- slot counts ---- */

struct count {
	char key[96];
	int n;
};

struct counts {
	struct count *v;
	size_t n, cap;
};

static struct count *count_find(struct counts *c, const char *key, bool create)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->v[i].key, key) == 0)
			return &c->v[i];
	if (!create)
		return NULL;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct count *v = realloc(c->v, cap * sizeof(*v));
		if (!v)
			return NULL;
		c->v = v;
		c->cap = cap;
	}
	struct count *e = &c->v[c->n++];
	snprintf(e->key, sizeof(e->key), "%s", key);
	e->n = 0;
	return e;
}

static void count_drop(struct counts *c, const char *key)
{
	struct count *e = count_find(c, key, false);
	if (!e)
		return;
	if (--e->n <= 0)
		*e = c->v[--c->n];
}

/* ---- the manager ---- */

enum phase { PH_RUN, PH_KILL };

struct run {
	struct exec_mgr *m;
	struct http_request *req;
	char ns[64];
	char pod[SANDBOX_ID_MAX];
	char tenant[64];
	char token[EXEC_TOKEN_LEN + 1];
	char *shell;
	struct exec_request r;
	size_t stdin_off;
	bool stdin_done;
	struct buf out, err;
	bool out_trunc, err_trunc;
	int exit_code;
	bool have_exit;
	struct kube_error status; /* of a failed start */
	struct kube_error close_err;
	int64_t start_ms;
	pthread_mutex_t smu; /* stdin pumping vs the end of the session; taken before m->mu */
	/* under m->mu */
	struct kube_exec_session *s;
	enum phase phase;
	int64_t deadline_ms;
	bool timed_out, shutdown, cancelled;
	bool killed;
	struct run *next, *prev;
	bool standalone; /* a kill started by exec_mgr_kill: no request */
	exec_raw_done_fn done; /* a raw run: answer through this, not req */
	void *done_ud;
};

struct exec_mgr {
	const struct sbx_config *cfg;
	struct kube_exec_client *kx;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct counts sandboxes, tenants;
	int total;
	struct run *runs;
	int nruns;
	bool stopping;
	pthread_t timer;
	bool timer_started;
};

static void *timer_main(void *arg)
{
	struct exec_mgr *m = arg;
	pthread_mutex_lock(&m->mu);
	while (!m->stopping) {
		int64_t now = now_ms();
		for (struct run *r = m->runs; r; r = r->next) {
			if (!r->s || r->cancelled || now < r->deadline_ms)
				continue;
			if (r->phase == PH_RUN)
				r->timed_out = true;
			r->cancelled = true;
			kube_exec_cancel(r->s);
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += TIMER_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&m->cv, &m->mu, &ts);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

struct exec_mgr *exec_mgr_new(const struct sbx_config *cfg, struct kube_exec_client *kx)
{
	struct exec_mgr *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->cfg = cfg;
	m->kx = kx;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if (pthread_create(&m->timer, NULL, timer_main, m) != 0) {
		pthread_mutex_destroy(&m->mu);
		pthread_cond_destroy(&m->cv);
		free(m);
		return NULL;
	}
	m->timer_started = true;
	return m;
}

void exec_mgr_free(struct exec_mgr *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	m->stopping = true;
	for (struct run *r = m->runs; r; r = r->next) {
		r->shutdown = true;
		if (r->s && !r->cancelled) {
			if (r->phase == PH_RUN)
				r->timed_out = true; /* so that it is killed */
			r->cancelled = true;
			kube_exec_cancel(r->s);
		}
	}
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	if (m->timer_started)
		pthread_join(m->timer, NULL);
	/* the runs end on the exec client's thread; kills need a moment */
	int64_t until = now_ms() + FREE_WAIT_MS;
	pthread_mutex_lock(&m->mu);
	/* runs, and the slots of streams and file transfers, which end when
	 * their sessions close on the exec client's thread */
	while ((m->nruns > 0 || m->total > 0) && now_ms() < until) {
		for (struct run *r = m->runs; r; r = r->next)
			if (r->s && !r->cancelled && now_ms() >= r->deadline_ms) {
				r->cancelled = true;
				kube_exec_cancel(r->s);
			}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&m->cv, &m->mu, &ts);
	}
	int left = m->nruns + m->total;
	pthread_mutex_unlock(&m->mu);
	if (left) {
		/* the exec client is freed after us and answers them then; the
		 * runs keep a pointer to m, so m must stay: leak it knowingly */
		log_error("%d exec call(s) still open at shutdown", left);
		return;
	}
	free(m->sandboxes.v);
	free(m->tenants.v);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m);
}

struct kube_exec_client *exec_mgr_client(struct exec_mgr *m)
{
	return m->kx;
}

int exec_mgr_active(struct exec_mgr *m)
{
	pthread_mutex_lock(&m->mu);
	int n = m->total;
	pthread_mutex_unlock(&m->mu);
	return n;
}

enum exec_slot_result exec_mgr_acquire(struct exec_mgr *m, const char *sandbox,
				       const char *tenant, int per_sandbox,
				       int64_t tenant_quota)
{
	enum exec_slot_result res = EXEC_SLOT_OK;
	pthread_mutex_lock(&m->mu);
	struct count *s = count_find(&m->sandboxes, sandbox, true);
	struct count *t = count_find(&m->tenants, tenant, true);
	if (!s || !t)
		res = EXEC_SLOT_REPLICA_FULL; /* out of memory: refuse */
	else if (m->total >= m->cfg->max_exec_streams)
		res = EXEC_SLOT_REPLICA_FULL;
	else if (s->n >= per_sandbox)
		res = EXEC_SLOT_SANDBOX_FULL;
	else if (tenant_quota > 0 && t->n >= tenant_quota)
		res = EXEC_SLOT_TENANT_QUOTA;
	if (res == EXEC_SLOT_OK) {
		s->n++;
		t->n++;
		m->total++;
	} else {
		/* drop the entries created just now */
		if (s && s->n == 0)
			count_drop(&m->sandboxes, sandbox);
		t = count_find(&m->tenants, tenant, false);
		if (t && t->n == 0)
			count_drop(&m->tenants, tenant);
	}
	pthread_mutex_unlock(&m->mu);
	return res;
}

void exec_mgr_release(struct exec_mgr *m, const char *sandbox, const char *tenant)
{
	pthread_mutex_lock(&m->mu);
	count_drop(&m->sandboxes, sandbox);
	count_drop(&m->tenants, tenant);
	m->total--;
	pthread_cond_broadcast(&m->cv); /* exec_mgr_free may be waiting */
	pthread_mutex_unlock(&m->mu);
}

bool exec_mgr_admit(struct exec_mgr *m, struct http_request *req, const char *sandbox,
		    const char *tenant, const struct sbx_template *t)
{
	int64_t q = config_quota(m->cfg, tenant)->exec_streams;
	enum exec_slot_result r = exec_mgr_acquire(m, sandbox, tenant, t->exec.max_streams, q);
	struct http_header h = { "Retry-After", "1" };
	switch (r) {
	case EXEC_SLOT_OK:
		return true;
	case EXEC_SLOT_SANDBOX_FULL:
		http_reply_error(req, 429, "too_many_streams", &h, 1,
				 "sandbox \"%s\" already has %d exec calls or streams open (template limit)",
				 sandbox, t->exec.max_streams);
		break;
	case EXEC_SLOT_TENANT_QUOTA:
		http_reply_error(req, 429, "quota_exceeded", &h, 1,
				 "tenant \"%s\" would exceed its exec_streams quota (%lld)", tenant,
				 (long long)q);
		break;
	case EXEC_SLOT_REPLICA_FULL:
		http_reply_error(req, 429, "exec_capacity", &h, 1,
				 "this replica has %d exec calls or streams open, its limit",
				 m->cfg->max_exec_streams);
		break;
	}
	return false;
}

/* ---- request parsing ---- */

void exec_request_release(struct exec_request *r)
{
	exec_argv_free(r->argv);
	for (size_t i = 0; i < r->nenv; i++)
		free_secret(r->env[i]);
	free(r->env);
	free(r->workdir);
	if (r->stdin_data) {
		secure_zero(r->stdin_data, r->stdin_len);
		free(r->stdin_data);
	}
	memset(r, 0, sizeof(*r));
}

/* A JSON body escaping a NUL ("\u0000"): cJSON would cut the string there. */
static bool has_escaped_nul(const char *s, size_t len)
{
	for (size_t i = 0; i + 6 <= len; i++) {
		if (s[i] != '\\')
			continue;
		if (s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' &&
		    s[i + 5] == '0')
			return true;
		i++; /* skip the escaped character ("\\\\" then "u0000" is text) */
	}
	return false;
}

static int fail(const char **code, const char *c, char *why, size_t whylen, int status,
		const char *msg)
{
	*code = c;
	snprintf(why, whylen, "%s", msg);
	return status;
}

static int get_count(const cJSON *o, const char *key, int64_t min, int64_t max, int64_t *out,
		     bool *present)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	*present = v != NULL;
	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || !double_as_i64(v->valuedouble, min, max, out))
		return -1;
	return 0;
}

int exec_request_parse(const char *body, size_t len, const struct sbx_template *t,
		       size_t max_env, size_t max_env_bytes, struct exec_request *out,
		       const char **code, char *why, size_t whylen)
{
	static const char *const known[] = { "command", "stdin", "stdin_encoding", "env",
					     "workdir", "timeout_seconds", "max_output_bytes" };
	memset(out, 0, sizeof(*out));
	if (has_escaped_nul(body, len) || memchr(body, '\0', len))
		return fail(code, "nul_byte", why, whylen, 400,
			    "NUL characters are not allowed in an exec request");
	cJSON *o = cJSON_ParseWithLength(body, len);
	if (!o)
		return fail(code, "invalid_json", why, whylen, 400, "the body is not valid JSON");
	int status = 0;
	if (!cJSON_IsObject(o)) {
		status = fail(code, "invalid_json", why, whylen, 400, "the body must be a JSON object");
		goto out;
	}
	for (const cJSON *f = o->child; f; f = f->next) {
		bool ok = false;
		for (size_t i = 0; i < ARRAY_SIZE(known) && !ok; i++)
			ok = strcmp(f->string, known[i]) == 0;
		if (!ok) {
			*code = "unknown_field";
			snprintf(why, whylen, "unknown field \"%.64s\"", f->string);
			status = 400;
			goto out;
		}
	}
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(o, "command");
	if (!cJSON_IsArray(cmd)) {
		status = fail(code, "invalid_command", why, whylen, 400,
			      "\"command\" must be an array of strings (argv)");
		goto out;
	}
	size_t argc = (size_t)cJSON_GetArraySize(cmd);
	if (argc > t->exec.max_args) {
		*code = "too_many_args";
		snprintf(why, whylen, "command has %zu elements; at most %zu", argc, t->exec.max_args);
		status = 422;
		goto out;
	}
	out->argv = calloc(argc + 1, sizeof(char *));
	if (!out->argv) {
		status = fail(code, "internal", why, whylen, 500, "out of memory");
		goto out;
	}
	for (const cJSON *a = cmd->child; a; a = a->next) {
		if (!cJSON_IsString(a)) {
			status = fail(code, "invalid_command", why, whylen, 400,
				      "every element of \"command\" must be a string");
			goto out;
		}
		if (!(out->argv[out->argc++] = strdup(a->valuestring))) {
			status = fail(code, "internal", why, whylen, 500, "out of memory");
			goto out;
		}
	}
	enum exec_policy_result pr =
		exec_policy_check(&t->exec, (const char *const *)out->argv, out->argc, why, whylen);
	if (pr != EXEC_POLICY_OK) {
		*code = exec_policy_code(pr);
		status = pr == EXEC_POLICY_NOT_ALLOWED || pr == EXEC_POLICY_DENIED ? 403 : 422;
		goto out;
	}
	const cJSON *env = cJSON_GetObjectItemCaseSensitive(o, "env");
	const cJSON *wd = cJSON_GetObjectItemCaseSensitive(o, "workdir");
	if ((env || (wd && !cJSON_IsNull(wd))) && !t->exec.shell) {
		status = fail(code, "unsupported", why, whylen, 422,
			      "this template runs commands without a shell (exec.shell: none): env and workdir are not available");
		goto out;
	}
	if (env && !cJSON_IsNull(env)) {
		if (!cJSON_IsObject(env)) {
			status = fail(code, "invalid_env", why, whylen, 400,
				      "\"env\" must be an object of strings");
			goto out;
		}
		size_t n = (size_t)cJSON_GetArraySize(env), bytes = 0;
		if (n > max_env) {
			*code = "too_many_env";
			snprintf(why, whylen, "at most %zu environment variables", max_env);
			status = 422;
			goto out;
		}
		out->env = calloc(n ? n : 1, sizeof(char *));
		if (!out->env) {
			status = fail(code, "internal", why, whylen, 500, "out of memory");
			goto out;
		}
		for (const cJSON *e = env->child; e; e = e->next) {
			if (!exec_env_name_valid(e->string)) {
				*code = "invalid_env";
				snprintf(why, whylen,
					 "invalid environment variable name \"%.64s\" ([A-Za-z_][A-Za-z0-9_]*, not SBX_EXEC_ID)",
					 e->string);
				status = 422;
				goto out;
			}
			if (!cJSON_IsString(e)) {
				status = fail(code, "invalid_env", why, whylen, 400,
					      "environment values must be strings");
				goto out;
			}
			size_t kl = strlen(e->string), vl = strlen(e->valuestring);
			bytes += kl + vl;
			if (bytes > max_env_bytes) {
				*code = "env_too_large";
				snprintf(why, whylen, "environment over %zu bytes", max_env_bytes);
				status = 422;
				goto out;
			}
			char *kv = malloc(kl + vl + 2);
			if (!kv) {
				status = fail(code, "internal", why, whylen, 500, "out of memory");
				goto out;
			}
			memcpy(kv, e->string, kl);
			kv[kl] = '=';
			memcpy(kv + kl + 1, e->valuestring, vl + 1);
			out->env[out->nenv++] = kv;
		}
	}
	if (wd && !cJSON_IsNull(wd)) {
		if (!cJSON_IsString(wd) || !wd->valuestring[0] || strlen(wd->valuestring) > 4096) {
			status = fail(code, "invalid_workdir", why, whylen, 400,
				      "\"workdir\" must be a non-empty path of at most 4096 bytes");
			goto out;
		}
		for (const unsigned char *c = (const unsigned char *)wd->valuestring; *c; c++)
			if (*c < 0x20 || *c == 0x7f) {
				status = fail(code, "invalid_workdir", why, whylen, 400,
					      "\"workdir\" must not contain control characters");
				goto out;
			}
		/* relative: below the workspace */
		if (wd->valuestring[0] == '/')
			out->workdir = strdup(wd->valuestring);
		else if (asprintf(&out->workdir, "%s/%s", t->workspace_path, wd->valuestring) < 0)
			out->workdir = NULL;
	} else if (t->exec.shell) {
		out->workdir = strdup(t->workspace_path);
	}
	if (t->exec.shell && !out->workdir) {
		status = fail(code, "internal", why, whylen, 500, "out of memory");
		goto out;
	}
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "stdin");
	const cJSON *enc = cJSON_GetObjectItemCaseSensitive(o, "stdin_encoding");
	bool b64 = false;
	if (enc && !cJSON_IsNull(enc)) {
		if (!cJSON_IsString(enc) ||
		    (strcmp(enc->valuestring, "base64") != 0 && strcmp(enc->valuestring, "utf-8") != 0)) {
			status = fail(code, "invalid_stdin", why, whylen, 400,
				      "\"stdin_encoding\" is \"utf-8\" or \"base64\"");
			goto out;
		}
		b64 = strcmp(enc->valuestring, "base64") == 0;
	}
	if (in && !cJSON_IsNull(in)) {
		if (!cJSON_IsString(in)) {
			status = fail(code, "invalid_stdin", why, whylen, 400, "\"stdin\" must be a string");
			goto out;
		}
		size_t sl = strlen(in->valuestring);
		if (b64) {
			if (sl % 4 || sl / 4 * 3 > MAX_STDIN_DECODED) {
				status = fail(code, "invalid_stdin", why, whylen, 400,
					      "\"stdin\" is not valid base64");
				goto out;
			}
			out->stdin_data = malloc(sl / 4 * 3 + 1);
			if (!out->stdin_data) {
				status = fail(code, "internal", why, whylen, 500, "out of memory");
				goto out;
			}
			int n = sl ? EVP_DecodeBlock((unsigned char *)out->stdin_data,
						     (const unsigned char *)in->valuestring, (int)sl)
				   : 0;
			if (n < 0) {
				status = fail(code, "invalid_stdin", why, whylen, 400,
					      "\"stdin\" is not valid base64");
				goto out;
			}
			/* EVP_DecodeBlock counts the padding as zero bytes */
			if (sl >= 1 && in->valuestring[sl - 1] == '=')
				n--;
			if (sl >= 2 && in->valuestring[sl - 2] == '=')
				n--;
			out->stdin_len = (size_t)n;
		} else {
			if (!(out->stdin_data = strdup(in->valuestring))) {
				status = fail(code, "internal", why, whylen, 500, "out of memory");
				goto out;
			}
			out->stdin_len = sl;
		}
	}
	int64_t v = t->exec.default_timeout_s;
	bool present;
	if (get_count(o, "timeout_seconds", 1, t->exec.max_timeout_s, &v, &present)) {
		*code = "invalid_timeout";
		snprintf(why, whylen, "\"timeout_seconds\" must be an integer from 1 to %lld",
			 (long long)t->exec.max_timeout_s);
		status = 422;
		goto out;
	}
	out->timeout_s = v;
	v = (int64_t)t->exec.default_output_bytes;
	if (get_count(o, "max_output_bytes", 0, (int64_t)t->exec.max_output_bytes, &v, &present)) {
		*code = "invalid_max_output";
		snprintf(why, whylen, "\"max_output_bytes\" must be an integer from 0 to %zu",
			 t->exec.max_output_bytes);
		status = 422;
		goto out;
	}
	out->max_output = (size_t)v;
out:
	cJSON_Delete(o);
	if (status)
		exec_request_release(out);
	return status;
}

/* ---- output ---- */

bool exec_output_is_text(const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data, *end = p + len;
	while (p < end) {
		if (*p == 0)
			return false;
		if (*p < 0x80) {
			p++;
			continue;
		}
		/* utf8_seq_len stops at a NUL; the data is NUL-terminated (struct
		 * buf), so it cannot run past the end */
		size_t n = utf8_seq_len(p);
		if (n == 0 || n > (size_t)(end - p))
			return false;
		p += n;
	}
	return true;
}

/* A cut at the output cap may split a character: drop that partial tail
 * (at most 3 bytes) so that text stays text. */
static size_t trim_partial(const char *data, size_t len)
{
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		unsigned char c = (unsigned char)data[len - back];
		if ((c & 0xC0) == 0x80)
			continue;  /* continuation: keep looking for the lead */
		if (c >= 0xC0) {
			size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
			return need > back ? len - back : len;
		}
		return len;
	}
	return len;
}

static void add_output(cJSON *o, const char *name, struct buf *b, bool truncated)
{
	char key[32];
	size_t len = truncated ? trim_partial(b->data ? b->data : "", b->len) : b->len;
	const char *data = b->data ? b->data : "";
	snprintf(key, sizeof(key), "%s_encoding", name);
	if (exec_output_is_text(data, len)) {
		char *s = strndup(data, len);
		cJSON_AddStringToObject(o, name, s ? s : "");
		free(s);
		cJSON_AddStringToObject(o, key, "utf-8");
	} else {
		len = b->len;
		size_t cap = 4 * ((len + 2) / 3) + 1;
		unsigned char *e = malloc(cap);
		if (e) {
			EVP_EncodeBlock(e, (const unsigned char *)data, (int)len);
			cJSON_AddStringToObject(o, name, (const char *)e);
			free(e);
		}
		cJSON_AddStringToObject(o, key, "base64");
	}
	snprintf(key, sizeof(key), "%s_truncated", name);
	cJSON_AddBoolToObject(o, key, truncated);
}

/* ---- runs ---- */

static void run_free(struct run *r)
{
	exec_request_release(&r->r);
	buf_release(&r->out);
	buf_release(&r->err);
	free(r->shell);
	pthread_mutex_destroy(&r->smu);
	free(r);
}

static void run_reply(struct run *r)
{
	if (r->done) {
		struct exec_raw_result res = {
			.have_exit = r->have_exit,
			.exit_code = r->exit_code,
			.timed_out = r->timed_out,
			.out = r->out.data ? r->out.data : "",
			.out_len = r->out.len,
			.out_truncated = r->out_trunc,
			.err = r->err.data ? r->err.data : "",
			.err_len = r->err.len,
			.error = r->status.code != KUBE_OK || r->status.message[0] ? &r->status
										 : &r->close_err,
		};
		exec_raw_done_fn done = r->done;
		r->done = NULL;
		done(r->done_ud, &res);
		return;
	}
	struct http_request *req = r->req;
	if (!req)
		return;
	r->req = NULL;
	if (r->shutdown && !r->have_exit) {
		struct http_header h = { "Retry-After", "1" };
		http_reply_error(req, 503, "shutting_down", &h, 1,
				 "the controller stopped while the command ran%s",
				 r->killed ? "; the command was stopped" : "");
		return;
	}
	if (!r->have_exit && !r->timed_out) {
		const struct kube_error *e = r->status.code != KUBE_OK || r->status.message[0]
						     ? &r->status
						     : &r->close_err;
		if (e->code == KUBE_ERR_NOT_FOUND) {
			http_reply_error(req, 409, "sandbox_gone", NULL, 0,
					 "the sandbox's Pod is gone");
			return;
		}
		http_reply_error(req, 502, "exec_failed", NULL, 0,
				 "the command could not be run in the sandbox (%s): %.300s%s",
				 kube_strerror(e->code), e->message,
				 r->shell ? " -- note: commands are started through the template's exec.shell, which the image must provide"
					  : "");
		return;
	}
	cJSON *o = cJSON_CreateObject();
	if (!o) {
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	if (r->have_exit)
		cJSON_AddNumberToObject(o, "exit_code", r->exit_code);
	else
		cJSON_AddNullToObject(o, "exit_code");
	add_output(o, "stdout", &r->out, r->out_trunc);
	add_output(o, "stderr", &r->err, r->err_trunc);
	cJSON_AddBoolToObject(o, "timed_out", r->timed_out);
	if (r->timed_out)
		cJSON_AddBoolToObject(o, "killed", r->killed);
	cJSON_AddNumberToObject(o, "duration_ms", (double)(now_ms() - r->start_ms));
	http_reply_json(req, 200, o, NULL, 0);
}

static void run_finish(struct run *r)
{
	struct exec_mgr *m = r->m;
	run_reply(r);
	pthread_mutex_lock(&m->mu);
	if (r->prev)
		r->prev->next = r->next;
	else
		m->runs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	m->nruns--;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	if (!r->standalone)
		exec_mgr_release(m, r->pod, r->tenant);
	run_free(r);
}

static void append_capped(struct buf *b, bool *trunc, size_t max, const char *data, size_t len)
{
	size_t room = max > b->len ? max - b->len : 0;
	size_t n = len < room ? len : room;
	if (n && buf_append(b, data, n) != 0)
		n = 0;
	if (n < len)
		*trunc = true;
}

static void on_stdout(void *ud, const char *data, size_t len)
{
	struct run *r = ud;
	if (r->phase == PH_RUN)
		append_capped(&r->out, &r->out_trunc, r->r.max_output, data, len);
}

static void on_stderr(void *ud, const char *data, size_t len)
{
	struct run *r = ud;
	if (r->phase == PH_RUN)
		append_capped(&r->err, &r->err_trunc, r->r.max_output, data, len);
}

static void pump_stdin_locked(struct run *r)
{
	if (!r->r.stdin_data || r->stdin_done || !r->s)
		return;
	while (r->stdin_off < r->r.stdin_len) {
		ssize_t n = kube_exec_write_stdin(r->s, r->r.stdin_data + r->stdin_off,
						  r->r.stdin_len - r->stdin_off);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			r->stdin_done = true;
			return;
		}
		r->stdin_off += (size_t)n;
	}
	r->stdin_done = true;
	(void)kube_exec_close_stdin(r->s);
}

static void pump_stdin(struct run *r)
{
	pthread_mutex_lock(&r->smu);
	pump_stdin_locked(r);
	pthread_mutex_unlock(&r->smu);
}

static void on_stdin_ready(void *ud)
{
	struct run *r = ud;
	if (r->phase == PH_RUN)
		pump_stdin(r);
}

static void on_exit_status(void *ud, int exit_code, const struct kube_error *status)
{
	struct run *r = ud;
	if (r->phase == PH_KILL) {
		r->killed = exit_code == 0;
		if (exit_code != 0)
			log_warn("exec: the kill command in sandbox %s ended with %d: %.200s", r->pod,
				 exit_code, status->message);
		return;
	}
	if (exit_code >= 0) {
		r->exit_code = exit_code;
		r->have_exit = true;
	} else {
		r->status = *status;
	}
}

static void on_close(void *ud, const struct kube_error *err);

static const struct kube_exec_ops run_ops = {
	.on_stdout = on_stdout,
	.on_stderr = on_stderr,
	.on_exit = on_exit_status,
	.on_stdin_ready = on_stdin_ready,
	.on_close = on_close,
};

/* Start the kill command; false when it could not start. */
static bool start_kill(struct run *r)
{
	char **argv = exec_kill_argv(r->shell, r->token);
	if (!argv)
		return false;
	struct kube_exec_req kr = {
		.namespace = r->ns,
		.pod = r->pod,
		.container = SBX_CONTAINER,
		.argv = (const char *const *)argv,
		.with_stdout = true,
		.with_stderr = true,
	};
	struct kube_exec_session *s = NULL;
	struct kube_error ke;
	/* held across the start so that on_close, which takes both, cannot run
	 * before r->s is set (kube_exec_start calls no callback itself) */
	pthread_mutex_lock(&r->smu);
	pthread_mutex_lock(&r->m->mu);
	r->phase = PH_KILL;
	r->deadline_ms = now_ms() + KILL_TIMEOUT_MS;
	r->cancelled = false;
	enum kube_err rc = kube_exec_start(r->m->kx, &kr, &run_ops, r, &s, &ke);
	if (rc == KUBE_OK)
		r->s = s;
	pthread_mutex_unlock(&r->m->mu);
	pthread_mutex_unlock(&r->smu);
	exec_argv_free(argv);
	if (rc != KUBE_OK) {
		log_warn("exec: cannot start the kill command in sandbox %s: %s", r->pod,
			 ke.message);
		return false;
	}
	return true;
}

static void on_close(void *ud, const struct kube_error *err)
{
	struct run *r = ud;
	pthread_mutex_lock(&r->smu);
	pthread_mutex_lock(&r->m->mu);
	struct kube_exec_session *s = r->s;
	r->s = NULL;
	enum phase ph = r->phase;
	if (ph == PH_RUN && r->have_exit)
		r->timed_out = false; /* it ended on its own, just in time */
	bool kill = ph == PH_RUN && r->timed_out && r->shell && r->token[0];
	pthread_mutex_unlock(&r->m->mu);
	pthread_mutex_unlock(&r->smu);
	if (ph == PH_RUN)
		r->close_err = *err;
	else if (err->code != KUBE_OK && r->killed)
		r->killed = false;
	kube_exec_release(s);
	if (kill && start_kill(r))
		return;
	if (ph == PH_RUN && r->timed_out)
		log_warn("exec: a command in sandbox %s timed out%s", r->pod,
			 r->shell ? " and could not be killed" : " (no shell: it may still run)");
	run_finish(r);
}

static struct run *run_new(struct exec_mgr *m, const char *ns, const char *pod,
			   const char *tenant, const char *shell)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->m = m;
	snprintf(r->ns, sizeof(r->ns), "%s", ns);
	snprintf(r->pod, sizeof(r->pod), "%s", pod);
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	if (shell && !(r->shell = strdup(shell))) {
		free(r);
		return NULL;
	}
	pthread_mutex_init(&r->smu, NULL);
	buf_init(&r->out, 0);
	buf_init(&r->err, 0);
	r->exit_code = -1;
	r->start_ms = now_ms();
	return r;
}

static void run_link(struct exec_mgr *m, struct run *r)
{
	r->next = m->runs;
	if (m->runs)
		m->runs->prev = r;
	m->runs = r;
	m->nruns++;
}

/* Start r's session with argv (taken). On failure r is answered, its
 * slot released and r freed. */
static void run_start(struct exec_mgr *m, struct run *r, char **argv)
{
	if (!argv) {
		r->status.code = KUBE_ERR_NOMEM;
		snprintf(r->status.message, sizeof(r->status.message), "out of memory");
		goto fail;
	}
	if (!m->kx) {
		exec_argv_free(argv);
		r->status.code = KUBE_ERR_TRANSPORT;
		snprintf(r->status.message, sizeof(r->status.message), "exec is not available");
		goto fail;
	}
	struct kube_exec_req kr = {
		.namespace = r->ns,
		.pod = r->pod,
		.container = SBX_CONTAINER,
		.argv = (const char *const *)argv,
		.with_stdin = r->r.stdin_data != NULL,
		.with_stdout = true,
		.with_stderr = true,
		/* without stdin there is nothing to half-close, and v4 is passed
		 * through to the node as it is, where v5 may be translated to
		 * SPDY (docs/kube-client.md, "Exec output and slow readers") */
		.v4_only = r->r.stdin_data == NULL,
	};
	struct kube_exec_session *s = NULL;
	struct kube_error ke;
	/* both locks across the start: on_close (which takes them) cannot run
	 * before r->s is set, and the timer sees the run with its session */
	pthread_mutex_lock(&r->smu);
	pthread_mutex_lock(&m->mu);
	r->deadline_ms = r->start_ms + r->r.timeout_s * 1000;
	enum kube_err rc = kube_exec_start(m->kx, &kr, &run_ops, r, &s, &ke);
	if (rc == KUBE_OK) {
		r->s = s;
		run_link(m, r);
	}
	pthread_mutex_unlock(&m->mu);
	if (rc == KUBE_OK)
		pump_stdin_locked(r);
	pthread_mutex_unlock(&r->smu);
	exec_argv_free(argv);
	if (rc == KUBE_OK)
		return;
	r->status = ke;
fail:
	run_reply(r);
	exec_mgr_release(m, r->pod, r->tenant);
	run_free(r);
}

void exec_mgr_run(struct exec_mgr *m, struct http_request *req, const char *ns,
		  const char *pod, const char *tenant, const struct sbx_template *t,
		  struct exec_request *er)
{
	struct run *r = run_new(m, ns, pod, tenant, t->exec.shell);
	if (!r) {
		exec_request_release(er);
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	r->req = req;
	r->r = *er;
	memset(er, 0, sizeof(*er));
	buf_init(&r->out, r->r.max_output);
	buf_init(&r->err, r->r.max_output);
	char **argv = NULL;
	if (r->shell) {
		if (exec_new_token(r->token) == 0)
			argv = exec_wrap_argv(r->shell, r->token, r->r.workdir,
					      (const char *const *)r->r.env, r->r.nenv,
					      (const char *const *)r->r.argv, r->r.argc);
	} else {
		argv = exec_argv_build((const char *const *)r->r.argv, r->r.argc);
	}
	run_start(m, r, argv);
}

void exec_mgr_run_raw(struct exec_mgr *m, const char *ns, const char *pod, const char *tenant,
		      char **argv, char *stdin_data, size_t stdin_len, size_t max_output,
		      int64_t timeout_s, exec_raw_done_fn done, void *ud)
{
	struct run *r = run_new(m, ns, pod, tenant, NULL);
	if (!r) {
		exec_argv_free(argv);
		free(stdin_data);
		exec_mgr_release(m, pod, tenant);
		struct kube_error e = { .code = KUBE_ERR_NOMEM };
		snprintf(e.message, sizeof(e.message), "out of memory");
		struct exec_raw_result res = { .out = "", .err = "", .error = &e };
		done(ud, &res);
		return;
	}
	r->done = done;
	r->done_ud = ud;
	r->r.stdin_data = stdin_data;
	r->r.stdin_len = stdin_len;
	r->r.timeout_s = timeout_s;
	r->r.max_output = max_output;
	buf_init(&r->out, max_output);
	buf_init(&r->err, max_output);
	run_start(m, r, argv);
}

/* ---- kill for streams ---- */

void exec_mgr_kill(struct exec_mgr *m, const char *ns, const char *pod, const char *shell,
		   const char *token)
{
	if (!m->kx || !shell || !token || !token[0])
		return;
	struct run *r = run_new(m, ns, pod, "", shell);
	if (!r)
		return;
	r->standalone = true;
	snprintf(r->token, sizeof(r->token), "%s", token);
	pthread_mutex_lock(&m->mu);
	run_link(m, r);
	pthread_mutex_unlock(&m->mu);
	if (!start_kill(r))
		run_finish(r);
}
