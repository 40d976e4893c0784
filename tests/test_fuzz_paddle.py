"""Mutation fuzzing of :func:`refquant.import_paddle`: every case must import (and run on a small input), or raise a
:class:`refquant.RefquantError` (``MemoryError`` only while running); a crash, a hang or any other exception fails.

Seeds: the crafted CNN of ``test_paddle_import.py`` (legacy program + parameters), a PIR JSON program of the same
shape written here, and the committed Paddle fixtures when present. Mutations: byte-level (bit flips, byte runs,
insertions, deletions, truncation) of the program or the parameter file; crafted hostile files (huge dims, negative
and huge sizes, huge LoD counts, wrong dtypes, deep nesting in protobuf and JSON, duplicate variables, missing
parameters, a cycle through in-place names, unknown ops and wire types). Each case runs in a worker process with
an address-space limit (``tests/fuzzing.py``). Budget: ``REFQUANT_FUZZ_CASES`` (default 120) within
``REFQUANT_FUZZ_SECONDS`` (default 20), ``REFQUANT_FUZZ_SEED``.
"""
from __future__ import annotations

import functools
import json
import os
import struct

import numpy as np

from tests import fuzzing
from tests.test_paddle_import import (FIXTURES, crafted_cnn, field, op, params_file, program, tensor_desc, var,
                                      varint)


# ---- seeds ----------------------------------------------------------------------------------------------------
def _pir_seed() -> tuple[bytes, dict]:
    """x -> conv2d -> add(bias via reshape) -> relu -> flatten -> matmul -> fetch, in PIR JSON."""
    rng = np.random.default_rng(5)
    params = {"b": rng.standard_normal(2).astype(np.float32), "w": rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
              "fw": rng.standard_normal((18, 3)).astype(np.float32)}

    def t(dims, dt="f32"):
        return {"#": "0.t_dtensor", "D": [{"#": f"0.t_{dt}"}, dims, "NCHW", [], 0]}

    def a(name, kind, value):
        return {"AT": {"#": kind, "D": value}, "N": name}

    ints = lambda v: {"#": "0.a_array", "D": [{"#": "0.a_i32", "D": e} for e in v]}  # noqa: E731
    ops = [{"#": "p", "A": [0, 1, 1, n], "O": {"%": i + 1, "TT": t(list(v.shape))}, "OA": [1, 0, 1]}
           for i, (n, v) in enumerate(sorted(params.items()))]
    ops += [
        {"#": "1.data", "A": [a("name", "0.a_str", "x"), a("shape", "1.a_intarray", [-1, 1, 5, 5]),
                              a("dtype", "1.a_dtype", "float32")], "I": [], "O": [{"%": 10, "TT": t([-1, 1, 5, 5])}]},
        {"#": "1.conv2d", "A": [{"AT": ints([1, 1]), "N": "strides"}, {"AT": ints([0, 0]), "N": "paddings"},
                                a("padding_algorithm", "0.a_str", "EXPLICIT"), {"AT": ints([1, 1]), "N": "dilations"},
                                a("groups", "0.a_i32", 1), a("data_format", "0.a_str", "NCHW")],
         "I": [{"%": 10}, {"%": 3}], "O": [{"%": 11, "TT": t([-1, 2, 3, 3])}]},
        {"#": "1.full_int_array", "A": [{"AT": {"#": "0.a_array", "D": [{"#": "0.a_i64", "D": v} for v in [1, -1, 1, 1]]},
                                         "N": "value"}, a("dtype", "1.a_dtype", "int64")],
         "I": [], "O": [{"%": 12, "TT": t([4], "i64")}]},
        {"#": "1.reshape", "A": [], "I": [{"%": 1}, {"%": 12}], "O": [{"%": 13, "TT": t([1, 2, 1, 1])}]},
        {"#": "1.add", "A": [], "I": [{"%": 11}, {"%": 13}], "O": [{"%": 14, "TT": t([-1, 2, 3, 3])}]},
        {"#": "1.relu", "A": [], "I": [{"%": 14}], "O": [{"%": 15, "TT": t([-1, 2, 3, 3])}]},
        {"#": "1.flatten", "A": [a("start_axis", "0.a_i32", 1), a("stop_axis", "0.a_i32", 3)], "I": [{"%": 15}],
         "O": [{"%": 16, "TT": t([-1, 18])}]},
        {"#": "1.matmul", "A": [a("transpose_x", "0.a_bool", False), a("transpose_y", "0.a_bool", False)],
         "I": [{"%": 16}, {"%": 2}], "O": [{"%": 17, "TT": t([-1, 3])}]},
        {"#": "1.fetch", "A": [a("name", "0.a_str", "fetch_name_0"), a("col", "0.a_i32", 0)], "I": [{"%": 17}],
         "O": [{"%": 18, "TT": t([-1, 3])}]},
    ]
    doc = {"base_code": {"magic": "pir", "trainable": True, "version": 4},
           "program": {"regions": [{"#": "region_0", "blocks": [{"#": "block_0", "args": [], "ops": ops}]}]}}
    return json.dumps(doc).encode(), params


