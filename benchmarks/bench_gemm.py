"""INT8 GEMM (refquant._kernels.qgemm) against NumPy float32 matmul and ONNX Runtime, side by side in one run.

For each shape (M, K, N) and thread count: refquant's u8 x s8 GEMM with the full u8 epilogue (a_zero=128
compensation, bias, per-column scale, rint, out_zero, clamp) and with plain s32 output; NumPy float32 ``a @ w``
(its BLAS, threads set through threadpoolctl); ONNX Runtime QLinearMatMul (u8 out) and MatMulInteger (s32 out)
with the weights as initializers (so ORT prepacks them), if onnxruntime is installed; torch if importable.
GOPS = 2*M*K*N / s (GFLOPS for float32), medians of ``repeats`` samples, implementations interleaved.

The single-core peaks are measured first: FP32 FMA (12 independent chains; the GEMM is also reported as a
fraction of 4x that peak, the INT8 : FP32 ratio of VNNI hardware), vpdpbusd where the CPU has VNNI and vpmaddwd
(the AVX2 path's multiply). Run: ``python -m benchmarks.bench_gemm [--json PATH] [--repeats 7]`` or
``refquant bench gemm``. OPENBLAS_* variables are left as the environment sets them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from refquant import build_info, threads

from .common import machine, table

SHAPES = [(256, 1024, 1024), (128, 768, 768), (2048, 512, 512), (1, 768, 3072)]


def _sample(fn, min_seconds=0.02):
    """Calls per sample so that one sample lasts about min_seconds (at least 1)."""
    fn()
    t = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t, 1e-7)
    return max(1, int(min_seconds / dt))


def _medians(fns: dict, repeats: int, pause: float = 0.0) -> dict:
    """{name: median seconds per call}, the implementations interleaved within each repeat. ``pause`` seconds
    before each sample let the previous implementation's worker threads stop spinning (OpenBLAS, ORT and
    libgomp workers busy-wait after a call, which would take a core from the next one)."""
    inner = {name: _sample(fn) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = inner[name]
            if pause:
                time.sleep(pause)
            t = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t) / n)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _ort_sessions(a_shape, w, n_threads):
    """(QLinearMatMul session, MatMulInteger session) or None if onnxruntime / onnx are missing."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    M, K = a_shape
    N = w.shape[1]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # no busy-waiting between runs

    def session(nodes, inits, out_type):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, [M, K])],
                                  [helper.make_tensor_value_info("Y", out_type, [M, N])], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    B = numpy_helper.from_array(w, "B")
    scalar = lambda name, v, dt: numpy_helper.from_array(np.array(v, dtype=dt), name)  # noqa: E731
    qlinear = session([helper.make_node("QLinearMatMul", ["A", "as", "az", "B", "bs", "bz", "ys", "yz"], ["Y"])],
                      [B, scalar("as", 0.02, np.float32), scalar("az", 128, np.uint8), scalar("bs", 0.01, np.float32),
                       scalar("bz", 0, np.int8), scalar("ys", 2.0, np.float32), scalar("yz", 128, np.uint8)],
                      TensorProto.UINT8)
    integer = session([helper.make_node("MatMulInteger", ["A", "B", "az"], ["Y"])],
                      [B, scalar("az", 128, np.uint8)], TensorProto.INT32)
    return qlinear, integer


def _torch_fn(a, w):
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return None  # torch is not installed on the development machine; a quantized linear would go here


