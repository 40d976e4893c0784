"""Every differentiable op's backward against central finite differences in float64 (tests/gradcheck.py).

Inputs stay away from kinks (relu at 0, clip bounds, hard_swish corners) so the finite differences are exact
up to rounding; random normal inputs make max-pool ties improbable.
"""
from __future__ import annotations

import numpy as np
import pytest

from refquant.ops import OPS
from tests.gradcheck import check_grad, run_op

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape)


def uniform(lo, hi, *shape, away=()):
    """Uniform values in [lo, hi), each at least 0.05 from every point in ``away``."""
    x = rng.uniform(lo, hi, shape)
    for k in away:
        near = np.abs(x - k) < 0.05
        x[near] = k + np.where(x[near] >= k, 0.1, -0.1)
    return x


def ints(*shape, high):
    return rng.integers(0, high, shape)


CASES = [
    # ---- activations
    ("relu", lambda: [uniform(-2, 2, 3, 4, away=[0])], {}),
    ("relu6", lambda: [uniform(-2, 8, 3, 4, away=[0, 6])], {}),
    ("relu6", lambda: [uniform(-2, 4, 3, 4, away=[0, 3])], {"threshold": 3.0}),
    ("hard_sigmoid", lambda: [uniform(-4, 4, 3, 4, away=[-2.5, 2.5])], {}),
    ("hard_sigmoid", lambda: [uniform(-4, 4, 3, 4, away=[-3, 3])], {"slope": 1 / 6, "offset": 0.5}),
    ("hard_swish", lambda: [uniform(-5, 5, 3, 4, away=[-3, 3])], {}),
    ("hard_swish", lambda: [uniform(-3, 3, 3, 4, away=[-1, 1])], {"threshold": 2.0, "scale": 4.0, "offset": 1.0}),
    ("sigmoid", lambda: [randn(3, 4)], {}),
    ("tanh", lambda: [randn(3, 4)], {}),
    ("gelu", lambda: [randn(3, 4) * 2], {}),
    ("gelu", lambda: [randn(3, 4) * 2], {"approximate": True}),
    ("clip", lambda: [uniform(-1, 1, 3, 4, away=[-0.5, 0.7])], {"min": -0.5, "max": 0.7}),
    ("softmax", lambda: [randn(2, 3, 4)], {}),
    ("softmax", lambda: [randn(2, 3, 4)], {"axis": 1}),
    ("softmax", lambda: [randn(2, 3, 4)], {"axis": 0}),
    ("log_softmax", lambda: [randn(2, 3, 4)], {}),
    ("log_softmax", lambda: [randn(2, 3, 4)], {"axis": 1}),
    ("sqrt", lambda: [uniform(0.5, 2, 3, 4)], {}),
    ("exp", lambda: [randn(3, 4)], {}),
    ("log", lambda: [uniform(0.5, 2, 3, 4)], {}),
    ("scale", lambda: [randn(3, 4)], {"scale": 2.5, "bias": 1.0}),
    ("scale", lambda: [randn(3, 4)], {"scale": -0.5, "bias": 1.0, "bias_after_scale": False}),
    # ---- elementwise: same shapes, NumPy broadcasting both ways, Paddle's axis rule
    *[(op, lambda: [randn(2, 3), randn(2, 3)], {}) for op in ("elementwise_add", "elementwise_sub",
                                                             "elementwise_mul")],
    *[(op, lambda: [randn(2, 3, 4), randn(3, 1)], {}) for op in ("elementwise_add", "elementwise_sub",
                                                                "elementwise_mul")],
    ("elementwise_mul", lambda: [randn(4), randn(2, 3, 4)], {}),
    ("elementwise_add", lambda: [randn(2, 3, 4, 2), randn(3, 4)], {"axis": 1}),
    ("elementwise_mul", lambda: [randn(2, 3, 4, 2), randn(2, 3)], {"axis": 0}),
    ("elementwise_sub", lambda: [randn(2, 3), randn(2, 3, 4)], {"axis": 0}),
    ("elementwise_div", lambda: [randn(2, 3, 4), uniform(-2, 2, 4, away=[0])], {}),
    ("elementwise_div", lambda: [randn(2, 3, 4, 2), uniform(0.5, 2, 3, 1)], {"axis": 1}),
    ("elementwise_pow", lambda: [uniform(0.5, 2, 2, 3, 4), randn(3, 4)], {}),
    ("elementwise_pow", lambda: [uniform(0.5, 2, 2, 3), randn(2, 3, 4)], {"axis": 0}),
    ("elementwise_max", lambda: [randn(2, 3, 4), randn(3, 4)], {}),
    ("elementwise_min", lambda: [randn(2, 3, 4), randn(2, 3)], {"axis": 0}),
    # ---- convolution: bias, stride, asymmetric padding, dilation, groups, depthwise with a multiplier
    ("conv2d", lambda: [randn(2, 3, 5, 5), randn(4, 3, 3, 3), randn(4)], {}),
    ("conv2d", lambda: [randn(2, 3, 6, 5), randn(4, 3, 3, 2)],
     {"strides": [2, 1], "paddings": [1, 0, 2, 1], "dilations": [2, 1]}),
    ("conv2d", lambda: [randn(1, 4, 5, 5), randn(6, 2, 3, 3), randn(6)], {"groups": 2, "paddings": [1, 1]}),
    ("conv2d", lambda: [randn(2, 3, 4, 4), randn(5, 3, 1, 1)], {"strides": [2, 2]}),
    ("depthwise_conv2d", lambda: [randn(2, 3, 5, 5), randn(3, 1, 3, 3), randn(3)],
     {"groups": 3, "strides": [2, 2], "paddings": [1, 1, 1, 1]}),
    ("depthwise_conv2d", lambda: [randn(1, 2, 6, 5), randn(4, 1, 3, 2)],
     {"groups": 2, "paddings": [2, 0, 1, 1], "dilations": [2, 1]}),
    ("conv2d", lambda: [randn(1, 3, 5, 5), randn(3, 1, 2, 2)], {"groups": 3, "strides": [2, 1]}),
    # ---- dense
    ("mul", lambda: [randn(2, 3, 4), randn(4, 5)], {"x_num_col_dims": 2}),
    ("mul", lambda: [randn(2, 3, 4), randn(3, 4, 5)], {"x_num_col_dims": 1, "y_num_col_dims": 2}),
    ("fc", lambda: [randn(3, 4), randn(4, 5), randn(5)], {}),
    ("fc", lambda: [randn(2, 3, 4), randn(4, 5)], {"in_num_col_dims": 2}),
    ("matmul", lambda: [randn(2, 3), randn(3, 4)], {}),
    ("matmul", lambda: [randn(2, 1, 4, 3), randn(5, 2, 4)], {"trans_x": True, "trans_y": True}),
    ("matmul", lambda: [randn(2, 3, 4), randn(2, 4)], {"trans_y": True}),
    ("matmul", lambda: [randn(3), randn(2, 3, 4)], {}),
    ("matmul", lambda: [randn(2, 3, 4), randn(4)], {}),
    # ---- normalisation
    ("layer_norm", lambda: [randn(2, 3, 4), randn(12), randn(12)], {}),
    ("layer_norm", lambda: [randn(2, 3, 4), randn(4), randn(4)], {"begin_norm_axis": 2, "epsilon": 1e-3}),
    ("layer_norm", lambda: [randn(3, 5)], {}),
    # ---- pooling: floor / ceil mode, padding, exclusive / inclusive averages, global
    ("pool2d", lambda: [randn(1, 2, 5, 5)], {"ksize": [2, 2], "strides": [2, 2], "ceil_mode": True}),
    ("pool2d", lambda: [randn(2, 2, 5, 6)], {"ksize": [3, 3], "strides": [2, 2], "paddings": [1, 1, 1, 1]}),
    ("pool2d", lambda: [randn(1, 2, 5, 5)], {"pooling_type": "avg", "ksize": [3, 3], "strides": [2, 2],
                                              "paddings": [1, 1, 1, 1], "ceil_mode": True}),
    ("pool2d", lambda: [randn(1, 2, 5, 5)], {"pooling_type": "avg", "ksize": [2, 3], "strides": [2, 2],
                                              "paddings": [0, 1, 1, 0], "exclusive": False, "ceil_mode": True}),
    ("pool2d", lambda: [randn(2, 3, 3, 4)], {"pooling_type": "avg", "ksize": [1, 1], "global_pooling": True}),
    ("pool2d", lambda: [randn(2, 3, 3, 4)], {"pooling_type": "max", "ksize": [1, 1], "global_pooling": True}),
    # ---- shape ops and reductions
    ("reshape", lambda: [randn(2, 3, 4)], {"shape": [0, -1]}),
    ("flatten", lambda: [randn(2, 3, 2, 2)], {"start_axis": 1, "stop_axis": 2}),
    ("transpose", lambda: [randn(2, 3, 4)], {"perm": [2, 0, 1]}),
    ("concat", lambda: [randn(2, 3), randn(1, 3), randn(3, 3)], {}),
    ("concat", lambda: [randn(2, 1, 2), randn(2, 3, 2)], {"axis": 1}),
    ("concat", lambda: [randn(2, 3), randn(2, 2)], {"axis": -1}),
    ("stack", lambda: [randn(2, 3), randn(2, 3), randn(2, 3)], {"axis": 1}),
    *[("pad3d", lambda: [randn(1, 2, 3, 3, 4)], {"paddings": [2, 1, 1, 2, 0, 1], "mode": mode})
      for mode in ("constant", "reflect", "replicate", "circular")],
    ("pad3d", lambda: [randn(1, 2, 3, 4, 2)], {"paddings": [1, 1, 1, 0, 0, 0], "data_format": "NDHWC"}),
    ("mean", lambda: [randn(3, 4)], {}),
    ("reduce_mean", lambda: [randn(2, 3, 4)], {"dim": [1], "keep_dim": True}),
    ("reduce_mean", lambda: [randn(2, 3, 4)], {"dim": [0, -1]}),
    ("reduce_sum", lambda: [randn(2, 3, 4)], {}),
    ("reduce_sum", lambda: [randn(2, 3, 4)], {"dim": [0, 2], "keep_dim": True}),
    # ---- losses
    ("softmax_with_cross_entropy", lambda: [randn(4, 5), np.array([[1], [0], [-100], [4]])], {}),
    ("softmax_with_cross_entropy", lambda: [randn(4, 5), np.array([3, 0, 2, 2])], {"ignore_index": 2}),
    ("softmax_with_cross_entropy", lambda: [randn(2, 3, 4), ints(2, 1, 4, high=3)], {"axis": 1}),
    ("cross_entropy", lambda: [uniform(0.1, 1, 4, 5), np.array([[1], [0], [-100], [4]])], {}),
]


