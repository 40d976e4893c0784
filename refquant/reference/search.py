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

Pruning (``prune=True``, at least :data:`PRUNE_MIN` values; mse not in float16, whose rounding the bound below
does not cover): the observer needs only the smallest loss and the
candidates that reach it, so a candidate shown to lose is reported as ``inf`` and not finished. The steps (the
kernel's, bit for bit): first the losses of every candidate on the sample ``x[::PRUNE_STRIDE]``; the two smallest
there (:func:`pilots`) are computed in full. Then every other candidate:

- mse: sums the chunks of NumPy's tree (:func:`chunks`) in order, adding each one's float32 value to a double
  ``P``, and stops once ``P + R_k > lim = min(S_a, S_b) * (1 + 2**-16)`` (``S``: a pilot's float32 sum of squared
  errors, ``lim`` in double). ``R_k``, a floor for the chunks after the k-th, is their float32 sums of ``x**2``
  over ``x < 0`` added in double (0 with onnx_format): without onnx_format every candidate's qdq of a negative x is
  0, so its term there is exactly ``x**2``. Why it loses: its terms are non-negative, and at most 81 roundings (25
  in the base case of 128 values, one per level above for n < 2**63) lie on any path of the tree, so every float32
  pairwise sum is within ``82 u`` (``u = 2**-24``) of the exact sum of its terms. Hence its full sum
  ``S >= (P + R_k) (1 - 165 u) > min(S_a, S_b) (1 + 2**-18)``, and ``S / n`` rounds to a float32 strictly above
  the best pilot's: never the smallest, never tied.
- emd: after ``mean(qdq)``, stops when ``|mean(x) - mean(qdq)|`` (float32) already exceeds the better pilot's loss:
  adding the non-negative std term and rounding cannot bring the loss back down to it.
"""
from __future__ import annotations

import numpy as np


#: values from which a scan prunes; the sample's stride; the values a pruned mse candidate sums between checks
PRUNE_MIN, PRUNE_STRIDE, PRUNE_CHUNK = 1 << 16, 61, 1 << 15


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


def chunks(n: int, lo: int = 0) -> list[tuple[int, int]]:
    """``(start, length)`` of the subtrees of NumPy's pairwise sum over n values that a pruned candidate sums
    between checks: the nodes of at most :data:`PRUNE_CHUNK` values whose parent is larger, in order."""
    if n <= PRUNE_CHUNK:
        return [(lo, n)]
    half = n // 2 - n // 2 % 8
    return chunks(half, lo) + chunks(n - half, lo + half)


def pilots(sample_losses) -> list[int]:
    """The two candidates summed in full first: the smallest sample losses, NaN last, ties to the lower index."""
    return sorted(range(len(sample_losses)),
                  key=lambda j: (bool(np.isnan(sample_losses[j])), sample_losses[j], j))[:2]


def prunes(n: int, n_scales: int, loss: str, dtype) -> bool:
    """Whether a scan with ``prune`` prunes: at least :data:`PRUNE_MIN` values and 3 candidates, and for mse not
    float16 (its rounding exceeds the bound in the module docstring)."""
    return n >= PRUNE_MIN and n_scales > 2 and (loss == "emd" or dtype != np.float16)


def scan_losses(x: np.ndarray, scales, bits: int = 8, onnx_format: bool = False, loss: str = "mse",
                prune: bool = False) -> np.ndarray:
    """The loss of every candidate threshold in ``scales`` on the flattened ``x`` (float32 for float32 x); with
    ``prune``, ``inf`` for the candidates shown to lose (see the module docstring)."""
    check_scan(x, scales, bits, loss)
    x = x.flatten()
    if prune and prunes(x.size, len(scales), loss, x.dtype):
        scales = [float(s) for s in scales]
        first = pilots(scan_losses(x[::PRUNE_STRIDE], scales, bits, onnx_format, loss))
        return (_pruned_mse if loss == "mse" else _pruned_emd)(x, scales, first, bits, onnx_format)
    score = mse_loss if loss == "mse" else emd_loss
    return np.array([score(x, quant_dequant(x, scale, bits, onnx_format)) for scale in scales])


def _pruned_mse(x, scales, first, bits, onnx_format):
    errors = [(x - quant_dequant(x, scales[j], bits, onnx_format)) ** 2 for j in first]
    finite = [s for s in (float(np.add.reduce(e)) for e in errors) if not np.isnan(s)]
    lim = min(finite) * (1 + 2 ** -16) if finite else np.nan
    spans = chunks(x.size)
    rest = np.zeros(len(spans))
    if not onnx_format:  # the floor R_k of the chunks after the k-th
        floor = [float(np.add.reduce(s)) for s in _spans(np.where(x < 0, x, 0).astype(errors[0].dtype) ** 2, spans)]
        rest[:-1] = np.cumsum(floor[:0:-1])[::-1]
    out = []
    for j, scale in enumerate(scales):
        e = errors[first.index(j)] if j in first else (x - quant_dequant(x, scale, bits, onnx_format)) ** 2
        sums = np.cumsum([float(np.add.reduce(s)) for s in _spans(e, spans)])
        out.append(e.dtype.type(np.inf) if j not in first and (sums + rest > lim).any() else e.mean())
    return np.array(out)


def _pruned_emd(x, scales, first, bits, onnx_format):
    qdq = {j: quant_dequant(x, scales[j], bits, onnx_format) for j in first}
    finite = [loss for loss in (emd_loss(x, q) for q in qdq.values()) if not np.isnan(loss)]
    best = min(finite) if finite else np.nan
    mean_x = np.mean(x)
    out = []
    for j, scale in enumerate(scales):
        q = qdq[j] if j in first else quant_dequant(x, scale, bits, onnx_format)
        lost = j not in first and np.abs(mean_x - np.mean(q)) > best
        out.append(x.dtype.type(np.inf) if lost else emd_loss(x, q))
    return np.array(out)


def _spans(a, spans):
    return (a[lo:lo + n] for lo, n in spans)
