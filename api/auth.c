/*
 * auth: authentication of API requests (see auth.h for the contract and
 * docs/authentication.md for the operator's view).
 *
 * The key material -- API key entries, JWT verification keys, the scoped
 * token key -- lives in one immutable struct keyset. auth_check takes the
 * read lock for the length of one check; auth_reload builds a whole new set
 * from the files without any lock and swaps it in under the write lock, so a
 * check sees either the old set or the new one, never a mixture, and a file
 * that fails to load never replaces a good set.
 *
 * Everything read from a request is bounded before it is decoded
 * (AUTH_MAX_HEADER), decoded strictly (canonical base64url, one JSON object
 * without duplicate keys) and verified before its claims are believed. Secret
 * bytes are wiped when freed; nothing here logs a token, a key or a secret.
 */
#include "auth.h"
#include "log.h"
#include "sandbox_spec.h"
#include "util.h"
#include "yaml_guard.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <yaml.h>

#define KEY_PREFIX "sbx_"
#define KEY_SECRET_BYTES 32
#define KEY_SECRET_CHARS 52 /* base32 of 32 bytes, unpadded */
#define KEY_GEN_ID_CHARS 12 /* 60 random bits */
#define SHA256_LEN 32
#define KID_MAX 128
#define SUB_MAX 127
#define MAX_DECODED (AUTH_MAX_HEADER / 4 * 3 + 3)
#define MAX_SIG 1024                 /* an 8192-bit RSA signature */
#define MAX_HEADER_MEMBERS 16
#define MAX_CLAIMS 64
#define MAX_AUD 32
#define MAX_SCOPE_NAMES 64
#define SCOPED_ISSUER "sandbox-controller"
#define KEYS_FILE_DEPTH 8
#define PEM_MAX_FILE (64u << 10)
#define MAX_WATCHED (4 + CONFIG_MAX_JWT_PUBLIC_KEYS)
#define LATEST_TIME 253402300799LL   /* 9999-12-31T23:59:59Z */

static const char base32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

/* ---- names ---- */

static const char *const scope_names[] = {
	"sandboxes:read", "sandboxes:write", "exec", "files", "admin",
};

int auth_scope_parse(const char *name, unsigned *bit)
{
	if (!name)
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(scope_names); i++) {
		if (strcmp(name, scope_names[i]) == 0) {
			*bit = 1u << i;
			return 0;
		}
	}
	return -EINVAL;
}

/* auth_scope_parse for a name that is not NUL-terminated. */
static int scope_parse_n(const char *name, size_t n, unsigned *bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(scope_names); i++) {
		if (strlen(scope_names[i]) == n && memcmp(name, scope_names[i], n) == 0) {
			*bit = 1u << i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *auth_scope_name(unsigned bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(scope_names); i++)
		if (bit == 1u << i)
			return scope_names[i];
	return NULL;
}

int auth_scopes_format(unsigned scopes, const char *sep, char *buf, size_t len)
{
	size_t n = 0, seplen = strlen(sep);
	if (len == 0)
		return -ENOSPC;
	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(scope_names); i++) {
		if (!(scopes & (1u << i)))
			continue;
		size_t need = (n ? seplen : 0) + strlen(scope_names[i]);
		if (n + need >= len) {
			buf[0] = '\0';
			return -ENOSPC;
		}
		if (n) {
			memcpy(buf + n, sep, seplen);
			n += seplen;
		}
		memcpy(buf + n, scope_names[i], strlen(scope_names[i]));
		n += strlen(scope_names[i]);
		buf[n] = '\0';
	}
	return (int)n;
}

const char *auth_kind_name(enum auth_kind k)
{
	switch (k) {
	case AUTH_KIND_KEY: return "key";
	case AUTH_KIND_JWT: return "jwt";
	case AUTH_KIND_SANDBOX: return "sandbox";
	case AUTH_KIND_ANONYMOUS: return "anonymous";
	case AUTH_KIND_CERT: return "cert";
	case AUTH_KIND_NONE: break;
	}
	return "none";
}

const char *auth_result_name(enum auth_result r)
{
	switch (r) {
	case AUTH_OK: return "ok";
	case AUTH_MISSING: return "missing";
	case AUTH_MALFORMED: return "malformed";
	case AUTH_UNKNOWN_KEY: return "unknown_key";
	case AUTH_REVOKED: return "revoked";
	case AUTH_EXPIRED: return "expired";
	case AUTH_NOT_YET_VALID: return "not_yet_valid";
	case AUTH_BAD_SIGNATURE: return "bad_signature";
	case AUTH_BAD_ALGORITHM: return "bad_algorithm";
	case AUTH_BAD_ISSUER: return "bad_issuer";
	case AUTH_BAD_AUDIENCE: return "bad_audience";
	case AUTH_UNKNOWN_KID: return "unknown_kid";
	case AUTH_NO_TENANT: return "no_tenant";
	case AUTH_BAD_CLAIMS: return "bad_claims";
	case AUTH_UNKNOWN_CERT: return "unknown_client_cert";
	}
	return "unknown";
}

bool auth_allows(const struct auth_principal *p, unsigned need)
{
	if (!p || p->kind == AUTH_KIND_NONE)
		return false;
	if (p->scopes & AUTH_SCOPE_ADMIN)
		return true;
	return (p->scopes & need) == need;
}

/* ---- encodings ---- */

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Strict base64url (RFC 7515 section 2): the URL-safe alphabet, no padding,
 * no whitespace, and canonical -- the bits after the last whole byte are
 * zero, so every byte string has exactly one encoding and a token cannot be
 * altered without changing what it decodes to. Returns the decoded length,
 * or -1 (invalid) or -2 (longer than max).
 */
static long b64url_decode(const char *s, size_t n, unsigned char *out, size_t max)
{
	if (n % 4 == 1)
		return -1;
	size_t outlen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (outlen > max)
		return -2;
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_value((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0) /* leftover bits must be zero */
		return -1;
	return (long)o;
}

/* base64url without padding of n bytes into out (room for n*4/3+3). */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = tbl[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[o++] = tbl[(acc << (6 - bits)) & 63];
	out[o] = '\0';
	return o;
}

/* Lowercase base32 (RFC 4648 alphabet) without padding; out has room for
 * n*8/5+2. */
static void base32_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[o++] = base32_alphabet[(acc >> bits) & 31];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits)
		out[o++] = base32_alphabet[(acc << (5 - bits)) & 31];
	out[o] = '\0';
}

static bool is_base32(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ---- validators ---- */

static bool valid_tenant(const char *s)
{
	return config_valid_label_n(s, strlen(s), 63);
}

static bool valid_key_id_n(const char *s, size_t n)
{
	return config_valid_label_n(s, n, AUTH_KEY_ID_MAX);
}

/* A JWT sub we can log and store: 1..SUB_MAX printable ASCII characters. */
static bool valid_sub(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > SUB_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* ---- time ---- */

static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static bool take_digits(const char **s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*s)[i];
		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*s += n;
	*out = v;
	return true;
}

/*
 * Unix seconds ("1767225600": decimal digits, no sign) or RFC 3339
 * ("2026-01-01T00:00:00Z", "...T00:00:00.5+02:00"; 't' and 'z' in either
 * case). Fractions are dropped. 0 or -EINVAL.
 */
static int parse_time(const char *s, int64_t *out)
{
	size_t nd = strspn(s, "0123456789");
	if (nd > 0 && s[nd] == '\0') {
		if (nd > 12 || (s[0] == '0' && nd > 1))
			return -EINVAL;
		int64_t v = 0;
		for (size_t i = 0; i < nd; i++)
			v = v * 10 + (s[i] - '0');
		if (v > LATEST_TIME)
			return -EINVAL;
		*out = v;
		return 0;
	}
	int y, mo, d, h, mi, sec;
	const char *p = s;
	if (!take_digits(&p, 4, &y) || *p++ != '-' || !take_digits(&p, 2, &mo) || *p++ != '-' ||
	    !take_digits(&p, 2, &d) || (*p != 'T' && *p != 't'))
		return -EINVAL;
	p++;
	if (!take_digits(&p, 2, &h) || *p++ != ':' || !take_digits(&p, 2, &mi) || *p++ != ':' ||
	    !take_digits(&p, 2, &sec))
		return -EINVAL;
	if (*p == '.') {
		p++;
		size_t nf = strspn(p, "0123456789");
		if (nf == 0 || nf > 9)
			return -EINVAL;
		p += nf;
	}
	int off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;
		if (!take_digits(&p, 2, &oh) || *p++ != ':' || !take_digits(&p, 2, &om) ||
		    oh > 23 || om > 59)
			return -EINVAL;
		off = sign * (oh * 3600 + om * 60);
	} else {
		return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || sec > 60)
		return -EINVAL;
	int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
	if (t < 0 || t > LATEST_TIME)
		return -EINVAL;
	*out = t;
	return 0;
}

static void format_time(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, 32, "%lld", (long long)t);
}

/* ---- key material ---- */

struct api_key {
	char id[AUTH_KEY_ID_MAX + 1];
	unsigned char digest[SHA256_LEN]; /* SHA-256 of the whole key */
	char tenant[64];
	unsigned scopes;
	int64_t expires; /* 0: never */
	bool disabled;
};

enum jwt_key_type { JK_HMAC, JK_RSA, JK_EC };

struct jwt_key {
	enum jwt_key_type type;
	char kid[KID_MAX + 1]; /* "": none, matches any kid */
	EVP_PKEY *pkey;        /* JK_RSA, JK_EC */
	EVP_MAC_CTX *mac;      /* JK_HMAC: keyed; duplicated for each use */
};

struct cert_principal {
	char cn[CONFIG_CLIENT_CN_MAX + 1];
	char tenant[64];
	unsigned scopes;
};

