#!/usr/bin/env bash
# The workers' watchdog (worker/watchdog.h) tells computing from waiting, on real mpirun jobs
# (coordinator + 2 workers):
#  1. steps longer than the watchdog's limit (a global batch of 16,384 rows, embeddings of 256,
#     with --worker-timeout 1: the limit is 1 + 3 s) train to the end: computing never counts;
#  2. a batch whose header arrives and whose rest never does (HCL_INJECT_STALL=STEP: rank 0 sends
#     that step's headers only) ends the job within the timeout with a line that names a stalled
#     transfer, not a lost coordinator.
# (A SIGSTOPped coordinator and a SIGSTOPped worker are still caught within the timeout: see
# tests/test_control_job.sh.)
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_watchdog.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/log" ] && tail -20 "$tmp/log" >&2; exit 1; }

# 1. long steps, and their progress while they run
"$B/hcl-data" synth "$tmp/big" --rows 16384 --widths 64,64,16 --seed 1 >/dev/null
timeout 600 mpirun --oversubscribe -np 3 "$B/hcl-train" --data "$tmp/big" --run-dir "$tmp/long" --hidden 256 --dim 256 \
    --loss full --batch-size 16384 --steps 3 --log-every 1 --threads 1 --worker-timeout 1 >"$tmp/log" 2>&1 &
job=$!
# while a step runs: hclctl status shows a worker in the loss with a fraction of it done
for _ in $(seq 600); do
    [ -f "$tmp/long/control.endpoint" ] && "$B/hclctl" --run-dir "$tmp/long" --json status >>"$tmp/status.jsonl" 2>/dev/null || true
    kill -0 $job 2>/dev/null || break
    sleep 0.25
done
wait $job || fail "3 long steps with --worker-timeout 1 did not train to the end"
$PY - "$tmp/long/metrics.jsonl" "$tmp/status.jsonl" <<'PY' || fail "long steps"
import json, sys
steps = [r for r in map(json.loads, open(sys.argv[1])) if "samples_per_s" in r]
assert [r["step"] for r in steps] == [1, 2, 3], [r["step"] for r in steps]
# the check must be able to fail: a step longer than the watchdog's limit (1 + 3 s)
longest = max(16384 / r["samples_per_s"] for r in steps)
assert longest > 4.0, f"the longest step took {longest:.1f} s, not longer than the 4 s limit: the test proves nothing"
print(f"3 steps of up to {longest:.1f} s each trained with --worker-timeout 1 (limit 4 s)")
seen = [(w["in_step"], w["phase"], w["phase_done"]) for l in open(sys.argv[2]) if l.startswith("{")
        for w in json.loads(l).get("workers", [])]
mid = [x for x in seen if x[1] == "loss" and x[2] is not None and 0 < x[2] < 1 and x[0] >= 0]
assert mid, f"no status showed a worker part way through the loss: {sorted(set(x[1] for x in seen))}"
print(f"hclctl status during the steps: {len(mid)} worker rows part way through the loss, e.g. step {mid[0][0]} "
      f"loss {mid[0][2]:.0%}")
PY
grep -q "step [0-9]/3 running for [0-9]* s: worker 0 [a-z -]*.*; ETA" "$tmp/log" ||
    fail "no progress line for a step running longer than 3 s"
echo "progress line: $(grep -o "step [0-9]/3 running for.*" "$tmp/log" | tail -1)"

# 2. a stalled transfer
t0=$(date +%s)
rc=0
HCL_INJECT_STALL=3 timeout 120 mpirun --oversubscribe -np 3 -x HCL_INJECT_STALL "$B/hcl-train" --data "$tmp/big" \
    --run-dir "$tmp/stall" --hidden 32 --dim 16 --batch-size 64 --steps 1000 --log-every 1 --threads 1 \
    --worker-timeout 2 >"$tmp/log" 2>&1 || rc=$?
secs=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a stalled transfer: exit $rc (124: timeout's)"
[ $secs -le 30 ] || fail "a stalled transfer ended the job after $secs s (--worker-timeout 2)"
grep -q "the batch of step 3 started arriving .* ago and is still incomplete .*: the transfer from the coordinator is stalled" "$tmp/log" ||
    fail "no worker named the stalled transfer"
grep -q "no batch from the coordinator" "$tmp/log" && fail "a stalled transfer was taken for a lost coordinator"
echo "a stalled transfer (step 3's header, no rest): job ended in $secs s with exit $rc, the line names the stalled transfer"
