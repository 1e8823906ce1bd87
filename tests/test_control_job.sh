#!/usr/bin/env bash
# The control plane against a real mpirun job (coordinator + 2 workers) over real sockets:
# status while training (answered within 100 ms; the worker table with each worker's dropped
# telemetry count; each worker's index, rank and host there and in the start line; 36,000 requests from 20 clients all answered, no memory growth), pause (no progress, no CPU on any rank),
# resume, checkpoint on request, set lr visible in metrics at the reported step, 10,000 random
# and truncated messages, stop (exit 0 after a checkpoint); CURVE on a non-loopback endpoint
# (authorised key answered, unknown key refused, no keys refused); a wildcard named by this
# host (its name, or its first address when the name does not resolve), --watch-port and
# --telemetry-port bound; a SIGSTOPped worker ends
# the job within --worker-timeout with a line naming it.
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_ctljob.XXXXXX)
# Every process this script starts (mpirun, hcl-train), by id; at exit those still running and
# their children (the ranks) are woken (a SIGSTOPped one) and killed. A process is ours only if
# its command line names $tmp (an id may have been reused once ours ended).
started=()
proc_tree() { local c; for c in $(pgrep -P "$1" 2>/dev/null); do proc_tree "$c"; done; echo "$1"; }
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$tmp"; }
cleanup() {
    local p q
    for p in "${started[@]}"; do
        ours "$p" || continue
        for q in $(proc_tree "$p"); do
            ours "$q" && { kill -CONT "$q" 2>/dev/null || true; kill -9 "$q" 2>/dev/null || true; }
        done
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/job.log" ] && tail -20 "$tmp/job.log" >&2; exit 1; }
ctl() { "$B/hclctl" --run-dir "$tmp/run" "$@"; }
jget() { $PY -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }

"$B/hcl-data" synth "$tmp/data" --rows 4096 --widths 64,32,16 --seed 1 >/dev/null
job=(--data "$tmp/data" --hidden 256,256 --dim 32 --batch-size 256 --steps 100000 --threads 1 --log-every 1
     --worker-timeout 5)
mpirun --oversubscribe -np 3 "$B/hcl-train" "${job[@]}" --run-dir "$tmp/run" >"$tmp/job.log" 2>&1 &
mp=$!
started+=("$mp")
for _ in $(seq 100); do [ -s "$tmp/run/metrics.jsonl" ] && [ -f "$tmp/run/control.endpoint" ] && break; sleep 0.1; done
[ -f "$tmp/run/control.endpoint" ] || fail "the job wrote no control.endpoint"
[ "$(stat -c %a "$(sed -n '1s|^ipc://||p' "$tmp/run/control.endpoint")")" = 600 ] || fail "control socket is not owner-only"
# the start line names each worker's rank and host, and status's table and --json the same
h=$(hostname)
grep -q "2 workers: ranks 1-2 on $h (" "$tmp/job.log" || fail "the start line does not name the workers' ranks and host: $(grep training "$tmp/job.log")"
"$B/hclctl" --run-dir "$tmp/run" status | grep -Eq "^ +1 +2 +$h " || fail "status: no row 'worker 1, rank 2, host $h'"
[ "$(ctl --json status | jget '[(w["index"], w["rank"], w["host"]) for w in d["workers"]]')" = "[(0, 1, '$h'), (1, 2, '$h')]" ] ||
    fail "status --json: workers' index, rank, host: $(ctl --json status)"

# status while training: every request answered within 100 ms (round trip on one connection)
"$B/test_control" --latency "$(head -1 "$tmp/run/control.endpoint")" 100 || fail "status not answered within 100 ms"
# 20 clients x 200 status/s for 3 s, three times: every request answered exactly once, and the
# coordinator's memory does not grow with the requests (a leak of 100 bytes each would show)
ep=$(head -1 "$tmp/run/control.endpoint")
coord=$(for p in $(pgrep -f "$tmp/run"); do if grep -qa OMPI_COMM_WORLD_RANK=0 /proc/$p/environ 2>/dev/null; then echo $p; fi; done | head -1)
[ -n "$coord" ] || fail "no process of rank 0"
rss() { awk '/^VmRSS:/ {print $2}' /proc/$coord/status; }
for i in 1 2 3; do
    "$B/bench_control_load" "$ep" 20 200 3 > "$tmp/load$i.json" || fail "bench_control_load failed"
    [ "$(jget 'd["ok"] == d["sent"] >= 11900 and d["errors"] == d["unanswered"] == 0' < "$tmp/load$i.json")" = True ] ||
        fail "burst $i of about 12,000 status requests: $(cat "$tmp/load$i.json")"
    eval "rss$i=$(rss)"
done
# under the sanitizers ASan's quarantine holds freed memory (RSS grows by design) and LeakSanitizer
# checks the coordinator's memory at its exit instead
if [ -z "${HCL_SAN_LOGS:-}" ]; then
    [ $((rss3 - rss1)) -le 2048 ] || fail "coordinator RSS grew by $((rss3 - rss1)) kB over about 24,000 status requests ($rss1 -> $rss3 kB)"
fi
echo "3 bursts of about 12,000 status requests from 20 clients all answered; coordinator RSS $rss1 -> $rss2 -> $rss3 kB"

ctl --json status > "$tmp/s.json"
[ "$(jget 'd["state"]' < "$tmp/s.json")" = running ] || fail "state is not running: $(cat "$tmp/s.json")"
[ "$(jget 'len(d["workers"])' < "$tmp/s.json")" = 2 ] || fail "status lacks the 2-worker table"
ctl status | grep -Eq "^worker +rank +host .* dropped straggler  current$" || fail "human status lacks the worker table"
[ "$(jget 'all(w["telemetry_dropped"] >= 0 and w["messages"] > 0 for w in d["workers"])' < "$tmp/s.json")" = True ] ||
    fail "status lacks the workers' telemetry (messages, telemetry_dropped): $(cat "$tmp/s.json")"

# pause: the reply names the step; no progress and no CPU on any rank
P=$(ctl --json pause | jget 'd["step"]')
sleep 1.5
"$B/test_control" --latency "$(head -1 "$tmp/run/control.endpoint")" 20 || fail "status not answered within 100 ms while paused"
ctl --json status > "$tmp/s.json"
[ "$(jget 'd["state"]' < "$tmp/s.json")" = paused ] || fail "not paused"
[ "$(jget 'd["step"]' < "$tmp/s.json")" = "$P" ] || fail "paused at $P but status says step $(jget 'd["step"]' < "$tmp/s.json")"
pids=$(pgrep -f "$tmp/run" | grep -v "^$mp\$" | tr '\n' ' ')
ticks() { local t=0 p; for p in $pids; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
t0=$(ticks); sleep 3; t1=$(ticks)
cpu=$($PY -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) / 3 * 100, 1))")
$PY -c "import sys; sys.exit(0 if $cpu <= 5 else 1)" || fail "paused job used $cpu% of a core"
[ "$(ctl --json status | jget 'd["step"]')" = "$P" ] || fail "steps advanced while paused"
echo "pause at step $P: no progress, all 3 ranks together $cpu% of one core over 3 s"

