"""Embedding kernels' NumPy twin (the spec of ``kernels/embedding.pyx``): the row-dequantizing lookups and the
nearest-level search of log quantization.

Lookups: for a quantized table ``q`` (V, D) (int8/int16) and row indices ``ids`` (any shape, read flat), only the
rows read are dequantized into a float32 (n, D):

* abs_max (Paddle's ``dequantize_abs_max``): ``out[i] = (scale[r] * float32(q[r])) / qmax`` with ``r = ids[i]``;
  ``scale`` holds one float32 (per tensor, as Paddle) or V (per row); every step is a float32 operation, so the
  kernel's C expression gives the same bits.
* log (Paddle's ``dequantize_log``): ``out[i] = dict[q]`` where q >= 0, ``-dict[q + 128]`` where q < 0.

A row whose id equals ``padding_idx`` (-1: none) reads the integer 0, as Paddle's ``lookup_table`` writes 0 into
padding rows before its dequantize op runs: abs_max gives +0, log gives ``dict[0]`` (the smallest level, or 0
when the dictionary holds the zero level).

Log search (:func:`log_index`): PaddleSlim's ``_search`` on the log2-domain levels, then its sign rule.

:func:`check_lookup` is the one validation both sides run first: ids in [0, V), table rank 2 and dtype
int8/int16, ``padding_idx`` -1 or in [0, V), a 1-D float32 scale / dictionary of a valid size.
"""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, ShapeError


def check_lookup(table, aux, ids, padding_idx, kind: str):
    """Validated ``(table, aux, ids, padding_idx)``: C-contiguous int8/int16 table (V, D), float32 ``aux``
    (abs_max: 1 or V scales; log: 1..256 dictionary entries), flat int64 ids in [0, V), padding_idx in
    {-1} U [0, V). Raises ArgumentTypeError / ShapeError / IndexError / ArgumentError naming the argument."""
    where = f"lookup_dequant_{kind}"
    if not isinstance(table, np.ndarray) or table.dtype not in (np.int8, np.int16):
        raise ArgumentTypeError(f"{where}: table must be an int8 or int16 ndarray, got "
                                f"{getattr(table, 'dtype', type(table).__name__)}")
    if table.ndim != 2:
        raise ShapeError(f"{where}: table must be 2-D (V, D), got shape {table.shape}")
    v = table.shape[0]
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ArgumentTypeError(f"{where}: ids must be integers, got {ids.dtype}")
    ids = ids.reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= v):
        raise IndexError(f"{where}: ids must lie in [0, {v}), got [{ids.min()}, {ids.max()}]")
    if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, (int, np.integer)):
        raise ArgumentTypeError(f"{where}: padding_idx must be an int, got {padding_idx!r}")
    padding_idx = int(padding_idx)
    if not -1 <= padding_idx < v:
        raise ArgumentError(f"{where}: padding_idx must be -1 (none) or in [0, {v}), got {padding_idx}")
    aux = np.asarray(aux)
    if aux.dtype.kind != "f":
        raise ArgumentTypeError(f"{where}: {'scale' if kind == 'abs_max' else 'dictionary'} must be float, "
                                f"got {aux.dtype}")
    aux = np.ascontiguousarray(aux, dtype=np.float32).reshape(-1)
    if kind == "abs_max" and aux.shape[0] not in (1, v):
        raise ValueError(f"{where}: scale needs 1 or {v} entries, got {aux.shape[0]}")
    if kind == "log" and not 1 <= aux.shape[0] <= 256:
        raise ValueError(f"{where}: the log dictionary needs 1 to 256 entries, got {aux.shape[0]}")
    return np.ascontiguousarray(table), aux, np.ascontiguousarray(ids, dtype=np.int64), padding_idx


def _padded(table, ids, padding_idx):
    """The int rows read, with padding rows replaced by integer 0 (what Paddle's lookup_table writes)."""
    q = table[ids]
    if padding_idx >= 0:
        q[ids == padding_idx] = 0
    return q


