"""refquant.paddleslim: PaddleSlim 2.6's calls, written as its docs write them, give refquant's passes' results.

The PTQ thresholds are also checked against Paddle 3.3.1's own (tests/data/lenet_KL.json, the same LeNet and
calibration batches) and, when present, against the scales PaddleSlim saved for the Paddle model fixtures.
"""
import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import refquant
from refquant import paddleslim as ps
from refquant.errors import ArgumentError, ArgumentTypeError, ShapeError
from refquant.executor import forward
from refquant.models.builder import GraphBuilder
from refquant.quant import quant_post_static as rq_post_static, thresholds
from tests.test_post_static import oracle_lenet

DATA = Path(__file__).parent / "data"
KL_ONNX_OFF = dict(algo="KL", onnx_format=False,
                   quantizable_op_type=["conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2"])


class CPUPlace:  # stands for paddle.CPUPlace(): refquant only looks at the type name
    def __repr__(self):
        return "Place(cpu)"


class CUDAPlace:
    def __repr__(self):
        return "Place(gpu:0)"


class Executor:  # stands for paddle.static.Executor(place)
    def __init__(self, place):
        self.place = place


@pytest.fixture(scope="module")
def lenet_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "lenet.rq"
    refquant.io.save(oracle_lenet(), path)
    return str(path)


@pytest.fixture(scope="module")
def calib():
    a = np.load(DATA / "lenet_calib_acts_base.npz")
    return [a[f"x|b{k}"] for k in range(4)]  # 4 batches of 16, Paddle's calibration data


@pytest.fixture(scope="module")
def reference(calib):
    return thresholds(rq_post_static(oracle_lenet(), [{"x": x} for x in calib], algo="KL"))


def _same_thresholds(a, b):
    assert set(a) == set(b)
    for k in b:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ps.PaddleFormatWarning)
        return fn(*args, **kwargs)


def test_signatures_are_paddleslims():
    """Names, order and defaults of PaddleSlim 2.6 (quanter.py, quant_embedding.py)."""
    params = inspect.signature(ps.quant_post_static).parameters
    assert list(params)[:27] == [
        "executor", "model_dir", "quantize_model_path", "batch_generator", "sample_generator", "data_loader",
        "model_filename", "params_filename", "save_model_filename", "save_params_filename", "batch_size",
        "batch_nums", "scope", "algo", "round_type", "hist_percent", "bias_correction", "quantizable_op_type",
        "is_full_quantize", "weight_bits", "activation_bits", "activation_quantize_type", "weight_quantize_type",
        "optimize_model", "onnx_format", "skip_tensor_list", "deploy_backend"]
    defaults = {k: v.default for k, v in params.items()}
    assert (defaults["algo"], defaults["hist_percent"], defaults["batch_size"], defaults["onnx_format"],
            defaults["save_model_filename"], defaults["activation_quantize_type"]) == \
        ("hist", 0.9999, 1, True, "model.pdmodel", "range_abs_max")
    assert defaults["quantizable_op_type"] == ["conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul",
                                               "matmul_v2"]
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("is_use_cache_file", "cache_dir"))
    dyn = inspect.signature(ps.quant_post_dynamic).parameters
    assert list(dyn) == ["model_dir", "save_model_dir", "model_filename", "params_filename", "save_model_filename",
                         "save_params_filename", "quantizable_op_type", "weight_bits", "generate_test_model"]
    assert dyn["model_filename"].default is inspect.Parameter.empty and dyn["quantizable_op_type"].default == \
        ["conv2d", "mul"]
    assert list(inspect.signature(ps.quant_embedding).parameters) == ["program", "place", "config", "scope"]
    assert list(inspect.signature(ps.convert).parameters) == ["program", "place", "config", "scope", "save_int8"]
    assert list(inspect.signature(ps.quant_aware).parameters)[:6] == ["program", "place", "config", "scope",
                                                                      "for_test", "weight_quantize_func"]
    assert ps.QAT_CONFIG_DEFAULTS["onnx_format"] is True and ps.quant_post is ps.quant_post_static


