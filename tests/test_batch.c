/* test_batch: the batch wire format (common/batch.c): the header from batch_header_init and the
 * split right after it, batch_layout's offsets (8-byte aligned, no overlap, the total),
 * batch_split's even shares, batch_share_max, batch_split_ok accepting a sound split and
 * refusing each kind of bad one, the --data-plane direct index message (batch_index_bytes,
 * batch_index_rows) assembled by batch_assemble against a small dataset written to a temp
 * directory, and batch_result_bytes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "check.h"
#include "dataset.h"
#include "npy.h"

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

static void test_header(void) {
    uint64_t words[64];
    uint8_t *msg = (uint8_t *)words;
    memset(msg, 0xab, sizeof words);
    const int64_t split[4] = {0, 3, 7, 10};
    batch_header_init(msg, HCL_BATCH_TRAIN | HCL_BATCH_CHECK, 5, 1, 10, split, 1, 3, 2, 1, 0.25f);
    const hcl_batch_header *h = (const hcl_batch_header *)msg;
    CHECK(h->magic == HCL_BATCH_MAGIC, "magic %08x", h->magic);
    CHECK(h->flags == (HCL_BATCH_TRAIN | HCL_BATCH_CHECK), "flags %u", h->flags);
    CHECK(h->step == 5 && h->epoch == 1 && h->n == 10, "step %lld epoch %lld n %lld", (long long)h->step,
          (long long)h->epoch, (long long)h->n);
    CHECK(h->r0 == 3 && h->b == 4, "worker 1's rows: r0 %lld b %lld", (long long)h->r0, (long long)h->b);
    CHECK(h->nviews == 2 && h->has_labels == 1 && h->lr == 0.25f && h->nworkers == 3, "nviews, labels, lr, workers");
    /* the split: right after the header, 8-byte aligned, whatever follows */
    CHECK((uint8_t *)batch_split_bounds(msg) == msg + align8(sizeof(hcl_batch_header)), "split offset");
    CHECK(memcmp(batch_split_bounds(msg), split, sizeof split) == 0, "split copied after the header");
    /* a job without data: the magic, flags and step, every other byte of the header zero */
    memset(msg, 0xab, sizeof words);
    batch_header_init(msg, HCL_BATCH_SNAPSHOT, 7, 0, 0, NULL, 0, 0, 0, 0, 0.0f);
    hcl_batch_header want;
    memset(&want, 0, sizeof want);
    want.magic = HCL_BATCH_MAGIC;
    want.flags = HCL_BATCH_SNAPSHOT;
    want.step = 7;
    CHECK(memcmp(msg, &want, sizeof want) == 0, "a header-only message is magic, flags, step and zeros");
}

static void test_layout(void) {
    const int64_t widths[3] = {5, 3, 16};
    const int64_t ns[] = {1, 7, 64, 1001};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int nw = 1; nw <= 5; nw += 2) {
            const int64_t n = ns[k], b = batch_share_max(n, nw, 1);
            hcl_batch_layout l;
            size_t total = batch_layout(&l, n, b, nw, 3, widths);
            CHECK(total == l.total, "returns the total");
            size_t parts[6] = {l.split, l.labels, l.mask, l.view[0], l.view[1], l.view[2]};
            size_t ends[6] = {l.split + (size_t)(nw + 1) * 8, l.labels + (size_t)n * 4, l.mask + (size_t)n * 3,
                              l.view[0] + (size_t)(b * widths[0]) * 4, l.view[1] + (size_t)(b * widths[1]) * 4,
                              l.view[2] + (size_t)(b * widths[2]) * 4};
            CHECK(l.split == align8(sizeof(hcl_batch_header)), "the split follows the header");
            for (int p = 0; p < 6; p++) {
                CHECK(parts[p] % 8 == 0, "n %lld nw %d: part %d at %zu is not 8-byte aligned", (long long)n, nw, p,
                      parts[p]);
                if (p + 1 < 6) CHECK(ends[p] <= parts[p + 1], "n %lld nw %d: part %d overlaps the next", (long long)n, nw, p);
            }
            CHECK(ends[5] <= total && total - ends[5] < 8, "n %lld nw %d: total %zu, last part ends at %zu",
                  (long long)n, nw, total, ends[5]);
        }
}

