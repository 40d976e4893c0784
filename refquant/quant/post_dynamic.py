"""Dynamic (weight-only) post-training quantization: PaddleSlim's ``quant_post_dynamic`` (alias
``quant_post_only_weight``), i.e. Paddle's ``WeightQuantization.quantize_weight_to_int``.

No data is needed. For every op of ``quantizable_op_type`` (conv2d, depthwise_conv2d, mul), the weight input --
the second input, Paddle's ``Filter`` (conv) or ``Y`` (mul) -- if it is a parameter, becomes

* ``abs_max``: ``T = max|W|`` (or, with ``threshold_rate > 1e-10``, the right edge of the first of 5000 |W|
  histogram bins where the normalised cumulative sum reaches ``1 - threshold_rate``; W is clipped to +-T first);
  ``s = T / qmax``;
* ``channel_wise_abs_max``: ``s_c = max|W_c| / qmax`` per index of axis 0 (conv) or axis 1 (mul columns);

``q = np.around(W / s)`` stored as int8 (8 bits) or int16 (16 bits) **under the weight's own name** (as Paddle
replaces it in place), with the step sizes ``s`` in the float32 parameter ``<W>_quant_scale``. A
``dequantize_weight`` op computes ``float32(q) * s`` into ``<W>.dequantized`` and every reader of ``W`` is rewired
to it, so inference dequantizes and runs in float (Paddle Lite's behaviour). The quantized op gets Paddle's
attributes ``quantization_type``, ``quantize_weight_bits`` and ``with_quant_attr``.

Paddle quantizes every persistable input of those ops, which in Paddle's graphs is the Filter / Y alone: a conv's
bias is added by a separate ``elementwise_add``. refquant's conv2d may carry the bias as a third input; it stays
float, as Paddle's bias does (an op whose weight is not a parameter is left alone).

``generate_test_model=True`` returns Paddle's "test model" instead: the float graph unchanged, each weight
replaced by ``(q * s).astype(float32)``.

Deviation: a channel (or tensor) that is all zeros gives Paddle a division by zero (NaN, then an undefined cast);
refquant raises ``ValueError`` naming the weight and channel.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..graph import Model, Op, check_model
from .. import _args

SUPPORTED_OP_TYPES = ("conv2d", "depthwise_conv2d", "mul")
WEIGHT_QUANTIZE_TYPES = ("abs_max", "channel_wise_abs_max")
_DTYPES = {8: np.int8, 16: np.int16}


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _calculate_threshold(w: np.ndarray, threshold_rate: float, histogram_bins: int = 5000):
    """Paddle's ``WeightQuantization._calculate_threshold``: the right edge of the first |w| histogram bin where
    the normalised cumulative sum reaches ``1 - threshold_rate`` (float64, as Paddle computes it)."""
    w_abs = np.abs(w)
    hist, edges = np.histogram(w_abs, bins=histogram_bins, range=(0, np.max(w_abs)))
    hist = hist / float(sum(hist))
    hist_sum, hist_index = 0, 0
    for i in range(len(hist)):
        hist_sum += hist[i]
        if hist_sum >= 1.0 - threshold_rate:
            hist_index = i + 1
            break
    return hist_index * (edges[1] - edges[0])


def quantize_weight_abs_max(w: np.ndarray, bits: int, threshold_rate: float = 0.0):
    """``(q, scale)`` per tensor, Paddle's ``_weight_abs_max_quantization`` expression by expression."""
    w = np.array(w, copy=True)
    if abs(threshold_rate) < 1e-10:
        threshold = np.max(np.abs(w))
    else:
        threshold = _calculate_threshold(w, threshold_rate)
        w[w > threshold] = threshold
        w[w < -threshold] = -threshold
    if not threshold > 0:
        raise ValueError("abs_max: the weight is all zeros (Paddle would divide by zero)")
    scale = threshold / _qmax(bits)
    q = np.around(w / scale).astype(_DTYPES[bits])
    return q, np.asarray([scale], dtype=np.float32)


