/* dataset: see dataset.h. Every check reports "FILE: what (value)" and stops at the first. */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATASET_MAX_CLASSES (1 << 20)

/* ---- manifest ---------------------------------------------------------------------------- */

/* Add path to view v's files (a copy). */
static int view_add_file(hcl_dataset *ds, int v, const char *path, const char *where, char *err) {
    hcl_view_files *vf = &ds->views[v];
    if (vf->nfiles == HCL_MAX_VIEW_FILES)
        return hcl_err(err, "%s: view '%s' has more than %d files", where, ds->names[v], HCL_MAX_VIEW_FILES);
    char **grown = hcl_malloc(sizeof(char *) * (size_t)(vf->nfiles + 1));
    if (vf->nfiles) memcpy(grown, vf->paths, sizeof(char *) * (size_t)vf->nfiles);
    free(vf->paths);
    vf->paths = grown;
    const size_t len = strlen(path) + 1;
    vf->paths[vf->nfiles] = hcl_malloc(len);
    memcpy(vf->paths[vf->nfiles++], path, len);
    return 0;
}

/* `files=F1,F2,...` of view v: each a path under the dataset directory (no absolute path, no
 * `..`), or a glob of them, expanded in sorted order. */
static int view_files(hcl_dataset *ds, int v, char *list, const char *where, char *err) {
    char *save = NULL;
    for (char *f = strtok_r(list, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
        if (f[0] == '/' || strcmp(f, "..") == 0 || strncmp(f, "../", 3) == 0 || strstr(f, "/../") ||
            (strlen(f) >= 3 && strcmp(f + strlen(f) - 3, "/..") == 0))
            return hcl_err(err, "%s: view '%s': file '%s' is outside the dataset directory (name it relative "
                           "to it, without '..')", where, ds->names[v], f);
        char path[1200];
        if (snprintf(path, sizeof path, "%s/%s", ds->dir, f) >= (int)sizeof path)
            return hcl_err(err, "%s: view '%s': file name too long", where, ds->names[v]);
        if (!strpbrk(f, "*?[")) {
            if (view_add_file(ds, v, path, where, err) != 0) return -1;
            continue;
        }
        glob_t g;
        int rc = glob(path, 0, NULL, &g);
        if (rc == GLOB_NOMATCH)
            return hcl_err(err, "%s: view '%s': files=%s matches no file", where, ds->names[v], f);
        if (rc != 0) return hcl_err(err, "%s: view '%s': files=%s: glob failed (%d)", where, ds->names[v], f, rc);
        for (size_t k = 0; k < g.gl_pathc && rc == 0; k++) rc = view_add_file(ds, v, g.gl_pathv[k], where, err);
        globfree(&g);
        if (rc != 0) return -1;
    }
    if (ds->views[v].nfiles == 0) return hcl_err(err, "%s: view '%s': files= names no file", where, ds->names[v]);
    return 0;
}

/* ---- view kinds: `tokens vocab=V pad=P`, `image=HxWxC` ----------------------------------- */

enum { ATTR_FILES = 1, ATTR_TOKENS = 2, ATTR_VOCAB = 4, ATTR_PAD = 8, ATTR_IMAGE = 16 };

/* All of s a whole number (digits only); past int64 it reads INT64_MAX. */
static int parse_whole(const char *s, int64_t *out) {
    int64_t x = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        x = x > (INT64_MAX - 9) / 10 ? INT64_MAX : x * 10 + (*s - '0');
    }
    *out = x;
    return 0;
}

/* `image=HxWxC` of view v: three whole numbers, their product a view's width. */
static int view_image(hcl_dataset *ds, int v, const char *a, const char *where, char *err) {
    int64_t d[3];
    const char *s = a + 6;
    int k = 0;
    for (; k < 3; k++) {
        char *end;
        if (*s < '0' || *s > '9') break;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno || x < 1 || x > HCL_MAX_WIDTH) break;
        d[k] = x;
        s = end;
        if (k < 2 && *s++ != 'x') break;
    }
    if (k != 3 || *s)
        return hcl_err(err, "%s: view '%s': bad '%.64s' (want image=HxWxC, e.g. image=28x28x1: height, width "
                       "and channels, each 1..%d)", where, ds->names[v], a, HCL_MAX_WIDTH);
    if (d[0] * d[1] * d[2] > HCL_MAX_WIDTH)
        return hcl_err(err, "%s: view '%s': '%.64s' is %lld values a row, more than the %d columns a view may "
                       "have", where, ds->names[v], a, (long long)(d[0] * d[1] * d[2]), HCL_MAX_WIDTH);
    ds->types[v].h = (int)d[0];
    ds->types[v].w = (int)d[1];
    ds->types[v].c = (int)d[2];
    return 0;
}

