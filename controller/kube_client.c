/*
 * kube_client: REST calls to the Kubernetes API server (see kube_client.h).
 *
 * Layout: client construction and the handle pool; credentials; one attempt
 * (do_attempt); the retry loop (kube_request); typed helpers; streaming.
 */
#include "kube_client.h"

#include "buf.h"
#include "log.h"
#include "util.h"
#include "version.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POOL_MAX 16
#define TOKEN_RELOAD_MS 60000

const struct kube_resource KUBE_RES_PODS = { "/api/v1", "pods", true };
const struct kube_resource KUBE_RES_CONFIGMAPS = { "/api/v1", "configmaps", true };
const struct kube_resource KUBE_RES_SECRETS = { "/api/v1", "secrets", true };
const struct kube_resource KUBE_RES_SERVICEACCOUNTS = { "/api/v1", "serviceaccounts", true };
const struct kube_resource KUBE_RES_NAMESPACES = { "/api/v1", "namespaces", false };
const struct kube_resource KUBE_RES_NODES = { "/api/v1", "nodes", false };
const struct kube_resource KUBE_RES_NETWORKPOLICIES = {
	"/apis/networking.k8s.io/v1", "networkpolicies", true
};
const struct kube_resource KUBE_RES_LEASES = { "/apis/coordination.k8s.io/v1", "leases", true };
const struct kube_resource KUBE_RES_ROLES = { "/apis/rbac.authorization.k8s.io/v1", "roles", true };
const struct kube_resource KUBE_RES_ROLEBINDINGS = {
	"/apis/rbac.authorization.k8s.io/v1", "rolebindings", true
};

