"""convert_to_int8: INT8 graphs from fake-quant models, checked op by op and end to end.

- each INT8 op, fed the fake-quant model's own quantized input, reproduces the fake-quant model's next quantized
  tensor to within 1 LSB (rounding ties and float order; < 1% of elements) or its float output to 1e-4 relative;
- whole zoo models: INT8 top-1 equals fake-quant top-1 within one test image, compiled kernels equal the NumPy
  twins bit for bit, 1 and 2 threads agree, save/load keeps every bit, and no float copy of a weight remains.
"""
import importlib.util

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.deploy import convert_to_int8
from refquant.io import load, save
from refquant.ops import OpContext, get_op
from refquant.quant import quant_post_static
from refquant.reference import rounding

INT8_OPS = ("conv2d_int8", "depthwise_conv2d_int8", "matmul_int8")


def _zoo(name, n_calib=4):
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    m = pretrained(name)
    x, _ = zoo.load_data(name, "train")
    xt, yt = zoo.load_data(name, "test")
    return m, [{m.inputs[0]: x[i:i + 32]} for i in range(0, 32 * n_calib, 32)], xt, yt


@pytest.fixture(scope="module", params=["lenet5", "resnet20", "mobilenet_v2"])
def converted(request):
    m, calib, xt, yt = _zoo(request.param)
    q = quant_post_static(m, calib, algo="hist")
    return request.param, m, q, xt, yt


def _stored(q_fq, zero):
    return q_fq + zero


def test_each_int8_op_reproduces_the_fake_quant_op(converted):
    """Feed every INT8 op the fake-quant model's quantized input; compare with the fake-quant model's result."""
    name, _, q, xt, _ = converted
    i8 = convert_to_int8(q, unsigned=False)
    feeds = {q.inputs[0]: xt[:16]}
    ts = q.meta["quantization"]["activation_thresholds"]
    fused_out = {}
    for op in i8.ops:
        if op.type in INT8_OPS:
            fused_out[op.name] = op.outputs[0].split("@")[0]
    wanted = sorted({n.split("@")[0] for op in i8.ops if op.type in INT8_OPS for n in (op.inputs[0], op.outputs[0])})
    fq = q.run(feeds, outputs=wanted)
    checked = 0
    for op in i8.ops:
        if op.type not in INT8_OPS:
            continue
        src = op.inputs[0].split("@")[0]
        x = fq[src]
        zero = int(op.attrs["a_zero"])
        stored = (rounding.quantize_op(x, ts[src]) + zero).astype(np.uint8)
        if stored.ndim == 4:
            stored = np.ascontiguousarray(stored.transpose(0, 2, 3, 1))
        args = [stored] + [i8.params[n] for n in op.inputs[1:]]
        got = get_op(op.type).forward(OpContext(), op.attrs, *args)
        ref = fq[op.outputs[0].split("@")[0]]
        if ref.ndim == 4:
            ref = ref.transpose(0, 2, 3, 1)
        if op.attrs["out_dtype"] == "u8":
            t_out = op.attrs["out_threshold"]  # the grid of the readers (behind a max pool: the pool's)
            want = rounding.quantize_op(ref, t_out) + op.attrs["out_zero"]
            diff = np.abs(got.astype(np.int32) - want)
            assert diff.max() <= 1, (op.name, diff.max())
            assert (diff > 0).mean() < 0.005, (op.name, (diff > 0).mean())  # measured <= 0.0018
        else:
            scale = np.abs(ref).max()
            assert np.abs(got - ref).max() <= 1e-4 * scale + 1e-6, op.name  # measured <= 3.4e-5
        checked += 1
    assert checked >= 3


