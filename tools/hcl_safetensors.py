#!/usr/bin/python3
"""Load an hcl checkpoint's model.safetensors with the standard library and numpy only, and
compute the embeddings hcl computes.

    import hcl_safetensors as hs
    tensors, meta = hs.load("runs/fm/checkpoints/step-00001170/model.safetensors")
    z = hs.embed(tensors, meta, "top", x)          # x: (n, 392) float32 -> (n, 128), unit rows
    hs.encoders(meta)                              # {view: spec}, e.g. {"kind": "conv", ...}
    z = hs.embed(tensors, meta, "image", u8 / 255.0)   # conv: uint8 pixels as hcl's reader scales them
    f = hs.embed(tensors, meta, "words", ids, features=True)   # as hcl-embed --features

Each view's encoder is a front, then linear layers, then L2 normalisation. The metadata key
`encoders` gives one spec per view (`;` between them, in the order of `views`), as
`hcl-train --encoder VIEW=SPEC` writes them; a file without it has an mlp of `hidden` on
every view. By kind, x (n, in_width) of embed() is what hcl's model receives (float32):

  mlp:W1,W2,... (mlp:none)   x dense rows; the front is x itself.
  bag:E,W1,.../vocab=V/pad=P x rows of L token ids (as floats); the front is the mean of the
                             rows of encoder.<view>.embed.weight (V, E) of the row's ids other
                             than P (a zero vector when every id is P).
  conv:C1,C2,.../image=HxWxC x rows of H*W*C values in HWC order (hcl's reader divides uint8
                             images by 255: pass x / 255.0); stage j: 3x3 convolution, stride 1,
                             padding 1 (cross-correlation, as torch.nn.Conv2d) with
                             encoder.<view>.conv.<j>.weight (Cj, Cj-1, 3, 3) and .bias (Cj),
                             ReLU, 2x2 max pooling of stride 2 (an odd last row or column
                             dropped); the front is the mean over positions (n, C_last),
                             then one linear layer (a conv spec names no hidden widths).

Then for k = 0..len(W): encoder.<view>.<k>.weight (out, in) and .bias (out), the first taking
the front's output; after each hidden layer k LayerNorm encoder.<view>.<k>.norm.weight/.bias
(metadata layernorm=1) and ReLU or GELU (metadata act); the last layer (to dim) is normalised.
Also head.weight (K, D) and head.bias (K) for the hybrid loss's classifier, logit_t (1,): the
logit scale is exp(logit_t). The same file loads with the `safetensors` library
(safetensors.numpy.load_file).

As a program: prints the metadata and each tensor's dtype and shape.
"""
import json
import math
import struct
import sys

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}
_CONV_CHUNK = 1024   # conv rows at a time: 1024 28x28 images of 16 channels are 100 MB of float64


def load(path):
    """-> (dict name -> np.ndarray, dict of __metadata__ strings)"""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    data = raw[8 + hlen:]
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        tensors[name] = np.frombuffer(data[b:e], dtype=_DTYPES[t["dtype"]]).reshape(t["shape"]).copy()
    return tensors, meta


def _ints(text):
    return [] if text in ("", "none") else [int(w) for w in text.split(",")]


def parse_spec(text):
    """One view's spec (`conv:16,32/image=28x28x1`) -> dict: kind, hidden (list), and embed,
    vocab, pad (bag) or chans, image (H, W, C) (conv)."""
    kind, _, rest = text.partition(":")
    widths, *parts = rest.split("/")
    w = _ints(widths)
    spec = {"kind": kind, "hidden": w}
    if kind == "bag":
        spec.update(embed=w[0], hidden=w[1:], vocab=None, pad=None)
    elif kind == "conv":
        spec.update(chans=w, hidden=[], image=None)
    elif kind != "mlp":
        raise ValueError(f"encoder '{text}': unknown kind '{kind}'")
    for part in parts:
        key, _, value = part.partition("=")
        if kind == "bag" and key in ("vocab", "pad"):
            spec[key] = int(value)
        elif kind == "conv" and key == "image":
            spec["image"] = tuple(int(d) for d in value.split("x"))
        else:
            raise ValueError(f"encoder '{text}': unknown part '{part}'")
    return spec


