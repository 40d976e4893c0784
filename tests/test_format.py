"""The model file: round trip is bit-identical; truncated, corrupted and hostile files fail cleanly."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

import refquant
from refquant import Model, Op, TensorSpec
from refquant.errors import ModelFormatError, UnsupportedOpError
from refquant.io import format as fmt


def tiny_model():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32), "ids": np.arange(5, dtype=np.int64),
              "q": rng.integers(-128, 128, (2, 2)).astype(np.int8), "scalar": np.float64(2.5) * np.ones(()),
              "empty": np.zeros((0, 3), np.float32)}
    ops = [Op("relu", ["x"], ["h"], {"note": [1, 2], "f": 0.5}, name="relu_0"),
           Op("relu", ["h"], ["y"], {}, name="relu_1")]
    return Model(ops, params, [TensorSpec("x", (None, 4))], ["y"], name="tiny", meta={"builder": "test"},
                 trainable={"w"})


def craft(header: dict, data: bytes = b"", version=fmt.FORMAT_VERSION) -> bytes:
    """A file with a valid checksum around an arbitrary (possibly hostile) header."""
    h = json.dumps(header).encode()
    head = fmt._PREFIX.pack(fmt.MAGIC, version, len(h)) + h
    body = head + b"\0" * fmt._pad(len(head)) + data
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_is_bit_identical(tmp_path):
    m = tiny_model()
    path = refquant.save(m, tmp_path / "m.rq")
    m2 = refquant.load(path)
    assert m2.name == "tiny" and m2.meta == {"builder": "test"} and m2.trainable == {"w"}
    assert m2.inputs == ["x"] and m2.outputs == ["y"] and m2.input_specs[0].shape == (None, 4)
    assert [o.to_json() for o in m2.ops] == [o.to_json() for o in m.ops]
    for k, v in m.params.items():
        assert m2.params[k].dtype == v.dtype and m2.params[k].shape == v.shape
        assert m2.params[k].tobytes() == v.tobytes()
        assert m2.params[k].flags.writeable
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    assert m.run({"x": x})["y"].tobytes() == m2.run({"x": x})["y"].tobytes()
    assert fmt.to_bytes(m2) == fmt.to_bytes(m)


def test_every_truncation_fails_cleanly(tmp_path):
    blob = fmt.to_bytes(tiny_model())
    for n in sorted({0, 1, 7, 8, 12, 19, 20, 64, len(blob) // 2, len(blob) - 5, len(blob) - 1}):
        with pytest.raises(ModelFormatError):
            fmt.from_bytes(blob[:n])


@pytest.mark.parametrize("where", [10, 30, -20, -2])
def test_bit_flip_fails_checksum(where):
    blob = bytearray(fmt.to_bytes(tiny_model()))
    blob[where] ^= 0x10
    with pytest.raises(ModelFormatError):
        fmt.from_bytes(bytes(blob))


def test_wrong_magic_and_future_version(tmp_path):
    np.save(tmp_path / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFormatError, match="magic"):
        refquant.load(tmp_path / "a.npy")
    with pytest.raises(ModelFormatError, match="version"):
        fmt.from_bytes(craft({}, version=99))


def _graph(**kw):
    g = {"name": "h", "inputs": [{"name": "x", "shape": [None, 2], "dtype": "float32"}], "outputs": ["y"],
         "ops": [{"type": "relu", "inputs": ["x"], "outputs": ["y"], "attrs": {}}]}
    g.update(kw)
    return g


@pytest.mark.parametrize("tensor,why", [
    ({"name": "t", "dtype": "|O", "shape": [1], "offset": 0, "nbytes": 8}, "dtype"),
    ({"name": "t", "dtype": "<f4", "shape": [4], "offset": 0, "nbytes": 8}, "does not match"),
    ({"name": "t", "dtype": "<f4", "shape": [2], "offset": 1 << 40, "nbytes": 8}, "outside"),
    ({"name": "t", "dtype": "<f4", "shape": [-2], "offset": 0, "nbytes": -8}, "does not match"),
    ({"name": "t", "dtype": "<f4", "shape": [1 << 62, 1 << 62], "offset": 0, "nbytes": 8}, "does not match"),
])
def test_hostile_tensor_tables(tensor, why):
    with pytest.raises(ModelFormatError, match=why):
        fmt.from_bytes(craft({"graph": _graph(), "tensors": [tensor]}, b"\0" * 64))


def test_hostile_headers():
    with pytest.raises(ModelFormatError, match="JSON"):
        body = fmt._PREFIX.pack(fmt.MAGIC, 1, 5) + b"{{{{{"
        fmt.from_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(ModelFormatError, match="header length"):
        body = fmt._PREFIX.pack(fmt.MAGIC, 1, 1 << 60) + b"{}"
        fmt.from_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(ModelFormatError):
        fmt.from_bytes(craft({"graph": _graph(ops="not a list"), "tensors": []}))
    with pytest.raises(ModelFormatError, match="reads"):
        bad = _graph(ops=[{"type": "relu", "inputs": ["nowhere"], "outputs": ["y"]}])
        fmt.from_bytes(craft({"graph": bad, "tensors": []}))
    with pytest.raises(ModelFormatError, match="cycle"):
        cyc = _graph(ops=[{"type": "relu", "inputs": ["b"], "outputs": ["a"]},
                          {"type": "relu", "inputs": ["a"], "outputs": ["b"]},
                          {"type": "relu", "inputs": ["b"], "outputs": ["y"]}])
        fmt.from_bytes(craft({"graph": cyc, "tensors": []}))
    with pytest.raises(UnsupportedOpError, match="os.system"):
        fmt.from_bytes(craft({"graph": _graph(ops=[{"type": "os.system", "inputs": ["x"], "outputs": ["y"]}]),
                              "tensors": []}))
    with pytest.raises(ModelFormatError):
        fmt.from_bytes(craft({"graph": _graph(), "tensors": []}, version=1)[:-1] + b"\0\0\0\0\0")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.rq"
    refquant.save(tiny_model(), path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        refquant.save(Model([], {}, [TensorSpec("x", (1,))], ["x"]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.rq"]


def test_load_directory_and_missing(tmp_path):
    with pytest.raises(ModelFormatError):
        refquant.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        refquant.load(tmp_path / "nope.rq")


def test_saved_file_has_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = refquant.save(tiny_model(), tmp_path / "m.rq")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_zoo_model_round_trip_bit_identical(tmp_path):
    from refquant.models import lenet5, mobilenet_v2
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    for model in (lenet5(input_size=16), mobilenet_v2(input_size=16, num_classes=10, in_channels=1, width=0.5)):
        loaded = refquant.load(refquant.save(model, tmp_path / "z.rq"))
        a, b = model.run({"x": x}), loaded.run({"x": x})
        assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_load_refuses_a_fifo_without_opening_it(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: load checks the file type first (in a subprocess, so
    a regression fails on the timeout instead of hanging the suite)."""
    import subprocess
    import sys
    fifo = tmp_path / "model.rq"
    os.mkfifo(fifo)
    code = f"import refquant\ntry:\n    refquant.load({str(fifo)!r})\nexcept refquant.errors.ModelFormatError as e:\n    print(e)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is not a regular file (a FIFO, socket or device)" in r.stdout, r.stderr
    with pytest.raises(ModelFormatError, match="is a directory"):
        refquant.load(tmp_path)
