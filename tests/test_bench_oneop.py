"""benchmarks/bench_oneop in quick mode (tiny sizes, one round): every op against ONNX Runtime's QOperator graph,
the breakdown of refquant's graph, the markdown; and a clean skip without onnxruntime."""
import sys

import pytest

bench = pytest.importorskip("benchmarks.bench_oneop")


def test_quick_run():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    r = bench.run(threads=(1,), repeats=1, quick=True)
    rows = r["rows"]
    assert [row["case"] for row in rows] == [c[0] for c in bench.QUICK]
    for row in rows:
        assert row["ratio"] > 0 and set(row["refquant_ops"]) <= set(row["ms"])
        assert row["refquant_ops"][0].endswith("quantize_int8") and row["ort_ops"][0] == "QuantizeLinear"
        assert row["rq_diff_vs_fp32"] < 4  # refquant's float output: within a few ORT output steps of float
    gemm, dw = rows[0], rows[3]
    assert [k.split(":")[1] for k in gemm["refquant_ops"]] == ["quantize_int8", "matmul_int8"]
    assert [k.split(":")[1] for k in dw["refquant_ops"]] == ["quantize_int8", "depthwise_conv2d_int8"]
    text = bench.markdown(r)
    assert "QUICK MODE" in text and "| dw3x3 8ch 8x8 | 1 |" in text and "QLinearConv" in text


def test_skips_without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = bench.run(threads=(1,), repeats=1, quick=True)
    assert "onnxruntime" in r["skipped"] and bench.markdown(r).startswith("skipped: ")
