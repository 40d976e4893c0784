"""Static post-training quantization: Paddle 3.3.1's ``PostTrainingQuantization`` (both graph formats).

Flow (Paddle's post_training_quantization.py; docs/ptq.md), one function per step of Paddle's ``quantize()``:

1. :func:`_collect_target_varnames`: for every op whose type is a quantizable *weight* op (conv2d,
   depthwise_conv2d, conv2d_transpose, mul, matmul, matmul_v2 in ``quantizable_op_type``) its weight parameter
   (the second input) is a weight and its other non-parameter inputs and outputs are activations; every output of
   an *observer* op type (Paddle's activation-op dict, see :data:`OBSERVER_OP_TYPES`) is an activation too (only
   for ``out_threshold``).
2. :func:`_sample_activations` (Paddle's ``_preprocessing``, ``_sampling``, ``_calculate_kl_hist_threshold``):
   calibrate the activations with :func:`refquant.calibration.calibrate` over ``batch_nums`` batches, each
   observed as the FP32 forward computes it (KL makes two passes, as Paddle does; the second skips the last
   batch, histogrammed in the first; hist makes one where each batch's largest values decide Paddle's threshold
   exactly, and a second only for the other tensors: ``keep_histograms=False`` of
   :func:`refquant.calibration.calibrate`).
3. :func:`_sample_weights`: weight thresholds, :func:`refquant.calibration.weight_threshold` (channel axis 0 for
   conv, 1 for mul/matmul).
4. :func:`_update_program`: rewrite a copy. :func:`_insert_quant_dequant` (``QuantizationTransformPass``): each
   quantized op's activation input goes through a ``fake_quantize_dequantize_abs_max`` op (static scale parameter
   ``<tensor>@scale``, round_type 1 as Paddle's ``fake_quantize_range_abs_max``), shared per tensor;
   :func:`_freeze_weight` (``QuantizationFreezePass``): its weight is frozen
   (:func:`refquant.reference.rounding.freeze_weight`, half-to-even, or AdaRound: :func:`_weight_rounding`) and
   stored dequantized ``q * T_c / qmax`` in float32, its thresholds in ``<weight>@scale``; quantized ops get
   ``quantization_type = "post_<algo>"``.
5. :func:`_save_output_threshold` (1.9): ``out_threshold`` / ``<OutArg>0_threshold`` / ``with_quant_attr``
   attributes.

``onnx_format=True`` (1.8 "new format") instead puts ``quantize_linear`` + ``dequantize_linear`` (round_type 0) in
front of each quantized activation input (``QuantizationTransformPassV2``), stores each weight as int8 (round, then
clip to [-qmax-1, qmax]) read through a ``dequantize_linear`` with its ``quant_axis`` (``QuantWeightPass``), and
in step 5 :func:`_add_quant_dequant_for_inference` (``AddQuantDequantForInferencePass``) adds ``only_observer``
pairs (identity, carrying T) after every other calibrated output except the graph outputs; no ``out_threshold``
attributes, as in Paddle.

Running the rewritten model gives ``conv(qdq(x), w_dq)``; Paddle's frozen model computes ``conv(q_x, q_w)`` on
integer-valued floats and rescales by ``T_w[c] * T_a / (qmax * qmax)`` after the op: equal in exact arithmetic,
within float32 rounding otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

from ..calibration import algorithms
from ..calibration import Calibration, calibrate, weight_channel_axis, weight_threshold
from ..errors import ArgumentError, ArgumentTypeError
from ..graph import Model, Op, check_model
from .. import _args
from ..ops.registry import OPS, op_types_with
from . import adaround
from ..reference import rounding

#: Paddle's op names that refquant has no op of its own for (its importers map them to refquant's: matmul_v2 ->
#: matmul, reshape2 -> reshape, flatten_contiguous_range -> flatten, transpose2 -> transpose, ...) or no op at all:
#: ``quantizable_op_type`` accepts them as Paddle does; a refquant graph does not hold them.
_PADDLE_ONLY_WEIGHT_OP_TYPES = ("matmul_v2",)
_PADDLE_ONLY_OBSERVER_OP_TYPES = frozenset({
    "matmul_v2", "leaky_relu", "prelu", "swish", "reshape2", "transpose2", "flatten_contiguous_range", "squeeze2",
    "unsqueeze2", "nearest_interp_v2", "bilinear_interp_v2", "split", "pow", "reduce_max", "lookup_table_v2",
})
#: Paddle's ``SUPPORT_WEIGHT_QUANTIZATION_OP_DICT`` keys: the ops with the ``weight_inputs`` trait
#: (:mod:`refquant.ops.registry`) and Paddle's matmul_v2.
WEIGHT_OP_TYPES = op_types_with("weight_inputs") + _PADDLE_ONLY_WEIGHT_OP_TYPES
#: Observer op types, Paddle's ``SUPPORT_ACT_QUANTIZATION_OP_DICT``: the ops with the ``observed`` trait and the
#: Paddle-only names above.
OBSERVER_OP_TYPES = frozenset(op_types_with("observed")) | _PADDLE_ONLY_OBSERVER_OP_TYPES

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


def _check_unfused(who, value):
    """A model, not an ``optimize_fp32`` one: its fused convs are no weight op, PTQ would leave them float."""
    fused = sorted({op.name for op in check_model(who, value).ops if op.type == "conv2d_bias_act"})
    if fused:
        raise ArgumentError(f"{who}: the model has {len(fused)} conv2d_bias_act op(s) (e.g. {fused[0]!r}) from "
                            "refquant.deploy.optimize_fp32, an FP32 deployment graph; quantize the unfused model")
    return value


#: One checker per public argument of quant_post_static / calibrate_model: ``(who, value) -> normalised value``.
_CHECKS = {
    "model": _check_unfused,
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


def _weight_input(op_type: str) -> int:
    """The input position of a weight op's weight: its ``weight_inputs`` trait (1 for Paddle's matmul_v2)."""
    opdef = OPS.get(op_type)
    return opdef.weight_inputs[0] if opdef is not None and opdef.weight_inputs else 1


def _collect_target_varnames(model: Model, quantizable_op_type, is_full_quantize: bool, skip_tensor_list):
    """Step 1, Paddle's ``_collect_target_varnames``: the quantized ops ``[(op index, weight, activation
    inputs)]``, the weights ``{weight: op type}`` and the activations to calibrate, in graph order."""
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
            k_w = _weight_input(op.type)
            w = op.inputs[k_w] if len(op.inputs) > k_w and op.inputs[k_w] in model.params else None
            for name in op.inputs + op.outputs:
                add_act(name)
            if w is None:
                continue  # Paddle's transform pass skips mul/matmul with all-activation inputs
            if any(n in skip for n in op.inputs if n):
                continue
            xs = [n for k, n in enumerate(op.inputs) if n and k != k_w and n not in model.params]
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
                    is_full_quantize: bool = False, skip_tensor_list=None, thresholds: bool = True,
                    keep_histograms: bool = True) -> Calibration:
    """Calibrate the activations :func:`quant_post_static` would quantize, running the FP32 model over
    ``data_loader`` (same arguments). The result can be merged with another shard's
    (:meth:`Calibration.merge`) and passed to ``quant_post_static(..., calibration=...)``; a shard to be merged
    needs no thresholds of its own (``thresholds=False``, see :func:`refquant.calibration.calibrate`).

    KL and hist over shards: first merge every shard's ``calibrate_model(..., algo="ranges")`` (the pass-1 abs
    ranges), then calibrate each shard with ``ranges=merged.ranges`` so that all histograms share one range.
    ``keep_histograms=False``: hist in one pass where that decides the threshold exactly (see
    :func:`refquant.calibration.calibrate`; the observers do not merge then).
    """
    from ..executor import run

    a = check_args("calibrate_model", model=model, data_loader=data_loader, batch_nums=batch_nums,
                   hist_percent=hist_percent, bits=bits, onnx_format=onnx_format,
                   quantizable_op_type=quantizable_op_type, is_full_quantize=is_full_quantize,
                   skip_tensor_list=skip_tensor_list)
    _args.choice("calibrate_model", "algo", algo, algorithms.algorithm_names() + ("ranges",))
    if data_loader is None:
        raise ArgumentError("calibrate_model: data_loader is None")
    _, _, acts = _collect_target_varnames(model, a["quantizable_op_type"], is_full_quantize, skip_tensor_list)
    get = _batches(data_loader, a["batch_nums"])
    names = frozenset(acts)

    def streamed(feeds):
        # the FP32 forward, each activation observed as its op computes it; the executor frees every tensor after
        # its last reader, so a batch's activations are never all in memory at once
        return lambda visit: run(model, feeds, outputs=(), observe=lambda n, v: visit(n, v) if n in names else None)

    def activation_batches():
        return map(streamed, get())

    return calibrate(activation_batches, algo, bits=a["bits"], hist_percent=a["hist_percent"],
                     onnx_format=onnx_format, ranges=ranges, producers=model.origins(), thresholds=thresholds,
                     keep_histograms=keep_histograms)


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

    The body runs the module docstring's steps, one function each, as Paddle's ``quantize()`` does.
    """
    a = check_args("quant_post_static", model=model, data_loader=data_loader, batch_nums=batch_nums, algo=algo,
                   hist_percent=hist_percent, bias_correction=bias_correction,
                   quantizable_op_type=quantizable_op_type, is_full_quantize=is_full_quantize,
                   weight_bits=weight_bits, activation_bits=activation_bits,
                   weight_quantize_type=weight_quantize_type, skip_tensor_list=skip_tensor_list,
                   round_type=round_type, onnx_format=onnx_format, learning_rate=learning_rate,
                   adaround_iters=adaround_iters, adaround_mode=adaround_mode, calibration=calibration)
    _check_combinations(a, data_loader, calibration)
    o = _Options(algo=algo, batch_nums=a["batch_nums"], hist_percent=a["hist_percent"],
                 quantizable_op_type=tuple(a["quantizable_op_type"]), is_full_quantize=is_full_quantize,
                 skip_tensor_list=a["skip_tensor_list"], weight_bits=int(a["weight_bits"]),
                 activation_bits=int(a["activation_bits"]), weight_quantize_type=weight_quantize_type,
                 onnx_format=onnx_format, bias_correction=bias_correction, round_type=round_type,
                 adaround_mode=adaround_mode, adaround_iters=a["adaround_iters"], learning_rate=a["learning_rate"])
    quant_ops, weights, acts = _collect_target_varnames(model, o.quantizable_op_type, o.is_full_quantize,
                                                        o.skip_tensor_list)                        # 1
    cal = _sample_activations(model, data_loader, calibration, acts, o)                            # 2
    act_t = {name: float(t) for name, t in cal.thresholds.items()}
    w_t = _sample_weights(model, weights, o.weight_quantize_type)                                  # 3
    round_weight = _weight_rounding(model, data_loader, quant_ops, act_t, o)
    q, qdq_of = _update_program(model, quant_ops, weights, act_t, w_t, round_weight, o)            # 4
    if o.onnx_format:                                                                              # 5
        _add_quant_dequant_for_inference(q, qdq_of, act_t, o.activation_bits)
    else:
        _save_output_threshold(q, act_t)
    for name in [n for n in q.params if n.endswith("@scale") or n.endswith("@zero_point")]:
        q.trainable.discard(name)
    q.meta["quantization"] = _quantization_meta(q, o, act_t, w_t, cal)
    q.validate()
    return q


