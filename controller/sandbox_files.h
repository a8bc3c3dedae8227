/*
 * sandbox_files: the part of the files API below HTTP.
 *
 *   PUT    /v1/sandboxes/{id}/files?path=P   raw body -> 201 created / 204 replaced
 *   GET    /v1/sandboxes/{id}/files?path=P   file: raw bytes; directory: JSON listing
 *   DELETE /v1/sandboxes/{id}/files?path=P   -> 204
 *
 * Everything happens over pods/exec (kube_exec.h): the controller runs
 *   SHELL -c SCRIPT sbx-files WORKSPACE PATH ARGS...
 * with the client's path passed as a positional parameter, never
 * interpolated into the script. Two layers of confinement:
 *
 * 1. sandbox_files_resolve() (pure, in the controller) turns the client's
 *    path into a normalised absolute path inside the template's workspace:
 *    no "..", no control characters, no escape, bounded lengths.
 * 2. The scripts (inside the container, at operation time) re-check the
 *    path's shape, then walk from the workspace one directory at a time with
 *    `cd -P` (which resolves symlinks physically) and refuse as soon as
 *    $PWD is not the workspace (resolved the same way) or below it: a
 *    symlinked directory pointing outside is refused (SBX_FILES_EXIT_OUTSIDE).
 *    The final component is never followed when it is a symlink, by any
 *    operation (SBX_FILES_EXIT_SYMLINK): reading, replacing or deleting a
 *    symlink through this API is refused, whether it points inside or out.
 *    Files are then opened by their name relative to the checked directory.
 *
 * What this confinement is: an API contract. The scripts run as the
 * container's user with its privileges, i.e. with exactly the access that
 * POST .../exec already gives the same client; a process in the sandbox that
 * swaps a checked directory or file for a symlink between the check and the
 * use (a race) can only make the API reach what that process can reach
 * itself. The Pod is the security boundary; this keeps the files API from
 * being a way around the workspace by accident or by a crafted path.
 *
 * What the image needs: a POSIX sh (dash, bash, busybox ash) with printf
 * able to print "\0", and cat, head (-c), wc (-c), ls (-l -n -d), mv (-f),
 * rm (-f), rmdir, mkdir: all in coreutils and in busybox. Numbers up to
 * 4 GiB are compared with test -gt, which needs 64-bit shell arithmetic
 * (dash, bash, busybox with its default FEATURE_SH_MATH_64).
 *
 * Decisions:
 *  - ".." segments are refused even when the result would stay inside
 *    ("a/../b"): simpler to reason about, documented, and clients have no
 *    need for them. "." segments and repeated '/' are collapsed, a trailing
 *    '/' is dropped; the workspace root itself is a valid path (listing).
 *  - Bytes >= 0x80 are accepted as they are (file names need not be UTF-8;
 *    a client can address a listed name_base64 name by percent-encoding it).
 *    Control characters are not: a file whose name holds a newline is listed
 *    but cannot be read, replaced or deleted through this API (use exec).
 *  - PUT does not follow or replace symlinks, never writes through a
 *    directory, writes a temporary ".sbx-upload-PID-N" file in the target's
 *    own directory (created exclusively: set -C), checks its size, then
 *    `mv -f` (rename(2), atomic) over the target. A replaced file gets a
 *    fresh mode (0666 & ~umask): the old mode is not kept. Parents are
 *    created only when asked (make_parents), one checked step at a time.
 *    With the expected size given (Content-Length), a short body (client
 *    went away, stdin ended early) is refused and nothing replaced.
 *    A SIGKILLed upload may leave its temporary file behind.
 *  - DELETE removes a regular file (or other non-directory, non-symlink such
 *    as a fifo) or an EMPTY directory; never recursive, never a symlink,
 *    never the workspace root.
 *  - GET of a file answers a header "F SIZE\n" and then exactly SIZE bytes at
 *    most (head -c SIZE): a file that shrank while being read gives fewer
 *    bytes, so the HTTP layer must abort the response then (it has sent
 *    Content-Length). GET of a fifo, socket or device is refused.
 *  - Listings are capped at SBX_FILES_MAX_ENTRIES entries (truncated flag);
 *    the shell still expands the whole directory in memory to sort it.
 *    Sizes come from `ls -lnd` (no file is read); 0 for non-regular entries.
 */
#ifndef SBX_SANDBOX_FILES_H
#define SBX_SANDBOX_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#define SBX_FILES_PATH_MAX 4096  /* bytes of a resolved path, its NUL included */
#define SBX_FILES_NAME_MAX 255   /* bytes of one segment */
#define SBX_FILES_MAX_ENTRIES 10000 /* entries of one listing */

