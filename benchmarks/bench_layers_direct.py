"""Direct INT8 kernels (refquant._kernels.qdirect) against their peers, measured side by side in one run.

Depthwise convolutions (GOPS = 2 * OH*OW*C*KH*KW / seconds):
  * refquant INT8: ``qdirect.depthwise_conv_u8s8``, NHWC u8 in, s8 per-channel weights, u8 out;
  * onnxruntime INT8: ``QLinearConv`` with group = C (NCHW u8 activations, s8 per-channel weights, int32 bias);
  * onnxruntime FP32: ``Conv`` with group = C (NCHW);
  * refquant FP32: the float runtime's ``depthwise_conv2d`` op (NCHW, im2col + matmul).
Layout changes (GB/s = bytes read + written / seconds): ``quantize_nchw`` (f32 NCHW -> u8 NHWC) and
``dequantize_nhwc`` (u8 NHWC -> f32 NCHW), compiled against the NumPy twin.

Each number is the median (and the best) of ``repeats`` timings, each timing a loop long enough (>= 20 ms) to be
measurable; each call includes its Python overhead. Between measurements the run sleeps briefly so that spinning
worker threads of the previous library go idle; refquant FP32 runs with its BLAS limited to the same thread count
(threadpoolctl, if installed). OPENBLAS_* variables are left alone. Usage: ``python benchmarks/bench_layers_direct.py [--threads 1 2]
[--repeats 7] [--json PATH]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

DEPTHWISE = [  # name, C, H (= W), stride
    ("dw3x3 32ch 112x112 s1", 32, 112, 1),
    ("dw3x3 32ch 112x112 s2", 32, 112, 2),
    ("dw3x3 144ch 56x56 s1", 144, 56, 1),
    ("dw3x3 144ch 56x56 s2", 144, 56, 2),
]
LAYOUT = [("32ch 112x112", (1, 32, 112, 112)), ("144ch 56x56", (1, 144, 56, 56))]


def _timings(fn, repeats, min_loop=0.02):
    """(median, best) seconds per call over ``repeats`` loops of >= min_loop seconds each."""
    fn()  # warm up (and first-call allocations)
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_loop / one))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times)), float(np.min(times))


def _quiet():
    """Let spinning worker threads (OpenBLAS, onnxruntime) of the previous measurement go idle: on a small
    machine they would otherwise take the core the next measurement's second thread needs."""
    import gc
    gc.collect()
    time.sleep(0.3)


def _blas_limit(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _ort_session(model, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _ort_depthwise_models(c, h, stride, w_s8, bias, w_scale):
    """(QLinearConv INT8 model, Conv FP32 model) for a 3x3 depthwise conv with pad 1."""
    from onnx import TensorProto, helper, numpy_helper
    oh = (h + 2 - 3) // stride + 1
    attrs = dict(group=c, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])
    w_nchw = np.ascontiguousarray(w_s8.transpose(2, 0, 1)[:, None])  # (C, 1, 3, 3)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
             numpy_helper.from_array(w_nchw, "w"),
             numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(c, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "y_zp"),
             numpy_helper.from_array(bias, "b")]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
                            ["y"], **attrs)
    graph = helper.make_graph([node], "dw_int8", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, c, oh, oh])], inits)
    int8 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    wf = numpy_helper.from_array((w_nchw * w_scale[:, None, None, None]).astype(np.float32), "w")
    bf = numpy_helper.from_array(np.zeros(c, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    graph = helper.make_graph([node], "dw_fp32", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, oh, oh])], [wf, bf])
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return int8, fp32


def _bench_depthwise(threads, repeats, rows):
    from refquant import threads as rq_threads
    from refquant._kernels import qdirect
    from refquant.ops.conv import conv2d
    from refquant.ops.registry import OpContext

    rng = np.random.default_rng(0)
    for name, c, h, stride in DEPTHWISE:
        x = rng.integers(0, 256, (1, h, h, c), dtype=np.uint8)
        w = rng.integers(-127, 128, (3, 3, c), dtype=np.int8)
        w_scale = rng.uniform(0.002, 0.02, c).astype(np.float32)
        bias = rng.integers(-1000, 1000, c).astype(np.int32)
        scale = (np.float32(0.02) * w_scale / np.float32(0.05)).astype(np.float32)
        oh = (h + 2 - 3) // stride + 1
        ops = 2 * oh * oh * c * 9
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        xf = (x_nchw.astype(np.float32) * np.float32(0.02))
        wf = np.ascontiguousarray((w.transpose(2, 0, 1)[:, None] * w_scale[:, None, None, None]).astype(np.float32))
        attrs = {"strides": [stride, stride], "paddings": [1, 1, 1, 1], "dilations": [1, 1], "groups": c}
        int8_model, fp32_model = _ort_depthwise_models(c, h, stride, w, bias, w_scale)
        for t in threads:
            rq_threads.set_num_threads(t)
            _quiet()
            ours = _timings(lambda: qdirect.depthwise_conv_u8s8(
                x, w, stride=(stride, stride), padding=(1, 1, 1, 1), bias=bias, scale=scale), repeats)
            s_int8, s_fp32 = _ort_session(int8_model, t), _ort_session(fp32_model, t)
            _quiet()
            ort_int8 = _timings(lambda: s_int8.run(None, {"x": x_nchw}), repeats)
            ort_fp32 = _timings(lambda: s_fp32.run(None, {"x": xf}), repeats)
            del s_int8, s_fp32
            _quiet()
            with _blas_limit(t):
                rq_fp32 = _timings(lambda: conv2d(OpContext(), attrs, xf, wf), repeats)
            row = {"case": name, "threads": t, "path": qdirect.current_path(), "refquant_int8_us": ours[0] * 1e6}
            for key, (median, best) in [("refquant_int8", ours), ("ort_int8", ort_int8), ("ort_fp32", ort_fp32),
                                        ("refquant_fp32", rq_fp32)]:
                row[f"{key}_gops"] = ops / median / 1e9
                row[f"{key}_best_gops"] = ops / best / 1e9
            rows.append(row)