@dataclass(frozen=True)
class _Options:
    """The checked arguments of :func:`quant_post_static`, as its steps read them."""
    algo: str
    batch_nums: Optional[int]
    hist_percent: float
    quantizable_op_type: tuple
    is_full_quantize: bool
    skip_tensor_list: Optional[list]
    weight_bits: int
    activation_bits: int
    weight_quantize_type: str
    onnx_format: bool
    bias_correction: bool | str
    round_type: str
    adaround_mode: str
    adaround_iters: int
    learning_rate: float


def _check_combinations(a: dict, data_loader, calibration) -> None:
    """The option combinations Paddle refuses or refquant does not reproduce (each argument is checked alone by
    :func:`check_args`)."""
    onnx_format, round_type, adaround_mode = a["onnx_format"], a["round_type"], a["adaround_mode"]
    if a["bias_correction"] is True and onnx_format:
        raise NotImplementedError("quant_post_static: bias_correction=True with onnx_format=True is not "
                                  "implemented (Paddle ignores bias correction in that format: use 'paddle')")
    if round_type == "adaround" and adaround_mode == "paddle" and onnx_format:
        raise NotImplementedError("quant_post_static: adaround_mode='paddle' with onnx_format=True (Paddle "
                                  "quantizes the scaled weights a second time there) is not reproduced")
    if a["weight_bits"] != a["activation_bits"]:
        raise ArgumentError("quant_post_static: Paddle requires activation_bits == weight_bits, got "
                            f"{a['activation_bits']} and {a['weight_bits']}")
    if calibration is None and data_loader is None:
        raise ArgumentError("quant_post_static: give a data_loader or a calibration")
    if round_type == "adaround" and adaround_mode == "paper" and data_loader is None:
        raise ArgumentError("quant_post_static: round_type='adaround' needs the data_loader")


