"""The graph IR: a model is a list of ops over named tensors plus a parameter store.

* :class:`Op` is pure data: ``type``, ``inputs`` / ``outputs`` (tensor names, ``""`` for an absent optional
  input), ``attrs`` (JSON-able values) and a ``name``.
* :class:`Model` holds the ops, ``params`` (name -> ndarray: weights, biases, running statistics, constants),
  the graph ``inputs`` (:class:`TensorSpec`, ``None`` for a dynamic dimension) and the ``outputs`` names.
* A tensor is produced by exactly one op, is a parameter, or is a graph input. The one exception is state:
  an op may name a parameter among its outputs (batch_norm's running mean, as Paddle's ``MeanOut``); the
  executor writes such outputs back into ``params`` in training mode only.

Passes never mutate the caller's model: :meth:`Model.copy` gives an independent one to rewrite.
"""
from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .errors import ArgumentTypeError, GraphError, ShapeError


@dataclass
class Op:
    type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    name: str = ""

    def to_json(self) -> dict:
        return {"type": self.type, "name": self.name, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": self.attrs}

    @classmethod
    def from_json(cls, d: dict) -> "Op":
        return cls(str(d["type"]), [str(s) for s in d["inputs"]], [str(s) for s in d["outputs"]],
                   dict(d.get("attrs", {})), str(d.get("name", "")))


INPUT_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
                "float32", "float64")  # what a graph input may be fed as