struct kube_client {
	/* immutable after construction */
	char *server;         /* base URL used in requests */
	char *connect_to;     /* CURLOPT_CONNECT_TO entry for tls-server-name, or NULL */
	struct curl_blob ca, cert, key;
	bool has_ca, has_cert, insecure;
	char *token_file;
	char *user_agent;
	struct kube_client_opts opts;
	CURLSH *share;
	pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];

	pthread_mutex_t mu;   /* guards everything below */
	CURL *pool[POOL_MAX];
	int npool;
	char *token;          /* current bearer token (secret), or NULL */
	int64_t token_read_ms;
	struct kube_client_stats stats;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
	(void)h;
	(void)access;
	struct kube_client *c = ud;
	pthread_mutex_lock(&c->share_mu[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
	(void)h;
	struct kube_client *c = ud;
	pthread_mutex_unlock(&c->share_mu[data]);
}

static int dup_blob(struct curl_blob *b, const char *data, size_t len)
{
	b->data = malloc(len ? len : 1);
	if (!b->data)
		return -ENOMEM;
	memcpy(b->data, data, len);
	b->len = len;
	b->flags = CURL_BLOB_NOCOPY;
	return 0;
}

static void free_blob(struct curl_blob *b, bool wipe)
{
	if (b->data && wipe)
		secure_zero(b->data, b->len);
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

/* With tls-server-name, requests go to https://NAME:PORT and CONNECT_TO sends
 * them to the real host, so that curl verifies the certificate for NAME. */
static int setup_server(struct kube_client *c, const struct kube_config *cfg)
{
	if (!cfg->tls_server_name) {
		c->server = strdup(cfg->server);
		return c->server ? 0 : -ENOMEM;
	}
	const char *hostport = cfg->server + (strncmp(cfg->server, "https://", 8) == 0 ? 8 : 7);
	const char *colon = strrchr(hostport, ':');
	const char *bracket = strrchr(hostport, ']');
	char *host = NULL, *port = NULL;
	int rc = -ENOMEM;
	if (colon && (!bracket || colon > bracket)) {
		host = strndup(hostport, (size_t)(colon - hostport));
		port = strdup(colon + 1);
	} else {
		host = strdup(hostport);
		port = strdup("443");
	}
	if (!host || !port)
		goto out;
	char *slash = strchr(port, '/');
	if (slash)
		*slash = '\0';
	if (asprintf(&c->server, "https://%s:%s", cfg->tls_server_name, port) < 0) {
		c->server = NULL;
		goto out;
	}
	if (asprintf(&c->connect_to, "%s:%s:%s:%s", cfg->tls_server_name, port, host,
		     port) < 0) {
		c->connect_to = NULL;
		goto out;
	}
	rc = 0;
out:
	free(host);
	free(port);
	return rc;
}

struct kube_client *kube_client_new(const struct kube_config *cfg,
				    const struct kube_client_opts *opts,
				    char *err, size_t errlen)
{
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init failed");
		return NULL;
	}
	struct kube_client *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_mu[i], NULL);
	struct kube_client_opts o = {
		.timeout_ms = 15000,
		.connect_timeout_ms = 5000,
		.max_attempts = 4,
		.retry_base_ms = 100,
		.retry_cap_ms = 5000,
		.max_response = 32u << 20,
		.user_agent = NULL,
	};
	if (opts) {
		if (opts->timeout_ms > 0)
			o.timeout_ms = opts->timeout_ms;
		if (opts->connect_timeout_ms > 0)
			o.connect_timeout_ms = opts->connect_timeout_ms;
		if (opts->max_attempts > 0)
			o.max_attempts = opts->max_attempts;
		if (opts->retry_base_ms > 0)
			o.retry_base_ms = opts->retry_base_ms;
		if (opts->retry_cap_ms > 0)
			o.retry_cap_ms = opts->retry_cap_ms;
		if (opts->max_response > 0)
			o.max_response = opts->max_response;
		o.user_agent = opts->user_agent;
	}
	c->opts = o;
	if (o.user_agent)
		c->user_agent = strdup(o.user_agent);
	else if (asprintf(&c->user_agent, "sandbox-controller/%s", SBX_VERSION) < 0)
		c->user_agent = NULL;
	c->opts.user_agent = c->user_agent;
	if (!c->user_agent || setup_server(c, cfg) != 0)
		goto nomem;
	c->insecure = cfg->insecure_skip_tls_verify;
	if (cfg->ca_pem) {
		if (dup_blob(&c->ca, cfg->ca_pem, cfg->ca_len))
			goto nomem;
		c->has_ca = true;
	}
	if (cfg->cert_pem && cfg->key_pem) {
		if (dup_blob(&c->cert, cfg->cert_pem, cfg->cert_len) ||
		    dup_blob(&c->key, cfg->key_pem, cfg->key_len))
			goto nomem;
		c->has_cert = true;
	}
	if (cfg->token && !(c->token = strdup(cfg->token)))
		goto nomem;
	if (cfg->token_file && !(c->token_file = strdup(cfg->token_file)))
		goto nomem;
	c->share = curl_share_init();
	if (!c->share)
		goto nomem;
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	if (c->insecure)
		log_warn("TLS verification of the API server %s is OFF (insecure-skip-tls-verify)",
			 c->server);
	return c;
nomem:
	snprintf(err, errlen, "out of memory");
	kube_client_free(c);
	return NULL;
}

void kube_client_free(struct kube_client *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	if (c->share)
		curl_share_cleanup(c->share);
	free(c->server);
	free(c->connect_to);
	free_blob(&c->ca, false);
	free_blob(&c->cert, false);
	free_blob(&c->key, true);
	free_secret(c->token);
	free(c->token_file);
	free(c->user_agent);
	pthread_mutex_destroy(&c->mu);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_mu[i]);
	free(c);
}

const char *kube_client_server(const struct kube_client *c)
{
	return c->server;
}

void kube_client_get_stats(struct kube_client *c, struct kube_client_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->stats;
	pthread_mutex_unlock(&c->mu);
}

static CURL *handle_take(struct kube_client *c)
{
	CURL *h = NULL;
	pthread_mutex_lock(&c->mu);
	if (c->npool > 0)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->mu);
	if (h)
		curl_easy_reset(h);
	else
		h = curl_easy_init();
	return h;
}

static void handle_give(struct kube_client *c, CURL *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&c->mu);
	if (c->npool < POOL_MAX) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->mu);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- credentials ---- */

