"""calibrate_model observes each activation as the forward computes it (executor ``observe``), so the executor
frees every tensor after its last reader: the same thresholds as calibrating the dicts of every activation, each
batch run once per pass (KL / hist: pass 1 also fills the histograms from the last batch, so pass 2 skips it),
and no batch's activations all held in memory."""
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


@pytest.mark.parametrize("algo, forwards", [("abs_max", DATA_BATCHES), ("avg", DATA_BATCHES),
                                             ("KL", 2 * DATA_BATCHES - 1), ("hist", DATA_BATCHES)])
def test_each_batch_runs_once_per_pass_and_keeps_no_activation(lenet, batches, monkeypatch, algo, forwards):
    """hist: one pass, every tensor's kept tail deciding its threshold here (TailObserver)."""
    calls = _counting_run(monkeypatch)
    q = quant_post_static(lenet, batches, algo=algo)
    assert len(calls) == forwards
    assert all(outputs == () for _, outputs in calls)  # nothing kept past its last reader
    calls.clear()
    one_shot = quant_post_static(lenet, iter(batches), algo=algo)  # read once, its feeds replayed for pass 2
    assert len(calls) == forwards
    ta, tb = thresholds(q), thresholds(one_shot)
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_observe_sees_every_feed_and_op_output_once(lenet, batches):
    seen = []
    out = executor.run(lenet, batches[0], observe=lambda name, value: seen.append((name, value.shape)))
    produced = lenet.inputs + [n for op in lenet.ops for n in op.outputs if n and n not in lenet.params]
    assert [n for n, _ in seen] == produced
    assert dict(seen)[lenet.outputs[0]] == out[lenet.outputs[0]].shape


@pytest.mark.parametrize("algo", ["KL", "hist"])
def test_streamed_last_batch_histogrammed_in_pass_1(algo):
    """Function batches (the last one histogrammed in pass 1) give what dict batches give, also for a tensor that
    is empty or missing in the last batch and one that only the last batch has."""
    rng = np.random.default_rng(4)
    dicts = [{"a": rng.standard_normal(50) * (k + 1), "b": rng.standard_normal(30), "c": rng.standard_normal(20)}
             for k in range(3)]
    dicts[2]["b"] = np.zeros(0)
    del dicts[2]["c"]
    dicts[2]["d"] = rng.standard_normal(40)

    def pushed(batch):
        return lambda visit: [visit(name, x) for name, x in batch.items()]

    want = calibrate(dicts, algo)
    got = calibrate(lambda: map(pushed, dicts), algo)
    assert list(got.thresholds) == list(want.thresholds) == ["a", "b", "c", "d"]
    assert got.thresholds == want.thresholds and got.zero_size == want.zero_size == {"b"}
    assert all(np.array_equal(got.observers[n].hist, want.observers[n].hist) for n in want.observers)
