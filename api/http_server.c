/*
 * http_server: HTTP/1.1 on libwebsockets (see http_server.h for the contract).
 *
 * Threads. Everything here runs on the service thread except http_reply_*,
 * http_server_wake and http_server_get_stats. A reply made on another thread
 * is built there (JSON printed, headers formatted), queued under srv->mu, and
 * the loop is woken with lws_cancel_service(); LWS_CALLBACK_EVENT_WAIT_CANCELLED
 * moves queued replies onto their connections and asks for WRITEABLE. A reply
 * made on the service thread (the usual, synchronous case) skips the queue.
 * Bytes are written only from WRITEABLE callbacks, at most HTTP_WRITE_PIECE at
 * a time.
 *
 * Ownership. A connection (struct conn) owns at most one request. While the
 * request is away (stage HANDLER, REPLYING or QUEUED) the connection may
 * close: it then marks the request orphaned and forgets it, and whoever holds
 * it next (the replier, or the queue drain) frees it and counts a dropped
 * reply. Stage and orphan change only under srv->mu, so no thread ever
 * touches a freed request or connection. Requests are not recycled: a fresh
 * one per request means a stray second reply can never land on a later
 * request of the same connection.
 *
 * Per-connection state lives on the heap, found with lws_get_opaque_user_data:
 * libwebsockets 4.1.6 drops and re-binds the protocol at the end of every
 * keep-alive transaction, which frees and re-zeroes the per-session data.
 *
 * What libwebsockets 4.1.6 does before a request reaches us (checked by
 * tests/unit/test_http_server.c):
 * - the path arrives percent-decoded, with "+" turned into a space, repeated
 *   slashes collapsed and "." / ".." segments resolved; query arguments are
 *   split on '&' and ';' and decoded, and an encoded '=' in a key becomes '_';
 * - a malformed %-escape gets lws's own "403 Forbidden" (text/html) and the
 *   connection is closed; a NUL byte, raw or %00, closes the connection with
 *   no response; so does a request head larger than HTTP_MAX_HEADER_DATA or
 *   one with more fragments (query args + headers) than lws has slots for
 *   (about 100): lws has no 431;
 *   other decoded control bytes reach us and we answer 400 bad_path/bad_query;
 * - methods lws does not know (TRACE, FOO, PRI) get lws's 403; CONNECT falls
 *   back to a raw socket, where we answer 501;
 * - POST, PUT and PATCH without Content-Length, and chunked bodies, are
 *   delivered as "body until the connection closes": we decode chunked
 *   ourselves, treat a missing length as an empty body, and close the
 *   connection after such a request, since lws cannot find the next one;
 * - Expect: 100-continue is not answered by lws, so we send the 100 ourselves.
 *
 * TLS. lws creates the vhost's SSL_CTX and loads the certificate files once;
 * LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS hands us that SSL_CTX
 * before the first connection, and we harden it there (versions, suites,
 * options: lws 4.1.6 ignores a cipher list OpenSSL refuses, we check) and
 * install a certificate callback. That callback gives every full handshake
 * the pair in srv->tls_pair, which the service thread replaces when the files
 * change. lws_tls_cert_updated() is not used: it loads the new files into the
 * live SSL_CTX one after the other and checks the key last, so a bad pair
 * leaves the context half-replaced (and it reports no failure), and a key of
 * another type (RSA after ECDSA) would sit next to the old certificate rather
 * than replace it. With the callback, each handshake starts from no
 * certificate (SSL_certs_clear) and gets exactly the current pair; an SSL
 * holds references to what it was given, so replacing the pair never touches
 * a connection in progress. The files are read on the service thread: a stat
 * of two files once a second, and two small reads when they change.
 */
#include "http_server.h"

#include "buf.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- limits ---- */

#define HTTP_MAX_HEADER_DATA 8192    /* request line + headers (lws ah size) */
#define HTTP_MAX_HEADER_POOL 4096    /* request heads held at once (lws ah pool) */
#define HTTP_MAX_QUERY_PARAMS 64     /* more: 400 bad_query */
#define HTTP_MAX_QUERY_BYTES 4096    /* more: 414 uri_too_long */
#define HTTP_MAX_PATH_BYTES 4096     /* more: 414 uri_too_long */
#define HTTP_REQUEST_ID_MAX 64
#define HTTP_MAX_RESPONSE (64u << 20) /* a bigger body is a 500 */
#define HTTP_MAX_EXTRA_HEADERS 4096  /* total bytes of caller headers */
#define HTTP_WRITE_PIECE (64u << 10) /* bytes per WRITEABLE */
#define HTTP_JSON_GUESS 1024         /* first try at printing JSON in place */
#define HTTP_CHUNK_LINE_MAX 1024     /* chunk-size line with extensions */
#define HTTP_CHUNK_TRAILER_MAX 4096
#define HTTP_TICK_MS 100             /* *stop is checked this often */
#define HTTP_DRAIN_MS 2000           /* at stop, time left to finish writes */
#define HTTP_HEAD_FIXED 320          /* status line + our own headers */
#define HTTP_TLS_CHECK_MS 1000       /* certificate files are looked at this often */
#define HTTP_TLS_FILE_MAX (1u << 20) /* certificate chain or key file */
#define HTTP_WS_RX_BUF 4096          /* lws rx buffer per WebSocket (rx_buffer_size) */
#define HTTP_WS_PIECE (16u << 10)    /* bytes per WebSocket frame written */
#define HTTP_WS_PIECES 8             /* frames per WRITEABLE, unless choked */
#define HTTP_WS_HDR_MAX 126          /* lws copies Connection and
					Sec-WebSocket-Protocol into char[128] */
#define HTTP_WS_KEY_MAX 64
#define HTTP_WS_NAME_MAX 63          /* lws: subprotocol names into char[64] */
#define HTTP_WS_BEARER "base64url.bearer.authorization.k8s.io."
#define HTTP_STREAM_HIGH_WATER (128u << 10) /* default http_stream_write bound */
#define HTTP_BODY_STASH_MAX (1u << 20) /* streamed body bytes held for a paused reader */
#define HTTP_BODY_PIECE (64u << 10)  /* streamed body bytes per on_data */
#define HTTP_LINGER_S 5              /* reading and dropping an unread body after the reply */

/* TLS 1.2: forward secrecy and AEAD only; Mozilla's "intermediate" list
 * without its DHE suites, in its order */
#define HTTP_TLS12_CIPHERS                                                    \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"          \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* TLS 1.3: OpenSSL's defaults, spelled out so that a system-wide
 * configuration cannot add others (TLS_AES_128_CCM_8_SHA256) */
#define HTTP_TLS13_SUITES                                                     \
	"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

/* on every response (JSON API: nothing here is ever a page to frame) */
#define SECURITY_HEADERS                                                      \
	"X-Frame-Options: DENY\r\n"                                            \
	"Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n" \
	"Referrer-Policy: no-referrer\r\n"
/* on HTTPS responses only (RFC 6797 8.1: ignored over plain HTTP anyway) */
#define HSTS_HEADER "Strict-Transport-Security: max-age=31536000\r\n"

#define XRID "x-request-id:" /* how lws names it: lowercase, with the colon */
#define XRID_LEN 13

#define container_of(p, type, member)                                         \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ---- types ---- */

enum hdr_idx {
	HDR_AUTHORIZATION,
	HDR_CONTENT_TYPE,
	HDR_X_REQUEST_ID,
	HDR_X_FORWARDED_FOR,
	HDR_ACCEPT,
	HDR_ORIGIN,
	HDR_WS_PROTOCOL,
	HDR_UPGRADE,
	HDR_CONNECTION,
	HDR_COUNT
};

static const char *const hdr_names[HDR_COUNT] = {
	"authorization", "content-type", "x-request-id",
	"x-forwarded-for", "accept", "origin",
	"sec-websocket-protocol", "upgrade", "connection",
};

/* lws token per captured header; -1: the custom header x-request-id */
static const int hdr_tokens[HDR_COUNT] = {
	WSI_TOKEN_HTTP_AUTHORIZATION, WSI_TOKEN_HTTP_CONTENT_TYPE, -1,
	WSI_TOKEN_X_FORWARDED_FOR, WSI_TOKEN_HTTP_ACCEPT, WSI_TOKEN_ORIGIN,
	WSI_TOKEN_PROTOCOL, WSI_TOKEN_UPGRADE, WSI_TOKEN_CONNECTION,
};

enum req_stage {
	STAGE_CONN,     /* owned by its connection: being read, or written */
	STAGE_HANDLER,  /* with the handler: one reply expected */
	STAGE_REPLYING, /* a reply is being built */
	STAGE_QUEUED,   /* built, waiting in srv->queue for the service thread */
};

struct query_param {
	const char *key;
	const char *value;
};

/* A streamed request body (stream_body): where it is. */
enum body_mode {
	BODY_BUFFERED, /* the usual: read into req->body before the handler */
	BODY_WAIT,     /* streamed; the handler has not asked for it yet */
	BODY_READING,  /* streamed; http_request_read_body was called */
	BODY_DONE,     /* streamed; on_end has been called (or is owed) */
};

/* A piece of a streamed reply; buf holds LWS_PRE + len bytes. */
struct stream_piece {
	struct stream_piece *next;
	size_t len, pos;
	unsigned char buf[];
};

struct http_stream {
	struct http_server *srv;
	struct http_stream_ops ops;
	void *ud;
	/* srv->mu */
	int refs;             /* the owner's (until end), the server's (until on_close) */
	bool ended, end_ok;   /* http_stream_end */
	bool closed;          /* on_close done or owed: no more writes */
	bool no_body;         /* HEAD, 204, 304 */
	bool want_drain;
	bool waiting;         /* the service thread found the queue empty */
	bool finishing;       /* on_close called or owed (srv->stream_notify) */
	bool notify_completed;
	uint64_t accept_left; /* bytes the writer may still queue */
	uint64_t write_left;  /* bytes still to write to the client */
	struct stream_piece *q_head, *q_tail;
	size_t q_bytes;
	struct http_stream *notify_next;
};

struct http_request {
	struct http_server *srv;
	struct conn *conn;         /* NULL once orphaned */
	struct http_request *next; /* srv->queue */
	enum req_stage stage;      /* srv->mu */
	bool orphan;               /* srv->mu: the connection has gone */

	const char *method;
	const char *path;
	struct query_param query[HTTP_MAX_QUERY_PARAMS];
	size_t nquery;
	const char *hdr[HDR_COUNT];
	char id[HTTP_REQUEST_ID_MAX + 1];
	char peer[64];
	char client_cn[HTTP_CLIENT_CN_MAX + 1];
	int64_t start_ms;
	bool head;  /* HEAD: the reply has no body */
	bool close; /* close the connection after the reply */
	bool ws_upgrade;         /* a WebSocket upgrade request */
	const char *ws_protocol; /* the subprotocol it would get (srv's copy) */
	void *ctx;  /* the handler's (http_request_set_context) */
	struct buf body;
	int64_t content_length; /* -1: chunked */

	/* streamed body: mode, ops and the resume protocol under srv->mu */
	enum body_mode bmode;
	struct http_body_ops bops;
	void *bud;
	bool bpaused;          /* a short on_data paused it */
	unsigned bresume_seq;  /* http_request_resume_body calls */
	/* service thread */
	bool bcomplete;        /* every body byte has arrived */
	bool bend_owed;        /* on_end to call when no callback is running */
	int bend_err;
	bool bin_cb;           /* inside on_data */
	bool bexpect;          /* "Expect: 100-continue": sent on read_body */
	bool brx_paused;       /* lws rx flow control applied */
	bool bdeadline_on;
	bool bfailed;          /* timeout, bad framing, memory: no lingering */
	uint64_t bleft;        /* Content-Length bytes still to come */
	struct buf stash;      /* arrived, not yet taken */
	size_t stash_off;

	struct http_stream *stream; /* a streamed reply (the server's reference) */

	/* the reply: out[out_pos, out_end) is still to be written */
	unsigned char *out;
	size_t out_pos, out_end;
	int status;

	size_t arena_len, arena_cap;
	char arena[]; /* path, query and header strings */
};

enum conn_state {
	CONN_IDLE,    /* between requests, or reading a request head (lws) */
	CONN_BODY,    /* reading a request body */
	CONN_HANDLER, /* the request is with the handler */
	CONN_WRITING, /* writing the reply */
	CONN_WS,      /* upgraded: c->ws */
	CONN_LINGER,  /* reply written, dropping an unread body until close */
};

enum chunk_state {
	CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
	CH_TRAILER, CH_TRAILER_LINE, CH_TRAILER_LF, CH_DONE,
};

struct chunked {
	enum chunk_state st;
	uint64_t left;   /* data bytes left in this chunk, or the size being read */
	unsigned digits;
	size_t line;     /* bytes of the current size line */
	size_t trailer;  /* bytes of trailers */
};

struct conn {
	struct http_server *srv;
	struct lws *wsi;
	struct conn *prev, *next;      /* srv->conns */
	struct http_request *req;
	enum conn_state state;
	lws_sorted_usec_list_t deadline; /* request_timeout_s while reading a body */
	lws_sorted_usec_list_t untimeout; /* a streamed body paused: clear lws's timeout */
	bool send_continue;            /* "100 Continue" owed before the body */
	bool check_peer;               /* reply came late: is the client still there? */
	bool chunked;
	bool raw;                      /* lws fell back to a raw socket */
	bool in_upgrade;               /* the handler has an upgrade request */
	struct http_ws *ws;            /* accepted WebSocket, until it closes */
	struct chunked ch;
	char peer[64];
	bool cert_looked;              /* client_cn is settled */
	char client_cn[HTTP_CLIENT_CN_MAX + 1]; /* "" none, "?" unnamed */
};

/* A certificate, its chain (may be empty) and its private key. */
struct tls_pair {
	X509 *cert;
	STACK_OF(X509) *chain;
	EVP_PKEY *key;
	X509_STORE *client_store;           /* tls_client_ca_file: verifies */
	STACK_OF(X509_NAME) *client_names;  /* ... and is announced */
};

/* What stat() says about a file; err: 0, or the errno of a failed stat. */
struct file_sig {
	int err;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

struct http_server {
	struct lws_context *ctx;
	struct lws_vhost *vh;
	http_handler_fn handler;
	void *ud;
	void (*on_reply)(void *ud, struct http_request *req, int status);
	size_t max_body;
	int request_timeout_s;
	int idle_timeout_s;
	int port;
	char *iface;   /* lws keeps the pointer */
	struct lws_protocol_vhost_options vhost_headers[6];

	/* TLS: set by new; after that, the service thread's only */
	bool tls;
	char *tls_cert_file, *tls_key_file;
	char *tls_client_ca_file;      /* NULL: no client certificates asked */
	struct tls_pair tls_pair;      /* given to each new handshake */
	struct file_sig tls_seen[3];   /* cert, key, client CAs at the last look */
	struct file_sig tls_tried[3];  /* cert, key, client CAs when last read */
	int64_t tls_next_check;        /* now_ms */
	atomic_bool tls_reload_asked;  /* http_server_reload_tls, any thread */

	pthread_mutex_t mu;
	struct http_request *queue_head, *queue_tail; /* mu */
	bool lws_alive;                               /* mu: ctx may be woken */

	pthread_t loop_thread;
	atomic_bool loop_running;
	bool stopping;
	lws_sorted_usec_list_t tick;
	struct conn *conns;
	size_t nconns;

	/* WebSocket */
	char **ws_protos;               /* NULL-terminated copy; NULL: none */
	struct lws_protocols *protocols; /* "http", then one per ws_protos */
	size_t ws_max_message, ws_high_water;
	lws_retry_bo_t ws_retry;        /* ping interval */
	struct http_ws *ws_pending;     /* mu: need the service thread */

	/* streaming */
	bool (*stream_body)(void *ud, const struct http_request *req);
	size_t stream_high_water;
	atomic_bool stream_kick;        /* a stream or streamed body needs the loop */
	struct http_stream *stream_notify; /* mu: on_close owed */