/* A copy of the current bearer token (wipe and free with free_secret), or
 * NULL when none is configured. force re-reads the token file now. */
static char *token_copy(struct kube_client *c, bool force)
{
	char *copy = NULL;
	pthread_mutex_lock(&c->mu);
	if (c->token_file &&
	    (force || !c->token || now_ms() - c->token_read_ms >= TOKEN_RELOAD_MS)) {
		char *t = NULL;
		size_t len = 0;
		int rc = read_file_bounded(c->token_file, KUBE_CONFIG_MAX_TOKEN, &t, &len);
		c->token_read_ms = now_ms();
		c->stats.token_reloads++;
		if (rc == 0) {
			while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' ||
				       t[len - 1] == ' '))
				t[--len] = '\0';
			free_secret(c->token);
			c->token = t;
		} else {
			/* keep the previous token: a rotation in progress is brief */
			log_warn("cannot read token file \"%s\": %s", c->token_file,
				 strerror(-rc));
		}
	}
	if (c->token)
		copy = strdup(c->token);
	pthread_mutex_unlock(&c->mu);
	return copy;
}

/* ---- one attempt ---- */

struct response {
	struct buf body;
	bool too_large;
	char retry_after[32];
	/* streaming */
	kube_stream_fn on_data;
	void *ud;
	int stream_rc;
	bool opened;
	CURL *h;
	const volatile int *stop;
};

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct response *r = ud;
	size_t len = size * n;
	if (r->on_data && (len == 2 || len == 1) && (p[0] == '\r' || p[0] == '\n')) {
		/* end of a header block: tell a stream consumer it is open */
		long code = 0;
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200 && code < 300 && !r->opened) {
			r->opened = true;
			int rc = r->on_data(r->ud, NULL, 0);
			if (rc) {
				r->stream_rc = rc;
				return 0;
			}
		}
		return len;
	}
	static const char name[] = "retry-after:";
	if (len > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
		size_t vlen = len - (sizeof(name) - 1);
		const char *v = p + sizeof(name) - 1;
		while (vlen && (*v == ' ' || *v == '\t')) {
			v++;
			vlen--;
		}
		while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
			vlen--;
		if (vlen >= sizeof(r->retry_after))
			vlen = sizeof(r->retry_after) - 1;
		memcpy(r->retry_after, v, vlen);
		r->retry_after[vlen] = '\0';
	}
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct response *r = ud;
	size_t len = size * n;
	if (r->on_data) {
		long code = 0;
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200 && code < 300) {
			int rc = r->on_data(r->ud, p, len);
			if (rc) {
				r->stream_rc = rc;
				return 0; /* abort the transfer */
			}
			return len;
		}
		/* an error answer: keep it for decoding, bounded below */
	}
	if (buf_append(&r->body, p, len) != 0) {
		r->too_large = true;
		return 0;
	}
	return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	struct response *r = ud;
	return (r->stop && *r->stop) ? 1 : 0;
}

static void setup_handle(struct kube_client *c, CURL *h, const char *url, long timeout_ms)
{
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (c->has_ca)
		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &c->ca);
	if (c->has_cert) {
		curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &c->cert);
		curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &c->key);
		curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (c->insecure) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

struct attempt {
	const char *method;
	const char *path;
	const char *content_type;
	const char *body;
	size_t body_len;
	long timeout_ms;
	bool force_token;
	/* outputs */
	CURLcode curl_rc;
};

static bool connect_failed(CURLcode rc)
{
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
	       rc == CURLE_COULDNT_RESOLVE_PROXY;
}

