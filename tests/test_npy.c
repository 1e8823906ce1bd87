/* test_npy: npy_write round trips, and hand-crafted files for every error npy_open reports. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "npy.h"
#include "util.h"

static char tmpdir[64];
static char made[64][256];
static int nmade;

static const char *tmp_path(const char *name) {
    HCL_CHECK(nmade < 64, "too many temp files");
    snprintf(made[nmade], sizeof made[nmade], "%s/%s", tmpdir, name);
    return made[nmade++];
}

/* Write a .npy by hand: magic, version, header dict padded with spaces to a multiple of 64
 * (ends in '\n'), then nbytes of data (a ramp, so the values are known). */
static const char *craft(const char *name, const char *magic, int major, int minor,
                         const char *dict, size_t nbytes) {
    const char *path = tmp_path(name);
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64, hlen = total - pre;
    uint8_t *buf = hcl_calloc(total + nbytes, 1);
    memcpy(buf, magic, 6);
    buf[6] = (uint8_t)major;
    buf[7] = (uint8_t)minor;
    for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', hlen - dl - 1);
    buf[total - 1] = '\n';
    for (size_t i = 0; i < nbytes; i++) buf[total + i] = (uint8_t)i;
    FILE *fp = fopen(path, "wb");
    HCL_CHECK(fp && fwrite(buf, 1, total + nbytes, fp) == total + nbytes && fclose(fp) == 0,
              "writing %s", path);
    free(buf);
    return path;
}

static const char *M = "\x93NUMPY";

/* npy_open must fail, and the message must name the file and contain `want`. */
static void expect_error(const char *path, const char *want) {
    npy_file f;
    char err[HCL_ERR_MAX] = "";
    int rc = npy_open(&f, path, err);
    CHECK(rc == -1, "%s: npy_open returned %d, want -1 (expected error containing '%s')", path, rc,
          want);
    CHECK(strstr(err, path) != NULL, "error does not name the file %s: '%s'", path, err);
    CHECK(strstr(err, want) != NULL, "error for %s lacks '%s': '%s'", path, want, err);
    CHECK(strchr(err, '\n') == NULL, "error is not one line: '%s'", err);
    CHECK(f.map == NULL, "%s: mapping left open after an error", path);
}

