"""Ops as data: each module registers forwards, backwards and shape rules by op type name.

Op type names follow Paddle's (``conv2d``, ``depthwise_conv2d``, ``mul``, ``elementwise_add``, ``pool2d``,
``batch_norm``, ``lookup_table`` ...), so PaddleSlim's ``quantizable_op_type`` lists apply unchanged.
"""
from .registry import OPS, OpDef, OpContext, check_op, get_op, register  # noqa: F401
from . import (activations, elementwise, conv, norm, pool, nn, shape, reduce, loss,  # noqa: F401,E402
               indexing, resize, conv_transpose, quant, dequant, int8, qat, dynamic_int8)
from . import affine  # noqa: F401,E402
