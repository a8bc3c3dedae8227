/*
 * kube_exec: run commands in Pods through the Kubernetes pods/exec
 * subresource over WebSocket (the remotecommand channel protocol).
 *
 * One client owns one libwebsockets context and its own service thread. Every
 * lws call happens on that thread: other threads hand it work through a locked
 * queue and lws_cancel_service(), and data goes out only from WRITEABLE
 * callbacks.
 *
 * Protocol: the client offers "v5.channel.k8s.io" and falls back to
 * "v4.channel.k8s.io". Every binary message starts with a channel byte:
 * 0 stdin, 1 stdout, 2 stderr, 3 status (a metav1.Status in JSON), 4 resize
 * ({"Width":W,"Height":H}), and in v5 only, 255 CLOSE ([255, channel]
 * half-closes that channel). v4 has no way to signal the end of stdin.
 *
 * Credentials and TLS come from a struct kube_config: the API server's CA
 * (from memory; the system's CAs when none is given), an optional client
 * certificate, and a bearer token sent as "Authorization: Bearer" in the
 * WebSocket handshake (a static token, or a token file re-read at most once a
 * minute and at once after a 401, so that rotated projected tokens work).
 *
 * Flow control: stdin is a bounded queue (kube_exec_write_stdin returns
 * -EAGAIN above its high-water mark; on_stdin_ready says when to try again);
 * output can be paused (kube_exec_pause_output), which stops reading the
 * socket so that TCP back-pressure slows the command instead of memory
 * growing. Every buffer filled from the network has a named maximum.
 *
 * Output lost upstream: pausing loses nothing in this client, but with v5 the
 * API server does not pass the WebSocket to the node: it translates to SPDY,
 * and when the reader is slow (paused) as the command exits, the tail of
 * stdout can be lost between the node and the API server, which still sends
 * a Success status and a normal close. What arrives is then an exact prefix.
 * Measured with an independent WebSocket client and kubectl over SPDY too,
 * not only with this client; v4 (proxied to the node unchanged) kept every
 * byte. Evidence and advice: docs/kube-client.md, "Exec output and slow
 * readers"; upstream: kubernetes/kubernetes#124571.
 *
 * Closing or cancelling a stream does NOT kill the command in the container:
 * Kubernetes gives no such guarantee. Stopping a command on timeout needs its
 * own mechanism (see issue #4); kube_exec_run only reports timed_out.
 */
#ifndef SBX_KUBE_EXEC_H
#define SBX_KUBE_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "kube_config.h"
#include "kube_status.h"

#define KUBE_EXEC_PROTOCOL_V5 "v5.channel.k8s.io"
#define KUBE_EXEC_PROTOCOL_V4 "v4.channel.k8s.io"

enum kube_exec_channel {
	KUBE_EXEC_CH_STDIN = 0,
	KUBE_EXEC_CH_STDOUT = 1,
	KUBE_EXEC_CH_STDERR = 2,
	KUBE_EXEC_CH_STATUS = 3,
	KUBE_EXEC_CH_RESIZE = 4,
	KUBE_EXEC_CH_CLOSE = 255, /* v5: [255, channel] half-closes channel */
};

/* Limits. */
#define KUBE_EXEC_MAX_PATH (32u << 10)      /* request path and query, escaped */
#define KUBE_EXEC_MAX_MESSAGE (16u << 20)   /* one WebSocket message from the server */
#define KUBE_EXEC_MAX_STATUS (64u << 10)    /* the channel 3 JSON */
#define KUBE_EXEC_STDIN_HIGH_WATER (1u << 20) /* default stdin queue bound */
#define KUBE_EXEC_WRITE_CHUNK (32u << 10)   /* stdin bytes per WebSocket message */
#define KUBE_EXEC_RX_BUFFER (64u << 10)     /* bytes read from a socket at once */
#define KUBE_EXEC_MAX_SESSIONS 4096         /* open or opening streams per client */

