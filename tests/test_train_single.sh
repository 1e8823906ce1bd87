#!/usr/bin/env bash
# hcl-train as one process (an MPI singleton): the loss falls, the same seed gives the same loss
# at every step bit for bit, every loss kind and optimizer runs, bad flags give one clear line.
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/hcl_train_single.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/hcl-data" synth "$tmp/data" --rows 1024 --widths 48,32,16 --classes 8 --seed 3 >/dev/null
"$B/hcl-data" synth "$tmp/val" --rows 256 --widths 48,32,16 --classes 8 --seed 3 --split 1 >/dev/null
"$B/hcl-data" synth "$tmp/miss" --rows 512 --widths 48,32,16 --classes 8 --seed 5 --missing-rate 0.3 >/dev/null
common=(--hidden 64,32 --dim 16 --batch-size 128 --threads 1 --log-every 5)

# 1. The loss falls and metrics.jsonl holds the required keys.
"$B/hcl-train" --data "$tmp/data" --val-data "$tmp/val" --run-dir "$tmp/r1" "${common[@]}" \
    --steps 60 --lr 0.003 --seed 7 2>"$tmp/r1.log" || { cat "$tmp/r1.log"; fail "training run failed"; }
grep -q "one process on $(hostname)\$" "$tmp/r1.log" || fail "the start line does not name the host: $(grep training "$tmp/r1.log")"
$PY - "$tmp/r1/metrics.jsonl" <<'PY' || fail "metrics check"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 12, len(rows)
for k in ("step", "epoch", "loss", "pair_loss", "lr", "logit_scale", "grad_norm", "samples_per_s", "val_loss"):
    assert k in rows[0], k
assert set(rows[0]["pair_loss"]) == {"v0:v1", "v0:v2", "v1:v2"}, rows[0]["pair_loss"]
first, last = rows[0]["loss"], rows[-1]["loss"]
assert last < 0.8 * first, (first, last)
assert rows[-1]["val_loss"] < rows[0]["val_loss"], "val loss did not fall"
mean_pairs = sum(rows[-1]["pair_loss"].values()) / 3
assert abs(mean_pairs - rows[-1]["loss"]) < 1e-5 * abs(rows[-1]["loss"]), (mean_pairs, rows[-1]["loss"])
print(f"loss {first:.4f} -> {last:.4f}")
PY

# 2. Same seed, same flags: the same loss at every step, bit for bit; another seed differs.
for run in a b; do
    "$B/hcl-train" --data "$tmp/data" --run-dir "$tmp/det_$run" "${common[@]}" --steps 20 --log-every 1 \
        --seed 11 2>/dev/null
done
"$B/hcl-train" --data "$tmp/data" --run-dir "$tmp/det_c" "${common[@]}" --steps 20 --log-every 1 --seed 12 2>/dev/null
loss_of() { $PY -c 'import json,sys; print(" ".join(repr(json.loads(l)["loss"]) for l in open(sys.argv[1])))' "$1"; }
[ "$(loss_of "$tmp/det_a/metrics.jsonl")" = "$(loss_of "$tmp/det_b/metrics.jsonl")" ] || fail "same seed, different losses"
[ "$(loss_of "$tmp/det_a/metrics.jsonl")" != "$(loss_of "$tmp/det_c/metrics.jsonl")" ] || fail "different seeds, same losses"

# 3. Every loss kind and optimizer trains to a finite, falling loss (with missing views too).
run_kind() {
    local name=$1; shift
    "$B/hcl-train" --run-dir "$tmp/k_$name" "${common[@]}" --steps 30 --log-every 10 "$@" 2>"$tmp/k_$name.log" \
        || { cat "$tmp/k_$name.log"; fail "$name: run failed"; }
    $PY - "$tmp/k_$name/metrics.jsonl" "$name" <<'PY' || fail "$name: loss did not fall"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
a, b = rows[0]["loss"], rows[-1]["loss"]
assert all(math.isfinite(r["loss"]) for r in rows)
assert b < a, (sys.argv[2], a, b)
PY
}
run_kind clip --data "$tmp/data" --loss clip --clip-views v1,v2
run_kind core --data "$tmp/data" --loss core --core-view v2 --pair-weights v0:v2=2
run_kind supcon --data "$tmp/data" --loss supcon --lr 0.003
run_kind hybrid --data "$tmp/data" --loss hybrid --lambda 0.5 --act gelu --layernorm 1
run_kind sgd --data "$tmp/data" --optimizer sgd --lr 0.5 --nesterov 1 --warmup-steps 5
run_kind lars --data "$tmp/data" --optimizer lars --lr 2 --clip-norm 5
run_kind missing --data "$tmp/miss" --loss full
run_kind fixedT --data "$tmp/data" --temperature 0.2
grep -q '"logit_scale": 5,' "$tmp/k_fixedT/metrics.jsonl" || fail "fixed temperature 0.2 did not give scale 5"
$PY - "$tmp/k_hybrid/metrics.jsonl" <<'PY' || fail "hybrid metrics lack ce"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert "ce" in r[-1] and r[-1]["ce"] < r[0]["ce"], r[-1]
PY

# 4. A config file gives the same run as the same flags.
printf 'hidden = 64,32\ndim = 16\nbatch-size = 128\nthreads = 1\nlog-every = 1\nsteps = 20\nseed = 11\n' > "$tmp/run.conf"
"$B/hcl-train" --data "$tmp/data" --run-dir "$tmp/det_conf" --config "$tmp/run.conf" 2>/dev/null
[ "$(loss_of "$tmp/det_a/metrics.jsonl")" = "$(loss_of "$tmp/det_conf/metrics.jsonl")" ] || fail "--config run differs"