def test_whole_model_top1_and_twin(converted):
    from refquant.train import evaluate, predict
    name, m, q, xt, yt = converted
    n_test = len(yt)
    fq_top1 = evaluate(q, xt, yt)
    for unsigned in (False, True):
        i8 = convert_to_int8(q, unsigned=unsigned)
        assert sum(op.type in INT8_OPS for op in i8.ops) == len(q.meta["quantization"]["quantized_ops"])
        assert abs(evaluate(i8, xt, yt) - fq_top1) <= 1.5 / n_test
        logits = predict(i8, xt[:40])
        with _dispatch.use_reference():
            assert np.array_equal(predict(i8, xt[:40]), logits)  # the NumPy integer reference, bit for bit
    fq_logits = predict(q, xt[:40])
    i8 = convert_to_int8(q, unsigned=False)
    # end to end, one-LSB rounding differences compound over the layers; the logits stay close
    assert np.abs(predict(i8, xt[:40]) - fq_logits).max() <= 0.1 * np.abs(fq_logits).max()


def test_threads_and_save_load(converted, tmp_path):
    name, m, q, xt, _ = converted
    i8 = convert_to_int8(q)
    feeds = {q.inputs[0]: xt[:8]}
    before = threads.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            threads.set_num_threads(n)
            outs.append(i8.run(feeds)[i8.outputs[0]])
    finally:
        threads.set_num_threads(before)
    assert np.array_equal(outs[0], outs[1])
    save(i8, tmp_path / "i8.rq")
    again = load(tmp_path / "i8.rq")
    assert np.array_equal(again.run(feeds)[i8.outputs[0]], outs[0])
    # the INT8 graph keeps no float copy of a converted weight
    for op in i8.ops:
        if op.type in INT8_OPS:
            for p in op.inputs[1:]:
                assert i8.params[p].dtype != np.float32 or p.endswith("@mult")
    weights = [op.inputs[1] for op in m.ops if op.type in ("conv2d", "depthwise_conv2d", "mul")]
    assert not any(w in i8.params for w in weights)


def test_reduce_range_halves_gemm_weights(converted, tmp_path):
    # reduce_range: conv/matmul weights rint(q / 2) in [-64, 64] with twice the step, depthwise untouched; the
    # packed weights carry the pair flag (AVX2 takes its vpmaddubsw kernel), the graph still equals its NumPy
    # twin bit for bit, and top-1 stays within 1.5 points of the fake-quant model (one weight bit less)
    from refquant.reference import qgemm as twin
    from refquant.train import evaluate, predict
    name, m, q, xt, yt = converted
    full, half = convert_to_int8(q), convert_to_int8(q, reduce_range=True)
    assert half.meta["int8"]["reduce_range"] and not full.meta["int8"]["reduce_range"]
    for a, b in zip(full.ops, half.ops):
        assert a.type == b.type
        if a.type in ("conv2d_int8", "matmul_int8"):
            K, N = a.attrs["K"], a.attrs["N"]
            w8, w7 = (twin.unpack_b(g.params[op.inputs[1]], K, N) for g, op in ((full, a), (half, b)))
            assert np.array_equal(w7, np.rint(w8 / 2.0)) and np.abs(w7).max() <= 64
            assert twin.header_flags(half.params[b.inputs[1]]) == twin.PAIRS_FIT_S16
            np.testing.assert_allclose(half.params[b.inputs[4]], 2 * full.params[a.inputs[4]], rtol=1e-6)
        elif a.type == "depthwise_conv2d_int8":
            assert np.array_equal(full.params[a.inputs[1]], half.params[b.inputs[1]])
    assert abs(evaluate(half, xt, yt) - evaluate(q, xt, yt)) <= 0.015
    logits = predict(half, xt[:16])
    with _dispatch.use_reference():
        assert np.array_equal(predict(half, xt[:16]), logits)
    # a file cannot claim the flag for weights that do not fit: the loader recomputes it
    save(full, tmp_path / "full.rq")
    conv = next(op for op in full.ops if op.type == "conv2d_int8")
    again = load(tmp_path / "full.rq")
    assert np.array_equal(again.params[conv.inputs[1]], full.params[conv.inputs[1]])


