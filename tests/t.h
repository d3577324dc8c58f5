/* tests/t.h: the tiny unit-test harness every C test binary uses.
 *
 * A test binary defines test functions with TEST(name), runs them from main() with RUN(name),
 * and returns t_done(). Each test prints one line, "PASS name" or "FAIL name", followed by
 * one indented line per failed check (file:line, the expression, and an optional message).
 * tests/run counts these lines across all binaries and prints the "N passed, N failed" total.
 */
#ifndef NFC_TESTS_T_H
#define NFC_TESTS_T_H
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int t_failed_checks;   /* failed checks in the current test */
static int t_tests_failed;    /* failed tests in this binary */
static int t_tests_passed;

static void t_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
    t_failed_checks++;
    fprintf(stdout, "    %s:%d: check failed: %s", file, line, expr);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stdout);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stdout);
}

/* CHECK(cond) or CHECK(cond, "fmt", args...) */
#define CHECK(cond, ...) \
    do { if (!(cond)) t_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__); } while (0)

/* CHECK_NEAR(a, b, tol): |a-b| <= tol, printing both values on failure. */
#define CHECK_NEAR(a, b, tol) \
    do { double t_a_ = (a), t_b_ = (b), t_t_ = (tol); \
         if (!(t_a_ - t_b_ <= t_t_ && t_b_ - t_a_ <= t_t_)) \
             t_fail(__FILE__, __LINE__, #a " ~ " #b, "%.17g vs %.17g (tol %g)", t_a_, t_b_, t_t_); \
    } while (0)

#define CHECK_STR(a, b) \
    do { const char *t_a_ = (a), *t_b_ = (b); \
         if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_) != 0) \
             t_fail(__FILE__, __LINE__, #a " == " #b, "\"%s\" vs \"%s\"", t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)"); \
    } while (0)

#define TEST(name) static void name(void)

static void t_run(const char *name, void (*fn)(void)) {
    t_failed_checks = 0;
    fn();
    if (t_failed_checks) { printf("FAIL %s\n", name); t_tests_failed++; }
    else { printf("PASS %s\n", name); t_tests_passed++; }
    fflush(stdout);
}
#define RUN(name) t_run(#name, name)

static int t_done(void) { return t_tests_failed ? 1 : 0; }

#endif