	atomic_uint_fast64_t st_connections, st_requests, st_replies,
		st_dropped, st_rejected, st_tls_reloads, st_tls_reload_failures,
		st_ws_accepted, st_ws_open, st_streams, st_streams_aborted;
};

/* A message waiting to be sent; buf holds LWS_PRE + len bytes. */
struct ws_msg {
	struct ws_msg *next;
	size_t len, pos; /* pos: bytes already written */
	bool binary;
	unsigned char buf[];
};

struct http_ws {
	struct http_server *srv;
	struct http_ws_ops ops;
	void *ud;
	/* srv->mu */
	int refs;            /* the owner's, the server's, one while pending */
	bool closed;         /* the connection is gone */
	bool close_asked;    /* http_ws_close, or the server stopping */
	bool want_ready;     /* on_send_ready owed */
	bool pause_want;
	bool pending;        /* on srv->ws_pending */
	int close_code;
	char close_reason[124];
	struct ws_msg *q_head, *q_tail;
	size_t q_bytes;      /* not yet written */
	struct http_ws *pending_next;
	/* service thread */
	struct conn *conn;   /* NULL once closed */
	bool opened, pause_applied;
	int final_code;      /* for on_close: first close code seen */
	size_t rx_len;       /* of the message being received */
	char id[HTTP_REQUEST_ID_MAX + 1]; /* the upgrade request's, for the 101 */
};

/* ---- small helpers ---- */

static void stat_inc(atomic_uint_fast64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static bool on_loop_thread(struct http_server *srv)
{
	return atomic_load_explicit(&srv->loop_running, memory_order_acquire) &&
	       pthread_equal(pthread_self(), srv->loop_thread);
}

static const char *status_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Unknown";
	}
}

static bool status_has_body(int status)
{
	return status != 204 && status != 304;
}

static bool request_id_valid(const char *s, size_t len)
{
	if (len < 1 || len > HTTP_REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static void request_id_generate(char *out)
{
	static const char hex[] = "0123456789abcdef";
	static atomic_uint_fast64_t fallback;
	unsigned char r[16];
	if (random_bytes(r, sizeof(r)) != 0) {
		/* never expected; ids need to be unique, not secret */
		uint64_t a = (uint64_t)now_ms();
		uint64_t b = atomic_fetch_add(&fallback, 1);
		memcpy(r, &a, 8);
		memcpy(r + 8, &b, 8);
	}
	for (size_t i = 0; i < sizeof(r); i++) {
		out[2 * i] = hex[r[i] >> 4];
		out[2 * i + 1] = hex[r[i] & 15];
	}
	out[2 * sizeof(r)] = '\0';
}

static bool has_ctl(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return true;
	}
	return false;
}

/* Whether a comma-separated header value holds token (case-insensitive). */
static bool list_has_token(const char *list, const char *token)
{
	size_t tl = strlen(token);
	const char *p = list;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
			return true;
		p = e;
	}
	return false;
}

static bool header_name_valid(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c)))
			return false;
	}
	return true;
}

static bool header_value_valid(const char *s)
{
	if (!s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

/* Headers the server writes itself; a caller may not set them. */
static bool header_reserved(const char *name)
{
	static const char *const reserved[] = {
		"content-length", "content-type", "transfer-encoding",
		"connection", "x-request-id", "cache-control",
		"x-content-type-options", "keep-alive", "upgrade",
		"strict-transport-security", "x-frame-options",
		"content-security-policy", "referrer-policy",
	};
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++) {
		if (strcasecmp(name, reserved[i]) == 0)
			return true;
	}
	return false;
}

static bool extra_usable(const struct http_header *h)
{
	return header_name_valid(h->name) && header_value_valid(h->value) &&
	       !header_reserved(h->name);
}


/* Bytes of JSON string content for s once escaped (no quotes): messages may
 * quote client input, so invalid UTF-8 becomes U+FFFD (3 bytes). */
static size_t json_escaped_len(const char *s)
{
	size_t n = 0;
	while (*s) {
		unsigned char c = (unsigned char)*s;
		size_t k = utf8_seq_len((const unsigned char *)s);
		if (k == 0) {
			n += 3;
			k = 1;
		} else if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
			n += 2;
		} else if (c < 0x20 || c == 0x7f) {
			n += 6;
		} else {
			n += k;
		}
		s += k;
	}
	return n;
}

static char *json_escape_to(char *d, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x80) {
			size_t k = utf8_seq_len((const unsigned char *)s);
			if (k == 0) {
				memcpy(d, "\xef\xbf\xbd", 3); /* U+FFFD */
				d += 3;
			} else {
				memcpy(d, s, k);
				d += k;
				s += k - 1;
			}
			continue;
		}
		switch (c) {
		case '"': *d++ = '\\'; *d++ = '"'; break;
		case '\\': *d++ = '\\'; *d++ = '\\'; break;
		case '\n': *d++ = '\\'; *d++ = 'n'; break;
		case '\r': *d++ = '\\'; *d++ = 'r'; break;
		case '\t': *d++ = '\\'; *d++ = 't'; break;
		default:
			if (c < 0x20 || c == 0x7f) {
				memcpy(d, "\\u00", 4);
				d[4] = hex[c >> 4];
				d[5] = hex[c & 15];
				d += 6;
			} else {
				*d++ = (char)c;
			}
		}
	}
	return d;
}

/* ---- requests ---- */

static struct http_request *req_new(struct http_server *srv, size_t arena)
{
	struct http_request *req = malloc(sizeof(*req) + arena);
	if (!req)
		return NULL;
	memset(req, 0, sizeof(*req));
	req->srv = srv;
	req->stage = STAGE_CONN;
	req->method = "";
	req->path = "/";
	req->arena_cap = arena;
	buf_init(&req->body, srv->max_body);
	buf_init(&req->stash, (size_t)-1);
	return req;
}

static void stream_finish(struct http_stream *s, bool completed, bool direct);

static void req_free(struct http_request *req)
{
	if (!req)
		return;
	if (req->stream) {
		/* any thread: on_close goes through the service thread */
		stream_finish(req->stream, false, false);
		req->stream = NULL;
	}
	buf_release(&req->body);
	buf_release(&req->stash);
	free(req->out);
	free(req);
}

/* Copy n bytes into the arena as a C string. NULL when it does not fit
 * (which the sizing in on_http rules out). */
static char *arena_put(struct http_request *req, const char *s, size_t n)
{
	if (n + 1 > req->arena_cap - req->arena_len)
		return NULL;
	char *d = req->arena + req->arena_len;
	memcpy(d, s, n);
	d[n] = '\0';
	req->arena_len += n + 1;
	return d;
}

/* ---- building replies (any thread) ---- */

/* Upper bound of the status line and headers. */
static size_t head_bound(const struct http_request *req,
			 const struct http_header *extra, size_t nextra)
{
	size_t n = HTTP_HEAD_FIXED + sizeof(SECURITY_HEADERS) + sizeof(HSTS_HEADER) +
		   strlen(req->id);
	for (size_t i = 0; i < nextra; i++) {
		if (extra_usable(&extra[i]))
			n += strlen(extra[i].name) + strlen(extra[i].value) + 4;
	}
	return n;
}

static char *put(char *d, const char *s)
{
	size_t n = strlen(s);
	memcpy(d, s, n);
	return d + n;
}

static char *put_uint(char *d, uint64_t v)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*d++ = tmp[--n];
	return d;
}

/*
 * Finish req->out, whose body (body_len bytes) is already at
 * LWS_PRE + hb: write the status line and headers right before it.
 */
static void head_finish(struct http_request *req, int status, const char *ctype,
			size_t body_len, const struct http_header *extra,
			size_t nextra, size_t hb)
{
	char *start = (char *)req->out + LWS_PRE, *d = start;
	size_t used_extra = 0;

	d = put(d, "HTTP/1.1 ");
	d = put_uint(d, (uint64_t)status);
	*d++ = ' ';
	d = put(d, status_reason(status));
	d = put(d, "\r\n");
	if (status_has_body(status)) {
		if (ctype && body_len) {
			d = put(d, "Content-Type: ");
			d = put(d, ctype);
			d = put(d, "\r\n");
		}
		d = put(d, "Content-Length: ");
		d = put_uint(d, body_len);
		d = put(d, "\r\n");
	}
	d = put(d, "X-Request-Id: ");
	d = put(d, req->id);
	d = put(d, "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
	d = put(d, SECURITY_HEADERS);
	if (req->srv->tls)
		d = put(d, HSTS_HEADER);
	if (req->close)
		d = put(d, "Connection: close\r\n");
	for (size_t i = 0; i < nextra; i++) {
		if (!extra_usable(&extra[i])) {
			log_error("request %s: header \"%s\" not sent (invalid or set by the server)",
				  req->id, extra[i].name ? extra[i].name : "(null)");
			continue;
		}
		size_t len = strlen(extra[i].name) + strlen(extra[i].value) + 4;
		if (used_extra + len > HTTP_MAX_EXTRA_HEADERS) {
			log_error("request %s: header \"%s\" not sent (extra headers over %d bytes)",
				  req->id, extra[i].name, HTTP_MAX_EXTRA_HEADERS);
			continue;
		}
		used_extra += len;
		d = put(d, extra[i].name);
		d = put(d, ": ");
		d = put(d, extra[i].value);
		d = put(d, "\r\n");
	}
	d = put(d, "\r\n");

	size_t hlen = (size_t)(d - start);
	size_t body_off = LWS_PRE + hb;
	memmove(req->out + body_off - hlen, start, hlen);
	req->status = status;
	req->out_pos = body_off - hlen;
	req->out_end = body_off + (req->head || !status_has_body(status) ? 0 : body_len);
}

static int status_checked(const struct http_request *req, int status)
{
	if (status < 200 || status > 599) {
		log_error("request %s: invalid reply status %d, sending 500", req->id, status);
		return 500;
	}
	return status;
}

/* Error body in the one shape. 0 or -ENOMEM. */
static int build_error(struct http_request *req, int status, const char *code,
		       const struct http_header *extra, size_t nextra,
		       const char *msg)
{
	static const char p1[] = "{\"error\":{\"code\":\"";
	static const char p2[] = "\",\"message\":\"";
	static const char p3[] = "\",\"request_id\":\"";
	static const char p4[] = "\"}}";
	status = status_checked(req, status);
	if (!code || !*code)
		code = "error";
	size_t hb = head_bound(req, extra, nextra);
	size_t blen = sizeof(p1) + sizeof(p2) + sizeof(p3) + sizeof(p4) - 4 +
		      json_escaped_len(code) + json_escaped_len(msg) +
		      json_escaped_len(req->id);
	free(req->out);
	req->out = malloc(LWS_PRE + hb + blen + 1);
	if (!req->out)
		return -ENOMEM;
	char *b = (char *)req->out + LWS_PRE + hb, *d = b;
	d = put(d, p1);
	d = json_escape_to(d, code);
	d = put(d, p2);
	d = json_escape_to(d, msg);
	d = put(d, p3);
	d = json_escape_to(d, req->id);
	d = put(d, p4);
	head_finish(req, status, "application/json", (size_t)(d - b), extra, nextra, hb);
	return 0;
}

/* JSON (or no) body. 0, -ENOMEM or -E2BIG. */
static int build_json(struct http_request *req, int status, const cJSON *body,
		      const struct http_header *extra, size_t nextra)
{
	status = status_checked(req, status);
	if (body && !status_has_body(status)) {
		log_error("request %s: a %d reply cannot carry a body; body dropped",
			  req->id, status);
		body = NULL;
	}
	size_t hb = head_bound(req, extra, nextra);
	size_t off = LWS_PRE + hb, blen = 0;
	free(req->out);
	req->out = malloc(off + (body ? HTTP_JSON_GUESS : 0) + 1);
	if (!req->out)
		return -ENOMEM;
	if (body) {
		char *b = (char *)req->out + off;
		if (cJSON_PrintPreallocated((cJSON *)body, b, HTTP_JSON_GUESS, 0)) {
			blen = strlen(b);
		} else {
			char *s = cJSON_PrintUnformatted(body);
			if (!s)
				return -ENOMEM;
			blen = strlen(s);
			if (blen > HTTP_MAX_RESPONSE) {
				free(s);
				return -E2BIG;
			}
			unsigned char *p = realloc(req->out, off + blen + 1);
			if (!p) {
				free(s);
				return -ENOMEM;
			}
			req->out = p;
			memcpy(req->out + off, s, blen + 1);
			free(s);
		}
	}
	head_finish(req, status, "application/json", blen, extra, nextra, hb);
	return 0;
}

/* ---- handing replies to connections ---- */

static void body_end(struct http_request *req, int err, bool direct);

static void conn_start_write(struct conn *c)
{
	/* a streamed body still being read ends here (on_end owed: we may be
	 * inside the caller's reply) */
	if (c->req && c->req->bmode != BODY_BUFFERED) {
		body_end(c->req, -ECANCELED, false);
		/* lws 4.1.6 does not serve POLLOUT for a connection whose rx is
		 * flow-controlled in the middle of a body: read on (what still
		 * comes of the body is dropped) */
		if (c->req->brx_paused) {
			c->req->brx_paused = false;
			lws_rx_flow_control(c->wsi, 1);
		}
		if (c->req->bdeadline_on) {
			lws_sul_cancel(&c->deadline);
			c->req->bdeadline_on = false;
		}
	}
	c->state = CONN_WRITING;
	lws_sul_cancel(&c->deadline);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, c->srv->request_timeout_s);
	lws_callback_on_writable(c->wsi);
}

static void drop_reply(struct http_request *req)
{
	stat_inc(&req->srv->st_dropped);
	log_debug("request %s: client gone, reply dropped", req->id);
	req_free(req);
}

/* A reply to a request whose client had gone before it: the audit hook still
 * sees it (once), then it is dropped. */
static void reply_orphan(struct http_request *req, int status)
{
	struct http_server *srv = req->srv;
	if (srv->on_reply)
		srv->on_reply(srv->ud, req, status < 200 || status > 599 ? 500 : status);
	drop_reply(req);
}

/* Claim the one reply of req. false (logged) for a second reply. */
static bool reply_begin(struct http_request *req, bool *orphan)
{
	struct http_server *srv = req->srv;
	pthread_mutex_lock(&srv->mu);
	bool ok = req->stage == STAGE_HANDLER;
	if (ok) {
		req->stage = STAGE_REPLYING;
		*orphan = req->orphan;
	}
	pthread_mutex_unlock(&srv->mu);
	if (!ok)
		log_error("request %s: second reply ignored (exactly one reply per request)",
			  req->id);
	return ok;
}

/* The reply in req->out is complete: give it to the connection. */
static void reply_submit(struct http_request *req)
{
	struct http_server *srv = req->srv;
	if (srv->on_reply)
		srv->on_reply(srv->ud, req, req->status);
	bool loop = on_loop_thread(srv);
	pthread_mutex_lock(&srv->mu);
	if (req->orphan) {
		pthread_mutex_unlock(&srv->mu);
		drop_reply(req);
		return;
	}
	if (loop) {
		req->stage = STAGE_CONN;
		pthread_mutex_unlock(&srv->mu);
		conn_start_write(req->conn);
		return;
	}
	req->stage = STAGE_QUEUED;
	req->next = NULL;
	if (srv->queue_tail)
		srv->queue_tail->next = req;
	else
		srv->queue_head = req;
	srv->queue_tail = req;
	/* under mu: the context cannot be destroyed meanwhile */
	if (srv->lws_alive)
		lws_cancel_service(srv->ctx);
	pthread_mutex_unlock(&srv->mu);
}

/* No reply could be written at all: close the connection without one. */
static void reply_nothing(struct http_request *req)
{
	req->close = true;
	free(req->out);
	req->out = NULL;
	req->out_pos = req->out_end = 0;
}

/* Build failed (out of memory, body too big): answer 500 instead. */
static void reply_failed(struct http_request *req, int rc)
{
	log_error("request %s: cannot build the reply (%s)", req->id, strerror(-rc));
	req->close = true;
	if (build_error(req, 500, "internal", NULL, 0,
			rc == -E2BIG ? "response too large" : "out of memory") != 0)
		reply_nothing(req);
	reply_submit(req);
}

/* Service thread: move queued replies onto their connections. final: the
 * connections are gone (the context was destroyed): drop everything. */
static void drain_queue(struct http_server *srv, bool final)
{
	pthread_mutex_lock(&srv->mu);
	struct http_request *list = srv->queue_head, *gone = NULL;
	srv->queue_head = srv->queue_tail = NULL;
	struct http_request **pp = &list;
	while (*pp) {
		struct http_request *r = *pp;
		if (r->orphan || final) {
			*pp = r->next;
			r->next = gone;
			gone = r;
		} else {
			r->stage = STAGE_CONN;
			pp = &r->next;
		}
	}
	pthread_mutex_unlock(&srv->mu);
	while (gone) {
		struct http_request *r = gone;
		gone = r->next;
		drop_reply(r);
	}
	while (list) {
		struct http_request *r = list;
		list = r->next;
		r->conn->check_peer = true;
		conn_start_write(r->conn);
	}
}