struct keyset {
	struct api_key *keys; /* sorted by id */
	size_t nkeys;
	struct jwt_key jwt[AUTH_MAX_JWT_KEYS + 1]; /* + the HS256 secret */
	size_t njwt;
	EVP_MAC_CTX *scoped; /* keyed with the scoped-token secret */
};

struct file_stamp {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct auth {
	pthread_rwlock_t lock;
	struct keyset *ks; /* lock */

	pthread_mutex_t reload_mu; /* one reload at a time; guards what follows */
	const char *watched[MAX_WATCHED];
	struct file_stamp seen[MAX_WATCHED];
	size_t nwatched;
	int64_t announced; /* last insecure mode warning */

	/* fixed at auth_new */
	char *keys_file, *hs_file, *jwks_file, *scoped_file;
	char **pem_files;
	size_t npem;
	char *issuer, *audience, *tenant_claim;
	int64_t leeway;
	bool insecure;
	unsigned char *hs_env; /* SBX_JWT_HS256_SECRET, when used */
	size_t hs_env_len;
	unsigned char scoped_random[32]; /* when no scoped_file */
	EVP_MD *sha256;
	EVP_MAC *hmac;
	struct cert_principal *certs; /* auth.client_certs, sorted by cn */
	size_t ncerts;
};

static void keyset_free(struct keyset *ks)
{
	if (!ks)
		return;
	if (ks->keys) {
		secure_zero(ks->keys, ks->nkeys * sizeof(*ks->keys));
		free(ks->keys);
	}
	for (size_t i = 0; i < ks->njwt; i++) {
		EVP_PKEY_free(ks->jwt[i].pkey);
		EVP_MAC_CTX_free(ks->jwt[i].mac);
	}
	EVP_MAC_CTX_free(ks->scoped);
	free(ks);
}

/* An HMAC-SHA256 context keyed with secret; NULL on failure. */
static EVP_MAC_CTX *hmac_keyed(struct auth *a, const unsigned char *secret, size_t len)
{
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC_CTX *c = EVP_MAC_CTX_new(a->hmac);
	if (!c || EVP_MAC_init(c, secret, len, params) != 1) {
		EVP_MAC_CTX_free(c);
		return NULL;
	}
	return c;
}

/* HMAC-SHA256 of in with a keyed context (not modified); 0 or -1. */
static int hmac_compute(EVP_MAC_CTX *keyed, const void *in, size_t n,
			unsigned char out[SHA256_LEN])
{
	EVP_MAC_CTX *c = EVP_MAC_CTX_dup(keyed);
	size_t len = 0;
	int ok = c && EVP_MAC_update(c, in, n) == 1 &&
		 EVP_MAC_final(c, out, &len, SHA256_LEN) == 1 && len == SHA256_LEN;
	EVP_MAC_CTX_free(c);
	return ok ? 0 : -1;
}

/* An HMAC secret: the bytes as they are, less one trailing newline; at least
 * AUTH_MIN_SECRET of them, and not a PEM block (a public key offered as an
 * HMAC secret is the algorithm confusion attack's first step). what names
 * the source for the message. 0 or -EINVAL. */
static int check_secret(const unsigned char *s, size_t *len, const char *what, char *err,
			size_t errlen)
{
	size_t n = *len;
	if (n && s[n - 1] == '\n')
		n--;
	if (n && s[n - 1] == '\r')
		n--;
	if (n < AUTH_MIN_SECRET) {
		snprintf(err, errlen,
			 "%s: the secret is %zu bytes; at least %d are needed (e.g. openssl rand -base64 48)",
			 what, n, AUTH_MIN_SECRET);
		return -EINVAL;
	}
	if (n >= 10 && memcmp(s, "-----BEGIN", 10) == 0) {
		snprintf(err, errlen, "%s: holds a PEM block, not an HMAC secret", what);
		return -EINVAL;
	}
	*len = n;
	return 0;
}

static int read_secret_file(const char *path, unsigned char **out, size_t *len, char *err,
			    size_t errlen)
{
	char *data = NULL;
	int rc = read_file_bounded(path, AUTH_MAX_SECRET_FILE, &data, len);
	if (rc) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 rc == -EFBIG ? "larger than 4 KiB" : strerror(-rc));
		return rc;
	}
	rc = check_secret((unsigned char *)data, len, path, err, errlen);
	if (rc) {
		secure_zero(data, *len); /* by length: a secret may hold NUL bytes */
		free(data);
		return rc;
	}
	*out = (unsigned char *)data;
	return 0;
}

/* The key must be an RSA key of at least 2048 bits or a P-256 EC key. */
static int classify_pkey(EVP_PKEY *pk, enum jwt_key_type *type, char *why, size_t whylen)
{
	if (EVP_PKEY_is_a(pk, "RSA")) {
		if (EVP_PKEY_get_bits(pk) < 2048) {
			snprintf(why, whylen, "RSA key of %d bits; at least 2048 are needed",
				 EVP_PKEY_get_bits(pk));
			return -EINVAL;
		}
		*type = JK_RSA;
		return 0;
	}
	if (EVP_PKEY_is_a(pk, "EC")) {
		char group[64] = "";
		size_t glen = 0;
		if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) != 1 ||
		    (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
			snprintf(why, whylen, "EC key on curve \"%s\"; ES256 needs P-256", group);
			return -EINVAL;
		}
		*type = JK_EC;
		return 0;
	}
	snprintf(why, whylen, "not an RSA or EC public key (RS256 or ES256)");
	return -EINVAL;
}

static int load_pem(const char *path, struct jwt_key *k, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	char why[128];
	int rc = read_file_bounded(path, PEM_MAX_FILE, &data, &len);
	if (rc) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 rc == -EFBIG ? "larger than 64 KiB" : strerror(-rc));
		return rc;
	}
	rc = -EINVAL;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	if (!pk) {
		snprintf(err, errlen,
			 "%s: no PEM public key (\"-----BEGIN PUBLIC KEY-----\") in the file", path);
		goto out;
	}
	const char *second = strstr(data, "-----BEGIN");
	if (second && strstr(second + 10, "-----BEGIN")) {
		snprintf(err, errlen, "%s: more than one PEM block: one public key per file",
			 path);
		goto out;
	}
	if (classify_pkey(pk, &k->type, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		goto out;
	}
	k->pkey = pk;
	pk = NULL;
	rc = 0;
out:
	EVP_PKEY_free(pk);
	BIO_free(bio);
	free(data);
	return rc;
}

/* A JWK string member decoded from base64url into out; returns the length
 * or -1. */
static long jwk_b64(const cJSON *jwk, const char *name, unsigned char *out, size_t max)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(jwk, name);
	if (!cJSON_IsString(v))
		return -1;
	return b64url_decode(v->valuestring, strlen(v->valuestring), out, max);
}

static int public_check(EVP_PKEY *pk)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	int ok = c && EVP_PKEY_public_check(c) == 1;
	EVP_PKEY_CTX_free(c);
	return ok ? 0 : -1;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM *params)
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (!c || EVP_PKEY_fromdata_init(c) != 1 ||
	    EVP_PKEY_fromdata(c, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(c);
	if (pk && public_check(pk) != 0) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	return pk;
}

static EVP_PKEY *jwk_rsa(const cJSON *jwk, const char **why)
{
	unsigned char n[1024], e[8];
	long nl = jwk_b64(jwk, "n", n, sizeof(n)), el = jwk_b64(jwk, "e", e, sizeof(e));
	if (nl <= 0 || el <= 0) {
		*why = "needs n and e in base64url (no padding)";
		return NULL;
	}
	BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY *pk = NULL;
	if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) &&
	    (params = OSSL_PARAM_BLD_to_param(bld)) != NULL)
		pk = pkey_fromdata("RSA", params);
	if (!pk)
		*why = "is not a valid RSA public key";
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return pk;
}

static EVP_PKEY *jwk_ec(const cJSON *jwk, const char **why)
{
	const cJSON *crv = cJSON_GetObjectItemCaseSensitive(jwk, "crv");
	if (!cJSON_IsString(crv) || strcmp(crv->valuestring, "P-256") != 0) {
		*why = "crv must be P-256 (ES256)";
		return NULL;
	}
	unsigned char pub[65];
	pub[0] = 0x04; /* uncompressed point */
	if (jwk_b64(jwk, "x", pub + 1, 32) != 32 || jwk_b64(jwk, "y", pub + 33, 32) != 32) {
		*why = "needs x and y of 32 bytes each in base64url (no padding)";
		return NULL;
	}
	char group[] = "prime256v1";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)),
		OSSL_PARAM_construct_end(),
	};
	EVP_PKEY *pk = pkey_fromdata("EC", params);
	if (!pk)
		*why = "is not a valid P-256 public key (not on the curve?)";
	return pk;
}

/*
 * A JWKS file ({"keys": [...]}): RSA keys (n, e) and P-256 EC keys (x, y),
 * each with an optional kid (unique). Keys for something else -- "use" other
 * than "sig", an "alg" other than RS256/ES256 for their type, kty oct or OKP
 * -- are skipped, since an identity provider's set may hold them; a key of a
 * usable type that is broken fails the file. At least one key must remain.
 */
