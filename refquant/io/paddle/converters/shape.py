"""The ops that move data: flatten, reshape, transpose, pad, stack, squeeze, concat, split, slice, assign, cast,
shape, lookup tables and constants."""
from __future__ import annotations

import math

import numpy as np

from ....errors import ModelFormatError
from .common import _VARTYPE_DTYPES, _float, _int, _int_list_input, _ints, _str, _unsupported, converter


@converter("flatten_contiguous_range")
def _flatten(cx, op):
    cx.emit("flatten", [cx.inp(op, "X")], [cx.out(op)], {"start_axis": _int(cx, op, "start_axis", 1),
                                                          "stop_axis": _int(cx, op, "stop_axis", -1)})


@converter("flatten", "flatten2")
def _flatten2(cx, op):
    x, out = cx.inp(op, "X"), cx.out(op)
    axis = _int(cx, op, "axis", 1)
    if axis == 0:
        cx.emit("reshape", [x], [out], {"shape": [1, -1]})
        return
    head = cx.tmp(out + ".head")
    cx.emit("flatten", [x], [("=", head)], {"start_axis": 0, "stop_axis": axis - 1}, head)
    cx.emit("flatten", [head], [out], {"start_axis": 1, "stop_axis": -1})


@converter("reshape2", "reshape")
def _reshape(cx, op):
    x, out = cx.inp(op, "X"), cx.out(op)
    shape = _int_list_input(cx, op, "ShapeTensor") or _int_list_input(cx, op, "Shape")
    if shape and shape[0] == "dynamic":
        pieces = op.ins("ShapeTensor")
        if len(pieces) > 1:   # [x.shape[0], 8, -1]: one-element int tensors, joined at run time
            if len(pieces) > 32:
                raise ModelFormatError(f"{cx.where(op)}: a ShapeTensor list of {len(pieces)} entries")
            ones = []
            for k, n in enumerate(pieces):
                one = cx.tmp(f"{out}.dim{k}")
                cx.emit("reshape", [cx.get(n)], [("=", one)], {"shape": [1]}, one)
                ones.append(one)
            target = cx.tmp(out + ".shape")
            cx.emit("concat", ones, [("=", target)], {"axis": 0}, target)
            shape = ["dynamic", target]
        cx.emit("reshape", [x, shape[1]], [out], {})
        return
    if shape is None:
        shape = _ints(cx, op, "shape")
    if len(shape) > 32 or shape.count(-1) > 1 or any(s < -1 for s in shape):
        raise ModelFormatError(f"{cx.where(op)}: invalid target shape {shape[:8]}")
    cx.emit("reshape", [x], [out], {"shape": shape})


@converter("transpose2", "transpose")
def _transpose(cx, op):
    cx.emit("transpose", [cx.inp(op, "X")], [cx.out(op)], {"perm": _ints(cx, op, "axis")})


@converter("pad3d")
def _pad3d(cx, op):
    pads = _int_list_input(cx, op, "Paddings") or _ints(cx, op, "paddings", length=(6,))
    if pads and pads[0] == "dynamic":
        raise _unsupported(cx, op, "paddings computed at run time")
    cx.emit("pad3d", [cx.inp(op, "X")], [cx.out(op)],
            {"paddings": pads, "mode": _str(cx, op, "mode", "constant"), "value": _float(cx, op, "value", 0.0),
             "data_format": _str(cx, op, "data_format", "NCDHW")})


@converter("stack")
def _stack(cx, op):
    names = [cx.get(n) for n in op.ins("X")]
    if not names:
        raise ModelFormatError(f"{cx.where(op)}: stack of no inputs")
    cx.emit("stack", names, [cx.out(op, "Y")], {"axis": _int(cx, op, "axis", 0)})


@converter("squeeze2", "squeeze")
def _squeeze(cx, op):
    axes = _int_list_input(cx, op, "AxesTensor") or _ints(cx, op, "axes", [])
    if axes and axes[0] == "dynamic":
        raise _unsupported(cx, op, "axes computed at run time")
    cx.emit("squeeze", [cx.inp(op, "X")], [cx.out(op)], {"axes": axes} if axes else {})


@converter("unsqueeze2", "unsqueeze")
def _unsqueeze(cx, op):
    axes = _int_list_input(cx, op, "AxesTensor") or _ints(cx, op, "axes", [])
    if axes and axes[0] == "dynamic":
        raise _unsupported(cx, op, "axes computed at run time")
    if not axes:
        raise ModelFormatError(f"{cx.where(op)}: unsqueeze without axes")
    # Paddle inserts the axes one after the other, each against the shape grown so far: the same as ONNX's
    # sorted insertion only for ascending non-negative axes, so insert them one at a time.
    x, out = cx.inp(op, "X"), cx.out(op)
    for k, a in enumerate(axes):
        last = k == len(axes) - 1
        dst = out if last else cx.tmp(out + ".unsq")
        cx.emit("unsqueeze", [x], [dst if last else ("=", dst)], {"axes": [a]})
        x = dst


@converter("concat")
def _concat(cx, op):
    axis = _int_list_input(cx, op, "AxisTensor")
    if axis and axis[0] == "dynamic":
        raise _unsupported(cx, op, "an axis computed at run time")
    axis = axis[0] if axis else _int(cx, op, "axis", 0)
    names = [cx.get(n) for n in op.ins("X")]
    if not names:
        raise ModelFormatError(f"{cx.where(op)}: concat of no inputs")
    cx.emit("concat", names, [cx.out(op)], {"axis": axis})


