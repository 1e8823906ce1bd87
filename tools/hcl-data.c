/* hcl-data: make, convert and check hcl dataset directories (see common/dataset.h).
 *
 *   hcl-data synth OUT           seeded synthetic multi-view data with class structure
 *   hcl-data fashion-mnist OUT   the 3-view Fashion-MNIST dataset (top, bottom, thumb); with
 *                                --kinds an image, a token and a dense view (image, words, thumb)
 *   hcl-data inspect DIR         validate a dataset and print its shape
 *
 * Each command's flags live in one table (name, type, default, help, destination) that drives
 * parsing and --help. synth and fashion-mnist count the rows they write on a progress line on
 * stderr when it is a terminal (common/progress.h); stdout is the same either way. User errors print one line `hcl-data: ...` and exit 2 (bad usage) or
 * 1 (bad data, failed I/O). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "opts.h"
#include "dataset.h"
#include "npy.h"
#include "progress.h"
#include "rng.h"
#include "util.h"

#define EXIT_USAGE 2

static hcl_progress progress;

static void fail(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(int code, const char *fmt, ...) {
    va_list ap;
    progress_clear(&progress);
    fputs("hcl-data: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* ---- option tables ----------------------------------------------------------------------- */

#define OPT_STR_MAX 1024

typedef struct {
    const char *name;
    const char *arg;       /* positional argument name */
    const char *summary;
    const hcl_opt *opts;
    int nopts;
    int (*run)(const char *arg);
} cli_command;

static int64_t synth_rows, synth_classes, synth_seed, synth_latent, synth_split;
static double synth_missing;
static char synth_widths[OPT_STR_MAX];
static char fm_source[OPT_STR_MAX];
static int64_t fm_kinds;

static const hcl_opt synth_opts[] = {
    {"rows", HCL_OPT_INT, "2048", "number of rows (samples)", HCL_OPT_AT(synth_rows), .lo = 1,
     .hi = 1000000000},
    {"widths", HCL_OPT_INTS, "64,32,16", "view widths, one per view", HCL_OPT_AT(synth_widths),
     .lo = 1, .hi = 1000000, .min_items = 1, .max_items = HCL_MAX_VIEWS},
    {"classes", HCL_OPT_INT, "10", "number of classes in the shared latent", HCL_OPT_AT(synth_classes),
     .lo = 1, .hi = 1000000},
    {"latent", HCL_OPT_INT, "16", "dimension of the shared latent", HCL_OPT_AT(synth_latent), .lo = 1,
     .hi = 4096},
    {"missing-rate", HCL_OPT_FLOAT, "0", "probability that a view is absent from a row; > 0 writes "
     "mask.npy (every row keeps at least one view)", HCL_OPT_AT(synth_missing), .max = 1},
    {"seed", HCL_OPT_INT, "0", "random seed (same seed, same bytes)", HCL_OPT_AT(synth_seed)},
    {"split", HCL_OPT_INT, "0", "sample stream: splits of one seed share the class means and view "
     "maps but draw other rows (e.g. 0 train, 1 validation)", HCL_OPT_AT(synth_split), .hi = 1000000},
};

static const hcl_opt fm_opts[] = {
    {"source", HCL_OPT_PATH, "/usr/share/datasets/fashion-mnist",
     "directory with the gzipped IDX files of Debian's dataset-fashion-mnist", HCL_OPT_AT(fm_source),
     .meta = "DIR"},
    {"kinds", HCL_OPT_FLAG, "0", "write three kinds of view instead: image (28x28x1 uint8), words (a token "
     "view of 49 visual words: the 4x4 patch p = py*7+px of the 7x7 grid has level = mean intensity "
     "(0..255) * 8 / 256; level 0 is the padding token 0, else the token is 1 + p*7 + level-1; vocab "
     "344) and thumb (7x7 mean pool / 255)", HCL_OPT_AT(fm_kinds)},
};

static hcl_optset cmd_optset(const cli_command *c) {
    return (hcl_optset){c->opts, c->nopts, NULL, NULL};
}

static void cmd_usage(FILE *fp, const cli_command *c) {
    fprintf(fp, "usage: hcl-data %s %s%s\n  %s\n", c->name, c->arg, c->nopts ? " [flags]" : "",
            c->summary);
    if (c->nopts) fprintf(fp, "flags (default in brackets):\n");
    hcl_optset s = cmd_optset(c);
    opts_help(fp, &s);
}

