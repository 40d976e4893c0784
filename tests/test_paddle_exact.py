"""refquant against recorded Paddle 3.3.1 / PaddleSlim 2.6.0 outputs, bit for bit. The fixtures under
tests/data/paddle_oracles/ come from the make_*.py scripts there (run with Paddle installed); these tests only read
them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import refquant
from refquant import _dispatch
from refquant.quant.embedding import quant_embedding

ORACLES = Path(__file__).parent / "data" / "paddle_oracles"


def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ---- embedding quantization (make_embedding.py) ----------------------------------------------------------
EMB = np.load(ORACLES / "embedding.npz", allow_pickle=False)
EMB_CASES = sorted({k.split("/")[0] for k in EMB.files})


def _lookup_model(w, padding_idx):
    ids = refquant.TensorSpec("ids", (None,), "int64")
    op = refquant.Op("lookup_table", ["w", "ids"], ["y"], {"padding_idx": int(padding_idx)}, name="emb")
    return refquant.Model([op], {"w": w}, [ids], ["y"])


def _emb_config(case):
    if case.endswith("abs_max16_pad"):
        return {"lookup_table": {"quantize_type": "abs_max", "quantize_bits": 16, "dtype": "int16"}}
    return {"lookup_table": {"quantize_type": "log" if "_log" in case else "abs_max"}}


@pytest.mark.parametrize("reference", [False, True], ids=["dispatch", "twin"])
@pytest.mark.parametrize("case", EMB_CASES)
def test_quant_embedding_matches_paddleslim(case, reference):
    w, ids, pad = EMB[f"{case}/w"], EMB[f"{case}/ids"], int(EMB[f"{case}/pad"])
    with _dispatch.use_reference(reference):
        qm = quant_embedding(_lookup_model(w, pad), _emb_config(case))
        rows = qm.run({"ids": ids})["y"]
    aux = qm.params["w.dict" if "_log" in case else "w.scale"]
    assert qm.params["w.int"].dtype == EMB[f"{case}/q"].dtype
    np.testing.assert_array_equal(qm.params["w.int"], EMB[f"{case}/q"])
    np.testing.assert_array_equal(_bits(aux), EMB[f"{case}/aux_bits"])
    np.testing.assert_array_equal(_bits(rows), EMB[f"{case}/rows_bits"])


def test_log_zero_level_and_padding_by_hand():
    """The 0/1 table keeps PaddleSlim's zero level (dict [0, 1]); a padding row reads dict[0]."""
    w = np.array([[0, 1], [1, 0], [1, 1]], np.float32)
    qm = quant_embedding(_lookup_model(w, -1), {"lookup_table": {"quantize_type": "log"}})
    assert qm.params["w.int"].tolist() == [[0, 1], [1, 0], [1, 1]] and qm.params["w.dict"].tolist() == [0, 1]
    np.testing.assert_array_equal(qm.run({"ids": np.array([0, 1, 2])})["y"], w)
    w = np.array([[0.5, 1], [1, 0.25], [-1, 2]], np.float32)     # no zero: padding reads the smallest level
    qm = quant_embedding(_lookup_model(w, 1), {"lookup_table": {"quantize_type": "log"}})
    assert qm.params["w.dict"].tolist() == [0.25, 0.5, 1, 2]
    np.testing.assert_array_equal(qm.run({"ids": np.array([1, 2])})["y"], [[0.25, 0.25], [-1, 2]])


def test_text_mean_tables_match_paddleslim():
    from refquant.models.pretrained import pretrained
    from refquant.models.zoo import load_data
    want = json.loads((ORACLES / "embedding_text_mean.json").read_text())
    model = pretrained("text_mean", train_if_missing=False)
    w = model.params[want["table"]]
    assert hashlib.sha256(np.ascontiguousarray(w, np.float32).tobytes()).hexdigest() == want["fp32_sha256"]
    x, y = load_data("text_mean", "test")
    for qtype, aux_name in (("log", "dict"), ("abs_max", "scale")):
        qm = quant_embedding(model, {"lookup_table": {"quantize_type": qtype}})
        q = qm.params[f"{want['table']}.int"]
        assert hashlib.sha256(q.tobytes()).hexdigest() == want[qtype]["int_sha256"], qtype
        assert _bits(qm.params[f"{want['table']}.{aux_name}"]).tolist() == want[qtype]["aux_bits"]
        from refquant.ops.dequant import lookup_rows
        rows = lookup_rows(q, qm.params[f"{want['table']}.{aux_name}"], np.arange(w.shape[0]), qtype, 8,
                           want["padding_idx"])
        assert hashlib.sha256(_bits(rows).tobytes()).hexdigest() == want[qtype]["rows_sha256"], qtype
        if qtype == "log":   # the tables PaddleSlim writes score 95.75% on the test split (the zero level kept)
            acc = float((qm.run({"ids": x})[qm.outputs[0]].argmax(-1) == y).mean())
            assert acc == 0.9575, acc


