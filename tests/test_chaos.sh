#!/usr/bin/env bash
# test_chaos (suite chaos, a few minutes): chaos equals clean. A 3-worker job runs once without
# interruption and once under a seeded schedule of faults (kill -9 of a rank, SIGSTOP/SIGCONT,
# hclctl pause/resume and checkpoint, SIGUSR1, SIGTERM to rank 0, a full disk), relaunched with
# --resume auto after each fault that ends it; its final model.safetensors must then be
# byte-identical to the clean run's and metrics.jsonl must hold every step once (tests/chaos.py
# does it and says what happened). The seed is printed; HCL_CHAOS_SEED=N replays a schedule;
# HCL_CHAOS_KEEP=DIR keeps both runs' directories and the launches' logs there. The chaos run's
# directory is on a small tmpfs (root: CI runs as root; elsewhere SKIP, 77). Arguments go to
# tests/chaos.py (--seed N, --faults K, --steps T).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
B=${HCL_BUILD:-$HCL_SRC/build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_chaos.XXXXXX)
cleanup() {
    if [ -n "${HCL_CHAOS_KEEP:-}" ]; then
        mkdir -p "$HCL_CHAOS_KEEP" && cp -a "$tmp"/*.log "$tmp/clean" "$tmp/disk/run" "$HCL_CHAOS_KEEP"/ 2>/dev/null || true
    fi
    mountpoint -q "$tmp/disk" 2>/dev/null && { umount "$tmp/disk" || umount -l "$tmp/disk"; }
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/disk"
if ! mount -t tmpfs -o size=24m tmpfs "$tmp/disk" 2>/dev/null; then
    echo "test_chaos: SKIP: cannot mount a tmpfs for the full disk here (needs root)"
    exit 77
fi
/usr/bin/python3 "$HCL_SRC/tests/chaos.py" --build "$B" --work "$tmp" --disk "$tmp/disk" "$@"
