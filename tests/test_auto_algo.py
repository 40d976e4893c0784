"""algo="auto" (refquant.quant.auto_algo.quant_post_auto): per-tensor choice of the calibration algorithm by the
error of the layers reading the tensor, on the Paddle-checked LeNet of test_post_static (a few seconds)."""
from __future__ import annotations

import numpy as np
import pytest

from refquant.calibration.algorithms import static_algorithms
from refquant.errors import ArgumentError
from refquant.executor import forward
from refquant.quant import quant_post_static, thresholds
from refquant.quant.auto_algo import _local_output, _rel_err, quant_post_auto

from .test_post_static import batches, lenet  # noqa: F401 - the oracle LeNet and its calibration batches


@pytest.fixture(scope="module")
def auto(lenet, batches):
    return quant_post_auto(lenet, batches)


def test_each_threshold_is_its_chosen_algorithms(lenet, batches, auto):
    info = auto.meta["quantization"]["auto"]
    assert info["candidates"] == list(static_algorithms())
    per_algo = {a: thresholds(quant_post_static(lenet, batches, algo=a)) for a in static_algorithms()}
    got = thresholds(auto)
    assert set(info["choice"]) <= set(got) and info["choice"]
    for x, a in info["choice"].items():
        assert got[x] == pytest.approx(per_algo[a][x], rel=1e-6), (x, a)
        errs = info["errors"][x]
        assert errs[a] == min(errs.values())
    assert len(set(info["choice"].values())) >= 2      # not one algorithm for every tensor on this model
    assert all(op.attrs["quantization_type"] == "post_auto" for op in auto.ops if "quantization_type" in op.attrs)


def test_one_candidate_is_plain_ptq(lenet, batches):
    q = quant_post_auto(lenet, batches, candidates=("KL",))
    ref = quant_post_static(lenet, batches, algo="KL")
    got, want = thresholds(q), thresholds(ref)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert set(q.params) == set(ref.params)
    for k in ref.params:
        np.testing.assert_array_equal(q.params[k], ref.params[k])


def test_local_output_is_the_quantized_op(lenet, batches):
    # the first conv reads the model input: run alone on the FP32 tensors, it is the quantized model's conv
    q = quant_post_static(lenet, batches, algo="abs_max")
    env, _ = forward(lenet, batches[0], keep_all=True)
    op = next(o for o in q.ops if "quantization_type" in o.attrs)
    want, _ = forward(q, batches[0], keep_all=True)
    np.testing.assert_array_equal(_local_output(q, op, env), want[op.outputs[0]])
    assert 0 < _rel_err(want[op.outputs[0]], env[op.outputs[0]]) < 0.05


def test_auto_layer_errors_never_worse_than_one_algorithm(lenet, batches, auto):
    errors = auto.meta["quantization"]["auto"]["errors"]
    for a in static_algorithms():
        assert sum(min(e.values()) for e in errors.values()) <= sum(e[a] for e in errors.values())


def test_rejects_bad_arguments(lenet, batches):
    with pytest.raises(ArgumentError, match="candidates"):
        quant_post_auto(lenet, batches, candidates=("KL", "min_max"))
    with pytest.raises(ArgumentError, match="algo"):
        quant_post_auto(lenet, batches, algo="KL")
    with pytest.raises(ArgumentError, match="empty"):
        quant_post_auto(lenet, [])


def test_recipe_picks_k_by_budget(lenet, batches):
    from refquant.realmodels import ppocr
    from refquant.quant.sensitivity import quantized_ops
    q0, i8 = ppocr.recipe(lenet, batches, budget=float("inf"), max_skip=2)
    info = q0.meta["quantization"]["recipe"]
    assert info["k"] == 0 and info["skip"] == [] and list(info["distance_by_k"]) == [0]
    assert q0.meta["quantization"]["algo"] == info["algo"] and i8 is not None
    q, _ = ppocr.recipe(lenet, batches, budget=-1.0, max_skip=2, int8=False)   # never met: the least distance
    info = q.meta["quantization"]["recipe"]
    d = info["distance_by_k"]
    assert list(d) == [0, 1, 2] and d[info["k"]] == min(d.values()) and len(info["skip"]) == info["k"]
    n_ops = len(quantized_ops(lenet, ppocr.QUANT_OPS))
    assert len(q.meta["quantization"]["quantized_ops"]) == n_ops - info["k"]
    with pytest.raises(ValueError, match="two calibration batches"):
        ppocr.recipe(lenet, batches[:1])