def test_residual_adds_are_fused():
    # resnet20: each block's add -> relu -> quantize_int8 is one fused_elementwise_add, whose outputs equal the
    # three separate ops on the same inputs
    m, calib, xt, _ = _zoo("resnet20", 2)
    i8 = convert_to_int8(quant_post_static(m, calib, algo="hist"))
    fused = [op for op in i8.ops if op.type == "fused_elementwise_add"]
    assert len(fused) == 9 and not any(op.type in ("relu", "elementwise_add") for op in i8.ops)
    env = {**i8.params, **i8.run({i8.inputs[0]: xt[:4]}, outputs=[n for op in fused for n in op.inputs])}
    ctx = OpContext(False, None)
    for op in fused:
        y, q = get_op(op.type).forward(ctx, op.attrs, *(env[n] for n in op.inputs))
        want = np.maximum(env[op.inputs[0]] + env[op.inputs[1]], np.float32(0))
        assert (y is None) != op.attrs["want_float"] or np.array_equal(y, want)
        if "scale_inv" not in op.attrs:            # the last block feeds a float pool: no quantize to fuse
            assert q is None
            continue
        qa = {k: op.attrs[k] for k in ("scale_inv", "zero", "lo", "hi")}
        assert np.array_equal(q, get_op("quantize_int8").forward(ctx, {**qa, "layout": "NHWC"}, want))


def test_scalar_chains_fuse_without_changing_a_bit(monkeypatch):
    # PP-LCNetV3's block between two convs: affine (mul a, add b) -> hard swish spelled out (add 3, relu6, mul,
    # div 6) -> affine -> conv. The chain fuses into one pass, then into the conv before it as a post-op; each
    # graph equals the unfused one bit for bit (same float32 steps), with the kernels and with their twins.
    from refquant.deploy import convert as conv_mod
    from refquant.models import GraphBuilder
    b = GraphBuilder("lab", seed=0)
    x = b.input("x", (None, 3, 8, 8))
    h = b.conv2d(x, 8, 3, padding=1)
    scal = {n: b.param(n, np.array([v], np.float32)) for n, v in
            (("a", 0.8), ("b", 0.1), ("three", 3.0), ("six", 6.0), ("c", 1.2), ("d", -0.05))}
    t = b.add(b.mul_elementwise(scal["a"], h), scal["b"])
    sw = b.div(b.mul_elementwise(t, b.relu6(b.add(t, scal["three"]))), scal["six"])
    y = b.conv2d(b.add(b.mul_elementwise(scal["c"], sw), scal["d"]), 4, 1)
    m = b.build(y)
    xs = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    q = quant_post_static(m, [{"x": xs}], algo="abs_max")
    fused = convert_to_int8(q)
    # the chain became the first conv's post-op: one INT8 op from the conv's input to the next conv's u8 input
    assert not any(op.type in ("fused_scalar_chain", "relu6", "elementwise_div", "elementwise_mul")
                   for op in fused.ops)
    conv = [op for op in fused.ops if op.type == "conv2d_int8" and op.attrs.get("chain")]
    assert len(conv) == 1 and conv[0].outputs[0] == ""                       # only the u8 output is read
    chain = conv[0].attrs["chain"]
    assert chain["hard_swish"] and {"pre_mul", "pre_add", "post_mul", "post_add", "scale_inv"} <= set(chain)
    want = fused.run({"x": xs})[y]
    monkeypatch.setattr(conv_mod._Converter, "_fuse_chains", lambda self: None)
    separate = convert_to_int8(q)
    assert sum(op.type == "fused_scalar_chain" for op in separate.ops) == 1
    assert np.array_equal(separate.run({"x": xs})[y], want)
    monkeypatch.setattr(conv_mod._Converter, "_fuse_elementwise", lambda self: None)
    plain = convert_to_int8(q)
    assert np.array_equal(plain.run({"x": xs})[y], want)
    with _dispatch.use_reference():
        assert np.array_equal(fused.run({"x": xs})[y], want)