/* One attribute of view v's manifest line (dataset.h); seen marks the ones already given. */
static int view_attr(hcl_dataset *ds, int v, char *a, unsigned *seen, const char *where, char *err) {
    const char *name = ds->names[v];
    hcl_view_type *t = &ds->types[v];
    unsigned bit = strncmp(a, "files=", 6) == 0 ? ATTR_FILES : strcmp(a, "tokens") == 0 ? ATTR_TOKENS
                   : strncmp(a, "vocab=", 6) == 0 ? ATTR_VOCAB : strncmp(a, "pad=", 4) == 0 ? ATTR_PAD
                   : strncmp(a, "image=", 6) == 0 ? ATTR_IMAGE : 0;
    if (!bit || (*seen & bit))
        return hcl_err(err, "%s: view '%s': unknown or repeated attribute '%.64s' (want files=F,..., "
                       "tokens vocab=V pad=P, image=HxWxC, each at most once)", where, name, a);
    *seen |= bit;
    switch (bit) {
    case ATTR_FILES: return view_files(ds, v, a + 6, where, err);
    case ATTR_IMAGE: return view_image(ds, v, a, where, err);
    case ATTR_VOCAB:
        if (parse_whole(a + 6, &t->vocab) != 0 || t->vocab < 1)
            return hcl_err(err, "%s: view '%s': bad '%.64s' (want vocab=V, the number of token ids, 1..%d)",
                           where, name, a, HCL_MAX_VOCAB);
        if (t->vocab > HCL_MAX_VOCAB)
            return hcl_err(err, "%s: view '%s': '%.64s' is more than %d (2^24): token ids are gathered as "
                           "float32, exact only up to 2^24", where, name, a, HCL_MAX_VOCAB);
        return 0;
    case ATTR_PAD:
        if (parse_whole(a + 4, &t->pad) != 0)
            return hcl_err(err, "%s: view '%s': bad '%.64s' (want pad=P, the padding token id, in [0, V))",
                           where, name, a);
        return 0;
    default: return 0;   /* tokens: view_kind */
    }
}

/* After view v's attributes: the kind they make together, or what to write instead. */
static int view_kind(hcl_dataset *ds, int v, unsigned seen, const char *where, char *err) {
    const char *name = ds->names[v];
    hcl_view_type *t = &ds->types[v];
    if ((seen & ATTR_TOKENS) && (seen & ATTR_IMAGE))
        return hcl_err(err, "%s: view '%s' is declared both `tokens` and image= (a view is one kind: keep one)",
                       where, name);
    if ((seen & ATTR_TOKENS) && (seen & (ATTR_VOCAB | ATTR_PAD)) != (ATTR_VOCAB | ATTR_PAD))
        return hcl_err(err, "%s: view '%s': `tokens` needs vocab= and pad= (write `view %s tokens vocab=V "
                       "pad=P`)", where, name, name);
    if (!(seen & ATTR_TOKENS) && (seen & (ATTR_VOCAB | ATTR_PAD)))
        return hcl_err(err, "%s: view '%s': vocab= and pad= are for a token view (write `view %s tokens "
                       "vocab=V pad=P`)", where, name, name);
    if ((seen & ATTR_TOKENS) && t->pad >= t->vocab)
        return hcl_err(err, "%s: view '%s': pad=%lld outside [0, %lld) (vocab=%lld)", where, name,
                       (long long)t->pad, (long long)t->vocab, (long long)t->vocab);
    t->kind = seen & ATTR_TOKENS ? HCL_VIEW_TOKENS : seen & ATTR_IMAGE ? HCL_VIEW_IMAGE : HCL_VIEW_DENSE;
    return 0;
}