static void test_roundtrip(void) {
    char err[HCL_ERR_MAX];
    float a[12];
    for (int i = 0; i < 12; i++) a[i] = 0.5f * (float)i - 2.0f;
    int64_t shape[2] = {3, 4};
    const char *p = tmp_path("a.npy");
    CHECK(npy_write(p, NPY_F32, 2, shape, a, err) == 0, "npy_write: %s", err);
    npy_file f;
    CHECK(npy_open(&f, p, err) == 0, "npy_open: %s", err);
    CHECK(f.dtype == NPY_F32 && f.elem_size == 4 && f.ndim == 2, "a.npy: dtype %d size %d ndim %d",
          (int)f.dtype, f.elem_size, f.ndim);
    CHECK(f.shape[0] == 3 && f.shape[1] == 4 && f.count == 12,
          "a.npy: shape (%lld, %lld) count %lld",
          (long long)f.shape[0], (long long)f.shape[1], (long long)f.count);
    size_t off = (size_t)((const char *)f.data - (const char *)f.map);
    CHECK(off % 64 == 0, "header length %zu is not a multiple of 64", off);
    CHECK(((const char *)f.map)[off - 1] == '\n', "header does not end with a newline");
    CHECK(memcmp(f.map, M, 6) == 0 && ((uint8_t *)f.map)[6] == 1, "magic/version 1.0");
    CHECK(f.map_len == off + sizeof a, "file size %zu, want %zu", f.map_len, off + sizeof a);
    CHECK(memcmp(f.data, a, sizeof a) == 0, "float32 data differs after round trip");
    for (int i = 0; i < 12; i++) CHECK_CLOSE(npy_get_f64(&f, i), a[i], 0, 0, "npy_get_f64 f32");
    CHECK(strcmp(npy_dtype_name(f.dtype), "float32") == 0, "dtype name %s",
          npy_dtype_name(f.dtype));
    npy_close(&f);
    CHECK(f.map == NULL, "npy_close leaves map");

    int64_t lab[5] = {0, 3, -7, 1LL << 40, 9};
    int64_t s1[1] = {5};
    p = tmp_path("l.npy");
    CHECK(npy_write(p, NPY_I64, 1, s1, lab, err) == 0, "npy_write i64: %s", err);
    CHECK(npy_open(&f, p, err) == 0, "npy_open i64: %s", err);
    CHECK(f.ndim == 1 && f.shape[0] == 5 && f.shape[1] == 1 && f.dtype == NPY_I64, "i64 shape");
    for (int i = 0; i < 5; i++)
        CHECK(npy_get_i64(&f, i) == lab[i], "i64[%d] = %lld, want %lld", i,
              (long long)npy_get_i64(&f, i), (long long)lab[i]);
    npy_close(&f);

    /* every dtype survives a round trip, with the right descr in the header */
    struct { enum npy_dtype t; const char *descr; int size; } types[] = {
        {NPY_F64, "'<f8'", 8}, {NPY_U8, "'|u1'", 1}, {NPY_I8, "'|i1'", 1}, {NPY_I16, "'<i2'", 2},
        {NPY_I32, "'<i4'", 4}, {NPY_U16, "'<u2'", 2}, {NPY_U32, "'<u4'", 4}, {NPY_U64, "'<u8'", 8},
        {NPY_BOOL, "'|b1'", 1},
    };
    uint8_t raw[6 * 8];
    for (int i = 0; i < (int)sizeof raw; i++) raw[i] = (uint8_t)(i % 2);   /* valid bools too */
    int64_t s2[2] = {2, 3};
    for (int k = 0; k < (int)(sizeof types / sizeof types[0]); k++) {
        char name[32];
        snprintf(name, sizeof name, "t%d.npy", k);
        p = tmp_path(name);
        CHECK(npy_write(p, types[k].t, 2, s2, raw, err) == 0, "npy_write %s: %s", types[k].descr,
              err);
        CHECK(npy_open(&f, p, err) == 0, "npy_open %s: %s", types[k].descr, err);
        CHECK(f.dtype == types[k].t && f.elem_size == types[k].size, "%s: dtype %d size %d",
              types[k].descr, (int)f.dtype, f.elem_size);
        CHECK(memmem(f.map, 64, types[k].descr, strlen(types[k].descr)) != NULL,
              "header lacks descr %s", types[k].descr);
        CHECK(memcmp(f.data, raw, (size_t)(6 * types[k].size)) == 0, "%s data differs",
              types[k].descr);
        npy_close(&f);
    }
    double d6[6] = {1.5, -2.25, 1e300, 0, -0.0, 3};
    p = tmp_path("d.npy");
    CHECK(npy_write(p, NPY_F64, 2, s2, d6, err) == 0, "npy_write f64: %s", err);
    CHECK(npy_open(&f, p, err) == 0, "npy_open f64: %s", err);
    for (int i = 0; i < 6; i++) CHECK_CLOSE(npy_get_f64(&f, i), d6[i], 0, 0, "npy_get_f64 f64");
    CHECK(npy_get_i64(&f, 1) == -2, "npy_get_i64 of -2.25 = %lld", (long long)npy_get_i64(&f, 1));
    npy_close(&f);

    /* a zero-row array is valid */
    int64_t s0[2] = {0, 7};
    p = tmp_path("empty.npy");
    CHECK(npy_write(p, NPY_F32, 2, s0, NULL, err) == 0, "npy_write empty: %s", err);
    CHECK(npy_open(&f, p, err) == 0, "npy_open empty: %s", err);
    CHECK(f.count == 0 && f.shape[0] == 0 && f.shape[1] == 7, "empty shape");
    npy_close(&f);
}

