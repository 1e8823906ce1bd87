#!/usr/bin/env bash
# test_bad_inputs: bad input to hcl-train, hcl-embed and hcl-data gets one line naming the file,
# flag or value, exit 2, no crash, and what a run directory already holds stays as it was
# (issue 17). Each case was a silent change, an abort or a late refusal before:
#   3  a config line longer than 2,048 bytes (a comment whose tail read `lr = 7` set lr), --config DIR
#   4  a model too large for memory: --hidden 65536,65536,65536 --dim 65536, or a model.safetensors
#      whose metadata says hidden 65536,65536 (both aborted: "out of memory allocating N floats");
#      a view wider than 2^20 columns (2^32 + 16 was cut to 16 by an int, then aborted)
#   5  a tensor of shape [8, 4611686018427387908]: its byte count wraps 64 bits to the file's 128
#   6  a second __metadata__ in a safetensors header
#   7  --epochs 9223372036854775807
#   10 a view absent from every row of --data (trained with loss 0; now exit 2, a warning for
#      --val-data), a view named v1.x (passed the manifest, refused by the model naming no file)
#   and the view kinds' rules (token views: ids in [0, V), V <= 2^24, vocab= and pad= with
#   `tokens`, int data only in them; image views: width H*W*C), and --encoder against them
#   HCL_BUILD=build bash tests/test_bad_inputs.sh
set -euo pipefail
B=${HCL_BUILD:-build}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/test_bad_inputs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_bad_inputs: FAIL: $*" >&2; exit 1; }

# refused WHAT NAMED CMD...: CMD exits 2 (WANT=N: N) with one line on stderr that names NAMED
refused() {
    local what=$1 named=$2 got=0 want=${WANT:-2}
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || got=$?
    [ "$got" = "$want" ] || fail "$what: exit $got, want $want; stderr: $(head -c 800 "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: want one line on stderr, got: $(head -c 800 "$tmp/err")"
    grep -qF -- "$named" "$tmp/err" || fail "$what: the line does not name '$named': $(cat "$tmp/err")"
    echo "  $what: $(cat "$tmp/err")"
}
# sums DIR: every file of DIR with its checksum, to see that nothing saved changed
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

"$B/hcl-data" synth "$tmp/d" --rows 64 --widths 16,8,4 --classes 4 --seed 1 >/dev/null
train=(--hidden 8 --dim 4 --batch-size 8 --threads 1)
"$B/hcl-train" --data "$tmp/d" --run-dir "$tmp/run" "${train[@]}" --steps 4 --checkpoint-every 2 \
    2>"$tmp/run.log" || { cat "$tmp/run.log"; fail "the good run failed"; }
before=$(sums "$tmp/run")
model=$(ls -d "$tmp"/run/checkpoints/step-*/model.safetensors | tail -1)
[ -f "$model" ] || fail "no model.safetensors in $tmp/run/checkpoints"
again=("$B/hcl-train" --data "$tmp/d" --run-dir "$tmp/run" "${train[@]}" --steps 8 --resume auto)

# ---- 3: config files --------------------------------------------------------------------------
"$PY" -c 'import sys; open(sys.argv[1], "w").write("# " + "x" * 3000 + " lr = 7\n")' "$tmp/long.conf"
"$B/hcl-train" --data "$tmp/d" --run-dir "$tmp/long" "${train[@]}" --steps 1 --config "$tmp/long.conf" \
    2>"$tmp/long.log" || { cat "$tmp/long.log"; fail "a long comment: the run failed"; }
grep -qx 'lr = 0.001' "$tmp/long/config.txt" || fail "a long comment changed lr: $(grep '^lr' "$tmp/long/config.txt")"
refused "--config DIR" "is a directory" "${again[@]}" --config "$tmp/d"

# ---- 4: a model too large for memory ----------------------------------------------------------
refused "--hidden 65536,65536,65536 --dim 65536" "--hidden/--dim" "${again[@]}" --hidden 65536,65536,65536 --dim 65536
grep -q 'parameters: .* need at least .*, more than the .* of ' "$tmp/err" || fail "4: no need and limit: $(cat "$tmp/err")"

# a view wider than 2^20 columns (a sparse file: 2^32 + 16 columns were cut to 16 by an int, then
# its batch aborted); here 2^20 + 1 columns of one row, 1 MB
mkdir "$tmp/wide"
echo "view w" >"$tmp/wide/manifest.txt"
"$PY" - "$tmp/wide/w.npy" <<'PY'
import sys
h = "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1048577), }"
h += " " * (-(10 + len(h) + 1) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode())
    f.truncate(10 + len(h) + 1048577)
PY
refused "a view of 2^20 + 1 columns" "$tmp/wide/w.npy: 1048577 columns" "${again[@]}" --data "$tmp/wide"

