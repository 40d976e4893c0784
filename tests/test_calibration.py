"""Calibration statistics and observers (refquant.calibration) against their NumPy twins and Paddle 3.3.1.

- kernels/histogram.pyx and kernels/search.pyx equal their twins (refquant/reference/histogram.py, search.py)
  bit for bit, with 1 and 2 threads;
- the observers follow Paddle's update rules, merge exactly, and reject empty / NaN / Inf input;
- fed Paddle's own sampled LeNet activations (tests/data), they reproduce every activation threshold Paddle stored
  for KL, hist, avg, abs_max, mse, emd (and onnx_format mse/emd) and min_max, plus the histograms, per-batch
  values and per-batch best losses; weight thresholds match per channel.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.errors import ArgumentError
from refquant.calibration import (AbsMaxObserver, AbsMinMaxObserver, AvgObserver, EMDObserver, HistogramObserver,
                                  MinMaxObserver, MSEObserver, algorithm_names, calibrate, weight_channel_axis,
                                  weight_threshold)
from refquant.reference import histogram as hist_twin
from refquant.reference import search as search_twin

DATA = pathlib.Path(__file__).parent / "data"
fast_hist = _dispatch.compiled("histogram")
fast_search = _dispatch.compiled("search")
needs_hist = pytest.mark.skipif(fast_hist is None, reason="histogram extension not built")
needs_search = pytest.mark.skipif(fast_search is None, reason="search extension not built")
needs_all = pytest.mark.skipif(None in (fast_hist, fast_search, _dispatch.compiled("kl")),
                               reason="calibration extensions not built (or REFQUANT_FORCE_REFERENCE)")
PATHS = [pytest.param(False, id="fast", marks=needs_all), pytest.param(True, id="twin")]


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class thread_count:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = threads.get_num_threads()
        threads.set_num_threads(self.n)

    def __exit__(self, *exc):
        threads.set_num_threads(self.before)


# ================================================================ histogram kernel


@needs_hist
def test_histogram_matches_numpy_random():
    rng = np.random.default_rng(0)
    for trial in range(120):
        n = int(rng.integers(1, 30000))
        x = [rng.standard_normal(n), rng.laplace(size=n) * 1e-3, np.maximum(rng.standard_normal(n), 0),
             np.full(n, 0.3), rng.standard_cauchy(n)][trial % 5]
        x = x.astype(np.float32 if trial % 2 else np.float64)
        lo, hi, bad = fast_hist.abs_min_max(x)
        assert (lo, hi, bad) == hist_twin.abs_min_max(x)
        if trial % 3 == 0 and hi > lo:  # a narrower range: values on both sides are dropped
            lo, hi = lo + (hi - lo) * 0.1, lo + (hi - lo) * 0.9
        edges = hist_twin.histogram_edges(lo, hi, int(rng.choice([1, 2, 7, 2048])))
        assert same_bits(fast_hist.histogram_abs(x, edges), hist_twin.histogram_abs(x, edges))


@needs_hist
@pytest.mark.parametrize("lo,hi,bins", [(0.0, 2048.0, 2048), (0.0, 1.0, 2048), (1.6093254089355469e-06,
                                        10.443411827087402, 2048), (3.0, 3.0, 2048), (0.1, 0.7, 7),
                                        (0.0, 1e-30, 2048), (5.0, 5.0 + 2 ** -30, 2048)])
def test_histogram_edge_values(lo, hi, bins):
    """Values exactly on every edge and one ulp either side (in float64 and float32), plus out-of-range ones:
    the same counts as np.histogram, including the last bin's closed right edge and lo == hi widening."""
    edges = hist_twin.histogram_edges(lo, hi, bins)
    around = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
                             [edges[0] - 1, edges[-1] * 2 + 1, 0.0, -edges[-1]]])
    for dtype in (np.float64, np.float32):
        v = around.astype(dtype)
        v = np.concatenate([v, np.nextafter(v, dtype(np.inf)), np.nextafter(v, dtype(-np.inf))]).astype(dtype)
        assert same_bits(fast_hist.histogram_abs(v, edges), hist_twin.histogram_abs(v, edges))


@needs_hist
@pytest.mark.parametrize("edges", [[0.0, 1.0, 1.0, 5.0, 100.0], [-0.5, 0.0, 1e-30, 3.0], [2.0, 2.0, 2.0],
                                   np.geomspace(1e-6, 10.0, 300), [0.25, 0.5]])
