"""Inference ops that read quantized parameters and give float32: weight-only (dynamic) PTQ and embedding
quantization write them (:mod:`refquant.quant.post_dynamic`, :mod:`refquant.quant.embedding`). Forward only.

* ``dequantize_weight(w, scale) -> y``: ``y = float32(w) * scale`` (float32), ``w`` the int8/int16 weight,
  ``scale`` the step size(s) ``s = T / qmax``: one value (``quant_axis`` -1, per tensor) or one per index of
  axis ``quant_axis`` (0 for conv filters, 1 for mul weights). Paddle's ``W_dq = q * s`` (its test model).
* ``lookup_table_dequant(w, scale, ids) -> y`` (shape ``ids.shape + (D,)``): a ``lookup_table`` on an int8/int16
  table that dequantizes only the rows it reads. ``quantize_type`` "abs_max": ``y = (T * q) / qmax`` in float32
  with ``T`` the float32 threshold (Paddle's ``dequantize_abs_max``, ``qmax = 2**(quantize_bits-1) - 1``); ``scale``
  holds one T (per tensor) or one per row. "log": ``scale`` is the float32 dictionary, ``y = dict[q]`` for
  q >= 0, ``-dict[q + 128]`` for q < 0 (Paddle's ``dequantize_log``). ``padding_idx`` (any negative: none)
  rows read the integer 0, as Paddle's ``lookup_table`` leaves them for its dequantize op: +0 for abs_max,
  ``dict[0]`` for log (0 when the dictionary holds PaddleSlim's zero level).
  The row gather + dequantize is the Cython kernel ``refquant._kernels.embedding`` (twin:
  :mod:`refquant.reference.embedding`).
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from .registry import register, same_shape


# ---- dequantize_weight ------------------------------------------------------------------------------
def _scale_view(attrs, w, scale):
    """``scale`` shaped to broadcast against ``w`` (per tensor or along ``quant_axis``)."""
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    axis = int(attrs.get("quant_axis", -1))
    if axis < 0 or scale.size == 1 and w.ndim == 0:
        if scale.size != 1:
            raise ValueError(f"dequantize_weight: quant_axis -1 (per tensor) needs 1 scale, got {scale.size}")
        return scale.reshape(())
    if axis >= w.ndim or scale.size != w.shape[axis]:
        raise ValueError(f"dequantize_weight: weight {w.shape} needs {w.shape[axis] if axis < w.ndim else '?'} "
                         f"scales along quant_axis {axis}, got {scale.size}")
    shape = [1] * w.ndim
    shape[axis] = scale.size
    return scale.reshape(shape)


@register("dequantize_weight", shape=same_shape)
def dequantize_weight(ctx, attrs, w, scale):
    """y = float32(w) * scale, the scale per tensor (quant_axis -1) or per index of axis quant_axis."""
    if w.dtype.kind not in "iu":
        raise TypeError(f"dequantize_weight: the weight must be an integer array, got {w.dtype}")
    return w.astype(np.float32) * _scale_view(attrs, w, scale)


# ---- lookup_table_dequant ---------------------------------------------------------------------------
def _lookup_shape(attrs, w, scale, ids):
    return (tuple(ids) + (w[1],),)


def qmax_of(bits: int) -> int:
    return (1 << (int(bits) - 1)) - 1


def lookup_rows(table, scale, ids, quantize_type="abs_max", quantize_bits=8, padding_idx=-1):
    """Dequantized rows ``table[ids]`` as float32 (n, D) for flat ``ids``: the kernel when built, else the twin.
    Both validate (ids in [0, V), an int8/int16 2-D table, padding_idx < V) before reading anything."""
    if padding_idx is None or (isinstance(padding_idx, (int, np.integer)) and not isinstance(padding_idx, bool)
                               and padding_idx < 0):
        padding_idx = -1
    mod = _dispatch.kernel("embedding", table)
    if quantize_type == "abs_max":
        return mod.lookup_dequant_abs_max(table, scale, ids, qmax_of(quantize_bits), padding_idx)
    if quantize_type == "log":
        return mod.lookup_dequant_log(table, scale, ids, padding_idx)
    raise ValueError(f"lookup_table_dequant: quantize_type must be 'abs_max' or 'log', got {quantize_type!r}")


@register("lookup_table_dequant", shape=_lookup_shape)
def lookup_table_dequant(ctx, attrs, w, scale, ids):
    """y[...] = dequantize(w[ids[...]]) (float32); see the module docstring."""
    if w.ndim != 2 or w.dtype not in (np.int8, np.int16):
        raise TypeError(f"lookup_table_dequant: the table must be a 2-D int8/int16 array, got {w.dtype} {w.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"lookup_table_dequant: ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise IndexError(f"lookup_table_dequant: ids must lie in [0, {w.shape[0]}), got [{ids.min()}, {ids.max()}]")
    rows = lookup_rows(w, scale, ids.reshape(-1), attrs.get("quantize_type", "abs_max"),
                       attrs.get("quantize_bits", 8), attrs.get("padding_idx", -1))
    return rows.reshape(ids.shape + (w.shape[1],))
