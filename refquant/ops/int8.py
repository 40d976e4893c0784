"""INT8 inference ops: what :func:`refquant.deploy.convert_to_int8` builds graphs from (docs/int8.md).

Every INT8 tensor is a uint8 array plus (scale, zero): NHWC for images, (M, K) rows for matrices; u8 after
relu/relu6 (zero 0), otherwise s8 values stored with a +128 offset (zero 128). Scales travel in the ops'
attributes and parameters; the arithmetic is the kernels' (``refquant._kernels.qgemm`` / ``qdirect``, or their
NumPy twins in :mod:`refquant.reference`), all integer except one float32 multiply and a round-half-to-even per
output (the epilogue):

    acc[m, n] = sum_k (x[m, k] - a_zero) * w[k, n] + bias[n]                      (int32)
    u8 out:  q = clamp(rint(float32(acc) * mult[n]) + out_zero, lo, hi)             f32 out: float32(acc) * mult[n]

Conv weights are GEMM matrices (K = KH*KW*Cin in (kh, kw, cin) order, N = Cout), packed once at conversion into
the microkernel's layout (``pack_b``: a 64-byte header, 16-column panels of 4-deep K groups); depthwise weights
are (KH, KW, C) int8. Column sums (``<w>@col_sum``) undo the +128 offset of s8 inputs. An op with a float32
output may carry a ``chain`` attribute (a fused_scalar_chain's attributes, a post-op): it then outputs the chain's
(float, u8) pair instead, computed block by block in the kernel. There is no backward: these graphs are for
inference.
"""
from __future__ import annotations

import warnings
import weakref

import numpy as np

from .._dispatch import kernel
from ..errors import ShapeError
from ..reference.im2col import MAX_EXTENT, check_geometry, check_size
from ..reference.qdirect import MAX_SMALL_K as SMALL_K
from .conv import pads4
from .plans import PlanCache
from .registry import attr_bool, attr_choice, attr_float, attr_int, attr_ints, register


def _gemm():
    """The compiled GEMM, or its NumPy twin."""
    return kernel("qgemm")


def _direct():
    """The compiled direct kernels, or their NumPy twin."""
    return kernel("qdirect")


def _epilogue(attrs):
    """The keyword arguments of the fused epilogue, from an INT8 op's attributes."""
    out = attrs.get("out_dtype", "u8")
    lo, hi = attrs.get("lo"), attrs.get("hi")
    kw = {"out_dtype": out, "lo": lo, "hi": hi}
    if out == "u8":
        kw["out_zero"] = int(attrs.get("out_zero", 0))
    return kw


def _check_u8(x, rank, what):
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != rank:
        raise ShapeError(f"{what}: expected a uint8 array of rank {rank}, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")


# ---- load-time attribute checks (the ``check`` hooks) ---------------------------------------------------
def _check_epilogue(attrs):
    """``out_dtype`` "u8" (with ``out_zero`` and optional ``lo`` / ``hi`` in [0, 255]) or "f32" (optional float
    bounds), ``a_zero`` in [0, 255], and a ``chain`` post-op's own attributes (f32 output only)."""
    attr_int(attrs, "a_zero", 0, 0, 255)
    out = attr_choice(attrs, "out_dtype", ("u8", "f32"), "u8")
    if out == "u8":
        attr_int(attrs, "out_zero", 0, 0, 255)
        for name in ("lo", "hi"):
            if attrs.get(name) is not None:
                attr_int(attrs, name, lo=0, hi=255)
    else:
        for name in ("lo", "hi"):
            if attrs.get(name) is not None:
                attr_float(attrs, name, finite=False)
    if attrs.get("chain"):
        if out != "f32" or not isinstance(attrs["chain"], dict):
            raise ShapeError('a chain post-op is a dict of attributes on an out_dtype "f32" op')
        _check_chain(attrs["chain"], [])


def _check_quantize(attrs):
    """A fused op's optional u8 output: ``scale_inv`` > 0 with ``zero``, ``lo``, ``hi`` in [0, 255]."""
    if "scale_inv" in attrs:
        if not attr_float(attrs, "scale_inv") > 0:
            raise ShapeError(f"attribute 'scale_inv' must be > 0, got {attrs['scale_inv']!r}")
        for name in ("zero", "lo", "hi"):
            attr_int(attrs, name, lo=0, hi=255)


