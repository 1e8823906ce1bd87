/* loss: the contrastive objectives of loss.h, forward and backward for one worker's rows: the
 * configuration, the scratch sized once, the choice of pairs, and the dispatch to the objectives:
 *   loss_infonce.c   CLIP, FULL, CORE: InfoNCE over pairs of views, sharded by rows
 *   loss_supcon.c    SUPCON, and HYBRID's cross-entropy of a linear head
 *   loss_kernels.c   the vectorised row kernels both use
 * Every sum accumulates in double in a fixed order, so a call is bit-reproducible for a given
 * tile. */
#include "loss.h"

#include <math.h>
#include <string.h>

#include "loss_private.h"

void loss_config_default(hcl_loss_config *c, int nviews, int dim) {
    memset(c, 0, sizeof *c);
    c->kind = HCL_LOSS_FULL;
    c->base = HCL_LOSS_FULL;
    c->nviews = nviews;
    c->dim = dim;
    c->view_a = 0;
    c->view_b = 1;
    c->core_view = 0;
    for (int i = 0; i < HCL_MAX_VIEWS; i++)
        for (int j = 0; j < HCL_MAX_VIEWS; j++) c->pair_weight[i][j] = 1.0f;
    c->lambda = 1.0f;
    c->nclasses = 0;
}

enum hcl_loss_kind loss_contrastive_kind(const hcl_loss_config *cfg) {
    return cfg->kind == HCL_LOSS_HYBRID ? cfg->base : cfg->kind;
}

/* The InfoNCE pair (i, j), i < j, is one of the loss's: CLIP's two views, CORE's pairs with the
 * core view, every pair of FULL; none of SUPCON. */
int loss_pair_selected(const hcl_loss_config *cfg, int i, int j) {
    switch (loss_contrastive_kind(cfg)) {
    case HCL_LOSS_CLIP:
        return (i == cfg->view_a && j == cfg->view_b) || (i == cfg->view_b && j == cfg->view_a);
    case HCL_LOSS_FULL: return 1;
    case HCL_LOSS_CORE: return i == cfg->core_view || j == cfg->core_view;
    default: return 0;
    }
}

/* Its weight in the mean over pairs: CLIP has one pair, the others pair_weight. */
double loss_pair_weight(const hcl_loss_config *cfg, int i, int j) {
    return loss_contrastive_kind(cfg) == HCL_LOSS_CLIP ? 1.0 : cfg->pair_weight[i][j];
}