def test_doc_call_sample_generator(lenet_path, calib, reference, tmp_path):
    """The doc example's call (sample_generator=reader, batch_size=16, batch_nums=...) with a label field, flat
    samples reshaped to the input shape as Paddle's loader does, and an incomplete last batch dropped."""
    def val_reader():
        for x in calib:
            for s in x:
                yield s.reshape(-1).astype(np.float64), 7   # image (flat, float64) + label
        yield calib[0][0].reshape(-1), 7                     # a 65th sample: incomplete batch, dropped

    exe = Executor(CPUPlace())
    with pytest.warns(ps.PaddleFormatWarning, match="model.rq"):
        q = ps.quant_post_static(executor=exe, model_dir=lenet_path, quantize_model_path=str(tmp_path / "save"),
                                 sample_generator=val_reader, model_filename=None, params_filename=None,
                                 batch_size=16, **KL_ONNX_OFF)
    _same_thresholds(thresholds(q), reference)
    saved = refquant.load(tmp_path / "save" / "model.rq")
    _same_thresholds(thresholds(saved), reference)


def test_thresholds_match_paddle_oracle(lenet_path, calib, tmp_path):
    """Paddle 3.3.1's KL thresholds on the same LeNet and batches (PostTrainingQuantization, batch_nums 4)."""
    oracle = json.loads((DATA / "lenet_KL.json").read_text())
    q = _quiet(ps.quant_post_static, Executor(CPUPlace()), lenet_path, str(tmp_path),
               data_loader=lambda: iter([{"x": x} for x in calib]), batch_nums=4, **KL_ONNX_OFF)
    th = thresholds(q)
    for name, v in oracle["activations"].items():
        np.testing.assert_allclose(th[name], v["threshold"], rtol=1e-4, err_msg=name)
    for name, v in oracle["weights"].items():
        np.testing.assert_array_equal(th[name], np.float32(v["threshold_per_channel"]), err_msg=name)


@pytest.mark.parametrize("kind", ["dict_with_label", "device_list", "feed_order_list", "one_shot_iterator",
                                  "batch_generator"])
def test_batch_sources(lenet_path, calib, reference, tmp_path, kind):
    """data_loader / batch_generator batches in every form Paddle feeds, all giving the same thresholds."""
    kwargs = {}
    if kind == "dict_with_label":
        kwargs["data_loader"] = lambda: ({"x": x, "label": np.zeros((16, 1), np.int64)} for x in calib)
    elif kind == "device_list":
        kwargs["data_loader"] = [[{"x": x}] for x in calib]
    elif kind == "feed_order_list":
        kwargs["data_loader"] = lambda: ((x, np.zeros(16)) for x in calib)
    elif kind == "one_shot_iterator":   # KL reads the data twice: a one-shot source is replayed
        kwargs["data_loader"] = iter([{"x": x} for x in calib])
    else:
        kwargs["batch_generator"] = lambda: ([x] for x in calib)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = ps.quant_post_static(None, lenet_path, str(tmp_path), **kwargs, **KL_ONNX_OFF)
    _same_thresholds(thresholds(q), reference)
    ignored = [w for w in caught if "not take as inputs" in str(w.message)]
    assert len(ignored) == (1 if kind == "dict_with_label" else 0)


def test_bad_calibration_data(lenet_path, calib, tmp_path):
    def run(**kw):
        return _quiet(ps.quant_post_static, None, lenet_path, str(tmp_path), **kw)

    with pytest.raises(ArgumentTypeError, match=r"\(array,\)"):
        run(sample_generator=lambda: iter(calib[0]))               # bare arrays, not (array,) tuples
    with pytest.raises(ArgumentTypeError, match=r"\[array\]"):
        run(batch_generator=lambda: iter(calib))                   # a batch must be [array] or a dict
    with pytest.raises(ArgumentError, match="no value for the model input"):
        run(data_loader=[{"image": calib[0]}])
    with pytest.raises(ShapeError, match="do not reshape"):
        run(sample_generator=lambda: ((np.zeros(5, np.float32),) for _ in range(2)), batch_size=2)
    with pytest.raises(ArgumentError, match="only one of"):
        run(data_loader=[{"x": calib[0]}], sample_generator=lambda: iter([]))
    with pytest.raises(ArgumentError, match="give the calibration data"):
        run()
    with pytest.raises(ArgumentTypeError, match="batch_size"):
        run(data_loader=[{"x": calib[0]}], batch_size=0.5)


