"""The float32 kernels (kernels/floatops.pyx) against their NumPy twin (refquant/reference/floatops.py), the twin
against float64 math, and the gelu / sigmoid / softmax / layer_norm ops: float32 runs the kernels (compiled, or the
twin under use_reference), float64 and other softmax axes the scipy / NumPy code, layer_norm in training the NumPy
code.

Every path of the compiled module equals the twin bit for bit with 1 and 2 threads; the one exception is the
sign and payload of a NaN (IEEE leaves them open), so NaNs are compared as "NaN in both".
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from scipy.special import erf as erf64

from refquant import _dispatch, threads
from refquant.reference import floatops as twin
from refquant.ops import get_op
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


def check_all_paths(name, x, *args):
    """Every path of the compiled function, with 1 and 2 threads, equals the twin."""
    want = getattr(twin, name)(x, *args)
    before = threads.get_num_threads()
    try:
        for path in PATHS:
            for n in (1, 2):
                threads.set_num_threads(n)
                same(getattr(fast, name)(x, *args, path=path), want)
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


def layer_norm_input(rows, n):
    """N(1, 3^2) rows, then special rows: constant (var 0), 1e4 + small noise, a NaN, a +inf, a -inf, huge values."""
    x = (rng.standard_normal((rows, n)) * 3 + 1).astype(np.float32)
    special = [np.full(n, 5.0), 1e4 + 0.01 * rng.standard_normal(n), np.r_[np.nan, np.zeros(n - 1)],
               np.r_[np.zeros(n - 1), np.inf], np.r_[-np.inf, np.ones(n - 1)], 3e38 * rng.uniform(-1, 1, n),
               np.full(n, -0.0)]
    for r, v in enumerate(special[:rows]):
        x[r] = v
    return x


def layer_norm64(x, scale=None, bias=None, eps=1e-5):
    x = x.astype(np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    y = xhat if scale is None else xhat * scale
    return xhat, (y if bias is None else y + bias)


# ---- compiled == twin ----------------------------------------------------------------------------------
@needs_fast
@pytest.mark.parametrize("name", ["gelu_erf", "sigmoid"])
@pytest.mark.parametrize("shape", [(1,), (7,), (23,), (100003,), (3, 5, 17), (2, 3, 64, 64), ()])
def test_elementwise_compiled_equals_twin(name, shape):
    check_all_paths(name, gelu_input(shape))


@needs_fast
@pytest.mark.parametrize("name, bound", [("gelu_erf", 25), ("sigmoid", 100)])
def test_elementwise_compiled_on_a_dense_sweep(name, bound):
    check_all_paths(name, np.linspace(-bound, bound, 200001, dtype=np.float32))


@needs_fast
@pytest.mark.parametrize("name, x", [("gelu_erf", np.linspace(-9, 9, 300007, dtype=np.float32)),
                                     ("sigmoid", np.linspace(-30, 30, 300007, dtype=np.float32)),
                                     ("softmax_lastaxis", softmax_input((40, 6625))),
                                     ("layer_norm_lastaxis", layer_norm_input(700, 384))])
def test_thread_cap_keeps_the_bits(name, x):
    """The chunks are fixed: capped at 1 thread or not, every thread count gives the twin's bits."""
    want = getattr(twin, name)(x)
    before = threads.get_num_threads()
    try:
        threads.set_num_threads(2)
        with np.errstate(all="ignore"):
            for cap in (1, 2, None):
                same(getattr(fast, name)(x, max_threads=cap), want)
    finally:
        threads.set_num_threads(before)


@needs_fast
@pytest.mark.parametrize("shape", [(1,), (2,), (9, 7), (6, 8), (6, 13), (100003,), (2, 3, 64, 64), (6, 0)])
def test_softmax_compiled_equals_twin(shape):
    check_all_paths("softmax_lastaxis", softmax_input(shape))


@needs_fast
@pytest.mark.parametrize("n", [1, 7, 384, 1000])
@pytest.mark.parametrize("rows", [1, 9, 1000])
@pytest.mark.parametrize("affine", ["none", "scale", "bias", "both"])
def test_layer_norm_compiled_equals_twin(n, rows, affine):
    x = layer_norm_input(rows, n)
    scale = (rng.standard_normal(n) * 2).astype(np.float32) if affine in ("scale", "both") else None
    bias = rng.standard_normal(n).astype(np.float32) if affine in ("bias", "both") else None
    with np.errstate(all="ignore"):
        y = check_all_paths("layer_norm_lastaxis", x, scale, bias)
    assert y.dtype == np.float32 and y.shape == x.shape