static int load_jwks(const char *path, struct keyset *ks, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	int rc = read_file_bounded(path, AUTH_MAX_JWKS_FILE, &data, &len);
	if (rc) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 rc == -EFBIG ? "larger than 256 KiB" : strerror(-rc));
		return rc;
	}
	rc = -EINVAL;
	cJSON *doc = memchr(data, '\0', len) ? NULL : cJSON_ParseWithOpts(data, NULL, 1);
	const cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
	if (!cJSON_IsObject(doc) || !cJSON_IsArray(keys)) {
		snprintf(err, errlen, "%s: not a JWKS document ({\"keys\": [...]})", path);
		goto out;
	}
	size_t used = 0, i = 0;
	const cJSON *jwk;
	cJSON_ArrayForEach(jwk, keys)
	{
		const char *why = NULL;
		const cJSON *kty = cJSON_GetObjectItemCaseSensitive(jwk, "kty");
		const cJSON *kid = cJSON_GetObjectItemCaseSensitive(jwk, "kid");
		const cJSON *use = cJSON_GetObjectItemCaseSensitive(jwk, "use");
		const cJSON *alg = cJSON_GetObjectItemCaseSensitive(jwk, "alg");
		size_t at = i++;
		if (!cJSON_IsObject(jwk) || !cJSON_IsString(kty)) {
			snprintf(err, errlen, "%s: keys[%zu]: not a JWK (an object with kty)", path,
				 at);
			goto out;
		}
		bool rsa = strcmp(kty->valuestring, "RSA") == 0;
		bool ec = strcmp(kty->valuestring, "EC") == 0;
		if (!rsa && !ec) {
			log_info("%s: keys[%zu]: kty \"%.16s\" skipped (RS256 and ES256 only)", path,
				 at, kty->valuestring);
			continue;
		}
		if ((use && (!cJSON_IsString(use) || strcmp(use->valuestring, "sig") != 0)) ||
		    (alg && (!cJSON_IsString(alg) ||
			     strcmp(alg->valuestring, rsa ? "RS256" : "ES256") != 0))) {
			log_info("%s: keys[%zu]: skipped (not for %s signatures)", path, at,
				 rsa ? "RS256" : "ES256");
			continue;
		}
		if (kid && (!cJSON_IsString(kid) || !*kid->valuestring ||
			    strlen(kid->valuestring) > KID_MAX)) {
			snprintf(err, errlen, "%s: keys[%zu].kid: must be a string of 1 to %d bytes",
				 path, at, KID_MAX);
			goto out;
		}
		if (kid && strcmp(kid->valuestring, AUTH_SCOPED_KID) == 0) {
			snprintf(err, errlen, "%s: keys[%zu].kid: \"%s\" is reserved for scoped tokens",
				 path, at, AUTH_SCOPED_KID);
			goto out;
		}
		for (size_t k = 0; kid && k < ks->njwt; k++) {
			if (strcmp(ks->jwt[k].kid, kid->valuestring) == 0) {
				snprintf(err, errlen, "%s: keys[%zu].kid: \"%.64s\" is used twice",
					 path, at, kid->valuestring);
				goto out;
			}
		}
		if (ks->njwt >= ARRAY_SIZE(ks->jwt)) {
			snprintf(err, errlen, "%s: too many keys (at most %d in all)", path,
				 AUTH_MAX_JWT_KEYS);
			goto out;
		}
		EVP_PKEY *pk = rsa ? jwk_rsa(jwk, &why) : jwk_ec(jwk, &why);
		char cwhy[128];
		enum jwt_key_type type;
		if (!pk) {
			snprintf(err, errlen, "%s: keys[%zu]: %s", path, at, why);
			goto out;
		}
		if (classify_pkey(pk, &type, cwhy, sizeof(cwhy)) != 0) {
			EVP_PKEY_free(pk);
			snprintf(err, errlen, "%s: keys[%zu]: %s", path, at, cwhy);
			goto out;
		}
		struct jwt_key *k = &ks->jwt[ks->njwt++];
		k->type = type;
		k->pkey = pk;
		snprintf(k->kid, sizeof(k->kid), "%s", kid ? kid->valuestring : "");
		used++;
	}
	if (used == 0) {
		snprintf(err, errlen, "%s: no RS256 or ES256 key in the set", path);
		goto out;
	}
	rc = 0;
out:
	cJSON_Delete(doc);
	free(data);
	return rc;
}

/* ---- the API key file (YAML) ---- */

struct kf {
	yaml_document_t *doc;
	const char *file;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 3, 4))) static int kf_err(struct kf *k, const char *path,
							 const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(k->err, k->errlen, "%s: %s%s%s", k->file, path, *path ? ": " : "", msg);
	return -EINVAL;
}

static yaml_node_t *kf_node(struct kf *k, int i)
{
	return yaml_document_get_node(k->doc, i);
}

static bool y_is_null(const yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = (const char *)n->data.scalar.value;
	return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0;
}

/* n is a mapping whose keys are distinct scalars among allowed. */
static int kf_check_map(struct kf *k, yaml_node_t *n, const char *path,
			const char *const *allowed, size_t nallowed)
{
	if (!n || n->type != YAML_MAPPING_NODE)
		return kf_err(k, path, "expected a mapping");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *key = kf_node(k, p->key);
		if (!key || key->type != YAML_SCALAR_NODE ||
		    strlen((const char *)key->data.scalar.value) != key->data.scalar.length)
			return kf_err(k, path, "keys must be scalars");
		const char *ks = (const char *)key->data.scalar.value;
		bool known = false;
		for (size_t a = 0; a < nallowed && !known; a++)
			known = strcmp(ks, allowed[a]) == 0;
		char sub[96];
		snprintf(sub, sizeof(sub), "%s%s%.32s", path, *path ? "." : "", ks);
		for (size_t c = 0; sub[c]; c++)
			if ((unsigned char)sub[c] < 0x20 || sub[c] == 0x7f)
				sub[c] = '?';
		if (!known)
			return kf_err(k, sub, "unknown key");
		for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++)
			if (strcmp((const char *)kf_node(k, q->key)->data.scalar.value, ks) == 0)
				return kf_err(k, sub, "duplicate key");
	}
	return 0;
}

/* The value at key of a checked mapping; NULL when absent or null. */
static yaml_node_t *kf_get(struct kf *k, yaml_node_t *m, const char *key)
{
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
	     p++) {
		if (strcmp((const char *)kf_node(k, p->key)->data.scalar.value, key) == 0) {
			yaml_node_t *v = kf_node(k, p->value);
			return y_is_null(v) ? NULL : v;
		}
	}
	return NULL;
}

/* A scalar of 1..max bytes without control characters. */
static int kf_text(struct kf *k, yaml_node_t *n, const char *path, size_t max, const char **out)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return kf_err(k, path, "expected a scalar");
	const char *v = (const char *)n->data.scalar.value;
	size_t len = strlen(v);
	if (len != n->data.scalar.length)
		return kf_err(k, path, "contains a NUL byte");
	if (len == 0)
		return kf_err(k, path, "must not be empty");
	if (len > max)
		return kf_err(k, path, "too long (at most %zu bytes)", max);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return kf_err(k, path, "must not contain control characters");
	*out = v;
	return 0;
}

static int kf_required(struct kf *k, yaml_node_t *m, const char *path, const char *key,
		       size_t max, const char **out, char *sub, size_t sublen)
{
	snprintf(sub, sublen, "%s.%s", path, key);
	yaml_node_t *n = kf_get(k, m, key);
	if (!n)
		return kf_err(k, sub, "missing");
	return kf_text(k, n, sub, max, out);
}

static int parse_key_entry(struct kf *k, yaml_node_t *n, const char *path, struct api_key *key)
{
	static const char *const fields[] = { "id",      "sha256",   "tenant",     "scopes",
					      "expires", "disabled", "description" };
	char sub[96], item[128];
	const char *v;
	int rc = kf_check_map(k, n, path, fields, ARRAY_SIZE(fields));
	if (rc)
		return rc;

	if ((rc = kf_required(k, n, path, "id", 64, &v, sub, sizeof(sub))) != 0)
		return rc;
	if (!valid_key_id_n(v, strlen(v)))
		return kf_err(k, sub,
			      "\"%.40s\" is not a key id (1 to %d of a-z, 0-9 and '-', starting and ending with a letter or digit)",
			      v, AUTH_KEY_ID_MAX);
	snprintf(key->id, sizeof(key->id), "%s", v);

	if ((rc = kf_required(k, n, path, "sha256", 64, &v, sub, sizeof(sub))) != 0)
		return rc;
	for (size_t i = 0; i < 64; i++) {
		if (!v[i] || hexval(v[i]) < 0)
			return kf_err(k, sub, "must be 64 hexadecimal digits (the SHA-256 of the key)");
		if (i % 2)
			key->digest[i / 2] = (unsigned char)(hexval(v[i - 1]) << 4 | hexval(v[i]));
	}

	if ((rc = kf_required(k, n, path, "tenant", 64, &v, sub, sizeof(sub))) != 0)
		return rc;
	if (!valid_tenant(v))
		return kf_err(k, sub,
			      "\"%.64s\" is not a valid tenant (1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
			      v);
	snprintf(key->tenant, sizeof(key->tenant), "%s", v);

	snprintf(sub, sizeof(sub), "%s.scopes", path);
	yaml_node_t *sc = kf_get(k, n, "scopes");
	if (!sc)
		return kf_err(k, sub, "missing (e.g. [\"sandboxes:read\", \"sandboxes:write\"])");
	if (sc->type != YAML_SEQUENCE_NODE)
		return kf_err(k, sub, "expected a list of scopes");
	size_t count = (size_t)(sc->data.sequence.items.top - sc->data.sequence.items.start);
	if (count == 0)
		return kf_err(k, sub, "at least one scope is needed");
	if (count > 16)
		return kf_err(k, sub, "too many entries");
	for (size_t i = 0; i < count; i++) {
		snprintf(item, sizeof(item), "%s[%zu]", sub, i);
		unsigned bit;
		rc = kf_text(k, kf_node(k, sc->data.sequence.items.start[i]), item, 32, &v);
		if (rc)
			return rc;
		if (auth_scope_parse(v, &bit) != 0)
			return kf_err(k, item,
				      "\"%.32s\" is not a scope (sandboxes:read, sandboxes:write, exec, files, admin)",
				      v);
		key->scopes |= bit;
	}

	snprintf(sub, sizeof(sub), "%s.expires", path);
	yaml_node_t *ex = kf_get(k, n, "expires");
	if (ex) {
		if ((rc = kf_text(k, ex, sub, 40, &v)) != 0)
			return rc;
		if (parse_time(v, &key->expires) != 0 || key->expires == 0)
			return kf_err(k, sub,
				      "\"%.40s\" is not a time (RFC 3339, e.g. 2026-01-31T00:00:00Z, or unix seconds)",
				      v);
	}

	snprintf(sub, sizeof(sub), "%s.disabled", path);
	yaml_node_t *di = kf_get(k, n, "disabled");
	if (di) {
		if ((rc = kf_text(k, di, sub, 8, &v)) != 0)
			return rc;
		if (strcmp(v, "true") == 0)
			key->disabled = true;
		else if (strcmp(v, "false") != 0)
			return kf_err(k, sub, "must be true or false");
	}

	snprintf(sub, sizeof(sub), "%s.description", path);
	yaml_node_t *de = kf_get(k, n, "description");
	return de ? kf_text(k, de, sub, 256, &v) : 0;
}

