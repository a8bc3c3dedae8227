/*
 * Unit tests for api/auth.c: a row per attack, each asserting the exact
 * enum auth_result. Every key and token is made here at run time with
 * OpenSSL -- RSA and P-256 keys with EVP_PKEY_Q_keygen, PEM and JWKS files
 * from them, and JWTs from a small signer below -- so no private key is
 * checked in.
 */
#include "auth.h"
#include "sandbox_spec.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];
static int64_t now;
static EVP_PKEY *rsa, *ec, *rsa_other;
static const char hs_secret[] = "0123456789abcdef0123456789abcdef-test-hs256-secret";

#define ISSUER "https://issuer.example"
#define AUDIENCE "sandbox-controller"

/* ---- files ---- */

/* tmpdir/name in a static slot (a handful live at once) */
static const char *tpath(const char *name)
{
	static char slots[8][512];
	static int next;
	char *p = slots[next++ % 8];
	snprintf(p, 512, "%s/%s", tmpdir, name);
	return p;
}

/* Write via a temporary file and rename, as a Kubernetes Secret update does
 * (a new inode each time). */
static void write_file(const char *name, const char *content)
{
	char tmp[600], path[600];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", tmpdir, name);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		perror(tmp);
		exit(2);
	}
	fputs(content, f);
	fclose(f);
	if (rename(tmp, path) != 0) {
		perror(path);
		exit(2);
	}
}

static char *pem_of(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	if (!b || PEM_write_bio_PUBKEY(b, k) != 1)
		exit(2);
	long n = BIO_get_mem_data(b, &data);
	/* not strndup: the BIO's data has no NUL, and strndup may look one past n */
	out = malloc((size_t)n + 1);
	if (!out)
		exit(2);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
	return out;
}

/* ---- encodings ---- */

static char *b64url(const void *in, size_t n)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = in;
	char *out = malloc(n * 4 / 3 + 4);
	size_t o = 0;
	unsigned acc = 0, bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | p[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = tbl[(acc >> bits) & 63];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits)
		out[o++] = tbl[(acc << (6 - bits)) & 63];
	out[o] = '\0';
	return out;
}

static char *b64url_s(const char *s)
{
	return b64url(s, strlen(s));
}

static void base32(const unsigned char *in, size_t n, char *out)
{
	static const char a[] = "abcdefghijklmnopqrstuvwxyz234567";
	size_t o = 0;
	unsigned acc = 0, bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[o++] = a[(acc >> bits) & 31];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits)
		out[o++] = a[(acc << (5 - bits)) & 31];
	out[o] = '\0';
}

static void sha256_hex(const char *s, char out[65])
{
	unsigned char d[32];
	unsigned n;
	EVP_Digest(s, strlen(s), d, &n, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- a JWT signer ---- */

enum signer { SIGN_NONE, SIGN_HS, SIGN_RS, SIGN_ES };

/* header.payload.signature over the given JSON texts; hs/hslen is the HMAC
 * key for SIGN_HS, pk the private key for SIGN_RS/SIGN_ES. Caller frees. */
static char *jwt_sign(const char *hdr, const char *payload, enum signer how, EVP_PKEY *pk,
		      const void *hs, size_t hslen)
{
	char *h = b64url_s(hdr), *p = b64url_s(payload);
	size_t in_len = strlen(h) + 1 + strlen(p);
	char *in = malloc(in_len + 1);
	snprintf(in, in_len + 1, "%s.%s", h, p);
	unsigned char sig[1024];
	size_t siglen = 0;
	if (how == SIGN_HS) {
		unsigned int n = 0;
		HMAC(EVP_sha256(), hs, (int)hslen, (unsigned char *)in, in_len, sig, &n);
		siglen = n;
	} else if (how == SIGN_RS || how == SIGN_ES) {
		unsigned char der[1024];
		size_t dl = sizeof(der);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
		    EVP_DigestSign(md, der, &dl, (unsigned char *)in, in_len) != 1)
			exit(2);
		EVP_MD_CTX_free(md);
		if (how == SIGN_RS) {
			memcpy(sig, der, dl);
			siglen = dl;
		} else {
			const unsigned char *q = der;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dl);
			const BIGNUM *r, *s;
			ECDSA_SIG_get0(es, &r, &s);
			BN_bn2binpad(r, sig, 32);
			BN_bn2binpad(s, sig + 32, 32);
			ECDSA_SIG_free(es);
			siglen = 64;
		}
	}
	char *sg = b64url(sig, siglen);
	size_t tl = in_len + 1 + strlen(sg) + 1;
	char *tok = malloc(tl);
	snprintf(tok, tl, "%s.%s", in, sg);
	free(h);
	free(p);
	free(in);
	free(sg);
	return tok;
}

/* Standard claims with overrides: fmt is appended inside the object. */
__attribute__((format(printf, 1, 2))) static char *claims(const char *fmt, ...)
{
	static char buf[4][2048];
	static int next;
	char *b = buf[next++ % 4], extra[1500];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(extra, sizeof(extra), fmt, ap);
	va_end(ap);
	snprintf(b, 2048, "{%s}", extra);
	return b;
}

/* the usual valid payload */
static char *good_claims(void)
{
	return claims("\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"user-1\","
		      "\"tenant\":\"acme\",\"scope\":\"sandboxes:read exec\","
		      "\"iat\":%lld,\"exp\":%lld",
		      (long long)now, (long long)now + 600);
}