void dataset_view_type_str(const hcl_view_type *t, char *out, size_t cap) {
    if (t->kind == HCL_VIEW_TOKENS)
        snprintf(out, cap, "tokens vocab=%lld pad=%lld", (long long)t->vocab, (long long)t->pad);
    else if (t->kind == HCL_VIEW_IMAGE)
        snprintf(out, cap, "image=%dx%dx%d", t->h, t->w, t->c);
    else
        snprintf(out, cap, "dense");
}

/* ---- manifest lines ---------------------------------------------------------------------- */

/* One `view NAME [ATTR...]` line into view ds->nviews. */
static int manifest_view(hcl_dataset *ds, char *line, const char *path, int lineno, char *err) {
    char where[1300], *save = NULL;
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    char *key = strtok_r(line, " \t\r\n", &save);
    char *name = key ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    if (!key) return 1;   /* blank or comment */
    if (strcmp(key, "view") != 0 || !name)
        return hcl_err(err, "%s: cannot parse '%s%s%s' (want `view NAME [ATTR...]`)", where, key,
                       name ? " " : "", name ? name : "");
    if (!hcl_view_name_ok(name)) {
        char s[4 * HCL_NAME_MAX + 8];
        hcl_printable(s, sizeof s, name);
        return hcl_err(err, "%s: bad view name '%s' (%s)", where, s, HCL_VIEW_NAME_RULE);
    }
    if (strcmp(name, "labels") == 0 || strcmp(name, "mask") == 0)
        return hcl_err(err, "%s: view name '%s' is reserved", where, name);
    for (int v = 0; v < ds->nviews; v++)
        if (strcmp(ds->names[v], name) == 0) return hcl_err(err, "%s: view '%s' listed twice", where, name);
    if (ds->nviews == HCL_MAX_VIEWS)
        return hcl_err(err, "%s: view '%s' is one too many (at most %d views)", where, name, HCL_MAX_VIEWS);
    const int v = ds->nviews++;
    memcpy(ds->names[v], name, strlen(name) + 1);   /* checked < HCL_NAME_MAX */
    unsigned seen = 0;
    for (char *t = strtok_r(NULL, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save))
        if (view_attr(ds, v, t, &seen, where, err) != 0) return -1;
    if (view_kind(ds, v, seen, where, err) != 0) return -1;
    if (ds->views[v].nfiles == 0) {
        char file[1200];
        snprintf(file, sizeof file, "%s/%s.npy", ds->dir, name);
        return view_add_file(ds, v, file, where, err);
    }
    return 0;
}

static int dataset_read_manifest(hcl_dataset *ds, char *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/manifest.txt", ds->dir);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        if (errno == ENOENT)
            return hcl_err(err, "%s: missing (a dataset directory needs manifest.txt with one "
                           "`view NAME` line per view)", path);
        return hcl_err(err, "%s: open: %s", path, strerror(errno));
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, fp)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(fp)) {
            rc = hcl_err(err, "%s:%d: line longer than %zu bytes (name many files by a glob)", path, lineno,
                         sizeof line - 2);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        rc = manifest_view(ds, line, path, lineno, err);
        if (rc == 1) rc = 0;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (rc != 0) return -1;
    if (bad) return hcl_err(err, "%s: read error", path);
    if (ds->nviews == 0) return hcl_err(err, "%s: no `view NAME` lines", path);
    return 0;
}

/* Every .npy file directly in the directory must be a view's file, labels.npy or mask.npy. */
static int dataset_check_files(const hcl_dataset *ds, char *err) {
    DIR *d = opendir(ds->dir);
    if (!d) return hcl_err(err, "%s: open directory: %s", ds->dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    char path[1200];
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".npy") != 0) continue;
        if (strcmp(e->d_name, "labels.npy") == 0 || strcmp(e->d_name, "mask.npy") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", ds->dir, e->d_name);
        int known = 0;
        for (int v = 0; v < ds->nviews && !known; v++)
            for (int k = 0; k < ds->views[v].nfiles && !known; k++) known = strcmp(ds->views[v].paths[k], path) == 0;
        if (!known) {
            rc = hcl_err(err, "%s: unknown view file (manifest.txt has no `view %.*s` and no view's files= names "
                         "it; add the line or remove the file)", path, (int)(len - 4), e->d_name);
            break;
        }
    }
    closedir(d);
    return rc;
}

