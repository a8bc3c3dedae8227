/*
 * router: (method, path) -> route id and path parameters (see router.h).
 *
 * Pure and allocation-free: patterns are walked segment by segment on every
 * match, which for the few dozen routes of the API costs less than copying
 * them into a compiled form would save.
 *
 * Policies (the header's contract leaves these to us):
 * - A path is "/" or "/" seg ("/" seg)*. An empty segment inside the path
 *   ("/a//b"), a "." or ".." segment, a control character (< 0x20, 0x7f), a
 *   segment longer than a parameter can hold (255 bytes) or a path longer than
 *   ROUTER_MAX_PATH is ROUTER_BAD_PATH.
 * - A trailing slash is not stripped and is not an error: "/v1/sandboxes/"
 *   simply matches no pattern (ROUTER_NOT_FOUND), even when "/v1/sandboxes"
 *   exists. No redirects.
 * - Literal segments compare byte for byte (case-sensitive). Bytes >= 0x80
 *   (UTF-8) are ordinary characters.
 * - When several patterns with the requested method match, the most specific
 *   wins: at the first segment where they differ, a literal beats a
 *   parameter ("/v1/sandboxes/search" beats "/v1/sandboxes/{id}"); equal
 *   shapes go to the first in the table.
 * - HEAD is served by a GET route when no HEAD route matches; "HEAD" is then
 *   listed in Allow next to "GET". OPTIONS gets no special treatment: without
 *   an OPTIONS route it is METHOD_NOT_ALLOWED with the Allow list, which is
 *   what a caller answering OPTIONS itself (204 + Allow) needs.
 * - Allow lists methods in a fixed order (GET, HEAD, POST, PUT, PATCH,
 *   DELETE, OPTIONS, then others in table order), each once.
 * - A pattern with more than ROUTER_MAX_PARAMS parameters, or a malformed
 *   one ("{id", "{}"), never matches: a programming error that fails closed.
 */
#include "router.h"

#include <stdbool.h>
#include <string.h>

#define PARAM_MAX_LEN (sizeof(((struct route_match *)0)->params[0].value) - 1)

/* One segment of a path or pattern: [p, p + len). */
struct seg {
	const char *p;
	size_t len;
};

/* Next segment after *pos (which points at a '/' or at the NUL). Returns
 * false at the end. */
static bool next_seg(const char **pos, struct seg *s)
{
	const char *p = *pos;
	if (*p != '/')
		return false;
	p++;
	const char *e = strchr(p, '/');
	if (!e)
		e = p + strlen(p);
	s->p = p;
	s->len = (size_t)(e - p);
	*pos = e;
	return true;
}

/* "{name}" with a non-empty name free of braces */
static bool seg_is_param(const struct seg *s)
{
	return s->len >= 3 && s->p[0] == '{' && s->p[s->len - 1] == '}' &&
	       !memchr(s->p + 1, '{', s->len - 2) && !memchr(s->p + 1, '}', s->len - 2);
}

/* Check the path against the policies above. Returns ROUTER_MATCH when it is
 * well formed, ROUTER_NOT_FOUND for a trailing slash (which no pattern can
 * match), ROUTER_BAD_PATH otherwise. */
static enum router_result check_path(const char *path)
{
	if (!path || path[0] != '/')
		return ROUTER_BAD_PATH;
	size_t len = strlen(path);
	if (len > ROUTER_MAX_PATH)
		return ROUTER_BAD_PATH;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)path[i];
		if (c < 0x20 || c == 0x7f)
			return ROUTER_BAD_PATH;
	}
	if (len == 1)
		return ROUTER_MATCH; /* "/" */
	const char *pos = path;
	struct seg s;
	bool trailing = false;
	while (next_seg(&pos, &s)) {
		if (s.len == 0) {
			if (*pos == '\0') {
				trailing = true; /* "/a/b/" */
				break;
			}
			return ROUTER_BAD_PATH; /* "/a//b" */
		}
		if ((s.len == 1 && s.p[0] == '.') ||
		    (s.len == 2 && s.p[0] == '.' && s.p[1] == '.'))
			return ROUTER_BAD_PATH;
		if (s.len > PARAM_MAX_LEN)
			return ROUTER_BAD_PATH;
	}
	return trailing ? ROUTER_NOT_FOUND : ROUTER_MATCH;
}

/* Match a well-formed path against one pattern, filling params when m is not
 * NULL. */
