"""conv2d and depthwise_conv2d (NCHW): im2col + one matmul per group, or shifted slices for depthwise.

    y[n, o, p, q] = b[o] + sum_{c in group(o), i, j} w[o, c, i, j] * x_pad[n, c, p*sh + i*dh, q*sw + j*dw]

where ``x_pad`` has ``paddings`` (top, left, bottom, right) zeros around x. The forward builds the columns
with :func:`refquant._dispatch.im2col` and multiplies ``w.reshape(G, OC/G, C/G*kh*kw)`` into them, in chunks
of samples so the columns stay under ~256 MB; the backward recomputes the columns rather than keeping them on
the tape, and gets dx back through :func:`refquant._dispatch.col2im`. When every group has one input channel
(depthwise, with any channel multiplier) the backward instead accumulates each kernel tap over strided slices
of x: two to three times faster than the tiny per-channel matmuls and col2im. A float32 depthwise forward runs
the direct kernel ``floatops.depthwise_conv2d`` (:func:`refquant.reference.floatops.depthwise_conv2d` states
its order of float32 operations; 4-6x the im2col route at stride 1).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from .. import _dispatch
from ..errors import ShapeError
from ..reference import fconv as _fconv_spec
from ..reference.im2col import MAX_EXTENT, check_geometry, check_size
from ..threads import float_kernel_threads
from .plans import PlanCache, frozen
from .registry import attr_int, attr_ints, attr_spec, register

_COLS_BYTES = 256 << 20


def pair(v) -> tuple[int, int]:
    """An attribute given as [a, b] (or a single int) as a pair of ints."""
    if not isinstance(v, (list, tuple)):
        v = [v] if np.isscalar(v) else list(v)
    return (int(v[0]), int(v[-1]))


def pads4(v) -> tuple[int, int, int, int]:
    """``paddings`` as (top, left, bottom, right); [ph, pw] means symmetric padding."""
    v = [int(p) for p in v]
    return (v[0], v[1], v[0], v[1]) if len(v) == 2 else tuple(v)


def pad_input(x, top, left, bottom, right, value=0.0):
    """x with padding on H and W (a negative bottom / right is taken as none: those rows go unread)."""
    return np.pad(x, ((0, 0), (0, 0), (top, max(bottom, 0)), (left, max(right, 0))), constant_values=value)


def window(xp, i, j, oh, ow, stride, dilation=(1, 1)):
    """The strided view ``xp[:, :, p*sh + i*dh, q*sw + j*dw]`` over the output grid (p < oh, q < ow)."""
    r, c = i * dilation[0], j * dilation[1]
    return xp[:, :, r:r + stride[0] * (oh - 1) + 1:stride[0], c:c + stride[1] * (ow - 1) + 1:stride[1]]


def _params(attrs):
    return (pair(attrs.get("strides", [1, 1])), pads4(attrs.get("paddings", [0, 0, 0, 0])),
            pair(attrs.get("dilations", [1, 1])), int(attrs.get("groups", 1)))


def check_window_attrs(attrs, kernel=None):
    """Load-time check of a window op's geometry attributes (conv, pool, their INT8 forms): ``strides`` and
    ``dilations`` 1 or 2 ints in [1, 2**31), ``paddings`` 2 or 4 ints in [0, 2**31), and ``kernel`` (an attribute
    name such as "ksize") 1 or 2 ints in [1, 2**31) when given."""
    attr_ints(attrs, "strides", [1, 1], (1, 2), 1, MAX_EXTENT, scalar_ok=True)
    attr_ints(attrs, "dilations", [1, 1], (1, 2), 1, MAX_EXTENT, scalar_ok=True)
    attr_ints(attrs, "paddings", [0, 0, 0, 0], (2, 4), 0, MAX_EXTENT)
    if kernel is not None:
        attr_ints(attrs, kernel, lengths=(1, 2), lo=1, hi=MAX_EXTENT, scalar_ok=True)


def _check_conv(attrs, inputs):
    check_window_attrs(attrs)
    attr_int(attrs, "groups", 1, 1, MAX_EXTENT)


def _out_hw(x_shape, w_shape, stride, pad, dilation, what="conv2d"):
    """(OH, OW) after the shared geometry check of the input, kernel, stride, padding, dilation; 0 (an empty
    output: the window just misses the padded input, as shape inference on small dummy sizes meets) is allowed."""
    return check_geometry(what, x_shape[2:4], w_shape[2:4], stride, pad, dilation)


def _conv_shape(attrs, x, w, b=None):
    stride, pad, dilation, _ = _params(attrs)
    return ((x[0], w[0]) + _out_hw(x, w, stride, pad, dilation),)


def _sample_chunks(n, bytes_per_sample):
    step = max(1, _COLS_BYTES // max(1, bytes_per_sample))
    return [slice(s, s + step) for s in range(0, n, step)]


# ---- im2col + matmul ---------------------------------------------------------------------------------
def _gemm_forward(x, w, stride, pad, dilation, groups, oh, ow, row_cols_bytes=None):
    """y_g = w_g @ cols_g for each group g, chunk by chunk; with ``row_cols_bytes`` (one group), blocks of
    output rows whose columns take about that many bytes, so they stay in cache (other float32 bits)."""
    n, oc, (_, cg, kh, kw) = x.shape[0], w.shape[0], w.shape
    if kh == kw == 1 and stride == (1, 1) and not any(pad) and groups == 1:  # the columns are x itself
        return np.matmul(w.reshape(oc, cg), x.reshape(n, cg, oh * ow)).reshape(n, oc, oh, ow)
    k = cg * kh * kw
    if row_cols_bytes and groups == 1 and k * oh * ow * x.itemsize > 2 * row_cols_bytes:
        return _gemm_forward_rows(x, w, stride, pad, dilation, oh, ow, max(1, row_cols_bytes // (k * ow * x.itemsize)))
    wg = w.reshape(groups, oc // groups, k)
    y = np.empty((n, oc, oh * ow), dtype=np.result_type(x, w))
    for s in _sample_chunks(n, groups * k * oh * ow * x.itemsize):
        cols = _dispatch.im2col(x[s], kh, kw, stride, pad, dilation).reshape(-1, groups, k, oh * ow)
        y[s] = np.matmul(wg, cols).reshape(-1, oc, oh * ow)
    return y.reshape(n, oc, oh, ow)


def _gemm_forward_rows(x, w, stride, pad, dilation, oh, ow, step):
    """One group, ``step`` output rows at a time: the columns of input rows [r0 * sh - top, ...) only."""
    (n, _, h, _), (oc, _, kh, _) = x.shape, w.shape
    (sh, _), (top, left, _, right), reach = stride, pad, (kh - 1) * dilation[0] + 1
    y = np.empty((n, oc, oh, ow), dtype=np.result_type(x, w))
    wm = w.reshape(oc, -1)
    for r0 in range(0, oh, step):
        r1 = min(oh, r0 + step)
        i0, i1 = r0 * sh - top, (r1 - 1) * sh - top + reach  # input rows [i0, i1), outside x are padding
        lo = min(max(i0, 0), h)
        hi = max(min(i1, h), lo)
        if hi == lo:  # the block reads padding only
            y[:, :, r0:r1] = 0
            continue
        cols = _dispatch.im2col(np.ascontiguousarray(x[:, :, lo:hi]), kh, w.shape[3], stride,
                                (lo - i0, left, i1 - hi, right), dilation)
        y[:, :, r0:r1] = np.matmul(wm, cols).reshape(n, oc, r1 - r0, ow)
    return y


def _gemm_backward(x, w, gy, stride, pad, dilation, groups, need_dx):
    """dw = sum_n gy_g @ cols_g^T and dx = col2im(w_g^T @ gy_g), group by group, chunk by chunk."""
    n, oc, (_, cg, kh, kw) = x.shape[0], w.shape[0], w.shape
    k, ohw = cg * kh * kw, gy.shape[2] * gy.shape[3]
    wg = w.reshape(groups, oc // groups, k)
    dw = np.zeros_like(wg)
    dx = np.empty_like(x) if need_dx else None
    for s in _sample_chunks(n, groups * k * ohw * x.itemsize):
        cols = _dispatch.im2col(x[s], kh, kw, stride, pad, dilation).reshape(-1, groups, k, ohw)
        g = gy[s].reshape(-1, groups, oc // groups, ohw)
        dw += np.matmul(g, cols.transpose(0, 1, 3, 2)).sum(axis=0)
        if need_dx:
            dcols = np.matmul(wg.transpose(0, 2, 1), g).reshape(-1, groups * k, ohw)
            dx[s] = _dispatch.col2im(dcols, x[s].shape, kh, kw, stride, pad, dilation)
    return dx, dw.reshape(w.shape)


# ---- depthwise backward: one multiply-add per kernel tap ---------------------------------------------
def _depthwise_backward(x, w, gy, stride, pad, dilation, need_dx):
    """For each tap (i, j): dw[o, 0, i, j] = sum(gy[:, o] * xs[:, o // m]) and dxs[:, c] += sum_{o // m = c}
    gy[:, o] * w[o, 0, i, j], with xs the tap's strided window of x_pad and m the channel multiplier."""
    n, c, h, wd = x.shape
    m, (oh, ow) = w.shape[0] // c, gy.shape[2:]
    xp = pad_input(x, *pad)
    dxp = np.zeros_like(xp) if need_dx else None
    dw = np.empty_like(w)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            xs = window(xp, i, j, oh, ow, stride, dilation)
            dw[:, 0, i, j] = np.einsum("nchw,nchw->c", gy, np.repeat(xs, m, axis=1) if m > 1 else xs)
            if need_dx:
                dxs = gy * w[:, 0, i, j, None, None]
                window(dxp, i, j, oh, ow, stride, dilation)[...] += (
                    dxs.reshape(n, c, m, oh, ow).sum(axis=2) if m > 1 else dxs)
    dx = dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] if need_dx else None
    return dx, dw


def _is_depthwise(x, w, groups):
    return groups > 1 and groups == x.shape[1] and w.shape[1] == 1


def _conv2d_grad(ctx, attrs, gy):
    x, w = ctx.saved
    stride, pad, dilation, groups = _params(attrs)
    need_dx = ctx.needs_input_grad[0]
    if _is_depthwise(x, w, groups):
        dx, dw = _depthwise_backward(x, w, gy, stride, pad, dilation, need_dx)
    else:
        dx, dw = _gemm_backward(x, w, gy, stride, pad, dilation, groups, need_dx)
    db = gy.sum(axis=(0, 2, 3))
    return (dx, dw, db)[:len(ctx.needs_input_grad)]  # the bias input may be absent or ""


@register("conv2d", weight_inputs=(1,), out_arg="Output", backward=_conv2d_grad, shape=_conv_shape, check=_check_conv)
def conv2d(ctx, attrs, x, w, b=None):
    """y[n, o] = b[o] + sum_{c in group(o), i, j} w[o, c, i, j] * x_pad[n, c, p*sh + i*dh, q*sw + j*dw]."""
    y = _conv_forward(attrs, x, w, b)
    ctx.save(x, w)
    return y


def _checked_params(attrs, x, w):
    """_params(attrs) and (OH, OW), after checking x and w against them."""
    stride, pad, dilation, groups = _params(attrs)
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"conv2d: input {x.shape} and filter {w.shape} must both be 4-D (NCHW, OIHW)")
    if groups < 1 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ShapeError(f"conv2d: input {x.shape}, filter {w.shape} and groups {groups} do not match")
    return (stride, pad, dilation, groups) + _out_size(x.shape, w.shape, stride, pad, dilation)