/* ---- per-file checks --------------------------------------------------------------------- */

/* First non-finite value of a float32/float64 array, by bit pattern (robust to -ffast-math). */
static int64_t dataset_find_nonfinite(const npy_file *f, int *is_nan) {
    if (f->dtype == NPY_F16) {
        const uint8_t *p = f->data;
        for (int64_t i = 0; i < f->count; i++) {
            uint16_t u;
            memcpy(&u, p + 2 * i, 2);
            if ((u & 0x7c00u) == 0x7c00u) { *is_nan = (u & 0x03ffu) != 0; return i; }
        }
    } else if (f->dtype == NPY_F32) {
        const uint8_t *p = f->data;
        for (int64_t i = 0; i < f->count; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) { *is_nan = (u & 0x007fffffu) != 0; return i; }
        }
    } else if (f->dtype == NPY_F64) {
        const uint8_t *p = f->data;
        for (int64_t i = 0; i < f->count; i++) {
            uint64_t u;
            memcpy(&u, p + 8 * i, 8);
            if ((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull) {
                *is_nan = (u & 0x000fffffffffffffull) != 0;
                return i;
            }
        }
    }
    return -1;
}

/* Token ids of file k of view v in [0, V), scanned in place; the first outside is named by the
 * view's row and its column. */
static int dataset_check_ids(const hcl_dataset *ds, int v, int k, char *err) {
    const hcl_view_files *vf = &ds->views[v];
    const npy_file *f = &vf->file[k];
    const uint64_t vocab = (uint64_t)ds->types[v].vocab;
    const uint8_t *p = f->data;
    int64_t i = 0, id = 0;
    if (f->dtype == NPY_I32) {
        for (int32_t x; i < f->count; i++) {
            memcpy(&x, p + 4 * i, 4);
            if ((uint64_t)(int64_t)x >= vocab) { id = x; break; }
        }
    } else {   /* NPY_I64 */
        for (int64_t x; i < f->count; i++) {
            memcpy(&x, p + 8 * i, 8);
            if ((uint64_t)x >= vocab) { id = x; break; }
        }
    }
    if (i == f->count) return 0;
    return hcl_err(err, "%s: row %lld column %lld: token id %lld outside [0, %lld) (vocab=%lld)", vf->paths[k],
                   (long long)(vf->first[k] + i / f->shape[1]), (long long)(i % f->shape[1]), (long long)id,
                   (long long)vocab, (long long)vocab);
}

/* File k of view v: its dtype for the view's kind (dense, tokens, image). */
static int dataset_check_dtype(const hcl_dataset *ds, int v, const npy_file *f, char *err) {
    const char *name = ds->names[v];
    const int ids = f->dtype == NPY_I32 || f->dtype == NPY_I64;
    if (ds->types[v].kind == HCL_VIEW_TOKENS) {
        if (!ids)
            return hcl_err(err, "%s: view '%s' is a token view: dtype %s, want int32 or int64 token ids", f->path,
                           name, npy_dtype_name(f->dtype));
        return 0;
    }
    if (ids)
        return hcl_err(err, "%s: %s data in view '%s', which manifest.txt does not declare `tokens` (token ids: "
                       "write `view %s tokens vocab=V pad=P`; else store float32, float16, float64 or uint8)",
                       f->path, npy_dtype_name(f->dtype), name, name);
    if (f->dtype != NPY_F32 && f->dtype != NPY_F64 && f->dtype != NPY_F16 && f->dtype != NPY_U8)
        return hcl_err(err, "%s: unsupported view dtype %s (want float32, float16, float64 or uint8)", f->path,
                       npy_dtype_name(f->dtype));
    return 0;
}

/* File k of view v: its shape and dtype, its width the view's (an image's H*W*C), its token ids
 * in range, no NaN or Inf (named by the view's row). */
