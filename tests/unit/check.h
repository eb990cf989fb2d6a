/*
 * check: the minimal unit-test harness of the C tests.
 *
 * A test file defines functions `static void test_name(void)` and lists them
 * in main with RUN(test_name); CHECK* macros record a failure with file and
 * line and go on; REQUIRE* stop the current test. main returns
 * check_summary(), which prints "N passed, N failed" and gives the exit code
 * CTest reads.
 */
#ifndef THALAMUS_CHECK_H
#define THALAMUS_CHECK_H

#include <dirent.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

static int check_failures_in_test;
static int check_passed, check_failed;
static jmp_buf check_abort;
static const char *check_current;

#define CHECK_FAIL(...)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: %s: ", __FILE__, __LINE__, check_current);                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        check_failures_in_test++;                                                                  \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            CHECK_FAIL("check failed: %s", #cond);                                                 \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            CHECK_FAIL("requirement failed: %s", #cond);                                           \
            longjmp(check_abort, 1);                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        if (check_a_ != check_b_)                                                                  \
            CHECK_FAIL("%s == %s: %lld != %lld", #a, #b, check_a_, check_b_);                      \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0)                             \
            CHECK_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, check_a_ ? check_a_ : "(null)",       \
                       check_b_ ? check_b_ : "(null)");                                            \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *check_h_ = (hay), *check_n_ = (needle);                                        \
        if (!check_h_ || !strstr(check_h_, check_n_))                                              \
            CHECK_FAIL("\"%s\" does not contain \"%s\"", check_h_ ? check_h_ : "(null)",           \
                       check_n_);                                                                  \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        check_current = #fn;                                                                       \
        check_failures_in_test = 0;                                                                \
        if (setjmp(check_abort) == 0)                                                              \
            fn();                                                                                  \
        if (check_failures_in_test) {                                                              \
            check_failed++;                                                                        \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
        } else {                                                                                   \
            check_passed++;                                                                        \
            fprintf(stderr, "ok   %s\n", #fn);                                                     \
        }                                                                                          \
    } while (0)

/* Number of file descriptors this process has open (-1 if unknown), for
 * checking that a module leaks none. */
static inline int check_count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    int n = 0;
    if (!dir)
        return -1;
    for (struct dirent *de; (de = readdir(dir));)
        if (de->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
