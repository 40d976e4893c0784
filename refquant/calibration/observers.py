"""Calibration observers: one per Paddle activation algorithm, each with ``update(x)``, ``merge(other)`` and
``threshold()`` (the torch.ao observer contract, with Paddle 3.3.1's exact math; docs/calibration.md).

| algo | observer | statistic kept | threshold |
|---|---|---|---|
| abs_max | :class:`AbsMaxObserver` | max of ``max|x|`` | that max |
| (KL/hist pass 1) | :class:`AbsMinMaxObserver` | min of ``min|x|``, max of ``max|x|`` | ``max|x|`` |
| min_max | :class:`MinMaxObserver` | min of ``min x``, max of ``max x`` | ``(min, max)`` |
| avg | :class:`AvgObserver` | per-batch mean over samples of ``max|x_sample|`` | mean of the batch values |
| KL, hist | :class:`HistogramObserver` | 2048-bin |x| histogram on a fixed range | ``cal_kl_threshold`` / percentile |
| mse, emd | :class:`MSEObserver`, :class:`EMDObserver` | each batch's best candidate and loss | best over batches |

Every ``update`` rejects an empty input or one holding NaN/Inf with a ValueError (Paddle skips zero-size tensors
one level up; :func:`refquant.calibration.calibrate` does the same). ``merge(other)`` combines two observers fed
disjoint batches: ``a.merge(b)`` equals one observer fed a's batches and then b's. For abs_max, min/max and
histograms the order does not matter; for avg it only matters through float rounding of the final mean (the
per-batch values are kept and concatenated), and for mse/emd through ties (equal losses go to the later batch).
"""
from __future__ import annotations

import numpy as np

from . import stats
from .kl import cal_kl_threshold
from .. import _args
from ..reference import histogram as _hist
from ..reference import search as _search

# Paddle's utils._channelwise_quant_axis1_ops: these ops take per-channel weight thresholds along axis 1.
CHANNELWISE_AXIS1_OPS = ("conv2d_transpose", "mul", "matmul", "matmul_v2")


class Observer:
    """Base class: ``update`` with batches, ``merge`` observers of disjoint batches, read ``threshold()``."""

    def update(self, x) -> None:
        raise NotImplementedError

    def merge(self, other: "Observer") -> "Observer":
        raise NotImplementedError

    def threshold(self):
        raise NotImplementedError

    @property
    def empty(self) -> bool:
        """True before the first update."""
        raise NotImplementedError

    def _check_merge(self, other, *fields):
        if type(other) is not type(self):
            raise TypeError(f"{type(self).__name__}.merge: cannot merge a {type(other).__name__}")
        for f in fields:
            if getattr(self, f) != getattr(other, f):
                raise ValueError(f"{type(self).__name__}.merge: {f} differs "
                                 f"({getattr(self, f)!r} vs {getattr(other, f)!r})")

    def _need_data(self):
        if self.empty:
            raise ValueError(f"{type(self).__name__}.threshold: no batch was observed")

    def _who(self, method="update"):
        return f"{type(self).__name__}.{method}"


class AbsMaxObserver(Observer):
    """abs_max: ``T = max over batches of float(max|x|)``."""

    def __init__(self):
        self.abs_max = None

    @property
    def empty(self):
        return self.abs_max is None

    def update(self, x):
        _, hi = stats.batch_abs_range(x, self._who())
        if self.abs_max is None or hi > self.abs_max:
            self.abs_max = hi

    def merge(self, other):
        self._check_merge(other)
        if other.abs_max is not None and (self.abs_max is None or other.abs_max > self.abs_max):
            self.abs_max = other.abs_max
        return self

    def threshold(self) -> float:
        self._need_data()
        return self.abs_max


