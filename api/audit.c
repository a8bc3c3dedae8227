/*
 * audit: JSON-lines audit records (see audit.h). A record is built in a
 * stack buffer of AUDIT_LINE_MAX bytes, with a byte budget per field that
 * makes overflow impossible, then written with one write(2) while holding
 * the mutex that audit_reopen also takes, so that rotation never splits
 * or loses a line.
 */
#include "audit.h"
#include "util.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TRUNC_MARK "...(truncated)"
#define TRUNC_MARK_LEN (sizeof(TRUNC_MARK) - 1)

/* Worst case of a line: the fixed parts (keys, punctuation, time, numbers,
 * the hash) stay well under 1 KiB; then eight free-text string fields,
 * three code fields and the argv array, each with quotes. */
#define AUDIT_FIXED_MAX 1024
_Static_assert(AUDIT_FIXED_MAX + 8 * (AUDIT_FIELD_MAX + 2) + 3 * (AUDIT_CODE_MAX + 2) +
		       AUDIT_ARGV_MAX + 2 < AUDIT_LINE_MAX,
	       "audit field budgets exceed AUDIT_LINE_MAX");
_Static_assert(AUDIT_ARG_MAX + 3 <= AUDIT_ARGV_MAX, "one argv element must fit");

struct audit {
	pthread_mutex_t mu;
	int fd;
	bool own_fd;           /* a file we opened (and reopen) */
	bool failing;          /* the last write failed: do not log again */
	char *path;
	enum audit_argv_mode argv_mode;
	uint64_t records, failures;
};

/* ---- the line buffer ---- */

struct line {
	char *p;
	size_t len, cap;
};

static void put(struct line *l, const void *s, size_t n)
{
	/* the budgets make this impossible; truncating keeps memory safe */
	if (n > l->cap - l->len)
		n = l->cap - l->len;
	memcpy(l->p + l->len, s, n);
	l->len += n;
}

static void puts_(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}


/* The JSON escape of the character at s into out (at most 6 bytes); *used
 * gets how many input bytes it took. Returns the output length. */
static size_t escape_char(const char *s, char out[8], size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = (unsigned char)*s;
	*used = 1;
	if (c >= 0x80) {
		size_t k = utf8_seq_len((const unsigned char *)s);
		if (k == 0) {
			memcpy(out, "\xef\xbf\xbd", 3); /* U+FFFD */
			return 3;
		}
		memcpy(out, s, k);
		*used = k;
		return k;
	}
	switch (c) {
	case '"': memcpy(out, "\\\"", 2); return 2;
	case '\\': memcpy(out, "\\\\", 2); return 2;
	case '\n': memcpy(out, "\\n", 2); return 2;
	case '\r': memcpy(out, "\\r", 2); return 2;
	case '\t': memcpy(out, "\\t", 2); return 2;
	default: break;
	}
	if (c < 0x20 || c == 0x7f) {
		memcpy(out, "\\u00", 4);
		out[4] = hex[c >> 4];
		out[5] = hex[c & 15];
		return 6;
	}
	out[0] = (char)c;
	return 1;
}

/* Escaped length of s, counting no further than limit + 1. */
static size_t escaped_len(const char *s, size_t limit)
{
	size_t n = 0, used;
	char tmp[8];
	while (*s && n <= limit) {
		n += escape_char(s, tmp, &used);
		s += used;
	}
	return n;
}

/* s as a JSON string (with quotes) of at most max escaped bytes between
 * the quotes, cut with the marker when longer. Returns the bytes added. */
static size_t put_str(struct line *l, const char *s, size_t max)
{
	size_t start = l->len;
	bool cut = escaped_len(s, max) > max;
	size_t room = cut ? max - TRUNC_MARK_LEN : max, n = 0, used;
	char tmp[8];
	put(l, "\"", 1);
	while (*s) {
		size_t k = escape_char(s, tmp, &used);
		if (n + k > room)
			break;
		put(l, tmp, k);
		n += k;
		s += used;
	}
	if (cut)
		put(l, TRUNC_MARK, TRUNC_MARK_LEN);
	put(l, "\"", 1);
	return l->len - start;
}

