"""ONNX in and out (the optional ``onnx`` extra).

* :mod:`.loader` reads a file safely (protobuf, UTF-8 strings, external data kept inside the model's directory);
* :mod:`.importer` walks the graph and :mod:`.converters` (one module per op family) map each ONNX node onto
  refquant ops (``docs/onnx_import.md``);
* :mod:`.export` and :mod:`.emitters` (the same families) write a refquant model as ONNX (``docs/onnx_export.md``);
* :mod:`.optable` holds the ONNX <-> refquant op names that map one to one, read by both directions.
"""
from .export import export_onnx, supported_op_types  # noqa: F401
from .importer import MAX_FOLD_BYTES, MAX_OPSET, MAX_STATIC_ELEMENTS, import_onnx  # noqa: F401
