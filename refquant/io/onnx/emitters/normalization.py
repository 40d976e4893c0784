"""Emitters of batch_norm (BatchNormalization) and layer_norm (LayerNormalization, or its decomposition before
opset 17)."""
from __future__ import annotations

import numpy as np

from .common import _exporter


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
