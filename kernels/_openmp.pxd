# The one place that touches OpenMP: kernels write `from _openmp cimport ...`, never `cimport openmp`, so a
# compiler without OpenMP still builds them: `_OPENMP` is then undefined and these names become serial stubs
# (Cython's prange is already a plain loop without it). Declarations only: there is no _openmp module.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #else
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    static inline void omp_set_num_threads(int n) { (void)n; }
    #endif
    """
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    void omp_set_num_threads(int n) noexcept nogil


cdef inline int threads_for(Py_ssize_t work, Py_ssize_t min_work_per_thread) noexcept nogil:
    """Threads for a parallel loop over ``work`` units: as many as allowed, but with at least
    ``min_work_per_thread`` units each. Waking a thread costs microseconds, milliseconds when the OS has
    parked it on a busy machine, so small calls stay on the calling thread."""
    return <int> max(1, min(<Py_ssize_t> omp_get_max_threads(), work // min_work_per_thread))