class AbsMinMaxObserver(Observer):
    """KL/hist pass 1: running ``min|x|`` and ``max|x|`` (Python floats of the float32 values), the range of the
    histogram that pass 2 fills. ``threshold()`` is ``max|x|`` (the abs_max threshold)."""

    def __init__(self):
        self.abs_min = None
        self.abs_max = None

    @property
    def empty(self):
        return self.abs_min is None

    def update(self, x):
        lo, hi = stats.batch_abs_range(x, self._who())
        if self.abs_min is None:
            self.abs_min, self.abs_max = lo, hi
            return
        if lo < self.abs_min:
            self.abs_min = lo
        if hi > self.abs_max:
            self.abs_max = hi

    def merge(self, other):
        self._check_merge(other)
        if other.empty:
            return self
        if self.empty:
            self.abs_min, self.abs_max = other.abs_min, other.abs_max
            return self
        self.abs_min = min(self.abs_min, other.abs_min)
        self.abs_max = max(self.abs_max, other.abs_max)
        return self

    def range(self) -> tuple[float, float]:
        self._need_data()
        return self.abs_min, self.abs_max

    def threshold(self) -> float:
        self._need_data()
        return self.abs_max


class MinMaxObserver(Observer):
    """min_max: running signed ``min x`` and ``max x``; Paddle stores them as op attributes, no threshold.
    ``threshold()`` returns the pair ``(min, max)``."""

    def __init__(self):
        self.min = None
        self.max = None

    @property
    def empty(self):
        return self.min is None

    def update(self, x):
        x = stats.as_batch(x, self._who())
        stats.batch_abs_range(x, self._who())  # NaN/Inf check
        lo, hi = float(np.min(x)), float(np.max(x))
        if self.min is None or lo < self.min:
            self.min = lo
        if self.max is None or hi > self.max:
            self.max = hi

    def merge(self, other):
        self._check_merge(other)
        if not other.empty:
            self.min = other.min if self.empty else min(self.min, other.min)
            self.max = other.max if self.max is None else max(self.max, other.max)
        return self

    def threshold(self) -> tuple[float, float]:
        self._need_data()
        return self.min, self.max


class AvgObserver(Observer):
    """avg: per batch, x reshaped to ``(x.shape[0], -1)``, the mean (float32) over rows of each row's ``max|x|``;
    ``T`` = the float64 mean of those per-batch values. A 1-D tensor therefore averages ``|x|`` element-wise."""

    def __init__(self):
        self.batch_values: list[float] = []

    @property
    def empty(self):
        return not self.batch_values

    def update(self, x):
        x = stats.as_batch(x, self._who())
        if x.ndim == 0:
            raise ValueError(f"{self._who()}: avg needs a batch axis, got a 0-d array")
        self.batch_values.append(float(np.mean(stats.abs_max_rows(x, self._who()))))

    def merge(self, other):
        self._check_merge(other)
        self.batch_values.extend(other.batch_values)  # other's batches come after ours
        return self

    def threshold(self) -> float:
        self._need_data()
        return float(np.array(self.batch_values).mean())