def _check_fused(attrs, inputs):
    _check_quantize(attrs)
    if not attr_bool(attrs, "want_float", True) and "scale_inv" not in attrs:
        raise ShapeError("nothing to output: want_float is false and there is no scale_inv")


def _check_chain(attrs, inputs):
    for name in ("pre_mul", "pre_add", "post_mul", "post_add"):
        attr_float(attrs, name, 1.0)
    if attr_bool(attrs, "hard_swish"):
        for name in ("offset", "threshold", "scale"):
            attr_float(attrs, name)
        if float(attrs["scale"]) == 0:
            raise ShapeError("the hard swish scale must not be 0")
    _check_fused(attrs, inputs)


def _check_gemm(attrs):
    attr_int(attrs, "K", lo=1, hi=MAX_EXTENT)
    attr_int(attrs, "N", lo=1, hi=MAX_EXTENT)
    _check_epilogue(attrs)


def _check_conv_int8(attrs, inputs):
    attr_ints(attrs, "ksize", lengths=(2,), lo=1, hi=MAX_EXTENT)
    _check_window(attrs, dilations=True)
    _check_gemm(attrs)


def _check_depthwise_int8(attrs, inputs):
    _check_window(attrs, dilations=True)
    _check_epilogue(attrs)
    if attr_choice(attrs, "out_layout", ("NHWC", "NCHW"), "NHWC") == "NCHW" and attrs.get("chain"):
        raise ShapeError('a chain post-op needs out_layout "NHWC"')


def _check_max_pool_int8(attrs, inputs):
    if not attr_bool(attrs, "global_pooling"):
        attr_ints(attrs, "ksize", lengths=(2,), lo=1, hi=MAX_EXTENT)
        _check_window(attrs, dilations=False)


def _check_window(attrs, dilations):
    """``strides`` (and ``dilations``): 2 ints in [1, 2**31); ``paddings``: 4 ints (or 2, symmetric) in [0, 2**31),
    all required (convert_to_int8 writes them out)."""
    attr_ints(attrs, "strides", lengths=(2,), lo=1, hi=MAX_EXTENT)
    attr_ints(attrs, "paddings", lengths=(2, 4), lo=0, hi=MAX_EXTENT)
    if dilations:
        attr_ints(attrs, "dilations", lengths=(2,), lo=1, hi=MAX_EXTENT)


def _check_quantize_int8(attrs, inputs):
    if not attr_float(attrs, "scale_inv") > 0:
        raise ShapeError(f"attribute 'scale_inv' must be > 0, got {attrs['scale_inv']!r}")
    for name in ("zero", "lo", "hi"):
        attr_int(attrs, name, lo=0, hi=255)
    attr_choice(attrs, "layout", ("NCHW", "NHWC"), "NCHW")


def _check_dequantize_int8(attrs, inputs):
    attr_float(attrs, "scale")
    attr_int(attrs, "zero", lo=0, hi=255)
    attr_choice(attrs, "layout", ("NCHW", "NHWC"), "NCHW")


def gemm_plan(packed, col_sum, bias, mult, attrs):
    """``plan(a)``: the GEMM with this op's epilogue, ``a`` (M, K) u8 against the packed (K, N) weights, whose
    column sums ``col_sum`` undo the activation's zero point: ``- a_zero * col_sum[n]``. With a ``chain``
    attribute, the (float, u8) outputs of the scalar chain the float output fed."""
    return _gemm().prepare_gemm(packed, int(attrs["K"]), int(attrs["N"]), a_zero=int(attrs.get("a_zero", 0)),
                                col_sum=col_sum, bias=bias, scale=mult, chain=_chain(attrs), **_epilogue(attrs))


_PLANS = PlanCache()  # the INT8 convs' and matmuls' plans per weight array (refquant/ops/plans.py)


