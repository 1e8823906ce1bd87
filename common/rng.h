/* rng: seeded, serialisable random streams (xoshiro256**, seeded by splitmix64).
 *
 * Streams are derived, never shared: rng_derive(seed, purpose, index) gives an independent
 * stream for (seed, "init", 0) or (seed, "epoch", e), so the data order of epoch e depends only
 * on the seed and e, and checkpoints store the four words of each live stream. */
#ifndef HCL_RNG_H
#define HCL_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } hcl_rng;

void rng_seed(hcl_rng *r, uint64_t seed);
void rng_derive(hcl_rng *r, uint64_t seed, const char *purpose, uint64_t index);
uint64_t rng_u64(hcl_rng *r);
double rng_uniform(hcl_rng *r);                 /* [0, 1) with 53 bits */
double rng_normal(hcl_rng *r);                  /* standard normal (Box-Muller, no caching) */
uint64_t rng_below(hcl_rng *r, uint64_t n);     /* uniform in [0, n), unbiased */
void rng_permutation(hcl_rng *r, int64_t *idx, int64_t n); /* idx = a uniform permutation of 0..n-1 */

#endif
