"""The ONNX exporter's public names at their former path; the code lives in :mod:`refquant.io.onnx`."""
from .onnx.export import export_onnx, supported_op_types  # noqa: F401
