"""calibrate_model observes each activation as the forward computes it (executor ``observe``), so the executor
frees every tensor after its last reader: the same thresholds as calibrating the dicts of every activation, each
batch run once per pass (twice for KL / hist), and no batch's activations all held in memory."""
import numpy as np
import pytest

from refquant import executor
from refquant.calibration import calibrate
from refquant.models.lenet import lenet5
from refquant.quant import post_static, quant_post_static, thresholds
from refquant.quant.post_static import _collect_target_varnames, calibrate_model

DATA_BATCHES = 4


@pytest.fixture(scope="module")
def lenet():
    return lenet5(input_size=28)


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(3)
    return [{"x": (rng.standard_normal((8, 1, 28, 28)) * (1 + k)).astype(np.float32)} for k in range(DATA_BATCHES)]


def _counting_run(monkeypatch):
    calls = []
    real = executor.run

    def run(model, feeds, outputs=None, observe=None):
        calls.append((feeds, outputs))
        return real(model, feeds, outputs=outputs, observe=observe)

    monkeypatch.setattr(executor, "run", run)
    return calls


@pytest.mark.parametrize("algo", post_static.ALGOS)
def test_streamed_thresholds_equal_those_of_the_kept_activations(lenet, batches, algo):
    _, _, acts = _collect_target_varnames(lenet, ("conv2d", "depthwise_conv2d", "mul"), False, None)
    kept = calibrate([executor.run(lenet, b, outputs=acts) for b in batches], algo)
    streamed = calibrate_model(lenet, batches, algo)
    assert kept.thresholds.keys() == streamed.thresholds.keys() == set(acts)
    assert all(np.array_equal(kept.thresholds[k], streamed.thresholds[k]) for k in acts)
    assert kept.zero_size == streamed.zero_size


@pytest.mark.parametrize("algo, passes", [("abs_max", 1), ("avg", 1), ("KL", 2), ("hist", 2)])
def test_each_batch_runs_once_per_pass_and_keeps_no_activation(lenet, batches, monkeypatch, algo, passes):
    calls = _counting_run(monkeypatch)
    q = quant_post_static(lenet, batches, algo=algo)
    assert len(calls) == passes * DATA_BATCHES
    assert all(outputs == () for _, outputs in calls)  # nothing kept past its last reader
    calls.clear()
    one_shot = quant_post_static(lenet, iter(batches), algo=algo)  # read once, its feeds replayed for pass 2
    assert len(calls) == passes * DATA_BATCHES
    ta, tb = thresholds(q), thresholds(one_shot)
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_observe_sees_every_feed_and_op_output_once(lenet, batches):
    seen = []
    out = executor.run(lenet, batches[0], observe=lambda name, value: seen.append((name, value.shape)))
    produced = lenet.inputs + [n for op in lenet.ops for n in op.outputs if n and n not in lenet.params]
    assert [n for n, _ in seen] == produced
    assert dict(seen)[lenet.outputs[0]] == out[lenet.outputs[0]].shape
