/*
 * files_api: the files endpoints over exec (see files_api.h).
 */
#include "files_api.h"

#include "log.h"
#include "sandbox_files.h"
#include "util.h"

#include "buf.h"
#include "kube_exec.h"
#include "sandbox_spec.h"
#include "sandbox_store.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILES_TIMEOUT_S 600  /* DELETE, start to end */

bool files_api_path(struct http_request *req, const struct sbx_template *t, char *out,
		    size_t outlen)
{
	static const char *const allowed[] = { "path", "parents", NULL };
	const char *unknown = NULL;
	if (http_request_query_unknown(req, allowed, &unknown)) {
		http_reply_error(req, 400, "unknown_parameter", NULL, 0,
				 "unknown query parameter \"%.64s\"", unknown);
		return false;
	}
	if (!t->exec.shell) {
		http_reply_error(req, 422, "unsupported", NULL, 0,
				 "this template runs commands without a shell (exec.shell: none): files are not available");
		return false;
	}
	const char *path = http_request_query(req, "path");
	if (!path) {
		http_reply_error(req, 400, "invalid_path", NULL, 0, "the path parameter is required");
		return false;
	}
	const char *code = "invalid_path";
	int rc = sandbox_files_resolve(t->workspace_path, path, out, outlen, &code);
	if (rc) {
		int st = strcmp(code, "path_outside_workspace") == 0 ? 403
			 : strcmp(code, "invalid_workspace") == 0    ? 500
								       : 400;
		http_reply_error(req, st, code, NULL, 0,
				 "the path must be inside the workspace %s, without \"..\" or control characters",
				 t->workspace_path);
		return false;
	}
	return true;
}

/* ---- streamed transfers (GET, PUT) ----
 *
 * GET and PUT run their script over a kube_exec session of their own (not
 * exec_mgr_run_raw, which collects the whole output) so that bytes flow
 * through with back-pressure and bounded memory:
 *   GET  stdout -> header "F SIZE\n" parsed here -> streamed reply with
 *        Content-Length SIZE; http_stream_write -EAGAIN pauses the exec
 *        output, on_drain resumes it. Directories: the listing is collected
 *        (bounded by SBX_FILES_MAX_LISTING_BYTES) and answered as JSON.
 *   PUT  request body (http_request_read_body) -> the session's stdin;
 *        kube_exec_write_stdin -EAGAIN pauses the body (a short on_data),
 *        on_stdin_ready resumes it.
 * Per transfer this holds at most: the reply queue (http_server's
 * stream_high_water, 128 KiB by default, plus what arrives while pausing),
 * the stdin queue (FILES_STDIN_HIGH_WATER) and the lws receive buffers.
 *
 * Threads and locks. kube_exec callbacks run on the exec client's thread,
 * body and stream callbacks on the HTTP service thread; x->mu serialises
 * them. Lock order: x->mu, then kube_exec's or http_server's own locks (no
 * callback of theirs is called with those held). http_request_read_body is
 * called without x->mu (it may call on_data at once); resume_body only from
 * the exec client's thread, with x->mu held (it then never calls back).
 * The transfer is freed when its last part ends: the exec session
 * (on_close), the reply stream (on_close), the request body (on_end).
 * Timeouts: a transfer that moves no byte for FILES_IDLE_S is cancelled by
 * a timer thread (one for the process, started on first use). */

#define FILES_IDLE_S 120                  /* no byte moved: cancelled */
#define FILES_STDIN_HIGH_WATER (128u << 10) /* upload bytes queued for the exec */
#define FILES_MAX_STDERR 4096