static int dataset_open_view_file(hcl_dataset *ds, int v, int k, char *err) {
    hcl_view_files *vf = &ds->views[v];
    const char *path = vf->paths[k];
    npy_file *f = &vf->file[k];
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return hcl_err(err, "%s: missing (manifest.txt lists it for view '%s')", path, ds->names[v]);
    if (npy_open(f, path, err) != 0) return -1;
    if (f->ndim != 2)
        return hcl_err(err, "%s: view must be 2-D (rows, width), got %d-D shape", path, f->ndim);
    if (dataset_check_dtype(ds, v, f, err) != 0) return -1;
    if (f->shape[0] < 1 || f->shape[1] < 1)
        return hcl_err(err, "%s: empty view, shape (%lld, %lld)", path, (long long)f->shape[0],
                       (long long)f->shape[1]);
    if (f->shape[1] > HCL_MAX_WIDTH)   /* past it, the width would not fit the model's ints */
        return hcl_err(err, "%s: %lld columns, more than the %d a view may have", path, (long long)f->shape[1],
                       HCL_MAX_WIDTH);
    if (k > 0 && f->shape[1] != vf->file[0].shape[1])
        return hcl_err(err, "%s: %lld columns but %s (view '%s''s first file) has %lld", path,
                       (long long)f->shape[1], vf->paths[0], ds->names[v], (long long)vf->file[0].shape[1]);
    const hcl_view_type *t = &ds->types[v];
    if (t->kind == HCL_VIEW_IMAGE && f->shape[1] != (int64_t)t->h * t->w * t->c)
        return hcl_err(err, "%s: %lld columns but view '%s' is image=%dx%dx%d (%lld values a row)", path,
                       (long long)f->shape[1], ds->names[v], t->h, t->w, t->c, (long long)t->h * t->w * t->c);
    vf->first[k + 1] = vf->first[k] + f->shape[0];
    if (t->kind == HCL_VIEW_TOKENS) return dataset_check_ids(ds, v, k, err);
    int is_nan = 0;
    int64_t bad = dataset_find_nonfinite(f, &is_nan);
    if (bad >= 0) {
        double x = npy_get_f64(f, bad);
        return hcl_err(err, "%s: %s at row %lld, column %lld", path, is_nan ? "NaN" : x > 0 ? "+Inf" : "-Inf",
                       (long long)(vf->first[k] + bad / f->shape[1]), (long long)(bad % f->shape[1]));
    }
    return 0;
}

static int dataset_open_view(hcl_dataset *ds, int v, char *err) {
    hcl_view_files *vf = &ds->views[v];
    vf->file = hcl_calloc((size_t)vf->nfiles, sizeof(npy_file));
    vf->first = hcl_calloc((size_t)vf->nfiles + 1, sizeof(int64_t));
    for (int k = 0; k < vf->nfiles; k++)
        if (dataset_open_view_file(ds, v, k, err) != 0) return -1;
    const int64_t rows = vf->first[vf->nfiles];
    if (v > 0 && rows != ds->n) {   /* a view by its file, or by name and its files' count */
        char self[1300], other[1300];
        const hcl_view_files *v0 = &ds->views[0];
        if (vf->nfiles == 1) snprintf(self, sizeof self, "%s", vf->paths[0]);
        else snprintf(self, sizeof self, "%s: view '%s' (%d files)", ds->dir, ds->names[v], vf->nfiles);
        if (v0->nfiles == 1) snprintf(other, sizeof other, "%s", v0->paths[0]);
        else snprintf(other, sizeof other, "view '%s' (%d files)", ds->names[0], v0->nfiles);
        return hcl_err(err, "%s: %lld rows but %s has %lld rows", self, (long long)rows, other, (long long)ds->n);
    }
    ds->n = rows;
    ds->widths[v] = vf->file[0].shape[1];
    return 0;
}

