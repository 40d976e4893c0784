"""Import an ONNX model into a refquant :class:`~refquant.graph.Model`.

``import_onnx(path | bytes | onnx.ModelProto) -> Model`` maps every ONNX node onto refquant ops (Paddle's op
names, see ``docs/ops.md``), keeping the ONNX tensor names, so a quantization pass sees ``conv2d``,
``depthwise_conv2d``, ``mul`` and ``matmul`` just as PaddleSlim would. The mapping table, constant folding
and dynamic shapes are described in ``docs/onnx_import.md``.

How it works:

* Initializers and ``Constant`` nodes become parameters (float tensors as float32, integer ones keep their
  dtype, so int64 shape constants stay int64).
* Each node is converted by one small function (``_CONVERTERS``) that emits refquant ops. When every input
  of a node is a constant, the ops it emits are *evaluated right away with refquant's own kernels* and the
  outputs become parameters instead (constant folding); shape subgraphs that depend on the runtime input
  shape (``Shape -> Slice -> Concat -> Reshape``) stay in the graph as small int64 ops.
* A light partial shape inference (rank always when it can, dimensions when known, and the values of small
  int vectors such as ``Shape`` outputs) runs alongside, because some mappings depend on the rank
  (``MatMul -> mul`` needs ``x_num_col_dims``, ``Softmax`` before opset 13 needs to know the last axis).
* Any op without a converter raises :class:`refquant.UnsupportedOpError` naming the op type and the node;
  nothing is skipped silently.

Hostile files: external data is read only for a path, only from inside the model's directory
(:func:`_load_external`); attributes are read with their ONNX types (:class:`_Attrs`); input counts, axes and
the shapes the importer can see are checked; constant folding refuses results above :data:`MAX_FOLD_BYTES`.
Every problem is a :class:`refquant.RefquantError` naming the file, node and op.
"""
from __future__ import annotations

import math
import os
import stat
from typing import Callable, Optional

import numpy as np

from ..errors import GraphError, ModelFormatError, RefquantError, ShapeError, UnsupportedOpError
from ..graph import Model, Op, TensorSpec
from ..executor import PartialShapes
from ..ops import OpContext, get_op
from ..ops.pool import pool_out_size

FLT_MAX = float(np.finfo(np.float32).max)
MAX_OPSET = 22                      # the newest default-domain opset whose changes to the mapped ops are handled
MAX_FOLD_BYTES = 256 * 2 ** 20      # the largest tensor constant folding may create
MAX_STATIC_ELEMENTS = 2 ** 32       # a tensor whose known dimensions already multiply beyond this is refused
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SHAPE_COST = ("converters that need its rank or size refuse the node or take the rank-free mapping (a MatMul "
               "then stays matmul, not mul)")
# Ops whose float parameter inputs are weights an optimizer trains (by refquant op type -> input positions).
_WEIGHT_INPUTS = {"conv2d": (1, 2), "depthwise_conv2d": (1, 2), "conv2d_transpose": (1, 2), "mul": (0, 1),
                  "matmul": (0, 1), "batch_norm": (1, 2)}


def _require_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("refquant.import_onnx needs the optional 'onnx' package: "
                          "pip install 'refquant[onnx]'") from exc
    return onnx


# ------------------------------------------------------------------------------------------------------
# reading the file: the protobuf, then external data resolved inside the model's directory only
# ------------------------------------------------------------------------------------------------------
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


def import_onnx(source, *, name: Optional[str] = None) -> Model:
    """Build a refquant :class:`Model` from an ONNX file path, its serialized bytes or an ``onnx.ModelProto``.

    Raises :class:`refquant.ModelFormatError` for bytes that are not a (complete, well-formed) ONNX model or
    external data that is refused (see ``docs/onnx_import.md``), :class:`refquant.UnsupportedOpError` naming the
    op type and node for an op or attribute refquant cannot map or an opset above :data:`MAX_OPSET`,
    :class:`refquant.ShapeError` / :class:`refquant.GraphError` for inconsistent shapes or graph structure
    (messages name the source, node and op), ``FileNotFoundError`` for a missing path and ``ImportError`` if the
    optional ``onnx`` package is missing. The caller's ``ModelProto`` is never modified.
    """
    onnx = _require_onnx()
    proto, where = _load(source, onnx)
    return _Importer(proto, onnx, where).build(name)


