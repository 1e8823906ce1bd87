#!/usr/bin/python3
"""The conv encoder (common/conv.h, through the conv_dump driver) against PyTorch: the same
random input x (B, H, W, C), weights, biases and dfeat; torch builds Conv2d(3, padding 1) -> ReLU
-> MaxPool2d(2) per stage and the mean over H, W on x.permute(0, 3, 1, 2), then backpropagates
dfeat.

Tolerances (float32 on both sides, different summation orders), per tensor:
  feat       max |c - t| <= 1e-5 * max |t|
  dw, db     max |c - t| <= 1e-4 * max |t|
A gradient off by a factor of 2 fails by 4 orders of magnitude."""
import os
import subprocess
import sys
import tempfile

import numpy as np

src = os.environ.get("HCL_SRC", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
build = os.environ.get("HCL_BUILD", os.path.join(src, "build"))
try:
    import torch
except ImportError as e:
    print(f"SKIP conv encoder comparison: {e} (install python3-torch)")
    sys.exit(77)
torch.set_num_threads(1)

# (B, H, W, C, chans): the unit test's net, an odd size (7 -> 3 -> 1), an MNIST-like one, three stages
CASES = [(3, 8, 8, 2, [3, 4]), (4, 7, 7, 3, [3, 5]), (16, 28, 28, 1, [16, 32]), (5, 20, 18, 3, [8, 8, 12])]


def run_case(B, H, W, C, chans):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([os.path.join(build, "conv_dump"), d, str(B), str(H), str(W), str(C),
                        ",".join(map(str, chans))], check=True)
        ld = lambda name: torch.from_numpy(np.load(os.path.join(d, name + ".npy")).astype(np.float32))
        x = ld("x").reshape(B, H, W, C).permute(0, 3, 1, 2)
        layers, cin = [], C
        for s, co in enumerate(chans):
            conv = torch.nn.Conv2d(cin, co, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(ld(f"w{s}").reshape(co, cin, 3, 3))
                conv.bias.copy_(ld(f"b{s}"))
            layers += [conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            cin = co
        net = torch.nn.Sequential(*layers)
        feat = net(x).mean(dim=(2, 3))
        feat.backward(ld("dfeat").reshape(B, chans[-1]))
        checks = [("feat", ld("feat").reshape(B, chans[-1]), feat.detach(), 1e-5)]
        for s in range(len(chans)):
            conv = layers[3 * s]
            checks.append((f"dw{s}", ld(f"dw{s}").reshape(conv.weight.shape), conv.weight.grad, 1e-4))
            checks.append((f"db{s}", ld(f"db{s}"), conv.bias.grad, 1e-4))
        bad = 0
        for name, c, t, tol in checks:
            err = (c - t).abs().max().item()
            scale = t.abs().max().item()
            ok = err <= tol * scale
            bad += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {B}x{H}x{W}x{C} {chans} {name}: max diff {err:.3g}, "
                  f"{err / scale if scale else 0:.3g} of max |torch| {scale:.3g} (tolerance {tol:g})")
        return bad


bad = sum(run_case(*c) for c in CASES)
print(f"test_conv_torch: {bad} tensors off")
sys.exit(1 if bad else 0)
