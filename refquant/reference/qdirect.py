"""The direct (non-GEMM) INT8 kernels, the NumPy twin of ``kernels/qdirect.pyx`` and its specification.

Every INT8 tensor is a uint8 NHWC array plus (scale, zero): u8 after relu/relu6 (zero 0), else s8 stored with a
+128 offset (zero 128). All rounding is ``rint`` (round half to even) of a float32 value, every product a single
float32 multiplication (no fused multiply-add). Scalars given as Python floats are rounded to float32 first.

Shared step, the u8 epilogue ("q8"):  ``q = clamp(rint(f) + zero, lo, hi)`` for a float32 ``f``; a NaN ``f``
gives ``lo`` (only :func:`quantize_nchw` / :func:`quantize_rows` can meet one, from a NaN input).

* :func:`depthwise_conv_u8s8`: ``acc[n,oh,ow,c] = bias[c] + sum_{valid taps} (x - a_zero) * w[kh,kw,c]`` in int32
  (wrapping modulo 2^32, which the int64 sum below cast to int32 reproduces), ``f = float32(acc) * scale[c]``,
  then q8 (u8 out) or ``f`` clamped to optional float bounds (f32 out).
* :func:`quantize_nchw` / :func:`quantize_rows`: ``q8(x * scale_inv)``; :func:`dequantize_nhwc` /
  :func:`dequantize_rows`: ``float32(q - zero) * scale``; :func:`nhwc_to_nchw`: the layout change alone.
* :func:`im2col_u8`: rows = output pixels (n, oh, ow), columns (kh, kw, c), padded taps = ``pad_value``.
* :func:`conv_small_k_u8s8`: a conv with K = KH*KW*C <= 64 (a network's first conv) on qgemm's packed
  weights: im2col (padded taps = ``a_zero``) times w, ``- a_zero * col_sum + bias``, the depthwise epilogue:
  the numbers of ``qgemm.gemm_u8s8`` on the im2col matrix, which the compiled kernel never builds.
* :func:`requantize`: ``q8(float32(q - in_zero) * multiplier)``; :func:`add_u8`:
  ``q8((float32(a - az) * as + float32(b - bz) * bs) * out_scale_inv)``.
* :func:`scalar_chain` (validated by :func:`check_chain`; :func:`q8_params` is the kernels' form of its quantize
  tuple): the scalar float chain an INT8 conv or matmul may end with. The float glue kernels between INT8 ops
  are in :mod:`refquant.reference.floatops`.
* :func:`max_pool_u8`: max over the valid taps; :func:`avg_pool_u8`: ``q8(float32(s) / float32(count))`` with
  ``s = sum over valid taps of (x - zero)``, count = valid taps (exclusive) or KH*KW, lo/hi = 0/255;
  :func:`global_avg_pool_u8`: ``float32(float64(sum(x - zero)) / (H*W) * float64(scale))``.

Geometry: padding is (top, left, bottom, right); ``OH = (H + top + bottom - dh*(KH-1) - 1) // sh + 1``.
The validation helpers here are shared with the compiled module, so both reject the same inputs the same way.
Every function takes the compiled module's ``path=`` keyword too, and ignores it.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .im2col import check_geometry, check_size, remembered

MAX_TAPS = 256  # KH*KW of a depthwise or pooling window
MAX_SMALL_K = 64  # KH*KW*C of conv_small_k_u8s8


# ---------------------------------------------------------------------------------------------- validation
def check_array(name, a, dtype, ndim=None, contiguous=True):
    """``a`` must be an ndarray of ``dtype`` (and rank ``ndim``), C-contiguous."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name}, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use numpy.ascontiguousarray)")
    return a


def check_int(name, v, lo=None, hi=None):
    if type(v) is not int:  # the common case first: validation runs on every compiled call too
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
        v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: must lie in [{lo}, {hi}], got {v}")
    return v


_F32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103  # the smallest float64 that rounds to float32 inf


def check_float(name, v, positive=False):
    """A finite real scalar, returned as float32."""
    if type(v) is not float and (isinstance(v, (bool, np.bool_))
                                 or not isinstance(v, (numbers.Real, np.floating, np.integer))):
        raise TypeError(f"{name}: expected a float, got {type(v).__name__}")
    if not abs(float(v)) < _F32_OVERFLOW:  # also NaN
        raise ValueError(f"{name}: must be finite{' and > 0' if positive else ''} as a float32, got {v!r}")
    f = np.float32(v)
    if positive and not f > 0:
        raise ValueError(f"{name}: must be finite{' and > 0' if positive else ''} as a float32, got {v!r}")
    return f


