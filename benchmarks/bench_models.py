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

Paddle Inference's oneDNN (optional): when ``REFQUANT_PADDLE_PYTHON`` names a python with paddle 3.3.1, a worker
process of it (:mod:`benchmarks.paddle_worker`) builds ``paddle.vision.models`` MobileNetV1 and ResNet-50 (seeded
random init), saves them as legacy inference models, quantizes them with Paddle's ``PostTrainingQuantization``
(the same algo and batches as refquant, ``onnx_format=False``: fake quant-dequant ops) and runs Paddle Inference
with ``enable_mkldnn()`` (FP32) and ``enable_mkldnn()`` + ``enable_mkldnn_int8()`` (INT8: oneDNN's INT8 kernels),
``set_cpu_math_library_num_threads(n)``. refquant imports the same FP32 files (``refquant.import_paddle``),
quantizes them on the same batches and converts to INT8; every runner of both processes is timed round-robin (the
worker times its own run on request), and the outputs are compared (top-1 and cosine on seeded images). A second
worker run with ``ONEDNN_VERBOSE=1`` reports oneDNN's version, ISA and the conv kernels it ran. Without the
variable the section is a row saying so.

    python -m benchmarks.bench_models
    REFQUANT_PADDLE_PYTHON=/path/to/venv/bin/python refquant bench models
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

import numpy as np

from .common import blas_limits, interleaved_medians, machine, table
from .paddle_worker import SKIPPED, PaddleWorker, paddle_env, paddle_python

MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet50")
#: the paddle.vision models of the Paddle Inference section
PADDLE_MODELS = ("mobilenet_v1", "resnet50")
#: quant_post_static's algo and ops on both sides (Paddle's defaults for the ops)
ALGO, OPS = "abs_max", ("conv2d", "depthwise_conv2d", "mul")
#: seeded images whose outputs are compared
CHECK_IMAGES = 16
#: sleep before each timed call at 2+ threads in the Paddle section: Paddle's OpenMP (libiomp5) workers spin for
#: KMP_BLOCKTIME, 200 ms by default, after each parallel region
PADDLE_PAUSE = 0.25


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


#: The worker run by REFQUANT_PADDLE_PYTHON: saves the FP32 and fake-quant models, then serves JSON requests
#: (``{"threads": n}``: predictors at n threads; ``{"time": [model, kind]}``: seconds of one run on x.npy;
#: ``{"outputs": [model, kind]}``: outputs on check.npy, saved to a file). ``probe``: runs each predictor once.
_PADDLE_INFER = r'''
import json, os, sys, time
import numpy as np
import paddle
import paddle.inference as pi
from paddle.static.quantization import PostTrainingQuantization
paddle.enable_static()
out, algo, ops, names, mode = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(","), sys.argv[5]


def save(name, calib):
    """The FP32 legacy inference model (seeded random init) and Paddle's fake-quant PTQ of it."""
    paddle.seed(0)
    main, start = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, start), paddle.utils.unique_name.guard():
        xv = paddle.static.data("x", [None, 3, 224, 224], "float32")
        net = getattr(paddle.vision.models, name)(pretrained=False)
        net.eval()
        y = net(xv)
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        exe.run(start)
        paddle.static.save_inference_model(os.path.join(out, name, "fp32", "model"), [xv], [y], exe,
                                           program=main.clone(for_test=True))
    with paddle.static.scope_guard(paddle.static.Scope()):
        ptq = PostTrainingQuantization(
            executor=exe, model_dir=os.path.join(out, name, "fp32"), model_filename="model.pdmodel",
            params_filename="model.pdiparams", data_loader=lambda: ({"x": b} for b in calib),
            batch_nums=len(calib), algo=algo, quantizable_op_type=ops, onnx_format=False)
        ptq.quantize()
        ptq.save_quantized_model(os.path.join(out, name, "int8"), model_filename="model.pdmodel",
                                 params_filename="model.pdiparams")


def predictor(name, kind, threads):
    """Paddle Inference on oneDNN (INT8 kernels for the fake-quant model): a function input -> output."""
    d = os.path.join(out, name, kind)
    c = pi.Config(os.path.join(d, "model.pdmodel"), os.path.join(d, "model.pdiparams"))
    c.disable_gpu()
    c.enable_mkldnn()
    if kind == "int8":
        c.enable_mkldnn_int8()
    c.set_cpu_math_library_num_threads(threads)
    c.disable_glog_info()
    p = pi.create_predictor(c)
    i, o = p.get_input_handle(p.get_input_names()[0]), p.get_output_handle(p.get_output_names()[0])

    def run(a):
        i.copy_from_cpu(a)
        p.run()
        return o.copy_to_cpu()
    return run


x = np.load(os.path.join(out, "x.npy"))
if mode == "probe":  # ONEDNN_VERBOSE=1: oneDNN prints what it runs on stdout
    for name in names:
        predictor(name, sys.argv[7], int(sys.argv[6]))(x)
    sys.exit()
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # what Paddle prints goes to the log, not into the replies
for name in names:
    save(name, np.load(os.path.join(out, "calib.npy")))
print(json.dumps({"ready": paddle.__version__}), file=replies, flush=True)
runs = {}
for line in sys.stdin:
    req = json.loads(line)
    if "threads" in req:  # made anew: a predictor sets the thread count when it is made
        runs = {}
        runs = {(n, k): predictor(n, k, req["threads"]) for n in names for k in ("fp32", "int8")}
        reply = {}
    elif "time" in req:
        run = runs[tuple(req["time"])]
        t = time.perf_counter()
        run(x)
        reply = {"seconds": time.perf_counter() - t}
    else:
        path = os.path.join(out, "{}.{}.out.npy".format(*req["outputs"]))
        np.save(path, runs[tuple(req["outputs"])](np.load(os.path.join(out, "check.npy"))))
        reply = {"path": path}
    print(json.dumps(reply), file=replies, flush=True)
'''


def _onednn_probe(python, script, args, kind, threads) -> dict:
    """oneDNN's version, ISA, thread count and the conv / inner-product kernels (implementation, source type: how
    many ran) when the worker runs each ``kind`` model once with ``ONEDNN_VERBOSE=1``."""
    out = subprocess.run([python, script, *args, "probe", str(threads), kind], capture_output=True, text=True,
                         env=paddle_env(ONEDNN_VERBOSE="1"))
    if out.returncode:
        raise RuntimeError(f"the oneDNN probe failed:\n{out.stderr[-2000:]}")
    return _onednn_summary(out.stdout)


def _onednn_summary(text: str) -> dict:
    """What ``ONEDNN_VERBOSE=1`` printed (``text``), summed up (see :func:`_onednn_probe`); "?" where missing."""
    first = {k: re.search(p, text) for k, p in (("onednn", r"oneDNN (v[\d.]+)"), ("isa", r"isa:([^,\n]+)"),
                                                   ("threads", r"nthr:(\d+)"))}
    kernels = Counter(f"{prim} {impl} ({src})" for prim, impl, src in
                      re.findall(r",exec,cpu,(convolution|inner_product|matmul),([^,]+),[^,]*,src:(\w+)", text))
    return {**{k: m.group(1) if m else "?" for k, m in first.items()}, "kernels": dict(kernels)}


def _agreement(a, b) -> dict:
    """Top-1 equality, the smallest per-image cosine of two outputs (images, classes), and the cosine of what
    depends on the image (each output less its mean over the images: an untrained model's logits are mostly a
    constant, the same top-1 for every image)."""
    a, b = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (a, b))
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ca, cb = a - a.mean(0), b - b.mean(0)
    return {"top1": float(np.mean(a.argmax(1) == b.argmax(1))), "cos_min": float(cos.min()),
            "cos_centered": float((ca * cb).sum() / (np.linalg.norm(ca) * np.linalg.norm(cb)))}