static const char HS[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const char RS[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
static const char ES[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";

static char *hs_token(const char *payload)
{
	return jwt_sign(HS, payload, SIGN_HS, NULL, hs_secret, strlen(hs_secret));
}

/* auth_check on "Bearer <tok>" */
static enum auth_result check_tok(struct auth *a, const char *tok, int64_t at,
				  struct auth_principal *p)
{
	size_t n = strlen(tok) + 8;
	char *h = malloc(n);
	snprintf(h, n, "Bearer %s", tok);
	enum auth_result r = auth_check(a, h, at, p);
	free(h);
	return r;
}

#define CHECK_RESULT(a, b)                                                    \
	do {                                                                  \
		enum auth_result ra_ = (a), rb_ = (b);                        \
		if (ra_ == rb_) {                                             \
			t_passed++;                                           \
		} else {                                                      \
			t_failed++;                                           \
			fprintf(stderr, "%s:%d: [%s] %s is %s, expected %s\n", \
				__FILE__, __LINE__, t_current, #a,            \
				auth_result_name(ra_), auth_result_name(rb_)); \
		}                                                             \
	} while (0)

/* check_tok + free */
#define EXPECT_TOK(a, tok, want)                                              \
	do {                                                                  \
		char *t_ = (tok);                                             \
		struct auth_principal p_;                                     \
		CHECK_RESULT(check_tok((a), t_, now, &p_), (want));           \
		free(t_);                                                     \
	} while (0)

/* ---- API keys ---- */

struct test_key {
	char id[40];
	char key[128];
	char sha[65];
};

static void make_key(struct test_key *k, const char *id)
{
	unsigned char raw[32];
	char sec[60];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		exit(2);
	base32(raw, sizeof(raw), sec);
	snprintf(k->id, sizeof(k->id), "%s", id);
	snprintf(k->key, sizeof(k->key), "sbx_%s_%s", id, sec);
	sha256_hex(k->key, k->sha);
}

static struct sbx_auth_config base_cfg(void)
{
	struct sbx_auth_config c = { 0 };
	c.jwt_tenant_claim = "tenant";
	c.jwt_leeway_s = 30;
	return c;
}

static struct auth *new_auth(const struct sbx_auth_config *c)
{
	char err[512] = "";
	struct auth *a = auth_new(c, err, sizeof(err));
	if (!a)
		fprintf(stderr, "  auth_new: %s\n", err);
	return a;
}

/* auth_new must fail with a message containing want */
static void expect_new_fails_at(int line, const struct sbx_auth_config *c, const char *want)
{
	char err[512] = "";
	struct auth *a = auth_new(c, err, sizeof(err));
	CHECK(a == NULL);
	if (!strstr(err, want)) {
		t_failed++;
		fprintf(stderr, "test_auth.c:%d: [%s] error \"%s\", expected \"%s\"\n", line,
			t_current, err, want);
	} else {
		t_passed++;
	}
	auth_free(a);
}
#define expect_new_fails(c, want) expect_new_fails_at(__LINE__, (c), (want))

static struct test_key ka, kb, kexp, kdis, klater;

static void write_keys_file(const char *name, const struct test_key *const *keys, size_t n)
{
	char buf[8192];
	size_t o = (size_t)snprintf(buf, sizeof(buf), "keys:\n");
	for (size_t i = 0; i < n; i++) {
		const struct test_key *k = keys[i];
		const char *extra = "";
		if (k == &kexp)
			extra = ", expires: \"2001-09-09T01:46:40Z\"";
		else if (k == &kdis)
			extra = ", disabled: true";
		else if (k == &klater)
			extra = ", expires: \"2099-01-01T02:00:00+02:00\"";
		o += (size_t)snprintf(buf + o, sizeof(buf) - o,
				      "  - {id: %s, sha256: %s, tenant: acme, scopes: [\"sandboxes:read\", exec]%s}\n",
				      k->id, k->sha, extra);
	}
	write_file(name, buf);
}

static void test_names(void)
{
	unsigned bit = 0;
	static const struct {
		const char *name;
		unsigned bit;
	} scopes[] = {
		{ "sandboxes:read", AUTH_SCOPE_SANDBOXES_READ },
		{ "sandboxes:write", AUTH_SCOPE_SANDBOXES_WRITE },
		{ "exec", AUTH_SCOPE_EXEC },
		{ "files", AUTH_SCOPE_FILES },
		{ "admin", AUTH_SCOPE_ADMIN },
	};
	for (size_t i = 0; i < ARRAY_SIZE(scopes); i++) {
		CHECK_INT(auth_scope_parse(scopes[i].name, &bit), 0);
		CHECK_INT(bit, scopes[i].bit);
		CHECK_STR(auth_scope_name(scopes[i].bit), scopes[i].name);
	}
	CHECK_INT(auth_scope_parse("Exec", &bit), -EINVAL);
	CHECK_INT(auth_scope_parse("sandboxes", &bit), -EINVAL);
	CHECK_INT(auth_scope_parse("", &bit), -EINVAL);
	CHECK_INT(auth_scope_parse(NULL, &bit), -EINVAL);
	CHECK(auth_scope_name(0) == NULL);
	CHECK(auth_scope_name(3) == NULL);

	char buf[64];
	CHECK_INT(auth_scopes_format(AUTH_SCOPES_ALL, " ", buf, sizeof(buf)), 47);
	CHECK_STR(buf, "sandboxes:read sandboxes:write exec files admin");
	CHECK_INT(auth_scopes_format(AUTH_SCOPE_EXEC | AUTH_SCOPE_SANDBOXES_READ, ",", buf, 64),
		  19);
	CHECK_STR(buf, "sandboxes:read,exec");
	CHECK_INT(auth_scopes_format(0, " ", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "");
	CHECK_INT(auth_scopes_format(AUTH_SCOPES_ALL, " ", buf, 10), -ENOSPC);
	CHECK_STR(buf, "");

	static const char *const results[] = {
		"ok", "missing", "malformed", "unknown_key", "revoked", "expired",
		"not_yet_valid", "bad_signature", "bad_algorithm", "bad_issuer",
		"bad_audience", "unknown_kid", "no_tenant", "bad_claims",
	};
	for (size_t i = 0; i < ARRAY_SIZE(results); i++)
		CHECK_STR(auth_result_name((enum auth_result)i), results[i]);
	CHECK_STR(auth_kind_name(AUTH_KIND_ANONYMOUS), "anonymous");
	CHECK_STR(auth_kind_name(AUTH_KIND_SANDBOX), "sandbox");

	struct auth_principal p = { .kind = AUTH_KIND_KEY,
				    .scopes = AUTH_SCOPE_EXEC | AUTH_SCOPE_FILES };
	CHECK(auth_allows(&p, AUTH_SCOPE_EXEC));
	CHECK(auth_allows(&p, AUTH_SCOPE_EXEC | AUTH_SCOPE_FILES));
	CHECK(!auth_allows(&p, AUTH_SCOPE_EXEC | AUTH_SCOPE_SANDBOXES_READ));
	p.scopes = AUTH_SCOPE_ADMIN;
	CHECK(auth_allows(&p, AUTH_SCOPE_FILES | AUTH_SCOPE_SANDBOXES_WRITE));
	p.kind = AUTH_KIND_NONE;
	CHECK(!auth_allows(&p, AUTH_SCOPE_FILES));
	CHECK(!auth_allows(NULL, 0));
}

static void test_api_keys(void)
{
	const struct test_key *all[] = { &ka, &kexp, &kdis, &klater };
	write_keys_file("keys.yaml", all, ARRAY_SIZE(all));
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("keys.yaml");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	CHECK(!auth_insecure(a));
	struct auth_principal p;
	char h[512];

	/* the key works, and the principal says who */
	snprintf(h, sizeof(h), "Bearer %s", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);
	CHECK_INT(p.kind, AUTH_KIND_KEY);
	CHECK_STR(p.id, ka.id);
	CHECK_STR(p.tenant, "acme");
	CHECK_INT(p.scopes, AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_EXEC);
	CHECK_STR(p.sandbox, "");
	CHECK_INT(p.expires_at, 0);
	snprintf(h, sizeof(h), "bearer   %s  ", ka.key); /* scheme in any case, spaces */
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);
	snprintf(h, sizeof(h), "BEARER %s", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);

	/* missing */
	CHECK_RESULT(auth_check(a, NULL, now, &p), AUTH_MISSING);
	CHECK_INT(p.kind, AUTH_KIND_NONE);
	CHECK_RESULT(auth_check(a, "", now, &p), AUTH_MISSING);
	CHECK_RESULT(auth_check(a, "  \t ", now, &p), AUTH_MISSING);

	/* not a bearer token */
	CHECK_RESULT(auth_check(a, "Basic dXNlcjpwYXNzd29yZA==", now, &p), AUTH_MALFORMED);
	CHECK_RESULT(auth_check(a, "Bearer", now, &p), AUTH_MALFORMED);
	CHECK_RESULT(auth_check(a, "Bearer    ", now, &p), AUTH_MALFORMED);
	snprintf(h, sizeof(h), "Bearer%s", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_MALFORMED);
	snprintf(h, sizeof(h), "Token %s", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_MALFORMED);
	snprintf(h, sizeof(h), "%s", ka.key); /* no scheme */
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_MALFORMED);
	/* a repeated header, joined by the server */
	snprintf(h, sizeof(h), "Bearer %s,Bearer %s", ka.key, ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_MALFORMED);
	snprintf(h, sizeof(h), "Bearer %s x", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_MALFORMED);

	/* malformed keys */
#define S52 "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst"
	CHECK_INT(strlen(S52), 52);
	static const char *const malformed[] = {
		"Bearer sbx_",
		"Bearer sbx_abc",
		"Bearer sbx_" S52,
		"Bearer sbx__" S52,                      /* empty id */
		"Bearer sbx_UPPER_" S52,
		"Bearer sbx_a_b_" S52,                   /* '_' in the id */
		"Bearer sbx_-ab_" S52,
		"Bearer sbx_ab-_" S52,
		"Bearer sbx_abc_" "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrs",   /* 51 */
		"Bearer sbx_abc_" S52 "a",                                                 /* 53 */
		"Bearer sbx_abc_" "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcdefghijklmnopqrst",
		"Bearer sbx_abc_" "abcdefghijklmnopqrstuvwxyz018967abcdefghijklmnopqrst", /* 0,1,8,9 */
		"Bearer sbx_abc_" "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqr=t",
		"Bearer sbx_abcdefghijklmnopqrstuvwxyz0123456_" S52,                       /* 33-char id */
		"Bearer sbx_abc" S52,
	};
	for (size_t i = 0; i < ARRAY_SIZE(malformed); i++) {
		enum auth_result r = auth_check(a, malformed[i], now, &p);
		if (r != AUTH_MALFORMED)
			fprintf(stderr, "  malformed[%zu]: %s\n", i, auth_result_name(r));
		CHECK_RESULT(r, AUTH_MALFORMED);
		CHECK_STR(p.id, "");
	}

	/* well formed, unknown: the id (not secret) is given back for the audit */
	CHECK_RESULT(auth_check(a, "Bearer sbx_abc_" S52, now, &p), AUTH_UNKNOWN_KEY);
	CHECK_STR(p.id, "abc");
	CHECK_RESULT(auth_check(a, "Bearer sbx_abcdefghijklmnopqrstuvwxyz012345_" S52, now, &p),
		     AUTH_UNKNOWN_KEY);
#undef S52

	struct test_key other;
	make_key(&other, "nosuchkey");
	snprintf(h, sizeof(h), "Bearer %s", other.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_UNKNOWN_KEY);
	CHECK_STR(p.id, "nosuchkey");
	CHECK_INT(p.kind, AUTH_KIND_NONE);
	CHECK_STR(p.tenant, "");
	CHECK_INT(p.scopes, 0);

	/* right id, wrong secret */
	struct test_key wrong;
	make_key(&wrong, ka.id);
	snprintf(h, sizeof(h), "Bearer %s", wrong.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_UNKNOWN_KEY);
	CHECK_STR(p.id, ka.id);
	/* one character of the secret changed */
	snprintf(h, sizeof(h), "Bearer %s", ka.key);
	char *last = h + strlen(h) - 1;
	*last = *last == 'a' ? 'b' : 'a';
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_UNKNOWN_KEY);

	/* expired, revoked (and a wrong secret for them says unknown) */
	snprintf(h, sizeof(h), "Bearer %s", kexp.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_EXPIRED);
	CHECK_STR(p.id, kexp.id);
	CHECK_RESULT(auth_check(a, h, 1000000000 - 1, &p), AUTH_OK); /* before its expiry */
	CHECK_INT(p.expires_at, 1000000000);
	snprintf(h, sizeof(h), "Bearer %s", kdis.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_REVOKED);
	make_key(&wrong, kdis.id);
	snprintf(h, sizeof(h), "Bearer %s", wrong.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_UNKNOWN_KEY);
	make_key(&wrong, kexp.id);
	snprintf(h, sizeof(h), "Bearer %s", wrong.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_UNKNOWN_KEY);
	/* expiry with an offset: 2099-01-01T02:00:00+02:00 is 2099-01-01T00:00:00Z */
	snprintf(h, sizeof(h), "Bearer %s", klater.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);
	CHECK_INT(p.expires_at, 4070908800LL);
	CHECK_RESULT(auth_check(a, h, 4070908800LL, &p), AUTH_EXPIRED);
	CHECK_RESULT(auth_check(a, h, 4070908799LL, &p), AUTH_OK);

	/* oversized header */
	size_t big = AUTH_MAX_HEADER + 10;
	char *huge = malloc(big + 1);
	memcpy(huge, "Bearer ", 7);
	memset(huge + 7, 'a', big - 7);
	huge[big] = '\0';
	CHECK_RESULT(auth_check(a, huge, now, &p), AUTH_MALFORMED);
	free(huge);

	/* a JWT where only keys are configured */
	EXPECT_TOK(a, hs_token(good_claims()), AUTH_BAD_ALGORITHM);
	auth_free(a);
	auth_free(NULL);
}

static void test_key_file_reload(void)
{
	const struct test_key *first[] = { &ka };
	write_keys_file("reload.yaml", first, 1);
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("reload.yaml");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	struct auth_principal p;
	char ha[256], hb[256];
	snprintf(ha, sizeof(ha), "Bearer %s", ka.key);
	snprintf(hb, sizeof(hb), "Bearer %s", kb.key);
	CHECK_RESULT(auth_check(a, ha, now, &p), AUTH_OK);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_UNKNOWN_KEY);
	CHECK_INT(auth_reload(a, false), 0); /* nothing changed */

	/* rotate: a out, b in */
	const struct test_key *second[] = { &kb };
	write_keys_file("reload.yaml", second, 1);
	CHECK_INT(auth_reload(a, false), 1);
	CHECK_RESULT(auth_check(a, ha, now, &p), AUTH_UNKNOWN_KEY);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_OK);
	CHECK_INT(auth_reload(a, false), 0);

	/* a broken file keeps the old set; the failure is reported once */
	write_file("reload.yaml", "keys:\n  - {id: x, sha256: 12, tenant: acme, scopes: [exec]}\n");
	CHECK(auth_reload(a, false) < 0);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_OK);
	CHECK_INT(auth_reload(a, false), 0);
	CHECK(auth_reload(a, true) < 0); /* SIGHUP retries */
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_OK);
	write_file("reload.yaml", "keys: [unclosed\n");
	CHECK(auth_reload(a, false) < 0);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_OK);

	/* the file disappears: still the old set */
	unlink(tpath("reload.yaml"));
	CHECK_INT(auth_reload(a, false), -ENOENT);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_OK);

	/* revocation by disabling */
	char buf[1024];
	snprintf(buf, sizeof(buf),
		 "keys:\n- id: %s\n  sha256: %s\n  tenant: acme\n  scopes: [exec]\n  disabled: true\n",
		 kb.id, kb.sha);
	write_file("reload.yaml", buf);
	CHECK_INT(auth_reload(a, false), 1);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_REVOKED);

	/* an empty file holds no keys (and is not an error) */
	write_file("reload.yaml", "");
	CHECK_INT(auth_reload(a, false), 1);
	CHECK_RESULT(auth_check(a, hb, now, &p), AUTH_UNKNOWN_KEY);
	write_file("reload.yaml", "keys: []\n");
	CHECK_INT(auth_reload(a, true), 1); /* force reloads even the same content */
	auth_free(a);
}

