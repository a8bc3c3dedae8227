/*
 * Tests for api/http_server.c: a real server on 127.0.0.1 (port 0) whose loop
 * runs in a thread, driven by libcurl and, where curl would be too polite,
 * by raw sockets in the same process. Covers round trips, keep-alive, request
 * ids, body limits (Content-Length and chunked), query decoding, the error
 * shape, what libwebsockets itself rejects, async replies, clients that leave
 * before their reply, concurrency, timeouts, stop, and TLS: versions and
 * suites (against a permissive OpenSSL server as the control), security
 * headers and HSTS, plain HTTP on the TLS port, and certificate rotation.
 */
#include "http_server.h"
#include "log.h"
#include "util.h"
#include "test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the handler under test ---- */

static atomic_int handler_calls;

struct async_job {
	struct http_request *req;
	int delay_ms;
};

static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t async_threads[2048];
static size_t n_async;

static cJSON *echo_json(struct http_request *req)
{
	static const char *const keys[] = {
		"a", "b", "c", "e_q", "n", "p", "x y", "empty", "t", "i", NULL,
	};
	static const char *const allowed[] = { "a", "b", NULL };
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "method", http_request_method(req));
	cJSON_AddStringToObject(o, "path", http_request_path(req));
	size_t blen;
	const char *body = http_request_body(req, &blen);
	cJSON_AddStringToObject(o, "body", body);
	cJSON_AddNumberToObject(o, "body_len", (double)blen);
	cJSON_AddStringToObject(o, "id", http_request_id(req));
	cJSON_AddStringToObject(o, "peer", http_request_peer(req));
	if (http_request_client_cert(req))
		cJSON_AddStringToObject(o, "client_cert", http_request_client_cert(req));
	cJSON *q = cJSON_AddObjectToObject(o, "query");
	for (size_t k = 0; keys[k]; k++) {
		const char *vals[8];
		size_t n = http_request_query_all(req, keys[k], vals, 8);
		if (!n)
			continue;
		cJSON *arr = cJSON_AddArrayToObject(q, keys[k]);
		for (size_t i = 0; i < n && i < 8; i++)
			cJSON_AddItemToArray(arr, cJSON_CreateString(vals[i]));
		if (strcmp(http_request_query(req, keys[k]), vals[0]) != 0)
			cJSON_AddBoolToObject(o, "first_mismatch", 1);
	}
	const char *unknown = NULL;
	if (http_request_query_unknown(req, allowed, &unknown))
		cJSON_AddStringToObject(o, "unknown", unknown);
	cJSON *h = cJSON_AddObjectToObject(o, "headers");
	static const char *const hnames[] = {
		"authorization", "content-type", "x-request-id", "x-forwarded-for",
		"accept", "origin", "user-agent", NULL,
	};
	for (size_t k = 0; hnames[k]; k++) {
		const char *v = http_request_header(req, hnames[k]);
		if (v)
			cJSON_AddStringToObject(h, hnames[k], v);
	}
	/* case-insensitive lookup */
	if (http_request_header(req, "Content-Type") != http_request_header(req, "content-type"))
		cJSON_AddBoolToObject(o, "case_mismatch", 1);
	cJSON_AddNumberToObject(o, "age_ms", (double)(now_ms() - http_request_start_ms(req)));
	return o;
}

static void *async_main(void *arg)
{
	struct async_job *job = arg;
	if (job->delay_ms)
		usleep((useconds_t)job->delay_ms * 1000);
	http_reply_json(job->req, 200, echo_json(job->req), NULL, 0);
	free(job);
	return NULL;
}

static void async_start(struct http_request *req, int delay_ms)
{
	struct async_job *job = malloc(sizeof(*job));
	job->req = req;
	job->delay_ms = delay_ms;
	pthread_mutex_lock(&async_mu);
	if (n_async == ARRAY_SIZE(async_threads) ||
	    pthread_create(&async_threads[n_async], NULL, async_main, job) != 0) {
		pthread_mutex_unlock(&async_mu);
		free(job);
		http_reply_error(req, 500, "internal", NULL, 0, "no thread");
		return;
	}
	n_async++;
	pthread_mutex_unlock(&async_mu);
}

static void async_join_all(void)
{
	pthread_mutex_lock(&async_mu);
	for (size_t i = 0; i < n_async; i++)
		pthread_join(async_threads[i], NULL);
	n_async = 0;
	pthread_mutex_unlock(&async_mu);
}

static int ctx_marker;

/* on_reply hook records */
static atomic_int hook_calls;
static int hook_status[8];
static void *hook_ctx[8];
static bool hook_id_ok[8];

static void on_reply_hook(void *ud, struct http_request *req, int status)
{
	(void)ud;
	int i = atomic_fetch_add(&hook_calls, 1);
	if (i < 8) {
		hook_status[i] = status;
		hook_ctx[i] = http_request_context(req);
		hook_id_ok[i] = http_request_id(req)[0] != '\0';
	}
}

static void handler(void *ud, struct http_request *req)
{
	(void)ud;
	atomic_fetch_add(&handler_calls, 1);
	const char *path = http_request_path(req);
	const char *q;
	if (strcmp(path, "/echo") == 0) {
		http_reply_json(req, 200, echo_json(req), NULL, 0);
	} else if (strcmp(path, "/async") == 0) {
		q = http_request_query(req, "delay_ms");
		async_start(req, q ? atoi(q) : 0);
	} else if (strcmp(path, "/big") == 0) {
		q = http_request_query(req, "n");
		size_t n = q ? (size_t)atol(q) : 0;
		char *s = malloc(n + 1);
		memset(s, 'x', n);
		s[n] = '\0';
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "data", s);
		free(s);
		http_reply_json(req, 200, o, NULL, 0);
	} else if (strcmp(path, "/ctx") == 0) {
		http_request_set_context(req, &ctx_marker);
		http_reply_empty(req, 202, NULL, 0);
	} else if (strcmp(path, "/empty") == 0) {
		http_reply_empty(req, 204, NULL, 0);
	} else if (strcmp(path, "/created") == 0) {
		const struct http_header extra[] = {
			{ "Location", "/v1/sandboxes/abc" },
			{ "X-Evil", "a\r\nSet-Cookie: x=1" },  /* header injection: dropped */
			{ "Content-Length", "999" },           /* reserved: dropped */
			{ "Bad Name", "v" },                   /* not a token: dropped */
			{ "X-Frame-Options", "SAMEORIGIN" },   /* reserved: dropped */
			{ "Strict-Transport-Security", "max-age=0" }, /* reserved: dropped */
			{ "Retry-After", "5" },
		};
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "id", "abc");
		http_reply_json(req, 201, o, extra, ARRAY_SIZE(extra));
	} else if (strcmp(path, "/error") == 0) {
		http_reply_error(req, 404, "not_found", NULL, 0, "no sandbox \"%s\"", "a\"b\\c\n");
	} else if (strcmp(path, "/badutf8") == 0) {
		http_reply_error(req, 400, "bad_input", NULL, 0, "x\xff y \xc3\xa9 \xed\xa0\x80 z\xe2\x82");
	} else if (strcmp(path, "/allow") == 0) {
		const struct http_header allow = { "Allow", "GET, DELETE" };
		http_reply_error(req, 405, "method_not_allowed", &allow, 1, "use GET or DELETE");
	} else if (strcmp(path, "/twice") == 0) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "n", "first");
		http_reply_json(req, 200, o, NULL, 0);
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "n", "second");
		http_reply_json(req, 200, o, NULL, 0); /* logged and ignored */
	} else if (strcmp(path, "/nobody") == 0) {
		http_reply_json(req, 200, NULL, NULL, 0);
	} else {
		http_reply_error(req, 404, "not_found", NULL, 0, "no route for %s", path);
	}
}

/* ---- a server in a thread ---- */

struct tserver {
	struct http_server *srv;
	pthread_t th;
	volatile int stop;
	int port;
	int run_rc;
	atomic_bool done;
	char base[64];
};

static void *server_main(void *arg)
{
	struct tserver *ts = arg;
	ts->run_rc = http_server_run(ts->srv, &ts->stop);
	atomic_store(&ts->done, true);
	return NULL;
}

static bool server_start(struct tserver *ts, const struct http_server_opts *o)
{
	char err[256] = "";
	memset(ts, 0, sizeof(*ts));
	ts->srv = http_server_new(o, handler, NULL, err, sizeof(err));
	if (!ts->srv) {
		fprintf(stderr, "http_server_new: %s\n", err);
		return false;
	}
	ts->port = http_server_port(ts->srv);
	snprintf(ts->base, sizeof(ts->base), "%s://127.0.0.1:%d",
		 o->tls_cert_file ? "https" : "http", ts->port);
	pthread_create(&ts->th, NULL, server_main, ts);
	return true;
}

/* Stop, wait for run() to return; ms it took. */
static int64_t server_stop(struct tserver *ts)
{
	int64_t t0 = now_ms();
	ts->stop = 1;
	http_server_wake(ts->srv);
	pthread_join(ts->th, NULL);
	return now_ms() - t0;
}

static void server_free(struct tserver *ts)
{
	async_join_all(); /* every request handed out has had its reply call */
	http_server_free(ts->srv);
	ts->srv = NULL;
}

static struct http_server_opts default_opts(void)
{
	struct http_server_opts o = {
		.bind_address = "127.0.0.1",
		.port = 0,
		.max_body = 1024,
		.request_timeout_s = 1,
		.idle_timeout_s = 2,
	};
	return o;
}

/* Stats once the previous test's last replies have been counted. */
static struct http_server_stats stats_settled(struct tserver *ts)
{
	usleep(100 * 1000);
	struct http_server_stats s;
	http_server_get_stats(ts->srv, &s);
	return s;
}

static struct http_server_stats stats(struct tserver *ts)
{
	struct http_server_stats s;
	http_server_get_stats(ts->srv, &s);
	return s;
}

/*
 * Stats after the replies counted in before + want have been written: the
 * counter moves just after the last byte leaves, which the client may see
 * first.
 */
static struct http_server_stats stats_after(struct tserver *ts,
					    const struct http_server_stats *before,
					    uint64_t want_replies)
{
	struct http_server_stats s = stats(ts);
	for (int i = 0; i < 100 && s.replies - before->replies < want_replies; i++) {
		usleep(10 * 1000);
		s = stats(ts);
	}
	return s;
}

/* ---- curl client ---- */

struct resp {
	long status;
	char body[1 << 16];
	size_t body_len;
	char *big;        /* bodies past sizeof(body) */
	size_t big_len;
	char headers[8192];
	size_t headers_len;
	long connects;
	double total_s;
	CURLcode rc;
};

static size_t on_body_data(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t len = sz * n;
	if (r->big || r->body_len + len >= sizeof(r->body)) {
		if (!r->big) {
			r->big = malloc(r->body_len);
			memcpy(r->big, r->body, r->body_len);
			r->big_len = r->body_len;
		}
		r->big = realloc(r->big, r->big_len + len);
		memcpy(r->big + r->big_len, p, len);
		r->big_len += len;
		return len;
	}
	memcpy(r->body + r->body_len, p, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return len;
}

static size_t on_header_data(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t len = sz * n;
	if (strncmp(p, "HTTP/", 5) == 0 && strncmp(p, "HTTP/1.1 100", 12) != 0)
		r->headers_len = 0; /* a new response (after a 100) */
	if (r->headers_len + len < sizeof(r->headers)) {
		memcpy(r->headers + r->headers_len, p, len);
		r->headers_len += len;
		r->headers[r->headers_len] = '\0';
	}
	return len;
}

/* Value of a response header (case-insensitive name), in out; NULL if absent. */
static const char *hdr(const struct resp *r, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = r->headers;
	while (p && *p) {
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			size_t vl = (size_t)(eol - v);
			if (vl >= cap)
				vl = cap - 1;
			memcpy(out, v, vl);
			out[vl] = '\0';
			return out;
		}
		p = eol + 2;
	}
	return NULL;
}

static CURL *client_new(void)
{
	CURL *h = curl_easy_init();
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	return h;
}

