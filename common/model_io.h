/* model_io: a model as one safetensors file (model.safetensors in a checkpoint).
 *
 * Tensors are F32 under the names of model.h (encoder.<view>.<k>.weight, ...); __metadata__
 * holds what rebuilds the model without any other file:
 *   format=hcl-model, version=1, views=top,bottom,thumb, in_widths=392,392,49, hidden=512,256,
 *   dim=128, act=relu|gelu, layernorm=0|1, nclasses=K, t_init=..., and encoders: each view's
 *   encoder (model_spec_format's text with its view's part, `;` between views), e.g.
 *   `conv:16,32/image=28x28x1;bag:64,256/vocab=344/pad=0;mlp:512,256`. A file without
 *   `encoders` (written before them) is read as mlps of `hidden`. */
#ifndef HCL_MODEL_IO_H
#define HCL_MODEL_IO_H

#include "model.h"
#include "safetensors.h"

int model_save(const hcl_model *m, const char *path, char *err);
/* The model configuration stored in a model.safetensors. */
int model_config_read(hcl_model_config *c, const st_file *f, char *err);
/* Copy every tensor of f into m, checking that names and shapes match m exactly. */
int model_params_read(hcl_model *m, const st_file *f, char *err);
/* model_config_read + model_init + model_params_read. */
int model_load(hcl_model *m, const char *path, char *err);

#endif