struct xfer {
	pthread_mutex_t mu;
	int refs;                    /* parts still running (x->mu) */
	struct exec_mgr *m;
	char pod[SANDBOX_ID_MAX];
	char tenant[64];
	bool put, head;              /* PUT; HEAD (a GET without body) */
	char method[8];
	char path[SBX_FILES_PATH_MAX];
	struct http_request *req;    /* until answered */
	struct kube_exec_session *s; /* until the exec's on_close */
	bool linked;                 /* on the timer's list (g_mu) */
	struct xfer *next, *prev;    /* g_mu */
	_Atomic int64_t deadline_ms; /* no progress until then: cancelled */
	bool cancelled;              /* we cancelled the session */
	bool timed_out;
	/* the exec's end */
	bool have_exit;
	int exit_code;
	struct kube_error status;    /* of a failure without exit code */
	struct buf err;              /* stderr, for the log */
	/* GET */
	char hbuf[32];
	size_t hlen;
	bool parsed;
	struct sandbox_files_head h;
	struct buf listing;
	struct http_stream *st;      /* the reply, once begun */
	bool st_ended, st_closed;
	uint64_t sent;
	bool out_paused;
	bool bad_output;             /* more bytes than announced, a bad header */
	/* PUT */
	int64_t expected;            /* Content-Length, -1 chunked */
	size_t max_bytes;
	uint64_t fed;                /* body bytes given to stdin */
	bool body_open;              /* read_body done, on_end not yet */
	int body_err;                /* on_end's */
	bool stdin_closed;
	struct buf out;              /* the write script's answer */
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct xfer *g_list;
static pthread_once_t g_timer_once = PTHREAD_ONCE_INIT;

static void *timer_main(void *arg)
{
	(void)arg;
	for (;;) {
		sleep(1);
		int64_t now = now_ms();
		pthread_mutex_lock(&g_mu);
		for (struct xfer *x = g_list; x; x = x->next) {
			if (x->s && now > atomic_load(&x->deadline_ms)) {
				atomic_store(&x->deadline_ms, INT64_MAX);
				log_warn("files: %s %s in sandbox %s moved no byte for %d s; cancelled",
					 x->method, x->path, x->pod, FILES_IDLE_S);
				x->timed_out = true; /* read under x->mu later: set before the cancel */
				kube_exec_cancel(x->s);
			}
		}
		pthread_mutex_unlock(&g_mu);
	}
	return NULL;
}

static void timer_start(void)
{
	pthread_t th;
	if (pthread_create(&th, NULL, timer_main, NULL) == 0)
		pthread_detach(th);
	else
		log_error("files: cannot start the transfer timer; idle transfers will not time out");
}

static void progress(struct xfer *x)
{
	atomic_store(&x->deadline_ms, now_ms() + FILES_IDLE_S * 1000);
}

static void xfer_unref_locked(struct xfer *x)
{
	int left = --x->refs;
	pthread_mutex_unlock(&x->mu);
	if (left)
		return;
	buf_release(&x->err);
	buf_release(&x->listing);
	buf_release(&x->out);
	pthread_mutex_destroy(&x->mu);
	free(x);
}

/* The exec's failure without an exit code, as a reply. */
static void reply_exec_error(struct xfer *x, const struct kube_error *e)
{
	if (x->timed_out) {
		http_reply_error(x->req, 504, "timeout", NULL, 0,
				 "the transfer moved no byte for %d s", FILES_IDLE_S);
	} else if (e->code == KUBE_ERR_NOT_FOUND) {
		http_reply_error(x->req, 409, "sandbox_gone", NULL, 0, "the sandbox's Pod is gone");
	} else {
		http_reply_error(x->req, 502, "exec_failed", NULL, 0,
				 "the transfer could not be run in the sandbox (%s): %.300s",
				 kube_strerror(e->code), e->message);
	}
	x->req = NULL;
}

static void reply_exit(struct xfer *x)
{
	const char *code = "internal_error";
	int st = sandbox_files_exit_http(x->exit_code, &code);
	if (st >= 500)
		log_warn("files: %s of a file failed with exit %d: %.200s", x->method, x->exit_code,
			 x->err.data ? x->err.data : "");
	http_reply_error(x->req, st, code, NULL, 0, "%s %s: %s", x->method, x->path, code);
	x->req = NULL;
}

/* ---- kube_exec callbacks (the exec client's thread) ---- */

static void x_on_stderr(void *ud, const char *data, size_t len)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	size_t room = FILES_MAX_STDERR - x->err.len;
	if (room)
		if (buf_append(&x->err, data, len < room ? len : room) != 0)
			log_debug("files: stderr dropped (out of memory)");
	pthread_mutex_unlock(&x->mu);
}

static void x_on_exit(void *ud, int exit_code, const struct kube_error *status)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	if (exit_code >= 0) {
		x->have_exit = true;
		x->exit_code = exit_code;
	} else {
		x->status = *status;
	}
	pthread_mutex_unlock(&x->mu);
}

