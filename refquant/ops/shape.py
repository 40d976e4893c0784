"""Shape ops: reshape, flatten, transpose, concat. Their gradients undo the rearrangement."""
from __future__ import annotations

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
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(x_shape)) // known if known else 0
    if int(np.prod(out)) != int(np.prod(x_shape)):
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
@register("reshape", backward=_back_to_input_shape, check=_check_target)
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
    return tuple(x_shape[:start]) + (int(np.prod(x_shape[start:stop + 1])),) + tuple(x_shape[stop + 1:])


@register("flatten", backward=_back_to_input_shape, shape=lambda attrs, x: (_flat_shape(x, attrs),),
          check=attr_spec(start_axis="int", stop_axis="int"))
def flatten(ctx, attrs, x):
    """y = x with dimensions start_axis..stop_axis (inclusive) merged into one."""
    ctx.save(x.shape)
    return x.reshape(_flat_shape(x.shape, attrs))


# ---- transpose --------------------------------------------------------------------------------------
def _transpose_grad(ctx, attrs, g):
    return (np.transpose(g, np.argsort(attrs["perm"])),)


@register("transpose", backward=_transpose_grad, shape=lambda attrs, x: (tuple(x[p] for p in attrs["perm"]),),
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


@register("concat", backward=_concat_grad, shape=_concat_shape, check=attr_spec(axis="int"))
def concat(ctx, attrs, *xs):
    """y = concatenate(xs, axis)."""
    axis = int(attrs.get("axis", 0))
    ctx.save([x.shape[axis] for x in xs])
    return np.concatenate(xs, axis=axis)