static void test_split(void) {
    const int64_t ns[] = {1, 9, 10, 11, 1000};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int w = 1; w <= 4; w++) {
            const int64_t n = ns[k];
            int64_t next = 0;
            for (int r = 0; r < w; r++) {
                int64_t r0, b;
                batch_split(n, w, r, &r0, &b);
                CHECK(r0 == next, "n %lld w %d: worker %d starts at %lld, want %lld", (long long)n, w, r,
                      (long long)r0, (long long)next);
                CHECK(b == n / w + (r < n % w), "n %lld w %d: worker %d has %lld rows", (long long)n, w, r, (long long)b);
                next = r0 + b;
            }
            CHECK(next == n, "n %lld w %d: the shares cover %lld rows", (long long)n, w, (long long)next);
        }
    CHECK(batch_share_max(10, 3, 0) == 4, "even share of 10 over 3: %lld", (long long)batch_share_max(10, 3, 0));
    CHECK(batch_share_max(100, 4, 1) == 37, "adaptive: 1.5 x 25 -> %lld", (long long)batch_share_max(100, 4, 1));
    CHECK(batch_share_max(4, 2, 1) == 3, "adaptive: 1.5 x 2 = 3 -> %lld", (long long)batch_share_max(4, 2, 1));
    CHECK(batch_share_max(3, 2, 1) == 3, "adaptive: never more than n -> %lld", (long long)batch_share_max(3, 2, 1));
    CHECK(batch_share_max(50, 1, 1) == 50, "one worker: everything");
}

static int split_ok(const int64_t *split, int rank, int nw, int64_t n, int64_t b_max, const int64_t *header_split) {
    uint64_t words[32];
    batch_header_init((uint8_t *)words, HCL_BATCH_TRAIN, 0, 0, n, header_split, rank, nw, 1, 0, 0.0f);
    return batch_split_ok((const hcl_batch_header *)words, split, rank, nw, b_max);
}

static void test_split_ok(void) {
    const int64_t good[4] = {0, 3, 7, 10};
    for (int r = 0; r < 3; r++) CHECK(split_ok(good, r, 3, 10, 4, good), "a sound split, worker %d", r);
    const int64_t start[4] = {1, 3, 7, 10}, end[4] = {0, 3, 7, 9}, down[4] = {0, 5, 4, 10}, big[4] = {0, 1, 2, 10};
    CHECK(!split_ok(start, 1, 3, 10, 10, start), "a split not starting at 0");
    CHECK(!split_ok(end, 1, 3, 10, 10, good), "a split not ending at n");
    CHECK(!split_ok(down, 0, 3, 10, 10, down), "a decreasing split");
    CHECK(!split_ok(big, 0, 3, 10, 4, big), "a share above b_max");
    CHECK(!split_ok(good, 1, 3, 10, 3, good), "worker 1's 4 rows above b_max 3");
    const int64_t other[4] = {0, 4, 7, 10};
    CHECK(!split_ok(good, 1, 3, 10, 4, other), "the header's r0 and b are not this worker's share");
    uint64_t words[32];
    batch_header_init((uint8_t *)words, HCL_BATCH_TRAIN, 0, 0, 10, good, 0, 3, 1, 0, 0.0f);
    CHECK(!batch_split_ok((const hcl_batch_header *)words, good, 0, 2, 4), "a split for another number of workers");
}

/* A dataset of N rows in dir: views a (N, 3) and b (N, 2) with value 100 row + column, labels
 * row % 3, mask with view b missing in every fourth row. */
