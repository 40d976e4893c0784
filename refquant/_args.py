"""Argument checkers shared by the public quantization and calibration APIs.

Each returns the normalised value or raises :class:`refquant.errors.ArgumentTypeError` (wrong type) /
:class:`refquant.errors.ArgumentError` (out of range), the message naming the function and the argument. The rules:
an int is an int (a bool or a float such as 16.0 is not), a real number is finite (not NaN, not Inf, not a bool),
a list of names is a non-string iterable of strings.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Iterable, Mapping, Optional

import numpy as np

from .errors import ArgumentError, ArgumentTypeError

#: Bits of Paddle's fake-quant ops (``bit_length`` 1..16) that give at least one quantization level:
#: 1 bit has ``qmax = 2**0 - 1 = 0`` and every threshold would divide by zero.
MIN_BITS, MAX_BITS = 2, 16


def integer(who: str, name: str, value, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """``value`` as an int in ``[lo, hi]`` (either bound may be None)."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{who}: {name} must be an integer, got the bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(f"{who}: {name} must be an integer, got {type(value).__name__} {value!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ArgumentError(f"{who}: {name} must be {_range_text(lo, hi)}, got {value}")
    return value


def optional_integer(who: str, name: str, value, lo: Optional[int] = None, hi: Optional[int] = None):
    """None, or :func:`integer`."""
    return None if value is None else integer(who, name, value, lo, hi)


def bits(who: str, name: str, value) -> int:
    """Quantization bits: an int in ``[2, 16]``."""
    return integer(who, name, value, MIN_BITS, MAX_BITS)


def real(who: str, name: str, value, lo: Optional[float] = None, hi: Optional[float] = None, *,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in the interval ``lo .. hi`` (closed unless ``lo_open`` / ``hi_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{who}: {name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ArgumentError(f"{who}: {name} must be finite, got {value}")
    if ((lo is not None and (value <= lo if lo_open else value < lo))
            or (hi is not None and (value >= hi if hi_open else value > hi))):
        interval = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}" \
                   f"{')' if hi_open else ']'}"
        raise ArgumentError(f"{who}: {name} must be in {interval}, got {value}")
    return value


def hist_percent(who: str, value) -> float:
    """The hist algorithm's percentile: a finite float in ``(0, 1]``."""
    return real(who, "hist_percent", value, 0.0, 1.0, lo_open=True)


def boolean(who: str, name: str, value) -> bool:
    """A bool (NumPy bools too); no other truthy values."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{who}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def choice(who: str, name: str, value, options: Iterable):
    """``value`` if it is one of ``options``."""
    options = tuple(options)
    if not isinstance(value, str) and any(isinstance(o, str) for o in options):
        raise ArgumentTypeError(f"{who}: {name} must be one of {list(options)}, got {type(value).__name__} "
                                f"{value!r}")
    if value not in options:
        raise ArgumentError(f"{who}: {name} must be one of {list(options)}, got {value!r}")
    return value


def names(who: str, name: str, value, *, allowed: Optional[Iterable[str]] = None, empty: bool = False,
          none: bool = False) -> Optional[list]:
    """A list of strings from a non-string iterable (None allowed only if ``none``; empty only if ``empty``);
    with ``allowed``, every entry must be one of them."""
    if value is None and none:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{who}: {name} must be a list of strings, got {type(value).__name__} {value!r}")
    out = list(value)
    bad_type = [v for v in out if not isinstance(v, str)]
    if bad_type:
        raise ArgumentTypeError(f"{who}: {name} must hold strings, got {bad_type[:3]!r}")
    if not out and not empty:
        raise ArgumentError(f"{who}: {name} must not be empty")
    if allowed is not None:
        allowed = tuple(allowed)
        bad = [v for v in out if v not in allowed]
        if bad:
            raise ArgumentError(f"{who}: {name} may only hold {list(allowed)}, got {bad}")
    return out


def quant_aware_args(config, for_test, init_thresholds) -> None:
    """The argument checks of :func:`refquant.quant.quant_aware` after its model's, before any work: the types and
    ranges of the config values given (unknown keys and enum values are left to ``merge_config``)."""
    who = "quant_aware"
    if config is not None and not isinstance(config, Mapping):
        raise ArgumentTypeError(f"{who}: config must be a dict or None, got {type(config).__name__}")
    config = config or {}
    checks = {
        "weight_bits": lambda v: bits(who, "config['weight_bits']", v),
        "activation_bits": lambda v: bits(who, "config['activation_bits']", v),
        "weight_quantize_type": lambda v: choice(who, "config['weight_quantize_type']", v,
                                                 ("abs_max", "channel_wise_abs_max")),
        "activation_quantize_type": lambda v: choice(who, "config['activation_quantize_type']", v,
                                                     ("moving_average_abs_max", "range_abs_max", "abs_max")),
        "quantize_op_types": lambda v: names(who, "config['quantize_op_types']", v),
        "not_quant_pattern": lambda v: names(who, "config['not_quant_pattern']", v, empty=True),
        "window_size": lambda v: integer(who, "config['window_size']", v, 1),
        "moving_rate": lambda v: real(who, "config['moving_rate']", v, 0.0, 1.0, lo_open=True, hi_open=True),
        "weight_reduce_range": lambda v: boolean(who, "config['weight_reduce_range']", v),
        "onnx_format": lambda v: boolean(who, "config['onnx_format']", v),
        **{key: (lambda v, key=key: boolean(who, f"config[{key!r}]", v))
           for key in ("scale_trainable", "for_tensorrt", "is_full_quantize", "quant_post_first")},
    }
    for key, value in config.items():
        if key in checks:
            checks[key](value)
    boolean(who, "for_test", for_test)
    if init_thresholds is not None:
        if not isinstance(init_thresholds, Mapping):
            raise ArgumentTypeError(f"{who}: init_thresholds must be a {{activation name: threshold}} dict or None, "
                                    f"got {type(init_thresholds).__name__}")
        for name, t in init_thresholds.items():  # thresholds(ptq_model) also holds the weights' arrays
            try:
                ok = bool(np.all(np.isfinite(np.asarray(t, dtype=np.float64)) & (np.asarray(t) >= 0)))
            except (TypeError, ValueError):
                ok = False
            if isinstance(t, bool) or not ok:
                raise ArgumentError(f"{who}: init_thresholds[{name!r}] must be a finite threshold >= 0, got {t!r}")


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    return f">= {lo}" if lo is not None else f"<= {hi}"