def test_histogram_uneven_and_repeated_edges(edges):
    """Edges that no guess from a uniform spacing gets right (uneven, repeated, one bin): np.histogram's counts,
    in runs of up to 13 values (the kernel interleaves its counters by position)."""
    e = np.asarray(edges, dtype=np.float64)
    v = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf), [0.0, 7.0, 1e9, np.nan, np.inf]])
    v = np.concatenate([v, np.random.default_rng(2).uniform(-e[-1] * 1.2, e[-1] * 1.2, 997)])
    for dtype in (np.float64, np.float32):
        for n in (1, 5, 13, v.size):
            x = v[:n].astype(dtype)
            assert same_bits(fast_hist.histogram_abs(x, e), hist_twin.histogram_abs(x, e))


@needs_hist
def test_histogram_and_range_thread_independent():
    x = np.random.default_rng(1).standard_normal(600_000).astype(np.float32)
    edges = hist_twin.histogram_edges(*hist_twin.abs_min_max(x)[:2])
    out = []
    for n in (1, 2):
        with thread_count(n):
            out.append((fast_hist.histogram_abs(x, edges).tobytes(), fast_hist.abs_min_max(x)))
    assert out[0] == out[1]
    assert out[0][1] == hist_twin.abs_min_max(x)



@needs_hist
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_abs_range_across_count_blocks(dtype):
    """One chunk of 2M values: non-finite values at both ends and around the 2^20 marks are all counted, and the
    extremes near the end give the range."""
    n = (1 << 21) + 37
    x = np.random.default_rng(3).standard_normal(n).astype(dtype)
    for k in (0, (1 << 20) - 1, 1 << 20, (1 << 21) - 1, n - 1):
        x[k] = np.nan if k % 2 else -np.inf
    x[n - 5], x[n - 3] = -1e4, dtype(1e-30)
    with thread_count(1):
        assert fast_hist.abs_min_max(x)[2] == hist_twin.abs_min_max(x)[2] == 5  # (the range is then meaningless)
        x[[0, (1 << 20) - 1, 1 << 20, (1 << 21) - 1, n - 1]] = 0.5
        assert fast_hist.abs_min_max(x) == hist_twin.abs_min_max(x) == (float(dtype(1e-30)), 1e4, 0)

@needs_hist
def test_abs_range_counts_nonfinite():
    x = np.array([1.0, -np.inf, np.nan, 2.0, np.nan], dtype=np.float32)
    assert fast_hist.abs_min_max(x)[2] == hist_twin.abs_min_max(x)[2] == 3
    for dtype, tiny in ((np.float32, 1e-45), (np.float64, 5e-324)):  # signed zeros, denormals (bit-pattern order)
        x = np.array([3.0, -0.0, -tiny, -3.5, 2.0], dtype=dtype)
        assert fast_hist.abs_min_max(x) == hist_twin.abs_min_max(x) == (0.0, 3.5, 0)
        assert fast_hist.abs_min_max(x[2:]) == hist_twin.abs_min_max(x[2:]) == (float(dtype(tiny)), 3.5, 0)


