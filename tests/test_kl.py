"""cal_kl_threshold: the compiled kernel (kernels/kl.pyx), its pure-Python twin (refquant/reference/kl.py) and
Paddle 3.3.1 itself (tests/data/kl_cases.json) must give the same float, bit for bit (==, never approx).
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.calibration import cal_kl_threshold, kl_curve
from refquant.reference import kl as twin

DATA = pathlib.Path(__file__).parent / "data"
fast = _dispatch.compiled("kl")
needs_fast = pytest.mark.skipif(fast is None, reason="kl extension not built (or REFQUANT_FORCE_REFERENCE)")
PATHS = [pytest.param(False, id="fast", marks=needs_fast), pytest.param(True, id="twin")]


def _kl_cases():
    path = DATA / "kl_cases.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())["cases"]


CASES = _kl_cases()
needs_cases = pytest.mark.skipif(not CASES, reason="tests/data/kl_cases.json not present")


def _hist(case):
    return np.array(case["hist"], dtype=case["hist_dtype"])


def fast_curve(hist, bits=8):
    """The compiled path's curve (refquant.calibration.kl_curve takes it whenever the kernel is built)."""
    with _dispatch.use_reference(False):
        return kl_curve(hist, bits)


# ---------------------------------------------------------------- Paddle's own numbers


