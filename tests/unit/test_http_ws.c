/*
 * Tests for the WebSocket side of api/http_server.c: a real server on
 * 127.0.0.1 (port 0) whose loop runs in a thread, and clients on raw sockets
 * (or OpenSSL over them) that do the RFC 6455 handshake and framing by hand,
 * so every byte is under the test's control. Covers subprotocol negotiation,
 * upgrades the handler refuses, handshakes the server refuses, echo (small,
 * fragmented, 1 MiB), the message size limit, sends from other threads,
 * back-pressure, pause_rx, clients that vanish, closing from another thread
 * while data arrives, 200 concurrent sockets (and bytes per idle socket),
 * pings, stopping with sockets open, and wss.
 */
#include "http_server.h"
#include "log.h"
#include "util.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define V5 "v5.channel.k8s.io"
#define V4 "v4.channel.k8s.io"

/* ---- server side: one struct per accepted socket ---- */

struct tws {
	struct tws *next;
	struct http_ws *ws;
	char path[64];
	atomic_int opened, closed, close_code, ready_calls;
	atomic_int msgs;          /* complete messages */
	atomic_llong bytes;       /* payload bytes received */
	atomic_int bad_flags;     /* first/final out of order */
	bool echo;
	bool release_in_close;    /* else the test releases */
	bool in_msg;
	unsigned char *acc;       /* message being received (echo) */
	size_t acc_len, acc_cap;
	bool acc_binary;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tws *reg_head;
static atomic_int handler_calls, hook_calls, hook_last_status;
static char seen_proto[64], seen_swp[1024], seen_upgrade[64];
static atomic_int seen_is_ws;

static void t_on_open(void *ud, struct http_ws *ws)
{
	struct tws *t = ud;
	if (ws != t->ws)
		atomic_fetch_add(&t->bad_flags, 100);
	atomic_fetch_add(&t->opened, 1);
}

static void t_on_message(void *ud, const void *data, size_t len, bool first, bool final,
			 bool binary)
{
	struct tws *t = ud;
	if (first == t->in_msg)
		atomic_fetch_add(&t->bad_flags, 1);
	t->in_msg = !final;
	atomic_fetch_add(&t->bytes, (long long)len);
	if (t->echo) {
		if (first) {
			t->acc_len = 0;
			t->acc_binary = binary;
		}
		if (t->acc_len + len > t->acc_cap) {
			size_t cap = (t->acc_len + len) * 2;
			t->acc = realloc(t->acc, cap);
			t->acc_cap = cap;
		}
		memcpy(t->acc + t->acc_len, data, len);
		t->acc_len += len;
		if (final)
			http_ws_send(t->ws, t->acc, t->acc_len, t->acc_binary);
	}
	if (final)
		atomic_fetch_add(&t->msgs, 1);
}

static void t_on_ready(void *ud)
{
	struct tws *t = ud;
	atomic_fetch_add(&t->ready_calls, 1);
}

static void t_on_close(void *ud, int code)
{
	struct tws *t = ud;
	atomic_store(&t->close_code, code);
	if (t->release_in_close)
		http_ws_release(t->ws);
	atomic_fetch_add(&t->closed, 1); /* last: the test may free t now */
}

static const struct http_ws_ops t_ops = { t_on_open, t_on_message, t_on_ready, t_on_close };

static void on_reply_hook(void *ud, struct http_request *req, int status)
{
	(void)ud;
	(void)req;
	atomic_fetch_add(&hook_calls, 1);
	atomic_store(&hook_last_status, status);
}

static void *slow_reply(void *arg)
{
	usleep(3500 * 1000);
	http_reply_empty(arg, 204, NULL, 0);
	return NULL;
}

static void handler(void *ud, struct http_request *req)
{
	(void)ud;
	atomic_fetch_add(&handler_calls, 1);
	const char *path = http_request_path(req);
	if (strcmp(path, "/slow") == 0) {
		pthread_t th;
		if (pthread_create(&th, NULL, slow_reply, req) == 0)
			pthread_detach(th);
		else
			http_reply_empty(req, 500, NULL, 0);
		return;
	}
	if (!http_request_is_websocket(req)) {
		CHECK(http_request_ws_protocol(req) == NULL);
		http_reply_error(req, 400, "not_websocket", NULL, 0, "websocket only");
		return;
	}
	atomic_store(&seen_is_ws, 1);
	const char *p = http_request_ws_protocol(req);
	const char *h = http_request_header(req, "sec-websocket-protocol");
	const char *u = http_request_header(req, "Upgrade");
	snprintf(seen_proto, sizeof(seen_proto), "%s", p ? p : "(null)");
	snprintf(seen_swp, sizeof(seen_swp), "%s", h ? h : "(null)");
	snprintf(seen_upgrade, sizeof(seen_upgrade), "%s", u ? u : "(null)");
	if (strcmp(path, "/ws/deny401") == 0) {
		http_reply_error(req, 401, "unauthorized", NULL, 0, "no token");
		return;
	}
	if (strncmp(path, "/ws/", 4) != 0) {
		http_reply_error(req, 404, "not_found", NULL, 0, "no such stream");
		return;
	}
	struct tws *t = calloc(1, sizeof(*t));
	snprintf(t->path, sizeof(t->path), "%.60s", path ? path : "");
	t->echo = strcmp(path, "/ws/echo") == 0;
	t->release_in_close = strcmp(path, "/ws/push") != 0;
	pthread_mutex_lock(&reg_mu);
	t->next = reg_head;
	reg_head = t;
	pthread_mutex_unlock(&reg_mu);
	t->ws = http_accept_websocket(req, &t_ops, t);
	CHECK(t->ws != NULL);
	/* a second accept or reply is refused */
	CHECK(http_accept_websocket(req, &t_ops, t) == NULL);
}

static struct tws *tws_latest(void)
{
	pthread_mutex_lock(&reg_mu);
	struct tws *t = reg_head;
	pthread_mutex_unlock(&reg_mu);
	return t;
}

static void tws_free_all(void)
{
	pthread_mutex_lock(&reg_mu);
	while (reg_head) {
		struct tws *t = reg_head;
		reg_head = t->next;
		free(t->acc);
		free(t);
	}
	pthread_mutex_unlock(&reg_mu);
}

static bool wait_int(atomic_int *v, int want, int limit_ms)
{
	for (int i = 0; i < limit_ms / 5; i++) {
		if (atomic_load(v) >= want)
			return true;
		usleep(5000);
	}
	return atomic_load(v) >= want;
}

/* ---- the server ---- */

struct tserver {
	struct http_server *srv;
	pthread_t th;
	volatile int stop;
	int rc;
};

static void *server_main(void *arg)
{
	struct tserver *ts = arg;
	ts->rc = http_server_run(ts->srv, &ts->stop);
	return NULL;
}

static const char *const protos[] = { V5, V4, NULL };

static struct http_server_opts default_opts(void)
{
	struct http_server_opts o;
	memset(&o, 0, sizeof(o));
	o.bind_address = "127.0.0.1";
	o.on_reply = on_reply_hook;
	o.ws_protocols = protos;
	o.ws_send_high_water = 64 << 10;
	return o;
}

static bool server_start(struct tserver *ts, const struct http_server_opts *o)
{
	char err[256];
	memset(ts, 0, sizeof(*ts));
	ts->srv = http_server_new(o, handler, NULL, err, sizeof(err));
	if (!ts->srv) {
		fprintf(stderr, "server: %s\n", err);
		return false;
	}
	return pthread_create(&ts->th, NULL, server_main, ts) == 0;
}

static void server_stop(struct tserver *ts)
{
	ts->stop = 1;
	http_server_wake(ts->srv);
	pthread_join(ts->th, NULL);
}

static struct tserver S;

/* ---- the client: raw socket, optionally TLS ---- */

struct wsc {
	int fd;
	SSL *ssl;
	unsigned char in[1 << 16];
	size_t in_pos, in_len;
	bool eof;
};

static SSL_CTX *client_tls;

static struct wsc *wsc_connect(int port, bool tls)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct wsc *w = calloc(1, sizeof(*w));
	w->fd = fd;
	if (tls) {
		w->ssl = SSL_new(client_tls);
		SSL_set_fd(w->ssl, fd);
		if (SSL_connect(w->ssl) != 1) {
			SSL_free(w->ssl);
			close(fd);
			free(w);
			return NULL;
		}
	}
	return w;
}

