#!/usr/bin/env bash
# hcl-eval's clustering scores (common/eval_cluster.h) against their references on the same
# arrays: scikit-learn's normalized_mutual_info_score and adjusted_rand_score, and scipy's
# linear_sum_assignment (the matched accuracy on the contingency table, and the minimum cost of
# random square matrices), within 1e-12; 60 labelings of 1 to 1,000 rows with 1 to 12 labels each
# side (equal, permuted, independent, one side a single cluster, all singletons). k-means on 4
# separated Gaussian blobs finds them (accuracy, NMI and ARI 1) with an inertia within 1e-6 of
# scikit-learn's KMeans(n_init=10). hcl-eval prints the three scores per representation.
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/hcl_eval_cluster.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
$PY -c "import sklearn, scipy" 2>/dev/null || { echo "SKIP: python3-sklearn or python3-scipy missing (scripts/setup installs them)"; exit 77; }

$PY - "$tmp" <<'PY'
import numpy as np, sys
tmp, rng = sys.argv[1], np.random.default_rng(5)
n, A, Bs, K = 1000, [], [], []
for i in range(60):
    m = [1, 2, 3, 17, 200, 1000][i % 6]
    ka, kb = int(rng.integers(1, 13)), int(rng.integers(1, 13))
    b = rng.integers(0, kb, m)
    kind = i % 5
    if kind == 0:   a, ka = b.copy(), kb                           # equal
    elif kind == 1: a, ka = rng.permutation(kb)[b], kb             # permuted
    elif kind == 2: a = rng.integers(0, ka, m)                     # independent
    elif kind == 3: a, ka = np.zeros(m, np.int64), 1               # a single cluster
    else:           a, ka = np.where(rng.random(m) < 0.7, b % ka, rng.integers(0, ka, m)), ka   # noisy
    pad = np.zeros(n - m, np.int64)
    A.append(np.concatenate([a, pad])[:n]); Bs.append(np.concatenate([b, pad])[:n]); K.append((ka, kb, m))
# the rows past m are padding: each labeling is written with its own length via a separate file set
np.save(f"{tmp}/meta.npy", np.array(K, np.int32))
np.save(f"{tmp}/allA.npy", np.array(A, np.int32)); np.save(f"{tmp}/allB.npy", np.array(Bs, np.int32))
costs = [rng.random((7, 7)) * 100 if i % 2 else rng.integers(0, 5, (7, 7)).astype(np.float64) for i in range(20)]
np.save(f"{tmp}/cost.npy", np.concatenate(costs))
centres = np.array([[8, 0, 0], [0, 8, 0], [0, 0, 8], [8, 8, 8]], np.float32)
y = rng.integers(0, 4, 600).astype(np.int32)
np.save(f"{tmp}/x.npy", (centres[y] + rng.normal(0, 1, (600, 3))).astype(np.float32))
np.save(f"{tmp}/y.npy", y)
PY
# one directory per labeling length (the program reads (m, n) arrays of one n)
$PY - "$tmp" <<'PY'
import numpy as np, os, shutil, sys
tmp = sys.argv[1]
meta, A, Bs = np.load(f"{tmp}/meta.npy"), np.load(f"{tmp}/allA.npy"), np.load(f"{tmp}/allB.npy")
for m in sorted(set(meta[:, 2])):
    d = f"{tmp}/n{m}"
    os.makedirs(d)
    idx = [i for i in range(len(meta)) if meta[i, 2] == m]
    np.save(f"{d}/a.npy", A[idx, :m]); np.save(f"{d}/b.npy", Bs[idx, :m]); np.save(f"{d}/k.npy", meta[idx, :2])
    np.save(f"{d}/index.npy", np.array(idx, np.int32))
    for f in ("cost.npy", "x.npy", "y.npy"):
        shutil.copy(f"{tmp}/{f}", d)
PY
for d in "$tmp"/n*; do
    "$B/test_eval_cluster" "$d" >"$d/out" || fail "test_eval_cluster $d"
