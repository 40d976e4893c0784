"""Deployment: fake-quant models to real INT8 graphs (docs/int8.md), float models to fused FP32 graphs.

- :func:`convert_to_int8` -- fold batch norm, fuse bias and relu/relu6, run conv/depthwise/matmul on the INT8
  kernels with requantization between them, float only where a float op needs it.
- :func:`optimize_fp32` -- a float model for FP32 inference: batch norm, constant affine ops and activations fused
  into the convs (``conv2d_bias_act``).
"""
from .convert import convert_to_int8
from .fp32 import optimize_fp32

__all__ = ["convert_to_int8", "optimize_fp32"]
