/*
 * kube_exec: the Kubernetes exec client over WebSocket.
 *
 * Structure: a client is an lws context plus a service thread that runs
 * lws_service() in a loop. Between two turns of that loop the thread takes
 * the work other threads queued (new sessions, and sessions marked "dirty" by
 * a write, a pause, a resize or a cancel) and applies it: it connects, turns
 * rx flow control on or off, asks for WRITEABLE callbacks, or kills a
 * connection. Data is written only in RAW_WRITEABLE.
 *
 * The connection is a raw lws socket: TLS (OpenSSL over memory BIOs), the
 * HTTP upgrade and the WebSocket framing are done here (see "the client"
 * below for why), so that received payload is handled in bulk.
 *
 * Sessions are reference counted: one reference for the caller (dropped by
 * kube_exec_release), one for the service thread (dropped after on_close),
 * and one for each entry in the dirty list. A session's mutex guards what
 * other threads touch (the stdin queue and requests); once "closed" is set
 * under it, no API call touches the client again, so sessions may outlive it.
 * Lock order: session, then client.
 *
 * The pure parts (path building, server URL parsing, status decoding,
 * framing, the receive demultiplexer, and the WebSocket frame parser, frame
 * writer and handshake checks) come first and are unit-tested.
 */
#include "kube_exec.h"

#include "kube_client.h"
#include "log.h"
#include "util.h"
#include "version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <libwebsockets.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* ---- pure parts ---- */

static bool path_append(struct buf *b, const char *s, char *err, size_t errlen,
			enum kube_err *rc)
{
	int r = buf_appends(b, s);
	if (r == 0)
		return true;
	if (r == -E2BIG) {
		*rc = KUBE_ERR_TOO_LARGE;
		snprintf(err, errlen, "exec request path is longer than %u bytes",
			 KUBE_EXEC_MAX_PATH);
	} else {
		*rc = KUBE_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
	}
	return false;
}

static bool path_param(struct buf *b, const char *name, const char *value, char *err,
		       size_t errlen, enum kube_err *rc)
{
	char *v = kube_escape(value);
	if (!v) {
		*rc = KUBE_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		return false;
	}
	bool ok = path_append(b, b->data[b->len - 1] == '?' ? "" : "&", err, errlen, rc) &&
		  path_append(b, name, err, errlen, rc) && path_append(b, "=", err, errlen, rc) &&
		  path_append(b, v, err, errlen, rc);
	free(v);
	return ok;
}

enum kube_err kube_exec_build_path(const char *base_path, const struct kube_exec_req *req,
				   char **out, char *err, size_t errlen)
{
	enum kube_err rc = KUBE_OK;
	char *rpath = NULL;
	struct buf b;
	buf_init(&b, KUBE_EXEC_MAX_PATH);
	*out = NULL;
	if (!req || !req->namespace || !*req->namespace || !req->pod || !*req->pod) {
		snprintf(err, errlen, "exec needs a namespace and a pod name");
		return KUBE_ERR_ARG;
	}
	if (!req->argv || !req->argv[0]) {
		snprintf(err, errlen, "exec needs a command (argv is empty)");
		return KUBE_ERR_ARG;
	}
	if (req->container && !*req->container) {
		snprintf(err, errlen, "exec container name is empty");
		return KUBE_ERR_ARG;
	}
	if (req->tty && req->with_stderr) {
		snprintf(err, errlen, "exec with a tty has no separate stderr");
		return KUBE_ERR_ARG;
	}
	if (!req->with_stdin && !req->with_stdout && !req->with_stderr) {
		snprintf(err, errlen, "exec needs at least one of stdin, stdout and stderr");
		return KUBE_ERR_ARG;
	}
	rc = kube_resource_path(&KUBE_RES_PODS, req->namespace, req->pod, "exec", &rpath);
	if (rc != KUBE_OK) {
		snprintf(err, errlen, "invalid namespace or pod name for exec");
		goto out;
	}
	if (!path_append(&b, base_path ? base_path : "", err, errlen, &rc) ||
	    !path_append(&b, rpath, err, errlen, &rc) || !path_append(&b, "?", err, errlen, &rc))
		goto out;
	for (size_t i = 0; req->argv[i]; i++) {
		if (!path_param(&b, "command", req->argv[i], err, errlen, &rc))
			goto out;
	}
	if (req->container && !path_param(&b, "container", req->container, err, errlen, &rc))
		goto out;
	if (!path_param(&b, "stdin", req->with_stdin ? "true" : "false", err, errlen, &rc) ||
	    !path_param(&b, "stdout", req->with_stdout ? "true" : "false", err, errlen, &rc) ||
	    !path_param(&b, "stderr", req->with_stderr ? "true" : "false", err, errlen, &rc) ||
	    !path_param(&b, "tty", req->tty ? "true" : "false", err, errlen, &rc))
		goto out;
	*out = buf_detach(&b);
	if (!*out) {
		rc = KUBE_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
	}
out:
	free(rpath);
	buf_release(&b);
	return rc;
}

int kube_exec_parse_server(const char *url, char **host, int *port, bool *tls, char **base)
{
	*host = NULL;
	*base = NULL;
	const char *p;
	if (strncmp(url, "https://", 8) == 0) {
		*tls = true;
		*port = 443;
		p = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		*tls = false;
		*port = 80;
		p = url + 7;
	} else {
		return -EINVAL;
	}
	size_t hostlen = strcspn(p, "/?#");
	const char *path = p + hostlen;
	if (strpbrk(path, "?#"))
		return -EINVAL;
	const char *h = p, *hend, *colon = NULL;
	if (memchr(p, '@', hostlen))
		return -EINVAL; /* userinfo */
	if (*h == '[') {
		const char *rb = memchr(h, ']', hostlen);
		if (!rb || rb == h + 1)
			return -EINVAL;
		hend = rb;
		h++;
		if (rb + 1 < p + hostlen) {
			if (rb[1] != ':')
				return -EINVAL;
			colon = rb + 1;
		}
	} else {
		colon = memchr(h, ':', hostlen);
		hend = colon ? colon : p + hostlen;
	}
	if (hend == h)
		return -EINVAL;
	if (colon) {
		const char *q = colon + 1, *qend = p + hostlen;
		if (q == qend || qend - q > 5)
			return -EINVAL;
		long v = 0;
		for (; q < qend; q++) {
			if (*q < '0' || *q > '9')
				return -EINVAL;
			v = v * 10 + (*q - '0');
		}
		if (v < 1 || v > 65535)
			return -EINVAL;
		*port = (int)v;
	}
	size_t blen = strlen(path);
	while (blen && path[blen - 1] == '/')
		blen--;
	*host = strndup(h, (size_t)(hend - h));
	*base = strndup(path, blen);
	if (!*host || !*base) {
		FREE_AND_NULL(*host);
		FREE_AND_NULL(*base);
		return -ENOMEM;
	}
	return 0;
}

/* A strictly decimal, non-negative int. */
static bool parse_exit_code(const char *s, int *out)
{
	long v = 0;
	if (!s || !*s || strlen(s) > 10)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (*s - '0');
	}
	if (v > INT_MAX)
		return false;
	*out = (int)v;
	return true;
}

static const char *json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

int kube_exec_decode_status(const char *json, size_t len, struct kube_error *err)
{
	int code = -1;
	cJSON *st = cJSON_ParseWithLength(json, len);
	kube_error_clear(err);
	if (!cJSON_IsObject(st)) {
		kube_error_set(err, KUBE_ERR_PROTOCOL, "exec status is not a JSON object");
		goto out;
	}
	const char *status = json_str(st, "status");
	const char *reason = json_str(st, "reason");
	const char *message = json_str(st, "message");
	if (status && strcmp(status, "Success") == 0) {
		kube_error_set(err, KUBE_OK, "%s", message ? message : "command succeeded");
		code = 0;
		goto out;
	}
	if (!status || strcmp(status, "Failure") != 0) {
		kube_error_set(err, KUBE_ERR_PROTOCOL, "exec status has no Success or Failure");
		goto out;
	}
	if (reason && strcmp(reason, "NonZeroExitCode") == 0) {
		const cJSON *details = cJSON_GetObjectItemCaseSensitive(st, "details");
		const cJSON *cause;
		cJSON_ArrayForEach(cause, cJSON_GetObjectItemCaseSensitive(details, "causes"))
		{
			const char *cr = json_str(cause, "reason");
			if (cr && strcmp(cr, "ExitCode") == 0 &&
			    parse_exit_code(json_str(cause, "message"), &code))
				break;
		}
		if (code < 0) {
			kube_error_set(err, KUBE_ERR_PROTOCOL,
				       "exec status NonZeroExitCode without a valid exit code");
			goto out;
		}
		kube_error_set(err, KUBE_OK, "%s",
			       message ? message : "command terminated with non-zero exit code");
		snprintf(err->reason, sizeof(err->reason), "%s", reason);
		goto out;
	}
	kube_status_from_json(st, err);
out:
	cJSON_Delete(st);
	return code;
}

size_t kube_exec_frame_resize(unsigned char *buf, size_t cap, unsigned cols, unsigned rows)
{
	if (cap < 2)
		return 0;
	buf[0] = KUBE_EXEC_CH_RESIZE;
	int n = snprintf((char *)buf + 1, cap - 1, "{\"Width\":%u,\"Height\":%u}", cols, rows);
	if (n < 0 || (size_t)n >= cap - 1)
		return 0;
	return (size_t)n + 1;
}

void kube_exec_demux_init(struct kube_exec_demux *d)
{
	memset(d, 0, sizeof(*d));
	d->max_message = KUBE_EXEC_MAX_MESSAGE;
	buf_init(&d->status, KUBE_EXEC_MAX_STATUS);
}

void kube_exec_demux_release(struct kube_exec_demux *d)
{
	buf_release(&d->status);
}

