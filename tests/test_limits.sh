#!/usr/bin/env bash
# Under a memory limit hcl-train trains or exits 2 with one line naming what it needs and the
# limit; it never waits forever (OpenBLAS's blas_memory_alloc retries a failed mmap for ever)
# and never aborts (exit 134). The Fashion-MNIST-sized recipe (60,000 rows, views of 392, 392
# and 49 floats, --hidden 512,256, batch 512) under `ulimit -v` of 600, 700, 800 and 900 MB, on
# both matmul engines, in one process and under mpirun; the need a refusal names is enough (the
# run trains under it); `ulimit -d`; a cgroup's memory.max where one can be made here.
set -euo pipefail
B=${HCL_BUILD:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/hcl_limits.XXXXXX)
cg=""
cleanup() {
    if [ -n "$cg" ] && [ -d "$cg" ]; then rmdir "$cg" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/hcl-data" synth "$tmp/data" --rows 60000 --widths 392,392,49 --classes 10 --seed 1 >/dev/null
recipe=(--data "$tmp/data" --loss full --batch-size 512 --hidden 512,256 --steps 10 --log-every 5)
engines=(openblas)
"$B/hcl-train" --matmul onednn --data "$tmp/none" --run-dir "$tmp/none" 2>&1 | grep -q "no oneDNN" || engines+=(onednn)

# limited LIMIT_FLAG KB NAME -- CMD...: run CMD in a subshell under `ulimit LIMIT_FLAG KB` with a
# timeout; it must train to the end (exit 0, metrics.jsonl at step 10) or exit 2 with one line
# (its first line under mpirun, whose own notice follows). Sets $outcome, $need (MB, a refusal's).
limited() {
    local flag=$1 kb=$2 name=$3
    shift 4
    rm -rf "$tmp/run"
    local rc=0
    (ulimit "$flag" "$kb" && exec timeout -k 5 150 "$@" --run-dir "$tmp/run") >"$tmp/out" 2>"$tmp/err" || rc=$?
    need=""
    case $rc in
    0)  grep -q '"step": 10' "$tmp/run/metrics.jsonl" || { cat "$tmp/err"; fail "$name: exit 0 before step 10"; }
        outcome="trained" ;;
    2)  local first
        first=$(grep -v '^\[vm' "$tmp/err" | head -1)
        [[ $name == mpi* ]] || [ "$(wc -l <"$tmp/err")" = 1 ] || { cat "$tmp/err"; fail "$name: more than one line"; }
        grep -q "^hcl-train: .*needs about [0-9]* MB .*, but the limit .* is [0-9]* MB$" <<<"$first" \
            || { cat "$tmp/err"; fail "$name: exit 2 without the line naming the need and the limit"; }
        [ ! -e "$tmp/run/metrics.jsonl" ] || fail "$name: refused, but metrics.jsonl was made"
        need=$(sed 's/.*needs about \([0-9]*\) MB.*/\1/' <<<"$first")
        outcome="refused: $(cut -c1-220 <<<"$first")" ;;
    124|137) cat "$tmp/err"; fail "$name: still running after 150 s (exit $rc)" ;;
    *)  cat "$tmp/err"; fail "$name: exit $rc" ;;
    esac
    echo "$name: $outcome"
}

# enough FLAG MB WHAT -- CMD...: what a refusal named is enough: CMD trains under it
enough() {
    local flag=$1 mb=$2 what=$3
    shift 4
    limited "$flag" $((mb * 1024)) "ulimit $flag of the need it named ($mb MB) $what" -- "$@"
    [ "$outcome" = trained ] || fail "$what: did not train under the $mb MB it asked for"
}

for e in "${engines[@]}"; do
    refused_need=""
    for mb in 600 700 800 900; do
        limited -v $((mb * 1000)) "ulimit -v ${mb}000 $e" -- "$B/hcl-train" "${recipe[@]}" --matmul $e
        [ -n "$need" ] && refused_need=$need
    done
    [ "$outcome" = trained ] || [ -n "$refused_need" ] || fail "$e: nothing ran"
    [ -z "$refused_need" ] || enough -v "$refused_need" "$e" -- "$B/hcl-train" "${recipe[@]}" --matmul $e
done
limited -d 250000 "ulimit -d 250000" -- "$B/hcl-train" "${recipe[@]}"
[ -z "$need" ] || enough -d "$need" "" -- "$B/hcl-train" "${recipe[@]}"
for mb in 600 900; do
    limited -v $((mb * 1000)) "mpirun -np 3, ulimit -v ${mb}000" -- \
        mpirun --oversubscribe -np 3 "$B/hcl-train" "${recipe[@]}" --threads 1
done

# A cgroup (v2: a child with memory.max, this subshell moved into it), where one can be made.
root=/sys/fs/cgroup
self=$(sed -n 's/^0:://p' /proc/self/cgroup)
if [ "$(id -u)" = 0 ] && grep -qw memory "$root/cgroup.controllers" 2>/dev/null &&
    grep -qw memory "$root$self/cgroup.subtree_control" 2>/dev/null && mkdir "$root$self/hcl-limits-$$" 2>/dev/null; then
    cg="$root$self/hcl-limits-$$"
    for mb in 200 2000; do
        echo $((mb * 1024 * 1024)) >"$cg/memory.max"
        rm -rf "$tmp/run"
        rc=0
        (echo $BASHPID >"$cg/cgroup.procs" && exec timeout -k 5 150 "$B/hcl-train" "${recipe[@]}" --run-dir "$tmp/run") \
            >"$tmp/out" 2>"$tmp/err" || rc=$?
        case "$mb:$rc" in
        200:2) [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "needs about .* resident.*memory.max" "$tmp/err" \
                   || { cat "$tmp/err"; fail "cgroup 200 MB: not one line naming memory.max"; } ;;
        2000:0) ;;
        *) cat "$tmp/err"; fail "cgroup memory.max ${mb} MB: exit $rc" ;;
        esac
        echo "cgroup memory.max ${mb} MB: exit $rc $(head -c 200 "$tmp/err" | head -1)"
    done
else
    echo "cgroup: cannot make one here (no cgroup v2 memory controller delegated at $root$self, or not root;" \
         "$(grep -c . /proc/self/cgroup) hierarchies in /proc/self/cgroup): the cgroup limit is tested by test_memlimit only"
fi
echo "test_limits: ok"
