"""``calibrate``: run Paddle's activation calibration over batches of named tensors.

This is the collection level of ``PostTrainingQuantization`` (Paddle's post_training_quantization.py): the
algorithms are those of :data:`refquant.calibration.algorithms.ALGORITHMS`; a one-pass algorithm (abs_max, avg, mse,
emd, min_max) feeds every batch to one observer per tensor, a two-pass one (KL, hist) records each tensor's abs
range first and then fills an observer built on that range (the histograms). As in Paddle, a tensor with zero
elements in a batch is skipped for that batch and its name recorded in ``zero_size``; a tensor that is empty in
every batch gets no threshold.
"""
from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from ..errors import ArgumentTypeError, NonFiniteError
from .. import _args
from . import algorithms
from .observers import AbsMinMaxObserver, Observer, TailObserver

#: The algorithm names of :data:`refquant.calibration.algorithms.ALGORITHMS` when refquant was imported.
ALGOS = algorithms.algorithm_names()


@dataclass
class Calibration:
    """What :func:`calibrate` found: ``thresholds[name]`` (a float; a ``(min, max)`` pair for min_max), the
    observer of every calibrated tensor, the pass-1 range observers (KL/hist only) and the names skipped as empty
    in at least one batch."""
    algo: str
    thresholds: dict = field(default_factory=dict)
    observers: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    zero_size: set = field(default_factory=set)

    def merge(self, other: "Calibration", *, thresholds: bool = True) -> "Calibration":
        """This calibration and ``other`` (the batches that came after ours) as one: observers merged tensor by
        tensor (exactly: two halves merged give the whole, see the observers), thresholds recomputed (with
        ``thresholds=False`` not yet: merging many shards, call :meth:`compute_thresholds` once at the end).
        KL/hist shards must share one histogram range (see :func:`calibrate`'s ``ranges``)."""
        if other.algo != self.algo:
            raise ValueError(f"Calibration.merge: algo {self.algo!r} vs {other.algo!r}")
        pairs = [(self.observers, other.observers)]
        if self.ranges is not self.observers:  # algo "ranges" keeps one dict under both names
            pairs.append((self.ranges, other.ranges))
        for mine, theirs in pairs:
            for name, obs in theirs.items():
                mine[name] = mine[name].merge(obs) if name in mine else obs
        self.zero_size |= other.zero_size
        return self.compute_thresholds() if thresholds else self

    def compute_thresholds(self) -> "Calibration":
        """``thresholds`` from the observers (a KL or mse search per tensor: the costly step)."""
        self.thresholds = {name: obs.threshold() for name, obs in self.observers.items() if not obs.empty}
        return self


def _passes(batches) -> Callable[[], Iterable[Mapping]]:
    if callable(batches):
        return batches
    if iter(batches) is batches:
        raise ArgumentTypeError("calibrate: KL and hist read the batches twice; pass a list or a function "
                                "returning a fresh iterable, not an iterator")
    return lambda: batches


