"""PP-OCR (cls, PP-OCRv4 rec, PP-OCRv4 det) under static PTQ: refquant's six calibration algos, the
sensitivity-based skip list, and onnxruntime's ``quantize_static`` as the anchor, with accuracy and 1-thread
latency side by side in one run (docs/real_models.md).

Data: rendered with Pillow (:mod:`refquant.realmodels.ppocr`); calibration lines use other seeds than the
evaluation lines. Accuracy: cls top-1 (half the lines rotated 180), rec exact match of the CTC-decoded text, det
IoU of the thresholded (0.3) probability map against refquant's FP32 map. Latency: median ms per batch at one
thread (``refquant.set_num_threads(1)`` and threadpoolctl limiting BLAS; ORT with intra_op_num_threads=1).

    python -m benchmarks.bench_real                 # all three models; prints the markdown
    python -m benchmarks.bench_real --json r.json det   # JSON too; only the named models (cls, rec, det)
    python -m benchmarks.bench_real --qat-steps 0   # without the QAT rows (--qat-steps N: at most N steps)

QAT rows: :func:`refquant.realmodels.ppocr.qat` from the best algo's thresholds, all quantizable ops, distilled
from the FP32 outputs on rendered training lines / pages (``ppocr.TRAIN_SEED``), recipe in :data:`QAT`.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np

from refquant.calibration.algorithms import static_algorithms

from .common import interleaved_medians, machine, table

ALGOS = static_algorithms()
#: which models get the sensitivity ranking + auto_skip variants (cls already matches FP32 without it)
ORT_METHODS = ("MinMax", "Entropy", "Percentile")
SIZES = {  # evaluation lines / pages, calibration lines / pages, batch size (latency is per batch)
    "cls": {"n_eval": 200, "n_calib": 64, "batch": 32},
    "rec": {"n_eval": 96, "n_calib": 32, "batch": 8},
    "det": {"n_eval": 6, "n_calib": 4, "batch": 1},
}
#: QAT recipe per model: optimizer steps, Adam learning rate, rendered training lines / pages (batch as above)
QAT = {
    "cls": {"steps": 100, "lr": 3e-5, "n_train": 256},
    "rec": {"steps": 60, "lr": 1e-5, "n_train": 64},
    "det": {"steps": 300, "lr": 1e-4, "n_train": 32},
}
#: QAT on the reduce_range grid (QAT config weight_reduce_range): same training set as QAT, its own lr
QAT_RR = {"cls": {"steps": 100, "lr": 1e-4}}
SKIP_K = (1, 2, 4, 8)
SKIP_KINDS = ("rec", "det")


def _log(*a):
    print(*a, file=sys.stderr, flush=True)


def _limits(n):
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(n)
    except ImportError:
        import contextlib
        return contextlib.nullcontext()


def _data(kind, sizes):
    from refquant.realmodels import ppocr
    b = sizes["batch"]
    if kind == "det":
        ev = [{"x": x} for x in ppocr.det_set(sizes["n_eval"])]
        cal = [{"x": x} for x in ppocr.det_set(sizes["n_calib"], ppocr.CALIB_SEED)]
        return ev, cal, None
    make = ppocr.cls_set if kind == "cls" else ppocr.rec_set
    x, truth = make(sizes["n_eval"])
    xc, _ = make(sizes["n_calib"], ppocr.CALIB_SEED)
    return ppocr.batches(x, b), ppocr.batches(xc, b), truth


def _score(kind, outs, truth, ref):
    """Accuracy in percent (cls, rec) or mean IoU against the FP32 maps (det)."""
    from refquant.realmodels import ppocr
    if kind == "cls":
        return ppocr.cls_accuracy(np.concatenate(outs), truth)
    if kind == "rec":
        return ppocr.rec_exact_match(np.concatenate(outs), truth)
    return float(np.mean([ppocr.det_iou(o, r) for o, r in zip(outs, ref)]))


def _eval_kind(kind, sizes, algos, ort_methods, repeats, skip_k, tmp, qat_steps=None):
    from refquant.quant.sensitivity import auto_skip, quantized_ops, sensitivity
    from refquant.realmodels import ppocr
    model = ppocr.load(kind)
    ev, cal, truth = _data(kind, sizes)
    out = model.outputs[0]
    lat_feed = ev[0]

    def outs_of(m):
        return [m.run(f)[out] for f in ev]

    ref = outs_of(model)
    rows = []

    def add(name, runtime, outs, ms, **extra):
        rows.append({"variant": name, "runtime": runtime, "score": _score(kind, outs, truth, ref), "ms": ms,
                     **extra})
        _log(kind, json.dumps(rows[-1]))

    add("FP32", "refquant", ref, ppocr.timed(lambda: model.run(lat_feed), repeats))
    path = ppocr.model_path(kind)
    sess = ppocr.ort_session(path, 1)
    add("FP32", "onnxruntime", [sess.run(None, f)[0] for f in ev],
        ppocr.timed(lambda: sess.run(None, lat_feed), repeats))
    best = None
    for algo in algos:
        t0 = time.perf_counter()
        q, i8 = ppocr.quantize(model, cal, algo)
        t_q = time.perf_counter() - t0
        add(f"PTQ {algo}", "refquant fake-quant", outs_of(q), ppocr.timed(lambda: q.run(lat_feed), repeats),
            ptq_s=t_q)
        add(f"PTQ {algo}", "refquant INT8", outs_of(i8), ppocr.timed(lambda: i8.run(lat_feed), repeats))
        if best is None or rows[-1]["score"] > best[1]:
            best = (algo, rows[-1]["score"], q, i8)
    side = {"refquant FP32": lambda: model.run(lat_feed), "onnxruntime FP32": lambda: sess.run(None, lat_feed)}
    if best:  # the best algo once more with GEMM weights halved (AVX2's exact vpmaddubsw kernel)
        from refquant.deploy import convert_to_int8
        _, _, q, i8b = best
        i8r = convert_to_int8(q, reduce_range=True)
        add(f"PTQ {best[0]} reduce_range", "refquant INT8", outs_of(i8r),
            ppocr.timed(lambda: i8r.run(lat_feed), repeats))
        side[f"refquant INT8 ({best[0]})"] = lambda: i8b.run(lat_feed)
        side[f"refquant INT8 ({best[0]}, reduce_range)"] = lambda: i8r.run(lat_feed)
    result = {"kind": kind, "sizes": sizes, "n_quantized_ops": len(quantized_ops(model)), "rows": rows,
              "best_algo": best[0] if best else None}
    if skip_k and best:
        algo = best[0]
        t0 = time.perf_counter()
        ranking = sensitivity(model, cal[:2], algo=algo, mode="only")
        result["sensitivity_s"] = time.perf_counter() - t0
        result["sensitivity_top"] = ranking[:10]
        for k in skip_k:
            skip = auto_skip(model, cal, k, ranking=ranking)
            q, i8 = ppocr.quantize(model, cal, algo, skip_tensor_list=skip)
            name = f"PTQ {algo} + skip {k} worst"
            add(name, "refquant fake-quant", outs_of(q), ppocr.timed(lambda: q.run(lat_feed), repeats))
            add(name, "refquant INT8", outs_of(i8), ppocr.timed(lambda: i8.run(lat_feed), repeats), skip=skip)
    recipe = dict(QAT[kind])
    if qat_steps is not None:
        recipe["steps"] = min(recipe["steps"], int(qat_steps))
    if recipe["steps"] > 0 and best:
        algo = best[0]
        train = ppocr.train_feeds(kind, recipe["n_train"], sizes["batch"])
        q, i8 = ppocr.qat(model, cal, train, algo=algo, steps=recipe["steps"], lr=recipe["lr"])
        info = q.meta["quantization"]["qat"]
        result["qat"] = dict(recipe, algo=algo, seconds=info["seconds"], loss_start=float(np.mean(
            info["loss_history"][:10])), loss_end=float(np.mean(info["loss_history"][-10:])))
        name = f"QAT ({algo} init, {recipe['steps']} steps)"
        add(name, "refquant fake-quant", outs_of(q), ppocr.timed(lambda: q.run(lat_feed), repeats))
        add(name, "refquant INT8", outs_of(i8), ppocr.timed(lambda: i8.run(lat_feed), repeats),
            qat_s=info["seconds"])
        side["refquant INT8 (QAT)"] = lambda: i8.run(lat_feed)
        # the QAT model converted with reduce_range (trained on 8-bit weights), and a QAT run that trains the
        # halved grid itself (QAT config weight_reduce_range), for the models with a recipe in QAT_RR
        i8r_qat = convert_to_int8(q, reduce_range=True)
        add(f"{name}, converted with reduce_range", "refquant INT8", outs_of(i8r_qat),
            ppocr.timed(lambda: i8r_qat.run(lat_feed), repeats))
        if kind in QAT_RR:
            rr = dict(QAT_RR[kind], steps=min(QAT_RR[kind]["steps"], recipe["steps"]))
            q_rr, i8_rr = ppocr.qat(model, cal, train, algo=algo, steps=rr["steps"], lr=rr["lr"], reduce_range=True)
            add(f"QAT reduce_range ({algo} init, {rr['steps']} steps, lr {rr['lr']:g})", "refquant INT8",
                outs_of(i8_rr), ppocr.timed(lambda: i8_rr.run(lat_feed), repeats),
                qat_s=q_rr.meta["quantization"]["qat"]["seconds"])
            side["refquant INT8 (QAT reduce_range)"] = lambda: i8_rr.run(lat_feed)
    for method in ort_methods:
        qpath = os.path.join(tmp, f"{kind}.{method}.onnx")
        try:
            ppocr.ort_quantize(path, qpath, cal, method)
        except Exception as exc:  # noqa: BLE001 - report, do not stop the run
            rows.append({"variant": f"ORT quantize_static {method}", "runtime": "onnxruntime INT8",
                         "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        for prec in (False, True):
            s = ppocr.ort_session(qpath, 1, x64quantprecision=prec)
            add(f"ORT quantize_static {method}", "onnxruntime INT8" + (" x64quantprecision" if prec else ""),
                [s.run(None, f)[0] for f in ev], ppocr.timed(lambda: s.run(None, lat_feed), repeats))
            if not prec:
                side[f"onnxruntime INT8 ({method})"] = lambda s=s: s.run(None, lat_feed)
    # the latencies again, round-robin in one loop: on a noisy machine only these are comparable
    result["side_by_side_ms"] = {k: 1e3 * v for k, v in interleaved_medians(side, max(9, repeats)).items()}
    _log(kind, json.dumps(result["side_by_side_ms"]))
    return result


def run(kinds=("cls", "rec", "det"), algos=ALGOS, ort_methods=ORT_METHODS, repeats: int = 3,
        skip_k=SKIP_K, sizes=None, qat_steps=None) -> dict:
    """``qat_steps``: None runs the :data:`QAT` recipe, 0 leaves QAT out, N caps every model's steps at N."""
    import refquant
    from refquant import threads
    from refquant.realmodels import ppocr
    if not ppocr.available():
        return {"machine": machine(), "skipped": "PP-OCR models not installed (rapidocr-onnxruntime)"}
    sizes = {k: dict(SIZES[k], **((sizes or {}).get(k, {}))) for k in kinds}
    before = threads.get_num_threads()
    result = {"machine": machine(), "threads": 1, "models": []}
    refquant.set_num_threads(1)
    try:
        with _limits(1), tempfile.TemporaryDirectory() as tmp:
            for kind in kinds:
                t0 = time.perf_counter()
                r = _eval_kind(kind, sizes[kind], algos, ort_methods, repeats,
                               skip_k if kind in SKIP_KINDS else (), tmp, qat_steps)
                r["seconds"] = time.perf_counter() - t0
                result["models"].append(r)
    finally:
        refquant.set_num_threads(before)
    return result