static int dataset_open_labels(hcl_dataset *ds, const char *path, char *err) {
    npy_file *f = &ds->labels_file;
    if (npy_open(f, path, err) != 0) return -1;
    ds->has_labels = 1;
    if (f->dtype == NPY_F32 || f->dtype == NPY_F64 || f->dtype == NPY_F16 || f->dtype == NPY_BOOL)
        return hcl_err(err, "%s: labels must have an integer dtype, got %s", path,
                       npy_dtype_name(f->dtype));
    if (f->ndim != 1)
        return hcl_err(err, "%s: labels must be 1-D (rows,), got %d-D shape", path, f->ndim);
    if (f->shape[0] != ds->n)
        return hcl_err(err, "%s: %lld labels but the views have %lld rows", path,
                       (long long)f->shape[0], (long long)ds->n);
    ds->labels = hcl_malloc((size_t)ds->n * sizeof(int32_t));
    int64_t max = -1;
    for (int64_t i = 0; i < ds->n; i++) {
        int64_t y = npy_get_i64(f, i);
        if (y < 0)
            return hcl_err(err, "%s: label %lld at row %lld is negative (labels are class indices "
                           "0..K-1)", path, (long long)y, (long long)i);
        if (y >= DATASET_MAX_CLASSES) {
            char v[32];
            if (f->dtype == NPY_U64) {   /* npy_get_i64 clamps: print the stored value */
                uint64_t u;
                memcpy(&u, (const uint8_t *)f->data + 8 * i, 8);
                snprintf(v, sizeof v, "%llu", (unsigned long long)u);
            } else {
                snprintf(v, sizeof v, "%lld", (long long)y);
            }
            return hcl_err(err, "%s: label %s at row %lld out of range (at most %d classes)", path,
                           v, (long long)i, DATASET_MAX_CLASSES);
        }
        ds->labels[i] = (int32_t)y;
        if (y > max) max = y;
    }
    ds->nclasses = (int)(max + 1);
    return 0;
}

static int dataset_open_mask(hcl_dataset *ds, const char *path, char *err) {
    npy_file *f = &ds->mask_file;
    if (npy_open(f, path, err) != 0) return -1;
    ds->has_mask = 1;
    if (f->dtype != NPY_U8 && f->dtype != NPY_BOOL)
        return hcl_err(err, "%s: mask dtype %s (want uint8 or bool)", path,
                       npy_dtype_name(f->dtype));
    if (f->ndim != 2 || f->shape[0] != ds->n || f->shape[1] != ds->nviews) {
        char shp[64];
        if (f->ndim == 2)
            snprintf(shp, sizeof shp, "(%lld, %lld)", (long long)f->shape[0],
                     (long long)f->shape[1]);
        else if (f->ndim == 1)
            snprintf(shp, sizeof shp, "(%lld,)", (long long)f->shape[0]);
        else
            snprintf(shp, sizeof shp, "()");
        return hcl_err(err, "%s: mask shape %s, want (%lld, %d) (rows, views)", path, shp,
                       (long long)ds->n, ds->nviews);
    }
    const uint8_t *m = f->data;
    for (int64_t i = 0; i < f->count; i++)
        if (m[i] > 1)
            return hcl_err(err, "%s: value %d at row %lld, column %lld (want 0 or 1)", path, m[i],
                           (long long)(i / ds->nviews), (long long)(i % ds->nviews));
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------ */

int dataset_open(hcl_dataset *ds, const char *dir, char *err) {
    memset(ds, 0, sizeof *ds);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;   /* "data/" names files as "data/x.npy" */
    if (dl + HCL_NAME_MAX + 8 >= sizeof ds->dir)
        return hcl_err(err, "%s: dataset path too long", dir);
    memcpy(ds->dir, dir, dl);
    ds->dir[dl] = 0;
    struct stat st;
    if (stat(ds->dir, &st) != 0)
        return hcl_err(err, "%s: dataset directory: %s", ds->dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return hcl_err(err, "%s: not a directory (want a dataset directory)", ds->dir);
    char path[1200];
    int rc = dataset_read_manifest(ds, err);
    if (rc == 0) rc = dataset_check_files(ds, err);
    for (int v = 0; v < ds->nviews && rc == 0; v++) rc = dataset_open_view(ds, v, err);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/labels.npy", ds->dir);
        if (access(path, F_OK) == 0) rc = dataset_open_labels(ds, path, err);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/mask.npy", ds->dir);
        if (access(path, F_OK) == 0) rc = dataset_open_mask(ds, path, err);
    }
    if (rc != 0) dataset_close(ds);
    return rc;
}

void dataset_close(hcl_dataset *ds) {
    for (int v = 0; v < HCL_MAX_VIEWS; v++) {
        hcl_view_files *vf = &ds->views[v];
        for (int k = 0; k < vf->nfiles; k++) {
            if (vf->file) npy_close(&vf->file[k]);
            free(vf->paths[k]);
        }
        free(vf->file);
        free(vf->first);
        free(vf->paths);
        memset(vf, 0, sizeof *vf);
    }
    npy_close(&ds->labels_file);
    npy_close(&ds->mask_file);
    free(ds->labels);
    ds->labels = NULL;
    ds->has_labels = ds->has_mask = 0;
    memset(ds->types, 0, sizeof ds->types);
    ds->nviews = 0;
    ds->n = 0;
}

int dataset_view_index(const hcl_dataset *ds, const char *name) {
    for (int v = 0; v < ds->nviews; v++)
        if (strcmp(ds->names[v], name) == 0) return v;
    return -1;
}

/* ---- gathering batches ------------------------------------------------------------------- */

/* The file of view vf holding row r, and r's row in it (binary search over first[]). */
static const npy_file *view_row(const hcl_view_files *vf, int64_t r, int64_t *in_file) {
    int lo = 0, hi = vf->nfiles - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (vf->first[mid] <= r) lo = mid;
        else hi = mid - 1;
    }
    *in_file = r - vf->first[lo];
    return &vf->file[lo];
}

