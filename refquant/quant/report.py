"""Per-layer report of a quantized model: where the quantization error comes from.

For every quantized op of a :func:`quant_post_static` model, on calibration-like data:

- its input activation: ``threshold`` T, ``scale`` = T / qmax, ``clipped`` = the fraction of values with
  |x| > T, and ``sqnr_db`` of the tensor against its own quant-dequant ``qdq(x)``;
- its weight: the thresholds (min and max over channels), the fraction clipped, and ``weight_sqnr_db``
  of the FP32 weight against the stored (dequantized) weight;
- ``output_sqnr_db``: the op's output in the quantized model against the FP32 model's, every earlier layer
  quantized too (so it shows how error accumulates along the graph).

``SQNR = 10 log10(sum(ref^2) / sum((ref - test)^2))`` in dB (inf when equal).
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Mapping, Optional

import numpy as np

from .._files import write_text_atomic
from ..calibration import weight_channel_axis
from ..errors import ArgumentError, ArgumentTypeError
from ..graph import Model, check_model
from ..reference import rounding


def sqnr_db(ref, test) -> float:
    """``10 log10(sum(ref^2) / sum((ref - test)^2))`` in float64; inf if ``test == ref``."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(((ref - np.asarray(test, dtype=np.float64)) ** 2).sum())
    signal = float((ref ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _stored_weight(qmodel: Model, w: str, info: dict, op) -> np.ndarray:
    """The float weight the quantized op computes with (dequantized if stored as integers)."""
    value = qmodel.params[w]
    if value.dtype.kind == "f":
        return value
    t = qmodel.params[f"{w}@scale"]
    axis = op.attrs.get("weight_quant_axis")
    return rounding.dequantize_weight(value.astype(np.float32), t if axis is not None else t[0], axis,
                                      info["weight_bits"])


def layer_report(model: Model, qmodel: Model, feeds_list) -> list[dict]:
    """One row per quantized op of ``qmodel`` (made from ``model`` by :func:`quant_post_static`), measured on
    ``feeds_list`` (a list of feed dicts; statistics are pooled over them)."""
    check_model("layer_report", model)
    check_model("layer_report", qmodel, "qmodel")
    info = qmodel.meta.get("quantization")
    if not info or info.get("method") not in ("post_static", "qat", "paddle_import"):
        raise ValueError("layer_report: qmodel was not produced by quant_post_static, QAT's convert or import_paddle")
    if isinstance(feeds_list, Mapping) or not isinstance(feeds_list, Iterable):
        raise ArgumentTypeError(f"layer_report: feeds_list must be a list of feed dicts, got "
                                f"{type(feeds_list).__name__}")
    feeds_list = list(feeds_list)
    if not feeds_list:
        raise ArgumentError("layer_report: feeds_list is empty (no data)")
    bits = int(info["activation_bits"])
    qm = rounding.qmax(bits)
    fp32_ops = {op.name: op for op in model.ops}
    quantized = [op for op in qmodel.ops if "quantization_type" in op.attrs]
    rows = []
    acts = sorted({fp32_ops[op.name].inputs[0] for op in quantized})
    outs = sorted({o for op in quantized for o in op.outputs if o})
    ref = {n: [] for n in acts + outs}
    test = {n: [] for n in outs}
    for feeds in feeds_list:
        for n, v in model.run(feeds, outputs=acts + outs).items():
            ref[n].append(v.reshape(-1))
        for n, v in qmodel.run(feeds, outputs=outs).items():
            test[n].append(v.reshape(-1))
    ref = {n: np.concatenate(v) for n, v in ref.items()}
    test = {n: np.concatenate(v) for n, v in test.items()}
    act_t = info["activation_thresholds"]
    for op in quantized:
        src = fp32_ops[op.name]
        x_name, w_name = src.inputs[0], src.inputs[1]
        x = ref[x_name]
        t = float(act_t[x_name])
        w = model.params[w_name]
        tw = np.asarray(qmodel.params[f"{w_name}@scale"], dtype=np.float32)
        if info["weight_quantize_type"] == "channel_wise_abs_max":
            moved = np.moveaxis(w, weight_channel_axis(src.type), 0).reshape(tw.size, -1)
            w_clipped = float((np.abs(moved) > tw[:, None]).mean())
        else:
            w_clipped = float((np.abs(w) > tw[0]).mean())
        row = {
            "op": op.name, "type": op.type,
            "input": x_name, "threshold": t, "scale": t / qm, "clipped": float((np.abs(x) > t).mean()),
            "sqnr_db": sqnr_db(x, rounding.quant_dequant_op(x, t, bits)),
            "weight": w_name, "weight_threshold_min": float(tw.min()), "weight_threshold_max": float(tw.max()),
            "weight_clipped": w_clipped,
            "weight_sqnr_db": sqnr_db(w, _stored_weight(qmodel, w_name, info, op)),
            "output": op.outputs[0],
            "output_sqnr_db": sqnr_db(ref[op.outputs[0]], test[op.outputs[0]]),
        }
        rows.append(row)
    return rows


def format_report(rows: list[dict]) -> str:
    """The report as a markdown table."""
    lines = ["| op | type | input | threshold | scale | clipped % | input SQNR dB | weight T (min..max) | "
             "weight SQNR dB | output SQNR dB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['type']} | {r['input']} | {r['threshold']:.5g} | {r['scale']:.4g} | "
                     f"{100 * r['clipped']:.4f} | {r['sqnr_db']:.2f} | {r['weight_threshold_min']:.3g}.."
                     f"{r['weight_threshold_max']:.3g} | {r['weight_sqnr_db']:.2f} | {r['output_sqnr_db']:.2f} |")
    return "\n".join(lines)


def write_report_json(rows: list[dict], path, meta: Optional[dict] = None) -> None:
    """``{"meta": ..., "layers": rows}`` as JSON (inf SQNR written as null)."""
    def clean(v):
        return None if isinstance(v, float) and math.isinf(v) else v
    doc = {"meta": meta or {}, "layers": [{k: clean(v) for k, v in r.items()} for r in rows]}
    write_text_atomic(path, json.dumps(doc, indent=1))