# resume, checkpoint on request
ctl resume >/dev/null
sleep 0.5
[ "$(ctl --json status | jget 'd["step"]')" -gt "$P" ] || fail "no progress after resume"
C=$(ctl --timeout 5000 --json checkpoint | jget 'd["step"]')
[ -f "$tmp/run/checkpoints/step-$(printf %08d "$C")/state.pb" ] || fail "checkpoint of step $C not on disk"
echo "checkpoint on request at step $C"

# set lr: visible in metrics.jsonl at the reported step
S=$(ctl --json set lr=0.0004 | jget 'd["step"]')
for _ in $(seq 50); do grep -q "\"step\": $S," "$tmp/run/metrics.jsonl" && break; sleep 0.1; done
$PY - "$tmp/run/metrics.jsonl" "$S" <<'PY' || fail "set lr not visible at step $S"
import json, sys
rows = {json.loads(l)["step"]: json.loads(l) for l in open(sys.argv[1])}
s = int(sys.argv[2])
assert abs(rows[s]["lr"] - 4e-4) <= 1e-3 * 4e-4, rows[s]["lr"]
assert abs(rows[s - 1]["lr"] - 4e-4) > 1e-5, rows[s - 1]["lr"]
print(f"set lr=0.0004: metrics step {s - 1} lr {rows[s - 1]['lr']:.6g}, step {s} lr {rows[s]['lr']:.6g}")
PY

