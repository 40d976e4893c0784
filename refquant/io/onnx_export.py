"""Export a refquant :class:`~refquant.graph.Model` to ONNX (the reverse of :mod:`refquant.io.onnx_import`).

``export_onnx(model, path=None, *, opset=13) -> onnx.ModelProto`` writes an NCHW ONNX graph that onnxruntime runs.
Three kinds of models export (the mapping table and the measured agreement are in ``docs/onnx_export.md``):

* **float models**: every op maps onto standard ONNX ops (``conv2d`` -> Conv, ``batch_norm`` ->
  BatchNormalization, ``mul`` -> [Reshape] MatMul, Paddle's elementwise ``axis`` rule -> explicit reshapes, ...);
* **fake-quant models** (:func:`refquant.quant.quant_post_static`, QAT, :func:`refquant.quant.quant_post_dynamic`):
  activation quant-dequant ops become ``QuantizeLinear`` + ``DequantizeLinear`` (int8, zero point 0, scale
  ``T / 127``), frozen weights become int8 initializers read through a per-channel ``DequantizeLinear``;
* **INT8 graphs** (:func:`refquant.deploy.convert_to_int8`): uint8 tensors stay uint8 (with their scale and zero
  point), every INT8 op becomes the QDQ pattern ``DequantizeLinear -> Conv/Gemm -> [Relu|Clip] ->
  QuantizeLinear`` that onnxruntime fuses into ``QLinearConv``; the layout changes (``nhwc_to_nchw``,
  ``nchw_to_nhwc``) disappear because every ONNX tensor is NCHW.

Tensor names, graph input and output names are kept; a ``None`` dimension of a graph input becomes a symbolic
dimension. An op without a mapping raises :class:`refquant.UnsupportedOpError` naming the op type and the op.

Rounding: Paddle's fake-quant ops round half away from zero, ONNX ``QuantizeLinear`` rounds half to even, so a
value exactly on a tie can land 1 LSB apart (``round_type`` 0 ops, the ONNX format, round as ONNX does).
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from ..errors import UnsupportedOpError
from ..executor import infer_shapes
from ..graph import Model, Op
from .._files import write_atomic

FLT_MAX = float(np.finfo(np.float32).max)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("refquant.export_onnx needs the optional 'onnx' package: "
                          "pip install 'refquant[onnx]' (or pip install onnx)") from exc
    return onnx


def export_onnx(model: Model, path=None, *, opset: int = 13, weight_dtype: str = "int8"):
    """The ONNX ``ModelProto`` of ``model`` (opset ``opset``, >= 13); also written to ``path`` when given
    (atomically: a temporary file in the same directory, then ``os.replace``).

    ``weight_dtype``: how quantized weights are stored, "int8" (zero point 0, the usual QDQ form) or "uint8"
    (the same values + 128, zero point 128). onnxruntime's fast u8 x s8 kernels on x86-64 CPUs without VNNI
    saturate 16-bit pair sums (``vpmaddubsw``), which corrupts results of the fused ``QLinearConv``; there use
    "uint8" or the session option ``session.x64quantprecision=1`` (``docs/onnx_export.md``).

    Raises :class:`refquant.UnsupportedOpError` for an op with no ONNX mapping and ``ImportError`` when the
    optional ``onnx`` package is missing.
    """
    onnx = _require_onnx()
    opset = int(opset)
    if opset < 13:
        raise ValueError(f"export_onnx: opset must be >= 13, got {opset}")
    if weight_dtype not in ("int8", "uint8"):
        raise ValueError(f"export_onnx: weight_dtype must be 'int8' or 'uint8', got {weight_dtype!r}")
    proto = _Exporter(model, opset, onnx, weight_dtype).build()
    if path is not None:
        write_atomic(path, proto.SerializeToString())
    return proto


def _pads4(v) -> list[int]:
    v = [int(p) for p in v]
    return [v[0], v[1], v[0], v[1]] if len(v) == 2 else v[:4]


def _pair(v) -> list[int]:
    if isinstance(v, (int, np.integer)):
        return [int(v), int(v)]
    v = [int(x) for x in v]
    return v if len(v) == 2 else [v[0], v[0]]


def _levels(zero: int, unsigned: bool) -> int:
    """Levels of convert_to_int8's uint8 grid: zero 128 is s8 (127 levels); zero 0 is u8 (255 with unsigned)."""
    return 127 if int(zero) == 128 else (255 if unsigned else 127)


