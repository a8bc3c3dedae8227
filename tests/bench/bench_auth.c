/*
 * bench_auth: the cost of one auth_check, per kind of credential, on one
 * thread: an API key (looked up among 1000), an unknown API key (rejected),
 * JWTs signed with HS256, RS256 (2048-bit) and ES256 (P-256), and a
 * sandbox-scoped token. Keys and tokens are made here with OpenSSL.
 *
 * Usage: bench_auth [iterations [filter]]   (200000; filter: run only the
 * cases whose label contains it, e.g. "api key", for a profiler)
 * Prints ns per call; never passes or fails on the figures (ctest -L bench).
 */
#include "auth.h"
#include "sandbox_spec.h"
#include "util.h"

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static const char *path(const char *name)
{
	static char p[4][160];
	static int n;
	char *s = p[n++ % 4];
	snprintf(s, 160, "%s/%s", dir, name);
	return s;
}

static void put(const char *name, const char *content)
{
	FILE *f = fopen(path(name), "w");
	if (!f || fputs(content, f) < 0 || fclose(f) != 0) {
		perror(name);
		exit(2);
	}
}

static char *b64url(const void *in, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = in;
	char *o = malloc(n * 4 / 3 + 4);
	size_t k = 0;
	unsigned acc = 0, bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | p[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			o[k++] = t[(acc >> bits) & 63];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits)
		o[k++] = t[(acc << (6 - bits)) & 63];
	o[k] = '\0';
	return o;
}

/* "Bearer <jwt>" signed with HMAC(secret) or pk (RSA, or EC as r||s) */
static char *bearer_jwt(const char *alg, const char *payload, const char *secret, EVP_PKEY *pk)
{
	char hdr[64];
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	char *h = b64url(hdr, strlen(hdr)), *p = b64url(payload, strlen(payload));
	char in[4096];
	size_t n = (size_t)snprintf(in, sizeof(in), "%s.%s", h, p);
	unsigned char sig[512], der[512];
	size_t sl = 0, dl = sizeof(der);
	if (secret) {
		unsigned ml;
		HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)in, n, sig, &ml);
		sl = ml;
	} else {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
		    EVP_DigestSign(md, der, &dl, (unsigned char *)in, n) != 1)
			exit(2);
		EVP_MD_CTX_free(md);
		if (EVP_PKEY_is_a(pk, "EC")) {
			const unsigned char *q = der;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dl);
			const BIGNUM *r, *s;
			ECDSA_SIG_get0(es, &r, &s);
			BN_bn2binpad(r, sig, 32);
			BN_bn2binpad(s, sig + 32, 32);
			ECDSA_SIG_free(es);
			sl = 64;
		} else {
			memcpy(sig, der, dl);
			sl = dl;
		}
	}
	char *s = b64url(sig, sl);
	size_t tl = n + strlen(s) + 16;
	char *tok = malloc(tl);
	snprintf(tok, tl, "Bearer %s.%s", in, s);
	free(h);
	free(p);
	free(s);
	return tok;
}

static void write_pem(const char *name, EVP_PKEY *k)
{
	FILE *f = fopen(path(name), "w");
	if (!f || PEM_write_PUBKEY(f, k) != 1)
		exit(2);
	fclose(f);
}

static double ns_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const char *filter;

