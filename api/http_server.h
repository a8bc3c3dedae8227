/*
 * http_server: the HTTP/1.1 front end, on libwebsockets.
 *
 * One service thread runs the libwebsockets loop (http_server_run). For each
 * request whose headers and body have arrived (body bounded by max_body:
 * larger -> 413 before the handler runs; or, for requests opts.stream_body
 * picks, as soon as the headers have: see "Streaming"), the server calls
 * the handler on that thread. The handler must not block: it either replies at once (cache
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
 *
 * The handler runs on the service thread, which serves every connection: it
 * must not block (no Kubernetes call, no file or network I/O, no lock held for
 * long, no sleeping). Anything slow goes to a worker, which replies later.
 * No timeout runs while a request is with the handler: the API layer bounds
 * its own work.
 *
 * Details the contract above leaves open (tests/unit/test_http_server.c
 * checks each):
 * - Methods: GET, POST, PUT, PATCH, DELETE, HEAD and OPTIONS reach the
 *   handler under their own names. HEAD gets the reply's status and headers
 *   (Content-Length of the body it would have had) but no body, so it can be
 *   served like GET (the router does that). OPTIONS is the handler's to
 *   answer (e.g. 204 + Allow). CONNECT: 501 not_implemented. Methods
 *   libwebsockets does not know (TRACE, ...): its own 403, connection closed.
 * - Before the handler sees it, libwebsockets has percent-decoded the path,
 *   turned '+' into a space, collapsed "//" and resolved "." and ".."
 *   segments; query arguments are split on '&' and ';' and decoded, and an
 *   encoded '=' in a key becomes '_'. Repeated keys keep their order.
 * - Rejected by libwebsockets before our code runs: a malformed %-escape gets
 *   its own "403 Forbidden" (text/html, with Cache-Control and nosniff); a NUL
 *   (raw or %00), a request head over 8 KiB or more than about 100 query
 *   arguments + headers close the connection without a response (lws 4.1.6
 *   has no 431); h2c upgrades, and every upgrade when ws_protocols is NULL,
 *   are refused by closing (counted in "rejected"); WebSocket: see below.
 * - Answered by the server itself, never reaching the handler, always with
 *   "Connection: close" and the usual error shape; these codes are stable:
 *     400 bad_path            control character in the decoded path
 *     400 bad_query           control character in the query, > 64 parameters
 *     400 bad_request         invalid or repeated Content-Length, both
 *                             Content-Length and Transfer-Encoding, malformed
 *                             chunked framing
 *     408 request_timeout     body not complete within request_timeout_s
 *     413 body_too_large      Content-Length over max_body (before reading
 *                             the body), or a chunked body growing past it
 *     414 uri_too_long        query over 4 KiB or path over 4 KiB
 *     417 expectation_failed  an Expect other than 100-continue
 *     500 internal            out of memory; a reply body over 64 MiB
 *     501 not_implemented     CONNECT; a transfer coding other than chunked
 *     503 shutting_down       a request arriving while the server stops
 *   A request head that stalls (slowloris) is closed after request_timeout_s
 *   without a response.
 * - Bodies: Content-Length or chunked (decoded here; the connection closes
 *   after a chunked request). POST/PUT/PATCH without either have an empty
 *   body, and the connection closes after the reply. "Expect: 100-continue"
 *   gets its 100 when the body will be read.
 * - Keep-alive: HTTP/1.1 unless the client sent "Connection: close"; HTTP/1.0
 *   connections close after one reply. Pipelined requests are answered in
 *   order, one at a time.
 * - Every response has X-Request-Id, Cache-Control: no-store,
 *   X-Content-Type-Options: nosniff, X-Frame-Options: DENY,
 *   Content-Security-Policy: default-src 'none'; frame-ancestors 'none' and
 *   Referrer-Policy: no-referrer (lws's own 403s too), and Content-Length
 *   except 204 and 304, where HTTP forbids it (and any body is dropped, with
 *   an error log). Content-Type: application/json whenever there is a body.
 * - HTTPS: ALPN offers http/1.1 only.
 *
 * WebSocket (RFC 6455, server side; ws_protocols set; over HTTPS too: wss):
 * - A request with "Upgrade: websocket" is checked by the server first, which
 *   answers these itself (error shape, Connection: close, handler not called):
 *     400 bad_request       not a GET, a body, no "Connection: Upgrade" (or
 *                           that header over 126 bytes), no Host, no or a
 *                           too long (> 64) Sec-WebSocket-Key, a malformed
 *                           Sec-WebSocket-Protocol list, or a name in it over
 *                           63 bytes before the first supported one
 *     426 upgrade_required  Sec-WebSocket-Version other than 13 (with
 *                           "Sec-WebSocket-Version: 13")
 *     400 subprotocol_header_too_long  Sec-WebSocket-Protocol over 126 bytes
 *     400 unsupported_subprotocol      none of ws_protocols offered
 *   plus everything a plain request can get (503 while stopping, 400
 *   bad_path, 414, ...). The limits are libwebsockets 4.1.6's (it copies
 *   those headers into 128- and 64-byte buffers and would close the
 *   connection); so the browser convention of a bearer token offered as the
 *   subprotocol "base64url.bearer.authorization.k8s.io.<token>" only gets
 *   through for tokens short enough to keep the whole header within 126
 *   bytes, i.e. in practice not: clients must send Authorization. Such an
 *   entry is never chosen.
 * - The subprotocol is the first name in the client's list that is one of
 *   ws_protocols: the client's order decides (as in kube-apiserver; lws
 *   4.1.6 picks it so and cannot be told otherwise). kubectl lists v5 first.
 * - Then the request goes to the handler like any other (method "GET", same
 *   accessors; http_request_is_websocket true, http_request_ws_protocol the
 *   subprotocol). The handler must answer before it returns, on the service
 *   thread: http_accept_websocket (101 with Sec-WebSocket-Protocol and
 *   X-Request-Id; on_reply sees 101), or any http_reply_*, which is written
 *   as an ordinary HTTP response, after which the connection closes. A
 *   handler that returns without either (or replies from another thread)
 *   gets the connection closed without a response; its late reply is
 *   dropped as for a client that left.
 * - After acceptance, callbacks run on the service thread: on_open once the
 *   101 is written, on_message for data, on_send_ready, and on_close exactly
 *   once and last, with: the peer's close code when the peer closed first
 *   (1005 if it gave none), ours when we did (http_ws_close's, 1009 for a
 *   message over ws_max_message, 1001 when the server stops), 1006 when the
 *   connection was lost. If the handshake fails after acceptance (not
 *   expected: it was checked), on_close(1006) comes without on_open.
 *   http_ws_send, http_ws_pause_rx, http_ws_close and http_ws_release may be
 *   called from any thread (also from the callbacks) until the owner's
 *   http_ws_release; calls after on_close are harmless (-EPIPE / ignored).
 *   Other threads hand their work to the service thread (locked queue and
 *   lws_cancel_service); data is written only from the service loop, in
 *   frames of at most 16 KiB (a long message goes out fragmented).
 * - Received messages: pieces of at most 4 KiB (lws rx buffer); over
 *   ws_max_message in total (default 1 MiB) -> close 1009 (on_message may
 *   have had the first pieces, never a final one). Text is not checked for
 *   UTF-8. Ping/pong and close frames are handled by the server.
 * - Send queue per WebSocket: see http_ws_send. It holds at most 4 x
 *   ws_send_high_water bytes, or one message when that is bigger.
 * - Pings: one after ws_ping_s (default 30) without a pong; no pong within
 *   another ws_ping_s closes the connection (1006). No other idle timeout.
 * - Stop: http_server_run asks every WebSocket to close (1001, after its
 *   queued data), gives them the 2 s drain, then closes the rest; on_close
 *   has run for every one of them when run returns. Release every
 *   WebSocket before http_server_free.
 * - Memory: about 5.8 KiB of heap per idle plain WebSocket on the server
 *   side (lws's connection and ws state, its 4 KiB rx buffer, our struct
 *   conn and struct http_ws; measured by tests/unit/test_http_ws.c over 200
 *   sockets); TLS adds OpenSSL's per-connection state. Kernel socket
 *   buffers are not counted.
 *
 * TLS (tls_cert_file and tls_key_file both set: the port speaks HTTPS only):
 * - TLS 1.2 and 1.3 only. TLS 1.2 suites: ECDHE key exchange with AES-GCM or
 *   ChaCha20-Poly1305, in the server's order of preference; TLS 1.3 suites
 *   are OpenSSL's defaults (all AEAD). No compression, no renegotiation.
 *   Older clients fail the handshake (protocol_version or handshake_failure
 *   alert).
 * - HTTPS responses also carry Strict-Transport-Security: max-age=31536000.
 * - The certificate file holds the certificate followed by its chain (PEM);
 *   the key file the matching unencrypted private key (PEM). Both are read at
 *   http_server_new, which fails with a reason when they cannot be read or do
 *   not match.
 * - Reload: while the server runs, the service thread looks at both files
 *   about once a second (stat: device, inode, size, mtime, ctime; it follows
 *   symlinks, so a Kubernetes Secret update, which swaps a symlink, counts as
 *   a change). Once a change has held for one look (so that a writer that
 *   replaces the two files one after the other is seen whole), the pair is
 *   read and validated (parses, key matches the certificate, acceptable to
 *   OpenSSL's security level). A valid pair serves every handshake from then
 *   on; connections already open keep theirs. An invalid pair is logged once
 *   (error, naming the files) and the previous pair stays in use until the
 *   files change again or http_server_reload_tls is called.
 * - Plain HTTP sent to the HTTPS port gets no HTTP response: the TLS
 *   handshake fails and the connection is closed at once (a request that
 *   starts "GET ", "POST " and so on gets no bytes at all, usually a TCP
 *   reset as the rest of the request is unread; other bytes may get a TLS
 *   alert). Nothing reaches the handler. A client that connects and sends
 *   nothing, or less than a TLS record header, is closed after
 *   request_timeout_s.
 */