/* One row of d values of dtype t into dst as float32 (uint8 scaled by 1/255, ids exact). */
static void row_to_float(float *dst, const uint8_t *src, int64_t d, enum npy_dtype t) {
    if (t == NPY_F32) {
        memcpy(dst, src, sizeof(float) * (size_t)d);
    } else if (t == NPY_F64) {
        for (int64_t j = 0; j < d; j++) {
            double x;
            memcpy(&x, src + 8 * j, 8);
            dst[j] = (float)x;
        }
    } else if (t == NPY_F16) {
        for (int64_t j = 0; j < d; j++) {
            uint16_t h;
            memcpy(&h, src + 2 * j, 2);
            dst[j] = npy_half_float(h);
        }
    } else if (t == NPY_I32) {   /* token ids, < 2^24: exact */
        for (int64_t j = 0; j < d; j++) {
            int32_t x;
            memcpy(&x, src + 4 * j, 4);
            dst[j] = (float)x;
        }
    } else if (t == NPY_I64) {
        for (int64_t j = 0; j < d; j++) {
            int64_t x;
            memcpy(&x, src + 8 * j, 8);
            dst[j] = (float)x;
        }
    } else {   /* NPY_U8 */
        for (int64_t j = 0; j < d; j++) dst[j] = (float)src[j] * (1.0f / 255.0f);
    }
}

void dataset_gather_view(const hcl_dataset *ds, int v, const int64_t *idx, int64_t count,
                         float *out) {
    HCL_CHECK(v >= 0 && v < ds->nviews, "dataset_gather_view: view %d of %d", v, ds->nviews);
    const hcl_view_files *vf = &ds->views[v];
    const int64_t d = ds->widths[v];
    /* Rows come in random order: ask for the one GATHER_AHEAD rows on while this one is copied,
     * so their memory latencies overlap (W1's 392-float rows: 25-30% faster), and touch the first
     * line of the one PAGE_AHEAD rows on, so that its page's translation is in the TLB by then
     * (each row is on a page of its own: another 10-15%). */
    enum { GATHER_AHEAD = 4, PAGE_AHEAD = 16 };
    for (int64_t i = 0; i < count; i++) {
        int64_t r = idx[i], at;
        HCL_CHECK(r >= 0 && r < ds->n, "dataset_gather_view: row %lld of %lld", (long long)r,
                  (long long)ds->n);
        if (i + PAGE_AHEAD < count && idx[i + PAGE_AHEAD] >= 0 && idx[i + PAGE_AHEAD] < ds->n) {
            const npy_file *f = view_row(vf, idx[i + PAGE_AHEAD], &at);
            __builtin_prefetch((const uint8_t *)f->data + (size_t)at * (size_t)(d * f->elem_size));
        }
        if (i + GATHER_AHEAD < count && idx[i + GATHER_AHEAD] >= 0 && idx[i + GATHER_AHEAD] < ds->n) {
            const npy_file *f = view_row(vf, idx[i + GATHER_AHEAD], &at);
            const size_t rb = (size_t)(d * f->elem_size);
            for (size_t o = 0; o < rb; o += 64) __builtin_prefetch((const uint8_t *)f->data + (size_t)at * rb + o);
        }
        const npy_file *f = view_row(vf, r, &at);
        row_to_float(out + i * d, (const uint8_t *)f->data + (size_t)at * (size_t)(d * f->elem_size), d, f->dtype);
    }
}

