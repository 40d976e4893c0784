"""Fake quant ops and rounding rules vs Paddle 3.3.1's probed values (tests/data/conventions.json) and by hand."""
import json
from pathlib import Path

import numpy as np
import pytest

from refquant.ops import OPS, get_op
from refquant.reference import rounding
from tests.gradcheck import run_op

CONV = json.loads((Path(__file__).parent / "data" / "conventions.json").read_text())
X127 = np.array(CONV["input_x_with_scale_127"], dtype=np.float32)


def _entries(prefix):
    return [(k, v) for k, v in CONV["ops"].items() if k.startswith(prefix + "(")]


def _round_type(key, default):
    if "round_type=default" in key:
        return default
    return int(key.split("round_type=")[1][0])


@pytest.mark.parametrize("key,entry", _entries("fake_quantize_range_abs_max"))
def test_quantize_rule_vs_paddle_range_abs_max(key, entry):
    rt = _round_type(key, 1)
    q = rounding.quantize_op(X127, np.float32(127), 8, rt)
    np.testing.assert_array_equal(q, np.float32(entry["output"]))
    lo, hi = entry["clip"]
    assert q.min() >= lo and q.max() <= hi


@pytest.mark.parametrize("key,entry", _entries("fake_quantize_dequantize_moving_average_abs_max"))
def test_fake_quantize_dequantize_abs_max_vs_paddle(key, entry):
    rt = _round_type(key, 1)
    attrs = {} if "default" in key else {"round_type": rt}
    _, (y,) = run_op("fake_quantize_dequantize_abs_max", [X127, np.float32([127])], attrs)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.float32(entry["output"]))


@pytest.mark.parametrize("key,entry", _entries("quantize_linear"))
def test_quantize_linear_vs_paddle(key, entry):
    rt = _round_type(key, 0)
    attrs = {} if "default" in key else {"round_type": rt}
    _, (q,) = run_op("quantize_linear", [X127, np.float32([127]), np.zeros(1, np.int32)], attrs)
    np.testing.assert_array_equal(q, np.float32(entry["output"]))


@pytest.mark.parametrize("key,entry", _entries("fake_channel_wise_quantize_abs_max"))
def test_channel_wise_vs_paddle(key, entry):
    rt = _round_type(key, 1)
    x = np.float32(entry["input"])
    # Paddle's op computes its own abs-max scale (254 here) and outputs integers.
    np.testing.assert_array_equal(rounding.quantize_op(x, np.max(np.abs(x)), 8, rt), np.float32(entry["output"]))
    # The quant-dequant op without a scale input does the same and dequantizes: q * 254 / 127.
    attrs = {"quant_axis": 0} if "default" in key else {"quant_axis": 0, "round_type": rt}
    x2 = np.stack([x, 2 * x])  # two channels: 254 and 508
    _, (y,) = run_op("fake_channel_wise_quantize_dequantize_abs_max", [x2, None], attrs)
    np.testing.assert_array_equal(y[0], np.float32(entry["output"]) * np.float32(254) / np.float32(127))
    np.testing.assert_array_equal(y[1], np.float32(entry["output"]) * np.float32(508) / np.float32(127))


def test_observer_pair_and_dequantize_linear_vs_paddle():
    e = CONV["ops"]["quantize_linear+dequantize_linear(only_observer=True)"]
    attrs = {"only_observer": True}
    _, (q,) = run_op("quantize_linear", [X127, np.float32([127]), None], attrs)
    _, (y,) = run_op("dequantize_linear", [q, np.float32([127]), None], attrs)
    np.testing.assert_array_equal(q, np.float32(e["output_q"]))
    np.testing.assert_array_equal(y, np.float32(e["output_dq"]))
    e = CONV["ops"]["dequantize_linear(scale=2)"]
    _, (y,) = run_op("dequantize_linear", [np.float32(e["input"]), np.float32([2]), None], {})
    np.testing.assert_array_equal(y, np.float32(e["output"]))


