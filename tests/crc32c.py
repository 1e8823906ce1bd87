"""crc32c: CRC-32C (Castagnoli, reflected 0x82F63B78) for the tests' independent readers of hcl's
files (tfevents_reader.py, state_pb.py), written here rather than taken from hcl's C code."""


def _table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