@needs_hist
def test_abs_max_rows_and_tail_match_twin():
    """Per-sample abs max (avg) and the kept tail (one-pass hist): the twin's arrays and counts, also with
    NaN/Inf, signed zeros, cuts on a value (and -0.0: every value), a cap met exactly, with 1 or 2 threads, on the
    AVX2 copy loop and the portable one."""
    rng = np.random.default_rng(5)
    for trial in range(60):
        dtype = np.float32 if trial % 2 else np.float64
        rows, n = int(rng.integers(1, 9)), int(rng.integers(1, 40000))
        x = (rng.standard_normal((rows, n)) * [1, 0, 1e-3][trial % 3 if trial % 7 else 0]).astype(dtype)
        if trial % 5 == 0:
            x.flat[rng.integers(0, x.size, 3)] = [np.nan, -np.inf, -0.0]
        hi = float(np.nanmax(np.abs(x[np.isfinite(x)]), initial=0.0))
        cuts = sorted({hi * f for f in rng.uniform(0, 1, int(rng.integers(1, 4)))} | ({hi} if trial % 4 else set()))
        cuts = [-0.0] + cuts[:3] if trial % 6 == 1 else cuts
        for nthreads, path in ((1, None), (2, None), (1, "portable"), (2, "portable")):
            with thread_count(nthreads):
                got_rows, want_rows = fast_hist.abs_max_rows(x, rows), hist_twin.abs_max_rows(x, rows)
                assert got_rows[1] == want_rows[1] and (got_rows[1] or same_bits(got_rows[0], want_rows[0]))
                for cap in (1, 4096, x.size):
                    j, kept = fast_hist.abs_tail(x, cuts, cap, path=path)
                    want = hist_twin.abs_tail(x, cuts, cap, path=path)
                    assert j == want[0] and (kept is None) == (want[1] is None)
                    assert kept is None or same_bits(kept, want[1])
                    got, want = fast_hist.abs_range_tail(x, cap, path=path), hist_twin.abs_range_tail(x, cap)
                    assert got[2] == want[2] and (got[2] or got[:4] == want[:4] and (
                        got[4] is None is want[4] or same_bits(got[4], want[4])))
    big = np.abs(rng.standard_normal(300_000)).astype(np.float32)  # several chunks: the cap is met exactly
    cut = float(np.sort(big)[-5000])
    assert same_bits(fast_hist.abs_tail(big, [cut], 5000)[1], hist_twin.abs_tail(big, [cut], 5000)[1])
    assert fast_hist.abs_tail(big, [cut], 4999)[1] is None is hist_twin.abs_tail(big, [cut], 4999)[1]
    big[::1000] *= 10  # a thin tail spread over the whole array
    k = hist_twin.abs_range_tail(big, big.size)[4].size
    for cap in (1, k - 1, k, 10**6):
        for nthreads, path in ((1, None), (2, None), (2, "portable")):
            with thread_count(nthreads):
                got, want = fast_hist.abs_range_tail(big, cap, path=path), hist_twin.abs_range_tail(big, cap)
                assert got[:4] == want[:4] and (got[4] is None is want[4] or same_bits(got[4], want[4]))
    for bad in ([], [1.0, 0.5], [-1.0], [np.inf], [0, 1, 2, 3, 4]):
        for f in (fast_hist.abs_tail, hist_twin.abs_tail):
            with pytest.raises(ValueError):
                f(big, bad, 10)


@pytest.mark.parametrize("twin", PATHS)
def test_hist_one_pass_gives_the_two_pass_thresholds(twin):
    """calibrate(..., keep_histograms=False): hist thresholds from the kept tails equal the full histograms' on
    many shapes of data and percents, whether the tail decides (TailObserver kept) or not (second pass)."""
    from refquant.calibration.observers import TailObserver
    rng = np.random.default_rng(6)
    decided = fallbacks = saturated = 0
    with _dispatch.use_reference(twin):
        for trial in range(150):
            data = [lambda n: rng.standard_normal(n), lambda n: np.maximum(rng.standard_normal(n), 0),
                    lambda n: rng.uniform(0, 1, n), lambda n: np.clip(rng.standard_normal(n) * 3, 0, 6),
                    lambda n: rng.standard_cauchy(n), lambda n: np.full(n, 0.5),
                    lambda n: np.minimum(rng.uniform(0, 8, n + 20000), 6)][trial % 7]  # saturated at 6
            dicts = [{"a": data(int(rng.integers(1, 30000))).astype(np.float32 if trial % 2 else np.float64),
                      "b": rng.standard_normal(200).astype(np.float32) * b, "c": np.zeros(3 * (b != 1))}
                     for b in range(int(rng.integers(1, 4)))]
            p = [0.99999, 0.999, 0.5, 1.0, 0.9999999][trial % 5]
            want = calibrate(dicts, "hist", hist_percent=p)
            got = calibrate(dicts, "hist", hist_percent=p, keep_histograms=False)
            assert list(got.thresholds.items()) == list(want.thresholds.items()) and got.zero_size == want.zero_size
            assert all(got.ranges[n].range() == want.ranges[n].range() for n in want.ranges)
            kinds = [isinstance(o, TailObserver) for o in got.observers.values()]
            decided, fallbacks = decided + sum(kinds), fallbacks + len(kinds) - sum(kinds)
            saturated += any(isinstance(o, TailObserver) and o.at_max for o in got.observers.values())
    assert decided > 100 and fallbacks > 50 and saturated > 5
    with pytest.raises(NotImplementedError):
        TailObserver().merge(TailObserver())



