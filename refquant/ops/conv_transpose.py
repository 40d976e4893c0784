"""``conv2d_transpose``: the adjoint of ``conv2d``, written with the same im2col / col2im pair.

A convolution with filter ``W`` (C, OC/groups, kh, kw) maps an (N, OC, OH, OW) map to (N, C, H, W) as
``W_mat @ im2col(y)``. Its transpose maps x (N, C, H, W) back: ``y = col2im(W_mat^T @ x)``, which is the
forward here, and the backward is then the convolution itself: ``dx = W_mat @ im2col(dy)``,
``dW = x @ im2col(dy)^T``.

Output size per spatial axis (ONNX / Paddle):
``out = (in - 1) * stride - pad_lo - pad_hi + dilation * (k - 1) + output_padding + 1``.
``output_padding`` adds rows/columns at the bottom/right that no window reaches unless the hi padding crops
them away, which is why the col2im call below uses ``pad_hi - output_padding`` as its hi padding.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from ..errors import ShapeError
from ..reference.im2col import MAX_EXTENT, check_geometry, check_size
from .registry import attr_int, attr_ints, register


def _params(attrs):
    strides = tuple(int(v) for v in attrs.get("strides", [1, 1]))
    pads = [int(v) for v in attrs.get("paddings", [0, 0, 0, 0])]
    if len(pads) == 2:
        pads = [pads[0], pads[1], pads[0], pads[1]]
    dilations = tuple(int(v) for v in attrs.get("dilations", [1, 1]))
    out_pad = tuple(int(v) for v in attrs.get("output_padding", [0, 0]) or [0, 0])
    groups = int(attrs.get("groups", 1))
    return strides, pads, dilations, out_pad, groups


def _check(attrs, inputs):
    """Load-time check: 2 strides / dilations in [1, 2**31), 2 or 4 paddings in [0, 2**31), 2 output paddings
    each below its stride or dilation (ONNX's rule), groups >= 1."""
    strides = attr_ints(attrs, "strides", [1, 1], (2,), 1, MAX_EXTENT)
    dilations = attr_ints(attrs, "dilations", [1, 1], (2,), 1, MAX_EXTENT)
    attr_ints(attrs, "paddings", [0, 0, 0, 0], (2, 4), 0, MAX_EXTENT)
    out_pad = attr_ints(attrs, "output_padding", [0, 0], (0, 2), 0, MAX_EXTENT) if attrs.get("output_padding") \
        else [0, 0]
    for o, s, d in zip(out_pad, strides, dilations):
        if o >= max(s, d):
            raise ShapeError(f"output_padding {out_pad} must be smaller than the stride {strides} or the dilation "
                             f"{dilations}")
    attr_int(attrs, "groups", 1, 1, MAX_EXTENT)


def _out_hw(x_hw, k_hw, strides, pads, dilations, out_pad):
    """The output size, after checking it is the input of a convolution with these attributes whose output
    is ``x_hw`` (the shared geometry bounds; ``pad_hi - output_padding`` may be negative)."""
    top, left, bottom, right = pads
    oh = (x_hw[0] - 1) * strides[0] - top - bottom + dilations[0] * (k_hw[0] - 1) + out_pad[0] + 1
    ow = (x_hw[1] - 1) * strides[1] - left - right + dilations[1] * (k_hw[1] - 1) + out_pad[1] + 1
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"conv2d_transpose: output size {(oh, ow)} is not positive")
    for o, s, d in zip(out_pad, strides, dilations):
        if not 0 <= o < max(s, d):
            raise ShapeError(f"conv2d_transpose: output_padding {out_pad} must lie in [0, max(stride, dilation))")
    if check_geometry("conv2d_transpose", (oh, ow), k_hw, strides, _col_pads(pads, out_pad), dilations,
                      negative_hi=True) != tuple(x_hw):
        raise ShapeError(f"conv2d_transpose: input {tuple(x_hw)} does not match output {(oh, ow)}")
    return oh, ow


def _col_pads(pads, out_pad):
    top, left, bottom, right = pads
    return (top, left, bottom - out_pad[0], right - out_pad[1])


