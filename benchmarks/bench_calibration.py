"""Calibration kernels vs their NumPy/Python twins, side by side in one run (1 thread and all threads).

- KL threshold search on 2048-bin |x| histograms (Paddle's case: int64 counts from ``np.histogram``; also
  whole-number float64 counts and fractional float64 counts); the target is >= 100x the twin.
- |x| histogram into 2048 bins vs ``np.histogram(|x|, bins=edges)`` (what Paddle calls), and abs min/max.
- the mse / emd scan (35 candidates) vs the NumPy twin, and the pruned scan the observers run (``prune=True``).
Every pair is also checked to agree (same bits) before it is timed.
"""
from __future__ import annotations

import numpy as np

from refquant import _dispatch, threads
from refquant.calibration import cal_kl_threshold
from refquant.reference import histogram as twin_hist
from refquant.reference import kl as twin_kl
from refquant.reference import search as twin_search

from .common import machine, median_seconds, table


def _histograms(rng):
    """Laplace, Gaussian and ReLU-like |x| histograms of 2048 bins (the shapes calibration meets)."""
    out = {}
    for name, x in (("laplace", rng.laplace(size=200_000)), ("gauss", rng.standard_normal(200_000)),
                    ("relu", np.maximum(rng.standard_normal(200_000), 0) ** 2)):
        a = np.abs(x)
        out[name] = np.histogram(a, bins=2048, range=(a.min(), a.max()))[0]
    return out


def run(threads_list=(1, 2), repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    before = threads.get_num_threads()
    result = {"machine": machine(), "kl": [], "histogram": [], "search": []}
    try:
        for name, hist in _histograms(rng).items():
            for label, h in (("int64", hist), ("float64 whole", hist.astype(np.float64)),
                             ("float64 fractional", hist * 1.37)):
                twin_s = median_seconds(lambda: twin_kl.cal_kl_threshold(h, 0.01, 8), repeats=1, warmup=0)
                row = {"hist": name, "counts": label, "twin_ms": 1e3 * twin_s}
                for n in threads_list:
                    threads.set_num_threads(n)
                    with _dispatch.use_reference(False):
                        assert cal_kl_threshold(h, 0.01, 8) == twin_kl.cal_kl_threshold(h, 0.01, 8)
                        s = median_seconds(lambda: cal_kl_threshold(h, 0.01, 8), repeats)
                    row[f"compiled_ms_{n}t"] = 1e3 * s
                    row[f"ratio_{n}t"] = twin_s / s
                result["kl"].append(row)
        x = rng.standard_normal(1 << 22).astype(np.float32)
        lo, hi, _ = twin_hist.abs_min_max(x)
        edges = twin_hist.histogram_edges(lo, hi, 2048)
        numpy_s = median_seconds(lambda: twin_hist.histogram_abs(x, edges), repeats)
        fast = _dispatch.compiled("histogram")
        for n in threads_list:
            threads.set_num_threads(n)
            assert np.array_equal(fast.histogram_abs(x, edges), twin_hist.histogram_abs(x, edges))
            s = median_seconds(lambda: fast.histogram_abs(x, edges), repeats)
            mm = median_seconds(lambda: fast.abs_min_max(x), repeats)
            mm_np = median_seconds(lambda: twin_hist.abs_min_max(x), repeats)
            result["histogram"].append({"elements": x.size, "threads": n, "numpy_ms": 1e3 * numpy_s,
                                        "compiled_ms": 1e3 * s, "ratio": numpy_s / s,
                                        "absminmax_numpy_ms": 1e3 * mm_np, "absminmax_compiled_ms": 1e3 * mm})
        xs = rng.standard_normal(1 << 16).astype(np.float32)
        scales = twin_search.candidate_scales(float(np.abs(xs).max()))
        search = _dispatch.compiled("search")
        for loss in ("mse", "emd"):
            twin_s = median_seconds(lambda: twin_search.scan_losses(xs, scales, 8, False, loss), 3)
            for n in threads_list:
                threads.set_num_threads(n)
                for prune in (False, True):
                    assert np.array_equal(search.scan_losses(xs, scales, 8, False, loss, prune),
                                          twin_search.scan_losses(xs, scales, 8, False, loss, prune))
                s = median_seconds(lambda: search.scan_losses(xs, scales, 8, False, loss), repeats)
                p = median_seconds(lambda: search.scan_losses(xs, scales, 8, False, loss, prune=True), repeats)
                result["search"].append({"loss": loss, "elements": xs.size, "threads": n, "twin_ms": 1e3 * twin_s,
                                         "compiled_ms": 1e3 * s, "ratio": twin_s / s, "pruned_ms": 1e3 * p})
    finally:
        threads.set_num_threads(before)
    return result


def markdown(r: dict) -> str:
    tl = sorted({int(k.split("_")[-1][:-1]) for row in r["kl"] for k in row if k.startswith("ratio_")})
    kl = table(["histogram (2048 bins)", "counts", "twin ms"] + [f"compiled ms / ratio, {n} thread(s)" for n in tl],
               [[row["hist"], row["counts"], f"{row['twin_ms']:.1f}"] +
                [f"{row[f'compiled_ms_{n}t']:.3f} / **{row[f'ratio_{n}t']:.0f}x**" for n in tl] for row in r["kl"]])
    hist = table(["elements", "threads", "np.histogram ms", "compiled ms", "ratio", "abs min/max NumPy ms",
                  "compiled ms"],
                 [[h["elements"], h["threads"], f"{h['numpy_ms']:.1f}", f"{h['compiled_ms']:.2f}",
                   f"{h['ratio']:.1f}x", f"{h['absminmax_numpy_ms']:.2f}", f"{h['absminmax_compiled_ms']:.2f}"]
                  for h in r["histogram"]])
    search = table(["loss", "elements", "threads", "twin ms", "compiled ms", "ratio", "compiled, pruned ms"],
                   [[s["loss"], s["elements"], s["threads"], f"{s['twin_ms']:.1f}", f"{s['compiled_ms']:.2f}",
                     f"{s['ratio']:.1f}x", f"{s['pruned_ms']:.2f}"] for s in r["search"]])
    return "\n\n".join(["### KL threshold search: compiled vs twin", kl, "### |x| histogram", hist,
                        "### mse / emd threshold scan (35 candidates)", search])


if __name__ == "__main__":
    print(markdown(run()))
