"""Embedding quantization: PaddleSlim's ``quant_embedding(program, place, config)`` on a refquant model.

``config`` (PaddleSlim's keys; ``None`` gives the defaults)::

    {"quantize_op_types": ["lookup_table"],
     "lookup_table": {"quantize_type": "abs_max",   # or "log"
                      "quantize_bits": 8,           # 8 or 16
                      "dtype": "int8",              # or "int16"
                      "threshold": 0.5}}            # optional (abs_max): clip |W| to it

Each table ``W`` read by a listed op is quantized once (even if shared), into new parameters ``<W>.int`` and
``<W>.scale`` (abs_max) or ``<W>.dict`` (log); each lookup becomes a ``lookup_table_dequant`` op writing the same
output tensor, which dequantizes only the rows it reads. The FP32 table is dropped unless another op reads it.

* abs_max (per tensor): clip to ``+-threshold`` if given; else no clip if ``max|W| < 1.0``; else clip to
  ``np.percentile(|W|, 99.99)``. ``T = max|W_clipped|`` (float32), ``q = np.round(W_clipped / T * qmax)``
  (ties to even). Dequantized: ``(T * q) / qmax`` in float32 (Paddle's ``dequantize_abs_max``).
* log: ``L = round(log2|W| / 0.125) * 0.125``; the dictionary is the 128 largest distinct L (ascending), stored
  as float32 ``2**L``; each element takes the index of the nearest dictionary level (ties: the upper one; levels
  below the dictionary, and zeros, take index 0); negative elements store ``index - 128``. Dequantized:
  ``dict[q]`` for q >= 0, ``-dict[q + 128]`` for q < 0 (Paddle's ``dequantize_log``).

The NumPy expressions are PaddleSlim's, so tables come out bit-identical. Deviations (errors where PaddleSlim
silently misbehaves): ``quantize_bits`` 16 with ``dtype`` int8 raises ``ValueError`` (PaddleSlim overflows), and
only ``lookup_table`` exists in refquant (``lookup_table_v2``, ``fused_embedding_seq_pool`` and ``pyramid_hash``
are accepted in ``quantize_op_types`` but match no op).
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from ..graph import Model, Op

SUPPORT_OP_TYPES = ("lookup_table", "lookup_table_v2", "fused_embedding_seq_pool", "pyramid_hash")
SUPPORT_QUANTIZE_TYPES = ("abs_max", "log")
SUPPORT_QUANTIZE_BITS = (8, 16)
SUPPORT_DTYPE = ("int8", "int16")
DEFAULT_SINGLE_CONFIG = {"quantize_type": "abs_max", "quantize_bits": 8, "dtype": "int8"}
LOG_INTERVAL = 0.125
LOG_DICT_SIZE = 256  # Paddle's dictionary slots; half (the 128 largest levels) are used


def merge_config(config: Optional[dict]) -> dict:
    """The full config: PaddleSlim's ``_merge_config`` with refquant's default op list, validated."""
    merged = {"quantize_op_types": ["lookup_table"]}
    if config is not None:
        if not isinstance(config, dict):
            raise ValueError(f"quant_embedding: config must be a dict, got {type(config).__name__}")
        merged.update(copy.deepcopy(config))
    op_types = merged["quantize_op_types"]
    if isinstance(op_types, str):
        op_types = [op_types]
    if not isinstance(op_types, (list, tuple)) or not op_types:
        raise ValueError(f"quant_embedding: quantize_op_types must be a non-empty list, got {op_types!r}")
    merged["quantize_op_types"] = list(op_types)
    for op_type in merged["quantize_op_types"]:
        if op_type not in SUPPORT_OP_TYPES:
            raise ValueError(f"quant_embedding: op type {op_type!r} is not supported; use {list(SUPPORT_OP_TYPES)}")
        single = merged.get(op_type, {})
        if not isinstance(single, dict):
            raise ValueError(f"quant_embedding: config[{op_type!r}] must be a dict, got {single!r}")
        single = {**DEFAULT_SINGLE_CONFIG, **single}
        if single["quantize_type"] not in SUPPORT_QUANTIZE_TYPES:
            raise ValueError(f"quant_embedding: quantize_type must be one of {list(SUPPORT_QUANTIZE_TYPES)}, "
                             f"got {single['quantize_type']!r}")
        if single["quantize_bits"] not in SUPPORT_QUANTIZE_BITS or isinstance(single["quantize_bits"], bool):
            raise ValueError(f"quant_embedding: quantize_bits must be 8 or 16, got {single['quantize_bits']!r}")
        if single["dtype"] not in SUPPORT_DTYPE:
            raise ValueError(f"quant_embedding: dtype must be one of {list(SUPPORT_DTYPE)}, got {single['dtype']!r}")
        if np.iinfo(single["dtype"]).bits < single["quantize_bits"]:
            raise ValueError(f"quant_embedding: {single['quantize_bits']} bits do not fit dtype {single['dtype']} "
                             f"(PaddleSlim would overflow silently)")
        if "threshold" in single:
            t = single["threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
                raise ValueError(f"quant_embedding: threshold must be a positive number, got {t!r}")
        merged[op_type] = single
    return merged


# ---- abs_max ----------------------------------------------------------------------------------------
def clip_array(array: np.ndarray, config: dict) -> np.ndarray:
    """PaddleSlim's ``_clip_array``."""
    if "threshold" in config:
        threshold = config["threshold"]
    else:
        if np.max(np.abs(array)) < 1.0:
            return array
        threshold = np.percentile(np.abs(array), 99.99)
    return np.clip(array, -threshold, threshold)


