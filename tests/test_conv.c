/* test_conv: the conv encoder (common/conv.h) against central differences of its own forward, on
 * random weights and inputs, for a 8x8x2 image with stages 3,4 and an odd 7x7x3 one with 3,5
 * (7 -> 3 -> 1); gradients added with overwrite 0 are the previous values plus overwrite 1's
 * exactly; one net run at two batch sizes gives what fresh nets give (its cache of primitives
 * holds both, a second pass creates none); an image too small for its poolings is refused with a
 * line naming its size.
 *
 * Tolerance of the differences: the net is piecewise linear in each weight, so a difference
 * with eps 5e-4 is exact but for float rounding (|loss| ~ 1: ~2e-4 absolute) and for a ReLU or
 * pooling switch within eps: |g - fd| <= 1e-2 |fd| + 2e-3 max |fd| of the tensor, fd the central
 * difference, or, where the slopes either side of the weight differ (a switch), one of them (at
 * most half of a tensor's may; a quarter of the first stage's weights do). A gradient off by a
 * factor of 2 fails it by far. Without oneDNN in the build, the net must be refused with its one
 * line, and the rest is a skipped part (exit 77). */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "conv.h"
#include "util.h"

static uint64_t seed = 0x9E3779B97F4A7C15ull;
static float urand(void) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* A net's parameters, an input and a fixed r of loss = sum feat * r. */
typedef struct {
    int B, H, W, C, nst, chans[HCL_MAX_CONV], nw[HCL_MAX_CONV];
    float *x, *w[HCL_MAX_CONV], *b[HCL_MAX_CONV], *dw[HCL_MAX_CONV], *db[HCL_MAX_CONV], *r, *feat;
} problem;

static void problem_init(problem *p, int B, int H, int W, int C, const int *chans, int nst) {
    memset(p, 0, sizeof *p);
    *p = (problem){.B = B, .H = H, .W = W, .C = C, .nst = nst};
    p->x = hcl_floats((size_t)B * H * W * C);
    for (size_t i = 0; i < (size_t)B * H * W * C; i++) p->x[i] = urand();
    for (int s = 0; s < nst; s++) {
        const int ci = s ? chans[s - 1] : C;
        p->chans[s] = chans[s];
        p->nw[s] = chans[s] * ci * 9;
        p->w[s] = hcl_floats(p->nw[s]), p->dw[s] = hcl_floats(p->nw[s]);
        p->b[s] = hcl_floats(chans[s]), p->db[s] = hcl_floats(chans[s]);
        const float scale = 1.0f / sqrtf((float)(ci * 9));
        for (int i = 0; i < p->nw[s]; i++) p->w[s][i] = urand() * scale;
        for (int i = 0; i < chans[s]; i++) p->b[s][i] = 0.1f * urand();
    }
    const int F = chans[nst - 1];
    p->r = hcl_floats((size_t)B * F), p->feat = hcl_floats((size_t)B * F);
    for (int i = 0; i < B * F; i++) p->r[i] = urand();
}

static void problem_free(problem *p) {
    free(p->x), free(p->r), free(p->feat);
    for (int s = 0; s < p->nst; s++) free(p->w[s]), free(p->b[s]), free(p->dw[s]), free(p->db[s]);
}

static double loss(hcl_conv_net *n, problem *p) {
    conv_net_forward(n, p->x, (const float *const *)p->w, (const float *const *)p->b, p->B, p->feat);
    double l = 0.0;
    for (int i = 0; i < p->B * p->chans[p->nst - 1]; i++) l += (double)p->feat[i] * p->r[i];
    return l;
}

static int close_to(double a, double b, double big) { return fabs(a - b) <= 1e-2 * fabs(b) + 2e-3 * big; }

/* g (count) against differences of the loss in each of the count floats at v: the central one,
 * or where the slopes either side differ (a ReLU or pooling switch within eps), one of them. */
