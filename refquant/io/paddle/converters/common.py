"""What every Paddle converter uses: the registry (Paddle op type -> ``fn(cx, op)`` emitting refquant ops through
the conversion context :class:`~..importer._Cx`) and the attribute helpers that turn a malformed attribute into an
error naming the op."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ....errors import ModelFormatError, UnsupportedOpError
from ....ops.registry import op_types_with

CONVERTERS: dict[str, Callable] = {}
WEIGHT_OP_TYPES = op_types_with("weight_inputs")  # conv2d, depthwise_conv2d, conv2d_transpose, mul, matmul
#: Paddle's VarType.Type codes (the ``dtype`` / ``out_dtype`` attributes of cast, fill_constant, ...).
_VARTYPE_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64",
                   20: "uint8", 21: "int8"}


def converter(*types):
    """Register the decorated ``fn(cx, op)`` for each Paddle op type in ``types`` (legacy names)."""
    def wrap(fn):
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return wrap


def _ints(cx, op, key, default=None, length=None) -> list:
    v = op.attrs.get(key, default)
    if v is None:
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} is missing")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (list, tuple, int, np.integer)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be ints, got {v!r}")
    v = [v] if isinstance(v, (int, np.integer)) else list(v)
    if any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) for e in v):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be ints, got {v!r}")
    if length is not None and len(v) not in length:
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must have {' or '.join(map(str, length))} "
                               f"entries, got {v!r}")
    return [int(e) for e in v]


def _int(cx, op, key, default=None) -> int:
    v = op.attrs.get(key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be an int, got {v!r}")
    return int(v)


def _float(cx, op, key, default=None) -> float:
    v = op.attrs.get(key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be a number, got {v!r}")
    return float(v)


def _bool(cx, op, key, default=False) -> bool:
    v = op.attrs.get(key, default)
    if not isinstance(v, (bool, np.bool_, int, np.integer)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be a bool, got {v!r}")
    return bool(v)


def _str(cx, op, key, default="") -> str:
    v = op.attrs.get(key, default)
    if not isinstance(v, str):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be a string, got {v!r}")
    return v


def _unsupported(cx, op, why: str):
    return UnsupportedOpError(f"{cx.where(op)}: {why}")


def _nchw(cx, op, key="data_format"):
    fmt = op.attrs.get(key, "NCHW")
    if fmt not in ("NCHW", "AnyLayout", ""):
        raise _unsupported(cx, op, f"{key}={fmt!r} (only NCHW is supported)")


def _pads4(cx, op, key="paddings") -> list:
    """Paddle's paddings ([ph, pw] or [top, bottom, left, right]) as refquant's [top, left, bottom, right]."""
    p = _ints(cx, op, key, [0, 0], length=(2, 4))
    return [p[0], p[1], p[0], p[1]] if len(p) == 2 else [p[0], p[2], p[1], p[3]]


def _same_pads(cx, op, x: str, ksize, strides, dilations) -> list:
    """``padding_algorithm="SAME"``: Paddle's ``UpdatePaddingAndDilation`` (out = ceil(in / stride))."""
    d = cx.dims(x)
    if d is None or len(d) != 4 or min(d[2:]) < 0:
        raise _unsupported(cx, op, "padding_algorithm='SAME' needs a known input height and width")
    pads = [0, 0, 0, 0]
    for i, (n, k, s, dl) in enumerate(zip(d[2:], ksize, strides, dilations)):
        out = (n + s - 1) // s
        total = max((out - 1) * s + (k - 1) * dl + 1 - n, 0)
        pads[i], pads[i + 2] = total // 2, total - total // 2
    return pads


def _window(cx, op, x, ksize, strides, dilations):
    algo = _str(cx, op, "padding_algorithm", "EXPLICIT")
    if algo == "SAME":
        return _same_pads(cx, op, x, ksize, strides, dilations), [1, 1]
    if algo == "VALID":
        return [0, 0, 0, 0], dilations
    if algo not in ("EXPLICIT", ""):
        raise ModelFormatError(f"{cx.where(op)}: unknown padding_algorithm {algo!r}")
    return _pads4(cx, op), dilations


def _int_list_input(cx, op, slot) -> list | None:
    """An int list given as a tensor input (a parameter or a constant), or None when absent."""
    names = op.ins(slot)
    if not names:
        return None
    values = []
    for n in names:
        v = cx.const(cx.get(n))
        if v is None:
            return ["dynamic", cx.get(n)]
        if np.asarray(v).dtype.kind not in "iu" or np.ndim(v) > 1:
            raise ModelFormatError(f"{cx.where(op)}: {slot} must be an int vector, got {np.asarray(v).dtype} "
                                   f"{np.shape(v)}")
        values += [int(e) for e in np.ravel(v)]
    return values