static void run(struct auth *a, const char *label, const char *header, long iters,
		enum auth_result want)
{
	if (filter && !strstr(label, filter))
		return;
	struct auth_principal p;
	int64_t t = wall_time_s();
	if (auth_check(a, header, t, &p) != want) {
		fprintf(stderr, "%s: unexpected result %s\n", label,
			auth_result_name(auth_check(a, header, t, &p)));
		exit(1);
	}
	double start = ns_now();
	for (long i = 0; i < iters; i++)
		if (auth_check(a, header, t, &p) != want)
			exit(1);
	double per = (ns_now() - start) / (double)iters;
	printf("%-26s %9.0f ns/call  %10.0f calls/s\n", label, per, 1e9 / per);
}

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 200000;
	if (iters <= 0)
		iters = 200000;
	filter = argc > 2 ? argv[2] : NULL;
	snprintf(dir, sizeof(dir), "/tmp/sbx-bench-auth-XXXXXX");
	if (!mkdtemp(dir))
		return 2;

	/* 1000 API keys; the one used is in the middle */
	char *keys = malloc(200 * 1001);
	size_t o = (size_t)sprintf(keys, "keys:\n");
	char key[128] = "";
	for (int i = 0; i < 1000; i++) {
		unsigned char raw[32], d[32];
		char sec[60], k[128], hex[65];
		static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
		if (RAND_bytes(raw, sizeof(raw)) != 1)
			return 2;
		for (int j = 0; j < 52; j++) {
			int bit = j * 5, byte = bit / 8;
			unsigned w = (unsigned)raw[byte] << 8 | (byte + 1 < 32 ? raw[byte + 1] : 0);
			sec[j] = b32[(w >> (11 - bit % 8)) & 31];
		}
		sec[52] = '\0';
		snprintf(k, sizeof(k), "sbx_key%05d_%s", i, sec);
		unsigned dl;
		EVP_Digest(k, strlen(k), d, &dl, EVP_sha256(), NULL);
		for (int j = 0; j < 32; j++)
			sprintf(hex + 2 * j, "%02x", d[j]);
		o += (size_t)sprintf(keys + o,
				     "  - {id: key%05d, sha256: %s, tenant: acme, scopes: [exec]}\n", i,
				     hex);
		if (i == 500)
			snprintf(key, sizeof(key), "Bearer %s", k);
	}
	put("keys.yaml", keys);
	free(keys);
	const char *secret = "bench-hs256-secret-bench-hs256-secret-0123456789";
	put("hs.secret", secret);
	EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	write_pem("rs.pem", rsa);
	write_pem("es.pem", ec);

	struct sbx_auth_config c = { 0 };
	char *pems[] = { strdup(path("rs.pem")), strdup(path("es.pem")) };
	c.api_keys_file = strdup(path("keys.yaml"));
	c.jwt_hs256_secret_file = strdup(path("hs.secret"));
	c.jwt_public_keys = pems;
	c.njwt_public_keys = 2;
	c.jwt_issuer = "https://issuer.example";
	c.jwt_audience = "sandbox-controller";
	c.jwt_tenant_claim = "tenant";
	c.jwt_leeway_s = 30;
	char err[512];
	struct auth *a = auth_new(&c, err, sizeof(err));
	if (!a) {
		fprintf(stderr, "auth_new: %s\n", err);
		return 1;
	}

	char payload[512];
	snprintf(payload, sizeof(payload),
		 "{\"iss\":\"https://issuer.example\",\"aud\":\"sandbox-controller\",\"sub\":\"user-1\","
		 "\"tenant\":\"acme\",\"scope\":\"sandboxes:read exec\",\"iat\":%lld,\"exp\":%lld}",
		 (long long)wall_time_s(), (long long)wall_time_s() + 3600);
	char *hs = bearer_jwt("HS256", payload, secret, NULL);
	char *rs = bearer_jwt("RS256", payload, NULL, rsa);
	char *es = bearer_jwt("ES256", payload, NULL, ec);
	struct auth_principal issuer;
	char sb[24], *scoped = NULL, scoped_h[1024];
	int64_t exp;
	if (auth_check(a, key, wall_time_s(), &issuer) != AUTH_OK || sandbox_new_id(sb) != 0 ||
	    auth_issue_sandbox_token(a, &issuer, sb, "acme", AUTH_SCOPE_EXEC, 3600, wall_time_s(),
				     &scoped, &exp) != 0)
		return 1;
	snprintf(scoped_h, sizeof(scoped_h), "Bearer %s", scoped);
	char unknown[128];
	snprintf(unknown, sizeof(unknown), "%.*sx", (int)strlen(key) - 1, key);

	printf("auth_check, %ld calls each, one thread (OpenSSL %s)\n", iters,
	       OpenSSL_version(OPENSSL_VERSION_STRING));
	run(a, "api key (1000 in file)", key, iters, AUTH_OK);
	run(a, "api key, wrong secret", unknown, iters, AUTH_UNKNOWN_KEY);
	run(a, "jwt HS256", hs, iters, AUTH_OK);
	run(a, "scoped token (HS256)", scoped_h, iters, AUTH_OK);
	run(a, "jwt RS256 (2048)", rs, iters, AUTH_OK);
	run(a, "jwt ES256 (P-256)", es, iters, AUTH_OK);

	auth_free(a);
	free_secret(scoped);
	free(hs);
	free(rs);
	free(es);
	free(pems[0]);
	free(pems[1]);
	free(c.api_keys_file);
	free(c.jwt_hs256_secret_file);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : 1;
}
