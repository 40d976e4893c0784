"""Shape ops: reshape, flatten, transpose, concat. Their gradients undo the rearrangement."""
from __future__ import annotations

import math

import numpy as np

from ..errors import GraphError, ShapeError
from .registry import attr_ints, attr_spec, register


def _back_to_input_shape(ctx, attrs, g):
    return (g.reshape(ctx.saved[0]),) + (None,) * (len(ctx.needs_input_grad) - 1)


# ---- reshape ----------------------------------------------------------------------------------------
def reshape_target(x_shape, shape):
    """Paddle's / ONNX's target shape: 0 copies the input dimension at that position, -1 is inferred."""
    out = [x_shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape)]
    if out.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {list(shape)}")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(x_shape) // known if known else 0
    if math.prod(out) != math.prod(x_shape):
        raise ShapeError(f"reshape: cannot reshape {tuple(x_shape)} to {list(shape)}")
    return tuple(out)


def _check_target(attrs, inputs):
    """reshape / expand: the ``shape`` attribute (a list of ints) is required when no shape tensor is given."""
    if len(inputs) < 2 or not inputs[1]:
        attr_spec(shape="ints!")(attrs, inputs)


def _check_perm(attrs, inputs):
    perm = attr_ints(attrs, "perm")
    if sorted(perm) != list(range(len(perm))):
        raise GraphError(f"attribute 'perm' must be a permutation of 0..{len(perm) - 1}, got {perm}")


# no shape rule: the target may be a tensor's value
@register("reshape", observed=True, backward=_back_to_input_shape, check=_check_target)
def reshape(ctx, attrs, x, shape=None):
    """y = x.reshape(target), target = the ``shape`` tensor if given, else the ``shape`` attribute."""
    target = attrs["shape"] if shape is None else shape.tolist()
    ctx.save(x.shape)
    return x.reshape(reshape_target(x.shape, target))


# ---- flatten ----------------------------------------------------------------------------------------
def _flat_shape(x_shape, attrs):
    if not x_shape:
        return (1,)
    start, stop = (int(attrs.get("start_axis", 1)) % len(x_shape), int(attrs.get("stop_axis", -1)) % len(x_shape))
    return tuple(x_shape[:start]) + (math.prod(x_shape[start:stop + 1]),) + tuple(x_shape[stop + 1:])


@register("flatten", observed=True, backward=_back_to_input_shape, shape=lambda attrs, x: (_flat_shape(x, attrs),),
          check=attr_spec(start_axis="int", stop_axis="int"))
def flatten(ctx, attrs, x):
    """y = x with dimensions start_axis..stop_axis (inclusive) merged into one."""
    ctx.save(x.shape)
    return x.reshape(_flat_shape(x.shape, attrs))


# ---- transpose --------------------------------------------------------------------------------------
def _transpose_grad(ctx, attrs, g):
    return (np.transpose(g, np.argsort(attrs["perm"])),)


@register("transpose", observed=True, backward=_transpose_grad, shape=lambda attrs, x: (tuple(x[p] for p in attrs["perm"]),),
          check=_check_perm)
def transpose(ctx, attrs, x):
    """y = x.transpose(perm)."""
    return np.transpose(x, attrs["perm"])


# ---- concat -----------------------------------------------------------------------------------------
def _concat_shape(attrs, *shapes):
    axis = int(attrs.get("axis", 0)) % len(shapes[0])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return (tuple(out),)


def _concat_grad(ctx, attrs, g):
    (sizes,) = ctx.saved
    return tuple(np.split(g, np.cumsum(sizes)[:-1], axis=int(attrs.get("axis", 0))))


@register("concat", observed=True, backward=_concat_grad, shape=_concat_shape, check=attr_spec(axis="int"))
def concat(ctx, attrs, *xs):
    """y = concatenate(xs, axis)."""
    axis = int(attrs.get("axis", 0))
    ctx.save([x.shape[axis] for x in xs])
    return np.concatenate(xs, axis=axis)


