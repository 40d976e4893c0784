"""Activations, elementwise arithmetic, clip, reductions and dropout."""
from __future__ import annotations

import math

import numpy as np

from ....errors import ModelFormatError
from .common import _bool, _float, _int, _ints, _str, _unsupported, converter


def _unary(refquant_type, **attr_map):
    def conv(cx, op):
        attrs = {}
        for ours, (theirs, default) in attr_map.items():
            attrs[ours] = _float(cx, op, theirs, default)
        cx.emit(refquant_type, [cx.inp(op, "X")], [cx.out(op)], attrs)
    return conv


for _t in ("relu", "sigmoid", "tanh", "exp", "sqrt", "log"):
    converter(_t)(_unary(_t))
converter("relu6")(_unary("relu6", threshold=("threshold", 6.0)))
converter("hard_sigmoid")(_unary("hard_sigmoid", slope=("slope", 0.2), offset=("offset", 0.5)))
converter("hard_swish")(_unary("hard_swish", threshold=("threshold", 6.0), scale=("scale", 6.0),
                               offset=("offset", 3.0)))


@converter("gelu")
def _gelu(cx, op):
    cx.emit("gelu", [cx.inp(op, "X")], [cx.out(op)], {"approximate": _bool(cx, op, "approximate", False)})


@converter("softmax", "log_softmax")
def _softmax(cx, op):
    cx.emit(op.type, [cx.inp(op, "X")], [cx.out(op)], {"axis": _int(cx, op, "axis", -1)})


def _scaled(cx, x: str, factor: float, base: str) -> str:
    out = cx.tmp(base)
    cx.emit("scale", [x], [("=", out)], {"scale": float(factor), "bias": 0.0, "bias_after_scale": True}, out)
    return out


@converter("leaky_relu", "prelu")
def _leaky_relu(cx, op):
    """``relu(x) - a * relu(-x)``: exact, as both terms are x or 0 where the other is 0 (``a * x`` rounded once)."""
    x, out = cx.inp(op, "X"), cx.out(op)
    pos = cx.tmp(out + ".pos")
    cx.emit("relu", [x], [("=", pos)], {}, pos)
    neg_x = _scaled(cx, x, -1.0, out + ".negx")
    neg = cx.tmp(out + ".neg")
    cx.emit("relu", [neg_x], [("=", neg)], {}, neg)
    if op.type == "leaky_relu":
        scaled = _scaled(cx, neg, _float(cx, op, "alpha", 0.02), out + ".aneg")
    else:
        alpha = cx.const(cx.inp(op, "Alpha"))
        if alpha is None:
            raise _unsupported(cx, op, "a prelu slope computed at run time")
        mode = _str(cx, op, "mode", "all")
        alpha = np.asarray(alpha, np.float32)
        if mode == "channel":
            if _str(cx, op, "data_format", "NCHW") != "NCHW":
                raise _unsupported(cx, op, "data_format NHWC")
            alpha = alpha.reshape(1, -1, 1, 1)
        elif mode == "all":
            alpha = alpha.reshape(-1)[:1] if alpha.size == 1 else None
            if alpha is None:
                raise ModelFormatError(f"{cx.where(op)}: mode 'all' needs one slope")
        elif mode == "element":
            xd = cx.dims(x)
            alpha = alpha.reshape((1,) + tuple(alpha.shape[-(len(xd) - 1):])) if xd and alpha.ndim < len(xd) \
                else alpha
        else:
            raise ModelFormatError(f"{cx.where(op)}: unknown prelu mode {mode!r}")
        a = cx.param(f"{out}.alpha", alpha)
        scaled = cx.tmp(out + ".aneg")
        cx.emit("elementwise_mul", [neg, a], [("=", scaled)], {"axis": -1}, scaled)
    cx.emit("elementwise_sub", [pos, scaled], [out], {"axis": -1})


@converter("swish", "silu")
def _swish(cx, op):
    x, out = cx.inp(op, "X"), cx.out(op)
    beta = _float(cx, op, "beta", 1.0) if op.type == "swish" else 1.0
    arg = x if beta == 1.0 else _scaled(cx, x, beta, out + ".bx")
    sig = cx.tmp(out + ".sigmoid")
    cx.emit("sigmoid", [arg], [("=", sig)], {}, sig)
    cx.emit("elementwise_mul", [x, sig], [out], {"axis": -1})


@converter("elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_div", "elementwise_pow",
           "elementwise_max", "elementwise_min")
def _binary(cx, op):
    cx.emit(op.type, [cx.inp(op, "X"), cx.inp(op, "Y")], [cx.out(op)], {"axis": _int(cx, op, "axis", -1)})


@converter("sum")
def _sum(cx, op):
    names = [cx.get(n) for n in op.ins("X")]
    if not names:
        raise ModelFormatError(f"{cx.where(op)}: sum of no inputs")
    acc = names[0]
    for k, n in enumerate(names[1:]):
        last = k == len(names) - 2
        out = cx.out(op) if last else cx.tmp(cx.out(op) + ".acc")
        cx.emit("elementwise_add", [acc, n], [out if last else ("=", out)], {"axis": -1})
        acc = cx.get(out) if last else out
    if len(names) == 1:
        cx.set_alias(cx.out(op), names[0])


@converter("scale")
def _scale(cx, op):
    factor = _float(cx, op, "scale", 1.0)
    st = cx.inp(op, "ScaleTensor", required=False)
    if st is not None:
        v = cx.const(st)
        if v is None or np.size(v) != 1:
            raise _unsupported(cx, op, "a ScaleTensor computed at run time")
        factor = float(np.asarray(v).reshape(-1)[0])
    cx.emit("scale", [cx.inp(op, "X")], [cx.out(op)],
            {"scale": factor, "bias": _float(cx, op, "bias", 0.0),
             "bias_after_scale": _bool(cx, op, "bias_after_scale", True)})



@converter("dropout")
def _dropout(cx, op):
    impl = _str(cx, op, "dropout_implementation", "downgrade_in_infer")
    x, out = cx.inp(op, "X"), cx.out(op)
    if impl == "upscale_in_train":
        cx.set_alias(out, x)
    elif impl == "downgrade_in_infer":
        cx.emit("scale", [x], [out], {"scale": 1.0 - _float(cx, op, "dropout_prob", 0.5), "bias": 0.0,
                                      "bias_after_scale": True})
    else:
        raise ModelFormatError(f"{cx.where(op)}: unknown dropout_implementation {impl!r}")



@converter("clip")
def _clip(cx, op):
    lo, hi = _float(cx, op, "min", -math.inf), _float(cx, op, "max", math.inf)
    for slot in ("Min", "Max"):
        n = cx.inp(op, slot, required=False)
        if n is not None:
            v = cx.const(n)
            if v is None or np.size(v) != 1:
                raise _unsupported(cx, op, f"a {slot} bound computed at run time")
            if slot == "Min":
                lo = float(np.ravel(v)[0])
            else:
                hi = float(np.ravel(v)[0])
    cx.emit("clip", [cx.inp(op, "X")], [cx.out(op)], {"min": lo, "max": hi})


@converter("reduce_mean", "reduce_sum", "mean")
def _reduce(cx, op):
    x = cx.inp(op, "X")
    if op.type == "mean":
        cx.emit("mean", [x], [cx.out(op)], {})
        return
    attrs = {"keep_dim": _bool(cx, op, "keep_dim", False)}
    if not _bool(cx, op, "reduce_all", False):
        attrs["dim"] = _ints(cx, op, "dim", [])
    cx.emit(op.type, [x], [cx.out(op)], attrs)