class HistogramObserver(Observer):
    """KL and hist: the |x| histogram of ``bins`` bins on the fixed range ``[abs_min, abs_max]``.

    The edges are NumPy's (``np.histogram([], bins, range=(abs_min, abs_max))``); every batch adds
    ``np.histogram(|x|, bins=edges)``; values outside the range are dropped (counted in ``dropped``), as in Paddle
    when pass 2 sees data pass 1 did not. ``threshold()`` applies ``method``: "KL" (``cal_kl_threshold(hist,
    bin_width, bits)``) or "hist" (the ``hist_percent`` percentile). Both count from 0, not from ``abs_min``.
    """

    def __init__(self, abs_min: float, abs_max: float, bins: int = 2048, method: str = "KL", bits: int = 8,
                 hist_percent: float = 0.99999):
        who = "HistogramObserver"
        method = _args.choice(who, "method", method, ("KL", "hist"))
        bins = _args.integer(who, "bins", bins, 3 if method == "KL" else 1)
        bits = _args.bits(who, "bits", bits)
        hist_percent = _args.hist_percent(who, hist_percent)
        if not (np.isfinite(abs_min) and np.isfinite(abs_max)) or abs_min > abs_max:
            raise ValueError(f"HistogramObserver: need finite abs_min <= abs_max, got {abs_min}, {abs_max}")
        self.abs_min, self.abs_max = abs_min, abs_max
        self.bins, self.method, self.bits, self.hist_percent = bins, method, bits, hist_percent
        try:
            self.edges = _hist.histogram_edges(abs_min, abs_max, bins)
        except ValueError as e:  # NumPy: "Too many bins for data range"
            raise ValueError(f"HistogramObserver: the range [{abs_min!r}, {abs_max!r}] is too narrow for {bins} "
                             f"distinct float64 bins; Paddle's np.histogram fails the same way ({e})") from None
        self.hist = np.zeros(bins, dtype=np.int64)
        self.n_batches = 0
        self.dropped = 0

    @classmethod
    def from_range(cls, observer: AbsMinMaxObserver, **kwargs) -> "HistogramObserver":
        """The pass-2 observer on the range a pass-1 :class:`AbsMinMaxObserver` recorded."""
        return cls(*observer.range(), **kwargs)

    @property
    def empty(self):
        return self.n_batches == 0

    @property
    def bin_width(self):
        """``edges[1] - edges[0]`` (a NumPy float64), the unit of both thresholds."""
        return _hist.bin_width(self.edges)

    def update(self, x):
        x = stats.as_batch(x, self._who())
        counts = stats.histogram_abs(x, self.edges)
        dropped = x.size - int(counts.sum())
        if dropped:  # NaN/Inf fall in no bin: look for them (and raise) only when values were dropped
            stats.batch_abs_range(x, self._who())
        self.hist += counts
        self.dropped += dropped
        self.n_batches += 1

    def merge(self, other):
        self._check_merge(other, "bins")
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("HistogramObserver.merge: the two histograms have different ranges; build both from "
                             "the same pass-1 range")
        self.hist += other.hist
        self.dropped += other.dropped
        self.n_batches += other.n_batches
        return self

    def kl_threshold(self, bits: int | None = None):
        bits = self.bits if bits is None else _args.bits("HistogramObserver.kl_threshold", "bits", bits)
        self._need_data()
        return cal_kl_threshold(self.hist, self.bin_width, bits)

    def hist_threshold(self, hist_percent: float | None = None):
        """Paddle's hist threshold (``reference.histogram.hist_threshold``) for ``hist_percent`` in (0, 1].

        Paddle walks the float running sum of ``hist / total``; when round-off keeps it below ``hist_percent`` (for
        1.0 about every other histogram) Paddle returns ``-0.5 * bin_width``, a negative threshold. Here that case
        gives the centre of the last non-empty bin instead, where the exact cumulative fraction reaches 1; every
        other result is Paddle's float.
        """
        p = self.hist_percent if hist_percent is None else _args.hist_percent("HistogramObserver.hist_threshold",
                                                                              hist_percent)
        self._need_data()
        if not self.hist.any():
            raise ValueError(f"HistogramObserver.hist_threshold: all {self.dropped} values fell outside the range "
                             f"[{self.abs_min!r}, {self.abs_max!r}]")
        T = _hist.hist_threshold(self.hist, self.edges, p)
        if T < 0:
            last = int(np.flatnonzero(self.hist)[-1])
            T = (last + 1 - 0.5) * self.bin_width
        return T

    def threshold(self) -> float:
        return float(self.kl_threshold() if self.method == "KL" else self.hist_threshold())