/* tmpl with every "@ID@" replaced by ka.id and "@SHA@" by ka.sha */
static void subst(const char *tmpl, char *out, size_t len)
{
	size_t o = 0;
	while (*tmpl && o + 1 < len) {
		const char *r = NULL;
		size_t skip = 0;
		if (strncmp(tmpl, "@ID@", 4) == 0) {
			r = ka.id;
			skip = 4;
		} else if (strncmp(tmpl, "@SHA@", 5) == 0) {
			r = ka.sha;
			skip = 5;
		}
		if (r) {
			o += (size_t)snprintf(out + o, len - o, "%s", r);
			tmpl += skip;
		} else {
			out[o++] = *tmpl++;
		}
	}
	out[o < len ? o : len - 1] = '\0';
}

static void test_key_file_errors(void)
{
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("bad.yaml");
	char entry[600];
	static const struct {
		const char *tmpl; /* @ID@, @SHA@ */
		const char *want;
	} cases[] = {
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: acme, scopes: [exec2]}\n",
		  "keys[0].scopes[0]: \"exec2\" is not a scope" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: acme, scopes: [exec], tenat: x}\n",
		  "keys[0].tenat: unknown key" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: Acme, scopes: [exec]}\n",
		  "keys[0].tenant: \"Acme\" is not a valid tenant" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, scopes: [exec]}\n", "keys[0].tenant: missing" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: []}\n",
		  "keys[0].scopes: at least one scope" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: exec}\n",
		  "keys[0].scopes: expected a list" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: [exec], expires: tomorrow}\n",
		  "keys[0].expires: \"tomorrow\" is not a time" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: [exec], expires: \"2026-02-30T00:00:00Z\"}\n",
		  "keys[0].expires" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: [exec], disabled: yes}\n",
		  "keys[0].disabled: must be true or false" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: [exec], id: y}\n",
		  "keys[0].id: duplicate key" },
		{ "keys:\n  - {id: @ID@, sha256: @SHA@, tenant: a, scopes: [exec]}\n  - {id: @ID@, sha256: @SHA@, tenant: b, scopes: [exec]}\n",
		  "key id \"" },
		{ "keys:\n  - {id: \"@ID@_\", sha256: @SHA@, tenant: a, scopes: [exec]}\n",
		  "keys[0].id: " },
		{ "key:\n  - {id: @ID@, sha256: @SHA@}\n", "key: unknown key" },
		{ "keys: {id: @ID@, sha256: @SHA@}\n", "keys: expected a list" },
		{ "- @ID@\n- @SHA@\n", "expected a mapping" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		subst(cases[i].tmpl, entry, sizeof(entry));
		write_file("bad.yaml", entry);
		expect_new_fails_at(__LINE__, &c, cases[i].want);
	}
	/* a bad digest, and one digest of the wrong length */
	snprintf(entry, sizeof(entry),
		 "keys:\n  - {id: %s, sha256: %.63sg, tenant: a, scopes: [exec]}\n", ka.id, ka.sha);
	write_file("bad.yaml", entry);
	expect_new_fails(&c, "keys[0].sha256: must be 64 hexadecimal digits");
	snprintf(entry, sizeof(entry),
		 "keys:\n  - {id: %s, sha256: %.62s, tenant: a, scopes: [exec]}\n", ka.id, ka.sha);
	write_file("bad.yaml", entry);
	expect_new_fails(&c, "keys[0].sha256: must be 64 hexadecimal digits");
	/* hostile YAML */
	write_file("bad.yaml", "keys: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n");
	expect_new_fails(&c, "bad.yaml");
	write_file("bad.yaml", "a: &a [x, x]\nkeys: *a\n");
	expect_new_fails(&c, "a: unknown key");
	/* missing file */
	c.api_keys_file = (char *)tpath("nonexistent.yaml");
	expect_new_fails(&c, "nonexistent.yaml: cannot read: No such file");
	/* uppercase hex is fine, as are unix-second expiries */
	snprintf(entry, sizeof(entry),
		 "keys:\n  - id: %s\n    sha256: \"%s\"\n    tenant: a\n    scopes: [admin]\n    expires: 4102444800\n    description: \"ci: nightly\"\n",
		 ka.id, ka.sha);
	for (char *s = strstr(entry, ka.sha); s && *s != '"'; s++)
		if (*s >= 'a' && *s <= 'f')
			*s = (char)(*s - 32);
	write_file("good.yaml", entry);
	c.api_keys_file = (char *)tpath("good.yaml");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	struct auth_principal p;
	char h[256];
	snprintf(h, sizeof(h), "Bearer %s", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);
	CHECK_INT(p.scopes, AUTH_SCOPE_ADMIN);
	CHECK_INT(p.expires_at, 4102444800LL);
	CHECK_STR(p.tenant, "a");
	auth_free(a);
}

/* ---- JWT ---- */

static struct auth *jwt_auth(void)
{
	struct sbx_auth_config c = base_cfg();
	char *pems[] = { (char *)tpath("rsa.pem"), (char *)tpath("ec.pem") };
	c.jwt_hs256_secret_file = (char *)tpath("hs.secret");
	c.jwt_public_keys = pems;
	c.njwt_public_keys = 2;
	c.jwt_issuer = ISSUER;
	c.jwt_audience = AUDIENCE;
	return new_auth(&c);
}

static void test_jwt_valid(void)
{
	struct auth *a = jwt_auth();
	REQUIRE(a);
	struct auth_principal p;
	char *t = hs_token(good_claims());
	CHECK_RESULT(check_tok(a, t, now, &p), AUTH_OK);
	CHECK_INT(p.kind, AUTH_KIND_JWT);
	CHECK_STR(p.id, "user-1");
	CHECK_STR(p.tenant, "acme");
	CHECK_INT(p.scopes, AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_EXEC);
	CHECK_INT(p.expires_at, now + 600);
	CHECK_STR(p.sandbox, "");
	free(t);
	t = jwt_sign(RS, good_claims(), SIGN_RS, rsa, NULL, 0);
	CHECK_RESULT(check_tok(a, t, now, &p), AUTH_OK);
	CHECK_STR(p.id, "user-1");
	free(t);
	t = jwt_sign(ES, good_claims(), SIGN_ES, ec, NULL, 0);
	CHECK_RESULT(check_tok(a, t, now, &p), AUTH_OK);
	CHECK_STR(p.tenant, "acme");
	free(t);
	/* a kid is fine when the keys have none (PEM files, the HS256 secret) */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"whatever\"}", good_claims(), SIGN_RS,
			       rsa, NULL, 0),
		   AUTH_OK);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"kid\":\"k\"}", good_claims(), SIGN_HS, NULL,
			       hs_secret, strlen(hs_secret)),
		   AUTH_OK);
	/* the secret file's trailing newline is not part of the secret */
	char nl[128];
	snprintf(nl, sizeof(nl), "%s\n", hs_secret);
	EXPECT_TOK(a, jwt_sign(HS, good_claims(), SIGN_HS, NULL, nl, strlen(nl)),
		   AUTH_BAD_SIGNATURE);
	/* a key nobody configured */
	EXPECT_TOK(a, jwt_sign(RS, good_claims(), SIGN_RS, rsa_other, NULL, 0),
		   AUTH_BAD_SIGNATURE);
	auth_free(a);
}

/* re-assemble a token from parts */
static char *join3(const char *h, const char *p, const char *s)
{
	size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
	char *t = malloc(n);
	snprintf(t, n, "%s.%s.%s", h, p, s);
	return t;
}

