"""``refquant check``: hold a foreign quantized model, and the INT8 runtime that executes it, against the reference.

Three questions, one report (:class:`CheckReport`, docs/check.md):

* **Scales** (:mod:`refquant.check.scales`): for every quantized tensor of the foreign model, its scale and zero
  point, the range or threshold they imply, and which refquant calibration algorithm (or the plain min/max range)
  gives the same scale under the foreign model's convention: bit-exact, within a relative tolerance, or none.
  Weights: do the integers reproduce from the FP32 weight, and is the scale max|w| per channel?
* **Runtime** (:mod:`refquant.check.runtime`): every quantized tensor the runtime computes (ONNX Runtime, fused
  kernels as deployed) against refquant's exact integer reference of the same quantized graph, in LSB units.
* **Where it first goes wrong**: the first tensor beyond ``tol_lsb`` and, where it can be told, the likely cause
  (saturating u8 x s8 pair sums, rounding, zero point, per-tensor scale).

Foreign models: QDQ ONNX (onnxruntime's ``quantize_static``, Paddle's ``onnx_format`` export, torch's QDQ
export), or, for the scale check only, a quantized refquant model that records its thresholds (such as a
Paddle quantized inference model read by ``refquant.io.import_paddle``, when that reader is available).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..graph import Model
from .report import CheckReport
from .runtime import OpRow, check_runtime
from .scales import (DEFAULT_RTOL, ScaleRow, _verdict, activation_row, collect_stats, summarize, threshold_row,
                     weight_row)
from . import qdq

__all__ = ["check", "check_loaded", "CheckReport", "ScaleRow", "OpRow", "DEFAULT_RTOL", "load_model"]

RUNTIMES = ("onnxruntime",)


def load_model(source, what: str = "model"):
    """``(Model, proto or None, label)``: a refquant Model, an ONNX path / bytes / ModelProto (imported, its proto
    kept for the QDQ reading), a refquant ``.rq`` file or a Paddle inference model (a directory or a
    ``.pdmodel`` / ``.json`` file, through ``refquant.io.import_paddle``)."""
    if isinstance(source, Model):
        return source, None, source.name
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is installed with the [onnx] extra
        onnx = None
    from ..io import import_onnx
    if onnx is not None and isinstance(source, (onnx.ModelProto, bytes, bytearray)):
        proto, label = qdq.load_proto(source)
        return import_onnx(proto), proto, label
    if not isinstance(source, (str, os.PathLike)):
        raise ArgumentTypeError(f"check: the {what} must be a path, an ONNX ModelProto or bytes, or a refquant "
                                f"Model; got {type(source).__name__}")
    path = os.fspath(source)
    lower = path.lower()
    paddle_prefix = any(os.path.isfile(path + suffix) for suffix in (".pdmodel", ".json"))
    if os.path.isdir(path) or lower.endswith((".pdmodel", ".json")) or (not os.path.exists(path) and paddle_prefix):
        from ..io import import_paddle
        return import_paddle(path), None, path
    if not os.path.exists(path):
        raise FileNotFoundError(f"check: the {what} {path} does not exist")
    if lower.endswith(".onnx"):
        proto, label = qdq.load_proto(path)
        return import_onnx(proto), proto, label
    from ..io import load
    return load(path), None, path


def _tensor_names(model: Model, proto=None) -> set:
    """Every tensor of the FP32 model: inputs, op outputs, parameters, and (for ONNX) every name of the original
    graph, which the importer may have renamed (an Identity before a graph output) or folded (a Reshape of a
    constant)."""
    names = {s.name for s in model.input_specs} | {o for op in model.ops for o in op.outputs if o}
    names |= set(model.params)
    if proto is not None:
        names |= {t.name for t in proto.graph.initializer} | {i.name for i in proto.graph.input}
        names |= {o for n in proto.graph.node for o in n.output if o}
    return names


def _refquant_runner(model: Model, proto):
    """``runner(feed, names)`` on refquant's executor; a name the importer replaced (an Identity's input or
    output) is read under the name the model has."""
    alias = {}
    if proto is not None:
        for n in proto.graph.node:
            if n.op_type == "Identity" and n.input and n.output:
                alias[n.input[0]], alias[n.output[0]] = n.output[0], n.input[0]
    have = _tensor_names(model)

    def runner(feed, names):
        from ..executor import run
        real = {n: (n if n in have else alias.get(n, n)) for n in names}
        outs = run(model, feed, outputs=sorted(set(real.values())))
        return {n: outs[r] for n, r in real.items()}
    return runner


def _check_feeds(feeds) -> list:
    if isinstance(feeds, dict):
        feeds = [feeds]
    if not isinstance(feeds, (list, tuple)) or not feeds or not all(isinstance(f, dict) for f in feeds):
        raise ArgumentTypeError("check: feeds must be a non-empty list of {input name: array} dicts")
    return list(feeds)


def _validate(runtime, tol_lsb, rtol, activations) -> None:
    if runtime is not None and runtime not in RUNTIMES:
        raise ArgumentError(f"check: runtime must be one of {RUNTIMES} or None, got {runtime!r}")
    if isinstance(tol_lsb, bool) or not isinstance(tol_lsb, (int, np.integer)) or tol_lsb < 0:
        raise ArgumentError(f"check: tol_lsb must be an int >= 0, got {tol_lsb!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 <= rtol < 1:
        raise ArgumentError(f"check: rtol must be a number in [0, 1), got {rtol!r}")
    if activations not in ("auto", "refquant", "onnxruntime"):
        raise ArgumentError(f"check: activations must be 'auto', 'refquant' or 'onnxruntime', got {activations!r}")


def check(fp32_model, quant_model, feeds, *, runtime: Optional[str] = "onnxruntime", tol_lsb: int = 1,
          session_options=None, rtol: float = DEFAULT_RTOL, activations: str = "auto") -> CheckReport:
    """Check ``quant_model`` (and the runtime executing it) against ``fp32_model`` on ``feeds``.

    ``fp32_model`` / ``quant_model``: paths (ONNX, refquant ``.rq``, Paddle), ONNX protos or bytes, or refquant
    Models (a quantized refquant Model is checked by its recorded thresholds). ``feeds``: a list of
    ``{input name: array}`` batches, the calibration data. ``runtime``: "onnxruntime" (runs a QDQ ONNX model op by
    op against the exact reference) or None (scales only). ``tol_lsb``: the largest difference, in integer steps, that still counts as
    exact. ``session_options``: an ``onnxruntime.SessionOptions`` or a dict of session config entries (e.g.
    ``{"session.x64quantprecision": "1"}``). ``rtol``: the relative scale tolerance of the "within tolerance"
    verdict. ``activations``: who computes the FP32 tensors the algorithms calibrate on: "refquant" (its
    executor), "onnxruntime" (the FP32 ONNX model in ONNX Runtime with optimizations off, as its calibrators
    run it: float kernels differ in the last bits, and a bit-exact verdict needs the same floats the foreign tool
    saw) or "auto" (onnxruntime when both models are ONNX and onnxruntime is installed, else refquant).
    """
    _validate(runtime, tol_lsb, rtol, activations)
    feeds = _check_feeds(feeds)
    return check_loaded(load_model(fp32_model, "FP32 model"), load_model(quant_model, "quantized model"), feeds,
                        runtime=runtime, tol_lsb=tol_lsb, session_options=session_options, rtol=rtol,
                        activations=activations)


def check_loaded(fp32, quant, feeds, *, runtime="onnxruntime", tol_lsb=1, session_options=None,
                 rtol=DEFAULT_RTOL, activations="auto") -> CheckReport:
    """:func:`check` of two models already read by :func:`load_model` (``(Model, proto, label)`` each)."""
    _validate(runtime, tol_lsb, rtol, activations)
    feeds = _check_feeds(feeds)
    fp, fp_proto, fp_label = fp32
    qm, proto, q_label = quant
    report = CheckReport(fp_label, q_label, runtime, int(tol_lsb), float(rtol))
    fp32_tensors = _tensor_names(fp, fp_proto)
    runner = None
    if activations != "refquant" and fp_proto is not None and (proto is not None or activations == "onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
            from .runtime import fp32_runner
            runner = fp32_runner(fp_proto)
        except ImportError:
            if activations == "onnxruntime":
                raise ArgumentError("check: activations='onnxruntime' needs the onnxruntime package") from None
    elif activations == "onnxruntime":
        raise ArgumentError("check: activations='onnxruntime' needs an ONNX FP32 model")
    report.notes["fp32_activations"] = ("onnxruntime (graph optimizations off)" if runner is not None
                                        else "refquant")
    runner = runner or _refquant_runner(fp, fp_proto)
    if proto is not None:
        fp32_names = _qdq_scales(report, fp, proto, feeds, fp32_tensors, rtol, runner)
        if runtime == "onnxruntime":
            report.ops, notes = check_runtime(fp, qm, proto, feeds, tol_lsb=int(tol_lsb),
                                              session_options=session_options, fp32_names=fp32_names,
                                              fp32_runner=runner)
            report.notes.update(notes)
    else:
        _threshold_scales(report, fp, qm, feeds, fp32_tensors, rtol, runner)
        if runtime == "onnxruntime":
            report.notes["runtime"] = ("not run: the quantized model is not a QDQ ONNX model; only its scales "
                                       "were checked")
    report.summary = summarize(report.scales, rtol)
    return report


def _qdq_scales(report, fp, proto, feeds, fp32_tensors, rtol, runner) -> dict:
    qnodes = qdq.quantize_nodes(proto, report.quant_model)
    mapped = {q.output: qdq.fp32_name(q, proto, fp32_tensors) for q in qnodes}
    stats = collect_stats(fp, feeds, [n for n in mapped.values() if n], runner)
    first_user: dict = {}
    constant = set(fp.params) | {t.name for t in proto.graph.initializer} | set(qdq.constants(proto))
    for q in qnodes:
        shared = first_user.setdefault(q.scale_name, q.input)
        name = mapped[q.output]
        row = activation_row(q.input, name, q.dtype, q.scale, q.zero_point, stats.get(name), rtol,
                             shared_with=None if shared == q.input else shared)
        if name in constant or q.input in constant:
            row.kind = "constant"     # a weight stored as a Constant node, quantized like an activation
        report.scales.append(row)
    _same_scale(report.scales)
    consts = qdq.constants(proto)
    for out, dq in qdq.dequantize_nodes(proto, report.quant_model).items():
        q = consts.get(dq.input)
        if q is None or dq.dtype == "int32" or np.asarray(q).dtype.kind not in "iu":
            continue   # activations, and int32 biases (their scale is s_x * s_w by construction)
        wname = qdq.weight_name(dq, fp.params)
        report.scales.append(weight_row(dq.input, wname, None if wname is None else fp.params[wname], q,
                                        dq.scale, dq.zero_point, dq.dtype, dq.axis, rtol))
    return {k: v for k, v in mapped.items() if v}


def _same_scale(rows) -> None:
    """A tensor that matches no candidate but carries exactly the scale and zero point of another tensor that
    does (a tool gives a conv output the range of the Relu after it, a pooling output its input's) is said so."""
    exact = [r for r in rows if r.kind == "activation" and r.exact]
    for r in rows:
        if r.kind != "activation" or r.exact or r.closest is None:
            continue
        twin = next((e for e in exact if e.scale == r.scale and e.zero_point == r.zero_point), None)
        if twin is not None:
            r.shared_with = r.shared_with or twin.tensor
            r.verdict += f"; the same scale as {twin.tensor}, which is bit-exact with {twin.exact[0]}"


def _threshold_scales(report, fp, qm, feeds, fp32_tensors, rtol, runner) -> None:
    from ..calibration import weight_channel_axis
    from ..quant import thresholds
    try:
        ts = thresholds(qm)
    except ValueError:
        raise ArgumentError(f"check: {report.quant_model} is neither a QDQ ONNX model nor a quantized model that "
                            f"records its thresholds") from None
    acts = {k: v for k, v in ts.items() if not isinstance(v, np.ndarray)}
    stats = collect_stats(fp, feeds, [k for k in acts if k in fp32_tensors], runner)
    for name, T in acts.items():
        report.scales.append(threshold_row(name, name if name in fp32_tensors else None, T, stats.get(name), rtol))
    users = {}
    for op in fp.ops:
        for n in op.inputs:
            users.setdefault(n, op.type)
    for name, T in ts.items():
        if not isinstance(T, np.ndarray):
            continue
        w = fp.params.get(name)
        row = ScaleRow("weight", name, name if w is not None else None, "int8", "symmetric",
                       [float(v) / 127 for v in T], [0], threshold=float(T.max()))
        if w is not None:
            axis = weight_channel_axis(users.get(name, "conv2d"))
            if T.size > 1 and w.ndim > axis and w.shape[axis] == T.size:
                moved = np.moveaxis(np.asarray(w, np.float32), axis, 0).reshape(T.size, -1)
                cand = np.abs(moved).max(axis=1).astype(np.float32)
                label = "abs_max (per channel)"
            else:
                cand = np.array([np.abs(np.asarray(w, np.float32)).max()], np.float32)
                label = "abs_max (per tensor)"
            if cand.shape == T.shape:
                rel = (cand.astype(np.float64) - T) / T
                worst = int(np.argmax(np.abs(rel)))
                row.closest, row.rel_diff, row.candidates = label, float(rel[worst]), {label: float(rel[worst])}
                if np.array_equal(cand, T.astype(np.float32)):
                    row.exact.append(label)
                row.verdict = _verdict(row, rtol)
            else:
                row.verdict = f"{T.size} thresholds for a weight of shape {w.shape}"
        else:
            row.verdict = "no FP32 weight to compare with"
        report.scales.append(row)
