"""Static post-training quantization: Paddle 3.3.1's ``PostTrainingQuantization`` (both graph formats).

Flow (paddle_reference.md 1.2-1.9; docs/ptq.md):

1. Collect tensors: for every op whose type is a quantizable *weight* op (conv2d, depthwise_conv2d,
   conv2d_transpose, mul, matmul, matmul_v2 in ``quantizable_op_type``) its weight parameter (the second input) is a
   weight and its other non-parameter inputs and outputs are activations; every output of an *observer* op type
   (Paddle's activation-op dict, see :data:`OBSERVER_OP_TYPES`) is an activation too (only for ``out_threshold``).
2. Calibrate the activations with :func:`refquant.calibration.calibrate` over ``batch_nums`` batches (KL / hist run
   the FP32 model twice over the batches, as Paddle does).
3. Weight thresholds: :func:`refquant.calibration.weight_threshold` (channel axis 0 for conv, 1 for mul/matmul).
4. Rewrite a copy: each quantized op's activation input goes through a ``fake_quantize_dequantize_abs_max`` op
   (static scale parameter ``<tensor>@scale``, round_type 1 as Paddle's ``fake_quantize_range_abs_max``), shared
   per tensor; its weight is frozen (:func:`refquant.reference.rounding.freeze_weight`, half-to-even) and stored
   dequantized ``q * T_c / qmax`` in float32, its thresholds in ``<weight>@scale``.
5. Output thresholds (1.9): ``out_threshold`` / ``<OutArg>0_threshold`` / ``with_quant_attr`` attributes, and
   ``quantization_type = "post_<algo>"`` on quantized ops.

``onnx_format=True`` (1.8 "new format") instead puts ``quantize_linear`` + ``dequantize_linear`` (round_type 0) in
front of each quantized activation input, stores each weight as int8 (round, then clip to [-qmax-1, qmax]) read
through a ``dequantize_linear`` with its ``quant_axis``, and adds ``only_observer`` pairs (identity, carrying T)
after every other calibrated output except the graph outputs; no ``out_threshold`` attributes, as in Paddle.

Running the rewritten model gives ``conv(qdq(x), w_dq)``; Paddle's frozen model computes ``conv(q_x, q_w)`` on
integer-valued floats and rescales by ``T_w[c] * T_a / (qmax * qmax)`` after the op: equal in exact arithmetic,
within float32 rounding otherwise.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import numpy as np

from ..calibration import algorithms
from ..calibration import Calibration, calibrate, weight_channel_axis, weight_threshold
from ..errors import ArgumentError, ArgumentTypeError
from ..graph import Model, Op
from .. import _args
from . import adaround
from ..reference import rounding

#: Paddle's ``SUPPORT_WEIGHT_QUANTIZATION_OP_DICT`` keys.
WEIGHT_OP_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
#: Output argument names of Paddle's op definitions (for ``<OutArg><i>_threshold``).
_OUT_ARG = {"conv2d": "Output", "depthwise_conv2d": "Output", "conv2d_transpose": "Output", "batch_norm": "Y",
            "layer_norm": "Y"}
#: Observer op types: the op types of Paddle's ``SUPPORT_ACT_QUANTIZATION_OP_DICT`` that refquant has, under
#: refquant's names (``reshape`` = reshape2, ``flatten`` = flatten_contiguous_range, ``transpose`` = transpose2).
OBSERVER_OP_TYPES = frozenset({
    "mul", "matmul", "matmul_v2", "pool2d", "elementwise_add", "elementwise_sub", "elementwise_mul",
    "elementwise_pow", "concat", "softmax", "relu", "relu6", "leaky_relu", "prelu", "tanh", "swish", "sigmoid",
    "hard_swish", "hard_sigmoid", "gelu", "layer_norm", "batch_norm", "reshape", "reshape2", "transpose",
    "transpose2", "flatten", "flatten_contiguous_range", "squeeze2", "unsqueeze2", "nearest_interp",
    "bilinear_interp", "nearest_interp_v2", "bilinear_interp_v2", "slice", "split", "scale", "clip", "pow",
    "reduce_mean", "reduce_sum", "reduce_max", "lookup_table", "lookup_table_v2", "dropout",
})

#: The activation algorithms of :func:`quant_post_static` when refquant was imported
#: (:func:`refquant.calibration.algorithms.static_algorithms`: all but min_max, which Paddle stores as attributes,
#: not thresholds; Paddle's ptf is not implemented).
ALGOS = algorithms.static_algorithms()


def _check_data_loader(who, value):
    if isinstance(value, Mapping):
        raise ArgumentTypeError(f"{who}: data_loader is one feed dict; pass a list of them (one per batch)")
    if value is not None and not callable(value) and not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{who}: data_loader must be an iterable of feed dicts, a function returning one, "
                                f"or None, got {type(value).__name__}")
    return value


def _check_algo(who, value):
    if isinstance(value, str) and value in algorithms.refused_algorithms():
        raise NotImplementedError(f"{who}: algo {value!r} is not implemented in refquant")
    return _args.choice(who, "algo", value, algorithms.static_algorithms())


def _check_bias_correction(who, value):
    if value is not False and value is not True and value != "paddle":
        raise ArgumentError(f"{who}: bias_correction must be False, True or 'paddle', got {value!r}")
    return value


def _check_calibration(who, value):
    if value is not None and not isinstance(value, Calibration):
        raise ArgumentTypeError(f"{who}: calibration must be a refquant.calibration.Calibration or None, got "
                                f"{type(value).__name__}")
    return value


#: One checker per public argument of quant_post_static / calibrate_model: ``(who, value) -> normalised value``.
_CHECKS = {
    "model": _args.model,
    "data_loader": _check_data_loader,
    "batch_nums": lambda who, v: _args.optional_integer(who, "batch_nums", v, 1),
    "algo": _check_algo,
    "hist_percent": _args.hist_percent,
    "bias_correction": _check_bias_correction,
    "quantizable_op_type": lambda who, v: tuple(_args.names(who, "quantizable_op_type", v,
                                                            allowed=sorted(WEIGHT_OP_TYPES + tuple(OBSERVER_OP_TYPES)),
                                                            empty=False)),
    "is_full_quantize": lambda who, v: _args.boolean(who, "is_full_quantize", v),
    "weight_bits": lambda who, v: _args.bits(who, "weight_bits", v),
    "activation_bits": lambda who, v: _args.bits(who, "activation_bits", v),
    "bits": lambda who, v: _args.bits(who, "bits", v),
    "weight_quantize_type": lambda who, v: _args.choice(who, "weight_quantize_type", v,
                                                        ("abs_max", "channel_wise_abs_max")),
    "skip_tensor_list": lambda who, v: _args.names(who, "skip_tensor_list", v, empty=True, none=True),
    "round_type": lambda who, v: _args.choice(who, "round_type", v, ("round", "adaround")),
    "onnx_format": lambda who, v: _args.boolean(who, "onnx_format", v),
    "learning_rate": lambda who, v: _args.real(who, "learning_rate", v, 0.0, lo_open=True),
    "adaround_iters": lambda who, v: _args.integer(who, "adaround_iters", v, 1),
    "adaround_mode": lambda who, v: _args.choice(who, "adaround_mode", v, ("paper", "paddle")),
    "calibration": _check_calibration,
}


def check_args(who: str, **kwargs) -> dict:
    """The named public arguments of :func:`quant_post_static` checked (ArgumentError / ArgumentTypeError naming
    ``who`` and the argument; NotImplementedError for algos min_max and ptf) and normalised (ints as int, reals as
    float, name lists as tuples / lists). An unknown name is an ArgumentTypeError, as Python's own."""
    unknown = sorted(set(kwargs) - set(_CHECKS))
    if unknown:
        raise ArgumentTypeError(f"{who}: unexpected keyword argument(s) {unknown}")
    return {name: _CHECKS[name](who, value) for name, value in kwargs.items()}


