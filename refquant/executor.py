"""One executor for every graph: float, fake-quant or INT8, in inference or training mode.

``run`` executes the ops in topological order and frees each tensor after its last reader.
``forward(..., record=True)`` keeps a tape of (op, context) pairs, and ``backward`` walks it in reverse,
calling each op's vector-Jacobian product and summing gradients where a tensor has several readers.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Optional

import numpy as np

from ._dispatch import kernel
from .errors import GraphError, RefquantError, ShapeError, UnsupportedOpError, op_error
from .graph import Model
from .ops import get_op, OpContext
from .ops.plans import freeze, frozen
from .ops.registry import has_trait
from .threads import blas_on_one_thread

# What an op raises when the values it is given do not fit it, most specific first; run() re-raises them as
# errors.op_error(type), which is still of that type.
_INPUT_ERRORS = (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, FloatingPointError,
                 ArithmeticError)


def _check_feeds(model: Model, feeds: dict) -> dict[str, np.ndarray]:
    if not isinstance(feeds, dict):
        raise TypeError(f"feeds must be a dict {{input_name: array}}, got {type(feeds).__name__}")
    unknown = set(feeds) - set(model.inputs)
    if unknown:
        raise GraphError(f"unknown feed names {sorted(unknown)}; the model's inputs are {model.inputs}")
    out = {}
    for spec in model.input_specs:
        if spec.name not in feeds:
            raise GraphError(f"missing feed {spec.name!r}; the model's inputs are {model.inputs}")
        value = np.asarray(feeds[spec.name])
        want = np.dtype(spec.dtype)
        if value.dtype != want:
            same_kind = value.dtype.kind == want.kind or (value.dtype.kind in "iu" and want.kind in "iu")
            if not same_kind:
                raise ShapeError(f"input {spec.name!r} must be {want}, got {value.dtype}")
            value = value.astype(want)
        spec.check(value)
        out[spec.name] = value
    return out


def _last_uses(model: Model, keep: set[str]) -> list[list[str]]:
    """For each op index, the tensors that may be dropped after it runs."""
    last: dict[str, int] = {}
    for i, op in enumerate(model.ops):
        for name in op.inputs:
            if name:
                last[name] = i
    drop: list[list[str]] = [[] for _ in model.ops]
    for name, i in last.items():
        if name not in keep and name not in model.params:
            drop[i].append(name)
    return drop


def freeze_inference_params(model: Model, *, shared: Optional[dict] = None) -> Model:
    """Make read-only, in place, the params that only inference ops read (ops with the ``int8`` or ``fused``
    trait: no backward, nothing updates them), so that their kernels keep what they prepare from them
    (:mod:`refquant.ops.plans`). Arrays that are also values of ``shared`` (another model's params) are left
    as they are. Returns the model."""
    readers: dict[str, list[str]] = {}
    for op in model.ops:
        for name in op.inputs:
            if name in model.params:
                readers.setdefault(name, []).append(op.type)
    others = {id(a) for a in (shared or {}).values()}
    for name, types in readers.items():
        a = model.params[name]
        if isinstance(a, np.ndarray) and not frozen(a) and id(a) not in others and \
                all(has_trait(t, "int8") or has_trait(t, "fused") for t in types):
            freeze(a)
    return model


def release_buffers() -> None:
    """Free the array buffers the executor keeps for the next run (kernels/include/floatops/arena.h: freed
    tensors of at least 256 KB, at most 128 MB in all, handed back to allocations of the same size instead of
    fresh pages that each take a page fault; 20-50 MB stay held after a run of ResNet-50 or PP-OCR)."""
    kernel("floatops").arena_release()


def forward(model: Model, feeds: dict, *, training: bool = False, rng: Optional[np.random.Generator] = None,
            record: bool = False, outputs: Optional[Iterable[str]] = None, keep_all: bool = False,
            observe: Optional[Callable[[str, np.ndarray], None]] = None):
    """Execute the graph. Returns ``(env, tape)``: every live tensor by name and, if ``record``, the tape.

    In training mode, outputs that name a parameter (running statistics) update ``model.params``.
    ``observe(name, value)`` is called on every feed and on every op output as soon as it is computed: calibration
    reads each activation while it is in cache, and the executor still frees it after its last reader.
    Arrays are allocated from the arena of :func:`release_buffers` while the graph runs.
    """
    arena = kernel("floatops")  # cached buffers for the tensors' data while the graph runs (no page faults)
    previous = arena.arena_enter()
    try:
        return _forward(model, feeds, training, rng, record, outputs, keep_all, observe)
    finally:
        arena.arena_exit(previous)


def _forward(model, feeds, training, rng, record, outputs, keep_all, observe):
    env: dict[str, np.ndarray] = dict(model.params)
    env.update(_check_feeds(model, feeds))
    if observe is not None:
        for name in model.inputs:
            observe(name, env[name])
    wanted = set(model.outputs if outputs is None else outputs)
    missing = wanted - set(env) - {n for op in model.ops for n in op.outputs}
    if missing:
        raise GraphError(f"requested outputs {sorted(missing)} are not in the graph")
    drop = None if (record or keep_all) else _last_uses(model, wanted)
    requires = set(model.trainable) if record else set()
    tape = []
    for i, op in enumerate(model.ops):
        opdef = get_op(op.type, op.name)
        ctx = OpContext(training, rng)
        args = [env[n] if n else None for n in op.inputs]
        try:
            result = opdef.forward(ctx, op.attrs, *args)
        except RefquantError:
            raise
        except Exception as exc:  # name the node: a bare numpy error deep in a graph is useless
            shapes = [None if a is None else getattr(a, "shape", None) for a in args]
            message = (f"op {op.name!r} ({op.type}) with input shapes {shapes}: {exc}"
                       f"{_nonfinite_inputs(model, op, args)}")
            base = next((t for t in _INPUT_ERRORS if isinstance(exc, t)), None)
            if base is not None:  # the input does not fit the op: a RefquantError that is still a ValueError, ...
                raise op_error(base)(message) from exc
            try:
                named = type(exc)(message)
            except Exception:  # an exception type with another constructor: keep it as it is
                raise exc
            raise named from exc
        if not isinstance(result, tuple):
            result = (result,)
        if len(result) != len(op.outputs):
            raise GraphError(f"op {op.name!r} ({op.type}) returned {len(result)} outputs, graph names "
                             f"{len(op.outputs)}")
        for name, value in zip(op.outputs, result):
            if not name:
                continue
            if name in model.params:
                if training:
                    model.params[name] = value
                    env[name] = value
                continue
            env[name] = value
            if observe is not None:
                observe(name, value)
        if record:
            ctx.needs_input_grad = tuple(bool(n) and n in requires for n in op.inputs)
            if any(ctx.needs_input_grad):
                requires.update(n for n in op.outputs if n and n not in model.params)
            tape.append((op, opdef, ctx))
        if drop is not None:
            for name in drop[i]:
                env.pop(name, None)
    return env, tape


def _nonfinite_inputs(model: Model, op, args) -> str:
    """For an op that failed: its float inputs holding NaN/Inf, each named with the op that produced it (the
    usual cause of a quantizer's "NaN or inf" error is upstream), as a message suffix; "" if there are none."""
    found = []
    for name, a in zip(op.inputs, args):
        if isinstance(a, np.ndarray) and a.dtype.kind in "fc" and a.size:
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                found.append(f"input {name!r} ({model.origins().get(name, 'no producer')}) holds {bad} NaN/Inf "
                             "value(s)")
    return "; " + "; ".join(found) if found else ""


def run(model: Model, feeds: dict, outputs: Optional[Iterable[str]] = None,
        observe: Optional[Callable[[str, np.ndarray], None]] = None) -> dict[str, np.ndarray]:
    """Inference: ``{name: array}`` for the requested outputs (default: the graph outputs); ``observe`` as in
    :func:`forward`.

    The threading rule: a graph holding an op with the ``int8`` or ``fused`` trait (:mod:`refquant.ops.registry`:
    refquant's integer kernels and the fused float ops between them, all OpenMP) runs with NumPy's BLAS on one
    thread (:func:`refquant.threads.blas_on_one_thread`), so that OpenMP and BLAS threads do not oversubscribe the
    cores; any other graph leaves BLAS as it is."""
    names = list(model.outputs if outputs is None else outputs)
    int8 = any(has_trait(op.type, "int8") or has_trait(op.type, "fused") for op in model.ops)
    with blas_on_one_thread(int8):
        env, _ = forward(model, feeds, outputs=names, observe=observe)
    return {name: env[name] for name in names}


def backward(model: Model, env: dict, tape: list, seeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reverse-mode pass: ``seeds`` maps tensors (usually the loss) to dL/dtensor; returns every gradient."""
    grads: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in seeds.items()}
    for op, opdef, ctx in reversed(tape):
        if not any(getattr(ctx, "needs_input_grad", ())):
            continue
        outs = [n for n in op.outputs]
        gys = [grads.get(n) if n and n not in model.params else None for n in outs]
        if all(g is None for g in gys):
            continue
        if opdef.backward is None:
            raise UnsupportedOpError(f"op type {op.type!r} (node {op.name!r}) has no backward")
        gys = [g if g is not None else (np.zeros_like(env[n]) if n in env else None) for g, n in zip(gys, outs)]
        gxs = opdef.backward(ctx, op.attrs, *gys)
        if len(gxs) != len(op.inputs):
            raise GraphError(f"backward of {op.type!r} returned {len(gxs)} gradients for {len(op.inputs)} inputs")
        for name, need, g in zip(op.inputs, ctx.needs_input_grad, gxs):
            if not need or g is None:
                continue
            grads[name] = grads[name] + g if name in grads else g
    return grads


def infer_shapes(model: Model, input_shapes: dict[str, tuple], *, partial: bool = False,
                 cost: str = "") -> dict[str, tuple]:
    """Shapes of all tensors for concrete input shapes (see :meth:`Model.infer_shapes`).

    ``partial=True`` accepts None for unknown input dimensions (and missing inputs: their spec's shape) and
    returns None for every dimension (or shape) that cannot be known; a shape rule that fails warns, naming the op
    and what ``cost`` says that costs, instead of raising (:class:`PartialShapes`)."""
    if partial:
        return partial_shapes(model, input_shapes, cost)
    shapes: dict[str, tuple] = {k: tuple(v.shape) for k, v in model.params.items()}
    dtypes: dict[str, np.dtype] = {k: v.dtype for k, v in model.params.items()}
    values: dict[str, np.ndarray] = dict(model.params)
    for spec in model.input_specs:
        if spec.name not in input_shapes:
            raise GraphError(f"infer_shapes needs a shape for input {spec.name!r}")
        shape = tuple(int(d) for d in input_shapes[spec.name])
        spec.check(np.empty(shape, dtype=np.uint8))
        shapes[spec.name], dtypes[spec.name] = shape, np.dtype(spec.dtype)

    def value(name):
        if name not in values:
            values[name] = np.zeros(shapes[name], dtype=dtypes[name])
        return values[name]

    # names whose values are real (parameters, the output of a `shape` op, and what is computed from those only):
    # an op reading only real values runs forward, so a reshape target computed from shapes is right
    real = set(model.params)
    for op in model.ops:
        opdef = get_op(op.type, op.name)
        from_real = op.type == "shape" or all(n in real for n in op.inputs if n)
        if opdef.shape is not None and not from_real:
            in_shapes = [shapes[n] if n else None for n in op.inputs]
            out_shapes = opdef.shape(op.attrs, *in_shapes)
            first = next((dtypes[n] for n in op.inputs if n), np.dtype("float32"))
            for name, shape in zip(op.outputs, out_shapes):
                if name and name not in model.params:
                    shapes[name], dtypes[name] = tuple(int(d) for d in shape), first
        else:
            result = opdef.forward(OpContext(False, None), op.attrs, *[value(n) if n else None for n in op.inputs])
            result = result if isinstance(result, tuple) else (result,)
            for name, v in zip(op.outputs, result):
                if name and name not in model.params:
                    v = np.asarray(v)
                    shapes[name], dtypes[name], values[name] = tuple(v.shape), v.dtype, v
                    if from_real:
                        real.add(name)
    return shapes


# ---- partial shape inference --------------------------------------------------------------------------
# A partial shape is None (rank unknown) or a tuple of ints and None (an unknown dimension, e.g. a dynamic batch).
_PROBES = (1031, 2053)      # stand-ins for unknown dims in shape rules: far apart, so no stride maps both to one size
_SMALL_PROBES = (2, 3)      # the same for ops evaluated on zeros (no shape rule): small, the arrays are allocated
_MAX_VALUES = 64            # int vectors up to this length keep their values (Shape outputs, reshape targets)
_RULE_ERRORS = _INPUT_ERRORS + (KeyError, RefquantError)


def _merge(a, b):
    """The partial shape (or value list) two probe runs agree on: a dim that changed with the probe is unknown."""
    if a is None or b is None or len(a) != len(b):
        return None
    return tuple(x if x == y else None for x, y in zip(a, b))


def _known(shape) -> bool:
    return shape is not None and None not in shape


class PartialShapes:
    """Shape inference that tolerates unknown dimensions, op by op (the ONNX importer calls :meth:`add` as it
    emits ops; :func:`infer_shapes` with ``partial=True`` runs it over a model).

    Each op's registered shape rule runs twice, with two stand-ins for every unknown dimension; a dimension that
    differs between the runs is unknown. Where a rule refuses the stand-ins (an unknown dimension broadcast
    against a known one, or squeezed), the unknown dimensions it needs are pinned to what it accepts: the known
    size of another input at the same position, else 1.
    Ops whose output shape depends on input values (reshape, expand, slice, gather, interpolation) have a
    partial rule here, and small int vectors computed from shapes (``Shape -> Gather -> Concat``) keep their
    values, None where unknown, so a reshape target computed at run time still gives known dimensions. Other ops
    without a rule run on zeros. A rule that fails warns once, naming the op and the error, and leaves the op's
    outputs unknown; ``cost`` says what that costs the caller.
    """

    def __init__(self, params: dict, cost: str = ""):
        self.params = params
        self.cost = cost
        self.shapes: dict[str, Optional[tuple]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.values: dict[str, tuple] = {}
        self._warned: set = set()

    def shape(self, name: str):
        if name in self.params:
            return tuple(np.shape(self.params[name]))
        return self.shapes.get(name)

    def value(self, name: str):
        """The values of a small int vector (None entries unknown), or None."""
        if name in self.params:
            v = np.asarray(self.params[name])
            return tuple(int(x) for x in v.ravel()) if v.dtype.kind in "iu" and v.ndim <= 1 \
                and v.size <= _MAX_VALUES else None
        return self.values.get(name)

    def set_input(self, name: str, shape, dtype) -> None:
        self.shapes[name] = None if shape is None else tuple(None if d is None else int(d) for d in shape)
        self.dtypes[name] = np.dtype(dtype)

    def add(self, op) -> None:
        opdef = get_op(op.type, op.name)
        ins = [self.shape(n) if n else None for n in op.inputs]
        try:
            outs, values, dtypes = self._infer(op, opdef, ins)
        except _RULE_ERRORS as exc:
            key = (op.type, type(exc).__name__)
            if key not in self._warned:
                self._warned.add(key)
                cost = f"; {self.cost}" if self.cost else ""
                warnings.warn(f"shape inference: op {op.name!r} ({op.type}) with input shapes {ins} failed "
                              f"({type(exc).__name__}: {exc}); its output shapes are unknown{cost}",
                              RuntimeWarning, stacklevel=2)
            outs, values, dtypes = [None] * len(op.outputs), {}, {}
        first = next((self.dtypes[n] for n in op.inputs if n in self.dtypes),
                     next((np.asarray(self.params[n]).dtype for n in op.inputs if n in self.params),
                          np.dtype("float32")))
        for i, name in enumerate(op.outputs):
            if name and name not in self.params:
                self.shapes[name] = outs[i] if i < len(outs) else None
                self.dtypes[name] = dtypes.get(i, first)
                if i in values:
                    self.values[name] = values[i]
                else:
                    self.values.pop(name, None)

    # ---- one op ---------------------------------------------------------------------------------------
    def _infer(self, op, opdef, ins):
        """(output shapes, {output index: values}, {output index: dtype})."""
        if op.type == "shape":
            x = ins[0]
            if x is None:
                return [None], {}, {0: np.dtype(np.int64)}
            dims = tuple(x)[slice(op.attrs.get("start", 0), op.attrs.get("end"))]
            return [(len(dims),)], {0: dims}, {0: np.dtype(np.int64)}
        vals = [self.value(n) if n else None for n in op.inputs]
        if all(not n or n in self.params for n in op.inputs) or \
                all(not n or vals[i] is not None for i, n in enumerate(op.inputs)):
            return self._evaluate(op, opdef, vals)     # parameters only, or small int vectors only
        if op.type in _VALUE_RULES:
            return [_VALUE_RULES[op.type](op, ins, vals)], {}, {}
        if any(n and ins[i] is None for i, n in enumerate(op.inputs)):
            return [None] * len(op.outputs), {}, {}      # an input of unknown rank
        if opdef.shape is not None:
            return self._probe_rule(op, opdef, ins), {}, {}
        return self._probe_forward(op, opdef, ins)

    def _probe_rule(self, op, opdef, ins):
        def run(pins, p):
            shapes = [None if s is None else tuple(pins.get((i, j), p) if d is None else d for j, d in enumerate(s))
                      for i, s in enumerate(ins)]
            return [tuple(int(d) for d in s) for s in opdef.shape(op.attrs, *shapes)]

        def merged(pins):
            return [_merge(a, b) for a, b in zip(run(pins, _PROBES[0]), run(pins, _PROBES[1]))]
        if all(s is None or _known(s) for s in ins):
            return run({}, None)
        try:
            return merged({})
        except _RULE_ERRORS as exc:
            first = exc
        # The rule refuses some stand-in (an unknown dim broadcast against a known one, squeezed, concatenated):
        # pin unknown dims to what the rule can accept (another input's size at that position, else 1), then
        # free again every pin the rule does not need.
        pins = dict(_pins(ins))
        try:
            merged(pins)
        except _RULE_ERRORS:
            raise first from None
        for key in list(pins):
            value = pins.pop(key)
            try:
                merged(pins)
            except _RULE_ERRORS:
                pins[key] = value
        return merged(pins)

    def _probe_forward(self, op, opdef, ins):
        runs = []
        for p in ((None,) if all(_known(s) for s in ins if s is not None) else _SMALL_PROBES):
            args = [None if not n else np.asarray(self.params[n]) if n in self.params else
                    np.zeros(tuple(p if d is None else d for d in ins[i]), self.dtypes.get(n, np.float32))
                    for i, n in enumerate(op.inputs)]
            result = opdef.forward(OpContext(False, None), op.attrs, *args)
            runs.append([np.asarray(v) for v in (result if isinstance(result, tuple) else (result,))])
        shapes = [_merge(a.shape, b.shape) for a, b in zip(runs[0], runs[-1])]
        return shapes, {}, {i: a.dtype for i, a in enumerate(runs[0])}

    def _evaluate(self, op, opdef, vals):
        """An op reading only parameters and small int vectors: run it (twice when some entries are unknown,
        each with its own stand-in, so an entry that depends on one is unknown too)."""
        unknown = any(v is not None and None in v for v in vals)
        runs = []
        for k in ((0, 1) if unknown else (0,)):
            args = []
            for i, n in enumerate(op.inputs):
                if not n:
                    args.append(None)
                elif n in self.params:
                    args.append(np.asarray(self.params[n]))
                else:
                    v = [_PROBES[k] + 7 * j if x is None else x for j, x in enumerate(vals[i])]
                    shape = self.shapes.get(n)
                    args.append(np.array(v, dtype=self.dtypes.get(n, np.int64)).reshape(
                        shape if shape is not None else (len(v),)))
            result = opdef.forward(OpContext(False, None), op.attrs, *args)
            runs.append([np.asarray(r) for r in (result if isinstance(result, tuple) else (result,))])
        shapes, values = [], {}
        for i, (a, b) in enumerate(zip(runs[0], runs[-1])):
            shapes.append(_merge(a.shape, b.shape))
            if a.dtype.kind in "iu" and a.ndim <= 1 and a.size <= _MAX_VALUES and a.shape == b.shape:
                values[i] = _merge(tuple(int(x) for x in a.ravel()), tuple(int(x) for x in b.ravel()))
        return shapes, values, {i: a.dtype for i, a in enumerate(runs[0])}


def _pins(shapes):
    """For each unknown dim (input, axis), the size it most likely has: the known size of another input at the
    same position from the end (what broadcasting and concatenation require), else 1 (what squeeze requires)."""
    known: dict[int, int] = {}
    for s in shapes:
        for j, d in enumerate(reversed(s or ())):
            if d is not None and d != 1:
                known.setdefault(j, d)
    for i, s in enumerate(shapes):
        for j, d in enumerate(s or ()):
            if d is None:
                yield (i, j), known.get(len(s) - 1 - j, 1)


# Partial rules of the ops whose output shape depends on their inputs' values (no registered shape rule).
def _reshape_rule(op, ins, vals):
    x = ins[0]
    if len(op.inputs) > 1 and op.inputs[1]:
        target = vals[1]
        if target is None:
            s = ins[1]
            return None if s is None or s[0] is None else (None,) * s[0]
    else:
        target = list(op.attrs["shape"])
    out = []
    for i, t in enumerate(target):
        if t == 0:
            out.append(x[i] if x is not None and i < len(x) else None)
        elif t is None or t < 0:
            out.append(None)
        else:
            out.append(t)
    if -1 in target and _known(x) and None not in out:
        known = math.prod(d for d in out if d is not None)
        out[list(target).index(-1)] = math.prod(x) // known if known else None
    return tuple(out)


def _slice_rule(op, ins, vals):
    x = ins[0]
    if x is None:
        return None
    attrs = dict(op.attrs)
    for i, key in enumerate(("starts", "ends", "axes", "steps"), start=1):
        if len(op.inputs) > i and op.inputs[i]:
            if vals[i] is None or None in vals[i]:
                return (None,) * len(x)
            attrs[key] = list(vals[i])
    from .ops.indexing import _slice_index
    out = list(x)
    starts = attrs["starts"]
    axes = [a % len(x) for a in attrs.get("axes") or range(len(starts))]
    steps = attrs.get("steps") or [1] * len(axes)
    for s, e, a, st in zip(starts, attrs["ends"], axes, steps):
        out[a] = None if x[a] is None else len(range(x[a])[_slice_index((x[a],), [s], [e], [0], [st])[0]])
    return tuple(out)


def _gather_rule(op, ins, vals):
    x, idx = ins
    if x is None or idx is None:
        return None
    axis = op.attrs.get("axis", 0) % len(x)
    return tuple(x[:axis]) + tuple(idx) + tuple(x[axis + 1:])


def _expand_rule(op, ins, vals):
    x = ins[0]
    target = vals[1] if len(op.inputs) > 1 and op.inputs[1] else tuple(op.attrs["shape"])
    if x is None or target is None:
        s = ins[1] if len(ins) > 1 else None
        return None if x is None or s is None or s[0] is None else (None,) * max(len(x), s[0])
    rank = max(len(x), len(target))
    x, target = (1,) * (rank - len(x)) + tuple(x), (1,) * (rank - len(target)) + tuple(target)
    return tuple(d if t == 1 else None if t is None else t for d, t in zip(x, target))


def _interp_rule(op, ins, vals):
    x = ins[0]
    if x is None:
        return None
    if len(op.inputs) > 1 and op.inputs[1]:
        hw = vals[1][-2:] if vals[1] is not None and len(vals[1]) >= 2 else (None, None)
        return (x[0], x[1]) + tuple(hw)
    if op.attrs.get("out_size") is not None:
        return (x[0], x[1]) + tuple(int(v) for v in op.attrs["out_size"])
    s = op.attrs["scale"]
    s = [s, s] if np.ndim(s) == 0 else list(s)
    return (x[0], x[1]) + tuple(None if x[2 + i] is None else int(math.floor(np.float32(x[2 + i]) * np.float32(s[i])))
                                for i in range(2))


_VALUE_RULES = {"reshape": _reshape_rule, "slice": _slice_rule, "gather": _gather_rule, "expand": _expand_rule,
                "nearest_interp": _interp_rule, "bilinear_interp": _interp_rule}


def partial_shapes(model: Model, input_shapes: Optional[dict] = None, cost: str = "") -> dict[str, Optional[tuple]]:
    """Partial shapes of every tensor (see :class:`PartialShapes`); input dims default to the model's input specs
    (None where dynamic)."""
    inference = PartialShapes(model.params, cost)
    for spec in model.input_specs:
        shape = (input_shapes or {}).get(spec.name, spec.shape)
        inference.set_input(spec.name, shape, spec.dtype)
    for op in model.ops:
        inference.add(op)
    out = {k: tuple(np.shape(v)) for k, v in model.params.items()}
    out.update(inference.shapes)
    return out