class _Importer:
    def __init__(self, proto, onnx, where: str):
        self.proto = proto
        self.onnx = onnx
        self.where = where
        self.graph = proto.graph
        opsets = [imp.version for imp in proto.opset_import if imp.domain in _DEFAULT_DOMAINS]
        if len(opsets) > 1:
            raise ModelFormatError(f"{where}: the default ONNX domain is imported {len(opsets)} times {opsets}")
        self.opset = int(opsets[0]) if opsets else 1
        if self.opset < 1:
            raise ModelFormatError(f"{where}: invalid opset version {self.opset} for the default ONNX domain")
        if self.opset > MAX_OPSET:
            raise UnsupportedOpError(f"{where}: opset {self.opset} of the default ONNX domain is newer than the "
                                     f"highest this importer knows ({MAX_OPSET}); re-export with opset "
                                     f"<= {MAX_OPSET}")
        self.consts: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.alias: dict[str, str] = {}
        # partial shapes of the emitted ops' outputs, from the ops' own shape rules (refquant.executor)
        self.inference = PartialShapes(self.consts, cost=_SHAPE_COST)
        self.shapes: dict[str, Optional[tuple]] = self.inference.shapes
        self.names: set[str] = set()               # every tensor name in use
        self.defined: set[str] = set()             # tensor names an initializer, input or node defines
        self.op_names: set[str] = set()
        self.folding = False
        self._pending: list[Op] = []
        self.use_count: dict[str, int] = {}
        for node in self.graph.node:
            for n in node.input:
                if n:
                    self.use_count[n] = self.use_count.get(n, 0) + 1
            self.names.update(n for n in node.output if n)
            self.names.update(n for n in node.input if n)
        self.graph_outputs = [o.name for o in self.graph.output]
        for o in self.graph_outputs:
            if not o:
                raise ModelFormatError(f"{where}: a graph output has an empty name")
            self.use_count[o] = self.use_count.get(o, 0) + 1

    # ---- tensors ------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.consts

    def const(self, name: str) -> np.ndarray:
        return self.consts[name]

    def add_const(self, name: str, value) -> str:
        value = np.asarray(value)
        self.consts[name] = value
        self.shapes[name] = tuple(value.shape)
        self.names.add(name)
        return name

    def shape_of(self, name: str) -> Optional[tuple]:
        if self.is_const(name):
            return tuple(self.consts[name].shape)
        return self.shapes.get(name)

    def rank(self, name: str) -> Optional[int]:
        s = self.shape_of(name)
        return None if s is None else len(s)

    def to_array(self, tensor, what: str) -> np.ndarray:
        """A TensorProto's value (external data was loaded or refused by :func:`_load`)."""
        from onnx import helper, numpy_helper
        if tensor.data_location == self.onnx.TensorProto.EXTERNAL:
            raise ModelFormatError(f"{what}: tensor {tensor.name!r} keeps its data in an external file, which is "
                                   f"not allowed here")
        try:
            helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except (KeyError, ValueError, TypeError):
            raise ModelFormatError(f"{what}: tensor {tensor.name!r} has an unknown data type "
                                   f"{tensor.data_type}") from None
        if any(d < 0 for d in tensor.dims):
            raise ModelFormatError(f"{what}: tensor {tensor.name!r} has negative dimensions {list(tensor.dims)}")
        try:
            arr = numpy_helper.to_array(tensor)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise ModelFormatError(f"{what}: tensor {tensor.name!r} cannot be decoded ({exc}); truncated or "
                                   f"corrupt model") from None
        return _normalize_const(arr, f"{what}: tensor {tensor.name!r}")

    # ---- emitting ops ------------------------------------------------------------------------------
    def emit(self, op_type: str, inputs: list, outputs: list, attrs: Optional[dict] = None, name: str = "") -> Op:
        name = name or op_type
        if name in self.op_names:
            k = 2
            while f"{name}_{k}" in self.op_names:
                k += 1
            name = f"{name}_{k}"
        self.op_names.add(name)
        op = Op(op_type, list(inputs), list(outputs), dict(attrs or {}), name)
        if self.folding:
            self._pending.append(op)
        else:
            self.ops.append(op)
            self._infer(op)
        return op

    def _fold(self, pending: list[Op], where: str) -> None:
        """Evaluate the ops a constant node maps to, refusing results above :data:`MAX_FOLD_BYTES`."""
        env = self.consts
        for op in pending:
            opdef = get_op(op.type, op.name)
            args = [env[n] if n else None for n in op.inputs]
            try:
                nbytes = _folded_bytes(op, opdef, args)
                if nbytes > MAX_FOLD_BYTES:
                    raise ShapeError(f"{where}: constant folding of {op.name!r} ({op.type}) would create a "
                                     f"{nbytes}-byte tensor, above the {MAX_FOLD_BYTES}-byte limit")
                result = opdef.forward(OpContext(False, None), op.attrs, *args)
            except RefquantError:
                raise
            except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError, OverflowError) as exc:
                raise ShapeError(f"{where}: constant folding of {op.name!r} ({op.type}) with input shapes "
                                 f"{[None if a is None else a.shape for a in args]} failed: {exc}") from exc
            result = result if isinstance(result, tuple) else (result,)
            for out, value in zip(op.outputs, result):
                if out:
                    self.add_const(out, _normalize_const(np.asarray(value), f"{where}: {out!r}"))

    # ---- conversion ------------------------------------------------------------------------------------
    def build(self, name: Optional[str]) -> Model:
        init_names = set()
        for t in self.graph.initializer:
            if not t.name:
                raise ModelFormatError(f"{self.where}: an initializer has an empty name")
            if t.name in init_names:
                raise GraphError(f"{self.where}: initializer {t.name!r} is defined twice")
            self.add_const(t.name, self.to_array(t, f"{self.where}: initializer"))
            init_names.add(t.name)
        self.defined.update(init_names)
        specs = []
        for vi in self.graph.input:
            if vi.name in init_names:
                continue
            if vi.name in self.defined:
                raise GraphError(f"{self.where}: graph input {vi.name!r} is declared twice")
            specs.append(self._spec(vi))
            self.inference.set_input(vi.name, specs[-1].shape, specs[-1].dtype)
            self.defined.add(vi.name)
        used_node_names = {}
        for idx, node in enumerate(self.graph.node):
            base = node.name or f"{node.op_type}_{idx}"
            used_node_names[base] = used_node_names.get(base, 0) + 1
            node_name = base if used_node_names[base] == 1 else f"{base}_{used_node_names[base]}"
            self._convert(node, node_name)
        outputs = self._finish_outputs(specs)
        live = {n for op in self.ops for n in list(op.inputs) + list(op.outputs) if n}
        live.update(outputs)
        params = {k: v for k, v in self.consts.items() if k in live}
        trainable = self._trainable(params)
        meta = {"source": "onnx", "opset": self.opset, "producer": self.proto.producer_name,
                "ir_version": int(self.proto.ir_version)}
        # Model() validates the graph (names, cycles, op attributes); nothing here may hide its errors.
        return Model(self.ops, params, specs, outputs, name=name or self.graph.name or "onnx_model", meta=meta,
                     trainable=trainable)

    def _spec(self, vi) -> TensorSpec:
        from onnx import helper
        where = f"{self.where}: graph input {vi.name!r}"
        if not vi.name:
            raise ModelFormatError(f"{self.where}: a graph input has an empty name")
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOpError(f"{where} is not a tensor")
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise ModelFormatError(f"{where} has no shape (its rank is needed)")
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tt.shape.dim)
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, ValueError, TypeError):
            raise ModelFormatError(f"{where} has an unknown element type {tt.elem_type}") from None
        if dtype.kind not in "biuf" or dtype.name not in _RUNTIME_DTYPES:
            raise UnsupportedOpError(f"{where} has element type {dtype.name}, which refquant does not run")
        return TensorSpec(vi.name, shape, dtype.name)

    def _convert(self, node, node_name: str) -> None:
        where = f"{self.where}: node {node_name!r} ({node.op_type})"
        if node.domain not in _DEFAULT_DOMAINS:
            raise UnsupportedOpError(f"{self.where}: unsupported ONNX op {node.domain}::{node.op_type} "
                                     f"(node {node_name!r})")
        conv = _CONVERTERS.get(node.op_type)
        if conv is None:
            raise UnsupportedOpError(f"{self.where}: unsupported ONNX op type {node.op_type!r} (node {node_name!r})")
        attrs = _Attrs(where, node.attribute)
        inputs = [self.resolve(n) if n else "" for n in node.input]
        outputs = list(node.output)
        lo, hi, max_out = _arity(node.op_type, self.opset)
        if not lo <= len(inputs) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 2 ** 31 else f"at least {lo}"
            raise ModelFormatError(f"{where} has {len(inputs)} inputs; it takes {want}")
        for i in range(lo):
            if not inputs[i]:
                raise ModelFormatError(f"{where}: required input {i} is empty")
        if not outputs or not outputs[0] and node.op_type != "Split" or len(outputs) > max_out:
            raise ModelFormatError(f"{where} has outputs {outputs}; it needs 1 to {max_out} with the first named")
        for attr, since in _MOVED_ATTRS.get(node.op_type, ()):
            if self.opset >= since and attr in attrs:
                raise ModelFormatError(f"{where}: attribute {attr!r} became an input in opset {since}; the model "
                                       f"declares opset {self.opset}")
        for n in inputs:
            if n and n not in self.consts and n not in self.shapes:
                raise ModelFormatError(f"{where} reads {n!r}, which no initializer, input or earlier node "
                                       f"provides (truncated or corrupt model?)")
        for n in outputs:
            if n and n in self.defined:
                raise GraphError(f"{where} writes {n!r}, which an initializer, input or earlier node defines")
            self.defined.add(n)
        fold = node.op_type != "Constant" and all(not n or self.is_const(n) for n in inputs)
        self.folding = fold
        self._pending = []
        try:
            conv(self, _Node(node_name, node.op_type, inputs, outputs, attrs, where))
        except RefquantError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            # a safety net: every check above and in the converters should have named the problem already
            raise ModelFormatError(f"{where}: cannot convert ({exc!r})") from exc
        finally:
            self.folding = False
        if fold:
            self._fold(self._pending, where)
            self._pending = []

    def _finish_outputs(self, specs) -> list[str]:
        outputs = []
        inputs = {s.name for s in specs}
        producers = {o for op in self.ops for o in op.outputs}
        taken = set()
        for name in self.graph_outputs:
            src = self.resolve(name)
            if src == name and (name in producers or name in self.consts or name in inputs):
                outputs.append(name)
                taken.add(name)
                continue
            if src == name:
                raise ModelFormatError(f"graph output {name!r} is not produced by any node")
            if src in self.consts:
                self.add_const(name, self.consts[src])
            elif src in producers and src not in taken and src not in self.graph_outputs:
                # Identity feeding an output: give the producing tensor the output's name everywhere.
                for op in self.ops:
                    op.inputs = [name if n == src else n for n in op.inputs]
                    op.outputs = [name if n == src else n for n in op.outputs]
                producers.add(name)
                taken.add(src)
            else:
                self.emit("scale", [src], [name], {"scale": 1.0, "bias": 0.0}, name=f"{name}/identity")
            outputs.append(name)
            taken.add(name)
        return outputs

    def _trainable(self, params) -> set:
        producer_type = {o: op.type for op in self.ops for o in op.outputs}
        trainable = set()
        for op in self.ops:
            positions = _WEIGHT_INPUTS.get(op.type, ())
            if op.type == "elementwise_add":
                # the bias of a linear layer (MatMul + Add, Gemm): an add of a param to a conv/matmul output
                srcs = [producer_type.get(n) for n in op.inputs]
                if any(t in _WEIGHT_INPUTS and t != "batch_norm" for t in srcs):
                    positions = (0, 1)
            for i in positions:
                if i < len(op.inputs) and op.inputs[i] in params and params[op.inputs[i]].dtype.kind == "f":
                    trainable.add(op.inputs[i])
        return trainable

    # ---- partial shape inference ---------------------------------------------------------------------
    def _infer(self, op: Op) -> None:
        self.inference.add(op)
        for name in op.outputs:
            out = self.shapes.get(name) if name and name not in self.consts else None
            known = math.prod(d for d in out if d is not None) if out is not None else 0
            if known > MAX_STATIC_ELEMENTS:
                raise ShapeError(f"{self.where}: op {op.name!r} ({op.type}) would produce a tensor of shape "
                                 f"{tuple(out)} ({known} elements, above the limit of {MAX_STATIC_ELEMENTS})")