# The model's file with its header rewritten: st_edit IN OUT PYTHON-EXPRESSION-OF-h (the header text)
st_edit() {
    "$PY" - "$@" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = b[8:8 + n].decode()
new = eval(sys.argv[3]).encode()
assert new != h.encode(), "the edit changed nothing"
new += b" " * (-len(new) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(new)) + new + b[8 + n:])
PY
}
embed() { "$B/hcl-embed" --checkpoint "$1" --data "$tmp/d" --out "$tmp/emb"; }
st_edit "$model" "$tmp/wide.safetensors" 'h.replace("\"hidden\": \"8\"", "\"hidden\": \"65536,65536\"").replace("mlp:8", "mlp:65536,65536")'
refused "metadata hidden 65536,65536" "$tmp/wide.safetensors: metadata" embed "$tmp/wide.safetensors"
grep -q 'parameters: .* need at least ' "$tmp/err" || fail "4: metadata: no need: $(cat "$tmp/err")"
st_edit "$model" "$tmp/lies.safetensors" 'h.replace("\"hidden\": \"8\"", "\"hidden\": \"300\"").replace("mlp:8", "mlp:300")'
refused "metadata larger than the tensors" "$tmp/lies.safetensors" embed "$tmp/lies.safetensors"
[ ! -e "$tmp/emb" ] || fail "a refused model left $tmp/emb"

# ---- 5, 6: safetensors headers ----------------------------------------------------------------
st_edit "$model" "$tmp/wrap.safetensors" \
    'h.replace("\"logit_t\": {\"dtype\": \"F32\", \"shape\": [1]", "\"logit_t\": {\"dtype\": \"F32\", \"shape\": [8, 4611686018427387908]").replace("[4112, 4116]", "[4112, 4240]")'
"$PY" -c 'import sys; open(sys.argv[1], "ab").write(bytes(124))' "$tmp/wrap.safetensors"
refused "shape [8, 4611686018427387908]" "$tmp/wrap.safetensors: header at byte" embed "$tmp/wrap.safetensors"
grep -q "'logit_t'" "$tmp/err" || fail "5: the tensor is not named: $(cat "$tmp/err")"
st_edit "$model" "$tmp/meta2.safetensors" 'h.replace("{\"__metadata__\"", "{\"__metadata__\": {\"a\": \"b\"}, \"__metadata__\"")'
refused "a second __metadata__" "$tmp/meta2.safetensors: header at byte" embed "$tmp/meta2.safetensors"
grep -q "a second '__metadata__'" "$tmp/err" || fail "6: $(cat "$tmp/err")"

# ---- 7: --epochs ------------------------------------------------------------------------------
refused "--epochs 2^63-1" "--epochs" "${again[@]}" --steps 0 --epochs 9223372036854775807

# ---- 10: views --------------------------------------------------------------------------------
cp -r "$tmp/d" "$tmp/absent"
"$PY" -c 'import numpy as np, sys; m = np.ones((64, 3), np.uint8); m[:, 1] = 0; np.save(sys.argv[1], m)' \
    "$tmp/absent/mask.npy"
refused "a view in no row of --data" "$tmp/absent/mask.npy: view 'v1'" "${again[@]}" --data "$tmp/absent"
"$B/hcl-train" --data "$tmp/d" --val-data "$tmp/absent" --run-dir "$tmp/val" "${train[@]}" --steps 1 \
    2>"$tmp/val.log" || { cat "$tmp/val.log"; fail "a view in no row of --val-data: the run failed"; }
grep -q "WARN .*$tmp/absent/mask.npy: view 'v1' is absent from every validation row" "$tmp/val.log" ||
    fail "a view in no row of --val-data: no warning: $(cat "$tmp/val.log")"
cp -r "$tmp/d" "$tmp/dotted"
sed -i 's/^view v1$/view v1.x/' "$tmp/dotted/manifest.txt"
mv "$tmp/dotted/v1.npy" "$tmp/dotted/v1.x.npy"
line=$(grep -n '^view v1.x$' "$tmp/dotted/manifest.txt" | cut -d: -f1)
refused "a view named v1.x" "$tmp/dotted/manifest.txt:$line: bad view name 'v1.x'" "${again[@]}" --data "$tmp/dotted"
# hcl-data's exit for bad data is 1 (tools/hcl-data.c)
WANT=1 refused "hcl-data inspect of v1.x" "$tmp/dotted/manifest.txt:$line" "$B/hcl-data" inspect "$tmp/dotted"

# ---- view kinds: token and image views (common/dataset.h) -------------------------------------
# kind NAME MANIFEST-LINE-OF-v2 DTYPE: a copy of the data whose view v2 is that line over (64, 4)
# DTYPE values (ids 0..63; an int32 id 100 at row 12, column 3 with DTYPE int32-bad)
kind() {
    cp -r "$tmp/d" "$tmp/$1"
    sed -i "s/^view v2\$/$2/" "$tmp/$1/manifest.txt"
    "$PY" -c '
import sys, numpy as np
x = (np.arange(256) % 64).reshape(64, 4)
if sys.argv[2] == "int32-bad":
    x[12, 3] = 100
np.save(sys.argv[1], x.astype(sys.argv[2].split("-")[0]))' "$tmp/$1/v2.npy" "$3"
    line=$(grep -n '^view v2' "$tmp/$1/manifest.txt" | cut -d: -f1)
}
kind kid "view v2 tokens vocab=100 pad=0" int32-bad
refused "a token id out of range" "$tmp/kid/v2.npy: row 12 column 3: token id 100 outside [0, 100) (vocab=100)" \
    "${again[@]}" --data "$tmp/kid"
