/* fuzz_state: a checkpoint directory (an archive of fuzz_kit.h: state.pb, model.safetensors,
 * optimizer.safetensors) through common/ckpt.c's verification and reading of state.pb, as
 * --resume and hcl-eval do: ckpt_verify (the TrainState message, its format version, each
 * listed file's size and CRC-32C), ckpt_read_state (the state and the model's configuration)
 * and ckpt_model_path. Thin calls: whatever those functions check, this feeds them. */
#include <stdint.h>

#include "ckpt.h"
#include "fuzz_kit.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir();
    fuzz_unpack(dir, data, size);
    char err[HCL_ERR_MAX] = "";
    if (ckpt_verify(dir, err) != 0) fuzz_check_err("ckpt_verify", err);
    hcl_ckpt_state st;
    hcl_model_config mc;
    err[0] = 0;
    if (ckpt_read_state(dir, &st, &mc, err) != 0) fuzz_check_err("ckpt_read_state", err);
    char model[CKPT_PATH_MAX];
    err[0] = 0;
    if (ckpt_model_path(dir, model, err) != 0) fuzz_check_err("ckpt_model_path", err);
    return 0;
}