void dataset_gather_mask(const hcl_dataset *ds, const int64_t *idx, int64_t count, uint8_t *out) {
    int nv = ds->nviews;
    if (!ds->has_mask) {
        memset(out, 1, (size_t)count * (size_t)nv);
        return;
    }
    const uint8_t *m = ds->mask_file.data;
    for (int64_t i = 0; i < count; i++) {
        HCL_CHECK(idx[i] >= 0 && idx[i] < ds->n, "dataset_gather_mask: row %lld of %lld",
                  (long long)idx[i], (long long)ds->n);
        memcpy(out + i * nv, m + idx[i] * nv, (size_t)nv);
    }
}

void dataset_gather_labels(const hcl_dataset *ds, const int64_t *idx, int64_t count, int32_t *out) {
    for (int64_t i = 0; i < count; i++) {
        HCL_CHECK(idx[i] >= 0 && idx[i] < ds->n, "dataset_gather_labels: row %lld of %lld",
                  (long long)idx[i], (long long)ds->n);
        out[i] = ds->labels ? ds->labels[idx[i]] : -1;
    }
}

int dataset_present(const hcl_dataset *ds, int64_t row, int v) {
    HCL_CHECK(row >= 0 && row < ds->n && v >= 0 && v < ds->nviews,
              "dataset_present: row %lld view %d", (long long)row, v);
    if (!ds->has_mask) return 1;
    return ((const uint8_t *)ds->mask_file.data)[row * ds->nviews + v];
}

int dataset_absent_view(const hcl_dataset *ds) {
    if (!ds->has_mask) return -1;
    const uint8_t *m = ds->mask_file.data;
    for (int v = 0; v < ds->nviews; v++) {
        int64_t i = 0;
        while (i < ds->n && !m[i * ds->nviews + v]) i++;
        if (i == ds->n) return v;
    }
    return -1;
}

/* View dv of ds can stand where a view of type want is expected: tokens of the same vocabulary
 * and padding id, an image of the same shape; dense accepts an image's pixels too. */
static int type_fits(const hcl_dataset *ds, int dv, const hcl_view_type *want, const char *what, char *err) {
    const hcl_view_type *t = &ds->types[dv];
    int ok = t->kind == want->kind || (want->kind == HCL_VIEW_DENSE && t->kind == HCL_VIEW_IMAGE);
    if (ok && want->kind == HCL_VIEW_TOKENS) ok = t->vocab == want->vocab && t->pad == want->pad;
    if (ok && want->kind == HCL_VIEW_IMAGE) ok = t->h == want->h && t->w == want->w && t->c == want->c;
    if (ok) return 0;
    char have[96], need[96];
    dataset_view_type_str(t, have, sizeof have);
    dataset_view_type_str(want, need, sizeof need);
    return hcl_err(err, "%s: view '%s' of %s is %s, expected %s", what, ds->names[dv], ds->dir, have, need);
}

int dataset_check_views(const hcl_dataset *ds, int nviews, const char (*names)[HCL_NAME_MAX],
                        const int *widths, const hcl_view_type *types, int *index_of, const char *what, char *err) {
    if (ds->nviews != nviews)
        return hcl_err(err, "%s: %s has %d views, expected %d", what, ds->dir, ds->nviews, nviews);
    for (int v = 0; v < nviews; v++) {
        int dv = index_of ? dataset_view_index(ds, names[v]) : v;
        if (dv < 0)
            return hcl_err(err, "%s: %s has no view '%s'", what, ds->dir, names[v]);
        if (strcmp(ds->names[dv], names[v]) != 0)
            return hcl_err(err, "%s: view %d of %s is '%s', expected '%s' (the same views in the same order)",
                           what, v, ds->dir, ds->names[dv], names[v]);
        if (ds->widths[dv] != widths[v])
            return hcl_err(err, "%s: view '%s' of %s is %lld wide, expected %d", what, names[v], ds->dir,
                           (long long)ds->widths[dv], widths[v]);
        if (types && type_fits(ds, dv, &types[v], what, err) != 0) return -1;
        if (index_of) index_of[v] = dv;
    }
    return 0;
}
