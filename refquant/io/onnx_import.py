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
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional

import numpy as np

from ..errors import ModelFormatError, UnsupportedOpError
from ..graph import Model, Op, TensorSpec
from ..ops import OpContext, get_op

FLT_MAX = float(np.finfo(np.float32).max)
_DEFAULT_DOMAINS = ("", "ai.onnx")
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


def _load(source, onnx):
    if isinstance(source, onnx.ModelProto):
        proto = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, where = bytes(source), "bytes"
        elif isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                data = f.read()
            where = os.fspath(source)
        else:
            raise TypeError(f"import_onnx takes a path, bytes or an onnx.ModelProto, got {type(source).__name__}")
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as exc:  # google.protobuf.message.DecodeError and friends
            raise ModelFormatError(f"{where}: not a valid ONNX model (protobuf parse failed: {exc}); "
                                   f"the file is truncated or not an ONNX file") from None
        if isinstance(source, (str, os.PathLike)) and any(
                t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            from onnx.external_data_helper import load_external_data_for_model
            load_external_data_for_model(proto, os.path.dirname(os.path.abspath(source)))
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelFormatError("not a valid ONNX model: it has no graph (truncated or not an ONNX file?)")
    if len(proto.graph.output) == 0:
        raise ModelFormatError("not a valid ONNX model: the graph has no outputs (truncated file?)")
    return proto


def import_onnx(source, *, name: Optional[str] = None) -> Model:
    """Build a refquant :class:`Model` from an ONNX file path, its serialized bytes or an ``onnx.ModelProto``.

    Raises :class:`refquant.ModelFormatError` for bytes that are not a (complete) ONNX model,
    :class:`refquant.UnsupportedOpError` naming the op type and node for an op refquant cannot map, and
    ``ImportError`` if the optional ``onnx`` package is missing.
    """
    onnx = _require_onnx()
    proto = _load(source, onnx)
    return _Importer(proto, onnx).build(name)


# ------------------------------------------------------------------------------------------------------
# partial shapes: a shape is None (rank unknown) or a tuple of ints / None (unknown dimension)
# ------------------------------------------------------------------------------------------------------
def _broadcast(*shapes):
    if any(s is None for s in shapes):
        return None
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = [d for d in dims if d is not None and d != 1]
        if known:
            out.append(known[0])
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _conv_len(n, k, s, lo, hi, d):
    return None if n is None else (n + lo + hi - d * (k - 1) - 1) // s + 1


def _pool_len(n, k, s, lo, hi, ceil_mode):
    if n is None:
        return None
    if ceil_mode:
        out = -(-(n + lo + hi - k) // s) + 1
        if (out - 1) * s >= n + lo:  # ONNX / PyTorch: the last window must start inside the input
            out -= 1
        return out
    return (n + lo + hi - k) // s + 1


class _Importer:
    def __init__(self, proto, onnx):
        self.proto = proto
        self.onnx = onnx
        self.graph = proto.graph
        self.opset = 1
        for imp in proto.opset_import:
            if imp.domain in _DEFAULT_DOMAINS:
                self.opset = int(imp.version)
        self.consts: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.alias: dict[str, str] = {}
        self.shapes: dict[str, Optional[tuple]] = {}
        self.values: dict[str, list] = {}          # partial values of small runtime int vectors
        self.names: set[str] = set()               # every tensor name in use
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

    def to_array(self, tensor) -> np.ndarray:
        from onnx import numpy_helper
        try:
            arr = numpy_helper.to_array(tensor)
        except Exception as exc:
            raise ModelFormatError(f"tensor {tensor.name!r} cannot be decoded ({exc}); truncated or corrupt model")
        return _normalize_const(arr)

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

    def _fold(self, pending: list[Op]) -> None:
        env = self.consts
        for op in pending:
            opdef = get_op(op.type, op.name)
            args = [env[n] if n else None for n in op.inputs]
            try:
                result = opdef.forward(OpContext(False, None), op.attrs, *args)
            except Exception as exc:
                raise type(exc)(f"constant folding of {op.name!r} ({op.type}): {exc}") from exc
            result = result if isinstance(result, tuple) else (result,)
            for out, value in zip(op.outputs, result):
                if out:
                    self.add_const(out, _normalize_const(np.asarray(value)))

    # ---- conversion ------------------------------------------------------------------------------------
    def build(self, name: Optional[str]) -> Model:
        from onnx import helper
        init_names = set()
        for t in self.graph.initializer:
            self.add_const(t.name, self.to_array(t))
            init_names.add(t.name)
        specs = []
        for vi in self.graph.input:
            if vi.name in init_names:
                continue
            specs.append(self._spec(vi))
            self.shapes[vi.name] = tuple(specs[-1].shape)
        used_node_names = {}
        for idx, node in enumerate(self.graph.node):
            base = node.name or f"{node.op_type}_{idx}"
            used_node_names[base] = used_node_names.get(base, 0) + 1
            node_name = base if used_node_names[base] == 1 else f"{base}_{used_node_names[base]}"
            self._convert(node, node_name, helper)
        outputs = self._finish_outputs(specs)
        live = {n for op in self.ops for n in list(op.inputs) + list(op.outputs) if n}
        live.update(outputs)
        params = {k: v for k, v in self.consts.items() if k in live}
        trainable = self._trainable(params)
        meta = {"source": "onnx", "opset": self.opset, "producer": self.proto.producer_name,
                "ir_version": int(self.proto.ir_version)}
        return Model(self.ops, params, specs, outputs, name=name or self.graph.name or "onnx_model", meta=meta,
                     trainable=trainable)

    def _spec(self, vi) -> TensorSpec:
        from onnx import helper
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOpError(f"graph input {vi.name!r} is not a tensor")
        if not tt.HasField("shape"):
            raise ModelFormatError(f"graph input {vi.name!r} has no shape (its rank is needed)")
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tt.shape.dim)
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:
            raise ModelFormatError(f"graph input {vi.name!r} has an unknown element type {tt.elem_type}") from None
        return TensorSpec(vi.name, shape, dtype)

    def _convert(self, node, node_name: str, helper) -> None:
        if node.domain not in _DEFAULT_DOMAINS:
            raise UnsupportedOpError(f"unsupported ONNX op {node.domain}::{node.op_type} (node {node_name!r})")
        conv = _CONVERTERS.get(node.op_type)
        if conv is None:
            raise UnsupportedOpError(f"unsupported ONNX op type {node.op_type!r} (node {node_name!r})")
        attrs = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            attrs[a.name] = v
        inputs = [self.resolve(n) if n else "" for n in node.input]
        for n in inputs:
            if n and n not in self.consts and n not in self.shapes:
                raise ModelFormatError(f"node {node_name!r} ({node.op_type}) reads {n!r}, which no initializer, "
                                       f"input or earlier node provides (truncated or corrupt model?)")
        outputs = list(node.output)
        fold = node.op_type != "Constant" and all(not n or self.is_const(n) for n in inputs)
        self.folding = fold
        self._pending = []
        try:
            conv(self, _Node(node_name, node.op_type, inputs, outputs, attrs))
        except (UnsupportedOpError, ModelFormatError):
            raise
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"node {node_name!r} ({node.op_type}): cannot convert ({exc!r})") from exc
        finally:
            self.folding = False
        if fold:
            self._fold(self._pending)
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
        rule = _SHAPE_RULES.get(op.type)
        ins = [self.shape_of(n) if n else None for n in op.inputs]
        out = None
        try:
            out = rule(self, op, ins) if rule else None
        except Exception:
            out = None
        if op.type == "batch_norm":
            self.shapes[op.outputs[0]] = out
            return
        for name in op.outputs:
            if name and name not in self.consts:
                self.shapes[name] = out if name == op.outputs[0] else None


