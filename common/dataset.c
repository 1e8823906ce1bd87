/* dataset: see dataset.h. Every check reports "FILE: what (value)" and stops at the first. */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATASET_MAX_CLASSES (1 << 20)

/* ---- manifest ---------------------------------------------------------------------------- */


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
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(fp)) {
            fclose(fp);
            return hcl_err(err, "%s:%d: line longer than %zu bytes", path, lineno, sizeof line - 2);
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char key[32], name[256], extra[8];
        int nt = sscanf(line, "%31s %255s %7s", key, name, extra);
        if (nt <= 0) continue;   /* blank or comment */
        if (strcmp(key, "view") != 0 || nt != 2) {
            line[strcspn(line, "\r\n")] = 0;
            fclose(fp);
            return hcl_err(err, "%s:%d: cannot parse '%s' (want `view NAME`)", path, lineno, line);
        }
        if (!hcl_view_name_ok(name)) {
            char s[4 * HCL_NAME_MAX + 8];
            hcl_printable(s, sizeof s, name);
            fclose(fp);
            return hcl_err(err, "%s:%d: bad view name '%s' (%s)", path, lineno, s, HCL_VIEW_NAME_RULE);
        }
        if (strcmp(name, "labels") == 0 || strcmp(name, "mask") == 0) {
            fclose(fp);
            return hcl_err(err, "%s:%d: view name '%s' is reserved", path, lineno, name);
        }
        for (int v = 0; v < ds->nviews; v++)
            if (strcmp(ds->names[v], name) == 0) {
                fclose(fp);
                return hcl_err(err, "%s:%d: view '%s' listed twice", path, lineno, name);
            }
        if (ds->nviews == HCL_MAX_VIEWS) {
            fclose(fp);
            return hcl_err(err, "%s:%d: view '%s' is one too many (at most %d views)", path,
                           lineno, name, HCL_MAX_VIEWS);
        }
        memcpy(ds->names[ds->nviews++], name, strlen(name) + 1);   /* checked < HCL_NAME_MAX */
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) return hcl_err(err, "%s: read error", path);
    if (ds->nviews == 0) return hcl_err(err, "%s: no `view NAME` lines", path);
    return 0;
}

/* Every NAME.npy in the directory must be a view of the manifest, labels.npy or mask.npy. */
static int dataset_check_files(const hcl_dataset *ds, char *err) {
    DIR *d = opendir(ds->dir);
    if (!d) return hcl_err(err, "%s: open directory: %s", ds->dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".npy") != 0) continue;
        char stem[256];
        snprintf(stem, sizeof stem, "%.*s", (int)(len - 4), e->d_name);
        if (strcmp(stem, "labels") == 0 || strcmp(stem, "mask") == 0) continue;
        int known = 0;
        for (int v = 0; v < ds->nviews; v++) known |= strcmp(ds->names[v], stem) == 0;
        if (!known) {
            rc = hcl_err(err, "%s/%s: unknown view file (manifest.txt has no `view %s`; add the "
                         "line or remove the file)", ds->dir, e->d_name, stem);
            break;
        }
    }
    closedir(d);
    return rc;
}

/* ---- per-file checks --------------------------------------------------------------------- */