# ---- C++ fake-quant ops: signed zeros, range_abs_max's eviction edge (make_quant_ops.py) -----------------
QOPS = np.load(ORACLES / "quant_ops.npz", allow_pickle=False)
QOPS_INDEX = json.loads((ORACLES / "quant_ops.json").read_text())


def _forward(op_type, attrs, *inputs, training=False):
    from refquant.ops import OpContext, get_op
    out = get_op(op_type).forward(OpContext(training=training), dict(attrs), *inputs)
    return out if isinstance(out, tuple) else (out,)


def _same_bits(got, key):
    want = QOPS[key]
    got = np.asarray(got)
    assert got.shape == want.shape or got.size == want.size, (key, got.shape, want.shape)
    np.testing.assert_array_equal(_bits(got).reshape(want.shape), want, err_msg=key)


@pytest.mark.parametrize("case", sorted(QOPS_INDEX))
def test_fake_quant_ops_match_paddle(case):
    op, attrs = QOPS_INDEX[case]["op"], QOPS_INDEX[case]["attrs"]
    x = QOPS[f"{case}/in_X"]
    rt = attrs.get("round_type", 1)
    from refquant.reference import rounding
    if op == "fake_quantize_abs_max":
        t = np.max(np.abs(x))
        _same_bits(rounding.quantize_op(x, t, 8, rt), f"{case}/Out_bits")
        _same_bits([t], f"{case}/OutScale_bits")
    elif op in ("fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_dequantize_abs_max"):
        (y,) = _forward(op, attrs, x)
        _same_bits(y, f"{case}/Out_bits")
    elif op == "fake_quantize_dequantize_moving_average_abs_max":
        y, scale, state, accum = _forward(op, attrs, x, QOPS[f"{case}/in_InScale"], QOPS[f"{case}/in_InState"],
                                          QOPS[f"{case}/in_InAccum"], training=True)
        for got, slot in ((y, "Out"), (scale, "OutScale"), (state, "OutState"), (accum, "OutAccum")):
            _same_bits(got, f"{case}/{slot}_bits")
    elif op == "quantize_linear":                   # Paddle's is_test run = refquant's inference form
        attrs = {k: v for k, v in attrs.items() if k != "is_test"}
        (y,) = _forward(op, attrs, x, QOPS[f"{case}/in_Scale"], QOPS[f"{case}/in_ZeroPoint"])
        _same_bits(y, f"{case}/Y_bits")
    elif op == "fake_quantize_range_abs_max":       # refquant's op is the quantize + dequantize pair
        it = QOPS[f"{case}/in_Iter"] - 1             # refquant's op counts the step itself
        window = QOPS[f"{case}/in_OutScales"]
        before = window.copy()
        y, scale, it_out, win = _forward("fake_quantize_dequantize_range_abs_max", dict(attrs, window_size=3), x,
                                         QOPS[f"{case}/in_InScale"], it, window, training=True)
        _same_bits(scale, f"{case}/OutScale_bits")
        _same_bits(win, f"{case}/OutScales_bits")
        _same_bits(y, f"{case}/Dequant_bits")
        _same_bits(rounding.quantize_op(x, scale[0], 8, rt), f"{case}/Out_bits")
        assert it_out[0] == QOPS[f"{case}/in_Iter"][0]
        np.testing.assert_array_equal(window, before)
    else:
        raise AssertionError(f"no refquant mapping for {op}")


def test_signed_zero_by_hand():
    """std::round and Paddle's clip keep -0.0; a tiny negative quantizes and dequantizes to -0.0."""
    from refquant.reference import rounding
    x = np.float32([-0.0, -1e-10, -0.3, 0.0])
    assert np.signbit(rounding.round_half_away(x)).tolist() == [True, True, True, False]
    assert np.signbit(rounding.clip_op(np.float32([-0.0, -1.0]), np.float32(-0.0), np.float32(0.0))).all()
    for t in (np.float32(1.0), np.float32(0.0)):
        for rt in (0, 1):
            assert np.signbit(rounding.quant_dequant_op(x, t, 8, rt)).tolist() == [True, True, True, False]


