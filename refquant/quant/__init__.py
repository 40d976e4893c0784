"""Quantization passes (docs/ptq.md, docs/dynamic_and_embedding.md).

- :func:`quant_post_static` -- static post-training quantization (Paddle's ``PostTrainingQuantization``).
- :func:`quant_post_recipe` -- static PTQ with smoothing, the algorithm per tensor and float ops chosen on held-out calibration batches.
- :func:`calibrate_model` -- the activation calibration of ``quant_post_static`` alone (mergeable shards).
- :mod:`refquant.quant.adaround` -- AdaRound weight rounding (``round_type="adaround"``).
- :func:`layer_report` -- per-layer threshold, scale, clipped fraction and SQNR of a quantized model.
- :func:`quant_aware` / :func:`convert` -- quantization-aware training (PaddleSlim's static QAT).
- :mod:`refquant.quant.sensitivity` (``sensitivity``, :func:`auto_skip`) -- rank quantized layers by the error each adds; keep the worst in float.
- :func:`smooth` -- SmoothQuant: per-channel activation range moved into the weights before static PTQ.
- :func:`thresholds` -- every threshold a quantized model carries, by FP32 tensor / parameter name.
- :func:`quant_post_dynamic` -- weight-only INT8/INT16 quantization (Paddle's ``WeightQuantization``).
- :func:`quant_embedding` -- int8 embedding tables (PaddleSlim's ``quant_embedding``).
"""
from .embedding import quant_embedding
from .post_dynamic import quant_post_dynamic
from .post_static import calibrate_model, quant_post_static, thresholds
from .qat import convert, quant_aware
from .recipe import quant_post_recipe
from .report import layer_report
from .sensitivity import auto_skip
from .smooth import smooth

__all__ = ["quant_post_static", "quant_post_recipe", "thresholds", "calibrate_model", "layer_report", "quant_aware", "convert",
           "auto_skip", "smooth", "quant_post_dynamic", "quant_embedding"]
