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
    python -m benchmarks.bench_real sets            # only rec on the textsets evaluation sets
    python -m benchmarks.bench_real det_sets cls_sets   # det on the textsets page sets, cls on its line sets

``sets``: rec on the evaluation sets of :mod:`refquant.data.textsets` (another renderer, fonts and text than the
calibration-style lines above), per set, with the per-character confusions INT8 adds (:func:`_eval_textsets`).
``det_sets`` / ``cls_sets``: det on the textsets page sets (layouts, page sizes, font sizes, contrast, noise),
IoU against FP32, text lines found and IoU against the text boxes; cls on its line sets (every second line
rotated 180), accuracy and agreement with FP32 (:func:`_eval_sets`). ``REFQUANT_BENCH_QUICK=1`` runs these two
at tiny sizes.

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

from .common import blas_limits, interleaved_medians, machine, median_seconds, table

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


def _ms(fn, repeats):
    """Median milliseconds of ``fn()`` over ``repeats`` runs (one warm-up)."""
    return 1e3 * median_seconds(fn, repeats)


def _log(*a):
    print(*a, file=sys.stderr, flush=True)


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

    add("FP32", "refquant", ref, _ms(lambda: model.run(lat_feed), repeats))
    path = ppocr.model_path(kind)
    sess = ppocr.ort_session(path, 1)
    add("FP32", "onnxruntime", [sess.run(None, f)[0] for f in ev],
        _ms(lambda: sess.run(None, lat_feed), repeats))
    best = None
    for algo in algos:
        t0 = time.perf_counter()
        q, i8 = ppocr.quantize(model, cal, algo)
        t_q = time.perf_counter() - t0
        add(f"PTQ {algo}", "refquant fake-quant", outs_of(q), _ms(lambda: q.run(lat_feed), repeats),
            ptq_s=t_q)
        add(f"PTQ {algo}", "refquant INT8", outs_of(i8), _ms(lambda: i8.run(lat_feed), repeats))
        if best is None or rows[-1]["score"] > best[1]:
            best = (algo, rows[-1]["score"], q, i8)
    side = {"refquant FP32": lambda: model.run(lat_feed), "onnxruntime FP32": lambda: sess.run(None, lat_feed)}
    if best:  # the best algo once more with GEMM weights halved (AVX2's exact vpmaddubsw kernel)
        from refquant.deploy import convert_to_int8
        _, _, q, i8b = best
        i8r = convert_to_int8(q, reduce_range=True)
        add(f"PTQ {best[0]} reduce_range", "refquant INT8", outs_of(i8r),
            _ms(lambda: i8r.run(lat_feed), repeats))
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
            add(name, "refquant fake-quant", outs_of(q), _ms(lambda: q.run(lat_feed), repeats))
            add(name, "refquant INT8", outs_of(i8), _ms(lambda: i8.run(lat_feed), repeats), skip=skip)
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
        add(name, "refquant fake-quant", outs_of(q), _ms(lambda: q.run(lat_feed), repeats))
        add(name, "refquant INT8", outs_of(i8), _ms(lambda: i8.run(lat_feed), repeats),
            qat_s=info["seconds"])
        side["refquant INT8 (QAT)"] = lambda: i8.run(lat_feed)
        # the QAT model converted with reduce_range (trained on 8-bit weights), and a QAT run that trains the
        # halved grid itself (QAT config weight_reduce_range), for the models with a recipe in QAT_RR
        i8r_qat = convert_to_int8(q, reduce_range=True)
        add(f"{name}, converted with reduce_range", "refquant INT8", outs_of(i8r_qat),
            _ms(lambda: i8r_qat.run(lat_feed), repeats))
        if kind in QAT_RR:
            rr = dict(QAT_RR[kind], steps=min(QAT_RR[kind]["steps"], recipe["steps"]))
            q_rr, i8_rr = ppocr.qat(model, cal, train, algo=algo, steps=rr["steps"], lr=rr["lr"], reduce_range=True)
            add(f"QAT reduce_range ({algo} init, {rr['steps']} steps, lr {rr['lr']:g})", "refquant INT8",
                outs_of(i8_rr), _ms(lambda: i8_rr.run(lat_feed), repeats),
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
                [s.run(None, f)[0] for f in ev], _ms(lambda: s.run(None, lat_feed), repeats))
            if not prec:
                side[f"onnxruntime INT8 ({method})"] = lambda s=s: s.run(None, lat_feed)
    # the latencies again, round-robin in one loop: on a noisy machine only these are comparable
    result["side_by_side_ms"] = {k: 1e3 * v for k, v in interleaved_medians(side, max(9, repeats)).items()}
    _log(kind, json.dumps(result["side_by_side_ms"]))
    return result