static void x_cancel_locked(struct xfer *x)
{
	if (x->s && !x->cancelled) {
		x->cancelled = true;
		kube_exec_cancel(x->s);
	}
}

static void st_on_drain(void *ud);
static void st_on_close(void *ud, bool completed);

static const struct http_stream_ops stream_ops = {
	.on_drain = st_on_drain,
	.on_close = st_on_close,
};

/* GET: file bytes after the header. */
static void get_body_locked(struct xfer *x, const char *data, size_t len)
{
	if (!len || x->bad_output || !x->st || x->st_closed || x->st_ended)
		return;
	if (len > x->h.size - x->sent) {
		x->bad_output = true; /* more than announced */
		x_cancel_locked(x);
		return;
	}
	int rc = http_stream_write(x->st, data, len);
	if (rc == 0 || rc == -EAGAIN)
		x->sent += len;
	if (rc == -EAGAIN && x->s && !x->out_paused) {
		x->out_paused = true;
		(void)kube_exec_pause_output(x->s, true);
	} else if (rc != 0 && rc != -EAGAIN) {
		/* -EPIPE: the client has gone (on_close tells too); anything else
		 * breaks the byte count: give up */
		if (rc != -EPIPE)
			log_warn("files: GET %s: cannot queue reply bytes (%s)", x->path, strerror(-rc));
		x->bad_output = rc != -EPIPE;
		x_cancel_locked(x);
	}
}

static void x_on_stdout(void *ud, const char *data, size_t len)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	progress(x);
	if (x->put) {
		size_t room = 64 - x->out.len;
		if (room)
			if (buf_append(&x->out, data, len < room ? len : room) != 0)
				log_debug("files: the write script's answer dropped (out of memory)");
		pthread_mutex_unlock(&x->mu);
		return;
	}
	if (!x->parsed) {
		size_t before = x->hlen;
		size_t c = sizeof(x->hbuf) - x->hlen;
		if (c > len)
			c = len;
		memcpy(x->hbuf + x->hlen, data, c);
		x->hlen += c;
		ssize_t hl = sandbox_files_parse_head(x->hbuf, x->hlen, &x->h);
		if (hl == 0 && x->hlen < sizeof(x->hbuf)) {
			pthread_mutex_unlock(&x->mu);
			return;
		}
		if (hl <= 0) {
			x->bad_output = true;
			x_cancel_locked(x);
			pthread_mutex_unlock(&x->mu);
			return;
		}
		x->parsed = true;
		data += (size_t)hl - before;
		len -= (size_t)hl - before;
		if (x->h.kind == SBX_FILES_KIND_FILE && x->req) {
			struct http_request *req = x->req;
			x->req = NULL;
			x->refs++; /* the stream's part, until its on_close */
			x->st = http_reply_stream_begin(req, 200, "application/octet-stream",
							x->h.size, NULL, 0, &stream_ops, x);
			if (!x->st) {
				x->refs--; /* no stream: no on_close */
				x->st_closed = x->st_ended = true;
				x_cancel_locked(x);
			} else if (x->head) {
				/* the head says it all */
				x->st_ended = true;
				http_stream_end(x->st, true);
				x_cancel_locked(x);
			}
		}
	}
	if (x->h.kind == SBX_FILES_KIND_DIR) {
		if (buf_append(&x->listing, data, len) != 0) {
			x->bad_output = true;
			x_cancel_locked(x);
		}
	} else {
		get_body_locked(x, data, len);
	}
	pthread_mutex_unlock(&x->mu);
}

static void x_on_stdin_ready(void *ud)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	/* not the service thread: resume_body only wakes it (no callback) */
	if (x->body_open && x->req)
		http_request_resume_body(x->req);
	pthread_mutex_unlock(&x->mu);
}

static void x_unlink(struct xfer *x)
{
	pthread_mutex_lock(&g_mu);
	if (x->linked) {
		if (x->prev)
			x->prev->next = x->next;
		else
			g_list = x->next;
		if (x->next)
			x->next->prev = x->prev;
		x->linked = false;
	}
	pthread_mutex_unlock(&g_mu);
}

