"""``cal_kl_threshold``: Paddle's KL threshold search, compiled when built, else the pure-Python twin.

Both paths return the same float bit for bit (``kernels/kl.pyx`` replays the twin's float operations in the same
order; tests/test_kl.py checks the oracle's 20 histograms and hundreds of synthetic ones). The compiled path takes
1-D int64 and float64 histograms (other integer dtypes are converted when their total cannot overflow); any other
dtype (float32, bool, ...) runs the twin, which keeps Paddle's exact Python/NumPy type behaviour. Both paths get
the same validated arguments: ``bits`` an int in [2, 16] (Paddle's fake-quant ``bit_length`` range 1..16 minus
the 1 bit that has no level), checked before the search (a 17-bit search runs 65535 levels per candidate).
"""
from __future__ import annotations

import numpy as np

from .._dispatch import kernel
from ..errors import ArgumentError
from .. import _args


def _validate(hist, bits):
    """The histogram as a 1-D numeric ndarray, and bits as an int in [2, 16]; ArgumentError (a ValueError) for
    anything else, checked before any search."""
    bits = _args.bits("cal_kl_threshold", "bits", bits)
    hist = np.asarray(hist)
    if hist.ndim != 1:
        raise ArgumentError(f"cal_kl_threshold: hist must be 1-D, got shape {hist.shape}")
    if hist.shape[0] < 3:
        raise ArgumentError(f"cal_kl_threshold: need at least 3 bins, got {hist.shape[0]} "
                            "(Paddle's loop indexes an empty list there)")
    if hist.dtype.kind not in "biuf":
        raise ArgumentError(f"cal_kl_threshold: hist must hold numbers, got dtype {hist.dtype}")
    if hist.dtype.kind == "f" and not np.all(np.isfinite(hist)):
        raise ArgumentError("cal_kl_threshold: hist contains NaN or Inf")
    if hist.dtype.kind in "if" and np.any(hist < 0):
        raise ArgumentError("cal_kl_threshold: hist has negative counts")
    return hist, bits


def kl_curve(hist, bits: int = 8) -> list[tuple[int, float]]:
    """``(i, D_i)`` for every candidate length Paddle scores, in order: the curve ``cal_kl_threshold`` minimises."""
    hist, bits = _validate(hist, bits)
    return kernel("kl", hist).kl_curve(hist, bits)


def cal_kl_threshold(hist, bin_width, bits: int = 8):
    """Paddle's ``cal_kl_threshold(hist, bin_width, bits)``, the same float bit for bit.

    ``hist``: 1-D counts (Paddle's 2048-bin |x| histogram); ``bin_width``: its bin width (returned thresholds are
    multiples of it, counted from 0); ``bits``: quantization bits (8 gives 127 target levels).
    Returns ``(best_i + 0.5) * bin_width`` computed with the caller's ``bin_width`` object, as Paddle does (so a
    NumPy float64 width gives a NumPy float64).
    Raises ArgumentError (a ValueError) for a non-1-D or too short histogram, NaN/Inf or negative counts, bits not
    an int in [2, 16], and ValueError where Paddle itself fails (a zero in the expanded distribution; impossible
    for integer histograms).
    """
    hist, bits = _validate(hist, bits)
    return kernel("kl", hist).cal_kl_threshold(hist, bin_width, bits)
