"""Determinism: the same input gives the same output with 1 or 2 OpenMP threads, forward and backward."""
import numpy as np

import refquant
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
