#!/usr/bin/env bash
# tools/hcl_safetensors.py against hcl-embed on every encoder kind: a tiny model of a conv view
# (uint8 8x6 images: an odd width the second pooling floors), a bag view (int32 ids, rows of
# padding only among them) and a dense mlp view, trained a few steps, then numpy alone on
# model.safetensors reproduces hcl-embed's embeddings and --features of the same data to 1e-5.
# Twice: ReLU, and GELU with LayerNorm and hidden layers after the bag. A metadata without
# `encoders` (files before per-view encoders) still reads as an mlp of `hidden`.
set -euo pipefail
B=${HCL_BUILD:-build}
SRC=${HCL_SRC:-.}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/hcl_stpy.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

$PY - "$tmp/data" <<'PY'
import os, sys
import numpy as np
d = sys.argv[1]
os.makedirs(d)
rng = np.random.default_rng(7)
n = 120
np.save(f"{d}/img.npy", rng.integers(0, 256, (n, 8 * 6 * 1), dtype=np.uint8))
ids = rng.integers(1, 30, (n, 7)).astype(np.int32)
ids[rng.random((n, 7)) < 0.3] = 0          # padding among the ids
ids[::17] = 0                                 # and rows of padding only: a zero front
np.save(f"{d}/words.npy", ids)
np.save(f"{d}/feat.npy", rng.standard_normal((n, 5)).astype(np.float32))
mask = (rng.random((n, 3)) > 0.1).astype(np.uint8)
mask[:, 0] |= mask.sum(axis=1) == 0           # every row has a view
np.save(f"{d}/mask.npy", mask)
with open(f"{d}/manifest.txt", "w") as f:
    f.write("view img image=8x6x1\nview words tokens vocab=30 pad=0\nview feat\n")
PY

check() {   # check NAME FLAGS...: train, embed with hcl-embed, compare with numpy
    local name=$1
    shift
    "$B/hcl-train" --data "$tmp/data" --dim 6 --steps 5 --batch-size 16 --checkpoint-every 5 --threads 1 \
        --encoder img=conv:4,6 --encoder feat=mlp:8 --hidden 8 "$@" --run-dir "$tmp/$name" \
        >"$tmp/$name.log" 2>&1 || {
        if grep -q "the conv encoder needs oneDNN" "$tmp/$name.log"; then
            echo "SKIP: this build has no oneDNN, so no conv encoder"
            exit 77
        fi
        cat "$tmp/$name.log"
        fail "$name: hcl-train"
    }
    "$B/hcl-embed" --checkpoint "$tmp/$name" --data "$tmp/data" --out "$tmp/$name-emb" \
        --features >"$tmp/$name.log" 2>&1 || { cat "$tmp/$name.log"; fail "$name: hcl-embed"; }
    $PY - "$SRC/tools" "$tmp/$name" "$tmp/data" "$tmp/$name-emb" "$name" <<'PY' || fail "$name: numpy differs from hcl-embed"
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import hcl_safetensors as hs
run, data, emb, name = sys.argv[2:]
latest = open(f"{run}/checkpoints/latest").read().strip()
tensors, meta = hs.load(f"{run}/checkpoints/{latest}/model.safetensors")
kinds = {v: s["kind"] for v, s in hs.encoders(meta).items()}
assert kinds == {"img": "conv", "words": "bag", "feat": "mlp"}, (meta.get("encoders"), kinds)
mask = np.load(f"{data}/mask.npy").astype(bool)
x = {"img": np.load(f"{data}/img.npy").astype(np.float32) / np.float32(255),
     "words": np.load(f"{data}/words.npy").astype(np.float32), "feat": np.load(f"{data}/feat.npy")}
worst = []
for i, v in enumerate(["img", "words", "feat"]):
    keep = mask[:, i]
    for feats, suffix in ((False, ""), (True, ".features")):
        got = np.load(f"{emb}/{v}{suffix}.npy")
        want = hs.embed(tensors, meta, v, x[v][keep], features=feats)
        assert got.shape[1] == want.shape[1], (v, suffix, got.shape, want.shape)
        assert not got[~keep].any(), f"{v}{suffix}: absent rows not zero"
        d = float(np.abs(got[keep] - want).max())
        assert d <= 1e-5, f"{v}{suffix}: max |hcl - numpy| {d:.2e}"
        worst.append(f"{v}{suffix} {d:.1e}")
# a file from before per-view encoders: no `encoders`, every view an mlp of `hidden`
old = {k: val for k, val in meta.items() if k != "encoders"}
d = float(np.abs(hs.embed(tensors, old, "feat", x["feat"]) - hs.embed(tensors, meta, "feat", x["feat"])).max())
assert d == 0.0 and hs.encoders(old)["img"] == {"kind": "mlp", "hidden": [8]}, (d, hs.encoders(old))
print(f"{name}: max |hcl-embed - hcl_safetensors.embed|: " + ", ".join(worst))
PY
}
check relu --encoder words=bag:5,7
check gelu_ln --encoder words=bag:5,7,3 --act gelu --layernorm 1
echo "test_safetensors_py: ok"