static void test_jwt_attacks(void)
{
	struct auth *a = jwt_auth();
	REQUIRE(a);
	struct auth_principal p;

	/* tampered payload: another tenant under the original signature */
	char *good = jwt_sign(RS, good_claims(), SIGN_RS, rsa, NULL, 0);
	char *sig = strrchr(good, '.') + 1;
	char *h = b64url_s(RS);
	char *evil = b64url_s(claims("\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"user-1\","
				     "\"tenant\":\"other\",\"scope\":\"admin\",\"exp\":%lld",
				     (long long)now + 600));
	EXPECT_TOK(a, join3(h, evil, sig), AUTH_BAD_SIGNATURE);
	char *hsgood = hs_token(good_claims());
	char *hh = b64url_s(HS);
	EXPECT_TOK(a, join3(hh, evil, strrchr(hsgood, '.') + 1), AUTH_BAD_SIGNATURE);
	char *esgood = jwt_sign(ES, good_claims(), SIGN_ES, ec, NULL, 0);
	char *eh = b64url_s(ES);
	EXPECT_TOK(a, join3(eh, evil, strrchr(esgood, '.') + 1), AUTH_BAD_SIGNATURE);

	/* tampered signature: first character changed, and truncated */
	char *t = strdup(good);
	char *s = strrchr(t, '.') + 1;
	s[0] = s[0] == 'A' ? 'B' : 'A';
	EXPECT_TOK(a, t, AUTH_BAD_SIGNATURE);
	t = strdup(hsgood);
	s = strrchr(t, '.') + 1;
	s[0] = s[0] == 'A' ? 'B' : 'A';
	EXPECT_TOK(a, t, AUTH_BAD_SIGNATURE);
	t = strdup(esgood);
	s = strrchr(t, '.') + 1;
	s[5] = s[5] == 'A' ? 'B' : 'A';
	EXPECT_TOK(a, t, AUTH_BAD_SIGNATURE);
	t = strdup(esgood);
	t[strlen(t) - 6] = '\0'; /* 80 characters, 60 bytes: not r||s */
	EXPECT_TOK(a, t, AUTH_BAD_SIGNATURE);
	/* ES256 signature in DER form instead of r||s */
	{
		char *hp = strndup(esgood, (size_t)(strrchr(esgood, '.') - esgood));
		unsigned char der[128];
		size_t dl = sizeof(der);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ec);
		EVP_DigestSign(md, der, &dl, (unsigned char *)hp, strlen(hp));
		EVP_MD_CTX_free(md);
		char *ds = b64url(der, dl);
		size_t n = strlen(hp) + strlen(ds) + 2;
		t = malloc(n);
		snprintf(t, n, "%s.%s", hp, ds);
		EXPECT_TOK(a, t, AUTH_BAD_SIGNATURE);
		free(hp);
		free(ds);
	}
	/* empty signature */
	{
		char *gp = b64url_s(good_claims());
		EXPECT_TOK(a, join3(hh, gp, ""), AUTH_BAD_SIGNATURE);
		EXPECT_TOK(a, join3(h, gp, ""), AUTH_BAD_SIGNATURE);
		EXPECT_TOK(a, join3(eh, gp, ""), AUTH_BAD_SIGNATURE);
		free(gp);
	}

	/* alg none, with and without a signature part */
	char *none = b64url_s("{\"alg\":\"none\",\"typ\":\"JWT\"}");
	char *pl = b64url_s(good_claims());
	EXPECT_TOK(a, join3(none, pl, ""), AUTH_BAD_ALGORITHM);
	EXPECT_TOK(a, join3(none, pl, sig), AUTH_BAD_ALGORITHM);
	{
		size_t n = strlen(none) + strlen(pl) + 2;
		t = malloc(n);
		snprintf(t, n, "%s.%s", none, pl); /* two segments: not a compact JWS */
		EXPECT_TOK(a, t, AUTH_MALFORMED);
	}
	static const char *const algs[] = { "None", "NONE", "nOnE", "HS512", "RS512", "PS256",
					    "ES384", "EdDSA", "hs256", "" };
	for (size_t i = 0; i < ARRAY_SIZE(algs); i++) {
		char hdr[64];
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"}", algs[i]);
		EXPECT_TOK(a, jwt_sign(hdr, good_claims(), SIGN_HS, NULL, hs_secret, strlen(hs_secret)),
			   AUTH_BAD_ALGORITHM);
	}
	EXPECT_TOK(a, jwt_sign("{\"typ\":\"JWT\"}", good_claims(), SIGN_HS, NULL, hs_secret,
			       strlen(hs_secret)),
		   AUTH_MALFORMED);
	EXPECT_TOK(a, jwt_sign("{\"alg\":256}", good_claims(), SIGN_HS, NULL, hs_secret,
			       strlen(hs_secret)),
		   AUTH_MALFORMED);

	/* algorithm confusion: HS256 "signed" with the RSA public key PEM as the
	 * secret -- here an HS256 secret exists, and it is not that */
	char *pem = pem_of(rsa);
	EXPECT_TOK(a, jwt_sign(HS, good_claims(), SIGN_HS, NULL, pem, strlen(pem)),
		   AUTH_BAD_SIGNATURE);
	/* and an RS256 header over an HMAC made with the PEM */
	EXPECT_TOK(a, jwt_sign(RS, good_claims(), SIGN_HS, NULL, pem, strlen(pem)),
		   AUTH_BAD_SIGNATURE);

	/* crit, and duplicate names in the header */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", good_claims(),
			       SIGN_HS, NULL, hs_secret, strlen(hs_secret)),
		   AUTH_MALFORMED);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"alg\":\"none\"}", good_claims(), SIGN_HS, NULL,
			       hs_secret, strlen(hs_secret)),
		   AUTH_MALFORMED);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"none\",\"alg\":\"HS256\"}", good_claims(), SIGN_HS, NULL,
			       hs_secret, strlen(hs_secret)),
		   AUTH_MALFORMED);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"kid\":7}", good_claims(), SIGN_HS, NULL,
			       hs_secret, strlen(hs_secret)),
		   AUTH_MALFORMED);
	EXPECT_TOK(a, jwt_sign("[\"HS256\"]", good_claims(), SIGN_HS, NULL, hs_secret,
			       strlen(hs_secret)),
		   AUTH_MALFORMED);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\"} x", good_claims(), SIGN_HS, NULL, hs_secret,
			       strlen(hs_secret)),
		   AUTH_MALFORMED);

	/* signed, but the payload is not one object with distinct names */
	EXPECT_TOK(a, hs_token("[1,2]"), AUTH_MALFORMED);
	EXPECT_TOK(a, hs_token("\"a string\""), AUTH_MALFORMED);
	EXPECT_TOK(a, hs_token("{\"sub\":\"x\""), AUTH_MALFORMED);
	EXPECT_TOK(a, hs_token(claims("\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"u\","
				      "\"tenant\":\"acme\",\"tenant\":\"other\",\"exp\":%lld",
				      (long long)now + 600)),
		   AUTH_MALFORMED);
	/* a NUL inside the JSON */
	{
		const char raw[] = "{\"sub\":\"a\0b\"}";
		char *rp = b64url(raw, sizeof(raw) - 1);
		char *rh = b64url_s(HS);
		size_t in_len = strlen(rh) + 1 + strlen(rp);
		char *in = malloc(in_len + 1);
		snprintf(in, in_len + 1, "%s.%s", rh, rp);
		unsigned char mac[32];
		unsigned ml;
		HMAC(EVP_sha256(), hs_secret, (int)strlen(hs_secret), (unsigned char *)in, in_len,
		     mac, &ml);
		char *ms = b64url(mac, 32);
		EXPECT_TOK(a, join3(rh, rp, ms), AUTH_MALFORMED);
		free(rp);
		free(rh);
		free(in);
		free(ms);
	}

	/* bad base64url: padding, the standard alphabet, non-canonical bits */
	{
		char *padded = malloc(strlen(good) + 4);
		char *d1 = strchr(good, '.');
		snprintf(padded, strlen(good) + 4, "%.*s=%s", (int)(d1 - good), good, d1);
		EXPECT_TOK(a, padded, AUTH_MALFORMED);
		t = strdup(good);
		t[3] = '+';
		EXPECT_TOK(a, t, AUTH_MALFORMED);
		t = strdup(good);
		t[3] = '/';
		EXPECT_TOK(a, t, AUTH_MALFORMED);
		/* {"alg":"HS256" } is 16 bytes: 22 chars whose last carries 4
		 * spare bits; setting one changes the encoding but not the bytes */
		char *hdr = b64url_s("{\"alg\":\"HS256\" }");
		size_t hl = strlen(hdr);
		CHECK_INT(hl, 22);
		CHECK(strchr("AQgw", hdr[hl - 1]) != NULL);
		hdr[hl - 1] = (char)(hdr[hl - 1] + 1);
		char *hs = hs_token(good_claims());
		EXPECT_TOK(a, join3(hdr, strchr(hs, '.') + 1, ""), AUTH_MALFORMED);
		free(hs);
		free(hdr);
		char *one = b64url_s(good_claims());
		EXPECT_TOK(a, join3("e", one, "AAAA"), AUTH_MALFORMED); /* length 1 mod 4 */
		EXPECT_TOK(a, join3("", one, "AAAA"), AUTH_MALFORMED);
		EXPECT_TOK(a, join3(hh, "", "AAAA"), AUTH_MALFORMED);
		free(one);
		/* four segments */
		size_t n = strlen(good) + 8;
		t = malloc(n);
		snprintf(t, n, "%s.AAAA", good);
		EXPECT_TOK(a, t, AUTH_MALFORMED);
		/* characters outside the token alphabet */
		CHECK_RESULT(auth_check(a, "Bearer abc.d%ef.ghi", now, &p), AUTH_MALFORMED);
		CHECK_RESULT(auth_check(a, "Bearer abc.d\xc3\xa9.ghi", now, &p), AUTH_MALFORMED);
	}

	/* oversized token: a valid signature over a huge payload */
	{
		char *bigp = malloc(7000);
		snprintf(bigp, 7000,
			 "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"u\",\"tenant\":\"acme\","
			 "\"exp\":%lld,\"pad\":\"%06000d\"}",
			 (long long)now + 600, 0);
		t = hs_token(bigp);
		CHECK(strlen(t) > AUTH_MAX_HEADER);
		EXPECT_TOK(a, t, AUTH_MALFORMED);
		/* and just under the limit it is accepted */
		snprintf(bigp, 7000,
			 "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"u\",\"tenant\":\"acme\","
			 "\"exp\":%lld,\"pad\":\"%05000d\"}",
			 (long long)now + 600, 0);
		t = hs_token(bigp);
		CHECK(strlen(t) + 7 < AUTH_MAX_HEADER);
		EXPECT_TOK(a, t, AUTH_OK);
		free(bigp);
	}
	free(good);
	free(hsgood);
	free(esgood);
	free(h);
	free(hh);
	free(eh);
	free(evil);
	free(none);
	free(pl);
	free(pem);
	auth_free(a);
}

static void test_jwt_confusion_without_hs(void)
{
	/* only public keys: an HS256 token made with the PEM as the secret has no
	 * key of its type to be checked with */
	struct sbx_auth_config c = base_cfg();
	char *pems[] = { (char *)tpath("rsa.pem") };
	c.jwt_public_keys = pems;
	c.njwt_public_keys = 1;
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	char *pem = pem_of(rsa);
	EXPECT_TOK(a, jwt_sign(HS, good_claims(), SIGN_HS, NULL, pem, strlen(pem)),
		   AUTH_BAD_ALGORITHM);
	/* the DER form of the key as the secret, too */
	unsigned char *der = NULL;
	int dl = i2d_PUBKEY(rsa, &der);
	EXPECT_TOK(a, jwt_sign(HS, good_claims(), SIGN_HS, NULL, der, (size_t)dl),
		   AUTH_BAD_ALGORITHM);
	OPENSSL_free(der);
	EXPECT_TOK(a, jwt_sign(ES, good_claims(), SIGN_ES, ec, NULL, 0), AUTH_BAD_ALGORITHM);
	EXPECT_TOK(a, jwt_sign(RS, good_claims(), SIGN_RS, rsa, NULL, 0), AUTH_OK);
	auth_free(a);
	free(pem);

	/* and nobody can configure the PEM as the HMAC secret */
	c = base_cfg();
	c.jwt_hs256_secret_file = (char *)tpath("rsa.pem");
	expect_new_fails(&c, "holds a PEM block, not an HMAC secret");
}

static void test_jwt_claims(void)
{
	struct auth *a = jwt_auth();
	REQUIRE(a);
	struct auth_principal p;
	long long n = (long long)now;
#define STD "\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"u\",\"tenant\":\"acme\""
	/* exp */
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld", n - 100)), AUTH_EXPIRED);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld", n - 31)), AUTH_EXPIRED);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld", n - 29)), AUTH_OK); /* leeway */
	EXPECT_TOK(a, hs_token(claims(STD)), AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":\"%lld\"", n + 100)), AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":-5")), AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":1e400")), AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld.75", n + 100)), AUTH_OK);
	/* nbf */
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld,\"nbf\":%lld", n + 600, n + 100)),
		   AUTH_NOT_YET_VALID);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld,\"nbf\":%lld", n + 600, n + 20)), AUTH_OK);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld,\"nbf\":null", n + 600)), AUTH_BAD_CLAIMS);
	/* iat */
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld,\"iat\":%lld", n + 600, n + 100)),
		   AUTH_NOT_YET_VALID);
	EXPECT_TOK(a, hs_token(claims(STD ",\"exp\":%lld,\"iat\":%lld", n + 600, n - 100)), AUTH_OK);
	/* iss */
	EXPECT_TOK(a, hs_token(claims("\"iss\":\"https://evil.example\",\"aud\":\"" AUDIENCE
				      "\",\"sub\":\"u\",\"tenant\":\"acme\",\"exp\":%lld", n + 600)),
		   AUTH_BAD_ISSUER);
	EXPECT_TOK(a, hs_token(claims("\"aud\":\"" AUDIENCE "\",\"sub\":\"u\",\"tenant\":\"acme\","
				      "\"exp\":%lld", n + 600)),
		   AUTH_BAD_ISSUER);
	EXPECT_TOK(a, hs_token(claims("\"iss\":[\"" ISSUER "\"],\"aud\":\"" AUDIENCE
				      "\",\"sub\":\"u\",\"tenant\":\"acme\",\"exp\":%lld", n + 600)),
		   AUTH_BAD_ISSUER);
	/* aud */
