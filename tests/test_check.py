"""refquant check: ONNX QuantizeLinear / DequantizeLinear import, the scale check and the op-by-op runtime check."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper as nh  # noqa: E402

import refquant  # noqa: E402
from refquant import errors  # noqa: E402
from refquant._cpu import cpu_features  # noqa: E402
from refquant.check import check  # noqa: E402
from refquant.check.scales import scale_from_range, scale_from_threshold  # noqa: E402


def _model(nodes, inits, x_shape, y_name="y", opset=13, x_type=TensorProto.FLOAT, y_type=TensorProto.FLOAT):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", x_type, x_shape)],
                          [helper.make_tensor_value_info(y_name, y_type, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _ort(proto, feed, options=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for k, v in (options or {}).items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


# ---- quantize_affine / dequantize_affine --------------------------------------------------------------------
@pytest.mark.parametrize("dtype,zp", [(TensorProto.UINT8, 128), (TensorProto.INT8, -3), (TensorProto.UINT8, 0)])
def test_quantize_dequantize_match_onnxruntime_per_tensor(dtype, zp):
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    s = np.float32(0.5)
    # ties at x / s = k + 0.5 (half to even), values beyond both ends (saturation), zero
    x = np.array([[-200, -70, -1.25, -0.75, -0.25, 0, 0.25, 0.75, 1.25, 1.75, 63.25, 63.75, 200]], np.float32)
    inits = [nh.from_array(np.array(s), "s"), nh.from_array(np.array(zp, np_type), "zp")]
    q_proto = _model([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])], inits, [1, x.shape[1]],
                     y_type=dtype)
    want_q = _ort(q_proto, {"x": x})
    m = refquant.import_onnx(q_proto)
    got_q = m.run({"x": x})["y"]
    assert got_q.dtype == want_q.dtype and np.array_equal(got_q, want_q)
    assert m.op_counts() == {"quantize_affine": 1}
    qdq = _model([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])], inits, [1, x.shape[1]])
    got = refquant.import_onnx(qdq).run({"x": x})["y"]
    assert got.dtype == np.float32 and np.array_equal(got, _ort(qdq, {"x": x}))


def test_quantize_half_to_even_and_saturation_values():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0], np.float32)
    q = refquant.ops.get_op("quantize_affine").forward(None, {"dtype": "int8"}, x, np.float32(1.0))
    assert q.dtype == np.int8 and q.tolist() == [0, 2, 2, 0, -2, 127, -128]


def test_per_axis_weights_import_exactly():
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    s = np.array([0.01, 0.02, 0.5, 1e-3], np.float32)
    inits = [nh.from_array(q, "wq"), nh.from_array(s, "ws"), nh.from_array(np.zeros(4, np.int8), "wz")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    proto = _model(nodes, inits, [1, 3, 5, 5])
    m = refquant.import_onnx(proto)
    assert np.array_equal(m.params["w"], q.astype(np.float32) * s[:, None, None, None])   # folded, exact
    x = rng.normal(size=(1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(m.run({"x": x})["y"], _ort(proto, {"x": x}), rtol=1e-5, atol=1e-5)


def test_import_refuses_what_it_cannot_express():
    s = nh.from_array(np.array(0.1, np.float32), "s")
    per_axis = nh.from_array(np.array([0.1, 0.2, 0.3], np.float32), "s3")
    runtime_scale = _model([helper.make_node("Abs", ["x"], ["a"]),
                            helper.make_node("QuantizeLinear", ["x", "a"], ["y"])], [], [3])
    with pytest.raises(errors.UnsupportedOpError):
        refquant.import_onnx(runtime_scale)
    old = _model([helper.make_node("QuantizeLinear", ["x", "s3"], ["y"])], [per_axis], [2, 3], opset=10,
                 y_type=TensorProto.UINT8)
    with pytest.raises(errors.ShapeError, match="opset 13"):
        refquant.import_onnx(old)
    wrong = _model([helper.make_node("QuantizeLinear", ["x", "s3"], ["y"], axis=1)], [per_axis], [2, 4],
                   y_type=TensorProto.UINT8)
    with pytest.raises(errors.ShapeError, match="3 scales"):
        refquant.import_onnx(wrong)
    int32_out = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
                       [s, nh.from_array(np.array(0, np.int32), "z")], [3], y_type=TensorProto.INT32)
    with pytest.raises(errors.UnsupportedOpError, match="int32"):
        refquant.import_onnx(int32_out)


def test_quantize_refuses_bad_values():
    q = refquant.ops.get_op("quantize_affine").forward
    with pytest.raises(ValueError, match="scale"):
        q(None, {}, np.ones(3, np.float32), np.float32(0.0))
    with pytest.raises(ValueError, match="NaN"):
        q(None, {}, np.array([np.nan], np.float32), np.float32(1.0))
    with pytest.raises(ValueError, match="zero point"):
        q(None, {"dtype": "int8"}, np.ones(3, np.float32), np.float32(1.0), np.int32(200))


# ---- the scale check -------------------------------------------------------------------------------------------
def _fp32_net(rng):
    w = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (6 * 4 * 4, 5)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flat"),
             helper.make_node("MatMul", ["f", "W2"], ["y"], name="mm")]
    inits = [nh.from_array(w, "W"), nh.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "B"),
             nh.from_array(w2, "W2")]
    return _model(nodes, inits, [None, 3, 8, 8])


def _ort_quantize(fp32_path, out_path, feeds, method="MinMax", **extra):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    ort.set_default_logger_severity(3)
    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=extra.pop("activation_type", QuantType.QUInt8), weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), extra_options=extra or None)
    return str(out_path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    rng = np.random.default_rng(1)
    fp32 = d / "fp32.onnx"
    onnx.save(_fp32_net(rng), str(fp32))
    feeds = [{"x": rng.normal(0, 1, (3, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    return d, str(fp32), feeds


def test_minmax_scales_are_bit_exact_with_min_max(small):
    d, fp32, feeds = small
    q = _ort_quantize(fp32, d / "q_minmax.onnx", feeds)
    rep = check(fp32, q, feeds, runtime=None)
    acts = [r for r in rep.scales if r.kind == "activation"]
    assert len(acts) == 5 and all("min_max" in r.exact for r in acts)
    assert all(r.verdict == "bit-exact with min_max" for r in acts)
    assert rep.summary[0] == "all 5 activation scales are bit-exact with min_max and abs_max"
    weights = [r for r in rep.scales if r.kind == "weight"]
    assert {r.fp32_tensor for r in weights} == {"W", "W2"}
    assert all(r.int_mismatches == 0 and r.exact == ["abs_max (per channel)"] for r in weights)
    # the implied asymmetric range covers [min(x, 0), max(x, 0)] of the data
    x = np.concatenate([f["x"] for f in feeds])
    row = next(r for r in acts if r.fp32_tensor == "x")
    assert row.convention == "asymmetric"
    assert row.rmin <= x.min() + row.scale[0] and row.rmax >= x.max() - row.scale[0]


def test_symmetric_int8_activations_match_abs_max(small):
    from onnxruntime.quantization import QuantType
    d, fp32, feeds = small
    q = _ort_quantize(fp32, d / "q_sym.onnx", feeds, activation_type=QuantType.QInt8, ActivationSymmetric=True)
    rep = check(fp32, q, feeds, runtime=None)
    acts = [r for r in rep.scales if r.kind == "activation"]
    assert acts and all(r.convention == "symmetric" for r in acts)
    # every scale is abs_max of its own tensor, or (a conv output given its Relu's range) of the tensor whose
    # scale it carries
    for r in acts:
        assert r.exact[:1] == ["abs_max"] or ("the same scale as" in r.verdict and r.shared_with), r.verdict
    # T = 127 s: the scale is T / 127 in float32, as Paddle writes it
    assert all(np.float32(r.threshold / 127) == np.float32(r.scale[0]) for r in acts)


def test_refquant_thresholds_match_their_own_algorithm(small):
    from refquant.quant import quant_post_static
    _, fp32, feeds = small
    model = refquant.import_onnx(fp32)
    for algo in ("KL", "avg"):
        qm = quant_post_static(model, lambda: feeds, algo=algo, quantizable_op_type=("conv2d", "mul"))
        rep = check(model, qm, feeds)
        acts = [r for r in rep.scales if r.kind == "activation"]
        assert acts and all(algo in r.exact for r in acts), [(r.tensor, r.verdict) for r in acts]
        assert all(r.exact for r in rep.scales if r.kind == "weight")
        assert rep.notes["runtime"].startswith("not run")


def test_conventions():
    # ONNX Runtime: float64 (rmax - rmin) / 255 stored as float32, zp = round(qmin - rmin / s64)
    s, zp = scale_from_range(np.float32(-1.0), np.float32(3.0), "uint8")
    assert s == np.float32(4.0 / 255) and zp == 64
    assert scale_from_range(0.5, 2.0, "uint8") == (np.float32(2.0 / 255), 0)      # the range includes 0
    assert scale_from_threshold(2.54, "symmetric", "int8") == np.float32(float(np.float32(2.54)) / 127)
    assert scale_from_threshold(2.55, "symmetric_full", "uint8") == np.float32(2 * float(np.float32(2.55)) / 255)


def test_bad_arguments(small):
    _, fp32, feeds = small
    with pytest.raises(errors.ArgumentError):
        check(fp32, fp32, feeds, tol_lsb=-1)
    with pytest.raises(errors.ArgumentError):
        check(fp32, fp32, feeds, runtime="tensorrt")
    with pytest.raises(errors.ArgumentTypeError):
        check(fp32, fp32, [], runtime=None)
    with pytest.raises(FileNotFoundError):
        check(fp32, fp32 + ".missing.onnx", feeds)
    with pytest.raises(errors.ArgumentTypeError):
        check(fp32, 42, feeds)


def test_an_unknown_runtime_is_a_clear_error(small):
    d, fp32, feeds = small
    pytest.importorskip("onnxruntime.quantization")
    q = _ort_quantize(fp32, d / "q_p.onnx", feeds)
    with pytest.raises(errors.ArgumentError, match="runtime must be one of"):
        check(fp32, q, feeds, runtime="paddle")


# ---- the runtime check -----------------------------------------------------------------------------------------
def _saturating_cpu() -> bool:
    """ONNX Runtime's u8 x s8 kernels add adjacent products in int16 with saturation (vpmaddubsw) on x86 with
    AVX2 or AVX-512BW and no VNNI; VNNI (vpdpbusd) and ARM's dot products accumulate exactly in int32."""
    f = cpu_features()
    return f["arch"] in ("x86_64", "AMD64") and (f["avx2"] or f["avx512bw"]) and not (f["avx512_vnni"]
                                                                                        or f["avx_vnni"])


