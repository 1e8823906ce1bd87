#!/usr/bin/env bash
# The cluster suite (issue 16): three hosts made of network namespaces on this machine
# (tests/cluster/netns.sh: each its own hostname and sshd, linked by a bridge; Open MPI over TCP
# between them), one rank a host: rank 0 on h1, the workers on h2 and h3. Jobs are launched with
# the mpirun parameters README gives for clusters (out-of-band TCP keepalive, so that a partition
# ends mpirun too).
#  1. exactness: 30 steps on 3 hosts within 1e-5 of one process; --data-plane direct gives the
#     same losses bit for bit with far fewer bytes leaving rank 0's host
#  1b. hierarchical: 2 workers on each of h2 and h3 (rank 0 on h1), 40 steps with --comm-dtype
#     f32 and bf16: the gradient sum (worker/ring.c) within 1e-5 of one process (f32) and 1% (bf16),
#     and h2 sends fewer bytes than with one flat ring of the 4 workers (HCL_FLAT_ALLREDUCE=1):
#     one worker a host crosses the link, once, instead of 1.5 times the gradient
#  2. hclctl on h2 with CURVE against rank 0 on h1: status with the worker table, pause, resume,
#     stop (exit 0 after a checkpoint); a key not in the client list gets no answer
#  3. faults, each on a fresh run with --worker-timeout 5: kill -9 of the remote worker (rank 2
#     on h3), kill -9 of rank 0, h3's link cut, rank 2 frozen (SIGSTOP). The whole job, mpirun
#     included, ends within the timeout + 10 s with a non-zero exit and a line naming rank 2 (rank
#     0 for its kill) and its host; no process of the job is left in any namespace
#  4. hcl-run with restarts: h3's link cut; hcl-run drops h3 and relaunches with --resume auto on
#     h1 and h2; hclctl status shows the restart, metrics.jsonl logs it, and the 400 steps match
#     one uninterrupted process within 1e-5
# Needs root (namespaces); without it: SKIP. Everything made is torn down at exit
# (HCL_KEEP_LOGS=DIR keeps the jobs' logs there).
set -euo pipefail
B=$(cd "${HCL_BUILD:-build}" && pwd)
SRC=$(cd "${HCL_SRC:-$(dirname "$0")/..}" && pwd)
PY=/usr/bin/python3
NETNS=$SRC/tests/cluster/netns.sh
[ "$(id -u)" = 0 ] || { echo "SKIP: network namespaces need root"; exit 77; }
tmp=$(mktemp -d /tmp/hcl_cluster.XXXXXX)
export HCL_N=3 HCL_SLOTS=1 HCL_DIR=$tmp/netns HCL_PREFIX=hc$(($$ % 100000)) HCL_NET=10.78.$(($$ % 250))
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ip netns add "${HCL_PREFIX}probe" 2>/dev/null || { rm -rf "$tmp"; echo "SKIP: cannot make a network namespace"; exit 77; }
ip netns del "${HCL_PREFIX}probe"
cleanup() {
    if [ -n "${HCL_KEEP_LOGS:-}" ]; then cp "$tmp"/*.log "$HCL_KEEP_LOGS"/ 2>/dev/null || true; fi
    bash "$NETNS" down >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ip_of() { echo "$HCL_NET.$1"; }
ns_of() { echo "${HCL_PREFIX}h$1"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

bash "$NETNS" up >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; fail "the test bed did not come up"; }
[ -n "${HCL_RETRIES2:-}" ] && for i in 1 2 3; do ip netns exec "$(ns_of $i)" sysctl -qw net.ipv4.tcp_retries2=$HCL_RETRIES2; done
echo "test bed: $(grep -c '^host ' "$tmp/up.log") hosts, $(ip_of 1)-$(ip_of 3)"
# README's cluster parameters on top of the test bed's (ssh config, interfaces)
KEEP=(--mca oob_tcp_keepalive_time 3 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3)
txbytes() { ip -n "$(ns_of "$1")" -s -j link show eth0 | $PY -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["bytes"])'; }

"$B/hcl-data" synth "$tmp/data" --rows 4096 --widths 64,32,16 --seed 1 >/dev/null

# ---- 1. exactness --------------------------------------------------------------------------
exact=(--data "$tmp/data" --hidden 64 --dim 16 --batch-size 256 --steps 30 --log-every 1 --seed 3 --threads 1)
"$B/hcl-train" "${exact[@]}" --run-dir "$tmp/one" 2>"$tmp/one.log" || { cat "$tmp/one.log"; fail "one process"; }
t0=$(txbytes 1)
timeout 120 bash "$NETNS" run -np 3 "${KEEP[@]}" "$B/hcl-train" "${exact[@]}" --run-dir "$tmp/three" \
    >"$tmp/three.log" 2>&1 || { tail "$tmp/three.log"; fail "3 hosts"; }
t1=$(txbytes 1)
timeout 120 bash "$NETNS" run -np 3 "${KEEP[@]}" "$B/hcl-train" "${exact[@]}" --data-plane direct \
    --run-dir "$tmp/direct" >"$tmp/direct.log" 2>&1 || { tail "$tmp/direct.log"; fail "3 hosts, --data-plane direct"; }
t2=$(txbytes 1)
$PY - "$tmp" $((t1 - t0)) $((t2 - t1)) <<'PY' || fail "3 hosts and one process differ"
import json, sys
tmp, sent, sent_direct = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{tmp}/{run}/metrics.jsonl") if '"loss"' in l]
one, three, direct = losses("one"), losses("three"), losses("direct")
assert len(one) == len(three) == len(direct) == 30, (len(one), len(three), len(direct))
worst = max(abs(a - b) / abs(a) for a, b in zip(one, three))
assert worst <= 1e-5, f"3 hosts vs one process: worst relative difference {worst:.2e}"
assert direct == three, "--data-plane direct changed the losses"
assert sent_direct * 4 < sent, f"rank 0's host sent {sent} bytes, with --data-plane direct {sent_direct}"
print(f"30 steps on 3 hosts within {worst:.1e} of one process; --data-plane direct the same bits, "
      f"host 1 sent {sent / 1e6:.1f} MB -> {sent_direct / 1e6:.1f} MB")
PY

# ---- 1b. hierarchical gradient sums: 2 workers on each of h2 and h3 ----------------------------
hier=(--data "$tmp/data" --hidden 256 --dim 16 --batch-size 256 --steps 40 --log-every 1 --seed 3 --threads 1)
"$B/hcl-train" "${hier[@]}" --run-dir "$tmp/hier-one" 2>"$tmp/hier-one.log" || { cat "$tmp/hier-one.log"; fail "one process (1b)"; }
hosts="$(ip_of 1):1,$(ip_of 2):2,$(ip_of 3):2"
for run in hier:f32: hier16:bf16: flat:f32:1; do
    IFS=: read -r name dtype flat <<<"$run"
    a=$(txbytes 2)
    HCL_FLAT_ALLREDUCE=${flat:-0} timeout 120 bash "$NETNS" run -np 5 --host "$hosts" -x HCL_FLAT_ALLREDUCE "${KEEP[@]}"         "$B/hcl-train" "${hier[@]}" --comm-dtype "$dtype" --log-level debug --run-dir "$tmp/$name"         >"$tmp/$name.log" 2>&1 || { tail "$tmp/$name.log"; fail "2 hosts x 2 workers ($name)"; }
    echo "$name $(( $(txbytes 2) - a ))" >>"$tmp/hier.bytes"
done
grep -q "exchanges by MPI collectives, hierarchical" "$tmp/hier.log" || { grep "exchanges" "$tmp/hier.log"; fail "not hierarchical"; }
! grep -q "hierarchical" "$tmp/flat.log" || fail "HCL_FLAT_ALLREDUCE=1 still hierarchical"
$PY - "$tmp" <<'PY' || fail "hierarchical sums"
import json, sys
tmp = sys.argv[1]
sent = dict((k, int(v)) for k, v in (l.split() for l in open(f"{tmp}/hier.bytes")))
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{tmp}/{run}/metrics.jsonl") if '"loss"' in l]
one, hier, hier16, flat = losses("hier-one"), losses("hier"), losses("hier16"), losses("flat")
assert len(one) == len(hier) == len(hier16) == len(flat) == 40
w = max(abs(a - b) / abs(a) for a, b in zip(one, hier))
wf = max(abs(a - b) / abs(a) for a, b in zip(one, flat))
w16 = max(abs(a - b) / abs(a) for a, b in zip(one, hier16))
assert w <= 1e-5 and wf <= 1e-5, f"hierarchical {w:.2e}, flat {wf:.2e} from one process"
assert w16 <= 1e-2, f"hierarchical with bf16: {w16:.2e} from one process"
assert sent["hier"] * 1.15 < sent["flat"], f"h2 sent {sent['hier']} bytes hierarchical, {sent['flat']} flat"
assert sent["hier16"] * 1.5 < sent["hier"], f"h2 sent {sent['hier16']} bytes with bf16, {sent['hier']} with f32"
print(f"2 hosts x 2 workers: hierarchical within {w:.1e} of one process (flat {wf:.1e}, bf16 {w16:.1e}); "
      f"h2 sent {sent['flat'] / 1e6:.1f} MB flat, {sent['hier'] / 1e6:.1f} MB hierarchical, "
      f"{sent['hier16'] / 1e6:.1f} MB with bf16")
PY

# ---- the jobs of the later parts -----------------------------------------------------------
job=(--data "$tmp/data" --hidden 64 --dim 16 --batch-size 256 --steps 1000000 --log-every 5 --seed 3
     --threads 1 --worker-timeout 5 --checkpoint-every 50)
# rank R's process of the job in run directory RUN (all namespaces share one pid space)
rank_pid() {
    local p
    for p in $(pgrep -f "hcl-train.*$2( |$)" || true); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
# the job's processes left in the namespaces: ranks of RUN, and any orted
leftovers() {
    local i p out=""
    for i in 1 2 3; do
        for p in $(ip netns pids "$(ns_of $i)" 2>/dev/null || true); do
            if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qE "orted|hcl-train.*$1( |$)"; then
                out+=" $p($(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-40))"
            fi
        done
    done
    echo "$out"
}
start_job() {   # RUN [mpirun args...]: in the background, $mp its mpirun, back once training
    local run=$1
    shift
    bash "$NETNS" run "$@" "${KEEP[@]}" "$B/hcl-train" "${job[@]}" --run-dir "$run" "${extra[@]}" \
        >"$run.log" 2>&1 &
    mp=$!
    await_training "$run"
}
await_training() {   # RUN: back once it has its first checkpoint
    for _ in $(seq 300); do
        [ -d "$1/checkpoints/step-00000050" ] && return 0
        kill -0 $mp 2>/dev/null || { tail "$1.log"; fail "$1: the job ended before its first checkpoint"; }
        sleep 0.1
    done
    tail "$1.log"
    fail "$1: no checkpoint within 30 s"
}
# hcl-run on host 1 with the test bed's remote shell, the way a user's environment would give it
printf '%s slots=1\n' "$(ip_of 1)" "$(ip_of 2)" "$(ip_of 3)" >"$tmp/hostfile"
start_hcl_run() {   # RUN [hcl-run flags...]: in the background, $mp hcl-run, back once training
    local run=$1
    shift
    bash "$NETNS" exec 1 env OMPI_MCA_plm_rsh_agent=ssh OMPI_MCA_plm_rsh_args="-F $HCL_DIR/ssh_config" \
        OMPI_MCA_plm_rsh_no_tree_spawn=1 OMPI_MCA_orte_keep_fqdn_hostnames=1 OMPI_MCA_btl=tcp,vader,self \
        "$B/hcl-run" --hostfile "$tmp/hostfile" --iface "$HCL_NET.0/24" "$@" -- \
        "$B/hcl-train" "${job[@]}" --run-dir "$run" >"$run.log" 2>&1 &
    mp=$!
    await_training "$run"
}
# wait for mpirun ($mp) to end within LIMIT s of T0; then its exit code in $rc, the time in $took
await_end() {
    local t0=$1 limit=$2 what=$3
    while kill -0 $mp 2>/dev/null; do
        if [ "$(awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { print (b - a > l) }')" = 1 ]; then
            fail "$what: mpirun still running $limit s later ($(leftovers "$run"))"
        fi
        sleep 0.1
    done
    took=$(secs "$t0" "$(now)")
    rc=0
    wait $mp || rc=$?
}
# nothing of the job in any namespace (within 30 s of the job's end: a cut host's orted ends at
# its next TCP retransmission after the link is back, and the backoff grows while it is cut)
expect_clean() {
    local left
    for _ in $(seq 300); do
        left=$(leftovers "$1")
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    fail "$2: processes left:$left"
}

# ---- 2. hclctl from another host, with CURVE -----------------------------------------------
"$B/hclctl" keygen "$tmp/keys" --name server >/dev/null
"$B/hclctl" keygen "$tmp/keys" --name alice >/dev/null
"$B/hclctl" keygen "$tmp/keys" --name mallory >/dev/null
cat "$tmp/keys/alice.pub" >"$tmp/keys/authorized"
run=$tmp/ctl
extra=(--control "tcp://$(ip_of 1):5555" --control-secret "$tmp/keys/server.key" --control-clients "$tmp/keys/authorized")
start_job "$run" -np 3
ctl() {   # KEY hclctl-args...: hclctl on host 2
    local key=$1
    shift
    bash "$NETNS" exec 2 "$B/hclctl" --endpoint "tcp://$(ip_of 1):5555" --server-key "$tmp/keys/server.pub" \
        --curve-key "$tmp/keys/$key.key" "$@"
}
ctl alice --json status >"$tmp/s.json" || fail "hclctl status from host 2"
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["state"] == "running" and len(d["workers"]) == 2, d' \
    "$tmp/s.json" || fail "status from host 2: $(cat "$tmp/s.json")"
ctl alice pause >/dev/null || fail "pause from host 2"
ctl alice --json status | grep -q '"state": "paused"' || fail "not paused"
ctl alice resume >/dev/null || fail "resume from host 2"
if ctl mallory --timeout 2000 status >"$tmp/m.out" 2>&1; then fail "a key not in the list was answered"; fi
ctl alice stop >/dev/null || fail "stop from host 2"
await_end "$(now)" 30 "stop from host 2"
[ $rc = 0 ] || { tail "$run.log"; fail "stop from host 2: mpirun exit $rc"; }
expect_clean "$run" "stop from host 2"
echo "hclctl on host 2 with CURVE: status (2 workers), pause, resume, stop (exit 0); an unknown key unanswered"
extra=()

# ---- 3. faults -----------------------------------------------------------------------------
# FAULT: start a job, do it, and expect the whole job over within 15 s (timeout 5 + 10)
fault() {
    local name=$1 rank=$2 host=$3
    run=$tmp/$name
    start_hcl_run "$run" --max-restarts 0
    local pid t0
    pid=$(rank_pid $rank "$run") || fail "$name: no process of rank $rank"
    t0=$(now)
    case $name in
    kill-worker | kill-rank0) kill -9 "$pid" ;;
    cut-link) ip -n "$(ns_of 3)" link set eth0 down ;;
    freeze) kill -STOP "$pid" ;;
    esac
    await_end "$t0" "${HCL_CLUSTER_LIMIT:-15}" "$name"
    echo "$name: the whole job ended in $took s (exit $rc)"
    [ $rc != 0 ] || fail "$name: hcl-run exit 0"
    grep -q "hcl-run: gave up: no restart left" "$run.log" || { tail "$run.log"; fail "$name: no summary from hcl-run"; }
    # one line saying what happened to the rank, naming it and its host (its name or address):
    # rank 0's "silent ... lost" line or mpirun's "process rank R ... on node H exited"
    said() { grep -E "rank $rank\b.*(silent|lost|exited)" "$run.log" | grep -E "${HCL_PREFIX}h$host|$(ip_of "$host")\b"; }
    said >/dev/null || { grep -v " INFO " "$run.log" | tail; fail "$name: no line names rank $rank and host $host"; }
    [ $name = cut-link ] && ip -n "$(ns_of 3)" link set eth0 up
    [ $name = freeze ] && kill -CONT "$pid" 2>/dev/null
    expect_clean "$run" "$name"
    echo "$name: $(said | head -1 | cut -c1-200)"
}
# HCL_CLUSTER_FAULTS picks some (a debugging aid)
for f in ${HCL_CLUSTER_FAULTS:-kill-worker kill-rank0 freeze cut-link}; do
    case $f in
    kill-rank0) fault $f 0 1 ;;
    *) fault $f 2 3 ;;
    esac
done

# ---- 4. hcl-run restarts on the hosts left --------------------------------------------------
# 400 steps; h3's link cut after the first checkpoint: hcl-run ends the stuck job, finds h3 gone,
# relaunches with --resume auto on h1 and h2, and the run ends at step 400 with the losses of
# one uninterrupted process (same global batch) within 1e-5
run=$tmp/restart
job=("${job[@]/1000000/400}")
"$B/hcl-train" "${job[@]}" --run-dir "$tmp/uninterrupted" 2>"$tmp/uninterrupted.log" ||
    { tail "$tmp/uninterrupted.log"; fail "the uninterrupted run"; }
start_hcl_run "$run" --max-restarts 2
ip -n "$(ns_of 3)" link set eth0 down
for _ in $(seq 600); do
    "$B/hclctl" --run-dir "$run" --json status 2>/dev/null | grep -q '"restarts": 1' && break
    kill -0 $mp 2>/dev/null || break
    sleep 0.1
done
"$B/hclctl" --run-dir "$run" --json status 2>/dev/null | grep -q '"restarts": 1' ||
    { kill -0 $mp 2>/dev/null || true; tail "$run.log"; fail "hclctl status never showed restarts 1"; }
ip -n "$(ns_of 3)" link set eth0 up   # the partition heals: h3's orphaned orted meets a reset and ends
await_end "$(now)" 120 "the relaunched run"
[ $rc = 0 ] || { tail -20 "$run.log"; fail "hcl-run exit $rc after a restart"; }
grep -q "host $(ip_of 3) does not answer: dropped" "$run.log" || { tail "$run.log"; fail "h3 was not dropped"; }
$PY - "$run/metrics.jsonl" "$tmp/uninterrupted/metrics.jsonl" <<'PY' || fail "the restarted run"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if r.get("event") == "restart"]
assert len(ev) == 1 and ev[0]["restart"] == 1 and "does not answer" in ev[0]["reason"], ev
ref = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2])) if "loss" in r}
got = {r["step"]: r["loss"] for r in rows if "loss" in r}
assert max(got) == 400 and set(got) == set(ref), (max(got), sorted(set(ref) ^ set(got))[:5])
worst = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in ref)
assert worst <= 1e-5, f"worst relative difference {worst:.2e} against the uninterrupted run"
print(f"hcl-run: h3 dropped, relaunched from step {ev[0]['step']} on 2 hosts, step 400 reached; "
      f"400 steps within {worst:.1e} of one uninterrupted process; reason: {ev[0]['reason']}")
PY
expect_clean "$run" "the restarted run"
echo "test_cluster: ok"