def _sample_activations(model: Model, data_loader, calibration: Optional[Calibration], acts, o: _Options
                        ) -> Calibration:
    """Step 2, Paddle's ``_preprocessing`` + ``_sampling`` + ``_calculate_kl_hist_threshold``: the activation
    thresholds of ``o.algo`` (:func:`calibrate_model`), or the given ``calibration`` checked against ``acts``."""
    if calibration is None:
        return calibrate_model(model, data_loader, o.algo, batch_nums=o.batch_nums, hist_percent=o.hist_percent,
                               bits=o.activation_bits, onnx_format=o.onnx_format,
                               quantizable_op_type=o.quantizable_op_type, is_full_quantize=o.is_full_quantize,
                               skip_tensor_list=o.skip_tensor_list, keep_histograms=False)
    if calibration.algo != o.algo:
        raise ValueError(f"quant_post_static: the calibration was made with algo {calibration.algo!r}, not "
                         f"{o.algo!r}")
    missing = [name for name in acts if name not in calibration.thresholds and name not in calibration.zero_size]
    if missing:
        raise ValueError(f"quant_post_static: the calibration has no threshold for {missing[:5]}")
    return calibration


def _sample_weights(model: Model, weights: Mapping[str, str], weight_quantize_type: str) -> dict:
    """Step 3, the weight part of Paddle's ``_sampling``: ``{weight: threshold}`` (a float for abs_max, one float
    per channel for channel_wise_abs_max)."""
    return {w: weight_threshold(model.params[w], op_type, weight_quantize_type) for w, op_type in weights.items()}