def _overflow_models():
    """QDQ models built by hand whose u8 x s8 pair sums overflow int16 by construction: activations quantize to
    255 (x = 1 with scale 1/255, zero point 0) and every weight to +127 (all weights equal, scale 1/127), so
    each pair is 2 * 255 * 127 = 64770 > 32767. A 3x3 conv and a MatMul, each followed by a QuantizeLinear."""
    def common(w_name, w_shape, axis, op):
        c = w_shape[axis]
        inits = [nh.from_array(np.array(1 / 255, np.float32), "xs"), nh.from_array(np.array(0, np.uint8), "xz"),
                 nh.from_array(np.full(w_shape, 127, np.int8), w_name + "_q"),
                 nh.from_array(np.full(c, 1 / 127, np.float32), "ws"), nh.from_array(np.zeros(c, np.int8), "wz"),
                 nh.from_array(np.array(0.5, np.float32), "ys"), nh.from_array(np.array(0, np.uint8), "yz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
                 helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
                 helper.make_node("DequantizeLinear", [w_name + "_q", "ws", "wz"], ["wd"], axis=axis, name="dqw"),
                 op,
                 helper.make_node("QuantizeLinear", ["h", "ys", "yz"], ["hq"], name="qh"),
                 helper.make_node("DequantizeLinear", ["hq", "ys", "yz"], ["y"], name="dqh")]
        return nodes, inits
    nodes, inits = common("W", (4, 8, 3, 3), 0, helper.make_node("Conv", ["xd", "wd"], ["h"], pads=[1, 1, 1, 1],
                                                                  name="conv"))
    conv = _model(nodes, inits, [1, 8, 5, 5])
    fconv = _model([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
                   [nh.from_array(np.full((4, 8, 3, 3), 1.0, np.float32), "W")], [1, 8, 5, 5])
    nodes, inits = common("M", (16, 4), 1, helper.make_node("MatMul", ["xd", "wd"], ["h"], name="mm"))
    mm = _model(nodes, inits, [2, 16])
    fmm = _model([helper.make_node("MatMul", ["x", "M"], ["y"])], [nh.from_array(np.ones((16, 4), np.float32), "M")],
                 [2, 16])
    return [(fconv, conv, {"x": np.ones((1, 8, 5, 5), np.float32)}),
            (fmm, mm, {"x": np.ones((2, 16), np.float32)})]


@pytest.mark.parametrize("which", [0, 1], ids=["conv", "matmul"])
def test_saturating_u8s8_is_found_and_the_precision_option_makes_it_exact(which):
    fp32, quant, feed = _overflow_models()[which]
    exact = check(fp32, quant, [feed], session_options={"session.x64quantprecision": "1"})
    assert exact.ok and all(r.max_lsb == 0 for r in exact.ops), exact.format_table()
    rows = {r.tensor: r for r in exact.ops}
    assert rows["hq"].path == "exact integer"
    default = check(fp32, quant, [feed])
    if not _saturating_cpu():
        # VNNI / ARM dot products accumulate in int32: nothing can saturate, the default path is exact too
        assert default.ok, default.format_table()
        return
    first = default.first_failure
    assert first is not None and first.tensor == "hq", default.format_table()
    assert first.op_type in ("conv2d", "mul") and first.cause.startswith("u8 x s8 pair saturation")
    # every output sums K/2 pairs of 64770 that saturate to 32767, about half the exact sum: the MatMul's exact 32
    # (K = 16: y = 16, y / 0.5) comes out as 16, the conv's interior 144 (K = 72) as 73
    assert first.max_lsb >= 16 and first.frac_diff > 0.5
    assert default.ops[0].tensor == "xq" and default.ops[0].ok


def test_runtime_rows_exact_on_a_calibrated_model_with_precision_option(small, tmp_path):
    d, fp32, feeds = small
    q = _ort_quantize(fp32, d / "q_rt.onnx", feeds)
    rep = check(fp32, q, feeds, session_options={"session.x64quantprecision": "1"})
    assert rep.ok, rep.format_table()
    paths = {r.op_type: r.path for r in rep.ops}
    assert paths["conv2d"] == "exact integer" and paths["mul"] == "exact integer" and paths["pool2d"] == "float"
    assert all(r.sqnr_foreign is not None and r.sqnr_foreign > 15 for r in rep.ops)
    assert "QLinearConv" in rep.notes["fused_ops"]
    from refquant.check.runtime import kernel_ops
    assert kernel_ops(rep.notes["fused_ops"]) == kernel_ops(rep.notes["fused_ops_exposed"])
    text = rep.format_table()
    assert "exact: every quantized tensor within 1 LSB" in text
    data = json.loads(rep.dumps())
    assert data["ok"] is True and data["first_failure"] is None and len(data["ops"]) == len(rep.ops)


def test_cli_writes_json_and_sets_the_exit_code(tmp_path):
    import argparse
    from refquant.check import cli
    fp32, quant, feed = _overflow_models()[1]
    onnx.save(fp32, str(tmp_path / "fp32.onnx"))
    onnx.save(quant, str(tmp_path / "q.onnx"))
    np.save(tmp_path / "x.npy", feed["x"])
    ap = argparse.ArgumentParser()
    cli.add_parser(ap.add_subparsers(dest="command"))
    base = ["check", str(tmp_path / "fp32.onnx"), str(tmp_path / "q.onnx"), "--data", str(tmp_path / "x.npy")]
    args = ap.parse_args(base + ["--session-config", "session.x64quantprecision=1", "--json", str(tmp_path / "r.json")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True
    args = ap.parse_args(base)
    assert args.func(args) == (1 if _saturating_cpu() else 0)
    args = ap.parse_args(base + ["--runtime", "none"])
    assert args.func(args) == 0
    with pytest.raises(SystemExit):
        ap.parse_args(base + ["--tol-lsb", "-1"])


# ---- PP-OCR (rapidocr-onnxruntime's ONNX files), quantized by onnxruntime's quantize_static --------------------
def _ppocr(kind, n):
    from refquant.realmodels import ppocr
    if ppocr.model_path(kind) is None:
        pytest.skip("rapidocr-onnxruntime (PP-OCR ONNX models) is not installed")
    if kind == "cls":
        x = ppocr.cls_set(n, seed=ppocr.CALIB_SEED)[0]
    else:
        x = ppocr.rec_set(n, seed=ppocr.CALIB_SEED, width=160)[0]
    return ppocr, ppocr.model_path(kind), ppocr.batches(x, 2)


def _by_tensor(rep):
    return {(r.kind, r.tensor): r for r in rep.scales}


@pytest.mark.parametrize("kind", ["cls", "rec"])
def test_ppocr_entropy_without_bin_counts_is_minmax(kind, tmp_path):
    ppocr, fp32, feeds = _ppocr(kind, 4 if kind == "cls" else 2)
    reps = {m: check(fp32, ppocr.ort_quantize(fp32, str(tmp_path / f"{m}.onnx"), feeds, m), feeds, runtime=None)
            for m in ("MinMax", "Entropy")}
    mm, ent = _by_tensor(reps["MinMax"]), _by_tensor(reps["Entropy"])
    assert mm.keys() == ent.keys()
    # the tool's own verdicts: the same scale, bit-exact with the same candidates, tensor by tensor
    assert all(mm[k].scale == ent[k].scale and mm[k].exact == ent[k].exact for k in mm)
    acts = [r for r in reps["MinMax"].scales if r.kind == "activation"]
    direct = [r for r in acts if "the same scale as" not in r.verdict]
    # min/max of the tensor itself, or (a Slice / Transpose / pooling output) the scale of the tensor it shares
    assert sum("min_max" in r.exact or "unit_range" in r.exact for r in direct) >= 0.99 * len(direct)
    assert all(r.exact or r.shared_with for r in acts), [r.verdict for r in acts if not (r.exact or r.shared_with)]
    summary = reps["MinMax"].summary[0]
    if all("min_max" in r.exact for r in acts):
        assert summary.startswith(f"all {len(acts)} activation scales are bit-exact with min_max")
    else:
        assert summary.startswith(f"{sum(bool(r.exact) for r in acts)} of {len(acts)} activation")


def test_ppocr_cls_percentile_is_closest_to_hist_and_runtime_is_exact(tmp_path):
    ppocr, fp32, feeds = _ppocr("cls", 4)
    q = ppocr.ort_quantize(fp32, str(tmp_path / "p.onnx"), feeds, "Percentile")
    rep = check(fp32, q, feeds)
    acts = [r for r in rep.scales if r.kind == "activation" and r.closest]
    # onnxruntime's 99.999th percentile of |x| lands next to Paddle's hist (hist_percent 0.99999), not on it
    assert sum(r.closest == "hist" for r in acts) > 0.7 * len(acts)
    assert sum(bool(r.exact) for r in acts) < 0.05 * len(acts)
    assert all(abs(r.rel_diff) < 0.01 for r in acts)
    # the constants (weights stored as Constant nodes) are quantized like activations: u8 x u8 kernels, exact
    assert rep.ok, rep.format_table()
    assert sum(r.path == "exact integer" for r in rep.ops) >= 50
    assert "QLinearConv" in rep.notes["fused_ops"]


# ---- Paddle 3.3.1 / PaddleSlim 2.6.0 PTQ (KL) models, read without Paddle ---------------------------------------
PADDLE_MODELS = __import__("pathlib").Path(__file__).parent / "data" / "paddle_models"


@pytest.mark.parametrize("variant", ["ptq", "ptq_onnx"])
@pytest.mark.parametrize("name", ["cnn", "dwse", "ocrhead"])
def test_paddle_ptq_thresholds_are_refquant_kl(name, variant):
    d = PADDLE_MODELS / name
    if not (d / variant).is_dir() or not (d / "io.npz").is_file():
        pytest.skip(f"fixture {name}/{variant} is not in this checkout")
    calib = np.load(d / "io.npz")["calib"]
    feeds = [{"x": c} for c in calib]
    rep = check(str(d / "fp32"), str(d / variant), feeds)
    acts = [r for r in rep.scales if r.kind == "activation" and r.closest]
    assert len(acts) >= 10
    # KL on the same data is the closest algorithm for every tensor, equal or a few float32 ulps away: what
    # separates the thresholds is the last bits of the FP32 activations (Paddle's kernels against refquant's)
    assert all(r.closest == "KL" and abs(r.rel_diff) < 1e-5 for r in acts), [r.verdict for r in acts]
    assert sum("KL" in r.exact for r in acts) >= 3     # the input and tensors whose values both sides agree on
    weights = [r for r in rep.scales if r.kind == "weight"]
    assert weights and all(r.exact for r in weights), [r.verdict for r in weights]
    assert rep.notes["runtime"].startswith("not run")
