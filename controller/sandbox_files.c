/*
 * sandbox_files: see sandbox_files.h.
 */
#include "sandbox_files.h"

#include "exec_policy.h"

#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* ---- 1. paths ---- */

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Absolute, no empty/"."/".." segment, no trailing '/', not "/", no
 * control characters, short enough. */
static bool workspace_ok(const char *ws)
{
	size_t n = strlen(ws);
	if (n < 2 || ws[0] != '/' || ws[n - 1] == '/' || n >= SBX_FILES_PATH_MAX)
		return false;
	const char *seg = ws + 1;
	for (const char *p = ws + 1;; p++) {
		if (*p && is_ctl((unsigned char)*p))
			return false;
		if (*p == '/' || !*p) {
			size_t len = (size_t)(p - seg);
			if (len == 0 || len > SBX_FILES_NAME_MAX ||
			    (len == 1 && seg[0] == '.') ||
			    (len == 2 && seg[0] == '.' && seg[1] == '.'))
				return false;
			if (!*p)
				return true;
			seg = p + 1;
		}
	}
}

static int fail(int rc, const char *c, char *out, size_t outlen, const char **code)
{
	if (outlen)
		out[0] = '\0';
	if (code)
		*code = c;
	return rc;
}

int sandbox_files_resolve_n(const char *workspace, const char *path, size_t pathlen, char *out,
			    size_t outlen, const char **code)
{
	if (!workspace || !workspace_ok(workspace))
		return fail(-EINVAL, "invalid_workspace", out, outlen, code);
	if (!path || pathlen == 0)
		return fail(-EINVAL, "invalid_path", out, outlen, code);
	/* characters first: a NUL or a control character anywhere is invalid,
	 * however long the path */
	for (size_t i = 0; i < pathlen; i++)
		if (is_ctl((unsigned char)path[i]))
			return fail(-EINVAL, "invalid_path", out, outlen, code);
	if (pathlen >= SBX_FILES_PATH_MAX)
		return fail(-ENAMETOOLONG, "path_too_long", out, outlen, code);

	size_t wslen = strlen(workspace);
	const char *rel = path;
	size_t rellen = pathlen;
	if (path[0] == '/') {
		/* absolute: the workspace itself or below it, compared as
		 * given ("//workspace/x" and "/./workspace/x" are outside:
		 * only the part after the workspace is normalised). A ".."
		 * after the workspace is caught below as invalid_path. */
		if (pathlen < wslen || memcmp(path, workspace, wslen) != 0 ||
		    (pathlen > wslen && path[wslen] != '/'))
			return fail(-EPERM, "path_outside_workspace", out, outlen, code);
		rel = path + wslen;
		rellen = pathlen - wslen;
	}

	/* build: workspace, then each kept segment */
	char buf[SBX_FILES_PATH_MAX];
	memcpy(buf, workspace, wslen);
	size_t n = wslen;
	size_t i = 0;
	while (i < rellen) {
		while (i < rellen && rel[i] == '/')
			i++;
		size_t start = i;
		while (i < rellen && rel[i] != '/')
			i++;
		size_t len = i - start;
		if (len == 0 || (len == 1 && rel[start] == '.'))
			continue;
		if (len == 2 && rel[start] == '.' && rel[start + 1] == '.')
			return fail(-EINVAL, "invalid_path", out, outlen, code);
		if (len > SBX_FILES_NAME_MAX)
			return fail(-ENAMETOOLONG, "path_too_long", out, outlen, code);
		if (n + 1 + len >= sizeof(buf))
			return fail(-ENAMETOOLONG, "path_too_long", out, outlen, code);
		buf[n++] = '/';
		memcpy(buf + n, rel + start, len);
		n += len;
	}
	if (n + 1 > outlen)
		return fail(-ENAMETOOLONG, "path_too_long", out, outlen, code);
	memcpy(out, buf, n);
	out[n] = '\0';
	if (code)
		*code = "ok";
	return 0;
}

int sandbox_files_resolve(const char *workspace, const char *path, char *out, size_t outlen,
			  const char **code)
{
	return sandbox_files_resolve_n(workspace, path, path ? strlen(path) : 0, out, outlen,
				       code);
}

