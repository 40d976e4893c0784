"""The result of :func:`refquant.check.check`: scale rows, runtime rows, the first failure, JSON and a table."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional

from .runtime import kernel_ops


def _num(v):
    """JSON has no infinities: an exact tensor's SQNR is written as the string "inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "-inf" if v < 0 else "nan"
    return v


@dataclass
class CheckReport:
    """``scales``: :class:`~refquant.check.scales.ScaleRow` per quantized activation and weight; ``ops``:
    :class:`~refquant.check.runtime.OpRow` per quantized tensor of the runtime (empty when the runtime was not
    run); ``summary``: sentences drawn from the rows; ``notes``: what the runtime ran (fused op counts...)."""
    fp32_model: str
    quant_model: str
    runtime: Optional[str]
    tol_lsb: int
    rtol: float
    scales: list = field(default_factory=list)
    ops: list = field(default_factory=list)
    summary: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    @property
    def first_failure(self):
        """The first quantized tensor (graph order) beyond ``tol_lsb``, or None."""
        return next((r for r in self.ops if not r.ok), None)

    @property
    def ok(self) -> bool:
        """True when every runtime tensor is within ``tol_lsb`` (the scale verdicts inform; they do not fail)."""
        return self.first_failure is None

    def to_json(self) -> dict:
        first = self.first_failure
        return {"fp32_model": self.fp32_model, "quant_model": self.quant_model, "runtime": self.runtime,
                "tol_lsb": self.tol_lsb, "rtol": self.rtol, "ok": self.ok,
                "first_failure": None if first is None else {"tensor": first.tensor, "op": first.op,
                                                             "op_type": first.op_type, "max_lsb": first.max_lsb,
                                                             "cause": first.cause},
                "summary": list(self.summary), "notes": self.notes,
                "scales": [{k: _num(v) for k, v in r.to_json().items()} for r in self.scales],
                "ops": [{k: _num(v) for k, v in r.to_json().items()} for r in self.ops]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    def format_table(self) -> str:
        lines = [f"scales: {self.quant_model} against {self.fp32_model}"]
        if self.scales:
            lines.append(f"  {'kind':<10} {'tensor':<34} {'dtype':<5} {'scale':>11} {'zp':>4} {'range / T':<24} "
                         f"verdict")
            for r in self.scales:
                s = f"{r.scale[0]:.5g}" if len(r.scale) == 1 else f"{len(r.scale)} ch"
                zp = str(r.zero_point[0]) if len(r.zero_point) == 1 else "..."
                by_range = any(a in ("min_max", "unit_range") for a in r.exact)  # asymmetric, zp 0 / 128 by chance
                if r.threshold is not None and r.convention != "asymmetric" and not by_range:
                    rng = f"T={r.threshold:.5g}"
                elif r.rmin is not None:
                    rng = f"[{r.rmin:.4g}, {r.rmax:.4g}]"
                else:
                    rng = ""
                shared = (f" (scale shared with {r.shared_with})" if r.shared_with and "the same scale as" not in r.verdict
                          else "")
                lines.append(f"  {r.kind:<10} {_short(r.tensor, 34):<34} {r.dtype:<5} {s:>11} {zp:>4} {rng:<24} "
                             f"{r.verdict}{shared}")
        for s in self.summary:
            lines.append(f"  => {s}")
        if self.ops:
            lines.append("")
            lines.append(f"runtime: {self.runtime} against the exact integer reference (tolerance {self.tol_lsb} LSB)")
            lines.append(f"  {'tensor':<34} {'op':<24} {'path':<13} {'max LSB':>7} {'differ':>8} "
                         f"{'SQNR rt':>8} {'SQNR ref':>8}")
            for r in self.ops:
                flag = "" if r.ok else "  <-- " + (r.cause or "beyond tolerance")
                lines.append(f"  {_short(r.tensor, 34):<34} {_short(f'{r.op} ({r.op_type})', 24):<24} "
                             f"{r.path:<13} {r.max_lsb:>7} {r.frac_diff:>8.2%} {_db(r.sqnr_foreign):>8} "
                             f"{_db(r.sqnr_reference):>8}{flag}")
            first = self.first_failure
            if first is None:
                lines.append(f"  => exact: every quantized tensor within {self.tol_lsb} LSB of the reference")
            else:
                n_bad = sum(not r.ok for r in self.ops)
                lines.append(f"  => first failure: {first.tensor} from op {first.op} ({first.op_type}), "
                             f"{first.max_lsb} LSB, likely cause: {first.cause or 'unknown'}; {n_bad} of "
                             f"{len(self.ops)} tensors beyond {self.tol_lsb} LSB")
            fused = self.notes.get("fused_ops")
            if fused:
                lines.append("  runtime graph: " + ", ".join(f"{k} x{v}" for k, v in fused.items()))
                exposed = self.notes.get("fused_ops_exposed", {})
                if kernel_ops(exposed) != kernel_ops(fused):
                    lines.append("  warning: exposing the quantized tensors changed the fused kernels: "
                                 + ", ".join(f"{k} x{v}" for k, v in exposed.items()))
                elif exposed != fused:
                    extra = {k: exposed.get(k, 0) - fused.get(k, 0) for k in set(exposed) | set(fused)
                             if exposed.get(k, 0) != fused.get(k, 0)}
                    lines.append("  exposing the quantized tensors kept every kernel; layout ops changed: "
                                 + ", ".join(f"{k} {v:+d}" for k, v in sorted(extra.items())))
        if self.notes.get("fp32_activations"):
            lines.append(f"FP32 activations for the scale check computed by: {self.notes['fp32_activations']}")
        if self.notes.get("runtime") and not self.ops:
            lines.append(f"runtime: {self.notes['runtime']}")
        return "\n".join(lines)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 3] + "..."


def _db(v) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.1f}"
