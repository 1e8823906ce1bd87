"""The PyTorch peer (../shared/bench/torch_ref.py: W1's model, full-graph loss and AdamW) at a large
global batch: one process, its full-batch logits (N x N per pair, as the peer computes them).
Runs `--steps` steps after one warm-up step and prints one line:
    bigbatch N=<n> ok step_s=<median seconds> peak_rss_mb=<VmHWM>
or, when it does not fit under the address-space limit (--limit-gb, RLIMIT_AS: an allocation
fails instead of the machine swapping or the kernel's OOM killer picking a process),
    bigbatch N=<n> out_of_memory peak_rss_mb=<VmHWM>
Usage: /usr/bin/python3 bench/torch_bigbatch.py --batch N [--steps 2] [--threads 1] [--autocast bf16]
       [--limit-gb 20]"""
import argparse
import os
import resource
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--autocast", choices=["bf16"], default=None)
ap.add_argument("--limit-gb", type=float, default=20.0)
a = ap.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
os.environ["OMP_NUM_THREADS"] = str(a.threads)
limit = int(a.limit_gb * (1 << 30))
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"))
import torch  # noqa: E402
import torch_ref as ref  # noqa: E402


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


ref.set_threads(a.threads)
if a.autocast:
    ref.AUTOCAST = torch.bfloat16
try:
    model, opt = ref.build(0)
    views = ref.make_data(nbatches=1, batch=a.batch)[0]
    ref.train_step(model, opt, views)   # warm-up
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        ref.train_step(model, opt, views)
        times.append(time.perf_counter() - t0)
    print(f"bigbatch N={a.batch} ok step_s={statistics.median(times):.3f} peak_rss_mb={peak_mb():.0f}")
except (RuntimeError, MemoryError) as e:
    if "memory" not in str(e).lower() and not isinstance(e, MemoryError):
        raise
    print(f"bigbatch N={a.batch} out_of_memory peak_rss_mb={peak_mb():.0f}")
