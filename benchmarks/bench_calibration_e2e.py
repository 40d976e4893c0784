"""Calibration end to end: the wall time of a whole static PTQ, refquant's ``quant_post_static`` against ONNX
Runtime's ``quantize_static`` on PP-OCR cls, rec and det, and optionally against Paddle 3.3.1's
``PostTrainingQuantization`` on a Paddle-saved MobileNetV1, side by side in one run at one thread.

What is timed:

- refquant: ``quant_post_static(model, feeds, algo=...)`` on the already imported model (import excluded):
  calibration (the FP32 forward over every batch, twice for KL / hist), thresholds, weight freezing and the
  quantized model. ``refquant.set_num_threads(1)``, BLAS limited to one thread.
- ONNX Runtime: the whole ``quantize_static`` call (QDQ, per-channel s8 weights, u8 activations) from the FP32 file
  to the written QDQ file, with its calibration session at ``intra_op_num_threads=1`` (``quantize_static`` takes
  no session options: :func:`_ort_calibration_options` patches them in for the call). Pairings: abs_max vs
  MinMax, KL vs Entropy, hist vs Percentile. Entropy is given ``num_bins=2048`` (``quantize_static`` passes no bin
  count to the calibrator, and with its default 128 bins the entropy search has one candidate, so Entropy would
  be MinMax: docs/check.md); its ``num_quantized_bins`` stays at the default 128.
- mse, emd and avg have no ONNX Runtime peer: refquant's time only.
- Paddle (optional): when ``REFQUANT_PADDLE_PYTHON`` names a python with paddle 3.3.1, a worker process of it
  builds ``paddle.vision.models.mobilenet_v1`` (random init, 224x224), saves it as a legacy inference model
  (``FLAGS_enable_pir_api=0``) and times ``PostTrainingQuantization(...).quantize()`` (the construction, which
  loads the model, excluded) with ``OMP_NUM_THREADS=1``; refquant imports the same files
  (``refquant.import_paddle``) and quantizes the same batches with Paddle's default ``quantizable_op_type``.
  Without the variable the column is skipped.

Data: PP-OCR calibration lines rendered by :mod:`refquant.realmodels.ppocr` (``CALIB_SEED``): cls and rec 32 lines
as 4 batches of 8, det 4 pages of 480x320 as 4 batches of 1; Paddle: 32 seeded random images as 4 batches of 8.
Each round times every runner once, in turn (round-robin, no warm-up run: each call is seconds long and the
models are loaded and run once before), and the medians over the rounds are compared within this one run. A runner
slower than :data:`SLOW_S` in its first round is not repeated.

    python -m benchmarks.bench_calibration_e2e [--quick] [--repeats N] [--algos KL,hist] [--ort MinMax,Percentile]
                                               [--json r.json] [cls rec det paddle]
    REFQUANT_PADDLE_PYTHON=/path/to/venv/bin/python refquant bench calibration_e2e

``REFQUANT_BENCH_QUICK=1`` (or ``--quick``) runs tiny sizes that only show it works.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

from refquant.calibration.algorithms import static_algorithms

from .common import blas_limits, machine, table
from .paddle_worker import SKIPPED, PaddleWorker, paddle_python

#: ONNX Runtime calibration method -> the refquant algo it is paired with
ORT_PEERS = {"MinMax": "abs_max", "Entropy": "KL", "Percentile": "hist"}
#: every algo of quant_post_static (the registry's order) -> its ONNX Runtime peer (None: no peer)
PAIRS = {algo: next((m for m, a in ORT_PEERS.items() if a == algo), None) for algo in static_algorithms()}
#: extra options of ONNX Runtime's calibrator per method (see the module docstring)
ORT_CALIB_OPTIONS = {"Entropy": {"num_bins": 2048}}
#: n calibration lines (cls, rec) or pages (det), batch size; det page size (width, height)
FULL = {"cls": {"n": 32, "batch": 8}, "rec": {"n": 32, "batch": 8}, "det": {"n": 4, "batch": 1, "page": (480, 320)},
        "paddle": {"n": 32, "batch": 8}, "repeats": 3}
QUICK = {"cls": {"n": 2, "batch": 2}, "rec": {"n": 2, "batch": 2}, "det": {"n": 1, "batch": 1, "page": (96, 64)},
         "paddle": {"n": 2, "batch": 2}, "repeats": 1}
#: seconds above which a runner is timed once instead of ``repeats`` times
SLOW_S = 120.0
#: Paddle's default quantizable_op_type (PaddleSlim's), used on both sides of the Paddle column
PADDLE_OPS = ("conv2d", "depthwise_conv2d", "mul")


def _log(*a):
    print(*a, file=sys.stderr, flush=True)


def _round_robin(fns: dict, repeats: int) -> tuple[dict, dict]:
    """``({name: [wall seconds of each round]}, {name: [CPU seconds]})``: every ``fns[name]()`` once per round,
    in turn; a runner whose first round took more than :data:`SLOW_S` seconds runs only once (ONNX Runtime's
    Entropy: minutes per call). A runner may return ``(wall, cpu)`` seconds it measured itself (the Paddle
    worker); otherwise this process's wall and CPU time (``time.process_time``, all its threads) are taken."""
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in fns.items():
            if r and wall[k][0] > SLOW_S:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            got = fn()
            w, c = (time.perf_counter() - t0, time.process_time() - c0)
            if isinstance(got, tuple) and len(got) == 2 and all(isinstance(v, float) for v in got):
                w, c = got
            wall[k].append(w)
            cpu[k].append(c)
            _log(f"round {r + 1}/{repeats}: {k} {w:.2f} s wall, {c:.2f} s CPU")
    return wall, cpu