/* Service thread: the server answers by itself and closes afterwards. */
static void reject(struct conn *c, int status, const char *code,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void reject(struct conn *c, int status, const char *code,
		   const char *fmt, ...)
{
	struct http_request *req = c->req;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	req->close = true;
	stat_inc(&c->srv->st_rejected);
	log_debug("request %s: %d %s: %s", req->id, status, code, msg);
	if (build_error(req, status, code, NULL, 0, msg) != 0)
		reply_nothing(req);
	conn_start_write(c);
}

/* ---- connections ---- */

static struct conn *conn_of(struct lws *wsi)
{
	return wsi ? lws_get_opaque_user_data(wsi) : NULL;
}

static struct conn *conn_new(struct http_server *srv, struct lws *wsi)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->srv = srv;
	c->wsi = wsi;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	lws_set_opaque_user_data(wsi, c);
	return c;
}

static void ws_finish(struct http_ws *ws);

static void conn_destroy(struct conn *c)
{
	struct http_server *srv = c->srv;
	lws_sul_cancel(&c->deadline);
	lws_sul_cancel(&c->untimeout);
	if (c->ws)
		ws_finish(c->ws); /* on_close; clears c->ws */
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;

	struct http_request *req = c->req;
	if (req && req->bmode != BODY_BUFFERED)
		body_end(req, -ECONNRESET, true);
	if (req && req->stream && req->stage == STAGE_CONN) {
		stream_finish(req->stream, false, true);
		req->stream = NULL;
	}
	if (req) {
		pthread_mutex_lock(&srv->mu);
		if (req->stage != STAGE_CONN) {
			/* away: whoever holds it frees it */
			req->orphan = true;
			req->conn = NULL;
			req = NULL;
		}
		pthread_mutex_unlock(&srv->mu);
	}
	if (req) {
		if (c->state == CONN_WRITING)
			drop_reply(req);
		else
			req_free(req);
	}
	lws_set_opaque_user_data(c->wsi, NULL);
	free(c);
}

static void body_fail(struct conn *c, int err);

static void on_deadline(lws_sorted_usec_list_t *sul)
{
	struct conn *c = container_of(sul, struct conn, deadline);
	if (c->state == CONN_BODY && c->req)
		reject(c, 408, "request_timeout",
		       "the request body did not arrive within %d s",
		       c->srv->request_timeout_s);
	else if (c->req && c->req->bmode != BODY_BUFFERED) {
		c->req->bdeadline_on = false;
		log_debug("request %s: no body byte within %d s", c->req->id,
			  c->srv->request_timeout_s);
		body_fail(c, -ETIMEDOUT);
	}
}

/* ---- request head (LWS_CALLBACK_HTTP) ---- */

static const char *method_of(struct lws *wsi, bool *head)
{
	static const struct {
		int tok;
		const char *name;
	} methods[] = {
		{ WSI_TOKEN_GET_URI, "GET" },       { WSI_TOKEN_POST_URI, "POST" },
		{ WSI_TOKEN_PUT_URI, "PUT" },       { WSI_TOKEN_PATCH_URI, "PATCH" },
		{ WSI_TOKEN_DELETE_URI, "DELETE" }, { WSI_TOKEN_HEAD_URI, "HEAD" },
		{ WSI_TOKEN_OPTIONS_URI, "OPTIONS" },
	};
	*head = false;
	for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
		if (lws_hdr_total_length(wsi, (enum lws_token_indexes)methods[i].tok) > 0) {
			*head = methods[i].tok == WSI_TOKEN_HEAD_URI;
			return methods[i].name;
		}
	}
	return NULL;
}

/* A header into a caller buffer: its length, 0 when absent, -1 when longer
 * than the buffer. */
static int hdr_small(struct lws *wsi, enum lws_token_indexes tok, char *dst, int len)
{
	int n = lws_hdr_total_length(wsi, tok);
	if (n <= 0) {
		dst[0] = '\0';
		return 0;
	}
	if (n >= len)
		return -1;
	return lws_hdr_copy(wsi, dst, len, tok) < 0 ? -1 : n;
}

static void set_request_id(struct http_request *req, struct lws *wsi)
{
	int n = lws_hdr_custom_length(wsi, XRID, XRID_LEN);
	if (n > 0 && n <= HTTP_REQUEST_ID_MAX &&
	    lws_hdr_custom_copy(wsi, req->id, (int)sizeof(req->id), XRID, XRID_LEN) == n &&
	    request_id_valid(req->id, (size_t)n))
		return;
	request_id_generate(req->id);
}

/* The subject CN of the connection's verified client certificate into cn:
 * "" when there is none (or it did not verify: then there is no connection
 * either), "?" when its subject has no CN, more than one, or one that is not
 * 1..HTTP_CLIENT_CN_MAX bytes of printable ASCII without space. */
static void client_cert_cn(struct lws *wsi, char *cn, size_t cap)
{
	cn[0] = '\0';
	SSL *ssl = lws_get_ssl(wsi);
	X509 *x = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
	if (!x || SSL_get_verify_result(ssl) != X509_V_OK)
		return;
	snprintf(cn, cap, "?");
	X509_NAME *name = X509_get_subject_name(x);
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0)
		return;
	unsigned char *utf8 = NULL;
	int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
	bool ok = n > 0 && (size_t)n < cap;
	for (int k = 0; ok && k < n; k++)
		ok = utf8[k] > 0x20 && utf8[k] < 0x7f;
	if (ok) {
		memcpy(cn, utf8, (size_t)n);
		cn[n] = '\0';
	}
	OPENSSL_free(utf8);
	ERR_clear_error();
}

static void set_peer(struct conn *c, struct http_request *req)
{
	if (!c->peer[0]) {
		char tmp[64];
		if (!lws_get_peer_simple(c->wsi, tmp, sizeof(tmp)))
			snprintf(tmp, sizeof(tmp), "unknown");
		/* an IPv4 client of a dual-stack socket */
		const char *p = strncmp(tmp, "::ffff:", 7) == 0 && strchr(tmp, '.') ? tmp + 7 : tmp;
		snprintf(c->peer, sizeof(c->peer), "%s", p);
	}
	memcpy(req->peer, c->peer, sizeof(req->peer));
	if (!c->cert_looked) {
		c->cert_looked = true;
		if (c->srv->tls_client_ca_file)
			client_cert_cn(c->wsi, c->client_cn, sizeof(c->client_cn));
	}
	memcpy(req->client_cn, c->client_cn, sizeof(req->client_cn));
}

/* Bytes the arena needs for this request head. */
static size_t arena_need(struct lws *wsi, size_t urilen)
{
	size_t n = urilen + 1;
	int a = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
	if (a > 0)
		n += (size_t)a + 1;
	for (int i = 0; i < HDR_COUNT; i++) {
		int h = hdr_tokens[i] < 0 ? lws_hdr_custom_length(wsi, XRID, XRID_LEN) :
			lws_hdr_total_length(wsi, (enum lws_token_indexes)hdr_tokens[i]);
		if (h > 0)
			n += (size_t)h + 1;
	}
	return n;
}

/* Query parameters. 0, or an HTTP status after reject(). */
static int collect_query(struct conn *c, struct http_request *req)
{
	struct lws *wsi = c->wsi;
	int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
	if (total <= 0)
		return 0;
	if (total > HTTP_MAX_QUERY_BYTES) {
		reject(c, 414, "uri_too_long", "query string over %d bytes",
		       HTTP_MAX_QUERY_BYTES);
		return 414;
	}
	for (int i = 0;; i++) {
		char *d = req->arena + req->arena_len;
		size_t room = req->arena_cap - req->arena_len;
		int n = lws_hdr_copy_fragment(wsi, d, (int)room, WSI_TOKEN_HTTP_URI_ARGS, i);
		if (n == -1)
			break; /* no more */
		if (n < 0) {
			reject(c, 500, "internal", "request head accounting");
			return 500;
		}
		if (n == 0)
			continue; /* "a=1&&b=2" */
		if (has_ctl(d, (size_t)n)) {
			reject(c, 400, "bad_query", "control character in the query string");
			return 400;
		}
		if (req->nquery == HTTP_MAX_QUERY_PARAMS) {
			reject(c, 400, "bad_query", "more than %d query parameters",
			       HTTP_MAX_QUERY_PARAMS);
			return 400;
		}
		req->arena_len += (size_t)n + 1;
		char *eq = strchr(d, '=');
		if (eq)
			*eq = '\0';
		req->query[req->nquery].key = d;
		req->query[req->nquery].value = eq ? eq + 1 : d + n;
		req->nquery++;
	}
	return 0;
}

static void collect_headers(struct conn *c, struct http_request *req)
{
	for (int i = 0; i < HDR_COUNT; i++) {
		char *d = req->arena + req->arena_len;
		int room = (int)(req->arena_cap - req->arena_len), n;
		if (hdr_tokens[i] < 0) {
			if (lws_hdr_custom_length(c->wsi, XRID, XRID_LEN) <= 0)
				continue;
			n = lws_hdr_custom_copy(c->wsi, d, room, XRID, XRID_LEN);
		} else {
			enum lws_token_indexes tok = (enum lws_token_indexes)hdr_tokens[i];
			if (lws_hdr_total_length(c->wsi, tok) <= 0)
				continue;
			n = lws_hdr_copy(c->wsi, d, room, tok);
		}
		if (n < 0)
			continue;
		req->arena_len += strlen(d) + 1;
		req->hdr[i] = d;
	}
}

static void dispatch(struct conn *c)
{
	struct http_server *srv = c->srv;
	struct http_request *req = c->req;
	lws_sul_cancel(&c->deadline);
	/* no timeout while the handler works: it may wait for Kubernetes */
	lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
	c->state = CONN_HANDLER;
	req->conn = c;
	pthread_mutex_lock(&srv->mu);
	req->stage = STAGE_HANDLER;
	pthread_mutex_unlock(&srv->mu);
	stat_inc(&srv->st_requests);
	srv->handler(srv->ud, req);
	/* req may be gone now (replied and, on a closed connection, freed) */
}

/* How the body is framed. 0 to go on, or an HTTP status after reject(). */
static int body_framing(struct conn *c, struct http_request *req, bool *has_body,
			bool streamed)
{
	struct lws *wsi = c->wsi;
	char cl[32], te[64], expect[64];
	int ncl = hdr_small(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof(cl));
	int nte = hdr_small(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING, te, sizeof(te));
	int nex = hdr_small(wsi, WSI_TOKEN_HTTP_EXPECT, expect, sizeof(expect));
	*has_body = false;

	if (nte != 0) {
		if (ncl != 0) {
			reject(c, 400, "bad_request", "both Content-Length and Transfer-Encoding");
			return 400;
		}
		if (nte < 0 || strcasecmp(te, "chunked") != 0) {
			reject(c, 501, "not_implemented",
			       "only the chunked transfer coding is supported");
			return 501;
		}
		c->chunked = true;
		memset(&c->ch, 0, sizeof(c->ch));
		req->close = true; /* lws cannot find the next request after it */
		req->content_length = -1;
		*has_body = true;
	} else if (ncl != 0) {
		uint64_t v = 0;
		bool ok = ncl > 0 && ncl <= 19;
		for (int i = 0; ok && i < ncl; i++) {
			if (cl[i] < '0' || cl[i] > '9')
				ok = false;
			else
				v = v * 10 + (uint64_t)(cl[i] - '0');
		}
		if (!ok) {
			reject(c, 400, "bad_request", "invalid Content-Length");
			return 400;
		}
		req->content_length = (int64_t)v;
		if (v > c->srv->max_body && !streamed) {
			reject(c, 413, "body_too_large",
			       "request body of %llu bytes is over the limit of %zu",
			       (unsigned long long)v, c->srv->max_body);
			return 413;
		}
		*has_body = v > 0;
	} else if (!strcmp(req->method, "POST") || !strcmp(req->method, "PUT") ||
		   !strcmp(req->method, "PATCH")) {
		/* no length: an empty body, but lws now reads "until close" */
		req->close = true;
	}

	if (nex != 0) {
		if (nex < 0 || strcasecmp(expect, "100-continue") != 0) {
			reject(c, 417, "expectation_failed", "unsupported Expect header");
			return 417;
		}
		if (*has_body && streamed)
			req->bexpect = true; /* sent when the handler reads the body */
		else if (*has_body)
			c->send_continue = true;
	}
	return 0;
}

/* The request head into a new c->req: 0 when it may go on, 1 after reject(),
 * -1 to close the connection without a response. */
static int request_head(struct conn *c, const char *uri, size_t urilen)
{
	struct http_server *srv = c->srv;
	struct lws *wsi = c->wsi;
	if (c->state != CONN_IDLE || c->req) {
		log_warn("http: a request head arrived while another request is in progress; closing");
		return -1;
	}
	struct http_request *req = req_new(srv, arena_need(wsi, urilen));
	if (!req)
		return -1;
	c->req = req;
	c->chunked = false;
	c->send_continue = false;
	req->conn = c;
	req->start_ms = now_ms();
	set_request_id(req, wsi);
	set_peer(c, req);

	bool head;
	const char *m = method_of(wsi, &head);
	req->method = m ? m : "";
	req->head = head;

	/* keep-alive: HTTP/1.1 unless "Connection: close"; HTTP/1.0 never */
	char ver[16], connection[128];
	int nv = hdr_small(wsi, WSI_TOKEN_HTTP, ver, sizeof(ver));
	int nc = hdr_small(wsi, WSI_TOKEN_CONNECTION, connection, sizeof(connection));
	req->close = nv <= 0 || strcmp(ver, "HTTP/1.1") != 0 ||
		     (nc != 0 && (nc < 0 || list_has_token(connection, "close")));

	if (srv->stopping) {
		reject(c, 503, "shutting_down", "the server is shutting down");
		return 1;
	}
	if (!m) {
		reject(c, 501, "not_implemented", "method not implemented");
		return 1;
	}
	if (urilen > HTTP_MAX_PATH_BYTES) {
		reject(c, 414, "uri_too_long", "path over %d bytes", HTTP_MAX_PATH_BYTES);
		return 1;
	}
	if (urilen == 0 || uri[0] != '/' || has_ctl(uri, urilen)) {
		reject(c, 400, "bad_path", "invalid request path");
		return 1;
	}
	req->path = arena_put(req, uri, urilen);
	if (!req->path) {
		reject(c, 500, "internal", "request head accounting");
		return 1;
	}
	if (collect_query(c, req))
		return 1;
	collect_headers(c, req);
	return 0;
}

static int on_http(struct conn *c, const char *uri, size_t urilen)
{
	struct http_server *srv = c->srv;
	struct lws *wsi = c->wsi;
	int r = request_head(c, uri, urilen);
	if (r)
		return r < 0 ? -1 : 0;
	struct http_request *req = c->req;

	bool has_body;
	/* only a request that has a body can have it streamed; the predicate
	 * sees the head (Content-Length and Transfer-Encoding are not among
	 * the captured headers, so it cannot tell yet) */
	bool streamed = srv->stream_body &&
			(lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
			 lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) &&
			srv->stream_body(srv->ud, req);
	if (body_framing(c, req, &has_body, streamed))
		return 0;
	if (!has_body) {
		dispatch(c);
		return 0;
	}
	if (streamed) {
		/* the handler decides before any body byte is read */
		req->bmode = BODY_WAIT;
		req->close = true;
		req->bleft = c->chunked ? 0 : (uint64_t)req->content_length;
		lws_rx_flow_control(wsi, 0);
		req->brx_paused = true;
		dispatch(c);
		return 0;
	}
	c->state = CONN_BODY;
	int64_t left_ms = (int64_t)srv->request_timeout_s * 1000 - (now_ms() - req->start_ms);
	if (left_ms < 1)
		left_ms = 1;
	lws_sul_schedule(lws_get_context(wsi), 0, &c->deadline, on_deadline,
			 left_ms * LWS_US_PER_MS);
	if (c->send_continue)
		lws_callback_on_writable(wsi);
	return 0;
}

/* ---- request body ---- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Feed raw chunked bytes; decoded data goes to body. Returns 1 when the last
 * chunk and trailers are complete, 0 for more, -EINVAL for bad framing,
 * -E2BIG over the body limit, -ENOMEM.
 */
