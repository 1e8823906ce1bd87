#!/usr/bin/env bash
# Storage (issue 19, part 4): a view in float16 and a view split over several .npy files train
# exactly as the same numbers stored as one float32 file: the losses bit for bit, in one process
# and with 2 workers reading their own rows (--data-plane direct). hcl-data inspect lists the
# files; a bad file of a view is one line and exit 2 from hcl-train.
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_storage.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/hcl-data" synth "$tmp/src" --rows 1024 --widths 32,16,8 --classes 4 --seed 7 --missing-rate 0.1 >/dev/null
# one: v0 rounded to float16 but stored as float32, v1 and v2 as they are, one file each;
# split: v0 as float16, v1 in 3 files (a glob) of 400, 400 and 224 rows, v2 in 2 files listed
$PY - "$tmp" <<'PY'
import numpy as np, os, shutil, sys
tmp = sys.argv[1]
src, one, split = (os.path.join(tmp, d) for d in ("src", "one", "split"))
for d in (one, split):
    os.makedirs(d)
    for f in ("labels.npy", "mask.npy"):
        shutil.copy(os.path.join(src, f), d)
v0, v1, v2 = (np.load(os.path.join(src, f"v{i}.npy")) for i in range(3))
h = v0.astype(np.float16)
np.save(os.path.join(one, "v0.npy"), h.astype(np.float32))
np.save(os.path.join(one, "v1.npy"), v1)
np.save(os.path.join(one, "v2.npy"), v2)
open(os.path.join(one, "manifest.txt"), "w").write("view v0\nview v1\nview v2\n")
np.save(os.path.join(split, "v0.npy"), h)
for k, (a, b) in enumerate(((0, 400), (400, 800), (800, 1024))):
    np.save(os.path.join(split, f"v1-part{k}.npy"), v1[a:b])
np.save(os.path.join(split, "v2-z.npy"), v2[:700])
np.save(os.path.join(split, "v2-a.npy"), v2[700:])
open(os.path.join(split, "manifest.txt"), "w").write(
    "view v0\nview v1 files=v1-part*.npy\nview v2 files=v2-z.npy,v2-a.npy   # in row order\n")
PY
"$B/hcl-data" inspect "$tmp/split" >"$tmp/inspect"
grep -q "^view     v0 .*dtype float16" "$tmp/inspect" && grep -q "^view     v1 .* files 3$" "$tmp/inspect" \
    && grep -q "^file     v2 .*rows 700-1023 .*v2-a.npy$" "$tmp/inspect" || { cat "$tmp/inspect"; fail "hcl-data inspect"; }
common=(--hidden 32 --dim 8 --batch-size 128 --steps 20 --log-every 1 --seed 3 --threads 1)
for d in one split; do
    "$B/hcl-train" --data "$tmp/$d" "${common[@]}" --run-dir "$tmp/run-$d" 2>"$tmp/$d.log" || { cat "$tmp/$d.log"; fail "$d"; }
    timeout 300 mpirun --oversubscribe -np 3 "$B/hcl-train" --data "$tmp/$d" "${common[@]}" --data-plane direct \
        --run-dir "$tmp/run2-$d" 2>"$tmp/$d-2.log" || { tail "$tmp/$d-2.log"; fail "$d, 2 workers"; }
done
$PY - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
def losses(run):
    return [r["loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "loss" in r and "step" in r]
a, b, a2, b2 = losses("run-one"), losses("run-split"), losses("run2-one"), losses("run2-split")
assert len(a) == len(b) == len(a2) == len(b2) == 20, (len(a), len(b), len(a2), len(b2))
assert a == b, "float16 and several files gave other losses than one float32 file (one process)"
assert a2 == b2, "float16 and several files gave other losses than one float32 file (2 workers, direct)"
print(f"storage: float16 and 3 + 2 files = one float32 file each, 20 losses bit for bit (one process; 2 "
      f"workers reading their own rows); loss {a[0]:.4f} -> {a[-1]:.4f}")
PY
# a file of another width: one line, exit 2
$PY -c "import numpy as np; np.save('$tmp/split/v1-part1.npy', np.zeros((400, 15), np.float32))"
rc=0
"$B/hcl-train" --data "$tmp/split" "${common[@]}" --run-dir "$tmp/bad" 2>"$tmp/bad.log" || rc=$?
[ $rc = 2 ] && [ "$(wc -l <"$tmp/bad.log")" = 1 ] && grep -q "v1-part1.npy: 15 columns but .*v1-part0.npy" "$tmp/bad.log" \
    || { cat "$tmp/bad.log"; fail "a file of another width: exit $rc"; }
echo "test_storage: ok"
