/*
 * A minimal test harness for C unit and integration tests: CHECK macros that
 * count and report failures with file and line, and a summary line
 * "N passed, N failed" that CTest's log and CI can read.
 */
#ifndef SBX_TEST_H
#define SBX_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed;
static const char *t_current = "";

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (cond) {                                                   \
			t_passed++;                                           \
		} else {                                                      \
			t_failed++;                                           \
			fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n",     \
				__FILE__, __LINE__, t_current, #cond);        \
		}                                                             \
	} while (0)

#define CHECK_INT(a, b)                                                       \
	do {                                                                  \
		long long va_ = (long long)(a), vb_ = (long long)(b);         \
		if (va_ == vb_) {                                             \
			t_passed++;                                           \
		} else {                                                      \
			t_failed++;                                           \
			fprintf(stderr, "%s:%d: [%s] %s == %lld, expected %s == %lld\n", \
				__FILE__, __LINE__, t_current, #a, va_, #b, vb_); \
		}                                                             \
	} while (0)

#define CHECK_STR(a, b)                                                       \
	do {                                                                  \
		const char *sa_ = (a), *sb_ = (b);                            \
		if (sa_ && sb_ && strcmp(sa_, sb_) == 0) {                    \
			t_passed++;                                           \
		} else {                                                      \
			t_failed++;                                           \
			fprintf(stderr, "%s:%d: [%s] %s is \"%s\", expected \"%s\"\n", \
				__FILE__, __LINE__, t_current, #a,            \
				sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");  \
		}                                                             \
	} while (0)

/* Fatal variant: stop the current test function when cond is false. */
#define REQUIRE(cond)                                                         \
	do {                                                                  \
		if (cond) {                                                   \
			t_passed++;                                           \
		} else {                                                      \
			t_failed++;                                           \
			fprintf(stderr, "%s:%d: [%s] REQUIRE failed: %s\n",   \
				__FILE__, __LINE__, t_current, #cond);        \
			return;                                               \
		}                                                             \
	} while (0)

#define RUN(fn)                                                               \
	do {                                                                  \
		t_current = #fn;                                              \
		fn();                                                         \
	} while (0)

static inline int test_summary(void)
{
	printf("%d passed, %d failed\n", t_passed, t_failed);
	return t_failed ? 1 : 0;
}

#endif
