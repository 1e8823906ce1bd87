#!/usr/bin/env bash
# The conv encoder against PyTorch on the same weights and inputs (see test_conv_torch.py).
set -euo pipefail
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "SKIP conv encoder comparison: python3-torch is not installed (scripts/setup installs it)"
    exit 77
fi
exec /usr/bin/python3 "$(dirname "$0")/test_conv_torch.py"
