/* bag: the token encoder's front (model.h, kind bag), as torch.nn.EmbeddingBag(mode="mean",
 * padding_idx=pad): row b's feature is the mean of the table rows of its non-padding token ids,
 * zero when it has none. Ids arrive as floats (a batch row is L floats; datasets check them,
 * exact below 2^24). */
#ifndef HCL_BAG_H
#define HCL_BAG_H

#include <stdint.h>

/* f (B, E) from ids x (B, L) and table (V, E). */
void bag_forward(float *f, const float *x, const float *table, int B, int L, int E, int pad);
/* dtable[id] += df[b] / count_b for every non-padding id of row b, rows in order (B, L). */
void bag_backward(float *dtable, const float *df, const float *x, int B, int L, int E, int pad);

#endif