def test_depthwise_writes_a_float_nchw_output_itself(monkeypatch, tmp_path):
    # a depthwise conv whose float output leaves the graph (and one feeding a float op that reads NCHW) writes
    # NCHW itself: no nhwc_to_nchw pass, the same bits as the graph with one, with the kernels and their twins;
    # depthwise outputs read in NHWC (by an add, or by the next conv's quantize) keep their layout
    from refquant.deploy import convert as conv_mod
    from refquant.models import GraphBuilder
    b = GraphBuilder("dw", seed=0)
    x = b.input("x", (None, 8, 9, 9))
    y = b.conv2d(b.add(b.conv2d(x, 8, 3, groups=8, bias=True), b.conv2d(x, 8, 3, groups=8)), 8, 3, groups=8)
    z = b.scale(b.conv2d(y, 8, 3, groups=8), 0.5)
    m = b.build([y, z])
    xs = np.random.default_rng(0).standard_normal((2, 8, 9, 9)).astype(np.float32)
    q = quant_post_static(m, [{"x": xs}], algo="abs_max")
    i8 = convert_to_int8(q)
    dw = [op for op in i8.ops if op.type == "depthwise_conv2d_int8"]
    assert [op.attrs.get("out_layout", "NHWC") for op in dw] == ["NHWC", "NHWC", "NHWC", "NCHW"]
    assert "nhwc_to_nchw" not in [op.type for op in i8.ops]
    want = i8.run({"x": xs})
    monkeypatch.setattr(conv_mod._Converter, "_fuse_output_layouts", lambda self: None)
    plain = convert_to_int8(q)
    assert not any(op.attrs.get("out_layout") for op in plain.ops)
    assert [op.type for op in plain.ops].count("nhwc_to_nchw") == 1
    for name, v in plain.run({"x": xs}).items():
        assert np.array_equal(v, want[name])
    from refquant.errors import GraphError
    from refquant.ops.registry import check_op
    for bad in ({"out_layout": "CHWN"}, {"out_layout": "NCHW", "out_dtype": "f32", "chain": {"pre_mul": 2.0}}):
        with pytest.raises(GraphError):
            check_op(type(dw[0])(dw[0].type, dw[0].inputs, dw[0].outputs, {**dw[0].attrs, **bad}, dw[0].name))
    save(i8, tmp_path / "dw.rq")
    with _dispatch.use_reference():
        for name, v in load(tmp_path / "dw.rq").run({"x": xs}).items():
            assert np.array_equal(v, want[name])
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):  # exported: NCHW, as ONNX
        import onnxruntime as ort

        from refquant import export_onnx
        export_onnx(i8, tmp_path / "dw.onnx")
        got = ort.InferenceSession(str(tmp_path / "dw.onnx")).run([z], {"x": xs})[0]
        assert got.shape == want[z].shape and np.abs(got - want[z]).max() <= 1e-5 * np.abs(want[z]).max()


def test_three_d_mul_converts_to_matmul_int8():
    # the transformer's fc layers: mul with x_num_col_dims=2 on (B, T, H) run as B*T rows of matmul_int8
    from refquant.train import evaluate, predict
    m, calib, xt, yt = _zoo("text_transformer", 2)
    q = quant_post_static(m, calib, algo="hist")
    i8 = convert_to_int8(q)
    three_d = [op for op in m.ops if op.type == "mul" and op.attrs.get("x_num_col_dims") == 2]
    assert three_d and i8.op_counts()["matmul_int8"] >= len(three_d)
    assert abs(evaluate(i8, xt, yt) - evaluate(q, xt, yt)) <= 1.5 / len(yt)
    logits = predict(i8, xt[:16])
    with _dispatch.use_reference():
        assert np.array_equal(predict(i8, xt[:16]), logits)


