/*
 * Unit tests for api/client_addr.c: trusted proxy parsing and its errors,
 * then each resolution rule, spoofing attempts, IPv6 and IPv4-mapped
 * addresses, malformed and oversized X-Forwarded-For headers.
 */
#include "client_addr.h"
#include "test.h"
#include "util.h"

static const char *resolve(const struct client_addr_cfg *c, const char *peer,
			   const char *xff)
{
	static char out[CLIENT_ADDR_LEN];
	memset(out, 'Z', sizeof(out));
	client_addr_resolve(c, peer, xff, out, sizeof(out));
	return out;
}

static struct client_addr_cfg *cfg_of(const char *const *v, size_t n)
{
	char err[256] = "";
	struct client_addr_cfg *c = client_addr_new(v, n, err, sizeof(err));
	if (!c)
		fprintf(stderr, "unexpected error: %s\n", err);
	return c;
}

static void expect_bad(const char *entry, const char *want_err)
{
	const char *v[] = { "10.0.0.0/8", entry };
	char err[256] = "";
	struct client_addr_cfg *c = client_addr_new(v, 2, err, sizeof(err));
	CHECK(c == NULL);
	if (strcmp(err, want_err) != 0) {
		t_failed++;
		fprintf(stderr, "[%s] entry \"%s\": error \"%s\", expected \"%s\"\n",
			t_current, entry, err, want_err);
	} else {
		t_passed++;
	}
	client_addr_free(c);
}

static void test_cidr_parsing(void)
{
	const char *good[] = { "10.0.0.0/8", "192.168.1.7", "0.0.0.0/0", "fd00::/8",
			       "2001:db8::1", "::/0", "::ffff:172.16.0.0/108",
			       "203.0.113.0/24", "127.0.0.1/32", "::1/128" };
	struct client_addr_cfg *c = cfg_of(good, ARRAY_SIZE(good));
	CHECK(c != NULL);
	client_addr_free(c);
	c = cfg_of(NULL, 0);
	CHECK(c != NULL);
	client_addr_free(c);
	client_addr_free(NULL);

	expect_bad("10.0.0.0/33",
		   "trusted_proxies[1]: \"10.0.0.0/33\": prefix length must be a number from 0 to 32");
	expect_bad("fd00::/129",
		   "trusted_proxies[1]: \"fd00::/129\": prefix length must be a number from 0 to 128");
	expect_bad("10.0.0.1/8",
		   "trusted_proxies[1]: \"10.0.0.1/8\": has bits set after the /8 prefix");
	expect_bad("10.0.0/8", "trusted_proxies[1]: \"10.0.0/8\": not a valid IPv4 address");
	expect_bad("10.0.0.0/", "trusted_proxies[1]: \"10.0.0.0/\": prefix length must be a number from 0 to 32");
	expect_bad("10.0.0.0/08", "trusted_proxies[1]: \"10.0.0.0/08\": prefix length must be a number from 0 to 32");
	expect_bad("10.0.0.0/-1", "trusted_proxies[1]: \"10.0.0.0/-1\": prefix length must be a number from 0 to 32");
	expect_bad("10.0.0.0/8/9", "trusted_proxies[1]: \"10.0.0.0/8/9\": prefix length must be a number from 0 to 32");
	expect_bad("gggg::/16", "trusted_proxies[1]: \"gggg::/16\": not a valid IPv6 address");
	expect_bad("", "trusted_proxies[1]: \"\": not an IP address or CIDR");
	expect_bad(" 10.0.0.0/8", "trusted_proxies[1]: \" 10.0.0.0/8\": not a valid IPv4 address");
	expect_bad("localhost", "trusted_proxies[1]: \"localhost\": not a valid IPv4 address");
	expect_bad("fe80::1%eth0", "trusted_proxies[1]: \"fe80::1%eth0\": not a valid IPv6 address");
	expect_bad("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		   "trusted_proxies[1]: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"...: "
		   "not an IP address or CIDR");

	/* a NULL entry is an empty one */
	const char *withnull[] = { NULL };
	char err[128];
	CHECK(client_addr_new(withnull, 1, err, sizeof(err)) == NULL);
	CHECK_STR(err, "trusted_proxies[0]: \"\": not an IP address or CIDR");

	/* too many entries */
	static const char *many[CLIENT_ADDR_MAX_CIDRS + 1];
	for (size_t i = 0; i < ARRAY_SIZE(many); i++)
		many[i] = "10.0.0.0/8";
	c = cfg_of(many, CLIENT_ADDR_MAX_CIDRS);
	CHECK(c != NULL);
	client_addr_free(c);
	CHECK(client_addr_new(many, ARRAY_SIZE(many), err, sizeof(err)) == NULL);
	CHECK_STR(err, "trusted_proxies: 257 entries, at most 256 allowed");
}

