#!/usr/bin/env bash
# The same seed and global batch give the same loss at each of the first 50 steps (within 1e-5
# relative) with one process and with 1, 2 and 4 workers under mpirun (4 oversubscribed on 2
# cores), for the full-graph, core-view, CLIP and SupCon losses, with missing views. Replica
# checksums are compared at every logged step (here every step); a mismatch aborts the run. The
# gradient sum through shared memory (default) and through MPI agree; --balance adaptive's uneven
# shares give the same losses.
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_dist_exact.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/hcl-data" synth "$tmp/data" --rows 600 --widths 24,16,8 --classes 5 --seed 9 --missing-rate 0.2 >/dev/null
common=(--data "$tmp/data" --hidden 32 --dim 16 --batch-size 50 --steps 50 --log-every 1 --seed 3 --threads 1 --lr 0.003)

for loss in full core clip supcon; do
    extra=()
    [ $loss = core ] && extra=(--core-view v1)
    "$B/hcl-train" "${common[@]}" "${extra[@]}" --loss $loss --run-dir "$tmp/$loss-single" 2>"$tmp/log" \
        || { cat "$tmp/log"; fail "$loss: single process"; }
    for np in 2 3 5; do
        timeout 300 mpirun --oversubscribe -np $np "$B/hcl-train" "${common[@]}" "${extra[@]}" --loss $loss \
            --run-dir "$tmp/$loss-np$np" 2>"$tmp/log" || { cat "$tmp/log"; fail "$loss: mpirun -np $np"; }
    done
    $PY - "$tmp" $loss <<'PY' || fail "$loss: losses differ"
import json, sys
tmp, loss = sys.argv[1], sys.argv[2]
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{tmp}/{loss}-{run}/metrics.jsonl")]
ref = losses("single")
assert len(ref) == 50, len(ref)
worst = 0.0
for run in ("np2", "np3", "np5"):
    got = losses(run)
    assert len(got) == 50, (run, len(got))
    for step, (a, b) in enumerate(zip(ref, got), 1):
        rel = abs(a - b) / abs(a)
        worst = max(worst, rel)
        assert rel <= 1e-5, f"{loss} {run} step {step}: {b!r} vs single {a!r} (rel {rel:.2e})"
print(f"{loss}: 50 steps agree for 1 process and 1, 2, 4 workers (worst rel {worst:.1e}); "
      f"loss {ref[0]:.4f} -> {ref[-1]:.4f}")
PY
done
# The optimizers with 2 workers: SGD with clipping (each worker updates its slice of the one shared
# copy of the parameters, scaled by the norm summed over the slices) and LARS (whole tensors: every
# worker updates all of its own replica), 50 losses within 1e-5 of one process.
for opt in "sgd --clip-norm 0.5 --momentum 0.9 --nesterov 1" "lars --lr 0.5"; do
    name=${opt%% *}
    "$B/hcl-train" "${common[@]}" --loss full --optimizer $opt --run-dir "$tmp/opt-$name-single" 2>"$tmp/log" \
        || { cat "$tmp/log"; fail "--optimizer $name: single process"; }
    timeout 300 mpirun --oversubscribe -np 3 "$B/hcl-train" "${common[@]}" --loss full --optimizer $opt \
        --run-dir "$tmp/opt-$name-np3" 2>"$tmp/log" || { cat "$tmp/log"; fail "--optimizer $name: 2 workers"; }
    $PY - "$tmp/opt-$name-single/metrics.jsonl" "$tmp/opt-$name-np3/metrics.jsonl" $name <<'PY' || fail "--optimizer $name: losses differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 50
worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
gn = max(abs(x["grad_norm"] - y["grad_norm"]) / x["grad_norm"] for x, y in zip(a, b))
assert worst <= 1e-5 and gn <= 1e-4, (worst, gn)
print(f"--optimizer {sys.argv[3]}: 50 losses of 2 workers agree with one process (worst rel {worst:.1e}; "
      f"gradient norms {gn:.1e}); loss {a[0]['loss']:.4f} -> {a[-1]['loss']:.4f}")
PY
done
# --data-plane direct: the workers read their rows from the files and get the same batches,
# so the losses (training and validation) are the same bits as with the coordinator's data plane.
# The default, auto, is direct here (every worker on rank 0's host): its start line says so.
"$B/hcl-data" synth "$tmp/val" --rows 200 --widths 24,16,8 --classes 5 --seed 9 --split 1 --missing-rate 0.2 >/dev/null
for loss in full supcon; do
    for plane in coordinator direct auto; do
        pf=(--data-plane $plane)
        [ $plane = auto ] && pf=()   # the default
        timeout 300 mpirun --oversubscribe -np 3 "$B/hcl-train" "${common[@]}" --loss $loss --val-data "$tmp/val" \
            "${pf[@]}" --run-dir "$tmp/plane-$loss-$plane" 2>"$tmp/log" || { cat "$tmp/log"; fail "$loss: --data-plane $plane"; }
        want=$([ $plane = coordinator ] && echo "data plane coordinator: rows sent" || echo "data plane direct: they read their rows")
        grep -q "2 workers: ranks 1-2 on $(hostname) ($want)" "$tmp/log" || { cat "$tmp/log"; fail "--data-plane $plane: the start line does not say '$want'"; }
    done
    $PY - "$tmp/plane-$loss-direct/metrics.jsonl" "$tmp/plane-$loss-auto/metrics.jsonl" <<'PY' || fail "$loss: auto differs from direct"
