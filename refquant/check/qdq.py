"""Reading a QDQ ONNX model: its quantized tensors (QuantizeLinear nodes), its integer weights (DequantizeLinear of
an integer initializer) and the FP32 tensor each of them stands for.

A QDQ graph marks every quantized tensor with a QuantizeLinear node (the float tensor in, the integer tensor out),
followed by a DequantizeLinear back to float; weights are stored as integers behind a DequantizeLinear. Scales and
zero points must be constants (initializers or Constant nodes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import ArgumentTypeError, ModelFormatError
from ..ops.affine import INT_RANGES

#: Suffixes that quantization tools add to a tensor name when they insert a QuantizeLinear in front of a graph
#: output (ONNX Runtime's quantize_static renames ``y`` to ``y_QuantizeLinear_Input``).
_RENAMED_SUFFIXES = ("_QuantizeLinear_Input",)
#: Suffixes of integer weight initializers (ONNX Runtime: ``W_quantized``; Paddle's exporter: ``W_quantized``).
_WEIGHT_SUFFIXES = ("_quantized", ".quantized")


@dataclass
class QParam:
    """One quantize or dequantize node's parameters.

    ``scale`` (float32) and ``zero_point`` (int64) are 1-D (one element per tensor, or one per channel along
    ``axis``); ``dtype`` is the integer type; ``scale_name`` names the scale constant (tools reuse one scale for
    tensors that must share it)."""
    node: str
    input: str
    output: str
    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: Optional[int]
    scale_name: str

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


def load_proto(source):
    """``(ModelProto, name)`` from a path, bytes or a ModelProto (not modified)."""
    import onnx
    if isinstance(source, onnx.ModelProto):
        return source, "<ModelProto>"
    if isinstance(source, (bytes, bytearray)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(source))
        except Exception as exc:  # protobuf raises its own DecodeError
            raise ModelFormatError(f"<bytes>: not an ONNX model ({exc})") from None
        return proto, "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is not a file")
        try:
            return onnx.load(path), path
        except Exception as exc:
            raise ModelFormatError(f"{path}: not an ONNX model ({exc})") from None
    raise ArgumentTypeError(f"expected an ONNX path, bytes or ModelProto, got {type(source).__name__}")


def constants(proto) -> dict:
    """Every initializer and Constant-node value of the main graph, by name."""
    from onnx import numpy_helper
    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _qparam(node, consts, where) -> QParam:
    scale_name = node.input[1] if len(node.input) > 1 else ""
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if scale_name not in consts or (zp_name and zp_name not in consts):
        raise ModelFormatError(f"{where}: node {node.name!r} ({node.op_type}): the scale and zero point must be "
                               f"constants")
    scale = np.asarray(consts[scale_name], dtype=np.float32).reshape(-1)
    zp_arr = np.asarray(consts[zp_name]) if zp_name else np.zeros(scale.shape, np.uint8)
    dtype = zp_arr.dtype.name
    if node.op_type == "DequantizeLinear" and node.input[0] in consts:
        dtype = np.asarray(consts[node.input[0]]).dtype.name
    if dtype not in INT_RANGES:
        raise ModelFormatError(f"{where}: node {node.name!r}: integer type {dtype} is not one refquant checks")
    axis = None
    if scale.size > 1:
        axis = 1
        for a in node.attribute:
            if a.name == "axis":
                axis = int(a.i)
    return QParam(node.name or node.output[0], node.input[0], node.output[0], scale,
                  zp_arr.astype(np.int64).reshape(-1), dtype, axis, scale_name)


def quantize_nodes(proto, where: str = "<model>") -> list[QParam]:
    """Every QuantizeLinear node of the main graph, in graph order."""
    consts = constants(proto)
    return [_qparam(n, consts, where) for n in proto.graph.node if n.op_type == "QuantizeLinear"]


def dequantize_nodes(proto, where: str = "<model>") -> dict[str, QParam]:
    """Every DequantizeLinear node of the main graph, by its output name."""
    consts = constants(proto)
    return {n.output[0]: _qparam(n, consts, where) for n in proto.graph.node if n.op_type == "DequantizeLinear"}


def fp32_name(q: QParam, proto, fp32_tensors) -> Optional[str]:
    """The FP32 model's tensor a quantized tensor stands for: the QuantizeLinear's input when the FP32 model has
    it; else the name before a tool's renaming suffix; else the float output of the DequantizeLinear that
    follows (a graph output keeps its name there). None when nothing matches."""
    if q.input in fp32_tensors:
        return q.input
    for suffix in _RENAMED_SUFFIXES:
        if q.input.endswith(suffix) and q.input[:-len(suffix)] in fp32_tensors:
            return q.input[:-len(suffix)]
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] == q.output \
                and node.output[0] in fp32_tensors:
            return node.output[0]
    return None


def weight_name(dq: QParam, fp32_params) -> Optional[str]:
    """The FP32 parameter an integer weight stands for (its name without the tool's suffix, or the dequantized
    output's name), or None."""
    names = [dq.input[:-len(s)] for s in _WEIGHT_SUFFIXES if dq.input.endswith(s)] + [dq.output, dq.input]
    return next((n for n in names if n in fp32_params), None)