def encoders(meta):
    """{view: parse_spec(...)} in view order; every view an mlp of `hidden` without `encoders`."""
    views = meta["views"].split(",")
    if "encoders" not in meta:
        return {v: {"kind": "mlp", "hidden": _ints(meta["hidden"])} for v in views}
    specs = meta["encoders"].split(";")
    if len(specs) != len(views):
        raise ValueError(f"metadata 'encoders' has {len(specs)} specs for {len(views)} views")
    return {v: parse_spec(s) for v, s in zip(views, specs)}


def _gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _bag(table, ids, pad):
    """The mean of table's rows (V, E) at ids (n, L) other than pad -> (n, E); zeros when none."""
    keep = (ids != pad)[:, :, None]   # (n, L, 1)
    return (table[ids] * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)


def _conv3x3_relu_pool(h, w, b):
    """h (n, H, W, Cin), w (Cout, Cin, 3, 3), b (Cout) -> (n, H//2, W//2, Cout): a 3x3
    convolution of padding 1 as the sum of its 9 shifted views, ReLU, 2x2 max pooling."""
    n, H, W, _ = h.shape
    hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = b + sum(hp[:, dy:dy + H, dx:dx + W, :] @ w[:, :, dy, dx].T for dy in range(3) for dx in range(3))
    y = np.maximum(y, 0.0)
    H2, W2 = H // 2, W // 2
    return y[:, :2 * H2, :2 * W2, :].reshape(n, H2, 2, W2, 2, -1).max(axis=(2, 4))


def _conv(tensors, view, spec, x):
    """The conv front: x (n, H*W*C) in HWC order -> (n, C_last), _CONV_CHUNK rows at a time."""
    H, W, C = spec["image"]
    ws = [tensors[f"encoder.{view}.conv.{j}.weight"].astype(np.float64) for j in range(len(spec["chans"]))]
    bs = [tensors[f"encoder.{view}.conv.{j}.bias"].astype(np.float64) for j in range(len(spec["chans"]))]
    out = np.empty((x.shape[0], spec["chans"][-1]))
    for r in range(0, x.shape[0], _CONV_CHUNK):
        h = x[r:r + _CONV_CHUNK].reshape(-1, H, W, C)
        for w, b in zip(ws, bs):
            h = _conv3x3_relu_pool(h, w, b)
        out[r:r + _CONV_CHUNK] = h.mean(axis=(1, 2))
    return out


def front(tensors, meta, view, x, spec=None):
    """View `view`'s front on x (n, in_width): x itself (mlp), the bag's mean or the conv's
    pooled features, float64. spec: encoders(meta)[view], when the caller has it."""
    spec = spec or encoders(meta)[view]
    x = np.asarray(x)
    if spec["kind"] == "bag":
        table = tensors[f"encoder.{view}.embed.weight"].astype(np.float64)
        return _bag(table, x.astype(np.int64), spec["pad"])
    if spec["kind"] == "conv":
        return _conv(tensors, view, spec, x.astype(np.float64))
    return x.astype(np.float64)


def embed(tensors, meta, view, x, features=False):
    """Encode rows x (n, in_width) of `view`: the L2-normalised (n, D) embeddings, computed in
    float64. features=True returns the last hidden layer's activations instead (the front's
    output when the encoder has no hidden layer), as hcl-embed --features."""
    spec = encoders(meta)[view]
    h = front(tensors, meta, view, x, spec)
    nlayers = len(spec["hidden"]) + 1
    if features and nlayers == 1:
        return h
    for k in range(nlayers):
        w = tensors[f"encoder.{view}.{k}.weight"].astype(np.float64)
        b = tensors[f"encoder.{view}.{k}.bias"].astype(np.float64)
        h = h @ w.T + b
        if k == nlayers - 1:
            break
        if meta.get("layernorm") == "1":
            mu = h.mean(axis=1, keepdims=True)
            var = h.var(axis=1, keepdims=True)
            h = (h - mu) / np.sqrt(var + 1e-5)
            h = h * tensors[f"encoder.{view}.{k}.norm.weight"] + tensors[f"encoder.{view}.{k}.norm.bias"]
        h = _gelu(h) if meta.get("act") == "gelu" else np.maximum(h, 0.0)
        if features and k == nlayers - 2:
            return h
    return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)


if __name__ == "__main__":
    tensors, meta = load(sys.argv[1])
    print(json.dumps(meta, indent=1))
    for name, t in tensors.items():
        print(f"{name:40s} {str(t.dtype):8s} {tuple(t.shape)}")
