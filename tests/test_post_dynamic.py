"""Dynamic (weight-only) PTQ: bit-exact against Paddle 3.3.1's WeightQuantization on the oracle LeNet, model
sizes, the INT16 accuracy of the trained zoo LeNet, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import refquant
from refquant.models import lenet5
from refquant.quant.post_dynamic import quant_post_dynamic

DATA = Path(__file__).parent / "data"
ORACLE_JSON, ORACLE_NPZ = DATA / "weight_quant_lenet.json", DATA / "weight_quant_lenet.npz"
needs_oracle = pytest.mark.skipif(not (ORACLE_JSON.exists() and ORACLE_NPZ.exists()),
                                  reason="tests/data/weight_quant_lenet.* absent")


@pytest.fixture(scope="module")
def oracle_lenet():
    """The oracle LeNet (28x28, Paddle's names) carrying Paddle's FP32 weights."""
    model = lenet5(input_size=28, bias_style="add")
    with np.load(DATA / "lenet_fp32_weights.npz") as w:
        for name in w.files:
            assert model.params[name].shape == w[name].shape
            model.params[name] = w[name]
    return model


@pytest.fixture(scope="module")
def oracle():
    with open(ORACLE_JSON) as f:
        info = json.load(f)
    with np.load(ORACLE_NPZ) as z:
        arrays = {k: z[k] for k in z.files}
    return info, arrays


def _variant_kwargs(cfg):
    return dict(weight_bits=cfg["weight_bits"], weight_quantize_type=cfg["weight_quantize_type"],
                threshold_rate=cfg["threshold_rate"], quantizable_op_type=("conv2d", "depthwise_conv2d", "mul"))


@needs_oracle
@pytest.mark.parametrize("variant", ["w8_abs_max", "w8_channel_wise_abs_max", "w16_abs_max",
                                     "w16_channel_wise_abs_max", "w8_abs_max_threshold_rate_1e-3"])
def test_matches_paddle_weight_quantization(oracle_lenet, oracle, variant):
    info, arrays = oracle
    cfg = info["variants"][variant]
    qm = quant_post_dynamic(oracle_lenet, **_variant_kwargs(cfg))
    tm = quant_post_dynamic(oracle_lenet, generate_test_model=True, **_variant_kwargs(cfg))
    for w, winfo in cfg["weights"].items():
        q, scale = qm.params[w], qm.params[f"{w}_quant_scale"]
        assert q.dtype == np.dtype(winfo["saved_dtype"]) == arrays[f"{variant}|{w}|q"].dtype
        np.testing.assert_array_equal(q, arrays[f"{variant}|{w}|q"])
        np.testing.assert_array_equal(scale, arrays[f"{variant}|{w}|scale"])
        assert scale.dtype == np.float32 and scale.size == len(winfo["scale"])
        # the dequantize_weight op, the test model and q * scale all give Paddle's dequantized weights
        deq = qm.run({"x": np.zeros((1, 1, 28, 28), np.float32)}, outputs=[f"{w}.dequantized"])[f"{w}.dequantized"]
        np.testing.assert_array_equal(deq, tm.params[w])
        assert tm.params[w].dtype == np.float32
        if f"{variant}|{w}|dequant" in arrays:
            np.testing.assert_array_equal(deq, arrays[f"{variant}|{w}|dequant"])
        op = next(o for o in qm.ops if f"{w}.dequantized" in o.inputs)
        assert op.attrs["quantization_type"] == "post_" + ("weight_" + cfg["weight_quantize_type"])
        assert op.attrs["quantize_weight_bits"] == cfg["weight_bits"]
    # biases (read by elementwise_add, not a quantizable op) stay float
    assert qm.params["fc_0.b_0"].dtype == np.float32


def test_graph_shape_and_input_untouched(oracle_lenet):
    before = {k: v.copy() for k, v in oracle_lenet.params.items()}
    qm = quant_post_dynamic(oracle_lenet)
    for k, v in before.items():
        np.testing.assert_array_equal(oracle_lenet.params[k], v)
        assert oracle_lenet.params[k].dtype == v.dtype
    assert qm.op_counts()["dequantize_weight"] == 5
    assert "dequantize_weight" not in oracle_lenet.op_counts()
    # per-channel: axis 0 for conv, axis 1 for mul
    assert qm.params["conv2d_1.w_0_quant_scale"].shape == (16,)
    assert qm.params["fc_0.w_0_quant_scale"].shape == (120,)
    assert not ({"conv2d_0.w_0", "fc_0.w_0"} & qm.trainable)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref = oracle_lenet.run({"x": x})[oracle_lenet.outputs[0]]
    out = qm.run({"x": x})[qm.outputs[0]]
    test_model = quant_post_dynamic(oracle_lenet, generate_test_model=True)
    np.testing.assert_array_equal(out, test_model.run({"x": x})[test_model.outputs[0]])
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    shapes = qm.infer_shapes({"x": (2, 1, 28, 28)})
    assert shapes[qm.outputs[0]] == (2, 10)
    assert shapes["fc_0.w_0.dequantized"] == (400, 120)


def test_only_listed_op_types(oracle_lenet):
    qm = quant_post_dynamic(oracle_lenet, quantizable_op_type=["mul"])
    assert qm.params["conv2d_0.w_0"].dtype == np.float32
    assert qm.params["fc_2.w_0"].dtype == np.int8


def test_shared_weight_quantized_once():
    x = refquant.TensorSpec("x", (None, 4))
    w = np.arange(1, 13, dtype=np.float32).reshape(4, 3) / 7
    ops = [refquant.Op("mul", ["x", "w"], ["h"], name="m0"), refquant.Op("mul", ["x", "w"], ["g"], name="m1"),
           refquant.Op("elementwise_add", ["h", "g"], ["y"], name="add")]
    model = refquant.Model(ops, {"w": w}, [x], ["y"])
    qm = quant_post_dynamic(model, weight_bits=16)
    assert qm.op_counts()["dequantize_weight"] == 1 and qm.params["w"].dtype == np.int16
    # hand-worked: column c has max |w| = w[3, c]; q = around(w / (max / 32767))
    np.testing.assert_array_equal(qm.params["w_quant_scale"], (w[3] / 32767).astype(np.float32))
    assert qm.params["w"][3].tolist() == [32767] * 3
    xin = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(qm.run({"x": xin})["y"], model.run({"x": xin})["y"], rtol=1e-4)


def _size(model, tmp_path, name):
    return refquant.save(model, tmp_path / f"{name}.rq").stat().st_size


@pytest.mark.parametrize("zoo_name", ["vgg_small"])
def test_saved_size_quarter_and_half(tmp_path, zoo_name):
    from refquant.models.pretrained import pretrained
    model = pretrained(zoo_name, train_if_missing=False)
    ops = ("conv2d", "depthwise_conv2d", "mul")
    fp32 = _size(model, tmp_path, "fp32")
    int8 = _size(quant_post_dynamic(model, 8, ops), tmp_path, "int8")
    int16 = _size(quant_post_dynamic(model, 16, ops), tmp_path, "int16")
    assert 0.24 < int8 / fp32 < 0.30, (fp32, int8)
    assert 0.49 < int16 / fp32 < 0.55, (fp32, int16)
    loaded = refquant.load(tmp_path / "int8.rq")
    x = np.random.default_rng(1).standard_normal((2, 1, 16, 16)).astype(np.float32)
    q8 = quant_post_dynamic(model, 8, ops)
    np.testing.assert_array_equal(loaded.run({"x": x})[loaded.outputs[0]], q8.run({"x": x})[q8.outputs[0]])


def _top1(model, x, y):
    logits = model.run({"x": x})[model.outputs[0]]
    return float((logits.argmax(-1) == y).mean())


def test_int16_accuracy_equals_fp32_on_trained_lenet5():
    from refquant.data import load_digits
    from refquant.models.pretrained import pretrained
    model = pretrained("lenet5", train_if_missing=False)
    x, y = load_digits(16, "test")
    fp32 = _top1(model, x, y)
    int16 = _top1(quant_post_dynamic(model, weight_bits=16), x, y)
    int8 = _top1(quant_post_dynamic(model, weight_bits=8), x, y)
    assert fp32 > 0.95
    assert abs(int16 - fp32) <= 0.001, (fp32, int16)
    assert int8 > fp32 - 0.02, (fp32, int8)


def test_bad_input(oracle_lenet):
    for bits in (4, 7, 32, True, "8"):
        with pytest.raises(ValueError, match="weight_bits"):
            quant_post_dynamic(oracle_lenet, weight_bits=bits)
    with pytest.raises(ValueError, match="quantizable_op_type"):
        quant_post_dynamic(oracle_lenet, quantizable_op_type=["matmul"])
    with pytest.raises(ValueError, match="weight_quantize_type"):
        quant_post_dynamic(oracle_lenet, weight_quantize_type="moving_average_abs_max")
    with pytest.raises(ValueError, match="no .* op"):
        quant_post_dynamic(oracle_lenet, quantizable_op_type=["depthwise_conv2d"])
    text = refquant.Model([refquant.Op("relu", ["x"], ["y"], name="r")], {}, [refquant.TensorSpec("x", (2,))], ["y"])
    with pytest.raises(ValueError, match="no .* op"):
        quant_post_dynamic(text)
    zero = oracle_lenet.copy()
    zero.params["fc_2.w_0"][:, 3] = 0
    with pytest.raises(ValueError, match="channel"):
        quant_post_dynamic(zero)
    with pytest.raises(ValueError, match="no .* op"):  # already quantized: the ops read dequantized tensors
        quant_post_dynamic(quant_post_dynamic(oracle_lenet))


def test_dequantize_weight_op_rules():
    from refquant.ops import OpContext, get_op
    op = get_op("dequantize_weight")
    q = np.array([[1, -2], [3, 127]], np.int8)
    s = np.array([0.5, 0.25], np.float32)
    np.testing.assert_array_equal(op.forward(OpContext(), {"quant_axis": 1}, q, s), [[0.5, -0.5], [1.5, 31.75]])
    np.testing.assert_array_equal(op.forward(OpContext(), {"quant_axis": 0}, q, s), [[0.5, -1.0], [0.75, 31.75]])
    np.testing.assert_array_equal(op.forward(OpContext(), {}, q, s[:1]), q.astype(np.float32) * 0.5)
    assert op.shape({"quant_axis": 0}, (2, 2), (2,)) == ((2, 2),)
    with pytest.raises(ValueError):
        op.forward(OpContext(), {"quant_axis": 0}, q, np.ones(3, np.float32))
    with pytest.raises(TypeError):
        op.forward(OpContext(), {}, q.astype(np.float32), s[:1])


def test_conv_biases_stay_float():
    """Untrained lenet5: zero conv biases. Only the conv filters and mul weights are quantized; the biases (here
    one with non-zero values) stay float32 and are read directly."""
    model = lenet5(input_size=28)
    m = model.copy()
    conv = next(op for op in m.ops if op.type == "conv2d")
    bias = conv.inputs[2]
    m.params[bias] = np.linspace(-1, 1, m.params[bias].size, dtype=np.float32)
    for src in (model, m):
        q = quant_post_dynamic(src)
        quantized = {op.inputs[0] for op in q.ops if op.type == "dequantize_weight"}
        weights = {op.inputs[1] for op in src.ops if op.type in ("conv2d", "mul")}
        assert quantized == weights
        for op in src.ops:
            if op.type == "conv2d" and len(op.inputs) > 2:
                assert q.params[op.inputs[2]].dtype == np.float32
                assert np.array_equal(q.params[op.inputs[2]], src.params[op.inputs[2]])
    assert conv.inputs[2] in next(op for op in q.ops if op.name == conv.name).inputs
