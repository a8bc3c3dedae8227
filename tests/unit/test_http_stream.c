/*
 * Tests for the streaming parts of api/http_server.c: streamed replies
 * (http_reply_stream_begin / http_stream_write / http_stream_end) and
 * streamed request bodies (stream_body, http_request_read_body,
 * http_request_resume_body). A real server on 127.0.0.1 in a thread, raw
 * sockets as clients. Covers: round trips with back-pressure, bounded
 * queueing against a client that does not read, abort, HEAD, a client that
 * leaves mid-stream, on_reply once, bodies with pauses and resumes from
 * another thread (Content-Length and chunked), refusal before the body is
 * read (with and without Expect: 100-continue), body timeouts and a client
 * that leaves mid-upload.
 */
#include "http_server.h"
#include "log.h"
#include "util.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HW (64u << 10) /* stream_high_water in these tests */

static uint8_t pattern(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13);
}

/* ---- streamed replies: a writer thread per stream ---- */

struct writer {
	struct http_stream *s;
	uint64_t total;     /* Content-Length */
	uint64_t stop_at;   /* abort after this many (total: no abort) */
	bool no_end;        /* leave without http_stream_end... never: ends */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool drained, closed, completed;
	int close_calls, drain_calls;
	uint64_t accepted;  /* bytes http_stream_write took */
	int last_rc;
	atomic_bool done;   /* the writer thread finished */
};

static void w_on_drain(void *ud)
{
	struct writer *w = ud;
	pthread_mutex_lock(&w->mu);
	w->drained = true;
	w->drain_calls++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void w_on_close(void *ud, bool completed)
{
	struct writer *w = ud;
	pthread_mutex_lock(&w->mu);
	w->closed = true;
	w->completed = completed;
	w->close_calls++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static const struct http_stream_ops w_ops = { .on_drain = w_on_drain, .on_close = w_on_close };

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	unsigned char buf[20000];
	uint64_t off = 0;
	bool ok = true;
	while (off < w->stop_at) {
		size_t n = sizeof(buf);
		if (n > w->stop_at - off)
			n = (size_t)(w->stop_at - off);
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(off + i);
		pthread_mutex_lock(&w->mu);
		w->drained = false;
		pthread_mutex_unlock(&w->mu);
		int rc = http_stream_write(w->s, buf, n);
		w->last_rc = rc;
		if (rc == 0 || rc == -EAGAIN) {
			off += n;
			w->accepted = off;
		}
		if (rc == -EAGAIN) {
			pthread_mutex_lock(&w->mu);
			while (!w->drained && !w->closed)
				pthread_cond_wait(&w->cv, &w->mu);
			pthread_mutex_unlock(&w->mu);
		} else if (rc != 0) {
			ok = false;
			break;
		}
	}
	http_stream_end(w->s, ok && off == w->total);
	atomic_store(&w->done, true);
	return NULL;
}

static struct writer *g_writer; /* the test's stream (one at a time) */
static pthread_t g_writer_th;
static atomic_int replies_seen;

static void hook(void *ud, struct http_request *req, int status)
{
	(void)ud;
	(void)req;
	(void)status;
	atomic_fetch_add(&replies_seen, 1);
}

/* ---- streamed bodies ---- */

struct reader {
	struct http_request *req;
	pthread_mutex_t mu;
	uint64_t got;
	bool order_ok;
	int end_err;
	bool ended;
	int pauses;
	uint64_t pause_every;  /* 0: never pause */
	uint64_t next_pause;
	pthread_t resumer;
	bool resumer_on;
	bool reply_on_end;
	int resume_ms;         /* a pause lasts this long */
};

static struct reader *g_reader;

static void *resume_main(void *arg)
{
	struct reader *r = arg;
	usleep((useconds_t)(r->resume_ms ? r->resume_ms : 20) * 1000);
	pthread_mutex_lock(&r->mu);
	if (!r->ended)
		http_request_resume_body(r->req);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static size_t r_on_data(void *ud, const void *data, size_t len)
{
	struct reader *r = ud;
	pthread_mutex_lock(&r->mu);
	if (r->pause_every && r->got >= r->next_pause) {
		/* pause: take nothing, resume from another thread soon */
		r->next_pause = r->got + r->pause_every;
		r->pauses++;
		if (r->resumer_on)
			pthread_join(r->resumer, NULL);
		r->resumer_on = pthread_create(&r->resumer, NULL, resume_main, r) == 0;
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++)
		if (p[i] != pattern(r->got + i))
			r->order_ok = false;
	r->got += len;
	pthread_mutex_unlock(&r->mu);
	return len;
}

static void r_on_end(void *ud, int err)
{
	struct reader *r = ud;
	pthread_mutex_lock(&r->mu);
	r->ended = true;
	r->end_err = err;
	struct http_request *req = r->reply_on_end ? r->req : NULL;
	pthread_mutex_unlock(&r->mu);
	if (!req)
		return;
	if (err == 0) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "got", (double)r->got);
		cJSON_AddBoolToObject(o, "order_ok", r->order_ok);
		cJSON_AddNumberToObject(o, "pauses", r->pauses);
		http_reply_json(req, 200, o, NULL, 0);
	} else if (err == -ETIMEDOUT) {
		http_reply_error(req, 408, "request_timeout", NULL, 0, "slow body");
	} else if (err != -ECANCELED) {
		http_reply_error(req, 400, "bad_body", NULL, 0, "body error %d", err);
	}
}