@contextlib.contextmanager
def _ort_calibration_options(threads: int, extra: dict):
    """Within the block, ``quantize_static``'s calibrator runs its session at ``threads`` intra-op threads (ORT
    otherwise uses every core) and gets ``extra`` calibrator options (e.g. ``num_bins``), which
    ``quantize_static`` does not pass on. Restores ONNX Runtime's functions afterwards."""
    import importlib

    import onnxruntime as ort
    cal = importlib.import_module("onnxruntime.quantization.calibrate")
    qz = importlib.import_module("onnxruntime.quantization.quantize")  # the package also exports a function so named
    make_session, create = cal.CalibraterBase.create_inference_session, qz.create_calibrator

    def session(self):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ORT's own
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        self.infer_session = ort.InferenceSession(self.augmented_model_path, sess_options=so,
                                                  providers=self.execution_providers)

    def create_calibrator(*args, extra_options=None, **kwargs):
        return create(*args, extra_options={**(extra_options or {}), **extra}, **kwargs)

    cal.CalibraterBase.create_inference_session, qz.create_calibrator = session, create_calibrator
    try:
        yield
    finally:
        cal.CalibraterBase.create_inference_session, qz.create_calibrator = make_session, create


def _ort_quantize(fp32_path, out_path, feeds, method):
    from refquant.realmodels import ppocr
    # ONNX Runtime's calibrators print progress on stdout: keep it out of the markdown
    with _ort_calibration_options(1, ORT_CALIB_OPTIONS.get(method, {})), contextlib.redirect_stdout(sys.stderr):
        ppocr.ort_quantize(fp32_path, out_path, feeds, method)


def _ppocr_feeds(kind, s):
    from refquant.realmodels import ppocr
    if kind == "det":
        return [{"x": x} for x in ppocr.det_set(s["n"], ppocr.CALIB_SEED, size=tuple(s["page"]))]
    x, _ = (ppocr.cls_set if kind == "cls" else ppocr.rec_set)(s["n"], ppocr.CALIB_SEED)
    return ppocr.batches(x, s["batch"])


def _ppocr_kind(kind, sizes, algos, repeats, tmp, ort_methods):
    from refquant.quant.post_static import quant_post_static
    from refquant.realmodels import ppocr
    model, path = ppocr.load(kind), ppocr.model_path(kind)
    feeds = _ppocr_feeds(kind, sizes)
    model.run(feeds[0])
    fns = {}
    for algo in algos:
        fns[f"refquant {algo}"] = lambda a=algo: quant_post_static(model, feeds, algo=a,
                                                                   quantizable_op_type=ppocr.QUANT_OPS)
        if PAIRS.get(algo) in ort_methods:
            fns[f"ORT {PAIRS[algo]}"] = lambda m=PAIRS[algo]: _ort_quantize(
                path, os.path.join(tmp, f"{kind}.{m}.onnx"), feeds, m)
    return {"kind": kind, "sizes": sizes, "input": list(feeds[0]["x"].shape), "batches": len(feeds),
            **_medians(*_round_robin(fns, repeats))}


def _medians(wall, cpu):
    return {"seconds": wall, "cpu_seconds": cpu, "median_s": {k: float(np.median(v)) for k, v in wall.items()},
            "median_cpu_s": {k: float(np.median(v)) for k, v in cpu.items()}}


