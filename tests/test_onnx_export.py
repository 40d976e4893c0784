"""export_onnx: refquant models (float, fake-quant, INT8) as ONNX graphs that onnxruntime runs.

- float zoo models agree with refquant to 1e-4 relative (measured <= 2.1e-6), names and the dynamic batch
  dimension are kept, and the saved files import back through ``import_onnx`` unchanged;
- fake-quant models (quant_post_static "hist", both formats): same top-1 on >= 99.5% of the digits test images
  (measured 100%), every int8 activation within 1 LSB of refquant's (ties: half away vs half to even, float sum
  order) on < 0.5% of its elements;
- INT8 graphs (convert_to_int8): onnxruntime fuses them into QLinearConv, and every INT8 op fed refquant's own
  uint8 input reproduces refquant's uint8 output within 1 LSB (float outputs to 1e-5 relative).
"""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import refquant  # noqa: E402
from refquant import Model, Op, TensorSpec, UnsupportedOpError  # noqa: E402
from refquant.io import export_onnx, import_onnx  # noqa: E402

ZOO = ["lenet5", "mobilenet_v1", "mobilenet_v2", "resnet20", "vgg_small", "text_mean", "text_transformer"]
INT8_OPS = ("conv2d_int8", "depthwise_conv2d_int8", "matmul_int8")


def _session(proto, *, precise=True, level=None, optimized_path=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if precise:
        # x86-64 without VNNI: the fast u8 x s8 kernels saturate 16-bit pair sums; ask for the exact ones
        so.add_session_config_entry("session.x64quantprecision", "1")
        # DQ(int8 weight) -> MatMul becomes MatMulNBits; accuracy level 4 (default) quantizes the activations
        so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    if level is not None:
        so.graph_optimization_level = level
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _data(name, split="test"):
    from refquant.models import zoo
    return zoo.load_data(name, split)


def _zoo(name):
    from refquant.models.pretrained import pretrained
    return pretrained(name)


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


# ---- float models ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_float_zoo_matches_onnxruntime(name):
    m = _zoo(name)
    x, _ = _data(name)
    proto = export_onnx(m)
    assert [i.name for i in proto.graph.input] == m.inputs
    assert [o.name for o in proto.graph.output] == m.outputs
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch -> symbolic
    sess = _session(proto)
    for batch in (x[:1], x[:16]):
        ref = m.run({m.inputs[0]: batch})[m.outputs[0]]
        got = sess.run(None, {m.inputs[0]: batch})[0]
        assert got.shape == ref.shape
        assert _rel(ref, got) <= 1e-4, name  # measured <= 2.1e-6


@pytest.mark.parametrize("opset", [17, 20])
def test_text_transformer_newer_opsets(opset):
    """LayerNormalization (opset 17) and Gelu (opset 20) instead of their decompositions."""
    m = _zoo("text_transformer")
    x, _ = _data("text_transformer")
    proto = export_onnx(m, opset=opset)
    types = {n.op_type for n in proto.graph.node}
    assert "LayerNormalization" in types and (("Gelu" in types) == (opset >= 20))
    ref = m.run({m.inputs[0]: x[:32]})[m.outputs[0]]
    assert _rel(ref, _session(proto).run(None, {m.inputs[0]: x[:32]})[0]) <= 1e-4


def test_imagenet_resnet50_runs_in_onnxruntime():
    from refquant.models import build
    m = build("resnet50")
    proto = export_onnx(m)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = _session(proto).run(None, {"x": x})[0]
    assert got.shape == (1, 1000) and np.isfinite(got).all()
    ref = m.run({"x": x})[m.outputs[0]]
    assert _rel(ref, got) <= 1e-4  # measured 4.9e-7


@pytest.mark.parametrize("name", ["lenet5", "mobilenet_v2", "resnet20", "vgg_small", "text_mean"])
def test_saved_file_round_trips_through_import_onnx(name, tmp_path):
    m = _zoo(name)
    x, _ = _data(name)
    path = tmp_path / f"{name}.onnx"
    refquant.export_onnx(m, path)
    back = import_onnx(path)
    ref = m.run({m.inputs[0]: x[:16]})[m.outputs[0]]
    got = back.run({m.inputs[0]: x[:16]})[m.outputs[0]]
    assert _rel(ref, got) <= 1e-5


def test_save_is_atomic(tmp_path, monkeypatch):
    m = _zoo("lenet5")
    path = tmp_path / "m.onnx"
    proto = export_onnx(m, path)
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert path.read_bytes() == proto.SerializeToString()
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(_zoo("resnet20"), path)
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left, the old file untouched
    assert path.read_bytes() == before


def test_unsupported_op_names_op_and_type():
    ops = [Op("softmax_with_cross_entropy", ["logits", "label"], ["sm", "loss"], {}, "the_loss")]
    m = Model(ops, {}, [TensorSpec("logits", (None, 4)), TensorSpec("label", (None,), "int64")], ["loss"])
    with pytest.raises(UnsupportedOpError, match="softmax_with_cross_entropy.*the_loss|the_loss.*softmax_with"):
        export_onnx(m)


def test_missing_onnx_gives_a_clear_import_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="onnx"):
        refquant.export_onnx(_zoo("lenet5"))