def test_refusals_say_why(lenet_path, calib, tmp_path):
    loader = [{"x": calib[0]}]

    def run(**kw):
        return _quiet(ps.quant_post_static, kw.pop("executor", None), lenet_path, str(tmp_path),
                      data_loader=loader, **kw)

    with pytest.raises(ArgumentError, match="CUDA device"):
        run(executor=Executor(CUDAPlace()))
    with pytest.raises(ArgumentError, match="CUDA device"):
        ps.quant_embedding(oracle_lenet(), "gpu:0")
    with pytest.raises(ArgumentTypeError, match="Paddle place"):
        ps.quant_aware(oracle_lenet(), object())
    with pytest.raises(ArgumentError, match="min and max"):
        run(algo="min_max")
    with pytest.raises(ArgumentError, match="ptf"):
        run(algo="ptf")
    with pytest.raises(ArgumentError, match="deploy_backend"):
        run(deploy_backend="tensorrt")
    # LeNet's pool2d / relu read no parameter: Paddle would quantize their inputs, refquant does not
    with pytest.raises(ArgumentError, match="pool2d"):
        run(quantizable_op_type=["conv2d", "pool2d"])
    with pytest.raises(ArgumentError, match="is_full_quantize"):
        run(is_full_quantize=True)
    with pytest.raises(ArgumentError, match="activation_bits == weight_bits"):
        run(weight_bits=8, activation_bits=4)
    with pytest.raises(ArgumentError, match="may only hold"):
        run(quantizable_op_type=["conv3d"])
    # LeNet's conv bias adds read a reshaped bias (an activation in Paddle's graph too): Paddle quantizes them;
    # its fc bias adds read the parameter itself, which Paddle leaves alone
    with pytest.raises(ArgumentError, match=r"2 here: 'conv2d_0.bias_add'.*'conv2d_1.bias_add'"):
        run(quantizable_op_type=["mul", "elementwise_add"])
    b = GraphBuilder("mlp")
    model = b.build(b.fc(b.fc(b.input("x", (None, 6)), 5, act="relu"), 3))
    q = _quiet(ps.quant_post_static, None, model, str(tmp_path), data_loader=[{"x": np.ones((2, 6), np.float32)}],
               quantizable_op_type=["mul", "elementwise_add"], algo="abs_max")
    assert q.meta["quantization"]["quantizable_op_type"] == ["mul"]


def test_optimize_model_refused_only_with_conv_bn(calib, tmp_path):
    b = GraphBuilder("convbn")
    model = b.build(b.conv_bn(b.input("x", (None, 3, 8, 8)), 4, 3))
    feeds = [{"x": np.ones((2, 3, 8, 8), np.float32)}]
    with pytest.raises(ArgumentError, match="conv_bn_fuse_pass"):
        _quiet(ps.quant_post_static, None, model, str(tmp_path), data_loader=feeds, optimize_model=True)
    # without a conv -> batch_norm pair Paddle's fusion does nothing: the same model as optimize_model=False
    lenet, loader = oracle_lenet(), [{"x": calib[0]}]
    a = _quiet(ps.quant_post_static, None, lenet, str(tmp_path), data_loader=loader, optimize_model=True)
    b2 = _quiet(ps.quant_post_static, None, lenet, str(tmp_path), data_loader=loader)
    _same_thresholds(thresholds(a), thresholds(b2))


def test_defaults_and_output_files(lenet_path, calib, tmp_path):
    """PaddleSlim's defaults (hist 0.9999, onnx_format True) reach refquant; .onnx names give ONNX, .rq no
    warning; the bias correction of Paddle is refquant's 'paddle' mode."""
    loader = [{"x": x} for x in calib]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ps.PaddleFormatWarning)
        q = ps.quant_post_static(None, lenet_path, str(tmp_path / "a"), data_loader=loader,
                                 save_model_filename="q.rq", bias_correction=True)
    ref = rq_post_static(oracle_lenet(), loader, algo="hist", hist_percent=0.9999, onnx_format=True,
                         quantizable_op_type=["conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul",
                                              "matmul_v2"], bias_correction="paddle")
    _same_thresholds(thresholds(q), thresholds(ref))
    assert q.meta["quantization"]["bias_correction"] == "paddle"
    assert "quantize_linear" in q.op_counts()
    assert (tmp_path / "a" / "q.rq").is_file()
    q2 = ps.quant_post_static(None, lenet_path, str(tmp_path / "b"), data_loader=loader,
                              save_model_filename="lenet_int8.onnx")
    imported = refquant.io.import_onnx(str(tmp_path / "b" / "lenet_int8.onnx"))
    x = calib[0][:2]
    np.testing.assert_allclose(imported.run({"x": x})[imported.outputs[0]], q2.run({"x": x})[q2.outputs[0]],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ArgumentError, match="without a directory"):
        ps.quant_post_static(None, lenet_path, str(tmp_path), data_loader=loader, save_model_filename="a/b.rq")