struct kube_exec_client;
struct kube_exec_session;

/*
 * Create a client for cfg (copied: the client does not keep cfg) and start its
 * service thread. Returns NULL and a one-line reason in err (never a secret)
 * when the server URL, the CA or the client certificate/key are unusable, or
 * when libwebsockets cannot start.
 */
struct kube_exec_client *kube_exec_client_new(const struct kube_config *cfg, char *err,
					      size_t errlen);

/*
 * Stop the service thread and free the client. Sessions still open are
 * closed: their on_close runs (with KUBE_ERR_CANCELLED) before this returns,
 * after which they only accept kube_exec_release(). Must not be called from a
 * callback. NULL is a no-op.
 */
void kube_exec_client_free(struct kube_exec_client *c);

/* Sessions started and not yet closed (for metrics and tests). */
unsigned kube_exec_client_active(struct kube_exec_client *c);

/* What to run. Strings are copied by kube_exec_start. */
struct kube_exec_req {
	const char *namespace;
	const char *pod;
	const char *container;      /* NULL: the Pod's only container */
	const char *const *argv;    /* NULL-terminated, at least one element; each
				     * becomes one URL-encoded command= value */
	bool with_stdin;
	bool with_stdout;
	bool with_stderr;           /* must be false with tty (the server merges) */
	bool tty;
	bool v4_only;               /* offer only v4.channel.k8s.io (tests, old servers) */
	size_t stdin_high_water;    /* stdin queue bound; 0: KUBE_EXEC_STDIN_HIGH_WATER */
};

/*
 * Callbacks, all optional, all called on the service thread: they must not
 * block, and must not call kube_exec_client_free. They may call any other
 * kube_exec_* function. Data pointers are valid only during the call.
 */
struct kube_exec_ops {
	/* The WebSocket is up; protocol is KUBE_EXEC_PROTOCOL_V5 or _V4. */
	void (*on_open)(void *ud, const char *protocol);
	void (*on_stdout)(void *ud, const char *data, size_t len);
	void (*on_stderr)(void *ud, const char *data, size_t len);
	/* The status from channel 3: exit_code is 0 for Success, N for a
	 * NonZeroExitCode failure (status->code is KUBE_OK in both cases, and
	 * status->message says "command terminated with non-zero exit code"
	 * for N), or -1 for any other failure, described by status. */
	void (*on_exit)(void *ud, int exit_code, const struct kube_error *status);
	/* Called once after kube_exec_write_stdin returned -EAGAIN, when the
	 * queue has fallen to a quarter of its bound. */
	void (*on_stdin_ready)(void *ud);
	/* Always called exactly once per started session, last. err->code is
	 * KUBE_OK when the stream ended after an exit status; otherwise why it
	 * did not: KUBE_ERR_UNAUTHORIZED/FORBIDDEN/NOT_FOUND/BAD_REQUEST/SERVER
	 * with err->http_status for a refused handshake, KUBE_ERR_TRANSPORT for
	 * connect/TLS failures and streams that ended without a status,
	 * KUBE_ERR_PROTOCOL or KUBE_ERR_TOO_LARGE for bad frames from the server,
	 * KUBE_ERR_CANCELLED after kube_exec_cancel or kube_exec_client_free. */
	void (*on_close)(void *ud, const struct kube_error *err);
};

/*
 * Start a session. On success *out is the session, owned by the caller, who
 * must eventually call kube_exec_release(); on_close will follow. Fails with
 * KUBE_ERR_ARG for an invalid request (empty names, no argv, tty with stderr,
 * a path over KUBE_EXEC_MAX_PATH), KUBE_ERR_UNAUTHORIZED when the token file
 * cannot be read, KUBE_ERR_CANCELLED when the client is being freed or has
 * KUBE_EXEC_MAX_SESSIONS open, KUBE_ERR_NOMEM; then no callback is called.
 */
