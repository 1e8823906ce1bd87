#!/usr/bin/python3
"""Load an hcl checkpoint's model.safetensors with the standard library and numpy only, and
compute the embeddings hcl computes.

    import hcl_safetensors as hs
    tensors, meta = hs.load("runs/fm/checkpoints/step-00001170/model.safetensors")
    z = hs.embed(tensors, meta, "top", x)          # x: (n, 392) float32 -> (n, 128), unit rows

Tensor names: encoder.<view>.<k>.weight (out, in) and .bias (out) for k = 0..len(hidden),
encoder.<view>.<k>.norm.weight/.bias (LayerNorm after hidden layer k, when used), head.weight
(K, D) and head.bias (K) for the hybrid loss's classifier, logit_t (1,): the logit scale is
exp(logit_t). The same file loads with the `safetensors` library (safetensors.numpy.load_file).
"""
import json
import math
import struct
import sys

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


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


def _gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(tensors, meta, view, x, features=False):
    """Encode rows x (n, in_width) of `view`: the L2-normalised (n, D) embeddings, computed in
    float64. features=True returns the penultimate activations instead."""
    h = np.asarray(x, dtype=np.float64)
    nlayers = len([k for k in meta["hidden"].split(",") if k]) + 1
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
