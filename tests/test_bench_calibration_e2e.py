"""benchmarks/bench_calibration_e2e in quick mode: one pairing on cls (refquant abs_max vs ONNX Runtime MinMax),
ONNX Runtime's functions restored afterwards; the Paddle column when REFQUANT_PADDLE_PYTHON is set."""
import importlib
import os

import pytest

from refquant.realmodels import ppocr

bench = pytest.importorskip("benchmarks.bench_calibration_e2e")


@pytest.mark.skipif(not ppocr.available(), reason="needs the PP-OCR models (rapidocr-onnxruntime) and onnx")
def test_quick_cls_pairing_and_ort_restored():
    pytest.importorskip("onnxruntime")
    cal = importlib.import_module("onnxruntime.quantization.calibrate")
    qz = importlib.import_module("onnxruntime.quantization.quantize")
    before = cal.CalibraterBase.create_inference_session, qz.create_calibrator
    r = bench.run(kinds=("cls",), algos=("abs_max",), quick=True, repeats=1)
    assert (cal.CalibraterBase.create_inference_session, qz.create_calibrator) == before
    (m,) = r["models"]
    assert set(m["median_s"]) == {"refquant abs_max", "ORT MinMax"} and all(v > 0 for v in m["median_s"].values())
    text = bench.markdown(r)
    assert "QUICK MODE" in text and "| abs_max |" in text and "| MinMax |" in text
    assert set(r["kernels"]) == {"histogram", "kl", "search"} and "calibration kernels: histogram " in text


def test_ort_calibration_options_reach_the_calibrator(monkeypatch):
    pytest.importorskip("onnxruntime")
    qz = importlib.import_module("onnxruntime.quantization.quantize")
    seen = {}
    monkeypatch.setattr(qz, "create_calibrator", lambda *a, extra_options=None, **k: seen.update(extra_options))
    with bench._ort_calibration_options(1, {"num_bins": 2048}):
        qz.create_calibrator("model.onnx", extra_options={"symmetric": True})
    assert seen == {"symmetric": True, "num_bins": 2048}


@pytest.mark.skipif(not os.environ.get("REFQUANT_PADDLE_PYTHON"), reason="set REFQUANT_PADDLE_PYTHON to a python "
                                                                         "with paddle 3.3.1")
def test_quick_paddle_column():
    r = bench.run(kinds=("paddle",), algos=("abs_max",), quick=True, repeats=1)
    p = r["paddle"]
    assert p["paddle"].startswith("3.") and p["median_s"]["Paddle abs_max"] > 0
    assert "PostTrainingQuantization" in bench.markdown(r)
