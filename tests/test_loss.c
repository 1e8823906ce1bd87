/* test_loss: the losses of common/loss.c checked against
 *   1. a naive double-precision reference written here from docs/MATH.md (forward values),
 *   2. central finite differences of that reference (d/dz of every view, d/dt, d/dhead),
 *   3. themselves across shardings: the parts of W = 2, 3, 4 workers add up to one worker,
 *   4. large logit scales and nearly identical embeddings (no NaN / Inf, still exact),
 *   5. PyTorch (CLIP and FULL, no mask), a skipped part (exit 77) without python3 + torch,
 *   6. themselves across tile widths (1, 3, 7, >= N columns against one tile), one worker and
 *      three, and the scratch size: (max_b, tile) plus vectors, never (max_b, max_n).
 * Every comparison states its tolerance; a gradient doubled on purpose must fail the gradient
 * comparison (so the tolerance can catch a factor of 2). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "loss.h"

#define NV 3
#define MAXN 16
#define DIM 5
#define NCLS 5

/* ---- data --------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double rnd_uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rnd_normal(void) {
    return sqrt(-2.0 * log(rnd_uniform())) * cos(6.283185307179586 * rnd_uniform());
}

/* One problem: N rows, NV views of DIM, NCLS classes; z, head in float (what the C code sees)
 * and the same values in double (what the reference and the finite differences see). */
typedef struct {
    int n;
    float zf[NV][MAXN * DIM];
    double zd[NV][MAXN * DIM];
    float hwf[NCLS * DIM], hbf[NCLS];
    double hwd[NCLS * DIM], hbd[NCLS];
    const uint8_t *mask;
    int32_t labels[MAXN];
    double t;
} problem;

/* z rows: base + spread * noise, L2-normalised, rounded to float, the double copy made from the
 * float so both implementations see the same point. */
static void problem_fill(problem *p, int n, double spread, double t) {
    memset(p, 0, sizeof *p);
    p->n = n;
    p->t = (double)(float)t;
    double base[DIM];
    for (int d = 0; d < DIM; d++) base[d] = rnd_normal();
    for (int v = 0; v < NV; v++)
        for (int r = 0; r < n; r++) {
            double x[DIM], nrm = 0.0;
            for (int d = 0; d < DIM; d++) {
                x[d] = base[d] + spread * rnd_normal();
                nrm += x[d] * x[d];
            }
            for (int d = 0; d < DIM; d++) {
                p->zf[v][r * DIM + d] = (float)(x[d] / sqrt(nrm));
                p->zd[v][r * DIM + d] = p->zf[v][r * DIM + d];
            }
        }
    for (int i = 0; i < NCLS * DIM; i++) {
        p->hwf[i] = (float)(0.7 * rnd_normal());
        p->hwd[i] = p->hwf[i];
    }
    for (int k = 0; k < NCLS; k++) {
        p->hbf[k] = (float)(0.3 * rnd_normal());
        p->hbd[k] = p->hbf[k];
    }
    /* classes 2, 3 and 4 have a single row; rows 6 and 9 are unlabelled */
    static const int32_t lab[MAXN] = {0, 0, 1, 2, 1, 3, -1, 0, 4, -1, 0, 1, 0, 1, 0, 1};
    memcpy(p->labels, lab, sizeof lab);
}

/* ---- the reference, in double, naive loops ---------------------------------------------- */

static int ref_present(const problem *p, int r, int v) { return !p->mask || p->mask[r * NV + v]; }

static double ref_dot(const double *a, const double *b) {
    double s = 0.0;
    for (int d = 0; d < DIM; d++) s += a[d] * b[d];
    return s;
}

/* log sum exp of x[0..m) */
static double ref_lse(const double *x, int m) {
    double mx = -INFINITY, s = 0.0;
    for (int i = 0; i < m; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < m; i++) s += exp(x[i] - mx);
    return mx + log(s);
}

/* symmetric InfoNCE of views (i, j) over the rows present in both */
static double ref_pair(const problem *p, int i, int j, int *used) {
    double s = exp(p->t), x[MAXN], sum = 0.0;
    int rows[MAXN], m = 0;
    for (int r = 0; r < p->n; r++)
        if (ref_present(p, r, i) && ref_present(p, r, j)) rows[m++] = r;
    *used = m > 0;
    if (m == 0) return 0.0;
    for (int ia = 0; ia < m; ia++) {        /* rows: anchor of view i vs every row of view j */
        int a = rows[ia];
        for (int ic = 0; ic < m; ic++) x[ic] = s * ref_dot(&p->zd[i][a * DIM], &p->zd[j][rows[ic] * DIM]);
        sum += ref_lse(x, m) - s * ref_dot(&p->zd[i][a * DIM], &p->zd[j][a * DIM]);
    }
    for (int ic = 0; ic < m; ic++) {        /* columns: view j vs every row of view i */
        int c = rows[ic];
        for (int ia = 0; ia < m; ia++) x[ia] = s * ref_dot(&p->zd[i][rows[ia] * DIM], &p->zd[j][c * DIM]);
        sum += ref_lse(x, m) - s * ref_dot(&p->zd[i][c * DIM], &p->zd[j][c * DIM]);
    }
    return sum / (2.0 * m);
}

static int ref_positive(const problem *p, int a, int c) {
    return p->labels[a] >= 0 ? p->labels[c] == p->labels[a] : c == a;
}

static double ref_supcon(const problem *p) {
    double s = exp(p->t), x[NV * MAXN], sum = 0.0;
    int kept = 0;
    for (int va = 0; va < NV; va++)
        for (int a = 0; a < p->n; a++) {
            if (!ref_present(p, a, va)) continue;
            int m = 0, npos = 0;
            double spos = 0.0;
            for (int vc = 0; vc < NV; vc++)
                for (int c = 0; c < p->n; c++) {
                    if ((vc == va && c == a) || !ref_present(p, c, vc)) continue;
                    x[m] = s * ref_dot(&p->zd[va][a * DIM], &p->zd[vc][c * DIM]);
                    if (ref_positive(p, a, c)) npos++, spos += x[m];
                    m++;
                }
            if (npos == 0) continue;
            kept++;
            sum += ref_lse(x, m) - spos / npos;
        }
    return kept ? sum / kept : 0.0;
}