class _Node:
    __slots__ = ("name", "type", "inputs", "outputs", "attrs")

    def __init__(self, name, op_type, inputs, outputs, attrs):
        self.name, self.type, self.inputs, self.outputs, self.attrs = name, op_type, inputs, outputs, attrs

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""


def _normalize_const(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------------------
# converters: one function per ONNX op type
# ------------------------------------------------------------------------------------------------------
_CONVERTERS: dict[str, Callable] = {}


def _converter(*op_types):
    def wrap(fn):
        for t in op_types:
            _CONVERTERS[t] = fn
        return fn
    return wrap


def _unsupported(node, why: str):
    return UnsupportedOpError(f"unsupported ONNX op type {node.type!r} (node {node.name!r}): {why}")


def _const_input(im: _Importer, node: _Node, i: int, what: str):
    """The value of optional input ``i`` (None when absent); it must be a constant."""
    name = node.input(i)
    if not name:
        return None
    if not im.is_const(name):
        raise _unsupported(node, f"{what} must be a constant, but {name!r} is computed at run time")
    return im.const(name)


def _ints(v) -> list[int]:
    return [int(x) for x in np.ravel(v)]


@_converter("Constant")
def _constant(im, node):
    a = node.attrs
    if "value" in a:
        value = im.to_array(a["value"])
    elif "value_float" in a:
        value = np.array(a["value_float"], np.float32)
    elif "value_floats" in a:
        value = np.array(a["value_floats"], np.float32)
    elif "value_int" in a:
        value = np.array(a["value_int"], np.int64)
    elif "value_ints" in a:
        value = np.array(a["value_ints"], np.int64)
    else:
        raise _unsupported(node, f"Constant with attribute(s) {sorted(a)}")
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
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(pads) if pads else [0] * 4
        return [p[0], p[1], p[2], p[3]]
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _unsupported(node, f"auto_pad {auto!r}")
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


@_converter("Conv")
def _conv(im, node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape = im.shape_of(w)
    if wshape is None or len(wshape) != 4:
        raise _unsupported(node, f"only 2-D convolutions are supported (filter shape {wshape})")
    kernel = node.attrs.get("kernel_shape", list(wshape[2:]))
    strides = node.attrs.get("strides", [1, 1])
    dilations = node.attrs.get("dilations", [1, 1])
    group = int(node.attrs.get("group", 1))
    pads = _auto_pads(im, node, x, kernel, strides, dilations, node.attrs.get("pads"))
    depthwise = group > 1 and wshape[1] == 1 and wshape[0] == group
    attrs = {"strides": _ints(strides), "paddings": _ints(pads), "dilations": _ints(dilations), "groups": group}
    inputs = [x, w] + ([b] if b else [])
    im.emit("depthwise_conv2d" if depthwise else "conv2d", inputs, [node.outputs[0]], attrs, node.name)


@_converter("ConvTranspose")
def _conv_transpose(im, node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape = im.shape_of(w)
    if wshape is None or len(wshape) != 4:
        raise _unsupported(node, f"only 2-D transposed convolutions are supported (filter shape {wshape})")
    a = node.attrs
    kernel = a.get("kernel_shape", list(wshape[2:]))
    strides = _ints(a.get("strides", [1, 1]))
    dilations = _ints(a.get("dilations", [1, 1]))
    group = int(a.get("group", 1))
    out_pad = _ints(a.get("output_padding", [0, 0]))
    auto = a.get("auto_pad", "NOTSET")
    xs = im.shape_of(x)
    if "output_shape" in a:
        if xs is None or len(xs) != 4 or None in xs[2:]:
            raise _unsupported(node, "output_shape needs a static input size")
        pads_lo, pads_hi = [], []
        for i in range(2):
            total = (strides[i] * (xs[2 + i] - 1) + out_pad[i] + ((kernel[i] - 1) * dilations[i] + 1)
                     - int(a["output_shape"][-2 + i]))
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
        pads = _ints(a.get("pads", [0, 0, 0, 0]))
    attrs = {"strides": strides, "paddings": pads, "output_padding": out_pad, "dilations": dilations,
             "groups": group}
    im.emit("conv2d_transpose", [x, w] + ([b] if b else []), [node.outputs[0]], attrs, node.name)


@_converter("BatchNormalization")
def _batch_norm(im, node):
    if int(node.attrs.get("training_mode", 0)):
        raise _unsupported(node, "training_mode=1")
    for extra in node.outputs[1:]:
        if extra and im.use_count.get(extra):
            raise _unsupported(node, f"training output {extra!r} is used")
    x, scale, bias, mean, var = (node.input(i) for i in range(5))
    # running statistics are state outputs named like their parameters (docs/ops.md)
    mean_out = mean if im.is_const(mean) else im.fresh(f"{node.outputs[0]}.mean_out")
    var_out = var if im.is_const(var) else im.fresh(f"{node.outputs[0]}.variance_out")
    attrs = {"epsilon": float(node.attrs.get("epsilon", 1e-5)), "momentum": float(node.attrs.get("momentum", 0.9))}
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
    attrs = {"slope": float(node.attrs.get("alpha", 0.2)), "offset": float(node.attrs.get("beta", 0.5))}
    im.emit("hard_sigmoid", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("HardSwish")
def _hard_swish(im, node):
    attrs = {"threshold": 6.0, "scale": 6.0, "offset": 3.0}
    im.emit("hard_swish", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Clip")
def _clip(im, node):
    if im.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    else:
        lo, hi = _const_input(im, node, 1, "Clip min"), _const_input(im, node, 2, "Clip max")
    lo = None if lo is None else float(np.ravel(lo)[0])
    hi = None if hi is None else float(np.ravel(hi)[0])
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
        im.emit(refquant_type, [node.inputs[0], node.inputs[1]], [node.outputs[0]], {"axis": -1}, node.name)
    return conv


for _onnx, _rq in [("Add", "elementwise_add"), ("Sub", "elementwise_sub"), ("Mul", "elementwise_mul"),
                   ("Div", "elementwise_div"), ("Pow", "elementwise_pow")]:
    _CONVERTERS[_onnx] = _binary(_rq)


@_converter("MatMul")
def _matmul(im, node):
    a, b = node.inputs[0], node.inputs[1]
    ra = im.rank(a)
    if im.is_const(b) and im.const(b).ndim == 2 and not im.is_const(a) and ra is not None and ra >= 2:
        im.emit("mul", [a, b], [node.outputs[0]], {"x_num_col_dims": ra - 1, "y_num_col_dims": 1}, node.name)
    else:
        im.emit("matmul", [a, b], [node.outputs[0]], {"trans_x": False, "trans_y": False}, node.name)


def _rewrite_const(im, node, name: str, value) -> str:
    """Store a transformed constant: under the same name when this node is its only reader, else a new one."""
    if im.use_count.get(name, 0) <= 1 and name not in im.graph_outputs:
        return im.add_const(name, _normalize_const(value))
    return im.add_const(im.fresh(f"{name}.{node.name}"), _normalize_const(value))


@_converter("Gemm")
def _gemm(im, node):
    a, b, c = node.input(0), node.input(1), node.input(2)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
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
            im.emit(refquant_type, [x], [y], {"axis": int(node.attrs.get("axis", -1))}, node.name)
            return
        axis = int(node.attrs.get("axis", 1))
        if r is not None:
            axis = axis + r if axis < 0 else axis
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
            axes = _const_input(im, node, 1, "reduce axes")
        else:
            axes = node.attrs.get("axes")
        keep = bool(int(node.attrs.get("keepdims", 1)))
        axes = None if axes is None else _ints(axes)
        if axes is not None and len(axes) == 0:
            axes = None
        if axes is None and int(node.attrs.get("noop_with_empty_axes", 0)):
            im.alias[node.outputs[0]] = node.inputs[0]
            return
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
    kernel = _ints(a["kernel_shape"])
    if len(kernel) != 2:
        raise _unsupported(node, f"only 2-D pooling is supported (kernel_shape {kernel})")
    if len(node.outputs) > 1 and node.outputs[1] and im.use_count.get(node.outputs[1]):
        raise _unsupported(node, "the Indices output is used")
    dilations = _ints(a.get("dilations", [1, 1]))
    if dilations != [1, 1]:
        raise _unsupported(node, f"dilations {dilations}")
    strides = _ints(a.get("strides", [1, 1]))
    pads = _auto_pads(im, node, node.inputs[0], kernel, strides, [1, 1], a.get("pads"))
    ceil_mode = bool(int(a.get("ceil_mode", 0)))
    if node.type == "AveragePool" and ceil_mode and int(a.get("count_include_pad", 0)):
        # ONNX divides a window that runs past the padding (ceil mode) by its size clipped to the padded input;
        # pool2d (Paddle) divides by kh*kw. They agree only when no window overflows.
        shape = im.shape_of(node.inputs[0])
        for axis in range(2):
            n = None if shape is None or len(shape) != 4 else shape[2 + axis]
            if n is None:
                raise _unsupported(node, "ceil_mode=1 with count_include_pad=1 needs a static input size")
            lo, hi = pads[axis], pads[axis + 2]
            out = _pool_len(n, kernel[axis], strides[axis], lo, hi, True)
            if (out - 1) * strides[axis] + kernel[axis] > n + lo + hi:
                raise _unsupported(node, "ceil_mode=1 with count_include_pad=1 where the last window runs past "
                                         "the padding (ONNX's clipped divisor differs from pool2d's kh*kw)")
    attrs = {"pooling_type": "max" if node.type == "MaxPool" else "avg", "ksize": kernel, "strides": strides,
             "paddings": _ints(pads), "global_pooling": False, "ceil_mode": ceil_mode,
             "exclusive": not bool(int(a.get("count_include_pad", 0)))}
    im.emit("pool2d", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Resize", "Upsample")
def _resize(im, node):
    a = node.attrs
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise _unsupported(node, f"mode {mode!r}")
    r = im.rank(node.inputs[0])
    if r is not None and r != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {r})")
    if int(a.get("antialias", 0)):
        raise _unsupported(node, "antialias=1")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise _unsupported(node, f"keep_aspect_ratio_policy {a['keep_aspect_ratio_policy']!r}")
    axes = a.get("axes")
    legacy = node.type == "Upsample" or im.opset < 11
    scales = sizes = None
    size_tensor = ""
    if node.type == "Upsample" and "scales" in a:
        scales = np.asarray(a["scales"], np.float32)
    elif legacy:
        scales = _const_input(im, node, 1, "Resize scales")
    else:
        scales = _const_input(im, node, 2, "Resize scales")
        if node.input(3):
            if im.is_const(node.input(3)):
                sizes = im.const(node.input(3))
            else:
                size_tensor = node.input(3)
    if scales is not None and scales.size == 0:
        scales = None
    if axes is not None:
        norm = [int(x) % 4 for x in axes]
        if norm != [2, 3]:
            raise _unsupported(node, f"axes {list(axes)}: only the spatial axes [2, 3] can be resized")
        if scales is not None:
            scales = np.concatenate([[1, 1], np.ravel(scales)]).astype(np.float32)
        if sizes is not None:
            raise _unsupported(node, "sizes together with axes")
    attrs = {}
    if scales is not None:
        scales = np.ravel(scales)
        if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
            raise _unsupported(node, f"scales {scales.tolist()}: only the H and W axes can be resized")
        attrs["scale"] = [float(scales[2]), float(scales[3])]
    elif sizes is not None:
        attrs["out_size"] = _ints(sizes)[-2:]
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
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        if ctm == "tf_crop_and_resize":
            raise _unsupported(node, "coordinate_transformation_mode 'tf_crop_and_resize'")
        if mode == "nearest":
            attrs["nearest_mode"] = a.get("nearest_mode", "round_prefer_floor")
    attrs["coordinate_transformation_mode"] = ctm
    attrs["align_corners"] = ctm == "align_corners"
    op_type = "nearest_interp" if mode == "nearest" else "bilinear_interp"
    inputs = [node.inputs[0]] + ([size_tensor] if size_tensor else [])
    im.emit(op_type, inputs, [node.outputs[0]], attrs, node.name)


@_converter("Concat")
def _concat(im, node):
    axis = int(node.attrs["axis"])
    r = next((im.rank(n) for n in node.inputs if n and im.rank(n) is not None), None)
    if axis < 0 and r is not None:
        axis += r
    im.emit("concat", [n for n in node.inputs if n], [node.outputs[0]], {"axis": axis}, node.name)


@_converter("Reshape")
def _reshape(im, node):
    x, shape = node.inputs[0], node.input(1)
    if im.opset < 5:
        target = node.attrs["shape"]
        im.emit("reshape", [x], [node.outputs[0]], {"shape": _ints(target)}, node.name)
        return
    allowzero = int(node.attrs.get("allowzero", 0))
    if im.is_const(shape):
        target = _ints(im.const(shape))
        if allowzero and 0 in target:
            raise _unsupported(node, "allowzero=1 with a 0 in the target shape")
        im.emit("reshape", [x], [node.outputs[0]], {"shape": target}, node.name)
    else:
        if allowzero:
            raise _unsupported(node, "allowzero=1 with a shape computed at run time")
        im.emit("reshape", [x, shape], [node.outputs[0]], {}, node.name)


@_converter("Flatten")
def _flatten(im, node):
    x, y = node.inputs[0], node.outputs[0]
    axis = int(node.attrs.get("axis", 1))
    r = im.rank(x)
    if axis < 0:
        if r is None:
            raise _unsupported(node, "a negative axis needs the input rank")
        axis += r
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
    perm = node.attrs.get("perm")
    if perm is None:
        r = im.rank(node.inputs[0])
        if r is None:
            raise _unsupported(node, "Transpose without perm needs the input rank")
        perm = list(range(r))[::-1]
    im.emit("transpose", [node.inputs[0]], [node.outputs[0]], {"perm": _ints(perm)}, node.name)


def _axes_of(im, node, required: bool):
    if im.opset >= 13:
        axes = _const_input(im, node, 1, "axes")
    else:
        axes = node.attrs.get("axes")
    if axes is None:
        if required:
            raise _unsupported(node, "axes are required")
        return None
    return _ints(axes)


@_converter("Squeeze")
def _squeeze(im, node):
    axes = _axes_of(im, node, required=False)
    im.emit("squeeze", [node.inputs[0]], [node.outputs[0]], {"axes": axes}, node.name)


@_converter("Unsqueeze")
def _unsqueeze(im, node):
    axes = _axes_of(im, node, required=True)
    im.emit("unsqueeze", [node.inputs[0]], [node.outputs[0]], {"axes": axes}, node.name)


@_converter("Slice")
def _slice(im, node):
    x, y = node.inputs[0], node.outputs[0]
    if im.opset < 10:
        attrs = {"starts": _ints(node.attrs["starts"]), "ends": _ints(node.attrs["ends"])}
        if "axes" in node.attrs:
            attrs["axes"] = _ints(node.attrs["axes"])
        im.emit("slice", [x], [y], attrs, node.name)
        return
    extra = [node.input(i) for i in range(1, 5)]
    if all(not n or im.is_const(n) for n in extra):
        starts, ends = _ints(im.const(extra[0])), _ints(im.const(extra[1]))
        attrs = {"starts": starts, "ends": ends,
                 "axes": _ints(im.const(extra[2])) if extra[2] else list(range(len(starts))),
                 "steps": _ints(im.const(extra[3])) if extra[3] else [1] * len(starts)}
        im.emit("slice", [x], [y], attrs, node.name)
    else:
        while extra and not extra[-1]:
            extra.pop()
        im.emit("slice", [x] + extra, [y], {}, node.name)


@_converter("Shape")
def _shape(im, node):
    attrs = {}
    if "start" in node.attrs:
        attrs["start"] = int(node.attrs["start"])
    if "end" in node.attrs:
        attrs["end"] = int(node.attrs["end"])
    im.emit("shape", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Cast")
def _cast(im, node):
    from onnx import helper
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))).name
    im.emit("cast", [node.inputs[0]], [node.outputs[0]], {"dtype": dtype}, node.name)


@_converter("Gather")
def _gather(im, node):
    im.emit("gather", [node.inputs[0], node.inputs[1]], [node.outputs[0]], {"axis": int(node.attrs.get("axis", 0))},
            node.name)


@_converter("Expand")
def _expand(im, node):
    im.emit("expand", [node.inputs[0], node.inputs[1]], [node.outputs[0]], {}, node.name)


@_converter("Split")
def _split(im, node):
    axis = int(node.attrs.get("axis", 0))
    if im.opset >= 13:
        split = _const_input(im, node, 1, "split sizes")
    else:
        split = node.attrs.get("split")
    if split is None:
        shape = im.shape_of(node.inputs[0])
        dim = None if shape is None else shape[axis]
        if dim is None:
            raise _unsupported(node, "an equal split needs a static size along the axis")
        n = len(node.outputs)
        split = [dim // n] * n
    start = 0
    for k, (out, size) in enumerate(zip(node.outputs, _ints(split))):
        attrs = {"axes": [axis], "starts": [start], "ends": [start + size], "steps": [1]}
        if out:
            im.emit("slice", [node.inputs[0]], [out], attrs, f"{node.name}/{k}" if k else node.name)
        start += size


# ------------------------------------------------------------------------------------------------------
# partial shape rules, by refquant op type (None = unknown); run as ops are emitted
# ------------------------------------------------------------------------------------------------------
def _same(im, op, ins):
    return ins[0]


def _rule_conv(im, op, ins):
    x, w = ins[0], ins[1]
    if x is None or w is None:
        return None if w is None else (None, w[0], None, None)
    s, p, d = op.attrs["strides"], op.attrs["paddings"], op.attrs["dilations"]
    return (x[0], w[0], _conv_len(x[2], w[2], s[0], p[0], p[2], d[0]), _conv_len(x[3], w[3], s[1], p[1], p[3], d[1]))


def _rule_conv_t(im, op, ins):
    x, w = ins[0], ins[1]
    if w is None:
        return None
    g = op.attrs.get("groups", 1)
    if x is None:
        return (None, w[1] * g, None, None)
    s, p, d, o = op.attrs["strides"], op.attrs["paddings"], op.attrs["dilations"], op.attrs["output_padding"]
    hw = [None if x[2 + i] is None else (x[2 + i] - 1) * s[i] - p[i] - p[i + 2] + d[i] * (w[2 + i] - 1) + o[i] + 1
          for i in range(2)]
    return (x[0], w[1] * g, hw[0], hw[1])


def _rule_pool(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    if op.attrs.get("global_pooling"):
        return (x[0], x[1], 1, 1)
    k, s, p, c = op.attrs["ksize"], op.attrs["strides"], op.attrs["paddings"], op.attrs["ceil_mode"]
    return (x[0], x[1], _pool_len(x[2], k[0], s[0], p[0], p[2], c), _pool_len(x[3], k[1], s[1], p[1], p[3], c))


def _rule_binary(im, op, ins):
    return _broadcast(ins[0], ins[1])


def _rule_mul(im, op, ins):
    x, w = ins
    if x is None or w is None:
        return None
    return tuple(x[:op.attrs["x_num_col_dims"]]) + tuple(w[op.attrs["y_num_col_dims"]:])


def _rule_matmul(im, op, ins):
    a, b = ins
    if a is None or b is None:
        return None
    if op.attrs.get("trans_x") and len(a) >= 2:
        a = a[:-2] + (a[-1], a[-2])
    if op.attrs.get("trans_y") and len(b) >= 2:
        b = b[:-2] + (b[-1], b[-2])
    if len(a) == 1 and len(b) == 1:
        return ()
    if len(a) == 1:
        return b[:-2] + (b[-1],)
    if len(b) == 1:
        return a[:-1]
    batch = _broadcast(a[:-2], b[:-2])
    return batch + (a[-2], b[-1])


def _rule_reshape(im, op, ins):
    x = ins[0]
    if len(op.inputs) > 1 and op.inputs[1]:
        sname = op.inputs[1]
        target = [int(v) for v in im.consts[sname].ravel()] if im.is_const(sname) else im.values.get(sname)
        if target is None:
            s = ins[1]
            return None if s is None or s[0] is None else (None,) * s[0]
    else:
        target = list(op.attrs["shape"])
    out = []
    for i, t in enumerate(target):
        if t == 0:
            out.append(x[i] if x is not None and i < len(x) else None)
        elif t is None or t < 0:
            out.append(None)
        else:
            out.append(t)
    if -1 in target and x is not None and None not in x and None not in out:
        total = int(np.prod(x))
        known = int(np.prod([d for d in out if d is not None])) if out else 1
        out[target.index(-1)] = total // known if known else None
    return tuple(out)


def _rule_flatten(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    r = len(x)
    a, b = op.attrs.get("start_axis", 1) % max(r, 1), op.attrs.get("stop_axis", -1) % max(r, 1)
    mid = x[a:b + 1]
    prod = None if None in mid else int(np.prod(mid))
    return tuple(x[:a]) + (prod,) + tuple(x[b + 1:])


def _rule_transpose(im, op, ins):
    return None if ins[0] is None else tuple(ins[0][p] for p in op.attrs["perm"])


def _rule_concat(im, op, ins):
    known = [s for s in ins if s is not None]
    if not known:
        return None
    r = len(known[0])
    axis = op.attrs["axis"] % r
    out = list(known[0])
    out[axis] = None if len(known) < len(ins) or any(s[axis] is None for s in known) else sum(s[axis] for s in known)
    for s in known[1:]:
        for i in range(r):
            if i != axis and out[i] is None:
                out[i] = s[i]
    if all(im.is_const(n) or n in im.values for n in op.inputs) and r == 1:
        vals = []
        for n in op.inputs:
            vals.extend(int(v) for v in im.consts[n].ravel()) if im.is_const(n) else vals.extend(im.values[n])
        im.values[op.outputs[0]] = vals
    return tuple(out)


def _rule_squeeze(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    axes = op.attrs.get("axes")
    if not axes:
        if None in x:
            return None
        return tuple(d for d in x if d != 1)
    axes = {a % len(x) for a in axes}
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _rule_unsqueeze(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    if op.inputs[0] in im.values and len(x) == 0:
        im.values[op.outputs[0]] = list(im.values[op.inputs[0]])
    r = len(x) + len(op.attrs["axes"])
    out = list(x)
    for a in sorted(a % r for a in op.attrs["axes"]):
        out.insert(a, 1)
    return tuple(out)


def _rule_slice(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    if len(op.inputs) > 1:
        return (None,) * len(x)
    from ..ops.indexing import _slice_index
    out = list(x)
    axes = [a % len(x) for a in op.attrs.get("axes", range(len(op.attrs["starts"])))]
    steps = op.attrs.get("steps") or [1] * len(axes)
    for s, e, a, st in zip(op.attrs["starts"], op.attrs["ends"], axes, steps):
        if x[a] is None:
            out[a] = None
            continue
        out[a] = len(range(x[a])[_slice_index((x[a],), [s], [e], [0], [st])[0]])
    if len(x) == 1 and op.inputs[0] in im.values:
        vals = im.values[op.inputs[0]]
        im.values[op.outputs[0]] = vals[_slice_index((len(vals),), op.attrs["starts"], op.attrs["ends"], [0],
                                                     steps)[0]]
    return tuple(out)


def _rule_shape(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    dims = list(x)[slice(op.attrs.get("start", 0), op.attrs.get("end"))]
    im.values[op.outputs[0]] = dims
    return (len(dims),)


def _rule_cast(im, op, ins):
    if op.inputs[0] in im.values:
        im.values[op.outputs[0]] = list(im.values[op.inputs[0]])
    return ins[0]


def _rule_gather(im, op, ins):
    x, idx = ins
    if x is None or idx is None:
        return None
    axis = op.attrs.get("axis", 0) % len(x)
    if op.inputs[0] in im.values and im.is_const(op.inputs[1]) and len(x) == 1:
        vals = im.values[op.inputs[0]]
        picked = [vals[int(i)] for i in np.ravel(im.consts[op.inputs[1]])]
        im.values[op.outputs[0]] = picked
    return tuple(x[:axis]) + tuple(idx) + tuple(x[axis + 1:])


def _rule_reduce(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    dims = op.attrs.get("dim")
    axes = set(range(len(x))) if dims is None else {d % len(x) for d in dims}
    if op.attrs.get("keep_dim"):
        return tuple(1 if i in axes else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _rule_interp(im, op, ins):
    x = ins[0]
    if x is None:
        return None
    if len(op.inputs) > 1:
        return (x[0], x[1], None, None)
    if op.attrs.get("out_size") is not None:
        return (x[0], x[1]) + tuple(op.attrs["out_size"])
    s = op.attrs["scale"]
    hw = [None if x[2 + i] is None else int(math.floor(np.float32(x[2 + i]) * np.float32(s[i]))) for i in range(2)]
    return (x[0], x[1], hw[0], hw[1])


def _rule_expand(im, op, ins):
    x, s = ins
    if x is None or s is None or s[0] is None:
        return None
    return (None,) * max(len(x), s[0])


_SHAPE_RULES = {
    "conv2d": _rule_conv, "depthwise_conv2d": _rule_conv, "conv2d_transpose": _rule_conv_t,
    "batch_norm": _same, "pool2d": _rule_pool, "mul": _rule_mul, "matmul": _rule_matmul,
    "reshape": _rule_reshape, "flatten": _rule_flatten, "transpose": _rule_transpose, "concat": _rule_concat,
    "squeeze": _rule_squeeze, "unsqueeze": _rule_unsqueeze, "slice": _rule_slice, "shape": _rule_shape,
    "cast": _rule_cast, "gather": _rule_gather, "reduce_mean": _rule_reduce, "reduce_sum": _rule_reduce,
    "nearest_interp": _rule_interp, "bilinear_interp": _rule_interp, "expand": _rule_expand,
}
for _t in ("relu", "relu6", "sigmoid", "tanh", "sqrt", "exp", "log", "hard_sigmoid", "hard_swish", "clip", "scale",
           "softmax", "log_softmax"):
    _SHAPE_RULES[_t] = _same
for _t in ("elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_div", "elementwise_pow"):
    _SHAPE_RULES[_t] = _rule_binary


def supported_onnx_ops() -> list[str]:
    """The ONNX op types :func:`import_onnx` maps."""
    return sorted(_CONVERTERS)