def test_elementwise_axis_broadcast():
    """Paddle's axis rule: a (C,) parameter added along axis 1 of an NCHW tensor."""
    rng = np.random.default_rng(1)
    params = {"b": rng.standard_normal(3).astype(np.float32), "s": rng.standard_normal((3, 4)).astype(np.float32)}
    ops = [Op("elementwise_add", ["x", "b"], ["y"], {"axis": 1}, "add"),
           Op("elementwise_mul", ["y", "s"], ["z"], {"axis": 1}, "mul"),
           Op("pool2d", ["z"], ["p"], {"pooling_type": "avg", "ksize": [3, 3], "strides": [2, 2],
                                       "paddings": [1, 1, 1, 1], "ceil_mode": True, "exclusive": True}, "pool"),
           Op("flatten", ["p"], ["f"], {"start_axis": 2, "stop_axis": 3}, "flat")]
    m = Model(ops, params, [TensorSpec("x", (None, 3, 4, 5))], ["f"])
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    ref = m.run({"x": x})["f"]
    got = _session(export_onnx(m)).run(None, {"x": x})[0]
    assert got.shape == ref.shape and _rel(ref, got) <= 1e-6


# ---- fake-quant models ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["lenet5", "resnet20", "mobilenet_v2"])
def quantized(request):
    from refquant.quant import quant_post_static
    name = request.param
    m = _zoo(name)
    x, _ = _data(name, "train")
    calib = [{m.inputs[0]: x[:32]}]
    return name, {fmt: quant_post_static(m, calib, algo="hist", onnx_format=fmt) for fmt in (False, True)}


@pytest.mark.parametrize("onnx_format", [False, True])
def test_fake_quant_matches_onnxruntime(quantized, onnx_format):
    from refquant.reference import rounding
    name, qs = quantized
    q = qs[onnx_format]
    xt, _ = _data(name)
    proto = export_onnx(q)
    q_types = ("fake_quantize_dequantize_abs_max", "quantize_linear")
    q_ops = [op for op in q.ops if op.type in q_types and not op.attrs.get("only_observer")]
    srcs = [op.inputs[0] for op in q_ops]
    # the quant-dequant output (refquant's name, kept in the ONNX graph)
    qdq = [op.outputs[0] if op.type != "quantize_linear" else f"{op.outputs[0]}.dequantized" for op in q_ops]
    ref = q.run({q.inputs[0]: xt}, outputs=[q.outputs[0]] + srcs + qdq)
    # 1. end to end
    logits = _session(proto, precise=False).run(None, {q.inputs[0]: xt})[0]
    ref_logits = ref[q.outputs[0]]
    assert (logits.argmax(1) == ref_logits.argmax(1)).mean() >= 0.995  # measured 1.0
    # measured max |diff| / max |logit| <= 0.045 (mobilenet_v2), mean |diff| / max |logit| <= 0.0003
    assert _rel(ref_logits, logits) <= 0.1
    assert np.abs(ref_logits - logits).mean() <= 0.002 * np.abs(ref_logits).max()
    # 2. layer by layer: every reader of a quant-dequant output reads refquant's value (a graph input), so each
    #    QuantizeLinear sees refquant's float input up to float sum order; its int8 output is a graph output
    qnodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert len(qnodes) == len(srcs) > 0
    feeds = {q.inputs[0]: xt}
    for n in proto.graph.node:
        if n.op_type != "QuantizeLinear":
            for k, i in enumerate(n.input):
                if i in qdq:
                    n.input[k] = f"feed:{i}"
    for i in qdq:
        feeds[f"feed:{i}"] = ref[i]
        proto.graph.input.append(onnx.helper.make_tensor_value_info(f"feed:{i}", onnx.TensorProto.FLOAT,
                                                                    ref[i].shape))
    for n in qnodes:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT8, None))
    got = _session(proto, precise=False).run(None, feeds)[1:]
    ts = q.meta["quantization"]["activation_thresholds"]
    for src, q_onnx in zip(srcs, got):
        q_ref = rounding.quantize_op(ref[src], ts[src], 8, 0 if onnx_format else 1)
        d = np.abs(q_ref - q_onnx)
        assert d.max() <= 1, (src, d.max())
        assert (d > 0).mean() < 0.001, (src, (d > 0).mean())


def test_fake_quant_weights_are_int8(quantized):
    _, qs = quantized
    for fmt, q in qs.items():
        proto = export_onnx(q)
        inits = {t.name: t for t in proto.graph.initializer}
        dq_weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
        assert dq_weights and all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in dq_weights)
        # no float copy of a quantized conv weight is left
        conv_w = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
        assert not conv_w & set(inits)