@functools.lru_cache(maxsize=None)
def seeds() -> list:
    """[(name, {file name: bytes})]: each seed is a program file and its parameter file."""
    prog, params = crafted_cnn()
    out = [("crafted", {"model.pdmodel": prog, "model.pdiparams": params_file(params)})]
    pir, pparams = _pir_seed()
    out.append(("pir", {"model.json": pir, "model.pdiparams": params_file(pparams)}))
    if os.path.isdir(FIXTURES):
        for model in sorted(os.listdir(FIXTURES)):
            for variant in ("fp32", "fp32_pir", "ptq", "ptq_onnx"):
                d = os.path.join(FIXTURES, model, variant)
                if not os.path.isdir(d):
                    continue
                files = {}
                for f in os.listdir(d):
                    if f.endswith((".pdmodel", ".json", ".pdiparams")) and f != "scales.json":
                        with open(os.path.join(d, f), "rb") as fh:
                            files[f] = fh.read()
                if files:
                    out.append((f"{model}/{variant}", files))
    return out


# ---- mutations --------------------------------------------------------------------------------------------------
def _bytes_mutation(rng, data: bytes) -> tuple[str, bytes]:
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0 and b:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        return "bit flips", bytes(b)
    if kind == 1 and b:
        i = int(rng.integers(len(b)))
        b[i:i + 8] = bytes([int(rng.choice([0, 0xFF, 0x7F, 0x80]))]) * 8
        return "byte run", bytes(b)
    if kind == 2:
        i = int(rng.integers(len(b) + 1))
        return "insertion", bytes(b[:i]) + rng.bytes(int(rng.integers(1, 16))) + bytes(b[i:])
    if kind == 3 and b:
        i = int(rng.integers(len(b)))
        return "deletion", bytes(b[:i]) + bytes(b[i + int(rng.integers(1, 16)):])
    if kind == 4:
        return "truncation", bytes(b[:int(rng.integers(len(b) + 1))])
    return "empty", b""


def _hostile_record(rng) -> tuple[str, bytes]:
    """A parameter record with a hostile header."""
    kind = rng.integers(6)
    desc = tensor_desc(5, [2, 2])
    if kind == 0:
        return "huge dims", struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", 12) + tensor_desc(5, [1 << 40, 1 << 20])
    if kind == 1:
        return "negative dims", struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", 13) + tensor_desc(5, [-3, 2])
    if kind == 2:
        return "huge LoD", struct.pack("<IQ", 0, 1) + struct.pack("<Q", 1 << 62)
    if kind == 3:
        return "negative desc size", struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", -(1 << 30)) + desc
    if kind == 4:
        return "wrong dtype", struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", len(tensor_desc(99, [2, 2]))) + \
            tensor_desc(99, [2, 2]) + b"\0" * 16
    return "huge desc size", struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", 1 << 30) + desc