def test_activation_quantize_type_abs_max_is_dynamic(lenet_path, calib, tmp_path):
    """Paddle saves no activation scale for 'abs_max': the activation quant-dequant takes max|x| of each batch."""
    loader = [{"x": x} for x in calib]
    static = _quiet(ps.quant_post_static, None, lenet_path, str(tmp_path), data_loader=loader, **KL_ONNX_OFF)
    dyn = _quiet(ps.quant_post_static, None, lenet_path, str(tmp_path), data_loader=loader,
                 activation_quantize_type="abs_max", **KL_ONNX_OFF)
    acts = [op for op in dyn.ops if op.type == "fake_quantize_dequantize_abs_max"]
    assert acts and all(len(op.inputs) == 1 for op in acts)
    assert not any(n.endswith("@scale") and n[:-6] in {op.inputs[0] for op in acts} for n in dyn.params)
    x = calib[0] * 4  # inputs beyond the calibrated range: static clips, dynamic does not
    first = acts[0].outputs[0]
    y_dyn = dyn.run({"x": x}, outputs=[first])[first]
    y_static = static.run({"x": x}, outputs=[first])[first]
    assert np.max(np.abs(y_dyn)) == pytest.approx(np.max(np.abs(x)), rel=1e-6)
    assert np.max(np.abs(y_static)) < np.max(np.abs(x)) * 0.5


def test_quant_post_dynamic_doc_call(tmp_path):
    b = GraphBuilder("mlp")
    x = b.input("x", (None, 6))
    y = b.fc(b.fc(x, 5, act="relu"), 3)
    src = tmp_path / "mlp.rq"
    refquant.io.save(b.build(y), src)
    with pytest.warns(ps.PaddleFormatWarning, match="__model__.rq"):
        q = ps.quant_post_dynamic(model_dir=str(src), save_model_dir=str(tmp_path / "save"), model_filename=None,
                                  params_filename=None, save_model_filename='__model__',
                                  save_params_filename='__params__')
    ref = refquant.quant.quant_post_dynamic(refquant.load(src), weight_bits=8, quantizable_op_type=["conv2d", "mul"])
    assert set(q.params) == set(ref.params)
    for k in ref.params:
        np.testing.assert_array_equal(q.params[k], ref.params[k])
    assert refquant.load(tmp_path / "save" / "__model__.rq").params["fc_0.w_0"].dtype == np.int8
    with pytest.raises(TypeError):
        ps.quant_post_dynamic(str(src), str(tmp_path))  # model_filename / params_filename are required


def _embedding_model():
    b = GraphBuilder("emb")
    ids = b.input("ids", (None, 4), "int64")
    w = b.param("emb.w_0", np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32) * 0.3)
    b.op("lookup_table", [w, ids], ["emb.out"], {"padding_idx": -1}, name="emb")
    b.shapes["emb.out"] = (None, 4, 8)
    return b.build("emb.out")


@pytest.mark.parametrize("config", [
    {'quantize_op_types': ['lookup_table'], 'lookup_table': {'quantize_type': 'abs_max'}},
    {'quantize_op_types': ['lookup_table_v2'], 'lookup_table_v2': {'quantize_type': 'log'}},
    None])
def test_quant_embedding_doc_call(config):
    model = _embedding_model()
    quant_program = ps.quant_embedding(model, CPUPlace(), config)
    kind = (config or {}).get("lookup_table_v2", (config or {}).get("lookup_table", {})).get("quantize_type",
                                                                                             "abs_max")
    ref = refquant.quant.quant_embedding(model, {"lookup_table": {"quantize_type": kind}})
    assert [op.to_json() for op in quant_program.ops] == [op.to_json() for op in ref.ops]
    for k in ref.params:
        np.testing.assert_array_equal(quant_program.params[k], ref.params[k])