done
$PY - "$tmp" <<'PY'
import glob, numpy as np, sys
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
tmp = sys.argv[1]
worst, checked = 0.0, 0
for d in sorted(glob.glob(f"{tmp}/n*")):
    a, b, k = np.load(f"{d}/a.npy"), np.load(f"{d}/b.npy"), np.load(f"{d}/k.npy")
    lines = [l.split() for l in open(f"{d}/out")]
    for l in (l for l in lines if l[0] == "labels"):
        i = int(l[1]); acc, nmi, ari = map(float, l[2:])
        c = np.zeros((k[i, 0], k[i, 1]))
        np.add.at(c, (a[i], b[i]), 1)
        r, s = linear_sum_assignment(-c)
        want = (c[r, s].sum() / a.shape[1], normalized_mutual_info_score(b[i], a[i]), adjusted_rand_score(b[i], a[i]))
        for name, got, w in zip(("accuracy", "NMI", "ARI"), (acc, nmi, ari), want):
            assert abs(got - w) <= 1e-12, f"{d} labeling {i}: {name} {got!r}, reference {w!r}"
            worst = max(worst, abs(got - w)); checked += 1
    cost = np.load(f"{d}/cost.npy"); s = cost.shape[1]
    for l in (l for l in lines if l[0] == "assign"):
        cm = cost[int(l[1]) * s:(int(l[1]) + 1) * s]
        r, c = linear_sum_assignment(cm)
        assert abs(float(l[2]) - cm[r, c].sum()) <= 1e-9, f"assignment {l[1]}: {l[2]} vs {cm[r, c].sum()}"
    km = [l for l in lines if l[0] == "kmeans"][0]
x, y = np.load(f"{tmp}/x.npy"), np.load(f"{tmp}/y.npy")
acc, nmi, ari, inertia = map(float, km[1:])
ref = KMeans(n_clusters=4, n_init=10, random_state=0).fit(x.astype(np.float64)).inertia_
assert acc == 1.0 and abs(nmi - 1) < 1e-12 and abs(ari - 1) < 1e-12, f"k-means on separated blobs: {km}"
assert abs(inertia - ref) <= 1e-6 * ref, f"k-means inertia {inertia} vs scikit-learn {ref}"
print(f"clustering scores: {checked} against scikit-learn/scipy, worst difference {worst:.1e}; "
      f"minimum-cost assignments equal scipy's; k-means on blobs: accuracy 1, inertia {inertia:.3f} = scikit-learn's {ref:.3f}")
PY
# hcl-eval's table and JSON carry the scores
"$B/hcl-data" synth "$tmp/tr" --rows 1200 --widths 12,6 --classes 3 --seed 2 >/dev/null
"$B/hcl-data" synth "$tmp/te" --rows 600 --widths 12,6 --classes 3 --seed 2 --split 1 >/dev/null
"$B/hcl-train" --data "$tmp/tr" --run-dir "$tmp/run" --steps 30 --batch-size 128 --hidden 16 --dim 8 --log-every 100 2>/dev/null
"$B/hcl-eval" --checkpoint "$tmp/run" --train "$tmp/tr" --test "$tmp/te" --json >"$tmp/eval.json"
$PY - "$tmp/eval.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["cluster"]
assert set(c) == {"v0", "v1", "concat", "fused"}, sorted(c)
for name, r in c.items():
    assert 1 / 3 <= r["accuracy"] <= 1 and -1 <= r["ari"] <= 1 and 0 <= r["nmi"] <= 1 and r["inertia"] > 0, (name, r)
print("hcl-eval: " + ", ".join(f"{k} acc {v['accuracy']:.3f} NMI {v['nmi']:.3f} ARI {v['ari']:.3f}" for k, v in c.items()))
PY
"$B/hcl-eval" --checkpoint "$tmp/run" --train "$tmp/tr" --test "$tmp/te" | grep -q "k-acc      NMI      ARI" || fail "table header"
echo "test_eval_cluster: ok"
