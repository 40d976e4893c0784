"""Reading an ONNX file safely: the protobuf, string fields checked for UTF-8, external data resolved only inside
the model's directory (no absolute paths, ``..`` or symbolic links out of it, no overlapping byte ranges), and
tensor values normalized to the dtypes refquant runs. Every problem is a :class:`refquant.ModelFormatError`
naming the file."""
from __future__ import annotations

import os
import stat

import numpy as np

from ...errors import ModelFormatError, UnsupportedOpError


def require_onnx(what: str = "refquant.import_onnx"):
    """The ``onnx`` module, or an ImportError saying how to install the optional extra."""
    try:
        import onnx  # noqa: F401
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs the optional 'onnx' package: pip install 'refquant[onnx]' "
                          f"(or pip install onnx)") from exc
    return onnx


def _load(source, onnx):
    """``(proto, where)``: the parsed model (external data loaded) and a name for messages."""
    if isinstance(source, onnx.ModelProto):
        proto, where, base_dir = source, "<ModelProto>", None
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, where, base_dir = bytes(source), "<bytes>", None
        elif isinstance(source, (str, os.PathLike)):
            where = os.fspath(source)
            if isinstance(where, bytes):
                where = os.fsdecode(where)
            if not os.path.isfile(where):
                raise FileNotFoundError(f"import_onnx: {where} is not a file")
            with open(where, "rb") as f:
                data = f.read()
            base_dir = os.path.dirname(os.path.abspath(where))
        else:
            raise TypeError(f"import_onnx takes a path, bytes or an onnx.ModelProto, got {type(source).__name__}")
        from google.protobuf.message import DecodeError
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ModelFormatError(f"{where}: not a valid ONNX model (protobuf parse failed: {exc}); "
                                   f"the file is truncated or not an ONNX file") from None
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelFormatError(f"{where}: not a valid ONNX model: it has no graph (truncated or not an ONNX file?)")
    if len(proto.graph.output) == 0:
        raise ModelFormatError(f"{where}: not a valid ONNX model: the graph has no outputs (truncated file?)")
    for text in _texts(proto):
        if not isinstance(text, str):   # protobuf hands back bytes for a string field that is not UTF-8
            raise ModelFormatError(f"{where}: not a valid ONNX model: the name or string {text[:60]!r} is not "
                                   f"UTF-8")
    external = [t for t in _all_tensors(proto.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        if base_dir is None:
            raise ModelFormatError(
                f"{where}: tensor {external[0].name!r} keeps its data in an external file; external data is only "
                f"read when the model is given as a path (it is resolved inside the model's directory)")
        _load_external(external, base_dir, where)
    return proto, where


def _texts(proto):
    """The string fields the importer reads (names, op types, domains, external-data entries)."""
    yield proto.producer_name
    for imp in proto.opset_import:
        yield imp.domain
    g = proto.graph
    yield g.name
    for vi in list(g.input) + list(g.output):
        yield vi.name
    for node in g.node:
        yield from (node.name, node.op_type, node.domain)
        yield from node.input
        yield from node.output
        yield from (a.name for a in node.attribute)
    for t in _all_tensors(g):
        yield t.name
        for kv in t.external_data:
            yield from (kv.key, kv.value)


def _all_tensors(graph):
    """Every TensorProto of ``graph``: initializers, sparse initializers and node attributes, subgraphs included."""
    for t in graph.initializer:
        yield t
    for s in graph.sparse_initializer:
        yield s.values
        yield s.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            for s in a.sparse_tensors:
                yield s.values
                yield s.indices
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _load_external(tensors, base_dir: str, where: str) -> None:
    """Read each external tensor's bytes into ``raw_data``.

    ``location`` must be a relative path that stays inside ``base_dir`` after resolving ``..`` and symbolic
    links, and name a regular file; ``offset`` / ``length`` must lie inside it. Two tensors may not share
    bytes, so the data read never exceeds the size of the files next to the model."""
    root = os.path.realpath(base_dir)
    spans: dict[str, list] = {}
    for t in tensors:
        info = {}
        for kv in t.external_data:
            info[kv.key] = kv.value
        loc = info.get("location", "")
        what = f"{where}: tensor {t.name!r}: external data location {loc!r}"
        if not loc or "\x00" in loc:
            raise ModelFormatError(f"{where}: tensor {t.name!r} is external but has no valid location")
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or os.path.splitdrive(loc)[0]:
            raise ModelFormatError(f"{what} is an absolute path; it must be relative to the model's directory")
        parts = loc.replace("\\", "/").split("/")
        if ".." in parts:
            raise ModelFormatError(f"{what} contains '..'; it must stay inside the model's directory")
        path = os.path.realpath(os.path.join(root, loc))
        if os.path.commonpath([root, path]) != root or path == root:
            raise ModelFormatError(f"{what} resolves outside the model's directory (symbolic link?)")
        offset = _external_int(info, "offset", 0, what)
        length = _external_int(info, "length", None, what)
        try:   # no symlink swapped in after the check, and a FIFO must not block the open
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise ModelFormatError(f"{what}: cannot read it ({exc.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ModelFormatError(f"{what} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            if length is None:
                length = max(st.st_size - offset, 0)
            if offset + length > st.st_size:
                raise ModelFormatError(f"{what}: bytes [{offset}, {offset + length}) lie outside the file "
                                       f"({st.st_size} bytes)")
            for b, e, other in spans.get(path, ()):
                if offset < e and b < offset + length:
                    raise ModelFormatError(f"{what}: bytes [{offset}, {offset + length}) overlap those of tensor "
                                           f"{other!r}")
            spans.setdefault(path, []).append((offset, offset + length, t.name))
            f.seek(offset)
            raw = f.read(length)
        if len(raw) != length:
            raise ModelFormatError(f"{what}: the file is shorter than its metadata says (truncated?)")
        t.raw_data = raw
        t.data_location = t.DEFAULT
        del t.external_data[:]


def _external_int(info: dict, key: str, default, what: str):
    v = info.get(key)
    if v is None or v == "":
        return default
    if not v.isascii() or not v.isdigit() or len(v) > 19:
        raise ModelFormatError(f"{what}: {key} {v!r} is not a non-negative integer")
    return int(v)


# dtypes the executor and constant folding handle; ONNX's others are converted (see _normalize_const)
_RUNTIME_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
                   "float32", "float64")


def _normalize_const(arr: np.ndarray, what: str) -> np.ndarray:
    """float32 for every float type (float16, float64, bfloat16, float8), int8 / uint8 for int4 / uint4;
    strings and complex numbers are refused."""
    arr = np.asarray(arr)
    name = arr.dtype.name
    if arr.dtype.kind == "V" and (name.startswith("float") or name == "bfloat16"):
        arr = arr.astype(np.float32)
    elif arr.dtype.kind == "V" and name in ("int4", "uint4", "int2", "uint2"):
        arr = arr.astype(np.int8 if name.startswith("int") else np.uint8)
    elif arr.dtype.kind not in "biuf" or name not in _RUNTIME_DTYPES:
        raise UnsupportedOpError(f"{what} has dtype {name}, which refquant does not run")
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr).reshape(arr.shape)   # ascontiguousarray alone makes a scalar 1-D
