"""Direct INT8 kernels (refquant._kernels.qdirect) against their peers, measured side by side in one run.

Depthwise convolutions (GOPS = 2 * OH*OW*C*KH*KW / seconds):
  * refquant INT8: ``qdirect.depthwise_conv_u8s8``, NHWC u8 in, s8 per-channel weights, u8 out;
  * onnxruntime INT8: ``QLinearConv`` with group = C (NCHW u8 activations, s8 per-channel weights, int32 bias);
  * onnxruntime FP32: ``Conv`` with group = C (NCHW);
  * refquant FP32: the float runtime's ``depthwise_conv2d`` op (NCHW).
First conv (3x3, 3 -> 32 channels, stride 2, 224x224; GOPS = 2 * OH*OW*Cout*27 / seconds): refquant's
``conv2d_int8`` op (the direct small-K kernel ``qdirect.conv_small_k_u8s8``), the same op's previous route (u8
im2col + ``qgemm.gemm_u8s8``), onnxruntime QLinearConv and Conv.
Layout changes (GB/s = bytes read + written / seconds): ``quantize_nchw`` (f32 NCHW -> u8 NHWC) and
``dequantize_nhwc`` (u8 NHWC -> f32 NCHW), compiled against the NumPy twin.

Each number is a median over ``repeats`` rounds of ``round_robin_bursts``: every runner of a case in turn, each
timed as a burst of back-to-back calls after one untimed call (awake worker threads, as inside a model run; a
slow drift of a shared machine hits all runners alike); each call includes its Python overhead. refquant FP32 runs with its BLAS limited to the same thread count (threadpoolctl, if installed);
OPENBLAS_* variables are left alone. The rows name the ISA path each refquant kernel took (``refquant info``), so a
run on another CPU reads on its own. Usage: ``python -m benchmarks.bench_layers_direct [--threads 1 2]
[--repeats 15] [--json PATH]`` (or ``refquant bench layers_direct``).
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
FIRST_CONV = [("conv3x3 3->32 224x224 s2", 3, 32, 224, 2)]  # name, Cin, Cout, H (= W), stride


def round_robin_bursts(fns, repeats, inner=5, pause=0.05, best=None):
    """Median seconds per call of each runner over ``repeats`` rounds; a round times every runner in turn (so a
    slow drift of a shared machine hits them alike), each after ``pause`` seconds (the previous runner's spinning
    worker threads go idle) as one untimed call then a burst of ``inner`` back-to-back calls, whose mean is the
    round's time: its own workers are awake, as between the ops of a model run. (A single call after an idle
    pause times the wake-up of a sleeping OpenMP worker instead, which on a loaded machine takes milliseconds.)
    ``best``: a dict to receive each runner's fastest round (where the cores were free)."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            time.sleep(pause)  # the previous runner's spinning workers go idle
            fn()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[k].append((time.perf_counter() - t0) / inner)
    if best is not None:
        best.update({k: float(np.min(v)) for k, v in times.items()})
    return {k: float(np.median(v)) for k, v in times.items()}


def _medians(fns, repeats, ops, unit="gops"):
    """{"<runner>_<unit>": median rate, "<runner>_best_<unit>": best rate} for ``ops`` (GOP or bytes) per call."""
    best = {}
    m = round_robin_bursts(fns, repeats, best=best)
    return {**{f"{k}_{unit}": ops / v / 1e9 for k, v in m.items()},
            **{f"{k}_best_{unit}": ops / v / 1e9 for k, v in best.items()}}


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
            s_int8, s_fp32 = _ort_session(int8_model, t), _ort_session(fp32_model, t)
            _quiet()
            with _blas_limit(t):
                m = _medians({"refquant_int8": lambda: qdirect.depthwise_conv_u8s8(
                                  x, w, stride=(stride, stride), padding=(1, 1, 1, 1), bias=bias, scale=scale),
                              "ort_int8": lambda: s_int8.run(None, {"x": x_nchw}),
                              "ort_fp32": lambda: s_fp32.run(None, {"x": xf}),
                              "refquant_fp32": lambda: conv2d(OpContext(), attrs, xf, wf)}, repeats, ops)
            rows.append({"case": name, "threads": t, "path": qdirect.current_path(), **m})


