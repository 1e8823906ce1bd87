#!/usr/bin/env bash
# test_monitoring: TensorBoard event files and the Prometheus endpoint, checked with real
# clients. (1) A 2-worker run with validation and --eval-every: its event file, read by an
# independent reader (tests/tfevents_reader.py: the CRC-32C and the Event descriptors are its
# own), has valid framing and checksums, the file version, a SessionLog START, config.txt as a
# text summary, and for every metrics.jsonl line an Event at its step and time whose scalars are
# exactly the line's numbers (as float32); a flipped byte is caught. (2) A run cut back to an
# earlier checkpoint and resumed: a second file, the first unchanged, and TensorBoard's view
# (START drops the later steps of earlier files) has every step once, equal to metrics.jsonl.
# (3) Debian's prometheus server scrapes a paused job's --prometheus endpoint: after two scrapes
# its HTTP API returns the job's step, loss, state and both workers' series, equal to hclctl
# status; promtool check metrics accepts the page; 404 and 405 for other paths and methods.
# (4) Bad values: one line naming the flag, exit 2; --tensorboard off writes no directory.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
B=${HCL_BUILD:-$HCL_SRC/build}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONPATH=$HCL_SRC/tests
for p in prometheus promtool curl; do
    command -v $p >/dev/null || { echo "test_monitoring: SKIP: $p not installed (scripts/setup installs it)"; exit 77; }
