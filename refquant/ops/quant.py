"""Fake quantization ops (Paddle names): quantize-dequantize in float32 with a straight-through backward.

Rounding follows paddle_reference.md 0.1 (implemented once in :mod:`refquant.quant.rounding`):
``round_type=1`` (default of the ``fake_*`` ops) clips to [-T, T] and rounds half away from zero; ``round_type=0``
rounds half to even and clips the integers to [-qmax-1, qmax]. The product is ``(qmax * inv(T)) * x`` in float32
and the quant-dequant output is ``(q * T) / qmax``.

Backward (qat.md "Backward"): Paddle registers ``straight_through_estimator_grad`` for its quant-dequant ops:
``dX = dOut``, the identity, **not masked** outside [-T, T], and no gradient to the scale. That is the default
here. The attribute ``ste_clip=True`` (refquant's own, not Paddle's) gives the masked variant
``dX = dOut * (|x| <= T)``.
"""
from __future__ import annotations

import numpy as np

from ..quant import rounding
from .registry import register, same_shape


def _threshold(x, scale, attrs, axis=None):
    """The static threshold from the ``scale`` input, or (absent input) max|x| as Paddle's abs_max ops compute
    each run (per channel along ``axis`` when given)."""
    if scale is not None:
        t = np.asarray(scale, dtype=np.float32).reshape(-1)
        if axis is None:
            if t.size != 1:
                raise ValueError(f"per-tensor fake quant op got {t.size} scales")
            return t[0]
        if t.size != x.shape[axis]:
            raise ValueError(f"channel-wise fake quant op: {t.size} scales for {x.shape[axis]} channels along "
                             f"axis {axis}")
        return rounding.channel_view(t, x.ndim, axis)
    a = np.abs(np.asarray(x, dtype=np.float32))
    if axis is None:
        return np.max(a)
    red = tuple(i for i in range(x.ndim) if i != axis)
    return np.max(a, axis=red, keepdims=True)


def _ste_grad(ctx, attrs, gy):
    """dX = dOut (masked to |x| <= T with ``ste_clip``); nothing for the scale input, if there is one."""
    x, t = ctx.saved
    if attrs.get("ste_clip", False):
        gy = gy * (np.abs(x) <= t)
    return (gy,) + (None,) * (len(ctx.needs_input_grad) - 1 if ctx.needs_input_grad else 1)


def _qdq(ctx, attrs, x, t):
    ctx.save(x, t)
    bits = int(attrs.get("bit_length", 8))
    q = rounding.quantize_op(x, t, bits, int(attrs.get("round_type", 1)))
    if attrs.get("reduce_range", False):  # what convert_to_int8(reduce_range=True) will do to these integers
        q = np.rint(q / 2) * 2
    return rounding.dequantize(q, t, bits).astype(x.dtype, copy=False)


def _axis(attrs, x):
    axis = int(attrs.get("quant_axis", 0))
    return axis + x.ndim if axis < 0 else axis


@register("fake_quantize_dequantize_abs_max", backward=_ste_grad, shape=same_shape)
def fake_quantize_dequantize_abs_max(ctx, attrs, x, scale=None):
    """Per-tensor quant-dequant: ``y = (q * T) / qmax``, ``q`` by ``round_type`` (default 1, half away from zero).

    T is the ``scale`` input (a 1-element threshold, the static-scale inference form that Paddle's PTQ graph
    gets from ``fake_quantize_range_abs_max(is_test)`` + ``fake_dequantize_max_abs``); without it, T = max|x| of
    this input, as Paddle's ``fake_quantize_dequantize_abs_max`` recomputes it every run. Attrs: bit_length (8),
    round_type (1). Backward: straight through (module docstring).
    """
    return _qdq(ctx, attrs, x, _threshold(x, scale, attrs))


@register("fake_channel_wise_quantize_dequantize_abs_max", backward=_ste_grad, shape=same_shape)
def fake_channel_wise_quantize_dequantize_abs_max(ctx, attrs, x, scale=None):
    """Per-channel quant-dequant along ``quant_axis`` (default 0): ``y = (q_c * T_c) / qmax``.

    T_c from the ``scale`` input (C thresholds; Paddle's ``(1, C)`` accepted) or max|x| per channel when absent.
    Attrs: quant_axis (0), bit_length (8), round_type (1), ``reduce_range`` (refquant's, False: QAT of weights
    that ``convert_to_int8(reduce_range=True)`` will halve, ``q <- rint(q / 2) * 2``, half to even as there).
    Backward: straight through.
    """
    axis = _axis(attrs, x)
    return _qdq(ctx, attrs, x, _threshold(x, scale, attrs, axis))


def _linear_threshold(x, scale, attrs):
    axis = int(attrs.get("quant_axis", -1))
    t = np.asarray(scale, dtype=np.float32).reshape(-1)
    if axis < 0:
        if t.size != 1:
            raise ValueError(f"per-tensor quantize_linear/dequantize_linear got {t.size} scales")
        return t[0]
    if t.size != x.shape[axis]:
        raise ValueError(f"quantize_linear/dequantize_linear: {t.size} scales for {x.shape[axis]} channels")
    return rounding.channel_view(t, x.ndim, axis)


def _identity_grad(ctx, attrs, gy):
    return (gy, None, None)


@register("quantize_linear", backward=_identity_grad, shape=same_shape)
def quantize_linear(ctx, attrs, x, scale, zero_point=None):
    """ONNX-format quantize (inference form): integer-valued float32 ``q`` for threshold ``scale`` (per tensor
    when ``quant_axis`` = -1, the default; else per channel). Zero point is always 0 (symmetric).

    Attrs: quant_axis (-1), bit_length (8), round_type (**0**: half to even, clip to [-qmax-1, qmax]; 1: clip to
    [-T, T], half away), only_observer (False; True returns x unchanged). Paddle has no grad op for it (its
    passes rewire the backward to the dequantized tensor); here the backward is the identity, so a
    quantize_linear/dequantize_linear pair passes the gradient straight through.
    """
    if attrs.get("only_observer", False):
        return x
    t = _linear_threshold(x, scale, attrs)
    q = rounding.quantize_op(x, t, int(attrs.get("bit_length", 8)), int(attrs.get("round_type", 0)))
    return q.astype(x.dtype, copy=False)


@register("dequantize_linear", backward=_identity_grad, shape=same_shape)
def dequantize_linear(ctx, attrs, x, scale, zero_point=None):
    """ONNX-format dequantize: ``y = (q * T) / qmax`` (per channel along ``quant_axis`` when >= 0);
    ``only_observer=True`` returns x unchanged. Backward: identity (see quantize_linear)."""
    if attrs.get("only_observer", False):
        return x
    t = _linear_threshold(x, scale, attrs)
    y = rounding.dequantize(x, t, int(attrs.get("bit_length", 8)))
    # int8 weights dequantize to float32; float inputs keep their dtype
    return y.astype(x.dtype, copy=False) if np.asarray(x).dtype.kind == "f" else y