def _batches(data_loader, batch_nums: Optional[int]):
    """A function returning a fresh list of the first ``batch_nums`` feed dicts of ``data_loader``."""
    def get():
        src = data_loader() if callable(data_loader) else data_loader
        out = []
        for i, feeds in enumerate(src):
            if batch_nums is not None and i >= batch_nums:
                break
            out.append(feeds)
        return out

    if not callable(data_loader) and iter(data_loader) is data_loader:
        cached = get()  # a one-shot iterator: read it once, replay it for the second pass
        return lambda: cached
    return get


def _plan(model: Model, quantizable_op_type, is_full_quantize: bool, skip_tensor_list):
    """Which ops are quantized, which weights and activations are calibrated."""
    types = set(WEIGHT_OP_TYPES) if is_full_quantize else set(quantizable_op_type)
    weight_types = types & set(WEIGHT_OP_TYPES)
    skip = set(skip_tensor_list or ())
    acts: list[str] = []
    quant_ops = []  # (op index, weight name or None, activation input names)
    weights: dict[str, str] = {}  # weight name -> op type

    def add_act(name):
        if name and name not in model.params and name not in acts:
            acts.append(name)

    for i, op in enumerate(model.ops):
        if op.type in weight_types:
            w = op.inputs[1] if len(op.inputs) > 1 and op.inputs[1] in model.params else None
            for name in op.inputs + op.outputs:
                add_act(name)
            if w is None:
                continue  # Paddle's transform pass skips mul/matmul with all-activation inputs
            if any(n in skip for n in op.inputs if n):
                continue
            xs = [n for k, n in enumerate(op.inputs) if n and k != 1 and n not in model.params]
            if w in weights and weights[w] != op.type:
                raise NotImplementedError(f"weight {w!r} is shared by a {weights[w]} and a {op.type} op")
            weights[w] = op.type
            quant_ops.append((i, w, xs))
        elif op.type in OBSERVER_OP_TYPES:
            for name in op.outputs:
                add_act(name)
    return quant_ops, weights, acts