static double ref_ce(const problem *p) {
    double x[NCLS], sum = 0.0;
    int m = 0;
    for (int r = 0; r < p->n; r++)
        for (int v = 0; v < NV; v++) {
            if (p->labels[r] < 0 || !ref_present(p, r, v)) continue;
            for (int k = 0; k < NCLS; k++) x[k] = p->hbd[k] + ref_dot(&p->hwd[k * DIM], &p->zd[v][r * DIM]);
            sum += ref_lse(x, NCLS) - x[p->labels[r]];
            m++;
        }
    return m ? sum / m : 0.0;
}

typedef struct {
    double loss, supcon, ce;
    double pair[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
    int used[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
} ref_result;

static double ref_total(const hcl_loss_config *cfg, const problem *p, ref_result *o) {
    ref_result tmp;
    if (!o) o = &tmp;
    memset(o, 0, sizeof *o);
    enum hcl_loss_kind k = cfg->kind == HCL_LOSS_HYBRID ? cfg->base : cfg->kind;
    if (k == HCL_LOSS_SUPCON) {
        o->supcon = ref_supcon(p);
        o->loss = o->supcon;
    } else {
        double num = 0.0, den = 0.0;
        for (int i = 0; i < NV; i++)
            for (int j = i + 1; j < NV; j++) {
                int on = k == HCL_LOSS_FULL ||
                         (k == HCL_LOSS_CORE && (i == cfg->core_view || j == cfg->core_view)) ||
                         (k == HCL_LOSS_CLIP && ((i == cfg->view_a && j == cfg->view_b) ||
                                                 (i == cfg->view_b && j == cfg->view_a)));
                if (!on) continue;
                o->pair[i][j] = ref_pair(p, i, j, &o->used[i][j]);
                double w = k == HCL_LOSS_CLIP ? 1.0 : cfg->pair_weight[i][j];
                if (o->used[i][j]) num += w * o->pair[i][j], den += w;
            }
        o->loss = den > 0.0 ? num / den : 0.0;
    }
    if (cfg->kind == HCL_LOSS_HYBRID) {
        o->ce = ref_ce(p);
        o->loss += cfg->lambda * o->ce;
    }
    return o->loss;
}

/* central difference of the reference total w.r.t. *x, step 1e-5 in double: truncation
 * ~1e-10 * f''', rounding ~1e-11, far below the float errors the comparisons allow */
static double ref_fd(const hcl_loss_config *cfg, problem *p, double *x) {
    const double eps = 1e-5;
    double x0 = *x;
    *x = x0 + eps;
    double fp = ref_total(cfg, p, NULL);
    *x = x0 - eps;
    double fm = ref_total(cfg, p, NULL);
    *x = x0;
    return (fp - fm) / (2.0 * eps);
}

/* ---- the C code under test ---------------------------------------------------------------- */

typedef struct {
    float dz[NV][MAXN * DIM];
    float dhw[NCLS * DIM], dhb[NCLS];
    hcl_loss_result r;
} c_result;

/* Run the worker owning [r0, r0+b) with a context sized for max_b and tile columns per tile (0:
 * the default); accumulates into o's gradient buffers and returns the result part. dz may be
 * disabled (forward only). */
static int64_t run_rows;   /* > 0: blocks of at most this many own rows (InfoNCE row chunks) */
static int run_keep;       /* 1: pass 1's logits kept for pass 2 (loss_ctx_keep), not recomputed */
/* The progress hook's calls in the last c_run_tile: count, last fraction, all in [0, 1) in order. */
static struct { int calls, ok; double last; long total; } prog;
static void progress_seen(void *arg, double done) {
    (void)arg;
    prog.ok &= done >= 0.0 && done < 1.0 && done >= prog.last;
    prog.last = done;
    prog.calls++;
    prog.total++;
}

static hcl_loss_result c_run_tile(const hcl_loss_config *cfg, const problem *p, int64_t r0, int64_t b,
                                  int64_t max_b, int64_t tile, c_result *o, int backward) {
    hcl_loss_ctx ctx;
    loss_ctx_init_tile(&ctx, cfg, max_b, p->n, tile);
    if (run_rows > 0 && run_rows < ctx.rows) ctx.rows = run_rows;   /* smaller blocks fit the scratch */
    if (run_keep) CHECK(loss_ctx_keep(&ctx, SIZE_MAX) > 0 || ctx.npairs == 0 || (p->n <= ctx.tile && max_b <= ctx.rows),
                        "loss_ctx_keep kept nothing with tile %lld", (long long)ctx.tile);
    hcl_loss_input in = {.n = p->n, .r0 = r0, .b = b, .mask = p->mask, .labels = p->labels,
                         .t = (float)p->t, .head_w = p->hwf, .head_b = p->hbf, .progress = progress_seen};
    prog.calls = 0, prog.ok = 1, prog.last = 0.0;
    float *dz[NV];
    for (int v = 0; v < NV; v++) in.z[v] = p->zf[v], dz[v] = o->dz[v];
    hcl_loss_result r;
    loss_forward_backward(&ctx, &in, backward ? dz : NULL, o->dhw, o->dhb, &r);
    loss_ctx_free(&ctx);
    return r;
}

static hcl_loss_result c_run(const hcl_loss_config *cfg, const problem *p, int64_t r0, int64_t b,
                             int64_t max_b, c_result *o, int backward) {
    return c_run_tile(cfg, p, r0, b, max_b, 0, o, backward);
}

/* ---- comparisons -------------------------------------------------------------------------- */

static int finite_arr(const float *x, int m) {
    for (int i = 0; i < m; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Mismatches of got against want with |got - want| <= atol_frac * max|want| + rtol * |want|;
 * prints the first few when loud. */
static int cmp_arr(const float *got, const double *want, int m, double rtol, double atol_frac,
                   const char *what, int loud) {
    double mx = 0.0;
    for (int i = 0; i < m; i++) mx = fmax(mx, fabs(want[i]));
    int bad = 0;
    for (int i = 0; i < m; i++) {
        double err = fabs(got[i] - want[i]);
        if (!(err <= atol_frac * mx + rtol * fabs(want[i]))) {
            if (loud && bad < 3)
                fprintf(stderr, "  %s[%d]: got %.9g, want %.9g (max|want| %.3g)\n", what, i, got[i],
                        want[i], mx);
            bad++;
        }
    }
    return bad;
}

/* Gradient tolerance: float logits and sgemm accumulation against a double finite difference.
 * 3e-5 of the largest entry plus 1e-3 relative: a factor of 2 (or a dropped column term, about
 * half of every entry) is off by ~max|g| and fails. */
#define GRAD_RTOL 1e-3
#define GRAD_ATOL 3e-5

/* Forward tolerance: the loss from float logits with double accumulation, logits up to
 * s ~ 7.4 with float rounding ~1e-6 absolute. */
#define FWD_RTOL 1e-5
#define FWD_ATOL 2e-6

/* Sharding tolerance: the same float operations in another order, 1e-5 relative. */
#define SHARD_RTOL 1e-5

/* ---- the cases ---------------------------------------------------------------------------- */

/* N = 10 rows. Mask B: a sprinkle of absent entries, every pair used. Mask C: pair (1, 2) has no
 * row present in both views, row 8 is absent from every view, row 7 only in view 2, row 3
 * (single-member class 2) only in view 1 so it has no positive in SupCon, nor has row 9
 * (unlabelled, only in view 1). */
#define NROWS 10
static const uint8_t mask_b[NROWS * NV] = {
    1, 1, 1,  1, 0, 1,  1, 1, 1,  0, 1, 1,  1, 1, 0,
    1, 1, 1,  1, 1, 1,  1, 0, 1,  1, 1, 1,  0, 1, 1,
};
static const uint8_t mask_c[NROWS * NV] = {
    1, 1, 0,  1, 1, 0,  0, 1, 0,  0, 1, 0,  1, 0, 1,
    1, 0, 1,  1, 0, 1,  0, 0, 1,  0, 0, 0,  0, 1, 0,
};

typedef struct {
    const char *name;
    hcl_loss_config cfg;
} loss_case;

static int ncases;
static loss_case cases[16];

static hcl_loss_config *add_case(const char *name, enum hcl_loss_kind kind, enum hcl_loss_kind base) {
    loss_case *c = &cases[ncases++];
    c->name = name;
    loss_config_default(&c->cfg, NV, DIM);
    c->cfg.kind = kind;
    c->cfg.base = base;
    c->cfg.nclasses = NCLS;
    return &c->cfg;
}

static void set_weights(hcl_loss_config *c) {
    c->pair_weight[0][1] = 0.5f;
    c->pair_weight[0][2] = 2.0f;
    c->pair_weight[1][2] = 3.0f;
}

static void make_cases(void) {
    hcl_loss_config *c;
    add_case("clip01", HCL_LOSS_CLIP, HCL_LOSS_FULL);
    c = add_case("clip20", HCL_LOSS_CLIP, HCL_LOSS_FULL);
    c->view_a = 2, c->view_b = 0;
    c = add_case("clip12", HCL_LOSS_CLIP, HCL_LOSS_FULL);
    c->view_a = 1, c->view_b = 2;
    add_case("full", HCL_LOSS_FULL, HCL_LOSS_FULL);
    set_weights(add_case("full_w", HCL_LOSS_FULL, HCL_LOSS_FULL));
    set_weights(add_case("core0_w", HCL_LOSS_CORE, HCL_LOSS_FULL));
    c = add_case("core2_w", HCL_LOSS_CORE, HCL_LOSS_FULL);
    set_weights(c);
    c->core_view = 2;
    add_case("supcon", HCL_LOSS_SUPCON, HCL_LOSS_FULL);
    c = add_case("hybrid_full_w", HCL_LOSS_HYBRID, HCL_LOSS_FULL);
    set_weights(c);
    c->lambda = 0.7f;
    c = add_case("hybrid_supcon", HCL_LOSS_HYBRID, HCL_LOSS_SUPCON);
    c->lambda = 1.3f;
    c = add_case("hybrid_clip", HCL_LOSS_HYBRID, HCL_LOSS_CLIP);
    c->lambda = 0.5f;
    c = add_case("hybrid_core1", HCL_LOSS_HYBRID, HCL_LOSS_CORE);
    c->core_view = 1;
    c->lambda = 2.0f;
}

/* 1 + 2: forward against the reference, gradients against finite differences of it. */
static void test_forward_and_gradients(const loss_case *lc, problem *p, const char *mname) {
    const hcl_loss_config *cfg = &lc->cfg;
    char what[160];
    ref_result ref;
    ref_total(cfg, p, &ref);
    static c_result co;
    memset(&co, 0, sizeof co);
    hcl_loss_result r = c_run(cfg, p, 0, p->n, p->n, &co, 1);

    snprintf(what, sizeof what, "%s/%s loss", lc->name, mname);
    CHECK_CLOSE(r.loss, ref.loss, FWD_RTOL, FWD_ATOL, what);
    CHECK(isfinite(r.loss) && isfinite(r.dt), "%s/%s: non-finite loss %g or dt %g", lc->name, mname, r.loss, r.dt);
    snprintf(what, sizeof what, "%s/%s supcon", lc->name, mname);
    CHECK_CLOSE(r.supcon, ref.supcon, FWD_RTOL, FWD_ATOL, what);
    snprintf(what, sizeof what, "%s/%s ce", lc->name, mname);
    CHECK_CLOSE(r.ce, ref.ce, FWD_RTOL, FWD_ATOL, what);
    for (int i = 0; i < NV; i++)
        for (int j = i + 1; j < NV; j++) {
            snprintf(what, sizeof what, "%s/%s pair_loss[%d][%d]", lc->name, mname, i, j);
            CHECK_CLOSE(r.pair_loss[i][j], ref.pair[i][j], FWD_RTOL, FWD_ATOL, what);
            CHECK(r.pair_used[i][j] == ref.used[i][j], "%s/%s pair_used[%d][%d]: got %d, want %d", lc->name,
                  mname, i, j, r.pair_used[i][j], ref.used[i][j]);
        }

    /* forward only gives the same values and touches no gradient */
    static c_result cf;
    memset(&cf, 0, sizeof cf);
    hcl_loss_result rf = c_run(cfg, p, 0, p->n, p->n, &cf, 0);
    CHECK(rf.loss == r.loss && rf.dt == r.dt, "%s/%s: forward-only loss %.9g dt %.9g vs %.9g %.9g", lc->name,
          mname, rf.loss, rf.dt, r.loss, r.dt);
    int touched = 0;
    for (int v = 0; v < NV; v++)
        for (int i = 0; i < p->n * DIM; i++) touched += cf.dz[v][i] != 0.0f;
    CHECK(touched == 0, "%s/%s: forward-only wrote %d gradient entries", lc->name, mname, touched);

    /* d/dz of every entry of every view, against the double central difference */
    static double fd[MAXN * DIM];
    static float twice[MAXN * DIM];
    int doubled_bad = 0;
    for (int v = 0; v < NV; v++) {
        for (int i = 0; i < p->n * DIM; i++) fd[i] = ref_fd(cfg, p, &p->zd[v][i]);
        snprintf(what, sizeof what, "%s/%s dz[%d]", lc->name, mname, v);
        int bad = cmp_arr(co.dz[v], fd, p->n * DIM, GRAD_RTOL, GRAD_ATOL, what, 1);
        CHECK(bad == 0, "%s: %d entries off the finite difference", what, bad);
        for (int i = 0; i < p->n * DIM; i++) twice[i] = 2.0f * co.dz[v][i];
        doubled_bad += cmp_arr(twice, fd, p->n * DIM, GRAD_RTOL, GRAD_ATOL, what, 0);
    }
    if (ref.loss != 0.0)   /* self-check: the tolerance catches a gradient off by a factor of 2 */
        CHECK(doubled_bad > 0, "%s/%s: a doubled dz passes the gradient comparison", lc->name, mname);

    double fdt = ref_fd(cfg, p, &p->t);
    snprintf(what, sizeof what, "%s/%s dt", lc->name, mname);
    CHECK_CLOSE(r.dt, fdt, GRAD_RTOL, 1e-6, what);
    if (fabs(fdt) > 1e-3)
        CHECK(!(fabs(2.0 * r.dt - fdt) <= 1e-6 + GRAD_RTOL * fabs(fdt)), "%s: doubled dt passes", what);

    if (cfg->kind == HCL_LOSS_HYBRID) {
        static double fdw[NCLS * DIM], fdb[NCLS];
        for (int i = 0; i < NCLS * DIM; i++) fdw[i] = ref_fd(cfg, p, &p->hwd[i]);
        for (int k = 0; k < NCLS; k++) fdb[k] = ref_fd(cfg, p, &p->hbd[k]);
        snprintf(what, sizeof what, "%s/%s dhead_w", lc->name, mname);
        int bad = cmp_arr(co.dhw, fdw, NCLS * DIM, GRAD_RTOL, GRAD_ATOL, what, 1);
        CHECK(bad == 0, "%s: %d entries off the finite difference", what, bad);
        for (int i = 0; i < NCLS * DIM; i++) twice[i] = 2.0f * co.dhw[i];
        CHECK(cmp_arr(twice, fdw, NCLS * DIM, GRAD_RTOL, GRAD_ATOL, what, 0) > 0, "%s: doubled passes", what);
        snprintf(what, sizeof what, "%s/%s dhead_b", lc->name, mname);
        bad = cmp_arr(co.dhb, fdb, NCLS, GRAD_RTOL, GRAD_ATOL, what, 1);
        CHECK(bad == 0, "%s: %d entries off the finite difference", what, bad);
    }
}

/* 3: the parts of W workers with uneven shares add up to the single-worker values. */
static void test_sharding(const loss_case *lc, const problem *p, const char *mname) {
    static const int splits[][5] = {
        {NROWS, 0, 0, 0, 0}, {4, 6, 0, 0, 0}, {2, 5, 3, 0, 0}, {3, 0, 4, 3, 0},
    };
    static const int nw[] = {1, 2, 3, 4};
    const hcl_loss_config *cfg = &lc->cfg;
    static c_result one, sum;
    memset(&one, 0, sizeof one);
    hcl_loss_result r1 = c_run(cfg, p, 0, p->n, p->n, &one, 1);
    char what[160];
    for (size_t s = 0; s < sizeof nw / sizeof nw[0]; s++) {
        memset(&sum, 0, sizeof sum);
        int64_t r0 = 0, max_b = 1;
        for (int w = 0; w < nw[s]; w++) max_b = splits[s][w] > max_b ? splits[s][w] : max_b;
        hcl_loss_result tot;
        memset(&tot, 0, sizeof tot);
        for (int w = 0; w < nw[s]; w++) {
            /* every worker accumulates into the same buffers: the sum a reduce-scatter makes */
            hcl_loss_result r = c_run(cfg, p, r0, splits[s][w], max_b, &sum, 1);
            r0 += splits[s][w];
            tot.loss += r.loss, tot.dt += r.dt, tot.supcon += r.supcon, tot.ce += r.ce;
            for (int i = 0; i < NV; i++)
                for (int j = i + 1; j < NV; j++) {
                    tot.pair_loss[i][j] += r.pair_loss[i][j];
                    CHECK(r.pair_used[i][j] == r1.pair_used[i][j], "%s/%s W=%d: pair_used differs on a worker",
                          lc->name, mname, nw[s]);
                }
        }
        CHECK(r0 == p->n, "split covers %lld rows", (long long)r0);
#define SHARD_CLOSE(field, label) do { snprintf(what, sizeof what, "%s/%s W=%d %s", lc->name, mname, nw[s], \
        label); CHECK_CLOSE(tot.field, r1.field, SHARD_RTOL, 1e-7, what); } while (0)
        SHARD_CLOSE(loss, "loss");
        SHARD_CLOSE(dt, "dt");
        SHARD_CLOSE(supcon, "supcon");
        SHARD_CLOSE(ce, "ce");
        for (int i = 0; i < NV; i++)
            for (int j = i + 1; j < NV; j++) SHARD_CLOSE(pair_loss[i][j], "pair_loss");
#undef SHARD_CLOSE
        static double want[MAXN * DIM];
        for (int v = 0; v < NV; v++) {
            for (int i = 0; i < p->n * DIM; i++) want[i] = one.dz[v][i];
            snprintf(what, sizeof what, "%s/%s W=%d dz[%d]", lc->name, mname, nw[s], v);
            int bad = cmp_arr(sum.dz[v], want, p->n * DIM, SHARD_RTOL, SHARD_RTOL, what, 1);
            CHECK(bad == 0, "%s: %d entries differ from one worker", what, bad);
        }
        if (cfg->kind == HCL_LOSS_HYBRID) {
            for (int i = 0; i < NCLS * DIM; i++) want[i] = one.dhw[i];
            snprintf(what, sizeof what, "%s/%s W=%d dhead_w", lc->name, mname, nw[s]);
            CHECK(cmp_arr(sum.dhw, want, NCLS * DIM, SHARD_RTOL, SHARD_RTOL, what, 1) == 0, "%s differs", what);
            for (int k = 0; k < NCLS; k++) want[k] = one.dhb[k];
            snprintf(what, sizeof what, "%s/%s W=%d dhead_b", lc->name, mname, nw[s]);
            CHECK(cmp_arr(sum.dhb, want, NCLS, SHARD_RTOL, SHARD_RTOL, what, 1) == 0, "%s differs", what);
        }
    }
}

/* 4: s = 100 with nearly identical embeddings, and s = 100 / s ~ 3000 with spread ones: finite,
 * and still the reference's value (float logits carry ~s * 1e-7 absolute error, hence the
 * looser 1e-4 here). */
static void test_stability(void) {
    static problem p;
    static const double spreads[] = {1e-3, 1e-3, 1.0, 1.0};
    static const double ts[] = {4.605170186, 8.0, 4.605170186, 8.0};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++)
        for (int mk = 0; mk < 2; mk++)
            for (int ci = 0; ci < ncases; ci++)
                for (int tile = 0; tile <= 3; tile += 3) {   /* one tile, and tiles of 3 columns */
                    problem_fill(&p, NROWS, spreads[k], ts[k]);
                    p.mask = mk ? mask_c : NULL;
                    static c_result co;
                    memset(&co, 0, sizeof co);
                    hcl_loss_result r = c_run_tile(&cases[ci].cfg, &p, 0, p.n, p.n, tile, &co, 1);
                    int fin = isfinite(r.loss) && isfinite(r.dt) && isfinite(r.supcon) && isfinite(r.ce) &&
                              finite_arr(co.dhw, NCLS * DIM) && finite_arr(co.dhb, NCLS);
                    for (int v = 0; v < NV; v++) fin = fin && finite_arr(co.dz[v], p.n * DIM);
                    CHECK(fin, "%s t=%g spread %g mask %d tile %d: NaN/Inf (loss %g, dt %g)", cases[ci].name,
                          ts[k], spreads[k], mk, tile, r.loss, r.dt);
                    if (ts[k] < 5.0) {
                        char what[128];
                        snprintf(what, sizeof what, "%s s=100 spread %g mask %d tile %d loss", cases[ci].name,
                                 spreads[k], mk, tile);
                        CHECK_CLOSE(r.loss, ref_total(&cases[ci].cfg, &p, NULL), 1e-4, 1e-4, what);
                    }
                }
}

/* 5: CLIP(0, 1) and FULL against PyTorch (float64) on the same float embeddings. */
static const char *torch_script =
    "import sys, os\n"
    "try:\n"
    "    import numpy as np, torch\n"
    "    import torch.nn.functional as F\n"
    "except Exception:\n"
    "    sys.exit(77)\n"
    "d = sys.argv[1]; n, dim, nv = map(int, sys.argv[2:5]); t0 = float(sys.argv[5])\n"
    "z = np.fromfile(os.path.join(d, 'z.f32'), dtype=np.float32).reshape(nv, n, dim)\n"
    "out = []\n"
    "for pairs in ([(0, 1)], [(i, j) for i in range(nv) for j in range(i + 1, nv)]):\n"
    "    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)\n"
    "    t = torch.tensor(t0, dtype=torch.float64, requires_grad=True)\n"
    "    tgt = torch.arange(n)\n"
    "    loss = 0\n"
    "    for i, j in pairs:\n"
    "        L = t.exp() * zt[i] @ zt[j].T\n"
    "        loss = loss + (F.cross_entropy(L, tgt) + F.cross_entropy(L.T, tgt)) / 2\n"
    "    loss = loss / len(pairs)\n"
    "    loss.backward()\n"
    "    out += [loss.detach().numpy().reshape(1), t.grad.numpy().reshape(1), zt.grad.numpy().reshape(-1)]\n"
    "np.concatenate(out).astype(np.float64).tofile(os.path.join(d, 'out.f64'))\n";

static void test_torch(void) {
    if (access("/usr/bin/python3", X_OK) != 0) {
        CHECK_SKIP("torch comparison: no /usr/bin/python3");
        return;
    }
    char dir[] = "/tmp/hcl_test_loss.XXXXXX", path[256], cmd[512];
    if (!mkdtemp(dir)) {
        CHECK(0, "torch comparison: mkdtemp failed");
        return;
    }
    static problem p;
    problem_fill(&p, NROWS, 1.0, 2.0);
    FILE *f;
    snprintf(path, sizeof path, "%s/script.py", dir);
    CHECK((f = fopen(path, "w")) != NULL, "open %s", path);
    if (f) fputs(torch_script, f), fclose(f);
    snprintf(path, sizeof path, "%s/z.f32", dir);
    CHECK((f = fopen(path, "wb")) != NULL, "open %s", path);
    if (f) {
        for (int v = 0; v < NV; v++) fwrite(p.zf[v], sizeof(float), (size_t)p.n * DIM, f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/script.py %s %d %d %d %.17g", dir, dir, p.n, DIM, NV, p.t);
    int rc = system(cmd);
    int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    const int per = 2 + NV * NROWS * DIM;
    static double got[2 * (2 + NV * NROWS * DIM)];
    if (status == 77) {
        CHECK_SKIP("torch comparison: torch not importable");
    } else {
        CHECK(status == 0, "python3 torch reference exited with %d", status);
        snprintf(path, sizeof path, "%s/out.f64", dir);
        size_t nr = 0;
        if (status == 0 && (f = fopen(path, "rb"))) {
            nr = fread(got, sizeof(double), (size_t)2 * per, f);
            fclose(f);
        }
        CHECK(nr == (size_t)2 * per, "torch output: %zu of %d values", nr, 2 * per);
        const char *names[2] = {"clip01", "full"};
        for (int k = 0; k < 2 && nr == (size_t)2 * per; k++) {
            const hcl_loss_config *cfg = &cases[k == 0 ? 0 : 3].cfg;
            static c_result co;
            memset(&co, 0, sizeof co);
            hcl_loss_result r = c_run(cfg, &p, 0, p.n, p.n, &co, 1);
            const double *o = got + k * per;
            char what[96];
            snprintf(what, sizeof what, "torch %s loss", names[k]);
            CHECK_CLOSE(r.loss, o[0], FWD_RTOL, FWD_ATOL, what);
            snprintf(what, sizeof what, "torch %s dt", names[k]);
            CHECK_CLOSE(r.dt, o[1], GRAD_RTOL, 1e-6, what);
            for (int v = 0; v < NV; v++) {
                snprintf(what, sizeof what, "torch %s dz[%d]", names[k], v);
                int bad = cmp_arr(co.dz[v], o + 2 + v * NROWS * DIM, p.n * DIM, GRAD_RTOL, GRAD_ATOL, what, 1);
                CHECK(bad == 0, "%s: %d entries off PyTorch", what, bad);
            }
        }
        printf("torch comparison done\n");
    }
    const char *files[] = {"script.py", "z.f32", "out.f64"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* 6: tiles of 1, 3, 7 and 16 (>= N, cut to one tile) columns, and blocks of 2 or 3 own rows,
 * give the default's values within 1e-6 relative: the same float logits, exps under another
 * running max and double sums in another order. One worker (both directions of a pair from one
 * block, the columns' maxes and sums folded in row chunk by row chunk) and three workers (one
 * direction per block, uneven shares with an empty one); forward only agrees bit for bit. */
#define TILE_RTOL 1e-6
static void test_tiles(const loss_case *lc, const problem *p, const char *mname) {
    static const int64_t tiles[] = {1, 3, 7, 16, 3, 16, 7};
    static const int64_t rows[] = {0, 0, 0, 0, 2, 3, 1};
    static const int64_t split[] = {4, 0, 6};
    static c_result want, got, fwd, kept;
    const hcl_loss_config *cfg = &lc->cfg;
    char what[192];
    for (int sharded = 0; sharded < 2; sharded++) {
        int nw = sharded ? 3 : 1;
        int64_t max_b = sharded ? 6 : p->n;
        hcl_loss_result rw, rg;
        memset(&rw, 0, sizeof rw);
        memset(&want, 0, sizeof want);
        for (int w = 0, r0 = 0; w < nw; r0 += (int)(sharded ? split[w] : p->n), w++) {
            hcl_loss_result r = c_run_tile(cfg, p, r0, sharded ? split[w] : p->n, max_b, 0, &want, 1);
            rw.loss += r.loss, rw.dt += r.dt, rw.supcon += r.supcon, rw.ce += r.ce;
            for (int i = 0; i < NV; i++)
                for (int j = i + 1; j < NV; j++) rw.pair_loss[i][j] += r.pair_loss[i][j];
        }
        for (size_t t = 0; t < sizeof tiles / sizeof tiles[0]; t++) {
            memset(&rg, 0, sizeof rg);
            memset(&got, 0, sizeof got);
            for (int w = 0, r0 = 0; w < nw; r0 += (int)(sharded ? split[w] : p->n), w++) {
                int64_t b = sharded ? split[w] : p->n;
                run_rows = rows[t];
                hcl_loss_result r = c_run_tile(cfg, p, r0, b, max_b, tiles[t], &got, 1);
                memset(&fwd, 0, sizeof fwd);
                hcl_loss_result rf = c_run_tile(cfg, p, r0, b, max_b, tiles[t], &fwd, 0);
                /* the logits kept between the passes (--loss-memory): the same bits */
                memset(&kept, 0, sizeof kept);
                run_keep = 1;
                hcl_loss_result rk = c_run_tile(cfg, p, r0, b, max_b, tiles[t], &kept, 1);
                run_keep = 0;
                int same = rk.loss == r.loss && rk.dt == r.dt;
                for (int v = 0; v < NV && !sharded; v++)   /* one worker: got holds this run's dz only */
                    same &= memcmp(kept.dz[v], got.dz[v], sizeof(float) * (size_t)p->n * DIM) == 0;
                CHECK(same, "%s/%s tile %lld: kept logits give loss %.17g dt %.17g (or dz) unlike recomputed %.17g %.17g",
                      lc->name, mname, (long long)tiles[t], rk.loss, rk.dt, r.loss, r.dt);
                /* progress: in [0, 1), never back (no rows, no tiles: prog.total is checked in main) */
                CHECK(prog.ok, "%s/%s tile %lld: %d progress calls, last %.3f, one out of [0, 1) or going back",
                      lc->name, mname, (long long)tiles[t], prog.calls, prog.last);
                run_rows = 0;
                CHECK(rf.loss == r.loss && rf.dt == r.dt, "%s/%s tile %lld: forward-only loss %.9g dt %.9g vs "
                      "%.9g %.9g", lc->name, mname, (long long)tiles[t], rf.loss, rf.dt, r.loss, r.dt);
                rg.loss += r.loss, rg.dt += r.dt, rg.supcon += r.supcon, rg.ce += r.ce;
                for (int i = 0; i < NV; i++)
                    for (int j = i + 1; j < NV; j++) rg.pair_loss[i][j] += r.pair_loss[i][j];
            }
#define TILE_CLOSE(field, label) do { snprintf(what, sizeof what, "%s/%s W=%d tile %lld %s", lc->name, mname, \
        nw, (long long)tiles[t], label); CHECK_CLOSE(rg.field, rw.field, TILE_RTOL, 1e-9, what); } while (0)
            TILE_CLOSE(loss, "loss");
            TILE_CLOSE(dt, "dt");
            TILE_CLOSE(supcon, "supcon");
            TILE_CLOSE(ce, "ce");
            for (int i = 0; i < NV; i++)
                for (int j = i + 1; j < NV; j++) TILE_CLOSE(pair_loss[i][j], "pair_loss");
#undef TILE_CLOSE
            static double ref[MAXN * DIM];
            for (int v = 0; v < NV; v++) {
                for (int i = 0; i < p->n * DIM; i++) ref[i] = want.dz[v][i];
                snprintf(what, sizeof what, "%s/%s W=%d tile %lld dz[%d]", lc->name, mname, nw, (long long)tiles[t], v);
                int bad = cmp_arr(got.dz[v], ref, p->n * DIM, TILE_RTOL, TILE_RTOL, what, 1);
                CHECK(bad == 0, "%s: %d entries differ from one tile", what, bad);
            }
            if (cfg->kind == HCL_LOSS_HYBRID) {
                for (int i = 0; i < NCLS * DIM; i++) ref[i] = want.dhw[i];
                snprintf(what, sizeof what, "%s/%s W=%d tile %lld dhead_w", lc->name, mname, nw, (long long)tiles[t]);
                CHECK(cmp_arr(got.dhw, ref, NCLS * DIM, TILE_RTOL, TILE_RTOL, what, 1) == 0, "%s differs", what);
            }
        }
    }
}

/* 6: the scratch is one block of logits plus O(max_n) vectors: one (b, N) block when it fits
 * HCL_LOSS_ONE_TILE_FLOATS; else InfoNCE blocks of HCL_LOSS_TILE_FLOATS / HCL_LOSS_TILE own rows x
 * HCL_LOSS_TILE columns, SupCon blocks of all own rows x HCL_LOSS_TILE_FLOATS / max_b columns
 * within [HCL_LOSS_TILE_MIN, HCL_LOSS_TILE]; doubling max_n adds O(max_n), never max_b * max_n;
 * N = 16384, b = 8192 stays within a few MB beyond its O(max_n) vectors. */
static void test_scratch_size(void) {
    const int64_t R = HCL_LOSS_TILE_FLOATS / HCL_LOSS_TILE;   /* InfoNCE rows per block */
    for (int ci = 0; ci < ncases; ci++) {
        hcl_loss_config cfg = cases[ci].cfg;
        cfg.dim = 128;
        int supcon = cfg.kind == HCL_LOSS_SUPCON || (cfg.kind == HCL_LOSS_HYBRID && cfg.base == HCL_LOSS_SUPCON);
        int64_t widest1 = supcon ? NV * 512 : 512;
        hcl_loss_ctx c1, c2, c3;
        loss_ctx_init(&c1, &cfg, 512, 512);               /* W1, one worker */
        CHECK(c1.tile == widest1 && c1.rows == 512, "%s: W1 block (%lld, %lld), want one of (512, %lld)",
              cases[ci].name, (long long)c1.rows, (long long)c1.tile, (long long)widest1);
        loss_ctx_free(&c1);
        loss_ctx_init(&c1, &cfg, 8192, 16384);
        loss_ctx_init(&c2, &cfg, 8192, 32768);
        loss_ctx_init_tile(&c3, &cfg, 8192, 16384, 7);    /* a tile given: blocks of all own rows */
        int64_t wt = supcon ? 64 : HCL_LOSS_TILE, wr = supcon ? 8192 : R;
        CHECK(c1.tile == wt && c2.tile == wt && c3.tile == 7 && c1.rows == wr && c2.rows == wr && c3.rows == 8192,
              "%s: blocks (%lld, %lld) (%lld, %lld) (%lld, %lld), want (%lld, %lld) twice and (8192, 7)",
              cases[ci].name, (long long)c1.rows, (long long)c1.tile, (long long)c2.rows, (long long)c2.tile,
              (long long)c3.rows, (long long)c3.tile, (long long)wr, (long long)wt);
        hcl_loss_ctx c4;
        loss_ctx_init(&c4, &cfg, 1024, 8192);             /* 8 Mi floats of logits */
        CHECK(c4.tile == HCL_LOSS_TILE && c4.rows == 1024, "%s: (1024, 8192) block (%lld, %lld)", cases[ci].name,
              (long long)c4.rows, (long long)c4.tile);
        loss_ctx_free(&c4);
        loss_ctx_init(&c4, &cfg, 2048, 4096);
        CHECK(c4.tile == (supcon ? 256 : HCL_LOSS_TILE) && c4.rows == (supcon ? 2048 : R),
              "%s: (2048, 4096) block (%lld, %lld)", cases[ci].name, (long long)c4.rows, (long long)c4.tile);
        loss_ctx_free(&c4);
        loss_ctx_init(&c4, &cfg, 32768, 65536);           /* SupCon never below HCL_LOSS_TILE_MIN */
        CHECK(c4.tile == (supcon ? HCL_LOSS_TILE_MIN : HCL_LOSS_TILE), "%s: (32768, 65536) tile %lld",
              cases[ci].name, (long long)c4.tile);
        loss_ctx_free(&c4);
        int64_t kbuf = cfg.kind == HCL_LOSS_HYBRID ? 8192 * NCLS : 0;
        int64_t P = supcon ? 0 : loss_pair_count(&cfg);   /* per pair: 2 max_b + max_n floats, */
        int64_t vec = (supcon ? NV + 3 : 3) * 16384 + 2 * HCL_LOSS_TILE + P * (2 * 8192 + 16384);   /* max_b + max_n doubles */
        CHECK(c1.scratch_len <= c1.rows * c1.tile + vec + kbuf, "%s: scratch %lld floats > (rows, tile) + %lld",
              cases[ci].name, (long long)c1.scratch_len, (long long)(vec + kbuf));
        CHECK(c1.scratch_len - c3.scratch_len == c1.rows * c1.tile - 8192 * 7 + 2 * (c1.tile - 7),
              "%s: scratch %lld with tile %lld, %lld with tile 7", cases[ci].name, (long long)c1.scratch_len,
              (long long)c1.tile, (long long)c3.scratch_len);
        CHECK(c2.scratch_len - c1.scratch_len <= (supcon ? NV + 3 : 3 + P) * 16384,
              "%s: doubling max_n grows the scratch by %lld floats", cases[ci].name,
              (long long)(c2.scratch_len - c1.scratch_len));
        CHECK(c1.dscratch_len <= 3 * 16384 + P * (8192 + 16384) && c2.dscratch_len <= 3 * 32768 + P * (8192 + 32768),
              "%s: dscratch %lld, %lld",
              cases[ci].name, (long long)c1.dscratch_len, (long long)c2.dscratch_len);
        double mb = (4.0 * c1.scratch_len + 8.0 * c1.dscratch_len + 4.0 * c1.iscratch_len) / 1e6;
        CHECK(mb < 12.0, "%s: N = 16384, b = 8192 takes %.1f MB of scratch", cases[ci].name, mb);
        loss_ctx_free(&c1);
        loss_ctx_free(&c2);
        loss_ctx_free(&c3);
    }
}

static void test_names_and_defaults(void) {
    for (int k = HCL_LOSS_CLIP; k <= HCL_LOSS_HYBRID; k++) {
        enum hcl_loss_kind back = HCL_LOSS_FULL;
        CHECK(loss_kind_parse(loss_kind_name((enum hcl_loss_kind)k), &back) == 0 && (int)back == k,
              "kind %d does not round-trip through %s", k, loss_kind_name((enum hcl_loss_kind)k));
    }
    enum hcl_loss_kind k;
    CHECK(loss_kind_parse("supcon", &k) == 0 && k == HCL_LOSS_SUPCON, "parse supcon");
    CHECK(loss_kind_parse("infonce", &k) != 0, "parse accepts infonce");
    CHECK(loss_kind_parse("", &k) != 0, "parse accepts the empty string");
    hcl_loss_config c;
    loss_config_default(&c, 4, 32);
    CHECK(c.kind == HCL_LOSS_FULL && c.base == HCL_LOSS_FULL && c.nviews == 4 && c.dim == 32 && c.view_a == 0 &&
          c.view_b == 1 && c.core_view == 0 && c.lambda == 1.0f && c.pair_weight[0][3] == 1.0f &&
          c.pair_weight[HCL_MAX_VIEWS - 2][HCL_MAX_VIEWS - 1] == 1.0f, "config defaults");
}

int main(void) {
    make_cases();
    test_names_and_defaults();
    static problem p;
    const uint8_t *masks[3] = {NULL, mask_b, mask_c};
    const char *mnames[3] = {"nomask", "mask_b", "mask_c"};
    for (int m = 0; m < 3; m++)
        for (int ci = 0; ci < ncases; ci++) {
            problem_fill(&p, NROWS, 1.0, 2.0);
            p.mask = masks[m];
            test_forward_and_gradients(&cases[ci], &p, mnames[m]);
            test_sharding(&cases[ci], &p, mnames[m]);
            test_tiles(&cases[ci], &p, mnames[m]);
        }
    CHECK(prog.total > 1000, "the loss's progress hook was called %ld times over every case and tile", prog.total);
    /* mask C really has an unused pair and an anchor without positives */
    {
        problem_fill(&p, NROWS, 1.0, 2.0);
        p.mask = mask_c;
        ref_result ref;
        ref_total(&cases[3].cfg, &p, &ref);
        CHECK(!ref.used[1][2] && ref.used[0][1] && ref.used[0][2], "mask C pair use");
    }
    test_scratch_size();
    test_stability();
    test_torch();
    CHECK_DONE();
}
