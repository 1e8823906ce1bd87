/* test_dataset: small dataset directories on disk, one good and one per rule dataset_open
 * enforces; the error must name the file and the offending value. Then gathering: float64 and
 * uint8 views converted, mask and labels, view lookup; token views (int32/int64 ids as exact
 * floats, ids in range) and image views (width H*W*C, uint8 / 255). */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "npy.h"
#include "util.h"

#define N 10

static char root[64];
static char err[HCL_ERR_MAX];

/* ---- building directories ---------------------------------------------------------------- */

static void path_of(char *out, size_t cap, const char *dir, const char *name) {
    HCL_CHECK(snprintf(out, cap, "%s/%s/%s", root, dir, name) < (int)cap, "path too long");
}

static void put_text(const char *dir, const char *name, const char *text) {
    char p[256];
    path_of(p, sizeof p, dir, name);
    HCL_CHECK(hcl_write_file_durable(p, text, strlen(text), err) == 0, "%s", err);
}

static void put_npy(const char *dir, const char *name, enum npy_dtype t, int ndim, int64_t d0,
                    int64_t d1, const void *data) {
    char p[256];
    int64_t shape[2] = {d0, d1};
    path_of(p, sizeof p, dir, name);
    HCL_CHECK(npy_write(p, t, ndim, shape, data, err) == 0, "%s", err);
}

/* A raw .npy with any descr (e.g. '<f2', which npy_write cannot make). */
static void put_raw(const char *dir, const char *name, const char *descr, int fortran,
                    const char *shape, size_t nbytes) {
    char p[256], dict[160];
    path_of(p, sizeof p, dir, name);
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }",
                      descr, fortran ? "True" : "False", shape);
    size_t total = (10 + (size_t)dl + 1 + 63) / 64 * 64;
    uint8_t *buf = hcl_calloc(total + nbytes, 1);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)((total - 10) & 0xff);
    buf[9] = (uint8_t)((total - 10) >> 8);
    memcpy(buf + 10, dict, (size_t)dl);
    memset(buf + 10 + dl, ' ', total - 10 - (size_t)dl - 1);
    buf[total - 1] = '\n';
    HCL_CHECK(hcl_write_file_durable(p, buf, total + nbytes, err) == 0, "%s", err);
    free(buf);
}

static float va[N * 3];
static double vb[N * 2];
static uint8_t vc[N * 4];
static int64_t labels[N];
static uint8_t mask[N * 3];

/* The good dataset: a float32 (N,3), b float64 (N,2), c uint8 (N,4), labels 0..2, mask. */
static void make_good(const char *dir, int with_labels, int with_mask) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, dir);
    HCL_CHECK(hcl_mkdir_p(p, err) == 0, "%s", err);
    put_text(dir, "manifest.txt",
             "# test dataset\nview a\n  view   b  # the float64 one\n\nview c\n");
    put_npy(dir, "a.npy", NPY_F32, 2, N, 3, va);
    put_npy(dir, "b.npy", NPY_F64, 2, N, 2, vb);
    put_npy(dir, "c.npy", NPY_U8, 2, N, 4, vc);
    if (with_labels) put_npy(dir, "labels.npy", NPY_I64, 1, N, 1, labels);
    if (with_mask) put_npy(dir, "mask.npy", NPY_U8, 2, N, 3, mask);
}

static void rm_dir(const char *dir) {
    char p[256], q[512];
    snprintf(p, sizeof p, "%s/%s", root, dir);
    DIR *d = opendir(p);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(q, sizeof q, "%s/%s", p, e->d_name);
        unlink(q);
    }
    closedir(d);
    CHECK(rmdir(p) == 0, "rmdir %s", p);
}

/* dataset_open(dir) must fail with a one-line error containing each of the strings. */
static void expect_bad(const char *dir, const char *want1, const char *want2, const char *want3) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, dir);
    hcl_dataset ds;
    err[0] = 0;
    int rc = dataset_open(&ds, p, err);
    CHECK(rc == -1, "%s: dataset_open returned %d, want an error naming '%s'", dir, rc, want1);
    const char *want[3] = {want1, want2, want3};
    for (int i = 0; i < 3; i++)
        if (want[i])
            CHECK(strstr(err, want[i]) != NULL, "%s: error lacks '%s': '%s'", dir, want[i], err);
    CHECK(strchr(err, '\n') == NULL, "%s: error is not one line: '%s'", dir, err);
    CHECK(ds.labels == NULL && ds.views[0].file == NULL, "%s: resources left after a failed open",
          dir);
    rm_dir(dir);
}