static int chunked_feed(struct chunked *ch, const unsigned char *p, size_t n,
			struct buf *body)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = p[i];
		switch (ch->st) {
		case CH_SIZE: {
			int v = hexval(c);
			if (v >= 0) {
				if (++ch->digits > 15)
					return -EINVAL;
				ch->left = ch->left * 16 + (uint64_t)v;
				break;
			}
			if (!ch->digits)
				return -EINVAL;
			if (c == ';' || c == ' ' || c == '\t')
				ch->st = CH_EXT;
			else if (c == '\r')
				ch->st = CH_SIZE_LF;
			else
				return -EINVAL;
			break;
		}
		case CH_EXT:
			if (c == '\r')
				ch->st = CH_SIZE_LF;
			else if (c == '\n' || ++ch->line > HTTP_CHUNK_LINE_MAX)
				return -EINVAL;
			break;
		case CH_SIZE_LF:
			if (c != '\n')
				return -EINVAL;
			ch->line = 0;
			ch->digits = 0;
			ch->st = ch->left ? CH_DATA : CH_TRAILER;
			if (ch->left > body->max - body->len && body->max != (size_t)-1)
				return -E2BIG;
			break;
		case CH_DATA: {
			size_t k = n - i;
			if (k > ch->left)
				k = (size_t)ch->left;
			int rc = buf_append(body, p + i, k);
			if (rc)
				return rc;
			ch->left -= k;
			i += k;
			if (!ch->left)
				ch->st = CH_DATA_CR;
			continue;
		}
		case CH_DATA_CR:
			if (c != '\r')
				return -EINVAL;
			ch->st = CH_DATA_LF;
			break;
		case CH_DATA_LF:
			if (c != '\n')
				return -EINVAL;
			ch->st = CH_SIZE;
			break;
		case CH_TRAILER:
			if (c == '\r') {
				ch->st = CH_TRAILER_LF;
				break;
			}
			ch->st = CH_TRAILER_LINE;
			/* fall through */
		case CH_TRAILER_LINE:
			if (++ch->trailer > HTTP_CHUNK_TRAILER_MAX)
				return -EINVAL;
			if (c == '\n')
				ch->st = CH_TRAILER;
			break;
		case CH_TRAILER_LF:
			if (c != '\n')
				return -EINVAL;
			ch->st = CH_DONE;
			return 1; /* anything after it is not ours to read */
		case CH_DONE:
			return 1;
		}
		i++;
	}
	return ch->st == CH_DONE;
}

static int sbody_in(struct conn *c, const unsigned char *in, size_t len);
static int sbody_done(struct conn *c);

static int on_body(struct conn *c, const void *in, size_t len)
{
	if (c->state == CONN_LINGER)
		return 0; /* dropped */
	if (c->req && c->req->bmode != BODY_BUFFERED)
		return sbody_in(c, in, len);
	if (c->state != CONN_BODY)
		return 0; /* already answered (413, 408, ...) or past the body */
	struct http_request *req = c->req;
	if (c->chunked) {
		int rc = chunked_feed(&c->ch, in, len, &req->body);
		if (rc == 1)
			dispatch(c);
		else if (rc == -E2BIG)
			reject(c, 413, "body_too_large",
			       "request body is over the limit of %zu bytes", c->srv->max_body);
		else if (rc == -EINVAL)
			reject(c, 400, "bad_request", "malformed chunked body");
		else if (rc < 0)
			reject(c, 500, "internal", "out of memory");
		return 0;
	}
	int rc = buf_append(&req->body, in, len);
	if (rc == -E2BIG)
		reject(c, 413, "body_too_large",
		       "request body is over the limit of %zu bytes", c->srv->max_body);
	else if (rc)
		reject(c, 500, "internal", "out of memory");
	return 0;
}

static int on_body_done(struct conn *c)
{
	if (c->state == CONN_LINGER)
		return -1; /* the unread body is over: close */
	if (c->req && c->req->bmode != BODY_BUFFERED)
		return sbody_done(c);
	/* lws 4.1.6 may report completion twice */
	if (c->state == CONN_BODY && !c->chunked)
		dispatch(c);
	return 0;
}

/* ---- streamed request bodies ----
 *
 * The service thread owns the reading: lws delivers bytes (LWS_CALLBACK_
 * HTTP_BODY), which go to req->stash (chunked framing decoded) and from
 * there to on_data while the reader takes them. lws rx flow control is off
 * until the handler asks for the body, while a short on_data has paused it,
 * and while the stash holds a piece; lws may still hand over what it had
 * already read, which the stash keeps (bounded: HTTP_BODY_STASH_MAX).
 * Other threads (read_body, resume_body) set fields under srv->mu and raise
 * srv->stream_kick; the loop then looks at every connection (body_service).
 * on_end is called with no callback of ours running: when it comes due
 * inside on_data or inside a reply, it is owed (bend_owed) and paid by the
 * service thread right after.
 */

static void stream_kick(struct http_server *srv)
{
	atomic_store(&srv->stream_kick, true);
	pthread_mutex_lock(&srv->mu);
	if (srv->lws_alive)
		lws_cancel_service(srv->ctx);
	pthread_mutex_unlock(&srv->mu);
}

/* The body ends with err: on_end now (direct, and no on_data running) or
 * owed. Service thread. */
static void body_end(struct http_request *req, int err, bool direct)
{
	struct http_server *srv = req->srv;
	pthread_mutex_lock(&srv->mu);
	enum body_mode was = req->bmode;
	if (was == BODY_WAIT || was == BODY_READING)
		req->bmode = BODY_DONE;
	pthread_mutex_unlock(&srv->mu);
	if (was == BODY_READING) {
		req->bend_owed = true;
		req->bend_err = err;
	}
	if (!req->bend_owed)
		return;
	if (!direct || req->bin_cb) {
		if (!direct)
			stream_kick(srv); /* the loop pays it soon */
		return;
	}
	req->bend_owed = false;
	buf_release(&req->stash);
	req->bops.on_end(req->bud, req->bend_err);
}

static void body_deadline(struct conn *c, bool on)
{
	struct http_request *req = c->req;
	if (on) {
		/* lws 4.1.6 arms its own PENDING_TIMEOUT_HTTP_CONTENT of
		 * timeout_secs (= request_timeout_s) as body bytes arrive, and
		 * closes without a word when it fires: ours goes first */
		lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
		lws_sul_schedule(lws_get_context(c->wsi), 0, &c->deadline, on_deadline,
				 (lws_usec_t)c->srv->request_timeout_s * LWS_US_PER_SEC -
					 100 * LWS_US_PER_MS);
		req->bdeadline_on = true;
	} else if (req->bdeadline_on) {
		lws_sul_cancel(&c->deadline);
		lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
		req->bdeadline_on = false;
	}
}

/* After the body callback that paused reading has returned (lws arms its
 * content timeout after it): a reader's pause has no time limit here. */
static void on_untimeout(lws_sorted_usec_list_t *sul)
{
	struct conn *c = container_of(sul, struct conn, untimeout);
	if (c->req && c->req->bmode != BODY_BUFFERED && c->req->brx_paused &&
	    c->state == CONN_HANDLER)
		lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
}

/* Reading failed (timeout, framing, memory): stop reading, tell the reader. */
static void body_fail(struct conn *c, int err)
{
	struct http_request *req = c->req;
	body_deadline(c, false);
	if (!req->brx_paused) {
		lws_rx_flow_control(c->wsi, 0);
		req->brx_paused = true;
	}
	req->bcomplete = false;
	req->bfailed = true;
	body_end(req, err, true);
}

/* Give stashed bytes to the reader, then set flow control and the
 * deadline to match. Service thread. */
static void body_pump(struct conn *c)
{
	struct http_server *srv = c->srv;
	struct http_request *req = c->req;
	if (req->bend_owed) {
		body_end(req, req->bend_err, true);
		return;
	}
	for (;;) {
		pthread_mutex_lock(&srv->mu);
		enum body_mode mode = req->bmode;
		bool paused = req->bpaused;
		unsigned seq = req->bresume_seq;
		pthread_mutex_unlock(&srv->mu);
		if (mode != BODY_READING || paused || !req->stash.len)
			break;
		size_t piece = req->stash.len < HTTP_BODY_PIECE ? req->stash.len : HTTP_BODY_PIECE;
		size_t n = piece;
		if (req->bops.on_data) {
			req->bin_cb = true;
			n = req->bops.on_data(req->bud, req->stash.data, piece);
			req->bin_cb = false;
			if (n > piece)
				n = piece;
		}
		buf_consume(&req->stash, n);
		if (req->bend_owed) {
			body_end(req, req->bend_err, true);
			return;
		}
		if (n < piece) {
			pthread_mutex_lock(&srv->mu);
			if (req->bresume_seq == seq)
				req->bpaused = true;
			pthread_mutex_unlock(&srv->mu);
		}
	}
	pthread_mutex_lock(&srv->mu);
	enum body_mode mode = req->bmode;
	bool paused = req->bpaused;
	pthread_mutex_unlock(&srv->mu);
	if (mode == BODY_READING && req->bcomplete && !req->stash.len) {
		body_deadline(c, false);
		body_end(req, 0, true);
		return;
	}
	bool want_rx = mode == BODY_READING && !paused && !req->bcomplete && !req->stash.len;
	if (want_rx == req->brx_paused) {
		req->brx_paused = !want_rx;
		lws_rx_flow_control(c->wsi, want_rx ? 1 : 0);
		if (!want_rx)
			lws_sul_schedule(lws_get_context(c->wsi), 0, &c->untimeout, on_untimeout,
					 LWS_US_PER_MS);
	}
	if (want_rx && !req->bdeadline_on)
		body_deadline(c, true);
	else if (!want_rx)
		body_deadline(c, false);
}

/* Body bytes from lws for a streamed request. */
static int sbody_in(struct conn *c, const unsigned char *in, size_t len)
{
	struct http_request *req = c->req;
	if (req->bmode == BODY_DONE || req->bcomplete || !len)
		return 0; /* after an error or the end: dropped */
	if (c->chunked) {
		int rc = chunked_feed(&c->ch, in, len, &req->stash);
		if (rc == 1) {
			req->bcomplete = true;
		} else if (rc < 0) {
			body_fail(c, rc == -EINVAL ? -EPROTO : -ENOMEM);
			return 0;
		}
	} else {
		size_t k = len < req->bleft ? len : (size_t)req->bleft;
		if (buf_append(&req->stash, in, k) != 0) {
			body_fail(c, -ENOMEM);
			return 0;
		}
		req->bleft -= k;
		if (!req->bleft)
			req->bcomplete = true;
	}
	if (req->stash.len > HTTP_BODY_STASH_MAX) {
		log_error("request %s: over %u body bytes arrived while reading was paused",
			  req->id, HTTP_BODY_STASH_MAX);
		body_fail(c, -ENOMEM);
		return 0;
	}
	if (req->bdeadline_on)
		body_deadline(c, true); /* progress: the timeout starts again */
	body_pump(c);
	return 0;
}

static int sbody_done(struct conn *c)
{
	struct http_request *req = c->req;
	if (!c->chunked && !req->bleft && req->bmode != BODY_DONE) {
		req->bcomplete = true;
		body_pump(c);
	}
	return 0;
}

/* Service thread: act on what other threads asked of c's request. */
static void body_service(struct conn *c)
{
	struct http_request *req = c->req;
	if (req->bend_owed && !req->bin_cb) {
		body_end(req, req->bend_err, true);
		return;
	}
	pthread_mutex_lock(&c->srv->mu);
	bool reading = req->bmode == BODY_READING;
	pthread_mutex_unlock(&c->srv->mu);
	if (!reading)
		return;
	if (req->bexpect) {
		req->bexpect = false;
		c->send_continue = true;
		lws_callback_on_writable(c->wsi);
	}
	body_pump(c);
}

int64_t http_request_content_length(const struct http_request *req)
{
	return req->content_length;
}

int http_request_read_body(struct http_request *req, const struct http_body_ops *ops,
			   void *ud)
{
	if (!req || !ops || !ops->on_end)
		return -EINVAL;
	struct http_server *srv = req->srv;
	pthread_mutex_lock(&srv->mu);
	int rc = 0;
	if (req->bmode == BODY_DONE)
		rc = -EPIPE; /* the client has gone */
	else if (req->bmode != BODY_WAIT || req->stage != STAGE_HANDLER)
		rc = -EINVAL;
	if (!rc) {
		req->bops = *ops;
		req->bud = ud;
		req->bmode = BODY_READING;
	}
	pthread_mutex_unlock(&srv->mu);
	if (rc) {
		if (rc == -EINVAL)
			log_error("request %s: http_request_read_body on a request whose body is not"
				  " streamed, or a second time", req->id);
		return rc;
	}
	/* never from inside: the loop picks it up (the caller may hold a
	 * lock that on_data takes) */
	stream_kick(srv);
	return 0;
}

bool http_request_body_streamed(const struct http_request *req)
{
	return req->bmode != BODY_BUFFERED;
}

void http_request_resume_body(struct http_request *req)
{
	struct http_server *srv = req->srv;
	pthread_mutex_lock(&srv->mu);
	req->bresume_seq++;
	bool was = req->bpaused;
	req->bpaused = false;
	pthread_mutex_unlock(&srv->mu);
	if (was)
		stream_kick(srv);
}

/* ---- streamed replies ----
 *
 * The writer queues pieces under srv->mu (http_stream_write, any thread);
 * the service thread writes them from WRITEABLE after the head. When it
 * finds the queue empty it marks the stream waiting, and the next write (or
 * the end) raises srv->stream_kick and wakes the loop, which asks for
 * WRITEABLE again. on_close is called directly where the service thread
 * finishes the stream (WRITEABLE, conn_destroy); anywhere else (a request
 * dropped on another thread) it is owed on srv->stream_notify and paid by
 * the loop, or by run/free at the end.
 */

static void stream_unref(struct http_stream *s)
{
	struct http_server *srv = s->srv;
	pthread_mutex_lock(&srv->mu);
	int left = --s->refs;
	pthread_mutex_unlock(&srv->mu);
	if (left)
		return;
	while (s->q_head) {
		struct stream_piece *p = s->q_head;
		s->q_head = p->next;
		free(p);
	}
	free(s);
}

static void stream_finish(struct http_stream *s, bool completed, bool direct)
{
	struct http_server *srv = s->srv;
	pthread_mutex_lock(&srv->mu);
	if (s->finishing) {
		pthread_mutex_unlock(&srv->mu);
		return;
	}
	s->finishing = true;
	s->closed = true;
	struct stream_piece *q = s->q_head;
	s->q_head = s->q_tail = NULL;
	s->q_bytes = 0;
	if (!direct) {
		s->notify_completed = completed;
		s->notify_next = srv->stream_notify;
		srv->stream_notify = s;
		atomic_store(&srv->stream_kick, true);
		if (srv->lws_alive)
			lws_cancel_service(srv->ctx);
	}
	pthread_mutex_unlock(&srv->mu);
	while (q) {
		struct stream_piece *p = q;
		q = p->next;
		free(p);
	}
	if (!completed)
		stat_inc(&srv->st_streams_aborted);
	if (!direct)
		return;
	s->ops.on_close(s->ud, completed);
	stream_unref(s);
}

/* Pay the on_close calls owed. */
static void stream_notify_drain(struct http_server *srv)
{
	pthread_mutex_lock(&srv->mu);
	struct http_stream *list = srv->stream_notify;
	srv->stream_notify = NULL;
	pthread_mutex_unlock(&srv->mu);
	while (list) {
		struct http_stream *s = list;
		list = s->notify_next;
		s->ops.on_close(s->ud, s->notify_completed);
		stream_unref(s);
	}
}

/* WRITEABLE after the head: 1 the body is complete, 0 more later, -1 abort. */
static int stream_write_some(struct conn *c)
{
	struct http_server *srv = c->srv;
	struct http_stream *s = c->req->stream;
	if (s->no_body)
		return 1;
	for (int i = 0; i < HTTP_WS_PIECES; i++) {
		pthread_mutex_lock(&srv->mu);
		struct stream_piece *p = s->q_head;
		bool ended = s->ended, ok = s->end_ok;
		uint64_t left = s->write_left;
		if (!p && !ended)
			s->waiting = true;
		pthread_mutex_unlock(&srv->mu);
		if (ended && !ok)
			return -1;
		if (!p) {
			if (!ended)
				return 0; /* the next write or the end wakes us */
			if (left) {
				log_warn("stream: response ended %llu bytes short of its Content-Length;"
					 " closing the connection", (unsigned long long)left);
				return -1;
			}
			return 1;
		}
		/* only this thread takes pieces off the head: p stays */
		size_t n = p->len - p->pos;
		if (lws_write(c->wsi, p->buf + LWS_PRE + p->pos, n, LWS_WRITE_HTTP) < (int)n)
			return -1;
		bool done, ready;
		pthread_mutex_lock(&srv->mu);
		p->pos += n;
		s->q_bytes -= n;
		s->write_left -= n;
		done = p->pos == p->len;
		if (done) {
			s->q_head = p->next;
			if (!s->q_head)
				s->q_tail = NULL;
		}
		ready = s->want_drain && s->q_bytes < srv->stream_high_water / 4;
		if (ready)
			s->want_drain = false;
		pthread_mutex_unlock(&srv->mu);
		if (done)
			free(p);
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, srv->request_timeout_s);
		if (ready && s->ops.on_drain)
			s->ops.on_drain(s->ud);
		if (lws_send_pipe_choked(c->wsi))
			break;
	}
	lws_callback_on_writable(c->wsi);
	return 0;
}