done
tmp=$(mktemp -d /tmp/hcl_monitoring.XXXXXX)
pids=()
cleanup() {   # mpirun passes SIGTERM on to its ranks; SIGKILL would orphan them
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_monitoring: FAIL: $*" >&2; exit 1; }
cd "$tmp"
"$B/hcl-data" synth data --rows 1024 --widths 48,32,16 --classes 8 --seed 3 >/dev/null
"$B/hcl-data" synth val --rows 256 --widths 48,32,16 --classes 8 --seed 3 --split 1 >/dev/null
common=(--data data --hidden 64,32 --dim 16 --batch-size 128 --threads 1 --log-every 5)
train() { mpirun --oversubscribe -np 3 "$B/hcl-train" "${common[@]}" "$@"; }

# ---- 1. the event file against metrics.jsonl ------------------------------------------------
train --run-dir r1 --val-data val --eval-every 200 --steps 400 --log-every 40 2>r1.log || { cat r1.log; fail "run 1 failed"; }
$PY - r1 <<'PY' || fail "run 1: event file"
import json, struct, sys, shutil
import tfevents_reader as tr
run = sys.argv[1]
files = tr.files(f"{run}/tensorboard")
assert len(files) == 1, files
evs = tr.events(files[0])
assert evs[0].file_version == "brain.Event:2", evs[0]
assert evs[1].session_log.status == tr.SESSION_START and evs[1].step == 1, evs[1]
cfg = evs[2].summary.value[0]
assert cfg.tag == "config" and cfg.metadata.plugin_data.plugin_name == "text" and cfg.tensor.dtype == 7, cfg
text = cfg.tensor.string_val[0].decode()
assert "\n".join(l[4:] for l in text.split("\n")) == open(f"{run}/config.txt").read(), text[:200]
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
kinds = {k for l in lines for k in ("eval", "workers", "val_loss") if k in l}
assert kinds == {"eval", "workers", "val_loss"}, kinds
def leaves(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{path}/{k}" if path else k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}/{i}" if path else str(i))
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, x
data = evs[3:]
assert len(data) == len(lines), (len(data), len(lines))
n = 0
for ev, line in zip(data, lines):
    assert ev.step == line["step"], (ev.step, line["step"])
    if "time" in line:
        assert ev.wall_time == line["time"], (ev.wall_time, line["time"])
    want = {p: f32(v) for p, v in leaves(line) if p not in ("step", "time") and not
            (p.startswith("workers/") and p.endswith("/rank"))}
    got = {v.tag: v.simple_value for v in ev.summary.value}
    assert got == want, (line["step"], sorted(set(got) ^ set(want)), [(k, got.get(k), want[k]) for k in want if got.get(k) != want[k]][:3])
    n += len(got)
assert {"loss", "pair_loss/v0:v1", "lr", "logit_scale", "grad_norm", "samples_per_s", "skipped", "val_loss",
        "workers/0/compute_s", "workers/1/comm_s", "workers/1/wait_s"} <= {v.tag for e in data for v in e.summary.value}
assert any(t.startswith("eval/") for e in data for t in (v.tag for v in e.summary.value))
# the reader checks what it reads: a flipped byte in a copy is a bad checksum
raw = bytearray(open(files[0], "rb").read())
raw[len(raw) // 2] ^= 0x40
open("flipped.tfevents", "wb").write(raw)
try:
    tr.events("flipped.tfevents")
    raise AssertionError("a flipped byte was not caught")
except ValueError as e:
    assert "checksum" in str(e) or "truncated" in str(e), e
print(f"event file: {len(data)} events, {n} scalars equal to metrics.jsonl")
PY

# ---- 2. resumed: a new file, the old one unchanged, every step once ----------------------------
train --run-dir r2 --steps 40 --checkpoint-every 20 2>r2.log || { cat r2.log; fail "run 2 failed"; }
cp r2/tensorboard/*tfevents* first.copy
# as if the job had died after logging step 40 but before its checkpoint: back to step 20
rm -rf r2/checkpoints/step-00000040
echo step-00000020 > r2/checkpoints/latest
sleep 1   # a new file name (unix seconds)
train --run-dir r2 --steps 40 --checkpoint-every 20 --resume auto 2>r2b.log || { cat r2b.log; fail "resume failed"; }
grep -q "resum" r2b.log || { cat r2b.log; fail "run 2 did not resume"; }
$PY - r2 first.copy <<'PY' || fail "run 2: resumed event files"
import json, struct, sys
import tfevents_reader as tr
run, first = sys.argv[1], sys.argv[2]
files = tr.files(f"{run}/tensorboard")
assert len(files) == 2, files
assert open(files[0], "rb").read() == open(first, "rb").read(), "the first file changed"
start = tr.events(files[1])[1]
assert start.session_log.status == tr.SESSION_START and start.step == 21, start
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
steps = [l["step"] for l in lines]
assert steps == sorted(set(steps)) == list(range(5, 41, 5)), steps
seen = tr.scalars(f"{run}/tensorboard")
assert sorted(seen["loss"]) == steps, sorted(seen["loss"])
assert all(seen["loss"][l["step"]] == f32(l["loss"]) for l in lines)
# without the START record the steps of the first file after 20 would show twice, different
dup = [l for l in tr.events(files[0]) if l.step > 20 and l.HasField("summary")]
assert dup, "the first run logged nothing after step 20"
print(f"resumed: steps {steps[0]}..{steps[-1]} once each in TensorBoard's view of 2 files")
PY

# ---- 3. Prometheus scrapes a paused job -------------------------------------------------------
read -r port pport < <($PY -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
mpirun --oversubscribe -np 3 "$B/hcl-train" "${common[@]}" --run-dir r3 --steps 100000000 \
    --prometheus "127.0.0.1:$port" --log-every 100 2>r3.log &
pids+=($!)
for i in $(seq 100); do "$B/hclctl" --run-dir r3 pause >/dev/null 2>&1 && break; sleep 0.2; done
for i in $(seq 100); do
    "$B/hclctl" --run-dir r3 status --json >status.json 2>/dev/null && grep -q '"state": "paused"' status.json && break
    sleep 0.1
done
grep -q '"state": "paused"' status.json || { cat r3.log; fail "the job did not pause"; }
# paused, the numbers stand still once every worker has reported the last step taken
settled() {
    $PY -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(not (s["workers"] and all(w["step"] == s["step"] - 1 for w in s["workers"])))' status.json
}
for i in $(seq 100); do
    "$B/hclctl" --run-dir r3 status --json >status.json && settled && break
    sleep 0.1
done
settled || fail "the workers' telemetry did not catch up with the paused step: $(cat status.json)"
grep -q "\"prometheus_address\": \"127.0.0.1:$port\"" status.json || grep -q "127.0.0.1:$port" r3.log \
    || fail "the job does not say where /metrics is"
curl -sf "http://127.0.0.1:$port/metrics" >page.txt || fail "GET /metrics failed"
promtool check metrics <page.txt 2>promtool.err || { cat promtool.err; fail "promtool check metrics refused the page"; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other")
[ "$code" = 404 ] || fail "GET /other: $code, want 404"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/metrics")
[ "$code" = 405 ] || fail "POST /metrics: $code, want 405"
cat >prom.yml <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: hcl
    static_configs:
      - targets: ['127.0.0.1:$port']
YML
prometheus --config.file=prom.yml --storage.tsdb.path=tsdb --web.listen-address="127.0.0.1:$pport" \
    >prom.log 2>&1 &
pids+=($!)
$PY - "$pport" status.json <<'PY' || { tail -20 prom.log; fail "values through Prometheus"; }
import json, math, sys, time, urllib.parse, urllib.request
port, status = sys.argv[1], json.load(open(sys.argv[2]))
def query(q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]
deadline = time.time() + 60
while True:
    try:
        n = query('count_over_time(hcl_step{job="hcl"}[5m])')
        if n and float(n[0]["value"][1]) >= 2:
            break
    except OSError:
        pass
    assert time.time() < deadline, "no two scrapes of the job within 60 s"
    time.sleep(0.5)
val = lambda q: [float(r["value"][1]) for r in query(q)]
assert val('hcl_step{job="hcl"}') == [status["step"]], (val("hcl_step"), status["step"])
assert val('hcl_total_steps') == [status["total_steps"]]
assert math.isclose(val('hcl_loss')[0], status["loss"], rel_tol=1e-12), (val("hcl_loss"), status["loss"])
assert math.isclose(val('hcl_learning_rate')[0], status["lr"], rel_tol=1e-12)
assert math.isclose(val('hcl_logit_scale')[0], status["logit_scale"], rel_tol=1e-12)
assert val('hcl_state{state="paused"}') == [1.0] and val('sum(hcl_state)') == [1.0], query("hcl_state")
assert val('hcl_skipped_steps_total') == [0.0]
assert val('hcl_checkpoint_last_step') == [status["last_checkpoint_step"]]
ranks = sorted(r["metric"]["rank"] for r in query("hcl_worker_compute_seconds"))
assert ranks == ["1", "2"], ranks
for w in status["workers"]:
    got = [float(r["value"][1]) for r in query(f'hcl_worker_compute_seconds{{rank="{w["rank"]}"}}')]
    assert got and math.isclose(got[0], w["compute_s"], rel_tol=1e-12), (w, got)
rss = val("min(hcl_worker_resident_memory_bytes)")
assert rss and rss[0] > 1e6, rss
print(f"prometheus: {int(float(query('count_over_time(hcl_step[5m])')[0]['value'][1]))} scrapes; "
      f"step {status['step']}, state paused, workers {ranks}")
PY
"$B/hclctl" --run-dir r3 stop --no-checkpoint >/dev/null 2>&1 || "$B/hclctl" --run-dir r3 stop >/dev/null
for i in $(seq 100); do kill -0 "${pids[0]}" 2>/dev/null || break; sleep 0.2; done
kill -0 "${pids[0]}" 2>/dev/null && fail "the job did not stop"
wait "${pids[0]}" || fail "the job exited $?"

# ---- 4. bad values and off ---------------------------------------------------------------------
bad() {
    local what=$1; shift
    local rc=0
    "$B/hcl-train" "${common[@]}" --steps 2 --log-level warn "$@" >out 2>err || rc=$?
    [ "$rc" = 2 ] || fail "$what: exit $rc, want 2 ($(cat err))"
    [ "$(grep -c . err)" = 1 ] && grep -q -- "$what" err || fail "$what: want one line naming it, got: $(cat err)"
}
bad "--prometheus 70000" --run-dir b1 --prometheus 70000
bad "--prometheus x:y" --run-dir b2 --prometheus x:y
$PY -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)' >busy.port &
pids+=($!)
for i in $(seq 50); do [ -s busy.port ] && break; sleep 0.1; done
bad "--prometheus 127.0.0.1:$(cat busy.port)" --run-dir b3 --prometheus "127.0.0.1:$(cat busy.port)"
touch notadir
bad "notadir/tb" --run-dir b4 --tensorboard notadir/tb
"$B/hcl-train" "${common[@]}" --steps 2 --run-dir b5 --tensorboard off 2>/dev/null || fail "--tensorboard off: run failed"
[ ! -e b5/tensorboard ] || fail "--tensorboard off wrote b5/tensorboard"
"$B/hcl-train" "${common[@]}" --steps 2 --run-dir b6 --tensorboard tb6 2>/dev/null || fail "--tensorboard DIR: run failed"
ls tb6/events.out.tfevents.* >/dev/null || fail "--tensorboard tb6 wrote no event file there"
echo "test_monitoring: ok"
