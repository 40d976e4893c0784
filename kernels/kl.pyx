"""The KL threshold search in C, parallel over candidate lengths. Twin: refquant/reference/kl.py.

``kl_scan`` scores every candidate length ``i`` with exactly the float operations of Paddle's pure-Python
``cal_kl_threshold``, in the same order, so each divergence ``D_i`` is the same double bit for bit:

- counts are int64 (group sums and outlier sums are exact, as with Python ints) or float64 (group sums and
  outlier sums are added left to right starting from 0.0, as Python's ``sum`` does);
- ``share = (double)G / (double)nz``; ``Qsum`` adds ``share`` once per nonzero reference bin, in bin order;
- the two entropy sums run left to right over the bins with ``p != 0``, with glibc's ``log`` (the function
  Python's ``math.log`` calls); the kernels are compiled with ``-ffp-contract=off`` so no multiply-add is fused.

Two shortcuts change no bits: ``log(Psum * share)`` is the same for every nonzero bin of a group, so it is taken
once per group; and ``log(Qsum * p)`` for small integral ``p`` is remembered per candidate (a value cache keyed by
``p``). Each candidate is scored by one thread from start to end, so the curve is identical for any thread count;
the argmin (first strictly smallest) is taken afterwards in candidate order.
"""
cimport cython
from cython.parallel cimport parallel, prange
from libc.math cimport log
from libc.stdint cimport int8_t, int64_t
from libc.stdlib cimport free, malloc

from _openmp cimport threads_for

import numpy as np

from refquant.reference import kl as _twin

ctypedef fused count_t:
    int64_t
    double

# Candidate states in the status array returned by kl_scan.
cdef enum:
    SKIPPED = 0     # hist[i-1] == 0: the original skips this length
    SCORED = 1      # D[i] holds the divergence
    LOG_DOMAIN = 2  # a log argument was <= 0 (q == 0 where p != 0): Paddle's math.log raises here
    NO_MEMORY = 3   # internal: a thread's scratch allocation failed (kl_scan raises MemoryError)

# The largest ``levels`` (2**(bits-1) - 1 for bits <= 16, the range cal_kl_threshold accepts).
cdef int MAX_LEVELS = 2 ** 15 - 1
# log(Qsum * p) is cached for integral p below this (counts of real histograms are mostly small).
cdef Py_ssize_t CACHE_SIZE = 4096
# Candidate-bin operations per thread below which a call stays single-threaded.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 17


def is_usable_for(hist):
    """True for a 1-D histogram this module scores with the twin's bits (see :func:`_counts`); other dtypes
    (float32, bool, ...) and counts whose sums might overflow int64 keep the twin's exact Python semantics."""
    return _counts(hist) is not None


def _counts(hist):
    """The int64 or float64 array the scan takes with unchanged results, or None (then the twin runs)."""
    if not isinstance(hist, np.ndarray) or hist.ndim != 1:
        return None
    if hist.dtype == np.float64 and np.all(hist == np.floor(hist)) and hist.sum() < 2.0 ** 53:
        # whole-number float counts: every sum the twin forms is exact, so the int64 path (with its exact integer
        # sums and cached logs) gives the same bits, ~5x faster than the float path
        counts = hist.astype(np.int64)
    elif hist.dtype in (np.int64, np.float64):
        counts = hist
    elif hist.dtype.kind in "iu":
        counts = hist.astype(np.int64)
    else:
        return None
    if counts.dtype == np.int64:
        limit = np.iinfo(np.int64).max if hist.dtype.kind == "f" else min(np.iinfo(hist.dtype).max,
                                                                          np.iinfo(np.int64).max)
        if int(hist.max()) * hist.shape[0] >= limit:
            return None  # a sum might overflow: let the twin reproduce whatever NumPy does
    return np.ascontiguousarray(counts)


