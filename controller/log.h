/*
 * log: level-checked, JSON-lines logging for the daemon.
 *
 * One line per event on stderr (or a file), written with a single write(2) so
 * that lines from different threads never interleave. The macros do not
 * evaluate their arguments when the level is off.
 *
 * Never pass a secret (token, key, env value) to these functions: nothing here
 * can tell a secret from any other string.
 */
#ifndef SBX_LOG_H
#define SBX_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT = 1 };

extern enum log_level log_min_level;

/* Set the minimum level and the output format; both may change at any time. */
void log_setup(enum log_level min, enum log_format fmt);

/* Parse "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_level_parse(const char *s);

/* Redirect output to fd (default 2). The fd stays owned by the caller. */
void log_set_fd(int fd);

/* Format and write one record. Use the macros below instead. */
void log_write(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

#define log_enabled(l) ((l) >= log_min_level)
#define LOG_AT(l, ...)                                                        \
	do {                                                                  \
		if (log_enabled(l))                                           \
			log_write((l), __VA_ARGS__);                          \
	} while (0)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_WARN, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_ERROR, __VA_ARGS__)

#endif