def test_round_half_away_exact_near_half():
    x = np.float32([0.49999997, -0.49999997, 0.5, -0.5, 1.5, 2.5, -2.5, 3.4999998, 1e8, -0.0, 0.0])
    np.testing.assert_array_equal(rounding.round_half_away(x), np.float32([0, -0, 1, -1, 2, 3, -3, 3, 1e8, 0, 0]))
    np.testing.assert_array_equal(rounding.round_half_even(np.float32([0.5, 1.5, 2.5, -2.5])), [0, 2, 2, -2])


def test_inv_threshold_and_product_order():
    assert rounding.inv_threshold(0.0) == np.float32(1) / np.float32(1e-6)
    assert rounding.inv_threshold(2.0) == np.float32(0.5)
    # zero threshold: everything clips to [-0, 0] under round_type 1, to the integer range under round_type 0
    np.testing.assert_array_equal(rounding.quantize_op(np.float32([1, -1]), 0.0, 8, 1), [0, 0])
    np.testing.assert_array_equal(rounding.quantize_op(np.float32([1, -1]), 0.0, 8, 0), [127, -128])
    # the product (qmax * inv(T)) * x, scalar first, in float32
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10000).astype(np.float32)
    t = np.float32(0.7310001)
    want = rounding.round_half_away((np.float32(127) * (np.float32(1) / t)) * np.clip(x, -t, t))
    np.testing.assert_array_equal(rounding.quantize_op(x, t, 8, 1), want)


def test_qdq_output_formula_and_bits():
    x = np.float32([-3.0, -0.26, 0.0, 0.26, 0.9, 3.0])
    t = np.float32(1.0)
    _, (y,) = run_op("fake_quantize_dequantize_abs_max", [x, np.float32([t])], {"bit_length": 4})
    q = rounding.round_half_away(np.float32(7) * (np.float32(1) / t) * np.clip(x, -t, t))
    np.testing.assert_array_equal(y, (q * t) / np.float32(7))
    assert set(np.round(y * 7, 4)) <= set(range(-7, 8))
    # no scale input: T = max|x|
    _, (y2,) = run_op("fake_quantize_dequantize_abs_max", [x, None], {})
    np.testing.assert_array_equal(y2, rounding.quant_dequant_op(x, np.float32(3.0)))


def test_channel_wise_axis_and_paddle_scale_shape():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    t = np.max(np.abs(w), axis=0)
    _, (y,) = run_op("fake_channel_wise_quantize_dequantize_abs_max", [w, t.reshape(1, 3)], {"quant_axis": 1})
    for c in range(3):
        np.testing.assert_array_equal(y[:, c], rounding.quant_dequant_op(w[:, c], t[c]))
    with pytest.raises(ValueError):
        run_op("fake_channel_wise_quantize_dequantize_abs_max", [w, t], {"quant_axis": 0})


def test_freeze_weight_rules():
    # divide first then multiply, ties to even, clip to [-T, T]
    w = np.float32([[0.5, 1.5, 2.5, -2.5, 300.0, -300.0]])
    q = rounding.freeze_weight(w, np.float32([127.0]), axis=0)
    np.testing.assert_array_equal(q, [[0, 2, 2, -2, 127, -127]])
    q0 = rounding.freeze_weight(np.float32([[1.0, -1.0]]), np.float32([0.0]), axis=0)  # T=0 -> 1e-8
    np.testing.assert_array_equal(q0, [[127, -127]])
    qo = rounding.freeze_weight_onnx(np.float32([[-300.0, 127.5]]), np.float32([127.0]), axis=0)
    np.testing.assert_array_equal(qo, [[-128, 127]])
    np.testing.assert_array_equal(rounding.dequantize_weight(np.float32([[127, -64]]), np.float32([2.0]), 0),
                                  [[2.0, np.float32(-64) * np.float32(2) / np.float32(127)]])


