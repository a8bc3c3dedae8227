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
 * file_too_large (exec.max_file_bytes, and the server's body limit for
 * PUT).
 *
 * Bodies are held in the controller's memory while they pass (up to
 * limits.max_body_bytes for PUT and exec.max_file_bytes for GET): this
 * version does not stream (docs/api.md says so).
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

/*
 * Run the transfer, holding the slot the caller took with exec_mgr_admit
 * (released here). method is "GET", "PUT" or "DELETE" (HEAD is GET).
 * Answers req, later, from the exec client's thread.
 */
void files_api_start(struct exec_mgr *m, struct http_request *req, const char *method,
		     const char *ns, const char *pod, const char *tenant,
		     const struct sbx_template *t, const char *path);

#endif