@pytest.mark.parametrize("op_type, make_inputs, attrs", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_grad(op_type, make_inputs, attrs):
    check_grad(op_type, make_inputs(), attrs)


def test_reshape_with_shape_tensor_grad():
    check_grad("reshape", [randn(2, 3, 4), np.array([4, -1], dtype=np.int64)], {"shape": [1]}, wrt=[0])


def test_fc_relu_grad():
    x, w, b = randn(3, 4), randn(4, 5), randn(5)
    (y,) = run_op("fc", [x, w, b], {})[1]
    assert np.abs(y).min() > 1e-3  # the relu kink stays out of reach of the finite differences
    check_grad("fc", [x, w, b], {"activation_type": "relu"})


def test_lookup_table_grad():
    ids = np.array([[0, 2, 5], [2, 1, 1]])
    check_grad("lookup_table", [randn(6, 3), ids], {}, wrt=[0])
    check_grad("lookup_table", [randn(6, 3), ids], {"padding_idx": 2}, wrt=[0])


@pytest.mark.parametrize("x_shape", [(4, 3, 2, 2), (5, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("use_global_stats", [False, True])
def test_batch_norm_grad(x_shape, training, use_global_stats):
    """``use_global_stats`` (frozen running statistics in training, as QAT of the PP-OCR inference graphs uses):
    a fixed affine map, whose gradient lacks the batch-statistics terms."""
    inputs = [randn(*x_shape), randn(3), randn(3), randn(3), uniform(0.5, 2, 3)]
    attrs = {"epsilon": 1e-3, "use_global_stats": use_global_stats}
    check_grad("batch_norm", inputs, attrs, wrt=[0, 1, 2], training=training, out_index=0)


def test_batch_norm_use_global_stats_freezes_statistics():
    x, scale, bias, mean, var = randn(4, 3, 2, 2), randn(3), randn(3), randn(3), uniform(0.5, 2, 3)
    attrs = {"epsilon": 1e-3, "use_global_stats": True}
    _, (y, m_out, v_out) = run_op("batch_norm", [x, scale, bias, mean, var], attrs, training=True)
    _, (y_eval, _, _) = run_op("batch_norm", [x, scale, bias, mean, var], {"epsilon": 1e-3}, training=False)
    np.testing.assert_array_equal(y, y_eval)
    np.testing.assert_array_equal(m_out, mean)
    np.testing.assert_array_equal(v_out, var)


@pytest.mark.parametrize("impl", ["upscale_in_train", "downgrade_in_infer"])
@pytest.mark.parametrize("training", [True, False])
def test_dropout_grad(impl, training):
    """The gradcheck reseeds ctx.rng for every forward, so the mask is fixed and must match the backward's."""
    check_grad("dropout", [randn(4, 5)], {"dropout_prob": 0.3, "dropout_implementation": impl},
               training=training)


@pytest.mark.parametrize("op_type, inputs, attrs", [
    ("conv2d", [randn(2, 3, 5, 5), randn(4, 3, 3, 3), randn(4)], {}),
    ("depthwise_conv2d", [randn(2, 3, 5, 5), randn(3, 1, 3, 3), randn(3)], {"groups": 3}),
])
def test_conv_skips_input_grad(op_type, inputs, attrs):
    ctx, (y,) = run_op(op_type, inputs, attrs)
    ctx.needs_input_grad = (False, True, True)
    dx, dw, db = OPS[op_type].backward(ctx, attrs, np.ones_like(y))
    assert dx is None and dw.shape == inputs[1].shape and db.shape == (inputs[1].shape[0],)


def test_every_differentiable_op_is_checked():
    checked = {c[0] for c in CASES} | {"lookup_table", "batch_norm", "dropout"}
    mine = {t for t, d in OPS.items() if d.backward is not None and d.forward.__module__.rsplit(".", 1)[-1]
            in {"activations", "elementwise", "conv", "norm", "pool", "nn", "shape", "reduce", "loss"}}
    assert mine <= checked, sorted(mine - checked)
