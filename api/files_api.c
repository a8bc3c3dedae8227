/*
 * files_api: the files endpoints over exec (see files_api.h).
 */
#include "files_api.h"

#include "log.h"
#include "sandbox_files.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILES_TIMEOUT_S 600  /* one transfer, start to end */

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

struct transfer {
	struct http_request *req;
	char method[8];
	char path[SBX_FILES_PATH_MAX];
	uint64_t size;
};

static void reply_failure(struct transfer *x, const struct exec_raw_result *res)
{
	if (res->have_exit) {
		const char *code = "internal_error";
		int st = sandbox_files_exit_http(res->exit_code, &code);
		if (st >= 500)
			log_warn("files: %s of a file failed with exit %d: %.200s", x->method,
				 res->exit_code, res->err);
		http_reply_error(x->req, st, code, NULL, 0, "%s %s: %s", x->method, x->path, code);
		return;
	}
	if (res->timed_out) {
		http_reply_error(x->req, 504, "timeout", NULL, 0, "the transfer took over %d s",
				 FILES_TIMEOUT_S);
		return;
	}
	if (res->error->code == KUBE_ERR_NOT_FOUND) {
		http_reply_error(x->req, 409, "sandbox_gone", NULL, 0, "the sandbox's Pod is gone");
		return;
	}
	http_reply_error(x->req, 502, "exec_failed", NULL, 0,
			 "the transfer could not be run in the sandbox (%s): %.300s",
			 kube_strerror(res->error->code), res->error->message);
}

static void on_done(void *ud, const struct exec_raw_result *res)
{
	struct transfer *x = ud;
	if (!res->have_exit || res->exit_code != 0) {
		reply_failure(x, res);
		free(x);
		return;
	}
	if (strcmp(x->method, "DELETE") == 0) {
		http_reply_empty(x->req, 204, NULL, 0);
	} else if (strcmp(x->method, "PUT") == 0) {
		bool created = false;
		if (sandbox_files_parse_write_result(res->out, res->out_len, &created) != 0) {
			http_reply_error(x->req, 502, "exec_failed", NULL, 0,
					 "unexpected answer from the sandbox");
		} else if (created) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "path", x->path);
			cJSON_AddNumberToObject(o, "size", (double)x->size);
			http_reply_json(x->req, 201, o, NULL, 0);
		} else {
			http_reply_empty(x->req, 204, NULL, 0);
		}
	} else {
		struct sandbox_files_head h;
		ssize_t hl = sandbox_files_parse_head(res->out, res->out_len, &h);
		if (hl <= 0 || res->out_truncated) {
			http_reply_error(x->req, res->out_truncated ? 413 : 502,
					 res->out_truncated ? "file_too_large" : "exec_failed", NULL, 0,
					 "%s", res->out_truncated ? "the file is over the limit"
								  : "unexpected answer from the sandbox");
		} else if (h.kind == SBX_FILES_KIND_DIR) {
			cJSON *o = NULL;
			if (sandbox_files_parse_listing(x->path, res->out + hl, res->out_len - (size_t)hl,
							&o) != 0)
				http_reply_error(x->req, 502, "exec_failed", NULL, 0,
						 "unexpected listing from the sandbox");
			else
				http_reply_json(x->req, 200, o, NULL, 0);
		} else if ((uint64_t)(res->out_len - (size_t)hl) != h.size) {
			/* the file changed size while it was read */
			http_reply_error(x->req, 409, "file_changed", NULL, 0,
					 "the file changed while it was read; retry");
		} else {
			http_reply_bytes(x->req, 200, "application/octet-stream", res->out + hl,
					 (size_t)h.size, NULL, 0);
		}
	}
	free(x);
}

void files_api_start(struct exec_mgr *m, struct http_request *req, const char *method,
		     const char *ns, const char *pod, const char *tenant,
		     const struct sbx_template *t, const char *path)
{
	struct transfer *x = calloc(1, sizeof(*x));
	char **argv = NULL;
	char *in = NULL;
	size_t in_len = 0, max_out = 4096;
	if (!x)
		goto oom;
	x->req = req;
	snprintf(x->method, sizeof(x->method), "%s", strcmp(method, "HEAD") == 0 ? "GET" : method);
	snprintf(x->path, sizeof(x->path), "%s", path);
	if (strcmp(x->method, "GET") == 0) {
		argv = sandbox_files_read_argv(t->exec.shell, t->workspace_path, path,
					       t->exec.max_file_bytes, SBX_FILES_MAX_ENTRIES);
		max_out = (t->exec.max_file_bytes > SBX_FILES_MAX_LISTING_BYTES
				   ? t->exec.max_file_bytes
				   : SBX_FILES_MAX_LISTING_BYTES) +
			  64;
	} else if (strcmp(x->method, "PUT") == 0) {
		size_t blen = 0;
		const char *body = http_request_body(req, &blen);
		if (blen > t->exec.max_file_bytes) {
			free(x);
			exec_mgr_release(m, pod, tenant);
			http_reply_error(req, 413, "file_too_large", NULL, 0,
					 "the file is over this template's limit (%zu bytes)",
					 t->exec.max_file_bytes);
			return;
		}
		const char *parents = http_request_query(req, "parents");
		bool mk = parents && strcmp(parents, "true") == 0;
		x->size = blen;
		argv = sandbox_files_write_argv(t->exec.shell, t->workspace_path, path,
						t->exec.max_file_bytes, (int64_t)blen, mk);
		in = malloc(blen + 1);
		if (!in)
			goto oom;
		memcpy(in, body, blen);
		in_len = blen;
	} else {
		argv = sandbox_files_delete_argv(t->exec.shell, t->workspace_path, path);
	}
	if (!argv)
		goto oom;
	exec_mgr_run_raw(m, ns, pod, tenant, argv, in, in_len, max_out, FILES_TIMEOUT_S, on_done, x);
	return;
oom:
	free(x);
	free(in);
	sandbox_files_argv_free(argv);
	exec_mgr_release(m, pod, tenant);
	http_reply_error(req, 500, "internal", NULL, 0, "out of memory");
}
