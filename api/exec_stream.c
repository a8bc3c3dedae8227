/*
 * exec_stream: the WebSocket exec bridge (see exec_stream.h).
 *
 * A bridge joins one client WebSocket (http_server, its service thread) and
 * one pods/exec session (kube_exec, the exec client's thread). Its mutex
 * guards the flags and the pending stdin; both ends hold a reference to it
 * until their on_close, and it is freed -- releasing the slot, the ws and
 * the session -- when both have closed.
 */
#include "exec_stream.h"

#include "buf.h"
#include "exec_policy.h"
#include "log.h"
#include "sandbox_spec.h"
#include "sandbox_store.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define MAX_COMMAND_PARAMS 64          /* command= values (the query holds at most 64) */
#define PENDING_STDIN_MAX (2u << 20)   /* stdin read from the client, not yet taken */
#define RESIZE_MAX 256                 /* one resize message */

void exec_stream_params_release(struct exec_stream_params *p)
{
	exec_argv_free(p->argv);
	memset(p, 0, sizeof(*p));
}

static int parse_bool(const char *v, bool *out)
{
	if (!v)
		return 0;
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
		*out = true;
	else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		*out = false;
	else
		return -1;
	return 0;
}

int exec_stream_parse(const struct http_request *req, const struct sbx_template *t,
		      struct exec_stream_params *out, const char **code, char *why,
		      size_t whylen)
{
	static const char *const allowed[] = { "command", "stdin",  "stdout", "stderr",
					       "tty",	  "container", NULL };
	memset(out, 0, sizeof(*out));
	const char *unknown = NULL;
	if (http_request_query_unknown(req, allowed, &unknown)) {
		*code = "unknown_parameter";
		snprintf(why, whylen, "unknown query parameter \"%.64s\"", unknown);
		return 400;
	}
	const char *container = http_request_query(req, "container");
	if (container && strcmp(container, SBX_CONTAINER) != 0) {
		*code = "invalid_container";
		snprintf(why, whylen, "a sandbox has one container, \"%s\"", SBX_CONTAINER);
		return 400;
	}
	out->with_stdout = true;
	out->with_stderr = true;
	static const char *const names[] = { "stdin", "stdout", "stderr", "tty" };
	bool *fields[] = { &out->with_stdin, &out->with_stdout, &out->with_stderr, &out->tty };
	for (size_t i = 0; i < 4; i++)
		if (parse_bool(http_request_query(req, names[i]), fields[i])) {
			*code = "invalid_parameter";
			snprintf(why, whylen, "%s must be true or false", names[i]);
			return 400;
		}
	if (out->tty)
		out->with_stderr = false; /* a terminal merges them, as Kubernetes does */
	if (!out->with_stdin && !out->with_stdout && !out->with_stderr) {
		*code = "invalid_parameter";
		snprintf(why, whylen, "at least one of stdin, stdout and stderr must be true");
		return 400;
	}
	const char *cmd[MAX_COMMAND_PARAMS + 1];
	size_t n = http_request_query_all(req, "command", cmd, MAX_COMMAND_PARAMS + 1);
	if (n == 0) {
		*code = "empty_command";
		snprintf(why, whylen, "give the command as one or more command= parameters");
		return 400;
	}
	if (n > MAX_COMMAND_PARAMS)
		n = MAX_COMMAND_PARAMS + 1; /* caught by the policy's max_args or below */
	if (n > t->exec.max_args || n > MAX_COMMAND_PARAMS) {
		*code = "too_many_args";
		snprintf(why, whylen, "too many command= parameters (at most %zu)",
			 t->exec.max_args < MAX_COMMAND_PARAMS ? t->exec.max_args
							       : (size_t)MAX_COMMAND_PARAMS);
		return 422;
	}
	enum exec_policy_result pr = exec_policy_check(&t->exec, cmd, n, why, whylen);
	if (pr != EXEC_POLICY_OK) {
		*code = exec_policy_code(pr);
		return pr == EXEC_POLICY_NOT_ALLOWED || pr == EXEC_POLICY_DENIED ? 403 : 422;
	}
	out->argv = exec_argv_build(cmd, n);
	out->argc = out->argv ? n : 0;
	if (!out->argv) {
		*code = "internal";
		snprintf(why, whylen, "out of memory");
		return 500;
	}
	return 0;
}

/* ---- the bridge ---- */