import json, sys
a = [(r["loss"], r.get("val_loss")) for r in map(json.loads, open(sys.argv[1]))]
b = [(r["loss"], r.get("val_loss")) for r in map(json.loads, open(sys.argv[2]))]
assert len(a) == 50 and a == b
PY
    $PY - "$tmp/plane-$loss-coordinator/metrics.jsonl" "$tmp/plane-$loss-direct/metrics.jsonl" <<'PY' || fail "$loss: data planes differ"
import json, sys
a = [(r["loss"], r.get("val_loss")) for r in map(json.loads, open(sys.argv[1]))]
b = [(r["loss"], r.get("val_loss")) for r in map(json.loads, open(sys.argv[2]))]
assert len(a) == 50 and a == b, next((i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y)
PY
    echo "$loss: --data-plane direct (and auto, direct on one host) gives the coordinator plane's 50 losses and validation losses bit for bit"
done
# --loss-memory: with a batch whose loss is tiled (2 workers x 2,048 rows against 4,096 columns,
# 3 pairs: 100 MB of logits), the default keeps pass 1's logits for pass 2 (the debug log says so)
# and --loss-memory 0 computes them again: the same losses bit for bit.
"$B/hcl-data" synth "$tmp/wide" --rows 4096 --widths 16,16,8 --seed 4 >/dev/null
for lm in 0 512; do
    timeout 300 mpirun --oversubscribe -np 3 "$B/hcl-train" --data "$tmp/wide" --hidden 32 --dim 16 --loss full \
        --batch-size 4096 --steps 4 --log-every 1 --threads 1 --loss-memory $lm --log-level debug \
        --run-dir "$tmp/lm-$lm" 2>"$tmp/log" || { cat "$tmp/log"; fail "--loss-memory $lm"; }
    kept=$(grep -c "the loss keeps its logits between its passes" "$tmp/log" || true)
    [ "$lm" = 0 ] && [ "$kept" != 0 ] && fail "--loss-memory 0 kept the logits"
    [ "$lm" = 512 ] && [ "$kept" != 2 ] && fail "--loss-memory 512: $kept of 2 workers kept the logits"
done
$PY - "$tmp/lm-0/metrics.jsonl" "$tmp/lm-512/metrics.jsonl" <<'PY' || fail "--loss-memory changes the losses"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == 4 and a == b, (a, b)
PY
echo "--loss-memory: the logits kept between the loss's passes give the recomputed ones' 4 losses bit for bit"
# --grad-allreduce mpi (what workers on several nodes use) against the default shared-memory sum:
# the same losses within 1e-5 for 4 workers (the float sums are in another order).
timeout 300 mpirun --oversubscribe -np 5 "$B/hcl-train" "${common[@]}" --loss full --grad-allreduce mpi \
    --run-dir "$tmp/full-np5-mpi" 2>"$tmp/log" || { cat "$tmp/log"; fail "--grad-allreduce mpi"; }
$PY - "$tmp/full-np5/metrics.jsonl" "$tmp/full-np5-mpi/metrics.jsonl" <<'PY' || fail "--grad-allreduce mpi differs"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 50
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
assert worst <= 1e-5, worst
print(f"--grad-allreduce mpi and shm: 50 losses agree with 4 workers (worst rel {worst:.1e})")
PY
# --balance adaptive with one worker made slower (HCL_INJECT_SLOW: 300 us more per own row in its
# encode): rank 0 moves rows away from it (the shares in metrics.jsonl: at least half the even
# share, at most 1.5 times), the replicas stay identical (checked every step) and the losses
# agree with one process within 1e-5 as for the even split. 2 workers with the coordinator's data
# plane, 3 with --data-plane direct.
for cfg in "2 0 coordinator" "3 1 direct"; do
    read -r nw slow plane <<<"$cfg"
    HCL_INJECT_SLOW=$slow:300 timeout 300 mpirun --oversubscribe -np $((nw + 1)) -x HCL_INJECT_SLOW "$B/hcl-train" \
        "${common[@]}" --loss full --balance adaptive --data-plane $plane --run-dir "$tmp/balance-$nw" 2>"$tmp/log" \
        || { cat "$tmp/log"; fail "--balance adaptive, $nw workers"; }
    $PY - "$tmp/full-single/metrics.jsonl" "$tmp/balance-$nw/metrics.jsonl" $nw $slow $plane <<'PY' || fail "--balance adaptive, $nw workers"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
nw, slow, plane = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
assert len(a) == len(b) == 50
worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
assert worst <= 1e-5, worst
even = 50 // nw
shares = [l["shares"] for l in b]
assert len(shares[0]) == nw and max(shares[0]) - min(shares[0]) <= 1, shares[0]
hi = (50 + nw - 1) // nw * 3 // 2
assert all(sum(s) == 50 and even // 2 <= min(s) and max(s) <= hi for s in shares), shares
assert all(s[slow] <= even * 2 // 3 and s[slow] == min(s) for s in shares[5:]), shares
print(f"--balance adaptive, {nw} workers, {plane} data plane, worker {slow} slowed: shares {shares[0]} -> "
      f"{shares[-1]}, 50 losses agree with one process (worst rel {worst:.1e})")
PY
done
echo "test_dist_exact: ok"
