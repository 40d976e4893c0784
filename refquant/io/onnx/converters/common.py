"""What every converter uses: the registry (ONNX op type -> function emitting refquant ops) and the checks
that turn a malformed node into an error naming it."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ....errors import ModelFormatError, ShapeError, UnsupportedOpError
from ..loader import _normalize_const

FLT_MAX = float(np.finfo(np.float32).max)
CONVERTERS: dict[str, Callable] = {}   # ONNX op type -> fn(importer, node)
ARITY: dict[str, tuple] = {}          # ONNX op type -> (required inputs, most inputs, most outputs)
ANY = 2 ** 31
_MAX_RANK = 64                      # NumPy's limit on the number of dimensions


def _converter(op_type: str, arity: tuple, fn: Optional[Callable] = None):
    """Register ``fn`` (or the decorated function) for ONNX ``op_type``, with its arity (required inputs, most
    inputs, most outputs; :data:`ANY` for no limit) as the newest opset defines it (older opsets:
    ``importer._arity``)."""
    def wrap(fn):
        CONVERTERS[op_type] = fn
        ARITY[op_type] = arity
        return fn
    return wrap if fn is None else wrap(fn)


def _unsupported(node, why: str):
    return UnsupportedOpError(f"{node.where}: unsupported: {why}")


def _bad(node, why: str):
    return ModelFormatError(f"{node.where}: {why}")


def _shape_error(node, why: str):
    return ShapeError(f"{node.where}: {why}")


def _const_input(im, node, i: int, what: str):
    """The value of optional input ``i`` (None when absent); it must be a constant."""
    name = node.input(i)
    if not name:
        return None
    if not im.is_const(name):
        raise _unsupported(node, f"{what} must be a constant, but {name!r} is computed at run time")
    return im.const(name)


def _int_values(node, v, what: str, ndim_max: int = 1) -> list[int]:
    """The values of an integer constant input (a scalar or a 1-D tensor) as Python ints."""
    v = np.asarray(v)
    if v.dtype.kind not in "iu" or v.ndim > ndim_max:
        raise _shape_error(node, f"{what} must be a {'1-D ' if ndim_max == 1 else ''}integer tensor, got "
                                 f"{v.dtype.name} of shape {v.shape}")
    return [int(x) for x in v.ravel()]


def _axis(node, axis: int, rank: Optional[int], what: str = "axis", inclusive: bool = False) -> int:
    """``axis`` in [0, rank) ([0, rank] when ``inclusive``); unchanged when the rank is unknown."""
    if rank is None:
        if abs(axis) > _MAX_RANK:
            raise _shape_error(node, f"{what} {axis} is out of range")
        return axis
    hi = rank + 1 if inclusive else rank
    if not -hi <= axis < hi or (inclusive and axis == -hi and rank == 0):
        raise _shape_error(node, f"{what} {axis} is out of range for an input of rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes(node, axes: list, rank: Optional[int], what: str = "axes") -> list:
    out = [_axis(node, a, rank, what) for a in axes]
    if rank is not None and len(set(out)) != len(out):
        raise _shape_error(node, f"{what} {axes} repeat an axis")
    return out


def _check_shape(node, name: str, shape, want_rank: Optional[int] = None, what: str = "input"):
    if shape is not None and want_rank is not None and len(shape) != want_rank:
        raise _shape_error(node, f"{what} {name!r} must have rank {want_rank}, got shape {tuple(shape)}")


def _check_broadcast(node, a, b) -> None:
    if a is None or b is None:
        return
    for x, y in zip(reversed(a), reversed(b)):
        if x is not None and y is not None and x != y and 1 not in (x, y):
            raise _shape_error(node, f"input shapes {tuple(a)} and {tuple(b)} do not broadcast")


def _rewrite_const(im, node, name: str, value) -> str:
    """Store a transformed constant: under the same name when this node is its only reader, else a new one."""
    if im.use_count.get(name, 0) <= 1 and name not in im.graph_outputs:
        return im.add_const(name, _normalize_const(value, node.where))
    return im.add_const(im.fresh(f"{name}.{node.name}"), _normalize_const(value, node.where))
