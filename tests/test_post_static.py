"""quant_post_static on Paddle's oracle LeNet: thresholds vs Paddle 3.3.1 (tests/data/lenet_<algo>.json)."""
import json
from pathlib import Path

import numpy as np
import pytest

from refquant.calibration.algorithms import static_algorithms
from refquant.models.lenet import lenet5
from refquant.quant import quant_post_static, thresholds
from refquant.reference import rounding

DATA = Path(__file__).parent / "data"
ALGOS = static_algorithms()  # each has its Paddle oracle, tests/data/lenet_<algo>.json
# inputs of conv2d / mul: the activations Paddle puts a fake quant op in front of
QUANTIZED_ACTS = ("x", "pool2d_0.tmp_0", "flatten_0.tmp_0", "fc_0.tmp_2", "fc_1.tmp_2")


def oracle_lenet():
    m = lenet5(input_size=28, bias_style="add")
    z = np.load(DATA / "lenet_fp32_weights.npz")
    assert set(z.files) == set(m.params)
    for k in z.files:
        m.params[k] = z[k].astype(np.float32)
    return m


@pytest.fixture(scope="module")
def lenet():
    return oracle_lenet()


@pytest.fixture(scope="module")
def batches():
    a = np.load(DATA / "lenet_calib_acts_base.npz")
    return [{"x": a[f"x|b{k}"]} for k in range(4)]


@pytest.fixture(scope="module")
def quantized(lenet, batches):
    return {algo: quant_post_static(lenet, batches, algo=algo) for algo in ALGOS}


def _snapshot(m):
    return [op.to_json() for op in m.ops], {k: v.copy() for k, v in m.params.items()}


@pytest.mark.parametrize("algo", ALGOS)
def test_thresholds_match_paddle(quantized, algo):
    oracle = json.loads((DATA / f"lenet_{algo}.json").read_text())
    th = thresholds(quantized[algo])
    # every tensor Paddle calibrated (quantized inputs and observer outputs) is calibrated, nothing else
    assert {k for k, v in th.items() if isinstance(v, float)} == set(oracle["activations"])
    for name in QUANTIZED_ACTS:
        np.testing.assert_allclose(th[name], oracle["activations"][name]["threshold"], rtol=1e-4, err_msg=name)
    for name, v in oracle["activations"].items():  # observers too (end to end, conv arithmetic ~1e-7 here)
        np.testing.assert_allclose(th[name], v["threshold"], rtol=1e-4, err_msg=name)
    assert set(oracle["weights"]) == {k for k, v in th.items() if isinstance(v, np.ndarray)}
    for name, v in oracle["weights"].items():
        np.testing.assert_array_equal(th[name], np.float32(v["threshold_per_channel"]), err_msg=name)


@pytest.mark.parametrize("algo", ("abs_max", "avg"))
def test_simple_algos_nearly_exact(quantized, algo):
    oracle = json.loads((DATA / f"lenet_{algo}.json").read_text())
    th = thresholds(quantized[algo])
    for name in QUANTIZED_ACTS:
        np.testing.assert_allclose(th[name], oracle["activations"][name]["threshold"], rtol=1e-6, err_msg=name)