#define NOAUD "\"iss\":\"" ISSUER "\",\"sub\":\"u\",\"tenant\":\"acme\""
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"aud\":\"other\",\"exp\":%lld", n + 600)),
		   AUTH_BAD_AUDIENCE);
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"exp\":%lld", n + 600)), AUTH_BAD_AUDIENCE);
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"aud\":[\"a\",\"" AUDIENCE "\"],\"exp\":%lld", n + 600)),
		   AUTH_OK);
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"aud\":[\"a\",\"b\"],\"exp\":%lld", n + 600)),
		   AUTH_BAD_AUDIENCE);
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"aud\":[],\"exp\":%lld", n + 600)), AUTH_BAD_AUDIENCE);
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"aud\":[1,\"" AUDIENCE "\"],\"exp\":%lld", n + 600)),
		   AUTH_OK);
	EXPECT_TOK(a, hs_token(claims(NOAUD ",\"aud\":\"Sandbox-Controller\",\"exp\":%lld", n + 600)),
		   AUTH_BAD_AUDIENCE);
	/* sub */
#define NOSUB "\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"tenant\":\"acme\""
	EXPECT_TOK(a, hs_token(claims(NOSUB ",\"exp\":%lld", n + 600)), AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(NOSUB ",\"sub\":\"\",\"exp\":%lld", n + 600)), AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(NOSUB ",\"sub\":\"a\\nb\",\"exp\":%lld", n + 600)),
		   AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(NOSUB ",\"sub\":42,\"exp\":%lld", n + 600)), AUTH_BAD_CLAIMS);
	/* tenant */
#define NOTEN "\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"u\""
	EXPECT_TOK(a, hs_token(claims(NOTEN ",\"exp\":%lld", n + 600)), AUTH_NO_TENANT);
	EXPECT_TOK(a, hs_token(claims(NOTEN ",\"tenant\":null,\"exp\":%lld", n + 600)),
		   AUTH_NO_TENANT);
	static const char *const bad_tenants[] = { "\"Acme\"", "\"a_b\"", "\"-a\"", "\"a-\"", "\"\"",
						   "7", "[\"acme\"]", "\"acme/x\"",
						   "\"a234567890123456789012345678901234567890123456789012345678901234\"" };
	for (size_t i = 0; i < ARRAY_SIZE(bad_tenants); i++)
		EXPECT_TOK(a, hs_token(claims(NOTEN ",\"tenant\":%s,\"exp\":%lld", bad_tenants[i],
					      n + 600)),
			   AUTH_BAD_CLAIMS);
	EXPECT_TOK(a, hs_token(claims(NOTEN ",\"Tenant\":\"acme\",\"exp\":%lld", n + 600)),
		   AUTH_NO_TENANT); /* claim names are case-sensitive */

	/* scopes: scope (string), scp (array or string), unknown names ignored */
	static const struct {
		const char *claim;
		unsigned want;
		enum auth_result r;
	} sc[] = {
		{ "\"scope\":\"sandboxes:read exec\"", AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_EXEC, AUTH_OK },
		{ "\"scope\":\"openid profile files  email\"", AUTH_SCOPE_FILES, AUTH_OK },
		{ "\"scope\":\"\"", 0, AUTH_OK },
		{ "\"scp\":[\"sandboxes:write\",\"offline_access\",\"admin\"]",
		  AUTH_SCOPE_SANDBOXES_WRITE | AUTH_SCOPE_ADMIN, AUTH_OK },
		{ "\"scp\":\"exec files\"", AUTH_SCOPE_EXEC | AUTH_SCOPE_FILES, AUTH_OK },
		{ "\"scope\":\"exec\",\"scp\":[\"files\"]", AUTH_SCOPE_EXEC | AUTH_SCOPE_FILES, AUTH_OK },
		{ "\"scope\":\"EXEC Admin\"", 0, AUTH_OK },
		{ "\"scope\":[\"exec\"]", 0, AUTH_BAD_CLAIMS },
		{ "\"scp\":[\"exec files\"]", 0, AUTH_BAD_CLAIMS },
		{ "\"scp\":[1]", 0, AUTH_BAD_CLAIMS },
		{ "\"scp\":{\"exec\":true}", 0, AUTH_BAD_CLAIMS },
		{ "\"scope\":null", 0, AUTH_BAD_CLAIMS },
	};
	for (size_t i = 0; i < ARRAY_SIZE(sc); i++) {
		char *t = hs_token(claims(STD ",%s,\"exp\":%lld", sc[i].claim, n + 600));
		enum auth_result r = check_tok(a, t, now, &p);
		CHECK_RESULT(r, sc[i].r);
		if (r == AUTH_OK && p.scopes != sc[i].want) {
			t_failed++;
			fprintf(stderr, "  scopes[%zu]: %#x, expected %#x\n", i, p.scopes, sc[i].want);
		}
		free(t);
	}
	/* more than 64 scope names */
	{
		char many[2048] = "";
		for (int i = 0; i < 70; i++)
			strcat(many, "x ");
		EXPECT_TOK(a, hs_token(claims(STD ",\"scope\":\"%s\",\"exp\":%lld", many, n + 600)),
			   AUTH_BAD_CLAIMS);
	}
	/* more than 64 claims */
	{
		char many[1500] = "";
		for (int i = 0; i < 65; i++)
			sprintf(many + strlen(many), "\"c%d\":1,", i);
		EXPECT_TOK(a, hs_token(claims(STD ",%s\"exp\":%lld", many, n + 600)), AUTH_MALFORMED);
	}
	auth_free(a);

	/* a configured tenant claim, and no iss/aud configured: not checked */
	struct sbx_auth_config c = base_cfg();
	c.jwt_hs256_secret_file = (char *)tpath("hs.secret");
	c.jwt_tenant_claim = "https://example.com/org";
	c.jwt_leeway_s = 0;
	a = new_auth(&c);
	REQUIRE(a);
	EXPECT_TOK(a, hs_token(claims("\"sub\":\"u\",\"https://example.com/org\":\"org-7\",\"exp\":%lld",
				      n + 60)),
		   AUTH_OK);
	EXPECT_TOK(a, hs_token(claims("\"sub\":\"u\",\"tenant\":\"acme\",\"exp\":%lld", n + 60)),
		   AUTH_NO_TENANT);
	EXPECT_TOK(a, hs_token(claims("\"sub\":\"u\",\"https://example.com/org\":\"o\",\"exp\":%lld",
				      n - 1)),
		   AUTH_EXPIRED); /* no leeway */
	auth_free(a);
#undef STD
#undef NOAUD
#undef NOSUB
#undef NOTEN
}

static void write_jwks(const char *name, const char *extra)
{
	BIGNUM *bn = NULL, *be = NULL, *bx = NULL, *by = NULL;
	unsigned char nb[512], eb[8], xb[32], yb[32];
	EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &bn);
	EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_E, &be);
	EVP_PKEY_get_bn_param(ec, OSSL_PKEY_PARAM_EC_PUB_X, &bx);
	EVP_PKEY_get_bn_param(ec, OSSL_PKEY_PARAM_EC_PUB_Y, &by);
	int nl = BN_bn2bin(bn, nb), el = BN_bn2bin(be, eb);
	BN_bn2binpad(bx, xb, 32);
	BN_bn2binpad(by, yb, 32);
	char *n = b64url(nb, (size_t)nl), *e = b64url(eb, (size_t)el), *x = b64url(xb, 32),
	     *y = b64url(yb, 32);
	char buf[4096];
	snprintf(buf, sizeof(buf),
		 "{\"keys\":[%s"
		 "{\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"},"
		 "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
		 "{\"kty\":\"oct\",\"kid\":\"s1\",\"k\":\"c2VjcmV0\"},"
		 "{\"kty\":\"RSA\",\"kid\":\"enc1\",\"use\":\"enc\",\"n\":\"%s\",\"e\":\"%s\"},"
		 "{\"kty\":\"RSA\",\"kid\":\"ps1\",\"alg\":\"PS256\",\"n\":\"%s\",\"e\":\"%s\"}"
		 "]}",
		 extra, n, e, x, y, n, e, n, e);
	write_file(name, buf);
	BN_free(bn);
	BN_free(be);
	BN_free(bx);
	BN_free(by);
	free(n);
	free(e);
	free(x);
	free(y);
}