static void finish_get_locked(struct xfer *x)
{
	bool ok = x->have_exit && x->exit_code == 0 && !x->bad_output && x->parsed;
	if (x->st) {
		/* the reply has begun: complete it or abort it */
		if (!x->st_ended) {
			bool whole = ok && x->sent == x->h.size;
			if (!whole && !x->st_closed)
				log_warn("files: GET %s: %s after %llu of %llu bytes; aborting the reply",
					 x->path,
					 x->have_exit && x->exit_code ? "the read failed"
					 : x->have_exit		       ? "the file shrank"
								       : "the exec stream ended",
					 (unsigned long long)x->sent, (unsigned long long)x->h.size);
			x->st_ended = true;
			http_stream_end(x->st, whole);
		}
		return;
	}
	if (!x->req)
		return;
	if (x->have_exit && x->exit_code != 0) {
		reply_exit(x);
	} else if (!x->have_exit) {
		reply_exec_error(x, x->status.code != KUBE_OK || x->status.message[0]
					    ? &x->status
					    : &(struct kube_error){ .code = KUBE_ERR_TRANSPORT,
								    .message = "the exec stream ended without a status" });
	} else if (!ok || x->h.kind != SBX_FILES_KIND_DIR) {
		http_reply_error(x->req, 502, "exec_failed", NULL, 0,
				 "unexpected answer from the sandbox");
		x->req = NULL;
	} else {
		cJSON *o = NULL;
		if (sandbox_files_parse_listing(x->path, x->listing.data ? x->listing.data : "",
						x->listing.len, &o) != 0)
			http_reply_error(x->req, 502, "exec_failed", NULL, 0,
					 "unexpected listing from the sandbox");
		else
			http_reply_json(x->req, 200, o, NULL, 0);
		x->req = NULL;
	}
}

static void finish_put_locked(struct xfer *x)
{
	if (!x->req)
		return; /* answered already (413 at the limit, ...) */
	if (x->have_exit && x->exit_code != 0) {
		reply_exit(x);
		return;
	}
	if (!x->have_exit) {
		if (x->body_err == -ETIMEDOUT) {
			http_reply_error(x->req, 408, "request_timeout", NULL, 0,
					 "the request body stopped arriving");
			x->req = NULL;
		} else if (x->body_err == -EPROTO) {
			http_reply_error(x->req, 400, "bad_request", NULL, 0, "malformed chunked body");
			x->req = NULL;
		} else {
			reply_exec_error(x, x->status.code != KUBE_OK || x->status.message[0]
						    ? &x->status
						    : &(struct kube_error){ .code = KUBE_ERR_TRANSPORT,
									    .message = "the exec stream ended without a status" });
		}
		return;
	}
	bool created = false;
	if (sandbox_files_parse_write_result(x->out.data ? x->out.data : "", x->out.len,
					     &created) != 0) {
		http_reply_error(x->req, 502, "exec_failed", NULL, 0,
				 "unexpected answer from the sandbox");
	} else if (created) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "path", x->path);
		cJSON_AddNumberToObject(o, "size", (double)x->fed);
		http_reply_json(x->req, 201, o, NULL, 0);
	} else {
		http_reply_empty(x->req, 204, NULL, 0);
	}
	x->req = NULL;
}

static void x_on_close(void *ud, const struct kube_error *err)
{
	struct xfer *x = ud;
	x_unlink(x);
	pthread_mutex_lock(&x->mu);
	struct kube_exec_session *s = x->s;
	x->s = NULL;
	if (!x->have_exit && x->status.code == KUBE_OK && !x->status.message[0])
		x->status = *err;
	if (x->put)
		finish_put_locked(x);
	else
		finish_get_locked(x);
	exec_mgr_release(x->m, x->pod, x->tenant);
	kube_exec_release(s);
	xfer_unref_locked(x);
}

static const struct kube_exec_ops exec_ops = {
	.on_stdout = x_on_stdout,
	.on_stderr = x_on_stderr,
	.on_exit = x_on_exit,
	.on_stdin_ready = x_on_stdin_ready,
	.on_close = x_on_close,
};

/* ---- reply stream callbacks (service thread) ---- */

static void st_on_drain(void *ud)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	progress(x);
	if (x->out_paused && x->s) {
		x->out_paused = false;
		(void)kube_exec_pause_output(x->s, false);
	}
	pthread_mutex_unlock(&x->mu);
}

static void st_on_close(void *ud, bool completed)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	x->st_closed = true;
	if (!completed) {
		/* the client went away (or the reply was aborted): stop the read */
		x_cancel_locked(x);
	}
	xfer_unref_locked(x);
}