static void check_fd(hcl_conv_net *n, problem *p, float *v, const float *g, int count, const char *what) {
    const float eps = 5e-4f;
    const double mid = loss(n, p);
    double *up = hcl_malloc(sizeof(double) * (size_t)count), *down = hcl_malloc(sizeof(double) * (size_t)count);
    double big = 0.0;
    for (int i = 0; i < count; i++) {
        const float keep = v[i];
        v[i] = keep + eps;
        up[i] = (loss(n, p) - mid) / eps;
        v[i] = keep - eps;
        down[i] = (mid - loss(n, p)) / eps;
        v[i] = keep;
        big = fmax(big, fabs(up[i] + down[i]) / 2.0);
    }
    CHECK(big > 1e-3, "%s: every difference is ~0 (%g): a test that proves nothing", what, big);
    int kinked = 0;
    for (int i = 0; i < count; i++) {
        const double central = (up[i] + down[i]) / 2.0;
        if (close_to(up[i], down[i], big) || !(close_to(g[i], up[i], big) || close_to(g[i], down[i], big)))
            CHECK_CLOSE(g[i], central, 1e-2, 2e-3 * big, what);
        else
            kinked++;
    }
    printf("%s: %d of %d differences cross a switch\n", what, kinked, count);
    CHECK(2 * kinked <= count + 1, "%s: %d of %d differences cross a switch", what, kinked, count);
    free(up), free(down);
}

/* Every stage's dw, db of one net against central differences. */
static void test_fd(int B, int H, int W, int C, const int *chans, int nst) {
    problem p;
    problem_init(&p, B, H, W, C, chans, nst);
    hcl_conv_net *n;
    char err[HCL_ERR_MAX] = "";
    CHECK(conv_net_init(&n, B, H, W, C, chans, nst, err) == 0, "init %dx%dx%d: %s", H, W, C, err);
    CHECK(conv_net_out(n) == chans[nst - 1], "out %d, want %d", conv_net_out(n), chans[nst - 1]);
    loss(n, &p);
    conv_net_backward(n, p.r, p.dw, p.db, B, 1);   /* dloss/dfeat = r */
    for (int s = 0; s < nst; s++) {
        char what[64];
        snprintf(what, sizeof what, "%dx%d stage %d dw", H, W, s + 1);
        check_fd(n, &p, p.w[s], p.dw[s], p.nw[s], what);
        snprintf(what, sizeof what, "%dx%d stage %d db", H, W, s + 1);
        check_fd(n, &p, p.b[s], p.db[s], p.chans[s], what);
    }
    conv_net_free(n);
    problem_free(&p);
}

/* overwrite 0 adds exactly overwrite 1's gradients to what dw, db held. */
static void test_accumulate(void) {
    const int chans[] = {3, 4};
    problem p;
    problem_init(&p, 3, 8, 8, 2, chans, 2);
    hcl_conv_net *n;
    char err[HCL_ERR_MAX] = "";
    CHECK(conv_net_init(&n, 3, 8, 8, 2, chans, 2, err) == 0, "init: %s", err);
    loss(n, &p);
    conv_net_backward(n, p.r, p.dw, p.db, 3, 1);
    float *g[2], *gb[2], *prev[2], *prevb[2];
    for (int s = 0; s < 2; s++) {
        g[s] = hcl_floats(p.nw[s]), gb[s] = hcl_floats(p.chans[s]);
        prev[s] = hcl_floats(p.nw[s]), prevb[s] = hcl_floats(p.chans[s]);
        memcpy(g[s], p.dw[s], sizeof(float) * p.nw[s]);
        memcpy(gb[s], p.db[s], sizeof(float) * p.chans[s]);
        for (int i = 0; i < p.nw[s]; i++) p.dw[s][i] = prev[s][i] = urand();
        for (int i = 0; i < p.chans[s]; i++) p.db[s][i] = prevb[s][i] = urand();
    }
    conv_net_backward(n, p.r, p.dw, p.db, 3, 0);
    int bad = 0;
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < p.nw[s]; i++) bad += p.dw[s][i] != prev[s][i] + g[s][i];
        for (int i = 0; i < p.chans[s]; i++) bad += p.db[s][i] != prevb[s][i] + gb[s][i];
        free(g[s]), free(gb[s]), free(prev[s]), free(prevb[s]);
    }
    CHECK(bad == 0, "overwrite 0: %d gradients are not the previous value plus overwrite 1's", bad);
    conv_net_free(n);
    problem_free(&p);
}