@needs_fast
@pytest.mark.parametrize("shape", [(3, 5, 17), (2, 3, 64, 64), (6, 0), (0, 4), (5,)])
def test_layer_norm_compiled_equals_twin_shapes_and_epsilon(shape):
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    check_all_paths("layer_norm_lastaxis", x, None, None, 1e-12)
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    check_all_paths("layer_norm_lastaxis", x, w.reshape(1, -1), w, 0.5)  # any shape of n values


@needs_fast
def test_paths_and_bad_inputs():
    assert fast.current_path() in fast.available_paths() and fast.available_paths()[-1] == "portable"
    x = np.ones((2, 3), np.float32)
    for mod in (fast, twin):
        for name in ("gelu_erf", "sigmoid", "softmax_lastaxis", "layer_norm_lastaxis"):
            f = getattr(mod, name)
            for bad, err in ((0, ValueError), (1.5, TypeError), ("2", TypeError)):
                with pytest.raises(err, match=f"{name}: max_threads"):
                    f(x, max_threads=bad)
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
    for mod in (fast, twin):
        f = mod.layer_norm_lastaxis
        with pytest.raises(TypeError, match="layer_norm_lastaxis: expected dtype float32"):
            f(x.astype(np.float64))
        with pytest.raises(ValueError, match="at least 1 dimension"):
            f(np.ones((), np.float32))
        with pytest.raises(ValueError, match="C-contiguous"):
            f(x.T)
        with pytest.raises(TypeError, match="scale must have dtype float32, got float64"):
            f(x, np.ones(3))
        with pytest.raises(ValueError, match="bias must hold 3 values"):
            f(x, None, np.ones(4, np.float32))
        with pytest.raises(ValueError, match="scale must be C-contiguous"):
            f(x, np.ones((3, 2), np.float32)[:, 0])
        with pytest.raises(TypeError, match="bias must be a numpy.ndarray or None, got list"):
            f(x, None, [1.0, 2.0, 3.0])


def bn_case(shape):
    """(x, mean, inv_std, scale, bias) for batch_norm_nchw_f32, x with special values, the vectors with a zero."""
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x.reshape(-1)[:min(x.size, SPECIAL.size)] = SPECIAL[:x.size]
    c = shape[1]
    vecs = [(rng.standard_normal(c) * 2).astype(np.float32) for _ in range(4)]
    vecs[1] = np.abs(vecs[1])
    vecs[2][:1] = 0.0
    return [x] + vecs


@needs_fast
@pytest.mark.parametrize("shape", [(1, 3), (2, 5, 7), (2, 3, 64, 64), (1, 16, 1, 1), (3, 4, 2, 3, 5), (2, 0, 4),
                                   (0, 3, 2, 2), (1, 2, 128, 129)])
def test_batch_norm_compiled_equals_twin(shape):
    with np.errstate(all="ignore"):
        y = check_all_paths("batch_norm_nchw_f32", *bn_case(shape))
    assert y.dtype == np.float32 and y.shape == shape


