/* test_json: the one JSON writer: nesting and separators, escaping, strings that are valid
 * UTF-8 whatever bytes they were given (each bad one U+FFFD), numbers that read back to the same
 * double bits (and null for non-finite ones), reuse of the buffer after json_reset; and
 * json_walk_numbers over the writer's own text and malformed text. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"

typedef struct {
    char got[2048];
    int n;
} walked;

static void collect(void *arg, const char *path, double x) {
    walked *w = arg;
    size_t len = strlen(w->got);
    snprintf(w->got + len, sizeof w->got - len, "%s=%.17g;", path, x);
    w->n++;
}

/* Every number of the writer's line, by path, in order; strings, booleans, nulls skipped. */
static void check_walk(const char *text) {
    walked w = {0};
    CHECK(json_walk_numbers(text, collect, &w) == 0, "walk of the written line failed");
    const char *want = "step=3;loss=2.5;pair_loss/a:b=0.10000000000000001;shares/0=256;shares/1=-4;"
                       "eval/knn=0.5;bytes=1.8446744073709552e+19;";
    CHECK(strcmp(w.got, want) == 0, "walked\n got  %s\n want %s", w.got, want);
    const char *bad[] = {"", "{", "{\"a\": }", "{\"a\" 1}", "[1, 2", "{\"a\": 1} x", "{\"a\": \"b}",
                         "{\"a\": nul}", "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]", "{\"a\": .5}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        walked b = {0};
        CHECK(json_walk_numbers(bad[i], collect, &b) == -1, "malformed text %s was walked", bad[i]);
    }
    walked e = {0};
    CHECK(json_walk_numbers(" {\"k\\\"ey\": [true, false, null, \"s\", {}, [], -1e-3]} ", collect, &e) == 0 &&
              strcmp(e.got, "k\"ey/6=-0.001;") == 0, "escaped key and empty containers: %s", e.got);
}

/* Strings come out valid UTF-8 (JSON text is UTF-8; hclctl --json writes what a job sent):
 * valid characters unchanged, every byte of an invalid sequence U+FFFD, then the next byte
 * read afresh. */
static void test_utf8(void) {
    const char *fffd = "\xef\xbf\xbd";
    const struct { const char *in, *want; } cases[] = {
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"},
        {"a\xff" "b", "a#b"},                  /* never in UTF-8 */
        {"\xc3", "#"},                          /* cut short at the end */
        {"\xc3(", "#("},                        /* cut short by an ASCII byte */
        {"\xe2\x82", "##"},                    /* each byte of a cut sequence */
        {"\xc0\xaf", "##"},                    /* overlong '/' */
        {"\xe0\x80\xaf", "###"},              /* overlong, 3 bytes */
        {"\xed\xa0\x80", "###"},              /* a UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "####"},        /* past U+10FFFF */
        {"\x80x", "#x"},                        /* a lone continuation byte */
        {"\x1b[31m", "\\u001b[31m"},          /* a control character: escaped, as before */
    };
    hcl_json j;
    json_init(&j);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[128] = "\"";
        for (const char *w = cases[i].want; *w; w++) strcat(want, *w == '#' ? fffd : (char[2]){*w, 0});
        strcat(want, "\"");
        json_reset(&j);
        json_string(&j, NULL, cases[i].in);
        CHECK(strcmp(json_text(&j), want) == 0, "case %zu: got %s, want %s", i, json_text(&j), want);
    }
    json_free(&j);
}

int main(void) {
    hcl_json j;
    json_init(&j);
    CHECK(strcmp(json_text(&j), "") == 0, "an empty writer's text is \"\"");
    json_begin_object(&j, NULL);
    json_int(&j, "step", 3);
    json_number(&j, "loss", 2.5);
    json_begin_object(&j, "pair_loss");
    json_number(&j, "a:b", 0.1);
    json_number(&j, "a:c", NAN);
    json_end_object(&j);
    json_begin_array(&j, "shares");
    json_int(&j, NULL, 256);
    json_int(&j, NULL, -4);
    json_end_array(&j);
    json_string(&j, "name", "q\"b\\s\n\x01");
    json_bool(&j, "ok", 1);
    json_null(&j, "none");
    json_raw(&j, "eval", "{\"knn\": 0.5}");
    json_uint(&j, "bytes", 18446744073709551615ull);
    json_number(&j, "inf", INFINITY);
    json_end_object(&j);
    const char *want = "{\"step\": 3, \"loss\": 2.5, \"pair_loss\": {\"a:b\": 0.1, \"a:c\": null}, "
                       "\"shares\": [256, -4], \"name\": \"q\\\"b\\\\s\\n\\u0001\", \"ok\": true, "
                       "\"none\": null, \"eval\": {\"knn\": 0.5}, \"bytes\": 18446744073709551615, "
                       "\"inf\": null}";
    CHECK(strcmp(json_text(&j), want) == 0, "text\n got  %s\n want %s", json_text(&j), want);
    CHECK(json_len(&j) == strlen(want), "json_len %zu, want %zu", json_len(&j), strlen(want));
    check_walk(json_text(&j));

    /* Numbers: the shortest of 15, 16, 17 digits that reads back to the same double. */
    uint64_t x = 0x243F6A8885A308D3ull;
    int bad = 0, longer = 0;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double v;
        uint64_t bits = x & 0x7FEFFFFFFFFFFFFFull;   /* finite, either sign */
        memcpy(&v, &bits, sizeof v);
        if (i % 2) v = (double)(float)(v * 1e-300);  /* floats too (lr, logit scale) */
        json_reset(&j);
        json_number(&j, NULL, v);
        bad += strtod(json_text(&j), NULL) != v;
        longer += json_len(&j) > 24;
    }
    CHECK(bad == 0, "%d of 100000 numbers do not read back to the same double", bad);
    CHECK(longer == 0, "%d numbers longer than 24 characters", longer);
    json_reset(&j);
    json_number(&j, NULL, 0.1);
    CHECK(strcmp(json_text(&j), "0.1") == 0, "0.1 is written as %s", json_text(&j));
    json_reset(&j);
    json_number(&j, NULL, (double)0.001f);
    CHECK(strcmp(json_text(&j), "0.0010000000474974513") == 0, "0.001f is written as %s", json_text(&j));

    /* Seconds to the millisecond: today's wall clock keeps its milliseconds and no more
     * (1796424725.9436216 was written with 17 digits), trailing zeros go. */
    const struct { double x; const char *want; } secs[] = {
        {1796424725.9436216, "1796424725.944"}, {2.5, "2.5"}, {3.0, "3"}, {0.0004, "0"},
        {-0.0004, "0"}, {59.9996, "60"}, {1e-9, "0"}, {NAN, "null"}, {1e300, "1e+300"}};
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        json_reset(&j);
        json_seconds(&j, NULL, secs[i].x);
        CHECK(strcmp(json_text(&j), secs[i].want) == 0, "json_seconds(%.17g) wrote %s, want %s", secs[i].x,
              json_text(&j), secs[i].want);
    }

    /* A reset writer reuses its buffer and starts a fresh top level. */
    char *before = j.buf;
    json_reset(&j);
    json_begin_array(&j, NULL);
    json_end_array(&j);
    CHECK(strcmp(json_text(&j), "[]") == 0 && j.buf == before, "after reset: %s", json_text(&j));
    json_free(&j);
    test_utf8();
    CHECK_DONE();
}
