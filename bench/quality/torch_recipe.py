#!/usr/bin/python3
"""The PyTorch peer's training recipe on the 3-view Fashion-MNIST dataset, for quality comparisons.

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/quality/torch_recipe.py \
        --data data/fashion-mnist --out runs/quality/torch [--epochs 10] [--threads 2]

Model and loss are the peer's own (../shared/bench/torch_ref.py: MultiViewModel, full_loss):
per view Linear(d,512)-ReLU-Linear(512,256)-ReLU-Linear(256,128), L2 normalised, full-graph
symmetric InfoNCE (mean over the 3 view pairs), learnable logit scale exp(t), t0 = ln(1/0.07).

Recipe (what hcl-train does with `--loss full --batch-size 512 --epochs 10 --lr 1e-3 --seed 0`):
  data      DATA/train/{top,bottom,thumb}.npy (60,000 rows, written by `hcl-data fashion-mnist`)
  order     one permutation per epoch from torch.Generator seeded with --seed (randperm); the last
            partial batch is dropped: 117 steps of 512 rows per epoch, 1170 steps
  optimizer torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-4), one
            parameter group (torch_ref.build's setting: decay on every parameter)
  schedule  lr(step) = 1e-3 * 0.5 * (1 + cos(pi * step / 1170)), step = 0..1169 (cosine to 0,
            no warmup; the same formula as hcl's optim_lr)
  scale     after each step t is clamped to [0, ln 100] (as hcl does; the forward also clamps)
  threads   2 (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, torch.set_num_threads), OMP_WAIT_POLICY=PASSIVE

Output, in hcl-embed's layout, so `hcl-eval --features-train OUT/train --features-test OUT/test`
scores it with the same code as hcl's own embeddings:
  OUT/{train,test}/{top,bottom,thumb}.npy  (N, 128) float32 L2-normalised embeddings
  OUT/{train,test}/fused.npy               normalised mean of the three
  OUT/{train,test}/labels.npy              int64
  OUT/{train,test}/manifest.txt            `view NAME` lines
"""
import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VIEWS = ("top", "bottom", "thumb")


def early_threads():
    n = "2"
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n = sys.argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    os.environ.setdefault("OPENBLAS_NUM_THREADS", n)
    os.environ.setdefault("OMP_NUM_THREADS", n)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


early_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "..", "shared", "bench"))
import torch_ref  # noqa: E402


def load_split(d):
    xs = [np.load(os.path.join(d, v + ".npy")) for v in VIEWS]
    xs = [torch.from_numpy(np.require(x, np.float32, ["C", "W"])) for x in xs]
    y = np.load(os.path.join(d, "labels.npy")).astype(np.int64)
    return xs, y


@torch.no_grad()
def embed(model, xs, batch=4096, call=lambda model, xs: model(xs)):
    """Every row's (N, 128) embedding of each view and their normalised mean; call(model, xs)
    runs the model on one batch of the views (torch_kinds.py's takes them as arguments)."""
    model.eval()
    n = xs[0].shape[0]
    out = [np.empty((n, torch_ref.EMB), np.float32) for _ in xs]
    for s in range(0, n, batch):
        zs, _ = call(model, [x[s:s + batch] for x in xs])
        for o, z in zip(out, zs):
            o[s:s + batch] = z.numpy()
    model.train()
    fused = F.normalize(torch.from_numpy(sum(out) / len(out)), dim=-1).numpy()
    return out, fused


def write_embeddings(d, zs, fused, y, views=VIEWS, who="bench/quality/torch_recipe.py"):
    """hcl-embed's layout: VIEW.npy, fused.npy, labels.npy, manifest.txt."""
    os.makedirs(d, exist_ok=True)
    for v, z in zip(views, zs):
        np.save(os.path.join(d, v + ".npy"), z)
    np.save(os.path.join(d, "fused.npy"), fused)
    np.save(os.path.join(d, "labels.npy"), y)
    with open(os.path.join(d, "manifest.txt"), "w") as f:
        f.write(f"# embeddings of the PyTorch peer recipe ({who})\n")
        for v in views:
            f.write(f"view {v}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset root with train/ and test/")
    ap.add_argument("--out", required=True, help="output root: OUT/train, OUT/test")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch_ref.set_threads(a.threads)

    xtr, ytr = load_split(os.path.join(a.data, "train"))
    xte, yte = load_split(os.path.join(a.data, "test"))
    dims = tuple(x.shape[1] for x in xtr)
    n = xtr[0].shape[0]

    torch.manual_seed(a.seed)
    model = torch_ref.MultiViewModel(dims=dims)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=a.weight_decay)
    gen = torch.Generator().manual_seed(a.seed)
    spe = n // a.batch_size
    total = spe * a.epochs
    print(f"torch {torch.__version__}: {n} rows, views {dims}, {spe} steps/epoch, {total} steps, "
          f"threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    step = 0
    for epoch in range(a.epochs):
        perm = torch.randperm(n, generator=gen)
        run = 0.0
        for s in range(spe):
            lr = a.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
            opt.zero_grad(set_to_none=True)
            zs, scale = model([x[idx] for x in xtr])
            loss = torch_ref.full_loss(zs, scale)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_t.clamp_(0.0, torch_ref.LOGIT_MAX)
            run += loss.item()
            step += 1
        dt = time.perf_counter() - t0
        print(f"epoch {epoch + 1}/{a.epochs} loss {run / spe:.4f} logit_scale "
              f"{model.logit_t.exp().item():.2f} lr {lr:.2e} {step * a.batch_size / dt:.0f} "
              f"samples/s", flush=True)
    train_s = time.perf_counter() - t0

    for split, xs, y in (("train", xtr, ytr), ("test", xte, yte)):
        zs, fused = embed(model, xs)
        write_embeddings(os.path.join(a.out, split), zs, fused, y)
    print(f"trained in {train_s:.1f} s; wrote {a.out}/train and {a.out}/test", flush=True)


if __name__ == "__main__":
    main()