def check_ints(name, v, n, lo):
    """An int or a sequence of n ints, each >= lo, as a tuple of n ints."""
    if type(v) is tuple and len(v) == n and all(type(e) is int and e >= lo for e in v):
        return v
    if isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool):
        v = (v,) * n
    try:
        v = tuple(v)
    except TypeError:
        raise TypeError(f"{name}: expected {n} ints, got {v!r}") from None
    if len(v) != n:
        raise ValueError(f"{name}: expected {n} ints, got {v!r}")
    return tuple(check_int(name, e, lo) for e in v)


def check_padding(v):
    """(top, left, bottom, right); 2 ints mean (ph, pw) on both sides; 1 int everywhere."""
    if isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool):
        v = (v,) * 4
    v = tuple(v) if isinstance(v, (tuple, list)) else v
    if isinstance(v, tuple) and len(v) == 2:
        v = (v[0], v[1], v[0], v[1])
    return check_ints("padding", v, 4, 0)


def check_lo_hi(lo, hi):
    lo = 0 if lo is None else check_int("lo", lo, 0, 255)
    hi = 255 if hi is None else check_int("hi", hi, 0, 255)
    if lo > hi:
        raise ValueError(f"lo must be <= hi, got lo={lo}, hi={hi}")
    return lo, hi


def geometry(h, w, kernel, stride, padding, dilation, what):
    """(OH, OW) of a window walk, both >= 1: the shared validator :func:`refquant.reference.im2col.check_geometry`
    (every value below 2**31, so the C kernels' index arithmetic cannot wrap); raises ShapeError (a ValueError)."""
    return check_geometry(what, (h, w), kernel, stride, padding, dilation, min_out=1)


_WINDOWS: dict = {}  # window()'s results by argument, for arguments of plain ints only


def window(what, shape, kernel, stride, padding, dilation):
    """Validated (stride, padding, dilation, OH, OW) of a conv window over an NHWC array of ``shape`` (each output
    array (N, OH, OW, C) size-checked too). A model calls a few geometries over and over: results for arguments
    made of plain ints (a float or a NumPy integer is checked every time) are remembered."""
    return remembered(_WINDOWS, (shape, kernel, stride, padding, dilation), (what,),
                      lambda: _window(what, shape, kernel, stride, padding, dilation))


def _window(what, shape, kernel, stride, padding, dilation):
    stride, dilation = check_ints("stride", stride, 2, 1), check_ints("dilation", dilation, 2, 1)
    padding = check_padding(padding)
    oh, ow = geometry(shape[1], shape[2], kernel, stride, padding, dilation, what)
    check_size(what, shape[0], oh, ow, shape[3], 4)
    return stride, padding, dilation, oh, ow


def check_depthwise(x, w, stride, padding, dilation, a_zero, bias, scale, out_dtype, out_zero, lo, hi):
    """Validated, normalized arguments of :func:`depthwise_conv_u8s8`."""
    check_array("depthwise_conv_u8s8: x", x, np.uint8, 4)
    return check_depthwise_plan(x.shape, w, stride, padding, dilation, a_zero, bias, scale, out_dtype, out_zero,
                                lo, hi)


def check_shape4(what, shape):
    """An NHWC input shape given ahead of the input (a plan's): a sequence of 4 ints >= 0, as a tuple."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 4 or \
            any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise ValueError(f"{what}: the input shape must be 4 ints >= 0 (N, H, W, C), got {shape!r}")
    return tuple(int(d) for d in shape)


def check_depthwise_input(x, shape):
    """A plan's input (:func:`prepare_depthwise`): a C-contiguous uint8 array of the planned shape."""
    check_array("depthwise_conv_u8s8: x", x, np.uint8, 4)
    if x.shape != shape:
        raise ValueError(f"depthwise_conv_u8s8: the plan is for inputs of shape {shape}, got {x.shape}")


def check_depthwise_plan(shape, w, stride, padding, dilation, a_zero, bias, scale, out_dtype, out_zero, lo, hi):
    """check_depthwise for an input of ``shape`` (N, H, W, C) not yet given."""
    check_array("depthwise_conv_u8s8: w", w, np.int8, 3)
    n, h, wd, c = shape
    kh, kw, wc = w.shape
    if wc != c:
        raise ValueError(f"depthwise_conv_u8s8: w has {wc} channels, x has {c}")
    if c == 0:
        raise ValueError(f"depthwise_conv_u8s8: x has no channels (shape {tuple(shape)})")
    if kh < 1 or kw < 1 or kh * kw > MAX_TAPS:
        raise ValueError(f"depthwise_conv_u8s8: need 1 <= KH*KW <= {MAX_TAPS}, got kernel {(kh, kw)}")
    stride, padding, dilation, oh, ow = window("depthwise_conv_u8s8", shape, (kh, kw), stride, padding, dilation)
    a_zero = check_int("a_zero", a_zero, 0, 255)
    e = check_epilogue("depthwise_conv_u8s8", c, bias, scale, out_dtype, out_zero, lo, hi)
    return dict(e, stride=stride, padding=padding, dilation=dilation, a_zero=a_zero, oh=oh, ow=ow)