/* The scratch layout (loss_private.h): every size of c, nothing allocated. */
static void ctx_plan(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n, int64_t tile) {
    memset(c, 0, sizeof *c);
    HCL_CHECK(cfg->nviews >= 1 && cfg->nviews <= HCL_MAX_VIEWS, "loss: nviews %d out of [1, %d]",
              cfg->nviews, HCL_MAX_VIEWS);
    HCL_CHECK(cfg->dim >= 1, "loss: dim %d", cfg->dim);
    HCL_CHECK(max_n >= 1 && max_b >= 1 && max_b <= max_n, "loss: max_b %lld, max_n %lld",
              (long long)max_b, (long long)max_n);
    HCL_CHECK(tile >= 0, "loss: tile %lld", (long long)tile);
    enum hcl_loss_kind k = loss_contrastive_kind(cfg);
    HCL_CHECK(k == HCL_LOSS_CLIP || k == HCL_LOSS_FULL || k == HCL_LOSS_CORE || k == HCL_LOSS_SUPCON,
              "loss: bad contrastive kind %d (kind %d, base %d)", (int)k, (int)cfg->kind, (int)cfg->base);
    if (k == HCL_LOSS_CLIP)
        HCL_CHECK(cfg->view_a >= 0 && cfg->view_a < cfg->nviews && cfg->view_b >= 0 &&
                  cfg->view_b < cfg->nviews && cfg->view_a != cfg->view_b,
                  "loss: clip views %d, %d with %d views", cfg->view_a, cfg->view_b, cfg->nviews);
    if (k == HCL_LOSS_CORE)
        HCL_CHECK(cfg->core_view >= 0 && cfg->core_view < cfg->nviews, "loss: core view %d with %d views",
                  cfg->core_view, cfg->nviews);
    if (cfg->kind == HCL_LOSS_HYBRID) HCL_CHECK(cfg->nclasses >= 1, "loss: hybrid needs nclasses >= 1");
    for (int i = 0; i < cfg->nviews; i++)
        for (int j = i + 1; j < cfg->nviews; j++)
            HCL_CHECK(cfg->pair_weight[i][j] >= 0.0f, "loss: pair weight [%d][%d] = %g < 0", i, j,
                      (double)cfg->pair_weight[i][j]);

    int64_t V = cfg->nviews;
    int64_t widest = k == HCL_LOSS_SUPCON ? V * max_n : max_n;   /* candidates of one anchor */
    /* InfoNCE pairs walk (rows, tile) blocks: column tiles of HCL_LOSS_TILE, row chunks that fill
     * HCL_LOSS_TILE_FLOATS; SupCon walks (max_b, tile) blocks, tile cut to fit the same budget. */
    int64_t rows = max_b;
    if (tile == 0 && max_b * widest <= HCL_LOSS_ONE_TILE_FLOATS) tile = widest;
    if (tile == 0 && k != HCL_LOSS_SUPCON) {
        tile = HCL_LOSS_TILE;
        rows = HCL_LOSS_TILE_FLOATS / HCL_LOSS_TILE;
    } else if (tile == 0) {
        tile = HCL_LOSS_TILE_FLOATS / max_b / 16 * 16;
        tile = tile < HCL_LOSS_TILE_MIN ? HCL_LOSS_TILE_MIN : tile > HCL_LOSS_TILE ? HCL_LOSS_TILE : tile;
    }
    if (tile > widest) tile = widest;
    if (rows > max_b) rows = max_b;
    if (k == HCL_LOSS_SUPCON) c->iscratch_len = 2 * max_n + V * max_n;   /* (label, present views) per row; keys */
    int64_t kbuf = cfg->kind == HCL_LOSS_HYBRID ? max_b * cfg->nclasses : 0;   /* (b, K) head logits */
    c->cfg = *cfg;
    c->max_b = max_b;
    c->max_n = max_n;
    c->tile = tile;
    c->rows = rows;
    /* pairs: each pair's state between its two passes (row maxes, target logits, column maxes;
     * row and column sums), and all pairs' blocks when they are single tiles that fit together */
    int64_t P = k == HCL_LOSS_SUPCON ? 0 : loss_pair_count(cfg);
    c->npairs = P;
    c->nblk = P > 1 && max_b < max_n && tile == widest && rows == max_b && P * max_b * tile <= HCL_LOSS_ONE_TILE_FLOATS
                  ? P : 1;
    c->off_rowmax = c->nblk * rows * tile;
    c->off_bias = off_colcoef(c) + 2 * tile;
    c->off_pair = c->off_bias + (k == HCL_LOSS_SUPCON ? V * max_n : max_n);
    c->scratch_len = c->off_pair + P * (2 * max_b + max_n) + kbuf;
    c->dscratch_len = 3 * max_n + P * (max_b + max_n);
}

void loss_ctx_init_tile(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n,
                        int64_t tile) {
    ctx_plan(c, cfg, max_b, max_n, tile);
    if (c->iscratch_len) c->iscratch = hcl_malloc((size_t)c->iscratch_len * sizeof(int32_t));
    c->scratch = hcl_floats((size_t)c->scratch_len);
    c->dscratch = hcl_malloc((size_t)c->dscratch_len * sizeof(double));
}

void loss_ctx_init(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n) {
    loss_ctx_init_tile(c, cfg, max_b, max_n, 0);
}

/* What loss_ctx_keep would keep: the logits of every pair when pass 2 computes them again
 * and they fit in max_bytes, else 0. */