def _weight_rounding(model: Model, data_loader, quant_ops, act_t: Mapping[str, float], o: _Options):
    """``round_weight(op, w, tw, axis, xs)``: the integer-valued float32 weight, nearest (the freeze pass's
    np.round) or AdaRound's choice (Paddle's ``_adaround_apply``, which reads the calibration batches again)."""
    if o.round_type == "adaround" and o.adaround_mode == "paper":
        ada_inputs = _layer_inputs(model, _batches(data_loader, o.batch_nums), [xs[0] for _, _, xs in quant_ops])

    def round_weight(op, w, tw, axis, xs):
        if o.round_type == "round":
            return rounding.freeze_weight(model.params[w], tw, axis, o.weight_bits)
        if o.adaround_mode == "paddle":
            return adaround.paddle_adaround_weight(model.params[w], tw, axis, o.weight_bits)
        return adaround.adaround_weight(op, model.params[w], tw, axis, ada_inputs[xs[0]], bits=o.weight_bits,
                                        act_threshold=act_t.get(xs[0]), iters=o.adaround_iters,
                                        lr=o.learning_rate)
    return round_weight


def _update_program(model: Model, quant_ops, weights: Mapping[str, str], act_t: Mapping[str, float],
                    w_t: Mapping, round_weight, o: _Options) -> tuple[Model, dict[str, str]]:
    """Step 4, Paddle's ``_update_program``: a copy of ``model`` where each quantized op reads its activations
    through quant-dequant ops (:func:`_insert_quant_dequant`, the ``QuantizationTransformPass``) and its weight
    frozen (:func:`_freeze_weight`: ``QuantizationFreezePass``, or ``QuantWeightPass`` with onnx_format), marked
    ``quantization_type = "post_<algo>"``. Returns the copy and ``{activation: its quant-dequant output}``."""
    q = model.copy()
    qdq_of: dict[str, str] = {}
    new_ops: list[Op] = []
    quant_index = {i: (w, xs) for i, w, xs in quant_ops}
    for i, op in enumerate(q.ops):
        if i in quant_index:
            w, xs = quant_index[i]
            new_ops += _insert_quant_dequant(q, op, xs, act_t, qdq_of, o)
            new_ops += _freeze_weight(model, q, op, w, weights[w], w_t[w], xs, round_weight, o)
            op.attrs["quantization_type"] = f"post_{o.algo.lower()}"
            op.attrs["weight_bits"] = o.weight_bits
            op.attrs["activation_bits"] = o.activation_bits
            op.attrs["weight_quantize_type"] = o.weight_quantize_type
            if o.weight_quantize_type != "abs_max":
                op.attrs["weight_quant_axis"] = weight_channel_axis(weights[w])
        new_ops.append(op)
    q.ops = new_ops
    return q, qdq_of


