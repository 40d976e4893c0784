"""Dense layers (mul, fc, matmul), lookup_table and dropout.

Convolution, normalisation and pooling live in :mod:`.conv`, :mod:`.norm` and :mod:`.pool`.
"""
from __future__ import annotations

import math

import numpy as np

from .elementwise import unbroadcast
from .registry import attr_spec, register, same_shape


def _as_matrix(a, num_col_dims):
    """a.reshape(prod(a.shape[:num_col_dims]), prod(a.shape[num_col_dims:]))."""
    return a.reshape(math.prod(a.shape[:num_col_dims]), math.prod(a.shape[num_col_dims:]))


def _mul_grads(ctx, x, w, g, xc, yc):
    """(dx, dw) of y = X @ W with X, W the matrix views of x, w."""
    xm, wm = _as_matrix(x, xc), _as_matrix(w, yc)
    gm = g.reshape(xm.shape[0], wm.shape[1])
    dx = (gm @ wm.T).reshape(x.shape) if ctx.needs_input_grad[0] else None
    dw = (xm.T @ gm).reshape(w.shape) if ctx.needs_input_grad[1] else None
    return dx, dw


# ---- mul --------------------------------------------------------------------------------------------
def _mul_cols(attrs):
    return int(attrs.get("x_num_col_dims", 1)), int(attrs.get("y_num_col_dims", 1))


def _mul_shape(attrs, x, w):
    xc, yc = _mul_cols(attrs)
    return (tuple(x[:xc]) + tuple(w[yc:]),)


def _mul_grad(ctx, attrs, g):
    x, w = ctx.saved
    return _mul_grads(ctx, x, w, g, *_mul_cols(attrs))


@register("mul", weight_inputs=(1,), observed=True, backward=_mul_grad, shape=_mul_shape, check=attr_spec(x_num_col_dims="int", y_num_col_dims="int"))
def mul(ctx, attrs, x, w):
    """y = x.reshape(prod(x.shape[:xc]), -1) @ w.reshape(prod(w.shape[:yc]), -1), shaped
    x.shape[:xc] + w.shape[yc:] (xc, yc = x_num_col_dims, y_num_col_dims)."""
    xc, yc = _mul_cols(attrs)
    ctx.save(x, w)
    return (_as_matrix(x, xc) @ _as_matrix(w, yc)).reshape(x.shape[:xc] + w.shape[yc:])


# ---- fc ---------------------------------------------------------------------------------------------
def _fc_shape(attrs, x, w, b=None):
    return (tuple(x[:int(attrs.get("in_num_col_dims", 1))]) + (w[1],),)


def _fc_grad(ctx, attrs, g):
    x, w, y = ctx.saved
    if attrs.get("activation_type", "") == "relu":
        g = g * (y > 0)
    xc = int(attrs.get("in_num_col_dims", 1))
    dx, dw = _mul_grads(ctx, x, w, g, xc, 1)
    db = g.reshape(-1, w.shape[1]).sum(axis=0)
    return (dx, dw, db)[:len(ctx.needs_input_grad)]  # the bias input may be absent or ""


@register("fc", backward=_fc_grad, shape=_fc_shape, check=attr_spec(in_num_col_dims="int", activation_type=("", "relu")))
def fc(ctx, attrs, x, w, b=None):
    """y = act(x.reshape(prod(x.shape[:in_num_col_dims]), -1) @ w + b), act = relu or identity."""
    xc = int(attrs.get("in_num_col_dims", 1))
    y = _as_matrix(x, xc) @ w
    if b is not None:
        y += b
    if attrs.get("activation_type", "") == "relu":
        np.maximum(y, 0, out=y)
    elif attrs.get("activation_type", ""):
        raise ValueError(f"fc: unsupported activation_type {attrs['activation_type']!r}")
    y = y.reshape(x.shape[:xc] + (w.shape[1],))
    ctx.save(x, w, y)
    return y


# ---- matmul -----------------------------------------------------------------------------------------
def _swap(a):
    return np.swapaxes(a, -1, -2)


def _operands(attrs, x, y):
    """x, y transposed as asked (1-D operands are never transposed), as np.matmul takes them."""
    xt = _swap(x) if attrs.get("trans_x", False) and x.ndim > 1 else x
    yt = _swap(y) if attrs.get("trans_y", False) and y.ndim > 1 else y
    return xt, yt


def _transposed(shape, flag):
    shape = tuple(shape)
    return shape[:-2] + (shape[-1], shape[-2]) if flag and len(shape) > 1 else shape