def _paddle_section(python, names, calib, x, threads_list, repeats, tmp) -> dict:
    """refquant against Paddle Inference's oneDNN FP32 and INT8 on Paddle's own models (module docstring)."""
    import refquant
    from refquant import threads
    from refquant.deploy import convert_to_int8, optimize_fp32
    from refquant.quant import quant_post_static
    wdir = os.path.join(tmp, "paddle")
    os.makedirs(wdir)
    check = np.random.default_rng(1).standard_normal((CHECK_IMAGES, 3, 224, 224)).astype(np.float32)
    for key, a in (("calib", np.stack(calib)), ("x", x), ("check", check)):
        np.save(os.path.join(wdir, key + ".npy"), a)
    args = (wdir, ALGO, ",".join(OPS), ",".join(names))
    with PaddleWorker(python, _PADDLE_INFER, wdir, (*args, "serve"), name="paddle_infer_worker") as worker:
        result = {"paddle": worker.ready["ready"], "algo": ALGO, "check_images": CHECK_IMAGES, "models": [],
                  "load_1min": [os.getloadavg()[0]],  # at the start and the end: other jobs on the machine
                  "onednn": {k: _onednn_probe(python, worker.script, args, k, max(threads_list))
                             for k in ("fp32", "int8")}}
        ours = {}
        for name in names:
            fp32 = refquant.import_paddle(os.path.join(wdir, name, "fp32"))
            q = quant_post_static(fp32, [{fp32.inputs[0]: c} for c in calib], algo=ALGO, quantizable_op_type=OPS)
            ours[name] = {"refquant_fp32": fp32, "refquant_fp32_fused": optimize_fp32(fp32),
                          "refquant_int8": convert_to_int8(q),
                          "refquant_int8_rr": convert_to_int8(q, reduce_range=True)}
        rows = {name: {"model": name} for name in names}
        before = threads.get_num_threads()
        try:
            for n in threads_list:
                threads.set_num_threads(n)
                with blas_limits(n):
                    worker.ask({"threads": n})
                    for name in names:
                        fns = {k: lambda m=m: m.run({m.inputs[0]: x}) for k, m in ours[name].items()}
                        fns.update({f"paddle_{k}": lambda k=k: worker.ask({"time": [name, k]})["seconds"]
                                    for k in ("fp32", "int8")})
                        pause = PADDLE_PAUSE if n > 1 else 0.0
                        for key, sec in interleaved_medians(fns, repeats, pause=pause).items():
                            rows[name][f"{key}_ms_{n}t"] = 1e3 * sec
            for name in names:
                out = {k: m.run({m.inputs[0]: check})[m.outputs[0]] for k, m in ours[name].items()}
                out.update({f"paddle_{k}": np.load(worker.ask({"outputs": [name, k]})["path"])
                            for k in ("fp32", "int8")})
                rows[name]["agreement"] = {f"{a}~{b}": _agreement(out[a], out[b]) for a, b in (
                    ("refquant_int8", "paddle_int8"), ("refquant_int8", "paddle_fp32"),
                    ("refquant_int8_rr", "paddle_fp32"), ("paddle_int8", "paddle_fp32"),
                    ("refquant_fp32", "paddle_fp32"))}
                result["models"].append(rows[name])
                print(json.dumps(rows[name]), flush=True)
        finally:
            threads.set_num_threads(before)
    result["load_1min"].append(os.getloadavg()[0])
    return result


