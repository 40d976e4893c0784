"""Per-layer quantization sensitivity and an automatic ``skip_tensor_list`` (docs/real_models.md).

Why: a model whose accuracy drops under static PTQ usually owes most of the drop to a few layers. Quantizing one
layer at a time (``mode="only"``) or all but one (``mode="all_but"``) and measuring the damage ranks the layers;
keeping the k worst in float (:func:`auto_skip`) often recovers the accuracy at little cost in speed.

How: :func:`quantized_ops` lists the ops ``quant_post_static`` would quantize, each with its weight parameter.
``skip_tensor_list`` keeps in float every op reading a listed tensor, and weights are not shared between ops, so
listing the *weights* of the other ops quantizes exactly one op (an activation name could be read by several).
The activations are calibrated once (:func:`refquant.quant.calibrate_model`) and reused for every variant.

Metric: ``eval_fn(qmodel) -> float`` (a loss: higher is worse, e.g. 100 - accuracy) or, without it, the
relative output error ``sum((y_q - y)^2) / sum(y^2)`` of the model's first output over ``eval_feeds``
(default: the calibration feeds) against the FP32 model.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..graph import Model
from .. import _args
from .post_static import _collect_target_varnames, calibrate_model, check_args, quant_post_static

DEFAULT_OPS = ("conv2d", "depthwise_conv2d", "mul", "matmul")


#: The quant_post_static arguments that also shape the calibration (sensitivity calibrates once, as PTQ would).
_CALIBRATION_ARGS = ("batch_nums", "hist_percent", "onnx_format", "is_full_quantize")


def _feed_list(who: str, name: str, feeds) -> list:
    """A non-empty list of feed dicts."""
    if isinstance(feeds, Mapping) or not isinstance(feeds, Iterable):
        raise ArgumentTypeError(f"{who}: {name} must be a list of feed dicts, got {type(feeds).__name__}")
    feeds = list(feeds)
    if not feeds:
        raise ArgumentError(f"{who}: {name} is empty")
    bad = [i for i, f in enumerate(feeds) if not isinstance(f, Mapping)]
    if bad:
        raise ArgumentTypeError(f"{who}: {name}[{bad[0]}] is a {type(feeds[bad[0]]).__name__}, not a feed dict")
    return feeds


def quantized_ops(model: Model, quantizable_op_type: Iterable[str] = DEFAULT_OPS) -> list[tuple[str, str]]:
    """``[(op name, weight name)]`` of the ops static PTQ quantizes, in graph order."""
    quant_ops, _, _ = _collect_target_varnames(model, tuple(quantizable_op_type), False, None)
    return [(model.ops[i].name, w) for i, w, _ in quant_ops]


def output_error(ref: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """Relative squared error ``sum((test - ref)^2) / sum(ref^2)`` over all batches (0 = identical)."""
    num = sum(float(np.sum((np.asarray(t, np.float64) - r) ** 2)) for r, t in zip(ref, test))
    den = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in ref)
    return num / max(den, 1e-30)


def _outputs(model: Model, feeds) -> list[np.ndarray]:
    out = model.outputs[0]
    return [model.run(f)[out] for f in feeds]


def sweep_plan(who: str, model: Model, algo: str, mode: str, quantizable_op_type, eval_fn, ptq_kwargs: dict,
               set_here: Iterable[str] = ()) -> tuple[dict, list, list, dict]:
    """Check a sensitivity sweep's arguments before any work; ``(checked quant_post_static arguments, the quantized
    ops [(name, weight)], the skip_tensor_list of every variant to evaluate (the fully quantized model first when
    mode="all_but"), the quant_post_static keywords every variant shares)``."""
    _args.choice(who, "mode", mode, ("only", "all_but"))
    if eval_fn is not None and not callable(eval_fn):
        raise ArgumentTypeError(f"{who}: eval_fn must be a function qmodel -> loss, got {type(eval_fn).__name__}")
    fixed = sorted({"calibration", "skip_tensor_list", "data_loader", "model", *set_here} & set(ptq_kwargs))
    if fixed:
        raise ArgumentTypeError(f"{who}: {fixed} are set by sensitivity itself")
    unknown = sorted(set(ptq_kwargs) - set(inspect.signature(quant_post_static).parameters))
    if unknown:
        raise ArgumentTypeError(f"{who}: unexpected keyword argument(s) {unknown} (not quant_post_static's)")
    a = check_args(who, model=model, algo=algo, quantizable_op_type=quantizable_op_type, **ptq_kwargs)
    if a.get("weight_bits", 8) != a.get("activation_bits", 8):
        raise ArgumentError(f"{who}: Paddle requires activation_bits == weight_bits")
    if a.get("round_type") == "adaround" and a.get("adaround_mode", "paper") == "paper":
        raise ArgumentError(f"{who}: round_type='adaround' (adaround_mode 'paper') needs the data_loader, which "
                            "the per-layer variants do not get")
    ops = quantized_ops(model, quantizable_op_type)
    weights = [w for _, w in ops]
    skips = ([None] if mode == "all_but" else []) + \
        [[v for v in weights if v != w] if mode == "only" else [w] for _, w in ops]
    return a, ops, skips, dict(algo=algo, quantizable_op_type=a["quantizable_op_type"], **ptq_kwargs)


def ranking(ops: list, metrics: list, mode: str) -> list[tuple[str, float]]:
    """``[(op name, score)]``, worst first, from the metric of every :func:`sweep_plan` variant."""
    if mode == "all_but":
        base, metrics = metrics[0], metrics[1:]
        scores = [(name, base - m) for (name, _), m in zip(ops, metrics)]
    else:
        scores = [(name, m) for (name, _), m in zip(ops, metrics)]
    return sorted(scores, key=lambda s: -s[1])


def sensitivity(model: Model, calib_feeds, eval_fn: Optional[Callable[[Model], float]] = None, *,
                eval_feeds=None, algo: str = "abs_max", mode: str = "only",
                quantizable_op_type: Iterable[str] = DEFAULT_OPS, **ptq_kwargs) -> list[tuple[str, float]]:
    """Rank the quantizable ops of ``model`` by how much quantizing them hurts; worst first.

    ``mode="only"``: the metric of the model with only that op quantized (FP32 elsewhere).
    ``mode="all_but"``: metric(all quantized) - metric(all but that op quantized), the damage that op adds on
    top of the others. Either way higher = more sensitive. Every quantized op appears exactly once.
    ``eval_fn(qmodel) -> loss`` or, by default, :func:`output_error` on ``eval_feeds`` (default ``calib_feeds``).
    ``ptq_kwargs`` go to ``quant_post_static`` (e.g. ``hist_percent``).
    """
    who = "sensitivity"
    calib_feeds, eval_feeds = _feed_list(who, "calib_feeds", calib_feeds), \
        (None if eval_feeds is None else _feed_list(who, "eval_feeds", eval_feeds))
    a, ops, skips, kw = sweep_plan(who, model, algo, mode, quantizable_op_type, eval_fn, ptq_kwargs)
    cal = calibrate_model(model, calib_feeds, algo, quantizable_op_type=a["quantizable_op_type"],
                          **{k: ptq_kwargs[k] for k in _CALIBRATION_ARGS if k in ptq_kwargs},
                          bits=ptq_kwargs.get("activation_bits", 8))
    if eval_fn is None:
        feeds = list(eval_feeds) if eval_feeds is not None else calib_feeds
        ref = _outputs(model, feeds)

        def eval_fn(q):  # noqa: F811 - the default metric
            return output_error(ref, _outputs(q, feeds))

    def metric(skip):
        return float(eval_fn(quant_post_static(model, None, calibration=cal, skip_tensor_list=skip, **kw)))

    return ranking(ops, [metric(skip) for skip in skips], mode)


def auto_skip(model: Model, calib_feeds, k: int, *, ranking: Optional[list] = None,
              quantizable_op_type: Iterable[str] = DEFAULT_OPS, **sensitivity_kwargs) -> list[str]:
    """A ``skip_tensor_list`` keeping the ``k`` most sensitive ops in float: their weight names.

    ``ranking``: a :func:`sensitivity` result to reuse (otherwise computed with ``sensitivity_kwargs``). Passing
    the result to ``quant_post_static(..., skip_tensor_list=...)`` quantizes exactly the other ops."""
    k = _args.integer("auto_skip", "k", k, 0)
    if ranking is not None and (isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence)):
        raise ArgumentTypeError(f"auto_skip: ranking must be a sensitivity() result (a list), got "
                                f"{type(ranking).__name__}")
    weight_of = dict(quantized_ops(model, quantizable_op_type))
    if ranking is None:
        ranking = sensitivity(model, calib_feeds, quantizable_op_type=quantizable_op_type, **sensitivity_kwargs)
    return [weight_of[name] for name, _ in ranking[:k]]
