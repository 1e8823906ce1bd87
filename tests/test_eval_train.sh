#!/usr/bin/env bash
# Evaluation during and after training, under mpirun: --eval-every logs kNN, retrieval,
# alignment and uniformity; the end of the run logs the probes too (hcl-eval on the final
# checkpoint). hcl-embed agrees with the embeddings computed inside training: the validation
# loss the workers logged at step S equals the full-graph loss of hcl-embed's embeddings of the
# same rows from checkpoint S (numpy), within 1e-5 relative.
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_eval_train.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/hcl-data" synth "$tmp/train" --rows 2048 --widths 48,32,16 --classes 6 --seed 3 --missing-rate 0.1 >/dev/null
"$B/hcl-data" synth "$tmp/val" --rows 1024 --widths 48,32,16 --classes 6 --seed 3 --split 1 --missing-rate 0.1 >/dev/null
mpirun --oversubscribe -np 3 "$B/hcl-train" --data "$tmp/train" --val-data "$tmp/val" --run-dir "$tmp/run" \
    --hidden 64 --dim 16 --batch-size 128 --steps 60 --log-every 20 --checkpoint-every 20 --eval-every 20 \
    --eval-rows 512 --threads 1 --lr 0.003 2>"$tmp/log" || { cat "$tmp/log"; fail "training failed"; }
$PY - "$tmp/run/metrics.jsonl" <<'PY' || fail "evaluation lines"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if "eval" in r]
assert [r["step"] for r in ev] == [20, 40, 60], [r["step"] for r in ev]
e = ev[-1]["eval"]
assert e["rows"] == 512
for k in ("knn_v0", "knn_fused"):
    assert 0.5 < e[k] <= 1.0, (k, e[k])
assert set(e["retrieval"]) == {"v0>v1", "v1>v0", "v0>v2", "v2>v0", "v1>v2", "v2>v1"}, e["retrieval"].keys()
assert set(e["alignment"]) == {"v0:v1", "v0:v2", "v1:v2"} and set(e["uniformity"]) == {"v0", "v1", "v2"}
assert ev[-1]["eval"]["retrieval"]["v0>v1"]["r10"] > ev[0]["eval"]["retrieval"]["v0>v1"]["r10"] * 0.9
fin = [r for r in rows if "final_eval" in r]
assert len(fin) == 1 and fin[0]["step"] == 60, fin
f = fin[0]["final_eval"]
assert f["probe"]["concat"]["accuracy"] > 0.5, f["probe"]["concat"]
print(f"eval at 20/40/60: knn_fused {[round(r['eval']['knn_fused'], 3) for r in ev]}; "
      f"final probe on concat {f['probe']['concat']['accuracy']:.3f}")
PY

"$B/hcl-embed" --checkpoint "$tmp/run/checkpoints/step-00000040" --data "$tmp/val" --out "$tmp/emb" >/dev/null \
    || fail "hcl-embed"
$PY - "$tmp/run" "$tmp/emb" "$tmp/val" <<'PY' || fail "hcl-embed disagrees with training"
import json, sys
import numpy as np
run, emb, val = sys.argv[1:]
sys.path.insert(0, ".")
logged = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
want = [r["val_loss"] for r in logged if r.get("step") == 40 and "val_loss" in r][0]
# the logit scale of checkpoint 40, from its model.safetensors (standard library + numpy)
import struct
raw = open(f"{run}/checkpoints/step-00000040/model.safetensors", "rb").read()
(h,) = struct.unpack("<Q", raw[:8]); hdr = json.loads(raw[8:8 + h])
b, e = hdr["logit_t"]["data_offsets"]
s = float(np.exp(np.frombuffer(raw[8 + h + b:8 + h + e], dtype=np.float32)[0]))
views = ["v0", "v1", "v2"]
z = {v: np.load(f"{emb}/{v}.npy").astype(np.float64) for v in views}
mask = np.load(f"{val}/mask.npy").astype(bool)
def lse(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)
losses = []
for k in range(4):                       # the 4 validation batches of 128 rows, file order
    rows = slice(128 * k, 128 * (k + 1))
    pair = []
    for i in range(3):
        for j in range(i + 1, 3):
            keep = mask[rows, i] & mask[rows, j]
            U, V = z[views[i]][rows][keep], z[views[j]][rows][keep]
            L = s * U @ V.T
            d = np.diag(L)
            pair.append(((lse(L, 1) - d).mean() + (lse(L, 0) - d).mean()) / 2)
    losses.append(np.mean(pair))
got = float(np.mean(losses))
assert abs(got - want) <= 1e-5 * abs(want), (got, want)
print(f"hcl-embed of checkpoint 40: validation loss {got:.7f}; the workers logged {want:.7f}")
PY
echo "test_eval_train: ok"