static void put_key(struct line *l, const char *key)
{
	put(l, ",\"", 2);
	puts_(l, key);
	put(l, "\":", 2);
}

static void put_field(struct line *l, const char *key, const char *v)
{
	if (!v)
		return;
	put_key(l, key);
	put_str(l, v, AUDIT_FIELD_MAX);
}

/* A code (action, kind, reason) as a JSON string: itself when it matches
 * [a-z0-9_.-]{1,64} (so it needs no escaping), else "invalid". */
static void put_code_str(struct line *l, const char *v)
{
	size_t n = strlen(v);
	bool ok = n >= 1 && n <= AUDIT_CODE_MAX;
	for (size_t i = 0; ok && i < n; i++) {
		char c = v[i];
		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		     c == '.' || c == '-';
	}
	put(l, "\"", 1);
	puts_(l, ok ? v : "invalid");
	put(l, "\"", 1);
}

static void put_code(struct line *l, const char *key, const char *v)
{
	if (!v)
		return;
	put_key(l, key);
	put_code_str(l, v);
}

static void put_int(struct line *l, const char *key, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)v);
	put_key(l, key);
	put(l, num, (size_t)n);
}

/* SHA-256 of the NUL-joined argv as 64 hex digits; false when OpenSSL
 * fails (out of memory). */
static bool argv_sha256(char *const *argv, size_t argc, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
	for (size_t i = 0; ok && i < argc; i++) {
		const char *s = argv[i] ? argv[i] : "";
		if (i > 0)
			ok = EVP_DigestUpdate(ctx, "", 1) == 1;
		if (ok)
			ok = EVP_DigestUpdate(ctx, s, strlen(s)) == 1;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; ok && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return ok;
}

static void put_argv(struct line *l, enum audit_argv_mode mode, char *const *argv,
		     size_t argc)
{
	put_int(l, "argc", (int64_t)argc);
	if (mode == AUDIT_ARGV_REDACTED) {
		if (argc > 0)
			put_field(l, "program", argv[0] ? argv[0] : "");
		return;
	}
	if (mode == AUDIT_ARGV_HASHED) {
		char hex[65];
		put_key(l, "argv_sha256");
		put(l, "\"", 1);
		puts_(l, argv_sha256(argv, argc, hex) ? hex : "unavailable");
		put(l, "\"", 1);
		return;
	}
	put_key(l, "argv");
	put(l, "[", 1);
	size_t used = 2; /* the brackets */
	bool dropped = false;
	for (size_t i = 0; i < argc; i++) {
		const char *s = argv[i] ? argv[i] : "";
		size_t need = escaped_len(s, AUDIT_ARG_MAX);
		need = (need > AUDIT_ARG_MAX ? AUDIT_ARG_MAX : need) + 2 + (i > 0);
		if (used + need > AUDIT_ARGV_MAX) {
			dropped = true;
			break;
		}
		if (i > 0)
			put(l, ",", 1);
		used += (i > 0) + put_str(l, s, AUDIT_ARG_MAX);
	}
	put(l, "]", 1);
	if (dropped) {
		put_key(l, "argv_truncated");
		puts_(l, "true");
	}
}

/* ---- public ---- */

const char *audit_outcome_name(enum audit_outcome o)
{
	switch (o) {
	case AUDIT_SUCCESS: return "success";
	case AUDIT_FAILURE: return "failure";
	case AUDIT_DENIED: return "denied";
	default: return NULL;
	}
}

static int open_path(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	return fd < 0 ? -errno : fd;
}

struct audit *audit_new(const struct audit_opts *o, char *err, size_t errlen)
{
	const char *dest = o && o->destination && *o->destination ? o->destination : "stdout";
	enum audit_argv_mode mode = o ? o->argv_mode : AUDIT_ARGV_FULL;
	if (mode != AUDIT_ARGV_FULL && mode != AUDIT_ARGV_REDACTED &&
	    mode != AUDIT_ARGV_HASHED) {
		snprintf(err, errlen, "audit: unknown argv mode %d", (int)mode);
		return NULL;
	}
	struct audit *a = calloc(1, sizeof(*a));
	if (!a || pthread_mutex_init(&a->mu, NULL) != 0) {
		free(a);
		snprintf(err, errlen, "audit: out of memory");
		return NULL;
	}
	a->argv_mode = mode;
	if (strcmp(dest, "stdout") == 0) {
		a->fd = 1;
	} else if (strcmp(dest, "stderr") == 0) {
		a->fd = 2;
	} else {
		a->path = strdup(dest);
		int fd = a->path ? open_path(dest) : -ENOMEM;
		if (fd < 0) {
			snprintf(err, errlen, "audit: cannot open \"%s\": %s", dest, strerror(-fd));
			audit_free(a);
			return NULL;
		}
		a->fd = fd;
		a->own_fd = true;
	}
	return a;
}

void audit_free(struct audit *a)
{
	if (!a)
		return;
	if (a->own_fd)
		close(a->fd);
	pthread_mutex_destroy(&a->mu);
	free(a->path);
	free(a);
}

int audit_reopen(struct audit *a)
{
	if (!a || !a->own_fd)
		return 0;
	int fd = open_path(a->path);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&a->mu);
	int old = a->fd;
	a->fd = fd;
	pthread_mutex_unlock(&a->mu);
	close(old);
	return 0;
}