def _hostile_program(rng) -> tuple[str, dict]:
    _, params = crafted_cnn()
    pfile = params_file(params)
    kind = int(rng.integers(8))
    if kind == 0:   # deep nesting: a message inside a message inside ...
        inner = b""
        for _ in range(200):
            inner = field(1, inner)
        return "deep protobuf", {"model.pdmodel": inner, "model.pdiparams": b""}
    if kind == 1:   # a length varint far beyond the file
        return "huge length", {"model.pdmodel": varint(1 << 3 | 2) + varint(1 << 62), "model.pdiparams": b""}
    if kind == 2:   # duplicate variable names
        prog = program([var("x", [-1, 3]), var("x", [-1, 3]), var("y", [-1, 3])],
                       [op("relu", {"X": ["x"]}, {"Out": ["y"]})])
        return "duplicate vars", {"model.pdmodel": prog, "model.pdiparams": b""}
    if kind == 3:   # a parameter the file lacks
        prog = program([var("x", [-1, 3]), var("w", [3, 3], persistable=True), var("y", [-1, 3])],
                       [op("mul", {"X": ["x"], "Y": ["w"]}, {"Out": ["y"]})])
        return "missing param", {"model.pdmodel": prog, "model.pdiparams": b""}
    if kind == 4:   # an op reading what nothing writes, and in-place ops forming a loop of names
        prog = program([var("x", [-1, 3]), var("a", [-1, 3]), var("y", [-1, 3])],
                       [op("relu", {"X": ["a"]}, {"Out": ["y"]}), op("relu", {"X": ["y"]}, {"Out": ["a"]})])
        return "cycle", {"model.pdmodel": prog, "model.pdiparams": b""}
    if kind == 5:   # deep JSON
        return "deep json", {"model.json": b"[" * 100_000 + b"]" * 100_000, "model.pdiparams": b""}
    if kind == 6:   # a declared dim against the file's
        prog = program([var("x", [-1, 3]), var("w", [3, 4], persistable=True), var("y", [-1, 3])],
                       [op("mul", {"X": ["x"], "Y": ["w"]}, {"Out": ["y"]})])
        return "dims mismatch", {"model.pdmodel": prog,
                                 "model.pdiparams": params_file({"w": np.zeros((3, 3), np.float32)})}
    desc, record = _hostile_record(rng)
    return f"params: {desc}", {"model.pdmodel": crafted_cnn()[0], "model.pdiparams": record + pfile}


def make_case(index: int, seed: int = 0) -> tuple[str, dict]:
    rng = np.random.default_rng([seed, index])
    if rng.random() < 0.3:
        return _hostile_program(rng)
    name, files = seeds()[int(rng.integers(len(seeds())))]
    files = dict(files)
    target = sorted(files)[int(rng.integers(len(files)))]
    what, files[target] = _bytes_mutation(rng, files[target])
    return f"{name}: {what} of {target}", files


# ---- the worker side --------------------------------------------------------------------------------------------
def run_case(case_dir: str) -> str:
    import refquant
    from refquant.errors import OpError, RefquantError
    try:
        m = refquant.import_paddle(case_dir)
    except RefquantError as exc:
        return f"refused {type(exc).__name__}"
    except FileNotFoundError:
        return "refused FileNotFoundError"
    feeds = {}
    for spec in m.input_specs:
        shape = tuple(1 if d is None else min(int(d), 64) for d in spec.shape)
        feeds[spec.name] = np.ones(shape, dtype=spec.dtype)
    try:
        m.run(feeds)
    except (OpError, RefquantError, MemoryError) as exc:
        return f"run refused {type(exc).__name__}"
    return "ok"


def test_fuzz_import_paddle(tmp_path):
    seed = fuzzing.budget()[2]
    report = fuzzing.fuzz("paddle", lambda i: make_case(i, seed), str(tmp_path), default_cases=120)
    assert not report["failures"], fuzzing.failure_message(report)
    assert report["cases"] > 0
    refused = sum(v for k, v in report["outcomes"].items() if "refused" in k)
    assert refused > 0, report["outcomes"]          # the mutations do reach the checks