def check_out_layout(what, out_layout, chain=None):
    """A conv's output layout: "NHWC" or "NCHW" (not with a chain post-op)."""
    if out_layout not in ("NHWC", "NCHW"):
        raise ValueError(f'{what}: out_layout must be "NHWC" or "NCHW", got {out_layout!r}')
    if out_layout == "NCHW" and chain is not None:
        raise ValueError(f'{what}: a chain post-op needs out_layout="NHWC"')
    return out_layout


def check_layout_change(what, x):
    """A C-contiguous 4-D array of 1- or 4-byte numbers (what the layout-change kernel moves)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind not in "biuf" or x.itemsize not in (1, 4):
        raise TypeError(f"{what}: expected 1- or 4-byte numbers, got dtype {x.dtype}")
    check_array(f"{what}: x", x, x.dtype, 4)


def check_int32s(what, name, v, c):
    """An integer ndarray of shape (c,) and int32 values, as a contiguous int32 array."""
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "iu":
        raise TypeError(f"{what}: {name} must be an integer ndarray (int32 values)")
    if v.shape != (c,):
        raise ValueError(f"{what}: {name} must have shape ({c},), got {v.shape}")
    if v.dtype != np.int32:
        if v.size and (v.min() < -2**31 or v.max() >= 2**31):
            raise ValueError(f"{what}: {name} values must fit int32")
        v = v.astype(np.int32)
    return np.ascontiguousarray(v)


def check_epilogue(what, c, bias, scale, out_dtype, out_zero, lo, hi):
    """The per-channel epilogue of a conv with c output channels: bias (int32, zeros when None), scale (float32,
    finite, a scalar broadcast), out_dtype "u8" (out_zero, lo, hi in [0, 255]) or "f32" (float bounds)."""
    bias = np.zeros(c, dtype=np.int32) if bias is None else check_int32s(what, "bias", bias, c)
    if not (isinstance(scale, np.ndarray) and scale.dtype == np.float32 and scale.shape == (c,)):
        scale = np.asarray(scale)
        if scale.dtype.kind not in "fiu":
            raise TypeError(f"{what}: scale must be real, got dtype {scale.dtype}")
        scale = np.full(c, scale, dtype=np.float32) if scale.ndim == 0 else scale.astype(np.float32)
        if scale.shape != (c,):
            raise ValueError(f"{what}: scale must be a scalar or have shape ({c},), got {scale.shape}")
    scale = np.ascontiguousarray(scale)
    top = float(np.abs(scale).max())
    if not math.isfinite(top):
        raise ValueError(f"{what}: scale must be finite")
    if out_dtype in ("u8", "uint8", np.uint8):
        out_dtype = "u8"
        out_zero = check_int("out_zero", out_zero, 0, 255)
        lo, hi = check_lo_hi(lo, hi)
    elif out_dtype in ("f32", "float32", np.float32):
        out_dtype = "f32"
        lo = -np.inf if lo is None else np.float32(check_float("lo", lo))
        hi = np.inf if hi is None else np.float32(check_float("hi", hi))
        if lo > hi:
            raise ValueError(f"lo must be <= hi, got lo={lo}, hi={hi}")
        lo, hi = np.float32(lo), np.float32(hi)
    else:
        raise ValueError(f"{what}: out_dtype must be 'u8' or 'f32', got {out_dtype!r}")
    return dict(bias=bias, scale=scale, out_dtype=out_dtype, out_zero=out_zero, lo=lo, hi=hi,
                scale_below_half=top < 0.5)


def check_pool(name, x, kernel, stride, padding):
    check_array(f"{name}: x", x, np.uint8, 4)
    kernel = check_ints("kernel", kernel, 2, 1)
    if kernel[0] * kernel[1] > MAX_TAPS:
        raise ValueError(f"{name}: need KH*KW <= {MAX_TAPS}, got {kernel}")
    stride = check_ints("stride", stride, 2, 1)
    padding = check_padding(padding)
    top, left, bottom, right = padding
    if max(top, bottom) >= kernel[0] or max(left, right) >= kernel[1]:
        raise ValueError(f"{name}: padding {padding} must be smaller than the kernel {kernel} (every window "
                         "needs a valid tap)")
    oh, ow = geometry(x.shape[1], x.shape[2], kernel, stride, padding, (1, 1), name)
    check_size(name, x.shape[0], oh, ow, x.shape[3])
    return kernel, stride, padding, oh, ow


# ---------------------------------------------------------------------------------------------- arithmetic
def q8(f, zero, lo=0, hi=255):
    """uint8 ``clamp(rint(f) + zero, lo, hi)`` of a float32 array; NaN -> lo."""
    f = np.asarray(f, dtype=np.float32)
    q = np.rint(f) + np.float32(zero)
    q = np.where(np.isnan(q), np.float32(lo), q)
    q = np.where(q > lo, q, np.float32(lo))
    q = np.where(q < hi, q, np.float32(hi))
    return q.astype(np.uint8)


def _windows(xp, kh, kw, stride, dilation, oh, ow):
    """Yield (i, j, view) with view[n, oh, ow, c] = xp[n, oh*sh + i*dh, ow*sw + j*dw, c]."""
    sh, sw = stride
    dh, dw = dilation
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            yield i, j, xp[:, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw, :]


def _pad_nhwc(x, padding, value):
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


# ---------------------------------------------------------------------------------------------- the kernels
def prepare_depthwise(x_shape, w, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), a_zero=0, bias=None,
                      scale, out_dtype="u8", out_zero=0, lo=None, hi=None, chain=None, out_layout="NHWC",
                      path=None):
    """``plan(x)``: :func:`depthwise_conv_u8s8` for inputs of ``x_shape``, every argument but x checked once (the
    compiled plan also packs the weights once); the plan keeps its own copies of the arrays."""
    shape = check_shape4("depthwise_conv_u8s8", x_shape)
    check_depthwise_plan(shape, w, stride, padding, dilation, a_zero, bias, scale, out_dtype, out_zero, lo, hi)
    check_out_layout("depthwise_conv_u8s8", out_layout, chain)
    if chain is not None:
        if out_dtype != "f32":
            raise ValueError('depthwise_conv_u8s8: chain needs out_dtype="f32"')
        check_chain(**chain)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, a_zero=a_zero, out_dtype=out_dtype,
                  out_zero=out_zero, lo=lo, hi=hi, out_layout=out_layout,
                  bias=np.array(bias) if isinstance(bias, np.ndarray) else bias,
                  scale=np.array(scale) if isinstance(scale, np.ndarray) else scale,
                  chain=None if chain is None else dict(chain))
    w = np.array(w)

    def plan(x):
        check_depthwise_input(x, shape)
        return depthwise_conv_u8s8(x, w, **kwargs)
    return plan


def depthwise_conv_u8s8(x, w, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), a_zero=0, bias=None,
                        scale, out_dtype="u8", out_zero=0, lo=None, hi=None, chain=None, out_layout="NHWC",
                        path=None):
    """Depthwise conv, NHWC u8 x (KH, KW, C) s8 -> NHWC (or ``out_layout="NCHW"``) u8 or float32; see the module
    docstring. ``chain`` (float32 NHWC output only): :func:`scalar_chain`'s keyword arguments, applied to the
    output, whose ``(t or None, q or None)`` is then returned."""
    if check_out_layout("depthwise_conv_u8s8", out_layout, chain) == "NCHW":
        return nhwc_to_nchw(depthwise_conv_u8s8(x, w, stride=stride, padding=padding, dilation=dilation,
                                                a_zero=a_zero, bias=bias, scale=scale, out_dtype=out_dtype,
                                                out_zero=out_zero, lo=lo, hi=hi))
    if chain is not None:
        if out_dtype != "f32":
            raise ValueError('depthwise_conv_u8s8: chain needs out_dtype="f32"')
        check_chain(**chain)
        f = depthwise_conv_u8s8(x, w, stride=stride, padding=padding, dilation=dilation, a_zero=a_zero, bias=bias,
                                scale=scale, out_dtype="f32", lo=lo, hi=hi)
        return scalar_chain(f, **chain)
    a = check_depthwise(x, w, stride, padding, dilation, a_zero, bias, scale, out_dtype, out_zero, lo, hi)
    kh, kw, c = w.shape
    xs = _pad_nhwc(x.astype(np.int64) - a["a_zero"], a["padding"], 0)  # padded taps hold the zero point
    acc = np.zeros((x.shape[0], a["oh"], a["ow"], c), dtype=np.int64)
    for i, j, view in _windows(xs, kh, kw, a["stride"], a["dilation"], a["oh"], a["ow"]):
        acc += view * w[i, j].astype(np.int64)
    acc += a["bias"]
    f = acc.astype(np.int32).astype(np.float32) * a["scale"]  # int32 wraps modulo 2^32
    if a["out_dtype"] == "u8":
        return q8(f, a["out_zero"], a["lo"], a["hi"])
    f = np.where(f > a["lo"], f, a["lo"]).astype(np.float32)
    return np.where(f < a["hi"], f, a["hi"]).astype(np.float32)


def quantize_nchw(x, scale_inv, *, zero=0, lo=0, hi=255, path=None):
    """float32 NCHW -> uint8 NHWC, ``q8(x * scale_inv)``."""
    check_array("quantize_nchw: x", x, np.float32, 4, contiguous=True)
    s = check_float("scale_inv", scale_inv, positive=True)
    zero = check_int("zero", zero, 0, 255)
    lo, hi = check_lo_hi(lo, hi)
    return q8(x * s, zero, lo, hi).transpose(0, 2, 3, 1).copy()


def nhwc_to_nchw(x, *, path=None):
    """NHWC -> NCHW of a 4-D array of 1- or 4-byte numbers (the same bits)."""
    check_layout_change("nhwc_to_nchw", x)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def quantize_rows(x, scale_inv, zero=0, lo=0, hi=255, *, path=None):
    """float32 (M, K) -> uint8 (M, K), ``q8(x * scale_inv)``."""
    check_array("quantize_rows: x", x, np.float32, 2)
    s = check_float("scale_inv", scale_inv, positive=True)
    zero = check_int("zero", zero, 0, 255)
    lo, hi = check_lo_hi(lo, hi)
    return q8(x * s, zero, lo, hi)


def dequantize_nhwc(q, scale, *, zero=0, path=None):
    """uint8 NHWC -> float32 NCHW, ``float32(q - zero) * scale``."""
    check_array("dequantize_nhwc: q", q, np.uint8, 4)
    s = check_float("scale", scale)
    zero = check_int("zero", zero, 0, 255)
    f = (q.astype(np.int32) - zero).astype(np.float32) * s
    return f.transpose(0, 3, 1, 2).copy()


def check_row_scale(scale, k):
    """A scalar, or a (K,) array: per-column scales, as float32 (finite)."""
    if np.ndim(scale) == 0:
        return check_float("scale", scale), False
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"dequantize_rows: scale must be real, got dtype {s.dtype}")
    s = np.ascontiguousarray(s, dtype=np.float32)
    if s.shape != (k,):
        raise ValueError(f"dequantize_rows: per-column scale must have shape ({k},), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("dequantize_rows: scale must be finite")
    return s, True


def dequantize_rows(q, scale, zero=0, *, path=None):
    """uint8 (M, K) -> float32 (M, K), ``float32(q - zero) * scale`` (scale scalar or per column)."""
    check_array("dequantize_rows: q", q, np.uint8, 2)
    s, _ = check_row_scale(scale, q.shape[1])
    zero = check_int("zero", zero, 0, 255)
    return ((q.astype(np.int32) - zero).astype(np.float32) * s).astype(np.float32)


def im2col_u8(x, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), pad_value=0, *, out=None,
              path=None):
    """NHWC uint8 -> (N*OH*OW, KH*KW*C) uint8: row (n, oh, ow), columns (kh, kw, c), padding = pad_value."""
    oh, ow, kh, kw, stride, padding, dilation, pad_value = check_im2col(x, kh, kw, stride, padding, dilation,
                                                                        pad_value, out)
    n, c = x.shape[0], x.shape[3]
    xp = _pad_nhwc(x, padding, pad_value)
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=np.uint8)
    for i, j, view in _windows(xp, kh, kw, stride, dilation, oh, ow):
        cols[:, :, :, i, j, :] = view
    cols = cols.reshape(n * oh * ow, kh * kw * c)
    if out is not None:
        out[...] = cols
        return out
    return cols


def check_conv_small_k(x, packed, K, N, kernel, stride, padding, dilation, a_zero, col_sum, bias, scale, out_dtype,
                       out_zero, lo, hi):
    """Validated, normalized arguments of :func:`conv_small_k_u8s8` (a dict as :func:`check_depthwise`'s)."""
    what = "conv_small_k_u8s8"
    check_array(f"{what}: x", x, np.uint8, 4)
    K, N = check_int("K", K, 1, MAX_SMALL_K), check_int("N", N, 1, 2**31 - 1)
    kernel = check_ints("kernel", kernel, 2, 1)
    if K != kernel[0] * kernel[1] * x.shape[3]:
        raise ValueError(f"{what}: K={K} is not KH*KW*C = {kernel[0] * kernel[1] * x.shape[3]}")
    check_gemm_packed(what, packed, K, N)
    a_zero = check_int("a_zero", a_zero, 0, 255)
    if a_zero and col_sum is None:
        raise ValueError(f"{what}: a_zero != 0 needs col_sum (the weights' column sums)")
    col_sum = check_int32s(what, "col_sum", col_sum, N) if a_zero else None
    e = check_epilogue(what, N, bias, scale, out_dtype, out_zero, lo, hi)
    stride, padding, dilation, oh, ow = window(what, x.shape[:3] + (N,), kernel, stride, padding, dilation)
    return dict(e, kernel=kernel, stride=stride, padding=padding, dilation=dilation, a_zero=a_zero,
                col_sum=col_sum, oh=oh, ow=ow)


def check_gemm_packed(what, packed, K, N):
    """``packed`` must be qgemm's packed (K, N) weights (``refquant.reference.qgemm.pack_b``): 1-D int8, a 64-byte
    header (b"RQGEMMv1", int32 version 1 and NR 16, int64 K, N, Kp = ceil4(K), Np = ceil16(N)), Kp*Np panel bytes
    and Np int32 column sums."""
    kp, np_ = (K + 3) // 4 * 4, (N + 15) // 16 * 16
    head = np.array([1, 16], np.int32).tobytes() + np.array([K, N, kp, np_], np.int64).tobytes()
    if not isinstance(packed, np.ndarray) or packed.dtype != np.int8 or packed.ndim != 1 \
            or not packed.flags.c_contiguous or packed.shape[0] != 64 + kp * np_ + 4 * np_ \
            or packed[:8].tobytes() != b"RQGEMMv1" or packed[8:48].tobytes() != head:
        raise ValueError(f"{what}: packed must be qgemm.pack_b(w) of the weights w (K={K}, N={N})")
    return kp, np_


def conv_small_k_u8s8(x, packed, K, N, *, kernel, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), a_zero=0,
                      col_sum=None, bias=None, scale, out_dtype="u8", out_zero=0, lo=None, hi=None, chain=None,
                      path=None):
    """NHWC u8 x (N, H, W, C) conv with qgemm's packed (K, N) weights w (K = KH*KW*C <= 64, rows in (kh, kw, c)
    order) -> NHWC (N, OH, OW, N) u8 or float32: ``acc = im2col(x, padded taps = a_zero) @ w - a_zero * col_sum
    + bias`` (int32, wrapping), then the epilogue of :func:`depthwise_conv_u8s8` per output channel: the numbers
    of ``qgemm.gemm_u8s8`` on the im2col matrix. With ``chain`` (f32 only), :func:`scalar_chain`'s pair."""
    if chain is not None:
        if out_dtype != "f32":
            raise ValueError('conv_small_k_u8s8: chain needs out_dtype="f32"')
        check_chain(**chain)
    a = check_conv_small_k(x, packed, K, N, kernel, stride, padding, dilation, a_zero, col_sum, bias, scale,
                           out_dtype, out_zero, lo, hi)
    kp, np_ = (K + 3) // 4 * 4, (N + 15) // 16 * 16
    w = packed[64:64 + kp * np_].reshape(np_ // 16, kp // 4, 16, 4).transpose(1, 3, 0, 2).reshape(kp, np_)[:K, :N]
    cols = im2col_u8(x, *a["kernel"], a["stride"], a["padding"], a["dilation"], a["a_zero"])
    acc = cols.astype(np.int64) @ w.astype(np.int64) + a["bias"]
    if a["a_zero"]:
        acc -= a["a_zero"] * a["col_sum"].astype(np.int64)
    f = acc.astype(np.int32).astype(np.float32) * a["scale"]  # int32 wraps modulo 2^32
    f = f.reshape(x.shape[0], a["oh"], a["ow"], N)
    if a["out_dtype"] == "u8":
        return q8(f, a["out_zero"], a["lo"], a["hi"])
    f = np.where(f > a["lo"], f, a["lo"]).astype(np.float32)
    f = np.where(f < a["hi"], f, a["hi"]).astype(np.float32)
    return f if chain is None else scalar_chain(f, **chain)


def check_im2col(x, kh, kw, stride, padding, dilation, pad_value, out):
    check_array("im2col_u8: x", x, np.uint8, 4)
    kh, kw = check_int("kh", kh, 1), check_int("kw", kw, 1)
    stride = check_ints("stride", stride, 2, 1)
    dilation = check_ints("dilation", dilation, 2, 1)
    padding = check_padding(padding)
    pad_value = check_int("pad_value", pad_value, 0, 255)
    oh, ow = geometry(x.shape[1], x.shape[2], (kh, kw), stride, padding, dilation, "im2col_u8")
    check_size("im2col_u8", x.shape[0], oh, ow, kh, kw, x.shape[3])
    shape = (x.shape[0] * oh * ow, kh * kw * x.shape[3])
    if out is not None:
        check_out("im2col_u8: out", out, np.uint8, shape, x)
    return oh, ow, kh, kw, stride, padding, dilation, pad_value


def check_out(name, out, dtype, shape, *inputs):
    """A caller's output buffer: a C-contiguous, writable ndarray of ``dtype`` and ``shape`` that shares no memory
    with the inputs (the kernels write it while they read those)."""
    check_array(name, out, dtype, len(shape))
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name}: is read-only")
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{name}: overlaps an input")
    return out


