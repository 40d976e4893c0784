"""Export a refquant :class:`~refquant.graph.Model` to ONNX (the reverse of :mod:`refquant.io.onnx.importer`).

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

The emitters (one function per refquant op type, grouped by op family in ``emitters/``) write ONNX nodes
through the :class:`_Exporter` methods (``ex.x``, ``ex.node``, ``ex.f32``, ...).
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from ..._files import write_atomic
from ...errors import UnsupportedOpError
from ...executor import infer_shapes
from ...graph import Model, Op
from .emitters import EXPORTERS
from .loader import require_onnx


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
    onnx = require_onnx("refquant.export_onnx")
    opset = int(opset)
    if opset < 13:
        raise ValueError(f"export_onnx: opset must be >= 13, got {opset}")
    if weight_dtype not in ("int8", "uint8"):
        raise ValueError(f"export_onnx: weight_dtype must be 'int8' or 'uint8', got {weight_dtype!r}")
    proto = _Exporter(model, opset, onnx, weight_dtype).build()
    if path is not None:
        write_atomic(path, proto.SerializeToString())
    return proto


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
            fn = EXPORTERS.get(op.type)
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
            from ...calibration import weight_channel_axis
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
    return sorted(EXPORTERS)
