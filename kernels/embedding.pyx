"""Row-dequantizing embedding lookup for quantized tables. Twin: refquant/reference/embedding.py.

``table`` is the int8/int16 table (V, D); ``ids`` a flat int64 vector of n row indices (already checked to lie in
[0, V)). Only the n rows read are dequantized, into a new float32 (n, D):

* abs_max: ``out[i, :] = (scale[r] * (float) q[r, :]) / qmax`` with r = ids[i] (``scale`` has 1 entry, per
  tensor, or V, per row), each step a float32 operation, as Paddle's ``dequantize_abs_max`` kernel and the twin;
* log: ``out[i, :] = dict[q]`` for q >= 0, ``-dict[q + 128]`` for q < 0 (Paddle's ``dequantize_log``).

Rows equal to ``padding_idx`` (< 0: none) read zeros. Threads split the ids (each writes its own output rows), so
the bits do not depend on the thread count. An index outside the dictionary is counted, never read.
"""
cimport cython
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int16_t
from libc.string cimport memset

from _openmp cimport threads_for

import numpy as np

ctypedef fused qint:
    int8_t
    int16_t

# Output elements per thread below which a call stays single-threaded.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 15


def is_usable_for(table):
    """True for a C-contiguous-able int8/int16 ndarray of rank 2."""
    return isinstance(table, np.ndarray) and table.dtype in (np.int8, np.int16) and table.ndim == 2


def lookup_dequant_abs_max(table, scale, ids, double qmax, Py_ssize_t padding_idx=-1):
    """(V, D) int table, float32 scale (1 or V entries), int64 ids (n,) -> float32 (n, D)."""
    table = np.ascontiguousarray(table)
    scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(-1)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if scale.shape[0] not in (1, table.shape[0]):
        raise ValueError(f"lookup_dequant: scale needs 1 or {table.shape[0]} entries, got {scale.shape[0]}")
    out = np.empty((ids.shape[0], table.shape[1]), dtype=np.float32)
    if table.dtype == np.int8:
        _abs_max[int8_t](table, scale, ids, <float> qmax, padding_idx, out)
    else:
        _abs_max[int16_t](table, scale, ids, <float> qmax, padding_idx, out)
    return out


def lookup_dequant_log(table, dictionary, ids, Py_ssize_t padding_idx=-1):
    """(V, D) int table of log-dictionary indices, float32 dictionary, int64 ids (n,) -> float32 (n, D)."""
    table = np.ascontiguousarray(table)
    dictionary = np.ascontiguousarray(dictionary, dtype=np.float32).reshape(-1)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    out = np.empty((ids.shape[0], table.shape[1]), dtype=np.float32)
    cdef Py_ssize_t bad
    if table.dtype == np.int8:
        bad = _log[int8_t](table, dictionary, ids, padding_idx, out)
    else:
        bad = _log[int16_t](table, dictionary, ids, padding_idx, out)
    if bad:
        raise ValueError(f"lookup_dequant: {bad} table entries index outside the {dictionary.shape[0]}-entry "
                         f"log dictionary")
    return out


cdef void _abs_max(const qint[:, ::1] table, const float[::1] scale, const long long[::1] ids, float qmax,
                   Py_ssize_t padding_idx, float[:, ::1] out) noexcept:
    cdef Py_ssize_t i, j, r, d = table.shape[1], n = ids.shape[0]
    cdef bint per_row = scale.shape[0] > 1
    cdef float s
    cdef int n_threads = threads_for(n * d, MIN_WORK_PER_THREAD)
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        r = ids[i]
        if r == padding_idx:
            memset(&out[i, 0], 0, d * sizeof(float))
            continue
        s = scale[r] if per_row else scale[0]
        for j in range(d):
            out[i, j] = (s * <float> table[r, j]) / qmax


cdef Py_ssize_t _log(const qint[:, ::1] table, const float[::1] dictionary, const long long[::1] ids,
                     Py_ssize_t padding_idx, float[:, ::1] out) noexcept:
    cdef Py_ssize_t i, j, r, k, d = table.shape[1], n = ids.shape[0], size = dictionary.shape[0]
    cdef Py_ssize_t bad = 0
    cdef int n_threads = threads_for(n * d, MIN_WORK_PER_THREAD)
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        r = ids[i]
        if r == padding_idx:
            memset(&out[i, 0], 0, d * sizeof(float))
            continue
        for j in range(d):
            k = table[r, j]
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