def quant_abs_max(array: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: clip, ``T = max|W|`` (float32), ``q = round(W / T * qmax)`` as ``config['dtype']``."""
    array = clip_array(array, config)
    scale = np.max(np.abs(array)).astype("float32")
    if not scale > 0:
        raise ValueError("quant_embedding: the table is all zeros (abs_max would divide by zero)")
    q = np.round(array / scale * ((1 << (config["quantize_bits"] - 1)) - 1))
    return q.astype(config["dtype"]), np.asarray([scale], dtype=np.float32)


# ---- log --------------------------------------------------------------------------------------------
def quant_log(array: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(q, dictionary)``: see the module docstring."""
    with np.errstate(divide="ignore"):
        levels = np.round(np.log2(np.abs(array)) / LOG_INTERVAL) * LOG_INTERVAL
    distinct = np.unique(levels[np.isfinite(levels)])               # ascending
    if distinct.size == 0:
        raise ValueError("quant_embedding: the table is all zeros (no log level)")
    dict_levels = distinct[-(LOG_DICT_SIZE // 2):]
    # nearest dictionary level in the log2 domain; equidistant -> the upper index; below the dictionary -> 0
    hi = np.clip(np.searchsorted(dict_levels, levels, side="left"), 0, dict_levels.size - 1)
    lo = np.maximum(hi - 1, 0)
    take_lo = (levels - dict_levels[lo]) < (dict_levels[hi] - levels)
    index = np.where(take_lo, lo, hi)
    index = np.where(array < 0, index - 128, index)
    return index.astype(config["dtype"]), np.power(np.float32(2), dict_levels.astype(np.float32))


def dequant_log_table(q: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """The whole table dequantized (tests and size checks): ``dict[q]`` / ``-dict[q + 128]``."""
    mag = dictionary[np.where(q < 0, q.astype(np.int64) + 128, q)]
    return np.where(q < 0, -mag, mag).astype(np.float32)


# ---- the pass ---------------------------------------------------------------------------------------
def quant_embedding(model: Model, config: Optional[dict] = None) -> Model:
    """A NEW model whose embedding tables are int8/int16 (see the module docstring)."""
    config = merge_config(config)
    new = model.copy()
    targets = [i for i, op in enumerate(new.ops) if op.type in config["quantize_op_types"]
               and op.inputs and op.inputs[0] in new.params]
    if not targets:
        raise ValueError(f"quant_embedding: the model has no {config['quantize_op_types']} op reading a parameter "
                         f"table (its op types: {sorted(new.op_counts())})")
    done: dict[str, tuple[str, str]] = {}
    for i in targets:
        op = new.ops[i]
        single = config[op.type]
        table = op.inputs[0]
        if table not in done:
            w = new.params[table]
            if w.ndim != 2 or w.dtype.kind != "f":
                raise ValueError(f"quant_embedding: table {table!r} must be a 2-D float array, got {w.dtype} "
                                 f"{w.shape}")
            if single["quantize_type"] == "abs_max":
                q, aux = quant_abs_max(np.array(w), single)
                aux_name = f"{table}.scale"
            else:
                q, aux = quant_log(np.array(w), single)
                aux_name = f"{table}.dict"
            new.params[f"{table}.int"], new.params[aux_name] = q, aux
            done[table] = (f"{table}.int", aux_name)
        int_name, aux_name = done[table]
        attrs = {"padding_idx": int(op.attrs.get("padding_idx", -1)), "quantize_type": single["quantize_type"],
                 "quantize_bits": int(single["quantize_bits"]), "dtype": single["dtype"], "with_quant_attr": True}
        new.ops[i] = Op("lookup_table_dequant", [int_name, aux_name] + list(op.inputs[1:]), list(op.outputs),
                        attrs, op.name)
    readers = {n for op in new.ops for n in op.inputs} | set(new.outputs)
    for table in done:
        if table not in readers:
            del new.params[table]
            new.trainable.discard(table)
    new.meta["quant_embedding"] = config
    new.validate()
    return new
