"""Are a foreign model's scales what an algorithm gives? Every refquant calibration algorithm, under the foreign
model's own convention, held against every quantized tensor.

Conventions (how a threshold or a range becomes a scale and zero point), told apart by the integer type and the
zero point of each tensor:

* **symmetric** (int8 / int16, zero point 0): ``s = float32(T / qmax)`` with qmax = 127 (32767). This is
  Paddle's ``T / 127`` and ONNX Runtime's symmetric int8, whose range is [-127, 127]
  (``onnxruntime/quantization/quant_utils.py``: ``compute_scale_zp`` with ``ONNX_INT_TYPE_SYMMETRIC_RANGE``:
  ``scale = (2 T) / 254`` in float64, stored as float32). The implied threshold is ``T = 127 s``.
* **symmetric, full range** (uint8 with zero point 128, uint16 with 32768): ``s = float32(2 T / 255)`` (ONNX
  Runtime's symmetric uint8 keeps [0, 255]); ``T = 127.5 s``.
* **asymmetric** (any other zero point): ONNX Runtime's ``compute_scale_zp``: the range is widened to include 0,
  ``s = float32((rmax - rmin) / (qmax - qmin))`` computed in float64, ``zp = round_half_even(qmin - rmin / s)``
  with the float64 s. The implied range is ``[(qmin - zp) s, (qmax - zp) s]``.

Candidates: the plain signed range [min, max] (``min_max``: what ONNX Runtime's MinMax calibrator gives, always
under the asymmetric convention, whose zero point may land on 0 or 128 by chance), refquant's threshold algorithms
(Paddle's KL, hist, abs_max, avg, mse, emd; abs_max is also ONNX Runtime's symmetric max|x|) and the fixed range
[0, 1] (``unit_range``: ONNX Runtime gives it to Softmax outputs). Under the asymmetric convention a threshold T
gives the range [-T, T] clipped to the observed [min, max] (as ONNX Runtime clips its histogram thresholds). A
threshold is rounded to float32 first, as every tool stores it.

Verdicts: ``bit-exact with <algo>`` when the candidate's float32 scale (and zero point) equals the foreign one;
``within tolerance of <algo>`` when the relative scale difference is at most ``rtol`` (default
:data:`DEFAULT_RTOL` = 1%, about the spread between two runs of one histogram method on different batches);
``matches none (closest: <algo>, +x%)`` otherwise.

All statistics come from two passes over the feeds: pass 1 feeds every single-pass observer (abs range, signed
min/max, avg, mse, emd) at once, pass 2 the KL and hist histograms on the pass-1 ranges.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..calibration import AbsMinMaxObserver, MinMaxObserver, make_observer
from ..calibration.algorithms import ALGORITHMS, static_algorithms, two_pass_algorithms
from ..errors import ArgumentError
from ..executor import run
from ..ops.affine import INT_RANGES

#: Default relative tolerance of the "within tolerance" verdict.
DEFAULT_RTOL = 0.01
#: The threshold algorithms, in the order they are tried (ties go to the first): abs_max, then the other
#: algorithms of quant_post_static in the registry's order.
THRESHOLD_ALGOS = ("abs_max",) + tuple(a for a in static_algorithms() if a != "abs_max")
CANDIDATES = ("min_max",) + THRESHOLD_ALGOS


@dataclass
class ScaleRow:
    """One quantized tensor (activation) or weight: the foreign parameters, what they imply, and the closest
    refquant candidate. ``rel_diff`` is ``(candidate - foreign) / foreign`` of the scale (for per-channel weights,
    the channel with the largest magnitude); ``exact`` lists every candidate that is bit-exact."""
    kind: str
    tensor: str
    fp32_tensor: Optional[str]
    dtype: str
    convention: str
    scale: list
    zero_point: list
    rmin: Optional[float] = None
    rmax: Optional[float] = None
    threshold: Optional[float] = None
    shared_with: Optional[str] = None
    closest: Optional[str] = None
    rel_diff: Optional[float] = None
    exact: list = field(default_factory=list)
    candidates: dict = field(default_factory=dict)
    int_mismatches: Optional[int] = None
    verdict: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def convention(dtype: str, zero_point) -> str:
    """"symmetric", "symmetric_full" or "asymmetric" (module docstring) from the integer type and zero points."""
    qmin, qmax = INT_RANGES[dtype]
    zp = np.asarray(zero_point).reshape(-1)
    if qmin < 0 and np.all(zp == 0):
        return "symmetric"
    if qmin == 0 and np.all(zp == (qmax + 1) // 2):
        return "symmetric_full"
    return "asymmetric"


def scale_from_threshold(T: float, conv: str, dtype: str) -> np.float32:
    """The float32 scale of threshold T under a symmetric convention."""
    qmin, qmax = INT_RANGES[dtype]
    t = float(np.float32(T))
    return np.float32(t / qmax) if conv == "symmetric" else np.float32(2.0 * t / (qmax - qmin))


def scale_from_range(lo: float, hi: float, dtype: str) -> tuple[np.float32, int]:
    """ONNX Runtime's asymmetric ``compute_scale_zp``: the range widened to include 0, the float64 scale stored as
    float32, ``zp = round_half_even(qmin - rmin / scale64)``; a range below float32's tiny gives (1, 0)."""
    qmin, qmax = INT_RANGES[dtype]
    rmin, rmax = min(float(np.float32(lo)), 0.0), max(float(np.float32(hi)), 0.0)
    s64 = (rmax - rmin) / (qmax - qmin)
    if s64 < np.finfo(np.float32).tiny:
        return np.float32(1.0), 0
    return np.float32(s64), int(np.round(qmin - rmin / s64))