/* One request; body NULL for none. Headers like "X-Request-Id: a". */
static void req_do(CURL *h, const char *method, const char *url, const char *body,
		   const char *const *headers, struct resp *r)
{
	memset(r, 0, offsetof(struct resp, body) + 1);
	r->body_len = r->headers_len = 0;
	r->big = NULL;
	r->big_len = 0;
	r->headers[0] = '\0';
	struct curl_slist *sl = NULL;
	for (size_t i = 0; headers && headers[i]; i++)
		sl = curl_slist_append(sl, headers[i]);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header_data);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}
	/* after HTTPGET, which resets it */
	curl_easy_setopt(h, CURLOPT_NOBODY, strcmp(method, "HEAD") == 0 ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST,
			 strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ? NULL : method);
	r->rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
	curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &r->total_s);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(sl);
}

static void resp_release(struct resp *r)
{
	free(r->big);
	r->big = NULL;
}

static cJSON *resp_json(const struct resp *r)
{
	return cJSON_ParseWithLength(r->big ? r->big : r->body, r->big ? r->big_len : r->body_len);
}

static const char *jstr(const cJSON *o, const char *path)
{
	/* "a.b" */
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s", path);
	const cJSON *cur = o;
	for (char *save = NULL, *k = strtok_r(tmp, ".", &save); k && cur;
	     k = strtok_r(NULL, ".", &save))
		cur = cJSON_GetObjectItemCaseSensitive(cur, k);
	return cJSON_IsString(cur) ? cur->valuestring : NULL;
}

/* The values of query key k as "v1|v2|..." */
static void jquery(const cJSON *o, const char *k, char *out, size_t cap)
{
	out[0] = '\0';
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "query"), k);
	const cJSON *it;
	size_t len = 0;
	cJSON_ArrayForEach(it, arr) {
		len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "|" : "", it->valuestring);
	}
}

/* ---- raw sockets ---- */

static int raw_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void raw_send(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/*
 * Read until EOF or until timeout_ms passes with nothing new (idle_ms
 * after the first bytes when idle_ms > 0). Returns bytes read; *eof tells
 * whether the peer closed (or reset) the connection.
 */
static size_t raw_read(int fd, char *buf, size_t cap, int timeout_ms, int idle_ms, bool *eof)
{
	size_t len = 0;
	*eof = false;
	int64_t end = now_ms() + timeout_ms;
	for (;;) {
		int64_t left = end - now_ms();
		if (idle_ms > 0 && len > 0 && left > idle_ms)
			left = idle_ms;
		if (left <= 0)
			break;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		if (r <= 0) {
			*eof = true;
			break;
		}
		len += (size_t)r;
		if (len == cap - 1)
			break;
	}
	buf[len] = '\0';
	return len;
}

/* Send a raw request on a fresh connection; read what comes back. */
static size_t raw_exchange(int port, const char *req, size_t reqlen, char *out,
			   size_t cap, int timeout_ms, bool *eof)
{
	int fd = raw_connect(port);
	if (fd < 0) {
		out[0] = '\0';
		*eof = true;
		return 0;
	}
	raw_send(fd, req, reqlen);
	size_t n = raw_read(fd, out, cap, timeout_ms, 300, eof);
	close(fd);
	return n;
}

/* ms until the peer closes, or -1 after timeout_ms. Discards data. */
static int64_t raw_ms_to_eof(int fd, int timeout_ms)
{
	int64_t t0 = now_ms();
	char b[4096];
	for (;;) {
		int64_t left = t0 + timeout_ms - now_ms();
		if (left <= 0)
			return -1;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, (int)left) <= 0)
			return -1;
		if (recv(fd, b, sizeof(b), 0) <= 0)
			return now_ms() - t0;
	}
}

/* ---- tests ---- */

static struct tserver S; /* the shared server for most tests */

static void test_round_trip(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[256], v[256];
	snprintf(url, sizeof(url), "%s/echo?a=1", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	REQUIRE(r.rc == CURLE_OK);
	CHECK_INT(r.status, 200);
	cJSON *o = resp_json(&r);
	REQUIRE(o != NULL);
	CHECK_STR(jstr(o, "method"), "GET");
	CHECK_STR(jstr(o, "path"), "/echo");
	CHECK_STR(jstr(o, "body"), "");
	CHECK_STR(jstr(o, "peer"), "127.0.0.1");
	CHECK(cJSON_GetObjectItem(o, "case_mismatch") == NULL);
	CHECK_STR(hdr(&r, "Content-Type", v, sizeof(v)), "application/json");
	CHECK_STR(hdr(&r, "Cache-Control", v, sizeof(v)), "no-store");
	CHECK_STR(hdr(&r, "X-Content-Type-Options", v, sizeof(v)), "nosniff");
	CHECK_STR(hdr(&r, "X-Frame-Options", v, sizeof(v)), "DENY");
	CHECK_STR(hdr(&r, "Content-Security-Policy", v, sizeof(v)),
		  "default-src 'none'; frame-ancestors 'none'");
	CHECK_STR(hdr(&r, "Referrer-Policy", v, sizeof(v)), "no-referrer");
	CHECK(hdr(&r, "Strict-Transport-Security", v, sizeof(v)) == NULL); /* plain HTTP */
	CHECK(hdr(&r, "Connection", v, sizeof(v)) == NULL);
	CHECK(hdr(&r, "Content-Length", v, sizeof(v)) != NULL);
	CHECK_INT(atol(v), r.body_len);
	CHECK_STR(hdr(&r, "X-Request-Id", v, sizeof(v)), jstr(o, "id"));
	cJSON_Delete(o);

	/* POST with a JSON body: echoed back, with the captured headers */
	snprintf(url, sizeof(url), "%s/echo", S.base);
	const char *const hs[] = {
		"Content-Type: application/json", "Authorization: Bearer t0k3n",
		"Accept: application/json", "Origin: https://example.test",
		"X-Forwarded-For: 10.0.0.1, 10.0.0.2", NULL,
	};
	req_do(h, "POST", url, "{\"k\":\"v\",\"n\":[1,2,3]}", hs, &r);
	CHECK_INT(r.status, 200);
	o = resp_json(&r);
	REQUIRE(o != NULL);
	CHECK_STR(jstr(o, "method"), "POST");
	CHECK_STR(jstr(o, "body"), "{\"k\":\"v\",\"n\":[1,2,3]}");
	CHECK_STR(jstr(o, "headers.content-type"), "application/json");
	CHECK_STR(jstr(o, "headers.authorization"), "Bearer t0k3n");
	CHECK_STR(jstr(o, "headers.accept"), "application/json");
	CHECK_STR(jstr(o, "headers.origin"), "https://example.test");
	CHECK_STR(jstr(o, "headers.x-forwarded-for"), "10.0.0.1, 10.0.0.2");
	CHECK(jstr(o, "headers.x-request-id") == NULL);
	CHECK(jstr(o, "headers.user-agent") == NULL); /* not captured */
	cJSON_Delete(o);

	/* PUT, PATCH, DELETE, OPTIONS reach the handler with their names */
	static const char *const methods[] = { "PUT", "PATCH", "DELETE", "OPTIONS" };
	for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
		req_do(h, methods[i], url, i < 2 ? "{}" : NULL, NULL, &r);
		CHECK_INT(r.status, 200);
		o = resp_json(&r);
		CHECK_STR(o ? jstr(o, "method") : NULL, methods[i]);
		cJSON_Delete(o);
	}

	/* HEAD: the GET reply's headers, no body */
	req_do(h, "HEAD", url, NULL, NULL, &r);
	CHECK_INT(r.rc, CURLE_OK);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.body_len, 0);
	CHECK(hdr(&r, "Content-Length", v, sizeof(v)) && atol(v) > 50);

	/* 204: no body and no Content-Length */
	snprintf(url, sizeof(url), "%s/empty", S.base);
	req_do(h, "DELETE", url, NULL, NULL, &r);
	CHECK_INT(r.status, 204);
	CHECK_INT(r.body_len, 0);
	CHECK(hdr(&r, "Content-Length", v, sizeof(v)) == NULL);
	CHECK(hdr(&r, "X-Request-Id", v, sizeof(v)) != NULL);

	/* 200 without a body */
	snprintf(url, sizeof(url), "%s/nobody", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	CHECK_STR(hdr(&r, "Content-Length", v, sizeof(v)), "0");
	CHECK(hdr(&r, "Content-Type", v, sizeof(v)) == NULL);

	/* extra headers: good ones sent, bad and reserved ones dropped */
	snprintf(url, sizeof(url), "%s/created", S.base);
	req_do(h, "POST", url, "{}", NULL, &r);
	CHECK_INT(r.status, 201);
	CHECK_STR(hdr(&r, "Location", v, sizeof(v)), "/v1/sandboxes/abc");
	CHECK_STR(hdr(&r, "Retry-After", v, sizeof(v)), "5");
	CHECK(hdr(&r, "X-Evil", v, sizeof(v)) == NULL);
	CHECK(hdr(&r, "Set-Cookie", v, sizeof(v)) == NULL);
	CHECK(strstr(r.headers, "999") == NULL);
	CHECK_STR(hdr(&r, "X-Frame-Options", v, sizeof(v)), "DENY");
	CHECK(strstr(r.headers, "SAMEORIGIN") == NULL);
	CHECK(hdr(&r, "Strict-Transport-Security", v, sizeof(v)) == NULL);
	CHECK_STR(hdr(&r, "Content-Length", v, sizeof(v)), "12"); /* {"id":"abc"} */
	CHECK_STR(r.body, "{\"id\":\"abc\"}");

	/* all of the above on one connection */
	long connects = 0;
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
	CHECK_INT(connects, 0);
	curl_easy_cleanup(h);
}

static void test_keepalive(void)
{
	struct http_server_stats before = stats_settled(&S);
	CURL *h = client_new();
	struct resp r;
	char url[256];
	long total_connects = 0;
	int ok = 0;
	for (int i = 0; i < 100; i++) {
		snprintf(url, sizeof(url), "%s/echo?i=%d", S.base, i);
		req_do(h, "GET", url, NULL, NULL, &r);
		total_connects += r.connects;
		ok += r.status == 200;
	}
	curl_easy_cleanup(h);
	CHECK_INT(ok, 100);
	CHECK_INT(total_connects, 1);
	struct http_server_stats after = stats_after(&S, &before, 100);
	CHECK_INT(after.connections - before.connections, 1);
	CHECK_INT(after.requests - before.requests, 100);
	CHECK_INT(after.replies - before.replies, 100);
}

static void test_request_ids(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[256], v[256], line[160];
	snprintf(url, sizeof(url), "%s/echo", S.base);

	char id64[65];
	memset(id64, 'a', 64);
	id64[64] = '\0';
	static const char *const good[] = { "abc-DEF_1.2", "x", "0123456789", NULL };
	for (size_t i = 0; good[i] || i == 3; i++) {
		const char *id = good[i] ? good[i] : id64;
		snprintf(line, sizeof(line), "X-Request-Id: %s", id);
		const char *const hs[] = { line, NULL };
		req_do(h, "GET", url, NULL, hs, &r);
		CHECK_STR(hdr(&r, "X-Request-Id", v, sizeof(v)), id);
		cJSON *o = resp_json(&r);
		CHECK_STR(o ? jstr(o, "id") : NULL, id);
		CHECK_STR(o ? jstr(o, "headers.x-request-id") : NULL, id);
		cJSON_Delete(o);
		if (!good[i])
			break;
	}

	char id65[66];
	memset(id65, 'b', 65);
	id65[65] = '\0';
	static const char *const bad[] = {
		"has space", "a/b", "semi;colon", "quote\"", "\xc3\xa9", "a:b", "{}", NULL,
	};
	for (size_t i = 0; bad[i] || i == 7; i++) {
		const char *id = bad[i] ? bad[i] : id65;
		snprintf(line, sizeof(line), "X-Request-Id: %s", id);
		const char *const hs[] = { line, NULL };
		req_do(h, "GET", url, NULL, hs, &r);
		const char *got = hdr(&r, "X-Request-Id", v, sizeof(v));
		CHECK(got && strcmp(got, id) != 0);
		CHECK(got && strlen(got) == 32 && strspn(got, "0123456789abcdef") == 32);
		cJSON *o = resp_json(&r);
		CHECK_STR(o ? jstr(o, "id") : NULL, got);
		/* the raw header is still visible to the handler */
		CHECK_STR(o ? jstr(o, "headers.x-request-id") : NULL, id);
		cJSON_Delete(o);
		if (!bad[i])
			break;
	}
	/* an empty header ("X-Request-Id;" makes curl send it empty) */
	const char *const empty[] = { "X-Request-Id;", NULL };
	req_do(h, "GET", url, NULL, empty, &r);
	CHECK(hdr(&r, "X-Request-Id", v, sizeof(v)) && strlen(v) == 32);

	/* generated ids are unique */
	enum { N = 200 };
	static char ids[N][40];
	for (int i = 0; i < N; i++) {
		req_do(h, "GET", url, NULL, NULL, &r);
		snprintf(ids[i], sizeof(ids[i]), "%s", hdr(&r, "X-Request-Id", v, sizeof(v)) ? v : "");
	}
	int dups = 0;
	for (int i = 0; i < N; i++)
		for (int j = i + 1; j < N; j++)
			dups += strcmp(ids[i], ids[j]) == 0;
	CHECK_INT(dups, 0);
	CHECK_INT(strlen(ids[N - 1]), 32);

	/* error replies carry it too, in the body as well */
	snprintf(url, sizeof(url), "%s/error", S.base);
	const char *const hs[] = { "X-Request-Id: err-1", NULL };
	req_do(h, "GET", url, NULL, hs, &r);
	CHECK_STR(hdr(&r, "X-Request-Id", v, sizeof(v)), "err-1");
	cJSON *o = resp_json(&r);
	CHECK_STR(o ? jstr(o, "error.request_id") : NULL, "err-1");
	cJSON_Delete(o);
	curl_easy_cleanup(h);
}