def test_quant_embedding_refusals():
    model = _embedding_model()
    # the default op list has both lookup_table kinds: settings for one of them alone are ambiguous here
    with pytest.raises(ArgumentError, match="different settings"):
        ps.quant_embedding(model, None, {"lookup_table": {"quantize_type": "log"}})
    same = {"quantize_type": "log"}
    assert "lookup_table_dequant" in ps.quant_embedding(model, None, {"lookup_table": same,
                                                                      "lookup_table_v2": same}).op_counts()
    with pytest.raises(ArgumentError, match="unknown config key"):
        ps.quant_embedding(model, None, {"lookup": {}})
    with pytest.raises(ArgumentError, match="quantize_bits"):
        ps.quant_embedding(model, None, {"quantize_op_types": "lookup_table", "lookup_table": {"quantize_bits": 4}})
    with pytest.raises(ArgumentError, match="CUDA"):
        ps.quant_embedding(model, CUDAPlace())


def _mlp():
    b = GraphBuilder("qat_mlp", seed=3)
    x = b.input("x", (None, 4))
    return b.build(b.fc(x, 3))


def test_quant_aware_convert_doc_call():
    """The convert doc example: quant_aware(train, place, config, for_test=False / True), convert(eval, place,
    config); PaddleSlim 2.6's default onnx_format True gives quantize_linear pairs."""
    train_program = eval_program = _mlp()
    place = CPUPlace()
    config = {'weight_quantize_type': 'abs_max', 'activation_quantize_type': 'moving_average_abs_max'}
    quant_train_program = ps.quant_aware(train_program, place, config, for_test=False)
    quant_eval_program = ps.quant_aware(eval_program, place, config, for_test=True)
    assert "quantize_linear" in quant_train_program.op_counts()
    ref = refquant.quant.quant_aware(train_program, dict(config, onnx_format=True))
    assert [op.to_json() for op in quant_train_program.ops] == [op.to_json() for op in ref.ops]
    forward(quant_eval_program, {"x": np.ones((2, 4), np.float32)}, training=True)  # give the weight a scale
    w_scale = quant_eval_program.params["fc_0.w_0@scale"].copy()
    forward(quant_train_program, {"x": np.ones((2, 4), np.float32)}, training=True)
    inference_prog = ps.convert(quant_train_program, place, config)
    assert inference_prog.meta["quantization"]["onnx_format"] is True
    assert w_scale[0] == pytest.approx(0.001)  # for_test: the eval program's scales stay frozen
    old = ps.quant_aware(train_program, place, dict(config, onnx_format=False))
    assert "fake_quantize_dequantize_moving_average_abs_max" in old.op_counts()
    with pytest.raises(ArgumentError, match="same config"):
        ps.convert(quant_train_program, place, dict(config, onnx_format=False))
    with pytest.raises(ArgumentError, match="save_int8"):
        ps.convert(old, place, dict(config, onnx_format=False), save_int8=True)


@pytest.mark.parametrize("onnx_format, expected", [(True, 2.9 / 1.9), (False, 2.5 / 1.5)])
def test_moving_rate_as_paddle(onnx_format, expected):
    """moving_rate 0.5, one step with max|x| = 2 from S = A = 1: Paddle 3.3.1 gives 1.5263158 with onnx_format
    (its quantize_linear kernel runs at 0.9) and 1.6666666 without (measured with PaddleSlim's quant_aware)."""
    q = ps.quant_aware(_mlp(), None, {"onnx_format": onnx_format, "moving_rate": 0.5})
    x = np.zeros((2, 4), np.float32)
    x[0, 0] = 2.0
    forward(q, {"x": x}, training=True)
    assert q.params["x@scale"][0] == pytest.approx(expected, rel=1e-6)