static const struct http_body_ops r_ops = { .on_data = r_on_data, .on_end = r_on_end };

static bool stream_body_pred(void *ud, const struct http_request *req)
{
	(void)ud;
	return strncmp(http_request_path(req), "/up", 3) == 0;
}

static void handler(void *ud, struct http_request *req)
{
	(void)ud;
	const char *path = http_request_path(req);
	const char *q;
	if (strcmp(path, "/stream") == 0) {
		struct writer *w = g_writer;
		q = http_request_query(req, "n");
		w->total = q ? strtoull(q, NULL, 10) : 0;
		q = http_request_query(req, "abort_at");
		w->stop_at = q ? strtoull(q, NULL, 10) : w->total;
		w->s = http_reply_stream_begin(req, 200, "application/octet-stream", w->total, NULL, 0,
					       &w_ops, w);
		if (w->s)
			pthread_create(&g_writer_th, NULL, writer_main, w);
		return;
	}
	if (strcmp(path, "/up-refuse") == 0) {
		/* checks fail before any body byte: answered, body never read */
		CHECK(http_request_body_streamed(req));
		http_reply_error(req, 403, "forbidden", NULL, 0, "no");
		return;
	}
	if (strcmp(path, "/up") == 0) {
		struct reader *r = g_reader;
		r->req = req;
		CHECK(http_request_body_streamed(req));
		int rc = http_request_read_body(req, &r_ops, r);
		CHECK_INT(rc, 0);
		CHECK_INT(http_request_read_body(req, &r_ops, r), -EINVAL); /* once */
		return;
	}
	if (strcmp(path, "/plain") == 0) {
		size_t n;
		http_request_body(req, &n);
		CHECK(!http_request_body_streamed(req));
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "len", (double)n);
		http_reply_json(req, 200, o, NULL, 0);
		return;
	}
	http_reply_error(req, 404, "not_found", NULL, 0, "no");
}

/* ---- server ---- */

struct tserver {
	struct http_server *srv;
	pthread_t th;
	volatile int stop;
	int port;
};

static void *server_main(void *arg)
{
	struct tserver *ts = arg;
	http_server_run(ts->srv, &ts->stop);
	return NULL;
}

static struct tserver S;

static bool server_start(void)
{
	char err[256];
	struct http_server_opts o = {
		.bind_address = "127.0.0.1",
		.max_body = 1024,
		.request_timeout_s = 2,
		.idle_timeout_s = 5,
		.on_reply = hook,
		.stream_body = stream_body_pred,
		.stream_high_water = HW,
	};
	S.srv = http_server_new(&o, handler, NULL, err, sizeof(err));
	if (!S.srv) {
		fprintf(stderr, "%s\n", err);
		return false;
	}
	S.port = http_server_port(S.srv);
	pthread_create(&S.th, NULL, server_main, &S);
	return true;
}

