"""batch_norm and layer_norm."""
from __future__ import annotations

from .common import _float, _int, _unsupported, converter


@converter("batch_norm", "sync_batch_norm")
def _batch_norm(cx, op):
    fmt = op.attrs.get("data_layout", op.attrs.get("data_format", "NCHW"))
    if fmt not in ("NCHW", "AnyLayout"):
        raise _unsupported(cx, op, f"data_layout={fmt!r}")
    x = cx.inp(op, "X")
    scale, bias, mean, var = (cx.inp(op, s) for s in ("Scale", "Bias", "Mean", "Variance"))
    for n in (scale, bias, mean, var):
        if n not in cx.params:
            raise _unsupported(cx, op, f"{n!r} is computed at run time (a batch_norm needs stored statistics)")
    cx.emit("batch_norm", [x, scale, bias, mean, var], [cx.out(op, "Y"), ("=", mean), ("=", var)],
            {"epsilon": _float(cx, op, "epsilon", 1e-5), "momentum": _float(cx, op, "momentum", 0.9)})


@converter("layer_norm")
def _layer_norm(cx, op):
    x = cx.inp(op, "X")
    ins = [x, cx.inp(op, "Scale", required=False) or "", cx.inp(op, "Bias", required=False) or ""]
    while ins and not ins[-1]:
        ins.pop()
    cx.emit("layer_norm", ins, [cx.out(op, "Y")], {"begin_norm_axis": _int(cx, op, "begin_norm_axis", 1),
                                                   "epsilon": _float(cx, op, "epsilon", 1e-5)})