@needs_fast
def test_batch_norm_bad_inputs():
    x, m, s, g, b = bn_case((2, 3, 4, 4))
    for mod in (fast, twin):
        f = mod.batch_norm_nchw_f32
        with pytest.raises(TypeError, match="batch_norm_nchw_f32: expected dtype float32, got float64"):
            f(x.astype(np.float64), m, s, g, b)
        with pytest.raises(ValueError, match="at least 2 dimension"):
            f(x[0, 0, 0], m, s, g, b)
        with pytest.raises(ValueError, match="C-contiguous"):
            f(x.transpose(0, 1, 3, 2), m, s, g, b)
        with pytest.raises(ValueError, match="inv_std must hold 3 values"):
            f(x, m, np.ones(4, np.float32), g, b)
        with pytest.raises(TypeError, match="bias: expected dtype float32, got float64"):
            f(x, m, s, g, b.astype(np.float64))
        with pytest.raises(ValueError, match="scale: expected 1 dimensions"):
            f(x, m, s, g.reshape(1, 3), b)
        with pytest.raises(ValueError, match="max_threads"):
            f(x, m, s, g, b, max_threads=0)


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (4, 6), (2, 3, 2, 3, 4)])
def test_batch_norm_op_eval_with_and_without_compiled(shape):
    """The eval forward in one pass gives the bits of the NumPy steps it replaces; float64 keeps the NumPy path."""
    x, mean, _, scale, bias = bn_case(shape)
    var = rng.uniform(0.1, 3, shape[1]).astype(np.float32)
    attrs = {"epsilon": 1e-3}
    with np.errstate(all="ignore"):
        y = run_op("batch_norm", [x, scale, bias, mean, var], attrs)[1][0]
        with _dispatch.use_reference():
            same(run_op("batch_norm", [x, scale, bias, mean, var], attrs)[1][0], y)
        c = (1, -1) + (1,) * (len(shape) - 2)
        steps = np.subtract(x, mean.reshape(c))
        steps *= (1 / np.sqrt(var + 1e-3)).astype(np.float32).reshape(c)
        steps *= scale.reshape(c)
        steps += bias.reshape(c)
        same(y, steps)
    x = rng.standard_normal(shape).astype(np.float32)
    y = run_op("batch_norm", [x, scale, bias, mean, var], attrs)[1][0]
    y64 = run_op("batch_norm", [v.astype(np.float64) for v in (x, scale, bias, mean, var)], attrs)[1][0]
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y, rtol=1e-5, atol=1e-5)


@needs_fast
@pytest.mark.parametrize("threshold", [None, 6.0, 0.5, 0.0, -1.0])
@pytest.mark.parametrize("shape", [(), (7,), (100003,), (2, 3, 64, 64), (6, 0)])
def test_relu_compiled_equals_twin_and_numpy(shape, threshold):
    x = gelu_input(shape)
    args = () if threshold is None else (threshold,)
    y = check_all_paths("relu_f32", x, *args)
    for path in PATHS:  # NaN payloads pass unchanged
        assert fast.relu_f32(x, *args, path=path).tobytes() == y.tobytes()
    want = np.maximum(x, 0) if threshold is None else np.clip(x, 0, threshold)
    assert np.array_equal(y, want, equal_nan=True)  # the sign of a zero may differ from NumPy on other CPUs
    zero = (x == 0) & (y == 0)
    assert np.array_equal(np.signbit(y[zero]), np.signbit(x[zero]) if threshold is not None and threshold >= 0
                          else np.zeros(zero.sum(), bool))


@needs_fast
def test_relu_bad_inputs():
    x = gelu_input((3, 4))
    for mod in (fast, twin):
        with pytest.raises(TypeError, match="relu_f32: expected dtype float32, got float64"):
            mod.relu_f32(x.astype(np.float64))
        with pytest.raises(ValueError, match="C-contiguous"):
            mod.relu_f32(x.T)
        with pytest.raises(ValueError, match="threshold must be finite in float32, got nan"):
            mod.relu_f32(x, float("nan"))
        with pytest.raises(ValueError, match="threshold must be finite in float32"):
            mod.relu_f32(x, 1e39)
        with pytest.raises(TypeError, match="threshold must be a number or None, got str"):
            mod.relu_f32(x, "6")
        with pytest.raises(ValueError, match="max_threads"):
            mod.relu_f32(x, max_threads=0)


@pytest.mark.parametrize("name, attrs", [("relu", {}), ("relu6", {}), ("relu6", {"threshold": 3.5})])
def test_relu_ops_with_and_without_compiled(name, attrs):
    """float32 runs the kernel (the twin under use_reference), the same bits; float64 keeps NumPy; a strided
    input is made contiguous first, never written."""
    x = gelu_input((2, 3, 9, 11))
    t = attrs.get("threshold", 6.0)
    y = run_op(name, [x], attrs)[1][0]
    with _dispatch.use_reference():
        same(run_op(name, [x], attrs)[1][0], y)
    assert np.array_equal(y, np.maximum(x, 0) if name == "relu" else np.clip(x, 0, t), equal_nan=True)
    xt = x.transpose(0, 1, 3, 2)
    before = xt.copy()
    same(run_op(name, [xt], attrs)[1][0], np.ascontiguousarray(y.transpose(0, 1, 3, 2)))
    assert xt.tobytes() == before.tobytes()
    x64 = x.astype(np.float64)
    y64 = run_op(name, [x64], attrs)[1][0]
    assert y64.dtype == np.float64 and np.array_equal(y64, np.maximum(x64, 0) if name == "relu"
                                                      else np.clip(x64, 0, t), equal_nan=True)


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


