/*
 * router: maps (method, path) to a route and its path parameters. Pure: no
 * I/O, no allocation per match.
 *
 * Patterns are literal segments and "{name}" parameters, e.g.
 * "/v1/sandboxes/{id}/timeout". A parameter matches one non-empty segment.
 * A path that matches a pattern under another method answers "method not
 * allowed" with the list of allowed methods (for the Allow header).
 */
#ifndef SBX_ROUTER_H
#define SBX_ROUTER_H

#include <stddef.h>

#define ROUTER_MAX_PARAMS 4
#define ROUTER_MAX_PATH 1024

struct route {
	const char *method;   /* "GET", "POST", ... */
	const char *pattern;  /* "/v1/sandboxes/{id}" */
	int id;               /* caller's route id */
};

enum router_result {
	ROUTER_MATCH = 0,
	ROUTER_NOT_FOUND = -1,          /* no pattern matches the path */
	ROUTER_METHOD_NOT_ALLOWED = -2, /* the path matches, the method does not */
	ROUTER_BAD_PATH = -3,           /* too long, empty segment, "." or "..", control chars */
};

struct route_match {
	int id;
	size_t nparams;
	struct {
		const char *name;   /* points into the pattern: not NUL-terminated at '}' */
		size_t name_len;
		char value[256];    /* decoded segment */
	} params[ROUTER_MAX_PARAMS];
	char allow[128];        /* for METHOD_NOT_ALLOWED: "GET, DELETE" */
};

/* Match path (already percent-decoded, no query) against routes. */
enum router_result router_match(const struct route *routes, size_t nroutes,
				const char *method, const char *path,
				struct route_match *m);

/* Value of a parameter by name, or NULL. */
const char *route_param(const struct route_match *m, const char *name);

#endif