enum kube_err kube_exec_demux_feed(struct kube_exec_demux *d, const void *data, size_t len,
				   bool final, const struct kube_exec_demux_sink *sink, void *ud)
{
	const char *p = data;
	if (!d->in_message) {
		if (len == 0) {
			/* an empty message carries nothing, not even a channel */
			return KUBE_OK;
		}
		d->in_message = true;
		d->channel = (unsigned char)p[0];
		d->message_len = 0;
		buf_reset(&d->status);
		p++;
		len--;
		d->message_len = 1;
	}
	if (len > d->max_message - d->message_len)
		return KUBE_ERR_TOO_LARGE;
	d->message_len += len;
	switch (d->channel) {
	case KUBE_EXEC_CH_STDOUT:
	case KUBE_EXEC_CH_STDERR:
		if (len && sink->on_data)
			sink->on_data(ud, d->channel, p, len);
		break;
	case KUBE_EXEC_CH_STATUS: {
		int r = buf_append(&d->status, p, len);
		if (r == -E2BIG)
			return KUBE_ERR_TOO_LARGE;
		if (r)
			return KUBE_ERR_NOMEM;
		break;
	}
	default:
		break; /* stdin echoes, resize, close, unknown: nothing for us */
	}
	if (final) {
		if (d->channel == KUBE_EXEC_CH_STATUS && d->status.len && sink->on_status)
			sink->on_status(ud, d->status.data, d->status.len);
		buf_reset(&d->status);
		d->in_message = false;
	}
	return KUBE_OK;
}

/* ---- WebSocket framing and handshake (RFC 6455), client side ---- */

int kube_ws_parse_header(const unsigned char *p, size_t n, bool in_message,
			 struct kube_ws_header *h, const char **why)
{
	if (n < 2)
		return 0;
	/* refuse as soon as the first two bytes say so, not after the length */
	unsigned op = p[0] & 0x0fu;
	h->fin = (p[0] & 0x80u) != 0;
	h->opcode = op;
	if (p[0] & 0x70u) {
		*why = "a frame with reserved bits set (no extension was negotiated)";
		return -1;
	}
	if (p[1] & 0x80u) {
		*why = "a masked frame from the server";
		return -1;
	}
	switch (op) {
	case KUBE_WS_OP_CONT:
		if (!in_message) {
			*why = "a continuation frame outside a message";
			return -1;
		}
		break;
	case KUBE_WS_OP_TEXT:
	case KUBE_WS_OP_BINARY:
		if (in_message) {
			*why = "a new data frame inside a fragmented message";
			return -1;
		}
		break;
	case KUBE_WS_OP_CLOSE:
	case KUBE_WS_OP_PING:
	case KUBE_WS_OP_PONG:
		if (!h->fin) {
			*why = "a fragmented control frame";
			return -1;
		}
		if ((p[1] & 0x7fu) > KUBE_WS_MAX_CONTROL) {
			*why = "a control frame longer than 125 bytes";
			return -1;
		}
		break;
	default:
		*why = "a frame with an unknown opcode";
		return -1;
	}
	unsigned l7 = p[1] & 0x7fu;
	if (l7 < 126) {
		h->len = l7;
		return 2;
	}
	if (l7 == 126) {
		if (n < 4)
			return 0;
		h->len = ((uint64_t)p[2] << 8) | p[3];
		return 4;
	}
	if (n < 10)
		return 0;
	if (p[2] & 0x80u) {
		*why = "a 64-bit frame length with its top bit set";
		return -1;
	}
	uint64_t v = 0;
	for (int i = 2; i < 10; i++)
		v = (v << 8) | p[i];
	h->len = v;
	return 10;
}

size_t kube_ws_frame_header(unsigned char *out, bool fin, unsigned opcode, uint64_t len,
			    const unsigned char *mask)
{
	size_t n = 0;
	unsigned char m = mask ? 0x80u : 0;
	out[n++] = (unsigned char)((fin ? 0x80u : 0) | (opcode & 0x0fu));
	if (len < 126) {
		out[n++] = (unsigned char)(m | len);
	} else if (len <= 0xffff) {
		out[n++] = m | 126;
		out[n++] = (unsigned char)(len >> 8);
		out[n++] = (unsigned char)len;
	} else {
		out[n++] = m | 127;
		for (int i = 7; i >= 0; i--)
			out[n++] = (unsigned char)(len >> (8 * i));
	}
	if (mask) {
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

void kube_ws_mask(unsigned char *p, size_t len, const unsigned char mask[4])
{
	/* eight bytes at a time: the key repeats every 4, so a doubled key
	 * applies to any 8-byte block that starts at a multiple of 4 */
	uint64_t k8;
	unsigned char kk[8];
	memcpy(kk, mask, 4);
	memcpy(kk + 4, mask, 4);
	memcpy(&k8, kk, 8);
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		v ^= k8;
		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] ^= mask[i & 3];
}

int kube_ws_accept(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char in[128];
	out[0] = '\0';
	int n = snprintf(in, sizeof(in), "%s%s", key, guid);
	if (n < 0 || (size_t)n >= sizeof(in))
		return -EIO;
	if (EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) {
		ERR_clear_error();
		return -EIO;
	}
	EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
	return 0;
}

static bool ascii_ieq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	return alen == blen && strncasecmp(a, b, blen) == 0;
}

/* Does the comma-separated list v[0..len) hold token (any case)? */
static bool list_has(const char *v, size_t len, const char *token)
{
	const char *end = v + len;
	while (v < end) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		const char *e = comma ? comma : end;
		const char *a = v, *b = e;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		if (ascii_ieq(a, (size_t)(b - a), token))
			return true;
		v = comma ? comma + 1 : end;
	}
	return false;
}

static void copy_value(char *dst, size_t cap, const char *v, size_t len)
{
	/* a value too long for dst is cut: it then matches nothing we compare
	 * it with, which are all shorter */
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, v, len);
	dst[len] = '\0';
}

int kube_ws_parse_response(const char *head, size_t len, struct kube_ws_response *r)
{
	memset(r, 0, sizeof(*r));
	const char *p = head, *end = head + len;
	const char *eol = memchr(p, '\n', len);
	if (!eol || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
		return -EINVAL;
	int status = 0;
	for (int i = 9; i < 12; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		status = status * 10 + (p[i] - '0');
	}
	if (p[12] != ' ' && p[12] != '\r' && p[12] != '\n')
		return -EINVAL;
	r->status = status;
	for (p = eol + 1; p < end; p = eol + 1) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		const char *le = eol;
		if (le > p && le[-1] == '\r')
			le--;
		if (le == p)
			break; /* the empty line ends the head */
		const char *colon = memchr(p, ':', (size_t)(le - p));
		if (!colon)
			return -EINVAL;
		const char *v = colon + 1, *ve = le;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		size_t nl = (size_t)(colon - p), vl = (size_t)(ve - v);
		if (ascii_ieq(p, nl, "upgrade"))
			r->upgrade = ascii_ieq(v, vl, "websocket");
		else if (ascii_ieq(p, nl, "connection"))
			r->connection = list_has(v, vl, "upgrade");
		else if (ascii_ieq(p, nl, "sec-websocket-accept"))
			copy_value(r->accept, sizeof(r->accept), v, vl);
		else if (ascii_ieq(p, nl, "sec-websocket-protocol"))
			copy_value(r->protocol, sizeof(r->protocol), v, vl);
		if (eol == end)
			break;
	}
	return 0;
}

/* The end of a frame's payload: pass control frames on whole. */
static enum kube_err ws_frame_done(struct kube_ws_rx *rx, const struct kube_ws_rx_sink *sink,
				   void *ud)
{
	rx->in_frame = false;
	if (rx->f.opcode >= KUBE_WS_OP_CLOSE)
		return sink->on_control(ud, rx->f.opcode, rx->ctl, rx->ctl_have);
	if (rx->f.fin)
		rx->in_message = false;
	return KUBE_OK;
}

enum kube_err kube_ws_rx_feed(struct kube_ws_rx *rx, const void *data, size_t len,
			      const struct kube_ws_rx_sink *sink, void *ud, const char **why)
{
	const unsigned char *p = data;
	enum kube_err rc;
	while (len) {
		if (!rx->in_frame) {
			/* a header: in place when whole, else kept across pieces */
			int hl;
			size_t used;
			if (rx->hdr_have == 0) {
				hl = kube_ws_parse_header(p, len, rx->in_message, &rx->f, why);
				if (hl == 0) {
					memcpy(rx->hdr, p, len); /* len < KUBE_WS_MAX_HEADER */
					rx->hdr_have = len;
					return KUBE_OK;
				}
				used = (size_t)(hl > 0 ? hl : 0);
			} else {
				size_t take = KUBE_WS_MAX_HEADER - rx->hdr_have;
				if (take > len)
					take = len;
				memcpy(rx->hdr + rx->hdr_have, p, take);
				hl = kube_ws_parse_header(rx->hdr, rx->hdr_have + take,
							  rx->in_message, &rx->f, why);
				if (hl == 0) {
					rx->hdr_have += take;
					return KUBE_OK; /* take was all of len */
				}
				used = hl > 0 ? (size_t)hl - rx->hdr_have : 0;
			}
			if (hl < 0)
				return KUBE_ERR_PROTOCOL;
			p += used;
			len -= used;
			rx->hdr_have = 0;
			rx->in_frame = true;
			rx->left = rx->f.len;
			rx->ctl_have = 0;
			if (rx->f.opcode == KUBE_WS_OP_TEXT || rx->f.opcode == KUBE_WS_OP_BINARY)
				rx->in_message = true;
			if (rx->left == 0) {
				/* an empty frame: an empty final one still ends its message */
				if (rx->f.opcode < KUBE_WS_OP_CLOSE && rx->f.fin) {
					rc = sink->on_data(ud, p, 0, true);
					if (rc != KUBE_OK)
						return rc;
				}
				rc = ws_frame_done(rx, sink, ud);
				if (rc != KUBE_OK)
					return rc;
			}
			continue;
		}
		size_t k = rx->left < len ? (size_t)rx->left : len;
		if (rx->f.opcode >= KUBE_WS_OP_CLOSE) {
			memcpy(rx->ctl + rx->ctl_have, p, k); /* left <= 125 by the header check */
			rx->ctl_have += k;
		} else {
			rc = sink->on_data(ud, p, k, rx->f.fin && k == rx->left);
			if (rc != KUBE_OK)
				return rc;
		}
		rx->left -= k;
		p += k;
		len -= k;
		if (rx->left == 0) {
			rc = ws_frame_done(rx, sink, ud);
			if (rc != KUBE_OK)
				return rc;
		}
	}
	return KUBE_OK;
}

