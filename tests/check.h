/* check: the tiny assertion kit of hcl's unit tests. A failed check prints file:line, what was
 * compared and both values, and makes the program exit 1 at CHECK_DONE(). A part that cannot
 * run here (no torch, say) is announced with CHECK_SKIP: the other parts still run, and a test
 * with no failure but a skipped part exits 77, which meson and scripts/test count as skipped. */
#ifndef HCL_TEST_CHECK_H
#define HCL_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures, check_count, check_skipped __attribute__((unused));

#define CHECK_SKIP(...) do { check_skipped++; printf("SKIP "); printf(__VA_ARGS__); \
    putchar('\n'); } while (0)

#define CHECK(cond, ...) do { check_count++; if (!(cond)) { check_failures++; \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); } } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, rtol, atol, what) do { double _a = (a), _b = (b); check_count++; \
    if (!(fabs(_a - _b) <= (atol) + (rtol) * fabs(_b)) || isnan(_a) || isnan(_b)) { check_failures++; \
    fprintf(stderr, "FAIL %s:%d: %s: got %.9g, want %.9g (rtol %g, atol %g)\n", __FILE__, \
            __LINE__, what, _a, _b, (double)(rtol), (double)(atol)); } } while (0)

#define CHECK_DONE() do { printf("%s: %d checks, %d failed, %d parts skipped\n", __FILE__, \
    check_count, check_failures, check_skipped); return check_failures ? 1 : check_skipped ? 77 : 0; } while (0)

#endif