static bool match_pattern(const char *pattern, const char *path,
			  struct route_match *m)
{
	if (!pattern || pattern[0] != '/')
		return false;
	/* "/" only matches "/" */
	if (pattern[1] == '\0' || path[1] == '\0')
		return pattern[1] == '\0' && path[1] == '\0';
	const char *pp = pattern, *sp = path;
	struct seg ps, ss;
	size_t np = 0;
	for (;;) {
		bool more_p = next_seg(&pp, &ps);
		bool more_s = next_seg(&sp, &ss);
		if (!more_p || !more_s)
			return more_p == more_s;
		if (seg_is_param(&ps)) {
			if (ss.len == 0)
				return false;
			if (np == ROUTER_MAX_PARAMS)
				return false; /* pattern has too many params */
			if (m) {
				m->params[np].name = ps.p + 1;
				m->params[np].name_len = ps.len - 2;
				memcpy(m->params[np].value, ss.p, ss.len);
				m->params[np].value[ss.len] = '\0';
			}
			np++;
		} else {
			if (ps.len == 0 || memchr(ps.p, '{', ps.len) ||
			    memchr(ps.p, '}', ps.len))
				return false; /* malformed pattern */
			if (ps.len != ss.len || memcmp(ps.p, ss.p, ss.len) != 0)
				return false;
		}
	}
	/* not reached */
}

/* Whether pattern a is more specific than pattern b (both matched the same
 * path, so they have the same number of segments). */
static bool more_specific(const char *a, const char *b)
{
	struct seg sa, sb;
	while (next_seg(&a, &sa) && next_seg(&b, &sb)) {
		bool pa = seg_is_param(&sa), pb = seg_is_param(&sb);
		if (pa != pb)
			return !pa;
	}
	return false;
}

static size_t count_params(const char *pattern)
{
	struct seg s;
	size_t n = 0;
	while (next_seg(&pattern, &s))
		n += seg_is_param(&s);
	return n;
}

static bool str_eq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* Append method to the comma-separated allow list unless present. */
static void allow_add(char *allow, size_t cap, const char *method)
{
	size_t mlen = strlen(method);
	const char *p = allow;
	while (*p) {
		const char *e = strstr(p, ", ");
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n == mlen && memcmp(p, method, n) == 0)
			return;
		p += n;
		if (*p)
			p += 2;
	}
	size_t len = strlen(allow);
	size_t need = (len ? 2 : 0) + mlen;
	if (len + need + 1 > cap)
		return; /* cannot happen with real method names; never truncate mid-name */
	if (len) {
		memcpy(allow + len, ", ", 2);
		len += 2;
	}
	memcpy(allow + len, method, mlen + 1);
}

enum router_result router_match(const struct route *routes, size_t nroutes,
				const char *method, const char *path,
				struct route_match *m)
{
	static const char *const order[] = {
		"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
	};
	memset(m, 0, sizeof(*m));
	m->id = -1;

	enum router_result rc = check_path(path);
	if (rc != ROUTER_MATCH)
		return rc;

	const struct route *best = NULL, *best_get = NULL;
	bool path_known = false;
	for (size_t i = 0; i < nroutes; i++) {
		const struct route *r = &routes[i];
		if (!match_pattern(r->pattern, path, NULL))
			continue;
		path_known = true;
		if (str_eq(r->method, method)) {
			if (!best || more_specific(r->pattern, best->pattern))
				best = r;
		} else if (str_eq(method, "HEAD") && str_eq(r->method, "GET")) {
			if (!best_get || more_specific(r->pattern, best_get->pattern))
				best_get = r;
		}
	}
	if (!best)
		best = best_get;
	if (best) {
		m->id = best->id;
		m->nparams = count_params(best->pattern);
		match_pattern(best->pattern, path, m);
		return ROUTER_MATCH;
	}
	if (!path_known)
		return ROUTER_NOT_FOUND;

	/* Allow: the known methods in canonical order, then the rest */
	bool has[sizeof(order) / sizeof(order[0])] = { false };
	for (size_t i = 0; i < nroutes; i++) {
		if (!routes[i].method || !match_pattern(routes[i].pattern, path, NULL))
			continue;
		for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
			if (strcmp(routes[i].method, order[k]) == 0)
				has[k] = true;
		}
	}
	has[1] = has[1] || has[0]; /* GET implies HEAD */
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		if (has[k])
			allow_add(m->allow, sizeof(m->allow), order[k]);
	}
	for (size_t i = 0; i < nroutes; i++) {
		if (routes[i].method && match_pattern(routes[i].pattern, path, NULL))
			allow_add(m->allow, sizeof(m->allow), routes[i].method);
	}
	return ROUTER_METHOD_NOT_ALLOWED;
}

const char *route_param(const struct route_match *m, const char *name)
{
	if (!m || !name)
		return NULL;
	size_t n = strlen(name);
	for (size_t i = 0; i < m->nparams && i < ROUTER_MAX_PARAMS; i++) {
		if (m->params[i].name_len == n &&
		    memcmp(m->params[i].name, name, n) == 0)
			return m->params[i].value;
	}
	return NULL;
}