enum { N = 13 };
static void write_dataset(const char *dir) {
    char path[1024], err[HCL_ERR_MAX];
    float a[N * 3], b[N * 2];
    int64_t labels[N];
    uint8_t mask[N * 2];
    for (int i = 0; i < N; i++) {
        for (int c = 0; c < 3; c++) a[i * 3 + c] = (float)(100 * i + c);
        for (int c = 0; c < 2; c++) b[i * 2 + c] = (float)(-100 * i - c);
        labels[i] = i % 3;
        mask[i * 2] = 1;
        mask[i * 2 + 1] = i % 4 != 0;
    }
    const int64_t sa[2] = {N, 3}, sb[2] = {N, 2}, sl[1] = {N}, sm[2] = {N, 2};
    snprintf(path, sizeof path, "%s/a.npy", dir);
    HCL_CHECK(npy_write(path, NPY_F32, 2, sa, a, err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/b.npy", dir);
    HCL_CHECK(npy_write(path, NPY_F32, 2, sb, b, err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/labels.npy", dir);
    HCL_CHECK(npy_write(path, NPY_I64, 1, sl, labels, err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/mask.npy", dir);
    HCL_CHECK(npy_write(path, NPY_U8, 2, sm, mask, err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/manifest.txt", dir);
    FILE *f = fopen(path, "w");
    HCL_CHECK(f, "cannot write %s", path);
    fputs("# two views\nview a\nview b\n", f);
    fclose(f);
}

static void test_index_roundtrip(const char *dir) {
    hcl_dataset ds;
    char err[HCL_ERR_MAX];
    HCL_CHECK(dataset_open(&ds, dir, err) == 0, "%s", err);
    const int64_t n = 7, rows[7] = {12, 0, 5, 8, 3, 11, 4};
    const int64_t split[3] = {0, 4, 7};
    const int nw = 2, w = 1;
    size_t bytes = batch_index_bytes(n, nw);
    CHECK(bytes == align8(sizeof(hcl_batch_header)) + (size_t)(nw + 1 + n) * 8, "index message of %lld rows: %zu bytes",
          (long long)n, bytes);
    uint8_t *msg = hcl_calloc(1, align8(bytes));
    batch_header_init(msg, HCL_BATCH_TRAIN, 3, 0, n, split, w, nw, ds.nviews, ds.has_labels, 0.5f);
    int64_t *idx = (int64_t *)batch_index_rows(msg);
    CHECK((uint8_t *)idx == (uint8_t *)(batch_split_bounds(msg) + nw + 1), "the rows follow the split");
    memcpy(idx, rows, sizeof rows);
    CHECK((uint8_t *)(idx + n) == msg + bytes, "the rows end the message");
    hcl_batch_layout l;
    size_t total = batch_layout(&l, n, 3, nw, ds.nviews, ds.widths);
    uint8_t *out = hcl_calloc(1, total);
    batch_assemble(out, msg, &ds);
    CHECK(memcmp(out, msg, l.labels) == 0, "header and split copied");
    const int32_t *lab = (const int32_t *)(out + l.labels);
    const uint8_t *mask = out + l.mask;
    for (int i = 0; i < n; i++) {
        CHECK(lab[i] == rows[i] % 3, "label of batch row %d: %d", i, lab[i]);
        CHECK(mask[i * 2] == 1 && mask[i * 2 + 1] == (rows[i] % 4 != 0), "mask of batch row %d", i);
    }
    const float *fa = (const float *)(out + l.view[0]), *fb = (const float *)(out + l.view[1]);
    for (int i = 0; i < 3; i++) {   /* worker 1's rows: batch rows 4..6 */
        const int64_t row = rows[4 + i];
        for (int c = 0; c < 3; c++) CHECK(fa[i * 3 + c] == (float)(100 * row + c), "view a, row %lld", (long long)row);
        for (int c = 0; c < 2; c++) CHECK(fb[i * 2 + c] == (float)(-100 * row - c), "view b, row %lld", (long long)row);
    }
    free(out);
    free(msg);
    dataset_close(&ds);
}

static void test_result_bytes(void) {
    for (int nw = 0; nw <= 9; nw++) {
        size_t bytes = batch_result_bytes(nw), busy = bytes - (size_t)nw * sizeof(double);
        CHECK(busy >= sizeof(hcl_step_result) && busy % 8 == 0 && busy - sizeof(hcl_step_result) < 8,
              "%d workers: the busy times at %zu of %zu bytes", nw, busy, bytes);
    }
}

int main(void) {
    test_header();
    test_layout();
    test_split();
    test_split_ok();
    char dir[] = "/tmp/hcl_test_batch.XXXXXX";
    HCL_CHECK(mkdtemp(dir), "mkdtemp %s", dir);
    write_dataset(dir);
    test_index_roundtrip(dir);
    const char *files[] = {"a.npy", "b.npy", "labels.npy", "mask.npy", "manifest.txt"};
    for (int i = 0; i < 5; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    test_result_bytes();
    CHECK_DONE();
}