enum kube_err kube_exec_start(struct kube_exec_client *c, const struct kube_exec_req *req,
			      const struct kube_exec_ops *ops, void *ud,
			      struct kube_exec_session **out, struct kube_error *err)
	__attribute__((warn_unused_result));

/*
 * Queue stdin bytes (copied). Thread-safe; may be called before on_open.
 * Returns the number of bytes accepted (1..len; fewer than len when the
 * queue is nearly full), 0 when len is 0, -EAGAIN when the queue is at its
 * bound (wait for on_stdin_ready), -EPIPE after kube_exec_close_stdin or once
 * the session is closing, -EINVAL when the request had no stdin.
 */
ssize_t kube_exec_write_stdin(struct kube_exec_session *s, const void *data, size_t len)
	__attribute__((warn_unused_result));

/*
 * End stdin once the queued bytes are sent: in v5 a [255, 0] message. v4 has
 * no half-close: returns -EOPNOTSUPP when v4 was negotiated (the command keeps
 * its stdin open until the stream closes); before negotiation the request is
 * kept and, if v4 is chosen, dropped (logged at debug). 0 on success, -EPIPE
 * when the session is closing, -EINVAL without stdin.
 */
int kube_exec_close_stdin(struct kube_exec_session *s);

/* Send a terminal size on channel 4 (tty sessions only). 0, -EINVAL, -EPIPE. */
int kube_exec_resize(struct kube_exec_session *s, unsigned cols, unsigned rows);

/*
 * Stop (pause=true) or resume reading output. While paused, data already read
 * from the socket (at most a receive buffer) may still be delivered; then the
 * server's writes block and the command slows down. After a resume every byte
 * the server sent follows, in order, then the status. With v5, a command that
 * ends while output is paused for long may have its output's tail dropped by
 * the API server (see the note at the top). 0 or -EPIPE (the stream has
 * already ended: on_close has run or is running).
 */
int kube_exec_pause_output(struct kube_exec_session *s, bool pause);

/* Close the stream now; on_close follows with KUBE_ERR_CANCELLED unless it
 * already ended. Does not stop the command in the container. Idempotent. */
void kube_exec_cancel(struct kube_exec_session *s);

/* Drop the caller's reference. Call it after on_close (from on_close is
 * fine); called earlier, it cancels the session, and the callbacks still run
 * until on_close. NULL is a no-op. */
void kube_exec_release(struct kube_exec_session *s);

/* ---- one-shot, blocking ---- */

struct kube_exec_result {
	int exit_code;            /* -1 when there is none */
	char *stdout_data;        /* malloc'd, NUL-terminated; caller frees */
	size_t stdout_len;
	bool stdout_truncated;    /* output beyond max_output was dropped */
	char *stderr_data;
	size_t stderr_len;
	bool stderr_truncated;
	bool timed_out;
	int64_t duration_ms;
	char protocol[24];        /* negotiated, or "" */
	struct kube_error error;  /* why there is no exit code; KUBE_OK otherwise */
};

/*
 * Run req to completion from a worker thread (never from a callback). stdin
 * (may be NULL: no stdin) is written and then closed; with_stdin in req is
 * set from it. stdout and stderr are each kept up to max_output bytes, the
 * rest dropped and flagged. timeout_ms > 0 bounds the whole run: on timeout
 * the stream is cancelled and timed_out set; the command itself may go on
 * running in the container (see the note at the top).
 *
 * Returns KUBE_OK when an exit code was received (out->exit_code >= 0, which
 * may be non-zero), KUBE_ERR_TIMEOUT on timeout, otherwise out->error.code.
 * out is always filled; release it with kube_exec_result_release().
 */
enum kube_err kube_exec_run(struct kube_exec_client *c, const struct kube_exec_req *req,
			    const void *stdin_data, size_t stdin_len, size_t max_output,
			    int timeout_ms, struct kube_exec_result *out)
	__attribute__((warn_unused_result));

