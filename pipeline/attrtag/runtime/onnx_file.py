"""The model card and output names of an ``.onnx`` file, read straight from its protobuf bytes.

``attrtag tag`` needs only two things from the file before the session exists: the
``metadata_props`` entries and the graph's output names. ``import onnx`` costs about 0.7 s (its
``ml_dtypes`` extension) and ``onnx.load`` parses all 95 MB of a ResNet-50's weights, together
about two thirds of a tag run's start-up on a 2-core machine; this reader seeks past the weights
and needs neither ``onnx`` nor a session.

Protobuf wire format: each field is a varint key ``(number << 3) | wire_type``; wire type 0 is a
varint, 1 eight bytes, 2 a varint length then that many bytes, 5 four bytes
(https://protobuf.dev/programming-guides/encoding/). Field numbers are from ``onnx.proto``:
``ModelProto.graph = 7``, ``ModelProto.metadata_props = 14``, ``GraphProto.output = 12``,
``ValueInfoProto.name = 1``, ``StringStringEntryProto.key = 1, value = 2``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Iterator

_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_OUTPUT = 12
_NAME, _KEY, _VALUE = 1, 1, 2
_LEN = 2
_FIXED = {1: 8, 5: 4}


class OnnxFormatError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, or not ONNX at all)."""


def read_metadata_and_outputs(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """``metadata_props`` as a dict and the graph's output names, in graph order.

    Raises:
        OnnxFormatError: the file is not a well-formed protobuf.
    """
    props: dict[str, str] = {}
    outputs: list[str] = []
    with open(path, "rb") as f:
        end = f.seek(0, io.SEEK_END)
        f.seek(0)
        for number, wire, start, length in _fields(f, end):
            if number == _MODEL_METADATA and wire == _LEN:
                entry = _strings(_message(f, start, length))
                props[entry.get(_KEY, "")] = entry.get(_VALUE, "")
            elif number == _MODEL_GRAPH and wire == _LEN:
                for g_number, g_wire, g_start, g_length in _fields(f, start + length):
                    if g_number == _GRAPH_OUTPUT and g_wire == _LEN:
                        outputs.append(_strings(_message(f, g_start, g_length)).get(_NAME, ""))
                f.seek(start + length)
    return props, outputs


def _fields(f: BinaryIO, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(number, wire_type, payload_start, payload_length)`` of each field up to ``end``.

    The caller may read the payload; the next field is found by seeking past it regardless.
    """
    pos = f.tell()
    while pos < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxFormatError(f"field number 0 at byte {pos}")
        if wire == 0:
            _varint(f)
            start, length = f.tell(), 0
        elif wire == _LEN:
            length = _varint(f)
            start = f.tell()
        elif wire in _FIXED:
            start, length = f.tell(), _FIXED[wire]
        else:
            raise OnnxFormatError(f"wire type {wire} at byte {pos}")
        if start + length > end:
            raise OnnxFormatError(f"field {number} at byte {pos} runs past its end ({start + length} > {end})")
        yield number, wire, start, length
        pos = f.seek(start + length)


def _varint(f: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise OnnxFormatError("truncated varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint longer than 10 bytes")


def _message(f: BinaryIO, start: int, length: int) -> bytes:
    f.seek(start)
    data = f.read(length)
    if len(data) != length:
        raise OnnxFormatError("truncated message")
    return data


def _strings(data: bytes) -> dict[int, str]:
    """The UTF-8 string fields of a small message, by field number (last one wins, as in protobuf)."""
    out: dict[int, str] = {}
    for number, wire, start, length in _fields(io.BytesIO(data), len(data)):
        if wire == _LEN:
            try:
                out[number] = data[start : start + length].decode("utf-8")
            except UnicodeDecodeError:
                raise OnnxFormatError(f"field {number} is not UTF-8 text") from None
    return out