/* ---- the good dataset -------------------------------------------------------------------- */

static void test_good(void) {
    make_good("good", 1, 1);
    char p[256];
    snprintf(p, sizeof p, "%s/good/", root);   /* trailing slash is fine */
    hcl_dataset ds;
    int rc = dataset_open(&ds, p, err);
    CHECK(rc == 0, "good dataset refused: %s", err);
    if (rc != 0) return;
    CHECK(ds.n == N && ds.nviews == 3, "n %lld nviews %d", (long long)ds.n, ds.nviews);
    CHECK(ds.widths[0] == 3 && ds.widths[1] == 2 && ds.widths[2] == 4, "widths %lld %lld %lld",
          (long long)ds.widths[0], (long long)ds.widths[1], (long long)ds.widths[2]);
    CHECK(strcmp(ds.names[1], "b") == 0, "names[1] = '%s', want 'b'", ds.names[1]);
    CHECK(dataset_view_index(&ds, "a") == 0 && dataset_view_index(&ds, "c") == 2,
          "dataset_view_index a %d c %d", dataset_view_index(&ds, "a"),
          dataset_view_index(&ds, "c"));
    CHECK(dataset_view_index(&ds, "zz") == -1, "dataset_view_index of an absent view");
    CHECK(ds.has_labels && ds.nclasses == 3, "has_labels %d nclasses %d", ds.has_labels,
          ds.nclasses);
    CHECK(ds.has_mask, "has_mask");

    int64_t idx[4] = {7, 0, 9, 7};
    float out[4 * 4];
    dataset_gather_view(&ds, 0, idx, 4, out);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            CHECK(out[i * 3 + j] == va[idx[i] * 3 + j], "float32 view a[%lld][%d] = %g, want %g",
                  (long long)idx[i], j, out[i * 3 + j], va[idx[i] * 3 + j]);
    dataset_gather_view(&ds, 1, idx, 4, out);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            CHECK_CLOSE(out[i * 2 + j], vb[idx[i] * 2 + j], 1e-7, 0, "float64 view b converted");
    dataset_gather_view(&ds, 2, idx, 4, out);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            CHECK_CLOSE(out[i * 4 + j], vc[idx[i] * 4 + j] / 255.0, 1e-6, 0,
                        "uint8 view c scaled by 1/255");
    CHECK_CLOSE(out[0 * 4 + 1], 1.0, 1e-7, 0, "uint8 255 maps to 1");

    uint8_t m[4 * 3];
    dataset_gather_mask(&ds, idx, 4, m);
    for (int i = 0; i < 4; i++)
        for (int v = 0; v < 3; v++) {
            CHECK(m[i * 3 + v] == mask[idx[i] * 3 + v], "mask[%lld][%d] = %d, want %d",
                  (long long)idx[i], v, m[i * 3 + v], mask[idx[i] * 3 + v]);
            CHECK(dataset_present(&ds, idx[i], v) == mask[idx[i] * 3 + v],
                  "dataset_present(%lld, %d)", (long long)idx[i], v);
        }
    int32_t y[4];
    dataset_gather_labels(&ds, idx, 4, y);
    for (int i = 0; i < 4; i++)
        CHECK(y[i] == labels[idx[i]], "label[%lld] = %d, want %lld", (long long)idx[i], y[i],
              (long long)labels[idx[i]]);
    dataset_close(&ds);
    dataset_close(&ds);   /* closing twice is harmless */
    rm_dir("good");

    /* without labels and mask: labels -1, every view present */
    make_good("bare", 0, 0);
    snprintf(p, sizeof p, "%s/bare", root);
    rc = dataset_open(&ds, p, err);
    CHECK(rc == 0, "dataset without labels/mask refused: %s", err);
    if (rc == 0) {
        CHECK(!ds.has_labels && !ds.has_mask && ds.labels == NULL, "bare: has_labels/has_mask");
        dataset_gather_labels(&ds, idx, 4, y);
        dataset_gather_mask(&ds, idx, 4, m);
        for (int i = 0; i < 4; i++) CHECK(y[i] == -1, "bare: label %d, want -1", y[i]);
        for (int i = 0; i < 12; i++) CHECK(m[i] == 1, "bare: mask %d, want 1", m[i]);
        CHECK(dataset_present(&ds, 3, 2) == 1, "bare: dataset_present");
        dataset_close(&ds);
    }
    rm_dir("bare");

    /* bool mask and uint8 labels are accepted */
    make_good("boolmask", 0, 0);
    put_npy("boolmask", "mask.npy", NPY_BOOL, 2, N, 3, mask);
    uint8_t lab8[N];
    for (int i = 0; i < N; i++) lab8[i] = (uint8_t)(i % 4);
    put_npy("boolmask", "labels.npy", NPY_U8, 1, N, 1, lab8);
    snprintf(p, sizeof p, "%s/boolmask", root);
    rc = dataset_open(&ds, p, err);
    CHECK(rc == 0, "bool mask / uint8 labels refused: %s", err);
    if (rc == 0) {
        CHECK(ds.nclasses == 4 && ds.labels[5] == 1, "uint8 labels: nclasses %d", ds.nclasses);
        CHECK(dataset_present(&ds, 1, 1) == mask[1 * 3 + 1], "bool mask value");
        dataset_close(&ds);
    }
    rm_dir("boolmask");
}

