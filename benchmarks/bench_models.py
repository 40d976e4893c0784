"""Whole models at ImageNet shapes (batch 1, 3x224x224, 1000 classes): refquant FP32 vs INT8, next to
onnxruntime FP32 and INT8, side by side in one run; plus weight bytes and peak resident memory.

For each model (the zoo builders, untrained weights: timing does not need trained ones):
  1. FP32 model; static PTQ (abs_max on two random batches) -> ``convert_to_int8``, with 8-bit weights and with
     ``reduce_range=True`` (GEMM weights halved to [-64, 64]: AVX2's exact vpmaddubsw kernel);
  2. latency medians at 1 and 2 threads, every runner timed round-robin in one loop: refquant FP32 (its im2col + BLAS convs),
     refquant FP32 fused (``refquant.deploy.optimize_fp32``: batch norm folded, residual add and relu in the conv,
     the ``fconv`` kernels on packed weights), refquant INT8 (both);
     onnxruntime FP32 on the exported float model; onnxruntime INT8 on refquant's INT8 graph exported as QDQ
     (the *same* quantized model: ORT fuses it into QLinearConv where it can) and on ORT's own
     ``quantize_static`` (QDQ, per-channel s8 weights, u8 activations, MinMax on the same batches), also with its
     ``reduce_range=True`` (7-bit weights);
  3. weight bytes (parameters) and peak RSS of a fresh process that loads the saved model and runs it once.
BLAS and OpenMP are limited together to the thread count (threadpoolctl); OPENBLAS_* variables are left alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from .common import blas_limits, interleaved_medians, machine, table

MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet50")


def _peak_rss_mb(path: str) -> dict:
    """RSS of a new process that imports refquant and makes its input (before), and its peak RSS while it loads
    ``path`` and runs one batch, in MB (Linux: /proc/self/status; the peak is reset with clear_refs first)."""
    code = f"""