/* Free the buffers of a result (the struct itself stays). */
void kube_exec_result_release(struct kube_exec_result *r);

/* ---- pure parts, exported for tests ---- */

/*
 * "/api/v1/namespaces/NS/pods/POD/exec?command=..&container=..&stdin=..
 * &stdout=..&stderr=..&tty=.." under base_path (the server URL's path, "" for
 * none), every segment and value percent-encoded. On success *out is
 * malloc'd. KUBE_ERR_ARG with a reason in err for an invalid request,
 * KUBE_ERR_TOO_LARGE beyond KUBE_EXEC_MAX_PATH, KUBE_ERR_NOMEM.
 */
enum kube_err kube_exec_build_path(const char *base_path, const struct kube_exec_req *req,
				   char **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Split "https://host[:port][/base]" into its parts. *host (brackets of an
 * IPv6 literal removed) and *base (no trailing slash, "" for none) are
 * malloc'd. Returns 0, or -EINVAL for anything else (other schemes,
 * userinfo, queries, bad ports), or -ENOMEM.
 */
int kube_exec_parse_server(const char *url, char **host, int *port, bool *tls, char **base)
	__attribute__((warn_unused_result));

/*
 * Decode a channel 3 status. Returns the exit code: 0 for Success, N for a
 * NonZeroExitCode failure with an ExitCode cause (err->code KUBE_OK), or -1
 * with err describing any other failure (KUBE_ERR_PROTOCOL when the JSON is
 * not a Status or an exit code is malformed). err->message is always set.
 */
int kube_exec_decode_status(const char *json, size_t len, struct kube_error *err);

/* Write the channel 4 message for a terminal size into buf; returns its
 * length, or 0 when cap is too small. */
size_t kube_exec_frame_resize(unsigned char *buf, size_t cap, unsigned cols, unsigned rows);

/*
 * The receive side: WebSocket messages in fragments (as lws delivers them)
 * to channel data and statuses. A message's first byte is its channel; data
 * on channels 1 and 2 is streamed to on_data as it arrives, a non-empty
 * channel 3 message is collected whole (up to KUBE_EXEC_MAX_STATUS) and
 * given to on_status; empty messages, channel-only messages and unknown
 * channels are ignored.
 */
struct kube_exec_demux {
	bool in_message;
	int channel;          /* of the message in progress */
	size_t message_len;   /* bytes of it so far, channel byte included */
	size_t max_message;   /* KUBE_EXEC_MAX_MESSAGE unless set smaller */
	struct buf status;
};

struct kube_exec_demux_sink {
	void (*on_data)(void *ud, int channel, const char *data, size_t len);
	void (*on_status)(void *ud, const char *json, size_t len);
};

void kube_exec_demux_init(struct kube_exec_demux *d);
void kube_exec_demux_release(struct kube_exec_demux *d);

/* Feed one fragment; final says it ends the message. Returns KUBE_OK,
 * KUBE_ERR_TOO_LARGE for a message or status over its limit, or
 * KUBE_ERR_NOMEM; after an error the stream must be dropped. */
enum kube_err kube_exec_demux_feed(struct kube_exec_demux *d, const void *data, size_t len,
				   bool final, const struct kube_exec_demux_sink *sink, void *ud)
	__attribute__((warn_unused_result));

/* ---- WebSocket (RFC 6455) client framing and handshake, exported for tests ----
 *
 * The client speaks WebSocket itself over a raw libwebsockets connection:
 * lws 4.1's client-side frame parser handles payload one byte at a time,
 * these handle it in bulk. */

#define KUBE_WS_MAX_HEADER 14          /* 2 + 8 (64-bit length) + 4 (mask) */
#define KUBE_WS_MAX_CONTROL 125        /* payload of a ping, pong or close */
#define KUBE_WS_MAX_RESPONSE_HEAD (16u << 10) /* the server's handshake answer */

