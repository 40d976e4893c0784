"""ONNX's QuantizeLinear / DequantizeLinear: affine quantization with a step ``scale`` and a ``zero_point``.

    quantize_affine:    q = saturate(round_half_even(x / scale) + zero_point)       x / scale in float32
    dequantize_affine:  y = float32(q - zero_point) * scale                          in float32

This is exactly ONNX's definition (and what ONNX Runtime's CPU kernels compute: ``MlasQuantizeLinear`` divides by
the scale and rounds to nearest even; the dequantize multiplies the integer difference, converted to float32, by
the scale). They are *not* Paddle's ``quantize_linear`` / ``dequantize_linear`` (:mod:`refquant.ops.quant`),
which take a threshold T and use the step T / qmax.

Integer tensors are real integer arrays: ``q`` has the ONNX output type (``uint8`` by default, ``int8``,
``uint16`` or ``int16``, named by the ``dtype`` attribute, which the ONNX importer takes from the zero point's
type; ``int32`` is accepted by the dequantize only, for quantized biases), so every quantized value is kept exactly and its type says its range. ``scale`` has one element (per
tensor) or one per slice of ``axis`` (per axis, ONNX opset 13); ``zero_point`` is absent (0) or has the scale's
shape. Both are read at run time from their inputs. There is no backward: a QDQ graph imported from ONNX is for
inference and checking.
"""
from __future__ import annotations

import numpy as np

from .registry import GraphError, attr_choice, attr_int, register, same_shape

#: ONNX's integer quantization types and their ranges (int32 only for dequantizing, as ONNX's quantized biases).
INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
              "int32": (-2 ** 31, 2 ** 31 - 1)}
Q_DTYPES = ("uint8", "int8", "uint16", "int16")


def _check(attrs, inputs, dtypes=tuple(INT_RANGES)):
    attr_choice(attrs, "dtype", dtypes, "uint8")
    attr_int(attrs, "axis", 1)
    if len(inputs) < 2 or not inputs[1]:
        raise GraphError("the scale input is required")


def _check_q(attrs, inputs):
    _check(attrs, inputs, Q_DTYPES)


def _per_axis(v, x, axis: int, what: str, name: str):
    """``v`` (one value, or one per slice along ``axis``) shaped to broadcast against ``x``."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    if v.ndim != 1:
        raise ValueError(f"{name}: {what} must be a scalar or 1-D, got shape {v.shape}")
    a = axis + x.ndim if axis < 0 else axis
    if not 0 <= a < x.ndim or x.shape[a] != v.size:
        raise ValueError(f"{name}: {v.size} {what} values for axis {axis} of an input of shape {x.shape}")
    return v.reshape((-1,) + (1,) * (x.ndim - a - 1))


def _scale(scale, x, axis, name):
    s = _per_axis(np.asarray(scale, dtype=np.float32), x, axis, "scale", name)
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"{name}: every scale must be finite and > 0, got {np.ravel(s)[:8].tolist()}")
    return s


def _zero_point(zero_point, x, axis, dtype: str, name: str):
    if zero_point is None:
        return np.zeros((), dtype=np.int32)
    zp = np.asarray(zero_point)
    if zp.dtype.kind not in "iu" and not (zp.dtype.kind == "f" and np.all(zp == np.rint(zp))):
        raise ValueError(f"{name}: the zero point must hold integers, got {zp.dtype.name}")
    lo, hi = INT_RANGES[dtype]
    if zp.size and (zp.min() < lo or zp.max() > hi):
        raise ValueError(f"{name}: zero point outside the {dtype} range [{lo}, {hi}]")
    return _per_axis(zp.astype(np.int32), x, axis, "zero point", name)


@register("quantize_affine", shape=same_shape, check=_check_q)
def quantize_affine(ctx, attrs, x, scale, zero_point=None):
    """ONNX QuantizeLinear: ``q = saturate(round_half_even(x / scale) + zero_point)`` as a ``dtype`` array.

    Attrs: dtype ("uint8"; "int8", "uint16", "int16"), axis (1: the axis of a per-axis scale). NaN inputs are
    refused (ONNX leaves their result undefined)."""
    name = "quantize_affine"
    dtype = attrs.get("dtype", "uint8")
    axis = int(attrs.get("axis", 1))
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: x must be a float tensor, got {x.dtype.name}")
    x = x.astype(np.float32, copy=False)
    if np.isnan(x).any():
        raise ValueError(f"{name}: the input holds NaN, whose quantized value ONNX leaves undefined")
    s = _scale(scale, x, axis, name)
    zp = _zero_point(zero_point, x, axis, dtype, name)
    lo, hi = INT_RANGES[dtype]
    with np.errstate(over="ignore"):          # x / tiny scale -> inf, which saturates like any large value
        q = np.rint(x / s)                    # float32 division, half to even
    q = np.clip(q + zp, lo, hi)               # |q| < 2**24 after the clip, so the float32 sum is exact
    return q.astype(dtype)


@register("dequantize_affine", shape=same_shape, check=_check)
def dequantize_affine(ctx, attrs, q, scale, zero_point=None):
    """ONNX DequantizeLinear: ``y = float32(q - zero_point) * scale`` (float32).

    ``q`` is an integer array (or integer-valued floats, as in a graph written by an older tool). Attrs: dtype
    (the range the zero point is checked against), axis (1)."""
    name = "dequantize_affine"
    axis = int(attrs.get("axis", 1))
    q = np.asarray(q)
    if q.dtype.kind not in "iuf":
        raise TypeError(f"{name}: q must be an integer tensor, got {q.dtype.name}")
    if q.dtype.kind == "f" and not np.all(q == np.rint(q)):
        raise ValueError(f"{name}: q holds values that are not integers")
    dtype = attrs.get("dtype", "uint8")
    if q.dtype.name in INT_RANGES:
        dtype = q.dtype.name
    s = _scale(scale, q, axis, name)
    zp = _zero_point(zero_point, q, axis, dtype, name)
    diff = q.astype(np.int64) - zp           # exact; for 8 and 16 bits its float32 value is exact too
    return (diff.astype(np.float32) * s).astype(np.float32)
