#!/usr/bin/env bash
# test_progress: the progress line of the tools (common/progress.h). hcl-data synth, hcl-embed
# and hcl-eval each run three ways on the same inputs:
#   pipe    stderr a file, HCL_PROGRESS unset: stderr gets nothing at all (no \r, no ESC, no ETA)
#   forced  stderr a file, HCL_PROGRESS=1: the frames are there
#   tty     stderr a pseudo-terminal (python3 pty), HCL_PROGRESS unset: the frames are there
# In the last two every frame is "\r\033[K" + WHAT [DONE/TOTAL  PCT%]  elapsed T  ETA T; the tasks
# are the expected ones in the expected order (hcl-eval: each split's embedding, then probe and
# kNN and k-means of each representation, then retrieval of each pair of views); within a task the counts
# and percentages never go back, 100% comes only with the last frame, where done = total; the
# line is erased at the end; the long synth shows frames between 0% and 100%. stdout is the same
# in the three runs (timings aside) and so are the files written.
#   HCL_BUILD=build bash tests/test_progress.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
HCL_BUILD=${HCL_BUILD:-$HCL_SRC/build}
case $HCL_BUILD in /*) ;; *) HCL_BUILD=$PWD/$HCL_BUILD ;; esac
py=/usr/bin/python3
for t in hcl-data hcl-embed hcl-eval; do
    [ -x "$HCL_BUILD/$t" ] || { echo "test_progress: FAIL: $HCL_BUILD/$t not built" >&2; exit 1; }
done
data=$HCL_BUILD/hcl-data embed=$HCL_BUILD/hcl-embed evl=$HCL_BUILD/hcl-eval

tmp=$(mktemp -d /tmp/test_progress.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_progress: FAIL: $*" >&2; exit 1; }
cd "$tmp"
export OPENBLAS_NUM_THREADS=2
unset HCL_PROGRESS

# ---- helpers: run under a pseudo-terminal; check the three runs of one command ---------------
cat > progress_check.py <<'EOF'
"""pty OUT ERR CMD...: run CMD with stdout to OUT and stderr (and stdin) on a pseudo-terminal
120 columns wide, whose output goes to ERR; exit with CMD's status.
check NAME TASK...: the runs NAME.{pipe,forced,tty}.{out,err} (see test_progress.sh)."""
import fcntl, os, re, struct, subprocess, sys, termios, tty

def run_pty(out, err, cmd):
    master, slave = os.openpty()
    tty.setraw(slave)   # no translation of what the tool writes
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with open(out, "wb") as fo:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=fo, stderr=slave, close_fds=True)
    os.close(slave)
    got = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:   # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    open(err, "wb").write(got)
    sys.exit(proc.wait())

CLEAR = "\r\033[K"
T = r"(?:\d+:)?\d+:\d\d"
FRAME = re.compile(rf"^(?P<what>.+?)(?: (?P<done>\d+)/(?P<total>\d+)  (?P<pct>\d+)%)?"
                   rf"  elapsed {T}  ETA (?:--:--|{T})$")

def frames(name, mode, err):
    """The tasks in order of appearance, each a list of (done, total, pct) (None: no count yet)."""
    assert err.startswith(CLEAR), f"{name} {mode}: stderr does not start with a frame: {err[:80]!r}"
    assert err.endswith(CLEAR), f"{name} {mode}: the line is not erased at the end: {err[-80:]!r}"
    tasks = {}
    for fr in err.split(CLEAR)[1:-1]:
        if fr == "":
            continue   # the erase after a finished task, before the next one's first frame
        m = FRAME.match(fr)
        assert m, f"{name} {mode}: not a progress frame: {fr!r}"
        c = m.group("done")
        tasks.setdefault(m.group("what"), []).append(
            None if c is None else (int(c), int(m.group("total")), int(m.group("pct"))))
    return tasks

def check_task(name, mode, what, seq):
    counted = [x for x in seq if x is not None]
    assert counted, f"{name} {mode}: task '{what}' has no counted frame: {seq}"
    assert seq.index(counted[0]) == len(seq) - len(counted), f"{name} {mode}: '{what}': {seq}"
    done, total, pct = counted[-1]
    assert done == total and pct == 100, f"{name} {mode}: '{what}' ends at {done}/{total} {pct}%"
    for (d0, t0, p0), (d1, t1, p1) in zip(counted, counted[1:]):
        assert t0 == t1 and d0 <= d1 and p0 <= p1, f"{name} {mode}: '{what}' goes back: {counted}"
    for d, t, p in counted[:-1]:
        assert p < 100 and d < t, f"{name} {mode}: '{what}' at 100% before its end: {counted}"
        assert p == d * 100 // t, f"{name} {mode}: '{what}': {d}/{t} shown as {p}%"
    return sum(0 < p < 100 for _, _, p in counted)

def normalised(text):   # timings differ from run to run
    return re.sub(r"\d+\.\d+ s\b", "T s", text)

def check(name, want):
    read = lambda m, k: open(f"{name}.{m}.{k}", encoding="utf-8", errors="replace", newline="").read()
    pipe_err = read("pipe", "err")
    assert pipe_err == "", f"{name} pipe: stderr not empty: {pipe_err[:200]!r}"
    between = 0
    for mode in ("forced", "tty"):
        tasks = frames(name, mode, read(mode, "err"))
        assert list(tasks) == want, f"{name} {mode}: tasks {list(tasks)}, want {want}"
        between += sum(check_task(name, mode, w, s) for w, s in tasks.items())
        out = read(mode, "out")
        assert normalised(out) == normalised(read("pipe", "out")), \
            f"{name} {mode}: stdout differs from the pipe run's:\n{out}\n---\n{read('pipe', 'out')}"
    assert "\r" not in read("tty", "out") and "ETA" not in read("tty", "out"), f"{name}: progress on stdout"
    print(between)

if sys.argv[1] == "pty":
    run_pty(sys.argv[2], sys.argv[3], sys.argv[4:])
else:
    check(sys.argv[2], sys.argv[3:])
EOF

# run3 NAME CMD...: the three runs of CMD; CHECK=`progress_check.py check` of them, with the
# tasks given in TASKS (one a line); the number of frames strictly between 0% and 100% in $between
run3() {
    local name=$1
    shift
    "$@" > "$name.pipe.out" 2> "$name.pipe.err" || fail "$name (pipe): exit $?"
    HCL_PROGRESS=1 "$@" > "$name.forced.out" 2> "$name.forced.err" || fail "$name (HCL_PROGRESS=1): exit $?"
    "$py" progress_check.py pty "$name.tty.out" "$name.tty.err" "$@" || fail "$name (terminal): exit $?"
    local tasks=()
    mapfile -t tasks <<< "$TASKS"
    between=$("$py" progress_check.py check "$name" "${tasks[@]}") || fail "$name: see above"
}

# ---- hcl-data synth: long enough for frames between 0% and 100% ------------------------------
TASKS="synth big, rows of 3 views"
run3 synth "$data" synth big --rows 40000 --widths 48,32,16 --classes 5 --seed 3
[ "$between" -ge 2 ] || fail "synth of 120,000 view rows drew $between frames between 0% and 100%"
"$data" synth train --rows 3000 --widths 48,32,16 --classes 5 --seed 3 >/dev/null
"$data" synth test --rows 1000 --widths 48,32,16 --classes 5 --seed 3 --split 1 >/dev/null

# ---- a model file (random 48/32/16 -> 64 -> 16 encoders; the layout of common/model_io.c) ---
"$py" - model.safetensors <<'EOF'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(0)
views, widths, hidden, dim = ["v0", "v1", "v2"], [48, 32, 16], [64], 16
tensors = []
for v, w in zip(views, widths):
    dims = [w] + hidden + [dim]
    for k in range(len(dims) - 1):
        b = 1 / np.sqrt(dims[k])
        tensors.append((f"encoder.{v}.{k}.weight", rng.uniform(-b, b, (dims[k + 1], dims[k]))))
        tensors.append((f"encoder.{v}.{k}.bias", rng.uniform(-b, b, (dims[k + 1],))))
tensors.append(("logit_t", np.array([2.65926])))
meta = {"format": "hcl-model", "version": "1", "views": ",".join(views),
        "in_widths": ",".join(map(str, widths)), "hidden": ",".join(map(str, hidden)),
        "dim": str(dim), "act": "relu", "layernorm": "0", "nclasses": "0", "t_init": "2.65926"}
header, blobs, off = {"__metadata__": meta}, [], 0
for name, a in tensors:
    raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
EOF

# ---- hcl-embed ---------------------------------------------------------------------------------
TASKS="embedding big, rows of 3 views"
run3 embed "$embed" --checkpoint model.safetensors --data big --out emb --threads 2
cp -r emb emb.last
"$embed" --checkpoint model.safetensors --data big --out emb --threads 2 >/dev/null
for f in v0.npy v1.npy v2.npy fused.npy labels.npy manifest.txt; do
    cmp -s "emb/$f" "emb.last/$f" || fail "hcl-embed wrote another $f under a terminal"
done

# ---- hcl-eval: every probe, kNN, k-means and retrieval is a task -------------------------------
TASKS="embedding train, rows of 3 views
embedding test, rows of 3 views"
for r in v0 v1 v2 concat fused; do
    TASKS+=$'\n'"probe $r, L2 sweep fits"$'\n'"kNN $r, test rows"$'\n'"k-means $r, 10 seeds"
done
for q in v0:v1 v0:v2 v1:v2; do TASKS+=$'\n'"retrieval $q, query rows"; done
run3 eval "$evl" --checkpoint model.safetensors --train train --test test --threads 2
grep -q '^fused ' eval.tty.out && grep -q 'v0 -> v2' eval.tty.out || fail "hcl-eval table: $(cat eval.tty.out)"

echo "test_progress: ok"