/* The loop, woken with srv->stream_kick raised: serve streamed bodies and
 * replies, pay owed on_close calls. */
static void stream_service(struct http_server *srv)
{
	if (!atomic_exchange(&srv->stream_kick, false))
		return;
	struct conn *next;
	for (struct conn *c = srv->conns; c; c = next) {
		next = c->next;
		struct http_request *req = c->req;
		if (!req)
			continue;
		if (req->bmode != BODY_BUFFERED)
			body_service(c);
		if (c->state == CONN_WRITING && c->req == req && req->stream)
			lws_callback_on_writable(c->wsi);
	}
	stream_notify_drain(srv);
}

struct http_stream *http_reply_stream_begin(struct http_request *req, int status,
					    const char *content_type,
					    uint64_t content_length,
					    const struct http_header *extra, size_t nextra,
					    const struct http_stream_ops *ops, void *ud)
{
	if (!ops || !ops->on_close) {
		log_error("request %s: http_reply_stream_begin needs ops with on_close", req->id);
		http_reply_error(req, 500, "internal", NULL, 0, "streamed reply without on_close");
		return NULL;
	}
	struct http_server *srv = req->srv;
	bool orphan = false;
	if (!reply_begin(req, &orphan))
		return NULL;
	status = status_checked(req, status);
	if (orphan) {
		reply_orphan(req, status);
		return NULL;
	}
	struct http_stream *s = calloc(1, sizeof(*s));
	const char *ct = content_type && strlen(content_type) < 64 &&
				 !strpbrk(content_type, "\r\n")
			 ? content_type
			 : "application/octet-stream";
	size_t hb = head_bound(req, extra, nextra) + strlen(ct);
	free(req->out);
	req->out = s ? malloc(LWS_PRE + hb + 1) : NULL;
	if (!req->out) {
		free(s);
		reply_failed(req, -ENOMEM);
		return NULL;
	}
	s->srv = srv;
	s->ops = *ops;
	s->ud = ud;
	s->refs = 2;
	s->no_body = req->head || !status_has_body(status);
	s->accept_left = s->write_left = s->no_body ? 0 : content_length;
	/* the head announces the whole length (HEAD too); no body bytes in out */
	head_finish(req, status, ct, (size_t)content_length, extra, nextra, hb);
	req->out_end = LWS_PRE + hb;
	req->stream = s;
	stat_inc(&srv->st_streams);
	reply_submit(req);
	return s;
}

int http_stream_write(struct http_stream *s, const void *data, size_t len)
{
	if (!s || (!data && len))
		return -EINVAL;
	struct http_server *srv = s->srv;
	struct stream_piece *list = NULL, **tail = &list;
	for (size_t off = 0; off < len;) {
		size_t n = len - off < HTTP_WRITE_PIECE ? len - off : HTTP_WRITE_PIECE;
		struct stream_piece *p = malloc(sizeof(*p) + LWS_PRE + n);
		if (!p) {
			while (list) {
				p = list;
				list = p->next;
				free(p);
			}
			return -ENOMEM;
		}
		p->next = NULL;
		p->len = n;
		p->pos = 0;
		memcpy(p->buf + LWS_PRE, (const char *)data + off, n);
		*tail = p;
		tail = &p->next;
		off += n;
	}
	int rc = 0;
	bool kick = false;
	pthread_mutex_lock(&srv->mu);
	if (s->closed || s->ended || s->no_body) {
		rc = -EPIPE;
	} else if (len > s->accept_left) {
		rc = -EMSGSIZE;
	} else if (s->q_bytes && s->q_bytes + len > 4 * srv->stream_high_water) {
		s->want_drain = true;
		rc = -ENOBUFS;
	} else if (list) {
		struct stream_piece *last = list;
		while (last->next)
			last = last->next;
		if (s->q_tail)
			s->q_tail->next = list;
		else
			s->q_head = list;
		s->q_tail = last;
		s->q_bytes += len;
		s->accept_left -= len;
		list = NULL;
		if (s->q_bytes > srv->stream_high_water) {
			s->want_drain = true;
			rc = -EAGAIN;
		}
		kick = s->waiting;
		s->waiting = false;
	}
	pthread_mutex_unlock(&srv->mu);
	while (list) {
		struct stream_piece *p = list;
		list = p->next;
		free(p);
	}
	if (kick)
		stream_kick(srv);
	return rc;
}

void http_stream_end(struct http_stream *s, bool ok)
{
	if (!s)
		return;
	struct http_server *srv = s->srv;
	pthread_mutex_lock(&srv->mu);
	if (s->ended) {
		pthread_mutex_unlock(&srv->mu);
		log_error("http_stream_end called twice; ignored");
		return;
	}
	s->ended = true;
	s->end_ok = ok && s->accept_left == 0;
	bool kick = !s->closed && (s->waiting || !s->end_ok);
	s->waiting = false;
	pthread_mutex_unlock(&srv->mu);
	if (kick)
		stream_kick(srv);
	stream_unref(s);
}

/* ---- writing ---- */

/*
 * Whether the client has closed its side (FIN or RST). lws 4.1.6 notes a
 * read of 0 bytes but keeps the connection so that a reply can still go out;
 * for a reply that waited on the handler we would rather drop it than write
 * it into the void. A client that half-closes and still waits for its answer
 * (rare for HTTP/1.1) loses it, as it would with nginx.
 */
static bool peer_gone(struct lws *wsi)
{
	int fd = lws_get_socket_fd(wsi);
	if (fd < 0)
		return true;
	char b;
	ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r == 0)
		return true;
	return r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

static int on_writeable(struct conn *c)
{
	struct http_server *srv = c->srv;
	enum lws_write_protocol wp = c->raw ? LWS_WRITE_RAW : LWS_WRITE_HTTP;

	if (c->send_continue) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		unsigned char b[LWS_PRE + sizeof(cont)];
		c->send_continue = false;
		if (c->state == CONN_BODY || (c->state == CONN_HANDLER && c->req &&
					       c->req->bmode == BODY_READING)) {
			memcpy(b + LWS_PRE, cont, sizeof(cont) - 1);
			if (lws_write(c->wsi, b + LWS_PRE, sizeof(cont) - 1, wp) <
			    (int)sizeof(cont) - 1)
				return -1;
		}
		if (c->state == CONN_WRITING)
			lws_callback_on_writable(c->wsi);
		return 0;
	}
	if (c->state != CONN_WRITING)
		return 0;

	struct http_request *req = c->req;
	if (c->check_peer) {
		c->check_peer = false;
		if (peer_gone(c->wsi))
			return -1; /* conn_destroy counts the dropped reply */
	}
	size_t n = req->out_end - req->out_pos; /* 0: reply_nothing */
	if (n > HTTP_WRITE_PIECE)
		n = HTTP_WRITE_PIECE;
	if (n && lws_write(c->wsi, req->out + req->out_pos, n, wp) < (int)n)
		return -1;
	req->out_pos += n;
	if (req->out_pos < req->out_end) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, srv->request_timeout_s);
		lws_callback_on_writable(c->wsi);
		return 0;
	}
	if (req->stream) {
		int r = stream_write_some(c);
		if (r <= 0)
			return r; /* more to come, or aborted (conn_destroy tells) */
		stream_finish(req->stream, true, true);
		req->stream = NULL;
	}
	if (req->bend_owed)
		body_end(req, req->bend_err, true);

	stat_inc(&srv->st_replies);
	bool close = req->close || srv->stopping || c->raw;
	/* a streamed body the reply did not wait for: let the client finish
	 * sending (dropped) so that it reads the reply rather than a reset */
	bool linger = req->bmode != BODY_BUFFERED && !req->bcomplete && !req->bfailed &&
		      !c->raw && !srv->stopping;
	if (log_enabled(LOG_DEBUG))
		log_debug("request %s: %s %s -> %d in %lld ms", req->id, req->method,
			  req->path, req->status, (long long)(now_ms() - req->start_ms));
	c->req = NULL;
	req_free(req);
	c->state = CONN_IDLE;
	lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
	if (linger) {
		int fd = lws_get_socket_fd(c->wsi);
		if (fd >= 0 && !c->srv->tls)
			shutdown(fd, SHUT_WR);
		c->state = CONN_LINGER;
		lws_sul_cancel(&c->deadline);
		lws_rx_flow_control(c->wsi, 1);
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_LINGER_S);
		return 0;
	}
	if (close)
		return -1;
	/* idle keep-alive from here: lws applies keepalive_timeout */
	return lws_http_transaction_completed(c->wsi) ? -1 : 0;
}

/* ---- CONNECT: lws hands it over as a raw socket ---- */

static int on_raw_adopt(struct conn *c)
{
	struct http_request *req = req_new(c->srv, 0);
	if (!req)
		return -1;
	c->raw = true;
	c->req = req;
	req->conn = c;
	req->method = "CONNECT";
	req->start_ms = now_ms();
	request_id_generate(req->id);
	reject(c, 501, "not_implemented", "method not implemented");
	return 0;
}

/* ---- WebSocket ----
 *
 * The upgrade. lws 4.1.6 calls LWS_CALLBACK_HTTP_CONFIRM_UPGRADE when the
 * head of a request with "Upgrade:" is complete, before (and instead of)
 * LWS_CALLBACK_HTTP. There we build the request as on_http does, check the
 * handshake (what lws_process_ws_upgrade would refuse by closing, we answer
 * with an HTTP error), pick the subprotocol, and call the handler, which
 * must answer before it returns. The outcome:
 * - accepted (http_accept_websocket): return 0 and lws completes the
 *   handshake (lws_process_ws_upgrade: it binds the ws protocol of the chosen
 *   name, writes the 101 with that Sec-WebSocket-Protocol, and calls
 *   LWS_CALLBACK_ESTABLISHED, where on_open runs);
 * - answered with http_reply_*: the reply is written right here with
 *   lws_write and we return -1, so lws closes the connection (a return of 1
 *   would make lws complete the transaction, and it would keep the
 *   connection or not depending on state it sets only for plain requests).
 * lws picks the subprotocol itself: the first name in the client's list that
 * matches a protocol of the vhost, in the client's order (as kube-apiserver
 * does too), and 4.1.6 has no public way to change the header it reads, so
 * ws_pick predicts that choice and refuses beforehand, with an HTTP error,
 * the lists on which lws would close: a header over 126 bytes (lws copies it
 * into char[128]), a name over 63 bytes before the match (char[64]), or a
 * malformed list. protocols[0], the plain HTTP one, has a name with spaces
 * in it, which no offered token can match.
 *
 * After the upgrade. Each ws_protos name is an lws protocol with this same
 * callback and rx_buffer_size HTTP_WS_RX_BUF. The struct conn stays (opaque
 * user data survives the role change) and points to the struct http_ws.
 * Other threads reach the service thread through srv->ws_pending (a ws is
 * listed at most once, holding a reference while listed) and
 * lws_cancel_service; on the service thread itself the lws calls are made
 * at once. Data goes out only from LWS_CALLBACK_SERVER_WRITEABLE, in frames
 * of at most HTTP_WS_PIECE bytes (a long message is sent as a fragmented
 * message), so lws never has to buffer much of ours. Pings: the vhost's
 * retry_and_idle_policy (secs_since_valid_ping = ws_ping_s), which lws
 * applies to ws connections; a missing pong closes after 2 x ws_ping_s.
 */

static void ws_unref(struct http_ws *ws)
{
	struct http_server *srv = ws->srv;
	pthread_mutex_lock(&srv->mu);
	int left = --ws->refs;
	pthread_mutex_unlock(&srv->mu);
	if (left)
		return;
	while (ws->q_head) {
		struct ws_msg *m = ws->q_head;
		ws->q_head = m->next;
		free(m);
	}
	free(ws);
}

/* Service thread: bring lws in line with what other calls asked for. */
static void ws_service(struct http_ws *ws)
{
	struct conn *c = ws->conn;
	if (!c || !ws->opened)
		return; /* not yet open (on_open catches up) or gone */
	pthread_mutex_lock(&ws->srv->mu);
	bool pause = ws->pause_want;
	bool write = ws->q_head || ws->close_asked;
	pthread_mutex_unlock(&ws->srv->mu);
	if (pause != ws->pause_applied) {
		ws->pause_applied = pause;
		lws_rx_flow_control(c->wsi, pause ? 0 : 1);
	}
	if (write)
		lws_callback_on_writable(c->wsi);
}

/* With srv->mu held: make sure the service thread looks at ws. Returns true
 * when the caller is the service thread and must call ws_service itself
 * (after unlocking). */
static bool ws_kick_locked(struct http_ws *ws)
{
	struct http_server *srv = ws->srv;
	if (ws->closed)
		return false;
	if (on_loop_thread(srv))
		return true;
	if (!ws->pending) {
		ws->pending = true;
		ws->refs++;
		ws->pending_next = srv->ws_pending;
		srv->ws_pending = ws;
		if (srv->lws_alive)
			lws_cancel_service(srv->ctx);
	}
	return false;
}

/* Service thread (final: after the context is gone): serve the listed. */
static void ws_drain_pending(struct http_server *srv, bool final)
{
	pthread_mutex_lock(&srv->mu);
	struct http_ws *list = srv->ws_pending;
	srv->ws_pending = NULL;
	for (struct http_ws *w = list; w; w = w->pending_next)
		w->pending = false;
	pthread_mutex_unlock(&srv->mu);
	while (list) {
		struct http_ws *ws = list;
		list = ws->pending_next;
		if (!final)
			ws_service(ws);
		ws_unref(ws);
	}
}

/* Service thread: the connection of ws is closing; last call for ud. */
static void ws_finish(struct http_ws *ws)
{
	struct http_server *srv = ws->srv;
	if (ws->conn)
		ws->conn->ws = NULL;
	ws->conn = NULL;
	pthread_mutex_lock(&srv->mu);
	ws->closed = true;
	struct ws_msg *q = ws->q_head;
	ws->q_head = ws->q_tail = NULL;
	ws->q_bytes = 0;
	pthread_mutex_unlock(&srv->mu);
	while (q) {
		struct ws_msg *m = q;
		q = m->next;
		free(m);
	}
	if (ws->opened)
		atomic_fetch_sub_explicit(&srv->st_ws_open, 1, memory_order_relaxed);
	int code = ws->final_code ? ws->final_code : LWS_CLOSE_STATUS_ABNORMAL_CLOSE;
	log_debug("websocket %s: closed (%d)", ws->id, code);
	ws->ops.on_close(ws->ud, code);
	ws_unref(ws);
}

/* The first close code (ours or the peer's) is the one on_close reports. */
static void ws_note_code(struct http_ws *ws, int code)
{
	if (!ws->final_code)
		ws->final_code = code;
}

static int ws_on_established(struct conn *c)
{
	struct http_ws *ws = c->ws;
	if (!ws)
		return -1;
	c->state = CONN_WS;
	ws->opened = true;
	atomic_fetch_add_explicit(&c->srv->st_ws_open, 1, memory_order_relaxed);
	if (ws->ops.on_open)
		ws->ops.on_open(ws->ud, ws);
	if (ws->conn)
		ws_service(ws); /* sends queued before the handshake, a pause */
	return 0;
}

