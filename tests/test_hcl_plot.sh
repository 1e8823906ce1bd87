#!/usr/bin/env bash
# test_hcl_plot: hcl-plot on real runs of hcl-train (one process, with --val-data and
# --eval-every). The picture is a PNG of a sensible size; what it draws is the data: every line
# read back from the figure (--dump-json) equals the series in metrics.jsonl, the per-worker
# times too (a copy of the run with a "workers" key added); --compare overlays two runs, -o
# writes elsewhere; bad input exits 2 with one line naming the file, line and value, writes
# nothing and leaves an existing report.png as it was.
#   HCL_BUILD=build bash tests/test_hcl_plot.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
HCL_BUILD=${HCL_BUILD:-$HCL_SRC/build}
case $HCL_BUILD in /*) ;; *) HCL_BUILD=$PWD/$HCL_BUILD ;; esac
plot=$HCL_BUILD/hcl-plot
py=/usr/bin/python3
fail() { echo "test_hcl_plot: FAIL: $*" >&2; exit 1; }
[ -x "$plot" ] || fail "$plot not built"
"$py" -c 'import matplotlib' 2>/dev/null || { echo "test_hcl_plot: SKIP: no python3-matplotlib"; exit 77; }

tmp=$(mktemp -d /tmp/test_hcl_plot.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# ---- two small runs: a with validation and evaluation, b without ---------------------------
"$HCL_BUILD/hcl-data" synth data --rows 1024 --widths 24,16,8 --classes 6 --seed 3 >/dev/null
"$HCL_BUILD/hcl-data" synth val --rows 512 --widths 24,16,8 --classes 6 --seed 3 --split 1 >/dev/null
common=(--data data --hidden 32 --dim 8 --batch-size 128 --threads 1 --lr 0.003)
"$HCL_BUILD/hcl-train" "${common[@]}" --val-data val --run-dir a --steps 30 --log-every 5 --eval-every 10 \
    --eval-rows 256 --seed 1 2>a.log || { cat a.log; fail "training run a"; }
"$HCL_BUILD/hcl-train" "${common[@]}" --run-dir b --steps 20 --log-every 4 --seed 2 2>b.log ||
    { cat b.log; fail "training run b"; }
grep -q '"eval"' a/metrics.jsonl && grep -q '"final_eval"' a/metrics.jsonl || fail "run a logged no evaluation"

# check_drawn DUMP METRICS LABEL [METRICS LABEL ...]: every line hcl-plot drew (read back from
# the figure) is a series of metrics.jsonl, derived here on its own, and every series is drawn
check_drawn() {
    "$py" - "$@" <<'EOF'
import json, sys
dump = json.load(open(sys.argv[1]))
runs = list(zip(sys.argv[2::2], sys.argv[3::2]))
assert [r["label"] for r in dump["runs"]] == [lab for _, lab in runs], dump["runs"]
SCALARS = {"loss": ("loss", "train"), "val_loss": ("loss", "validation"), "supcon": ("loss", "supcon"),
           "ce": ("loss", "ce"), "lr": ("learning rate", "lr"), "logit_scale": ("logit scale", "logit_scale"),
           "samples_per_s": ("samples/s", "samples_per_s"), "grad_norm": ("gradient norm", "grad_norm")}
EVAL = {"knn": "eval: kNN accuracy", "retrieval": "eval: retrieval recall@1",
        "alignment": "eval: alignment (lower: closer pairs)", "uniformity": "eval: uniformity (lower: more spread)"}
want = {}
def put(title, label, series, x, y):
    xs, ys = want.setdefault((title, label, series), ([], []))
    xs.append(float(x))
    ys.append(None if y is None else float(y))
for path, label in runs:
    rows = [json.loads(l) for l in open(path) if l.strip()]
    has_workers = has_eval = False
    for r in rows:
        s = r["step"]
        if "loss" in r:
            for k, (title, series) in SCALARS.items():
                if k in r:
                    put(title, label, series, s, r[k])
            for pair, v in r["pair_loss"].items():
                put("loss of each pair of views", label, pair, s, v)
            for w in r.get("workers", []):
                has_workers = True
                for k in ("compute_s", "comm_s", "wait_s"):
                    put("per-worker step time", label, f"rank {w['rank']} {k}", s, w[k])
        elif "eval" in r:
            e, has_eval = r["eval"], True
            for k, v in e.items():
                if k.startswith("knn_"):
                    put(EVAL["knn"], label, k[4:], s, v)
            for k, v in e["retrieval"].items():
                put(EVAL["retrieval"], label, k, s, v["r1"])
            for g in ("alignment", "uniformity"):
                for k, v in e[g].items():
                    put(EVAL[g], label, k, s, v)
        elif "final_eval" in r:
            f = r["final_eval"]
            for k, v in f["knn"].items():
                put(EVAL["knn"], label, "final " + k, s, v)
            for k, v in f["retrieval"].items():
                put(EVAL["retrieval"], label, "final " + k.replace("->", ">"), s, v["r1"])
            for g in ("alignment", "uniformity"):
                for k, v in f[g].items():
                    put(EVAL[g], label, "final " + k, s, v)
    notes = {p["title"]: " ".join(p["notes"]) for p in dump["panels"]}
    who = f"{label}: " if len(runs) > 1 else ""
    assert (who + "no per-worker times in this run" in notes["per-worker step time"]) != has_workers, (label, notes)
    assert (who + "no evaluation in this run" in notes[EVAL["knn"]]) != has_eval, (label, notes)
got = {}
for p in dump["panels"]:
    for ln in p["lines"]:
        key = (p["title"], ln["run"], ln["series"])
        assert key not in got, f"drawn twice: {key}"
        got[key] = (ln["x"], ln["y"])
assert set(got) == set(want), f"drawn, not in metrics.jsonl: {sorted(set(got) - set(want))}; " \
                              f"in metrics.jsonl, not drawn: {sorted(set(want) - set(got))}"
for key, (xs, ys) in want.items():
    assert got[key] == (xs, ys), f"{key}: drawn {got[key]}, metrics.jsonl has {(xs, ys)}"
print(f"check_drawn: {len(want)} lines as in metrics.jsonl")
EOF
}

# the PNG's signature and IHDR size
png_ok() {
    "$py" - "$1" <<'EOF' || fail "$1 is not a sensible PNG"
import os, struct, sys
raw = open(sys.argv[1], "rb").read(33)
assert raw[:8] == b"\x89PNG\r\n\x1a\n", raw[:8]
length, kind, w, h = struct.unpack(">I4sII", raw[8:24])
assert kind == b"IHDR" and length == 13, (kind, length)
assert 800 <= w <= 4000 and 500 <= h <= 3000, (w, h)
assert 20_000 < os.path.getsize(sys.argv[1]) < 2_000_000, os.path.getsize(sys.argv[1])
EOF
}

# ---- one run: the picture, and the data drawn is metrics.jsonl's ----------------------------
out=$("$plot" a --dump-json a.json) || fail "hcl-plot a"
[ "$out" = a/report.png ] || fail "hcl-plot printed '$out', want a/report.png"
png_ok a/report.png
check_drawn a.json a/metrics.jsonl a || fail "run a: the lines drawn are not metrics.jsonl's"

# the same run with per-worker times (the "workers" key of the step lines)
mkdir w
"$py" - a/metrics.jsonl w/metrics.jsonl <<'EOF'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if "loss" in r:
            s = r["step"]
            r["workers"] = [{"rank": 1, "compute_s": 0.01 + s * 1e-4, "comm_s": 0.002, "wait_s": s % 3 * 1e-3},
                            {"rank": 2, "compute_s": 0.02 - s * 1e-4, "comm_s": None, "wait_s": 0.0005}]
        out.write(json.dumps(r) + "\n")
EOF
"$plot" w --dump-json w.json >/dev/null || fail "hcl-plot w"
png_ok w/report.png
check_drawn w.json w/metrics.jsonl w || fail "run w: the per-worker lines are not metrics.jsonl's"

# ---- --compare, --labels, -o -------------------------------------------------------------------
out=$("$plot" a --compare b --labels first,second --dump-json ab.json) || fail "hcl-plot --compare"
[ "$out" = a/compare.png ] || fail "hcl-plot --compare printed '$out', want a/compare.png"
png_ok a/compare.png
check_drawn ab.json a/metrics.jsonl first b/metrics.jsonl second ||
    fail "--compare: the lines drawn are not the two runs'"
mkdir pics
out=$("$plot" b -o pics/b.png) || fail "hcl-plot -o"
[ "$out" = pics/b.png ] && png_ok pics/b.png || fail "-o: printed '$out'"
[ ! -e b/report.png ] || fail "-o also wrote b/report.png"
[ -z "$(ls -A pics | grep -v '^b.png$')" ] || fail "-o left files beside pics/b.png: $(ls -A pics)"

# ---- bad input: exit 2, one line naming the file (and line and value), nothing written ------
expect_error() {
    local want=$1; shift
    set +e
    "$plot" "$@" >out.txt 2>err.txt
    local rc=$?
    set -e
    [ $rc = 2 ] || { cat err.txt; fail "exit $rc, want 2, for: $*"; }
    [ "$(wc -l <err.txt)" = 1 ] || { cat err.txt; fail "want one error line for: $*"; }
    grep -qF -- "hcl-plot: $want" err.txt || fail "the error '$(cat err.txt)' does not say 'hcl-plot: $want'"
    [ ! -s out.txt ] || fail "printed '$(cat out.txt)' on failure: $*"
}
mkdir nometrics empty blank badjson badnum badpair badworkers onlyeval
: >empty/metrics.jsonl
printf '\n\n' >blank/metrics.jsonl
for d in badjson badnum badpair badworkers onlyeval; do head -3 a/metrics.jsonl >$d/metrics.jsonl; done
echo '{"step": 20, "loss": 1.5,' >>badjson/metrics.jsonl
head -4 a/metrics.jsonl | tail -1 >>badjson/metrics.jsonl
echo '{"step": 20, "loss": "abc", "pair_loss": {}}' >>badnum/metrics.jsonl
echo '{"step": 20, "loss": 1, "pair_loss": {"v0:v1": [1]}}' >>badpair/metrics.jsonl
echo '{"step": 20, "loss": 1, "workers": [{"rank": 1, "comm_s": "slow"}]}' >>badworkers/metrics.jsonl
grep -v '"loss"' a/metrics.jsonl >onlyeval/metrics.jsonl
expect_error "nope: no such run directory" nope
expect_error "nometrics/metrics.jsonl: cannot read: No such file or directory" nometrics
expect_error "empty/metrics.jsonl: empty" empty
expect_error "blank/metrics.jsonl: no step lines" blank
expect_error "onlyeval/metrics.jsonl: no step lines" onlyeval
expect_error "badjson/metrics.jsonl:4: not JSON" badjson
expect_error 'badnum/metrics.jsonl:4: loss is "abc", not a number' badnum
expect_error "badpair/metrics.jsonl:4: pair_loss v0:v1 is [1], not a number" badpair
expect_error 'badworkers/metrics.jsonl:4: workers[0].comm_s is "slow", not a number' badworkers
expect_error "badnum/metrics.jsonl:4: loss" a --compare badnum
expect_error "--labels: 1 labels (x) for 2 runs" a --compare b --labels x
expect_error "unrecognized arguments: --bogus" a --bogus
expect_error "nodir/x.png: cannot write" a -o nodir/x.png
for d in nometrics empty blank badjson badnum badpair badworkers onlyeval; do
    [ -z "$(ls -A $d | grep -v '^metrics.jsonl$')" ] || fail "a failed run wrote into $d: $(ls -A $d)"
done

# a failure keeps the report there was: bad data, and a rename that fails (-o a directory)
cp a/report.png before.png
cp a/metrics.jsonl a/metrics.good
echo 'not json' >>a/metrics.jsonl
expect_error "a/metrics.jsonl:$(wc -l <a/metrics.jsonl): not JSON" a
cmp -s before.png a/report.png || fail "a failed hcl-plot changed a/report.png"
mv a/metrics.good a/metrics.jsonl
mkdir a/report.png.d
expect_error "a/report.png.d: cannot write" a -o a/report.png.d
[ -z "$(ls -A a | grep '^\.')" ] || fail "a failed write left a temporary file: $(ls -A a)"
[ -z "$(ls -A a/report.png.d)" ] || fail "a failed write wrote into the directory"
cmp -s before.png a/report.png || fail "a failed write changed a/report.png"
echo "test_hcl_plot: ok"
