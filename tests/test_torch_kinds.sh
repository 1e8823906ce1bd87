#!/usr/bin/env bash
# One hcl step of the conv, bag and mlp encoders against PyTorch (see test_torch_kinds.py).
set -euo pipefail
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "SKIP torch kinds comparison: python3-torch is not installed (scripts/setup installs it)"
    exit 77
fi
exec /usr/bin/python3 "$(dirname "$0")/test_torch_kinds.py"
