"""Classification losses: softmax_with_cross_entropy (from logits) and cross_entropy (from probabilities).

Labels are integer class indices, shaped as the input with the class dimension dropped or set to 1
((N,) or (N, 1) for (N, C) input). Rows whose label is ``ignore_index`` get zero loss and zero gradient.
"""
from __future__ import annotations

import numpy as np

from .activations import log_softmax_array, softmax_vjp
from .registry import attr_spec, register


def _gather(x, label, ignore_index):
    """Along the last (class) dimension: x[..., label] (kept as size 1), the index used, the mask of counted
    (not ignored) rows."""
    label = label.reshape(x.shape[:-1] + (1,))
    counted = label != ignore_index
    index = np.where(counted, label, 0)
    if np.any((index < 0) | (index >= x.shape[-1])):
        raise IndexError(f"labels must lie in [0, {x.shape[-1]}) or equal ignore_index {ignore_index}")
    return np.take_along_axis(x, index, axis=-1), index, counted


def _loss_shape(attrs, logits):
    axis = int(attrs.get("axis", -1)) % len(logits)
    return tuple(1 if i == axis else n for i, n in enumerate(logits))


# ---- softmax_with_cross_entropy -----------------------------------------------------------------------
def _swce_grad(ctx, attrs, g_softmax, g_loss):
    """dL/dlogits = (softmax - onehot(label)) * g_loss on counted rows, plus the softmax output's own VJP."""
    softmax, index, counted = ctx.saved
    axis = int(attrs.get("axis", -1))
    g_loss = np.moveaxis(g_loss, axis, -1) * counted
    d = np.moveaxis(softmax, axis, -1) * g_loss
    np.put_along_axis(d, index, np.take_along_axis(d, index, axis=-1) - g_loss, axis=-1)
    return (np.moveaxis(d, -1, axis) + softmax_vjp(softmax, g_softmax, axis), None)


@register("softmax_with_cross_entropy", backward=_swce_grad,
          shape=lambda attrs, logits, label: (tuple(logits), _loss_shape(attrs, logits)),
          check=attr_spec(axis="int", ignore_index="int"))
def softmax_with_cross_entropy(ctx, attrs, logits, label):
    """softmax = exp(logits - logsumexp(logits)) along ``axis``; loss = -log(softmax[label]) (0 where ignored)."""
    axis, ignore_index = int(attrs.get("axis", -1)), int(attrs.get("ignore_index", -100))
    logp = log_softmax_array(np.moveaxis(logits, axis, -1), -1)
    picked, index, counted = _gather(logp, label, ignore_index)
    softmax = np.moveaxis(np.exp(logp), -1, axis)
    ctx.save(softmax, index, counted)
    return softmax, np.moveaxis(np.where(counted, -picked, 0), -1, axis)


# ---- cross_entropy ----------------------------------------------------------------------------------
def _ce_grad(ctx, attrs, g_loss):
    """dL/dp[label] = -g_loss / p[label] on counted rows, 0 elsewhere."""
    p_shape, picked, index, counted = ctx.saved
    d = np.zeros(p_shape, dtype=picked.dtype)
    np.put_along_axis(d, index, -g_loss * counted / picked, axis=-1)
    return (d, None)


@register("cross_entropy", backward=_ce_grad, shape=lambda attrs, p, label: (_loss_shape({}, p),),
          check=attr_spec(ignore_index="int"))
def cross_entropy(ctx, attrs, p, label):
    """loss = -log(p[..., label]) over the last dimension, shaped (..., 1); 0 where label == ignore_index."""
    picked, index, counted = _gather(p, label, int(attrs.get("ignore_index", -100)))
    picked = np.where(counted, picked, 1)  # ignored rows: -log(1) = 0
    ctx.save(p.shape, picked, index, counted)
    return -np.log(picked)
