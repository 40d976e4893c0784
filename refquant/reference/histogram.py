"""|x| statistics and the histogram threshold, the NumPy twins of ``kernels/histogram.pyx``.

Paddle's KL and hist algorithms look at activations twice (docs/calibration.md):

1. pass 1 keeps, per tensor, ``min|x|`` and ``max|x|`` over all batches (``abs_min_max`` of each batch);
2. a 2048-bin histogram is laid out on ``[min|x|, max|x|]`` (``histogram_edges``), and pass 2 adds
   ``np.histogram(|x|, bins=edges)`` of every batch (``histogram_abs``).

``hist_threshold`` is the hist algorithm's threshold from the accumulated counts. All of it is written the way
Paddle's ``post_training_quantization.py`` writes it, so the floats are the same.
"""
from __future__ import annotations

import numpy as np


def abs_min_max(x: np.ndarray) -> tuple[float, float, int]:
    """``(float(min|x|), float(max|x|), number of NaN/Inf)`` of a non-empty array."""
    a = np.abs(x)
    return float(np.min(a)), float(np.max(a)), int(a.size - np.count_nonzero(np.isfinite(a)))


def histogram_edges(abs_min: float, abs_max: float, bins: int = 2048) -> np.ndarray:
    """The float64 bin edges Paddle lays out: ``np.histogram([], bins, range=(abs_min, abs_max))``.

    That is ``linspace(abs_min, abs_max, bins + 1)``; when ``abs_min == abs_max`` NumPy widens the range to
    ``(abs_min - 0.5, abs_max + 0.5)`` first.
    """
    return np.histogram([], bins=bins, range=(abs_min, abs_max))[1]


def check_edges(edges) -> np.ndarray:
    """``edges`` as a contiguous float64 1-D array of at least 2 finite, non-decreasing values (what
    ``np.histogram`` requires of an edge array); ValueError otherwise. Shared with the compiled module."""
    e = np.ascontiguousarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.shape[0] < 2:
        raise ValueError(f"histogram_abs: edges must be 1-D with at least 2 values, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e[:-1] > e[1:]):
        raise ValueError("histogram_abs: edges must be finite and increase monotonically")
    return e


def histogram_abs(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """int64 counts of |x| in the bins of ``edges``: ``np.histogram(np.abs(x), bins=edges)``.

    With an edge array NumPy compares in float64: bin k holds ``edges[k] <= v < edges[k+1]``, the last bin also
    ``v == edges[-1]``, values outside ``[edges[0], edges[-1]]`` are dropped.
    """
    return np.histogram(np.abs(x), bins=check_edges(edges))[0]


def bin_width(edges: np.ndarray):
    """``edges[1] - edges[0]`` (float64), the width both KL and hist multiply by."""
    return edges[1] - edges[0]


def hist_threshold(hist: np.ndarray, edges: np.ndarray, hist_percent: float = 0.99999):
    """Paddle's hist algorithm (``_get_hist_scaling_factor``).

    Normalise the counts by their total (``hist / float(sum(hist))``), walk the bins adding the fractions left to
    right, and stop at the first bin ``i`` where the running sum is ``>= hist_percent``; the threshold is
    ``(i + 1 - 0.5) * bin_width``, the centre of bin i measured **from 0** (the range's lower edge is ignored). If
    the sum never gets there (``hist_percent >= 1`` and round-off), it is ``-0.5 * bin_width``: negative, as in
    Paddle.
    """
    hist = np.asarray(hist)
    # sum(hist) as Paddle writes it; for integer counts np.sum is the same exact integer, without a Python loop
    total = int(np.sum(hist, dtype=np.int64)) if hist.dtype.kind in "iub" else sum(hist)
    fractions = hist / float(total)
    # the running sum Paddle's loop forms (0 + f[0], then + f[1], ...): np.cumsum adds left to right too
    reached = np.flatnonzero(np.cumsum(fractions) >= hist_percent)
    stop = int(reached[0]) + 1 if reached.size else 0
    return (stop - 0.5) * bin_width(edges)