def test_qat_config_keys():
    model = _mlp()
    q = ps.quant_aware(model, None, {"onnx_format": False, "activation_quantize_type": "range_abs_max",
                                     "window_size": 3, "not_quant_pattern": "skip_quant"})
    assert q.params["x@window"].shape == (3,)
    assert q.meta["qat"]["config"]["not_quant_pattern"] == ["skip_quant"]
    q, scale_dict, model_type, pattern_ops = ps.quant_aware(model, None, return_scale_dict=True)
    assert (scale_dict, model_type, pattern_ops) == (None, None, None)
    refused = [({"for_tensorrt": True}, "TensorRT"), ({"is_full_quantize": True}, "non-weight"),
               ({"quant_post_first": True}, "init_thresholds"), ({"deploy_backend": "arm"}, "backend"),
               ({"weight_quantize_type": "range_abs_max"}, "max|W|"), ({"dtype": "uint8"}, "int8"),
               ({"window": 3}, "unknown config key"), ({"quantize_op_types": ["pool2d"]}, "no weight op type")]
    for config, match in refused:
        with pytest.raises(ArgumentError, match=match):
            ps.quant_aware(model, None, config)
    with pytest.raises(ArgumentError, match="scale_dict"):
        ps.quant_aware(model, None, scale_dict={"x": 1.0})
    with pytest.raises(ArgumentError, match="Paddle layers"):
        ps.quant_aware(model, None, weight_quantize_func=lambda w: w)
    with pytest.raises(ArgumentError, match="transformer"):
        ps.quant_aware(model, None, model_type="transformer")


def test_qat_activation_only_mul_refused():
    """With a config, PaddleSlim sends mul to AddQuantDequantPass too: a mul of two activations is quantized
    there, not in refquant, so it is refused (without a config mul goes to the weight pass only)."""
    b = GraphBuilder("two_act")
    x = b.input("x", (None, 4))
    y = b.input("y", (4, 4))
    b.op("mul", [x, y], ["z"], {"x_num_col_dims": 1, "y_num_col_dims": 1}, name="act_mul")
    b.shapes["z"] = (None, 4)
    model = b.build(b.fc("z", 2))
    with pytest.raises(ArgumentError, match="act_mul"):
        ps.quant_aware(model, None, {"weight_bits": 8})
    assert ps.quant_aware(model, None).meta["qat"]["quantized_ops"] == ["fc_0"]


PADDLE_MODELS = DATA / "paddle_models"


def _paddle_fixtures():
    if not PADDLE_MODELS.is_dir():
        return []
    return sorted(p.name for p in PADDLE_MODELS.iterdir() if (p / "fp32" / "model.pdmodel").is_file()
                  and (p / "ptq" / "scales.json").is_file())


def _activation_scales(saved: dict) -> dict:
    """``{tensor: threshold}`` from the fixture's scales.json: ``activations`` maps each tensor to the list of
    places Paddle stored its threshold (attributes or scale tensors), all holding one value."""
    out = {}
    for name, sources in saved["activations"].items():
        values = {float(src["threshold"]) for src in sources}
        assert len(values) == 1, f"{name}: Paddle stored different thresholds {sorted(values)}"
        out[name] = values.pop()
    assert out, "scales.json holds no activation thresholds"
    return out


@pytest.mark.skipif(not _paddle_fixtures(), reason="no Paddle model fixtures in tests/data/paddle_models")
@pytest.mark.parametrize("name", _paddle_fixtures())
def test_paddle_fixture_matches_paddleslim(name, tmp_path):
    """model_dir a Paddle inference model: the same thresholds as refquant.quant.quant_post_static on the
    imported model, and PaddleSlim's own (algo KL, onnx_format False, batch_nums 4 on io.npz 'calib')."""
    from refquant.io.paddle_import import import_paddle

    fp32 = PADDLE_MODELS / name / "fp32"
    io = np.load(fp32.parent / "io.npz")
    model = import_paddle(str(fp32), model_filename="model.pdmodel", params_filename="model.pdiparams")
    calib = io["calib"]
    batches = [{model.inputs[0]: b} for b in (calib if calib.ndim > len(model.input_specs[0].shape) else [calib])]
    q = _quiet(ps.quant_post_static, Executor(CPUPlace()), str(fp32), str(tmp_path), data_loader=batches,
               model_filename="model.pdmodel", params_filename="model.pdiparams", batch_nums=4, **KL_ONNX_OFF)
    ref = rq_post_static(model, batches, batch_nums=4, **KL_ONNX_OFF)
    _same_thresholds(thresholds(q), thresholds(ref))
    saved = _activation_scales(json.loads((PADDLE_MODELS / name / "ptq" / "scales.json").read_text()))
    th = thresholds(q)
    common = [k for k in saved if k in th]
    assert common, f"no tensor of scales.json is calibrated by refquant: {sorted(saved)[:5]}"
    for k in common:
        np.testing.assert_allclose(th[k], saved[k], rtol=1e-4, err_msg=k)