static int key_cmp(const void *x, const void *y)
{
	return strcmp(((const struct api_key *)x)->id, ((const struct api_key *)y)->id);
}

/*
 * The key file:
 *   keys:
 *     - {id: ..., sha256: ..., tenant: ..., scopes: [...], expires: ..., disabled: true}
 * An empty file, or keys empty or null, holds no keys.
 */
static int parse_keys_file(const char *file, const char *yaml, size_t len, struct keyset *ks,
			   char *err, size_t errlen)
{
	char inner[256];
	int rc = yaml_check_depth(yaml, len, KEYS_FILE_DEPTH, inner, sizeof(inner));
	if (rc) {
		snprintf(err, errlen, "%s: %s", file, inner);
		return rc;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "%s: invalid YAML at line %zu column %zu: %s", file,
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "parse error");
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	struct kf k = { .doc = &doc, .file = file, .err = err, .errlen = errlen };
	static const char *const top[] = { "keys" };
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	yaml_node_t *list = NULL;
	rc = 0;
	if (!y_is_null(root)) {
		rc = kf_check_map(&k, root, "", top, ARRAY_SIZE(top));
		if (!rc)
			list = kf_get(&k, root, "keys");
	}
	if (!rc && list && list->type != YAML_SEQUENCE_NODE)
		rc = kf_err(&k, "keys", "expected a list");
	size_t count = list && !rc ? (size_t)(list->data.sequence.items.top -
					      list->data.sequence.items.start)
				   : 0;
	if (!rc && count > AUTH_MAX_KEYS)
		rc = kf_err(&k, "keys", "too many keys (at most %d)", AUTH_MAX_KEYS);
	if (!rc && count) {
		ks->keys = calloc(count, sizeof(*ks->keys));
		if (!ks->keys)
			rc = -ENOMEM;
	}
	for (size_t i = 0; !rc && i < count; i++) {
		char path[32];
		snprintf(path, sizeof(path), "keys[%zu]", i);
		rc = parse_key_entry(&k, kf_node(&k, list->data.sequence.items.start[i]), path,
				     &ks->keys[i]);
		ks->nkeys = i + 1;
	}
	if (!rc && ks->nkeys > 1) {
		qsort(ks->keys, ks->nkeys, sizeof(*ks->keys), key_cmp);
		for (size_t i = 1; i < ks->nkeys && !rc; i++)
			if (strcmp(ks->keys[i - 1].id, ks->keys[i].id) == 0)
				rc = kf_err(&k, "keys", "key id \"%s\" appears twice", ks->keys[i].id);
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (rc == -ENOMEM)
		snprintf(err, errlen, "%s: out of memory", file);
	return rc;
}

/* ---- loading a whole set ---- */

static int add_hmac_key(struct auth *a, struct keyset *ks, const unsigned char *secret,
			size_t len)
{
	struct jwt_key *k = &ks->jwt[ks->njwt];
	k->type = JK_HMAC;
	k->kid[0] = '\0';
	k->mac = hmac_keyed(a, secret, len);
	if (!k->mac)
		return -ENOMEM;
	ks->njwt++;
	return 0;
}

static int keyset_load(struct auth *a, struct keyset **out, char *err, size_t errlen)
{
	struct keyset *ks = calloc(1, sizeof(*ks));
	unsigned char *secret = NULL;
	size_t slen = 0;
	int rc = ks ? 0 : -ENOMEM;

	if (!rc && a->keys_file) {
		char *data = NULL;
		size_t len = 0;
		rc = read_file_bounded(a->keys_file, AUTH_MAX_KEYS_FILE, &data, &len);
		if (rc)
			snprintf(err, errlen, "%s: cannot read: %s", a->keys_file,
				 rc == -EFBIG ? "larger than 4 MiB" : strerror(-rc));
		else
			rc = parse_keys_file(a->keys_file, data, len, ks, err, errlen);
		free(data);
	}
	if (!rc && a->hs_file) {
		rc = read_secret_file(a->hs_file, &secret, &slen, err, errlen);
		if (!rc)
			rc = add_hmac_key(a, ks, secret, slen);
		secure_zero(secret, slen);
		FREE_AND_NULL(secret);
	} else if (!rc && a->hs_env) {
		rc = add_hmac_key(a, ks, a->hs_env, a->hs_env_len);
	}
	for (size_t i = 0; !rc && i < a->npem; i++) {
		rc = load_pem(a->pem_files[i], &ks->jwt[ks->njwt], err, errlen);
		if (!rc)
			ks->njwt++;
	}
	if (!rc && a->jwks_file)
		rc = load_jwks(a->jwks_file, ks, err, errlen);
	if (!rc && a->scoped_file) {
		rc = read_secret_file(a->scoped_file, &secret, &slen, err, errlen);
		if (!rc && !(ks->scoped = hmac_keyed(a, secret, slen)))
			rc = -ENOMEM;
		secure_zero(secret, slen);
		FREE_AND_NULL(secret);
	} else if (!rc && !(ks->scoped = hmac_keyed(a, a->scoped_random,
						    sizeof(a->scoped_random)))) {
		rc = -ENOMEM;
	}
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "authentication: out of memory");
		keyset_free(ks);
		return rc;
	}
	*out = ks;
	return 0;
}

static void stamp_of(const char *path, struct file_stamp *s)
{
	struct stat st;
	memset(s, 0, sizeof(*s));
	if (stat(path, &st) != 0)
		return;
	s->present = true;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
}

static bool stamp_equal(const struct file_stamp *x, const struct file_stamp *y)
{
	return x->present == y->present && x->dev == y->dev && x->ino == y->ino &&
	       x->size == y->size && x->mtime.tv_sec == y->mtime.tv_sec &&
	       x->mtime.tv_nsec == y->mtime.tv_nsec;
}

static void log_loaded(const struct auth *a, const struct keyset *ks, const char *verb)
{
	size_t n[3] = { 0, 0, 0 };
	for (size_t i = 0; i < ks->njwt; i++)
		n[ks->jwt[i].type]++;
	log_info("authentication %s: %zu API keys, JWT keys: %zu HS256, %zu RS256, %zu ES256, %zu client certificate subjects; scoped tokens signed with %s",
		 verb, ks->nkeys, n[JK_HMAC], n[JK_RSA], n[JK_EC], a->ncerts,
		 a->scoped_file ? "the shared secret" : "a secret of this process");
}

static void announce_insecure(void)
{
	log_warn("INSECURE DEVELOPMENT MODE (auth.insecure_dev_mode): requests without an Authorization header are served as an anonymous admin of tenant \"%s\"; never expose this server to anyone",
		 AUTH_ANONYMOUS_TENANT);
}

/* ---- lifecycle ---- */

static char *dup_or_null(const char *s, int *rc)
{
	if (!s)
		return NULL;
	char *c = strdup(s);
	if (!c)
		*rc = -ENOMEM;
	return c;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	keyset_free(a->ks);
	pthread_rwlock_destroy(&a->lock);
	pthread_mutex_destroy(&a->reload_mu);
	free(a->keys_file);
	free(a->hs_file);
	free(a->jwks_file);
	free(a->scoped_file);
	for (size_t i = 0; i < a->npem; i++)
		free(a->pem_files[i]);
	free(a->pem_files);
	free(a->issuer);
	free(a->audience);
	free(a->tenant_claim);
	if (a->hs_env) {
		secure_zero(a->hs_env, a->hs_env_len);
		free(a->hs_env);
	}
	secure_zero(a->scoped_random, sizeof(a->scoped_random));
	EVP_MD_free(a->sha256);
	EVP_MAC_free(a->hmac);
	free(a->certs);
	free(a);
}

static int cert_cmp(const void *x, const void *y)
{
	return strcmp(((const struct cert_principal *)x)->cn,
		      ((const struct cert_principal *)y)->cn);
}

