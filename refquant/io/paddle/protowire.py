"""A small, bounds-checked decoder of the protobuf wire format (no dependency on the ``protobuf`` package).

A protobuf message is a sequence of *fields*; each starts with a varint key ``field_number << 3 | wire_type``:

=========  ==================  ============================================================
wire type  name                payload
=========  ==================  ============================================================
0          varint              7 bits per byte, low groups first, high bit = "more bytes"
1          fixed64             8 bytes little-endian (double, fixed64, sfixed64)
2          length-delimited    a varint length, then that many bytes (string, bytes, a nested
                               message, or a *packed* run of repeated numbers)
5          fixed32             4 bytes little-endian (float, fixed32, sfixed32)
=========  ==================  ============================================================

Negative ``int32`` / ``int64`` values are sent as 10-byte varints (two's complement of 64 bits); a repeated
number may come one field per element or packed into one length-delimited field, and a decoder must accept both.

:func:`decode` reads a message by a *schema*: ``{field_number: (name, kind, repeated)}`` where ``kind`` is one of
:data:`KINDS` or a nested schema (a dict) for a sub-message. Unknown fields are skipped (their wire type still
checked). The result is a dict ``name -> value`` (lists for repeated fields, the last value wins for singular
ones, as protobuf's own merge rule says). Every read is checked against the buffer's end, nesting depth, string
sizes and the total number of decoded values, so a hostile file costs at most its own size in memory and time;
every problem is a :class:`refquant.ModelFormatError` naming ``where``.
"""
from __future__ import annotations

import struct

from ...errors import ModelFormatError

#: Scalar kinds a schema may name.
KINDS = ("int32", "int64", "uint32", "uint64", "bool", "enum", "float", "double", "string", "bytes")
MAX_DEPTH = 32                    # nesting of messages (Paddle's ProgramDesc needs 6)
MAX_VALUES = 5_000_000            # decoded values of one decode() call, all messages together
_WIRE_OF = {"int32": 0, "int64": 0, "uint32": 0, "uint64": 0, "bool": 0, "enum": 0, "float": 5, "double": 1,
            "string": 2, "bytes": 2}
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


class _Budget:
    __slots__ = ("left",)

    def __init__(self, n: int):
        self.left = n

    def take(self, n: int, where: str) -> None:
        self.left -= n
        if self.left < 0:
            raise ModelFormatError(f"{where}: more than {MAX_VALUES} values in one message (not a model file?)")


def read_varint(buf, pos: int, end: int, where: str) -> tuple[int, int]:
    """``(value, next position)`` of the unsigned varint at ``pos`` (at most 10 bytes, below ``end``)."""
    value = shift = 0
    for i in range(10):
        if pos >= end:
            raise ModelFormatError(f"{where}: truncated (a varint runs past the end of its message)")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if i == 9 and b > 1:
                raise ModelFormatError(f"{where}: malformed varint (more than 64 bits)")
            return value, pos
        shift += 7
    raise ModelFormatError(f"{where}: malformed varint (longer than 10 bytes)")


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _scalar_from_varint(v: int, kind: str, where: str, name: str):
    if kind in ("int64", "enum"):
        return _signed(v, 64)
    if kind == "int32":
        return _signed(v, 32)
    if kind == "uint32":
        return v & 0xFFFFFFFF
    if kind == "uint64":
        return v
    if kind == "bool":
        return v != 0
    raise ModelFormatError(f"{where}: field {name!r} has the wrong wire type (a varint where {kind} belongs)")


def decode(data, schema: dict, where: str = "<protobuf>", *, max_depth: int = MAX_DEPTH) -> dict:
    """Decode one message of ``schema`` from ``data`` (bytes-like); see the module docstring."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    return _decode(buf, 0, len(buf), schema, where, 0, max_depth, _Budget(MAX_VALUES))


def _decode(buf, pos: int, end: int, schema: dict, where: str, depth: int, max_depth: int, budget: _Budget) -> dict:
    if depth > max_depth:
        raise ModelFormatError(f"{where}: messages nested deeper than {max_depth} levels")
    out: dict = {}
    for name, kind, repeated in schema.values():
        if repeated:
            out[name] = []
    while pos < end:
        key, pos = read_varint(buf, pos, end, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ModelFormatError(f"{where}: malformed message (field number 0)")
        budget.take(1, where)
        spec = schema.get(number)
        if wire == 0:
            v, pos = read_varint(buf, pos, end, where)
            payload = ("varint", v)
        elif wire == 1:
            if pos + 8 > end:
                raise ModelFormatError(f"{where}: truncated (a fixed64 runs past the end of its message)")
            payload = ("fixed64", pos)
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise ModelFormatError(f"{where}: truncated (a fixed32 runs past the end of its message)")
            payload = ("fixed32", pos)
            pos += 4
        elif wire == 2:
            n, pos = read_varint(buf, pos, end, where)
            if n > end - pos:
                raise ModelFormatError(f"{where}: truncated (a field of {n} bytes runs past the end of its "
                                       f"message, {end - pos} bytes left)")
            payload = ("len", pos, pos + n)
            pos += n
        else:
            raise ModelFormatError(f"{where}: malformed message (wire type {wire} of field {number}; groups and "
                                   f"unknown wire types are not protobuf 3 / Paddle data)")
        if spec is None:
            continue
        name, kind, repeated = spec
        values = _values(buf, payload, name, kind, repeated, where, depth, max_depth, budget)
        if repeated:
            out[name].extend(values)
        elif values:
            out[name] = values[-1]
    return out


def _values(buf, payload, name, kind, repeated, where, depth, max_depth, budget) -> list:
    tag = payload[0]
    if isinstance(kind, dict):
        if tag != "len":
            raise ModelFormatError(f"{where}: field {name!r} has the wrong wire type (a message is length-delimited)")
        return [_decode(buf, payload[1], payload[2], kind, where, depth + 1, max_depth, budget)]
    want = _WIRE_OF[kind]
    if tag == "len" and want != 2:
        if not repeated:
            raise ModelFormatError(f"{where}: field {name!r} has the wrong wire type (a packed run where one "
                                   f"{kind} belongs)")
        return _packed(buf, payload[1], payload[2], name, kind, where, budget)
    if tag == "len":
        raw = bytes(buf[payload[1]:payload[2]])
        if kind == "bytes":
            return [raw]
        try:
            return [raw.decode("utf-8")]
        except UnicodeDecodeError:
            raise ModelFormatError(f"{where}: string field {name!r} is not UTF-8") from None
    if tag == "varint":
        return [_scalar_from_varint(payload[1], kind, where, name)]
    if tag == "fixed32" and kind == "float":
        return [_F32.unpack_from(buf, payload[1])[0]]
    if tag == "fixed64" and kind == "double":
        return [_F64.unpack_from(buf, payload[1])[0]]
    raise ModelFormatError(f"{where}: field {name!r} has the wrong wire type ({tag} where {kind} belongs)")


def _packed(buf, pos, end, name, kind, where, budget) -> list:
    if kind == "float" or kind == "double":
        size = 4 if kind == "float" else 8
        if (end - pos) % size:
            raise ModelFormatError(f"{where}: packed field {name!r} is not a whole number of {kind}s")
        budget.take((end - pos) // size, where)
        fmt = f"<{(end - pos) // size}{'f' if size == 4 else 'd'}"
        return list(struct.unpack_from(fmt, buf, pos))
    out = []
    while pos < end:
        budget.take(1, where)
        v, pos = read_varint(buf, pos, end, where)
        out.append(_scalar_from_varint(v, kind, where, name))
    return out
