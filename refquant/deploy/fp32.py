"""``optimize_fp32``: a float model for FP32 inference, with batch norm, constant affine ops and activations fused
into the convs before them.

What Paddle Inference's ``conv_bn_fuse_pass`` / ``conv_elementwise_add_fuse_pass`` / ``conv_activation`` fuses and
ONNX Runtime's Conv + BatchNormalization / Add / Mul / activation fusions do. Every conv2d or depthwise_conv2d whose
weight (and bias) are parameters becomes a ``conv2d_bias_act`` (:mod:`refquant.ops.conv`: no backward) that
absorbs the chain of ops after it while its output has one reader and is not a graph output:

- an inference ``batch_norm`` with parameter statistics: ``a = gamma / sqrt(var + eps)``, ``w' = w * a[o]``,
  ``b' = (b - mean) * a + beta`` (its running-statistics outputs must be unread);
- an ``elementwise_mul`` / ``elementwise_add`` / ``elementwise_sub`` (conv output first) by a parameter that is
  per output channel or a scalar, of the weight's dtype: ``w' = w * s[o], b' = b * s[o]``; ``b' = b + c[o]``;
- then, for a conv2d with one group, an ``elementwise_add`` (axis -1) of its output and another tensor computed
  before the conv (a residual branch): added after the bias, before the activation (broadcast as the add does);
- then its activation, applied on the conv's output with the float operations of its own op: a
  ``relu``, ``relu6``, ``hard_sigmoid`` or ``hard_swish`` op, or hard swish as ONNX exporters write it
  (``t * relu6(t + 3) / 6``: elementwise_add, relu6, elementwise_mul, elementwise_div by scalar parameters);
- after an activation, a multiply and then an add by scalar parameters (each optional): ``post_scale`` /
  ``post_shift``, rounded one by one as those ops.

A ``conv2d_transpose`` with parameter weights takes the same batch norms and per-channel constants into its weight
(``w[c, o]``) and bias input; it stays a conv2d_transpose, and the ops after them stay ops.

Constants are folded in float64 and stored in the weight's dtype, and the float32 convs run the ``fconv`` kernels
(fused multiply-adds, their own order of sums), so outputs differ from the unfused graph in the last float32 bits
(a relative 5e-7 to 4e-5 on the PP-OCR and ImageNet models, docs/performance.md). The fused convs' weights are
read-only copies, so the convs pack them once for their GEMM (:func:`refquant.ops.conv.conv2d_bias_act`).
Calibration, sensitivity and training keep running on the unfused graph (their thresholds and gradients do not
change); this is for FP32 deployment and the benchmarks' "refquant FP32 fused" column. The input model is not
modified.
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
    batch norms, per-channel / scalar constant multiplies and adds, and activations after them fused in (module
    docstring)."""
    check_model("optimize_fp32", model)
    readers = model.consumers()
    outputs = set(model.outputs)
    params = dict(model.params)
    trainable = set(model.trainable)
    ops, folded = [], set()
    producer = {n: j for j, o in enumerate(model.ops) for n in o.outputs if n}
    for i, op in enumerate(model.ops):
        if i in folded:
            continue
        transpose = op.type == "conv2d_transpose"
        w = params.get(op.inputs[1]) if (op.type in CONVS or transpose) and len(op.inputs) > 1 else None
        b_name = op.inputs[2] if len(op.inputs) > 2 else ""
        if w is None or w.ndim != 4 or w.dtype.kind != "f" or (b_name and b_name not in params):
            ops.append(op)
            continue
        groups = int(op.attrs.get("groups", 1))
        oc, t = (w.shape[1] * groups if transpose else w.shape[0]), op.outputs[0]
        scale = np.ones(oc)
        shift = params[b_name].astype(np.float64).reshape(-1) if b_name else np.zeros(oc)
        chain, attrs = [], dict(op.attrs, activation="")
        while len(readers.get(t, [])) == 1 and t not in outputs:
            j = readers[t][0]
            nxt = model.ops[j]
            if nxt.type == "batch_norm":
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
        folds = bool(chain)
        if transpose:  # the constants fold into its weight and bias; it keeps its own op (no epilogue)
            if folds:
                folded.update(chain)
                wg = w.astype(np.float64).reshape(groups, w.shape[0] // groups, w.shape[1], *w.shape[2:])
                w_name = _fresh(params, op.inputs[1] + "@folded")
                params[w_name] = (wg * scale.reshape(groups, 1, -1, 1, 1)).reshape(w.shape).astype(w.dtype)
                params[b_new := _fresh(params, (b_name or t) + "@folded_bias")] = shift.astype(w.dtype)
                trainable.update((w_name, b_new) if op.inputs[1] in trainable else ())
                op = Op(op.type, [op.inputs[0], w_name, b_new], [t], op.attrs, op.name)
            ops.append(op)
            continue
        residual = _residual(model, op, t, readers, outputs, producer, i)
        if residual is not None:
            chain.append(residual[0])
            t = model.ops[residual[0]].outputs[0]
        found = None if t in outputs else _activation(model, t, readers, outputs, w.dtype)
        if found is not None:
            chain += found[0]
            attrs.update(found[1])
            t = model.ops[found[0][-1]].outputs[0]
            for j, key in _post_affine(model, t, readers, outputs, w.dtype):
                chain.append(j)
                attrs[key] = float(model.params[_scalar_operand(model.ops[j], t)].reshape(-1)[0])
                t = model.ops[j].outputs[0]
        folded.update(chain)
        inputs = list(op.inputs)
        if folds:
            w_name, b_new = _fresh(params, op.inputs[1] + "@folded"), _fresh(params, (b_name or t) + "@folded_bias")
            params[w_name] = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(w.dtype)
            params[b_new] = shift.astype(w.dtype)
            trainable.update((w_name, b_new) if op.inputs[1] in trainable else ())
            inputs = [op.inputs[0], w_name, b_new]
        if residual is not None:
            inputs = (inputs + [""] * 3)[:3] + [residual[1]]
        params[inputs[1]] = _read_only(params[inputs[1]])
        ops.append(Op("conv2d_bias_act", inputs, [t], attrs, op.name))
    used = {n for op in ops for n in op.inputs if n} | {n for op in ops for n in op.outputs if n}
    params = {k: v for k, v in params.items() if k in used}
    return Model(ops, params, model.input_specs, model.outputs, name=model.name, meta=model.meta,
                 trainable=trainable & set(params))


def _residual(model: Model, conv: Op, t: str, readers: dict, outputs: set, producer: dict, i: int):
    """(op index, other operand) of the residual add after conv2d ``conv`` (index i, one group): ``t``'s one reader,
    an elementwise_add (axis -1) of t and a tensor that is not a parameter and exists before the conv runs."""
    r = readers.get(t, [])
    if t in outputs or len(r) != 1 or conv.type != "conv2d" or int(conv.attrs.get("groups", 1)) != 1:
        return None
    add = model.ops[r[0]]
    if add.type != "elementwise_add" or len(add.inputs) != 2 or int(add.attrs.get("axis", -1)) != -1:
        return None
    other = add.inputs[1] if add.inputs[0] == t else add.inputs[0]
    if other == t or not other or other in model.params or producer.get(other, -1) >= i:
        return None
    return r[0], other


def _scalar_operand(op: Op, t: str) -> str:
    return op.inputs[1] if op.inputs[0] == t else op.inputs[0]


def _post_affine(model: Model, t: str, readers: dict, outputs: set, dtype) -> list:
    """[(op index, "post_scale" / "post_shift")]: an elementwise_mul and then an elementwise_add (each optional, in
    this order) of the activation's output ``t`` by a scalar parameter of ``dtype`` (a learnable affine after the
    activation, as PP-LCNetV3 writes it), each the one reader of the tensor before it."""
    found = []
    for kind, key in (("elementwise_mul", "post_scale"), ("elementwise_add", "post_shift")):
        r = readers.get(t, [])
        if t in outputs or len(r) != 1 or model.ops[r[0]].type != kind or len(model.ops[r[0]].inputs) != 2:
            continue
        op = model.ops[r[0]]
        c = model.params.get(_scalar_operand(op, t))
        if t not in op.inputs or c is None or c.size != 1 or c.dtype != dtype:
            continue
        found.append((r[0], key))
        t = op.outputs[0]
    return found


_ACT_ATTRS = {"relu": (), "relu6": ("threshold",), "hard_sigmoid": ("slope", "offset"),
              "hard_swish": ("threshold", "scale", "offset")}


def _activation(model: Model, t: str, readers: dict, outputs: set, dtype) -> "tuple[list[int], dict] | None":
    """(op indices, conv2d_bias_act attributes) of the activation of ``t`` the conv's epilogue can take: its one
    reader, a relu / relu6 / hard_sigmoid / hard_swish; or ONNX's hard swish, t * relu6(t + offset) / scale, as
    elementwise_add, relu6, elementwise_mul and elementwise_div by scalar parameters."""
    def scalar(name):
        c = model.params.get(name)
        return float(c.reshape(-1)[0]) if c is not None and c.size == 1 and c.dtype == dtype else None

    def only(name):  # the index of the one reader of a tensor that is not a graph output
        r = readers.get(name, [])
        return r[0] if len(r) == 1 and name not in outputs else None

    r = readers.get(t, [])
    if len(r) == 1 and model.ops[r[0]].type in _ACT_ATTRS and model.ops[r[0]].inputs[0] == t:
        act = model.ops[r[0]]
        return [r[0]], dict({k: float(act.attrs[k]) for k in _ACT_ATTRS[act.type] if k in act.attrs},
                            activation=act.type)
    if len(r) != 2:
        return None
    add, mul = sorted(r, key=lambda j: model.ops[j].type != "elementwise_add")
    a_op, m_op = model.ops[add], model.ops[mul]
    if a_op.type != "elementwise_add" or a_op.inputs[0] != t or scalar(a_op.inputs[1]) is None:
        return None
    k = only(a_op.outputs[0])
    if k is None or model.ops[k].type != "relu6" or only(model.ops[k].outputs[0]) != mul:
        return None
    if m_op.type != "elementwise_mul" or sorted(m_op.inputs) != sorted([t, model.ops[k].outputs[0]]):
        return None
    d = only(m_op.outputs[0])
    if d is None or model.ops[d].type != "elementwise_div" or model.ops[d].inputs[0] != m_op.outputs[0] \
            or scalar(model.ops[d].inputs[1]) is None:
        return None
    return [add, k, mul, d], {"activation": "hard_swish", "offset": scalar(a_op.inputs[1]),
                              "threshold": float(model.ops[k].attrs.get("threshold", 6.0)),
                              "scale": scalar(model.ops[d].inputs[1])}


def _read_only(w: np.ndarray) -> np.ndarray:
    """A read-only copy of ``w`` owning its data: conv2d_bias_act packs such weights once and caches them."""
    if not w.flags.writeable and w.base is None:
        return w
    w = np.array(w, order="C")
    w.flags.writeable = False
    return w


def _fresh(taken: dict, name: str) -> str:
    k, out = 1, name
    while out in taken:
        k, out = k + 1, f"{name}{k}"
    return out
