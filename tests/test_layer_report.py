"""The per-layer report: its numbers recomputed by hand on LeNet."""
import math

import numpy as np
import pytest

from refquant.quant import layer_report, quant_post_static
from refquant.reference import rounding
from refquant.quant.report import sqnr_db


def test_sqnr():
    x = np.array([3.0, 4.0])
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(x, x + np.array([0.3, 0.4])) == pytest.approx(20.0)


@pytest.fixture(scope="module")
def lenet():
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    m = pretrained("lenet5")
    x, _ = zoo.load_data("lenet5", "train")
    return m, [{"x": x[i:i + 32]} for i in range(0, 96, 32)]


@pytest.mark.parametrize("onnx", [False, True])
def test_report_rows(lenet, onnx):
    m, feeds = lenet
    q = quant_post_static(m, feeds, algo="KL", onnx_format=onnx)
    rows = layer_report(m, q, feeds[:2])
    assert [r["op"] for r in rows] == q.meta["quantization"]["quantized_ops"]
    r = rows[1]  # conv2d_1: reads pool2d_0.tmp_0
    x = np.concatenate([m.run(f, outputs=[r["input"]])[r["input"]].reshape(-1) for f in feeds[:2]])
    t = q.meta["quantization"]["activation_thresholds"][r["input"]]
    assert r["threshold"] == t and r["scale"] == t / 127
    assert r["clipped"] == np.mean(np.abs(x) > t) and 0 < r["clipped"] < 0.1  # KL clips a little
    assert r["sqnr_db"] == pytest.approx(sqnr_db(x, rounding.quant_dequant_op(x, t)))
    assert r["weight_clipped"] == 0.0 and 35 < r["weight_sqnr_db"] < 60
    # error accumulates: the last layer's output is further from FP32 than the first's
    assert rows[0]["output_sqnr_db"] > rows[-1]["output_sqnr_db"] > 5


def test_report_needs_a_static_model(lenet):
    m, feeds = lenet
    with pytest.raises(ValueError):
        layer_report(m, m, feeds)