def calibrate(batches, algo: str = "KL", *, bits: int = 8, hist_percent: float = 0.99999,
              onnx_format: bool = False, bins: int = 2048, ranges: Mapping | None = None,
              producers: Mapping[str, str] | None = None, thresholds: bool = True,
              keep_histograms: bool = True) -> Calibration:
    """Calibrate every tensor in ``batches`` with ``algo`` (Paddle's defaults: KL, 8 bits, hist_percent 0.99999,
    2048 bins, onnx_format False; onnx_format only changes mse/emd).

    ``batches``: a list of ``{name: array}`` dicts, one per batch, or a zero-argument function returning a fresh
    iterable of them (the two-pass algorithms, KL and hist, read the batches twice). A batch may also be a
    function ``batch(visit)`` that calls ``visit(name, array)`` on each tensor (:func:`refquant.quant.calibrate_model`
    observes each activation as the forward computes it, instead of keeping them all).

    Sharded KL/hist: ``algo="ranges"`` runs pass 1 only (``result.ranges``, thresholds = max|x|); merge the
    shards' results, then give ``ranges=merged.ranges`` to each shard's KL/hist run, which skips pass 1 and
    builds every histogram on those ranges; the merged shards then equal one run over all the data. A shard's
    own thresholds are not needed then: ``thresholds=False`` leaves them empty (merge, then
    :meth:`Calibration.compute_thresholds`).

    ``keep_histograms=False`` (hist only, with thresholds and without ``ranges``): one pass where it suffices.
    Each tensor gets a :class:`~refquant.calibration.observers.TailObserver` (range and largest values); the
    tensors whose exact threshold these cannot decide get their histograms in a second pass, over those tensors
    only. The thresholds are the same; ``observers`` then holds TailObservers, which do not merge.

    Every argument is checked before any batch is read: ``bits`` an int in [2, 16], ``hist_percent`` a float in
    (0, 1], ``bins`` an int >= 3 (KL) or >= 1. A tensor holding NaN/Inf raises
    :class:`refquant.errors.NonFiniteError` naming it, the batch and, from ``producers`` (``{tensor: "the output
    of op 'conv1' (conv2d)"}``), where it comes from.
    """
    _args.choice("calibrate", "algo", algo, algorithms.algorithm_names() + ("ranges",))
    spec = algorithms.ALGORITHMS.get(algo)
    bits = _args.bits("calibrate", "bits", bits)
    hist_percent = _args.hist_percent("calibrate", hist_percent)
    onnx_format = _args.boolean("calibrate", "onnx_format", onnx_format)
    keep_histograms = _args.boolean("calibrate", "keep_histograms", keep_histograms)
    bins = _args.integer("calibrate", "bins", bins, spec.min_bins if spec else 1)
    if ranges is not None and not (isinstance(ranges, Mapping)
                                   and all(isinstance(o, AbsMinMaxObserver) for o in ranges.values())):
        raise ArgumentTypeError("calibrate: ranges must be a {name: AbsMinMaxObserver} mapping (a "
                                "Calibration.ranges), or None")
    if not callable(batches) and not isinstance(batches, Iterable):
        raise ArgumentTypeError(f"calibrate: batches must be an iterable of {{name: array}} dicts or a function "
                                f"returning one, got {type(batches).__name__}")
    feed = functools.partial(_feed, producers=producers or {})
    result = Calibration(algo)
    two_passes = spec is not None and spec.passes == 2 and ranges is None
    get = _passes(batches) if two_passes else batches if callable(batches) else lambda: batches
    if algo == "ranges":
        feed(get(), result.ranges, AbsMinMaxObserver, result.zero_size)
        result.observers = result.ranges  # one dict under both names
        return result.compute_thresholds() if thresholds else result
    options = dict(bits=bits, onnx_format=onnx_format, bins=bins, hist_percent=hist_percent)
    if algo == "hist" and two_passes and thresholds and not keep_histograms:
        return _hist_one_pass(get, result, feed, bins, hist_percent, dict(options, producers=producers))
    if spec.passes == 2:
        observers: dict[str, Observer] = {}
        pass2 = get
        if ranges is None:
            ranges = {}
            seen, last_done = _pass1(get(), ranges, observers, lambda r: spec.new_observer(algo, r, **options),
                                     result.zero_size, producers or {})
            if last_done:
                pass2 = lambda: itertools.islice(get(), seen - 1)  # noqa: E731
        result.ranges = {name: copy.copy(obs) for name, obs in ranges.items()}
        observers = {name: observers[name] if name in observers else spec.new_observer(algo, obs, **options)
                     for name, obs in ranges.items()}
        feed(pass2(), observers, None, result.zero_size)
    else:
        observers = {}
        feed(get(), observers, lambda: spec.new_observer(algo, **options), result.zero_size)
    result.observers = observers
    return result.compute_thresholds() if thresholds else result