def requantize(q, multiplier, *, in_zero, out_zero, lo=0, hi=255, path=None):
    """uint8 (any shape) -> uint8, ``q8(float32(q - in_zero) * multiplier)``."""
    check_array("requantize: q", q, np.uint8)
    m = check_float("multiplier", multiplier, positive=True)
    in_zero = check_int("in_zero", in_zero, 0, 255)
    out_zero = check_int("out_zero", out_zero, 0, 255)
    lo, hi = check_lo_hi(lo, hi)
    return q8((q.astype(np.int32) - in_zero).astype(np.float32) * m, out_zero, lo, hi)


def check_add(a, a_scale, a_zero, b, b_scale, b_zero, out_scale_inv, out_zero, lo, hi):
    check_array("add_u8: a", a, np.uint8)
    check_array("add_u8: b", b, np.uint8)
    if a.shape != b.shape:
        raise ValueError(f"add_u8: a and b must have the same shape, got {a.shape} and {b.shape}")
    return (check_float("a_scale", a_scale, True), check_int("a_zero", a_zero, 0, 255),
            check_float("b_scale", b_scale, True), check_int("b_zero", b_zero, 0, 255),
            check_float("out_scale_inv", out_scale_inv, True), check_int("out_zero", out_zero, 0, 255),
            *check_lo_hi(lo, hi))


