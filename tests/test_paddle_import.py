"""refquant.import_paddle: Paddle inference models read without Paddle.

Two kinds of tests:

* crafted programs, written here by a small protobuf encoder (:func:`program`, :func:`params_file`), with results
  checked against NumPy computations of Paddle's op definitions (padding order, in-place ops, feed / fetch order,
  the freeze form of a quantized mul, the parameter file layout and its errors);
* the committed Paddle 3.3.1 fixtures of ``tests/data/paddle_models`` (made by its ``make_models.py``): every
  variant imports, runs to Paddle's saved output (FP32 within 1e-5 relative, quantized within one step of the
  output's quantization grid), and quantized variants give Paddle's scales as :func:`refquant.quant.thresholds`
  and deploy with :func:`refquant.deploy.convert_to_int8`.

A last test regenerates the fixtures with Paddle (``REFQUANT_PADDLE_PYTHON``, or this python if it imports
paddle) and checks that the committed outputs are reproduced; it skips without Paddle.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import refquant
import refquant.quant
from refquant.deploy import convert_to_int8
from refquant.errors import ModelFormatError, UnsupportedOpError

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "data", "paddle_models")

# ---- a protobuf encoder for framework.proto (the test side of refquant.io.paddle.protowire) --------------------
F32, I64, I32, INT8 = 5, 3, 2, 21
A_INT, A_FLOAT, A_STRING, A_INTS, A_FLOATS, A_BOOLEAN = 0, 1, 2, 3, 4, 6


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number: int, value) -> bytes:
    """One field: an int as a varint, a float as fixed32, bytes / str length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, float):
        return varint(number << 3 | 5) + struct.pack("<f", value)
    data = value.encode() if isinstance(value, str) else bytes(value)
    return varint(number << 3 | 2) + varint(len(data)) + data


def attr(name: str, value) -> bytes:
    if isinstance(value, bool):
        return field(1, name) + field(2, A_BOOLEAN) + field(10, value)
    if isinstance(value, int):
        return field(1, name) + field(2, A_INT) + field(3, value)
    if isinstance(value, float):
        return field(1, name) + field(2, A_FLOAT) + field(4, value)
    if isinstance(value, str):
        return field(1, name) + field(2, A_STRING) + field(5, value)
    if all(isinstance(v, int) for v in value):
        return field(1, name) + field(2, A_INTS) + b"".join(field(6, v) for v in value)
    return field(1, name) + field(2, A_FLOATS) + b"".join(field(7, float(v)) for v in value)


def tensor_desc(dtype: int, dims) -> bytes:
    return field(1, dtype) + b"".join(field(2, d) for d in dims)


def var(name: str, dims, dtype: int = F32, persistable: bool = False) -> bytes:
    vtype = field(1, 7) + field(3, field(1, tensor_desc(dtype, dims)))
    return field(1, name) + field(2, vtype) + field(3, persistable)


def op(type_: str, inputs: dict, outputs: dict, attrs: dict | None = None) -> bytes:
    def slots(number, d):
        return b"".join(field(number, field(1, k) + b"".join(field(2, a) for a in v)) for k, v in d.items())
    return field(3, type_) + slots(1, inputs) + slots(2, outputs) + b"".join(
        field(4, attr(k, v)) for k, v in (attrs or {}).items())


def program(variables, ops, feeds=("x",), fetches=("y",)) -> bytes:
    """A ProgramDesc of one block: ``variables`` are var() encodings, feed / fetch ops are added."""
    io_vars = [field(1, "feed") + field(2, field(1, 9)) + field(3, True),
               field(1, "fetch") + field(2, field(1, 10)) + field(3, True)]
    all_ops = [op("feed", {"X": ["feed"]}, {"Out": [f]}, {"col": i}) for i, f in enumerate(feeds)] + list(ops) + \
        [op("fetch", {"X": [f]}, {"Out": ["fetch"]}, {"col": i}) for i, f in enumerate(fetches)]
    block = field(1, 0) + field(2, -1) + b"".join(field(3, v) for v in list(variables) + io_vars) + \
        b"".join(field(4, o) for o in all_ops)
    return field(1, block) + field(4, field(1, 3003001))


def tensor_record(arr: np.ndarray) -> bytes:
    """One tensor as Paddle's SerializeToStream writes it."""
    code = {np.dtype("float32"): F32, np.dtype("int64"): I64, np.dtype("int32"): I32, np.dtype("int8"): INT8}[arr.dtype]
    desc = tensor_desc(code, arr.shape)
    return struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", len(desc)) + desc + arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def params_file(params: dict) -> bytes:
    return b"".join(tensor_record(np.asarray(params[k])) for k in sorted(params))


