"""Spatial resizing of NCHW maps: ``nearest_interp`` and ``bilinear_interp`` with ONNX Resize semantics.

Attributes (Paddle's op names, ONNX's coordinate rules):

* ``out_size`` [oh, ow], or ``scale`` [sh, sw] (a single number scales both). With a scale the output is
  ``floor(in * scale)`` and coordinates map through ``1 / scale``, exactly as ONNX Resize does with ``scales``;
  with an output size the ratio is ``out / in``. An optional second *input* (int tensor, [oh, ow] or an NCHW
  size vector of which the last two entries are used) overrides both, for sizes computed at run time.
* ``coordinate_transformation_mode``: ``half_pixel``, ``pytorch_half_pixel``, ``align_corners``,
  ``asymmetric``, ``tf_half_pixel_for_nn``. Default: ``align_corners`` if the ``align_corners`` attribute is
  true, else Paddle's defaults (``asymmetric`` for nearest, ``half_pixel`` for bilinear).
* ``nearest_mode`` (nearest only): ``floor``, ``ceil``, ``round_prefer_floor``, ``round_prefer_ceil``.
  Default ``round_prefer_ceil`` with align_corners (Paddle rounds), else ``floor``.

Source coordinates are computed in float32, as onnxruntime does, so index choices at exact .5 ties agree.
Bilinear clamps the source coordinate to ``[0, in - 1]`` (ONNX "linear" for 2-D spatial data).

Both resizes are separable linear maps ``y = A_h x A_w^T`` with an (out, in) matrix per axis; the forward
gathers rows and columns, the backward multiplies by the transposed matrices.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from ..errors import GraphError
from .registry import attr_choice, attr_float, attr_ints, register

_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
_NEAREST = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


def _pair(v):
    if isinstance(v, (int, float, np.integer, np.floating)):
        return [v, v]
    v = list(np.ravel(v))
    return v if len(v) == 2 else v[-2:]


def _check(attrs, inputs):
    """Load-time check: without a size input, an ``out_size`` (ints >= 1) or a ``scale`` (finite, > 0) is
    required; the coordinate and nearest modes are known ones."""
    if attrs.get("out_size") is not None:
        if min(attr_ints(attrs, "out_size", scalar_ok=True) or [0]) < 1:
            raise GraphError(f"attribute 'out_size' must be ints >= 1, got {attrs['out_size']!r}")
    elif attrs.get("scale") is not None:
        for v in _pair(attrs["scale"]):
            if not attr_float({"scale": v}, "scale") > 0:
                raise GraphError(f"attribute 'scale' must be > 0, got {attrs['scale']!r}")
    elif len(inputs) < 2 or not any(inputs[1:]):
        raise GraphError("needs an out_size or a scale attribute, or a size input")
    if attrs.get("coordinate_transformation_mode"):
        attr_choice(attrs, "coordinate_transformation_mode", _MODES)
    if attrs.get("nearest_mode"):
        attr_choice(attrs, "nearest_mode", _NEAREST)


def _plan(attrs, in_hw, size_input):
    """Output size and the per-axis scale the coordinate transform divides by (None when not given)."""
    if size_input is not None:
        out = [int(v) for v in _pair(np.asarray(size_input))]
        return out, [o / i for o, i in zip(out, in_hw)], True
    if attrs.get("out_size") is not None:
        out = [int(v) for v in _pair(attrs["out_size"])]
        return out, [o / i for o, i in zip(out, in_hw)], True
    if attrs.get("scale") is not None:
        scale = [float(v) for v in _pair(attrs["scale"])]
        out = [int(np.float32(i) * np.float32(s)) for i, s in zip(in_hw, scale)]
        return out, scale, False
    raise ValueError("interp needs an out_size or a scale")


def _mode(attrs, nearest: bool) -> str:
    mode = attrs.get("coordinate_transformation_mode")
    if not mode:
        mode = "align_corners" if attrs.get("align_corners") else ("asymmetric" if nearest else "half_pixel")
    if mode not in _MODES:
        raise ValueError(f"unsupported coordinate_transformation_mode {mode!r}; expected one of {_MODES}")
    return mode


def source_coords(n_out: int, n_in: int, scale: float, mode: str) -> np.ndarray:
    """Float32 source coordinate of each output index under ONNX's ``coordinate_transformation_mode``."""
    o = np.arange(n_out, dtype=np.float32)
    s = np.float32(scale)
    half = np.float32(0.5)
    if mode == "half_pixel":
        return (o + half) / s - half
    if mode == "pytorch_half_pixel":
        return (o + half) / s - half if n_out > 1 else np.zeros(n_out, np.float32)
    if mode == "align_corners":
        if n_out == 1:
            return np.zeros(1, np.float32)
        return o * np.float32(n_in - 1) / np.float32(n_out - 1)
    if mode == "asymmetric":
        return o / s
    if mode == "tf_half_pixel_for_nn":
        return (o + half) / s
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def nearest_index(coords: np.ndarray, n_in: int, nearest_mode: str) -> np.ndarray:
    if nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    elif nearest_mode == "round_prefer_floor":
        idx = np.ceil(coords - np.float32(0.5))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(coords + np.float32(0.5))
    else:
        raise ValueError(f"unknown nearest_mode {nearest_mode!r}; expected one of {_NEAREST}")
    return np.clip(idx.astype(np.int64), 0, n_in - 1)


