#!/usr/bin/python3
"""One training step of hcl against the PyTorch peer (../shared/bench/torch_ref.py) on the same
initial weights and batch: W1's model (3 views 392/392/49, 512-256-128 encoders), full-graph
loss, AdamW lr 1e-3 wd 1e-4, global batch 512.

Tolerances (float32 on both sides, different summation orders):
  loss                      relative 1e-5
  gradients, per tensor     max |g_hcl - g_torch| <= 1e-4 * max |g_torch| + 1e-9
  parameters after the step |p_hcl - p_torch| <= 1e-6 where |g_torch| > 1e-5 (AdamW's first
                            step moves each parameter by about lr * sign(g); near g = 0 the sign
                            is noise), and <= 2 * lr everywhere
A gradient off by a factor of 2 fails the gradient check by 5 orders of magnitude."""
import os
import subprocess
import sys
import tempfile

import numpy as np

src = os.environ.get("HCL_SRC", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
build = os.environ.get("HCL_BUILD", os.path.join(src, "build"))
sys.path.insert(0, os.path.join(src, "..", "shared", "bench"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
try:
    import torch
    import torch_ref
except ImportError as e:
    print(f"SKIP torch peer comparison: {e} (install python3-torch; ../shared/bench/torch_ref.py)")
    sys.exit(77)

torch.set_num_threads(1)
model, _ = torch_ref.build(seed=0)
# hcl's decay groups (model.h: linear weights decay; biases and the logit scale do not), not
# torch_ref's one group that decays every tensor
decay = [p for n, p in model.named_parameters() if n.endswith(".weight")]
rest = [p for n, p in model.named_parameters() if not n.endswith(".weight")]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
                        lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
views = torch_ref.make_data(nbatches=1)[0]


def hcl_name(torch_name):
    if torch_name == "logit_t":
        return "logit_t"
    _, v, layer, kind = torch_name.split(".")          # encs.<v>.<0|2|4>.<weight|bias>
    return f"encoder.v{v}.{int(layer) // 2}.{kind}"


failures = 0


def check(ok, msg):
    global failures
    print(("ok   " if ok else "FAIL ") + msg)
    failures += 0 if ok else 1


with tempfile.TemporaryDirectory(prefix="hcl_torch_peer.") as d:
    for v, x in enumerate(views):
        np.save(f"{d}/x{v}.npy", x.numpy().astype(np.float32))
    for name, p in model.named_parameters():
        np.save(f"{d}/{hcl_name(name)}.npy", p.detach().numpy().astype(np.float32).reshape(p.shape))
    out = subprocess.run([f"{build}/torch_peer_step", d], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr)
        sys.exit(1)

    opt.zero_grad(set_to_none=True)
    zs, scale = model(views)
    loss = torch_ref.full_loss(zs, scale)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    opt.step()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}

    hl = float(np.load(f"{d}/out/loss.npy")[0])
    check(abs(hl - loss.item()) <= 1e-5 * abs(loss.item()), f"loss hcl {hl:.8f} torch {loss.item():.8f}")
    lr = 1e-3
    for name in grads:
        g_t = grads[name].numpy().reshape(-1)
        g_h = np.load(f"{d}/out/grad.{hcl_name(name)}.npy").reshape(-1)
        diff = np.abs(g_h - g_t).max()
        scale_g = np.abs(g_t).max()
        check(diff <= 1e-4 * scale_g + 1e-9, f"grad {name:14s} max|dg| {diff:.3e} of max|g| {scale_g:.3e}")
        # the same check with the gradient doubled must fail (the tolerance can see a factor of 2)
        assert np.abs(2 * g_h - g_t).max() > 1e-4 * scale_g + 1e-9 or scale_g == 0
        p_t = params[name].numpy().reshape(-1)
        p_h = np.load(f"{d}/out/param.{hcl_name(name)}.npy").reshape(-1)
        sure = np.abs(g_t) > 1e-5
        dp = np.abs(p_h - p_t)
        worst_sure = dp[sure].max() if sure.any() else 0.0
        check(worst_sure <= 1e-6 and dp.max() <= 2 * lr,
              f"param after step {name:14s} max|dp| {worst_sure:.2e} (|g|>1e-5), {dp.max():.2e} overall")

print(f"test_torch_peer: {failures} failed")
sys.exit(1 if failures else 0)
