/* conv_dump: one forward and backward of the conv encoder (common/conv.h) on random inputs, for
 * the comparison with PyTorch (tests/test_conv_torch.py), or its timing.
 *
 *   conv_dump DIR B H W C C1,C2,...   writes DIR/x.npy (B, H, W, C), w<s>.npy (Cout, Cin, 3, 3),
 *                                     b<s>.npy (Cout), dfeat.npy (B, C_last), and the encoder's
 *                                     feat.npy (B, C_last), dw<s>.npy, db<s>.npy (all flat, C order)
 *   conv_dump --bench B H W C C1,C2,... [THREADS [STEPS]]
 *                                     prints the forward and backward times per batch and per
 *                                     image (after one untimed step that creates the primitives) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "kernels.h"
#include "npy.h"
#include "util.h"

static uint64_t seed = 0x2545F4914F6CDD1Dull;
static float urand(void) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_floats(size_t count, float scale) {
    float *p = hcl_floats(count);
    for (size_t i = 0; i < count; i++) p[i] = scale * urand();
    return p;
}

static void save(const char *dir, const char *name, const float *data, size_t count) {
    char path[4096], err[HCL_ERR_MAX];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    const int64_t shape[1] = {(int64_t)count};
    HCL_CHECK(npy_write(path, NPY_F32, 1, shape, data, err) == 0, "%s", err);
}

typedef struct {
    int B, H, W, C, nst, chans[HCL_MAX_CONV], nw[HCL_MAX_CONV];
    float *x, *w[HCL_MAX_CONV], *b[HCL_MAX_CONV], *dw[HCL_MAX_CONV], *db[HCL_MAX_CONV], *dfeat, *feat;
} problem;

static int parse(problem *p, char **argv) {
    memset(p, 0, sizeof *p);
    p->B = atoi(argv[0]), p->H = atoi(argv[1]), p->W = atoi(argv[2]), p->C = atoi(argv[3]);
    for (char *s = argv[4]; *s && p->nst < HCL_MAX_CONV; s = *s ? s + 1 : s)
        p->chans[p->nst++] = (int)strtol(s, &s, 10);
    if (p->B < 1 || p->nst < 1) return -1;
    p->x = random_floats((size_t)p->B * p->H * p->W * p->C, 1.0f);
    for (int s = 0; s < p->nst; s++) {
        const int ci = s ? p->chans[s - 1] : p->C;
        p->nw[s] = p->chans[s] * ci * 9;
        p->w[s] = random_floats(p->nw[s], 1.0f / sqrtf((float)(9 * ci)));
        p->b[s] = random_floats(p->chans[s], 0.1f);
        p->dw[s] = hcl_floats(p->nw[s]), p->db[s] = hcl_floats(p->chans[s]);
    }
    const size_t nf = (size_t)p->B * p->chans[p->nst - 1];
    p->dfeat = random_floats(nf, 1.0f), p->feat = hcl_floats(nf);
    return 0;
}

static void problem_free(problem *p) {
    for (int s = 0; s < p->nst; s++) free(p->w[s]), free(p->b[s]), free(p->dw[s]), free(p->db[s]);
    free(p->x), free(p->dfeat), free(p->feat);
}

static void step(hcl_conv_net *n, problem *p, double *t_fwd, double *t_bwd) {
    const double t0 = hcl_now();
    conv_net_forward(n, p->x, (const float *const *)p->w, (const float *const *)p->b, p->B, p->feat);
    const double t1 = hcl_now();
    conv_net_backward(n, p->dfeat, p->dw, p->db, p->B, 1);
    *t_fwd += t1 - t0, *t_bwd += hcl_now() - t1;
}

int main(int argc, char **argv) {
    const int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    problem p;
    if (argc < 7 || parse(&p, argv + 2)) {
        fprintf(stderr, "usage: conv_dump DIR B H W C C1,C2,...\n"
                        "       conv_dump --bench B H W C C1,C2,... [THREADS [STEPS]]\n");
        return 2;
    }
    if (bench) kernels_set_threads(argc > 7 ? atoi(argv[7]) : 1);
    hcl_conv_net *n;
    char err[HCL_ERR_MAX];
    if (conv_net_init(&n, p.B, p.H, p.W, p.C, p.chans, p.nst, err)) {
        fprintf(stderr, "conv_dump: %s\n", err);
        problem_free(&p);
        return 1;
    }
    double tf = 0.0, tb = 0.0;
    step(n, &p, &tf, &tb);
    if (bench) {
        const int steps = argc > 8 ? atoi(argv[8]) : 10;
        tf = tb = 0.0;
        for (int i = 0; i < steps; i++) step(n, &p, &tf, &tb);
        tf /= steps, tb /= steps;
        printf("B %d, %dx%dx%d, stages %s, %d threads: forward %.2f ms, backward %.2f ms per batch; "
               "%.1f us per image\n", p.B, p.H, p.W, p.C, argv[6], kernels_get_threads(), 1e3 * tf, 1e3 * tb,
               1e6 * (tf + tb) / p.B);
    } else {
        const char *dir = argv[1];
        save(dir, "x", p.x, (size_t)p.B * p.H * p.W * p.C);
        save(dir, "dfeat", p.dfeat, (size_t)p.B * p.chans[p.nst - 1]);
        save(dir, "feat", p.feat, (size_t)p.B * p.chans[p.nst - 1]);
        for (int s = 0; s < p.nst; s++) {
            char name[32];
            snprintf(name, sizeof name, "w%d", s), save(dir, name, p.w[s], p.nw[s]);
            snprintf(name, sizeof name, "b%d", s), save(dir, name, p.b[s], p.chans[s]);
            snprintf(name, sizeof name, "dw%d", s), save(dir, name, p.dw[s], p.nw[s]);
            snprintf(name, sizeof name, "db%d", s), save(dir, name, p.db[s], p.chans[s]);
        }
    }
    conv_net_free(n);
    problem_free(&p);
    return 0;
}