def calibrate_model(model: Model, data_loader, algo: str = "KL", *, batch_nums: Optional[int] = None,
                    hist_percent: float = 0.99999, bits: int = 8, onnx_format: bool = False, ranges=None,
                    quantizable_op_type: Iterable[str] = ("conv2d", "depthwise_conv2d", "mul"),
                    is_full_quantize: bool = False, skip_tensor_list=None) -> Calibration:
    """Calibrate the activations :func:`quant_post_static` would quantize, running the FP32 model over
    ``data_loader`` (same arguments). The result can be merged with another shard's
    (:meth:`Calibration.merge`) and passed to ``quant_post_static(..., calibration=...)``.

    KL and hist over shards: first merge every shard's ``calibrate_model(..., algo="ranges")`` (the pass-1 abs
    ranges), then calibrate each shard with ``ranges=merged.ranges`` so that all histograms share one range.
    """
    from ..executor import run

    a = check_args("calibrate_model", model=model, data_loader=data_loader, batch_nums=batch_nums,
                   hist_percent=hist_percent, bits=bits, onnx_format=onnx_format,
                   quantizable_op_type=quantizable_op_type, is_full_quantize=is_full_quantize,
                   skip_tensor_list=skip_tensor_list)
    _args.choice("calibrate_model", "algo", algo, algorithms.algorithm_names() + ("ranges",))
    if data_loader is None:
        raise ArgumentError("calibrate_model: data_loader is None")
    _, _, acts = _plan(model, a["quantizable_op_type"], is_full_quantize, skip_tensor_list)
    get = _batches(data_loader, a["batch_nums"])

    def activation_batches():
        for feeds in get():
            yield run(model, feeds, outputs=acts)

    return calibrate(activation_batches, algo, bits=a["bits"], hist_percent=a["hist_percent"],
                     onnx_format=onnx_format, ranges=ranges, producers=model.origins())


def _layer_inputs(model: Model, get, names) -> dict[str, list[np.ndarray]]:
    """``{name: [the FP32 tensor for each batch]}`` for the named activations (AdaRound's inputs)."""
    from ..executor import run

    names = list(dict.fromkeys(names))
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in get():
        for n, v in run(model, feeds, outputs=names).items():
            out[n].append(v)
    return out