/* Upper bound of a listing's output (header, every record, trailer): what
 * to pass as max_output to kube_exec_run for a GET of a directory. */
#define SBX_FILES_MAX_LISTING_BYTES                                           \
	((size_t)SBX_FILES_MAX_ENTRIES * (1 + 20 + 1 + SBX_FILES_NAME_MAX + 1) + 64)

/* ---- 1. paths (pure) ---- */

/*
 * Resolve a client's path against workspace (absolute, canonical: "/x/y",
 * not "/"). path is relative to workspace ("src/a.py", ".", "a//b/") or
 * absolute inside it ("/workspace/src/a.py", "/workspace"). On success out
 * (outlen bytes) holds the absolute, normalised path and 0 is returned.
 * Otherwise a negative errno-like value, out is "" (when outlen > 0), and
 * *code (when code is not NULL) a stable machine code:
 *   -EINVAL        "invalid_path"           empty path, a control character
 *                                           (0x01-0x1f, 0x7f), any ".." segment
 *   -EPERM         "path_outside_workspace" absolute path not in workspace
 *   -ENAMETOOLONG  "path_too_long"          input or result >= SBX_FILES_PATH_MAX,
 *                                           a segment > SBX_FILES_NAME_MAX, or
 *                                           the result does not fit outlen
 *   -EINVAL        "invalid_workspace"      workspace not absolute and canonical
 *                                           (a configuration error: HTTP 500)
 * On success *code is "ok".
 */
int sandbox_files_resolve(const char *workspace, const char *path, char *out, size_t outlen,
			  const char **code);

/* The same for a path of pathlen bytes that may hold NUL bytes (a decoded
 * query string): an embedded NUL is "invalid_path". */
int sandbox_files_resolve_n(const char *workspace, const char *path, size_t pathlen, char *out,
			    size_t outlen, const char **code);

/* ---- 2. the scripts and their argv ---- */

/*
 * Exit codes of the scripts, and the HTTP status and machine code that
 * sandbox_files_exit_http() maps them to. 0 is success. Any other code
 * (the shell's own 1/2/126/127, a signal's 128+N) is an internal error.
 */
#define SBX_FILES_EXIT_NOT_FOUND 40   /* 404 not_found: target or a parent missing */
#define SBX_FILES_EXIT_OUTSIDE 41     /* 403 path_outside_workspace: a directory on the
				       * way resolves (symlink) outside the workspace */
#define SBX_FILES_EXIT_IS_DIR 42      /* 409 is_a_directory: PUT onto a directory, PUT
				       * or DELETE of the workspace root */
#define SBX_FILES_EXIT_TOO_LARGE 43   /* 413 file_too_large: GET of a file over the
				       * limit, PUT body over the limit */
#define SBX_FILES_EXIT_NOT_DIR 44     /* 409 not_a_directory: a parent is a file */
#define SBX_FILES_EXIT_NOT_EMPTY 45   /* 409 directory_not_empty: DELETE of a directory
				       * that has entries (or cannot be removed) */
#define SBX_FILES_EXIT_SYMLINK 46     /* 403 symlink_not_followed: the final component
				       * is a symlink (any operation) */
#define SBX_FILES_EXIT_NOT_REGULAR 47 /* 409 not_a_regular_file: fifo, socket, device */
#define SBX_FILES_EXIT_NO_WORKSPACE 48 /* 500 workspace_unavailable: cannot enter it */
#define SBX_FILES_EXIT_IO 49          /* 500 io_error: create, write, rename or
				       * remove failed (permissions, disk full) */
#define SBX_FILES_EXIT_BAD_ARGS 50    /* 500 internal_error: the script was called
				       * with a path not in the workspace, etc. */
#define SBX_FILES_EXIT_SIZE_MISMATCH 51 /* 400 incomplete_body: PUT body shorter
					 * than the expected size */

/*
 * HTTP status for a script's exit code (200 for 0: the caller picks 201/204
 * for PUT and DELETE), and a stable machine code in *code (may be NULL).
 */
int sandbox_files_exit_http(int exit_code, const char **code);

/*
 * GET: `SHELL -c sandbox_files_read_script sbx-files WORKSPACE PATH MAX_BYTES
 * MAX_ENTRIES`. stdout is a header, then:
 *   "F SIZE\n" then at most SIZE raw bytes (the file; SIZE <= MAX_BYTES)
 *   "D\n"      then the listing (sandbox_files_parse_listing)
 * Listing records, one per entry other than "." and "..", in the shell's
 * glob order under LC_ALL=C: names not starting with '.' in byte order, then
 * those starting with one '.', then those starting with "..":
 *   TYPE SIZE '\0' NAME '\0'
 * TYPE one byte: 'f' regular file, 'd' directory, 'l' symlink (not
 * followed), 'o' other; SIZE decimal digits (0 unless 'f'); NAME the raw
 * bytes of the name (anything but '/' and NUL, newlines included). Then a
 * trailer: "E" COUNT "\0\0" when all COUNT entries were listed, or
 * "T" COUNT "\0\0" when there were more than MAX_ENTRIES (COUNT listed).
 * max_entries is clamped to 1..SBX_FILES_MAX_ENTRIES.
 */
