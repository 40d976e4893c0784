"""Hostile window geometry and attributes: regression tests for inputs that crashed, hung or misreported.

Strides, paddings, dilations and kernel sizes near 2**63 used to overflow the kernels' ``ptrdiff_t`` index
arithmetic (out-of-bounds reads and writes, ``free(): invalid pointer``, garbage), reached through
``refquant.load`` + ``run``, ``refquant.import_onnx`` + ``run`` and the compiled kernels called directly. Every
such value is now bounded by one validator (:func:`refquant.reference.im2col.check_geometry`) and op attributes
are checked when a model is built, loaded or imported.

The crash-prone cases run in one child interpreter, each in a forked process of it (see :func:`_run_isolated`),
so a regression that segfaults fails its test instead of killing pytest; each case must raise the named error.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import refquant
from refquant import Model, Op, TensorSpec
from refquant.errors import GraphError, ModelFormatError, ShapeError
from refquant.ops import pool

BIG = 3 * 2**61          # a stride near 2**63
PAD = 2**62 + 1          # a padding whose sum with an index wraps ptrdiff_t

# name -> (setup-free Python snippet, the exception class name it must raise). Each snippet runs in a fresh fork
# of a child interpreter that has imported numpy as np, refquant and refquant._dispatch.compiled.
CASES = {
    # the example of the report: a conv2d saved with these attributes, loaded and run on a 1x1x1x1 input
    "load_conv2d_huge_stride_padding": ("""
        from refquant.io.format import from_bytes, to_bytes
        good = refquant.Model([refquant.Op("conv2d", ["x", "w"], ["y"], {}, "c")],
                              {"w": np.ones((1, 1, 1, 1), np.float32)}, [refquant.TensorSpec("x", (1, 1, 1, 1))], ["y"])
        blob = rewrite_attrs(to_bytes(good), {"strides": [1, BIG], "paddings": [0, PAD, 0, 0]})
        model = from_bytes(blob)
        model.run({"x": np.ones((1, 1, 1, 1), np.float32)})
        """, "ModelFormatError"),
    "import_onnx_conv_huge_pads": ("""
        import onnx
        from onnx import helper, TensorProto, numpy_helper
        w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
        node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[1, BIG], pads=[0, PAD, 0, 0])
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
        blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
        model = refquant.import_onnx(blob)
        model.run({"x": np.ones((1, 1, 1, 1), np.float32)})
        """, "RefquantError"),
    "im2col_float_huge_stride_padding": ("""
        k = compiled("im2col")
        k.im2col(np.ones((1, 1, 1, 1), np.float32), 1, 1, (1, BIG), (0, PAD, 0, 0))
        """, "ShapeError"),
    "im2col_float_negative_right_cancels_left": ("""
        # accepted by the compiled kernel while its twin tried to pad by 2**62
        k = compiled("im2col")
        k.im2col(np.ones((1, 1, 4, 4), np.float32), 1, 2, (1, 1), (0, 2**62, 0, -2**62))
        """, "ShapeError"),
    "col2im_float_wrapped_grid": ("""
        # OH * OW = (2**32 + 1) * (2**32 - 1) wrapped to -1, which reshape took as "infer": reads past the columns
        k = compiled("im2col")
        k.col2im(np.ones((1, 1, 1), np.float32), (1, 1, 1, 1), 1, 1, (1, 1), (2**32, 2**32 - 2, 0, 0))
        """, "ShapeError"),
    "im2col_u8_wrapping_allocation": ("""
        # N * OH * OW = 16 * (2**60 + 1) wrapped to 16 rows, then rows of 2**60 + 1 pixels written into them
        k = compiled("qdirect")
        k.im2col_u8(np.ones((1, 1, 1, 1), np.uint8), 1, 1, (1, 1), (15, 2**60, 0, 0))
        """, "ShapeError"),
    "im2col_u8_fast_path_wrap": ("""
        # iw0 + (kw-1)*dw = (2**63 - 1) + 1 wrapped negative and passed the whole-row copy test
        k = compiled("qdirect")
        k.im2col_u8(np.ones((1, 1, 2, 1), np.uint8), 1, 2, (1, 2**63 - 1), (0, 0, 0, 2**63 - 1))
        """, "ShapeError"),
    "depthwise_u8_interior_wrap": ("""
        # accepted by the compiled kernel (its twin failed): a dilated window of span 2**62
        k = compiled("qdirect")
        x = np.ones((1, 4, 64, 32), np.uint8)
        w = np.ones((1, 2, 32), np.int8)
        k.depthwise_conv_u8s8(x, w, stride=(1, 1), padding=(0, 2**62, 0, 0), dilation=(1, 2**62), scale=1.0)
        """, "ShapeError"),
    "im2col_u8_read_only_out": ("""
        k = compiled("qdirect")
        buf = bytes(16)
        out = np.frombuffer(buf, np.uint8).reshape(16, 1)
        try:
            k.im2col_u8(np.full((1, 4, 4, 1), 7, np.uint8), 1, 1, out=out)
        finally:
            assert buf == bytes(16), "the immutable bytes object was written"
        """, "ValueError"),
    "conv2d_int8_op_wrapping_im2col": ("""
        from refquant.ops import int8
        from refquant.ops.registry import OpContext
        from refquant.reference import qgemm
        w = np.ones((1, 1), np.int8)
        attrs = {"ksize": [1, 1], "strides": [1, 1], "paddings": [15, 2**60, 0, 0], "dilations": [1, 1],
                 "K": 1, "N": 1, "out_dtype": "u8"}
        int8.conv2d_int8(OpContext(), attrs, np.ones((1, 1, 1, 1), np.uint8), qgemm.pack_b(w), qgemm.col_sums(w),
                         np.zeros(1, np.int32), np.ones(1, np.float32))
        """, "ShapeError"),
}

PRELUDE = """
import json, struct, zlib
import numpy as np
import refquant
from refquant._dispatch import compiled
BIG, PAD = 3 * 2**61, 2**62 + 1

