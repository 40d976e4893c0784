"""Op traits on OpDef (refquant.ops.registry): what the passes and the executor read instead of lists of op type
names and name rules."""
import dataclasses

import numpy as np
import pytest

from refquant import executor
from refquant.graph import Model, Op, TensorSpec
from refquant.ops.registry import OPS, TRAITS, has_trait, op_types_with, register
from refquant.quant import post_static

# Paddle 3.3.1's quantization dicts (paddle/static/quantization/utils.py), the oracle of the two PTQ traits
PADDLE_WEIGHT_OPS = {"conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2"}
PADDLE_ACT_OPS = {
    "mul", "matmul", "matmul_v2", "pool2d", "elementwise_add", "elementwise_sub", "elementwise_mul",
    "elementwise_pow", "concat", "softmax", "relu", "relu6", "leaky_relu", "prelu", "tanh", "swish", "sigmoid",
    "hard_swish", "hard_sigmoid", "gelu", "layer_norm", "batch_norm", "reshape", "reshape2", "transpose",
    "transpose2", "flatten", "flatten_contiguous_range", "squeeze2", "unsqueeze2", "nearest_interp",
    "bilinear_interp", "nearest_interp_v2", "bilinear_interp_v2", "slice", "split", "scale", "clip", "pow",
    "reduce_mean", "reduce_sum", "reduce_max", "lookup_table", "lookup_table_v2", "dropout",
}


def test_ptq_op_lists_come_from_the_traits():
    assert set(post_static.WEIGHT_OP_TYPES) == PADDLE_WEIGHT_OPS
    assert post_static.OBSERVER_OP_TYPES == PADDLE_ACT_OPS
    # every registered op of Paddle's dicts carries its trait; the rest are Paddle-only names
    assert set(op_types_with("weight_inputs")) == PADDLE_WEIGHT_OPS & set(OPS)
    assert set(op_types_with("observed")) == PADDLE_ACT_OPS & set(OPS)
    assert all(OPS[t].weight_inputs == (1,) for t in op_types_with("weight_inputs"))
    # Paddle's output argument names (<OutArg><k>_threshold)
    assert {t: d.out_arg for t, d in OPS.items() if d.out_arg != "Out"} == {
        "conv2d": "Output", "depthwise_conv2d": "Output", "conv2d_transpose": "Output", "batch_norm": "Y",
        "layer_norm": "Y"}


def test_int8_and_fused_traits_name_the_deployment_ops():
    """The traits replace the name rule the executor used (``*_int8`` or ``fused_*``): the same ops carry them."""
    assert set(op_types_with("int8")) == {t for t in OPS if t.endswith("_int8")}
    assert set(op_types_with("fused")) == {t for t in OPS if t.startswith("fused_")} | {"conv2d_bias_act"}
    assert not has_trait("no_such_op", "int8")
    with pytest.raises(ValueError, match="unknown trait"):
        op_types_with("colour")


def _one_op_model(op_type):
    return Model([Op(op_type, ["x"], ["y"], {}, "n")], {}, [TensorSpec("x", (None, 3))], ["y"])


@pytest.mark.parametrize("trait,pinned", [({}, False), ({"int8": True}, True), ({"fused": True}, True),
                                          ({"observed": True}, False)])
def test_the_executor_pins_blas_by_trait_not_by_name(monkeypatch, trait, pinned):
    """run() limits BLAS to one thread exactly when the graph has an ``int8`` or ``fused`` op, whatever its name."""
    seen = []

    class Spy:
        def __init__(self, active=True):
            seen.append(active)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(executor, "blas_on_one_thread", Spy)
    monkeypatch.setitem(OPS, "toy_op", dataclasses.replace(OPS["relu"], type="toy_op", **trait))
    x = np.array([[-1.0, 0.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(executor.run(_one_op_model("toy_op"), {"x": x})["y"], np.maximum(x, 0))
    assert seen == [pinned]


def test_register_declares_traits(monkeypatch):
    monkeypatch.setattr("refquant.ops.registry.OPS", dict(OPS))
    from refquant.ops import registry
    register("toy_weight_op", weight_inputs=[1], observed=True)(lambda ctx, attrs, x, w: x @ w)
    d = registry.OPS["toy_weight_op"]
    assert d.weight_inputs == (1,) and d.observed and not d.int8 and not d.fused
    assert d.out_arg == "Out" and set(TRAITS) == {"int8", "fused", "weight_inputs", "observed", "out_arg"}
    assert "toy_weight_op" not in OPS
