#!/usr/bin/python3
"""The PyTorch peer of hcl's kinds recipe (one encoder kind per view) on Fashion-MNIST.

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/quality/torch_kinds.py \
        --data data/fm-kinds --out runs/quality-kinds/torch [--epochs 10] [--threads 2] \
        [--loss full | --loss hybrid --lambda 0.5]
    # timing only (bench/run): 5 warm-up steps, then 5 windows of 10 steps, no output files
    /usr/bin/python3 bench/quality/torch_kinds.py --data DIR/train --warmup 5 --bench-steps 10 --windows 5

The model is tests/test_torch_kinds.py's, at the recipe's sizes (`hcl-train --encoder
image=conv:32,64,128 --encoder words=bag:128,256`, thumb the default mlp:512,256, --dim 128):
  image  uint8 (N,784) / 255, x.reshape(B,28,28,1).permute(0,3,1,2); per stage
         Conv2d(3, padding 1)-ReLU-MaxPool2d(2) with 32, 64, 128 channels (28 -> 14 -> 7 -> 3),
         the mean over H x W, Linear(128,128)
  words  int32 (N,49) ids: EmbeddingBag(344,128, mode mean, padding_idx 0, sparse) (a row of only
         padding gives 0), Linear(128,256)-ReLU-Linear(256,128)
  thumb  float32 (N,49): Linear(49,512)-ReLU-Linear(512,256)-ReLU-Linear(256,128)
  each view L2-normalised; full-graph symmetric InfoNCE over the 3 pairs (../shared/bench/
  torch_ref.py full_loss) with the logit scale exp(t), t learnable, t0 = ln(1/0.07).
  --loss hybrid --lambda L (hcl's --loss hybrid --hybrid-base full, common/loss_supcon.c
  loss_ce_forward_backward): plus L times the cross-entropy of a linear head Linear(128, 10)
  (head.weight (K,D), head.bias) applied to every view's normalised embedding, the mean over all
  (row, view) pairs of the batch (every row has all 3 views and a label: the mean over views of
  each view's batch mean).
PyTorch's default initialisation (the distributions hcl's model_init draws from, not its numbers).

Recipe (what hcl-train does with `--batch-size 512 --epochs 10 --lr 1e-3 --seed 0`):
  order     one permutation per epoch from torch.Generator seeded with --seed, the last partial
            batch dropped: 117 steps of 512 rows per epoch
  optimizer torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8) in hcl's two groups: weight decay
            --weight-decay on the tensors hcl decays (linear and conv weights, head.weight), none
            on biases and t; the table by torch.optim.SparseAdam (same lr and betas, no decay:
            only the rows a batch uses move)
  schedule  lr(step) = lr * 0.5 * (1 + cos(pi * step / total)), step = 0..total-1, on both
  scale     after each step t is clamped to [0, ln 100]
  threads   --threads (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS set before torch loads,
            torch.set_num_threads), OMP_WAIT_POLICY=PASSIVE

Output, in hcl-embed's layout (`hcl-eval --features-train OUT/train --features-test OUT/test`):
  OUT/{train,test}/{image,words,thumb}.npy (N, 128) float32 L2-normalised embeddings,
  fused.npy (the normalised mean of the three), labels.npy (int64), manifest.txt.
Prints the loss per epoch, `samples/s: X` (steady state: every epoch but the first; with one
epoch, every step but the first 5) and the training time. With --bench-steps: `window
samples/s: a b c ...` (the format of ../shared/bench/torch_ref.py, read by bench/run)."""
import argparse
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VIEWS = ("image", "words", "thumb")
IMAGE = (28, 28, 1)
CHANS = (32, 64, 128)
VOCAB, PAD, EMBED, BAG_HIDDEN = 344, 0, 128, 256
HIDDEN = (512, 256)
DIM = 128
NCLASSES = 10


sys.path.insert(0, HERE)
import torch_recipe  # noqa: E402  (sets the threads before it imports torch: its early_threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_ref  # noqa: E402  (torch_recipe put ../shared/bench on the path)