# ---- pad3d ------------------------------------------------------------------------------------------
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad_widths(attrs, ndim):
    """Paddle's ``paddings`` (left, right, top, bottom, front, back) as np.pad widths of a 5-D input."""
    p = [int(v) for v in attrs["paddings"]]
    if ndim != 5:
        raise ShapeError(f"pad3d: input must be 5-D (N, C, D, H, W or N, D, H, W, C), got {ndim}-D")
    if len(p) != 6 or min(p) < 0:
        raise GraphError(f"pad3d: 'paddings' must be six non-negative ints, got {p}")
    spatial = [(p[4], p[5]), (p[2], p[3]), (p[0], p[1])]
    return [(0, 0), (0, 0)] + spatial if attrs.get("data_format", "NCDHW") == "NCDHW" \
        else [(0, 0)] + spatial + [(0, 0)]


def _pad_shape(attrs, x):
    return (tuple(d + lo + hi for d, (lo, hi) in zip(x, _pad_widths(attrs, len(x)))),)


def _pad_grad(ctx, attrs, g):
    """Each padded position sends its gradient back to the input element it copies (none in constant mode)."""
    x_shape, widths = ctx.saved
    mode = _PAD_MODES[attrs.get("mode", "constant")]
    for axis, (n, (lo, hi)) in enumerate(zip(x_shape, widths)):
        if lo == hi == 0:
            continue
        if mode == "constant":
            g = np.take(g, np.arange(lo, lo + n), axis=axis)
            continue
        src = np.pad(np.arange(n), (lo, hi), mode=mode)
        moved = np.moveaxis(g, axis, 0)
        acc = np.zeros((n,) + moved.shape[1:], dtype=g.dtype)
        np.add.at(acc, src, moved)
        g = np.moveaxis(acc, 0, axis)
    return (g,)


def _check_pad(attrs, inputs):
    attr_spec(paddings="ints!", mode=tuple(_PAD_MODES), value="float", data_format=("NCDHW", "NDHWC"))(attrs, inputs)


@register("pad3d", backward=_pad_grad, shape=_pad_shape, check=_check_pad)
def pad3d(ctx, attrs, x):
    """y = x padded on D, H, W by ``paddings`` (left, right, top, bottom, front, back): ``constant`` fills
    ``value``, ``reflect`` mirrors without repeating the edge, ``replicate`` repeats the edge, ``circular`` wraps."""
    widths = _pad_widths(attrs, x.ndim)
    mode = _PAD_MODES[attrs.get("mode", "constant")]
    if mode == "reflect" and any(max(lo, hi) >= n for n, (lo, hi) in zip(x.shape, widths) if lo or hi):
        raise ShapeError(f"pad3d: reflect padding {attrs['paddings']} must be smaller than the padded sizes "
                         f"{x.shape}")
    ctx.save(x.shape, widths)
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(attrs.get("value", 0.0), x.dtype))
    return np.pad(x, widths, mode=mode)


# ---- stack ------------------------------------------------------------------------------------------
def _stack_shape(attrs, *shapes):
    if any(tuple(s) != tuple(shapes[0]) for s in shapes):
        raise ShapeError(f"stack: inputs must have one shape, got {[tuple(s) for s in shapes]}")
    out = list(shapes[0])
    out.insert(int(attrs.get("axis", 0)) % (len(out) + 1), len(shapes))
    return (tuple(out),)


def _stack_grad(ctx, attrs, g):
    axis = int(attrs.get("axis", 0)) % g.ndim
    return tuple(np.take(g, k, axis=axis) for k in range(g.shape[axis]))


@register("stack", backward=_stack_grad, shape=_stack_shape, check=attr_spec(axis="int"))
def stack(ctx, attrs, *xs):
    """y = stack(xs, axis): the inputs, all of one shape, along a new dimension ``axis``."""
    return np.stack(xs, axis=int(attrs.get("axis", 0)))