@functools.lru_cache(maxsize=4096)
def _out_size(x_shape, w_shape, stride, pad, dilation):
    """(OH, OW) after the geometry and size checks (remembered per shape: they run on every call otherwise)."""
    oh, ow = _out_hw(x_shape, w_shape, stride, pad, dilation)
    check_size("conv2d", x_shape[0], w_shape[0], oh, ow)
    return oh, ow


def _conv_forward(attrs, x, w, b, row_cols_bytes=None):
    stride, pad, dilation, groups, oh, ow = _checked_params(attrs, x, w)
    if _is_depthwise(x, w, groups) and x.dtype == w.dtype == np.float32 and (b is None or b.dtype == np.float32):
        y = _dispatch.kernel("floatops").depthwise_conv2d(
            np.ascontiguousarray(x), np.ascontiguousarray(w), None if b is None else np.ascontiguousarray(b),
            stride, pad, dilation, max_threads=float_kernel_threads())
    else:
        y = _gemm_forward(x, w, stride, pad, dilation, groups, oh, ow, row_cols_bytes)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
    return y


register("depthwise_conv2d", weight_inputs=(1,), out_arg="Output", backward=_conv2d_grad, shape=_conv_shape, check=_check_conv)(conv2d)


# ---- inference: conv + bias + activation, the ops refquant.deploy.optimize_fp32 writes ------------------------
ACTIVATIONS = ("", "relu", "relu6", "hard_sigmoid", "hard_swish")
_ROW_COLS_BYTES = 2 << 20