class KindsModel(nn.Module):
    def __init__(self, thumb_width, nclasses=0):
        super().__init__()
        stages, cin = [], IMAGE[2]
        for c in CHANS:
            stages += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            cin = c
        self.conv = nn.Sequential(*stages)
        self.conv_out = nn.Linear(CHANS[-1], DIM)
        self.embed = nn.EmbeddingBag(VOCAB, EMBED, mode="mean", padding_idx=PAD, sparse=True)
        self.bag = nn.Sequential(nn.Linear(EMBED, BAG_HIDDEN), nn.ReLU(), nn.Linear(BAG_HIDDEN, DIM))
        self.mlp = nn.Sequential(nn.Linear(thumb_width, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]),
                                 nn.ReLU(), nn.Linear(HIDDEN[1], DIM))
        self.head = nn.Linear(DIM, nclasses) if nclasses > 0 else None
        self.logit_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, img, ids, dense):
        x = img.reshape(-1, *IMAGE).permute(0, 3, 1, 2)
        z0 = self.conv_out(self.conv(x).mean(dim=(2, 3)))
        z1 = self.bag(self.embed(ids))
        z2 = self.mlp(dense)
        return [F.normalize(z, dim=-1) for z in (z0, z1, z2)], self.logit_t.clamp(max=torch_ref.LOGIT_MAX).exp()