/* Parse argv[0..argc) of a command: flags from its table and exactly one positional. */
static const char *cmd_parse(const cli_command *c, int argc, char **argv) {
    char err[HCL_ERR_MAX];
    const char *pos[1];
    int npos;
    hcl_optset s = cmd_optset(c);
    opts_defaults(&s);
    int rc = opts_parse_argv(&s, argc, argv, pos, 1, &npos, err);
    if (rc == 1) {
        cmd_usage(stdout, c);
        exit(0);
    }
    if (rc != 0) fail(EXIT_USAGE, "%s: %s", c->name, err);
    if (npos == 0) fail(EXIT_USAGE, "%s: missing %s (usage: hcl-data %s %s [flags])", c->name, c->arg,
                        c->name, c->arg);
    return pos[0];
}

/* ---- writing a dataset directory --------------------------------------------------------- */

static void path_join(char *out, size_t cap, const char *dir, const char *name) {
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap)
        fail(1, "%s/%s: path too long", dir, name);
}

/* Make DIR and invalidate it while it is rewritten: the manifest goes first and comes back
 * last, so a crash leaves a directory that dataset_open refuses rather than a mix. Stale files
 * of an earlier run (vN.npy beyond the new views, mask.npy) are removed. */
static void out_prepare(const char *dir, int nviews, int keep_mask, const char *const *names) {
    char err[HCL_ERR_MAX], path[OPT_STR_MAX + 80];
    if (hcl_mkdir_p(dir, err) != 0) fail(1, "%s", err);
    path_join(path, sizeof path, dir, "manifest.txt");
    if (unlink(path) != 0 && errno != ENOENT) fail(1, "%s: unlink: %s", path, strerror(errno));
    DIR *d = opendir(dir);
    if (!d) fail(1, "%s: open directory: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        if (len < 5 || strcmp(n + len - 4, ".npy") != 0) continue;
        int stale = 0;
        if (strcmp(n, "mask.npy") == 0) {
            stale = !keep_mask;
        } else if (strcmp(n, "labels.npy") != 0) {
            stale = 1;   /* a view file: stale unless it is one of the new views */
            for (int v = 0; v < nviews; v++)
                if (strlen(names[v]) == len - 4 && strncmp(n, names[v], len - 4) == 0) stale = 0;
            /* only remove files this tool could have written: synth's vN, fashion-mnist's (and
             * its --kinds') */
            int ours = (n[0] == 'v' && strspn(n + 1, "0123456789") == len - 5 && len > 5) ||
                       strcmp(n, "top.npy") == 0 || strcmp(n, "bottom.npy") == 0 ||
                       strcmp(n, "thumb.npy") == 0 || strcmp(n, "image.npy") == 0 ||
                       strcmp(n, "words.npy") == 0;
            stale &= ours;
        }
        if (stale) {
            path_join(path, sizeof path, dir, n);
            if (unlink(path) != 0) fail(1, "%s: unlink stale file: %s", path, strerror(errno));
        }
    }
    closedir(d);
}

static void out_npy(const char *dir, const char *name, enum npy_dtype t, int ndim, int64_t d0,
                    int64_t d1, const void *data) {
    char err[HCL_ERR_MAX], path[OPT_STR_MAX + 80];
    path_join(path, sizeof path, dir, name);
    int64_t shape[2] = {d0, d1};
    if (npy_write(path, t, ndim, shape, data, err) != 0) fail(1, "%s", err);
}

/* manifest.txt: the comment (its lines after the first start with "# "), then `view NAME` and
 * attrs[v] when attrs and attrs[v] are not NULL (e.g. "tokens vocab=344 pad=0"). */
static void out_manifest(const char *dir, const char *comment, int nviews,
                         const char *const *names, const char *const *attrs) {
    char err[HCL_ERR_MAX], path[OPT_STR_MAX + 80], text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "# hcl dataset manifest: one `view NAME` line "
                                "per view, data in NAME.npy\n# %s\n", comment);
    for (int v = 0; v < nviews && n < sizeof text; v++)
        n += (size_t)snprintf(text + n, sizeof text - n, "view %s%s%s\n", names[v], attrs && attrs[v] ? " " : "",
                              attrs && attrs[v] ? attrs[v] : "");
    HCL_CHECK(n < sizeof text, "manifest text too long");
    path_join(path, sizeof path, dir, "manifest.txt");
    if (hcl_write_file_durable(path, text, n, err) != 0) fail(1, "%s", err);
}

