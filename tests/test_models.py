"""Model zoo builders: shapes at small and ImageNet size, parameter counts, names, determinism, metadata."""
import re
from pathlib import Path

import numpy as np
import pytest

import refquant.models as M
from refquant.models import count_params, zoo

SMALL = [
    ("lenet5", dict(input_size=16, num_classes=10, in_channels=1)),
    ("lenet5", dict(input_size=32, num_classes=10, in_channels=1)),
    ("lenet5", dict(input_size=8, num_classes=10, in_channels=1)),
    ("mobilenet_v1", dict(input_size=16, num_classes=10, in_channels=1, width=0.25)),
    ("mobilenet_v2", dict(input_size=16, num_classes=10, in_channels=1, width=0.35)),
    ("resnet20", dict(input_size=16, num_classes=10, in_channels=1, width=0.5)),
    ("resnet18", dict(input_size=16, num_classes=10, in_channels=1, width=0.25)),
    ("resnet50", dict(input_size=16, num_classes=10, in_channels=1, width=0.125)),
    ("vgg_small", dict(input_size=16, num_classes=10, in_channels=1, width=0.5)),
    ("vgg16", dict(input_size=32, num_classes=10, in_channels=1, width=0.125)),
]

PARAM_NAME = re.compile(r"^[a-z_0-9]+_\d+\.[wb]_\d+$")


def _feed(model, n, rng):
    spec = model.input_specs[0]
    shape = (n,) + tuple(spec.shape[1:])
    if spec.dtype == "int64":
        return rng.integers(0, 50, size=shape)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("builder,kwargs", SMALL)
def test_small_builds_run_and_name_paddle_style(builder, kwargs):
    model = M.build(builder, **kwargs)
    rng = np.random.default_rng(0)
    out = model.run({"x": _feed(model, 2, rng)})[model.outputs[0]]
    assert out.shape == (2, kwargs["num_classes"]) and out.dtype == np.float32 and np.isfinite(out).all()
    assert model.inputs == ["x"] and model.input_specs[0].shape == (None, kwargs["in_channels"],
                                                                    kwargs["input_size"], kwargs["input_size"])
    names = [op.name for op in model.ops]
    assert len(names) == len(set(names))
    assert all(PARAM_NAME.match(k) for k in model.params), [k for k in model.params if not PARAM_NAME.match(k)]
    # batch-norm running statistics are state, not trainable
    for op in model.ops:
        if op.type == "batch_norm":
            assert op.inputs[3] not in model.trainable and op.inputs[4] not in model.trainable
            assert op.inputs[1] in model.trainable and op.outputs[1:] == op.inputs[3:5]
    assert model.meta["builder"] == builder and model.meta["kwargs"]["input_size"] == kwargs["input_size"]


def test_op_types_follow_the_contract():
    m = M.mobilenet_v2(input_size=16, num_classes=10, in_channels=1, width=0.35)
    counts = m.op_counts()
    assert counts["depthwise_conv2d"] == 17 and counts["relu6"] == 35 and counts["elementwise_add"] == 10 + 1
    dw = next(op for op in m.ops if op.type == "depthwise_conv2d")
    assert dw.attrs["groups"] == m.params[dw.inputs[1]].shape[0] and m.params[dw.inputs[1]].shape[1] == 1
    assert set(dw.attrs) == {"strides", "paddings", "dilations", "groups"} and len(dw.attrs["paddings"]) == 4
    lenet = M.lenet5(input_size=16)
    assert [op.type for op in lenet.ops if op.type in ("mul", "elementwise_add")] == ["mul", "elementwise_add"] * 3
    conv = lenet.ops[0]
    assert conv.type == "conv2d" and conv.inputs[2] == "conv2d_0.b_0"


