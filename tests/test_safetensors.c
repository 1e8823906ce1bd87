/* test_safetensors: round trip through st_write/st_open, metadata, the byte layout (checked by
 * hand), and every damage the reader must refuse with a line naming the file. */
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
    const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}";
    size_t hl = strlen(hdr);
    memset(buf, 0, sizeof buf);
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, hdr, hl);
    write_bytes(bad, buf, 8 + hl + 12);
    CHECK(st_open(&f, bad, err) == -1 && strstr(err, "'w'"), "offsets vs shape: %s", err);
    hdr = "{\"w\":{\"dtype\":\"C64\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    hl = strlen(hdr);
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, hdr, hl);
    write_bytes(bad, buf, 8 + hl + 8);
    CHECK(st_open(&f, bad, err) == -1 && strstr(err, "C64"), "dtype: %s", err);
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