class _Node:
    __slots__ = ("name", "type", "inputs", "outputs", "attrs", "where")

    def __init__(self, name, op_type, inputs, outputs, attrs, where):
        self.name, self.type, self.inputs, self.outputs, self.attrs = name, op_type, inputs, outputs, attrs
        self.where = where

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""


_MISSING = object()


class _Attrs:
    """A node's attributes, read with the type ONNX defines for them (a FLOAT where INTS belong is an error,
    not a silent ``int()``)."""

    def __init__(self, where: str, protos):
        from onnx import AttributeProto
        self.where, self.A = where, AttributeProto
        self.p = {}
        for a in protos:
            if a.name in self.p:
                raise ModelFormatError(f"{where}: attribute {a.name!r} is given twice")
            self.p[a.name] = a

    def __contains__(self, name) -> bool:
        return name in self.p

    def names(self) -> list:
        return sorted(self.p)

    def _get(self, name, types, default):
        a = self.p.get(name)
        if a is None:
            if default is _MISSING:
                raise ModelFormatError(f"{self.where}: required attribute {name!r} is missing")
            return None
        if a.type not in types:
            want = " or ".join(self.A.AttributeType.Name(t) for t in types)
            got = self.A.AttributeType.Name(a.type) if a.type in self.A.AttributeType.values() else a.type
            raise ModelFormatError(f"{self.where}: attribute {name!r} must be {want}, got {got}")
        return a

    def int(self, name, default=_MISSING):
        a = self._get(name, (self.A.INT,), default)
        return default if a is None else int(a.i)

    def ints(self, name, default=_MISSING, length=None):
        a = self._get(name, (self.A.INTS,), default)
        if a is None:
            return default
        v = [int(x) for x in a.ints]
        if length is not None and len(v) != length:
            raise ModelFormatError(f"{self.where}: attribute {name!r} must have {length} values, got {v}")
        return v

    def float(self, name, default=_MISSING):
        a = self._get(name, (self.A.FLOAT, self.A.INT), default)
        if a is None:
            return default
        return float(a.f) if a.type == self.A.FLOAT else float(a.i)

    def floats(self, name, default=_MISSING):
        a = self._get(name, (self.A.FLOATS, self.A.INTS), default)
        if a is None:
            return default
        return [float(x) for x in (a.floats if a.type == self.A.FLOATS else a.ints)]

    def str(self, name, default=_MISSING):
        a = self._get(name, (self.A.STRING,), default)
        if a is None:
            return default
        try:
            return a.s.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError(f"{self.where}: attribute {name!r} is not UTF-8") from None

    def tensor(self, name, default=_MISSING):
        a = self._get(name, (self.A.TENSOR,), default)
        return default if a is None else a.t


# ONNX op type -> (required inputs, most inputs, most outputs); opset-dependent entries are set in _arity
_ANY = 2 ** 31
_ARITY = {
    "Constant": (0, 0, 1), "Identity": (1, 1, 1), "Dropout": (1, 3, 2),
    "Conv": (2, 3, 1), "ConvTranspose": (2, 3, 1), "BatchNormalization": (5, 5, 5),
    "HardSigmoid": (1, 1, 1), "HardSwish": (1, 1, 1), "Clip": (1, 3, 1),
    "Relu": (1, 1, 1), "Sigmoid": (1, 1, 1), "Tanh": (1, 1, 1), "Sqrt": (1, 1, 1), "Exp": (1, 1, 1),
    "Log": (1, 1, 1), "Add": (2, 2, 1), "Sub": (2, 2, 1), "Mul": (2, 2, 1), "Div": (2, 2, 1), "Pow": (2, 2, 1),
    "MatMul": (2, 2, 1), "Gemm": (2, 3, 1), "Softmax": (1, 1, 1), "LogSoftmax": (1, 1, 1),
    "ReduceMean": (1, 2, 1), "ReduceSum": (1, 2, 1), "GlobalAveragePool": (1, 1, 1), "GlobalMaxPool": (1, 1, 1),
    "MaxPool": (1, 1, 2), "AveragePool": (1, 1, 1), "Resize": (1, 4, 1), "Upsample": (1, 2, 1),
    "Concat": (1, _ANY, 1), "Reshape": (2, 2, 1), "Flatten": (1, 1, 1), "Transpose": (1, 1, 1),
    "Squeeze": (1, 2, 1), "Unsqueeze": (1, 2, 1), "Slice": (3, 5, 1), "Shape": (1, 1, 1), "Cast": (1, 1, 1),
    "Gather": (2, 2, 1), "Expand": (2, 2, 1), "Split": (1, 2, _ANY),
    "QuantizeLinear": (2, 3, 1), "DequantizeLinear": (2, 3, 1),
}


# attributes that later opsets turned into inputs: (name, first opset without the attribute)
_MOVED_ATTRS = {"Squeeze": (("axes", 13),), "Unsqueeze": (("axes", 13),), "ReduceSum": (("axes", 13),),
                "ReduceMean": (("axes", 18),), "Split": (("split", 13),), "Reshape": (("shape", 5),),
                "Slice": (("starts", 10), ("ends", 10), ("axes", 10), ("steps", 10)),
                "Clip": (("min", 11), ("max", 11)), "Upsample": (("scales", 9),)}


def _arity(op_type: str, opset: int) -> tuple:
    lo, hi, out = _ARITY[op_type]
    if op_type == "Reshape" and opset < 5:
        lo, hi = 1, 1
    elif op_type == "Slice" and opset < 10:
        lo, hi = 1, 1
    elif op_type == "Unsqueeze" and opset >= 13:
        lo = 2
    elif op_type == "Resize" and opset < 11:
        lo, hi = 2, 2
    return lo, hi, out


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