/* Re-open what was written, as training will. */
static void out_verify(const char *dir) {
    hcl_dataset ds;
    char err[HCL_ERR_MAX];
    if (dataset_open(&ds, dir, err) != 0) fail(1, "wrote an invalid dataset: %s", err);
    printf("wrote %s: %lld rows,", dir, (long long)ds.n);
    for (int v = 0; v < ds.nviews; v++)
        printf(" %s %lld%s", ds.names[v], (long long)ds.widths[v], v + 1 < ds.nviews ? "," : "");
    printf("; %d classes%s\n", ds.nclasses, ds.has_mask ? "; with mask.npy" : "");
    dataset_close(&ds);
}

/* ---- synth ------------------------------------------------------------------------------- */

/* The generative story: y ~ uniform(K); z = mu_y + e, e ~ N(0, I_L), mu_k ~ N(0, 1.5^2 I_L);
 * view v: x_v = W2_v tanh(W1_v z + b1_v) + b2_v + 0.3 * noise, a random 2-layer map with its own
 * weights and noise. All views carry the same z, so a contrastive model can align them, and
 * z carries the class, so the aligned embeddings cluster by class. */
#define SYNTH_HIDDEN 64
#define SYNTH_CLASS_SCALE 1.5
#define SYNTH_VIEW_NOISE 0.3

static int synth_run(const char *out) {
    int64_t w[HCL_MAX_VIEWS];
    const hcl_optset set = {synth_opts, (int)(sizeof synth_opts / sizeof synth_opts[0]), NULL, NULL};
    int nv = opts_ints(opts_find(&set, "widths"), synth_widths, w, HCL_MAX_VIEWS);  /* checked */
    int64_t n = synth_rows, k = synth_classes, L = synth_latent, H = SYNTH_HIDDEN;
    uint64_t seed = (uint64_t)synth_seed, split = (uint64_t)synth_split;
    char names_buf[HCL_MAX_VIEWS][16];
    const char *names[HCL_MAX_VIEWS];
    for (int v = 0; v < nv; v++) {
        snprintf(names_buf[v], sizeof names_buf[v], "v%d", v);
        names[v] = names_buf[v];
    }
    out_prepare(out, nv, synth_missing > 0, names);
    progress_begin(&progress, "synth %s, rows of %d views", out, nv);
    hcl_rng r;

    /* class means (k, L) and labels (n,) */
    double *mu = hcl_malloc((size_t)(k * L) * sizeof(double));
    rng_derive(&r, seed, "synth.means", 0);
    for (int64_t i = 0; i < k * L; i++) mu[i] = SYNTH_CLASS_SCALE * rng_normal(&r);
    int64_t *labels = hcl_malloc((size_t)n * sizeof(int64_t));
    rng_derive(&r, seed, "synth.labels", split);
    for (int64_t i = 0; i < n; i++) labels[i] = (int64_t)rng_below(&r, (uint64_t)k);

    /* shared latent z (n, L) */
    double *z = hcl_malloc((size_t)(n * L) * sizeof(double));
    rng_derive(&r, seed, "synth.latent", split);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < L; j++) z[i * L + j] = mu[labels[i] * L + j] + rng_normal(&r);

    /* mask (n, nv): each view absent with probability p, at least one present per row */
    size_t mask_bytes = (size_t)n * (size_t)nv;
    uint8_t *mask = hcl_malloc(mask_bytes);
    memset(mask, 1, mask_bytes);
    if (synth_missing > 0) {
        rng_derive(&r, seed, "synth.mask", split);
        for (int64_t i = 0; i < n; i++) {
            int present = 0;
            for (int v = 0; v < nv; v++) {
                mask[i * nv + v] = rng_uniform(&r) >= synth_missing;
                present += mask[i * nv + v];
            }
            if (!present) mask[i * nv + rng_below(&r, (uint64_t)nv)] = 1;
        }
    }

    /* views: a random 2-layer tanh map of z per view, plus view-specific noise */
    double zscale = 1.0 / sqrt((double)L * (SYNTH_CLASS_SCALE * SYNTH_CLASS_SCALE + 1.0));
    double *w1 = hcl_malloc((size_t)(H * L) * sizeof(double));
    double *b1 = hcl_malloc((size_t)H * sizeof(double));
    double *h = hcl_malloc((size_t)H * sizeof(double));
    for (int v = 0; v < nv; v++) {
        int64_t d = w[v];
        double *w2 = hcl_malloc((size_t)(d * H) * sizeof(double));
        double *b2 = hcl_malloc((size_t)d * sizeof(double));
        rng_derive(&r, seed, "synth.map", (uint64_t)v);
        for (int64_t i = 0; i < H * L; i++) w1[i] = 1.5 * zscale * rng_normal(&r);
        for (int64_t i = 0; i < H; i++) b1[i] = 0.5 * rng_normal(&r);
        for (int64_t i = 0; i < d * H; i++) w2[i] = rng_normal(&r) / sqrt((double)H);
        for (int64_t i = 0; i < d; i++) b2[i] = 0.1 * rng_normal(&r);
        float *x = hcl_malloc((size_t)(n * d) * sizeof(float));
        rng_derive(&r, seed, "synth.noise", (uint64_t)v + split * HCL_MAX_VIEWS);
        for (int64_t i = 0; i < n; i++) {
            progress_update(&progress, v * n + i, n * nv);
            const double *zi = z + i * L;
            for (int64_t a = 0; a < H; a++) {
                double s = b1[a];
                for (int64_t j = 0; j < L; j++) s += w1[a * L + j] * zi[j];
                h[a] = tanh(s);
            }
            for (int64_t c = 0; c < d; c++) {
                double s = b2[c];
                for (int64_t a = 0; a < H; a++) s += w2[c * H + a] * h[a];
                double e = SYNTH_VIEW_NOISE * rng_normal(&r);   /* drawn even when absent */
                x[i * d + c] = mask[i * nv + v] ? (float)(s + e) : 0.0f;
            }
        }
        char file[32];
        snprintf(file, sizeof file, "%s.npy", names[v]);
        out_npy(out, file, NPY_F32, 2, n, d, x);
        free(x);
        free(w2);
        free(b2);
    }
    out_npy(out, "labels.npy", NPY_I64, 1, n, 1, labels);
    if (synth_missing > 0) out_npy(out, "mask.npy", NPY_U8, 2, n, nv, mask);
    char comment[OPT_STR_MAX + 256];
    snprintf(comment, sizeof comment, "hcl-data synth --rows %lld --widths %s --classes %lld "
             "--latent %lld --missing-rate %g --seed %llu --split %llu", (long long)n, synth_widths,
             (long long)k, (long long)L, synth_missing, (unsigned long long)seed,
             (unsigned long long)split);
    out_manifest(out, comment, nv, names, NULL);
    progress_end(&progress);
    free(mu); free(labels); free(z); free(mask); free(w1); free(b1); free(h);
    out_verify(out);
    return 0;
}

