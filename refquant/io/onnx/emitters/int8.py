"""Emitters of convert_to_int8's INT8 graphs: uint8 tensors with their scale and zero point, each INT8 op as
``DequantizeLinear -> Conv/Gemm -> [Relu|Clip] -> QuantizeLinear`` (fused by onnxruntime into QLinearConv),
layout changes dropped (every ONNX tensor is NCHW)."""
from __future__ import annotations

import numpy as np

from .common import _clip, _exporter, _levels, _pads4, _pair, _propagate_q


# ---- INT8 graphs ------------------------------------------------------------------------------------------
@_exporter("nhwc_to_nchw", "nchw_to_nhwc")
def _layout(ex, op):
    src = ex.x(op.inputs[0])  # every ONNX tensor is NCHW already
    ex.set_out(op.outputs[0], src)
    _propagate_q(ex, src, ex.x(op.outputs[0]))


@_exporter("quantize_int8")
def _quantize_int8(ex, op):
    _quantize_linear(ex, ex.x(op.inputs[0]), op.outputs[0], op.attrs)


def _quantize_linear(ex, src, y, a):
    """QuantizeLinear of ONNX tensor ``src`` into refquant u8 tensor ``y`` (attributes scale_inv, zero, lo, hi)."""
    s = float(np.float32(1.0) / np.float32(a["scale_inv"]))
    zero, lo, hi = int(a["zero"]), int(a["lo"]), int(a["hi"])
    src = _u8_clip(ex, src, s, zero, lo, hi, y)
    ex.node("QuantizeLinear", [src, ex.f32(np.float32(s), f"{y}@onnx_scale"),
                               ex.const(np.array(zero, np.uint8), f"{y}@onnx_zero")], [y])
    ex.qinfo[y] = (s, zero)


@_exporter("fused_scalar_chain")
def _fused_scalar_chain(ex, op):
    a = op.attrs
    y, y_q = op.outputs
    t = ex.x(op.inputs[0])
    steps = [(k, onnx) for k, onnx in (("pre_mul", "Mul"), ("pre_add", "Add")) if k in a]
    post = [(k, onnx) for k, onnx in (("post_mul", "Mul"), ("post_add", "Add")) if k in a]
    for key, onnx in steps:
        t = ex.node(onnx, [t, ex.f32(np.float32(a[key]), f"{op.name}@{key}")])
    if a.get("hard_swish"):
        u = ex.node("Add", [t, ex.f32(np.float32(a["offset"]), f"{op.name}@offset")])
        u = _clip(ex, u, 0.0, float(a["threshold"]), None, op.name)
        t = ex.node("Div", [ex.node("Mul", [t, u]), ex.f32(np.float32(a["scale"]), f"{op.name}@scale")])
    for key, onnx in post:
        t = ex.node(onnx, [t, ex.f32(np.float32(a[key]), f"{op.name}@{key}")])
    if y:
        ex.node("Identity", [t], [y])
    if y_q:
        _quantize_linear(ex, t, y_q, a)


@_exporter("fused_channel_mul")
def _fused_channel_mul(ex, op):
    y, y_q = op.outputs
    f = ex.node("Mul", [ex.x(op.inputs[0]), ex.x(op.inputs[1])], [y] if y else None)
    if y_q:
        _quantize_linear(ex, f, y_q, op.attrs)


@_exporter("fused_elementwise_add")
def _fused_add(ex, op):
    y, y_q = op.outputs
    relu = op.attrs.get("fuse_activation", "") == "relu"
    f = ex.node("Add", [ex.x(op.inputs[0]), ex.x(op.inputs[1])], [y] if y and not relu else None)
    if relu:
        f = ex.node("Relu", [f], [y] if y else None)
    if y_q:
        _quantize_linear(ex, f, y_q, op.attrs)


def _u8_clip(ex, src, s, zero, lo, hi, base, act_min=None):
    """Clamp in float to what [lo, hi] of the uint8 grid allows beyond QuantizeLinear's own [0, 255] saturation.

    The s8 grid's lo = 1 (zero 128) is left to QuantizeLinear (values below -T then land on 0, not 1: 1 LSB);
    ``act_min`` forces a lower bound (a fused relu)."""
    lo_f = act_min
    if act_min is None and lo > 0 and not (zero == 128 and lo == 1):
        lo_f = (lo - zero) * s
    hi_f = (hi - zero) * s if hi < 255 else None
    if lo_f is None and hi_f is None:
        return src
    if hi_f is None and lo_f == 0.0:
        return ex.node("Relu", [src])
    return _clip(ex, src, lo_f, hi_f, None, base)


