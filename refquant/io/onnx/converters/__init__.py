"""ONNX -> refquant converters, one module per op family; each registers its functions in :data:`CONVERTERS`
(ONNX op type -> ``fn(importer, node)`` emitting refquant ops) with its input / output counts in :data:`ARITY`.
Adding an ONNX op: a ``@_converter("OpType", arity=...)`` function in the family's module (or a row of
:mod:`..optable` for a 1:1 unary / binary op), and a test in ``tests/test_onnx_import.py``."""
from .common import ANY, ARITY, CONVERTERS  # noqa: F401
from . import conv_pool, elementwise, matmul, normalization, quantization, shape  # noqa: F401  (they register)
