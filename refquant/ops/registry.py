"""The op registry: an op type is data (a name) bound to a forward, a backward and a shape rule.

Contract, in the style of an autograd ``Function``:

* ``forward(ctx, attrs, *inputs) -> array | tuple[array, ...]``. ``ctx.training`` tells train from eval,
  ``ctx.rng`` is the executor's ``numpy.random.Generator`` (dropout), and ``ctx.save(...)`` keeps what the
  backward needs (read back as ``ctx.saved``).
* ``backward(ctx, attrs, *grad_outputs) -> tuple`` with one entry per input: the vector-Jacobian product
  ``dL/dinput`` (same shape as that input) or ``None`` where the input is not differentiable (integer indices,
  shapes, running statistics). Missing output gradients arrive as zeros. ``ctx.needs_input_grad[i]`` says
  whether input ``i`` needs a gradient at all, so an op may skip an expensive one (the first conv's input).
* ``shape(attrs, *input_shapes) -> tuple[shape, ...]`` (optional): output shapes from input shapes. Ops
  whose output shape depends on input *values* (reshape fed by a shape tensor) leave it out and
  :meth:`refquant.graph.Model.infer_shapes` evaluates them instead.
* ``check(attrs, inputs) -> None`` (optional): validates the attributes the forward needs (present, of the
  right type, in range; ``inputs`` are the op's input names, ``""`` for an absent optional one) and raises a
  :class:`RefquantError` or ValueError / TypeError otherwise. :meth:`refquant.graph.Model.validate` calls it
  (through :func:`check_op`) for every op, so a model file or an imported ONNX graph with bad attributes is
  rejected when it is loaded, not first when it runs. Checks see no tensor shapes: what depends on them (a
  window against its input) is checked again by the forward.

Forwards keep the dtype of their float inputs, so the gradient checks can run in float64.

Traits, declared at ``register(...)`` and read by the passes instead of lists of op type names:

* ``int8``: the op runs one of refquant's integer kernels (u8 / s8 data, compiled with OpenMP or its NumPy twin):
  the ``*_int8`` ops of :func:`refquant.deploy.convert_to_int8` and :func:`refquant.quant.quant_post_dynamic`.
* ``fused``: several float ops of a deployment graph in one pass of a compiled OpenMP kernel (the ``fused_*``
  ops between INT8 ops, ``optimize_fp32``'s ``conv2d_bias_act``).
* ``weight_inputs``: the input positions that hold a weight post-training quantization quantizes (Paddle's
  ``SUPPORT_WEIGHT_QUANTIZATION_OP_DICT``: conv2d, depthwise_conv2d, conv2d_transpose, mul, matmul).
* ``observed``: static PTQ calibrates the op's outputs (Paddle's ``SUPPORT_ACT_QUANTIZATION_OP_DICT``, the
  ``out_threshold`` attributes and onnx_format's only_observer pairs).
* ``out_arg``: the name of the output argument in Paddle's op definition ("Out"; "Output" for convolutions, "Y"
  for the norms), for PTQ's ``<out_arg><k>_threshold`` attributes.

:func:`op_types_with` lists the op types that have a trait.
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..errors import GraphError, RefquantError, UnsupportedOpError


@dataclass(frozen=True)
class OpDef:
    type: str
    forward: Callable
    backward: Optional[Callable] = None
    shape: Optional[Callable] = None
    doc: str = ""
    check: Optional[Callable] = None
    int8: bool = False
    fused: bool = False
    weight_inputs: tuple = ()
    observed: bool = False
    out_arg: str = "Out"


OPS: dict[str, OpDef] = {}

#: The traits of :class:`OpDef` (see the module docstring).
TRAITS = ("int8", "fused", "weight_inputs", "observed", "out_arg")


def register(op_type: str, *, backward: Callable | None = None, shape: Callable | None = None,
             check: Callable | None = None, int8: bool = False, fused: bool = False, weight_inputs: tuple = (),
             observed: bool = False, out_arg: str = "Out"):
    """Decorator: ``@register("relu", observed=True, backward=relu_grad, shape=same_shape)`` on the forward
    function; the keyword-only flags are the op's traits (module docstring)."""

    def wrap(forward: Callable) -> Callable:
        if op_type in OPS:
            raise ValueError(f"op type {op_type!r} registered twice")
        OPS[op_type] = OpDef(op_type, forward, backward, shape, (forward.__doc__ or "").strip(), check,
                             bool(int8), bool(fused), tuple(weight_inputs), bool(observed), out_arg)
        return forward

    return wrap