/* dataset_absent_view: the first view that no row has (hcl-train refuses it in --data) */
static void test_absent_view(void) {
    char p[256];
    hcl_dataset ds;
    uint8_t m[N * 3];
    snprintf(p, sizeof p, "%s/absent", root);
    for (int nomask = 1; nomask >= 0; nomask--) {
        make_good("absent", 1, 0);
        for (int i = 0; i < N * 3; i++) m[i] = (uint8_t)(i % 3 != 1 || i / 3 == N - 1);   /* b: last row only */
        if (!nomask) put_npy("absent", "mask.npy", NPY_U8, 2, N, 3, m);
        CHECK(dataset_open(&ds, p, err) == 0, "%s", err);
        CHECK(dataset_absent_view(&ds) == -1, "every view in some row: %d", dataset_absent_view(&ds));
        dataset_close(&ds);
        rm_dir("absent");
    }
    make_good("absent", 1, 0);
    for (int i = 0; i < N * 3; i++) m[i] = i % 3 != 2;   /* c: no row */
    put_npy("absent", "mask.npy", NPY_U8, 2, N, 3, m);
    CHECK(dataset_open(&ds, p, err) == 0, "%s", err);
    CHECK(dataset_absent_view(&ds) == 2, "view c in no row: %d, want 2", dataset_absent_view(&ds));
    dataset_close(&ds);
    rm_dir("absent");
}

/* manifest.txt: missing, a view with no file, a stray .npy, a bad line, a duplicate, empty,
 * bad view names */
static void test_bad_manifest(void) {
    char p[256];
    make_good("noman", 1, 0);
    path_of(p, sizeof p, "noman", "manifest.txt");
    unlink(p);
    expect_bad("noman", "manifest.txt", "missing", NULL);
    make_good("nofile", 1, 0);
    put_text("nofile", "manifest.txt", "view a\nview b\nview c\nview d\n");
    expect_bad("nofile", "d.npy", "'d'", NULL);
    make_good("stray", 1, 0);
    put_npy("stray", "extra.npy", NPY_F32, 2, N, 3, va);
    expect_bad("stray", "extra.npy", "unknown view file", NULL);
    make_good("badline", 1, 0);
    put_text("badline", "manifest.txt", "view a\nview b\nviews c\n");
    expect_bad("badline", "manifest.txt:3", "views c", NULL);
    make_good("dup", 1, 0);
    put_text("dup", "manifest.txt", "view a\nview b\nview c\nview a\n");
    expect_bad("dup", "manifest.txt:4", "'a'", "twice");
    make_good("empty", 1, 0);
    put_text("empty", "manifest.txt", "# nothing\n");
    expect_bad("empty", "manifest.txt", "no `view NAME`", NULL);
    /* view names are letters, digits, _ and - (not first): a '.' would split the model's tensor
     * names (encoder.b.x.0.weight), a '/' would leave hcl-embed's output directory */
    const char *names[] = {"b.x", "-b", ".b", "b/c", "b\x1b[31m"};
    for (int i = 0; i < 5; i++) {
        char text[64];
        make_good("badname", 1, 0);
        snprintf(text, sizeof text, "view a\nview %s\nview c\n", names[i]);
        put_text("badname", "manifest.txt", text);
        expect_bad("badname", "manifest.txt:2", "bad view name", "letters, digits, _ and -");
    }
}

/* ---- one directory per rule -------------------------------------------------------------- */