/* ---- request body callbacks (service thread) ---- */

static size_t b_on_data(void *ud, const void *data, size_t len)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	progress(x);
	size_t take = len;
	if (x->stdin_closed || !x->s) {
		pthread_mutex_unlock(&x->mu);
		return len; /* the exec has ended or has all it needs: dropped */
	}
	/* a chunked body: one byte over the limit is enough for the script to
	 * refuse (43); the rest is dropped */
	if (x->expected < 0 && x->fed + take > (uint64_t)x->max_bytes + 1)
		take = (size_t)((uint64_t)x->max_bytes + 1 - x->fed);
	size_t off = 0;
	while (off < take) {
		ssize_t n = kube_exec_write_stdin(x->s, (const char *)data + off, take - off);
		if (n == -EAGAIN)
			break; /* on_stdin_ready resumes the body */
		if (n <= 0) {
			/* -EPIPE: the session is closing; its on_close answers */
			x->stdin_closed = true;
			off = len;
			break;
		}
		off += (size_t)n;
		x->fed += (uint64_t)n;
	}
	if (!x->stdin_closed && x->expected < 0 && x->fed > (uint64_t)x->max_bytes) {
		x->stdin_closed = true;
		(void)kube_exec_close_stdin(x->s);
		off = len;
	}
	if (off >= take && take < len)
		off = len;
	pthread_mutex_unlock(&x->mu);
	return off;
}

static void b_on_end(void *ud, int err)
{
	struct xfer *x = ud;
	pthread_mutex_lock(&x->mu);
	x->body_open = false;
	x->body_err = err;
	if (err == 0) {
		if (x->s && !x->stdin_closed) {
			x->stdin_closed = true;
			/* v4 cannot half-close: with a Content-Length the script
			 * stops after that many bytes anyway */
			(void)kube_exec_close_stdin(x->s);
		}
	} else if (err != -ECANCELED) {
		/* the client went away, stalled or sent bad framing: the
		 * script leaves the target untouched when stdin ends short */
		log_debug("files: PUT %s: the body ended early (%s)", x->path, strerror(-err));
		x_cancel_locked(x);
	}
	xfer_unref_locked(x);
}

static const struct http_body_ops body_ops = {
	.on_data = b_on_data,
	.on_end = b_on_end,
};

bool files_api_stream_body(void *ud, const struct http_request *req)
{
	(void)ud;
	static const char prefix[] = "/v1/sandboxes/";
	const char *p = http_request_path(req);
	if (strcmp(http_request_method(req), "PUT") != 0 ||
	    strncmp(p, prefix, sizeof(prefix) - 1) != 0)
		return false;
	p += sizeof(prefix) - 1;
	const char *slash = strchr(p, '/');
	return slash && slash > p && strcmp(slash, "/files") == 0;
}