def add_u8(a, a_scale, a_zero, b, b_scale, b_zero, out_scale_inv, out_zero, lo=0, hi=255, *, path=None):
    """Residual add in the float domain: ``q8((float32(a-az)*as + float32(b-bz)*bs) * out_scale_inv)``."""
    as_, az, bs, bz, osi, oz, lo, hi = check_add(a, a_scale, a_zero, b, b_scale, b_zero, out_scale_inv,
                                                 out_zero, lo, hi)
    fa = (a.astype(np.int32) - az).astype(np.float32) * as_
    fb = (b.astype(np.int32) - bz).astype(np.float32) * bs
    return q8((fa + fb) * osi, oz, lo, hi)


def check_chain(pre=(1.0, -0.0), hard_swish=None, post=(1.0, -0.0), want_float=True, quantize=None):
    """A scalar chain given as :func:`scalar_chain`'s keyword arguments (also the post-op of an INT8 conv,
    depthwise or matmul), validated: (the 7 float32 constants (pre_mul, pre_add, offset, threshold, scale,
    post_mul, post_add), hs, want_float, the quantize tuple or None)."""
    consts = [*pre, *post] + ([] if hard_swish is None else list(hard_swish))
    if len(pre) != 2 or len(post) != 2 or (hard_swish is not None and len(hard_swish) != 3):
        raise ValueError("scalar_chain_f32: pre and post are (mul, add), hard_swish (offset, threshold, scale)")
    if not all(math.isfinite(v) for v in consts):
        raise ValueError(f"scalar_chain_f32: the constants must be finite, got {consts}")
    if hard_swish is not None and hard_swish[2] == 0:
        raise ValueError("scalar_chain_f32: the hard swish scale must not be 0")
    qz = _check_outputs("scalar_chain_f32", want_float, quantize)
    k = np.array([pre[0], pre[1], *(hard_swish or (0.0, 0.0, 1.0)), post[0], post[1]], np.float32)
    return k, int(hard_swish is not None), bool(want_float), qz