def quant_post_static(model: Model, data_loader, batch_nums: Optional[int] = None, algo: str = "KL",
                      hist_percent: float = 0.99999, bias_correction: bool | str = False,
                      quantizable_op_type: Iterable[str] = ("conv2d", "depthwise_conv2d", "mul"),
                      is_full_quantize: bool = False, weight_bits: int = 8, activation_bits: int = 8,
                      weight_quantize_type: str = "channel_wise_abs_max", skip_tensor_list=None,
                      round_type: str = "round", onnx_format: bool = False, *, learning_rate: float = 0.01,
                      adaround_iters: int = 1000, adaround_mode: str = "paper",
                      calibration: Optional[Calibration] = None) -> Model:
    """Quantize ``model`` after training, as Paddle's ``PostTrainingQuantization`` (defaults: Paddle's, with
    PaddleSlim's ``quantizable_op_type``). Returns a new model; ``model`` is not modified.

    ``data_loader``: an iterable of feed dicts (``{input_name: array}``) or a function returning one; a list or a
    function is read once per pass (twice for KL/hist), a one-shot iterator is read once and replayed.
    ``batch_nums``: how many batches (None: all). ``algo``: KL, hist, abs_max, avg, mse, emd
    (:func:`refquant.calibration.algorithms.static_algorithms`).
    ``skip_tensor_list``: ops reading any listed tensor stay in float (their tensors are still calibrated).

    ``onnx_format``: False (fake quant-dequant ops, frozen float weights) or True (quantize_linear /
    dequantize_linear, int8 weights; mse/emd then use the onnx quant-dequant in their search).

    ``bias_correction``: False; True (the paper: per-channel statistics on their own channel); "paddle"
    (Paddle's ``np.resize`` broadcast, see :func:`bias_correction_w`). onnx_format=False only, as in Paddle
    ("paddle" with onnx_format=True has no effect, as in Paddle).

    ``round_type="adaround"``: weights rounded by AdaRound (:mod:`refquant.quant.adaround`), ``adaround_iters``
    Adam steps per layer at ``learning_rate``, on the calibration batches. ``adaround_mode="paddle"`` stores
    what Paddle 2.x's AdaRound stores instead (the unrounded scaled weights; onnx_format=False only).

    ``calibration``: a :class:`refquant.calibration.Calibration` computed beforehand (e.g. merged from shards with
    :func:`calibrate_model`); the activations are then not calibrated again and ``data_loader`` is only read
    by AdaRound.

    Not implemented (raise NotImplementedError): algos min_max and ptf, ``bias_correction=True`` with
    ``onnx_format=True``.
    """
    a = check_args("quant_post_static", model=model, data_loader=data_loader, batch_nums=batch_nums, algo=algo,
                   hist_percent=hist_percent, bias_correction=bias_correction,
                   quantizable_op_type=quantizable_op_type, is_full_quantize=is_full_quantize,
                   weight_bits=weight_bits, activation_bits=activation_bits,
                   weight_quantize_type=weight_quantize_type, skip_tensor_list=skip_tensor_list,
                   round_type=round_type, onnx_format=onnx_format, learning_rate=learning_rate,
                   adaround_iters=adaround_iters, adaround_mode=adaround_mode, calibration=calibration)
    (batch_nums, hist_percent, quantizable_op_type, weight_bits, activation_bits, skip_tensor_list,
     learning_rate, adaround_iters) = (a["batch_nums"], a["hist_percent"], a["quantizable_op_type"],
                                       a["weight_bits"], a["activation_bits"], a["skip_tensor_list"],
                                       a["learning_rate"], a["adaround_iters"])
    if bias_correction is True and onnx_format:
        raise NotImplementedError("quant_post_static: bias_correction=True with onnx_format=True is not "
                                  "implemented (Paddle ignores bias correction in that format: use 'paddle')")
    if round_type == "adaround" and adaround_mode == "paddle" and onnx_format:
        raise NotImplementedError("quant_post_static: adaround_mode='paddle' with onnx_format=True (Paddle "
                                  "quantizes the scaled weights a second time there) is not reproduced")
    if weight_bits != activation_bits:
        raise ArgumentError("quant_post_static: Paddle requires activation_bits == weight_bits, got "
                            f"{activation_bits} and {weight_bits}")
    if calibration is None and data_loader is None:
        raise ArgumentError("quant_post_static: give a data_loader or a calibration")
    if round_type == "adaround" and adaround_mode == "paper" and data_loader is None:
        raise ArgumentError("quant_post_static: round_type='adaround' needs the data_loader")
    quant_ops, weights, acts = _plan(model, tuple(quantizable_op_type), is_full_quantize, skip_tensor_list)
    if calibration is None:
        cal = calibrate_model(model, data_loader, algo, batch_nums=batch_nums, hist_percent=hist_percent,
                              bits=activation_bits, onnx_format=onnx_format, quantizable_op_type=quantizable_op_type,
                              is_full_quantize=is_full_quantize, skip_tensor_list=skip_tensor_list)
    else:
        cal = calibration
        if cal.algo != algo:
            raise ValueError(f"quant_post_static: the calibration was made with algo {cal.algo!r}, not {algo!r}")
        missing = [name for name in acts if name not in cal.thresholds and name not in cal.zero_size]
        if missing:
            raise ValueError(f"quant_post_static: the calibration has no threshold for {missing[:5]}")
    act_t = {name: float(t) for name, t in cal.thresholds.items()}
    w_t = {w: weight_threshold(model.params[w], op_type, weight_quantize_type) for w, op_type in weights.items()}
    if round_type == "adaround" and adaround_mode == "paper":
        ada_inputs = _layer_inputs(model, _batches(data_loader, batch_nums), [xs[0] for _, _, xs in quant_ops])

    def round_weight(op, w, tw, axis, xs):
        """The integer-valued float32 weight: nearest (the freeze pass's np.round) or AdaRound's choice."""
        if round_type == "round":
            return rounding.freeze_weight(model.params[w], tw, axis, int(weight_bits))
        if adaround_mode == "paddle":
            return adaround.paddle_adaround_weight(model.params[w], tw, axis, int(weight_bits))
        return adaround.adaround_weight(op, model.params[w], tw, axis, ada_inputs[xs[0]], bits=int(weight_bits),
                                        act_threshold=act_t.get(xs[0]), iters=adaround_iters, lr=learning_rate)

    q = model.copy()
    bits = int(activation_bits)
    qdq_of: dict[str, str] = {}
    new_ops: list[Op] = []
    quant_index = {i: (w, xs) for i, w, xs in quant_ops}
    for i, op in enumerate(q.ops):
        if i in quant_index:
            w, xs = quant_index[i]
            for x in xs:
                if x not in act_t:
                    raise ValueError(f"quant_post_static: activation {x!r} of op {op.name!r} got no threshold "
                                     f"(empty in every batch)")
                if x not in qdq_of:
                    q.params[f"{x}@scale"] = np.array([act_t[x]], dtype=np.float32)
                    if onnx_format:
                        qdq_of[x] = f"{x}.quantized.dequantized"
                        new_ops += _linear_pair(q, x, bits)
                    else:
                        qdq_of[x] = f"{x}.quant_dequant"
                        new_ops.append(Op("fake_quantize_dequantize_abs_max", [x, f"{x}@scale"], [qdq_of[x]],
                                          {"bit_length": bits, "round_type": 1}, f"{x}.quant_dequant"))
                op.inputs = [qdq_of.get(n, n) if k != 1 else n for k, n in enumerate(op.inputs)]
            t = w_t[w]
            axis = None if weight_quantize_type == "abs_max" else weight_channel_axis(weights[w])
            tq = np.asarray(t, dtype=np.float32).reshape(-1)
            tw = tq if axis is not None else tq[0]
            q.params[f"{w}@scale"] = tq
            if onnx_format:
                # QuantWeightPass: round, then clip to [-qmax-1, qmax], stored as int8; dequantize_linear feeds op
                qw = rounding.freeze_weight_onnx(model.params[w], tw, axis, int(weight_bits)) \
                    if round_type == "round" else round_weight(op, w, tw, axis, xs)
                q.params[w] = qw.astype(np.int8 if weight_bits <= 8 else np.int16)
                q.trainable.discard(w)
                dq = f"{w}.quantized.dequantized"
                q.params[f"{dq}@zero_point"] = np.zeros(tq.size, dtype=np.int32)
                new_ops.append(Op("dequantize_linear", [w, f"{w}@scale", f"{dq}@zero_point"], [dq],
                                  {"quant_axis": -1 if axis is None else axis, "bit_length": int(weight_bits)},
                                  dq))
                op.inputs = [dq if k == 1 else n for k, n in enumerate(op.inputs)]
            else:
                # QuantizationFreezePass: clip, divide, multiply, np.round; stored dequantized q * T_c / qmax
                qw = round_weight(op, w, tw, axis, xs)
                if bias_correction:
                    qw = bias_correction_w(model.params[w], qw, tw, axis, int(weight_bits),
                                           paddle_broadcast=bias_correction == "paddle")
                q.params[w] = rounding.dequantize_weight(qw, tw, axis, int(weight_bits))
            op.attrs["quantization_type"] = f"post_{algo.lower()}"
            op.attrs["weight_bits"] = int(weight_bits)
            op.attrs["activation_bits"] = bits
            op.attrs["weight_quantize_type"] = weight_quantize_type
            if axis is not None:
                op.attrs["weight_quant_axis"] = axis
        new_ops.append(op)
    observed = [out for op in new_ops
                if op.type in WEIGHT_OP_TYPES or op.type in OBSERVER_OP_TYPES
                for out in op.outputs if out in act_t]
    if onnx_format:
        # AddQuantDequantForInferencePass: an only_observer pair (identity) after every calibrated output that has
        # no real quant pair and is not a graph output; later readers read its output, as in Paddle's graph
        for out in observed:
            if out in qdq_of or out in q.outputs:
                continue
            q.params.setdefault(f"{out}@scale", np.array([act_t[out]], dtype=np.float32))
            pair = _linear_pair(q, out, bits, only_observer=True)
            dq = pair[-1].outputs[0]
            for op in new_ops:
                op.inputs = [dq if n == out and op.type != "quantize_linear" else n for n in op.inputs]
            at = next(k for k, op in enumerate(new_ops) if out in op.outputs) + 1
            new_ops[at:at] = pair
    else:
        # output thresholds (paddle_reference.md 1.9), float32 attributes as in Paddle
        for op in new_ops:
            if op.type in WEIGHT_OP_TYPES or op.type in OBSERVER_OP_TYPES:
                arg = _OUT_ARG.get(op.type, "Out")
                for k, out in enumerate(op.outputs):
                    if out in act_t:
                        op.attrs["out_threshold"] = float(np.float32(act_t[out]))
                        op.attrs[f"{arg}{k}_threshold"] = float(np.float32(act_t[out]))
                        op.attrs["with_quant_attr"] = True
    for name in [n for n in q.params if n.endswith("@scale") or n.endswith("@zero_point")]:
        q.trainable.discard(name)
    q.ops = new_ops
    q.meta["quantization"] = {
        "method": "post_static", "algo": algo, "hist_percent": hist_percent, "weight_bits": int(weight_bits),
        "activation_bits": bits, "weight_quantize_type": weight_quantize_type,
        "quantizable_op_type": list(quantizable_op_type), "is_full_quantize": bool(is_full_quantize),
        "batch_nums": batch_nums, "onnx_format": bool(onnx_format), "bias_correction": bias_correction,
        "round_type": round_type, **({"adaround_mode": adaround_mode, "adaround_iters": int(adaround_iters),
                                      "learning_rate": learning_rate} if round_type == "adaround" else {}),
        "quantized_ops": [op.name for op in new_ops if "quantization_type" in op.attrs],
        "activation_thresholds": act_t,
        "weight_thresholds": {w: (list(map(float, t)) if isinstance(t, list) else float(t)) for w, t in w_t.items()},
        "zero_size": sorted(cal.zero_size),
    }
    q.validate()
    return q


