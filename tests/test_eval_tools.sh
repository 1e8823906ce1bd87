#!/usr/bin/env bash
# test_eval_tools: hcl-embed and hcl-eval end to end on small synthetic data.
#   - a model.safetensors written from numpy (random 48/32/16 -> 64 -> 16 ReLU encoders);
#   - hcl-embed: shapes, unit norms, equality with a numpy re-implementation of the encoder
#     (1e-5), --features (the hidden activations), fused (normalised mean of present views),
#     missing views (zero rows, excluded from fused), labels/mask copied, the three ways to name
#     a checkpoint (file, checkpoint directory, run directory via checkpoints/latest), a damaged
#     checkpoint refused by its state.pb checksum (a model file alone taken as it is), and the
#     one-line error (exit 2) on a width or view-name mismatch;
#   - hcl-eval: checkpoint mode and features mode (--json parsed by python) give the same
#     numbers on the same embeddings; every key is there; a probe on informative features scores
#     far above chance; --raw probes the raw views; usage errors exit 2 with one line.
#   HCL_BUILD=build-eval bash tests/test_eval_tools.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
HCL_BUILD=${HCL_BUILD:-$HCL_SRC/build}
case $HCL_BUILD in /*) ;; *) HCL_BUILD=$PWD/$HCL_BUILD ;; esac
py=/usr/bin/python3
for t in hcl-data hcl-embed hcl-eval; do
    [ -x "$HCL_BUILD/$t" ] || { echo "test_eval_tools: FAIL: $HCL_BUILD/$t not built" >&2; exit 1; }
done
data=$HCL_BUILD/hcl-data embed=$HCL_BUILD/hcl-embed evl=$HCL_BUILD/hcl-eval

tmp=$(mktemp -d /tmp/test_eval_tools.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_eval_tools: FAIL: $*" >&2; exit 1; }
cd "$tmp"
export OPENBLAS_NUM_THREADS=2

# ---- data: train/test of one distribution, a set with missing views, a mismatched one ------
"$data" synth train --rows 1500 --widths 48,32,16 --classes 5 --seed 3 >/dev/null
"$data" synth test --rows 600 --widths 48,32,16 --classes 5 --seed 3 --split 1 >/dev/null
"$data" synth miss --rows 400 --widths 48,32,16 --classes 5 --seed 3 --split 2 \
    --missing-rate 0.3 >/dev/null
"$data" synth bad --rows 50 --widths 48,30,16 --classes 5 --seed 3 >/dev/null

# ---- a model.safetensors from numpy (the layout of common/model.c and model_io.c) ----------
mkdir -p run/checkpoints/step-00000100
"$py" - run/checkpoints/step-00000100/model.safetensors <<'EOF'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(0)
views, widths, hidden, dim = ["v0", "v1", "v2"], [48, 32, 16], [64], 16
tensors = []
for v, w in zip(views, widths):
    dims = [w] + hidden + [dim]
    for k in range(len(dims) - 1):
        b = 1 / np.sqrt(dims[k])
        tensors.append((f"encoder.{v}.{k}.weight", rng.uniform(-b, b, (dims[k + 1], dims[k]))))
        tensors.append((f"encoder.{v}.{k}.bias", rng.uniform(-b, b, (dims[k + 1],))))
tensors.append(("logit_t", np.array([2.65926])))
meta = {"format": "hcl-model", "version": "1", "views": ",".join(views),
        "in_widths": ",".join(map(str, widths)), "hidden": ",".join(map(str, hidden)),
        "dim": str(dim), "act": "relu", "layernorm": "0", "nclasses": "0", "t_init": "2.65926"}
header, blobs, off = {"__metadata__": meta}, [], 0
for name, a in tensors:
    raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
EOF
# its state.pb (proto/checkpoint.proto, encoded by hand): the size and CRC-32C of the model file
"$py" - run/checkpoints/step-00000100 "$HCL_SRC/tests" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2])
from crc32c import crc32c     # tests/crc32c.py
from state_pb import encode   # tests/state_pb.py: [field, wire type, value] on the wire
model = open(os.path.join(sys.argv[1], "model.safetensors"), "rb").read()
filesum = encode([[1, 2, b"model.safetensors"], [2, 0, len(model)], [3, 0, crc32c(model)]])
open(os.path.join(sys.argv[1], "state.pb"), "wb").write(encode([[1, 0, 1], [19, 2, filesum]]))
EOF
printf 'step-00000100\n' > run/checkpoints/latest
ckdir=run/checkpoints/step-00000100
ck=$ckdir/model.safetensors

# ---- hcl-embed: outputs equal the numpy encoder ------------------------------------------
"$embed" --checkpoint "$ck" --data test --out e_file --features >/dev/null ||
    fail "hcl-embed on a model file"
"$embed" --checkpoint "$ckdir" --data test --out e_dir >/dev/null ||
    fail "hcl-embed on a checkpoint directory"
"$embed" --checkpoint run --data test --out e_run >/dev/null || fail "hcl-embed on a run directory"
"$embed" --checkpoint run/checkpoints/latest --data test --out e_latest >/dev/null ||
    fail "hcl-embed on run/checkpoints/latest (the checkpoint it names)"
"$embed" --checkpoint run --data miss --out e_miss --threads 1 --batch-size 37 >/dev/null ||
    fail "hcl-embed with missing views"
for f in v0.npy v1.npy v2.npy fused.npy labels.npy; do
    cmp -s "e_file/$f" "e_dir/$f" && cmp -s "e_file/$f" "e_run/$f" && cmp -s "e_file/$f" "e_latest/$f" ||
        fail "$f differs between the four ways of naming the checkpoint"
done
[ -e e_dir/v0.features.npy ] && fail "features written without --features"
[ "$(grep -c '^view ' e_file/manifest.txt)" = 3 ] || fail "manifest: $(cat e_file/manifest.txt)"
grep -qx 'view fused' e_file/manifest.txt && fail "manifest lists fused"

"$py" - "$ck" <<'EOF' || fail "numpy check of hcl-embed output"
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
def t(name):
    e = hdr[name]
    b, end = e["data_offsets"]
    return np.frombuffer(raw[8 + n + b:8 + n + end], "<f4").reshape(e["shape"]).astype(np.float64)
def encode(v, x):
    h = np.maximum(x @ t(f"encoder.{v}.0.weight").T + t(f"encoder.{v}.0.bias"), 0)
    z = h @ t(f"encoder.{v}.1.weight").T + t(f"encoder.{v}.1.bias")
    return h, z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
def normed(z):
    n = np.linalg.norm(z, axis=1, keepdims=True)
    return np.where(n > 0, z / np.where(n > 0, n, 1), 0)
for d, out, feats in (("test", "e_file", True), ("miss", "e_miss", False)):
    mask = np.load(f"{d}/mask.npy").astype(bool) if d == "miss" else np.ones((600, 3), bool)
    N = mask.shape[0]
    zs = []
    for i, v in enumerate(["v0", "v1", "v2"]):
        x = np.load(f"{d}/{v}.npy").astype(np.float64)
        h, want = encode(v, x)
        got = np.load(f"{out}/{v}.npy")
        assert got.dtype == np.float32 and got.shape == (N, 16), (v, got.dtype, got.shape)
        assert np.abs(got[mask[:, i]] - want[mask[:, i]]).max() < 1e-5, \
            (d, v, np.abs(got[mask[:, i]] - want[mask[:, i]]).max())
        assert np.all(got[~mask[:, i]] == 0), f"{d} {v}: absent rows are not zero"
        nrm = np.linalg.norm(got[mask[:, i]], axis=1)
        assert np.abs(nrm - 1).max() < 1e-5, f"{d} {v}: norms {nrm.min()}..{nrm.max()}"
        if feats:
            f = np.load(f"{out}/{v}.features.npy")
            assert f.shape == (N, 64) and np.abs(f - h).max() < 1e-4, (v, np.abs(f - h).max())
        zs.append(np.where(mask[:, i:i + 1], want, 0))
    fused_want = normed(sum(zs) / np.maximum(mask.sum(1, keepdims=True), 1))
    fused = np.load(f"{out}/fused.npy")
    assert fused.shape == (N, 16) and np.abs(fused - fused_want).max() < 1e-5, \
        (d, np.abs(fused - fused_want).max())
    y = np.load(f"{out}/labels.npy")
    assert y.dtype == np.int64 and np.array_equal(y, np.load(f"{d}/labels.npy")), d
    if d == "miss":
        m = np.load(f"{out}/mask.npy")
        assert m.shape == (N, 3) and np.array_equal(m.astype(bool), mask), "mask not copied"
        assert (~mask).any() and mask.any(1).all(), "the missing-view case has no missing view"
    else:
        import os
        assert not os.path.exists(f"{out}/mask.npy"), "mask.npy written without a mask"
EOF

# ---- hcl-embed: mismatches are one line, exit 2 --------------------------------------------
set +e
msg=$("$embed" --checkpoint "$ck" --data bad --out e_bad 2>&1); rc=$?
set -e
[ "$rc" = 2 ] || fail "width mismatch: exit $rc, want 2 ($msg)"
[ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "width mismatch: not one line: $msg"
case $msg in *"'v1'"*30*32*) ;; *) fail "width mismatch message lacks the view and widths: $msg" ;; esac
mkdir renamed && cp train/v1.npy train/v2.npy train/labels.npy renamed/
cp train/v0.npy renamed/w0.npy
printf 'view w0\nview v1\nview v2\n' > renamed/manifest.txt
set +e
msg=$("$embed" --checkpoint "$ck" --data renamed --out e_bad 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && case $msg in *v0*) true ;; *) false ;; esac ||
    fail "view name mismatch: exit $rc, message: $msg"

# ---- a damaged checkpoint is refused, however it is named; a model file alone is taken as it is
cp "$ck" model.copy
"$py" -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=0x10; open(p,'wb').write(b)" "$ck"
for c in "$ck" "$ckdir" run; do
    set +e
    msg=$("$embed" --checkpoint "$c" --data test --out e_bad 2>&1); rc=$?
    set -e
    [ "$rc" = 2 ] && [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] && case $msg in *model.safetensors*checksum*) true ;; *) false ;; esac ||
        fail "damaged checkpoint named as $c: exit $rc, message: $msg"
done
mkdir alone && cp "$ck" alone/model.safetensors
"$embed" --checkpoint alone/model.safetensors --data test --out e_alone >/dev/null ||
    fail "a model file without state.pb"
cp model.copy "$ck"

for args in "" "--checkpoint nowhere --data test --out x" "--data test --out x" "--bogus 1"; do
    set +e
    # shellcheck disable=SC2086
    msg=$("$embed" $args 2>&1); rc=$?
    set -e
    [ "$rc" = 2 ] && [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] ||
        fail "hcl-embed $args: exit $rc, want 2 and one line: $msg"
done

# ---- hcl-eval: checkpoint mode and features mode agree ---------------------------------------
"$embed" --checkpoint run --data train --out e_train >/dev/null
"$evl" --checkpoint run --train train --test test --json > ck.json || fail "hcl-eval --checkpoint"
"$evl" --features-train e_train --features-test e_run --json > ft.json || fail "hcl-eval features"
"$evl" --checkpoint run --train train --test test > table.txt || fail "hcl-eval table"
grep -q '^concat ' table.txt && grep -q 'v0 -> v2' table.txt || fail "table: $(cat table.txt)"
"$py" - ck.json ft.json <<'EOF' || fail "hcl-eval JSON"
import json, sys
ck, ft = (json.load(open(p)) for p in sys.argv[1:3])
views = ["v0", "v1", "v2"]
reps = views + ["concat", "fused"]
for d in (ck, ft):
    assert d["train_rows"] == 1500 and d["test_rows"] == 600 and d["classes"] == 5, d
    assert sorted(d["probe"]) == sorted(reps) and sorted(d["knn"]) == sorted(reps), d
    for r in reps:
        p = d["probe"][r]
        assert 0 <= p["accuracy"] <= 1 and 0 <= p["train_accuracy"] <= 1, p
        assert 1e-6 * 0.999 <= p["lambda"] <= 10 * 1.001, p
    assert len(d["retrieval"]) == 6 and "v2->v0" in d["retrieval"], d["retrieval"]
    assert all(set(x) >= {"r1", "r5", "r10"} for x in d["retrieval"].values())
    assert all(x["r1"] <= x["r5"] <= x["r10"] for x in d["retrieval"].values())
    assert sorted(d["alignment"]) == ["v0:v1", "v0:v2", "v1:v2"], d["alignment"]
    assert all(0 <= a <= 4 for a in d["alignment"].values())
    assert sorted(d["uniformity"]) == sorted(views + ["fused"]), d["uniformity"]
    assert all(-4 <= u <= 0 for u in d["uniformity"].values())
for key in ("probe", "knn", "retrieval", "alignment", "uniformity"):
    assert ck[key] == ft[key] if key != "probe" else all(
        ck[key][r]["accuracy"] == ft[key][r]["accuracy"] for r in reps), (key, ck[key], ft[key])
EOF

# ---- hcl-eval on informative features: far above chance ------------------------------------
"$py" - <<'EOF'
import os
import numpy as np
rng = np.random.default_rng(1)
mu = rng.normal(0, 1, (5, 16))
for split, n in (("f_train", 2000), ("f_test", 800)):
    os.makedirs(split)
    y = rng.integers(0, 5, n)
    for v in ("a", "b"):
        np.save(f"{split}/{v}.npy", (mu[y] + 0.6 * rng.normal(0, 1, (n, 16))).astype(np.float32))
    np.save(f"{split}/labels.npy", y.astype(np.int64))
    open(f"{split}/manifest.txt", "w").write("view a\nview b\n")
EOF
"$evl" --features-train f_train --features-test f_test --json > inf.json
"$evl" --raw --train train --test test --json --no-knn > raw.json
"$evl" --checkpoint run --train train --test test --raw --no-knn --no-retrieval --probe-on concat \
    --json > both.json || fail "hcl-eval --checkpoint --raw"
"$py" - inf.json raw.json both.json <<'EOF' || fail "probe/kNN on informative features"
import json, sys
inf, raw, both = (json.load(open(p)) for p in sys.argv[1:4])
assert sorted(both["probe"]) == ["concat", "raw"] and both["retrieval"] == {}, both
assert both["probe"]["raw"]["accuracy"] == raw["probe"]["raw"]["accuracy"], (both, raw)
assert inf["probe"]["concat"]["accuracy"] > 0.9, inf["probe"]
assert inf["probe"]["a"]["accuracy"] > 0.8 and inf["knn"]["fused"] > 0.8, inf
assert inf["retrieval"]["a->b"]["r10"] > inf["retrieval"]["a->b"]["r1"] > 0.0, inf["retrieval"]
assert list(raw["probe"]) == ["raw"] and raw["probe"]["raw"]["accuracy"] > 0.6, raw["probe"]
assert raw["knn"] == {} and raw["retrieval"] == {}, raw
EOF

# ---- hcl-eval usage errors: one line, exit 2 -------------------------------------------------
for args in "" "--features-train e_train" "--checkpoint run --train train" "--knn-k 0" \
    "--checkpoint run --train train --test bad" "--features-train e_train --features-test nowhere"; do
    set +e
    # shellcheck disable=SC2086
    msg=$("$evl" $args 2>&1); rc=$?
    set -e
    [ "$rc" = 2 ] && [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] ||
        fail "hcl-eval $args: exit $rc, want 2 and one line: $msg"
done
echo "test_eval_tools: ok"