def scalar_chain(x, *, pre=(1.0, -0.0), hard_swish=None, post=(1.0, -0.0), want_float=True, quantize=None):
    """The scalar chain (kernels/include/qdirect/chain.h) on a float32 array, each step float32 as the separate
    ops: ``t = x * pre[0] + pre[1]``; with ``hard_swish = (offset, threshold, scale)``: ``u = min(max(t + offset,
    0), threshold)``, ``t = (t * u) / scale``; ``t = t * post[0] + post[1]``. Returns ``(t or None, q or None)``,
    ``q = q8(t * scale_inv)`` for ``quantize = (scale_inv, zero, lo, hi)``. The identities (1, -0.0) change no
    bit: ``t * 1 == t``, ``t + -0.0 == t``. The post-op of the INT8 convs, and ``floatops.scalar_chain_f32``."""
    qz = check_chain(pre, hard_swish, post, want_float, quantize)[3]
    f32 = np.float32
    with np.errstate(invalid="ignore", over="ignore"):   # inf * 0 -> NaN, as in C
        t = x * f32(pre[0]) + f32(pre[1])
        if hard_swish is not None:
            offset, threshold, scale = (f32(v) for v in hard_swish)
            u = t + offset
            u = np.where(u > 0, u, f32(0))
            u = np.where(u < threshold, u, threshold)
            t = (t * u) / scale
        t = t * f32(post[0]) + f32(post[1])
    q = None if qz is None else q8(t * qz[0], *qz[1:])
    return (t if want_float else None), q


