"""Converters of ONNX QuantizeLinear / DequantizeLinear to ``quantize_affine`` / ``dequantize_affine``."""
from __future__ import annotations

import numpy as np

from .common import _axis, _bad, _const_input, _converter, _shape_error, _unsupported


def _affine(im, node, quantize: bool):
    """QuantizeLinear / DequantizeLinear -> quantize_affine / dequantize_affine (ONNX semantics, integer arrays;
    see refquant.ops.affine). Scale and zero point must be constants; blocked quantization (opset 21
    ``block_size``) and 4-bit or float8 types are refused."""
    from ....ops.affine import INT_RANGES, Q_DTYPES
    x = node.inputs[0]
    scale = _const_input(im, node, 1, "the scale")
    zp = _const_input(im, node, 2, "the zero point")
    a = node.attrs
    if a.int("block_size", 0):
        raise _unsupported(node, "blocked quantization (block_size)")
    narrow = {t.name for t in im.graph.initializer
              if t.data_type in (im.onnx.TensorProto.INT4, im.onnx.TensorProto.UINT4)}
    for n in (node.input(2),) + ((x,) if not quantize else ()):
        if n in narrow:
            raise _unsupported(node, f"4-bit tensor {n!r}")
    if scale.dtype.kind != "f" or scale.ndim > 1 or scale.size == 0:
        raise _shape_error(node, f"the scale must be a non-empty float scalar or 1-D tensor, got {scale.dtype.name} "
                                 f"of shape {scale.shape}")
    if zp is not None and zp.shape != scale.shape and not (zp.size == 1 and scale.size == 1):
        raise _shape_error(node, f"zero point shape {zp.shape} differs from the scale's {scale.shape}")
    if zp is not None:
        dtype = zp.dtype.name
    elif quantize and a.int("output_dtype", 0):
        from onnx import helper
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(a.int("output_dtype"))).name
        except (KeyError, ValueError, TypeError):
            raise _bad(node, f"output_dtype {a.int('output_dtype')} is not an ONNX data type") from None
    elif not quantize and im.is_const(x):
        dtype = im.const(x).dtype.name
    else:
        dtype = "uint8"
    if dtype not in (Q_DTYPES if quantize else INT_RANGES):
        raise _unsupported(node, f"{'quantization to' if quantize else 'dequantization of'} {dtype}")
    rank = im.rank(x)
    axis = a.int("axis", 1)
    if scale.size > 1:
        if im.opset < 13:
            raise _shape_error(node, f"a per-axis scale ({scale.size} values) needs opset 13, the model declares "
                                     f"{im.opset}")
        axis = _axis(node, axis, rank)
        xs = im.shape_of(x)
        if xs is not None and xs[axis] is not None and xs[axis] != scale.size:
            raise _shape_error(node, f"{scale.size} scales for axis {axis} of size {xs[axis]}")
    attrs = {"dtype": dtype, "axis": axis}
    inputs = [x, node.inputs[1]] + ([node.inputs[2]] if zp is not None else [])
    im.emit("quantize_affine" if quantize else "dequantize_affine", inputs, [node.outputs[0]], attrs, node.name)


@_converter("QuantizeLinear", arity=(2, 3, 1))
def _quantize_linear(im, node):
    _affine(im, node, True)


@_converter("DequantizeLinear", arity=(2, 3, 1))
def _dequantize_linear(im, node):
    _affine(im, node, False)
