#!/usr/bin/env bash
# The same seed gives the same losses bit for bit as the stored reference run
# (tests/reference/runs.json, written by this script with --write at commit ec828ca, before the
# coordinator and the worker step were split into their rooms). Five runs of 12 steps cover one
# process and 2 workers under mpirun (shared-memory and MPI exchanges), the full-graph, core-view,
# CLIP, SupCon and hybrid losses, missing views, validation batches, AdamW, SGD and LARS: every
# logged loss, pair loss, SupCon/CE part, gradient norm, lr, logit scale and validation loss must
# equal the stored one exactly (metrics.jsonl prints doubles with 17 digits: they read back to
# the same bits). The runs use --matmul openblas, the engine of the reference (oneDNN's products
# agree to float rounding, not bit for bit: tests/test_matmul_engines.sh). Usage:
# test_reference.sh [--write]
set -euo pipefail
B=${HCL_BUILD:-build}
SRC=${HCL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
PY=/usr/bin/python3
REF="$SRC/tests/reference/runs.json"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_reference.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/hcl-data" synth "$tmp/train" --rows 400 --widths 20,12,8 --classes 4 --seed 5 --missing-rate 0.15 >/dev/null
"$B/hcl-data" synth "$tmp/val" --rows 120 --widths 20,12,8 --classes 4 --seed 5 --split 1 --missing-rate 0.15 >/dev/null
common=(--data "$tmp/train" --hidden 24 --dim 8 --batch-size 40 --steps 12 --log-every 1 --seed 11 --threads 1 --matmul openblas)
# name|ranks|flags
runs=(
  "full-single|1|--loss full --val-data $tmp/val"
  "full-2w-shm|3|--loss full --val-data $tmp/val --lr 0.003"
  "hybrid-2w-mpi|3|--loss hybrid --hybrid-base core --core-view v1 --grad-allreduce mpi --act gelu --layernorm 1"
  "supcon-single-sgd|1|--loss supcon --optimizer sgd --lr 0.05 --clip-norm 0.5 --nesterov 1"
  "clip-2w-lars|3|--loss clip --clip-views v0,v2 --optimizer lars --lr 0.5 --temperature 0.1 --data-plane direct"
)
for spec in "${runs[@]}"; do
    IFS='|' read -r name ranks flags <<<"$spec"
    # shellcheck disable=SC2206
    extra=($flags)
    if [ "$ranks" = 1 ]; then
        "$B/hcl-train" "${common[@]}" "${extra[@]}" --run-dir "$tmp/$name" 2>"$tmp/log" \
            || { cat "$tmp/log"; fail "$name"; }
    else
        timeout 300 mpirun --oversubscribe -np "$ranks" "$B/hcl-train" "${common[@]}" "${extra[@]}" \
            --run-dir "$tmp/$name" 2>"$tmp/log" || { cat "$tmp/log"; fail "$name"; }
    fi
done

mode=check
[ "${1:-}" = --write ] && mode=write
$PY - "$tmp" "$REF" "$mode" "${runs[@]}" <<'PY'
import json, sys
tmp, ref_path, mode, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
KEYS = ("loss", "pair_loss", "supcon", "ce", "lr", "logit_scale", "grad_norm", "val_loss")
got = {}
for spec in specs:
    name = spec.split("|")[0]
    rows = [json.loads(l) for l in open(f"{tmp}/{name}/metrics.jsonl") if '"loss"' in l]
    got[name] = [{k: r[k] for k in ("step",) + KEYS if k in r} for r in rows]
if mode == "write":
    json.dump(got, open(ref_path, "w"), indent=1, sort_keys=True)
    print(f"wrote {ref_path}: {', '.join(f'{k} ({len(v)} steps)' for k, v in got.items())}")
    sys.exit(0)
ref = json.load(open(ref_path))
bad = 0
for name, rows in ref.items():
    have = got.get(name, [])
    if len(have) != len(rows):
        print(f"{name}: {len(have)} logged steps, the reference has {len(rows)}")
        bad += 1
        continue
    for a, b in zip(rows, have):
        if a != b:
            diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
            print(f"{name} step {a['step']}: differs from the reference (reference, now): {diff}")
            bad += 1
            break
if bad:
    sys.exit(1)
print(f"the same bits as the reference run: {', '.join(f'{k} {len(v)} steps' for k, v in ref.items())}")
PY
