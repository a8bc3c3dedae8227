/*
 * exec_stream: GET /v1/sandboxes/{id}/exec upgraded to a WebSocket that
 * speaks the Kubernetes exec channel protocol (v5.channel.k8s.io, or
 * v4.channel.k8s.io for older clients), bridged to a pods/exec stream of
 * the sandbox's Pod (kube_exec.h).
 *
 * Client -> us: binary messages whose first byte is the channel: 0 stdin,
 * 4 resize ({"Width":W,"Height":H}), and in v5 255 CLOSE ([255, 0] ends
 * stdin). Us -> client: 1 stdout, 2 stderr, 3 the exit status (a
 * metav1.Status, exactly as the API server sends it), then a close frame.
 *
 * Flow control, both ways: when the client does not read, our send queue
 * fills, and the Pod's output is paused (kube_exec_pause_output) until it
 * drains, so a slow reader slows the command instead of growing memory;
 * when the command does not read its stdin, the stdin queue fills, and we
 * stop reading from the client (http_ws_pause_rx) until it drains.
 *
 * Ending: the command's exit closes the WebSocket (1000) after the status;
 * a failure to start it sends a Failure status and closes; the client
 * closing or vanishing closes the Pod stream and, for a stream without a
 * tty, kills the command and every process it started (exec_policy.h);
 * with a tty the terminal's hangup is left to do what it does on a real
 * terminal. Every path frees everything and releases the slot once both
 * sides have closed.
 */
#ifndef SBX_EXEC_STREAM_H
#define SBX_EXEC_STREAM_H

#include <stdbool.h>

#include "config.h"
#include "exec_api.h"
#include "http_server.h"

/* The parameters of an exec stream, from the query string. */
struct exec_stream_params {
	char **argv;   /* NULL-terminated */
	size_t argc;
	bool with_stdin, with_stdout, with_stderr, tty;
};

/*
 * Parse and check the query of an exec upgrade: command= (repeated, at
 * least one), stdin, stdout, stderr, tty ("true"/"false"/"1"/"0"),
 * container (only the sandbox's container). Returns 0, or an HTTP status
 * with a stable code and a reason (400 bad parameters, 403/422 policy).
 */
int exec_stream_parse(const struct http_request *req, const struct sbx_template *t,
		      struct exec_stream_params *out, const char **code, char *why,
		      size_t whylen);
void exec_stream_params_release(struct exec_stream_params *p);

/*
 * Accept the upgrade and bridge it, holding the slot the caller took with
 * exec_mgr_admit (released when the stream ends, or here on failure).
 * Takes p. Must be called from the handler, synchronously (the request is
 * an upgrade); answers the request itself on failure.
 */
void exec_stream_start(struct exec_mgr *m, struct http_request *req, const char *ns,
		       const char *pod, const char *tenant, const struct sbx_template *t,
		       struct exec_stream_params *p);

#endif