def write_model(directory, prog: bytes, params: dict, stem: str = "model") -> str:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{stem}.pdmodel"), "wb") as f:
        f.write(prog)
    with open(os.path.join(directory, f"{stem}.pdiparams"), "wb") as f:
        f.write(params_file(params))
    return os.path.join(directory, stem)


# ---- a crafted CNN -------------------------------------------------------------------------------------------
def crafted_cnn(seed: int = 0):
    """conv2d (Paddle's asymmetric [top, bottom, left, right] paddings) -> bias -> in-place relu -> avg pool2d ->
    flatten -> mul -> bias -> scale -> leaky_relu -> softmax; returns (program bytes, params)."""
    rng = np.random.default_rng(seed)
    params = {"conv.w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.5,
              "conv.b": rng.standard_normal(4).astype(np.float32),
              "fc.w": rng.standard_normal((16, 3)).astype(np.float32) * 0.3,
              "fc.b": rng.standard_normal(3).astype(np.float32)}
    variables = [var("x", [-1, 2, 5, 5]), var("c", [-1, 4, 4, 4]), var("cb", [-1, 4, 4, 4]),
                 var("p", [-1, 4, 2, 2]), var("f", [-1, 16]), var("m", [-1, 3]), var("mb", [-1, 3]),
                 var("s", [-1, 3]), var("l", [-1, 3]), var("y", [-1, 3])] + \
        [var(k, v.shape, persistable=True) for k, v in params.items()]
    ops = [
        op("conv2d", {"Input": ["x"], "Filter": ["conv.w"]}, {"Output": ["c"]},
           {"strides": [1, 1], "paddings": [1, 0, 0, 1], "dilations": [1, 1], "groups": 1,
            "padding_algorithm": "EXPLICIT", "data_format": "NCHW"}),
        op("elementwise_add", {"X": ["c"], "Y": ["conv.b"]}, {"Out": ["cb"]}, {"axis": 1}),
        op("relu", {"X": ["cb"]}, {"Out": ["cb"]}),                     # in place: cb is written twice
        op("pool2d", {"X": ["cb"]}, {"Out": ["p"]}, {"pooling_type": "avg", "ksize": [2, 2], "strides": [2, 2],
                                                     "paddings": [0, 0], "exclusive": True, "global_pooling": False,
                                                     "ceil_mode": False, "adaptive": False}),
        op("flatten_contiguous_range", {"X": ["p"]}, {"Out": ["f"], "XShape": []}, {"start_axis": 1, "stop_axis": 3}),
        op("mul", {"X": ["f"], "Y": ["fc.w"]}, {"Out": ["m"]}, {"x_num_col_dims": 1, "y_num_col_dims": 1}),
        op("elementwise_add", {"X": ["m"], "Y": ["fc.b"]}, {"Out": ["mb"]}, {"axis": 1}),
        op("scale", {"X": ["mb"]}, {"Out": ["s"]}, {"scale": 2.0, "bias": 0.5, "bias_after_scale": False}),
        op("leaky_relu", {"X": ["s"]}, {"Out": ["l"]}, {"alpha": 0.1}),
        op("softmax", {"X": ["l"]}, {"Out": ["y"]}, {"axis": -1}),
    ]
    return program(variables, ops), params


