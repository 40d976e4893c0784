"""Single-core peak throughput micro-benchmarks (FP32 FMA, vpdpbusd, vpmaddwd) for benchmarks/bench_gemm.py, which
reports the INT8 GEMM as a fraction of them. Not a kernel: nothing in refquant computes with it, so it has no
twin. The C loops are in kernels/include/peak.h; each returns None where the CPU lacks the instruction.
"""
import math
import time

cdef extern from "peak.h" nogil:
    const bint PEAK_X86
    double peak_fma256(long n)
    double peak_fma512(long n)
    double peak_dpbusd512(long n)
    double peak_dpbusd256(long n)
    double peak_madd256(long n)

cdef extern from "cpu_features.h" nogil:
    const unsigned RQ_CPU_AVX2, RQ_CPU_AVX512F, RQ_CPU_AVX512VNNI, RQ_CPU_AVXVNNI
    int rq_cpu_has(unsigned need)


def _has(unsigned need):
    return PEAK_X86 and rq_cpu_has(need)


def _peak(fn, double ops_per_iter, double seconds):
    """Best of 3 timed runs of fn(iters), sized to ~seconds/3 each: ops per second / 1e9."""
    cdef long iters = 1 << 14
    while True:
        t = time.perf_counter()
        fn(iters)
        dt = time.perf_counter() - t
        if dt > 0.02 or iters > (1 << 40):
            break
        iters *= 4
    iters = max(1, <long> (iters * (seconds / 3) / dt))
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        fn(iters)
        best = min(best, time.perf_counter() - t)
    return ops_per_iter * iters / best / 1e9


def _fma256(long n):
    cdef double r
    with nogil:
        r = peak_fma256(n)
    return r


def _fma512(long n):
    cdef double r
    with nogil:
        r = peak_fma512(n)
    return r


def _dpbusd512(long n):
    cdef double r
    with nogil:
        r = peak_dpbusd512(n)
    return r


def _dpbusd256(long n):
    cdef double r
    with nogil:
        r = peak_dpbusd256(n)
    return r


def _madd256(long n):
    cdef double r
    with nogil:
        r = peak_madd256(n)
    return r


def fma_peak_gflops(seconds=0.3, width=None):
    """Single-core FP32 FMA peak (GFLOPS) from 12 independent FMA chains of ``width`` bits (512 if the CPU runs
    AVX-512, else 256). None where not measurable (non-x86, or no AVX2)."""
    if not _has(RQ_CPU_AVX2):
        return None
    width = width or (512 if _has(RQ_CPU_AVX512F) else 256)
    return _peak(_fma512, 12 * 32, seconds) if width == 512 else _peak(_fma256, 12 * 16, seconds)


def vpdpbusd_peak_gops(seconds=0.3, width=None):
    """Single-core INT8 peak (GOPS = 2 x MAC/s) from 12 independent vpdpbusd chains: 512-bit with AVX-512 VNNI,
    256-bit with AVX-VNNI; None if the CPU has neither."""
    if width in (None, 512) and _has(RQ_CPU_AVX512F | RQ_CPU_AVX512VNNI):
        return _peak(_dpbusd512, 12 * 128, seconds)
    if width in (None, 256) and _has(RQ_CPU_AVX2 | RQ_CPU_AVXVNNI):
        return _peak(_dpbusd256, 12 * 64, seconds)
    return None


def vpmaddwd_peak_gops(seconds=0.3):
    """Single-core peak of 256-bit vpmaddwd (16 s16 MACs = 32 ops), the multiply of the qgemm AVX2 path."""
    return _peak(_madd256, 12 * 32, seconds) if _has(RQ_CPU_AVX2) else None