def _ort_first_conv_models(cin, cout, h, stride, w_kn, bias, w_scale):
    """(QLinearConv INT8 model, Conv FP32 model) of a 3x3 conv with pad 1; w_kn is the (kh, kw, cin) x cout
    GEMM matrix."""
    from onnx import TensorProto, helper, numpy_helper
    oh = (h + 2 - 3) // stride + 1
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])
    w_oihw = np.ascontiguousarray(w_kn.T.reshape(cout, 3, 3, cin).transpose(0, 3, 1, 2))
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zp"), numpy_helper.from_array(w_oihw, "w"),
             numpy_helper.from_array(w_scale, "w_scale"), numpy_helper.from_array(np.zeros(cout, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "y_zp"), numpy_helper.from_array(bias, "b")]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
                            ["y"], **attrs)
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([node], "conv_int8", [vi("x", TensorProto.UINT8, [1, cin, h, h])],
                              [vi("y", TensorProto.UINT8, [1, cout, oh, oh])], inits)
    int8 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    wf = numpy_helper.from_array((w_oihw * w_scale[:, None, None, None]).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "conv_fp32", [vi("x", TensorProto.FLOAT, [1, cin, h, h])],
                              [vi("y", TensorProto.FLOAT, [1, cout, oh, oh])], [wf])
    return int8, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _bench_first_conv(threads, repeats, rows):
    from refquant import threads as rq_threads
    from refquant._kernels import qdirect, qgemm
    from refquant.ops.registry import OpContext, get_op

    rng = np.random.default_rng(2)
    conv = get_op("conv2d_int8")
    for name, cin, cout, h, stride in FIRST_CONV:
        k = 9 * cin
        x = rng.integers(0, 256, (1, h, h, cin), dtype=np.uint8)
        w = rng.integers(-127, 128, (k, cout), dtype=np.int8)
        packed, col_sum = qgemm.pack_b(w), qgemm.col_sums(w)
        bias = rng.integers(-1000, 1000, cout).astype(np.int32)
        w_scale = rng.uniform(0.002, 0.02, cout).astype(np.float32)
        mult = (np.float32(0.02) * w_scale / np.float32(0.05)).astype(np.float32)
        attrs = {"strides": [stride, stride], "paddings": [1, 1, 1, 1], "dilations": [1, 1], "a_zero": 128,
                 "out_dtype": "u8", "out_zero": 0, "lo": 0, "hi": 255, "ksize": [3, 3], "K": k, "N": cout}
        oh = (h + 2 - 3) // stride + 1
        ops = 2 * oh * oh * cout * k
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        xf = (x_nchw.astype(np.float32) - 128) * np.float32(0.02)
        int8_model, fp32_model = _ort_first_conv_models(cin, cout, h, stride, w, bias, w_scale)

        def gemm_route():
            a = qdirect.im2col_u8(x, 3, 3, (stride, stride), (1, 1, 1, 1), (1, 1), 128)
            return qgemm.gemm_u8s8(a, packed, k, cout, a_zero=128, col_sum=col_sum, bias=bias, scale=mult,
                                   out_dtype="u8", lo=0, hi=255)

        for t in threads:
            rq_threads.set_num_threads(t)
            s_int8, s_fp32 = _ort_session(int8_model, t), _ort_session(fp32_model, t)
            _quiet()
            m = _medians({"refquant_int8": lambda: conv.forward(OpContext(), attrs, x, packed, col_sum, bias, mult),
                          "refquant_int8_gemm": gemm_route,
                          "ort_int8": lambda: s_int8.run(None, {"x": x_nchw}),
                          "ort_fp32": lambda: s_fp32.run(None, {"x": xf})}, repeats, ops)
            rows.append({"case": name, "threads": t, "path": f"smallk {qdirect.current_path()}",
                         "gemm_path": f"im2col + qgemm {qgemm.current_path()}", **m})


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
            m = _medians({"quantize": lambda: qdirect.quantize_nchw(x, 40.0, zero=128),
                          "dequantize": lambda: qdirect.dequantize_nhwc(q, 0.025, zero=128),
                          "quantize_numpy": lambda: twin.quantize_nchw(x, 40.0, zero=128),
                          "dequantize_numpy": lambda: twin.dequantize_nhwc(q, 0.025, zero=128)}, repeats,
                         nbytes, "gbs")
            rows.append({"case": name, "threads": t, **m})