@_exporter("dequantize_int8")
def _dequantize_int8(ex, op):
    src = ex.x(op.inputs[0])
    y = op.outputs[0]
    ex.node("DequantizeLinear", [src, ex.f32(np.float32(op.attrs["scale"]), f"{y}@onnx_scale"),
                                 ex.const(np.array(int(op.attrs["zero"]), np.uint8), f"{y}@onnx_zero")], [y])


def _int8_epilogue(ex, op, acc_out, s_x):
    """After the float op on dequantized operands: the activation clamp, then QuantizeLinear for u8 outputs."""
    a = op.attrs
    y = op.outputs[0]
    if a.get("out_dtype", "u8") == "f32":
        lo, hi = a.get("lo"), a.get("hi")
        if lo is None and hi is None:
            ex.set_out(y, acc_out)  # (the float op already wrote y: _acc_out)
        elif hi is None and float(lo) == 0.0:
            ex.node("Relu", [acc_out], [y])
        else:
            _clip(ex, acc_out, None if lo is None else float(lo), None if hi is None else float(hi), [y], y)
        return
    zero, lo, hi = int(a.get("out_zero", 0)), int(a["lo"]), int(a["hi"])
    s_y = _out_scale(ex, op)
    src = _u8_clip(ex, acc_out, s_y, zero, lo, hi, y, act_min=0.0 if (lo == zero and zero == 0) else None)
    ex.node("QuantizeLinear", [src, ex.f32(np.float32(s_y), f"{y}@onnx_scale"),
                               ex.const(np.array(zero, np.uint8), f"{y}@onnx_zero")], [y])
    ex.qinfo[y] = (s_y, zero)


def _acc_out(op):
    """Outputs for the float op of an INT8 op: its own output name when nothing follows it (f32, no clamp)."""
    a = op.attrs
    if a.get("out_dtype", "u8") == "f32" and a.get("lo") is None and a.get("hi") is None:
        return [op.outputs[0]]
    return None


def _out_scale(ex, op):
    a = op.attrs
    if "out_threshold" not in a:
        raise ex.unsupported("a u8 output without out_threshold (re-run convert_to_int8 with this refquant)")
    return float(np.float32(float(a["out_threshold"]) / _levels(int(a.get("out_zero", 0)), ex.unsigned)))


def _weight_scales(ex, op, s_x, mult):
    """Per output channel: the int8 weight sign and the positive weight scale s_w with s_x * s_w / s_y = mult."""
    mult = np.asarray(mult, np.float64).reshape(-1)
    if op.attrs.get("out_dtype", "u8") == "u8":
        s_y = _out_scale(ex, op)
        s_w = mult * s_y / s_x
    else:
        s_w = mult / s_x
    sign = np.where(s_w < 0, -1, 1).astype(np.int32)
    s_w = np.abs(s_w)
    zero = s_w == 0
    s_w = np.where(zero, 1.0, s_w).astype(np.float32)
    return sign, s_w, zero


def _int8_weights(q, sign, zero, axis):
    shape = [1] * q.ndim
    shape[axis] = -1
    w = q.astype(np.int32) * sign.reshape(shape)
    w = np.where(zero.reshape(shape), 0, w)
    return np.clip(w, -127, 127).astype(np.int8)


