"""Paddle's quantization ops, in the form :func:`refquant.quant.quant_post_static` produces.

Quantized programs (docs/paddle_import.md, "Quantized programs") become refquant's quantized form:

* freeze form (``onnx_format=False``): ``fake_quantize_*_abs_max(X, InScale) -> q`` becomes
  ``fake_quantize_dequantize_abs_max(X, <X>@scale)``; the integer weight of the conv / mul that reads it is
  multiplied back by its channel thresholds (``Scales[0]`` of the ``fake_channel_wise_dequantize_max_abs`` that
  follows, or ``quant_bits`` / ``max_range`` of ``fake_dequantize_max_abs``) and the dequantize op disappears;
* ONNX form: ``quantize_linear`` / ``dequantize_linear`` are refquant ops of the same name and meaning
  (thresholds as ``Scale``), int8 weights stay int8 behind their ``dequantize_linear``.
"""
from __future__ import annotations

import math

import numpy as np

from ....errors import ModelFormatError
from ....reference import rounding
from .common import WEIGHT_OP_TYPES, _bool, _float, _int, _ints, _unsupported, converter


def _scale_value(cx, op, name, what="scale") -> np.ndarray:
    v = cx.const(name)
    if v is None:
        raise _unsupported(cx, op, f"the {what} {name!r} is computed at run time (not a saved inference program)")
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ModelFormatError(f"{cx.where(op)}: the {what} {name!r} must be finite and >= 0, got {v[:4]}")
    return v


def _bits(cx, op, key="bit_length") -> int:
    b = _int(cx, op, key, 8)
    if not 2 <= b <= 16:
        raise ModelFormatError(f"{cx.where(op)}: {key} {b} is outside [2, 16]")
    return b


def _scale_param(cx, x: str, t: float) -> str:
    """``<x>@scale`` holding threshold ``t`` (refquant's name for an activation threshold)."""
    name = f"{x}@scale"
    if name in cx.params and np.asarray(cx.params[name]).reshape(-1).tolist() != [np.float32(t)]:
        return cx.param(name, np.array([t], np.float32))
    cx.params[name] = np.array([t], np.float32)
    cx.written.add(name)
    return name


@converter("fake_quantize_range_abs_max", "fake_quantize_moving_average_abs_max",
           "fake_quantize_dequantize_moving_average_abs_max", "fake_quantize_dequantize_range_abs_max")
def _fake_quant(cx, op):
    """Freeze-form activation quantization with a stored threshold (``InScale``): a quant-dequant here; the
    integer ``q`` of Paddle's quantize-only ops is divided back by the dequantize op that follows the conv."""
    x = cx.inp(op, "X")
    t = _scale_value(cx, op, cx.inp(op, "InScale"), "InScale")
    if t.size != 1:
        raise ModelFormatError(f"{cx.where(op)}: InScale holds {t.size} values, one expected")
    bits = _bits(cx, op)
    s = _scale_param(cx, x, float(t[0]))
    out = cx.out(op)
    emitted = cx.emit("fake_quantize_dequantize_abs_max", [x, s], [out],
                      {"bit_length": bits, "round_type": _int(cx, op, "round_type", 1)}, name=f"{out}")
    cx.qdq[emitted.outputs[0]] = (x, float(t[0]), bits)
    cx.act_t.setdefault(x, float(t[0]))
    cx.bits.add(bits)
    cx.forms.add("freeze")


@converter("fake_quantize_abs_max", "fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_abs_max",
           "fake_channel_wise_quantize_dequantize_abs_max")
def _dynamic_quant(cx, op):
    """Quantization whose threshold is max|x| of each run (QAT graphs before ``convert``): refquant's
    quant-dequant ops without a scale input compute the same."""
    x = cx.inp(op, "X")
    channel = "channel_wise" in op.type
    attrs = {"bit_length": _bits(cx, op), "round_type": _int(cx, op, "round_type", 1)}
    if channel:
        attrs["quant_axis"] = _int(cx, op, "quant_axis", 0)
    out = cx.out(op)
    cx.emit("fake_channel_wise_quantize_dequantize_abs_max" if channel else "fake_quantize_dequantize_abs_max",
            [x], [out], attrs)
    cx.forms.add("dynamic")


@converter("moving_average_abs_max_scale")
def _observer(cx, op):
    """An output-scale observer (QAT): forwards its input; its stored scale is that tensor's threshold."""
    x = cx.inp(op, "X")
    scale = op.outs("OutScale")
    if scale and scale[0] in cx.params:
        cx.out_t[x] = float(_scale_value(cx, op, scale[0], "OutScale")[0])
    out = cx.out(op, required=False)
    if out:
        cx.set_alias(out, x)