def test_graph_rewrite(lenet, quantized):
    q = quantized["KL"]
    oracle = json.loads((DATA / "lenet_KL.json").read_text())
    th = thresholds(q)
    qdq = [op for op in q.ops if op.type == "fake_quantize_dequantize_abs_max"]
    assert sorted(op.inputs[0] for op in qdq) == sorted(QUANTIZED_ACTS)
    for op in qdq:
        x = op.inputs[0]
        assert op.inputs[1] == f"{x}@scale" and op.attrs["round_type"] == 1 and op.attrs["bit_length"] == 8
        assert q.params[f"{x}@scale"].dtype == np.float32
        assert q.params[f"{x}@scale"][0] == np.float32(th[x])
    by_type = {}
    for op in q.ops:
        by_type.setdefault(op.type, []).append(op)
    for op in by_type["conv2d"] + by_type["mul"]:
        assert op.inputs[0].endswith(".quant_dequant")
        assert op.attrs["quantization_type"] == "post_kl"
        w = op.inputs[1]
        axis = 0 if op.type == "conv2d" else 1
        t = th[w]
        qw = rounding.freeze_weight(lenet.params[w], t, axis)
        assert np.all(np.abs(qw) <= 127) and np.array_equal(qw, np.round(qw))
        np.testing.assert_array_equal(q.params[w], rounding.dequantize_weight(qw, t, axis))
        np.testing.assert_array_equal(q.params[f"{w}@scale"], t)
        wq = oracle["weights"][w]
        assert wq["quant_axis"] == axis and wq["int_min"] == qw.min() and wq["int_max"] == qw.max()
    # output thresholds: Paddle's float32 attributes, by output tensor
    want = {}
    for rec in oracle["saved_model"]["op_threshold_attrs"]:
        for arg, names in rec["outputs"].items():
            if f"{arg}0_threshold" in rec["attrs"]:
                want[names[0]] = (arg, rec["attrs"][f"{arg}0_threshold"])
    got = {op.outputs[0]: op for op in q.ops if "out_threshold" in op.attrs}
    assert set(got) == set(want)
    for name, (arg, t) in want.items():
        np.testing.assert_allclose(got[name].attrs[f"{arg}0_threshold"], t, rtol=1e-6, err_msg=name)
        assert got[name].attrs["out_threshold"] == got[name].attrs[f"{arg}0_threshold"]


@pytest.mark.parametrize("algo,onnx", [(a, False) for a in ALGOS] + [("mse", True), ("emd", True)])
def test_logits_deviation_matches_paddle(lenet, quantized, batches, algo, onnx):
    """End to end: max |quantized logits - FP32 logits| over the 4 batches equals Paddle's saved model's."""
    oracle = json.loads((DATA / f"lenet_{algo}{'_onnx' if onnx else ''}.json").read_text())
    q = quant_post_static(lenet, batches, algo=algo, onnx_format=True) if onnx else quantized[algo]
    out = lenet.outputs[0]
    diff = max(float(np.max(np.abs(q.run(b)[out] - lenet.run(b)[out]))) for b in batches)
    want = oracle["quantized_model_logits"]
    np.testing.assert_allclose(diff, want["max_abs_diff_vs_fp32"], rtol=1e-4)
    agree = np.mean([np.mean(np.argmax(q.run(b)[out], 1) == np.argmax(lenet.run(b)[out], 1)) for b in batches])
    assert agree == want["top1_agreement_vs_fp32"]


@pytest.mark.parametrize("algo", ("mse", "emd"))
def test_onnx_format_matches_paddle(lenet, batches, algo):
    oracle = json.loads((DATA / f"lenet_{algo}_onnx.json").read_text())
    q = quant_post_static(lenet, batches, algo=algo, onnx_format=True)
    th = thresholds(q)
    for name, v in oracle["activations"].items():
        np.testing.assert_allclose(th[name], v["threshold"], rtol=1e-4, err_msg=name)
    for name, v in oracle["weights"].items():
        np.testing.assert_array_equal(th[name], np.float32(v["threshold_per_channel"]), err_msg=name)
        w = q.params[name]
        assert w.dtype == np.int8 and (w.min(), w.max()) == (v["int_min"], v["int_max"])
        np.testing.assert_array_equal(w, rounding.freeze_weight_onnx(lenet.params[name], th[name], v["quant_axis"]))
    # the same quantize_linear / dequantize_linear pairs as Paddle's saved model (real and only_observer)
    want = sorted((o["type"], o["inputs"]["X"][0], o["outputs"]["Y"][0], bool(o["attrs"].get("only_observer")),
                   o["attrs"]["quant_axis"]) for o in oracle["saved_model"]["quant_ops"])
    got = sorted((o.type, o.inputs[0], o.outputs[0], bool(o.attrs.get("only_observer")), o.attrs["quant_axis"])
                 for o in q.ops if o.type in ("quantize_linear", "dequantize_linear"))
    assert got == want
    assert not any("out_threshold" in op.attrs for op in q.ops)


def test_input_model_untouched(batches):
    m = oracle_lenet()
    ops0, params0 = _snapshot(m)
    q = quant_post_static(m, batches, algo="hist")
    ops1, params1 = _snapshot(m)
    assert ops0 == ops1 and params0.keys() == params1.keys()
    assert all(np.array_equal(params0[k], params1[k]) for k in params0)
    assert "quantization" not in m.meta and q is not m