#ifndef SBX_HTTP_SERVER_H
#define SBX_HTTP_SERVER_H

#define HTTP_CLIENT_CN_MAX 64 /* bytes of a client certificate CN we report */

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
	const char *tls_cert_file; /* both set: HTTPS only (see TLS above); */
	const char *tls_key_file;  /* the server keeps copies of the paths */
	/* With TLS, optional: a PEM file of CA certificates. Every handshake
	 * then asks for a client certificate; a client may send none, but one
	 * it sends must verify against these CAs (else the handshake fails).
	 * Reloaded with the pair. http_request_client_cert tells the CN. */
	const char *tls_client_ca_file;
	/* Optional: called once for every request the handler received, on the
	 * thread that replies, just before the reply is handed over (also when
	 * the client has gone). For audit records: the request and its context
	 * (http_request_set_context) are still valid during the call. ud is the
	 * handler's ud. Must not block and must not reply. */
	void (*on_reply)(void *ud, struct http_request *req, int status);
	/* WebSocket (see "WebSocket" above). NULL-terminated list of the
	 * subprotocols the server accepts, most preferred first (e.g.
	 * "v5.channel.k8s.io", "v4.channel.k8s.io"); the server keeps copies.
	 * NULL: upgrade requests are refused by closing. */
	const char *const *ws_protocols;
	size_t ws_max_message;     /* largest client message; default 1 MiB */
	size_t ws_send_high_water; /* http_ws_send queue; default 256 KiB */
	int ws_ping_s;             /* ping interval; default 30 */
	/* Streamed request bodies (see "Streaming" below). Optional: called on
	 * the service thread once the head of a request with a body is
	 * complete (method, path, query and headers readable); true: the
	 * handler gets the request at once, before any body byte is read, and
	 * reads the body itself (http_request_read_body). max_body does not
	 * apply to such a request. ud is the handler's ud. */
	bool (*stream_body)(void *ud, const struct http_request *req);
	size_t stream_high_water;  /* http_stream_write queue; default 128 KiB */
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
 * listening sockets, finish writing replies already queued, and return.
 * While stopping, new connections are refused and requests on open ones get
 * 503 shutting_down; replies still being written get at most 2 s; then every
 * connection is closed, and replies to requests still with the handler are
 * dropped when they come. Returns 0, or -1 when the loop failed (or run was
 * called a second time: a server runs once). */