/* First non-finite value of a float32/float64 array, by bit pattern (robust to -ffast-math). */
static int64_t dataset_find_nonfinite(const npy_file *f, int *is_nan) {
    if (f->dtype == NPY_F32) {
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

static int dataset_open_view(hcl_dataset *ds, int v, char *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.npy", ds->dir, ds->names[v]);
    npy_file *f = &ds->views[v];
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return hcl_err(err, "%s: missing (manifest.txt lists view '%s')", path, ds->names[v]);
    if (npy_open(f, path, err) != 0) return -1;
    if (f->ndim != 2)
        return hcl_err(err, "%s: view must be 2-D (rows, width), got %d-D shape", path, f->ndim);
    if (f->dtype != NPY_F32 && f->dtype != NPY_F64 && f->dtype != NPY_U8)
        return hcl_err(err, "%s: unsupported view dtype %s (want float32, float64 or uint8)", path,
                       npy_dtype_name(f->dtype));
    if (f->shape[0] < 1 || f->shape[1] < 1)
        return hcl_err(err, "%s: empty view, shape (%lld, %lld)", path, (long long)f->shape[0],
                       (long long)f->shape[1]);
    if (f->shape[1] > HCL_MAX_WIDTH)   /* past it, the width would not fit the model's ints */
        return hcl_err(err, "%s: %lld columns, more than the %d a view may have", path, (long long)f->shape[1],
                       HCL_MAX_WIDTH);
    if (v > 0 && f->shape[0] != ds->n)
        return hcl_err(err, "%s: %lld rows but %s/%s.npy has %lld rows", path,
                       (long long)f->shape[0], ds->dir, ds->names[0], (long long)ds->n);
    ds->n = f->shape[0];
    ds->widths[v] = f->shape[1];
    int is_nan = 0;
    int64_t bad = dataset_find_nonfinite(f, &is_nan);
    if (bad >= 0) {
        double x = npy_get_f64(f, bad);
        return hcl_err(err, "%s: %s at row %lld, column %lld", path,
                       is_nan ? "NaN" : x > 0 ? "+Inf" : "-Inf", (long long)(bad / f->shape[1]),
                       (long long)(bad % f->shape[1]));
    }
    return 0;
}

static int dataset_open_labels(hcl_dataset *ds, const char *path, char *err) {
    npy_file *f = &ds->labels_file;
    if (npy_open(f, path, err) != 0) return -1;
    ds->has_labels = 1;
    if (f->dtype == NPY_F32 || f->dtype == NPY_F64 || f->dtype == NPY_BOOL)
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
    for (int v = 0; v < HCL_MAX_VIEWS; v++) npy_close(&ds->views[v]);
    npy_close(&ds->labels_file);
    npy_close(&ds->mask_file);
    free(ds->labels);
    ds->labels = NULL;
    ds->has_labels = ds->has_mask = 0;
    ds->nviews = 0;
    ds->n = 0;
}

int dataset_view_index(const hcl_dataset *ds, const char *name) {
    for (int v = 0; v < ds->nviews; v++)
        if (strcmp(ds->names[v], name) == 0) return v;
    return -1;
}

/* ---- gathering batches ------------------------------------------------------------------- */

void dataset_gather_view(const hcl_dataset *ds, int v, const int64_t *idx, int64_t count,
                         float *out) {
    HCL_CHECK(v >= 0 && v < ds->nviews, "dataset_gather_view: view %d of %d", v, ds->nviews);
    const npy_file *f = &ds->views[v];
    int64_t d = ds->widths[v];
    const uint8_t *base = f->data;
    size_t row_bytes = (size_t)d * (size_t)f->elem_size;
    /* Rows come in random order: ask for the one GATHER_AHEAD rows on while this one is copied,
     * so their memory latencies overlap (W1's 392-float rows: 25-30% faster), and touch the first
     * line of the one PAGE_AHEAD rows on, so that its page's translation is in the TLB by then
     * (each row is on a page of its own: another 10-15%). */
    enum { GATHER_AHEAD = 4, PAGE_AHEAD = 16 };
    for (int64_t i = 0; i < count; i++) {
        int64_t r = idx[i];
        HCL_CHECK(r >= 0 && r < ds->n, "dataset_gather_view: row %lld of %lld", (long long)r,
                  (long long)ds->n);
        if (i + PAGE_AHEAD < count && idx[i + PAGE_AHEAD] >= 0 && idx[i + PAGE_AHEAD] < ds->n)
            __builtin_prefetch(base + (size_t)idx[i + PAGE_AHEAD] * row_bytes);
        if (i + GATHER_AHEAD < count) {
            int64_t ra = idx[i + GATHER_AHEAD];
            if (ra >= 0 && ra < ds->n)
                for (size_t o = 0; o < row_bytes; o += 64) __builtin_prefetch(base + (size_t)ra * row_bytes + o);
        }
        const uint8_t *src = base + (size_t)r * row_bytes;
        float *dst = out + i * d;
        if (f->dtype == NPY_F32) {
            memcpy(dst, src, row_bytes);
        } else if (f->dtype == NPY_F64) {
            for (int64_t j = 0; j < d; j++) {
                double x;
                memcpy(&x, src + 8 * j, 8);
                dst[j] = (float)x;
            }
        } else {   /* NPY_U8 */
            for (int64_t j = 0; j < d; j++) dst[j] = (float)src[j] * (1.0f / 255.0f);
        }
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

int dataset_check_views(const hcl_dataset *ds, int nviews, const char (*names)[HCL_NAME_MAX],
                        const int *widths, int *index_of, const char *what, char *err) {
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
        if (index_of) index_of[v] = dv;
    }
    return 0;
}