# ---- the Paddle column ------------------------------------------------------------------------------------------
#: The worker run by REFQUANT_PADDLE_PYTHON: saves MobileNetV1, then times PostTrainingQuantization per stdin line.
_PADDLE_WORKER = r'''
import json, os, sys, time
import numpy as np
import paddle
paddle.enable_static()
out, batch = sys.argv[1], int(sys.argv[2])
ops = sys.argv[3].split(",")
x = np.load(os.path.join(out, "calib.npy"))
main, start = paddle.static.Program(), paddle.static.Program()
main.random_seed = start.random_seed = 0
with paddle.static.program_guard(main, start), paddle.utils.unique_name.guard():
    xv = paddle.static.data("x", [None, 3, 224, 224], "float32")
    net = paddle.vision.models.mobilenet_v1(pretrained=False)
    net.eval()
    y = net(xv)
    test = main.clone(for_test=True)
exe = paddle.static.Executor(paddle.CPUPlace())
with paddle.static.scope_guard(paddle.static.Scope()):
    exe.run(start)
    paddle.static.save_inference_model(os.path.join(out, "model"), [xv], [y], exe, program=test)
from paddle.static.quantization import PostTrainingQuantization
n = len(x) // batch
print(json.dumps({"ready": paddle.__version__}), flush=True)
for line in sys.stdin:
    algo = json.loads(line)
    with paddle.static.scope_guard(paddle.static.Scope()):
        ptq = PostTrainingQuantization(
            executor=exe, model_dir=out, model_filename="model.pdmodel", params_filename="model.pdiparams",
            data_loader=lambda: ({"x": x[i * batch:(i + 1) * batch]} for i in range(n)), batch_nums=n, algo=algo,
            quantizable_op_type=ops)
        t, c = time.perf_counter(), time.process_time()
        ptq.quantize()
        s, c = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"algo": algo, "seconds": s, "cpu_seconds": c}), flush=True)
'''


def _paddle_seconds(reply):
    """``(wall, CPU)`` seconds of Paddle's ``quantize()``, measured in the worker."""
    return float(reply["seconds"]), float(reply["cpu_seconds"])


