"""``optimize_fp32``: a float model for FP32 inference, with batch norm, constant affine ops and relu / relu6 fused
into the convs before them.

What Paddle Inference's ``conv_bn_fuse_pass`` / ``conv_elementwise_add_fuse_pass`` / ``conv_activation`` fuses and
ONNX Runtime's Conv + BatchNormalization / Add / Mul / Relu fusions do. Every conv2d or depthwise_conv2d whose
weight (and bias) are parameters becomes a ``conv2d_bias_act`` (:mod:`refquant.ops.conv`: no backward) that
absorbs the chain of ops after it while its output has one reader and is not a graph output:

- an inference ``batch_norm`` with parameter statistics: ``a = gamma / sqrt(var + eps)``, ``w' = w * a[o]``,
  ``b' = (b - mean) * a + beta`` (its running-statistics outputs must be unread);
- an ``elementwise_mul`` / ``elementwise_add`` / ``elementwise_sub`` (conv output first) by a parameter that is
  per output channel or a scalar, of the weight's dtype: ``w' = w * s[o], b' = b * s[o]``; ``b' = b + c[o]``;
- then a ``relu`` or ``relu6``, which ends the chain (applied in place on the conv's output).

Constants are folded in float64 and stored in the weight's dtype, and large convs sum in other BLAS calls, so
outputs differ from the unfused graph in the last float32 bits (a relative 1e-6 to 3e-5 on the PP-OCR and
ImageNet models, docs/performance.md). Calibration, sensitivity and training keep running on the unfused graph
(their thresholds and gradients do not change); this is for FP32 deployment and the benchmarks' "refquant FP32
fused" column. The input model is not modified.
"""
from __future__ import annotations

import numpy as np

from ..graph import Model, Op, check_model
from ..ops.elementwise import aligned_shapes

CONVS = ("conv2d", "depthwise_conv2d")


def _channel_constant(model: Model, op: Op, t: str, oc: int, dtype) -> "np.ndarray | None":
    """The other operand of elementwise ``op`` on conv output ``t`` as a float64 (oc,) vector, if it is a
    parameter of ``dtype`` that is a scalar or per output channel under Paddle's axis rule; else None."""
    first = op.inputs[0] == t
    if len(op.inputs) != 2 or not first and (op.type == "elementwise_sub" or op.inputs[1] != t):
        return None
    c = model.params.get(op.inputs[1] if first else op.inputs[0])
    if c is None or c.dtype != dtype or c.ndim > 4:
        return None
    if c.size == 1:
        return np.full(oc, float(c.reshape(-1)[0]))
    out = (2, oc, 3, 5)  # a stand-in output shape: only dimension 1 may line up with the constant
    try:
        ys = aligned_shapes(out, c.shape, op.attrs.get("axis", -1))[1] if first else \
            aligned_shapes(c.shape, out, op.attrs.get("axis", -1))[0]
    except Exception:
        return None
    ys = (1,) * (4 - len(ys)) + tuple(ys)
    return c.astype(np.float64).reshape(-1) if ys == (1, oc, 1, 1) else None


def _bn_fold(model: Model, op: Op, t: str, readers: dict, outputs: set) -> "tuple[np.ndarray, np.ndarray] | None":
    """(a, c) with batch_norm(y) = y * a + c per channel, if ``op`` is a foldable inference batch norm of ``t``."""
    if op.inputs[0] != t or any(n not in model.params for n in op.inputs[1:5]):
        return None
    if any(n and n not in model.params and (readers.get(n) or n in outputs) for n in op.outputs[1:]):
        return None
    gamma, beta, mean, var = (model.params[n].astype(np.float64).reshape(-1) for n in op.inputs[1:5])
    a = gamma / np.sqrt(var + float(op.attrs.get("epsilon", 1e-5)))
    return a, beta - mean * a


def optimize_fp32(model: Model) -> Model:
    """A new float model equal to ``model`` up to float rounding, its convs ``conv2d_bias_act`` ops with the
    batch norms, per-channel / scalar constant multiplies and adds, and relu / relu6 after them fused in (module
    docstring)."""
    check_model("optimize_fp32", model)
    readers = model.consumers()
    outputs = set(model.outputs)
    params = dict(model.params)
    trainable = set(model.trainable)
    ops, folded = [], set()
    for i, op in enumerate(model.ops):
        if i in folded:
            continue
        w = params.get(op.inputs[1]) if op.type in CONVS and len(op.inputs) > 1 else None
        b_name = op.inputs[2] if len(op.inputs) > 2 else ""
        if w is None or w.ndim != 4 or w.dtype.kind != "f" or (b_name and b_name not in params):
            ops.append(op)
            continue
        oc, t = w.shape[0], op.outputs[0]
        scale = np.ones(oc)
        shift = params[b_name].astype(np.float64).reshape(-1) if b_name else np.zeros(oc)
        chain, attrs = [], dict(op.attrs, activation="")
        while len(readers.get(t, [])) == 1 and t not in outputs and not attrs["activation"]:
            j = readers[t][0]
            nxt = model.ops[j]
            if nxt.type in ("relu", "relu6") and nxt.inputs[0] == t:
                attrs["activation"] = nxt.type
                if nxt.type == "relu6":
                    attrs["threshold"] = float(nxt.attrs.get("threshold", 6.0))
            elif nxt.type == "batch_norm":
                ac = _bn_fold(model, nxt, t, readers, outputs)
                if ac is None:
                    break
                scale, shift = scale * ac[0], shift * ac[0] + ac[1]
            elif nxt.type in ("elementwise_mul", "elementwise_add", "elementwise_sub"):
                c = _channel_constant(model, nxt, t, oc, w.dtype)
                if c is None:
                    break
                if nxt.type == "elementwise_mul":
                    scale, shift = scale * c, shift * c
                else:
                    shift = shift + c if nxt.type == "elementwise_add" else shift - c
            else:
                break
            chain.append(j)
            t = nxt.outputs[0]
        folded.update(chain)
        inputs = list(op.inputs)
        if any(model.ops[j].type not in ("relu", "relu6") for j in chain):
            w_name, b_new = _fresh(params, op.inputs[1] + "@folded"), _fresh(params, (b_name or t) + "@folded_bias")
            params[w_name] = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(w.dtype)
            params[b_new] = shift.astype(w.dtype)
            trainable.update((w_name, b_new) if op.inputs[1] in trainable else ())
            inputs = [op.inputs[0], w_name, b_new]
        ops.append(Op("conv2d_bias_act", inputs, [t], attrs, op.name))
    used = {n for op in ops for n in op.inputs if n} | {n for op in ops for n in op.outputs if n}
    params = {k: v for k, v in params.items() if k in used}
    return Model(ops, params, model.input_specs, model.outputs, name=model.name, meta=model.meta,
                 trainable=trainable & set(params))


def _fresh(taken: dict, name: str) -> str:
    k, out = 1, name
    while out in taken:
        k, out = k + 1, f"{name}{k}"
    return out
