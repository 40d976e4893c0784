"""Model files in and out: refquant's own format, and ONNX import (``onnx`` is an optional extra)."""
from .format import load, save  # noqa: F401


def import_onnx(model, **kwargs):
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``); see :mod:`refquant.io.onnx_import`."""
    from .onnx_import import import_onnx as _import_onnx
    return _import_onnx(model, **kwargs)