/* ---- raw client ---- */

static int raw_connect(int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)S.port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send all; false when the peer refused the rest (reset, closed). */
static bool raw_send(int fd, const void *p, size_t n)
{
	const char *s = p;
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		s += w;
		n -= (size_t)w;
	}
	return true;
}

/* Read a response: head into hdr, then up to cap body bytes (checked
 * against pattern() when check). Returns body bytes; *eof when the peer
 * closed. */
struct rsp {
	int status;
	char hdr[4096];
	uint64_t clen;
	uint64_t body;
	bool pattern_ok;
	bool eof;
	char text[2048]; /* the first body bytes as text */
};

static void raw_response(int fd, struct rsp *r, uint64_t max_body, int timeout_ms)
{
	memset(r, 0, sizeof(*r));
	r->pattern_ok = true;
	char buf[65536];
	size_t hl = 0;
	int64_t end = now_ms() + timeout_ms;
	char *sep = NULL;
	size_t have = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = end - now_ms();
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return;
		ssize_t n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (n <= 0) {
			r->eof = true;
			return;
		}
		have += (size_t)n;
		buf[have] = '\0';
		sep = strstr(buf, "\r\n\r\n");
		if (sep)
			break;
	}
	hl = (size_t)(sep - buf) + 4;
	memcpy(r->hdr, buf, hl < sizeof(r->hdr) - 1 ? hl : sizeof(r->hdr) - 1);
	r->status = atoi(buf + 9);
	const char *cl = strcasestr(r->hdr, "\r\nContent-Length: ");
	r->clen = cl ? strtoull(cl + 18, NULL, 10) : 0;
	size_t first = have - hl;
	memcpy(r->text, buf + hl, first < sizeof(r->text) - 1 ? first : sizeof(r->text) - 1);
	for (size_t i = 0; i < first; i++)
		if ((uint8_t)buf[hl + i] != pattern(i))
			r->pattern_ok = false;
	r->body = first;
	while (r->body < max_body) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = end - now_ms();
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0) {
			r->eof = true;
			return;
		}
		for (ssize_t i = 0; i < n; i++)
			if ((uint8_t)buf[i] != pattern(r->body + (uint64_t)i))
				r->pattern_ok = false;
		r->body += (uint64_t)n;
	}
}

