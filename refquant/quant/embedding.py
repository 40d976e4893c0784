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
* log: ``L = round(log2|W| / 0.125) * 0.125`` (float32; an exact zero gives ``-inf``); the dictionary is the 128
  largest distinct L (ascending, ``-inf`` included: a table with fewer than 128 levels and a zero gets the zero
  level ``2**-inf = 0`` first), stored as float32 ``2**L``; each element takes PaddleSlim's nearest index
  (``searchsorted``, then the left neighbour when strictly closer; below the dictionary: 0); negative elements
  store ``index - 128``. Dequantized: ``dict[q]`` for q >= 0, ``-dict[q + 128]`` for q < 0 (Paddle's
  ``dequantize_log``). The search is the kernel ``refquant._kernels.embedding.log_index`` (twin
  :func:`refquant.reference.embedding.log_index`).
* ``padding_idx`` rows of a ``lookup_table_dequant`` read the integer 0, as Paddle's ``lookup_table`` writes them
  before ``dequantize_log`` / ``dequantize_abs_max`` run: +0 for abs_max, ``dict[0]`` for log (0 when the
  dictionary holds the zero level, else its smallest level).

The NumPy expressions are PaddleSlim's, so tables come out bit-identical. Deviations (errors where PaddleSlim
silently misbehaves): ``quantize_bits`` 16 with ``dtype`` int8 raises ``ValueError`` (PaddleSlim overflows), a
table holding NaN or Inf raises :class:`~refquant.errors.NonFiniteError` naming it (PaddleSlim turns NaN into a
log level and abs_max into NaN scales), an all-zero table raises ``ValueError`` for abs_max (a zero scale), and
only ``lookup_table`` exists in refquant (``lookup_table_v2``, ``fused_embedding_seq_pool`` and ``pyramid_hash``
are accepted in ``quantize_op_types`` but match no op).
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from .. import _dispatch
from ..errors import NonFiniteError
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


def check_table(array, name: str = "table") -> np.ndarray:
    """The table as an ndarray, rejected with NonFiniteError (naming it) if it holds NaN or Inf."""
    array = np.asarray(array)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise NonFiniteError(f"quant_embedding: table {name!r} holds {bad} NaN/Inf entries", tensor=name, count=bad)
    return array


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


def quant_abs_max(array: np.ndarray, config: dict, name: str = "table") -> tuple[np.ndarray, np.ndarray]:
    """``(q, T)``: clip, the threshold ``T = max|W|`` (float32, ``<W>.scale``), ``q = round(W / T * qmax)``."""
    array = clip_array(check_table(array, name), config)
    scale = np.max(np.abs(array)).astype("float32")
    if not scale > 0:
        raise ValueError(f"quant_embedding: table {name!r} is all zeros (abs_max would divide by zero)")
    q = np.round(array / scale * ((1 << (config["quantize_bits"] - 1)) - 1))
    return q.astype(config["dtype"]), np.asarray([scale], dtype=np.float32)


# ---- log --------------------------------------------------------------------------------------------
def log_levels(array: np.ndarray) -> np.ndarray:
    """``round(log2|W| / 0.125) * 0.125`` in float32; exact zeros give ``-inf``."""
    with np.errstate(divide="ignore"):
        return np.round(np.log2(np.abs(np.asarray(array, np.float32))) / LOG_INTERVAL) * LOG_INTERVAL


def quant_log(array: np.ndarray, config: dict, name: str = "table") -> tuple[np.ndarray, np.ndarray]:
    """``(q, dictionary)`` of a float32 2-D table: see the module docstring."""
    array = np.ascontiguousarray(check_table(array, name), dtype=np.float32)
    levels = log_levels(array)
    dict_levels = np.unique(levels)[-(LOG_DICT_SIZE // 2):]           # ascending; -inf (zeros) included
    index = _dispatch.kernel("embedding").log_index(levels, dict_levels, array)
    return index.astype(config["dtype"]), np.power(np.float32(2), dict_levels)


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
                q, aux = quant_abs_max(np.array(w), single, table)
                aux_name = f"{table}.scale"
            else:
                q, aux = quant_log(np.array(w), single, table)
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
