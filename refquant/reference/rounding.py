"""Paddle 3.3.1's rounding and clipping rules, in one place (docs/ptq.md lists where each applies).

Every rule keeps Paddle's float32 operation order, because the orders are *not* bitwise interchangeable:

* C++ fake-quant ops (``fake_*``, ``quantize_linear``): ``(qmax * inv(T)) * x``, scalar product first;
  ``round_type=1`` clips to ``[-T, T]`` first and rounds half away from zero (range [-qmax, qmax]);
  ``round_type=0`` rounds half to even and clips the integers to ``[-qmax-1, qmax]``.
* Python weight freeze (onnx_format=False): clip to ``[-T_c, T_c]``, ``(w / T_c) * qmax`` (divide first), then
  ``np.round`` (half to even).
* Dequantization: ``(q * T) / qmax`` (multiply first).

Signed zeros follow the C++ ops: ``std::round`` and Paddle's clip functor (``x < lo ? lo : x > hi ? hi : x``) keep
``-0.0``, so a negative input that quantizes to zero (``-0.0``, ``-1e-10``) gives ``-0.0`` after quantize and
dequantize (:func:`round_half_away`, :func:`clip_op`). The Python freeze helpers use ``np.clip`` / ``np.round``, as
Paddle's Python code does.

``qmax = 2**(bits-1) - 1`` (Paddle's ``bnt`` / ``bin_cnt`` / ``max_range``). The stored "scale" of Paddle's graphs
is the threshold T; the integer step is ``T / qmax`` (:func:`step`).
"""
from __future__ import annotations

import numpy as np

#: ``round_type`` attribute values of the C++ ops.
ROUND_HALF_EVEN = 0
ROUND_HALF_AWAY = 1


def qmax(bits: int = 8) -> int:
    """``qmax = 2**(bits - 1) - 1``: 127 for 8 bits, 32767 for 16."""
    bits = int(bits)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    return (1 << (bits - 1)) - 1


def round_half_away(x):
    """Round half away from zero (C ``std::round``): ``sign(x) * floor(|x| + 1/2)``, computed exactly.

    Implemented as ``trunc(x) + copysign(|x - trunc(x)| >= 0.5, x)``: ``x - trunc(x)`` is exact in binary floating
    point, so values just below a half (0.49999997 in float32) are not pushed up as ``floor(x + 0.5)`` would; the
    copysign keeps the sign of zero (``-0.0`` and ``-0.3`` give ``-0.0``, as ``std::round``). Keeps the dtype.
    """
    x = np.asarray(x)
    t = np.trunc(x)
    up = (np.abs(x - t) >= 0.5).astype(x.dtype)
    return t + np.copysign(up, x)


def clip_op(x, lo, hi):
    """Paddle's C++ clip functor ``x < lo ? lo : (x > hi ? hi : x)``: unlike ``np.clip`` it returns ``x`` itself
    (so ``-0.0`` stays ``-0.0``) whenever x is inside, NaN included."""
    x = np.asarray(x)
    return np.where(x < lo, lo, np.where(x > hi, hi, x)).astype(x.dtype, copy=False)


def round_half_even(x):
    """Round half to even (``np.round`` / ``np.rint``, Paddle's ``round_type=0`` and its Python helpers)."""
    return np.rint(np.asarray(x))


def step(threshold, bits: int = 8):
    """The integer step (what ONNX calls the scale): ``T / qmax``."""
    return np.asarray(threshold) / qmax(bits)


def safe_threshold(threshold):
    """Python helpers' guard: a threshold of exactly 0 becomes ``1e-8`` before dividing (float32 kept)."""
    t = np.asarray(threshold)
    return np.where(t == 0, np.asarray(1e-8, dtype=t.dtype if t.dtype.kind == "f" else np.float64), t)


def inv_threshold(threshold):
    """The C++ ops' inverse: ``1 / (T + 1e-6)`` if ``T <= 1e-30`` else ``1 / T``, in float32."""
    t = np.asarray(threshold, dtype=np.float32)
    tiny = t <= np.float32(1e-30)
    return np.where(tiny, np.float32(1) / (t + np.float32(1e-6)), np.float32(1) / np.where(tiny, 1, t)) \
        .astype(np.float32)


