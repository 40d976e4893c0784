"""KL / hist keep pass-1 activations for pass 2 (refquant.quant.post_static._replaying): the same thresholds as
running the model on every batch twice, and the model runs only on the batches that were not kept."""
import numpy as np
import pytest

from refquant import executor
from refquant.models.lenet import lenet5
from refquant.quant import post_static, quant_post_static, thresholds

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

    def run(model, feeds, outputs=None):
        calls.append(feeds)
        return real(model, feeds, outputs=outputs)

    monkeypatch.setattr(executor, "run", run)
    return calls


@pytest.mark.parametrize("algo", ["KL", "hist"])
@pytest.mark.parametrize("keep_bytes, forwards", [(0, 2 * DATA_BATCHES - 1), (1 << 30, DATA_BATCHES)])
def test_replay_runs_the_model_less_and_gives_the_same_thresholds(lenet, batches, monkeypatch, algo, keep_bytes,
                                                                   forwards):
    # fresh arrays on every call: nothing can be replayed, every batch runs twice (the reference)
    calls = _counting_run(monkeypatch)
    fresh = quant_post_static(lenet, lambda: [{"x": b["x"].copy()} for b in batches], algo=algo)
    assert len(calls) == 2 * DATA_BATCHES
    calls.clear()
    monkeypatch.setattr(post_static, "REPLAY_BYTES", keep_bytes)
    kept = quant_post_static(lenet, batches, algo=algo)
    assert len(calls) == forwards
    ta, tb = thresholds(fresh), thresholds(kept)
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_one_pass_algorithms_run_each_batch_once(lenet, batches, monkeypatch):
    calls = _counting_run(monkeypatch)
    quant_post_static(lenet, batches, algo="abs_max")
    assert len(calls) == DATA_BATCHES
