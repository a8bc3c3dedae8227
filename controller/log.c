/*
 * log: JSON-lines records {"ts":...,"level":...,"msg":...} built in a stack
 * buffer and written with one write(2). Messages longer than the buffer are
 * truncated (and say so) rather than allocated: logging must not fail.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_JSON;
static int log_fd = 2;

#define LOG_MSG_MAX 2048
#define LOG_LINE_MAX (LOG_MSG_MAX * 2 + 128)

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_setup(enum log_level min, enum log_format fmt)
{
	log_min_level = min;
	log_fmt = fmt;
}

void log_set_fd(int fd)
{
	log_fd = fd;
}

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return LOG_WARN;
	return -1;
}

/* Append s JSON-escaped to out[*pos..cap); stops (without splitting an escape) when full. */
static void json_escape_into(char *out, size_t *pos, size_t cap, const char *s)
{
	size_t p = *pos;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		size_t n;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			n = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			n = 2;
		} else if (c == '\t') {
			memcpy(esc, "\\t", 2);
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
		} else {
			esc[0] = (char)c;
			n = 1;
		}
		if (p + n >= cap)
			break;
		memcpy(out + p, esc, n);
		p += n;
	}
	*pos = p;
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	char line[LOG_LINE_MAX];
	int saved_errno = errno;
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		snprintf(msg, sizeof(msg), "(unformattable log message)");
	else if ((size_t)n >= sizeof(msg))
		memcpy(msg + sizeof(msg) - 16, " ...(truncated)", 16);

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	char tbuf[96];
	snprintf(tbuf, sizeof(tbuf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

	size_t pos;
	if (log_fmt == LOG_FORMAT_TEXT) {
		pos = (size_t)snprintf(line, sizeof(line), "%s %-5s ", tbuf,
				       level_names[level]);
		size_t mlen = strlen(msg);
		if (pos + mlen + 2 > sizeof(line))
			mlen = sizeof(line) - pos - 2;
		memcpy(line + pos, msg, mlen);
		pos += mlen;
	} else {
		pos = (size_t)snprintf(line, sizeof(line),
				       "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"",
				       tbuf, level_names[level]);
		json_escape_into(line, &pos, sizeof(line) - 4, msg);
		line[pos++] = '"';
		line[pos++] = '}';
	}
	line[pos++] = '\n';
	ssize_t w = write(log_fd, line, pos);
	(void)w; /* nothing sensible to do when the log itself fails */
	errno = saved_errno;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}
