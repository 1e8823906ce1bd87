/* fuzz_model: one model.safetensors through common/model_io.c's model_load (st_open, the
 * model's configuration from __metadata__, model_init, every tensor checked against the model
 * and copied), as hcl-eval and hcl-embed load a model. An accepted model's tensors must be the
 * ones its configuration lays out, each holding its own slice of the parameters. */
#include <stdint.h>
#include <string.h>

#include "fuzz_kit.h"
#include "model.h"
#include "model_io.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    if (model_load(&m, fuzz_file(0, data, size), err) != 0) {
        fuzz_check_err("model_load", err);
        return 0;
    }
    FUZZ_ASSERT(m.cfg.nviews >= 1 && m.ntensors >= 1, "%d views, %d tensors", m.cfg.nviews, m.ntensors);
    int64_t end = 0;
    for (int i = 0; i < m.ntensors; i++) {
        const hcl_tensor *t = &m.tensors[i];
        FUZZ_ASSERT(model_find_tensor(&m, t->name) == t, "tensor '%s' not found by its name", t->name);
        FUZZ_ASSERT(t->offset == end && t->numel >= 1, "tensor '%s' at %lld (numel %lld), expected at %lld",
                    t->name, (long long)t->offset, (long long)t->numel, (long long)end);
        end += t->numel;
    }
    FUZZ_ASSERT(end == m.nparams, "tensors hold %lld of %lld params", (long long)end, (long long)m.nparams);
    model_free(&m);
    return 0;
}
