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


def check_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` as ``rows`` non-empty rows; ValueError otherwise. Shared with the compiled module."""
    if rows < 1 or x.size == 0 or x.size % rows:
        raise ValueError(f"abs_max_rows: cannot split {x.size} values into {rows} non-empty rows")
    return x.reshape(rows, -1)


def abs_max_rows(x: np.ndarray, rows: int) -> tuple[np.ndarray, int]:
    """``(max|row| of each of the rows of x, number of NaN/Inf)``: avg's per-sample statistic."""
    a = np.abs(check_rows(np.asarray(x), rows))
    return np.max(a, axis=1), int(a.size - np.count_nonzero(np.isfinite(a)))


def abs_range_tail(x: np.ndarray, cap: int, *, path=None):
    """``(min|x|, max|x|, number of NaN/Inf, cut, the finite |x| >= cut in the order of x)``, the kept values None
    when more than ``cap``. ``cut`` is max|x| with one taken off its exponent bits (half of it for a normal
    float; 0 when max|x| is below the smallest normal), so that the compiled kernel forms it from the bit
    pattern alone. With NaN/Inf present only the count is meaningful. ``path``: the compiled module's choice of
    loop, the same values on each."""
    a = np.abs(np.asarray(x)).reshape(-1)
    if a.size == 0 or cap < 1:
        raise ValueError(f"abs_range_tail: need a non-empty x and cap >= 1, got {a.size} values, cap {cap}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"abs_range_tail: x must be float32 or float64, got {a.dtype}")
    lo, hi, bad = abs_min_max(a)
    ints, half = (np.int32, 1 << 23) if a.dtype == np.float32 else (np.int64, 1 << 52)
    hi_bits = int(np.asarray(hi, dtype=a.dtype).view(ints))
    cut = a.dtype.type(np.asarray(max(hi_bits - half, 0), dtype=ints).view(a.dtype))
    kept = a[(a >= cut) & np.isfinite(a)]
    return lo, hi, bad, float(cut), kept if kept.size <= cap else None


def cut_bits(cuts, dtype, cap: int) -> list[int]:
    """The bit patterns of ``cuts`` rounded to ``dtype`` (float32 or float64): 1 to 4 finite increasing values
    >= 0, ``cap`` >= 1, else ValueError. Shared with the compiled module."""
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"abs_tail: x must be float32 or float64, got {np.dtype(dtype)}")
    c = np.array(cuts, dtype=dtype).reshape(-1)
    if cap < 1 or not 1 <= c.size <= 4 or not np.all(np.isfinite(c) & (c >= 0)) or np.any(c[1:] < c[:-1]):
        raise ValueError(f"abs_tail: need 1 to 4 finite increasing cuts >= 0 and cap >= 1, got {cuts!r}, {cap}")
    return c.view(np.int32 if c.dtype == np.float32 else np.int64).tolist()


def abs_tail(x: np.ndarray, cuts, cap: int, *, path=None):
    """``(j, the finite |x| >= cuts[j] in the order of x)`` for the first j with at most ``cap`` such values
    (cuts rounded to x's dtype), or ``(len(cuts), None)``. ``path`` as in :func:`abs_range_tail`."""
    a = np.abs(np.asarray(x)).reshape(-1)
    cut_bits(cuts, a.dtype, cap)
    finite = np.isfinite(a)
    for j, c in enumerate(np.array(cuts, dtype=a.dtype).reshape(-1)):
        kept = a[(a >= c) & finite]
        if kept.size <= cap:
            return j, kept
    return len(np.atleast_1d(cuts)), None


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
