"""Hostile inputs to the embedding kernels, their twin and the quantization pass: every entry point rejects what
its twin rejects, with a clear error, before reading memory. Cases that used to crash the compiled kernel run in
one subprocess, so a regression shows up as a failed test instead of a dead test run."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import refquant
from refquant import _dispatch
from refquant.errors import ArgumentError, ArgumentTypeError, NonFiniteError, ShapeError
from refquant.ops.dequant import lookup_rows
from refquant.quant.embedding import quant_embedding
from refquant.reference import embedding as twin

kernel = _dispatch.compiled("embedding")
IMPLS = [twin] + ([kernel] if kernel is not None else [])
T8 = np.arange(-12, 12, dtype=np.int8).reshape(6, 4)
DICT = (2.0 ** np.arange(-8, 4)).astype(np.float32)               # 12 levels: indices 0..11, -128..-117

# (name, call on an implementation ``m``, expected exception type)
BAD_CALLS = [
    ("huge_id", lambda m: m.lookup_dequant_abs_max(T8, np.float32(1), np.array([10 ** 6]), 127, -1), IndexError),
    ("huge_id_log", lambda m: m.lookup_dequant_log(T8 % 12, DICT, np.array([0, 10 ** 6]), -1), IndexError),
    ("negative_id_log", lambda m: m.lookup_dequant_log(T8 % 12, DICT, np.array([-1]), -1), IndexError),
    ("negative_id_abs_max", lambda m: m.lookup_dequant_abs_max(T8, np.float32(1), np.array([-3]), 127), IndexError),
    ("uint64_id", lambda m: m.lookup_dequant_abs_max(T8, np.float32(1), np.array([2 ** 63], np.uint64), 127),
     IndexError),
    ("table_1d", lambda m: m.lookup_dequant_abs_max(np.arange(5, dtype=np.int8), np.float32(1), np.array([0]), 127),
     ShapeError),
    ("table_1d_log", lambda m: m.lookup_dequant_log(np.arange(5, dtype=np.int8), DICT, np.array([0])), ShapeError),
    ("table_3d", lambda m: m.lookup_dequant_log(np.zeros((2, 2, 2), np.int8), DICT, np.array([0])), ShapeError),
    ("table_int32", lambda m: m.lookup_dequant_abs_max(T8.astype(np.int32), np.float32(1), np.array([0]), 127),
     TypeError),
    ("table_list", lambda m: m.lookup_dequant_log([[1, 2]], DICT, np.array([0])), TypeError),
    ("float_ids", lambda m: m.lookup_dequant_abs_max(T8, np.float32(1), np.array([0.0, 1.0]), 127), TypeError),
    ("padding_too_big", lambda m: m.lookup_dequant_abs_max(T8, np.float32(1), np.array([0]), 127, 6), ArgumentError),
    ("padding_negative", lambda m: m.lookup_dequant_log(T8 % 12, DICT, np.array([0]), -7), ArgumentError),
    ("padding_float", lambda m: m.lookup_dequant_log(T8 % 12, DICT, np.array([0]), 1.5), TypeError),
    ("scale_size", lambda m: m.lookup_dequant_abs_max(T8, np.ones(3, np.float32), np.array([0]), 127), ValueError),
    ("dict_empty", lambda m: m.lookup_dequant_log(T8 % 12, np.zeros(0, np.float32), np.array([0])), ValueError),
    ("dict_int", lambda m: m.lookup_dequant_log(T8 % 12, np.arange(12), np.array([0])), TypeError),
    ("qmax_zero", lambda m: m.lookup_dequant_abs_max(T8, np.float32(1), np.array([0]), 0), ArgumentError),
    ("index_outside_dict", lambda m: m.lookup_dequant_log(T8, DICT, np.array([0, 5])), ValueError),
    ("log_index_nan_levels", lambda m: m.log_index(np.full((2, 2), np.nan, np.float32),
                                                   np.float32([0, 1]), np.ones((2, 2), np.float32)), ValueError),
    ("log_index_unsorted", lambda m: m.log_index(np.zeros((2, 2), np.float32), np.float32([1, 0]),
                                                 np.ones((2, 2), np.float32)), ValueError),
    ("log_index_shapes", lambda m: m.log_index(np.zeros((2, 2), np.float32), np.float32([0, 1]),
                                               np.ones((2, 3), np.float32)), ShapeError),
    ("log_index_1d", lambda m: m.log_index(np.zeros(4, np.float32), np.float32([0, 1]), np.ones(4, np.float32)),
     ShapeError),
    ("log_index_float64", lambda m: m.log_index(np.zeros((2, 2)), np.float32([0, 1]), np.ones((2, 2), np.float32)),
     TypeError),
]


@pytest.mark.parametrize("name,call,exc", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_twin_rejects(name, call, exc):
    with pytest.raises(exc, match="lookup_dequant|log_index|dictionary"):
        call(twin)


_CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_hostile_embedding as t
from refquant import _dispatch
kernel = _dispatch.compiled("embedding")
for name, call, exc in t.BAD_CALLS:
    try:
        call(kernel)
        result = "no error"
    except exc as e:
        result = "ok" if type(e) is type(t.first_error(name)) else f"{{type(e).__name__}} (twin: {{type(t.first_error(name)).__name__}})"
    except Exception as e:
        result = f"wrong error {{type(e).__name__}}: {{e}}"
    print(json.dumps([name, result]), flush=True)
"""