static void test_no_trusted_proxies(void)
{
	struct client_addr_cfg *none = cfg_of(NULL, 0);
	REQUIRE(none);
	/* the peer, whatever the header says */
	CHECK_STR(resolve(none, "203.0.113.9", "198.51.100.1"), "203.0.113.9");
	CHECK_STR(resolve(NULL, "203.0.113.9", "198.51.100.1"), "203.0.113.9");
	CHECK_STR(resolve(none, "10.0.0.1", "198.51.100.1, 10.0.0.2"), "10.0.0.1");
	CHECK_STR(resolve(none, "203.0.113.9", NULL), "203.0.113.9");
	CHECK_STR(resolve(none, "2001:DB8:0:0::1", NULL), "2001:db8::1");
	CHECK_STR(resolve(none, "::ffff:203.0.113.9", NULL), "203.0.113.9");
	/* odd peers */
	CHECK_STR(resolve(none, NULL, NULL), "unknown");
	CHECK_STR(resolve(none, "", "1.2.3.4"), "unknown");
	CHECK_STR(resolve(none, "/run/sbx.sock", "1.2.3.4"), "/run/sbx.sock");
	client_addr_free(none);
}

static void test_untrusted_peer(void)
{
	const char *v[] = { "10.0.0.0/8", "fd00::/8" };
	struct client_addr_cfg *c = cfg_of(v, 2);
	REQUIRE(c);
	/* a client talking to us directly cannot choose its address */
	CHECK_STR(resolve(c, "203.0.113.9", "10.0.0.1"), "203.0.113.9");
	CHECK_STR(resolve(c, "203.0.113.9", "198.51.100.7"), "203.0.113.9");
	CHECK_STR(resolve(c, "203.0.113.9", "198.51.100.7, 10.1.1.1"), "203.0.113.9");
	CHECK_STR(resolve(c, "2001:db8::9", "fd00::1"), "2001:db8::9");
	/* 11.0.0.1 is just outside 10/8 */
	CHECK_STR(resolve(c, "11.0.0.1", "198.51.100.7"), "11.0.0.1");
	client_addr_free(c);
}

static void test_trusted_peer(void)
{
	const char *v[] = { "10.0.0.0/8", "fd00::/8", "192.0.2.1" };
	struct client_addr_cfg *c = cfg_of(v, 3);
	REQUIRE(c);
	/* one proxy: the entry it added */
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9"), "203.0.113.9");
	/* no header or an empty one behind a proxy: the proxy */
	CHECK_STR(resolve(c, "10.0.0.1", NULL), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", ""), "10.0.0.1");
	/* two proxies: skip the inner one */
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9, 10.0.0.2"), "203.0.113.9");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9,192.0.2.1,10.0.0.2"), "203.0.113.9");
	/* 192.0.2.1 is trusted as a single address, its neighbour is not */
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9, 192.0.2.2"), "192.0.2.2");
	/* all trusted: the left-most (an internal client behind the proxy) */
	CHECK_STR(resolve(c, "10.0.0.1", "10.9.9.9, 10.0.0.2"), "10.9.9.9");
	/* blanks and tabs around entries, ports, brackets */
	CHECK_STR(resolve(c, "10.0.0.1", "  203.0.113.9\t ,\t10.0.0.2 "), "203.0.113.9");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9:51234"), "203.0.113.9");
	CHECK_STR(resolve(c, "10.0.0.1", "[2001:db8::7]:443"), "2001:db8::7");
	CHECK_STR(resolve(c, "10.0.0.1", "[2001:db8::7]"), "2001:db8::7");
	/* repeated headers, joined with ',' by the server */
	CHECK_STR(resolve(c, "10.0.0.1", "198.51.100.1,203.0.113.9"), "203.0.113.9");
	client_addr_free(c);
}