# 10,000 random and truncated messages: the job keeps training and answering
before=$(ctl --json status | jget 'd["step"]')
"$B/test_control" --fuzz "$(head -1 "$tmp/run/control.endpoint")" 10000 || fail "fuzzing: status not answered after"
sleep 0.5
after=$(ctl --json status | jget 'd["step"]') || fail "status after fuzzing"
[ "$after" -gt "$before" ] || fail "training stalled under fuzzing"
kill -0 $mp || fail "the job died under fuzzing"

# stop: finish the step, checkpoint, exit 0
T=$(ctl --json stop | jget 'd["step"]')
rc=0; wait $mp || rc=$?
[ $rc = 0 ] || fail "stop: exit $rc"
[ "$(cat "$tmp/run/checkpoints/latest")" = "step-$(printf %08d "$T")" ] || fail "stop at $T did not leave its checkpoint"
[ ! -e "$tmp/run/control.endpoint" ] || fail "control.endpoint left behind"
echo "stop at step $T: exit 0, checkpoint step-$(printf %08d "$T")"

# CURVE: any endpoint but loopback needs keys; an unknown key gets nothing
"$B/hclctl" keygen "$tmp/keys" --name server >/dev/null
"$B/hclctl" keygen "$tmp/keys" --name client >/dev/null
"$B/hclctl" keygen "$tmp/keys" --name stranger >/dev/null
cp "$tmp/keys/client.pub" "$tmp/keys/authorized"
set +e
mpirun --oversubscribe -np 2 "$B/hcl-train" "${job[@]}" --run-dir "$tmp/run2" --control 'tcp://0.0.0.0:*' >"$tmp/nokey.log" 2>&1
rc=$?
set -e
[ $rc != 0 ] && grep -q "CURVE" "$tmp/nokey.log" || { cat "$tmp/nokey.log"; fail "a non-loopback endpoint without keys was not refused"; }
# ... and a wildcard is named: control.endpoint and the watch endpoint name this host; the
# watch and telemetry sockets on the ports asked for (--watch-port, --telemetry-port)
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
listening() { $PY -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2)' "$1"; }
wport=$(free_port); tport=$(free_port)
mpirun --oversubscribe -np 2 "$B/hcl-train" "${job[@]}" --run-dir "$tmp/run2" --control 'tcp://0.0.0.0:*' \
    --watch-port "$wport" --telemetry-port "$tport" \
    --control-secret "$tmp/keys/server.key" --control-clients "$tmp/keys/authorized" >"$tmp/job.log" 2>&1 &
mp=$!
started+=("$mp")
for _ in $(seq 100); do [ -f "$tmp/run2/control.endpoint" ] && break; sleep 0.1; done
"$B/hclctl" --run-dir "$tmp/run2" --curve-key "$tmp/keys/client.key" status >/dev/null || fail "authorised CURVE client not answered"
if getent hosts "$(hostname)" >/dev/null; then
    head -1 "$tmp/run2/control.endpoint" | grep -Eqx "tcp://$(hostname):[0-9]+" ||
        fail "tcp://0.0.0.0:* wrote $(head -1 "$tmp/run2/control.endpoint") to control.endpoint, not tcp://$(hostname):PORT"
    grep -Eq "control: tcp://$(hostname):[0-9]+, bound as tcp://0.0.0.0:[0-9]+ \(watch tcp://$(hostname):$wport, telemetry tcp://$(hostname):$tport\)" "$tmp/job.log" ||
        fail "the control log line does not name this host and watch port $wport: $(grep 'control:' "$tmp/job.log")"
