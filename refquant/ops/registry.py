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

Forwards keep the dtype of their float inputs, so the gradient checks can run in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UnsupportedOpError


@dataclass(frozen=True)
class OpDef:
    type: str
    forward: Callable
    backward: Optional[Callable] = None
    shape: Optional[Callable] = None
    doc: str = ""


OPS: dict[str, OpDef] = {}


def register(op_type: str, *, backward: Callable | None = None, shape: Callable | None = None):
    """Decorator: ``@register("relu", backward=relu_grad, shape=same_shape)`` on the forward function."""

    def wrap(forward: Callable) -> Callable:
        if op_type in OPS:
            raise ValueError(f"op type {op_type!r} registered twice")
        OPS[op_type] = OpDef(op_type, forward, backward, shape, (forward.__doc__ or "").strip())
        return forward

    return wrap


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
