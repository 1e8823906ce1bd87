#!/usr/bin/env bash
# hcl-run on this host alone (the cluster suite runs it across namespace hosts): a bad hostfile
# or flag is one line and exit 2; --dry-run prints the mpirun command with the cluster
# parameters and the forwarded environment; SIGTERM to hcl-run checkpoints and stops the job
# (exit 0, no relaunch); a worker killed with --max-restarts 1 is relaunched with --resume auto
# (a restart event in metrics.jsonl, the run finishes), and with --max-restarts 0 hcl-run gives
# up with the summary (exit 1).
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_run.XXXXXX)
mp=
cleanup() {
    [ -n "$mp" ] && { kill -9 "$mp" 2>/dev/null || true; }
    pkill -9 -f "hcl-train.*$tmp" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# bad input: one line naming the file, line or flag; exit 2
printf 'localhost slots=two\n' >"$tmp/bad"
set +e
out=$("$B/hcl-run" --hostfile "$tmp/bad" -- "$B/hcl-train" 2>&1); rc=$?
[ $rc = 2 ] && [ "$out" = "hcl-run: $tmp/bad:1: bad 'slots=two' (want \`HOST [slots=N]\`, N from 1 to 4096)" ] ||
    fail "bad hostfile: exit $rc, '$out'"
out=$("$B/hcl-run" --hostfile "$tmp/none" -- x 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "^hcl-run: $tmp/none: cannot open the hostfile" || fail "missing hostfile: $rc '$out'"
out=$("$B/hcl-run" --hostfile "$tmp/bad" --max-restarts -1 -- x 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | head -1 | grep -q "^hcl-run: --max-restarts: bad value '-1'" || fail "bad flag: $rc '$out'"
set -e

printf 'localhost slots=3   # rank 0 and 2 workers\n' >"$tmp/hosts"
HCL_FOO=1 "$B/hcl-run" --hostfile "$tmp/hosts" --iface 10.0.0.0/8 --dry-run -- hcl-train --data D >"$tmp/cmd"
for want in "-np 3 --host localhost:3" "--mca oob_tcp_keepalive_time 3" "--mca btl_tcp_if_include 10.0.0.0/8" \
    "-x HCL_FOO" "-x HCL_RUN_RESTART" "hcl-train --data D"; do
    grep -qF -- "$want" "$tmp/cmd" || fail "--dry-run lacks '$want': $(cat "$tmp/cmd")"
done
echo "bad input refused in one line; --dry-run: $(cut -c1-100 "$tmp/cmd")..."

"$B/hcl-data" synth "$tmp/data" --rows 2048 --widths 32,16,8 --seed 1 >/dev/null
job=(--data "$tmp/data" --hidden 32 --dim 8 --batch-size 128 --threads 1 --log-every 5 --checkpoint-every 25
     --worker-timeout 5)
await_ckpt() {   # RUN: the job has written a checkpoint
    for _ in $(seq 300); do
        ls "$1/checkpoints" 2>/dev/null | grep -q '^step-' && return 0
        kill -0 "$mp" 2>/dev/null || { tail "$1.log"; fail "$1: ended before a checkpoint"; }
        sleep 0.1
    done
    fail "$1: no checkpoint in 30 s"
}

# SIGTERM to hcl-run: the job checkpoints and stops; no relaunch
run=$tmp/term
"$B/hcl-run" --hostfile "$tmp/hosts" --max-restarts 3 -- "$B/hcl-train" "${job[@]}" --steps 1000000 \
    --run-dir "$run" >"$run.log" 2>&1 &
mp=$!
await_ckpt "$run"
kill -TERM $mp
rc=0
wait $mp || rc=$?
mp=
[ $rc = 0 ] || { tail "$run.log"; fail "SIGTERM: hcl-run exit $rc"; }
[ "$(grep -c "hcl-run: launch" "$run.log")" = 1 ] || fail "SIGTERM: relaunched"
grep -q "checkpoints and stops" "$run.log" && grep -q "stopped at step" "$run.log" || { tail "$run.log"; fail "SIGTERM: no graceful stop"; }
echo "SIGTERM: $(grep -o 'stopped at step [0-9]*' "$run.log"), exit 0, no relaunch"

# a worker killed: relaunched with --resume auto (restart event), the run reaches its end
run=$tmp/restart
"$B/hcl-run" --hostfile "$tmp/hosts" --max-restarts 1 -- "$B/hcl-train" "${job[@]}" --steps 3000 \
    --run-dir "$run" >"$run.log" 2>&1 &
mp=$!
await_ckpt "$run"
pkill -9 -f "hcl-train.*$run" -n || true   # the newest: a worker (rank 0 starts first)
rc=0
wait $mp || rc=$?
mp=
[ $rc = 0 ] || { tail "$run.log"; fail "relaunch: hcl-run exit $rc"; }
$PY - "$run/metrics.jsonl" <<'PY' || fail "relaunch: metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if r.get("event") == "restart"]
assert len(ev) == 1 and ev[0]["restart"] == 1 and "launch 1 ended with exit" in ev[0]["reason"], ev
assert max(r["step"] for r in rows if "loss" in r) == 3000
print(f"a worker killed: relaunched from step {ev[0]['step']} ({ev[0]['reason']}), step 3000 reached")
PY

# --max-restarts 0: gives up with the summary
run=$tmp/giveup
"$B/hcl-run" --hostfile "$tmp/hosts" --max-restarts 0 -- "$B/hcl-train" "${job[@]}" --steps 1000000 \
    --run-dir "$run" >"$run.log" 2>&1 &
mp=$!
await_ckpt "$run"
pkill -9 -f "hcl-train.*$run" -n || true
rc=0
wait $mp || rc=$?
mp=
[ $rc = 1 ] && grep -q "hcl-run: gave up: no restart left" "$run.log" && grep -q "  launch 1 on localhost:3: exit" "$run.log" ||
    { tail "$run.log"; fail "--max-restarts 0: exit $rc, no summary"; }
echo "--max-restarts 0: gave up (exit 1) with: $(grep '  launch 1' "$run.log")"
echo "test_hcl_run: ok"