@dataclass
class TensorSpec:
    """A graph input: its name, shape (``None`` marks a dynamic dimension) and dtype."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def check(self, value: np.ndarray) -> None:
        if value.ndim != len(self.shape):
            raise ShapeError(f"input {self.name!r}: expected rank {len(self.shape)} {self.shape}, "
                             f"got shape {value.shape}")
        for axis, (want, got) in enumerate(zip(self.shape, value.shape)):
            if want is not None and want != got:
                raise ShapeError(f"input {self.name!r}: dimension {axis} must be {want}, got shape {value.shape}")

    def validate(self) -> None:
        """A graph input must be a plain numeric dtype the executor can feed (:data:`INPUT_DTYPES`) with a shape
        of ints in [0, 2**63) (what an array can have) or None; raises :class:`GraphError`."""
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"graph input name must be a non-empty string, got {self.name!r}")
        try:
            known = np.dtype(self.dtype).name in INPUT_DTYPES and self.dtype != ""
        except (TypeError, ValueError):
            known = False
        if not known:
            raise GraphError(f"input {self.name!r}: dtype {self.dtype!r} is not one of {INPUT_DTYPES}")
        if not isinstance(self.shape, (tuple, list)) or any(
                d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d < 2**63)
                for d in self.shape):
            raise GraphError(f"input {self.name!r}: shape {self.shape!r} must hold ints in [0, 2**63) or None")

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> "TensorSpec":
        shape = tuple(None if s is None else int(s) for s in d["shape"])
        return cls(str(d["name"]), shape, str(d.get("dtype", "float32")))


class Model:
    """A graph of ops with its parameters. ``model.run({"x": array}) -> {output_name: array}``."""

    def __init__(self, ops: Iterable[Op], params: dict[str, np.ndarray], inputs: Iterable[TensorSpec],
                 outputs: Iterable[str], *, name: str = "model", meta: Optional[dict] = None,
                 trainable: Optional[Iterable[str]] = None):
        self.ops = list(ops)
        self.params = dict(params)
        self.input_specs = list(inputs)
        self.outputs = list(outputs)
        self.name = name
        self.meta = dict(meta or {})
        # Parameters the optimizer updates; the rest (running statistics, constants) it leaves alone.
        self.trainable = set(self.params if trainable is None else trainable)
        self.validate()

    # ---- structure -------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return [spec.name for spec in self.input_specs]

    def origins(self) -> dict[str, str]:
        """Tensor name -> where its value comes from, for error messages: "a parameter", "a model input" or
        "the output of op 'conv1' (conv2d)"."""
        out = {name: "a parameter" for name in self.params}
        out.update((name, "a model input") for name in self.inputs)
        for op in self.ops:
            out.update((name, f"the output of op {op.name!r} ({op.type})") for name in op.outputs
                       if name and name not in self.params)
        return out

    def producers(self) -> dict[str, int]:
        """Tensor name -> index of the op producing it (state writes to parameters are not producers)."""
        prod: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            for out in op.outputs:
                if not out or out in self.params:
                    continue
                if out in prod:
                    raise GraphError(f"tensor {out!r} is produced twice (ops {self.ops[prod[out]].name!r} "
                                     f"and {op.name!r})")
                prod[out] = i
        return prod

    def consumers(self) -> dict[str, list[int]]:
        cons: dict[str, list[int]] = {}
        for i, op in enumerate(self.ops):
            for name in op.inputs:
                if name:
                    cons.setdefault(name, []).append(i)
        return cons

    def validate(self) -> None:
        """Check names resolve, every op's input count and attributes suit its registered definition
        (:func:`refquant.ops.registry.check_op`: missing, mistyped or out-of-range attributes, window geometry),
        and order the ops topologically. Raises :class:`GraphError` naming the op. Every Model, built, loaded
        (:func:`refquant.load`) or imported (:func:`refquant.import_onnx`), passes through here."""
        from .ops.registry import check_op
        for spec in self.input_specs:
            spec.validate()
        names = self.inputs
        if len(set(names)) != len(names):
            raise GraphError(f"duplicate graph input names: {names}")
        clash = set(names) & set(self.params)
        if clash:
            raise GraphError(f"graph inputs are also parameters: {sorted(clash)}")
        prod = self.producers()
        known = set(names) | set(self.params) | set(prod)
        for op in self.ops:
            if not isinstance(op.type, str) or not op.type:
                raise GraphError(f"op {op.name!r} has no type")
            check_op(op)
            for name in op.inputs:
                if name and name not in known:
                    raise GraphError(f"op {op.name!r} ({op.type}) reads {name!r}, which no op, parameter or "
                                     f"input provides")
        for name in self.outputs:
            if name not in known:
                raise GraphError(f"graph output {name!r} is not produced")
        self.ops = [self.ops[i] for i in self._toposort(prod)]

    def _toposort(self, prod: dict[str, int]) -> list[int]:
        """Kahn's algorithm; keeps the given order among independent ops, so it is stable."""
        deps = [{prod[n] for n in op.inputs if n in prod} for op in self.ops]
        users: dict[int, list[int]] = {}
        for i, d in enumerate(deps):
            for j in d:
                users.setdefault(j, []).append(i)
        indeg = [len(d) for d in deps]
        import heapq
        ready = [i for i, k in enumerate(indeg) if k == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for j in users.get(i, ()):
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(ready, j)
        if len(order) != len(self.ops):
            stuck = [self.ops[i].name for i, k in enumerate(indeg) if k > 0][:5]
            raise GraphError(f"graph has a cycle through ops {stuck}")
        return order

    # ---- execution -------------------------------------------------------------------------------
    def run(self, feeds: dict, outputs: Optional[Iterable[str]] = None) -> dict[str, np.ndarray]:
        """Run in inference mode; return ``{name: array}`` for ``outputs`` (default: the graph outputs)."""
        from .executor import run
        return run(self, feeds, outputs)

    def __call__(self, feeds: dict) -> dict[str, np.ndarray]:
        return self.run(feeds)

    def infer_shapes(self, input_shapes: dict[str, tuple], *, partial: bool = False) -> dict[str, tuple]:
        """Shape of every tensor for concrete input shapes.

        Ops with a shape rule use it; value-dependent ops (and those without a rule) are evaluated on zeros,
        so shape subgraphs (Shape -> Slice -> Reshape, as ONNX exporters write them) resolve too.
        ``partial=True``: input dimensions may be None (unknown), and so may the dimensions returned; a shape rule
        that fails warns instead of raising (see :func:`refquant.executor.infer_shapes`).
        """
        from .executor import infer_shapes
        return infer_shapes(self, input_shapes, partial=partial)

    # ---- bookkeeping -----------------------------------------------------------------------------
    def copy(self) -> "Model":
        """A deep copy: ops, attributes and parameter arrays are all new objects."""
        return Model([Op(op.type, list(op.inputs), list(op.outputs), _copy.deepcopy(op.attrs), op.name)
                      for op in self.ops],
                     {k: np.array(v, copy=True) for k, v in self.params.items()},
                     [TensorSpec(s.name, tuple(s.shape), s.dtype) for s in self.input_specs],
                     list(self.outputs), name=self.name, meta=_copy.deepcopy(self.meta),
                     trainable=set(self.trainable))

    def param_bytes(self) -> int:
        return int(sum(v.nbytes for v in self.params.values()))

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        return counts

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {len(self.ops)} ops, {len(self.params)} params "
                f"{self.param_bytes() / 1e6:.2f} MB, inputs={self.inputs}, outputs={self.outputs})")


def check_model(who: str, value, name: str = "model") -> Model:
    """``value`` if it is a :class:`Model`; else an :class:`~refquant.errors.ArgumentTypeError` naming the caller
    ``who`` and the argument ``name`` (the first check of every pass)."""
    if not isinstance(value, Model):
        raise ArgumentTypeError(f"{who}: {name} must be a refquant Model, got {type(value).__name__}")
    return value