static void test_spoofing(void)
{
	const char *v[] = { "10.0.0.0/8" };
	struct client_addr_cfg *c = cfg_of(v, 1);
	REQUIRE(c);
	/* a client behind our proxy sends its own X-Forwarded-For naming
	 * someone else (or a trusted address); the proxy appends the real
	 * one, which is what we take */
	CHECK_STR(resolve(c, "10.0.0.1", "198.51.100.66, 203.0.113.9"), "203.0.113.9");
	CHECK_STR(resolve(c, "10.0.0.1", "10.0.0.5, 203.0.113.9"), "203.0.113.9");
	CHECK_STR(resolve(c, "10.0.0.1", "127.0.0.1, 203.0.113.9"), "203.0.113.9");
	/* many fake entries on the left change nothing */
	char big[4096] = "";
	for (int i = 0; i < 200; i++)
		strcat(big, "198.51.100.66, ");
	strcat(big, "203.0.113.9");
	CHECK_STR(resolve(c, "10.0.0.1", big), "203.0.113.9");
	/* a direct client pretending to be a proxy */
	CHECK_STR(resolve(c, "203.0.113.9", "198.51.100.66"), "203.0.113.9");
	/* the mapped spelling of a trusted peer is trusted, of an untrusted
	 * one is not */
	CHECK_STR(resolve(c, "::ffff:10.0.0.1", "203.0.113.9"), "203.0.113.9");
	CHECK_STR(resolve(c, "::ffff:203.0.113.9", "10.0.0.7"), "203.0.113.9");
	/* a mapped entry naming a trusted address is skipped like the plain one */
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9, ::ffff:10.0.0.2"), "203.0.113.9");
	client_addr_free(c);
}

static void test_ipv6(void)
{
	const char *v[] = { "2001:db8:1::/48", "::ffff:172.16.0.0/108", "::1" };
	struct client_addr_cfg *c = cfg_of(v, 3);
	REQUIRE(c);
	CHECK_STR(resolve(c, "2001:db8:1::10", "2001:db8:2::5"), "2001:db8:2::5");
	CHECK_STR(resolve(c, "2001:db8:1:ffff::10", "2001:DB8:2:0::5"), "2001:db8:2::5");
	CHECK_STR(resolve(c, "2001:db8:2::10", "2001:db8:3::5"), "2001:db8:2::10");
	CHECK_STR(resolve(c, "::1", "203.0.113.9"), "203.0.113.9");
	/* the mapped CIDR trusts 172.16/12 in both spellings */
	CHECK_STR(resolve(c, "172.16.4.4", "203.0.113.9"), "203.0.113.9");
	CHECK_STR(resolve(c, "::ffff:172.31.255.255", "203.0.113.9"), "203.0.113.9");
	CHECK_STR(resolve(c, "172.32.0.1", "203.0.113.9"), "172.32.0.1");
	CHECK_STR(resolve(c, "2001:db8:1::10", "203.0.113.9, 2001:db8:1::99"), "203.0.113.9");
	/* IPv4 CIDRs never match IPv6 addresses and the other way round */
	const char *v4[] = { "0.0.0.0/0" };
	struct client_addr_cfg *c4 = cfg_of(v4, 1);
	REQUIRE(c4);
	CHECK_STR(resolve(c4, "2001:db8::1", "203.0.113.9"), "2001:db8::1");
	CHECK_STR(resolve(c4, "10.1.1.1", "2001:db8::9"), "2001:db8::9");
	client_addr_free(c4);
	client_addr_free(c);
}