/* ---- 2. scripts ---- */

/*
 * Shared prelude. $1 workspace, $2 path (from sandbox_files_resolve).
 * Checks the path's shape again, enters the workspace physically (W), and
 * splits the path below it into d (parent, relative, may be "") and b (last
 * segment; r "" for the workspace itself).
 *   in_ws: is $PWD (physical after cd -P) W or below it?
 *   walk DIR: enter W/DIR one segment at a time with cd -P, checking in_ws
 *     after every step; with mk=1, missing segments are created (after the
 *     check of their parent, so that nothing is created outside).
 */
#define PRELUDE                                                                         \
	"set -f; unset CDPATH; LC_ALL=C; export LC_ALL; ws=$1; p=$2; mk=0; "            \
	"case $ws in /?*) ;; *) exit 50;; esac; "                                       \
	"case $p in \"$ws\") r=;; \"$ws\"/*) r=${p#\"$ws\"/};; *) exit 50;; esac; "     \
	"if [ -n \"$r\" ]; then case /$r/ in *//*|*/./*|*/../*) exit 50;; esac; fi; "   \
	"cd -P -- \"$ws\" 2>/dev/null || exit 48; W=$PWD; "                              \
	"case $r in */*) d=${r%/*}; b=${r##*/};; *) d=; b=$r;; esac; "                   \
	"in_ws() { case $PWD in \"$W\"|\"$W\"/*) return 0;; esac; return 1; }; "        \
	"walk() { [ -z \"$1\" ] && return 0; IFS=/; set -- $1; unset IFS; "             \
	"for s do "                                                                     \
	"if [ ! -d \"./$s\" ]; then "                                                   \
	"if [ -e \"./$s\" ] || [ -L \"./$s\" ]; then exit 44; fi; "                      \
	"[ \"$mk\" = 1 ] || exit 40; "                                                  \
	"mkdir -- \"./$s\" 2>/dev/null || [ -d \"./$s\" ] || exit 49; "                 \
	"fi; "                                                                          \
	"cd -P -- \"./$s\" 2>/dev/null || exit 49; in_ws || exit 41; "                  \
	"done; }; "

/* $3 max bytes, $4 max entries. */
const char sandbox_files_read_script[] =
	PRELUDE
	"L=$3; M=$4; "
	/* size of a file from ls (never reads it) into s; 1 when gone */
	"sz() { s=$(ls -lnd -- \"$1\" 2>/dev/null) || return 1; set -- $s; s=$5; "
	"case $s in ''|*[!0-9]*) return 1;; esac; return 0; }; "
	"list() { printf 'D\\n'; set +f; set -- * .[!.]* ..?*; set -f; n=0; "
	"for f do "
	"[ -e \"./$f\" ] || [ -L \"./$f\" ] || continue; "
	"if [ \"$n\" -ge \"$M\" ]; then printf 'T%s\\0\\0' \"$n\"; exit 0; fi; "
	"s=0; "
	"if [ -L \"./$f\" ]; then t=l; "
	"elif [ -d \"./$f\" ]; then t=d; "
	"elif [ -f \"./$f\" ]; then t=f; sz \"./$f\" || continue; "
	"else t=o; fi; "
	"printf '%s%s\\0%s\\0' \"$t\" \"$s\" \"$f\"; n=$((n+1)); "
	"done; printf 'E%s\\0\\0' \"$n\"; exit 0; }; "
	"walk \"$d\"; "
	"[ -z \"$r\" ] && list; "
	"[ -L \"./$b\" ] && exit 46; "
	"if [ -d \"./$b\" ]; then cd -P -- \"./$b\" 2>/dev/null || exit 49; in_ws || exit 41; "
	"list; fi; "
	"if [ -f \"./$b\" ]; then sz \"./$b\" || exit 40; [ \"$s\" -gt \"$L\" ] && exit 43; "
	/* open before the header, so that a refusal comes before any output */
	"{ printf 'F %s\\n' \"$s\" && exec head -c \"$s\"; } 2>/dev/null <\"./$b\"; exit 49; fi; "
	"[ -e \"./$b\" ] && exit 47; exit 40";

