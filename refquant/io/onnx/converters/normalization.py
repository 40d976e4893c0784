"""Converter of ONNX BatchNormalization (inference mode) to ``batch_norm``."""
from __future__ import annotations

from .common import _converter, _shape_error, _unsupported


@_converter("BatchNormalization", arity=(5, 5, 5))
def _batch_norm(im, node):
    a = node.attrs
    if a.int("training_mode", 0):
        raise _unsupported(node, "training_mode=1")
    if not a.int("spatial", 1):
        raise _unsupported(node, "spatial=0")
    for extra in node.outputs[1:]:
        if extra and im.use_count.get(extra):
            raise _unsupported(node, f"training output {extra!r} is used")
    x, scale, bias, mean, var = (node.input(i) for i in range(5))
    xs = im.shape_of(x)
    if xs is not None and len(xs) < 2:
        raise _shape_error(node, f"input {x!r} of shape {tuple(xs)} has no channel axis")
    channels = None if xs is None else xs[1]
    for n in (scale, bias, mean, var):
        s = im.shape_of(n)
        if s is not None and (len(s) != 1 or None not in (channels, s[0]) and s[0] != channels):
            raise _shape_error(node, f"{n!r} has shape {tuple(s)}, expected ({channels},)")
        channels = channels if s is None or len(s) != 1 or channels is not None else s[0]
    # running statistics are state outputs named like their parameters (docs/ops.md)
    mean_out = mean if im.is_const(mean) else im.fresh(f"{node.outputs[0]}.mean_out")
    var_out = var if im.is_const(var) else im.fresh(f"{node.outputs[0]}.variance_out")
    attrs = {"epsilon": a.float("epsilon", 1e-5), "momentum": a.float("momentum", 0.9)}
    im.emit("batch_norm", [x, scale, bias, mean, var], [node.outputs[0], mean_out, var_out], attrs, node.name)