# ---- QAT with onnx_format=True (make_qat_onnx.py) ---------------------------------------------------------
QAT = np.load(ORACLES / "qat_onnx.npz", allow_pickle=False)


def _qf(key):
    return QAT[key].view(np.float32) if key.endswith("_bits") else QAT[key]


def _qat_onnx_model():
    ops = [refquant.Op("mul", ["x", "w1"], ["h"], name="fc1"), refquant.Op("relu", ["h"], ["r"], name="act"),
           refquant.Op("mul", ["r", "w2"], ["o"], name="fc2")]
    model = refquant.Model(ops, {"w1": QAT["w1_init"].copy(), "w2": QAT["w2_init"].copy()},
                           [refquant.TensorSpec("x", (4, 3))], ["o"])
    from refquant.quant import quant_aware
    return quant_aware(model, {"onnx_format": True})


def _set_state(q, prefix):
    """Weights and statistics as Paddle had them (``prefix``: a step's fetches or "final")."""
    for name in ("x@scale", "w1@scale", "r@scale", "w2@scale", "x@state", "x@accum", "r@state", "r@accum"):
        if f"{prefix}/{name}_bits" in QAT.files:
            q.params[name] = _qf(f"{prefix}/{name}_bits").reshape(-1).copy()


def test_qat_onnx_graph_is_paddles():
    q = _qat_onnx_model()
    assert [op.type for op in q.ops] == ["quantize_linear", "dequantize_linear", "quantize_linear",
                                         "dequantize_linear", "mul", "relu", "quantize_linear", "dequantize_linear",
                                         "quantize_linear", "dequantize_linear", "mul"]
    assert q.ops[4].inputs == ["x.quantized.dequantized", "w1.quantized.dequantized"]
    assert q.params["x@scale"].tolist() == [np.float32(0.001)] and q.params["x@state"][0] == q.params["x@accum"][0] == 1
    assert np.array_equal(q.params["w1@scale"], np.full(5, 0.001, np.float32))
    assert "w1@state" not in q.params and "w1" in q.trainable and "x@scale" not in q.trainable


def test_qat_onnx_steps_match_paddle_bit_for_bit():
    """Every quantize_linear / dequantize_linear output and state update of four SGD steps, fed Paddle's inputs of
    that step (weights before the step, the relu output) and its statistics of the step before."""
    from refquant.executor import backward, forward
    q = _qat_onnx_model()
    for step in range(int(QAT["steps"])):
        prev = f"step{step - 1}"
        if step:
            _set_state(q, prev)
        for w in ("w1", "w2"):
            q.params[w] = _qf(f"step{step}/{w}_before_bits").copy()
        env, tape = forward(q, {"x": QAT["x"][step]}, training=True, record=True, keep_all=True)
        for name in ("x.quantized", "x.quantized.dequantized", "w1.quantized", "w1.quantized.dequantized",
                     "w2.quantized", "w2.quantized.dequantized", "x@scale", "x@state", "x@accum", "w1@scale",
                     "w2@scale"):
            want = QAT[f"step{step}/{name}_bits"]
            got = env[name] if name in env else q.params[name]
            np.testing.assert_array_equal(_bits(got).reshape(want.shape), want, err_msg=f"step {step} {name}")
        # the relu output's pair on Paddle's own relu output (h is a BLAS product: compared with a tolerance)
        np.testing.assert_allclose(env["r"], _qf(f"step{step}/r_bits"), rtol=1e-6, atol=1e-6)
        from refquant.ops import OpContext, get_op
        pair = [op for op in q.ops if op.inputs[0] == "r"][0]
        stats = (QAT[f"{prev}/r@state_bits"].view(np.float32), QAT[f"{prev}/r@accum_bits"].view(np.float32)) \
            if step else (np.float32([1]), np.float32([1]))
        scale_in = _qf(f"{prev}/r@scale_bits") if step else np.float32([0.001])
        rq, scale, state, accum = get_op("quantize_linear").forward(
            OpContext(training=True), pair.attrs, _qf(f"step{step}/r_bits"), scale_in, None, *stats)
        for got, name in ((rq, "r.quantized"), (scale, "r@scale"), (state, "r@state"), (accum, "r@accum")):
            want = QAT[f"step{step}/{name}_bits"]
            np.testing.assert_array_equal(_bits(got).reshape(want.shape), want, err_msg=f"step {step} {name}")
        # straight through, unmasked: the gradients of Paddle's rewired backward (clipped inputs included)
        grads = backward(q, env, tape, {"o": QAT["c"][step]})
        for name in ("w1", "w2", "r", "h"):
            np.testing.assert_allclose(grads[name], _qf(f"step{step}/{name}@GRAD_bits").reshape(grads[name].shape),
                                       rtol=1e-5, atol=1e-6, err_msg=f"step {step} d{name}")
    assert QAT["step0/x.quantized_bits"].view(np.float32).min() == -128   # a clipped negative (-128/127 T)


