"""``convert_to_int8``: a fake-quant model (static PTQ or QAT) -> a graph whose convs and matmuls run in integers.

What Paddle's Quant2Int8 oneDNN pass does (spec int8.md), on refquant's INT8 ops (:mod:`refquant.ops.int8`):

1. **Read the scales.** Each quantized conv2d / depthwise_conv2d / mul reads its input through a quant-dequant
   (``fake_quantize_dequantize_abs_max``, or a ``quantize_linear`` + ``dequantize_linear`` pair) with threshold
   ``T_x``; its weight is integer-valued (``q_w = rint(w_dq / T_w[c] * 127)``, exact) or int8 behind a
   ``dequantize_linear``. ``only_observer`` pairs are identities and disappear.
2. **Fuse** what follows the op while it has one reader: a bias ``elementwise_add``, an inference
   ``batch_norm`` (folded: ``f = gamma / sqrt(var + eps)``, ``b' = (b - mean) * f + beta``) and ``relu`` /
   ``relu6`` (a clamp in the epilogue). The op's accumulator means ``y = acc * s_x * s_w[c] * f[c]``, so the bias
   becomes int32 ``b_q = rint(b' / (s_x s_w[c] f[c]))`` and only the per-channel multiplier carries ``f``.
3. **Choose each output's form.** If every reader of the fused output quantizes it again (a quant-dequant in
   front of another INT8 op, possibly after a max pool or a flatten, which commute with quantization) with one
   threshold ``T_y``, the epilogue requantizes straight to that grid: ``q = clamp(rint(acc * mult[c]) + zero)``,
   ``mult = s_x s_w[c] f[c] / s_y``. Otherwise it dequantizes (``acc * s_x s_w[c] f[c]``, float32) for the float
   ops that follow.
4. **Forms of a tensor.** Float NCHW (the original name), float NHWC (``<name>@nhwc``) and uint8 NHWC / rows
   (``<name>@u8``); conversions (``quantize_int8``, ``dequantize_int8``, transposes) are added where a reader
   needs another form, once per tensor. Elementwise float ops (relu, relu6, residual adds) run on NHWC when all
   their inputs are NHWC, so INT8 convs with float outputs need no transpose around them.

Grids: an s8 tensor holds ``q`` in [-127, 127] stored as ``q + 128`` (zero 128); a tensor known to be >= 0
(after relu/relu6, or a max pool of one) is u8 with zero 0: ``scale = T / 255`` with ``unsigned=True`` (the
oneDNN pass's choice, more resolution), or ``T / 127`` with ``unsigned=False`` (the fake-quant model's own grid,
so the INT8 graph reproduces it up to rounding ties and float order: docs/int8.md states the tolerance).
Everything not listed runs in float, fed by dequantize ops: correct for any graph, fast where it matters.

``reduce_range=True`` halves the GEMM weights (conv and matmul, not depthwise): ``q7 = rint(q_w / 2)`` in
[-64, 64], weight step ``2 T_w / 127``, what oneDNN's weight reorder does on CPUs without VNNI and what ONNX
Runtime's ``reduce_range`` is for. Then every K pair has ``|w0| + |w1| <= 128``, the packed weights carry the
PAIRS_FIT_S16 flag, and AVX2 runs them on exact ``vpmaddubsw`` (about 1.3-1.5x the ``vpmaddwd`` kernel,
docs/int8_kernels.md). It costs one bit of weight resolution: outputs move away from the fake-quant model's
(docs/int8.md measures the accuracy), while the INT8 graph still equals its integer twin exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import UnsupportedOpError
from ..executor import freeze_inference_params, infer_shapes
from ..graph import Model, Op
from ..ops.conv import pads4, pair
from ..ops.registry import has_trait
from ..reference import qgemm as _ref_gemm

QDQ_TYPES = ("fake_quantize_dequantize_abs_max",)
ELEMENTWISE_NHWC = ("relu", "relu6", "elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_div",
                    "hard_sigmoid", "hard_swish", "sigmoid", "swish")
U8_TRANSPARENT = ("pool2d", "flatten")


@dataclass
class Fused:
    """One INT8 op to emit: the quantized op, what was fused behind it, and its scales."""
    op: Op
    kind: str                      # "gemm_conv" | "depthwise" | "matmul"
    x: str                         # the float input (before its quant-dequant)
    t_x: float
    q_w: np.ndarray                # integer weights as float32, the op's own layout
    t_w: np.ndarray                # per output channel
    bias: np.ndarray               # float64 (N,), folded
    factor: np.ndarray             # float64 (N,), batch-norm scale
    act: Optional[str] = None      # "relu" | "relu6"
    output: str = ""               # the fused group's float output name
    members: list = field(default_factory=list)  # indices of the fused ops


def _weight_ints(q: Model, w_name: str, axis_ops: dict):
    """Integer weights and per-channel thresholds of a quantized op's weight input (float or dequantize_linear)."""
    if w_name in axis_ops:  # onnx format: int8 parameter behind a dequantize_linear
        src, scale = axis_ops[w_name]
        return q.params[src].astype(np.float32), np.asarray(q.params[scale], np.float64).reshape(-1)
    w = q.params[w_name]
    t = np.asarray(q.params[f"{w_name}@scale"], np.float64).reshape(-1)
    return w, t


