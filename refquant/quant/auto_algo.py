"""Per-tensor choice of the calibration algorithm (``algo="auto"``): each activation threshold is the candidate
algorithm's threshold that minimizes the error of the layers reading that tensor (docs/real_models.md).

Why: no single algorithm is best for every tensor of a model (a stem conv's input wants its true range, a
post-activation tensor with a long tail wants a clipped one), yet static PTQ applies one algorithm to all.

How, all on the calibration data:

1. Every candidate algorithm (default: all of :func:`refquant.calibration.algorithms.static_algorithms`)
   calibrates on the calibration batches (:func:`refquant.calibration.calibrate`, the FP32 model re-run for
   each pass: recording every activation of a large model at once does not fit in memory).
2. ``quant_post_static`` builds one fake-quant model per candidate from its calibration.
3. On ``select_feeds`` (default: the first calibration batch) the FP32 model records the quantized ops'
   inputs and outputs. For each
   quantized op and each candidate, the op runs alone in that candidate's quantized form (its quant-dequant
   input, its frozen quantized weight) on the FP32 inputs, and its relative output error
   ``sum((y_a - y)^2) / sum(y^2)`` is recorded.
4. Each activation tensor takes the threshold of the candidate whose summed error over the ops reading it is the
   least (the other calibrated tensors, outputs whose thresholds are only recorded, keep the first candidate's);
   ``quant_post_static`` then quantizes with those thresholds.

The per-tensor observers of the algorithm registry see one tensor, not the layer that reads it, so the choice is
a step after calibration rather than an :class:`~refquant.calibration.algorithms.AlgorithmSpec`.
"""
from __future__ import annotations

import time
from typing import Iterable, Optional, Sequence

import numpy as np

from ..calibration import calibrate
from ..calibration.algorithms import static_algorithms
from ..calibration.collect import Calibration
from ..errors import ArgumentError
from ..executor import run
from ..ops.registry import OpContext, get_op
from .post_static import _collect_target_varnames, quant_post_static


def _local_output(q, op, env: dict) -> np.ndarray:
    """``op`` of the quantized model ``q`` run on the FP32 tensors ``env``: inputs the FP32 model also has come
    from ``env``, parameters from ``q``, and the rest (quant-dequant outputs) from their producers in ``q``."""
    producer = {n: o for o in q.ops for n in o.outputs if n}
    cache: dict = {}

    def value(name):
        if not name:
            return None
        if name in q.params:
            return q.params[name]
        if name in env:
            return env[name]
        if name not in cache:
            p = producer[name]
            res = get_op(p.type, p.name).forward(OpContext(), p.attrs, *[value(n) for n in p.inputs])
            for n, v in zip(p.outputs, res if isinstance(res, tuple) else (res,)):
                cache[n] = v
        return cache[name]

    res = get_op(op.type, op.name).forward(OpContext(), op.attrs, *[value(n) for n in op.inputs])
    return res[0] if isinstance(res, tuple) else res


def _rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.sum((np.asarray(y, np.float64) - ref) ** 2) / max(float(np.sum(ref * ref)), 1e-30))


def quant_post_auto(model, calib_feeds: Sequence[dict], *, candidates: Optional[Iterable[str]] = None,
                    select_feeds: Optional[Sequence[dict]] = None,
                    quantizable_op_type: Iterable[str] = ("conv2d", "depthwise_conv2d", "mul"),
                    hist_percent: float = 0.99999, **ptq_kwargs):
    """Static PTQ with the activation algorithm chosen per tensor (module docstring); returns the quantized model.

    ``candidates``: the algorithms to choose from (default every static one). ``select_feeds``: the batches the
    layer errors are measured on (default ``calib_feeds[:1]``; a held-out split of the calibration data works
    too). ``ptq_kwargs`` go to ``quant_post_static`` (not ``algo``, ``calibration`` or ``data_loader``).
    ``meta["quantization"]["auto"]``: ``{"choice": {tensor: algo}, "errors": {tensor: {algo: error}},
    "counts": {algo: tensors}, "seconds": s}``; the ops' ``quantization_type`` is ``post_auto``."""
    cal, info = auto_calibration(model, calib_feeds, candidates=candidates, select_feeds=select_feeds,
                                 quantizable_op_type=quantizable_op_type, hist_percent=hist_percent, **ptq_kwargs)
    return quantize_with(model, cal, info, quantizable_op_type=quantizable_op_type, hist_percent=hist_percent,
                         **ptq_kwargs)


