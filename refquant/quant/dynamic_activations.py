"""Dynamic INT8 quantization of matmuls (int8 weights, activations quantized per call): ONNX Runtime's
``quantize_dynamic`` / PyTorch's ``torch.ao.quantization.quantize_dynamic`` on a refquant graph (docs/bert.md).

:func:`quantize_dynamic` rewrites every ``mul`` / ``matmul`` whose 2nd input is a 2-D float parameter (the
weight (K, N); a ``matmul`` with ``trans_y`` uses W^T, one with ``trans_x`` is left in float; a ``mul`` needs
``y_num_col_dims`` 1) into a ``matmul_dynamic_int8`` op (:mod:`refquant.ops.dynamic_int8`):

* weights per output column (``channel_wise_abs_max``): ``T_c = max|W[:, c]|``, ``q = rint(W / T_c * 127)``
  (float32, half to even) as int8, ``w_scale[c] = T_c / 127``; ``abs_max``: one T for the whole weight. A column
  of zeros gets q = 0 and scale 0. ``reduce_range=True`` uses 64 levels instead of 127 (q in [-64, 64], ONNX
  Runtime's ``reduce_range``): every K pair then fits s16 and AVX2 CPUs without VNNI run the exact vpmaddubsw
  kernel (docs/int8_kernels.md), at one bit of weight resolution;
* new parameters ``<W>@packed`` (``qgemm.pack_b(q)``), ``<W>@col_sum`` (``qgemm.col_sums(q)``) and
  ``<W>@w_scale``; the float weight is dropped when nothing else reads it;
* ``fuse_bias`` (default): when the op's only reader is an ``elementwise_add`` (``axis`` -1) of a 1-D float
  parameter of N values (Paddle's fc bias), that add is folded into the op (its float bias input) and the op
  writes the add's output tensor.

With ``activation_matmuls`` (default), every ``matmul`` of two activations (attention's Q K^T and P V; not
``trans_x``) becomes a ``bmm_dynamic_int8`` op: x asymmetric uint8, y symmetric int8, both per tensor per call,
int32 accumulation (ONNX Runtime's DynamicQuantizeLinear + MatMulInteger); a ``scale`` op (bias 0) that is its
only reader is folded into its ``alpha``, and then an ``elementwise_add`` (axis -1, the attention mask) into its
optional third input, added while each head's scores are in cache. On all-MiniLM-L6-v2 the mean cosine to FP32 goes from 0.9934 to 0.9929
(docs/bert.md). Other ops (layer_norm, softmax, gelu, ...) stay float32. The input model is not changed.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..graph import Model, Op

WEIGHT_QUANTIZE_TYPES = ("channel_wise_abs_max", "abs_max")
QMAX = 127


def quantize_weight(w: np.ndarray, weight_quantize_type: str = "channel_wise_abs_max", qmax: int = QMAX):
    """``(q int8 (K, N), w_scale float32 (N,))`` for a (K, N) float weight, ``q`` in [-qmax, qmax] (see the module
    docstring)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"quantize_dynamic: weight must be 2-D (K, N), got {w.shape}")
    if weight_quantize_type == "channel_wise_abs_max":
        t = np.max(np.abs(w), axis=0)
    elif weight_quantize_type == "abs_max":
        t = np.full(w.shape[1], np.max(np.abs(w)), dtype=np.float32)
    else:
        raise ValueError(f"quantize_dynamic: weight_quantize_type must be one of {list(WEIGHT_QUANTIZE_TYPES)}, "
                         f"got {weight_quantize_type!r}")
    t = t.astype(np.float32)
    safe = np.where(t > 0, t, np.float32(1))
    q = np.clip(np.rint(w / safe * np.float32(qmax)), -qmax, qmax).astype(np.int8)
    return q, (t / np.float32(qmax)).astype(np.float32)


def _only_reader(model: Model, consumers: dict, name: str):
    """``(index, op)`` of the one op reading tensor ``name`` (not a model output), else None."""
    readers = consumers.get(name, [])
    if len(readers) != 1 or name in model.outputs:
        return None
    return readers[0], model.ops[readers[0]]


def _gemm():
    from .._dispatch import kernel
    return kernel("qgemm")