/* Write the whole line; 0 or a negated errno. Called with the lock. */
static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

void audit_record(struct audit *a, const struct audit_event *e)
{
	if (!a || !e)
		return;
	char buf[AUDIT_LINE_MAX];
	struct line l = { buf, 0, sizeof(buf) - 1 }; /* room for the newline */

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	char tbuf[96];
	int tn = snprintf(tbuf, sizeof(tbuf),
			  "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"type\":\"audit\"",
			  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			  tm.tm_sec, ts.tv_nsec / 1000000);
	put(&l, tbuf, (size_t)tn);

	put_field(&l, "request_id", e->request_id);
	if (e->principal_id || e->principal_kind) {
		put_key(&l, "principal");
		put(&l, "{", 1);
		if (e->principal_id) {
			puts_(&l, "\"id\":");
			put_str(&l, e->principal_id, AUDIT_FIELD_MAX);
		}
		if (e->principal_kind) {
			puts_(&l, e->principal_id ? ",\"kind\":" : "\"kind\":");
			put_code_str(&l, e->principal_kind);
		}
		put(&l, "}", 1);
	}
	put_field(&l, "tenant", e->tenant);
	put_field(&l, "client_addr", e->client_addr);
	put_code(&l, "action", e->action);
	put_field(&l, "sandbox", e->sandbox_id);
	if (e->argv)
		put_argv(&l, a->argv_mode, e->argv, e->argc);
	const char *outcome = audit_outcome_name(e->outcome);
	if (outcome) {
		put_key(&l, "outcome");
		put(&l, "\"", 1);
		puts_(&l, outcome);
		put(&l, "\"", 1);
	}
	if (e->status)
		put_int(&l, "status", e->status);
	put_code(&l, "reason", e->reason);
	if (e->duration_ms)
		put_int(&l, "duration_ms", e->duration_ms);
	put(&l, "}", 1);
	buf[l.len++] = '\n';

	int saved_errno = errno;
	pthread_mutex_lock(&a->mu);
	int rc = write_all(a->fd, buf, l.len);
	bool log_it = false;
	if (rc == 0) {
		a->records++;
		a->failing = false;
	} else {
		a->failures++;
		log_it = !a->failing;
		a->failing = true;
	}
	pthread_mutex_unlock(&a->mu);
	if (log_it)
		log_error("audit: cannot write a record: %s; records are being lost",
			  strerror(-rc));
	errno = saved_errno;
}

void audit_get_stats(struct audit *a, struct audit_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!a)
		return;
	pthread_mutex_lock(&a->mu);
	out->records = a->records;
	out->failures = a->failures;
	pthread_mutex_unlock(&a->mu);
}
