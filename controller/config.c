/*
 * config: the controller's configuration (see config.h for the contract).
 *
 * The YAML file is loaded with libyaml's document API and read only at fixed
 * paths, never by walking the graph, so aliases (including self-referencing
 * ones) and deep nesting cannot make this code recurse, loop or expand; every
 * mapping's keys are checked against the keys it may hold, and every list has
 * a maximum length checked before it is walked. Every value is validated where
 * it is read, and the error names its key path ("templates[0].user"), its
 * environment variable ("SBX_PORT") or its flag ("--port").
 */
#include "config.h"
#include "yaml_guard.h"
#include "log.h"
#include "sandbox_spec.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define KEYPATH_MAX 192
#define SHOWN_MAX 72

#define DEFAULT_NAMESPACE "sandboxes"
#define DEFAULT_LISTEN "0.0.0.0"
#define DEFAULT_PORT 8080
#define DEFAULT_WORKSPACE "/workspace"
#define DEFAULT_TMP_SIZE "64Mi"
#define DEFAULT_LIFETIME_S 3600
#define DEFAULT_MAX_LIFETIME_S 86400

/* ---- errors ---- */

/* Write "key: message" into err; returns -EINVAL so callers can return it. */
__attribute__((format(printf, 4, 5))) static int
cfg_err(char *err, size_t errlen, const char *key, const char *fmt, ...)
{
	char msg[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (errlen)
		snprintf(err, errlen, "%s: %s", key, msg);
	return -EINVAL;
}

/* A printable, bounded copy of s for an error message. */
static const char *shown(const char *s, char buf[SHOWN_MAX])
{
	size_t n = 0;
	for (; *s && n < SHOWN_MAX - 4; s++)
		buf[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	if (*s) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static int set_str(char **field, const char *v)
{
	char *c = strdup(v);
	if (!c)
		return -ENOMEM;
	free(*field);
	*field = c;
	return 0;
}

/* ---- numbers, quantities, durations ---- */

/* Strict unsigned decimal: digits only, no sign, no leading zeros (YAML 1.1
 * reads "010" as octal: refuse rather than guess), at most max. 0, -EINVAL or
 * -ERANGE. */
static int parse_dec(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '0' && s[1])
		return -EINVAL;
	uint64_t v = 0;
	for (const char *c = s; *c; c++) {
		if (*c < '0' || *c > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*c - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/*
 * A quantity scaled by 10^scale10 (3 for milli-units, 0 for bytes). Returns 0,
 * -EINVAL (syntax), -ERANGE (over INT64_MAX) or -EDOM (not a whole number of
 * units after scaling). The arithmetic is exact: mantissa * 2^exp2 * 10^exp10
 * in 128 bits.
 */
static int quantity_scaled(const char *q, int scale10, int64_t *out)
{
	if (!q || strlen(q) > 64)
		return -EINVAL;
	const char *s = q;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	uint64_t mant = 0;
	int frac = 0;
	bool overflow = false;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (mant > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			mant = mant * 10 + d;
	}
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		int zeros = 0; /* trailing zeros of the fraction do not count */
		for (; *s >= '0' && *s <= '9'; s++) {
			if (*s == '0') {
				zeros++;
				continue;
			}
			for (; zeros > 0; zeros--, frac++) {
				if (mant > UINT64_MAX / 10)
					overflow = true;
				else
					mant *= 10;
			}
			unsigned d = (unsigned)(*s - '0');
			if (mant > (UINT64_MAX - d) / 10)
				overflow = true;
			else
				mant = mant * 10 + d;
			frac++;
		}
	}
	int exp10 = 0, exp2 = 0;
	static const struct {
		const char *suffix;
		int exp10, exp2;
	} suffixes[] = {
		{ "", 0, 0 },    { "m", -3, 0 },  { "k", 3, 0 },   { "M", 6, 0 },
		{ "G", 9, 0 },   { "T", 12, 0 },  { "P", 15, 0 },  { "E", 18, 0 },
		{ "Ki", 0, 10 }, { "Mi", 0, 20 }, { "Gi", 0, 30 }, { "Ti", 0, 40 },
		{ "Pi", 0, 50 }, { "Ei", 0, 60 },
	};
	bool found = false;
	for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
		if (strcmp(s, suffixes[i].suffix) == 0) {
			exp10 = suffixes[i].exp10;
			exp2 = suffixes[i].exp2;
			found = true;
			break;
		}
	}
	if (!found) {
		/* decimal exponent: e or E, optional sign, 1..4 digits */
		if (*s != 'e' && *s != 'E')
			return -EINVAL;
		s++;
		bool neg = false;
		if (*s == '+' || *s == '-')
			neg = *s++ == '-';
		size_t nd = strspn(s, "0123456789");
		if (nd == 0 || nd > 4 || s[nd])
			return -EINVAL;
		exp10 = atoi(s);
		if (neg)
			exp10 = -exp10;
	}
	if (overflow)
		return -ERANGE;
	exp10 += scale10 - frac;
	unsigned __int128 v = (unsigned __int128)mant << exp2;
	if (v != 0) {
		for (; exp10 < 0; exp10++) {
			if (v % 10)
				return -EDOM;
			v /= 10;
		}
		for (; exp10 > 0; exp10--) {
			if (v > INT64_MAX / 10)
				return -ERANGE;
			v *= 10;
		}
	}
	if (v > INT64_MAX)
		return -ERANGE;
	*out = (int64_t)v;
	return 0;
}

int quantity_parse_milli(const char *q, int64_t *milli)
{
	int64_t v;
	if (quantity_scaled(q, 3, &v) != 0)
		return -EINVAL;
	*milli = v;
	return 0;
}

int quantity_parse_bytes(const char *q, int64_t *bytes)
{
	int64_t v;
	if (quantity_scaled(q, 0, &v) != 0)
		return -EINVAL;
	*bytes = v;
	return 0;
}

int duration_parse(const char *s, int64_t *seconds)
{
	if (!s)
		return -EINVAL;
	size_t nd = strspn(s, "0123456789");
	if (nd == 0 || nd > 19 || (s[0] == '0' && nd > 1))
		return -EINVAL;
	int64_t mult;
	const char *unit = s + nd;
	if (strcmp(unit, "") == 0 || strcmp(unit, "s") == 0)
		mult = 1;
	else if (strcmp(unit, "m") == 0)
		mult = 60;
	else if (strcmp(unit, "h") == 0)
		mult = 3600;
	else if (strcmp(unit, "d") == 0)
		mult = 86400;
	else
		return -EINVAL;
	char digits[20];
	memcpy(digits, s, nd);
	digits[nd] = '\0';
	uint64_t v;
	if (parse_dec(digits, (uint64_t)INT64_MAX / (uint64_t)mult, &v) != 0)
		return -EINVAL;
	*seconds = (int64_t)v * mult;
	return 0;
}

/* ---- shared validators ---- */

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool config_valid_label_n(const char *s, size_t n, size_t max)
{
	if (n == 0 || n > max || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_lower_alnum(s[i]) && s[i] != '-')
			return false;
	return true;
}

/* [a-z0-9-]{1,max}, a letter or digit at both ends (RFC 1123 label). */
static bool valid_dns_label(const char *s, size_t max)
{
	return config_valid_label_n(s, strlen(s), max);
}

/* RFC 1123 subdomain: dot-separated labels, at most 253 chars. */
static bool valid_dns_subdomain(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (!is_lower_alnum(s[i - 1]) || !is_lower_alnum(s[i + 1]))
				return false;
		} else if (!is_lower_alnum(s[i]) && s[i] != '-') {
			return false;
		}
	}
	return true;
}

/* An IPv4 or IPv6 CIDR with its prefix and no host bits set. 0 or -EINVAL
 * with the reason in why. */
static int check_cidr(const char *s, char *why, size_t whylen)
{
	const char *slash = strchr(s, '/');
	if (!slash) {
		snprintf(why, whylen, "needs a prefix length, e.g. 203.0.113.0/24");
		return -EINVAL;
	}
	char addr[INET6_ADDRSTRLEN];
	size_t alen = (size_t)(slash - s);
	if (alen == 0 || alen >= sizeof(addr)) {
		snprintf(why, whylen, "not a valid IP address");
		return -EINVAL;
	}
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	bool v6 = strchr(addr, ':') != NULL;
	unsigned char bytes[16];
	if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, bytes) != 1) {
		snprintf(why, whylen, "not a valid %s address", v6 ? "IPv6" : "IPv4");
		return -EINVAL;
	}
	unsigned bits = v6 ? 128 : 32;
	uint64_t prefix;
	if (parse_dec(slash + 1, bits, &prefix) != 0) {
		snprintf(why, whylen, "prefix length must be a number from 0 to %u", bits);
		return -EINVAL;
	}
	for (unsigned b = (unsigned)prefix; b < bits; b++) {
		if (bytes[b / 8] & (0x80u >> (b % 8))) {
			snprintf(why, whylen, "has bits set after the /%u prefix", (unsigned)prefix);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- top-level settings (file, environment, flags) ---- */

typedef int (*setter_fn)(struct sbx_config *cfg, const char *v, const char *key, char *err,
			 size_t errlen);

static int set_namespace(struct sbx_config *cfg, const char *v, const char *key, char *err,
			 size_t errlen)
{
	char b[SHOWN_MAX];
	if (!valid_dns_label(v, 63))
		return cfg_err(err, errlen, key,
			       "\"%s\" is not a valid namespace name (1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
			       shown(v, b));
	return set_str(&cfg->namespace, v);
}

static int set_listen_address(struct sbx_config *cfg, const char *v, const char *key,
			      char *err, size_t errlen)
{
	unsigned char a[16];
	char b[SHOWN_MAX];
	if (inet_pton(AF_INET, v, a) != 1 && inet_pton(AF_INET6, v, a) != 1)
		return cfg_err(err, errlen, key,
			       "\"%s\" is not an IPv4 or IPv6 address (e.g. 0.0.0.0, 127.0.0.1, ::)",
			       shown(v, b));
	return set_str(&cfg->listen_address, v);
}

static int set_port(struct sbx_config *cfg, const char *v, const char *key, char *err,
		    size_t errlen)
{
	uint64_t p;
	char b[SHOWN_MAX];
	if (parse_dec(v, 65535, &p) != 0 || p == 0)
		return cfg_err(err, errlen, key, "\"%s\" is not a port number from 1 to 65535",
			       shown(v, b));
	cfg->port = (int)p;
	return 0;
}

static int set_kubeconfig(struct sbx_config *cfg, const char *v, const char *key, char *err,
			  size_t errlen)
{
	if (!*v || strlen(v) > 4096 || has_ctl(v))
		return cfg_err(err, errlen, key,
			       "must be a file path (not empty, at most 4096 bytes, no control characters)");
	return set_str(&cfg->kubeconfig, v);
}

static int set_context(struct sbx_config *cfg, const char *v, const char *key, char *err,
		       size_t errlen)
{
	if (!*v || strlen(v) > 253 || has_ctl(v))
		return cfg_err(err, errlen, key,
			       "must be a context name (not empty, at most 253 bytes, no control characters)");
	return set_str(&cfg->kube_context, v);
}

static int set_log_level(struct sbx_config *cfg, const char *v, const char *key, char *err,
			 size_t errlen)
{
	char b[SHOWN_MAX];
	int l = log_level_parse(v);
	if (l < 0)
		return cfg_err(err, errlen, key,
			       "\"%s\" is not a log level (debug, info, warn, error)", shown(v, b));
	static const char *const names[] = { "debug", "info", "warn", "error" };
	return set_str(&cfg->log_level, names[l]);
}

static int set_log_format(struct sbx_config *cfg, const char *v, const char *key, char *err,
			  size_t errlen)
{
	char b[SHOWN_MAX];
	if (strcmp(v, "json") != 0 && strcmp(v, "text") != 0)
		return cfg_err(err, errlen, key, "\"%s\" is not a log format (json, text)",
			       shown(v, b));
	return set_str(&cfg->log_format, v);
}

/* Each setting that the file, the environment and a flag may all set. */
static const struct setting {
	const char *section; /* YAML mapping holding it, NULL for the top level */
	const char *key;     /* its key there */
	const char *env;
	const char *flag;
	setter_fn set;
} settings[] = {
	{ NULL, "namespace", "SBX_NAMESPACE", "namespace", set_namespace },
	{ "listen", "address", "SBX_LISTEN_ADDRESS", "listen", set_listen_address },
	{ "listen", "port", "SBX_PORT", "port", set_port },
	{ "kubernetes", "kubeconfig", "SBX_KUBECONFIG", "kubeconfig", set_kubeconfig },
	{ "kubernetes", "context", "SBX_KUBE_CONTEXT", "context", set_context },
	{ "log", "level", "SBX_LOG_LEVEL", "log-level", set_log_level },
	{ "log", "format", "SBX_LOG_FORMAT", "log-format", set_log_format },
};

/* ---- YAML access ---- */

struct pctx {
	yaml_document_t *doc;
	char *err;
	size_t errlen;
};

#define PERR(p, key, ...) cfg_err((p)->err, (p)->errlen, (key), __VA_ARGS__)

static yaml_node_t *ynode(struct pctx *p, int idx)
{
	return yaml_document_get_node(p->doc, idx);
}

static const char *kind(const yaml_node_t *n)
{
	if (!n)
		return "nothing";
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

/* A plain empty, "~" or "null" scalar: YAML's null, treated as absent. */
static bool is_null(const yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = (const char *)n->data.scalar.value;
	return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* Format a key path; one too long for the buffer (no valid file has one)
 * is cut short rather than overflowing. */
__attribute__((format(printf, 3, 4))) static void keyf(char *out, size_t n, const char *fmt,
						       ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, n, fmt, ap);
	va_end(ap);
}

static void subkey(char *out, size_t n, const char *path, const char *key)
{
	if (*path)
		keyf(out, n, "%s.%s", path, key);
	else
		keyf(out, n, "%s", key);
}

static void subidx(char *out, size_t n, const char *path, size_t i)
{
	keyf(out, n, "%s[%zu]", path, i);
}

/* The text of a scalar node (not NULL when 0 is returned). */
static int scalar_text(struct pctx *p, yaml_node_t *n, const char *path, const char **out)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return PERR(p, path, "expected a scalar, found %s", kind(n));
	const char *v = (const char *)n->data.scalar.value;
	if (strlen(v) != n->data.scalar.length)
		return PERR(p, path, "contains a NUL byte");
	*out = v;
	return 0;
}

/*
 * n must be a mapping of at most max pairs whose keys are distinct scalars
 * from allowed (any scalar when allowed is NULL). With allowed given, the
 * first unknown key fails, so a duplicate is found among the first
 * nallowed + 1 keys: the work is bounded whatever the input.
 */
static int check_map(struct pctx *p, yaml_node_t *n, const char *path,
		     const char *const *allowed, size_t nallowed, size_t max)
{
	if (!n || n->type != YAML_MAPPING_NODE)
		return PERR(p, *path ? path : "(top level)", "expected a mapping, found %s",
			    kind(n));
	yaml_node_pair_t *start = n->data.mapping.pairs.start;
	size_t count = (size_t)(n->data.mapping.pairs.top - start);
	if (max && count > max)
		return PERR(p, path, "too many entries (at most %zu)", max);
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *k = ynode(p, start[i].key);
		if (!k || k->type != YAML_SCALAR_NODE)
			return PERR(p, *path ? path : "(top level)",
				    "keys must be scalars, found %s", kind(k));
		const char *ks = (const char *)k->data.scalar.value;
		char b[SHOWN_MAX], sub[KEYPATH_MAX];
		subkey(sub, sizeof(sub), path, shown(ks, b));
		if (strlen(ks) != k->data.scalar.length)
			return PERR(p, sub, "key contains a NUL byte");
		if (allowed) {
			bool known = false;
			for (size_t a = 0; a < nallowed && !known; a++)
				known = strcmp(ks, allowed[a]) == 0;
			if (!known)
				return PERR(p, sub, "unknown key");
		}
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *kj = ynode(p, start[j].key);
			if (strcmp((const char *)kj->data.scalar.value, ks) == 0)
				return PERR(p, sub, "duplicate key");
		}
	}
	return 0;
}

