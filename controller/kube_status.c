/*
 * kube_status: decoding of API server errors into struct kube_error.
 */
#include "kube_status.h"
#include "util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	enum kube_err code;
	const char *name;
} err_names[] = {
	{ KUBE_OK, "ok" },
	{ KUBE_ERR_NOT_FOUND, "not_found" },
	{ KUBE_ERR_ALREADY_EXISTS, "already_exists" },
	{ KUBE_ERR_CONFLICT, "conflict" },
	{ KUBE_ERR_FORBIDDEN, "forbidden" },
	{ KUBE_ERR_UNAUTHORIZED, "unauthorized" },
	{ KUBE_ERR_INVALID, "invalid" },
	{ KUBE_ERR_GONE, "gone" },
	{ KUBE_ERR_TOO_MANY_REQUESTS, "too_many_requests" },
	{ KUBE_ERR_TIMEOUT, "timeout" },
	{ KUBE_ERR_TRANSPORT, "transport" },
	{ KUBE_ERR_BAD_REQUEST, "bad_request" },
	{ KUBE_ERR_SERVER, "server_error" },
	{ KUBE_ERR_PROTOCOL, "protocol" },
	{ KUBE_ERR_TOO_LARGE, "too_large" },
	{ KUBE_ERR_NOMEM, "out_of_memory" },
	{ KUBE_ERR_ARG, "invalid_argument" },
	{ KUBE_ERR_CANCELLED, "cancelled" },
};

const char *kube_strerror(enum kube_err code)
{
	for (size_t i = 0; i < sizeof(err_names) / sizeof(err_names[0]); i++)
		if (err_names[i].code == code)
			return err_names[i].name;
	return "unknown";
}

void kube_error_clear(struct kube_error *err)
{
	memset(err, 0, sizeof(*err));
	err->retry_after_s = -1;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	if (!src) {
		dst[0] = '\0';
		return;
	}
	snprintf(dst, cap, "%s", src);
}

enum kube_err kube_err_from_http(long http_status, const char *reason)
{
	if (reason) {
		if (strcmp(reason, "AlreadyExists") == 0)
			return KUBE_ERR_ALREADY_EXISTS;
		if (strcmp(reason, "Timeout") == 0 || strcmp(reason, "ServerTimeout") == 0)
			return KUBE_ERR_TIMEOUT;
		if (strcmp(reason, "Expired") == 0 || strcmp(reason, "Gone") == 0)
			return KUBE_ERR_GONE;
	}
	if (http_status >= 200 && http_status < 300)
		return KUBE_OK;
	switch (http_status) {
	case 400:
		return KUBE_ERR_BAD_REQUEST;
	case 401:
		return KUBE_ERR_UNAUTHORIZED;
	case 403:
		return KUBE_ERR_FORBIDDEN;
	case 404:
		return KUBE_ERR_NOT_FOUND;
	case 408:
	case 504:
		return KUBE_ERR_TIMEOUT;
	case 409:
		return KUBE_ERR_CONFLICT;
	case 410:
		return KUBE_ERR_GONE;
	case 413:
		return KUBE_ERR_TOO_LARGE;
	case 422:
		return KUBE_ERR_INVALID;
	case 429:
		return KUBE_ERR_TOO_MANY_REQUESTS;
	default:
		break;
	}
	if (http_status >= 500)
		return KUBE_ERR_SERVER;
	if (http_status >= 400)
		return KUBE_ERR_BAD_REQUEST;
	return KUBE_ERR_PROTOCOL; /* 1xx/3xx: we follow no redirects */
}

static int parse_retry_after(const char *v)
{
	if (!v)
		return -1;
	while (*v == ' ')
		v++;
	if (*v < '0' || *v > '9')
		return 1; /* an HTTP date: the API server does not send those; be brief */
	long n = 0;
	for (; *v >= '0' && *v <= '9'; v++) {
		n = n * 10 + (*v - '0');
		if (n > 3600)
			return 3600;
	}
	return (int)n;
}