def _bench_layout(threads, repeats, rows):
    from refquant import threads as rq_threads
    from refquant._kernels import qdirect
    from refquant.reference import qdirect as twin

    rng = np.random.default_rng(1)
    for name, shape in LAYOUT:
        x = rng.standard_normal(shape).astype(np.float32)
        q = qdirect.quantize_nchw(x, 40.0, zero=128)
        nbytes = x.nbytes + q.nbytes  # read + written, both directions
        for t in threads:
            rq_threads.set_num_threads(t)
            _quiet()
            row = {"case": name, "threads": t}
            for key, fn in [("quantize", lambda: qdirect.quantize_nchw(x, 40.0, zero=128)),
                            ("dequantize", lambda: qdirect.dequantize_nhwc(q, 0.025, zero=128)),
                            ("quantize_numpy", lambda: twin.quantize_nchw(x, 40.0, zero=128)),
                            ("dequantize_numpy", lambda: twin.dequantize_nhwc(q, 0.025, zero=128))]:
                median, best = _timings(fn, repeats)
                row[f"{key}_gbs"] = nbytes / median / 1e9
                row[f"{key}_best_gbs"] = nbytes / best / 1e9
            rows.append(row)


def run(threads=(1, 2), repeats=7) -> dict:
    """Measure everything; returns {"machine", "depthwise": [rows], "layout": [rows]}."""
    import onnxruntime as ort

    from refquant import threads as rq_threads
    from refquant._cpu import cpu_features
    from refquant._kernels import qdirect

    before = rq_threads.get_num_threads()
    try:
        depthwise, layout = [], []
        _bench_depthwise(threads, repeats, depthwise)
        _bench_layout(threads, repeats, layout)
    finally:
        rq_threads.set_num_threads(before)
    cpu = cpu_features()
    return {"machine": {"cpu": cpu["model"], "features": [f for f, v in cpu.items() if v is True],
                        "python": platform.python_version(), "onnxruntime": ort.__version__,
                        "qdirect_paths": list(qdirect.available_paths()), "qdirect_path": qdirect.current_path(),
                        "repeats": repeats},
            "depthwise": depthwise, "layout": layout}


def format_markdown(result) -> str:
    """Medians, with the best of the repeats in parentheses."""
    m = result["machine"]

    def cell(r, key, unit=""):
        return f"{r[key + unit]:.1f} ({r[key + '_best' + unit]:.1f})" if unit == "_gops" else \
            f"{r[key + unit]:.2f} ({r[key + '_best' + unit]:.2f})"

    lines = [f"CPU: {m['cpu']} ({' '.join(m['features'])}); qdirect path: {m['qdirect_path']}; "
             f"onnxruntime {m['onnxruntime']}; median of {m['repeats']} (best in parentheses)", "",
             "| depthwise 3x3, pad 1, batch 1 (GOPS) | threads | refquant INT8 | ORT INT8 QLinearConv | ORT FP32 Conv | "
             "refquant FP32 | INT8 vs ORT INT8 |", "|---|---|---|---|---|---|---|"]
    for r in result["depthwise"]:
        lines.append(f"| {r['case']} | {r['threads']} | {cell(r, 'refquant_int8', '_gops')} | "
                     f"{cell(r, 'ort_int8', '_gops')} | {cell(r, 'ort_fp32', '_gops')} | "
                     f"{cell(r, 'refquant_fp32', '_gops')} | {r['refquant_int8_gops'] / r['ort_int8_gops']:.2f}x |")
    lines += ["", "| layout change (GB/s, read + written) | threads | quantize_nchw | dequantize_nhwc | "
              "NumPy twin quantize | NumPy twin dequantize |", "|---|---|---|---|---|---|"]
    for r in result["layout"]:
        lines.append(f"| {r['case']} | {r['threads']} | {cell(r, 'quantize', '_gbs')} | "
                     f"{cell(r, 'dequantize', '_gbs')} | {cell(r, 'quantize_numpy', '_gbs')} | "
                     f"{cell(r, 'dequantize_numpy', '_gbs')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = run(tuple(args.threads), args.repeats)
    print(format_markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


markdown = format_markdown  # the name `refquant bench` calls


if __name__ == "__main__":
    main()