/* The value of key in a checked mapping m; NULL when absent or null. */
static yaml_node_t *mget(struct pctx *p, yaml_node_t *m, const char *key)
{
	for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = ynode(p, pr->key);
		if (strcmp((const char *)k->data.scalar.value, key) == 0) {
			yaml_node_t *v = ynode(p, pr->value);
			return is_null(v) ? NULL : v;
		}
	}
	return NULL;
}

/* A non-empty string without control characters of at most maxlen bytes at
 * m.key. *v is NULL (and 0 returned) when absent and not required. */
static int get_text(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		    size_t maxlen, bool required, const char **v)
{
	char sub[KEYPATH_MAX];
	subkey(sub, sizeof(sub), path, key);
	*v = NULL;
	yaml_node_t *n = mget(p, m, key);
	if (!n)
		return required ? PERR(p, sub, "missing") : 0;
	const char *t;
	int rc = scalar_text(p, n, sub, &t);
	if (rc)
		return rc;
	if (!*t)
		return PERR(p, sub, "must not be empty");
	if (strlen(t) > maxlen)
		return PERR(p, sub, "too long (at most %zu bytes)", maxlen);
	if (has_ctl(t))
		return PERR(p, sub, "must not contain control characters");
	*v = t;
	return 0;
}

static int get_str(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		   size_t maxlen, bool required, char **out)
{
	const char *v;
	int rc = get_text(p, m, path, key, maxlen, required, &v);
	if (rc || !v)
		return rc;
	return set_str(out, v);
}

/* An integer in [min, max] at m.key; *out unchanged when absent. */
static int get_int(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		   uint64_t min, uint64_t max, bool required, uint64_t *out)
{
	const char *v;
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	int rc = get_text(p, m, path, key, 32, required, &v);
	if (rc || !v)
		return rc;
	subkey(sub, sizeof(sub), path, key);
	uint64_t x;
	rc = parse_dec(v, UINT64_MAX, &x);
	if (rc == -EINVAL)
		return PERR(p, sub,
			    "\"%s\" is not a non-negative decimal integer (no sign, no leading zeros)",
			    shown(v, b));
	if (rc || x < min || x > max)
		return PERR(p, sub, "%s is out of range (%llu to %llu)", shown(v, b),
			    (unsigned long long)min, (unsigned long long)max);
	*out = x;
	return 0;
}

static const char *quantity_problem(int rc, bool bytes)
{
	switch (rc) {
	case -ERANGE:
		return "is too large";
	case -EDOM:
		return bytes ? "is not a whole number of bytes (\"m\" means milli: did you mean Mi?)"
			     : "is finer than 1m";
	default:
		return bytes ? "is not a quantity (e.g. 512Mi, 1Gi, 1G, 1048576)"
			     : "is not a quantity (e.g. 100m, 1, 1.5, 2)";
	}
}

/* A quantity in bytes or milli-units, > 0 unless allow_zero, at m.key. The
 * text is copied to *text when text is not NULL. */