def _curve(hist, bits):
    """(D, status) of every candidate length of a validated histogram (``is_usable_for`` true)."""
    n = hist.shape[0]
    P_sum = np.sum(np.array(hist).ravel())  # as Paddle forms it; used as a double
    D, status = kl_scan(_counts(hist), float(P_sum), 2 ** (bits - 1) - 1, int((n - 1) * 0.5))
    errors = np.flatnonzero(status == 2)
    if errors.size:
        raise ValueError(f"cal_kl_threshold: at candidate length {int(errors[0])} the expanded distribution Q is 0 "
                         "where P is not (or a log argument underflows to 0); Paddle fails here too (math.log: "
                         "math domain error)")
    return D, status


def kl_curve(hist, bits):
    """``(i, D_i)`` for every candidate length that is scored, as the twin's ``kl_curve``."""
    D, status = _curve(hist, bits)
    return [(int(i), float(D[i])) for i in np.flatnonzero(status == 1)]


def cal_kl_threshold(hist, bin_width, bits):
    """Paddle's ``cal_kl_threshold(hist, bin_width, bits)`` as the twin computes it: ``(best_i + 0.5) * bin_width``
    with the caller's ``bin_width`` object."""
    D, status = _curve(hist, bits)
    best_i, _ = best_index(D, status)
    if best_i == 0:
        best_i = _twin.best_index(hist, [])  # nothing scored: the walk down from start
    return (best_i + 0.5) * bin_width


def kl_scan(hist, double P_sum, int levels, Py_ssize_t start):
    """Score candidate lengths ``start .. n-1``: returns ``(D, status)``, float64 and int8 arrays of length n.

    ``P_sum`` is the histogram total as Paddle forms it (``np.sum``, converted to double where it is used);
    ``levels`` is ``2**(bits-1) - 1``; ``start`` is ``int((n - 1) * 0.5)``. ``status[i]`` is SKIPPED (0),
    SCORED (1) or LOG_DOMAIN (2, the original raises); entries below ``start`` are SKIPPED.
    """
    if not isinstance(hist, np.ndarray) or hist.ndim != 1:
        raise ValueError(f"kl_scan: hist must be a 1-D ndarray, got {getattr(hist, 'shape', type(hist).__name__)}")
    hist = np.ascontiguousarray(hist)
    cdef Py_ssize_t n = hist.shape[0]
    if levels < 1 or levels > MAX_LEVELS or start < 1 or start > n:
        raise ValueError(f"kl_scan: need 1 <= levels <= {MAX_LEVELS} (bits <= 16) and 1 <= start <= n, got "
                         f"levels={levels}, start={start}, n={n}")
    D = np.zeros(n, dtype=np.float64)
    status = np.zeros(n, dtype=np.int8)
    if hist.dtype == np.int64:
        _scan[int64_t](hist, P_sum, levels, start, D, status)
    elif hist.dtype == np.float64:
        _scan[double](hist, P_sum, levels, start, D, status)
    else:
        raise TypeError(f"kl_scan: hist must be int64 or float64, got {hist.dtype}")
    return D, status


def best_index(const double[::1] D, const int8_t[::1] status):
    """``(best_i, n_log_domain)``: the first ``i`` of the strictly smallest scored ``D`` (0 if none was scored,
    as the original's ``min_kl_index``) and how many candidates hit the log-domain error."""
    cdef Py_ssize_t i, best_i = 0, errors = 0
    cdef double best_D = 0.0
    if D.shape[0] != status.shape[0]:
        raise ValueError(f"best_index: D and status must have one length, got {D.shape[0]} and {status.shape[0]}")
    for i in range(D.shape[0]):
        if status[i] == LOG_DOMAIN:
            errors += 1
        elif status[i] == SCORED:
            if best_i == 0 or D[i] < best_D:
                best_i = i
                best_D = D[i]
    return best_i, errors