@pytest.mark.parametrize("opset", [13, 18])
def test_qat_graph_with_run_time_thresholds(opset):
    """quant_aware's test graph: abs_max activations and channel-wise weights recompute max|x| every run."""
    from refquant.quant.qat import quant_aware
    m = _zoo("resnet20")
    x, _ = _data("resnet20")
    qa = quant_aware(m, {"activation_quantize_type": "abs_max"}, for_test=True)
    ref = qa.run({"x": x[:64]})[qa.outputs[0]]
    got = _session(export_onnx(qa, opset=opset)).run(None, {"x": x[:64]})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98  # measured 1.0
    assert _rel(ref, got) <= 0.05                            # measured 0.0055


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("opset", [13, 21])
def test_dynamic_weight_quant(bits, opset):
    from refquant.quant import quant_post_dynamic
    m = _zoo("lenet5")
    x, _ = _data("lenet5")
    qd = quant_post_dynamic(m, weight_bits=bits)
    proto = export_onnx(qd, opset=opset)
    types = {n.op_type for n in proto.graph.node}
    assert ("DequantizeLinear" in types) == (bits == 8 or opset >= 21)
    ref = qd.run({"x": x[:32]})[qd.outputs[0]]
    assert _rel(ref, _session(proto).run(None, {"x": x[:32]})[0]) <= 1e-5


# ---- INT8 graphs ---------------------------------------------------------------------------------------------
def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


def test_int8_graph_fuses_and_matches_each_op(quantized, tmp_path):
    from refquant.deploy import convert_to_int8
    name, qs = quantized
    i8 = convert_to_int8(qs[False])
    xt, _ = _data(name)
    proto = export_onnx(i8)
    types = {n.op_type for n in proto.graph.node}
    assert not types & {"Transpose"}  # NHWC <-> NCHW changes are identities
    # 1. onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv
    opt = tmp_path / "opt.onnx"
    sess = _session(proto, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, optimized_path=opt)
    fused = [n.op_type for n in onnx.load(str(opt)).graph.node]
    assert fused.count("QLinearConv") >= 2, fused
    ops = [op for op in i8.ops if op.type in INT8_OPS]
    ins = sorted({op.inputs[0] for op in ops})
    outs = [op.outputs[0] for op in ops]
    want = i8.run({"x": xt}, outputs=list(dict.fromkeys(i8.outputs + ins + outs)))
    # 2. end to end: the same top-1 (measured: 100%; logits differ as 1-LSB flips propagate)
    logits = sess.run(None, {"x": xt})[0]
    ref = want[i8.outputs[0]]
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.995
    # 3. op by op: every INT8 op reads refquant's uint8 input (fed as a graph input)
    feeds = {"x": xt}
    for n in proto.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in ins:
            n.input[0] = f"feed:{n.input[0]}"
    for name_ in ins:
        feeds[f"feed:{name_}"] = _nchw(want[name_])
        proto.graph.input.append(onnx.helper.make_tensor_value_info(f"feed:{name_}", onnx.TensorProto.UINT8,
                                                                    feeds[f"feed:{name_}"].shape))
    have = {o.name for o in proto.graph.output}
    for o in outs:
        if o not in have:
            elem = onnx.TensorProto.UINT8 if want[o].dtype == np.uint8 else onnx.TensorProto.FLOAT
            proto.graph.output.append(onnx.helper.make_tensor_value_info(o, elem, None))
    sess = _session(proto, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    n_u8 = 0
    for o in outs:
        r, g = _nchw(want[o]), got[o]
        assert g.shape == r.shape, o
        if r.dtype == np.uint8:
            d = np.abs(r.astype(np.int32) - g)
            assert d.max() <= 1, (o, d.max())               # measured: 1
            assert (d > 0).mean() < 0.001, (o, (d > 0).mean())  # measured <= 3e-5
            n_u8 += 1
        else:
            assert _rel(r, g) <= 1e-5, o                    # measured <= 1.1e-6
    assert n_u8 >= 3


@pytest.mark.parametrize("onnx_format,unsigned", [(True, True), (False, False)])
def test_int8_graph_other_grids_and_formats(quantized, onnx_format, unsigned):
    """convert_to_int8 of an onnx_format model, and the 127-level u8 grid (unsigned=False: Clip before Quantize)."""
    from refquant.deploy import convert_to_int8
    name, qs = quantized
    i8 = convert_to_int8(qs[onnx_format], unsigned=unsigned)
    xt, _ = _data(name)
    got = _session(export_onnx(i8)).run(None, {"x": xt})[0]
    ref = i8.run({"x": xt})[i8.outputs[0]]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995  # measured 1.0
    assert _rel(ref, got) <= 0.1                               # measured <= 0.027


def test_int8_graph_uint8_weights_need_no_session_option():
    """weight_dtype="uint8" (zero point 128) keeps onnxruntime's default kernels exact on any x86-64 CPU."""
    from refquant.deploy import convert_to_int8
    from refquant.quant import quant_post_static
    m = _zoo("lenet5")
    x, _ = _data("lenet5", "train")
    xt, _ = _data("lenet5")
    i8 = convert_to_int8(quant_post_static(m, [{"x": x[:64]}], algo="hist"))
    proto = export_onnx(i8, weight_dtype="uint8")
    got = _session(proto, precise=False).run(None, {"x": xt})[0]
    ref = i8.run({"x": xt})[i8.outputs[0]]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995
    assert _rel(ref, got) <= 1e-3