def test_loader_recomputes_the_pair_flag(tmp_path):
    from refquant.graph import Model, Op, TensorSpec
    from refquant.reference import qgemm as twin
    w = np.full((8, 16), 100, np.int8)                 # pairs of 200: vpmaddubsw would saturate
    forged = twin.pack_b(w)
    twin.set_header_flags(forged, twin.PAIRS_FIT_S16)
    m = Model([Op("relu", ["x"], ["y"], {})], {"p": forged}, [TensorSpec("x", (None, 2), "float32")], ["y"])
    save(m, tmp_path / "forged.rq")
    assert twin.header_flags(load(tmp_path / "forged.rq").params["p"]) == 0


def test_onnx_format_converts_to_the_same_graph():
    m, calib, xt, _ = _zoo("lenet5", 2)
    a = convert_to_int8(quant_post_static(m, calib, algo="abs_max"))
    b = convert_to_int8(quant_post_static(m, calib, algo="abs_max", onnx_format=True))
    assert [op.type for op in a.ops] == [op.type for op in b.ops]
    fa, fb = a.run({"x": xt[:32]})[a.outputs[0]], b.run({"x": xt[:32]})[b.outputs[0]]
    assert np.abs(fa - fb).max() <= 1e-3 * np.abs(fa).max()


def test_ops_without_int8_kernel_stay_float():
    """A grouped conv (groups=2) has no INT8 kernel: it keeps its fake-quant input and runs in float."""
    from refquant.graph import Model, Op, TensorSpec
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
              "w2": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    ops = [Op("conv2d", ["x", "w1"], ["y1"], {"groups": 2, "paddings": [1, 1, 1, 1]}, "c1"),
           Op("relu", ["y1"], ["r1"], {}, "r1"),
           Op("conv2d", ["r1", "w2"], ["y2"], {}, "c2")]
    m = Model(ops, params, [TensorSpec("x", (None, 4, 6, 6))], ["y2"])
    calib = [{"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32)}]
    q = quant_post_static(m, calib, algo="abs_max")
    i8 = convert_to_int8(q, unsigned=False)
    types = [op.type for op in i8.ops]
    assert "conv2d" in types and "fake_quantize_dequantize_abs_max" in types and "conv2d_int8" in types
    fq, got = q.run(calib[0])["y2"], i8.run(calib[0])["y2"]
    assert np.abs(fq - got).max() <= 0.02 * np.abs(fq).max()


def test_unquantized_model_is_rejected():
    m, _, _, _ = _zoo("lenet5", 1)
    with pytest.raises(ValueError, match="not quantized"):
        convert_to_int8(m)


def test_paddle_style_bias_adds_are_fused():
    """Paddle's LeNet adds conv biases with elementwise_add(axis=1): folded into the INT8 ops' int32 bias."""
    from refquant.models.lenet import lenet5
    m = lenet5(input_size=28, bias_style="add")
    rng = np.random.default_rng(0)
    calib = [{"x": rng.random((8, 1, 28, 28), dtype=np.float32)}]
    q = quant_post_static(m, calib, algo="abs_max")
    i8 = convert_to_int8(q, unsigned=False)
    assert "elementwise_add" not in i8.op_counts()
    fq, got = q.run(calib[0])[m.outputs[0]], i8.run(calib[0])[m.outputs[0]]
    assert np.abs(fq - got).max() <= 0.05 * np.abs(fq).max()


def test_a_model_quantized_below_8_bits_is_refused_not_converted_as_8_bit():
    from refquant.errors import UnsupportedOpError
    from refquant.models import zoo
    from refquant.quant import quant_post_static
    m = zoo.build("lenet5")
    _, c, h, w = m.input_specs[0].shape
    feeds = [{m.inputs[0]: np.random.default_rng(0).standard_normal((2, c, h, w)).astype(np.float32)}]
    q = quant_post_static(m, feeds, algo="abs_max", weight_bits=4, activation_bits=4)
    with pytest.raises(UnsupportedOpError, match="4 bits"):
        convert_to_int8(q)