static int ws_on_receive(struct conn *c, const void *in, size_t len)
{
	struct http_ws *ws = c->ws;
	if (!ws)
		return -1;
	bool first = lws_is_first_fragment(c->wsi);
	bool final = lws_is_final_fragment(c->wsi);
	if (first)
		ws->rx_len = 0;
	ws->rx_len += len;
	if (ws->rx_len > c->srv->ws_max_message) {
		static const char why[] = "message too big";
		ws_note_code(ws, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
		lws_close_reason(c->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
				 (unsigned char *)why, sizeof(why) - 1);
		return -1;
	}
	if (ws->ops.on_message)
		ws->ops.on_message(ws->ud, in, len, first, final,
				   lws_frame_is_binary(c->wsi) != 0);
	return 0;
}

static int ws_on_writeable(struct conn *c)
{
	struct http_ws *ws = c->ws;
	struct http_server *srv = c->srv;
	if (!ws)
		return 0;
	for (int i = 0; i < HTTP_WS_PIECES; i++) {
		pthread_mutex_lock(&srv->mu);
		struct ws_msg *m = ws->q_head;
		bool close = ws->close_asked;
		int code = ws->close_code;
		char reason[sizeof(ws->close_reason)];
		memcpy(reason, ws->close_reason, sizeof(reason));
		pthread_mutex_unlock(&srv->mu);
		if (!m) {
			if (!close)
				return 0;
			ws_note_code(ws, code);
			lws_close_reason(c->wsi, (enum lws_close_status)code,
					 (unsigned char *)reason, strlen(reason));
			return -1;
		}
		/* only this thread takes messages off the head: m stays */
		size_t piece = m->len - m->pos;
		if (piece > HTTP_WS_PIECE)
			piece = HTTP_WS_PIECE;
		int flags = lws_write_ws_flags(m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT,
					       m->pos == 0, m->pos + piece == m->len);
		/* the LWS_PRE bytes lws writes the frame header into are the
		 * headroom, or message bytes already sent */
		if (lws_write(c->wsi, m->buf + LWS_PRE + m->pos, piece,
			      (enum lws_write_protocol)flags) < (int)piece)
			return -1;
		bool done, ready;
		pthread_mutex_lock(&srv->mu);
		m->pos += piece;
		ws->q_bytes -= piece;
		done = m->pos == m->len;
		if (done) {
			ws->q_head = m->next;
			if (!ws->q_head)
				ws->q_tail = NULL;
		}
		ready = ws->want_ready && ws->q_bytes < srv->ws_high_water / 4;
		if (ready)
			ws->want_ready = false;
		pthread_mutex_unlock(&srv->mu);
		if (done)
			free(m);
		if (ready && ws->ops.on_send_ready)
			ws->ops.on_send_ready(ws->ud);
		if (!c->ws || lws_send_pipe_choked(c->wsi))
			break;
	}
	pthread_mutex_lock(&srv->mu);
	bool more = ws->q_head || ws->close_asked;
	pthread_mutex_unlock(&srv->mu);
	if (more)
		lws_callback_on_writable(c->wsi);
	return 0;
}

/* The 101 from lws: add X-Request-Id. */
static int ws_add_headers(struct conn *c, struct lws_process_html_args *args)
{
	if (!c->ws || !args)
		return 0;
	unsigned char *p = (unsigned char *)args->p;
	if (lws_add_http_header_by_name(c->wsi, (const unsigned char *)"x-request-id:",
					(const unsigned char *)c->ws->id,
					(int)strlen(c->ws->id), &p,
					p + args->max_len))
		return 0; /* no room: the 101 goes without it */
	args->max_len -= (int)(p - (unsigned char *)args->p);
	args->p = (char *)p;
	return 0;
}

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/*
 * The subprotocol lws will bind: walking the offered list in the client's
 * order as lws_process_ws_upgrade does, the first name that is one of ours.
 * Tokens before it must be what lws's tokenizer takes (tchars, at most
 * HTTP_WS_NAME_MAX bytes, no empty elements), or lws would close. 0 and
 * *chosen (NULL: none of ours offered), or -1 for a list lws would refuse.
 */
static int ws_pick(const struct http_server *srv, const char *list, const char **chosen)
{
	*chosen = NULL;
	const char *p = list;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *t = p;
		while (is_tchar((unsigned char)*p))
			p++;
		size_t n = (size_t)(p - t);
		while (*p == ' ' || *p == '\t')
			p++;
		if (!n || n > HTTP_WS_NAME_MAX || (*p && *p != ','))
			return -1;
		for (size_t i = 0; srv->ws_protos[i]; i++) {
			if (strlen(srv->ws_protos[i]) == n && memcmp(srv->ws_protos[i], t, n) == 0) {
				*chosen = srv->ws_protos[i];
				return 0;
			}
		}
		if (!*p)
			return 0;
		p++; /* ',' */
	}
}

/* The WebSocket handshake as RFC 6455 4.2.1 (and lws) want it, and the
 * subprotocol. 0 to go on, 1 after a reject. */
static int ws_check(struct conn *c, struct http_request *req)
{
	struct http_server *srv = c->srv;
	struct lws *wsi = c->wsi;
	char v[32];
	if (strcmp(req->method, "GET") != 0) {
		reject(c, 400, "bad_request", "a WebSocket upgrade must be a GET");
		return 1;
	}
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) ||
	    (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) &&
	     (hdr_small(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, v, sizeof(v)) != 1 || v[0] != '0'))) {
		reject(c, 400, "bad_request", "a WebSocket upgrade has no body");
		return 1;
	}
	const char *conn = req->hdr[HDR_CONNECTION];
	if (!conn || strlen(conn) > HTTP_WS_HDR_MAX || !list_has_token(conn, "upgrade")) {
		reject(c, 400, "bad_request", "WebSocket upgrade without \"Connection: Upgrade\"");
		return 1;
	}
	int klen = lws_hdr_total_length(wsi, WSI_TOKEN_KEY);
	if (!lws_hdr_total_length(wsi, WSI_TOKEN_HOST) || klen < 1 || klen > HTTP_WS_KEY_MAX) {
		reject(c, 400, "bad_request", "WebSocket upgrade without Host or a valid Sec-WebSocket-Key");
		return 1;
	}
	if (hdr_small(wsi, WSI_TOKEN_VERSION, v, sizeof(v)) <= 0 || strcmp(v, "13") != 0) {
		static const struct http_header h = { "Sec-WebSocket-Version", "13" };
		req->close = true;
		stat_inc(&srv->st_rejected);
		if (build_error(req, 426, "upgrade_required", &h, 1,
				"only WebSocket version 13 is supported") != 0)
			reply_nothing(req);
		conn_start_write(c);
		return 1;
	}
	const char *offered = req->hdr[HDR_WS_PROTOCOL];
	if (offered && strlen(offered) > HTTP_WS_HDR_MAX) {
		reject(c, 400, "subprotocol_header_too_long",
		       "Sec-WebSocket-Protocol is over %d bytes, more than this server can take"
		       " (so no bearer token there: use Authorization)", HTTP_WS_HDR_MAX);
		return 1;
	}
	const char *chosen = NULL;
	if (offered && ws_pick(srv, offered, &chosen) != 0) {
		reject(c, 400, "bad_request", "malformed Sec-WebSocket-Protocol");
		return 1;
	}
	if (!chosen) {
		char list[256] = "";
		size_t n = 0;
		for (size_t i = 0; srv->ws_protos[i] && n < sizeof(list); i++)
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "",
					      srv->ws_protos[i]);
		reject(c, 400, "unsupported_subprotocol",
		       "no supported WebSocket subprotocol offered; supported: %s", list);
		return 1;
	}
	req->ws_protocol = chosen;
	return 0;
}

/* Write c's reply now, inside CONFIRM_UPGRADE; lws then closes. */
static int ws_reply_now(struct conn *c)
{
	struct http_request *req = c->req;
	size_t n = req->out_end - req->out_pos;
	if (n && lws_write(c->wsi, req->out + req->out_pos, n, LWS_WRITE_HTTP) < (int)n)
		log_debug("request %s: cannot write the reply to the upgrade", req->id);
	else
		stat_inc(&c->srv->st_replies);
	if (log_enabled(LOG_DEBUG))
		log_debug("request %s: %s %s (upgrade) -> %d", req->id, req->method,
			  req->path, req->status);
	c->req = NULL;
	req_free(req);
	c->state = CONN_IDLE;
	return -1;
}

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE. 0: lws upgrades; -1: lws closes. */
static int on_upgrade(struct conn *c, const char *up)
{
	struct http_server *srv = c->srv;
	char *uri = NULL;
	int urilen = 0;
	/* h2c (we write HTTP/1.1), or no WebSocket endpoint: refused by
	 * closing */
	if (!up || strcasecmp(up, "websocket") != 0 || !srv->ws_protos ||
	    lws_http_get_uri_and_method(c->wsi, &uri, &urilen) < 0 || !uri || urilen < 0) {
		stat_inc(&srv->st_rejected);
		return -1;
	}
	int r = request_head(c, uri, (size_t)urilen);
	if (r < 0)
		return -1;
	struct http_request *req = c->req;
	req->close = true; /* any HTTP answer ends the connection */
	if (r == 0)
		r = ws_check(c, req);
	if (r == 0) {
		req->ws_upgrade = true;
		c->in_upgrade = true;
		dispatch(c);
		c->in_upgrade = false;
	}
	if (c->ws) {
		/* accepted; the request ends here */
		c->req = NULL;
		req_free(req);
		return 0;
	}
	if (c->state == CONN_WRITING)
		return ws_reply_now(c);
	log_error("request %s: the handler did not answer the WebSocket upgrade before"
		  " returning; closing the connection", req->id);
	return -1; /* conn_destroy orphans the request */
}

struct http_ws *http_accept_websocket(struct http_request *req,
				      const struct http_ws_ops *ops, void *ud)
{
	if (!req || !ops || !ops->on_close) {
		log_error("http_accept_websocket: request and ops with on_close are required");
		return NULL;
	}
	struct http_server *srv = req->srv;
	struct conn *c = req->conn;
	if (!req->ws_upgrade || !on_loop_thread(srv) || !c || !c->in_upgrade || c->ws) {
		log_error("request %s: http_accept_websocket outside the handler of an upgrade"
			  " request; ignored", req->id);
		return NULL;
	}
	bool orphan = false;
	if (!reply_begin(req, &orphan))
		return NULL;
	struct http_ws *ws = calloc(1, sizeof(*ws));
	if (!ws) {
		reply_failed(req, -ENOMEM);
		return NULL;
	}
	ws->srv = srv;
	ws->ops = *ops;
	ws->ud = ud;
	ws->refs = 2; /* the owner's and the server's */
	ws->conn = c;
	memcpy(ws->id, req->id, sizeof(ws->id));
	c->ws = ws;
	req->status = 101;
	stat_inc(&srv->st_ws_accepted);
	if (srv->on_reply)
		srv->on_reply(srv->ud, req, 101);
	pthread_mutex_lock(&srv->mu);
	req->stage = STAGE_CONN;
	pthread_mutex_unlock(&srv->mu);
	log_debug("request %s: websocket accepted (%s)", req->id, req->ws_protocol);
	return ws;
}

int http_ws_send(struct http_ws *ws, const void *data, size_t len, bool binary)
{
	if (!ws || (!data && len))
		return -EINVAL;
	if (len > HTTP_MAX_RESPONSE)
		return -EMSGSIZE;
	struct http_server *srv = ws->srv;
	struct ws_msg *m = malloc(sizeof(*m) + LWS_PRE + len);
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->len = len;
	m->pos = 0;
	m->binary = binary;
	if (len)
		memcpy(m->buf + LWS_PRE, data, len);
	int rc = 0;
	bool direct = false;
	pthread_mutex_lock(&srv->mu);
	if (ws->closed || ws->close_asked) {
		rc = -EPIPE;
	} else if (ws->q_bytes && ws->q_bytes + len > 4 * srv->ws_high_water) {
		ws->want_ready = true;
		rc = -ENOBUFS;
	} else {
		if (ws->q_tail)
			ws->q_tail->next = m;
		else
			ws->q_head = m;
		ws->q_tail = m;
		ws->q_bytes += len;
		m = NULL;
		if (ws->q_bytes > srv->ws_high_water) {
			ws->want_ready = true;
			rc = -EAGAIN;
		}
		direct = ws_kick_locked(ws);
	}
	pthread_mutex_unlock(&srv->mu);
	free(m);
	if (direct)
		ws_service(ws);
	return rc;
}

void http_ws_pause_rx(struct http_ws *ws, bool pause)
{
	if (!ws)
		return;
	pthread_mutex_lock(&ws->srv->mu);
	ws->pause_want = pause;
	bool direct = ws_kick_locked(ws);
	pthread_mutex_unlock(&ws->srv->mu);
	if (direct)
		ws_service(ws);
}

/* With srv->mu held. */
static void ws_close_locked(struct http_ws *ws, int code, const char *reason)
{
	if (ws->close_asked || ws->closed)
		return;
	if (code < 1000 || code > 4999 || code == 1004 || code == 1005 || code == 1006 ||
	    code == 1015)
		code = LWS_CLOSE_STATUS_NORMAL;
	ws->close_asked = true;
	ws->close_code = code;
	snprintf(ws->close_reason, sizeof(ws->close_reason), "%s", reason ? reason : "");
}

void http_ws_close(struct http_ws *ws, int code, const char *reason)
{
	if (!ws)
		return;
	pthread_mutex_lock(&ws->srv->mu);
	ws_close_locked(ws, code, reason);
	bool direct = ws_kick_locked(ws);
	pthread_mutex_unlock(&ws->srv->mu);
	if (direct)
		ws_service(ws);
}

void http_ws_release(struct http_ws *ws)
{
	if (ws)
		ws_unref(ws);
}

/* Stopping: close every WebSocket (1001), after what is queued. */
static void ws_close_all(struct http_server *srv)
{
	for (struct conn *c = srv->conns; c; c = c->next) {
		struct http_ws *ws = c->ws;
		if (!ws)
			continue;
		pthread_mutex_lock(&srv->mu);
		ws_close_locked(ws, LWS_CLOSE_STATUS_GOINGAWAY, "server stopping");
		pthread_mutex_unlock(&srv->mu);
		ws_service(ws);
	}
}

bool http_request_is_websocket(const struct http_request *req)
{
	return req && req->ws_upgrade;
}

const char *http_request_ws_protocol(const struct http_request *req)
{
	return req && req->ws_upgrade ? req->ws_protocol : NULL;
}

/* ---- TLS ---- */

static void tls_pair_release(struct tls_pair *p)
{
	X509_free(p->cert);
	sk_X509_pop_free(p->chain, X509_free);
	EVP_PKEY_free(p->key);
	X509_STORE_free(p->client_store);
	sk_X509_NAME_pop_free(p->client_names, X509_NAME_free);
	memset(p, 0, sizeof(*p));
}

/* The oldest queued OpenSSL error as text; the queue is emptied. */
static const char *tls_err(char *buf, size_t cap)
{
	unsigned long e = ERR_get_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	if (r)
		snprintf(buf, cap, "%s", r);
	else if (e)
		ERR_error_string_n(e, buf, cap);
	else
		snprintf(buf, cap, "unknown reason");
	ERR_clear_error();
	return buf;
}

/* No passphrase: an encrypted key is refused (OpenSSL's default callback
 * would prompt on the terminal). */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(bool *)u = true;
	return -1;
}

/* Every certificate in a PEM file, in order, into out (the first read as
 * SSL_CTX_use_certificate_chain_file reads it: trusted-certificate form
 * allowed). what names the file in messages. The count, or -1 with a
 * reason in err (unreadable, over 1 MiB, a damaged certificate). */
