/* test_util: CRC-32C (checkpoint files, replica checksums) against published check values and a
 * bitwise reference, for every length and alignment up to 200 bytes and chained calls. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "util.h"

/* The definition, one bit at a time (reflected polynomial 0x82F63B78). */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

int main(void) {
    /* Check values: "123456789" (the CRC catalogue), 32 zero and 32 0xff bytes (RFC 3720 B.4). */
    CHECK(hcl_crc32c(0, "123456789", 9) == 0xE3069283u, "crc32c(\"123456789\") = %08x",
          hcl_crc32c(0, "123456789", 9));
    uint8_t z[32], f[32];
    memset(z, 0, sizeof z);
    memset(f, 0xff, sizeof f);
    CHECK(hcl_crc32c(0, z, 32) == 0x8A9136AAu, "crc32c(32 zeros) = %08x", hcl_crc32c(0, z, 32));
    CHECK(hcl_crc32c(0, f, 32) == 0x62A8AB43u, "crc32c(32 x 0xff) = %08x", hcl_crc32c(0, f, 32));
    CHECK(hcl_crc32c(0, z, 0) == 0, "crc32c of nothing = %08x", hcl_crc32c(0, z, 0));

    uint8_t buf[256];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    int bad = 0, badchain = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 200; n++) {
            uint32_t want = crc32c_bitwise(0, buf + off, n);
            bad += hcl_crc32c(0, buf + off, n) != want;
            size_t cut = n / 3;
            badchain += hcl_crc32c(hcl_crc32c(0, buf + off, cut), buf + off + cut, n - cut) != want;
        }
    CHECK(bad == 0, "%d of 1608 (offset, length) cases differ from the bitwise CRC-32C", bad);
    CHECK(badchain == 0, "%d chained cases differ from one call", badchain);
    CHECK_DONE();
}
