"""Fake quantization ops (Paddle names): quantize-dequantize in float32 with a straight-through backward.

Rounding follows Paddle's C++ ops (implemented once in :mod:`refquant.reference.rounding`):
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

from ..reference import rounding
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


def _identity_grad(ctx, attrs, gy, *_):
    n = len(ctx.needs_input_grad) if ctx.needs_input_grad else 3
    return (gy,) + (None,) * (n - 1)


def moving_average_threshold(x, state, accum, rate):
    """Paddle's ``FindMovingAverageAbsMaxFunctor`` in float32: ``S = r S + 1``, ``A = r A + max|x|``, ``T = A / S``.
    Returns ``(T, S, A)`` as float32 arrays of one element."""
    r = np.float32(rate)
    m = np.max(np.abs(np.asarray(x, np.float32))) if np.size(x) else np.float32(0)
    new_state = (r * np.asarray(state, np.float32) + np.float32(1)).astype(np.float32).reshape(-1)
    new_accum = (r * np.asarray(accum, np.float32) + m).astype(np.float32).reshape(-1)
    return (new_accum / new_state).astype(np.float32), new_state, new_accum


def _channel_abs_max(x, axis):
    """Paddle's ``FindChannelAbsMaxFunctor``: max|x| over every axis but ``axis``, float32 (C,)."""
    a = np.abs(np.asarray(x, np.float32))
    return np.max(a, axis=tuple(i for i in range(a.ndim) if i != axis)).astype(np.float32).reshape(-1)


@register("quantize_linear", backward=_identity_grad, shape=same_shape)
def quantize_linear(ctx, attrs, x, scale, zero_point=None, state=None, accum=None):
    """ONNX-format quantize: integer-valued float32 ``q`` for threshold ``scale`` (per tensor when ``quant_axis``
    = -1, the default; else per channel). Zero point is always 0 (symmetric).

    Attrs: quant_axis (-1), bit_length (8), round_type (**0**: half to even, clip to [-qmax-1, qmax], so a
    negative input beyond T dequantizes to ``-(qmax+1)/qmax * T``; 1: clip to [-T, T], half away), only_observer
    (False; True returns x unchanged). Paddle has no grad op for it (its passes rewire the backward to the
    dequantized tensor); here the backward is the identity, so a quantize_linear/dequantize_linear pair passes the
    gradient straight through, unmasked, as in Paddle's training graph.

    Two forms, told apart by the ``is_test`` attribute:

    * without it (inference, what PTQ and ``convert`` write): ``(x, scale[, zero_point]) -> q``;
    * with it (QAT with ``onnx_format``, Paddle's ``QuantizationTransformPassV2``), the statistics are also
      outputs, so that a training run writes them back: per tensor ``(x, scale, zero_point, state, accum) ->
      (q, scale, state, accum)``, where in training (and ``is_test`` False) ``S = r S + 1``, ``A = r A + max|x|``,
      ``T = A / S`` (r = ``moving_rate``, 0.9) and x is quantized with the new T; per channel ``(x, scale,
      zero_point) -> (q, scale)``, where in training the scale becomes max|x| per channel (Paddle's weight
      path). In eval mode, or with ``is_test`` True, the stored scale is used and returned unchanged.
    """
    bits, round_type = int(attrs.get("bit_length", 8)), int(attrs.get("round_type", 0))
    if "is_test" not in attrs:
        if state is not None or accum is not None:
            raise ValueError("quantize_linear: state / accum inputs belong to the QAT form (an is_test attribute)")
        if attrs.get("only_observer", False):
            return x
        return rounding.quantize_op(x, _linear_threshold(x, scale, attrs), bits, round_type).astype(x.dtype,
                                                                                                  copy=False)
    axis = int(attrs.get("quant_axis", -1))
    update = ctx.training and not attrs["is_test"]
    if axis < 0:
        if state is None or accum is None:
            raise ValueError("quantize_linear: the per-tensor QAT form needs state and accum inputs")
        if update:
            scale, state, accum = moving_average_threshold(x, state, accum, attrs.get("moving_rate", 0.9))
    elif update:
        if axis >= np.ndim(x):
            raise ValueError(f"quantize_linear: quant_axis {axis} for a rank-{np.ndim(x)} input")
        scale = _channel_abs_max(x, axis)
    if attrs.get("only_observer", False):
        y = x
    else:
        y = rounding.quantize_op(x, _linear_threshold(x, scale, attrs), bits, round_type).astype(x.dtype,
                                                                                               copy=False)
    return (y, scale, state, accum) if axis < 0 else (y, scale)


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