/* ---- fashion-mnist ----------------------------------------------------------------------- */

/* Read a whole file, through `gzip -dc` when it ends in .gz (zlib is not a dependency). */
static uint8_t *read_all(const char *path, size_t *len) {
    size_t plen = strlen(path);
    int gz = plen > 3 && strcmp(path + plen - 3, ".gz") == 0;
    int fd, pfd[2];
    pid_t pid = -1;
    if (gz) {
        if (pipe(pfd) != 0) fail(1, "pipe: %s", strerror(errno));
        pid = fork();
        if (pid < 0) fail(1, "fork: %s", strerror(errno));
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(pfd[1], 1);
            if (devnull >= 0) dup2(devnull, 2);
            close(pfd[0]);
            close(pfd[1]);
            execlp("gzip", "gzip", "-dc", "--", path, (char *)NULL);
            _exit(127);
        }
        close(pfd[1]);
        fd = pfd[0];
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail(1, "%s: open: %s", path, strerror(errno));
    }
    size_t n;
    char err[HCL_ERR_MAX];
    /* the one whole-file read (util.h); a gzip pipe reads the same way. 1 GiB is far past the
     * largest IDX file of the dataset (47 MB) */
    uint8_t *buf = (uint8_t *)hcl_read_fd(fd, path, (size_t)1 << 30, &n, err);
    if (!buf) fail(1, "%s", err);
    close(fd);
    if (gz) {
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR) fail(1, "%s: waitpid: %s", path, strerror(errno));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            if (code == 127) fail(1, "%s: cannot run gzip (is it installed?)", path);
            fail(1, "%s: `gzip -dc` failed with status %d (corrupt or not gzip?)", path, code);
        }
    }
    *len = n;
    return buf;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* An IDX file of unsigned bytes: magic 0x0000080N, N big-endian dims, then the data. */