def test_sigmoid_twin_accuracy_and_special_values():
    x = np.linspace(-87, 40, 2_000_001, dtype=np.float32)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert (np.abs(twin.sigmoid(x) - want) / want).max() <= 2e-7  # measured 1.72e-7 (about 1.5 ulp)
    y = twin.sigmoid(np.array([0, -0.0, np.inf, -np.inf, np.nan, -88, 100], np.float32))
    assert y[:4].tolist() == [0.5, 0.5, 1, 0] and np.isnan(y[4]) and y[5] == 0 and y[6] == 1


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


def test_layer_norm_twin_against_float64():
    worst = [0.0, 0.0, 0.0]
    for n in (7, 384, 1000):
        for offset in (0, 1e2, 1e4):
            for sigma in (1e-2, 1, 30):
                x = (offset + sigma * rng.standard_normal((64, n))).astype(np.float32)
                scale, bias = rng.standard_normal((2, n)).astype(np.float32)
                xhat64, y64 = layer_norm64(x, scale, bias)
                xhat, y = twin.layer_norm_lastaxis(x), twin.layer_norm_lastaxis(x, scale, bias)
                worst[0] = max(worst[0], (np.abs(xhat - xhat64) / np.maximum(1, np.abs(xhat64))).max())
                worst[1] = max(worst[1], (np.abs(y - y64) / (np.abs(xhat64 * scale) + np.abs(bias))).max())
                worst[2] = max(worst[2], (np.abs(y - y64) / np.maximum(1, np.abs(y64))).max())
    assert worst[0] <= 1e-7 and worst[1] <= 3e-7 and worst[2] <= 5e-7, worst


def test_layer_norm_twin_special_rows():
    x = layer_norm_input(7, 33)
    scale, bias = rng.standard_normal((2, 33)).astype(np.float32)
    with np.errstate(all="ignore"):
        y = twin.layer_norm_lastaxis(x, scale, bias)
        xhat = twin.layer_norm_lastaxis(x)
    assert (xhat[0] == 0).all() and np.array_equal(y[0], bias)       # constant row: xhat = 0, y = bias
    assert (xhat[6] == 0).all() and np.signbit(xhat[6]).all()        # all -0: mean +0, x - mean = -0
    xhat64, _ = layer_norm64(x[1:2])                                 # 1e4 + noise: full accuracy
    assert np.abs(xhat[1] - xhat64).max() <= 1e-7 * max(1, np.abs(xhat64).max())
    assert np.isnan(y[2:5]).all() and np.isnan(xhat[2:5]).all()      # NaN, +inf, -inf: a row of NaN
    assert np.isfinite(xhat[5]).all()                                # 3e38-sized values: float64 statistics
    np.testing.assert_allclose(xhat[5], layer_norm64(x[5:6])[0][0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(twin.layer_norm_lastaxis(np.array([[1, 3]], np.float32), epsilon=0), [[-1, 1]])


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


def test_sigmoid_op_with_and_without_compiled():
    x = gelu_input((3, 70001))
    y = op("sigmoid", x)
    with _dispatch.use_reference():
        same(op("sigmoid", x), y)
    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-x.astype(np.float64)))
    ok = np.isfinite(x) & (x > -87)
    assert y.dtype == np.float32 and (np.abs(y[ok] - want[ok]) / want[ok]).max() <= 2e-7
    with threads.blas_on_one_thread():  # inside an INT8 graph's run: every thread, the same bits
        same(op("sigmoid", x), y)


def test_float_kernels_use_threads_only_inside_an_openmp_graph():
    assert threads.float_kernel_threads() == 1  # next to BLAS calls: the calling thread
    with threads.blas_on_one_thread():
        assert threads.float_kernel_threads() is None
        with threads.blas_on_one_thread(False):  # nested: the outer run decides
            assert threads.float_kernel_threads() is None
        seen = []
        worker = threading.Thread(target=lambda: seen.append(threads.float_kernel_threads()))
        worker.start()
        worker.join()
        assert seen == [1]  # another Python thread is not inside this run
    with threads.blas_on_one_thread(False):
        assert threads.float_kernel_threads() == 1
    assert threads.float_kernel_threads() == 1


