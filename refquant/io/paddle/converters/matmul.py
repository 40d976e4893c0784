"""mul, matmul and fc."""
from __future__ import annotations

from .common import _bool, _float, _int, _str, _unsupported, converter


@converter("mul")
def _mul(cx, op):
    cx.emit("mul", [cx.inp(op, "X"), cx.inp(op, "Y")], [cx.out(op)],
            {"x_num_col_dims": _int(cx, op, "x_num_col_dims", 1), "y_num_col_dims": _int(cx, op, "y_num_col_dims", 1)})


@converter("matmul_v2", "matmul")
def _matmul(cx, op):
    if op.type == "matmul":
        tx, ty = _bool(cx, op, "transpose_X", False), _bool(cx, op, "transpose_Y", False)
        alpha = _float(cx, op, "alpha", 1.0)
    else:
        tx, ty, alpha = _bool(cx, op, "trans_x", False), _bool(cx, op, "trans_y", False), 1.0
    out = cx.out(op)
    mm_out = out if alpha == 1.0 else cx.tmp(out + ".mm")
    cx.emit("matmul", [cx.inp(op, "X"), cx.inp(op, "Y")], [mm_out if alpha == 1.0 else ("=", mm_out)],
            {"trans_x": tx, "trans_y": ty})
    if alpha != 1.0:
        cx.emit("scale", [mm_out], [out], {"scale": alpha, "bias": 0.0, "bias_after_scale": True})


@converter("fc")
def _fc(cx, op):
    act = _str(cx, op, "activation_type", "")
    if act not in ("", "relu"):
        raise _unsupported(cx, op, f"activation_type={act!r}")
    ins = [cx.inp(op, "Input"), cx.inp(op, "W")] + ([b] if (b := cx.inp(op, "Bias", required=False)) else [])
    cx.emit("fc", ins, [cx.out(op)], {"in_num_col_dims": _int(cx, op, "in_num_col_dims", 1),
                                      "activation_type": act})