int http_server_run(struct http_server *srv, const volatile int *stop);

/* Wake the loop from any thread (e.g. after setting *stop). Harmless before
 * run and after it returned. */
void http_server_wake(struct http_server *srv);

/* The bound port. */
int http_server_port(const struct http_server *srv);

/* Ask the service thread to read the TLS certificate and key files again now,
 * changed or not (for SIGHUP); the outcome is logged, and an invalid pair
 * keeps the current one. Any thread, but not a signal handler (it takes a
 * lock): the handler sets a flag, a thread calls this. Returns at once; the
 * loop acts within about 100 ms. A no-op without TLS, and harmless before
 * run (the files are checked when run starts) and after it returned. */
void http_server_reload_tls(struct http_server *srv);

/* Free a server that is not running. NULL is a no-op. Every request handed to
 * the handler must have had its reply call first (after run returned, a reply
 * only frees its request): join the workers that hold requests, then free. */
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
/* A request header by name (case-insensitive), or NULL. Captured headers:
 * authorization, content-type, x-request-id, x-forwarded-for, accept, origin,
 * sec-websocket-protocol, upgrade, connection; any other name gives NULL. A repeated header comes joined with ','.
 * x-request-id is the raw header as sent, valid or not: use http_request_id. */
const char *http_request_header(const struct http_request *req, const char *name);
/* The body (NUL-terminated; len excludes the NUL); empty string when none. */
const char *http_request_body(const struct http_request *req, size_t *len);
const char *http_request_id(const struct http_request *req);
/* Peer address as text ("127.0.0.1", "::1"). */
const char *http_request_peer(const struct http_request *req);