def reference_cnn(params, x):
    """Paddle's definitions in NumPy (float64)."""
    w = params["conv.w"].astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 0), (0, 1)))   # top 1, bottom 0, left 0, right 1
    n, oh, ow = x.shape[0], xp.shape[2] - 2, xp.shape[3] - 2
    c = np.zeros((n, 4, oh, ow))
    for i in range(oh):
        for j in range(ow):
            c[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], w)
    c = np.maximum(c + params["conv.b"][None, :, None, None], 0)
    p = c.reshape(n, 4, 2, 2, 2, 2).mean(axis=(3, 5))
    m = p.reshape(n, -1) @ params["fc.w"] + params["fc.b"]
    s = 2.0 * (m + 0.5)
    l_ = np.where(s > 0, s, 0.1 * s)
    e = np.exp(l_ - l_.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_crafted_cnn_matches_paddle_definitions(tmp_path):
    prog, params = crafted_cnn()
    prefix = write_model(tmp_path, prog, params)
    m = refquant.import_paddle(prefix)
    assert m.inputs == ["x"] and m.input_specs[0].shape == (None, 2, 5, 5)
    conv = next(o for o in m.ops if o.type == "conv2d")
    assert conv.attrs["paddings"] == [1, 0, 0, 1]          # [top, left, bottom, right] from Paddle's [t, b, l, r]
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    y = m.run({"x": x})[m.outputs[0]]
    np.testing.assert_allclose(y, reference_cnn(params, x), rtol=1e-5, atol=1e-6)
    # the same model through a directory, the program file and explicit names
    for kwargs in ({"path": tmp_path}, {"path": prefix + ".pdmodel"},
                   {"path": tmp_path, "model_filename": "model.pdmodel", "params_filename": "model.pdiparams"}):
        m2 = refquant.import_paddle(kwargs.pop("path"), **kwargs)
        np.testing.assert_array_equal(m2.run({"x": x})[m2.outputs[0]], y)
    assert refquant.io.import_paddle(prefix, name="net").name == "net"


def test_parameters_are_read_in_sorted_name_order(tmp_path):
    prog, params = crafted_cnn()
    prefix = write_model(tmp_path, prog, params)
    m = refquant.import_paddle(prefix)
    for k in ("conv.w", "fc.w"):
        np.testing.assert_array_equal(m.params[k], params[k])
    # the same tensors in another order do not fit the declared dims
    with open(prefix + ".pdiparams", "wb") as f:
        f.write(b"".join(tensor_record(params[k]) for k in reversed(sorted(params))))
    with pytest.raises(ModelFormatError, match="dims"):
        refquant.import_paddle(prefix)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-3], "truncated|left"),
    (lambda b: b + b"\0", "bytes after the last tensor"),
    (lambda b: struct.pack("<I", 7) + b[4:], "version"),
    (lambda b: b[:4] + struct.pack("<Q", 1 << 60) + b[12:], "LoD"),
    (lambda b: b[:16] + struct.pack("<i", -5) + b[20:], "TensorDesc"),
])
def test_damaged_parameter_files_are_model_format_errors(tmp_path, damage, match):
    prog, params = crafted_cnn()
    prefix = write_model(tmp_path, prog, params)
    with open(prefix + ".pdiparams", "rb") as f:
        data = f.read()
    with open(prefix + ".pdiparams", "wb") as f:
        f.write(damage(data))
    with pytest.raises(ModelFormatError, match=match):
        refquant.import_paddle(prefix)


def test_missing_files_and_unknown_ops(tmp_path):
    prog, params = crafted_cnn()
    prefix = write_model(tmp_path, prog, params)
    os.remove(prefix + ".pdiparams")
    with pytest.raises(FileNotFoundError, match="pdiparams"):
        refquant.import_paddle(prefix)
    with pytest.raises(FileNotFoundError):
        refquant.import_paddle(tmp_path / "nothing")
    bad = program([var("x", [-1, 3]), var("y", [-1, 3])], [op("frobnicate", {"X": ["x"]}, {"Out": ["y"]})])
    p2 = write_model(tmp_path / "b", bad, {})
    with pytest.raises(UnsupportedOpError, match="frobnicate"):
        refquant.import_paddle(p2)
    with pytest.raises(ModelFormatError):
        refquant.import_paddle(write_model(tmp_path / "c", b"\x0a\xff\xff\xff\x0f", {}))


def test_freeze_form_mul_imports_as_refquant_quantized_model(tmp_path):
    """x -> fake_quantize_range_abs_max -> mul(integer weight) -> fake_channel_wise_dequantize_max_abs: the
    refquant form has a quant-dequant on x and the weight stored as q * T_c / 127, with Paddle's scales."""
    rng = np.random.default_rng(3)
    q_w = rng.integers(-127, 128, (6, 4)).astype(np.float32)
    t_w = np.array([0.5, 0.25, 1.0, 0.125], np.float32)
    t_x = np.float32(2.0)
    params = {"w": q_w, "x@scale": np.array([t_x], np.float32), "channel_scale_0": t_w}
    variables = [var("x", [-1, 6]), var("x.quantized", [-1, 6]), var("m", [-1, 4]), var("y", [-1, 4]),
                 var("w", [6, 4], persistable=True), var("x@scale", [1], persistable=True),
                 var("channel_scale_0", [4], persistable=True)]
    ops = [op("fake_quantize_range_abs_max", {"X": ["x"], "InScale": ["x@scale"], "Iter": []},
              {"Out": ["x.quantized"], "OutScale": ["x@scale"], "OutScales": []},
              {"bit_length": 8, "is_test": True, "window_size": 10000}),
           op("mul", {"X": ["x.quantized"], "Y": ["w"]}, {"Out": ["m"]},
              {"x_num_col_dims": 1, "y_num_col_dims": 1, "quantization_type": "post_abs_max",
               "out_threshold": 3.5}),
           op("fake_channel_wise_dequantize_max_abs", {"X": ["m"], "Scales": ["channel_scale_0", "x@scale"]},
              {"Out": ["y"]}, {"quant_axis": 1, "quant_bits": [8, 8], "x_num_col_dims": 1})]
    m = refquant.import_paddle(write_model(tmp_path, program(variables, ops), params))
    t = refquant.quant.thresholds(m)
    assert t["x"] == pytest.approx(2.0) and t["m"] == pytest.approx(3.5)
    np.testing.assert_array_equal(t["w"], t_w)
    assert m.meta["quantization"]["method"] == "paddle_import"
    assert [o.type for o in m.ops] == ["fake_quantize_dequantize_abs_max", "mul"]
    x = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
    q_x = np.clip(np.sign(x) * np.floor(np.abs(x) / t_x * 127 + 0.5), -127, 127)    # round half away
    paddle_y = (q_x.astype(np.float64) @ q_w) * t_w * t_x / (127 * 127)
    y = m.run({"x": x})[m.outputs[0]]
    np.testing.assert_allclose(y, paddle_y, rtol=1e-5, atol=1e-5)
    i8 = convert_to_int8(m)
    assert any(o.type == "matmul_int8" for o in i8.ops)
    np.testing.assert_allclose(i8.run({"x": x})[i8.outputs[0]], paddle_y, rtol=1e-4, atol=1e-4)


