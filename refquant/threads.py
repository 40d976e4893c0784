"""How many threads refquant's OpenMP kernels use.

The count starts from ``OMP_NUM_THREADS`` (read by the OpenMP runtime) or else the number of cores.
:func:`set_num_threads` changes it for kernels called from the calling Python thread, as OpenMP's own
``omp_set_num_threads`` does. NumPy's BLAS keeps its own thread pool (see threadpoolctl). Without compiled
kernels, or with ``REFQUANT_FORCE_REFERENCE``, everything runs on the NumPy twins: the count is 1 and
setting it does nothing.
"""
from __future__ import annotations

import contextlib
import operator
import threading

from ._dispatch import kernel

_blas = None  # threadpoolctl's BLAS library controllers, False when threadpoolctl is not installed
_local = threading.local()  # openmp_graph: inside blas_on_one_thread(active=True) on this Python thread


def set_num_threads(n: int) -> None:
    """Run the kernels on ``n`` threads (n >= 1)."""
    n = operator.index(n)
    if n <= 0:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    kernel("_openmp_helpers").set_threads(n)


def get_num_threads() -> int:
    """The number of threads the next kernel call will use."""
    return kernel("_openmp_helpers").max_threads()


@contextlib.contextmanager
def blas_on_one_thread(active: bool = True):
    """While refquant's OpenMP kernels run on more than one thread, keep NumPy's BLAS on one: OpenBLAS's workers
    spin-wait after each call and take the cores the OpenMP team needs next (a dynamic-INT8 BERT ran 553 ms at 2
    threads with both pools, 178 ms with this, 224 ms at 1 thread). Uses threadpoolctl; without it, a no-op.

    The BLAS thread count is process-wide, so concurrent callers (several Python threads running INT8 graphs)
    share one limit, reference-counted under a lock: the first to enter sets it, the last to leave restores the
    count found on entry. (Separate limits would interleave: a later entrant records the limited count as the
    original, and restoring it last leaves BLAS on one thread for good.)

    The BLAS libraries are found once (threadpoolctl's scan of the loaded libraries); their thread counts are read
    afresh on every first entry, so a count the user changes between runs (threadpoolctl, ``numpy``'s BLAS
    directly) is the one restored, and a library already on one thread is left alone: then the limit costs one
    read per library instead of threadpoolctl's ``limit`` (about 20 us per run)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = ThreadpoolController().select(user_api="blas").lib_controllers
        except ImportError:
            _blas = False
    outer = getattr(_local, "openmp_graph", False)
    _local.openmp_graph = outer or bool(active)
    limit = active and _blas and get_num_threads() > 1
    if limit:
        _enter_limit()
    try:
        yield
    finally:
        if limit:
            _leave_limit()
        _local.openmp_graph = outer


def float_kernel_threads():
    """``max_threads`` for a float kernel that runs between other ops (softmax, gelu, sigmoid, layer norm, a
    depthwise conv of the float graph): all of refquant's threads inside :func:`blas_on_one_thread` on this Python
    thread (an INT8 or fused graph, whose neighbouring ops are OpenMP kernels), else 1: next to BLAS calls an
    OpenMP team fights OpenBLAS's spin-waiting workers (BERT FP32 ran 484 ms at 2 threads with these kernels
    parallel, 342 ms at 1). The kernels give the same bits for any thread count."""
    return None if getattr(_local, "openmp_graph", False) else 1


_lock = threading.Lock()
_holders = 0  # callers inside blas_on_one_thread
_saved = []  # (library, thread count found on entry) of the libraries set to one thread while _holders > 0


def _enter_limit():
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = [(lib, n) for lib in _blas if (n := lib.num_threads) != 1]
            for lib, _ in _saved:
                lib.set_num_threads(1)
        _holders += 1


def _leave_limit():
    global _holders, _saved
    with _lock:
        _holders -= 1
        if _holders == 0:
            saved, _saved = _saved, []
            for lib, n in saved:
                lib.set_num_threads(n)
