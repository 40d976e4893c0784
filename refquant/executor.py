"""One executor for every graph: float, fake-quant or INT8, in inference or training mode.

``run`` executes the ops in topological order and frees each tensor after its last reader.
``forward(..., record=True)`` keeps a tape of (op, context) pairs, and ``backward`` walks it in reverse,
calling each op's vector-Jacobian product and summing gradients where a tensor has several readers.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .errors import GraphError, RefquantError, ShapeError, UnsupportedOpError, op_error
from .graph import Model
from .ops import get_op, OpContext
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


def forward(model: Model, feeds: dict, *, training: bool = False, rng: Optional[np.random.Generator] = None,
            record: bool = False, outputs: Optional[Iterable[str]] = None, keep_all: bool = False):
    """Execute the graph. Returns ``(env, tape)``: every live tensor by name and, if ``record``, the tape.

    In training mode, outputs that name a parameter (running statistics) update ``model.params``.
    """
    env: dict[str, np.ndarray] = dict(model.params)
    env.update(_check_feeds(model, feeds))
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


def run(model: Model, feeds: dict, outputs: Optional[Iterable[str]] = None) -> dict[str, np.ndarray]:
    """Inference: ``{name: array}`` for the requested outputs (default: the graph outputs). A graph with INT8 ops
    (refquant's OpenMP kernels) runs with NumPy's BLAS on one thread (:func:`refquant.threads.blas_on_one_thread`)."""
    names = list(model.outputs if outputs is None else outputs)
    int8 = any(op.type.endswith("_int8") or op.type.startswith("fused_") for op in model.ops)
    with blas_on_one_thread(int8):
        env, _ = forward(model, feeds, outputs=names)
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


def infer_shapes(model: Model, input_shapes: dict[str, tuple]) -> dict[str, tuple]:
    """Shapes of all tensors for concrete input shapes (see :meth:`Model.infer_shapes`)."""
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
