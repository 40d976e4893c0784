"""Real (pretrained, downloaded-with-a-package) models quantized end to end: PP-OCR (docs/real_models.md).

- :mod:`refquant.realmodels.ppocr` -- the PP-OCR cls / rec / det ONNX models shipped with rapidocr-onnxruntime:
  rendered evaluation and calibration sets, their metrics, static PTQ and INT8 conversion with the op types the
  imported graphs use, and onnxruntime's own quantizer as the anchor.
"""
from . import ppocr  # noqa: F401

__all__ = ["ppocr"]