static void test_bad(void) {
    /* row counts differ */
    make_good("rows", 1, 0);
    put_npy("rows", "b.npy", NPY_F64, 2, N - 1, 2, vb);
    expect_bad("rows", "b.npy", "9 rows", "10 rows");

    /* int32 views */
    make_good("i32", 1, 0);
    int32_t c32[N * 4] = {0};   /* its own (N, 4) array: va holds only N * 3 floats */
    put_npy("i32", "c.npy", NPY_I32, 2, N, 4, c32);
    expect_bad("i32", "c.npy", "int32", NULL);

    /* big-endian, Fortran order, truncated view files */
    make_good("be", 1, 0);
    put_raw("be", "a.npy", ">f4", 0, "(10, 3)", N * 3 * 4);
    expect_bad("be", "a.npy", "'>f4'", "big-endian");
    make_good("fort", 1, 0);
    put_raw("fort", "a.npy", "<f4", 1, "(10, 3)", N * 3 * 4);
    expect_bad("fort", "a.npy", "fortran_order True", NULL);
    make_good("trunc", 1, 0);
    put_raw("trunc", "a.npy", "<f4", 0, "(10, 3)", N * 3 * 4 - 4);
    expect_bad("trunc", "a.npy", "truncated", "(10, 3)");
    make_good("lies", 1, 0);
    put_raw("lies", "b.npy", "<f8", 0, "(10, 2)", N * 2 * 8 + 8);
    expect_bad("lies", "b.npy", "lies about the size", "(10, 2)");

    /* NaN and Inf, with the row and column */
    make_good("nan", 1, 0);
    float a2[N * 3];
    memcpy(a2, va, sizeof a2);
    a2[6 * 3 + 2] = NAN;
    put_npy("nan", "a.npy", NPY_F32, 2, N, 3, a2);
    expect_bad("nan", "a.npy", "NaN", "row 6, column 2");
    make_good("inf", 1, 0);
    double b2[N * 2];
    memcpy(b2, vb, sizeof b2);
    b2[4 * 2 + 1] = -INFINITY;
    put_npy("inf", "b.npy", NPY_F64, 2, N, 2, b2);
    expect_bad("inf", "b.npy", "-Inf", "row 4, column 1");

    /* labels: negative, non-integer dtype, wrong length, 2-D */
    make_good("labneg", 0, 0);
    int64_t l2[N];
    memcpy(l2, labels, sizeof l2);
    l2[8] = -1;
    put_npy("labneg", "labels.npy", NPY_I64, 1, N, 1, l2);
    expect_bad("labneg", "labels.npy", "label -1", "row 8");
    make_good("labbig", 0, 0);
    l2[8] = 1LL << 40;
    put_npy("labbig", "labels.npy", NPY_I64, 1, N, 1, l2);
    expect_bad("labbig", "labels.npy", "1099511627776", "row 8");
    make_good("labf", 0, 0);
    put_npy("labf", "labels.npy", NPY_F32, 1, N, 1, va);
    expect_bad("labf", "labels.npy", "float32", "integer");
    make_good("lablen", 0, 0);
    put_npy("lablen", "labels.npy", NPY_I64, 1, N - 3, 1, labels);
    expect_bad("lablen", "labels.npy", "7 labels", NULL);

    /* mask: wrong shape, value 2, wrong dtype */
    make_good("mshape", 1, 0);
    put_npy("mshape", "mask.npy", NPY_U8, 2, N, 2, mask);
    expect_bad("mshape", "mask.npy", "(10, 2)", "(10, 3)");
    make_good("mval", 1, 0);
    uint8_t m2[N * 3];
    memcpy(m2, mask, sizeof m2);
    m2[5 * 3 + 1] = 2;
    put_npy("mval", "mask.npy", NPY_U8, 2, N, 3, m2);
    expect_bad("mval", "mask.npy", "value 2", "row 5, column 1");
    make_good("mtype", 1, 0);
    put_npy("mtype", "mask.npy", NPY_F32, 2, N, 3, va);
    expect_bad("mtype", "mask.npy", "float32", NULL);

    char p[256];
    /* a view wider than HCL_MAX_WIDTH: a width of 2^32 + 16 was cut to 16 by the model's int */
    char wdir[300];
    snprintf(wdir, sizeof wdir, "%s/wide", root);
    HCL_CHECK(hcl_mkdir_p(wdir, err) == 0, "%s", err);
    put_text("wide", "manifest.txt", "view w\n");
    put_raw("wide", "w.npy", "|u1", 0, "(1, 1048577)", 1048577);
    expect_bad("wide", "w.npy", "1048577 columns", "1048576");

    /* a view that is 1-D, bad magic */
    make_good("oned", 1, 0);
    put_npy("oned", "a.npy", NPY_F32, 1, N, 1, va);
    expect_bad("oned", "a.npy", "2-D", NULL);
    make_good("magic", 1, 0);
    put_text("magic", "c.npy", "PK\x03\x04 this is a zip file, not npy");
    expect_bad("magic", "c.npy", "bad magic", NULL);

    /* not a directory at all */
    hcl_dataset ds;
    snprintf(p, sizeof p, "%s/absent", root);
    CHECK(dataset_open(&ds, p, err) == -1 && strstr(err, "absent"), "absent dir: '%s'", err);
}