fi
named=$(head -1 "$tmp/run2/control.endpoint")
"$B/hclctl" --run-dir "$tmp/run2" --curve-key "$tmp/keys/client.key" watch --count 1 >/dev/null || fail "watch of a wildcard job"
listening "$wport" && listening "$tport" || fail "nothing listens on --watch-port $wport or --telemetry-port $tport"
for _ in $(seq 50); do
    m=$("$B/hclctl" --run-dir "$tmp/run2" --curve-key "$tmp/keys/client.key" --json status | jget 'd["workers"][0]["messages"]')
    [ "$m" -gt 0 ] && break; sleep 0.1
done
[ "$m" -gt 0 ] || fail "no telemetry arrived on --telemetry-port $tport"
set +e
"$B/hclctl" --run-dir "$tmp/run2" --curve-key "$tmp/keys/stranger.key" --timeout 1000 status >"$tmp/out" 2>&1
rc=$?
set -e
[ $rc = 3 ] || { cat "$tmp/out"; fail "an unknown CURVE key got exit $rc, not 3 (no answer)"; }
"$B/hclctl" --run-dir "$tmp/run2" --curve-key "$tmp/keys/client.key" status >/dev/null || fail "good client refused after a stranger"
"$B/hclctl" --run-dir "$tmp/run2" --curve-key "$tmp/keys/client.key" stop >/dev/null
wait $mp || fail "CURVE job did not stop cleanly"
echo "CURVE: authorised key answered, unknown key refused, no keys refused; tcp://0.0.0.0:* named $named"

