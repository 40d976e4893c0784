"""The per-batch statistics the observers need, each from its compiled kernel when built, else from the NumPy twin.

- :func:`batch_abs_range`: ``refquant._kernels.histogram.abs_min_max``, twin ``reference.histogram.abs_min_max``;
- :func:`histogram_abs`: ``refquant._kernels.histogram.histogram_abs``, twin ``reference.histogram.histogram_abs``
  (:func:`abs_max_rows`, :func:`abs_range_tail`,
  :func:`abs_tail` likewise);
- :func:`scan_losses`: ``refquant._kernels.search.scan_losses``, twin ``reference.search.scan_losses``.

All three give identical results on either path: min/max and integer counts trivially, the float32 losses because
the kernel reproduces NumPy's float32 arithmetic and pairwise summation (tests/test_calibration.py).
"""
from __future__ import annotations

import numpy as np

from .._dispatch import kernel
from ..errors import NonFiniteError


def as_batch(x, who: str) -> np.ndarray:
    """``x`` as an ndarray of real numbers; ValueError naming ``who`` if it is empty or not numeric."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{who}: expected real numbers, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{who}: the input is empty (shape {x.shape}); Paddle skips zero-size tensors, "
                         "so skip them before calling update (refquant.calibration.calibrate does)")
    return x


def batch_abs_range(x, who: str = "abs range") -> tuple[float, float]:
    """``(float(min|x|), float(max|x|))`` of a non-empty batch; ValueError if it is empty, NonFiniteError (a
    ValueError) if it holds NaN/Inf."""
    x = as_batch(x, who)
    lo, hi, bad = kernel("histogram", x).abs_min_max(x)
    if bad:
        raise NonFiniteError(f"{who}: the input holds {bad} NaN/Inf value(s) out of {x.size}; "
                             "calibration statistics would be meaningless", count=bad)
    return lo, hi


def abs_max_rows(x: np.ndarray, who: str = "abs max per sample") -> np.ndarray:
    """``max|x[i]|`` of each sample ``i`` (the first axis) of a non-empty batch; NonFiniteError on NaN/Inf."""
    hi, bad = kernel("histogram", x).abs_max_rows(x, x.shape[0])
    if bad:
        batch_abs_range(x, who)  # raises, counting every NaN/Inf
    return hi


def abs_range_tail(x: np.ndarray, cap: int, who: str = "abs range"):
    """``(min|x|, max|x|, cut, the |x| >= cut or None if more than cap)`` (x float32 or float64, non-empty):
    :func:`batch_abs_range` and the one-pass hist tail at about half of max|x|, in one read."""
    lo, hi, bad, cut, kept = kernel("histogram", x).abs_range_tail(x, cap)
    if bad:
        batch_abs_range(x, who)  # raises, counting every NaN/Inf
    return lo, hi, cut, kept


def abs_tail(x: np.ndarray, cuts, cap: int):
    """``(j, the |x| values >= cuts[j])`` for the first of the increasing ``cuts`` that keeps at most ``cap`` (x
    float32 or float64, finite), or ``(len(cuts), None)``."""
    return kernel("histogram", x).abs_tail(x, cuts, cap)


def histogram_abs(x, edges: np.ndarray) -> np.ndarray:
    """int64 counts of |x| in the bins of ``edges``, exactly ``np.histogram(np.abs(x), bins=edges)[0]``."""
    return kernel("histogram", x).histogram_abs(x, edges)


def scan_losses(x: np.ndarray, scales, bits: int, onnx_format: bool, loss: str, prune: bool = False) -> np.ndarray:
    """The loss ("mse" or "emd") of each candidate threshold in ``scales`` on the flattened batch ``x``; with
    ``prune``, ``inf`` for the candidates shown to lose to another one (refquant.reference.search)."""
    return kernel("search", x).scan_losses(x, scales, bits, onnx_format, loss, prune)