def quantize_op(x, threshold, bits: int = 8, round_type: int = ROUND_HALF_AWAY):
    """Integer-valued float32 output of the C++ quantize ops for threshold(s) T broadcast against ``x``.

    ``round_type=1``: ``q = round_half_away((qmax * inv(T)) * clip(x, -T, T))`` in [-qmax, qmax].
    ``round_type=0``: ``q = clip(round_half_even((qmax * inv(T)) * x), -qmax - 1, qmax)``.
    """
    x = np.asarray(x, dtype=np.float32)
    t = np.asarray(threshold, dtype=np.float32)
    qm = qmax(bits)
    factor = np.float32(qm) * inv_threshold(t)
    if int(round_type) == ROUND_HALF_AWAY:
        return round_half_away(factor * clip_op(x, -t, t)).astype(np.float32)
    if int(round_type) == ROUND_HALF_EVEN:
        return clip_op(round_half_even(factor * x), np.float32(-qm - 1), np.float32(qm)).astype(np.float32)
    raise ValueError(f"round_type must be 0 (half to even) or 1 (half away from zero), got {round_type!r}")


def dequantize(q, threshold, bits: int = 8):
    """``(q * T) / qmax`` in float32 (Paddle's dequantize ops and the quant-dequant ops' output)."""
    q = np.asarray(q, dtype=np.float32)
    return ((q * np.asarray(threshold, dtype=np.float32)) / np.float32(qmax(bits))).astype(np.float32)


def quant_dequant_op(x, threshold, bits: int = 8, round_type: int = ROUND_HALF_AWAY):
    """What the fake quant-dequant ops return: ``dequantize(quantize_op(x, T), T)``."""
    return dequantize(quantize_op(x, threshold, bits, round_type), threshold, bits)


def channel_view(threshold, ndim: int, axis: int):
    """Reshape per-channel thresholds ``(C,)`` (or Paddle's ``(1, C)``) to broadcast along ``axis`` of a rank
    ``ndim`` tensor."""
    t = np.asarray(threshold).reshape(-1)
    shape = [1] * ndim
    shape[axis] = t.size
    return t.reshape(shape)


def freeze_weight(w, threshold, axis: int | None = 0, bits: int = 8):
    """Paddle's Python weight freeze (onnx_format=False, ``utils.quant_tensor`` + ``np.round``).

    Per channel c along ``axis`` (``None``: one per-tensor threshold): ``w <- clip(w, -T_c, T_c)``;
    ``w <- (w / T_c) * qmax`` in float32, divide first; ``q = np.round(w)`` (half to even); a zero T_c is 1e-8.
    Returns the integer-valued float32 array in [-qmax, qmax].
    """
    w = np.asarray(w, dtype=np.float32)
    t = safe_threshold(np.asarray(threshold, dtype=np.float32))
    if axis is not None:
        t = channel_view(t, w.ndim, axis)
    y = np.clip(w, -t, t)
    y = (y / t) * np.float32(qmax(bits))
    return round_half_even(y).astype(np.float32)


def freeze_weight_onnx(w, threshold, axis: int | None = 0, bits: int = 8):
    """onnx_format=True weight quantization (``QuantWeightPass``): ``clip(np.round((w / T_c) * qmax),
    -qmax - 1, qmax)`` (round first, then clip), as float32 integer values."""
    w = np.asarray(w, dtype=np.float32)
    t = safe_threshold(np.asarray(threshold, dtype=np.float32))
    if axis is not None:
        t = channel_view(t, w.ndim, axis)
    qm = qmax(bits)
    return np.clip(round_half_even((w / t) * np.float32(qm)), -qm - 1, qm).astype(np.float32)


def dequantize_weight(q, threshold, axis: int | None = 0, bits: int = 8):
    """``fake_channel_wise_dequantize_max_abs`` with one scale: ``out = q * T_c / qmax`` (multiply first)."""
    t = np.asarray(threshold, dtype=np.float32)
    if axis is not None:
        t = channel_view(t, np.ndim(q), axis)
    return dequantize(q, t, bits)
