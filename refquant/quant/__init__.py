"""Quantization passes (docs/ptq.md, docs/dynamic_and_embedding.md).

- :mod:`refquant.quant.rounding` -- Paddle's rounding / clipping rules, place by place.
- :func:`quant_post_static` -- static post-training quantization (Paddle's ``PostTrainingQuantization``).
- :func:`calibrate_model` -- the activation calibration of ``quant_post_static`` alone (mergeable shards).
- :mod:`refquant.quant.adaround` -- AdaRound weight rounding (``round_type="adaround"``).
- :func:`layer_report` -- per-layer threshold, scale, clipped fraction and SQNR of a quantized model.
- :func:`quant_aware` / :func:`convert` -- quantization-aware training (PaddleSlim's static QAT).
- :mod:`refquant.quant.sensitivity` (``sensitivity``, :func:`auto_skip`) -- rank quantized layers by the error each adds; keep the worst in float.
- :func:`thresholds` -- every threshold a quantized model carries, by FP32 tensor / parameter name.
- :func:`quant_post_dynamic` -- weight-only INT8/INT16 quantization (Paddle's ``WeightQuantization``).
- :func:`quant_embedding` -- int8 embedding tables (PaddleSlim's ``quant_embedding``).
"""
from . import rounding  # noqa: F401

_LAZY = {"quant_post_static": "post_static", "thresholds": "post_static", "calibrate_model": "post_static",
         "layer_report": "report", "quant_aware": "qat", "convert": "qat",
         "auto_skip": "sensitivity",
         "quant_post_dynamic": "post_dynamic", "quant_embedding": "embedding"}
__all__ = ["rounding", *_LAZY]


def __getattr__(name):
    # Lazy: refquant.ops.quant imports rounding while refquant.ops is initialising, and the passes need the
    # executor (which needs refquant.ops).
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'refquant.quant' has no attribute {name!r}")
