/* torch_peer_step: one hcl training step from given weights and batch, for the comparison with
 * the PyTorch peer (tests/test_torch_peer.py). Usage: torch_peer_step DIR
 * DIR holds x0.npy .. x{V-1}.npy (N, d_v) and one .npy per model tensor named by hcl's tensor
 * names (encoder.v0.0.weight, ..., logit_t). Writes DIR/out/loss.npy, DIR/out/grad.<name>.npy
 * and DIR/out/param.<name>.npy after one AdamW step (lr 1e-3, wd 1e-4, full-graph loss). */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "npy.h"
#include "step.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: torch_peer_step DIR\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    const char *dir = argv[1];
    char path[2048], err[HCL_ERR_MAX];
    npy_file x[HCL_MAX_VIEWS];
    int V = 0;
    for (; V < HCL_MAX_VIEWS; V++) {
        snprintf(path, sizeof path, "%s/x%d.npy", dir, V);
        if (npy_open(&x[V], path, err) != 0) break;
    }
    HCL_CHECK(V >= 2, "need x0.npy and x1.npy in %s: %s", dir, err);
    int64_t N = x[0].shape[0];
    hcl_model_config mc;
    model_config_default(&mc);
    mc.nviews = V;
    for (int v = 0; v < V; v++) {
        snprintf(mc.names[v], sizeof mc.names[v], "v%d", v);
        mc.in_width[v] = (int)x[v].shape[1];
    }
    hcl_loss_config lc;
    loss_config_default(&lc, V, mc.dim);
    hcl_optim_config oc;
    optim_config_default(&oc);
    oc.lr = 1e-3f;
    oc.weight_decay = 1e-4f;
    hcl_worker w;
    HCL_CHECK(worker_init(&w, MPI_COMM_SELF, &mc, &lc, &oc, 1, 0, N, 0, err) == 0, "%s", err);
    for (int i = 0; i < w.model.ntensors; i++) {
        const hcl_tensor *t = &w.model.tensors[i];
        npy_file f;
        snprintf(path, sizeof path, "%s/%s.npy", dir, t->name);
        HCL_CHECK(npy_open(&f, path, err) == 0, "%s", err);
        HCL_CHECK(f.dtype == NPY_F32 && f.count == t->numel, "%s: %lld floats, want %lld", path,
                  (long long)f.count, (long long)t->numel);
        memcpy(w.model.params + t->offset, f.data, sizeof(float) * t->numel);
        npy_close(&f);
    }
    int64_t widths[HCL_MAX_VIEWS];
    for (int v = 0; v < V; v++) widths[v] = mc.in_width[v];
    hcl_batch_layout l;
    uint8_t *buf = hcl_malloc(batch_layout(&l, N, N, 1, V, widths));
    const int64_t split[2] = {0, N};
    batch_header_init(buf, HCL_BATCH_TRAIN, 0, 0, N, split, 0, 1, V, 0, oc.lr);
    memset(buf + l.mask, 1, (size_t)N * V);
    for (int64_t i = 0; i < N; i++) ((int32_t *)(buf + l.labels))[i] = -1;
    for (int v = 0; v < V; v++) memcpy(buf + l.view[v], x[v].data, sizeof(float) * N * widths[v]);
    hcl_step_result res;
    worker_forward_backward(&w, buf, &res);
    snprintf(path, sizeof path, "%s/out", dir);
    HCL_CHECK(hcl_mkdir_p(path, err) == 0, "%s", err);
    double loss = res.loss;
    int64_t one = 1;
    snprintf(path, sizeof path, "%s/out/loss.npy", dir);
    HCL_CHECK(npy_write(path, NPY_F64, 1, &one, &loss, err) == 0, "%s", err);
    for (int i = 0; i < w.model.ntensors; i++) {
        const hcl_tensor *t = &w.model.tensors[i];
        snprintf(path, sizeof path, "%s/out/grad.%s.npy", dir, t->name);
        HCL_CHECK(npy_write(path, NPY_F32, t->ndim, t->shape, w.model.grads + t->offset, err) == 0, "%s", err);
    }
    worker_update(&w, &res);
    for (int i = 0; i < w.model.ntensors; i++) {
        const hcl_tensor *t = &w.model.tensors[i];
        snprintf(path, sizeof path, "%s/out/param.%s.npy", dir, t->name);
        HCL_CHECK(npy_write(path, NPY_F32, t->ndim, t->shape, w.model.params + t->offset, err) == 0, "%s", err);
    }
    printf("hcl loss %.8f\n", loss);
    free(buf);
    worker_free(&w);
    for (int v = 0; v < V; v++) npy_close(&x[v]);
    MPI_Finalize();
    return 0;
}