static void test_malformed(void)
{
	const char *v[] = { "10.0.0.0/8" };
	struct client_addr_cfg *c = cfg_of(v, 1);
	REQUIRE(c);
	/* junk at the right: the peer (the last good address) */
	CHECK_STR(resolve(c, "10.0.0.1", "unknown"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9, unknown"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9,"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", ","), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "   "), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "_hidden"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9 198.51.100.1"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.256"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "0x7f.0.0.1"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "010.0.0.1"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9:99999"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9:"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "[2001:db8::1"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "[2001:db8::1]x"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "[203.0.113.9]"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "fe80::1%eth0"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9\r\n"), "10.0.0.1");
	CHECK_STR(resolve(c, "10.0.0.1", "for=203.0.113.9"), "10.0.0.1");
	/* junk behind a trusted hop: that hop, the last good one */
	CHECK_STR(resolve(c, "10.0.0.1", "203.0.113.9, junk, 10.0.0.2"), "10.0.0.2");
	/* junk further left than the answer does not matter */
	CHECK_STR(resolve(c, "10.0.0.1", "junk, 203.0.113.9"), "203.0.113.9");
	/* a huge entry stops the walk without being read through */
	char huge[20000];
	memset(huge, '1', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	CHECK_STR(resolve(c, "10.0.0.1", huge), "10.0.0.1");
	memcpy(huge + sizeof(huge) - 13, ",203.0.113.9", 13);
	CHECK_STR(resolve(c, "10.0.0.1", huge), "203.0.113.9");
	/* more trusted hops than the cap: the last one read */
	char hops[4096] = "203.0.113.9";
	for (int i = 0; i < 40; i++) {
		char e[32];
		snprintf(e, sizeof(e), ", 10.0.0.%d", i + 1);
		strcat(hops, e);
	}
	/* entries from the right: 10.0.0.40 ... 10.0.0.9 is the 32nd */
	CHECK_STR(resolve(c, "10.0.0.1", hops), "10.0.0.9");
	/* a small out buffer is still terminated */
	char small[8];
	client_addr_resolve(c, "10.0.0.1", "203.0.113.9", small, sizeof(small));
	CHECK_STR(small, "203.0.1");
	client_addr_resolve(c, "10.0.0.1", "203.0.113.9", small, 0);
	client_addr_free(c);
}

static const char *key_of(const char *addr)
{
	static char out[CLIENT_ADDR_KEY_LEN];
	client_addr_limit_key(addr, out, sizeof(out));
	return out;
}

static void test_limit_key(void)
{
	CHECK_STR(key_of("203.0.113.9"), "ip:203.0.113.9");
	CHECK_STR(key_of("::ffff:203.0.113.9"), "ip:203.0.113.9");
	/* one /64, one bucket */
	CHECK_STR(key_of("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
	CHECK_STR(key_of("2001:db8:1:2:ffff:ffff:ffff:ffff"), "ip:2001:db8:1:2::/64");
	CHECK_STR(key_of("2001:db8:1:3::1"), "ip:2001:db8:1:3::/64");
	CHECK_STR(key_of("::1"), "ip:::/64");
	CHECK_STR(key_of("unknown"), "ip:unknown");
	CHECK_STR(key_of(NULL), "ip:");
	/* the longest IPv6 form fits */
	CHECK_STR(key_of("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
		  "ip:ffff:ffff:ffff:ffff::/64");
	char small[6];
	client_addr_limit_key("203.0.113.9", small, sizeof(small));
	CHECK_STR(small, "ip:20");
}

int main(void)
{
	RUN(test_cidr_parsing);
	RUN(test_no_trusted_proxies);
	RUN(test_untrusted_peer);
	RUN(test_trusted_peer);
	RUN(test_spoofing);
	RUN(test_ipv6);
	RUN(test_malformed);
	RUN(test_limit_key);
	return test_summary();
}