def test_quantized_model_runs_close_to_fp32(lenet, quantized, batches):
    out = lenet.outputs[0]
    ref = lenet.run(batches[0])[out]
    for algo, q in quantized.items():
        y = q.run(batches[0])[out]
        assert y.shape == ref.shape and y.dtype == np.float32
        assert np.mean(np.argmax(y, 1) == np.argmax(ref, 1)) >= 0.9, algo


def test_loader_forms_and_batch_nums(lenet, batches):
    a = quant_post_static(lenet, batches, algo="abs_max", batch_nums=1)
    assert thresholds(a)["x"] == float(np.max(np.abs(batches[0]["x"])))
    b = quant_post_static(lenet, lambda: iter(batches), algo="KL")
    c = quant_post_static(lenet, iter(batches), algo="KL")  # one-shot iterator: read once, replayed
    ta, tb = thresholds(b), thresholds(c)
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_skip_tensor_list_and_abs_max_weights(lenet, batches):
    q = quant_post_static(lenet, batches, algo="abs_max", skip_tensor_list=["fc_1.tmp_2"],
                          weight_quantize_type="abs_max")
    fc2 = next(op for op in q.ops if op.name == "fc_2")
    assert fc2.inputs[0] == "fc_1.tmp_2" and "quantization_type" not in fc2.attrs
    np.testing.assert_array_equal(q.params["fc_2.w_0"], lenet.params["fc_2.w_0"])
    th = thresholds(q)
    assert "fc_1.tmp_2" in th and "fc_2.w_0" not in th
    assert th["conv2d_0.w_0"].shape == (1,)
    assert th["conv2d_0.w_0"][0] == np.max(np.abs(lenet.params["conv2d_0.w_0"]))


@pytest.mark.parametrize("kwargs", [dict(algo="ptf"), dict(algo="min_max"),
                                    dict(bias_correction=True, onnx_format=True),
                                    dict(round_type="adaround", adaround_mode="paddle", onnx_format=True)])
def test_unsupported_options_raise(lenet, batches, kwargs):
    with pytest.raises(NotImplementedError):
        quant_post_static(lenet, batches, **kwargs)


def test_bad_arguments(lenet, batches):
    for kwargs in (dict(algo="kl2"), dict(bias_correction="yes"), dict(weight_bits=4), dict(weight_quantize_type="x"), dict(batch_nums=0),
                   dict(round_type="ceil"), dict(round_type="adaround", adaround_mode="x")):
        with pytest.raises(ValueError):
            quant_post_static(lenet, batches, **kwargs)


def test_hist_percent_one_gives_positive_thresholds(lenet, batches):
    """Paddle's walk at 1.0 often never reaches the sum (a negative threshold); refquant takes the last bin."""
    q = quant_post_static(lenet, batches, algo="hist", hist_percent=1.0)
    acts = q.meta["quantization"]["activation_thresholds"]
    assert acts and all(t > 0 for t in acts.values())


@pytest.fixture(scope="module")
def digits_lenet():
    from refquant.data import load_digits
    from refquant.models.pretrained import pretrained
    m = pretrained("lenet5")
    xt, _ = load_digits(16, "train")
    xs, ys = load_digits(16, "test")
    out = m.outputs[0]

    def top1(model):
        return float(np.mean(np.argmax(model.run({"x": xs})[out], 1) == ys))

    return m, [{"x": xt[i * 32:(i + 1) * 32]} for i in range(4)], top1


@pytest.mark.parametrize("algo,onnx", [(a, False) for a in ALGOS] + [("hist", True)])
def test_digits_top1_close_to_fp32(digits_lenet, algo, onnx):
    m, calib, top1 = digits_lenet
    fp32 = top1(m)
    assert fp32 > 0.95
    assert top1(quant_post_static(m, calib, algo=algo, onnx_format=onnx)) >= fp32 - 0.02


