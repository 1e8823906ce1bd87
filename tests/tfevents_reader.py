"""tfevents_reader: an independent reader of TensorBoard event files for the tests, written from
TensorBoard's published format, not from hcl's code: TFRecord framing (u64 length, masked
CRC-32C of the length, data, masked CRC-32C of the data; the CRC computed here) and Event
messages decoded by python3-protobuf from descriptors built here with TensorBoard's field
numbers (event.proto, summary.proto, tensor.proto).

    events(path)  -> [Event]            raises ValueError on a bad frame or checksum
    scalars(dir)  -> {tag: {step: value}} as TensorBoard shows them: files in name order, a
                     SessionLog START at step S dropping what came before at steps >= S
"""
import os
import struct

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from crc32c import crc32c

_T = descriptor_pb2.FieldDescriptorProto


def masked_crc32c(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _message(fdp, name, fields):
    m = fdp.message_type.add(name=name)
    for fname, number, ftype, label, type_name in fields:
        f = m.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name


def _classes():
    fdp = descriptor_pb2.FileDescriptorProto(name="tfevents_reader_test.proto", package="tbr", syntax="proto3")
    opt, rep = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
    _message(fdp, "PluginData", [("plugin_name", 1, _T.TYPE_STRING, opt, None),
                                 ("content", 2, _T.TYPE_BYTES, opt, None)])
    _message(fdp, "SummaryMetadata", [("plugin_data", 1, _T.TYPE_MESSAGE, opt, ".tbr.PluginData")])
    _message(fdp, "TensorProto", [("dtype", 1, _T.TYPE_INT32, opt, None),
                                  ("string_val", 8, _T.TYPE_BYTES, rep, None)])
    _message(fdp, "Value", [("tag", 1, _T.TYPE_STRING, opt, None),
                            ("simple_value", 2, _T.TYPE_FLOAT, opt, None),
                            ("tensor", 8, _T.TYPE_MESSAGE, opt, ".tbr.TensorProto"),
                            ("metadata", 9, _T.TYPE_MESSAGE, opt, ".tbr.SummaryMetadata")])
    _message(fdp, "Summary", [("value", 1, _T.TYPE_MESSAGE, rep, ".tbr.Value")])
    _message(fdp, "SessionLog", [("status", 1, _T.TYPE_INT32, opt, None)])
    _message(fdp, "Event", [("wall_time", 1, _T.TYPE_DOUBLE, opt, None),
                            ("step", 2, _T.TYPE_INT64, opt, None),
                            ("file_version", 3, _T.TYPE_STRING, opt, None),
                            ("summary", 5, _T.TYPE_MESSAGE, opt, ".tbr.Summary"),
                            ("session_log", 7, _T.TYPE_MESSAGE, opt, ".tbr.SessionLog")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("tbr.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


Event = _classes()
SESSION_START = 1


def events(path):
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated header at byte {pos}")
        head = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", head)
        (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked_crc32c(head) != hcrc:
            raise ValueError(f"{path}: bad length checksum at byte {pos}")
        body = data[pos + 12:pos + 12 + n]
        if len(body) != n or pos + 16 + n > len(data):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        (dcrc,) = struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])
        if masked_crc32c(body) != dcrc:
            raise ValueError(f"{path}: bad data checksum at byte {pos}")
        ev = Event()
        ev.ParseFromString(body)
        out.append(ev)
        pos += 16 + n
    return out


def files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if "tfevents" in f)


def scalars(d):
    seen = {}
    for path in files(d):
        for ev in events(path):
            if ev.HasField("session_log") and ev.session_log.status == SESSION_START:
                for tag in seen:
                    seen[tag] = {s: v for s, v in seen[tag].items() if s < ev.step}
            if ev.HasField("summary"):
                for v in ev.summary.value:
                    if not v.HasField("tensor"):
                        seen.setdefault(v.tag, {})[ev.step] = v.simple_value
    return seen