# 5. Bad input: one clear line naming the thing, exit 2, nothing written.
expect_error() {
    local want=$1; shift
    set +e
    "$B/hcl-train" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    set -e
    [ $rc = 2 ] || { cat "$tmp/err"; fail "expected exit 2, got $rc for: $*"; }
    [ "$(wc -l <"$tmp/err")" = 1 ] || { cat "$tmp/err"; fail "expected one error line for: $*"; }
    grep -q -- "$want" "$tmp/err" || { cat "$tmp/err"; fail "error does not name '$want'"; }
}
expect_error "--bogus" --data "$tmp/data" --run-dir "$tmp/x" --bogus 1
expect_error "batch-size" --data "$tmp/data" --run-dir "$tmp/x" --batch-size abc
expect_error "--loss" --data "$tmp/data" --run-dir "$tmp/x" --loss triplet
expect_error "no view named 'nope'" --data "$tmp/data" --run-dir "$tmp/x" --loss core --core-view nope
expect_error "larger than" --data "$tmp/data" --run-dir "$tmp/x" --batch-size 5000
expect_error "/nonexistent" --data /nonexistent --run-dir "$tmp/x"
expect_error "--optimizer" --data "$tmp/data" --run-dir "$tmp/x" --optimizer adam
expect_error "--coordinator-nice: bad value '20' (want an integer from 0 to 19)" --data "$tmp/data" --run-dir "$tmp/x" --coordinator-nice 20
expect_error "--grad-allreduce: 'nccl' is not one of shm, mpi" --data "$tmp/data" --run-dir "$tmp/x" --grad-allreduce nccl
expect_error "--balance: 'dynamic' is not one of even, adaptive" --data "$tmp/data" --run-dir "$tmp/x" --balance dynamic
expect_error "--log-level: 'loud' is not one of debug, info, warn, error" --data "$tmp/data" --run-dir "$tmp/x" --log-level loud
expect_error "--act: 'tanh' is not one of relu, gelu" --data "$tmp/data" --run-dir "$tmp/x" --act tanh
expect_error "--layernorm: bad value '2' (want 0 or 1)" --data "$tmp/data" --run-dir "$tmp/x" --layernorm 2
expect_error "--epochs: bad value '9223372036854775807'" --data "$tmp/data" --run-dir "$tmp/x" --epochs 9223372036854775807
expect_error "--worker-timeout: bad value '0' (want a number > 0)" --data "$tmp/data" --run-dir "$tmp/x" --worker-timeout 0
expect_error "$tmp: is a directory" --data "$tmp/data" --run-dir "$tmp/x" --config "$tmp"
expect_error "--watch-port: bad value '65536' (want an integer from 0 to 65535)" --data "$tmp/data" --run-dir "$tmp/x" --watch-port 65536
expect_error "--telemetry-port: bad value '-1' (want an integer from 0 to 65535)" --data "$tmp/data" --run-dir "$tmp/x" --telemetry-port -1
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
expect_error "--watch-port $port: tcp://127.0.0.1:$port: bind: Address already in use" --data "$tmp/data" \
    --run-dir "$tmp/xp" --control "tcp://127.0.0.1:$port" --watch-port "$port"
expect_error "--telemetry-port $port: tcp://\*:$port: bind: Address already in use" --data "$tmp/data" \
    --run-dir "$tmp/xp" --control "tcp://127.0.0.1:$port" --telemetry-port "$port"
expect_error "--watch-port 5556: the watch socket is on a tcp port only with a tcp --control" --data "$tmp/data" \
    --run-dir "$tmp/xp" --watch-port 5556
printf 'log-level = loud\n' > "$tmp/bad.conf"
expect_error "bad.conf:1: log-level: 'loud' is not one of" --data "$tmp/data" --run-dir "$tmp/x" --config "$tmp/bad.conf"
[ ! -e "$tmp/x" ] || fail "a failed start created the run directory"
"$B/hcl-train" --help >"$tmp/help" || fail "--help failed"
grep -q -- "--batch-size N .*an integer from 2 to .*\[256\]" "$tmp/help" || fail "--help lacks --batch-size's range"
grep -q -- "--log-level debug|info|warn|error" "$tmp/help" || fail "--help lacks --log-level's words"

# 6. samples/s of every logged window, the last one too, is the pace of the steps in it: the
# worker in this process computes each job as it is submitted, a job ahead of the records, so
# windows timed by the records counted the last window's 2 steps over 1 step's time (2x).
"$B/hcl-data" synth "$tmp/wide" --rows 2048 --widths 256,128 --classes 8 --seed 3 >/dev/null
# against the window before it (the nearest in time: this machine's load changes the pace); a
# try of three that passes is enough (the error was there every time)
pace_ok=0
for try in 1 2 3; do
    "$B/hcl-train" --data "$tmp/wide" --run-dir "$tmp/pace$try" --hidden 512,256 --dim 64 --batch-size 512 --threads 1 \
        --steps 16 --log-every 2 2>"$tmp/pace.log" || { cat "$tmp/pace.log"; fail "pace run failed"; }
    $PY - "$tmp/pace$try/metrics.jsonl" <<'PY' && { pace_ok=1; break; }
import json, sys
sps = [json.loads(l)["samples_per_s"] for l in open(sys.argv[1])]
ok = len(sps) == 8 and sps[-1] < 1.5 * sps[-2]
print(f"samples/s of the windows, try: {[round(x) for x in sps]}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
done
[ $pace_ok = 1 ] || fail "samples/s of the last window was 1.5x the one before it in three runs"
echo "test_train_single: ok"
