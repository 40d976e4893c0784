"""A static PTQ recipe chosen from the calibration data alone (``quant_post_recipe``), for any model.

Why: one calibration algorithm for every tensor, judged on data like the calibration data, can look lossless and
still lose accuracy on inputs it has not seen (docs/real_models.md measures it on PP-OCR rec). The recipe makes
every choice on the calibration batches, holding a split of them out to judge the choices:

1. **Split**: the last ``holdout`` batches (default a quarter, at least one) are held out; the rest calibrate.
2. **Smooth** (:func:`refquant.quant.smooth.smooth`): channel outliers of each layer's input move into its
   weights, per layer only where the held-out batches say the error drops: by default (``smooth_judge="model"``)
   the model's output error with that layer alone quantized, not the layer's own error, which can favour a
   smoothing the layers after it do not forgive.
3. **Thresholds**: every calibration algorithm calibrates; the model quantized with each one, and with
   ``algo="auto"`` (:func:`refquant.quant.auto_algo.auto_calibration`: per tensor, the algorithm whose threshold
   gives the least layer output error on the held-out batches), is run on the held-out batches, and the one of
   least ``distance`` to the FP32 output is kept. (A per-tensor choice by layer error can lose to one algorithm
   for all tensors: the layer error favours clipping that the layers after it do not forgive.)
4. **Float ops** (optional, ``max_skip > 0``): the ops ranked by :func:`refquant.quant.sensitivity.sensitivity`
   (one op quantized at a time, KL thresholds from the first calibration batch, output error on the held-out
   batches); the smallest ``k <= max_skip`` whose
   ``distance(y_quantized, y_fp32)`` on the held-out batches is ``<= budget`` keeps the k worst ops float, or
   else the k of least distance.
5. **Refit** (``refit=True``): the kept algorithm (for ``auto``: each candidate it picked, for the tensors it picked
   it for) recalibrates on all the batches, held-out ones included. Thresholds from fewer lines can miss the
   range of lines they have not seen (on PP-OCR rec the hist thresholds of 24 lines lose 18 of 120 unseen lines,
   those of 32 lines 5); the held-out batches judged the choice, and then serve as calibration data too.

``meta["quantization"]["recipe"]`` records every choice (smoothed layers and alphas, the distance of every
algorithm and of ``auto``, the one kept, the distance of every k tried, the ops kept float).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .. import _args
from ..errors import ArgumentError
from ..graph import Model
from .auto_algo import auto_calibration, quantize_with
from ..calibration.collect import Calibration
from .post_static import calibrate_model, quant_post_static
from .sensitivity import DEFAULT_OPS, _outputs, auto_skip, output_error, sensitivity
from .smooth import smooth as smooth_model


#: The ``quant_post_static`` keywords that change a calibration (the refit passes them on).
_CALIBRATE_KWARGS = ("hist_percent", "onnx_format", "is_full_quantize")


def _output(model: Model, feeds) -> np.ndarray:
    """The model's first output over ``feeds``, concatenated (what ``distance`` compares)."""
    return np.concatenate(_outputs(model, feeds))