/* ---- the client ---- */

/*
 * The connection: libwebsockets carries the bytes (a raw-skt client: TCP,
 * the event loop, timeouts, rx flow control) and this file speaks TLS,
 * HTTP/1.1 and WebSocket over it. Why: lws 4.1's WebSocket client parses
 * every received payload byte in a per-byte state machine, which took more
 * CPU than everything else in a large stream; here payload goes to the demux
 * in place. Why TLS is ours too: lws 4.1 starts TLS on a raw client before
 * the socket exists (method "RAW" with LCCSCF_USE_SSL fails at once with
 * EBADF), so TLS runs over memory BIOs: ciphertext in from RAW_RX, out
 * through lws_write(LWS_WRITE_RAW), with the client's SSL_CTX as before.
 */

#define TOKEN_REREAD_MS 60000
#define HS_MAX_REQUEST (128u << 10) /* our handshake request: path, token, headers */
#define HS_OVERHEAD 2048            /* our handshake besides the path and the token */
#define HS_TIMEOUT_S 30             /* connected to upgraded (TLS and HTTP) */
#define TX_CIPHER (64u << 10)       /* TLS output moved to lws per write */

struct stdin_chunk {
	struct stdin_chunk *next;
	size_t len, off;
	unsigned char data[];
};

enum session_state { ST_NEW, ST_CONNECTING, ST_OPEN, ST_DONE };

/* Handshake progress of a connected session. */
enum hs_state {
	HS_NONE,  /* not connected yet */
	HS_TLS,   /* TLS handshake running */
	HS_SEND,  /* the upgrade request is due */
	HS_WAIT,  /* waiting for the answer's head */
	HS_DONE,  /* upgraded: WebSocket frames both ways */
};

struct kube_exec_session {
	struct kube_exec_client *client;
	atomic_int refs;
	struct kube_exec_ops ops;
	void *ud;
	char *path;
	char *token;          /* secret; wiped once sent */
	char *label;          /* "ns/pod" for log lines */
	bool with_stdin, tty, v4_only;
	size_t high_water;

	/* guarded by mu: what other threads may touch */
	pthread_mutex_t mu;
	bool closed;          /* on_close delivered or about to be: API calls stop here */
	int proto;            /* 0 until negotiated, then 4 or 5 */
	struct stdin_chunk *in_head, *in_tail;
	size_t in_queued;
	bool want_ready;      /* a writer got -EAGAIN */
	bool stdin_close_req, stdin_close_sent;
	bool resize_pending;
	unsigned cols, rows;
	bool pause_req;
	bool cancel_req;
	bool dirty;           /* in the client's dirty list */
	struct kube_exec_session *dirty_next;

	/* service thread only */
	enum session_state state;
	struct lws *wsi;
	struct kube_exec_session *next, *prev; /* pending list, then active list */
	struct kube_exec_demux rx;
	bool in_cb;           /* inside a callback for this session's wsi */
	bool pause_applied;
	bool kill_sent;
	bool got_status;
	bool finalized;
	struct kube_error fail; /* the error to report, when code != KUBE_OK */

	/* the connection (service thread only) */
	enum hs_state hs;
	SSL *ssl;             /* NULL for http:// servers; owns its two memory BIOs */
	char ws_key[25];      /* Sec-WebSocket-Key, base64 of 16 random bytes */
	char *head;           /* the answer's head so far (KUBE_WS_MAX_RESPONSE_HEAD) */
	size_t head_len;
	struct kube_ws_rx ws;
	bool pong_pending;
	unsigned char pong[KUBE_WS_MAX_CONTROL];
	size_t pong_len;
	bool close_received;  /* the server's close: reply, then drop the connection */
	unsigned char close_code[2];
	size_t close_len;
};

struct kube_exec_client {
	struct lws_context *ctx;
	SSL_CTX *ssl_ctx;
	pthread_t thread;
	bool thread_started;
	pthread_t service_tid; /* written by the service thread before tid_set */
	atomic_bool tid_set;
	atomic_bool stop;
	atomic_uint nsessions;

	char *address;
	char *host_header;    /* tls_server_name or the host: SNI and certificate name */
	char *host_port;      /* the Host header: host_header, and the port unless default */
	char *base_path;
	int port;
	bool tls;
	int ssl_flags;        /* LCCSCF_*: which checks insecure_skip_tls_verify drops */

	pthread_mutex_t mu;
	bool lws_alive;       /* ctx may be woken */
	bool stopping;        /* no new sessions */
	struct kube_exec_session *pending_head, *pending_tail;
	struct kube_exec_session *dirty_head;
	char *token;          /* static token or the last read of token_file (secret) */
	char *token_file;
	int64_t token_read_ms;
	bool token_stale;

	/* service thread only */
	struct kube_exec_session *active;
	unsigned char *txbuf;    /* LWS_PRE + frame header + one message */
	unsigned char *txcipher; /* LWS_PRE + TX_CIPHER */
	unsigned char *rxplain;  /* KUBE_EXEC_RX_BUFFER: decrypted input */
};

static const char *const PROTOCOLS_ALL = KUBE_EXEC_PROTOCOL_V5 ", " KUBE_EXEC_PROTOCOL_V4;

/* Free the TLS state and the handshake buffer (service thread, or the last
 * reference of a session that never connected). */
static void session_drop_transport(struct kube_exec_session *s)
{
	SSL_free(s->ssl);
	s->ssl = NULL;
	FREE_AND_NULL(s->head);
	s->head_len = 0;
}

