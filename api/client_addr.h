/*
 * client_addr: which address a request comes from, for rate limiting and
 * audit.
 *
 * The answer is the socket peer, unless the peer is one of the operator's
 * trusted proxies (a list of CIDRs): then X-Forwarded-For is read from the
 * right, skipping trusted addresses, and the first untrusted one is the
 * client. Entries further left were written by the client itself and are
 * never believed. In detail:
 *   - no trusted proxies configured: the peer, always;
 *   - peer not trusted: the peer (X-Forwarded-For is ignored: anyone can
 *     send one);
 *   - peer trusted: walk X-Forwarded-For from the right; a trusted address
 *     is skipped, the first untrusted one wins; an entry that is not an IP
 *     address (empty, "unknown", an obfuscated RFC 7239 name, junk) stops
 *     the walk, and the answer is the last address read (a trusted proxy's)
 *     or the peer; so is reading CLIENT_ADDR_MAX_HOPS entries, or running
 *     off the left end, without finding an untrusted one.
 * Entries may be "203.0.113.9", "2001:db8::1", "[2001:db8::1]",
 * "[2001:db8::1]:443" or "203.0.113.9:443" (the port is dropped), with
 * spaces or tabs around them. IPv4-mapped IPv6 ("::ffff:203.0.113.9") is
 * the IPv4 address, for peers, entries and trusted CIDRs alike. Answers are
 * in canonical text form (inet_ntop), so one client has one spelling.
 */
#ifndef SBX_CLIENT_ADDR_H
#define SBX_CLIENT_ADDR_H

#include <stddef.h>

#define CLIENT_ADDR_LEN 64        /* an out buffer this big always suffices */
#define CLIENT_ADDR_MAX_HOPS 32   /* X-Forwarded-For entries read at most */
#define CLIENT_ADDR_MAX_CIDRS 256 /* trusted proxy entries at most */

struct client_addr_cfg;

/* Parse the trusted proxies: n entries (trusted_cidrs may be NULL when n is
 * 0), each an IPv4 or IPv6 CIDR ("10.0.0.0/8", "fd00::/8") or a single
 * address (as /32 or /128). Host bits after the prefix are an error (as in
 * "10.0.0.1/8": a typo that would trust a whole network). Returns the
 * configuration (free with client_addr_free), or NULL with a reason naming
 * the entry in err, e.g. "trusted_proxies[2]: \"10.0.0.0/33\": prefix
 * length must be a number from 0 to 32"; also NULL for more than
 * CLIENT_ADDR_MAX_CIDRS entries and when out of memory. */
struct client_addr_cfg *client_addr_new(const char *const *trusted_cidrs, size_t n,
					char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Free. NULL is a no-op. */
void client_addr_free(struct client_addr_cfg *c);

/* The client address of a request whose socket peer is peer (text, as from
 * http_request_peer) and whose X-Forwarded-For header is xff (NULL when
 * absent; repeated headers joined with ','), by the rules above, into out
 * (always NUL-terminated; CLIENT_ADDR_LEN is enough). c NULL means no
 * trusted proxies. A peer that is not an IP address is copied as given
 * (truncated to fit), or "unknown" when NULL or empty. Never fails; parses
 * at most CLIENT_ADDR_MAX_HOPS entries of at most 72 bytes whatever the
 * length of xff; thread-safe (c is only read). */
void client_addr_resolve(const struct client_addr_cfg *c, const char *peer,
			 const char *xff, char *out, size_t outlen);

/* The rate-limit key for a client address as resolve gives it: "ip:" and
 * the address for IPv4; for IPv6, "ip:" and its /64 network
 * ("ip:2001:db8:1:2::/64"), since one subscriber or one cloud instance
 * commonly holds a whole /64 and could otherwise rotate through 2^64
 * buckets; anything else, "ip:" and the text as given. Always
 * NUL-terminated; CLIENT_ADDR_KEY_LEN is enough. */
#define CLIENT_ADDR_KEY_LEN (CLIENT_ADDR_LEN + 8)
void client_addr_limit_key(const char *addr, char *out, size_t outlen);

#endif
