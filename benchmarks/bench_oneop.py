"""One-op INT8 graphs with float boundaries: refquant's imported, PTQ'd and converted graph against ONNX Runtime's
``quantize_static`` QOperator graph of the same float model, measured side by side in one run.

For each op (GEMM 256x1024x1024, conv 3x3 64->64 at 56x56 pad 1, conv 1x1 256->64 at 56x56, depthwise 3x3 over
32 channels at 112x112 pad 1; each with a bias, batch 1), a float ONNX model with seeded random weights is
  * imported (``refquant.import_onnx``), quantized by ``quant_post_static`` (abs_max on a few seeded batches) and
    converted (``convert_to_int8``): float NCHW in, ``quantize_int8``, the INT8 op, float NCHW out;
  * quantized by ONNX Runtime's ``quantize_static`` (QOperator: QuantizeLinear, QLinearConv / QGemm,
    DequantizeLinear; per-channel s8 weights, u8 activations, MinMax on the same batches).
Both run the same float input (``model.run`` against ``InferenceSession.run``, each call with its Python
overhead); ORT FP32 on the float model is shown for scale. Each time is a median over ``repeats`` rounds of
``round_robin_bursts`` (benchmarks/bench_layers_direct.py). The breakdown times each op of refquant's graph on
its own (the same rounds), so the graph's boundary (quantize in, layout change / dequantize out) reads next to its
kernel; the remainder of the graph's time is the executor's per-run overhead. The outputs are compared as the
largest difference from ORT's and from the float model's, in units of ORT's output scale (they need not agree:
ORT requantizes its output to u8, refquant's epilogue writes float). Usage: ``python -m benchmarks.bench_oneop
[--threads 1 2] [--repeats 15] [--quick] [--json PATH]`` (or ``refquant bench oneop``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile

import numpy as np

from .bench_layers_direct import _ort_session, _quiet, round_robin_bursts

CASES = [  # name, kind, (M, K, N) for gemm / (Cin, Cout, k, H, group) for conv
    ("gemm 256x1024x1024", "gemm", (256, 1024, 1024)),
    ("conv3x3 64->64 56x56", "conv", (64, 64, 3, 56, 1)),
    ("conv1x1 256->64 56x56", "conv", (256, 64, 1, 56, 1)),
    ("dw3x3 32ch 112x112", "conv", (32, 32, 3, 112, 32)),
]
QUICK = [("gemm 16x64x32", "gemm", (16, 64, 32)), ("conv3x3 8->8 8x8", "conv", (8, 8, 3, 8, 1)),
         ("conv1x1 16->8 8x8", "conv", (16, 8, 1, 8, 1)), ("dw3x3 8ch 8x8", "conv", (8, 8, 3, 8, 8))]
CALIBRATION_BATCHES = 3


def float_model(kind, dims, seed=0):
    """(float ONNX model, input shape): Gemm (M, K) x (K, N) + bias, or Conv (pad k//2, stride 1) + bias."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    if kind == "gemm":
        m, k, n = dims
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"])
        x_shape, y_shape = [m, k], [m, n]
    else:
        cin, cout, k, h, group = dims
        w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
        n = cout
        x_shape, y_shape = [1, cin, h, h], [1, cout, h, h]
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([node], kind, [vi("x", TensorProto.FLOAT, x_shape)],
                              [vi("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tuple(x_shape)


def _ort_qoperator(fp32_path, out_path, calib):
    """ORT's static quantization of ``fp32_path`` as a QOperator graph (per-channel s8 weights, u8 activations)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": c} for c in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(fp32_path, out_path, Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _output_scale(path):
    """The scale of the DequantizeLinear that writes the graph's output (ORT's output grid step), and the ops."""
    import onnx
    proto = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    out = proto.graph.output[0].name
    node = next(n for n in proto.graph.node if out in n.output)
    if node.op_type != "DequantizeLinear":
        raise RuntimeError(f"ORT's graph ends in {node.op_type}, not DequantizeLinear")
    return float(inits[node.input[1]]), [n.op_type for n in proto.graph.node]


def _op_runner(op, args):
    from refquant.ops import OpContext, get_op
    fwd = get_op(op.type).forward
    return lambda: fwd(OpContext(), op.attrs, *args)


def _case(name, kind, dims, threads, repeats, tmp):
    import onnx

    import refquant
    from refquant import threads as rq_threads
    from refquant.deploy import convert_to_int8
    from refquant.executor import forward
    from refquant.quant import quant_post_static

    proto, shape = float_model(kind, dims)
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(CALIBRATION_BATCHES)]
    x = calib[0]  # inside the calibrated range: the comparison reads the arithmetic, not the clipping of outliers
    fp32 = refquant.import_onnx(proto)
    q = quant_post_static(fp32, [{"x": c} for c in calib], algo="abs_max")
    i8, i8_rr = convert_to_int8(q), convert_to_int8(q, reduce_range=True)
    fp32_path, q_path = os.path.join(tmp, f"{kind}.onnx"), os.path.join(tmp, f"{kind}.qop.onnx")
    onnx.save(proto, fp32_path)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer warns through the root logger to pre-process the model
    try:
        _ort_qoperator(fp32_path, q_path, calib)
    finally:
        root.setLevel(level)
    y_scale, ort_ops = _output_scale(q_path)
    env, _ = forward(i8, {"x": x}, keep_all=True)
    ops = [(f"{k}:{op.type}", _op_runner(op, [env[n] if n else None for n in op.inputs]))
           for k, op in enumerate(i8.ops)]
    rows = []
    for t in threads:
        rq_threads.set_num_threads(t)
        s_q, s_f = _ort_session(onnx.load(q_path), t), _ort_session(proto, t)
        y_rq = i8.run({"x": x})["y"]
        y_ort, y_f = s_q.run(None, {"x": x})[0], s_f.run(None, {"x": x})[0]
        _quiet()
        y_rr = i8_rr.run({"x": x})["y"]
        fns = {"refquant": lambda: i8.run({"x": x}), "refquant_rr": lambda: i8_rr.run({"x": x}),
               "ort_qoperator": lambda: s_q.run(None, {"x": x}),
               "ort_fp32": lambda: s_f.run(None, {"x": x}), **dict(ops)}
        best = {}
        ms = {k: 1e3 * v for k, v in round_robin_bursts(fns, repeats, best=best).items()}
        rows.append({"case": name, "threads": t, "ort_ops": ort_ops, "refquant_ops": [k for k, _ in ops],
                     "ms": ms, "best_ms": {k: 1e3 * v for k, v in best.items()},
                     "ratio": ms["ort_qoperator"] / ms["refquant"], "ratio_rr": ms["ort_qoperator"] / ms["refquant_rr"],
                     "overhead_ms": ms["refquant"] - sum(ms[k] for k, _ in ops),
                     "diff_vs_ort": float(np.max(np.abs(y_rq - y_ort))) / y_scale,
                     "rq_diff_vs_fp32": float(np.max(np.abs(y_rq - y_f))) / y_scale,
                     "rq_rr_diff_vs_fp32": float(np.max(np.abs(y_rr - y_f))) / y_scale,
                     "ort_diff_vs_fp32": float(np.max(np.abs(y_ort - y_f))) / y_scale, "y_scale": y_scale})
    return rows


def _paths():
    from refquant import _dispatch
    out = {}
    for fam in ("qdirect", "qgemm"):
        mod = _dispatch.compiled(fam)
        out[fam] = mod.current_path() if mod is not None else "NumPy twin (not built)"
    return out


def run(threads=(1, 2), repeats=15, quick=False) -> dict:
    """Every case at every thread count; {"machine", "rows"} (or {"skipped": why} without onnx/onnxruntime)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"needs onnx and onnxruntime ({exc})"}
    from refquant import threads as rq_threads
    from refquant._cpu import cpu_features

    before = rq_threads.get_num_threads()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, kind, dims in (QUICK if quick else CASES):
                rows += _case(name, kind, dims, threads, repeats, tmp)
    finally:
        rq_threads.set_num_threads(before)
    cpu = cpu_features()
    return {"machine": {"cpu": cpu["model"], "features": [f for f, v in cpu.items() if v is True],
                        "python": platform.python_version(), "onnxruntime": ort.__version__, "paths": _paths(),
                        "repeats": repeats, "quick": quick}, "rows": rows}


def format_markdown(result) -> str:
    """The speed table (ms, medians with the best round in parentheses) and the breakdown of refquant's graph."""
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    m = result["machine"]
    lines = [("**QUICK MODE (tiny sizes)**  " if m.get("quick") else "") +
             f"CPU: {m['cpu']} ({' '.join(m['features'])}); qdirect {m['paths']['qdirect']}, qgemm "
             f"{m['paths']['qgemm']}; onnxruntime {m['onnxruntime']}; medians of {m['repeats']} round-robin rounds "
             "(best round), batch 1, float in and out", "",
             "| op | threads | refquant INT8 ms | refquant INT8 reduce_range ms | ORT QOperator ms | ORT FP32 ms | "
             "ORT / refquant (8-bit / reduce_range) | max diff vs ORT (out steps) | vs float: refquant / "
             "reduce_range / ORT (out steps) |", "|---|---|---|---|---|---|---|---|---|"]

    def c(r, k):
        return f"{r['ms'][k]:.3f} ({r['best_ms'][k]:.3f})"

    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['threads']} | {c(r, 'refquant')} | {c(r, 'refquant_rr')} | "
                     f"{c(r, 'ort_qoperator')} | {c(r, 'ort_fp32')} | **{r['ratio']:.2f}x** / {r['ratio_rr']:.2f}x | "
                     f"{r['diff_vs_ort']:.2f} | {r['rq_diff_vs_fp32']:.2f} / {r['rq_rr_diff_vs_fp32']:.2f} / "
                     f"{r['ort_diff_vs_fp32']:.2f} |")
    lines += ["", "refquant's graph op by op (ms, medians; executor = the graph's time less its ops'):", "",
              "| op | threads | ops | executor |", "|---|---|---|---|"]
    for r in result["rows"]:
        parts = ", ".join(f"{k.split(':', 1)[1]} {r['ms'][k]:.3f}" for k in r["refquant_ops"])
        lines.append(f"| {r['case']} | {r['threads']} | {parts} | {r['overhead_ms']:.3f} |")
    lines += ["", "ORT's graphs: " + "; ".join(sorted({" -> ".join(r["ort_ops"]) for r in result["rows"]}))]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): a smoke test, not a measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = run(tuple(args.threads), args.repeats, args.quick)
    print(format_markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


markdown = format_markdown  # the name `refquant bench` calls


if __name__ == "__main__":
    main()
