/* tensor: the table that names slices of a flat parameter buffer.
 *
 * The model's parameters, gradients and optimizer moments are each one flat float array; a
 * tensor is an (offset, shape) into any of them. `decay` is 0 for biases, norm parameters and
 * the logit scale: no weight decay, no LARS adaptation. */
#ifndef HCL_TENSOR_H
#define HCL_TENSOR_H

#include <stdint.h>

#define HCL_TENSOR_NAME_MAX 96

typedef struct {
    char name[HCL_TENSOR_NAME_MAX];  /* e.g. encoder.top.0.weight */
    int64_t offset;                  /* in floats */
    int64_t numel;
    int ndim;
    int64_t shape[4];                /* ndim of them: (out, in), (n), (Cout, Cin, 3, 3) */
    int decay;
} hcl_tensor;

#endif