def run(threads=(1, 2), repeats: int = 7) -> dict:
    from refquant._kernels import peak, qgemm
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    info = build_info()
    peaks = {"fma_gflops": peak.fma_peak_gflops(0.3), "fma_width": 512 if info["cpu"].get("avx512f") else 256,
             "vpdpbusd_gops": peak.vpdpbusd_peak_gops(0.3), "vpmaddwd_gops": peak.vpmaddwd_peak_gops(0.3)}
    result = {"machine": machine(), "threadpools": info["threadpools"], "qgemm_path": qgemm.current_path(),
              "available_paths": list(qgemm.available_paths()), "peaks": peaks, "rows": [],
              "loadavg_at_start": os.getloadavg()}   # other jobs on the machine skew the multi-thread numbers
    before = threads_get()
    try:
        for M, K, N in SHAPES:
            a = rng.integers(0, 256, (M, K), dtype=np.uint8)
            w = rng.integers(-128, 128, (K, N), dtype=np.int8)
            packed, col_sum = qgemm.pack_b(w), qgemm.col_sums(w)
            w7 = np.rint(w / 2.0).astype(np.int8)        # reduce_range weights: AVX2 takes the vpmaddubsw kernel
            packed7, col_sum7 = qgemm.pack_b(w7), qgemm.col_sums(w7)
            bias = rng.integers(-5000, 5000, N, dtype=np.int32)
            scale = np.full(N, 1e-4, dtype=np.float32)
            out_u8, out_s32 = np.empty((M, N), np.uint8), np.empty((M, N), np.int32)
            af, wf = a.astype(np.float32), w.astype(np.float32)
            out_f = np.empty((M, N), np.float32)
            exact = a.astype(np.int64) @ w.astype(np.int64) - 128 * w.astype(np.int64).sum(0)
            for t in threads:
                threads_set(t)
                fns = {
                    "qgemm_u8": lambda: qgemm.gemm_u8s8(a, packed, K, N, a_zero=128, col_sum=col_sum, bias=bias,
                                                        scale=scale, out_dtype="u8", out_zero=128, out=out_u8),
                    "qgemm_s32": lambda: qgemm.gemm_u8s8(a, packed, K, N, out=out_s32),
                    "qgemm_u8_rr": lambda: qgemm.gemm_u8s8(a, packed7, K, N, a_zero=128, col_sum=col_sum7, bias=bias,
                                                           scale=scale, out_dtype="u8", out_zero=128, out=out_u8),
                    "numpy_f32": lambda: np.matmul(af, wf, out=out_f),
                }
                sessions = _ort_sessions((M, K), w, t)
                ort_exact = None
                if sessions is not None:
                    qlin, mmi = sessions
                    fns["ort_qlinear"] = lambda: qlin.run(None, {"A": a})
                    fns["ort_matmulinteger"] = lambda: mmi.run(None, {"A": a})
                    ort_exact = bool((mmi.run(None, {"A": a})[0] == exact).all())
                torch_fn = _torch_fn(a, w)
                if torch_fn is not None:
                    fns["torch_int8"] = torch_fn
                with threadpool_limits(limits=t, user_api="blas"):
                    secs = _medians(fns, repeats, pause=0.15 if t > 1 else 0.0)
                qgemm.gemm_u8s8(a, packed, K, N, out=out_s32)
                ops = 2.0 * M * K * N
                row = {"shape": [M, K, N], "threads": t,
                       **{f"{name}_gops": ops / s / 1e9 for name, s in secs.items()},
                       "qgemm_exact": bool((out_s32 == exact + 128 * w.astype(np.int64).sum(0)).all()),
                       "ort_matmulinteger_exact": ort_exact}
                if peaks["fma_gflops"]:
                    row["qgemm_u8_fraction_of_4x_fma"] = row["qgemm_u8_gops"] / (4 * peaks["fma_gflops"] * t)
                result["rows"].append(row)
    finally:
        threads_set(before)
    result["loadavg_at_end"] = os.getloadavg()
    return result


def threads_get():
    return threads.get_num_threads()


def threads_set(n):
    threads.set_num_threads(n)


def markdown(r: dict) -> str:
    p = r["peaks"]
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    head = [f"qgemm path: **{r['qgemm_path']}** (available: {', '.join(r['available_paths'])}); "
            f"CPU: {r['machine'].get('cpu')}",
            f"single-core peaks: FP32 FMA ({p['fma_width']}-bit) {fmt(p['fma_gflops'])} GFLOPS (x4 = "
            f"{fmt(p['fma_gflops'] and 4 * p['fma_gflops'])}), vpdpbusd {fmt(p['vpdpbusd_gops'])} GOPS, "
            f"vpmaddwd (256-bit) {fmt(p['vpmaddwd_gops'])} GOPS",
            "load average at start / end: " + " / ".join(
                ", ".join(f"{v:.2f}" for v in r.get(k, ())) for k in ("loadavg_at_start", "loadavg_at_end")),
            "BLAS: " + "; ".join(f"{t.get('internal_api')} {t.get('version')} ({t.get('architecture')})"
                                 for t in r["threadpools"] if t.get("user_api") == "blas")]
    cols = ["qgemm_u8", "qgemm_s32", "qgemm_u8_rr", "numpy_f32", "ort_qlinear", "ort_matmulinteger", "torch_int8"]
    names = {"qgemm_u8": "qgemm u8+epilogue GOPS", "qgemm_s32": "qgemm s32 GOPS",
             "qgemm_u8_rr": "qgemm u8, weights in [-64, 64] GOPS", "numpy_f32": "NumPy f32 GFLOPS",
             "ort_qlinear": "ORT QLinearMatMul GOPS", "ort_matmulinteger": "ORT MatMulInteger GOPS",
             "torch_int8": "torch int8 GOPS"}
    present = [c for c in cols if any(f"{c}_gops" in row for row in r["rows"])]
    rows = []
    for row in r["rows"]:
        frac = row.get("qgemm_u8_fraction_of_4x_fma")
        rows.append(["x".join(map(str, row["shape"])), row["threads"]] +
                    [fmt(row.get(f"{c}_gops")) for c in present] +
                    [f"{row['qgemm_u8_gops'] / row['numpy_f32_gops']:.2f}x",
                     f"{frac:.2f}" if frac is not None else "-",
                     "yes" if row["qgemm_exact"] else "NO",
                     {True: "yes", False: "no", None: "-"}[row["ort_matmulinteger_exact"]]])
    body = table(["M x K x N", "threads"] + [names[c] for c in present] +
                 ["qgemm u8 / NumPy", "qgemm u8 / (4 x FMA peak x threads)", "qgemm exact", "ORT MatMulInteger exact"],
                 rows)
    return "\n\n".join(["\n".join(f"- {h}" for h in head), body])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the results as JSON to this path")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    result = run(threads=tuple(args.threads), repeats=args.repeats)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main()
