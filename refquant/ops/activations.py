"""Elementwise activations (and softmax): forward, vector-Jacobian product and shape rule of each.

Attributes are read with Paddle's defaults (docs/ops.md). Scalars from attributes are Python floats, so a
float32 input stays float32.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, expit

from .._dispatch import kernel
from ..threads import float_kernel_threads
from .registry import attr_spec, register, same_shape


_F32_MAX = float(np.finfo(np.float32).max)


def _floatops(x):
    """The float32 kernels for a float32 array ``x``: the compiled module, or its NumPy twin when it is not built
    or forced off (the same bits); None for other dtypes, which keep the scipy / NumPy code."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        return None
    return kernel("floatops")


def _relu_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (gy * (y > 0),)


@register("relu", observed=True, backward=_relu_grad, shape=same_shape)
def relu(ctx, attrs, x):
    """y = max(x, 0) (float32: the floatops kernel, NumPy's bits at memory speed)."""
    f = _floatops(x)
    y = np.maximum(x, 0) if f is None else f.relu_f32(np.ascontiguousarray(x), max_threads=float_kernel_threads())
    ctx.save(y)
    return y


def _relu6_grad(ctx, attrs, gy):
    (x,) = ctx.saved
    return (gy * ((x > 0) & (x < float(attrs.get("threshold", 6.0)))),)


@register("relu6", observed=True, backward=_relu6_grad, shape=same_shape, check=attr_spec(threshold="float"))
def relu6(ctx, attrs, x):
    """y = clip(x, 0, threshold) (float32: the floatops kernel, as relu)."""
    ctx.save(x)
    t, f = float(attrs.get("threshold", 6.0)), _floatops(x)
    if f is None or not abs(t) <= _F32_MAX:  # NaN or beyond float32: NumPy's clip decides
        return np.clip(x, 0, t)
    return f.relu_f32(np.ascontiguousarray(x), t, max_threads=float_kernel_threads())


def _hard_sigmoid_grad(ctx, attrs, gy):
    (u,) = ctx.saved
    return (gy * (float(attrs.get("slope", 0.2)) * ((u > 0) & (u < 1))),)


@register("hard_sigmoid", observed=True, backward=_hard_sigmoid_grad, shape=same_shape, check=attr_spec(slope="float", offset="float"))
def hard_sigmoid(ctx, attrs, x):
    """y = clip(slope * x + offset, 0, 1)."""
    u = np.multiply(x, float(attrs.get("slope", 0.2)))
    u += float(attrs.get("offset", 0.5))
    ctx.save(u)
    return np.clip(u, 0, 1)


def _hard_swish_attrs(attrs):
    return (float(attrs.get("threshold", 6.0)), float(attrs.get("scale", 6.0)), float(attrs.get("offset", 3.0)))


def _hard_swish_grad(ctx, attrs, gy):
    (x,) = ctx.saved
    threshold, scale, offset = _hard_swish_attrs(attrs)
    u = x + offset
    dy = np.where(u >= threshold, threshold / scale, (2 * x + offset) / scale) * (u > 0)
    return (gy * dy,)


@register("hard_swish", observed=True, backward=_hard_swish_grad, shape=same_shape,
          check=attr_spec(threshold="float", scale="float", offset="float"))
def hard_swish(ctx, attrs, x):
    """y = x * clip(x + offset, 0, threshold) / scale."""
    threshold, scale, offset = _hard_swish_attrs(attrs)
    ctx.save(x)
    y = np.add(x, offset)  # the same operations in place on one array: x * clip(x + offset, 0, threshold) / scale
    np.clip(y, 0, threshold, out=y)
    y *= x
    y /= scale
    return y


def _sigmoid_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (gy * y * (1 - y),)


@register("sigmoid", observed=True, backward=_sigmoid_grad, shape=same_shape)
def sigmoid(ctx, attrs, x):
    """y = 1 / (1 + exp(-x)); float32 runs the float32 kernel (relative error <= 1.8e-7, see
    refquant/reference/floatops.py), other dtypes scipy's expit."""
    kernels = _floatops(x)
    if kernels is not None:
        y = kernels.sigmoid(np.require(x, requirements="C"), max_threads=float_kernel_threads())
    else:
        y = expit(x)
    ctx.save(y)
    return y


def _tanh_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (gy * (1 - y * y),)


@register("tanh", observed=True, backward=_tanh_grad, shape=same_shape)
def tanh(ctx, attrs, x):
    """y = tanh(x)."""
    y = np.tanh(x)
    ctx.save(y)
    return y


_GELU_C = math.sqrt(2 / math.pi)  # tanh form: u = sqrt(2/pi) * (x + 0.044715 x^3)