# ---- the committed Paddle fixtures ---------------------------------------------------------------------------
def _variants():
    if not os.path.isdir(FIXTURES):
        return []
    out = []
    for model in sorted(os.listdir(FIXTURES)):
        mdir = os.path.join(FIXTURES, model)
        if not os.path.isfile(os.path.join(mdir, "io.npz")):
            continue
        for variant in sorted(os.listdir(mdir)):
            if os.path.isdir(os.path.join(mdir, variant)):
                out.append((model, variant))
    return out


VARIANTS = _variants()
needs_fixtures = pytest.mark.skipif(not VARIANTS, reason="tests/data/paddle_models holds no fixtures")


_INVENTORY_PATH = os.path.join(FIXTURES, "inventory.json")
INVENTORY = {}
if os.path.isfile(_INVENTORY_PATH):
    with open(_INVENTORY_PATH) as _f:
        INVENTORY = json.load(_f)


def _reference_variant(model, variant):
    """The variant whose stored Paddle outputs this one must reproduce: itself, or for ``ocrhead/ptq_pir`` (which
    Paddle 3.3.1 runs wrongly, see the inventory's ``paddle_output``) the ``ptq_onnx`` program it was translated
    from."""
    return "ptq_onnx" if "paddle_output" in INVENTORY[model]["variants"][variant] else variant


def _is_onnx_format(model, variant):
    """onnx_format programs quantize with quantize_linear / dequantize_linear ops (legacy or PIR names)."""
    return any(op.split(".")[-1] in ("quantize_linear", "dequantize_linear")
               for op in INVENTORY[model]["variants"][variant]["ops"])


def _outputs(io, variant, n):
    if f"out_{variant}" in io.files:
        return [io[f"out_{variant}"]]
    return [io[f"out_{variant}_{i}"] for i in range(n)]


def _grid_tolerance(m, name, ref):
    """One step of the output's quantization grid (its threshold / 127), or of max|ref| / 127 when the output has
    no threshold, plus float slack."""
    t = m.meta.get("quantization", {}).get("activation_thresholds", {}).get(name)
    step = (t if t else float(np.abs(ref).max())) / 127.0
    return step * 1.01 + 1e-6


@needs_fixtures
@pytest.mark.parametrize("model, variant", VARIANTS, ids=[f"{a}-{b}" for a, b in VARIANTS])
def test_fixture_imports_and_matches_paddle(model, variant):
    m = refquant.import_paddle(os.path.join(FIXTURES, model, variant))
    io = np.load(os.path.join(FIXTURES, model, "io.npz"))
    outs = m.run({m.inputs[0]: io["x"]})
    refs = _outputs(io, _reference_variant(model, variant), len(m.outputs))
    assert len(refs) == len(m.outputs)
    quantized = "quantization" in m.meta
    for name, ref in zip(m.outputs, refs):
        got = outs[name]
        assert got.shape == ref.shape
        if quantized:
            err = float(np.abs(got.astype(np.float64) - ref).max())
            assert err <= _grid_tolerance(m, name, ref), (name, err)
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    assert quantized == os.path.isfile(os.path.join(FIXTURES, model, variant, "scales.json"))