/* x as a half's bits: for the test's values, exact in half precision (normal or zero). */
static uint16_t half_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) == 0) return (uint16_t)(u >> 16);
    HCL_CHECK((u & 0x1fffu) == 0, "%g is not exact in half precision", (double)x);
    return (uint16_t)(((u >> 16) & 0x8000u) | ((((u >> 23) & 0xffu) - 112u) << 10) | ((u >> 13) & 0x3ffu));
}

/* float16 files and a view in several files (a glob, a list out of name order, mixed dtypes)
 * gather the same floats as the float32/float64 files of test_good; each rule of the files
 * fails in one line. */
static void test_storage(void) {
    uint16_t ah[N * 3];
    for (int i = 0; i < N * 3; i++) ah[i] = half_of(va[i]);
    char p[256];
    const char *store[] = {"store", "swidth", "snomatch", "sdotdot", "sattr", "srows", "shnan", "sstray"};
    for (int k = 0; k < 8; k++) {
        make_good(store[k], 1, 1);
        path_of(p, sizeof p, store[k], "a.npy");
        unlink(p);
        path_of(p, sizeof p, store[k], "b.npy");
        unlink(p);
        put_npy(store[k], "a-0.npy", NPY_F16, 2, 4, 3, ah);
        put_npy(store[k], "a-1.npy", NPY_F16, 2, 3, 3, ah + 12);
        put_npy(store[k], "a-2.npy", NPY_F32, 2, 3, 3, va + 21);
        put_npy(store[k], "b-late.npy", NPY_F64, 2, 6, 2, vb);
        put_npy(store[k], "b-early.npy", NPY_F64, 2, 4, 2, vb + 12);
        put_text(store[k], "manifest.txt", "view a files=a-*.npy\nview b files=b-late.npy,b-early.npy  # rows\nview c\n");
    }
    hcl_dataset ds;
    snprintf(p, sizeof p, "%s/store", root);
    int rc = dataset_open(&ds, p, err);
    CHECK(rc == 0, "float16 and multi-file views refused: %s", err);
    if (rc == 0) {
        CHECK(ds.n == N && ds.widths[0] == 3 && ds.widths[1] == 2 && ds.views[0].nfiles == 3 &&
              ds.views[1].nfiles == 2 && ds.views[2].nfiles == 1, "n %lld, files %d %d %d", (long long)ds.n,
              ds.views[0].nfiles, ds.views[1].nfiles, ds.views[2].nfiles);
        int64_t idx[N];
        float a[N * 3], b[N * 2];
        for (int i = 0; i < N; i++) idx[i] = (i * 7 + 3) % N;
        dataset_gather_view(&ds, 0, idx, N, a);
        dataset_gather_view(&ds, 1, idx, N, b);
        for (int i = 0; i < N; i++) {
            for (int j = 0; j < 3; j++)
                CHECK(a[i * 3 + j] == va[idx[i] * 3 + j], "3 files of a: row %lld col %d %g, want %g",
                      (long long)idx[i], j, a[i * 3 + j], va[idx[i] * 3 + j]);
            for (int j = 0; j < 2; j++)
                CHECK(b[i * 2 + j] == (float)vb[idx[i] * 2 + j], "2 files of b: row %lld col %d", (long long)idx[i], j);
        }
        dataset_close(&ds);
    }
    rm_dir("store");
    put_npy("swidth", "a-1.npy", NPY_F16, 2, 3, 2, ah);
    expect_bad("swidth", "a-1.npy", "2 columns", "a-0.npy");
    put_text("snomatch", "manifest.txt", "view a files=z-*.npy\nview b\nview c\n");
    expect_bad("snomatch", "manifest.txt:1", "files=z-*.npy matches no file", NULL);
    put_text("sdotdot", "manifest.txt", "view a files=a-0.npy,../a-1.npy\nview b\nview c\n");
    expect_bad("sdotdot", "manifest.txt:1", "'../a-1.npy'", "outside the dataset directory");
    put_text("sattr", "manifest.txt", "view a shards=3\nview b\nview c\n");
    expect_bad("sattr", "manifest.txt:1", "'shards=3'", "files=");
    put_text("srows", "manifest.txt", "view a files=a-0.npy,a-1.npy\nview b files=b-late.npy,b-early.npy\nview c\n");
    expect_bad("srows", "unknown view file", "a-2.npy", NULL);   /* a-2.npy is nobody's */
    make_good("srows", 1, 0);
    put_npy("srows", "b-0.npy", NPY_F64, 2, 6, 2, vb);
    put_npy("srows", "b-1.npy", NPY_F64, 2, 3, 2, vb);
    path_of(p, sizeof p, "srows", "b.npy");
    unlink(p);
    put_text("srows", "manifest.txt", "view a\nview b files=b-?.npy\nview c\n");
    expect_bad("srows", "view 'b' (2 files): 9 rows", "a.npy has 10 rows", NULL);
    uint16_t bad[9];
    memcpy(bad, ah + 12, sizeof bad);
    bad[1 * 3 + 2] = 0x7e00;   /* a half NaN at row 1, column 2 of a-1.npy: row 5 of the view */
    put_npy("shnan", "a-1.npy", NPY_F16, 2, 3, 3, bad);
    expect_bad("shnan", "a-1.npy", "NaN at row 5, column 2", NULL);
    put_npy("sstray", "a-9.npy", NPY_F16, 2, 1, 3, ah);
    put_text("sstray", "manifest.txt", "view a files=a-0.npy,a-1.npy,a-2.npy\nview b files=b-late.npy,b-early.npy\nview c\n");
    expect_bad("sstray", "a-9.npy", "unknown view file", NULL);
}