static void test_error_shape(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[256], v[256], want[512];
	snprintf(url, sizeof(url), "%s/error", S.base);
	const char *const hs[] = { "X-Request-Id: shape-1", NULL };
	req_do(h, "GET", url, NULL, hs, &r);
	CHECK_INT(r.status, 404);
	CHECK_STR(hdr(&r, "Content-Type", v, sizeof(v)), "application/json");
	snprintf(want, sizeof(want), "{\"error\":{\"code\":\"not_found\",\"message\":"
		 "\"no sandbox \\\"a\\\"b\\\\c\\n\\\"\",\"request_id\":\"shape-1\"}}");
	CHECK_STR(r.body, want);
	cJSON *o = resp_json(&r);
	CHECK(o != NULL);
	CHECK_STR(o ? jstr(o, "error.message") : NULL, "no sandbox \"a\"b\\c\n\"");
	cJSON_Delete(o);

	/* invalid UTF-8 in a message (client input, say) never breaks the JSON */
	snprintf(url, sizeof(url), "%s/badutf8", S.base);
	req_do(h, "GET", url, NULL, hs, &r);
	CHECK_INT(r.status, 400);
	CHECK_STR(r.body, "{\"error\":{\"code\":\"bad_input\",\"message\":"
		  "\"x\xef\xbf\xbd y \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd z\xef\xbf\xbd\xef\xbf\xbd\","
		  "\"request_id\":\"shape-1\"}}");
	o = resp_json(&r);
	CHECK(o != NULL);
	cJSON_Delete(o);

	/* with an extra header */
	snprintf(url, sizeof(url), "%s/allow", S.base);
	req_do(h, "DELETE", url, NULL, hs, &r);
	CHECK_INT(r.status, 405);
	CHECK_STR(hdr(&r, "Allow", v, sizeof(v)), "GET, DELETE");
	CHECK_STR(r.body, "{\"error\":{\"code\":\"method_not_allowed\",\"message\":"
		  "\"use GET or DELETE\",\"request_id\":\"shape-1\"}}");
	curl_easy_cleanup(h);
}