def _dq_params(ex, w_int8, s_w, bias_q, sign, zero, s_x, base, axis):
    """DequantizeLinear nodes for the int8 weight (per channel along ``axis``) and the int32 bias."""
    n = s_w.size
    wq, wz = ex.int8_const(w_int8, f"{base}@w_int8", (n,))
    w = ex.node("DequantizeLinear", [wq, ex.f32(s_w, f"{base}@w_scale"), wz], axis=axis)
    b = np.asarray(bias_q, np.int64).reshape(-1) * sign
    b = np.where(zero, 0, b)
    b = np.clip(b, -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    b_scale = (np.float32(s_x) * s_w).astype(np.float32)
    bq = ex.const(b, f"{base}@b_int32")
    bias = ex.node("DequantizeLinear", [bq, ex.f32(b_scale, f"{base}@b_scale"),
                                        ex.const(np.zeros(n, np.int32), f"{base}@b_zero")], axis=0)
    return w, bias


@_exporter("conv2d_int8")
def _conv2d_int8(ex, op):
    from ....reference.qgemm import unpack_b
    a = op.attrs
    x, s_x, _ = ex.dq_u8(op.inputs[0])
    packed, bias_q, mult = (ex.param(n) for n in (op.inputs[1], op.inputs[3], op.inputs[4]))
    kh, kw = (int(v) for v in a["ksize"])
    K, N = int(a["K"]), int(a["N"])
    gemm_w = unpack_b(packed, K, N)                       # (kh*kw*cin, cout), rows in (kh, kw, cin) order
    cin = K // (kh * kw)
    q = gemm_w.reshape(kh, kw, cin, N).transpose(3, 2, 0, 1)  # (cout, cin, kh, kw)
    sign, s_w, zero = _weight_scales(ex, op, s_x, mult)
    w, b = _dq_params(ex, _int8_weights(q, sign, zero, 0), s_w, bias_q, sign, zero, s_x, op.name, 0)
    acc = ex.node("Conv", [x, w, b], _acc_out(op), kernel_shape=[kh, kw], strides=_pair(a.get("strides", [1, 1])),
                  pads=_pads4(a.get("paddings", [0, 0, 0, 0])), dilations=_pair(a.get("dilations", [1, 1])))
    _int8_epilogue(ex, op, acc, s_x)


@_exporter("depthwise_conv2d_int8")
def _dw_int8(ex, op):
    a = op.attrs
    x, s_x, _ = ex.dq_u8(op.inputs[0])
    wk, bias_q, mult = (ex.param(n) for n in op.inputs[1:4])
    kh, kw, c = wk.shape
    q = np.ascontiguousarray(wk.transpose(2, 0, 1))[:, None]  # (C, 1, kh, kw)
    sign, s_w, zero = _weight_scales(ex, op, s_x, mult)
    w, b = _dq_params(ex, _int8_weights(q, sign, zero, 0), s_w, bias_q, sign, zero, s_x, op.name, 0)
    acc = ex.node("Conv", [x, w, b], _acc_out(op), group=int(c), kernel_shape=[int(kh), int(kw)],
                  strides=_pair(a.get("strides", [1, 1])), pads=_pads4(a.get("paddings", [0, 0, 0, 0])),
                  dilations=_pair(a.get("dilations", [1, 1])))
    _int8_epilogue(ex, op, acc, s_x)


@_exporter("matmul_int8")
def _matmul_int8(ex, op):
    from ....reference.qgemm import unpack_b
    a = op.attrs
    x, s_x, _ = ex.dq_u8(op.inputs[0])
    packed, bias_q, mult = (ex.param(n) for n in (op.inputs[1], op.inputs[3], op.inputs[4]))
    K, N = int(a["K"]), int(a["N"])
    q = unpack_b(packed, K, N)                             # (K, N)
    sign, s_w, zero = _weight_scales(ex, op, s_x, mult)
    w, b = _dq_params(ex, _int8_weights(q, sign, zero, 1), s_w, bias_q, sign, zero, s_x, op.name, 1)
    if ex.rank(op.inputs[0]) == 2:
        acc = ex.node("Gemm", [x, w, b], _acc_out(op))
    else:  # (B, T, K) rows: MatMul broadcasts over the leading axes, then the bias
        acc = ex.node("Add", [ex.node("MatMul", [x, w]), b], _acc_out(op))
    _int8_epilogue(ex, op, acc, s_x)


@_exporter("max_pool2d_int8")
def _max_pool_int8(ex, op):
    a = op.attrs
    src = ex.x(op.inputs[0])
    y = op.outputs[0]
    if a.get("global_pooling"):
        shape = ex.shape(op.inputs[0])  # NHWC in the refquant graph
        if shape is None or (op.inputs[0], 1) in ex.dynamic or (op.inputs[0], 2) in ex.dynamic:
            raise ex.unsupported("global uint8 max pooling needs a static spatial size")
        ex.node("MaxPool", [src], [y], kernel_shape=[int(shape[1]), int(shape[2])])
    else:
        ex.node("MaxPool", [src], [y], kernel_shape=_pair(a["ksize"]), strides=_pair(a.get("strides", a["ksize"])),
                pads=_pads4(a.get("paddings", [0, 0, 0, 0])))
    _propagate_q(ex, src, y)
