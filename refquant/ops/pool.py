"""pool2d (NCHW): max / avg over kh x kw windows, global pooling, ceil_mode and exclusive averaging.

Output size per spatial dimension, with padding (lo, hi), kernel k and stride s:

    floor mode: (size + lo + hi - k) // s + 1
    ceil mode:  ceil((size + lo + hi - k) / s) + 1, minus one if that last window would start past the input
                and the left padding ((out - 1) * s >= size + lo), the rule of ONNX and PyTorch.

Windows that run past the bottom / right padding (ceil mode) read nothing there. Only kernel taps that read
some input element are visited, so a window far larger than the input (a 1 x 3,000,000 average over an 8 x 8
map, valid with enough padding) costs what the input costs, not what the window does. ``avg`` divides by the number
of input elements in the window when ``exclusive`` (the default), else by kh*kw (Paddle's inclusive count).
``max`` backward routes each output gradient to the window's maximum; on ties the first one in row-major
window order gets it all.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from ..errors import ShapeError, UnsupportedOpError
from ..reference.im2col import check_geometry, check_size
from .conv import check_window_attrs, pads4, pair
from .registry import attr_bool, attr_choice, register


def _check(attrs, inputs):
    """Load-time check: ``ksize`` (unless ``global_pooling``), strides, paddings as conv's, the mode flags."""
    global_pooling = attr_bool(attrs, "global_pooling")
    check_window_attrs(attrs, None if global_pooling else "ksize")
    attr_choice(attrs, "pooling_type", ("max", "avg"), "max")
    attr_choice(attrs, "data_format", ("NCHW", "NHWC"), "NCHW")
    attr_bool(attrs, "ceil_mode")
    attr_bool(attrs, "exclusive", True)