struct bridge {
	struct exec_mgr *m;
	char ns[64];
	char pod[SANDBOX_ID_MAX];
	char tenant[64];
	char token[EXEC_TOKEN_LEN + 1];
	char *shell;
	bool tty, with_stdin;
	pthread_mutex_t mu;
	struct http_ws *ws;
	struct kube_exec_session *ks;
	int refs;          /* the WebSocket's and the Pod session's */
	bool ws_closed, kube_closed, exited, status_sent;
	bool out_paused;   /* Pod output paused: the client's queue is full */
	bool rx_paused;    /* client reads paused: the stdin queue is full */
	bool close_stdin;  /* the client ended stdin; do it once pending is sent */
	struct buf pending;
	int channel;       /* of the client message in progress, -1 none */
	char resize[RESIZE_MAX];
	size_t resize_len;
	bool resize_over;
	uint64_t bytes_out, pauses; /* for the end-of-stream log line */
};

/* Each end drops its reference once, after its on_close; the last one
 * frees. */
static void bridge_unref(struct bridge *b)
{
	pthread_mutex_lock(&b->mu);
	bool last = --b->refs == 0;
	pthread_mutex_unlock(&b->mu);
	if (!last)
		return;
	exec_mgr_release(b->m, b->pod, b->tenant);
	http_ws_release(b->ws);
	kube_exec_release(b->ks);
	buf_release_wipe(&b->pending);
	free(b->shell);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

static void send_status(struct bridge *b, int exit_code, const struct kube_error *err)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return;
	cJSON_AddObjectToObject(o, "metadata");
	if (exit_code == 0) {
		cJSON_AddStringToObject(o, "status", "Success");
	} else if (exit_code > 0) {
		char msg[128], n[16];
		snprintf(n, sizeof(n), "%d", exit_code);
		snprintf(msg, sizeof(msg), "command terminated with non-zero exit code: exit code %d",
			 exit_code);
		cJSON_AddStringToObject(o, "status", "Failure");
		cJSON_AddStringToObject(o, "message", msg);
		cJSON_AddStringToObject(o, "reason", "NonZeroExitCode");
		cJSON *d = cJSON_AddObjectToObject(o, "details");
		cJSON *causes = cJSON_AddArrayToObject(d, "causes");
		cJSON *c = cJSON_CreateObject();
		cJSON_AddStringToObject(c, "reason", "ExitCode");
		cJSON_AddStringToObject(c, "message", n);
		cJSON_AddItemToArray(causes, c);
	} else {
		cJSON_AddStringToObject(o, "status", "Failure");
		cJSON_AddStringToObject(o, "message",
					err && err->message[0] ? err->message
							       : "the command could not be run");
		cJSON_AddStringToObject(o, "reason", "InternalError");
		cJSON_AddNumberToObject(o, "code", 500);
	}
	char *json = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!json)
		return;
	size_t n = strlen(json);
	char *msg = malloc(n + 1);
	if (msg) {
		msg[0] = (char)KUBE_EXEC_CH_STATUS;
		memcpy(msg + 1, json, n);
		(void)http_ws_send(b->ws, msg, n + 1, true);
		free(msg);
	}
	free(json);
}

/* ---- Pod side (exec client's thread) ---- */

static void forward(struct bridge *b, int channel, const char *data, size_t len)
{
	char *msg = malloc(len + 1);
	if (!msg) {
		http_ws_close(b->ws, 1011, "out of memory");
		return;
	}
	msg[0] = (char)channel;
	memcpy(msg + 1, data, len);
	/* the send and the pause under b->mu, as w_send_ready decides under it:
	 * otherwise the queue can drain and on_send_ready come between an
	 * -EAGAIN and the pause, and nothing resumes the output (seen once
	 * the exec client read fast enough to fill the queue all the time) */
	pthread_mutex_lock(&b->mu);
	int rc = http_ws_send(b->ws, msg, len + 1, true);
	if (rc == -EAGAIN && !b->out_paused) {
		b->out_paused = true;
		b->pauses++;
		(void)kube_exec_pause_output(b->ks, true);
	}
	pthread_mutex_unlock(&b->mu);
	free(msg);
	b->bytes_out += len;
	if (rc == -ENOBUFS || rc == -EMSGSIZE) {
		log_warn("exec stream to sandbox %s: the client's queue overflowed; closing", b->pod);
		http_ws_close(b->ws, 1011, "send queue overflow");
	}
}

static void k_stdout(void *ud, const char *data, size_t len)
{
	forward(ud, KUBE_EXEC_CH_STDOUT, data, len);
}

static void k_stderr(void *ud, const char *data, size_t len)
{
	forward(ud, KUBE_EXEC_CH_STDERR, data, len);
}

static void k_exit(void *ud, int exit_code, const struct kube_error *status)
{
	struct bridge *b = ud;
	pthread_mutex_lock(&b->mu);
	b->exited = exit_code >= 0;
	b->status_sent = true;
	pthread_mutex_unlock(&b->mu);
	/* the socket closes when the Pod stream does (k_close): output may
	 * still follow the status (the API server sends them on separate
	 * streams and does not order them) */
	send_status(b, exit_code, status);
}

/* Hand pending stdin to the session; under b->mu. Returns whether the
 * client may be read again. */
