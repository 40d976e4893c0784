"""Hostile arguments to the calibration, PTQ, QAT, AdaRound, report and sensitivity APIs: every one is rejected
before any work with an error naming the argument; NaN inside a model is traced to the tensor and the op that
produced it."""
import numpy as np
import pytest

from refquant.calibration import HistogramObserver, cal_kl_threshold, calibrate, kl_curve
from refquant.errors import ArgumentError, NonFiniteError, RefquantError
from refquant.models.lenet import lenet5
from refquant.quant import convert, quant_aware, quant_post_dynamic, quant_post_static
from refquant.quant.post_static import calibrate_model
from refquant.quant.sensitivity import auto_skip, sensitivity

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


@pytest.mark.parametrize("kwargs,name", [(dict(weight_bits=8.0), "weight_bits"),
                                         (dict(weight_bits=True), "weight_bits"),
                                         (dict(threshold_rate=NAN), "threshold_rate"),
                                         (dict(quantizable_op_type=[]), "quantizable_op_type"),
                                         (dict(generate_test_model="no"), "generate_test_model")])
def test_quant_post_dynamic_arguments(model, kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        quant_post_dynamic(model, **kwargs)


@pytest.mark.parametrize("config,name", [({"weight_bits": 8.0}, "weight_bits"),
                                         ({"activation_bits": True}, "activation_bits"),
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
                                         (dict(bits=8), "bits"),
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


def test_adaround_and_layer_report_arguments(model):
    from refquant.quant.adaround import adaround_weight
    from refquant.quant.report import layer_report
    conv = next(op for op in model.ops if op.type == "conv2d")
    w = model.params[conv.inputs[1]]
    x = [np.zeros((1, 1, 28, 28), np.float32)]
    for kwargs, name in [(dict(iters=-1), "iters"), (dict(iters=10.0), "iters"), (dict(lr=NAN), "lr"),
                         (dict(bits=1), "bits"), (dict(warm_start=1.5), "warm_start")]:
        with pytest.raises(ArgumentError, match=name):
            adaround_weight(conv, w, np.ones(w.shape[0], np.float32), 0, x, **kwargs)
    q = quant_post_static(model, Loader(), algo="abs_max")
    with pytest.raises(ArgumentError, match="feeds_list"):
        layer_report(model, q, {"x": x[0]})
    with pytest.raises(ArgumentError, match="feeds_list"):
        layer_report(model, q, [])
