"""The float32 kernels (kernels/floatops.pyx) against their NumPy twin (refquant/reference/floatops.py), the twin
against float64 math, and the gelu / softmax ops: float32 runs the kernels (compiled, or the twin under
use_reference), float64 and other softmax axes the scipy / NumPy code.

Every path of the compiled module equals the twin bit for bit with 1 and 2 threads; the one exception is the
sign and payload of a NaN (IEEE leaves them open), so NaNs are compared as "NaN in both".
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf as erf64

from refquant import _dispatch, threads
from refquant.reference import floatops as twin
from tests.gradcheck import run_op

fast = _dispatch.compiled("floatops")
needs_fast = pytest.mark.skipif(fast is None, reason="floatops extension not built (or REFQUANT_FORCE_REFERENCE)")
PATHS = list(fast.available_paths()) if fast is not None else []
rng = np.random.default_rng(7)

SPECIAL = np.array([0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 1e-40, -1e-40, 3.4e38, -3.4e38, 20, -20,
                    -20.5, 88, -88, 1.2374369, -1.2374369, 1.2374368, 1.2374370, 0.5, -0.5, 2.0 ** -24],
                   dtype=np.float32)  # +-1.2374369 = sqrt(2) * 0.875, the erf split


def gelu64(x):
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1 + erf64(x / math.sqrt(2)))


def same(a, b):
    """Equal shapes, dtypes and bits, NaN matching any NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b)), "NaNs in different places"
    bad = np.argwhere((a.view(np.uint32) != b.view(np.uint32)) & ~nan)
    assert len(bad) == 0, f"{len(bad)} elements differ, first at {bad[:3].tolist()}: {a[tuple(bad[0])]} vs " \
                          f"{b[tuple(bad[0])]}"


def check_all_paths(name, x):
    """Every path of the compiled function, with 1 and 2 threads, equals the twin."""
    want = getattr(twin, name)(x)
    before = threads.get_num_threads()
    try:
        for path in PATHS:
            for n in (1, 2):
                threads.set_num_threads(n)
                same(getattr(fast, name)(x, path=path), want)
    finally:
        threads.set_num_threads(before)
    return want


def gelu_input(shape):
    x = np.asarray(rng.standard_normal(shape) * 4, dtype=np.float32)
    flat = x.reshape(-1)
    flat[:min(flat.size, SPECIAL.size)] = SPECIAL[:flat.size]
    return x


def softmax_input(shape):
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    rows = x.reshape(-1, shape[-1]) if x.size else x
    if rows.shape[0] >= 6 and shape[-1] >= 4:
        rows[0, :2] = -np.inf                 # masked entries
        rows[1, 1:3] = -1e4
        rows[2, -1] = np.finfo(np.float32).min
        rows[3, :] = -np.inf                  # all masked: NaN, as NumPy
        rows[4, 2] = np.nan
        rows[5, 0] = np.inf
    return x


# ---- compiled == twin ----------------------------------------------------------------------------------
@needs_fast
@pytest.mark.parametrize("shape", [(1,), (7,), (23,), (100003,), (3, 5, 17), (2, 3, 64, 64), ()])
def test_gelu_compiled_equals_twin(shape):
    check_all_paths("gelu_erf", gelu_input(shape))


@needs_fast
def test_gelu_compiled_on_a_dense_sweep():
    check_all_paths("gelu_erf", np.linspace(-25, 25, 200001, dtype=np.float32))


@needs_fast
@pytest.mark.parametrize("shape", [(1,), (2,), (9, 7), (6, 8), (6, 13), (100003,), (2, 3, 64, 64), (6, 0)])
def test_softmax_compiled_equals_twin(shape):
    check_all_paths("softmax_lastaxis", softmax_input(shape))


@needs_fast
def test_paths_and_bad_inputs():
    assert fast.current_path() in fast.available_paths() and fast.available_paths()[-1] == "portable"
    x = np.ones((2, 3), np.float32)
    for mod in (fast, twin):
        for name in ("gelu_erf", "softmax_lastaxis"):
            f = getattr(mod, name)
            with pytest.raises(TypeError, match=f"{name}: expected dtype float32, got float64"):
                f(x.astype(np.float64))
            with pytest.raises(TypeError, match="expected a numpy.ndarray, got list"):
                f([1.0, 2.0])
            with pytest.raises(ValueError, match="C-contiguous"):
                f(x.T)
        with pytest.raises(ValueError, match="at least 1 dimension"):
            mod.softmax_lastaxis(np.ones((), np.float32))
    with pytest.raises(ValueError, match="path must be one of"):
        fast.gelu_erf(x, path="sse9")


