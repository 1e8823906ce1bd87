#!/usr/bin/env bash
# One hcl step against the PyTorch peer on the same weights and batch (see test_torch_peer.py).
set -euo pipefail
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "SKIP torch peer comparison: python3-torch is not installed (scripts/setup installs it)"
    exit 77
fi
exec /usr/bin/python3 "$(dirname "$0")/test_torch_peer.py"