def quantize_dynamic(model: Model, op_types: Iterable[str] = ("mul", "matmul"),
                     weight_quantize_type: str = "channel_wise_abs_max", fuse_bias: bool = True,
                     reduce_range: bool = False, activation_matmuls: bool = True) -> Model:
    """A NEW model whose weight matmuls are ``matmul_dynamic_int8`` (see the module docstring)."""
    op_types = [op_types] if isinstance(op_types, str) else list(op_types)
    bad = [t for t in op_types if t not in ("mul", "matmul")]
    if bad:
        raise ValueError(f"quantize_dynamic: op_types may only hold 'mul' and 'matmul', got {bad}")
    if weight_quantize_type not in WEIGHT_QUANTIZE_TYPES:
        raise ValueError(f"quantize_dynamic: weight_quantize_type must be one of {list(WEIGHT_QUANTIZE_TYPES)}, "
                         f"got {weight_quantize_type!r}")
    new = model.copy()
    gemm = _gemm()
    consumers = new.consumers()
    done: dict[tuple, tuple[str, str, str, int, int]] = {}
    drop_ops: set[int] = set()
    count = bmm = 0
    for i, op in enumerate(new.ops):
        if op.type not in op_types or len(op.inputs) < 2:
            continue
        x, wname = op.inputs[0], op.inputs[1]
        w = new.params.get(wname)
        if (activation_matmuls and op.type == "matmul" and w is None and x not in new.params
                and not op.attrs.get("trans_x", False)):
            out, alpha, ins = op.outputs[0], 1.0, [x, wname]
            nxt = _only_reader(new, consumers, out)
            if nxt is not None and nxt[1].type == "scale" and float(nxt[1].attrs.get("bias", 0.0)) == 0.0:
                out, alpha = nxt[1].outputs[0], float(nxt[1].attrs.get("scale", 1.0))   # y = alpha * x
                drop_ops.add(nxt[0])
                nxt = _only_reader(new, consumers, out)
            if (nxt is not None and nxt[1].type == "elementwise_add" and nxt[1].inputs[0] == out
                    and int(nxt[1].attrs.get("axis", -1)) == -1 and nxt[1].inputs[1] != out):   # + mask
                out, ins = nxt[1].outputs[0], ins + [nxt[1].inputs[1]]
                drop_ops.add(nxt[0])
            new.ops[i] = Op("bmm_dynamic_int8", ins, [out],
                            {"trans_y": bool(op.attrs.get("trans_y", False)), "alpha": alpha, "source_op": "matmul",
                             "activation_quantize_type": "dynamic_uint8_x_int8_y", "with_quant_attr": True},
                            op.name)
            bmm += 1
            continue
        if w is None or w.ndim != 2 or w.dtype.kind != "f":
            continue
        if op.type == "mul":
            if int(op.attrs.get("y_num_col_dims", 1)) != 1:
                continue
            xc, transpose = int(op.attrs.get("x_num_col_dims", 1)), False
        else:
            if op.attrs.get("trans_x", False):
                continue
            xc, transpose = -1, bool(op.attrs.get("trans_y", False))
        key = (wname, transpose)
        if key not in done:
            q, scale = quantize_weight(w.T if transpose else w, weight_quantize_type, 64 if reduce_range else QMAX)
            tag = f"{wname}@T" if transpose else wname
            names = (f"{tag}@packed", f"{tag}@col_sum", f"{tag}@w_scale")
            new.params[names[0]] = gemm.pack_b(np.ascontiguousarray(q))
            new.params[names[1]] = gemm.col_sums(np.ascontiguousarray(q))
            new.params[names[2]] = scale
            done[key] = names + (q.shape[0], q.shape[1])
        packed, col_sum, w_scale, k, n = done[key]
        out, bias = op.outputs[0], ""
        readers = consumers.get(out, [])
        if fuse_bias and len(readers) == 1 and out not in new.outputs:
            add = new.ops[readers[0]]
            b = new.params.get(add.inputs[1]) if add.type == "elementwise_add" and len(add.inputs) == 2 else None
            if (b is not None and add.inputs[0] == out and int(add.attrs.get("axis", -1)) == -1 and b.ndim == 1
                    and b.shape[0] == n and b.dtype.kind == "f"):
                bias, out = add.inputs[1], add.outputs[0]
                drop_ops.add(readers[0])
        attrs = {"K": int(k), "N": int(n), "x_num_col_dims": xc, "weight_quantize_type": weight_quantize_type,
                 "reduce_range": bool(reduce_range),
                 "activation_quantize_type": "dynamic_asymmetric_uint8", "source_op": op.type,
                 "with_quant_attr": True}
        new.ops[i] = Op("matmul_dynamic_int8", [x, packed, col_sum, bias, w_scale], [out], attrs, op.name)
        count += 1
    if not count + bmm:
        raise ValueError(f"quantize_dynamic: the model has no {op_types} op with a 2-D float parameter weight "
                         f"(its op types: {sorted(new.op_counts())})")
    new.ops = [op for j, op in enumerate(new.ops) if j not in drop_ops]
    readers = {nm for op in new.ops for nm in op.inputs} | set(new.outputs)
    for wname, _ in done:
        if wname not in readers:
            del new.params[wname]
    for nm in list(new.params):
        if nm.endswith(("@packed", "@col_sum", "@w_scale")):
            new.trainable.discard(nm)
    new.trainable &= set(new.params)
    new.meta["quantize_dynamic"] = {"op_types": op_types, "weight_quantize_type": weight_quantize_type,
                                    "reduce_range": bool(reduce_range),
                                    "activation": "asymmetric uint8 per tensor per call (ORT DynamicQuantizeLinear)",
                                    "fuse_bias": bool(fuse_bias), "ops": count, "activation_matmuls": bmm}
    new.validate()
    return new
