/*
 * http_server: the HTTP/1.1 front end, on libwebsockets.
 *
 * One service thread runs the libwebsockets loop (http_server_run). For each
 * request whose headers and body have arrived (body bounded by max_body:
 * larger -> 413 before the handler runs), the server calls the handler on
 * that thread. The handler must not block: it either replies at once (cache
 * reads) or keeps the request and replies later from any thread (writes that
 * go to the Kubernetes API server); a reply from another thread is queued and
 * the loop is woken with lws_cancel_service().
 *
 * Every request gets a request id: a valid incoming X-Request-Id (1-64 chars of
 * [A-Za-z0-9._-]) or a generated one; every response carries it in
 * X-Request-Id, and error bodies repeat it:
 *   {"error":{"code":"not_found","message":"...","request_id":"..."}}
 *
 * Keep-alive: HTTP/1.1 connections stay open between requests (Content-Length
 * on every response). Slow clients: a connection that does not complete its
 * request within request_timeout_s is closed; an idle keep-alive connection is
 * closed after idle_timeout_s.
 *
 * Lifetime of a request: owned by the server; valid from the handler call until
 * the reply has been queued (http_reply_*). If the client disconnects first,
 * the reply is dropped silently and the request freed then. Exactly one reply
 * per request.
 */
#ifndef SBX_HTTP_SERVER_H
#define SBX_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct http_server;
struct http_request;

struct http_server_opts {
	const char *bind_address;  /* "127.0.0.1", "0.0.0.0", "::"; NULL: all */
	int port;                  /* 0: pick a free port (http_server_port tells) */
	size_t max_body;           /* request body limit; default 1 MiB */
	int request_timeout_s;     /* default 30 */
	int idle_timeout_s;        /* keep-alive idle; default 60 */
	const char *tls_cert_file; /* both set: HTTPS only (hardened later) */
	const char *tls_key_file;
};

/* Called on the service thread once per complete request. */
typedef void (*http_handler_fn)(void *ud, struct http_request *req);

/* Create the server and bind its port (so that http_server_port is known
 * before run). NULL and a reason in err on failure. */
struct http_server *http_server_new(const struct http_server_opts *opts,
				    http_handler_fn handler, void *ud, char *err,
				    size_t errlen);

/* Run the loop on the calling thread until *stop becomes non-zero (checked at
 * least every 100 ms; http_server_wake() makes it prompt), then close
 * listening sockets, finish writing replies already queued, and return. */
int http_server_run(struct http_server *srv, const volatile int *stop);

/* Wake the loop from any thread (e.g. after setting *stop). */
void http_server_wake(struct http_server *srv);

/* The bound port. */
int http_server_port(const struct http_server *srv);

/* Free a server that is not running. NULL is a no-op. */
void http_server_free(struct http_server *srv);

/* ---- request accessors: valid until the reply ---- */

const char *http_request_method(const struct http_request *req);  /* "GET" */
const char *http_request_path(const struct http_request *req);    /* decoded path, no query */
/* First value of a query parameter (percent-decoded), or NULL. */
const char *http_request_query(const struct http_request *req, const char *key);
/* All values of a repeated query parameter, in order; returns the count
 * (which may exceed max: only max are stored in out). */
size_t http_request_query_all(const struct http_request *req, const char *key,
			      const char **out, size_t max);
/* Whether the query string holds any key other than those in allowed (a
 * NULL-terminated list); *unknown gets the first such key. */
bool http_request_query_unknown(const struct http_request *req,
				const char *const *allowed, const char **unknown);
/* A request header by lowercase name, or NULL. Captured headers:
 * authorization, content-type, x-request-id, x-forwarded-for, accept, origin. */
const char *http_request_header(const struct http_request *req, const char *name);
/* The body (NUL-terminated; len excludes the NUL); empty string when none. */
const char *http_request_body(const struct http_request *req, size_t *len);
const char *http_request_id(const struct http_request *req);
/* Peer address as text ("127.0.0.1", "::1"). */
const char *http_request_peer(const struct http_request *req);
/* Monotonic ms when the request line arrived. */
int64_t http_request_start_ms(const struct http_request *req);

/* ---- replies: exactly one per request, from any thread ---- */

struct http_header {
	const char *name;   /* e.g. "Allow", "Retry-After", "Location" */
	const char *value;
};

/* JSON reply; body is taken (freed by the server), NULL for no body. */
void http_reply_json(struct http_request *req, int status, cJSON *body,
		     const struct http_header *extra, size_t nextra);
/* Error reply in the one error shape; code is a stable machine-readable
 * string ("not_found", "invalid_json", ...). */
void http_reply_error(struct http_request *req, int status, const char *code,
		      const struct http_header *extra, size_t nextra,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* A reply with no body (e.g. 204). */
void http_reply_empty(struct http_request *req, int status,
		      const struct http_header *extra, size_t nextra);

/* ---- counters ---- */
struct http_server_stats {
	uint64_t connections;      /* accepted */
	uint64_t requests;         /* complete requests handed to the handler */
	uint64_t replies;          /* replies written */
	uint64_t dropped_replies;  /* replies whose client had gone */
	uint64_t rejected;         /* answered by the server itself (413, 400, 408...) */
};
void http_server_get_stats(struct http_server *srv, struct http_server_stats *out);

#endif
