"""Optimizers, schedules, the loss wrapper and the fit / evaluate loops (including the LeNet-5 digits target)."""
import io
import time

import numpy as np
import pytest

import refquant.models as M
from refquant.data import load_digits, random_shift
from refquant.executor import backward, forward
from refquant.graph import Model, Op, TensorSpec
from refquant.models import zoo
from refquant.train import SGD, Adam, Cosine, ProgressBar, StepDecay, evaluate, fit, make_schedule, predict, with_loss


def _linear_model(w0):
    """y = x @ w (mul), one trainable and one frozen parameter."""
    return Model([Op("mul", ["x", "w"], ["y"], {}, "mul_0")],
                 {"w": np.array(w0, np.float32), "frozen": np.ones(3, np.float32)},
                 [TensorSpec("x", (None, 2))], ["y"], trainable=["w"])


def test_sgd_momentum_weight_decay_matches_the_formula():
    m = _linear_model([[1.0], [2.0]])
    opt = SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01)
    g = np.array([[0.5], [-1.0]], np.float32)
    p, v = m.params["w"].astype(np.float64), np.zeros((2, 1))
    for _ in range(3):
        opt.step({"w": g, "frozen": np.ones(3, np.float32)})
        v = 0.9 * v + (g + 0.01 * p)
        p = p - 0.1 * v
    np.testing.assert_allclose(m.params["w"], p, rtol=1e-6)
    np.testing.assert_array_equal(m.params["frozen"], np.ones(3))      # not trainable: untouched
    # 1-D parameters (biases, norm scales) are not decayed by default
    assert opt.no_decay == set()


def test_adam_first_steps():
    m = _linear_model([[1.0], [2.0]])
    opt = Adam(m, lr=0.01)
    g = np.array([[0.5], [-1.0]], np.float32)
    opt.step({"w": g})
    # first Adam step moves every weight by lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|)
    np.testing.assert_allclose(m.params["w"], [[1.0 - 0.01], [2.0 + 0.01]], rtol=1e-5)
    p, mm, vv = np.array([[0.99], [2.01]]), (1 - 0.9) * g, (1 - 0.999) * g * g
    g2 = np.array([[0.1], [0.2]], np.float32)
    opt.step({"w": g2})
    mm, vv = 0.9 * mm + 0.1 * g2, 0.999 * vv + 0.001 * g2 * g2
    p = p - 0.01 * (mm / (1 - 0.9 ** 2)) / (np.sqrt(vv / (1 - 0.999 ** 2)) + 1e-8)
    np.testing.assert_allclose(m.params["w"], p, rtol=1e-5)


def test_schedules():
    c = Cosine(1.0, total_steps=110, warmup_steps=10)
    assert c(0) == pytest.approx(0.1) and c(9) == pytest.approx(1.0)
    assert c(10) == pytest.approx(1.0) and c(60) == pytest.approx(0.5) and c(110) == pytest.approx(0.0)
    assert all(c(i) >= c(i + 1) for i in range(10, 110))
    s = StepDecay(0.4, total_steps=100, milestones=[30, 60], gamma=0.5)
    assert [s(0), s(29), s(30), s(59), s(60), s(99)] == [0.4, 0.4, 0.2, 0.2, 0.1, 0.1]
    assert make_schedule("step", 1.0, 100)(80) == pytest.approx(0.01)      # default milestones 50%, 75%
    assert make_schedule(None, 0.3, 10)(7) == 0.3
    with pytest.raises(ValueError):
        make_schedule("exotic", 1.0, 10)


def test_with_loss_appends_cross_entropy_and_leaves_the_model_alone():
    m = M.lenet5(input_size=16)
    t = with_loss(m)
    assert m.inputs == ["x"] and len(m.ops) == 15                         # the caller's model is unchanged
    assert t.inputs == ["x", "label"] and [op.type for op in t.ops[-2:]] == ["softmax_with_cross_entropy", "mean"]
    assert t.outputs == [m.outputs[0], t.meta["loss"]] and t.meta["logits"] == m.outputs[0]
    assert t.params["fc_0.w_0"] is not m.params["fc_0.w_0"]              # a copy...
    assert with_loss(m, share_params=True).params["fc_0.w_0"] is m.params["fc_0.w_0"]   # ...unless shared
    x, y = load_digits(16, "test")
    env, tape = forward(t, {"x": x[:8], "label": y[:8]}, training=True, record=True)
    loss = env[t.meta["loss"]]
    assert loss.shape == () and abs(float(loss) - np.log(10)) < 1.5
    grads = backward(t, env, tape, {t.meta["loss"]: np.ones((), np.float32)})
    assert set(t.trainable) <= set(grads)