cdef int _scan(const count_t[::1] h, double P_sum, int levels, Py_ssize_t start, double[::1] D,
               int8_t[::1] status) except -1:
    cdef Py_ssize_t n = h.shape[0], i, j = 0, k
    cdef int64_t *suffix = NULL
    cdef double *share = NULL
    cdef double *cache = NULL
    cdef Py_ssize_t *cache_key = NULL
    cdef count_t outliers
    cdef Py_ssize_t work = 0
    for i in range(start, n):  # the bins the scored candidates will visit: skipped ones cost nothing
        if h[i - 1] != 0:
            work += i
    cdef int n_threads = threads_for(work, MIN_WORK_PER_THREAD)
    if count_t is int64_t:
        # Exact integer tail sums; Python's sum over int64 scalars is exact too (no overflow: see the caller).
        suffix = <int64_t *> malloc((n + 1) * sizeof(int64_t))
        if suffix == NULL:
            raise MemoryError("kl_scan: no memory for the suffix sums")
        suffix[n] = 0
        for k in range(n - 1, -1, -1):
            suffix[k] = suffix[k + 1] + h[k]
    with nogil, parallel(num_threads=n_threads):
        share = <double *> malloc(levels * sizeof(double))
        cache = <double *> malloc(CACHE_SIZE * sizeof(double))
        cache_key = <Py_ssize_t *> malloc(CACHE_SIZE * sizeof(Py_ssize_t))
        if cache_key != NULL:
            for j in range(CACHE_SIZE):
                cache_key[j] = -1
        for i in prange(start, n, schedule="dynamic", chunksize=4):
            if share == NULL or cache == NULL or cache_key == NULL:
                status[i] = NO_MEMORY  # this thread could not get its scratch: reported below
                continue
            if h[i - 1] == 0:
                status[i] = SKIPPED
                continue
            if count_t is int64_t:
                outliers = suffix[i]
            else:
                outliers = 0.0
                for k in range(i, n):  # left to right, as Python's sum(hist[i:])
                    outliers = outliers + h[k]
            status[i] = _score(&h[0], i, levels, P_sum, outliers, share, cache, cache_key, &D[i])
        free(share)
        free(cache)
        free(cache_key)
    free(suffix)
    for i in range(start, n):
        if status[i] == NO_MEMORY:
            raise MemoryError("kl_scan: no memory for a thread's scratch")
    return 0


@cython.cdivision(True)
cdef int8_t _score(const count_t *h, Py_ssize_t i, int levels, double P_sum, count_t outliers, double *share,
                   double *cache, Py_ssize_t *cache_key, double *out) noexcept nogil:
    """Divergence of candidate length ``i`` into ``out``; returns SCORED or LOG_DOMAIN."""
    cdef Py_ssize_t m = i // levels, g, k, lo, hi, nz, last = i - 1, key
    cdef count_t G, r
    cdef count_t P_last = h[last] + outliers  # the fold: P[i-1] += sum(hist[i:])
    cdef double Q_sum = 0.0, p, lg, lp, arg, sum1 = 0.0, sum2 = 0.0
    # Groups g < levels-1 are [g*m, (g+1)*m); the last is [(levels-1)*m, i) and always holds bin i-1.
    for g in range(levels):
        lo = g * m
        hi = (g + 1) * m if g < levels - 1 else i
        G = 0
        nz = 0
        for k in range(lo, hi):
            G = G + h[k]  # the unfolded prefix: the tail is not in Q
            r = P_last if k == last else h[k]
            if r != 0:
                nz += 1
        if nz == 0:
            share[g] = -1.0  # no nonzero reference bin: the group adds nothing anywhere
            continue
        share[g] = <double> G / <double> nz
        for k in range(nz):  # Qsum = sum(Q), left to right over the nonzero entries
            Q_sum = Q_sum + share[g]
    for g in range(levels):
        if share[g] == -1.0:
            continue
        arg = P_sum * share[g]
        if arg <= 0.0:
            return LOG_DOMAIN
        lg = log(arg)
        lo = g * m
        hi = (g + 1) * m if g < levels - 1 else i
        for k in range(lo, hi):
            r = P_last if k == last else h[k]
            if r == 0:
                continue
            p = <double> r
            key = <Py_ssize_t> p if p < CACHE_SIZE else -1
            if key >= 0 and <double> key == p and cache_key[key] == i:
                lp = cache[key]
            else:
                arg = Q_sum * p
                if arg <= 0.0:
                    return LOG_DOMAIN
                lp = log(arg)
                if key >= 0 and <double> key == p:
                    cache[key] = lp
                    cache_key[key] = i
            sum1 = sum1 + p * lp
            sum2 = sum2 + p * lg
    out[0] = (sum1 - sum2) / P_sum
    return SCORED