def implied(conv: str, scale: float, zp: int, dtype: str) -> tuple:
    """``(rmin, rmax, T)`` a foreign scale and zero point stand for (T None for the asymmetric convention)."""
    qmin, qmax = INT_RANGES[dtype]
    s = float(scale)
    rmin, rmax = (qmin - zp) * s, (qmax - zp) * s
    if conv == "symmetric":
        return rmin, rmax, qmax * s
    if conv == "symmetric_full":
        return rmin, rmax, (qmax - qmin) / 2 * s
    return rmin, rmax, None


# ---- statistics ----------------------------------------------------------------------------------------------
class TensorStats:
    """Every candidate's statistic of one FP32 tensor: thresholds by algorithm and the signed (min, max)."""

    def __init__(self):
        self.range = AbsMinMaxObserver()
        self.minmax = MinMaxObserver()
        self.single = {a: make_observer(a, bits=8) for a in THRESHOLD_ALGOS
                       if a != "abs_max" and ALGORITHMS[a].passes == 1}  # abs_max: self.range
        self.hist: dict = {}

    def thresholds(self) -> dict:
        out = {"abs_max": self.range.threshold()}
        out.update({k: float(o.threshold()) for k, o in self.single.items()})
        out.update({k: float(o.threshold()) for k, o in self.hist.items() if not o.empty})
        return out


def collect_stats(fp32_model, feeds, tensors, runner=None) -> dict[str, TensorStats]:
    """Run the FP32 model twice over ``feeds`` (a list of ``{input: array}``) and observe ``tensors``.
    ``runner(feed, tensors) -> {name: array}`` computes the FP32 tensors (default: refquant's executor)."""
    tensors = sorted(set(tensors))
    if not isinstance(feeds, (list, tuple)) or not feeds:
        raise ArgumentError("check: feeds must be a non-empty list of {input name: array} dicts")
    if runner is None:
        def runner(feed, names):
            return run(fp32_model, feed, outputs=names)
    stats = {t: TensorStats() for t in tensors}
    for feed in feeds:
        outs = runner(feed, tensors)
        for t in tensors:
            x = np.asarray(outs[t])
            if x.size == 0 or x.dtype.kind != "f":
                continue
            x = x.reshape(1) if x.ndim == 0 else x    # a quantized scalar constant: a batch of one value
            s = stats[t]
            s.range.update(x)
            s.minmax.update(x)
            for o in s.single.values():
                o.update(x)
    for t, s in stats.items():
        if not s.range.empty:
            s.hist = {m: ALGORITHMS[m].new_observer(m, s.range) for m in two_pass_algorithms()}
    for feed in feeds:
        outs = runner(feed, tensors)
        for t in tensors:
            x = np.asarray(outs[t])
            if stats[t].hist and x.size:
                for o in stats[t].hist.values():
                    o.update(x.reshape(1) if x.ndim == 0 else x)
    return {t: s for t, s in stats.items() if not s.range.empty}


# ---- activations -----------------------------------------------------------------------------------------------
def _rel(candidate: float, foreign: float) -> float:
    return (float(candidate) - float(foreign)) / float(foreign) if foreign else math.inf


