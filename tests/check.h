/* check: the tiny assertion kit of hcl's unit tests. A failed check prints file:line, what was
 * compared and both values, and makes the program exit 1 at CHECK_DONE(). */
#ifndef HCL_TEST_CHECK_H
#define HCL_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures, check_count;

#define CHECK(cond, ...) do { check_count++; if (!(cond)) { check_failures++; \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); } } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, rtol, atol, what) do { double _a = (a), _b = (b); check_count++; \
    if (!(fabs(_a - _b) <= (atol) + (rtol) * fabs(_b)) || isnan(_a) || isnan(_b)) { check_failures++; \
    fprintf(stderr, "FAIL %s:%d: %s: got %.9g, want %.9g (rtol %g, atol %g)\n", __FILE__, \
            __LINE__, what, _a, _b, (double)(rtol), (double)(atol)); } } while (0)

#define CHECK_DONE() do { printf("%s: %d checks, %d failed\n", __FILE__, check_count, \
    check_failures); return check_failures ? 1 : 0; } while (0)

#endif