static int tls_read_certs(const char *file, const char *what, STACK_OF(X509) *out, char *err,
			  size_t errlen)
{
	char *pem = NULL, why[160];
	size_t len = 0;
	bool encrypted = false;
	int n = -1;
	BIO *bio = NULL;
	int r = read_file_bounded(file, HTTP_TLS_FILE_MAX, &pem, &len);
	if (r) {
		snprintf(err, errlen, "cannot read %s file \"%s\": %s", what, file,
			 r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
		goto out;
	}
	if (!(bio = BIO_new_mem_buf(pem, (int)len))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0;; i++) {
		X509 *x = i ? PEM_read_bio_X509(bio, NULL, tls_no_passphrase, &encrypted)
			    : PEM_read_bio_X509_AUX(bio, NULL, tls_no_passphrase, &encrypted);
		if (!x)
			break;
		if (!sk_X509_push(out, x)) {
			X509_free(x);
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	/* the loop ends at the end of the file, or at a damaged certificate */
	unsigned long e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
		ERR_clear_error();
	} else if (e) {
		snprintf(err, errlen, "damaged certificate in %s file \"%s\" (OpenSSL: %s)", what,
			 file, tls_err(why, sizeof(why)));
		goto out;
	}
	n = sk_X509_num(out);
out:
	BIO_free(bio);
	free(pem);
	return n;
}

/* The certificate and then its chain, as SSL_CTX_use_certificate_chain_file
 * reads them. 0, or -1 with a reason in err. */
static int tls_read_chain(const char *file, struct tls_pair *p, char *err, size_t errlen)
{
	if (!(p->chain = sk_X509_new_null())) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int n = tls_read_certs(file, "certificate", p->chain, err, errlen);
	if (n == 0)
		snprintf(err, errlen, "no certificate in \"%s\"", file);
	if (n <= 0)
		return -1;
	p->cert = sk_X509_shift(p->chain);
	return 0;
}

/* The client CA certificates: at least one, every one a CA. 0, or -1 with a
 * reason in err. */
static int tls_read_client_cas(const char *file, struct tls_pair *p, char *err, size_t errlen)
{
	char why[160];
	STACK_OF(X509) *cas = sk_X509_new_null();
	p->client_store = X509_STORE_new();
	p->client_names = sk_X509_NAME_new_null();
	int rc = -1;
	if (!cas || !p->client_store || !p->client_names) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	int n = tls_read_certs(file, "client CA", cas, err, errlen);
	if (n == 0)
		snprintf(err, errlen, "no certificate in client CA file \"%s\"", file);
	if (n <= 0)
		goto out;
	for (int i = 0; i < n; i++) {
		X509 *ca = sk_X509_value(cas, i);
		if (X509_check_ca(ca) < 1) {
			snprintf(err, errlen,
				 "certificate %d in client CA file \"%s\" is not a CA certificate",
				 i + 1, file);
			goto out;
		}
		X509_NAME *name = X509_NAME_dup(X509_get_subject_name(ca));
		if (!name || X509_STORE_add_cert(p->client_store, ca) != 1 ||
		    !sk_X509_NAME_push(p->client_names, name)) {
			X509_NAME_free(name);
			snprintf(err, errlen, "client CA file \"%s\": %s", file,
				 tls_err(why, sizeof(why)));
			goto out;
		}
	}
	/* a client certificate must be made for TLS clients, and verify within
	 * a chain of reasonable length; no CRLs are consulted (docs/authentication.md) */
	X509_STORE_set_purpose(p->client_store, X509_PURPOSE_SSL_CLIENT);
	X509_STORE_set_depth(p->client_store, 4);
	rc = 0;
out:
	sk_X509_pop_free(cas, X509_free);
	return rc;
}

/* The private key. 0, or -1 with a reason in err. The file's bytes are
 * wiped before they are freed. */
static int tls_read_key(const char *file, struct tls_pair *p, char *err, size_t errlen)
{
	char *pem = NULL, why[160];
	size_t len = 0;
	bool encrypted = false;
	int rc = -1;
	BIO *bio = NULL;
	int r = read_file_bounded(file, HTTP_TLS_FILE_MAX, &pem, &len);
	if (r) {
		snprintf(err, errlen, "cannot read key file \"%s\": %s", file,
			 r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
		goto out;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	p->key = PEM_read_bio_PrivateKey(bio, NULL, tls_no_passphrase, &encrypted);
	if (!p->key) {
		if (encrypted) {
			ERR_clear_error();
			snprintf(err, errlen, "the key in \"%s\" is encrypted (not supported)", file);
		} else {
			snprintf(err, errlen, "no private key in \"%s\" (OpenSSL: %s)", file,
				 tls_err(why, sizeof(why)));
		}
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	secure_zero(pem, len);
	free(pem);
	return rc;
}

/*
 * Read a certificate (with its chain) and key pair and check it: the key
 * matches the certificate, and OpenSSL accepts both at its security level
 * (what the handshake will check too). 0 and the pair in out (the caller
 * releases it), or -1 with a reason in err.
 */
static int tls_pair_load(const char *cert_file, const char *key_file, const char *ca_file,
			 struct tls_pair *out, char *err, size_t errlen)
{
	struct tls_pair p = { 0 };
	SSL_CTX *probe = NULL;
	char why[160];
	int rc = -1;
	ERR_clear_error();
	if (tls_read_chain(cert_file, &p, err, errlen) || tls_read_key(key_file, &p, err, errlen))
		goto out;
	if (ca_file && tls_read_client_cas(ca_file, &p, err, errlen))
		goto out;
	if (X509_check_private_key(p.cert, p.key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "the key in \"%s\" does not match the certificate in \"%s\"",
			 key_file, cert_file);
		goto out;
	}
	probe = SSL_CTX_new(TLS_server_method());
	if (!probe) {
		snprintf(err, errlen, "cannot check the certificate: %s", tls_err(why, sizeof(why)));
		goto out;
	}
	if (SSL_CTX_use_cert_and_key(probe, p.cert, p.key, p.chain, 1) != 1) {
		snprintf(err, errlen, "certificate \"%s\" refused: %s", cert_file,
			 tls_err(why, sizeof(why)));
		goto out;
	}
	*out = p;
	memset(&p, 0, sizeof(p));
	rc = 0;
out:
	SSL_CTX_free(probe);
	tls_pair_release(&p);
	ERR_clear_error();
	return rc;
}

/* Log which certificate new connections get: subject and expiry, nothing
 * secret. */
static void tls_announce(const struct http_server *srv, const char *what)
{
	X509 *x = srv->tls_pair.cert;
	char subject[256], until[32] = "?";
	struct tm tm;
	if (!X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject)))
		snprintf(subject, sizeof(subject), "?");
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
	log_info("tls: %s certificate \"%s\" from \"%s\", valid until %s", what, subject,
		 srv->tls_cert_file, until);
	if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
		log_warn("tls: the certificate in \"%s\" has expired", srv->tls_cert_file);
	if (srv->tls_pair.client_names)
		log_info("tls: asking clients for a certificate issued by one of %d CAs from \"%s\" (optional; one that does not verify fails the handshake)",
			 sk_X509_NAME_num(srv->tls_pair.client_names), srv->tls_client_ca_file);
}

static void file_sig_get(const char *path, struct file_sig *sig)
{
	struct stat st;
	memset(sig, 0, sizeof(*sig));
	if (stat(path, &st) != 0) {
		sig->err = errno ? errno : EIO;
		return;
	}
	sig->dev = st.st_dev;
	sig->ino = st.st_ino;
	sig->size = st.st_size;
	sig->mtime = st.st_mtim;
	sig->ctime = st.st_ctim;
}

static bool file_sig_same(const struct file_sig *a, const struct file_sig *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino &&
	       a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
	       a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The signatures of the certificate, key and client CA files (all zero for
 * the last when there is none). */
static void tls_sigs(const struct http_server *srv, struct file_sig sig[3])
{
	file_sig_get(srv->tls_cert_file, &sig[0]);
	file_sig_get(srv->tls_key_file, &sig[1]);
	if (srv->tls_client_ca_file)
		file_sig_get(srv->tls_client_ca_file, &sig[2]);
	else
		memset(&sig[2], 0, sizeof(sig[2]));
}

/* Service thread: read the files again and serve them if they are good. */
static void tls_reload(struct http_server *srv)
{
	struct tls_pair p;
	char err[768];
	if (tls_pair_load(srv->tls_cert_file, srv->tls_key_file, srv->tls_client_ca_file, &p, err,
			  sizeof(err)) != 0) {
		stat_inc(&srv->st_tls_reload_failures);
		log_error("tls: %s; still serving the previous certificate", err);
		return;
	}
	tls_pair_release(&srv->tls_pair);
	srv->tls_pair = p;
	stat_inc(&srv->st_tls_reloads);
	tls_announce(srv, "reloaded: new connections get");
}

/*
 * Service thread, from the tick and on wake-ups: when asked
 * (http_server_reload_tls), read the pair now; otherwise, once a second,
 * read it when the files differ from the last read and have not moved since
 * the previous look, so that a pair replaced file by file is read whole, and
 * a bad pair is read (and logged) once per change.
 */
static void tls_poll(struct http_server *srv, bool tick)
{
	if (!srv->tls)
		return;
	bool asked = atomic_exchange(&srv->tls_reload_asked, false);
	int64_t now = now_ms();
	if (!asked && (!tick || now < srv->tls_next_check))
		return;
	srv->tls_next_check = now + HTTP_TLS_CHECK_MS;
	struct file_sig sig[3];
	tls_sigs(srv, sig);
	bool moved = false, tried = true;
	for (size_t i = 0; i < 3; i++) {
		moved = moved || !file_sig_same(&sig[i], &srv->tls_seen[i]);
		tried = tried && file_sig_same(&sig[i], &srv->tls_tried[i]);
	}
	memcpy(srv->tls_seen, sig, sizeof(sig));
	if (!asked && (moved || tried))
		return;
	memcpy(srv->tls_tried, sig, sizeof(sig));
	tls_reload(srv);
}

/* OpenSSL calls this on the service thread for every full handshake (not for
 * a resumed session), before it picks the cipher: serve the current pair. */
static int tls_cert_cb(SSL *ssl, void *arg)
{
	struct http_server *srv = arg;
	struct tls_pair *p = &srv->tls_pair;
	SSL_certs_clear(ssl);
	if (SSL_use_cert_and_key(ssl, p->cert, p->key, p->chain, 1) != 1) {
		/* not expected: the pair passed the same check when loaded */
		ERR_clear_error();
		return 0; /* the handshake fails with internal_error */
	}
	if (p->client_store) {
		/* ask for a client certificate; none is fine (a bearer token may
		 * follow), one that does not verify fails the handshake */
		STACK_OF(X509_NAME) *names = SSL_dup_CA_list(p->client_names);
		if (!names || SSL_set1_verify_cert_store(ssl, p->client_store) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			ERR_clear_error();
			return 0;
		}
		SSL_set_client_CA_list(ssl, names);
		SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, NULL);
	}
	return 1;
}

/* LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS: the vhost's SSL_CTX,
 * during lws_create_context. Nonzero fails the context. */
static int on_tls_ctx(struct http_server *srv, SSL_CTX *ssl_ctx)
{
	char why[160];
	if (!srv || !srv->tls || !ssl_ctx || !srv->tls_pair.cert) {
		log_error("http server: TLS context without its server");
		return -1;
	}
	SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 |
			    SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
			    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_clear_options(ssl_ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION |
			      SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION);
	if (SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ssl_ctx, 0) != 1 ||
	    SSL_CTX_set_cipher_list(ssl_ctx, HTTP_TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ssl_ctx, HTTP_TLS13_SUITES) != 1) {
		log_error("http server: cannot configure TLS: %s", tls_err(why, sizeof(why)));
		return -1;
	}
	SSL_CTX_set_cert_cb(ssl_ctx, tls_cert_cb, srv);
	/* resumed sessions keep the client certificate they were made with;
	 * OpenSSL refuses to resume a verified session without an id context */
	static const unsigned char sid_ctx[] = "sandbox-controller";
	if (SSL_CTX_set_session_id_context(ssl_ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1) {
		log_error("http server: cannot configure TLS: %s", tls_err(why, sizeof(why)));
		return -1;
	}
	return 0;
}

/* ---- the protocol callback ---- */

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
		    void *user, void *in, size_t len)
{
	/* per-session data is not used (see the top of the file): user is
	 * only ever the SSL_CTX of LOAD_EXTRA_SERVER_VERIFY_CERTS */
	struct lws_context *ctx = lws_get_context(wsi);
	struct http_server *srv = ctx ? lws_context_user(ctx) : NULL;
	struct conn *c;

	switch (reason) {
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
		return srv && srv->stopping ? -1 : 0;

	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		if (!srv || !conn_new(srv, wsi))
			return -1;
		stat_inc(&srv->st_connections);
		return 0;

	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		c = conn_of(wsi);
		return c ? on_upgrade(c, in) : -1;

	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return 0; /* decided in CONFIRM_UPGRADE */

	case LWS_CALLBACK_ADD_HEADERS:
		c = conn_of(wsi);
		return c ? ws_add_headers(c, in) : 0;

	case LWS_CALLBACK_ESTABLISHED:
		c = conn_of(wsi);
		return c ? ws_on_established(c) : -1;

	case LWS_CALLBACK_RECEIVE:
		c = conn_of(wsi);
		return c ? ws_on_receive(c, in, len) : -1;

	case LWS_CALLBACK_SERVER_WRITEABLE:
		c = conn_of(wsi);
		return c ? ws_on_writeable(c) : 0;

	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		c = conn_of(wsi);
		if (c && c->ws) {
			const unsigned char *p = in;
			ws_note_code(c->ws, p && len >= 2 ? (p[0] << 8) | p[1] :
					    LWS_CLOSE_STATUS_NO_STATUS);
		}
		return 0; /* lws answers the close */

	case LWS_CALLBACK_RECEIVE_PONG:
		return 0;

	case LWS_CALLBACK_HTTP:
		c = conn_of(wsi);
		return c ? on_http(c, in, len) : -1;

	case LWS_CALLBACK_HTTP_BODY:
		c = conn_of(wsi);
		return c ? on_body(c, in, len) : 0;

	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		c = conn_of(wsi);
		return c ? on_body_done(c) : 0;

	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_RAW_WRITEABLE:
		c = conn_of(wsi);
		return c ? on_writeable(c) : 0;

	case LWS_CALLBACK_RAW_ADOPT:
		c = conn_of(wsi);
		return c ? on_raw_adopt(c) : -1;

	case LWS_CALLBACK_RAW_RX:
		return 0; /* the CONNECT request: answered on adopt */

	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		if (srv) {
			drain_queue(srv, false);
			ws_drain_pending(srv, false);
			stream_service(srv);
			tls_poll(srv, false);
		}
		return 0;

	case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
		return on_tls_ctx(srv, user);

	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_RAW_CLOSE:
	case LWS_CALLBACK_WSI_DESTROY:
		c = conn_of(wsi);
		if (c)
			conn_destroy(c);
		return 0;

	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
	/* not a token: never matches an offered WebSocket subprotocol */
	{ "http (plain)", callback, 0, 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* ws_protocols into srv: copies, and the lws protocol list. 0 or -1 with
 * err. */
static int ws_setup(struct http_server *srv, const struct http_server_opts *opts,
		    char *err, size_t errlen)
{
	srv->ws_max_message = opts->ws_max_message ? opts->ws_max_message : 1u << 20;
	srv->ws_high_water = opts->ws_send_high_water ? opts->ws_send_high_water : 256u << 10;
	int ping = opts->ws_ping_s > 0 ? opts->ws_ping_s : 30;
	if (ping > 30000)
		ping = 30000;
	srv->ws_retry.secs_since_valid_ping = (uint16_t)ping;
	srv->ws_retry.secs_since_valid_hangup = (uint16_t)(2 * ping);
	if (!opts->ws_protocols)
		return 0;
	size_t n = 0;
	while (opts->ws_protocols[n])
		n++;
	if (!n) {
		snprintf(err, errlen, "http server: ws_protocols is empty");
		return -1;
	}
	srv->ws_protos = calloc(n + 1, sizeof(char *));
	srv->protocols = calloc(n + 2, sizeof(struct lws_protocols));
	if (!srv->ws_protos || !srv->protocols)
		goto oom;
	srv->protocols[0] = protocols[0];
	for (size_t i = 0; i < n; i++) {
		const char *name = opts->ws_protocols[i];
		if (!header_name_valid(name) || strlen(name) > HTTP_WS_NAME_MAX ||
		    strcmp(name, "http") == 0 ||
		    strncmp(name, HTTP_WS_BEARER, sizeof(HTTP_WS_BEARER) - 1) == 0) {
			snprintf(err, errlen, "http server: invalid WebSocket subprotocol \"%s\"", name);
			return -1;
		}
		srv->ws_protos[i] = strdup(name);
		if (!srv->ws_protos[i])
			goto oom;
		srv->protocols[i + 1] = (struct lws_protocols){
			srv->ws_protos[i], callback, 0, HTTP_WS_RX_BUF, (unsigned)(i + 1),
			NULL, HTTP_WS_PIECE + 16 };
	}
	return 0;
oom:
	snprintf(err, errlen, "http server: out of memory");
	return -1;
}

/* ---- the server ---- */

/* lws errors matter while a context is being created (a bad certificate,
 * say); once serving, lws reports client misbehaviour at ERR too ("Ran out
 * of header data space"), which a client must not be able to flood the log
 * with: those go to debug. */
static atomic_int lws_creating;

static void lws_log_emit(int level, const char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if ((level & LLL_ERR) && atomic_load(&lws_creating))
		log_error("lws: %.*s", (int)n, line);
	else if (level & (LLL_ERR | LLL_WARN))
		log_debug("lws: %.*s", (int)n, line);
}

static bool is_ipv4_literal(const char *s)
{
	for (; *s; s++) {
		if (!((*s >= '0' && *s <= '9') || *s == '.'))
			return false;
	}
	return true;
}

/*
 * Try the bind ourselves first, for a message that names the reason, and
 * because a failed lws_create_context leaks a little in lws 4.1.6. Interface
 * names (not numeric addresses) are left to lws.
 */
static int precheck_listen(const char *addr, int port, char *err, size_t errlen)
{
	if (port == 0)
		return 0;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_socktype = SOCK_STREAM;
	char ps[8];
	snprintf(ps, sizeof(ps), "%d", port);
	const char *host = addr && *addr ? addr : NULL;
	if (getaddrinfo(host, ps, &hints, &res) != 0 || !res)
		return 0;
	int rc = 0;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
			snprintf(err, errlen, "http server: cannot listen on %s:%d: %s",
				 host ? host : "*", port, strerror(errno));
			rc = -1;
		}
		close(fd);
	}
	freeaddrinfo(res);
	return rc;
}

struct http_server *http_server_new(const struct http_server_opts *opts,
				    http_handler_fn handler, void *ud, char *err,
				    size_t errlen)
{
	struct http_server *srv = NULL;
	if (!opts || !handler) {
		snprintf(err, errlen, "http server: options and handler are required");
		return NULL;
	}
	if (opts->port < 0 || opts->port > 65535) {
		snprintf(err, errlen, "http server: port %d is out of range", opts->port);
		return NULL;
	}
	if (!opts->tls_cert_file != !opts->tls_key_file) {
		snprintf(err, errlen, "http server: TLS needs both a certificate and a key file");
		return NULL;
	}
	if (opts->tls_client_ca_file && !opts->tls_cert_file) {
		snprintf(err, errlen, "http server: client certificates need TLS");
		return NULL;
	}
	const char *files[] = { opts->tls_cert_file, opts->tls_key_file, opts->tls_client_ca_file };
	static const char *const what[] = { "certificate", "key", "client CA" };
	for (size_t i = 0; i < 3; i++) {
		if (files[i] && access(files[i], R_OK) != 0) {
			snprintf(err, errlen, "http server: cannot read TLS %s file \"%s\": %s",
				 what[i], files[i], strerror(errno));
			return NULL;
		}
	}
	if (precheck_listen(opts->bind_address, opts->port, err, errlen))
		return NULL;
	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		snprintf(err, errlen, "http server: out of memory");
		return NULL;
	}
	pthread_mutex_init(&srv->mu, NULL);
	srv->handler = handler;
	srv->ud = ud;
	srv->on_reply = opts->on_reply;
	srv->max_body = opts->max_body ? opts->max_body : 1u << 20;
	srv->request_timeout_s = opts->request_timeout_s > 0 ? opts->request_timeout_s : 30;
	srv->idle_timeout_s = opts->idle_timeout_s > 0 ? opts->idle_timeout_s : 60;
	srv->stream_body = opts->stream_body;
	srv->stream_high_water = opts->stream_high_water ? opts->stream_high_water
							   : HTTP_STREAM_HIGH_WATER;

	if (ws_setup(srv, opts, err, errlen))
		goto fail;

	if (opts->tls_cert_file) {
		char why[768];
		srv->tls = true;
		srv->tls_cert_file = strdup(opts->tls_cert_file);
		srv->tls_key_file = strdup(opts->tls_key_file);
		if (!srv->tls_cert_file || !srv->tls_key_file)
			goto oom;
		if (opts->tls_client_ca_file &&
		    !(srv->tls_client_ca_file = strdup(opts->tls_client_ca_file)))
			goto oom;
		/* the signatures first: a change while we read is seen later */
		tls_sigs(srv, srv->tls_seen);
		memcpy(srv->tls_tried, srv->tls_seen, sizeof(srv->tls_tried));
		if (tls_pair_load(srv->tls_cert_file, srv->tls_key_file, srv->tls_client_ca_file,
				  &srv->tls_pair, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "http server: TLS: %s", why);
			goto fail;
		}
		tls_announce(srv, "serving");
	}

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);

	/* lws's own answers (its 403s) carry our generic headers too */
	static const char *const generic_headers[][2] = {
		{ "cache-control:", "no-store" },
		{ "x-content-type-options:", "nosniff" },
		{ "x-frame-options:", "DENY" },
		{ "content-security-policy:", "default-src 'none'; frame-ancestors 'none'" },
		{ "referrer-policy:", "no-referrer" },
		{ "strict-transport-security:", "max-age=31536000" }, /* HTTPS only */
	};
	size_t nvh = srv->tls ? 6 : 5;
	for (size_t i = 0; i < nvh; i++) {
		srv->vhost_headers[i] = (struct lws_protocol_vhost_options){
			i + 1 < nvh ? &srv->vhost_headers[i + 1] : NULL, NULL,
			generic_headers[i][0], generic_headers[i][1] };
	}

	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.protocols = srv->protocols ? srv->protocols : protocols;
	info.retry_and_idle_policy = &srv->ws_retry;
	info.port = opts->port;
	info.user = srv;
	info.headers = &srv->vhost_headers[0];
	info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
	const char *ba = opts->bind_address;
	if (ba && *ba && strcmp(ba, "::") != 0) {
		if (strcmp(ba, "0.0.0.0") == 0) {
			info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
		} else {
			srv->iface = strdup(ba);
			if (!srv->iface)
				goto oom;
			info.iface = srv->iface;
			if (is_ipv4_literal(ba))
				info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
		}
	}
	info.max_http_header_data = HTTP_MAX_HEADER_DATA;
	info.max_http_header_pool2 = HTTP_MAX_HEADER_POOL;
	info.pt_serv_buf_size = 16384;
	info.timeout_secs = (unsigned int)srv->request_timeout_s;
	info.timeout_secs_ah_idle = (unsigned int)srv->request_timeout_s;
	info.keepalive_timeout = srv->idle_timeout_s;
	info.alpn = "http/1.1"; /* we write HTTP/1.1 bytes: never negotiate h2 */
	if (srv->tls) {
		/* versions, suites and the certificate callback: on_tls_ctx. No
		 * ALLOW_NON_SSL_ON_SSL_PORT: plain HTTP fails the handshake. */
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = srv->tls_cert_file;
		info.ssl_private_key_filepath = srv->tls_key_file;
	}

	atomic_fetch_add(&lws_creating, 1);
	srv->ctx = lws_create_context(&info);
	atomic_fetch_sub(&lws_creating, 1);
	if (!srv->ctx) {
		snprintf(err, errlen, "http server: cannot listen on %s:%d%s (see the log)",
			 ba && *ba ? ba : "*", opts->port,
			 opts->tls_cert_file ? " with TLS" : "");
		goto fail;
	}
	srv->vh = lws_get_vhost_by_name(srv->ctx, "default");
	srv->port = srv->vh ? lws_get_vhost_listen_port(srv->vh) : -1;
	if (srv->port <= 0) {
		snprintf(err, errlen, "http server: no listening port");
		goto fail;
	}
	srv->lws_alive = true;
	return srv;

oom:
	snprintf(err, errlen, "http server: out of memory");
fail:
	http_server_free(srv);
	return NULL;
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
	struct http_server *srv = container_of(sul, struct http_server, tick);
	/* waking lws_service is the point; run() checks *stop */
	tls_poll(srv, true);
	lws_sul_schedule(srv->ctx, 0, &srv->tick, on_tick, HTTP_TICK_MS * LWS_US_PER_MS);
}

static bool writes_pending(struct http_server *srv)
{
	pthread_mutex_lock(&srv->mu);
	bool queued = srv->queue_head != NULL;
	pthread_mutex_unlock(&srv->mu);
	if (queued)
		return true;
	for (struct conn *c = srv->conns; c; c = c->next) {
		if (c->state == CONN_WRITING || c->ws)
			return true; /* a WebSocket: until its close handshake ends */
	}
	return false;
}

int http_server_run(struct http_server *srv, const volatile int *stop)
{
	if (!srv || !srv->ctx)
		return -1;
	int rc = 0;
	srv->loop_thread = pthread_self();
	atomic_store_explicit(&srv->loop_running, true, memory_order_release);
	log_debug("http server: serving port %d", srv->port);

	lws_sul_schedule(srv->ctx, 0, &srv->tick, on_tick, HTTP_TICK_MS * LWS_US_PER_MS);
	while (!*stop) {
		if (lws_service(srv->ctx, 0) < 0) {
			log_error("http server: the service loop failed");
			rc = -1;
			break;
		}
	}

	/* stop: refuse new connections and requests, finish queued replies */
	srv->stopping = true;
	ws_close_all(srv);
	int64_t deadline = now_ms() + HTTP_DRAIN_MS;
	while (rc == 0 && writes_pending(srv) && now_ms() < deadline) {
		drain_queue(srv, false);
		ws_drain_pending(srv, false);
		if (lws_service(srv->ctx, 0) < 0)
			break;
	}
	log_info("http server stopped: closing %zu connections", srv->nconns);

	lws_sul_cancel(&srv->tick);
	pthread_mutex_lock(&srv->mu);
	srv->lws_alive = false;
	pthread_mutex_unlock(&srv->mu);
	lws_context_destroy(srv->ctx); /* closes every connection */
	srv->ctx = NULL;
	srv->vh = NULL;
	atomic_store_explicit(&srv->loop_running, false, memory_order_release);
	drain_queue(srv, true); /* every request left is orphaned now */
	ws_drain_pending(srv, true);
	stream_notify_drain(srv);
	return rc;
}

void http_server_wake(struct http_server *srv)
{
	if (!srv)
		return;
	pthread_mutex_lock(&srv->mu);
	if (srv->lws_alive)
		lws_cancel_service(srv->ctx);
	pthread_mutex_unlock(&srv->mu);
}

int http_server_port(const struct http_server *srv)
{
	return srv ? srv->port : -1;
}

void http_server_reload_tls(struct http_server *srv)
{
	if (!srv || !srv->tls)
		return;
	atomic_store(&srv->tls_reload_asked, true);
	http_server_wake(srv); /* else the next tick sees it */
}

void http_server_free(struct http_server *srv)
{
	if (!srv)
		return;
	if (srv->ctx) {
		pthread_mutex_lock(&srv->mu);
		srv->lws_alive = false;
		pthread_mutex_unlock(&srv->mu);
		lws_context_destroy(srv->ctx);
		srv->ctx = NULL;
	}
	drain_queue(srv, true);
	ws_drain_pending(srv, true);
	stream_notify_drain(srv);
	pthread_mutex_destroy(&srv->mu);
	for (size_t i = 0; srv->ws_protos && srv->ws_protos[i]; i++)
		free(srv->ws_protos[i]);
	free(srv->ws_protos);
	free(srv->protocols);
	tls_pair_release(&srv->tls_pair);
	free(srv->tls_cert_file);
	free(srv->tls_key_file);
	free(srv->tls_client_ca_file);
	free(srv->iface);
	free(srv);
}

void http_server_get_stats(struct http_server *srv, struct http_server_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!srv)
		return;
	out->connections = atomic_load_explicit(&srv->st_connections, memory_order_relaxed);
	out->requests = atomic_load_explicit(&srv->st_requests, memory_order_relaxed);
	out->replies = atomic_load_explicit(&srv->st_replies, memory_order_relaxed);
	out->dropped_replies = atomic_load_explicit(&srv->st_dropped, memory_order_relaxed);
	out->rejected = atomic_load_explicit(&srv->st_rejected, memory_order_relaxed);
	out->tls_reloads = atomic_load_explicit(&srv->st_tls_reloads, memory_order_relaxed);
	out->tls_reload_failures =
		atomic_load_explicit(&srv->st_tls_reload_failures, memory_order_relaxed);
	out->ws_accepted = atomic_load_explicit(&srv->st_ws_accepted, memory_order_relaxed);
	out->ws_open = atomic_load_explicit(&srv->st_ws_open, memory_order_relaxed);
	out->streams = atomic_load_explicit(&srv->st_streams, memory_order_relaxed);
	out->streams_aborted =
		atomic_load_explicit(&srv->st_streams_aborted, memory_order_relaxed);
}