def first_error(name):
    """The exception the twin raises for case ``name``."""
    call = {c[0]: c[1] for c in BAD_CALLS}[name]
    try:
        call(twin)
    except Exception as e:  # noqa: BLE001 - the test compares its type with the kernel's
        return e
    raise AssertionError(f"the twin accepted {name}")


@pytest.mark.skipif(kernel is None, reason="refquant._kernels.embedding not built (or forced off)")
def test_kernel_rejects_what_the_twin_rejects_without_crashing():
    import os
    code = _CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    seen = dict(json.loads(line) for line in r.stdout.splitlines() if line.startswith("["))
    assert r.returncode == 0, f"the kernel process died (code {r.returncode}) after {list(seen)}: {r.stderr[-500:]}"
    assert seen == {c[0]: "ok" for c in BAD_CALLS}


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: "twin" if m is twin else "kernel")
def test_non_contiguous_and_odd_integer_inputs_are_read_correctly(impl):
    big = np.arange(-60, 60, dtype=np.int8).reshape(12, 10)
    before = big.copy()
    table = big[::2, ::3]                                          # strided view (6, 4)
    ids = np.array([[5, 0], [2, 2]], np.int32)[:, ::-1]            # int32, 2-D, negative strides
    want = (np.float32(0.5) * table[ids.reshape(-1)].astype(np.float32)) / np.float32(127)
    got = impl.lookup_dequant_abs_max(table, np.float32(0.5), ids, 127, np.int64(-1))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(big, before)                    # input untouched


def test_lookup_rows_validates():
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        lookup_rows(T8, np.float32(1), np.array([6]))
    with pytest.raises(IndexError):
        lookup_rows(T8 % 12, DICT, np.array([-1]), "log")
    with pytest.raises(ShapeError):
        lookup_rows(np.arange(4, dtype=np.int8), np.float32(1), np.array([0]))
    with pytest.raises(ArgumentError, match="padding_idx"):
        lookup_rows(T8, np.float32(1), np.array([0]), padding_idx=99)
    # any negative padding_idx means none, as the lookup_table op
    np.testing.assert_array_equal(lookup_rows(T8, np.float32(127), np.array([0]), padding_idx=-5),
                                  T8[:1].astype(np.float32))


@pytest.mark.parametrize("qtype", ["log", "abs_max"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_table_is_rejected_by_name(qtype, bad):
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    w[2, 1] = bad
    ids = refquant.TensorSpec("ids", (None,), "int64")
    model = refquant.Model([refquant.Op("lookup_table", ["word_emb", "ids"], ["y"], name="emb")],
                           {"word_emb": w}, [ids], ["y"])
    before = w.copy()
    with pytest.raises(NonFiniteError, match="word_emb") as info:
        quant_embedding(model, {"lookup_table": {"quantize_type": qtype}})
    assert info.value.tensor == "word_emb" and info.value.count == 1
    np.testing.assert_array_equal(model.params["word_emb"], before)


def test_all_zero_tables():
    """log: the zero level alone (PaddleSlim's dict [0]); abs_max: a zero scale, rejected by name."""
    ids = refquant.TensorSpec("ids", (None,), "int64")
    model = refquant.Model([refquant.Op("lookup_table", ["z", "ids"], ["y"], name="emb")],
                           {"z": np.zeros((3, 2), np.float32)}, [ids], ["y"])
    qm = quant_embedding(model, {"lookup_table": {"quantize_type": "log"}})
    assert qm.params["z.dict"].tolist() == [0] and not qm.params["z.int"].any()
    with pytest.raises(ValueError, match="'z' is all zeros"):
        quant_embedding(model)
    assert ArgumentTypeError.__mro__[1] is ArgumentError