static void test_jwks(void)
{
	write_jwks("jwks.json", "");
	struct sbx_auth_config c = base_cfg();
	c.jwt_jwks_file = (char *)tpath("jwks.json");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	const char *cl = good_claims();
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"r1\"}", cl, SIGN_RS, rsa, NULL, 0),
		   AUTH_OK);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"ES256\",\"kid\":\"e1\"}", cl, SIGN_ES, ec, NULL, 0),
		   AUTH_OK);
	/* no kid: every key of the type is tried */
	EXPECT_TOK(a, jwt_sign(RS, cl, SIGN_RS, rsa, NULL, 0), AUTH_OK);
	EXPECT_TOK(a, jwt_sign(ES, cl, SIGN_ES, ec, NULL, 0), AUTH_OK);
	/* unknown kid */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"nope\"}", cl, SIGN_RS, rsa, NULL, 0),
		   AUTH_UNKNOWN_KID);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"ES256\",\"kid\":\"R1\"}", cl, SIGN_ES, ec, NULL, 0),
		   AUTH_UNKNOWN_KID);
	/* skipped keys are unknown too */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"enc1\"}", cl, SIGN_RS, rsa, NULL, 0),
		   AUTH_UNKNOWN_KID);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"ps1\"}", cl, SIGN_RS, rsa, NULL, 0),
		   AUTH_UNKNOWN_KID);
	/* a kid that names a key of another type */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"ES256\",\"kid\":\"r1\"}", cl, SIGN_ES, ec, NULL, 0),
		   AUTH_BAD_ALGORITHM);
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"kid\":\"r1\"}", cl, SIGN_HS, NULL, hs_secret,
			       strlen(hs_secret)),
		   AUTH_BAD_ALGORITHM);
	/* the oct key in the set is never used as an HMAC secret */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"kid\":\"s1\"}", cl, SIGN_HS, NULL, "secret", 6),
		   AUTH_BAD_ALGORITHM);
	/* the right kid, another key */
	EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"r1\"}", cl, SIGN_RS, rsa_other, NULL, 0),
		   AUTH_BAD_SIGNATURE);
	auth_free(a);

	/* broken sets */
	static const struct {
		const char *json, *want;
	} bad[] = {
		{ "{\"keys\":[]}", "no RS256 or ES256 key" },
		{ "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}", "no RS256 or ES256 key" },
		{ "[]", "not a JWKS document" },
		{ "{\"keys\":{}}", "not a JWKS document" },
		{ "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
		  "keys[0]: is not a valid P-256 public key" },
		{ "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}",
		  "keys[0]: crv must be P-256" },
		{ "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "keys[0]:" },
		{ "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "keys[0]: needs n and e" },
		{ "{\"keys\":[{\"n\":\"AQAB\"}]}", "keys[0]: not a JWK" },
		{ "{\"keys\":[1]}", "keys[0]: not a JWK" },
		{ "not json", "not a JWKS document" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		write_file("badjwks.json", bad[i].json);
		c.jwt_jwks_file = (char *)tpath("badjwks.json");
		expect_new_fails_at(__LINE__, &c, bad[i].want);
	}
	/* a duplicate kid, the reserved kid, a short RSA key */
	write_jwks("badjwks.json", "{\"kty\":\"EC\",\"kid\":\"r1\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"},");
	c.jwt_jwks_file = (char *)tpath("badjwks.json");
	expect_new_fails(&c, "keys[0]: needs x and y");
	{
		BIGNUM *bx = NULL, *by = NULL;
		unsigned char xb[32], yb[32];
		EVP_PKEY_get_bn_param(ec, OSSL_PKEY_PARAM_EC_PUB_X, &bx);
		EVP_PKEY_get_bn_param(ec, OSSL_PKEY_PARAM_EC_PUB_Y, &by);
		BN_bn2binpad(bx, xb, 32);
		BN_bn2binpad(by, yb, 32);
		char *x = b64url(xb, 32), *y = b64url(yb, 32), extra[512];
		snprintf(extra, sizeof(extra),
			 "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},", x, y);
		write_jwks("badjwks.json", extra);
		expect_new_fails(&c, "keys[2].kid: \"e1\" is used twice");
		snprintf(extra, sizeof(extra),
			 "{\"kty\":\"EC\",\"kid\":\"" AUTH_SCOPED_KID "\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},",
			 x, y);
		write_jwks("badjwks.json", extra);
		expect_new_fails(&c, "is reserved for scoped tokens");
		BN_free(bx);
		BN_free(by);
		free(x);
		free(y);
	}
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	char *pem = pem_of(small);
	write_file("small.pem", pem);
	c = base_cfg();
	char *pems[] = { (char *)tpath("small.pem") };
	c.jwt_public_keys = pems;
	c.njwt_public_keys = 1;
	expect_new_fails(&c, "small.pem: RSA key of 1024 bits; at least 2048 are needed");
	free(pem);
	EVP_PKEY_free(small);
	EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	pem = pem_of(p384);
	write_file("small.pem", pem);
	expect_new_fails(&c, "small.pem: EC key on curve \"secp384r1\"; ES256 needs P-256");
	free(pem);
	EVP_PKEY_free(p384);
	/* a private key where a public key belongs */
	{
		BIO *b = BIO_new(BIO_s_mem());
		char *data;
		PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
		long n = BIO_get_mem_data(b, &data);
		char *priv = malloc((size_t)n + 1); /* the BIO's data has no NUL */
		if (!priv)
			exit(2);
		memcpy(priv, data, (size_t)n);
		priv[n] = '\0';
		BIO_free(b);
		write_file("small.pem", priv);
		free_secret(priv);
		expect_new_fails(&c, "small.pem: no PEM public key");
	}
	/* two keys in one file */
	{
		char *p1 = pem_of(rsa), *p2 = pem_of(ec);
		size_t n = strlen(p1) + strlen(p2) + 1;
		char *both = malloc(n);
		snprintf(both, n, "%s%s", p1, p2);
		write_file("small.pem", both);
		expect_new_fails(&c, "small.pem: more than one PEM block");
		free(p1);
		free(p2);
		free(both);
	}
}

/* ---- secrets: files, the environment ---- */

static void test_secrets(void)
{
	struct sbx_auth_config c = base_cfg();
	c.jwt_hs256_secret_file = (char *)tpath("short.secret");
	write_file("short.secret", "only-31-bytes-0123456789abcdef\n");
	expect_new_fails(&c, "short.secret: the secret is 30 bytes; at least 32 are needed");
	c.jwt_hs256_secret_file = (char *)tpath("missing.secret");
	expect_new_fails(&c, "missing.secret: cannot read");

	/* SBX_JWT_HS256_SECRET, read by auth_new */
	c = base_cfg();
	c.jwt_hs256_secret_env = true;
	unsetenv("SBX_JWT_HS256_SECRET");
	expect_new_fails(&c, "SBX_JWT_HS256_SECRET: the secret is 0 bytes");
	setenv("SBX_JWT_HS256_SECRET", "short", 1);
	expect_new_fails(&c, "SBX_JWT_HS256_SECRET: the secret is 5 bytes");
	setenv("SBX_JWT_HS256_SECRET", "env-secret-env-secret-env-secret-env-secret", 1);
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	const char *es = "env-secret-env-secret-env-secret-env-secret";
	EXPECT_TOK(a, jwt_sign(HS, good_claims(), SIGN_HS, NULL, es, strlen(es)), AUTH_OK);
	EXPECT_TOK(a, hs_token(good_claims()), AUTH_BAD_SIGNATURE);
	auth_free(a);
	c.jwt_hs256_secret_file = (char *)tpath("hs.secret");
	expect_new_fails(&c, "use one of them");
	unsetenv("SBX_JWT_HS256_SECRET");

	/* nothing configured */
	c = base_cfg();
	expect_new_fails(&c, "no credentials are configured");
	/* a scoped token secret alone authenticates nobody */
	c.scoped_token_secret_file = (char *)tpath("hs.secret");
	expect_new_fails(&c, "no credentials are configured");
}

static void test_insecure_mode(void)
{
	struct sbx_auth_config c = base_cfg();
	c.insecure_dev_mode = true;
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	CHECK(auth_insecure(a));
	struct auth_principal p;
	CHECK_RESULT(auth_check(a, NULL, now, &p), AUTH_OK);
	CHECK_INT(p.kind, AUTH_KIND_ANONYMOUS);
	CHECK_STR(p.id, "anonymous");
	CHECK_STR(p.tenant, AUTH_ANONYMOUS_TENANT);
	CHECK_INT(p.scopes, AUTH_SCOPES_ALL);
	CHECK_RESULT(auth_check(a, "", now, &p), AUTH_OK);
	/* credentials that are present are checked, never waved through */
	char h[256];
	snprintf(h, sizeof(h), "Bearer %s", ka.key);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_UNKNOWN_KEY);
	CHECK_RESULT(auth_check(a, "Basic abc", now, &p), AUTH_MALFORMED);
	EXPECT_TOK(a, hs_token(good_claims()), AUTH_BAD_ALGORITHM);
	CHECK_INT(auth_reload(a, false), 0);
	/* anonymous may hand out scoped tokens (it is admin) */
	CHECK_RESULT(auth_check(a, NULL, now, &p), AUTH_OK);
	char *tok = NULL;
	int64_t exp = 0;
	CHECK_INT(auth_issue_sandbox_token(a, &p, "sb-abcdefghijklmnopqrst", "default",
					   AUTH_SCOPE_EXEC, 60, now, &tok, &exp),
		  0);
	CHECK_RESULT(check_tok(a, tok, now, &p), AUTH_OK);
	CHECK_INT(p.kind, AUTH_KIND_SANDBOX);
	CHECK_STR(p.id, "anonymous");
	free_secret(tok);
	auth_free(a);
	CHECK(!auth_insecure(NULL));
}

/* ---- scoped tokens ---- */

static void test_scoped_tokens(void)
{
	const struct test_key *all[] = { &ka };
	write_keys_file("scoped-keys.yaml", all, 1);
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("scoped-keys.yaml");
	c.jwt_hs256_secret_file = (char *)tpath("hs.secret");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	struct auth_principal issuer, p;
	char h[256];
	snprintf(h, sizeof(h), "Bearer %s", ka.key);
	REQUIRE(auth_check(a, h, now, &issuer) == AUTH_OK);
	char sb[24], sb2[24];
	REQUIRE(sandbox_new_id(sb) == 0);
	REQUIRE(sandbox_new_id(sb2) == 0);

	/* round trip */
	char *tok = NULL;
	int64_t exp = 0;
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", AUTH_SCOPE_EXEC, 300, now, &tok,
					   &exp),
		  0);
	REQUIRE(tok);
	CHECK_INT(exp, now + 300);
	CHECK_RESULT(check_tok(a, tok, now, &p), AUTH_OK);
	CHECK_INT(p.kind, AUTH_KIND_SANDBOX);
	CHECK_STR(p.id, ka.id);
	CHECK_STR(p.tenant, "acme");
	CHECK_STR(p.sandbox, sb);
	CHECK_INT(p.scopes, AUTH_SCOPE_EXEC);
	CHECK_INT(p.expires_at, now + 300);
	CHECK(auth_allows(&p, AUTH_SCOPE_EXEC));
	CHECK(!auth_allows(&p, AUTH_SCOPE_SANDBOXES_READ));
	/* on another sandbox: the principal names its own, and the API compares */
	CHECK(strcmp(p.sandbox, sb2) != 0);
	/* scoped tokens get no leeway (our own clock issued them): expired at
	 * exp, valid the second before */
	CHECK_RESULT(check_tok(a, tok, now + 300, &p), AUTH_EXPIRED);
	CHECK_RESULT(check_tok(a, tok, now + 299, &p), AUTH_OK);

	/* tampered: another sandbox in the payload under the same signature */
	{
		char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
		char *hdr = strndup(tok, (size_t)(d1 - tok));
		char payload[512];
		snprintf(payload, sizeof(payload),
			 "{\"iss\":\"sandbox-controller\",\"sub\":\"%s\",\"tenant\":\"acme\",\"sandbox\":\"%s\","
			 "\"scope\":\"exec\",\"iat\":%lld,\"exp\":%lld}",
			 ka.id, sb2, (long long)now, (long long)now + 300);
		char *pl = b64url_s(payload);
		EXPECT_TOK(a, join3(hdr, pl, d2 + 1), AUTH_BAD_SIGNATURE);
		/* the scoped kid signed with the (known to some) JWT secret */
		EXPECT_TOK(a, jwt_sign("{\"alg\":\"HS256\",\"kid\":\"" AUTH_SCOPED_KID "\"}", payload,
				       SIGN_HS, NULL, hs_secret, strlen(hs_secret)),
			   AUTH_BAD_SIGNATURE);
		EXPECT_TOK(a, jwt_sign("{\"alg\":\"RS256\",\"kid\":\"" AUTH_SCOPED_KID "\"}", payload,
				       SIGN_RS, rsa, NULL, 0),
			   AUTH_BAD_ALGORITHM);
		/* a JWT from the identity provider with a sandbox claim is an
		 * ordinary JWT: the claim is not honoured */
		EXPECT_TOK(a, hs_token(payload), AUTH_OK);
		char *t2 = hs_token(payload);
		CHECK_RESULT(check_tok(a, t2, now, &p), AUTH_OK);
		CHECK_INT(p.kind, AUTH_KIND_JWT);
		CHECK_STR(p.sandbox, "");
		free(t2);
		free(hdr);
		free(pl);
	}

	/* another process (its own random secret) does not accept it */
	struct auth *b = new_auth(&c);
	REQUIRE(b);
	CHECK_RESULT(check_tok(b, tok, now, &p), AUTH_BAD_SIGNATURE);
	auth_free(b);
	free_secret(tok);

	/* what may be issued */
	unsigned rw = AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_EXEC;
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", rw, 60, now, &tok, &exp), 0);
	CHECK_RESULT(check_tok(a, tok, now, &p), AUTH_OK);
	CHECK_INT(p.scopes, rw);
	/* a scoped token may issue for its own sandbox, never beyond its expiry */
	struct auth_principal scoped = p;
	char *tok2 = NULL;
	CHECK_INT(auth_issue_sandbox_token(a, &scoped, sb, "acme", AUTH_SCOPE_EXEC, 3600, now, &tok2,
					   &exp),
		  0);
	CHECK_INT(exp, now + 60);
	free_secret(tok2);
	CHECK_INT(auth_issue_sandbox_token(a, &scoped, sb2, "acme", AUTH_SCOPE_EXEC, 60, now, &tok2,
					   &exp),
		  -EPERM);
	CHECK(tok2 == NULL);
	free_secret(tok);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", AUTH_SCOPE_ADMIN, 60, now, &tok,
					   &exp),
		  -EINVAL);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", 0, 60, now, &tok, &exp), -EINVAL);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", 1u << 7, 60, now, &tok, &exp),
		  -EINVAL);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", AUTH_SCOPE_FILES, 60, now, &tok,
					   &exp),
		  -EPERM); /* the key lacks files */
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, "sb-x", "acme", AUTH_SCOPE_EXEC, 60, now,
					   &tok, &exp),
		  -EINVAL);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", AUTH_SCOPE_EXEC, 0, now, &tok,
					   &exp),
		  -EINVAL);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "acme", AUTH_SCOPE_EXEC,
					   AUTH_SCOPED_MAX_TTL_S + 1, now, &tok, &exp),
		  -EINVAL);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "other", AUTH_SCOPE_EXEC, 60, now, &tok,
					   &exp),
		  -EPERM);
	CHECK_INT(auth_issue_sandbox_token(a, &issuer, sb, "Bad!", AUTH_SCOPE_EXEC, 60, now, &tok,
					   &exp),
		  -EINVAL);
	struct auth_principal nobody = { 0 };
	snprintf(nobody.id, sizeof(nobody.id), "x");
	nobody.scopes = AUTH_SCOPES_ALL;
	CHECK_INT(auth_issue_sandbox_token(a, &nobody, sb, "acme", AUTH_SCOPE_EXEC, 60, now, &tok,
					   &exp),
		  -EPERM);
	/* an admin may issue for a sandbox of another tenant; the token carries
	 * the sandbox's tenant */
	struct auth_principal admin = { .kind = AUTH_KIND_JWT, .scopes = AUTH_SCOPE_ADMIN };
	snprintf(admin.id, sizeof(admin.id), "ops@example.com");
	snprintf(admin.tenant, sizeof(admin.tenant), "ops");
	admin.expires_at = now + 100;
	CHECK_INT(auth_issue_sandbox_token(a, &admin, sb, "acme", AUTH_SCOPE_FILES, 600, now, &tok,
					   &exp),
		  0);
	CHECK_INT(exp, now + 100); /* not beyond the issuer's own expiry */
	CHECK_RESULT(check_tok(a, tok, now, &p), AUTH_OK);
	CHECK_STR(p.tenant, "acme");
	CHECK_STR(p.id, "ops@example.com");
	free_secret(tok);
	admin.expires_at = now;
	CHECK_INT(auth_issue_sandbox_token(a, &admin, sb, "acme", AUTH_SCOPE_FILES, 600, now, &tok,
					   &exp),
		  -EPERM);
	auth_free(a);

	/* a shared secret: two replicas accept each other's tokens */
	c.scoped_token_secret_file = (char *)tpath("scoped.secret");
	write_file("scoped.secret", "scoped-scoped-scoped-scoped-scoped-scoped\n");
	struct auth *r1 = new_auth(&c), *r2 = new_auth(&c);
	REQUIRE(r1 && r2);
	CHECK_INT(auth_issue_sandbox_token(r1, &issuer, sb, "acme", AUTH_SCOPE_EXEC, 60, now, &tok,
					   &exp),
		  0);
	CHECK_RESULT(check_tok(r2, tok, now, &p), AUTH_OK);
	CHECK_STR(p.sandbox, sb);
	/* rotating the shared secret invalidates the tokens */
	write_file("scoped.secret", "another-another-another-another-another-another\n");
	CHECK_INT(auth_reload(r2, false), 1);
	CHECK_RESULT(check_tok(r2, tok, now, &p), AUTH_BAD_SIGNATURE);
	free_secret(tok);
	auth_free(r1);
	auth_free(r2);
}