def op_types_with(trait: str) -> tuple[str, ...]:
    """The registered op types whose ``trait`` (one of :data:`TRAITS`) is set, in registration order."""
    if trait not in TRAITS:
        raise ValueError(f"op_types_with: unknown trait {trait!r}; traits: {list(TRAITS)}")
    return tuple(t for t, d in OPS.items() if getattr(d, trait))


def has_trait(op_type: str, trait: str) -> bool:
    """Whether the registered op type ``op_type`` has ``trait`` (False for an unknown op type)."""
    opdef = OPS.get(op_type)
    return opdef is not None and bool(getattr(opdef, trait))


_ARITY: dict = {}  # forward -> (fewest, most) data inputs it takes (most None for *args)


def _arity(forward) -> tuple:
    try:
        return _ARITY[forward]
    except KeyError:
        pass
    params = list(inspect.signature(forward).parameters.values())[2:]  # after ctx, attrs
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    fewest = sum(p.default is p.empty for p in positional)
    most = None if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional)
    _ARITY[forward] = (fewest, most)
    return fewest, most


def check_op(op) -> None:
    """Validate one graph op against its registered definition: an input count the forward accepts and the
    op's ``check`` hook. Raises :class:`GraphError` naming the op; unknown op types are left to :func:`get_op`."""
    opdef = OPS.get(op.type)
    if opdef is None:
        return
    where = f"op {op.name!r} ({op.type})"
    if not isinstance(op.attrs, dict):
        raise GraphError(f"{where}: attributes must be a dict, got {type(op.attrs).__name__}")
    fewest, most = _arity(opdef.forward)
    if len(op.inputs) < fewest or (most is not None and len(op.inputs) > most):
        want = f"{fewest}" + ("" if most == fewest else f" to {most}" if most is not None else " or more")
        raise GraphError(f"{where}: takes {want} inputs, got {len(op.inputs)}")
    if opdef.check is None:
        return
    try:
        opdef.check(op.attrs, list(op.inputs))
    except (RefquantError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise GraphError(f"{where}: {exc}") from None


# ---- attribute checks, for the ``check`` hooks -----------------------------------------------------------
_MISSING = object()


def attr_int(attrs, name, default=_MISSING, lo=None, hi=None) -> int:
    """The int attribute ``name`` (or ``default`` when absent; required without one) in [lo, hi]. An integral
    float (2.0, as some writers spell ints) counts; a bool, a non-integral or non-finite number does not."""
    v = attrs.get(name, default)
    if v is _MISSING:
        raise GraphError(f"missing required attribute {name!r}")
    if isinstance(v, (bool, np.bool_)):
        raise GraphError(f"attribute {name!r} must be an int, got {v!r}")
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        v = int(v)
    if not isinstance(v, (numbers.Integral, np.integer)):
        raise GraphError(f"attribute {name!r} must be an int, got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise GraphError(f"attribute {name!r} must lie in [{lo}, {hi}], got {v}")
    return v


def attr_ints(attrs, name, default=_MISSING, lengths=None, lo=None, hi=None, scalar_ok=False) -> list:
    """The list-of-ints attribute ``name`` (``lengths``: the allowed lengths; ``scalar_ok``: one int stands for a
    list), each in [lo, hi]."""
    v = attrs.get(name, default)
    if v is _MISSING:
        raise GraphError(f"missing required attribute {name!r}")
    if scalar_ok and not isinstance(v, (list, tuple, np.ndarray)):
        v = [v]
    if not isinstance(v, (list, tuple, np.ndarray)):
        raise GraphError(f"attribute {name!r} must be a list of ints, got {v!r}")
    v = list(np.ravel(np.asarray(v, dtype=object))) if isinstance(v, np.ndarray) else list(v)
    if lengths is not None and len(v) not in lengths:
        raise GraphError(f"attribute {name!r} must have {' or '.join(map(str, lengths))} entries, got {v!r}")
    return [attr_int({name: e}, name, lo=lo, hi=hi) for e in v]


def attr_float(attrs, name, default=_MISSING, finite=True) -> float:
    """The real attribute ``name`` (finite unless ``finite=False``, where +-inf pass but NaN does not)."""
    v = attrs.get(name, default)
    if v is _MISSING:
        raise GraphError(f"missing required attribute {name!r}")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise GraphError(f"attribute {name!r} must be a number, got {v!r}")
    f = float(v)
    if math.isnan(f) or (finite and not math.isfinite(f)):
        raise GraphError(f"attribute {name!r} must be {'finite' if finite else 'a number (not NaN)'}, got {v!r}")
    return f


def attr_bool(attrs, name, default=False) -> bool:
    v = attrs.get(name, default)
    if not isinstance(v, (bool, np.bool_, numbers.Integral, np.integer)) or int(v) not in (0, 1):
        raise GraphError(f"attribute {name!r} must be a bool, got {v!r}")
    return bool(v)


def attr_choice(attrs, name, choices, default=_MISSING):
    v = attrs.get(name, default)
    if v is _MISSING:
        raise GraphError(f"missing required attribute {name!r}")
    if not isinstance(v, (str, type(None))) or v not in choices:
        raise GraphError(f"attribute {name!r} must be one of {tuple(choices)}, got {v!r}")
    return v


def get_op(op_type: str, node: str = "?") -> OpDef:
    try:
        return OPS[op_type]
    except KeyError:
        raise UnsupportedOpError(f"unsupported op type {op_type!r} (node {node!r})") from None


class OpContext:
    """What one op invocation may keep between forward and backward."""

    __slots__ = ("training", "rng", "saved", "needs_input_grad")

    def __init__(self, training: bool = False, rng=None):
        self.training = training
        self.rng = rng
        self.saved: tuple = ()
        self.needs_input_grad: tuple = ()

    def save(self, *values) -> None:
        self.saved = values


def same_shape(attrs, x, *rest):
    """Shape rule of elementwise unary ops: the output has the input's shape."""
    return (tuple(x),)


def attr_spec(**kinds) -> Callable:
    """A ``check`` hook from a declaration ``name=kind``: "int", "ints" (a list, or one int), "float" (finite),
    "real" (+-inf allowed), "bool", or a tuple of allowed strings; a trailing "!" marks a required attribute
    (the others may be absent or None)."""
    def check(attrs, inputs):
        for name, kind in kinds.items():
            required = isinstance(kind, str) and kind.endswith("!")
            kind = kind.rstrip("!") if isinstance(kind, str) else kind
            if attrs.get(name) is None:
                if required:
                    raise GraphError(f"missing required attribute {name!r}")
                continue
            if isinstance(kind, tuple):
                attr_choice(attrs, name, kind)
            elif kind == "int":
                attr_int(attrs, name)
            elif kind == "ints":
                attr_ints(attrs, name, scalar_ok=True)
            elif kind in ("float", "real"):
                attr_float(attrs, name, finite=kind == "float")
            elif kind == "bool":
                attr_bool(attrs, name)
            else:
                raise ValueError(f"attr_spec: unknown kind {kind!r}")
    return check
