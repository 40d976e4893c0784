"""Calibration: Paddle 3.3.1's activation statistics and threshold algorithms, bit for bit (docs/calibration.md).

- :func:`cal_kl_threshold` -- the KL threshold search (compiled kernel or pure-Python twin, same floats).
- Observers with ``update(x)`` / ``merge(other)`` / ``threshold()``: :class:`AbsMaxObserver`,
  :class:`AbsMinMaxObserver`, :class:`MinMaxObserver`, :class:`AvgObserver`, :class:`HistogramObserver` (KL and
  hist), :class:`MSEObserver`, :class:`EMDObserver`.
- :func:`weight_threshold` -- abs_max / channel_wise_abs_max weight thresholds.
- :func:`calibrate` -- run an algorithm over batches of named tensors (two passes for KL/hist, empty tensors
  skipped as Paddle does).
- :data:`ALGORITHMS` -- every algorithm's :class:`AlgorithmSpec` (observer, passes, options), the one list the
  rest of refquant derives its algorithm lists from; :func:`register_algorithm` adds one.
"""
from .algorithms import (ALGORITHMS, AlgorithmSpec, algorithm_names, make_observer, paddle_algorithms,
                         refused_algorithms, register_algorithm, static_algorithms, two_pass_algorithms)
from .collect import ALGOS, Calibration, calibrate
from .kl import cal_kl_threshold, kl_curve
from .observers import (CHANNELWISE_AXIS1_OPS, AbsMaxObserver, AbsMinMaxObserver, AvgObserver, EMDObserver,
                        HistogramObserver, MinMaxObserver, MSEObserver, Observer, SearchObserver,
                        weight_channel_axis, weight_threshold)

__all__ = [
    "ALGORITHMS", "AlgorithmSpec", "algorithm_names", "paddle_algorithms", "refused_algorithms",
    "register_algorithm", "static_algorithms", "two_pass_algorithms", "ALGOS", "Calibration", "calibrate",
    "cal_kl_threshold", "kl_curve", "CHANNELWISE_AXIS1_OPS", "Observer",
    "AbsMaxObserver", "AbsMinMaxObserver", "MinMaxObserver", "AvgObserver", "HistogramObserver", "SearchObserver",
    "MSEObserver", "EMDObserver", "make_observer", "weight_channel_axis", "weight_threshold",
]
