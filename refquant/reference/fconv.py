"""Float32 convolution on packed weights (groups 1, NCHW, inference), the NumPy twin of ``kernels/fconv.pyx`` and
its specification.

:func:`pack_weights` turns the (OC, C, KH, KW) weights into the GEMM's A operand once: panels of ``MR = 6`` rows,
``packed[i, k, r] = w.reshape(OC, K)[6 i + r, k]`` (zeros past OC), K = C * KH * KW. :func:`conv2d` computes

    y[n, o, p] = act((sum_k A[o, k] * im2col(x[n])[k, p] + bias[o]) + residual[n, o, p])

with ``act`` one of :data:`ACTIVATIONS` ("relu6" clips to [0, a]; "hard_sigmoid" is clip(v * a + b, 0, 1);
"hard_swish" is v * clip(v + a, 0, b) / c; NaN stays NaN), optionally followed by ``* post_scale + post_shift``
(each product and sum of the epilogue rounded on its own, as the ops it replaces). The twin sums with NumPy's
float32 matmul; the compiled paths sum each block of ``KC = 256`` values of k in registers in k order (fused
multiply-adds on avx2) and add the blocks in order (the avx2 tiles for 1x1 stride-1 convs with a long K on small
planes, vectors along output channels and x read in place, sum the same way: the same bits). Neither order is the
other's, so the results agree to rounding: with ``S = sum_k |A[o, k] x_k| + |bias[o]|`` (``+ |residual|``),
``|y - y_twin| <= 2 K eps32 S`` before the activation (eps32 = 2**-23: the worst case of two float32 summations;
tested, and measured at most 1.2e-2 of it on the test shapes) and the activations are 1-Lipschitz but hard_swish
(Lipschitz ``(2 |v| + a) / c`` around v). Each path gives the same bits for any thread count (every output is summed
by one tile, in the same order).

The validation helper here is shared with the compiled module, so both reject the same inputs the same way.
"""
from __future__ import annotations

import functools

import numpy as np

from .im2col import check_geometry, check_size, im2col, window_args
from .qdirect import check_array, check_int

MR = 6
KC = 256
ACTIVATIONS = {"": 0, "relu": 1, "relu6": 2, "hard_sigmoid": 3, "hard_swish": 4}