static void test_crafted_ok(void) {
    char err[HCL_ERR_MAX];
    npy_file f;
    /* version 2.0 and 3.0 (4-byte header length), double quotes, no trailing comma */
    const char *p = craft("v2.npy", M, 2, 0,
                          "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 24);
    CHECK(npy_open(&f, p, err) == 0, "v2.0 header refused: %s", err);
    CHECK(f.dtype == NPY_I32 && f.shape[0] == 2 && f.shape[1] == 3, "v2.0 shape/dtype");
    CHECK(npy_get_i64(&f, 1) == 0x07060504, "v2.0 data element 1 = %lld",
          (long long)npy_get_i64(&f, 1));
    npy_close(&f);
    p = craft("v3.npy", M, 3, 0,
              "{\"shape\": (4,), \"descr\": \"<f4\", \"fortran_order\": False}", 16);
    CHECK(npy_open(&f, p, err) == 0, "v3.0 header refused: %s", err);
    CHECK(f.ndim == 1 && f.shape[0] == 4 && f.count == 4, "v3.0 shape");
    npy_close(&f);
    /* '|u1' and a big-endian single byte type are the same bytes; a 0-d array */
    p = craft("u1.npy", M, 1, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 1), }", 3);
    CHECK(npy_open(&f, p, err) == 0, "|u1 refused: %s", err);
    npy_close(&f);
    p = craft("scalar.npy", M, 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 8);
    CHECK(npy_open(&f, p, err) == 0, "0-d array refused: %s", err);
    CHECK(f.ndim == 0 && f.count == 1, "0-d: ndim %d count %lld", f.ndim, (long long)f.count);
    npy_close(&f);
}

static void test_crafted_errors(void) {
    const char *ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }";
    expect_error(craft("magic.npy", "\x93NUMPZ", 1, 0, ok, 64), "bad magic");
    expect_error(craft("fortran.npy", M, 1, 0,
                       "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 4), }", 64),
                 "fortran_order True");
    expect_error(craft("c8.npy", M, 1, 0,
                       "{'descr': '<c8', 'fortran_order': False, 'shape': (4, 4), }", 128),
                 "unsupported dtype '<c8'");
    expect_error(craft("f2big.npy", M, 1, 0,
                       "{'descr': '>f2', 'fortran_order': False, 'shape': (4, 4), }", 32),
                 "big-endian dtype '>f2'");
    expect_error(craft("str.npy", M, 1, 0,
                       "{'descr': '<U5', 'fortran_order': False, 'shape': (4,), }", 80),
                 "'<U5'");
    expect_error(craft("struct.npy", M, 1, 0,
                       "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", 16),
                 "unsupported dtype");
    expect_error(craft("be.npy", M, 1, 0,
                       "{'descr': '>f4', 'fortran_order': False, 'shape': (4, 4), }", 64),
                 "big-endian dtype '>f4'");
    expect_error(craft("trunc.npy", M, 1, 0, ok, 60), "truncated");
    expect_error(craft("trunc2.npy", M, 1, 0, ok, 60), "(4, 4)");
    expect_error(craft("lies.npy", M, 1, 0, ok, 68), "header lies about the size");
    expect_error(craft("lies2.npy", M, 1, 0, ok, 68), "68");
    expect_error(craft("v4.npy", M, 4, 0, ok, 64), "version 4.0");
    expect_error(craft("noshape.npy", M, 1, 0, "{'descr': '<f4', 'fortran_order': False, }", 4),
                 "shape");
    expect_error(craft("neg.npy", M, 1, 0,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 4), }", 64),
                 "negative shape value -4");
    expect_error(craft("3d.npy", M, 1, 0,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 4), }", 64),
                 "(2, 2, 4)");
    expect_error(craft("garbage.npy", M, 1, 0, "not a dict at all", 0), "bad .npy header");
    expect_error(craft("huge.npy", M, 1, 0,
                       "{'descr': '<f8', 'fortran_order': False, "
                       "'shape': (4611686018427387904, 4), }", 8),
                 "too large");

    /* header length that runs past the end of the file */
    const char *p = tmp_path("hlen.npy");
    uint8_t b[16] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0x7f, '{', '}'};
    FILE *fp = fopen(p, "wb");
    HCL_CHECK(fp && fwrite(b, 1, sizeof b, fp) == sizeof b && fclose(fp) == 0, "writing %s", p);
    expect_error(p, "header length 32767");
    /* too short to hold a header at all, and a file that is not there */
    p = tmp_path("short.npy");
    fp = fopen(p, "wb");
    HCL_CHECK(fp && fwrite("\x93NUM", 1, 4, fp) == 4 && fclose(fp) == 0, "writing %s", p);
    expect_error(p, "4 bytes");
    expect_error(tmp_path("absent.npy"), "No such file");
}