def optimizers(model, lr, wd):
    """hcl's groups: decay on linear and conv weights (and head.weight), none on biases and t;
    the table by SparseAdam."""
    named = [(n, p) for n, p in model.named_parameters() if n != "embed.weight"]
    decay = [p for n, p in named if n.endswith("weight")]
    rest = [p for n, p in named if not n.endswith("weight")]
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
                              lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sparse = torch.optim.SparseAdam([model.embed.weight], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    return adamw, sparse


def load_split(d):
    img = torch.from_numpy(np.load(os.path.join(d, "image.npy")).astype(np.float32) / 255.0)
    ids = torch.from_numpy(np.load(os.path.join(d, "words.npy")).astype(np.int64))
    thumb = torch.from_numpy(np.require(np.load(os.path.join(d, "thumb.npy")), np.float32, ["C", "W"]))
    y = np.load(os.path.join(d, "labels.npy")).astype(np.int64)
    assert img.shape[1] == IMAGE[0] * IMAGE[1] * IMAGE[2], img.shape
    assert int(ids.max()) < VOCAB and int(ids.min()) >= 0, (int(ids.min()), int(ids.max()))
    return (img, ids, thumb), y


class Trainer:
    def __init__(self, a, xs, y, total):
        self.a, self.xs, self.total = a, xs, total
        self.y = torch.from_numpy(y)
        torch.manual_seed(a.seed)
        self.model = KindsModel(xs[2].shape[1], NCLASSES if a.loss == "hybrid" else 0)
        self.opts = optimizers(self.model, a.lr, a.weight_decay)
        self.step = 0

    def __call__(self, idx):
        """One step on rows idx; returns the loss."""
        a, m = self.a, self.model
        lr = a.lr * 0.5 * (1.0 + math.cos(math.pi * self.step / self.total))
        for o in self.opts:
            for g in o.param_groups:
                g["lr"] = lr
            o.zero_grad(set_to_none=True)
        zs, scale = m(*(x[idx] for x in self.xs))
        loss = torch_ref.full_loss(zs, scale)
        if m.head is not None:
            yb = self.y[idx]
            ce = torch.stack([F.cross_entropy(m.head(z), yb) for z in zs]).mean()
            loss = loss + a.lam * ce
        loss.backward()
        for o in self.opts:
            o.step()
        with torch.no_grad():
            m.logit_t.clamp_(0.0, torch_ref.LOGIT_MAX)
        self.step += 1
        return loss.item(), lr


def embed(model, xs):
    return torch_recipe.embed(model, xs, 1024, lambda m, x: m(*x))


def write_embeddings(d, zs, fused, y):
    torch_recipe.write_embeddings(d, zs, fused, y, VIEWS, "bench/quality/torch_kinds.py")


def bench(a, xs, y):
    """Timing only: --warmup steps, then --windows windows of --bench-steps steps each."""
    n = xs[0].shape[0]
    spe = n // a.batch_size
    tr = Trainer(a, xs, y, a.warmup + a.windows * a.bench_steps)
    gen = torch.Generator().manual_seed(a.seed)
    perm, k = torch.randperm(n, generator=gen), 0

    def next_idx():
        nonlocal perm, k
        if k == spe:
            perm, k = torch.randperm(n, generator=gen), 0
        k += 1
        return perm[(k - 1) * a.batch_size:k * a.batch_size]

    for _ in range(a.warmup):
        tr(next_idx())
    rates = []
    for _ in range(a.windows):
        t0 = time.perf_counter()
        for _ in range(a.bench_steps):
            loss, _ = tr(next_idx())
        rates.append(a.bench_steps * a.batch_size / (time.perf_counter() - t0))
    med = statistics.median(rates)
    print("window samples/s: " + " ".join(f"{r:.0f}" for r in rates))
    print(f"RESULT threads={torch.get_num_threads()} median_samples_per_s={med:.1f} min={min(rates):.1f} "
          f"max={max(rates):.1f} step_ms={1e3 * a.batch_size / med:.2f} last_loss={loss:.4f}")


def train(a, xs, y):
    n = xs[0].shape[0]
    spe = n // a.batch_size
    total = spe * a.epochs
    tr = Trainer(a, xs, y, total)
    gen = torch.Generator().manual_seed(a.seed)
    loss_desc = "full" if a.loss == "full" else f"hybrid (full + {a.lam:g} x CE)"
    print(f"torch {torch.__version__}: {n} rows, {spe} steps/epoch, {total} steps, loss {loss_desc}, "
          f"threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    t_first = None          # end of the first epoch (or of the first 5 steps with one epoch)
    for epoch in range(a.epochs):
        perm = torch.randperm(n, generator=gen)
        run = 0.0
        for s in range(spe):
            loss, lr = tr(perm[s * a.batch_size:(s + 1) * a.batch_size])
            run += loss
            if a.epochs == 1 and tr.step == 5:
                t_first = (time.perf_counter(), tr.step)
        dt = time.perf_counter() - t0
        if epoch == 0 and a.epochs > 1:
            t_first = (time.perf_counter(), tr.step)
        print(f"epoch {epoch + 1}/{a.epochs} loss {run / spe:.4f} logit_scale "
              f"{tr.model.logit_t.exp().item():.2f} lr {lr:.2e} {tr.step * a.batch_size / dt:.0f} "
              f"samples/s", flush=True)
    t1 = time.perf_counter()
    train_s = t1 - t0
    if t_first and tr.step > t_first[1]:
        print(f"samples/s: {(tr.step - t_first[1]) * a.batch_size / (t1 - t_first[0]):.1f} "
              f"({1e3 * (t1 - t_first[0]) / (tr.step - t_first[1]):.1f} ms a step, steady state)")
    return tr.model, train_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True,
                    help="dataset root with train/ and test/ (with --bench-steps: one split's directory)")
    ap.add_argument("--out", help="output root: OUT/train, OUT/test (not with --bench-steps)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loss", choices=("full", "hybrid"), default="full")
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0,
                    help="weight of the head's cross-entropy with --loss hybrid (hcl's default 1)")
    ap.add_argument("--bench-steps", type=int, default=0, help="timing mode: steps per timed window")
    ap.add_argument("--windows", type=int, default=5, help="timing mode: timed windows")
    ap.add_argument("--warmup", type=int, default=5, help="timing mode: untimed steps first")
    a = ap.parse_args()
    if not a.bench_steps and not a.out:
        ap.error("--out is needed (or --bench-steps N for the timing mode)")
    torch_ref.set_threads(a.threads)

    if a.bench_steps:
        xs, y = load_split(a.data)
        bench(a, xs, y)
        return
    xtr, ytr = load_split(os.path.join(a.data, "train"))
    xte, yte = load_split(os.path.join(a.data, "test"))
    model, train_s = train(a, xtr, ytr)
    for split, xs, y in (("train", xtr, ytr), ("test", xte, yte)):
        zs, fused = embed(model, xs)
        write_embeddings(os.path.join(a.out, split), zs, fused, y)
    print(f"trained in {train_s:.1f} s; wrote {a.out}/train and {a.out}/test", flush=True)


if __name__ == "__main__":
    main()