# ------------------------------------------------------------------------------------------------------
# the exporter
# ------------------------------------------------------------------------------------------------------
class _Exporter:
    def __init__(self, model: Model, opset: int, onnx, weight_dtype: str = "int8"):
        self.m = model
        self.opset = opset
        self.onnx = onnx
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: dict[str, object] = {}            # onnx name -> TensorProto
        self.alias: dict[str, str] = {}               # refquant tensor -> onnx tensor
        self.int_view: dict[str, str] = {}            # refquant tensor (integer-valued float) -> onnx int8 tensor
        self.qinfo: dict[str, tuple] = {}             # onnx uint8 tensor -> (float32 scale, zero)
        self.weight_cache: dict[str, str] = {}
        self.float_done: set[str] = set()               # int_view tensors already cast back to float
        self.outputs = set(model.outputs)
        self.names: set[str] = set(model.params) | set(model.inputs)
        for op in model.ops:
            self.names.update(n for n in op.inputs + op.outputs if n)
        self.node_names: set[str] = set()
        self.unsigned = bool(model.meta.get("int8", {}).get("unsigned", True))
        self.shapes, self.dynamic = self._shapes()
        self.op = None
        self.u8_weights = weight_dtype == "uint8"

    # ---- shapes ---------------------------------------------------------------------------------------
    def _shapes(self):
        """Partial shapes (None for a dimension that depends on a dynamic input dimension) and the set of
        (tensor, axis) that are dynamic."""
        shapes = infer_shapes(self.m, {}, partial=True, cost="exporting an op that needs its rank or a static "
                                                             "size is refused")
        dyn = {(n, i) for n, s in shapes.items() if s is not None for i, d in enumerate(s) if d is None}
        return shapes, dyn

    def shape(self, name) -> Optional[tuple]:
        return self.shapes.get(name)

    def rank(self, name) -> int:
        s = self.shapes.get(name)
        if s is None:
            raise self.unsupported(f"the rank of {name!r} is unknown (shape inference failed)")
        return len(s)

    def static_dim(self, name, axis) -> Optional[int]:
        s = self.shapes.get(name)
        if s is None or (name, axis % len(s)) in self.dynamic:
            return None
        return int(s[axis])

    # ---- names and nodes --------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def unsupported(self, why: str) -> UnsupportedOpError:
        op = self.op
        where = f"op {op.name!r} of type {op.type!r}" if op is not None else "model"
        return UnsupportedOpError(f"export_onnx: cannot export {where}: {why}")

    def node(self, op_type: str, inputs, outputs=None, name: str = "", domain: str = "", **attrs):
        """Add a node; ``outputs`` None gives one fresh output. Returns the output name (or the list)."""
        base = name or (self.op.name if self.op is not None else op_type) or op_type
        if outputs is None:
            outputs = [self.fresh(f"{base}/{op_type}")]
        elif isinstance(outputs, str):
            outputs = [outputs]
        nname, k = base, 1
        while nname in self.node_names:
            k += 1
            nname = f"{base}/{op_type}" if k == 2 else f"{base}/{op_type}_{k}"
        self.node_names.add(nname)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op_type, list(inputs), list(outputs), name=nname,
                                                domain=domain or None, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, value, base: str, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        name = self.fresh(base)
        self.inits[name] = self.numpy_helper.from_array(np.ascontiguousarray(arr), name)
        return name

    def f32(self, value, base: str) -> str:
        return self.const(np.asarray(value, dtype=np.float32), base)

    def i64(self, value, base: str) -> str:
        return self.const(np.asarray(value, dtype=np.int64), base)

    def x(self, name: str) -> str:
        """The ONNX tensor holding refquant tensor ``name`` (a float / original-dtype view)."""
        if not name:
            return ""
        while name in self.alias:
            name = self.alias[name]
        if name in self.m.params:
            if name not in self.inits:
                self.inits[name] = self.numpy_helper.from_array(np.ascontiguousarray(self.m.params[name]), name)
            return name
        if name in self.int_view and name not in self.float_done:
            # a quantize_linear output read as a float tensor: cast the int8 view back
            self.node("Cast", [self.int_view[name]], [name], name=f"{name}/cast", to=self.onnx.TensorProto.FLOAT)
            self.float_done.add(name)
        return name

    def param(self, name: str) -> Optional[np.ndarray]:
        while name in self.alias:
            name = self.alias[name]
        return self.m.params.get(name)

    def set_out(self, refname: str, onnx_name: str) -> None:
        """Make refquant tensor ``refname`` be ONNX tensor ``onnx_name`` (an Identity node for graph outputs)."""
        if refname == onnx_name:
            return
        if refname in self.outputs:
            self.node("Identity", [onnx_name], [refname], name=f"{refname}/identity")
        else:
            self.alias[refname] = onnx_name

    # ---- build ------------------------------------------------------------------------------------------
    def build(self):
        helper, onnx = self.helper, self.onnx
        for op in (part for graph_op in self.m.ops for part in _split_post_op(graph_op)):
            self.op = op
            fn = _EXPORTERS.get(op.type)
            if fn is None:
                raise UnsupportedOpError(f"export_onnx: unsupported op type {op.type!r} (op {op.name!r}): no ONNX "
                                         f"mapping")
            fn(self, op)
        self.op = None
        inputs = []
        for spec in self.m.input_specs:
            dims = [(f"{spec.name}_dim{i}" if i else "N") if d is None else int(d) for i, d in enumerate(spec.shape)]
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
            inputs.append(helper.make_tensor_value_info(spec.name, elem, dims))
        for name in self.m.outputs:
            src = self.x(name)
            if src != name:
                self.node("Identity", [src], [name], name=f"{name}/identity")
            if name in self.m.params or name in self.m.inputs:
                raise self.unsupported(f"graph output {name!r} is a parameter or an input")
        used = {n for nd in self.nodes for n in nd.input}
        inits = [t for n, t in self.inits.items() if n in used]
        outputs = [helper.make_empty_tensor_value_info(n) for n in self.m.outputs]
        graph = helper.make_graph(self.nodes, self.m.name or "refquant", inputs, outputs, initializer=inits)
        ms_domain = any(nd.domain == "com.microsoft" for nd in self.nodes)
        opsets = [helper.make_opsetid("", self.opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms_domain
                                                         else [])
        proto = helper.make_model(graph, producer_name="refquant", opset_imports=opsets)
        proto.ir_version = min(proto.ir_version, _ir_version_for(self.opset))
        # the graph outputs' types and shapes from ONNX shape inference, on a copy whose initializers are only
        # declared (graph inputs with their type and shape), so no weight bytes are serialized for it
        try:   # ONNX's own checker and inference refuse some graphs (e.g. through QDQ pairs): refquant's shapes stand in
            declared, small = [], []
            for t in inits:
                if int(np.prod(t.dims)) <= 4096:  # shapes, axes, scales: shape inference reads their values
                    small.append(t)
                    continue
                vi = helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                vi.type.tensor_type.shape.SetInParent()
                declared.append(vi)
            light = helper.make_graph(self.nodes, "shapes", inputs + declared, outputs, initializer=small)
            inferred = onnx.shape_inference.infer_shapes(helper.make_model(light, opset_imports=opsets))
            known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            warnings.warn(f"export_onnx: ONNX shape inference failed ({exc}); the graph outputs get refquant's ranks "
                          f"with symbolic dimensions", RuntimeWarning, stacklevel=3)
            known = {}
        for out in proto.graph.output:
            vi = known.get(out.name)
            if vi is not None and vi.type.tensor_type.elem_type and vi.type.tensor_type.HasField("shape"):
                out.type.CopyFrom(vi.type)
            else:
                out.type.tensor_type.elem_type = vi.type.tensor_type.elem_type if vi is not None and \
                    vi.type.tensor_type.elem_type else onnx.TensorProto.FLOAT
                # ONNX could not infer it (e.g. through QDQ pairs): refquant's own shape inference gives the rank,
                # every dimension stays symbolic
                rank = self._output_rank(out.name)
                if rank is not None:
                    for i in range(rank):
                        out.type.tensor_type.shape.dim.add().dim_param = f"{out.name}_d{i}"
        onnx.checker.check_model(proto)
        return proto

    def _output_rank(self, name):
        """Rank of graph output ``name`` from refquant's shape inference, or None."""
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    # ---- quantization helpers ---------------------------------------------------------------------------------
    def qdq_int8(self, x: str, threshold: np.ndarray, axis: Optional[int], clip: bool, out: str, bits: int = 8):
        """x -> [Clip(-T, T)] -> QuantizeLinear(int8, scale T/qmax) -> DequantizeLinear -> ``out``."""
        t = np.asarray(threshold, dtype=np.float32).reshape(-1)
        qmax = (1 << (bits - 1)) - 1
        if bits != 8 and not (bits == 16 and self.opset >= 21):
            raise self.unsupported(f"{bits}-bit activation quantization (ONNX QuantizeLinear: int8; int16 needs "
                                   f"opset 21)")
        qdt = np.int8 if bits == 8 else np.int16
        t_safe = np.where(t <= np.float32(1e-30), t + np.float32(1e-6), t).astype(np.float32)
        scale = (t_safe / np.float32(qmax)).astype(np.float32)
        per_channel = axis is not None and t.size > 1
        s = self.f32(scale if per_channel else scale.reshape(()), f"{out}@onnx_scale")
        z = self.const(np.zeros(t.size if per_channel else (), qdt), f"{out}@onnx_zero")
        src = self.x(x)
        if clip:
            if per_channel:
                r = self.rank(x)
                shape = [1] * r
                shape[axis % r] = t.size
                lo = self.f32((-t).reshape(shape), f"{out}@clip_lo")
                hi = self.f32(t.reshape(shape), f"{out}@clip_hi")
                src = self.node("Max", [src, lo])
                src = self.node("Min", [src, hi])
            else:
                src = self.node("Clip", [src, self.f32(-t[0], f"{out}@clip_lo"), self.f32(t[0], f"{out}@clip_hi")])
        ax = {"axis": int(axis)} if per_channel else {}
        q = self.node("QuantizeLinear", [src, s, z], **ax)
        self.node("DequantizeLinear", [q, s, z], [out], **ax)
        return q

    def dynamic_qdq(self, x: str, axis: Optional[int], out: str, bits: int):
        """Quant-dequant with T = max|x| computed at run time (per tensor, or per channel along ``axis``)."""
        if bits != 8:
            raise self.unsupported(f"{bits}-bit dynamic quantization")
        src = self.x(x)
        r = self.rank(x)
        a = self.node("Abs", [src])
        if axis is None:
            t = self.node("ReduceMax", [a], keepdims=0)
        else:
            axes = [i for i in range(r) if i != axis % r]
            if self.opset >= 18:  # axes became an input
                t = self.node("ReduceMax", [a, self.i64(axes, f"{out}@axes")], keepdims=0)
            else:
                t = self.node("ReduceMax", [a], axes=axes, keepdims=0)
        t = self.node("Max", [t, self.f32(np.float32(1e-30), f"{out}@tiny")])
        s = self.node("Div", [t, self.f32(np.float32(127), f"{out}@qmax")])
        ax = {"axis": int(axis % r)} if axis is not None else {}
        z = self.const(np.zeros((), np.int8), f"{out}@onnx_zero") if axis is None else None
        if axis is not None:
            shape = self.node("Shape", [s])
            z = self.node("ConstantOfShape", [shape], value=self.numpy_helper.from_array(np.zeros(1, np.int8)))
        if axis is not None:
            shape = [1] * r
            shape[axis % r] = -1
            tb = self.node("Reshape", [t, self.i64(shape, f"{out}@tshape")])
            clipped = self.node("Min", [self.node("Max", [src, self.node("Neg", [tb])]), tb])
        else:
            clipped = self.node("Min", [self.node("Max", [src, self.node("Neg", [t])]), t])
        q = self.node("QuantizeLinear", [clipped, s, z], **ax)
        self.node("DequantizeLinear", [q, s, z], [out], **ax)

    def weight(self, name: str) -> str:
        """A weight input: a fake-quant frozen weight of a quantized op becomes int8 + DequantizeLinear."""
        op = self.op
        w = self.param(name)
        if (w is None or w.dtype.kind != "f" or "quantization_type" not in op.attrs
                or f"{name}@scale" not in self.m.params or int(op.attrs.get("weight_bits", 8)) != 8
                or str(op.attrs.get("quantization_type", "")).startswith("post_weight")):
            return self.x(name)
        if name in self.weight_cache:
            return self.weight_cache[name]
        t = np.asarray(self.m.params[f"{name}@scale"], np.float32).reshape(-1)
        axis = op.attrs.get("weight_quant_axis")
        if t.size == 1:
            axis = None
        elif axis is None:
            from ..calibration import weight_channel_axis
            axis = weight_channel_axis(op.type)
        t_safe = np.where(t == 0, np.float32(1e-8), t).astype(np.float32)
        if axis is None:
            tt = t_safe[0]
        else:
            shape = [1] * w.ndim
            shape[axis] = t.size
            tt = t_safe.reshape(shape)
        q = np.rint(w.astype(np.float64) / tt * 127.0)
        if np.abs(q - w.astype(np.float64) / tt * 127.0).max(initial=0) > 1e-2 or np.abs(q).max(initial=0) > 127:
            # not a frozen 8-bit weight (e.g. QAT weights before freezing): keep it float
            return self.x(name)
        scale = (t_safe / np.float32(127)).astype(np.float32)
        qn, zero = self.int8_const(q, f"{name}@int8", () if axis is None else (t.size,))
        dq = self.fresh(f"{name}@dequantized")
        if axis is None:
            self.node("DequantizeLinear", [qn, self.f32(scale[0], f"{name}@onnx_scale"), zero], [dq],
                      name=f"{name}/dequantize")
        else:
            self.node("DequantizeLinear", [qn, self.f32(scale, f"{name}@onnx_scale"), zero], [dq],
                      name=f"{name}/dequantize", axis=int(axis))
        self.weight_cache[name] = dq
        return dq

    def int8_const(self, q, base, zero_shape):
        """An int8 weight initializer and its zero point initializer (``weight_dtype`` "uint8": + 128)."""
        q = np.asarray(q)
        if self.u8_weights:
            return (self.const((q.astype(np.int16) + 128).astype(np.uint8), f"{base}_u8"),
                    self.const(np.full(zero_shape, 128, np.uint8), f"{base}@zero"))
        return self.const(q.astype(np.int8), base), self.const(np.zeros(zero_shape, np.int8), f"{base}@zero")

    # ---- INT8 graphs ---------------------------------------------------------------------------------------
    def u8(self, name: str) -> tuple[str, float, int]:
        """(onnx tensor, scale, zero) of a uint8 tensor of an INT8 graph."""
        src = self.x(name)
        if src not in self.qinfo:
            raise self.unsupported(f"uint8 input {name!r} has no known scale (not produced by an INT8 op)")
        s, z = self.qinfo[src]
        return src, s, z

    def dq_u8(self, name: str) -> tuple[str, float, int]:
        src, s, z = self.u8(name)
        out = self.node("DequantizeLinear", [src, self.f32(s, f"{src}@onnx_scale"),
                                             self.const(np.array(z, np.uint8), f"{src}@onnx_zero")])
        return out, s, z


def _ir_version_for(opset: int) -> int:
    # onnxruntime loads IR versions up to the onnx release it was built with; keep the one the opset needs
    if opset <= 14:
        return 7
    if opset <= 18:
        return 8
    if opset <= 20:
        return 9
    return 10


# ------------------------------------------------------------------------------------------------------
# one function per refquant op type
# ------------------------------------------------------------------------------------------------------
_EXPORTERS: dict = {}


def _exporter(*types):
    def wrap(fn):
        for t in types:
            _EXPORTERS[t] = fn
        return fn
    return wrap


def _split_post_op(op):
    """An INT8 op with a ``chain`` post-op (convert_to_int8's fusion) exports as the op with a float output followed
    by its ``fused_scalar_chain``; any other op as itself."""
    if not op.attrs.get("chain"):
        return [op]
    mid = f"{op.name}@before_chain"
    attrs = {k: v for k, v in op.attrs.items() if k != "chain"}
    return [Op(op.type, list(op.inputs), [mid], attrs, op.name),
            Op("fused_scalar_chain", [mid], list(op.outputs), dict(op.attrs["chain"]), f"{op.name}@chain")]


def supported_op_types() -> list[str]:
    """The refquant op types :func:`export_onnx` maps."""
    return sorted(_EXPORTERS)


@_exporter("conv2d", "depthwise_conv2d")
def _conv(ex, op):
    a = op.attrs
    w = ex.param(op.inputs[1])
    inputs = [ex.x(op.inputs[0]), ex.weight(op.inputs[1])]
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs.append(ex.x(op.inputs[2]))
    kernel = list(w.shape[2:]) if w is not None else None
    ex.node("Conv", inputs, [op.outputs[0]], group=int(a.get("groups", 1)), strides=_pair(a.get("strides", [1, 1])),
            pads=_pads4(a.get("paddings", [0, 0, 0, 0])), dilations=_pair(a.get("dilations", [1, 1])),
            kernel_shape=kernel)


@_exporter("conv2d_transpose")
def _conv_t(ex, op):
    a = op.attrs
    inputs = [ex.x(op.inputs[0]), ex.weight(op.inputs[1])]
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs.append(ex.x(op.inputs[2]))
    ex.node("ConvTranspose", inputs, [op.outputs[0]], group=int(a.get("groups", 1)),
            strides=_pair(a.get("strides", [1, 1])), pads=_pads4(a.get("paddings", [0, 0, 0, 0])),
            dilations=_pair(a.get("dilations", [1, 1])), output_padding=_pair(a.get("output_padding", [0, 0])))


@_exporter("batch_norm")
def _batch_norm(ex, op):
    ex.node("BatchNormalization", [ex.x(n) for n in op.inputs[:5]], [op.outputs[0]],
            epsilon=float(op.attrs.get("epsilon", 1e-5)), momentum=float(op.attrs.get("momentum", 0.9)))


@_exporter("layer_norm")
def _layer_norm(ex, op):
    x = op.inputs[0]
    r = ex.rank(x)
    begin = int(op.attrs.get("begin_norm_axis", 1)) % r
    eps = float(op.attrs.get("epsilon", 1e-5))
    norm_shape = ex.shape(x)[begin:]
    if None in norm_shape:
        raise ex.unsupported(f"layer_norm over dynamic axes (input shape {ex.shape(x)})")
    ins = [ex.x(x)]
    affine = []
    for i in (1, 2):
        n = op.inputs[i] if len(op.inputs) > i else ""
        if n and ex.param(n) is not None:
            affine.append(ex.f32(ex.param(n).reshape(norm_shape), f"{n}@{op.name}"))
        elif n:
            affine.append(ex.node("Reshape", [ex.x(n), ex.i64(list(norm_shape), f"{n}@shape")]))
        else:
            affine.append("")
    y = op.outputs[0]
    if ex.opset >= 17:
        scale = affine[0] or ex.f32(np.ones(norm_shape, np.float32), f"{y}@ones")
        ex.node("LayerNormalization", ins + [scale] + ([affine[1]] if affine[1] else []), [y], axis=begin,
                epsilon=eps)
        return
    axes = list(range(begin, r))
    mean = ex.node("ReduceMean", ins, axes=axes, keepdims=1)
    d = ex.node("Sub", [ins[0], mean])
    var = ex.node("ReduceMean", [ex.node("Mul", [d, d])], axes=axes, keepdims=1)
    std = ex.node("Sqrt", [ex.node("Add", [var, ex.f32(np.float32(eps), f"{y}@eps")])])
    out = ex.node("Div", [d, std]) if (affine[0] or affine[1]) else ex.node("Div", [d, std], [y])
    if affine[0]:
        out = ex.node("Mul", [out, affine[0]], None if affine[1] else [y])
    if affine[1]:
        ex.node("Add", [out, affine[1]], [y])


def _unary(onnx_type):
    def fn(ex, op):
        ex.node(onnx_type, [ex.x(op.inputs[0])], [op.outputs[0]])
    return fn


for _rq, _ox in [("relu", "Relu"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh"), ("sqrt", "Sqrt"), ("exp", "Exp"),
                 ("log", "Log")]:
    _EXPORTERS[_rq] = _unary(_ox)


def _clip(ex, x_onnx, lo, hi, out, base):
    ins = [x_onnx, "" if lo is None else ex.f32(np.float32(lo), f"{base}@min")]
    if hi is not None:
        ins.append(ex.f32(np.float32(hi), f"{base}@max"))
    while ins and not ins[-1]:
        ins.pop()
    return ex.node("Clip", ins, out)


@_exporter("relu6")
def _relu6(ex, op):
    _clip(ex, ex.x(op.inputs[0]), 0.0, float(op.attrs.get("threshold", 6.0)), [op.outputs[0]], op.outputs[0])


@_exporter("clip")
def _clip_op(ex, op):
    lo, hi = float(op.attrs.get("min", -np.inf)), float(op.attrs.get("max", np.inf))
    lo = None if lo == -np.inf else max(lo, -FLT_MAX)
    hi = None if hi == np.inf else min(hi, FLT_MAX)
    _clip(ex, ex.x(op.inputs[0]), lo, hi, [op.outputs[0]], op.outputs[0])


@_exporter("hard_sigmoid")
def _hard_sigmoid(ex, op):
    ex.node("HardSigmoid", [ex.x(op.inputs[0])], [op.outputs[0]], alpha=float(op.attrs.get("slope", 0.2)),
            beta=float(op.attrs.get("offset", 0.5)))


@_exporter("hard_swish")
def _hard_swish(ex, op):
    t, s, o = (float(op.attrs.get(k, d)) for k, d in (("threshold", 6.0), ("scale", 6.0), ("offset", 3.0)))
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    if (t, s, o) == (6.0, 6.0, 3.0) and ex.opset >= 14:
        ex.node("HardSwish", [x], [y])
        return
    u = ex.node("Add", [x, ex.f32(np.float32(o), f"{y}@offset")])
    u = _clip(ex, u, 0.0, t, None, y)
    ex.node("Div", [ex.node("Mul", [x, u]), ex.f32(np.float32(s), f"{y}@scale")], [y])


@_exporter("gelu")
def _gelu(ex, op):
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    approx = bool(op.attrs.get("approximate", False))
    if ex.opset >= 20:
        ex.node("Gelu", [x], [y], approximate="tanh" if approx else "none")
        return
    half = ex.f32(np.float32(0.5), f"{y}@half")
    one = ex.f32(np.float32(1.0), f"{y}@one")
    if approx:
        c = ex.f32(np.float32(np.sqrt(2 / np.pi)), f"{y}@c")
        k = ex.f32(np.float32(0.044715), f"{y}@k")
        x3 = ex.node("Mul", [ex.node("Mul", [x, x]), x])
        inner = ex.node("Mul", [c, ex.node("Add", [x, ex.node("Mul", [k, x3])])])
        t = ex.node("Tanh", [inner])
    else:
        t = ex.node("Erf", [ex.node("Div", [x, ex.f32(np.float32(np.sqrt(2.0)), f"{y}@sqrt2")])])
    ex.node("Mul", [ex.node("Mul", [half, x]), ex.node("Add", [one, t])], [y])


@_exporter("softmax", "log_softmax")
def _softmax(ex, op):
    ex.node("Softmax" if op.type == "softmax" else "LogSoftmax", [ex.x(op.inputs[0])], [op.outputs[0]],
            axis=int(op.attrs.get("axis", -1)))


@_exporter("scale")
def _scale(ex, op):
    s, b = float(op.attrs.get("scale", 1.0)), float(op.attrs.get("bias", 0.0))
    after = bool(op.attrs.get("bias_after_scale", True))
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    steps = []
    if after:
        if s != 1.0:
            steps.append(("Mul", s))
        if b != 0.0:
            steps.append(("Add", b))
    else:
        if b != 0.0:
            steps.append(("Add", b))
        if s != 1.0:
            steps.append(("Mul", s))
    if not steps:
        ex.set_out(y, x)
        return
    cur = x
    for k, (kind, v) in enumerate(steps):
        cur = ex.node(kind, [cur, ex.f32(np.float32(v), f"{y}@{kind.lower()}")],
                      [y] if k == len(steps) - 1 else None)


@_exporter("dropout")
def _dropout(ex, op):
    impl = op.attrs.get("dropout_implementation", "upscale_in_train")
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    if impl == "upscale_in_train":
        ex.set_out(y, x)
    else:
        p = float(op.attrs.get("dropout_prob", 0.5))
        ex.node("Mul", [x, ex.f32(np.float32(1.0 - p), f"{y}@keep")], [y])


def _elementwise(onnx_type):
    def fn(ex, op):
        x, y = op.inputs[0], op.inputs[1]
        axis = int(op.attrs.get("axis", -1))
        xs, ys = [ex.x(x), ex.x(y)]
        if axis != -1:
            rx, ry = ex.rank(x), ex.rank(y)
            if rx != ry:
                small, big_rank = (1, rx) if rx > ry else (0, ry)
                sname = (x, y)[small]
                srank = min(rx, ry)
                trailing = big_rank - axis - srank
                if axis < 0 or trailing < 0:
                    raise ex.unsupported(f"elementwise axis {axis} does not fit ranks {rx} and {ry}")
                if trailing:
                    p = ex.param(sname)
                    if p is not None:
                        new = ex.const(p.reshape(p.shape + (1,) * trailing), f"{sname}@{op.name}")
                    else:
                        new = ex.node("Unsqueeze", [(xs, ys)[small],
                                                    ex.i64(list(range(srank, srank + trailing)), f"{sname}@axes")])
                    if small:
                        ys = new
                    else:
                        xs = new
        ex.node(onnx_type, [xs, ys], [op.outputs[0]])
    return fn


for _rq, _ox in [("elementwise_add", "Add"), ("elementwise_sub", "Sub"), ("elementwise_mul", "Mul"),
                 ("elementwise_div", "Div"), ("elementwise_pow", "Pow")]:
    _EXPORTERS[_rq] = _elementwise(_ox)


@_exporter("pool2d")
def _pool(ex, op):
    a = op.attrs
    kind = a.get("pooling_type", "max")
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    if a.get("adaptive"):
        raise ex.unsupported("adaptive pooling")
    if kind not in ("max", "avg"):
        raise ex.unsupported(f"pooling_type {kind!r}")
    if a.get("global_pooling", False):
        ex.node("GlobalMaxPool" if kind == "max" else "GlobalAveragePool", [x], [y])
        return
    k, s = _pair(a["ksize"]), _pair(a.get("strides", [1, 1]))
    pads = _pads4(a.get("paddings", [0, 0, 0, 0]))
    ceil = bool(a.get("ceil_mode", False))
    if kind == "max":
        ex.node("MaxPool", [x], [y], kernel_shape=k, strides=s, pads=pads, ceil_mode=int(ceil))
        return
    exclusive = bool(a.get("exclusive", True))
    if ceil and not exclusive:
        shape = ex.shape(op.inputs[0])
        for axis in range(2):
            n = shape[2 + axis] if shape else None
            if n is None:
                raise ex.unsupported("ceil_mode with exclusive=False needs a static input size")
            lo, hi = pads[axis], pads[axis + 2]
            out = -(-(n + lo + hi - k[axis]) // s[axis]) + 1
            if (out - 1) * s[axis] >= n + lo:
                out -= 1
            if (out - 1) * s[axis] + k[axis] > n + lo + hi:
                raise ex.unsupported("ceil_mode with exclusive=False where the last window runs past the padding "
                                     "(ONNX divides by the clipped window, Paddle by kh*kw)")
    ex.node("AveragePool", [x], [y], kernel_shape=k, strides=s, pads=pads, ceil_mode=int(ceil),
            count_include_pad=0 if exclusive else 1)


@_exporter("flatten")
def _flatten(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    r = ex.rank(x)
    start = int(op.attrs.get("start_axis", 1)) % max(r, 1)
    stop = int(op.attrs.get("stop_axis", -1)) % max(r, 1)
    src = ex.x(x)
    if start == 1 and stop == r - 1:
        ex.node("Flatten", [src], [y], axis=1)
        _propagate_q(ex, src, y)
        return
    tail = [ex.static_dim(x, i) for i in range(stop + 1, r)]
    if None not in tail:
        target = ex.i64([0] * start + [-1] + tail, f"{y}@shape")
    else:
        shp = ex.node("Shape", [src])
        head = ex.node("Slice", [shp, ex.i64([0], f"{y}@s0"), ex.i64([start], f"{y}@e0")])
        rest = ex.node("Slice", [shp, ex.i64([stop + 1], f"{y}@s1"), ex.i64([r], f"{y}@e1")])
        target = ex.node("Concat", [head, ex.i64([-1], f"{y}@m1"), rest], axis=0)
    ex.node("Reshape", [src, target], [y])
    _propagate_q(ex, src, y)


def _propagate_q(ex, src, out):
    if src in ex.qinfo:
        ex.qinfo[out] = ex.qinfo[src]


@_exporter("reshape")
def _reshape(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    if len(op.inputs) > 1 and op.inputs[1]:
        p = ex.param(op.inputs[1])
        shape = ex.i64(p.reshape(-1), f"{y}@shape") if p is not None else \
            ex.node("Cast", [ex.x(op.inputs[1])], to=ex.onnx.TensorProto.INT64)
    else:
        shape = ex.i64([int(v) for v in op.attrs["shape"]], f"{y}@shape")
    src = ex.x(x)
    ex.node("Reshape", [src, shape], [y])
    _propagate_q(ex, src, y)


@_exporter("transpose")
def _transpose(ex, op):
    src = ex.x(op.inputs[0])
    ex.node("Transpose", [src], [op.outputs[0]], perm=[int(p) for p in op.attrs["perm"]])
    _propagate_q(ex, src, op.outputs[0])


@_exporter("concat")
def _concat(ex, op):
    ex.node("Concat", [ex.x(n) for n in op.inputs if n], [op.outputs[0]], axis=int(op.attrs.get("axis", 0)))


@_exporter("squeeze", "unsqueeze")
def _squeeze(ex, op):
    axes = op.attrs.get("axes")
    ins = [ex.x(op.inputs[0])]
    if axes:
        ins.append(ex.i64([int(a) for a in axes], f"{op.outputs[0]}@axes"))
    elif op.type == "unsqueeze":
        raise ex.unsupported("unsqueeze without axes")
    ex.node("Squeeze" if op.type == "squeeze" else "Unsqueeze", ins, [op.outputs[0]])


@_exporter("slice")
def _slice(ex, op):
    y = op.outputs[0]
    if len(op.inputs) > 1:
        ins = [ex.x(op.inputs[0])] + [ex.x(n) if n else "" for n in op.inputs[1:]]
        while ins and not ins[-1]:
            ins.pop()
        ex.node("Slice", ins, [y])
        return
    a = op.attrs
    starts = [int(v) for v in a["starts"]]
    ends = [int(v) for v in a["ends"]]
    axes = [int(v) for v in a.get("axes") or range(len(starts))]
    steps = [int(v) for v in a.get("steps") or [1] * len(starts)]
    ex.node("Slice", [ex.x(op.inputs[0]), ex.i64(starts, f"{y}@starts"), ex.i64(ends, f"{y}@ends"),
                      ex.i64(axes, f"{y}@axes"), ex.i64(steps, f"{y}@steps")], [y])


@_exporter("shape")
def _shape(ex, op):
    y = op.outputs[0]
    start, end = op.attrs.get("start"), op.attrs.get("end")
    if start is None and end is None:
        ex.node("Shape", [ex.x(op.inputs[0])], [y])
    elif ex.opset >= 15:
        ex.node("Shape", [ex.x(op.inputs[0])], [y], start=None if start is None else int(start),
                end=None if end is None else int(end))
    else:
        s = ex.node("Shape", [ex.x(op.inputs[0])])
        ex.node("Slice", [s, ex.i64([0 if start is None else int(start)], f"{y}@start"),
                          ex.i64([np.iinfo(np.int64).max if end is None else int(end)], f"{y}@end")], [y])


@_exporter("cast")
def _cast(ex, op):
    to = ex.helper.np_dtype_to_tensor_dtype(np.dtype(op.attrs["dtype"]))
    ex.node("Cast", [ex.x(op.inputs[0])], [op.outputs[0]], to=int(to))


@_exporter("gather")
def _gather(ex, op):
    ex.node("Gather", [ex.x(op.inputs[0]), ex.x(op.inputs[1])], [op.outputs[0]], axis=int(op.attrs.get("axis", 0)))


@_exporter("expand")
def _expand(ex, op):
    if len(op.inputs) > 1 and op.inputs[1]:
        shape = ex.x(op.inputs[1])
    else:
        shape = ex.i64([int(v) for v in op.attrs["shape"]], f"{op.outputs[0]}@shape")
    ex.node("Expand", [ex.x(op.inputs[0]), shape], [op.outputs[0]])


@_exporter("lookup_table")
def _lookup(ex, op):
    w_name, ids = op.inputs[0], op.inputs[1]
    pad = int(op.attrs.get("padding_idx", -1))
    w = ex.param(w_name)
    y = op.outputs[0]
    if pad >= 0 and w is not None:
        table = np.array(w, copy=True)
        table[pad] = 0
        ex.node("Gather", [ex.const(table, f"{w_name}@padded"), ex.x(ids)], [y], axis=0)
    elif pad >= 0:
        g = ex.node("Gather", [ex.x(w_name), ex.x(ids)], axis=0)
        mask = ex.node("Unsqueeze", [ex.node("Equal", [ex.x(ids), ex.const(np.array(pad, np.int64), f"{y}@pad")]),
                                     ex.i64([-1], f"{y}@axes")])
        ex.node("Where", [mask, ex.f32(np.float32(0), f"{y}@zero"), g], [y])
    else:
        ex.node("Gather", [ex.x(w_name), ex.x(ids)], [y], axis=0)


def _reduce_axes(ex, op, x):
    dims = op.attrs.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return None
    return [int(d) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]


@_exporter("reduce_mean", "reduce_sum", "mean")
def _reduce(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    axes = None if op.type == "mean" else _reduce_axes(ex, op, x)
    keep = 0 if op.type == "mean" else int(bool(op.attrs.get("keep_dim", False)))
    onnx_type = "ReduceSum" if op.type == "reduce_sum" else "ReduceMean"
    axes_as_input = onnx_type == "ReduceSum" or ex.opset >= 18
    ins = [ex.x(x)]
    if axes is None:
        ex.node(onnx_type, ins, [y], keepdims=keep)
    elif axes_as_input:
        ex.node(onnx_type, ins + [ex.i64(axes, f"{y}@axes")], [y], keepdims=keep)
    else:
        ex.node(onnx_type, ins, [y], axes=axes, keepdims=keep)


@_exporter("mul")
def _mul(ex, op):
    xc, yc = int(op.attrs.get("x_num_col_dims", 1)), int(op.attrs.get("y_num_col_dims", 1))
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    rx = ex.rank(x)
    src = ex.x(x)
    if rx != xc + 1:
        src = ex.node("Reshape", [src, ex.i64([0] * xc + [-1], f"{y}@xshape")])
    wp = ex.param(w)
    if wp is not None:
        wshape = wp.shape
        wsrc = ex.weight(w)
        if wp.ndim != 2 or yc != 1:
            wsrc = ex.node("Reshape", [wsrc, ex.i64([int(np.prod(wshape[:yc])), -1], f"{w}@mshape")])
    else:
        wshape = ex.shape(w)
        if wshape is None or None in wshape:
            raise ex.unsupported("mul with a computed weight of unknown shape")
        wsrc = ex.x(w)
        if len(wshape) != 2 or yc != 1:
            wsrc = ex.node("Reshape", [wsrc, ex.i64([-1, int(np.prod(wshape[yc:]))], f"{w}@mshape")])
    tail = list(wshape[yc:])
    if len(tail) == 1:
        ex.node("MatMul", [src, wsrc], [y])
    else:
        mm = ex.node("MatMul", [src, wsrc])
        ex.node("Reshape", [mm, ex.i64([0] * xc + [int(d) for d in tail], f"{y}@shape")], [y])


@_exporter("fc")
def _fc(ex, op):
    xc = int(op.attrs.get("in_num_col_dims", 1))
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    src = ex.x(x)
    if ex.rank(x) != xc + 1:
        src = ex.node("Reshape", [src, ex.i64([0] * xc + [-1], f"{y}@xshape")])
    act = op.attrs.get("activation_type", "") or ""
    if act not in ("", "relu"):
        raise ex.unsupported(f"activation_type {act!r}")
    has_b = len(op.inputs) > 2 and bool(op.inputs[2])
    out = ex.node("MatMul", [src, ex.weight(w)], [y] if not has_b and not act else None)
    if has_b:
        out = ex.node("Add", [out, ex.x(op.inputs[2])], [y] if not act else None)
    if act:
        ex.node("Relu", [out], [y])


@_exporter("matmul")
def _matmul(ex, op):
    ins = []
    for k, (name, flag) in enumerate(((op.inputs[0], "trans_x"), (op.inputs[1], "trans_y"))):
        src = ex.weight(name) if k == 1 else ex.x(name)
        if op.attrs.get(flag, False):
            r = ex.rank(name)
            if r >= 2:
                p = ex.param(name)
                if p is not None and src == name:
                    src = ex.const(np.swapaxes(p, -1, -2), f"{name}@T")
                else:
                    perm = list(range(r))
                    perm[-1], perm[-2] = perm[-2], perm[-1]
                    src = ex.node("Transpose", [src], perm=perm)
        ins.append(src)
    ex.node("MatMul", ins, [op.outputs[0]])


@_exporter("nearest_interp", "bilinear_interp")
def _interp(ex, op):
    a = op.attrs
    nearest = op.type == "nearest_interp"
    mode = a.get("coordinate_transformation_mode") or (
        "align_corners" if a.get("align_corners") else ("asymmetric" if nearest else "half_pixel"))
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    attrs = {"mode": "nearest" if nearest else "linear", "coordinate_transformation_mode": mode}
    if nearest:
        attrs["nearest_mode"] = a.get("nearest_mode") or ("round_prefer_ceil" if mode == "align_corners" else "floor")
    if len(op.inputs) > 1 and op.inputs[1]:
        shp = ex.node("Shape", [x])
        nc = ex.node("Slice", [shp, ex.i64([0], f"{y}@s"), ex.i64([2], f"{y}@e")])
        hw = ex.node("Cast", [ex.x(op.inputs[1])], to=ex.onnx.TensorProto.INT64)
        sizes = ex.node("Concat", [nc, hw], axis=0)
        ex.node("Resize", [x, "", "", sizes], [y], **attrs)
    elif a.get("out_size") is not None:
        shape = ex.shape(op.inputs[0])
        if shape is None or (op.inputs[0], 1) in ex.dynamic:
            raise ex.unsupported("out_size needs a static channel count")
        out = _pair(a["out_size"])
        n = ex.static_dim(op.inputs[0], 0)
        if n is None:
            shp = ex.node("Shape", [x])
            nc = ex.node("Slice", [shp, ex.i64([0], f"{y}@s"), ex.i64([2], f"{y}@e")])
            sizes = ex.node("Concat", [nc, ex.i64(out, f"{y}@hw")], axis=0)
        else:
            sizes = ex.i64([n, shape[1]] + out, f"{y}@sizes")
        ex.node("Resize", [x, "", "", sizes], [y], **attrs)
    else:
        sc = a["scale"]
        sc = [float(sc), float(sc)] if isinstance(sc, (int, float)) else [float(v) for v in sc][-2:]
        ex.node("Resize", [x, "", ex.f32([1.0, 1.0] + sc, f"{y}@scales")], [y], **attrs)


# ---- fake quantization ------------------------------------------------------------------------------
@_exporter("fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_dequantize_abs_max",
           "fake_quantize_dequantize_moving_average_abs_max", "fake_quantize_dequantize_range_abs_max")
def _fake_qdq(ex, op):
    bits = int(op.attrs.get("bit_length", 8))
    round_type = int(op.attrs.get("round_type", 1))
    channel = op.type == "fake_channel_wise_quantize_dequantize_abs_max"
    axis = None
    if channel:
        axis = int(op.attrs.get("quant_axis", 0))
        if axis < 0:
            axis += ex.rank(op.inputs[0])
    scale = op.inputs[1] if len(op.inputs) > 1 and op.inputs[1] else ""
    t = ex.param(scale) if scale else None
    if scale and t is None:
        raise ex.unsupported("a threshold computed at run time")
    if t is None:
        ex.dynamic_qdq(op.inputs[0], axis, op.outputs[0], bits)
        return
    ex.qdq_int8(op.inputs[0], t, axis, round_type == 1, op.outputs[0], bits)


@_exporter("quantize_linear")
def _quantize_linear_op(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    if op.attrs.get("only_observer", False):
        ex.set_out(y, ex.x(x))
        return
    bits = int(op.attrs.get("bit_length", 8))
    if bits != 8:
        raise ex.unsupported(f"{bits}-bit quantize_linear")
    t = ex.param(op.inputs[1])
    if t is None:
        raise ex.unsupported("a threshold computed at run time")
    t = np.asarray(t, np.float32).reshape(-1)
    axis = int(op.attrs.get("quant_axis", -1))
    per_channel = axis >= 0 and t.size > 1
    scale = (np.where(t <= np.float32(1e-30), t + np.float32(1e-6), t) / np.float32(127)).astype(np.float32)
    src = ex.x(x)
    if int(op.attrs.get("round_type", 0)) == 1:
        if per_channel:
            raise ex.unsupported("per-channel quantize_linear with round_type 1")
        src = _clip(ex, src, -float(t[0]), float(t[0]), None, y)
    s = ex.f32(scale if per_channel else scale.reshape(()), f"{y}@onnx_scale")
    z = ex.const(np.zeros(t.size if per_channel else (), np.int8), f"{y}@onnx_zero")
    q = ex.fresh(f"{y}@int8")
    ex.node("QuantizeLinear", [src, s, z], [q], **({"axis": axis} if per_channel else {}))
    ex.int_view[y] = q
    if y in ex.outputs:
        ex.x(y)  # graph output: the float (integer-valued) view


@_exporter("dequantize_linear")
def _dequantize_linear(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    if op.attrs.get("only_observer", False):
        ex.set_out(y, ex.x(x))
        return
    bits = int(op.attrs.get("bit_length", 8))
    t = ex.param(op.inputs[1])
    if t is None:
        raise ex.unsupported("a threshold computed at run time")
    t = np.asarray(t, np.float32).reshape(-1)
    axis = int(op.attrs.get("quant_axis", -1))
    per_channel = axis >= 0 and t.size > 1
    qmax = (1 << (bits - 1)) - 1
    scale = (t / np.float32(qmax)).astype(np.float32)
    src = ex.int_view.get(x)
    p = ex.param(x)
    zero = None
    if src is None and p is not None and p.dtype.kind in "iu":
        if p.dtype == np.int8 or (p.dtype.kind in "iu" and np.abs(p.astype(np.int64)).max(initial=0) <= 127):
            src, zero = ex.int8_const(p, f"{x}@int8", (t.size,) if per_channel else ())
        elif p.dtype == np.int16 and ex.opset >= 21:
            src = ex.x(x)
    if src is None:
        # a float (integer-valued) tensor, or an int16 weight below opset 21: multiply
        f = ex.x(x)
        if p is not None and p.dtype.kind != "f":
            f = ex.node("Cast", [f], to=ex.onnx.TensorProto.FLOAT)
        if per_channel:
            shape = [1] * ex.rank(x)
            shape[axis] = t.size
            sc = ex.f32(t.reshape(shape), f"{y}@threshold")
        else:
            sc = ex.f32(t[0], f"{y}@threshold")
        ex.node("Div", [ex.node("Mul", [f, sc]), ex.f32(np.float32(qmax), f"{y}@qmax")], [y])
        return
    s = ex.f32(scale if per_channel else scale.reshape(()), f"{y}@onnx_scale")
    if zero is not None:
        z = zero
    else:
        zdt = ex.helper.tensor_dtype_to_np_dtype(_elem_type(ex, src))
        z = ex.const(np.zeros(t.size if per_channel else (), zdt), f"{y}@onnx_zero")
    ex.node("DequantizeLinear", [src, s, z], [y], **({"axis": axis} if per_channel else {}))


def _elem_type(ex, onnx_name):
    t = ex.inits.get(onnx_name)
    if t is not None:
        return t.data_type
    return ex.onnx.TensorProto.INT8  # QuantizeLinear outputs written by this exporter


@_exporter("dequantize_weight")
def _dequantize_weight(ex, op):
    w, y = ex.param(op.inputs[0]), op.outputs[0]
    s = ex.param(op.inputs[1])
    if w is None or s is None:
        raise ex.unsupported("dequantize_weight of a computed tensor")
    s = np.asarray(s, np.float32).reshape(-1)
    axis = int(op.attrs.get("quant_axis", -1))
    per_channel = axis >= 0 and s.size > 1
    if w.dtype == np.int8 or (w.dtype == np.int16 and ex.opset >= 21):
        sc = ex.f32(s if per_channel else s.reshape(()), f"{y}@onnx_scale")
        z = ex.const(np.zeros(s.size if per_channel else (), w.dtype), f"{y}@onnx_zero")
        ex.node("DequantizeLinear", [ex.x(op.inputs[0]), sc, z], [y], **({"axis": axis} if per_channel else {}))
        return
    # int16 below opset 21 (DequantizeLinear is int8/uint8/int32 there): Cast + Mul, the same float32 product
    f = ex.node("Cast", [ex.x(op.inputs[0])], to=ex.onnx.TensorProto.FLOAT)
    if per_channel:
        shape = [1] * w.ndim
        shape[axis] = s.size
        sc = ex.f32(s.reshape(shape), f"{y}@scale")
    else:
        sc = ex.f32(s[0], f"{y}@scale")
    ex.node("Mul", [f, sc], [y])


@_exporter("lookup_table_dequant")
def _lookup_dequant(ex, op):
    w_name, s_name, ids = op.inputs
    w, t = ex.param(w_name), ex.param(s_name)
    if w is None or t is None:
        raise ex.unsupported("lookup_table_dequant of a computed table")
    if op.attrs.get("quantize_type", "abs_max") != "abs_max":
        raise ex.unsupported(f"quantize_type {op.attrs.get('quantize_type')!r}")
    qmax = (1 << (int(op.attrs.get("quantize_bits", 8)) - 1)) - 1
    t = np.asarray(t, np.float32).reshape(-1)
    y = op.outputs[0]
    pad = op.attrs.get("padding_idx", -1)
    pad = int(pad) if pad is not None else -1
    rows = ex.node("Cast", [ex.node("Gather", [ex.x(w_name), ex.x(ids)], axis=0)], to=ex.onnx.TensorProto.FLOAT)
    if t.size == 1:
        tt = ex.f32(t[0], f"{y}@threshold")
    else:
        tt = ex.node("Unsqueeze", [ex.node("Gather", [ex.f32(t, f"{y}@thresholds"), ex.x(ids)], axis=0),
                                   ex.i64([-1], f"{y}@axes")])
    out = ex.node("Div", [ex.node("Mul", [tt, rows]), ex.f32(np.float32(qmax), f"{y}@qmax")],
                  None if pad >= 0 else [y])
    if pad >= 0:
        mask = ex.node("Unsqueeze", [ex.node("Equal", [ex.x(ids), ex.const(np.array(pad, np.int64), f"{y}@pad")]),
                                     ex.i64([-1], f"{y}@axes2")])
        ex.node("Where", [mask, ex.f32(np.float32(0), f"{y}@zero"), out], [y])


# ---- INT8 graphs ------------------------------------------------------------------------------------------
@_exporter("nhwc_to_nchw", "nchw_to_nhwc")
def _layout(ex, op):
    src = ex.x(op.inputs[0])  # every ONNX tensor is NCHW already
    ex.set_out(op.outputs[0], src)
    _propagate_q(ex, src, ex.x(op.outputs[0]))


@_exporter("quantize_int8")
def _quantize_int8(ex, op):
    _quantize_linear(ex, ex.x(op.inputs[0]), op.outputs[0], op.attrs)


def _quantize_linear(ex, src, y, a):
    """QuantizeLinear of ONNX tensor ``src`` into refquant u8 tensor ``y`` (attributes scale_inv, zero, lo, hi)."""
    s = float(np.float32(1.0) / np.float32(a["scale_inv"]))
    zero, lo, hi = int(a["zero"]), int(a["lo"]), int(a["hi"])
    src = _u8_clip(ex, src, s, zero, lo, hi, y)
    ex.node("QuantizeLinear", [src, ex.f32(np.float32(s), f"{y}@onnx_scale"),
                               ex.const(np.array(zero, np.uint8), f"{y}@onnx_zero")], [y])
    ex.qinfo[y] = (s, zero)


@_exporter("fused_scalar_chain")
def _fused_scalar_chain(ex, op):
    a = op.attrs
    y, y_q = op.outputs
    t = ex.x(op.inputs[0])
    steps = [(k, onnx) for k, onnx in (("pre_mul", "Mul"), ("pre_add", "Add")) if k in a]
    post = [(k, onnx) for k, onnx in (("post_mul", "Mul"), ("post_add", "Add")) if k in a]
    for key, onnx in steps:
        t = ex.node(onnx, [t, ex.f32(np.float32(a[key]), f"{op.name}@{key}")])
    if a.get("hard_swish"):
        u = ex.node("Add", [t, ex.f32(np.float32(a["offset"]), f"{op.name}@offset")])
        u = _clip(ex, u, 0.0, float(a["threshold"]), None, op.name)
        t = ex.node("Div", [ex.node("Mul", [t, u]), ex.f32(np.float32(a["scale"]), f"{op.name}@scale")])
    for key, onnx in post:
        t = ex.node(onnx, [t, ex.f32(np.float32(a[key]), f"{op.name}@{key}")])
    if y:
        ex.node("Identity", [t], [y])
    if y_q:
        _quantize_linear(ex, t, y_q, a)


@_exporter("fused_channel_mul")
def _fused_channel_mul(ex, op):
    y, y_q = op.outputs
    f = ex.node("Mul", [ex.x(op.inputs[0]), ex.x(op.inputs[1])], [y] if y else None)
    if y_q:
        _quantize_linear(ex, f, y_q, op.attrs)


@_exporter("fused_elementwise_add")
def _fused_add(ex, op):
    y, y_q = op.outputs
    relu = op.attrs.get("fuse_activation", "") == "relu"
    f = ex.node("Add", [ex.x(op.inputs[0]), ex.x(op.inputs[1])], [y] if y and not relu else None)
    if relu:
        f = ex.node("Relu", [f], [y] if y else None)
    if y_q:
        _quantize_linear(ex, f, y_q, op.attrs)


def _u8_clip(ex, src, s, zero, lo, hi, base, act_min=None):
    """Clamp in float to what [lo, hi] of the uint8 grid allows beyond QuantizeLinear's own [0, 255] saturation.

    The s8 grid's lo = 1 (zero 128) is left to QuantizeLinear (values below -T then land on 0, not 1: 1 LSB);
    ``act_min`` forces a lower bound (a fused relu)."""
    lo_f = act_min
    if act_min is None and lo > 0 and not (zero == 128 and lo == 1):
        lo_f = (lo - zero) * s
    hi_f = (hi - zero) * s if hi < 255 else None
    if lo_f is None and hi_f is None:
        return src
    if hi_f is None and lo_f == 0.0:
        return ex.node("Relu", [src])
    return _clip(ex, src, lo_f, hi_f, None, base)


@_exporter("dequantize_int8")
def _dequantize_int8(ex, op):
    src = ex.x(op.inputs[0])
    y = op.outputs[0]
    ex.node("DequantizeLinear", [src, ex.f32(np.float32(op.attrs["scale"]), f"{y}@onnx_scale"),
                                 ex.const(np.array(int(op.attrs["zero"]), np.uint8), f"{y}@onnx_zero")], [y])


def _int8_epilogue(ex, op, acc_out, s_x):
    """After the float op on dequantized operands: the activation clamp, then QuantizeLinear for u8 outputs."""
    a = op.attrs
    y = op.outputs[0]
    if a.get("out_dtype", "u8") == "f32":
        lo, hi = a.get("lo"), a.get("hi")
        if lo is None and hi is None:
            ex.set_out(y, acc_out)  # (the float op already wrote y: _acc_out)
        elif hi is None and float(lo) == 0.0:
            ex.node("Relu", [acc_out], [y])
        else:
            _clip(ex, acc_out, None if lo is None else float(lo), None if hi is None else float(hi), [y], y)
        return
    zero, lo, hi = int(a.get("out_zero", 0)), int(a["lo"]), int(a["hi"])
    s_y = _out_scale(ex, op)
    src = _u8_clip(ex, acc_out, s_y, zero, lo, hi, y, act_min=0.0 if (lo == zero and zero == 0) else None)
    ex.node("QuantizeLinear", [src, ex.f32(np.float32(s_y), f"{y}@onnx_scale"),
                               ex.const(np.array(zero, np.uint8), f"{y}@onnx_zero")], [y])
    ex.qinfo[y] = (s_y, zero)


def _acc_out(op):
    """Outputs for the float op of an INT8 op: its own output name when nothing follows it (f32, no clamp)."""
    a = op.attrs
    if a.get("out_dtype", "u8") == "f32" and a.get("lo") is None and a.get("hi") is None:
        return [op.outputs[0]]
    return None


def _out_scale(ex, op):
    a = op.attrs
    if "out_threshold" not in a:
        raise ex.unsupported("a u8 output without out_threshold (re-run convert_to_int8 with this refquant)")
    return float(np.float32(float(a["out_threshold"]) / _levels(int(a.get("out_zero", 0)), ex.unsigned)))


def _weight_scales(ex, op, s_x, mult):
    """Per output channel: the int8 weight sign and the positive weight scale s_w with s_x * s_w / s_y = mult."""
    mult = np.asarray(mult, np.float64).reshape(-1)
    if op.attrs.get("out_dtype", "u8") == "u8":
        s_y = _out_scale(ex, op)
        s_w = mult * s_y / s_x
    else:
        s_w = mult / s_x
    sign = np.where(s_w < 0, -1, 1).astype(np.int32)
    s_w = np.abs(s_w)
    zero = s_w == 0
    s_w = np.where(zero, 1.0, s_w).astype(np.float32)
    return sign, s_w, zero


def _int8_weights(q, sign, zero, axis):
    shape = [1] * q.ndim
    shape[axis] = -1
    w = q.astype(np.int32) * sign.reshape(shape)
    w = np.where(zero.reshape(shape), 0, w)
    return np.clip(w, -127, 127).astype(np.int8)


def _dq_params(ex, w_int8, s_w, bias_q, sign, zero, s_x, base, axis):
    """DequantizeLinear nodes for the int8 weight (per channel along ``axis``) and the int32 bias."""
    n = s_w.size
    wq, wz = ex.int8_const(w_int8, f"{base}@w_int8", (n,))
    w = ex.node("DequantizeLinear", [wq, ex.f32(s_w, f"{base}@w_scale"), wz], axis=axis)
    b = np.asarray(bias_q, np.int64).reshape(-1) * sign
    b = np.where(zero, 0, b)
    b = np.clip(b, -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    b_scale = (np.float32(s_x) * s_w).astype(np.float32)
    bq = ex.const(b, f"{base}@b_int32")
    bias = ex.node("DequantizeLinear", [bq, ex.f32(b_scale, f"{base}@b_scale"),
                                        ex.const(np.zeros(n, np.int32), f"{base}@b_zero")], axis=0)
    return w, bias


@_exporter("conv2d_int8")
def _conv2d_int8(ex, op):
    from ..reference.qgemm import unpack_b
    a = op.attrs
    x, s_x, _ = ex.dq_u8(op.inputs[0])
    packed, bias_q, mult = (ex.param(n) for n in (op.inputs[1], op.inputs[3], op.inputs[4]))
    kh, kw = (int(v) for v in a["ksize"])
    K, N = int(a["K"]), int(a["N"])
    gemm_w = unpack_b(packed, K, N)                       # (kh*kw*cin, cout), rows in (kh, kw, cin) order
    cin = K // (kh * kw)
    q = gemm_w.reshape(kh, kw, cin, N).transpose(3, 2, 0, 1)  # (cout, cin, kh, kw)
    sign, s_w, zero = _weight_scales(ex, op, s_x, mult)
    w, b = _dq_params(ex, _int8_weights(q, sign, zero, 0), s_w, bias_q, sign, zero, s_x, op.name, 0)
    acc = ex.node("Conv", [x, w, b], _acc_out(op), kernel_shape=[kh, kw], strides=_pair(a.get("strides", [1, 1])),
                  pads=_pads4(a.get("paddings", [0, 0, 0, 0])), dilations=_pair(a.get("dilations", [1, 1])))
    _int8_epilogue(ex, op, acc, s_x)


@_exporter("depthwise_conv2d_int8")
def _dw_int8(ex, op):
    a = op.attrs
    x, s_x, _ = ex.dq_u8(op.inputs[0])
    wk, bias_q, mult = (ex.param(n) for n in op.inputs[1:4])
    kh, kw, c = wk.shape
    q = np.ascontiguousarray(wk.transpose(2, 0, 1))[:, None]  # (C, 1, kh, kw)
    sign, s_w, zero = _weight_scales(ex, op, s_x, mult)
    w, b = _dq_params(ex, _int8_weights(q, sign, zero, 0), s_w, bias_q, sign, zero, s_x, op.name, 0)
    acc = ex.node("Conv", [x, w, b], _acc_out(op), group=int(c), kernel_shape=[int(kh), int(kw)],
                  strides=_pair(a.get("strides", [1, 1])), pads=_pads4(a.get("paddings", [0, 0, 0, 0])),
                  dilations=_pair(a.get("dilations", [1, 1])))
    _int8_epilogue(ex, op, acc, s_x)


@_exporter("matmul_int8")
def _matmul_int8(ex, op):
    from ..reference.qgemm import unpack_b
    a = op.attrs
    x, s_x, _ = ex.dq_u8(op.inputs[0])
    packed, bias_q, mult = (ex.param(n) for n in (op.inputs[1], op.inputs[3], op.inputs[4]))
    K, N = int(a["K"]), int(a["N"])
    q = unpack_b(packed, K, N)                             # (K, N)
    sign, s_w, zero = _weight_scales(ex, op, s_x, mult)
    w, b = _dq_params(ex, _int8_weights(q, sign, zero, 1), s_w, bias_q, sign, zero, s_x, op.name, 1)
    if ex.rank(op.inputs[0]) == 2:
        acc = ex.node("Gemm", [x, w, b], _acc_out(op))
    else:  # (B, T, K) rows: MatMul broadcasts over the leading axes, then the bias
        acc = ex.node("Add", [ex.node("MatMul", [x, w]), b], _acc_out(op))
    _int8_epilogue(ex, op, acc, s_x)


@_exporter("max_pool2d_int8")
def _max_pool_int8(ex, op):
    a = op.attrs
    src = ex.x(op.inputs[0])
    y = op.outputs[0]
    if a.get("global_pooling"):
        shape = ex.shape(op.inputs[0])  # NHWC in the refquant graph
        if shape is None or (op.inputs[0], 1) in ex.dynamic or (op.inputs[0], 2) in ex.dynamic:
            raise ex.unsupported("global uint8 max pooling needs a static spatial size")
        ex.node("MaxPool", [src], [y], kernel_shape=[int(shape[1]), int(shape[2])])
    else:
        ex.node("MaxPool", [src], [y], kernel_shape=_pair(a["ksize"]), strides=_pair(a.get("strides", a["ksize"])),
                pads=_pads4(a.get("paddings", [0, 0, 0, 0])))
    _propagate_q(ex, src, y)