def _shape(attrs, x, w, b=None):
    strides, pads, dilations, out_pad, groups = _params(attrs)
    oh, ow = _out_hw(x[2:], w[2:], strides, pads, dilations, out_pad)
    return ((x[0], w[1] * groups, oh, ow),)


def _grad(ctx, attrs, gy):
    x, w, n_rest = ctx.saved
    strides, pads, dilations, out_pad, groups = _params(attrs)
    n, c, h, wd = x.shape
    _, ocg, kh, kw = w.shape
    cg = c // groups
    cols = _dispatch.im2col(gy, kh, kw, strides, _col_pads(pads, out_pad), dilations)  # (N, OC*kh*kw, H*W)
    cols = cols.reshape(n, groups, ocg * kh * kw, h * wd)
    wg = w.reshape(groups, cg, ocg * kh * kw)
    need = ctx.needs_input_grad or (True, True, True)
    gx = gw = gb = None
    if need[0]:
        gx = np.matmul(wg, cols).reshape(x.shape)
    if len(need) > 1 and need[1]:
        xg = x.reshape(n, groups, cg, h * wd)
        gw = np.einsum("ngcp,ngkp->gck", xg, cols).reshape(w.shape).astype(w.dtype, copy=False)
    if n_rest and len(need) > 2 and need[2]:
        gb = gy.sum(axis=(0, 2, 3))
    return (gx, gw) + ((gb,) if n_rest else ())


@register("conv2d_transpose", weight_inputs=(1,), out_arg="Output", backward=_grad, shape=_shape, check=_check)
def conv2d_transpose(ctx, attrs, x, w, *rest):
    """Transposed convolution: x (N, C, H, W), w (C, OC/groups, kh, kw), optional bias b (OC)."""
    b = rest[0] if rest else None
    strides, pads, dilations, out_pad, groups = _params(attrs)
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"conv2d_transpose: input {x.shape} and filter {w.shape} must both be 4-D")
    n, c, h, wd = x.shape
    cw, ocg, kh, kw = w.shape
    if groups < 1 or cw != c or c % groups:
        raise ValueError(f"conv2d_transpose: input has {c} channels, filter {w.shape} with groups={groups}")
    cg = c // groups
    oh, ow = _out_hw((h, wd), (kh, kw), strides, pads, dilations, out_pad)
    check_size("conv2d_transpose", n, groups * ocg * kh * kw, h * wd)
    check_size("conv2d_transpose", n, groups * ocg, oh, ow)
    wt = w.reshape(groups, cg, ocg * kh * kw).transpose(0, 2, 1)            # (g, OCg*kh*kw, Cg)
    cols = np.matmul(wt, x.reshape(n, groups, cg, h * wd))                  # (N, g, OCg*kh*kw, H*W)
    if strides == (kh, kw) and dilations == (1, 1) and not any(pads) and not any(out_pad):
        # windows that do not overlap (det heads' 2 x 2 stride 2 upsampling): each output is one column entry,
        # y[..., i*kh + a, j*kw + b] = cols[..., (a, b), i, j]; col2im's sums would add it to 0 (the same value,
        # but for the sign of a zero)
        cols = cols.reshape(n, groups * ocg, kh, kw, h, wd)
        y = np.empty((n, groups * ocg, h, kh, wd, kw), dtype=cols.dtype)
        for a in range(kh):
            for c in range(kw):
                y[:, :, :, a, :, c] = cols[:, :, a, c]
        y = y.reshape(n, groups * ocg, oh, ow)
    else:
        cols = cols.reshape(n, groups * ocg * kh * kw, h * wd)
        y = _dispatch.col2im(cols, (n, groups * ocg, oh, ow), kh, kw, strides, _col_pads(pads, out_pad), dilations)
    if b is not None:
        y = np.add(y, b.reshape(1, -1, 1, 1), out=y if np.result_type(y, b) == y.dtype else None)
    ctx.save(x, w, len(rest))
    return y.astype(x.dtype, copy=False)