/* Start a streamed GET or PUT. Takes argv. Answers req on failure. */
static void xfer_start(struct exec_mgr *m, struct http_request *req, const char *ns,
		       const char *pod, const char *tenant, const struct sbx_template *t,
		       const char *path, bool put, bool head, char **argv, int64_t expected)
{
	struct kube_exec_client *kx = exec_mgr_client(m);
	struct xfer *x = calloc(1, sizeof(*x));
	if (!x || !argv) {
		free(x);
		sandbox_files_argv_free(argv);
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	pthread_once(&g_timer_once, timer_start);
	pthread_mutex_init(&x->mu, NULL);
	x->m = m;
	snprintf(x->pod, sizeof(x->pod), "%s", pod);
	snprintf(x->tenant, sizeof(x->tenant), "%s", tenant);
	snprintf(x->method, sizeof(x->method), "%s", put ? "PUT" : "GET");
	snprintf(x->path, sizeof(x->path), "%s", path);
	x->put = put;
	x->head = head;
	x->req = req;
	x->expected = expected;
	x->max_bytes = t->exec.max_file_bytes;
	buf_init(&x->err, FILES_MAX_STDERR);
	buf_init(&x->listing, SBX_FILES_MAX_LISTING_BYTES);
	buf_init(&x->out, 64);
	progress(x);
	if (!kx) {
		sandbox_files_argv_free(argv);
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, 502, "exec_failed", NULL, 0,
				 "the transfer could not be run in the sandbox: exec is not available");
		pthread_mutex_destroy(&x->mu);
		free(x);
		return;
	}
	struct kube_exec_req kr = {
		.namespace = ns,
		.pod = pod,
		.container = SBX_CONTAINER,
		.argv = (const char *const *)argv,
		.with_stdin = put,
		.with_stdout = true,
		.with_stderr = true,
		/* GET: no stdin, and v4 is passed through to the node as it is,
		 * where v5 may lose the tail of a slowly read output
		 * (docs/kube-client.md, "Exec output and slow readers"). PUT:
		 * v5 when offered, to end stdin of a chunked body. */
		.v4_only = !put,
		.stdin_high_water = FILES_STDIN_HIGH_WATER,
	};
	struct kube_exec_session *s = NULL;
	struct kube_error ke;
	/* held across the start: no callback can run before x->s is set */
	pthread_mutex_lock(&x->mu);
	x->refs = 1; /* the session's */
	enum kube_err rc = kube_exec_start(kx, &kr, &exec_ops, x, &s, &ke);
	sandbox_files_argv_free(argv);
	if (rc != KUBE_OK) {
		pthread_mutex_unlock(&x->mu);
		x->status = ke;
		reply_exec_error(x, &ke);
		exec_mgr_release(m, pod, tenant);
		buf_release(&x->err);
		pthread_mutex_destroy(&x->mu);
		free(x);
		return;
	}
	x->s = s;
	pthread_mutex_lock(&g_mu);
	x->next = g_list;
	if (g_list)
		g_list->prev = x;
	g_list = x;
	x->linked = true;
	pthread_mutex_unlock(&g_mu);
	if (put) {
		/* still under x->mu, so that the exec's end cannot answer req
		 * first; read_body calls nothing back from inside */
		int brc = http_request_read_body(req, &body_ops, x);
		if (brc == 0) {
			x->refs++; /* the body's, until on_end */
			x->body_open = true;
		} else {
			x->body_err = brc;
			if (brc != -EPIPE)
				log_error("files: PUT %s: cannot read the body (%s)", path,
					  strerror(-brc));
			x_cancel_locked(x);
		}
	}
	pthread_mutex_unlock(&x->mu);
}

/* DELETE, and PUT of a body the server has read: a run through
 * exec_mgr_run_raw. */
struct del {
	struct http_request *req;
	char path[SBX_FILES_PATH_MAX];
	size_t size; /* PUT */
};

static void put_done(void *ud, const struct exec_raw_result *res)
{
	struct del *d = ud;
	bool created = false;
	if (!res->have_exit || res->exit_code != 0) {
		if (res->have_exit) {
			const char *code = "internal_error";
			int st = sandbox_files_exit_http(res->exit_code, &code);
			if (st >= 500)
				log_warn("files: PUT of a file failed with exit %d: %.200s",
					 res->exit_code, res->err);
			http_reply_error(d->req, st, code, NULL, 0, "PUT %s: %s", d->path, code);
		} else if (res->timed_out) {
			http_reply_error(d->req, 504, "timeout", NULL, 0,
					 "the transfer took over %d s", FILES_TIMEOUT_S);
		} else if (res->error->code == KUBE_ERR_NOT_FOUND) {
			http_reply_error(d->req, 409, "sandbox_gone", NULL, 0,
					 "the sandbox's Pod is gone");
		} else {
			http_reply_error(d->req, 502, "exec_failed", NULL, 0,
					 "the transfer could not be run in the sandbox (%s): %.300s",
					 kube_strerror(res->error->code), res->error->message);
		}
	} else if (sandbox_files_parse_write_result(res->out, res->out_len, &created) != 0) {
		http_reply_error(d->req, 502, "exec_failed", NULL, 0,
				 "unexpected answer from the sandbox");
	} else if (created) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "path", d->path);
		cJSON_AddNumberToObject(o, "size", (double)d->size);
		http_reply_json(d->req, 201, o, NULL, 0);
	} else {
		http_reply_empty(d->req, 204, NULL, 0);
	}
	free(d);
}