def _weight_op(cx, op, name: str):
    """The refquant weight op producing ``name`` and its weight parameter, for a dequantize op after it."""
    prod = cx.producer.get(name)
    if prod is None or prod.type not in WEIGHT_OP_TYPES or len(prod.inputs) < 2 or prod.inputs[1] not in cx.params:
        raise _unsupported(cx, op, f"a dequantize op after {prod.type if prod else 'no op'} (only after a conv, "
                                   f"mul or matmul with a stored weight)")
    return prod, prod.inputs[1]


def _rescale_weight(cx, op, prod, w: str, t: np.ndarray, axis, bits: int) -> None:
    """Turn the frozen integer weight ``w`` into refquant's stored form ``q * T_c / qmax``."""
    q = np.asarray(cx.params[w])
    if q.dtype.kind != "f":
        raise ModelFormatError(f"{cx.where(op)}: weight {w!r} is {q.dtype}, a frozen float weight was expected")
    if axis is not None and (axis >= q.ndim or q.shape[axis] != t.size):
        raise ModelFormatError(f"{cx.where(op)}: {t.size} weight scales for {w!r} of shape {q.shape} "
                               f"(axis {axis})")
    qm = rounding.qmax(bits)
    if w in cx.w_t:
        if list(map(float, t)) != cx.w_t[w]:
            raise _unsupported(cx, op, f"weight {w!r} is shared by two quantized ops with different scales")
    else:
        if not np.array_equal(q, np.rint(q)) or np.abs(q).max(initial=0) > qm:
            raise ModelFormatError(f"{cx.where(op)}: weight {w!r} is not {bits}-bit integer-valued (not a frozen "
                                   f"quantized weight)")
        cx.params[w] = rounding.dequantize_weight(q.astype(np.float32), t if axis is not None else t[0], axis,
                                                  bits).astype(np.float32)
        cx.params[f"{w}@scale"] = t.astype(np.float32)
        cx.written.add(f"{w}@scale")
        cx.w_t[w] = list(map(float, t))
        cx.w_axis[w] = axis
    _mark_quantized(cx, prod, bits, axis)


def _mark_quantized(cx, prod, bits, axis) -> None:
    from ....calibration import weight_channel_axis
    prod.attrs.setdefault("quantization_type", "paddle_import")
    prod.attrs["weight_bits"] = bits
    prod.attrs["activation_bits"] = bits
    prod.attrs["weight_quantize_type"] = "abs_max" if axis is None else "channel_wise_abs_max"
    if axis is not None:
        prod.attrs["weight_quant_axis"] = weight_channel_axis(prod.type)
    cx.bits.add(bits)


def _check_act_scale(cx, op, prod, t_act: float) -> None:
    x = prod.inputs[0]
    rec = cx.qdq.get(x)
    if rec is None:
        raise _unsupported(cx, op, f"the dequantize op names an activation scale but the input {x!r} of "
                                   f"{prod.name!r} is not quantized")
    if not math.isclose(rec[1], t_act, rel_tol=1e-6, abs_tol=0.0):
        raise ModelFormatError(f"{cx.where(op)}: the activation scale {t_act} differs from the threshold "
                               f"{rec[1]} that quantized {x!r}")


@converter("fake_channel_wise_dequantize_max_abs")
def _channel_dequant(cx, op):
    from ....calibration import weight_channel_axis
    x = cx.inp(op, "X")
    scales = [cx.get(n) for n in op.ins("Scales")]
    bits = _ints(cx, op, "quant_bits", [8] * len(scales))
    if not 1 <= len(scales) <= 2 or len(bits) != len(scales) or any(not 2 <= b <= 16 for b in bits):
        raise ModelFormatError(f"{cx.where(op)}: {len(scales)} Scales with quant_bits {bits}")
    prod, w = _weight_op(cx, op, x)
    t_w = _scale_value(cx, op, scales[0], "weight scale")
    axis = weight_channel_axis(prod.type)
    if len(scales) == 2:
        t_a = _scale_value(cx, op, scales[1], "activation scale")
        if t_a.size != 1:
            raise ModelFormatError(f"{cx.where(op)}: the activation scale holds {t_a.size} values")
        _check_act_scale(cx, op, prod, float(t_a[0]))
    _rescale_weight(cx, op, prod, w, t_w, axis if t_w.size > 1 or cx.dims(w)[axis] == 1 else None, bits[0])
    cx.set_alias(cx.out(op), x)
    cx.forms.add("freeze")


