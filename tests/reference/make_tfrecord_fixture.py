"""Writes tests/fixtures/tfrecord/reference.tfrecord and reference.json: a TFRecord file made
the way TensorFlow makes one, without TensorFlow (not installable here), so tbc's reader is
checked against an independent implementation.

- Examples are encoded by Google's `protobuf` package from the message definitions of
  tensorflow/core/example/{feature,example}.proto, built here as descriptors (no protoc needed),
  and serialized deterministically (map entries sorted by key).
- The framing is TensorFlow's (tsl/lib/io/record_writer.cc): u64 length, masked CRC32C of the
  length, data, masked CRC32C of the data; CRC32C is computed bit by bit from its definition
  (reflected polynomial 0x82F63B78), and masked as ((crc >> 15) | (crc << 17)) + 0xa282ead8.

reference.json lists each record's features and the hex of its serialized bytes.

Run: /work/venv-torch/bin/python tests/reference/make_tfrecord_fixture.py   (needs `protobuf`)
"""

import json
import pathlib
import struct

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tfrecord"


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(length)) + data + struct.pack("<I", masked(data))


def example_class():
    """tf.train.Example from descriptors equal to TensorFlow's .proto files (proto3)."""
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="tbc_example.proto", package="tensorflow", syntax="proto3")

    def msg(name, fields, nested=()):
        m = f.message_type.add(name=name)
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        for fname, number, ftype, label, type_name, oneof in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name
            if oneof is not None:
                fd.oneof_index = oneof
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg("BytesList", [("value", 1, F.TYPE_BYTES, rep, None, None)])
    msg("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None, None)])
    msg("Int64List", [("value", 1, F.TYPE_INT64, rep, None, None)])
    feat = msg("Feature", [
        ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
        ("float_list", 2, F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
        ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0),
    ])
    feat.oneof_decl.add(name="kind")
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    entry.options.map_entry = True
    msg("Features", [("feature", 1, F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None)], [entry])
    msg("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def main():
    Example = example_class()
    seq = 8
    rows = [
        # A GLUE-style row (what run_classifier.py writes), an STS-B-style float label, and a
        # row with negative/large int64s and a bytes feature.
        {"input_ids": [101, 7592, 2088, 102, 0, 0, 0, 0], "input_mask": [1, 1, 1, 1, 0, 0, 0, 0],
         "segment_ids": [0] * seq, "label_ids": [1], "is_real_example": [1]},
        {"input_ids": [101, 2023, 102, 2008, 2003, 102, 0, 0], "input_mask": [1] * 6 + [0, 0],
         "segment_ids": [0, 0, 0, 1, 1, 1, 0, 0], "label_ids": [3.75]},
        {"input_ids": [-5, 2**40, 0, 1, 2, 3, 4, 5], "input_mask": [1] * seq, "segment_ids": [1] * seq,
         "label_ids": [0], "note": [b"caf\xc3\xa9", b""]},
    ]
    records, listing = [], []
    for row in rows:
        ex = Example()
        for name, values in row.items():
            feature = ex.features.feature[name]
            if isinstance(values[0], bytes):
                feature.bytes_list.value.extend(values)
            elif isinstance(values[0], float):
                feature.float_list.value.extend(values)
            else:
                feature.int64_list.value.extend(values)
        data = ex.SerializeToString(deterministic=True)
        records.append(frame(data))
        listing.append({
            "features": {k: ([v.hex() for v in vs] if isinstance(vs[0], bytes) else vs) for k, vs in row.items()},
            "serialized_hex": data.hex(),
        })
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reference.tfrecord").write_bytes(b"".join(records))
    (OUT / "reference.json").write_text(json.dumps({"records": listing}, indent=1) + "\n")
    assert crc32c(b"123456789") == 0xE3069283  # the CRC32C check value
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