def _hist_one_pass(get, result: Calibration, feed, bins: int, hist_percent: float, options) -> Calibration:
    """``calibrate(..., keep_histograms=False)`` for hist: TailObservers, then histograms where they do not
    decide."""
    tails: dict[str, TailObserver] = {}
    feed(get(), tails, lambda: TailObserver(bins, hist_percent), result.zero_size)
    found = {name: obs.tail_threshold() for name, obs in tails.items() if not obs.empty}
    result.ranges = {name: copy.copy(obs.range) for name, obs in tails.items() if not obs.empty}
    left = {name: result.ranges[name] for name, t in found.items() if t is None}
    rest = calibrate(get, "hist", ranges=left, **options) if left else Calibration("hist")
    result.observers = {name: rest.observers.get(name, tails[name]) for name in result.ranges}
    result.thresholds = {name: rest.thresholds[name] if t is None else t for name, t in found.items()
                         if t is not None or name in rest.thresholds}
    return result


def _feed(batches, observers: dict, new, zero_size: set, producers: Mapping[str, str]):
    """Update ``observers[name]`` with every non-empty tensor of every batch; ``new`` makes a missing observer
    (None: names without one are skipped, as Paddle's pass 2 skips tensors pass 1 never saw). A batch is a
    ``{name: array}`` dict or a function ``batch(visit)`` calling ``visit(name, array)`` on each of its tensors."""
    for b, batch in enumerate(batches):
        _visit_all(b, batch, functools.partial(_feed_one, observers, new, zero_size, producers, b))


def _visit_all(b: int, batch, visit) -> None:
    if callable(batch):
        batch(visit)
        return
    if not isinstance(batch, Mapping):
        raise ArgumentTypeError(f"calibrate: batch {b} is a {type(batch).__name__}, not a {{name: array}} dict")
    for name, x in batch.items():
        visit(name, x)


def _pass1(batches, ranges: dict, histograms: dict, new_histogram, zero_size: set, producers) -> tuple[int, bool]:
    """Pass 1 of KL / hist: every tensor's abs range (``ranges``). When the last batch is a function (a streamed
    forward, see :func:`calibrate`), its tensors also go into ``histograms`` (made by ``new_histogram(range)``)
    right after their range update: a tensor's range is final once its last batch is seen, so pass 2 can skip
    that batch (the histogram counts do not depend on the order of the batches). Dict batches are not looked
    ahead, so they are never read earlier than before. Returns (number of batches, last one histogrammed)."""
    it, b = iter(batches), 0
    batch = next(it, _END)
    while batch is not _END:
        ahead = next(it, _END) if callable(batch) else None
        ranged = functools.partial(_feed_one, ranges, AbsMinMaxObserver, zero_size, producers, b)
        if ahead is _END:
            def both(name, x, b=b, ranged=ranged):
                ranged(name, x)
                if name in ranges and getattr(x, "size", None) != 0:
                    if name not in histograms:
                        histograms[name] = new_histogram(ranges[name])
                    _feed_one(histograms, None, zero_size, producers, b, name, x)
            _visit_all(b, batch, both)
            return b + 1, True
        _visit_all(b, batch, ranged)
        batch = next(it, _END) if ahead is None else ahead
        b += 1
    return b, False


_END = object()


def _feed_one(observers: dict, new, zero_size: set, producers: Mapping[str, str], b: int, name: str, x):
    if getattr(x, "size", None) == 0:
        zero_size.add(name)
        return
    obs = observers.get(name)
    if obs is None:
        if new is None:
            return
        obs = observers[name] = new()
    try:
        obs.update(x)
    except NonFiniteError as e:
        op = producers.get(name)
        where = f"tensor {name!r}" + (f" ({op})" if op else "")
        raise NonFiniteError(f"calibrate: {where} holds {e.count} NaN/Inf value(s) out of "
                             f"{np.size(x)} in batch {b}; calibration statistics would be meaningless",
                             tensor=name, op=op, count=e.count) from None
