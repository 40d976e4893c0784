"""|x| statistics for calibration: abs min/max and histogram counts. Twin: refquant/reference/histogram.py.

``abs_min_max`` is the pass-1 statistic of KL/hist (and abs_max's only one): min and max of |x|, computed on the
bit patterns (see below), are exact, so per-chunk results combine in any order to the same two floats. It counts
NaN/Inf in the same pass (the loop: kernels/include/histogram_range.h, an AVX2 and a baseline clone).

``histogram_abs`` counts |x| into the bins of a float64 edge array with ``np.histogram(|x|, bins=edges)``'s rule
(which Paddle uses; with an edge *array*, NumPy sorts the data and binary-searches the edges, comparing in float64):
bin k holds ``edges[k] <= v < edges[k+1]``, the last bin also ``v == edges[-1]``, anything else (including NaN)
is dropped. Here a first guess ``int((v - lo) * nbins / (hi - lo))`` is corrected by comparing v with the real
edges until the rule holds, so floating error in the guess never changes a count: v lands in the largest bin
``k <= nbins-1`` with ``edges[k] <= v``. The edge array gets ``+inf`` in place of the last edge (the range test
already bounds v), so each correction loop has one well-predicted condition; four interleaved histograms break
the store-to-load chain of runs of equal bins (e.g. the zeros after a ReLU). Each thread counts a contiguous
slice into its own histograms, which are added at the end, so the counts are identical for any thread count.
The loops work on raw pointers in ``nogil`` functions, so the compiler keeps the bounds in registers.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs
from libc.stdint cimport int32_t, int64_t

from _openmp cimport threads_for

import numpy as np

from refquant.reference import histogram as _twin

# Elements per thread below which a call stays single-threaded.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 16


def is_usable_for(x):
    """True for a float32 or float64 ndarray."""
    return isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)


def abs_min_max(x):
    """``(min|x|, max|x|, n_nonfinite)`` as (float, float, int). ``x`` must be non-empty; with NaN/Inf present
    the two floats are meaningless and the caller reports the count."""
    x = np.ascontiguousarray(x).reshape(-1)
    if x.shape[0] == 0:
        raise ValueError("abs_min_max: empty input")
    if x.dtype == np.float32:
        lo, hi, bad = _abs_min_max_bits[int32_t](x.view(np.int32), 0x7FFFFFFF, 0x7F800000)
    elif x.dtype == np.float64:
        lo, hi, bad = _abs_min_max_bits[int64_t](x.view(np.int64), 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)
    else:
        raise TypeError(f"abs_min_max: x must be float32 or float64, got {x.dtype}")
    lo, hi = np.array([lo, hi], dtype=np.int32 if x.dtype == np.float32 else np.int64).view(x.dtype)
    return float(lo), float(hi), bad


def abs_max_rows(x, Py_ssize_t rows):
    """``(max|row| for each of the ``rows`` rows of x as float32 or float64, n_nonfinite)``: avg's per-sample
    statistic; with NaN/Inf present the maxima are meaningless and the caller reports the count."""
    x = _twin.check_rows(np.ascontiguousarray(x), rows)
    if x.dtype == np.float32:
        hi, bad = _abs_max_rows[int32_t](x.view(np.int32), 0x7FFFFFFF, 0x7F800000)
    elif x.dtype == np.float64:
        hi, bad = _abs_max_rows[int64_t](x.view(np.int64), 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)
    else:
        raise TypeError(f"abs_max_rows: x must be float32 or float64, got {x.dtype}")
    return hi.view(x.dtype), bad


def abs_range_tail(x, Py_ssize_t cap, *, path=None):
    """``(min|x|, max|x|, n_nonfinite, cut, the finite |x| >= cut in the order of x)``, the kept values None when
    more than ``cap``: :func:`abs_min_max`, then the one-pass hist tail in a second read of x (stopping once
    more than ``cap`` are found). ``cut`` is about half of max|x|: the pattern of max|x| less one exponent step
    (exactly half for normal numbers; see the twin). ``path="portable"``: the copy without its AVX2 loop."""
    x = np.ascontiguousarray(x).reshape(-1)
    cdef int portable = path == "portable"
    if x.shape[0] == 0 or cap < 1:
        raise ValueError(f"abs_range_tail: need a non-empty x and cap >= 1, got {x.shape[0]} values, cap {cap}")
    if x.dtype == np.float32:
        lo, hi, bad, cut, kept = _range_tail[int32_t](x.view(np.int32), 0x7FFFFFFF, 0x7F800000, 1 << 23, cap,
                                                      portable)
    elif x.dtype == np.float64:
        lo, hi, bad, cut, kept = _range_tail[int64_t](x.view(np.int64), 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000,
                                                      1 << 52, cap, portable)
    else:
        raise TypeError(f"abs_range_tail: x must be float32 or float64, got {x.dtype}")
    lo, hi, cut = np.array([lo, hi, cut], dtype=np.int32 if x.dtype == np.float32 else np.int64).view(x.dtype)
    return float(lo), float(hi), bad, float(cut), None if kept is None else kept.view(x.dtype)


def abs_tail(x, cuts, Py_ssize_t cap, *, path=None):
    """``(j, the finite |x| >= cuts[j] in the order of x)`` for the first j with at most ``cap`` such values
    (``cuts``: up to 4 increasing values >= 0, rounded to x's dtype), or ``(len(cuts), None)``: the tail the
    one-pass hist threshold keeps: a copy at each cut in turn, stopping once more than ``cap`` are found (``path``:
    as :func:`abs_range_tail`)."""
    x = np.ascontiguousarray(x).reshape(-1)
    cdef int portable = path == "portable"
    if x.dtype == np.float32:
        j, got = _tail[int32_t](x.view(np.int32), _twin.cut_bits(cuts, np.float32, cap), 0x7FFFFFFF, 0x7F800000, cap,
                                portable)
    elif x.dtype == np.float64:
        j, got = _tail[int64_t](x.view(np.int64), _twin.cut_bits(cuts, np.float64, cap), 0x7FFFFFFFFFFFFFFF,
                                0x7FF0000000000000, cap, portable)
    else:
        raise TypeError(f"abs_tail: x must be float32 or float64, got {x.dtype}")
    return j, None if got is None else got.view(x.dtype)


def histogram_abs(x, edges):
    """int64 counts of |x| in the bins of the increasing float64 ``edges`` (np.histogram's rule)."""
    x = np.ascontiguousarray(x).reshape(-1)
    edges = _twin.check_edges(edges)
    cdef Py_ssize_t nbins = edges.shape[0] - 1
    cdef int chunks = threads_for(x.shape[0], MIN_WORK_PER_THREAD)
    partial = np.zeros((chunks, _WAYS, nbins), dtype=np.int64)
    padded = edges.copy()
    padded[nbins] = np.inf
    if x.dtype == np.float32:
        _histogram_abs[float](x, padded, edges[nbins], partial)
    elif x.dtype == np.float64:
        _histogram_abs[double](x, padded, edges[nbins], partial)
    else:
        raise TypeError(f"histogram_abs: x must be float32 or float64, got {x.dtype}")
    return partial.reshape(-1, nbins).sum(axis=0)


# |x| through its bits: with the sign bit cleared, IEEE floats order like their bit patterns, read as non-negative
# signed integers (SSE2 compares those), so min and max become integer reductions (exact, vectorizable); patterns
# at or above all-ones-exponent are Inf and NaN.
# Each chunk is reduced by one thread and the chunks are combined afterwards: min and max do not depend on order.
ctypedef fused bits_t:
    int32_t
    int64_t


cdef tuple _abs_min_max_bits(const bits_t[::1] bits, bits_t magnitude, bits_t nonfinite):
    cdef Py_ssize_t n = bits.shape[0], c, k0, k1
    cdef int chunks = threads_for(n, MIN_WORK_PER_THREAD)
    found = np.empty((chunks, 3), dtype=np.int32 if bits_t is int32_t else np.int64)
    cdef bits_t[:, ::1] found_v = found
    for c in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        k0 = n * c // chunks
        k1 = n * (c + 1) // chunks
        _abs_range(&bits[k0], k1 - k0, magnitude, nonfinite, &found_v[c, 0])
    return int(found[:, 0].min()), int(found[:, 1].max()), int(found[:, 2].sum())


cdef extern from "histogram_range.h" nogil:
    void hr_abs_range_i32(const int32_t *bits, Py_ssize_t n, int32_t magnitude, int32_t nonfinite, int32_t *found)
    void hr_abs_range_i64(const int64_t *bits, Py_ssize_t n, int64_t magnitude, int64_t nonfinite, int64_t *found)
    Py_ssize_t hr_keep_i32(const int32_t *bits, Py_ssize_t n, int32_t magnitude, int32_t nonfinite, int32_t cut,
                           int32_t *out, Py_ssize_t cap, int portable)
    Py_ssize_t hr_keep_i64(const int64_t *bits, Py_ssize_t n, int64_t magnitude, int64_t nonfinite, int64_t cut,
                           int64_t *out, Py_ssize_t cap)


cdef inline void _abs_range(const bits_t *bits, Py_ssize_t n, bits_t magnitude, bits_t nonfinite,
                            bits_t *found) noexcept nogil:
    """``found`` = (min, max, count of NaN/Inf) of the |x| patterns of bits[0:n] (histogram_range.h)."""
    if bits_t is int32_t:
        hr_abs_range_i32(bits, n, magnitude, nonfinite, found)
    else:
        hr_abs_range_i64(bits, n, magnitude, nonfinite, found)


cdef tuple _abs_max_rows(const bits_t[:, ::1] bits, bits_t magnitude, bits_t nonfinite):
    cdef Py_ssize_t rows = bits.shape[0], r
    found = np.empty((rows, 3), dtype=np.int32 if bits_t is int32_t else np.int64)
    cdef bits_t[:, ::1] found_v = found
    cdef int chunks = threads_for(bits.shape[0] * bits.shape[1], MIN_WORK_PER_THREAD)
    for r in prange(rows, nogil=True, schedule="static", num_threads=chunks):
        _abs_range(&bits[r, 0], bits.shape[1], magnitude, nonfinite, &found_v[r, 0])
    return found[:, 1].copy(), int(found[:, 2].sum())


cdef tuple _range_tail(const bits_t[::1] bits, bits_t magnitude, bits_t nonfinite, bits_t half, Py_ssize_t cap,
                       int portable):
    lo, hi, bad = _abs_min_max_bits[bits_t](bits, magnitude, nonfinite)
    cut = hi - half if hi > half else 0
    return lo, hi, bad, cut, _keep[bits_t](bits, magnitude, nonfinite, cut, cap, portable)


cdef object _keep(const bits_t[::1] bits, bits_t magnitude, bits_t nonfinite, bits_t cut, Py_ssize_t cap,
                  int portable):
    """The finite |x| patterns >= cut in the order of x, or None when more than ``cap``: each chunk copies its own
    (histogram_range.h), the chunks are joined in order."""
    cdef Py_ssize_t n = bits.shape[0], c, k0, k1
    cdef int chunks = threads_for(n, MIN_WORK_PER_THREAD)
    out = np.empty((chunks, cap + 1), dtype=np.int32 if bits_t is int32_t else np.int64)
    count = np.empty(chunks, dtype=np.intp)
    cdef bits_t[:, ::1] out_v = out
    cdef Py_ssize_t[::1] count_v = count
    for c in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        k0 = n * c // chunks
        k1 = n * (c + 1) // chunks
        if bits_t is int32_t:
            count_v[c] = hr_keep_i32(&bits[k0], k1 - k0, magnitude, nonfinite, cut, &out_v[c, 0], cap, portable)
        else:
            count_v[c] = hr_keep_i64(&bits[k0], k1 - k0, magnitude, nonfinite, cut, &out_v[c, 0], cap)
    if count.sum() > cap:
        return None
    return np.concatenate([out[c, :count[c]] for c in range(chunks)])


cdef tuple _tail(const bits_t[::1] bits, cuts, bits_t magnitude, bits_t nonfinite, Py_ssize_t cap, int portable):
    """:func:`_keep` at each cut in turn until one keeps at most ``cap`` (each attempt stops reading at cap + 1)."""
    for j, cut in enumerate(cuts):
        kept = _keep[bits_t](bits, magnitude, nonfinite, cut, cap, portable)
        if kept is not None:
            return j, kept
    return len(cuts), None


cdef enum:
    _WAYS = 4  # interleaved histograms per thread


cdef void _histogram_abs(const floating[::1] x, const double[::1] padded, double last,
                         int64_t[:, :, ::1] partial) noexcept:
    cdef Py_ssize_t n = x.shape[0], nbins = padded.shape[0] - 1, chunks = partial.shape[0], c, k0, k1
    for c in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        k0 = n * c // chunks
        k1 = n * (c + 1) // chunks
        _count_abs(&x[k0], k1 - k0, &padded[0], nbins, last, &partial[c, 0, 0])


cdef inline Py_ssize_t _bin(double v, const double *e, Py_ssize_t nbins, double first,
                            double per_unit) noexcept nogil:
    """The largest b <= nbins-1 with e[b] <= v, for v in [e[0], last] (e[nbins] is +inf)."""
    cdef double guess = (v - first) * per_unit
    cdef Py_ssize_t b = <Py_ssize_t> guess if guess < nbins else nbins - 1
    while e[b] > v:
        b = b - 1
    while e[b + 1] <= v:
        b = b + 1
    return b


cdef void _count_abs(const floating *x, Py_ssize_t n, const double *e, Py_ssize_t nbins, double last,
                     int64_t *counts) noexcept nogil:
    """Adds the |x| of x[0:n] to ``counts`` (``_WAYS`` histograms of nbins, element k into histogram k % _WAYS)."""
    cdef double first = e[0]
    cdef double per_unit = nbins / (last - first) if last > first else 0.0
    cdef Py_ssize_t k = 0, j, body = n - n % _WAYS
    while k < body:
        for j in range(_WAYS):
            _add(fabs(<double> x[k + j]), e, nbins, first, last, per_unit, counts + j * nbins)
        k = k + _WAYS
    for k in range(body, n):
        _add(fabs(<double> x[k]), e, nbins, first, last, per_unit, counts)


cdef inline void _add(double v, const double *e, Py_ssize_t nbins, double first, double last, double per_unit,
                      int64_t *counts) noexcept nogil:
    if v >= first and v <= last:  # else outside the range, or NaN: np.histogram drops it
        counts[_bin(v, e, nbins, first, per_unit)] += 1