def _matmul_shape(attrs, x, y):
    """np.matmul's output shape: broadcast batch dims + (M, N), leaving out the dim of a 1-D operand."""
    xs, ys = _transposed(x, attrs.get("trans_x", False)), _transposed(y, attrs.get("trans_y", False))
    batch = np.broadcast_shapes(xs[:-2], ys[:-2])
    return (batch + xs[-2:-1] * (len(xs) > 1) + ys[-1:] * (len(ys) > 1),)


def _matmul_grad(ctx, attrs, g):
    x, y = ctx.saved
    xt, yt = _operands(attrs, x, y)
    xm = xt[None, :] if xt.ndim == 1 else xt  # promote 1-D operands as np.matmul does
    ym = yt[:, None] if yt.ndim == 1 else yt
    gm = g.reshape(np.broadcast_shapes(xm.shape[:-2], ym.shape[:-2]) + (xm.shape[-2], ym.shape[-1]))
    dx = dy = None
    if ctx.needs_input_grad[0]:
        dxm = unbroadcast(gm @ _swap(ym), xm.shape)
        dx = (_swap(dxm) if xt is not x else dxm).reshape(x.shape)
    if ctx.needs_input_grad[1]:
        dym = unbroadcast(_swap(xm) @ gm, ym.shape)
        dy = (_swap(dym) if yt is not y else dym).reshape(y.shape)
    return dx, dy


@register("matmul", weight_inputs=(1,), observed=True, backward=_matmul_grad, shape=_matmul_shape, check=attr_spec(trans_x="bool", trans_y="bool"))
def matmul(ctx, attrs, x, y):
    """out = op(x) @ op(y) with NumPy matmul broadcasting; op transposes the last two dims when trans_x /
    trans_y (Paddle's matmul_v2)."""
    ctx.save(x, y)
    return np.matmul(*_operands(attrs, x, y))


# ---- lookup_table -----------------------------------------------------------------------------------
def _lookup_shape(attrs, w, ids):
    return (tuple(ids) + (w[1],),)


def _padding_idx(attrs):
    """The ``padding_idx`` attribute; -1 (any negative) means none."""
    idx = int(attrs.get("padding_idx", -1))
    return idx if idx >= 0 else None


def _lookup_grad(ctx, attrs, g):
    w_shape, ids = ctx.saved
    dw = np.zeros(w_shape, dtype=g.dtype)
    np.add.at(dw, ids.reshape(-1), g.reshape(-1, w_shape[1]))
    if _padding_idx(attrs) is not None:
        dw[_padding_idx(attrs)] = 0
    return (dw, None)


@register("lookup_table", observed=True, backward=_lookup_grad, shape=_lookup_shape, check=attr_spec(padding_idx="int"))
def lookup_table(ctx, attrs, w, ids):
    """y[..., :] = w[ids[...], :]; ids equal to ``padding_idx`` (-1: none) read zeros and give w no gradient."""
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise IndexError(f"lookup_table: ids must lie in [0, {w.shape[0]}), got [{ids.min()}, {ids.max()}]")
    y = w[ids]
    if _padding_idx(attrs) is not None:
        y[ids == _padding_idx(attrs)] = 0
    ctx.save(w.shape, ids)
    return y


# ---- dropout ----------------------------------------------------------------------------------------
def _dropout_grad(ctx, attrs, g):
    (mask,) = ctx.saved
    return (g if mask is None else g * mask,)


@register("dropout", observed=True, backward=_dropout_grad, shape=same_shape,
          check=attr_spec(dropout_prob="float", dropout_implementation=("upscale_in_train", "downgrade_in_infer")))
def dropout(ctx, attrs, x):
    """Training: y = x * keep / (1 - p) (upscale_in_train) or x * keep (downgrade_in_infer), with
    keep ~ Bernoulli(1 - p) drawn from ``ctx.rng``. Eval: y = x (upscale_in_train) or x * (1 - p)."""
    p = float(attrs.get("dropout_prob", 0.5))
    upscale = attrs.get("dropout_implementation", "upscale_in_train") == "upscale_in_train"
    if ctx.training:
        rng = ctx.rng if ctx.rng is not None else np.random.default_rng()
        keep = rng.random(x.shape) >= p
        mask = (keep * (1 / (1 - p) if upscale and p < 1 else 1.0)).astype(x.dtype)
    else:
        mask = None if upscale else np.asarray(1 - p, dtype=x.dtype)
    ctx.save(mask)
    return x if mask is None else x * mask