char **sandbox_files_read_argv(const char *shell, const char *workspace, const char *path,
			       uint64_t max_bytes, size_t max_entries);

/*
 * PUT: `SHELL -c sandbox_files_write_script sbx-files WORKSPACE PATH MAX_BYTES
 * EXPECTED MKDIR`. stdin is the body. EXPECTED is the size from
 * Content-Length, or "-" (expected < 0: unknown); MKDIR "1" to create
 * missing parent directories. With EXPECTED the script reads exactly that
 * many bytes (fewer, i.e. stdin ended early: 51); without it, up to
 * MAX_BYTES + 1 bytes until EOF (one more than MAX_BYTES: 43), which needs
 * stdin to be closed (v5.channel.k8s.io: kube_exec_close_stdin; v4 cannot,
 * so give EXPECTED there). expected > max_bytes is refused at once (43); the
 * HTTP layer should rather answer 413 without running anything.
 * When it fails, the script reads and drops the rest of stdin before it
 * exits, so that the sender's writes still succeed and the exit status
 * arrives (kube_exec reports a transport error, not the status, when the
 * command exits while stdin is still being written); the HTTP layer must
 * therefore stop feeding stdin after MAX_BYTES + 1 bytes and close it.
 * On success stdout is "created\n" or "replaced\n"
 * (sandbox_files_parse_write_result). max_bytes is clamped to
 * INT64_MAX - 1 (the script adds 1).
 */
char **sandbox_files_write_argv(const char *shell, const char *workspace, const char *path,
				uint64_t max_bytes, int64_t expected, bool make_parents);

/* DELETE: `SHELL -c sandbox_files_delete_script sbx-files WORKSPACE PATH`. */
char **sandbox_files_delete_argv(const char *shell, const char *workspace, const char *path);

/*
 * The builders return a NULL-terminated, malloc'd array of malloc'd strings
 * (free with sandbox_files_argv_free), or NULL when out of memory or when
 * shell, workspace or path is NULL (a template with exec.shell "none" has no
 * files API). path must come from sandbox_files_resolve() with the same
 * workspace (the scripts check its shape again, SBX_FILES_EXIT_BAD_ARGS).
 */
void sandbox_files_argv_free(char **argv);

/* The scripts, exported for tests and docs. */
extern const char sandbox_files_read_script[];
extern const char sandbox_files_write_script[];
extern const char sandbox_files_delete_script[];

/* ---- 3. parsing what the scripts print (pure) ---- */

enum sandbox_files_kind {
	SBX_FILES_KIND_FILE,
	SBX_FILES_KIND_DIR,
};

struct sandbox_files_head {
	enum sandbox_files_kind kind;
	uint64_t size; /* FILE: the bytes that follow at most; DIR: 0 */
};

/*
 * Parse the header at the start of a GET's stdout (the first chunk(s) of a
 * stream). Returns the header's length (> 0; the body starts there), 0 when
 * more bytes are needed (at most 24 are ever needed), or -EPROTO when the
 * bytes are not a header.
 */
ssize_t sandbox_files_parse_head(const char *data, size_t len, struct sandbox_files_head *h);

/*
 * Parse a listing (the stdout of a GET after its "D\n" header) into
 *   {"path": PATH, "entries": [{"name": N, "type": "file"|"dir"|"symlink"|
 *    "other", "size": S}, ...], "truncated": BOOL}
 * ("path" omitted when path is NULL). A name that is not valid UTF-8 is
 * given as "name" with each bad byte replaced by U+FFFD (for display) plus
 * "name_base64": the exact bytes, standard base64. Entries beyond
 * SBX_FILES_MAX_ENTRIES are dropped and "truncated" set.
 * Returns 0 and *out (the caller deletes it), -EPROTO for anything malformed
 * (bad record, '/' in a name, ".", "..", an empty or over-long name, a size
 * that is not a number, a missing trailer, a count that disagrees, bytes
 * after the trailer: e.g. output cut by max_output), or -ENOMEM.
 */
int sandbox_files_parse_listing(const char *path, const char *data, size_t len, cJSON **out);

/* PUT's stdout: 0 and *created, or -EPROTO. */
int sandbox_files_parse_write_result(const char *data, size_t len, bool *created);

#endif
