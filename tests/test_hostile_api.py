"""Hostile arguments to the calibration, PTQ, QAT and sensitivity APIs: every one is rejected before any work with
an error naming the argument; hist_percent = 1.0 gives a usable threshold; weight-only PTQ leaves conv biases in
float; concurrent blas_on_one_thread callers restore the BLAS thread count; NaN inside a model is traced to the
tensor and op."""
import threading

import numpy as np
import pytest

from refquant import threads
from refquant.calibration import HistogramObserver, cal_kl_threshold, calibrate, kl_curve
from refquant.errors import ArgumentError, NonFiniteError, RefquantError
from refquant.models.lenet import lenet5
from refquant.quant import convert, quant_aware, quant_post_dynamic, quant_post_static
from refquant.quant.post_static import calibrate_model
from refquant.quant.sensitivity import auto_skip, sensitivity
from refquant.reference import histogram as hist_twin

NAN = float("nan")


@pytest.fixture(scope="module")
def model():
    return lenet5(input_size=28)


class Loader:
    """A data loader that counts how often it is read: validation must reject before reading it."""

    def __init__(self, n=2):
        rng = np.random.default_rng(0)
        self.batches = [{"x": rng.standard_normal((2, 1, 28, 28)).astype(np.float32)} for _ in range(n)]
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return iter(self.batches)


# ---------------------------------------------------------------- KL / histogram arguments, checked first

@pytest.mark.parametrize("bits", [17, 20, 1, 0, True, 8.0, "8", None])
def test_kl_bits_rejected_before_the_search(bits):
    with pytest.raises(ArgumentError, match="bits"):
        cal_kl_threshold(np.ones(8, dtype=np.int64), 1.0, bits)
    with pytest.raises(ArgumentError, match="bits"):
        kl_curve(np.ones(8, dtype=np.int64), bits)


@pytest.mark.parametrize("kwargs,name", [(dict(bits=17), "bits"), (dict(bits=8.0), "bits"),
                                         (dict(hist_percent=1.5), "hist_percent"), (dict(bins=2), "bins"),
                                         (dict(bins=2048.0), "bins"), (dict(onnx_format="no"), "onnx_format")])
def test_calibrate_checks_arguments_before_reading_batches(kwargs, name):
    loader = Loader()
    with pytest.raises(ArgumentError, match=name):
        calibrate(loader, "KL", **kwargs)
    assert loader.reads == 0


@pytest.mark.parametrize("kwargs,name", [(dict(bits=17), "bits"), (dict(bins=2), "bins"),
                                         (dict(hist_percent=NAN), "hist_percent"), (dict(method="kl"), "method")])