/* auth.client_certs -> a->certs, sorted; the scope names checked here. */
static int certs_load(struct auth *a, const struct sbx_auth_config *cfg, char *err, size_t errlen)
{
	if (!cfg->nclient_certs)
		return 0;
	if (cfg->nclient_certs > CONFIG_MAX_CLIENT_CERTS) {
		snprintf(err, errlen, "auth.client_certs: too many entries");
		return -1;
	}
	a->certs = calloc(cfg->nclient_certs, sizeof(*a->certs));
	if (!a->certs) {
		snprintf(err, errlen, "authentication: out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->nclient_certs; i++) {
		const struct sbx_client_cert *cc = &cfg->client_certs[i];
		struct cert_principal *cp = &a->certs[i];
		if (!config_valid_client_cn(cc->subject_cn) ||
		    !config_valid_label_n(cc->tenant, cc->tenant ? strlen(cc->tenant) : 0, 63)) {
			snprintf(err, errlen, "auth.client_certs[%zu]: invalid subject_cn or tenant", i);
			return -1;
		}
		snprintf(cp->cn, sizeof(cp->cn), "%s", cc->subject_cn);
		snprintf(cp->tenant, sizeof(cp->tenant), "%s", cc->tenant);
		for (size_t k = 0; k < cc->nscopes; k++) {
			unsigned bit = 0;
			if (auth_scope_parse(cc->scopes[k], &bit) != 0) {
				char shown[40];
				snprintf(shown, sizeof(shown), "%.32s", cc->scopes[k]);
				for (char *q = shown; *q; q++)
					if ((unsigned char)*q < 0x20 || *q == 0x7f)
						*q = '?';
				snprintf(err, errlen,
					 "auth.client_certs[%zu].scopes[%zu]: \"%s\" is not a scope (sandboxes:read, sandboxes:write, exec, files, admin)",
					 i, k, shown);
				return -1;
			}
			cp->scopes |= bit;
		}
		if (!cp->scopes) {
			snprintf(err, errlen, "auth.client_certs[%zu].scopes: list at least one scope", i);
			return -1;
		}
	}
	a->ncerts = cfg->nclient_certs;
	qsort(a->certs, a->ncerts, sizeof(*a->certs), cert_cmp);
	for (size_t i = 1; i < a->ncerts; i++)
		if (strcmp(a->certs[i - 1].cn, a->certs[i].cn) == 0) {
			snprintf(err, errlen, "auth.client_certs: subject_cn \"%s\" is listed twice",
				 a->certs[i].cn);
			return -1;
		}
	return 0;
}

enum auth_result auth_check_client_cert(const struct auth *a, const char *cn,
					struct auth_principal *out)
{
	memset(out, 0, sizeof(*out));
	if (!cn || !*cn)
		return AUTH_MISSING;
	if (!config_valid_client_cn(cn))
		return AUTH_UNKNOWN_CERT;
	/* verified by a trusted CA: the CN is safe to name in the audit */
	snprintf(out->id, sizeof(out->id), "%s", cn);
	if (!a || !a->ncerts)
		return AUTH_UNKNOWN_CERT;
	struct cert_principal probe;
	snprintf(probe.cn, sizeof(probe.cn), "%s", cn);
	const struct cert_principal *cp =
		bsearch(&probe, a->certs, a->ncerts, sizeof(*a->certs), cert_cmp);
	if (!cp)
		return AUTH_UNKNOWN_CERT;
	out->kind = AUTH_KIND_CERT;
	snprintf(out->id, sizeof(out->id), "%s", cp->cn);
	snprintf(out->tenant, sizeof(out->tenant), "%s", cp->tenant);
	out->scopes = cp->scopes;
	return AUTH_OK;
}

struct auth *auth_new(const struct sbx_auth_config *cfg, char *err, size_t errlen)
{
	if (errlen)
		err[0] = '\0';
	struct auth *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "authentication: out of memory");
		return NULL;
	}
	pthread_rwlock_init(&a->lock, NULL);
	pthread_mutex_init(&a->reload_mu, NULL);
	int rc = 0;
	a->keys_file = dup_or_null(cfg->api_keys_file, &rc);
	a->hs_file = dup_or_null(cfg->jwt_hs256_secret_file, &rc);
	a->jwks_file = dup_or_null(cfg->jwt_jwks_file, &rc);
	a->scoped_file = dup_or_null(cfg->scoped_token_secret_file, &rc);
	a->issuer = dup_or_null(cfg->jwt_issuer, &rc);
	a->audience = dup_or_null(cfg->jwt_audience, &rc);
	a->tenant_claim = dup_or_null(cfg->jwt_tenant_claim ? cfg->jwt_tenant_claim : "tenant",
				      &rc);
	a->leeway = cfg->jwt_leeway_s;
	a->insecure = cfg->insecure_dev_mode;
	if (cfg->njwt_public_keys > CONFIG_MAX_JWT_PUBLIC_KEYS) {
		snprintf(err, errlen, "auth.jwt.public_keys: too many files (at most %d)",
			 CONFIG_MAX_JWT_PUBLIC_KEYS);
		goto fail;
	}
	if (cfg->njwt_public_keys) {
		a->pem_files = calloc(cfg->njwt_public_keys, sizeof(*a->pem_files));
		if (!a->pem_files)
			rc = -ENOMEM;
		for (size_t i = 0; a->pem_files && i < cfg->njwt_public_keys; i++) {
			a->pem_files[i] = dup_or_null(cfg->jwt_public_keys[i], &rc);
			a->npem = i + 1;
		}
	}
	a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	a->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (rc || !a->sha256 || !a->hmac || random_bytes(a->scoped_random, 32) != 0) {
		snprintf(err, errlen, "authentication: out of memory, or no SHA-256/HMAC/randomness in OpenSSL");
		goto fail;
	}
	if (cfg->jwt_hs256_secret_env && cfg->jwt_hs256_secret_file) {
		snprintf(err, errlen,
			 "SBX_JWT_HS256_SECRET: auth.jwt.hs256_secret_file is set too: use one of them");
		goto fail;
	}
	if (cfg->jwt_hs256_secret_env) {
		const char *v = getenv("SBX_JWT_HS256_SECRET");
		size_t len = v ? strlen(v) : 0;
		if (check_secret((const unsigned char *)(v ? v : ""), &len, "SBX_JWT_HS256_SECRET",
				 err, errlen) != 0)
			goto fail;
		if (!(a->hs_env = malloc(len))) {
			snprintf(err, errlen, "authentication: out of memory");
			goto fail;
		}
		memcpy(a->hs_env, v, len);
		a->hs_env_len = len;
	}
	if (certs_load(a, cfg, err, errlen) != 0)
		goto fail;
	if (!a->keys_file && !a->hs_file && !a->hs_env && !a->npem && !a->jwks_file &&
	    !a->insecure && !a->ncerts) {
		struct sbx_config c = { .auth = *cfg };
		if (config_check_credentials(&c, err, errlen) == 0)
			snprintf(err, errlen, "auth: no credentials are configured");
		goto fail;
	}
	const char *watch[] = { a->keys_file, a->hs_file, a->jwks_file, a->scoped_file };
	for (size_t i = 0; i < ARRAY_SIZE(watch); i++)
		if (watch[i])
			a->watched[a->nwatched++] = watch[i];
	for (size_t i = 0; i < a->npem; i++)
		a->watched[a->nwatched++] = a->pem_files[i];
	for (size_t i = 0; i < a->nwatched; i++)
		stamp_of(a->watched[i], &a->seen[i]);
	if (keyset_load(a, &a->ks, err, errlen) != 0)
		goto fail;
	log_loaded(a, a->ks, "configured");
	if (a->insecure) {
		announce_insecure();
		a->announced = wall_time_s();
	}
	return a;
fail:
	auth_free(a);
	return NULL;
}

bool auth_insecure(const struct auth *a)
{
	return a && a->insecure;
}

int auth_reload(struct auth *a, bool force)
{
	pthread_mutex_lock(&a->reload_mu);
	int rc = 0;
	if (a->insecure && wall_time_s() - a->announced >= AUTH_INSECURE_REPEAT_S) {
		announce_insecure();
		a->announced = wall_time_s();
	}
	struct file_stamp now[MAX_WATCHED];
	bool changed = force;
	for (size_t i = 0; i < a->nwatched; i++) {
		stamp_of(a->watched[i], &now[i]);
		changed = changed || !stamp_equal(&now[i], &a->seen[i]);
	}
	if (!changed)
		goto out;
	/* the stamps are taken before the files are read: a change during the
	 * read is seen again next time */
	memcpy(a->seen, now, a->nwatched * sizeof(now[0]));
	char err[512];
	struct keyset *ks = NULL;
	rc = keyset_load(a, &ks, err, sizeof(err));
	if (rc) {
		log_warn("authentication: reload failed, the previous keys stay in use: %s", err);
		goto out;
	}
	pthread_rwlock_wrlock(&a->lock);
	struct keyset *old = a->ks;
	a->ks = ks;
	pthread_rwlock_unlock(&a->lock);
	keyset_free(old);
	log_loaded(a, ks, "reloaded");
	rc = 1;
out:
	pthread_mutex_unlock(&a->reload_mu);
	return rc;
}

/* ---- checking: API keys ---- */

/* SHA-256 for the API key check. EVP_Digest allocates, sets up and frees an
 * EVP_MD_CTX at every call: about 45 of the 155 ns it takes for a key here
 * (OpenSSL 3.0). A context kept per thread, re-initialised with md at every
 * call, skips that. Between calls it holds no input (the final step wipes
 * the block buffer; what is left is the digest just computed, which is not
 * a secret: the key file holds the digests). Freed when its thread exits
 * (the main thread's lives until the process ends). auth_check never runs
 * twice at once on one thread, so one context per thread is enough. */
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;
static pthread_key_t sha_key;
static bool sha_key_ok;
static _Thread_local EVP_MD_CTX *sha_ctx;

static void sha_ctx_free(void *c)
{
	EVP_MD_CTX_free(c);
}

static void sha_key_init(void)
{
	sha_key_ok = pthread_key_create(&sha_key, sha_ctx_free) == 0;
}

static int key_digest(const EVP_MD *md, const char *in, size_t n, unsigned char out[SHA256_LEN])
{
	EVP_MD_CTX *c = sha_ctx;
	bool keep = true;
	if (!c) {
		pthread_once(&sha_once, sha_key_init);
		if (!(c = EVP_MD_CTX_new()))
			return -1;
		keep = sha_key_ok && pthread_setspecific(sha_key, c) == 0;
		if (keep)
			sha_ctx = c;
	}
	unsigned int len = 0;
	int ok = EVP_DigestInit_ex2(c, md, NULL) == 1 && EVP_DigestUpdate(c, in, n) == 1 &&
		 EVP_DigestFinal_ex(c, out, &len) == 1 && len == SHA256_LEN;
	if (!keep)
		EVP_MD_CTX_free(c);
	return ok ? 0 : -1;
}