def bias_correction_w(w, qw, threshold, axis: Optional[int], bits: int = 8, *, paddle_broadcast: bool = False):
    """Weight bias correction (arXiv 1810.05723; Paddle's ``utils.bias_correction_w`` + the freeze pass's
    ``np.round``), returning new integer-valued float32 weights.

    ``w_dq = qw * T_c / qmax``; per channel ``mu_c = mean(w - w_dq)``, ``r_c = std(w) / (std(w_dq) + 1e-8)``;
    ``w' = (w_dq + mu) * r``; then re-quantized like the freeze (clip to [-T_c, T_c], ``(w' / T_c) * qmax``) and
    rounded half to even. ``axis=None``: one threshold, scalar statistics.

    ``paddle_broadcast=True`` reproduces Paddle's ``np.resize(vec, w.shape)``, which tiles the per-channel vectors
    in C order (element j gets channel ``j mod C``): wrong for axis-0 weights of rank > 1 (every conv filter),
    right for 2-D axis-1 weights. The default broadcasts each channel's statistics onto its own channel.
    """
    w = np.asarray(w, dtype=np.float32)
    qm = rounding.qmax(bits)
    if axis is None:
        t = float(np.asarray(threshold, dtype=np.float32).reshape(-1)[0])
        w_dq = qw * t / qm
        mean_bias = (w - w_dq).mean()
        std_bias = w.std() / (w_dq.std() + 1e-8)
    else:
        ts = [float(v) for v in np.asarray(threshold, dtype=np.float32).reshape(-1)]
        w_dq = np.array(qw, dtype=np.float32, copy=True)
        for i, s in enumerate(ts):  # Paddle's loop: float32 slices times a Python float
            if axis == 0:
                w_dq[i] = qw[i] * s / qm
            else:
                w_dq[:, i] = qw[:, i] * s / qm
        moved_w, moved_dq = np.moveaxis(w, axis, 0), np.moveaxis(w_dq, axis, 0)
        c = moved_w.shape[0]
        if axis == 0:
            mean_bias = (moved_w - moved_dq).reshape(c, -1).mean(-1)
            std_orig = moved_w.reshape(c, -1).std(-1)
            std_quant = moved_dq.reshape(c, -1).std(-1)
        else:
            diff = w - w_dq
            mean_bias = np.array([diff[:, i].mean() for i in range(c)])
            std_orig = np.array([w[:, i].std() for i in range(c)])
            std_quant = np.array([w_dq[:, i].std() for i in range(c)])
        std_bias = std_orig / (std_quant + 1e-8)
        if paddle_broadcast:
            mean_bias, std_bias = np.resize(mean_bias, w.shape), np.resize(std_bias, w.shape)
        else:
            mean_bias = rounding.channel_view(mean_bias, w.ndim, axis)
            std_bias = rounding.channel_view(std_bias, w.ndim, axis)
    corrected = ((mean_bias + w_dq) * std_bias).astype(np.float32)
    t = np.asarray(threshold, dtype=np.float32)
    return rounding.freeze_weight(corrected, t if axis is not None else t.reshape(-1)[0], axis, bits)


