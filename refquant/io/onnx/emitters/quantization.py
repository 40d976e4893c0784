"""Emitters of fake quantization (quant-dequant pairs -> QuantizeLinear + DequantizeLinear) and of frozen
int8 weights (dequantize_weight, lookup_table_dequant)."""
from __future__ import annotations

import numpy as np

from .common import _clip, _exporter


# ---- fake quantization ------------------------------------------------------------------------------
@_exporter("fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_dequantize_abs_max",
           "fake_quantize_dequantize_moving_average_abs_max", "fake_quantize_dequantize_range_abs_max")
def _fake_qdq(ex, op):
    bits = int(op.attrs.get("bit_length", 8))
    round_type = int(op.attrs.get("round_type", 1))
    channel = op.type == "fake_channel_wise_quantize_dequantize_abs_max"
    axis = None
    if channel:
        axis = int(op.attrs.get("quant_axis", 0))
        if axis < 0:
            axis += ex.rank(op.inputs[0])
    scale = op.inputs[1] if len(op.inputs) > 1 and op.inputs[1] else ""
    t = ex.param(scale) if scale else None
    if scale and t is None:
        raise ex.unsupported("a threshold computed at run time")
    if t is None:
        ex.dynamic_qdq(op.inputs[0], axis, op.outputs[0], bits)
        return
    ex.qdq_int8(op.inputs[0], t, axis, round_type == 1, op.outputs[0], bits)