def _pct(rel: float) -> str:
    """A relative difference in percent, in scientific notation when it is below 0.01%."""
    return f"{rel * 100:+.2f}%" if rel == 0 or abs(rel) >= 1e-4 else f"{rel * 100:+.1e}%"


def _verdict(row: ScaleRow, rtol: float) -> str:
    if row.exact:
        return f"bit-exact with {row.exact[0]}"
    if row.closest is None:
        return "matches none"
    pct = _pct(row.rel_diff)
    if abs(row.rel_diff) <= rtol:
        return f"within tolerance of {row.closest} ({pct})"
    return f"matches none (closest: {row.closest}, {pct})"


def activation_row(tensor: str, fp32_tensor: Optional[str], dtype: str, scale, zero_point,
                   stats: Optional[TensorStats], rtol: float = DEFAULT_RTOL, shared_with: Optional[str] = None
                   ) -> ScaleRow:
    """The row of one per-tensor quantized activation with foreign ``scale`` / ``zero_point``."""
    scale = np.asarray(scale, np.float32).reshape(-1)
    zero_point = np.asarray(zero_point, np.int64).reshape(-1)
    conv = convention(dtype, zero_point)
    row = ScaleRow("activation", tensor, fp32_tensor, dtype, conv, [float(v) for v in scale],
                   [int(v) for v in zero_point], shared_with=shared_with)
    if scale.size != 1:
        row.verdict = "per-channel activation scales: not compared"
        return row
    s, zp = np.float32(scale[0]), int(zero_point[0])
    row.rmin, row.rmax, row.threshold = implied(conv, s, zp, dtype)
    if stats is None:
        row.verdict = "no FP32 tensor to compare with" if fp32_tensor is None else "no FP32 data (empty tensor)"
        return row
    mn, mx = stats.minmax.threshold()
    thresholds = stats.thresholds()
    for algo in CANDIDATES + ("unit_range",):
        if algo == "unit_range":
            if conv == "symmetric":
                continue
            cs, czp = scale_from_range(0.0, 1.0, dtype)
            ok = cs == s and czp == zp
        elif conv == "asymmetric" or algo == "min_max":
            # min_max is asymmetric even where its zero point lands on 0 or 128 (a range symmetric by chance)
            lo, hi = (mn, mx) if algo == "min_max" else (max(-thresholds[algo], mn), min(thresholds[algo], mx))
            cs, czp = scale_from_range(lo, hi, dtype)
            ok = cs == s and czp == zp
        else:
            cs = scale_from_threshold(thresholds[algo], conv, dtype)
            ok = cs == s
        row.candidates[algo] = _rel(cs, s)
        if ok:
            row.exact.append(algo)
    row.closest = min(row.candidates, key=lambda a: abs(row.candidates[a]))
    row.rel_diff = row.candidates[row.closest]
    row.verdict = _verdict(row, rtol)
    return row


def threshold_row(tensor: str, fp32_tensor: Optional[str], T: float, stats: Optional[TensorStats],
                  rtol: float = DEFAULT_RTOL) -> ScaleRow:
    """The row of an activation whose foreign parameter is a threshold T (Paddle's quantized models): candidate
    thresholds, rounded to float32, against T."""
    T32 = np.float32(T)
    row = ScaleRow("activation", tensor, fp32_tensor, "int8", "symmetric", [float(T32 / np.float32(127))], [0],
                   threshold=float(T32))
    if stats is None:
        row.verdict = "no FP32 tensor to compare with"
        return row
    for algo, t in stats.thresholds().items():
        row.candidates[algo] = _rel(np.float32(t), T32)
        if np.float32(t) == T32:
            row.exact.append(algo)
    row.exact.sort(key=THRESHOLD_ALGOS.index)
    row.closest = min(row.candidates, key=lambda a: abs(row.candidates[a]))
    row.rel_diff = row.candidates[row.closest]
    row.verdict = _verdict(row, rtol)
    return row