static void test_query(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[512], v[256];
	snprintf(url, sizeof(url),
		 "%s/echo?a=1&a=2&b=x%%26y&c=%%E2%%82%%AC&e%%3Dq=1&n&p=a+b&empty=&&x%%20y=z&a=3;t=semi",
		 S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	cJSON *o = resp_json(&r);
	REQUIRE(o != NULL);
	jquery(o, "a", v, sizeof(v));
	CHECK_STR(v, "1|2|3");               /* repeated keys kept in order */
	jquery(o, "b", v, sizeof(v));
	CHECK_STR(v, "x&y");                 /* %26 is data, not a separator */
	jquery(o, "c", v, sizeof(v));
	CHECK_STR(v, "\xe2\x82\xac");        /* UTF-8 decoded */
	jquery(o, "e_q", v, sizeof(v));
	CHECK_STR(v, "1");                   /* lws: an encoded '=' in a key becomes '_' */
	jquery(o, "n", v, sizeof(v));
	CHECK_STR(v, "");                    /* key without '=' */
	CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "query"), "n") != NULL);
	jquery(o, "p", v, sizeof(v));
	CHECK_STR(v, "a b");                 /* '+' is a space */
	jquery(o, "empty", v, sizeof(v));
	CHECK_STR(v, "");
	jquery(o, "x y", v, sizeof(v));
	CHECK_STR(v, "z");
	jquery(o, "t", v, sizeof(v));
	CHECK_STR(v, "semi");                /* lws also splits on ';' */
	CHECK(cJSON_GetObjectItem(o, "first_mismatch") == NULL);
	CHECK_STR(jstr(o, "unknown"), "c");  /* first key not in {a, b} */
	CHECK_STR(jstr(o, "path"), "/echo");
	cJSON_Delete(o);

	/* no query at all: nothing unknown */
	snprintf(url, sizeof(url), "%s/echo", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	o = resp_json(&r);
	CHECK(o && jstr(o, "unknown") == NULL);
	cJSON_Delete(o);

	/* the path is decoded too (and lws resolves dot segments first) */
	snprintf(url, sizeof(url), "%s/ec%%68o", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	o = resp_json(&r);
	CHECK_STR(o ? jstr(o, "path") : NULL, "/echo");
	cJSON_Delete(o);

	/* 64 parameters are fine, 65 are not */
	for (int n = 64; n <= 65; n++) {
		size_t len = (size_t)snprintf(url, sizeof(url), "%s/echo?", S.base);
		for (int i = 0; i < n; i++)
			len += (size_t)snprintf(url + len, sizeof(url) - len, "%sk%d", i ? "&" : "", i);
		req_do(h, "GET", url, NULL, NULL, &r);
		CHECK_INT(r.status, n == 64 ? 200 : 400);
		if (n == 65) {
			o = resp_json(&r);
			CHECK_STR(o ? jstr(o, "error.code") : NULL, "bad_query");
			cJSON_Delete(o);
		}
	}
	curl_easy_cleanup(h);
}

static size_t read_cb(char *dst, size_t sz, size_t n, void *ud)
{
	size_t *left = ud;
	size_t k = sz * n < *left ? sz * n : *left;
	if (k > 700)
		k = 700; /* several chunks */
	memset(dst, 'q', k);
	*left -= k;
	return k;
}

static void test_body_limit(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[256], v[256];
	snprintf(url, sizeof(url), "%s/echo", S.base);
	char body[2048];

	/* exactly max_body (1024): accepted */
	memset(body, 'z', 1024);
	body[1024] = '\0';
	req_do(h, "POST", url, body, NULL, &r);
	CHECK_INT(r.status, 200);
	cJSON *o = resp_json(&r);
	CHECK(o && cJSON_GetObjectItem(o, "body_len")->valueint == 1024);
	cJSON_Delete(o);

	/* one more: 413 before the body is read, and the connection is closed */
	struct http_server_stats before = stats_settled(&S);
	body[1024] = 'z';
	body[1025] = '\0';
	const char *const hs[] = { "X-Request-Id: big-1", "Expect:", NULL };
	req_do(h, "POST", url, body, hs, &r);
	CHECK_INT(r.status, 413);
	CHECK_STR(hdr(&r, "Connection", v, sizeof(v)), "close");
	CHECK_STR(r.body, "{\"error\":{\"code\":\"body_too_large\",\"message\":"
		  "\"request body of 1025 bytes is over the limit of 1024\","
		  "\"request_id\":\"big-1\"}}");
	struct http_server_stats after = stats(&S);
	CHECK_INT(after.requests - before.requests, 0);
	CHECK_INT(after.rejected - before.rejected, 1);
	/* the next request needs (and gets) a new connection */
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.connects, 1);

	/* with Expect: 100-continue the client never sends the body */
	const char *const hs2[] = { "Expect: 100-continue", NULL };
	memset(body, 'z', 2000);
	body[2000] = '\0';
	req_do(h, "POST", url, body, hs2, &r);
	CHECK_INT(r.status, 413);

	/* and within the limit the 100 comes at once (curl waits 1 s for it) */
	body[1000] = '\0';
	req_do(h, "POST", url, body, hs2, &r);
	CHECK_INT(r.status, 200);
	CHECK(r.total_s < 0.5);

	/* chunked: decoded, within the limit */
	size_t left = 1000;
	struct curl_slist *sl = curl_slist_append(NULL, "Transfer-Encoding: chunked");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, -1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(h, CURLOPT_READDATA, &left);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
	memset(&r, 0, offsetof(struct resp, body) + 1);
	r.body_len = r.headers_len = 0;
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
	CHECK_INT(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
	CHECK_INT(r.status, 200);
	o = resp_json(&r);
	CHECK(o && cJSON_GetObjectItem(o, "body_len")->valueint == 1000);
	CHECK(o && strspn(jstr(o, "body"), "q") == 1000);
	cJSON_Delete(o);
	CHECK_STR(hdr(&r, "Connection", v, sizeof(v)), "close"); /* after chunked */

	/* chunked over the limit */
	left = 3000;
	memset(&r, 0, offsetof(struct resp, body) + 1);
	r.body_len = r.headers_len = 0;
	curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
	CHECK_INT(r.status, 413);
	o = resp_json(&r);
	CHECK_STR(o ? jstr(o, "error.code") : NULL, "body_too_large");
	cJSON_Delete(o);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(sl);
	curl_easy_cleanup(h);
}

/* Status code of a raw response, 0 if none. */
static int raw_status(const char *resp)
{
	return strncmp(resp, "HTTP/1.", 7) == 0 ? atoi(resp + 9) : 0;
}

static const char *raw_body(const char *resp)
{
	const char *p = strstr(resp, "\r\n\r\n");
	return p ? p + 4 : "";
}

static void test_raw_rejections(void)
{
	char out[16384];
	bool eof;
	int before = atomic_load(&handler_calls);
	struct {
		const char *req;
		int status;     /* 0: closed without a response */
		const char *code; /* our error code, or NULL (lws's answer) */
	} cases[] = {
		/* lws: malformed escapes get its own 403 */
		{ "GET /echo%zz HTTP/1.1\r\nHost: x\r\n\r\n", 403, NULL },
		{ "GET /echo?a=%g1 HTTP/1.1\r\nHost: x\r\n\r\n", 403, NULL },
		/* lws: NUL, raw or encoded, closes the connection */
		{ "GET /echo%00x HTTP/1.1\r\nHost: x\r\n\r\n", 0, NULL },
		/* lws: unknown methods */
		{ "TRACE /echo HTTP/1.1\r\nHost: x\r\n\r\n", 403, NULL },
		{ "BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n", 403, NULL },
		/* lws: upgrades are refused by closing */
		{ "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
		  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 0, NULL },
		{ "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
		  "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 0, NULL },
		/* ours */
		{ "CONNECT example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented" },
		{ "GET /echo%01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_path" },
		{ "GET /echo%7f HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_path" },
		{ "GET /echo?a=%1b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_query" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "not_implemented" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nab", 417, "expectation_failed" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, "body_too_large" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", 400, "bad_request" },
		{ "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n", 413, "body_too_large" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		raw_exchange(S.port, cases[i].req, strlen(cases[i].req), out, sizeof(out), 2000, &eof);
		int st = raw_status(out);
		if (st != cases[i].status || !eof) {
			t_failed++;
			fprintf(stderr, "raw case %zu: status %d eof %d, expected %d and a close: %.200s\n",
				i, st, eof, cases[i].status, out);
			continue;
		}
		t_passed++;
		if (cases[i].code) {
			cJSON *o = cJSON_Parse(raw_body(out));
			CHECK_STR(o ? jstr(o, "error.code") : NULL, cases[i].code);
			CHECK(o && jstr(o, "error.request_id") && strlen(jstr(o, "error.request_id")) == 32);
			cJSON_Delete(o);
			CHECK(strstr(out, "\r\nConnection: close\r\n") != NULL);
			CHECK(strstr(out, "\r\nX-Request-Id: ") != NULL);
		}
		if (st == 403) { /* lws's own page still carries our generic headers */
			CHECK(strcasestr(out, "x-content-type-options: nosniff") != NULL);
			CHECK(strcasestr(out, "x-frame-options: DENY") != NULL);
			CHECK(strcasestr(out, "content-security-policy: default-src 'none'") != NULL);
			CHECK(strcasestr(out, "referrer-policy: no-referrer") != NULL);
			CHECK(strcasestr(out, "strict-transport-security") == NULL);
		}
	}
	CHECK_INT(atomic_load(&handler_calls) - before, 0);

	/* a request head over the lws limit: closed without a response */
	static char big[12000];
	int n = snprintf(big, sizeof(big), "GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: ");
	memset(big + n, 'p', 9000);
	memcpy(big + n + 9000, "\r\n\r\n", 5);
	raw_exchange(S.port, big, strlen(big), out, sizeof(out), 2000, &eof);
	CHECK_INT(raw_status(out), 0);
	CHECK(eof);
	/* a long but acceptable header (a 6 KB token) is fine */
	n = snprintf(big, sizeof(big), "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ");
	memset(big + n, 't', 6000);
	memcpy(big + n + 6000, "\r\n\r\n", 5);
	raw_exchange(S.port, big, strlen(big), out, sizeof(out), 2000, &eof);
	CHECK_INT(raw_status(out), 200);
}

static void test_raw_protocol(void)
{
	char out[16384];
	bool eof;

	/* pipelining: both answered, in order, on one connection */
	const char *two = "GET /echo?i=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: p1\r\n\r\n"
			  "GET /echo?i=2 HTTP/1.1\r\nHost: x\r\nX-Request-Id: p2\r\n\r\n";
	raw_exchange(S.port, two, strlen(two), out, sizeof(out), 2000, &eof);
	const char *a = strstr(out, "X-Request-Id: p1"), *b = strstr(out, "X-Request-Id: p2");
	CHECK(a && b && a < b);
	CHECK(!eof);

	/* pipelined behind an async reply */
	const char *two_async = "GET /async?delay_ms=100 HTTP/1.1\r\nHost: x\r\nX-Request-Id: q1\r\n\r\n"
				"GET /echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: q2\r\n\r\n";
	raw_exchange(S.port, two_async, strlen(two_async), out, sizeof(out), 2000, &eof);
	a = strstr(out, "X-Request-Id: q1");
	b = strstr(out, "X-Request-Id: q2");
	CHECK(a && b && a < b);

	/* a POST body followed by a pipelined GET */
	const char *post_get = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
			       "GET /echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: r2\r\n\r\n";
	raw_exchange(S.port, post_get, strlen(post_get), out, sizeof(out), 2000, &eof);
	CHECK(strstr(out, "\"body\":\"hello\"") != NULL);
	CHECK(strstr(out, "X-Request-Id: r2") != NULL);

	/* POST without a length: an empty body, then the connection closes */
	const char *nolen = "POST /echo HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_exchange(S.port, nolen, strlen(nolen), out, sizeof(out), 2000, &eof);
	CHECK_INT(raw_status(out), 200);
	CHECK(strstr(out, "\"body_len\":0") != NULL);
	CHECK(strstr(out, "Connection: close") != NULL);
	CHECK(eof);

	/* HTTP/1.0: answered, then closed */
	const char *h10 = "GET /echo HTTP/1.0\r\n\r\n";
	raw_exchange(S.port, h10, strlen(h10), out, sizeof(out), 2000, &eof);
	CHECK_INT(raw_status(out), 200);
	CHECK(strstr(out, "Connection: close") != NULL);
	CHECK(eof);

	/* Connection: close is honoured */
	const char *cc = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	raw_exchange(S.port, cc, strlen(cc), out, sizeof(out), 2000, &eof);
	CHECK_INT(raw_status(out), 200);
	CHECK(eof);

	/* chunked with extensions and trailers */
	const char *ch = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
	raw_exchange(S.port, ch, strlen(ch), out, sizeof(out), 2000, &eof);
	CHECK_INT(raw_status(out), 200);
	CHECK(strstr(out, "\"body\":\"abc0123456789\"") != NULL);
	CHECK(eof);

	/* the body of a request may arrive byte by byte */
	int fd = raw_connect(S.port);
	const char *slow = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nwxyz";
	for (const char *p = slow; *p; p++) {
		raw_send(fd, p, 1);
		usleep(2000);
	}
	raw_read(fd, out, sizeof(out), 2000, 200, &eof);
	CHECK(strstr(out, "\"body\":\"wxyz\"") != NULL);
	close(fd);
}

static void test_async(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[256];
	snprintf(url, sizeof(url), "%s/async?delay_ms=200", S.base);
	int64_t t0 = now_ms();
	req_do(h, "GET", url, NULL, NULL, &r);
	int64_t dt = now_ms() - t0;
	CHECK_INT(r.status, 200);
	CHECK(dt >= 190);
	cJSON *o = resp_json(&r);
	CHECK_STR(o ? jstr(o, "path") : NULL, "/async");
	cJSON_Delete(o);

	/* the handler may take longer than request_timeout_s (1 s here) */
	snprintf(url, sizeof(url), "%s/async?delay_ms=1600", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	/* still the same connection */
	CHECK_INT(r.connects, 0);

	/* async POST with a body */
	snprintf(url, sizeof(url), "%s/async?delay_ms=10", S.base);
	req_do(h, "POST", url, "{\"x\":1}", NULL, &r);
	o = resp_json(&r);
	CHECK_STR(o ? jstr(o, "body") : NULL, "{\"x\":1}");
	cJSON_Delete(o);

	/* a second reply is ignored, the first one stands */
	snprintf(url, sizeof(url), "%s/twice", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "{\"n\":\"first\"}");
	req_do(h, "GET", url, NULL, NULL, &r); /* the connection is still fine */
	CHECK_INT(r.status, 200);
	curl_easy_cleanup(h);
}

static void test_async_disconnect(void)
{
	struct http_server_stats before = stats_settled(&S);
	CURL *h = client_new();
	struct resp r;
	char url[256];
	snprintf(url, sizeof(url), "%s/async?delay_ms=400", S.base);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 100L);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.rc, CURLE_OPERATION_TIMEDOUT);
	curl_easy_cleanup(h); /* closes the connection */

	/* a raw client that sends and leaves at once */
	const char *req = "GET /async?delay_ms=300 HTTP/1.1\r\nHost: x\r\n\r\n";
	int fd = raw_connect(S.port);
	raw_send(fd, req, strlen(req));
	usleep(50 * 1000);
	close(fd);

	/* and one that leaves while its (big) reply is being written */
	const char *big = "GET /big?n=8000000 HTTP/1.1\r\nHost: x\r\n\r\n";
	fd = raw_connect(S.port);
	int small = 4096;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	raw_send(fd, big, strlen(big));
	char tmp[1024];
	usleep(100 * 1000);
	ssize_t got = recv(fd, tmp, sizeof(tmp), 0);
	CHECK(got > 0);
	close(fd);

	usleep(700 * 1000);
	struct http_server_stats after = stats(&S);
	CHECK_INT(after.dropped_replies - before.dropped_replies, 3);
	CHECK_INT(after.requests - before.requests, 3);
	CHECK_INT(after.replies - before.replies, 0);
}

struct worker {
	int id;
	int ok;
	int connects;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	CURL *h = client_new();
	struct resp *r = malloc(sizeof(*r));
	char url[256], want[64];
	for (int i = 0; i < 20; i++) {
		bool async = (i % 4) == 3;
		snprintf(url, sizeof(url), "%s/%s?t=%d&i=%d&delay_ms=%d", S.base,
			 async ? "async" : "echo", w->id, i, async ? i % 3 : 0);
		req_do(h, "GET", url, NULL, NULL, r);
		snprintf(want, sizeof(want), "\"t\":[\"%d\"],\"i\":[\"%d\"]", w->id, i);
		if (r->status == 200 && strstr(r->body, want))
			w->ok++;
		w->connects += (int)r->connects;
		resp_release(r);
	}
	free(r);
	curl_easy_cleanup(h);
	return NULL;
}

static void test_concurrency(void)
{
	enum { NT = 50 };
	struct http_server_stats before = stats_settled(&S);
	pthread_t th[NT];
	struct worker w[NT];
	for (int i = 0; i < NT; i++) {
		w[i] = (struct worker){ .id = i };
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	}
	int ok = 0, connects = 0;
	for (int i = 0; i < NT; i++) {
		pthread_join(th[i], NULL);
		ok += w[i].ok;
		connects += w[i].connects;
	}
	CHECK_INT(ok, NT * 20);
	CHECK_INT(connects, NT); /* keep-alive held for every client */
	struct http_server_stats after = stats_after(&S, &before, NT * 20);
	CHECK_INT(after.requests - before.requests, NT * 20);
	CHECK_INT(after.replies - before.replies, NT * 20);
	CHECK_INT(after.dropped_replies - before.dropped_replies, 0);
}

static void test_big_response(void)
{
	CURL *h = client_new();
	struct resp r;
	char url[256];
	snprintf(url, sizeof(url), "%s/big?n=3000000", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.big_len, 3000000 + 11); /* {"data":"..."} */
	CHECK(r.big && memcmp(r.big, "{\"data\":\"xxx", 12) == 0);
	size_t xs = 0;
	for (size_t i = 9; r.big && i < r.big_len - 2; i++)
		xs += r.big[i] == 'x';
	CHECK_INT(xs, 3000000);
	resp_release(&r);
	/* and the connection goes on */
	snprintf(url, sizeof(url), "%s/echo", S.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.connects, 0);
	curl_easy_cleanup(h);
}

static void test_timeouts(void)
{
	char out[4096];
	bool eof;
	int64_t ms;

	/* half a request line, then nothing: closed after request_timeout_s (1 s) */
	int fd = raw_connect(S.port);
	raw_send(fd, "GET /echo HT", 12);
	ms = raw_ms_to_eof(fd, 10000);
	close(fd);
	CHECK(ms >= 900 && ms <= 8000); /* fired, not early; generous when the machine is loaded */

	/* connect and say nothing: the same */
	fd = raw_connect(S.port);
	ms = raw_ms_to_eof(fd, 10000);
	close(fd);
	CHECK(ms >= 900 && ms <= 8000); /* fired, not early; generous when the machine is loaded */

	/* a slow body: 408 from us, then closed */
	fd = raw_connect(S.port);
	const char *part = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
	int64_t t0 = now_ms();
	raw_send(fd, part, strlen(part));
	raw_read(fd, out, sizeof(out), 10000, 0, &eof);
	ms = now_ms() - t0;
	close(fd);
	CHECK_INT(raw_status(out), 408);
	CHECK(strstr(out, "\"code\":\"request_timeout\"") != NULL);
	CHECK(eof);
	CHECK(ms >= 900 && ms <= 8000); /* fired, not early; generous when the machine is loaded */

	/* a slowloris that keeps sending header bytes is still cut at 1 s */
	fd = raw_connect(S.port);
	raw_send(fd, "GET /echo HTTP/1.1\r\n", 20);
	t0 = now_ms();
	ms = -1;
	for (int i = 0; i < 100; i++) {
		raw_send(fd, "X-A: b\r\n", 8);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 100) > 0 && recv(fd, out, sizeof(out), 0) <= 0) {
			ms = now_ms() - t0;
			break;
		}
	}
	close(fd);
	CHECK(ms >= 900 && ms <= 8000); /* fired, not early; generous when the machine is loaded */

	/* idle keep-alive: closed after idle_timeout_s (2 s) */
	fd = raw_connect(S.port);
	const char *req = "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_send(fd, req, strlen(req));
	raw_read(fd, out, sizeof(out), 2000, 200, &eof);
	CHECK_INT(raw_status(out), 200);
	CHECK(!eof);
	ms = raw_ms_to_eof(fd, 12000);
	close(fd);
	CHECK(ms >= 1400 && ms <= 9000);
}