class TailObserver(Observer):
    """hist in one pass, where that gives Paddle's two-pass threshold exactly: the abs range (``range``, an
    :class:`AbsMinMaxObserver`), the number of values and, per batch, every ``|x| >= cut`` (``cut`` = half the
    batch's max|x|, raised to 0.65 (1 - 2**-1.5), 3/4, 7/8 or 31/32 of it while more than 1/64 of the batch
    would be kept: the lowest cut under that cap, so that a thin tail keeps enough values to decide; a
    batch saturated at its max keeps the values in ``[(1 - 2 / bins) max, max)`` and the count of those at the max).

    The hist threshold only reads the top of the histogram: with ``C`` the largest cut, every value in a bin at or
    above ``C`` was kept, so those bins' counts are exact, and the running fraction up to any of them is exactly
    ``1 - (count above it) / n``. :meth:`tail_threshold` finds the first bin where that reaches ``hist_percent``
    and returns Paddle's threshold when the decision cannot depend on float round-off (Paddle's running sum of
    ``bins`` float fractions is within ``(bins + 2) * 2**-53`` of the exact one; the margin asked,
    ``(bins + 4) * 2**-50``, is over 8 times that); otherwise None, and the caller builds the full histogram (a
    second pass). Does not merge."""

    def __init__(self, bins: int = 2048, hist_percent: float = 0.99999):
        self.bins = _args.integer("TailObserver", "bins", bins, 1)
        self.hist_percent = _args.hist_percent("TailObserver", hist_percent)
        self.range, self.n, self.cut, self.tails, self.kept_all = AbsMinMaxObserver(), 0, 0.0, [], True
        self.at_max: list[tuple[float, int]] = []  # (max|x|, how many values equal it) of saturated batches

    @property
    def empty(self):
        return self.range.empty

    def update(self, x):
        x = stats.as_batch(x, self._who())
        self.n += x.size
        cap = max(4096, x.size // 64)
        if x.dtype not in (np.float32, np.float64) and x.size <= cap and self.kept_all:  # e.g. a shape: keep it all
            self.range.merge(_range(*stats.batch_abs_range(x, self._who())))
            self.tails.append(np.abs(x.reshape(-1).astype(np.float64)))
            return
        if not (self.kept_all and x.dtype in (np.float32, np.float64)):
            self.range.merge(_range(*stats.batch_abs_range(x, self._who())))
            self.kept_all = False
            return
        lo, hi, cut, kept = stats.abs_range_tail(x, cap, self._who())
        self.range.merge(_range(lo, hi))
        if kept is None:
            hi = x.dtype.type(hi)
            cuts = [hi - hi / 2 ** k for k in (1.5, 2, 3, 5)]
            j, kept = stats.abs_tail(x, cuts, cap)
            cut = float(cuts[j]) if kept is not None else cut
        if kept is None:  # saturated (relu6, hard sigmoid): the values at the max as a count, the rest below it
            a = np.abs(x.reshape(-1))
            cut = hi - hi / x.dtype.type(self.bins / 2)  # below the last bin's lower edge; x's dtype: exact tests
            kept = a[(a >= cut) & (a < hi)]
            if kept.size > cap:
                self.kept_all = False
                return
            self.at_max.append((float(hi), int(np.count_nonzero(a == hi))))
        self.tails.append(kept.astype(np.float64))
        self.cut = max(self.cut, float(cut))

    def merge(self, other):
        raise NotImplementedError("TailObserver.merge: one-pass hist thresholds do not merge; calibrate with "
                                  "keep_histograms=True (HistogramObserver) to merge shards")

    def tail_threshold(self) -> float | None:
        """Paddle's hist threshold, or None when the kept values cannot decide it exactly."""
        self._need_data()
        try:
            edges = _hist.histogram_edges(*self.range.range(), self.bins)
        except ValueError:
            return None
        k0 = int(np.searchsorted(edges, self.cut, side="left"))  # bins k0.. hold only kept values
        if not self.kept_all or k0 >= self.bins:
            return None
        kept = np.concatenate(self.tails)
        top = stats.histogram_abs(kept[kept >= self.cut], edges[k0:])
        for v, count in self.at_max:
            top += stats.histogram_abs(np.array([v]), edges[k0:]) * count  # no bin when v < edges[k0]
        # exact fraction up to bin k0 - 1 + i, for i = 0 .. bins - k0
        reached = (self.n - np.append(np.cumsum(top[::-1])[::-1], 0)) / self.n
        i = int(np.argmax(reached >= self.hist_percent))
        margin = (self.bins + 4) * 2.0 ** -50
        if i == 0 or reached[i] - self.hist_percent <= margin or self.hist_percent - reached[i - 1] <= margin:
            return None
        return float((k0 + i - 0.5) * _hist.bin_width(edges))

    def threshold(self) -> float:
        T = self.tail_threshold()
        if T is None:
            raise ValueError("TailObserver.threshold: the kept values do not decide the threshold exactly; "
                             "build the full histogram (HistogramObserver)")
        return T


def _range(lo: float, hi: float) -> AbsMinMaxObserver:
    r = AbsMinMaxObserver()
    r.abs_min, r.abs_max = lo, hi
    return r


class SearchObserver(Observer):
    """mse / emd: per batch, 35 candidate thresholds ``s * max|x|`` (s = 0.3 .. 0.98), each scored by the loss of
    quant-dequantizing x with it (refquant.reference.search); a candidate replaces the best when ``loss <= best``.

    Paddle keeps one best across all batches, so ``T`` is the single best candidate of any batch, ties going to the
    later one. The observer keeps each batch's own best ``(loss, T)`` in ``batch_best``; folding them in order
    with the same ``<=`` gives exactly Paddle's sequential result, which is what ``threshold()`` and ``history()``
    do, and what makes ``merge`` (concatenation: the other observer's batches come after ours) exact.
    """

    loss = "mse"

    def __init__(self, bits: int = 8, onnx_format: bool = False):
        self.bits = _args.bits(type(self).__name__, "bits", bits)
        self.onnx_format = _args.boolean(type(self).__name__, "onnx_format", onnx_format)
        self.batch_best: list[tuple[np.float32, float] | None] = []

    @property
    def empty(self):
        return not self.batch_best

    def update(self, x):
        x = stats.as_batch(x, self._who())
        _, a = stats.batch_abs_range(x, self._who())
        if a == 0.0:
            a = 1e-8
        scales = _search.candidate_scales(a)
        losses = stats.scan_losses(x.reshape(-1), scales, self.bits, self.onnx_format, self.loss, prune=True)
        best = None
        for scale, loss in zip(scales, losses):
            if loss <= (np.inf if best is None else best[0]):
                best = (loss, scale)
        self.batch_best.append(best)  # None only if every loss was NaN

    def merge(self, other):
        self._check_merge(other, "bits", "onnx_format")
        self.batch_best.extend(other.batch_best)
        return self

    def history(self) -> list[tuple[np.float32 | float, float | None]]:
        """``(best loss, T)`` after each batch, as Paddle's state evolves (inf and None before any candidate)."""
        best_loss, T = np.inf, None
        out = []
        for b in self.batch_best:
            if b is not None and b[0] <= best_loss:
                best_loss, T = b
            out.append((best_loss, T))
        return out

    @property
    def best_loss(self):
        self._need_data()
        return self.history()[-1][0]

    def threshold(self) -> float:
        self._need_data()
        T = self.history()[-1][1]
        if T is None:
            raise ValueError(f"{type(self).__name__}.threshold: every candidate loss was NaN")
        return T


class MSEObserver(SearchObserver):
    """mse: loss ``mean((x - qdq)**2)``."""
    loss = "mse"


class EMDObserver(SearchObserver):
    """emd: loss ``|mean(x) - mean(qdq)| + |std(x) - std(qdq)|``."""
    loss = "emd"


def weight_channel_axis(op_type: str) -> int:
    """The per-channel axis of a weight: 1 for conv2d_transpose, mul, matmul, matmul_v2; 0 otherwise (conv2d,
    depthwise_conv2d). Paddle's PTQ decides from the op type alone."""
    return 1 if op_type in CHANNELWISE_AXIS1_OPS else 0


def weight_threshold(w, op_type: str = "conv2d", weight_quantize_type: str = "channel_wise_abs_max",
                     axis: int | None = None):
    """Weight thresholds as Paddle's PTQ computes them.

    ``abs_max``: ``float(max|w|)``. ``channel_wise_abs_max``: a list with ``float(max|w|)`` of every slice along the
    channel axis (``axis``, default :func:`weight_channel_axis` of ``op_type``). An all-zero channel gives 0.0
    (the quantizers replace it by 1e-8 before dividing).
    """
    w = stats.as_batch(w, "weight_threshold")
    stats.batch_abs_range(w, "weight_threshold")  # NaN/Inf check
    if weight_quantize_type == "abs_max":
        return float(np.max(np.abs(w)))
    if weight_quantize_type != "channel_wise_abs_max":
        raise ValueError(f"weight_threshold: weight_quantize_type must be 'abs_max' or 'channel_wise_abs_max', "
                         f"got {weight_quantize_type!r}")
    axis = weight_channel_axis(op_type) if axis is None else axis
    if w.ndim <= axis:
        raise ValueError(f"weight_threshold: a {w.ndim}-D weight has no channel axis {axis}")
    axis = 1 if axis == 1 else 0  # slices w[:, i] for axis 1, w[i] otherwise
    per_channel = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
    return [float(v) for v in per_channel.max(axis=1)]  # max is exact: the same floats as slice by slice