static int get_quantity(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
			bool bytes, bool required, bool allow_zero, char **text, int64_t *out,
			bool *present)
{
	const char *v;
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	*present = false;
	int rc = get_text(p, m, path, key, 64, required, &v);
	if (rc || !v)
		return rc;
	subkey(sub, sizeof(sub), path, key);
	rc = quantity_scaled(v, bytes ? 0 : 3, out);
	if (rc)
		return PERR(p, sub, "\"%s\" %s", shown(v, b), quantity_problem(rc, bytes));
	if (*out == 0 && !allow_zero)
		return PERR(p, sub, "must be greater than zero");
	*present = true;
	return text ? set_str(text, v) : 0;
}

static int get_duration(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
			int64_t min, int64_t max, int64_t *out)
{
	const char *v;
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	int rc = get_text(p, m, path, key, 32, false, &v);
	if (rc || !v)
		return rc;
	subkey(sub, sizeof(sub), path, key);
	int64_t s;
	if (duration_parse(v, &s) != 0)
		return PERR(p, sub, "\"%s\" is not a duration (e.g. 90s, 15m, 2h, 1d)",
			    shown(v, b));
	if (s < min)
		return PERR(p, sub, "must be at least %llds", (long long)min);
	if (s > max)
		return PERR(p, sub, "must be at most %llds", (long long)max);
	*out = s;
	return 0;
}

/* ---- templates ---- */

static void template_release(struct sbx_template *t)
{
	free(t->name);
	free(t->image);
	for (size_t i = 0; i < t->ncommand; i++)
		free(t->command[i]);
	free(t->command);
	free(t->workspace_path);
	free(t->workspace_size);
	free(t->tmp_size);
	free(t->cpu_request);
	free(t->cpu_limit);
	free(t->memory_request);
	free(t->memory_limit);
	free(t->ephemeral_request);
	free(t->ephemeral_limit);
	free(t->runtime_class);
	for (size_t i = 0; i < t->nenv; i++) {
		free(t->env[i].key);
		free(t->env[i].value);
	}
	free(t->env);
	for (size_t i = 0; i < t->negress; i++) {
		free(t->egress[i].cidr);
		free(t->egress[i].protocol);
	}
	free(t->egress);
	free(t->exec.shell);
	for (size_t i = 0; i < t->exec.nallow; i++)
		free(t->exec.allow[i]);
	free(t->exec.allow);
	for (size_t i = 0; i < t->exec.ndeny; i++)
		free(t->exec.deny[i]);
	free(t->exec.deny);
}

static bool valid_template_name(const char *s)
{
	return valid_dns_label(s, 40);
}

/* Absolute, canonical (no "", "." or ".." components, no trailing slash),
 * [A-Za-z0-9._/-] only, not "/" and not under /tmp, /proc, /sys or /dev. */
static const char *workspace_path_problem(const char *s)
{
	if (s[0] != '/')
		return "must be an absolute path";
	if (strcmp(s, "/") == 0)
		return "must not be \"/\" (the root filesystem stays read-only)";
	if (strlen(s) > 255)
		return "too long (at most 255 bytes)";
	for (const char *c = s; *c; c++) {
		bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			  (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-' ||
			  *c == '/';
		if (!ok)
			return "may contain only letters, digits, '.', '_', '-' and '/'";
	}
	const char *c = s;
	while (*c == '/') {
		const char *e = strchr(c + 1, '/');
		size_t n = e ? (size_t)(e - c - 1) : strlen(c + 1);
		if (n == 0)
			return "must be canonical (no \"//\" and no trailing '/')";
		if ((n == 1 && c[1] == '.') || (n == 2 && c[1] == '.' && c[2] == '.'))
			return "must not contain \".\" or \"..\" components";
		c += n + 1;
	}
	static const char *const reserved[] = { "/tmp", "/proc", "/sys", "/dev" };
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++) {
		size_t n = strlen(reserved[i]);
		if (strncmp(s, reserved[i], n) == 0 && (s[n] == '\0' || s[n] == '/'))
			return "must not be /tmp, /proc, /sys, /dev or below them (/tmp is its own volume)";
	}
	return NULL;
}

static int parse_command(struct pctx *p, yaml_node_t *tm, const char *path,
			 struct sbx_template *t)
{
	char sub[KEYPATH_MAX], item[KEYPATH_MAX];
	subkey(sub, sizeof(sub), path, "command");
	yaml_node_t *n = mget(p, tm, "command");
	if (!n)
		return PERR(p, sub, "missing (the sandbox's long-running process, e.g. [\"sleep\", \"infinity\"])");
	if (n->type != YAML_SEQUENCE_NODE)
		return PERR(p, sub, "expected a list, found %s", kind(n));
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count == 0)
		return PERR(p, sub, "must not be empty");
	if (count > CONFIG_MAX_COMMAND)
		return PERR(p, sub, "too many entries (at most %d)", CONFIG_MAX_COMMAND);
	t->command = calloc(count + 1, sizeof(*t->command));
	if (!t->command)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		subidx(item, sizeof(item), sub, i);
		yaml_node_t *a = ynode(p, n->data.sequence.items.start[i]);
		const char *v;
		if (a && is_null(a))
			return PERR(p, item, "must be a string (quote it)");
		int rc = scalar_text(p, a, item, &v);
		if (rc)
			return rc;
		if (i == 0 && !*v)
			return PERR(p, item, "the program must not be empty");
		if (strlen(v) > CONFIG_MAX_ARG)
			return PERR(p, item, "too long (at most %d bytes)", CONFIG_MAX_ARG);
		t->command[i] = strdup(v);
		if (!t->command[i])
			return -ENOMEM;
		t->ncommand++;
	}
	return 0;
}