def test_hist_one_pass_decides_a_thin_tail_between_the_cuts():
    """Most of the values below 0.6 of the max (too many above half of it to keep), a handful above 7/8 of it (too
    few for the percentile): the cut at 1 - 2**-1.5 of the max keeps enough to decide in one pass (with cuts only
    at 7/8 and above, the tensor took a second forward of every batch), with the two-pass threshold."""
    from refquant.calibration.observers import TailObserver
    rng = np.random.default_rng(11)
    dicts = [{"a": rng.permutation(np.concatenate([rng.uniform(0, 0.6, 400_000), rng.uniform(0.66, 0.86, 300),
                                                   rng.uniform(0.9, 1.0, 2)])).astype(np.float32)}
             for _ in range(3)]
    want = calibrate(dicts, "hist")
    got = calibrate(dicts, "hist", keep_histograms=False)
    assert isinstance(got.observers["a"], TailObserver)
    assert got.thresholds == want.thresholds

def test_hist_threshold_by_hand():
    """counts [1, 1, 2, 0] on edges 0, 0.5, 1, 1.5, 2: fractions .25 .25 .5 0; the running sum reaches 0.5 at bin 1
    -> (1 + 1 - 0.5) * 0.5 = 0.75; 0.99999 at bin 2 -> 1.25; never reaching 1.5 gives -0.5 * width (Paddle)."""
    hist = np.array([1, 1, 2, 0], dtype=np.int64)
    edges = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    assert hist_twin.hist_threshold(hist, edges, 0.5) == 0.75
    assert hist_twin.hist_threshold(hist, edges, 0.99999) == 1.25
    assert hist_twin.hist_threshold(hist, edges, 1.5) == -0.25


# ================================================================ mse / emd search kernel


def test_candidate_scales():
    scales = search_twin.candidate_scales(1.0)
    assert len(scales) == 35 and scales[0] == 0.3 and scales[-1] == 0.9800000000000005


@needs_search
def test_pairwise_sum_is_numpys():
    rng = np.random.default_rng(2)
    for n in [1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 136, 255, 1000, 8191, 8192, 8193, 65537, 301056, 1000003]:
        x = (rng.standard_normal(n) * 3).astype(np.float32) ** 3
        assert same_bits(fast_search.pairwise_sum(x), np.add.reduce(x)), n


def _search_inputs(rng):
    for n in [1, 2, 5, 8, 9, 64, 127, 129, 1000, 4097, 75264]:
        yield rng.standard_normal(n)
        yield np.maximum(rng.standard_normal(n), 0)          # post-ReLU
        yield -np.abs(rng.laplace(size=n)) * 50              # all negative: non-onnx qdq is all 0
        yield np.round(rng.standard_normal(n) * 4) / 4       # many exact ties between rounding steps
        yield np.full(n, 0.7)
        yield np.zeros(n)


@needs_search
@pytest.mark.parametrize("onnx_format", [False, True], ids=["paddle", "onnx"])
@pytest.mark.parametrize("loss", ["mse", "emd"])
def test_search_losses_equal_twin(loss, onnx_format):
    """Every candidate's float32 loss, bit for bit, on 66 inputs (sizes 1 .. 75264, ties, signs, constants)."""
    rng = np.random.default_rng(3)
    for x in _search_inputs(rng):
        x = x.astype(np.float32)
        scales = search_twin.candidate_scales(search_twin.search_abs_max(x))
        for bits in (8, 4):
            twin = search_twin.scan_losses(x, scales, bits, onnx_format, loss)
            assert same_bits(fast_search.scan_losses(x, scales, bits, onnx_format, loss), twin), (x.size, bits)


@needs_search
def test_search_thread_independent():
    x = np.random.default_rng(4).standard_normal(200_000).astype(np.float32)
    scales = search_twin.candidate_scales(search_twin.search_abs_max(x))
    for loss in ("mse", "emd"):
        out = []
        for n in (1, 2):
            with thread_count(n):
                out.append(fast_search.scan_losses(x, scales, 8, False, loss).tobytes())
        assert out[0] == out[1]


