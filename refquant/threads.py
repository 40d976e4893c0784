"""How many threads refquant's OpenMP kernels use.

The count starts from ``OMP_NUM_THREADS`` (read by the OpenMP runtime) or else the number of cores.
:func:`set_num_threads` changes it for kernels called from the calling Python thread, as OpenMP's own
``omp_set_num_threads`` does. NumPy's BLAS keeps its own thread pool (see threadpoolctl). Without compiled
kernels, or with ``REFQUANT_FORCE_REFERENCE``, everything runs on the NumPy twins: the count is 1 and
setting it does nothing.
"""
from __future__ import annotations

import operator

from ._dispatch import compiled


def set_num_threads(n: int) -> None:
    """Run the kernels on ``n`` threads (n >= 1)."""
    n = operator.index(n)
    if n <= 0:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    helpers = compiled("_openmp_helpers")
    if helpers is not None:
        helpers.set_threads(n)


def get_num_threads() -> int:
    """The number of threads the next kernel call will use."""
    helpers = compiled("_openmp_helpers")
    return helpers.max_threads() if helpers is not None else 1