static void test_on_reply_hook(void)
{
	struct tserver ts;
	struct http_server_opts o = default_opts();
	o.on_reply = on_reply_hook;
	atomic_store(&hook_calls, 0);
	REQUIRE(server_start(&ts, &o));
	CURL *h = client_new();
	struct resp r;
	char url[256];
	const char *paths[] = { "/ctx", "/echo", "/error" };
	for (int i = 0; i < 3; i++) {
		snprintf(url, sizeof(url), "%s%s", ts.base, paths[i]);
		req_do(h, "GET", url, NULL, NULL, &r);
	}
	curl_easy_cleanup(h);
	server_stop(&ts);
	server_free(&ts);
	/* once per request, with the status and the handler's context */
	CHECK_INT(atomic_load(&hook_calls), 3);
	CHECK_INT(hook_status[0], 202);
	CHECK(hook_ctx[0] == &ctx_marker);
	CHECK_INT(hook_status[1], 200);
	CHECK(hook_ctx[1] == NULL);
	CHECK_INT(hook_status[2], 404);
	CHECK(hook_id_ok[0] && hook_id_ok[1] && hook_id_ok[2]);
}

static void test_stop(void)
{
	struct tserver ts;
	struct http_server_opts o = default_opts();
	REQUIRE(server_start(&ts, &o));
	char out[4096];
	bool eof;
	int fds[8], nfd = 0;

	/* idle keep-alive connections */
	for (int i = 0; i < 4; i++) {
		fds[nfd] = raw_connect(ts.port);
		const char *req = "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
		raw_send(fds[nfd], req, strlen(req));
		raw_read(fds[nfd], out, sizeof(out), 2000, 100, &eof);
		CHECK_INT(raw_status(out), 200);
		nfd++;
	}
	/* half a request */
	fds[nfd] = raw_connect(ts.port);
	raw_send(fds[nfd++], "GET /ec", 7);
	/* a request waiting for a slow async reply */
	fds[nfd] = raw_connect(ts.port);
	const char *slow = "GET /async?delay_ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_send(fds[nfd++], slow, strlen(slow));
	usleep(100 * 1000);

	struct http_server_stats before = stats(&ts);
	int64_t ms = server_stop(&ts);
	CHECK(ms < 5000); /* prompt, not waiting for the slow reply or the idle timeouts */
	CHECK_INT(ts.run_rc, 0);
	/* every connection was closed */
	for (int i = 0; i < nfd; i++) {
		CHECK(raw_ms_to_eof(fds[i], 1000) >= 0);
		close(fds[i]);
	}
	/* the listening socket too */
	CHECK(raw_connect(ts.port) < 0);
	/* the late reply is dropped, not sent anywhere */
	async_join_all();
	struct http_server_stats after = stats(&ts);
	CHECK_INT(after.dropped_replies - before.dropped_replies, 1);
	http_server_wake(ts.srv); /* harmless after run() */
	CHECK_INT(http_server_run(ts.srv, &ts.stop), -1); /* once only */
	server_free(&ts);

	/* a server that never ran frees cleanly */
	char err[128];
	struct http_server *srv = http_server_new(&o, handler, NULL, err, sizeof(err));
	CHECK(srv != NULL);
	http_server_free(srv);
	http_server_free(NULL);
}

static bool ipv6_loopback(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static void test_bind_addresses(void)
{
	static const struct {
		const char *bind, *url_host, *peer;
	} cases[] = {
		{ NULL, "127.0.0.1", "127.0.0.1" },   /* all, dual-stack */
		{ "0.0.0.0", "127.0.0.1", "127.0.0.1" },
		{ "::", "127.0.0.1", "127.0.0.1" },
		{ "::1", "[::1]", "::1" },
		{ NULL, "[::1]", "::1" },
	};
	bool v6 = ipv6_loopback();
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		if (!v6 && strchr(cases[i].url_host, '['))
			continue;
		struct http_server_opts o = default_opts();
		o.bind_address = cases[i].bind;
		struct tserver ts;
		if (!server_start(&ts, &o)) {
			t_failed++;
			fprintf(stderr, "bind case %zu: no server\n", i);
			continue;
		}
		CURL *h = client_new();
		struct resp r;
		char url[128];
		snprintf(url, sizeof(url), "http://%s:%d/echo", cases[i].url_host, ts.port);
		req_do(h, "GET", url, NULL, NULL, &r);
		CHECK_INT(r.status, 200);
		cJSON *o2 = resp_json(&r);
		CHECK_STR(o2 ? jstr(o2, "peer") : NULL, cases[i].peer);
		cJSON_Delete(o2);
		curl_easy_cleanup(h);
		server_stop(&ts);
		server_free(&ts);
	}
}

static void test_new_errors(void)
{
	char err[256];
	struct http_server_opts o = default_opts();
	o.port = S.port; /* taken */
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "cannot listen on 127.0.0.1:") != NULL);
	CHECK(strstr(err, "in use") != NULL);
	o = default_opts();
	o.port = 70000;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	o = default_opts();
	o.tls_cert_file = "/nonexistent.pem";
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "both") != NULL);
	o.tls_key_file = "/nonexistent.key";
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "cannot read TLS certificate file \"/nonexistent.pem\"") != NULL);
	o = default_opts();
	CHECK(http_server_new(&o, NULL, NULL, err, sizeof(err)) == NULL);
}

/* ---- TLS ---- */

/* A throwaway self-signed certificate for cn (ECDSA P-256 or RSA 2048) and
 * its key; a key_pass encrypts the key. */
static bool write_pair(const char *cert, const char *key, const char *cn, bool rsa,
		       const char *key_pass)
{
	EVP_PKEY *pk = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
	X509 *x = X509_new();
	bool ok = false;
	FILE *f = NULL;
	if (!pk || !x)
		goto out;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	if (!X509_sign(x, pk, EVP_sha256()))
		goto out;
	f = fopen(cert, "w");
	if (!f || !PEM_write_X509(f, x))
		goto out;
	fclose(f);
	f = fopen(key, "w");
	if (!f)
		goto out;
	if (key_pass)
		ok = PEM_write_PrivateKey(f, pk, EVP_aes_256_cbc(), (const unsigned char *)key_pass,
					  (int)strlen(key_pass), NULL, NULL);
	else
		ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
out:
	if (f)
		fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
	return ok;
}

/* A throwaway self-signed certificate for localhost, in dir. */
static bool make_cert(const char *dir, char *cert, char *key, size_t cap)
{
	snprintf(cert, cap, "%s/cert.pem", dir);
	snprintf(key, cap, "%s/key.pem", dir);
	return write_pair(cert, key, "localhost", false, NULL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* What a handshake with our own OpenSSL client gave. */
struct probe {
	bool ok;
	int reason;       /* ERR_GET_REASON of the client's error when !ok */
	int version;      /* TLS1_2_VERSION... when ok */
	bool compressed;
	char cipher[64];
	char cn[128];     /* the server certificate's CN */
	char resp[4096];  /* the answer to the request, if one was sent */
};

/*
 * Handshake with the server on port, offering versions min_v..max_v and the
 * given TLS 1.2 cipher list and TLS 1.3 suites (NULL: OpenSSL's defaults).
 * The client runs at security level 0 so that it really offers TLS 1.0/1.1
 * and weak suites: refusing them is the server's job. With a request, send
 * it and read the answer until the server closes.
 */
static void tls_probe(int port, int min_v, int max_v, const char *ciphers,
		      const char *suites, const char *request, struct probe *pr)
{
	memset(pr, 0, sizeof(*pr));
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = NULL;
	int fd = -1;
	if (!ctx)
		goto out;
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, min_v);
	SSL_CTX_set_max_proto_version(ctx, max_v);
	if (ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
		goto out;
	if (suites && SSL_CTX_set_ciphersuites(ctx, suites) != 1)
		goto out;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	fd = raw_connect(port);
	if (fd < 0)
		goto out;
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	ssl = SSL_new(ctx);
	if (!ssl)
		goto out;
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	ERR_clear_error();
	if (SSL_connect(ssl) != 1) {
		pr->reason = ERR_GET_REASON(ERR_peek_error());
		goto out;
	}
	pr->ok = true;
	pr->version = SSL_version(ssl);
	pr->compressed = SSL_get_current_compression(ssl) != NULL;
	snprintf(pr->cipher, sizeof(pr->cipher), "%s", SSL_get_cipher_name(ssl));
	X509 *x = SSL_get1_peer_certificate(ssl);
	if (x) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, pr->cn,
					  (int)sizeof(pr->cn));
		X509_free(x);
	}
	if (request) {
		SSL_write(ssl, request, (int)strlen(request));
		size_t len = 0;
		for (;;) {
			int n = SSL_read(ssl, pr->resp + len, (int)(sizeof(pr->resp) - 1 - len));
			if (n <= 0)
				break;
			len += (size_t)n;
			if (len == sizeof(pr->resp) - 1)
				break;
		}
		pr->resp[len] = '\0';
	} else {
		SSL_shutdown(ssl);
	}
out:
	ERR_clear_error();
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	SSL_CTX_free(ctx);
}

/* The subject of the server's certificate as curl sees it, on a new
 * connection (CURLINFO_CERTINFO); "" when the request failed. */
static void curl_subject(const char *base, char *out, size_t cap)
{
	CURL *h = client_new();
	struct resp r;
	char url[256];
	struct curl_certinfo *ci = NULL;
	out[0] = '\0';
	snprintf(url, sizeof(url), "%s/echo", base);
	curl_easy_setopt(h, CURLOPT_CERTINFO, 1L);
	req_do(h, "GET", url, NULL, NULL, &r);
	if (r.rc == CURLE_OK && curl_easy_getinfo(h, CURLINFO_CERTINFO, &ci) == CURLE_OK &&
	    ci && ci->num_of_certs > 0) {
		for (struct curl_slist *sl = ci->certinfo[0]; sl; sl = sl->next) {
			if (strncmp(sl->data, "Subject:", 8) == 0) {
				snprintf(out, cap, "%s", sl->data + 8);
				break;
			}
		}
	}
	curl_easy_cleanup(h);
}

/* One GET with curl, limited to the TLS versions in sslversion and, when
 * given, to a cipher list. Returns the curl result; its message in errbuf. */
static CURLcode curl_tls_get(const char *base, long sslversion, const char *ciphers,
			     long *status, char *errbuf)
{
	CURL *h = client_new();
	struct resp r;
	char url[256];
	errbuf[0] = '\0';
	snprintf(url, sizeof(url), "%s/echo", base);
	curl_easy_setopt(h, CURLOPT_SSLVERSION, sslversion);
	if (ciphers)
		curl_easy_setopt(h, CURLOPT_SSL_CIPHER_LIST, ciphers);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	req_do(h, "GET", url, NULL, NULL, &r);
	*status = r.status;
	curl_easy_cleanup(h);
	return r.rc;
}

/*
 * A permissive TLS server (TLS 1.0 and up, every suite, security level 0)
 * that answers any request with 200: the control that shows our clients
 * really can speak TLS 1.0/1.1 and weak suites here, so that their failing
 * against the server under test is the server's refusal.
 */
struct lax_server {
	int lfd, port;
	SSL_CTX *ctx;
	pthread_t th;
	atomic_bool stop;
};