def test_bias_correction_on_lenet_is_a_no_op_as_measured_in_paddle(lenet, batches, quantized):
    """On the oracle LeNet (abs_max) Paddle's correction changed 0 weights."""
    base = quantized["abs_max"]
    for bc in ("paddle", True):
        q = quant_post_static(lenet, batches, algo="abs_max", bias_correction=bc)
        for w in ("conv2d_0.w_0", "conv2d_1.w_0", "fc_0.w_0", "fc_1.w_0", "fc_2.w_0"):
            np.testing.assert_array_equal(q.params[w], base.params[w], err_msg=f"{bc} {w}")
    # onnx_format: Paddle's QuantWeightPass ignores the flag
    a = quant_post_static(lenet, batches, algo="abs_max", onnx_format=True)
    b = quant_post_static(lenet, batches, algo="abs_max", onnx_format=True, bias_correction="paddle")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def _paper_correction(w, qw, t, axis):
    wdq = rounding.dequantize_weight(qw, t, axis)
    red = tuple(i for i in range(w.ndim) if i != axis)
    mu = np.mean(w - wdq, axis=red, keepdims=True)
    r = np.std(w, axis=red, keepdims=True) / (np.std(wdq, axis=red, keepdims=True) + 1e-8)
    return (wdq + mu) * r


def test_bias_correction_w_paper_vs_paddle_broadcast():
    from refquant.quant.post_static import bias_correction_w
    rng = np.random.default_rng(3)
    for shape, axis in (((4, 3, 2, 2), 0), ((6, 5), 1)):
        w = (rng.standard_normal(shape) * rng.uniform(0.1, 2, shape[axis]).reshape(
            [-1 if i == axis else 1 for i in range(len(shape))])).astype(np.float32)
        red = tuple(i for i in range(w.ndim) if i != axis)
        t = np.max(np.abs(w), axis=red).astype(np.float32)
        qw = np.clip(rounding.freeze_weight(w, t, axis) + 3, -127, 127)  # a systematic error to correct
        paper = bias_correction_w(w, qw, t, axis)
        want = rounding.freeze_weight(_paper_correction(w, qw, t, axis), t, axis)
        assert np.sum(paper != want) <= w.size // 50  # float32 vs exact statistics at rounding ties
        assert np.mean(np.abs(rounding.dequantize_weight(paper, t, axis) - w)) < \
            np.mean(np.abs(rounding.dequantize_weight(qw, t, axis) - w))
        paddle = bias_correction_w(w, qw, t, axis, paddle_broadcast=True)
        if axis == 1:  # np.resize lines up with the channels of a 2-D [K, N] weight
            np.testing.assert_array_equal(paddle, paper)
        else:  # C-order tiling: flat element j gets channel j mod C
            assert not np.array_equal(paddle, paper)
            wdq = rounding.dequantize_weight(qw, t, axis)
            mu = (w - wdq).reshape(shape[0], -1).mean(-1)
            r = w.reshape(shape[0], -1).std(-1) / (wdq.reshape(shape[0], -1).std(-1) + 1e-8)
            tiled = (np.resize(mu, shape) + wdq) * np.resize(r, shape)
            np.testing.assert_array_equal(paddle, rounding.freeze_weight(tiled.astype(np.float32), t, axis))


@pytest.mark.parametrize("algo", ALGOS)
def test_sharded_calibration_equals_whole(lenet, batches, algo):
    """Two shards calibrated apart (KL/hist: ranges merged first, then histograms on the shared range) and
    merged give the thresholds, weights and outputs of one run over all the batches."""
    from refquant.quant import calibrate_model
    first, second = batches[:2], batches[2:]
    ranges = None
    if algo in ("KL", "hist"):
        ranges = calibrate_model(lenet, first, "ranges").merge(calibrate_model(lenet, second, "ranges")).ranges
    cal = calibrate_model(lenet, first, algo, ranges=ranges).merge(calibrate_model(lenet, second, algo, ranges=ranges))
    sharded = quant_post_static(lenet, None, algo=algo, calibration=cal)
    whole = quant_post_static(lenet, batches, algo=algo)
    assert thresholds(sharded).keys() == thresholds(whole).keys()
    for name, t in thresholds(whole).items():
        assert np.array_equal(thresholds(sharded)[name], t), name
    assert np.array_equal(sharded.run(batches[0])[lenet.outputs[0]], whole.run(batches[0])[lenet.outputs[0]])


def test_calibration_must_match_algo(lenet, batches):
    from refquant.quant import calibrate_model
    with pytest.raises(ValueError, match="algo"):
        quant_post_static(lenet, None, algo="KL", calibration=calibrate_model(lenet, batches, "abs_max"))
    with pytest.raises(ValueError, match="data_loader"):
        quant_post_static(lenet, None)