/* The subject CN of the TLS client certificate of the request's connection,
 * when the server asks for them (tls_client_ca_file), one was sent, it
 * verified, and its subject has exactly one CN of printable ASCII (no
 * space, at most HTTP_CLIENT_CN_MAX bytes); "?" for a verified certificate
 * whose CN is none of that; NULL otherwise. */
const char *http_request_client_cert(const struct http_request *req);
/* Monotonic ms (now_ms clock) when the request head was complete:
 * libwebsockets does not report when its first byte came. */
int64_t http_request_start_ms(const struct http_request *req);
/* A pointer the handler may attach to the request (e.g. the authenticated
 * principal, for on_reply); NULL until set. Owned by the handler. */
void http_request_set_context(struct http_request *req, void *ctx);
void *http_request_context(const struct http_request *req);

/* ---- replies: exactly one per request, from any thread ---- */

struct http_header {
	const char *name;   /* e.g. "Allow", "Retry-After", "Location" */
	const char *value;
};

/* Replies: the extra headers are copied; names must be tokens and values free
 * of CR/LF, and the server's own headers (Content-Length, Content-Type,
 * Connection, X-Request-Id, Cache-Control, X-Content-Type-Options,
 * Transfer-Encoding, Keep-Alive, Upgrade, Strict-Transport-Security,
 * X-Frame-Options, Content-Security-Policy, Referrer-Policy) cannot be
 * overridden: such a header
 * is dropped with an error log. A status outside 200-599 becomes 500. A
 * second reply to the same request is logged and ignored until the first has
 * been written; after that the request is gone, so it is a use-after-free:
 * don't. */

/* JSON reply; body is taken (freed by the server, also on error), NULL for
 * no body. */
void http_reply_json(struct http_request *req, int status, cJSON *body,
		     const struct http_header *extra, size_t nextra);
/* Error reply in the one error shape; code is a stable machine-readable
 * string ("not_found", "invalid_json", ...). The message is formatted,
 * truncated to 511 bytes, JSON-escaped, and invalid UTF-8 in it becomes
 * U+FFFD, so client input may be quoted in it. */