def test_lenet_matches_the_oracle_paddle_program():
    """At 28x28 with bias_style="add" the graph has the oracle LeNet's parameter shapes and tensor names."""
    m = M.lenet5(input_size=28, bias_style="add")
    shapes = {"conv2d_0.w_0": (6, 1, 5, 5), "conv2d_0.b_0": (6,), "conv2d_1.w_0": (16, 6, 5, 5),
              "conv2d_1.b_0": (16,), "fc_0.w_0": (400, 120), "fc_0.b_0": (120,), "fc_1.w_0": (120, 84),
              "fc_1.b_0": (84,), "fc_2.w_0": (84, 10), "fc_2.b_0": (10,)}
    assert {k: v.shape for k, v in m.params.items()} == shapes
    tensors = {n for op in m.ops for n in op.outputs}
    oracle = {"conv2d_0.tmp_0", "conv2d_0.tmp_1", "conv2d_1.tmp_0", "conv2d_1.tmp_1", "fc_0.tmp_0", "fc_0.tmp_1",
              "fc_0.tmp_2", "fc_1.tmp_0", "fc_1.tmp_1", "fc_1.tmp_2", "fc_2.tmp_0", "fc_2.tmp_1",
              "flatten_0.tmp_0", "pool2d_0.tmp_0", "pool2d_1.tmp_0", "relu_0.tmp_0", "relu_1.tmp_0",
              "reshape2_0.tmp_0", "reshape2_1.tmp_0"}
    assert tensors == oracle and m.outputs == ["fc_2.tmp_1"]
    # the two bias styles compute the same function
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    m.params["conv2d_0.b_0"][:] = np.arange(6) * 0.1
    other = M.lenet5(input_size=28)
    other.params.update({k: v.copy() for k, v in m.params.items()})
    np.testing.assert_allclose(m.run({"x": x})["fc_2.tmp_1"], other.run({"x": x})["fc_2.tmp_1"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("builder,trainable", [("mobilenet_v1", 4_231_976), ("mobilenet_v2", 3_504_872),
                                               ("resnet50", 25_557_032)])
def test_imagenet_shapes_run(builder, trainable):
    model = M.build(builder)                           # 224x224x3, 1000 classes, width 1.0
    assert count_params(model, trainable_only=True) == trainable
    out = model.run({"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)})
    assert out[model.outputs[0]].shape == (1, 1000)


def test_vgg16_imagenet_shape_without_running():
    model = M.vgg16()
    assert count_params(model, trainable_only=True) == 138_357_544
    shapes = model.infer_shapes({"x": (1, 3, 224, 224)})
    assert shapes[model.outputs[0]] == (1, 1000)
    assert shapes["flatten_0.tmp_0"] == (1, 512 * 7 * 7)
    assert model.op_counts()["conv2d"] == 13 and model.op_counts()["mul"] == 3


def test_resnet_variants():
    assert count_params(M.resnet20(), trainable_only=True) == 272_474          # CIFAR ResNet-20, 3 channels
    assert count_params(M.resnet18(), trainable_only=True) == 11_689_512
    with pytest.raises(ValueError):
        M.resnet_cifar(21)
    r = M.resnet50(input_size=224)
    assert r.op_counts()["pool2d"] == 2 and r.ops[0].attrs["strides"] == [2, 2]
    small = M.resnet50(input_size=32, width=0.125, num_classes=10)
    assert small.op_counts()["pool2d"] == 1 and small.ops[0].attrs["strides"] == [1, 1]


def test_same_seed_same_weights_and_rebuild_from_meta():
    a = M.mobilenet_v2(input_size=16, num_classes=10, in_channels=1, width=0.35, seed=3)
    b = M.rebuild(a.meta)
    c = M.mobilenet_v2(input_size=16, num_classes=10, in_channels=1, width=0.35, seed=4)
    assert list(a.params) == list(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)


def test_initialisation_follows_paddle_defaults():
    m = M.resnet20(input_size=16, in_channels=1, seed=0)
    w = m.params["conv2d_5.w_0"]                                           # 3x3 conv, 16 -> 16
    assert abs(w.std() - np.sqrt(2 / (16 * 9))) < 0.02
    fc = m.params["fc_0.w_0"]
    limit = np.sqrt(6 / sum(fc.shape))
    assert np.abs(fc).max() <= limit and np.abs(fc).max() > 0.8 * limit
    assert (m.params["fc_0.b_0"] == 0).all() and (m.params["batch_norm_0.w_0"] == 1).all()
    assert (m.params["batch_norm_0.w_2"] == 1).all() and (m.params["batch_norm_0.w_1"] == 0).all()


@pytest.mark.parametrize("encoder", ["mean", "transformer"])
def test_text_classifier(encoder):
    m = M.text_classifier(vocab_size=50, num_classes=4, embed_dim=16, encoder=encoder, num_layers=2, num_heads=4,
                          max_len=8, hidden=16)
    assert m.inputs == ["ids"] and m.input_specs[0].dtype == "int64"
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 2]], dtype=np.int64)
    out = m.run({"ids": ids})[m.outputs[0]]
    assert out.shape == (2, 4) and np.isfinite(out).all()
    types = m.op_counts()
    assert types["lookup_table"] >= 2
    if encoder == "transformer":
        assert types["matmul"] == 4 and types["softmax"] == 2 and types["layer_norm"] == 5 and types["gelu"] == 2
        # padding is masked: what sits at padded positions does not reach the output of a short sentence
        perturbed = m.copy()
        noise = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
        perturbed.params["pos_embedding_0.w_0"][3:] += noise
        out2 = perturbed.run({"ids": ids})[m.outputs[0]]
        np.testing.assert_allclose(out2[0], out[0], rtol=1e-4, atol=1e-5)
        assert not np.allclose(out2[1], out[1])
    # frozen mask tables
    assert "token_mask.w_0" not in m.trainable and "attn_bias.w_0" not in m.trainable


def test_zoo_entries_build():
    for name, entry in zoo.ZOO.items():
        if entry["kwargs"] is not None:
            m = zoo.build(name)
            x, y = zoo.load_data(name, "test")
            out = m.run({m.inputs[0]: x[:2]})[m.outputs[0]]
            assert out.shape == (2, int(y.max()) + 1)
            assert m.meta["zoo"] == name
            assert set(entry["train"]) >= {"epochs", "lr", "batch_size", "optimizer"}
    assert zoo.ZOO["resnet50"]["imagenet"]["input_size"] == 224
    assert zoo.build("mobilenet_v1", imagenet=True).input_specs[0].shape == (None, 3, 224, 224)
    assert M.build("resnet50", **zoo.ZOO["resnet50"]["imagenet"]).inputs == ["x"]


ORACLE = Path(__file__).resolve().parent / "data"   # Paddle 3.3.1's dumps of the oracle LeNet


@pytest.mark.skipif(not (ORACLE / "lenet_calib_acts_base.npz").is_file(), reason="tests/data oracle files absent")
def test_lenet_with_oracle_weights_reproduces_paddle_activations():
    """Paddle's LeNet weights in refquant's lenet5 give Paddle's own conv/fc outputs (to ~1e-5: conv arithmetic)."""
    m = M.lenet5(input_size=28, bias_style="add")
    with np.load(ORACLE / "lenet_fp32_weights.npz") as w:
        m.params.update({k: w[k] for k in w})
    with np.load(ORACLE / "lenet_calib_acts_base.npz") as acts:
        names = ["conv2d_0.tmp_0", "conv2d_1.tmp_0", "fc_0.tmp_0", "fc_1.tmp_0", "fc_2.tmp_0"]
        for b in range(4):
            out = m.run({"x": acts[f"x|b{b}"]}, outputs=names)
            for name in names:
                np.testing.assert_allclose(out[name], acts[f"{name}|b{b}"], atol=1e-4, rtol=1e-4, err_msg=name)