def _check_conv_act(attrs, inputs):
    _check_conv(attrs, inputs)
    attr_spec(activation=ACTIVATIONS, threshold="float", scale="float", offset="float", slope="float",
              post_scale="float", post_shift="float")(attrs, inputs)


def _conv_act_shape(attrs, x, w, b=None, r=None):
    y = _conv_shape(attrs, x, w)[0]
    return (y if r is None else tuple(np.broadcast_shapes(y, tuple(r))),)


@register("conv2d_bias_act", shape=_conv_act_shape, check=_check_conv_act, fused=True)
def conv2d_bias_act(ctx, attrs, x, w, b=None, r=None):
    """act(conv2d(x, w, b) + r) for inference (no backward): ``r`` (optional) is a residual added before the
    activation, broadcast as elementwise_add does. ``activation``: "" (none), "relu", "relu6" (clip to
    [0, ``threshold``], default 6), "hard_sigmoid" (clip(y * ``slope`` + ``offset``, 0, 1), defaults 0.2, 0.5) or
    "hard_swish" (y * clip(y + ``offset``, 0, ``threshold``) / ``scale``, defaults 3, 6, 6); then, with
    ``post_scale`` / ``post_shift`` attributes (defaults 1, 0), y * post_scale + post_shift.

    Float32 convs with one group run ``fconv.conv2d`` (:mod:`refquant.reference.fconv`): one GEMM per sample on
    weights packed once (cached for a read-only weight array, as :func:`refquant.deploy.optimize_fp32` stores
    them; packed on each call otherwise), im2col inside the packing, bias, residual (of the output's shape) and
    activation in the epilogue; float32 depthwise convs run ``fconv.depthwise_conv2d``, fused multiply-adds with
    the bias and activation in the same pass. Their sums differ from conv2d's in rounding (the bound is in that
    module). Other convs take conv2d's route (convs whose columns exceed 4 MB per sample build them for blocks of
    output rows of about 2 MB, in cache), then add the residual and apply the activation with the float
    operations of their own ops.

    The fconv calls are planned once per weight array (read-only, as optimize_fp32 stores them), attributes
    (compared by value on every call) and input shape (:func:`_plan`): a call then checks only its inputs."""
    key = (id(attrs), id(b), x.shape, x.dtype, None if r is None else (r.shape, r.dtype))
    run = _PLANS.get(w, key, attrs)
    if run is None:
        run = _plan(key, attrs, x, w, b, r)
    if run is not None:
        return run(np.ascontiguousarray(x), None if r is None else np.ascontiguousarray(r))
    stride, pad, dilation, groups, oh, ow = _checked_params(attrs, x, w)
    act = attrs.get("activation", "")
    if _fconv_route(x, w, b, r, groups, oh, ow):
        fc, x, epi = _dispatch.kernel("fconv"), np.ascontiguousarray(x), _fconv_spec.epilogue(act, attrs)
        b = None if b is None else np.ascontiguousarray(b)
        if groups == 1:
            return fc.conv2d(x, _packed(w), w.shape[0], w.shape[2:], b, stride, pad, dilation, epi,
                             residual=None if r is None else np.ascontiguousarray(r))
        return fc.depthwise_conv2d(x, np.ascontiguousarray(w), b, stride, pad, dilation, epi)
    y = _conv_forward(attrs, x, w, b, _ROW_COLS_BYTES)
    if r is not None:
        y = y + r
    if act == "relu":
        np.maximum(y, 0, out=y)
    elif act == "relu6":
        np.clip(y, 0, float(attrs.get("threshold", 6.0)), out=y)
    elif act == "hard_sigmoid":
        y *= float(attrs.get("slope", 0.2))
        y += float(attrs.get("offset", 0.5))
        np.clip(y, 0, 1, out=y)
    elif act == "hard_swish":
        t = np.add(y, float(attrs.get("offset", 3.0)))
        np.clip(t, 0, float(attrs.get("threshold", 6.0)), out=t)
        t *= y
        t /= float(attrs.get("scale", 6.0))
        y = t
    if "post_scale" in attrs or "post_shift" in attrs:
        y = y * np.float32(attrs.get("post_scale", 1.0)) + np.float32(attrs.get("post_shift", 0.0))
    return y


