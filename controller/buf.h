/*
 * buf: a growable byte buffer with a hard maximum, for everything filled from
 * the network or from files. The data is always NUL-terminated (the NUL is not
 * counted in len), so text can be used as a C string.
 */
#ifndef SBX_BUF_H
#define SBX_BUF_H

#include <stddef.h>

struct buf {
	char *data;   /* NULL until the first append */
	size_t len;   /* bytes held, excluding the terminating NUL */
	size_t cap;   /* bytes allocated */
	size_t max;   /* len never exceeds this */
};

/* Initialise an empty buffer that will refuse to grow beyond max bytes. */
void buf_init(struct buf *b, size_t max);

/* Append n bytes. Returns 0, -E2BIG when the result would exceed max (the
 * buffer is unchanged), or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n)
	__attribute__((warn_unused_result));
int buf_appends(struct buf *b, const char *s) __attribute__((warn_unused_result));
int buf_appendf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), warn_unused_result));

/* Drop the first n bytes (n <= len), keeping the allocation. */
void buf_consume(struct buf *b, size_t n);

/* Empty the buffer, keeping the allocation. */
void buf_reset(struct buf *b);

/* Free the data (wiping it first when wipe is non-zero); the struct stays
 * usable as an empty buffer with the same max. */
void buf_release(struct buf *b);
void buf_release_wipe(struct buf *b);

/* Hand the data to the caller (who frees it with free()); the buffer becomes
 * empty. Returns an empty string rather than NULL for an empty buffer, or NULL
 * when out of memory. */
char *buf_detach(struct buf *b);

#endif