# ---- weights -------------------------------------------------------------------------------------------------
def weight_row(name: str, fp32_name: Optional[str], w, q, scale, zero_point, dtype: str, axis: Optional[int],
               rtol: float = DEFAULT_RTOL) -> ScaleRow:
    """An integer weight against its FP32 weight: do the foreign integers reproduce from the FP32 weight with the
    foreign scale (ONNX rounding, half to even), and is the scale max|w| (per channel along ``axis``, or per
    tensor) under the foreign convention (min/max per channel for an asymmetric one)?"""
    from ..ops.affine import quantize_affine
    scale = np.asarray(scale, np.float32).reshape(-1)
    zero_point = np.asarray(zero_point, np.int64).reshape(-1)
    conv = convention(dtype, zero_point)
    row = ScaleRow("weight", name, fp32_name, dtype, conv, [float(v) for v in scale], [int(v) for v in zero_point])
    if w is None:
        row.verdict = "no FP32 weight to compare with"
        return row
    w = np.asarray(w, np.float32)
    q = np.asarray(q)
    if w.shape != q.shape:
        row.verdict = f"FP32 weight shape {w.shape} differs from the integer weight's {q.shape}"
        return row
    per_channel = scale.size > 1
    ax = (axis + w.ndim if axis < 0 else axis) if per_channel else None
    attrs = {"dtype": dtype, "axis": ax if ax is not None else 0}
    zp_arg = zero_point.astype(dtype)
    ref = quantize_affine(None, attrs, w, scale, zp_arg if per_channel else zp_arg[:1])
    row.int_mismatches = int(np.count_nonzero(ref.astype(np.int64) != q.astype(np.int64)))
    moved = np.moveaxis(w, ax, 0).reshape(w.shape[ax], -1) if per_channel else w.reshape(1, -1)
    algo = "abs_max" if conv != "asymmetric" else "min_max"
    cands = []
    for c in range(moved.shape[0]):
        if conv == "asymmetric":
            cands.append(scale_from_range(moved[c].min(), moved[c].max(), dtype))
        else:
            cands.append((scale_from_threshold(np.abs(moved[c]).max(), conv, dtype), int(zero_point[c])))
    cs = np.array([c[0] for c in cands], np.float32)
    czp = np.array([c[1] for c in cands], np.int64)
    rel = (cs.astype(np.float64) - scale) / scale
    worst = int(np.argmax(np.abs(rel)))
    row.closest, row.rel_diff = f"{algo} ({'per channel' if per_channel else 'per tensor'})", float(rel[worst])
    row.candidates = {row.closest: row.rel_diff}
    if np.array_equal(cs, scale) and np.array_equal(czp, zero_point):
        row.exact.append(row.closest)
    row.verdict = _verdict(row, rtol)
    if row.int_mismatches:
        row.verdict += f"; {row.int_mismatches} of {q.size} integers differ from round_half_even(w / s) + zp"
    else:
        row.verdict += "; integers reproduce"
    return row


# ---- summary ---------------------------------------------------------------------------------------------------
def summarize(rows: list[ScaleRow], rtol: float = DEFAULT_RTOL) -> list[str]:
    """Sentences drawn from the rows: which candidate every compared activation (and weight) matches."""
    out = []
    for kind in ("activation", "constant", "weight"):
        compared = [r for r in rows if r.kind == kind and r.closest is not None]
        if not compared:
            continue
        n = len(compared)
        common = set(compared[0].exact)
        for r in compared[1:]:
            common &= set(r.exact)
        if common:
            names = [a for a in [c for r in compared[:1] for c in r.exact] if a in common]
            out.append(f"all {n} {kind} scales are bit-exact with {' and '.join(names)}")
            continue
        exact = sum(bool(r.exact) for r in compared)
        twins = sum(not r.exact and "the same scale as" in r.verdict for r in compared)
        within = sum(not r.exact and "the same scale as" not in r.verdict and abs(r.rel_diff) <= rtol
                     for r in compared)
        parts = [f"{exact} of {n} {kind} scales bit-exact with some candidate"]
        if twins:
            parts.append(f"{twins} carry the scale of another tensor that is")
        by_algo: dict = {}
        for r in compared:
            by_algo[r.exact[0] if r.exact else r.closest] = by_algo.get(r.exact[0] if r.exact else r.closest, 0) + 1
        if within:
            parts.append(f"{within} within {rtol:.0%}")
        parts.append(f"{n - exact - twins - within} match none")
        best = max(by_algo, key=by_algo.get)
        parts.append(f"closest most often: {best} ({by_algo[best]} of {n})")
        med = float(np.median([abs(r.rel_diff) for r in compared]))
        parts.append(f"median |difference| {_pct(med)[1:]}")
        out.append("; ".join(parts))
        if kind == "weight":
            bad = sum(bool(r.int_mismatches) for r in compared)
            if bad:
                out.append(f"{bad} of {n} weights hold integers that do not reproduce from the FP32 weight")
    return out
