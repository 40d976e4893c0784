"""The command line: info, train, eval, demo, and clean errors."""
import json

import pytest

import refquant
from refquant.calibration.algorithms import static_algorithms
from refquant.cli import main


def test_info_prints_build_facts(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("refquant", "OpenMP", "features", "avx512_vnni" if refquant.build_info()["cpu"]["avx512_vnni"] else "avx2", "im2col"):
        assert word.lower() in out.lower()


def test_train_then_eval_a_saved_file(tmp_path, capsys):
    out = tmp_path / "lenet.rq"
    assert main(["train", "lenet5", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    model = refquant.load(out)
    assert model.meta["zoo"] == "lenet5" and model.meta["train"]["epochs"] == 1
    capsys.readouterr()
    assert main(["eval", "lenet5", "--file", str(out)]) == 0
    assert "| lenet5 |" in capsys.readouterr().out


def test_demo_writes_json(tmp_path, capsys):
    path = tmp_path / "demo.json"
    assert main(["demo", "lenet5", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["fp32"][0]["model"] == "lenet5" and doc["fp32"][0]["top1"] >= 97.0
    ptq = doc["ptq"][0]
    assert all(ptq[algo] >= ptq["fp32"] - 1.0 for algo in static_algorithms())
    assert ptq["int16"] == ptq["fp32"] and ptq["int8_mb"] < 0.35 * ptq["fp32_mb"]
    out = capsys.readouterr().out
    assert "FP32 top-1" in out and "static KL" in out and "INT8 top-1" in out
    assert abs(doc["int8"][0]["int8"] - doc["int8"][0]["fake_quant"]) <= 0.6


def test_unknown_model_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["train", "nope"])
    assert exc.value.code == 2


def test_quantize_static_with_report_then_inspect(tmp_path, capsys):
    out, report = tmp_path / "q.rq", tmp_path / "r.json"
    assert main(["quantize", "lenet5", "--algo", "hist", "--batch-nums", "2", "--out", str(out),
                 "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert "test top-1: FP32 98.33%" in text and "| conv2d_0 | conv2d | x |" in text
    doc = json.loads(report.read_text())
    assert doc["meta"]["algo"] == "hist" and len(doc["layers"]) == 5
    q = refquant.load(out)
    assert q.meta["quantization"]["algo"] == "hist"
    assert main(["inspect", str(out), "--json", str(tmp_path / "i.json")]) == 0
    assert "output SQNR dB" in capsys.readouterr().out
    layers = json.loads((tmp_path / "i.json").read_text())["layers"]
    assert [r["op"] for r in layers] == [r["op"] for r in doc["layers"]]


@pytest.mark.parametrize("args,size_ratio", [(["--method", "dynamic", "--bits", "8"], 0.4),
                                             (["--method", "dynamic", "--bits", "16"], 0.6),
                                             (["--method", "static", "--onnx-format", "--algo", "abs_max"], 0.75)])
def test_quantize_other_methods(tmp_path, capsys, args, size_ratio):
    out = tmp_path / "q.rq"
    assert main(["quantize", "resnet20", "--batch-nums", "1", "--out", str(out)] + args) == 0
    text = capsys.readouterr().out
    ratio = float(text.split("MB (")[1].split("x")[0])
    assert ratio <= size_ratio
    assert "quantized" in text


def test_quantize_errors_are_clean(tmp_path, capsys):
    assert main(["quantize", "no_such_model"]) == 2
    assert "neither a model file nor a zoo model" in capsys.readouterr().err
    assert main(["inspect", "lenet5"]) == 1  # an FP32 model: bad input, not bad usage
    assert capsys.readouterr().err == "refquant: error: lenet5 is not a quantized model\n"


def _one_error_line(capsys, code, expected_code, *words):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.startswith("refquant: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_dynamic_with_report_rejected_before_writing(tmp_path, capsys):
    out = tmp_path / "d.rq"
    code = main(["quantize", "lenet5", "--method", "dynamic", "--report", "--out", str(out)])
    _one_error_line(capsys, code, 2, "--report needs --method static")
    assert not out.exists()


def test_unknown_op_in_a_model_file_is_one_line(tmp_path, capsys):
    from refquant.io import save
    from refquant.models.lenet import lenet5
    m = lenet5(input_size=28)
    m.ops[1].type = "no_such_op"
    save(m, tmp_path / "bad.rq")
    code = main(["quantize", str(tmp_path / "bad.rq"), "--method", "dynamic", "--out", str(tmp_path / "q.rq")])
    _one_error_line(capsys, code, 1, "no_such_op")


@pytest.mark.parametrize("out,words", [("", "empty"), (".", "directory")])
def test_out_that_cannot_be_a_file_is_a_usage_error(tmp_path, capsys, monkeypatch, out, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "lenet5", "--method", "dynamic", "--out", out])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and words in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_out_in_a_missing_folder_rejected_before_work(tmp_path, capsys):
    code = main(["quantize", "lenet5", "--method", "dynamic", "--out", str(tmp_path / "no" / "q.rq")])
    _one_error_line(capsys, code, 2, "does not exist")


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--batch-nums", "-1"], ["--epochs", "0"]])
def test_counts_must_be_positive(capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "lenet5"] + args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {args[0]}" in err and "range()" not in err


def test_bad_hist_percent_is_a_usage_error(tmp_path, capsys):
    code = main(["quantize", "lenet5", "--algo", "hist", "--hist-percent", "1.5", "--out", str(tmp_path / "q.rq")])
    _one_error_line(capsys, code, 2, "hist_percent")
    assert not (tmp_path / "q.rq").exists()


def test_fifo_model_path_refused_without_opening(tmp_path):
    """In a subprocess: opening a FIFO for reading would block forever."""
    import os
    import subprocess
    import sys
    fifo = tmp_path / "model.rq"
    os.mkfifo(fifo)
    for args in (["quantize", str(fifo), "--out", str(tmp_path / "q.rq")], ["eval", "lenet5", "--file", str(fifo)]):
        r = subprocess.run([sys.executable, "-m", "refquant.cli", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr == (f"refquant: error: {fifo} is not a regular file (a FIFO, socket or device), "
                            "not a model file\n")


def test_bench_rejects_unknown_names(capsys):
    assert main(["bench", "no_such_benchmark"]) == 2
    assert "calibration" in capsys.readouterr().err


def test_convert_a_quantized_file(tmp_path, capsys):
    q, out = tmp_path / "q.rq", tmp_path / "i8.rq"
    assert main(["quantize", "lenet5", "--algo", "abs_max", "--batch-nums", "2", "--out", str(q)]) == 0
    assert main(["convert", str(q), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv2d_int8 2" in text and "matmul_int8 3" in text and "test top-1: fake-quant" in text
    i8 = refquant.load(out)
    assert i8.meta["int8"]["int8_ops"] >= 5
    assert main(["convert", "lenet5", "--out", str(tmp_path / "x.rq")]) == 1  # an FP32 model: a clean error


def test_train_qat_then_convert(tmp_path, capsys):
    out = tmp_path / "qat.rq"
    assert main(["train", "lenet5", "--qat", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    assert "QAT 8-bit, 1 epochs" in capsys.readouterr().out
    q = refquant.load(out)
    assert q.meta["quantization"]["method"] == "qat"
    assert main(["convert", str(out), "--out", str(tmp_path / "i8.rq")]) == 0
    assert main(["quantize", "nope.rq", "--method", "qat"]) == 2


def test_train_qat_onnx_format(tmp_path, capsys):
    """--onnx-format reaches the QAT config: the saved graph has quantize_linear / dequantize_linear pairs and
    deploys like a quant_post_static(onnx_format=True) graph."""
    out = tmp_path / "qat_onnx.rq"
    assert main(["train", "lenet5", "--qat", "--onnx-format", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    counts = refquant.load(out).op_counts()
    assert counts.get("quantize_linear", 0) > 0 and counts.get("dequantize_linear", 0) > 0
    assert "fake_quantize_dequantize_moving_average_abs_max" not in counts
    assert main(["convert", str(out), "--out", str(tmp_path / "i8.rq")]) == 0
