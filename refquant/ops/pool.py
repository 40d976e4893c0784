"""pool2d (NCHW): max / avg over kh x kw windows, global pooling, ceil_mode and exclusive averaging.

Output size per spatial dimension, with padding (lo, hi), kernel k and stride s:

    floor mode: (size + lo + hi - k) // s + 1
    ceil mode:  ceil((size + lo + hi - k) / s) + 1, minus one if that last window would start past the input
                and the left padding ((out - 1) * s >= size + lo), the rule of ONNX and PyTorch.

Windows that run past the bottom / right padding (ceil mode) read nothing there. ``avg`` divides by the number
of input elements in the window when ``exclusive`` (the default), else by kh*kw (Paddle's inclusive count).
``max`` backward routes each output gradient to the window's maximum; on ties the first one in row-major
window order gets it all.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..reference.im2col import conv_out_size
from .conv import pads4, pad_input, pair, window
from .registry import register


def _out_size(size, k, s, lo, hi, ceil_mode):
    if not ceil_mode:
        return conv_out_size(size, k, s, lo, hi, 1)
    out = -(-(size + lo + hi - k) // s) + 1
    return out - 1 if (out - 1) * s >= size + lo else out


def _geometry(attrs, x_shape):
    """(kernel, stride, (top, left, bottom, right) with the bottom / right extended to the last window, oh, ow)."""
    h, w = x_shape[2], x_shape[3]
    if attrs.get("global_pooling", False):
        return (h, w), (1, 1), (0, 0, 0, 0), 1, 1
    k, s = pair(attrs["ksize"]), pair(attrs.get("strides", [1, 1]))
    top, left, bottom, right = pads4(attrs.get("paddings", [0, 0, 0, 0]))
    ceil_mode = attrs.get("ceil_mode", False)
    oh = _out_size(h, k[0], s[0], top, bottom, ceil_mode)
    ow = _out_size(w, k[1], s[1], left, right, ceil_mode)
    pad = (top, left, (oh - 1) * s[0] + k[0] - h - top, (ow - 1) * s[1] + k[1] - w - left)
    return k, s, pad, oh, ow


def _shape(attrs, x):
    if attrs.get("data_format", "NCHW") == "NHWC":
        _, _, _, oh, ow = _geometry(attrs, (x[0], x[3], x[1], x[2]))
        return ((x[0], oh, ow, x[3]),)
    _, _, _, oh, ow = _geometry(attrs, x)
    return ((x[0], x[1], oh, ow),)


def _taps(k):
    return [(i, j) for i in range(k[0]) for j in range(k[1])]


def _avg_divisor(attrs, x, k, s, pad, oh, ow):
    """Per output position: the count of input elements in the window (exclusive), else kh*kw."""
    if not attrs.get("exclusive", True):
        return k[0] * k[1]
    inside = pad_input(np.ones((1, 1) + x.shape[2:], dtype=x.dtype), *pad)
    return sum(window(inside, i, j, oh, ow, s) for i, j in _taps(k))[0, 0]


def _global_grad(ctx, attrs, gy):
    """avg: gy / (H*W) everywhere; max: gy to the first maximum of each (n, c) plane."""
    (x,) = ctx.saved
    if attrs.get("pooling_type", "max") != "max":
        return (np.broadcast_to(gy / (x.shape[2] * x.shape[3]), x.shape).copy(),)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, flat.argmax(axis=2)[:, :, None], gy.reshape(flat.shape[:2] + (1,)), axis=2)
    return (dx.reshape(x.shape),)


def _pool2d_grad(ctx, attrs, gy):
    if attrs.get("data_format", "NCHW") == "NHWC":
        raise UnsupportedOpError("pool2d: no backward for data_format NHWC (INT8 inference graphs only)")
    if attrs.get("global_pooling", False):
        return _global_grad(ctx, attrs, gy)
    x_shape, xp, y, divisor, geometry = ctx.saved
    k, s, pad, oh, ow = geometry
    dxp = np.zeros_like(xp)
    if attrs.get("pooling_type", "max") == "max":
        taken = np.zeros(y.shape, dtype=bool)
        for i, j in _taps(k):
            hit = (window(xp, i, j, oh, ow, s) == y) & ~taken
            taken |= hit
            window(dxp, i, j, oh, ow, s)[...] += gy * hit
    else:
        g = gy / divisor
        for i, j in _taps(k):
            window(dxp, i, j, oh, ow, s)[...] += g
    h, w = x_shape[2:]
    return (dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w],)


def _pool2d_nhwc(attrs, x):
    """pool2d on NHWC (what convert_to_int8 emits between NHWC float tensors): the same windows, on axes 1, 2;
    a float32 global average is the compiled ``global_avg_pool_f32`` (float64 sums) or its NumPy twin."""
    if attrs.get("global_pooling", False):
        if attrs.get("pooling_type", "max") == "max":
            return x.max(axis=(1, 2), keepdims=True)
        if x.dtype == np.float32:
            from .._dispatch import compiled
            from ..reference import qdirect
            gap = (compiled("qdirect") or qdirect).global_avg_pool_f32(np.ascontiguousarray(x))
            return gap.reshape(x.shape[0], 1, 1, x.shape[3])
        return x.mean(axis=(1, 2), keepdims=True)
    n, h, w, c = x.shape
    k, s, pad, oh, ow = _geometry(attrs, (n, c, h, w))
    is_max = attrs.get("pooling_type", "max") == "max"
    widths = ((0, 0), (pad[0], max(pad[2], 0)), (pad[1], max(pad[3], 0)), (0, 0))
    xp = np.pad(x, widths, constant_values=-np.inf if is_max else 0.0) if any(sum(widths, ())) else x

    def win(i, j):
        return xp[:, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1], :]
    if is_max:
        y = win(0, 0).copy()
        for i, j in _taps(k)[1:]:
            np.maximum(y, win(i, j), out=y)
        return y
    divisor = _avg_divisor(attrs, x.transpose(0, 3, 1, 2), k, s, pad, oh, ow)
    return sum(win(i, j) for i, j in _taps(k)) / np.asarray(divisor, x.dtype)[..., None]


@register("pool2d", backward=_pool2d_grad, shape=_shape)
def pool2d(ctx, attrs, x):
    """max: y = max over the window of x_pad (padding never wins); avg: y = sum over the window / divisor.
    ``data_format`` "NHWC": the same on an NHWC tensor (:func:`_pool2d_nhwc`; inference only)."""
    if attrs.get("data_format", "NCHW") == "NHWC":
        return _pool2d_nhwc(attrs, x)
    if attrs.get("global_pooling", False):  # one window over all of H, W: a plain reduction
        ctx.save(x)
        reduce = np.max if attrs.get("pooling_type", "max") == "max" else np.mean
        return reduce(x, axis=(2, 3), keepdims=True)
    k, s, pad, oh, ow = _geometry(attrs, x.shape)
    if attrs.get("pooling_type", "max") == "max":
        xp = pad_input(x, *pad, value=-np.inf)
        y = window(xp, 0, 0, oh, ow, s).copy()
        for i, j in _taps(k)[1:]:
            np.maximum(y, window(xp, i, j, oh, ow, s), out=y)
        divisor = None
    else:
        xp = pad_input(x, *pad)
        divisor = _avg_divisor(attrs, x, k, s, pad, oh, ow)
        y = sum(window(xp, i, j, oh, ow, s) for i, j in _taps(k)) / divisor
    ctx.save(x.shape, xp, y, divisor, (k, s, pad, oh, ow))
    return y