/* ---- keygen ---- */

/* Run keygen with stdout and stderr captured into out/err (malloc'd). */
static int run_keygen(char **argv, int argc, char **out, char **err)
{
	fflush(stdout);
	fflush(stderr);
	int so = dup(1), se = dup(2);
	const char *po = tpath("keygen.out"), *pe = tpath("keygen.err");
	int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fo, 1);
	dup2(fe, 2);
	int rc = auth_keygen_main(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	close(fo);
	close(fe);
	size_t n;
	if (read_file_bounded(po, 1 << 16, out, &n) != 0 || read_file_bounded(pe, 1 << 16, err, &n) != 0)
		exit(2);
	return rc;
}

static void test_keygen(void)
{
	char *out, *err;
	char *argv[] = { "keygen", "--tenant", "acme", "--scopes", "sandboxes:read,exec,files",
			 "--expires=30d", "--description", "ci: nightly", NULL };
	CHECK_INT(run_keygen(argv, 8, &out, &err), 0);
	/* stdout: the key alone */
	size_t ol = strlen(out);
	CHECK(ol == 4 + 12 + 1 + 52 + 1);
	CHECK(strncmp(out, "sbx_", 4) == 0);
	CHECK(out[ol - 1] == '\n');
	CHECK(strchr(out, '\n') == out + ol - 1);
	out[ol - 1] = '\0';
	CHECK(out[16] == '_');
	for (size_t i = 4; i < ol - 1; i++)
		CHECK(i == 16 || (out[i] >= 'a' && out[i] <= 'z') || (out[i] >= '2' && out[i] <= '7'));
	/* stderr: a comment and the entry, never the key */
	CHECK(strstr(err, out) == NULL);
	CHECK(strstr(err, out + 17) == NULL);
	CHECK(err[0] == '#');
	char *entry = strchr(err, '\n');
	REQUIRE(entry);
	entry++;
	CHECK(strncmp(entry, "  - {id: ", 9) == 0);
	char hex[65];
	sha256_hex(out, hex);
	CHECK(strstr(entry, hex) != NULL);
	CHECK(strstr(entry, "scopes: [\"sandboxes:read\", \"exec\", \"files\"]") != NULL);
	CHECK(strstr(entry, "description: \"ci: nightly\"") != NULL);
	/* appended to a key file, it works */
	char file[2048];
	snprintf(file, sizeof(file), "keys:\n%s", err);
	write_file("keygen.yaml", file);
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("keygen.yaml");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	struct auth_principal p;
	char h[256];
	snprintf(h, sizeof(h), "Bearer %s", out);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);
	CHECK_STR(p.tenant, "acme");
	CHECK_INT(p.scopes, AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_EXEC | AUTH_SCOPE_FILES);
	CHECK(p.expires_at >= now + 30 * 86400 - 5 && p.expires_at <= now + 30 * 86400 + 5);
	CHECK_RESULT(auth_check(a, h, p.expires_at, &p), AUTH_EXPIRED);
	auth_free(a);
	free_secret(out);
	free(err);

	/* a chosen id, an absolute expiry, no description */
	char *argv2[] = { "keygen", "--id", "ci-bot", "--tenant=t1", "--scopes=admin",
			  "--expires", "2099-01-01T00:00:00Z", NULL };
	CHECK_INT(run_keygen(argv2, 7, &out, &err), 0);
	CHECK(strncmp(out, "sbx_ci-bot_", 11) == 0);
	CHECK(strstr(err, "{id: ci-bot, ") != NULL);
	CHECK(strstr(err, "expires: \"2099-01-01T00:00:00Z\"}") != NULL);
	snprintf(file, sizeof(file), "keys:\n%s", err);
	write_file("keygen.yaml", file);
	a = new_auth(&c);
	REQUIRE(a);
	out[strlen(out) - 1] = '\0';
	snprintf(h, sizeof(h), "Bearer %s", out);
	CHECK_RESULT(auth_check(a, h, now, &p), AUTH_OK);
	CHECK_STR(p.id, "ci-bot");
	CHECK_INT(p.scopes, AUTH_SCOPE_ADMIN);
	CHECK_INT(p.expires_at, 4070908800LL);
	auth_free(a);
	free_secret(out);
	free(err);

	/* two keys are never the same */
	char *argv3[] = { "keygen", "--tenant", "a", "--scopes", "exec", NULL };
	char *o1, *o2, *e1, *e2;
	CHECK_INT(run_keygen(argv3, 5, &o1, &e1), 0);
	CHECK_INT(run_keygen(argv3, 5, &o2, &e2), 0);
	CHECK(strcmp(o1, o2) != 0);
	CHECK(strstr(e1, "expires") == NULL);
	free_secret(o1);
	free_secret(o2);
	free(e1);
	free(e2);

	/* usage errors: nothing on stdout */
	static const struct {
		const char *args[6];
		const char *want;
	} bad[] = {
		{ { "--scopes", "exec" }, "--tenant and --scopes are required" },
		{ { "--tenant", "a" }, "--tenant and --scopes are required" },
		{ { "--tenant", "A", "--scopes", "exec" }, "--tenant: not a valid tenant" },
		{ { "--tenant", "a", "--scopes", "exec,nope" }, "\"nope\" is not a scope" },
		{ { "--tenant", "a", "--scopes", "exec,,files" }, "\"\" is not a scope" },
		{ { "--tenant", "a", "--scopes", "" }, "at least one scope" },
		{ { "--tenant", "a", "--scopes", "exec", "--secret" }, "secrets are never taken" },
		{ { "--tenant", "a", "--scopes", "exec", "--id" }, "--id: needs a value" },
		{ { "--tenant", "a", "--scopes", "exec", "--id", "a_b" }, "--id: 1 to 32" },
		{ { "--tenant", "a", "--scopes", "exec", "--expires", "2001-01-01T00:00:00Z" },
		  "--expires: not a duration" },
		{ { "--tenant", "a", "--scopes", "exec", "--expires", "0" }, "--expires" },
		{ { "--tenant", "a", "--scopes", "exec", "--description", "a\"b" }, "--description" },
		{ { "positional" }, "unknown argument" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *av[8] = { "keygen" };
		int ac = 1;
		for (int j = 0; j < 6 && bad[i].args[j]; j++)
			av[ac++] = (char *)bad[i].args[j];
		av[ac] = NULL;
		CHECK_INT(run_keygen(av, ac, &out, &err), 2);
		CHECK_STR(out, "");
		if (!strstr(err, bad[i].want)) {
			t_failed++;
			fprintf(stderr, "  keygen bad[%zu]: \"%s\" lacks \"%s\"\n", i, err, bad[i].want);
		}
		free(out);
		free(err);
	}
	char *help[] = { "keygen", "--help", NULL };
	CHECK_INT(run_keygen(help, 2, &out, &err), 0);
	CHECK(strstr(out, "usage: sandbox-controller keygen") != NULL);
	free(out);
	free(err);
}