@converter("split")
def _split(cx, op):
    x = cx.inp(op, "X")
    axis = _int(cx, op, "axis", 0)
    outs = op.outs("Out")
    sections = _ints(cx, op, "sections", [])
    num = _int(cx, op, "num", 0)
    d = cx.dims(x)
    if d is None or not -len(d) <= axis < len(d):
        raise ModelFormatError(f"{cx.where(op)}: axis {axis} for the input dims {d}")
    n = d[axis]
    if not sections:
        if num <= 0 or num != len(outs) or n < 0 or n % num:
            raise _unsupported(cx, op, f"split into {num} parts of an axis of size {n}")
        sections = [n // num] * num
    if len(sections) != len(outs):
        raise ModelFormatError(f"{cx.where(op)}: {len(sections)} sections for {len(outs)} outputs")
    if -1 in sections:
        if n < 0 or sections.count(-1) > 1:
            raise _unsupported(cx, op, "a -1 section of an axis of unknown size")
        sections[sections.index(-1)] = n - (sum(sections) + 1)
    start = 0
    for o, s in zip(outs, sections):
        cx.emit("slice", [x], [o], {"axes": [axis], "starts": [start], "ends": [start + s], "steps": [1]})
        start += s


@converter("slice", "strided_slice")
def _slice(cx, op):
    x, out = cx.inp(op, "Input"), cx.out(op)
    for slot in ("StartsTensor", "EndsTensor", "StartsTensorList", "EndsTensorList", "StridesTensor",
                 "StridesTensorList"):
        if op.ins(slot):
            raise _unsupported(cx, op, f"{slot} (bounds computed at run time)")
    axes = _ints(cx, op, "axes")
    starts, ends = _ints(cx, op, "starts"), _ints(cx, op, "ends")
    steps = _ints(cx, op, "strides", [1] * len(axes)) if op.type == "strided_slice" else [1] * len(axes)
    if not len(axes) == len(starts) == len(ends) == len(steps):
        raise ModelFormatError(f"{cx.where(op)}: axes, starts, ends and strides differ in length")
    decrease = _ints(cx, op, "decrease_axis", [])
    attrs = {"axes": axes, "starts": starts, "ends": ends, "steps": steps}
    if not decrease:
        cx.emit("slice", [x], [out], attrs)
        return
    mid = cx.tmp(out + ".slice")
    cx.emit("slice", [x], [("=", mid)], attrs, mid)
    d = cx.dims(out)
    if d is not None and len(d) == 0:   # every axis decreased: Paddle keeps a 0-d tensor
        cx.emit("reshape", [mid], [out], {"shape": []})
    else:
        cx.emit("squeeze", [mid], [out], {"axes": decrease})



@converter("assign", "share_data", "memcpy", "memcpy_d2h", "memcpy_h2d")
def _assign(cx, op):
    cx.set_alias(cx.out(op), cx.inp(op, "X"))


@converter("cast")
def _cast(cx, op):
    code = _int(cx, op, "out_dtype", 5)
    dtype = _VARTYPE_DTYPES.get(code)
    if dtype is None:
        raise _unsupported(cx, op, f"out_dtype {code}")
    cx.emit("cast", [cx.inp(op, "X")], [cx.out(op)], {"dtype": dtype})


@converter("shape")
def _shape(cx, op):
    cx.emit("shape", [cx.inp(op, "Input")], [cx.out(op)], {})



@converter("lookup_table_v2", "lookup_table")
def _lookup(cx, op):
    ids = cx.inp(op, "Ids")
    if op.type == "lookup_table":   # (..., 1) ids: Paddle drops the trailing 1
        d = cx.dims(ids)
        if d is None or not d or d[-1] != 1:
            raise _unsupported(cx, op, f"lookup_table ids of dims {d} (a trailing 1 expected)")
        sq = cx.tmp(cx.out(op) + ".ids")
        cx.emit("squeeze", [ids], [("=", sq)], {"axes": [-1]}, sq)
        ids = sq
    cx.emit("lookup_table", [cx.inp(op, "W"), ids], [cx.out(op)],
            {"padding_idx": _int(cx, op, "padding_idx", -1)})


@converter("fill_constant")
def _fill_constant(cx, op):
    for slot in ("ShapeTensor", "ShapeTensorList", "ValueTensor"):
        if op.ins(slot):
            raise _unsupported(cx, op, f"{slot} (a value computed at run time)")
    dtype = _VARTYPE_DTYPES.get(_int(cx, op, "dtype", 5))
    if dtype is None:
        raise _unsupported(cx, op, f"dtype {op.attrs.get('dtype')}")
    shape = _ints(cx, op, "shape", [])
    if any(s < 0 for s in shape) or math.prod(shape) > 1 << 24:
        raise ModelFormatError(f"{cx.where(op)}: fill_constant of shape {shape[:8]}")
    text = _str(cx, op, "str_value", "")
    try:
        value = float(text) if text else _float(cx, op, "value", 0.0)
    except ValueError:
        raise ModelFormatError(f"{cx.where(op)}: str_value {text[:40]!r} is not a number") from None
    out = cx.out(op)
    cx.params[cx.new(out)] = np.full(shape, value, dtype=dtype)
