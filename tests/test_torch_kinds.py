#!/usr/bin/python3
"""One training step of hcl's three encoder kinds against PyTorch on the same initial weights
and batch (tests/torch_peer_step.c with DIR/encoders.txt and DIR/config.txt):

  v0  image 12x10x1 (HWC floats)   conv:4,8   Conv2d(3, pad 1)-ReLU-MaxPool2d(2) x2, mean, Linear
  v1  tokens, L=7, V=50, pad 0     bag:6,10   EmbeddingBag(mean, padding_idx 0)-Linear-ReLU-Linear
  v2  dense, width 9               mlp:16     Linear-ReLU-Linear
  D = 8, each view L2-normalised; full-graph symmetric InfoNCE (../shared/bench/torch_ref.py
  full_loss) with the learnable log logit scale t, clamped to [0, ln 100] after the step.

The token rows hold ids as floats; some rows are mostly padding, row 0 is all padding (its bag is
zero), and ids 40..49 are never used. The optimizer is hcl's: torch.optim.SparseAdam on the table
(only the used rows move; no weight decay), torch.optim.AdamW with weight decay 1e-4 on the
weights (tensors hcl makes with decay 1: linear and conv weights) and none on biases and t,
lr 1e-3, default betas and eps. The step runs twice: with weight decay 1e-4 (hcl's default), and
with 0.1, where decay moves a parameter by lr * wd * |p| ~ 1e-4 |p|, far past the tolerance below:
at 1e-4 that is ~1e-7 |p|, under it, so only the second run sees which tensors decay (and checks
that torch decaying every tensor, torch_ref.py's single group, fails).

Tolerances (float32 on both sides, different summation orders), as tests/test_torch_peer.py:
  loss                      relative 1e-5
  gradients, per tensor     max |g_hcl - g_torch| <= 1e-4 * max |g_torch| + 1e-9 (the table's
                            gradient densified: zero on the rows the batch does not use)
  parameters after the step |p_hcl - p_torch| <= 1e-6 where |g_torch| > 1e-5, <= 2 * lr
                            everywhere; the table's rows the batch does not use are bit-identical
                            to before the step, on both sides
A gradient off by a factor of 2 fails the gradient check by orders of magnitude."""
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

