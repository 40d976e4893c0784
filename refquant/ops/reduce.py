"""Reductions: mean (to a scalar), reduce_mean and reduce_sum over ``dim`` (None or [] = all dims)."""
from __future__ import annotations

import math

import numpy as np

from .registry import attr_spec, register


def _dims(attrs, ndim):
    dim = attrs.get("dim")
    if dim is None or (not np.isscalar(dim) and len(dim) == 0):
        return tuple(range(ndim))
    return tuple(sorted(int(d) % ndim for d in np.atleast_1d(dim)))


_check = attr_spec(dim="ints", keep_dim="bool")


def _reduce_shape(attrs, x):
    dims = _dims(attrs, len(x))
    if attrs.get("keep_dim", False):
        return (tuple(1 if i in dims else n for i, n in enumerate(x)),)
    return (tuple(n for i, n in enumerate(x) if i not in dims),)


def _spread(ctx, attrs, g, divide):
    """dL/dx of a sum (or mean) over ``dim``: g broadcast back over the reduced dims (divided by their size)."""
    (x_shape,) = ctx.saved
    dims = _dims(attrs, len(x_shape))
    if not attrs.get("keep_dim", False):
        g = np.expand_dims(g, dims)
    if divide:
        g = g / math.prod(x_shape[d] for d in dims)
    return (np.array(np.broadcast_to(g, x_shape)),)


@register("reduce_sum", observed=True, backward=lambda ctx, attrs, g: _spread(ctx, attrs, g, False), shape=_reduce_shape,
          check=_check)
def reduce_sum(ctx, attrs, x):
    """y = sum of x over ``dim``."""
    ctx.save(x.shape)
    return np.asarray(np.sum(x, axis=_dims(attrs, x.ndim), keepdims=bool(attrs.get("keep_dim", False))))


@register("reduce_mean", observed=True, backward=lambda ctx, attrs, g: _spread(ctx, attrs, g, True), shape=_reduce_shape,
          check=_check)
def reduce_mean(ctx, attrs, x):
    """y = mean of x over ``dim``."""
    ctx.save(x.shape)
    return np.asarray(np.mean(x, axis=_dims(attrs, x.ndim), keepdims=bool(attrs.get("keep_dim", False))))


@register("mean", backward=lambda ctx, attrs, g: _spread(ctx, {}, g, True), shape=lambda attrs, x: ((),))
def mean(ctx, attrs, x):
    """y = mean of all elements of x, a 0-d array."""
    ctx.save(x.shape)
    return np.asarray(np.mean(x))