/* $3 max bytes, $4 expected size or "-", $5 "1" to create parents.
 * The work runs in a subshell; when it fails, the rest of stdin is read and
 * dropped before exiting, so that the sender's writes do not fail on a
 * closed stream before the exit status arrives (the exit status would be
 * lost behind a transport error). */
const char sandbox_files_write_script[] =
	"( " PRELUDE
	"L=$3; E=$4; mk=$5; "
	"case $L in ''|*[!0-9]*) exit 50;; esac; "
	"if [ \"$E\" = - ]; then R=$((L+1)); else "
	"case $E in ''|*[!0-9]*) exit 50;; esac; "
	"[ \"$E\" -gt \"$L\" ] && exit 43; R=$E; fi; "
	"[ -z \"$r\" ] && exit 42; "
	"walk \"$d\"; "
	"[ -L \"./$b\" ] && exit 46; [ -d \"./$b\" ] && exit 42; "
	"if [ -e \"./$b\" ]; then [ -f \"./$b\" ] || exit 47; st=replaced; else st=created; fi; "
	/* claim a temporary name exclusively (noclobber: O_EXCL) */
	"i=0; set -C; "
	"while :; do t=.sbx-upload-$$-$i; "
	"if true 2>/dev/null >\"./$t\"; then break; fi; "
	"[ -e \"./$t\" ] || [ -L \"./$t\" ] || exit 49; "
	"i=$((i+1)); [ \"$i\" -ge 100 ] && exit 49; done; set +C; "
	"fail() { rm -f -- \"./$t\"; exit \"$1\"; }; "
	"trap 'fail 49' HUP INT TERM PIPE; "
	"head -c \"$R\" >\"./$t\" || fail 49; "
	"n=$(wc -c <\"./$t\") || fail 49; set -- $n; n=$1; "
	"if [ \"$E\" = - ]; then [ \"$n\" -ge \"$R\" ] && fail 43; "
	"else [ \"$n\" -ne \"$E\" ] && fail 51; fi; "
	"[ -L \"./$b\" ] && fail 46; [ -d \"./$b\" ] && fail 42; "
	"mv -f -- \"./$t\" \"./$b\" 2>/dev/null || fail 49; "
	"printf '%s\\n' \"$st\" ); "
	"x=$?; [ \"$x\" = 0 ] || cat >/dev/null 2>&1; exit \"$x\"";

const char sandbox_files_delete_script[] =
	PRELUDE
	"[ -z \"$r\" ] && exit 42; "
	"walk \"$d\"; "
	"[ -L \"./$b\" ] && exit 46; "
	"if [ -d \"./$b\" ]; then rmdir -- \"./$b\" 2>/dev/null && exit 0; "
	"[ -d \"./$b\" ] || exit 0; exit 45; fi; "
	"[ -e \"./$b\" ] || exit 40; "
	"rm -f -- \"./$b\" 2>/dev/null || exit 49; "
	"[ -e \"./$b\" ] && exit 49; exit 0";

void sandbox_files_argv_free(char **argv)
{
	exec_argv_free(argv);
}

char **sandbox_files_read_argv(const char *shell, const char *workspace, const char *path,
			       uint64_t max_bytes, size_t max_entries)
{
	char lim[24], ent[24];
	if (max_entries < 1)
		max_entries = 1;
	if (max_entries > SBX_FILES_MAX_ENTRIES)
		max_entries = SBX_FILES_MAX_ENTRIES;
	snprintf(lim, sizeof(lim), "%" PRIu64, max_bytes);
	snprintf(ent, sizeof(ent), "%zu", max_entries);
	const char *parts[] = { shell, "-c", sandbox_files_read_script, "sbx-files",
				workspace, path, lim, ent };
	return exec_argv_build(parts, ARRAY_SIZE(parts));
}

