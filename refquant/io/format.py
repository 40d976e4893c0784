"""The refquant model file: one file, versioned, graph as JSON and tensors as raw little-endian arrays.

Layout (all integers little-endian)::

    magic      8 bytes   b"RQMODEL\\0"
    version    u32       FORMAT_VERSION
    header_len u64       length of the JSON header in bytes
    header     JSON      {"graph": {...}, "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}], ...}
    (zero padding to a 64-byte boundary)
    data       bytes     the tensors, each at header offset (relative to the data start), 64-byte aligned
    crc32      u32       zlib.crc32 of every byte before it

Nothing in the file is ever executed: no pickle (arrays are rebuilt with ``np.frombuffer`` from a whitelist of
plain numeric dtypes), every length and offset is checked against the file size before use, and the checksum
catches truncation and bit rot. The graph is then a :class:`~refquant.graph.Model`, whose validation checks every
op's input count and attributes (window geometry bounds, required attributes: ``refquant.ops.registry.check_op``)
and the graph inputs' dtypes and shapes, so a crafted file is rejected here, not when it runs. Files are written
atomically: a temporary file in the target directory, fsync, then ``os.replace``; an interrupted save leaves the old
file intact.
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import GraphError, ModelFormatError, RefquantError
from .._files import write_atomic
from ..graph import Model, Op, TensorSpec
from ..reference import qgemm as _qgemm

MAGIC = b"RQMODEL\0"
FORMAT_VERSION = 1
ALIGN = 64
MAX_HEADER_BYTES = 256 << 20
_PREFIX = struct.Struct("<8sIQ")
_DTYPES = {np.dtype(t).str: np.dtype(t) for t in
           ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "float16", "float32", "float64")}


def _le(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"attribute value of type {type(value).__name__} cannot be saved")


def _pad(n: int) -> int:
    return (-n) % ALIGN


def to_bytes(model: Model) -> bytes:
    """Serialise ``model`` (see the module docstring for the layout)."""
    tensors, chunks, offset = [], [], 0
    for name, value in model.params.items():
        arr = np.asarray(value, order="C")  # keeps 0-d arrays 0-d
        arr = arr.astype(_le(arr.dtype), copy=False)
        if arr.dtype.str not in _DTYPES:
            raise TypeError(f"parameter {name!r} has unsupported dtype {arr.dtype}")
        raw = arr.tobytes()
        tensors.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                        "offset": offset, "nbytes": len(raw)})
        chunks += [raw, b"\0" * _pad(len(raw))]
        offset += len(raw) + _pad(len(raw))
    graph = {"name": model.name, "meta": model.meta, "inputs": [s.to_json() for s in model.input_specs],
             "outputs": model.outputs, "ops": [op.to_json() for op in model.ops],
             "trainable": sorted(model.trainable)}
    header = json.dumps({"graph": graph, "tensors": tensors, "data_bytes": offset},
                        default=_json_default, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    body = head + b"\0" * _pad(len(head)) + b"".join(chunks)
    return body + struct.pack("<I", zlib.crc32(body))


def save(model: Model, path) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename). Returns the path."""
    return write_atomic(path, to_bytes(model))


def _fail(why: str):
    raise ModelFormatError(f"not a valid refquant model file: {why}")


def from_bytes(blob: bytes) -> Model:
    """Parse a model file's bytes; raises :class:`ModelFormatError` on anything malformed."""
    blob = memoryview(blob).cast("B")
    if len(blob) < _PREFIX.size + 4:
        _fail(f"only {len(blob)} bytes")
    magic, version, header_len = _PREFIX.unpack_from(blob, 0)
    if magic != MAGIC:
        _fail("wrong magic bytes (is this an ONNX or other file? use refquant.import_onnx for ONNX)")
    if version != FORMAT_VERSION:
        _fail(f"format version {version}; this refquant reads version {FORMAT_VERSION}")
    (crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != crc:
        _fail("checksum mismatch (the file is truncated or corrupted)")
    if header_len > min(MAX_HEADER_BYTES, len(blob)):
        _fail(f"header length {header_len} exceeds the file")
    start = _PREFIX.size
    try:
        header = json.loads(bytes(blob[start:start + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _fail(f"header is not JSON ({exc})")
    data_start = start + header_len + _pad(start + header_len)
    data = blob[data_start:len(blob) - 4]
    try:
        params = {}
        for t in header["tensors"]:
            dtype = _DTYPES.get(t["dtype"])
            if dtype is None:
                _fail(f"tensor {t['name']!r} has dtype {t['dtype']!r}, not a plain numeric dtype")
            shape = tuple(int(d) for d in t["shape"])
            offset, nbytes = int(t["offset"]), int(t["nbytes"])
            count = math.prod(shape)  # Python ints: no overflow
            if any(d < 0 for d in shape) or count * dtype.itemsize != nbytes:
                _fail(f"tensor {t['name']!r}: shape {shape} does not match {nbytes} bytes")
            if offset < 0 or offset + nbytes > len(data):
                _fail(f"tensor {t['name']!r} lies outside the file")
            params[str(t["name"])] = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        for value in params.values():
            if value.dtype == np.int8 and value.ndim == 1 and bytes(value[:8].view(np.uint8)) == _qgemm.MAGIC:
                _qgemm.refresh_flags(value)  # never trust a file's claim that vpmaddubsw is safe on its weights
        g = header["graph"]
        model = Model([Op.from_json(o) for o in g["ops"]], params, [TensorSpec.from_json(s) for s in g["inputs"]],
                      [str(o) for o in g["outputs"]], name=str(g.get("name", "model")), meta=g.get("meta", {}),
                      trainable=g.get("trainable"))
    except ModelFormatError:
        raise
    except (GraphError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    from ..executor import freeze_inference_params
    from ..ops import get_op
    for op in model.ops:
        get_op(op.type, op.name)  # an unknown op type fails here, at load, not halfway through a run
    return freeze_inference_params(model)  # the INT8 and fused convs then plan their calls once


def load(path) -> Model:
    """Read a model written by :func:`save`."""
    path = Path(path)
    mode = os.stat(path).st_mode  # checked before opening: reading a FIFO blocks until a writer comes
    if stat.S_ISDIR(mode):
        _fail(f"{path} is a directory")
    if not stat.S_ISREG(mode):
        _fail(f"{path} is not a regular file (a FIFO, socket or device)")
    return from_bytes(path.read_bytes())


__all__ = ["save", "load", "to_bytes", "from_bytes", "FORMAT_VERSION", "RefquantError"]
