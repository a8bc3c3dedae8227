/*
 * util: shared helpers (see util.h).
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void secure_zero(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

void free_secret(char *s)
{
	if (!s)
		return;
	secure_zero(s, strlen(s));
	free(s);
}

bool ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	const unsigned char *x = a, *y = b;
	size_t n = alen > blen ? alen : blen;
	unsigned char diff = (unsigned char)(alen != blen);
	for (size_t i = 0; i < n; i++) {
		unsigned char cx = i < alen ? x[i] : 0;
		unsigned char cy = i < blen ? y[i] : 0;
		diff |= (unsigned char)(cx ^ cy);
	}
	return diff == 0;
}

int random_bytes(void *p, size_t n)
{
	if (n > INT32_MAX)
		return -EINVAL;
	return RAND_bytes(p, (int)n) == 1 ? 0 : -EIO;
}

double random_unit(void)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static uint64_t state;
	pthread_mutex_lock(&mu);
	if (state == 0) {
		if (random_bytes(&state, sizeof(state)) != 0 || state == 0)
			state = (uint64_t)now_ms() | 1;
	}
	/* xorshift64* */
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	uint64_t r = state * 0x2545F4914F6CDD1DULL;
	pthread_mutex_unlock(&mu);
	return (double)(r >> 11) / (double)(1ULL << 53);
}

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wall_time_s(void)
{
	return (int64_t)time(NULL);
}

void sleep_ms_interruptible(int64_t ms, const volatile int *stop)
{
	int64_t end = now_ms() + ms;
	for (;;) {
		if (stop && *stop)
			return;
		int64_t left = end - now_ms();
		if (left <= 0)
			return;
		if (left > 100)
			left = 100; /* poll the stop flag ten times a second */
		struct timespec ts = { left / 1000, (left % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
}

int read_file_bounded(const char *path, size_t max, char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = 0;
	char *data = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			if (cap > max) {
				rc = -EFBIG;
				goto out;
			}
			size_t ncap = cap ? cap * 2 : 4096;
			if (ncap > max + 1)
				ncap = max + 1;
			/* not realloc: the files read here hold keys and tokens, and
			 * realloc would leave an unwiped copy behind */
			char *p = malloc(ncap + 1);
			if (!p) {
				rc = -ENOMEM;
				goto out;
			}
			if (data) {
				memcpy(p, data, n);
				secure_zero(data, cap + 1);
				free(data);
			}
			data = p;
			cap = ncap;
		}
		ssize_t r = read(fd, data + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			rc = -EFBIG;
			goto out;
		}
	}
	if (!data) {
		data = malloc(1);
		if (!data) {
			rc = -ENOMEM;
			goto out;
		}
	}
	data[n] = '\0';
	*out = data;
	*len = n;
	data = NULL;
out:
	if (data) {
		secure_zero(data, cap + 1);
		free(data);
	}
	close(fd);
	return rc;
}

char *xstrdup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int64_t backoff_ms(unsigned attempt, int64_t base, int64_t cap)
{
	int64_t d = base;
	for (unsigned i = 0; i < attempt && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	return d / 2 + (int64_t)(random_unit() * (double)(d - d / 2));
}

bool double_as_i64(double v, int64_t min, int64_t max, int64_t *out)
{
	/* Both bounds are compared as doubles; 2^63 is exact, so anything that
	 * passes `v < 0x1p63 && v >= -0x1p63` converts without overflow. */
	if (!isfinite(v) || v >= 0x1p63 || v < -0x1p63 || v != trunc(v))
		return false;
	int64_t i = (int64_t)v;
	if (i < min || i > max)
		return false;
	*out = i;
	return true;
}

size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t n;
	uint32_t cp, min;
	if ((c & 0xe0) == 0xc0) {
		n = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0; /* also stops at the NUL */
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}
