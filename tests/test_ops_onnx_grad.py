"""Gradient checks (central differences, float64) of the ops the ONNX importer adds: conv2d_transpose,
nearest_interp / bilinear_interp, slice, squeeze / unsqueeze, gather, expand, cast; plus forward checks of
conv2d_transpose against a direct scatter loop and of the interp modes against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from refquant.ops import get_op
from tests.gradcheck import check_grad, run_op


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _conv_t_loop(x, w, b, strides, pads, out_pad, dil, groups):
    """Direct definition: every input pixel scatters w * x into the output."""
    n, c, h, wd = x.shape
    _, ocg, kh, kw = w.shape
    oh = (h - 1) * strides[0] - pads[0] - pads[2] + dil[0] * (kh - 1) + out_pad[0] + 1
    ow = (wd - 1) * strides[1] - pads[1] - pads[3] + dil[1] * (kw - 1) + out_pad[1] + 1
    y = np.zeros((n, ocg * groups, oh, ow))
    cg = c // groups
    for ci in range(c):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for bb in range(kw):
                        r = i * strides[0] - pads[0] + a * dil[0]
                        q = j * strides[1] - pads[1] + bb * dil[1]
                        if 0 <= r < oh and 0 <= q < ow:
                            y[:, g * ocg:(g + 1) * ocg, r, q] += x[:, ci, i, j, None] * w[ci, :, a, bb]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


CONV_T = [
    # cin, ocg, groups, k, strides, pads, output_padding, dilations, bias
    (2, 3, 1, (2, 2), (2, 2), (0, 0, 0, 0), (0, 0), (1, 1), False),
    (4, 1, 2, (3, 2), (2, 1), (1, 0, 1, 1), (1, 0), (1, 1), True),
    (2, 2, 1, (3, 3), (3, 2), (1, 1, 0, 2), (2, 1), (2, 1), True),
    (3, 1, 3, (3, 3), (1, 1), (1, 1, 1, 1), (0, 0), (1, 1), False),   # depthwise
    (4, 3, 2, (3, 2), (3, 2), (0, 0, 0, 0), (0, 0), (1, 1), True),    # windows that do not overlap
]


@pytest.mark.parametrize("cin,ocg,groups,k,strides,pads,out_pad,dil,bias", CONV_T)
def test_conv2d_transpose_forward_matches_loop(cin, ocg, groups, k, strides, pads, out_pad, dil, bias):
    x, w = rnd(2, cin, 4, 3, seed=1), rnd(cin, ocg, *k, seed=2)
    b = rnd(ocg * groups, seed=3) if bias else None
    attrs = {"strides": list(strides), "paddings": list(pads), "output_padding": list(out_pad),
             "dilations": list(dil), "groups": groups}
    _, (y,) = run_op("conv2d_transpose", [x, w] + ([b] if bias else []), attrs)
    np.testing.assert_allclose(y, _conv_t_loop(x, w, b, strides, pads, out_pad, dil, groups), atol=1e-12)
    shape = get_op("conv2d_transpose").shape(attrs, x.shape, w.shape, *([b.shape] if bias else []))[0]
    assert tuple(shape) == y.shape


@pytest.mark.parametrize("cin,ocg,groups,k,strides,pads,out_pad,dil,bias", CONV_T)
def test_conv2d_transpose_grad(cin, ocg, groups, k, strides, pads, out_pad, dil, bias):
    x, w = rnd(1, cin, 3, 3, seed=4), rnd(cin, ocg, *k, seed=5)
    inputs = [x, w] + ([rnd(ocg * groups, seed=6)] if bias else [])
    attrs = {"strides": list(strides), "paddings": list(pads), "output_padding": list(out_pad),
             "dilations": list(dil), "groups": groups}
    check_grad("conv2d_transpose", inputs, attrs)


INTERP = [
    ("nearest_interp", {"scale": [2.0, 2.0], "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    ("nearest_interp", {"out_size": [7, 4], "coordinate_transformation_mode": "half_pixel",
                        "nearest_mode": "round_prefer_floor"}),
    ("nearest_interp", {"out_size": [2, 9], "align_corners": True}),
    ("bilinear_interp", {"scale": [2.0, 1.5], "coordinate_transformation_mode": "half_pixel"}),
    ("bilinear_interp", {"out_size": [5, 2], "coordinate_transformation_mode": "align_corners"}),
    ("bilinear_interp", {"out_size": [6, 7], "coordinate_transformation_mode": "asymmetric"}),
    ("bilinear_interp", {"out_size": [1, 3], "coordinate_transformation_mode": "pytorch_half_pixel"}),
]


@pytest.mark.parametrize("op_type,attrs", INTERP)
def test_interp_grad(op_type, attrs):
    check_grad(op_type, [rnd(2, 2, 3, 4, seed=7)], attrs)


def test_interp_runtime_size_input_has_no_grad():
    x = rnd(1, 2, 3, 4, seed=8)
    check_grad("nearest_interp", [x, np.array([1, 2, 5, 6], np.int64)], {"coordinate_transformation_mode":
                                                                      "asymmetric", "nearest_mode": "floor"}, wrt=[0])
    _, (y,) = run_op("bilinear_interp", [x, np.array([5, 6], np.int64)], {})
    assert y.shape == (1, 2, 5, 6)


def test_interp_forward_known_values():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    _, (y,) = run_op("nearest_interp", [x], {"scale": 2.0, "coordinate_transformation_mode": "asymmetric",
                                              "nearest_mode": "floor"})
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    _, (y,) = run_op("bilinear_interp", [x], {"out_size": [3, 3], "align_corners": True})
    np.testing.assert_allclose(y[0, 0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    _, (y,) = run_op("bilinear_interp", [x], {"scale": [2, 2], "coordinate_transformation_mode": "half_pixel"})
    np.testing.assert_allclose(y[0, 0, 0], [0, 0.25, 0.75, 1])   # edges clamp


@pytest.mark.parametrize("attrs", [
    {"starts": [1], "ends": [2 ** 63 - 1], "axes": [1], "steps": [1]},
    {"starts": [-1, 0], "ends": [-2 ** 63 + 1, 3], "axes": [2, 0], "steps": [-2, 2]},
    {"starts": [0, 1], "ends": [100, -1], "axes": [-1, -2], "steps": [2, 1]},
])
def test_slice_grad(attrs):
    check_grad("slice", [rnd(3, 4, 5, seed=9)], attrs)


def test_slice_tensor_bounds_grad():
    x = rnd(3, 4, seed=10)
    inputs = [x, np.array([1]), np.array([4]), np.array([1]), None]
    check_grad("slice", inputs, {}, wrt=[0])
    _, (y,) = run_op("slice", inputs, {})
    np.testing.assert_array_equal(y, x[:, 1:4])


@pytest.mark.parametrize("op_type,attrs,shape", [
    ("squeeze", {"axes": [1, -1]}, (3, 1, 4, 1)), ("squeeze", {"axes": None}, (1, 3, 1)),
    ("unsqueeze", {"axes": [0, -1]}, (3, 4)), ("unsqueeze", {"axes": [1, 3]}, (2, 3)),
])
def test_squeeze_unsqueeze_grad(op_type, attrs, shape):
    check_grad(op_type, [rnd(*shape, seed=11)], attrs)


def test_squeeze_rejects_non_unit_axis():
    with pytest.raises(ValueError, match="not 1"):
        run_op("squeeze", [rnd(2, 3)], {"axes": [0]})


def test_gather_expand_cast_grad():
    check_grad("gather", [rnd(4, 3, seed=12), np.array([[3, 0], [-1, 3]])], {"axis": 0}, wrt=[0])
    check_grad("gather", [rnd(2, 5, seed=13), np.array(2)], {"axis": 1}, wrt=[0])
    check_grad("expand", [rnd(3, 1, seed=14), np.array([2, 3, 4])], {}, wrt=[0])
    check_grad("cast", [rnd(2, 3, seed=15)], {"dtype": "float64"})


def test_shape_op():
    _, (s,) = run_op("shape", [np.zeros((2, 3, 4))], {})
    assert s.dtype == np.int64 and list(s) == [2, 3, 4]
    _, (s,) = run_op("shape", [np.zeros((2, 3, 4))], {"start": 1, "end": -1})
    assert list(s) == [3]
