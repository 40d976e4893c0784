"""The activation calibration algorithms, in one registry: :data:`ALGORITHMS` maps each name to its
:class:`AlgorithmSpec`. Everything that lists algorithms derives the list from here: :func:`calibrate`'s and
:func:`refquant.quant.quant_post_static`'s argument checks, the CLI's ``--algo`` choices, the PaddleSlim-compatible
``quant_post_static``, the ``refquant demo`` table, ``refquant check``'s candidates and the benchmarks.

Adding an algorithm: write its :class:`~refquant.calibration.observers.Observer` and call
:func:`register_algorithm` (or add an entry below); the order of :data:`ALGORITHMS` is the order of every list.
"""
from __future__ import annotations

from dataclasses import dataclass

from .observers import (AbsMaxObserver, AvgObserver, EMDObserver, HistogramObserver, MinMaxObserver, MSEObserver,
                        Observer)

#: The options of :func:`refquant.calibration.calibrate` an observer may take (``AlgorithmSpec.options``).
OPTIONS = ("bits", "onnx_format", "bins", "hist_percent")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One calibration algorithm.

    ``observer``: the per-tensor :class:`Observer` class. ``passes``: 1 (every batch feeds ``observer(**options)``)
    or 2 (a first pass records each tensor's abs range, then ``observer.from_range(range, method=name,
    **options)`` is fed the batches again). ``options``: which of :data:`OPTIONS` the observer takes.
    ``min_bins``: the fewest histogram bins it accepts. ``not_in_ptq``: why :func:`quant_post_static` refuses the
    algorithm ("" when it takes it: the observer's ``threshold()`` is one float).
    """
    observer: type
    passes: int = 1
    options: tuple = ()
    doc: str = ""
    min_bins: int = 1
    not_in_ptq: str = ""

    def __post_init__(self):
        if not (isinstance(self.observer, type) and issubclass(self.observer, Observer)):
            raise TypeError(f"AlgorithmSpec: observer must be an Observer subclass, got {self.observer!r}")
        if self.passes not in (1, 2):
            raise ValueError(f"AlgorithmSpec: passes must be 1 or 2, got {self.passes!r}")
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"AlgorithmSpec: unknown option(s) {sorted(unknown)}; known: {list(OPTIONS)}")

    def new_observer(self, name: str, abs_range=None, **options) -> Observer:
        """A fresh observer for one tensor; ``abs_range`` is the tensor's pass-1
        :class:`~refquant.calibration.observers.AbsMinMaxObserver` (two-pass algorithms only)."""
        kwargs = {k: options[k] for k in self.options if k in options}
        if self.passes == 2:
            return self.observer.from_range(abs_range, method=name, **kwargs)
        return self.observer(**kwargs)


#: Every calibration algorithm by name, in Paddle 3.3.1's ``PostTrainingQuantization`` math.
ALGORITHMS: dict[str, AlgorithmSpec] = {
    "KL": AlgorithmSpec(HistogramObserver, 2, ("bins", "bits", "hist_percent"), min_bins=3,
                        doc="the threshold minimising the KL divergence of the |x| histogram and its quantization"),
    "hist": AlgorithmSpec(HistogramObserver, 2, ("bins", "bits", "hist_percent"),
                          doc="the hist_percent percentile of the |x| histogram"),
    "abs_max": AlgorithmSpec(AbsMaxObserver, doc="max |x| over all batches"),
    "avg": AlgorithmSpec(AvgObserver, doc="the mean over batches of the per-sample max |x|"),
    "mse": AlgorithmSpec(MSEObserver, options=("bits", "onnx_format"),
                         doc="the candidate s * max|x| with the least quantization mean squared error"),
    "emd": AlgorithmSpec(EMDObserver, options=("bits", "onnx_format"),
                         doc="the candidate s * max|x| with the least mean and std difference"),
    "min_max": AlgorithmSpec(MinMaxObserver, doc="the signed (min, max) over all batches",
                             not_in_ptq="Paddle stores the calibrated min and max as op attributes instead of "
                                        "thresholds (_save_input_threshold), a form refquant's quantized models "
                                        "do not have"),
}

#: Paddle's algorithms that refquant does not implement, with the reason.
UNIMPLEMENTED = {"ptf": "the power-of-two factor search (ptf) is not implemented in refquant"}


def register_algorithm(name: str, spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add ``name`` to :data:`ALGORITHMS` (after the others); a name already taken is a ValueError."""
    if not isinstance(name, str) or not name or name == "ranges":
        raise ValueError(f"register_algorithm: invalid algorithm name {name!r}")
    if not isinstance(spec, AlgorithmSpec):
        raise TypeError(f"register_algorithm: spec must be an AlgorithmSpec, got {type(spec).__name__}")
    if name in ALGORITHMS or name in UNIMPLEMENTED:
        raise ValueError(f"register_algorithm: algorithm {name!r} is registered already")
    ALGORITHMS[name] = spec
    return spec


def algorithm_names() -> tuple[str, ...]:
    """Every algorithm :func:`refquant.calibration.calibrate` runs."""
    return tuple(ALGORITHMS)


def static_algorithms() -> tuple[str, ...]:
    """The algorithms :func:`refquant.quant.quant_post_static` takes (one float threshold per tensor)."""
    return tuple(name for name, spec in ALGORITHMS.items() if not spec.not_in_ptq)


def two_pass_algorithms() -> tuple[str, ...]:
    """The algorithms that read the batches twice (abs range, then histograms on it)."""
    return tuple(name for name, spec in ALGORITHMS.items() if spec.passes == 2)


def refused_algorithms() -> dict[str, str]:
    """``{name: reason}`` for the Paddle algorithms :func:`quant_post_static` refuses."""
    return {**{name: spec.not_in_ptq for name, spec in ALGORITHMS.items() if spec.not_in_ptq}, **UNIMPLEMENTED}


def paddle_algorithms() -> tuple[str, ...]:
    """Every ``algo`` name Paddle's ``PostTrainingQuantization`` knows (refquant's and the unimplemented ones)."""
    return tuple(ALGORITHMS) + tuple(UNIMPLEMENTED)


def make_observer(algo: str, *, bits: int = 8, onnx_format: bool = False) -> Observer:
    """The observer of the one-pass algorithm ``algo`` (abs_max, avg, mse, emd, min_max: see :data:`ALGORITHMS`).
    KL and hist need a range first: use :class:`AbsMinMaxObserver` and then :meth:`HistogramObserver.from_range`."""
    spec = ALGORITHMS.get(algo)
    if spec is None or spec.passes != 1:
        raise ValueError(f"make_observer: unknown single-pass algo {algo!r} (KL and hist are two-pass)")
    return spec.new_observer(algo, bits=bits, onnx_format=onnx_format)
