"""PP-OCR under static PTQ (refquant.realmodels.ppocr, refquant.quant.sensitivity): cls accuracy after PTQ ->
INT8, the per-layer sensitivity ranking and auto_skip, det probability-map IoU. Small rendered sets so the file
runs in well under 90 s; skips cleanly without onnx or the rapidocr-onnxruntime model files.
Full-size numbers: benchmarks/bench_real.py, docs/real_models.md."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
from refquant.realmodels import ppocr  # noqa: E402

if not ppocr.available():
    pytest.skip("PP-OCR models not installed (pip install --no-deps rapidocr-onnxruntime)", allow_module_level=True)

from refquant.quant.post_static import quant_post_static  # noqa: E402
from refquant.quant.sensitivity import auto_skip, quantized_ops, sensitivity  # noqa: E402

# det: measured 0.952 (abs_max, one calibration page, evaluation page 0; benchmarks: 0.93-0.97 over pages)
DET_IOU_MIN = 0.90


@pytest.fixture(scope="module")
def cls():
    model = ppocr.load("cls")
    x, labels = ppocr.cls_set(32)
    xc, _ = ppocr.cls_set(16, seed=ppocr.CALIB_SEED)
    return model, ppocr.batches(x, 32), labels, ppocr.batches(xc, 8)


@pytest.fixture(scope="module")
def cls_ranking(cls):
    model, _, _, calib = cls
    return sensitivity(model, [{"x": calib[0]["x"][:4]}], algo="abs_max")


def test_cls_int8_accuracy_close_to_fp32(cls):
    model, ev, labels, calib = cls
    fp32 = ppocr.cls_accuracy(ppocr.predict(model, ev), labels)
    q, i8 = ppocr.quantize(model, calib, "abs_max")
    assert len(q.meta["quantization"]["quantized_ops"]) == len(quantized_ops(model)) > 50
    assert any(op.type.endswith("_int8") for op in i8.ops)
    int8 = ppocr.cls_accuracy(ppocr.predict(i8, ev), labels)
    assert fp32 >= 85.0, fp32                      # the float model reads rendered orientation
    assert abs(int8 - fp32) <= 100.0 / 32 + 1e-9, (fp32, int8)   # at most one line of 32 apart


def test_cls_int8_float_glue_is_nhwc_and_fused(cls, monkeypatch):
    # MobileNetV3's hard swish (add 3, relu6, mul, div 6) and SE blocks run on NHWC between the INT8 ops: no
    # layout change inside the network; each hard swish is one chain pass, most of them post-ops of the conv
    # before them; each SE excitation (mul by the channel scale + quantize) one fused_channel_mul. Every fusion
    # changes no bit: the graph equals the one converted without them, and its NumPy integer twin.
    from refquant import _dispatch
    from refquant.deploy import convert as conv_mod, convert_to_int8
    model, ev, _, calib = cls
    q, i8 = ppocr.quantize(model, calib, "abs_max")
    counts = i8.op_counts()
    chains = [op.attrs["chain"] for op in i8.ops if op.attrs.get("chain")]
    assert len(chains) >= 8 and all(c["hard_swish"] for c in chains)
    assert "elementwise_div" not in counts and "relu6" not in counts and "elementwise_mul" not in counts
    assert counts.get("fused_channel_mul", 0) == 9
    assert counts.get("nhwc_to_nchw", 0) <= 2, counts          # only at the classifier head
    feeds = {"x": ev[0]["x"][:4]}
    out = i8.run(feeds)[i8.outputs[0]]
    with _dispatch.use_reference():
        assert np.array_equal(i8.run(feeds)[i8.outputs[0]], out)
    monkeypatch.setattr(conv_mod._Converter, "_fuse_chains", lambda self: None)
    monkeypatch.setattr(conv_mod._Converter, "_fuse_elementwise", lambda self: None)
    plain = convert_to_int8(q)
    assert "fused_channel_mul" not in plain.op_counts() and not any(op.attrs.get("chain") for op in plain.ops)
    assert np.array_equal(plain.run(feeds)[plain.outputs[0]], out)


def test_sensitivity_ranks_every_quantized_op_once(cls, cls_ranking):
    model = cls[0]
    names = [n for n, _ in cls_ranking]
    assert sorted(names) == sorted(n for n, _ in quantized_ops(model))
    assert len(set(names)) == len(names)
    scores = [s for _, s in cls_ranking]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores)) and scores[0] > 0


def test_auto_skip_keeps_exactly_k_ops_in_float(cls, cls_ranking):
    model, _, _, calib = cls
    k = 3
    skip = auto_skip(model, calib, k, ranking=cls_ranking)
    assert len(skip) == k
    q = quant_post_static(model, calib[:1], algo="abs_max", quantizable_op_type=ppocr.QUANT_OPS,
                          skip_tensor_list=skip)
    quantized = set(q.meta["quantization"]["quantized_ops"])
    all_ops = {n for n, _ in quantized_ops(model)}
    assert all_ops - quantized == {n for n, _ in cls_ranking[:k]}


def test_sensitivity_with_eval_fn_and_all_but_mode(cls):
    model, ev, labels, calib = cls
    feeds = [{"x": calib[0]["x"][:2]}]
    calls = []

    def loss(q):
        calls.append(q)
        return 0.0
    r = sensitivity(model, feeds, loss, algo="abs_max", mode="all_but")
    assert len(r) == len(quantized_ops(model)) and len(calls) == len(r) + 1   # + the all-quantized baseline


def test_det_int8_iou_on_a_page():
    model = ppocr.load("det")
    (x,) = ppocr.det_set(1)
    calib = [{"x": c} for c in ppocr.det_set(1, seed=ppocr.CALIB_SEED)]
    ref = model.run({"x": x})[model.outputs[0]]
    _, i8 = ppocr.quantize(model, calib, "abs_max")
    got = i8.run({"x": x})[model.outputs[0]]
    assert 0.01 < float((ref > ppocr.DET_THRESH).mean()) < 0.5     # the FP32 map finds text, not background
    iou = ppocr.det_iou(got, ref)
    print(f"\ndet INT8 vs FP32 IoU: {iou:.4f}")
    assert iou >= DET_IOU_MIN, iou


@pytest.mark.parametrize("which", ["fake_quant", "int8"])
def test_cls_qdq_export_runs_in_onnxruntime(cls, which):
    """refquant's quantized PP-OCR cls exported as QDQ ONNX: onnxruntime gives the same orientation as refquant on
    every line; one-step rounding differences move a probability by little (median) but can move an uncertain
    line's by ~0.1."""
    from refquant import export_onnx
    model, ev, labels, calib = cls
    q, i8 = ppocr.quantize(model, calib, "abs_max")
    m = q if which == "fake_quant" else i8
    proto = export_onnx(m, weight_dtype="uint8")  # exact on every CPU (see docs/onnx_export.md)
    sess = ppocr.ort_session(proto.SerializeToString())
    ours, theirs = ppocr.predict(m, ev), ppocr.ort_predict(sess, ev)
    assert np.array_equal(ours.argmax(-1), theirs.argmax(-1))
    assert np.median(np.abs(ours - theirs)) <= 1e-3 and np.abs(ours - theirs).max() <= 0.25
