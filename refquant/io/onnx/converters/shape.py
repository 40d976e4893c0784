"""Converters of the ONNX ops that move data without arithmetic: constants, identities, concat, reshape,
flatten, transpose, squeeze / unsqueeze, slice, shape, cast, gather, expand and split."""
from __future__ import annotations

import numpy as np

from ..loader import _RUNTIME_DTYPES
from .common import (ANY, _MAX_RANK, _axes, _axis, _bad, _check_broadcast, _check_shape, _const_input, _converter,
                     _int_values, _shape_error, _unsupported)


@_converter("Constant", arity=(0, 0, 1))
def _constant(im, node):
    a = node.attrs
    given = a.names()
    if len(given) != 1:
        raise _bad(node, f"a Constant needs exactly one value attribute, got {given}")
    key = given[0]
    if key == "value":
        value = im.to_array(a.tensor("value"), node.where)
    elif key == "value_float":
        value = np.array(a.float("value_float"), np.float32)
    elif key == "value_floats":
        value = np.array(a.floats("value_floats"), np.float32)
    elif key == "value_int":
        value = np.array(a.int("value_int"), np.int64)
    elif key == "value_ints":
        value = np.array(a.ints("value_ints"), np.int64)
    else:
        raise _unsupported(node, f"Constant with attribute {key!r}")
    im.add_const(node.outputs[0], value)


@_converter("Identity", arity=(1, 1, 1))
def _identity(im, node):
    im.alias[node.outputs[0]] = node.inputs[0]


@_converter("Dropout", arity=(1, 3, 2))
def _dropout(im, node):
    if len(node.outputs) > 1 and node.outputs[1] and im.use_count.get(node.outputs[1]):
        raise _unsupported(node, "the dropout mask output is used")
    im.alias[node.outputs[0]] = node.inputs[0]


@_converter("Concat", arity=(1, ANY, 1))
def _concat(im, node):
    if not all(node.inputs):
        raise _bad(node, "an input name is empty")
    ranks = {im.rank(n) for n in node.inputs} - {None}
    if len(ranks) > 1:
        raise _shape_error(node, f"inputs of ranks {sorted(ranks)} cannot be concatenated")
    r = next(iter(ranks), None)
    axis = _axis(node, node.attrs.int("axis"), r)
    shapes = [im.shape_of(n) for n in node.inputs]
    known = [s for s in shapes if s is not None]
    for i in range(r or 0):
        dims = {s[i] for s in known} - {None}
        if i != axis and len(dims) > 1:
            raise _shape_error(node, f"input shapes {[tuple(s) for s in known]} differ outside axis {axis}")
    im.emit("concat", list(node.inputs), [node.outputs[0]], {"axis": axis}, node.name)


def _check_target(node, target: list) -> None:
    if any(t < -1 for t in target) or target.count(-1) > 1:
        raise _shape_error(node, f"target shape {target} may hold sizes >= 0 and a single -1")
    if len(target) > _MAX_RANK:
        raise _shape_error(node, f"target shape {target} has more than {_MAX_RANK} dimensions")


@_converter("Reshape", arity=(2, 2, 1))
def _reshape(im, node):
    x, shape = node.inputs[0], node.input(1)
    if im.opset < 5:
        target = node.attrs.ints("shape")
        _check_target(node, target)
        im.emit("reshape", [x], [node.outputs[0]], {"shape": target}, node.name)
        return
    allowzero = node.attrs.int("allowzero", 0)
    if im.is_const(shape):
        target = _int_values(node, im.const(shape), "the shape input")
        _check_target(node, target)
        if allowzero and 0 in target:
            raise _unsupported(node, "allowzero=1 with a 0 in the target shape")
        im.emit("reshape", [x], [node.outputs[0]], {"shape": target}, node.name)
    else:
        if allowzero:
            raise _unsupported(node, "allowzero=1 with a shape computed at run time")
        _check_shape(node, shape, im.shape_of(shape), 1, "the shape input")
        im.emit("reshape", [x, shape], [node.outputs[0]], {}, node.name)


