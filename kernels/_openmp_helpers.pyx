"""OpenMP facts and thread control for refquant's kernels, and how this build was compiled.

Use it through :mod:`refquant.threads` and :func:`refquant.build_info`, not directly.
"""
import json

from _openmp cimport omp_get_max_threads, omp_set_num_threads

cdef extern from *:
    """
    #ifndef REFQUANT_BUILD_FACTS
    #define REFQUANT_BUILD_FACTS "{}"
    #endif
    """
    const char *REFQUANT_BUILD_FACTS


def max_threads():
    """The number of threads the next parallel kernel called from this thread will use (1 without OpenMP)."""
    return omp_get_max_threads()


def set_threads(int n):
    """Use ``n`` threads in kernels called from this thread (a no-op without OpenMP)."""
    omp_set_num_threads(n)


def build_facts():
    """What setup.py recorded when it compiled the kernels: compiler, flags, OpenMP, Cython, kernel list."""
    return json.loads(REFQUANT_BUILD_FACTS.decode())