static struct writer *writer_new(void)
{
	struct writer *w = calloc(1, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	g_writer = w;
	return w;
}

/* Wait for the writer's thread and on_close; then free it. */
static void writer_finish(struct writer *w, bool *completed, int *closes)
{
	int64_t end = now_ms() + 10000;
	pthread_mutex_lock(&w->mu);
	while (!w->closed && now_ms() < end) {
		pthread_mutex_unlock(&w->mu);
		usleep(10000);
		pthread_mutex_lock(&w->mu);
	}
	*completed = w->completed;
	pthread_mutex_unlock(&w->mu);
	if (w->s)
		pthread_join(g_writer_th, NULL);
	usleep(50000); /* a second on_close would come now */
	*closes = w->close_calls;
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
	g_writer = NULL;
}

/* ---- tests: replies ---- */

static void test_stream_round_trip(void)
{
	int before = atomic_load(&replies_seen);
	struct writer *w = writer_new();
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	uint64_t n = 20u << 20;
	char req[256];
	snprintf(req, sizeof(req), "GET /stream?n=%llu HTTP/1.1\r\nHost: x\r\n\r\n",
		 (unsigned long long)n);
	raw_send(fd, req, strlen(req));
	struct rsp r;
	raw_response(fd, &r, n, 20000);
	CHECK_INT(r.status, 200);
	CHECK(r.clen == n);
	CHECK(r.body == n);
	CHECK(r.pattern_ok);
	CHECK(strstr(r.hdr, "Content-Type: application/octet-stream") != NULL);
	CHECK(strstr(r.hdr, "Connection: close") == NULL); /* keep-alive goes on */
	bool completed;
	int closes;
	int drains = w->drain_calls;
	writer_finish(w, &completed, &closes);
	CHECK(completed);
	CHECK_INT(closes, 1);
	CHECK(drains > 0); /* back-pressure happened */
	/* the connection serves the next request */
	raw_send(fd, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 34);
	raw_response(fd, &r, 1 << 20, 5000);
	CHECK_INT(r.status, 404);
	close(fd);
	CHECK_INT(atomic_load(&replies_seen) - before, 2); /* on_reply once each */
}

static void test_stream_bounded(void)
{
	/* a client that does not read: the writer is held back after the
	 * kernel's buffers and about 4 x HW of the server's */
	struct writer *w = writer_new();
	int fd = raw_connect(16 << 10);
	REQUIRE(fd >= 0);
	uint64_t n = 256u << 20;
	char req[256];
	snprintf(req, sizeof(req), "GET /stream?n=%llu HTTP/1.1\r\nHost: x\r\n\r\n",
		 (unsigned long long)n);
	raw_send(fd, req, strlen(req));
	usleep(700 * 1000);
	uint64_t a1 = w->accepted;
	usleep(500 * 1000);
	uint64_t a2 = w->accepted;
	printf("  not reading: the writer got %llu bytes queued (server + kernel buffers)\n",
	       (unsigned long long)a2);
	CHECK(a2 == a1);             /* held back: no progress without reading */
	CHECK(a2 < (16u << 20));     /* a bounded amount, not the 256 MiB */
	/* then read it all: every byte, in order */
	struct rsp r;
	raw_response(fd, &r, n, 60000);
	CHECK(r.body == n);
	CHECK(r.pattern_ok);
	close(fd);
	bool completed;
	int closes;
	writer_finish(w, &completed, &closes);
	CHECK(completed);
	CHECK_INT(closes, 1);
}

static void test_stream_abort(void)
{
	struct writer *w = writer_new();
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	const char *req = "GET /stream?n=3000000&abort_at=1000000 HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_send(fd, req, strlen(req));
	struct rsp r;
	raw_response(fd, &r, 3000000, 10000);
	CHECK_INT(r.status, 200);
	CHECK(r.clen == 3000000);
	CHECK(r.body <= 1000000); /* short of Content-Length */
	CHECK(r.eof);             /* and closed */
	CHECK(r.pattern_ok);
	close(fd);
	bool completed;
	int closes;
	writer_finish(w, &completed, &closes);
	CHECK(!completed);
	CHECK_INT(closes, 1);
}

static void test_stream_head(void)
{
	struct writer *w = writer_new();
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	const char *req = "HEAD /stream?n=123456 HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_send(fd, req, strlen(req));
	struct rsp r;
	raw_response(fd, &r, 0, 5000);
	CHECK_INT(r.status, 200);
	CHECK(r.clen == 123456);
	CHECK(r.body == 0);
	bool completed;
	int closes;
	int64_t t0 = now_ms();
	while (!atomic_load(&w->done) && now_ms() - t0 < 5000)
		usleep(10000);
	CHECK_INT(w->last_rc, -EPIPE); /* no body wanted */
	writer_finish(w, &completed, &closes);
	CHECK(completed);
	CHECK_INT(closes, 1);
	/* still usable: keep-alive after a HEAD */
	raw_send(fd, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 34);
	raw_response(fd, &r, 1 << 20, 5000);
	CHECK_INT(r.status, 404);
	close(fd);
}

static void test_stream_client_vanishes(void)
{
	struct writer *w = writer_new();
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	const char *req = "GET /stream?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_send(fd, req, strlen(req));
	struct rsp r;
	raw_response(fd, &r, 100000, 5000);
	CHECK_INT(r.status, 200);
	close(fd);
	bool completed;
	int closes;
	writer_finish(w, &completed, &closes);
	CHECK(!completed);
	CHECK_INT(closes, 1);
	struct http_server_stats st;
	http_server_get_stats(S.srv, &st);
	CHECK(st.streams_aborted >= 2);
}

/* ---- tests: bodies ---- */

static struct reader *reader_new(uint64_t pause_every)
{
	struct reader *r = calloc(1, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	r->order_ok = true;
	r->pause_every = pause_every;
	r->next_pause = pause_every;
	r->reply_on_end = true;
	g_reader = r;
	return r;
}

static void reader_free(struct reader *r)
{
	int64_t t0 = now_ms();
	for (;;) {
		pthread_mutex_lock(&r->mu);
		bool ended = r->ended;
		pthread_mutex_unlock(&r->mu);
		if (ended || now_ms() - t0 > 10000)
			break;
		usleep(10000);
	}
	if (r->resumer_on)
		pthread_join(r->resumer, NULL);
	pthread_mutex_destroy(&r->mu);
	free(r);
	g_reader = NULL;
}

static void *send_body_main(void *arg)
{
	int *a = arg; /* fd, length, chunked */
	unsigned char buf[30000];
	uint64_t off = 0, n = (uint64_t)a[1];
	while (off < n) {
		size_t k = sizeof(buf);
		if (k > n - off)
			k = (size_t)(n - off);
		for (size_t i = 0; i < k; i++)
			buf[i] = pattern(off + i);
		if (a[2]) {
			char line[32];
			snprintf(line, sizeof(line), "%zx;ext=1\r\n", k);
			raw_send(a[0], line, strlen(line));
		}
		if (!raw_send(a[0], buf, k))
			break;
		if (a[2])
			raw_send(a[0], "\r\n", 2);
		off += k;
	}
	if (a[2])
		raw_send(a[0], "0\r\n\r\n", 5);
	return NULL;
}

static void upload(bool chunked, uint64_t pause_every, int resume_ms)
{
	struct reader *r = reader_new(pause_every);
	r->resume_ms = resume_ms;
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	int n = 8 << 20;
	char head[256];
	if (chunked)
		snprintf(head, sizeof(head),
			 "PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	else
		snprintf(head, sizeof(head), "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
			 n);
	raw_send(fd, head, strlen(head));
	int args[3] = { fd, n, chunked };
	pthread_t th;
	pthread_create(&th, NULL, send_body_main, args);
	struct rsp resp;
	raw_response(fd, &resp, 1 << 20, 30000);
	pthread_join(th, NULL);
	close(fd);
	CHECK_INT(resp.status, 200);
	char want[64];
	snprintf(want, sizeof(want), "\"got\":%d", n);
	CHECK(strstr(resp.text, want) != NULL);
	CHECK(strstr(resp.text, "\"order_ok\":true") != NULL);
	CHECK(strstr(resp.hdr, "Connection: close") != NULL);
	CHECK_INT(r->end_err, 0);
	if (pause_every)
		CHECK(r->pauses >= (int)((8u << 20) / pause_every) - 1);
	reader_free(r);
}

static void test_body_stream(void)
{
	upload(false, 0, 0);
	upload(false, 300000, 0); /* pauses, resumed from another thread */
	upload(true, 0, 0);
	upload(true, 500000, 0);
	/* a pause longer than request_timeout_s (2 s) is the reader's, not a
	 * slow client: no timeout */
	upload(false, 3u << 20, 2600);
}

static void test_body_refused_before_read(void)
{
	/* a client that sends its whole body before reading still reads the
	 * answer (the rest is read and dropped) */
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	int n = 6 << 20;
	char head[256];
	snprintf(head, sizeof(head), "PUT /up-refuse HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n);
	raw_send(fd, head, strlen(head));
	int args[3] = { fd, n, 0 };
	pthread_t th;
	pthread_create(&th, NULL, send_body_main, args);
	pthread_join(th, NULL);
	struct rsp r;
	raw_response(fd, &r, 1 << 20, 10000);
	CHECK_INT(r.status, 403);
	CHECK(strstr(r.hdr, "Connection: close") != NULL);
	close(fd);
	/* Expect: 100-continue: no 100, only the answer; the body is never sent */
	fd = raw_connect(0);
	REQUIRE(fd >= 0);
	snprintf(head, sizeof(head),
		 "PUT /up-refuse HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", n);
	raw_send(fd, head, strlen(head));
	raw_response(fd, &r, 1 << 20, 5000);
	CHECK_INT(r.status, 403);
	close(fd);
	/* Expect: 100-continue on a read body: the 100 comes, then the answer */
	struct reader *rd = reader_new(0);
	fd = raw_connect(0);
	snprintf(head, sizeof(head),
		 "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
	raw_send(fd, head, strlen(head));
	raw_response(fd, &r, 0, 5000);
	CHECK_INT(r.status, 100);
	raw_send(fd, "\x00\x01\x02", 3);
	raw_response(fd, &r, 1 << 20, 5000);
	CHECK_INT(r.status, 200);
	close(fd);
	reader_free(rd);
	/* a body over max_body is refused for an ordinary request */
	fd = raw_connect(0);
	raw_send(fd, "PUT /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 54);
	raw_response(fd, &r, 1 << 20, 5000);
	CHECK_INT(r.status, 413);
	close(fd);
}

static void test_body_timeout_and_vanish(void)
{
	/* stalls: no byte for request_timeout_s (2 s) -> on_end(-ETIMEDOUT) */
	struct reader *r = reader_new(0);
	int fd = raw_connect(0);
	REQUIRE(fd >= 0);
	const char *head = "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
	raw_send(fd, head, strlen(head));
	unsigned char b[100];
	for (int i = 0; i < 100; i++)
		b[i] = pattern((uint64_t)i);
	raw_send(fd, b, 100);
	int64_t t0 = now_ms();
	struct rsp resp;
	raw_response(fd, &resp, 1 << 20, 8000);
	int64_t ms = now_ms() - t0;
	CHECK_INT(resp.status, 408);
	CHECK(ms >= 1500 && ms < 6000);
	close(fd);
	CHECK_INT(r->end_err, -ETIMEDOUT);
	CHECK(r->got == 100);
	reader_free(r);

	/* progress resets the timeout: 5 bytes a second for 3 s is fine */
	r = reader_new(0);
	fd = raw_connect(0);
	head = "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n";
	raw_send(fd, head, strlen(head));
	for (int i = 0; i < 3; i++) {
		raw_send(fd, b + 5 * i, 5);
		usleep(900 * 1000);
	}
	raw_response(fd, &resp, 1 << 20, 5000);
	CHECK_INT(resp.status, 200);
	close(fd);
	reader_free(r);

	/* the client leaves mid-upload: on_end(-ECONNRESET); the late reply
	 * is dropped, and on_reply still sees it */
	r = reader_new(0);
	r->reply_on_end = false;
	fd = raw_connect(0);
	head = "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
	raw_send(fd, head, strlen(head));
	raw_send(fd, b, 100);
	usleep(200 * 1000);
	int before = atomic_load(&replies_seen);
	close(fd);
	t0 = now_ms();
	for (;;) {
		pthread_mutex_lock(&r->mu);
		bool ended = r->ended;
		pthread_mutex_unlock(&r->mu);
		if (ended || now_ms() - t0 > 5000)
			break;
		usleep(10000);
	}
	CHECK(r->ended);
	CHECK_INT(r->end_err, -ECONNRESET);
	http_reply_error(r->req, 400, "gone", NULL, 0, "late");
	CHECK_INT(atomic_load(&replies_seen) - before, 1);
	reader_free(r);
}

int main(void)
{
	log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
	if (!server_start())
		return 1;
	RUN(test_stream_round_trip);
	RUN(test_stream_bounded);
	RUN(test_stream_abort);
	RUN(test_stream_head);
	RUN(test_stream_client_vanishes);
	RUN(test_body_stream);
	RUN(test_body_refused_before_read);
	RUN(test_body_timeout_and_vanish);
	S.stop = 1;
	http_server_wake(S.srv);
	pthread_join(S.th, NULL);
	http_server_free(S.srv);
	return test_summary();
}
