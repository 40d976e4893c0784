"""Emitters of the activations, elementwise arithmetic (Paddle's ``axis`` broadcasting rule made explicit),
softmax, scale, dropout and reductions; the 1:1 ones come from the shared op-name table (:mod:`..optable`)."""
from __future__ import annotations

import numpy as np

from ..optable import BINARY, SOFTMAX, UNARY, to_onnx
from .common import EXPORTERS, FLT_MAX, _clip, _exporter


def _unary(onnx_type):
    def fn(ex, op):
        ex.node(onnx_type, [ex.x(op.inputs[0])], [op.outputs[0]])
    return fn


for _rq, _ox in to_onnx(UNARY).items():
    EXPORTERS[_rq] = _unary(_ox)


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
    ex.node(to_onnx(SOFTMAX)[op.type], [ex.x(op.inputs[0])], [op.outputs[0]],
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


for _rq, _ox in to_onnx(BINARY).items():
    EXPORTERS[_rq] = _elementwise(_ox)


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