@_converter("Flatten", arity=(1, 1, 1))
def _flatten(im, node):
    x, y = node.inputs[0], node.outputs[0]
    r = im.rank(x)
    axis = node.attrs.int("axis", 1)
    if axis < 0 and r is None:
        raise _unsupported(node, "a negative axis needs the input rank")
    axis = _axis(node, axis, r, inclusive=True)
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


@_converter("Transpose", arity=(1, 1, 1))
def _transpose(im, node):
    r = im.rank(node.inputs[0])
    perm = node.attrs.ints("perm", None)
    if perm is None:
        if r is None:
            raise _unsupported(node, "Transpose without perm needs the input rank")
        perm = list(range(r))[::-1]
    if sorted(perm) != list(range(len(perm))) or (r is not None and len(perm) != r):
        raise _shape_error(node, f"perm {perm} is not a permutation of the {r if r is not None else '?'} axes")
    im.emit("transpose", [node.inputs[0]], [node.outputs[0]], {"perm": perm}, node.name)


def _axes_of(im, node, required: bool):
    if im.opset >= 13:
        v = _const_input(im, node, 1, "axes")
        axes = None if v is None else _int_values(node, v, "axes")
    else:
        if node.input(1):
            raise _bad(node, "takes its axes as an attribute before opset 13, not as an input")
        axes = node.attrs.ints("axes", None)
    if axes is None:
        if required:
            raise _bad(node, "axes are required")
        return None
    return axes


@_converter("Squeeze", arity=(1, 2, 1))
def _squeeze(im, node):
    x = node.inputs[0]
    axes = _axes_of(im, node, required=False)
    shape = im.shape_of(x)
    if axes is not None:
        axes = _axes(node, axes, None if shape is None else len(shape))
        if shape is not None and any(shape[a] not in (1, None) for a in axes):
            raise _shape_error(node, f"axes {axes} of shape {tuple(shape)} are not all of size 1")
    im.emit("squeeze", [x], [node.outputs[0]], {"axes": axes}, node.name)


@_converter("Unsqueeze", arity=(1, 2, 1))
def _unsqueeze(im, node):
    axes = _axes_of(im, node, required=True)
    r = im.rank(node.inputs[0])
    axes = _axes(node, axes, None if r is None else r + len(axes))
    im.emit("unsqueeze", [node.inputs[0]], [node.outputs[0]], {"axes": axes}, node.name)


