"""Forward values against independent references, shape rules against forwards, and a tiny model end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest

from refquant import _dispatch, executor
from refquant.graph import Model, Op, TensorSpec
from refquant.ops import OPS, conv
from tests.gradcheck import run_op

rng = np.random.default_rng(1)


def randn(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def fwd(op_type, inputs, attrs=None, training=False):
    outs = run_op(op_type, inputs, attrs or {}, training)[1]
    return outs[0] if len(outs) == 1 else outs


# ---- convolution and pooling against naive loops ------------------------------------------------------
def naive_conv2d(x, w, b, stride, pad, dilation, groups):
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    top, left, bottom, right = pad
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, oc, oh, ow))
    for s in range(n):
        for o in range(oc):
            g = o // (oc // groups)
            for p in range(oh):
                for q in range(ow):
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                r, c = p * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]
                                y[s, o, p, q] += w[o, ci, i, j] * xp[s, g * cg + ci, r, c]
            y[s, o] += 0 if b is None else b[o]
    return y


CONV_CASES = [
    # x shape, w shape, bias, strides, paddings, dilations, groups
    ((2, 3, 6, 6), (4, 3, 3, 3), True, [1, 1], [1, 1, 1, 1], [1, 1], 1),
    ((1, 3, 7, 6), (5, 3, 3, 2), False, [2, 1], [0, 1, 2, 0], [1, 2], 1),
    ((2, 4, 5, 5), (6, 2, 3, 3), True, [1, 2], [1, 0, 1, 0], [1, 1], 2),
    ((2, 3, 6, 6), (3, 1, 3, 3), True, [2, 2], [1, 1, 1, 1], [1, 1], 3),
    ((1, 2, 7, 7), (6, 1, 3, 3), False, [1, 1], [2, 2, 2, 2], [2, 2], 2),
    ((1, 4, 4, 4), (8, 4, 1, 1), True, [1, 1], [0, 0, 0, 0], [1, 1], 1),
]


@pytest.mark.parametrize("x_shape, w_shape, bias, strides, paddings, dilations, groups", CONV_CASES)
def test_conv2d_matches_naive_loops(x_shape, w_shape, bias, strides, paddings, dilations, groups):
    x, w = randn(*x_shape), randn(*w_shape)
    b = randn(w_shape[0]) if bias else None
    attrs = {"strides": strides, "paddings": paddings, "dilations": dilations, "groups": groups}
    y = fwd("conv2d", [x, w] + ([b] if bias else []), attrs)
    np.testing.assert_allclose(y, naive_conv2d(x, w, b, strides, paddings, dilations, groups), atol=1e-12)


def test_conv2d_paddle_symmetric_paddings_and_float32():
    x, w = randn(1, 3, 5, 5, dtype=np.float32), randn(2, 3, 3, 3, dtype=np.float32)
    y = fwd("conv2d", [x, w], {"paddings": [1, 2]})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, naive_conv2d(x, w, None, [1, 1], [1, 2, 1, 2], [1, 1], 1), rtol=1e-5, atol=1e-5)


def test_conv2d_chunks_give_the_same_result(monkeypatch):
    x, w, b = randn(5, 3, 6, 6), randn(4, 3, 3, 3), randn(4)
    ctx, (y,) = run_op("conv2d", [x, w, b], {"paddings": [1, 1, 1, 1]})
    ctx.needs_input_grad = (True, True, True)
    grads = OPS["conv2d"].backward(ctx, {"paddings": [1, 1, 1, 1]}, y)
    monkeypatch.setattr(conv, "_COLS_BYTES", 2 * 27 * 36 * 8)  # two samples per chunk
    ctx2, (y2,) = run_op("conv2d", [x, w, b], {"paddings": [1, 1, 1, 1]})
    ctx2.needs_input_grad = (True, True, True)
    grads2 = OPS["conv2d"].backward(ctx2, {"paddings": [1, 1, 1, 1]}, y)
    np.testing.assert_allclose(y2, y, atol=1e-12)
    for g, g2 in zip(grads, grads2):
        np.testing.assert_allclose(g2, g, atol=1e-10)


def naive_pool(x, k, s, pad, ceil_mode, pooling_type, exclusive):
    n, c, h, w = x.shape
    top, left, bottom, right = pad

    def out_size(size, k, s, lo, hi):
        if not ceil_mode:
            return (size + lo + hi - k) // s + 1
        out = math.ceil((size + lo + hi - k) / s) + 1
        return out - 1 if (out - 1) * s >= size + lo else out

    oh, ow = out_size(h, k[0], s[0], top, bottom), out_size(w, k[1], s[1], left, right)
    y = np.zeros((n, c, oh, ow))
    for p in range(oh):
        for q in range(ow):
            r0, c0 = p * s[0] - top, q * s[1] - left
            r1, c1 = max(r0, 0), max(c0, 0)
            r2, c2 = min(r0 + k[0], h), min(c0 + k[1], w)
            win = x[:, :, r1:r2, c1:c2]
            if pooling_type == "max":
                y[:, :, p, q] = win.max(axis=(2, 3))
            else:
                y[:, :, p, q] = win.sum(axis=(2, 3)) / (win.shape[2] * win.shape[3] if exclusive else k[0] * k[1])
    return y


@pytest.mark.parametrize("pooling_type", ["max", "avg"])
@pytest.mark.parametrize("k, s, pad, ceil_mode, exclusive", [
    ([2, 2], [2, 2], [0, 0, 0, 0], False, True),
    ([2, 2], [2, 2], [0, 0, 0, 0], True, True),
    ([3, 3], [2, 2], [1, 1, 1, 1], False, True),
    ([3, 3], [2, 2], [1, 1, 1, 1], True, False),
    ([3, 2], [2, 3], [1, 0, 0, 1], True, True),
    ([3, 3], [1, 1], [1, 1, 1, 1], False, False),
])
def test_pool2d_matches_naive_loops(pooling_type, k, s, pad, ceil_mode, exclusive):
    x = randn(2, 3, 7, 8)
    attrs = {"pooling_type": pooling_type, "ksize": k, "strides": s, "paddings": pad, "ceil_mode": ceil_mode,
             "exclusive": exclusive}
    np.testing.assert_allclose(fwd("pool2d", [x], attrs), naive_pool(x, k, s, pad, ceil_mode, pooling_type,
                                                                     exclusive), atol=1e-12)


def test_pool2d_ceil_mode_drops_a_window_starting_in_the_right_padding():
    # (5 + 1 + 1 - 2) / 2 = 2.5 -> ceil 3 + 1 = 4 windows, but the 4th would start at 6 >= 5 + 1: dropped
    y = fwd("pool2d", [randn(1, 1, 5, 5)], {"ksize": [2, 2], "strides": [2, 2], "paddings": [1, 1, 1, 1],
                                            "ceil_mode": True})
    assert y.shape == (1, 1, 3, 3)


def test_global_pooling():
    x = randn(2, 3, 4, 5)
    avg = {"pooling_type": "avg", "ksize": [1, 1], "global_pooling": True}
    np.testing.assert_allclose(fwd("pool2d", [x], avg), x.mean(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(fwd("pool2d", [x], {"ksize": [1, 1], "global_pooling": True}),
                               x.max(axis=(2, 3), keepdims=True))
    # data_format NHWC (what convert_to_int8 emits between NHWC tensors): the same numbers, transposed
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(fwd("pool2d", [nhwc], {**avg, "data_format": "NHWC"}).transpose(0, 3, 1, 2),
                               x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)

    # the float32 NHWC global average is the compiled kernel (float64 sums in pixel order) or its twin: same bits
    x32 = nhwc.astype(np.float32)
    gap = fwd("pool2d", [x32], {**avg, "data_format": "NHWC"})
    with _dispatch.use_reference():
        assert np.array_equal(fwd("pool2d", [x32], {**avg, "data_format": "NHWC"}), gap)


@pytest.mark.parametrize("attrs", [
    {"pooling_type": "max", "ksize": [2, 2], "strides": [2, 2]},
    {"pooling_type": "max", "ksize": [3, 3], "strides": [2, 2], "paddings": [1, 1], "ceil_mode": True},
    {"pooling_type": "avg", "ksize": [3, 3], "strides": [2, 2], "paddings": [1, 1, 1, 1]},
    {"pooling_type": "avg", "ksize": [3, 3], "strides": [2, 2], "paddings": [1, 1, 1, 1], "exclusive": False},
    {"pooling_type": "avg", "ksize": [2, 3], "strides": [2, 1], "paddings": [0, 1, 0, 1], "ceil_mode": True},
    {"pooling_type": "avg", "ksize": [3, 2], "strides": [3, 2]}])  # PP-OCR rec's last pool
def test_windowed_pooling_on_nhwc_equals_nchw(attrs):
    x = randn(2, 5, 7, 11).astype(np.float32)
    want = fwd("pool2d", [x], attrs)
    got = fwd("pool2d", [np.ascontiguousarray(x.transpose(0, 2, 3, 1))], {**attrs, "data_format": "NHWC"})
    assert np.array_equal(got.transpose(0, 3, 1, 2), want)
    assert OPS["pool2d"].shape({**attrs, "data_format": "NHWC"}, (2, 7, 11, 5)) == (got.shape,)


def test_max_pool_gradient_goes_to_the_first_of_tied_maxima():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])
    ctx, (y,) = run_op("pool2d", [x], {"ksize": [2, 2], "strides": [2, 2]})
    ctx.needs_input_grad = (True,)
    (dx,) = OPS["pool2d"].backward(ctx, {"ksize": [2, 2], "strides": [2, 2]}, np.ones_like(y))
    np.testing.assert_array_equal(dx, [[[[0, 1], [0, 0]]]])


# ---- activations and normalisation against their formulas ---------------------------------------------
def test_hard_swish_and_hard_sigmoid_formulas():
    x = np.linspace(-8, 8, 33)
    np.testing.assert_allclose(fwd("hard_swish", [x]), x * np.minimum(np.maximum(x + 3, 0), 6) / 6)
    np.testing.assert_allclose(fwd("hard_swish", [x], {"threshold": 4.0, "scale": 5.0, "offset": 2.0}),
                               x * np.minimum(np.maximum(x + 2, 0), 4) / 5)
    np.testing.assert_allclose(fwd("hard_sigmoid", [x]), np.minimum(np.maximum(0.2 * x + 0.5, 0), 1))
    np.testing.assert_allclose(fwd("hard_sigmoid", [x], {"slope": 1 / 6, "offset": 0.5}),
                               np.minimum(np.maximum(x / 6 + 0.5, 0), 1))


def test_gelu_relu6_clip_scale_forms():
    x = np.linspace(-4, 8, 25)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(fwd("gelu", [x]), 0.5 * x * (1 + erf(x / math.sqrt(2))))
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(fwd("gelu", [x], {"approximate": True}), tanh_form)
    np.testing.assert_allclose(fwd("relu6", [x]), np.minimum(np.maximum(x, 0), 6))
    np.testing.assert_allclose(fwd("clip", [x], {"min": -1.0, "max": 2.0}), np.minimum(np.maximum(x, -1), 2))
    np.testing.assert_allclose(fwd("scale", [x], {"scale": 2.0, "bias": 3.0, "bias_after_scale": False}),
                               2 * (x + 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_without_bias_is_one_product(dtype):
    x = np.array([-2.5, -0.0, 0.0, 1.0, np.inf, -np.inf, np.nan, 3e38], dtype=dtype)
    with np.errstate(all="ignore"):  # 3e38 * 2 overflows in float32, 0 * inf is NaN
        for s in (2.0, -0.5, 0.0, 1.0):
            y = fwd("scale", [x], {"scale": s, "bias": 0.0})
            assert y.dtype == dtype and y.tobytes() == (s * x).tobytes()
            assert fwd("scale", [x], {"scale": s}).tobytes() == y.tobytes()  # bias defaults to 0
    np.testing.assert_array_equal(fwd("scale", [x[:4]], {"scale": 2.0, "bias": 1.0}), 2 * x[:4] + 1)
    assert np.signbit(fwd("scale", [x[:2]], {"scale": 2.0})[1])  # -0 stays -0 (no "+ 0.0" pass)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_rows_sum_to_one_and_are_stable(axis):
    x = randn(3, 4, 5) * 10 + 1000
    y = fwd("softmax", [x], {"axis": axis})
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=axis), 1.0)
    np.testing.assert_allclose(fwd("log_softmax", [x], {"axis": axis}), np.log(y), atol=1e-12)


def test_layer_norm_formula():
    x, scale, bias = randn(2, 3, 4), randn(12), randn(12)
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(1, 2), keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-5) * scale.reshape(3, 4) + bias.reshape(3, 4)
    np.testing.assert_allclose(fwd("layer_norm", [x, scale, bias]), want, atol=1e-12)


def test_batch_norm_eval_formula_returns_running_stats_unchanged():
    x, scale, bias, mean, var = randn(2, 3, 4, 4), randn(3), randn(3), randn(3), rng.uniform(0.5, 2, 3)
    y, mean_out, var_out = fwd("batch_norm", [x, scale, bias, mean, var], {"epsilon": 1e-3})
    c = (1, 3, 1, 1)
    want = (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + 1e-3) * scale.reshape(c) + bias.reshape(c)
    np.testing.assert_allclose(y, want, atol=1e-12)
    assert mean_out is mean and var_out is var


def test_batch_norm_training_uses_batch_stats_and_updates_running_stats_with_biased_variance():
    x, scale, bias, mean, var = randn(4, 3, 2, 2), randn(3), randn(3), randn(3), rng.uniform(0.5, 2, 3)
    y, mean_out, var_out = fwd("batch_norm", [x, scale, bias, mean, var], {"momentum": 0.8}, training=True)
    mu, bvar = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    c = (1, 3, 1, 1)
    want = (x - mu.reshape(c)) / np.sqrt(bvar.reshape(c) + 1e-5) * scale.reshape(c) + bias.reshape(c)
    np.testing.assert_allclose(y, want, atol=1e-12)
    np.testing.assert_allclose(mean_out, 0.8 * mean + 0.2 * mu)
    np.testing.assert_allclose(var_out, 0.8 * var + 0.2 * bvar)


# ---- dense, elementwise, lookup, dropout, losses ----------------------------------------------------
def test_mul_num_col_dims_reshape():
    x, w = randn(2, 3, 4, 5), randn(4, 5, 6)
    y = fwd("mul", [x, w], {"x_num_col_dims": 2, "y_num_col_dims": 2})
    assert y.shape == (2, 3, 6)
    np.testing.assert_allclose(y, np.einsum("abcd,cde->abe", x, w))
    y = fwd("mul", [x, randn(60, 7)], {})
    assert y.shape == (2, 7)


def test_fc_and_matmul():
    x, w, b = randn(2, 3, 4), randn(4, 5), randn(5)
    np.testing.assert_allclose(fwd("fc", [x, w, b], {"in_num_col_dims": 2, "activation_type": "relu"}),
                               np.maximum(x @ w + b, 0))
    np.testing.assert_allclose(fwd("fc", [x, randn(12, 5)], {}).shape, (2, 5))
    a, c = randn(2, 4, 3), randn(5, 1, 2, 4)
    np.testing.assert_allclose(fwd("matmul", [a, c], {"trans_x": True, "trans_y": True}),
                               np.swapaxes(a, -1, -2) @ np.swapaxes(c, -1, -2))


def test_elementwise_axis_rule_and_integer_division():
    x, y = randn(2, 3, 4, 5), randn(3, 4)
    np.testing.assert_allclose(fwd("elementwise_add", [x, y], {"axis": 1}), x + y[None, :, :, None])
    v, z = randn(2), randn(5)
    np.testing.assert_allclose(fwd("elementwise_mul", [x, v], {"axis": 0}), x * v[:, None, None, None])
    np.testing.assert_allclose(fwd("elementwise_sub", [z, x], {}), z - x)
    np.testing.assert_allclose(fwd("elementwise_div", [y, x], {"axis": 1}), y[None, :, :, None] / x)
    q = fwd("elementwise_div", [np.array([7, -7, 6]), np.array([2, 2, -4])])
    np.testing.assert_array_equal(q, [3, -3, -1])


def test_lookup_table_padding_row_reads_zeros():
    w, ids = randn(5, 3), np.array([[0, 2], [4, 2]])
    y = fwd("lookup_table", [w, ids], {"padding_idx": 2})
    assert y.shape == (2, 2, 3)
    np.testing.assert_array_equal(y[0, 1], 0)
    np.testing.assert_allclose(y[1, 0], w[4])
    with pytest.raises(IndexError):
        fwd("lookup_table", [w, np.array([5])])


def test_dropout_modes():
    x = np.ones((200, 50))
    y = fwd("dropout", [x], {"dropout_prob": 0.3}, training=True)
    assert set(np.unique(y)) <= {0.0, 1 / 0.7} and abs((y == 0).mean() - 0.3) < 0.02
    y = fwd("dropout", [x], {"dropout_prob": 0.3, "dropout_implementation": "downgrade_in_infer"}, training=True)
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(fwd("dropout", [x], {"dropout_prob": 0.3}), x)
    np.testing.assert_allclose(fwd("dropout", [x], {"dropout_prob": 0.3,
                                                    "dropout_implementation": "downgrade_in_infer"}), 0.7 * x)


def test_softmax_with_cross_entropy_values_and_ignore_index():
    logits = randn(4, 5) * 50
    label = np.array([[1], [0], [-100], [4]])
    softmax, loss = fwd("softmax_with_cross_entropy", [logits, label])
    assert loss.shape == (4, 1) and np.all(np.isfinite(loss))
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax, np.exp(logp))
    np.testing.assert_allclose(loss[:, 0], [-logp[0, 1], -logp[1, 0], 0.0, -logp[3, 4]])
    p = np.exp(logp)
    np.testing.assert_allclose(fwd("cross_entropy", [p, label]), loss, rtol=1e-6, atol=1e-12)


# ---- shape rules and dtypes, for every op of these modules --------------------------------------------
def _f32(*shape):
    return randn(*shape, dtype=np.float32)


SAMPLES = {
    **{op: ([_f32(2, 3)], {}) for op in ["relu", "relu6", "hard_sigmoid", "hard_swish", "sigmoid", "tanh",
                                         "gelu", "softmax", "log_softmax", "exp", "scale"]},
    "clip": ([_f32(2, 3)], {"min": -0.5, "max": 0.5}),
    "sqrt": ([np.abs(_f32(2, 3))], {}),
    "log": ([np.abs(_f32(2, 3)) + 0.1], {}),
    **{op: ([_f32(2, 3, 4, 5), _f32(3, 4)], {"axis": 1}) for op in ["elementwise_add", "elementwise_sub",
                                                                 "elementwise_mul", "elementwise_div"]},
    "elementwise_pow": ([np.abs(_f32(4, 1)) + 0.1, _f32(2, 1, 3)], {}),
    "elementwise_max": ([_f32(2, 3, 4), _f32(3, 1)], {"axis": 1}),
    "elementwise_min": ([_f32(2, 3), _f32(2, 3)], {}),
    "conv2d": ([_f32(2, 4, 7, 6), _f32(6, 2, 3, 3), _f32(6)],
               {"strides": [2, 1], "paddings": [1, 0, 2, 1], "dilations": [1, 2], "groups": 2}),
    "depthwise_conv2d": ([_f32(2, 3, 7, 6), _f32(6, 1, 3, 3)],
                         {"strides": [2, 2], "paddings": [1, 1], "groups": 3}),
    "conv2d_bias_act": ([_f32(2, 4, 7, 6), _f32(6, 2, 3, 3), _f32(6)],
                        {"strides": [2, 1], "paddings": [1, 0, 2, 1], "groups": 2, "activation": "relu6"}),
    "mul": ([_f32(2, 3, 4), _f32(4, 5)], {"x_num_col_dims": 2}),
    "fc": ([_f32(2, 3, 4), _f32(12, 5), _f32(5)], {}),
    "matmul": ([_f32(2, 1, 4, 3), _f32(4, 5)], {"trans_x": True}),
    "batch_norm": ([_f32(2, 3, 4, 4), _f32(3), _f32(3), _f32(3), np.abs(_f32(3))], {}),
    "layer_norm": ([_f32(2, 3, 4), _f32(4), _f32(4)], {"begin_norm_axis": 2}),
    "pool2d": ([_f32(2, 3, 7, 7)], {"pooling_type": "avg", "ksize": [3, 3], "strides": [2, 2],
                                    "paddings": [1, 1, 1, 1], "ceil_mode": True}),
    "lookup_table": ([_f32(6, 4), np.array([[1, 2, 3]])], {}),
    "dropout": ([_f32(3, 4)], {}),
    "reshape": ([_f32(2, 3, 4)], {"shape": [0, 2, -1]}),
    "flatten": ([_f32(2, 3, 4, 5)], {"start_axis": 1, "stop_axis": 2}),
    "transpose": ([_f32(2, 3, 4)], {"perm": [1, 2, 0]}),
    "concat": ([_f32(2, 3), _f32(2, 4)], {"axis": 1}),
    "stack": ([_f32(2, 3), _f32(2, 3)], {"axis": -1}),
    "pad3d": ([_f32(1, 2, 2, 3, 4)], {"paddings": [1, 2, 0, 1, 1, 0], "mode": "reflect"}),
    "mean": ([_f32(2, 3)], {}),
    "reduce_mean": ([_f32(2, 3, 4)], {"dim": [1, 2], "keep_dim": True}),
    "reduce_sum": ([_f32(2, 3, 4)], {"dim": [-1]}),
    "softmax_with_cross_entropy": ([_f32(4, 5), np.array([1, 2, 3, 4])], {}),
    "cross_entropy": ([np.abs(_f32(4, 5)) + 0.1, np.array([[1], [2], [3], [4]])], {}),
}
MODULES = {"activations", "elementwise", "conv", "norm", "pool", "nn", "shape", "reduce", "loss"}


def test_samples_cover_every_op_of_these_modules():
    mine = {t for t, d in OPS.items() if d.forward.__module__.rsplit(".", 1)[-1] in MODULES}
    assert mine == set(SAMPLES)


@pytest.mark.parametrize("op_type", sorted(SAMPLES))
def test_shape_rule_and_float32_dtype(op_type):
    inputs, attrs = SAMPLES[op_type]
    outs = run_op(op_type, inputs, attrs)[1]
    for out in outs:
        assert out.dtype == np.float32, (op_type, out.dtype)
    opdef = OPS[op_type]
    if opdef.shape is not None:
        want = opdef.shape(attrs, *[x.shape for x in inputs])
        assert [tuple(s) for s in want] == [o.shape for o in outs]


# ---- a tiny model through the executor's tape -------------------------------------------------------
def _tiny_model(dtype):
    params = {
        "w": randn(4, 2, 3, 3, dtype=dtype) * 0.5, "b": randn(4, dtype=dtype),
        "bn_s": 1 + 0.1 * randn(4, dtype=dtype), "bn_b": 0.1 * randn(4, dtype=dtype),
        "bn_m": np.zeros(4, dtype), "bn_v": np.ones(4, dtype), "fc_w": randn(16, 3, dtype=dtype) * 0.5,
    }
    ops = [
        Op("conv2d", ["x", "w", "b"], ["c"], {"paddings": [1, 1, 1, 1]}, "conv"),
        Op("batch_norm", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n", "bn_m", "bn_v"], {}, "bn"),
        Op("relu", ["n"], ["r"], {}, "relu"),
        Op("pool2d", ["r"], ["p"], {"ksize": [2, 2], "strides": [2, 2]}, "pool"),
        Op("flatten", ["p"], ["f"], {}, "flatten"),
        Op("mul", ["f", "fc_w"], ["logits"], {}, "fc"),
        Op("softmax_with_cross_entropy", ["logits", "label"], ["prob", "ce"], {}, "ce"),
        Op("mean", ["ce"], ["loss"], {}, "mean"),
    ]
    inputs = [TensorSpec("x", (None, 2, 4, 4), np.dtype(dtype).name), TensorSpec("label", (None, 1), "int64")]
    return Model(ops, params, inputs, ["loss"], trainable=["w", "b", "bn_s", "bn_b", "fc_w"])


def test_tiny_model_forward_backward_through_the_tape():
    model = _tiny_model(np.float32)
    feeds = {"x": randn(3, 2, 4, 4, dtype=np.float32), "label": np.array([[0], [2], [1]])}
    env, tape = executor.forward(model, feeds, training=True, rng=np.random.default_rng(0), record=True)
    assert env["loss"].shape == () and env["loss"].dtype == np.float32
    assert not np.allclose(model.params["bn_m"], 0)  # running statistics were updated
    grads = executor.backward(model, env, tape, {"loss": np.ones((), np.float32)})
    for name in model.trainable:
        assert grads[name].shape == model.params[name].shape and grads[name].dtype == np.float32
    assert "x" not in grads and "bn_m" not in grads
    assert model.infer_shapes({"x": (3, 2, 4, 4), "label": (3, 1)})["logits"] == (3, 3)


def test_tiny_model_gradient_matches_finite_differences():
    model = _tiny_model(np.float64)
    feeds = {"x": randn(3, 2, 4, 4), "label": np.array([[0], [2], [1]])}

    def loss():
        return float(executor.forward(model.copy(), feeds, training=True)[0]["loss"])

    env, tape = executor.forward(model.copy(), feeds, training=True, record=True)
    grads = executor.backward(model, env, tape, {"loss": np.ones(())})
    for name, index in [("w", (1, 0, 2, 1)), ("bn_s", (2,)), ("fc_w", (5, 1)), ("b", (3,))]:
        value = model.params[name][index]
        model.params[name][index] = value + 1e-6
        up = loss()
        model.params[name][index] = value - 1e-6
        down = loss()
        model.params[name][index] = value
        np.testing.assert_allclose(grads[name][index], (up - down) / 2e-6, rtol=1e-5, atol=1e-8)
