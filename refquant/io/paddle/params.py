"""The parameter file (``model.pdiparams``): every persistable tensor, sorted by name, each as Paddle's
``SerializeToStream`` writes a dense tensor (header, ``TensorDesc`` protobuf, raw little-endian data)."""
from __future__ import annotations

import math
import os
import struct

import numpy as np

from ...errors import ModelFormatError
from . import protowire
from .pdmodel import TENSOR_DESC
from .program import DTYPES, MAX_DESC_BYTES, MAX_LOD_LEVELS, MAX_RANK, _regular_file


def read_pdiparams(path: str, names: list, variables: dict) -> dict:
    """``{name: ndarray}`` of the tensors ``names`` (already in the file's order) from the combined parameter file
    at ``path``; every header and size is checked against the file and the declared dims. The dtype is the file's:
    Paddle's quantization passes store int8 weights without updating the program's declaration (float32)."""
    _regular_file(path, "parameter file")
    out: dict = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0

        def take(n: int, what: str, name: str) -> bytes:
            nonlocal pos
            if n < 0 or n > size - pos:
                raise ModelFormatError(f"{path}: tensor {name!r}: {what} needs {n} bytes, {size - pos} are left "
                                       f"(truncated file, or the parameters do not belong to this program)")
            b = f.read(n)
            if len(b) != n:
                raise ModelFormatError(f"{path}: tensor {name!r}: the file ended while reading {what}")
            pos += n
            return b

        for name in names:
            version, = struct.unpack("<I", take(4, "the version", name))
            if version != 0:
                raise ModelFormatError(f"{path}: tensor {name!r}: unknown tensor version {version}")
            levels, = struct.unpack("<Q", take(8, "the LoD level count", name))
            if levels > MAX_LOD_LEVELS:
                raise ModelFormatError(f"{path}: tensor {name!r}: {levels} LoD levels")
            for _ in range(levels):
                nbytes, = struct.unpack("<Q", take(8, "a LoD level size", name))
                if nbytes % 8:
                    raise ModelFormatError(f"{path}: tensor {name!r}: a LoD level of {nbytes} bytes")
                take(nbytes, "a LoD level", name)
            version, = struct.unpack("<I", take(4, "the tensor version", name))
            if version != 0:
                raise ModelFormatError(f"{path}: tensor {name!r}: unknown tensor desc version {version}")
            desc_size, = struct.unpack("<i", take(4, "the desc size", name))
            if not 0 <= desc_size <= MAX_DESC_BYTES:
                raise ModelFormatError(f"{path}: tensor {name!r}: a TensorDesc of {desc_size} bytes")
            desc = protowire.decode(take(desc_size, "the TensorDesc", name), TENSOR_DESC, f"{path}: tensor {name!r}")
            code = desc.get("data_type")
            dtype = DTYPES.get(code)
            if dtype is None:
                raise ModelFormatError(f"{path}: tensor {name!r}: unsupported data type {code}")
            dims = list(desc.get("dims", []))
            if len(dims) > MAX_RANK or any(d < 0 for d in dims):
                raise ModelFormatError(f"{path}: tensor {name!r}: invalid dims {dims[:8]}")
            itemsize = np.dtype(dtype).itemsize
            count = math.prod(dims)
            if count * itemsize > size - pos:
                raise ModelFormatError(f"{path}: tensor {name!r}: {dims} {dtype} needs {count * itemsize} bytes, "
                                       f"{size - pos} are left (truncated file?)")
            var = variables.get(name)
            if var is not None and var.dims is not None and var.dims and (
                    len(var.dims) != len(dims) or any(a not in (-1, b) for a, b in zip(var.dims, dims))):
                if not (math.prod(d for d in var.dims) == count and -1 not in var.dims):
                    raise ModelFormatError(f"{path}: tensor {name!r} has the dims {dims}, the program declares "
                                           f"{list(var.dims)}")
            raw = bytearray(take(count * itemsize, "the data", name))
            out[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=count).reshape(dims)
        if pos != size:
            raise ModelFormatError(f"{path}: {size - pos} bytes after the last tensor ({names[-1] if names else '-'}"
                                   f"); the file holds more tensors than the program declares")
    return out