static enum auth_result check_api_key(struct auth *a, const struct keyset *ks, const char *tok,
				      size_t len, int64_t now, struct auth_principal *out)
{
	/* sbx_ ID _ SECRET(52) */
	size_t pre = strlen(KEY_PREFIX);
	if (len < pre + 1 + 1 + KEY_SECRET_CHARS || len > pre + AUTH_KEY_ID_MAX + 1 + KEY_SECRET_CHARS)
		return AUTH_MALFORMED;
	const char *secret = tok + len - KEY_SECRET_CHARS;
	size_t idlen = (size_t)(secret - 1 - (tok + pre));
	if (secret[-1] != '_' || !valid_key_id_n(tok + pre, idlen))
		return AUTH_MALFORMED;
	for (size_t i = 0; i < KEY_SECRET_CHARS; i++)
		if (!is_base32(secret[i]))
			return AUTH_MALFORMED;
	struct api_key probe;
	memcpy(probe.id, tok + pre, idlen);
	probe.id[idlen] = '\0';
	memcpy(out->id, probe.id, idlen + 1);
	const struct api_key *k = ks->nkeys ? bsearch(&probe, ks->keys, ks->nkeys,
						     sizeof(*ks->keys), key_cmp)
					    : NULL;
	if (!k)
		return AUTH_UNKNOWN_KEY;
	unsigned char digest[SHA256_LEN];
	if (key_digest(a->sha256, tok, len, digest) != 0)
		return AUTH_UNKNOWN_KEY;
	bool match = ct_equal(digest, sizeof(digest), k->digest, sizeof(k->digest));
	secure_zero(digest, sizeof(digest));
	if (!match)
		return AUTH_UNKNOWN_KEY;
	/* revoked and expired are told only to the key's holder */
	if (k->disabled)
		return AUTH_REVOKED;
	if (k->expires && now >= k->expires)
		return AUTH_EXPIRED;
	out->kind = AUTH_KIND_KEY;
	/* out is zeroed; k->tenant is a checked label, NUL-terminated */
	memcpy(out->tenant, k->tenant, strnlen(k->tenant, sizeof(out->tenant) - 1) + 1);
	out->scopes = k->scopes;
	out->expires_at = k->expires;
	return AUTH_OK;
}

/* ---- checking: JWTs ---- */

/* o is an object of at most max members with distinct names. cJSON keeps
 * duplicates and answers lookups with the first; another parser would take
 * the last, so a token with both is refused rather than read one way. */
static bool json_object_ok(const cJSON *o, size_t max)
{
	if (!cJSON_IsObject(o))
		return false;
	size_t n = 0;
	for (const cJSON *c = o->child; c; c = c->next) {
		if (++n > max || !c->string)
			return false;
		for (const cJSON *d = o->child; d != c; d = d->next)
			if (strcmp(d->string, c->string) == 0)
				return false;
	}
	return true;
}

static cJSON *json_parse_object(unsigned char *buf, long len, size_t max)
{
	buf[len] = '\0';
	if (memchr(buf, '\0', (size_t)len))
		return NULL;
	cJSON *o = cJSON_ParseWithOpts((const char *)buf, NULL, 1);
	if (o && !json_object_ok(o, max)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* A NumericDate: a number from 0 to LATEST_TIME (fractions dropped). */
static int numeric_date(const cJSON *v, int64_t *out)
{
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > (double)LATEST_TIME)
		return -1;
	*out = (int64_t)v->valuedouble;
	return 0;
}

/* Add the scopes named in the space-separated s; unknown names are an error
 * when strict, else ignored. 0 or -1. */
static int scopes_from_string(const char *s, bool strict, unsigned *scopes, size_t *names)
{
	while (*s) {
		if (*s == ' ') {
			s++;
			continue;
		}
		size_t n = strcspn(s, " ");
		unsigned bit;
		if (++*names > MAX_SCOPE_NAMES)
			return -1;
		if (scope_parse_n(s, n, &bit) == 0)
			*scopes |= bit;
		else if (strict)
			return -1;
		s += n;
	}
	return 0;
}

/* scope (a space-separated string) and scp (an array of strings, or one
 * space-separated string). 0 or -1 (a claim of the wrong type). */
static int claim_scopes(const cJSON *claims, bool strict, unsigned *scopes)
{
	size_t names = 0;
	const cJSON *scope = cJSON_GetObjectItemCaseSensitive(claims, "scope");
	const cJSON *scp = cJSON_GetObjectItemCaseSensitive(claims, "scp");
	*scopes = 0;
	if (scope) {
		if (!cJSON_IsString(scope) ||
		    scopes_from_string(scope->valuestring, strict, scopes, &names) != 0)
			return -1;
	}
	if (scp) {
		if (cJSON_IsString(scp))
			return scopes_from_string(scp->valuestring, strict, scopes, &names);
		if (!cJSON_IsArray(scp))
			return -1;
		const cJSON *e;
		cJSON_ArrayForEach(e, scp)
		{
			if (!cJSON_IsString(e) || strchr(e->valuestring, ' ') ||
			    scopes_from_string(e->valuestring, strict, scopes, &names) != 0)
				return -1;
		}
	}
	return 0;
}

static bool audience_matches(const cJSON *aud, const char *want)
{
	if (cJSON_IsString(aud))
		return strcmp(aud->valuestring, want) == 0;
	if (!cJSON_IsArray(aud) || cJSON_GetArraySize(aud) > MAX_AUD)
		return false;
	const cJSON *e;
	cJSON_ArrayForEach(e, aud)
	{
		if (cJSON_IsString(e) && strcmp(e->valuestring, want) == 0)
			return true;
	}
	return false;
}

/* The claims every token shares: exp (required), nbf, iat, sub, and the
 * tenant from tenant_claim. */
static enum auth_result check_common_claims(const cJSON *claims, const char *tenant_claim,
					    int64_t leeway, int64_t now,
					    struct auth_principal *out)
{
	int64_t exp, t;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, "exp");
	if (!v || numeric_date(v, &exp) != 0)
		return AUTH_BAD_CLAIMS;
	if (now >= exp + leeway)
		return AUTH_EXPIRED;
	if ((v = cJSON_GetObjectItemCaseSensitive(claims, "nbf")) != NULL) {
		if (numeric_date(v, &t) != 0)
			return AUTH_BAD_CLAIMS;
		if (t > now + leeway)
			return AUTH_NOT_YET_VALID;
	}
	if ((v = cJSON_GetObjectItemCaseSensitive(claims, "iat")) != NULL) {
		if (numeric_date(v, &t) != 0)
			return AUTH_BAD_CLAIMS;
		if (t > now + leeway)
			return AUTH_NOT_YET_VALID;
	}
	out->expires_at = exp;
	v = cJSON_GetObjectItemCaseSensitive(claims, "sub");
	if (!cJSON_IsString(v) || !valid_sub(v->valuestring))
		return AUTH_BAD_CLAIMS;
	snprintf(out->id, sizeof(out->id), "%s", v->valuestring);
	v = cJSON_GetObjectItemCaseSensitive(claims, tenant_claim);
	if (!v || cJSON_IsNull(v))
		return AUTH_NO_TENANT;
	if (!cJSON_IsString(v) || !valid_tenant(v->valuestring))
		return AUTH_BAD_CLAIMS;
	snprintf(out->tenant, sizeof(out->tenant), "%s", v->valuestring);
	return AUTH_OK;
}

static enum auth_result check_jwt_claims(const struct auth *a, const cJSON *claims,
					 int64_t now, struct auth_principal *out)
{
	enum auth_result r = check_common_claims(claims, a->tenant_claim, a->leeway, now, out);
	if (r != AUTH_OK)
		return r;
	const cJSON *v;
	if (a->issuer) {
		v = cJSON_GetObjectItemCaseSensitive(claims, "iss");
		if (!cJSON_IsString(v) || strcmp(v->valuestring, a->issuer) != 0)
			return AUTH_BAD_ISSUER;
	}
	if (a->audience &&
	    !audience_matches(cJSON_GetObjectItemCaseSensitive(claims, "aud"), a->audience))
		return AUTH_BAD_AUDIENCE;
	if (claim_scopes(claims, false, &out->scopes) != 0)
		return AUTH_BAD_CLAIMS;
	out->kind = AUTH_KIND_JWT;
	return AUTH_OK;
}

static enum auth_result check_scoped_claims(const cJSON *claims,
					    int64_t now, struct auth_principal *out)
{
	/* our own tokens, from our own clock: no leeway, they end when they say */
	enum auth_result r = check_common_claims(claims, "tenant", 0, now, out);
	if (r != AUTH_OK)
		return r;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, "iss");
	if (!cJSON_IsString(v) || strcmp(v->valuestring, SCOPED_ISSUER) != 0)
		return AUTH_BAD_ISSUER;
	v = cJSON_GetObjectItemCaseSensitive(claims, "sandbox");
	if (!cJSON_IsString(v) || !sandbox_valid_id(v->valuestring) ||
	    strlen(v->valuestring) >= sizeof(out->sandbox))
		return AUTH_BAD_CLAIMS;
	snprintf(out->sandbox, sizeof(out->sandbox), "%s", v->valuestring);
	if (claim_scopes(claims, true, &out->scopes) != 0 || out->scopes == 0 ||
	    (out->scopes & AUTH_SCOPE_ADMIN))
		return AUTH_BAD_CLAIMS;
	out->kind = AUTH_KIND_SANDBOX;
	return AUTH_OK;
}

static bool verify_hmac(EVP_MAC_CTX *key, const char *in, size_t n, const unsigned char *sig,
			size_t siglen)
{
	unsigned char mac[SHA256_LEN];
	if (siglen != SHA256_LEN || hmac_compute(key, in, n, mac) != 0)
		return false;
	bool ok = ct_equal(mac, sizeof(mac), sig, siglen);
	secure_zero(mac, sizeof(mac));
	return ok;
}