static void *lax_main(void *arg)
{
	struct lax_server *ls = arg;
	while (!atomic_load(&ls->stop)) {
		struct pollfd p = { .fd = ls->lfd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int fd = accept(ls->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		struct timeval tv = { .tv_sec = 2 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		SSL *ssl = SSL_new(ls->ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) == 1) {
			char b[4096];
			static const char ok[] =
				"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
			if (SSL_read(ssl, b, sizeof(b)) > 0)
				SSL_write(ssl, ok, (int)sizeof(ok) - 1);
			SSL_shutdown(ssl);
		}
		SSL_free(ssl);
		close(fd);
		ERR_clear_error();
	}
	return NULL;
}

static bool lax_start(struct lax_server *ls, const char *cert, const char *key)
{
	memset(ls, 0, sizeof(*ls));
	ls->lfd = -1;
	ls->ctx = SSL_CTX_new(TLS_server_method());
	if (!ls->ctx)
		return false;
	SSL_CTX_set_security_level(ls->ctx, 0);
	SSL_CTX_set_min_proto_version(ls->ctx, TLS1_VERSION);
	if (SSL_CTX_set_cipher_list(ls->ctx, "ALL:@SECLEVEL=0") != 1 ||
	    SSL_CTX_use_certificate_chain_file(ls->ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ls->ctx, key, SSL_FILETYPE_PEM) != 1)
		goto fail;
	ls->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof(a);
	if (ls->lfd < 0 || bind(ls->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(ls->lfd, 16) != 0 || getsockname(ls->lfd, (struct sockaddr *)&a, &alen) != 0)
		goto fail;
	ls->port = ntohs(a.sin_port);
	if (pthread_create(&ls->th, NULL, lax_main, ls) != 0)
		goto fail;
	return true;
fail:
	if (ls->lfd >= 0)
		close(ls->lfd);
	SSL_CTX_free(ls->ctx);
	ERR_clear_error();
	return false;
}

static void lax_stop(struct lax_server *ls)
{
	atomic_store(&ls->stop, true);
	pthread_join(ls->th, NULL);
	close(ls->lfd);
	SSL_CTX_free(ls->ctx);
}

/* Plain bytes to the TLS port: the connection closes by itself within
 * limit_ms and no HTTP comes back. Returns ms to the close, -1 on a hang. */
static int64_t plaintext_close_ms(int port, const char *bytes, size_t n, int limit_ms,
				  char *out, size_t cap)
{
	int fd = raw_connect(port);
	if (fd < 0)
		return -1;
	int64_t t0 = now_ms();
	if (n)
		raw_send(fd, bytes, n);
	bool eof = false;
	raw_read(fd, out, cap, limit_ms, 0, &eof);
	int64_t ms = now_ms() - t0;
	close(fd);
	return eof ? ms : -1;
}

static void test_tls(void)
{
	char dir[] = "/tmp/sbx-http-tls-XXXXXX";
	char cert[256], key[256], url[256], v[256], errbuf[CURL_ERROR_SIZE];
	REQUIRE(mkdtemp(dir) != NULL);
	REQUIRE(make_cert(dir, cert, key, sizeof(cert)));
	struct http_server_opts o = default_opts();
	o.tls_cert_file = cert;
	o.tls_key_file = key;
	struct tserver ts;
	struct lax_server lax;
	bool started = server_start(&ts, &o);
	CHECK(started);
	bool lax_ok = lax_start(&lax, cert, key);
	CHECK(lax_ok);
	if (!started || !lax_ok)
		goto out;
	char lax_base[64];
	snprintf(lax_base, sizeof(lax_base), "https://127.0.0.1:%d", lax.port);

	/* ALPN: curl offers h2 over TLS; we must negotiate http/1.1 */
	CURL *h = client_new();
	struct resp r;
	snprintf(url, sizeof(url), "%s/echo?a=tls", ts.base);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	for (int i = 0; i < 3; i++) {
		req_do(h, "GET", url, NULL, NULL, &r);
		CHECK_INT(r.rc, CURLE_OK);
		CHECK_INT(r.status, 200);
		CHECK(strstr(r.body, "\"a\":[\"tls\"]") != NULL);
	}
	long ver = 0;
	curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &ver);
	CHECK_INT(ver, CURL_HTTP_VERSION_1_1);
	CHECK_INT(stats(&ts).connections, 1);

	/* HTTPS responses: HSTS and the security headers, errors included */
	static const char *const paths[] = { "/echo", "/error", "/empty" };
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
		snprintf(url, sizeof(url), "%s%s", ts.base, paths[i]);
		req_do(h, "GET", url, NULL, NULL, &r);
		CHECK_INT(r.rc, CURLE_OK);
		CHECK_STR(hdr(&r, "Strict-Transport-Security", v, sizeof(v)), "max-age=31536000");
		CHECK_STR(hdr(&r, "X-Content-Type-Options", v, sizeof(v)), "nosniff");
		CHECK_STR(hdr(&r, "Cache-Control", v, sizeof(v)), "no-store");
		CHECK_STR(hdr(&r, "X-Frame-Options", v, sizeof(v)), "DENY");
		CHECK_STR(hdr(&r, "Content-Security-Policy", v, sizeof(v)),
			  "default-src 'none'; frame-ancestors 'none'");
		CHECK_STR(hdr(&r, "Referrer-Policy", v, sizeof(v)), "no-referrer");
	}
	curl_easy_cleanup(h);
	/* lws's own 403 over TLS carries them too */
	struct probe pr;
	tls_probe(ts.port, TLS1_2_VERSION, 0, NULL, NULL,
		  "GET /echo%zz HTTP/1.1\r\nHost: x\r\n\r\n", &pr);
	CHECK(pr.ok);
	CHECK_INT(raw_status(pr.resp), 403);
	CHECK(strcasestr(pr.resp, "strict-transport-security: max-age=31536000") != NULL);
	CHECK(strcasestr(pr.resp, "x-frame-options: DENY") != NULL);

	/* curl: TLS 1.2 and 1.3 work */
	long status = 0;
	CHECK_INT(curl_tls_get(ts.base, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2,
			       NULL, &status, errbuf), CURLE_OK);
	CHECK_INT(status, 200);
	CHECK_INT(curl_tls_get(ts.base, CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_TLSv1_3,
			       NULL, &status, errbuf), CURLE_OK);
	CHECK_INT(status, 200);
	/* curl: TLS 1.1 and 1.0 refused by the server. At OpenSSL 3's default
	 * security level curl would not even offer them, hence @SECLEVEL=0;
	 * the lax server shows that the offer is real. */
	static const struct {
		long v;
		const char *name;
	} old[] = {
		{ CURL_SSLVERSION_TLSv1_1 | CURL_SSLVERSION_MAX_TLSv1_1, "TLS 1.1" },
		{ CURL_SSLVERSION_TLSv1_0 | CURL_SSLVERSION_MAX_TLSv1_0, "TLS 1.0" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(old); i++) {
		CURLcode rc = curl_tls_get(lax_base, old[i].v, "DEFAULT:@SECLEVEL=0", &status, errbuf);
		if (rc != CURLE_OK)
			fprintf(stderr, "control: curl cannot speak %s here: %s\n", old[i].name, errbuf);
		CHECK_INT(rc, CURLE_OK);
		rc = curl_tls_get(ts.base, old[i].v, "DEFAULT:@SECLEVEL=0", &status, errbuf);
		CHECK(rc == CURLE_SSL_CONNECT_ERROR);
		CHECK(strstr(errbuf, "protocol version") != NULL);
		/* as curl comes: at the default security level OpenSSL 3 does not
		 * even try ("legacy sigalg disallowed or unsupported") */
		rc = curl_tls_get(ts.base, old[i].v, NULL, &status, errbuf);
		CHECK(rc != CURLE_OK);
	}
	/* curl: a weak suite (RSA key exchange, CBC, SHA-1) refused; a modern one works */
	CHECK_INT(curl_tls_get(lax_base, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2,
			       "ECDHE-ECDSA-AES128-SHA", &status, errbuf), CURLE_OK);
	CHECK_INT(curl_tls_get(ts.base, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2,
			       "AES128-SHA", &status, errbuf), CURLE_SSL_CONNECT_ERROR);
	CHECK_INT(curl_tls_get(ts.base, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2,
			       "ECDHE-ECDSA-AES128-SHA", &status, errbuf), CURLE_SSL_CONNECT_ERROR);
	CHECK(strstr(errbuf, "handshake failure") != NULL);
	CHECK_INT(curl_tls_get(ts.base, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2,
			       "ECDHE-ECDSA-CHACHA20-POLY1305", &status, errbuf), CURLE_OK);
	CHECK_INT(status, 200);

	/* the same with our own client, which tells who refused */
	tls_probe(lax.port, TLS1_1_VERSION, TLS1_1_VERSION, NULL, NULL, NULL, &pr);
	CHECK(pr.ok); /* control */
	static const int old_versions[] = { TLS1_VERSION, TLS1_1_VERSION };
	for (size_t i = 0; i < ARRAY_SIZE(old_versions); i++) {
		tls_probe(ts.port, old_versions[i], old_versions[i], NULL, NULL, NULL, &pr);
		CHECK(!pr.ok);
		CHECK_INT(pr.reason, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
	}
	tls_probe(ts.port, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL, NULL, &pr);
	CHECK(pr.ok);
	CHECK_INT(pr.version, TLS1_2_VERSION);
	CHECK(strncmp(pr.cipher, "ECDHE-ECDSA-", 12) == 0);
	CHECK(strstr(pr.cipher, "GCM") || strstr(pr.cipher, "CHACHA20"));
	CHECK(!pr.compressed);
	CHECK_STR(pr.cn, "localhost");
	tls_probe(ts.port, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, NULL, &pr);
	CHECK(pr.ok);
	CHECK_INT(pr.version, TLS1_3_VERSION);
	static const char *const weak[] = {
		"AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA",
		"ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-CCM8", "ECDHE-ECDSA-NULL-SHA",
	};
	for (size_t i = 0; i < ARRAY_SIZE(weak); i++) {
		tls_probe(ts.port, TLS1_2_VERSION, TLS1_2_VERSION, weak[i], NULL, NULL, &pr);
		if (pr.ok || pr.reason != SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE) {
			t_failed++;
			fprintf(stderr, "weak suite %s: ok %d reason %d\n", weak[i], pr.ok, pr.reason);
		} else {
			t_passed++;
		}
	}
	/* TLS 1.3: a suite outside OpenSSL's defaults is refused */
	tls_probe(ts.port, TLS1_3_VERSION, TLS1_3_VERSION, NULL, "TLS_AES_128_CCM_8_SHA256",
		  NULL, &pr);
	CHECK(!pr.ok);
	/* the server's order wins: the client prefers ChaCha20 */
	tls_probe(ts.port, TLS1_2_VERSION, TLS1_2_VERSION,
		  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256", NULL, NULL, &pr);
	CHECK(pr.ok);
	CHECK_STR(pr.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");

	/* no renegotiation: the client asks, the server says no */
	{
		SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
		int fd = raw_connect(ts.port);
		struct timeval tv = { .tv_sec = 5 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		SSL *ssl = SSL_new(cctx);
		SSL_set_fd(ssl, fd);
		CHECK_INT(SSL_connect(ssl), 1);
		CHECK_INT(SSL_renegotiate(ssl), 1);
		CHECK(SSL_do_handshake(ssl) != 1);
		CHECK_INT(ERR_GET_REASON(ERR_peek_error()), SSL_R_NO_RENEGOTIATION);
		ERR_clear_error();
		SSL_free(ssl);
		close(fd);
		SSL_CTX_free(cctx);
	}

	/* plain HTTP to the TLS port: closed at once, nothing that looks like HTTP */
	char out[1024];
	const char *req = "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
	int64_t ms = plaintext_close_ms(ts.port, req, strlen(req), 3000, out, sizeof(out));
	CHECK(ms >= 0 && ms < 1000);
	CHECK_STR(out, ""); /* OpenSSL recognises HTTP and sends not even an alert */
	req = "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
	ms = plaintext_close_ms(ts.port, req, strlen(req), 3000, out, sizeof(out));
	CHECK(ms >= 0 && ms < 1000);
	CHECK_INT(raw_status(out), 0);
	/* other bytes: closed, at most with a TLS alert record (type 21) */
	static const char junk[] = "\x01\x02\x03\x04\x05 hello there";
	ms = plaintext_close_ms(ts.port, junk, sizeof(junk) - 1, 3000, out, sizeof(out));
	CHECK(ms >= 0 && ms < 1000);
	CHECK(out[0] == '\0' || out[0] == 0x15);
	/* nothing, or less than a record header: closed after request_timeout_s */
	ms = plaintext_close_ms(ts.port, NULL, 0, 5000, out, sizeof(out));
	CHECK(ms >= 900 && ms < 4000);
	ms = plaintext_close_ms(ts.port, "GE", 2, 5000, out, sizeof(out));
	CHECK(ms >= 900 && ms < 4000);
	CHECK_STR(out, "");
	/* and the server is still fine */
	CHECK_INT(curl_tls_get(ts.base, CURL_SSLVERSION_TLSv1_2, NULL, &status, errbuf), CURLE_OK);
	CHECK_INT(status, 200);

out:
	if (lax_ok)
		lax_stop(&lax);
	if (started) {
		server_stop(&ts);
		server_free(&ts);
	}
	rm_tree(dir);
}

/*
 * A Secret volume as the kubelet writes it: dir/tls.crt -> ..data/tls.crt,
 * dir/tls.key -> ..data/tls.key, and an update makes a new directory and
 * swaps the ..data symlink with rename(2). Version n gets a pair for cn;
 * mismatched: the key belongs to another certificate.
 */
static bool secret_publish(const char *dir, int n, const char *cn, bool rsa, bool mismatched)
{
	char vdir[256], rel[32], cert[300], key[300], other[300], tmp[300], data[300];
	snprintf(rel, sizeof(rel), "..v%d", n);
	snprintf(vdir, sizeof(vdir), "%s/%s", dir, rel);
	if (mkdir(vdir, 0700) != 0)
		return false;
	snprintf(cert, sizeof(cert), "%s/tls.crt", vdir);
	snprintf(key, sizeof(key), "%s/tls.key", vdir);
	if (!write_pair(cert, key, cn, rsa, NULL))
		return false;
	if (mismatched) {
		snprintf(other, sizeof(other), "%s/other.crt", vdir);
		if (!write_pair(other, key, "other", rsa, NULL)) /* replaces the key */
			return false;
	}
	snprintf(tmp, sizeof(tmp), "%s/..data_tmp", dir);
	snprintf(data, sizeof(data), "%s/..data", dir);
	unlink(tmp);
	return symlink(rel, tmp) == 0 && rename(tmp, data) == 0;
}

/* Poll until a new connection sees cn (our client), up to limit_ms; the
 * ms it took, or -1. */
static int64_t wait_for_cn(int port, const char *cn, int limit_ms)
{
	int64_t t0 = now_ms();
	struct probe pr;
	do {
		tls_probe(port, TLS1_2_VERSION, 0, NULL, NULL, NULL, &pr);
		if (pr.ok && strcmp(pr.cn, cn) == 0)
			return now_ms() - t0;
		usleep(50 * 1000);
	} while (now_ms() - t0 < limit_ms);
	return -1;
}

static uint64_t wait_for_failures(struct tserver *ts, uint64_t want, int limit_ms)
{
	int64_t t0 = now_ms();
	uint64_t n;
	while ((n = stats(ts).tls_reload_failures) < want && now_ms() - t0 < limit_ms)
		usleep(50 * 1000);
	return n;
}

/* How many times needle occurs in the file at path. */
static int count_in_file(const char *path, const char *needle)
{
	char *data = NULL;
	size_t len = 0;
	int n = 0;
	if (read_file_bounded(path, 1 << 20, &data, &len) != 0)
		return -1;
	for (const char *p = data; (p = strstr(p, needle)); p++)
		n++;
	free(data);
	return n;
}

static void test_tls_reload(void)
{
	char dir[] = "/tmp/sbx-http-tls-reload-XXXXXX";
	char cert[300], key[300], tmp[300], subject[256], logpath[300];
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(cert, sizeof(cert), "%s/tls.crt", dir);
	snprintf(key, sizeof(key), "%s/tls.key", dir);
	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	REQUIRE(secret_publish(dir, 1, "sbx-one", false, false));
	REQUIRE(symlink("..data/tls.crt", cert) == 0);
	REQUIRE(symlink("..data/tls.key", key) == 0);
	struct http_server_opts o = default_opts();
	o.tls_cert_file = cert;
	o.tls_key_file = key;
	o.idle_timeout_s = 30; /* the old connection must outlive the test */
	struct tserver ts;
	bool started = server_start(&ts, &o);
	CHECK(started);
	if (!started)
		goto out;
	curl_subject(ts.base, subject, sizeof(subject));
	CHECK(strstr(subject, "sbx-one") != NULL);

	/* a keep-alive connection from before the rotation */
	CURL *h = client_new();
	struct resp r;
	char url[256];
	snprintf(url, sizeof(url), "%s/echo", ts.base);
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.status, 200);

	/* the Secret changes: new connections get the new certificate */
	REQUIRE(secret_publish(dir, 2, "sbx-two", false, false));
	int64_t ms = wait_for_cn(ts.port, "sbx-two", 5000);
	CHECK(ms >= 0 && ms < 3000);
	curl_subject(ts.base, subject, sizeof(subject));
	CHECK(strstr(subject, "sbx-two") != NULL);
	CHECK_INT(stats(&ts).tls_reloads, 1);
	/* the old connection carries on */
	req_do(h, "GET", url, NULL, NULL, &r);
	CHECK_INT(r.rc, CURLE_OK);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.connects, 0);
	curl_easy_cleanup(h);

	/* another key type: the ECDSA certificate is gone, not kept beside it */
	REQUIRE(secret_publish(dir, 3, "sbx-three", true, false));
	ms = wait_for_cn(ts.port, "sbx-three", 5000);
	CHECK(ms >= 0 && ms < 3000);
	struct probe pr;
	tls_probe(ts.port, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL, NULL, &pr);
	CHECK(pr.ok && strncmp(pr.cipher, "ECDHE-RSA-", 10) == 0);
	tls_probe(ts.port, TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256",
		  NULL, NULL, &pr);
	CHECK(!pr.ok);

	/* a key that does not match: refused, logged once, the old pair stays */
	int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	REQUIRE(logfd >= 0);
	log_set_fd(logfd);
	REQUIRE(secret_publish(dir, 4, "sbx-four", false, true));
	CHECK_INT(wait_for_failures(&ts, 1, 5000), 1);
	tls_probe(ts.port, TLS1_2_VERSION, 0, NULL, NULL, NULL, &pr);
	CHECK(pr.ok);
	CHECK_STR(pr.cn, "sbx-three");
	usleep(2500 * 1000); /* more looks at the same files */
	CHECK_INT(stats(&ts).tls_reload_failures, 1);
	CHECK_INT(stats(&ts).tls_reloads, 2);
	log_set_fd(2);
	close(logfd);
	CHECK_INT(count_in_file(logpath, "does not match the certificate"), 1);
	CHECK_INT(count_in_file(logpath, key), 1); /* names the file */
	CHECK_INT(count_in_file(logpath, "PRIVATE KEY"), 0);
	curl_subject(ts.base, subject, sizeof(subject));
	CHECK(strstr(subject, "sbx-three") != NULL);

	/* fixed: taken */
	REQUIRE(secret_publish(dir, 5, "sbx-five", false, false));
	ms = wait_for_cn(ts.port, "sbx-five", 5000);
	CHECK(ms >= 0 && ms < 3000);
	CHECK_INT(stats(&ts).tls_reloads, 3);

	/*
	 * Files replaced in place, one after the other, with a look in between:
	 * no failure. wait_for_cn returned just after the look that took
	 * sbx-five, so the next look comes in about 1 s and the one after in
	 * about 2 s: with the key 1.2 s after the certificate, exactly one look
	 * sees the new certificate beside the old key, and it must wait.
	 */
	unlink(cert);
	unlink(key);
	snprintf(tmp, sizeof(tmp), "%s/..v5/tls.crt", dir);
	REQUIRE(rename(tmp, cert) == 0);
	snprintf(tmp, sizeof(tmp), "%s/..v5/tls.key", dir);
	REQUIRE(rename(tmp, key) == 0);
	snprintf(tmp, sizeof(tmp), "%s/spare.key", dir);
	REQUIRE(write_pair(cert, tmp, "sbx-six", false, NULL)); /* cert first... */
	usleep(1200 * 1000);
	char spare_key[300];
	snprintf(spare_key, sizeof(spare_key), "%s/spare.key", dir);
	REQUIRE(rename(spare_key, key) == 0);            /* ...then its key */
	ms = wait_for_cn(ts.port, "sbx-six", 6000);
	CHECK(ms >= 0 && ms < 4500);
	CHECK_INT(stats(&ts).tls_reload_failures, 1);

	/* asked (SIGHUP): read again at once, changed or not */
	uint64_t before = stats(&ts).tls_reloads;
	int64_t t0 = now_ms();
	http_server_reload_tls(ts.srv);
	while (stats(&ts).tls_reloads == before && now_ms() - t0 < 2000)
		usleep(10 * 1000);
	CHECK_INT(stats(&ts).tls_reloads, before + 1);
	CHECK(now_ms() - t0 < 500);
	/* asked with a broken key file: refused, logged, old pair kept */
	FILE *f = fopen(key, "w");
	REQUIRE(f != NULL);
	fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", f);
	fclose(f);
	http_server_reload_tls(ts.srv);
	CHECK_INT(wait_for_failures(&ts, 2, 2000), 2);
	tls_probe(ts.port, TLS1_2_VERSION, 0, NULL, NULL, NULL, &pr);
	CHECK(pr.ok);
	CHECK_STR(pr.cn, "sbx-six");

	server_stop(&ts);
	http_server_reload_tls(ts.srv); /* after run: harmless */
	server_free(&ts);
	http_server_reload_tls(NULL);
out:
	rm_tree(dir);
}

/* ---- TLS client certificates ---- */

struct issued {
	X509 *cert;
	EVP_PKEY *key;
};

/*
 * A certificate for subject (one "CN=..." or several comma-separated
 * "CN=a,CN=b"), signed by issuer (NULL: self-signed), valid from
 * now+from_s to now+to_s; a CA when ca; eku (e.g. "clientAuth",
 * "serverAuth") added when not NULL. Written to dir/name.crt and
 * dir/name.key when dir is not NULL.
 */
static struct issued issue(const char *dir, const char *name, const char *subject,
			   const struct issued *issuer, bool ca, long from_s, long to_s,
			   const char *eku)
{
	struct issued out = { X509_new(), EVP_EC_gen("P-256") };
	static long serial = 100;
	X509 *x = out.cert;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	X509_set_pubkey(x, out.key);
	X509_NAME *nm = X509_get_subject_name(x);
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", subject);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)t + 3,
					   -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert) : nm);
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, issuer ? issuer->cert : x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
						ca ? "critical,CA:TRUE" : "CA:FALSE");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	if (ca) {
		e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	if (eku) {
		e = X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage, eku);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, issuer ? issuer->key : out.key, EVP_sha256());
	if (dir) {
		char path[300];
		snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
		FILE *f = fopen(path, "w");
		if (f) {
			PEM_write_X509(f, x);
			fclose(f);
		}
		snprintf(path, sizeof(path), "%s/%s.key", dir, name);
		f = fopen(path, "w");
		if (f) {
			PEM_write_PrivateKey(f, out.key, NULL, NULL, 0, NULL, NULL);
			fclose(f);
		}
	}
	return out;
}

static void issued_free(struct issued *i)
{
	X509_free(i->cert);
	EVP_PKEY_free(i->key);
}

/* GET /echo with the client certificate dir/name.crt (NULL: none), on a new
 * connection unless h is reused by the caller. The "client_cert" the
 * server reported goes to cn ("" when none). */
static CURLcode mtls_get(CURL *h, const char *base, const char *dir, const char *name,
			 long *status, char *cn, size_t cap)
{
	char url[256], crt[300], key[300];
	struct resp r;
	snprintf(url, sizeof(url), "%s/echo", base);
	if (name) {
		snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
		snprintf(key, sizeof(key), "%s/%s.key", dir, name);
		curl_easy_setopt(h, CURLOPT_SSLCERT, crt);
		curl_easy_setopt(h, CURLOPT_SSLKEY, key);
	}
	req_do(h, "GET", url, NULL, NULL, &r);
	*status = r.status;
	cn[0] = '\0';
	cJSON *o = r.rc == CURLE_OK ? cJSON_Parse(r.body) : NULL;
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "client_cert");
	if (cJSON_IsString(c))
		snprintf(cn, cap, "%s", c->valuestring);
	cJSON_Delete(o);
	return r.rc;
}

