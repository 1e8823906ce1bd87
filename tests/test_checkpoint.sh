#!/usr/bin/env bash
# Checkpoints and resume: exact resume (bit for bit, one process and 2 workers), elastic resume
# (1 worker -> 2 -> 1), kill -9 while checkpoints are written, damaged files caught and fallen
# back from, signals under mpirun, and the model loaded from Python (numpy only) reproducing
# hcl's first loss from the step-0 checkpoint with --no-shuffle. (A full disk:
# test_checkpoint_disk.sh.)
set -euo pipefail
B=${HCL_BUILD:-build}
SRC=${HCL_SRC:-.}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_ckpt.XXXXXX)
cleanup() {
    pkill -9 -f "$tmp" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
MPI=(mpirun --oversubscribe)

"$B/hcl-data" synth "$tmp/data" --rows 1024 --widths 48,32,16 --classes 6 --seed 2 --missing-rate 0.1 >/dev/null
common=(--data "$tmp/data" --hidden 64,32 --dim 16 --batch-size 96 --steps 40 --threads 1 --log-every 1 --seed 5)
losses() { $PY -c 'import json,sys; print(" ".join(repr(json.loads(l)["loss"]) for l in open(sys.argv[1])))' "$1"; }

# 1. Exact: stopped at step 20 and resumed with the same workers = never stopped, bit for bit.
for mode in single mpi; do
    launch=()
    [ $mode = mpi ] && launch=("${MPI[@]}" -np 3)
    "${launch[@]}" "$B/hcl-train" "${common[@]}" --checkpoint-every 20 --run-dir "$tmp/$mode-full" 2>/dev/null
    "${launch[@]}" "$B/hcl-train" "${common[@]}" --steps 40 --checkpoint-every 20 --run-dir "$tmp/$mode-cut" 2>/dev/null
    # make it look as if the run died right after step 20's checkpoint
    rm -rf "$tmp/$mode-cut/checkpoints/step-00000040"
    echo step-00000020 > "$tmp/$mode-cut/checkpoints/latest"
    # (the steps after 20 in metrics.jsonl are dropped on resume and logged again; so is a last
    # line torn by a crash or a full disk, whatever step its beginning names)
    printf '{"step": 1' >> "$tmp/$mode-cut/metrics.jsonl"
    "${launch[@]}" "$B/hcl-train" "${common[@]}" --checkpoint-every 20 --resume auto --run-dir "$tmp/$mode-cut" \
        2>"$tmp/log" || { cat "$tmp/log"; fail "$mode: resume failed"; }
    grep -q "resuming from .*step-00000020" "$tmp/log" || { cat "$tmp/log"; fail "$mode: did not resume from step 20"; }
    [ "$(losses "$tmp/$mode-full/metrics.jsonl")" = "$(losses "$tmp/$mode-cut/metrics.jsonl")" ] \
        || fail "$mode: resumed losses differ from the uninterrupted run"
    cmp -s "$tmp/$mode-full/checkpoints/step-00000040/model.safetensors" "$tmp/$mode-cut/checkpoints/step-00000040/model.safetensors" \
        || fail "$mode: final parameters differ"
    cmp -s "$tmp/$mode-full/checkpoints/step-00000040/optimizer.safetensors" "$tmp/$mode-cut/checkpoints/step-00000040/optimizer.safetensors" \
        || fail "$mode: final optimizer state differs"
    echo "exact resume ($mode): 40 losses and final parameters bit for bit"
done

# 2. Elastic: 1 worker to 2 workers and back, same global batch: the loss within float rounding.
rewind() {   # as if the run had died right after checkpoint $2
    local d=$1/checkpoints s
    for s in "$d"/step-*; do [ "$(basename "$s")" \> "$2" ] && rm -rf "$s"; done
    echo "$2" > "$d/latest"
}
"${MPI[@]}" -np 2 "$B/hcl-train" "${common[@]}" --checkpoint-every 15 --run-dir "$tmp/elastic" 2>/dev/null
rewind "$tmp/elastic" step-00000015
"${MPI[@]}" -np 3 "$B/hcl-train" "${common[@]}" --checkpoint-every 15 --resume auto --run-dir "$tmp/elastic" 2>/dev/null
rewind "$tmp/elastic" step-00000030
"${MPI[@]}" -np 2 "$B/hcl-train" "${common[@]}" --checkpoint-every 15 --resume auto --run-dir "$tmp/elastic" 2>"$tmp/log"
grep -q "resuming from .*step-00000030: step 30, epoch 3 (saved by 2 workers)" "$tmp/log" || { cat "$tmp/log"; fail "elastic: not resumed from 2 workers' checkpoint"; }
$PY - "$tmp/single-full/metrics.jsonl" "$tmp/elastic/metrics.jsonl" <<'PY' || fail "elastic resume diverged"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in b] == list(range(1, 41)), [r["step"] for r in b]
worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
assert worst <= 1e-5, worst
print(f"elastic resume 1 -> 2 -> 1 workers: 40 steps within {worst:.1e} relative of one process")
PY

