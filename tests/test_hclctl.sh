#!/usr/bin/env bash
# test_hclctl: the hclctl client end to end. Usage errors exit 2 with one line; keygen writes a
# Z85 key pair with modes 0600/0644 and never overwrites; nothing listening is exit 3 with the
# "no answer ... within N ms (is the job running?)" line, and with --json also one JSON error
# object on stdout; status's TensorBoard and Prometheus lines (text and --json, on and off) from
# a fake coordinator with a crafted StatusBody; the job's strings with escape sequences and
# invalid UTF-8 shown escaped on the terminal and valid UTF-8 in --json; a reply of the wrong
# kind (an ack to status) exit 3; then
# against a fake job (test_control --serve: the real control plane behind a fake step loop
# whose worker 0 sends telemetry, after dropping its first messages) every command, --json,
# the worker table with its dropped-telemetry column, watch, stop, and CURVE (listed key
# answered, unknown key exit 3, keys required off loopback). Watch of several jobs: against
# fake jobs, bad run directories (twice, no control socket) exit 2 with one line naming them,
# lines prefixed with the basename (the full path when two are the same), --json's "job" key,
# --count over all jobs, SIGINT; against real hcl-train jobs, a job that finishes or is
# stopped reported "ended" once while the other goes on (exit 0), a coordinator killed with
# SIGKILL reported "lost" (exit 3), and status's monitoring lines agreeing with its --json.
#   HCL_BUILD=build-ctl bash tests/test_hclctl.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
HCL_BUILD=${HCL_BUILD:-$HCL_SRC/build}
case $HCL_BUILD in /*) ;; *) HCL_BUILD=$PWD/$HCL_BUILD ;; esac
ctl=$HCL_BUILD/hclctl
srv=$HCL_BUILD/test_control
py=/usr/bin/python3
[ -x "$ctl" ] || { echo "test_hclctl: FAIL: $ctl not built" >&2; exit 1; }

tmp=$(mktemp -d /tmp/test_hclctl.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_hclctl: FAIL: $*" >&2; exit 1; }
cd "$tmp"

# run WANT CMD...: run CMD, its exit status must be WANT; stdout in out, stderr in err
run() {
    local want=$1; shift
    local got=0
    "$@" >out 2>err || got=$?
    [ "$got" = "$want" ] || fail "$* exited $got, want $want; stderr: $(cat err); stdout: $(head -c 600 out)"
}
one_line_error() {
    [ "$(wc -l <err)" = 1 ] && grep -q '^hclctl: ' err || fail "$1: want one 'hclctl: ...' line, got: $(cat err)"
}

# ---- --help and usage errors: exit 2, one line ---------------------------------------------
run 0 "$ctl" --help
grep -q '^usage: hclctl' out && grep -q '3  no answer' out && grep -q 'checkpoint_interval=S' out ||
    fail "--help lacks usage, exit codes or set keys: $(cat out)"
run 2 "$ctl"
grep -q '^usage: hclctl' err || fail "no command: want the usage on stderr"
for args in "frobnicate" "status --bogus" "set" "set lr" "set =1" "set lr=" "status --timeout abc" \
            "status --timeout 0" "watch --count -1" "status --count 3" "pause --no-checkpoint" \
            "status extra" "keygen" "status --run-dir . --endpoint ipc:///x" "status --json=1" \
            "status --endpoint tcp://10.1.2.3:5555" "status --endpoint tcp://*:5555" \
            "status --endpoint ipc:///x --curve-key nonexistent.key" "status --endpoint ipc:///x --server-key s.pub" \
            "status --run-dir a --run-dir b" "pause --run-dir=a --run-dir b"; do
    # shellcheck disable=SC2086
    run 2 "$ctl" $args
    one_line_error "hclctl $args"
done
grep -q 'only for' <("$ctl" status --count 3 2>&1) || fail "--count with status: no 'only for'"
grep -q 'CURVE' <("$ctl" status --endpoint tcp://10.1.2.3:5555 2>&1) || fail "non-loopback without keys: no CURVE hint"

# ---- keygen --------------------------------------------------------------------------------
z85='^[]0-9A-Za-z.:+=^!/*?&<>()@%$#{}[-]{40}$'
run 0 "$ctl" keygen keys
[ "$(stat -c %a keys/hcl.key)" = 600 ] || fail "keys/hcl.key mode $(stat -c %a keys/hcl.key), want 600"
[ "$(stat -c %a keys/hcl.pub)" = 644 ] || fail "keys/hcl.pub mode $(stat -c %a keys/hcl.pub), want 644"
[ "$(stat -c %a keys)" = 700 ] || fail "keys/ mode $(stat -c %a keys), want 700 (created by keygen)"
grep -v '^#' keys/hcl.key | grep -Eq "$z85" || fail "keys/hcl.key holds no Z85 key: $(cat keys/hcl.key)"
[ "$(wc -l <keys/hcl.pub)" = 1 ] && grep -Eq "$z85" keys/hcl.pub || fail "keys/hcl.pub: $(cat keys/hcl.pub)"
grep -qF -- "$(cat keys/hcl.pub)" out || fail "keygen does not print the public key: $(cat out)"
for n in server alice mallory; do run 0 "$ctl" keygen keys --name "$n"; done
cmp -s keys/alice.pub keys/mallory.pub && fail "two keygens wrote the same key"
before=$(cat keys/alice.key)
run 1 "$ctl" keygen keys --name alice
grep -q 'exists' err || fail "keygen over an existing key: $(cat err)"
[ "$(cat keys/alice.key)" = "$before" ] || fail "keygen overwrote keys/alice.key"
ls -a keys | grep -q tmp && fail "keygen left a temp file: $(ls -a keys)"
run 0 "$ctl" --json keygen keys --name j
"$py" -c 'import json,sys; d=json.load(open("out")); assert len(d["public_key"]) == 40, d' ||
    fail "keygen --json: $(cat out)"

# ---- nothing answers: exit 3 and one clear line --------------------------------------------
mkdir none
echo "ipc://$tmp/none/nobody.sock" >none/control.endpoint
t0=$(date +%s%N)
run 3 "$ctl" --run-dir none --timeout 300 status
t1=$(date +%s%N)
[ "$(cat err)" = "hclctl: no answer from ipc://$tmp/none/nobody.sock within 300 ms (is the job running?)" ] ||
    fail "no-answer message: $(cat err)"
[ $(( (t1 - t0) / 1000000 )) -lt 1500 ] || fail "--timeout 300 took $(( (t1 - t0) / 1000000 )) ms"
run 3 "$ctl" --endpoint tcp://127.0.0.1:9 status
grep -q '^hclctl: no answer from tcp://127.0.0.1:9 within 2000 ms (is the job running?)$' err ||
    fail "no-answer message with the default timeout: $(cat err)"
run 3 "$ctl" --run-dir nowhere pause
grep -q 'nowhere/control.endpoint: not found (is the job running?' err || fail "no run dir: $(cat err)"
one_line_error "missing control.endpoint"
# --json: a failure is also one JSON object on stdout (it printed nothing there), its message
# the stderr line's
json_error() {
    "$py" - "$@" <<'PY' || fail "--json error object (want $1, '$2'): stdout: $(cat out); stderr: $(cat err)"
import json, sys
lines = open("out", encoding="utf-8").read().splitlines()
assert len(lines) == 1, lines
d = json.loads(lines[0])
assert d["ok"] is False and d["error"] == sys.argv[1] and sys.argv[2] in d["message"], d
assert open("err").read() == "hclctl: " + d["message"] + "\n", d
PY
}
run 3 "$ctl" --run-dir none --timeout 300 --json status
json_error no_answer "no answer from ipc://$tmp/none/nobody.sock within 300 ms"
run 3 "$ctl" --run-dir nowhere --json pause
json_error no_answer "nowhere/control.endpoint: not found"
run 2 "$ctl" --json status extra
json_error usage "unexpected argument 'extra'"

# ---- status: TensorBoard and Prometheus, from a crafted StatusBody ------------------------
# A fake coordinator in Python: a ROUTER (libzmq through ctypes) answering every request with
# a StatusBody encoded by hand (field numbers of proto/control.proto), so these fields are
# tested whatever the real coordinator fills in.
# MODE (argv[4]): status (the default); evil: strings with terminal escapes, control characters
# and invalid UTF-8; ack: an AckBody to every request; error: an error reply with such a message.
cat >fake_status.py <<'PY'
import ctypes, ctypes.util, os, struct, sys
d, tb, prom = sys.argv[1:4]
mode = sys.argv[4] if len(sys.argv) > 4 else "status"
z = ctypes.CDLL(ctypes.util.find_library("zmq") or "libzmq.so.5")
z.zmq_ctx_new.restype = z.zmq_socket.restype = ctypes.c_void_p
z.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
z.zmq_bind.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
z.zmq_recv.argtypes = z.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
def varint(n):
    n, out = n & (1 << 64) - 1, b""
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])
def field(num, v):   # int: varint; float: double; bytes: length-delimited
    if isinstance(v, float): return varint(num << 3 | 1) + struct.pack("<d", v)
    if isinstance(v, bytes): return varint(num << 3 | 2) + varint(len(v)) + v
    return varint(num << 3) + varint(v)
def read_varint(b, i):
    v = shift = 0
    while True:
        v, shift, i = v | (b[i] & 0x7F) << shift, shift + 7, i + 1
        if not b[i - 1] & 0x80: return v, i
def request_id(b):   # ControlRequest field 1; other fields skipped
    i = 0
    while i < len(b):
        key, i = read_varint(b, i)
        v, i = read_varint(b, i) if key & 7 in (0, 2) else (0, len(b))
        if key == 1 << 3: return v
        if key & 7 == 2: i += v
    return 0
status = (field(1, 2) + field(2, 42) + field(3, 100) + field(5, 0.5) + field(6, 1e-3) + field(7, 1.0)
          + field(13, -1) + field(15, 10) + field(18, d.encode()) + field(20, 0)
          + (field(21, tb.encode()) if tb else b"") + (field(22, prom.encode()) if prom else b""))
evil = b"\x1b[31mred\x1b[0m \x07\xff\xc3( \xc2\x9b2J \xed\xa0\x80 caf\xc3\xa9"
if mode == "evil":
    worker = field(1, 0) + field(2, 3) + field(13, 1) + field(15, 4) + field(16, b"loss\x1b[2J" + evil) + field(17, 0.5)
    status = (field(1, 2) + field(2, 42) + field(3, 100) + field(12, b"/ckpt/" + evil) + field(13, 40)
              + field(14, b"disk\nfull " + evil) + field(15, 10) + field(18, b"/runs/" + evil)
              + field(19, worker) + field(20, 1) + field(21, evil) + field(22, b"127.0.0.1:1" + evil))
s = z.zmq_socket(z.zmq_ctx_new(), 6)   # ROUTER
ep = "ipc://" + os.path.abspath(d) + "/control.sock"
assert z.zmq_bind(s, ep.encode()) == 0, ep
open(d + "/control.endpoint", "w").write(ep + "\n")
ident, msg = ctypes.create_string_buffer(256), ctypes.create_string_buffer(65536)
while True:
    n, m = z.zmq_recv(s, ident, 256, 0), z.zmq_recv(s, msg, 65536, 0)
    if n < 0 or m < 0: continue
    reply = field(1, request_id(msg.raw[:m])) + field(2, 1)
    if mode == "ack": reply += field(3, 1) + field(11, field(1, 7))
    elif mode == "error": reply += field(4, 8) + field(5, b"boom " + evil)
    else: reply += field(3, 1) + field(10, status)
    z.zmq_send(s, ident, n, 2)   # ZMQ_SNDMORE
    z.zmq_send(s, reply, len(reply), 0)
PY
wait_endpoint() {
    for _ in $(seq 200); do [ -s "$1/control.endpoint" ] && return 0; sleep 0.05; done
    fail "$1/control.endpoint never appeared"
}
mkdir mon nomon
"$py" fake_status.py mon /runs/r1/tensorboard 127.0.0.1:9464 2>mon.log &
pids+=($!)
"$py" fake_status.py nomon "" "" 2>nomon.log &
pids+=($!)
wait_endpoint mon
wait_endpoint nomon
run 0 "$ctl" --run-dir mon status
grep -Eq '^step +42 / 100 ' out || fail "status from the fake coordinator: $(cat out)"
grep -Eqx 'tensorboard +/runs/r1/tensorboard' out || fail "status lacks the TensorBoard directory: $(cat out)"
grep -Eqx 'prometheus +http://127.0.0.1:9464/metrics' out || fail "status lacks the Prometheus address: $(cat out)"
run 0 "$ctl" --run-dir mon --json status
"$py" - <<'PY' || fail "status --json with TensorBoard and Prometheus: $(cat out)"
import json
d = json.load(open("out"))
assert d["step"] == 42 and d["tensorboard_dir"] == "/runs/r1/tensorboard", d
assert d["prometheus_address"] == "127.0.0.1:9464", d
assert d["prometheus_url"] == "http://127.0.0.1:9464/metrics", d
PY
run 0 "$ctl" --run-dir nomon status
grep -Eqx 'tensorboard +off' out && grep -Eqx 'prometheus +off' out || fail "status with both off: $(cat out)"
run 0 "$ctl" --run-dir nomon --json status
"$py" -c 'import json; d=json.load(open("out")); assert d["tensorboard_dir"] is None and d["prometheus_address"] is None and d["prometheus_url"] is None, d' ||
    fail "status --json with both off: $(cat out)"

# The job's strings reach the terminal escaped (no escape sequence, control character or
# invalid UTF-8 gets through: \xNN and \uNNNN stand for them) and --json as valid UTF-8.
mkdir evil ack error
for m in evil ack error; do
    "$py" fake_status.py $m "" "" $m 2>$m.log &
    pids+=($!)
done
for m in evil ack error; do wait_endpoint $m; done
terminal_safe() {   # FILE WHAT: valid UTF-8 without C0 (but newline), DEL or C1 characters
    "$py" - "$1" <<'PY' || fail "$2 is not safe for a terminal: $(od -c "$1" | head -20)"
import re, sys
t = open(sys.argv[1], "rb").read().decode("utf-8")
bad = re.findall("[\x00-\x09\x0b-\x1f\x7f-\x9f]", t)
assert not bad, bad
assert "\\x1b[31mred\\x1b[0m \\x07\\xff\\xc3( \\u009b2J \\xed\\xa0\\x80 caf\u00e9" in t, t
PY
}
run 0 "$ctl" --run-dir evil status
terminal_safe out "status"
grep -Eq '^run dir +/runs/\\x1b\[31mred' out || fail "status: the run dir is not shown escaped: $(cat out)"
grep -q 'step 4 loss\\x1b\[2J' out || fail "status: the worker's phase is not shown escaped: $(cat out)"
run 0 "$ctl" --run-dir evil --json status
"$py" - <<'PY' || fail "status --json of the job's bytes: $(od -c out | head -30)"
import json
d = json.loads(open("out", "rb").read().decode("utf-8"))
evil = "\x1b[31mred\x1b[0m \x07\ufffd\ufffd( \x9b2J \ufffd\ufffd\ufffd caf\u00e9"
assert d["run_dir"] == "/runs/" + evil and d["last_checkpoint_error"] == "disk\nfull " + evil, d
assert d["workers"][0]["phase"] == "loss\x1b[2J" + evil, d
PY
run 1 "$ctl" --run-dir error pause
terminal_safe err "an error reply on stderr"
one_line_error "an error reply"
run 1 "$ctl" --run-dir error --json pause
"$py" -c 'import json; d = json.loads(open("out", "rb").read().decode("utf-8")); assert d["message"].startswith("boom \x1b[31m"), d' ||
    fail "an error reply --json: $(cat out)"
# A reply of the wrong kind is an error (an AckBody answering status was printed as "ok" and
# exit 0), in --json too; an AckBody still answers pause.
run 3 "$ctl" --run-dir ack status
[ "$(cat err)" = "hclctl: status: the job sent a reply of the wrong kind (ack, not status)" ] || fail "ack to status: $(cat err)"
[ ! -s out ] || fail "ack to status printed: $(cat out)"
run 3 "$ctl" --run-dir ack --json status
json_error no_answer "the job sent a reply of the wrong kind (ack, not status)"
run 3 "$ctl" --run-dir ack watch --count 1
grep -q 'wrong kind (ack, not watch)' err || fail "ack to watch: $(cat err)"
run 3 "$ctl" --run-dir evil pause
grep -q 'wrong kind (status, not ack)' err || fail "status to pause: $(cat err)"
run 0 "$ctl" --run-dir ack pause
[ "$(cat out)" = "ok: pause at step 7" ] || fail "ack to pause: $(cat out)"

# ---- a live (fake) job ---------------------------------------------------------------------
if [ ! -x "$srv" ]; then
    echo "test_hclctl: $srv not built: skipping the live-job part"
    echo "test_hclctl: ok"
    exit 0
fi
mkdir job
"$srv" --serve job --step-ms 20 2>job.log &
pids+=($!)
job_pid=$!
wait_endpoint job
grep -q "^ipc://$tmp/job/control.sock$" job/control.endpoint || fail "job endpoint: $(cat job/control.endpoint)"
[ "$(stat -c %a job/control.sock)" = 600 ] || fail "control.sock mode $(stat -c %a job/control.sock)"

run 0 "$ctl" --run-dir job status
for pat in '^state +running$' '^step +[0-9]+ / 1000000' '^workers +2$' \
           '^worker +rank +host +compute ms.* dropped +straggler +current$' '^ +1 +2 +hclh3 .* never +0 *$'; do
    grep -Eq "$pat" out || fail "status lacks /$pat/: $(cat out)"
done
# worker 0 dropped its first telemetry messages (sent before its connection was up): the count
# reached the coordinator with a later message
awk '$1 == "0" && $2 == "1" && $3 == "hclh2" && $12 ~ /^[0-9]+$/ && $12 >= 50 { ok = 1 } END { exit !ok }' out ||
    fail "status: worker 0's dropped count is not >= 50: $(cat out)"
run 0 "$ctl" --run-dir job --json status
"$py" - <<'EOF' || fail "status --json: $(cat out)"
import json
d = json.load(open("out"))
assert d["ok"] and d["state"] == "running" and d["step"] > 0 and d["nworkers"] == 2, d
assert [w["index"] for w in d["workers"]] == [0, 1] and d["workers"][0]["straggler"] is False, d
assert [(w["rank"], w["host"]) for w in d["workers"]] == [(1, "hclh2"), (2, "hclh3")], d["workers"]
assert d["lr_scale"] == 1 and d["log_every"] == 10, d
w0, w1 = d["workers"]
assert w0["messages"] > 0 and w0["telemetry_dropped"] >= 50 and w0["compute_s"] > 0, w0
assert w1["messages"] == 0 and w1["telemetry_dropped"] == 0, w1
EOF
run 0 "$ctl" --run-dir job pause
grep -Eq '^ok: pause at step [0-9]+$' out || fail "pause: $(cat out)"
run 0 "$ctl" --run-dir job status
grep -Eq '^state +paused$' out || fail "status after pause: $(cat out)"
run 1 "$ctl" --run-dir job pause
[ "$(cat err)" = "hclctl: pause: refused: already paused" ] || fail "second pause: $(cat err)"
run 0 "$ctl" --run-dir job --json resume
"$py" -c 'import json; d=json.load(open("out")); assert d["ok"] and d["command"] == "resume" and d["step"] > 0, d' ||
    fail "resume --json: $(cat out)"
run 1 "$ctl" --run-dir job resume
run 0 "$ctl" --run-dir job set lr=5e-4
grep -Eq '^ok: set lr=5e-4 at step [0-9]+' out || fail "set lr: $(cat out)"
run 0 "$ctl" --run-dir job --json status
"$py" -c 'import json; d=json.load(open("out")); assert abs(d["lr"] - 5e-4) < 1e-12 and abs(d["lr_scale"] - 0.5) < 1e-12, d' ||
    fail "lr after set lr=5e-4: $(cat out)"
run 0 "$ctl" --run-dir job set checkpoint_every=500
run 1 "$ctl" --run-dir job set log_every=0
grep -q '^hclctl: set: bad_value: log_every: bad value' err || fail "set log_every=0: $(cat err)"
run 1 "$ctl" --run-dir job --json set bogus=1
"$py" -c 'import json; d=json.load(open("out")); assert not d["ok"] and d["error"] == "bad_key", d' ||
    fail "set bogus=1 --json: $(cat out)"
run 0 "$ctl" --run-dir job checkpoint
grep -Eq "^ok: checkpoint at step [0-9]+: job/checkpoints/step-[0-9]{8}$" out || fail "checkpoint: $(cat out)"
run 0 "$ctl" --run-dir job status
grep -Eq '^ckpt every +500 steps$' out && grep -Eq "^checkpoint +job/checkpoints/step-[0-9]{8} \(step [0-9]+\)$" out ||
    fail "status after set and checkpoint: $(cat out)"
run 0 timeout 10 "$ctl" --run-dir job watch --count 3
[ "$(grep -Ec '^step [0-9]+/1000000 epoch [0-9]+ loss [0-9.]+ lr 0.0005 ' out)" = 3 ] || fail "watch: $(cat out)"
run 0 timeout 10 "$ctl" --run-dir job --json watch --count 2
"$py" -c '
import json, re, time
ev = [json.loads(l) for l in open("out")]
assert len(ev) == 2 and ev[1]["step"] > ev[0]["step"] and ev[0]["state"] == "running", ev
# times to the millisecond: the wall clock with at most 3 decimals (it had 7), and close to now
t = re.findall(r"\"(time|eta_s)\": ([-0-9.e+]+)", open("out").read())
assert len(t) == 4 and all(re.fullmatch(r"\d+(\.\d{1,3})?", v) for k, v in t), t
assert abs(ev[1]["time"] - time.time()) < 60, ev[1]' || fail "watch --json: $(cat out)"
# watch until interrupted: SIGINT ends it cleanly
timeout -s INT 1 "$ctl" --run-dir job watch >out 2>err || true
[ "$(grep -c '^step ' out)" -ge 5 ] || fail "watch until SIGINT printed $(grep -c '^step ' out) lines"
run 0 "$ctl" --run-dir job stop --no-checkpoint
grep -Eq '^ok: stop at step [0-9]+$' out || fail "stop: $(cat out)"
for _ in $(seq 100); do kill -0 "$job_pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$job_pid" 2>/dev/null && fail "the job still runs after stop"
wait "$job_pid" || fail "the fake job exited $?"
[ -e job/control.endpoint ] && fail "control.endpoint left after the job ended"
[ -e job/control.sock ] && fail "control.sock left after the job ended"
run 3 "$ctl" --run-dir job status

# ---- CURVE ---------------------------------------------------------------------------------
cat keys/alice.pub >clients
mkdir cjob
run 1 "$srv" --serve cjob --endpoint 'tcp://0.0.0.0:*'
grep -q 'needs CURVE' err || fail "an open endpoint without keys: $(cat err)"
"$srv" --serve cjob --endpoint 'tcp://0.0.0.0:*' --secret keys/server.key --clients clients 2>cjob.log &
pids+=($!)
cjob_pid=$!
wait_endpoint cjob
grep -qxF -- "curve-server-key $(cat keys/server.pub)" cjob/control.endpoint || fail "cjob endpoint file: $(cat cjob/control.endpoint)"
run 2 "$ctl" --run-dir cjob status
grep -q 'CURVE clients only: pass --curve-key' err || fail "CURVE job without a key: $(cat err)"
run 0 "$ctl" --run-dir cjob --curve-key keys/alice.key status
grep -Eq '^state +running$' out || fail "CURVE status: $(cat out)"
ep=$(head -1 cjob/control.endpoint)
run 0 "$ctl" --endpoint "$ep" --curve-key keys/alice.key --server-key keys/server.pub --json status
run 3 "$ctl" --run-dir cjob --curve-key keys/mallory.key --timeout 500 status
grep -q "^hclctl: no answer from $ep within 500 ms (is the job running? is this client's key in its client list?)$" err ||
    fail "unknown key: $(cat err)"
run 0 timeout 10 "$ctl" --run-dir cjob --curve-key keys/alice.key watch --count 2
[ "$(grep -c '^step ' out)" = 2 ] || fail "CURVE watch: $(cat out)"
chmod 644 keys/alice.key
run 2 "$ctl" --run-dir cjob --curve-key keys/alice.key status
grep -q 'chmod 600' err || fail "a readable secret key: $(cat err)"
chmod 600 keys/alice.key
run 0 "$ctl" --run-dir cjob --curve-key keys/alice.key stop
wait "$cjob_pid" || fail "the CURVE fake job exited $?"

# ---- watch of several jobs: fake jobs ------------------------------------------------------
# wait_for FILE ERE SECONDS: until a line of FILE matches
wait_for() {
    for _ in $(seq $(($3 * 20))); do grep -Eq -- "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    fail "no /$2/ in $1 within $3 s: $(tail -5 "$1" 2>/dev/null)"
}
mkdir -p f1 f2 x/job y/job empty
for d in f1 f2 x/job y/job; do
    "$srv" --serve "$d" --step-ms 30 2>>fake.log &
    pids+=($!)
done
for d in f1 f2 x/job y/job; do wait_endpoint "$d"; done
# bad input: one line naming the run directory, exit 2, nothing on stdout
for bad in none empty nowhere ./f1/ f2/../f1; do
    run 2 timeout 10 "$ctl" --run-dir f1 --run-dir "$bad" --run-dir f2 watch
    one_line_error "watch with --run-dir $bad"
    grep -qF -- "--run-dir $bad:" err || fail "watch with --run-dir $bad: the line does not name it: $(cat err)"
    [ -s out ] && fail "watch with --run-dir $bad printed: $(cat out)"
done
grep -q 'same run directory as --run-dir f1' err || fail "f1 twice: $(cat err)"
run 2 timeout 10 "$ctl" --run-dir f1 --run-dir empty watch
grep -q 'no control socket' err || fail "a run dir without control.endpoint: $(cat err)"
run 2 timeout 10 "$ctl" --run-dir f1 --run-dir none watch
grep -q 'no control socket' err || fail "a run dir whose socket is gone: $(cat err)"
# until SIGINT: every job's lines, prefixed with its basename or, when two basenames are the
# same, its full path; no job reported gone; exit 0 soon after the signal
t0=$(date +%s%N)
run 0 timeout --preserve-status -s INT 2 "$ctl" --run-dir f1 --run-dir f2 --run-dir x/job --run-dir y/job watch
[ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 3500 ] || fail "watch took $(( ($(date +%s%N) - t0) / 1000000 )) ms to stop on SIGINT"
[ -s err ] && fail "watch of 4 jobs wrote to stderr: $(cat err)"
for p in f1 f2 "$(realpath x/job)" "$(realpath y/job)"; do
    [ "$(grep -cF -- "$p: step " out)" -ge 5 ] || fail "watch of 4 jobs: fewer than 5 lines of $p: $(head -20 out)"
done
bad_lines=$(grep -vE "^(f1|f2|$(realpath x/job)|$(realpath y/job)): step [0-9]+/1000000 epoch 0 loss [0-9.]+ .* running$" out || true)
[ -z "$bad_lines" ] || fail "watch of 4 jobs: lines without a job or not a step: $bad_lines"
# --json: a "job" key on every line; --count counts the events of all jobs
run 0 timeout 10 "$ctl" --run-dir f1 --run-dir f2 --json watch --count 8
"$py" - <<'PY' || fail "watch --json of 2 jobs: $(cat out)"
import json
ev = [json.loads(l) for l in open("out")]
assert len(ev) == 8 and {e["job"] for e in ev} == {"f1", "f2"}, ev
for job in ("f1", "f2"):
    steps = [e["step"] for e in ev if e["job"] == job]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), (job, steps)
PY
# one --run-dir: the lines as they were, no prefix
run 0 timeout 10 "$ctl" --run-dir f1 watch --count 2
[ "$(grep -Ec '^step [0-9]+/1000000 ' out)" = 2 ] || fail "watch of one job: $(cat out)"
for d in f1 f2 x/job y/job; do run 0 "$ctl" --run-dir "$d" stop --no-checkpoint; done

# ---- watch of several jobs: real training jobs ---------------------------------------------
# hcl-train in one process each; a job's end reported once when it finishes or is stopped
# (exit 0), a coordinator killed with SIGKILL reported lost while the other goes on (exit 3).
train=$HCL_BUILD/hcl-train
"$HCL_BUILD/hcl-data" synth data --rows 4096 --widths 64,32,16 --seed 1 >/dev/null
start_job() {   # start_job DIR STEPS: job_pid is its pid
    "$train" --data data --hidden 256,256 --dim 32 --batch-size 256 --steps "$2" --threads 1 --log-every 100 \
        --run-dir "$1" >"$1.log" 2>&1 &
    job_pid=$!
    pids+=("$job_pid")
}
# ja runs to its end (1000 steps, a few seconds), jb until stopped
start_job ja 1000
ja_pid=$job_pid
start_job jb 100000
wait_endpoint ja
wait_endpoint jb
"$ctl" --run-dir ja --run-dir jb --timeout 1000 watch >w1.out 2>w1.err &
w1_pid=$!
pids+=("$w1_pid")
wait_for w1.out '^ja: step ' 30
wait_for w1.out '^jb: step ' 30
wait_for w1.out '^ja: ended$' 120
wait "$ja_pid" || fail "job ja exited $?: $(tail -3 ja.log)"
# jb goes on after ja ended
n_after() { sed -n '/^ja: ended$/,$p' w1.out | grep -c '^jb: step ' || true; }
for _ in $(seq 200); do [ "$(n_after)" -ge 3 ] && break; sleep 0.05; done
[ "$(n_after)" -ge 3 ] || fail "no jb lines after ja ended: $(tail -5 w1.out)"
kill -0 "$w1_pid" || fail "watch ended with one job still running: $(tail -5 w1.out)"
# status of a real job: the monitoring lines agree with --json, whatever the coordinator fills
run 0 "$ctl" --run-dir jb --json status
tb=$("$py" -c 'import json; print(json.load(open("out"))["tensorboard_dir"] or "off")')
prom=$("$py" -c 'import json; print(json.load(open("out"))["prometheus_url"] or "off")')
run 0 "$ctl" --run-dir jb status
grep -Eqx "tensorboard +$tb" out && grep -Eqx "prometheus +$prom" out ||
    fail "status of a real job: tensorboard/prometheus lines do not agree with --json ($tb, $prom): $(cat out)"
run 0 "$ctl" --run-dir jb stop --no-checkpoint
rc=0
wait "$w1_pid" || rc=$?
[ "$rc" = 0 ] || fail "watch of two jobs that ended exited $rc, want 0: $(tail -5 w1.out) $(cat w1.err)"
[ "$(grep -c '^ja: ended$' w1.out)" = 1 ] && [ "$(grep -c '^jb: ended$' w1.out)" = 1 ] ||
    fail "each end once: ja $(grep -c '^ja: ended$' w1.out), jb $(grep -c '^jb: ended$' w1.out)"
grep -q 'lost' w1.out && fail "a job that ended reported lost: $(grep lost w1.out)"
tail -1 w1.out | grep -Eqx 'jb: ended' || fail "the watch went on after the last job ended: $(tail -3 w1.out)"
bad_lines=$(grep -vE '^(ja|jb): (step [0-9]+/(1000|100000) epoch [0-9]+ loss .*|ended)$' w1.out || true)
[ -z "$bad_lines" ] && [ ! -s w1.err ] || fail "watch of ja, jb: stray lines: $bad_lines $(cat w1.err)"
# --json; SIGKILL of jc's coordinator: jc lost, jd goes on; stop jd: exit 3
start_job jc 100000
jc_pid=$job_pid
start_job jd 100000
wait_endpoint jc
wait_endpoint jd
"$ctl" --run-dir jc --run-dir jd --timeout 1000 --json watch >w2.out 2>w2.err &
w2_pid=$!
pids+=("$w2_pid")
wait_for w2.out '"job": "jc", "step"' 30
wait_for w2.out '"job": "jd", "step"' 30
# three of jc's steps watched before it is killed: the check at the end wants 3 of each job
for _ in $(seq 600); do [ "$(grep -c '"job": "jc", "step"' w2.out || true)" -ge 3 ] && break; sleep 0.05; done
kill -9 "$jc_pid"
wait "$jc_pid" 2>/dev/null || true
wait_for w2.out '^\{"job": "jc", "end": "lost"\}$' 30
n_after() { sed -n '/"job": "jc", "end"/,$p' w2.out | grep -c '"job": "jd", "step"' || true; }
for _ in $(seq 200); do [ "$(n_after)" -ge 3 ] && break; sleep 0.05; done
[ "$(n_after)" -ge 3 ] || fail "no jd lines after jc was lost: $(tail -5 w2.out)"
run 0 "$ctl" --run-dir jd stop --no-checkpoint
rc=0
wait "$w2_pid" || rc=$?
[ "$rc" = 3 ] || fail "watch with a lost job exited $rc, want 3: $(tail -5 w2.out) $(cat w2.err)"
"$py" - <<'PY' || fail "watch --json of jc, jd: $(tail -5 w2.out)"
import json
ev = [json.loads(l) for l in open("w2.out")]
assert all(e["job"] in ("jc", "jd") for e in ev), ev[:3]
ends = [e for e in ev if "end" in e]
assert ends == [{"job": "jc", "end": "lost"}, {"job": "jd", "end": "ended"}], ends
assert ev[-1] == {"job": "jd", "end": "ended"}, ev[-3:]
for job in ("jc", "jd"):
    steps = [e["step"] for e in ev if e["job"] == job and "step" in e]
    assert len(steps) >= 3 and steps == sorted(steps), (job, steps[:5])
PY

echo "test_hclctl: ok"