def rewrite_header(blob, edit):
    # a model file with edit(header dict) applied and its length and checksum recomputed (a crafted file)
    n = struct.unpack_from("<Q", blob, 12)[0]
    header = json.loads(blob[20:20 + n])
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    head = blob[:12] + struct.pack("<Q", len(new)) + new
    body = head + b"\\0" * ((-len(head)) % 64) + blob[20 + n + (-(20 + n)) % 64:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def rewrite_attrs(blob, attrs):
    # the file of a one-op model with that op's attributes replaced
    return rewrite_header(blob, lambda h: h["graph"]["ops"][0].update(attrs=attrs))
"""

RUNNER = PRELUDE + """
import os, signal, sys
cases = json.loads(sys.stdin.read())
results = {}
for name, code in cases.items():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        signal.alarm(60)
        try:
            exec(code, dict(globals()))
            out = {"outcome": "returned"}
        except BaseException as exc:
            out = {"outcome": "raised", "types": [t.__name__ for t in type(exc).__mro__], "message": str(exc)[:300]}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        results[name] = {"outcome": "signal", "signal": os.WTERMSIG(status)}
    else:
        results[name] = json.loads(data) if data else {"outcome": "no report", "status": status}
print(json.dumps(results))
"""


def _run_isolated(cases: dict) -> dict:
    """Run each snippet in its own fork of one child interpreter: name -> {"outcome": "returned" | "raised" (with the
    exception's class names and message) | "signal" (the number)}."""
    code = {name: textwrap.dedent(snippet) for name, snippet in cases.items()}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(code), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def isolated_results():
    if refquant._dispatch.compiled("qdirect") is None or refquant._dispatch.compiled("im2col") is None:
        pytest.skip("compiled kernels not built (or REFQUANT_FORCE_REFERENCE)")
    return _run_isolated({name: snippet for name, (snippet, _) in CASES.items()})


@pytest.mark.parametrize("name", sorted(CASES))
def test_crash_prone_case_raises_a_clear_error(isolated_results, name):
    got, want = isolated_results[name], CASES[name][1]
    assert got["outcome"] == "raised", f"{name}: {got}"
    assert want in got["types"], f"{name}: expected {want}, got {got}"


# ---- in-process: the shared validator and the load-time checks --------------------------------------------
def _one_op_model(op_type, attrs, inputs=("x",), params=None, x_shape=(1, 1, 4, 4), dtype="float32"):
    return Model([Op(op_type, list(inputs), ["y"], attrs, "node_0")], params or {},
                 [TensorSpec("x", x_shape, dtype)], ["y"])


@pytest.mark.parametrize("attrs", [
    {"strides": [1, BIG]},
    {"paddings": [0, PAD, 0, 0]},
    {"paddings": [0, 0, 0, -1]},            # a negative padding is not a conv2d attribute
    {"dilations": [2**40, 1]},
    {"strides": [1.5, 1]},
    {"strides": ["1", 1]},
    {"paddings": [float("nan"), 0, 0, 0]},
    {"paddings": [0, 0, 0]},
    {"groups": 0},
])
def test_conv2d_bad_geometry_attributes_fail_when_the_model_is_built(attrs):
    w = {"w": np.ones((1, 1, 1, 1), np.float32)}
    with pytest.raises(GraphError, match=r"node_0.*conv2d"):
        _one_op_model("conv2d", attrs, ("x", "w"), w)


def test_load_rejects_bad_attributes_naming_the_op():
    good = _one_op_model("conv2d", {}, ("x", "w"), {"w": np.ones((1, 1, 1, 1), np.float32)})
    blob = refquant.io.format.to_bytes(good)
    ns = {}
    exec(PRELUDE, ns)
    with pytest.raises(ModelFormatError, match=r"'node_0' \(conv2d\).*stride"):
        refquant.io.format.from_bytes(ns["rewrite_attrs"](blob, {"strides": [1, BIG]}))


@pytest.mark.parametrize("op_type,attrs,inputs,match", [
    ("matmul_int8", {"N": 4}, ("x", "p", "c", "b", "m"), "'K'"),
    ("conv2d_int8", {"ksize": [1, 1], "strides": [1, 1], "paddings": [0, 0, 0], "dilations": [1, 1], "K": 1, "N": 1},
     ("x", "p", "c", "b", "m"), "paddings"),
    ("quantize_int8", {"scale_inv": 1.0, "zero": 0, "lo": 0}, ("x",), "'hi'"),
    ("mul", {"x_num_col_dims": "two"}, ("x", "x"), "x_num_col_dims"),
    ("pool2d", {"strides": [1, 1]}, ("x",), "'ksize'"),
    ("pool2d", {"ksize": [2, 2], "pooling_type": "median"}, ("x",), "pooling_type"),
    ("conv2d_transpose", {"strides": [2, 2], "output_padding": [2, 0]}, ("x", "x"), "output_padding"),
    ("unsqueeze", {}, ("x",), "'axes'"),
    ("cast", {"dtype": "object"}, ("x",), "dtype"),
    ("transpose", {"perm": [0, 0, 1, 2]}, ("x",), "perm"),
    ("conv2d", {}, ("x",), "inputs"),        # the filter input is missing
])
def test_missing_or_bad_required_attributes_fail_at_build(op_type, attrs, inputs, match):
    with pytest.raises(GraphError, match=match):
        Model([Op(op_type, list(inputs), ["y"], attrs, "node_0")], {}, [TensorSpec("x", (1, 1, 4, 4))], ["y"])


@pytest.mark.parametrize("dtype", ["", "object", "float128", "not-a-dtype", None])
def test_load_rejects_input_dtypes_it_cannot_run(dtype):
    ns = {}
    exec(PRELUDE, ns)
    blob = ns["rewrite_header"](refquant.io.format.to_bytes(_one_op_model("relu", {})),
                                lambda h: h["graph"]["inputs"][0].update(dtype=dtype))
    with pytest.raises(ModelFormatError, match="dtype"):
        refquant.io.format.from_bytes(blob)


@pytest.mark.parametrize("impl", ["twin", "compiled"])
def test_im2col_twin_and_compiled_reject_the_same_geometry(impl):
    from refquant.reference import im2col as twin
    k = twin if impl == "twin" else refquant._dispatch.compiled("im2col")
    if k is None:
        pytest.skip("im2col extension not built")
    x = np.ones((1, 1, 4, 4), np.float32)
    for args in [(1, 1, (1, BIG)), (1, 1, (1, 1), (0, PAD, 0, 0)), (2**31, 1), (1, 1, (1, 1), (0, 0, 0, 0), (2**31, 1)),
                 (6, 1), (1, 1, (1, 1), (0, -1, 0, 0))]:
        with pytest.raises(ShapeError):
            k.im2col(x, *args)
    # negative bottom / right paddings (internal callers: ceil-mode pools, output_padding) keep working
    assert k.im2col(x, 2, 2, (2, 2), (0, 0, -1, -1)).shape == (1, 4, 1)


def test_pool_window_far_larger_than_the_input_visits_only_taps_that_read_it():
    # a 1 x 3,000,000 average over an 8 x 8 map (valid with that padding): 3,000,000 taps were visited, each a
    # strided pass over a padded 8 x 3,000,008 copy (19 s); only those that read the input count
    k, s, lo, size, out = 3_000_000, 1, 1_500_000, 8, 9
    taps = pool._axis_taps(k, s, lo, size, out)
    assert 0 < len(taps) <= size + out - 1
    attrs = {"pooling_type": "avg", "ksize": [1, k], "strides": [1, s], "paddings": [0, lo, 0, lo]}
    x = np.arange(64, dtype=np.float64).reshape(1, 1, 8, 8)
    y = pool.pool2d(refquant.ops.OpContext(), attrs, x)
    assert y.shape == (1, 1, 8, 9)
    # output q covers input columns [q + 0 - lo, q + k - 1 - lo] ∩ [0, 8): all 8 columns, for every q
    np.testing.assert_allclose(y, np.broadcast_to(x.mean(axis=3, keepdims=True), y.shape))
    inclusive = pool.pool2d(refquant.ops.OpContext(), {**attrs, "exclusive": False}, x)
    np.testing.assert_allclose(inclusive, y * 8 / k)


def test_pool_window_that_cannot_fit_is_rejected():
    attrs = {"pooling_type": "avg", "ksize": [1, 3_000_000]}
    with pytest.raises(ShapeError, match="does not fit"):
        pool.pool2d(refquant.ops.OpContext(), attrs, np.ones((1, 1, 8, 8), np.float32))


def test_kl_best_index_rejects_mismatched_lengths():
    k = refquant._dispatch.compiled("kl")
    if k is None:
        pytest.skip("kl extension not built")
    with pytest.raises(ValueError, match="one length"):
        k.best_index(np.zeros(4096), np.zeros(1, np.int8))


def test_histogram_edges_rejected_alike_by_twin_and_compiled():
    from refquant.reference import histogram as twin
    fast = refquant._dispatch.compiled("histogram")
    x = np.linspace(0, 1, 100).astype(np.float32)
    for edges in (np.array([0.0, 1.0, 0.5]), np.array([0.0, np.nan, 1.0]), np.array([1.0])):
        for impl in (twin, fast):
            if impl is None:
                continue
            with pytest.raises(ValueError):
                impl.histogram_abs(x, edges)


def test_qgemm_out_may_not_overlap_a():
    from refquant.reference import qgemm as twin
    fast = refquant._dispatch.compiled("qgemm")
    w = np.eye(8, dtype=np.int8)
    packed = twin.pack_b(w)
    buf = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for impl in (twin, fast):
        if impl is None:
            continue
        with pytest.raises(ValueError, match="overlaps"):
            impl.gemm_u8s8(buf, packed, 8, 8, scale=np.ones(8, np.float32), out_dtype="u8", out=buf)


def test_cli_quantize_of_a_hostile_model_reports_an_error(tmp_path):
    good = _one_op_model("conv2d", {}, ("x", "w"), {"w": np.ones((1, 1, 1, 1), np.float32)})
    ns = {}
    exec(PRELUDE, ns)
    path = tmp_path / "hostile.rq"
    path.write_bytes(ns["rewrite_attrs"](refquant.io.format.to_bytes(good), {"strides": [1, BIG],
                                                                              "paddings": [0, PAD, 0, 0]}))
    proc = subprocess.run([sys.executable, "-m", "refquant.cli", "quantize", str(path), "--out",
                           str(tmp_path / "out.rq")], capture_output=True, text=True, timeout=300)
    assert proc.returncode not in (0,) and proc.returncode > 0, (proc.returncode, proc.stderr[-2000:])
    assert "conv2d" in proc.stderr + proc.stdout


def test_onnx_average_pool_with_a_huge_same_window_runs_on_the_input_only():
    # a 1 x 3,000,000 AveragePool with auto_pad SAME_UPPER on an 8 x 8 map: every window holds the whole row
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[1, 3_000_000], auto_pad="SAME_UPPER")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    assert len(blob) < 160 and onnx is not None
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    y = refquant.import_onnx(blob).run({"x": x})["y"]
    np.testing.assert_allclose(y, np.broadcast_to(x.mean(axis=3, keepdims=True), (1, 1, 8, 8)), rtol=1e-6)


def test_remembered_geometries_still_check_what_they_do_not_match():
    """check_geometry remembers results for tuples of plain ints: a bool, a float or a NumPy integer equal to a
    remembered value is still checked (and a bool still refused), and a failing geometry raises every time."""
    from refquant.reference.im2col import check_geometry
    args = ((9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    assert check_geometry("a", *args, min_out=1) == check_geometry("b", *args, min_out=1) == (9, 9)
    with pytest.raises(ShapeError, match="stride must be an int"):
        check_geometry("c", (9, 9), (3, 3), (True, True), (1, 1, 1, 1), (1, 1), min_out=1)
    assert check_geometry("d", (9, 9), (3, 3), (1.0, 1), (np.int64(1), 1, 1, 1), (1, 1), min_out=1) == (9, 9)
    for _ in range(2):
        with pytest.raises(ShapeError, match="^e: kernel"):
            check_geometry("e", (2, 2), (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), min_out=1)
