"""refquant -> ONNX emitters, one module per op family; each registers its functions in :data:`EXPORTERS`
(refquant op type -> ``fn(exporter, op)`` writing ONNX nodes)."""
from .common import EXPORTERS  # noqa: F401
from . import conv_pool, elementwise, int8, matmul, normalization, quantization, shape  # noqa: F401  (they register)
