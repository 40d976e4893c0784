"""Float32 inference kernels, the NumPy twin of ``kernels/floatops.pyx`` and its specification.

Every step below is one float32 operation in the order written (no fused multiply-add), the same as the C code
in ``kernels/include/floatops/floatops.h``, so the twin and every compiled path give the same bits (but for the
sign and payload of a NaN, which IEEE leaves open).

* :func:`exp_neg`: ``exp(v)`` for ``v <= 0`` (or NaN), Cephes expf: ``vc = max(v, EXP_MIN)``,
  ``t = vc * log2(e) + 1.5 * 2^23`` (so ``k = t - 1.5 * 2^23 = rint(vc * log2(e))``),
  ``r = (vc - k * LN2_HI) - k * LN2_LO``, ``p = P(r) * r^2 + r + 1``, result ``p * 2^k`` with ``2^k`` built from
  the low bits of ``t``; 0 when ``v < EXP_MIN = -126 ln 2`` (where ``exp(v) < 2^-126``). Max error on
  [-87.3, 0]: 0.97 ulp (relative 8.1e-8) against float64 ``numpy.exp``.
* :func:`erf`: ``|z| < 0.875``: ``z * A(z^2)``; otherwise ``erfc(|z|) = exp_neg(-(|z| * |z|)) * (t * B(t))``,
  ``t = 1 / (1 + 0.5 |z|)``, ``erf = +-(1 - erfc)``. A (degree 5) and B (degree 8) are least-squares fits on
  Chebyshev points, rounded to float32. Max abs error against float64 ``scipy.special.erf`` over a sweep of
  4,000,001 points of [-10, 10]: 1.13e-7 (at the split; float32 rounding dominates); erf(+-inf) = +-1.
* :func:`gelu_erf`: ``y = xc * (0.5 * h)``, ``xc = max(x, -20)`` (so gelu(-inf) = -0), ``z = xc * (1/sqrt 2)``,
  ``h = 1 + z A(z^2)`` for ``|z| < 0.875``, else ``erfc(|z|)`` (z < 0) or ``2 - erfc(|z|)``. Max of
  ``|y - gelu64(x)| / max(1, |x|)`` against the float64 formula (scipy erf) over 4,000,001 points of [-20, 20]:
  1.3e-7 (at x = 1.16, about 2 ulp); gelu(+inf) = +inf, NaN -> NaN.
* :func:`sigmoid`: ``e = exp_neg(-|x|)``, ``d = 1 + e``, ``y = 1 / d`` for ``x >= 0`` else ``e / d`` (no overflow
  for any x). Max relative error against the float64 formula over 2,000,001 points of [-87, 40]: 1.72e-7 (about
  1.5 ulp); sigmoid(+-inf) = 1 / 0, NaN -> NaN, and 0 below -87.34 (``EXP_MIN``), where the true value is a
  float32 subnormal.
* :func:`softmax_lastaxis`: per row ``m = max``, ``e_i = exp_neg(x_i - m)``, ``s`` = float64 sum of the ``e_i``
  (lane ``j`` of 8 adds the elements ``i = j mod 8`` in order, then ``s = lane 0 + lane 1 + ... + lane 7``),
  ``y_i = e_i / float32(s)`` (one float32 division). On random 128-wide rows (N(0, sigma^2), sigma 1 to 30):
  max abs error 8.6e-8 against the float64 softmax, rows sum to 1 within 8.6e-8; the relative error of small
  outputs grows with |x_i - m| (float32 rounding of the difference, as in NumPy's float32 softmax). Masked entries
  (-1e4, float32 min, -inf) give 0; a row holding NaN or +inf, or all -inf, gives a row of NaN, as NumPy does.
* :func:`layer_norm_lastaxis`: per row of ``n`` values, in float64: ``mean = S(x_i) / n``,
  ``var = S(d_i * d_i) / n`` with ``d_i = x_i - mean`` (two passes), ``inv = 1 / sqrt(var + epsilon)``,
  ``xhat_i = float32((x_i - mean) * inv)`` (one float64 subtraction and product, rounded once to float32); then in
  float32 ``y_i = xhat_i * scale_i + bias_i`` (each factor only when given; a product then a sum, as the NumPy
  ``layer_norm`` op). ``S`` is the float64 lane sum of the softmax: lane ``j`` of 8 (starting at +0) adds the terms
  ``i = j mod 8`` in order, then ``S = lane 0 + lane 1 + ... + lane 7``. The float64 statistics and centering make
  ``xhat`` correct to about 1 ulp even for rows with a large offset (1e4 + noise), where the float32 NumPy op loses
  digits. Against the float64 formula (over rows of 7 to 1000 values, offsets 0 to 1e4, sigma 1e-2 to 30):
  ``|xhat - xhat64| / max(1, |xhat64|)`` measured max 6.0e-8 (one rounding; 1e-7 tested),
  ``|y - y64| / (|xhat64 * scale| + |bias|)`` measured max 1.6e-7 (3e-7 tested), ``|y - y64| / max(1, |y64|)``
  measured max 3.3e-7 (5e-7 tested). Against refquant's float32 NumPy ``layer_norm`` op (float32 variance and
  ``x - mean``): ``|y - y_numpy| / max(1, |y64|)`` measured max 9.5e-7 on rows with ``|mean| <= std``
  (2e-6 tested); with a large offset the NumPy op is the inaccurate one (3.3e-3 at 1e4 + N(0, 1), the kernel
  2.5e-7). A constant row gives ``xhat = 0`` exactly (so ``y = bias``); a row holding NaN or +-inf gives a row of
  NaN, as NumPy.

The validation helpers here are shared with the compiled module, so both reject the same inputs the same way.
Every function takes the compiled module's ``path=`` keyword too, and ignores it; ``max_threads`` (None or an int
>= 1, the compiled module's thread cap) is checked and otherwise ignored.
"""
from __future__ import annotations