def _insert_quant_dequant(q: Model, op: Op, xs, act_t: Mapping[str, float], qdq_of: dict, o: _Options
                          ) -> list[Op]:
    """``QuantizationTransformPass`` (V2 with onnx_format) on one op: the new quant-dequant ops of its activation
    inputs ``xs`` (one per tensor, shared by every reader: ``qdq_of``), and ``op`` rewired to read them."""
    bits = o.activation_bits
    new_ops: list[Op] = []
    for x in xs:
        if x not in act_t:
            raise ValueError(f"quant_post_static: activation {x!r} of op {op.name!r} got no threshold "
                             f"(empty in every batch)")
        if x not in qdq_of:
            q.params[f"{x}@scale"] = np.array([act_t[x]], dtype=np.float32)
            if o.onnx_format:
                qdq_of[x] = f"{x}.quantized.dequantized"
                new_ops += _linear_pair(q, x, bits)
            else:
                qdq_of[x] = f"{x}.quant_dequant"
                new_ops.append(Op("fake_quantize_dequantize_abs_max", [x, f"{x}@scale"], [qdq_of[x]],
                                  {"bit_length": bits, "round_type": 1}, f"{x}.quant_dequant"))
        k_w = _weight_input(op.type)
        op.inputs = [qdq_of.get(n, n) if k != k_w else n for k, n in enumerate(op.inputs)]
    return new_ops


def _freeze_weight(model: Model, q: Model, op: Op, w: str, op_type: str, t, xs, round_weight, o: _Options
                   ) -> list[Op]:
    """The weight ``w`` of ``op`` (threshold ``t``) quantized in ``q``, its thresholds in ``<w>@scale``.
    ``QuantizationFreezePass``: clip, divide, multiply, np.round (or AdaRound), bias correction, stored
    dequantized ``q * T_c / qmax`` in float32. ``QuantWeightPass`` (onnx_format): round, clip to [-qmax-1, qmax],
    stored as int8 and read through a new ``dequantize_linear`` op (returned)."""
    bits = o.weight_bits
    axis = None if o.weight_quantize_type == "abs_max" else weight_channel_axis(op_type)
    tq = np.asarray(t, dtype=np.float32).reshape(-1)
    tw = tq if axis is not None else tq[0]
    q.params[f"{w}@scale"] = tq
    if not o.onnx_format:
        qw = round_weight(op, w, tw, axis, xs)
        if o.bias_correction:
            qw = bias_correction_w(model.params[w], qw, tw, axis, bits,
                                   paddle_broadcast=o.bias_correction == "paddle")
        q.params[w] = rounding.dequantize_weight(qw, tw, axis, bits)
        return []
    qw = rounding.freeze_weight_onnx(model.params[w], tw, axis, bits) \
        if o.round_type == "round" else round_weight(op, w, tw, axis, xs)
    q.params[w] = qw.astype(np.int8 if bits <= 8 else np.int16)
    q.trainable.discard(w)
    dq = f"{w}.quantized.dequantized"
    q.params[f"{dq}@zero_point"] = np.zeros(tq.size, dtype=np.int32)
    k_w = _weight_input(op.type)
    op.inputs = [dq if k == k_w else n for k, n in enumerate(op.inputs)]
    return [Op("dequantize_linear", [w, f"{w}@scale", f"{dq}@zero_point"], [dq],
               {"quant_axis": -1 if axis is None else axis, "bit_length": bits}, dq)]