def _axis_matrix(idx0, idx1, w1, n_in, dtype):
    """(out, in) matrix of a 1-D interpolation: row o has (1 - w1[o]) at idx0[o] and w1[o] at idx1[o]."""
    m = np.zeros((len(idx0), n_in), dtype=dtype)
    rows = np.arange(len(idx0))
    np.add.at(m, (rows, idx0), (1 - w1).astype(dtype))
    np.add.at(m, (rows, idx1), w1.astype(dtype))
    return m


def _separable_grad(ctx, attrs, gy):
    mh, mw, n_inputs = ctx.saved
    # y = mh @ x @ mw^T  =>  dx = mh^T @ dy @ mw
    gx = np.matmul(np.matmul(mh.T, gy), mw)
    return (gx,) + (None,) * (n_inputs - 1)


def _check_x(x, op):
    if x.ndim != 4:
        raise ValueError(f"{op} expects an NCHW input, got shape {x.shape}")


def _nearest_grad(ctx, attrs, gy):
    """The separable backward with nearest's matrices: row o has weight 1 at its source index."""
    iy, ix, (h, w), dtype, n_inputs = ctx.saved
    ctx.saved = (_axis_matrix(iy, iy, np.zeros(len(iy), np.float32), h, dtype),
                 _axis_matrix(ix, ix, np.zeros(len(ix), np.float32), w, dtype), n_inputs)
    return _separable_grad(ctx, attrs, gy)


@register("nearest_interp", observed=True, backward=_nearest_grad, check=_check)
def nearest_interp(ctx, attrs, x, *rest):
    """Nearest-neighbour resize of an NCHW map (ONNX Resize mode "nearest"): a C-contiguous copy gathered by
    source row and column (float32 by the compiled ``floatops.nearest_f32``)."""
    out_size = rest[0] if rest else None
    _check_x(x, "nearest_interp")
    h, w = x.shape[2:]
    (oh, ow), scale, _ = _plan(attrs, (h, w), out_size)
    mode = _mode(attrs, nearest=True)
    nmode = attrs.get("nearest_mode") or ("round_prefer_ceil" if mode == "align_corners" else "floor")
    iy = nearest_index(source_coords(oh, h, scale[0], mode), h, nmode)
    ix = nearest_index(source_coords(ow, w, scale[1], mode), w, nmode)
    ctx.save(iy, ix, (h, w), x.dtype, 1 + len(rest))
    if x.dtype == np.float32:
        return _dispatch.kernel("floatops").nearest_f32(np.ascontiguousarray(x), iy, ix)
    return np.ascontiguousarray(x[:, :, iy][:, :, :, ix])


def _linear_taps(n_out, n_in, scale, mode):
    c = np.clip(source_coords(n_out, n_in, scale, mode), np.float32(0), np.float32(n_in - 1))
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (c - i0.astype(np.float32))


@register("bilinear_interp", observed=True, backward=_separable_grad, check=_check)
def bilinear_interp(ctx, attrs, x, *rest):
    """Bilinear resize of an NCHW map (ONNX Resize mode "linear")."""
    out_size = rest[0] if rest else None
    _check_x(x, "bilinear_interp")
    h, w = x.shape[2:]
    (oh, ow), scale, _ = _plan(attrs, (h, w), out_size)
    mode = _mode(attrs, nearest=False)
    y0, y1, wy = _linear_taps(oh, h, scale[0], mode)
    x0, x1, wx = _linear_taps(ow, w, scale[1], mode)
    wy = wy.astype(x.dtype)[:, None]
    wx = wx.astype(x.dtype)
    rows = x[:, :, y0] * (1 - wy) + x[:, :, y1] * wy
    y = rows[:, :, :, x0] * (1 - wx) + rows[:, :, :, x1] * wx
    ctx.save(_axis_matrix(y0, y1, wy[:, 0], h, x.dtype), _axis_matrix(x0, x1, wx, w, x.dtype),
             1 + len(rest))
    return y.astype(x.dtype, copy=False)