/* Decode the Status-specific parts: reason, message, causes, retryAfterSeconds. */
static void decode_status_fields(const cJSON *st, struct kube_error *err)
{
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(st, "reason");
	const cJSON *message = cJSON_GetObjectItemCaseSensitive(st, "message");
	if (cJSON_IsString(reason))
		copy_str(err->reason, sizeof(err->reason), reason->valuestring);
	if (cJSON_IsString(message))
		copy_str(err->message, sizeof(err->message), message->valuestring);
	const cJSON *details = cJSON_GetObjectItemCaseSensitive(st, "details");
	if (!cJSON_IsObject(details))
		return;
	const cJSON *ra = cJSON_GetObjectItemCaseSensitive(details, "retryAfterSeconds");
	if (cJSON_IsNumber(ra) && ra->valuedouble >= 0 && err->retry_after_s < 0)
		err->retry_after_s = ra->valuedouble > 3600 ? 3600 : (int)ra->valuedouble;
	const cJSON *causes = cJSON_GetObjectItemCaseSensitive(details, "causes");
	const cJSON *c;
	cJSON_ArrayForEach(c, causes)
	{
		if (err->ncauses >= KUBE_MAX_CAUSES)
			break;
		if (!cJSON_IsObject(c))
			continue;
		struct kube_cause *kc = &err->causes[err->ncauses++];
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(c, "reason");
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "field");
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "message");
		copy_str(kc->reason, sizeof(kc->reason), cJSON_IsString(r) ? r->valuestring : NULL);
		copy_str(kc->field, sizeof(kc->field), cJSON_IsString(f) ? f->valuestring : NULL);
		copy_str(kc->message, sizeof(kc->message), cJSON_IsString(m) ? m->valuestring : NULL);
	}
}

static bool is_status(const cJSON *j)
{
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
	return cJSON_IsObject(j) && cJSON_IsString(kind) &&
	       strcmp(kind->valuestring, "Status") == 0;
}

enum kube_err kube_status_decode(long http_status, const char *body, size_t body_len,
				 const char *retry_after, struct kube_error *err)
{
	kube_error_clear(err);
	err->http_status = http_status;
	err->retry_after_s = parse_retry_after(retry_after);
	cJSON *st = NULL;
	if (body && body_len)
		st = cJSON_ParseWithLength(body, body_len);
	if (is_status(st))
		decode_status_fields(st, err);
	else if (body && body_len)
		/* Not a Status (a proxy's page, say): keep the start of it, printable only. */
		for (size_t i = 0; i < body_len && i < 200; i++) {
			unsigned char ch = (unsigned char)body[i];
			err->message[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : ' ';
			err->message[i + 1] = '\0';
		}
	cJSON_Delete(st);
	err->code = kube_err_from_http(http_status, err->reason[0] ? err->reason : NULL);
	if (!err->message[0])
		snprintf(err->message, sizeof(err->message), "HTTP %ld", http_status);
	return err->code;
}

enum kube_err kube_status_from_json(const cJSON *status, struct kube_error *err)
{
	kube_error_clear(err);
	if (!cJSON_IsObject(status)) {
		return kube_error_set(err, KUBE_ERR_PROTOCOL, "error event without a Status");
	}
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(status, "code");
	int64_t http = 500; /* kept when code is missing or not an HTTP status */
	if (cJSON_IsNumber(code))
		(void)double_as_i64(code->valuedouble, 0, 999, &http);
	err->http_status = (long)http;
	decode_status_fields(status, err);
	err->code = kube_err_from_http(err->http_status, err->reason[0] ? err->reason : NULL);
	if (err->code == KUBE_OK)
		err->code = KUBE_ERR_PROTOCOL; /* an ERROR event is never a success */
	if (!err->message[0])
		snprintf(err->message, sizeof(err->message), "status %ld", err->http_status);
	return err->code;
}

enum kube_err kube_error_set(struct kube_error *err, enum kube_err code,
			     const char *fmt, ...)
{
	kube_error_clear(err);
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return code;
}