kind kvocab "view v2 tokens vocab=33554432 pad=0" int32
refused "vocab=2^25" "$tmp/kvocab/manifest.txt:$line: view 'v2': 'vocab=33554432' is more than 16777216 (2^24)" \
    "${again[@]}" --data "$tmp/kvocab"
kind knovocab "view v2 tokens pad=0" int32
refused "tokens without vocab=" "view 'v2': \`tokens\` needs vocab= and pad= (write \`view v2 tokens vocab=V pad=P\`)" \
    "${again[@]}" --data "$tmp/knovocab"
kind kints "view v2" int64
refused "int ids in a view without tokens" "$tmp/kints/v2.npy: int64 data in view 'v2'" "${again[@]}" --data "$tmp/kints"
grep -qF 'write `view v2 tokens vocab=V pad=P`' "$tmp/err" || fail "int ids: no hint: $(cat "$tmp/err")"
kind kimage "view v2 image=2x3x1" float32
refused "an image's width" "$tmp/kimage/v2.npy: 4 columns but view 'v2' is image=2x3x1 (6 values a row)" \
    "${again[@]}" --data "$tmp/kimage"

# ---- encoders (--encoder VIEW=SPEC) against the views' kinds ------------------------------------
kind ktok "view v2 tokens vocab=64 pad=0" int32
kind kimg "view v2 image=2x2x1" float32
refused "a token view without a bag" "view 'v2' of $tmp/ktok holds token ids: give it a bag encoder (--encoder v2=bag:E" \
    "${again[@]}" --data "$tmp/ktok"
refused "--encoder of no view" "--encoder: no view named 'v9' in $tmp/d" "${again[@]}" --encoder v9=mlp:4
refused "--encoder without =" "--encoder: 'v1' is not VIEW=SPEC" "${again[@]}" --encoder v1
refused "--encoder lstm" "--encoder v1=lstm:4: encoder 'lstm:4': want mlp:" "${again[@]}" --encoder v1=lstm:4
refused "--encoder twice for a view" "--encoder: view 'v1' given twice" "${again[@]}" --encoder v1=mlp:4 --encoder v1=mlp:8
refused "a bag on a dense view" "--encoder v1=bag:4: view 'v1' of $tmp/d holds no token ids" "${again[@]}" --encoder v1=bag:4
refused "a conv on a dense view" "--encoder v1=conv:4: view 'v1' of $tmp/d is not an image" "${again[@]}" --encoder v1=conv:4
refused "a bag with sgd" "--optimizer sgd: view 'v2' has a bag encoder" \
    "${again[@]}" --data "$tmp/ktok" --encoder v2=bag:4 --optimizer sgd
refused "a conv of too many poolings" "--encoder: model: view 'v2': a 2x2 image is too small for 2 2x2 poolings" \
    "${again[@]}" --data "$tmp/kimg" --encoder v2=conv:4,4
# a bag model (trained on the token view) embeds only a token view of its vocabulary
"$B/hcl-train" --data "$tmp/ktok" --run-dir "$tmp/tokrun" "${train[@]}" --steps 2 --encoder v2=bag:4 \
    2>"$tmp/tok.log" || { cat "$tmp/tok.log"; fail "the token run failed"; }
refused "a bag model on a dense view" "model: view 'v2' of $tmp/d is dense, expected tokens vocab=64 pad=0" \
    "$B/hcl-embed" --checkpoint "$tmp/tokrun" --data "$tmp/d" --out "$tmp/emb2"
kind ktok2 "view v2 tokens vocab=65 pad=0" int32
refused "a bag model on another vocabulary" "is tokens vocab=65 pad=0, expected tokens vocab=64 pad=0" \
    "$B/hcl-embed" --checkpoint "$tmp/tokrun" --data "$tmp/ktok2" --out "$tmp/emb2"
refused "--val-data of another kind" "--val-data: view 'v2' of $tmp/d is dense, expected tokens vocab=64 pad=0" \
    "$B/hcl-train" --data "$tmp/ktok" --val-data "$tmp/d" --run-dir "$tmp/tokrun2" "${train[@]}" --steps 2 --encoder v2=bag:4
[ ! -e "$tmp/emb2" ] || fail "a refused embedding left $tmp/emb2"

[ "$(sums "$tmp/run")" = "$before" ] || fail "a refused run changed $tmp/run"
echo "test_bad_inputs: ok"