def run(threads=(1, 2), repeats=15) -> dict:
    """Measure everything; returns {"machine", "depthwise": [rows], "first_conv": [rows], "layout": [rows]}."""
    import onnxruntime as ort

    from refquant import threads as rq_threads
    from refquant._cpu import cpu_features
    from refquant._kernels import qdirect

    before = rq_threads.get_num_threads()
    try:
        depthwise, first_conv, layout = [], [], []
        _bench_depthwise(threads, repeats, depthwise)
        _bench_first_conv(threads, repeats, first_conv)
        _bench_layout(threads, repeats, layout)
    finally:
        rq_threads.set_num_threads(before)
    cpu = cpu_features()
    return {"machine": {"cpu": cpu["model"], "features": [f for f, v in cpu.items() if v is True],
                        "python": platform.python_version(), "onnxruntime": ort.__version__,
                        "qdirect_paths": list(qdirect.available_paths()), "qdirect_path": qdirect.current_path(),
                        "repeats": repeats},
            "depthwise": depthwise, "first_conv": first_conv, "layout": layout}


def format_markdown(result) -> str:
    """Medians with the best round in parentheses, GOPS (GB/s for the layout changes), and the path each refquant
    kernel took."""
    m = result["machine"]

    def c(r, key, unit="gops"):
        return f"{r[f'{key}_{unit}']:.1f} ({r[f'{key}_best_{unit}']:.1f})"

    lines = [f"CPU: {m['cpu']} ({' '.join(m['features'])}); qdirect paths {', '.join(m['qdirect_paths'])}, taken: "
             f"{m['qdirect_path']}; onnxruntime {m['onnxruntime']}; medians of {m['repeats']} round-robin rounds "
             "(best round)", "",
             "| depthwise 3x3, pad 1, batch 1 (GOPS) | threads | path | refquant INT8 | ORT INT8 QLinearConv | "
             "ORT FP32 Conv | refquant FP32 | INT8 vs ORT INT8 |", "|---|---|---|---|---|---|---|---|"]
    for r in result["depthwise"]:
        lines.append(f"| {r['case']} | {r['threads']} | {r['path']} | {c(r, 'refquant_int8')} | {c(r, 'ort_int8')} | "
                     f"{c(r, 'ort_fp32')} | {c(r, 'refquant_fp32')} | "
                     f"**{r['refquant_int8_gops'] / r['ort_int8_gops']:.2f}x** |")
    lines += ["", "| first conv, pad 1, batch 1 (GOPS) | threads | path | refquant INT8 | refquant INT8 via GEMM | "
              "ORT INT8 QLinearConv | ORT FP32 Conv | INT8 vs ORT INT8 |", "|---|---|---|---|---|---|---|---|"]
    for r in result.get("first_conv", []):
        lines.append(f"| {r['case']} | {r['threads']} | {r['path']} | {c(r, 'refquant_int8')} | "
                     f"{c(r, 'refquant_int8_gemm')} ({r['gemm_path']}) | {c(r, 'ort_int8')} | {c(r, 'ort_fp32')} | "
                     f"**{r['refquant_int8_gops'] / r['ort_int8_gops']:.2f}x** |")
    lines += ["", "| layout change (GB/s, read + written) | threads | quantize_nchw | dequantize_nhwc | "
              "NumPy twin quantize | NumPy twin dequantize |", "|---|---|---|---|---|---|"]
    for r in result["layout"]:
        lines.append(f"| {r['case']} | {r['threads']} | {c(r, 'quantize', 'gbs')} | {c(r, 'dequantize', 'gbs')} | "
                     f"{c(r, 'quantize_numpy', 'gbs')} | {c(r, 'dequantize_numpy', 'gbs')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
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