def pool_out_size(size, k, s, lo, hi, ceil_mode):
    """Output length of one spatial dimension (module docstring: floor and ceil mode)."""
    if not ceil_mode:
        return (size + lo + hi - k) // s + 1
    out = -(-(size + lo + hi - k) // s) + 1
    return out - 1 if (out - 1) * s >= size + lo else out


def _geometry(attrs, x_shape):
    """(kernel, stride, (top, left), oh, ow) after the shared geometry check of the attributes against the input;
    windows of the last ceil-mode row / column may run past the bottom / right padding and read nothing there."""
    h, w = x_shape[2], x_shape[3]
    if attrs.get("global_pooling", False):
        return (h, w), (1, 1), (0, 0), 1, 1
    k, s = pair(attrs["ksize"]), pair(attrs.get("strides", [1, 1]))
    pad = pads4(attrs.get("paddings", [0, 0, 0, 0]))
    oh, ow = check_geometry("pool2d", (h, w), k, s, pad)
    if attrs.get("ceil_mode", False):
        oh = pool_out_size(h, k[0], s[0], pad[0], pad[2], True)
        ow = pool_out_size(w, k[1], s[1], pad[1], pad[3], True)
    if oh < 0 or ow < 0:  # 0 is an empty output (a window that just misses), as the float conv gives
        raise ShapeError(f"pool2d: kernel {k} with stride {s} does not fit the padded input {(h, w)} + padding "
                         f"{pad} (output {(oh, ow)})")
    check_size("pool2d", x_shape[0], x_shape[1], oh, ow)
    return k, s, (pad[0], pad[1]), oh, ow


def _shape(attrs, x):
    if attrs.get("data_format", "NCHW") == "NHWC":
        _, _, _, oh, ow = _geometry(attrs, (x[0], x[3], x[1], x[2]))
        return ((x[0], oh, ow, x[3]),)
    _, _, _, oh, ow = _geometry(attrs, x)
    return ((x[0], x[1], oh, ow),)


def _axis_taps(k, s, lo, size, out):
    """The kernel offsets t along one axis that read the input for some output index, each as (t, o0, i0, n):
    outputs o0 .. o0+n-1 read input indices i0, i0+s, ... (o*s + t - lo, all inside [0, size)); offsets that
    only ever read padding are left out, so the work is bounded by the input, not by the window size."""
    cand = range(max(0, lo - (out - 1) * s), min(k, lo + size))
    if len(cand) > out * size:  # sparse: the union, output by output, of the offsets that land inside
        cand = sorted({t for o in range(out) for t in range(max(0, lo - o * s), min(k, lo - o * s + size))})
    taps = []
    for t in cand:
        o0 = max(0, -(-(lo - t) // s))
        o1 = min(out, (lo + size - 1 - t) // s + 1)
        if o1 > o0:
            taps.append((t, o0, o0 * s + t - lo, o1 - o0))
    return taps


def _taps(x_hw, k, s, pad, oh, ow):
    """Every (rows, cols) pair of :func:`_axis_taps` in row-major window order: ``y[..., rows_out, cols_out]``
    reads ``x[..., rows_in, cols_in]``, as basic-slice pairs."""
    rows = _axis_taps(k[0], s[0], pad[0], x_hw[0], oh)
    cols = _axis_taps(k[1], s[1], pad[1], x_hw[1], ow)
    for _, p0, r0, nr in rows:
        for _, q0, c0, nc in cols:
            yield ((slice(p0, p0 + nr), slice(q0, q0 + nc)),
                   (slice(r0, r0 + s[0] * (nr - 1) + 1, s[0]), slice(c0, c0 + s[1] * (nc - 1) + 1, s[1])))


def _valid_count(k, s, lo, size, out):
    """Per output index along one axis: how many kernel offsets read the input (not the padding)."""
    o = np.arange(out)
    first = np.maximum(0, lo - o * s)
    last = np.minimum(k, lo + size - o * s)
    return np.maximum(last - first, 0)


def _avg_divisor(attrs, x, k, s, pad, oh, ow):
    """Per output position: the count of input elements in the window (exclusive), else kh*kw."""
    if not attrs.get("exclusive", True):
        return k[0] * k[1]
    h, w = x.shape[2:]
    count = _valid_count(k[0], s[0], pad[0], h, oh)[:, None] * _valid_count(k[1], s[1], pad[1], w, ow)[None, :]
    return count.astype(x.dtype)


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
    x, y, divisor, (k, s, pad, oh, ow) = ctx.saved
    dx = np.zeros_like(x)
    if attrs.get("pooling_type", "max") == "max":
        taken = np.zeros(y.shape, dtype=bool)
        for (po, qo), (pi, qi) in _taps(x.shape[2:], k, s, pad, oh, ow):
            hit = (x[:, :, pi, qi] == y[:, :, po, qo]) & ~taken[:, :, po, qo]
            taken[:, :, po, qo] |= hit
            dx[:, :, pi, qi] += gy[:, :, po, qo] * hit
    else:
        g = gy / divisor
        for (po, qo), (pi, qi) in _taps(x.shape[2:], k, s, pad, oh, ow):
            dx[:, :, pi, qi] += g[:, :, po, qo]
    return (dx,)


def _pool_nchw(attrs, x):
    """The windows of an (N, C, H, W) array: (y, divisor or None, geometry). Only kernel taps that read the input
    are visited; padding never wins a max and adds nothing to a sum."""
    k, s, pad, oh, ow = geometry = _geometry(attrs, x.shape)
    taps = _taps(x.shape[2:], k, s, pad, oh, ow)
    if attrs.get("pooling_type", "max") == "max" and x.dtype == np.float32:  # the same maxima, compiled
        return _dispatch.kernel("floatops").max_pool_f32(np.ascontiguousarray(x), k, s, pad, (oh, ow)), None, geometry
    if attrs.get("pooling_type", "max") == "max":
        y = np.full(x.shape[:2] + (oh, ow), -np.inf, dtype=x.dtype)
        for (po, qo), (pi, qi) in taps:
            np.maximum(y[:, :, po, qo], x[:, :, pi, qi], out=y[:, :, po, qo])
        return y, None, geometry
    y = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for (po, qo), (pi, qi) in taps:
        y[:, :, po, qo] += x[:, :, pi, qi]
    divisor = _avg_divisor(attrs, x, k, s, pad, oh, ow)
    return y / divisor, divisor, geometry


def _pool2d_nhwc(attrs, x):
    """pool2d on NHWC (what convert_to_int8 emits between NHWC float tensors): the same windows, on axes 1, 2;
    a float32 global average is the compiled ``global_avg_pool_f32`` (float64 sums) or its NumPy twin."""
    if attrs.get("global_pooling", False):
        if attrs.get("pooling_type", "max") == "max":
            return x.max(axis=(1, 2), keepdims=True)
        if x.dtype == np.float32:
            gap = _dispatch.kernel("floatops").global_avg_pool_f32(np.ascontiguousarray(x))
            return gap.reshape(x.shape[0], 1, 1, x.shape[3])
        return x.mean(axis=(1, 2), keepdims=True)
    nchw = x.transpose(0, 3, 1, 2)
    if attrs.get("pooling_type", "max") == "max":
        y, _, _ = _pool_nchw(attrs, nchw)
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
    # average: the NCHW sums, tap by tap in the same order (the same bits), on whole pixels of C channels
    k, s, pad, oh, ow = _geometry(attrs, nchw.shape)
    y = np.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=x.dtype)
    for (po, qo), (pi, qi) in _taps(x.shape[1:3], k, s, pad, oh, ow):
        y[:, po, qo] += x[:, pi, qi]
    divisor = _avg_divisor(attrs, nchw, k, s, pad, oh, ow)
    return y / (divisor[:, :, None] if np.ndim(divisor) else divisor)


@register("pool2d", observed=True, backward=_pool2d_grad, shape=_shape, check=_check)
def pool2d(ctx, attrs, x):
    """max: y = max over the window of x_pad (padding never wins); avg: y = sum over the window / divisor.
    ``data_format`` "NHWC": the same on an NHWC tensor (:func:`_pool2d_nhwc`; inference only)."""
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ShapeError(f"pool2d: expected a 4-D input, got shape {getattr(x, 'shape', None)}")
    if attrs.get("data_format", "NCHW") == "NHWC":
        return _pool2d_nhwc(attrs, x)
    if attrs.get("global_pooling", False):  # one window over all of H, W: a plain reduction
        ctx.save(x)
        if attrs.get("pooling_type", "max") == "max":
            return np.max(x, axis=(2, 3), keepdims=True)
        if x.dtype == np.float32 and x.shape[2] * x.shape[3]:  # numpy.mean's bits, compiled
            return _dispatch.kernel("floatops").global_avg_pool_nchw_f32(np.ascontiguousarray(x))
        return np.mean(x, axis=(2, 3), keepdims=True)
    y, divisor, geometry = _pool_nchw(attrs, x)
    ctx.save(x, y, divisor, geometry)
    return y
