#!/usr/bin/env bash
# A bag encoder's table of 1,000,000 x 256 (1 GB): resident memory grows with V by the table's
# weights only (its gradient and moments take pages for the rows a batch uses), the steps add
# nothing sized by V, a row no batch uses keeps its value and moments, the losses equal those at
# V = 50,000 (tests/sparse_vocab.c). Its step time against V = 50,000: bench/sparse_vocab.
set -euo pipefail
B=${HCL_BUILD:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# meson test sets MALLOC_PERTURB_, under which glibc's calloc clears every page it returns: the
# lazy buffers (util.h hcl_floats_lazy) would all be resident, as no run outside a test has them
env -u MALLOC_PERTURB_ "$B/sparse_vocab" test 1000000
echo "test_sparse_vocab: ok"