void http_reply_error(struct http_request *req, int status, const char *code,
		      const struct http_header *extra, size_t nextra,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* A reply whose body is len bytes of data (copied) with the given
 * Content-Type (a constant such as "application/octet-stream"; anything
 * over 63 bytes or with CR/LF becomes that). Same rules as the others:
 * HEAD gets the headers only, 204/304 no body. */
void http_reply_bytes(struct http_request *req, int status, const char *content_type,
		      const void *data, size_t len, const struct http_header *extra,
		      size_t nextra);
/* A reply with no body (e.g. 204). */
void http_reply_empty(struct http_request *req, int status,
		      const struct http_header *extra, size_t nextra);

/* ---- Streaming ----
 *
 * Streamed responses (http_reply_stream_begin): the reply is the status and
 * headers, with a Content-Length given up front, then body bytes the caller
 * writes as they come (http_stream_write, any thread, copied). The server
 * holds at most about 4 x stream_high_water of them per response: a write
 * that takes the queue over stream_high_water returns -EAGAIN (queued: wait
 * for on_drain before the next). The body is written in pieces of at most
 * 64 KiB; a response with no progress (neither the client reading nor the
 * caller writing) for request_timeout_s is closed (on_close(false)).
 * http_stream_end(s, true) once Content-Length bytes have been written
 * completes the response (keep-alive goes on); http_stream_end(s, false),
 * or true with fewer bytes, aborts it: the connection is closed without
 * completing the body, so the client sees a short body. on_reply runs once,
 * when the stream begins, with its status. HEAD, 204 and 304: the head only
 * (HEAD with the Content-Length given); writes then return -EPIPE.
 *
 * Streamed request bodies (opts.stream_body said true): the handler is
 * called as soon as the head is complete, with an empty http_request_body,
 * and nothing of the body has been read (no "100 Continue" sent either), so
 * whatever the handler checks happens before the client's bytes are
 * consumed. It may then call http_request_read_body to receive the body as
 * it arrives (Content-Length or chunked, decoded), or reply without reading
 * it. Such a request always ends with "Connection: close". When the reply
 * goes out while body bytes are still unread, the server stops writing
 * after the reply (FIN) and reads and drops what the client still sends for
 * up to 5 s before closing, so that a client writing its body first still
 * gets to read the answer. Body timeout: request_timeout_s without a byte
 * while the server wants bytes (not while the reader is paused). */

/* The body length the client announced: Content-Length, 0 when there is no
 * body, -1 for a chunked body (length unknown). */
int64_t http_request_content_length(const struct http_request *req);
/* Whether req's body is streamed (opts.stream_body said so and there is a
 * body): read it with http_request_read_body; http_request_body is empty. */
bool http_request_body_streamed(const struct http_request *req);

struct http_body_ops {
	/* Body bytes (service thread). Return how many were taken (copy
	 * them); fewer than len pauses the body: the rest is kept by the
	 * server and given again after http_request_resume_body. Optional
	 * (NULL: every byte dropped). */
	size_t (*on_data)(void *ud, const void *data, size_t len);
	/* Exactly once, last (service thread): 0 the body is complete (every
	 * byte was taken); -ETIMEDOUT no byte within request_timeout_s;
	 * -EPROTO malformed chunked framing; -ECONNRESET the client closed the
	 * connection; -ECANCELED the request was answered before its body
	 * ended; -ENOMEM. After an error the request still needs its reply
	 * (unless it was given), and the connection closes after it. */
	void (*on_end)(void *ud, int err);
};

/* Start receiving the body of a request whose body is streamed (stream_body
 * said true); ops is copied. Any thread, once, before the reply; the
 * callbacks never run inside an http_* call (this one included), so the
 * caller may hold its own lock. "100 Continue" is sent now when the client
 * asked for it. Returns 0 (on_end will come), -EINVAL (not a streamed
 * request, ops without on_end, or a second call), -EPIPE (the client has
 * gone: no callback; the request still needs its reply). */
int http_request_read_body(struct http_request *req, const struct http_body_ops *ops,
			   void *ud);
/* Resume a body paused by a short on_data; any thread, until on_end (not
 * after: the request may be gone). Harmless when not paused (a resume that
 * crosses a short on_data wins); calls nothing back from inside. */
void http_request_resume_body(struct http_request *req);

struct http_stream;

struct http_stream_ops {
	/* Once after http_stream_write returned -EAGAIN or -ENOBUFS, when the
	 * queue has drained below a quarter of stream_high_water. */
	void (*on_drain)(void *ud);
	/* Exactly once, last, on the service thread (or the thread of
	 * http_server_run/http_server_free once the loop has stopped), never
	 * from inside an http_* call: completed true when the whole response
	 * was written, false when it was aborted or the connection was lost
	 * (client gone, timeout, server stopping). */
	void (*on_close)(void *ud, bool completed);
};

/* Begin a streamed reply to req (it is req's one reply; req must not be
 * used after this call). content_type as for http_reply_bytes. ops is
 * copied; on_close is required. Returns the stream (the caller must call
 * http_stream_end once), or NULL when there is nothing to stream to: the
 * client had gone (on_reply has run, nothing else happens), out of memory
 * (500 answered), or ops without on_close (500 answered). */
struct http_stream *http_reply_stream_begin(struct http_request *req, int status,
					    const char *content_type,
					    uint64_t content_length,
					    const struct http_header *extra, size_t nextra,
					    const struct http_stream_ops *ops, void *ud);
/* Queue body bytes (copied); any thread. 0: queued. -EAGAIN: queued, but the
 * queue is above stream_high_water: wait for on_drain. -ENOBUFS: not queued:
 * the queue is not empty and this would take it past 4 x stream_high_water.
 * -EMSGSIZE: more than Content-Length in total, not queued. -EPIPE: no body
 * is wanted (HEAD, 204, 304), the stream was ended, or the connection is
 * gone. -ENOMEM. */
int http_stream_write(struct http_stream *s, const void *data, size_t len);
/* End the stream (once; any thread; the caller's reference goes): ok and
 * every byte written: the response completes after the queued bytes;
 * otherwise it is aborted (connection closed). */
void http_stream_end(struct http_stream *s, bool ok);

/* ---- WebSocket (see "WebSocket" above) ---- */

struct http_ws;

/* Whether req is a WebSocket upgrade request (GET with Upgrade: websocket);
 * only such requests reach the handler with this true. */
bool http_request_is_websocket(const struct http_request *req);
/* The subprotocol the upgrade would get (one of opts.ws_protocols), or NULL
 * for an ordinary request. */
const char *http_request_ws_protocol(const struct http_request *req);

struct http_ws_ops {
	/* The handshake is done (the 101 has been written). May not come: see
	 * on_close. */
	void (*on_open)(void *ud, struct http_ws *ws);
	/* Message data as it arrives: first/final mark the first and the last
	 * piece of one message (both for a small one); binary is the opcode of
	 * the message. Pieces are at most about 4 KiB; a message's total is
	 * bounded by ws_max_message. */
	void (*on_message)(void *ud, const void *data, size_t len, bool first,
			   bool final, bool binary);
	/* Once after http_ws_send returned -EAGAIN or -ENOBUFS, when the send
	 * queue has drained below a quarter of ws_send_high_water. */
	void (*on_send_ready)(void *ud);
	/* Exactly once, last; after it the server touches nothing of ud. */
	void (*on_close)(void *ud, int code);
};

/* Accept the upgrade of req. Only from inside the handler call, on the
 * service thread, for a request with http_request_is_websocket: this is the
 * request's reply (on_reply sees status 101; the request stays readable
 * until the handler returns). ops is copied. Returns the WebSocket, on which
 * the caller holds a reference (http_ws_release), or NULL when called
 * otherwise (logged; nothing happened, the request still needs its reply) or
 * out of memory (the server then answers 500 itself). */
struct http_ws *http_accept_websocket(struct http_request *req,
				      const struct http_ws_ops *ops, void *ud);
/* Queue one whole message (copied); any thread. 0: queued. -EAGAIN: queued,
 * but the queue is now above ws_send_high_water: stop sending until
 * on_send_ready. -ENOBUFS: not queued: the queue is not empty and this
 * message would take it past 4 x ws_send_high_water (a sender that ignores
 * -EAGAIN). -EMSGSIZE: len over 64 MiB, not queued. -EPIPE: closed, or
 * closing (http_ws_close was called, or the connection is gone). */
int http_ws_send(struct http_ws *ws, const void *data, size_t len, bool binary);
/* Stop (true) or resume (false) reading from the client; any thread. */
void http_ws_pause_rx(struct http_ws *ws, bool pause);
/* Close: the queued messages are sent, then a close frame with code
 * (1000-4999; anything else becomes 1000) and reason (truncated to 123
 * bytes); any thread. Later calls are ignored. */
void http_ws_close(struct http_ws *ws, int code, const char *reason);
/* Drop the owner's reference; any thread, once. It does not close. The
 * memory goes when both this and on_close have happened. */
void http_ws_release(struct http_ws *ws);

/* ---- counters ---- */
struct http_server_stats {
	uint64_t connections;      /* accepted */
	uint64_t requests;         /* complete requests handed to the handler */
	uint64_t replies;          /* replies written (the handler's and the server's) */
	uint64_t dropped_replies;  /* replies whose client had gone */
	uint64_t rejected;         /* answered by the server itself (413, 400, 408...),
				      and refused upgrades */
	uint64_t tls_reloads;      /* certificate pairs taken into use after start */
	uint64_t tls_reload_failures; /* pairs read after a change (or a reload
					 request) and refused */
	uint64_t ws_accepted;      /* http_accept_websocket calls that succeeded */
	uint64_t ws_open;          /* WebSockets open now (on_open done, on_close not) */
	uint64_t streams;          /* streamed replies begun */
	uint64_t streams_aborted;  /* of them, closed before their end */
};
/* Any thread; counters are read one by one, not as a snapshot. */
void http_server_get_stats(struct http_server *srv, struct http_server_stats *out);

#endif