def quantize_with(model, cal: Calibration, info: dict, **ptq_kwargs):
    """``quant_post_static`` with the thresholds of :func:`auto_calibration` (``ptq_kwargs``: e.g. a
    ``skip_tensor_list``; the same op types as the calibration)."""
    q = quant_post_static(model, None, algo=cal.algo, calibration=cal, **ptq_kwargs)
    for op in q.ops:
        if "quantization_type" in op.attrs:
            op.attrs["quantization_type"] = "post_auto"
    q.meta["quantization"]["algo"] = "auto"
    q.meta["quantization"]["auto"] = info
    return q


def auto_calibration(model, calib_feeds: Sequence[dict], *, candidates: Optional[Iterable[str]] = None,
                     select_feeds: Optional[Sequence[dict]] = None,
                     quantizable_op_type: Iterable[str] = ("conv2d", "depthwise_conv2d", "mul"),
                     hist_percent: float = 0.99999, per_candidate: Optional[dict] = None,
                     **ptq_kwargs) -> tuple[Calibration, dict]:
    """Steps 1-4 of the module docstring: ``(calibration, info)``, the chosen thresholds as a
    :class:`Calibration` (labelled with the first candidate's name, which ``quant_post_static`` is given with it;
    :func:`quantize_with` does that) and the ``meta["quantization"]["auto"]`` record. ``per_candidate``: a dict
    that receives ``{algo: (calibration, fake-quant model)}`` of steps 1-2, for a caller that also compares the candidates whole
    (:func:`refquant.quant.recipe.quant_post_recipe`)."""
    t0 = time.perf_counter()
    calib_feeds = list(calib_feeds)
    if not calib_feeds:
        raise ArgumentError("quant_post_auto: calib_feeds is empty")
    candidates = tuple(static_algorithms() if candidates is None else candidates)
    unknown = sorted(set(candidates) - set(static_algorithms()))
    if unknown or not candidates:
        raise ArgumentError(f"quant_post_auto: candidates must be among {list(static_algorithms())}, got "
                            f"{list(candidates)}")
    fixed = sorted({"algo", "calibration", "data_loader"} & set(ptq_kwargs))
    if fixed:
        raise ArgumentError(f"quant_post_auto: {fixed} are set by quant_post_auto itself")
    ops_t = tuple(quantizable_op_type)
    skip = ptq_kwargs.get("skip_tensor_list")
    quant_ops, _, acts = _collect_target_varnames(model, ops_t, ptq_kwargs.get("is_full_quantize", False), skip)
    def recorded():                                                                                  # 1
        return (run(model, f, outputs=acts) for f in calib_feeds)

    bits = ptq_kwargs.get("activation_bits", 8)
    cals = {a: calibrate(recorded, a, bits=bits, hist_percent=hist_percent,
                         onnx_format=ptq_kwargs.get("onnx_format", False), producers=model.origins())
            for a in candidates}
    qs = {a: quant_post_static(model, None, algo=a, calibration=cals[a], quantizable_op_type=ops_t,    # 2
                               hist_percent=hist_percent, **ptq_kwargs) for a in candidates}
    if per_candidate is not None:
        per_candidate.update({a: (cals[a], qs[a]) for a in candidates})
    errors: dict = {x: {a: 0.0 for a in candidates} for _i, _w, xs in quant_ops for x in xs}      # 3
    needed = sorted({n for i, _w, _xs in quant_ops for n in model.ops[i].inputs if n and n not in model.params}
                    | {model.ops[i].outputs[0] for i, _w, _xs in quant_ops})
    for feed in (calib_feeds[:1] if select_feeds is None else list(select_feeds)):
        env = run(model, feed, outputs=needed)
        for i, _w, xs in quant_ops:
            name, ref = model.ops[i].name, env[model.ops[i].outputs[0]]
            for a, q in qs.items():
                op = next(o for o in q.ops if o.name == name)
                err = _rel_err(_local_output(q, op, env), ref)
                for x in xs:
                    errors[x][a] += err
        del env
    choice = {x: min(candidates, key=lambda a: (errs[a], candidates.index(a))) for x, errs in errors.items()}  # 4
    base = cals[candidates[0]]
    picked = {x: cals[choice.get(x, candidates[0])].thresholds.get(x) for x in acts}
    chosen = Calibration(algo=candidates[0], thresholds={x: t for x, t in picked.items() if t is not None},
                         zero_size=set(base.zero_size))
    counts = {a: sum(c == a for c in choice.values()) for a in candidates}
    return chosen, {"candidates": list(candidates), "choice": choice, "errors": errors, "counts": counts,
                    "seconds": time.perf_counter() - t0}
