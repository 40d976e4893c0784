"""Converters of the ONNX spatial ops: Conv, ConvTranspose, pooling and Resize / Upsample (2-D, NCHW)."""
from __future__ import annotations

import numpy as np

from ....ops.pool import pool_out_size
from .common import _axis, _bad, _check_shape, _const_input, _converter, _int_values, _shape_error, _unsupported


def _auto_pads(im, node, x, kernel, strides, dilations, pads):
    """Explicit [top, left, bottom, right] paddings for ONNX auto_pad (SAME_* needs the input size when the
    stride is not 1)."""
    auto = node.attrs.str("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return list(pads) if pads else [0] * 4
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _unsupported(node, f"auto_pad {auto!r}")
    if min(strides) < 1 or min(dilations) < 1 or min(kernel) < 1:
        raise _shape_error(node, f"auto_pad {auto} needs positive kernel {kernel}, strides {strides} and "
                                 f"dilations {dilations}")
    shape = im.shape_of(x)
    lo, hi = [], []
    for axis in range(2):
        k, s, d = kernel[axis], strides[axis], dilations[axis]
        if s == 1:
            total = d * (k - 1)
        else:
            n = None if shape is None or len(shape) != 4 else shape[2 + axis]
            if n is None:
                raise _unsupported(node, "auto_pad SAME with a stride > 1 needs a static input size")
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        lo.append(small if auto == "SAME_UPPER" else big)
        hi.append(big if auto == "SAME_UPPER" else small)
    return [lo[0], lo[1], hi[0], hi[1]]


def _filter(im, node, transposed: bool):
    """(weight shape, kernel, strides, dilations, group) of Conv / ConvTranspose, checked against each other
    and against the input and bias shapes where they are known."""
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape = im.shape_of(w)
    if wshape is None or len(wshape) != 4:
        raise _unsupported(node, f"only 2-D convolutions are supported (filter shape {wshape})")
    a = node.attrs
    kernel = a.ints("kernel_shape", list(wshape[2:]), length=2)
    if kernel != list(wshape[2:]):
        raise _shape_error(node, f"kernel_shape {kernel} contradicts the filter shape {tuple(wshape)}")
    strides = a.ints("strides", [1, 1], length=2)
    dilations = a.ints("dilations", [1, 1], length=2)
    group = a.int("group", 1)
    cin = wshape[0] if transposed else (None if wshape[1] is None else wshape[1] * group)
    cout = None if wshape[1] is None else wshape[1] * group if transposed else wshape[0]
    if group < 1 or (wshape[0] is not None and wshape[0] % group):
        raise _shape_error(node, f"group {group} does not divide the filter's {wshape[0]} "
                                 f"{'input' if transposed else 'output'} channels")
    xs = im.shape_of(x)
    _check_shape(node, x, xs, 4)
    if xs is not None and None not in (xs[1], cin) and xs[1] != cin:
        raise _shape_error(node, f"input {x!r} has {xs[1]} channels, the filter {tuple(wshape)} with group {group} "
                                 f"takes {cin}")
    bs = im.shape_of(b) if b else None
    if bs is not None and cout is not None and tuple(bs) != (cout,):
        raise _shape_error(node, f"bias {b!r} has shape {tuple(bs)}, expected ({cout},)")
    return wshape, kernel, strides, dilations, group


@_converter("Conv", arity=(2, 3, 1))
def _conv(im, node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape, kernel, strides, dilations, group = _filter(im, node, transposed=False)
    pads = _auto_pads(im, node, x, kernel, strides, dilations, node.attrs.ints("pads", None, length=4))
    depthwise = group > 1 and wshape[1] == 1 and wshape[0] == group
    attrs = {"strides": strides, "paddings": pads, "dilations": dilations, "groups": group}
    inputs = [x, w] + ([b] if b else [])
    im.emit("depthwise_conv2d" if depthwise else "conv2d", inputs, [node.outputs[0]], attrs, node.name)


@_converter("ConvTranspose", arity=(2, 3, 1))
def _conv_transpose(im, node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    wshape, kernel, strides, dilations, group = _filter(im, node, transposed=True)
    a = node.attrs
    out_pad = a.ints("output_padding", [0, 0], length=2)
    auto = a.str("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise _unsupported(node, f"auto_pad {auto!r}")
    xs = im.shape_of(x)
    if "output_shape" in a:
        out_shape = a.ints("output_shape")
        if len(out_shape) < 2:
            raise _bad(node, f"output_shape {out_shape} needs the two spatial sizes")
        if xs is None or len(xs) != 4 or None in xs[2:]:
            raise _unsupported(node, "output_shape needs a static input size")
        pads_lo, pads_hi = [], []
        for i in range(2):
            total = (strides[i] * (xs[2 + i] - 1) + out_pad[i] + ((kernel[i] - 1) * dilations[i] + 1)
                     - out_shape[-2 + i])
            if total < 0:
                raise _shape_error(node, f"output_shape {out_shape} is larger than the transposed convolution "
                                         f"of a {tuple(xs)} input can produce")
            small, big = total // 2, total - total // 2
            upper = auto == "SAME_UPPER"     # ONNX: otherwise the larger half goes to the start
            pads_lo.append(small if upper else big)
            pads_hi.append(big if upper else small)
        pads = [pads_lo[0], pads_lo[1], pads_hi[0], pads_hi[1]]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(2):
            # output = input * stride: total padding = stride*(in-1) + out_pad + (k-1)*d + 1 - in*stride
            total = out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - strides[i]
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    else:
        pads = a.ints("pads", [0, 0, 0, 0], length=4)
    attrs = {"strides": strides, "paddings": pads, "output_padding": out_pad, "dilations": dilations,
             "groups": group}
    im.emit("conv2d_transpose", [x, w] + ([b] if b else []), [node.outputs[0]], attrs, node.name)


@_converter("GlobalAveragePool", arity=(1, 1, 1))
@_converter("GlobalMaxPool", arity=(1, 1, 1))
def _global_pool(im, node):
    r = im.rank(node.inputs[0])
    if r is not None and r != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {r})")
    kind = "avg" if node.type == "GlobalAveragePool" else "max"
    attrs = {"pooling_type": kind, "ksize": [1, 1], "strides": [1, 1], "paddings": [0, 0, 0, 0],
             "global_pooling": True, "ceil_mode": False, "exclusive": True}
    im.emit("pool2d", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


@_converter("MaxPool", arity=(1, 1, 2))
@_converter("AveragePool", arity=(1, 1, 1))
def _pool(im, node):
    a = node.attrs
    kernel = a.ints("kernel_shape")
    if len(kernel) != 2:
        raise _unsupported(node, f"only 2-D pooling is supported (kernel_shape {kernel})")
    r = im.rank(node.inputs[0])
    if r is not None and r != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {r})")
    if len(node.outputs) > 1 and node.outputs[1] and im.use_count.get(node.outputs[1]):
        raise _unsupported(node, "the Indices output is used")
    dilations = a.ints("dilations", [1, 1], length=2)
    if dilations != [1, 1]:
        raise _unsupported(node, f"dilations {dilations}")
    strides = a.ints("strides", [1, 1], length=2)
    pads = _auto_pads(im, node, node.inputs[0], kernel, strides, [1, 1], a.ints("pads", None, length=4))
    ceil_mode = bool(a.int("ceil_mode", 0))
    count_include_pad = bool(a.int("count_include_pad", 0))
    if node.type == "AveragePool" and ceil_mode and count_include_pad:
        # ONNX divides a window that runs past the padding (ceil mode) by its size clipped to the padded input;
        # pool2d (Paddle) divides by kh*kw. They agree only when no window overflows.
        if min(strides) < 1 or min(kernel) < 1:
            raise _shape_error(node, f"kernel_shape {kernel} and strides {strides} must be positive")
        shape = im.shape_of(node.inputs[0])
        for axis in range(2):
            n = None if shape is None or len(shape) != 4 else shape[2 + axis]
            if n is None:
                raise _unsupported(node, "ceil_mode=1 with count_include_pad=1 needs a static input size")
            lo, hi = pads[axis], pads[axis + 2]
            out = pool_out_size(n, kernel[axis], strides[axis], lo, hi, True)
            if (out - 1) * strides[axis] + kernel[axis] > n + lo + hi:
                raise _unsupported(node, "ceil_mode=1 with count_include_pad=1 where the last window runs past "
                                         "the padding (ONNX's clipped divisor differs from pool2d's kh*kw)")
    attrs = {"pooling_type": "max" if node.type == "MaxPool" else "avg", "ksize": kernel, "strides": strides,
             "paddings": pads, "global_pooling": False, "ceil_mode": ceil_mode, "exclusive": not count_include_pad}
    im.emit("pool2d", [node.inputs[0]], [node.outputs[0]], attrs, node.name)


_RESIZE_CTM = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@_converter("Resize", arity=(1, 4, 1))
@_converter("Upsample", arity=(1, 2, 1))
def _resize(im, node):
    a = node.attrs
    mode = a.str("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise _unsupported(node, f"mode {mode!r}")
    x = node.inputs[0]
    xs = im.shape_of(x)
    if xs is not None and len(xs) != 4:
        raise _unsupported(node, f"only NCHW inputs are supported (rank {len(xs)})")
    if a.int("antialias", 0):
        raise _unsupported(node, "antialias=1")
    policy = a.str("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise _unsupported(node, f"keep_aspect_ratio_policy {policy!r}")
    axes = a.ints("axes", None)
    legacy = node.type == "Upsample" or im.opset < 11
    scales = sizes = None
    size_tensor = ""
    if node.type == "Upsample" and "scales" in a:
        scales = np.asarray(a.floats("scales"), np.float32)
    elif legacy:
        scales = _const_input(im, node, 1, "Resize scales")
    else:
        scales = _const_input(im, node, 2, "Resize scales")
        if node.input(3):
            if im.is_const(node.input(3)):
                sizes = _int_values(node, im.const(node.input(3)), "Resize sizes")
            else:
                size_tensor = node.input(3)
                _check_shape(node, size_tensor, im.shape_of(size_tensor), 1, "the sizes input")
    if scales is not None:
        if np.asarray(scales).dtype.kind != "f":
            raise _shape_error(node, f"scales must be a float tensor, got {np.asarray(scales).dtype.name}")
        scales = np.ravel(scales).astype(np.float32)
        if scales.size == 0:
            scales = None
    if axes is not None:
        norm = [_axis(node, ax, 4, "Resize axis") for ax in axes]
        if norm != [2, 3]:
            raise _unsupported(node, f"axes {list(axes)}: only the spatial axes [2, 3] can be resized")
        if scales is not None:
            scales = np.concatenate([[1, 1], scales]).astype(np.float32)
        if sizes is not None:
            raise _unsupported(node, "sizes together with axes")
    attrs = {}
    if scales is not None:
        if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
            raise _unsupported(node, f"scales {scales.tolist()}: only the H and W axes can be resized")
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise _shape_error(node, f"scales {scales.tolist()} must be finite and positive")
        attrs["scale"] = [float(scales[2]), float(scales[3])]
    elif sizes is not None:
        if len(sizes) != 4 or min(sizes) < 1:
            raise _shape_error(node, f"sizes {sizes} must be 4 positive sizes (N, C, H, W)")
        if xs is not None and any(None not in (xs[i], sizes[i]) and xs[i] != sizes[i] for i in range(2)):
            raise _unsupported(node, f"sizes {sizes}: only the H and W axes can be resized (input {tuple(xs)})")
        attrs["out_size"] = sizes[-2:]
    elif not size_tensor:
        raise _unsupported(node, "neither scales nor sizes are given")
    if legacy:
        ctm = "asymmetric"
        if mode == "nearest" and scales is not None:
            down = [s < 1 for s in attrs["scale"]]
            if any(down) and not all(down):
                raise _unsupported(node, "opset < 11 nearest resize that shrinks one axis and grows the other")
            attrs["nearest_mode"] = "ceil" if all(down) else "floor"
        elif mode == "nearest":
            attrs["nearest_mode"] = "floor"
    else:
        ctm = a.str("coordinate_transformation_mode", "half_pixel")
        if ctm not in _RESIZE_CTM:
            raise _unsupported(node, f"coordinate_transformation_mode {ctm!r}")
        if mode == "nearest":
            attrs["nearest_mode"] = a.str("nearest_mode", "round_prefer_floor")
            if attrs["nearest_mode"] not in _NEAREST_MODES:
                raise _unsupported(node, f"nearest_mode {attrs['nearest_mode']!r}")
    attrs["coordinate_transformation_mode"] = ctm
    attrs["align_corners"] = ctm == "align_corners"
    op_type = "nearest_interp" if mode == "nearest" else "bilinear_interp"
    inputs = [x] + ([size_tensor] if size_tensor else [])
    im.emit(op_type, inputs, [node.outputs[0]], attrs, node.name)