@needs_cases
@pytest.mark.parametrize("reference", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_oracle_threshold(case, reference):
    """All 20 of Paddle's histograms (int64 and float64 counts, 200 to 4096 bins) give Paddle's threshold."""
    with _dispatch.use_reference(reference):
        T = cal_kl_threshold(_hist(case), case["bin_width"], 8)
    assert T == case["threshold"]


@needs_fast
@needs_cases
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_oracle_curve(case):
    """Every divergence Paddle computed (its safe_entropy value for each scored length) is reproduced exactly."""
    assert [[i, D] for i, D in fast_curve(_hist(case))] == case["kl_curve"]


CHEAP = [c for c in CASES if c["seconds_per_call"] < 0.2]


@needs_cases
@pytest.mark.parametrize("case", CHEAP, ids=[c["name"] for c in CHEAP])
def test_oracle_curve_twin(case):
    """The twin's curve too, on the cases Paddle scored in under 0.2 s (the rest are covered by their threshold
    above and by fast == twin below)."""
    assert [[i, D] for i, D in twin.kl_curve(_hist(case), 8)] == case["kl_curve"]


# ---------------------------------------------------------------- a case worked by hand


def test_hand_worked_example():
    """hist = [4, 2, 0, 1, 3, 0, 0, 1], bits 3 (L = 3 levels), n = 8: start = int(7 * 0.5) = 3, Psum = 11.

    i=3: P[2] = 0, skipped.  i=6, 7: P[5] = P[6] = 0, skipped.
    i=4: outliers 3+0+0+1 = 4 -> P = [4, 2, 0, 5]; m = int(4/3) = 1: groups [0,1) [1,2) [2,4), G = [4, 2, 1];
         group 2 has one nonzero reference bin (R = [0, 5]) -> Q = [4.0, 2.0, 0, 1.0], Qsum = 7.0.
    i=5: outliers 0+0+1 = 1 -> P = [4, 2, 0, 1, 4]; groups [0,1) [1,2) [2,5), G = [4, 2, 4];
         group 2 has two nonzero reference bins -> 4/2 = 2.0 each: Q = [4.0, 2.0, 0, 2.0, 2.0], Qsum = 10.0.
    D_4 ~ 0.2796 > D_5 ~ 0.0937, so T = (5 + 0.5) * bin_width.
    """
    hist = np.array([4, 2, 0, 1, 3, 0, 0, 1], dtype=np.int64)
    log = math.log
    D4 = ((4 * log(7.0 * 4) + 2 * log(7.0 * 2) + 5 * log(7.0 * 5))
          - (4 * log(11 * 4.0) + 2 * log(11 * 2.0) + 5 * log(11 * 1.0))) / 11
    D5 = ((4 * log(10.0 * 4) + 2 * log(10.0 * 2) + 1 * log(10.0 * 1) + 4 * log(10.0 * 4))
          - (4 * log(11 * 4.0) + 2 * log(11 * 2.0) + 1 * log(11 * 2.0) + 4 * log(11 * 2.0))) / 11
    assert twin.kl_curve(hist, 3) == [(4, D4), (5, D5)]
    assert abs(D4 - 0.27956) < 1e-4 and abs(D5 - 0.09373) < 1e-4
    for reference in (False, True):
        with _dispatch.use_reference(reference):
            assert kl_curve(hist, 3) == [(4, D4), (5, D5)]
            assert cal_kl_threshold(hist, 0.25, 3) == 5.5 * 0.25


def test_fallback_when_nothing_is_scored():
    """Bins start-1 .. n-2 all empty: no length is scored; walk down from start to the first nonzero bin (an
    *index*, so the result is that bin's centre)."""
    hist = np.array([0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=np.int64)  # n = 11, start = 5
    for reference in (False, True):
        with _dispatch.use_reference(reference):
            assert kl_curve(hist, 8) == []
            assert cal_kl_threshold(hist, 0.5, 8) == 1.5 * 0.5
            assert cal_kl_threshold(np.zeros(16, dtype=np.int64), 0.5, 8) == 0.5 * 0.5  # all zero: bin 0


def test_ties_keep_the_first_length():
    """hist = [2, 1, 0, 1], bits 2 (one level): D_1 = D_2 = 0.0 exactly, and the earlier i = 1 is kept."""
    hist = np.array([2, 1, 0, 1], dtype=np.int64)
    for reference in (False, True):
        with _dispatch.use_reference(reference):
            assert kl_curve(hist, 2) == [(1, 0.0), (2, 0.0)]
            assert cal_kl_threshold(hist, 1.0, 2) == 1.5


def test_returns_the_callers_float_type():
    hist = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64)
    for reference in (False, True):
        with _dispatch.use_reference(reference):
            T = cal_kl_threshold(hist, np.float64(0.1), 8)
            assert type(T) is np.float64 and T == twin.cal_kl_threshold(hist, np.float64(0.1), 8)


# ---------------------------------------------------------------- compiled == twin on many histograms


def _synthetic(rng, n, kind):
    if kind == "gauss":
        return np.histogram(np.abs(rng.standard_normal(int(rng.integers(10, 20000)))), bins=n)[0]
    if kind == "heavy":
        return np.histogram(np.abs(rng.standard_cauchy(int(rng.integers(10, 5000)))), bins=n)[0]
    if kind == "sparse":
        h = np.zeros(n, dtype=np.int64)
        idx = rng.choice(n, size=int(rng.integers(1, max(2, n // 4))), replace=False)
        h[idx] = rng.integers(1, 50, size=idx.size)
        return h
    if kind == "spike":
        h = np.zeros(n, dtype=np.int64)
        h[int(rng.integers(0, n))] = int(rng.integers(1, 10**6))
        return h
    if kind == "tiny":  # very small counts
        return rng.integers(0, 2, size=n) * (rng.random(n) < 0.2)
    if kind == "zero_tail":  # nothing in the upper half: the fallback or a short scan
        h = rng.integers(0, 30, size=n)
        h[int(n * rng.uniform(0.3, 0.6)):] = 0
        return h
    if kind == "flat":  # constant counts: many exactly equal divergences (ties)
        return np.full(n, int(rng.integers(1, 100)), dtype=np.int64)
    if kind == "periodic":  # repeated blocks: near-ties between lengths
        block = rng.integers(0, 20, size=int(rng.integers(1, 9)))
        return np.resize(block, n)
    if kind == "huge":  # counts beyond the kernel's log cache
        return rng.integers(0, 10**9, size=n)
    if kind == "float":
        return rng.random(n) * rng.choice([1e-3, 1.0, 1e6]) * (rng.random(n) < 0.8)
    raise AssertionError(kind)


KINDS = ["gauss", "heavy", "sparse", "spike", "tiny", "zero_tail", "flat", "periodic", "huge", "float"]


@needs_fast
@pytest.mark.parametrize("kind", KINDS)
def test_fast_equals_twin_synthetic(kind):
    """30 histograms per kind (300 in all), 3 to 600 bins, 2 to 9 bits: the whole curve and the threshold agree
    bit for bit, so ties and near-ties resolve the same way."""
    rng = np.random.default_rng(KINDS.index(kind))
    for trial in range(30):
        n = int(rng.choice([3, 4, 5, 8, 13, 64, 127, 128, 200, 254, 255, 256, 300, 511, 600]))
        bits = int(rng.choice([2, 3, 4, 5, 8, 8, 8, 9]))
        hist = np.asarray(_synthetic(rng, n, kind))
        hist = hist.astype(np.float64 if kind == "float" else np.int64)
        width = float(rng.uniform(1e-4, 10))
        assert fast_curve(hist, bits) == twin.kl_curve(hist, bits), (kind, trial, n, bits)
        with _dispatch.use_reference(False):
            T = cal_kl_threshold(hist, width, bits)
        assert T == twin.cal_kl_threshold(hist, width, bits), (kind, trial, n, bits)
        if kind != "float":  # whole-number float64 counts take the int64 path: still the twin's bits
            as_float = hist.astype(np.float64)
            with _dispatch.use_reference(False):
                assert kl_curve(as_float, bits) == twin.kl_curve(as_float, bits), (kind, trial)
                assert cal_kl_threshold(as_float, width, bits) == twin.cal_kl_threshold(as_float, width, bits)


@needs_fast
@pytest.mark.parametrize("kind", ["gauss", "sparse", "tiny", "periodic", "float"])
def test_fast_equals_twin_2048_bins(kind):
    rng = np.random.default_rng(100 + KINDS.index(kind))
    hist = np.asarray(_synthetic(rng, 2048, kind))
    hist = hist.astype(np.float64 if kind == "float" else np.int64)
    assert fast_curve(hist) == twin.kl_curve(hist, 8)


@needs_fast
def test_other_dtypes():
    """int32/uint16 counts are converted for the kernel (same results); float32 counts keep the twin's exact
    NumPy float32 semantics (the kernel declines them)."""
    rng = np.random.default_rng(7)
    base = np.histogram(np.abs(rng.standard_normal(5000)), bins=300)[0]
    for dtype in (np.int32, np.uint16, np.uint64, np.float32):
        hist = base.astype(dtype)
        with _dispatch.use_reference(False):
            T = cal_kl_threshold(hist, 0.01, 8)
        assert T == twin.cal_kl_threshold(hist, 0.01, 8), dtype


@needs_fast
def test_thread_count_does_not_change_bits():
    rng = np.random.default_rng(3)
    hist = np.histogram(np.abs(rng.standard_normal(200000)), bins=2048)[0]
    n = hist.shape[0]
    before = threads.get_num_threads()
    try:
        results = []
        for n_threads in (1, 2):
            threads.set_num_threads(n_threads)
            D, status = fast.kl_scan(hist, float(hist.sum()), 127, int((n - 1) * 0.5))
            results.append((D.tobytes(), status.tobytes()))
        assert results[0] == results[1]
    finally:
        threads.set_num_threads(before)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("reference", PATHS)
def test_invalid_inputs(reference):
    with _dispatch.use_reference(reference):
        with pytest.raises(ValueError, match="1-D"):
            cal_kl_threshold(np.ones((4, 4), dtype=np.int64), 1.0, 8)
        with pytest.raises(ValueError, match="at least 3 bins"):
            cal_kl_threshold(np.ones(2, dtype=np.int64), 1.0, 8)
        with pytest.raises(ValueError, match="negative"):
            cal_kl_threshold(np.array([1, -1, 3, 4]), 1.0, 8)
        with pytest.raises(ValueError, match="NaN or Inf"):
            cal_kl_threshold(np.array([1.0, np.nan, 3.0, 4.0]), 1.0, 8)
        with pytest.raises(ValueError, match="bits"):
            cal_kl_threshold(np.ones(8, dtype=np.int64), 1.0, 1)
        with pytest.raises(ValueError, match="numbers"):
            cal_kl_threshold(np.array(["a", "b", "c"]), 1.0, 8)


@pytest.mark.parametrize("reference", PATHS)
def test_log_domain_error_like_paddle(reference):
    """Denormal float counts: Psum * q underflows to 0 and Paddle's math.log raises; so does refquant (never for
    integer histograms)."""
    hist = np.full(8, 5e-324)
    with _dispatch.use_reference(reference), pytest.raises(ValueError, match="math domain"):
        cal_kl_threshold(hist, 1.0, 8)
    with pytest.raises(ValueError, match="math domain"):
        twin.cal_kl_threshold(hist, 1.0, 8)