static const uint8_t *idx_parse(const char *path, const uint8_t *buf, size_t len, int ndim,
                                uint32_t *dims) {
    uint32_t want = 0x800u | (uint32_t)ndim;
    if (len < 4 || be32(buf) != want)
        fail(1, "%s: bad IDX magic 0x%08x (want 0x%08x, %d-D unsigned bytes)", path,
             len >= 4 ? be32(buf) : 0, want, ndim);
    size_t hdr = 4 + 4 * (size_t)ndim, count = 1;
    if (len < hdr) fail(1, "%s: truncated IDX header (%zu bytes)", path, len);
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(buf + 4 + 4 * i);
        count *= dims[i];
    }
    if (len != hdr + count)
        fail(1, "%s: IDX header says %zu data bytes but the file has %zu", path, count, len - hdr);
    return buf + hdr;
}

/* One split of the IDX files: images (n, 28*28) and labels (n,), pointing into the read buffers. */
typedef struct {
    uint8_t *ibuf, *lbuf;
    const uint8_t *img, *lab;
    int64_t n;
} fm_data;

static void fm_load(fm_data *d, const char *src, const char *prefix) {
    char ipath[OPT_STR_MAX + 64], lpath[OPT_STR_MAX + 64];
    snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", src, prefix);
    snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", src, prefix);
    const char *paths[2] = {ipath, lpath};
    for (int i = 0; i < 2; i++) {
        if (access(paths[i], R_OK) == 0) continue;
        char *plain = (char *)paths[i];           /* fall back to an uncompressed copy */
        plain[strlen(plain) - 3] = 0;
        if (access(plain, R_OK) == 0) continue;
        strcat(plain, ".gz");
        fail(1, "%s: not found (install dataset-fashion-mnist, or pass --source DIR)", plain);
    }
    size_t ilen, llen;
    d->ibuf = read_all(ipath, &ilen);
    d->lbuf = read_all(lpath, &llen);
    uint32_t idim[3], ldim[1];
    d->img = idx_parse(ipath, d->ibuf, ilen, 3, idim);
    d->lab = idx_parse(lpath, d->lbuf, llen, 1, ldim);
    if (idim[1] != 28 || idim[2] != 28)
        fail(1, "%s: images are %ux%u, want 28x28", ipath, idim[1], idim[2]);
    if (idim[0] != ldim[0])
        fail(1, "%s: %u labels but %s has %u images", lpath, ldim[0], ipath, idim[0]);
    d->n = idim[0];
}

/* The sums of the 49 4x4 patches of a 28x28 image, patch p = py * 7 + px. */
static void fm_patch_sums(const uint8_t *img, int *sum) {
    for (int by = 0; by < 7; by++)
        for (int bx = 0; bx < 7; bx++) {
            int s = 0;
            for (int y = 0; y < 4; y++)
                for (int xx = 0; xx < 4; xx++) s += img[(by * 4 + y) * 28 + bx * 4 + xx];
            sum[by * 7 + bx] = s;
        }
}

/* thumb = 4x4 average pooling, 7x7, pixels / 255: x is (n, 49). */
static void fm_thumb(const fm_data *d, float *x, int64_t done, int64_t total) {
    int sum[49];
    for (int64_t i = 0; i < d->n; i++) {
        progress_update(&progress, done + i, total);
        fm_patch_sums(d->img + i * 784, sum);
        for (int p = 0; p < 49; p++) x[i * 49 + p] = (float)sum[p] * ((1.0f / 255.0f) / 16.0f);
    }
}

/* words: 49 visual words a row, tok (n, 49). Patch p's mean intensity m (0..255) in FM_LEVELS
 * levels, level = m * 8 / 256 = sum / 512; level 0 (nearly blank) is the padding token 0, else
 * the token is 1 + p * 7 + (level - 1): a vocabulary of 1 + 49 * 7 = 344. */
#define FM_LEVELS 8
#define FM_VOCAB (1 + 49 * (FM_LEVELS - 1))
_Static_assert(FM_VOCAB == 344, "fm_split's manifest says vocab=344");