def test_batch_norm_state_is_updated_by_training_not_by_the_optimizer():
    m = M.vgg_small(input_size=8, width=0.125, num_classes=10)
    x, y = load_digits(8, "train")
    before = {k: v.copy() for k, v in m.params.items()}
    fit(m, x[:128], y[:128], epochs=1, batch_size=64, lr=0.05, progress=False)
    mean, var = "batch_norm_0.w_1", "batch_norm_0.w_2"
    assert mean not in m.trainable and var not in m.trainable
    assert not np.array_equal(m.params[mean], before[mean])               # running stats moved (executor)
    assert not np.array_equal(m.params["conv2d_0.w_0"], before["conv2d_0.w_0"])


def _small_run(seed):
    m = M.lenet5(input_size=8, width=0.5, seed=0)
    x, y = load_digits(8, "train")
    hist = fit(m, x[:256], y[:256], epochs=2, batch_size=32, lr=0.05, weight_decay=1e-4, seed=seed,
               warmup_epochs=0.5, progress=False, augment=lambda xb, rng: random_shift(xb, rng, 1))
    return m, hist


def test_same_seed_gives_bit_identical_weights():
    a, ha = _small_run(seed=7)
    b, hb = _small_run(seed=7)
    c, _ = _small_run(seed=8)
    for k in a.params:
        assert a.params[k].tobytes() == b.params[k].tobytes(), k
    assert ha["loss"] == hb["loss"]
    assert any(a.params[k].tobytes() != c.params[k].tobytes() for k in a.params)


def test_fit_history_and_progress_bar(capsys):
    m = M.lenet5(input_size=8, width=0.5)
    x, y = load_digits(8, "train")
    xt, yt = load_digits(8, "test")
    h = fit(m, x[:128], y[:128], epochs=2, batch_size=64, progress=True, x_val=xt, y_val=yt)
    assert len(h["loss"]) == len(h["acc"]) == len(h["val_acc"]) == len(h["seconds"]) == 2
    assert 0.0 <= h["val_acc"][-1] <= 1.0 and h["total_seconds"] > 0
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss" in err and "val" in err
    fit(m, x[:64], y[:64], epochs=1, batch_size=64, progress=False)
    assert capsys.readouterr().err == ""
    buf = io.StringIO()
    bar = ProgressBar(True, stream=buf)
    bar.update("hello", 0.5, force=True)
    assert "hello" in buf.getvalue() and "[" in buf.getvalue()


def test_predict_and_evaluate():
    m = M.lenet5(input_size=8)
    x, y = load_digits(8, "test")
    logits = predict(m, x, batch_size=100)
    assert logits.shape == (359, 10)
    np.testing.assert_allclose(logits[:5], m.run({"x": x[:5]})[m.outputs[0]], rtol=1e-5, atol=1e-6)
    acc = evaluate(m, x, y, batch_size=50)
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_is_reported():
    m = M.lenet5(input_size=8)
    x, y = load_digits(8, "train")
    with pytest.raises(FloatingPointError, match="loss"):
        fit(m, x[:64] * np.float32(np.inf), y[:64], epochs=1, batch_size=32, progress=False)


def test_text_bag_of_words_trains():
    m, hist, top1 = zoo.train("text_mean", progress=False, validate=False)
    assert top1 >= 0.93 and hist["loss"][-1] < hist["loss"][0]
    assert m.meta["train"]["test_top1"] == top1


def test_lenet5_reaches_97_percent_on_digits():
    """The zoo recipe (16x16, 15 epochs, SGD momentum, cosine, +-1 pixel shifts): >= 97% top-1 on the test split."""
    t = time.perf_counter()
    model, hist, top1 = zoo.train("lenet5", seed=0, progress=False, validate=False)
    assert top1 >= 0.97, (top1, hist["loss"])
    assert hist["loss"][-1] < 0.1
    print(f"lenet5: {100 * top1:.2f}% in {time.perf_counter() - t:.1f}s")
