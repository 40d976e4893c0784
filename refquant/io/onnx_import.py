"""The ONNX importer's public names at their former path; the code lives in :mod:`refquant.io.onnx`."""
from .onnx.importer import MAX_FOLD_BYTES, MAX_OPSET, MAX_STATIC_ELEMENTS, import_onnx  # noqa: F401
