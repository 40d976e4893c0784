"""benchmarks/bench_models' Paddle Inference (oneDNN) section: skipped with a row saying why without
REFQUANT_PADDLE_PYTHON, its table and oneDNN summary from given results, the worker plumbing on a plain python,
and a quick run against Paddle when the variable names a python with paddle 3.3.1."""
import os
import sys

import numpy as np
import pytest

bench = pytest.importorskip("benchmarks.bench_models")
from benchmarks.common import interleaved_medians  # noqa: E402
from benchmarks.paddle_worker import SKIPPED, PaddleWorker  # noqa: E402


def test_skipped_row_without_the_variable(monkeypatch):
    monkeypatch.delenv("REFQUANT_PADDLE_PYTHON", raising=False)
    r = bench.run(models=(), threads_list=(1,), repeats=1)
    assert r["paddle"] == {"skipped": SKIPPED}
    assert "### Paddle Inference (oneDNN)\n\nskipped: REFQUANT_PADDLE_PYTHON is not set" in bench.markdown(r)


def test_paddle_table_from_a_result():
    kernels = {"convolution jit_uni_int8:avx2 (u8)": 13}
    row = {"model": "mobilenet_v1", "refquant_fp32_ms_1t": 40.0, "refquant_fp32_fused_ms_1t": 20.0,
           "refquant_int8_ms_1t": 8.0, "refquant_int8_rr_ms_1t": 5.0, "paddle_fp32_ms_1t": 30.0,
           "paddle_int8_ms_1t": 10.0,
           "agreement": {"refquant_int8~paddle_int8": {"top1": 0.5, "cos_min": 0.99, "cos_centered": 0.9}}}
    p = {"paddle": "3.3.1", "algo": "abs_max", "check_images": 16, "models": [row],
         "onednn": {k: {"onednn": "v3.6.2", "isa": "Intel AVX2", "threads": "2", "kernels": kernels}
                    for k in ("fp32", "int8")}}
    text = bench.markdown({"models": [], "paddle": p})
    assert "(oneDNN v3.6.2, ISA Intel AVX2)" in text and "convolution jit_uni_int8:avx2 (u8) x13" in text
    assert "| mobilenet_v1 | 40.0 | 20.0 | 8.0 | 5.0 | 30.0 | 10.0 | 0.75x / 1.50x | **1.25x** / **2.00x** |" in text
    assert "| mobilenet_v1 | 0.50, 0.9900, 0.9000 |" in text


def test_onednn_summary():
    text = "\n".join([
        "onednn_verbose,v1,info,oneDNN v3.6.2 (commit 28d6967)", "onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2",
        "onednn_verbose,v1,info,cpu,isa:Intel AVX2",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_uni_int8:avx2,forward_inference,src:u8:a:blocked:acdb"
        "::f0 wei:s8:a:blocked:Abcde8a::f0,attr-scales:src0:0:f32,alg:convolution_direct,mb1_ic32oc32,0.24",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_uni_int8:avx2,forward_inference,src:u8:a:blocked:acdb"
        "::f0 wei:s8:a:blocked:Abcde8a::f0,,alg:convolution_direct,mb1_ic32oc32,0.25",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0,,,1x3x224x224,0.1",
        "onednn_verbose,v1,primitive,exec,cpu,inner_product,x64:gemm_s8s8s32:jit,forward_inference,src:s8::blocked"
        ":ab::f0,,,mb1ic1024oc1000,0.1"])
    assert bench._onednn_summary(text) == {
        "onednn": "v3.6.2", "isa": "Intel AVX2", "threads": "2",
        "kernels": {"convolution jit_uni_int8:avx2 (u8)": 2, "inner_product x64:gemm_s8s8s32:jit (s8)": 1}}
    assert bench._onednn_summary("") == {"onednn": "?", "isa": "?", "threads": "?", "kernels": {}}


def test_agreement():
    a = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0]])
    same = bench._agreement(a, a)
    assert same["top1"] == 1.0 and same["cos_min"] == pytest.approx(1.0) and same["cos_centered"] == pytest.approx(1)
    other = bench._agreement(a, a[::-1])
    assert other["top1"] == 0.0 and other["cos_centered"] == pytest.approx(-1.0)


def test_a_runner_returning_seconds_is_timed_by_them():
    med = interleaved_medians({"worker": lambda: 0.5, "here": lambda: None}, repeats=3)
    assert med["worker"] == 0.5 and med["here"] < 0.5


def test_worker_plumbing_on_a_plain_python(tmp_path):
    script = ("import json, sys\nprint(json.dumps({'ready': sys.argv[1]}), flush=True)\n"
              "for line in sys.stdin:\n    req = json.loads(line)\n    if req == 'stop':\n"
              "        sys.exit('stopped on request')\n    print(json.dumps({'twice': 2 * req}), flush=True)\n")
    with PaddleWorker(sys.executable, script, str(tmp_path), ("hello",), name="echo") as w:
        assert w.ready == {"ready": "hello"} and w.ask(21) == {"twice": 42}
        with pytest.raises(RuntimeError, match="stopped on request"):
            w.ask("stop")
    assert w.proc.returncode == 1 and w.script == str(tmp_path / "echo.py")


@pytest.mark.skipif(not os.environ.get("REFQUANT_PADDLE_PYTHON"), reason="set REFQUANT_PADDLE_PYTHON to a python "
                                                                         "with paddle 3.3.1")
def test_quick_paddle_section():
    r = bench.run(models=(), threads_list=(1,), repeats=1, paddle_models=("mobilenet_v1",))
    p = r["paddle"]
    assert p["paddle"].startswith("3.") and p["onednn"]["int8"]["isa"] != "?"
    assert any("(u8)" in k or "(s8)" in k for k in p["onednn"]["int8"]["kernels"]), "oneDNN ran no INT8 kernel"
    (row,) = p["models"]
    assert all(row[f"{k}_ms_1t"] > 0 for k in ("refquant_int8", "paddle_fp32", "paddle_int8"))
    agree = row["agreement"]
    assert agree["refquant_fp32~paddle_fp32"]["cos_min"] > 0.9999  # the same FP32 model on both sides
    assert agree["refquant_int8~paddle_fp32"]["cos_min"] > 0.99
    assert "Paddle oneDNN INT8" in bench.markdown(r)
