"""Shape and indexing ops, as ONNX shape subgraphs use them: shape, slice, squeeze, unsqueeze, cast, gather, expand.

Semantics follow ONNX (``slice`` clamps out-of-range starts/ends per axis, negative axes count from the end,
``unsqueeze`` axes index the *output*). Integer outputs (``shape``) have no gradient; the others pass gradients
through to their float data input, never to index or shape inputs.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import attr_choice, attr_spec, register


CAST_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
               "float32", "float64")  # what ``cast`` converts to: plain numeric dtypes


def _norm_axes(axes, rank: int) -> list[int]:
    out = []
    for a in axes:
        a = int(a)
        if not -rank <= a < rank:
            raise ValueError(f"axis {a} out of range for rank {rank}")
        out.append(a % rank)
    return out


# ---- shape -------------------------------------------------------------------------------------------
def _shape_shape(attrs, x):
    n = len(range(len(x))[slice(attrs.get("start", 0), attrs.get("end"))])
    return ((n,),)


@register("shape", backward=lambda ctx, attrs, gy: (None,), shape=_shape_shape, check=attr_spec(start="int", end="int"))
def shape(ctx, attrs, x):
    """The input's shape as an int64 vector; ONNX's optional ``start`` / ``end`` attributes pick a range."""
    return np.array(x.shape[slice(attrs.get("start", 0), attrs.get("end"))], dtype=np.int64)


# ---- slice -------------------------------------------------------------------------------------------
def _slice_params(attrs, x, starts, ends, axes, steps):
    starts = list(attrs.get("starts", [])) if starts is None else [int(v) for v in np.ravel(starts)]
    ends = list(attrs.get("ends", [])) if ends is None else [int(v) for v in np.ravel(ends)]
    if axes is None:
        axes = attrs.get("axes")
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.ravel(axes)]
    if steps is None:
        steps = attrs.get("steps")
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.ravel(steps)]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"slice: starts {starts}, ends {ends}, axes {axes}, steps {steps} differ in length")
    return starts, ends, _norm_axes(axes, x.ndim), steps


def _slice_index(shape, starts, ends, axes, steps) -> tuple:
    """ONNX's clamping rules turned into a tuple of Python slices."""
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise ValueError("slice: step must not be 0")
        dim = shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start = min(max(start, 0), dim)
            end = min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        else:
            start = min(max(start, 0), dim - 1)
            end = min(max(end, -1), dim - 1)
            index[axis] = slice(start, None if end < 0 else end, step)
    return tuple(index)


def _slice_grad(ctx, attrs, gy):
    shape, dtype, index, n_extra = ctx.saved
    gx = np.zeros(shape, dtype=gy.dtype)
    gx[index] = gy
    return (gx,) + (None,) * n_extra


@register("slice", observed=True, backward=_slice_grad, check=attr_spec(starts="ints", ends="ints", axes="ints", steps="ints"))
def slice_(ctx, attrs, x, *rest):
    """ONNX Slice. ``starts`` / ``ends`` / ``axes`` / ``steps`` come from attributes or, when given, from
    optional int tensor inputs (in that order), so a slice bound computed at run time works too."""
    starts, ends, axes, steps = (list(rest) + [None] * 4)[:4]
    s, e, a, st = _slice_params(attrs, x, starts, ends, axes, steps)
    index = _slice_index(x.shape, s, e, a, st)
    ctx.save(x.shape, x.dtype, index, len(rest))
    return x[index].copy()


# ---- squeeze / unsqueeze -----------------------------------------------------------------------------
def _reshape_back(ctx, attrs, gy):
    (shape,) = ctx.saved
    return (gy.reshape(shape),)


def _squeeze_axes(attrs, shape) -> tuple:
    axes = attrs.get("axes")
    if axes is None or len(axes) == 0:
        return tuple(i for i, d in enumerate(shape) if d == 1)
    axes = _norm_axes(axes, len(shape))
    for a in axes:
        if shape[a] != 1:
            raise ValueError(f"squeeze: dimension {a} of shape {tuple(shape)} is not 1")
    return tuple(sorted(set(axes)))