/* ---- request accessors ---- */

const char *http_request_method(const struct http_request *req)
{
	return req->method;
}

const char *http_request_path(const struct http_request *req)
{
	return req->path;
}

const char *http_request_query(const struct http_request *req, const char *key)
{
	for (size_t i = 0; i < req->nquery; i++) {
		if (strcmp(req->query[i].key, key) == 0)
			return req->query[i].value;
	}
	return NULL;
}

size_t http_request_query_all(const struct http_request *req, const char *key,
			      const char **out, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < req->nquery; i++) {
		if (strcmp(req->query[i].key, key) != 0)
			continue;
		if (n < max)
			out[n] = req->query[i].value;
		n++;
	}
	return n;
}

bool http_request_query_unknown(const struct http_request *req,
				const char *const *allowed, const char **unknown)
{
	for (size_t i = 0; i < req->nquery; i++) {
		bool known = false;
		for (size_t k = 0; allowed && allowed[k]; k++) {
			if (strcmp(req->query[i].key, allowed[k]) == 0) {
				known = true;
				break;
			}
		}
		if (!known) {
			if (unknown)
				*unknown = req->query[i].key;
			return true;
		}
	}
	return false;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
	for (int i = 0; i < HDR_COUNT; i++) {
		if (strcasecmp(name, hdr_names[i]) == 0)
			return req->hdr[i];
	}
	return NULL;
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
	if (len)
		*len = req->body.len;
	return req->body.data ? req->body.data : "";
}

const char *http_request_id(const struct http_request *req)
{
	return req->id;
}

const char *http_request_peer(const struct http_request *req)
{
	return req->peer;
}

const char *http_request_client_cert(const struct http_request *req)
{
	return req->client_cn[0] ? req->client_cn : NULL;
}

int64_t http_request_start_ms(const struct http_request *req)
{
	return req->start_ms;
}

/* ---- replies ---- */

void http_reply_json(struct http_request *req, int status, cJSON *body,
		     const struct http_header *extra, size_t nextra)
{
	bool orphan = false;
	if (!reply_begin(req, &orphan)) {
		cJSON_Delete(body);
		return;
	}
	if (orphan) {
		cJSON_Delete(body);
		reply_orphan(req, status);
		return;
	}
	int rc = build_json(req, status, body, extra, nextra);
	cJSON_Delete(body);
	if (rc) {
		reply_failed(req, rc);
		return;
	}
	reply_submit(req);
}

void http_reply_bytes(struct http_request *req, int status, const char *content_type,
		      const void *data, size_t len, const struct http_header *extra,
		      size_t nextra)
{
	bool orphan = false;
	if (!reply_begin(req, &orphan))
		return;
	if (orphan) {
		reply_orphan(req, status);
		return;
	}
	if (len > HTTP_MAX_RESPONSE) {
		reply_failed(req, -E2BIG);
		return;
	}
	status = status_checked(req, status);
	if (!status_has_body(status))
		len = 0;
	/* the content type is the caller's constant; refuse anything odd */
	const char *ct = content_type && strlen(content_type) < 64 &&
				 !strpbrk(content_type, "\r\n")
			 ? content_type
			 : "application/octet-stream";
	size_t hb = head_bound(req, extra, nextra) + strlen(ct);
	size_t off = LWS_PRE + hb;
	free(req->out);
	req->out = malloc(off + len + 1);
	if (!req->out) {
		reply_failed(req, -ENOMEM);
		return;
	}
	if (len)
		memcpy(req->out + off, data, len);
	head_finish(req, status, ct, len, extra, nextra, hb);
	reply_submit(req);
}

void http_reply_error(struct http_request *req, int status, const char *code,
		      const struct http_header *extra, size_t nextra,
		      const char *fmt, ...)
{
	bool orphan = false;
	if (!reply_begin(req, &orphan))
		return;
	if (orphan) {
		reply_orphan(req, status);
		return;
	}
	char msg[512] = "";
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		if (n < 0)
			msg[0] = '\0';
	}
	int rc = build_error(req, status, code, extra, nextra, msg);
	if (rc) {
		reply_failed(req, rc);
		return;
	}
	reply_submit(req);
}

void http_reply_empty(struct http_request *req, int status,
		      const struct http_header *extra, size_t nextra)
{
	bool orphan = false;
	if (!reply_begin(req, &orphan))
		return;
	if (orphan) {
		reply_orphan(req, status);
		return;
	}
	int rc = build_json(req, status, NULL, extra, nextra);
	if (rc) {
		reply_failed(req, rc);
		return;
	}
	reply_submit(req);
}

void http_request_set_context(struct http_request *req, void *ctx)
{
	req->ctx = ctx;
}

void *http_request_context(const struct http_request *req)
{
	return req->ctx;
}
