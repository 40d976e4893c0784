"""Graph validation, feed checking, errors that name the node, shape inference and state writes."""
import numpy as np
import pytest

from refquant import GraphError, Model, Op, ShapeError, TensorSpec, UnsupportedOpError
from refquant.executor import backward, forward


def chain():
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    ops = [Op("mul", ["x", "w"], ["h"], name="fc"), Op("relu", ["h"], ["y"], name="act")]
    return Model(ops, {"w": w}, [TensorSpec("x", (None, 4))], ["y"])


def test_ops_are_ordered_topologically_whatever_the_list_order():
    m = chain()
    reordered = Model(list(reversed(m.ops)), m.params, m.input_specs, m.outputs)
    assert [op.name for op in reordered.ops] == ["fc", "act"]


@pytest.mark.parametrize("ops,match", [
    ([Op("relu", ["nope"], ["y"])], "reads 'nope'"),
    ([Op("relu", ["x"], ["y"]), Op("relu", ["x"], ["y"])], "produced twice"),
    ([Op("relu", ["b"], ["a"]), Op("relu", ["a"], ["b"]), Op("relu", ["x"], ["y"])], "cycle"),
])
def test_malformed_graphs(ops, match):
    with pytest.raises(GraphError, match=match):
        Model(ops, {}, [TensorSpec("x", (2,))], ["y"])


def test_bad_feeds_are_clear_errors():
    m = chain()
    with pytest.raises(GraphError, match="missing feed 'x'"):
        m.run({})
    with pytest.raises(GraphError, match="unknown feed"):
        m.run({"x": np.zeros((1, 4), np.float32), "z": 1})
    with pytest.raises(ShapeError, match="rank"):
        m.run({"x": np.zeros(4, np.float32)})
    with pytest.raises(ShapeError, match="dimension 1 must be 4"):
        m.run({"x": np.zeros((1, 5), np.float32)})
    with pytest.raises(ShapeError, match="must be float32"):
        m.run({"x": np.zeros((1, 4), np.int64)})
    with pytest.raises(TypeError):
        m.run([np.zeros((1, 4))])
    out = m.run({"x": np.ones((2, 4), np.float64)})["y"]  # floats of another width are cast
    assert out.dtype == np.float32 and out.shape == (2, 3)


def test_errors_inside_an_op_name_the_node():
    m = Model([Op("mul", ["x", "w"], ["y"], name="the_fc")], {"w": np.zeros((3, 2), np.float32)},
              [TensorSpec("x", (None, None))], ["y"])
    with pytest.raises(ValueError, match="the_fc"):
        m.run({"x": np.zeros((1, 4), np.float32)})
    with pytest.raises(UnsupportedOpError, match="'frobnicate'.*'n1'"):
        Model([Op("frobnicate", ["x"], ["y"], name="n1")], {}, [TensorSpec("x", (1,))], ["y"]).run(
            {"x": np.zeros(1, np.float32)})


def test_infer_shapes_follows_values_computed_from_shapes():
    # reshape(x, concat(cast(shape(x))[0:1], [-1])): the target is a value computed from x's shape (PP-OCR rec
    # does this); ops with a shape rule (cast, concat) must still compute it, not leave zeros
    ops = [Op("shape", ["x"], ["s"]), Op("cast", ["s"], ["s64"], {"dtype": "int64"}),
           Op("slice", ["s64"], ["n"], {"axes": [0], "starts": [0], "ends": [1]}),
           Op("concat", ["n", "minus1"], ["target"], {"axis": 0}), Op("reshape", ["x", "target"], ["y"])]
    m = Model(ops, {"minus1": np.array([-1], np.int64)}, [TensorSpec("x", (None, 6, 4))], ["y"])
    assert m.infer_shapes({"x": (3, 6, 4)})["y"] == (3, 24)
    assert m.run({"x": np.zeros((3, 6, 4), np.float32)})["y"].shape == (3, 24)


def test_infer_shapes_and_copy_independence():
    m = chain()
    assert m.infer_shapes({"x": (5, 4)})["y"] == (5, 3)
    c = m.copy()
    c.params["w"][:] = 0
    c.ops[0].attrs["x_num_col_dims"] = 1
    assert m.params["w"].any() and "x_num_col_dims" not in m.ops[0].attrs