def _paddle_column(python, sizes, algos, repeats, tmp):
    """refquant vs Paddle's PostTrainingQuantization on the worker's MobileNetV1 and the same batches."""
    import refquant
    from refquant.quant.post_static import quant_post_static
    wdir = os.path.join(tmp, "paddle")
    os.makedirs(wdir)
    b = sizes["batch"]
    x = np.random.default_rng(0).standard_normal((sizes["n"], 3, 224, 224)).astype(np.float32)
    np.save(os.path.join(wdir, "calib.npy"), x)
    worker = PaddleWorker(python, _PADDLE_WORKER, wdir, (wdir, b, ",".join(PADDLE_OPS)), name="paddle_ptq_worker",
                          OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        model = refquant.import_paddle(wdir)
        feeds = [{model.inputs[0]: x[i:i + b]} for i in range(0, len(x), b)]
        model.run(feeds[0])
        fns = {}
        for algo in algos:
            fns[f"refquant {algo}"] = lambda a=algo: quant_post_static(model, feeds, algo=a,
                                                                       quantizable_op_type=PADDLE_OPS)
            fns[f"Paddle {algo}"] = lambda a=algo: _paddle_seconds(worker.ask(a))
        times = _round_robin(fns, repeats)
    finally:
        worker.close()
    return {"paddle": worker.ready["ready"], "model": "mobilenet_v1 (random init), 224x224", "sizes": sizes,
            **_medians(*times)}


def run(kinds=("cls", "rec", "det", "paddle"), algos=tuple(PAIRS), quick: bool | None = None,
        repeats: int | None = None, ort_methods=("MinMax", "Entropy", "Percentile")) -> dict:
    """``algos``: the refquant algos timed; ``ort_methods``: the ONNX Runtime peers timed with them."""
    import refquant
    from refquant import threads
    from refquant.realmodels import ppocr
    quick = os.environ.get("REFQUANT_BENCH_QUICK") == "1" if quick is None else quick
    sizes = QUICK if quick else FULL
    repeats = sizes["repeats"] if repeats is None else repeats
    from refquant._dispatch import compiled
    result = {"machine": machine(), "quick": quick, "repeats": repeats, "threads": 1, "date": time.strftime("%Y-%m-%d"),
              "models": [], "ort_calibration_options": ORT_CALIB_OPTIONS,
              "kernels": {k: "compiled" if compiled(k) else "NumPy twin" for k in ("histogram", "kl", "search")}}
    try:
        import onnxruntime
        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        onnxruntime = None
    before = threads.get_num_threads()
    refquant.set_num_threads(1)
    try:
        with blas_limits(1), tempfile.TemporaryDirectory() as tmp:
            for kind in kinds:
                if kind == "paddle":
                    python = paddle_python()
                    if not python:
                        result["paddle"] = {"skipped": SKIPPED}
                        continue
                    result["paddle"] = _paddle_column(python, sizes["paddle"], algos, repeats, tmp)
                    continue
                if onnxruntime is None or not ppocr.available():
                    result["models"].append({"kind": kind, "skipped": "onnxruntime or the PP-OCR models "
                                                                      "(rapidocr-onnxruntime) not installed"})
                    continue
                result["models"].append(_ppocr_kind(kind, sizes[kind], algos, repeats, tmp, ort_methods))
    finally:
        refquant.set_num_threads(before)
    return result


def _cell(run, name):
    """``wall / CPU`` seconds of one runner (CPU missing in results of older runs)."""
    w, c = run["median_s"].get(name), run.get("median_cpu_s", {}).get(name)
    if w is None:
        return "-"
    return f"{w:.2f} / {c:.2f}" if c is not None else f"{w:.2f}"


def _ratios(run, theirs, ours):
    """``wall / CPU`` speed-up of ``ours`` over ``theirs``."""
    out = []
    for key in ("median_s", "median_cpu_s"):
        t, o = run.get(key, {}).get(theirs), run.get(key, {}).get(ours)
        if t and o:
            out.append(f"{t / o:.1f}x")
    return "**" + " / ".join(out) + "**" if out else "-"


def markdown(r: dict) -> str:
    m = r["machine"]
    parts = [f"{'QUICK MODE (tiny sizes, only shows it works); ' if r['quick'] else ''}{r['date']}, {m['cpu']}, "
             f"1 thread, median of {r['repeats']} round-robin round(s) (runners over {SLOW_S:.0f} s: one); ONNX "
             f"Runtime {r.get('onnxruntime', '-')}. Seconds as wall / CPU (this process's CPU time: robust to the "
             f"load of other processes on a shared machine); calibration kernels: "
             + ", ".join(f"{k} {v}" for k, v in r.get("kernels", {}).items())]
    for mod in r["models"]:
        if "skipped" in mod:
            parts.append(f"{mod['kind']}: skipped: {mod['skipped']}")
            continue
        rows = []
        for algo, peer in PAIRS.items():
            ours = f"refquant {algo}"
            if ours not in mod["median_s"]:
                continue
            theirs = f"ORT {peer}"
            has_peer = theirs in mod["median_s"]
            rows.append([algo, _cell(mod, ours), peer if has_peer else "-", _cell(mod, theirs) if has_peer else "-",
                         _ratios(mod, theirs, ours) if has_peer else "-"])
        parts.append(f"### {mod['kind']}: {mod['batches']} batches of input {tuple(mod['input'])}\n\n" +
                     table(["refquant algo", "quant_post_static s", "ONNX Runtime method", "quantize_static s",
                            "speed-up"], rows))
    p = r.get("paddle")
    if p:
        if "skipped" in p:
            parts.append(f"Paddle column: skipped: {p['skipped']}")
        else:
            rows = [[algo, _cell(p, f"refquant {algo}"), _cell(p, f"Paddle {algo}"),
                     _ratios(p, f"Paddle {algo}", f"refquant {algo}")]
                    for algo in PAIRS if f"refquant {algo}" in p["median_s"]]
            s = p["sizes"]
            parts.append(f"### Paddle {p['paddle']} PostTrainingQuantization: {p['model']}, {s['n']} images as "
                         f"{s['n'] // s['batch']} batches of {s['batch']}\n\n" +
                         table(["algo", "refquant quant_post_static s", "Paddle quantize() s", "speed-up"], rows))
    return "\n\n".join(parts)


if __name__ == "__main__":
    args = sys.argv[1:]
    names = tuple(a for a in args if a in ("cls", "rec", "det", "paddle")) or ("cls", "rec", "det", "paddle")
    reps = int(args[args.index("--repeats") + 1]) if "--repeats" in args else None
    chosen = tuple(args[args.index("--algos") + 1].split(",")) if "--algos" in args else tuple(PAIRS)
    peers = tuple(args[args.index("--ort") + 1].split(",")) if "--ort" in args else ("MinMax", "Entropy", "Percentile")
    res = run(kinds=names, algos=chosen, quick=True if "--quick" in args else None, repeats=reps, ort_methods=peers)
    if "--json" in args:
        with open(args[args.index("--json") + 1], "w") as f:
            json.dump(res, f, indent=1, default=str)
    print(markdown(res))