src = os.environ.get("HCL_SRC", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
build = os.environ.get("HCL_BUILD", os.path.join(src, "build"))
sys.path.insert(0, os.path.join(src, "..", "shared", "bench"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch_ref
except ImportError as e:
    print(f"SKIP torch kinds comparison: {e} (install python3-torch; ../shared/bench/torch_ref.py)")
    sys.exit(77)

torch.set_num_threads(1)
N, D = 48, 8
H, W, C, CHANS = 12, 10, 1, (4, 8)
L, VOCAB, PAD, USED, E, BAG_HIDDEN = 7, 50, 0, 40, 6, 10
DENSE, MLP_HIDDEN = 9, 16
LR, WDS = 1e-3, (1e-4, 0.1)
ENCODERS = [f"conv:{CHANS[0]},{CHANS[1]}/image={H}x{W}x{C}", f"bag:{E},{BAG_HIDDEN}/vocab={VOCAB}/pad={PAD}",
            f"mlp:{MLP_HIDDEN}"]


class Kinds(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(C, CHANS[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(CHANS[0], CHANS[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv_out = nn.Linear(CHANS[1], D)
        self.embed = nn.EmbeddingBag(VOCAB, E, mode="mean", padding_idx=PAD, sparse=True)
        self.bag = nn.Sequential(nn.Linear(E, BAG_HIDDEN), nn.ReLU(), nn.Linear(BAG_HIDDEN, D))
        self.mlp = nn.Sequential(nn.Linear(DENSE, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, D))
        self.logit_t = nn.Parameter(torch.tensor([math.log(1 / 0.07)]))

    def forward(self, img, ids, dense):
        x = img.reshape(-1, H, W, C).permute(0, 3, 1, 2)
        z0 = self.conv_out(self.conv(x).mean(dim=(2, 3)))
        z1 = self.bag(self.embed(ids))
        z2 = self.mlp(dense)
        return [F.normalize(z, dim=-1) for z in (z0, z1, z2)], self.logit_t.exp()

    def hcl_names(self):
        """hcl's tensor name of each parameter (common/model.h)."""
        m = {"conv.0.weight": "encoder.v0.conv.0.weight", "conv.0.bias": "encoder.v0.conv.0.bias",
             "conv.3.weight": "encoder.v0.conv.1.weight", "conv.3.bias": "encoder.v0.conv.1.bias",
             "conv_out.weight": "encoder.v0.0.weight", "conv_out.bias": "encoder.v0.0.bias",
             "embed.weight": "encoder.v1.embed.weight", "logit_t": "logit_t"}
        for seq, v in (("bag", 1), ("mlp", 2)):
            for layer in (0, 2):
                for kind in ("weight", "bias"):
                    m[f"{seq}.{layer}.{kind}"] = f"encoder.v{v}.{layer // 2}.{kind}"
        return m


def make_batch(rng):
    img = rng.standard_normal((N, H * W * C)).astype(np.float32)
    ids = rng.integers(1, USED, size=(N, L))
    pads = rng.integers(0, L + 1, size=N)        # pads per row: 0 .. L
    pads[0] = L                                   # one row entirely padding
    pads[1:6] = L - 1                             # a few with a single token
    for i in range(N):
        ids[i, rng.permutation(L)[:pads[i]]] = PAD
    dense = rng.standard_normal((N, DENSE)).astype(np.float32)
    return img, ids, dense


failures = 0


def check(ok, msg):
    global failures
    print(("ok   " if ok else "FAIL ") + msg)
    failures += 0 if ok else 1


def run_hcl(d, model, names, img, ids, dense, wd):
    np.save(f"{d}/x0.npy", img)
    np.save(f"{d}/x1.npy", ids.astype(np.float32))          # ids cross as floats (exact < 2^24)
    np.save(f"{d}/x2.npy", dense)
    with open(f"{d}/encoders.txt", "w") as f:
        f.write("\n".join(ENCODERS) + "\n")
    with open(f"{d}/config.txt", "w") as f:
        f.write(f"dim {D}\nloss full\nweight_decay {wd}\n")
    for name, p in model.named_parameters():
        w = p.detach().numpy().astype(np.float32)     # npy.h: up to 2 dimensions
        np.save(f"{d}/{names[name]}.npy", w.reshape(w.shape[0], -1) if w.ndim > 2 else w)
    out = subprocess.run([f"{build}/torch_peer_step", d], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr)
        if "needs oneDNN" in out.stderr:
            print("SKIP torch kinds comparison: this build has no oneDNN (the conv encoder)")
            sys.exit(77)
        sys.exit(1)


def torch_step(model, img, ids, dense, wd, decay_all=False):
    """Loss, dense gradients and parameters after hcl's optimizer step (decay_all: torch_ref's
    AdamW, decaying every tensor but the table)."""
    table = [model.embed.weight]
    decayed = lambda n: n != "embed.weight" and (decay_all or n.endswith("weight"))
    decay = [p for n, p in model.named_parameters() if decayed(n)]
    rest = [p for n, p in model.named_parameters() if not decayed(n) and n != "embed.weight"]
    sparse = torch.optim.SparseAdam(table, lr=LR)
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
                              lr=LR)
    zs, scale = model(torch.from_numpy(img), torch.from_numpy(ids), torch.from_numpy(dense))
    loss = torch_ref.full_loss(zs, scale)
    loss.backward()
    grads = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).detach().clone()
             for n, p in model.named_parameters()}
    sparse.step()
    adamw.step()
    with torch.no_grad():
        model.logit_t.clamp_(0.0, math.log(100.0))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return loss.item(), grads, params


def param_close(p_h, p_t, g_t):
    """(ok, max |dp| where |g| > 1e-5, max |dp|) of the parameter check."""
    sure = np.abs(g_t) > 1e-5
    dp = np.abs(p_h - p_t)
    worst_sure = dp[sure].max() if sure.any() else 0.0
    return worst_sure <= 1e-6 and dp.max() <= 2 * LR, worst_sure, dp.max()


def compare(d, names, loss, grads, params, before, unused):
    hl = float(np.load(f"{d}/out/loss.npy")[0])
    check(abs(hl - loss) <= 1e-5 * abs(loss), f"loss hcl {hl:.8f} torch {loss:.8f}")
    for name in grads:
        hn = names[name]
        g_t = grads[name].numpy().reshape(-1)
        g_h = np.load(f"{d}/out/grad.{hn}.npy").reshape(-1)
        diff, scale_g = np.abs(g_h - g_t).max(), np.abs(g_t).max()
        check(diff <= 1e-4 * scale_g + 1e-9, f"grad {hn:26s} max|dg| {diff:.3e} of max|g| {scale_g:.3e}")
        # the same check with the gradient doubled must fail (the tolerance can see a factor of 2)
        check(np.abs(2 * g_h - g_t).max() > 1e-4 * scale_g + 1e-9 or scale_g == 0, f"grad {hn} x2 is seen")
        p_t = params[name].numpy().reshape(-1)
        p_h = np.load(f"{d}/out/param.{hn}.npy").reshape(-1)
        ok, worst_sure, worst = param_close(p_h, p_t, g_t)
        check(ok, f"param {hn:26s} max|dp| {worst_sure:.2e} (|g|>1e-5), {worst:.2e} overall")
    rows = lambda a: a.reshape(VOCAB, E)[unused].view(np.uint32)
    p0 = before["embed.weight"]
    p_h = np.load(f"{d}/out/param.{names['embed.weight']}.npy")
    check(np.array_equal(rows(p_h), rows(p0)) and np.array_equal(rows(params["embed.weight"].numpy()), rows(p0)),
          f"table rows the batch does not use ({len(unused)}) bit-identical after the step, hcl and torch")


def fresh_model():
    torch.manual_seed(0)
    return Kinds()


def decay_all_seen(d, names, img, ids, dense, wd):
    """torch decaying every tensor must fail the parameter check against hcl's step."""
    _, grads, params = torch_step(fresh_model(), img, ids, dense, wd, decay_all=True)
    bad = [names[n] for n in params
           if not param_close(np.load(f"{d}/out/param.{names[n]}.npy").reshape(-1), params[n].numpy().reshape(-1),
                              grads[n].numpy().reshape(-1))[0]]
    check(len(bad) > 0, f"wd {wd}: torch decaying every tensor fails on {len(bad)} tensors ({', '.join(bad[:3])}, ...)")


def main():
    img, ids, dense = make_batch(np.random.default_rng(7))
    used = set(np.unique(ids)) - {PAD}
    unused = np.array(sorted(set(range(VOCAB)) - used))
    for wd in WDS:
        print(f"-- weight decay {wd}")
        model = fresh_model()
        names = model.hcl_names()
        before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
        with tempfile.TemporaryDirectory(prefix="hcl_torch_kinds.") as d:
            run_hcl(d, model, names, img, ids, dense, wd)
            loss, grads, params = torch_step(model, img, ids, dense, wd)
            compare(d, names, loss, grads, params, before, unused)
            if wd >= 0.01:
                decay_all_seen(d, names, img, ids, dense, wd)
    print(f"test_torch_kinds: {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