@pytest.mark.parametrize("op_type,attrs,scale", [
    ("fake_quantize_dequantize_abs_max", {}, np.array([1.0])),
    ("fake_channel_wise_quantize_dequantize_abs_max", {"quant_axis": 0}, np.array([1.0, 0.5, 2.0])),
])
def test_straight_through_gradient(op_type, attrs, scale):
    """Paddle's straight_through_estimator_grad: dX = dOut, not masked; ste_clip=True masks |x| > T."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, (3, 5))  # float64, many values beyond T
    gy = rng.standard_normal(x.shape)
    ctx, (y,) = run_op(op_type, [x, scale], attrs)
    assert y.dtype == np.float64
    dx, dscale = get_op(op_type).backward(ctx, attrs, gy)
    assert dscale is None
    np.testing.assert_array_equal(dx, gy)
    clip_attrs = dict(attrs, ste_clip=True)
    ctx, _ = run_op(op_type, [x, scale], clip_attrs)
    dx, _ = get_op(op_type).backward(ctx, clip_attrs, gy)
    t = scale[0] if scale.size == 1 else scale.reshape(-1, 1)
    np.testing.assert_array_equal(dx, gy * (np.abs(x) <= t))
    assert np.any(dx == 0) and np.any(dx != 0)
    # the STE is exact for the float path it replaces: away from rounding steps, the forward's finite
    # difference is 0 or a jump, so compare the analytic rule on the identity (qdq(x) ~ x inside [-T, T])
    inside = np.abs(x) <= t
    np.testing.assert_allclose(y[inside], x[inside], atol=float(np.max(t)) / 127 / 2 + 1e-6)


def test_linear_pair_gradient_is_identity():
    x = np.linspace(-2, 2, 7)
    gy = np.arange(7.0)
    for op in ("quantize_linear", "dequantize_linear"):
        ctx, _ = run_op(op, [x, np.array([2.0]), None], {})
        dx, ds, dz = get_op(op).backward(ctx, {}, gy)
        np.testing.assert_array_equal(dx, gy)
        assert ds is None and dz is None


def test_ops_registered_with_docs():
    for name in ("fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_dequantize_abs_max",
                 "quantize_linear", "dequantize_linear"):
        assert OPS[name].doc and OPS[name].backward is not None and OPS[name].shape is not None


def test_quantize_linear_qat_form_by_hand():
    """The is_test attribute selects the QAT form: statistics in and out, updated only in training."""
    from refquant.ops import OpContext
    op = get_op("quantize_linear")
    x = np.float32([[3.0, -1.0], [0.5, -4.0]])
    attrs = {"quant_axis": -1, "bit_length": 8, "is_test": False, "moving_rate": 0.9}
    one = np.float32([1.0])
    q, s, st, ac = op.forward(OpContext(training=True), attrs, x, np.float32([0.001]), None, one, one)
    f = np.float32
    assert st[0] == f(0.9) + f(1) and ac[0] == f(0.9) + f(4) and s[0] == ac[0] / st[0]
    assert q[1, 1] == -128                                  # beyond T: clipped to -qmax - 1 (round_type 0)
    q2, s2, st2, _ = op.forward(OpContext(training=False), attrs, x, s, None, st, ac)
    assert s2 is s and st2 is st and np.array_equal(q2, q)   # eval: the stored threshold, unchanged
    # per channel: the scale becomes max|x| per channel in training, returned as the second output
    q, s = op.forward(OpContext(training=True), {"quant_axis": 1, "is_test": False}, x, np.float32([1, 1]), None)
    assert s.tolist() == [3.0, 4.0] and q.tolist() == [[127, -32], [21, -127]]
    with pytest.raises(ValueError, match="state and accum"):
        op.forward(OpContext(training=True), attrs, x, np.float32([1.0]), None)
    with pytest.raises(ValueError, match="QAT form"):
        op.forward(OpContext(), {}, x, np.float32([1.0]), None, one, one)