def _pruned_inputs(rng):
    n = search_twin.PRUNE_MIN
    yield np.maximum(rng.standard_normal(n + 12345), 0) * rng.random(n + 12345)   # post-ReLU
    yield rng.standard_normal(3 * n + 7)                                           # symmetric: the floor counts
    yield rng.laplace(size=2 * n)
    yield np.round(rng.standard_normal(n) * 4) / 4                                 # ties between candidates
    yield np.zeros(n)                                                              # every loss 0: nothing pruned
    x = rng.standard_normal(n + 9)
    x[n // 3] = np.nan                                                             # every loss NaN: none pruned
    yield x


@needs_search
@pytest.mark.parametrize("onnx_format", [False, True], ids=["paddle", "onnx"])
@pytest.mark.parametrize("loss", ["mse", "emd"])
def test_search_pruned_equal_twin(loss, onnx_format):
    """A pruned scan: the twin's bits and inf at the same candidates, on 1 and 2 threads; a pruned candidate's full
    loss exceeds the smallest one, the others are unchanged, so the best (last smallest) is the same."""
    rng = np.random.default_rng(5)
    pruned = 0
    for x in _pruned_inputs(rng):
        x = x.astype(np.float32)
        scales = search_twin.candidate_scales(search_twin.search_abs_max(x))
        full = fast_search.scan_losses(x, scales, 8, onnx_format, loss)
        twin = search_twin.scan_losses(x, scales, 8, onnx_format, loss, prune=True)
        for n in (1, 2):
            with thread_count(n):
                assert same_bits(fast_search.scan_losses(x, scales, 8, onnx_format, loss, prune=True), twin)
        cut = np.isinf(twin) & ~np.isinf(full)
        assert not cut.any() or (full[cut] > np.nanmin(full)).all()
        assert same_bits(twin[~cut], full[~cut])
        pruned += cut.sum()
    assert pruned > 0
    x = rng.standard_normal(search_twin.PRUNE_MIN).astype(np.float16)  # float16 (the twin's path): mse not pruned
    scales = search_twin.candidate_scales(search_twin.search_abs_max(x))
    full = search_twin.scan_losses(x, scales, 8, onnx_format, loss)
    twin = search_twin.scan_losses(x, scales, 8, onnx_format, loss, prune=True)
    assert same_bits(twin, full) if loss == "mse" else twin.min() == full.min()
    x = (rng.standard_normal(search_twin.PRUNE_MIN) * 60).astype(np.int8)  # int8 (the twin, in float64): squares
    scales = search_twin.candidate_scales(search_twin.search_abs_max(x))  # of x < 0 do not wrap around
    full = search_twin.scan_losses(x, scales, 8, onnx_format, loss)
    twin = search_twin.scan_losses(x, scales, 8, onnx_format, loss, prune=True)
    kept = ~np.isinf(twin)
    assert (loss == "emd" or not kept.all()) and twin.min() == full.min() and same_bits(twin[kept], full[kept])


@needs_search
@pytest.mark.parametrize("case", ["inf", "-inf", "huge", "negative scales", "zero scales", "nan scales", "3 scales"])
def test_search_pruned_hostile(case):
    """Odd inputs a caller may pass to a pruned scan: the kernel still gives the twin's bits, the best loss stays."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(search_twin.PRUNE_MIN + 100).astype(np.float32)
    scales = search_twin.candidate_scales(4.0)
    if case in ("inf", "-inf"):
        x[rng.integers(0, x.size, 5)] = float(case)
    x *= np.float32(1e25) if case == "huge" else np.float32(1)  # squares overflow float32
    scales = {"negative scales": list(rng.standard_normal(35)), "zero scales": [0.0] * 3 + scales[3:],
              "nan scales": [np.nan, np.inf] + scales[2:], "3 scales": scales[:3]}.get(case, scales)
    for loss, onnx_format, bits in [("mse", False, 8), ("mse", True, 2), ("emd", False, 16), ("emd", True, 8)]:
        with np.errstate(all="ignore"):
            fast = fast_search.scan_losses(x, scales, bits, onnx_format, loss, prune=True)
            full = fast_search.scan_losses(x, scales, bits, onnx_format, loss)
            assert same_bits(fast, search_twin.scan_losses(x, scales, bits, onnx_format, loss, prune=True))
        assert np.nanmin(np.where(np.isnan(fast), np.inf, fast)) == np.nanmin(np.where(np.isnan(full), np.inf, full))


# ================================================================ observers


@pytest.mark.parametrize("make", [AbsMaxObserver, AbsMinMaxObserver, MinMaxObserver, AvgObserver, MSEObserver,
                                  EMDObserver, lambda: HistogramObserver(0.0, 1.0)],
                         ids=["abs_max", "abs_min_max", "min_max", "avg", "mse", "emd", "histogram"])
@pytest.mark.parametrize("reference", PATHS)
def test_observers_reject_bad_input(make, reference):
    obs = make()
    with _dispatch.use_reference(reference):
        with pytest.raises(ValueError, match="no batch"):
            obs.threshold()
        with pytest.raises(ValueError, match="empty"):
            obs.update(np.zeros((4, 0), dtype=np.float32))
        with pytest.raises(ValueError, match="NaN/Inf"):
            obs.update(np.array([[1.0, np.nan]], dtype=np.float32))
        with pytest.raises(ValueError, match="NaN/Inf"):
            obs.update(np.array([[1.0, -np.inf]], dtype=np.float64))
        with pytest.raises(ValueError, match="real numbers"):
            obs.update(np.array([["a"]]))
        assert obs.empty


def _batches(seed=5, n=6):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((4, 3, 5, 5)) * rng.uniform(0.5, 3)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("reference", PATHS)
@pytest.mark.parametrize("make", [AbsMaxObserver, AbsMinMaxObserver, MinMaxObserver, AvgObserver,
                                  lambda: MSEObserver(8, False), lambda: EMDObserver(8, True)],
                         ids=["abs_max", "abs_min_max", "min_max", "avg", "mse", "emd_onnx"])
def test_merge_equals_whole(make, reference):
    """Two observers fed the first and second half, merged, equal one fed everything in order."""
    batches = _batches()
    with _dispatch.use_reference(reference):
        whole, first, second = make(), make(), make()
        for x in batches:
            whole.update(x)
        for x in batches[:3]:
            first.update(x)
        for x in batches[3:]:
            second.update(x)
        merged = first.merge(second)
        assert merged.threshold() == whole.threshold()
        if isinstance(whole, MSEObserver):
            assert merged.history() == whole.history()


@pytest.mark.parametrize("reference", PATHS)
def test_histogram_merge(reference):
    batches = _batches()
    with _dispatch.use_reference(reference):
        rng_obs = AbsMinMaxObserver()
        for x in batches:
            rng_obs.update(x)
        whole, a, b = (HistogramObserver.from_range(rng_obs) for _ in range(3))
        for x in batches:
            whole.update(x)
        for x in batches[:2]:
            a.update(x)
        for x in batches[2:]:
            b.update(x)
        merged = a.merge(b)
        assert same_bits(merged.hist, whole.hist) and merged.hist.sum() == sum(x.size for x in batches)
        assert merged.kl_threshold() == whole.kl_threshold() and merged.hist_threshold() == whole.hist_threshold()
        with pytest.raises(ValueError, match="different ranges"):
            merged.merge(HistogramObserver(0.0, 1.0))


def test_histogram_range_too_narrow_for_the_bins():
    """NumPy (so Paddle's PTQ) refuses 2048 bins on a range only a few ulps wide; refquant says so clearly."""
    with pytest.raises(ValueError, match="too narrow"):
        HistogramObserver(5.0, 5.0 + 2 ** -45)


def test_histogram_drops_values_outside_the_range():
    obs = HistogramObserver(1.0, 2.0, bins=4)
    obs.update(np.array([0.5, -1.0, 1.5, 2.0, -2.5, 3.0], dtype=np.float32))
    assert obs.hist.tolist() == [1, 0, 1, 1] and obs.dropped == 3


def test_search_ties_go_to_the_later_batch():
    """Two identical batches: equal best losses, and Paddle's `loss <= best` keeps the later one (same T)."""
    x = _batches(n=1)[0]
    obs = MSEObserver()
    obs.update(x)
    obs.update(x * 1)
    (l0, t0), (l1, t1) = obs.history()
    assert l0 == l1 and t0 == t1
    obs2 = MSEObserver()
    obs2.update(x)
    obs2.update(x * 2)  # same losses * 4: larger, so the first batch's candidate stays
    assert obs2.threshold() == t0


def test_avg_uses_the_batch_axis():
    obs = AvgObserver()
    obs.update(np.array([[1.0, -3.0], [2.0, 0.5]], dtype=np.float32))  # rows' max|x|: 3, 2 -> 2.5
    obs.update(np.array([-1.0, 2.0], dtype=np.float32))                # 1-D: mean |x| = 1.5
    assert obs.batch_values == [2.5, 1.5] and obs.threshold() == 2.0


def test_calibrate_skips_zero_size_tensors():
    rng = np.random.default_rng(6)
    batches = [{"a": rng.standard_normal((2, 3)).astype(np.float32),
                "b": np.zeros((0, 3), np.float32) if k == 1 else rng.standard_normal((2, 3)).astype(np.float32),
                "never": np.zeros((2, 0), np.float32)} for k in range(3)]
    for algo in algorithm_names():
        res = calibrate(batches, algo)
        assert set(res.thresholds) == {"a", "b"} and res.zero_size == {"b", "never"}
        only_b = [{"b": batches[0]["b"]}, {"b": batches[2]["b"]}]
        assert res.thresholds["b"] == calibrate(only_b, algo).thresholds["b"]
    with pytest.raises(TypeError, match="iterator"):
        calibrate(iter(batches), "KL")
    with pytest.raises(ValueError, match="algo"):
        calibrate(batches, "percentile")


def test_weight_thresholds():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12  # |w| max 12
    assert weight_threshold(w, "conv2d", "abs_max") == 12.0
    assert weight_threshold(w, "conv2d") == [12.0, 11.0]                 # axis 0
    assert weight_threshold(w, "mul") == [12.0, 8.0, 11.0]               # axis 1
    assert [weight_channel_axis(t) for t in ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul",
                                            "matmul_v2")] == [0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="NaN/Inf"):
        weight_threshold(np.array([[np.nan]]), "conv2d")


# ================================================================ Paddle's LeNet calibration (oracle)


def _lenet_batches():
    """The 20 activations x 4 batches Paddle sampled, rebuilt from the 6 stored base tensors and the biases
    (every derived tensor is checked against the sha256 of Paddle's dump), or None if the data is absent."""
    paths = [DATA / f for f in ("lenet_calib_acts_base.npz", "lenet_calib_acts_sha256.json",
                                "lenet_fp32_weights.npz")]
    if not all(p.exists() for p in paths):
        return None
    base = np.load(paths[0])
    digests = json.loads(paths[1].read_text())["sha256"]
    W = np.load(paths[2])
    batches = []
    for k in range(4):
        t = {name: base[f"{name}|b{k}"] for name in ("x", "conv2d_0.tmp_0", "conv2d_1.tmp_0", "fc_0.tmp_0",
                                                      "fc_1.tmp_0", "fc_2.tmp_0")}
        for i in (0, 1):  # conv bias reshape, elementwise_add, relu, 2x2 max pool
            t[f"reshape2_{i}.tmp_0"] = W[f"conv2d_{i}.b_0"].reshape(1, -1, 1, 1)
            t[f"conv2d_{i}.tmp_1"] = t[f"conv2d_{i}.tmp_0"] + t[f"reshape2_{i}.tmp_0"]
            t[f"relu_{i}.tmp_0"] = np.maximum(t[f"conv2d_{i}.tmp_1"], np.float32(0))
            n, c, h, w = t[f"relu_{i}.tmp_0"].shape
            t[f"pool2d_{i}.tmp_0"] = t[f"relu_{i}.tmp_0"].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        t["flatten_0.tmp_0"] = t["pool2d_1.tmp_0"].reshape(t["pool2d_1.tmp_0"].shape[0], -1)
        for i in (0, 1, 2):  # fc bias add, relu
            t[f"fc_{i}.tmp_1"] = t[f"fc_{i}.tmp_0"] + W[f"fc_{i}.b_0"]
            if i < 2:
                t[f"fc_{i}.tmp_2"] = np.maximum(t[f"fc_{i}.tmp_1"], np.float32(0))
        for name, x in t.items():
            assert hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() == digests[f"{name}|b{k}"], name
        batches.append(dict(sorted(t.items())))
    return batches, W


LENET = _lenet_batches()
needs_lenet = pytest.mark.skipif(LENET is None, reason="tests/data LeNet oracle files not present")
ORACLES = [("KL", False, "lenet_KL.json"), ("hist", False, "lenet_hist.json"), ("avg", False, "lenet_avg.json"),
           ("abs_max", False, "lenet_abs_max.json"), ("mse", False, "lenet_mse.json"),
           ("mse", True, "lenet_mse_onnx.json"), ("emd", False, "lenet_emd.json"),
           ("emd", True, "lenet_emd_onnx.json"), ("min_max", False, "lenet_min_max.json")]


def _oracle(filename):
    path = DATA / filename
    if not path.exists():
        pytest.skip(f"tests/data/{filename} not present")
    return json.loads(path.read_text())


@needs_lenet
@pytest.mark.parametrize("reference", PATHS)
@pytest.mark.parametrize("algo,onnx_format,filename", ORACLES, ids=[f for _, _, f in ORACLES])
def test_lenet_activation_thresholds(algo, onnx_format, filename, reference):
    """Paddle's stored threshold of all 20 activations, exactly (==), plus each algorithm's internals."""
    oracle = _oracle(filename)
    assert oracle["config"]["algo"] == algo and oracle["config"]["onnx_format"] == onnx_format
    batches, _ = LENET
    names = list(oracle["activations"])
    if reference and algo == "KL":
        names = names[:3]  # the pure-Python KL takes ~0.5 s per tensor; test_kl.py covers it in depth
    batches = [{n: b[n] for n in names} for b in batches]
    with _dispatch.use_reference(reference):
        result = calibrate(batches, algo, onnx_format=onnx_format)
    assert not result.zero_size
    for name in names:
        want = oracle["activations"][name]
        if algo == "min_max":
            assert result.thresholds[name] == (want["min"], want["max"]), name
            continue
        assert result.thresholds[name] == want["threshold"], name
        obs = result.observers[name]
        if algo in ("KL", "hist"):
            assert (obs.abs_min, obs.abs_max) == (want["abs_min"], want["abs_max"]), name
            assert obs.bin_width == want["bin_width"] and obs.hist.tolist() == want["hist"], name
        elif algo == "avg":
            assert obs.batch_values == want["per_batch_mean_sample_absmax"], name
        elif algo in ("mse", "emd"):
            history = obs.history()
            assert [float(loss) for loss, _ in history] == want["best_loss_after_batch"], name
            assert [T for _, T in history] == want["threshold_after_batch"], name
        elif algo == "abs_max":
            seen = AbsMaxObserver()
            after = []
            for b in batches:
                seen.update(b[name])
                after.append(seen.threshold())
            assert after == want["threshold_after_batch"], name


@needs_lenet
@pytest.mark.parametrize("algo,onnx_format,filename", ORACLES, ids=[f for _, _, f in ORACLES])
def test_lenet_weight_thresholds(algo, onnx_format, filename):
    oracle = _oracle(filename)
    _, W = LENET
    for param, want in oracle["weights"].items():
        if algo == "min_max":
            axis = weight_channel_axis(want["op_type"])
            w = W[param]
            mins = [float(np.min(w[:, i] if axis else w[i])) for i in range(w.shape[axis])]
            maxs = [float(np.max(w[:, i] if axis else w[i])) for i in range(w.shape[axis])]
            assert (mins, maxs) == (want["min_per_channel"], want["max_per_channel"]), param
            continue
        assert want["quant_axis"] == weight_channel_axis(want["op_type"])
        assert weight_threshold(W[param], want["op_type"]) == want["threshold_per_channel"], param
        assert weight_threshold(W[param], want["op_type"], "abs_max") == max(want["threshold_per_channel"])


def _ten_equal_bins(p):
    """Ten bins of one value each: the float running sum of ten 0.1 fractions is 0.9999999999999999 < 1."""
    obs = HistogramObserver(0.0, 1.0, bins=10, method="hist", hist_percent=p)
    obs.update(np.arange(10, dtype=np.float32) / 10 + 0.05)
    return obs


def test_hist_percent_one_gives_the_last_bin_not_a_negative_threshold():
    obs = _ten_equal_bins(1.0)
    width = obs.bin_width
    assert hist_twin.hist_threshold(obs.hist, obs.edges, 1.0) == -0.5 * width  # Paddle's walk never gets there
    assert obs.threshold() == (9 + 0.5) * width
    assert obs.hist_threshold(0.5) == hist_twin.hist_threshold(obs.hist, obs.edges, 0.5) == 4.5 * width


@pytest.mark.parametrize("p", [1.5, 1.0000001, float("nan"), float("inf"), 0.0, -0.1, None, True, "0.9"])
def test_hist_percent_outside_0_1_rejected(p):
    with pytest.raises(ArgumentError, match="hist_percent"):
        _ten_equal_bins(p)
    if p is not None:  # hist_threshold(None): the observer's own
        with pytest.raises(ArgumentError, match="hist_percent"):
            _ten_equal_bins(0.5).hist_threshold(p)


def test_shards_without_their_own_thresholds_merge_to_the_same_thresholds():
    """``thresholds=False`` skips a shard's own (costly) threshold search; merged, then computed once, the
    thresholds equal the one-pass run's."""
    from refquant.calibration import calibrate
    rng = np.random.default_rng(3)
    batches = [{"a": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(4)]
    whole = calibrate(batches, "KL")
    ranges = calibrate(batches[:2], "ranges").merge(calibrate(batches[2:], "ranges")).ranges
    first = calibrate(batches[:2], "KL", ranges=ranges, thresholds=False)
    assert first.thresholds == {}
    merged = first.merge(calibrate(batches[2:], "KL", ranges=ranges, thresholds=False), thresholds=False)
    assert merged.thresholds == {}
    assert merged.compute_thresholds().thresholds == whole.thresholds
