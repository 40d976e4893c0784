"""Model files in and out: refquant's own format, and ONNX import / export (``onnx`` is an optional extra)."""
from .format import load, save  # noqa: F401


def import_onnx(model, **kwargs):
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``); see :mod:`refquant.io.onnx`."""
    from .onnx.importer import import_onnx as _import_onnx
    return _import_onnx(model, **kwargs)


def export_onnx(model, path=None, **kwargs):
    """Export a refquant model to ONNX (optionally saved to ``path``); see :mod:`refquant.io.onnx`."""
    from .onnx.export import export_onnx as _export_onnx
    return _export_onnx(model, path, **kwargs)


def import_paddle(path, **kwargs):
    """Import a saved Paddle inference model (``.pdmodel`` or PIR ``.json`` + ``.pdiparams``) without Paddle; see
    :mod:`refquant.io.paddle`."""
    from .paddle.importer import import_paddle as _import_paddle
    return _import_paddle(path, **kwargs)
