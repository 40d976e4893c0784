"""Smoothing (SmoothQuant): move per-channel activation range into the weights before static PTQ.

Why: static PTQ gives an activation tensor one scale. When a few input channels of a layer carry values ten times
larger than the rest (common after depthwise convs, hard_swish and learnable affine blocks), the single scale is
set by those channels and the others keep only a few of the 255 levels: the layer's output error comes from
rounding the small channels, and clipping the large ones (KL, hist) is worse still.

How (Xiao et al., "SmoothQuant", 2023; PaddleSlim's ``paddleslim/quant/advanced/smooth.py`` does the same for
the linear layers of LLMs, with ``PieceWiseSearch`` choosing alpha): for a layer ``y = W * x`` with input
channel ``j``

    s_j = max|x_j| ** alpha / max|W_:,j| ** (1 - alpha)          x'_j = x_j / s_j          W'_:,j = W_:,j * s_j

so ``W' * x' == W * x`` in exact arithmetic (float32: the same up to rounding), while ``x'`` has flatter channel
ranges and ``W'`` (quantized per output channel) absorbs them. ``x' = x / s`` is a new float ``elementwise_mul``
by the constant ``1 / s`` in front of the layer, which the quantizer then reads; the weight is replaced in place.

1. The per-input-channel ``max|x_j|`` of every candidate layer's input over the calibration batches (a max: it
   merges exactly over batches and shards).
2. Per layer and per ``alpha`` of ``alphas``: the layer alone, its input quantized per tensor (8-bit, abs_max of
   ``x'`` over the calibration batches) and its weight per output channel (abs_max), on FP32 inputs of
   ``select_feeds`` (default the first calibration batch); the relative output error
   ``sum((y_q - y)^2) / sum(y^2)``. The layer is smoothed with the alpha of least error, and only when that
   beats the unsmoothed layer's error (alpha "0": no change) by ``min_gain`` (a ratio).
   ``judge="model"``: the alpha so chosen is then kept only if the relative error of the *model's* first output
   with only that layer quantized (the rest FP32) beats the unsmoothed layer's by ``min_gain``. A layer's own
   error weighs its output channels by their size, the layers after it need not: on PP-OCR rec one 1x1 conv
   (16 -> 32 channels) has a lower error of its own smoothed, while its smoothed weights, rounded, raise the
   model's output error 44-fold (docs/real_models.md).

Supported layers: ``conv2d`` with ``groups == 1``, ``depthwise_conv2d`` / ``conv2d`` with ``groups ==`` input
channels, ``mul`` whose ``x_num_col_dims`` leaves one input axis, and ``matmul`` with a 2-D parameter ``y`` and no
``trans_x``; a weight read by more than one op is left alone (scaling it would change the other op). The rest are
listed in ``info["skipped"]`` with the reason.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from .. import _args
from ..errors import ArgumentError
from ..executor import run
from ..graph import Model, Op
from ..calibration import weight_channel_axis, weight_threshold
from ..ops.registry import OpContext, get_op
from ..reference import rounding
from .auto_algo import _rel_err
from .sensitivity import DEFAULT_OPS

#: The alphas tried per layer (0.5 is SmoothQuant's default; PaddleSlim's search spans 0.2-0.8).
ALPHAS = (0.25, 0.5, 0.75)


def _layout(model: Model, op: Op, consumers: dict) -> tuple[Optional[str], Optional[tuple]]:
    """``(reason it cannot be smoothed or None, (x axis of the input channel, weight axis of the input channel,
    depthwise multiplier or 0))``."""
    if len(op.inputs) < 2 or op.inputs[1] not in model.params or op.inputs[0] in model.params:
        return "no parameter weight", None
    if len(consumers.get(op.inputs[1], ())) != 1:
        return "weight shared with another op", None
    w = model.params[op.inputs[1]]
    if op.type in ("conv2d", "depthwise_conv2d"):
        groups = int(op.attrs.get("groups", 1))
        if op.attrs.get("data_format", "NCHW") not in ("NCHW", "AnyLayout"):
            return "not NCHW", None
        if groups == 1 and op.type == "conv2d":
            return None, (1, 1, 0)
        if w.shape[1] == 1:                      # depthwise: channel j feeds output channels j*m .. j*m+m-1
            return None, (1, 0, w.shape[0] // groups)
        return f"grouped conv (groups {groups})", None
    if op.type == "mul":
        if w.ndim != 2 or int(op.attrs.get("y_num_col_dims", 1)) != 1:
            return "mul weight is not 2-D", None
        return None, (int(op.attrs.get("x_num_col_dims", 1)), 0, 0)
    if op.type == "matmul":
        if w.ndim != 2 or op.attrs.get("trans_x", False):
            return "matmul with trans_x or a weight that is not 2-D", None
        return None, (-1, 1 if op.attrs.get("trans_y", False) else 0, 0)
    return f"op type {op.type} is not supported", None


def _weight_channel_max(w: np.ndarray, w_axis: int, multiplier: int) -> np.ndarray:
    if multiplier:
        return np.abs(w).reshape(w.shape[0] // multiplier, -1).max(axis=1)
    return np.abs(np.moveaxis(w, w_axis, 0)).reshape(w.shape[w_axis], -1).max(axis=1)


def _scaled_weight(w: np.ndarray, s: np.ndarray, w_axis: int, multiplier: int) -> np.ndarray:
    if multiplier:
        return (w * np.repeat(s, multiplier).reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    shape = [1] * w.ndim
    shape[w_axis] = -1
    return (w * s.reshape(shape)).astype(w.dtype)


def _channel_view(x_ndim: int, x_axis: int, s: np.ndarray) -> np.ndarray:
    """``s`` shaped to broadcast over the input (NCHW channel axis 1, or the last axis)."""
    shape = [1] * x_ndim
    shape[x_axis if x_axis >= 0 else x_ndim + x_axis] = -1
    return s.reshape(shape)


def _fq_weight(w: np.ndarray, op_type: str, bits: int) -> np.ndarray:
    """``w`` frozen per output channel (abs_max) and dequantized, as PTQ deploys it."""
    axis = weight_channel_axis(op_type)
    t = weight_threshold(w, op_type, axis=axis)
    return rounding.dequantize_weight(rounding.freeze_weight(w, t, axis, bits), t, axis, bits)


class _Tails:
    """The model run from one op on, with that op alone quantized (``judge="model"``): the FP32 tensors live in
    front of each candidate op (its frontier: made before it, read at or after it) are kept from one FP32 run per
    select batch, so a probe runs only the ops from the candidate on."""

    def __init__(self, model: Model, ops: Sequence[Op], select: Sequence[dict]):
        self.model, self.at = model, {id(op): k for k, op in enumerate(model.ops)}
        last = {}
        for k, op in enumerate(model.ops):
            for n in op.inputs:
                last[n] = k
        made, self.front = set(model.inputs), {}
        wanted = {id(op) for op in ops}
        for k, op in enumerate(model.ops):
            if id(op) in wanted:
                self.front[k] = sorted(n for n in made if last.get(n, -1) >= k)
            made.update(n for n in op.outputs if n and n not in model.params)
        names = sorted({n for f in self.front.values() for n in f} | set(model.outputs[:1]))
        self.envs = [run(model, feed, outputs=names) for feed in select]
        self.ref = np.concatenate([e[model.outputs[0]] for e in self.envs])

    def error(self, op: Op, x_ndim: int, x_axis: int, s: Optional[np.ndarray], threshold: float,
              wq: np.ndarray, bits: int) -> float:
        """The model output's relative error with ``op``'s input divided by ``s`` (None: 1), quantized at
        ``threshold``, and its weight replaced by ``wq``."""
        m, k = self.model, self.at[id(op)]
        params, x, new = dict(m.params), op.inputs[0], []
        if s is not None:
            params[f"{op.name}.probe_inv"] = _channel_view(x_ndim, x_axis, (1.0 / s).astype(np.float32))
            new.append(Op("elementwise_mul", [x, f"{op.name}.probe_inv"], [f"{x}.probe_s"], {"axis": -1}, op.name))
            x = f"{x}.probe_s"
        params[f"{op.name}.probe@scale"] = np.array([threshold], np.float32)
        new.append(Op("fake_quantize_dequantize_abs_max", [x, f"{op.name}.probe@scale"], [f"{x}.probe_q"],
                      {"bit_length": bits, "round_type": rounding.ROUND_HALF_AWAY}, op.name))
        params[op.inputs[1]] = wq
        new.append(Op(op.type, [f"{x}.probe_q", *op.inputs[1:]], list(op.outputs), op.attrs, op.name))
        ys = []
        for env in self.envs:
            tail = Model(new + m.ops[k + 1:], {**params, **{n: env[n] for n in self.front[k]}}, [],
                         m.outputs[:1], name=m.name)
            ys.append(run(tail, {})[m.outputs[0]])
        return _rel_err(np.concatenate(ys), self.ref)


def smooth(model: Model, calib_feeds: Sequence[dict], *, alphas: Iterable[float] = ALPHAS,
           quantizable_op_type: Iterable[str] = DEFAULT_OPS, skip_tensor_list=None, min_gain: float = 0.9,
           bits: int = 8, select_feeds: Optional[Sequence[dict]] = None, judge: str = "layer"
           ) -> tuple[Model, dict]:
    """``(smoothed FP32 model, info)`` (module docstring). ``calib_feeds``: the calibration batches (the
    channel maxima and so the thresholds, over all of them). ``select_feeds``: the batches the layer errors are
    measured on (default the first calibration batch; a held-out split guards against channel maxima that fit
    the calibration batches only, see docs/real_models.md). ``judge``: "layer" or "model" (step 2).
    ``skip_tensor_list``: weights of layers to leave alone (the layers PTQ keeps float). ``info``: ``{"smoothed":
    {op: alpha}, "errors": {op: {alpha: error}}, "model_errors": {op: {alpha: error}} (judge "model"), "skipped":
    {op: reason}}``; also stored in ``meta["smooth"]`` of the returned model. The input
    model is not changed."""
    feeds = list(calib_feeds)
    if not feeds:
        raise ArgumentError("smooth: calib_feeds is empty")
    _args.choice("smooth", "judge", judge, ("layer", "model"))
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not 0.0 < a < 1.0 for a in alphas):
        raise ArgumentError(f"smooth: alphas must lie in (0, 1), got {alphas}")
    skip = set(skip_tensor_list or ())
    types = set(quantizable_op_type)
    consumers: dict = {}
    for op in model.ops:
        for n in op.inputs:
            consumers.setdefault(n, []).append(op)
    todo, skipped = [], {}
    for op in model.ops:
        if op.type not in types:
            continue
        reason, lay = _layout(model, op, consumers)
        if reason is None and op.inputs[1] in skip:
            reason = "in skip_tensor_list"
        if reason:
            skipped[op.name] = reason
        else:
            todo.append((op, lay))
    xnames = sorted({op.inputs[0] for op, _ in todo})
    xmax: dict = {}
    held: dict = {}
    select = feeds[:1] if select_feeds is None else list(select_feeds)
    if not select:
        raise ArgumentError("smooth: select_feeds is empty")
    for feed in select:
        env = run(model, feed, outputs=xnames)
        for name in xnames:
            held.setdefault(name, []).append(env[name])
    held = {name: np.concatenate(v) for name, v in held.items()}
    tails = _Tails(model, [op for op, _ in todo], select) if judge == "model" else None
    for feed in feeds:                                                                            # 1
        env = run(model, feed, outputs=xnames)
        for op, (x_axis, _w_axis, _m) in todo:
            x = env[op.inputs[0]]
            axis = x_axis if x_axis >= 0 else x.ndim + x_axis
            if op.type == "mul":                 # mul flattens x.shape[xc:] into one axis: one channel only if 1-D
                if x.ndim - axis != 1:
                    continue
            m = np.abs(np.moveaxis(x, axis, 0)).reshape(x.shape[axis], -1).max(axis=1)
            xmax[op.name] = m if op.name not in xmax else np.maximum(xmax[op.name], m)
    q = model.copy()
    twin = {id(o): c for o, c in zip(model.ops, q.ops)}        # each op's copy (op names need not be unique)
    smoothed, errors, model_errors = {}, {}, {}
    for op, (x_axis, w_axis, mult) in todo:                                                       # 2
        if op.name not in xmax:
            skipped[op.name] = "mul input with more than one flattened axis"
            continue
        w = model.params[op.inputs[1]]
        x = held[op.inputs[0]]
        xa = xmax[op.name].astype(np.float64)
        wa = _weight_channel_max(w, w_axis, mult).astype(np.float64)
        if xa.shape != wa.shape:
            skipped[op.name] = f"input channels {xa.shape[0]} != weight input channels {wa.shape[0]}"
            continue
        f = get_op(op.type, op.name)
        rest = [model.params.get(n) if n else None for n in op.inputs[2:]]

        def layer(xx, ww):
            r = f.forward(OpContext(), op.attrs, xx, ww, *rest)
            return r[0] if isinstance(r, tuple) else r

        ref = layer(x, w)

        def error(s, t, wq):
            """The layer's error with the input divided by ``s`` (None: 1), quantized at ``t``, and weight ``wq``."""
            xs = x if s is None else (x / _channel_view(x.ndim, x_axis, s)).astype(np.float32)
            return _rel_err(layer(rounding.quant_dequant_op(xs, t, bits), wq), ref)

        plain = (None, float(xa.max()), _fq_weight(w, op.type, bits))
        base = error(*plain)
        errs, best = {0.0: base}, (base, None, None, plain)
        for a in alphas:
            s = np.where((xa > 0) & (wa > 0), xa ** a / np.maximum(wa, 1e-30) ** (1 - a), 1.0)
            s = np.clip(s, 1e-5, 1e5).astype(np.float32)
            probe = (s, float((xa / s).max()), _fq_weight(_scaled_weight(w, s, w_axis, mult), op.type, bits))
            errs[a] = error(*probe)
            if errs[a] < best[0]:
                best = (errs[a], a, s, probe)
        errors[op.name] = errs
        if best[1] is not None and tails is not None:         # the model's error decides, alpha as chosen
            model_errors[op.name] = {0.0: tails.error(op, x.ndim, x_axis, *plain, bits),
                                     best[1]: tails.error(op, x.ndim, x_axis, *best[3], bits)}
            base, best = model_errors[op.name][0.0], (model_errors[op.name][best[1]],) + best[1:]
        if best[1] is None or best[0] > min_gain * base:
            continue
        _, a, s, _ = best
        qop = twin[id(op)]
        inv = f"{op.inputs[1]}.smooth_inv"
        xs_name = f"{op.inputs[0]}.smooth.{op.name}"
        q.params[inv] = _channel_view(x.ndim, x_axis, (1.0 / s).astype(np.float32))
        q.params[op.inputs[1]] = _scaled_weight(w, s, w_axis, mult)
        q.ops.insert(q.ops.index(qop), Op("elementwise_mul", [op.inputs[0], inv], [xs_name],
                                         {"axis": -1}, f"{op.name}.smooth"))
        qop.inputs[0] = xs_name
        smoothed[op.name] = a
    info = {"smoothed": smoothed, "errors": errors, "skipped": skipped, "alphas": list(alphas), "judge": judge,
            "model_errors": model_errors}
    q.meta["smooth"] = info
    return q, info
