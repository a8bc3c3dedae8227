/*
 * util: small helpers shared by every module: secret hygiene, randomness,
 * clocks, bounded file reads, free-and-NULL.
 */
#ifndef SBX_UTIL_H
#define SBX_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Free a pointer and set it to NULL, in one step. */
#define FREE_AND_NULL(p)                                                      \
	do {                                                                  \
		free(p);                                                      \
		(p) = NULL;                                                   \
	} while (0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Overwrite n bytes of p with zeros in a way the compiler cannot elide. */
void secure_zero(void *p, size_t n);

/* free() a NUL-terminated secret after wiping it. NULL is a no-op. */
void free_secret(char *s);

/* Constant-time comparison of two byte strings of possibly different length:
 * the time taken depends only on the lengths, never on where they differ. */
bool ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Fill p with n cryptographically secure random bytes. 0 or -EIO. */
int random_bytes(void *p, size_t n) __attribute__((warn_unused_result));

/* A uniformly distributed double in [0, 1) from a non-cryptographic,
 * thread-safe source: for jitter, never for secrets. */
double random_unit(void);

/* Monotonic clock in milliseconds. */
int64_t now_ms(void);

/* Wall-clock time in seconds since the epoch. */
int64_t wall_time_s(void);

/* Sleep for ms milliseconds, restarting after signals only when
 * *stop is NULL or zero; returns early once *stop becomes non-zero. */
void sleep_ms_interruptible(int64_t ms, const volatile int *stop);

/* Read a whole file of at most max bytes. On success *out is a malloc'd,
 * NUL-terminated copy (the caller frees it) and *len its length. Returns 0,
 * -ENOENT/-EACCES/... (negated errno), or -EFBIG when the file is larger. */
int read_file_bounded(const char *path, size_t max, char **out, size_t *len)
	__attribute__((warn_unused_result));

/* Length of the well-formed UTF-8 sequence at s (1-4), or 0 when the bytes
 * there are not one (stray continuation, overlong form, surrogate, beyond
 * U+10FFFF, truncated: it stops at a NUL). */
size_t utf8_seq_len(const unsigned char *s);

/* The integer value of the JSON-decoded number v when it is finite, has no
 * fractional part and lies in [min, max]: true and *out set; false otherwise
 * (never a float-to-integer conversion out of range, which C leaves
 * undefined). */
bool double_as_i64(double v, int64_t min, int64_t max, int64_t *out);

/* strdup that returns NULL for NULL. */
char *xstrdup_or_null(const char *s);

/* Jittered exponential backoff: base * 2^attempt capped at cap, then a random
 * value in [d/2, d). attempt counts from 0. */
int64_t backoff_ms(unsigned attempt, int64_t base, int64_t cap);

#endif
