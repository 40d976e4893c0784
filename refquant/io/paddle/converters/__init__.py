"""Paddle -> refquant converters, one module per op family; each registers its functions in :data:`CONVERTERS`
(Paddle op type, legacy vocabulary -> ``fn(cx, op)`` emitting refquant ops with ``cx.emit``). Most Paddle ops are
refquant ops of the same name with their attributes normalised (paddings to [top, left, bottom, right],
``padding_algorithm`` resolved); the others are written with existing ops (``leaky_relu`` as
``relu(x) - a * relu(-x)``, ``squeeze2`` as ``squeeze``, ``split`` as slices).
Adding a Paddle op: a ``@converter("op_type")`` function in the family's module (and a row of
:data:`..pir.PIR_OPS` when PIR names it differently), and a test in ``tests/test_paddle_import.py``."""
from .common import CONVERTERS, WEIGHT_OP_TYPES, converter  # noqa: F401
from . import conv_pool, elementwise, matmul, normalization, quantization, shape  # noqa: F401  (they register)