static void wsc_free(struct wsc *w)
{
	if (!w)
		return;
	if (w->ssl)
		SSL_free(w->ssl);
	close(w->fd);
	free(w);
}

/* Close with a TCP reset: the client "vanishes". */
static void wsc_abort(struct wsc *w)
{
	struct linger l = { 1, 0 };
	setsockopt(w->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	if (w->ssl) {
		SSL_free(w->ssl);
		w->ssl = NULL;
	}
	close(w->fd);
	free(w);
}

static bool wsc_write(struct wsc *w, const void *p, size_t n)
{
	const unsigned char *b = p;
	while (n) {
		ssize_t k = w->ssl ? SSL_write(w->ssl, b, (int)(n > (1u << 30) ? 1u << 30 : n))
				   : send(w->fd, b, n, MSG_NOSIGNAL);
		if (k <= 0)
			return false;
		b += k;
		n -= (size_t)k;
	}
	return true;
}

/* More input within timeout_ms; false on timeout or EOF. */
static bool wsc_fill(struct wsc *w, int timeout_ms)
{
	if (w->in_pos == w->in_len)
		w->in_pos = w->in_len = 0;
	if (w->in_len == sizeof(w->in)) {
		memmove(w->in, w->in + w->in_pos, w->in_len - w->in_pos);
		w->in_len -= w->in_pos;
		w->in_pos = 0;
	}
	if (!(w->ssl && SSL_pending(w->ssl))) {
		struct pollfd pfd = { w->fd, POLLIN, 0 };
		if (poll(&pfd, 1, timeout_ms) <= 0)
			return false;
	}
	ssize_t k = w->ssl ? SSL_read(w->ssl, w->in + w->in_len, (int)(sizeof(w->in) - w->in_len))
			   : recv(w->fd, w->in + w->in_len, sizeof(w->in) - w->in_len, 0);
	if (k <= 0) {
		w->eof = true;
		return false;
	}
	w->in_len += (size_t)k;
	return true;
}

static bool wsc_read(struct wsc *w, void *dst, size_t n, int timeout_ms)
{
	unsigned char *d = dst;
	int64_t end = now_ms() + timeout_ms;
	while (n) {
		if (w->in_pos == w->in_len) {
			int left = (int)(end - now_ms());
			if (left <= 0 || !wsc_fill(w, left))
				return false;
		}
		size_t k = w->in_len - w->in_pos;
		if (k > n)
			k = n;
		memcpy(d, w->in + w->in_pos, k);
		w->in_pos += k;
		d += k;
		n -= k;
	}
	return true;
}

/* Sec-WebSocket-Accept for key. */
static void ws_accept_for(const char *key, char *out)
{
	char buf[128];
	unsigned char sha[SHA_DIGEST_LENGTH];
	snprintf(buf, sizeof(buf), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
	SHA1((const unsigned char *)buf, strlen(buf), sha);
	EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH);
}

struct hresp {
	int status;
	char head[4096];
	char body[4096];
};

/* A header of the response head, or NULL. */
static const char *hget(const struct hresp *r, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = strstr(r->head, "\r\n");
	while (p && p[2]) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t n = e ? (size_t)(e - v) : strlen(v);
			if (n >= cap)
				n = cap - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return out;
		}
		p = strstr(p, "\r\n");
	}
	return NULL;
}