static bool flush_pending_locked(struct bridge *b)
{
	while (b->pending.len) {
		ssize_t n = kube_exec_write_stdin(b->ks, b->pending.data, b->pending.len);
		if (n == -EAGAIN)
			return false;
		if (n <= 0) {
			buf_reset(&b->pending); /* stdin is gone: drop it */
			break;
		}
		buf_consume(&b->pending, (size_t)n);
	}
	if (b->close_stdin) {
		b->close_stdin = false;
		(void)kube_exec_close_stdin(b->ks);
	}
	return true;
}

static void k_stdin_ready(void *ud)
{
	struct bridge *b = ud;
	pthread_mutex_lock(&b->mu);
	bool resume = flush_pending_locked(b) && b->rx_paused;
	if (resume)
		b->rx_paused = false;
	pthread_mutex_unlock(&b->mu);
	if (resume)
		http_ws_pause_rx(b->ws, false);
}

static void k_close(void *ud, const struct kube_error *err)
{
	struct bridge *b = ud;
	log_debug("exec stream to sandbox %s: the Pod stream ended (%s%s%s) after %llu bytes of output, %llu pauses",
		  b->pod, kube_strerror(err->code), err->message[0] ? ": " : "", err->message,
		  (unsigned long long)b->bytes_out, (unsigned long long)b->pauses);
	pthread_mutex_lock(&b->mu);
	bool send = !b->status_sent;
	b->status_sent = true;
	b->kube_closed = true;
	pthread_mutex_unlock(&b->mu);
	if (send)
		send_status(b, -1, err);
	http_ws_close(b->ws, 1000, "");
	bridge_unref(b);
}

static const struct kube_exec_ops kube_ops = {
	.on_stdout = k_stdout,
	.on_stderr = k_stderr,
	.on_exit = k_exit,
	.on_stdin_ready = k_stdin_ready,
	.on_close = k_close,
};

/* ---- client side (HTTP service thread) ---- */

static void stdin_data(struct bridge *b, const char *data, size_t len)
{
	if (!b->with_stdin || !len)
		return;
	pthread_mutex_lock(&b->mu);
	bool pause = false;
	if (b->pending.len == 0) {
		while (len) {
			ssize_t n = kube_exec_write_stdin(b->ks, data, len);
			if (n == -EAGAIN)
				break;
			if (n <= 0) {
				len = 0; /* stdin closed: nothing more to take */
				break;
			}
			data += n;
			len -= (size_t)n;
		}
	}
	if (len) {
		if (buf_append(&b->pending, data, len) != 0) {
			pthread_mutex_unlock(&b->mu);
			http_ws_close(b->ws, 1008, "stdin overflow");
			return;
		}
		pause = !b->rx_paused;
		b->rx_paused = true;
	}
	pthread_mutex_unlock(&b->mu);
	if (pause)
		http_ws_pause_rx(b->ws, true);
}

static void apply_resize(struct bridge *b)
{
	if (b->resize_over || !b->tty)
		return;
	cJSON *o = cJSON_ParseWithLength(b->resize, b->resize_len);
	const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "Width");
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "Height");
	if (cJSON_IsNumber(w) && cJSON_IsNumber(h) && w->valuedouble >= 0 &&
	    w->valuedouble <= 65535 && h->valuedouble >= 0 && h->valuedouble <= 65535)
		(void)kube_exec_resize(b->ks, (unsigned)w->valuedouble, (unsigned)h->valuedouble);
	cJSON_Delete(o);
}

static void w_message(void *ud, const void *data, size_t len, bool first, bool final,
		      bool binary)
{
	struct bridge *b = ud;
	const char *p = data;
	(void)binary;
	if (first) {
		b->channel = len ? (unsigned char)p[0] : -1;
		if (len) {
			p++;
			len--;
		}
		b->resize_len = 0;
		b->resize_over = false;
	}
	switch (b->channel) {
	case KUBE_EXEC_CH_STDIN:
		stdin_data(b, p, len);
		break;
	case KUBE_EXEC_CH_RESIZE:
		if (b->resize_len + len > sizeof(b->resize)) {
			b->resize_over = true;
		} else {
			memcpy(b->resize + b->resize_len, p, len);
			b->resize_len += len;
		}
		if (final)
			apply_resize(b);
		break;
	case KUBE_EXEC_CH_CLOSE:
		if (len && (unsigned char)p[0] == KUBE_EXEC_CH_STDIN && b->with_stdin) {
			pthread_mutex_lock(&b->mu);
			b->close_stdin = true;
			if (b->pending.len == 0)
				(void)flush_pending_locked(b);
			pthread_mutex_unlock(&b->mu);
		}
		break;
	default:
		break; /* other channels carry nothing for us */
	}
	if (final)
		b->channel = -1;
}

