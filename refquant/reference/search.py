"""The mse / emd threshold scans, the NumPy twins of ``kernels/search.pyx``.

Per batch (Paddle's ``_sample_mse`` / ``_sample_emd``): flatten x (float32), ``a = max|x|`` (``1e-8`` if 0),
and try the candidate thresholds ``c = s * a`` for ``s = 0.3, 0.32, ...`` accumulated in double while
``s <= 1.0``: 35 candidates, the last ``s = 0.9800000000000005`` (never 1). Each one's quant-dequant of x is scored:

- onnx_format=False: ``qdq = round(clip(x, 0, c) / c * bnt) / bnt * c`` -- negative values clip to **0**;
- onnx_format=True:  ``qdq = clip(round(x / c * bnt), -bnt - 1, bnt) / bnt * c``;
- mse loss ``mean((x - qdq)**2)``; emd loss ``|mean(x) - mean(qdq)| + |std(x) - std(qdq)|``.

``round`` is ``np.round`` (half to even) and everything is float32 NumPy arithmetic with the Python-float ``c``
and int ``bnt`` cast to float32, exactly as Paddle's expressions evaluate under NumPy 2. The observer
(refquant.calibration.observers) keeps the best candidate (``loss <= best``) across batches.
"""
from __future__ import annotations

import numpy as np


def candidate_scales(abs_max: float) -> list[float]:
    """The 35 candidate thresholds ``s * abs_max``, s stepping from 0.3 by 0.02 in double while ``s <= 1.0``."""
    scales = []
    s = 0.3
    while s <= 1.0:
        scales.append(s * abs_max)
        s += 0.02
    return scales


def search_abs_max(x: np.ndarray) -> float:
    """``a = float(max|x|)``, replaced by ``1e-8`` when it is 0 (so the candidates are never 0)."""
    a = float(np.max(np.abs(x)))
    return 1e-8 if a == 0.0 else a


def quant_dequant(x: np.ndarray, scale: float, bits: int = 8, onnx_format: bool = False) -> np.ndarray:
    """The candidate's quant-dequant of the flattened float32 ``x``, as Paddle's mse/emd search computes it."""
    bnt = 2 ** (bits - 1) - 1
    if onnx_format:
        q = np.clip(np.round(x / scale * bnt), -bnt - 1, bnt)
        return q / bnt * scale
    return np.round(np.clip(x, 0.0, scale) / scale * bnt) / bnt * scale


def mse_loss(x: np.ndarray, qdq: np.ndarray):
    return ((x - qdq) ** 2).mean()


def emd_loss(x: np.ndarray, qdq: np.ndarray):
    return np.abs(np.mean(x) - np.mean(qdq)) + np.abs(np.std(x) - np.std(qdq))


def check_scan(x, scales, bits, loss) -> None:
    """The arguments of :func:`scan_losses`, checked the same way by the compiled module: a non-empty ``x``, a
    1-D sequence of ``scales``, ``bits`` an int in [2, 16], ``loss`` "mse" or "emd"."""
    if loss not in ("mse", "emd"):
        raise ValueError(f"scan_losses: loss must be 'mse' or 'emd', got {loss!r}")
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"scan_losses: bits must be an int in [2, 16], got {bits!r}")
    if np.size(x) == 0:
        raise ValueError("scan_losses: empty input")
    if np.ndim(scales) != 1:
        raise ValueError(f"scan_losses: scales must be 1-D, got shape {np.shape(scales)}")


def scan_losses(x: np.ndarray, scales, bits: int = 8, onnx_format: bool = False, loss: str = "mse") -> np.ndarray:
    """The loss of every candidate threshold in ``scales`` on the flattened ``x`` (float32 for float32 x)."""
    check_scan(x, scales, bits, loss)
    x = x.flatten()
    score = mse_loss if loss == "mse" else emd_loss
    return np.array([score(x, quant_dequant(x, scale, bits, onnx_format)) for scale in scales])
