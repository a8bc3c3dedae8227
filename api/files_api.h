/*
 * files_api: PUT/GET/DELETE /v1/sandboxes/{id}/files?path=P over exec.
 *
 *   PUT    raw body -> 201 {"path", "size", "created": true} / 200 (replaced)
 *   GET    a file: its bytes (application/octet-stream); a directory: the
 *          JSON listing of controller/sandbox_files.h
 *   DELETE -> 204
 *
 * The path is checked here (sandbox_files_resolve: relative to the
 * template's workspace or absolute inside it; no "..", no control
 * characters) and again inside the container by the scripts of
 * sandbox_files.h, which resolve every directory physically and refuse
 * symlinks that leave the workspace. Errors: 400 invalid_path, 403
 * path_outside_workspace / symlink_not_followed, 404 not_found, 409
 * is_a_directory / not_a_directory / directory_not_empty, 413
 * file_too_large (exec.max_file_bytes: a Content-Length over it before
 * any byte is read, a chunked body when it gets there).
 *
 * Streaming: GET of a file and PUT (when the HTTP server streams its body:
 * files_api_stream_body) move the bytes through with back-pressure, never
 * holding a whole file: a few hundred KiB per transfer at most (see
 * files_api.c). GET answers "200" with the file's Content-Length as soon as
 * the script has checked the file, so a failure after that (the file
 * shrank, the read failed, the sandbox went away) can only abort the
 * response: the connection closes short of Content-Length. A directory
 * listing is collected whole (bounded by SBX_FILES_MAX_LISTING_BYTES).
 * Timeouts: a transfer that moves no byte for 120 s is cancelled (504
 * before the reply, an aborted response after); the HTTP server closes a
 * response or upload with no progress for its request_timeout_s.
 */
#ifndef SBX_FILES_API_H
#define SBX_FILES_API_H

#include "config.h"
#include "exec_api.h"
#include "http_server.h"

/* Parse and check the query (only "path" and, for PUT, "parents"); on
 * failure the request is answered and false returned. out gets the
 * resolved absolute path. */
bool files_api_path(struct http_request *req, const struct sbx_template *t, char *out,
		    size_t outlen);

/* For http_server_opts.stream_body: PUT /v1/sandboxes/{id}/files has its
 * body streamed (read by files_api_start, not buffered by the server, and
 * limited by exec.max_file_bytes rather than limits.max_body_bytes). */
bool files_api_stream_body(void *ud, const struct http_request *req);

/*
 * Run the transfer, holding the slot the caller took with exec_mgr_admit
 * (released here). method is "GET", "PUT" or "DELETE" (HEAD is GET).
 * Answers req, later, from the exec client's thread.
 */
void files_api_start(struct exec_mgr *m, struct http_request *req, const char *method,
		     const char *ns, const char *pod, const char *tenant,
		     const struct sbx_template *t, const char *path);

#endif
