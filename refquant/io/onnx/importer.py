"""Import an ONNX model into a refquant :class:`~refquant.graph.Model`.

``import_onnx(path | bytes | onnx.ModelProto) -> Model`` maps every ONNX node onto refquant ops (Paddle's op
names, see ``docs/ops.md``), keeping the ONNX tensor names, so a quantization pass sees ``conv2d``,
``depthwise_conv2d``, ``mul`` and ``matmul`` just as PaddleSlim would. The mapping table, constant folding
and dynamic shapes are described in ``docs/onnx_import.md``.

How it works:

* Initializers and ``Constant`` nodes become parameters (float tensors as float32, integer ones keep their
  dtype, so int64 shape constants stay int64).
* Each node is converted by one small function (:mod:`.converters`, registered by ONNX op type with its input
  and output counts) that emits refquant ops. When every input of a node is a constant, the ops it emits are
  *evaluated right away with refquant's own kernels* and the outputs become parameters instead (constant
  folding); shape subgraphs that depend on the runtime input shape (``Shape -> Slice -> Concat -> Reshape``)
  stay in the graph as small int64 ops.
* The executor's partial shape inference (:class:`refquant.executor.PartialShapes`: ranks, the dimensions
  that are known, and the values of small int vectors such as ``Shape`` outputs) runs on each op as it is
  emitted, because some mappings depend on the rank (``MatMul -> mul`` needs ``x_num_col_dims``, ``Softmax``
  before opset 13 needs to know the last axis). A shape rule that fails warns, naming the op.
* Any op without a converter raises :class:`refquant.UnsupportedOpError` naming the op type and the node;
  nothing is skipped silently.

Hostile files: external data is read only for a path, only from inside the model's directory
(:mod:`.loader`); attributes are read with their ONNX types (:class:`_Attrs`); input counts, axes and
the shapes the importer can see are checked; constant folding refuses results above :data:`MAX_FOLD_BYTES`.
Every problem is a :class:`refquant.RefquantError` naming the file, node and op.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np

from ...errors import GraphError, ModelFormatError, RefquantError, ShapeError, UnsupportedOpError
from ...executor import PartialShapes
from ...graph import Model, Op, TensorSpec
from ...ops import OpContext, get_op
from .converters import ANY, ARITY, CONVERTERS
from .loader import _RUNTIME_DTYPES, _load, _normalize_const, require_onnx

MAX_OPSET = 22                      # the newest default-domain opset whose changes to the mapped ops are handled
MAX_FOLD_BYTES = 256 * 2 ** 20      # the largest tensor constant folding may create
MAX_STATIC_ELEMENTS = 2 ** 32       # a tensor whose known dimensions already multiply beyond this is refused
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SHAPE_COST = ("converters that need its rank or size refuse the node or take the rank-free mapping (a MatMul "
               "then stays matmul, not mul)")
# Ops whose float parameter inputs are weights an optimizer trains (by refquant op type -> input positions).
_WEIGHT_INPUTS = {"conv2d": (1, 2), "depthwise_conv2d": (1, 2), "conv2d_transpose": (1, 2), "mul": (0, 1),
                  "matmul": (0, 1), "batch_norm": (1, 2)}


def import_onnx(source, *, name: Optional[str] = None) -> Model:
    """Build a refquant :class:`Model` from an ONNX file path, its serialized bytes or an ``onnx.ModelProto``.

    Raises :class:`refquant.ModelFormatError` for bytes that are not a (complete, well-formed) ONNX model or
    external data that is refused (see ``docs/onnx_import.md``), :class:`refquant.UnsupportedOpError` naming the
    op type and node for an op or attribute refquant cannot map or an opset above :data:`MAX_OPSET`,
    :class:`refquant.ShapeError` / :class:`refquant.GraphError` for inconsistent shapes or graph structure
    (messages name the source, node and op), ``FileNotFoundError`` for a missing path and ``ImportError`` if the
    optional ``onnx`` package is missing. The caller's ``ModelProto`` is never modified.
    """
    onnx = require_onnx()
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
                nbytes, rule_error = _folded_bytes(op, opdef, args)
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
            if rule_error is not None:   # the forward accepts what the shape rule refused: a bug in the rule
                warnings.warn(f"{where}: the shape rule of op {op.name!r} ({op.type}) failed on input shapes "
                              f"{[None if a is None else a.shape for a in args]} that its forward accepts "
                              f"({type(rule_error).__name__}: {rule_error}); the folding size limit was checked "
                              f"on the result", RuntimeWarning, stacklevel=2)
                if max((np.asarray(v).nbytes for v in result), default=0) > MAX_FOLD_BYTES:
                    raise ShapeError(f"{where}: constant folding of {op.name!r} ({op.type}) created a tensor above "
                                     f"the {MAX_FOLD_BYTES}-byte limit")
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
        conv = CONVERTERS.get(node.op_type)
        if conv is None:
            raise UnsupportedOpError(f"{self.where}: unsupported ONNX op type {node.op_type!r} (node {node_name!r})")
        attrs = _Attrs(where, node.attribute)
        inputs = [self.resolve(n) if n else "" for n in node.input]
        outputs = list(node.output)
        lo, hi, max_out = _arity(node.op_type, self.opset)
        if not lo <= len(inputs) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < ANY else f"at least {lo}"
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


# attributes that later opsets turned into inputs: (name, first opset without the attribute)
_MOVED_ATTRS = {"Squeeze": (("axes", 13),), "Unsqueeze": (("axes", 13),), "ReduceSum": (("axes", 13),),
                "ReduceMean": (("axes", 18),), "Split": (("split", 13),), "Reshape": (("shape", 5),),
                "Slice": (("starts", 10), ("ends", 10), ("axes", 10), ("steps", 10)),
                "Clip": (("min", 11), ("max", 11)), "Upsample": (("scales", 9),)}


def _arity(op_type: str, opset: int) -> tuple:
    lo, hi, out = ARITY[op_type]
    if op_type == "Reshape" and opset < 5:
        lo, hi = 1, 1
    elif op_type == "Slice" and opset < 10:
        lo, hi = 1, 1
    elif op_type == "Unsqueeze" and opset >= 13:
        lo = 2
    elif op_type == "Resize" and opset < 11:
        lo, hi = 2, 2
    return lo, hi, out


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


def _folded_bytes(op: Op, opdef, args: list) -> tuple:
    """``(bytes, rule_error)``: an upper bound of the bytes the largest output of ``op`` takes, from its inputs'
    shapes and values, computed without running it, and the error of the op's shape rule if it failed (the bound
    then counts the inputs only)."""
    shapes = [None if a is None else tuple(a.shape) for a in args]
    itemsize = max([a.dtype.itemsize for a in args if a is not None] + [4])
    where = f"op {op.name!r} ({op.type})"
    out_shapes, rule_error = None, None
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
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError) as exc:
            rule_error = exc   # the inputs do not fit (the forward names the problem) or the rule has a bug
    if out_shapes is None:  # ops that never enlarge their input (reshape, slice, cast, unary, reductions)
        out_shapes = [s for s in shapes if s is not None]
    return max((math.prod(int(d) for d in s) * itemsize for s in out_shapes if s is not None), default=0), rule_error
