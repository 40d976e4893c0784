"""Row-dequantizing embedding lookup, the NumPy twin of ``kernels/embedding.pyx``.

For a quantized table ``q`` (V, D) (int8/int16) and flat row indices ``ids`` (n,), only the rows read are
dequantized into a float32 (n, D):

* abs_max (Paddle's ``dequantize_abs_max``): ``out[i] = (scale[r] * float32(q[r])) / qmax`` with ``r = ids[i]``;
  ``scale`` holds one float32 (per tensor, as Paddle) or V (per row); every step is a float32 operation, so the
  kernel's C expression gives the same bits.
* log (Paddle's ``dequantize_log``): ``out[i] = dict[q]`` where q >= 0, ``-dict[q + 128]`` where q < 0.

Rows whose id equals ``padding_idx`` (< 0: none) are zeros.
"""
from __future__ import annotations

import numpy as np


def lookup_dequant_abs_max(table, scale, ids, qmax, padding_idx: int = -1) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    if scale.shape[0] not in (1, table.shape[0]):
        raise ValueError(f"lookup_dequant: scale needs 1 or {table.shape[0]} entries, got {scale.shape[0]}")
    q = table[ids].astype(np.float32)                                   # (n, D)
    s = (scale[ids] if scale.shape[0] > 1 else np.broadcast_to(scale, ids.shape))[:, None]
    out = (s * q) / np.float32(qmax)
    if padding_idx >= 0:
        out[ids == padding_idx] = 0
    return out


def lookup_dequant_log(table, dictionary, ids, padding_idx: int = -1) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    dictionary = np.asarray(dictionary, dtype=np.float32).reshape(-1)
    q = table[ids].astype(np.int64)
    k = np.where(q < 0, q + 128, q)
    if k.size and (k.min() < 0 or k.max() >= dictionary.shape[0]):
        bad = int(np.count_nonzero((k < 0) | (k >= dictionary.shape[0])))
        raise ValueError(f"lookup_dequant: {bad} table entries index outside the {dictionary.shape[0]}-entry "
                         f"log dictionary")
    mag = dictionary[k]
    out = np.where(q < 0, -mag, mag).astype(np.float32)
    if padding_idx >= 0:
        out[ids == padding_idx] = 0
    return out