# 3. Damage: a flipped byte and a truncated file are caught; auto falls back, a path is refused.
"$B/hcl-train" "${common[@]}" --steps 30 --checkpoint-every 10 --keep 5 --run-dir "$tmp/dmg" 2>/dev/null
f="$tmp/dmg/checkpoints/step-00000030/model.safetensors"
$PY -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=0x10; open(p,'wb').write(b)" "$f"
truncate -s -100 "$tmp/dmg/checkpoints/step-00000020/optimizer.safetensors"
set +e
"$B/hcl-train" "${common[@]}" --steps 30 --resume "$tmp/dmg/checkpoints/step-00000030" --run-dir "$tmp/dmg" 2>"$tmp/err"
rc=$?
set -e
[ $rc = 2 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "step-00000030/model.safetensors: checksum" "$tmp/err" \
    || { cat "$tmp/err"; fail "a damaged --resume PATH was not refused with one line naming the file"; }
"$B/hcl-train" "${common[@]}" --steps 30 --checkpoint-every 10 --keep 5 --resume auto --run-dir "$tmp/dmg" 2>"$tmp/log"
grep -q "skipping damaged checkpoint: .*step-00000030/model.safetensors: checksum" "$tmp/log" || { cat "$tmp/log"; fail "flipped byte not reported"; }
grep -q "skipping damaged checkpoint: .*step-00000020/optimizer.safetensors: .*truncated" "$tmp/log" || { cat "$tmp/log"; fail "truncation not reported"; }
grep -q "resuming from .*step-00000010" "$tmp/log" || { cat "$tmp/log"; fail "did not fall back to step 10"; }
"$B/hcl-train" "${common[@]}" --steps 30 --run-dir "$tmp/dmg-ref" 2>/dev/null
[ "$(losses "$tmp/dmg/metrics.jsonl")" = "$(losses "$tmp/dmg-ref/metrics.jsonl")" ] \
    || fail "the run resumed after damage does not reproduce the losses"
echo "damage: flipped byte and truncation caught, fell back to step 10, losses reproduced"

# 4. kill -9 of the coordinator while it writes checkpoints (one every step, a larger model):
#    every time, the run resumes from a whole checkpoint.
big=(--data "$tmp/data" --hidden 512,512 --dim 64 --batch-size 96 --steps 100000 --threads 1 --log-every 10 --checkpoint-every 1 --keep 2)
for i in 1 2 3 4 5; do
    "$B/hcl-train" "${big[@]}" --resume auto --run-dir "$tmp/kill" >/dev/null 2>"$tmp/kill$i.log" &
    pid=$!
    # once this run is writing checkpoints, kill it at a random moment (writes take ~100 ms)
    for _ in $(seq 100); do grep -q "checkpoint .*step-" "$tmp/kill$i.log" && break; sleep 0.1; done
    sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
    kill -9 $pid
    wait $pid 2>/dev/null || true
    if [ $i -gt 1 ]; then
        grep -q "resuming from" "$tmp/kill$i.log" || { cat "$tmp/kill$i.log"; fail "kill $i: did not resume"; }
        ! grep -q "skipping damaged" "$tmp/kill$i.log" || { cat "$tmp/kill$i.log"; fail "kill $i: latest was damaged"; }
    fi
done
"$B/hcl-train" "${big[@]}" --resume auto --run-dir "$tmp/kill" 2>"$tmp/log" >/dev/null &
pid=$!
for _ in $(seq 100); do grep -q "resuming from\|step 0" "$tmp/log" && break; sleep 0.1; done
kill -INT $pid
# bounded: a run that ignores SIGINT fails here with its log instead of hanging the suite
for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then
    cat "$tmp/log"; gdb -p $pid -batch -ex "thread apply all bt" 2>/dev/null | grep -E "^#|^Thread" | head -60
    fail "the resumed run did not stop within 30 s of SIGINT"
fi
wait $pid || { cat "$tmp/log"; fail "resumed run did not stop cleanly"; }
grep -q "resuming from" "$tmp/log" || { cat "$tmp/log"; fail "no whole checkpoint after kill -9 during writes"; }
! grep -q "skipping damaged" "$tmp/log" || { cat "$tmp/log"; fail "latest named a damaged checkpoint"; }
[ -z "$(ls -A "$tmp/kill/checkpoints" | grep '^\.tmp-' || true)" ] || fail "temporary checkpoint directories left behind"
echo "kill -9 during checkpoint writes (5 times): always resumed from a whole checkpoint"

# 5. Signals under mpirun: SIGUSR1 checkpoints and goes on; SIGUSR2 (forwarded by mpirun) and
#    SIGTERM to the coordinator checkpoint at the next step boundary and exit 0; resumed runs
#    then reproduce the uninterrupted losses bit for bit.
sig=(--data "$tmp/data" --hidden 256,256 --dim 32 --batch-size 96 --steps 600 --threads 1 --log-every 10 --seed 5)
rank0_pid() {
    local p
    for p in $(pgrep -f "$1" || true); do
        tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0" && { echo $p; return 0; }
    done
    return 1
}
wait_metrics() { for _ in $(seq 100); do [ -s "$1/metrics.jsonl" ] && return 0; sleep 0.1; done; return 1; }
"${MPI[@]}" -np 3 "$B/hcl-train" "${sig[@]}" --run-dir "$tmp/sig1" >"$tmp/sig1.log" 2>&1 &
mp=$!
wait_metrics "$tmp/sig1" || fail "signal job did not start"
kill -USR1 $mp
for _ in $(seq 100); do [ -f "$tmp/sig1/checkpoints/latest" ] && break; sleep 0.1; done
[ -f "$tmp/sig1/checkpoints/latest" ] || { cat "$tmp/sig1.log"; fail "SIGUSR1 wrote no checkpoint"; }
kill -0 $mp 2>/dev/null || fail "SIGUSR1 stopped the job"
kill -USR2 $mp
rc=0; wait $mp || rc=$?
[ $rc = 0 ] || { cat "$tmp/sig1.log"; fail "SIGUSR2: exit $rc, not 0"; }
grep -q "checkpoint requested by signal" "$tmp/sig1.log" && grep -q "stopped at step" "$tmp/sig1.log" || { cat "$tmp/sig1.log"; fail "signal lines missing"; }
stop_step=$(sed 's/step-0*//' "$tmp/sig1/checkpoints/latest")
grep -q "stopped at step $stop_step of" "$tmp/sig1.log" || { cat "$tmp/sig1.log"; fail "last checkpoint is not the stop step $stop_step"; }
"${MPI[@]}" -np 3 "$B/hcl-train" "${sig[@]}" --run-dir "$tmp/sig2" >"$tmp/sig2.log" 2>&1 &
mp=$!
wait_metrics "$tmp/sig2" || fail "signal job did not start"
kill -TERM "$(rank0_pid "$tmp/sig2")"
rc=0; wait $mp || rc=$?
[ $rc = 0 ] || { cat "$tmp/sig2.log"; fail "SIGTERM to the coordinator: exit $rc, not 0"; }
grep -q "stopped at step" "$tmp/sig2.log" || { cat "$tmp/sig2.log"; fail "SIGTERM: no stop line"; }
"$B/hcl-train" "${sig[@]}" --run-dir "$tmp/sig3" >"$tmp/sig3.log" 2>&1 &
p=$!
wait_metrics "$tmp/sig3" || fail "singleton did not start"
kill -INT $p
rc=0; wait $p || rc=$?
[ $rc = 0 ] && grep -q "stopped at step" "$tmp/sig3.log" || { cat "$tmp/sig3.log"; fail "SIGINT to one process: exit $rc"; }
# the SIGUSR2-stopped run, resumed to the end, equals an uninterrupted run
"${MPI[@]}" -np 3 "$B/hcl-train" "${sig[@]}" --resume auto --run-dir "$tmp/sig1" 2>/dev/null \
    || fail "resume after SIGUSR2 failed"
"${MPI[@]}" -np 3 "$B/hcl-train" "${sig[@]}" --run-dir "$tmp/sig_ref" 2>/dev/null
[ "$(losses "$tmp/sig1/metrics.jsonl")" = "$(losses "$tmp/sig_ref/metrics.jsonl")" ] || fail "signal-stopped and resumed run differs"
echo "signals: SIGUSR1 checkpointed, SIGUSR2 stopped at step $stop_step with exit 0, SIGTERM/SIGINT likewise"

# 6b. --checkpoint-interval: a checkpoint every T seconds, whatever the step count.
"$B/hcl-train" "${sig[@]}" --checkpoint-interval 0.25 --keep 1000 --run-dir "$tmp/interval" 2>"$tmp/log"
n=$(ls -d "$tmp/interval/checkpoints"/step-* | wc -l)
secs=$($PY -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[-1]["time"]-r[0]["time"])' "$tmp/interval/metrics.jsonl")
$PY -c "import sys; n=$n; s=$secs; sys.exit(0 if n >= 2 and n <= s / 0.25 + 3 else 1)" \
    || { cat "$tmp/log"; fail "--checkpoint-interval 0.25 over $secs s wrote $n checkpoints"; }
echo "checkpoint interval 0.25 s: $n checkpoints over $secs s"

# 6. Outside hcl: numpy alone loads the step-0 checkpoint and, with --no-shuffle, reproduces
#    the loss hcl logged for step 1 (the full-graph loss on rows 0..95 with the initial weights).
"$B/hcl-train" --data "$tmp/data" --hidden 64,32 --dim 16 --batch-size 96 --steps 2 --threads 1 --log-every 1 \
    --no-shuffle 1 --checkpoint-every 1 --run-dir "$tmp/py" 2>/dev/null
$PY - "$SRC/tools" "$tmp/py" "$tmp/data" <<'PY' || fail "numpy reproduction"
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import hcl_safetensors as hs
run, data = sys.argv[2], sys.argv[3]
tensors, meta = hs.load(f"{run}/checkpoints/step-00000000/model.safetensors")
views = meta["views"].split(",")
B = 96
x = {v: np.load(f"{data}/{v}.npy")[:B] for v in views}
mask = np.load(f"{data}/mask.npy")[:B].astype(bool)
z = {v: hs.embed(tensors, meta, v, x[v]) for v in views}
s = float(np.exp(tensors["logit_t"][0]))
def lse(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)
pair = []
for i in range(len(views)):
    for j in range(i + 1, len(views)):
        keep = mask[:, i] & mask[:, j]
        U, V = z[views[i]][keep], z[views[j]][keep]
        L = s * U @ V.T
        d = np.diag(L)
        pair.append(((lse(L, 1) - d).mean() + (lse(L, 0) - d).mean()) / 2)
want = float(np.mean(pair))
got = json.loads(open(f"{run}/metrics.jsonl").readline())["loss"]
assert abs(got - want) <= 1e-5 * abs(want), (got, want)
print(f"numpy from model.safetensors: step-1 loss {want:.7f}, hcl logged {got:.7f}")
PY
echo "test_checkpoint: ok"
