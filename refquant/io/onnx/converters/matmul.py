"""Converters of ONNX MatMul and Gemm: ``mul`` (Paddle's fc weight layout) when the weight is a 2-D constant,
else ``matmul``."""
from __future__ import annotations

import numpy as np

from .common import _check_broadcast, _check_shape, _converter, _rewrite_const, _shape_error


def _check_matmul(node, a, b, sa, sb):
    for n, s in ((a, sa), (b, sb)):
        if s is not None and len(s) == 0:
            raise _shape_error(node, f"input {n!r} is a scalar; MatMul needs rank >= 1")
    if sa is not None and sb is not None:
        k_a, k_b = sa[-1], sb[0] if len(sb) == 1 else sb[-2]
        if None not in (k_a, k_b) and k_a != k_b:
            raise _shape_error(node, f"inner dimensions of {tuple(sa)} and {tuple(sb)} differ")


@_converter("MatMul", arity=(2, 2, 1))
def _matmul(im, node):
    a, b = node.inputs[0], node.inputs[1]
    _check_matmul(node, a, b, im.shape_of(a), im.shape_of(b))
    ra = im.rank(a)
    if im.is_const(b) and im.const(b).ndim == 2 and not im.is_const(a) and ra is not None and ra >= 2:
        im.emit("mul", [a, b], [node.outputs[0]], {"x_num_col_dims": ra - 1, "y_num_col_dims": 1}, node.name)
    else:
        im.emit("matmul", [a, b], [node.outputs[0]], {"trans_x": False, "trans_y": False}, node.name)


@_converter("Gemm", arity=(2, 3, 1))
def _gemm(im, node):
    a, b, c = node.input(0), node.input(1), node.input(2)
    alpha, beta = node.attrs.float("alpha", 1.0), node.attrs.float("beta", 1.0)
    trans_a, trans_b = node.attrs.int("transA", 0), node.attrs.int("transB", 0)
    sa, sb = im.shape_of(a), im.shape_of(b)
    _check_shape(node, a, sa, 2)
    _check_shape(node, b, sb, 2)
    if sa is not None and sb is not None:
        k_a, k_b = sa[0 if trans_a else 1], sb[1 if trans_b else 0]
        if None not in (k_a, k_b) and k_a != k_b:
            raise _shape_error(node, f"inner dimensions of A {tuple(sa)} (transA={trans_a}) and B {tuple(sb)} "
                                     f"(transB={trans_b}) differ")
    y = node.outputs[0]
    mm_out = im.fresh(f"{y}.matmul") if c else y
    if trans_a:
        if im.is_const(a):
            a = _rewrite_const(im, node, a, im.const(a).T)
        else:
            t = im.fresh(f"{a}.T")
            im.emit("transpose", [a], [t], {"perm": [1, 0]}, f"{node.name}/transpose")
            a = t
    if im.is_const(b):
        w = im.const(b)
        if trans_b or alpha != 1.0:
            w = (w.T if trans_b else w) * np.float32(alpha)
            b = _rewrite_const(im, node, b, w)
        im.emit("mul", [a, b], [mm_out], {"x_num_col_dims": 1, "y_num_col_dims": 1}, node.name)
    else:
        target = mm_out if alpha == 1.0 else im.fresh(f"{mm_out}.unscaled")
        im.emit("matmul", [a, b], [target], {"trans_x": False, "trans_y": bool(trans_b)}, node.name)
        if alpha != 1.0:
            im.emit("scale", [target], [mm_out], {"scale": alpha, "bias": 0.0}, f"{node.name}/alpha")
    if c:
        _check_broadcast(node, im.shape_of(mm_out), im.shape_of(c))
        if im.is_const(c):
            if beta != 1.0:
                c = _rewrite_const(im, node, c, im.const(c) * np.float32(beta))
        elif beta != 1.0:
            cs = im.fresh(f"{c}.beta")
            im.emit("scale", [c], [cs], {"scale": beta, "bias": 0.0}, f"{node.name}/beta")
            c = cs
        im.emit("elementwise_add", [mm_out, c], [y], {"axis": -1}, f"{node.name}/bias")