/* A fresh handle: one connection, one request. */
static CURLcode mtls_once(const char *base, const char *dir, const char *name, long *status,
			  char *cn, size_t cap)
{
	CURL *h = client_new();
	CURLcode rc = mtls_get(h, base, dir, name, status, cn, cap);
	curl_easy_cleanup(h);
	return rc;
}

static bool write_file(const char *path, const char *a, const char *b)
{
	char tmp[320];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return false;
	char *buf = NULL;
	size_t len = 0;
	for (const char *src = a; src; src = src == a ? b : NULL) {
		if (read_file_bounded(src, 1 << 20, &buf, &len) == 0)
			fwrite(buf, 1, len, f);
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return rename(tmp, path) == 0;
}

static void test_tls_client_certs(void)
{
	char dir[] = "/tmp/sbx-http-mtls-XXXXXX";
	char cert[256], key[256], path[300], cas[300], cn[128], err[512];
	long st = 0;
	REQUIRE(mkdtemp(dir) != NULL);
	REQUIRE(make_cert(dir, cert, key, sizeof(cert)));
	struct issued ca_a = issue(dir, "ca-a", "CN=client CA a", NULL, true, -60, 86400, NULL);
	struct issued ca_b = issue(dir, "ca-b", "CN=client CA b", NULL, true, -60, 86400, NULL);
	struct issued certs[] = {
		issue(dir, "runner", "CN=ci-runner", &ca_a, false, -60, 3600, "clientAuth"),
		issue(dir, "plain", "CN=plain-leaf", &ca_a, false, -60, 3600, NULL),
		issue(dir, "other-ca", "CN=ci-runner", &ca_b, false, -60, 3600, "clientAuth"),
		issue(dir, "expired", "CN=ci-runner", &ca_a, false, -7200, -3600, "clientAuth"),
		issue(dir, "future", "CN=ci-runner", &ca_a, false, 3600, 7200, "clientAuth"),
		issue(dir, "server-only", "CN=ci-runner", &ca_a, false, -60, 3600, "serverAuth"),
		issue(dir, "self", "CN=ci-runner", NULL, false, -60, 3600, "clientAuth"),
		issue(dir, "spaced", "CN=two words", &ca_a, false, -60, 3600, "clientAuth"),
		issue(dir, "two-cns", "CN=a,CN=b", &ca_a, false, -60, 3600, "clientAuth"),
		issue(dir, "utf8", "CN=r\xc3\xa9sum\xc3\xa9", &ca_a, false, -60, 3600, "clientAuth"),
	};
	snprintf(cas, sizeof(cas), "%s/client-cas.pem", dir);
	snprintf(path, sizeof(path), "%s/ca-a.crt", dir);
	REQUIRE(write_file(cas, path, NULL));

	struct http_server_opts o = default_opts();
	o.tls_cert_file = cert;
	o.tls_key_file = key;
	o.tls_client_ca_file = cas;
	struct tserver ts;
	bool started = server_start(&ts, &o);
	CHECK(started);
	if (!started)
		goto out;

	/* no certificate: served, no client_cert */
	CHECK_INT(mtls_once(ts.base, dir, NULL, &st, cn, sizeof(cn)), CURLE_OK);
	CHECK_INT(st, 200);
	CHECK_STR(cn, "");
	/* a good one, and one without extendedKeyUsage (any purpose) */
	CHECK_INT(mtls_once(ts.base, dir, "runner", &st, cn, sizeof(cn)), CURLE_OK);
	CHECK_INT(st, 200);
	CHECK_STR(cn, "ci-runner");
	CHECK_INT(mtls_once(ts.base, dir, "plain", &st, cn, sizeof(cn)), CURLE_OK);
	CHECK_STR(cn, "plain-leaf");
	/* verified, but no CN we can name: "?" */
	static const char *const unnamed[] = { "spaced", "two-cns", "utf8" };
	for (size_t i = 0; i < ARRAY_SIZE(unnamed); i++) {
		CHECK_INT(mtls_once(ts.base, dir, unnamed[i], &st, cn, sizeof(cn)), CURLE_OK);
		CHECK_INT(st, 200);
		CHECK_STR(cn, "?");
	}
	/* refused at the handshake: no answer at all */
	static const char *const refused[] = { "other-ca", "expired", "future", "server-only",
					       "self" };
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		CURLcode rc = mtls_once(ts.base, dir, refused[i], &st, cn, sizeof(cn));
		CHECK(rc != CURLE_OK);
		CHECK_INT(st, 0);
		if (rc == CURLE_OK)
			fprintf(stderr, "  %s was accepted\n", refused[i]);
	}

	/* a resumed session keeps its certificate */
	CURL *h = client_new();
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	for (int i = 0; i < 3; i++) {
		CHECK_INT(mtls_get(h, ts.base, dir, "runner", &st, cn, sizeof(cn)), CURLE_OK);
		CHECK_INT(st, 200);
		CHECK_STR(cn, "ci-runner");
	}
	curl_easy_cleanup(h);

	/* the CA file changes to CA b: b's clients get in, a's do not */
	uint64_t reloads = stats(&ts).tls_reloads;
	snprintf(path, sizeof(path), "%s/ca-b.crt", dir);
	REQUIRE(write_file(cas, path, NULL));
	int64_t t0 = now_ms();
	while (stats(&ts).tls_reloads == reloads && now_ms() - t0 < 10000)
		usleep(50 * 1000);
	CHECK_INT(stats(&ts).tls_reloads, reloads + 1);
	CHECK_INT(mtls_once(ts.base, dir, "other-ca", &st, cn, sizeof(cn)), CURLE_OK);
	CHECK_STR(cn, "ci-runner");
	CHECK(mtls_once(ts.base, dir, "runner", &st, cn, sizeof(cn)) != CURLE_OK);
	/* both CAs */
	char path_a[300];
	snprintf(path_a, sizeof(path_a), "%s/ca-a.crt", dir);
	reloads = stats(&ts).tls_reloads;
	REQUIRE(write_file(cas, path_a, path));
	http_server_reload_tls(ts.srv);
	t0 = now_ms();
	while (stats(&ts).tls_reloads == reloads && now_ms() - t0 < 10000)
		usleep(50 * 1000);
	CHECK_INT(mtls_once(ts.base, dir, "runner", &st, cn, sizeof(cn)), CURLE_OK);
	CHECK_INT(mtls_once(ts.base, dir, "other-ca", &st, cn, sizeof(cn)), CURLE_OK);
	/* a CA file that is not one: refused, the previous CAs stay */
	uint64_t failures = stats(&ts).tls_reload_failures;
	snprintf(path, sizeof(path), "%s/runner.crt", dir);
	REQUIRE(write_file(cas, path, NULL));
	t0 = now_ms();
	while (stats(&ts).tls_reload_failures == failures && now_ms() - t0 < 10000)
		usleep(50 * 1000);
	CHECK_INT(stats(&ts).tls_reload_failures, failures + 1);
	CHECK_INT(mtls_once(ts.base, dir, "runner", &st, cn, sizeof(cn)), CURLE_OK);
	CHECK_STR(cn, "ci-runner");
	server_stop(&ts);
	server_free(&ts);

	/* refused at start: a leaf in the CA file, an empty file, no TLS */
	o = default_opts();
	o.tls_cert_file = cert;
	o.tls_key_file = key;
	o.tls_client_ca_file = cas; /* holds runner.crt now */
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "not a CA certificate") != NULL);
	snprintf(path, sizeof(path), "%s/empty.pem", dir);
	FILE *f = fopen(path, "w");
	if (f)
		fclose(f);
	o.tls_client_ca_file = path;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no certificate in client CA file") != NULL);
	o = default_opts();
	o.tls_client_ca_file = cas;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "need TLS") != NULL);