/* One HTTP exchange. Fills resp and err; returns the code. */
static enum kube_err do_attempt(struct kube_client *c, struct attempt *a,
				struct response *resp, struct kube_error *err)
{
	enum kube_err code;
	char *url = NULL;
	char *auth = NULL;
	char *tok = NULL;
	struct curl_slist *hdrs = NULL, *connect_to = NULL;
	CURL *h = handle_take(c);
	if (!h)
		return kube_error_set(err, KUBE_ERR_NOMEM, "curl_easy_init failed");
	resp->h = h;
	if (asprintf(&url, "%s%s", c->server, a->path) < 0) {
		url = NULL;
		code = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
		goto out;
	}
	setup_handle(c, h, url, a->timeout_ms);
	if (c->connect_to) {
		connect_to = curl_slist_append(NULL, c->connect_to);
		curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
	}
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	tok = token_copy(c, a->force_token);
	if (tok) {
		if (asprintf(&auth, "Authorization: Bearer %s", tok) < 0) {
			auth = NULL;
			code = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
			goto out;
		}
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (a->content_type) {
		char ct[128];
		snprintf(ct, sizeof(ct), "Content-Type: %s", a->content_type);
		hdrs = curl_slist_append(hdrs, ct);
	}
	/* no "Expect: 100-continue" round trip for large bodies */
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (!hdrs) {
		code = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, a->method);
	if (strcmp(a->method, "GET") == 0)
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	if (a->body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, a->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->body_len);
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
	if (resp->stop) {
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, resp);
	}
	pthread_mutex_lock(&c->mu);
	c->stats.requests++;
	pthread_mutex_unlock(&c->mu);

	a->curl_rc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

	if (resp->stream_rc) {
		code = resp->stream_rc < 0 && resp->stream_rc >= KUBE_ERR_CANCELLED
			       ? (enum kube_err)resp->stream_rc
			       : KUBE_ERR_CANCELLED;
		if (err->code == KUBE_OK)
			kube_error_set(err, code, "stream ended by its consumer");
		goto out;
	}
	if (resp->too_large) {
		code = kube_error_set(err, KUBE_ERR_TOO_LARGE,
				      "response larger than %zu bytes", resp->body.max);
		goto out;
	}
	if (a->curl_rc == CURLE_ABORTED_BY_CALLBACK) {
		code = kube_error_set(err, KUBE_ERR_CANCELLED, "cancelled");
		goto out;
	}
	if (a->curl_rc == CURLE_OPERATION_TIMEDOUT) {
		code = kube_error_set(err, KUBE_ERR_TIMEOUT, "%s %s: timed out after %ld ms",
				      a->method, a->path, a->timeout_ms);
		goto out;
	}
	if (a->curl_rc != CURLE_OK) {
		code = kube_error_set(err, KUBE_ERR_TRANSPORT, "%s %s: %s", a->method,
				      a->path, curl_easy_strerror(a->curl_rc));
		goto out;
	}
	if (status >= 200 && status < 300) {
		kube_error_clear(err);
		err->http_status = status;
		code = KUBE_OK;
		goto out;
	}
	code = kube_status_decode(status, resp->body.data, resp->body.len,
				  resp->retry_after[0] ? resp->retry_after : NULL, err);
out:
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_CONNECT_TO, NULL);
	curl_slist_free_all(connect_to);
	if (auth) {
		/* the header list holds a copy of the token too */
		for (struct curl_slist *s = hdrs; s; s = s->next)
			secure_zero(s->data, strlen(s->data));
	}
	curl_slist_free_all(hdrs);
	free_secret(auth);
	free_secret(tok);
	free(url);
	handle_give(c, h);
	return code;
}

static bool retryable(enum kube_err code, bool idempotent, CURLcode curl_rc, long status)
{
	if (code == KUBE_ERR_TOO_MANY_REQUESTS)
		return true;
	if (code == KUBE_ERR_TRANSPORT && connect_failed(curl_rc))
		return true;
	if (!idempotent)
		return false;
	switch (code) {
	case KUBE_ERR_TRANSPORT:
	case KUBE_ERR_TIMEOUT:
		return true;
	case KUBE_ERR_SERVER:
		return status == 500 || status == 502 || status == 503;
	default:
		return false;
	}
}