static void w_send_ready(void *ud)
{
	struct bridge *b = ud;
	pthread_mutex_lock(&b->mu);
	if (b->out_paused) {
		b->out_paused = false;
		if (b->ks)
			(void)kube_exec_pause_output(b->ks, false);
	}
	pthread_mutex_unlock(&b->mu);
}

static void w_close(void *ud, int code)
{
	struct bridge *b = ud;
	(void)code;
	pthread_mutex_lock(&b->mu);
	b->ws_closed = true;
	bool kube_open = !b->kube_closed;
	bool kill = !b->exited && !b->tty && b->shell && b->token[0];
	if (kube_open)
		kube_exec_cancel(b->ks);
	pthread_mutex_unlock(&b->mu);
	if (kill)
		exec_mgr_kill(b->m, b->ns, b->pod, b->shell, b->token);
	bridge_unref(b);
}

static const struct http_ws_ops ws_ops = {
	.on_message = w_message,
	.on_send_ready = w_send_ready,
	.on_close = w_close,
};

void exec_stream_start(struct exec_mgr *m, struct http_request *req, const char *ns,
		       const char *pod, const char *tenant, const struct sbx_template *t,
		       struct exec_stream_params *p)
{
	struct kube_exec_client *kx = exec_mgr_client(m);
	const char *cp = http_request_ws_protocol(req);
	bool v4_client = cp && strcmp(cp, KUBE_EXEC_PROTOCOL_V4) == 0;
	struct bridge *b = calloc(1, sizeof(*b));
	char **argv = NULL;
	if (b && t->exec.shell && !(b->shell = strdup(t->exec.shell))) {
		free(b);
		b = NULL;
	}
	if (b && b->shell && exec_new_token(b->token) != 0)
		b->token[0] = '\0';
	if (b && b->shell) {
		if (b->token[0])
			argv = exec_wrap_argv(b->shell, b->token, t->workspace_path, NULL, 0,
					      (const char *const *)p->argv, p->argc);
	} else if (b) {
		/* no shell: the client's argv as it is (no kill on disconnect) */
		argv = exec_argv_build((const char *const *)p->argv, p->argc);
	}
	if (!b || !argv || !kx) {
		if (b) {
			free(b->shell);
			free(b);
		}
		exec_argv_free(argv);
		exec_stream_params_release(p);
		exec_mgr_release(m, pod, tenant);
		http_reply_error(req, kx ? 500 : 503, kx ? "internal" : "exec_unavailable", NULL, 0,
				 kx ? "out of memory" : "exec is not available on this replica");
		return;
	}
	b->m = m;
	snprintf(b->ns, sizeof(b->ns), "%s", ns);
	snprintf(b->pod, sizeof(b->pod), "%s", pod);
	snprintf(b->tenant, sizeof(b->tenant), "%s", tenant);
	b->tty = p->tty;
	b->with_stdin = p->with_stdin;
	b->channel = -1;
	b->refs = 2;
	pthread_mutex_init(&b->mu, NULL);
	buf_init(&b->pending, PENDING_STDIN_MAX);

	struct kube_exec_req kr = {
		.namespace = ns,
		.pod = pod,
		.container = SBX_CONTAINER,
		.argv = (const char *const *)argv,
		.with_stdin = p->with_stdin,
		.with_stdout = p->with_stdout,
		.with_stderr = p->with_stderr,
		.tty = p->tty,
		/* v5 only when stdin may need its half-close (a v5 client with
		 * stdin): API servers that translate v5 to SPDY for the node can
		 * lose the end of the output (docs/kube-client.md), v4 is passed
		 * through */
		.v4_only = !p->with_stdin || v4_client,
	};
	b->ws = http_accept_websocket(req, &ws_ops, b);
	if (!b->ws) {
		/* out of memory: the server answered 500 */
		exec_argv_free(argv);
		exec_stream_params_release(p);
		exec_mgr_release(m, pod, tenant);
		pthread_mutex_destroy(&b->mu);
		free(b->shell);
		free(b);
		return;
	}
	struct kube_error ke;
	/* b->mu across the start: the session's callbacks (which take it) see
	 * b->ks set */
	pthread_mutex_lock(&b->mu);
	enum kube_err rc = kube_exec_start(kx, &kr, &kube_ops, b, &b->ks, &ke);
	if (rc != KUBE_OK) {
		b->ks = NULL;
		b->kube_closed = true;
		b->status_sent = true;
		b->refs--; /* no session: its reference goes now (the ws holds one) */
	}
	pthread_mutex_unlock(&b->mu);
	exec_argv_free(argv);
	exec_stream_params_release(p);
	if (rc != KUBE_OK) {
		log_warn("exec stream to sandbox %s: cannot start: %s", pod, ke.message);
		send_status(b, -1, &ke);
		http_ws_close(b->ws, 1000, "");
	}
}
