"""Embedding kernels for quantized tables. Twin (and spec): refquant/reference/embedding.py.

Lookups: ``table`` is the int8/int16 table (V, D), ``ids`` the row indices (read flat). Only the n rows read are
dequantized, into a new float32 (n, D):

* abs_max: ``out[i, :] = (scale[r] * (float) q[r, :]) / qmax`` with r = ids[i] (``scale`` has 1 entry, per
  tensor, or V, per row), each step a float32 operation, as Paddle's ``dequantize_abs_max`` kernel and the twin;
* log: ``out[i, :] = dict[q]`` for q >= 0, ``-dict[q + 128]`` for q < 0 (Paddle's ``dequantize_log``).

A row equal to ``padding_idx`` (-1: none) reads the integer 0, as Paddle's lookup_table leaves it for the
dequantize op (abs_max: +0; log: ``dict[0]``). Every entry point first runs the twin's validation
(``check_lookup`` / ``check_log_index``: ids in range, ranks, dtypes, padding_idx, sizes), so both reject the same
inputs and the loops below never read outside an array. Threads split the ids (each writes its own output rows),
so the bits do not depend on the thread count. An index outside the dictionary is counted, never read.

``log_index``: PaddleSlim's nearest log level per element (a binary search, then the strict left-neighbour test
and the sign rule of the twin).
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport fabsf
from libc.stdint cimport int8_t, int16_t, int32_t

from _openmp cimport threads_for

import numpy as np

from refquant.errors import ArgumentError
from refquant.reference.embedding import check_log_index, check_lookup  # one validation for both sides

ctypedef fused qint:
    int8_t
    int16_t

# Output elements per thread below which a call stays single-threaded.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 15


def is_usable_for(table):
    """True for an int8/int16 ndarray of rank 2 (anything else goes to the twin, which says what is wrong)."""
    return isinstance(table, np.ndarray) and table.dtype in (np.int8, np.int16) and table.ndim == 2


def lookup_dequant_abs_max(table, scale, ids, double qmax, padding_idx=-1):
    """(V, D) int table, float32 scale (1 or V entries), ids in [0, V) -> float32 (n, D)."""
    table, scale, ids, pad = check_lookup(table, scale, ids, padding_idx, "abs_max")
    if not qmax > 0:
        raise ArgumentError(f"lookup_dequant_abs_max: qmax must be positive, got {qmax}")
    out = np.empty((ids.shape[0], table.shape[1]), dtype=np.float32)
    if table.dtype == np.int8:
        _abs_max[int8_t](table, scale, ids, <float> qmax, pad, out)
    else:
        _abs_max[int16_t](table, scale, ids, <float> qmax, pad, out)
    return out


def lookup_dequant_log(table, dictionary, ids, padding_idx=-1):
    """(V, D) int table of log-dictionary indices, float32 dictionary, ids in [0, V) -> float32 (n, D)."""
    table, dictionary, ids, pad = check_lookup(table, dictionary, ids, padding_idx, "log")
    out = np.empty((ids.shape[0], table.shape[1]), dtype=np.float32)
    cdef Py_ssize_t bad
    if table.dtype == np.int8:
        bad = _log[int8_t](table, dictionary, ids, pad, out)
    else:
        bad = _log[int16_t](table, dictionary, ids, pad, out)
    if bad:
        raise ValueError(f"lookup_dequant: {bad} table entries index outside the {dictionary.shape[0]}-entry "
                         f"log dictionary")
    return out


def log_index(levels, dict_levels, table):
    """float32 levels (V, D), strictly ascending float32 dict_levels (K,), float32 table (V, D) -> int32 (V, D)."""
    levels, dict_levels, table = check_log_index(levels, dict_levels, table)
    out = np.empty(levels.shape, dtype=np.int32)
    _log_index(levels, dict_levels, table, out)
    return out


cdef void _abs_max(const qint[:, ::1] table, const float[::1] scale, const long long[::1] ids, float qmax,
                   Py_ssize_t padding_idx, float[:, ::1] out) noexcept:
    cdef Py_ssize_t i, j, r, d = table.shape[1], n = ids.shape[0]
    cdef bint per_row = scale.shape[0] > 1
    cdef float s
    cdef int n_threads = threads_for(n * d, MIN_WORK_PER_THREAD)
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        r = ids[i]
        s = scale[r] if per_row else scale[0]
        if r == padding_idx:
            for j in range(d):
                out[i, j] = (s * <float> 0) / qmax
            continue
        for j in range(d):
            out[i, j] = (s * <float> table[r, j]) / qmax


cdef Py_ssize_t _log(const qint[:, ::1] table, const float[::1] dictionary, const long long[::1] ids,
                     Py_ssize_t padding_idx, float[:, ::1] out) noexcept:
    cdef Py_ssize_t i, j, r, k, d = table.shape[1], n = ids.shape[0], size = dictionary.shape[0]
    cdef Py_ssize_t bad = 0
    cdef int n_threads = threads_for(n * d, MIN_WORK_PER_THREAD)
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        r = ids[i]
        for j in range(d):
            k = 0 if r == padding_idx else table[r, j]
            if k < 0:
                k = k + 128
                if k < 0 or k >= size:
                    bad += 1
                    out[i, j] = 0
                else:
                    out[i, j] = -dictionary[k]
            elif k >= size:
                bad += 1
                out[i, j] = 0
            else:
                out[i, j] = dictionary[k]
    return bad


cdef void _log_index(const float[:, ::1] levels, const float[::1] dict_levels, const float[:, ::1] table,
                     int32_t[:, ::1] out) noexcept:
    cdef Py_ssize_t r, j, lo, hi, mid, idx, rows = levels.shape[0], d = levels.shape[1], n = dict_levels.shape[0]
    cdef float v
    cdef int n_threads = threads_for(rows * d, MIN_WORK_PER_THREAD)
    for r in prange(rows, nogil=True, schedule="static", num_threads=n_threads):
        for j in range(d):
            v = levels[r, j]
            lo = 0                     # searchsorted(side="left"): the first i with dict[i] >= v
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if dict_levels[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            idx = lo
            if idx > 0 and (idx == n or fabsf(dict_levels[idx - 1] - v) < fabsf(dict_levels[idx] - v)):
                idx = idx - 1
            out[r, j] = <int32_t> (idx - 128 if table[r, j] < 0 else idx)