def _squeeze_shape(attrs, x):
    axes = _squeeze_axes(attrs, x)
    return (tuple(d for i, d in enumerate(x) if i not in axes),)


@register("squeeze", backward=_reshape_back, shape=_squeeze_shape, check=attr_spec(axes="ints"))
def squeeze(ctx, attrs, x):
    """Drop the size-1 dimensions ``axes`` (all size-1 dimensions when ``axes`` is empty or absent)."""
    ctx.save(x.shape)
    return x.reshape(_squeeze_shape(attrs, x.shape)[0])


def _unsqueeze_shape(attrs, x):
    axes = attrs["axes"]
    rank = len(x) + len(axes)
    axes = sorted(_norm_axes(axes, rank))
    out = list(x)
    for a in axes:
        out.insert(a, 1)
    return (tuple(out),)


@register("unsqueeze", backward=_reshape_back, shape=_unsqueeze_shape, check=attr_spec(axes="ints!"))
def unsqueeze(ctx, attrs, x):
    """Insert size-1 dimensions at ``axes`` (positions in the output, negative counts from its end)."""
    ctx.save(x.shape)
    return x.reshape(_unsqueeze_shape(attrs, x.shape)[0])


# ---- cast --------------------------------------------------------------------------------------------
def _cast_grad(ctx, attrs, gy):
    (dtype,) = ctx.saved
    if np.dtype(dtype).kind != "f" or np.asarray(gy).dtype.kind != "f":
        return (None,)
    return (gy.astype(dtype),)


@register("cast", backward=_cast_grad, shape=lambda attrs, x: (tuple(x),), 
          check=lambda attrs, inputs: attr_choice(attrs, "dtype", CAST_DTYPES))
def cast(ctx, attrs, x):
    """Convert to ``dtype`` (a NumPy dtype name: "float32", "int64", "bool", ...)."""
    ctx.save(np.asarray(x).dtype)
    return np.asarray(x).astype(np.dtype(attrs["dtype"]))


# ---- gather ------------------------------------------------------------------------------------------
def _gather_grad(ctx, attrs, gy, _=None):
    shape, index, axis = ctx.saved
    gx = np.zeros(shape, dtype=gy.dtype)
    idx = np.where(index < 0, index + shape[axis], index)
    moved = np.moveaxis(gy, list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    np.add.at(np.moveaxis(gx, axis, 0), idx, moved)
    return gx, None


@register("gather", backward=_gather_grad, check=attr_spec(axis="int"))
def gather(ctx, attrs, x, index):
    """ONNX Gather: ``np.take(x, index, axis)``; the output has shape
    ``x.shape[:axis] + index.shape + x.shape[axis+1:]`` (a scalar index drops the axis)."""
    axis = _norm_axes([attrs.get("axis", 0)], x.ndim)[0]
    index = np.asarray(index).astype(np.int64)
    ctx.save(x.shape, index, axis)
    return np.take(x, index, axis=axis)


# ---- expand ------------------------------------------------------------------------------------------
def _expand_grad(ctx, attrs, gy, _=None):
    shape, n_inputs = ctx.saved
    g = gy.sum(axis=tuple(range(gy.ndim - len(shape)))) if gy.ndim > len(shape) else gy
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return (g,) + (None,) * (n_inputs - 1)


def _check_expand(attrs, inputs):
    if len(inputs) < 2 or not inputs[1]:
        attr_spec(shape="ints!")(attrs, inputs)


@register("expand", backward=_expand_grad, check=_check_expand)
def expand(ctx, attrs, x, *rest):
    """ONNX Expand: broadcast ``x`` against ``shape`` (the int tensor input, else the ``shape`` attribute)."""
    shape = rest[0] if rest else None
    target = tuple(int(v) for v in (np.ravel(shape) if shape is not None else attrs["shape"]))
    if len(target) > 32 or min(target, default=0) < 0:  # NumPy broadcasts at most 32 operand dimensions
        raise ShapeError(f"expand: target shape {target[:40]} must have at most 32 non-negative dimensions")
    ctx.save(x.shape, 1 + len(rest))
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, target)))