/* ---- threads: checks while another thread reloads ---- */

struct race {
	struct auth *a;
	volatile int stop;
	int bad;
};

static void *race_reader(void *arg)
{
	struct race *r = arg;
	char h[256];
	snprintf(h, sizeof(h), "Bearer %s", ka.key);
	while (!r->stop) {
		struct auth_principal p;
		enum auth_result res = auth_check(r->a, h, now, &p);
		if (res != AUTH_OK || strcmp(p.tenant, "acme") != 0)
			r->bad++;
	}
	return NULL;
}

static void test_reload_race(void)
{
	const struct test_key *one[] = { &ka }, *two[] = { &ka, &kb };
	write_keys_file("race.yaml", one, 1);
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("race.yaml");
	struct race r = { .a = new_auth(&c) };
	REQUIRE(r.a);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, race_reader, &r) == 0);
	for (int i = 0; i < 100; i++) {
		write_keys_file("race.yaml", i % 2 ? one : two, i % 2 ? 1 : 2);
		CHECK_INT(auth_reload(r.a, false), 1);
	}
	r.stop = 1;
	pthread_join(th, NULL);
	CHECK_INT(r.bad, 0);
	auth_free(r.a);
}

/* ---- the API key fast path ---- */

/* Every byte value in every position class of a key and of a JWT: only
 * RFC 6750 token characters get past the syntax check, whichever path
 * (the API key format, or the token scan before a JWT) looks at them. */
static bool rfc6750_token_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       strchr("-._~+/=", c) != NULL;
}

static void test_token_chars(void)
{
	const struct test_key *all[] = { &ka };
	write_keys_file("chars.yaml", all, 1);
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("chars.yaml");
	c.jwt_hs256_secret_file = (char *)tpath("hs.secret");
	struct auth *a = new_auth(&c);
	REQUIRE(a);
	struct auth_principal p;
	char h[512];
	size_t idpos = strlen("Bearer sbx_"), secpos = strlen("Bearer sbx_") + strlen(ka.id) + 1;
	char *jwt = hs_token(good_claims());
	int bad = 0;
	for (int v = 1; v < 256; v++) {
		/* a character of the id */
		snprintf(h, sizeof(h), "Bearer %s", ka.key);
		h[idpos + 2] = (char)v;
		enum auth_result r = auth_check(a, h, now, &p);
		bool id_char = (v >= 'a' && v <= 'z') || (v >= '0' && v <= '9') || v == '-';
		if (v == ka.id[2])
			bad += r != AUTH_OK;
		else if (id_char)
			bad += r != AUTH_UNKNOWN_KEY;
		else
			bad += r != AUTH_MALFORMED || p.id[0] != '\0';
		/* a character of the secret */
		snprintf(h, sizeof(h), "Bearer %s", ka.key);
		char was = h[secpos + 10];
		h[secpos + 10] = (char)v;
		r = auth_check(a, h, now, &p);
		bool b32 = (v >= 'a' && v <= 'z') || (v >= '2' && v <= '7');
		if (v == was)
			bad += r != AUTH_OK;
		else if (b32)
			bad += r != AUTH_UNKNOWN_KEY || strcmp(p.id, ka.id) != 0;
		else
			bad += r != AUTH_MALFORMED || p.id[0] != '\0';
		/* a character of a JWT's signature: a token character is bad
		 * base64url or a bad signature; anything else never gets that far */
		snprintf(h, sizeof(h), "Bearer %s", jwt);
		size_t n = strlen(h);
		was = h[n - 5];
		h[n - 5] = (char)v;
		r = auth_check(a, h, now, &p);
		if (v == was)
			bad += r != AUTH_OK;
		else if (!rfc6750_token_char(v) || v == ' ')
			bad += r != AUTH_MALFORMED;
		else
			bad += r == AUTH_OK;
		if (bad)
			fprintf(stderr, "  byte 0x%02x: %s\n", v, auth_result_name(r));
		if (bad)
			break;
	}
	CHECK_INT(bad, 0);
	free(jwt);
	auth_free(a);
}

/* The per-thread digest context: threads that check keys and exit (the
 * context is freed with them: ASan would see a leak or a double free), and
 * one thread checking against successive auth instances (the context is
 * re-initialised with each one's SHA-256, never one that was freed). */
struct kthread {
	struct auth *a;
	int ok, bad;
};

static void *key_checker(void *arg)
{
	struct kthread *t = arg;
	char good[256], wrong[256];
	snprintf(good, sizeof(good), "Bearer %s", ka.key);
	snprintf(wrong, sizeof(wrong), "Bearer %s", ka.key);
	wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'a' ? 'b' : 'a';
	for (int i = 0; i < 200; i++) {
		struct auth_principal p;
		if (auth_check(t->a, good, now, &p) == AUTH_OK && strcmp(p.id, ka.id) == 0)
			t->ok++;
		else
			t->bad++;
		if (auth_check(t->a, wrong, now, &p) != AUTH_UNKNOWN_KEY)
			t->bad++;
	}
	return NULL;
}

static void test_key_digest_threads(void)
{
	const struct test_key *one[] = { &ka };
	write_keys_file("threads.yaml", one, 1);
	struct sbx_auth_config c = base_cfg();
	c.api_keys_file = (char *)tpath("threads.yaml");
	for (int round = 0; round < 3; round++) {
		struct auth *a = new_auth(&c);
		REQUIRE(a);
		struct kthread t[4];
		pthread_t th[4];
		for (int i = 0; i < 4; i++) {
			t[i] = (struct kthread){ .a = a };
			REQUIRE(pthread_create(&th[i], NULL, key_checker, &t[i]) == 0);
		}
		struct kthread self = { .a = a };
		key_checker(&self); /* this thread too, with a new auth each round */
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			CHECK_INT(t[i].ok, 200);
			CHECK_INT(t[i].bad, 0);
		}
		CHECK_INT(self.ok, 200);
		CHECK_INT(self.bad, 0);
		auth_free(a);
	}
}

/* auth.client_certs: the CN a verified client certificate names -> principal */
static void test_client_certs(void)
{
	char *s_runner[] = { "sandboxes:read", "exec" };
	char *s_admin[] = { "admin" };
	char *s_bad[] = { "exec", "root" };
	struct sbx_client_cert certs[] = {
		{ "ci-runner", "acme", s_runner, 2 },
		{ "ops@admin", "ops", s_admin, 1 },
	};
	struct sbx_auth_config c = base_cfg();
	c.client_certs = certs;
	c.nclient_certs = 2;
	struct auth *a = new_auth(&c); /* client certs alone are credentials */
	REQUIRE(a);
	struct auth_principal p;
	CHECK_INT(auth_check_client_cert(a, "ci-runner", &p), AUTH_OK);
	CHECK_INT(p.kind, AUTH_KIND_CERT);
	CHECK_STR(p.id, "ci-runner");
	CHECK_STR(p.tenant, "acme");
	CHECK_INT(p.scopes, AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_EXEC);
	CHECK(!auth_allows(&p, AUTH_SCOPE_FILES));
	CHECK_STR(p.sandbox, "");
	CHECK_INT(auth_check_client_cert(a, "ops@admin", &p), AUTH_OK);
	CHECK(auth_allows(&p, AUTH_SCOPE_FILES | AUTH_SCOPE_ADMIN));
	/* exact: no case folding, no prefixes, nothing unnamed */
	static const char *const unknown[] = { "CI-RUNNER", "ci-runner ", "ci-runne", "ci-runner2",
					      "?", "ops" };
	for (size_t i = 0; i < ARRAY_SIZE(unknown); i++) {
		CHECK_INT(auth_check_client_cert(a, unknown[i], &p), AUTH_UNKNOWN_CERT);
		CHECK_INT(p.kind, AUTH_KIND_NONE);
		CHECK_STR(p.tenant, "");
		CHECK_INT(p.scopes, 0);
		/* the CN is named for the audit when it is a valid one */
		CHECK_STR(p.id, config_valid_client_cn(unknown[i]) ? unknown[i] : "");
	}
	CHECK_INT(auth_check_client_cert(a, NULL, &p), AUTH_MISSING);
	CHECK_INT(auth_check_client_cert(a, "", &p), AUTH_MISSING);
	CHECK_STR(auth_result_name(AUTH_UNKNOWN_CERT), "unknown_client_cert");
	CHECK_STR(auth_kind_name(AUTH_KIND_CERT), "cert");
	auth_free(a);

	/* without any listed: every certificate is unknown */
	struct sbx_auth_config k = base_cfg();
	k.insecure_dev_mode = true;
	a = new_auth(&k);
	REQUIRE(a);
	CHECK_INT(auth_check_client_cert(a, "ci-runner", &p), AUTH_UNKNOWN_CERT);
	auth_free(a);

	/* refused: a scope that is none, a duplicate, an invalid CN */
	certs[1].scopes = s_bad;
	certs[1].nscopes = 2;
	expect_new_fails(&c, "auth.client_certs[1].scopes[1]: \"root\" is not a scope");
	certs[1].scopes = s_admin;
	certs[1].nscopes = 1;
	certs[1].subject_cn = "ci-runner";
	expect_new_fails(&c, "subject_cn \"ci-runner\" is listed twice");
	certs[1].subject_cn = "bad cn";
	expect_new_fails(&c, "auth.client_certs[1]: invalid subject_cn or tenant");
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sbx-test-auth-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	now = (int64_t)time(NULL);
	rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!rsa || !rsa_other || !ec) {
		fprintf(stderr, "key generation failed\n");
		return 2;
	}
	char *pem = pem_of(rsa);
	write_file("rsa.pem", pem);
	free(pem);
	pem = pem_of(ec);
	write_file("ec.pem", pem);
	free(pem);
	char secret[128];
	snprintf(secret, sizeof(secret), "%s\n", hs_secret);
	write_file("hs.secret", secret);
	make_key(&ka, "keyaaaaaaaaa");
	make_key(&kb, "keybbbbbbbbb");
	make_key(&kexp, "expired-key");
	make_key(&kdis, "disabled");
	make_key(&klater, "k2099");

	RUN(test_names);
	RUN(test_client_certs);
	RUN(test_api_keys);
	RUN(test_key_file_reload);
	RUN(test_key_file_errors);
	RUN(test_jwt_valid);
	RUN(test_jwt_attacks);
	RUN(test_jwt_confusion_without_hs);
	RUN(test_jwt_claims);
	RUN(test_jwks);
	RUN(test_secrets);
	RUN(test_insecure_mode);
	RUN(test_scoped_tokens);
	RUN(test_keygen);
	RUN(test_reload_race);
	RUN(test_token_chars);
	RUN(test_key_digest_threads);

	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa_other);
	EVP_PKEY_free(ec);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", tmpdir);
	return test_summary();
}