def lookup_dequant_abs_max(table, scale, ids, qmax, padding_idx: int = -1) -> np.ndarray:
    table, scale, ids, padding_idx = check_lookup(table, scale, ids, padding_idx, "abs_max")
    if not qmax > 0:
        raise ArgumentError(f"lookup_dequant_abs_max: qmax must be positive, got {qmax}")
    q = _padded(table, ids, padding_idx).astype(np.float32)            # (n, D)
    s = (scale[ids] if scale.shape[0] > 1 else np.broadcast_to(scale, ids.shape))[:, None]
    return (s * q) / np.float32(qmax)


def lookup_dequant_log(table, dictionary, ids, padding_idx: int = -1) -> np.ndarray:
    table, dictionary, ids, padding_idx = check_lookup(table, dictionary, ids, padding_idx, "log")
    q = _padded(table, ids, padding_idx).astype(np.int64)
    k = np.where(q < 0, q + 128, q)
    if k.size and (k.min() < 0 or k.max() >= dictionary.shape[0]):
        bad = int(np.count_nonzero((k < 0) | (k >= dictionary.shape[0])))
        raise ValueError(f"lookup_dequant: {bad} table entries index outside the {dictionary.shape[0]}-entry "
                         f"log dictionary")
    mag = dictionary[k]
    return np.where(q < 0, -mag, mag).astype(np.float32)


# ---- log quantization: the nearest dictionary level ----------------------------------------------------
def check_log_index(levels, dict_levels, table):
    """Validated float32 ``(levels, dict_levels, table)``: levels and table of one 2-D shape, no NaN in levels;
    dict_levels 1-D, 1..256 entries, strictly ascending, no NaN (``-inf``, the zero level, allowed)."""
    levels = np.asarray(levels)
    table = np.asarray(table)
    dict_levels = np.asarray(dict_levels)
    for name, a in (("levels", levels), ("dict_levels", dict_levels), ("table", table)):
        if a.dtype != np.float32:
            raise ArgumentTypeError(f"log_index: {name} must be float32, got {a.dtype}")
    if levels.ndim != 2 or table.shape != levels.shape:
        raise ShapeError(f"log_index: levels and table must share one 2-D shape, got {levels.shape} and "
                         f"{table.shape}")
    if dict_levels.ndim != 1 or not 1 <= dict_levels.shape[0] <= 256:
        raise ShapeError(f"log_index: dict_levels must be 1-D with 1 to 256 entries, got {dict_levels.shape}")
    if np.isnan(dict_levels).any() or (np.diff(dict_levels) <= 0).any():
        raise ValueError("log_index: dict_levels must be strictly ascending and free of NaN")
    if np.isnan(levels).any():
        raise ValueError("log_index: levels hold NaN")
    return (np.ascontiguousarray(levels), np.ascontiguousarray(dict_levels), np.ascontiguousarray(table))


def log_index(levels, dict_levels, table) -> np.ndarray:
    """PaddleSlim's nearest-level index (int32, same shape as ``levels``): ``i = searchsorted(dict, L)`` (left);
    take ``i - 1`` when ``i > 0`` and either ``i == len(dict)`` or ``|dict[i-1] - L| < |dict[i] - L|`` (strictly,
    float32; ``-inf - -inf`` is NaN and compares False); then ``i - 128`` where the table entry is ``< 0``
    (``-0.0`` and +0 are not negative)."""
    levels, dict_levels, table = check_log_index(levels, dict_levels, table)
    n = dict_levels.shape[0]
    i = np.searchsorted(dict_levels, levels, side="left")
    left, right = dict_levels[np.maximum(i - 1, 0)], dict_levels[np.minimum(i, n - 1)]
    with np.errstate(invalid="ignore"):
        closer = np.abs(left - levels) < np.abs(right - levels)
    index = np.where((i > 0) & ((i == n) | closer), i - 1, i)
    return np.where(table < 0, index - 128, index).astype(np.int32)
