#!/usr/bin/env bash
# test_hcl_data: the hcl-data tool end to end. synth is seeded (same seed, same bytes), inspect
# validates, numpy reads what we write, --missing-rate writes a sane mask, bad usage exits 2,
# fashion-mnist --kinds of a small fake IDX source writes an image, a token and a dense view
# (the real fashion-mnist: tests/test_fashion_mnist.sh).
#   HCL_BUILD=build-data bash tests/test_hcl_data.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HCL_SRC=${HCL_SRC:-$(dirname "$here")}
HCL_BUILD=${HCL_BUILD:-$HCL_SRC/build}
case $HCL_BUILD in /*) ;; *) HCL_BUILD=$PWD/$HCL_BUILD ;; esac
tool=$HCL_BUILD/hcl-data
py=/usr/bin/python3
[ -x "$tool" ] || { echo "test_hcl_data: FAIL: $tool not built" >&2; exit 1; }

tmp=$(mktemp -d /tmp/test_hcl_data.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_hcl_data: FAIL: $*" >&2; exit 1; }
cd "$tmp"

# ---- synth: deterministic ------------------------------------------------------------------
"$tool" synth s1 --rows 300 --widths 12,7,5 --classes 4 --seed 3 >/dev/null
"$tool" synth s2 --rows=300 --widths=12,7,5 --classes=4 --seed=3 >/dev/null
"$tool" synth s3 --rows 300 --widths 12,7,5 --classes 4 --seed 4 >/dev/null
for f in manifest.txt v0.npy v1.npy v2.npy labels.npy; do
    cmp -s "s1/$f" "s2/$f" || fail "synth with the same seed wrote different $f"
done
cmp -s s1/v0.npy s3/v0.npy && fail "synth with seeds 3 and 4 wrote the same v0.npy"
cmp -s s1/labels.npy s3/labels.npy && fail "synth with seeds 3 and 4 wrote the same labels.npy"
[ -e s1/mask.npy ] && fail "synth without --missing-rate wrote mask.npy"
grep -qx 'view v0' s1/manifest.txt && grep -qx 'view v2' s1/manifest.txt ||
    fail "manifest lacks view lines: $(cat s1/manifest.txt)"

# ---- inspect -------------------------------------------------------------------------------
out=$("$tool" inspect s1)
echo "$out" | grep -Eq '^rows +300$' || fail "inspect: no 'rows 300' line in: $out"
echo "$out" | grep -Eq '^view +v1 +width 7 +dtype float32 +present 1.0000 type dense$' ||
    fail "inspect: no line for view v1 in: $out"
echo "$out" | grep -Eq '^labels +int64 classes 4$' || fail "inspect: no labels line in: $out"
[ "$(echo "$out" | grep -Ec '^class ')" = 4 ] || fail "inspect: want 4 class lines in: $out"

# ---- numpy reads it; the views share a latent (cross-view linear fit beats chance) ---------
"$py" - s1 <<'EOF' || fail "numpy check of synth output"
import sys, numpy as np
d = sys.argv[1]
X = [np.load(f"{d}/v{i}.npy") for i in range(3)]
y = np.load(f"{d}/labels.npy")
assert [x.shape for x in X] == [(300, 12), (300, 7), (300, 5)], [x.shape for x in X]
assert all(x.dtype == np.float32 and x.flags.c_contiguous for x in X), [x.dtype for x in X]
assert y.dtype == np.int64 and y.shape == (300,), (y.dtype, y.shape)
assert y.min() >= 0 and y.max() <= 3 and len(np.unique(y)) == 4, np.unique(y)
assert all(np.isfinite(x).all() and x.std() > 0.1 for x in X)
A = np.c_[X[0], np.ones(300)]
W = np.linalg.lstsq(A[:200], X[1][:200], rcond=None)[0]
r2 = 1 - ((X[1][200:] - A[200:] @ W) ** 2).mean() / X[1][200:].var()
assert r2 > 0.3, f"v0 explains only R2={r2:.3f} of v1: the views do not share a latent"
EOF

# ---- --missing-rate: a mask with about that rate, no row without views ---------------------
"$tool" synth m --rows 4000 --widths 6,5,4 --missing-rate 0.3 --seed 1 >/dev/null
[ -e m/mask.npy ] || fail "--missing-rate 0.3 wrote no mask.npy"
"$py" - m <<'EOF' || fail "numpy check of mask.npy"
import sys, numpy as np
d = sys.argv[1]
m = np.load(f"{d}/mask.npy")
assert m.shape == (4000, 3) and m.dtype == np.uint8, (m.shape, m.dtype)
assert set(np.unique(m)) <= {0, 1}, np.unique(m)
assert m.sum(1).min() >= 1, "a row has no view present"
absent = 1 - m.mean()
assert 0.25 < absent < 0.33, f"absent fraction {absent:.3f}, want about 0.3 (a little less)"
v0 = np.load(f"{d}/v0.npy")
assert (v0[m[:, 0] == 0] == 0).all(), "absent rows of v0 are not zero"
EOF
"$tool" inspect m | grep -Eq '^mask +uint8 rows-without-views 0$' || fail "inspect m: mask line"
# rewriting without a mask removes the stale one
"$tool" synth m --rows 50 --widths 6,5 >/dev/null
[ -e m/mask.npy ] && fail "stale mask.npy left after synth without --missing-rate"
[ -e m/v2.npy ] && fail "stale v2.npy left after synth with 2 views"
"$tool" inspect m >/dev/null || fail "inspect after rewriting m"

# ---- fashion-mnist --kinds: image, words (visual-word tokens), thumb ------------------------
# A fake --source of 12 train and 6 test images. Image 0 of train is blank but for patch 17
# (py 2, px 3) at 100: level 100 * 8 / 256 = 3, token 1 + 17 * 7 + 2 = 122; patch 0 at 255:
# level 7, token 7; patch 48 at 31: level 0, the padding token 0; patch 40 at 32: level 1,
# token 1 + 40 * 7 = 281.
"$py" - src <<'EOF' || fail "writing the fake IDX source"
import gzip, os, sys
import numpy as np
d = sys.argv[1]
os.makedirs(d)
rng = np.random.default_rng(5)
for prefix, n in (("train", 12), ("t10k", 6)):
    img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    img[:, 20:, :] = 0                       # blank rows: padding tokens in every image
    if prefix == "train":
        img[0] = 0
        img[0, 8:12, 12:16] = 100            # patch 17
        img[0, 0:4, 0:4] = 255               # patch 0
        img[0, 24:28, 24:28] = 31            # patch 48
        img[0, 20:24, 20:24] = 32            # patch 40
    lab = (np.arange(n) % 10).astype(np.uint8)
    with gzip.open(f"{d}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(np.array([0x803, n, 28, 28], ">u4").tobytes() + img.tobytes())
    with gzip.open(f"{d}/{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([0x801, n], ">u4").tobytes() + lab.tobytes())
EOF
"$tool" fashion-mnist k --source src >/dev/null       # the dense views first: --kinds replaces them
"$tool" fashion-mnist k --kinds --source src >/dev/null
for f in top bottom; do [ -e "k/train/$f.npy" ] && fail "--kinds left a stale $f.npy"; done
out=$("$tool" inspect k/train)
echo "$out" | grep -Eq '^view +image +width 784 +dtype uint8 +present 1.0000 type image=28x28x1$' &&
    echo "$out" | grep -Eq '^view +words +width 49 +dtype int32 +present 1.0000 type tokens vocab=344 pad=0$' &&
    echo "$out" | grep -Eq '^view +thumb +width 49 +dtype float32 +present 1.0000 type dense$' ||
    fail "inspect of the --kinds dataset: $out"
grep -qx 'view words tokens vocab=344 pad=0' k/test/manifest.txt || fail "k/test manifest: $(cat k/test/manifest.txt)"
"$py" - src k <<'EOF' || fail "numpy check of fashion-mnist --kinds"
import gzip, sys
import numpy as np
src, d = sys.argv[1:]
for prefix, split, n in (("train", "train", 12), ("t10k", "test", 6)):
    img = np.frombuffer(gzip.open(f"{src}/{prefix}-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(n, 784)
    lab = np.frombuffer(gzip.open(f"{src}/{prefix}-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    image, words, thumb = (np.load(f"{d}/{split}/{v}.npy") for v in ("image", "words", "thumb"))
    assert image.dtype == np.uint8 and image.shape == (n, 784), (image.dtype, image.shape)
    assert image.tobytes() == img.tobytes(), "image bytes differ from the source"
    assert words.dtype == np.int32 and words.shape == (n, 49), (words.dtype, words.shape)
    assert words.min() >= 0 and words.max() < 344, (words.min(), words.max())
    assert (words[split == "train":, 35:] == 0).all(), "the blank rows 20-27 are not padding"   # but image 0
    p = np.arange(49)
    lev = img.reshape(n, 7, 4, 7, 4).astype(np.int64).sum(axis=(2, 4)).reshape(n, 49) // 16 * 8 // 256
    assert (words == np.where(lev == 0, 0, 1 + p * 7 + lev - 1)).all(), "words differ from the construction"
    pool = img.reshape(n, 7, 4, 7, 4).astype(np.float64).mean(axis=(2, 4)).reshape(n, 49) / 255
    assert np.abs(pool - thumb).max() < 1e-6, "thumb is not the 4x4 mean pool / 255"
    assert (np.load(f"{d}/{split}/labels.npy") == lab).all(), "labels"
w = np.load(f"{d}/train/words.npy")[0]
want = {17: 122, 0: 7, 48: 0, 40: 281}
assert all(w[q] == t for q, t in want.items()), {q: int(w[q]) for q in want}
assert (np.delete(w, list(want)) == 0).all(), "blank patches of image 0 are not padding"
EOF

# ---- errors: one line, exit codes ----------------------------------------------------------
expect_exit() {   # expect_exit CODE PATTERN CMD...
    local code=$1 pat=$2 rc=0; shift 2
    "$@" >out.txt 2>err.txt || rc=$?
    [ "$rc" = "$code" ] || fail "'$*' exited $rc, want $code (stderr: $(cat err.txt))"
    [ "$(wc -l <err.txt)" = 1 ] || fail "'$*' printed $(wc -l <err.txt) error lines, want 1"
    grep -q "^hcl-data: .*$pat" err.txt || fail "'$*' error lacks '$pat': $(cat err.txt)"
}
expect_exit 2 "unknown flag '--bogus'" "$tool" synth x --bogus 1
expect_exit 2 "--rows: bad value 'ten'" "$tool" synth x --rows ten
expect_exit 2 "--missing-rate: bad value '1.5'" "$tool" synth x --missing-rate 1.5
expect_exit 2 "--widths: bad value '4,,2'" "$tool" synth x --widths 4,,2
expect_exit 2 "--seed needs a value" "$tool" synth x --seed
expect_exit 2 "unknown command 'frobnicate'" "$tool" frobnicate
expect_exit 2 "missing OUT" "$tool" synth
expect_exit 2 "missing DIR" "$tool" inspect
"$tool" --help | grep -q '^usage: hcl-data' || fail "--help"
"$tool" synth --help | grep -q -- '--missing-rate' || fail "synth --help lacks --missing-rate"
"$tool" fashion-mnist --help | grep -q -- '--source' || fail "fashion-mnist --help lacks --source"
"$tool" fashion-mnist --help | grep -q -- '--kinds .*1 + p\*7 + level-1; vocab 344' ||
    fail "fashion-mnist --help lacks --kinds and its construction"
cp -r s1 bad
"$py" -c "
import numpy as np
x = np.load('bad/v1.npy'); x[17, 3] = np.nan; np.save('bad/v1.npy', x)"
expect_exit 1 "bad/v1.npy: NaN at row 17, column 3" "$tool" inspect bad
rm bad/manifest.txt
expect_exit 1 "bad/manifest.txt: missing" "$tool" inspect bad
expect_exit 1 "/nonexistent: not found (install dataset-fashion-mnist" \
    "$tool" fashion-mnist fm --source /nonexistent

echo "test_hcl_data: ok"