def pack_weights(w):
    """(OC, C, KH, KW) float32 weights -> the packed A operand, a C-contiguous (ceil(OC / 6), K, 6) float32 array
    (read-only: the convs that cache it rely on that)."""
    check_array("pack_weights: w", w, np.float32, 4)
    oc = w.shape[0]
    a = np.zeros((-(-oc // MR) * MR, w[0].size), np.float32)
    a[:oc] = w.reshape(oc, -1)
    packed = np.ascontiguousarray(a.reshape(-1, MR, a.shape[1]).transpose(0, 2, 1))
    packed.flags.writeable = False
    return packed


def epilogue(activation="", attrs=None):
    """(code, a, b, c) of an activation of the conv2d_bias_act op with its attributes (and their defaults); with
    ``post_scale`` / ``post_shift`` attributes, (code, a, b, c, post_scale, post_shift): y = act(v) * s + t."""
    attrs = attrs or {}
    if activation not in ACTIVATIONS:
        raise ValueError(f"fconv: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    f = attrs.get
    post = (float(f("post_scale", 1.0)), float(f("post_shift", 0.0))) if "post_scale" in attrs or \
        "post_shift" in attrs else ()
    if activation == "relu6":
        return (2, float(f("threshold", 6.0)), 0.0, 1.0) + post
    if activation == "hard_sigmoid":
        return (3, float(f("slope", 0.2)), float(f("offset", 0.5)), 1.0) + post
    if activation == "hard_swish":
        return (4, float(f("offset", 3.0)), float(f("threshold", 6.0)), float(f("scale", 6.0))) + post
    return (ACTIVATIONS[activation], 0.0, 0.0, 1.0) + post


def _check_epi(name, epi):
    """epi as (code, a, b, c, post_scale, post_shift) ints / floats (the last two default to 1 and 0)."""
    return _remembered(_epi, name, epi)


def _epi(name, epi):
    if len(epi) not in (4, 6) or int(epi[0]) not in ACTIVATIONS.values():
        raise ValueError(f"{name}: epi must be (code, a, b, c[, post_scale, post_shift]) as epilogue() gives, "
                         f"got {epi!r}")
    return (int(epi[0]),) + tuple(map(float, epi[1:])) + ((1.0, 0.0) if len(epi) == 4 else ())


_CACHED = functools.lru_cache(maxsize=4096)(lambda f, name, *args: f(name, *args))


def _remembered(f, name, *args):
    """f(name, *args) for a pure f of the values in the sequences args, remembered per value: the checks run on
    every call of a conv (tens of microseconds each in a small model otherwise). Unhashable values are not."""
    try:
        key = tuple(map(tuple, args))
    except TypeError:
        return f(name, *args)
    try:
        return _CACHED(f, name, *key)
    except TypeError:  # an unhashable element: f says what is wrong, or computes it
        return f(name, *args)


def check_conv2d(x, packed, oc, kernel, bias, stride, padding, dilation, epi, max_threads=None, residual=None):
    """Validate a packed convolution and return ``(stride, padding, dilation, (KH, KW), (OH, OW), epi)`` as ints
    (and epi as (int, float, float, float)): ``x`` C-contiguous float32 (N, C, H, W); ``packed`` what
    :func:`pack_weights` gives for ``oc`` output channels and C * KH * KW columns; ``bias`` None or ``oc``
    contiguous float32 values; ``stride`` / ``dilation`` pairs of ints >= 1, ``padding`` (top, left, bottom,
    right) ints >= 0; ``epi`` as :func:`epilogue` gives; ``max_threads`` None or an int >= 1; ``residual`` None or
    a C-contiguous float32 array of the output's shape."""
    check_array("fconv.conv2d: x", x, np.float32, 4)
    if max_threads is not None:
        check_int("fconv.conv2d: max_threads", max_threads, 1)
    check_array("fconv.conv2d: packed", packed, np.float32, 3)
    oc = check_int("fconv.conv2d: oc", oc, 1)
    kernel = tuple([check_int("fconv.conv2d: kernel", k, 1) for k in kernel])
    k = x.shape[1] * kernel[0] * kernel[1] if len(kernel) == 2 else -1
    if k < 1 or packed.shape != (-(-oc // MR), k, MR):
        raise ValueError(f"fconv.conv2d: packed weights {packed.shape} do not hold {oc} output channels of "
                         f"{x.shape[1]} x {kernel} taps (pack_weights)")
    if bias is not None:
        check_array("fconv.conv2d: bias", bias, np.float32)
        if bias.size != oc:
            raise ValueError(f"fconv.conv2d: bias must hold {oc} values, got shape {bias.shape}")
    stride, padding, dilation = _remembered(window_args, "fconv.conv2d", stride, padding, dilation)
    epi = _check_epi("fconv.conv2d", epi)
    oh, ow = _out_size(x.shape, kernel, stride, padding, dilation, oc)
    if residual is not None:
        check_residual("fconv.conv2d", residual, (x.shape[0], oc, oh, ow))
    return stride, padding, dilation, kernel, (oh, ow), epi


@functools.lru_cache(maxsize=4096)
def _out_size(x_shape, kernel, stride, padding, dilation, oc):
    """(OH, OW) after the geometry and size checks (remembered per shape: they run on every call otherwise)."""
    oh, ow = check_geometry("fconv.conv2d", x_shape[2:], kernel, stride, padding, dilation)
    check_size("fconv.conv2d", x_shape[0], oc, oh, ow)
    return oh, ow


def conv2d(x, packed, oc, kernel, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
           epi=(0, 0.0, 0.0, 1.0), *, residual=None, max_threads=None, path=None):
    """act((conv2d(x, w) + bias) + residual) from the packed weights, float32 (N, oc, OH, OW) out (module
    docstring; ``max_threads``, the compiled module's thread cap, and ``path`` are checked or ignored)."""
    stride, padding, dilation, (kh, kw), (oh, ow), (code, a, b, c, ps, pc) = check_conv2d(
        x, packed, oc, kernel, bias, stride, padding, dilation, epi, max_threads, residual)
    w = packed.transpose(0, 2, 1).reshape(-1, packed.shape[1])[:oc]
    y = np.matmul(w, im2col(x, kh, kw, stride, padding, dilation)).reshape(x.shape[0], oc, oh, ow)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    if residual is not None:
        y += residual
    return _act(y, code, a, b, c, ps, pc)

def check_depthwise(x, w, bias, stride, padding, dilation, epi, max_threads=None):
    """Validate a depthwise convolution as floatops.check_depthwise_conv2d does (the same messages), and ``epi``
    as :func:`check_conv2d`; return ``(stride, padding, dilation, (OH, OW), epi)``."""
    check_array("depthwise_conv2d: x", x, np.float32, 4)
    if max_threads is not None:
        check_int("depthwise_conv2d: max_threads", max_threads, 1)
    check_array("depthwise_conv2d: w", w, np.float32, 4)
    if bias is not None:
        check_array("depthwise_conv2d: bias", bias, np.float32)
    epi = _check_epi("fconv.depthwise_conv2d", epi)
    return _dw_geometry(x.shape, w.shape, None if bias is None else bias.size,
                        *_remembered(_int_tuples, "", stride, padding, dilation)) + (epi,)


def _int_tuples(_, *values):
    return tuple(tuple(map(int, v)) for v in values)


@functools.lru_cache(maxsize=4096)
def _dw_geometry(x_shape, w_shape, bias_size, stride, padding, dilation):
    """floatops.check_depthwise_conv2d on arrays of these shapes (np.empty: no data is touched), remembered."""
    from .floatops import check_depthwise_conv2d
    bias = None if bias_size is None else np.empty(bias_size, np.float32)
    return check_depthwise_conv2d(np.empty(x_shape, np.float32), np.empty(w_shape, np.float32), bias, stride,
                                  padding, dilation)


def depthwise_conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), epi=(0, 0.0, 0.0, 1.0),
                     *, max_threads=None, path=None):
    """act(depthwise conv2d(x, w) + bias), float32 NCHW, w (C*M, 1, KH, KW): output channel o reads input channel
    o // M; the compiled paths sum the KH * KW taps in row-major order from +0 (fused multiply-adds on avx2), the
    twin as floatops.depthwise_conv2d; the module docstring's bound with K = KH * KW."""
    from .floatops import depthwise_conv2d as dw
    stride, padding, dilation, _, (code, a, b, c, ps, pc) = check_depthwise(x, w, bias, stride, padding, dilation,
                                                                           epi, max_threads)
    return _act(dw(x, w, bias, stride, padding, dilation), code, a, b, c, ps, pc)


def prepare_conv2d(x_shape, packed, oc, kernel, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                   epi=(0, 0.0, 0.0, 1.0), *, max_threads=None, path=None):
    """``plan(x, residual=None)``: :func:`conv2d` of x (of shape ``x_shape``) with these arguments, checked here
    once; a call checks only x and the residual (a graph runs each conv many times: the checks cost microseconds)."""
    x_shape = check_shape("fconv.conv2d", x_shape)
    check_conv2d(stand_in(x_shape), packed, oc, kernel, bias, stride, padding, dilation, epi, max_threads)
    args = (packed, oc, kernel, bias, stride, padding, dilation, epi)
    return lambda x, residual=None: conv2d(check_input("fconv.conv2d", x, x_shape), *args, residual=residual,
                                           max_threads=max_threads, path=path)


def prepare_depthwise(x_shape, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                      epi=(0, 0.0, 0.0, 1.0), *, max_threads=None, path=None):
    """``plan(x)``: :func:`depthwise_conv2d` of x (of shape ``x_shape``) with these arguments, checked here once."""
    x_shape = check_shape("depthwise_conv2d", x_shape)
    check_depthwise(stand_in(x_shape), w, bias, stride, padding, dilation, epi, max_threads)
    return lambda x: depthwise_conv2d(check_input("depthwise_conv2d", x, x_shape), w, bias, stride, padding,
                                      dilation, epi, max_threads=max_threads, path=path)


def check_shape(name, x_shape):
    """A plan's input shape as a tuple of 4 ints >= 0."""
    if not isinstance(x_shape, (tuple, list)) or len(x_shape) != 4:
        raise ValueError(f"{name}: x_shape must be 4 ints (N, C, H, W), got {x_shape!r}")
    return tuple(check_int(f"{name}: x_shape", d, 0) for d in x_shape)


def stand_in(x_shape):
    """An uninitialised float32 array of ``x_shape`` for the shape checks of a plan (its data is never read)."""
    return np.empty(x_shape, np.float32)


def check_input(name, x, x_shape):
    """x as the call checks it, and, for a plan (``x_shape`` not None), of the plan's shape."""
    check_array(f"{name}: x", x, np.float32, 4)
    if x_shape is not None and x.shape != x_shape:
        raise ValueError(f"{name}: the plan is for inputs of shape {x_shape}, got {x.shape}")
    return x


def check_residual(name, residual, y_shape):
    """A residual as :func:`check_conv2d` checks it, for outputs of ``y_shape``."""
    check_array(f"{name}: residual", residual, np.float32)
    if residual.shape != y_shape:
        raise ValueError(f"{name}: residual must have the output's shape {y_shape}, got {residual.shape}")


def _act(y, code, a, b, c, ps=1.0, pc=0.0):
    """The activation of epilogue code ``code`` on float32 y (in place where it can), then y * ps + pc unless
    (ps, pc) = (1, 0)."""
    with np.errstate(all="ignore"):
        if code == 1:
            np.maximum(y, np.float32(0), out=y)
        elif code == 2:
            np.clip(y, np.float32(0), np.float32(a), out=y)
        elif code == 3:
            np.clip(y * np.float32(a) + np.float32(b), np.float32(0), np.float32(1), out=y)
        elif code == 4:
            y = np.clip(y + np.float32(a), np.float32(0), np.float32(b)) * y / np.float32(c)
        if ps != 1.0 or pc != 0.0:
            y = y * np.float32(ps) + np.float32(pc)
    return np.ascontiguousarray(y, dtype=np.float32)