/* ---- view kinds: tokens and images ------------------------------------------------------- */

static int32_t tok32[N * 5];     /* ids in [0, 4096) */
static int64_t tok64[N * 3];     /* ids in [0, 2^24), 2^24 - 1 among them */

/* A dataset of every kind: t32 int32 tokens, t64 int64 tokens (its attributes in another
 * order), img a uint8 2x2x1 image, d dense float32. */
static void make_kinds(const char *dir) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, dir);
    HCL_CHECK(hcl_mkdir_p(p, err) == 0, "%s", err);
    put_text(dir, "manifest.txt", "view t32 tokens vocab=4096 pad=0\nview t64 pad=7 vocab=16777216 tokens\n"
             "view img image=2x2x1\nview d\n");
    put_npy(dir, "t32.npy", NPY_I32, 2, N, 5, tok32);
    put_npy(dir, "t64.npy", NPY_I64, 2, N, 3, tok64);
    put_npy(dir, "img.npy", NPY_U8, 2, N, 4, vc);
    put_npy(dir, "d.npy", NPY_F32, 2, N, 3, va);
}

/* Token views gather their ids as exact floats (int32, int64, split over files), an image as
 * pixels / 255; the types are the manifest's. */
static void test_kinds_good(void) {
    char p[256], s[96];
    hcl_dataset ds;
    make_kinds("kinds");
    snprintf(p, sizeof p, "%s/kinds", root);
    int rc = dataset_open(&ds, p, err);
    CHECK(rc == 0, "token and image views refused: %s", err);
    if (rc != 0) return;
    const hcl_view_type *t = ds.types;
    CHECK(t[0].kind == HCL_VIEW_TOKENS && t[0].vocab == 4096 && t[0].pad == 0, "t32 type %d %lld %lld",
          t[0].kind, (long long)t[0].vocab, (long long)t[0].pad);
    CHECK(t[1].kind == HCL_VIEW_TOKENS && t[1].vocab == 1 << 24 && t[1].pad == 7, "t64 type");
    CHECK(t[2].kind == HCL_VIEW_IMAGE && t[2].h == 2 && t[2].w == 2 && t[2].c == 1, "img type");
    CHECK(t[3].kind == HCL_VIEW_DENSE && t[3].vocab == 0 && t[3].h == 0, "d type");
    const char *want[4] = {"tokens vocab=4096 pad=0", "tokens vocab=16777216 pad=7", "image=2x2x1", "dense"};
    for (int v = 0; v < 4; v++) {
        dataset_view_type_str(&t[v], s, sizeof s);
        CHECK(strcmp(s, want[v]) == 0, "view %d type '%s', want '%s'", v, s, want[v]);
    }
    int64_t idx[N];
    float out[N * 5];
    for (int i = 0; i < N; i++) idx[i] = (i * 3 + 1) % N;
    dataset_gather_view(&ds, 0, idx, N, out);
    for (int i = 0; i < N * 5; i++)
        CHECK(out[i] == (float)tok32[idx[i / 5] * 5 + i % 5], "int32 id %d: %g", i, out[i]);
    dataset_gather_view(&ds, 1, idx, N, out);
    for (int i = 0; i < N * 3; i++)
        CHECK(out[i] == (float)tok64[idx[i / 3] * 3 + i % 3] && (int64_t)out[i] == tok64[idx[i / 3] * 3 + i % 3],
              "int64 id %d: %.1f, want %lld", i, out[i], (long long)tok64[idx[i / 3] * 3 + i % 3]);
    dataset_gather_view(&ds, 2, idx, N, out);
    for (int i = 0; i < N * 4; i++)
        CHECK(out[i] == (float)vc[idx[i / 4] * 4 + i % 4] * (1.0f / 255.0f), "image pixel %d: %g", i, out[i]);
    dataset_close(&ds);
    rm_dir("kinds");

    /* t32 split over two files gathers what one file does */
    make_kinds("ksplit");
    path_of(p, sizeof p, "ksplit", "t32.npy");
    unlink(p);
    put_npy("ksplit", "t32-0.npy", NPY_I32, 2, 6, 5, tok32);
    int64_t rest[4 * 5];   /* the second file int64: a view's files may mix the id dtypes */
    for (int i = 0; i < 4 * 5; i++) rest[i] = tok32[6 * 5 + i];
    put_npy("ksplit", "t32-1.npy", NPY_I64, 2, 4, 5, rest);
    put_text("ksplit", "manifest.txt", "view t32 files=t32-*.npy tokens vocab=4096 pad=0\n"
             "view t64 pad=7 vocab=16777216 tokens\nview img image=2x2x1\nview d\n");
    snprintf(p, sizeof p, "%s/ksplit", root);
    rc = dataset_open(&ds, p, err);
    CHECK(rc == 0, "a token view in two files refused: %s", err);
    if (rc == 0) {
        CHECK(ds.views[0].nfiles == 2 && ds.types[0].kind == HCL_VIEW_TOKENS, "split: %d files", ds.views[0].nfiles);
        dataset_gather_view(&ds, 0, idx, N, out);
        for (int i = 0; i < N * 5; i++)
            CHECK(out[i] == (float)tok32[idx[i / 5] * 5 + i % 5], "split int32 id %d: %g", i, out[i]);
        dataset_close(&ds);
    }
    rm_dir("ksplit");
}

