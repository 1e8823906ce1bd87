/* test_safetensors: round trip through st_write/st_open, metadata, the byte layout (checked by
 * hand), and every damage the reader must refuse with a line naming the file and the byte offset
 * of the problem: bad JSON, wrong offsets, unknown dtypes, a second __metadata__, a tensor named
 * twice, a shape whose size overflows 64 bits. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "util.h"

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

/* A file of header text hdr followed by data_len zero bytes. */
static void write_header(const char *path, const char *hdr, size_t data_len) {
    static uint8_t buf[4096];
    size_t hl = strlen(hdr);
    memset(buf, 0, sizeof buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    write_bytes(path, buf, 8 + hl + data_len);
}

/* st_open refuses path with an error holding want and "at byte <at>". */
static void refused_at(const char *path, const char *want, long at, const char *what) {
    st_file f;
    char err[HCL_ERR_MAX], where[64];
    snprintf(where, sizeof where, "at byte %ld:", at);
    int rc = st_open(&f, path, err);
    CHECK(rc == -1 && strstr(err, path) && strstr(err, want) && strstr(err, where),
          "%s: want an error naming the file, '%s' and '%s', got rc %d '%s'", what, want, where, rc,
          rc ? err : "");
}

static size_t read_bytes(const char *path, void *p, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n = fread(p, 1, cap, f);
    fclose(f);
    return n;
}

int main(void) {
    char dir[] = "/tmp/hcl_test_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], bad[256], err[HCL_ERR_MAX];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);

    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1.5f, 0.25f, 7};
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    st_entry e[2] = {{"encoder.top.0.weight", 2, sa, a}, {"encoder.top.0.bias", 1, sb, b}};
    const char *meta[] = {"format", "hcl", "note", "quote \" and \\ backslash", NULL};
    CHECK(st_write(path, e, 2, meta, err) == 0, "write: %s", err);

    st_file f;
    CHECK(st_open(&f, path, err) == 0, "open: %s", err);
    CHECK(f.ntensors == 2, "ntensors %d", f.ntensors);
    const st_tensor *t = st_find(&f, "encoder.top.0.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && !strcmp(t->dtype, "F32"), "shape");
    CHECK(t && memcmp(st_data(&f, t), a, sizeof a) == 0, "data a");
    t = st_find(&f, "encoder.top.0.bias");
    CHECK(t && memcmp(st_data(&f, t), b, sizeof b) == 0, "data b");
    CHECK(st_find(&f, "nope") == NULL, "find missing");
    char val[128];
    CHECK(st_metadata_get(&f, "format", val, sizeof val) == 0 && !strcmp(val, "hcl"), "metadata");
    CHECK(st_metadata_get(&f, "note", val, sizeof val) == 0 && !strcmp(val, "quote \" and \\ backslash"),
          "escaped metadata: %s", val);
    CHECK(st_metadata_get(&f, "absent", val, sizeof val) == -1, "absent metadata");
    st_close(&f);

    /* The layout: u64 LE header length, multiple of 8, data right after, in entry order. */
    uint8_t buf[4096];
    size_t n = read_bytes(path, buf, sizeof buf);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    CHECK(hlen % 8 == 0 && 8 + hlen + sizeof a + sizeof b == n, "layout: hlen %llu, file %zu", (unsigned long long)hlen, n);
    CHECK(memcmp(buf + 8 + hlen, a, sizeof a) == 0 && memcmp(buf + 8 + hlen + sizeof a, b, sizeof b) == 0, "data order");
    CHECK(buf[8] == '{', "header is JSON");

    /* Damage: truncated data, header length past the end, too short, bad JSON, wrong offsets. */
    write_bytes(bad, buf, n - 4);
    CHECK(st_open(&f, bad, err) == -1 && strstr(err, "bad.safetensors") && strstr(err, "encoder.top.0.bias"),
          "truncated: %s", err);
    write_bytes(bad, buf, 5);
    CHECK(st_open(&f, bad, err) == -1 && strstr(err, "truncated"), "tiny: %s", err);
    uint8_t big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(bad, big, sizeof big);
    CHECK(st_open(&f, bad, err) == -1 && strstr(err, "header length"), "hlen: %s", err);
    memcpy(big, "\x08\0\0\0\0\0\0\0{\"a\":1}x", 16);
    write_bytes(bad, big, 16);
    CHECK(st_open(&f, bad, err) == -1 && strstr(err, "bad.safetensors"), "bad JSON: %s", err);
    /* 8 + the position in the header text of the offending entry or character */
    write_header(bad, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12);
    refused_at(bad, "'w'", 9, "offsets vs shape");
    write_header(bad, "{\"w\":{\"dtype\":\"C64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    refused_at(bad, "C64", 9, "dtype");
    write_header(bad, "{\"w\": {\"dtype\": \"F32\", \"shape\" [2]}}", 0);
    refused_at(bad, "expected ':'", 8 + 31, "missing colon");
    write_header(bad, "{\"__metadata__\":{\"a\":\"b\"}, \"__metadata__\":{\"c\":\"d\"}}", 0);
    refused_at(bad, "__metadata__", 8 + 27, "a second __metadata__");
    write_header(bad, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    refused_at(bad, "'w'", 8 + 53, "a tensor named twice");
    /* 8 * 4611686018427387908 * 4 bytes wraps to 128 in 64 bits: refused, not loaded */
    write_header(bad, "{\"w\":{\"dtype\":\"F32\",\"shape\":[8,4611686018427387908],\"data_offsets\":[0,128]}}", 128);
    refused_at(bad, "2^64", 9, "a shape that overflows");
    write_header(bad, "{\"w\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}}", 4);
    refused_at(bad, "too large", 8 + 29, "a dimension past int64");
    write_header(bad, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", 1);
    refused_at(bad, "after the header", 8 + 54, "text after the header");
    CHECK(st_open(&f, "/nonexistent/x.safetensors", err) == -1 && strstr(err, "/nonexistent/x.safetensors"), "missing");

    /* A failed write leaves the old file whole. */
    char ro[300];
    snprintf(ro, sizeof ro, "%s/nodir/m.safetensors", dir);
    CHECK(st_write(ro, e, 2, NULL, err) == -1 && strstr(err, "nodir"), "write into a missing dir: %s", err);
    CHECK(st_open(&f, path, err) == 0, "old file intact: %s", err);
    st_close(&f);

    unlink(path);
    unlink(bad);
    rmdir(dir);
    CHECK_DONE();
}