import numpy as np

from .im2col import window_args
from .qdirect import _check_outputs, check_array, check_int, q8, scalar_chain

f32 = np.float32

EXP_MIN = f32(-87.33654)
ERF_SPLIT = f32(0.875)
GELU_MIN = f32(-20.0)
LANES = 8  # partial sums of a softmax row
_ROUND = f32(12582912.0)  # 1.5 * 2^23, bits 0x4B400000
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_ERF_A = (-6.199347e-4, 5.0314264e-3, -2.679095e-2, 1.1282441e-1, -3.7612548e-1, 1.1283791)
_ERFC_B = (1.3840308e-2, 5.3250827e-2, -1.7971966e-1, 5.58312e-2, 6.819264e-2, 1.7844845e-1, 2.4669032e-1,
           2.8209835e-1, 2.8209478e-1)


def check_input(name, x, min_ndim=0, max_threads=None):
    """``x`` must be a C-contiguous float32 ndarray with at least ``min_ndim`` dimensions; ``max_threads`` None or an
    int >= 1."""
    if max_threads is not None:
        check_int(f"{name}: max_threads", max_threads, 1)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name}: expected dtype float32, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimension(s), got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: x must be C-contiguous (use numpy.ascontiguousarray)")
    return x


def check_layer_norm_input(name, x, scale, bias, max_threads=None):
    """``x`` and ``max_threads`` as :func:`check_input` with at least one dimension; ``scale`` and ``bias`` None
    or C-contiguous float32 ndarrays of ``x.shape[-1]`` elements (any shape)."""
    check_input(name, x, min_ndim=1, max_threads=max_threads)
    for what, v in (("scale", scale), ("bias", bias)):
        if v is None:
            continue
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{name}: {what} must be a numpy.ndarray or None, got {type(v).__name__}")
        if v.dtype != np.float32:
            raise TypeError(f"{name}: {what} must have dtype float32, got {v.dtype}")
        if v.size != x.shape[-1]:
            raise ValueError(f"{name}: {what} must hold {x.shape[-1]} values (the last axis), got shape {v.shape}")
        if not v.flags.c_contiguous:
            raise ValueError(f"{name}: {what} must be C-contiguous (use numpy.ascontiguousarray)")
    return x