/* Send an upgrade request; read the response head (and a body when there
 * is a Content-Length). extra: more header lines ("Name: v\r\n..."). */
static bool ws_handshake(struct wsc *w, const char *path, const char *protocols,
			 const char *extra, struct hresp *r)
{
	static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
	char req[8192];
	int n = snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n%s%s%s%s\r\n",
			 path, key, extra ? extra : "Sec-WebSocket-Version: 13\r\n",
			 protocols ? "Sec-WebSocket-Protocol: " : "", protocols ? protocols : "",
			 protocols ? "\r\n" : "");
	memset(r, 0, sizeof(*r));
	if (!wsc_write(w, req, (size_t)n))
		return false;
	size_t len = 0;
	while (len < sizeof(r->head) - 1) {
		if (!wsc_read(w, r->head + len, 1, 3000))
			return false;
		len++;
		if (len >= 4 && memcmp(r->head + len - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	r->head[len] = '\0';
	if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1)
		return false;
	char cl[32];
	if (hget(r, "Content-Length", cl, sizeof(cl))) {
		size_t blen = (size_t)atoi(cl);
		if (blen >= sizeof(r->body) || !wsc_read(w, r->body, blen, 3000))
			return false;
		r->body[blen] = '\0';
	}
	if (r->status == 101) {
		char acc[64], want[64];
		ws_accept_for(key, want);
		if (!hget(r, "Sec-WebSocket-Accept", acc, sizeof(acc)) || strcmp(acc, want) != 0)
			return false;
	}
	return true;
}

/* One masked frame. */
static bool ws_send_frame(struct wsc *w, int opcode, bool fin, const void *data, size_t len)
{
	unsigned char h[14];
	size_t hl = 0;
	h[hl++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
	if (len < 126) {
		h[hl++] = (unsigned char)(0x80 | len);
	} else if (len < 65536) {
		h[hl++] = 0x80 | 126;
		h[hl++] = (unsigned char)(len >> 8);
		h[hl++] = (unsigned char)len;
	} else {
		h[hl++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			h[hl++] = (unsigned char)((uint64_t)len >> (8 * i));
	}
	unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
	memcpy(h + hl, mask, 4);
	hl += 4;
	unsigned char *buf = malloc(hl + len + 1);
	memcpy(buf, h, hl);
	const unsigned char *d = data;
	for (size_t i = 0; i < len; i++)
		buf[hl + i] = d[i] ^ mask[i & 3];
	bool ok = wsc_write(w, buf, hl + len);
	free(buf);
	return ok;
}

/* One frame: opcode, fin and payload (malloc'd into *out). */
static bool ws_recv_frame(struct wsc *w, int *opcode, bool *fin, unsigned char **out,
			  size_t *len, int timeout_ms)
{
	unsigned char h[2];
	*out = NULL;
	if (!wsc_read(w, h, 2, timeout_ms))
		return false;
	*opcode = h[0] & 0x0f;
	*fin = h[0] & 0x80;
	uint64_t n = h[1] & 0x7f;
	if (h[1] & 0x80)
		return false; /* server frames are never masked */
	if (n == 126) {
		unsigned char e[2];
		if (!wsc_read(w, e, 2, timeout_ms))
			return false;
		n = (uint64_t)e[0] << 8 | e[1];
	} else if (n == 127) {
		unsigned char e[8];
		if (!wsc_read(w, e, 8, timeout_ms))
			return false;
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | e[i];
	}
	*out = malloc(n + 1);
	if (!wsc_read(w, *out, n, timeout_ms)) {
		free(*out);
		*out = NULL;
		return false;
	}
	*len = n;
	return true;
}

/* One whole data message (pings answered, continuations joined); opcode
 * 8 (close) is returned as such with its payload. */
static bool ws_recv_msg(struct wsc *w, int *opcode, unsigned char **out, size_t *len,
			int timeout_ms, int *frames)
{
	unsigned char *msg = NULL;
	size_t mlen = 0;
	int mop = -1, nf = 0;
	for (;;) {
		int op;
		bool fin;
		unsigned char *p;
		size_t n;
		if (!ws_recv_frame(w, &op, &fin, &p, &n, timeout_ms)) {
			free(msg);
			return false;
		}
		if (op == 9) { /* ping */
			ws_send_frame(w, 10, true, p, n);
			free(p);
			continue;
		}
		if (op == 10) {
			free(p);
			continue;
		}
		if (op == 8) {
			free(msg);
			*opcode = 8;
			*out = p;
			*len = n;
			return true;
		}
		if (op != 0)
			mop = op;
		msg = realloc(msg, mlen + n + 1);
		memcpy(msg + mlen, p, n);
		mlen += n;
		free(p);
		nf++;
		if (fin)
			break;
	}
	*opcode = mop;
	*out = msg;
	*len = mlen;
	if (frames)
		*frames = nf;
	return true;
}

/* Until a close frame: its code (or -1 on EOF / timeout). */
static int ws_wait_close(struct wsc *w, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	while (now_ms() < end) {
		int op;
		unsigned char *p;
		size_t n;
		if (!ws_recv_msg(w, &op, &p, &n, (int)(end - now_ms()), NULL))
			return -1;
		int code = op == 8 ? (n >= 2 ? p[0] << 8 | p[1] : 1005) : 0;
		if (op == 8) /* answer it, as a client should */
			ws_send_frame(w, 8, true, p, n >= 2 ? 2 : 0);
		free(p);
		if (op == 8)
			return code;
	}
	return -1;
}

static void ws_close_client(struct wsc *w)
{
	unsigned char c[2] = { 0x03, 0xe8 };
	ws_send_frame(w, 8, true, c, 2);
	ws_wait_close(w, 2000);
}

/* An open echo socket. */
static struct wsc *ws_open(int port, bool tls, const char *path, struct tws **t)
{
	struct wsc *w = wsc_connect(port, tls);
	struct hresp r;
	if (!w)
		return NULL;
	if (!ws_handshake(w, path, V5, NULL, &r) || r.status != 101) {
		wsc_free(w);
		return NULL;
	}
	if (t) {
		*t = tws_latest();
		wait_int(&(*t)->opened, 1, 2000);
	}
	return w;
}

static bool echo_once(struct wsc *w, int opcode, const void *data, size_t len)
{
	int op;
	unsigned char *p;
	size_t n;
	if (!ws_send_frame(w, opcode, true, data, len) || !ws_recv_msg(w, &op, &p, &n, 5000, NULL))
		return false;
	bool ok = op == opcode && n == len && memcmp(p, data, len) == 0;
	free(p);
	return ok;
}

/* ---- tests ---- */

static void test_negotiation(void)
{
	int port = http_server_port(S.srv);
	struct http_server_stats st0, st1;
	http_server_get_stats(S.srv, &st0);
	static const struct {
		const char *offer, *want;
	} cases[] = {
		{ V5 ", " V4, V5 },
		{ V4, V4 },
		{ "base64url.bearer.authorization.k8s.io.dGVzdA, " V4, V4 },
		{ "channel.k8s.io," V5, V5 },
		/* the client's order decides, as in lws and kube-apiserver */
		{ V4 ", " V5, V4 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct wsc *w = wsc_connect(port, false);
		REQUIRE(w);
		struct hresp r;
		atomic_store(&hook_last_status, 0);
		CHECK(ws_handshake(w, "/ws/echo", cases[i].offer, NULL, &r));
		CHECK_INT(r.status, 101);
		char v[128];
		CHECK_STR(hget(&r, "Sec-WebSocket-Protocol", v, sizeof(v)), cases[i].want);
		CHECK(hget(&r, "X-Request-Id", v, sizeof(v)) != NULL);
		CHECK_STR(seen_proto, cases[i].want);
		CHECK_STR(seen_swp, cases[i].offer);
		CHECK_STR(seen_upgrade, "websocket");
		CHECK_INT(atomic_load(&hook_last_status), 101);
		struct tws *t = tws_latest();
		CHECK(wait_int(&t->opened, 1, 2000));
		CHECK(echo_once(w, 2, "hi", 2));
		ws_close_client(w);
		wsc_free(w);
		CHECK(wait_int(&t->closed, 1, 2000));
		CHECK_INT(atomic_load(&t->close_code), 1000);
		CHECK_INT(atomic_load(&t->bad_flags), 0);
	}
	http_server_get_stats(S.srv, &st1);
	CHECK_INT(st1.ws_accepted - st0.ws_accepted, ARRAY_SIZE(cases));
	CHECK_INT(st1.ws_open, 0);
	/* a plain GET of the same path reaches the handler as a plain request */
	struct wsc *w = wsc_connect(port, false);
	REQUIRE(w);
	static const char get[] = "GET /ws/echo HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[512] = "";
	wsc_write(w, get, sizeof(get) - 1);
	wsc_read(w, buf, 12, 2000);
	CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0);
	wsc_free(w);
}

static void test_handler_rejects(void)
{
	int port = http_server_port(S.srv);
	static const struct {
		const char *path;
		int status;
		const char *code;
	} cases[] = {
		{ "/ws/deny401", 401, "\"code\":\"unauthorized\"" },
		{ "/nothing", 404, "\"code\":\"not_found\"" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct wsc *w = wsc_connect(port, false);
		REQUIRE(w);
		struct hresp r;
		int hooks = atomic_load(&hook_calls);
		CHECK(ws_handshake(w, cases[i].path, V5, NULL, &r));
		CHECK_INT(r.status, cases[i].status);
		CHECK(strstr(r.body, cases[i].code) != NULL);
		CHECK(strstr(r.body, "\"request_id\"") != NULL);
		char v[64];
		CHECK_STR(hget(&r, "Connection", v, sizeof(v)), "close");
		CHECK(hget(&r, "Sec-WebSocket-Accept", v, sizeof(v)) == NULL);
		CHECK_INT(atomic_load(&hook_calls), hooks + 1);
		CHECK_INT(atomic_load(&hook_last_status), cases[i].status);
		/* then the connection closes */
		unsigned char b;
		CHECK(!wsc_read(w, &b, 1, 2000) && w->eof);
		wsc_free(w);
	}
}

static void test_server_rejects(void)
{
	int port = http_server_port(S.srv);
	char longp[800];
	snprintf(longp, sizeof(longp), "base64url.bearer.authorization.k8s.io.%0600d, " V5, 7);
	static char l2[128];
	snprintf(l2, sizeof(l2), "%070d, " V5, 1);
	const struct {
		const char *offer, *extra;
		int status;
		const char *code;
	} cases[] = {
		{ NULL, NULL, 400, "unsupported_subprotocol" },
		{ "chat, superchat", NULL, 400, "unsupported_subprotocol" },
		{ longp, NULL, 400, "subprotocol_header_too_long" },
		{ l2, NULL, 400, "bad_request" },   /* lws: name over 63 bytes */
		{ "a,," V5, NULL, 400, "bad_request" },
		{ V5, "Sec-WebSocket-Version: 8\r\n", 426, "upgrade_required" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int calls = atomic_load(&handler_calls);
		struct wsc *w = wsc_connect(port, false);
		REQUIRE(w);
		struct hresp r;
		CHECK(ws_handshake(w, "/ws/echo", cases[i].offer, cases[i].extra, &r));
		CHECK_INT(r.status, cases[i].status);
		CHECK(strstr(r.body, cases[i].code) != NULL);
		if (cases[i].status == 426) {
			char v[16];
			CHECK_STR(hget(&r, "Sec-WebSocket-Version", v, sizeof(v)), "13");
		}
		CHECK_INT(atomic_load(&handler_calls), calls); /* never reached it */
		wsc_free(w);
	}
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)((i * 131 + seed) ^ (i >> 9));
}

static void test_echo(void)
{
	int port = http_server_port(S.srv);
	struct tws *t;
	struct wsc *w = ws_open(port, false, "/ws/echo", &t);
	REQUIRE(w);
	CHECK(echo_once(w, 2, "\x00\x01\x02", 3));
	CHECK(echo_once(w, 1, "hello text", 10));
	CHECK(echo_once(w, 2, "", 0));
	unsigned char *big = malloc(1 << 20);
	fill(big, 1 << 20, 3);
	CHECK(echo_once(w, 2, big, 1000));
	CHECK(echo_once(w, 2, big, 70000));
	/* 1 MiB in one frame; it comes back as a fragmented message */
	CHECK(ws_send_frame(w, 2, true, big, 1 << 20));
	int op, frames = 0;
	unsigned char *p;
	size_t n;
	CHECK(ws_recv_msg(w, &op, &p, &n, 10000, &frames));
	CHECK_INT(op, 2);
	CHECK_INT(n, 1 << 20);
	CHECK(p && memcmp(p, big, 1 << 20) == 0);
	CHECK(frames > 1);
	free(p);
	/* 1 MiB in 16 fragments, and a three-fragment one */
	for (int i = 0; i < 16; i++)
		CHECK(ws_send_frame(w, i ? 0 : 2, i == 15, big + i * 65536, 65536));
	CHECK(ws_recv_msg(w, &op, &p, &n, 10000, NULL));
	CHECK(n == 1u << 20 && p && memcmp(p, big, n) == 0);
	free(p);
	CHECK(ws_send_frame(w, 1, false, "ab", 2));
	CHECK(ws_send_frame(w, 0, false, "cd", 2));
	CHECK(ws_send_frame(w, 0, true, "e", 1));
	CHECK(ws_recv_msg(w, &op, &p, &n, 5000, NULL));
	CHECK_INT(op, 1);
	CHECK(n == 5 && p && memcmp(p, "abcde", 5) == 0);
	free(p);
	CHECK_INT(atomic_load(&t->bad_flags), 0);
	CHECK_INT(atomic_load(&t->msgs), 8);
	ws_close_client(w);
	wsc_free(w);
	CHECK(wait_int(&t->closed, 1, 2000));
	free(big);
}

static void test_oversize(void)
{
	int port = http_server_port(S.srv);
	struct tws *t;
	struct wsc *w = ws_open(port, false, "/ws/echo", &t);
	REQUIRE(w);
	size_t n = (1 << 20) + 1;
	unsigned char *big = calloc(1, n);
	/* as fragments: the limit is on the whole message */
	CHECK(ws_send_frame(w, 2, false, big, 1 << 19));
	CHECK(ws_send_frame(w, 0, true, big, (1 << 19) + 1));
	CHECK_INT(ws_wait_close(w, 5000), 1009);
	CHECK(wait_int(&t->closed, 1, 3000));
	CHECK_INT(atomic_load(&t->close_code), 1009);
	CHECK_INT(atomic_load(&t->msgs), 0);
	CHECK_INT(atomic_load(&t->closed), 1);
	wsc_free(w);
	/* exactly the limit is fine */
	w = ws_open(port, false, "/ws/echo", &t);
	REQUIRE(w);
	CHECK(ws_send_frame(w, 2, true, big, 1 << 20));
	int op;
	unsigned char *p;
	size_t len;
	CHECK(ws_recv_msg(w, &op, &p, &len, 10000, NULL));
	CHECK_INT(len, 1 << 20);
	free(p);
	ws_close_client(w);
	wsc_free(w);
	CHECK(wait_int(&t->closed, 1, 2000));
	free(big);
}

struct pusher {
	struct http_ws *ws;
	int count;
	size_t size;
	atomic_int sent, again, nobufs, epipe;
	atomic_llong accepted_bytes;
	bool stop_on_again;
};

static void *push_main(void *arg)
{
	struct pusher *ps = arg;
	unsigned char *buf = malloc(ps->size + 8);
	for (int i = 0; i < ps->count; i++) {
		fill(buf, ps->size, (unsigned)i);
		memcpy(buf, &i, sizeof(i));
		int rc = http_ws_send(ps->ws, buf, ps->size, true);
		if (rc == 0 || rc == -EAGAIN) {
			atomic_fetch_add(&ps->sent, 1);
			atomic_fetch_add(&ps->accepted_bytes, (long long)ps->size);
		}
		if (rc == -EAGAIN) {
			atomic_fetch_add(&ps->again, 1);
			if (ps->stop_on_again)
				break;
		}
		if (rc == -ENOBUFS) {
			atomic_fetch_add(&ps->nobufs, 1);
			break;
		}
		if (rc == -EPIPE) {
			atomic_fetch_add(&ps->epipe, 1);
			break;
		}
	}
	free(buf);
	return NULL;
}

static void test_thread_send(void)
{
	int port = http_server_port(S.srv);
	struct tws *t;
	struct wsc *w = ws_open(port, false, "/ws/push", &t);
	REQUIRE(w);
	struct pusher ps = { .ws = t->ws, .count = 2000, .size = 100 };
	pthread_t th;
	pthread_create(&th, NULL, push_main, &ps);
	int got = 0;
	bool order = true;
	for (int i = 0; i < 2000; i++) {
		int op;
		unsigned char *p;
		size_t n;
		if (!ws_recv_msg(w, &op, &p, &n, 5000, NULL))
			break;
		int k;
		memcpy(&k, p, sizeof(k));
		if (k != i || n != 100)
			order = false;
		free(p);
		got++;
	}
	pthread_join(th, NULL);
	CHECK_INT(got, atomic_load(&ps.sent));
	CHECK(order);
	CHECK(atomic_load(&ps.sent) > 0);
	/* the owner closes from its thread */
	http_ws_close(t->ws, 4000, "bye");
	CHECK_INT(ws_wait_close(w, 3000), 4000);
	CHECK_INT(http_ws_send(t->ws, "x", 1, true), -EPIPE);
	wsc_free(w);
	CHECK(wait_int(&t->closed, 1, 3000));
	CHECK_INT(atomic_load(&t->close_code), 4000);
	http_ws_release(t->ws);
}

static void test_backpressure(void)
{
	int port = http_server_port(S.srv);
	struct tws *t;
	struct wsc *w = ws_open(port, false, "/ws/push", &t);
	REQUIRE(w);
	/* the client reads nothing: sends go on until -EAGAIN (once the
	 * kernel's buffers are full too) */
	struct pusher ps = { .ws = t->ws, .count = 100000, .size = 32 << 10, .stop_on_again = true };
	push_main(&ps);
	CHECK_INT(atomic_load(&ps.again), 1);
	long long first = atomic_load(&ps.accepted_bytes);
	/* a sender ignoring -EAGAIN meets -ENOBUFS: the queue stays bounded */
	struct pusher ps2 = { .ws = t->ws, .count = 100000, .size = 32 << 10 };
	push_main(&ps2);
	CHECK_INT(atomic_load(&ps2.nobufs), 1);
	long long second = atomic_load(&ps2.accepted_bytes);
	/* and so does a sender that carries on: the service thread may have
	 * moved some of the queue into the kernel meanwhile (its buffers grow
	 * on a loaded machine), so a few more messages may be taken, but never
	 * more than the queue's bound before -ENOBUFS again */
	static unsigned char chunk[32 << 10];
	long long extra = 0;
	int rc = 0, extra_again = 0;
	for (int i = 0; i < 1000 && (rc = http_ws_send(t->ws, chunk, sizeof(chunk), true)) != -ENOBUFS;
	     i++) {
		CHECK(rc == 0 || rc == -EAGAIN);
		extra_again += rc == -EAGAIN;
		extra += (long long)sizeof(chunk);
	}
	CHECK_INT(rc, -ENOBUFS);
	CHECK(extra <= 4 * (64 << 10));
	/* the client reads again: everything arrives, on_send_ready fires once */
	long long total = first + second + extra, got = 0;
	while (got < total) {
		int op;
		unsigned char *p;
		size_t n;
		if (!ws_recv_msg(w, &op, &p, &n, 5000, NULL))
			break;
		got += (long long)n;
		free(p);
	}
	CHECK_INT(got, total);
	CHECK_INT(atomic_load(&t->closed), 0);
	CHECK(wait_int(&t->ready_calls, 1, 2000));
	/* once per -EAGAIN/-ENOBUFS, not again without one */
	int ready = atomic_load(&t->ready_calls);
	CHECK(ready >= 1 && ready <= atomic_load(&ps.again) + atomic_load(&ps2.again) +
					 atomic_load(&ps2.nobufs) + extra_again + 1);
	CHECK_INT(http_ws_send(t->ws, "ok", 2, false), 0);
	usleep(100 * 1000);
	CHECK_INT(atomic_load(&t->ready_calls), ready);
	http_ws_close(t->ws, 1000, NULL);
	CHECK_INT(ws_wait_close(w, 3000), 1000);
	wsc_free(w);
	CHECK(wait_int(&t->closed, 1, 3000));
	http_ws_release(t->ws);
}

static void test_pause_rx(void)
{
	int port = http_server_port(S.srv);
	struct tws *t;
	struct wsc *w = ws_open(port, false, "/ws/push", &t);
	REQUIRE(w);
	http_ws_pause_rx(t->ws, true);
	usleep(100 * 1000);
	for (int i = 0; i < 5; i++)
		CHECK(ws_send_frame(w, 2, true, "abcd", 4));
	usleep(300 * 1000);
	CHECK_INT(atomic_load(&t->msgs), 0);
	http_ws_pause_rx(t->ws, false);
	CHECK(wait_int(&t->msgs, 5, 2000));
	CHECK_INT(atomic_load(&t->msgs), 5);
	http_ws_close(t->ws, 1000, "done");
	CHECK_INT(ws_wait_close(w, 3000), 1000);
	wsc_free(w);
	CHECK(wait_int(&t->closed, 1, 3000));
	http_ws_release(t->ws);
}

static void test_vanish(void)
{
	int port = http_server_port(S.srv);
	/* mid-message: half a frame, then a reset */
	struct tws *t;
	struct wsc *w = ws_open(port, false, "/ws/echo", &t);
	REQUIRE(w);
	unsigned char hdr[8] = { 0x82, 0x80 | 126, 0x10, 0x00, 1, 2, 3, 4 };
	wsc_write(w, hdr, sizeof(hdr));
	wsc_write(w, "partial", 7);
	usleep(50 * 1000);
	wsc_abort(w);
	CHECK(wait_int(&t->closed, 1, 3000));
	usleep(100 * 1000);
	CHECK_INT(atomic_load(&t->closed), 1);
	CHECK_INT(atomic_load(&t->close_code), 1006);

	/* while the server pushes from another thread */
	w = ws_open(port, false, "/ws/push", &t);
	REQUIRE(w);
	struct pusher ps = { .ws = t->ws, .count = 1000000, .size = 1000 };
	pthread_t th;
	pthread_create(&th, NULL, push_main, &ps);
	usleep(50 * 1000);
	wsc_abort(w);
	pthread_join(th, NULL);
	CHECK(wait_int(&t->closed, 1, 3000));
	CHECK_INT(atomic_load(&ps.epipe) + atomic_load(&ps.nobufs), 1);
	CHECK_INT(http_ws_send(t->ws, "x", 1, true), -EPIPE);
	http_ws_pause_rx(t->ws, true); /* harmless after close */
	http_ws_close(t->ws, 1000, NULL);
	http_ws_release(t->ws);

	/* the owner closes from another thread while the client sends */
	w = ws_open(port, false, "/ws/push", &t);
	REQUIRE(w);
	unsigned char blob[2000];
	fill(blob, sizeof(blob), 9);
	for (int i = 0; i < 200; i++) {
		ws_send_frame(w, 2, true, blob, sizeof(blob));
		if (i == 100)
			http_ws_close(t->ws, 4001, "owner");
	}
	CHECK_INT(ws_wait_close(w, 3000), 4001);
	wsc_free(w);
	CHECK(wait_int(&t->closed, 1, 3000));
	CHECK_INT(atomic_load(&t->close_code), 4001);
	CHECK_INT(atomic_load(&t->closed), 1);
	http_ws_release(t->ws);
}

static bool sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return true;
#endif
#endif
	return false;
}

static void test_many(void)
{
	enum { N = 200 };
	int port = http_server_port(S.srv);
	static struct wsc *ws[N];
	static struct tws *tw[N];
	/* settle one socket first, so one-off allocations are not counted */
	struct tws *t0;
	struct wsc *w0 = ws_open(port, false, "/ws/echo", &t0);
	REQUIRE(w0);
	CHECK(echo_once(w0, 2, "warm", 4));
	usleep(100 * 1000);
	struct mallinfo2 m0 = mallinfo2();
	int opened = 0;
	for (int i = 0; i < N; i++) {
		ws[i] = ws_open(port, false, "/ws/echo", &tw[i]);
		if (ws[i])
			opened++;
	}
	CHECK_INT(opened, N);
	usleep(200 * 1000);
	struct mallinfo2 m1 = mallinfo2();
	struct http_server_stats st;
	http_server_get_stats(S.srv, &st);
	CHECK_INT(st.ws_open, N + 1);
	/* the client's struct wsc and the test's struct tws are in the same
	 * heap: not the server's */
	long per = ((long)m1.uordblks - (long)m0.uordblks) / N - (long)sizeof(struct tws) -
		   (long)sizeof(struct wsc);
	printf("bytes of heap per idle WebSocket (server side, plain): %ld\n", per);
	if (!sanitized())
		CHECK(per > 0 && per < 16384);
	int echoed = 0;
	for (int i = 0; i < N; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "m%d", i);
		if (ws[i] && echo_once(ws[i], 2, msg, (size_t)n))
			echoed++;
	}
	CHECK_INT(echoed, N);
	for (int i = 0; i < N; i++) {
		if (!ws[i])
			continue;
		ws_close_client(ws[i]);
		wsc_free(ws[i]);
	}
	int closed = 0;
	for (int i = 0; i < N; i++) {
		if (tw[i] && wait_int(&tw[i]->closed, 1, 3000) && atomic_load(&tw[i]->closed) == 1)
			closed++;
	}
	CHECK_INT(closed, N);
	ws_close_client(w0);
	wsc_free(w0);
	CHECK(wait_int(&t0->closed, 1, 3000));
	http_server_get_stats(S.srv, &st);
	CHECK_INT(st.ws_open, 0);
}

/* A server with 1 s pings: a client that answers stays, one that does not
 * is closed; an HTTP request held for longer than that is unaffected. */
static void test_ping(void)
{
	struct tserver P;
	struct http_server_opts o = default_opts();
	o.ws_ping_s = 1;
	REQUIRE(server_start(&P, &o));
	int port = http_server_port(P.srv);
	struct tws *ta, *tb;
	struct wsc *a = ws_open(port, false, "/ws/echo", &ta);
	struct wsc *b = ws_open(port, false, "/ws/echo", &tb);
	REQUIRE(a && b);
	struct wsc *h = wsc_connect(port, false);
	REQUIRE(h);
	static const char get[] = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
	wsc_write(h, get, sizeof(get) - 1);
	/* a: reads and answers pings for 4 s */
	int pings = 0;
	int64_t end = now_ms() + 4000;
	while (now_ms() < end) {
		int op;
		bool fin;
		unsigned char *p;
		size_t n;
		if (!ws_recv_frame(a, &op, &fin, &p, &n, (int)(end - now_ms())))
			break;
		if (op == 9) {
			pings++;
			ws_send_frame(a, 10, true, p, n);
		}
		free(p);
	}
	CHECK(pings >= 2);
	CHECK_INT(atomic_load(&ta->closed), 0);
	CHECK(echo_once(a, 2, "alive", 5));
	/* b never answered */
	CHECK(wait_int(&tb->closed, 1, 3000));
	/* the HTTP request held 3.5 s still got its reply */
	char buf[64] = "";
	CHECK(wsc_read(h, buf, 12, 3000));
	CHECK(strncmp(buf, "HTTP/1.1 204", 12) == 0);
	wsc_free(h);
	ws_close_client(a);
	wsc_free(a);
	wsc_free(b);
	CHECK(wait_int(&ta->closed, 1, 3000));
	server_stop(&P);
	http_server_free(P.srv);
}

static void test_stop(void)
{
	struct tserver P;
	struct http_server_opts o = default_opts();
	REQUIRE(server_start(&P, &o));
	int port = http_server_port(P.srv);
	enum { N = 5 };
	struct wsc *w[N];
	struct tws *t[N];
	for (int i = 0; i < N; i++) {
		w[i] = ws_open(port, false, i ? "/ws/echo" : "/ws/push", &t[i]);
		REQUIRE(w[i]);
	}
	/* one client answers close frames (in a thread), the others do not */
	CHECK(http_ws_send(t[0]->ws, "queued", 6, false) == 0);
	int64_t t0 = now_ms();
	P.stop = 1;
	http_server_wake(P.srv);
	/* the queued message, then the close (1001) */
	int op;
	unsigned char *p;
	size_t n;
	CHECK(ws_recv_msg(w[0], &op, &p, &n, 3000, NULL));
	CHECK(n == 6 && p && memcmp(p, "queued", 6) == 0);
	free(p);
	CHECK_INT(ws_wait_close(w[0], 3000), 1001);
	pthread_join(P.th, NULL);
	CHECK(now_ms() - t0 < 4000);
	CHECK_INT(P.rc, 0);
	for (int i = 0; i < N; i++) {
		CHECK_INT(atomic_load(&t[i]->closed), 1);
		CHECK_INT(atomic_load(&t[i]->close_code), 1001);
	}
	CHECK_INT(http_ws_send(t[0]->ws, "x", 1, true), -EPIPE);
	http_ws_close(t[0]->ws, 1000, NULL);
	http_ws_release(t[0]->ws);
	struct http_server_stats st;
	http_server_get_stats(P.srv, &st);
	CHECK_INT(st.ws_open, 0);
	CHECK_INT(st.ws_accepted, N);
	http_server_free(P.srv);
	for (int i = 0; i < N; i++)
		wsc_free(w[i]);
}

static bool make_cert(const char *cert, const char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
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
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
				   -1, -1, 0);
	X509_set_issuer_name(x, name);
	if (!X509_sign(x, pk, EVP_sha256()))
		goto out;
	f = fopen(cert, "w");
	if (!f || !PEM_write_X509(f, x))
		goto out;
	fclose(f);
	f = fopen(key, "w");
	ok = f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
out:
	if (f)
		fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
	return ok;
}

static void test_tls(void)
{
	char dir[] = "/tmp/test_http_ws.XXXXXX", cert[64], key[64];
	REQUIRE(mkdtemp(dir));
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	REQUIRE(make_cert(cert, key));
	struct tserver P;
	struct http_server_opts o = default_opts();
	o.tls_cert_file = cert;
	o.tls_key_file = key;
	bool started = server_start(&P, &o);
	remove(cert);
	remove(key);
	rmdir(dir);
	REQUIRE(started);
	client_tls = SSL_CTX_new(TLS_client_method());
	int port = http_server_port(P.srv);
	struct tws *t;
	struct wsc *w = ws_open(port, true, "/ws/echo", &t);
	CHECK(w != NULL);
	if (w) {
		unsigned char *big = malloc(300000);
		fill(big, 300000, 5);
		CHECK(echo_once(w, 2, "tls", 3));
		CHECK(echo_once(w, 2, big, 300000));
		free(big);
		ws_close_client(w);
		wsc_free(w);
		CHECK(wait_int(&t->closed, 1, 3000));
		CHECK_INT(atomic_load(&t->close_code), 1000);
	}
	/* a refused upgrade over TLS is an HTTP answer too */
	w = wsc_connect(port, true);
	REQUIRE(w);
	struct hresp r;
	CHECK(ws_handshake(w, "/ws/deny401", V5, NULL, &r));
	CHECK_INT(r.status, 401);
	wsc_free(w);
	server_stop(&P);
	http_server_free(P.srv);
	SSL_CTX_free(client_tls);
	client_tls = NULL;
}

/* Without ws_protocols, an upgrade is refused by closing, as before. */
static void test_disabled(void)
{
	struct tserver P;
	struct http_server_opts o = default_opts();
	o.ws_protocols = NULL;
	REQUIRE(server_start(&P, &o));
	int calls = atomic_load(&handler_calls);
	struct wsc *w = wsc_connect(http_server_port(P.srv), false);
	REQUIRE(w);
	struct hresp r;
	CHECK(!ws_handshake(w, "/ws/echo", V5, NULL, &r));
	CHECK(w->eof);
	CHECK_INT(atomic_load(&handler_calls), calls);
	wsc_free(w);
	server_stop(&P);
	http_server_free(P.srv);
	const char *bad[] = { "has space", NULL };
	char err[256];
	o.ws_protocols = bad;
	CHECK(http_server_new(&o, handler, NULL, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "subprotocol") != NULL);
}

int main(int argc, char **argv)
{
	(void)argv;
	(void)argc;
	log_setup(getenv("WS_DEBUG") ? LOG_DEBUG : LOG_ERROR, LOG_FORMAT_TEXT);
	struct http_server_opts o = default_opts();
	if (!server_start(&S, &o)) {
		fprintf(stderr, "cannot start the server\n");
		return 1;
	}
	RUN(test_negotiation);
	RUN(test_handler_rejects);
	RUN(test_server_rejects);
	RUN(test_echo);
	RUN(test_oversize);
	RUN(test_thread_send);
	RUN(test_backpressure);
	RUN(test_pause_rx);
	RUN(test_vanish);
	RUN(test_many);
	RUN(test_ping);
	RUN(test_stop);
	RUN(test_tls);
	RUN(test_disabled);
	server_stop(&S);
	CHECK_INT(S.rc, 0);
	http_server_free(S.srv);
	tws_free_all();
	return test_summary();
}