def quantize_weight_channel_wise(w: np.ndarray, bits: int, axis: int):
    """``(q, scales)`` per index of ``axis``: ``s_c = max|W_c| / qmax``, ``q = around(W / s_c)`` (float32, as
    Paddle's per-channel loop computes it)."""
    if w.ndim <= axis:
        raise ValueError(f"channel_wise_abs_max: a weight of shape {w.shape} has no axis {axis}")
    other = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.max(np.abs(w), axis=other) / _qmax(bits)
    zero = np.flatnonzero(~(scale > 0))
    if zero.size:
        raise ValueError(f"channel_wise_abs_max: channel(s) {zero[:8].tolist()} along axis {axis} are all zeros "
                         f"(Paddle would divide by zero)")
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.around(w / scale.reshape(shape)).astype(_DTYPES[bits])
    return q, scale.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """``float32(q) * s`` (per tensor with ``axis`` -1): the ``dequantize_weight`` op and Paddle's test model."""
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    if axis < 0:
        return q.astype(np.float32) * scale.reshape(())
    shape = [1] * q.ndim
    shape[axis] = -1
    return q.astype(np.float32) * scale.reshape(shape)


def quant_post_dynamic(model: Model, weight_bits: int = 8,
                       quantizable_op_type: Iterable[str] = ("conv2d", "mul"),
                       weight_quantize_type: str = "channel_wise_abs_max", generate_test_model: bool = False,
                       threshold_rate: float = 0.0) -> Model:
    """A NEW model with int8/int16 weights and ``dequantize_weight`` ops (see the module docstring); the input
    model is untouched."""
    who = "quant_post_dynamic"
    check_model(who, model)
    weight_bits = _args.choice(who, "weight_bits", _args.integer(who, "weight_bits", weight_bits), tuple(_DTYPES))
    if isinstance(quantizable_op_type, str):  # one op type
        quantizable_op_type = [quantizable_op_type]
    op_types = _args.names(who, "quantizable_op_type", quantizable_op_type, allowed=SUPPORTED_OP_TYPES)
    weight_quantize_type = _args.choice(who, "weight_quantize_type", weight_quantize_type, WEIGHT_QUANTIZE_TYPES)
    generate_test_model = _args.boolean(who, "generate_test_model", generate_test_model)
    threshold_rate = _args.real(who, "threshold_rate", threshold_rate, 0.0, 1.0, hi_open=True)

    new = model.copy()
    targets = [(op, op.inputs[1]) for op in new.ops
               if op.type in op_types and len(op.inputs) > 1 and op.inputs[1] in new.params]
    if not targets:
        present = sorted(new.op_counts())
        raise ValueError(f"quant_post_dynamic: the model has no {op_types} op with a parameter weight to "
                         f"quantize (its op types: {present})")

    channel_wise = weight_quantize_type == "channel_wise_abs_max"
    done: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for op, name in targets:
        if name not in done:
            w = new.params[name]
            if w.dtype.kind != "f":
                raise ValueError(f"quant_post_dynamic: parameter {name!r} of op {op.name!r} is {w.dtype}, not float "
                                 f"(already quantized?)")
            if channel_wise:
                axis = 1 if op.type == "mul" else 0
                q, scale = quantize_weight_channel_wise(w, weight_bits, axis)
            else:
                axis = -1
                q, scale = quantize_weight_abs_max(w, weight_bits, threshold_rate)
            done[name] = (q, scale, axis)
        op.attrs["quantization_type"] = ("post_weight_channel_wise_abs_max" if channel_wise
                                         else "post_weight_abs_max")
        op.attrs["quantize_weight_bits"] = int(weight_bits)
        op.attrs["with_quant_attr"] = True

    if generate_test_model:
        for name, (q, scale, axis) in done.items():
            new.params[name] = dequantize(q, scale, axis)
        new.meta["quant_post_dynamic"] = _meta(weight_bits, weight_quantize_type, threshold_rate, op_types,
                                              test_model=True)
        return new

    consumers = new.consumers()
    dequant_ops = []
    for name, (q, scale, axis) in done.items():
        scale_name, out_name = f"{name}_quant_scale", f"{name}.dequantized"
        new.params[name] = q
        new.params[scale_name] = scale
        new.trainable.discard(name)
        dequant_ops.append(Op("dequantize_weight", [name, scale_name], [out_name],
                              {"quant_axis": int(axis), "quantize_weight_bits": int(weight_bits)},
                              f"{name}.dequantize_weight"))
        for i in consumers.get(name, []):
            new.ops[i].inputs = [out_name if n == name else n for n in new.ops[i].inputs]
        new.outputs = [out_name if n == name else n for n in new.outputs]
    new.meta["quant_post_dynamic"] = _meta(weight_bits, weight_quantize_type, threshold_rate, op_types,
                                          test_model=False)
    new.ops = dequant_ops + new.ops
    new.validate()
    return new


def _meta(bits, qtype, rate, op_types, test_model):
    return {"weight_bits": int(bits), "weight_quantize_type": qtype, "threshold_rate": rate,
            "quantizable_op_type": list(op_types), "generate_test_model": bool(test_model)}
