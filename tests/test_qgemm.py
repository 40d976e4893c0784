"""INT8 GEMM (kernels/qgemm.pyx and its twin refquant/reference/qgemm.py).

Every path this CPU can run is compared bit for bit with the twin, and the twin with a float64 formula:
    acc = a @ w - a_zero * col_sum + bias        (int32)
    f32: float32(acc) * scale, clamped            u8/s8: clamp(rint(float32(acc) * scale) + out_zero, lo, hi)
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.reference import qgemm as twin

FORCED = os.environ.get("REFQUANT_FORCE_REFERENCE", "") not in ("", "0")
try:
    from refquant._kernels import qgemm as fast
except ImportError:  # not built: only the twin's own tests run
    fast = None
needs_fast = pytest.mark.skipif(fast is None or FORCED, reason="refquant._kernels.qgemm is not built")
PATHS = fast.available_paths() if fast is not None else []
OUT_NP = {"s32": np.int32, "f32": np.float32, "u8": np.uint8, "s8": np.int8}


def rand_case(rng, M, K, N):
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (K, N), dtype=np.int8)
    return a, w


def epilogue_args(rng, w, out_dtype, a_zero=128, with_bias=True, clamp=False):
    N = w.shape[1]
    kw = {"out_dtype": out_dtype, "a_zero": a_zero}
    if a_zero:
        kw["col_sum"] = twin.col_sums(w)
    if with_bias:
        kw["bias"] = rng.integers(-50000, 50000, N, dtype=np.int32)
    if out_dtype != "s32":
        # scales that spread the outputs over the u8/s8 range (|acc| ~ sqrt(K) * 128 * 74 for random data),
        # plus some columns of 0.5: exact halves, and saturation
        kw["scale"] = (rng.random(N) * 300.0 / (np.sqrt(w.shape[0]) * 128 * 74)).astype(np.float32)
        kw["scale"][::3] = np.float32(0.5)
    if out_dtype == "u8":
        kw["out_zero"] = 128 if a_zero else 0
    if clamp:
        kw["lo"], kw["hi"] = {"f32": (0.0, 6.5), "u8": (10, 200), "s8": (-20, 90), "s32": (None, None)}[out_dtype]
    return {k: v for k, v in kw.items() if v is not None}


def same(x, y):
    """Bit-identical arrays of the same dtype and shape."""
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.ascontiguousarray(x).view(np.uint8), np.ascontiguousarray(y).view(np.uint8))


# ---- the twin against the math ----

def test_hand_worked_example():
    # a (2x3) @ w (3x2): [1,2,3]@ -> [1*1 + 2*2 + 3*-3, 1*-1 + 2*0 + 3*4] = [-4, 11]; [4,5,6] -> [-4, 20]
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    w = np.array([[1, -1], [2, 0], [-3, 4]], dtype=np.int8)
    bias = np.array([3, -1], dtype=np.int32)
    scale = np.array([0.5, 0.5], dtype=np.float32)
    impls = [twin] + ([fast] if fast is not None and not FORCED else [])
    for impl in impls:
        p = impl.pack_b(w)
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2), [[-4, 11], [-4, 20]])
        # + bias: [[-1, 10], [-1, 19]]; * 0.5: [[-0.5, 5], [-0.5, 9.5]]; rint half to even: [[-0, 5], [-0, 10]]
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2, bias=bias), [[-1, 10], [-1, 19]])
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2, bias=bias, scale=scale, out_dtype="f32"),
                                      np.array([[-0.5, 5], [-0.5, 9.5]], dtype=np.float32))
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2, bias=bias, scale=scale, out_dtype="s8"),
                                      np.array([[0, 5], [0, 10]], dtype=np.int8))
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2, bias=bias, scale=scale, out_dtype="u8",
                                                     out_zero=128), np.array([[128, 133], [128, 138]], np.uint8))
        # relu on f32 and a clamp on u8
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2, bias=bias, scale=scale, out_dtype="f32", lo=0.0),
                                      np.array([[0, 5], [0, 9.5]], dtype=np.float32))
        np.testing.assert_array_equal(impl.gemm_u8s8(a, p, 3, 2, bias=bias, scale=scale, out_dtype="u8",
                                                     out_zero=128, lo=130, hi=135),
                                      np.array([[130, 133], [130, 135]], np.uint8))
        # a holding s8 values shifted by +128: a_s8 = a - 128, a_zero=128 undoes the shift
        a_s8 = np.array([[-3, 0, 7], [127, -128, 1]], dtype=np.int8)
        got = impl.gemm_u8s8((a_s8.astype(np.int16) + 128).astype(np.uint8), p, 3, 2, a_zero=128,
                             col_sum=impl.col_sums(w))
        np.testing.assert_array_equal(got, a_s8.astype(np.int32) @ w.astype(np.int32))


@pytest.mark.parametrize("out_dtype", ["s32", "f32", "u8", "s8"])
@pytest.mark.parametrize("a_zero", [0, 128])
def test_twin_matches_float64_formula(out_dtype, a_zero):
    rng = np.random.default_rng(7)
    a, w = rand_case(rng, 13, 70, 21)
    kw = epilogue_args(rng, w, out_dtype, a_zero=a_zero, clamp=out_dtype != "s32")
    got = twin.gemm_u8s8(a, twin.pack_b(w), 70, 21, **kw)
    acc = a.astype(np.float64) @ w.astype(np.float64) - a_zero * w.astype(np.float64).sum(0) + kw["bias"]
    if out_dtype == "s32":
        np.testing.assert_array_equal(got, acc.astype(np.int32))
        return
    # float32(acc) * scale rounded once to float32: the float64 product of two float32 values is exact
    f = (acc.astype(np.float32).astype(np.float64) * kw["scale"].astype(np.float64)).astype(np.float32)
    f = f.astype(np.float64)
    if out_dtype == "f32":
        np.testing.assert_array_equal(got, np.clip(f, kw["lo"], kw["hi"]).astype(np.float32))
    else:
        want = np.clip(np.rint(f) + kw.get("out_zero", 0), kw["lo"], kw["hi"])
        np.testing.assert_array_equal(got, want.astype(OUT_NP[out_dtype]))


def test_twin_pack_round_trip_and_col_sums():
    rng = np.random.default_rng(1)
    for K, N in [(1, 1), (5, 17), (64, 32), (13, 3)]:
        w = rng.integers(-128, 128, (K, N), dtype=np.int8)
        p = twin.pack_b(w)
        assert p.ctypes.data % 64 == 0 and p.ndim == 1 and p.dtype == np.int8
        np.testing.assert_array_equal(twin.unpack_b(p, K, N), w)
        np.testing.assert_array_equal(twin.col_sums(w), w.astype(np.int64).sum(0))


# ---- every compiled path against the twin ----

SHAPES = [(1, 1, 1), (1, 4, 16), (2, 3, 2), (3, 5, 17), (7, 13, 33), (5, 1, 7), (1, 4096, 20), (33, 4096, 3),
          (17, 64, 16), (64, 128, 48), (100, 300, 65), (9, 7, 1), (1, 768, 300), (37, 257, 129), (8, 32, 64),
          (6, 9, 80), (130, 20, 31), (1, 2, 100), (300, 20, 20), (700, 9, 33), (1, 40, 60), (3, 21, 120)]


@needs_fast
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_path_matches_twin(path, shape):
    M, K, N = shape
    rng = np.random.default_rng(M * 1000003 + K * 101 + N)
    a, w = rand_case(rng, M, K, N)
    packed = fast.pack_b(w)
    same(fast.gemm_u8s8(a, packed, K, N, path=path), twin.gemm_u8s8(a, twin.pack_b(w), K, N))
    for out_dtype in ("u8", "f32"):
        kw = epilogue_args(rng, w, out_dtype)
        same(fast.gemm_u8s8(a, packed, K, N, path=path, **kw), twin.gemm_u8s8(a, packed, K, N, **kw))


@needs_fast
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("out_dtype", ["s32", "f32", "u8", "s8"])
def test_path_epilogue_options(path, out_dtype):
    rng = np.random.default_rng(11)
    M, K, N = 19, 45, 37
    a, w = rand_case(rng, M, K, N)
    packed = fast.pack_b(w)
    for a_zero in (0, 128):
        for with_bias in (False, True):
            for clamp in (False, True):
                kw = epilogue_args(rng, w, out_dtype, a_zero=a_zero, with_bias=with_bias, clamp=clamp)
                if out_dtype == "u8" and a_zero == 0:
                    kw["out_zero"] = 0
                same(fast.gemm_u8s8(a, packed, K, N, path=path, **kw), twin.gemm_u8s8(a, packed, K, N, **kw))


@needs_fast
@pytest.mark.parametrize("path", PATHS)
def test_rounding_half_to_even_and_saturation(path):
    # a = 0, so acc = bias: every bias value from -300 to 300 with scale 0.5 gives the halves, rounded to even,
    # and the large ones saturate at the type's range
    K, N = 1, 16
    zeros = np.zeros((3, K), dtype=np.uint8)
    packed = fast.pack_b(np.ones((K, N), dtype=np.int8))
    for val in range(-300, 301):
        kw = dict(bias=np.full(N, val, np.int32), scale=np.full(N, 0.5, np.float32))
        for od, oz in (("u8", 128), ("s8", 0), ("u8", 0)):
            got = fast.gemm_u8s8(zeros, packed, K, N, path=path, out_dtype=od, out_zero=oz, **kw)
            info = np.iinfo(OUT_NP[od])
            want = np.clip(np.rint(val * 0.5) + oz, info.min, info.max)
            assert (got == want).all(), (od, oz, val)


@needs_fast
@pytest.mark.parametrize("path", PATHS)
def test_extreme_values_no_saturation(path):
    for K in (4096, 65536):
        for a_val, w_val in ((255, -128), (255, 127), (0, -128), (1, 1)):
            a = np.full((2, K), a_val, dtype=np.uint8)
            w = np.full((K, 16), w_val, dtype=np.int8)
            got = fast.gemm_u8s8(a, fast.pack_b(w), K, 16, path=path)
            assert (got == np.int64(a_val) * w_val * K).all()
    # mixed extremes: pairs of 255*127 and 255*-128 (vpmaddubsw would saturate these pair sums)
    rng = np.random.default_rng(3)
    a = np.full((5, 4000), 255, dtype=np.uint8)
    w = rng.choice(np.array([-128, 127], dtype=np.int8), size=(4000, 40))
    same(fast.gemm_u8s8(a, fast.pack_b(w), 4000, 40, path=path), twin.gemm_u8s8(a, twin.pack_b(w), 4000, 40))


def test_pair_flag_marks_weights_whose_pairs_fit_s16():
    # flag set iff |w[2j, n]| + |w[2j+1, n]| <= 128 for every K pair: then 255 * 128 = 32640 <= 32767
    ok = [np.full((4, 16), 64, np.int8), np.full((4, 16), -64, np.int8), np.array([[127], [1], [-1], [-127]], np.int8),
          np.array([[1], [127], [127], [1]], np.int8), np.zeros((3, 5), np.int8)]   # (127, 127) straddles two pairs
    bad = [np.array([[127], [2]], np.int8), np.array([[-128], [1]], np.int8), np.full((6, 20), 65, np.int8)]
    for w in ok:
        assert twin.header_flags(twin.pack_b(w)) == twin.PAIRS_FIT_S16, w.ravel()
    for w in bad:
        assert twin.header_flags(twin.pack_b(w)) == 0, w.ravel()
    # refresh_flags recomputes a forged flag from the panels
    p = twin.pack_b(bad[2])
    twin.set_header_flags(p, twin.PAIRS_FIT_S16)
    twin.refresh_flags(p)
    assert twin.header_flags(p) == 0


@needs_fast
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_pair_fit_weights_match_twin(path, shape):
    # weights in [-64, 64] (convert_to_int8(reduce_range=True)): the AVX2 path takes its vpmaddubsw kernel
    M, K, N = shape
    rng = np.random.default_rng(M * 7919 + K * 31 + N)
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-64, 65, (K, N), dtype=np.int8)
    packed = fast.pack_b(w)
    same(packed, twin.pack_b(w))
    same(fast.gemm_u8s8(a, packed, K, N, path=path), twin.gemm_u8s8(a, packed, K, N))
    kw = epilogue_args(rng, w, "u8")
    same(fast.gemm_u8s8(a, packed, K, N, path=path, **kw), twin.gemm_u8s8(a, packed, K, N, **kw))


@needs_fast
@pytest.mark.parametrize("path", PATHS)
def test_pair_fit_extremes_are_exact(path):
    # the largest pair sums that still fit: 255*64 + 255*64 and 255*127 + 255*1 = 32640, over long K
    for K in (4, 4096):
        for pair in ((64, 64), (-64, -64), (127, 1), (-1, -127), (64, -64)):
            w = np.repeat(np.tile(np.array(pair, np.int8), K // 2)[:, None], 16, axis=1)
            a = np.full((5, K), 255, dtype=np.uint8)
            packed = fast.pack_b(w)
            assert twin.header_flags(packed) == twin.PAIRS_FIT_S16
            got = fast.gemm_u8s8(a, packed, K, 16, path=path)
            assert (got == 255 * (pair[0] + pair[1]) * (K // 2)).all(), (path, K, pair)


@needs_fast
@pytest.mark.parametrize("path", PATHS)
def test_strided_a_and_out(path):
    rng = np.random.default_rng(5)
    M, K, N = 23, 50, 41
    wide = rng.integers(0, 256, (M, K + 13), dtype=np.uint8)
    w = rng.integers(-128, 128, (K, N), dtype=np.int8)
    packed = fast.pack_b(w)
    for a in (wide[:, :K], wide[:, 13:], wide[::2, 3:3 + K]):
        for out_dtype in ("s32", "u8", "f32", "s8"):
            kw = epilogue_args(rng, w, out_dtype)
            want = twin.gemm_u8s8(np.ascontiguousarray(a), packed, K, N, **kw)
            big = np.full((a.shape[0], N + 9), 77, dtype=OUT_NP[out_dtype])
            out = big[:, 4:4 + N]
            assert fast.gemm_u8s8(a, packed, K, N, path=path, out=out, **kw) is out
            same(out, want)
            assert (big[:, :4] == 77).all() and (big[:, 4 + N:] == 77).all()  # nothing written outside


@needs_fast
@pytest.mark.parametrize("shape", [(64, 512, 512), (4096, 256, 16), (3, 640, 2000), (100, 64, 100)])
def test_one_and_two_threads_identical(shape):
    M, K, N = shape
    rng = np.random.default_rng(9)
    a, w = rand_case(rng, M, K, N)
    packed = fast.pack_b(w)
    kw = epilogue_args(rng, w, "u8")
    before = threads.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            threads.set_num_threads(n)
            results.append((fast.gemm_u8s8(a, packed, K, N), fast.gemm_u8s8(a, packed, K, N, **kw)))
    finally:
        threads.set_num_threads(before)
    same(results[0][0], results[1][0])
    same(results[0][1], results[1][1])
    same(results[0][0], twin.gemm_u8s8(a, packed, K, N))


SUBPROCESS = """
import json, numpy as np
from refquant._kernels import qgemm
rng = np.random.default_rng(4)
a = rng.integers(0, 256, (21, 333), dtype=np.uint8); w = rng.integers(-128, 128, (333, 45), dtype=np.int8)
out = qgemm.gemm_u8s8(a, qgemm.pack_b(w), 333, 45, a_zero=128, col_sum=qgemm.col_sums(w))
print(json.dumps([qgemm.current_path(), out.tolist()]))
"""


def _run_sub(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("REFQUANT_FORCE_PORTABLE", "REFQUANT_PATH_QGEMM")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", SUBPROCESS], env=env, capture_output=True, text=True)


CHAINS = [dict(hard_swish=(3.0, 6.0, 6.0), want_float=False, quantize=(11.5, 128, 1, 255)),
          dict(pre=(0.7, 0.1), hard_swish=(3.0, 6.0, 6.0), post=(1.2, -0.3), quantize=(5.0, 0, 0, 255)),
          dict(pre=(1.5, -0.2))]


@needs_fast
@pytest.mark.parametrize("shape", [(1, 5, 3), (7, 27, 8), (100, 16, 88), (300, 32, 200), (40, 64, 4500),
                                   (5000, 8, 24)], ids=lambda s: "x".join(map(str, s)))
def test_chain_post_op_matches_twin(shape):
    # the scalar chain as a post-op, run on each block of float output while it is in cache (columns beyond
    # the 8192-float block included), equals the GEMM then the chain, bit for bit, on every path and thread count
    rng = np.random.default_rng(sum(shape))
    M, K, N = shape
    a, w = rand_case(rng, M, K, N)
    before = threads.get_num_threads()
    try:
        for weights in (w, (w // 2).astype(np.int8)):            # both AVX2 kernels
            kw = epilogue_args(rng, weights, "f32", clamp=N > 100)
            packed = twin.pack_b(weights)
            for chain in CHAINS:
                ty, tq = twin.gemm_u8s8(a, packed, K, N, chain=chain, **kw)
                for path in PATHS:
                    for n in (1, 2):
                        threads.set_num_threads(n)
                        y, q = fast.gemm_u8s8(a, packed, K, N, chain=chain, path=path, **kw)
                        for got, want in ((y, ty), (q, tq)):
                            assert (got is None) == (want is None)
                            if want is not None:
                                same(got, want)
    finally:
        threads.set_num_threads(before)


@pytest.mark.parametrize("impl", [twin] + ([fast] if fast is not None else []), ids=lambda m: m.__name__)
def test_chain_needs_a_float_output(impl):
    rng = np.random.default_rng(1)
    a, w = rand_case(rng, 4, 8, 8)
    packed = twin.pack_b(w)
    with pytest.raises(ValueError, match="chain needs"):
        impl.gemm_u8s8(a, packed, 8, 8, chain=CHAINS[0], **epilogue_args(rng, w, "u8"))
    with pytest.raises(ValueError, match="nothing to return"):
        impl.gemm_u8s8(a, packed, 8, 8, chain={"want_float": False}, **epilogue_args(rng, w, "f32"))


@needs_fast
def test_environment_forces_a_path():
    default = _run_sub({})
    portable = _run_sub({"REFQUANT_FORCE_PORTABLE": "1"})
    forced = _run_sub({"REFQUANT_PATH_QGEMM": PATHS[-2] if len(PATHS) > 1 else "portable"})
    for run in (default, portable, forced):
        assert run.returncode == 0, run.stderr
    (p0, r0), (p1, r1), (p2, r2) = (json.loads(run.stdout) for run in (default, portable, forced))
    assert (p0, p1, p2) == (PATHS[0], "portable", PATHS[-2] if len(PATHS) > 1 else "portable")
    assert r0 == r1 == r2


@needs_fast
@pytest.mark.parametrize("family", ["qgemm", "qdirect", "floatops"])
def test_environment_errors(monkeypatch, family):
    """An unknown or unrunnable REFQUANT_PATH_<FAMILY> is an error when the path is first needed."""
    paths = importlib.import_module(f"refquant._kernels.{family}")._PATHS
    missing = [p for p in paths.known if p not in paths.available()]
    monkeypatch.delenv("REFQUANT_FORCE_PORTABLE", raising=False)
    var = f"REFQUANT_PATH_{family.upper()}"
    try:
        for value, exc, text in [("sse9", ValueError, "unknown path")] + \
                                [(p, RuntimeError, "cannot run it") for p in missing[:1]]:
            monkeypatch.setenv(var, value)
            paths.reset()
            with pytest.raises(exc, match=text):
                paths.current()
        monkeypatch.setenv(var, "portable")
        paths.reset()
        assert paths.current() == "portable" and paths.forced() == f"{var}=portable"
        monkeypatch.setenv("REFQUANT_FORCE_PORTABLE", "1")
        monkeypatch.setenv(var, "sse9")
        paths.reset()
        assert paths.current() == "portable"
    finally:
        monkeypatch.undo()
        paths.reset()


@needs_fast
def test_pack_b_bytes_match_the_twin():
    rng = np.random.default_rng(2)
    for K, N in [(1, 1), (3, 17), (64, 64), (130, 33), (5, 48)]:
        w = rng.integers(-128, 128, (K, N), dtype=np.int8)
        p = fast.pack_b(w)
        assert p.ctypes.data % 64 == 0 and p.dtype == np.int8 and p.ndim == 1
        same(p, twin.pack_b(w))
        same(fast.col_sums(w), twin.col_sums(w))
    # a packed array that lost its 64-byte alignment (e.g. loaded from a file) still works on every path
    w = rng.integers(-128, 128, (37, 45), dtype=np.int8)
    a = rng.integers(0, 256, (11, 37), dtype=np.uint8)
    p = fast.pack_b(w)
    moved = np.empty(p.shape[0] + 1, dtype=np.int8)[1:]
    moved[:] = p
    for path in PATHS:
        same(fast.gemm_u8s8(a, moved, 37, 45, path=path), fast.gemm_u8s8(a, p, 37, 45, path=path))
    # a non-contiguous weight view packs like its copy
    w = rng.integers(-128, 128, (40, 60), dtype=np.int8)
    same(fast.pack_b(w[::2, 1::3]), twin.pack_b(np.ascontiguousarray(w[::2, 1::3])))


def _bad_input_cases(impl):
    rng = np.random.default_rng(0)
    a, w = rand_case(rng, 4, 10, 20)
    p = twin.pack_b(w)
    g = impl.gemm_u8s8
    return [
        (TypeError, "uint8", lambda: g(a.astype(np.int8), p, 10, 20)),
        (TypeError, "ndarray", lambda: g(a.tolist(), p, 10, 20)),
        (ValueError, "K=11", lambda: g(np.zeros((4, 11), np.uint8), p, 10, 20)),
        (ValueError, "2-D", lambda: g(a.reshape(2, 2, 10), p, 10, 20)),
        (ValueError, "M >= 1", lambda: g(a[:0], p, 10, 20)),
        (ValueError, "contiguous", lambda: g(np.zeros((4, 20), np.uint8)[:, ::2], p, 10, 20)),
        (ValueError, "K=10, N=20", lambda: g(a, p, 10, 21)),
        (ValueError, "K=10, N=20", lambda: g(np.zeros((4, 12), np.uint8), p, 12, 20)),
        (ValueError, "bad magic", lambda: g(a, np.zeros(p.shape, np.int8), 10, 20)),
        (ValueError, "pack_b", lambda: g(a, w, 10, 20)),
        (ValueError, "pack_b", lambda: g(a, np.zeros(3, np.int8), 10, 20)),
        (ValueError, "wrong size", lambda: g(a, p[:-4].copy(), 10, 20)),
        (ValueError, "col_sum", lambda: g(a, p, 10, 20, a_zero=128)),
        (TypeError, "col_sum", lambda: g(a, p, 10, 20, a_zero=128, col_sum=np.zeros(20, np.int64))),
        (ValueError, "a_zero", lambda: g(a, p, 10, 20, a_zero=-1)),
        (TypeError, "bias", lambda: g(a, p, 10, 20, bias=np.zeros(20, np.float32))),
        (ValueError, "bias", lambda: g(a, p, 10, 20, bias=np.zeros(19, np.int32))),
        (ValueError, "needs scale", lambda: g(a, p, 10, 20, out_dtype="u8")),
        (TypeError, "scale", lambda: g(a, p, 10, 20, out_dtype="f32", scale=np.ones(20))),
        (ValueError, "finite", lambda: g(a, p, 10, 20, out_dtype="f32", scale=np.full(20, np.nan, np.float32))),
        (ValueError, "out_dtype", lambda: g(a, p, 10, 20, out_dtype="u16")),
        (ValueError, "do not apply", lambda: g(a, p, 10, 20, scale=np.ones(20, np.float32))),
        (ValueError, "lo", lambda: g(a, p, 10, 20, out_dtype="u8", scale=1.0, lo=-1)),
        (ValueError, "lo <= hi", lambda: g(a, p, 10, 20, out_dtype="u8", scale=1.0, lo=9, hi=3)),
        (TypeError, "int32", lambda: g(a, p, 10, 20, out=np.zeros((4, 20), np.int64))),
        (ValueError, "shape", lambda: g(a, p, 10, 20, out=np.zeros((4, 21), np.int32))),
        (ValueError, "contiguous", lambda: g(a, p, 10, 20, out=np.zeros((4, 40), np.int32)[:, ::2])),
        (TypeError, "bias must be an integer", lambda: g(a, p, 10, 20, bias=1.5)),
        (TypeError, "K and N must be ints", lambda: g(a, p, 10.0, 20)),
        (TypeError, "K and N must be ints", lambda: g(a, p, True, 20)),
        (ValueError, "pack_b", lambda: g(a, np.zeros(2 * p.size, np.int8)[::2], 10, 20)),
        (ValueError, "chain needs", lambda: g(a, p, 10, 20, chain={})),
        (TypeError, "int8", lambda: impl.pack_b(w.astype(np.int16))),
        (ValueError, "2-D", lambda: impl.pack_b(w[0])),
    ]


@pytest.mark.parametrize("impl", [twin] + ([fast] if fast is not None and not FORCED else []),
                         ids=lambda m: m.__name__)
def test_bad_inputs_raise_clear_errors(impl):
    for exc, text, call in _bad_input_cases(impl):
        with pytest.raises(exc, match=text):
            call()


@needs_fast
def test_kernel_and_twin_reject_the_same_inputs_the_same_way():
    # one validation (the twin's check_plan / check_call): the same error class and message on both sides
    for (_, _, bad_fast), (_, _, bad_twin) in zip(_bad_input_cases(fast), _bad_input_cases(twin)):
        errors = []
        for call in (bad_fast, bad_twin):
            with pytest.raises((TypeError, ValueError)) as info:
                call()
            errors.append((type(info.value), str(info.value).replace("qgemm.pack_b", "pack_b")))
        assert errors[0] == errors[1]


@needs_fast
def test_an_unknown_path_is_rejected():
    rng = np.random.default_rng(0)
    a, w = rand_case(rng, 4, 10, 20)
    with pytest.raises(ValueError, match="must be one of"):
        fast.gemm_u8s8(a, fast.pack_b(w), 10, 20, path="no-such-path")


@needs_fast
def test_paths_and_peaks_are_reported():
    assert fast.available_paths()[-1] == "portable"
    assert fast.current_path() in fast.available_paths()
    peak = _dispatch.compiled("peak")
    if "avx2" in PATHS:
        assert peak.fma_peak_gflops(seconds=0.03) > 1
        assert peak.vpmaddwd_peak_gops(seconds=0.03) > 1
    if "avx512vnni" in PATHS or "avxvnni" in PATHS:
        assert peak.vpdpbusd_peak_gops(seconds=0.03) > 1
    else:
        assert peak.vpdpbusd_peak_gops(seconds=0.03) is None


# ---- gemm_u8s8_batch: B an activation, packed per call ----
def _batch_case(rng, batch, M, K, N, trans_b):
    a = rng.integers(0, 256, batch + (M, K), dtype=np.uint8)
    b = rng.integers(-128, 128, batch + ((N, K) if trans_b else (K, N)), dtype=np.int8)
    return a, b


def test_batch_twin_matches_the_formula():
    rng = np.random.default_rng(3)
    a, b = _batch_case(rng, (2, 3), 5, 7, 9, False)
    got = twin.gemm_u8s8_batch(a, b, a_zero=17, scale=0.25)
    acc = np.einsum("xymk,xykn->xymn", a.astype(np.float64) - 17, b.astype(np.float64))
    same(got, (acc * 0.25).astype(np.float32))                           # exact: small integers times 2^-2
    same(twin.gemm_u8s8_batch(a, np.ascontiguousarray(np.swapaxes(b, -1, -2)), a_zero=17, scale=0.25,
                              trans_b=True), got)


@needs_fast
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", [((3,), 1, 1, 1), ((2, 5), 13, 7, 21), ((8, 12), 128, 32, 128),
                                   ((4,), 33, 128, 17)])
def test_batch_path_matches_twin(path, trans_b, shape):
    rng = np.random.default_rng(len(shape[0]) + shape[2])
    batch, M, K, N = shape
    a, b = _batch_case(rng, batch, M, K, N, trans_b)
    for bb in (b, (b // 3).astype(np.int8)):                  # full range, and pairs that fit s16 (AVX2 maddubs)
        same(fast.gemm_u8s8_batch(a, bb, a_zero=37, scale=0.013, trans_b=trans_b, path=path),
             twin.gemm_u8s8_batch(a, bb, a_zero=37, scale=0.013, trans_b=trans_b))
    add = rng.standard_normal(batch[:1] + (1,) * (len(batch) - 1) + (1, N)).astype(np.float32)  # a mask's shape
    same(fast.gemm_u8s8_batch(a, b, a_zero=3, scale=0.5, trans_b=trans_b, add=add, path=path),
         twin.gemm_u8s8_batch(a, b, a_zero=3, scale=0.5, trans_b=trans_b) + add)


@needs_fast
def test_batch_views_and_threads():
    # transposed and broadcast views are read through their strides; 1 and 2 threads give the same bits
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (2, 40, 3, 24), dtype=np.uint8).transpose(0, 2, 1, 3)       # (2, 3, 40, 24) heads
    b = np.broadcast_to(rng.integers(-128, 128, (1, 3, 24, 40), dtype=np.int8), (2, 3, 24, 40))
    ref = twin.gemm_u8s8_batch(a, b, a_zero=5, scale=1.5)
    before = threads.get_num_threads()
    try:
        for n in (1, 2):
            threads.set_num_threads(n)
            same(fast.gemm_u8s8_batch(a, b, a_zero=5, scale=1.5), ref)
            same(fast.gemm_u8s8_batch(a, np.swapaxes(b, -1, -2), a_zero=5, scale=1.5, trans_b=True), ref)
    finally:
        threads.set_num_threads(before)


def _bad_batch_cases(impl):
    g = impl.gemm_u8s8_batch
    a, b = np.zeros((2, 3, 4), np.uint8), np.zeros((2, 4, 5), np.int8)
    return [
        (TypeError, "a must be uint8", lambda: g(a.astype(np.int8), b)),
        (TypeError, "b must be int8", lambda: g(a, b.astype(np.uint8))),
        (TypeError, "numpy.ndarray", lambda: g(a.tolist(), b)),
        (ValueError, "rows, cols >= 1", lambda: g(a[:, :0], b)),
        (ValueError, "non-negative strides", lambda: g(a[:, ::-1], b)),
        (ValueError, "do not multiply", lambda: g(a, b[:1])),
        (ValueError, "do not multiply", lambda: g(a, b, trans_b=True)),
        (ValueError, "last axis of a", lambda: g(np.zeros((2, 4, 3), np.uint8).swapaxes(1, 2), b)),
        (ValueError, "a_zero", lambda: g(a, b, a_zero=256)),
        (ValueError, "finite", lambda: g(a, b, scale=float("nan"))),
        (TypeError, "add must be a float32", lambda: g(a, b, add=np.zeros(5))),
        (ValueError, "does not broadcast", lambda: g(a, b, add=np.zeros((3, 1, 5), np.float32))),
    ]


@pytest.mark.parametrize("impl", [twin] + ([fast] if fast is not None and not FORCED else []),
                         ids=lambda m: m.__name__)
def test_batch_bad_inputs(impl):
    for exc, text, call in _bad_batch_cases(impl):
        with pytest.raises(exc, match=text):
            call()
    if impl is fast:        # one validation: the same error class and message as the twin
        for (_, _, f), (_, _, t) in zip(_bad_batch_cases(fast), _bad_batch_cases(twin)):
            with pytest.raises((TypeError, ValueError)) as ef:
                f()
            with pytest.raises((TypeError, ValueError)) as et:
                t()
            assert (type(ef.value), str(ef.value)) == (type(et.value), str(et.value))


# ---- range_f32: the dynamic quantizers' per-tensor range in one pass ----
@pytest.mark.parametrize("impl", [twin] + ([fast] if fast is not None and not FORCED else []),
                         ids=lambda m: m.__name__)
def test_range_f32(impl):
    rng = np.random.default_rng(7)
    for n in (1, 15, 16, 17, 70000, 200003):            # tails of the 16-wide loop and of the 65536 chunks
        x = rng.standard_normal(n).astype(np.float32)
        x[rng.integers(n)] = 9.5
        for path in (None, "portable"):
            assert impl.range_f32(x, path=path) == (float(x.min()), 9.5)
            for bad in (np.nan, np.inf, -np.inf):
                y = x.copy()
                y[rng.integers(n)] = bad
                assert all(np.isnan(impl.range_f32(y, path=path)))
    for exc, call in ((TypeError, lambda: impl.range_f32(x.astype(np.float64))),
                      (TypeError, lambda: impl.range_f32([1.0])),
                      (ValueError, lambda: impl.range_f32(x[::2])),
                      (ValueError, lambda: impl.range_f32(x[:0]))):
        with pytest.raises(exc, match="range_f32"):
            call()


# ---- fbias: a float32 bias in the f32 epilogue (the dynamic INT8 matmul's bias, no extra pass) ----
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(1, 5, 3), (7, 33, 40), (64, 384, 24), (5, 16, 16)])
@needs_fast
def test_fbias_matches_twin_and_the_separate_add(path, shape):
    rng = np.random.default_rng(sum(shape))
    M, K, N = shape
    a, w = rand_case(rng, M, K, N)
    p = twin.pack_b(w)
    fb = rng.standard_normal(N).astype(np.float32)
    fb[0] = -0.0
    kw = epilogue_args(rng, w, "f32", a_zero=9, with_bias=False)
    plain = twin.gemm_u8s8(a, p, K, N, **kw)
    for clamp in ({}, {"lo": -1.0, "hi": 2.5}):
        ref = twin.gemm_u8s8(a, p, K, N, fbias=fb, **kw, **clamp)
        same(fast.gemm_u8s8(a, p, K, N, fbias=fb, path=path, **kw, **clamp), ref)
    same(twin.gemm_u8s8(a, p, K, N, fbias=fb, **kw), plain + fb)       # two roundings: multiply, then add
    wide = np.full((M, N + 7), np.nan, np.float32)
    fast.gemm_u8s8(a, p, K, N, fbias=fb, out=wide[:, 3:N + 3], path=path, **kw)
    same(wide[:, 3:N + 3], plain + fb)


@pytest.mark.parametrize("impl", [twin] + ([fast] if fast is not None and not FORCED else []),
                         ids=lambda m: m.__name__)
def test_fbias_bad_inputs(impl):
    rng = np.random.default_rng(0)
    a, w = rand_case(rng, 4, 10, 20)
    p, s = impl.pack_b(w), np.ones(20, np.float32)
    for exc, text, kw in ((ValueError, "fbias needs", {"out_dtype": "u8", "scale": s}),
                          (ValueError, "fbias needs", {"out_dtype": "f32", "scale": s, "chain": {}}),
                          (TypeError, "fbias must be float32", {"out_dtype": "f32", "scale": s}),
                          (ValueError, r"fbias must have shape \(20,\)", {"out_dtype": "f32", "scale": s})):
        fb = np.zeros(20, np.float64) if exc is TypeError else np.zeros(20 if "shape" not in text else 3, np.float32)
        with pytest.raises(exc, match=text):
            impl.gemm_u8s8(a, p, 10, 20, fbias=fb, **kw)