def test_histogram_observer_arguments(kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        HistogramObserver(0.0, 1.0, **kwargs)


def test_calibrate_rejects_a_batch_that_is_not_a_dict():
    with pytest.raises(ArgumentError, match="batch 0"):
        calibrate([np.ones(3)], "abs_max")


# ---------------------------------------------------------------- hist_percent

def _ten_equal_bins(p):
    """Ten bins of one value each: the float running sum of ten 0.1 fractions is 0.9999999999999999 < 1."""
    obs = HistogramObserver(0.0, 1.0, bins=10, method="hist", hist_percent=p)
    obs.update(np.arange(10, dtype=np.float32) / 10 + 0.05)
    return obs


def test_hist_percent_one_gives_the_last_bin_not_a_negative_threshold():
    obs = _ten_equal_bins(1.0)
    width = obs.bin_width
    assert hist_twin.hist_threshold(obs.hist, obs.edges, 1.0) == -0.5 * width  # Paddle's walk never gets there
    assert obs.threshold() == (9 + 0.5) * width
    assert obs.hist_threshold(0.5) == hist_twin.hist_threshold(obs.hist, obs.edges, 0.5) == 4.5 * width


@pytest.mark.parametrize("p", [1.5, 1.0000001, NAN, float("inf"), 0.0, -0.1, None, True, "0.9"])
def test_hist_percent_outside_0_1_rejected(p):
    with pytest.raises(ArgumentError, match="hist_percent"):
        _ten_equal_bins(p)
    if p is not None:  # hist_threshold(None): the observer's own
        with pytest.raises(ArgumentError, match="hist_percent"):
            _ten_equal_bins(0.5).hist_threshold(p)


def test_ptq_hist_percent_one_gives_positive_thresholds(model):
    q = quant_post_static(model, Loader(), algo="hist", hist_percent=1.0)
    acts = q.meta["quantization"]["activation_thresholds"]
    assert acts and all(t > 0 for t in acts.values())


# ---------------------------------------------------------------- quant_post_dynamic: Filter / Y only

def test_dynamic_leaves_conv_biases_float(model):
    """Untrained lenet5: zero conv biases. Only the conv filters and mul weights are quantized; the biases (here
    one with non-zero values) stay float32 and are read directly."""
    m = model.copy()
    conv = next(op for op in m.ops if op.type == "conv2d")
    bias = conv.inputs[2]
    m.params[bias] = np.linspace(-1, 1, m.params[bias].size, dtype=np.float32)
    for src in (model, m):
        q = quant_post_dynamic(src)
        quantized = {op.inputs[0] for op in q.ops if op.type == "dequantize_weight"}
        weights = {op.inputs[1] for op in src.ops if op.type in ("conv2d", "mul")}
        assert quantized == weights
        for op in src.ops:
            if op.type == "conv2d" and len(op.inputs) > 2:
                assert q.params[op.inputs[2]].dtype == np.float32
                assert np.array_equal(q.params[op.inputs[2]], src.params[op.inputs[2]])
    assert conv.inputs[2] in next(op for op in q.ops if op.name == conv.name).inputs


# ---------------------------------------------------------------- blas_on_one_thread under concurrency

class FakeBlas:
    """threadpoolctl's ThreadpoolController for one BLAS pool: ``limit`` records the current count and sets the new
    one; the returned limiter restores what it recorded."""

    def __init__(self, n):
        self.n = n

    def limit(self, limits, user_api):
        blas, original = self, self.n
        self.n = limits

        class Limiter:
            def restore_original_limits(self):
                blas.n = original

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.restore_original_limits()

        return Limiter()


def test_blas_limit_restored_after_interleaved_threads(monkeypatch):
    """A enters, B enters, A leaves, B leaves (forced with events): BLAS is back on its 4 threads, and on one
    while either is inside."""
    blas = FakeBlas(4)
    monkeypatch.setattr(threads, "_blas", blas)
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
            seen.append(blas.n)

    workers = [threading.Thread(target=f) for f in (a, b)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    assert seen == [1] and blas.n == 4


def test_blas_limit_released_when_the_body_raises(monkeypatch):
    blas = FakeBlas(3)
    monkeypatch.setattr(threads, "_blas", blas)
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    with pytest.raises(KeyError):
        with threads.blas_on_one_thread():
            raise KeyError("x")
    assert blas.n == 3
    with threads.blas_on_one_thread():
        assert blas.n == 1
    assert blas.n == 3


# ---------------------------------------------------------------- PTQ argument validation

BAD_PTQ = [
    (dict(hist_percent=None), "hist_percent"), (dict(hist_percent=NAN), "hist_percent"),
    (dict(batch_nums=NAN), "batch_nums"), (dict(batch_nums="2"), "batch_nums"), (dict(batch_nums=1.5), "batch_nums"),
    (dict(batch_nums=True), "batch_nums"), (dict(batch_nums=0), "batch_nums"),
    (dict(quantizable_op_type=[]), "quantizable_op_type"), (dict(quantizable_op_type="conv2d"), "quantizable_op_type"),
    (dict(quantizable_op_type=["conv3d"]), "quantizable_op_type"),
    (dict(round_type="adaround", adaround_iters=0), "adaround_iters"),
    (dict(round_type="adaround", learning_rate=NAN), "learning_rate"), (dict(learning_rate=-1.0), "learning_rate"),
    (dict(weight_bits=16.0, activation_bits=16.0), "weight_bits"), (dict(weight_bits=17, activation_bits=17), "bits"),
    (dict(weight_bits=4), "activation_bits == weight_bits"), (dict(algo="kl"), "algo"), (dict(algo=None), "algo"),
    (dict(bias_correction=1), "bias_correction"), (dict(is_full_quantize="yes"), "is_full_quantize"),
    (dict(onnx_format=1), "onnx_format"), (dict(skip_tensor_list="x"), "skip_tensor_list"),
    (dict(weight_quantize_type="channel"), "weight_quantize_type"), (dict(calibration={}), "calibration"),
]


@pytest.mark.parametrize("kwargs,name", BAD_PTQ)
def test_quant_post_static_rejects_before_reading_data(model, kwargs, name):
    loader = Loader()
    with pytest.raises(ArgumentError, match=name):
        quant_post_static(model, loader, **kwargs)
    assert loader.reads == 0


def test_quant_post_static_rejects_a_single_feed_dict(model):
    with pytest.raises(TypeError, match="data_loader"):
        quant_post_static(model, {"x": np.zeros((1, 1, 28, 28), np.float32)})


@pytest.mark.parametrize("kwargs,name", [(dict(batch_nums=1.5), "batch_nums"), (dict(bits=16.0), "bits"),
                                         (dict(hist_percent=2.0), "hist_percent"), (dict(algo="KL2"), "algo")])
def test_calibrate_model_rejects_before_reading_data(model, kwargs, name):
    loader = Loader()
    with pytest.raises(ArgumentError, match=name):
        calibrate_model(model, loader, **kwargs)
    assert loader.reads == 0


@pytest.mark.parametrize("kwargs,name", [(dict(weight_bits=8.0), "weight_bits"), (dict(weight_bits=True), "weight_bits"),
                                         (dict(threshold_rate=NAN), "threshold_rate"),
                                         (dict(quantizable_op_type=[]), "quantizable_op_type"),
                                         (dict(generate_test_model="no"), "generate_test_model")])
def test_quant_post_dynamic_arguments(model, kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        quant_post_dynamic(model, **kwargs)


@pytest.mark.parametrize("config,name", [({"weight_bits": 8.0}, "weight_bits"), ({"activation_bits": True}, "activation_bits"),
                                         ({"window_size": 0}, "window_size"), ({"moving_rate": NAN}, "moving_rate"),
                                         ({"quantize_op_types": []}, "quantize_op_types"),
                                         ({"weight_reduce_range": "yes"}, "weight_reduce_range")])
def test_quant_aware_config_values(model, config, name):
    with pytest.raises(ArgumentError, match=name):
        quant_aware(model, config)


def test_quant_aware_and_convert_other_arguments(model):
    with pytest.raises(ArgumentError, match="for_test"):
        quant_aware(model, None, for_test="yes")
    with pytest.raises(ArgumentError, match="init_thresholds"):
        quant_aware(model, None, init_thresholds={"x": NAN})
    with pytest.raises(ArgumentError, match="model"):
        convert("model.rq")


@pytest.mark.parametrize("kwargs,name", [(dict(mode="some"), "mode"), (dict(hist_percent=NAN), "hist_percent"),
                                         (dict(algo="KL2"), "algo"), (dict(weight_bits=16.0), "weight_bits"),
                                         (dict(round_type="adaround"), "adaround"),
                                         (dict(calibration=None), "calibration"), (dict(eval_fn=3), "eval_fn"),
                                         (dict(quantizable_op_type=[]), "quantizable_op_type")])
def test_sensitivity_arguments(model, kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        sensitivity(model, Loader().batches, **kwargs)
    with pytest.raises(ArgumentError, match="calib_feeds"):
        sensitivity(model, [])


def test_auto_skip_k(model):
    for k in (True, 1.0, -1):
        with pytest.raises(ArgumentError, match="k"):
            auto_skip(model, [], k, ranking=[])


# ---------------------------------------------------------------- NaN / Inf inside the model

def test_calibration_names_the_nan_tensor_and_its_op(model):
    m = model.copy()
    conv = next(op for op in m.ops if op.type == "conv2d")
    m.params[conv.inputs[1]] = m.params[conv.inputs[1]].copy()
    m.params[conv.inputs[1]].flat[0] = np.inf
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError) as err:
        quant_post_static(m, Loader(), algo="abs_max")
    assert err.value.tensor == conv.outputs[0] and conv.name in err.value.op
    text = str(err.value)
    assert repr(conv.outputs[0]) in text and repr(conv.name) in text and "conv2d" in text


def test_run_names_the_nan_input_and_its_producer(model):
    from refquant.quant.dynamic_activations import quantize_dynamic
    q = quantize_dynamic(model)
    conv = next(op for op in q.ops if op.type == "conv2d")
    q.params[conv.inputs[1]] = q.params[conv.inputs[1]].copy()
    q.params[conv.inputs[1]].flat[0] = np.nan
    first = next(op for op in q.ops if op.type == "matmul_dynamic_int8")
    x = first.inputs[0]
    producer = next(op for op in q.ops if x in op.outputs)
    with np.errstate(invalid="ignore"), pytest.raises(ValueError) as err:
        q.run({"x": Loader().batches[0]["x"]})
    text = str(err.value)
    assert f"input {x!r}" in text and repr(producer.name) in text and "NaN/Inf" in text


def test_errors_are_refquant_errors():
    with pytest.raises(RefquantError):
        cal_kl_threshold(np.ones(8), 1.0, 17)
    with pytest.raises(TypeError):  # a wrong type is also a TypeError
        cal_kl_threshold(np.ones(8), 1.0, 8.0)