def _fconv_route(x, w, b, r, groups, oh, ow):
    """Whether conv2d_bias_act runs an fconv kernel: float32 operands, one group or depthwise, a residual (one
    group only) of the output's shape."""
    fused_r = r is None or (r.dtype == np.float32 and r.shape == (x.shape[0], w.shape[0], oh, ow) and groups == 1)
    return x.dtype == w.dtype == np.float32 and (b is None or b.dtype == np.float32) and fused_r and (
        groups == 1 or _is_depthwise(x, w, groups))


_PLANS = PlanCache(per_owner=16)  # fconv plans per read-only weight array; 16 input shapes (a detector's pages)


def _plan(key, attrs, x, w, b, r):
    """plan(x, r) for a conv2d_bias_act call of ``key`` that runs an fconv kernel on frozen, contiguous weights
    (and a contiguous bias), remembered until w is freed (refquant/ops/plans.py); else None. The plan checks the
    attributes and the geometry once (fconv.prepare_*); it keeps packed weights or a copy of depthwise ones,
    never w itself, and reads the bias array at each call."""
    if not (frozen(w) and w.flags.c_contiguous) or (b is not None and not b.flags.c_contiguous):
        return None  # before the checks: the caller's path makes them
    stride, pad, dilation, groups, oh, ow = _checked_params(attrs, x, w)
    if not _fconv_route(x, w, b, r, groups, oh, ow):
        return None
    fc, epi = _dispatch.kernel("fconv"), _fconv_spec.epilogue(attrs.get("activation", ""), attrs)
    if groups == 1:
        run = fc.prepare_conv2d(tuple(x.shape), _packed(w), w.shape[0], w.shape[2:], b, stride, pad, dilation, epi)
    else:
        dw = fc.prepare_depthwise(tuple(x.shape), np.array(w), b, stride, pad, dilation, epi)
        run = lambda x, r: dw(x)  # noqa: E731
    return _PLANS.put(w, key, attrs, (), run)


_PACKED = PlanCache(per_owner=1)  # pack_weights(w) per read-only float32 weight array


def _packed(w):
    """pack_weights(w), computed once per frozen weight array (the entry leaves with it)."""
    if not (frozen(w) and w.flags.c_contiguous):  # a writeable array may change under the packed copy
        warnings.warn("conv2d_bias_act: a writeable weight array is packed again on every call (optimize_fp32 "
                      "stores read-only weights; w.setflags(write=False) packs once)", RuntimeWarning, stacklevel=2)
        return _fconv_spec.pack_weights(np.ascontiguousarray(w))
    packed = _PACKED.get(w, "packed", None)
    return packed if packed is not None else _PACKED.put(w, "packed", None, (), _fconv_spec.pack_weights(w))
