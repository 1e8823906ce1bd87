#!/usr/bin/env bash
# A full disk while checkpointing: the write fails with ENOSPC (logged), training goes on and
# finishes, `latest` still names the checkpoint before, and that checkpoint is whole (a run
# resumes from it). A full disk while lines are logged: metrics.jsonl and the TensorBoard file
# keep what they cannot write in memory and write it once there is room (no torn line, every
# step once); a checkpoint meanwhile fails. The disks are small tmpfs mounts, which need root
# (CI runs as root); elsewhere the test says SKIP and exits 77.
set -euo pipefail
B=${HCL_BUILD:-build}
SRC=${HCL_SRC:-.}
tmp=$(mktemp -d /tmp/hcl_ckpt_disk.XXXXXX)
cleanup() {
    mountpoint -q "$tmp/small" 2>/dev/null && umount "$tmp/small"
    mountpoint -q "$tmp/logdisk" 2>/dev/null && umount "$tmp/logdisk"
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

# A full disk while every step is logged, then room again: the lines and Events held back are
# written, nothing is torn, every step is there once (metrics.jsonl and TensorBoard's view).
mkdir -p "$tmp/logdisk"
mount -t tmpfs -o size=16m tmpfs "$tmp/logdisk"
run=$tmp/logdisk/run
"$B/hcl-train" --data "$tmp/data" --hidden 256,128 --dim 32 --batch-size 256 --steps 1000000 --threads 1 \
    --log-every 1 --checkpoint-every 25 --keep 1 --run-dir "$run" 2>"$tmp/log2" &
pid=$!
for _ in $(seq 300); do [ -f "$run/metrics.jsonl" ] && [ "$(wc -l <"$run/metrics.jsonl")" -ge 20 ] && break; sleep 0.1; done
# fill it to the last page
dd if=/dev/zero of="$tmp/logdisk/fill" bs=64k 2>/dev/null || true
dd if=/dev/zero of="$tmp/logdisk/fill2" bs=4k 2>/dev/null || true
# full until metrics.jsonl has met it (a few lines fit in its last page) and a checkpoint failed
for _ in $(seq 300); do
    grep -q "metrics.jsonl: cannot write" "$tmp/log2" && grep -q "checkpoint of step .* failed" "$tmp/log2" && break
    sleep 0.1
done
written=$(grep -c "INFO  checkpoint .*step-" "$tmp/log2")
rm -f "$tmp/logdisk/fill" "$tmp/logdisk/fill2"
for _ in $(seq 300); do [ "$(grep -c "INFO  checkpoint .*step-" "$tmp/log2")" -gt "$written" ] && break; sleep 0.1; done
"$B/hclctl" --run-dir "$run" stop >/dev/null || { cat "$tmp/log2"; fail "hclctl stop"; }
wait $pid || { cat "$tmp/log2"; fail "the run with a full disk did not stop cleanly"; }
PYTHONPATH=$SRC/tests /usr/bin/python3 - "$run" <<'PY' || { cat "$tmp/log2"; fail "lines lost or torn by the full disk"; }
import json, re, sys
import tfevents_reader
run = sys.argv[1]
text = open(f"{run}/metrics.jsonl").read()
assert text.endswith("\n"), "torn last line"
steps = [json.loads(l)["step"] for l in text.splitlines()]
last = int(open(f"{run}/checkpoints/latest").read().strip()[5:])
assert steps == list(range(1, last + 1)), (len(steps), last, [s for a, s in zip(steps, steps[1:]) if s != a + 1][:5])
tb = tfevents_reader.scalars(f"{run}/tensorboard")["loss"]
assert sorted(tb) == steps, (len(tb), last)
print(f"full disk while logging: {last} steps, each once in metrics.jsonl and TensorBoard")
PY
grep -q "metrics.jsonl: cannot write: No space left on device" "$tmp/log2" || { cat "$tmp/log2"; fail "the full disk was not met while logging"; }
grep -q "metrics.jsonl: written again" "$tmp/log2" || { cat "$tmp/log2"; fail "metrics.jsonl not written again"; }
umount "$tmp/logdisk"
