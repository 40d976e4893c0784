"""KL threshold search, the plain-Python twin of ``kernels/kl.pyx``.

This is Paddle 3.3.1's ``cal_kl_threshold`` (``paddle/static/quantization/cal_kl_threshold.py``) step by step,
with Paddle's names (docs/calibration.md). It works on Python lists and scalars exactly as
the original does, so every float operation happens with the same operands, the same types and in the same order,
and the result is the same float, bit for bit, for any histogram (int64 or float64 counts, and even the dtypes the
fast kernel declines). It is O(n^2) pure Python: about a second per 2048-bin histogram.

For a histogram ``hist`` of ``n`` bins and ``L = 2**(bits-1) - 1`` levels, every candidate length
``i = start .. n-1`` (``start = int((n - 1) * 0.5)``) whose last kept bin ``hist[i-1]`` is nonzero is scored:

1. ``P = hist[0:i]`` with the outliers ``sum(hist[i:])`` folded into ``P[i-1]``; ``R`` is a copy, the zero mask.
2. ``Q0 = hist[0:i]`` (no fold) merged into ``L`` groups of ``m = int(i / L)`` bins; the last group runs to ``i``.
3. Each group's sum ``G`` is spread evenly over the bins whose ``R`` is nonzero: ``Q[k] = G / nz``.
4. ``D = (sum p*ln(Qsum*p) - sum p*ln(Psum*q)) / Psum`` over ``p != 0``, both sums left to right.

The first ``i`` with the strictly smallest ``D`` wins and ``T = (i + 0.5) * bin_width``. If no ``i`` was scored,
``i`` is the first nonzero bin at or below ``start``, walking down.
"""
from __future__ import annotations

import math

import numpy as np


def group_bounds(i: int, levels: int) -> list[tuple[int, int]]:
    """The ``levels`` half-open bin ranges ``[lo, hi)`` that ``hist[0:i]`` is merged into.

    Group g covers ``[g*m, (g+1)*m)`` with ``m = int(i / levels)``; the last group instead ends at ``i`` and so
    absorbs the ``i - levels*m`` remainder bins. With ``m == 0`` (fewer bins than levels) every group but the last
    is empty and the last one holds all ``i`` bins.
    """
    m = int(i / levels)
    bounds = [(g * m, (g + 1) * m) for g in range(levels - 1)]
    bounds.append(((levels - 1) * m, i))
    return bounds


def quantize_bins(Q0: list, bounds) -> list:
    """The group sums ``G``: Python ``sum`` of each slice, i.e. exact for ints, left to right for floats."""
    return [sum(Q0[lo:hi]) for lo, hi in bounds]


def expand_bins(G: list, R: list, bounds) -> list:
    """Spread each group sum over the group's bins whose reference count ``R[k]`` is nonzero.

    A group whose reference bins are all zero contributes the int 0 everywhere (as Paddle does); otherwise each
    nonzero reference bin gets ``G / (nonzero count + 0.0)``, a float, and zero reference bins get the int 0.
    """
    Q = [0] * len(R)
    for G_g, (lo, hi) in zip(G, bounds):
        width = hi - lo
        zeros = R[lo:hi].count(0)
        share = 0 if zeros == width else G_g / (width - zeros + 0.0)
        for k in range(lo, hi):
            Q[k] = 0 if R[k] == 0 else share
    return Q


def kl_divergence(P: list, P_sum, Q: list, Q_sum) -> float:
    """``(sum p*ln(Q_sum*p) - sum p*ln(P_sum*q)) / P_sum`` over the bins with ``p != 0``, summed left to right.

    A ``q == 0`` where ``p != 0`` makes Paddle log "Fatal error" and then ``math.log(0)`` raise; so does this
    (with a clearer message). It cannot happen for integer histograms (ptq.md).
    """
    sum1 = 0
    sum2 = 0
    for k in range(len(P)):
        p = P[k]
        q = Q[k]
        if p == 0:
            sum1 += 0  # the original adds zeros here; kept so the types evolve exactly as there
            sum2 += 0
            continue
        if q == 0:
            raise ValueError(f"cal_kl_threshold: the expanded distribution Q is 0 at bin {k} where P is {p}; "
                             "Paddle fails here too (math.log(0): math domain error)")
        sum1 += p * math.log(Q_sum * p)
        sum2 += p * math.log(P_sum * q)
    return (sum1 - sum2) / P_sum


def kl_curve(hist: np.ndarray, bits: int) -> list[tuple[int, float]]:
    """``(i, D_i)`` for every candidate length ``i`` that is scored, in increasing ``i``."""
    if hist.ndim != 1:
        raise ValueError(f"cal_kl_threshold: hist must be 1-D, got shape {hist.shape}")
    n = hist.shape[0]
    start = int((n - 1) * 0.5)
    levels = 2 ** (bits - 1) - 1
    P_sum = np.sum(np.array(hist).ravel())
    curve = []
    for i in range(start, n):
        P = hist[0:i].tolist()
        outliers = sum(hist[i:])  # builtin sum over NumPy scalars: sequential, in the hist's dtype
        if P[i - 1] == 0:
            continue
        P[i - 1] += outliers
        R = P[:]
        Q0 = hist[0:i].tolist()
        bounds = group_bounds(i, levels)
        Q = expand_bins(quantize_bins(Q0, bounds), R, bounds)
        Q_sum = sum(Q)
        curve.append((i, kl_divergence(P, P_sum, Q, Q_sum)))
    return curve


def best_index(hist: np.ndarray, curve) -> int:
    """The first ``i`` of the strictly smallest divergence, or the fallback bin index if nothing was scored."""
    best_i = 0
    best_D = 0
    for i, D in curve:
        if best_i == 0 or D < best_D:
            best_i, best_D = i, D
    if best_i == 0:
        j = int((hist.shape[0] - 1) * 0.5)
        while j > 0 and hist[j] == 0:
            j -= 1
        best_i = j
    return best_i


def cal_kl_threshold(hist: np.ndarray, bin_width, bits: int):
    """Paddle's ``cal_kl_threshold(hist, bin_width, bits)``: ``(best_i + 0.5) * bin_width``."""
    return (best_index(hist, kl_curve(hist, bits)) + 0.5) * bin_width
