"""Stateful fake-quant ops for quantization-aware training (Paddle's names and update rules; docs/qat.md).

Both keep their statistics in parameters that the op also lists among its outputs, so that in training mode the
executor writes the new values back (as batch_norm's running statistics); in eval mode (or with ``is_test``) the
stored threshold is used unchanged. Forward = quant-dequant with that threshold, rounding half away from zero
(``round_type`` 1); backward = straight through, ``dX = dOut``, not masked, nothing to the statistics
(``ste_clip=True`` masks outside [-T, T], as for the other fake-quant ops).

``fake_quantize_dequantize_moving_average_abs_max(x, scale, state, accum) -> (y, scale, state, accum)``:
    S_t = r S_{t-1} + 1,  A_t = r A_{t-1} + max|x_t|,  T_t = A_t / S_t   (r = moving_rate, 0.9), then quantize
    x_t with the new T_t; Paddle's initial values: scale 0.001, state 1, accum 1 (float32 arithmetic).

``fake_quantize_dequantize_range_abs_max(x, scale, iter, window) -> (y, scale, iter, window)`` (Paddle's
``fake_quantize_range_abs_max``, window W = window_size, initial scale 0.001): the step counter becomes
it = 1 on the first batch; idx = it mod W; removed = window[idx]; window[idx] = m = max|x|; T = T_prev;
if T < m: T = m; elif |removed - T| < 1e-6: T = max(window[:min(it, W)]) (while it < W this excludes the slot
just written, as in Paddle). The test is Paddle's: the float32 difference compared with the double ``1e-6``, so a
difference of exactly float32(1e-6) (9.99999997e-7) evicts.
"""
from __future__ import annotations

import numpy as np

from ..reference import rounding
from .quant import _ste_grad, moving_average_threshold
from .registry import register


def _frozen(ctx, attrs):
    return not ctx.training or attrs.get("is_test", False)


def _qdq(ctx, attrs, x, t):
    ctx.save(x, np.float32(t))
    return rounding.quant_dequant_op(x, np.float32(t), int(attrs.get("bit_length", 8)),
                                     int(attrs.get("round_type", 1))).astype(x.dtype, copy=False)


def _stat_grad(ctx, attrs, gy, *_):
    return _ste_grad(ctx, attrs, gy)


@register("fake_quantize_dequantize_moving_average_abs_max", backward=_stat_grad)
def moving_average_abs_max(ctx, attrs, x, scale, state, accum):
    """Quant-dequant with a moving-average threshold (module docstring); returns (y, scale, state, accum)."""
    if _frozen(ctx, attrs):
        t = np.asarray(scale, np.float32).reshape(-1)[0]
        return _qdq(ctx, attrs, x, t), scale, state, accum
    new_scale, new_state, new_accum = moving_average_threshold(x, state, accum, attrs.get("moving_rate", 0.9))
    return _qdq(ctx, attrs, x, new_scale[0]), new_scale, new_state, new_accum


@register("fake_quantize_dequantize_range_abs_max", backward=_stat_grad)
def range_abs_max(ctx, attrs, x, scale, it, window):
    """Quant-dequant with the max over a window of recent batches' max|x| (module docstring)."""
    if _frozen(ctx, attrs):
        return _qdq(ctx, attrs, x, np.asarray(scale, np.float32).reshape(-1)[0]), scale, it, window
    w = np.array(window, dtype=np.float32, copy=True)
    size = w.shape[0]
    step = int(np.asarray(it).reshape(-1)[0]) + 1
    m = np.float32(np.max(np.abs(np.asarray(x, np.float32))) if x.size else 0)
    idx = step % size
    removed = w[idx]
    w[idx] = m
    t = np.float32(np.asarray(scale, np.float32).reshape(-1)[0])
    if t < m:
        t = m
    elif float(abs(removed - t)) < 1e-6:         # float32 difference, double constant (not float32(1e-6))
        t = np.float32(np.max(w[:min(step, size)]))
    return (_qdq(ctx, attrs, x, t), np.array([t], np.float32), np.array([step], np.int64), w)