QUANT_VARIANTS = [(a, b) for a, b in VARIANTS if os.path.isfile(os.path.join(FIXTURES, a, b, "scales.json"))]


@needs_fixtures
@pytest.mark.parametrize("model, variant", QUANT_VARIANTS, ids=[f"{a}-{b}" for a, b in QUANT_VARIANTS])
def test_fixture_thresholds_are_paddles_scales(model, variant):
    m = refquant.import_paddle(os.path.join(FIXTURES, model, variant))
    with open(os.path.join(FIXTURES, model, variant, "scales.json")) as f:
        scales = json.load(f)
    t = refquant.quant.thresholds(m)
    info = m.meta["quantization"]
    assert info["method"] == "paddle_import" and info["onnx_format"] == _is_onnx_format(model, variant)
    checked = 0
    for name, entries in scales["activations"].items():
        from_ops = [e["threshold"] for e in entries if "tensor" in e and not e.get("only_observer")]
        for value in from_ops:
            assert t[name] == pytest.approx(value, rel=1e-6), name
            checked += 1
        if name in t:   # attribute thresholds: one of the recorded values
            assert any(t[name] == pytest.approx(e["threshold"], rel=1e-6) for e in entries), name
    for name, entries in scales["weights"].items():
        np.testing.assert_allclose(t[name], np.asarray(entries[0]["thresholds"], np.float32).reshape(-1),
                                   rtol=1e-6)
        checked += 1
    assert checked > 0
    i8 = convert_to_int8(m)
    assert any(o.type.endswith("_int8") and o.type != "quantize_int8" for o in i8.ops)
    io = np.load(os.path.join(FIXTURES, model, "io.npz"))
    got = i8.run({m.inputs[0]: io["x"]})
    fq = m.run({m.inputs[0]: io["x"]})
    for name in m.outputs:
        assert np.all(np.isfinite(got[name]))
        assert float(np.abs(got[name] - fq[name]).max()) <= 4 * _grid_tolerance(m, name, fq[name]) + 1e-3


# ---- regenerating the fixtures with Paddle --------------------------------------------------------------------
def _paddle_python():
    env = os.environ.get("REFQUANT_PADDLE_PYTHON")
    if env:
        return env
    try:
        import paddle  # noqa: F401
    except Exception:
        return None
    return sys.executable


@needs_fixtures
@pytest.mark.skipif(_paddle_python() is None, reason="no Paddle: set REFQUANT_PADDLE_PYTHON to a python with paddle")
def test_fixtures_are_reproduced_by_make_models(tmp_path):
    out = tmp_path / "models"
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    subprocess.run([_paddle_python(), os.path.join(FIXTURES, "make_models.py"), "--out", str(out),
                    "--models", "cnn"], check=True, env=env, timeout=900, capture_output=True)
    old, new = np.load(os.path.join(FIXTURES, "cnn", "io.npz")), np.load(out / "cnn" / "io.npz")
    np.testing.assert_array_equal(old["x"], new["x"])
    for key in old.files:
        if key.startswith("out_"):
            np.testing.assert_allclose(new[key], old[key], rtol=1e-5, atol=1e-6)
    for variant in os.listdir(out / "cnn"):
        if (out / "cnn" / variant).is_dir():
            m = refquant.import_paddle(str(out / "cnn" / variant))
            ref = new[f"out_{variant}"]
            got = m.run({m.inputs[0]: new["x"]})[m.outputs[0]]
            assert float(np.abs(got - ref).max()) <= _grid_tolerance(m, m.outputs[0], ref)
    shutil.rmtree(out)


@needs_fixtures
def test_layer_report_reads_an_imported_paddle_model():
    """`refquant.quant.report.layer_report` takes a PaddleSlim model and the FP32 model it was made from."""
    from refquant.quant.report import layer_report
    fp32 = refquant.import_paddle(os.path.join(FIXTURES, "cnn", "fp32"))
    q = refquant.import_paddle(os.path.join(FIXTURES, "cnn", "ptq"))
    io = np.load(os.path.join(FIXTURES, "cnn", "io.npz"))
    with open(os.path.join(FIXTURES, "cnn", "ptq", "scales.json")) as f:
        scales = json.load(f)
    rows = layer_report(fp32, q, [{fp32.inputs[0]: io["x"]}])
    assert [r["type"] for r in rows] == ["conv2d", "conv2d", "matmul"]
    for r in rows:
        assert any(r["threshold"] == pytest.approx(e["threshold"], rel=1e-6) for e in scales["activations"][r["input"]])
        assert r["output_sqnr_db"] > 10
