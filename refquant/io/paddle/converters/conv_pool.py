"""Convolutions, pooling and interpolation."""
from __future__ import annotations

import numpy as np

from ....errors import ModelFormatError
from .common import _bool, _int, _int_list_input, _ints, _nchw, _pads4, _str, _unsupported, _window, converter


def _filter_dims(cx, op, w: str) -> tuple:
    ws = cx.dims(w)
    if ws is None or len(ws) != 4:
        raise ModelFormatError(f"{cx.where(op)}: the filter {w!r} must be 4-D, got {ws}")
    return ws


@converter("conv2d", "depthwise_conv2d")
def _conv(cx, op):
    _nchw(cx, op)
    x, w = cx.inp(op, "Input"), cx.inp(op, "Filter")
    ws = _filter_dims(cx, op, w)
    strides = _ints(cx, op, "strides", [1, 1], length=(2,))
    dilations = _ints(cx, op, "dilations", [1, 1], length=(2,))
    pads, dilations = _window(cx, op, x, ws[2:], strides, dilations)
    ins = [x, w]
    bias = cx.inp(op, "Bias", required=False)
    if bias is not None:
        ins.append(bias)
    cx.emit(op.type, ins, [cx.out(op, "Output")], {"strides": strides, "paddings": pads, "dilations": dilations,
                                                   "groups": _int(cx, op, "groups", 1)})


@converter("conv2d_transpose", "depthwise_conv2d_transpose")
def _conv_transpose(cx, op):
    _nchw(cx, op)
    x, w = cx.inp(op, "Input"), cx.inp(op, "Filter")
    ws = _filter_dims(cx, op, w)
    if _str(cx, op, "padding_algorithm", "EXPLICIT") not in ("EXPLICIT", "", "VALID"):
        raise _unsupported(cx, op, "padding_algorithm='SAME' for a transposed convolution")
    pads = [0, 0, 0, 0] if op.attrs.get("padding_algorithm") == "VALID" else _pads4(cx, op)
    strides = _ints(cx, op, "strides", [1, 1], length=(2,))
    dilations = _ints(cx, op, "dilations", [1, 1], length=(2,))
    out_pad = _ints(cx, op, "output_padding", [], length=(0, 2)) or [0, 0]
    out_size = _ints(cx, op, "output_size", [], length=(0, 2))
    if out_size or op.ins("OutputSize"):
        xd = cx.dims(x)
        if not out_size or xd is None or len(xd) != 4 or min(xd[2:]) < 0:
            raise _unsupported(cx, op, "an output_size that depends on the run-time input")
        out_pad = [o - ((n - 1) * s - p0 - p1 + d * (k - 1) + 1)
                   for o, n, s, p0, p1, d, k in zip(out_size, xd[2:], strides, pads[:2], pads[2:], dilations, ws[2:])]
        if min(out_pad) < 0 or any(p >= max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
            raise ModelFormatError(f"{cx.where(op)}: output_size {out_size} does not fit the input {list(xd)}")
    groups = _int(cx, op, "groups", 1)
    ins = [x, w] + ([b] if (b := cx.inp(op, "Bias", required=False)) else [])
    cx.emit("conv2d_transpose", ins, [cx.out(op, "Output")],
            {"strides": strides, "paddings": pads, "output_padding": out_pad, "dilations": dilations,
             "groups": groups})



@converter("pool2d")
def _pool(cx, op):
    _nchw(cx, op)
    x = cx.inp(op, "X")
    ptype = _str(cx, op, "pooling_type", "max")
    ksize = _ints(cx, op, "ksize", None, length=(2,))
    strides = _ints(cx, op, "strides", [1, 1], length=(2,))
    global_pool = _bool(cx, op, "global_pooling", False)
    attrs = {"pooling_type": ptype, "ceil_mode": _bool(cx, op, "ceil_mode", False),
             "exclusive": _bool(cx, op, "exclusive", True)}
    if _bool(cx, op, "adaptive", False) and not global_pool:
        if ksize == [1, 1]:
            global_pool = True
        else:
            d = cx.dims(x)
            if d is None or len(d) != 4 or min(d[2:]) < 1 or any(n % k for n, k in zip(d[2:], ksize)):
                raise _unsupported(cx, op, f"adaptive pooling to {ksize} (refquant pools adaptively only to 1x1 or "
                                           f"to an output that divides a known input size)")
            ksize = strides = [n // k for n, k in zip(d[2:], ksize)]
            attrs.update(ksize=ksize, strides=strides, paddings=[0, 0, 0, 0])
            cx.emit("pool2d", [x], [cx.out(op)], attrs)
            return
    if global_pool:
        attrs.update(global_pooling=True, ksize=ksize, strides=[1, 1], paddings=[0, 0, 0, 0])
    else:
        pads, _ = _window(cx, op, x, ksize, strides, [1, 1])
        attrs.update(ksize=ksize, strides=strides, paddings=pads)
    cx.emit("pool2d", [x], [cx.out(op)], attrs)



_INTERP = {"nearest_interp": "nearest", "nearest_interp_v2": "nearest", "bilinear_interp": "bilinear",
           "bilinear_interp_v2": "bilinear"}


@converter(*_INTERP)
def _interp(cx, op):
    _nchw(cx, op, "data_layout")
    x, out = cx.inp(op, "X"), cx.out(op)
    method = _INTERP[op.type]
    if _str(cx, op, "interp_method", method) != method:
        raise _unsupported(cx, op, f"interp_method {op.attrs.get('interp_method')!r}")
    align = _bool(cx, op, "align_corners", True)
    align_mode = _int(cx, op, "align_mode", 1)
    if method == "nearest":
        mode, nearest = ("align_corners", "round_prefer_ceil") if align else ("asymmetric", "floor")
    else:
        mode, nearest = ("align_corners" if align else "half_pixel" if align_mode == 0 else "asymmetric"), None
    attrs = {"align_corners": align, "coordinate_transformation_mode": mode}
    if nearest:
        attrs["nearest_mode"] = nearest
    for slot in ("SizeTensor", "Scale"):
        if op.ins(slot):
            v = _int_list_input(cx, op, slot) if slot == "SizeTensor" else cx.const(cx.inp(op, slot))
            if v is None or (isinstance(v, list) and v and v[0] == "dynamic"):
                raise _unsupported(cx, op, f"{slot} computed at run time")
            if slot == "SizeTensor":
                attrs["out_size"] = list(v)
            else:
                attrs["scale"] = [float(e) for e in np.ravel(v)]
    size_in = cx.inp(op, "OutSize", required=False)
    oh, ow = _int(cx, op, "out_h", -1), _int(cx, op, "out_w", -1)
    scale = op.attrs.get("scale", [])
    scale = [scale] if isinstance(scale, (int, float)) and not isinstance(scale, bool) else list(scale or [])
    if "out_size" not in attrs and "scale" not in attrs:
        if scale and all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scale):
            attrs["scale"] = [float(s) for s in scale[-2:]] if len(scale) > 1 else [float(scale[0])] * 2
        elif oh > 0 and ow > 0:
            attrs["out_size"] = [oh, ow]
    inputs = [x]
    if size_in is not None:
        v = cx.const(size_in)
        if v is not None:
            attrs["out_size"] = [int(e) for e in np.ravel(v)]
            attrs.pop("scale", None)
        else:
            inputs.append(size_in)
    cx.emit(f"{method}_interp", inputs, [out], attrs)