def run(models=MODELS, threads_list=(1, 2), repeats: int = 9, paddle_models=PADDLE_MODELS) -> dict:
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
        python = paddle_python()
        result["paddle"] = ({"skipped": SKIPPED} if not python else
                            _paddle_section(python, paddle_models, calib, x, threads_list, repeats, tmp))
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
    paddle = [_paddle_markdown(r["paddle"])] if "paddle" in r else []
    return "\n\n".join([fused] + parts + ["### Memory", mem] + paddle)


def _paddle_markdown(p: dict) -> str:
    if "skipped" in p:
        return f"### Paddle Inference (oneDNN)\n\nskipped: {p['skipped']}"
    o = p["onednn"]
    kernels = "; ".join(f"{k.upper()}: " + ", ".join(f"{name} x{c}" for name, c in sorted(v["kernels"].items()))
                        for k, v in o.items())
    parts = [f"### Paddle Inference {p['paddle']} (oneDNN {o['int8']['onednn']}, ISA {o['int8']['isa']})\n\n"
             f"paddle.vision models (seeded random init); Paddle's PostTrainingQuantization ({p['algo']}, "
             f"onnx_format=False) and refquant's quant_post_static on the same batches; refquant runs the same FP32 "
             f"files (`import_paddle`). oneDNN kernels run, counted over the models (at {o['int8']['threads']} "
             f"threads): {kernels}. Load average (1 min, this run included) at the start / end: "
             + " / ".join(f"{v:.1f}" for v in p.get("load_1min", [])) + "."]
    cols = ["refquant_fp32", "refquant_fp32_fused", "refquant_int8", "refquant_int8_rr", "paddle_fp32", "paddle_int8"]
    tl = sorted({int(k.split("_")[-1][:-1]) for row in p["models"] for k in row if k.startswith("paddle_int8_ms_")})
    for n in tl:
        rows = []
        for row in p["models"]:
            ms = {c: row[f"{c}_ms_{n}t"] for c in cols}
            fp32, int8 = ([ms[f"paddle_{k}"] / ms[c] for c in mine] for k, mine in (
                ("fp32", ("refquant_fp32", "refquant_fp32_fused")), ("int8", ("refquant_int8", "refquant_int8_rr"))))
            rows.append([row["model"]] + [f"{v:.1f}" for v in ms.values()] + [
                " / ".join(f"{v:.2f}x" for v in fp32), " / ".join(f"**{v:.2f}x**" for v in int8)])
        parts.append(f"#### {n} thread(s), batch 1, ms (median of runs)\n\n" + table(
            ["model", "refquant FP32", "refquant FP32 fused", "refquant INT8", "refquant INT8 reduce_range",
             "Paddle oneDNN FP32", "Paddle oneDNN INT8", "refquant FP32 vs Paddle FP32 speed (plain / fused)",
             "refquant INT8 vs Paddle INT8 speed (8-bit / reduce_range)"], rows))
    pairs = list(p["models"][0]["agreement"]) if p["models"] else []
    parts.append(f"#### Output agreement on {p['check_images']} seeded images: top-1 equal, smallest cosine, "
                 "cosine of the image-dependent part (outputs less their mean over the images)\n\n"
                 + table(["model"] + [k.replace("~", " vs ") for k in pairs],
                         [[row["model"]] + [f"{a['top1']:.2f}, {a['cos_min']:.4f}, {a['cos_centered']:.4f}"
                                            for a in row["agreement"].values()] for row in p["models"]]))
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(markdown(run()))
