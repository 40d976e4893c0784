"""batch_norm (per channel, dimension 1) and layer_norm (per sample, over dimensions begin_norm_axis..)."""
from __future__ import annotations

import math

import numpy as np

from .._dispatch import kernel
from ..threads import float_kernel_threads
from .registry import attr_spec, register


def _norm_grad(gxhat, xhat, inv_std, axes):
    """dL/dx of xhat = (x - mean(x)) * inv_std with batch statistics over ``axes``:
    inv_std * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))."""
    return inv_std * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                      - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))


# ---- batch_norm -------------------------------------------------------------------------------------
def _bn_shape(attrs, x, scale, bias, mean, variance):
    return (tuple(x), tuple(mean), tuple(variance))


def _channel(v, ndim):
    """A per-channel vector shaped to broadcast against (N, C, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _batch_norm_grad(ctx, attrs, gy, g_mean_out=None, g_var_out=None):
    """The running-statistics outputs carry no gradient; neither do the mean / variance inputs."""
    xhat, inv_std, scale, batch_stats = ctx.saved
    if isinstance(xhat, tuple):  # the eval forward ran in place and saved (x, mu): recompute xhat
        x, mu = xhat
        xhat = (x - _channel(mu, x.ndim).astype(x.dtype, copy=False)) * inv_std
    axes = (0,) + tuple(range(2, xhat.ndim))
    dscale = np.sum(gy * xhat, axis=axes)
    dbias = np.sum(gy, axis=axes)
    gxhat = gy * _channel(scale, gy.ndim)
    dx = _norm_grad(gxhat, xhat, inv_std, axes) if batch_stats else gxhat * inv_std
    return (dx, dscale, dbias, None, None)


@register("batch_norm", observed=True, out_arg="Y", backward=_batch_norm_grad, shape=_bn_shape,
          check=attr_spec(epsilon="float", momentum="float", use_global_stats="bool"))
def batch_norm(ctx, attrs, x, scale, bias, mean, variance):
    """y = scale * (x - mu) / sqrt(var + epsilon) + bias, per channel (dimension 1).

    Training: mu, var are the batch mean and biased batch variance over (N, H, W), and the running statistics
    (outputs 1, 2) become ``momentum * running + (1 - momentum) * batch`` -- the biased variance, as Paddle's
    CPU kernel updates it (PyTorch uses the unbiased one). Eval, or Paddle's attribute ``use_global_stats=True``
    in training (frozen statistics, e.g. QAT of an inference graph): mu, var are the running statistics,
    returned unchanged as outputs 1, 2, and the layer is a fixed per-channel affine map of x, computed with the
    same float operations in place on one output array (the eval tape keeps x and recomputes xhat if asked).
    """
    eps, momentum = float(attrs.get("epsilon", 1e-5)), float(attrs.get("momentum", 0.9))
    axes = (0,) + tuple(range(2, x.ndim))
    if ctx.training and not attrs.get("use_global_stats", False):
        mu, var = x.mean(axis=axes), x.var(axis=axes)
        mean_out = (momentum * mean + (1 - momentum) * mu).astype(mean.dtype, copy=False)
        var_out = (momentum * variance + (1 - momentum) * var).astype(variance.dtype, copy=False)
    elif x.dtype.kind == "f" and all(v.dtype == x.dtype for v in (scale, bias, mean, variance)):
        inv_std = _channel(1 / np.sqrt(variance + eps), x.ndim).astype(x.dtype, copy=False)
        ctx.save((x, mean), inv_std, scale, False)
        per_channel = x.ndim >= 2 and all(v.shape == (x.shape[1],) for v in (scale, bias, mean, variance))
        if x.dtype == np.float32 and per_channel:
            # the steps below in one pass (floatops: the same float32 operations, the same bits)
            vec = np.ascontiguousarray
            y = kernel("floatops").batch_norm_nchw_f32(vec(x), vec(mean), vec(inv_std.reshape(-1)), vec(scale),
                                                       vec(bias), max_threads=float_kernel_threads())
            return y, mean, variance
        y = np.subtract(x, _channel(mean, x.ndim).astype(x.dtype, copy=False))
        y *= inv_std
        y *= _channel(scale, x.ndim)
        y += _channel(bias, x.ndim)
        return y, mean, variance
    else:  # mixed dtypes: each step in the wider type, as written
        mu, var, mean_out, var_out = mean, variance, mean, variance
    inv_std = _channel(1 / np.sqrt(var + eps), x.ndim).astype(x.dtype, copy=False)
    xhat = (x - _channel(mu, x.ndim).astype(x.dtype, copy=False)) * inv_std
    ctx.save(xhat, inv_std, scale, ctx.training and not attrs.get("use_global_stats", False))
    y = xhat * _channel(scale, x.ndim) + _channel(bias, x.ndim)
    return y.astype(x.dtype, copy=False), mean_out, var_out


# ---- layer_norm -------------------------------------------------------------------------------------
def _ln_shape(attrs, x, scale=None, bias=None):
    return (tuple(x),)


def _ln_xhat(x, axes, eps):
    """The training path's statistics: xhat = (x - mean) * inv_std, inv_std = 1 / sqrt(var + eps)."""
    inv_std = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return (x - x.mean(axis=axes, keepdims=True)) * inv_std, inv_std