def test_qat_onnx_training_eval_and_convert_match_paddle():
    from refquant.executor import backward, forward
    from refquant.quant import convert, thresholds
    q = _qat_onnx_model()
    lr = np.float32(QAT["lr"])
    for step in range(int(QAT["steps"])):            # refquant's own SGD trajectory
        env, tape = forward(q, {"x": QAT["x"][step]}, training=True, record=True)
        grads = backward(q, env, tape, {"o": QAT["c"][step]})
        for w in ("w1", "w2"):
            q.params[w] = (q.params[w] - lr * grads[w]).astype(np.float32)
    for w in ("w1", "w2"):
        np.testing.assert_allclose(q.params[w], _qf(f"final/{w}_bits"), rtol=1e-5, atol=1e-6)
    # eval and convert from Paddle's exact final state
    _set_state(q, "final")
    for w in ("w1", "w2"):
        q.params[w] = _qf(f"final/{w}_bits").copy()
    env, _ = forward(q, {"x": QAT["x_eval"]}, keep_all=True)
    for name in ("x.quantized.dequantized", "w1.quantized.dequantized"):
        want = QAT[f"eval/{name}_bits"]
        np.testing.assert_array_equal(_bits(env[name]).reshape(want.shape), want, err_msg=name)
    np.testing.assert_allclose(env["o"], _qf("eval/o_bits").reshape(4, 2), rtol=1e-5, atol=1e-6)
    frozen = convert(q)
    for w in ("w1", "w2"):
        assert frozen.params[w].dtype == np.int8
        np.testing.assert_array_equal(frozen.params[w], QAT[f"convert/{w}"])
    assert [op.type for op in frozen.ops] == ["quantize_linear", "dequantize_linear", "dequantize_linear", "mul",
                                              "relu", "quantize_linear", "dequantize_linear", "dequantize_linear",
                                              "mul"]
    np.testing.assert_allclose(frozen.run({"x": QAT["x_eval"]})["o"], _qf("convert/o_bits").reshape(4, 2),
                               rtol=1e-5, atol=1e-6)
    assert frozen.meta["quantization"]["onnx_format"] is True
    assert np.float32(thresholds(frozen)["x"]) == _qf("final/x@scale_bits")[0]


def test_warm_started_threshold_paddle_init_statistics():
    """make_qat_init.py: with x@scale already set, Paddle's pass still starts state = accum = 1, and the first
    training step forgets the threshold; quant_aware(init_statistics="paddle") does the same, bit for bit."""
    init = np.load(ORACLES / "qat_init.npz", allow_pickle=False)
    t0 = np.float32(init["t0"])
    ops = [refquant.Op("mul", ["x", "w1"], ["h"], name="fc1")]
    model = refquant.Model(ops, {"w1": QAT["w1_init"].copy()}, [refquant.TensorSpec("x", (4, 3))], ["h"])
    from refquant.executor import forward
    from refquant.quant import quant_aware
    q = quant_aware(model, init_thresholds={"x": t0}, init_statistics="paddle")
    for k in ("scale", "state", "accum"):
        np.testing.assert_array_equal(_bits(q.params[f"x@{k}"]), init[f"init/{k}_bits"], err_msg=k)
    forward(q, {"x": QAT["x"][0]}, training=True)
    for k in ("scale", "state", "accum"):
        np.testing.assert_array_equal(_bits(q.params[f"x@{k}"]), init[f"step0/{k}_bits"], err_msg=k)
    default = quant_aware(model, init_thresholds={"x": t0})
    assert default.params["x@accum"][0] == t0                  # refquant's default continues from T
