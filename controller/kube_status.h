/*
 * kube_status: the typed result of a Kubernetes API call, decoded from the
 * HTTP status, the metav1.Status body and the Retry-After header, so that
 * callers can tell "not found" from "conflict" from "the network is down"
 * without parsing strings.
 */
#ifndef SBX_KUBE_STATUS_H
#define SBX_KUBE_STATUS_H

#include <cjson/cJSON.h>

enum kube_err {
	KUBE_OK = 0,
	KUBE_ERR_NOT_FOUND = -1,         /* 404 */
	KUBE_ERR_ALREADY_EXISTS = -2,    /* 409, reason AlreadyExists */
	KUBE_ERR_CONFLICT = -3,          /* 409 otherwise (stale resourceVersion, failed precondition) */
	KUBE_ERR_FORBIDDEN = -4,         /* 403 */
	KUBE_ERR_UNAUTHORIZED = -5,      /* 401 */
	KUBE_ERR_INVALID = -6,           /* 422, with field causes */
	KUBE_ERR_GONE = -7,              /* 410: resourceVersion too old, continue token expired */
	KUBE_ERR_TOO_MANY_REQUESTS = -8, /* 429, with retry_after_s */
	KUBE_ERR_TIMEOUT = -9,           /* 504/408, Status reason Timeout, or our own deadline */
	KUBE_ERR_TRANSPORT = -10,        /* connect, TLS or I/O failure: no HTTP answer */
	KUBE_ERR_BAD_REQUEST = -11,      /* 400 and other 4xx */
	KUBE_ERR_SERVER = -12,           /* 5xx other than timeouts */
	KUBE_ERR_PROTOCOL = -13,         /* the answer is not what the API promises (bad JSON, bad event) */
	KUBE_ERR_TOO_LARGE = -14,        /* a response or watch event over its size limit */
	KUBE_ERR_NOMEM = -15,
	KUBE_ERR_ARG = -16,              /* the caller passed an invalid name, path or value */
	KUBE_ERR_CANCELLED = -17,        /* stopped by the caller's stop flag */
};

#define KUBE_MAX_CAUSES 8

struct kube_cause {
	char reason[64];   /* e.g. "FieldValueInvalid" */
	char field[128];   /* e.g. "spec.containers[0].securityContext" */
	char message[256];
};

struct kube_error {
	enum kube_err code;
	long http_status;     /* 0 when no HTTP answer was received */
	char reason[64];      /* metav1.Status reason, e.g. "NotFound" */
	char message[512];    /* metav1.Status message or transport error text */
	int retry_after_s;    /* seconds to wait before retrying, -1 when not given */
	int ncauses;
	struct kube_cause causes[KUBE_MAX_CAUSES];
};

/* A short, stable name for a code, e.g. "not_found". Never NULL. */
const char *kube_strerror(enum kube_err code);

/* Reset err to "no error". */
void kube_error_clear(struct kube_error *err);

/* Map an HTTP status and Status reason to a code (reason may be NULL). */
enum kube_err kube_err_from_http(long http_status, const char *reason);

/* Fill err from an HTTP error answer: status code, body (may be NULL or not
 * JSON; only a metav1.Status is decoded) and the Retry-After header value
 * (NULL when absent). Returns err->code. */
enum kube_err kube_status_decode(long http_status, const char *body, size_t body_len,
				 const char *retry_after, struct kube_error *err);

/* Fill err from a metav1.Status object, as found in a watch ERROR event, where
 * the HTTP status comes from the Status's "code". Returns err->code. */
enum kube_err kube_status_from_json(const cJSON *status, struct kube_error *err);

/* Fill err for a failure that produced no HTTP answer, or a local one. */
enum kube_err kube_error_set(struct kube_error *err, enum kube_err code,
			     const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
