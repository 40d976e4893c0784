"""im2col / col2im, the NumPy twins of ``kernels/im2col.pyx``, and the window-geometry validator every conv,
pool, INT8 conv and depthwise path shares (compiled and twin).

For an input ``x`` of shape (N, C, H, W), a kernel (kh, kw), ``stride`` (sh, sw), ``padding``
(top, left, bottom, right) and ``dilation`` (dh, dw), the output grid is

    OH = (H + top + bottom - dh*(kh-1) - 1) // sh + 1,   OW likewise,

and ``cols[n, (c*kh + i)*kw + j, oh*OW + ow] = x[n, c, oh*sh - top + i*dh, ow*sw - left + j*dw]``
(zero where that falls in the padding). A convolution is then ``W.reshape(OC, C*kh*kw) @ cols``.
``col2im`` is the adjoint: it scatters-adds the columns back, which is the input gradient of im2col.

Geometry bounds (:func:`check_geometry`): every extent, kernel size, stride, dilation and padding lies in
[0, 2**31) (kernel, stride, dilation >= 1), the padded extent ``H + top + bottom`` too, and the dilated window
``dh*(kh-1) + 1`` fits it. Then every index the kernels form (``oh*sh - top + i*dh``, ``iw0 + (kw-1)*dw``, row
offsets) is below 2**63 in magnitude, so the C code's ``ptrdiff_t`` arithmetic cannot wrap. Paddings are >= 0;
only internal callers pass ``negative_hi=True`` (ceil-mode pooling, transposed convs with ``output_padding``),
whose computed bottom / right paddings may be negative: those crop rows no window reaches, and are bounded
below by ``-(H + top)``. Array sizes built from the geometry go through :func:`check_size`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import ShapeError

MAX_EXTENT = 2**31 - 1   # largest extent, kernel, stride, dilation, padding or padded extent
MAX_ELEMENTS = 2**48     # largest element count of an array sized from a geometry (far above any real tensor)


def geometry_int(what, name, v, lo=0, hi=MAX_EXTENT) -> int:
    """``v`` as an int in [lo, hi]: an integer (or an integral float, as JSON may spell one), never a bool."""
    if type(v) is int:  # the common case first (the ABC check below costs microseconds per call)
        pass
    elif isinstance(v, (bool, np.bool_)):
        raise ShapeError(f"{what}: {name} must be an int, got {v!r}")
    elif isinstance(v, (numbers.Integral, np.integer)):
        v = int(v)
    elif isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        v = int(v)
    else:
        raise ShapeError(f"{what}: {name} must be an int, got {v!r}")
    if not lo <= v <= hi:
        raise ShapeError(f"{what}: {name} must lie in [{lo}, {hi}], got {v}")
    return v


def geometry_ints(what, name, v, n, lo=0, hi=MAX_EXTENT) -> tuple:
    """A sequence of exactly ``n`` ints, each in [lo, hi]."""
    if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != n:
        raise ShapeError(f"{what}: {name} must be {n} ints, got {v!r}")
    return tuple(geometry_int(what, name, e, lo, hi) for e in v)


def check_window(what, axis, size, k, stride, lo, hi, dilation, *, negative_hi=False) -> int:
    """The output length of one axis, ``(size + lo + hi - dilation*(k-1) - 1) // stride + 1``, after checking
    every value against the bounds of the module docstring. A window that does not fit the padded extent gives
    a negative length, which is an error; 0 (it just misses) is allowed here, callers that need >= 1 check."""
    size = geometry_int(what, f"input extent ({axis})", size)
    k = geometry_int(what, f"kernel size ({axis})", k, 1)
    stride = geometry_int(what, f"stride ({axis})", stride, 1)
    dilation = geometry_int(what, f"dilation ({axis})", dilation, 1)
    lo = geometry_int(what, f"padding before ({axis})", lo)
    hi = geometry_int(what, f"padding after ({axis})", hi, -(size + lo) if negative_hi else 0)
    padded = size + lo + hi
    if padded > MAX_EXTENT:
        raise ShapeError(f"{what}: padded extent {size} + {lo} + {hi} on {axis} exceeds {MAX_EXTENT}")
    span = dilation * (k - 1) + 1
    if span > padded + stride:
        raise ShapeError(f"{what}: kernel {k} with dilation {dilation} (extent {span}) does not fit the padded "
                         f"input extent {padded} on {axis}")
    return (padded - span) // stride + 1


def window_args(what, stride, padding, dilation):
    """``(stride, padding, dilation)`` as tuples of Python ints: 2, 4 (top, left, bottom, right) and 2 values."""
    stride, padding, dilation = (tuple(int(t) for t in v) for v in (stride, padding, dilation))
    if len(stride) != 2 or len(dilation) != 2 or len(padding) != 4:
        raise ValueError(f"{what}: stride and dilation must be 2 ints, padding 4, got {stride}, {dilation}, "
                         f"{padding}")
    return stride, padding, dilation


def check_geometry(what, hw, kernel, stride, padding, dilation=(1, 1), *, negative_hi=False,
                   min_out=0) -> tuple[int, int]:
    """(OH, OW) of a window walk over an (H, W) input; ``padding`` is (top, left, bottom, right). Raises
    :class:`ShapeError` (a ValueError) naming ``what`` when a value is out of bounds or the output has fewer
    than ``min_out`` rows / columns.

    A model checks a few geometries on every run (an op, then the kernel it calls): results for arguments of plain
    ints in tuples are remembered (the message names ``what`` only when raising, and errors are not remembered)."""
    return remembered(_GEOMETRIES, (hw, kernel, stride, padding, dilation), (negative_hi, min_out),
                      lambda: _walk(what, hw, kernel, stride, padding, dilation, negative_hi, min_out))


def _walk(what, hw, kernel, stride, padding, dilation, negative_hi, min_out) -> tuple[int, int]:
    kernel = geometry_ints(what, "kernel", kernel, 2, 1)
    stride = geometry_ints(what, "stride", stride, 2, 1)
    dilation = geometry_ints(what, "dilation", dilation, 2, 1)
    if not isinstance(padding, (list, tuple, np.ndarray)) or len(padding) != 4:
        raise ShapeError(f"{what}: padding must be 4 ints (top, left, bottom, right), got {padding!r}")
    oh = check_window(what, "H", hw[0], kernel[0], stride[0], padding[0], padding[2], dilation[0],
                      negative_hi=negative_hi)
    ow = check_window(what, "W", hw[1], kernel[1], stride[1], padding[1], padding[3], dilation[1],
                      negative_hi=negative_hi)
    if oh < min_out or ow < min_out:
        raise ShapeError(f"{what}: kernel {kernel} with dilation {dilation} and stride {stride} does not fit "
                         f"the padded input {tuple(hw)} + padding {tuple(padding)} (output {(oh, ow)})")
    return oh, ow


_GEOMETRIES: dict = {}  # check_geometry's results by argument, for tuples of plain ints only


def remembered(cache: dict, values: tuple, extra: tuple, compute):
    """``compute()``, remembered in ``cache`` under ``values + extra`` when every one of ``values`` is an int or a
    tuple of ints, exactly (a bool, float or NumPy integer equals an int as a key, so it is checked on every call
    instead); ``extra`` (flags, names) completes the key. Errors are never remembered; past 256 entries the cache
    starts over."""
    if not all(type(v) is int or (type(v) is tuple and all(type(e) is int for e in v)) for v in values):
        return compute()
    key = values + extra
    hit = cache.get(key)
    if hit is None:
        if len(cache) > 256:
            cache.clear()
        hit = cache[key] = compute()
    return hit


def check_size(what, *dims) -> int:
    """The element count ``prod(dims)`` of an array sized from a geometry, computed without overflow; raises
    :class:`ShapeError` above :data:`MAX_ELEMENTS` rather than letting a wrapped size reach an allocation."""
    count = math.prod(int(d) for d in dims)
    if any(int(d) < 0 for d in dims) or count > MAX_ELEMENTS:
        raise ShapeError(f"{what}: an array of shape {tuple(int(d) for d in dims)} is too large "
                         f"({count} elements, at most {MAX_ELEMENTS})")
    return count


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def _geometry(what, shape, kh, kw, stride, padding, dilation):
    """Validated (oh, ow) and normalized ((kh, kw), stride, padding, dilation) of an im2col / col2im call;
    ``shape`` is the image's (N, C, H, W). Shared with the compiled module."""
    kernel = geometry_ints(what, "kernel", (kh, kw), 2, 1)
    stride = geometry_ints(what, "stride", stride, 2, 1)
    dilation = geometry_ints(what, "dilation", dilation, 2, 1)
    padding = geometry_ints(what, "padding", padding, 4, -MAX_EXTENT)
    oh, ow = check_geometry(what, shape[2:4], kernel, stride, padding, dilation, negative_hi=True)
    n, c, h, w = shape
    check_size(what, n, c, *kernel, oh, ow)
    check_size(what, n, c, h + padding[0] + max(padding[2], 0), w + padding[1] + max(padding[3], 0))
    return oh, ow, kernel, stride, padding, dilation


def im2col(x: np.ndarray, kh: int, kw: int, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ShapeError(f"im2col: expected an (N, C, H, W) array, got {getattr(x, 'shape', type(x).__name__)}")
    oh, ow, (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw) = _geometry("im2col", x.shape, kh, kw, stride,
                                                                                padding, dilation)
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (top, max(bottom, 0)), (left, max(right, 0))))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols[:, :, i, j] = xp[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols: np.ndarray, x_shape, kh: int, kw: int, stride=(1, 1), padding=(0, 0, 0, 0),
           dilation=(1, 1)) -> np.ndarray:
    x_shape = geometry_ints("col2im", "x_shape", x_shape, 4)
    oh, ow, (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw) = _geometry("col2im", x_shape, kh, kw, stride,
                                                                                padding, dilation)
    n, c, h, w = x_shape
    cols = np.asarray(cols)
    if cols.size != n * c * kh * kw * oh * ow:
        raise ShapeError(f"col2im: columns of shape {cols.shape} do not match {(n, c * kh * kw, oh * ow)}")
    xp = np.zeros((n, c, h + top + max(bottom, 0), w + left + max(right, 0)), dtype=cols.dtype)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            xp[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return xp[:, :, top:top + h, left:left + w]
