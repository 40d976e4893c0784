"""Binary elementwise ops with NumPy broadcasting and Paddle's ``axis`` rule.

``axis`` -1 is plain NumPy broadcasting (trailing dimensions line up). ``axis`` k >= 0 lines the lower-rank
operand's dimensions up with the other's starting at dimension k: x (2, 3, 4, 5) + y (3, 4) with axis 1 adds
``y[None, :, :, None]``. Gradients are summed back over the broadcast dimensions (:func:`unbroadcast`).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import attr_spec, register


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` over the dimensions NumPy broadcasting added or stretched to reach it from ``shape``."""
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


def aligned_shapes(x_shape: tuple, y_shape: tuple, axis: int) -> tuple[tuple, tuple]:
    """The operands' shapes after Paddle's axis rule: the lower-rank one gets trailing 1s appended."""
    axis = int(axis)
    if axis == -1 or len(x_shape) == len(y_shape):
        return tuple(x_shape), tuple(y_shape)
    big, small = (x_shape, y_shape) if len(x_shape) > len(y_shape) else (y_shape, x_shape)
    trailing = len(big) - axis - len(small)
    if axis < 0 or trailing < 0:
        raise ShapeError(f"elementwise axis {axis} does not fit shapes {tuple(x_shape)} and {tuple(y_shape)}")
    small = tuple(small) + (1,) * trailing
    return (tuple(x_shape), small) if len(x_shape) > len(y_shape) else (small, tuple(y_shape))


def _shape(attrs, x, y):
    return (np.broadcast_shapes(*aligned_shapes(x, y, attrs.get("axis", -1))),)


def _binary(fn, grads):
    """Forward and backward of ``out = fn(x, y)``; ``grads(g, x, y, out)`` gives (dx, dy) before reduction."""

    def forward(ctx, attrs, x, y):
        xs, ys = aligned_shapes(x.shape, y.shape, attrs.get("axis", -1))
        xa, ya = x.reshape(xs), y.reshape(ys)
        out = fn(xa, ya)
        ctx.save(xa, ya, out, x.shape, y.shape)
        return out

    def backward(ctx, attrs, g):
        xa, ya, out, x_shape, y_shape = ctx.saved
        gx, gy = grads(g, xa, ya, out)
        return (unbroadcast(gx, xa.shape).reshape(x_shape) if ctx.needs_input_grad[0] else None,
                unbroadcast(gy, ya.shape).reshape(y_shape) if ctx.needs_input_grad[1] else None)

    return forward, backward


def _divide(x, y):
    """x / y; integer operands divide truncating toward zero (as C, Paddle and ONNX do)."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return np.sign(x) * np.sign(y) * (np.abs(x) // np.abs(y))
    return x / y


def _log_base(x):
    """log(x) where x > 0, else 0: d(x**y)/dy is taken as 0 where the logarithm is undefined."""
    return np.log(np.where(x > 0, x, 1))


_ELEMENTWISE = {
    # op type: (formula, forward, (dx, dy) before the reduction over broadcast dimensions)
    "elementwise_add": ("x + y", np.add, lambda g, x, y, out: (g, g)),
    "elementwise_sub": ("x - y", np.subtract, lambda g, x, y, out: (g, -g)),
    "elementwise_mul": ("x * y", np.multiply, lambda g, x, y, out: (g * y, g * x)),
    "elementwise_div": ("x / y", _divide, lambda g, x, y, out: (g / y, -g * out / y)),
    "elementwise_pow": ("x ** y", np.power, lambda g, x, y, out: (g * y * x ** (y - 1), g * out * _log_base(x))),
    # Paddle's grad kernels: the gradient goes to x where x > y (max) or x < y (min), to y on ties
    "elementwise_max": ("max(x, y)", np.maximum, lambda g, x, y, out: (g * (x > y), g * (x <= y))),
    "elementwise_min": ("min(x, y)", np.minimum, lambda g, x, y, out: (g * (x < y), g * (x >= y))),
}

_OBSERVED = {"elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_pow"}  # Paddle's act-op dict

for _type, (_formula, _fn, _grads) in _ELEMENTWISE.items():
    _forward, _backward = _binary(_fn, _grads)
    _forward.__doc__ = f"out = {_formula}, broadcast with Paddle's axis rule."
    register(_type, backward=_backward, shape=_shape, check=attr_spec(axis="int"),
             observed=_type in _OBSERVED)(_forward)
