"""``calibrate``: run Paddle's activation calibration over batches of named tensors.

This is the collection level of ``PostTrainingQuantization`` (paddle_reference.md 1.3): for abs_max, avg, mse,
emd and min_max one pass feeds every batch to one observer per tensor; KL and hist take two passes (abs range, then
histograms on that range). As in Paddle, a tensor with zero elements in a batch is skipped for that batch and its
name recorded in ``zero_size``; a tensor that is empty in every batch gets no threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from .observers import AbsMinMaxObserver, HistogramObserver, Observer, make_observer

ALGOS = ("KL", "hist", "abs_max", "avg", "mse", "emd", "min_max")


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


def _passes(batches) -> Callable[[], Iterable[Mapping]]:
    if callable(batches):
        return batches
    if iter(batches) is batches:
        raise TypeError("calibrate: KL and hist read the batches twice; pass a list or a function returning a "
                        "fresh iterable, not an iterator")
    return lambda: batches


def calibrate(batches, algo: str = "KL", *, bits: int = 8, hist_percent: float = 0.99999,
              onnx_format: bool = False, bins: int = 2048) -> Calibration:
    """Calibrate every tensor in ``batches`` with ``algo`` (Paddle's defaults: KL, 8 bits, hist_percent 0.99999,
    2048 bins, onnx_format False; onnx_format only changes mse/emd).

    ``batches``: a list of ``{name: array}`` dicts, one per batch, or a zero-argument function returning a fresh
    iterable of them (KL and hist read the batches twice).
    """
    if algo not in ALGOS:
        raise ValueError(f"calibrate: algo must be one of {ALGOS}, got {algo!r}")
    result = Calibration(algo)
    get = _passes(batches)
    if algo in ("KL", "hist"):
        ranges: dict[str, AbsMinMaxObserver] = {}
        _feed(get(), ranges, AbsMinMaxObserver, result.zero_size)
        result.ranges = ranges
        histograms = {name: HistogramObserver.from_range(obs, bins=bins, method=algo, bits=bits,
                                                         hist_percent=hist_percent)
                      for name, obs in ranges.items()}
        _feed(get(), histograms, None, result.zero_size)
        observers: dict[str, Observer] = histograms
    else:
        observers = {}
        _feed(get(), observers, lambda: make_observer(algo, bits=bits, onnx_format=onnx_format), result.zero_size)
    result.observers = observers
    result.thresholds = {name: obs.threshold() for name, obs in observers.items() if not obs.empty}
    return result


def _feed(batches, observers: dict, new, zero_size: set):
    """Update ``observers[name]`` with every non-empty tensor of every batch; ``new`` makes a missing observer
    (None: names without one are skipped, as Paddle's pass 2 skips tensors pass 1 never saw)."""
    for batch in batches:
        for name, x in batch.items():
            if getattr(x, "size", None) == 0:
                zero_size.add(name)
                continue
            obs = observers.get(name)
            if obs is None:
                if new is None:
                    continue
                obs = observers[name] = new()
            obs.update(x)