def _recover_ints(w_dq, t, axis):
    """``q = rint(w_dq / T_c * 127)``: the frozen weight was stored as ``q * T_c / 127``, so this is exact."""
    shape = [1] * w_dq.ndim
    shape[axis] = -1
    tt = np.where(t == 0, 1e-8, t).reshape(shape) if t.size > 1 else (t[0] or 1e-8)
    q = np.rint(w_dq.astype(np.float64) / tt * 127.0)
    if np.abs(q).max(initial=0) > 127:
        raise ValueError("convert_to_int8: a weight is outside its threshold (not a frozen 8-bit weight)")
    return q.astype(np.float32)


class _Converter:
    def __init__(self, qmodel: Model, unsigned: bool, reduce_range: bool = False):
        self.q = qmodel.copy()
        self.unsigned = unsigned
        self.reduce_range = reduce_range
        self.ops: list[Op] = []
        self.params = dict(self.q.params)
        self.forms: dict[str, dict] = {}      # name -> {form key: tensor name}
        self.nonneg: set[str] = set()
        self.shapes = self._shapes()

    # ---------------------------------------------------------------- analysis
    def _shapes(self):
        """Partial shapes (None where a dimension is dynamic); a shape rule that fails warns and leaves its op's
        outputs unknown."""
        shapes = infer_shapes(self.q, {}, partial=True, cost="convert_to_int8 decides without it (layout and "
                                                                 "bias fusions that need a rank or size)")
        return {n: s for n, s in shapes.items() if s is not None}

    def analyse(self):
        q = self.q
        self._drop_observers()
        self.qdq: dict[str, tuple[str, float]] = {}     # quant-dequant output -> (float input, threshold)
        self.weight_dq: dict[str, tuple[str, str]] = {}  # dequantize_linear output -> (int8 param, scale param)
        for op in q.ops:
            if op.type in QDQ_TYPES + ("quantize_linear", "dequantize_linear") \
                    and int(op.attrs.get("bit_length", 8)) != 8:
                raise UnsupportedOpError(f"convert_to_int8: op {op.name!r} ({op.type}) quantizes to "
                                         f"{op.attrs['bit_length']} bits; the INT8 graph runs 8-bit tensors only "
                                         f"(run the fake-quant model, or quantize with 8 bits)")
            if op.type in QDQ_TYPES:
                self.qdq[op.outputs[0]] = (op.inputs[0], float(q.params[op.inputs[1]].reshape(-1)[0]))
            elif op.type == "dequantize_linear" and op.inputs[0] in q.params:
                self.weight_dq[op.outputs[0]] = (op.inputs[0], op.inputs[1])
        self.producers = {o: i for i, op in enumerate(q.ops) for o in op.outputs if o}
        for op in q.ops:  # quantize_linear -> dequantize_linear activation pairs
            if op.type == "dequantize_linear" and op.inputs[0] not in q.params:
                src = q.ops[self.producers[op.inputs[0]]]
                if src.type == "quantize_linear":
                    self.qdq[op.outputs[0]] = (src.inputs[0], float(q.params[src.inputs[1]].reshape(-1)[0]))
        self.readers: dict[str, list[int]] = {}
        for i, op in enumerate(q.ops):
            for n in op.inputs:
                if n:
                    self.readers.setdefault(n, []).append(i)
        self.fused: dict[int, Fused] = {}
        self.skip: set[int] = set()
        for i, op in enumerate(q.ops):
            f = self._fuse(i, op)
            if f is not None:
                self.fused[i] = f
                self.skip.update(f.members[1:])

    def _drop_observers(self):
        """Remove ``only_observer`` quantize/dequantize pairs (identities) and read their input instead."""
        alias = {}
        keep = []
        for op in self.q.ops:
            if op.attrs.get("only_observer"):
                if op.type == "quantize_linear":
                    alias[op.outputs[0]] = op.inputs[0]
                else:
                    alias[op.outputs[0]] = alias.get(op.inputs[0], op.inputs[0])
                continue
            keep.append(op)
        for op in keep:
            op.inputs = [alias.get(n, n) for n in op.inputs]
        self.q.ops = keep

    def _only_reader(self, name):
        r = self.readers.get(name, [])
        return r[0] if len(r) == 1 and name not in self.q.outputs else None

    def _fuse(self, i, op) -> Optional[Fused]:
        q = self.q
        if "quantization_type" not in op.attrs or op.attrs.get("weight_bits", 8) != 8:
            return None
        if op.inputs[0] not in self.qdq or len(op.inputs) < 2:
            return None
        x, t_x = self.qdq[op.inputs[0]]
        if op.type in ("conv2d", "depthwise_conv2d"):
            w_dq, t_w = _weight_ints(q, op.inputs[1], self.weight_dq)
            groups = int(op.attrs.get("groups", 1))
            cout, cin_g = w_dq.shape[:2]
            if groups == 1:
                kind = "gemm_conv"
            elif cin_g == 1 and groups == cout:
                kind = "depthwise"
            else:
                return None
            n_out = cout
            axis = 0
        elif op.type == "mul":
            rank = len(self.shapes.get(x, ()))       # rows = every axis but the last (2-D fc, 3-D (B, T, H))
            if rank < 2 or op.attrs.get("x_num_col_dims", 1) != rank - 1 or op.attrs.get("y_num_col_dims", 1) != 1:
                return None
            w_dq, t_w = _weight_ints(q, op.inputs[1], self.weight_dq)
            kind, n_out, axis = "matmul", w_dq.shape[1], 1
        else:
            return None
        if t_w.size == 1:
            t_w = np.full(n_out, t_w[0])
        q_w = w_dq if op.inputs[1] in self.weight_dq else _recover_ints(w_dq, t_w, axis)
        bias = np.zeros(n_out)
        if len(op.inputs) > 2 and op.inputs[2]:
            bias = bias + q.params[op.inputs[2]].astype(np.float64).reshape(-1)
        f = Fused(op, kind, x, t_x, q_w, t_w, bias, np.ones(n_out), output=op.outputs[0], members=[i])
        while True:
            j = self._only_reader(f.output)
            if j is None or f.act is not None:
                break
            nxt = q.ops[j]
            other = [self._constant(n) for n in nxt.inputs if n != f.output]
            if (nxt.type == "elementwise_add" and len(other) == 1 and other[0] is not None and len(f.members) == 1
                    and self._is_channel_bias(other[0], nxt, kind, n_out, len(self.shapes.get(f.output, ())))):
                f.bias = f.bias + other[0].astype(np.float64).reshape(-1)
            elif nxt.type == "batch_norm" and nxt.inputs[0] == f.output:
                gamma, beta, mean, var = (q.params[n].astype(np.float64).reshape(-1) for n in nxt.inputs[1:5])
                scale = gamma / np.sqrt(var + float(nxt.attrs.get("epsilon", 1e-5)))
                f.bias = (f.bias - mean) * scale + beta
                f.factor = f.factor * scale
            elif nxt.type in ("relu", "relu6") and (nxt.type == "relu" or nxt.attrs.get("threshold", 6.0) == 6.0):
                f.act = nxt.type
            else:
                break
            f.members.append(j)
            f.output = nxt.outputs[0]
        return f

    def _constant(self, name):
        """The value of ``name`` if it is a parameter or a reshape of one (Paddle's conv bias: reshape2 of the
        (C,) bias to (1, C, 1, 1), then elementwise_add), else None."""
        if name in self.q.params:
            return self.q.params[name]
        producer = self.q.ops[self.producers[name]] if name in self.producers else None
        if producer is not None and producer.type in ("reshape", "reshape2") and producer.inputs[0] in self.q.params:
            from ..executor import run
            return run(Model([producer], {n: self.q.params[n] for n in producer.inputs if n in self.q.params},
                             [], [name]), {})[name]
        return None

    @staticmethod
    def _is_channel_bias(b, op, kind, n_out, rank):
        """A parameter that adds one value per output channel: (N,) on axis 1 of an NCHW conv output (Paddle's
        ``axis=1``) or (C, 1, 1) / (1, C, 1, 1); (N,) on the last axis of a matmul output of ``rank`` axes."""
        if b.size != n_out:
            return False
        if kind == "matmul":
            if b.ndim == 1:
                return op.attrs.get("axis", -1) in (-1, rank - 1)
            return b.shape[-1] == n_out and b.ndim <= rank
        return (b.ndim == 1 and op.attrs.get("axis", -1) == 1) or b.shape in ((n_out, 1, 1), (1, n_out, 1, 1))

    def _u8_target(self, name):
        """The threshold every reader of ``name`` quantizes it with (through max pools and flattens), or None."""
        if name in self.q.outputs or not self.readers.get(name):
            return None
        ts = set()
        for j in self.readers[name]:
            op = self.q.ops[j]
            if op.type in QDQ_TYPES or (op.type == "quantize_linear" and not op.attrs.get("only_observer")):
                dq = op.outputs[0] if op.type in QDQ_TYPES else self._pair_output(op)
                if dq is None or not all(self._converted_reader(k, dq) for k in self.readers.get(dq, [])):
                    return None
                ts.add(self.qdq[dq][1])
            elif self._transparent(op):
                t = self._u8_target(op.outputs[0])
                if t is None:
                    return None
                ts.add(t)
            else:
                return None
        return ts.pop() if len(ts) == 1 else None

    def _pair_output(self, quantize_op):
        for k in self.readers.get(quantize_op.outputs[0], []):
            if self.q.ops[k].type == "dequantize_linear":
                return self.q.ops[k].outputs[0]
        return None

    def _converted_reader(self, k, dq):
        return k in self.fused and self.q.ops[k].inputs[0] == dq

    def _transparent(self, op):
        """Ops that commute with quantization, run on uint8: max pooling and flatten."""
        if op.type == "pool2d":
            return op.attrs.get("pooling_type", "max") == "max" and not op.attrs.get("ceil_mode") \
                and not op.attrs.get("adaptive")
        return op.type == "flatten" and op.attrs.get("start_axis", 1) == 1 and op.attrs.get("stop_axis", -1) == -1

    # ---------------------------------------------------------------- forms
    def grid(self, name, t):
        """(zero, levels, lo, hi) of the uint8 grid of tensor ``name`` with threshold ``t``."""
        if name in self.nonneg:
            levels = 255 if self.unsigned else 127
            return 0, levels, 0, levels
        return 128, 127, 1, 255

    def form(self, name, key, t=None):
        """The tensor holding ``name`` in form ``key`` ("nchw", "nhwc" or "u8"), adding a conversion if needed."""
        have = self.forms.setdefault(name, {"nchw": name} if name not in self.produced_other else {})
        if key in have and (key != "u8" or have["u8_t"] == t):
            return have[key]
        rank = len(self.shapes.get(name, ())) or 4
        if key == "u8":
            zero, levels, lo, hi = self.grid(name, t)
            src_key = "nhwc" if "nhwc" in have else "nchw"
            if src_key not in have:
                self.form(name, "nchw")
                src_key = "nchw"
            out = f"{name}@u8" if "u8" not in have else f"{name}@u8_{len(self.ops)}"
            self.emit("quantize_int8", [have[src_key]], out, scale_inv=float(np.float32(levels / max(t, 1e-8))),
                      zero=zero, lo=lo, hi=hi, layout="NCHW" if src_key == "nchw" and rank == 4 else "NHWC")
            have.update({"u8": out, "u8_t": t})
            return out
        if rank != 4:  # 2-D: one float layout
            key = "nchw"
        if key in have:
            return have[key]
        out = name if key == "nchw" else f"{name}@nhwc"
        if "u8" in have:
            zero, levels, _, _ = self.grid(name, have["u8_t"])
            self.emit("dequantize_int8", [have["u8"]], out, scale=float(np.float32(have["u8_t"] / levels)),
                      zero=zero, layout="NCHW" if key == "nchw" else "NHWC")
        else:
            other = have["nhwc" if key == "nchw" else "nchw"]
            self.emit("nhwc_to_nchw" if key == "nchw" else "nchw_to_nhwc", [other], out)
        have[key] = out
        return out

    def emit(self, op_type, inputs, output, **attrs):
        self.ops.append(Op(op_type, list(inputs), [output], attrs, output))

    # ---------------------------------------------------------------- emission
    def run(self) -> Model:
        self.analyse()
        q = self.q
        # tensors whose natural (original-name) NCHW float form is NOT what an INT8 op writes
        self.produced_other = set()
        decided = {}
        for i, f in self.fused.items():
            t = self._u8_target(f.output)
            decided[i] = t
            self.produced_other.add(f.output)
        drop = self._droppable()
        for i, op in enumerate(q.ops):
            if i in self.skip or i in drop:
                continue
            if i in self.fused:
                self._emit_fused(self.fused[i], decided[i])
            elif self._transparent(op) and self._has_u8(op.inputs[0]) and op.outputs[0] not in q.outputs:
                self._emit_transparent(op)
            elif (op.type in ELEMENTWISE_NHWC or self._float_pool(op)) and self._all_nhwc(op):
                ins = [self.forms[n]["nhwc"] if n in self.forms and "nhwc" in self.forms[n] else
                       self._nhwc_const(n) or n if n in q.params else n for n in op.inputs]
                out = f"{op.outputs[0]}@nhwc"
                attrs = dict(op.attrs, data_format="NHWC") if op.type == "pool2d" else dict(op.attrs)
                self.ops.append(Op(op.type, ins, [out], attrs, op.name))
                self.produced_other.add(op.outputs[0])
                self.forms[op.outputs[0]] = {"nhwc": out}
                if op.type in ("relu", "relu6"):
                    self.nonneg.add(op.outputs[0])
            else:
                ins = [self.form(n, "nchw") if n and n not in q.params else n for n in op.inputs]
                self.ops.append(Op(op.type, ins, list(op.outputs), dict(op.attrs), op.name))
                if op.type in ("relu", "relu6"):
                    self.nonneg.add(op.outputs[0])
        for name in q.outputs:
            self.form(name, "nchw")
        self._fuse_elementwise()
        self._fuse_chains()
        self._fuse_output_layouts()
        self._drop_dead_ops()
        used = {n for op in self.ops for n in op.inputs}
        params = {k: v for k, v in self.params.items() if k in used}
        out = Model(self.ops, params, q.input_specs, q.outputs, name=f"{q.name}.int8", meta=dict(q.meta),
                    trainable=set())
        out.meta["int8"] = {"unsigned": self.unsigned, "reduce_range": self.reduce_range, "int8_ops": sum(1 for op in self.ops
                                                                      if has_trait(op.type, "int8"))}
        return out

    def _fuse_elementwise(self):
        """Float NHWC chains between INT8 ops become one pass each, with the ``quantize_int8`` that reads the
        result folded in (same numbers, fewer trips through memory):

        * a residual join, ``elementwise_add`` of two same-shape tensors [+ the ``relu`` that is its only
          reader] -> ``fused_elementwise_add``;
        * an SE block's excitation, ``elementwise_mul`` of a tensor by its (N, C, 1, 1) channel scale ->
          ``fused_channel_mul``;
        * chains of scalar ops on one tensor -> ``fused_scalar_chain``: ``elementwise_mul`` / ``elementwise_add``
          by one-value parameters (PP-LCNetV3's learnable affine blocks) around a hard swish spelled as
          ``elementwise_add`` c, ``relu6``, ``elementwise_mul`` by the same tensor, ``elementwise_div`` c
          (PaddleOCR's MobileNetV3 / PP-LCNet)."""
        readers: dict[str, list[int]] = {}
        for k, op in enumerate(self.ops):
            for n in op.inputs:
                readers.setdefault(n, []).append(k)
        outputs, drop = set(self.q.outputs), set()

        def only_reader(name, op_type):
            r = readers.get(name, [])
            if len(r) == 1 and self.ops[r[0]].type == op_type and name not in outputs and r[0] not in drop:
                return r[0]
            return None

        def found_inputs(op, op_type):
            if op_type == "fused_channel_mul":  # (x, s): the full tensor first
                return sorted(op.inputs, key=lambda n: n in self.params or self.shapes[n[:-len("@nhwc")]][2:] == (1, 1))
            return list(op.inputs)

        for k, op in enumerate(self.ops):
            if k in drop:
                continue
            found = self._residual_add(op, only_reader) if op.type == "elementwise_add" else None
            found = found or self._channel_mul(op) or self._scalar_chain(k, op, readers, only_reader)
            if found is None:
                continue
            op_type, y, attrs, chain = found
            quantize = [j for j in readers.get(y, []) if self.ops[j].type == "quantize_int8"][:1]
            q_out = ""
            if quantize:
                qa = self.ops[quantize[0]].attrs
                attrs.update({a: qa[a] for a in ("scale_inv", "zero", "lo", "hi")})
                q_out = self.ops[quantize[0]].outputs[0]
            drop.update(chain + quantize)
            attrs["want_float"] = y in outputs or any(j not in drop for j in readers.get(y, []))
            ins = [self._activation_input(op)] if op_type == "fused_scalar_chain" else found_inputs(op, op_type)
            self.ops[k] = Op(op_type, ins,
                             [y if attrs["want_float"] else "", q_out], attrs, op.name)
        self.ops = [op for k, op in enumerate(self.ops) if k not in drop]

    def _fuse_chains(self):
        """A ``fused_scalar_chain`` that is the only reader of an INT8 conv / depthwise / matmul's float output
        becomes that op's ``chain`` attribute, a post-op (oneDNN's conv + hard swish): the kernel runs the chain on
        each block of its float output while it is in cache and writes the chain's outputs, so the float tensor
        between them is never stored. Same numbers: the kernels call the same chain code."""
        self._fold_into_producer("fused_scalar_chain", ("conv2d_int8", "depthwise_conv2d_int8", "matmul_int8"),
                                 lambda prod, op: dict(prod.attrs, chain=dict(op.attrs))
                                 if prod.attrs.get("out_dtype") == "f32" else None)

    def _fuse_output_layouts(self):
        """An ``nhwc_to_nchw`` that is the only reader of a depthwise INT8 conv's output (a graph's float output,
        or a float op's NCHW input) becomes the conv's ``out_layout="NCHW"``: the kernel transposes each output
        row while it is in cache instead of a pass over the whole tensor. Same bits."""
        self._fold_into_producer("nhwc_to_nchw", ("depthwise_conv2d_int8",),
                                 lambda prod, op: dict(prod.attrs, out_layout="NCHW"))

    def _fold_into_producer(self, reader_type, producer_types, attrs_of):
        """Each ``reader_type`` op that is the only reader of a ``producer_types`` op's output (not a graph output,
        the producer without a chain yet) folds into the producer: the producer takes ``attrs_of(producer,
        reader)`` (``None``: leave both) and writes the reader's outputs."""
        readers: dict[str, int] = {}
        for op in self.ops:
            for n in op.inputs:
                readers[n] = readers.get(n, 0) + 1
        producer = {n: k for k, op in enumerate(self.ops) for n in op.outputs if n}
        drop = set()
        for k, op in enumerate(self.ops):
            j = producer.get(op.inputs[0]) if op.type == reader_type else None
            prod = self.ops[j] if j is not None else None
            if prod is None or prod.type not in producer_types or prod.attrs.get("chain") \
                    or readers[op.inputs[0]] != 1 or op.inputs[0] in self.q.outputs:
                continue
            attrs = attrs_of(prod, op)
            if attrs is not None:
                self.ops[j] = Op(prod.type, list(prod.inputs), list(op.outputs), attrs, prod.name)
                drop.add(k)
        self.ops = [op for k, op in enumerate(self.ops) if k not in drop]

    def _residual_add(self, op, only_reader):
        if len(op.inputs) != 2 or not all(n.endswith("@nhwc") for n in op.inputs):
            return None
        shapes = [self.shapes.get(n[:-len("@nhwc")]) for n in op.inputs]
        if shapes[0] is None or len(shapes[0]) != 4 or shapes[0] != shapes[1]:
            return None                                    # a broadcast add (a bias) stays as it is
        relu = only_reader(op.outputs[0], "relu")
        if relu is None:
            return "fused_elementwise_add", op.outputs[0], {}, []
        return "fused_elementwise_add", self.ops[relu].outputs[0], {"fuse_activation": "relu"}, [relu]

    def _channel_mul(self, op):
        """An SE block's excitation: ``elementwise_mul`` of an NHWC tensor (N, C, H, W) by an NHWC (N, C, 1, 1), or
        by a (1, C, 1, 1) channel constant (smoothing's ``x * (1/s)``)."""
        if op.type != "elementwise_mul" or len(op.inputs) != 2 or not all(n.endswith("@nhwc") for n in op.inputs):
            return None
        shapes = sorted((tuple(np.shape(self.q.params[n[:-len("@nhwc")]]) if n in self.params else  # the NCHW constant
                               self.shapes.get(n[:-len("@nhwc")], ())) for n in op.inputs),
                        key=lambda t: t[2:] != (1, 1))
        if len(shapes[0]) != 4 or len(shapes[1]) != 4 or shapes[0][2:] != (1, 1) or shapes[1][2:] == (1, 1) \
                or shapes[0][1] != shapes[1][1] or shapes[0][0] not in (1, shapes[1][0]):
            return None
        return "fused_channel_mul", op.outputs[0], {}, []

    def _scalar(self, name) -> float:
        """A one-value parameter as a float32-exact Python float."""
        return float(np.asarray(self.q.params[name], np.float32).reshape(-1)[0])

    def _scalar_operand(self, op):
        """The one-value parameter of a binary elementwise op with one activation input, else None."""
        ins = [n for n in op.inputs if n]
        consts = [n for n in ins if n in self.q.params and np.size(self.q.params[n]) == 1]
        return consts[0] if len(ins) == 2 and len(consts) == 1 else None

    def _activation_input(self, op):
        return next(n for n in op.inputs if n and n not in self.q.params)

    def _scalar_chain(self, k, op, readers, only_reader):
        """Match [mul a] [add b] [hard swish] [mul c] [add d] on one NHWC tensor, starting with op ``k``
        (fused_scalar_chain's docstring). Returns (type, output, attrs, the other fused ops) or None."""
        if op.type not in ("elementwise_mul", "elementwise_add") or self._scalar_operand(op) is None:
            return None
        x = self._activation_input(op)
        if not x.endswith("@nhwc"):
            return None
        attrs, chain, t = {}, [], x

        def scalar_step(kind):
            """The op continuing the chain from t: ``kind`` by a one-value parameter (op k first), or None."""
            idx = k if not chain else only_reader(t, kind)
            o = self.ops[idx] if idx is not None else None
            ok = o is not None and o.type == kind and self._scalar_operand(o) is not None \
                and self._activation_input(o) == t
            return idx if ok else None

        def hard_swish():
            """(offset, threshold, scale, [add, relu6, mul, div]) if t feeds a spelled-out hard swish."""
            r = readers.get(t, [])
            adds = [j for j in ([k] if not chain else r) if self.ops[j].type == "elementwise_add"
                    and self._scalar_operand(self.ops[j]) is not None and self._activation_input(self.ops[j]) == t]
            if not adds:
                return None
            add = adds[0]
            r6 = only_reader(self.ops[add].outputs[0], "relu6")
            mul = only_reader(self.ops[r6].outputs[0], "elementwise_mul") if r6 is not None else None
            if mul is None or sorted(self.ops[mul].inputs) != sorted([t, self.ops[r6].outputs[0]]):
                return None
            if chain and (sorted(r) != sorted([add, mul]) or t in self.q.outputs):  # an inner tensor: swish only
                return None
            div = only_reader(self.ops[mul].outputs[0], "elementwise_div")
            c2 = self._scalar_operand(self.ops[div]) if div is not None else None
            if c2 is None or self.ops[div].inputs[0] != self.ops[mul].outputs[0] or self._scalar(c2) == 0:
                return None
            return (self._scalar(self._scalar_operand(self.ops[add])),
                    float(np.float32(self.ops[r6].attrs.get("threshold", 6.0))), self._scalar(c2),
                    [add, r6, mul, div])

        def take(name, idx):
            nonlocal t
            attrs[name] = self._scalar(self._scalar_operand(self.ops[idx]))
            chain.append(idx)
            t = self.ops[idx].outputs[0]

        idx = scalar_step("elementwise_mul")
        if idx is not None:
            take("pre_mul", idx)
        hs = hard_swish()
        idx = scalar_step("elementwise_add") if hs is None else None
        if idx is not None:
            take("pre_add", idx)
            hs = hard_swish()
        if hs is not None:
            attrs.update(hard_swish=True, offset=hs[0], threshold=hs[1], scale=hs[2])
            chain += hs[3]
            t = self.ops[hs[3][-1]].outputs[0]
        for name, kind in (("post_mul", "elementwise_mul"), ("post_add", "elementwise_add")):
            idx = scalar_step(kind) if chain else None
            if idx is not None:
                take(name, idx)
        if not chain:
            return None
        return "fused_scalar_chain", t, attrs, chain[1:]

    def _drop_dead_ops(self):
        """Remove ops nothing reads any more (e.g. the reshape of a bias that was folded into an INT8 op)."""
        needed = set(self.q.outputs)
        kept = []
        for op in reversed(self.ops):
            if any(o in needed for o in op.outputs):
                kept.append(op)
                needed.update(n for n in op.inputs if n)
        self.ops = kept[::-1]

    def _droppable(self) -> set[int]:
        """Quant-dequant ops (and weight dequantize_linear ops) whose every reader became an INT8 op."""
        def all_fused(name):
            readers = self.readers.get(name, [])
            return bool(readers) and all(k in self.fused for k in readers)

        drop = set()
        for i, op in enumerate(self.q.ops):
            if op.type in QDQ_TYPES or op.type == "dequantize_linear":
                if all_fused(op.outputs[0]):
                    drop.add(i)
            elif op.type == "quantize_linear":
                dq = self._pair_output(op)
                if dq is not None and all_fused(dq):
                    drop.add(i)
        return drop

    def _has_u8(self, name):
        return "u8" in self.forms.get(name, {})

    def _all_nhwc(self, op):
        """Whether ``op`` can run on the NHWC forms of its inputs: every activation input has one and all are
        4-D (same-rank broadcasting, e.g. an SE block's (N, C, 1, 1) scale, permutes with the layout), and any
        parameter input is a single value (a constant like hard-swish's 3 and 6) or a (1, C, 1, 1) channel
        constant (smoothing's ``x * (1/s)``), which runs as its (1, 1, 1, C) NHWC copy."""
        acts = [n for n in op.inputs if n and n not in self.q.params]
        consts = [n for n in op.inputs if n and n in self.q.params]
        if not acts or any(np.size(self.q.params[n]) != 1 and self._nhwc_const(n) is None for n in consts):
            return False
        shapes = [tuple(self.shapes.get(n, ())) for n in acts]
        return all(len(s) == 4 for s in shapes) and all("nhwc" in self.forms.get(n, {}) for n in acts)

    def _nhwc_const(self, name):
        """The NHWC name of parameter ``name`` if it is a (1, C, 1, 1) channel constant (made on first use)."""
        v = self.q.params[name]
        if np.ndim(v) != 4 or v.shape[0] != 1 or v.shape[2:] != (1, 1):
            return None
        self.params.setdefault(f"{name}@nhwc", np.ascontiguousarray(v.transpose(0, 2, 3, 1)))
        return f"{name}@nhwc"

    @staticmethod
    def _float_pool(op):
        """A pool2d that can run on an NHWC float tensor (global or windowed)."""
        return op.type == "pool2d" and not op.attrs.get("adaptive") and op.attrs.get("data_format", "NCHW") == "NCHW"

    def _emit_transparent(self, op):
        src = self.forms[op.inputs[0]]
        t, name = src["u8_t"], op.outputs[0]
        if op.inputs[0] in self.nonneg:
            self.nonneg.add(name)
        if op.type == "pool2d":
            ks = op.attrs.get("ksize", [1, 1])
            self.ops.append(Op("max_pool2d_int8", [src["u8"]], [f"{name}@u8"],
                               {"ksize": list(pair(ks)), "strides": list(pair(op.attrs.get("strides", ks))),
                                "paddings": list(pads4(op.attrs.get("paddings", [0, 0, 0, 0]))),
                                "global_pooling": bool(op.attrs.get("global_pooling", False))}, op.name))
            self.forms[name] = {"u8": f"{name}@u8", "u8_t": t}
        else:  # flatten: back to NCHW order first, so the weights keep their row order
            nchw = f"{op.inputs[0]}@u8nchw"
            self.emit("nhwc_to_nchw", [src["u8"]], nchw)
            self.ops.append(Op("flatten", [nchw], [f"{name}@u8"], dict(op.attrs), op.name))
            self.forms[name] = {"u8": f"{name}@u8", "u8_t": t}
        self.produced_other.add(name)

    def _emit_fused(self, f: Fused, t_out: Optional[float]):
        op = f.op
        x_u8 = self.form(f.x, "u8", f.t_x)
        zero_x, levels_x, _, _ = self.grid(f.x, f.t_x)
        s_x = f.t_x / levels_x
        w_div = 2.0 if self.reduce_range and f.kind != "depthwise" else 1.0   # halved GEMM weights
        q_w = np.rint(f.q_w / w_div) if w_div != 1.0 else f.q_w
        acc_scale = s_x * (f.t_w / 127.0 * w_div) * f.factor
        safe = np.where(acc_scale == 0, 1.0, acc_scale)
        bias_q = np.clip(np.rint(f.bias / safe), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
        name = op.name
        if f.act is not None:
            self.nonneg.add(f.output)
        attrs = {"a_zero": zero_x, "in_threshold": float(f.t_x)}
        if t_out is not None:
            zero, levels, lo, hi = self.grid(f.output, t_out)
            s_y = t_out / levels
            mult = (acc_scale / s_y).astype(np.float32)
            if f.act == "relu6":
                hi = int(min(hi, zero + np.rint(6.0 / s_y)))
            if f.act is not None:
                lo = zero
            attrs.update(out_dtype="u8", out_zero=zero, lo=lo, hi=hi, out_threshold=float(t_out))
            out = f"{f.output}@u8"
            self.forms[f.output] = {"u8": out, "u8_t": t_out}
        else:
            mult = acc_scale.astype(np.float32)
            lo = 0.0 if f.act else None
            hi = 6.0 if f.act == "relu6" else None
            attrs.update(out_dtype="f32", lo=lo, hi=hi)
            out = f"{f.output}@nhwc" if f.kind != "matmul" else f.output
            self.forms[f.output] = {"nhwc": out} if f.kind != "matmul" else {"nchw": out}
        self.params[f"{name}@bias_q"] = bias_q
        self.params[f"{name}@mult"] = mult
        w = op.inputs[1]
        if f.kind == "depthwise":
            self.params[f"{w}@int8"] = np.ascontiguousarray(q_w[:, 0].transpose(1, 2, 0)).astype(np.int8)
            self.ops.append(Op("depthwise_conv2d_int8", [x_u8, f"{w}@int8", f"{name}@bias_q", f"{name}@mult"],
                               [out], {**attrs, **self._geometry(op)}, name))
            return
        if f.kind == "gemm_conv":
            cout, cin, kh, kw = q_w.shape
            gemm_w = q_w.transpose(2, 3, 1, 0).reshape(kh * kw * cin, cout)
            attrs.update(self._geometry(op), ksize=[int(kh), int(kw)])
            op_type = "conv2d_int8"
        else:
            gemm_w = q_w
            op_type = "matmul_int8"
        gemm_w = np.ascontiguousarray(gemm_w).astype(np.int8)
        self.params[f"{w}@packed"] = _ref_gemm.pack_b(gemm_w)
        self.params[f"{w}@col_sum"] = _ref_gemm.col_sums(gemm_w)
        attrs.update(K=int(gemm_w.shape[0]), N=int(gemm_w.shape[1]))
        self.ops.append(Op(op_type, [x_u8, f"{w}@packed", f"{w}@col_sum", f"{name}@bias_q", f"{name}@mult"],
                           [out], attrs, name))

    @staticmethod
    def _geometry(op):
        """The INT8 conv's geometry attributes, from the float op's (validated when its model was built): 2
        strides, 4 paddings (top, left, bottom, right), 2 dilations, as the INT8 ops' checks require."""
        return {"strides": list(pair(op.attrs.get("strides", [1, 1]))),
                "paddings": list(pads4(op.attrs.get("paddings", [0, 0, 0, 0]))),
                "dilations": list(pair(op.attrs.get("dilations", [1, 1])))}


def convert_to_int8(qmodel: Model, *, unsigned: bool = True, reduce_range: bool = False) -> Model:
    """The INT8 inference graph of a fake-quant model from :func:`refquant.quant.quant_post_static` (either
    format) or QAT; see the module docstring. ``unsigned``: u8 with T/255 after relu/relu6 (oneDNN's choice) or
    the fake-quant grid T/127. ``reduce_range``: halve the GEMM weights to [-64, 64] so that AVX2 CPUs without
    VNNI run them on the faster exact kernel, at the cost of one bit of weight resolution."""
    if "quantization" not in qmodel.meta:
        raise ValueError("convert_to_int8: the model is not quantized (run quant_post_static or QAT first)")
    return freeze_inference_params(_Converter(qmodel, unsigned, reduce_range).run(), shared=qmodel.params)