def _static_broadcast(a: tuple, b: tuple, what: str) -> tuple:
    """NumPy broadcasting of two concrete shapes with Python ints (no overflow, no allocation)."""
    rank = max(len(a), len(b))
    a, b = (1,) * (rank - len(a)) + tuple(a), (1,) * (rank - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x < 0 or y < 0 or (x != y and 1 not in (x, y)):
            raise ShapeError(f"{what}: shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def _folded_bytes(op: Op, opdef, args: list) -> int:
    """An upper bound of the bytes the largest output of ``op`` takes, from its inputs' shapes and values,
    computed without running it."""
    shapes = [None if a is None else tuple(a.shape) for a in args]
    itemsize = max([a.dtype.itemsize for a in args if a is not None] + [4])
    where = f"op {op.name!r} ({op.type})"
    out_shapes = None
    if op.type == "expand" and len(args) > 1:
        target = tuple(int(v) for v in np.ravel(args[1]))
        out_shapes = [_static_broadcast(shapes[0], target, where)]
    elif op.type == "gather":
        x, idx = shapes
        axis = int(op.attrs.get("axis", 0))
        if not x or not -len(x) <= axis < len(x):
            raise ShapeError(f"{where}: axis {axis} is out of range for input shape {x}")
        axis %= len(x)
        out_shapes = [x[:axis] + idx + x[axis + 1:]]
    elif op.type in ("nearest_interp", "bilinear_interp"):
        x = shapes[0]
        if len(x) != 4:
            raise ShapeError(f"{where}: the input must be NCHW, got shape {x}")
        if len(args) > 1 and args[1] is not None:
            hw = [int(v) for v in np.ravel(args[1])[-2:]]
        elif op.attrs.get("out_size") is not None:
            hw = [int(v) for v in op.attrs["out_size"]]
        else:
            hw = [math.floor(x[2 + i] * float(op.attrs["scale"][i])) for i in range(2)]
        out_shapes = [x[:2] + tuple(hw)]
    elif op.type == "cast":
        itemsize = max(itemsize, np.dtype(op.attrs["dtype"]).itemsize)
    elif opdef.shape is not None and op.type not in ("reshape", "slice"):
        try:
            out_shapes = list(opdef.shape(op.attrs, *shapes))
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError):
            out_shapes = None  # the forward names the problem
    if out_shapes is None:  # ops that never enlarge their input (reshape, slice, cast, unary, reductions)
        out_shapes = [s for s in shapes if s is not None]
    return max((math.prod(int(d) for d in s) * itemsize for s in out_shapes if s is not None), default=0)


# ------------------------------------------------------------------------------------------------------
# converters: one function per ONNX op type
# ------------------------------------------------------------------------------------------------------
_CONVERTERS: dict[str, Callable] = {}
_MAX_RANK = 64                      # NumPy's limit on the number of dimensions


def _converter(*op_types):
    def wrap(fn):
        for t in op_types:
            _CONVERTERS[t] = fn
        return fn
    return wrap


def _unsupported(node, why: str):
    return UnsupportedOpError(f"{node.where}: unsupported: {why}")


def _bad(node, why: str):
    return ModelFormatError(f"{node.where}: {why}")


def _shape_error(node, why: str):
    return ShapeError(f"{node.where}: {why}")


def _const_input(im: _Importer, node: _Node, i: int, what: str):
    """The value of optional input ``i`` (None when absent); it must be a constant."""
    name = node.input(i)
    if not name:
        return None
    if not im.is_const(name):
        raise _unsupported(node, f"{what} must be a constant, but {name!r} is computed at run time")
    return im.const(name)


def _int_values(node, v, what: str, ndim_max: int = 1) -> list[int]:
    """The values of an integer constant input (a scalar or a 1-D tensor) as Python ints."""
    v = np.asarray(v)
    if v.dtype.kind not in "iu" or v.ndim > ndim_max:
        raise _shape_error(node, f"{what} must be a {'1-D ' if ndim_max == 1 else ''}integer tensor, got "
                                 f"{v.dtype.name} of shape {v.shape}")
    return [int(x) for x in v.ravel()]


def _ints(v) -> list[int]:
    return [int(x) for x in np.ravel(v)]


def _axis(node, axis: int, rank: Optional[int], what: str = "axis", inclusive: bool = False) -> int:
    """``axis`` in [0, rank) ([0, rank] when ``inclusive``); unchanged when the rank is unknown."""
    if rank is None:
        if abs(axis) > _MAX_RANK:
            raise _shape_error(node, f"{what} {axis} is out of range")
        return axis
    hi = rank + 1 if inclusive else rank
    if not -hi <= axis < hi or (inclusive and axis == -hi and rank == 0):
        raise _shape_error(node, f"{what} {axis} is out of range for an input of rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes(node, axes: list, rank: Optional[int], what: str = "axes") -> list:
    out = [_axis(node, a, rank, what) for a in axes]
    if rank is not None and len(set(out)) != len(out):
        raise _shape_error(node, f"{what} {axes} repeat an axis")
    return out


def _check_shape(node, name: str, shape, want_rank: Optional[int] = None, what: str = "input"):
    if shape is not None and want_rank is not None and len(shape) != want_rank:
        raise _shape_error(node, f"{what} {name!r} must have rank {want_rank}, got shape {tuple(shape)}")


def _check_broadcast(node, a, b) -> None:
    if a is None or b is None:
        return
    for x, y in zip(reversed(a), reversed(b)):
        if x is not None and y is not None and x != y and 1 not in (x, y):
            raise _shape_error(node, f"input shapes {tuple(a)} and {tuple(b)} do not broadcast")


@_converter("Constant")
def _constant(im, node):
    a = node.attrs
    given = a.names()
    if len(given) != 1:
        raise _bad(node, f"a Constant needs exactly one value attribute, got {given}")
    key = given[0]
    if key == "value":
        value = im.to_array(a.tensor("value"), node.where)
    elif key == "value_float":
        value = np.array(a.float("value_float"), np.float32)
    elif key == "value_floats":
        value = np.array(a.floats("value_floats"), np.float32)
    elif key == "value_int":
        value = np.array(a.int("value_int"), np.int64)
    elif key == "value_ints":
        value = np.array(a.ints("value_ints"), np.int64)
    else:
        raise _unsupported(node, f"Constant with attribute {key!r}")
    im.add_const(node.outputs[0], value)


@_converter("Identity")
def _identity(im, node):
    im.alias[node.outputs[0]] = node.inputs[0]


@_converter("Dropout")
def _dropout(im, node):
    if len(node.outputs) > 1 and node.outputs[1] and im.use_count.get(node.outputs[1]):
        raise _unsupported(node, "the dropout mask output is used")
    im.alias[node.outputs[0]] = node.inputs[0]


def _auto_pads(im, node, x, kernel, strides, dilations, pads):
    """Explicit [top, left, bottom, right] paddings for ONNX auto_pad (SAME_* needs the input size when the
    stride is not 1)."""
    auto = node.attrs.str("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return list(pads) if pads else [0] * 4
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _unsupported(node, f"auto_pad {auto!r}")
    if min(strides) < 1 or min(dilations) < 1 or min(kernel) < 1:
        raise _shape_error(node, f"auto_pad {auto} needs positive kernel {kernel}, strides {strides} and "
                                 f"dilations {dilations}")
    shape = im.shape_of(x)
    lo, hi = [], []
    for axis in range(2):
        k, s, d = kernel[axis], strides[axis], dilations[axis]
        if s == 1:
            total = d * (k - 1)
        else:
            n = None if shape is None or len(shape) != 4 else shape[2 + axis]
            if n is None:
                raise _unsupported(node, "auto_pad SAME with a stride > 1 needs a static input size")
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        lo.append(small if auto == "SAME_UPPER" else big)
        hi.append(big if auto == "SAME_UPPER" else small)
    return [lo[0], lo[1], hi[0], hi[1]]


def _filter(im, node, transposed: bool):
    """(weight shape, kernel, strides, dilations, group) of Conv / ConvTranspose, checked against each other
    and against the input and bias shapes where they are known."""
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape = im.shape_of(w)
    if wshape is None or len(wshape) != 4:
        raise _unsupported(node, f"only 2-D convolutions are supported (filter shape {wshape})")
    a = node.attrs
    kernel = a.ints("kernel_shape", list(wshape[2:]), length=2)
    if kernel != list(wshape[2:]):
        raise _shape_error(node, f"kernel_shape {kernel} contradicts the filter shape {tuple(wshape)}")
    strides = a.ints("strides", [1, 1], length=2)
    dilations = a.ints("dilations", [1, 1], length=2)
    group = a.int("group", 1)
    cin = wshape[0] if transposed else (None if wshape[1] is None else wshape[1] * group)
    cout = None if wshape[1] is None else wshape[1] * group if transposed else wshape[0]
    if group < 1 or (wshape[0] is not None and wshape[0] % group):
        raise _shape_error(node, f"group {group} does not divide the filter's {wshape[0]} "
                                 f"{'input' if transposed else 'output'} channels")
    xs = im.shape_of(x)
    _check_shape(node, x, xs, 4)
    if xs is not None and None not in (xs[1], cin) and xs[1] != cin:
        raise _shape_error(node, f"input {x!r} has {xs[1]} channels, the filter {tuple(wshape)} with group {group} "
                                 f"takes {cin}")
    bs = im.shape_of(b) if b else None
    if bs is not None and cout is not None and tuple(bs) != (cout,):
        raise _shape_error(node, f"bias {b!r} has shape {tuple(bs)}, expected ({cout},)")
    return wshape, kernel, strides, dilations, group


@_converter("Conv")
def _conv(im, node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape, kernel, strides, dilations, group = _filter(im, node, transposed=False)
    pads = _auto_pads(im, node, x, kernel, strides, dilations, node.attrs.ints("pads", None, length=4))
    depthwise = group > 1 and wshape[1] == 1 and wshape[0] == group
    attrs = {"strides": strides, "paddings": pads, "dilations": dilations, "groups": group}
    inputs = [x, w] + ([b] if b else [])
    im.emit("depthwise_conv2d" if depthwise else "conv2d", inputs, [node.outputs[0]], attrs, node.name)


@_converter("ConvTranspose")
def _conv_transpose(im, node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape, kernel, strides, dilations, group = _filter(im, node, transposed=True)
    a = node.attrs
    out_pad = a.ints("output_padding", [0, 0], length=2)
    auto = a.str("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise _unsupported(node, f"auto_pad {auto!r}")
    xs = im.shape_of(x)
    if "output_shape" in a:
        out_shape = a.ints("output_shape")
        if len(out_shape) < 2:
            raise _bad(node, f"output_shape {out_shape} needs the two spatial sizes")
        if xs is None or len(xs) != 4 or None in xs[2:]:
            raise _unsupported(node, "output_shape needs a static input size")
        pads_lo, pads_hi = [], []
        for i in range(2):
            total = (strides[i] * (xs[2 + i] - 1) + out_pad[i] + ((kernel[i] - 1) * dilations[i] + 1)
                     - out_shape[-2 + i])
            if total < 0:
                raise _shape_error(node, f"output_shape {out_shape} is larger than the transposed convolution "
                                         f"of a {tuple(xs)} input can produce")
            small, big = total // 2, total - total // 2
            upper = auto == "SAME_UPPER"     # ONNX: otherwise the larger half goes to the start
            pads_lo.append(small if upper else big)
            pads_hi.append(big if upper else small)
        pads = [pads_lo[0], pads_lo[1], pads_hi[0], pads_hi[1]]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(2):
            # output = input * stride: total padding = stride*(in-1) + out_pad + (k-1)*d + 1 - in*stride
            total = out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - strides[i]
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    else:
        pads = a.ints("pads", [0, 0, 0, 0], length=4)
    attrs = {"strides": strides, "paddings": pads, "output_padding": out_pad, "dilations": dilations,
             "groups": group}
    im.emit("conv2d_transpose", [x, w] + ([b] if b else []), [node.outputs[0]], attrs, node.name)


@_converter("BatchNormalization")
def _batch_norm(im, node):
    a = node.attrs
    if a.int("training_mode", 0):
        raise _unsupported(node, "training_mode=1")
    if not a.int("spatial", 1):
        raise _unsupported(node, "spatial=0")
    for extra in node.outputs[1:]:
        if extra and im.use_count.get(extra):
            raise _unsupported(node, f"training output {extra!r} is used")
    x, scale, bias, mean, var = (node.input(i) for i in range(5))
    xs = im.shape_of(x)
    if xs is not None and len(xs) < 2:
        raise _shape_error(node, f"input {x!r} of shape {tuple(xs)} has no channel axis")
    channels = None if xs is None else xs[1]
    for n in (scale, bias, mean, var):
        s = im.shape_of(n)
        if s is not None and (len(s) != 1 or None not in (channels, s[0]) and s[0] != channels):
            raise _shape_error(node, f"{n!r} has shape {tuple(s)}, expected ({channels},)")
        channels = channels if s is None or len(s) != 1 or channels is not None else s[0]
    # running statistics are state outputs named like their parameters (docs/ops.md)
    mean_out = mean if im.is_const(mean) else im.fresh(f"{node.outputs[0]}.mean_out")
    var_out = var if im.is_const(var) else im.fresh(f"{node.outputs[0]}.variance_out")
    attrs = {"epsilon": a.float("epsilon", 1e-5), "momentum": a.float("momentum", 0.9)}
    im.emit("batch_norm", [x, scale, bias, mean, var], [node.outputs[0], mean_out, var_out], attrs, node.name)


def _unary(refquant_type, **fixed):
    def conv(im, node):
        im.emit(refquant_type, [node.inputs[0]], [node.outputs[0]], dict(fixed), node.name)
    return conv


for _onnx, _rq in [("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("Sqrt", "sqrt"), ("Exp", "exp"),
                   ("Log", "log")]:
    _CONVERTERS[_onnx] = _unary(_rq)


@_converter("HardSigmoid")
def _hard_sigmoid(im, node):
    attrs = {"slope": node.attrs.float("alpha", 0.2), "offset": node.attrs.float("beta", 0.5)}
    im.emit("hard_sigmoid", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("HardSwish")
def _hard_swish(im, node):
    attrs = {"threshold": 6.0, "scale": 6.0, "offset": 3.0}
    im.emit("hard_swish", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Clip")
def _clip(im, node):
    if im.opset < 11:
        lo, hi = node.attrs.float("min", None), node.attrs.float("max", None)
    else:
        bounds = []
        for i, what in ((1, "min"), (2, "max")):
            v = _const_input(im, node, i, f"Clip {what}")
            if v is not None and v.size != 1:
                raise _shape_error(node, f"Clip {what} must be a scalar, got shape {v.shape}")
            bounds.append(None if v is None else float(np.ravel(v)[0]))
        lo, hi = bounds
    if any(v is not None and math.isnan(v) for v in (lo, hi)):
        raise _bad(node, f"Clip bounds [{lo}, {hi}] contain NaN")
    x, y = node.inputs[0], node.outputs[0]
    if lo == 0.0 and hi == 6.0:
        im.emit("relu6", [x], [y], {"threshold": 6.0}, node.name)
    elif lo == 0.0 and hi is None:
        im.emit("relu", [x], [y], {}, node.name)
    else:
        im.emit("clip", [x], [y], {"min": -FLT_MAX if lo is None else lo, "max": FLT_MAX if hi is None else hi},
                node.name)


def _binary(refquant_type):
    def conv(im, node):
        a, b = node.inputs[0], node.inputs[1]
        _check_broadcast(node, im.shape_of(a), im.shape_of(b))
        im.emit(refquant_type, [a, b], [node.outputs[0]], {"axis": -1}, node.name)
    return conv


for _onnx, _rq in [("Add", "elementwise_add"), ("Sub", "elementwise_sub"), ("Mul", "elementwise_mul"),
                   ("Div", "elementwise_div"), ("Pow", "elementwise_pow")]:
    _CONVERTERS[_onnx] = _binary(_rq)


def _check_matmul(node, a, b, sa, sb):
    for n, s in ((a, sa), (b, sb)):
        if s is not None and len(s) == 0:
            raise _shape_error(node, f"input {n!r} is a scalar; MatMul needs rank >= 1")
    if sa is not None and sb is not None:
        k_a, k_b = sa[-1], sb[0] if len(sb) == 1 else sb[-2]
        if None not in (k_a, k_b) and k_a != k_b:
            raise _shape_error(node, f"inner dimensions of {tuple(sa)} and {tuple(sb)} differ")


@_converter("MatMul")
def _matmul(im, node):
    a, b = node.inputs[0], node.inputs[1]
    _check_matmul(node, a, b, im.shape_of(a), im.shape_of(b))
    ra = im.rank(a)
    if im.is_const(b) and im.const(b).ndim == 2 and not im.is_const(a) and ra is not None and ra >= 2:
        im.emit("mul", [a, b], [node.outputs[0]], {"x_num_col_dims": ra - 1, "y_num_col_dims": 1}, node.name)
    else:
        im.emit("matmul", [a, b], [node.outputs[0]], {"trans_x": False, "trans_y": False}, node.name)


def _rewrite_const(im, node, name: str, value) -> str:
    """Store a transformed constant: under the same name when this node is its only reader, else a new one."""
    if im.use_count.get(name, 0) <= 1 and name not in im.graph_outputs:
        return im.add_const(name, _normalize_const(value, node.where))
    return im.add_const(im.fresh(f"{name}.{node.name}"), _normalize_const(value, node.where))


@_converter("Gemm")
def _gemm(im, node):
    a, b, c = node.input(0), node.input(1), node.input(2)
    alpha, beta = node.attrs.float("alpha", 1.0), node.attrs.float("beta", 1.0)
    trans_a, trans_b = node.attrs.int("transA", 0), node.attrs.int("transB", 0)
    sa, sb = im.shape_of(a), im.shape_of(b)
    _check_shape(node, a, sa, 2)
    _check_shape(node, b, sb, 2)
    if sa is not None and sb is not None:
        k_a, k_b = sa[0 if trans_a else 1], sb[1 if trans_b else 0]
        if None not in (k_a, k_b) and k_a != k_b:
            raise _shape_error(node, f"inner dimensions of A {tuple(sa)} (transA={trans_a}) and B {tuple(sb)} "
                                     f"(transB={trans_b}) differ")
    y = node.outputs[0]
    mm_out = im.fresh(f"{y}.matmul") if c else y
    if trans_a:
        if im.is_const(a):
            a = _rewrite_const(im, node, a, im.const(a).T)
        else:
            t = im.fresh(f"{a}.T")
            im.emit("transpose", [a], [t], {"perm": [1, 0]}, f"{node.name}/transpose")
            a = t
    if im.is_const(b):
        w = im.const(b)
        if trans_b or alpha != 1.0:
            w = (w.T if trans_b else w) * np.float32(alpha)
            b = _rewrite_const(im, node, b, w)
        im.emit("mul", [a, b], [mm_out], {"x_num_col_dims": 1, "y_num_col_dims": 1}, node.name)
    else:
        target = mm_out if alpha == 1.0 else im.fresh(f"{mm_out}.unscaled")
        im.emit("matmul", [a, b], [target], {"trans_x": False, "trans_y": bool(trans_b)}, node.name)
        if alpha != 1.0:
            im.emit("scale", [target], [mm_out], {"scale": alpha, "bias": 0.0}, f"{node.name}/alpha")
    if c:
        _check_broadcast(node, im.shape_of(mm_out), im.shape_of(c))
        if im.is_const(c):
            if beta != 1.0:
                c = _rewrite_const(im, node, c, im.const(c) * np.float32(beta))
        elif beta != 1.0:
            cs = im.fresh(f"{c}.beta")
            im.emit("scale", [c], [cs], {"scale": beta, "bias": 0.0}, f"{node.name}/beta")
            c = cs
        im.emit("elementwise_add", [mm_out, c], [y], {"axis": -1}, f"{node.name}/bias")


def _softmax_like(refquant_type):
    def conv(im, node):
        x, y = node.inputs[0], node.outputs[0]
        r = im.rank(x)
        if im.opset >= 13:
            axis = _axis(node, node.attrs.int("axis", -1), r)
            im.emit(refquant_type, [x], [y], {"axis": axis - r if r is not None else axis}, node.name)
            return
        axis = _axis(node, node.attrs.int("axis", 1), r)
        if r is not None:
            if axis == r - 1:
                im.emit(refquant_type, [x], [y], {"axis": -1}, node.name)
                return
        elif axis < 0:
            raise _unsupported(node, "a negative axis before opset 13 needs the input rank")
        # Before opset 13, Softmax coerces the input to 2-D [prod(shape[:axis]), prod(shape[axis:])].
        shp, flat, soft = im.fresh(f"{x}.shape"), im.fresh(f"{x}.flat"), im.fresh(f"{y}.flat")
        im.emit("shape", [x], [shp], {}, f"{node.name}/shape")
        im.emit("flatten", [x], [flat], {"start_axis": axis, "stop_axis": -1}, f"{node.name}/flatten")
        im.emit(refquant_type, [flat], [soft], {"axis": -1}, node.name)
        im.emit("reshape", [soft, shp], [y], {}, f"{node.name}/reshape")
    return conv


_CONVERTERS["Softmax"] = _softmax_like("softmax")
_CONVERTERS["LogSoftmax"] = _softmax_like("log_softmax")


def _reduce(refquant_type, axes_input_from: int):
    def conv(im, node):
        if im.opset >= axes_input_from:
            v = _const_input(im, node, 1, "reduce axes")
            axes = None if v is None else _int_values(node, v, "reduce axes")
        else:
            if node.input(1):
                raise _bad(node, f"takes its axes as an attribute before opset {axes_input_from}, not as input")
            axes = node.attrs.ints("axes", None)
        keep = bool(node.attrs.int("keepdims", 1))
        if axes is not None and len(axes) == 0:
            axes = None
        if axes is None and node.attrs.int("noop_with_empty_axes", 0):
            im.alias[node.outputs[0]] = node.inputs[0]
            return
        if axes is not None:
            axes = _axes(node, axes, im.rank(node.inputs[0]))
        im.emit(refquant_type, [node.inputs[0]], [node.outputs[0]], {"dim": axes, "keep_dim": keep}, node.name)
    return conv


_CONVERTERS["ReduceMean"] = _reduce("reduce_mean", 18)
_CONVERTERS["ReduceSum"] = _reduce("reduce_sum", 13)


@_converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(im, node):
    r = im.rank(node.inputs[0])
    if r is not None and r != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {r})")
    kind = "avg" if node.type == "GlobalAveragePool" else "max"
    attrs = {"pooling_type": kind, "ksize": [1, 1], "strides": [1, 1], "paddings": [0, 0, 0, 0],
             "global_pooling": True, "ceil_mode": False, "exclusive": True}
    im.emit("pool2d", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("MaxPool", "AveragePool")
def _pool(im, node):
    a = node.attrs
    kernel = a.ints("kernel_shape")
    if len(kernel) != 2:
        raise _unsupported(node, f"only 2-D pooling is supported (kernel_shape {kernel})")
    r = im.rank(node.inputs[0])
    if r is not None and r != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {r})")
    if len(node.outputs) > 1 and node.outputs[1] and im.use_count.get(node.outputs[1]):
        raise _unsupported(node, "the Indices output is used")
    dilations = a.ints("dilations", [1, 1], length=2)
    if dilations != [1, 1]:
        raise _unsupported(node, f"dilations {dilations}")
    strides = a.ints("strides", [1, 1], length=2)
    pads = _auto_pads(im, node, node.inputs[0], kernel, strides, [1, 1], a.ints("pads", None, length=4))
    ceil_mode = bool(a.int("ceil_mode", 0))
    count_include_pad = bool(a.int("count_include_pad", 0))
    if node.type == "AveragePool" and ceil_mode and count_include_pad:
        # ONNX divides a window that runs past the padding (ceil mode) by its size clipped to the padded input;
        # pool2d (Paddle) divides by kh*kw. They agree only when no window overflows.
        if min(strides) < 1 or min(kernel) < 1:
            raise _shape_error(node, f"kernel_shape {kernel} and strides {strides} must be positive")
        shape = im.shape_of(node.inputs[0])
        for axis in range(2):
            n = None if shape is None or len(shape) != 4 else shape[2 + axis]
            if n is None:
                raise _unsupported(node, "ceil_mode=1 with count_include_pad=1 needs a static input size")
            lo, hi = pads[axis], pads[axis + 2]
            out = pool_out_size(n, kernel[axis], strides[axis], lo, hi, True)
            if (out - 1) * strides[axis] + kernel[axis] > n + lo + hi:
                raise _unsupported(node, "ceil_mode=1 with count_include_pad=1 where the last window runs past "
                                         "the padding (ONNX's clipped divisor differs from pool2d's kh*kw)")
    attrs = {"pooling_type": "max" if node.type == "MaxPool" else "avg", "ksize": kernel, "strides": strides,
             "paddings": pads, "global_pooling": False, "ceil_mode": ceil_mode, "exclusive": not count_include_pad}
    im.emit("pool2d", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


_RESIZE_CTM = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@_converter("Resize", "Upsample")
def _resize(im, node):
    a = node.attrs
    mode = a.str("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise _unsupported(node, f"mode {mode!r}")
    x = node.inputs[0]
    xs = im.shape_of(x)
    if xs is not None and len(xs) != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {len(xs)})")
    if a.int("antialias", 0):
        raise _unsupported(node, "antialias=1")
    policy = a.str("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise _unsupported(node, f"keep_aspect_ratio_policy {policy!r}")
    axes = a.ints("axes", None)
    legacy = node.type == "Upsample" or im.opset < 11
    scales = sizes = None
    size_tensor = ""
    if node.type == "Upsample" and "scales" in a:
        scales = np.asarray(a.floats("scales"), np.float32)
    elif legacy:
        scales = _const_input(im, node, 1, "Resize scales")
    else:
        scales = _const_input(im, node, 2, "Resize scales")
        if node.input(3):
            if im.is_const(node.input(3)):
                sizes = _int_values(node, im.const(node.input(3)), "Resize sizes")
            else:
                size_tensor = node.input(3)
                _check_shape(node, size_tensor, im.shape_of(size_tensor), 1, "the sizes input")
    if scales is not None:
        if np.asarray(scales).dtype.kind != "f":
            raise _shape_error(node, f"scales must be a float tensor, got {np.asarray(scales).dtype.name}")
        scales = np.ravel(scales).astype(np.float32)
        if scales.size == 0:
            scales = None
    if axes is not None:
        norm = [_axis(node, ax, 4, "Resize axis") for ax in axes]
        if norm != [2, 3]:
            raise _unsupported(node, f"axes {list(axes)}: only the spatial axes [2, 3] can be resized")
        if scales is not None:
            scales = np.concatenate([[1, 1], scales]).astype(np.float32)
        if sizes is not None:
            raise _unsupported(node, "sizes together with axes")
    attrs = {}
    if scales is not None:
        if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
            raise _unsupported(node, f"scales {scales.tolist()}: only the H and W axes can be resized")
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise _shape_error(node, f"scales {scales.tolist()} must be finite and positive")
        attrs["scale"] = [float(scales[2]), float(scales[3])]
    elif sizes is not None:
        if len(sizes) != 4 or min(sizes) < 1:
            raise _shape_error(node, f"sizes {sizes} must be 4 positive sizes (N, C, H, W)")
        if xs is not None and any(None not in (xs[i], sizes[i]) and xs[i] != sizes[i] for i in range(2)):
            raise _unsupported(node, f"sizes {sizes}: only the H and W axes can be resized (input {tuple(xs)})")
        attrs["out_size"] = sizes[-2:]
    elif not size_tensor:
        raise _unsupported(node, "neither scales nor sizes are given")
    if legacy:
        ctm = "asymmetric"
        if mode == "nearest" and scales is not None:
            down = [s < 1 for s in attrs["scale"]]
            if any(down) and not all(down):
                raise _unsupported(node, "opset < 11 nearest resize that shrinks one axis and grows the other")
            attrs["nearest_mode"] = "ceil" if all(down) else "floor"
        elif mode == "nearest":
            attrs["nearest_mode"] = "floor"
    else:
        ctm = a.str("coordinate_transformation_mode", "half_pixel")
        if ctm not in _RESIZE_CTM:
            raise _unsupported(node, f"coordinate_transformation_mode {ctm!r}")
        if mode == "nearest":
            attrs["nearest_mode"] = a.str("nearest_mode", "round_prefer_floor")
            if attrs["nearest_mode"] not in _NEAREST_MODES:
                raise _unsupported(node, f"nearest_mode {attrs['nearest_mode']!r}")
    attrs["coordinate_transformation_mode"] = ctm
    attrs["align_corners"] = ctm == "align_corners"
    op_type = "nearest_interp" if mode == "nearest" else "bilinear_interp"
    inputs = [x] + ([size_tensor] if size_tensor else [])
    im.emit(op_type, inputs, [node.outputs[0]], attrs, node.name)


@_converter("Concat")
def _concat(im, node):
    if not all(node.inputs):
        raise _bad(node, "an input name is empty")
    ranks = {im.rank(n) for n in node.inputs} - {None}
    if len(ranks) > 1:
        raise _shape_error(node, f"inputs of ranks {sorted(ranks)} cannot be concatenated")
    r = next(iter(ranks), None)
    axis = _axis(node, node.attrs.int("axis"), r)
    shapes = [im.shape_of(n) for n in node.inputs]
    known = [s for s in shapes if s is not None]
    for i in range(r or 0):
        dims = {s[i] for s in known} - {None}
        if i != axis and len(dims) > 1:
            raise _shape_error(node, f"input shapes {[tuple(s) for s in known]} differ outside axis {axis}")
    im.emit("concat", list(node.inputs), [node.outputs[0]], {"axis": axis}, node.name)


def _check_target(node, target: list) -> None:
    if any(t < -1 for t in target) or target.count(-1) > 1:
        raise _shape_error(node, f"target shape {target} may hold sizes >= 0 and a single -1")
    if len(target) > _MAX_RANK:
        raise _shape_error(node, f"target shape {target} has more than {_MAX_RANK} dimensions")


@_converter("Reshape")
def _reshape(im, node):
    x, shape = node.inputs[0], node.input(1)
    if im.opset < 5:
        target = node.attrs.ints("shape")
        _check_target(node, target)
        im.emit("reshape", [x], [node.outputs[0]], {"shape": target}, node.name)
        return
    allowzero = node.attrs.int("allowzero", 0)
    if im.is_const(shape):
        target = _int_values(node, im.const(shape), "the shape input")
        _check_target(node, target)
        if allowzero and 0 in target:
            raise _unsupported(node, "allowzero=1 with a 0 in the target shape")
        im.emit("reshape", [x], [node.outputs[0]], {"shape": target}, node.name)
    else:
        if allowzero:
            raise _unsupported(node, "allowzero=1 with a shape computed at run time")
        _check_shape(node, shape, im.shape_of(shape), 1, "the shape input")
        im.emit("reshape", [x, shape], [node.outputs[0]], {}, node.name)


@_converter("Flatten")
def _flatten(im, node):
    x, y = node.inputs[0], node.outputs[0]
    r = im.rank(x)
    axis = node.attrs.int("axis", 1)
    if axis < 0 and r is None:
        raise _unsupported(node, "a negative axis needs the input rank")
    axis = _axis(node, axis, r, inclusive=True)
    if axis == 0 or (r is not None and axis == r):
        flat = im.fresh(f"{y}.flat")
        im.emit("flatten", [x], [flat], {"start_axis": 0, "stop_axis": -1}, node.name)
        im.emit("unsqueeze", [flat], [y], {"axes": [0 if axis == 0 else 1]}, f"{node.name}/unsqueeze")
    elif axis == 1:
        im.emit("flatten", [x], [y], {"start_axis": 1, "stop_axis": -1}, node.name)
    else:
        tail = im.fresh(f"{y}.tail")
        im.emit("flatten", [x], [tail], {"start_axis": axis, "stop_axis": -1}, node.name)
        im.emit("flatten", [tail], [y], {"start_axis": 0, "stop_axis": axis - 1}, f"{node.name}/head")


@_converter("Transpose")
def _transpose(im, node):
    r = im.rank(node.inputs[0])
    perm = node.attrs.ints("perm", None)
    if perm is None:
        if r is None:
            raise _unsupported(node, "Transpose without perm needs the input rank")
        perm = list(range(r))[::-1]
    if sorted(perm) != list(range(len(perm))) or (r is not None and len(perm) != r):
        raise _shape_error(node, f"perm {perm} is not a permutation of the {r if r is not None else '?'} axes")
    im.emit("transpose", [node.inputs[0]], [node.outputs[0]], {"perm": perm}, node.name)


def _axes_of(im, node, required: bool):
    if im.opset >= 13:
        v = _const_input(im, node, 1, "axes")
        axes = None if v is None else _int_values(node, v, "axes")
    else:
        if node.input(1):
            raise _bad(node, "takes its axes as an attribute before opset 13, not as an input")
        axes = node.attrs.ints("axes", None)
    if axes is None:
        if required:
            raise _bad(node, "axes are required")
        return None
    return axes


@_converter("Squeeze")
def _squeeze(im, node):
    x = node.inputs[0]
    axes = _axes_of(im, node, required=False)
    shape = im.shape_of(x)
    if axes is not None:
        axes = _axes(node, axes, None if shape is None else len(shape))
        if shape is not None and any(shape[a] not in (1, None) for a in axes):
            raise _shape_error(node, f"axes {axes} of shape {tuple(shape)} are not all of size 1")
    im.emit("squeeze", [x], [node.outputs[0]], {"axes": axes}, node.name)


@_converter("Unsqueeze")
def _unsqueeze(im, node):
    axes = _axes_of(im, node, required=True)
    r = im.rank(node.inputs[0])
    axes = _axes(node, axes, None if r is None else r + len(axes))
    im.emit("unsqueeze", [node.inputs[0]], [node.outputs[0]], {"axes": axes}, node.name)


def _slice_attrs(im, node, starts, ends, axes, steps) -> dict:
    r = im.rank(node.inputs[0])
    n = len(starts)
    axes = list(range(n)) if axes is None else axes
    steps = [1] * n if steps is None else steps
    if not len(ends) == len(axes) == len(steps) == n:
        raise _shape_error(node, f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if 0 in steps:
        raise _shape_error(node, f"steps {steps} contain 0")
    return {"starts": starts, "ends": ends, "axes": _axes(node, axes, r), "steps": steps}


@_converter("Slice")
def _slice(im, node):
    x, y = node.inputs[0], node.outputs[0]
    if im.opset < 10:
        a = node.attrs
        attrs = _slice_attrs(im, node, a.ints("starts"), a.ints("ends"), a.ints("axes", None), None)
        im.emit("slice", [x], [y], attrs, node.name)
        return
    extra = [node.input(i) for i in range(1, 5)]
    if all(not n or im.is_const(n) for n in extra):
        vals = [None if not n else _int_values(node, im.const(n), what)
                for n, what in zip(extra, ("starts", "ends", "axes", "steps"))]
        im.emit("slice", [x], [y], _slice_attrs(im, node, *vals), node.name)
    else:
        while extra and not extra[-1]:
            extra.pop()
        for n, what in zip(extra, ("starts", "ends", "axes", "steps")):
            _check_shape(node, n, im.shape_of(n) if n else None, 1, f"the {what} input")
        im.emit("slice", [x] + extra, [y], {}, node.name)


@_converter("Shape")
def _shape(im, node):
    attrs = {}
    for key in ("start", "end"):
        if key in node.attrs:
            attrs[key] = node.attrs.int(key)
            if abs(attrs[key]) > 2 ** 62:
                raise _shape_error(node, f"{key} {attrs[key]} is out of range")
    im.emit("shape", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Cast")
def _cast(im, node):
    from onnx import helper
    to = node.attrs.int("to")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, ValueError, TypeError):
        raise _bad(node, f"'to' {to} is not an ONNX data type") from None
    if dtype.name not in _RUNTIME_DTYPES:
        raise _unsupported(node, f"cast to {dtype.name}")
    im.emit("cast", [node.inputs[0]], [node.outputs[0]], {"dtype": dtype.name}, node.name)


@_converter("Gather")
def _gather(im, node):
    x, idx = node.inputs[0], node.inputs[1]
    xs = im.shape_of(x)
    if xs is not None and len(xs) == 0:
        raise _shape_error(node, f"data {x!r} is a scalar")
    axis = _axis(node, node.attrs.int("axis", 0), None if xs is None else len(xs))
    if im.is_const(idx):
        index = im.const(idx)
        if index.dtype.kind not in "iu":
            raise _shape_error(node, f"indices {idx!r} must be integers, got {index.dtype.name}")
        dim = None if xs is None else xs[axis]
        if dim is not None and index.size and not (-dim <= int(index.min()) and int(index.max()) < dim):
            raise _shape_error(node, f"indices {idx!r} (range [{index.min()}, {index.max()}]) are out of range "
                                     f"for axis {axis} of size {dim}")
    im.emit("gather", [x, idx], [node.outputs[0]], {"axis": axis}, node.name)


@_converter("Expand")
def _expand(im, node):
    x, shape = node.inputs[0], node.inputs[1]
    if im.is_const(shape):
        target = _int_values(node, im.const(shape), "the shape input")
        if any(t < 0 for t in target) or len(target) > _MAX_RANK:
            raise _shape_error(node, f"target shape {target} is not a shape")
        xs = im.shape_of(x)
        if xs is not None:
            _check_broadcast(node, xs, tuple(target))
    _check_shape(node, shape, im.shape_of(shape), 1, "the shape input")
    im.emit("expand", [x, shape], [node.outputs[0]], {}, node.name)


@_converter("Split")
def _split(im, node):
    x = node.inputs[0]
    shape = im.shape_of(x)
    axis = _axis(node, node.attrs.int("axis", 0), None if shape is None else len(shape))
    if im.opset >= 13:
        v = _const_input(im, node, 1, "split sizes")
        split = None if v is None else _int_values(node, v, "split sizes")
    else:
        split = node.attrs.ints("split", None)
    n = len(node.outputs)
    dim = None if shape is None or axis < 0 else shape[axis]
    if split is None:
        if dim is None:
            raise _unsupported(node, "an equal split needs a static size along the axis")
        if im.opset >= 18:
            parts = node.attrs.int("num_outputs", n)
            if parts != n:
                raise _bad(node, f"num_outputs {parts} but {n} outputs")
            chunk = -(-dim // n)
            split = [min(chunk, max(dim - k * chunk, 0)) for k in range(n)]
        else:
            if dim % n:
                raise _shape_error(node, f"axis {axis} of size {dim} does not split into {n} equal parts")
            split = [dim // n] * n
    if len(split) != n or any(s < 0 for s in split):
        raise _shape_error(node, f"split sizes {split} must be {n} sizes >= 0, one per output")
    if dim is not None and sum(split) != dim:
        raise _shape_error(node, f"split sizes {split} add up to {sum(split)}, not to the size {dim} of axis {axis}")
    start = 0
    for k, (out, size) in enumerate(zip(node.outputs, split)):
        attrs = {"axes": [axis], "starts": [start], "ends": [start + size], "steps": [1]}
        if out:
            im.emit("slice", [x], [out], attrs, f"{node.name}/{k}" if k else node.name)
        start += size


def _affine(im, node, quantize: bool):
    """QuantizeLinear / DequantizeLinear -> quantize_affine / dequantize_affine (ONNX semantics, integer arrays;
    see refquant.ops.affine). Scale and zero point must be constants; blocked quantization (opset 21
    ``block_size``) and 4-bit or float8 types are refused."""
    from ..ops.affine import INT_RANGES, Q_DTYPES
    x = node.inputs[0]
    scale = _const_input(im, node, 1, "the scale")
    zp = _const_input(im, node, 2, "the zero point")
    a = node.attrs
    if a.int("block_size", 0):
        raise _unsupported(node, "blocked quantization (block_size)")
    narrow = {t.name for t in im.graph.initializer
              if t.data_type in (im.onnx.TensorProto.INT4, im.onnx.TensorProto.UINT4)}
    for n in (node.input(2),) + ((x,) if not quantize else ()):
        if n in narrow:
            raise _unsupported(node, f"4-bit tensor {n!r}")
    if scale.dtype.kind != "f" or scale.ndim > 1 or scale.size == 0:
        raise _shape_error(node, f"the scale must be a non-empty float scalar or 1-D tensor, got {scale.dtype.name} "
                                 f"of shape {scale.shape}")
    if zp is not None and zp.shape != scale.shape and not (zp.size == 1 and scale.size == 1):
        raise _shape_error(node, f"zero point shape {zp.shape} differs from the scale's {scale.shape}")
    if zp is not None:
        dtype = zp.dtype.name
    elif quantize and a.int("output_dtype", 0):
        from onnx import helper
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(a.int("output_dtype"))).name
        except (KeyError, ValueError, TypeError):
            raise _bad(node, f"output_dtype {a.int('output_dtype')} is not an ONNX data type") from None
    elif not quantize and im.is_const(x):
        dtype = im.const(x).dtype.name
    else:
        dtype = "uint8"
    if dtype not in (Q_DTYPES if quantize else INT_RANGES):
        raise _unsupported(node, f"{'quantization to' if quantize else 'dequantization of'} {dtype}")
    rank = im.rank(x)
    axis = a.int("axis", 1)
    if scale.size > 1:
        if im.opset < 13:
            raise _shape_error(node, f"a per-axis scale ({scale.size} values) needs opset 13, the model declares "
                                     f"{im.opset}")
        axis = _axis(node, axis, rank)
        xs = im.shape_of(x)
        if xs is not None and xs[axis] is not None and xs[axis] != scale.size:
            raise _shape_error(node, f"{scale.size} scales for axis {axis} of size {xs[axis]}")
    attrs = {"dtype": dtype, "axis": axis}
    inputs = [x, node.inputs[1]] + ([node.inputs[2]] if zp is not None else [])
    im.emit("quantize_affine" if quantize else "dequantize_affine", inputs, [node.outputs[0]], attrs, node.name)


@_converter("QuantizeLinear")
def _quantize_linear(im, node):
    _affine(im, node, True)


@_converter("DequantizeLinear")
def _dequantize_linear(im, node):
    _affine(im, node, False)


def supported_onnx_ops() -> list[str]:
    """The ONNX op types :func:`import_onnx` maps."""
    return sorted(_CONVERTERS)