/* feat, dw and db of the first B rows of p on net n against a fresh net of max_rows B. */
static void compare_fresh(hcl_conv_net *n, problem *p, int B) {
    const int F = p->chans[p->nst - 1];
    float *feat = hcl_floats((size_t)B * F), *dw[2], *db[2];
    for (int s = 0; s < 2; s++) dw[s] = hcl_floats(p->nw[s]), db[s] = hcl_floats(p->chans[s]);
    conv_net_forward(n, p->x, (const float *const *)p->w, (const float *const *)p->b, B, feat);
    conv_net_backward(n, p->r, dw, db, B, 1);
    hcl_conv_net *f;
    char err[HCL_ERR_MAX] = "";
    CHECK(conv_net_init(&f, B, p->H, p->W, p->C, p->chans, p->nst, err) == 0, "init: %s", err);
    conv_net_forward(f, p->x, (const float *const *)p->w, (const float *const *)p->b, B, p->feat);
    conv_net_backward(f, p->r, p->dw, p->db, B, 1);
    char what[64];
    snprintf(what, sizeof what, "B %d: feat", B);
    for (int i = 0; i < B * F; i++) CHECK_CLOSE(feat[i], p->feat[i], 1e-6, 1e-7, what);
    snprintf(what, sizeof what, "B %d: dw, db", B);
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < p->nw[s]; i++) CHECK_CLOSE(dw[s][i], p->dw[s][i], 1e-6, 1e-7, what);
        for (int i = 0; i < p->chans[s]; i++) CHECK_CLOSE(db[s][i], p->db[s][i], 1e-6, 1e-7, what);
    }
    conv_net_free(f);
    free(feat);
    for (int s = 0; s < 2; s++) free(dw[s]), free(db[s]);
}

/* One net at B 5, 2, then 5 and 2 again: each as a fresh net, two primitive sets in all. */
static void test_cache(void) {
    const int chans[] = {3, 4};
    problem p;
    problem_init(&p, 5, 8, 8, 2, chans, 2);
    hcl_conv_net *n;
    char err[HCL_ERR_MAX] = "";
    CHECK(conv_net_init(&n, 5, 8, 8, 2, chans, 2, err) == 0, "init: %s", err);
    compare_fresh(n, &p, 5);
    compare_fresh(n, &p, 2);
    compare_fresh(n, &p, 5);
    compare_fresh(n, &p, 2);
    CHECK(conv_net_created(n) == 2, "%d primitive sets for 2 batch sizes", conv_net_created(n));
    conv_net_free(n);
    problem_free(&p);
}

static void test_too_small(void) {
    const int chans[] = {2, 2, 2};
    hcl_conv_net *n = (hcl_conv_net *)&n;
    char err[HCL_ERR_MAX] = "";
    CHECK(conv_net_init(&n, 4, 4, 4, 1, chans, 3, err) == -1, "a 4x4 image with 3 poolings was accepted");
    CHECK(n == NULL, "a refused net is not NULL");
    CHECK(strstr(err, "4x4") && strstr(err, "stage 3"), "the error names neither the size nor the stage: %s", err);
    printf("refused as it should be: %s\n", err);
    CHECK(conv_net_act_floats(4, 4, 4, 1, chans, 3) == 0.0, "floats of a refused net");
    CHECK(conv_net_act_floats(4, 8, 8, 1, chans, 3) > 0.0, "no floats for a net");
}

int main(void) {
    const int chans[] = {3, 4};
    hcl_conv_net *n;
    char err[HCL_ERR_MAX] = "";
    if (conv_net_init(&n, 3, 8, 8, 2, chans, 2, err) != 0) {
        CHECK(strstr(err, "needs oneDNN"), "init failed: %s", err);
        CHECK_SKIP("the conv encoder: %s", err);
        CHECK_DONE();
    }
    conv_net_free(n);
    test_fd(3, 8, 8, 2, chans, 2);
    const int odd[] = {3, 5};
    test_fd(2, 7, 7, 3, odd, 2);
    test_accumulate();
    test_cache();
    test_too_small();
    CHECK_DONE();
}