def _observed_outputs(q: Model, act_t: Mapping[str, float]) -> list[str]:
    """The calibrated outputs of weight and observer ops, in graph order."""
    return [out for op in q.ops if op.type in WEIGHT_OP_TYPES or op.type in OBSERVER_OP_TYPES
            for out in op.outputs if out in act_t]


def _save_output_threshold(q: Model, act_t: Mapping[str, float]) -> None:
    """Step 5 (onnx_format False), Paddle's ``_save_output_threshold`` (post_training_quantization.py): float32
    ``out_threshold`` / ``<OutArg><k>_threshold`` (the op's ``out_arg`` trait) and ``with_quant_attr`` on every
    weight and observer op with a calibrated output."""
    for op in q.ops:
        if op.type in WEIGHT_OP_TYPES or op.type in OBSERVER_OP_TYPES:
            arg = OPS[op.type].out_arg if op.type in OPS else "Out"
            for k, out in enumerate(op.outputs):
                if out in act_t:
                    op.attrs["out_threshold"] = float(np.float32(act_t[out]))
                    op.attrs[f"{arg}{k}_threshold"] = float(np.float32(act_t[out]))
                    op.attrs["with_quant_attr"] = True


def _add_quant_dequant_for_inference(q: Model, qdq_of: Mapping[str, str], act_t: Mapping[str, float],
                                     bits: int) -> None:
    """Step 5 (onnx_format True), Paddle's ``AddQuantDequantForInferencePass``: an only_observer pair (identity)
    after every calibrated output that has no real quant pair and is not a graph output; later readers read its
    output, as in Paddle's graph."""
    new_ops = q.ops
    for out in _observed_outputs(q, act_t):
        if out in qdq_of or out in q.outputs:
            continue
        q.params.setdefault(f"{out}@scale", np.array([act_t[out]], dtype=np.float32))
        pair = _linear_pair(q, out, bits, only_observer=True)
        dq = pair[-1].outputs[0]
        for op in new_ops:
            op.inputs = [dq if n == out and op.type != "quantize_linear" else n for n in op.inputs]
        at = next(k for k, op in enumerate(new_ops) if out in op.outputs) + 1
        new_ops[at:at] = pair


def _quantization_meta(q: Model, o: _Options, act_t: Mapping[str, float], w_t: Mapping, cal: Calibration) -> dict:
    """``q.meta["quantization"]``: the options, the quantized ops and every threshold chosen."""
    return {
        "method": "post_static", "algo": o.algo, "hist_percent": o.hist_percent, "weight_bits": o.weight_bits,
        "activation_bits": o.activation_bits, "weight_quantize_type": o.weight_quantize_type,
        "quantizable_op_type": list(o.quantizable_op_type), "is_full_quantize": bool(o.is_full_quantize),
        "batch_nums": o.batch_nums, "onnx_format": bool(o.onnx_format), "bias_correction": o.bias_correction,
        "round_type": o.round_type, **({"adaround_mode": o.adaround_mode, "adaround_iters": int(o.adaround_iters),
                                        "learning_rate": o.learning_rate} if o.round_type == "adaround" else {}),
        "quantized_ops": [op.name for op in q.ops if "quantization_type" in op.attrs],
        "activation_thresholds": act_t,
        "weight_thresholds": {w: (list(map(float, t)) if isinstance(t, list) else float(t)) for w, t in w_t.items()},
        "zero_size": sorted(cal.zero_size),
    }


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
