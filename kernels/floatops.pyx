"""Float32 inference kernels (gelu, softmax, layer norm). Twin and specification: refquant/reference/floatops.py.

Thin typed wrappers: arguments are validated by the twin's own helper (so both reject the same inputs), the
work runs in the C loops of ``kernels/include/floatops/floatops.h`` on the calling thread, in element chunks or
row blocks. No OpenMP here on purpose: these memory-bound passes sit between BLAS calls (FP32 and dynamic-INT8
transformers), and an OpenMP team woken between them fights OpenBLAS's spin-waiting workers at 2 threads (BERT
FP32 ran 484 ms at 2 threads vs 342 ms at 1 with these kernels parallel); im2col is serial for the same reason.

Paths: ``available_paths()`` lists what this CPU runs, best first ("avx2", "portable"); ``current_path()`` is
the default (refquant/_paths.py: the best one, or the one ``REFQUANT_PATH_FLOATOPS`` / ``REFQUANT_FORCE_PORTABLE=1``
forces); every function takes ``path=`` to force one (for tests). All paths give the same bits as the twin.
"""
import numpy as np

from refquant._paths import IsaPaths
from refquant.reference import floatops as _spec


cdef extern from "floatops/floatops.h" nogil:
    ctypedef struct fo_path:
        const char *name
        void (*gelu_erf)(const float *x, Py_ssize_t n, float *y) noexcept nogil
        void (*softmax_rows)(const float *x, Py_ssize_t rows, Py_ssize_t n, float *y) noexcept nogil
        void (*layer_norm_rows)(const float *x, Py_ssize_t rows, Py_ssize_t n, const float *scale,
                                const float *bias, double eps, float *y) noexcept nogil
    const fo_path FO_PATHS[]
    const int FO_NPATHS
    int fo_path_supported(int i)


# Elements (or rows x n) per C call.
cdef Py_ssize_t CHUNK = 1 << 14

_PATHS = IsaPaths("floatops", [FO_PATHS[i].name.decode() for i in range(FO_NPATHS)], lambda i: fo_path_supported(i),
                  known=("avx2", "portable"))

available_paths = _PATHS.available
current_path = _PATHS.current


cdef const fo_path *_path(path) except NULL:
    return &FO_PATHS[_PATHS.index(path)]


def gelu_erf(x, *, path=None):
    """y = 0.5 x (1 + erf(x / sqrt 2)) for float32 C-contiguous ``x`` of any shape; float32 out."""
    cdef const fo_path *p = _path(path)
    _spec.check_input("gelu_erf", x)
    y = np.empty(x.shape, dtype=np.float32)
    cdef const float *xp = <const float *> (<Py_ssize_t> x.ctypes.data)
    cdef float *yp = <float *> (<Py_ssize_t> y.ctypes.data)
    cdef Py_ssize_t total = x.size, t, e0
    with nogil:
        for t in range((total + CHUNK - 1) // CHUNK):
            e0 = t * CHUNK
            p.gelu_erf(xp + e0, min(CHUNK, total - e0), yp + e0)
    return y


def softmax_lastaxis(x, *, path=None):
    """Softmax over the last axis of float32 C-contiguous ``x`` (..., n); float32 out."""
    cdef const fo_path *p = _path(path)
    _spec.check_input("softmax_lastaxis", x, min_ndim=1)
    y = np.empty(x.shape, dtype=np.float32)
    if x.size == 0:
        return y
    cdef const float *xp = <const float *> (<Py_ssize_t> x.ctypes.data)
    cdef float *yp = <float *> (<Py_ssize_t> y.ctypes.data)
    cdef Py_ssize_t n = x.shape[x.ndim - 1], rows = x.size // n
    cdef Py_ssize_t per = max(1, CHUNK // n), t, r0
    with nogil:
        for t in range((rows + per - 1) // per):
            r0 = t * per
            p.softmax_rows(xp + r0 * n, min(per, rows - r0), n, yp + r0 * n)
    return y


def layer_norm_lastaxis(x, scale=None, bias=None, epsilon=1e-5, *, path=None):
    """Layer norm of each row of the last axis of float32 C-contiguous ``x`` (..., n); float32 out.

    Per row, in float64 with the fixed lane order of refquant/reference/floatops.py: ``mean = sum(x) / n``,
    ``var = sum((x - mean)^2) / n``, ``inv = 1 / sqrt(var + epsilon)``, ``xhat = float32((x - mean) * inv)``; then
    in float32 ``y = xhat [* scale] [+ bias]`` (optional float32 C-contiguous arrays of n elements). Max relative
    error against the float64 formula: see the twin's docstring. Same bits as the twin on every path.
    """
    cdef const fo_path *p = _path(path)
    _spec.check_layer_norm_input("layer_norm_lastaxis", x, scale, bias)
    cdef double eps = float(epsilon)
    y = np.empty(x.shape, dtype=np.float32)
    if x.size == 0:
        return y
    cdef const float *xp = <const float *> (<Py_ssize_t> x.ctypes.data)
    cdef const float *sp = NULL
    cdef const float *bp = NULL
    if scale is not None:
        sp = <const float *> (<Py_ssize_t> scale.ctypes.data)
    if bias is not None:
        bp = <const float *> (<Py_ssize_t> bias.ctypes.data)
    cdef float *yp = <float *> (<Py_ssize_t> y.ctypes.data)
    cdef Py_ssize_t n = x.shape[x.ndim - 1], rows = x.size // n
    cdef Py_ssize_t per = max(1, CHUNK // n), t, r0
    with nogil:
        for t in range((rows + per - 1) // per):
            r0 = t * per
            p.layer_norm_rows(xp + r0 * n, min(per, rows - r0), n, sp, bp, eps, yp + r0 * n)
    return y