static void fm_words(const fm_data *d, int32_t *tok, int64_t done, int64_t total) {
    int sum[49];
    for (int64_t i = 0; i < d->n; i++) {
        progress_update(&progress, done + i, total);
        fm_patch_sums(d->img + i * 784, sum);
        for (int p = 0; p < 49; p++) {
            int level = sum[p] / 16 * FM_LEVELS / 256;   /* the integer mean, in levels 0..7 */
            tok[i * 49 + p] = level ? 1 + p * (FM_LEVELS - 1) + level - 1 : 0;
        }
    }
}

/* The 3 dense views: top = image rows 0..13, bottom = rows 14..27 (392 pixels / 255), thumb. */
static void fm_write_dense(const char *out, const fm_data *d) {
    const int64_t n = d->n;
    const float s = 1.0f / 255.0f;
    float *x = hcl_malloc((size_t)n * 392 * sizeof(float));
    for (int half = 0; half < 2; half++) {
        for (int64_t i = 0; i < n; i++) {
            progress_update(&progress, half * n + i, 3 * n);
            for (int j = 0; j < 392; j++) x[i * 392 + j] = (float)d->img[i * 784 + half * 392 + j] * s;
        }
        out_npy(out, half ? "bottom.npy" : "top.npy", NPY_F32, 2, n, 392, x);
    }
    fm_thumb(d, x, 2 * n, 3 * n);
    out_npy(out, "thumb.npy", NPY_F32, 2, n, 49, x);
    free(x);
}

/* The 3 kinds: image (n, 784) uint8 as stored, words (n, 49) int32 tokens, thumb. */
static void fm_write_kinds(const char *out, const fm_data *d) {
    const int64_t n = d->n;
    progress_update(&progress, 0, 3 * n);
    out_npy(out, "image.npy", NPY_U8, 2, n, 784, d->img);
    int32_t *tok = hcl_malloc((size_t)n * 49 * sizeof(int32_t));
    fm_words(d, tok, n, 3 * n);
    out_npy(out, "words.npy", NPY_I32, 2, n, 49, tok);
    free(tok);
    float *x = hcl_malloc((size_t)n * 49 * sizeof(float));
    fm_thumb(d, x, 2 * n, 3 * n);
    out_npy(out, "thumb.npy", NPY_F32, 2, n, 49, x);
    free(x);
}

static void fm_split(const char *src, const char *prefix, const char *out_root, const char *split) {
    char out[OPT_STR_MAX + 16];
    fm_data d;
    fm_load(&d, src, prefix);
    if (snprintf(out, sizeof out, "%s/%s", out_root, split) >= (int)sizeof out)
        fail(1, "%s/%s: path too long", out_root, split);
    progress_begin(&progress, "fashion-mnist %s, rows of 3 views", split);
    static const char *const dense[3] = {"top", "bottom", "thumb"}, *const kinds[3] = {"image", "words", "thumb"};
    static const char *const kinds_attrs[3] = {"image=28x28x1", "tokens vocab=344 pad=0", NULL};
    const char *const *names = fm_kinds ? kinds : dense;
    out_prepare(out, 3, 0, names);
    if (fm_kinds) fm_write_kinds(out, &d);
    else fm_write_dense(out, &d);
    int64_t *labels = hcl_malloc((size_t)d.n * sizeof(int64_t));
    for (int64_t i = 0; i < d.n; i++) labels[i] = d.lab[i];
    out_npy(out, "labels.npy", NPY_I64, 1, d.n, 1, labels);
    char comment[2 * OPT_STR_MAX];
    if (fm_kinds)
        snprintf(comment, sizeof comment, "hcl-data fashion-mnist --kinds: %s split of %s\n"
                 "# image = the 28x28 image (uint8, HWC; / 255 when gathered)\n"
                 "# words = 49 visual words: 4x4 patch p = py*7+px of the 7x7 grid, level = its mean "
                 "intensity (0..255) * 8 / 256 (0..7);\n#   level 0 gives the padding token 0, else "
                 "1 + p*7 + (level-1): vocab 1 + 49*7 = 344\n"
                 "# thumb = 4x4 mean pool (7x7), pixels / 255", split, src);
    else
        snprintf(comment, sizeof comment, "hcl-data fashion-mnist: %s split of %s; top/bottom = image "
                 "rows 0-13/14-27, thumb = 4x4 mean pool; pixels / 255", split, src);
    out_manifest(out, comment, 3, names, fm_kinds ? kinds_attrs : NULL);
    progress_end(&progress);
    free(labels);
    free(d.ibuf);
    free(d.lbuf);
    out_verify(out);
}

