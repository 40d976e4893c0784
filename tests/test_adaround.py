"""AdaRound: the rectified sigmoid and its schedule, what it learns on LeNet, and Paddle's stored weights."""
import numpy as np
import pytest

from refquant.calibration import weight_channel_axis, weight_threshold
from refquant.quant import adaround, quant_post_static
from refquant.reference import rounding
from refquant.quant.post_static import _collect_target_varnames, _layer_inputs


def test_rectified_sigmoid_and_its_inverse():
    frac = np.linspace(0.0, 0.999, 50)
    assert np.allclose(adaround.rectified_sigmoid(adaround.initial_alpha(frac)), frac, atol=1e-12)
    assert adaround.rectified_sigmoid(np.array([-50.0, 50.0])).tolist() == [0.0, 1.0]  # stretched, then clipped
    # beta: 20 at the end of the warm start, 2 at the last iteration (Paddle's 2 + 9 (1 + cos(pi rel)))
    assert adaround.beta_schedule(200, 1000, 0.2) == pytest.approx(20.0)
    assert adaround.beta_schedule(1000, 1000, 0.2) == pytest.approx(2.0)
    assert adaround.beta_schedule(600, 1000, 0.2) == pytest.approx(2 + 9 * (1 + np.cos(np.pi * 0.5)))


@pytest.fixture(scope="module")
def digits():
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    m = pretrained("lenet5")
    xtr, _ = zoo.load_data("lenet5", "train")
    xte, _ = zoo.load_data("lenet5", "test")
    return m, [{"x": xtr[i:i + 32]} for i in range(0, 128, 32)], xte


def _layers(m, loader):
    quant_ops, _, _ = _collect_target_varnames(m, ("conv2d", "depthwise_conv2d", "mul"), False, None)
    inputs = _layer_inputs(m, lambda: loader, [xs[0] for _, _, xs in quant_ops])
    for i, w, xs in quant_ops:
        op = m.ops[i]
        yield op, m.params[w], np.asarray(weight_threshold(m.params[w], op.type), np.float32), \
            weight_channel_axis(op.type), inputs[xs[0]]


def test_zero_iterations_is_nearest_rounding(digits):
    """With no step, h(alpha) is the fractional part, so hardening rounds to nearest."""
    m, loader, _ = digits
    for op, w, t, axis, xs in _layers(m, loader[:1]):
        q = adaround.adaround_weight(op, w, t, axis, xs, bits=4, iters=0)
        nearest = rounding.freeze_weight(w, t, axis, 4)
        v, _ = adaround.scaled_weight(w, t, axis, 4)
        ties = np.abs(v - np.floor(v) - 0.5) < 1e-6
        assert np.array_equal(q[~ties], nearest[~ties]), op.name


def test_learned_rounding_lowers_each_layers_reconstruction_error(digits):
    m, loader, _ = digits
    for op, w, t, axis, xs in _layers(m, loader):
        q = adaround.adaround_weight(op, w, t, axis, xs, bits=4, iters=300)
        assert np.array_equal(q, np.round(q)) and np.abs(q).max() <= 7
        # still a rounding: every weight went to its floor or its ceiling
        v, _ = adaround.scaled_weight(w, t, axis, 4)
        assert np.all((q == np.floor(v)) | (q == np.ceil(v)) | (np.abs(q) == 7))
        nearest = rounding.freeze_weight(w, t, axis, 4)
        err_ada = adaround.reconstruction_error(op, w, q, t, axis, xs, 4)
        err_nearest = adaround.reconstruction_error(op, w, nearest, t, axis, xs, 4)
        assert err_ada < 0.7 * err_nearest, (op.name, err_ada, err_nearest)


def test_adaround_in_quant_post_static_brings_outputs_closer(digits):
    m, loader, xte = digits
    out = m.outputs[0]
    f = m.run({"x": xte})[out]

    def sqnr(q):
        p = q.run({"x": xte})[out]
        return 10 * np.log10((f ** 2).sum() / ((f - p) ** 2).sum())

    kw = dict(algo="KL", weight_bits=4, activation_bits=4)
    ada = quant_post_static(m, loader, round_type="adaround", adaround_iters=300, **kw)
    assert sqnr(ada) > sqnr(quant_post_static(m, loader, **kw)) + 1.0
    assert ada.meta["quantization"]["round_type"] == "adaround"
    onnx = quant_post_static(m, loader, round_type="adaround", adaround_iters=300, onnx_format=True, **kw)
    w = next(n for n in onnx.params if onnx.params[n].dtype == np.int8)
    assert np.abs(onnx.params[w]).max() <= 7


def test_paddle_mode_stores_the_unrounded_scaled_weight(digits):
    """Paddle's AdaRound exits at iteration 0 and stores F + h(alpha_0) = V: clipped, scaled, not rounded."""
    m, loader, _ = digits
    q = quant_post_static(m, loader, algo="abs_max", round_type="adaround", adaround_mode="paddle")
    w = "conv2d_0.w_0"
    t = weight_threshold(m.params[w], "conv2d")
    v, _ = adaround.scaled_weight(m.params[w], t, 0, 8)
    assert not np.array_equal(v, np.round(v))
    assert np.allclose(adaround.paddle_adaround_weight(m.params[w], t, 0), v, atol=1e-5)
    assert np.allclose(q.params[w], m.params[w], atol=1e-6)  # clipped at abs_max per channel: nothing clipped