def _ln_kernels(x, scale, bias, begin):
    """The float32 layer-norm kernel (compiled, or its NumPy twin) when ``x`` is float32 and scale / bias are None
    or float32 with prod(x.shape[begin:]) values; else None."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not 0 <= begin < x.ndim:
        return None
    n = math.prod(x.shape[begin:])
    for v in (scale, bias):
        if v is not None and (not isinstance(v, np.ndarray) or v.dtype != np.float32 or v.size != n):
            return None
    return kernel("floatops")


def _layer_norm_grad(ctx, attrs, gy):
    xhat, inv_std, scale, bias_shape = ctx.saved
    axes = tuple(range(int(attrs.get("begin_norm_axis", 1)), gy.ndim))
    if xhat is None:  # the forward ran the inference kernel and saved (None, (x, eps), ...): recompute
        x, eps = inv_std
        xhat, inv_std = _ln_xhat(x, axes, eps)
    lead = tuple(range(gy.ndim - len(axes)))
    gxhat = gy if scale is None else gy * scale.reshape(gy.shape[len(lead):])
    dx = _norm_grad(gxhat, xhat, inv_std, axes)
    dscale = None if scale is None else np.sum(gy * xhat, axis=lead).reshape(scale.shape)
    dbias = None if bias_shape is None else np.sum(gy, axis=lead).reshape(bias_shape)
    return (dx, dscale, dbias)[:len(ctx.needs_input_grad)]  # scale / bias may be absent or ""


@register("layer_norm", observed=True, out_arg="Y", backward=_layer_norm_grad, shape=_ln_shape, check=attr_spec(begin_norm_axis="int", epsilon="float"))
def layer_norm(ctx, attrs, x, scale=None, bias=None):
    """y = (x - mean) / sqrt(var + epsilon) * scale + bias, statistics over dimensions begin_norm_axis..;
    scale and bias hold prod(x.shape[begin_norm_axis:]) values (1-D as Paddle, or that shape).

    Inference (``ctx.training`` false) on float32 runs the float32 kernel over the flattened normalized axes
    (statistics and centering in float64; see refquant/reference/floatops.py): |y - y_numpy| <= 2e-6 * max(1, |y|)
    on rows with |mean| <= std, and closer to the float64 formula (5e-7) always, large offsets included. It saves
    (None, (x, eps), scale, bias shape); a backward on such a context (a recorded eval-mode tape) recomputes xhat
    and inv_std with the NumPy code below. Training, and other dtypes, run that NumPy code."""
    begin, eps = int(attrs.get("begin_norm_axis", 1)), float(attrs.get("epsilon", 1e-5))
    bias_shape = None if bias is None else bias.shape
    kernels = None if ctx.training else _ln_kernels(x, scale, bias, begin)
    if kernels is not None:
        ctx.save(None, (x, eps), scale, bias_shape)
        if x.size == 0:
            return np.empty_like(x)
        rows = np.require(x, requirements="C").reshape(-1, math.prod(x.shape[begin:]))
        y = kernels.layer_norm_lastaxis(rows, None if scale is None else np.require(scale, requirements="C"),
                                        None if bias is None else np.require(bias, requirements="C"), eps,
                                        max_threads=float_kernel_threads())
        return y.reshape(x.shape)
    axes = tuple(range(begin, x.ndim))
    xhat, inv_std = _ln_xhat(x, axes, eps)
    ctx.save(xhat, inv_std, scale, bias_shape)
    y = xhat if scale is None else xhat * scale.reshape(x.shape[begin:])
    return y if bias is None else y + bias.reshape(x.shape[begin:])
