"""The command line: info, train, eval, demo, and clean errors."""
import json

import pytest

import refquant
from refquant.cli import main


def test_info_prints_build_facts(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("refquant", "OpenMP", "avx512_vnni", "im2col"):
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
    rows = json.loads(path.read_text())
    assert rows[0]["model"] == "lenet5" and rows[0]["top1"] >= 97.0
    assert "FP32 top-1" in capsys.readouterr().out


def test_unknown_model_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["train", "nope"])
    assert exc.value.code == 2