def _planned(make, attrs, x, w, *constants):
    """The plan of an INT8 op on weights ``w`` for this call (remembered per frozen weight arrays, attributes and
    input shape): ``make(attrs, x, w, *constants)`` checks everything but x's values once."""
    key = (id(attrs), x.shape, x.dtype) if isinstance(x, np.ndarray) else None
    plan = _PLANS.get(w, key, attrs, constants) if key is not None else None
    if plan is None:
        plan = _PLANS.put(w, key, attrs, constants, make(attrs, x, w, *constants))
        if not _PLANS.keeps(w, constants):
            warnings.warn("INT8 op on writeable weights: checked and prepared again on every call (read-only weights "
                          "are planned once; convert_to_int8 and refquant.load leave them read-only)", RuntimeWarning,
                          stacklevel=3)
    return plan


def _reshaped(y, shape):
    """``y`` (or each array of a chain's (float, u8) pair) reshaped."""
    if isinstance(y, tuple):
        return tuple(None if t is None else t.reshape(shape) for t in y)
    return y.reshape(shape)


@register("fused_elementwise_add", fused=True, check=_check_fused)
def fused_elementwise_add(ctx, attrs, a, b):
    """A residual add of two same-shape float32 NHWC tensors with what follows it, in one pass (the shape of
    Paddle's oneDNN ``fused_elementwise_add``): ``f = a + b``, ``relu`` if ``fuse_activation == "relu"``;
    outputs ``(f, q)``, ``q = clamp(rint(f * scale_inv) + zero, lo, hi)`` the u8 input of the next INT8 ops
    (``None`` when the op has no ``scale_inv``, and ``f`` None when ``want_float`` is false)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return kernel("floatops").add_f32(a, b, relu=attrs.get("fuse_activation", "") == "relu",
                                      want_float=bool(attrs.get("want_float", True)), quantize=_fused_quantize(attrs))


@register("fused_scalar_chain", fused=True, check=_check_chain)
def fused_scalar_chain(ctx, attrs, x):
    """A chain of scalar float ops between INT8 ops, in one pass and the same float32 steps (what PaddleOCR's
    graphs spell out op by op): ``t = x * pre_mul + pre_add`` (PP-LCNetV3's learnable affine block), then if
    ``hard_swish``: ``t = (t * min(max(t + offset, 0), threshold)) / scale`` (``elementwise_add``, ``relu6``,
    ``elementwise_mul``, ``elementwise_div``), then ``t = t * post_mul + post_add``; outputs ``(t, q)`` as
    fused_elementwise_add. Absent steps are identities (1, -0.0) that change no bit."""
    return kernel("floatops").scalar_chain_f32(np.ascontiguousarray(x, dtype=np.float32), **chain_kwargs(attrs))


def chain_kwargs(attrs) -> dict:
    """``scalar_chain_f32``'s keyword arguments from a chain's attributes (a fused_scalar_chain op's own, or the
    ``chain`` attribute of an INT8 op whose float output only fed one)."""
    hs = (float(attrs["offset"]), float(attrs["threshold"]), float(attrs["scale"])) if attrs.get("hard_swish") \
        else None
    return {"pre": (float(attrs.get("pre_mul", 1.0)), float(attrs.get("pre_add", -0.0))), "hard_swish": hs,
            "post": (float(attrs.get("post_mul", 1.0)), float(attrs.get("post_add", -0.0))),
            "want_float": bool(attrs.get("want_float", True)), "quantize": _fused_quantize(attrs)}


def _chain(attrs):
    """The kernels' ``chain`` argument of an INT8 op (None without one)."""
    return chain_kwargs(attrs["chain"]) if attrs.get("chain") else None


@register("fused_channel_mul", fused=True, check=_check_fused)
def fused_channel_mul(ctx, attrs, x, s):
    """An SE block's excitation with what follows it, in one pass: ``f = x * s`` for NHWC ``x`` (N, H, W, C) and
    its channel scale ``s`` (N, 1, 1, C) (or a constant (1, 1, 1, C), smoothing's ``1/s``), float32 as
    ``elementwise_mul``; outputs ``(f, q)`` as fused_elementwise_add."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    s = np.asarray(s, dtype=np.float32)
    if s.ndim != 4 or s.shape[1:3] != (1, 1) or x.ndim != 4 or s.shape[0] not in (1, x.shape[0]):
        raise ShapeError(f"fused_channel_mul: the scale must be (N, 1, 1, C) or (1, 1, 1, C), got {s.shape}")
    s = np.ascontiguousarray(np.broadcast_to(s, (x.shape[0],) + s.shape[1:]))
    return kernel("floatops").channel_mul_f32(x, s.reshape(s.shape[0], s.shape[3]),
                                              want_float=bool(attrs.get("want_float", True)),
                                              quantize=_fused_quantize(attrs))


def _fused_quantize(attrs):
    """The (scale_inv, zero, lo, hi) of a fused op's u8 output, or None when it has none."""
    if "scale_inv" not in attrs:
        return None
    return float(attrs["scale_inv"]), int(attrs["zero"]), int(attrs["lo"]), int(attrs["hi"])


@register("quantize_int8", int8=True, check=_check_quantize_int8)
def quantize_int8(ctx, attrs, x):
    """float32 -> uint8: ``clamp(rint(x * scale_inv) + zero, lo, hi)``; NCHW input becomes NHWC (``layout``
    "NCHW"), NHWC and 2-D inputs keep their layout."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    s, zero, lo, hi = float(attrs["scale_inv"]), int(attrs["zero"]), int(attrs["lo"]), int(attrs["hi"])
    d = _direct()
    if x.ndim == 4 and attrs.get("layout", "NCHW") == "NCHW":
        return d.quantize_nchw(x, s, zero=zero, lo=lo, hi=hi)
    rows = x.reshape(-1, x.shape[-1])
    return d.quantize_rows(rows, s, zero, lo, hi).reshape(x.shape)


@register("dequantize_int8", int8=True, check=_check_dequantize_int8)
def dequantize_int8(ctx, attrs, q):
    """uint8 -> float32 ``(q - zero) * scale``; NHWC input becomes NCHW when ``layout`` is "NCHW"."""
    s, zero = float(attrs["scale"]), int(attrs["zero"])
    d = _direct()
    q = np.ascontiguousarray(q)
    if q.ndim == 4 and attrs.get("layout", "NCHW") == "NCHW":
        return d.dequantize_nhwc(q, s, zero=zero)
    return d.dequantize_rows(q.reshape(-1, q.shape[-1]), s, zero).reshape(q.shape)


@register("conv2d_int8", int8=True, check=_check_conv_int8)
def conv2d_int8(ctx, attrs, x, packed, col_sum, bias, mult):
    """NHWC u8 conv as a GEMM: 1x1 stride-1 unpadded convs read x directly, convs with K = KH*KW*C <= 64 and
    KW*C <= 16 (a network's first conv) run the direct small-K kernel (the same numbers, no im2col matrix),
    others go through a u8 im2col whose padded taps hold the zero point ``a_zero``. Output NHWC u8 or float32.
    The call is planned once per frozen weights, attributes and input shape (:func:`_planned`)."""
    return _planned(_conv_plan, attrs, x, packed, col_sum, bias, mult)(x)


def _conv_plan(attrs, x, packed, col_sum, bias, mult):
    """``plan(x)`` of a conv2d_int8 call: the geometry and route checked, the GEMM prepared (gemm_plan)."""
    _check_u8(x, 4, "conv2d_int8")
    kh, kw = attrs["ksize"]
    stride, pad, dil = tuple(attrs["strides"]), pads4(attrs["paddings"]), tuple(attrs["dilations"])
    n, h, w, c = x.shape
    oh, ow = check_geometry("conv2d_int8", (h, w), (kh, kw), stride, pad, dil, min_out=1)
    check_size("conv2d_int8", n, oh, ow, int(attrs["N"]))
    shape, a_zero = (n, oh, ow, int(attrs["N"])), int(attrs.get("a_zero", 0))
    if kh * kw * c <= SMALL_K and kw * c <= 16 and n and not (kh == kw == 1 and stride == (1, 1) and
                                                              pad == (0, 0, 0, 0)):
        # a first conv (3x3 over 3 channels): the direct small-K kernel, no im2col matrix
        kwargs = dict(kernel=(kh, kw), stride=stride, padding=pad, dilation=dil, a_zero=a_zero, col_sum=col_sum,
                      bias=bias, scale=mult, chain=_chain(attrs), **_epilogue(attrs))
        small_k, K, N, weights = _direct().conv_small_k_u8s8, int(attrs["K"]), int(attrs["N"]), weakref.ref(packed)
        return lambda x: small_k(np.ascontiguousarray(x), weights(), K, N, **kwargs)  # the cache keys on packed
    gemm = gemm_plan(packed, col_sum, bias, mult, attrs)
    if kh == kw == 1 and stride == (1, 1) and pad == (0, 0, 0, 0):
        return lambda x: _reshaped(gemm(x.reshape(n * h * w, c)), shape)
    im2col = _direct().im2col_u8
    return lambda x: _reshaped(gemm(im2col(np.ascontiguousarray(x), kh, kw, stride, pad, dil, a_zero)), shape)


@register("depthwise_conv2d_int8", int8=True, check=_check_depthwise_int8)
def depthwise_conv2d_int8(ctx, attrs, x, w, bias, mult):
    """NHWC u8 depthwise conv with (KH, KW, C) s8 weights, the direct kernel; output NHWC, or NCHW with
    ``out_layout`` "NCHW" (a graph's float output: each row transposed in cache, no separate layout change)."""
    return _planned(_depthwise_plan, attrs, x, w, bias, mult)(np.ascontiguousarray(x))


def _depthwise_plan(attrs, x, w, bias, mult):
    """``plan(x)`` of a depthwise_conv2d_int8 call (qdirect.prepare_depthwise: the weights packed once)."""
    _check_u8(x, 4, "depthwise_conv2d_int8")
    return _direct().prepare_depthwise(
        x.shape, w, stride=tuple(attrs["strides"]), padding=tuple(attrs["paddings"]),
        dilation=tuple(attrs["dilations"]), a_zero=int(attrs.get("a_zero", 0)), bias=bias, scale=mult,
        chain=_chain(attrs), out_layout=attrs.get("out_layout", "NHWC"), **_epilogue(attrs))


@register("matmul_int8", int8=True, check=lambda attrs, inputs: _check_gemm(attrs))
def matmul_int8(ctx, attrs, x, packed, col_sum, bias, mult):
    """u8 rows (..., K) times packed (K, N) s8 weights (fc / mul; a (B, T, H) input is B*T rows) -> (..., N)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim < 2:
        raise ShapeError(f"matmul_int8: expected a uint8 array of rank >= 2, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    gemm = _planned(lambda attrs, x, *weights: gemm_plan(*weights, attrs), attrs, x, packed, col_sum, bias, mult)
    return _reshaped(gemm(np.ascontiguousarray(x).reshape(-1, x.shape[-1])), x.shape[:-1] + (int(attrs["N"]),))


@register("max_pool2d_int8", int8=True, check=_check_max_pool_int8)
def max_pool2d_int8(ctx, attrs, x):
    """Max pooling on NHWC u8 (exact: quantization is monotonic, so max commutes with it)."""
    _check_u8(x, 4, "max_pool2d_int8")
    if attrs.get("global_pooling"):
        return x.max(axis=(1, 2), keepdims=True)
    return _direct().max_pool_u8(np.ascontiguousarray(x), tuple(attrs["ksize"]), tuple(attrs["strides"]),
                                 tuple(attrs["paddings"]))


@register("nhwc_to_nchw")
def nhwc_to_nchw(ctx, attrs, x):
    """Layout change for a float op that needs NCHW (any dtype; 1- and 4-byte numbers, the common case, in the
    tiled kernel)."""
    if isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype.kind in "biuf" and x.itemsize in (1, 4):
        return _direct().nhwc_to_nchw(np.ascontiguousarray(x))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@register("nchw_to_nhwc")
def nchw_to_nhwc(ctx, attrs, x):
    """Layout change to NHWC (any dtype)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