import json, numpy as np, refquant
from refquant.io import load
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
m = load({path!r}); m.run({{m.inputs[0]: x}})
print(json.dumps([before, status("VmHWM:")]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, peak = json.loads(out.strip().splitlines()[-1])
    return {"rss_before_mb": before, "rss_peak_mb": peak, "rss_model_mb": peak - before}


def _ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _ort_quantize_static(fp32_path, out_path, calib, input_name, reduce_range=False):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{input_name: c} for c in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(fp32_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range)


def run(models=MODELS, threads_list=(1, 2), repeats: int = 9) -> dict:
    import refquant
    from refquant import threads
    from refquant.deploy import convert_to_int8, optimize_fp32
    from refquant.io import save
    from refquant.models import build
    from refquant.quant import quant_post_static

    from refquant import _dispatch
    fconv = _dispatch.compiled("fconv")  # the fused FP32 convs' kernel family and the ISA path it takes
    result = {"machine": machine(), "models": [],
              "fp32_fused_convs": f"fconv {fconv.current_path()}" if fconv else "NumPy twin (fconv not built)"}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    calib = [rng.standard_normal((2, 3, 224, 224)).astype(np.float32) for _ in range(2)]
    before = threads.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            fp32 = build(name)
            q = quant_post_static(fp32, [{"x": c} for c in calib], algo="abs_max")
            i8 = convert_to_int8(q)
            i8r = convert_to_int8(q, reduce_range=True)
            row = {"model": name, "fp32_weight_mb": fp32.param_bytes() / 1e6,
                   "int8_weight_mb": i8.param_bytes() / 1e6}
            paths = {k: os.path.join(tmp, f"{name}.{k}.rq") for k in ("fp32", "int8")}
            save(fp32, paths["fp32"])
            save(i8, paths["int8"])
            for k, p in paths.items():
                row.update({f"{k}_{key}": v for key, v in _peak_rss_mb(p).items()})
            fused = optimize_fp32(fp32)
            runners = {"refquant_fp32": lambda: fp32.run({"x": x}), "refquant_fp32_fused": lambda: fused.run({"x": x}),
                       "refquant_int8": lambda: i8.run({"x": x}),
                       "refquant_int8_rr": lambda: i8r.run({"x": x})}
            onnx_paths = {}
            try:
                export = refquant.export_onnx
                onnx_paths["ort_fp32"] = os.path.join(tmp, f"{name}.fp32.onnx")
                export(fp32, onnx_paths["ort_fp32"])
                onnx_paths["ort_int8_same_model"] = os.path.join(tmp, f"{name}.int8.onnx")
                export(i8, onnx_paths["ort_int8_same_model"])
                onnx_paths["ort_int8_own_quantizer"] = os.path.join(tmp, f"{name}.ortq.onnx")
                _ort_quantize_static(onnx_paths["ort_fp32"], onnx_paths["ort_int8_own_quantizer"], calib,
                                     fp32.inputs[0])
                onnx_paths["ort_int8_own_quantizer_rr"] = os.path.join(tmp, f"{name}.ortq_rr.onnx")
                _ort_quantize_static(onnx_paths["ort_fp32"], onnx_paths["ort_int8_own_quantizer_rr"], calib,
                                     fp32.inputs[0], reduce_range=True)
            except (ImportError, AttributeError) as exc:
                row["ort_skipped"] = f"{type(exc).__name__}: {exc}"
            for n in threads_list:
                threads.set_num_threads(n)
                with blas_limits(n):
                    fns = dict(runners)
                    for key, path in onnx_paths.items():
                        sess = _ort_session(path, n)
                        fns[key] = lambda s=sess, i=sess.get_inputs()[0].name: s.run(None, {i: x})
                    # round-robin: a slow phase of this shared machine hits every runner alike; with 2 threads a
                    # pause lets the previous runtime's spinning workers go idle first
                    for key, sec in interleaved_medians(fns, repeats, pause=0.2 if n > 1 else 0.0).items():
                        row[f"{key}_ms_{n}t"] = 1e3 * sec
                row[f"int8_speedup_{n}t"] = row[f"refquant_fp32_ms_{n}t"] / row[f"refquant_int8_ms_{n}t"]
                row[f"int8_rr_speedup_{n}t"] = row[f"refquant_fp32_ms_{n}t"] / row[f"refquant_int8_rr_ms_{n}t"]
            threads.set_num_threads(before)
            result["models"].append(row)
            print(json.dumps(row), flush=True)
    return result


def markdown(r: dict) -> str:
    tl = sorted({int(k.split("_")[-1][:-1]) for row in r["models"] for k in row if k.startswith("int8_speedup_")})
    cols = ["refquant_fp32", "refquant_fp32_fused", "refquant_int8", "refquant_int8_rr", "ort_fp32",
            "ort_int8_same_model", "ort_int8_own_quantizer", "ort_int8_own_quantizer_rr"]
    ort_int8 = cols[5:]
    parts = []
    for n in tl:
        rows = []
        for row in r["models"]:
            cells = [row["model"]] + [f"{row[f'{c}_ms_{n}t']:.1f}" if f"{c}_ms_{n}t" in row else "-" for c in cols]
            fp32_vs_ort = [row.get(f"ort_fp32_ms_{n}t", 0) / row[f"{c}_ms_{n}t"] if f"{c}_ms_{n}t" in row else 0
                           for c in cols[:2]]
            cells.append(" / ".join(f"{v:.2f}x" if v else "-" for v in fp32_vs_ort))
            cells.append(f"**{row[f'int8_speedup_{n}t']:.2f}x** / **{row[f'int8_rr_speedup_{n}t']:.2f}x**")
            best_ort = min([row[f"{c}_ms_{n}t"] for c in ort_int8 if f"{c}_ms_{n}t" in row], default=None)
            cells.append(f"{best_ort / row[f'refquant_int8_ms_{n}t']:.2f}x / "
                         f"{best_ort / row[f'refquant_int8_rr_ms_{n}t']:.2f}x" if best_ort else "-")
            rows.append(cells)
        parts.append(f"### {n} thread(s), batch 1, ms (median of runs)\n\n" + table(
            ["model", "refquant FP32", "refquant FP32 fused", "refquant INT8", "refquant INT8 reduce_range",
             "ORT FP32", "ORT INT8 (refquant's QDQ)", "ORT INT8 (ORT quantize_static)",
             "ORT INT8 (quantize_static reduce_range)", "refquant FP32 / ORT FP32 speed (plain / fused)",
             "refquant INT8/FP32 speed-up (8-bit / reduce_range)", "refquant INT8 vs best ORT INT8 (8-bit / reduce_range)"],
            rows))
    mem = table(["model", "FP32 weights MB", "INT8 weights MB", "ratio", "FP32 peak RSS MB (model part)",
                 "INT8 peak RSS MB (model part)"],
                [[row["model"], f"{row['fp32_weight_mb']:.1f}", f"{row['int8_weight_mb']:.1f}",
                  f"{row['int8_weight_mb'] / row['fp32_weight_mb']:.3f}",
                  f"{row['fp32_rss_peak_mb']:.0f} ({row['fp32_rss_model_mb']:.0f})",
                  f"{row['int8_rss_peak_mb']:.0f} ({row['int8_rss_model_mb']:.0f})"] for row in r["models"]])
    fused = f"refquant FP32 fused: `optimize_fp32`, convs on {r.get('fp32_fused_convs', '?')}."
    return "\n\n".join([fused] + parts + ["### Memory", mem])


if __name__ == "__main__":
    print(markdown(run()))