def _linear_pair(q: Model, x: str, bits: int, only_observer: bool = False) -> list[Op]:
    """quantize_linear + dequantize_linear on ``x`` with scale ``<x>@scale`` and int32 zero points (Paddle's
    names: ``<x>.quantized``, ``<x>.quantized.dequantized``, ``<out>@zero_point``)."""
    qn, dq = f"{x}.quantized", f"{x}.quantized.dequantized"
    attrs = {"quant_axis": -1, "bit_length": bits}
    if only_observer:
        attrs["only_observer"] = True
    q.params[f"{qn}@zero_point"] = np.zeros(1, dtype=np.int32)
    q.params[f"{dq}@zero_point"] = np.zeros(1, dtype=np.int32)
    return [Op("quantize_linear", [x, f"{x}@scale", f"{qn}@zero_point"], [qn], dict(attrs), qn),
            Op("dequantize_linear", [qn, f"{x}@scale", f"{dq}@zero_point"], [dq], dict(attrs), dq)]


def thresholds(qmodel: Model) -> dict:
    """Every threshold chosen by :func:`quant_post_static`: activations by FP32 tensor name (float), weights by
    parameter name (float32 array, one per channel; one element for abs_max)."""
    info = qmodel.meta.get("quantization")
    if not info:
        raise ValueError("thresholds: model was not produced by quant_post_static")
    out: dict = {name: float(t) for name, t in info["activation_thresholds"].items()}
    for w, t in info["weight_thresholds"].items():
        out[w] = np.asarray(t if isinstance(t, list) else [t], dtype=np.float32)
    return out