/* Each rule of the kinds fails in one line naming the file or view and what to write. */
static void test_kinds_bad(void) {
    int32_t bad32[N * 5];
    memcpy(bad32, tok32, sizeof bad32);
    bad32[7 * 5 + 2] = 4096;
    make_kinds("kid");
    put_npy("kid", "t32.npy", NPY_I32, 2, N, 5, bad32);
    expect_bad("kid", "t32.npy: row 7 column 2: token id 4096 outside [0, 4096) (vocab=4096)", NULL, NULL);
    int64_t bad64[N * 3];
    memcpy(bad64, tok64, sizeof bad64);
    bad64[4 * 3 + 0] = -1;
    make_kinds("kneg");
    put_npy("kneg", "t64.npy", NPY_I64, 2, N, 3, bad64);
    expect_bad("kneg", "t64.npy: row 4 column 0: token id -1 outside [0, 16777216)", NULL, NULL);
    /* in the second of two files: the view's row */
    make_kinds("kid2");
    put_npy("kid2", "t32-a.npy", NPY_I32, 2, 5, 5, tok32);
    put_npy("kid2", "t32-b.npy", NPY_I32, 2, 5, 5, bad32 + 25);
    put_text("kid2", "manifest.txt", "view t32 tokens vocab=4096 pad=0 files=t32-a.npy,t32-b.npy\n"
             "view t64 pad=7 vocab=16777216 tokens\nview img image=2x2x1\nview d\n");
    char p[256];
    path_of(p, sizeof p, "kid2", "t32.npy");
    unlink(p);
    expect_bad("kid2", "t32-b.npy: row 7 column 2: token id 4096", NULL, NULL);

    static const struct { const char *manifest, *want1, *want2; } lines[] = {
        {"view t32 tokens vocab=16777217 pad=0", "'vocab=16777217' is more than 16777216 (2^24)", "float32"},
        {"view t32 tokens vocab=99999999999999999999999 pad=0", "more than 16777216", NULL},
        {"view t32 tokens pad=0", "view 't32': `tokens` needs vocab= and pad=", "`view t32 tokens vocab=V pad=P`"},
        {"view t32 tokens vocab=4096", "`tokens` needs vocab= and pad=", NULL},
        {"view t32 vocab=4096 pad=0", "view 't32': vocab= and pad= are for a token view", "`view t32 tokens"},
        {"view t32 tokens vocab=4096 pad=4096", "pad=4096 outside [0, 4096)", NULL},
        {"view t32 tokens vocab=0 pad=0", "bad 'vocab=0'", "1..16777216"},
        {"view t32 tokens vocab=4k pad=0", "bad 'vocab=4k'", NULL},
        {"view t32 tokens vocab=4096 pad=-1", "bad 'pad=-1'", NULL},
        {"view t32 tokens tokens vocab=4096 pad=0", "unknown or repeated attribute 'tokens'", NULL},
        {"view t32 tokens vocab=4096 pad=0 vocab=8", "unknown or repeated attribute 'vocab=8'", NULL},
        {"view t32 tokens vocab=4096 pad=0 image=1x5x1", "both `tokens` and image=", NULL},
        {"view t32", "t32.npy: int32 data in view 't32'", "write `view t32 tokens vocab=V pad=P`"},
        {"view t32 image=1x5x1", "t32.npy: int32 data in view 't32'", "`tokens`"},
        {"view t32 tokens vocab=4096 pad=0\nview t64 pad=7 vocab=16777216 tokens\nview img image=2x3x1",
         "img.npy: 4 columns but view 'img' is image=2x3x1 (6 values a row)", NULL},
        {"view t32 tokens vocab=4096 pad=0\nview t64 pad=7 vocab=16777216 tokens\nview img image=2x2",
         "bad 'image=2x2'", "image=HxWxC"},
        {"view t32 tokens vocab=4096 pad=0\nview t64 pad=7 vocab=16777216 tokens\nview img image=2x0x1",
         "bad 'image=2x0x1'", NULL},
        {"view t32 tokens vocab=4096 pad=0\nview t64 pad=7 vocab=16777216 tokens\nview img image=1024x1024x2",
         "2097152 values a row", NULL},
        {"view t32 tokens vocab=4096 pad=0\nview t64 pad=7 vocab=16777216 tokens\nview img tokens vocab=256 pad=0",
         "img.npy: view 'img' is a token view: dtype uint8", "int32 or int64"},
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char text[512];
        int full = strstr(lines[i].manifest, "view img") != NULL;
        snprintf(text, sizeof text, "%s\n%s", lines[i].manifest,
                 full ? "view d\n" : "view t64 pad=7 vocab=16777216 tokens\nview img image=2x2x1\nview d\n");
        make_kinds("kline");
        put_text("kline", "manifest.txt", text);
        expect_bad("kline", lines[i].want1, lines[i].want2, NULL);
    }
}