def _gelu_grad(ctx, attrs, gy):
    (x,) = ctx.saved
    if attrs.get("approximate", False):
        t = np.tanh(_GELU_C * (x + 0.044715 * x ** 3))
        dy = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x * x)
    else:
        dy = 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return (gy * dy,)


@register("gelu", observed=True, backward=_gelu_grad, shape=same_shape, check=attr_spec(approximate="bool"))
def gelu(ctx, attrs, x):
    """y = x/2 * (1 + erf(x / sqrt(2))); approximate: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).

    The float32 erf form runs the float32 kernel (erf approximated in float32, abs error <= 2e-7; see
    refquant/reference/floatops.py); float64 uses scipy's erf."""
    ctx.save(x)
    if attrs.get("approximate", False):
        return 0.5 * x * (1 + np.tanh(_GELU_C * (x + 0.044715 * x ** 3)))
    kernels = _floatops(x)
    if kernels is not None:
        return kernels.gelu_erf(np.require(x, requirements="C"), max_threads=float_kernel_threads())
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _clip_bounds(attrs):
    return float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))


def _clip_grad(ctx, attrs, gy):
    (x,) = ctx.saved
    lo, hi = _clip_bounds(attrs)
    return (gy * ((x > lo) & (x < hi)),)


@register("clip", observed=True, backward=_clip_grad, shape=same_shape, check=attr_spec(min="real", max="real"))
def clip(ctx, attrs, x):
    """y = min(max(x, min), max); the gradient is 0 at and beyond the bounds."""
    ctx.save(x)
    return np.clip(x, *_clip_bounds(attrs))


def softmax_vjp(y, gy, axis):
    """dL/dx of y = softmax(x, axis): y * (gy - sum(gy * y, axis))."""
    return y * (gy - np.sum(gy * y, axis=axis, keepdims=True))


def log_softmax_array(x, axis):
    """x - max - log(sum(exp(x - max))) along ``axis`` (stable)."""
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _softmax_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (softmax_vjp(y, gy, int(attrs.get("axis", -1))),)


@register("softmax", observed=True, backward=_softmax_grad, shape=same_shape, check=attr_spec(axis="int"))
def softmax(ctx, attrs, x):
    """y = exp(x - max) / sum(exp(x - max)) along ``axis``; float32 over the last axis runs the float32 kernel
    (see refquant/reference/floatops.py)."""
    axis = int(attrs.get("axis", -1))
    kernels = _floatops(x)
    if kernels is not None and x.ndim > 0 and axis in (-1, x.ndim - 1):
        y = kernels.softmax_lastaxis(np.require(x, requirements="C"), max_threads=float_kernel_threads())
        ctx.save(y)
        return y
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    y = z / np.sum(z, axis=axis, keepdims=True)
    ctx.save(y)
    return y


def _log_softmax_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (gy - np.exp(y) * np.sum(gy, axis=int(attrs.get("axis", -1)), keepdims=True),)


@register("log_softmax", backward=_log_softmax_grad, shape=same_shape, check=attr_spec(axis="int"))
def log_softmax(ctx, attrs, x):
    """y = x - log(sum(exp(x))) along ``axis``."""
    y = log_softmax_array(x, int(attrs.get("axis", -1)))
    ctx.save(y)
    return y


def _sqrt_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (gy * 0.5 / y,)


@register("sqrt", backward=_sqrt_grad, shape=same_shape)
def sqrt(ctx, attrs, x):
    """y = sqrt(x)."""
    y = np.sqrt(x)
    ctx.save(y)
    return y


def _exp_grad(ctx, attrs, gy):
    (y,) = ctx.saved
    return (gy * y,)


@register("exp", backward=_exp_grad, shape=same_shape)
def exp(ctx, attrs, x):
    """y = exp(x)."""
    y = np.exp(x)
    ctx.save(y)
    return y


def _log_grad(ctx, attrs, gy):
    (x,) = ctx.saved
    return (gy / x,)


@register("log", backward=_log_grad, shape=same_shape)
def log(ctx, attrs, x):
    """y = log(x)."""
    ctx.save(x)
    return np.log(x)


def _scale_grad(ctx, attrs, gy):
    return (gy * float(attrs.get("scale", 1.0)),)


@register("scale", observed=True, backward=_scale_grad, shape=same_shape,
          check=attr_spec(scale="float", bias="float", bias_after_scale="bool"))
def scale(ctx, attrs, x):
    """y = scale * x + bias, or scale * (x + bias) when ``bias_after_scale`` is false. With bias 0 (and
    bias_after_scale) one pass, y = scale * x: the dtype is kept (float32 stays float32), and a -0 product stays -0
    (adding +0 would have made it +0)."""
    s, b = float(attrs.get("scale", 1.0)), float(attrs.get("bias", 0.0))
    if not attrs.get("bias_after_scale", True):
        return s * (x + b)
    return s * x if b == 0 else s * x + b
