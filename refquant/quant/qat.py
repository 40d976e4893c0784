"""Quantization-aware training: PaddleSlim's static ``quant_aware`` and ``convert`` (docs/qat.md).

``quant_aware(model, config)`` returns a training graph in which every quantizable op (``quantize_op_types``, with
a parameter weight, its name not matching ``not_quant_pattern``) reads

- its activation input(s) through an activation fake-quant op, one per tensor: ``moving_average_abs_max``
  (default; parameters ``<x>@scale`` = 0.001, ``<x>@state`` = 1, ``<x>@accum`` = 1, updated in training),
  ``range_abs_max`` (``<x>@scale``, ``<x>@iter``, ``<x>@window`` of ``window_size``) or ``abs_max`` (max|x| of
  each batch, no state);
- its weight through ``fake_channel_wise_quantize_dequantize_abs_max`` (``quant_axis`` 0 for conv, 1 for mul /
  matmul) or ``fake_quantize_dequantize_abs_max`` (per tensor), recomputing max|W| every step.

All of them pass gradients straight through (``dX = dOut``), so the optimizer updates the float weights.

``convert(qat_model)`` freezes it into exactly the graph :func:`quant_post_static` produces (non-onnx format): the
activation op becomes ``fake_quantize_dequantize_abs_max`` with the trained threshold ``<x>@scale``; the weight op
disappears and the weight is frozen (clip to T_c = max|W_c|, ``(w / T_c) * qmax``, round half to even, stored as
``q * T_c / qmax``) with ``<w>@scale``; ``meta["quantization"]`` has the same keys. So
:func:`refquant.deploy.convert_to_int8` deploys both, and equal scales give identical INT8 graphs.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from ..calibration import weight_channel_axis, weight_threshold
from ..graph import Model, Op, check_model
from .. import _args
from ..reference import rounding
from .post_static import WEIGHT_OP_TYPES

DEFAULT_CONFIG = {
    "weight_quantize_type": "channel_wise_abs_max",
    "activation_quantize_type": "moving_average_abs_max",
    "weight_bits": 8,
    "activation_bits": 8,
    "quantize_op_types": ["conv2d", "depthwise_conv2d", "mul"],
    "not_quant_pattern": ["skip_quant"],
    "window_size": 10000,
    "moving_rate": 0.9,
    # refquant's: train GEMM weights (conv2d, mul, matmul; not depthwise) on the grid that
    # convert_to_int8(reduce_range=True) deploys them on (8-bit integers halved, rint(q / 2) * 2)
    "weight_reduce_range": False,
    # PaddleSlim's key (its default is True): quantize_linear / dequantize_linear pairs
    # (QuantizationTransformPassV2) instead of fake quant-dequant ops; False here, see quant_aware
    "onnx_format": False,
    # PaddleSlim's keys that refquant takes with PaddleSlim's meaning, or refuses where it cannot have it
    "dtype": "int8",            # PaddleSlim's only valid value (symmetric signed integers)
    "scale_trainable": True,    # False: activation and weight thresholds frozen in training too (Paddle's is_test)
    "for_tensorrt": False,      # True: TensorRT's op list, including quant-dequant of non-weight ops (refused)
    "is_full_quantize": False,  # True: every op type Paddle can quantize, including non-weight ops (refused)
    "quant_post_first": False,  # True: PTQ thresholds first (refused: pass init_thresholds, see quant_aware)
    "deploy_backend": None,     # a backend's op list (refused: refquant deploys with convert_to_int8)
}
# Why each PaddleSlim key that refquant cannot honour is refused (keyed by the value that asks for it).
REFUSED_CONFIG = {
    "for_tensorrt": "TensorRT's op list quantizes the inputs of pool2d / elementwise_add / leaky_relu with "
                    "quant-dequant ops; refquant's QAT quantizes the inputs and weights of weight ops only",
    "is_full_quantize": "it adds quant-dequant ops on the inputs of non-weight ops (pool2d, elementwise_add, ...); "
                        "refquant's QAT quantizes the inputs and weights of weight ops only",
    "quant_post_first": "quant_aware takes no calibration data; run quant_post_static first and pass "
                        "init_thresholds=refquant.quant.thresholds(ptq_model)",
    "deploy_backend": "a backend's quantizer changes the op lists for TensorRT / MKLDNN / ARM runtimes; refquant "
                      "deploys any QAT model with refquant.deploy.convert_to_int8",
}
ACT_OPS = {"moving_average_abs_max": "fake_quantize_dequantize_moving_average_abs_max",
           "range_abs_max": "fake_quantize_dequantize_range_abs_max",
           "abs_max": "fake_quantize_dequantize_abs_max"}
WEIGHT_OPS = {"channel_wise_abs_max": "fake_channel_wise_quantize_dequantize_abs_max",
              "abs_max": "fake_quantize_dequantize_abs_max"}


def merge_config(config: Optional[dict]) -> dict:
    """PaddleSlim's defaults updated with ``config``; unknown keys and values raise ValueError."""
    cfg = dict(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if key not in cfg:
            raise ValueError(f"quant_aware: unknown config key {key!r} (known: {sorted(cfg)})")
        cfg[key] = value
    if cfg["dtype"] != "int8":
        raise ValueError(f"quant_aware: config['dtype'] must be 'int8' (PaddleSlim's only valid value), "
                         f"got {cfg['dtype']!r}")
    for key, why in REFUSED_CONFIG.items():
        if cfg[key] not in (False, None):
            raise ValueError(f"quant_aware: config[{key!r}]={cfg[key]!r} is not supported: {why}")
    if cfg["activation_quantize_type"] not in ACT_OPS:
        raise ValueError(f"quant_aware: activation_quantize_type must be one of {sorted(ACT_OPS)}")
    if cfg["weight_quantize_type"] not in WEIGHT_OPS:
        raise ValueError(f"quant_aware: weight_quantize_type must be one of {sorted(WEIGHT_OPS)}")
    for key in ("weight_bits", "activation_bits"):
        rounding.qmax(cfg[key])  # validates 2..16
    if cfg["onnx_format"] and cfg["weight_reduce_range"]:
        raise ValueError("quant_aware: weight_reduce_range applies to the fake quant-dequant ops, not onnx_format")
    bad = set(cfg["quantize_op_types"]) - set(WEIGHT_OP_TYPES)
    if bad:
        raise ValueError(f"quant_aware: quantize_op_types {sorted(bad)} are not weight op types {WEIGHT_OP_TYPES}")
    return cfg


def _skipped(op: Op, patterns) -> bool:
    scope = f"{op.name} {op.attrs.get('op_namescope', '')}"
    return any(re.search(re.escape(p), scope) for p in patterns)


INIT_STATISTICS = ("threshold", "paddle")


def quant_aware(model: Model, config: Optional[dict] = None, for_test: bool = False,
                init_thresholds: Optional[dict] = None, init_statistics: str = "threshold") -> Model:
    """A new model with fake-quant ops on the inputs and weights of the quantizable ops (module docstring).

    ``for_test=True`` marks the activation ops ``is_test`` (thresholds frozen even in training mode), as the
    test program of PaddleSlim. ``init_thresholds``: ``{activation name: T}`` to start from, e.g.
    ``refquant.quant.thresholds(ptq_model)`` (PaddleSlim's ``quant_post_first``). ``init_statistics`` says how
    the moving average starts from such a T:

    * ``"threshold"`` (default): ``<x>@scale = <x>@accum = T``, ``<x>@state = 1``, so the first training step gives
      ``(0.9 T + max|x|) / 1.9``: the average continues from T. The default because it is what a warm start is
      for (``finetune_zoo`` relies on it).
    * ``"paddle"``: Paddle's pass: ``scale = T`` but ``accum = state = 1`` as for a fresh tensor, so T only serves
      eval / ``for_test`` runs and the first training step gives ``(0.9 + max|x|) / 1.9`` whatever T was.

    ``config["onnx_format"]`` (PaddleSlim's key; False here, True in PaddleSlim 2.6) builds Paddle's
    ``QuantizationTransformPassV2`` graph instead: every quantized tensor goes through ``quantize_linear`` (QAT
    form, round half to even with integers in [-qmax-1, qmax]) and ``dequantize_linear``. Activations and
    per-tensor (abs_max) weights keep a moving-average threshold (``<x>@scale`` 0.001, ``@state`` 1, ``@accum``
    1, rate 0.9 whatever ``moving_rate`` says; ``activation_quantize_type`` has no effect, as in Paddle's pass and
    kernel); channel-wise weights take max|W| per
    channel at every training step into ``<w>@scale`` (0.001 before the first). False stays the default because
    it is the format ``quant_post_static`` writes by default and the one every cached QAT model was trained in.

    PaddleSlim's other config keys: ``dtype`` must be "int8" (its only valid value); ``scale_trainable=False``
    freezes the thresholds in training too, as ``for_test`` does; ``for_tensorrt``, ``is_full_quantize``,
    ``quant_post_first`` and ``deploy_backend`` are accepted at their defaults and refused otherwise, with the
    reason (:data:`DEFAULT_CONFIG`).
    """
    check_model("quant_aware", model)
    _args.quant_aware_args(config, for_test, init_thresholds)
    if init_statistics not in INIT_STATISTICS:
        raise ValueError(f"quant_aware: init_statistics must be one of {INIT_STATISTICS}, got {init_statistics!r}")
    cfg = merge_config(config)
    for_test = for_test or not cfg["scale_trainable"]  # Paddle's is_test
    q = model.copy()
    a_bits, w_bits = int(cfg["activation_bits"]), int(cfg["weight_bits"])
    act_type = ACT_OPS[cfg["activation_quantize_type"]]
    qdq_of: dict[str, str] = {}
    new_ops: list[Op] = []
    quantized = []
    for op in q.ops:
        if (op.type in cfg["quantize_op_types"] and len(op.inputs) > 1 and op.inputs[1] in q.params
                and not _skipped(op, cfg["not_quant_pattern"])):
            for k, x in enumerate(op.inputs):
                if k == 1 or not x or x in q.params:
                    continue
                if x not in qdq_of:
                    if cfg["onnx_format"]:
                        pair = _act_linear(q, x, cfg, a_bits, for_test, init_thresholds, init_statistics)
                    else:
                        pair = [_act_op(q, x, act_type, cfg, a_bits, for_test, init_thresholds, init_statistics)]
                    qdq_of[x] = pair[-1].outputs[0]
                    new_ops += pair
                op.inputs[k] = qdq_of[x]
            w = op.inputs[1]
            if w not in qdq_of:
                if cfg["onnx_format"]:
                    pair = _weight_linear(q, w, op.type, cfg, w_bits, for_test)
                else:
                    attrs = {"bit_length": w_bits, "round_type": 1, "qat_weight": True}
                    if cfg["weight_quantize_type"] == "channel_wise_abs_max":
                        attrs["quant_axis"] = weight_channel_axis(op.type)
                        if cfg["weight_reduce_range"] and op.type != "depthwise_conv2d":
                            attrs["reduce_range"] = True
                    pair = [Op(WEIGHT_OPS[cfg["weight_quantize_type"]], [w], [f"{w}.quant_dequant"], attrs,
                               f"{w}.quant_dequant")]
                qdq_of[w] = pair[-1].outputs[0]
                new_ops += pair
            wq = qdq_of[w]
            op.inputs[1] = wq
            op.attrs["qat"] = True
            quantized.append(op.name)
        new_ops.append(op)
    q.ops = new_ops
    q.meta["qat"] = {"config": cfg, "quantized_ops": quantized}
    q.validate()
    return q


def _act_op(q: Model, x: str, op_type: str, cfg: dict, bits: int, for_test: bool, init,
            init_statistics: str = "threshold") -> Op:
    attrs = {"bit_length": bits, "round_type": 1}
    out = f"{x}.quant_dequant"
    if op_type.endswith("abs_max") and "moving" not in op_type and "range" not in op_type:
        return Op(op_type, [x], [out], attrs, out)  # abs_max: max|x| of every batch
    t0 = np.float32(init[x]) if init and x in init else np.float32(0.001)
    names = [f"{x}@scale"]
    q.params[f"{x}@scale"] = np.array([t0], np.float32)
    if "moving" in op_type:
        q.params[f"{x}@state"] = np.array([1.0], np.float32)
        warm = init and x in init and init_statistics == "threshold"
        q.params[f"{x}@accum"] = np.array([t0 if warm else 1.0], np.float32)
        names += [f"{x}@state", f"{x}@accum"]
        attrs["moving_rate"] = float(cfg["moving_rate"])
    else:
        q.params[f"{x}@iter"] = np.array([0], np.int64)
        q.params[f"{x}@window"] = np.zeros(int(cfg["window_size"]), np.float32)
        names += [f"{x}@iter", f"{x}@window"]
    for n in names:
        q.trainable.discard(n)
    if for_test:
        attrs["is_test"] = True
    return Op(op_type, [x] + names, [out] + names, attrs, out)


def _linear_pair(q: Model, x: str, attrs: dict, stats: list, scale0, bits: int, axis: int) -> list[Op]:
    """quantize_linear (QAT form) + dequantize_linear on ``x`` with Paddle's names: ``<x>@scale``,
    ``<x>.quantized``, ``<x>.quantized.dequantized`` and their int32 zero points; ``stats`` the state / accum
    parameter names (per tensor) or empty (per channel)."""
    qn, dq = f"{x}.quantized", f"{x}.quantized.dequantized"
    scale = f"{x}@scale"
    q.params[scale] = np.asarray(scale0, np.float32).reshape(-1)
    q.params[f"{qn}@zero_point"] = np.zeros(q.params[scale].size, np.int32)
    q.params[f"{dq}@zero_point"] = np.zeros(q.params[scale].size, np.int32)
    for n in [scale, f"{qn}@zero_point", f"{dq}@zero_point"] + stats:
        q.trainable.discard(n)
    base = {"quant_axis": axis, "bit_length": bits}
    return [Op("quantize_linear", [x, scale, f"{qn}@zero_point"] + stats, [qn, scale] + stats,
               dict(base, round_type=0, **attrs), qn),
            Op("dequantize_linear", [qn, scale, f"{dq}@zero_point"], [dq], dict(base), dq)]


def _moving_stats(q: Model, x: str, accum0) -> list[str]:
    q.params[f"{x}@state"] = np.array([1.0], np.float32)
    q.params[f"{x}@accum"] = np.array([accum0], np.float32)
    return [f"{x}@state", f"{x}@accum"]


#: The moving-average rate of Paddle's ``quantize_linear`` training kernel: fixed at 0.9, whatever the pass's
#: ``moving_rate`` (measured on Paddle 3.3.1: config moving_rate 0.5 gives the same scale as 0.9 with
#: onnx_format=True, and a different one with onnx_format=False).
V2_MOVING_RATE = 0.9


def _act_linear(q: Model, x: str, cfg: dict, bits: int, for_test: bool, init, init_statistics: str) -> list[Op]:
    """Paddle's V2 activation pair: moving-average threshold (rate :data:`V2_MOVING_RATE`), whatever
    ``activation_quantize_type`` and ``moving_rate`` say."""
    warm = bool(init) and x in init
    t0 = np.float32(init[x]) if warm else np.float32(0.001)
    stats = _moving_stats(q, x, t0 if warm and init_statistics == "threshold" else 1.0)
    attrs = {"is_test": bool(for_test), "moving_rate": V2_MOVING_RATE}
    return _linear_pair(q, x, attrs, stats, [t0], bits, -1)


def _weight_linear(q: Model, w: str, op_type: str, cfg: dict, bits: int, for_test: bool) -> list[Op]:
    """Paddle's V2 weight pair: max|W| per channel each training step, or (abs_max) a moving average."""
    attrs = {"is_test": bool(for_test), "qat_weight": True}
    if cfg["weight_quantize_type"] == "channel_wise_abs_max":
        axis = weight_channel_axis(op_type)
        return _linear_pair(q, w, attrs, [], np.full(q.params[w].shape[axis], 0.001, np.float32), bits, axis)
    attrs["moving_rate"] = V2_MOVING_RATE
    return _linear_pair(q, w, attrs, _moving_stats(q, w, 1.0), [0.001], bits, -1)


def convert(model: Model) -> Model:
    """Freeze a :func:`quant_aware` model into the inference graph of :func:`quant_post_static` (its
    ``onnx_format`` follows the QAT config: see :func:`_convert_onnx` for True)."""
    check_model("convert", model)
    info = model.meta.get("qat")
    if not info:
        raise ValueError("convert: the model was not made by quant_aware")
    cfg = info["config"]
    if cfg.get("onnx_format", False):
        return _convert_onnx(model, cfg)
    q = model.copy()
    a_bits, w_bits = int(cfg["activation_bits"]), int(cfg["weight_bits"])
    weight_src = {op.outputs[0]: op for op in q.ops if op.attrs.get("qat_weight")}
    act_t: dict[str, float] = {}
    w_t: dict = {}
    new_ops: list[Op] = []
    for op in q.ops:
        if op.attrs.get("qat_weight"):
            continue
        if op.type in ACT_OPS.values() and op.outputs[0].endswith(".quant_dequant"):
            x = op.inputs[0]
            if len(op.inputs) > 1:
                t = float(np.asarray(q.params[f"{x}@scale"], np.float32).reshape(-1)[0])
            else:
                raise ValueError(f"convert: activation {x!r} uses abs_max (a threshold per batch), which has no "
                                 "frozen scale to convert; train with moving_average_abs_max or range_abs_max")
            for suffix in ("@state", "@accum", "@iter", "@window"):
                q.params.pop(f"{x}{suffix}", None)
            q.params[f"{x}@scale"] = np.array([t], np.float32)
            act_t[x] = t
            new_ops.append(Op("fake_quantize_dequantize_abs_max", [x, f"{x}@scale"], [op.outputs[0]],
                              {"bit_length": a_bits, "round_type": 1}, op.outputs[0]))
            continue
        if op.attrs.pop("qat", False) and op.inputs[1] in weight_src:
            wop = weight_src[op.inputs[1]]
            w = wop.inputs[0]
            axis = wop.attrs.get("quant_axis") if wop.type.startswith("fake_channel_wise") else None
            t = weight_threshold(q.params[w], op.type, cfg["weight_quantize_type"])
            tq = np.asarray(t, np.float32).reshape(-1)
            tw = tq if axis is not None else tq[0]
            qw = rounding.freeze_weight(q.params[w], tw, axis, w_bits)
            q.params[w] = rounding.dequantize_weight(qw, tw, axis, w_bits)
            q.params[f"{w}@scale"] = tq
            q.trainable.discard(f"{w}@scale")
            w_t[w] = list(map(float, tq)) if axis is not None else float(tq[0])
            op.inputs[1] = w
            op.attrs.update(quantization_type=f"qat_{cfg['activation_quantize_type']}", weight_bits=w_bits,
                            activation_bits=a_bits, weight_quantize_type=cfg["weight_quantize_type"])
            if axis is not None:
                op.attrs["weight_quant_axis"] = axis
        new_ops.append(op)
    return _frozen(q, new_ops, cfg, onnx_format=False, activation_thresholds=act_t, weight_thresholds=w_t)


def _frozen(q: Model, ops: list, cfg: dict, *, onnx_format: bool, activation_thresholds: dict,
            weight_thresholds: dict) -> Model:
    """``q`` with the converted ``ops`` and the ``meta["quantization"]`` record of quant_post_static's format."""
    q.ops = ops
    del q.meta["qat"]
    q.meta["quantization"] = {
        "method": "qat", "algo": cfg["activation_quantize_type"], "weight_bits": int(cfg["weight_bits"]),
        "activation_bits": int(cfg["activation_bits"]), "weight_quantize_type": cfg["weight_quantize_type"],
        "quantizable_op_type": list(cfg["quantize_op_types"]), "onnx_format": onnx_format,
        "quantized_ops": [op.name for op in ops if "quantization_type" in op.attrs],
        "activation_thresholds": activation_thresholds, "weight_thresholds": weight_thresholds,
    }
    q.validate()
    return q


def _convert_onnx(model: Model, cfg: dict) -> Model:
    """Paddle's ``QuantWeightPass`` on an ``onnx_format`` QAT model: each weight becomes int8 (int16 above 8 bits)
    ``clip(np.round((W / T_c) * qmax), -qmax-1, qmax)`` with the **stored** scale ``<w>@scale`` (the one of the
    last training step, as Paddle, not recomputed from the final weights), its quantize_linear disappears and its
    dequantize_linear reads the int weight; activation pairs keep their trained scale in the inference form
    (statistics dropped). The result is the graph ``quant_post_static(onnx_format=True)`` writes."""
    q = model.copy()
    a_bits, w_bits = int(cfg["activation_bits"]), int(cfg["weight_bits"])
    act_t: dict[str, float] = {}
    w_t: dict = {}
    int_of: dict[str, str] = {}    # <w>.quantized -> w, for the weight dequantize_linear
    new_ops: list[Op] = []
    for op in q.ops:
        if op.type == "quantize_linear" and "is_test" in op.attrs:
            x, scale = op.inputs[0], op.inputs[1]
            t = np.asarray(q.params[scale], np.float32).reshape(-1)
            for stat in op.inputs[3:]:
                q.params.pop(stat, None)
            if x in q.params:
                axis = int(op.attrs["quant_axis"])
                if np.all(t == np.float32(0.001)) and np.max(np.abs(q.params[x])) != np.float32(0.001):
                    raise ValueError(f"convert: weight {x!r} still has its initial scale 0.001: onnx_format QAT "
                                     "freezes the scale of the last training step, so train before converting")
                tw = t if axis >= 0 else t[0]
                qw = rounding.freeze_weight_onnx(q.params[x], tw, axis if axis >= 0 else None, w_bits)
                q.params[x] = qw.astype(np.int8 if w_bits <= 8 else np.int16)
                q.trainable.discard(x)
                int_of[op.outputs[0]] = x
                w_t[x] = list(map(float, t)) if axis >= 0 else float(t[0])
                q.params.pop(op.inputs[2], None)
                continue
            act_t[x] = float(t[0])
            attrs = {k: v for k, v in op.attrs.items() if k not in ("is_test", "moving_rate", "round_type")}
            new_ops.append(Op("quantize_linear", op.inputs[:3], op.outputs[:1], attrs, op.name))
            continue
        if op.type == "dequantize_linear" and op.inputs[0] in int_of:
            op.inputs[0] = int_of[op.inputs[0]]
        if op.attrs.pop("qat", False):
            op.attrs.update(quantization_type=f"qat_{cfg['activation_quantize_type']}", weight_bits=w_bits,
                            activation_bits=a_bits, weight_quantize_type=cfg["weight_quantize_type"])
            if cfg["weight_quantize_type"] == "channel_wise_abs_max":
                op.attrs["weight_quant_axis"] = weight_channel_axis(op.type)
        new_ops.append(op)
    return _frozen(q, new_ops, cfg, onnx_format=True, activation_thresholds=act_t, weight_thresholds=w_t)