static int parse_workspace(struct pctx *p, yaml_node_t *tm, const char *path,
			   struct sbx_template *t, int64_t *ws_bytes)
{
	static const char *const keys[] = { "path", "size" };
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	subkey(sub, sizeof(sub), path, "workspace");
	yaml_node_t *w = mget(p, tm, "workspace");
	if (!w)
		return PERR(p, sub, "missing (at least {size: 1Gi})");
	int rc = check_map(p, w, sub, keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	rc = get_str(p, w, sub, "path", 255, false, &t->workspace_path);
	if (rc)
		return rc;
	if (!t->workspace_path && !(t->workspace_path = strdup(DEFAULT_WORKSPACE)))
		return -ENOMEM;
	const char *why = workspace_path_problem(t->workspace_path);
	if (why) {
		char pk[KEYPATH_MAX];
		subkey(pk, sizeof(pk), sub, "path");
		return PERR(p, pk, "\"%s\" %s", shown(t->workspace_path, b), why);
	}
	bool present;
	return get_quantity(p, w, sub, "size", true, true, false, &t->workspace_size, ws_bytes,
			    &present);
}

static int parse_resources(struct pctx *p, yaml_node_t *tm, const char *path,
			   struct sbx_template *t, int64_t *ephemeral_limit)
{
	static const char *const keys[] = { "requests", "limits" };
	static const char *const rkeys[] = { "cpu", "memory", "ephemeral-storage" };
	char sub[KEYPATH_MAX], part[KEYPATH_MAX];
	subkey(sub, sizeof(sub), path, "resources");
	yaml_node_t *r = mget(p, tm, "resources");
	if (!r)
		return PERR(p, sub, "missing (requests and limits for cpu, memory and ephemeral-storage)");
	int rc = check_map(p, r, sub, keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	char **fields[2][3] = {
		{ &t->cpu_request, &t->memory_request, &t->ephemeral_request },
		{ &t->cpu_limit, &t->memory_limit, &t->ephemeral_limit },
	};
	int64_t vals[2][3];
	for (int side = 0; side < 2; side++) {
		subkey(part, sizeof(part), sub, keys[side]);
		yaml_node_t *m = mget(p, r, keys[side]);
		if (!m)
			return PERR(p, part, "missing (cpu, memory and ephemeral-storage)");
		rc = check_map(p, m, part, rkeys, ARRAY_SIZE(rkeys), 0);
		if (rc)
			return rc;
		for (int k = 0; k < 3; k++) {
			bool present;
			rc = get_quantity(p, m, part, rkeys[k], k != 0, true, false,
					  fields[side][k], &vals[side][k], &present);
			if (rc)
				return rc;
		}
	}
	for (int k = 0; k < 3; k++) {
		if (vals[0][k] > vals[1][k]) {
			char rk[KEYPATH_MAX];
			keyf(rk, sizeof(rk), "%s.requests.%s", sub, rkeys[k]);
			return PERR(p, rk, "%s exceeds the limit %s", *fields[0][k],
				    *fields[1][k]);
		}
	}
	t->cpu_limit_milli = vals[1][0];
	t->memory_limit_bytes = vals[1][1];
	*ephemeral_limit = vals[1][2];
	return 0;
}

static int parse_env(struct pctx *p, yaml_node_t *tm, const char *path, struct sbx_template *t)
{
	char sub[KEYPATH_MAX], item[KEYPATH_MAX], b[SHOWN_MAX];
	subkey(sub, sizeof(sub), path, "env");
	yaml_node_t *e = mget(p, tm, "env");
	if (!e)
		return 0;
	int rc = check_map(p, e, sub, NULL, 0, CONFIG_MAX_TEMPLATE_ENV);
	if (rc)
		return rc;
	size_t count = (size_t)(e->data.mapping.pairs.top - e->data.mapping.pairs.start);
	t->env = calloc(count ? count : 1, sizeof(*t->env));
	if (!t->env)
		return -ENOMEM;
	size_t total = 0;
	for (size_t i = 0; i < count; i++) {
		yaml_node_pair_t *pr = &e->data.mapping.pairs.start[i];
		const char *k = (const char *)ynode(p, pr->key)->data.scalar.value;
		subkey(item, sizeof(item), sub, shown(k, b));
		if (!sandbox_valid_env_name(k))
			return PERR(p, item,
				    "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128)");
		yaml_node_t *vn = ynode(p, pr->value);
		const char *v;
		if (is_null(vn))
			return PERR(p, item, "must be a string (write \"\" for an empty value)");
		rc = scalar_text(p, vn, item, &v);
		if (rc)
			return rc;
		size_t vl = strlen(v);
		if (vl > CONFIG_MAX_ENV_VALUE)
			return PERR(p, item, "value too long (at most %d bytes)",
				    CONFIG_MAX_ENV_VALUE);
		total += strlen(k) + vl;
		if (total > CONFIG_MAX_TEMPLATE_ENV_BYTES)
			return PERR(p, sub, "names and values exceed %u bytes in total",
				    CONFIG_MAX_TEMPLATE_ENV_BYTES);
		t->env[i].key = strdup(k);
		t->env[i].value = strdup(v);
		t->nenv++;
		if (!t->env[i].key || !t->env[i].value)
			return -ENOMEM;
	}
	return 0;
}

static int parse_egress_rule(struct pctx *p, yaml_node_t *rn, const char *path,
			     struct sbx_egress_rule *r)
{
	static const char *const keys[] = { "cidr", "ports", "protocol" };
	char sub[KEYPATH_MAX], item[KEYPATH_MAX], b[SHOWN_MAX], why[128];
	int rc = check_map(p, rn, path, keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	rc = get_str(p, rn, path, "cidr", 64, true, &r->cidr);
	if (rc)
		return rc;
	subkey(sub, sizeof(sub), path, "cidr");
	if (check_cidr(r->cidr, why, sizeof(why)) != 0)
		return PERR(p, sub, "\"%s\" %s", shown(r->cidr, b), why);

	yaml_node_t *ports = mget(p, rn, "ports");
	subkey(sub, sizeof(sub), path, "ports");
	if (ports) {
		if (ports->type != YAML_SEQUENCE_NODE)
			return PERR(p, sub, "expected a list, found %s", kind(ports));
		size_t count = (size_t)(ports->data.sequence.items.top -
					ports->data.sequence.items.start);
		if (count > ARRAY_SIZE(r->ports))
			return PERR(p, sub, "too many ports (at most %zu)", ARRAY_SIZE(r->ports));
		for (size_t i = 0; i < count; i++) {
			subidx(item, sizeof(item), sub, i);
			const char *v;
			uint64_t port;
			rc = scalar_text(p, ynode(p, ports->data.sequence.items.start[i]), item, &v);
			if (rc)
				return rc;
			if (parse_dec(v, 65535, &port) != 0 || port == 0)
				return PERR(p, item, "\"%s\" is not a port number from 1 to 65535",
					    shown(v, b));
			r->ports[r->nports++] = (int)port;
		}
	}
	const char *proto;
	rc = get_text(p, rn, path, "protocol", 8, false, &proto);
	if (rc)
		return rc;
	subkey(sub, sizeof(sub), path, "protocol");
	if (proto && strcmp(proto, "TCP") != 0 && strcmp(proto, "UDP") != 0)
		return PERR(p, sub, "\"%s\" is not TCP or UDP", shown(proto, b));
	if (proto && r->nports == 0)
		return PERR(p, sub,
			    "needs ports (a rule without ports allows every port and protocol)");
	return set_str(&r->protocol, proto ? proto : "TCP");
}

static int parse_network(struct pctx *p, yaml_node_t *tm, const char *path,
			 struct sbx_template *t)
{
	static const char *const keys[] = { "profile", "egress" };
	char sub[KEYPATH_MAX], part[KEYPATH_MAX], item[KEYPATH_MAX], b[SHOWN_MAX];
	subkey(sub, sizeof(sub), path, "network");
	t->network = SBX_NET_NONE;
	yaml_node_t *n = mget(p, tm, "network");
	if (!n)
		return 0;
	int rc = check_map(p, n, sub, keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	const char *profile;
	rc = get_text(p, n, sub, "profile", 16, false, &profile);
	if (rc)
		return rc;
	subkey(part, sizeof(part), sub, "profile");
	if (!profile || strcmp(profile, "none") == 0)
		t->network = SBX_NET_NONE;
	else if (strcmp(profile, "internet") == 0)
		t->network = SBX_NET_INTERNET;
	else if (strcmp(profile, "allowlist") == 0)
		t->network = SBX_NET_ALLOWLIST;
	else
		return PERR(p, part, "\"%s\" is not a network profile (none, internet, allowlist)",
			    shown(profile, b));

	yaml_node_t *eg = mget(p, n, "egress");
	subkey(part, sizeof(part), sub, "egress");
	if (t->network != SBX_NET_ALLOWLIST) {
		if (eg)
			return PERR(p, part, "only allowed with profile allowlist");
		return 0;
	}
	if (!eg)
		return PERR(p, part, "profile allowlist needs at least one rule");
	if (eg->type != YAML_SEQUENCE_NODE)
		return PERR(p, part, "expected a list, found %s", kind(eg));
	size_t count = (size_t)(eg->data.sequence.items.top - eg->data.sequence.items.start);
	if (count == 0)
		return PERR(p, part, "profile allowlist needs at least one rule");
	if (count > CONFIG_MAX_EGRESS)
		return PERR(p, part, "too many rules (at most %d)", CONFIG_MAX_EGRESS);
	t->egress = calloc(count, sizeof(*t->egress));
	if (!t->egress)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		subidx(item, sizeof(item), part, i);
		t->negress++;
		rc = parse_egress_rule(p, ynode(p, eg->data.sequence.items.start[i]), item,
				       &t->egress[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static int parse_lifetime(struct pctx *p, yaml_node_t *tm, const char *path,
			  struct sbx_template *t)
{
	static const char *const keys[] = { "default", "max" };
	char sub[KEYPATH_MAX], part[KEYPATH_MAX];
	subkey(sub, sizeof(sub), path, "lifetime");
	t->default_lifetime_s = DEFAULT_LIFETIME_S;
	t->max_lifetime_s = DEFAULT_MAX_LIFETIME_S;
	yaml_node_t *l = mget(p, tm, "lifetime");
	if (!l)
		return 0;
	int rc = check_map(p, l, sub, keys, ARRAY_SIZE(keys), 0);
	if (!rc)
		rc = get_duration(p, l, sub, "default", 1, CONFIG_MAX_LIFETIME_S,
				  &t->default_lifetime_s);
	if (!rc)
		rc = get_duration(p, l, sub, "max", 1, CONFIG_MAX_LIFETIME_S, &t->max_lifetime_s);
	if (rc)
		return rc;
	if (t->default_lifetime_s > t->max_lifetime_s) {
		subkey(part, sizeof(part), sub, "default");
		return PERR(p, part, "%llds exceeds lifetime.max (%llds)",
			    (long long)t->default_lifetime_s, (long long)t->max_lifetime_s);
	}
	return 0;
}

/* A program in exec.allow or exec.deny: a basename ("python3") or an
 * absolute path without "." or ".." segments, "//" or a trailing '/'. */
static bool valid_program(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 1024 || has_ctl(s))
		return false;
	if (s[0] != '/')
		return strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
	if (s[n - 1] == '/' || strstr(s, "//") || strstr(s, "/./") || strstr(s, "/../"))
		return false;
	return !(n >= 2 && strcmp(s + n - 2, "/.") == 0) &&
	       !(n >= 3 && strcmp(s + n - 3, "/..") == 0);
}

static int parse_programs(struct pctx *p, yaml_node_t *em, const char *path, const char *key,
			  char ***out, size_t *nout)
{
	char sub[KEYPATH_MAX], item[KEYPATH_MAX], b[SHOWN_MAX];
	subkey(sub, sizeof(sub), path, key);
	yaml_node_t *n = mget(p, em, key);
	if (!n)
		return 0;
	if (n->type != YAML_SEQUENCE_NODE)
		return PERR(p, sub, "expected a list of programs, found %s", kind(n));
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count > CONFIG_MAX_PROGRAMS)
		return PERR(p, sub, "too many entries (at most %d)", CONFIG_MAX_PROGRAMS);
	*out = calloc(count ? count : 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		subidx(item, sizeof(item), sub, i);
		const char *v;
		int rc = scalar_text(p, ynode(p, n->data.sequence.items.start[i]), item, &v);
		if (rc)
			return rc;
		if (!valid_program(v))
			return PERR(p, item,
				    "\"%s\" is neither a program name (no '/') nor a canonical absolute path",
				    shown(v, b));
		if (!((*out)[i] = strdup(v)))
			return -ENOMEM;
		(*nout)++;
	}
	return 0;
}

static int get_bytes(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		     int64_t min, int64_t max, size_t *out)
{
	char sub[KEYPATH_MAX];
	int64_t v;
	bool present;
	int rc = get_quantity(p, m, path, key, true, false, true, NULL, &v, &present);
	if (rc || !present)
		return rc;
	subkey(sub, sizeof(sub), path, key);
	if (v < min || v > max)
		return PERR(p, sub, "must be from %lld to %lld bytes", (long long)min,
			    (long long)max);
	*out = (size_t)v;
	return 0;
}

static int parse_exec(struct pctx *p, yaml_node_t *tm, const char *path, struct sbx_template *t)
{
	static const char *const keys[] = { "shell",	       "allow",		  "deny",
					    "max_args",	       "max_arg_bytes",	  "max_argv_bytes",
					    "default_timeout", "max_timeout",	  "default_output",
					    "max_output",      "max_streams",	  "max_file_bytes" };
	char sub[KEYPATH_MAX], part[KEYPATH_MAX], b[SHOWN_MAX];
	subkey(sub, sizeof(sub), path, "exec");
	struct sbx_exec_policy *e = &t->exec;
	e->max_args = 256;
	e->max_arg_bytes = 32u << 10;
	e->max_argv_bytes = 256u << 10;
	e->default_timeout_s = 300;
	e->max_timeout_s = 3600;
	e->default_output_bytes = 1u << 20;
	e->max_output_bytes = 16u << 20;
	e->max_streams = 16;
	e->max_file_bytes = 64u << 20;
	yaml_node_t *em = mget(p, tm, "exec");
	const char *shell = NULL;
	int rc = 0;
	if (em) {
		rc = check_map(p, em, sub, keys, ARRAY_SIZE(keys), 0);
		if (!rc)
			rc = get_text(p, em, sub, "shell", 1024, false, &shell);
		if (rc)
			return rc;
	}
	if (!shell)
		shell = "/bin/sh";
	if (strcmp(shell, "none") != 0) {
		subkey(part, sizeof(part), sub, "shell");
		if (shell[0] != '/' || !valid_program(shell))
			return PERR(p, part, "\"%s\" must be an absolute path or \"none\"",
				    shown(shell, b));
		if (!(e->shell = strdup(shell)))
			return -ENOMEM;
	}
	if (!em)
		return 0;
	uint64_t x = e->max_args;
	if ((rc = parse_programs(p, em, sub, "allow", &e->allow, &e->nallow)) ||
	    (rc = parse_programs(p, em, sub, "deny", &e->deny, &e->ndeny)) ||
	    (rc = get_int(p, em, sub, "max_args", 1, 4096, false, &x)))
		return rc;
	e->max_args = (size_t)x;
	x = (uint64_t)e->max_streams;
	if ((rc = get_int(p, em, sub, "max_streams", 1, 1024, false, &x)))
		return rc;
	e->max_streams = (int)x;
	if ((rc = get_bytes(p, em, sub, "max_arg_bytes", 1, 1 << 20, &e->max_arg_bytes)) ||
	    (rc = get_bytes(p, em, sub, "max_argv_bytes", 1, 1 << 20, &e->max_argv_bytes)) ||
	    (rc = get_bytes(p, em, sub, "default_output", 0, 64 << 20, &e->default_output_bytes)) ||
	    (rc = get_bytes(p, em, sub, "max_output", 0, 64 << 20, &e->max_output_bytes)) ||
	    (rc = get_bytes(p, em, sub, "max_file_bytes", 0, 4LL << 30, &e->max_file_bytes)) ||
	    (rc = get_duration(p, em, sub, "default_timeout", 1, 86400, &e->default_timeout_s)) ||
	    (rc = get_duration(p, em, sub, "max_timeout", 1, 86400, &e->max_timeout_s)))
		return rc;
	if (e->default_timeout_s > e->max_timeout_s) {
		subkey(part, sizeof(part), sub, "default_timeout");
		return PERR(p, part, "exceeds exec.max_timeout");
	}
	if (e->default_output_bytes > e->max_output_bytes) {
		subkey(part, sizeof(part), sub, "default_output");
		return PERR(p, part, "exceeds exec.max_output");
	}
	if (e->max_arg_bytes > e->max_argv_bytes) {
		subkey(part, sizeof(part), sub, "max_arg_bytes");
		return PERR(p, part, "exceeds exec.max_argv_bytes");
	}
	return 0;
}

static int parse_template(struct pctx *p, yaml_node_t *tm, const char *path,
			  struct sbx_template *t)
{
	static const char *const keys[] = { "name",      "image",     "command", "workspace",
					    "tmp_size",  "user",      "group",   "resources",
					    "runtime_class", "env",   "network", "lifetime",
					    "exec" };
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	int rc = check_map(p, tm, path, keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;

	rc = get_str(p, tm, path, "name", 64, true, &t->name);
	if (rc)
		return rc;
	subkey(sub, sizeof(sub), path, "name");
	if (!valid_template_name(t->name))
		return PERR(p, sub,
			    "\"%s\" is not a valid template name (1 to 40 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
			    shown(t->name, b));

	rc = get_str(p, tm, path, "image", 1024, true, &t->image);
	if (rc)
		return rc;
	subkey(sub, sizeof(sub), path, "image");
	if (strpbrk(t->image, " \t"))
		return PERR(p, sub, "must not contain whitespace");

	rc = parse_command(p, tm, path, t);
	if (rc)
		return rc;

	int64_t ws_bytes = 0, tmp_bytes = 0, eph_limit = 0;
	rc = parse_workspace(p, tm, path, t, &ws_bytes);
	if (rc)
		return rc;
	bool present;
	rc = get_quantity(p, tm, path, "tmp_size", true, false, false, &t->tmp_size, &tmp_bytes,
			  &present);
	if (rc)
		return rc;
	if (!present) {
		if (!(t->tmp_size = strdup(DEFAULT_TMP_SIZE)))
			return -ENOMEM;
		tmp_bytes = 64 << 20;
	}

	static const char *const ids[] = { "user", "group" };
	int64_t *idv[] = { &t->run_as_user, &t->run_as_group };
	for (int i = 0; i < 2; i++) {
		const char *v;
		rc = get_text(p, tm, path, ids[i], 32, false, &v);
		if (rc)
			return rc;
		subkey(sub, sizeof(sub), path, ids[i]);
		if (!v)
			return PERR(p, sub, "missing (a non-zero %cID; sandboxes never run as root)",
				    i ? 'G' : 'U');
		uint64_t x = 0;
		if (parse_dec(v, UINT64_MAX, &x) == 0 && x == 0)
			return PERR(p, sub,
				    "must be a positive integer (not 0): root is never allowed");
		if (parse_dec(v, 2147483647, &x) != 0)
			return PERR(p, sub, "\"%s\" is not a positive integer from 1 to 2147483647",
				    shown(v, b));
		*idv[i] = (int64_t)x;
	}

	rc = parse_resources(p, tm, path, t, &eph_limit);
	if (rc)
		return rc;
	if (ws_bytes > eph_limit - tmp_bytes) {
		keyf(sub, sizeof(sub), "%s.resources.limits.ephemeral-storage", path);
		return PERR(p, sub,
			    "%s is less than workspace.size + tmp_size (%s + %s): the kubelet would evict the sandbox before its volumes are full",
			    t->ephemeral_limit, t->workspace_size, t->tmp_size);
	}

	rc = get_str(p, tm, path, "runtime_class", 253, false, &t->runtime_class);
	if (rc)
		return rc;
	subkey(sub, sizeof(sub), path, "runtime_class");
	if (t->runtime_class && !valid_dns_subdomain(t->runtime_class))
		return PERR(p, sub, "\"%s\" is not a valid RuntimeClass name",
			    shown(t->runtime_class, b));

	rc = parse_env(p, tm, path, t);
	if (!rc)
		rc = parse_network(p, tm, path, t);
	if (!rc)
		rc = parse_lifetime(p, tm, path, t);
	if (!rc)
		rc = parse_exec(p, tm, path, t);
	return rc;
}

static int parse_templates(struct pctx *p, yaml_node_t *root, struct sbx_config *cfg)
{
	char item[KEYPATH_MAX];
	yaml_node_t *n = mget(p, root, "templates");
	if (!n)
		return PERR(p, "templates", "at least one template is required");
	if (n->type != YAML_SEQUENCE_NODE)
		return PERR(p, "templates", "expected a list, found %s", kind(n));
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count == 0)
		return PERR(p, "templates", "at least one template is required");
	if (count > CONFIG_MAX_TEMPLATES)
		return PERR(p, "templates", "too many templates (at most %d)",
			    CONFIG_MAX_TEMPLATES);
	cfg->templates = calloc(count, sizeof(*cfg->templates));
	if (!cfg->templates)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		subidx(item, sizeof(item), "templates", i);
		struct sbx_template *t = &cfg->templates[i];
		cfg->ntemplates++;
		int rc = parse_template(p, ynode(p, n->data.sequence.items.start[i]), item, t);
		if (rc)
			return rc;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(cfg->templates[j].name, t->name) == 0) {
				char sub[KEYPATH_MAX];
				subkey(sub, sizeof(sub), item, "name");
				return PERR(p, sub, "duplicate template name \"%s\" (also templates[%zu])",
					    t->name, j);
			}
		}
	}
	return 0;
}

static int get_bool(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		    bool *out);
static int get_path(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		    char **out);

/* A positive decimal (a rate or a burst) at m.key, at most max. */
static int get_positive(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
			double max, double *out)
{
	const char *v;
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	int rc = get_text(p, m, path, key, 32, false, &v);
	if (rc || !v)
		return rc;
	subkey(sub, sizeof(sub), path, key);
	char *end = NULL;
	double x = strtod(v, &end);
	if (!*v || *end || !(x > 0) || x > max)
		return PERR(p, sub, "\"%s\" must be a number above 0 and at most %g", shown(v, b),
			    max);
	*out = x;
	return 0;
}

static int parse_rate(struct pctx *p, yaml_node_t *r, struct sbx_config *cfg)
{
	static const char *const keys[] = { "per_principal", "per_address", "max_keys",
					    "enabled" };
	static const char *const bucket[] = { "rate", "burst" };
	if (!r)
		return 0;
	int rc = check_map(p, r, "limits.rate", keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	rc = get_bool(p, r, "limits.rate", "enabled", &cfg->rate_enabled);
	if (rc)
		return rc;
	uint64_t x = cfg->rate_max_keys;
	rc = get_int(p, r, "limits.rate", "max_keys", 1, 1u << 24, false, &x);
	if (rc)
		return rc;
	cfg->rate_max_keys = (size_t)x;
	struct {
		const char *name;
		double *rate, *burst;
	} b[] = {
		{ "per_principal", &cfg->rate_principal, &cfg->rate_principal_burst },
		{ "per_address", &cfg->rate_address, &cfg->rate_address_burst },
	};
	for (size_t i = 0; i < ARRAY_SIZE(b); i++) {
		char sub[KEYPATH_MAX];
		subkey(sub, sizeof(sub), "limits.rate", b[i].name);
		yaml_node_t *m = mget(p, r, b[i].name);
		if (!m)
			continue;
		if ((rc = check_map(p, m, sub, bucket, ARRAY_SIZE(bucket), 0)) != 0 ||
		    (rc = get_positive(p, m, sub, "rate", 1e6, b[i].rate)) != 0 ||
		    (rc = get_positive(p, m, sub, "burst", 1e6, b[i].burst)) != 0)
			return rc;
		if (*b[i].burst < 1)
			return PERR(p, sub, "burst must be at least 1");
	}
	return 0;
}

static int parse_quota(struct pctx *p, yaml_node_t *m, const char *path, struct sbx_quota *q)
{
	static const char *const keys[] = { "sandboxes", "cpu", "memory", "exec_streams" };
	int rc = check_map(p, m, path, keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	uint64_t n = (uint64_t)q->sandboxes;
	rc = get_int(p, m, path, "sandboxes", 0, 1000000, false, &n);
	if (rc)
		return rc;
	q->sandboxes = (int64_t)n;
	n = (uint64_t)q->exec_streams;
	rc = get_int(p, m, path, "exec_streams", 0, 1000000, false, &n);
	if (rc)
		return rc;
	q->exec_streams = (int64_t)n;
	bool present;
	if ((rc = get_quantity(p, m, path, "cpu", false, false, true, NULL, &q->cpu_milli,
			       &present)) != 0)
		return rc;
	return get_quantity(p, m, path, "memory", true, false, true, NULL, &q->memory_bytes,
			    &present);
}

/* trusted_proxies, audit, tls, quotas */
static int parse_security(struct pctx *p, yaml_node_t *root, struct sbx_config *cfg)
{
	char item[KEYPATH_MAX];
	int rc;
	yaml_node_t *n = mget(p, root, "trusted_proxies");
	if (n && !is_null(n)) {
		if (n->type != YAML_SEQUENCE_NODE)
			return PERR(p, "trusted_proxies", "expected a list of CIDRs, found %s", kind(n));
		size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
		if (count > 256)
			return PERR(p, "trusted_proxies", "too many entries (at most 256)");
		cfg->trusted_proxies = calloc(count + 1, sizeof(char *));
		if (!cfg->trusted_proxies)
			return -ENOMEM;
		for (size_t i = 0; i < count; i++) {
			subidx(item, sizeof(item), "trusted_proxies", i);
			const char *v;
			if ((rc = scalar_text(p, ynode(p, n->data.sequence.items.start[i]), item, &v)))
				return rc;
			if (!*v || strlen(v) > 64)
				return PERR(p, item, "must be an address or CIDR");
			if (!(cfg->trusted_proxies[i] = strdup(v)))
				return -ENOMEM;
			cfg->ntrusted_proxies++;
		}
	}
	n = mget(p, root, "audit");
	if (n) {
		static const char *const keys[] = { "destination", "argv" };
		if ((rc = check_map(p, n, "audit", keys, ARRAY_SIZE(keys), 0)) != 0)
			return rc;
		if ((rc = get_str(p, n, "audit", "destination", 4096, false,
				  &cfg->audit_destination)) != 0)
			return rc;
		const char *d = cfg->audit_destination;
		if (strcmp(d, "stdout") != 0 && strcmp(d, "stderr") != 0 && d[0] != '/')
			return PERR(p, "audit.destination", "must be stdout, stderr or an absolute path");
		const char *v;
		if ((rc = get_text(p, n, "audit", "argv", 16, false, &v)) != 0)
			return rc;
		if (v) {
			static const char *const modes[] = { "full", "redacted", "hashed" };
			cfg->audit_argv = -1;
			for (int i = 0; i < 3; i++)
				if (strcmp(v, modes[i]) == 0)
					cfg->audit_argv = i;
			if (cfg->audit_argv < 0)
				return PERR(p, "audit.argv", "must be full, redacted or hashed");
		}
	}
	n = mget(p, root, "tls");
	if (n) {
		static const char *const keys[] = { "cert_file", "key_file", "client_ca_file" };
		if ((rc = check_map(p, n, "tls", keys, ARRAY_SIZE(keys), 0)) != 0 ||
		    (rc = get_path(p, n, "tls", "cert_file", &cfg->tls_cert_file)) != 0 ||
		    (rc = get_path(p, n, "tls", "key_file", &cfg->tls_key_file)) != 0 ||
		    (rc = get_path(p, n, "tls", "client_ca_file", &cfg->tls_client_ca_file)) != 0)
			return rc;
		if (!cfg->tls_cert_file != !cfg->tls_key_file)
			return PERR(p, "tls", "cert_file and key_file go together");
		if (cfg->tls_client_ca_file && !cfg->tls_cert_file)
			return PERR(p, "tls.client_ca_file",
				    "client certificates need TLS: set tls.cert_file and tls.key_file");
	}
	n = mget(p, root, "quotas");
	if (n) {
		static const char *const keys[] = { "default", "tenants" };
		if ((rc = check_map(p, n, "quotas", keys, ARRAY_SIZE(keys), 0)) != 0)
			return rc;
		yaml_node_t *d = mget(p, n, "default");
		if (d && (rc = parse_quota(p, d, "quotas.default", &cfg->quota)) != 0)
			return rc;
		yaml_node_t *t = mget(p, n, "tenants");
		if (t) {
			if (t->type != YAML_MAPPING_NODE)
				return PERR(p, "quotas.tenants", "expected a mapping of tenant: quota");
			size_t count = (size_t)(t->data.mapping.pairs.top - t->data.mapping.pairs.start);
			if (count > 10000)
				return PERR(p, "quotas.tenants", "too many tenants (at most 10000)");
			cfg->tenant_quotas = calloc(count ? count : 1, sizeof(*cfg->tenant_quotas));
			if (!cfg->tenant_quotas)
				return -ENOMEM;
			for (yaml_node_pair_t *pr = t->data.mapping.pairs.start;
			     pr < t->data.mapping.pairs.top; pr++) {
				const char *name;
				if ((rc = scalar_text(p, ynode(p, pr->key), "quotas.tenants", &name)))
					return rc;
				subkey(item, sizeof(item), "quotas.tenants", name);
				struct sbx_tenant_quota *tq = &cfg->tenant_quotas[cfg->ntenant_quotas];
				if (!(tq->tenant = strdup(name)))
					return -ENOMEM;
				cfg->ntenant_quotas++;
				tq->q = cfg->quota; /* unset fields inherit the default */
				if ((rc = parse_quota(p, ynode(p, pr->value), item, &tq->q)))
					return rc;
			}
		}
	}
	return 0;
}

const struct sbx_quota *config_quota(const struct sbx_config *cfg, const char *tenant)
{
	for (size_t i = 0; i < cfg->ntenant_quotas; i++)
		if (strcmp(cfg->tenant_quotas[i].tenant, tenant) == 0)
			return &cfg->tenant_quotas[i].q;
	return &cfg->quota;
}

static int parse_limits(struct pctx *p, yaml_node_t *root, struct sbx_config *cfg)
{
	static const char *const keys[] = { "max_body_bytes", "max_env_vars", "max_env_bytes",
					    "max_labels", "create_timeout", "rate",
					    "max_exec_streams" };
	yaml_node_t *l = mget(p, root, "limits");
	if (!l)
		return 0;
	int rc = check_map(p, l, "limits", keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	int64_t v;
	bool present;
	rc = get_quantity(p, l, "limits", "max_body_bytes", true, false, false, NULL, &v,
			  &present);
	if (rc)
		return rc;
	if (present) {
		if (v < 1024 || v > (64 << 20))
			return PERR(p, "limits.max_body_bytes", "must be from 1Ki to 64Mi");
		cfg->max_body_bytes = (size_t)v;
	}
	rc = get_quantity(p, l, "limits", "max_env_bytes", true, false, true, NULL, &v,
			  &present);
	if (rc)
		return rc;
	if (present) {
		if (v > (1 << 20))
			return PERR(p, "limits.max_env_bytes", "must be at most 1Mi");
		cfg->max_env_bytes = (size_t)v;
	}
	uint64_t x = cfg->max_env_vars;
	rc = get_int(p, l, "limits", "max_env_vars", 0, 1024, false, &x);
	if (rc)
		return rc;
	cfg->max_env_vars = (size_t)x;
	x = cfg->max_labels;
	rc = get_int(p, l, "limits", "max_labels", 0, 64, false, &x);
	if (rc)
		return rc;
	cfg->max_labels = (size_t)x;
	x = (uint64_t)cfg->max_exec_streams;
	rc = get_int(p, l, "limits", "max_exec_streams", 1, 100000, false, &x);
	if (rc)
		return rc;
	cfg->max_exec_streams = (int)x;
	int64_t s = cfg->create_timeout_s;
	rc = get_duration(p, l, "limits", "create_timeout", 1, 3600, &s);
	cfg->create_timeout_s = (int)s;
	if (rc)
		return rc;
	return parse_rate(p, mget(p, l, "rate"), cfg);
}

/* ---- auth ---- */

/* A file path at m.key: not empty, at most 4096 bytes, no control
 * characters. */
static int get_path(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		    char **out)
{
	return get_str(p, m, path, key, 4096, false, out);
}

/* true or false (YAML 1.2's booleans; yes/no/on/off are refused rather than
 * guessed, since YAML 1.1 and 1.2 disagree on them). */
static int get_bool(struct pctx *p, yaml_node_t *m, const char *path, const char *key,
		    bool *out)
{
	const char *v;
	char sub[KEYPATH_MAX], b[SHOWN_MAX];
	int rc = get_text(p, m, path, key, 16, false, &v);
	if (rc || !v)
		return rc;
	subkey(sub, sizeof(sub), path, key);
	if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0)
		*out = true;
	else if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0 || strcmp(v, "FALSE") == 0)
		*out = false;
	else
		return PERR(p, sub, "\"%s\" is not a boolean (true or false)", shown(v, b));
	return 0;
}

static int parse_auth_jwt(struct pctx *p, yaml_node_t *j, struct sbx_auth_config *a)
{
	static const char *const keys[] = { "hs256_secret_file", "public_keys", "jwks_file",
					    "issuer",            "audience",    "tenant_claim",
					    "leeway" };
	static const char *const path = "auth.jwt";
	char sub[KEYPATH_MAX], item[KEYPATH_MAX];
	int rc = check_map(p, j, path, keys, ARRAY_SIZE(keys), 0);
	if (!rc)
		rc = get_path(p, j, path, "hs256_secret_file", &a->jwt_hs256_secret_file);
	if (!rc)
		rc = get_path(p, j, path, "jwks_file", &a->jwt_jwks_file);
	if (!rc)
		rc = get_str(p, j, path, "issuer", 1024, false, &a->jwt_issuer);
	if (!rc)
		rc = get_str(p, j, path, "audience", 1024, false, &a->jwt_audience);
	if (!rc)
		rc = get_str(p, j, path, "tenant_claim", 128, false, &a->jwt_tenant_claim);
	if (!rc)
		rc = get_duration(p, j, path, "leeway", 0, 600, &a->jwt_leeway_s);
	if (rc)
		return rc;

	yaml_node_t *pk = mget(p, j, "public_keys");
	subkey(sub, sizeof(sub), path, "public_keys");
	if (!pk)
		return 0;
	if (pk->type != YAML_SEQUENCE_NODE)
		return PERR(p, sub, "expected a list of PEM file paths, found %s", kind(pk));
	size_t count = (size_t)(pk->data.sequence.items.top - pk->data.sequence.items.start);
	if (count > CONFIG_MAX_JWT_PUBLIC_KEYS)
		return PERR(p, sub, "too many files (at most %d)", CONFIG_MAX_JWT_PUBLIC_KEYS);
	a->jwt_public_keys = calloc(count ? count : 1, sizeof(*a->jwt_public_keys));
	if (!a->jwt_public_keys)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		subidx(item, sizeof(item), sub, i);
		const char *v;
		rc = scalar_text(p, ynode(p, pk->data.sequence.items.start[i]), item, &v);
		if (rc)
			return rc;
		if (!*v || strlen(v) > 4096 || has_ctl(v))
			return PERR(p, item,
				    "must be a file path (not empty, at most 4096 bytes, no control characters)");
		for (size_t k = 0; k < i; k++)
			if (strcmp(a->jwt_public_keys[k], v) == 0)
				return PERR(p, item, "the same file as %s[%zu]", sub, k);
		if (!(a->jwt_public_keys[i] = strdup(v)))
			return -ENOMEM;
		a->njwt_public_keys++;
	}
	return 0;
}

bool config_valid_client_cn(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > CONFIG_CLIENT_CN_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '@' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* auth.client_certs: [{subject_cn, tenant, scopes: [...]}]. The scope names
 * are checked by auth_new, which knows them. */
static int parse_client_certs(struct pctx *p, yaml_node_t *n, struct sbx_auth_config *a)
{
	static const char *const keys[] = { "subject_cn", "tenant", "scopes" };
	static const char *const path = "auth.client_certs";
	char item[KEYPATH_MAX], sub[KEYPATH_MAX], one[KEYPATH_MAX], b[SHOWN_MAX];
	if (n->type != YAML_SEQUENCE_NODE)
		return PERR(p, path, "expected a list of {subject_cn, tenant, scopes}, found %s",
			    kind(n));
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count > CONFIG_MAX_CLIENT_CERTS)
		return PERR(p, path, "too many entries (at most %d)", CONFIG_MAX_CLIENT_CERTS);
	a->client_certs = calloc(count ? count : 1, sizeof(*a->client_certs));
	if (!a->client_certs)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		subidx(item, sizeof(item), path, i);
		yaml_node_t *e = ynode(p, n->data.sequence.items.start[i]);
		struct sbx_client_cert *cc = &a->client_certs[i];
		a->nclient_certs++;
		int rc = check_map(p, e, item, keys, ARRAY_SIZE(keys), 0);
		if (!rc)
			rc = get_str(p, e, item, "subject_cn", 256, true, &cc->subject_cn);
		if (!rc)
			rc = get_str(p, e, item, "tenant", 256, true, &cc->tenant);
		if (rc)
			return rc;
		subkey(sub, sizeof(sub), item, "subject_cn");
		if (!config_valid_client_cn(cc->subject_cn))
			return PERR(p, sub, "\"%s\" is not 1 to %d of [A-Za-z0-9._@:-]",
				    shown(cc->subject_cn, b), CONFIG_CLIENT_CN_MAX);
		for (size_t k = 0; k < i; k++)
			if (strcmp(a->client_certs[k].subject_cn, cc->subject_cn) == 0)
				return PERR(p, sub, "the same subject_cn as %s[%zu]", path, k);
		subkey(sub, sizeof(sub), item, "tenant");
		if (!config_valid_label_n(cc->tenant, strlen(cc->tenant), 63))
			return PERR(p, sub, "\"%s\" is not a tenant name ([a-z0-9-], at most 63, a letter or digit at both ends)",
				    shown(cc->tenant, b));
		yaml_node_t *sc = mget(p, e, "scopes");
		subkey(sub, sizeof(sub), item, "scopes");
		if (!sc)
			return PERR(p, sub, "missing");
		if (sc->type != YAML_SEQUENCE_NODE)
			return PERR(p, sub, "expected a list of scope names, found %s", kind(sc));
		size_t ns = (size_t)(sc->data.sequence.items.top - sc->data.sequence.items.start);
		if (ns == 0 || ns > 16)
			return PERR(p, sub, "list 1 to 16 scopes");
		cc->scopes = calloc(ns, sizeof(*cc->scopes));
		if (!cc->scopes)
			return -ENOMEM;
		for (size_t k = 0; k < ns; k++) {
			subidx(one, sizeof(one), sub, k);
			const char *v;
			rc = scalar_text(p, ynode(p, sc->data.sequence.items.start[k]), one, &v);
			if (rc)
				return rc;
			if (!(cc->scopes[k] = strdup(v)))
				return -ENOMEM;
			cc->nscopes++;
		}
	}
	return 0;
}

static int parse_auth(struct pctx *p, yaml_node_t *root, struct sbx_config *cfg)
{
	static const char *const keys[] = { "api_keys_file", "jwt", "scoped_token_secret_file",
					    "insecure_dev_mode", "client_certs" };
	struct sbx_auth_config *a = &cfg->auth;
	yaml_node_t *n = mget(p, root, "auth");
	if (!n)
		return 0;
	int rc = check_map(p, n, "auth", keys, ARRAY_SIZE(keys), 0);
	if (!rc)
		rc = get_path(p, n, "auth", "api_keys_file", &a->api_keys_file);
	if (!rc)
		rc = get_path(p, n, "auth", "scoped_token_secret_file",
			      &a->scoped_token_secret_file);
	if (!rc)
		rc = get_bool(p, n, "auth", "insecure_dev_mode", &a->insecure_dev_mode);
	if (rc)
		return rc;
	yaml_node_t *cc = mget(p, n, "client_certs");
	if (cc && (rc = parse_client_certs(p, cc, a)) != 0)
		return rc;
	yaml_node_t *j = mget(p, n, "jwt");
	return j ? parse_auth_jwt(p, j, a) : 0;
}

static void auth_config_release(struct sbx_auth_config *a)
{
	free(a->api_keys_file);
	free(a->jwt_hs256_secret_file);
	for (size_t i = 0; i < a->njwt_public_keys; i++)
		free(a->jwt_public_keys[i]);
	free(a->jwt_public_keys);
	free(a->jwt_jwks_file);
	free(a->jwt_issuer);
	free(a->jwt_audience);
	free(a->jwt_tenant_claim);
	free(a->scoped_token_secret_file);
	for (size_t i = 0; i < a->nclient_certs; i++) {
		free(a->client_certs[i].subject_cn);
		free(a->client_certs[i].tenant);
		for (size_t k = 0; k < a->client_certs[i].nscopes; k++)
			free(a->client_certs[i].scopes[k]);
		free(a->client_certs[i].scopes);
	}
	free(a->client_certs);
}

int config_check_credentials(const struct sbx_config *cfg, char *err, size_t errlen)
{
	const struct sbx_auth_config *a = &cfg->auth;
	if (a->nclient_certs && !cfg->tls_client_ca_file) {
		if (errlen)
			snprintf(err, errlen,
				 "auth.client_certs: client certificates are only asked for with tls.client_ca_file (and tls.cert_file, tls.key_file)");
		return -EINVAL;
	}
	if (cfg->tls_client_ca_file && !a->nclient_certs) {
		if (errlen)
			snprintf(err, errlen,
				 "tls.client_ca_file: no certificate subject is mapped to a tenant: list them in auth.client_certs");
		return -EINVAL;
	}
	if (a->api_keys_file || a->jwt_hs256_secret_file || a->jwt_hs256_secret_env ||
	    a->njwt_public_keys || a->jwt_jwks_file || a->insecure_dev_mode || a->nclient_certs)
		return 0;
	if (errlen)
		snprintf(err, errlen,
			 "auth: no credentials are configured, so no request could be authenticated: set auth.api_keys_file (keys made with \"sandbox-controller keygen\"), or auth.jwt.hs256_secret_file, auth.jwt.public_keys or auth.jwt.jwks_file (or the SBX_JWT_HS256_SECRET variable), or auth.client_certs with tls.client_ca_file; for local development only, \"auth: {insecure_dev_mode: true}\" serves every request as an anonymous admin (docs/authentication.md)");
	return -EINVAL;
}

static int parse_root(struct pctx *p, yaml_node_t *root, struct sbx_config *cfg)
{
	static const char *const keys[] = { "namespace", "listen",    "kubernetes",
					    "limits",    "log",       "templates",
					    "auth",      "trusted_proxies", "audit",
					    "tls",       "quotas" };
	static const char *const sections[] = { "listen", "kubernetes", "log" };
	if (is_null(root))
		return PERR(p, "templates", "at least one template is required");
	int rc = check_map(p, root, "", keys, ARRAY_SIZE(keys), 0);
	if (rc)
		return rc;
	/* check each settings section's keys first: "listen.prot: unknown key"
	 * is a better message than silence */
	for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
		yaml_node_t *m = mget(p, root, sections[s]);
		const char *allowed[4];
		size_t n = 0;
		for (size_t i = 0; i < ARRAY_SIZE(settings); i++)
			if (settings[i].section && strcmp(settings[i].section, sections[s]) == 0)
				allowed[n++] = settings[i].key;
		if (m && (rc = check_map(p, m, sections[s], allowed, n, 0)) != 0)
			return rc;
	}
	for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
		const struct setting *st = &settings[i];
		yaml_node_t *m = st->section ? mget(p, root, st->section) : root;
		if (!m)
			continue;
		char key[KEYPATH_MAX];
		subkey(key, sizeof(key), st->section ? st->section : "", st->key);
		const char *v;
		rc = get_text(p, m, st->section ? st->section : "", st->key, 4096, false, &v);
		if (!rc && v)
			rc = st->set(cfg, v, key, p->err, p->errlen);
		if (rc)
			return rc;
	}
	rc = parse_limits(p, root, cfg);
	if (!rc)
		rc = parse_auth(p, root, cfg);
	if (!rc)
		rc = parse_security(p, root, cfg);
	if (!rc)
		rc = parse_templates(p, root, cfg);
	return rc;
}

