/*
 * client_addr: the client address of a request from its socket peer and,
 * behind trusted proxies only, X-Forwarded-For read from the right (the
 * rules are in client_addr.h). Addresses are compared as bytes after
 * inet_pton, never as text, so "::ffff:10.0.0.1", "10.0.0.1" and
 * "[10.0.0.1]"-style spellings cannot slip past a CIDR.
 */
#include "client_addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Longest X-Forwarded-For entry worth parsing: "[" IPv6 "]:65535" and
 * some blanks. Anything longer is junk and stops the walk. */
#define XFF_ENTRY_MAX 72

struct ip {
	int family; /* AF_INET or AF_INET6 */
	unsigned char b[16];
};

struct cidr {
	struct ip net;
	unsigned prefix;
};

struct client_addr_cfg {
	size_t n;
	struct cidr c[];
};

/* IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes plain IPv4. */
static void unmap(struct ip *a)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (a->family == AF_INET6 && memcmp(a->b, mapped, 12) == 0) {
		memmove(a->b, a->b + 12, 4);
		memset(a->b + 4, 0, 12);
		a->family = AF_INET;
	}
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* A port: 1-5 digits, at most 65535. */
static bool valid_port(const char *s, size_t n)
{
	if (n == 0 || n > 5)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= 65535;
}

/* Parse one address of len bytes (not NUL-terminated): a plain IPv4 or IPv6
 * literal, "[v6]", "[v6]:port" or "v4:port", blanks around it allowed. */
static bool parse_ip(const char *s, size_t len, struct ip *out)
{
	while (len > 0 && is_blank(*s)) {
		s++;
		len--;
	}
	while (len > 0 && is_blank(s[len - 1]))
		len--;
	if (len == 0 || len > XFF_ENTRY_MAX)
		return false;
	char buf[XFF_ENTRY_MAX + 1];
	memcpy(buf, s, len);
	buf[len] = '\0';
	char *addr = buf;
	int family;
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');
		if (!close)
			return false;
		*close = '\0';
		const char *rest = close + 1;
		if (*rest != '\0' && (*rest != ':' || !valid_port(rest + 1, strlen(rest + 1))))
			return false;
		addr = buf + 1;
		family = AF_INET6;
	} else {
		char *colon = strchr(buf, ':');
		if (colon && strchr(colon + 1, ':') == NULL) {
			/* exactly one colon: IPv4 with a port */
			if (!valid_port(colon + 1, strlen(colon + 1)))
				return false;
			*colon = '\0';
			family = AF_INET;
		} else {
			family = colon ? AF_INET6 : AF_INET;
		}
	}
	if (inet_pton(family, addr, out->b) != 1)
		return false;
	if (family == AF_INET)
		memset(out->b + 4, 0, 12);
	out->family = family;
	unmap(out);
	return true;
}

static bool in_cidr(const struct cidr *c, const struct ip *a)
{
	if (c->net.family != a->family)
		return false;
	unsigned whole = c->prefix / 8, rest = c->prefix % 8;
	if (memcmp(c->net.b, a->b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff00u >> rest);
	return (c->net.b[whole] & mask) == (a->b[whole] & mask);
}

static bool trusted(const struct client_addr_cfg *c, const struct ip *a)
{
	for (size_t i = 0; i < c->n; i++)
		if (in_cidr(&c->c[i], a))
			return true;
	return false;
}

/* Parse one trusted proxy entry; 0, or -1 with the reason in why. */
static int parse_cidr(const char *s, struct cidr *out, char *why, size_t whylen)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t len = strlen(s);
	if (len == 0 || len >= sizeof(buf)) {
		snprintf(why, whylen, "not an IP address or CIDR");
		return -1;
	}
	memcpy(buf, s, len + 1);
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	int family = strchr(buf, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(family, buf, out->net.b) != 1) {
		snprintf(why, whylen, "not a valid %s address", family == AF_INET ? "IPv4" : "IPv6");
		return -1;
	}
	if (family == AF_INET)
		memset(out->net.b + 4, 0, 12);
	out->net.family = family;
	unsigned bits = family == AF_INET ? 32 : 128;
	unsigned prefix = bits;
	if (slash) {
		const char *p = slash + 1;
		size_t n = strlen(p);
		bool ok = n >= 1 && n <= 3 && !(n > 1 && p[0] == '0');
		prefix = 0;
		for (size_t i = 0; ok && i < n; i++) {
			ok = p[i] >= '0' && p[i] <= '9';
			prefix = prefix * 10 + (unsigned)(p[i] - '0');
		}
		if (!ok || prefix > bits) {
			snprintf(why, whylen, "prefix length must be a number from 0 to %u", bits);
			return -1;
		}
	}
	for (unsigned b = prefix; b < bits; b++) {
		if (out->net.b[b / 8] & (0x80u >> (b % 8))) {
			snprintf(why, whylen, "has bits set after the /%u prefix", prefix);
			return -1;
		}
	}
	out->prefix = prefix;
	/* ::ffff:0:0/96 and longer: an IPv4 network, as mapped peers are IPv4 */
	struct ip probe = out->net;
	unmap(&probe);
	if (probe.family == AF_INET && prefix >= 96) {
		out->net = probe;
		out->prefix = prefix - 96;
	}
	return 0;
}