static double kept_bytes(const hcl_loss_ctx *c, size_t max_bytes) {
    const int recompute = c->max_n > c->tile || c->max_b > c->rows;
    const double bytes = (double)c->npairs * (double)c->max_b * (double)c->max_n * sizeof(float);
    return c->npairs == 0 || !recompute || bytes > (double)max_bytes ? 0.0 : bytes;
}

size_t loss_ctx_keep(hcl_loss_ctx *c, size_t max_bytes) {
    const double bytes = kept_bytes(c, max_bytes);
    free(c->kept);
    c->kept = NULL;
    if (bytes == 0.0) return 0;
    c->kept = hcl_floats((size_t)c->npairs * (size_t)c->max_b * (size_t)c->max_n);
    return (size_t)bytes;
}

double loss_ctx_bytes(const hcl_loss_config *cfg, int64_t max_b, int64_t max_n, size_t keep_bytes) {
    hcl_loss_ctx c;
    ctx_plan(&c, cfg, max_b, max_n, 0);
    return 4.0 * (double)c.scratch_len + 8.0 * (double)c.dscratch_len + 4.0 * (double)c.iscratch_len +
           kept_bytes(&c, keep_bytes);
}

void loss_ctx_free(hcl_loss_ctx *c) {
    free(c->kept);
    free(c->scratch);
    free(c->dscratch);
    free(c->iscratch);
    memset(c, 0, sizeof *c);
}

void loss_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                           float *dhead_w, float *dhead_b, hcl_loss_result *out) {
    const hcl_loss_config *cfg = &c->cfg;
    HCL_CHECK(in->n >= 1 && in->n <= c->max_n, "loss: n %lld out of [1, %lld]", (long long)in->n,
              (long long)c->max_n);
    HCL_CHECK(in->b >= 0 && in->b <= c->max_b && in->r0 >= 0 && in->r0 + in->b <= in->n,
              "loss: rows [%lld, +%lld) of %lld (max_b %lld)", (long long)in->r0, (long long)in->b,
              (long long)in->n, (long long)c->max_b);
    memset(out, 0, sizeof *out);
    enum hcl_loss_kind k = loss_contrastive_kind(cfg);
    double base;
    if (k == HCL_LOSS_SUPCON) {
        out->supcon = loss_supcon_forward_backward(c, in, dz, &out->dt);
        base = out->supcon;
    } else {
        base = loss_pairs_forward_backward(c, in, dz, out);
    }
    out->loss = base;
    if (cfg->kind == HCL_LOSS_HYBRID) {
        out->ce = loss_ce_forward_backward(c, in, dz, dhead_w, dhead_b);
        out->loss += cfg->lambda * out->ce;
    }
}

int loss_pair_count(const hcl_loss_config *cfg) {
    int p = 0;
    for (int i = 0; i < cfg->nviews; i++)
        for (int j = i + 1; j < cfg->nviews; j++) p += loss_pair_selected(cfg, i, j);
    return p;
}

void loss_gathered_views(const hcl_loss_config *cfg, int need[HCL_MAX_VIEWS]) {
    int nv = cfg->nviews, supcon = loss_contrastive_kind(cfg) == HCL_LOSS_SUPCON;
    for (int v = 0; v < HCL_MAX_VIEWS; v++) need[v] = v < nv && supcon;
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++)
            if (loss_pair_selected(cfg, i, j)) need[j] = 1;   /* a pair reads all rows of view j */
}

static const char *const kind_names[] = {
    [HCL_LOSS_CLIP] = "clip", [HCL_LOSS_FULL] = "full", [HCL_LOSS_CORE] = "core",
    [HCL_LOSS_SUPCON] = "supcon", [HCL_LOSS_HYBRID] = "hybrid",
};

const char *loss_kind_name(enum hcl_loss_kind k) {
    if ((int)k < 0 || (size_t)k >= sizeof kind_names / sizeof kind_names[0]) return "?";
    return kind_names[k];
}

int loss_kind_parse(const char *s, enum hcl_loss_kind *k) {
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (s && strcmp(s, kind_names[i]) == 0) {
            *k = (enum hcl_loss_kind)i;
            return 0;
        }
    return -1;
}
