"""Shared by the benchmarks: medians of repeated timings, the machine's facts, markdown tables.

Speed is reported as ratios measured side by side in one run (these machines are noisy); each benchmark's
``run()`` returns a dict (written as JSON by ``refquant bench``) and ``markdown(result)`` renders it.
"""
from __future__ import annotations

import time

import numpy as np


def blas_limits(n: int):
    """A context limiting BLAS to ``n`` threads (threadpoolctl); without threadpoolctl, BLAS keeps its own count
    (benchmarks that report threads say so in their result)."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(n)
    except ImportError:
        import contextlib
        return contextlib.nullcontext()


def median_seconds(fn, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs (seconds)."""
    from refquant.report import median_ms
    return median_ms(fn, repeats, warmup) / 1e3


def interleaved_medians(fns: dict, repeats: int, pause: float = 0.0) -> dict:
    """Median seconds of each ``fns[key]()``, timed round-robin (one warm-up each) so slow drifts of a noisy
    machine hit every runner alike. ``pause`` seconds of sleep before each timed call let the previous runner's
    thread pool (OpenBLAS, libgomp, onnxruntime all spin-wait after a parallel region) go idle: with more than
    one thread, a runner timed right after another runtime's otherwise shares the cores with its spinning
    workers. A runner returning a float (seconds it measured itself: a worker process timing its own run) has
    that time taken instead of the call's."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            got = fn()
            elapsed = time.perf_counter() - start
            times[k].append(got if isinstance(got, float) else elapsed)
    return {k: float(np.median(v)) for k, v in times.items()}


def machine() -> dict:
    """CPU model and features, thread count, and the BLAS kernel threadpoolctl sees (OPENBLAS_CORETYPE etc.
    are left as the environment sets them)."""
    import os

    from refquant import build_info
    info = build_info()
    blas = [f"{p.get('internal_api')} {p.get('version')} kernel {p.get('architecture')}"
            for p in info.get("threadpools") or [] if p.get("user_api") == "blas"]
    return {"cpu": info["cpu"].get("model"), "features": [k for k, v in info["cpu"].items() if v is True],
            "threads": info["num_threads"], "blas": blas, "openmp": info["openmp"],
            "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
                    if k in os.environ}}


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