static void session_unref(struct kube_exec_session *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	struct stdin_chunk *ch = s->in_head;
	while (ch) {
		struct stdin_chunk *next = ch->next;
		free(ch);
		ch = next;
	}
	session_drop_transport(s);
	free_secret(s->token);
	free(s->path);
	free(s->label);
	kube_exec_demux_release(&s->rx);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static bool on_service_thread(struct kube_exec_client *c)
{
	return atomic_load_explicit(&c->tid_set, memory_order_acquire) &&
	       pthread_equal(pthread_self(), c->service_tid);
}

/* Wake the service thread. Caller holds c->mu. */
static void wake_locked(struct kube_exec_client *c)
{
	if (c->lws_alive)
		lws_cancel_service(c->ctx);
}

/* Ask the service thread to look at s. Caller holds s->mu (not c->mu). */
static void mark_dirty_locked(struct kube_exec_session *s)
{
	struct kube_exec_client *c = s->client;
	if (s->dirty)
		return;
	s->dirty = true;
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_lock(&c->mu);
	s->dirty_next = c->dirty_head;
	c->dirty_head = s;
	wake_locked(c);
	pthread_mutex_unlock(&c->mu);
}

/* Deliver on_close once and drop the service thread's reference. */
static void session_finalize(struct kube_exec_session *s, const struct kube_error *why)
{
	struct kube_exec_client *c = s->client;
	if (s->finalized)
		return;
	s->finalized = true;
	if (s->wsi)
		lws_set_opaque_user_data(s->wsi, NULL);
	s->wsi = NULL;
	s->state = ST_DONE;
	session_drop_transport(s);
	/* unlink from the active list (pending sessions are not on it) */
	if (s->prev)
		s->prev->next = s->next;
	else if (c->active == s)
		c->active = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;

	pthread_mutex_lock(&s->mu);
	s->closed = true;
	pthread_mutex_unlock(&s->mu);
	atomic_fetch_sub(&c->nsessions, 1);

	struct kube_error e;
	if (why) {
		e = *why;
	} else if (s->fail.code != KUBE_OK) {
		e = s->fail;
	} else if (s->got_status) {
		kube_error_clear(&e);
	} else {
		kube_error_set(&e, KUBE_ERR_TRANSPORT,
			       "exec stream for pod \"%s\" closed before an exit status", s->label);
	}
	if (e.code != KUBE_OK)
		log_debug("kube exec: pod \"%s\": %s: %s", s->label, kube_strerror(e.code),
			  e.message);
	if (s->ops.on_close)
		s->ops.on_close(s->ud, &e);
	session_unref(s);
}

/* The first error wins. */
static void session_fail(struct kube_exec_session *s, enum kube_err code, long http_status,
			 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void session_fail(struct kube_exec_session *s, enum kube_err code, long http_status,
			 const char *fmt, ...)
{
	if (s->fail.code != KUBE_OK)
		return;
	kube_error_clear(&s->fail);
	s->fail.code = code;
	s->fail.http_status = http_status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->fail.message, sizeof(s->fail.message), fmt, ap);
	va_end(ap);
}

/* ---- the demux's sink ---- */

static void on_rx_data(void *ud, int channel, const char *data, size_t len)
{
	struct kube_exec_session *s = ud;
	if (channel == KUBE_EXEC_CH_STDOUT && s->ops.on_stdout)
		s->ops.on_stdout(s->ud, data, len);
	else if (channel == KUBE_EXEC_CH_STDERR && s->ops.on_stderr)
		s->ops.on_stderr(s->ud, data, len);
}

static void on_rx_status(void *ud, const char *json, size_t len)
{
	struct kube_exec_session *s = ud;
	struct kube_error st;
	int code = kube_exec_decode_status(json, len, &st);
	if (s->got_status)
		return; /* one status per stream; ignore anything after it */
	s->got_status = true;
	if (s->ops.on_exit)
		s->ops.on_exit(s->ud, code, &st);
}

static const struct kube_exec_demux_sink rx_sink = { on_rx_data, on_rx_status };

/* ---- sending: TLS records and WebSocket frames ---- */

/* Move TLS output to lws: one lws_write per call (lws keeps what the socket
 * does not take and sends it before the next WRITEABLE). */
static int tls_flush(struct kube_exec_session *s, struct lws *wsi)
{
	struct kube_exec_client *c = s->client;
	BIO *w = SSL_get_wbio(s->ssl);
	unsigned char *out = c->txcipher + LWS_PRE;
	int n = BIO_read(w, out, (int)TX_CIPHER);
	if (n > 0 && lws_write(wsi, out, (size_t)n, LWS_WRITE_RAW) < n) {
		session_fail(s, KUBE_ERR_TRANSPORT, 0, "exec stream to pod \"%s\": write failed",
			     s->label);
		return -1;
	}
	if (BIO_ctrl_pending(w))
		lws_callback_on_writable(wsi);
	return 0;
}

/* Send bytes (p has LWS_PRE bytes of room before it). Without TLS they go to
 * lws as they are; with TLS they are encrypted into the output BIO (which
 * takes them whole) and flushed. */
static int emit(struct kube_exec_session *s, struct lws *wsi, unsigned char *p, size_t len)
{
	if (!s->ssl) {
		if (lws_write(wsi, p, len, LWS_WRITE_RAW) < (int)len) {
			session_fail(s, KUBE_ERR_TRANSPORT, 0,
				     "exec stream to pod \"%s\": write failed", s->label);
			return -1;
		}
		return 0;
	}
	if (len > INT_MAX || SSL_write(s->ssl, p, (int)len) != (int)len) {
		ERR_clear_error();
		session_fail(s, KUBE_ERR_TRANSPORT, 0,
			     "exec stream to pod \"%s\": TLS write failed", s->label);
		return -1;
	}
	return tls_flush(s, wsi);
}

/* Send one masked frame whose payload is at msg (in c->txbuf, with room for
 * LWS_PRE and the header before it). The mask comes from the CSPRNG for every
 * frame, as RFC 6455 5.3 asks of a client. */
static int emit_frame(struct kube_exec_session *s, struct lws *wsi, unsigned opcode,
		      unsigned char *msg, size_t len)
{
	unsigned char mask[4], hdr[KUBE_WS_MAX_HEADER];
	if (random_bytes(mask, sizeof(mask))) {
		session_fail(s, KUBE_ERR_TRANSPORT, 0,
			     "exec stream to pod \"%s\": no random bytes for a frame mask",
			     s->label);
		return -1;
	}
	size_t hl = kube_ws_frame_header(hdr, true, opcode, len, mask);
	memcpy(msg - hl, hdr, hl);
	kube_ws_mask(msg, len, mask);
	return emit(s, wsi, msg - hl, hl + len);
}

static unsigned char *tx_msg(struct kube_exec_client *c)
{
	return c->txbuf + LWS_PRE + KUBE_WS_MAX_HEADER;
}

/* The upgrade request. The token goes into it and nowhere else, and both
 * are wiped once it is handed on. */
static int send_request(struct kube_exec_session *s, struct lws *wsi)
{
	struct kube_exec_client *c = s->client;
	size_t cap = strlen(s->path) + (s->token ? strlen(s->token) : 0) + HS_OVERHEAD;
	char *req = malloc(LWS_PRE + cap);
	if (!req) {
		session_fail(s, KUBE_ERR_NOMEM, 0, "exec into pod \"%s\": out of memory", s->label);
		return -1;
	}
	char *p = req + LWS_PRE;
	int n = snprintf(p, cap,
			 "GET %s HTTP/1.1\r\n"
			 "Host: %s\r\n"
			 "Upgrade: websocket\r\n"
			 "Connection: Upgrade\r\n"
			 "Sec-WebSocket-Key: %s\r\n"
			 "Sec-WebSocket-Version: 13\r\n"
			 "Sec-WebSocket-Protocol: %s\r\n"
			 "User-Agent: sandbox-controller/" SBX_VERSION "\r\n"
			 "%s%s%s"
			 "\r\n",
			 s->path, c->host_port, s->ws_key,
			 s->v4_only ? KUBE_EXEC_PROTOCOL_V4 : PROTOCOLS_ALL,
			 s->token ? "Authorization: Bearer " : "", s->token ? s->token : "",
			 s->token ? "\r\n" : "");
	free_secret(s->token);
	s->token = NULL;
	int rc = -1;
	if (n < 0 || (size_t)n >= cap) {
		session_fail(s, KUBE_ERR_TOO_LARGE, 0, "exec handshake for pod \"%s\" too large",
			     s->label);
		n = (int)cap - 1;
	} else if (emit(s, wsi, (unsigned char *)p, (size_t)n) == 0) {
		s->hs = HS_WAIT;
		rc = 0;
	}
	secure_zero(req, LWS_PRE + (size_t)n + 1);
	free(req);
	return rc;
}

static bool has_output_locked(const struct kube_exec_session *s)
{
	return s->resize_pending || s->in_head ||
	       (s->stdin_close_req && !s->stdin_close_sent && s->proto == 5);
}

/* One message of ours: a resize, a stdin chunk or the v5 close of stdin. */
static int cb_writeable(struct kube_exec_session *s, struct lws *wsi)
{
	struct kube_exec_client *c = s->client;
	unsigned char *msg = tx_msg(c);
	size_t n = 0;
	bool ready = false;
	pthread_mutex_lock(&s->mu);
	if (s->resize_pending) {
		n = kube_exec_frame_resize(msg, 1 + KUBE_EXEC_WRITE_CHUNK, s->cols, s->rows);
		s->resize_pending = false;
	} else if (s->in_head) {
		struct stdin_chunk *ch = s->in_head;
		size_t take = ch->len - ch->off;
		if (take > KUBE_EXEC_WRITE_CHUNK)
			take = KUBE_EXEC_WRITE_CHUNK;
		msg[0] = KUBE_EXEC_CH_STDIN;
		memcpy(msg + 1, ch->data + ch->off, take);
		ch->off += take;
		s->in_queued -= take;
		n = take + 1;
		if (ch->off == ch->len) {
			s->in_head = ch->next;
			if (!s->in_head)
				s->in_tail = NULL;
			free(ch);
		}
		if (s->want_ready && s->in_queued <= s->high_water / 4) {
			s->want_ready = false;
			ready = true;
		}
	} else if (s->stdin_close_req && !s->stdin_close_sent && s->proto == 5) {
		msg[0] = KUBE_EXEC_CH_CLOSE;
		msg[1] = KUBE_EXEC_CH_STDIN;
		n = 2;
		s->stdin_close_sent = true;
	}
	bool more = has_output_locked(s);
	pthread_mutex_unlock(&s->mu);
	if (n && emit_frame(s, wsi, KUBE_WS_OP_BINARY, msg, n))
		return -1;
	if (ready && s->ops.on_stdin_ready) {
		s->in_cb = true;
		s->ops.on_stdin_ready(s->ud);
		s->in_cb = false;
	}
	if (more)
		lws_callback_on_writable(wsi);
	return 0;
}

/* RAW_WRITEABLE: pending TLS output first, then the handshake, control
 * replies, and our own messages; one lws_write per call. */
static int cb_raw_writeable(struct kube_exec_session *s, struct lws *wsi)
{
	if (s->ssl && BIO_ctrl_pending(SSL_get_wbio(s->ssl))) {
		/* whatever else waits is looked at next time */
		lws_callback_on_writable(wsi);
		return tls_flush(s, wsi);
	}
	if (s->hs == HS_SEND)
		return send_request(s, wsi);
	if (s->hs != HS_DONE)
		return 0;
	unsigned char *msg = tx_msg(s->client);
	if (s->close_received) {
		/* echo the close (RFC 6455 5.5.1) and drop the connection, as lws
		 * did: what the session reports depends on the status received */
		memcpy(msg, s->close_code, s->close_len);
		emit_frame(s, wsi, KUBE_WS_OP_CLOSE, msg, s->close_len);
		return -1;
	}
	if (s->pong_pending) {
		s->pong_pending = false;
		memcpy(msg, s->pong, s->pong_len);
		lws_callback_on_writable(wsi);
		return emit_frame(s, wsi, KUBE_WS_OP_PONG, msg, s->pong_len);
	}
	return cb_writeable(s, wsi);
}

/* ---- receiving ---- */

static enum kube_err ws_on_data(void *ud, const unsigned char *p, size_t len, bool final)
{
	struct kube_exec_session *s = ud;
	if (s->close_received)
		return KUBE_OK; /* nothing counts after the close */
	return kube_exec_demux_feed(&s->rx, p, len, final, &rx_sink, s);
}

static enum kube_err ws_on_control(void *ud, unsigned opcode, const unsigned char *p,
				   size_t len)
{
	struct kube_exec_session *s = ud;
	if (s->close_received)
		return KUBE_OK;
	if (opcode == KUBE_WS_OP_PING) {
		/* only the latest ping needs its pong */
		memcpy(s->pong, p, len);
		s->pong_len = len;
		s->pong_pending = true;
		lws_callback_on_writable(s->wsi);
	} else if (opcode == KUBE_WS_OP_CLOSE) {
		s->close_received = true;
		s->close_len = len >= 2 ? 2 : 0;
		memcpy(s->close_code, p, s->close_len);
		lws_callback_on_writable(s->wsi);
	}
	return KUBE_OK; /* a pong: nothing to do */
}

static const struct kube_ws_rx_sink ws_sink = { ws_on_data, ws_on_control };

/* A refused handshake: the same errors and hints whatever the transport. */
static void fail_http_status(struct kube_exec_session *s, unsigned status)
{
	enum kube_err code = kube_err_from_http((long)status, NULL);
	if (code == KUBE_OK)
		code = KUBE_ERR_PROTOCOL;
	const char *hint = "";
	switch (status) {
	case 401:
		hint = ": the API server did not accept the credentials";
		pthread_mutex_lock(&s->client->mu);
		s->client->token_stale = true; /* re-read a token file next time */
		pthread_mutex_unlock(&s->client->mu);
		break;
	case 403:
		hint = ": the credentials may not create pods/exec for this pod";
		break;
	case 404:
		hint = ": no such pod";
		break;
	case 400:
		hint = ": the API server refused the request (container, or Pod not running?)";
		break;
	default:
		break;
	}
	session_fail(s, code, (long)status, "exec into pod \"%s\" refused with HTTP %u%s",
		     s->label, status, hint);
}

static int cb_established(struct kube_exec_session *s, struct lws *wsi)
{
	s->state = ST_OPEN;
	pthread_mutex_lock(&s->mu);
	bool out = has_output_locked(s);
	bool pause = s->pause_req;
	bool cancel = s->cancel_req;
	if (s->proto == 4 && s->stdin_close_req && !s->stdin_close_sent) {
		log_debug("kube exec: pod \"%s\": v4 has no stdin half-close; stdin stays open",
			  s->label);
		s->stdin_close_sent = true;
	}
	pthread_mutex_unlock(&s->mu);
	if (cancel) {
		session_fail(s, KUBE_ERR_CANCELLED, 0, "exec into pod \"%s\" cancelled", s->label);
		return -1;
	}
	if (s->ops.on_open) {
		s->in_cb = true;
		s->ops.on_open(s->ud, s->proto == 5 ? KUBE_EXEC_PROTOCOL_V5 : KUBE_EXEC_PROTOCOL_V4);
		s->in_cb = false;
	}
	if (pause && !s->pause_applied) {
		lws_rx_flow_control(wsi, 0);
		s->pause_applied = true;
	}
	if (out)
		lws_callback_on_writable(wsi);
	return 0;
}

/* The answer's head is complete (head_len bytes of s->head): upgraded or not. */
static int handshake_check(struct kube_exec_session *s, struct lws *wsi, size_t head_len)
{
	struct kube_ws_response r;
	char want[29];
	int rc = kube_ws_parse_response(s->head, head_len, &r);
	FREE_AND_NULL(s->head);
	s->head_len = 0;
	if (rc) {
		session_fail(s, KUBE_ERR_PROTOCOL, 0,
			     "exec into pod \"%s\": the API server's answer is not HTTP", s->label);
		return -1;
	}
	if (r.status != 101) {
		fail_http_status(s, (unsigned)r.status);
		return -1;
	}
	if (kube_ws_accept(s->ws_key, want)) {
		session_fail(s, KUBE_ERR_TRANSPORT, 0, "exec into pod \"%s\": SHA-1 failed",
			     s->label);
		return -1;
	}
	if (!r.upgrade || !r.connection || strcmp(r.accept, want) != 0) {
		session_fail(s, KUBE_ERR_PROTOCOL, 101,
			     "exec into pod \"%s\": the server's WebSocket upgrade is invalid (%s)",
			     s->label,
			     !r.upgrade      ? "no Upgrade: websocket"
			     : !r.connection ? "no Connection: upgrade"
					     : "wrong Sec-WebSocket-Accept");
		return -1;
	}
	int v = 0;
	if (strcmp(r.protocol, KUBE_EXEC_PROTOCOL_V5) == 0 && !s->v4_only)
		v = 5;
	else if (strcmp(r.protocol, KUBE_EXEC_PROTOCOL_V4) == 0)
		v = 4;
	if (!v) {
		session_fail(s, KUBE_ERR_PROTOCOL, 101,
			     "exec into pod \"%s\": the server chose no supported protocol (\"%s\")",
			     s->label, r.protocol);
		return -1;
	}
	pthread_mutex_lock(&s->mu);
	s->proto = v;
	pthread_mutex_unlock(&s->mu);
	lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
	s->hs = HS_DONE;
	return cb_established(s, wsi);
}

/* Collect the answer's head (bounded); *used says how many of the len bytes
 * belonged to it: the rest are already WebSocket frames. */
static int take_head(struct kube_exec_session *s, struct lws *wsi, const unsigned char *p,
		     size_t len, size_t *used)
{
	if (!s->head) {
		s->head = malloc(KUBE_WS_MAX_RESPONSE_HEAD);
		if (!s->head) {
			session_fail(s, KUBE_ERR_NOMEM, 0, "exec into pod \"%s\": out of memory",
				     s->label);
			return -1;
		}
	}
	size_t had = s->head_len;
	size_t take = KUBE_WS_MAX_RESPONSE_HEAD - had;
	if (take > len)
		take = len;
	memcpy(s->head + had, p, take);
	s->head_len += take;
	size_t from = had > 3 ? had - 3 : 0;
	const char *e = memmem(s->head + from, s->head_len - from, "\r\n\r\n", 4);
	if (!e) {
		if (s->head_len == KUBE_WS_MAX_RESPONSE_HEAD) {
			session_fail(s, KUBE_ERR_PROTOCOL, 0,
				     "exec into pod \"%s\": the API server's answer has a head over "
				     "%u bytes",
				     s->label, KUBE_WS_MAX_RESPONSE_HEAD);
			return -1;
		}
		*used = len;
		return 0;
	}
	size_t head_len = (size_t)(e + 4 - s->head);
	*used = head_len - had;
	return handshake_check(s, wsi, head_len);
}

/* Plaintext from the connection. */
static int on_plain(struct kube_exec_session *s, struct lws *wsi, const unsigned char *p,
		    size_t len)
{
	if (s->hs == HS_WAIT) {
		size_t used = 0;
		if (take_head(s, wsi, p, len, &used))
			return -1;
		p += used;
		len -= used;
		if (!len)
			return 0;
	}
	if (s->hs != HS_DONE) {
		session_fail(s, KUBE_ERR_PROTOCOL, 0,
			     "exec into pod \"%s\": the API server sent data before the handshake",
			     s->label);
		return -1;
	}
	const char *why = "";
	s->in_cb = true;
	enum kube_err rc = kube_ws_rx_feed(&s->ws, p, len, &ws_sink, s, &why);
	s->in_cb = false;
	if (rc == KUBE_OK)
		return 0;
	session_fail(s, rc, 0, "exec stream from pod \"%s\": %s", s->label,
		     rc == KUBE_ERR_PROTOCOL	? why
		     : rc == KUBE_ERR_TOO_LARGE ? "a message or status over its size limit"
						: "out of memory");
	return -1;
}

static void tls_fail(struct kube_exec_session *s, const char *what)
{
	char e[160] = "";
	unsigned long code = ERR_peek_last_error();
	if (code)
		ERR_error_string_n(code, e, sizeof(e));
	ERR_clear_error();
	long vr = s->ssl ? SSL_get_verify_result(s->ssl) : X509_V_OK;
	if (s->hs == HS_TLS && vr != X509_V_OK)
		session_fail(s, KUBE_ERR_TRANSPORT, 0,
			     "exec into pod \"%s\": the API server's TLS certificate was refused: %s",
			     s->label, X509_verify_cert_error_string(vr));
	else
		session_fail(s, KUBE_ERR_TRANSPORT, 0, "exec into pod \"%s\": %s%s%s", s->label,
			     what, e[0] ? ": " : "", e);
}

/* Ciphertext in (in may be NULL to only drive the handshake): the handshake
 * moves on, and every byte it decrypts goes on at once, so that nothing stays
 * inside OpenSSL while output is paused. */
static int tls_input(struct kube_exec_session *s, struct lws *wsi, const void *in, size_t len)
{
	struct kube_exec_client *c = s->client;
	if (len && (len > INT_MAX || BIO_write(SSL_get_rbio(s->ssl), in, (int)len) != (int)len)) {
		session_fail(s, KUBE_ERR_NOMEM, 0, "exec into pod \"%s\": out of memory", s->label);
		return -1;
	}
	if (s->hs == HS_TLS) {
		int r = SSL_do_handshake(s->ssl);
		if (r != 1) {
			if (SSL_get_error(s->ssl, r) != SSL_ERROR_WANT_READ) {
				tls_fail(s, "cannot connect: TLS handshake failed");
				return -1;
			}
			goto out;
		}
		s->hs = HS_SEND;
		lws_callback_on_writable(wsi);
	}
	for (;;) {
		int n = SSL_read(s->ssl, c->rxplain, (int)KUBE_EXEC_RX_BUFFER);
		if (n <= 0) {
			int e = SSL_get_error(s->ssl, n);
			if (e == SSL_ERROR_WANT_READ)
				break;
			if (e == SSL_ERROR_ZERO_RETURN) {
				ERR_clear_error();
				return -1; /* close_notify: the stream ends here */
			}
			tls_fail(s, "TLS error");
			return -1;
		}
		if (on_plain(s, wsi, c->rxplain, (size_t)n))
			return -1;
	}
out:
	if (BIO_ctrl_pending(SSL_get_wbio(s->ssl)))
		lws_callback_on_writable(wsi);
	return 0;
}

static bool is_ip_literal(const char *host)
{
	unsigned char a[16];
	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* TLS over memory BIOs, with what lws set up when it did TLS: SNI (not for
 * an IP address), the name check (unless insecure_skip_tls_verify), ALPN
 * http/1.1. */
static int tls_start(struct kube_exec_session *s)
{
	struct kube_exec_client *c = s->client;
	const char *host = c->host_header;
	bool ip = is_ip_literal(host);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	s->ssl = SSL_new(c->ssl_ctx);
	if (!rb || !wb || !s->ssl) {
		BIO_free(rb);
		BIO_free(wb);
		goto fail;
	}
	BIO_set_mem_eof_return(rb, -1); /* empty means "wait", not end of file */
	SSL_set_bio(s->ssl, rb, wb);
	SSL_set_connect_state(s->ssl);
	/* idle streams keep no 34 KiB record buffers */
	SSL_set_mode(s->ssl, SSL_MODE_RELEASE_BUFFERS);
	if (!ip && SSL_set_tlsext_host_name(s->ssl, host) != 1)
		goto fail;
	if (!(c->ssl_flags & LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK)) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
		X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
			: X509_VERIFY_PARAM_set1_host(vp, host, 0)) != 1)
			goto fail;
	}
	static const unsigned char alpn[] = "\x08http/1.1";
	if (SSL_set_alpn_protos(s->ssl, alpn, sizeof(alpn) - 1) != 0)
		goto fail;
	return 0;
