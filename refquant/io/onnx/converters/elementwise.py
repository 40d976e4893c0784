"""Converters of the ONNX elementwise ops, activations, softmax and reductions; the 1:1 ones come from the
shared op-name table (:mod:`..optable`)."""
from __future__ import annotations

import math

import numpy as np

from ..optable import BINARY, SOFTMAX, UNARY
from .common import (FLT_MAX, _axes, _axis, _bad, _check_broadcast, _const_input, _converter, _int_values,
                     _shape_error, _unsupported)


def _unary(refquant_type, **fixed):
    def conv(im, node):
        im.emit(refquant_type, [node.inputs[0]], [node.outputs[0]], dict(fixed), node.name)
    return conv


for _onnx, _rq in UNARY.items():
    _converter(_onnx, (1, 1, 1), _unary(_rq))


@_converter("HardSigmoid", arity=(1, 1, 1))
def _hard_sigmoid(im, node):
    attrs = {"slope": node.attrs.float("alpha", 0.2), "offset": node.attrs.float("beta", 0.5)}
    im.emit("hard_sigmoid", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("HardSwish", arity=(1, 1, 1))
def _hard_swish(im, node):
    attrs = {"threshold": 6.0, "scale": 6.0, "offset": 3.0}
    im.emit("hard_swish", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Clip", arity=(1, 3, 1))
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


for _onnx, _rq in BINARY.items():
    _converter(_onnx, (2, 2, 1), _binary(_rq))


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


for _onnx, _rq in SOFTMAX.items():
    _converter(_onnx, (1, 1, 1), _softmax_like(_rq))


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


_converter("ReduceMean", (1, 2, 1), _reduce("reduce_mean", 18))
_converter("ReduceSum", (1, 2, 1), _reduce("reduce_sum", 13))