/* ---- public ---- */

void config_free(struct sbx_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->namespace);
	free(cfg->listen_address);
	free(cfg->kubeconfig);
	free(cfg->kube_context);
	free(cfg->log_level);
	free(cfg->log_format);
	for (size_t i = 0; i < cfg->ntemplates; i++)
		template_release(&cfg->templates[i]);
	free(cfg->templates);
	auth_config_release(&cfg->auth);
	for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
		free(cfg->trusted_proxies[i]);
	free(cfg->trusted_proxies);
	free(cfg->audit_destination);
	free(cfg->tls_cert_file);
	free(cfg->tls_key_file);
	free(cfg->tls_client_ca_file);
	for (size_t i = 0; i < cfg->ntenant_quotas; i++)
		free(cfg->tenant_quotas[i].tenant);
	free(cfg->tenant_quotas);
	free(cfg);
}

static struct sbx_config *config_defaults(void)
{
	struct sbx_config *cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return NULL;
	cfg->namespace = strdup(DEFAULT_NAMESPACE);
	cfg->listen_address = strdup(DEFAULT_LISTEN);
	cfg->log_level = strdup("info");
	cfg->log_format = strdup("json");
	cfg->port = DEFAULT_PORT;
	cfg->max_body_bytes = 1u << 20;
	cfg->max_env_vars = 64;
	cfg->max_env_bytes = 32u << 10;
	cfg->max_labels = 16;
	cfg->create_timeout_s = 120;
	cfg->max_exec_streams = 1024;
	cfg->rate_enabled = true;
	cfg->rate_principal = 20;
	cfg->rate_principal_burst = 40;
	cfg->rate_address = 1;
	cfg->rate_address_burst = 20;
	cfg->rate_max_keys = 10000;
	cfg->auth.jwt_tenant_claim = strdup("tenant");
	cfg->auth.jwt_leeway_s = 30;
	cfg->audit_destination = strdup("stdout");
	if (!cfg->namespace || !cfg->listen_address || !cfg->log_level || !cfg->log_format ||
	    !cfg->auth.jwt_tenant_claim || !cfg->audit_destination) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

int config_parse(const char *yaml, size_t len, struct sbx_config **out, char *err,
		 size_t errlen)
{
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	if (len > CONFIG_MAX_FILE) {
		snprintf(err, errlen, "configuration: larger than %u bytes", CONFIG_MAX_FILE);
		return -EFBIG;
	}
	int drc = yaml_check_depth(yaml, len, CONFIG_MAX_DEPTH, err, errlen);
	if (drc)
		return drc;
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "invalid YAML at line %zu column %zu: %s",
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "parse error");
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	int rc = 0;
	struct sbx_config *cfg = NULL;
	/* a second document would be silently ignored: refuse it instead */
	yaml_document_t extra;
	if (!yaml_parser_load(&parser, &extra)) {
		snprintf(err, errlen, "invalid YAML at line %zu column %zu: %s",
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "parse error");
		rc = -EINVAL;
		goto out;
	}
	bool more = yaml_document_get_root_node(&extra) != NULL;
	yaml_document_delete(&extra);
	if (more) {
		snprintf(err, errlen, "configuration: more than one YAML document");
		rc = -EINVAL;
		goto out;
	}
	cfg = config_defaults();
	if (!cfg) {
		rc = -ENOMEM;
		goto out;
	}
	struct pctx p = { .doc = &doc, .err = err, .errlen = errlen };
	rc = parse_root(&p, yaml_document_get_root_node(&doc), cfg);
out:
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "configuration: out of memory");
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}