def quant_post_recipe(model: Model, calib_feeds: Sequence[dict], *, holdout: Optional[int] = None,
                      smooth: bool = True, smooth_judge: str = "model", max_skip: int = 0, budget: float = 0.0,
                      distance: Optional[Callable[[np.ndarray, np.ndarray], float]] = None,
                      candidates: Optional[Iterable[str]] = None,
                      quantizable_op_type: Iterable[str] = DEFAULT_OPS, with_float: bool = False, refit: bool = True,
                      **ptq_kwargs):
    """The fake-quant model of the recipe (module docstring); ``convert_to_int8`` deploys it. ``with_float``:
    return ``(fake_quant, smoothed_fp32)``, the float model it quantizes (QAT starts from both).

    ``holdout``: batches held out (default ``max(1, len(calib_feeds) // 4)``; at least two batches are needed).
    ``distance(y, y_fp32) -> float`` on the model's first output over the held-out batches: default the relative
    output error. ``ptq_kwargs`` go to ``quant_post_static`` (not ``algo`` / ``calibration`` / ``skip_tensor_list``).
    """
    t0 = time.perf_counter()
    max_skip = _args.integer("quant_post_recipe", "max_skip", max_skip, 0)
    feeds = list(calib_feeds)
    n_hold = max(1, len(feeds) // 4) if holdout is None else int(holdout)
    if len(feeds) < 2 or not 1 <= n_hold < len(feeds):
        raise ArgumentError(f"quant_post_recipe: needs at least two calibration batches and 1 <= holdout < "
                            f"{len(feeds)} (got {len(feeds)} batches, holdout {n_hold})")
    fixed = sorted({"algo", "calibration", "skip_tensor_list", "data_loader"} & set(ptq_kwargs))
    if fixed:
        raise ArgumentError(f"quant_post_recipe: {fixed} are chosen by the recipe")
    cal_feeds, hold = feeds[:-n_hold], feeds[-n_hold:]
    ops = tuple(quantizable_op_type)
    record: dict = {"holdout_batches": n_hold, "calibration_batches": len(cal_feeds), "smoothed": {},
                    "smooth_judge": smooth_judge if smooth else None}
    base = model
    if smooth:                                                                                    # 2
        base, info = smooth_model(model, cal_feeds, select_feeds=hold, quantizable_op_type=ops,
                                  bits=ptq_kwargs.get("activation_bits", 8), judge=smooth_judge)
        record["smoothed"] = info["smoothed"]
    whole: dict = {}
    cal, auto = auto_calibration(base, cal_feeds, candidates=candidates, select_feeds=hold,      # 3
                                 quantizable_op_type=ops, per_candidate=whole, **ptq_kwargs)
    ref = _output(model, hold)
    dist = distance or (lambda y, r: output_error([r], [y]))
    models = {a: q for a, (_c, q) in whole.items()}
    models["auto"] = quantize_with(base, cal, auto, quantizable_op_type=ops, **ptq_kwargs)
    scores = {a: float(dist(_output(q, hold), ref)) for a, q in models.items()}
    algo = min(scores, key=lambda a: (scores[a], a != "auto"))

    def quantize(skip, c):
        if algo == "auto":
            return quantize_with(base, c, auto, quantizable_op_type=ops, skip_tensor_list=skip, **ptq_kwargs)
        return quant_post_static(base, None, algo=algo, calibration=c, quantizable_op_type=ops,
                                 skip_tensor_list=skip, **ptq_kwargs)

    chosen = cal if algo == "auto" else whole[algo][0]
    record.update({"algo": algo, "distance_by_algo": scores,
                   "algo_counts": auto["counts"] if algo == "auto" else {algo: len(whole[algo][0].thresholds)}})
    tried, best, ranking = {}, None, []
    if max_skip > 0:                                                                              # 4
        ranking = sensitivity(base, cal_feeds[:1], algo="KL", eval_feeds=hold, quantizable_op_type=ops)
    for k in range(max_skip + 1):
        skip = auto_skip(base, cal_feeds, k, ranking=ranking, quantizable_op_type=ops) if k else []
        q = quantize(skip, chosen) if k else models[algo]                  # k = 0: the candidate scored above
        tried[k] = float(dist(_output(q, hold), ref)) if k else scores[algo]
        if best is None or tried[k] < best[0] or tried[k] <= budget:
            best = (tried[k], k, q, skip)
        if tried[k] <= budget:
            break
    _, k, q, skip = best
    if refit:                                                                                     # 5
        used = sorted(set(auto["choice"].values()) | {cal.algo}) if algo == "auto" else [algo]
        kwargs = {kw: ptq_kwargs[kw] for kw in _CALIBRATE_KWARGS if kw in ptq_kwargs}
        full = {a: calibrate_model(base, feeds, algo=a, quantizable_op_type=ops,
                                   bits=ptq_kwargs.get("activation_bits", 8), **kwargs) for a in used}
        if algo == "auto":
            pick = {x: full[auto["choice"].get(x, cal.algo)] for x in cal.thresholds}
            q = quantize(skip, Calibration(algo=cal.algo, zero_size=set(full[cal.algo].zero_size),
                                           thresholds={x: c.thresholds[x] for x, c in pick.items()}))
        else:
            q = quantize(skip, full[algo])
    record.update({"refit": bool(refit), "distance_by_k": tried, "k": k, "skip": list(skip), "budget": budget,
                   "ranking": ranking[:10], "seconds": round(time.perf_counter() - t0, 1)})
    q.meta["quantization"]["recipe"] = record
    return (q, base) if with_float else q