static int fm_run(const char *out) {
    if (access(fm_source, F_OK) != 0)
        fail(1, "%s: not found (install dataset-fashion-mnist: apt-get install "
             "dataset-fashion-mnist, or pass --source DIR)", fm_source);
    fm_split(fm_source, "train", out, "train");
    fm_split(fm_source, "t10k", out, "test");
    return 0;
}

/* ---- inspect ----------------------------------------------------------------------------- */

static int inspect_run(const char *dir) {
    hcl_dataset ds;
    char err[HCL_ERR_MAX];
    if (dataset_open(&ds, dir, err) != 0) fail(1, "%s", err);
    printf("dataset  %s\n", ds.dir);
    printf("rows     %lld\n", (long long)ds.n);
    printf("views    %d\n", ds.nviews);
    int64_t none = 0, present[HCL_MAX_VIEWS] = {0};
    for (int64_t i = 0; i < ds.n; i++) {
        int any = 0;
        for (int v = 0; v < ds.nviews; v++) {
            int p = dataset_present(&ds, i, v);
            present[v] += p;
            any |= p;
        }
        none += !any;
    }
    for (int v = 0; v < ds.nviews; v++) {
        const hcl_view_files *vf = &ds.views[v];
        char type[96];
        dataset_view_type_str(&ds.types[v], type, sizeof type);
        printf("view     %-12s width %-6lld dtype %-8s present %.4f type %s", ds.names[v], (long long)ds.widths[v],
               npy_dtype_name(vf->file[0].dtype), (double)present[v] / (double)ds.n, type);
        if (vf->nfiles > 1) printf(" files %d", vf->nfiles);
        printf("\n");
        for (int k = 0; k < vf->nfiles && vf->nfiles > 1; k++)
            printf("file     %-12s rows %lld-%lld dtype %-8s %s\n", ds.names[v], (long long)vf->first[k],
                   (long long)vf->first[k + 1] - 1, npy_dtype_name(vf->file[k].dtype),
                   vf->paths[k] + strlen(ds.dir) + 1);
    }
    if (ds.has_labels) {
        printf("labels   %s classes %d\n", npy_dtype_name(ds.labels_file.dtype), ds.nclasses);
        int64_t *counts = hcl_calloc((size_t)ds.nclasses, sizeof(int64_t));
        for (int64_t i = 0; i < ds.n; i++) counts[ds.labels[i]]++;
        for (int c = 0; c < ds.nclasses; c++)
            printf("class    %-4d count %lld\n", c, (long long)counts[c]);
        free(counts);
    } else {
        printf("labels   none\n");
    }
    if (ds.has_mask)
        printf("mask     %s rows-without-views %lld\n", npy_dtype_name(ds.mask_file.dtype),
               (long long)none);
    else
        printf("mask     none (every view present in every row)\n");
    dataset_close(&ds);
    return 0;
}

/* ---- main -------------------------------------------------------------------------------- */

static const cli_command commands[] = {
    {"synth", "OUT", "write a seeded synthetic multi-view dataset with class structure to OUT",
     synth_opts, (int)(sizeof synth_opts / sizeof synth_opts[0]), synth_run},
    {"fashion-mnist", "OUT", "write Fashion-MNIST as views top (392), bottom (392), thumb (49) "
     "to OUT/train and OUT/test (--kinds: image, words, thumb)", fm_opts, (int)(sizeof fm_opts / sizeof fm_opts[0]), fm_run},
    {"inspect", "DIR", "validate the dataset in DIR and print rows, views, classes and mask "
     "coverage", NULL, 0, inspect_run},
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void main_usage(FILE *fp) {
    fprintf(fp, "usage: hcl-data COMMAND ARG [flags]\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(fp, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(fp, "run `hcl-data COMMAND --help` for the flags of a command.\n"
            "A dataset directory holds manifest.txt (`view NAME` lines; `view NAME tokens vocab=V\n"
            "pad=P` for int token ids, `view NAME image=HxWxC` for images), NAME.npy per view,\n"
            "optional labels.npy (N,) and mask.npy (N, views).\n");
}

int main(int argc, char **argv) {
    progress_init(&progress, stderr);
    if (argc < 2) {
        main_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        main_usage(stdout);
        return 0;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(cmd_parse(&commands[i], argc - 2, argv + 2));
    fail(EXIT_USAGE, "unknown command '%s' (try hcl-data --help)", argv[1]);
}