enum kube_err kube_request(struct kube_client *c, const char *method,
			   const char *path, const char *content_type,
			   const char *body, size_t body_len, bool idempotent,
			   cJSON **out, struct kube_error *err)
{
	struct kube_error local;
	if (!err)
		err = &local;
	kube_error_clear(err);
	if (out)
		*out = NULL;
	if (!path || path[0] != '/')
		return kube_error_set(err, KUBE_ERR_ARG, "path must begin with /");
	bool token_retried = false;
	enum kube_err code = KUBE_OK;
	for (unsigned attempt = 0;; attempt++) {
		struct response resp = { 0 };
		buf_init(&resp.body, c->opts.max_response);
		struct attempt a = {
			.method = method,
			.path = path,
			.content_type = content_type,
			.body = body,
			.body_len = body_len,
			.timeout_ms = c->opts.timeout_ms,
			.force_token = token_retried,
		};
		code = do_attempt(c, &a, &resp, err);
		if (code == KUBE_OK) {
			if (out && resp.body.len) {
				*out = cJSON_ParseWithLength(resp.body.data, resp.body.len);
				if (!*out)
					code = kube_error_set(err, KUBE_ERR_PROTOCOL,
							      "%s %s: response is not JSON",
							      method, path);
			}
			buf_release(&resp.body);
			return code;
		}
		buf_release(&resp.body);
		/* A rotated token: read the file again and retry once, at once. */
		if (code == KUBE_ERR_UNAUTHORIZED && c->token_file && !token_retried) {
			token_retried = true;
			attempt--;
			continue;
		}
		if (attempt + 1 >= c->opts.max_attempts ||
		    !retryable(code, idempotent, a.curl_rc, err->http_status))
			return code;
		int64_t wait = backoff_ms(attempt, c->opts.retry_base_ms, c->opts.retry_cap_ms);
		if (err->retry_after_s > 0) {
			int64_t ra = (int64_t)err->retry_after_s * 1000;
			wait = ra < c->opts.retry_cap_ms ? ra : c->opts.retry_cap_ms;
		}
		log_debug("%s %s failed (%s: %s), retrying in %lld ms", method, path,
			  kube_strerror(code), err->message, (long long)wait);
		pthread_mutex_lock(&c->mu);
		c->stats.retries++;
		pthread_mutex_unlock(&c->mu);
		sleep_ms_interruptible(wait, NULL);
	}
}

/* ---- paths and queries ---- */

char *kube_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *o = malloc(n * 3 + 1);
	if (!o)
		return NULL;
	char *p = o;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
		    ch == '~') {
			*p++ = (char)ch;
		} else {
			*p++ = '%';
			*p++ = hex[ch >> 4];
			*p++ = hex[ch & 15];
		}
	}
	*p = '\0';
	return o;
}

/* Append "/" + escaped segment; refuses segments that would change the path. */
static enum kube_err append_segment(struct buf *b, const char *seg)
{
	if (!seg[0] || strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0)
		return KUBE_ERR_ARG;
	char *e = kube_escape(seg);
	if (!e)
		return KUBE_ERR_NOMEM;
	int rc = buf_appendf(b, "/%s", e);
	free(e);
	return rc ? KUBE_ERR_NOMEM : KUBE_OK;
}

enum kube_err kube_resource_path(const struct kube_resource *r, const char *ns,
				 const char *name, const char *sub, char **out)
{
	struct buf b;
	enum kube_err rc = KUBE_OK;
	*out = NULL;
	buf_init(&b, 4096);
	if (buf_appends(&b, r->prefix)) {
		rc = KUBE_ERR_NOMEM;
		goto out;
	}
	if (r->namespaced && ns) {
		if (buf_appends(&b, "/namespaces")) {
			rc = KUBE_ERR_NOMEM;
			goto out;
		}
		rc = append_segment(&b, ns);
		if (rc)
			goto out;
	} else if (r->namespaced && name) {
		rc = KUBE_ERR_ARG; /* a named namespaced object needs its namespace */
		goto out;
	}
	rc = append_segment(&b, r->plural);
	if (rc)
		goto out;
	if (name) {
		rc = append_segment(&b, name);
		if (rc)
			goto out;
	}
	if (sub) {
		if (!name) {
			rc = KUBE_ERR_ARG;
			goto out;
		}
		rc = append_segment(&b, sub);
		if (rc)
			goto out;
	}
	*out = buf_detach(&b);
	if (!*out)
		rc = KUBE_ERR_NOMEM;
out:
	buf_release(&b);
	return rc;
}