@converter("fake_dequantize_max_abs")
def _dequant(cx, op):
    x = cx.inp(op, "X")
    max_range = _float(cx, op, "max_range")
    t_a = _scale_value(cx, op, cx.inp(op, "Scale"))
    if t_a.size != 1 or not max_range > 0:
        raise ModelFormatError(f"{cx.where(op)}: Scale of {t_a.size} values, max_range {max_range}")
    rec = cx.qdq.get(x)
    if rec is not None:   # dequantize right after a quantize: the quant-dequant already did it
        if not math.isclose(max_range, rounding.qmax(rec[2]), rel_tol=1e-6):
            raise ModelFormatError(f"{cx.where(op)}: max_range {max_range} after a {rec[2]}-bit quantize")
        cx.set_alias(cx.out(op), x)
        return
    prod, w = _weight_op(cx, op, x)
    _check_act_scale(cx, op, prod, float(t_a[0]))
    bits = cx.qdq[prod.inputs[0]][2]
    qm = rounding.qmax(bits)
    t_w = np.array([qm * qm / max_range], np.float32)   # max_range = (qmax_w / T_w) * qmax_a
    _rescale_weight(cx, op, prod, w, t_w, None, bits)
    cx.set_alias(cx.out(op), x)
    cx.forms.add("freeze")


@converter("quantize_linear", "dequantize_linear")
def _linear(cx, op):
    x = cx.inp(op, "X")
    scale = cx.inp(op, "Scale")
    t = _scale_value(cx, op, scale)
    zp = cx.inp(op, "ZeroPoint", required=False)
    axis = _int(cx, op, "quant_axis", -1)
    bits = _bits(cx, op)
    attrs = {"quant_axis": axis, "bit_length": bits}
    if "round_type" in op.attrs:
        attrs["round_type"] = _int(cx, op, "round_type", 0)
    if _bool(cx, op, "only_observer", False):
        attrs["only_observer"] = True
    if axis < 0 and t.size != 1:
        raise ModelFormatError(f"{cx.where(op)}: a per-tensor {op.type} with {t.size} scales")
    if attrs.get("only_observer") and x in cx.params:    # an observer on a constant (a reshaped bias): identity
        cx.set_alias(cx.out(op, "Y"), x)
        return
    cx.params[scale] = t                                   # 0-d / (1, C) scales as refquant's 1-D ones
    ins = [x, scale]
    if zp is not None:
        z = cx.const(zp)
        if z is None or np.asarray(z).dtype.kind not in "iuf" or np.any(np.asarray(z) != 0):
            raise _unsupported(cx, op, f"zero point {zp!r} (Paddle's quantization is symmetric: zero points 0)")
        cx.params[zp] = np.zeros(np.size(z), np.int32)
        ins.append(zp)
    out = cx.out(op, "Y")
    cx.bits.add(bits)
    cx.forms.add("onnx")
    if x in cx.params and op.type == "quantize_linear":   # a float weight quantized at run time: do it now
        w = np.asarray(cx.params[x], np.float32)
        tt = rounding.channel_view(t, w.ndim, axis) if axis >= 0 else t[0]
        q = rounding.quantize_op(w, tt, bits, attrs.get("round_type", 0))
        cx.params[cx.new(out)] = q.astype(np.int8 if bits <= 8 else np.int16)
        cx.w_t.setdefault(x, list(map(float, t)))
        return
    if x in cx.params and op.type == "dequantize_linear":  # an int weight
        w = np.asarray(cx.params[x])
        if w.dtype.kind == "f":
            if not np.array_equal(w, np.rint(w)) or np.abs(w).max(initial=0) > rounding.qmax(bits) + 1:
                raise ModelFormatError(f"{cx.where(op)}: weight {x!r} is not {bits}-bit integer-valued")
            cx.params[x] = w.astype(np.int8 if bits <= 8 else np.int16)
        elif w.dtype.kind not in "iu":
            raise ModelFormatError(f"{cx.where(op)}: weight {x!r} of dtype {w.dtype}")
        if axis >= 0 and (axis >= w.ndim or w.shape[axis] != t.size):
            raise ModelFormatError(f"{cx.where(op)}: {t.size} scales for {x!r} of shape {w.shape} (axis {axis})")
        cx.w_t[x] = list(map(float, t))
        cx.w_axis[x] = axis if axis >= 0 else None
    elif op.type == "quantize_linear" and axis < 0 and not attrs.get("only_observer"):
        cx.act_t.setdefault(x, float(t[0]))
    elif op.type == "quantize_linear" and attrs.get("only_observer"):
        cx.out_t.setdefault(x, float(t[0]))
    cx.emit(op.type, ins, [out], attrs)