char **sandbox_files_write_argv(const char *shell, const char *workspace, const char *path,
				uint64_t max_bytes, int64_t expected, bool make_parents)
{
	char lim[24], exp[24];
	/* the script adds 1: keep it within 63 bits */
	if (max_bytes > (uint64_t)INT64_MAX - 1)
		max_bytes = (uint64_t)INT64_MAX - 1;
	snprintf(lim, sizeof(lim), "%" PRIu64, max_bytes);
	if (expected < 0)
		snprintf(exp, sizeof(exp), "-");
	else
		snprintf(exp, sizeof(exp), "%" PRId64, expected);
	const char *parts[] = { shell, "-c", sandbox_files_write_script, "sbx-files",
				workspace, path, lim, exp, make_parents ? "1" : "0" };
	return exec_argv_build(parts, ARRAY_SIZE(parts));
}

char **sandbox_files_delete_argv(const char *shell, const char *workspace, const char *path)
{
	const char *parts[] = { shell, "-c", sandbox_files_delete_script, "sbx-files",
				workspace, path };
	return exec_argv_build(parts, ARRAY_SIZE(parts));
}

int sandbox_files_exit_http(int exit_code, const char **code)
{
	int st;
	const char *c;
	switch (exit_code) {
	case 0:
		st = 200, c = "ok";
		break;
	case SBX_FILES_EXIT_NOT_FOUND:
		st = 404, c = "not_found";
		break;
	case SBX_FILES_EXIT_OUTSIDE:
		st = 403, c = "path_outside_workspace";
		break;
	case SBX_FILES_EXIT_IS_DIR:
		st = 409, c = "is_a_directory";
		break;
	case SBX_FILES_EXIT_TOO_LARGE:
		st = 413, c = "file_too_large";
		break;
	case SBX_FILES_EXIT_NOT_DIR:
		st = 409, c = "not_a_directory";
		break;
	case SBX_FILES_EXIT_NOT_EMPTY:
		st = 409, c = "directory_not_empty";
		break;
	case SBX_FILES_EXIT_SYMLINK:
		st = 403, c = "symlink_not_followed";
		break;
	case SBX_FILES_EXIT_NOT_REGULAR:
		st = 409, c = "not_a_regular_file";
		break;
	case SBX_FILES_EXIT_NO_WORKSPACE:
		st = 500, c = "workspace_unavailable";
		break;
	case SBX_FILES_EXIT_IO:
		st = 500, c = "io_error";
		break;
	case SBX_FILES_EXIT_SIZE_MISMATCH:
		st = 400, c = "incomplete_body";
		break;
	default: /* SBX_FILES_EXIT_BAD_ARGS, the shell's own, signals */
		st = 500, c = "internal_error";
		break;
	}
	if (code)
		*code = c;
	return st;
}

/* ---- 3. parsing ---- */

/* Decimal digits [p, p+n) into *v: 1..20 digits, no overflow. */
static bool parse_u64(const char *p, size_t n, uint64_t *v)
{
	if (n == 0 || n > 20)
		return false;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*v = x;
	return true;
}

ssize_t sandbox_files_parse_head(const char *data, size_t len, struct sandbox_files_head *h)
{
	/* "D\n" or "F " 1..20 digits "\n": at most 23 bytes */
	if (len == 0)
		return 0;
	if (data[0] == 'D') {
		if (len < 2)
			return 0;
		if (data[1] != '\n')
			return -EPROTO;
		h->kind = SBX_FILES_KIND_DIR;
		h->size = 0;
		return 2;
	}
	if (data[0] != 'F')
		return -EPROTO;
	if (len < 2)
		return 0;
	if (data[1] != ' ')
		return -EPROTO;
	const char *nl = memchr(data + 2, '\n', len - 2);
	if (!nl)
		return len - 2 > 20 ? -EPROTO : 0;
	uint64_t v;
	if (!parse_u64(data + 2, (size_t)(nl - data - 2), &v))
		return -EPROTO;
	h->kind = SBX_FILES_KIND_FILE;
	h->size = v;
	return nl - data + 1;
}