static int append_param(struct buf *b, const char *key, const char *value)
{
	char *e = kube_escape(value);
	if (!e)
		return -ENOMEM;
	int rc = buf_appendf(b, "%c%s=%s", strchr(b->data, '?') ? '&' : '?', key, e);
	free(e);
	return rc;
}

char *kube_list_query(char *path, const struct kube_list_opts *o, const char *extra)
{
	struct buf b;
	buf_init(&b, 64u << 10);
	int rc = buf_appends(&b, path);
	free(path);
	if (o && !rc && o->label_selector && *o->label_selector)
		rc = append_param(&b, "labelSelector", o->label_selector);
	if (o && !rc && o->field_selector && *o->field_selector)
		rc = append_param(&b, "fieldSelector", o->field_selector);
	if (o && !rc && o->limit) {
		char n[16];
		snprintf(n, sizeof(n), "%u", o->limit);
		rc = append_param(&b, "limit", n);
	}
	if (o && !rc && o->continue_token && *o->continue_token)
		rc = append_param(&b, "continue", o->continue_token);
	if (o && !rc && o->resource_version && *o->resource_version)
		rc = append_param(&b, "resourceVersion", o->resource_version);
	if (!rc && extra && *extra)
		rc = buf_appendf(&b, "%c%s", strchr(b.data, '?') ? '&' : '?', extra);
	if (rc) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b);
}

/* ---- typed helpers ---- */

enum kube_err kube_get(struct kube_client *c, const struct kube_resource *r,
		       const char *ns, const char *name, cJSON **out,
		       struct kube_error *err)
{
	char *path;
	enum kube_err rc = kube_resource_path(r, ns, name, NULL, &path);
	if (rc)
		return err ? kube_error_set(err, rc, "invalid name or namespace") : rc;
	rc = kube_request(c, "GET", path, NULL, NULL, 0, true, out, err);
	free(path);
	return rc;
}

enum kube_err kube_list(struct kube_client *c, const struct kube_resource *r,
			const char *ns, const struct kube_list_opts *opts,
			cJSON **out, struct kube_error *err)
{
	char *path;
	enum kube_err rc = kube_resource_path(r, ns, NULL, NULL, &path);
	if (rc)
		return err ? kube_error_set(err, rc, "invalid namespace") : rc;
	path = kube_list_query(path, opts, NULL);
	if (!path)
		return err ? kube_error_set(err, KUBE_ERR_NOMEM, "out of memory") : KUBE_ERR_NOMEM;
	rc = kube_request(c, "GET", path, NULL, NULL, 0, true, out, err);
	free(path);
	return rc;
}

static enum kube_err send_json(struct kube_client *c, const char *method,
			       const char *path, const char *ctype, const cJSON *obj,
			       bool idempotent, cJSON **out, struct kube_error *err)
{
	char *body = obj ? cJSON_PrintUnformatted(obj) : NULL;
	if (obj && !body)
		return err ? kube_error_set(err, KUBE_ERR_NOMEM, "out of memory") : KUBE_ERR_NOMEM;
	enum kube_err rc = kube_request(c, method, path, ctype, body,
					body ? strlen(body) : 0, idempotent, out, err);
	/* bodies may carry secrets (Secret data, env values) */
	free_secret(body);
	return rc;
}

enum kube_err kube_create_sub(struct kube_client *c, const struct kube_resource *r,
			      const char *ns, const char *name, const char *sub,
			      const cJSON *obj, cJSON **out, struct kube_error *err)
{
	char *path;
	enum kube_err rc = kube_resource_path(r, ns, name, sub, &path);
	if (rc)
		return err ? kube_error_set(err, rc, "invalid name or namespace") : rc;
	rc = send_json(c, "POST", path, "application/json", obj, false, out, err);
	free(path);
	return rc;
}

