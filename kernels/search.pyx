"""The mse / emd threshold scans over float32 activations. Twin: refquant/reference/search.py.

For each candidate threshold ``c`` the twin evaluates Paddle's NumPy expressions on float32 arrays; this kernel
computes the same float32 values element by element, without temporaries:

- ``c32 = (float)c`` and ``bnt = (float)(2**(bits-1) - 1)`` (NumPy casts the Python scalars to float32);
- non-onnx: ``qdq = rint((min(max(x, 0), c32) / c32) * bnt) / bnt * c32``; onnx:
  ``qdq = min(max(rint((x / c32) * bnt), -bnt-1), bnt) / bnt * c32``; ``rint`` is round-half-even;
- every NumPy float32 sum is reproduced with NumPy's own pairwise summation (``0 + pairwise(a, n)``: below 8
  elements a plain loop, up to 128 eight interleaved accumulators combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))
  plus a sequential remainder, above that a split at ``n/2`` rounded down to a multiple of 8), and the means
  divide in double and round back to float32 as ``np.mean`` does; ``np.std`` is the square root of the mean
  squared deviation from the float32 mean.

So each loss is the same float32 as the twin's, bit for bit (tests/test_calibration.py checks it against the twin
on many sizes). With ``prune``, the candidates the twin shows to lose (after two pilots computed first) stop early
and read ``inf``, the same ones as the twin's. Candidates are independent and each is computed by one thread, so
results do not depend on the thread count. Compiled with ``-ffp-contract=off`` (a fused multiply-add would change the bits) and
``-fno-trapping-math`` (lets GCC turn the clip/rint branches into vector selects; values are unchanged). The
element loop and the pairwise base case (up to 128 values) are C, kernels/include/search_fill.h, built for AVX2,
SSE4.1 and the baseline (GCC on x86-64 Linux picks one at load time; the same operations, so the same bits).
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, fabsf, sqrtf

from _openmp cimport threads_for

cdef extern from "search_fill.h" nogil:
    float sf_sum(const float *x, int kind, int onnx, float c, float bnt, float mean, Py_ssize_t n)

import numpy as np

from refquant.reference import search as _twin

# What the pairwise sum adds up, element k.
cdef enum Kind:
    SQ_ERR = 0    # (x - qdq)^2            mse loss
    QDQ = 1       # qdq                    emd: mean of qdq
    QDQ_DEV = 2   # (qdq - mean)^2         emd: variance of qdq
    X = 3         # x                      emd: mean of x
    X_DEV = 4     # (x - mean)^2           emd: variance of x
    NEG_SQ = 5    # x^2 if x < 0 else 0    pruned mse: every candidate's error on x < 0 (non-onnx)

cdef struct Prune:
    double run          # the chunks' values summed so far
    double lim
    const double *rest  # rest[k]: at least what the chunks after the k-th add
    Py_ssize_t k        # chunks summed so far

cdef struct Job:
    const float *x
    float c        # candidate threshold, as float32
    float bnt      # 2**(bits-1) - 1
    float mean     # the float32 mean subtracted by the *_DEV kinds
    bint onnx
    Kind kind

# Element evaluations per thread below which a call stays single-threaded.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 16
# Pruning: the values a pruned candidate sums between checks (the twin's constants).
cdef Py_ssize_t PRUNE_CHUNK = _twin.PRUNE_CHUNK


def is_usable_for(x):
    """True for a float32 ndarray (Paddle's activations); other dtypes take the twin."""
    return isinstance(x, np.ndarray) and x.dtype == np.float32


def scan_losses(x, scales, bits, bint onnx_format, str loss, bint prune=False):
    """float32 losses of the candidate thresholds ``scales`` (doubles), ``loss`` "mse" or "emd"; with ``prune``,
    ``inf`` for the candidates shown to lose (the twin's steps)."""
    _twin.check_scan(x, scales, bits, loss)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    cdef const float[::1] xv = x
    cdef const double[::1] sv = np.ascontiguousarray(scales, dtype=np.float64)
    cdef Py_ssize_t n = xv.shape[0], ns = sv.shape[0], j
    out = np.empty(ns, dtype=np.float32)
    cdef float[::1] ov = out
    cdef bint emd = loss == "emd"
    cdef float bnt = <float> (2 ** (bits - 1) - 1)
    cdef float mean_x = 0, std_x = 0
    cdef Job job
    if emd:
        job.x = &xv[0]
        job.kind = X
        mean_x = _mean(&job, n)
        job.kind = X_DEV
        job.mean = mean_x
        std_x = sqrtf(_mean(&job, n))
    if prune and _twin.prunes(n, ns, loss, x.dtype):
        _pruned(x, scales, bits, loss, xv, sv, bnt, onnx_format, mean_x, std_x, ov)
        return out
    cdef int n_threads = threads_for(n * ns, MIN_WORK_PER_THREAD)
    for j in prange(ns, nogil=True, schedule="dynamic", chunksize=1, num_threads=n_threads):
        ov[j] = _loss(&xv[0], n, <float> sv[j], bnt, onnx_format, emd, mean_x, std_x, NAN)
    return out


cdef _pruned(x, scales, bits, str loss, const float[::1] xv, const double[::1] sv, float bnt, bint onnx,
             float mean_x, float std_x, float[::1] ov):
    """The pruned scan into ov: the two pilots in full, then the others against the better one."""
    cdef Py_ssize_t n = xv.shape[0], ns = sv.shape[0], i, k
    cdef bint emd = loss == "emd"
    first = _twin.pilots(scan_losses(x[::_twin.PRUNE_STRIDE], scales, bits, onnx, loss))
    cdef Py_ssize_t[::1] order = np.array(first + [j for j in range(ns) if j not in first], dtype=np.intp)
    cdef Py_ssize_t[:, ::1] spans = np.array(_twin.chunks(n), dtype=np.intp)
    cdef double[::1] rest = np.zeros(spans.shape[0])
    cdef float[2] tot  # the pilots' mse sums or emd losses
    cdef float total
    cdef double lim = NAN
    cdef Job job
    job.x, job.kind = &xv[0], NEG_SQ
    for k in range(spans.shape[0] - 2 if not (onnx or emd) else -1, -1, -1):  # no floor with onnx or emd
        rest[k] = rest[k + 1] + _pairwise(&job, spans[k + 1, 0], spans[k + 1, 1], NULL)
    for i in prange(2, nogil=True, schedule="static", num_threads=threads_for(2 * n, MIN_WORK_PER_THREAD)):
        if emd:
            tot[i] = _loss(&xv[0], n, <float> sv[order[i]], bnt, onnx, True, mean_x, std_x, NAN)
        else:
            tot[i] = _sq_err_sum(&xv[0], n, <float> sv[order[i]], bnt, onnx, NAN, &rest[0])
    for i in range(2):
        ov[order[i]] = tot[i] if emd else <float> (<double> tot[i] / <double> n)
        if tot[i] == tot[i] and not lim <= tot[i]:
            lim = tot[i]
    lim = lim if emd else lim * (1.0 + 1.0 / 65536)
    for i in prange(2, ns, nogil=True, schedule="dynamic", chunksize=1,
                    num_threads=threads_for(n * (ns - 2), MIN_WORK_PER_THREAD)):
        if emd:
            ov[order[i]] = _loss(&xv[0], n, <float> sv[order[i]], bnt, onnx, True, mean_x, std_x, <float> lim)
        else:
            total = _sq_err_sum(&xv[0], n, <float> sv[order[i]], bnt, onnx, lim, &rest[0])
            ov[order[i]] = <float> (<double> total / <double> n)


def pairwise_sum(x):
    """NumPy's float32 sum (``np.add.reduce``) of a 1-D float32 array, for the tests."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    cdef const float[::1] xv = x
    cdef Job job
    if xv.shape[0] == 0:
        return np.float32(0)
    job.x = &xv[0]
    job.kind = X
    return np.float32(<float> 0.0 + _pairwise(&job, 0, xv.shape[0], NULL))


cdef float _loss(const float *x, Py_ssize_t n, float c, float bnt, bint onnx, bint emd, float mean_x,
                 float std_x, float best) noexcept nogil:
    """The candidate's loss; emd: inf when |mean_x - mean_q| > best already (the std pass skipped)."""
    cdef Job job
    cdef float mean_q, std_q
    job.x = x
    job.c = c
    job.bnt = bnt
    job.onnx = onnx
    if not emd:
        job.kind = SQ_ERR
        return _mean(&job, n)
    job.kind = QDQ
    mean_q = _mean(&job, n)
    if fabsf(mean_x - mean_q) > best:
        return INFINITY
    job.kind = QDQ_DEV
    job.mean = mean_q
    std_q = sqrtf(_mean(&job, n))
    return fabsf(mean_x - mean_q) + fabsf(std_x - std_q)


cdef inline float _mean(const Job *job, Py_ssize_t n) noexcept nogil:
    """np.mean of float32 values: float32 pairwise sum, divided in double, rounded to float32."""
    cdef float total = <float> 0.0 + _pairwise(job, 0, n, NULL)
    return <float> (<double> total / <double> n)


cdef float _sq_err_sum(const float *x, Py_ssize_t n, float c, float bnt, bint onnx, double lim,
                       const double *rest) noexcept nogil:
    """The float32 sum of the squared errors, or inf once the chunks summed so far plus rest[chunk] exceed lim."""
    cdef Job job
    cdef Prune p
    job.x, job.c, job.bnt, job.onnx, job.kind, job.mean = x, c, bnt, onnx, SQ_ERR, 0
    p.run, p.lim, p.rest, p.k = 0, lim, rest, 0
    cdef float total = <float> 0.0 + _pairwise(&job, 0, n, &p)
    return INFINITY if p.run + rest[p.k - 1] > lim else total


cdef float _pairwise(const Job *job, Py_ssize_t lo, Py_ssize_t n, Prune *p) noexcept nogil:
    """NumPy's pairwise summation of elements lo .. lo+n-1 (numpy/_core/src/umath/loops_utils.h.src). With p (a
    pruned scan), each chunk's value (a node of at most PRUNE_CHUNK values whose parent is larger: the twin's
    chunks) is added to p.run in order, and the rest is skipped once p.run + p.rest[chunk] > p.lim."""
    cdef Py_ssize_t half
    cdef float s
    if p != NULL and n <= PRUNE_CHUNK:
        s = _pairwise(job, lo, n, NULL)
        p.run, p.k = p.run + s, p.k + 1
        return s
    if n <= 128:
        return sf_sum(job.x + lo, job.kind, job.onnx, job.c, job.bnt, job.mean, n)
    half = n // 2
    half = half - half % 8
    s = _pairwise(job, lo, half, p)
    return s if p != NULL and p.run + p.rest[p.k - 1] > p.lim else s + _pairwise(job, lo + half, n - half, p)