enum kube_ws_opcode {
	KUBE_WS_OP_CONT = 0x0,
	KUBE_WS_OP_TEXT = 0x1,
	KUBE_WS_OP_BINARY = 0x2,
	KUBE_WS_OP_CLOSE = 0x8,
	KUBE_WS_OP_PING = 0x9,
	KUBE_WS_OP_PONG = 0xA,
};

struct kube_ws_header {
	bool fin;
	unsigned opcode;
	uint64_t len;         /* payload length */
};

/*
 * Parse a server frame header from p[0..n). in_message says a fragmented
 * data message is in progress (a continuation is expected, a new data frame
 * is not). Returns the header length (2..10) when complete, 0 when more bytes
 * are needed, or -1 with a reason in *why for a frame a client must refuse:
 * masked, reserved bits set, an unknown opcode, a control frame longer than
 * 125 bytes or fragmented, a 64-bit length with its top bit set, or a
 * continuation/data frame out of sequence.
 */
int kube_ws_parse_header(const unsigned char *p, size_t n, bool in_message,
			 struct kube_ws_header *h, const char **why);

/* Write a client frame header (masked with mask, or unmasked when mask is
 * NULL) into out (KUBE_WS_MAX_HEADER bytes); returns its length. */
size_t kube_ws_frame_header(unsigned char *out, bool fin, unsigned opcode, uint64_t len,
			    const unsigned char *mask);

/* XOR p with the 4-byte mask (applying it twice restores p). */
void kube_ws_mask(unsigned char *p, size_t len, const unsigned char mask[4]);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), 28 characters and
 * a NUL in out. 0, or -EIO when the digest fails. */
int kube_ws_accept(const char *key, char out[29]);

/* The parts of the server's handshake answer that decide the upgrade. */
struct kube_ws_response {
	int status;           /* e.g. 101 */
	bool upgrade;         /* "Upgrade: websocket" */
	bool connection;      /* "Connection" lists "upgrade" */
	char accept[40];      /* Sec-WebSocket-Accept, "" when absent */
	char protocol[40];    /* Sec-WebSocket-Protocol, "" when absent */
};

/* Parse a response head (status line and headers, up to and including the
 * empty line). 0, or -EINVAL when it is not an HTTP/1.x response head. */
int kube_ws_parse_response(const char *head, size_t len, struct kube_ws_response *r);

/*
 * The receive side of the framing: bytes as they come off the connection, in
 * pieces of any size, to data and control messages. Headers split across
 * pieces are kept (at most KUBE_WS_MAX_HEADER bytes), payload is passed on
 * in place, control payloads are collected (at most KUBE_WS_MAX_CONTROL).
 */
struct kube_ws_rx {
	unsigned char hdr[KUBE_WS_MAX_HEADER];
	size_t hdr_have;
	bool in_frame;
	struct kube_ws_header f; /* of the frame in progress */
	uint64_t left;           /* its payload bytes still to come */
	bool in_message;         /* a fragmented data message is in progress */
	unsigned char ctl[KUBE_WS_MAX_CONTROL];
	size_t ctl_have;
};

struct kube_ws_rx_sink {
	/* A piece of a text or binary message; final: it ends the message. */
	enum kube_err (*on_data)(void *ud, const unsigned char *p, size_t len, bool final);
	/* A whole ping, pong or close. */
	enum kube_err (*on_control)(void *ud, unsigned opcode, const unsigned char *p,
				    size_t len);
};

/* Feed bytes. Returns KUBE_OK, KUBE_ERR_PROTOCOL with a reason in *why for a
 * refused frame, or the first error a sink returned (the feed stops there);
 * after an error the stream must be dropped. */
enum kube_err kube_ws_rx_feed(struct kube_ws_rx *rx, const void *data, size_t len,
			      const struct kube_ws_rx_sink *sink, void *ud, const char **why)
	__attribute__((warn_unused_result));

#endif