static bool verify_pkey(struct auth *a, const struct jwt_key *k, const char *in, size_t n,
			const unsigned char *sig, size_t siglen)
{
	unsigned char der[80];
	const unsigned char *s = sig;
	size_t slen = siglen;
	if (k->type == JK_EC) {
		/* JWS carries r || s (RFC 7518 3.4); OpenSSL verifies DER */
		if (siglen != 64)
			return false;
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
		if (!es || !r || !ss || ECDSA_SIG_set0(es, r, ss) != 1) {
			BN_free(r);
			BN_free(ss);
			ECDSA_SIG_free(es);
			return false;
		}
		int dl = i2d_ECDSA_SIG(es, NULL);
		unsigned char *p = der;
		if (dl <= 0 || (size_t)dl > sizeof(der) || i2d_ECDSA_SIG(es, &p) != dl) {
			ECDSA_SIG_free(es);
			return false;
		}
		ECDSA_SIG_free(es);
		s = der;
		slen = (size_t)dl;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestVerifyInit(md, NULL, a->sha256, NULL, k->pkey) == 1 &&
		  EVP_DigestVerify(md, s, slen, (const unsigned char *)in, n) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

/* Pick the keys a token may be verified with and try them. */
static enum auth_result verify_external(struct auth *a, const struct keyset *ks,
					enum jwt_key_type type, const char *kid,
					const char *in, size_t n, const unsigned char *sig,
					size_t siglen)
{
	const struct jwt_key *cand[ARRAY_SIZE(ks->jwt)];
	size_t nc = 0;
	bool have_type = false;
	for (size_t i = 0; i < ks->njwt; i++)
		have_type = have_type || ks->jwt[i].type == type;
	if (kid) {
		for (size_t i = 0; i < ks->njwt; i++) {
			if (ks->jwt[i].kid[0] && strcmp(ks->jwt[i].kid, kid) == 0) {
				/* the key the token names, and only it */
				if (ks->jwt[i].type != type)
					return AUTH_BAD_ALGORITHM;
				cand[nc++] = &ks->jwt[i];
			}
		}
		/* a key without a kid (PEM file, HS256 secret) stands for any kid */
		for (size_t i = 0; i < ks->njwt && nc == 0; i++)
			if (!ks->jwt[i].kid[0] && ks->jwt[i].type == type)
				cand[nc++] = &ks->jwt[i];
		if (nc == 0)
			return have_type ? AUTH_UNKNOWN_KID : AUTH_BAD_ALGORITHM;
	} else {
		for (size_t i = 0; i < ks->njwt; i++)
			if (ks->jwt[i].type == type)
				cand[nc++] = &ks->jwt[i];
		if (nc == 0)
			return AUTH_BAD_ALGORITHM;
	}
	for (size_t i = 0; i < nc; i++) {
		bool ok = type == JK_HMAC ? verify_hmac(cand[i]->mac, in, n, sig, siglen)
					  : verify_pkey(a, cand[i], in, n, sig, siglen);
		if (ok)
			return AUTH_OK;
	}
	return AUTH_BAD_SIGNATURE;
}

static enum auth_result check_jwt(struct auth *a, const struct keyset *ks, const char *tok,
				  size_t len, int64_t now, struct auth_principal *out)
{
	const char *d1 = memchr(tok, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
	if (!d1 || !d2 || d1 == tok || d2 == d1 + 1 ||
	    memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
		return AUTH_MALFORMED;
	unsigned char hbuf[MAX_DECODED + 1], pbuf[MAX_DECODED + 1], sig[MAX_SIG];
	long hl = b64url_decode(tok, (size_t)(d1 - tok), hbuf, MAX_DECODED);
	long pl = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pbuf, MAX_DECODED);
	long sl = b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), sig, sizeof(sig));
	if (hl <= 0 || pl <= 0 || sl < 0)
		return AUTH_MALFORMED;

	enum auth_result r = AUTH_MALFORMED;
	cJSON *claims = NULL;
	cJSON *hdr = json_parse_object(hbuf, hl, MAX_HEADER_MEMBERS);
	if (!hdr)
		goto out;
	const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
	const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
	/* crit lists extensions the token must not be accepted without: we
	 * implement none, so any crit is refused (RFC 7515 4.1.11) */
	if (!cJSON_IsString(alg) || cJSON_GetObjectItemCaseSensitive(hdr, "crit") ||
	    (kid && (!cJSON_IsString(kid) || !*kid->valuestring ||
		     strlen(kid->valuestring) > KID_MAX)))
		goto out;
	enum jwt_key_type type;
	if (strcmp(alg->valuestring, "HS256") == 0) {
		type = JK_HMAC;
	} else if (strcmp(alg->valuestring, "RS256") == 0) {
		type = JK_RSA;
	} else if (strcmp(alg->valuestring, "ES256") == 0) {
		type = JK_EC;
	} else {
		r = AUTH_BAD_ALGORITHM; /* none, HS384, PS256, ... */
		goto out;
	}
	bool scoped = kid && strcmp(kid->valuestring, AUTH_SCOPED_KID) == 0;
	size_t signed_len = (size_t)(d2 - tok);
	if (scoped) {
		if (type != JK_HMAC)
			r = AUTH_BAD_ALGORITHM;
		else if (!verify_hmac(ks->scoped, tok, signed_len, sig, (size_t)sl))
			r = AUTH_BAD_SIGNATURE;
		else
			r = AUTH_OK;
	} else {
		r = verify_external(a, ks, type, kid ? kid->valuestring : NULL, tok, signed_len,
				    sig, (size_t)sl);
	}
	if (r != AUTH_OK)
		goto out;
	claims = json_parse_object(pbuf, pl, MAX_CLAIMS);
	if (!claims) {
		r = AUTH_MALFORMED;
		goto out;
	}
	r = scoped ? check_scoped_claims(claims, now, out)
		   : check_jwt_claims(a, claims, now, out);
out:
	cJSON_Delete(hdr);
	cJSON_Delete(claims);
	secure_zero(pbuf, (size_t)pl);
	return r;
}

/* ---- checking: the header ---- */

/* RFC 6750 b64token characters: A-Z a-z 0-9 - . _ ~ + / =, as a bitmap of
 * the 128 ASCII codes (this runs over every character of every credential) */
#define TOKEN_BIT(c) (UINT64_C(1) << ((c) & 63))
static const uint64_t token_chars[2] = {
	/* 0..63: + - . / 0-9 = */
	TOKEN_BIT('+') | TOKEN_BIT('-') | TOKEN_BIT('.') | TOKEN_BIT('/') |
		(UINT64_C(0x3ff) << ('0' & 63)) | TOKEN_BIT('='),
	/* 64..127: A-Z _ a-z ~ */
	(UINT64_C(0x3ffffff) << ('A' & 63)) | TOKEN_BIT('_') |
		(UINT64_C(0x3ffffff) << ('a' & 63)) | TOKEN_BIT('~'),
};
#undef TOKEN_BIT

static bool is_token_char(char c)
{
	unsigned char u = (unsigned char)c;
	return u < 128 && ((token_chars[u >> 6] >> (u & 63)) & 1);
}

enum auth_result auth_check(struct auth *a, const char *header, int64_t now,
			    struct auth_principal *out)
{
	memset(out, 0, sizeof(*out));
	size_t n = header ? strnlen(header, AUTH_MAX_HEADER + 1) : 0;
	if (n > AUTH_MAX_HEADER)
		return AUTH_MALFORMED;
	const char *h = header, *end = header + n;
	while (n && (*h == ' ' || *h == '\t'))
		h++;
	while (end > h && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (!header || h == end) {
		if (!a->insecure)
			return AUTH_MISSING;
		out->kind = AUTH_KIND_ANONYMOUS;
		snprintf(out->id, sizeof(out->id), "anonymous");
		snprintf(out->tenant, sizeof(out->tenant), "%s", AUTH_ANONYMOUS_TENANT);
		out->scopes = AUTH_SCOPES_ALL;
		return AUTH_OK;
	}
	/* "Bearer" (any case), one or more spaces, the token */
	if ((size_t)(end - h) < 6 || strncasecmp(h, "Bearer", 6) != 0 ||
	    (h + 6 < end && h[6] != ' '))
		return AUTH_MALFORMED;
	const char *tok = h + 6;
	while (tok < end && *tok == ' ')
		tok++;
	size_t len = (size_t)(end - tok);
	if (len == 0)
		return AUTH_MALFORMED;
	bool api_key = len > strlen(KEY_PREFIX) && memcmp(tok, KEY_PREFIX, strlen(KEY_PREFIX)) == 0;
	/* an API key's own format, which check_api_key checks first, admits
	 * only token characters ([a-z0-9-] in the id, '_', [a-z2-7] in the
	 * secret): the scan would only repeat it */
	if (!api_key)
		for (size_t i = 0; i < len; i++)
			if (!is_token_char(tok[i]))
				return AUTH_MALFORMED;

	pthread_rwlock_rdlock(&a->lock);
	enum auth_result r;
	if (api_key)
		r = check_api_key(a, a->ks, tok, len, now, out);
	else
		r = check_jwt(a, a->ks, tok, len, now, out);
	pthread_rwlock_unlock(&a->lock);
	if (r != AUTH_OK) {
		/* nothing unverified leaves: only a well-formed key's id */
		char id[sizeof(out->id)];
		memcpy(id, out->id, sizeof(id));
		memset(out, 0, sizeof(*out));
		if (r == AUTH_UNKNOWN_KEY || r == AUTH_REVOKED || r == AUTH_EXPIRED)
			memcpy(out->id, id, sizeof(id));
	}
	return r;
}

/* ---- scoped tokens ---- */

int auth_issue_sandbox_token(struct auth *a, const struct auth_principal *issuer,
			     const char *sandbox_id, const char *tenant, unsigned scopes,
			     int ttl_s, int64_t now, char **token, int64_t *expires_at)
{
	*token = NULL;
	const unsigned delegable = AUTH_SCOPE_SANDBOXES_READ | AUTH_SCOPE_SANDBOXES_WRITE |
				   AUTH_SCOPE_EXEC | AUTH_SCOPE_FILES;
	if (!sandbox_id || !sandbox_valid_id(sandbox_id) ||
	    strlen(sandbox_id) >= sizeof(issuer->sandbox) || !tenant || !valid_tenant(tenant) ||
	    ttl_s < 1 || ttl_s > AUTH_SCOPED_MAX_TTL_S || scopes == 0 || (scopes & ~delegable))
		return -EINVAL;
	if (!issuer || issuer->kind == AUTH_KIND_NONE || !auth_allows(issuer, scopes) ||
	    !valid_sub(issuer->id))
		return -EPERM;
	if (!(issuer->scopes & AUTH_SCOPE_ADMIN) && strcmp(issuer->tenant, tenant) != 0)
		return -EPERM;
	if (issuer->sandbox[0] && strcmp(issuer->sandbox, sandbox_id) != 0)
		return -EPERM;
	if (issuer->expires_at && issuer->expires_at <= now)
		return -EPERM;
	int64_t exp = now + ttl_s;
	if (issuer->expires_at && exp > issuer->expires_at)
		exp = issuer->expires_at;

	char scope[64];
	if (auth_scopes_format(scopes, " ", scope, sizeof(scope)) < 0)
		return -EINVAL;
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"" AUTH_SCOPED_KID "\"}";
	cJSON *c = cJSON_CreateObject();
	char *payload = NULL, *tok = NULL;
	int rc = -ENOMEM;
	if (!c || !cJSON_AddStringToObject(c, "iss", SCOPED_ISSUER) ||
	    !cJSON_AddStringToObject(c, "sub", issuer->id) ||
	    !cJSON_AddStringToObject(c, "tenant", tenant) ||
	    !cJSON_AddStringToObject(c, "sandbox", sandbox_id) ||
	    !cJSON_AddStringToObject(c, "scope", scope) ||
	    !cJSON_AddNumberToObject(c, "iat", (double)now) ||
	    !cJSON_AddNumberToObject(c, "exp", (double)exp) ||
	    !(payload = cJSON_PrintUnformatted(c)))
		goto out;
	size_t hl = strlen(header), pl = strlen(payload);
	size_t cap = (hl + pl + SHA256_LEN) * 4 / 3 + 16;
	if (!(tok = malloc(cap)))
		goto out;
	size_t n = b64url_encode((const unsigned char *)header, hl, tok);
	tok[n++] = '.';
	n += b64url_encode((const unsigned char *)payload, pl, tok + n);
	unsigned char mac[SHA256_LEN];
	pthread_rwlock_rdlock(&a->lock);
	int mrc = hmac_compute(a->ks->scoped, tok, n, mac);
	pthread_rwlock_unlock(&a->lock);
	if (mrc != 0)
		goto out;
	tok[n++] = '.';
	n += b64url_encode(mac, sizeof(mac), tok + n);
	secure_zero(mac, sizeof(mac));
	*token = tok;
	tok = NULL;
	*expires_at = exp;
	rc = 0;
out:
	cJSON_Delete(c);
	free(payload);
	free(tok);
	return rc;
}

/* ---- keygen ---- */

static void keygen_usage(FILE *f)
{
	fputs("usage: sandbox-controller keygen --tenant TENANT --scopes SCOPE[,SCOPE...]\n"
	      "                                [--expires 30d|2026-01-31T00:00:00Z] [--id ID]\n"
	      "                                [--description TEXT]\n"
	      "Generates an API key. The key is printed once, alone, on stdout; the entry to\n"
	      "append under \"keys:\" in the key file (auth.api_keys_file) goes to stderr.\n"
	      "Scopes: sandboxes:read, sandboxes:write, exec, files, admin.\n",
	      f);
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]; NULL when argv[*i] is not
 * that flag. A missing value is reported through *missing. */
static const char *flag_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
	const char *arg = argv[*i];
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0)
		return NULL;
	if (arg[n] == '=')
		return arg + n + 1;
	if (arg[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

int auth_keygen_main(int argc, char **argv)
{
	const char *tenant = NULL, *scopes_arg = NULL, *expires_arg = NULL, *id_arg = NULL,
		   *desc = NULL;
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			keygen_usage(stdout);
			return 0;
		}
		if ((v = flag_value(argc, argv, &i, "--tenant", &missing)) != NULL)
			tenant = v;
		else if ((v = flag_value(argc, argv, &i, "--scopes", &missing)) != NULL)
			scopes_arg = v;
		else if ((v = flag_value(argc, argv, &i, "--expires", &missing)) != NULL)
			expires_arg = v;
		else if ((v = flag_value(argc, argv, &i, "--id", &missing)) != NULL)
			id_arg = v;
		else if ((v = flag_value(argc, argv, &i, "--description", &missing)) != NULL)
			desc = v;
		else {
			fprintf(stderr, "keygen: %s: %s\n", argv[i],
				missing ? "needs a value" : "unknown argument (secrets are never taken from the command line)");
			keygen_usage(stderr);
			return 2;
		}
	}
	if (!tenant || !scopes_arg) {
		fprintf(stderr, "keygen: --tenant and --scopes are required\n");
		keygen_usage(stderr);
		return 2;
	}
	if (!valid_tenant(tenant)) {
		fprintf(stderr,
			"keygen: --tenant: not a valid tenant (1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)\n");
		return 2;
	}
	unsigned scopes = 0;
	for (const char *s = scopes_arg; *s;) {
		size_t n = strcspn(s, ",");
		unsigned bit;
		if (n == 0 || scope_parse_n(s, n, &bit) != 0) {
			fprintf(stderr,
				"keygen: --scopes: \"%.*s\" is not a scope (sandboxes:read, sandboxes:write, exec, files, admin)\n",
				(int)(n > 32 ? 32 : n), s);
			return 2;
		}
		scopes |= bit;
		s += n;
		if (*s == ',')
			s++;
	}
	if (scopes == 0) {
		fprintf(stderr, "keygen: --scopes: at least one scope is needed\n");
		return 2;
	}
	int64_t expires = 0;
	if (expires_arg) {
		int64_t d;
		if (duration_parse(expires_arg, &d) == 0 && d > 0 &&
		    d <= LATEST_TIME - wall_time_s()) {
			expires = wall_time_s() + d;
		} else if (parse_time(expires_arg, &expires) != 0 || expires <= wall_time_s()) {
			fprintf(stderr,
				"keygen: --expires: not a duration (90s, 12h, 30d) or a future time (RFC 3339, e.g. 2026-01-31T00:00:00Z)\n");
			return 2;
		}
	}
	if (desc && (strlen(desc) > 256 || strpbrk(desc, "\"\\") ||
		     strspn(desc, " !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~") != strlen(desc))) {
		fprintf(stderr,
			"keygen: --description: at most 256 printable ASCII characters, without '\"' or '\\'\n");
		return 2;
	}

	char id[AUTH_KEY_ID_MAX + 1];
	unsigned char raw[KEY_SECRET_BYTES];
	if (id_arg) {
		if (!valid_key_id_n(id_arg, strlen(id_arg))) {
			fprintf(stderr,
				"keygen: --id: 1 to %d of a-z, 0-9 and '-', starting and ending with a letter or digit\n",
				AUTH_KEY_ID_MAX);
			return 2;
		}
		snprintf(id, sizeof(id), "%s", id_arg);
	} else {
		unsigned char r[8];
		char b32[16];
		if (random_bytes(r, sizeof(r)) != 0) {
			fprintf(stderr, "keygen: no randomness\n");
			return 1;
		}
		base32_encode(r, sizeof(r), b32);
		memcpy(id, b32, KEY_GEN_ID_CHARS);
		id[KEY_GEN_ID_CHARS] = '\0';
	}
	if (random_bytes(raw, sizeof(raw)) != 0) {
		fprintf(stderr, "keygen: no randomness\n");
		return 1;
	}
	char secret[KEY_SECRET_CHARS + 2];
	base32_encode(raw, sizeof(raw), secret);
	secure_zero(raw, sizeof(raw));
	char key[sizeof(KEY_PREFIX) + AUTH_KEY_ID_MAX + 1 + sizeof(secret)];
	int klen = snprintf(key, sizeof(key), KEY_PREFIX "%s_%s", id, secret);
	secure_zero(secret, sizeof(secret));
	unsigned char digest[SHA256_LEN];
	char hex[2 * SHA256_LEN + 1];
	unsigned int dlen = 0;
	if (klen <= 0 || EVP_Digest(key, (size_t)klen, digest, &dlen, EVP_sha256(), NULL) != 1) {
		secure_zero(key, sizeof(key));
		fprintf(stderr, "keygen: SHA-256 failed\n");
		return 1;
	}
	hex_encode(digest, sizeof(digest), hex);

	char list[96] = "";
	size_t ln = 0;
	for (size_t i = 0; i < ARRAY_SIZE(scope_names); i++)
		if (scopes & (1u << i))
			ln += (size_t)snprintf(list + ln, sizeof(list) - ln, "%s\"%s\"",
					       ln ? ", " : "", scope_names[i]);
	char when[32] = "";
	if (expires)
		format_time(expires, when);

	printf("%s\n", key);
	fflush(stdout);
	secure_zero(key, sizeof(key));
	fprintf(stderr,
		"# API key \"%s\" for tenant \"%s\": the key above is shown only this once. Append this entry under \"keys:\" in the key file:\n",
		id, tenant);
	fprintf(stderr, "  - {id: %s, sha256: %s, tenant: %s, scopes: [%s]", id, hex, tenant,
		list);
	if (expires)
		fprintf(stderr, ", expires: \"%s\"", when);
	if (desc)
		fprintf(stderr, ", description: \"%s\"", desc);
	fputs("}\n", stderr);
	fflush(stderr);
	return 0;
}