fail:
	tls_fail(s, "cannot set up TLS");
	return -1;
}

static int cb_connected(struct kube_exec_session *s, struct lws *wsi)
{
	unsigned char key[16];
	if (random_bytes(key, sizeof(key))) {
		session_fail(s, KUBE_ERR_TRANSPORT, 0,
			     "exec into pod \"%s\": no random bytes for the handshake", s->label);
		return -1;
	}
	EVP_EncodeBlock((unsigned char *)s->ws_key, key, sizeof(key));
	/* lws times its own handshakes; ours (TLS and HTTP) get the same */
	lws_set_timeout(wsi, PENDING_TIMEOUT_AWAITING_SERVER_RESPONSE, HS_TIMEOUT_S);
	if (!s->client->ssl_ctx) {
		s->hs = HS_SEND;
		lws_callback_on_writable(wsi);
		return 0;
	}
	s->hs = HS_TLS;
	if (tls_start(s))
		return -1;
	return tls_input(s, wsi, NULL, 0); /* the ClientHello */
}

static int cb_raw_rx(struct kube_exec_session *s, struct lws *wsi, const void *in, size_t len)
{
	if (s->ssl)
		return tls_input(s, wsi, in, len);
	return on_plain(s, wsi, in, len);
}

static void cb_connection_error(struct kube_exec_session *s, const char *in, size_t len)
{
	char what[128];
	snprintf(what, sizeof(what), "%.*s", in ? (int)(len < 120 ? len : 120) : 0,
		 in ? in : "");
	session_fail(s, KUBE_ERR_TRANSPORT, 0, "exec into pod \"%s\": cannot connect: %s",
		     s->label, what[0] ? what : "connection failed");
	session_finalize(s, NULL);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t len)
{
	(void)user;
	struct kube_exec_session *s = wsi ? lws_get_opaque_user_data(wsi) : NULL;
	if (!s)
		return 0; /* vhost-level callbacks, or a session already finalized */
	s->wsi = wsi;
	switch (reason) {
	case LWS_CALLBACK_RAW_CONNECTED:
		return cb_connected(s, wsi);
	case LWS_CALLBACK_RAW_RX:
		return cb_raw_rx(s, wsi, in, len);
	case LWS_CALLBACK_RAW_WRITEABLE:
		return cb_raw_writeable(s, wsi);
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		cb_connection_error(s, in, len);
		return 0;
	case LWS_CALLBACK_RAW_CLOSE:
	case LWS_CALLBACK_WSI_DESTROY:
		if (s->state != ST_OPEN)
			session_fail(s, KUBE_ERR_TRANSPORT, 0,
				     "exec into pod \"%s\": the connection closed or timed out "
				     "during the handshake",
				     s->label);
		session_finalize(s, NULL);
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols protocols[] = {
	{ "sbx-kube-exec", callback, 0, KUBE_EXEC_RX_BUFFER, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* ---- the service thread ---- */

static void connect_session(struct kube_exec_client *c, struct kube_exec_session *s)
{
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof(ci));
	ci.context = c->ctx;
	ci.address = c->address;
	ci.port = c->port;
	ci.ssl_connection = 0; /* TLS is ours: see the top of this part */
	ci.method = "RAW";
	ci.host = c->host_header;
	ci.protocol = protocols[0].name;
	ci.local_protocol_name = protocols[0].name;
	ci.opaque_user_data = s;

	s->state = ST_CONNECTING;
	s->next = c->active;
	s->prev = NULL;
	if (c->active)
		c->active->prev = s;
	c->active = s;

	/* callbacks may finalize s before lws_client_connect_via_info returns */
	atomic_fetch_add(&s->refs, 1);
	struct lws *wsi = lws_client_connect_via_info(&ci);
	if (!s->finalized) {
		if (wsi) {
			s->wsi = wsi;
		} else {
			session_fail(s, KUBE_ERR_TRANSPORT, 0,
				     "exec into pod \"%s\": cannot start a connection to %s:%d",
				     s->label, c->address, c->port);
			session_finalize(s, NULL);
		}
	}
	session_unref(s);
}

static void apply_requests(struct kube_exec_client *c, struct kube_exec_session *s)
{
	if (s->finalized || !s->wsi)
		return; /* not connected yet: cb_established picks the requests up */
	pthread_mutex_lock(&s->mu);
	bool cancel = s->cancel_req;
	bool pause = s->pause_req;
	bool out = has_output_locked(s);
	pthread_mutex_unlock(&s->mu);
	if (cancel) {
		if (!s->kill_sent) {
			s->kill_sent = true;
			session_fail(s, KUBE_ERR_CANCELLED, 0, "exec into pod \"%s\" cancelled",
				     s->label);
			/* outside any callback: close now (finalizes s) */
			lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
		}
		return;
	}
	if (s->state != ST_OPEN)
		return;
	if (pause != s->pause_applied) {
		lws_rx_flow_control(s->wsi, (pause ? 0 : 1) | LWS_RXFLOW_REASON_FLAG_PROCESS_NOW);
		s->pause_applied = pause;
	}
	if (out)
		lws_callback_on_writable(s->wsi);
	(void)c;
}

/* Take the queued work. While shutting down, sessions not yet connected are
 * closed at once instead. */
static void process_requests(struct kube_exec_client *c, bool shutting_down)
{
	pthread_mutex_lock(&c->mu);
	struct kube_exec_session *pending = c->pending_head;
	struct kube_exec_session *dirty = c->dirty_head;
	c->pending_head = c->pending_tail = NULL;
	c->dirty_head = NULL;
	pthread_mutex_unlock(&c->mu);

	while (pending) {
		struct kube_exec_session *s = pending;
		pending = s->next;
		s->next = NULL;
		pthread_mutex_lock(&s->mu);
		bool cancel = s->cancel_req;
		pthread_mutex_unlock(&s->mu);
		if (cancel || shutting_down) {
			struct kube_error e;
			kube_error_set(&e, KUBE_ERR_CANCELLED, "exec into pod \"%s\" %s", s->label,
				       cancel ? "cancelled" : "not started: the exec client shut down");
			session_finalize(s, &e);
		} else {
			connect_session(c, s);
		}
	}
	while (dirty) {
		struct kube_exec_session *s = dirty;
		dirty = s->dirty_next;
		pthread_mutex_lock(&s->mu);
		s->dirty = false;
		s->dirty_next = NULL;
		pthread_mutex_unlock(&s->mu);
		atomic_fetch_add(&s->refs, 1);
		apply_requests(c, s);
		session_unref(s); /* ours */
		session_unref(s); /* the dirty list's */
	}
}

static void *service_main(void *arg)
{
	struct kube_exec_client *c = arg;
	c->service_tid = pthread_self();
	atomic_store_explicit(&c->tid_set, true, memory_order_release);
	while (!atomic_load(&c->stop)) {
		process_requests(c, false);
		if (lws_service(c->ctx, 0) < 0) {
			log_error("kube exec: the service loop failed");
			break;
		}
	}

	/* shutting down: every session gets on_close with "cancelled" */
	pthread_mutex_lock(&c->mu);
	c->stopping = true;
	pthread_mutex_unlock(&c->mu);
	process_requests(c, true);
	for (struct kube_exec_session *s = c->active; s; s = s->next)
		session_fail(s, KUBE_ERR_CANCELLED, 0, "exec client shut down");
	pthread_mutex_lock(&c->mu);
	c->lws_alive = false;
	pthread_mutex_unlock(&c->mu);
	lws_context_destroy(c->ctx); /* closes every connection: finalizes */
	c->ctx = NULL;
	while (c->active) {
		struct kube_exec_session *s = c->active;
		session_finalize(s, NULL); /* unlinks s */
	}
	/* all sessions are closed: nobody adds to the lists any more */
	process_requests(c, true);
	return NULL;
}

/* ---- TLS ---- */

static void tls_error(char *err, size_t errlen, const char *what)
{
	char e[160] = "";
	unsigned long code = ERR_peek_last_error();
	if (code)
		ERR_error_string_n(code, e, sizeof(e));
	ERR_clear_error();
	snprintf(err, errlen, "exec client: %s%s%s", what, e[0] ? ": " : "", e);
}

static int load_ca(SSL_CTX *ctx, const char *pem, size_t len, char *err, size_t errlen)
{
	int n = 0;
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	STACK_OF(X509_INFO) *infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	for (int i = 0; infos && i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);
		if (xi->x509 && X509_STORE_add_cert(store, xi->x509) == 1)
			n++;
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	BIO_free(bio);
	if (n == 0) {
		tls_error(err, errlen, "no usable certificate in the CA bundle");
		return -1;
	}
	ERR_clear_error();
	return 0;
}

static int load_client_cert(SSL_CTX *ctx, const struct kube_config *cfg, char *err,
			    size_t errlen)
{
	int rc = -1;
	BIO *cb = BIO_new_mem_buf(cfg->cert_pem, (int)cfg->cert_len);
	BIO *kb = BIO_new_mem_buf(cfg->key_pem, (int)cfg->key_len);
	X509 *leaf = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
	EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
	if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
		tls_error(err, errlen, "cannot use the client certificate");
		goto out;
	}
	X509 *extra;
	while ((extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
			X509_free(extra);
			tls_error(err, errlen, "cannot use the client certificate chain");
			goto out;
		}
	}
	ERR_clear_error(); /* the loop ends on "no start line" */
	if (!key || SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		tls_error(err, errlen, "cannot use the client key");
		goto out;
	}
	rc = 0;
out:
	X509_free(leaf);
	EVP_PKEY_free(key);
	BIO_free(cb);
	BIO_free(kb);
	return rc;
}

static SSL_CTX *tls_ctx_new(const struct kube_config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		tls_error(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, cfg->insecure_skip_tls_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
			   NULL);
	if (cfg->ca_pem && cfg->ca_len) {
		if (load_ca(ctx, cfg->ca_pem, cfg->ca_len, err, errlen))
			goto fail;
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		tls_error(err, errlen, "cannot load the system CA certificates");
		goto fail;
	}
	if (cfg->cert_pem && cfg->key_pem && load_client_cert(ctx, cfg, err, errlen))
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- lws logging ---- */

/* lws logging is process-wide: the same routing as api/http_server.c (lws's
 * own complaints go to debug), so whichever module sets it last is fine. */
static void lws_log_emit(int level, const char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (level & (LLL_ERR | LLL_WARN))
		log_debug("lws: %.*s", (int)n, line);
}

/* ---- the public API ---- */

struct kube_exec_client *kube_exec_client_new(const struct kube_config *cfg, char *err,
					      size_t errlen)
{
	if (!cfg || !cfg->server) {
		snprintf(err, errlen, "exec client: no API server URL");
		return NULL;
	}
	struct kube_exec_client *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "exec client: out of memory");
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	atomic_init(&c->stop, false);
	atomic_init(&c->tid_set, false);
	atomic_init(&c->nsessions, 0);
	int r = kube_exec_parse_server(cfg->server, &c->address, &c->port, &c->tls,
				       &c->base_path);
	if (r) {
		snprintf(err, errlen, "exec client: %s API server URL \"%s\"",
			 r == -ENOMEM ? "out of memory for the" : "unusable", cfg->server);
		goto fail;
	}
	c->host_header = strdup(cfg->tls_server_name && *cfg->tls_server_name
					? cfg->tls_server_name
					: c->address);
	c->token = xstrdup_or_null(cfg->token);
	c->token_file = xstrdup_or_null(cfg->token_file);
	if (c->host_header) {
		/* an IPv6 literal goes in brackets; the port unless the scheme's */
		bool v6 = strchr(c->host_header, ':') != NULL;
		bool dflt = c->port == (c->tls ? 443 : 80);
		size_t hl = strlen(c->host_header) + 16;
		c->host_port = malloc(hl);
		if (c->host_port && dflt)
			snprintf(c->host_port, hl, "%s%s%s", v6 ? "[" : "", c->host_header,
				 v6 ? "]" : "");
		else if (c->host_port)
			snprintf(c->host_port, hl, "%s%s%s:%d", v6 ? "[" : "", c->host_header,
				 v6 ? "]" : "", c->port);
	}
	c->txbuf = malloc(LWS_PRE + KUBE_WS_MAX_HEADER + 1 + KUBE_EXEC_WRITE_CHUNK);
	c->txcipher = malloc(LWS_PRE + TX_CIPHER);
	c->rxplain = malloc(KUBE_EXEC_RX_BUFFER);
	if (!c->host_header || !c->host_port || (cfg->token && !c->token) ||
	    (cfg->token_file && !c->token_file) || !c->txbuf || !c->txcipher || !c->rxplain) {
		snprintf(err, errlen, "exec client: out of memory");
		goto fail;
	}
	if (c->tls) {
		c->ssl_ctx = tls_ctx_new(cfg, err, errlen);
		if (!c->ssl_ctx)
			goto fail;
		c->ssl_flags = LCCSCF_USE_SSL;
		if (cfg->insecure_skip_tls_verify)
			c->ssl_flags |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_ALLOW_INSECURE |
					LCCSCF_ALLOW_EXPIRED |
					LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
	}

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.user = c;
	info.options = 0; /* lws does no TLS for us: see "the client" */
	info.pt_serv_buf_size = KUBE_EXEC_RX_BUFFER; /* raw reads land here */
	info.timeout_secs = 30;
	info.connect_timeout_secs = 15;
	info.ka_time = 60;
	info.ka_probes = 4;
	info.ka_interval = 15;
	info.alpn = "http/1.1";
	c->ctx = lws_create_context(&info);
	if (!c->ctx) {
		snprintf(err, errlen, "exec client: libwebsockets could not start (see the log)");
		goto fail;
	}
	c->lws_alive = true;
	if (pthread_create(&c->thread, NULL, service_main, c) != 0) {
		snprintf(err, errlen, "exec client: cannot start the service thread");
		goto fail;
	}
	c->thread_started = true;
	return c;
fail:
	kube_exec_client_free(c);
	return NULL;
}

void kube_exec_client_free(struct kube_exec_client *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->mu);
		c->stopping = true;
		atomic_store(&c->stop, true);
		wake_locked(c);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	} else if (c->ctx) {
		lws_context_destroy(c->ctx);
	}
	SSL_CTX_free(c->ssl_ctx);
	free(c->address);
	free(c->host_header);
	free(c->host_port);
	free(c->base_path);
	free_secret(c->token);
	free(c->token_file);
	free(c->txbuf);
	free(c->txcipher);
	free(c->rxplain);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

unsigned kube_exec_client_active(struct kube_exec_client *c)
{
	return c ? atomic_load(&c->nsessions) : 0;
}

/* A copy of the bearer token for one handshake (NULL when none is configured). */
static enum kube_err take_token(struct kube_exec_client *c, char **out, struct kube_error *err)
{
	enum kube_err rc = KUBE_OK;
	*out = NULL;
	pthread_mutex_lock(&c->mu);
	if (c->token_file &&
	    (!c->token || c->token_stale || now_ms() - c->token_read_ms >= TOKEN_REREAD_MS)) {
		char *tok = NULL;
		size_t len = 0;
		int r = read_file_bounded(c->token_file, KUBE_CONFIG_MAX_TOKEN, &tok, &len);
		if (r == 0) {
			while (len && (tok[len - 1] == '\n' || tok[len - 1] == '\r' ||
				       tok[len - 1] == ' ' || tok[len - 1] == '\t'))
				tok[--len] = '\0';
			free_secret(c->token);
			c->token = tok;
			c->token_read_ms = now_ms();
			c->token_stale = false;
		} else if (!c->token) {
			rc = kube_error_set(err, KUBE_ERR_UNAUTHORIZED,
					    "cannot read the token file \"%s\": %s", c->token_file,
					    strerror(-r));
		}
	}
	if (rc == KUBE_OK && c->token && c->token[0]) {
		*out = strdup(c->token);
		if (!*out)
			rc = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

enum kube_err kube_exec_start(struct kube_exec_client *c, const struct kube_exec_req *req,
			      const struct kube_exec_ops *ops, void *ud,
			      struct kube_exec_session **out, struct kube_error *err)
{
	struct kube_error local;
	if (!err)
		err = &local;
	kube_error_clear(err);
	*out = NULL;
	if (!c)
		return kube_error_set(err, KUBE_ERR_ARG, "no exec client");
	struct kube_exec_session *s = calloc(1, sizeof(*s));
	if (!s)
		return kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
	atomic_init(&s->refs, 2); /* the caller's and the service thread's */
	pthread_mutex_init(&s->mu, NULL);
	kube_exec_demux_init(&s->rx);
	s->client = c;
	if (ops)
		s->ops = *ops;
	s->ud = ud;

	char why[256];
	enum kube_err rc = kube_exec_build_path(c->base_path, req, &s->path, why, sizeof(why));
	if (rc != KUBE_OK) {
		kube_error_set(err, rc, "%s", why);
		goto fail;
	}
	s->with_stdin = req->with_stdin;
	s->tty = req->tty;
	s->v4_only = req->v4_only;
	s->high_water = req->stdin_high_water ? req->stdin_high_water : KUBE_EXEC_STDIN_HIGH_WATER;
	size_t ll = strlen(req->namespace) + strlen(req->pod) + 2;
	s->label = malloc(ll);
	if (!s->label) {
		rc = kube_error_set(err, KUBE_ERR_NOMEM, "out of memory");
		goto fail;
	}
	snprintf(s->label, ll, "%s/%s", req->namespace, req->pod);
	rc = take_token(c, &s->token, err);
	if (rc != KUBE_OK)
		goto fail;
	if (strlen(s->path) + (s->token ? strlen(s->token) : 0) + HS_OVERHEAD > HS_MAX_REQUEST) {
		rc = kube_error_set(err, KUBE_ERR_TOO_LARGE, "exec handshake would be too large");
		goto fail;
	}

	pthread_mutex_lock(&c->mu);
	if (c->stopping || atomic_load(&c->nsessions) >= KUBE_EXEC_MAX_SESSIONS) {
		bool stopping = c->stopping;
		pthread_mutex_unlock(&c->mu);
		rc = kube_error_set(err, KUBE_ERR_CANCELLED, "%s",
				    stopping ? "exec client is shutting down"
					     : "too many exec streams open");
		goto fail;
	}
	atomic_fetch_add(&c->nsessions, 1);
	if (c->pending_tail)
		c->pending_tail->next = s;
	else
		c->pending_head = s;
	c->pending_tail = s;
	wake_locked(c);
	pthread_mutex_unlock(&c->mu);
	*out = s;
	return KUBE_OK;
fail:
	atomic_store(&s->refs, 1);
	session_unref(s);
	return rc;
}

ssize_t kube_exec_write_stdin(struct kube_exec_session *s, const void *data, size_t len)
{
	if (!s->with_stdin)
		return -EINVAL;
	if (len == 0)
		return 0;
	ssize_t rc;
	pthread_mutex_lock(&s->mu);
	if (s->closed || s->cancel_req || s->stdin_close_req) {
		rc = -EPIPE;
		goto out;
	}
	if (s->in_queued >= s->high_water) {
		s->want_ready = true;
		rc = -EAGAIN;
		goto out;
	}
	size_t take = s->high_water - s->in_queued;
	if (take > len)
		take = len;
	if (take > SSIZE_MAX)
		take = SSIZE_MAX;
	struct stdin_chunk *ch = malloc(sizeof(*ch) + take);
	if (!ch) {
		rc = -ENOMEM;
		goto out;
	}
	ch->next = NULL;
	ch->len = take;
	ch->off = 0;
	memcpy(ch->data, data, take);
	if (s->in_tail)
		s->in_tail->next = ch;
	else
		s->in_head = ch;
	s->in_tail = ch;
	s->in_queued += take;
	mark_dirty_locked(s);
	rc = (ssize_t)take;
out:
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int kube_exec_close_stdin(struct kube_exec_session *s)
{
	if (!s->with_stdin)
		return -EINVAL;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	if (s->closed || s->cancel_req) {
		rc = -EPIPE;
	} else if (s->proto == 4) {
		rc = -EOPNOTSUPP;
	} else if (!s->stdin_close_req) {
		s->stdin_close_req = true;
		mark_dirty_locked(s);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int kube_exec_resize(struct kube_exec_session *s, unsigned cols, unsigned rows)
{
	if (!s->tty || cols > 65535 || rows > 65535)
		return -EINVAL;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	if (s->closed || s->cancel_req) {
		rc = -EPIPE;
	} else {
		s->cols = cols;
		s->rows = rows;
		s->resize_pending = true; /* only the latest size matters */
		mark_dirty_locked(s);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int kube_exec_pause_output(struct kube_exec_session *s, bool pause)
{
	int rc = 0;
	bool direct = false;
	pthread_mutex_lock(&s->mu);
	if (s->closed) {
		rc = -EPIPE;
	} else {
		s->pause_req = pause;
		/* inside this session's own callback lws applies the change itself
		 * once the callback returns; anywhere else the loop does it */
		direct = on_service_thread(s->client) && s->in_cb && s->state == ST_OPEN;
		if (!direct)
			mark_dirty_locked(s);
	}
	pthread_mutex_unlock(&s->mu);
	if (direct && pause != s->pause_applied) {
		lws_rx_flow_control(s->wsi, pause ? 0 : 1);
		s->pause_applied = pause;
	}
	return rc;
}

void kube_exec_cancel(struct kube_exec_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	if (!s->closed && !s->cancel_req) {
		s->cancel_req = true;
		mark_dirty_locked(s);
	}
	pthread_mutex_unlock(&s->mu);
}

void kube_exec_release(struct kube_exec_session *s)
{
	if (!s)
		return;
	kube_exec_cancel(s);
	session_unref(s);
}

/* ---- kube_exec_run ---- */

struct run_state {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct buf out, err;
	bool out_trunc, err_trunc;
	bool got_exit;
	int exit_code;
	struct kube_error status;
	bool closed;
	struct kube_error close_err;
	bool stdin_ready;
	char protocol[24];
};

static void run_keep(struct run_state *r, struct buf *b, bool *trunc, const char *data,
		     size_t len)
{
	pthread_mutex_lock(&r->mu);
	size_t room = b->max - b->len;
	size_t take = len < room ? len : room;
	if (take && buf_append(b, data, take) != 0)
		take = 0;
	if (take < len)
		*trunc = true;
	pthread_mutex_unlock(&r->mu);
}

static void run_on_open(void *ud, const char *protocol)
{
	struct run_state *r = ud;
	pthread_mutex_lock(&r->mu);
	snprintf(r->protocol, sizeof(r->protocol), "%s", protocol);
	pthread_mutex_unlock(&r->mu);
}

static void run_on_stdout(void *ud, const char *data, size_t len)
{
	struct run_state *r = ud;
	run_keep(r, &r->out, &r->out_trunc, data, len);
}

static void run_on_stderr(void *ud, const char *data, size_t len)
{
	struct run_state *r = ud;
	run_keep(r, &r->err, &r->err_trunc, data, len);
}

static void run_on_exit(void *ud, int exit_code, const struct kube_error *status)
{
	struct run_state *r = ud;
	pthread_mutex_lock(&r->mu);
	r->got_exit = true;
	r->exit_code = exit_code;
	r->status = *status;
	pthread_mutex_unlock(&r->mu);
}

static void run_on_stdin_ready(void *ud)
{
	struct run_state *r = ud;
	pthread_mutex_lock(&r->mu);
	r->stdin_ready = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void run_on_close(void *ud, const struct kube_error *err)
{
	struct run_state *r = ud;
	pthread_mutex_lock(&r->mu);
	r->closed = true;
	r->close_err = *err;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Wait on r->cv until *flag or r->closed or the deadline (0: none); holds r->mu.
 * Returns false when the deadline passed. */
static bool run_wait(struct run_state *r, const bool *flag, int64_t deadline_ms)
{
	while (!r->closed && !(flag && *flag)) {
		if (deadline_ms) {
			int64_t left = deadline_ms - now_ms();
			if (left <= 0)
				return false;
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += left / 1000;
			ts.tv_nsec += (left % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&r->cv, &r->mu, &ts);
		} else {
			pthread_cond_wait(&r->cv, &r->mu);
		}
	}
	return true;
}

enum kube_err kube_exec_run(struct kube_exec_client *c, const struct kube_exec_req *req,
			    const void *stdin_data, size_t stdin_len, size_t max_output,
			    int timeout_ms, struct kube_exec_result *out)
{
	memset(out, 0, sizeof(*out));
	out->exit_code = -1;
	int64_t began = now_ms();
	int64_t deadline = timeout_ms > 0 ? began + timeout_ms : 0;

	struct run_state r;
	memset(&r, 0, sizeof(r));
	pthread_mutex_init(&r.mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r.cv, &ca);
	pthread_condattr_destroy(&ca);
	buf_init(&r.out, max_output);
	buf_init(&r.err, max_output);
	r.exit_code = -1;

	struct kube_exec_req rq = *req;
	rq.with_stdin = stdin_data != NULL;
	static const struct kube_exec_ops ops = {
		.on_open = run_on_open,
		.on_stdout = run_on_stdout,
		.on_stderr = run_on_stderr,
		.on_exit = run_on_exit,
		.on_stdin_ready = run_on_stdin_ready,
		.on_close = run_on_close,
	};
	struct kube_exec_session *s = NULL;
	enum kube_err rc = kube_exec_start(c, &rq, &ops, &r, &s, &out->error);
	if (rc != KUBE_OK)
		goto done;

	bool in_time = true;
	if (stdin_data) {
		const char *p = stdin_data;
		size_t off = 0;
		while (off < stdin_len && in_time) {
			ssize_t n = kube_exec_write_stdin(s, p + off, stdin_len - off);
			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if (n != -EAGAIN)
				break; /* closing: the outcome comes with on_close */
			pthread_mutex_lock(&r.mu);
			r.stdin_ready = false;
			pthread_mutex_unlock(&r.mu);
			/* the queue may have drained between the write and now */
			n = kube_exec_write_stdin(s, p + off, stdin_len - off);
			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if (n != -EAGAIN)
				break;
			pthread_mutex_lock(&r.mu);
			in_time = run_wait(&r, &r.stdin_ready, deadline);
			pthread_mutex_unlock(&r.mu);
		}
		if (in_time && kube_exec_close_stdin(s) == -EOPNOTSUPP)
			log_debug("kube exec: v4 cannot close stdin; the command may wait for it");
	}
	pthread_mutex_lock(&r.mu);
	if (in_time)
		in_time = run_wait(&r, NULL, deadline);
	pthread_mutex_unlock(&r.mu);
	if (!in_time) {
		out->timed_out = true;
		kube_exec_cancel(s);
		pthread_mutex_lock(&r.mu);
		run_wait(&r, NULL, 0); /* on_close follows the cancel promptly */
		pthread_mutex_unlock(&r.mu);
	}
	kube_exec_release(s);

	/* the session is closed: r is ours alone */
	out->exit_code = r.got_exit ? r.exit_code : -1;
	snprintf(out->protocol, sizeof(out->protocol), "%s", r.protocol);
	if (out->timed_out) {
		rc = kube_error_set(&out->error, KUBE_ERR_TIMEOUT,
				    "exec in pod \"%s/%s\" timed out after %d ms (the command may "
				    "still be running: closing the stream does not stop it)",
				    req->namespace, req->pod, timeout_ms);
		out->exit_code = -1;
	} else if (r.got_exit && r.exit_code >= 0) {
		kube_error_clear(&out->error);
		rc = KUBE_OK;
	} else if (r.got_exit) {
		out->error = r.status;
		rc = out->error.code != KUBE_OK ? out->error.code : KUBE_ERR_PROTOCOL;
		out->error.code = rc;
	} else {
		out->error = r.close_err;
		rc = out->error.code != KUBE_OK ? out->error.code : KUBE_ERR_TRANSPORT;
		out->error.code = rc;
	}
done:
	out->stdout_truncated = r.out_trunc;
	out->stderr_truncated = r.err_trunc;
	out->stdout_len = r.out.len;
	out->stderr_len = r.err.len;
	out->stdout_data = buf_detach(&r.out);
	out->stderr_data = buf_detach(&r.err);
	if (!out->stdout_data || !out->stderr_data) {
		FREE_AND_NULL(out->stdout_data);
		FREE_AND_NULL(out->stderr_data);
		out->stdout_len = out->stderr_len = 0;
		if (rc == KUBE_OK)
			rc = kube_error_set(&out->error, KUBE_ERR_NOMEM, "out of memory");
	}
	buf_release(&r.out);
	buf_release(&r.err);
	out->duration_ms = now_ms() - began;
	pthread_cond_destroy(&r.cv);
	pthread_mutex_destroy(&r.mu);
	return rc;
}

void kube_exec_result_release(struct kube_exec_result *r)
{
	if (!r)
		return;
	FREE_AND_NULL(r->stdout_data);
	FREE_AND_NULL(r->stderr_data);
	r->stdout_len = r->stderr_len = 0;
}
