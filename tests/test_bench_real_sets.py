"""benchmarks/bench_real.py's det_sets / cls_sets sections without the models: the det scores (IoU against FP32,
lines found, box IoU) on hand-made maps, the markdown tables, and the quick sizes."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
bench_real = pytest.importorskip("benchmarks.bench_real")


def test_det_scores_count_the_lines_a_map_covers():
    mask = np.zeros((32, 64), np.uint8)
    mask[2:10, 4:44] = 1          # line 1: 320 pixels
    mask[16:24, 4:24] = 2         # line 2: 160 pixels
    ref = np.zeros((1, 1, 32, 64), np.float32)
    ref[0, 0, 4:8, 6:42] = 0.9    # 144 of line 1's pixels (0.45), 40 of line 2's (0.25)
    ref[0, 0, 18:22, 8:18] = 0.9
    s = bench_real._det_scores([ref], [ref], [mask])
    assert s["iou_fp32"] == 1.0 and s["lines_found"] == 100.0
    assert s["iou_boxes"] == pytest.approx((144 + 40) / 480)
    lost = ref.copy()
    lost[0, 0, 18:22, 8:18] = 0.2                     # line 2 below the threshold: not found
    lost[0, 0, 4:8, 6:42] = 0.29
    lost[0, 0, 4:8, 6:26] = 0.9                       # line 1: 80 pixels left (0.25 >= 0.15)
    s = bench_real._det_scores([lost], [ref], [mask])
    assert s["lines_found"] == 50.0 and s["iou_fp32"] == pytest.approx(80 / 184)
    thin = ref.copy()
    thin[0, 0, 4:8, 6:42] = 0.0
    thin[0, 0, 4:6, 6:26] = 0.9                       # 40 pixels of 320 (0.125 < 0.15)
    assert bench_real._det_scores([thin], [ref], [mask])["lines_found"] == 50.0


def _result(kind, keys, names=("a", "b")):
    def sets(x):
        return {n: {k: x for k in keys} for n in names}
    variants = [{"variant": "FP32", "runtime": "refquant", "sets": sets(1.0), "ms": 10.0},
                {"variant": "PTQ KL", "runtime": "refquant INT8", "sets": sets(0.5), "ms": 5.0, "skip": ["w1"]},
                {"variant": "ORT quantize_static MinMax", "runtime": "onnxruntime INT8", "error": "ValueError: x"}]
    return {"kind": kind, "sizes": {"n_eval": 3, "n_calib": 2, "batch": 1}, "sets": {n: f"set {n}" for n in names},
            "variants": variants, "latency_input": [1, 3, 32, 64], "side_by_side_ms": {"refquant FP32": 9.0}}


def test_markdown_tables():
    md = bench_real._sets_markdown(_result("det", ("iou_fp32", "lines_found", "iou_boxes")))
    assert "| FP32 | refquant | 1.000 / 1.0 | 1.000 / 1.0 | 1.000 / 1.0 | 9.0 |  |" in md
    assert "| PTQ KL | refquant INT8 | 0.500 / 0.5 | 0.500 / 0.5 | 0.500 / 0.5 | 5.0 | w1 |" in md
    assert "| error | error | error | - | ValueError: x |" in md
    assert "| PTQ KL | refquant INT8 | 0.500 | 0.500 | 0.500 |" in md     # the box IoU table
    md = bench_real._sets_markdown(_result("cls", ("accuracy", "agree")))
    assert "### cls on the textsets line sets" in md and "| PTQ KL | refquant INT8 | 0.5 / 0.5 |" in md
    assert "box mask" not in md


def test_quick_sizes(monkeypatch):
    monkeypatch.setenv("REFQUANT_BENCH_QUICK", "1")
    assert bench_real._sets_sizes("det_sets") == bench_real.QUICK_SETS_SIZES["det_sets"]
    monkeypatch.delenv("REFQUANT_BENCH_QUICK")
    assert bench_real._sets_sizes("cls_sets", {"n_eval": 7}) == dict(bench_real.SETS_SIZES["cls_sets"], n_eval=7)