enum kube_err kube_create(struct kube_client *c, const struct kube_resource *r,
			  const char *ns, const cJSON *obj, cJSON **out,
			  struct kube_error *err)
{
	return kube_create_sub(c, r, ns, NULL, NULL, obj, out, err);
}

enum kube_err kube_patch(struct kube_client *c, const struct kube_resource *r,
			 const char *ns, const char *name, enum kube_patch_type type,
			 const char *patch, cJSON **out, struct kube_error *err)
{
	static const char *const ctypes[] = {
		[KUBE_PATCH_MERGE] = "application/merge-patch+json",
		[KUBE_PATCH_JSON] = "application/json-patch+json",
		[KUBE_PATCH_STRATEGIC] = "application/strategic-merge-patch+json",
	};
	if ((unsigned)type >= ARRAY_SIZE(ctypes) || !patch)
		return err ? kube_error_set(err, KUBE_ERR_ARG, "invalid patch") : KUBE_ERR_ARG;
	char *path;
	enum kube_err rc = kube_resource_path(r, ns, name, NULL, &path);
	if (rc)
		return err ? kube_error_set(err, rc, "invalid name or namespace") : rc;
	rc = kube_request(c, "PATCH", path, ctypes[type], patch, strlen(patch), false,
			  out, err);
	free(path);
	return rc;
}

enum kube_err kube_delete(struct kube_client *c, const struct kube_resource *r,
			  const char *ns, const char *name,
			  const struct kube_delete_opts *opts, cJSON **out,
			  struct kube_error *err)
{
	char *path;
	enum kube_err rc = kube_resource_path(r, ns, name, NULL, &path);
	if (rc)
		return err ? kube_error_set(err, rc, "invalid name or namespace") : rc;
	cJSON *body = NULL;
	if (opts) {
		body = cJSON_CreateObject();
		if (!body) {
			free(path);
			return err ? kube_error_set(err, KUBE_ERR_NOMEM, "out of memory")
				   : KUBE_ERR_NOMEM;
		}
		cJSON_AddStringToObject(body, "apiVersion", "v1");
		cJSON_AddStringToObject(body, "kind", "DeleteOptions");
		if (opts->uid || opts->resource_version) {
			cJSON *pre = cJSON_AddObjectToObject(body, "preconditions");
			if (opts->uid)
				cJSON_AddStringToObject(pre, "uid", opts->uid);
			if (opts->resource_version)
				cJSON_AddStringToObject(pre, "resourceVersion",
							opts->resource_version);
		}
		if (opts->grace_period_s >= 0)
			cJSON_AddNumberToObject(body, "gracePeriodSeconds",
						(double)opts->grace_period_s);
		if (opts->propagation)
			cJSON_AddStringToObject(body, "propagationPolicy", opts->propagation);
	}
	/* With preconditions a repeated DELETE is still safe: it can only
	 * delete the same object, or answer NotFound/Conflict. */
	rc = send_json(c, "DELETE", path, body ? "application/json" : NULL, body, true,
		       out, err);
	cJSON_Delete(body);
	free(path);
	return rc;
}

/* ---- streaming ---- */

enum kube_err kube_stream(struct kube_client *c, const char *path, long timeout_ms,
			  kube_stream_fn on_data, void *ud,
			  const volatile int *stop, struct kube_error *err)
{
	struct kube_error local;
	if (!err)
		err = &local;
	kube_error_clear(err);
	if (!path || path[0] != '/')
		return kube_error_set(err, KUBE_ERR_ARG, "path must begin with /");
	bool token_retried = false;
	for (;;) {
		struct response resp = { .on_data = on_data, .ud = ud, .stop = stop };
		/* only error answers are buffered here; events go to on_data */
		buf_init(&resp.body, 1u << 20);
		struct attempt a = {
			.method = "GET",
			.path = path,
			.timeout_ms = timeout_ms,
			.force_token = token_retried,
		};
		enum kube_err code = do_attempt(c, &a, &resp, err);
		buf_release(&resp.body);
		if (code == KUBE_ERR_UNAUTHORIZED && c->token_file && !token_retried) {
			token_retried = true;
			continue;
		}
		return code;
	}
}
