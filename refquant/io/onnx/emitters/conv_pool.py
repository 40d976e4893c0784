"""Emitters of the spatial ops: conv2d / depthwise_conv2d / conv2d_transpose -> Conv / ConvTranspose, pool2d ->
MaxPool / AveragePool / Global*Pool, nearest / bilinear interpolation -> Resize."""
from __future__ import annotations

from .common import _exporter, _pads4, _pair


@_exporter("conv2d", "depthwise_conv2d")
def _conv(ex, op):
    a = op.attrs
    w = ex.param(op.inputs[1])
    inputs = [ex.x(op.inputs[0]), ex.weight(op.inputs[1])]
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs.append(ex.x(op.inputs[2]))
    kernel = list(w.shape[2:]) if w is not None else None
    ex.node("Conv", inputs, [op.outputs[0]], group=int(a.get("groups", 1)), strides=_pair(a.get("strides", [1, 1])),
            pads=_pads4(a.get("paddings", [0, 0, 0, 0])), dilations=_pair(a.get("dilations", [1, 1])),
            kernel_shape=kernel)


@_exporter("conv2d_transpose")
def _conv_t(ex, op):
    a = op.attrs
    inputs = [ex.x(op.inputs[0]), ex.weight(op.inputs[1])]
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs.append(ex.x(op.inputs[2]))
    ex.node("ConvTranspose", inputs, [op.outputs[0]], group=int(a.get("groups", 1)),
            strides=_pair(a.get("strides", [1, 1])), pads=_pads4(a.get("paddings", [0, 0, 0, 0])),
            dilations=_pair(a.get("dilations", [1, 1])), output_padding=_pair(a.get("output_padding", [0, 0])))


@_exporter("pool2d")
def _pool(ex, op):
    a = op.attrs
    kind = a.get("pooling_type", "max")
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    if a.get("adaptive"):
        raise ex.unsupported("adaptive pooling")
    if kind not in ("max", "avg"):
        raise ex.unsupported(f"pooling_type {kind!r}")
    if a.get("global_pooling", False):
        ex.node("GlobalMaxPool" if kind == "max" else "GlobalAveragePool", [x], [y])
        return
    k, s = _pair(a["ksize"]), _pair(a.get("strides", [1, 1]))
    pads = _pads4(a.get("paddings", [0, 0, 0, 0]))
    ceil = bool(a.get("ceil_mode", False))
    if kind == "max":
        ex.node("MaxPool", [x], [y], kernel_shape=k, strides=s, pads=pads, ceil_mode=int(ceil))
        return
    exclusive = bool(a.get("exclusive", True))
    if ceil and not exclusive:
        shape = ex.shape(op.inputs[0])
        for axis in range(2):
            n = shape[2 + axis] if shape else None
            if n is None:
                raise ex.unsupported("ceil_mode with exclusive=False needs a static input size")
            lo, hi = pads[axis], pads[axis + 2]
            out = -(-(n + lo + hi - k[axis]) // s[axis]) + 1
            if (out - 1) * s[axis] >= n + lo:
                out -= 1
            if (out - 1) * s[axis] + k[axis] > n + lo + hi:
                raise ex.unsupported("ceil_mode with exclusive=False where the last window runs past the padding "
                                     "(ONNX divides by the clipped window, Paddle by kh*kw)")
    ex.node("AveragePool", [x], [y], kernel_shape=k, strides=s, pads=pads, ceil_mode=int(ceil),
            count_include_pad=0 if exclusive else 1)


@_exporter("nearest_interp", "bilinear_interp")
def _interp(ex, op):
    a = op.attrs
    nearest = op.type == "nearest_interp"
    mode = a.get("coordinate_transformation_mode") or (
        "align_corners" if a.get("align_corners") else ("asymmetric" if nearest else "half_pixel"))
    x, y = ex.x(op.inputs[0]), op.outputs[0]
    attrs = {"mode": "nearest" if nearest else "linear", "coordinate_transformation_mode": mode}
    if nearest:
        attrs["nearest_mode"] = a.get("nearest_mode") or ("round_prefer_ceil" if mode == "align_corners" else "floor")
    if len(op.inputs) > 1 and op.inputs[1]:
        shp = ex.node("Shape", [x])
        nc = ex.node("Slice", [shp, ex.i64([0], f"{y}@s"), ex.i64([2], f"{y}@e")])
        hw = ex.node("Cast", [ex.x(op.inputs[1])], to=ex.onnx.TensorProto.INT64)
        sizes = ex.node("Concat", [nc, hw], axis=0)
        ex.node("Resize", [x, "", "", sizes], [y], **attrs)
    elif a.get("out_size") is not None:
        shape = ex.shape(op.inputs[0])
        if shape is None or (op.inputs[0], 1) in ex.dynamic:
            raise ex.unsupported("out_size needs a static channel count")
        out = _pair(a["out_size"])
        n = ex.static_dim(op.inputs[0], 0)
        if n is None:
            shp = ex.node("Shape", [x])
            nc = ex.node("Slice", [shp, ex.i64([0], f"{y}@s"), ex.i64([2], f"{y}@e")])
            sizes = ex.node("Concat", [nc, ex.i64(out, f"{y}@hw")], axis=0)
        else:
            sizes = ex.i64([n, shape[1]] + out, f"{y}@sizes")
        ex.node("Resize", [x, "", "", sizes], [y], **attrs)
    else:
        sc = a["scale"]
        sc = [float(sc), float(sc)] if isinstance(sc, (int, float)) else [float(v) for v in sc][-2:]
        ex.node("Resize", [x, "", ex.f32([1.0, 1.0] + sc, f"{y}@scales")], [y], **attrs)