@_exporter("quantize_linear")
def _quantize_linear_op(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    if op.attrs.get("only_observer", False):
        ex.set_out(y, ex.x(x))
        return
    bits = int(op.attrs.get("bit_length", 8))
    if bits != 8:
        raise ex.unsupported(f"{bits}-bit quantize_linear")
    t = ex.param(op.inputs[1])
    if t is None:
        raise ex.unsupported("a threshold computed at run time")
    t = np.asarray(t, np.float32).reshape(-1)
    axis = int(op.attrs.get("quant_axis", -1))
    per_channel = axis >= 0 and t.size > 1
    scale = (np.where(t <= np.float32(1e-30), t + np.float32(1e-6), t) / np.float32(127)).astype(np.float32)
    src = ex.x(x)
    if int(op.attrs.get("round_type", 0)) == 1:
        if per_channel:
            raise ex.unsupported("per-channel quantize_linear with round_type 1")
        src = _clip(ex, src, -float(t[0]), float(t[0]), None, y)
    s = ex.f32(scale if per_channel else scale.reshape(()), f"{y}@onnx_scale")
    z = ex.const(np.zeros(t.size if per_channel else (), np.int8), f"{y}@onnx_zero")
    q = ex.fresh(f"{y}@int8")
    ex.node("QuantizeLinear", [src, s, z], [q], **({"axis": axis} if per_channel else {}))
    ex.int_view[y] = q
    if y in ex.outputs:
        ex.x(y)  # graph output: the float (integer-valued) view


@_exporter("dequantize_linear")
def _dequantize_linear(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    if op.attrs.get("only_observer", False):
        ex.set_out(y, ex.x(x))
        return
    bits = int(op.attrs.get("bit_length", 8))
    t = ex.param(op.inputs[1])
    if t is None:
        raise ex.unsupported("a threshold computed at run time")
    t = np.asarray(t, np.float32).reshape(-1)
    axis = int(op.attrs.get("quant_axis", -1))
    per_channel = axis >= 0 and t.size > 1
    qmax = (1 << (bits - 1)) - 1
    scale = (t / np.float32(qmax)).astype(np.float32)
    src = ex.int_view.get(x)
    p = ex.param(x)
    zero = None
    if src is None and p is not None and p.dtype.kind in "iu":
        if p.dtype == np.int8 or (p.dtype.kind in "iu" and np.abs(p.astype(np.int64)).max(initial=0) <= 127):
            src, zero = ex.int8_const(p, f"{x}@int8", (t.size,) if per_channel else ())
        elif p.dtype == np.int16 and ex.opset >= 21:
            src = ex.x(x)
    if src is None:
        # a float (integer-valued) tensor, or an int16 weight below opset 21: multiply
        f = ex.x(x)
        if p is not None and p.dtype.kind != "f":
            f = ex.node("Cast", [f], to=ex.onnx.TensorProto.FLOAT)
        if per_channel:
            shape = [1] * ex.rank(x)
            shape[axis] = t.size
            sc = ex.f32(t.reshape(shape), f"{y}@threshold")
        else:
            sc = ex.f32(t[0], f"{y}@threshold")
        ex.node("Div", [ex.node("Mul", [f, sc]), ex.f32(np.float32(qmax), f"{y}@qmax")], [y])
        return
    s = ex.f32(scale if per_channel else scale.reshape(()), f"{y}@onnx_scale")
    if zero is not None:
        z = zero
    else:
        zdt = ex.helper.tensor_dtype_to_np_dtype(_elem_type(ex, src))
        z = ex.const(np.zeros(t.size if per_channel else (), zdt), f"{y}@onnx_zero")
    ex.node("DequantizeLinear", [src, s, z], [y], **({"axis": axis} if per_channel else {}))


def _elem_type(ex, onnx_name):
    t = ex.inits.get(onnx_name)
    if t is not None:
        return t.data_type
    return ex.onnx.TensorProto.INT8  # QuantizeLinear outputs written by this exporter


@_exporter("dequantize_weight")
def _dequantize_weight(ex, op):
    w, y = ex.param(op.inputs[0]), op.outputs[0]
    s = ex.param(op.inputs[1])
    if w is None or s is None:
        raise ex.unsupported("dequantize_weight of a computed tensor")
    s = np.asarray(s, np.float32).reshape(-1)
    axis = int(op.attrs.get("quant_axis", -1))
    per_channel = axis >= 0 and s.size > 1
    if w.dtype == np.int8 or (w.dtype == np.int16 and ex.opset >= 21):
        sc = ex.f32(s if per_channel else s.reshape(()), f"{y}@onnx_scale")
        z = ex.const(np.zeros(s.size if per_channel else (), w.dtype), f"{y}@onnx_zero")
        ex.node("DequantizeLinear", [ex.x(op.inputs[0]), sc, z], [y], **({"axis": axis} if per_channel else {}))
        return
    # int16 below opset 21 (DequantizeLinear is int8/uint8/int32 there): Cast + Mul, the same float32 product
    f = ex.node("Cast", [ex.x(op.inputs[0])], to=ex.onnx.TensorProto.FLOAT)
    if per_channel:
        shape = [1] * w.ndim
        shape[axis] = s.size
        sc = ex.f32(s.reshape(shape), f"{y}@scale")
    else:
        sc = ex.f32(s[0], f"{y}@scale")
    ex.node("Mul", [f, sc], [y])


@_exporter("lookup_table_dequant")
def _lookup_dequant(ex, op):
    w_name, s_name, ids = op.inputs
    w, t = ex.param(w_name), ex.param(s_name)
    if w is None or t is None:
        raise ex.unsupported("lookup_table_dequant of a computed table")
    if op.attrs.get("quantize_type", "abs_max") != "abs_max":
        raise ex.unsupported(f"quantize_type {op.attrs.get('quantize_type')!r}")
    qmax = (1 << (int(op.attrs.get("quantize_bits", 8)) - 1)) - 1
    t = np.asarray(t, np.float32).reshape(-1)
    y = op.outputs[0]
    pad = op.attrs.get("padding_idx", -1)
    pad = int(pad) if pad is not None else -1
    rows = ex.node("Cast", [ex.node("Gather", [ex.x(w_name), ex.x(ids)], axis=0)], to=ex.onnx.TensorProto.FLOAT)
    if t.size == 1:
        tt = ex.f32(t[0], f"{y}@threshold")
    else:
        tt = ex.node("Unsqueeze", [ex.node("Gather", [ex.f32(t, f"{y}@thresholds"), ex.x(ids)], axis=0),
                                   ex.i64([-1], f"{y}@axes")])
    out = ex.node("Div", [ex.node("Mul", [tt, rows]), ex.f32(np.float32(qmax), f"{y}@qmax")],
                  None if pad >= 0 else [y])
    if pad >= 0:
        mask = ex.node("Unsqueeze", [ex.node("Equal", [ex.x(ids), ex.const(np.array(pad, np.int64), f"{y}@pad")]),
                                     ex.i64([-1], f"{y}@axes2")])
        ex.node("Where", [mask, ex.f32(np.float32(0), f"{y}@zero"), out], [y])
