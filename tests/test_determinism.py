"""Determinism: the same input gives the same output with 1 or 2 OpenMP threads, forward and backward; concurrent
INT8 runs leave NumPy's BLAS thread count as they found it."""
import threading

import numpy as np
import pytest

import refquant
from refquant import threads
from refquant.executor import backward, forward
from refquant.models import mobilenet_v2, resnet20
from refquant.train import with_loss


def _run(model, x, y, threads):
    old = refquant.get_num_threads()
    refquant.set_num_threads(threads)
    try:
        train = with_loss(model.copy(), label_name="label")
        env, tape = forward(train, {"x": x, "label": y}, training=False, record=True)
        grads = backward(train, env, tape, {train.meta["loss"]: np.ones((), x.dtype)})
        return model.run({"x": x})[model.outputs[0]], {k: grads[k] for k in sorted(train.trainable) if k in grads}
    finally:
        refquant.set_num_threads(old)


def test_one_and_two_threads_agree_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    for model in (resnet20(input_size=32, num_classes=10, in_channels=1, width=0.5),
                  mobilenet_v2(input_size=32, num_classes=10, in_channels=1, width=0.5)):
        out1, g1 = _run(model, x, y, 1)
        out2, g2 = _run(model, x, y, 2)
        assert out1.tobytes() == out2.tobytes()
        assert g1.keys() == g2.keys() and all(g1[k].tobytes() == g2[k].tobytes() for k in g1)


class FakeBlas:
    """threadpoolctl's controller of one BLAS library: its current thread count and a setter."""

    def __init__(self, n):
        self.num_threads = n

    def set_num_threads(self, n):
        self.num_threads = n


def test_blas_limit_restored_after_interleaved_threads(monkeypatch):
    """A enters, B enters, A leaves, B leaves (forced with events): BLAS is on one thread while either is inside
    and back on its 4 threads after both (separate threadpoolctl limits left it on 1)."""
    blas = FakeBlas(4)
    monkeypatch.setattr(threads, "_blas", [blas])
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def a():
        with threads.blas_on_one_thread():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with threads.blas_on_one_thread():
            b_in.set()
            a_out.wait(5)
            seen.append(blas.num_threads)

    workers = [threading.Thread(target=f) for f in (a, b)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    assert seen == [1] and blas.num_threads == 4
    with pytest.raises(KeyError):  # a body that raises releases its hold too
        with threads.blas_on_one_thread():
            raise KeyError("x")
    assert blas.num_threads == 4


def test_blas_limit_follows_counts_changed_between_runs(monkeypatch):
    """The count restored is the one found on each entry: a user's change between runs is kept, and a library
    already on one thread is not touched."""
    blas, calls = FakeBlas(4), []
    blas.set_num_threads = lambda n: (calls.append(n), setattr(blas, "num_threads", n))
    monkeypatch.setattr(threads, "_blas", [blas])
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    for n in (4, 3, 1, 2):
        blas.num_threads = n
        with threads.blas_on_one_thread():
            assert blas.num_threads == 1
        assert blas.num_threads == n
    assert calls == [1, 4, 1, 3, 1, 2]