def _horner(coefs, v):
    """coefs[0] v^d + ... + coefs[d], highest degree first, in float32."""
    r = np.full_like(v, f32(coefs[0]))
    for c in coefs[1:]:
        r = r * v + f32(c)
    return r


def exp_neg(v):
    """exp(v) in float32 for float32 ``v <= 0`` (see the module docstring)."""
    with np.errstate(all="ignore"):
        vc = np.where(v < EXP_MIN, EXP_MIN, v)
        t = vc * f32(1.44269504) + _ROUND
        k = t - _ROUND
        r = (vc - k * f32(0.693359375)) - k * f32(-2.12194440e-4)
        p = _horner(_EXP_P, r) * (r * r) + r + f32(1)
        scale = ((t.view(np.uint32) + np.uint32(127 - 0x4B400000 + (1 << 32))) << np.uint32(23)).view(np.float32)
        return np.where(v < EXP_MIN, f32(0), p * scale)


def _erf_small(z):
    return z * _horner(_ERF_A, z * z)


def _erfc_large(a):
    t = f32(1) / (f32(1) + f32(0.5) * a)
    return exp_neg(-(a * a)) * (t * _horner(_ERFC_B, t))


def erf(x, *, path=None):
    """erf(x) in float32 (see the module docstring); the formula :func:`gelu_erf` uses."""
    check_input("erf", x)
    with np.errstate(all="ignore"):
        a = np.abs(x)
        c = f32(1) - _erfc_large(a)
        return np.where(a < ERF_SPLIT, _erf_small(x), np.where(x < 0, -c, c)).astype(np.float32, copy=False)


def gelu_erf(x, *, max_threads=None, path=None):
    """y = 0.5 x (1 + erf(x / sqrt 2)) in float32, any shape (see the module docstring)."""
    check_input("gelu_erf", x, max_threads=max_threads)
    with np.errstate(all="ignore"):
        xc = np.where(x < GELU_MIN, GELU_MIN, x)
        z = xc * f32(0.70710678)
        a = np.abs(z)
        c = _erfc_large(a)
        h = np.where(a < ERF_SPLIT, f32(1) + _erf_small(z), np.where(z < 0, c, f32(2) - c))
        return (xc * (f32(0.5) * h)).astype(np.float32, copy=False)


def sigmoid(x, *, max_threads=None, path=None):
    """y = 1 / (1 + exp(-x)) in float32, any shape (see the module docstring)."""
    check_input("sigmoid", x, max_threads=max_threads)
    with np.errstate(all="ignore"):
        e = exp_neg(-np.abs(x))
        d = f32(1) + e
        return np.where(x >= 0, f32(1) / d, e / d).astype(np.float32, copy=False)


def check_relu_f32(x, threshold, max_threads=None):
    """``x`` as :func:`check_input`; ``threshold`` None or a finite float32 value."""
    check_input("relu_f32", x, max_threads=max_threads)
    if threshold is not None:
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)):
            raise TypeError(f"relu_f32: threshold must be a number or None, got {type(threshold).__name__}")
        with np.errstate(over="ignore"):
            if not np.isfinite(f32(threshold)):
                raise ValueError(f"relu_f32: threshold must be finite in float32, got {threshold!r}")