static void put_buffered(struct exec_mgr *m, struct http_request *req, const char *ns,
			 const char *pod, const char *tenant, const struct sbx_template *t,
			 const char *path, bool mk)
{
	size_t blen = 0;
	const char *body = http_request_body(req, &blen);
	if (blen > t->exec.max_file_bytes) {
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, 413, "file_too_large", NULL, 0,
				 "the file is over this template's limit (%zu bytes)",
				 t->exec.max_file_bytes);
		return;
	}
	struct del *d = calloc(1, sizeof(*d));
	char **argv = sandbox_files_write_argv(t->exec.shell, t->workspace_path, path,
					       t->exec.max_file_bytes, (int64_t)blen, mk);
	char *in = malloc(blen + 1);
	if (!d || !argv || !in) {
		free(d);
		free(in);
		sandbox_files_argv_free(argv);
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	memcpy(in, body, blen);
	d->req = req;
	d->size = blen;
	snprintf(d->path, sizeof(d->path), "%s", path);
	exec_mgr_run_raw(m, ns, pod, tenant, argv, in, blen, 4096, FILES_TIMEOUT_S, put_done, d);
}

static void del_done(void *ud, const struct exec_raw_result *res)
{
	struct del *d = ud;
	if (res->have_exit && res->exit_code == 0) {
		http_reply_empty(d->req, 204, NULL, 0);
	} else if (res->have_exit) {
		const char *code = "internal_error";
		int st = sandbox_files_exit_http(res->exit_code, &code);
		if (st >= 500)
			log_warn("files: DELETE of a file failed with exit %d: %.200s", res->exit_code,
				 res->err);
		http_reply_error(d->req, st, code, NULL, 0, "DELETE %s: %s", d->path, code);
	} else if (res->timed_out) {
		http_reply_error(d->req, 504, "timeout", NULL, 0, "the transfer took over %d s",
				 FILES_TIMEOUT_S);
	} else if (res->error->code == KUBE_ERR_NOT_FOUND) {
		http_reply_error(d->req, 409, "sandbox_gone", NULL, 0, "the sandbox's Pod is gone");
	} else {
		http_reply_error(d->req, 502, "exec_failed", NULL, 0,
				 "the transfer could not be run in the sandbox (%s): %.300s",
				 kube_strerror(res->error->code), res->error->message);
	}
	free(d);
}

void files_api_start(struct exec_mgr *m, struct http_request *req, const char *method,
		     const char *ns, const char *pod, const char *tenant,
		     const struct sbx_template *t, const char *path)
{
	bool head = strcmp(method, "HEAD") == 0;
	if (head || strcmp(method, "GET") == 0) {
		char **argv = sandbox_files_read_argv(t->exec.shell, t->workspace_path, path,
						      t->exec.max_file_bytes, SBX_FILES_MAX_ENTRIES);
		xfer_start(m, req, ns, pod, tenant, t, path, false, head, argv, 0);
		return;
	}
	if (strcmp(method, "PUT") == 0) {
		int64_t cl = http_request_content_length(req);
		if (cl > 0 && (uint64_t)cl > t->exec.max_file_bytes) {
			exec_mgr_release(m, pod, tenant);
			http_reply_error(req, 413, "file_too_large", NULL, 0,
					 "the file is over this template's limit (%zu bytes)",
					 t->exec.max_file_bytes);
			return;
		}
		const char *parents = http_request_query(req, "parents");
		bool mk = parents && strcmp(parents, "true") == 0;
		if (!http_request_body_streamed(req)) {
			/* the server read the body already (no body, or the HTTP
			 * server was not told to stream this request): bounded by
			 * its max_body */
			put_buffered(m, req, ns, pod, tenant, t, path, mk);
			return;
		}
		char **argv = sandbox_files_write_argv(t->exec.shell, t->workspace_path, path,
						       t->exec.max_file_bytes, cl, mk);
		xfer_start(m, req, ns, pod, tenant, t, path, true, false, argv, cl);
		return;
	}
	struct del *d = calloc(1, sizeof(*d));
	char **argv = sandbox_files_delete_argv(t->exec.shell, t->workspace_path, path);
	if (!d || !argv) {
		free(d);
		sandbox_files_argv_free(argv);
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
		return;
	}
	d->req = req;
	snprintf(d->path, sizeof(d->path), "%s", path);
	exec_mgr_run_raw(m, ns, pod, tenant, argv, NULL, 0, 4096, FILES_TIMEOUT_S, del_done, d);
}