def q8_params(qz):
    """The C kernels' form of a validated quantize tuple: (scale_inv, lo - zero, hi - zero, zero), or neutral
    values for None (no u8 output)."""
    if qz is None:
        return 1.0, 0.0, 0.0, 0
    return qz[0], qz[2] - qz[1], qz[3] - qz[1], qz[1]


def _check_outputs(what, want_float, quantize):
    """The (scale_inv, zero, lo, hi) of the optional quantized output, validated (None without one)."""
    if not want_float and quantize is None:
        raise ValueError(f"{what}: nothing to return (want_float=False and no quantize)")
    if quantize is None:
        return None
    scale_inv, zero, lo, hi = quantize
    return (check_float("scale_inv", scale_inv, True), check_int("zero", zero, 0, 255), *check_lo_hi(lo, hi))


def max_pool_u8(x, kernel, stride=(1, 1), padding=(0, 0, 0, 0), *, path=None):
    """NHWC uint8 max pool; padded taps are ignored."""
    kernel, stride, padding, oh, ow = check_pool("max_pool_u8", x, kernel, stride, padding)
    xp = _pad_nhwc(x.astype(np.int16), padding, -1)  # below every u8: never the max
    out = np.full((x.shape[0], oh, ow, x.shape[3]), -1, dtype=np.int16)
    for _, _, view in _windows(xp, *kernel, stride, (1, 1), oh, ow):
        np.maximum(out, view, out=out)
    return out.astype(np.uint8)