def relu_f32(x, threshold=None, *, max_threads=None, path=None):
    """relu: ``x <= 0 ? 0 : x`` (-0 gives +0, NaN passes: NumPy's ``maximum(x, 0)`` on x86); with ``threshold``
    t, relu6's clip: ``a = x < 0 ? 0 : x``, then ``a > t ? t : a`` (-0 and NaN pass: NumPy's ``clip(x, 0, t)``).
    Written with comparisons, not maximum / clip, whose sign of zero may differ between CPUs."""
    check_relu_f32(x, threshold, max_threads)
    if threshold is None:
        return np.where(x <= 0, f32(0), x)
    a = np.where(x < 0, f32(0), x)
    return np.where(a > f32(threshold), f32(threshold), a)


def softmax_lastaxis(x, *, max_threads=None, path=None):
    """Softmax over the last axis of float32 ``x`` (..., n) (see the module docstring)."""
    check_input("softmax_lastaxis", x, min_ndim=1, max_threads=max_threads)
    n = x.shape[-1]
    if x.size == 0:
        return np.empty_like(x)
    rows = x.reshape(-1, n)
    with np.errstate(all="ignore"):
        e = exp_neg(rows - np.max(rows, axis=1, keepdims=True))
        lanes = np.zeros((rows.shape[0], -(-n // LANES) * LANES), dtype=np.float64)
        lanes[:, :n] = e
        lanes = lanes.reshape(rows.shape[0], -1, LANES)
        acc = lanes[:, 0].copy()
        for b in range(1, lanes.shape[1]):
            acc += lanes[:, b]
        s = acc[:, 0].copy()
        for j in range(1, LANES):
            s += acc[:, j]
        return (e / s.astype(np.float32)[:, None]).reshape(x.shape)


def lane_sum(v):
    """Float64 sum of each row of the float64 (rows, n) array ``v`` in the kernels' lane order (module docstring)."""
    rows, n = v.shape
    lanes = np.zeros((rows, -(-n // LANES) * LANES), dtype=np.float64)
    lanes[:, :n] = v
    lanes = lanes.reshape(rows, -1, LANES)
    acc = np.zeros((rows, LANES), dtype=np.float64)  # +0 start, as in C (a first term -0 gives +0)
    for b in range(lanes.shape[1]):
        acc += lanes[:, b]
    s = acc[:, 0].copy()
    for j in range(1, LANES):
        s += acc[:, j]
    return s


def layer_norm_lastaxis(x, scale=None, bias=None, epsilon=1e-5, *, max_threads=None, path=None):
    """Layer norm of each row of the last axis of float32 ``x`` (..., n), optional float32 ``scale`` / ``bias`` of
    n values (see the module docstring)."""
    check_layer_norm_input("layer_norm_lastaxis", x, scale, bias, max_threads)
    eps = float(epsilon)
    if x.size == 0:
        return np.empty_like(x)
    n = x.shape[-1]
    x64 = x.reshape(-1, n).astype(np.float64)
    with np.errstate(all="ignore"):
        mean = lane_sum(x64) / n
        d = x64 - mean[:, None]
        inv = 1.0 / np.sqrt(lane_sum(d * d) / n + eps)
        y = (d * inv[:, None]).astype(np.float32)
        if scale is not None:
            y = y * scale.reshape(-1)
        if bias is not None:
            y = y + bias.reshape(-1)
    return y.reshape(x.shape)


# ---- the float glue between INT8 ops (residual add, scalar chain, SE excitation, global average pool): float32
# in, float32 and / or the next INT8 op's uint8 out, in one pass

def check_add_f32(a, b, want_float, quantize):
    check_array("add_f32: a", a, np.float32)
    check_array("add_f32: b", b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"add_f32: a and b must have the same shape, got {a.shape} and {b.shape}")
    return _check_outputs("add_f32", want_float, quantize)


def add_f32(a, b, *, relu=False, want_float=True, quantize=None, path=None):
    """A float residual add and what follows it, in one pass: ``f = a + b``, with ``relu`` ``f > 0 ? f : 0``;
    returns ``(f or None, q or None)`` with ``q = q8(f * scale_inv)`` when ``quantize = (scale_inv, zero, lo,
    hi)`` (the input grid of the next INT8 op)."""
    qz = check_add_f32(a, b, want_float, quantize)
    f = a + b
    if relu:
        f = np.where(f > 0, f, np.float32(0))
    q = None if qz is None else q8(f * qz[0], *qz[1:])
    return (f if want_float else None), q


def scalar_chain_f32(x, *, pre=(1.0, -0.0), hard_swish=None, post=(1.0, -0.0), want_float=True, quantize=None,
                     path=None):
    """A chain of scalar float ops in one pass, each step float32 as the separate ops: ``t = x * pre[0] +
    pre[1]``; with ``hard_swish = (offset, threshold, scale)``: ``u = min(max(t + offset, 0), threshold)``,
    ``t = (t * u) / scale``; ``t = t * post[0] + post[1]``. Returns ``(t or None, q or None)`` like
    :func:`add_f32`. The identities (1, -0.0) change no bit: ``t * 1 == t``, ``t + -0.0 == t``."""
    check_array("scalar_chain_f32: x", x, np.float32)
    return scalar_chain(x, pre=pre, hard_swish=hard_swish, post=post, want_float=want_float, quantize=quantize)


def check_channel_mul_f32(x, s, want_float, quantize):
    check_array("channel_mul_f32: x", x, np.float32, 4)
    check_array("channel_mul_f32: s", s, np.float32, 2)
    if s.shape != (x.shape[0], x.shape[3]):
        raise ValueError(f"channel_mul_f32: s must be (N, C) = {(x.shape[0], x.shape[3])}, got {s.shape}")
    return _check_outputs("channel_mul_f32", want_float, quantize)


def channel_mul_f32(x, s, *, want_float=True, quantize=None, path=None):
    """An SE block's excitation and what follows it, in one pass: ``f = x[n, h, w, c] * s[n, c]`` (float32,
    NHWC ``x``, what ``elementwise_mul`` by the (N, C, 1, 1) scale gives); returns ``(f or None, q or None)``
    like :func:`add_f32`."""
    qz = check_channel_mul_f32(x, s, want_float, quantize)
    with np.errstate(invalid="ignore", over="ignore"):
        f = x * s[:, None, None, :]
    q = None if qz is None else q8(f * qz[0], *qz[1:])
    return (f if want_float else None), q


def check_gap_f32(x):
    check_array("global_avg_pool_f32: x", x, np.float32, 4)
    if x.shape[1] * x.shape[2] == 0:
        raise ValueError(f"global_avg_pool_f32: empty spatial size {x.shape[1:3]}")


def global_avg_pool_f32(x, *, path=None):
    """NHWC float32 (N, H, W, C) -> float32 (N, C): ``float32(sum_p float64(x[n, p, c]) / (H*W))``, the float64
    sum taken pixel by pixel in order (so the compiled kernel, which adds in the same order, gives the same bits)."""
    check_gap_f32(x)
    n, h, w, c = x.shape
    rows = x.reshape(n, h * w, c)
    acc = np.zeros((n, c), np.float64)
    for p in range(h * w):
        acc += rows[:, p, :]
    return (acc / (h * w)).astype(np.float32)


# ---- direct depthwise convolution (float32, NCHW, forward only)

def check_depthwise_conv2d(x, w, bias, stride, padding, dilation, max_threads=None):
    """Validate a depthwise convolution and return ``(stride, padding, dilation, (OH, OW))`` as ints: ``x`` a
    C-contiguous float32 (N, C, H, W) array, ``w`` a C-contiguous float32 (C*M, 1, KH, KW) array (M >= 1, the
    channel multiplier), ``bias`` None or C*M contiguous float32 values, ``stride`` / ``dilation`` pairs of ints
    >= 1, ``padding`` (top, left, bottom, right) ints >= 0, ``max_threads`` None or an int >= 1."""
    from .im2col import check_geometry, check_size
    if max_threads is not None:
        check_int("depthwise_conv2d: max_threads", max_threads, 1)
    check_array("depthwise_conv2d: x", x, np.float32, 4)
    check_array("depthwise_conv2d: w", w, np.float32, 4)
    c, oc = x.shape[1], w.shape[0]
    if w.shape[1] != 1 or c == 0 or oc % c:
        raise ValueError(f"depthwise_conv2d: w must be (C*M, 1, KH, KW) for C = {c} input channels, got {w.shape}")
    if bias is not None:
        check_array("depthwise_conv2d: bias", bias, np.float32)
        if bias.size != oc:
            raise ValueError(f"depthwise_conv2d: bias must hold {oc} values, got shape {bias.shape}")
    stride, padding, dilation = window_args("depthwise_conv2d", stride, padding, dilation)
    oh, ow = check_geometry("depthwise_conv2d", x.shape[2:], w.shape[2:], stride, padding, dilation)
    check_size("depthwise_conv2d", x.shape[0], oc, oh, ow)
    return stride, padding, dilation, (oh, ow)


def depthwise_conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), *, max_threads=None,
                     path=None):
    """Depthwise convolution, float32 NCHW: output channel ``o`` reads input channel ``o // M``,
    ``y[n, o, p, q] = sum_{i, j} w[o, 0, i, j] * x_pad[n, o // M, p*sh + i*dh, q*sw + j*dw] (+ bias[o])``, each
    product and sum one float32 rounding, the taps added in row-major order starting from the first product
    (``a = w[o, 0, 0, 0] * x..``, then ``a = a + w[o, 0, i, j] * x..``), the bias added last. ``x_pad`` has
    ``padding`` (top, left, bottom, right) zeros around ``x``. The compiled paths add in the same order, so they
    give the same bits (``max_threads``, the compiled module's thread cap, is checked and ignored)."""
    (sh, sw), pad, (dh, dw), (oh, ow) = check_depthwise_conv2d(x, w, bias, stride, padding, dilation, max_threads)
    n, c = x.shape[:2]
    oc, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    if oc != c:
        xp = np.repeat(xp, oc // c, axis=1)
    y = np.zeros((n, oc, oh, ow), np.float32)
    with np.errstate(all="ignore"):
        for i in range(kh):
            for j in range(kw):
                r, s = i * dh, j * dw
                t = w[None, :, 0, i, j, None, None] * xp[:, :, r:r + sh * (oh - 1) + 1:sh, s:s + sw * (ow - 1) + 1:sw]
                y = t if i == j == 0 else y + t
        if bias is not None:
            y = y + bias.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=np.float32)


def check_nearest_f32(x, iy, ix):
    check_array("nearest_f32: x", x, np.float32, 4)
    for name, idx, n in (("iy", iy, x.shape[2]), ("ix", ix, x.shape[3])):
        check_array(f"nearest_f32: {name}", idx, np.int64, 1)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(f"nearest_f32: {name} must lie in [0, {n}), got [{idx.min()}, {idx.max()}]")


def nearest_f32(x, iy, ix, *, path=None):
    """Nearest resize of float32 NCHW ``x``: ``y[n, c, i, j] = x[n, c, iy[i], ix[j]]``, C-contiguous (a copy: the
    compiled loop gives the same values)."""
    check_nearest_f32(x, iy, ix)
    return np.ascontiguousarray(x[:, :, iy][:, :, :, ix])


def check_gap_nchw_f32(x):
    check_array("global_avg_pool_nchw_f32: x", x, np.float32, 4)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"global_avg_pool_nchw_f32: empty spatial size {x.shape[2:]}")


def global_avg_pool_nchw_f32(x, *, path=None):
    """float32 NCHW (N, C, H, W) -> (N, C, 1, 1): ``numpy.mean`` over H, W (its pairwise float32 sum of each
    contiguous plane, divided by H*W in float64), which the compiled loop repeats bit for bit."""
    check_gap_nchw_f32(x)
    return x.mean(axis=(2, 3), keepdims=True)


def check_batch_norm_nchw_f32(x, mean, inv_std, scale, bias, max_threads=None):
    """``x`` as :func:`check_input` with at least 2 dimensions (N, C, ...); the four per-channel vectors
    C-contiguous float32 of shape (C,)."""
    check_input("batch_norm_nchw_f32", x, min_ndim=2, max_threads=max_threads)
    for what, v in (("mean", mean), ("inv_std", inv_std), ("scale", scale), ("bias", bias)):
        check_array(f"batch_norm_nchw_f32: {what}", v, np.float32, 1)
        if v.shape[0] != x.shape[1]:
            raise ValueError(f"batch_norm_nchw_f32: {what} must hold {x.shape[1]} values (dimension 1 of x), "
                             f"got {v.shape[0]}")


def batch_norm_nchw_f32(x, mean, inv_std, scale, bias, *, max_threads=None, path=None):
    """Batch norm at inference of (N, C, ...) ``x``: ``y = ((x - mean) * inv_std) * scale + bias`` per channel
    (dimension 1), each step a float32 operation in that order (the ``batch_norm`` op's eval steps)."""
    check_batch_norm_nchw_f32(x, mean, inv_std, scale, bias, max_threads)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = np.subtract(x, mean.reshape(shape))
    y *= inv_std.reshape(shape)
    y *= scale.reshape(shape)
    y += bias.reshape(shape)
    return y


def check_max_pool_f32(x, ksize, stride, pad, out_hw):
    check_array("max_pool_f32: x", x, np.float32, 4)
    for name, v, lo in (("ksize", ksize, 1), ("stride", stride, 1), ("pad", pad, 0), ("out_hw", out_hw, 0)):
        if len(v) != 2:
            raise ValueError(f"max_pool_f32: {name} must hold 2 values, got {v!r}")
        for e in v:
            check_int(f"max_pool_f32: {name}", e, lo, 1 << 31)


def max_pool_f32(x, ksize, stride, pad, out_hw, *, path=None):
    """Max pool of float32 NCHW ``x``: ``y[.., i, j]`` = the max over the window rows ``i * stride[0] - pad[0] + a``
    (a < ksize[0]) and columns likewise that lie inside the map, -inf if none; numpy.maximum tap by tap in
    row-major window order (a NaN stays)."""
    check_max_pool_f32(x, ksize, stride, pad, out_hw)
    (kh, kw), (sh, sw), (pt, pl), (oh, ow) = ksize, stride, pad, out_hw
    y = np.full(x.shape[:2] + (oh, ow), -np.inf, np.float32)
    for i in range(oh):
        rows = slice(max(i * sh - pt, 0), max(min(i * sh - pt + kh, x.shape[2]), 0))
        for j in range(ow):
            cols = slice(max(j * sw - pl, 0), max(min(j * sw - pl + kw, x.shape[3]), 0))
            for v in x[:, :, rows, cols].reshape(x.shape[0], x.shape[1], -1).transpose(2, 0, 1):
                y[:, :, i, j] = np.maximum(y[:, :, i, j], v)
    return y


# ---- the array arena (kernels/include/floatops/arena.h): the compiled module caches freed array buffers of at
# least 256 KB while a graph runs (NumPy's data allocator, scoped by the executor); its twin is NumPy's own
# allocator, which gives the same arrays at the cost of a page fault per fresh page.

def arena_enter():
    """No handler to install: the previous one stays (None for :func:`arena_exit`)."""
    return None


def arena_exit(previous):
    """Nothing to restore."""


def arena_stats():
    return {"hits": 0, "misses": 0, "cached_bytes": 0, "cached_blocks": 0}


def arena_release():
    """Nothing is cached."""