def markdown(r: dict) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    parts = []
    metric = {"cls": "top-1 %", "rec": "exact match %", "det": "IoU vs FP32 (thr 0.3)"}
    for m in r["models"]:
        kind, s = m["kind"], m["sizes"]
        fp = next(x for x in m["rows"] if x["variant"] == "FP32" and x["runtime"] == "refquant")
        rows = []
        for x in m["rows"]:
            if "error" in x:
                rows.append([x["variant"], x["runtime"], "error", "-", "-", x["error"]])
                continue
            sc = f"{x['score']:.3f}" if kind == "det" else f"{x['score']:.2f}"
            rows.append([x["variant"], x["runtime"], sc, f"{x['ms']:.1f}", f"{fp['ms'] / x['ms']:.2f}x",
                         "skip: " + ", ".join(x["skip"]) if x.get("skip") else ""])
        head = (f"### {kind}: {s['n_eval']} evaluation {'pages' if kind == 'det' else 'lines'}, {s['n_calib']} "
                f"calibration, batch {s['batch']}, 1 thread ({m['n_quantized_ops']} quantizable ops; best refquant "
                f"INT8 algo: {m['best_algo']})")
        parts.append(head + "\n\n" + table(["variant", "runtime", metric[kind], "ms / batch",
                                            "speed vs refquant FP32", "note"], rows))
        if m.get("side_by_side_ms"):
            sbs = m["side_by_side_ms"]
            parts.append(f"Side by side ({kind}, one batch of {s['batch']}, 1 thread, round-robin median of 9)\n\n" +
                         table(list(sbs), [[f"{v:.1f} ms" for v in sbs.values()]]))
        if m.get("sensitivity_top"):
            parts.append(f"Sensitivity ({m['best_algo']}, one op quantized at a time, relative output error; "
                         f"{m['sensitivity_s']:.0f} s): " + ", ".join(f"{n} {v:.2e}"
                                                                   for n, v in m["sensitivity_top"]))
        if m.get("qat"):
            qa = m["qat"]
            parts.append(f"QAT ({kind}): {qa['steps']} Adam steps at lr {qa['lr']:g} (warmup, cosine) on "
                         f"{qa['n_train']} rendered training {'pages' if kind == 'det' else 'lines'}, from the "
                         f"{qa['algo']} PTQ thresholds (frozen), all {m['n_quantized_ops']} ops quantized, "
                         f"distillation loss {qa['loss_start']:.3g} -> {qa['loss_end']:.3g} (first / last 10 steps); "
                         f"{qa['seconds']:.0f} s including calibration")
    return "\n\n".join(parts)


if __name__ == "__main__":
    names = tuple(a for a in sys.argv[1:] if a in ("cls", "rec", "det"))
    qat = int(sys.argv[sys.argv.index("--qat-steps") + 1]) if "--qat-steps" in sys.argv else None
    res = run(kinds=names or ("cls", "rec", "det"), qat_steps=qat)
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(res, f, indent=1, default=str)
    print(markdown(res))