def _ort_variants(kind, cal, ort_methods, prefix, add, variants, lat_feed):
    """ORT quantize_static MinMax and Percentile (``ort_methods[::2]``: Entropy equals MinMax here, see the
    Summary) calibrated on ``cal``, each added with ``add``; a failed quantization is a row with its error."""
    from refquant.realmodels import ppocr
    for method in ort_methods[::2]:
        qpath = f"{prefix}.{method}.onnx"
        try:
            ppocr.ort_quantize(ppocr.model_path(kind), qpath, cal, method)
        except Exception as exc:  # noqa: BLE001 - report, do not stop the run
            variants.append({"variant": f"ORT quantize_static {method}", "runtime": "onnxruntime INT8",
                             "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        s = ppocr.ort_session(qpath, 1)
        add(f"ORT quantize_static {method}", "onnxruntime INT8", lambda f, s=s: s.run(None, f)[0],
            lambda s=s: s.run(None, lat_feed))


#: rec on the evaluation sets of refquant.data.textsets: lines per set, calibration lines, batch (latency per batch);
#: QAT distils on 128 more lines of the calibration split for 100 steps, chosen on 120 other lines of that split
#: (never evaluated on): the recipe's INT8 decodes 9 of them unlike FP32, after 50 steps 3-4, after 100 steps 2
TEXTSETS = {"n_eval": 60, "n_calib": 32, "batch": 8, "n_train": 128, "qat_steps": 100}


def _eval_textsets(sizes, ort_methods, repeats, tmp):
    """PP-OCRv4 rec on every set of :mod:`refquant.data.textsets` (a second renderer, never used to calibrate):
    FP32, PTQ KL and hist, KL + auto_skip(2), smoothing + hist, the recipe (:func:`refquant.realmodels.ppocr.recipe`:
    smoothing + ``algo="auto"``, without and with up to 2 float ops), QAT distilled on ``n_train`` more lines of
    the calibration split and ORT's quantize_static, all calibrated on the textsets calibration split; per set
    the exact match, the exact match with spaces ignored, the agreement with FP32 and the character confusions
    the variant adds."""
    from refquant.data import textsets
    from refquant.quant.sensitivity import auto_skip, sensitivity
    from refquant.quant.smooth import smooth
    from refquant.realmodels import ppocr
    model = ppocr.load("rec")
    b = sizes["batch"]
    sets = {name: textsets.rec_set(name, sizes["n_eval"]) for name in textsets.SETS}
    xc, _ = textsets.calib_lines(sizes["n_calib"])
    cal = ppocr.batches(xc, b)
    lat_feed = {"x": sets["mixed"][0][:b]}
    ref = {name: ppocr.predict(model, ppocr.batches(x, b)) for name, (x, _) in sets.items()}
    variants, side, result = [], {}, {"sizes": sizes, "sets": {n: s.doc for n, s in textsets.SETS.items()}}

    def add(name, runtime, predict, latency, **extra):
        t0 = time.perf_counter()
        per_set = {}
        for sname, (x, texts) in sets.items():
            probs = ref[sname] if predict is None else np.concatenate([predict(f) for f in ppocr.batches(x, b)])
            r = ppocr.rec_report(probs, texts, ref[sname])
            per_set[sname] = {"exact": r["exact"], "exact_loose": r["exact_loose"], "agree": r["agree"],
                              "lines_lost": len(r["lines_lost"]),
                              "new_confusions": ppocr.format_confusions(r["new_confusions"], 6)}
        variants.append({"variant": name, "runtime": runtime, "sets": per_set, "ms": _ms(latency, repeats),
                         "eval_s": time.perf_counter() - t0, **extra})
        side[f"{runtime} {name}"] = latency
        _log("textsets", json.dumps(variants[-1]))

    add("FP32", "refquant", None, lambda: model.run(lat_feed))
    sess = ppocr.ort_session(ppocr.model_path("rec"), 1)
    add("FP32", "onnxruntime", lambda f: sess.run(None, f)[0], lambda: sess.run(None, lat_feed))
    t0 = time.perf_counter()
    _, kl = ppocr.quantize(model, cal, "KL")
    add("PTQ KL", "refquant INT8", lambda f: kl.run(f)[model.outputs[0]], lambda: kl.run(lat_feed),
        ptq_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    ranking = sensitivity(model, cal[:1], algo="KL")
    skip = auto_skip(model, cal, 2, ranking=ranking)
    _, kls = ppocr.quantize(model, cal, "KL", skip_tensor_list=skip)
    add("PTQ KL + auto_skip(2)", "refquant INT8", lambda f: kls.run(f)[model.outputs[0]],
        lambda: kls.run(lat_feed), skip=skip, ptq_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    _, hist = ppocr.quantize(model, cal, "hist")
    add("PTQ hist", "refquant INT8", lambda f: hist.run(f)[model.outputs[0]], lambda: hist.run(lat_feed),
        ptq_s=time.perf_counter() - t0)
    t0 = time.perf_counter()   # smoothing judged on the last calibration batch, as in the recipe
    smoothed, sm_info = smooth(model, cal[:-1], select_feeds=cal[-1:], quantizable_op_type=ppocr.QUANT_OPS)
    _, sh = ppocr.quantize(smoothed, cal, "hist")
    add("smooth + PTQ hist", "refquant INT8", lambda f: sh.run(f)[model.outputs[0]], lambda: sh.run(lat_feed),
        ptq_s=time.perf_counter() - t0, smoothed=len(sm_info["smoothed"]))
    for max_skip in (0, 2):
        t0 = time.perf_counter()
        qr, r8 = ppocr.recipe(model, cal, max_skip=max_skip)
        info = qr.meta["quantization"]["recipe"]
        add(f"recipe (ppocr.recipe, max_skip={max_skip})", "refquant INT8", lambda f, r8=r8: r8.run(f)[model.outputs[0]],
            lambda r8=r8: r8.run(lat_feed), ptq_s=time.perf_counter() - t0, skip=info["skip"],
            distance_by_k=info["distance_by_k"], counts=info["algo_counts"], smoothed=len(info["smoothed"]),
            distance_by_algo=info["distance_by_algo"], algo=info["algo"])
    t0 = time.perf_counter()   # distilled on the calibration split's next lines (the same renderer, other lines)
    xt, _ = textsets.calib_lines(sizes["n_train"], start=sizes["n_calib"])
    for init in ("KL", "recipe"):  # from KL's thresholds, and from the recipe's smoothed model and thresholds
        qq, q8 = ppocr.qat(model, cal, ppocr.batches(xt, b), algo=init, steps=sizes["qat_steps"], lr=QAT["rec"]["lr"])
        add(f"QAT ({init} init, {sizes['qat_steps']} steps)", "refquant INT8",
            lambda f, q8=q8: q8.run(f)[model.outputs[0]], lambda q8=q8: q8.run(lat_feed),
            ptq_s=time.perf_counter() - t0)
        t0 = time.perf_counter()
    _ort_variants("rec", cal, ort_methods, os.path.join(tmp, "rec.textsets"), add, variants, lat_feed)
    result["variants"] = variants
    result["side_by_side_ms"] = {k: 1e3 * v for k, v in interleaved_medians(side, max(9, repeats)).items()}
    return result


def _textsets_markdown(t: dict) -> str:
    s = t["sizes"]
    names = list(t["sets"])
    ok = [v for v in t["variants"] if "error" not in v]
    head = (f"### rec on the textsets evaluation sets: {s['n_eval']} lines each, {s['n_calib']} calibration lines "
            f"(textsets calibration split), batch {s['batch']}, 1 thread\n\nSets: " +
            "; ".join(f"`{n}` {d}" for n, d in t["sets"].items()))
    cell = "{exact:.1f} / {agree:.1f}"
    rows = [[v["variant"], v["runtime"]] + [cell.format(**v["sets"][n]) for n in names] +
            [f"{t['side_by_side_ms'].get(v['runtime'] + ' ' + v['variant'], v['ms']):.1f}"] for v in ok]
    rows += [[v["variant"], v["runtime"]] + ["error"] * len(names) + [v["error"]] for v in t["variants"]
             if "error" in v]
    part = [head, "Exact match % / % of lines decoded as FP32 decodes them; ms per batch of the `mixed` set, "
                  "round-robin median", table(["variant", "runtime"] + names + ["ms / batch"], rows)]
    conf = [[v["variant"], v["runtime"]] + [f"{v['sets'][n]['lines_lost']}: {v['sets'][n]['new_confusions']}"
                                             for n in names] for v in ok if v["variant"] != "FP32"]
    part += ["Lines FP32 reads right and the variant does not, and the character edits it adds to FP32's "
             "(truth -> read)", table(["variant", "runtime"] + names, conf)]
    for v in ok:
        if v.get("counts"):
            part.append(f"{v['variant']}: the algorithm chosen per quantized activation: " +
                        ", ".join(f"{a} {n}" for a, n in v["counts"].items() if n) + f" ({v['ptq_s']:.0f} s)")
        if v.get("smoothed") is not None:
            part.append(f"{v['variant']}: {v['smoothed']} layers smoothed" + (
                "; held-out relative output error by algorithm: " + ", ".join(
                    f"{a} {d:.4f}" for a, d in v["distance_by_algo"].items()) + f", kept {v['algo']}"
                if v.get("distance_by_algo") else ""))
        if v.get("distance_by_k") is not None:
            part.append(f"{v['variant']}: relative output error on the held-out calibration batch by number of "
                        f"float ops k: " + ", ".join(f"k={k} {d:.4f}" for k, d in v["distance_by_k"].items()) +
                        f"; kept float: {', '.join(v['skip']) or 'none'} ({v['ptq_s']:.0f} s)")
    loose = [[v["variant"], v["runtime"]] + [f"{v['sets'][n]['exact_loose']:.1f}" for n in names] for v in ok]
    part += ["Exact match % with spaces ignored and NFKC-normalized (full-width punctuation = ASCII)",
             table(["variant", "runtime"] + names, loose)]
    return "\n\n".join(part)


#: det and cls on the page / line sets of refquant.data.textsets: pages or lines per set, calibration, batch
SETS_SIZES = {"det_sets": {"n_eval": 16, "n_calib": 4, "batch": 1},
              "cls_sets": {"n_eval": 120, "n_calib": 64, "batch": 16}}
#: ``REFQUANT_BENCH_QUICK=1``: sizes that only show the det_sets / cls_sets sections run (numbers meaningless)
QUICK_SETS_SIZES = {"det_sets": {"n_eval": 1, "n_calib": 2, "batch": 1, "steps": 2, "n_train": 1},
                    "cls_sets": {"n_eval": 4, "n_calib": 8, "batch": 4, "steps": 2, "n_train": 4}}
#: det_sets: a text line counts as found when the map thresholded at 0.3 covers this share of its ink box (the
#: map is the shrunk core of each line: FP32 covers 0.30-0.46 of every line box of the page sets)
LINE_FOUND = 0.15


def _sets_sizes(section, override=None):
    quick = os.environ.get("REFQUANT_BENCH_QUICK") == "1"
    return dict((QUICK_SETS_SIZES if quick else SETS_SIZES)[section], **(override or {}))


def _det_scores(outs, refs, masks) -> dict:
    """det maps (1, 1, H, W) against FP32's and against the line masks of :func:`refquant.data.textsets.det_set`:
    mean IoU vs FP32, % of lines found (map > 0.3 on >= :data:`LINE_FOUND` of the line's box), IoU vs the boxes."""
    from refquant.realmodels import ppocr
    found = []
    for o, m in zip(outs, masks):
        hit = (np.asarray(o) > ppocr.DET_THRESH).reshape(m.shape)
        area = np.bincount(m.ravel())
        cover = np.bincount(m.ravel(), weights=hit.ravel(), minlength=len(area))[1:][area[1:] > 0]
        found += list(cover / area[1:][area[1:] > 0] >= LINE_FOUND)
    return {"iou_fp32": float(np.mean([ppocr.det_iou(o, r) for o, r in zip(outs, refs)])),
            "lines_found": 100.0 * float(np.mean(found)) if found else 100.0,
            "iou_boxes": float(np.mean([ppocr.det_iou(o, (m > 0).reshape(np.shape(o)).astype(np.float32))
                                        for o, m in zip(outs, masks)]))}


def _eval_sets(kind, sizes, algos, ort_methods, repeats, tmp):
    """det (``kind="det"``) on the page sets or cls on the line sets of :mod:`refquant.data.textsets` (the second
    renderer, never used to calibrate): FP32 (refquant, onnxruntime), refquant INT8 PTQ with each of ``algos``, KL +
    auto_skip(2), the recipe (:func:`refquant.realmodels.ppocr.recipe`, defaults), QAT from the recipe (:data:`QAT`'s
    steps and lr, distilled on the calibration split's next pages / lines) and ORT's quantize_static MinMax and
    Percentile, all calibrated on the textsets calibration split. Per set: det the mean IoU of the
    thresholded probability map against FP32's, the share of text lines found (:data:`LINE_FOUND`) and the IoU
    against the lines' box mask; cls the accuracy and the share of lines classified as FP32 classifies them."""
    from refquant.data import textsets
    from refquant.quant.sensitivity import auto_skip, sensitivity
    from refquant.realmodels import ppocr
    model = ppocr.load(kind)
    out, b = model.outputs[0], sizes["batch"]
    if kind == "det":
        sets = {}
        for name in textsets.PAGE_SETS:
            xs, masks = textsets.det_set(name, sizes["n_eval"], masks=True)
            sets[name] = ([{"x": x} for x in xs], masks)
        cal = [{"x": x} for x in textsets.det_calib_pages(sizes["n_calib"])]
        docs = {n: s.doc for n, s in textsets.PAGE_SETS.items()}
    else:
        sets = {}
        for name in textsets.SETS:
            x, labels = textsets.cls_set(name, sizes["n_eval"])
            sets[name] = (ppocr.batches(x, b), labels)
        cal = ppocr.batches(textsets.cls_calib_lines(sizes["n_calib"])[0], b)
        docs = {n: s.doc for n, s in textsets.SETS.items()}
    lat_feed = next(iter(sets.values()))[0][0]
    ref = {name: [model.run(f)[out] for f in feeds] for name, (feeds, _) in sets.items()}
    variants, side = [], {}
    result = {"kind": kind, "sizes": sizes, "sets": docs, "variants": variants}

    def scores(name, outs):
        truth = sets[name][1]
        if kind == "det":
            return _det_scores(outs, ref[name], truth)
        p, r = np.concatenate(outs), np.concatenate(ref[name])
        return {"accuracy": ppocr.cls_accuracy(p, truth),
                "agree": 100.0 * float(np.mean(p.argmax(1) == r.argmax(1)))}

    def add(name, runtime, predict, latency, **extra):
        t0 = time.perf_counter()
        per_set = {s: scores(s, ref[s] if predict is None else [predict(f) for f in feeds])
                   for s, (feeds, _) in sets.items()}
        variants.append({"variant": name, "runtime": runtime, "sets": per_set, "ms": _ms(latency, repeats),
                         "eval_s": time.perf_counter() - t0, **extra})
        side[f"{runtime} {name}"] = latency
        _log(f"{kind}_sets", json.dumps(variants[-1]))

    def add_int8(name, m, **extra):
        add(name, "refquant INT8", lambda f: m.run(f)[out], lambda: m.run(lat_feed), **extra)

    add("FP32", "refquant", None, lambda: model.run(lat_feed))
    sess = ppocr.ort_session(ppocr.model_path(kind), 1)
    add("FP32", "onnxruntime", lambda f: sess.run(None, f)[0], lambda: sess.run(None, lat_feed))
    for algo in algos:
        t0 = time.perf_counter()
        _, i8 = ppocr.quantize(model, cal, algo)
        add_int8(f"PTQ {algo}", i8, ptq_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    skip = auto_skip(model, cal, 2, ranking=sensitivity(model, cal[:1], algo="KL"))
    _, i8 = ppocr.quantize(model, cal, "KL", skip_tensor_list=skip)
    add_int8("PTQ KL + auto_skip(2)", i8, skip=skip, ptq_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    q, i8 = ppocr.recipe(model, cal)
    info = q.meta["quantization"].get("recipe", {})
    add_int8("recipe (ppocr.recipe)", i8, ptq_s=time.perf_counter() - t0, skip=list(info.get("skip", [])),
             recipe={k: v for k, v in info.items() if k != "ranking"})
    qa = dict(QAT[kind], **{k: sizes[k] for k in ("steps", "n_train") if k in sizes})
    if qa["steps"]:  # distilled on the calibration split's next pages / lines, from the recipe's model and thresholds
        t0 = time.perf_counter()
        train = ([{"x": x} for x in textsets.det_calib_pages(qa["n_train"], start=sizes["n_calib"])]
                 if kind == "det" else
                 ppocr.batches(textsets.cls_calib_lines(qa["n_train"], start=sizes["n_calib"])[0], b))
        _, i8 = ppocr.qat(model, cal, train, algo="recipe", steps=qa["steps"], lr=qa["lr"])
        add_int8(f"QAT (recipe init, {qa['steps']} steps)", i8, ptq_s=time.perf_counter() - t0, n_train=qa["n_train"])
    _ort_variants(kind, cal, ort_methods, os.path.join(tmp, f"{kind}.sets"), add, variants, lat_feed)
    result["latency_input"] = list(lat_feed["x"].shape)
    result["side_by_side_ms"] = {k: 1e3 * v for k, v in interleaved_medians(side, max(9, repeats)).items()}
    return result


def _sets_markdown(t: dict) -> str:
    """The det_sets / cls_sets tables: per set, det IoU vs FP32 / lines found (and the box IoU), cls accuracy /
    agreement with FP32."""
    kind, s = t["kind"], t["sizes"]
    names = list(t["sets"])
    if kind == "det":
        what = (f"### det on the textsets page sets: {s['n_eval']} pages each, {s['n_calib']} calibration pages "
                f"(textsets calibration split), 1 thread")
        cell, legend = "{iou_fp32:.3f} / {lines_found:.1f}", (
            "Mean IoU of the probability map thresholded at 0.3 against FP32's / % of the text lines found (the "
            f"map covers >= {LINE_FOUND:g} of the line's ink box)")
        unit = "page"
    else:
        what = (f"### cls on the textsets line sets: {s['n_eval']} lines each (every second one rotated 180), "
                f"{s['n_calib']} calibration lines (textsets calibration split), batch {s['batch']}, 1 thread")
        cell, legend, unit = "{accuracy:.1f} / {agree:.1f}", "Accuracy % / % of lines classified as FP32 " \
                                                                   "classifies them", "batch"
    shape = "x".join(map(str, t.get("latency_input", [])))
    ok = [v for v in t["variants"] if "error" not in v]

    def cells(v, fmt):
        mean = {k: float(np.mean([v["sets"][n][k] for n in names])) for k in v["sets"][names[0]]}
        return [fmt.format(**v["sets"][n]) for n in names] + [fmt.format(**mean)]
    rows = [[v["variant"], v["runtime"]] + cells(v, cell) +
            [f"{t['side_by_side_ms'].get(v['runtime'] + ' ' + v['variant'], v['ms']):.1f}",
             ", ".join(v.get("skip") or [])] for v in ok]
    rows += [[v["variant"], v["runtime"]] + ["error"] * (len(names) + 1) + ["-", v["error"]]
             for v in t["variants"] if "error" in v]
    parts = [what + "\n\nSets: " + "; ".join(f"`{n}` {d}" for n, d in t["sets"].items()),
             f"{legend}; ms per {unit} ({shape}), round-robin median",
             table(["variant", "runtime"] + names + ["mean", f"ms / {unit}", "kept float"], rows)]
    if kind == "det":
        parts += ["IoU of the thresholded map against the lines' box mask (the map covers the shrunk core of "
                  "each line, so a right map scores about FP32's, not 1)",
                  table(["variant", "runtime"] + names + ["mean"],
                        [[v["variant"], v["runtime"]] + cells(v, "{iou_boxes:.3f}") for v in ok])]
    for v in ok:
        if v.get("recipe"):
            r = v["recipe"]
            by_k = ", ".join(f"k={k} {d:.4f}" for k, d in r.get("distance_by_k", {}).items())
            by_algo = ", ".join(f"{a} {d:.4f}" for a, d in r.get("distance_by_algo", {}).items())
            parts.append(f"{v['variant']}: {len(r.get('smoothed', {}))} layers smoothed; held-out distance by "
                         f"algorithm: {by_algo or '-'}, kept {r.get('algo', '-')}; by number of float ops: "
                         f"{by_k or '-'}; kept float: {', '.join(v['skip']) or 'none'} ({v['ptq_s']:.0f} s)")
    return "\n\n".join(parts)


def run(kinds=("cls", "rec", "det", "sets", "det_sets", "cls_sets"), algos=ALGOS, ort_methods=ORT_METHODS,
        repeats: int = 3, skip_k=SKIP_K, sizes=None, qat_steps=None) -> dict:
    """``qat_steps``: None runs the :data:`QAT` recipe, 0 leaves QAT out, N caps every model's steps at N."""
    import refquant
    from refquant import threads
    from refquant.realmodels import ppocr
    if not ppocr.available():
        return {"machine": machine(), "skipped": "PP-OCR models not installed (rapidocr-onnxruntime)"}
    sizes = {k: dict(SIZES[k], **((sizes or {}).get(k, {}))) if k in SIZES else (sizes or {}).get(k, {})
             for k in kinds}
    before = threads.get_num_threads()
    result = {"machine": machine(), "threads": 1, "models": []}
    refquant.set_num_threads(1)
    try:
        with blas_limits(1), tempfile.TemporaryDirectory() as tmp:
            for kind in kinds:
                t0 = time.perf_counter()
                if kind == "sets":
                    result["textsets"] = _eval_textsets(dict(TEXTSETS, **((sizes or {}).get("sets", {}))),
                                                        ort_methods, repeats, tmp)
                    result["textsets"]["seconds"] = time.perf_counter() - t0
                    continue
                if kind in SETS_SIZES:
                    result[kind] = _eval_sets(kind[:3], _sets_sizes(kind, sizes.get(kind)), algos, ort_methods,
                                              repeats, tmp)
                    result[kind]["seconds"] = time.perf_counter() - t0
                    continue
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
    if r.get("textsets"):
        parts.append(_textsets_markdown(r["textsets"]))
    parts += [_sets_markdown(r[k]) for k in SETS_SIZES if r.get(k)]
    return "\n\n".join(parts)


if __name__ == "__main__":
    sections = ("cls", "rec", "det", "sets", "det_sets", "cls_sets")
    names = tuple(a for a in sys.argv[1:] if a in sections)
    qat = int(sys.argv[sys.argv.index("--qat-steps") + 1]) if "--qat-steps" in sys.argv else None
    res = run(kinds=names or sections, qat_steps=qat)
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(res, f, indent=1, default=str)
    print(markdown(res))