def test_backward_sums_gradients_of_a_tensor_read_twice():
    m = Model([Op("elementwise_mul", ["x", "x"], ["y"], name="sq")], {}, [TensorSpec("x", (3,), "float64")], ["y"])
    m.trainable = {"x"}
    x = np.array([1.0, -2.0, 3.0])
    env, tape = forward(m, {"x": x}, record=True)
    g = backward(m, env, tape, {"y": np.ones(3)})
    np.testing.assert_array_equal(g["x"], 2 * x)


def test_batch_norm_state_updates_only_in_training():
    p = {"s": np.ones(2, np.float32), "b": np.zeros(2, np.float32), "m": np.zeros(2, np.float32),
         "v": np.ones(2, np.float32)}
    m = Model([Op("batch_norm", ["x", "s", "b", "m", "v"], ["y", "m", "v"], name="bn")], p,
              [TensorSpec("x", (None, 2))], ["y"], trainable={"s", "b"})
    x = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
    m.run({"x": x})
    assert not m.params["m"].any()
    forward(m, {"x": x}, training=True)
    np.testing.assert_allclose(m.params["m"], 0.1 * x.mean(0), rtol=1e-6)


def test_int8_graphs_run_with_blas_on_one_thread():
    # refquant's OpenMP kernels and OpenBLAS's spin-waiting workers must not share the cores: while an INT8 graph
    # runs on > 1 thread, BLAS is limited to one (threadpoolctl), and restored afterwards
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from refquant import threads
    blas = lambda: [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]  # noqa
    before, n_before = blas(), threads.get_num_threads()
    if not before or max(before) < 2:
        pytest.skip("BLAS runs one thread here")
    seen = []
    try:
        threads.set_num_threads(2)
        if threads.get_num_threads() < 2:
            pytest.skip("the OpenMP kernels are not built")
        with threads.blas_on_one_thread():
            seen.append(blas())
        with threads.blas_on_one_thread(active=False):
            seen.append(blas())
        threads.set_num_threads(1)
        with threads.blas_on_one_thread():
            seen.append(blas())
    finally:
        threads.set_num_threads(n_before)
    assert max(seen[0]) == 1 and seen[1] == before and seen[2] == before and blas() == before


def test_an_op_failing_on_its_inputs_raises_a_named_op_error():
    """Shapes that only the fed values contradict: a RefquantError naming the op, still a ValueError."""
    from refquant.errors import OpError, RefquantError
    m = Model([Op("elementwise_add", ["x", "b"], ["y"], {}, name="add0")], {"b": np.ones((4,), np.float32)},
              [TensorSpec("x", (None, 3), "float32")], ["y"])
    with pytest.raises(OpError, match=r"op 'add0' \(elementwise_add\) with input shapes \[\(2, 3\), \(4,\)\]") as e:
        m.run({"x": np.ones((2, 3), np.float32)})
    assert isinstance(e.value, ValueError) and isinstance(e.value, RefquantError)


def test_model_infer_shapes_partial_leaves_unknown_dims_unknown():
    from refquant.models import zoo
    m = zoo.build("lenet5")
    _, c, h, w = m.input_specs[0].shape
    shapes = m.infer_shapes({m.inputs[0]: (None, c, h, w)}, partial=True)
    assert shapes[m.outputs[0]] == (None, 10)
    assert m.infer_shapes({m.inputs[0]: (3, c, h, w)})[m.outputs[0]] == (3, 10)


def test_release_buffers_empties_the_arena():
    from refquant import _dispatch
    from refquant.executor import release_buffers
    from refquant.graph import Model, Op, TensorSpec
    m = Model([Op("relu", ["x"], ["a"]), Op("relu", ["a"], ["y"])], {}, [TensorSpec("x", (None, 1 << 17))], ["y"])
    m.run({"x": np.ones((1, 1 << 17), np.float32)})
    release_buffers()
    fast = _dispatch.compiled("floatops")
    assert fast is None or fast.arena_stats()["cached_bytes"] == 0