const struct sbx_template *config_template(const struct sbx_config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (size_t i = 0; i < cfg->ntemplates; i++)
		if (strcmp(cfg->templates[i].name, name) == 0)
			return &cfg->templates[i];
	return NULL;
}

/* ---- environment and flags ---- */

static int apply_env(struct sbx_config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
		const char *v = getenv(settings[i].env);
		if (!v || !*v)
			continue;
		int rc = settings[i].set(cfg, v, settings[i].env, err, errlen);
		if (rc)
			return rc;
	}
	/* the secret itself stays in the environment until auth_new reads it:
	 * the configuration never holds a secret */
	const char *hs = getenv("SBX_JWT_HS256_SECRET");
	if (hs && *hs) {
		if (cfg->auth.jwt_hs256_secret_file)
			return cfg_err(err, errlen, "SBX_JWT_HS256_SECRET",
				       "auth.jwt.hs256_secret_file is set too: use one of them");
		cfg->auth.jwt_hs256_secret_env = true;
	}
	const char *dev = getenv("SBX_INSECURE_DEV_MODE");
	if (dev && *dev)
		return cfg_err(err, errlen, "SBX_INSECURE_DEV_MODE",
			       "not supported: the insecure development mode can only be turned on in the configuration file (auth: {insecure_dev_mode: true})");
	return 0;
}