int main(void) {
    for (int i = 0; i < N * 3; i++) va[i] = 0.25f * (float)i - 3.0f;
    for (int i = 0; i < N * 2; i++) vb[i] = 1.0 / 3.0 * i - 1e-3 * i * i;
    for (int i = 0; i < N * 4; i++) vc[i] = (uint8_t)(i * 37 % 256);
    vc[7 * 4 + 1] = 255;
    for (int i = 0; i < N; i++) labels[i] = i % 3;
    for (int i = 0; i < N * 5; i++) tok32[i] = (i * 811 + 5) % 4096;
    tok32[3 * 5 + 4] = 4095;
    for (int i = 0; i < N * 3; i++) tok64[i] = ((int64_t)i * 2654435761LL) % (1 << 24);
    tok64[9 * 3 + 1] = (1 << 24) - 1;   /* the largest id: exact as float32 */
    for (int i = 0; i < N * 3; i++) mask[i] = (uint8_t)((i * 7 + 3) % 5 != 0);
    snprintf(root, sizeof root, "/tmp/test_dataset.XXXXXX");
    HCL_CHECK(mkdtemp(root), "mkdtemp %s", root);
    test_good();
    test_absent_view();
    test_bad();
    test_bad_manifest();
    test_storage();
    test_kinds_good();
    test_kinds_bad();
    CHECK(rmdir(root) == 0, "rmdir %s: files left behind", root);
    CHECK_DONE();
}