# a host whose name does not resolve (its own UTS namespace): a wildcard is named by the
# host's first address but loopback, which hclctl and the telemetry reach (one process)
if unshare --uts true 2>/dev/null; then
    unshare --uts bash -c 'hostname hcl-no-such-host-i16 && exec "$@"' - "$B/hcl-train" "${job[@]}" --run-dir "$tmp/run6" \
        --control 'tcp://0.0.0.0:*' --control-secret "$tmp/keys/server.key" \
        --control-clients "$tmp/keys/authorized" >"$tmp/noname.log" 2>&1 &
    mp=$!
    started+=("$mp")
    for _ in $(seq 100); do [ -f "$tmp/run6/control.endpoint" ] && break; sleep 0.1; done
    ep=$(head -1 "$tmp/run6/control.endpoint" 2>/dev/null || true)
    [[ $ep =~ ^tcp://([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+|\[[0-9a-f:]+\]):[0-9]+$ ]] && [[ $ep != tcp://127.* && $ep != tcp://0.0.0.0:* ]] ||
        { cat "$tmp/noname.log"; fail "a host without a resolvable name wrote '$ep' to control.endpoint"; }
    for _ in $(seq 50); do
        m=$("$B/hclctl" --run-dir "$tmp/run6" --curve-key "$tmp/keys/client.key" --json status | jget 'd["workers"][0]["messages"]')
        [ "$m" -gt 0 ] && break; sleep 0.1
    done
    [ "$m" -gt 0 ] || fail "no telemetry from the worker of a host without a resolvable name"
    "$B/hclctl" --run-dir "$tmp/run6" --curve-key "$tmp/keys/client.key" stop >/dev/null
    wait $mp || fail "the job on the unnamed host did not stop cleanly"
    echo "a host whose name does not resolve: control.endpoint $ep, telemetry arrives"
else
    echo "skip: unshare --uts not permitted here (the unresolvable host name)"
fi

# a worker that stops answering (SIGSTOP) is declared lost within --worker-timeout
mpirun --oversubscribe -np 3 "$B/hcl-train" "${job[@]}" --checkpoint-every 50 --run-dir "$tmp/run3" >"$tmp/job.log" 2>&1 &
mp=$!
started+=("$mp")
for _ in $(seq 100); do [ -f "$tmp/run3/checkpoints/latest" ] && break; sleep 0.1; done
victim=""
for _ in $(seq 50); do   # (once, under the sanitizers, rank 2 was not found at the first look)
    for p in $(pgrep -f "$tmp/run3"); do
        tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=2" && victim=$p
    done
    [ -n "$victim" ] && break
    sleep 0.1
done
[ -n "$victim" ] || fail "no rank 2: $(pgrep -af "$tmp/run3" | head -c 600)"
kill -STOP "$victim"
t0=$(date +%s)
rc=0
for _ in $(seq 300); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
kill -0 $mp 2>/dev/null && fail "the job still runs 30 s after a worker stopped"
wait $mp || rc=$?
secs=$(( $(date +%s) - t0 ))
[ $rc != 0 ] || fail "exit 0 after a lost worker"
grep -Eq "worker 1 \(rank 2 on host $(hostname)\) silent for [0-9]+\.[0-9] s" "$tmp/job.log" ||
    fail "no line names the lost worker by index, rank and host: $(grep silent "$tmp/job.log")"
[ -z "$(pgrep -f "$tmp/run3" || true)" ] || fail "processes left after the lost worker"
latest="$tmp/run3/checkpoints/$(cat "$tmp/run3/checkpoints/latest")"
"$B/hcl-train" "${job[@]}" --resume "$latest" --run-dir "$tmp/run4" --steps 1 >/dev/null 2>&1 &
p=$!
started+=("$p")
for _ in $(seq 100); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
# (the resume with --steps 1 is refused: the checkpoint is past step 1; the message proves it was read)
wait $p 2>/dev/null || true
"$B/hcl-train" "${job[@]}" --resume "$latest" --run-dir "$tmp/run4" --steps 100000 >"$tmp/r4.log" 2>&1 &
p=$!
started+=("$p")
for _ in $(seq 100); do grep -q "resuming from" "$tmp/r4.log" && break; sleep 0.1; done
kill -INT $p; wait $p || fail "resume from the last checkpoint of the lost job failed"
echo "SIGSTOP of a worker: job ended in ${secs} s with exit $rc, naming worker 1 (rank 2 on host $(hostname)); last checkpoint intact"
# a coordinator that stops (SIGSTOP): the workers get no batch and end the job themselves
mpirun --oversubscribe -np 3 "$B/hcl-train" "${job[@]}" --run-dir "$tmp/run5" >"$tmp/job.log" 2>&1 &
mp=$!
started+=("$mp")
for _ in $(seq 100); do [ -s "$tmp/run5/metrics.jsonl" ] && break; sleep 0.1; done
coord=""
for p in $(pgrep -f "$tmp/run5"); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0" && coord=$p
done
[ -n "$coord" ] || fail "no rank 0"
kill -STOP "$coord"
t0=$(date +%s)
for _ in $(seq 300); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
kill -0 $mp 2>/dev/null && fail "the job still runs 30 s after the coordinator stopped"
rc=0; wait $mp || rc=$?
[ $rc != 0 ] || fail "exit 0 after the coordinator was lost"
# worker 0 waits for rank 0 to take its result ("... coordinator lost or stuck"), or a worker for
# its next batch ("no batch from the coordinator ... coordinator lost or stuck")
grep -q "coordinator lost or stuck, aborting" "$tmp/job.log" || fail "no worker said the coordinator was lost"
sleep 0.5
[ -z "$(pgrep -f "$tmp/run5" || true)" ] || fail "processes left after the coordinator was lost"
echo "SIGSTOP of the coordinator: job ended in $(( $(date +%s) - t0 )) s with exit $rc (workers' watchdog)"
echo "test_control_job: ok"