def avg_pool_u8(x, kernel, stride=(1, 1), padding=(0, 0, 0, 0), exclusive=True, zero=0, *, path=None):
    """NHWC uint8 average pool: ``q8(float32(sum(x - zero)) / float32(count))``, count = valid taps
    (exclusive=True) or KH*KW (padded taps then count as the zero point)."""
    kernel, stride, padding, oh, ow = check_pool("avg_pool_u8", x, kernel, stride, padding)
    zero = check_int("zero", zero, 0, 255)
    xs = _pad_nhwc(x.astype(np.int32) - zero, padding, 0)
    valid = _pad_nhwc(np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int32), padding, 0)
    s = np.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=np.int32)
    count = np.zeros((1, oh, ow, 1), dtype=np.int32)
    for (_, _, view), (_, _, v) in zip(_windows(xs, *kernel, stride, (1, 1), oh, ow),
                                       _windows(valid, *kernel, stride, (1, 1), oh, ow)):
        s += view
        count += v
    if not exclusive:
        count[...] = kernel[0] * kernel[1]
    return q8(s.astype(np.float32) / count.astype(np.float32), zero, 0, 255)


def check_gap(x, scale, zero):
    check_array("global_avg_pool_u8: x", x, np.uint8, 4)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (numbers.Real, np.floating)) \
            or not math.isfinite(scale):
        raise ValueError(f"global_avg_pool_u8: scale must be a finite float, got {scale!r}")
    zero = check_int("zero", zero, 0, 255)
    if x.shape[1] * x.shape[2] == 0:
        raise ValueError("global_avg_pool_u8: empty spatial size")
    return float(scale), zero


def global_avg_pool_u8(x, scale=1.0, zero=0, *, path=None):
    """NHWC uint8 -> float32 (N, C): ``float32(float64(sum(x - zero)) / (H*W) * float64(scale))``, the sum exact
    (int64); ``scale`` is used as a float64."""
    scale, zero = check_gap(x, scale, zero)
    hw = x.shape[1] * x.shape[2]
    s = x.sum(axis=(1, 2), dtype=np.int64) - np.int64(zero) * hw
    return (s.astype(np.float64) / hw * np.float64(scale)).astype(np.float32)
