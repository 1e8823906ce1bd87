#!/usr/bin/env bash
# The sharded gradient equals the single-process one with 1, 2, 3 and 4 workers (uneven shares).
set -euo pipefail
B=${HCL_BUILD:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
for np in 1 2 3 4; do
    timeout 120 mpirun --oversubscribe -np $np "$B/test_mpi_grad" || { echo "FAIL: $np workers"; exit 1; }
done
echo "test_mpi_grad: ok"
