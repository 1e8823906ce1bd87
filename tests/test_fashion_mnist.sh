#!/usr/bin/env bash
# test_fashion_mnist: `hcl-data fashion-mnist` turns Debian's dataset-fashion-mnist into the
# 3-view dataset (top half, bottom half, 7x7 thumbnail) and numpy checks it against the images it
# came from. Without the package (scripts/setup installs it) the test says SKIP and exits 77.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
HCL_BUILD=${HCL_BUILD:-$HCL_SRC/build}
case $HCL_BUILD in /*) ;; *) HCL_BUILD=$PWD/$HCL_BUILD ;; esac
tool=$HCL_BUILD/hcl-data
py=/usr/bin/python3
src=/usr/share/datasets/fashion-mnist
if [ ! -d "$src" ]; then
    echo "SKIP fashion-mnist: $src absent (apt-get install dataset-fashion-mnist)"
    exit 77
fi
tmp=$(mktemp -d /tmp/test_fashion_mnist.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_fashion_mnist: FAIL: $*" >&2; exit 1; }
cd "$tmp"

"$tool" fashion-mnist fm >/dev/null
"$tool" inspect fm/train | grep -Eq '^rows +60000$' || fail "inspect fm/train: rows"
"$tool" inspect fm/test | grep -Eq '^view +thumb +width 49 ' || fail "inspect fm/test: thumb"
"$py" - fm <<'EOF' || fail "numpy check of fashion-mnist"
import sys, numpy as np
d = sys.argv[1]
for split, n in (("train", 60000), ("test", 10000)):
    top, bot, thumb = (np.load(f"{d}/{split}/{v}.npy", mmap_mode="r")
                       for v in ("top", "bottom", "thumb"))
    y = np.load(f"{d}/{split}/labels.npy")
    assert top.shape == (n, 392) and bot.shape == (n, 392) and thumb.shape == (n, 49), \
        (split, top.shape, bot.shape, thumb.shape)
    assert top.dtype == bot.dtype == thumb.dtype == np.float32, top.dtype
    assert y.shape == (n,) and y.dtype == np.int64, (y.shape, y.dtype)
    assert y.min() == 0 and y.max() == 9, (y.min(), y.max())
    assert (np.bincount(y, minlength=10) == n // 10).all(), np.bincount(y)
    k = np.arange(0, n, 7)   # a subset keeps this fast; still thousands of images
    t, b, th = np.asarray(top[k]), np.asarray(bot[k]), np.asarray(thumb[k])
    for a in (t, b, th):
        assert a.min() >= 0 and a.max() <= 1, (a.min(), a.max())
    assert t.max() == 1.0 and b.max() == 1.0, "no pixel reaches 255/255"
    img = np.concatenate([t, b], 1).reshape(-1, 28, 28).astype(np.float64)
    assert np.allclose(img * 255, np.round(img * 255), atol=1e-4), "pixels are not k/255"
    pool = img.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(-1, 49)
    err = np.abs(pool - th).max()
    assert err < 1e-6, f"{split}: thumb differs from the 4x4 mean pool of top+bottom by {err}"
EOF
echo "test_fashion_mnist: ok"