struct client_addr_cfg *client_addr_new(const char *const *trusted_cidrs, size_t n,
					char *err, size_t errlen)
{
	if (n > CLIENT_ADDR_MAX_CIDRS) {
		snprintf(err, errlen, "trusted_proxies: %zu entries, at most %d allowed", n,
			 CLIENT_ADDR_MAX_CIDRS);
		return NULL;
	}
	struct client_addr_cfg *c = calloc(1, sizeof(*c) + n * sizeof(c->c[0]));
	if (!c) {
		snprintf(err, errlen, "trusted_proxies: out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		char why[96];
		const char *s = trusted_cidrs[i] ? trusted_cidrs[i] : "";
		if (parse_cidr(s, &c->c[i], why, sizeof(why)) != 0) {
			snprintf(err, errlen, "trusted_proxies[%zu]: \"%.64s\"%s: %s", i, s,
				 strlen(s) > 64 ? "..." : "", why);
			free(c);
			return NULL;
		}
	}
	c->n = n;
	return c;
}

void client_addr_free(struct client_addr_cfg *c)
{
	free(c);
}

static void put_ip(const struct ip *a, char *out, size_t outlen)
{
	char text[INET6_ADDRSTRLEN];
	if (!inet_ntop(a->family, a->b, text, sizeof(text)))
		snprintf(text, sizeof(text), "unknown");
	snprintf(out, outlen, "%s", text);
}

void client_addr_resolve(const struct client_addr_cfg *c, const char *peer,
			 const char *xff, char *out, size_t outlen)
{
	if (!out || outlen == 0)
		return;
	struct ip best;
	if (!peer || !*peer) {
		snprintf(out, outlen, "unknown");
		return;
	}
	if (!parse_ip(peer, strlen(peer), &best)) {
		/* not an IP (a Unix socket, say): nothing can be trusted about it */
		snprintf(out, outlen, "%s", peer);
		return;
	}
	if (!c || c->n == 0 || !xff || !trusted(c, &best)) {
		put_ip(&best, out, outlen);
		return;
	}
	const char *end = xff + strlen(xff);
	for (int hop = 0; hop < CLIENT_ADDR_MAX_HOPS; hop++) {
		/* the entry is [p, end): scan left to the comma, but not far */
		const char *p = end;
		while (p > xff && p[-1] != ',' && end - p <= XFF_ENTRY_MAX)
			p--;
		struct ip a;
		if (end - p > XFF_ENTRY_MAX || !parse_ip(p, (size_t)(end - p), &a))
			break;
		best = a;
		if (!trusted(c, &a))
			break;
		if (p == xff)
			break; /* the left end: every address was a trusted one */
		end = p - 1;
	}
	put_ip(&best, out, outlen);
}

void client_addr_limit_key(const char *addr, char *out, size_t outlen)
{
	if (!out || outlen == 0)
		return;
	struct ip a;
	if (!addr || !parse_ip(addr, strlen(addr), &a)) {
		snprintf(out, outlen, "ip:%s", addr ? addr : "");
		return;
	}
	char text[INET6_ADDRSTRLEN];
	if (a.family == AF_INET6)
		memset(a.b + 8, 0, 8);
	put_ip(&a, text, sizeof(text));
	snprintf(out, outlen, "ip:%s%s", text, a.family == AF_INET6 ? "/64" : "");
}