# ---- twin against float64 math -------------------------------------------------------------------------
def test_erf_twin_accuracy():
    x = np.linspace(-10, 10, 2_000_001, dtype=np.float32)
    assert np.abs(twin.erf(x) - erf64(x.astype(np.float64))).max() <= 2e-7
    special = twin.erf(np.array([np.inf, -np.inf, np.nan, 0, -0.0], np.float32))
    assert special[0] == 1 and special[1] == -1 and np.isnan(special[2])
    assert special[3] == 0 and np.signbit(special[4])


def test_exp_twin_accuracy():
    v = np.linspace(-87.3, 0, 1_000_001, dtype=np.float32)
    want = np.exp(v.astype(np.float64))
    assert (np.abs(twin.exp_neg(v) - want) / want).max() <= 1e-7  # about 1 ulp
    out = twin.exp_neg(np.array([-88, -1e4, -np.inf, np.nan, 0], np.float32))
    assert out[:3].tolist() == [0, 0, 0] and np.isnan(out[3]) and out[4] == 1


def test_gelu_twin_accuracy_and_special_values():
    x = np.linspace(-25, 25, 2_000_001, dtype=np.float32)
    assert (np.abs(twin.gelu_erf(x) - gelu64(x)) / np.maximum(1, np.abs(x))).max() <= 2e-7
    y = twin.gelu_erf(SPECIAL)
    assert y[0] == 0 and y[2] == np.inf and y[3] == 0 and np.isnan(y[4]) and y[5] == np.float32(1e30)
    assert y[6] == 0 and y[10] == 0 and y[9] == np.float32(3.4e38)
    assert twin.gelu_erf(np.array([1], np.float32))[0] == pytest.approx(0.8413447, abs=1e-6)


def test_softmax_twin_against_float64():
    x = softmax_input((64, 128))
    y = twin.softmax_lastaxis(x)
    ok = np.ones(64, bool)
    ok[3:6] = False
    assert np.isnan(y[~ok]).all() and not np.isnan(y[ok]).any()
    x64 = np.where(np.isfinite(x[ok]), x[ok], -np.inf).astype(np.float64)
    z = np.exp(x64 - x64.max(axis=1, keepdims=True))
    want = z / z.sum(axis=1, keepdims=True)
    assert np.abs(y[ok] - want).max() <= 1e-6
    assert np.abs(y[ok].sum(axis=1, dtype=np.float64) - 1).max() <= 1e-6
    assert (y[0, :2] == 0).all() and (y[1, 1:3] == 0).all() and y[2, -1] == 0
    np.testing.assert_allclose(twin.softmax_lastaxis(np.array([0, math.log(3)], np.float32)), [0.25, 0.75],
                               atol=1e-6)


# ---- the ops -------------------------------------------------------------------------------------------
def op(op_type, x, attrs=None):
    return run_op(op_type, [x], attrs or {})[1][0]


@pytest.mark.parametrize("shape", [(), (5,), (3, 7, 33)])
def test_gelu_op_with_and_without_compiled(shape):
    x = np.asarray(rng.standard_normal(shape) * 3, dtype=np.float32)
    y = op("gelu", x)
    with _dispatch.use_reference():
        same(op("gelu", x), y)
    assert y.dtype == np.float32 and y.shape == shape
    scipy_form = 0.5 * x * (1 + erf64(x / np.float32(math.sqrt(2))))  # the float64 path's formula, in float32
    np.testing.assert_allclose(y, scipy_form, rtol=0, atol=3e-7 * max(1, np.abs(x).max()))
    assert op("gelu", np.zeros(3, np.float32)).tolist() == [0, 0, 0]
    assert op("gelu", np.ones(1, np.float32))[0] == pytest.approx(0.8413447, abs=1e-6)
    assert op("gelu", x.T.copy().T).tobytes() == y.tobytes()  # a non-contiguous view is converted


@pytest.mark.parametrize("axis", [-1, 2, 1])
def test_softmax_op_with_and_without_compiled(axis):
    x = softmax_input((2, 9, 17))
    x[0, 3, :] = 0  # no all -inf row: the axis-1 case would see it differently
    with np.errstate(invalid="ignore"):  # NumPy on the NaN and +inf rows
        y = op("softmax", x, {"axis": axis})
        with _dispatch.use_reference():
            same(op("softmax", x, {"axis": axis}), y)
        z = np.exp(x - np.max(x, axis=axis, keepdims=True))
        ref = z / np.sum(z, axis=axis, keepdims=True)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_allclose(op("softmax", np.array([0, math.log(3)], np.float32)), [0.25, 0.75], atol=1e-6)


def test_float64_ops_keep_the_exact_path():
    x = np.linspace(-4, 4, 33)
    assert op("gelu", x).tobytes() == gelu64(x).tobytes()
    z = np.exp(x - x.max())
    np.testing.assert_array_equal(op("softmax", x), z / z.sum())