def _slice_attrs(im, node, starts, ends, axes, steps) -> dict:
    r = im.rank(node.inputs[0])
    n = len(starts)
    axes = list(range(n)) if axes is None else axes
    steps = [1] * n if steps is None else steps
    if not len(ends) == len(axes) == len(steps) == n:
        raise _shape_error(node, f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if 0 in steps:
        raise _shape_error(node, f"steps {steps} contain 0")
    return {"starts": starts, "ends": ends, "axes": _axes(node, axes, r), "steps": steps}


@_converter("Slice", arity=(3, 5, 1))
def _slice(im, node):
    x, y = node.inputs[0], node.outputs[0]
    if im.opset < 10:
        a = node.attrs
        attrs = _slice_attrs(im, node, a.ints("starts"), a.ints("ends"), a.ints("axes", None), None)
        im.emit("slice", [x], [y], attrs, node.name)
        return
    extra = [node.input(i) for i in range(1, 5)]
    if all(not n or im.is_const(n) for n in extra):
        vals = [None if not n else _int_values(node, im.const(n), what)
                for n, what in zip(extra, ("starts", "ends", "axes", "steps"))]
        im.emit("slice", [x], [y], _slice_attrs(im, node, *vals), node.name)
    else:
        while extra and not extra[-1]:
            extra.pop()
        for n, what in zip(extra, ("starts", "ends", "axes", "steps")):
            _check_shape(node, n, im.shape_of(n) if n else None, 1, f"the {what} input")
        im.emit("slice", [x] + extra, [y], {}, node.name)


@_converter("Shape", arity=(1, 1, 1))
def _shape(im, node):
    attrs = {}
    for key in ("start", "end"):
        if key in node.attrs:
            attrs[key] = node.attrs.int(key)
            if abs(attrs[key]) > 2 ** 62:
                raise _shape_error(node, f"{key} {attrs[key]} is out of range")
    im.emit("shape", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("Cast", arity=(1, 1, 1))
def _cast(im, node):
    from onnx import helper
    to = node.attrs.int("to")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, ValueError, TypeError):
        raise _bad(node, f"'to' {to} is not an ONNX data type") from None
    if dtype.name not in _RUNTIME_DTYPES:
        raise _unsupported(node, f"cast to {dtype.name}")
    im.emit("cast", [node.inputs[0]], [node.outputs[0]], {"dtype": dtype.name}, node.name)


@_converter("Gather", arity=(2, 2, 1))
def _gather(im, node):
    x, idx = node.inputs[0], node.inputs[1]
    xs = im.shape_of(x)
    if xs is not None and len(xs) == 0:
        raise _shape_error(node, f"data {x!r} is a scalar")
    axis = _axis(node, node.attrs.int("axis", 0), None if xs is None else len(xs))
    if im.is_const(idx):
        index = im.const(idx)
        if index.dtype.kind not in "iu":
            raise _shape_error(node, f"indices {idx!r} must be integers, got {index.dtype.name}")
        dim = None if xs is None else xs[axis]
        if dim is not None and index.size and not (-dim <= int(index.min()) and int(index.max()) < dim):
            raise _shape_error(node, f"indices {idx!r} (range [{index.min()}, {index.max()}]) are out of range "
                                     f"for axis {axis} of size {dim}")
    im.emit("gather", [x, idx], [node.outputs[0]], {"axis": axis}, node.name)


@_converter("Expand", arity=(2, 2, 1))
def _expand(im, node):
    x, shape = node.inputs[0], node.inputs[1]
    if im.is_const(shape):
        target = _int_values(node, im.const(shape), "the shape input")
        if any(t < 0 for t in target) or len(target) > _MAX_RANK:
            raise _shape_error(node, f"target shape {target} is not a shape")
        xs = im.shape_of(x)
        if xs is not None:
            _check_broadcast(node, xs, tuple(target))
    _check_shape(node, shape, im.shape_of(shape), 1, "the shape input")
    im.emit("expand", [x, shape], [node.outputs[0]], {}, node.name)


@_converter("Split", arity=(1, 2, ANY))
def _split(im, node):
    x = node.inputs[0]
    shape = im.shape_of(x)
    axis = _axis(node, node.attrs.int("axis", 0), None if shape is None else len(shape))
    if im.opset >= 13:
        v = _const_input(im, node, 1, "split sizes")
        split = None if v is None else _int_values(node, v, "split sizes")
    else:
        split = node.attrs.ints("split", None)
    n = len(node.outputs)
    dim = None if shape is None or axis < 0 else shape[axis]
    if split is None:
        if dim is None:
            raise _unsupported(node, "an equal split needs a static size along the axis")
        if im.opset >= 18:
            parts = node.attrs.int("num_outputs", n)
            if parts != n:
                raise _bad(node, f"num_outputs {parts} but {n} outputs")
            chunk = -(-dim // n)
            split = [min(chunk, max(dim - k * chunk, 0)) for k in range(n)]
        else:
            if dim % n:
                raise _shape_error(node, f"axis {axis} of size {dim} does not split into {n} equal parts")
            split = [dim // n] * n
    if len(split) != n or any(s < 0 for s in split):
        raise _shape_error(node, f"split sizes {split} must be {n} sizes >= 0, one per output")
    if dim is not None and sum(split) != dim:
        raise _shape_error(node, f"split sizes {split} add up to {sum(split)}, not to the size {dim} of axis {axis}")
    start = 0
    for k, (out, size) in enumerate(zip(node.outputs, split)):
        attrs = {"axes": [axis], "starts": [start], "ends": [start + size], "steps": [1]}
        if out:
            im.emit("slice", [x], [out], attrs, f"{node.name}/{k}" if k else node.name)
        start += size
