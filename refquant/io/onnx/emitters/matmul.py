"""Emitters of mul (Paddle's fc weight layout), fc and matmul -> [Reshape] MatMul / Gemm."""
from __future__ import annotations

import numpy as np

from .common import _exporter


@_exporter("mul")
def _mul(ex, op):
    xc, yc = int(op.attrs.get("x_num_col_dims", 1)), int(op.attrs.get("y_num_col_dims", 1))
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    rx = ex.rank(x)
    src = ex.x(x)
    if rx != xc + 1:
        src = ex.node("Reshape", [src, ex.i64([0] * xc + [-1], f"{y}@xshape")])
    wp = ex.param(w)
    if wp is not None:
        wshape = wp.shape
        wsrc = ex.weight(w)
        if wp.ndim != 2 or yc != 1:
            wsrc = ex.node("Reshape", [wsrc, ex.i64([int(np.prod(wshape[:yc])), -1], f"{w}@mshape")])
    else:
        wshape = ex.shape(w)
        if wshape is None or None in wshape:
            raise ex.unsupported("mul with a computed weight of unknown shape")
        wsrc = ex.x(w)
        if len(wshape) != 2 or yc != 1:
            wsrc = ex.node("Reshape", [wsrc, ex.i64([-1, int(np.prod(wshape[yc:]))], f"{w}@mshape")])
    tail = list(wshape[yc:])
    if len(tail) == 1:
        ex.node("MatMul", [src, wsrc], [y])
    else:
        mm = ex.node("MatMul", [src, wsrc])
        ex.node("Reshape", [mm, ex.i64([0] * xc + [int(d) for d in tail], f"{y}@shape")], [y])


@_exporter("fc")
def _fc(ex, op):
    xc = int(op.attrs.get("in_num_col_dims", 1))
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    src = ex.x(x)
    if ex.rank(x) != xc + 1:
        src = ex.node("Reshape", [src, ex.i64([0] * xc + [-1], f"{y}@xshape")])
    act = op.attrs.get("activation_type", "") or ""
    if act not in ("", "relu"):
        raise ex.unsupported(f"activation_type {act!r}")
    has_b = len(op.inputs) > 2 and bool(op.inputs[2])
    out = ex.node("MatMul", [src, ex.weight(w)], [y] if not has_b and not act else None)
    if has_b:
        out = ex.node("Add", [out, ex.x(op.inputs[2])], [y] if not act else None)
    if act:
        ex.node("Relu", [out], [y])


@_exporter("matmul")
def _matmul(ex, op):
    ins = []
    for k, (name, flag) in enumerate(((op.inputs[0], "trans_x"), (op.inputs[1], "trans_y"))):
        src = ex.weight(name) if k == 1 else ex.x(name)
        if op.attrs.get(flag, False):
            r = ex.rank(name)
            if r >= 2:
                p = ex.param(name)
                if p is not None and src == name:
                    src = ex.const(np.swapaxes(p, -1, -2), f"{name}@T")
                else:
                    perm = list(range(r))
                    perm[-1], perm[-2] = perm[-2], perm[-1]
                    src = ex.node("Transpose", [src], perm=perm)
        ins.append(src)
    ex.node("MatMul", ins, [op.outputs[0]])
