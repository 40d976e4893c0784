"""Emitters of the ops that move data: flatten, reshape, transpose, concat, squeeze / unsqueeze, slice, shape,
cast, gather, expand and lookup_table."""
from __future__ import annotations

import numpy as np

from .common import _exporter, _propagate_q


@_exporter("flatten")
def _flatten(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    r = ex.rank(x)
    start = int(op.attrs.get("start_axis", 1)) % max(r, 1)
    stop = int(op.attrs.get("stop_axis", -1)) % max(r, 1)
    src = ex.x(x)
    if start == 1 and stop == r - 1:
        ex.node("Flatten", [src], [y], axis=1)
        _propagate_q(ex, src, y)
        return
    tail = [ex.static_dim(x, i) for i in range(stop + 1, r)]
    if None not in tail:
        target = ex.i64([0] * start + [-1] + tail, f"{y}@shape")
    else:
        shp = ex.node("Shape", [src])
        head = ex.node("Slice", [shp, ex.i64([0], f"{y}@s0"), ex.i64([start], f"{y}@e0")])
        rest = ex.node("Slice", [shp, ex.i64([stop + 1], f"{y}@s1"), ex.i64([r], f"{y}@e1")])
        target = ex.node("Concat", [head, ex.i64([-1], f"{y}@m1"), rest], axis=0)
    ex.node("Reshape", [src, target], [y])
    _propagate_q(ex, src, y)


@_exporter("reshape")
def _reshape(ex, op):
    x, y = op.inputs[0], op.outputs[0]
    if len(op.inputs) > 1 and op.inputs[1]:
        p = ex.param(op.inputs[1])
        shape = ex.i64(p.reshape(-1), f"{y}@shape") if p is not None else \
            ex.node("Cast", [ex.x(op.inputs[1])], to=ex.onnx.TensorProto.INT64)
    else:
        shape = ex.i64([int(v) for v in op.attrs["shape"]], f"{y}@shape")
    src = ex.x(x)
    ex.node("Reshape", [src, shape], [y])
    _propagate_q(ex, src, y)


@_exporter("transpose")
def _transpose(ex, op):
    src = ex.x(op.inputs[0])
    ex.node("Transpose", [src], [op.outputs[0]], perm=[int(p) for p in op.attrs["perm"]])
    _propagate_q(ex, src, op.outputs[0])


@_exporter("concat")
def _concat(ex, op):
    ex.node("Concat", [ex.x(n) for n in op.inputs if n], [op.outputs[0]], axis=int(op.attrs.get("axis", 0)))


@_exporter("squeeze", "unsqueeze")
def _squeeze(ex, op):
    axes = op.attrs.get("axes")
    ins = [ex.x(op.inputs[0])]
    if axes:
        ins.append(ex.i64([int(a) for a in axes], f"{op.outputs[0]}@axes"))
    elif op.type == "unsqueeze":
        raise ex.unsupported("unsqueeze without axes")
    ex.node("Squeeze" if op.type == "squeeze" else "Unsqueeze", ins, [op.outputs[0]])


@_exporter("slice")
def _slice(ex, op):
    y = op.outputs[0]
    if len(op.inputs) > 1:
        ins = [ex.x(op.inputs[0])] + [ex.x(n) if n else "" for n in op.inputs[1:]]
        while ins and not ins[-1]:
            ins.pop()
        ex.node("Slice", ins, [y])
        return
    a = op.attrs
    starts = [int(v) for v in a["starts"]]
    ends = [int(v) for v in a["ends"]]
    axes = [int(v) for v in a.get("axes") or range(len(starts))]
    steps = [int(v) for v in a.get("steps") or [1] * len(starts)]
    ex.node("Slice", [ex.x(op.inputs[0]), ex.i64(starts, f"{y}@starts"), ex.i64(ends, f"{y}@ends"),
                      ex.i64(axes, f"{y}@axes"), ex.i64(steps, f"{y}@steps")], [y])


@_exporter("shape")
def _shape(ex, op):
    y = op.outputs[0]
    start, end = op.attrs.get("start"), op.attrs.get("end")
    if start is None and end is None:
        ex.node("Shape", [ex.x(op.inputs[0])], [y])
    elif ex.opset >= 15:
        ex.node("Shape", [ex.x(op.inputs[0])], [y], start=None if start is None else int(start),
                end=None if end is None else int(end))
    else:
        s = ex.node("Shape", [ex.x(op.inputs[0])])
        ex.node("Slice", [s, ex.i64([0 if start is None else int(start)], f"{y}@start"),
                          ex.i64([np.iinfo(np.int64).max if end is None else int(end)], f"{y}@end")], [y])


@_exporter("cast")
def _cast(ex, op):
    to = ex.helper.np_dtype_to_tensor_dtype(np.dtype(op.attrs["dtype"]))
    ex.node("Cast", [ex.x(op.inputs[0])], [op.outputs[0]], to=int(to))


@_exporter("gather")
def _gather(ex, op):
    ex.node("Gather", [ex.x(op.inputs[0]), ex.x(op.inputs[1])], [op.outputs[0]], axis=int(op.attrs.get("axis", 0)))


@_exporter("expand")
def _expand(ex, op):
    if len(op.inputs) > 1 and op.inputs[1]:
        shape = ex.x(op.inputs[1])
    else:
        shape = ex.i64([int(v) for v in op.attrs["shape"]], f"{op.outputs[0]}@shape")
    ex.node("Expand", [ex.x(op.inputs[0]), shape], [op.outputs[0]])


@_exporter("lookup_table")
def _lookup(ex, op):
    w_name, ids = op.inputs[0], op.inputs[1]
    pad = int(op.attrs.get("padding_idx", -1))
    w = ex.param(w_name)
    y = op.outputs[0]
    if pad >= 0 and w is not None:
        table = np.array(w, copy=True)
        table[pad] = 0
        ex.node("Gather", [ex.const(table, f"{w_name}@padded"), ex.x(ids)], [y], axis=0)
    elif pad >= 0:
        g = ex.node("Gather", [ex.x(w_name), ex.x(ids)], axis=0)
        mask = ex.node("Unsqueeze", [ex.node("Equal", [ex.x(ids), ex.const(np.array(pad, np.int64), f"{y}@pad")]),
                                     ex.i64([-1], f"{y}@axes")])
        ex.node("Where", [mask, ex.f32(np.float32(0), f"{y}@zero"), g], [y])
    else:
        ex.node("Gather", [ex.x(w_name), ex.x(ids)], [y], axis=0)