/* Flags the caller (main.c) handles; accepted and ignored here. */
static const char *const caller_flags[] = { "--help", "-h", "--version", "--check" };

/*
 * Walk argv. With cfg NULL, only check it and find --config (into *config);
 * with cfg, apply every setting flag. Accepts "--flag VALUE" and
 * "--flag=VALUE"; refuses unknown flags and positional arguments.
 */
static int scan_flags(int argc, char **argv, struct sbx_config *cfg, const char **config,
		      char *err, size_t errlen)
{
	char b[SHOWN_MAX], key[SHOWN_MAX + 8];
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		bool ignored = false;
		for (size_t c = 0; c < ARRAY_SIZE(caller_flags); c++)
			ignored = ignored || strcmp(arg, caller_flags[c]) == 0;
		if (ignored)
			continue;
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
			return cfg_err(err, errlen, shown(arg, b),
				       arg[0] == '-' ? "unknown flag" : "unexpected argument");
		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const struct setting *st = NULL;
		bool is_config = nlen == 6 && strncmp(name, "config", 6) == 0;
		for (size_t s = 0; s < ARRAY_SIZE(settings) && !is_config && !st; s++)
			if (strlen(settings[s].flag) == nlen &&
			    strncmp(name, settings[s].flag, nlen) == 0)
				st = &settings[s];
		snprintf(key, sizeof(key), "--%.*s", (int)(nlen < 64 ? nlen : 64), name);
		if (!st && !is_config)
			return cfg_err(err, errlen, shown(key, b), "unknown flag");
		const char *v;
		if (eq) {
			v = eq + 1;
		} else {
			if (i + 1 >= argc)
				return cfg_err(err, errlen, key, "needs a value");
			v = argv[++i];
		}
		if (is_config) {
			if (!*v)
				return cfg_err(err, errlen, key, "needs a file path");
			if (config)
				*config = v;
			continue;
		}
		if (cfg) {
			int rc = st->set(cfg, v, key, err, errlen);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int config_load(const char *path, int argc, char **argv, struct sbx_config **out, char *err,
		size_t errlen)
{
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	const char *file = path;
	int rc = scan_flags(argc, argv, NULL, &file, err, errlen);
	if (rc)
		return rc;
	struct sbx_config *cfg = NULL;
	if (file) {
		char *data = NULL;
		size_t len = 0;
		rc = read_file_bounded(file, CONFIG_MAX_FILE, &data, &len);
		if (rc) {
			snprintf(err, errlen, "%s: cannot read: %s", file,
				 rc == -EFBIG ? "larger than 1 MiB" : strerror(-rc));
			return rc;
		}
		char inner[512];
		rc = config_parse(data, len, &cfg, inner, sizeof(inner));
		free(data);
		if (rc) {
			snprintf(err, errlen, "%s: %s", file, inner);
			return rc;
		}
	} else {
		rc = config_parse("", 0, &cfg, err, errlen);
		if (rc) {
			snprintf(err, errlen,
				 "templates: at least one template is required (no configuration file: use --config FILE)");
			return rc;
		}
	}
	rc = apply_env(cfg, err, errlen);
	if (!rc)
		rc = scan_flags(argc, argv, cfg, NULL, err, errlen);
	if (rc) {
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}