/* Floats read as int64 truncate toward zero and clamp to int64's range (a cast of an
 * out-of-range float is undefined: x86 gives INT64_MIN for 1e300); NaN reads INT64_MIN. */
static void test_float_to_i64(void) {
    char err[HCL_ERR_MAX];
    const double two63 = 9223372036854775808.0;
    double d[] = {1e300, -1e300, NAN, INFINITY, -INFINITY, two63, -two63, 9223372036854774784.0, 3.9, -3.9};
    int64_t want[] = {INT64_MAX, INT64_MIN, INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN,
                      9223372036854774784, 3, -3};
    int64_t shape[1] = {10};
    const char *p = tmp_path("f2i.npy");
    npy_file f;
    CHECK(npy_write(p, NPY_F64, 1, shape, d, err) == 0, "npy_write: %s", err);
    CHECK(npy_open(&f, p, err) == 0, "npy_open: %s", err);
    for (int i = 0; i < 10; i++)
        CHECK(npy_get_i64(&f, i) == want[i], "npy_get_i64 of float64 %g = %lld, want %lld", d[i],
              (long long)npy_get_i64(&f, i), (long long)want[i]);
    npy_close(&f);
    float x[] = {3e38f, -3e38f, NAN, 2.5f};
    int64_t xwant[] = {INT64_MAX, INT64_MIN, INT64_MIN, 2};
    shape[0] = 4;
    p = tmp_path("f2i32.npy");
    CHECK(npy_write(p, NPY_F32, 1, shape, x, err) == 0, "npy_write: %s", err);
    CHECK(npy_open(&f, p, err) == 0, "npy_open: %s", err);
    for (int i = 0; i < 4; i++)
        CHECK(npy_get_i64(&f, i) == xwant[i], "npy_get_i64 of float32 %g = %lld, want %lld", (double)x[i],
              (long long)npy_get_i64(&f, i), (long long)xwant[i]);
    npy_close(&f);
}

/* float16 ('<f2', written by npy_write): every kind of half read as its exact float, checked
 * against the values numpy gives (np.frombuffer(..., '<f2').astype(np.float64)). */
static void test_float16(void) {
    char err[HCL_ERR_MAX];
    const uint16_t h[10] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x3555};
    const double want[10] = {1.0, -2.0, 65504.0, 5.960464477539063e-08, 6.097555160522461e-05,
                             6.103515625e-05, -0.0, INFINITY, -INFINITY, 0.333251953125};
    int64_t shape[2] = {2, 5};
    const char *p = tmp_path("h.npy");
    CHECK(npy_write(p, NPY_F16, 2, shape, h, err) == 0, "npy_write float16: %s", err);
    npy_file f;
    CHECK(npy_open(&f, p, err) == 0, "npy_open float16: %s", err);
    CHECK(f.dtype == NPY_F16 && f.elem_size == 2 && strcmp(npy_dtype_name(f.dtype), "float16") == 0,
          "h.npy: dtype %s size %d", npy_dtype_name(f.dtype), f.elem_size);
    for (int i = 0; i < 10; i++) {
        CHECK(npy_get_f64(&f, i) == want[i] && signbit(npy_get_f64(&f, i)) == signbit(want[i]),
              "half %04x read %.17g, want %.17g", h[i], npy_get_f64(&f, i), want[i]);
        CHECK((double)npy_half_float(h[i]) == want[i], "npy_half_float(%04x)", h[i]);
    }
    CHECK(isnan(npy_half_float(0x7e00)) && isnan(npy_half_float(0xfd01)), "half NaNs read as NaN");
    CHECK(npy_get_i64(&f, 2) == 65504 && npy_get_i64(&f, 1) == -2, "float16 as int64");
    npy_close(&f);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_npy.XXXXXX");
    HCL_CHECK(mkdtemp(tmpdir), "mkdtemp %s", tmpdir);
    test_roundtrip();
    test_crafted_ok();
    test_crafted_errors();
    test_float_to_i64();
    test_float16();
    for (int i = 0; i < nmade; i++) unlink(made[i]);
    CHECK(rmdir(tmpdir) == 0, "rmdir %s: temp files left behind", tmpdir);
    CHECK_DONE();
}
