#!/usr/bin/env bash
# A full disk while checkpointing: the write fails with ENOSPC (logged), training goes on and
# finishes, `latest` still names the checkpoint before, and that checkpoint is whole (a run
# resumes from it). The disk is a 300 KB tmpfs, which needs root (CI runs as root); elsewhere
# the test says SKIP and exits 77.
set -euo pipefail
B=${HCL_BUILD:-build}
tmp=$(mktemp -d /tmp/hcl_ckpt_disk.XXXXXX)
cleanup() {
    mountpoint -q "$tmp/small" 2>/dev/null && umount "$tmp/small"
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
"$B/hcl-data" synth "$tmp/data" --rows 1024 --widths 48,32,16 --classes 6 --seed 2 --missing-rate 0.1 >/dev/null
mkdir -p "$tmp/small"
if ! mount -t tmpfs -o size=300k tmpfs "$tmp/small" 2>/dev/null; then
    echo "SKIP full-disk check: cannot mount a tmpfs here (needs root)"
    exit 77
fi
# each checkpoint of this model is ~180 KB: step 0 fits, step 10 does not (step 0 is still there)
"$B/hcl-train" --data "$tmp/data" --hidden 64,32 --dim 16 --batch-size 96 --steps 20 --threads 1 \
    --log-every 10 --checkpoint-every 10 --keep 1 --run-dir "$tmp/small/run" 2>"$tmp/log" \
    || { cat "$tmp/log"; fail "training stopped on a full disk"; }
grep -q "checkpoint of step 10 failed, training goes on: .*No space left on device" "$tmp/log" || { cat "$tmp/log"; fail "ENOSPC not logged"; }
grep -q "done: 20 steps" "$tmp/log" || { cat "$tmp/log"; fail "training did not finish"; }
[ "$(cat "$tmp/small/run/checkpoints/latest")" = step-00000000 ] || fail "latest moved to a failed checkpoint"
"$B/hcl-train" --data "$tmp/data" --hidden 64,32 --dim 16 --batch-size 96 --steps 1 --threads 1 \
    --resume "$tmp/small/run/checkpoints/step-00000000" --run-dir "$tmp/small/run2" 2>/dev/null \
    || fail "the checkpoint before the full disk is not whole"
umount "$tmp/small"
echo "full disk: write failed with ENOSPC, training finished, step 0 checkpoint intact"
