"""optimize_fp32: batch norm and constant per-channel / scalar multiplies and adds folded into the convs before them."""
from __future__ import annotations

import numpy as np
import pytest

from refquant.deploy import optimize_fp32
from refquant.graph import Model, Op, TensorSpec
from refquant.models import build

# ops built by hand here hold writeable weights (repacked per call, which conv2d_bias_act warns about)
pytestmark = pytest.mark.filterwarnings("ignore:.*packed again on every call:RuntimeWarning")

RNG = np.random.default_rng(0)


def f32(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def bn_params(prefix, c):
    return {f"{prefix}.g": f32(c, lo=0.5, hi=2), f"{prefix}.b": f32(c), f"{prefix}.m": f32(c),
            f"{prefix}.v": f32(c, lo=0.1, hi=2)}


def bn(prefix, x, y, **outs):
    return Op("batch_norm", [x] + [f"{prefix}.{k}" for k in "gbmv"],
              [y, outs.get("mean_out", f"{prefix}.m"), outs.get("var_out", f"{prefix}.v")], {"epsilon": 1e-3})


def chain_model(extra_outputs=(), **bn_outs):
    """conv (bias) -> bn -> mul scalar -> add (1, C, 1, 1) -> sub (C,) axis 1 -> relu; depthwise -> bn -> relu6."""
    params = {"w": f32(8, 3, 3, 3), "wb": f32(8), "s": f32(1), "c": f32(1, 8, 1, 1), "d": f32(8),
              "dw": f32(8, 1, 3, 3), **bn_params("bn1", 8), **bn_params("bn2", 8)}
    ops = [Op("conv2d", ["x", "w", "wb"], ["c1"], {"paddings": [1, 1]}, "conv1"),
           bn("bn1", "c1", "n1", **bn_outs),
           Op("elementwise_mul", ["n1", "s"], ["m1"]),
           Op("elementwise_add", ["c", "m1"], ["a1"]),
           Op("elementwise_sub", ["a1", "d"], ["s1"], {"axis": 1}),
           Op("relu", ["s1"], ["r1"]),
           Op("depthwise_conv2d", ["r1", "dw"], ["c2"], {"groups": 8, "paddings": [1, 1], "strides": [2, 2]}, "dw"),
           bn("bn2", "c2", "n2"),
           Op("relu6", ["n2"], ["y"])]
    return Model(ops, params, [TensorSpec("x", (None, 3, 12, 12))], ["y", *extra_outputs])


def close(a, b, rtol=1e-5):
    return np.max(np.abs(a.astype(np.float64) - b)) <= rtol * np.max(np.abs(a))


def test_folds_the_chains_and_keeps_the_outputs():
    m = chain_model()
    before = {k: v.copy() for k, v in m.params.items()}
    ops_before = [(op.type, list(op.inputs), list(op.outputs)) for op in m.ops]
    f = optimize_fp32(m)
    assert [op.type for op in f.ops] == ["conv2d_bias_act", "conv2d_bias_act"]
    assert [(op.outputs, op.attrs["activation"]) for op in f.ops] == [(["r1"], "relu"), (["y"], "relu6")]
    x = f32(2, 3, 12, 12, lo=-3, hi=3)
    y, yf = m.run({"x": x})["y"], f.run({"x": x})["y"]
    assert yf.dtype == np.float32 and close(y, yf) and not np.array_equal(y, np.zeros_like(y))
    # the input model is left as it was
    assert [(op.type, list(op.inputs), list(op.outputs)) for op in m.ops] == ops_before
    assert all(np.array_equal(m.params[k], v) for k, v in before.items()) and m.params.keys() == before.keys()
    assert set(f.params) == {n for op in f.ops for n in op.inputs[1:] if n}  # the unfolded parameters are gone


def test_a_tensor_read_elsewhere_stops_the_chain():
    # a graph output in the chain: folding stops before the op that reads it
    f = optimize_fp32(chain_model(extra_outputs=("n1",)))
    assert [op.type for op in f.ops][:3] == ["conv2d_bias_act", "elementwise_mul", "elementwise_add"]
    # batch norm whose running-mean output is a graph output: not folded
    f = optimize_fp32(chain_model(extra_outputs=("mo",), mean_out="mo"))
    assert [op.type for op in f.ops][:2] == ["conv2d_bias_act", "batch_norm"]
    assert f.ops[0].inputs == ["x", "w", "wb"]  # nothing folded: the same parameters
    x = f32(1, 3, 12, 12)
    m = chain_model(extra_outputs=("n1",))
    assert close(m.run({"x": x})["y"], optimize_fp32(m).run({"x": x})["y"])


@pytest.mark.parametrize("shape, axis, folds", [((8,), 1, True), ((6,), -1, False), ((1, 8, 1, 1), -1, True),
                                                 ((1, 1, 1, 6), -1, False), ((8, 1, 1), -1, True), ((), -1, True)])
def test_only_per_channel_or_scalar_constants_fold(shape, axis, folds):
    c = f32(*shape)
    m = Model([Op("conv2d", ["x", "w"], ["t"]), Op("elementwise_mul", ["t", "c"], ["y"], {"axis": axis})],
              {"w": f32(8, 3, 1, 1), "c": c}, [TensorSpec("x", (1, 3, 6, 6))], ["y"])
    f = optimize_fp32(m)
    assert (len(f.ops) == 1) == folds and f.ops[0].type == "conv2d_bias_act"
    x = f32(1, 3, 6, 6)
    assert close(m.run({"x": x})["y"], f.run({"x": x})["y"])


def test_a_constant_of_another_dtype_or_a_constant_minus_conv_does_not_fold():
    for ops, c in (([Op("elementwise_add", ["t", "c"], ["y"])], np.float64(0.5) * np.ones(1)),
                   ([Op("elementwise_sub", ["c", "t"], ["y"])], f32(1))):
        m = Model([Op("conv2d", ["x", "w"], ["t"])] + ops, {"w": f32(8, 3, 1, 1), "c": c},
                  [TensorSpec("x", (1, 3, 6, 6))], ["y"])
        assert len(optimize_fp32(m).ops) == 2


def test_mobilenet_v2_has_no_batch_norm_left():
    m = build("mobilenet_v2")
    f = optimize_fp32(m)
    assert "batch_norm" in m.op_counts() and not {"batch_norm", "relu6", "conv2d", "depthwise_conv2d"} & set(f.op_counts())
    x = RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert close(m.run({"x": x})[m.outputs[0]], f.run({"x": x})[f.outputs[0]], rtol=1e-5)


ACTS = {"": {}, "relu": {}, "relu6": {"threshold": 2.5}, "hard_sigmoid": {"slope": 0.25, "offset": 0.4},
        "hard_swish": {"threshold": 5.0, "scale": 7.0, "offset": 2.5}}


@pytest.mark.parametrize("shape, k, stride, pad, dilation", [
    ((2, 96, 40, 37), 3, (1, 1), [1, 1], (1, 1)),       # 4.6 MB of columns per sample: blocks of rows
    ((1, 48, 61, 50), 3, (2, 2), [0, 1, 2, 1], (1, 1)),  # uneven padding, stride 2
    ((1, 40, 60, 60), 3, (1, 2), [2, 2], (2, 2)),        # dilation
    ((1, 12, 90, 90), 5, (1, 1), [2, 2], (1, 1)),
    ((2, 64, 40, 70), 3, (2, 1), [12, 1, 12, 1], (1, 1))])  # blocks of rows that read padding only
@pytest.mark.parametrize("activation", sorted(ACTS))
def test_conv2d_bias_act_is_conv2d_then_the_activation(shape, k, stride, pad, dilation, activation):
    x, w, b = f32(*shape, lo=-2, hi=2), f32(16, shape[1], k, k), f32(16)
    attrs = {"strides": list(stride), "paddings": pad, "dilations": list(dilation)}
    ops = [Op("conv2d", ["x", "w", "b"], ["c" if activation else "y"], attrs)]
    ops += [Op(activation, ["c"], ["y"], ACTS[activation])] if activation else []
    out = Model(ops, {"w": w, "b": b}, [TensorSpec("x", shape)], ["y", "c" if activation else "y"]).run({"x": x})
    fused = Model([Op("conv2d_bias_act", ["x", "w", "b"], ["y"], dict(attrs, activation=activation, **ACTS[activation]))],
                  {"w": w, "b": b}, [TensorSpec("x", shape)], ["y"])
    yf, y = fused.run({"x": x})["y"], out["y"]
    # other sums (the fconv GEMM): rounding relative to the conv's outputs, before the activation clips them
    assert yf.shape == y.shape and yf.dtype == np.float32
    assert np.max(np.abs(yf - y.astype(np.float64))) <= 1e-5 * np.max(np.abs(out["c" if activation else "y"]))


def residual_model(order=("a", "b")):
    """Two conv + batch norm branches of x, added, then relu (a ResNet block's tail); ``order``: which branch the
    op list computes first."""
    p = {"wa": f32(8, 4, 3, 3), "wb": f32(8, 4, 1, 1), **bn_params("bna", 8), **bn_params("bnb", 8)}
    ops = {k: [Op("conv2d", ["x", f"w{k}"], [f"c{k}"], {"paddings": [1, 1] if k == "a" else [0, 0]}),
               bn(f"bn{k}", f"c{k}", f"t{k}")] for k in "ab"}
    tail = [Op("elementwise_add", ["ta", "tb"], ["s"]), Op("relu", ["s"], ["y"])]
    return Model(ops[order[0]] + ops[order[1]] + tail, p, [TensorSpec("x", (None, 4, 9, 9))], ["y"])


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_a_residual_add_and_relu_go_into_the_later_conv(order):
    m = residual_model(order)
    f = optimize_fp32(m)
    assert [op.type for op in f.ops] == ["conv2d_bias_act"] * 2
    assert len(f.ops[1].inputs) == 4 and f.ops[1].inputs[3] == "t" + order[0] and f.ops[1].attrs["activation"] == "relu"
    x = f32(2, 4, 9, 9, lo=-2, hi=2)
    assert close(m.run({"x": x})["y"], f.run({"x": x})["y"])
    # a residual that broadcasts (not of the conv's shape) takes the NumPy route: the same float operations
    r = f32(1, 8, 1, 9)
    g = Model([Op("conv2d_bias_act", ["x", "wa", "", "r"], ["y"], {"paddings": [1, 1], "activation": "relu"})],
              {"wa": m.params["wa"]}, [TensorSpec("x", (2, 4, 9, 9)), TensorSpec("r", r.shape)], ["y"])
    u = Model([Op("conv2d", ["x", "wa"], ["c"], {"paddings": [1, 1]}), Op("elementwise_add", ["c", "r"], ["s"]),
               Op("relu", ["s"], ["y"])], {"wa": m.params["wa"]},
              [TensorSpec("x", (2, 4, 9, 9)), TensorSpec("r", r.shape)], ["y"])
    assert np.array_equal(g.run({"x": x, "r": r})["y"], u.run({"x": x, "r": r})["y"])


def test_a_scalar_affine_after_the_activation_goes_into_the_conv():
    """conv -> hard_swish -> a * t + b (PP-LCNetV3's learnable affine: the scalar first, as exported), on a dense
    and on a depthwise conv."""
    p = {"w": f32(8, 3, 3, 3), "dw": f32(8, 1, 3, 3), "a": f32(1), "b": f32(1), "a2": f32(1)}
    ops = [Op("conv2d", ["x", "w"], ["c"], {"paddings": [1, 1]}), Op("hard_swish", ["c"], ["h"]),
           Op("elementwise_mul", ["a", "h"], ["m"]), Op("elementwise_add", ["m", "b"], ["s"]),
           Op("depthwise_conv2d", ["s", "dw"], ["d"], {"groups": 8, "paddings": [1, 1]}), Op("relu", ["d"], ["r"]),
           Op("elementwise_mul", ["r", "a2"], ["y"])]
    m = Model(ops, p, [TensorSpec("x", (None, 3, 10, 10))], ["y"])
    f = optimize_fp32(m)
    assert [op.type for op in f.ops] == ["conv2d_bias_act"] * 2
    assert (f.ops[0].attrs["post_scale"], f.ops[0].attrs["post_shift"]) == (float(p["a"][0]), float(p["b"][0]))
    assert f.ops[1].attrs["post_scale"] == float(p["a2"][0]) and "post_shift" not in f.ops[1].attrs
    x = f32(2, 3, 10, 10, lo=-4, hi=4)
    assert close(m.run({"x": x})["y"], f.run({"x": x})["y"], rtol=1e-6)


def test_conv2d_bias_act_refuses_other_activations_and_training():
    with pytest.raises(Exception, match="activation"):
        Model([Op("conv2d_bias_act", ["x", "w"], ["y"], {"activation": "swish"})], {"w": f32(4, 3, 1, 1)},
              [TensorSpec("x", (1, 3, 4, 4))], ["y"])
    from refquant import executor
    m = optimize_fp32(chain_model())
    with pytest.raises(Exception, match="no backward"):
        env, tape = executor.forward(m, {"x": f32(1, 3, 12, 12)}, training=True, record=True)
        executor.backward(m, env, tape, {"y": np.ones((1, 8, 6, 6), np.float32)})


def onnx_hard_swish_model(extra_outputs=()):
    """conv -> t * relu6(t + 3) / 6 as ONNX exporters write it (Add, Clip, Mul, Div), then hard_sigmoid after a conv."""
    params = {"w": f32(8, 3, 3, 3), "three": np.full(1, 3, np.float32), "six": np.full(1, 6, np.float32),
              "w2": f32(4, 8, 1, 1)}
    ops = [Op("conv2d", ["x", "w"], ["t"], {"paddings": [1, 1]}),
           Op("elementwise_add", ["t", "three"], ["a"]), Op("relu6", ["a"], ["r"]),
           Op("elementwise_mul", ["r", "t"], ["m"]), Op("elementwise_div", ["m", "six"], ["h"]),
           Op("conv2d", ["h", "w2"], ["t2"]), Op("hard_sigmoid", ["t2"], ["y"], {"slope": 0.2, "offset": 0.5})]
    return Model(ops, params, [TensorSpec("x", (None, 3, 10, 10))], ["y", *extra_outputs])


def test_hard_swish_and_hard_sigmoid_go_into_the_conv():
    m = onnx_hard_swish_model()
    f = optimize_fp32(m)
    assert [(op.type, op.attrs["activation"], op.outputs) for op in f.ops] == [
        ("conv2d_bias_act", "hard_swish", ["h"]), ("conv2d_bias_act", "hard_sigmoid", ["y"])]
    x = f32(2, 3, 10, 10, lo=-4, hi=4)
    assert close(m.run({"x": x})["y"], f.run({"x": x})["y"], rtol=1e-6)  # the same activations, other conv sums
    # an intermediate of the pattern read elsewhere: the pattern stays as it is
    f = optimize_fp32(onnx_hard_swish_model(extra_outputs=("r",)))
    assert [op.type for op in f.ops][:3] == ["conv2d_bias_act", "elementwise_add", "relu6"]
    assert f.ops[0].attrs["activation"] == ""


def test_ptq_refuses_a_fused_model():
    from refquant.errors import ArgumentError
    from refquant.quant import quant_post_static
    with pytest.raises(ArgumentError, match="conv2d_bias_act.*unfused"):
        quant_post_static(optimize_fp32(chain_model()), [{"x": f32(2, 3, 12, 12)}], algo="abs_max")


@pytest.mark.parametrize("groups, stride, bias", [(1, 2, False), (2, 2, True), (1, 1, False)])
def test_a_conv2d_transpose_takes_the_bias_add_and_batch_norm_into_its_weight_and_bias(groups, stride, bias):
    """det's head: conv2d_transpose -> add (1, C, 1, 1) -> batch_norm -> relu becomes conv2d_transpose (folded
    weight and bias) -> relu; stride 2 with a 2 x 2 kernel takes the non-overlapping path, stride 1 col2im."""
    params = {"w": f32(4, 6 // groups, 2, 2), "c": f32(1, 6, 1, 1), **bn_params("bn", 6),
              **({"b0": f32(6)} if bias else {})}
    ops = [Op("conv2d_transpose", ["x", "w"] + (["b0"] if bias else []), ["t"],
              {"strides": [stride, stride], "groups": groups}, "up"),
           Op("elementwise_add", ["t", "c"], ["a"]), bn("bn", "a", "n"), Op("relu", ["n"], ["y"])]
    m = Model(ops, params, [TensorSpec("x", (None, 4, 5, 7))], ["y"])
    f = optimize_fp32(m)
    assert [op.type for op in f.ops] == ["conv2d_transpose", "relu"] and len(f.ops[0].inputs) == 3
    x = f32(2, 4, 5, 7, lo=-3, hi=3)
    y, yf = m.run({"x": x})["y"], f.run({"x": x})["y"]
    assert yf.dtype == np.float32 and yf.shape == y.shape and close(y, yf) and (y > 0).any()
