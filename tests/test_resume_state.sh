#!/usr/bin/env bash
# A checkpoint's state.pb is validated whole before anything in the run directory changes:
# edited or damaged ones (a negative step, counts that disagree with each other, with the model
# or with the flags, absurd sizes, a stale checksum, an unknown format) are refused by
# --resume PATH with one line naming the file and the field, exit 2, the run directory
# byte for byte as it was (metrics.jsonl kept, no control.sock); --resume auto skips such a
# checkpoint with a warning, as it does damaged tensors, and refuses with one line when none is
# left; a state.pb of an hcl before its checksum (format 1) is still read; the same run then
# resumes and finishes.
set -euo pipefail
B=${HCL_BUILD:-build}
SRC=${HCL_SRC:-.}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/hcl_state.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
edit() { $PY "$SRC/tests/state_pb.py" "$@"; }

"$B/hcl-data" synth "$tmp/data" --rows 1024 --widths 24,16 --seed 3 >/dev/null
common=(--data "$tmp/data" --hidden 32 --dim 8 --batch-size 96 --threads 1 --log-every 1 --seed 4)
run="$tmp/run"
"$B/hcl-train" "${common[@]}" --steps 30 --checkpoint-every 10 --keep 5 --run-dir "$run" 2>/dev/null
ck="$run/checkpoints"
cp -a "$ck" "$tmp/good"
restore() { rm -rf "$ck" && cp -a "$tmp/good" "$ck"; }
# every file of the run directory with its checksum: what must not change when a resume is refused
tree() { (cd "$run" && find . -type f -o -type s -o -type l | sort | while read -r f; do
    if [ -f "$f" ]; then echo "$f $(sha256sum <"$f" | cut -c1-16)"; else echo "$f"; fi; done); }

# refused RESUME WANT EDIT...: the state.pb of step 30 edited, hcl-train --resume RESUME exits 2
# with one line matching WANT and leaves the run directory as it was
refused() {
    local resume=$1 want=$2
    shift 2
    restore
    if [ $# -gt 0 ]; then edit "$ck/step-00000030/state.pb" "$@"; fi
    tree >"$tmp/before"
    local rc=0
    timeout 60 "$B/hcl-train" "${common[@]}" --steps 40 --resume "$resume" --run-dir "$run" \
        >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ $rc = 2 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && [ ! -s "$tmp/out" ] && grep -q -- "$want" "$tmp/err" \
        || { cat "$tmp/err"; fail "$*: exit $rc; want 2 and one line with '$want'"; }
    tree | diff "$tmp/before" - >/dev/null || { tree | diff "$tmp/before" -; fail "$*: the run directory changed"; }
    echo "refused (${*:-the flags}): $(cut -c1-160 "$tmp/err")"
}
path="$ck/step-00000030"
pb="step-00000030/state.pb"
refused "$path" "$pb: step -5" step=-5
refused "$path" "$pb: step -5" --checksum none format_version=1 step=-5
refused "$path" "$pb: checksum" --checksum stale step=-5
refused "$path" "$pb: checksum" --checksum none
refused "$path" "$pb: format version 3" format_version=3
refused "$path" "$pb: epoch" epoch=7
refused "$path" "$pb: data_cursor" data_cursor=-1
refused "$path" "$pb: samples_seen" samples_seen=12345
refused "$path" "$pb: global_batch" global_batch=1099511627776
refused "$path" "$pb: optimizer_updates" optimizer_updates=99
refused "$path" "$pb: skipped_steps" skipped_steps=-1
refused "$path" "$pb: world_size" world_size=-3
refused "$path" "$pb: workers" workers=1000000
refused "$path" "$pb: data_rng" data_rng=drop
refused "$path" "$pb: data_rng" seed=77
refused "$path" "$pb: lr_scale" lr_scale=nan
refused "$path" "$pb: lr_scale" lr_scale=-1
refused "$path" "$pb: wall_time" wall_time=inf
refused "$path" "$pb: views" views=drop
refused "$path" "$pb: config" config=big:20000
refused "$path" "$pb: larger than" config=big:17000000
refused "$path" "$pb: model_params" model_params=5
# (the flags: the same checkpoint with half the rows per epoch, another global batch, fewer steps)
"$B/hcl-data" synth "$tmp/half" --rows 512 --widths 24,16 --seed 3 >/dev/null
full=("${common[@]}")
common=(--data "$tmp/half" "${full[@]:2}")
refused "$path" "$pb: step 30 is epoch 3, batch 0 at 10 batches per epoch; --data .* gives 5"
common=("${full[@]}" --batch-size 192)
refused "$path" "global batch 96, the flags say 192"
common=("${full[@]}")
rc=0
"$B/hcl-train" "${common[@]}" --steps 20 --resume "$path" --run-dir "$run" 2>"$tmp/err" || rc=$?
[ $rc = 2 ] && grep -q "past the run's 20 steps" "$tmp/err" || { cat "$tmp/err"; fail "a checkpoint past --steps"; }

# --resume auto: the bad newest is skipped like damaged tensors; with none valid, one line.
restore
edit "$ck/step-00000030/state.pb" step=-5
"$B/hcl-train" "${common[@]}" --steps 40 --checkpoint-every 10 --keep 5 --resume auto --run-dir "$tmp/run" \
    2>"$tmp/log" || { cat "$tmp/log"; fail "auto with a bad newest checkpoint"; }
grep -q "skipping damaged checkpoint: .*$pb: step -5" "$tmp/log" && grep -q "resuming from .*step-00000020" "$tmp/log" \
    || { cat "$tmp/log"; fail "auto did not skip the bad state.pb to step 20"; }
echo "auto: skipped the edited state.pb, resumed from step 20"
rm -rf "$ck/step-00000040"
for d in "$ck"/step-*; do edit "$d/state.pb" --checksum stale step=-5; done
echo step-00000030 >"$ck/latest"
tree >"$tmp/before"
rc=0
"$B/hcl-train" "${common[@]}" --steps 40 --resume auto --run-dir "$run" >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc = 2 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "resume auto: 4 checkpoints in .*, none valid" "$tmp/err" \
    || { cat "$tmp/err"; fail "auto with no valid checkpoint: exit $rc"; }
tree | diff "$tmp/before" - >/dev/null || fail "auto with no valid checkpoint changed the run directory"
echo "auto, none valid: $(cut -c1-150 "$tmp/err")"

# A format-1 state.pb (no checksum, as hcl wrote before) still resumes; then the run finishes.
restore
for d in "$ck"/step-*; do edit "$d/state.pb" --checksum none format_version=1; done
"$B/hcl-train" "${common[@]}" --steps 40 --checkpoint-every 10 --keep 5 --resume auto --run-dir "$run" \
    2>"$tmp/log" || { cat "$tmp/log"; fail "resume from a format-1 state.pb"; }
grep -q "resuming from .*step-00000030" "$tmp/log" || { cat "$tmp/log"; fail "format 1 not resumed"; }
$PY - "$run/metrics.jsonl" <<'PY' || fail "metrics.jsonl after the resumes"
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert steps == list(range(1, 41)), steps
PY
[ ! -e "$run/control.sock" ] || fail "control.sock left behind"
echo "format 1 resumed from step 30; metrics.jsonl holds steps 1..40 once each"
echo "test_resume_state: ok"
