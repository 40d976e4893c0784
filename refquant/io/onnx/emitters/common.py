"""What the emitters share: the registry (refquant op type -> ``fn(exporter, op)`` writing ONNX nodes) and small
helpers (padding and pair normalization, the uint8 grid, quantization info passed along a tensor)."""
from __future__ import annotations

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)
EXPORTERS: dict = {}


def _exporter(*types):
    def wrap(fn):
        for t in types:
            EXPORTERS[t] = fn
        return fn
    return wrap


def _pads4(v) -> list[int]:
    v = [int(p) for p in v]
    return [v[0], v[1], v[0], v[1]] if len(v) == 2 else v[:4]


def _pair(v) -> list[int]:
    if isinstance(v, (int, np.integer)):
        return [int(v), int(v)]
    v = [int(x) for x in v]
    return v if len(v) == 2 else [v[0], v[0]]


def _levels(zero: int, unsigned: bool) -> int:
    """Levels of convert_to_int8's uint8 grid: zero 128 is s8 (127 levels); zero 0 is u8 (255 with unsigned)."""
    return 127 if int(zero) == 128 else (255 if unsigned else 127)


def _propagate_q(ex, src, out):
    if src in ex.qinfo:
        ex.qinfo[out] = ex.qinfo[src]


def _clip(ex, x_onnx, lo, hi, out, base):
    ins = [x_onnx, "" if lo is None else ex.f32(np.float32(lo), f"{base}@min")]
    if hi is not None:
        ins.append(ex.f32(np.float32(hi), f"{base}@max"))
    while ins and not ins[-1]:
        ins.pop()
    return ex.node("Clip", ins, out)