def test_float64_ops_keep_the_exact_path():
    x = np.linspace(-4, 4, 33)
    assert op("gelu", x).tobytes() == gelu64(x).tobytes()
    from scipy.special import expit
    assert op("sigmoid", x).tobytes() == expit(x).tobytes()
    z = np.exp(x - x.max())
    np.testing.assert_array_equal(op("softmax", x), z / z.sum())


def ln_case(shape, begin, affine=True, offset=0.0):
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    n = int(np.prod(shape[begin:]))
    params = [rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)] if affine \
        else []
    return x, params, {"begin_norm_axis": begin, "epsilon": 1e-5}


@pytest.mark.parametrize("shape,begin", [((8, 128, 384), 2), ((4, 7, 33), 1), ((3, 1000), 1), ((5, 3, 4, 4), 1),
                                         ((2, 3, 4), 0), ((64, 7), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_op_inference_kernel_against_training_numpy(shape, begin, affine):
    x, params, attrs = ln_case(shape, begin, affine)
    ctx, (y,) = run_op("layer_norm", [x] + params, attrs)
    assert ctx.saved[0] is None                                        # the kernel ran
    _, (y_np,) = run_op("layer_norm", [x] + params, attrs, training=True)
    with _dispatch.use_reference():
        same(run_op("layer_norm", [x] + params, attrs)[1][0], y)       # the twin gives the same bits
    assert y.dtype == y_np.dtype == np.float32 and y.shape == shape
    rows = x.reshape(-1, int(np.prod(shape[begin:])))
    _, y64 = layer_norm64(rows, *params) if affine else layer_norm64(rows)
    y64 = y64.reshape(shape)
    assert (np.abs(y - y_np) / np.maximum(1, np.abs(y64))).max() <= 2e-6
    assert (np.abs(y - y64) / np.maximum(1, np.abs(y64))).max() <= 5e-7


def test_layer_norm_op_large_offset_is_more_accurate_than_numpy():
    x, params, attrs = ln_case((16, 384), 1, offset=1e4)
    y, y_np = run_op("layer_norm", [x] + params, attrs)[1][0], run_op("layer_norm", [x] + params, attrs, True)[1][0]
    y64 = layer_norm64(x, *params)[1]
    assert (np.abs(y - y64) / np.maximum(1, np.abs(y64))).max() <= 5e-7
    assert (np.abs(y_np - y64) / np.maximum(1, np.abs(y64))).max() > 1e-4  # the float32 NumPy op loses digits


def test_layer_norm_op_other_cases_keep_the_numpy_path():
    x, (s, b), attrs = ln_case((3, 4, 5), 1)
    for args, training in (([x, s, b], True), ([x.astype(np.float64), s, b], False),
                           ([x, s.astype(np.float64), b], False), ([x, s, b.astype(np.float64)], False)):
        ctx, (y,) = run_op("layer_norm", args, attrs, training=training)
        assert ctx.saved[0] is not None
        axes = (1, 2)
        inv_std = 1 / np.sqrt(args[0].var(axis=axes, keepdims=True) + 1e-5)
        want = (args[0] - args[0].mean(axis=axes, keepdims=True)) * inv_std * args[1].reshape(4, 5) \
            + args[2].reshape(4, 5)
        assert y.dtype == want.dtype and y.tobytes() == want.tobytes()


def test_layer_norm_eval_backward_recomputes_the_statistics():
    """A recorded eval-mode tape (training=False, record=True) still gets the NumPy gradients."""
    x, (s, b), attrs = ln_case((3, 4, 5), 1)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    grads = []
    for training in (False, True):
        ctx, _ = run_op("layer_norm", [x, s, b], attrs, training=training)
        ctx.needs_input_grad = (True, True, True)
        grads.append(get_op("layer_norm").backward(ctx, attrs, gy))
    for g_eval, g_train in zip(*grads):
        assert g_eval.dtype == g_train.dtype and g_eval.tobytes() == g_train.tobytes()


# ---- direct depthwise convolution ----------------------------------------------------------------------
def dw_case(n, c, m, h, w, k, bias=True):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c * m, 1) + k).astype(np.float32)
    return x, wt, (rng.standard_normal(c * m).astype(np.float32) if bias else None)


def dw64(x, w, b, stride, pad, dil):
    """The depthwise sum in float64, and the sum of the magnitudes of its terms (for the error bound)."""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    xp = np.repeat(xp, oc // c, axis=1)
    oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y, mag = np.zeros((n, oc, oh, ow)), np.zeros((n, oc, oh, ow))
    for i in range(kh):
        for j in range(kw):
            r, s = i * dil[0], j * dil[1]
            t = w[None, :, 0, i, j, None, None].astype(np.float64) * \
                xp[:, :, r:r + stride[0] * (oh - 1) + 1:stride[0], s:s + stride[1] * (ow - 1) + 1:stride[1]]
            y, mag = y + t, mag + np.abs(t)
    if b is not None:
        y, mag = y + b.reshape(1, -1, 1, 1), mag + np.abs(b).reshape(1, -1, 1, 1)
    return y, mag


DW_CASES = [  # n, c, m, h, w, kernel, stride, padding (top, left, bottom, right), dilation
    (1, 32, 1, 112, 112, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 8, 1, 57, 57, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (2, 5, 1, 23, 31, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    (1, 6, 1, 24, 19, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),
    (1, 4, 1, 16, 40, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1)),
    (3, 3, 2, 13, 11, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),  # channel multiplier 2, no padding (read in place)
    (1, 5, 1, 17, 15, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation
    (1, 3, 1, 9, 10, (3, 5), (1, 3), (0, 1, 2, 3), (1, 1)),   # rectangular kernel, asymmetric padding
    (1, 7, 1, 8, 8, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1)),
    (1, 2, 1, 5, 6, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    (1, 3, 1, 3, 3, (3, 3), (1, 1), (5, 0, 0, 4), (1, 1)),    # padding wider than the input
    (1, 3, 1, 12, 21, (3, 5), (2, 2), (1, 2, 0, 1), (2, 1)),  # the stride-2 deinterleaved loops: 3x5, 5x3, odd
    (2, 2, 3, 11, 16, (5, 3), (1, 2), (2, 1, 2, 0), (1, 1)),  # and even padded widths, row dilation, multiplier
    (2, 4, 1, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), (2, 1)),    # the flat stride-1 loop (rows < 32): row dilation,
    (1, 3, 1, 14, 30, (5, 5), (1, 1), (2, 1, 2, 2), (1, 1)),  # asymmetric padding, 31 and 32 outputs per row
    (1, 2, 1, 5, 32, (3, 3), (1, 1), (1, 0, 1, 1), (1, 1)),
    (1, 2, 1, 5, 33, (3, 3), (1, 1), (1, 1, 1, 0), (1, 1)),
]


@needs_fast
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", DW_CASES)
def test_depthwise_conv2d_compiled_equals_twin(case, bias):
    n, c, m, h, w, k, stride, pad, dil = case
    x, wt, b = dw_case(n, c, m, h, w, k, bias)
    y = check_all_paths("depthwise_conv2d", x, wt, b, stride, pad, dil)
    if fast is not None:
        same(fast.depthwise_conv2d(x, wt, b, stride, pad, dil, max_threads=1), y)
    # the twin is a float32 sum of kh * kw products (+ bias): within the recursive-summation bound of the exact sum
    y64, mag = dw64(x, wt, b, stride, pad, dil)
    assert y.shape == y64.shape
    terms = k[0] * k[1] + (b is not None)
    assert np.all(np.abs(y - y64) <= terms * 2.0 ** -24 * mag * (1 + 1e-6))


@needs_fast
def test_depthwise_conv2d_special_values_and_empty_output():
    x, wt, b = dw_case(1, 3, 1, 6, 7, (3, 3))
    x[0, 0, 2, 3], x[0, 1, 0, 0], x[0, 2, 5, 6] = np.inf, np.nan, -0.0
    wt[2, 0, 1, 1] = np.inf  # inf * padding zero = NaN, in the twin and every path alike
    check_all_paths("depthwise_conv2d", x, wt, b, (1, 1), (1, 1, 1, 1), (1, 1))
    check_all_paths("depthwise_conv2d", np.zeros((1, 2, 3, 3), np.float32) * -1, wt[:2], None, (1, 1),
                    (0, 0, 0, 0), (1, 1))
    empty = check_all_paths("depthwise_conv2d", x[:0], wt, b, (1, 1), (1, 1, 1, 1), (1, 1))
    assert empty.shape == (0, 3, 6, 7)


def test_depthwise_conv2d_bad_inputs():
    x, wt, b = dw_case(1, 4, 1, 8, 8, (3, 3))
    bad = [  # (exception, message, args)
        (TypeError, "x: expected dtype float32, got float64", (x.astype(np.float64), wt, b)),
        (TypeError, "w: expected dtype float32, got float64", (x, wt.astype(np.float64), b)),
        (ValueError, "x: must be C-contiguous", (x.transpose(0, 1, 3, 2), wt, b)),
        (ValueError, "x: expected 4 dimensions", (x[0], wt, b)),
        (ValueError, r"w must be \(C\*M, 1, KH, KW\)", (x, wt[:3], b)),
        (ValueError, r"w must be \(C\*M, 1, KH, KW\)", (x, np.ones((4, 2, 3, 3), np.float32), b)),
        (ValueError, "bias must hold 4 values", (x, wt, b[:3])),
        (TypeError, "bias: expected dtype float32", (x, wt, b.astype(np.float64))),
        (ValueError, "stride", (x, wt, b, (0, 1))),
        (ValueError, "padding", (x, wt, b, (1, 1), (-1, 0, 0, 0))),
        (ValueError, "padding", (x, wt, b, (1, 1), (1, 1))),
        (ValueError, "dilation", (x, wt, b, (1, 1), (0, 0, 0, 0), (1, 0))),
        (ValueError, "does not fit", (x, np.ones((4, 1, 11, 3), np.float32), b)),
    ]
    for mod in ([fast] if fast is not None else []) + [twin]:
        for exc, msg, args in bad:
            with pytest.raises(exc, match=msg):
                mod.depthwise_conv2d(*args)
        with pytest.raises(ValueError, match="max_threads: must lie in"):
            mod.depthwise_conv2d(x, wt, b, max_threads=0)
        with pytest.raises(TypeError, match="max_threads: expected an int"):
            mod.depthwise_conv2d(x, wt, b, max_threads=1.0)


def test_depthwise_conv2d_op_uses_the_kernel_in_float32_only():
    x, wt, b = dw_case(2, 6, 1, 15, 14, (3, 3))
    attrs = {"strides": [2, 2], "paddings": [1, 1], "dilations": [1, 1], "groups": 6}
    y = run_op("depthwise_conv2d", [x, wt, b], attrs)[1][0]
    same(y, twin.depthwise_conv2d(x, wt, b, (2, 2), (1, 1, 1, 1), (1, 1)))
    with _dispatch.use_reference():
        same(run_op("depthwise_conv2d", [x, wt, b], attrs)[1][0], y)
    same(run_op("conv2d", [x.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2), wt, b], attrs)[1][0], y)
    # float64 keeps the im2col route (exact float64 sums, what the gradient checks run on)
    x64, w64, b64 = x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64)
    y64 = run_op("depthwise_conv2d", [x64, w64, b64], attrs)[1][0]
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, dw64(x, wt, b, (2, 2), (1, 1, 1, 1), (1, 1))[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, y64, rtol=0, atol=1e-5)


@needs_fast
def test_arena_reuses_freed_buffers_of_the_same_size_only_while_entered():
    """Arrays allocated inside arena_enter / arena_exit go back to the arena when freed (even after exit); a new
    allocation of exactly that size gets the block back; small ones and allocations outside are NumPy's."""
    fast.arena_release()
    before = fast.arena_stats()
    previous = fast.arena_enter()
    try:
        a = np.full(1 << 18, 3.0, np.float32)   # 1 MB
        small = np.ones(100, np.float32)
        address = a.ctypes.data
        del a, small
        assert fast.arena_stats()["cached_blocks"] == 1
        b = np.zeros(1 << 18, np.float32)          # calloc: zeros, not the cached block
        c = np.empty(1 << 18, np.float32)          # the cached block
        assert not b.any() and c.ctypes.data == address
        d = np.empty((1 << 18) + 1, np.float32)    # another size: a miss
    finally:
        fast.arena_exit(previous)
    e = np.empty(1 << 18, np.float32)              # outside: NumPy's allocator
    stats = fast.arena_stats()
    assert stats["hits"] - before["hits"] == 1 and stats["misses"] - before["misses"] == 2
    del b, c, d, e
    assert fast.arena_stats()["cached_blocks"] == 3
    fast.arena_release()
    assert fast.arena_stats()["cached_bytes"] == 0


def test_executor_runs_in_the_arena_and_results_do_not_change():
    """The executor scopes the arena to each run: the outputs are the same arrays of numbers, and a second run
    takes its large buffers from the cache."""
    from refquant.models import build
    m = build("mobilenet_v2", input_size=64)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    y1 = m.run({"x": x})
    with _dispatch.use_reference():
        y0 = m.run({"x": x})
    assert all(np.array_equal(y1[k], y0[k]) for k in y0)
    if fast is not None:
        hits = fast.arena_stats()["hits"]
        m.run({"x": x})
        assert fast.arena_stats()["hits"] > hits


@needs_fast
def test_nearest_f32_compiled_equals_twin_and_rejects_the_same_inputs():
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    for iy, ix in [(np.arange(10) // 2, np.arange(21) // 3), (np.array([4, 0, 0, 2]), np.array([6])),
                   (np.zeros(0, np.int64), np.arange(7))]:
        iy, ix = iy.astype(np.int64), ix.astype(np.int64)
        y = fast.nearest_f32(x, iy, ix)
        same(y, twin.nearest_f32(x, iy, ix))
        assert y.flags.c_contiguous and y.shape == (2, 3, len(iy), len(ix))
    for bad in [(x, np.array([5]), np.arange(7)), (x, np.array([-1]), np.arange(7)),
                (x, np.arange(5, dtype=np.int32), np.arange(7)), (x.astype(np.float64), np.arange(5), np.arange(7)),
                (x[:, :, :, ::2], np.arange(5), np.arange(4))]:
        for module in (fast, twin):
            with pytest.raises((ValueError, TypeError)):
                module.nearest_f32(*bad)


@pytest.mark.parametrize("shape, k, s, pad, ceil", [((1, 3, 9, 11), (3, 3), (2, 2), (1, 1, 1, 1), False),
                                                     ((2, 2, 7, 8), (2, 3), (2, 1), (0, 1, 2, 0), True),
                                                     ((1, 1, 5, 5), (5, 5), (1, 1), (2, 2, 2, 2), False),
                                                     ((1, 2, 4, 6), (3, 2), (3, 3), (0, 0, 0, 0), True)])
def test_max_pool_f32_is_pool2d_tap_by_tap(shape, k, s, pad, ceil):
    """The compiled max pool, its twin and pool2d's float64 tap loop give the same values (NaN stays NaN)."""
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[::7] = np.nan
    attrs = {"pooling_type": "max", "ksize": list(k), "strides": list(s), "paddings": list(pad), "ceil_mode": ceil}
    _, (y,) = run_op("pool2d", [x], attrs)
    _, (y64,) = run_op("pool2d", [x.astype(np.float64)], attrs)  # not float32: pool2d's NumPy loop
    same(y, y64.astype(np.float32))
    out_hw = y.shape[2:]
    same(twin.max_pool_f32(x, k, s, pad[:2], out_hw), y)
    if fast is not None:
        same(fast.max_pool_f32(x, k, s, pad[:2], out_hw), y)
        for bad in [(x.astype(np.float64), k, s, pad[:2], out_hw), (x, (0, 1), s, pad[:2], out_hw),
                    (x, k, s, (1, 2, 3), out_hw), (x[:, :, :, ::2], k, s, pad[:2], out_hw)]:
            for module in (fast, twin):
                with pytest.raises((ValueError, TypeError)):
                    module.max_pool_f32(*bad)


@pytest.mark.parametrize("shape", [(1, 5, 1, 1), (2, 3, 1, 7), (1, 4, 3, 3), (1, 6, 7, 7), (2, 3, 1, 129),
                                   (1, 2, 14, 14), (1, 3, 10, 15), (1, 2, 80, 120), (1, 1, 1, 1000)])
def test_global_avg_pool_nchw_f32_is_numpy_mean_bit_for_bit(shape):
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 100)).astype(np.float32)
    x[0, 0] = -0.0
    x.flat[3::11] = rng.choice(np.array([np.inf, -np.inf, np.nan, 1e30], np.float32), size=x.flat[3::11].shape)
    with np.errstate(all="ignore"):  # inf - inf
        want = x.mean(axis=(2, 3), keepdims=True)
        same(twin.global_avg_pool_nchw_f32(x), want)
        _, (y,) = run_op("pool2d", [x], {"pooling_type": "avg", "global_pooling": True})
    same(y, want)
    if fast is not None:
        same(fast.global_avg_pool_nchw_f32(x), want)
        for bad in [x.astype(np.float64), np.stack([x, x], -1)[..., 0], x[:, :, :0], x[0]]:
            for module in (fast, twin):
                with pytest.raises((ValueError, TypeError)):
                    module.global_avg_pool_nchw_f32(bad)