out:
	for (size_t i = 0; i < ARRAY_SIZE(certs); i++)
		issued_free(&certs[i]);
	issued_free(&ca_a);
	issued_free(&ca_b);
	rm_tree(dir);
}

static void test_tls_new_errors(void)
{
	char dir[] = "/tmp/sbx-http-tls-bad-XXXXXX";
	char a_cert[300], a_key[300], b_cert[300], b_key[300], enc[300], junk[300], err[512];
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(a_cert, sizeof(a_cert), "%s/a.crt", dir);
	snprintf(a_key, sizeof(a_key), "%s/a.key", dir);
	snprintf(b_cert, sizeof(b_cert), "%s/b.crt", dir);
	snprintf(b_key, sizeof(b_key), "%s/b.key", dir);
	snprintf(enc, sizeof(enc), "%s/enc.key", dir);
	snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
	REQUIRE(write_pair(a_cert, a_key, "a", false, NULL));
	REQUIRE(write_pair(b_cert, b_key, "b", true, NULL));
	REQUIRE(write_pair(junk, enc, "c", false, "secret-pass"));
	FILE *f = fopen(junk, "w");
	REQUIRE(f != NULL);
	fputs("hello\n", f);
	fclose(f);

	struct http_server_opts o = default_opts();
	o.tls_cert_file = a_cert;
	o.tls_key_file = b_key;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "does not match") != NULL);
	CHECK(strstr(err, b_key) != NULL);
	o.tls_key_file = enc;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "encrypted") != NULL);
	CHECK(strstr(err, "secret-pass") == NULL);
	o.tls_key_file = junk;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no private key") != NULL);
	o.tls_cert_file = junk;
	o.tls_key_file = a_key;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no certificate") != NULL);
	/* the same file for both (certificate and key together) is fine */
	FILE *both = fopen(junk, "w");
	REQUIRE(both != NULL);
	char *data = NULL;
	size_t len = 0;
	REQUIRE(read_file_bounded(a_cert, 1 << 20, &data, &len) == 0);
	fwrite(data, 1, len, both);
	free(data);
	REQUIRE(read_file_bounded(a_key, 1 << 20, &data, &len) == 0);
	fwrite(data, 1, len, both);
	free(data);
	fclose(both);
	o.tls_cert_file = junk;
	o.tls_key_file = junk;
	struct http_server *srv = http_server_new(&o, handler, NULL, err, sizeof(err));
	CHECK(srv != NULL);
	http_server_reload_tls(srv); /* before run: harmless */
	http_server_free(srv);
	rm_tree(dir);
}

/* Run only the tests named on the command line (substring match), or all. */
static int g_argc;
static char **g_argv;
static bool wanted(const char *name)
{
	if (g_argc < 2)
		return true;
	for (int i = 1; i < g_argc; i++) {
		if (strstr(name, g_argv[i]))
			return true;
	}
	return false;
}
#define RUN_IF(fn)                                                            \
	do {                                                                  \
		if (wanted(#fn))                                              \
			RUN(fn);                                              \
	} while (0)

int main(int argc, char **argv)
{
	g_argc = argc;
	g_argv = argv;
	log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
	curl_global_init(CURL_GLOBAL_ALL);
	struct http_server_opts o = default_opts();
	if (!server_start(&S, &o)) {
		fprintf(stderr, "cannot start the server\n");
		return 1;
	}
	RUN_IF(test_round_trip);
	RUN_IF(test_keepalive);
	RUN_IF(test_request_ids);
	RUN_IF(test_error_shape);
	RUN_IF(test_query);
	RUN_IF(test_body_limit);
	RUN_IF(test_raw_rejections);
	RUN_IF(test_raw_protocol);
	RUN_IF(test_async);
	RUN_IF(test_async_disconnect);
	RUN_IF(test_concurrency);
	RUN_IF(test_big_response);
	RUN_IF(test_timeouts);
	RUN_IF(test_new_errors);
	RUN_IF(test_bind_addresses);
	RUN_IF(test_on_reply_hook);
	RUN_IF(test_stop);
	RUN_IF(test_tls);
	RUN_IF(test_tls_reload);
	RUN_IF(test_tls_new_errors);
	RUN_IF(test_tls_client_certs);
	int64_t ms = server_stop(&S);
	CHECK(ms < 5000);
	server_free(&S);
	curl_global_cleanup();
	return test_summary();
}
