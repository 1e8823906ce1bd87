#!/usr/bin/python3
"""Edit a checkpoint's state.pb (hcl.TrainState, proto/checkpoint.proto) on the wire, with no
generated code: the tests' way to make a damaged or deliberately edited state.pb.

    state_pb.py FILE [--checksum fix|stale|none] [NAME=VALUE | NAME=drop | NAME=big:BYTES] ...

NAME is a TrainState field (step, epoch, ...); VALUE an integer, or for lr_scale / wall_time a
float ("nan" too). --checksum: fix (default) ends the file with the CRC-32C trailer of what
it now holds (field 20, as hcl writes it: a deliberate edit); stale keeps the trailer the file
had (an edit the checksum catches); none writes no trailer (as an hcl before the trailer did).
"""
import struct
import sys

from crc32c import crc32c   # tests/crc32c.py, beside this script

FIELDS = {"format_version": 1, "step": 2, "epoch": 3, "samples_seen": 4, "data_cursor": 5, "seed": 6,
          "data_rng": 7, "config": 8, "views": 9, "world_size": 10, "workers": 11, "optimizer_updates": 12,
          "skipped_steps": 13, "optimizer": 14, "lr_scale": 15, "wall_time": 16, "global_batch": 17,
          "model_params": 18, "files": 19}
DOUBLES = {15, 16}
STRINGS = {8, 14}
TRAILER = 20


def varint(x):
    x &= (1 << 64) - 1   # int64 on the wire: two's complement in ten bytes
    out = bytearray()
    while True:
        out.append((x & 0x7F) | (0x80 if x > 0x7F else 0))
        x >>= 7
        if not x:
            return bytes(out)


def read_varint(b, i):
    x = shift = 0
    while True:
        x |= (b[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not b[i - 1] & 0x80:
            return x, i


def parse(b):
    fields, i = [], 0
    while i < len(b):
        key, i = read_varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = read_varint(b, i)
        elif wt == 1:
            val, i = b[i:i + 8], i + 8
        elif wt == 5:
            val, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = read_varint(b, i)
            val, i = b[i:i + n], i + n
        else:
            sys.exit(f"state_pb.py: wire type {wt} of field {num}")
        fields.append([num, wt, val])
    return fields


def encode(fields):
    out = bytearray()
    for num, wt, val in fields:
        out += varint(num << 3 | wt)
        if wt == 0:
            out += varint(val)
        elif wt == 2:
            out += varint(len(val)) + val
        else:
            out += val
    return bytes(out)


def value(num, text):
    if num in DOUBLES:
        return 1, struct.pack("<d", float(text))
    if num in STRINGS:
        return 2, text.encode()
    return 0, int(text, 0)


def main():
    path, args = sys.argv[1], sys.argv[2:]
    checksum = "fix"
    if args[:1] == ["--checksum"]:
        checksum, args = args[1], args[2:]
    fields = parse(open(path, "rb").read())
    old = [f for f in fields if f[0] == TRAILER]
    fields = [f for f in fields if f[0] != TRAILER]
    for a in args:
        name, text = a.split("=", 1)
        num = FIELDS[name]
        if text == "drop":
            fields = [f for f in fields if f[0] != num]
            continue
        wt, val = (2, b"x" * int(text[4:])) if text.startswith("big:") else value(num, text)
        at = [k for k, f in enumerate(fields) if f[0] == num]
        if at:
            fields[at[0]] = [num, wt, val]
        else:
            fields.append([num, wt, val])
    body = encode(fields)
    if checksum == "fix":
        body += varint(TRAILER << 3 | 5) + struct.pack("<I", crc32c(body))
    elif checksum == "stale":
        body += varint(TRAILER << 3 | 5) + (old[0][2] if old else b"\0\0\0\0")
    open(path, "wb").write(body)


if __name__ == "__main__":
    main()