static char *b64(const unsigned char *p, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	if (!out)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* name with each byte that does not start a well-formed UTF-8 sequence
 * replaced by U+FFFD (EF BF BD); *valid says whether none was. */
static char *utf8_lossy(const char *name, size_t n, bool *valid)
{
	char *out = malloc(3 * n + 1);
	if (!out)
		return NULL;
	size_t k = 0;
	*valid = true;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq_len((const unsigned char *)name + i);
		if (l == 0 || i + l > n) {
			memcpy(out + k, "\xEF\xBF\xBD", 3);
			k += 3;
			i++;
			*valid = false;
		} else {
			memcpy(out + k, name + i, l);
			k += l;
			i += l;
		}
	}
	out[k] = '\0';
	return out;
}

static int add_entry(cJSON *entries, char type, uint64_t size, const char *name, size_t nlen)
{
	static const struct {
		char c;
		const char *s;
	} types[] = { { 'f', "file" }, { 'd', "dir" }, { 'l', "symlink" }, { 'o', "other" } };
	const char *ts = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(types); i++)
		if (types[i].c == type)
			ts = types[i].s;
	if (!ts)
		return -EPROTO;
	bool valid;
	char *disp = utf8_lossy(name, nlen, &valid);
	if (!disp)
		return -ENOMEM;
	cJSON *e = cJSON_CreateObject();
	bool ok = e && cJSON_AddStringToObject(e, "name", disp) &&
		  cJSON_AddStringToObject(e, "type", ts) &&
		  cJSON_AddNumberToObject(e, "size", (double)size);
	free(disp);
	if (ok && !valid) {
		char *raw = b64((const unsigned char *)name, nlen);
		ok = raw && cJSON_AddStringToObject(e, "name_base64", raw);
		free(raw);
	}
	if (!ok || !cJSON_AddItemToArray(entries, e)) {
		cJSON_Delete(e);
		return -ENOMEM;
	}
	return 0;
}

int sandbox_files_parse_listing(const char *path, const char *data, size_t len, cJSON **out)
{
	*out = NULL;
	cJSON *root = cJSON_CreateObject();
	cJSON *entries = NULL;
	int rc = -ENOMEM;
	if (!root || (path && !cJSON_AddStringToObject(root, "path", path)) ||
	    !(entries = cJSON_AddArrayToObject(root, "entries")))
		goto out;
	size_t i = 0;
	uint64_t count = 0, kept = 0;
	bool truncated = false;
	for (;;) {
		rc = -EPROTO;
		/* TYPE SIZE NUL NAME NUL */
		if (i >= len)
			goto out; /* no trailer */
		char type = data[i];
		const char *z = memchr(data + i + 1, '\0', len - i - 1);
		if (!z)
			goto out;
		uint64_t size;
		if (!parse_u64(data + i + 1, (size_t)(z - (data + i + 1)), &size))
			goto out;
		const char *name = z + 1;
		if (name > data + len)
			goto out;
		const char *nz = memchr(name, '\0', (size_t)(data + len - name));
		if (!nz)
			goto out;
		size_t nlen = (size_t)(nz - name);
		i = (size_t)(nz - data) + 1;
		if (type == 'E' || type == 'T') {
			if (nlen != 0 || size != count || i != len)
				goto out;
			if (type == 'T')
				truncated = true;
			break;
		}
		if (nlen == 0 || nlen > SBX_FILES_NAME_MAX || memchr(name, '/', nlen) ||
		    (nlen == 1 && name[0] == '.') ||
		    (nlen == 2 && name[0] == '.' && name[1] == '.'))
			goto out;
		count++;
		if (kept >= SBX_FILES_MAX_ENTRIES) {
			truncated = true;
			if (type != 'f' && type != 'd' && type != 'l' && type != 'o')
				goto out;
			continue;
		}
		if ((rc = add_entry(entries, type, size, name, nlen)) != 0)
			goto out;
		kept++;
	}
	rc = -ENOMEM;
	if (!cJSON_AddBoolToObject(root, "truncated", truncated))
		goto out;
	*out = root;
	return 0;
out:
	cJSON_Delete(root);
	return rc;
}

int sandbox_files_parse_write_result(const char *data, size_t len, bool *created)
{
	if (len == 8 && memcmp(data, "created\n", 8) == 0) {
		*created = true;
		return 0;
	}
	if (len == 9 && memcmp(data, "replaced\n", 9) == 0) {
		*created = false;
		return 0;
	}
	return -EPROTO;
}
