"""PaddleSlim 2.6's static quantization calls, with its signatures, on refquant's runtime (docs/paddleslim_compat.md).

Changing one import line runs PaddleSlim code on refquant::

    from refquant.paddleslim import quant_post_static, quant_post_dynamic, quant_embedding, quant_aware, convert

Every parameter keeps PaddleSlim 2.6's name, position and default (``paddleslim/quant/quanter.py``,
``paddleslim/quant/quant_embedding.py``) and, where refquant can give it, its meaning; the work is done by
:mod:`refquant.quant`. What differs:

* a Paddle *program* is a refquant :class:`~refquant.graph.Model`; ``model_dir`` may be a Paddle inference model
  directory (read with :func:`refquant.io.import_paddle`), a ``.rq`` or ``.onnx`` file, or a Model;
* ``executor``, ``place`` and ``scope`` are accepted and ignored (refquant has its own CPU runtime and keeps
  parameters in the Model), but a GPU / XPU place is refused: it asks for a device refquant does not run on;
* refquant cannot write Paddle's program format: the quantized model is written as a refquant ``.rq`` file (an
  ONNX file when ``save_model_filename`` ends in ``.onnx``) and also returned;
* an argument whose PaddleSlim meaning refquant cannot give raises :class:`~refquant.errors.ArgumentError`
  saying why, instead of being silently ignored.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Optional

import numpy as np

from . import _args
from .calibration import algorithms
from .errors import ArgumentError, ArgumentTypeError, ShapeError
from .graph import Model

__all__ = ["quant_post_static", "quant_post", "quant_post_dynamic", "quant_post_only_weight", "quant_embedding",
           "quant_aware", "convert", "PaddleFormatWarning", "load_model", "QAT_CONFIG_DEFAULTS"]

#: Paddle's ``SUPPORT_WEIGHT_QUANTIZATION_OP_DICT`` keys (``paddle/static/quantization/quant_config.py``).
PADDLE_WEIGHT_OP_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
#: Paddle's ``SUPPORT_ACT_QUANTIZATION_OP_DICT`` keys: ops whose float inputs get a quant-dequant pair when listed
#: and none of their inputs is a parameter (``AddQuantDequantPass``).
PADDLE_ACT_OP_TYPES = (
    "mul", "matmul", "matmul_v2", "pool2d", "elementwise_add", "concat", "softmax", "argmax", "transpose", "equal",
    "gather", "greater_equal", "greater_than", "less_equal", "less_than", "mean", "not_equal", "reshape",
    "reshape2", "transpose2", "nearest_interp", "trilinear_interp", "slice", "squeeze", "elementwise_sub", "relu",
    "relu6", "leaky_relu", "prelu", "tanh", "swish", "dropout", "batch_norm", "layer_norm", "sigmoid",
    "elementwise_mul", "elementwise_pow", "hard_swish", "hard_sigmoid", "gru", "lstm", "pad2d", "pad3d", "flatten",
    "flatten2", "unsqueeze2", "flatten_contiguous_range", "split", "squeeze2", "nearest_interp_v2",
    "bilinear_interp", "bilinear_interp_v2", "fill_constant_batch_size_like", "arg_max", "abs", "assign", "cast",
    "clip", "box_coder", "crop", "cumsum", "expand_v2", "fill_any_like", "fill_constant", "gelu", "instance_norm",
    "lookup_table", "lookup_table_v2", "norm", "p_norm", "pow", "reduce_mean", "stack", "top_k_v2", "logical_and",
    "logical_not", "meshgrid", "roi_align", "strided_slice", "where", "grid_sampler", "tile", "group_norm",
    "reduce_sum", "square", "softplus", "shuffle_channel", "reduce_max", "scale")
#: refquant op type -> the Paddle op types it stands for, where the names differ.
_PADDLE_NAMES = {"reshape": ("reshape", "reshape2"), "flatten": ("flatten", "flatten2", "flatten_contiguous_range"),
                 "transpose": ("transpose", "transpose2"), "lookup_table": ("lookup_table", "lookup_table_v2"),
                 "squeeze": ("squeeze", "squeeze2"), "unsqueeze": ("unsqueeze2",)}
_MODEL_SUFFIXES = (".rq", ".onnx")


class PaddleFormatWarning(UserWarning):
    """The quantized model was written in refquant's format where PaddleSlim writes Paddle's program files."""


# ---- shared checks ------------------------------------------------------------------------------------------
def _check_place(who: str, place, what: str = "place") -> None:
    """A CPU place (``paddle.CPUPlace()``, ``"cpu"``) or None; a GPU or other accelerator place is refused."""
    if place is None:
        return
    if isinstance(place, str):
        text = place.strip().lower()
    else:
        kind = type(place).__name__
        if kind in ("CPUPlace",):
            return
        if kind not in ("Place", "CUDAPlace", "CUDAPinnedPlace", "XPUPlace", "IPUPlace", "CustomPlace", "NPUPlace",
                        "MLUPlace"):
            raise ArgumentTypeError(f"{who}: {what} must be a Paddle place (paddle.CPUPlace()), 'cpu' or None, got "
                                    f"{kind}")
        text = f"{kind} {place!r}".lower()
    if text == "cpu" or text.endswith("(cpu)"):  # "cpu", a generic paddle Place printed "Place(cpu)"
        return
    if "gpu" in text or "cuda" in text:
        raise ArgumentError(f"{who}: {what} {place!r} is a CUDA device; refquant runs on the CPU only (its own "
                            f"NumPy / Cython runtime, no GPU kernels). Pass paddle.CPUPlace() or 'cpu'")
    raise ArgumentError(f"{who}: {what} {place!r} is not the CPU; refquant runs on the CPU only. Pass "
                        f"paddle.CPUPlace() or 'cpu'")


def _check_executor(who: str, executor) -> None:
    """An executor is accepted and ignored, but its place must be the CPU (see :func:`_check_place`)."""
    if executor is not None and hasattr(executor, "place"):
        _check_place(who, executor.place, "executor.place")


def _path(who: str, name: str, value) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ArgumentTypeError(f"{who}: {name} must be a non-empty path string, got {type(value).__name__} "
                                f"{value!r}")
    return value


def _optional_name(who: str, name: str, value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ArgumentTypeError(f"{who}: {name} must be a non-empty file name or None, got {value!r}")
    return value


def load_model(model_dir, model_filename=None, params_filename=None, *, who: str = "load_model",
               name: str = "model_dir") -> Model:
    """The FP32 model a PaddleSlim call names: a :class:`Model` as is; a ``.rq`` file (:func:`refquant.io.load`);
    an ``.onnx`` file (:func:`refquant.io.import_onnx`); otherwise a Paddle inference model, a directory or a path
    prefix, read with :func:`refquant.io.import_paddle` and PaddleSlim's ``model_filename`` /
    ``params_filename``."""
    if isinstance(model_dir, Model):
        if model_filename is not None or params_filename is not None:
            raise ArgumentError(f"{who}: model_filename / params_filename name files inside a model directory; "
                                f"{name} is already a refquant Model")
        return model_dir
    path = _path(who, name, model_dir)
    model_filename = _optional_name(who, "model_filename", model_filename)
    params_filename = _optional_name(who, "params_filename", params_filename)
    if path.endswith(_MODEL_SUFFIXES) and os.path.isfile(path):
        if model_filename is not None or params_filename is not None:
            raise ArgumentError(f"{who}: model_filename / params_filename apply to a Paddle model directory, not "
                                f"to the file {path!r}")
        from .io import import_onnx, load
        return load(path) if path.endswith(".rq") else import_onnx(path)
    if not os.path.exists(path) and not any(os.path.isfile(path + ext) for ext in (".pdmodel", ".json")):
        raise ArgumentError(f"{who}: {name} {path!r} does not exist (a Paddle inference model directory, a .rq or "
                            f".onnx file, or a refquant Model)")
    from .io.paddle import import_paddle
    return import_paddle(path.rstrip("/\\") or path, model_filename=model_filename, params_filename=params_filename)


def _write(who: str, model: Model, directory, filename: Optional[str]) -> Path:
    """Write ``model`` into ``directory`` under PaddleSlim's file name rule (``model.pdmodel`` -> stem ``model``):
    ``<stem>.rq`` with a :class:`PaddleFormatWarning`, or the exact name when it ends in ``.rq`` / ``.onnx``."""
    directory = Path(_path(who, "the save directory", directory))
    filename = _optional_name(who, "save_model_filename", filename) or "model.pdmodel"
    if os.path.basename(filename) != filename:
        raise ArgumentError(f"{who}: save_model_filename must be a file name without a directory, got {filename!r}")
    if directory.exists() and not directory.is_dir():
        raise ArgumentError(f"{who}: {str(directory)!r} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".onnx"):
        from .io import export_onnx
        target = directory / filename
        export_onnx(model, target)
        return target
    if filename.endswith(".rq"):
        target = directory / filename
    else:
        stem = filename[:-len(".pdmodel")] if filename.endswith(".pdmodel") else filename
        target = directory / f"{stem}.rq"
        warnings.warn(f"{who}: refquant cannot write Paddle's program format (.pdmodel / .pdiparams); the quantized "
                      f"model was written in refquant's format to {target} (refquant.load reads it; name "
                      f"save_model_filename '*.onnx' for ONNX)", PaddleFormatWarning, stacklevel=3)
    from .io import save
    save(model, target)
    return target


def _paddle_types(op_type: str) -> tuple:
    return _PADDLE_NAMES.get(op_type, (op_type,))


def _activation_only_ops(model: Model, act_types, skip_tensors=(), skip_patterns=()) -> list:
    """The ops Paddle's ``AddQuantDequantPass`` would quantize for ``act_types``: a listed type and no parameter
    input (an op reading a parameter is left alone), not skipped."""
    act_types, skip_tensors = set(act_types), set(skip_tensors or ())
    out = []
    for op in model.ops:
        if not act_types.intersection(_paddle_types(op.type)):
            continue
        inputs = [n for n in op.inputs if n]
        if not inputs or any(n in model.params for n in inputs) or any(n in skip_tensors for n in inputs):
            continue
        scope = f"{op.name} {op.attrs.get('op_namescope', '')}"
        if any(p in scope for p in skip_patterns):
            continue
        out.append(op)
    return out


def _refuse_activation_only(who: str, ops: list, origin: str) -> None:
    if ops:
        names = ", ".join(f"{op.name!r} ({op.type})" for op in ops[:5]) + (" ..." if len(ops) > 5 else "")
        raise ArgumentError(f"{who}: {origin} makes Paddle put quant-dequant ops on the inputs of ops without a "
                            f"weight ({len(ops)} here: {names}); refquant quantizes the inputs and weights of weight "
                            f"ops only. Leave those op types out of the list")


# ---- calibration data, as PostTrainingQuantization feeds it --------------------------------------------------
def _one_shot(source) -> bool:
    return not callable(source) and isinstance(source, Iterator)


def _iterate(who: str, name: str, source):
    """A fresh iterator over ``source``: a function is called (PaddleSlim's generators and ``DataLoader`` are
    called), an iterable iterated."""
    items = source() if callable(source) else source
    if isinstance(items, (Mapping, str, bytes)) or not isinstance(items, Iterable):
        raise ArgumentTypeError(f"{who}: {name} must be an iterable or a function returning one, got "
                                f"{type(items).__name__}")
    return iter(items)


def _feed_dict(who: str, name: str, model: Model, item, index: int, ignored: set) -> dict:
    """One batch as a feed dict: a dict by name (names the model does not have are dropped, as Paddle's executor
    drops them), a one-dict list (a ``paddle.io.DataLoader`` batch, one dict per device), or a list / tuple of
    arrays in the order of the model's inputs (extra fields, e.g. labels, are dropped)."""
    inputs = model.inputs
    if isinstance(item, (list, tuple)) and len(item) == 1 and isinstance(item[0], Mapping):
        item = item[0]
    if isinstance(item, Mapping):
        feeds = {}
        for key, value in item.items():
            if key in inputs:
                feeds[key] = np.asarray(value)
            else:
                ignored.add(str(key))
        missing = [n for n in inputs if n not in feeds]
        if missing:
            raise ArgumentError(f"{who}: batch {index} of {name} has no value for the model input(s) {missing} "
                                f"(its keys: {sorted(map(str, item))})")
        return feeds
    if isinstance(item, (list, tuple)):
        if len(item) < len(inputs):
            raise ArgumentError(f"{who}: batch {index} of {name} has {len(item)} field(s); the model has "
                                f"{len(inputs)} inputs {inputs}, fed in this order")
        return {n: np.asarray(v) for n, v in zip(inputs, item)}
    raise ArgumentTypeError(f"{who}: batch {index} of {name} is a {type(item).__name__}; a batch is a dict "
                            f"{{input name: array}} or a list / tuple of arrays in the model's input order "
                            f"{inputs} (for one input: [array])")


def _stack_samples(who: str, model: Model, samples: list, first: int) -> dict:
    """``batch_size`` samples as one feed dict, as Paddle's sample-generator loader builds it: field k of every
    sample goes to the k-th model input (extra fields are dropped), stacked by ``np.array(..., dtype=input
    dtype)``, and reshaped to the input's shape when the ranks differ and at most one dimension is dynamic."""
    specs = model.input_specs
    for k, sample in enumerate(samples):
        if not isinstance(sample, (list, tuple)):
            raise ArgumentTypeError(f"{who}: sample {first + k} of sample_generator is a {type(sample).__name__}; "
                                    f"a sample is a list / tuple with one field per model input "
                                    f"{model.inputs} (for one input: (array,))")
        if len(sample) < len(specs):
            raise ArgumentError(f"{who}: sample {first + k} of sample_generator has {len(sample)} field(s); the "
                                f"model has {len(specs)} inputs {model.inputs}, fed in this order")
    feeds = {}
    for k, spec in enumerate(specs):
        try:
            arr = np.array([np.asarray(s[k]) for s in samples], dtype=spec.dtype)
        except (ValueError, TypeError) as exc:
            raise ShapeError(f"{who}: field {k} of samples {first}..{first + len(samples) - 1} does not stack "
                             f"into one {spec.dtype} array for input {spec.name!r}: {exc}") from None
        if arr.ndim != len(spec.shape) and sum(d is None for d in spec.shape) <= 1:
            try:
                arr = arr.reshape([-1 if d is None else d for d in spec.shape])
            except ValueError:
                raise ShapeError(f"{who}: samples of shape {arr.shape[1:]} do not reshape to input {spec.name!r} "
                                 f"of shape {spec.shape}") from None
        feeds[spec.name] = arr
    return feeds


def _calibration_source(who: str, model: Model, batch_generator, sample_generator, data_loader, batch_size: int):
    """A function returning a fresh iterator of feed dicts from whichever of the three sources is given."""
    given = [(n, v) for n, v in (("data_loader", data_loader), ("sample_generator", sample_generator),
                                 ("batch_generator", batch_generator)) if v is not None]
    if not given:
        raise ArgumentError(f"{who}: give the calibration data as data_loader, sample_generator or batch_generator")
    if len(given) > 1:
        raise ArgumentError(f"{who}: give only one of data_loader, sample_generator and batch_generator, got "
                            f"{[n for n, _ in given]}")
    name, source = given[0]
    if isinstance(source, (Mapping, str, bytes)) or not (callable(source) or isinstance(source, Iterable)):
        raise ArgumentTypeError(f"{who}: {name} must be a generator function, a DataLoader or an iterable, got "
                                f"{type(source).__name__}")
    warned: list = []

    def batches():
        if name == "sample_generator":
            samples, first = [], 0
            for sample in _iterate(who, name, source):
                samples.append(sample)
                if len(samples) == batch_size:
                    yield _stack_samples(who, model, samples, first)
                    first += batch_size
                    samples = []
            # an incomplete last batch is dropped (Paddle's loader: drop_last=True)
        else:
            for i, item in enumerate(_iterate(who, name, source)):
                ignored: set = set()
                feeds = _feed_dict(who, name, model, item, i, ignored)
                if ignored and not warned:
                    warned.append(True)
                    warnings.warn(f"{who}: {name} feeds {sorted(ignored)}, which the model does not take as inputs "
                                  f"{model.inputs}; ignored, as Paddle's executor ignores them", stacklevel=2)
                yield feeds

    if _one_shot(source):
        cache: list = []
        done = []

        def replay(batch_nums=None):
            if not done:
                for feeds in batches():
                    cache.append(feeds)
                    if batch_nums is not None and len(cache) >= batch_nums:
                        break
                done.append(True)
            return iter(cache)
        return replay
    return lambda batch_nums=None: batches()


# ---- quant_post_static --------------------------------------------------------------------------------------
# the algo names: refquant.calibration.algorithms (Paddle's, with the reason for those refquant refuses)


def quant_post_static(executor, model_dir, quantize_model_path, batch_generator=None, sample_generator=None,
                      data_loader=None, model_filename=None, params_filename=None,
                      save_model_filename='model.pdmodel', save_params_filename='model.pdiparams', batch_size=1,
                      batch_nums=None, scope=None, algo='hist', round_type='round', hist_percent=0.9999,
                      bias_correction=False,
                      quantizable_op_type=["conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul",
                                           "matmul_v2"],
                      is_full_quantize=False, weight_bits=8, activation_bits=8,
                      activation_quantize_type='range_abs_max', weight_quantize_type='channel_wise_abs_max',
                      optimize_model=False, onnx_format=True, skip_tensor_list=None, deploy_backend=None, *,
                      is_use_cache_file=False, cache_dir=None) -> Model:
    """PaddleSlim 2.6's ``quant_post_static``: static post-training quantization of the model in ``model_dir``,
    written into the directory ``quantize_model_path`` and returned.

    Calibration data, exactly one of: ``data_loader`` (a function or ``DataLoader`` called for each pass, or an
    iterable, of feed dicts / one-dict lists / lists of arrays in input order), ``sample_generator`` (a function
    yielding one sample, a tuple with one field per input; ``batch_size`` samples are stacked per batch and an
    incomplete last batch is dropped) or ``batch_generator`` (yielding batches, as data_loader). ``batch_nums``:
    batches used (None: all). The thresholds are those of :func:`refquant.quant.quant_post_static` with the same
    options; docs/paddleslim_compat.md lists every parameter. ``is_use_cache_file`` and ``cache_dir`` are the
    deprecated keywords of older PaddleSlim releases (no effect, as in Paddle 3.3.1).
    """
    from .quant import post_static

    who = "quant_post_static"
    _check_executor(who, executor)
    quantize_model_path = _path(who, "quantize_model_path", quantize_model_path)
    _optional_name(who, "save_params_filename", save_params_filename)
    batch_size = _args.integer(who, "batch_size", batch_size, 1)
    batch_nums = _args.optional_integer(who, "batch_nums", batch_nums, 1)
    algo = _args.choice(who, "algo", algo, algorithms.paddle_algorithms())
    refused = algorithms.refused_algorithms()
    if algo in refused:
        raise ArgumentError(f"{who}: algo {algo!r} is not supported: {refused[algo]}")
    round_type = _args.choice(who, "round_type", round_type, ("round", "adaround"))
    bias_correction = _args.boolean(who, "bias_correction", bias_correction)
    is_full_quantize = _args.boolean(who, "is_full_quantize", is_full_quantize)
    onnx_format = _args.boolean(who, "onnx_format", onnx_format)
    optimize_model = _args.boolean(who, "optimize_model", optimize_model)
    _args.boolean(who, "is_use_cache_file", is_use_cache_file)
    _optional_name(who, "cache_dir", cache_dir)
    activation_quantize_type = _args.choice(who, "activation_quantize_type", activation_quantize_type,
                                            ("range_abs_max", "moving_average_abs_max", "abs_max"))
    op_types = _args.names(who, "quantizable_op_type", quantizable_op_type, empty=True,
                           allowed=PADDLE_WEIGHT_OP_TYPES + PADDLE_ACT_OP_TYPES)
    skip_tensor_list = _args.names(who, "skip_tensor_list", skip_tensor_list, empty=True, none=True)
    if deploy_backend is not None:
        raise ArgumentError(f"{who}: deploy_backend={deploy_backend!r} is not supported: a backend's quantizer "
                            f"changes the quantized op lists for TensorRT / oneDNN / ARM runtimes; refquant has "
                            f"Paddle's default quantizer only and deploys with refquant.deploy.convert_to_int8")
    if weight_bits != activation_bits:
        raise ArgumentError(f"{who}: Paddle requires activation_bits == weight_bits, got {activation_bits} and "
                            f"{weight_bits}")
    # Paddle's BaseQuantizer: an empty list means its defaults; is_full_quantize means every type it knows
    if is_full_quantize:
        op_types = list(PADDLE_WEIGHT_OP_TYPES + PADDLE_ACT_OP_TYPES)
    weight_types = [t for t in op_types if t in PADDLE_WEIGHT_OP_TYPES] if op_types else list(PADDLE_WEIGHT_OP_TYPES)
    act_types = [t for t in op_types if t in PADDLE_ACT_OP_TYPES] if op_types else ["mul", "matmul", "matmul_v2"]

    model = load_model(model_dir, model_filename, params_filename, who=who)
    _refuse_activation_only(who, _activation_only_ops(model, act_types, skip_tensor_list),
                            "is_full_quantize=True" if is_full_quantize else f"quantizable_op_type {act_types}")
    if optimize_model:
        fusable = _conv_bn_pairs(model)
        if fusable:
            raise ArgumentError(f"{who}: optimize_model=True folds batch_norm into the convolution before it "
                                f"(Paddle's conv_bn_fuse_pass); refquant has no such pass and this model has "
                                f"{len(fusable)} such pair(s), e.g. {fusable[0]}. Fold them first or pass False")
    if not weight_types:
        raise ArgumentError(f"{who}: quantizable_op_type {op_types} names no weight op type of "
                            f"{list(PADDLE_WEIGHT_OP_TYPES)}: nothing would be quantized")
    source = _calibration_source(who, model, batch_generator, sample_generator, data_loader, batch_size)
    loader = (lambda: source(batch_nums))
    q = post_static.quant_post_static(
        model, loader, batch_nums=batch_nums, algo=algo, hist_percent=hist_percent,
        # Paddle's bias correction is refquant's "paddle" mode (its np.resize broadcast); no effect in onnx_format
        bias_correction="paddle" if bias_correction else False,
        quantizable_op_type=[t for t in weight_types if t in post_static.WEIGHT_OP_TYPES],
        weight_bits=weight_bits, activation_bits=activation_bits, weight_quantize_type=weight_quantize_type,
        skip_tensor_list=skip_tensor_list, round_type=round_type, onnx_format=onnx_format)
    if activation_quantize_type == "abs_max" and not onnx_format:
        q = _dynamic_activations(q)
    q.meta["quantization"]["activation_quantize_type"] = activation_quantize_type
    q.meta["quantization"]["paddleslim"] = {"call": who, "batch_size": batch_size}
    _write(who, q, quantize_model_path, save_model_filename)
    return q


#: PaddleSlim's old name.
quant_post = quant_post_static


def _conv_bn_pairs(model: Model) -> list:
    """``"conv -> batch_norm"`` for each batch_norm reading a convolution's output (directly or after its bias
    add): the patterns Paddle's optimize_model fuses."""
    producer = {out: op for op in model.ops for out in op.outputs if out}
    pairs = []
    for op in model.ops:
        if op.type != "batch_norm" or not op.inputs:
            continue
        src = producer.get(op.inputs[0])
        if src is not None and src.type == "elementwise_add" and any(n in model.params for n in src.inputs):
            src = producer.get(src.inputs[0])
        if src is not None and src.type in ("conv2d", "depthwise_conv2d", "conv2d_transpose"):
            pairs.append(f"{src.name} -> {op.name}")
    return pairs


def _dynamic_activations(q: Model) -> Model:
    """``activation_quantize_type='abs_max'``: Paddle saves no activation scale, so its model takes max|x| of each
    inference batch. The quant-dequant ops lose their static threshold input (refquant's op then uses max|x|)."""
    q = q.copy()
    for op in q.ops:
        if (op.type == "fake_quantize_dequantize_abs_max" and len(op.inputs) == 2
                and op.inputs[1] == f"{op.inputs[0]}@scale" and op.inputs[0] not in q.params):
            q.params.pop(op.inputs[1], None)
            op.inputs = op.inputs[:1]
    q.validate()
    return q


# ---- quant_post_dynamic -------------------------------------------------------------------------------------
def quant_post_dynamic(model_dir, save_model_dir, model_filename, params_filename,
                       save_model_filename='model.pdmodel', save_params_filename='model.pdiparams',
                       quantizable_op_type=["conv2d", "mul"], weight_bits=8, generate_test_model=False) -> Model:
    """PaddleSlim 2.6's ``quant_post_dynamic`` (``quant_post_only_weight``): weight-only INT8 / INT16 quantization
    (Paddle's ``WeightQuantization.quantize_weight_to_int`` with its defaults: channel_wise_abs_max, no threshold
    rate), written into ``save_model_dir`` and returned; :func:`refquant.quant.quant_post_dynamic` does the work."""
    from .quant.post_dynamic import quant_post_dynamic as _dynamic

    who = "quant_post_dynamic"
    save_model_dir = _path(who, "save_model_dir", save_model_dir)
    _optional_name(who, "save_params_filename", save_params_filename)
    if isinstance(quantizable_op_type, str):
        raise ArgumentTypeError(f"{who}: quantizable_op_type must be a list of op types, got the string "
                                f"{quantizable_op_type!r}")
    model = load_model(model_dir, model_filename, params_filename, who=who)
    q = _dynamic(model, weight_bits=weight_bits, quantizable_op_type=quantizable_op_type,
                 weight_quantize_type="channel_wise_abs_max", generate_test_model=generate_test_model)
    _write(who, q, save_model_dir, save_model_filename)
    return q


#: PaddleSlim's old name.
quant_post_only_weight = quant_post_dynamic


# ---- quant_embedding ----------------------------------------------------------------------------------------
_EMBEDDING_OP_TYPES = ("lookup_table", "lookup_table_v2", "fused_embedding_seq_pool", "pyramid_hash")


def quant_embedding(program, place, config=None, scope=None) -> Model:
    """PaddleSlim 2.6's ``quant_embedding``: int8 / int16 embedding tables. ``program`` is a refquant Model (or a
    model path, see :func:`load_model`); ``config`` has PaddleSlim's keys, and without ``quantize_op_types`` it
    quantizes every embedding op type PaddleSlim knows. Both of Paddle's ``lookup_table`` and ``lookup_table_v2``
    are refquant's ``lookup_table``: listing either selects them (listing both with different settings is
    refused). Returns the new Model (:func:`refquant.quant.quant_embedding`)."""
    from .quant.embedding import quant_embedding as _embedding

    who = "quant_embedding"
    _check_place(who, place)
    if config is not None and not isinstance(config, Mapping):
        raise ArgumentTypeError(f"{who}: config must be a dict or None, got {type(config).__name__}")
    cfg = {"quantize_op_types": list(_EMBEDDING_OP_TYPES), **dict(config or {})}
    types = cfg["quantize_op_types"]
    if isinstance(types, str):
        types = [types]
    types = _args.names(who, "config['quantize_op_types']", types, allowed=_EMBEDDING_OP_TYPES)
    unknown = sorted(set(cfg) - {"quantize_op_types"} - set(_EMBEDDING_OP_TYPES))
    if unknown:
        raise ArgumentError(f"{who}: unknown config key(s) {unknown}; PaddleSlim's keys are 'quantize_op_types' "
                            f"and one dict per op type {list(_EMBEDDING_OP_TYPES)}")
    tables = [t for t in ("lookup_table", "lookup_table_v2") if t in types]
    if len(tables) == 2 and cfg.get("lookup_table", {}) != cfg.get("lookup_table_v2", {}):
        raise ArgumentError(f"{who}: quantize_op_types lists lookup_table and lookup_table_v2 (the default lists "
                            f"both) with different settings; both are refquant's lookup_table op, so list the one "
                            f"the model uses in config['quantize_op_types'] or give both the same settings")
    refquant_types = list(dict.fromkeys("lookup_table" if t in tables else t for t in types))
    refquant_cfg: dict = {"quantize_op_types": refquant_types}
    for t in refquant_types:
        source = tables[0] if t == "lookup_table" else t
        if source in cfg:
            refquant_cfg[t] = cfg[source]
    model = load_model(program, who=who, name="program")
    try:
        return _embedding(model, refquant_cfg)
    except ArgumentError:
        raise
    except ValueError as exc:  # the pass's own config and table checks
        if type(exc) is ValueError:
            raise ArgumentError(str(exc)) from None
        raise


# ---- quant_aware / convert ----------------------------------------------------------------------------------
#: PaddleSlim 2.6's ``_quant_config_default`` (``paddleslim/quant/quanter.py``).
QAT_CONFIG_DEFAULTS = {
    "weight_quantize_type": "channel_wise_abs_max",
    "activation_quantize_type": "moving_average_abs_max",
    "weight_bits": 8,
    "activation_bits": 8,
    "not_quant_pattern": ["skip_quant"],
    "quantize_op_types": ["conv2d", "depthwise_conv2d", "mul"],
    "dtype": "int8",
    "window_size": 10000,
    "moving_rate": 0.9,
    "for_tensorrt": False,
    "is_full_quantize": False,
    "onnx_format": True,
    "quant_post_first": False,
    "scale_trainable": True,
    "deploy_backend": None,
}
_DEPLOY_BACKENDS = ("tensorrt", "mkldnn", "arm")
#: The keys :func:`convert` reads; they must equal those quant_aware used.
_CONVERT_KEYS = ("onnx_format", "weight_bits", "activation_bits", "weight_quantize_type")


def _qat_config(who: str, config, model: Optional[Model]) -> dict:
    """PaddleSlim's ``_parse_configs`` checks, then the refquant config (``refquant.quant.qat.merge_config``
    keys); the PaddleSlim meanings refquant cannot give raise ArgumentError with the reason."""
    from .quant import qat

    if config is not None and not isinstance(config, Mapping):
        raise ArgumentTypeError(f"{who}: config must be a dict or None, got {type(config).__name__}")
    cfg = dict(QAT_CONFIG_DEFAULTS)
    unknown = sorted(set(config or {}) - set(cfg))
    if unknown:
        raise ArgumentError(f"{who}: unknown config key(s) {unknown} (PaddleSlim 2.6's keys: {sorted(cfg)})")
    cfg.update(config or {})
    for key in ("for_tensorrt", "is_full_quantize", "onnx_format", "quant_post_first", "scale_trainable"):
        _args.boolean(who, f"config[{key!r}]", cfg[key])
    if cfg["deploy_backend"] is not None and (not isinstance(cfg["deploy_backend"], str)
                                              or cfg["deploy_backend"].lower() not in _DEPLOY_BACKENDS):
        raise ArgumentError(f"{who}: config['deploy_backend'] must be None or one of {list(_DEPLOY_BACKENDS)}, got "
                            f"{cfg['deploy_backend']!r}")
    if cfg["dtype"] != "int8":
        raise ArgumentError(f"{who}: config['dtype'] must be 'int8' (PaddleSlim's only valid value), got "
                            f"{cfg['dtype']!r}")
    for key, why in qat.REFUSED_CONFIG.items():
        if cfg[key] not in (False, None):
            raise ArgumentError(f"{who}: config[{key!r}]={cfg[key]!r} is not supported: {why}")
    _args.choice(who, "config['weight_quantize_type']", cfg["weight_quantize_type"],
                 ("abs_max", "channel_wise_abs_max", "range_abs_max", "moving_average_abs_max"))
    if cfg["weight_quantize_type"] not in qat.WEIGHT_OPS:
        raise ArgumentError(f"{who}: config['weight_quantize_type']={cfg['weight_quantize_type']!r} is not "
                            f"supported: refquant's QAT quantizes weights with max|W| of every step, per tensor "
                            f"(abs_max) or per channel (channel_wise_abs_max)")
    _args.choice(who, "config['activation_quantize_type']", cfg["activation_quantize_type"],
                 ("abs_max", "range_abs_max", "moving_average_abs_max"))
    for key in ("weight_bits", "activation_bits"):
        _args.bits(who, f"config[{key!r}]", cfg[key])
    _args.integer(who, "config['window_size']", cfg["window_size"], 1)
    _args.real(who, "config['moving_rate']", cfg["moving_rate"], 0.0, 1.0, lo_open=True, hi_open=True)
    patterns = cfg["not_quant_pattern"]
    cfg["not_quant_pattern"] = [patterns] if isinstance(patterns, str) else \
        _args.names(who, "config['not_quant_pattern']", patterns, empty=True)
    if not isinstance(cfg["quantize_op_types"], list):
        raise ArgumentTypeError(f"{who}: config['quantize_op_types'] must be a list (PaddleSlim asserts it), got "
                                f"{type(cfg['quantize_op_types']).__name__}")
    op_types = _args.names(who, "config['quantize_op_types']", cfg["quantize_op_types"], empty=True,
                           allowed=PADDLE_WEIGHT_OP_TYPES + PADDLE_ACT_OP_TYPES)
    if not op_types:  # Paddle's BaseQuantizer: an empty list means its default lists
        op_types = list(PADDLE_WEIGHT_OP_TYPES)
    weight_types = [t for t in op_types if t in PADDLE_WEIGHT_OP_TYPES]
    if not weight_types:
        raise ArgumentError(f"{who}: config['quantize_op_types'] {op_types} names no weight op type of "
                            f"{list(PADDLE_WEIGHT_OP_TYPES)}: refquant's QAT would quantize nothing")
    if model is not None and config is not None:
        # with a config, PaddleSlim's quantizer sends every listed activation op type (mul included) to
        # AddQuantDequantPass; without one, op types are split by list membership and mul goes to weights only
        act_types = [t for t in op_types if t in PADDLE_ACT_OP_TYPES]
        _refuse_activation_only(who, _activation_only_ops(model, act_types, skip_patterns=cfg["not_quant_pattern"]),
                                f"config['quantize_op_types'] {act_types}")
    elif model is not None:
        only_act = [t for t in op_types if t not in PADDLE_WEIGHT_OP_TYPES]
        _refuse_activation_only(who, _activation_only_ops(model, only_act, skip_patterns=cfg["not_quant_pattern"]),
                                f"config['quantize_op_types'] {only_act}")
    return {
        "weight_quantize_type": cfg["weight_quantize_type"],
        "activation_quantize_type": cfg["activation_quantize_type"],
        "weight_bits": cfg["weight_bits"], "activation_bits": cfg["activation_bits"],
        "quantize_op_types": weight_types, "not_quant_pattern": cfg["not_quant_pattern"],
        "window_size": cfg["window_size"], "moving_rate": float(cfg["moving_rate"]),
        "onnx_format": cfg["onnx_format"], "dtype": "int8", "scale_trainable": cfg["scale_trainable"],
    }


def _refuse_function(who: str, name: str, value) -> None:
    if value is not None:
        raise ArgumentError(f"{who}: {name} is not supported: it builds Paddle layers into the program (a "
                            f"function of paddle.static variables); refquant's graph has no such hook")


def quant_aware(program, place, config=None, scope=None, for_test=False, weight_quantize_func=None,
                act_quantize_func=None, weight_preprocess_func=None, act_preprocess_func=None, optimizer_func=None,
                executor=None, return_program=False, calib_config={}, draw_graph=False, return_scale_dict=False,
                scale_dict=None, model_type=None, pattern_ops=None):
    """PaddleSlim 2.6's static ``quant_aware``: a training (or, ``for_test=True``, an evaluation) model with fake
    quant-dequant ops on the inputs and weights of ``config['quantize_op_types']``
    (:func:`refquant.quant.quant_aware`). PaddleSlim's defaults apply, ``onnx_format`` True included. Returns the
    Model (with ``return_scale_dict``, ``(model, scale_dict, model_type, pattern_ops)`` as PaddleSlim)."""
    from .quant import qat

    who = "quant_aware"
    _check_place(who, place)
    _check_executor(who, executor)
    for_test = _args.boolean(who, "for_test", for_test)
    for name, fn in (("weight_quantize_func", weight_quantize_func), ("act_quantize_func", act_quantize_func),
                     ("weight_preprocess_func", weight_preprocess_func), ("act_preprocess_func", act_preprocess_func)):
        _refuse_function(who, name, fn)
    _args.boolean(who, "return_program", return_program)
    return_scale_dict = _args.boolean(who, "return_scale_dict", return_scale_dict)
    if _args.boolean(who, "draw_graph", draw_graph):
        raise ArgumentError(f"{who}: draw_graph=True is not supported: PaddleSlim draws the IrGraph to ./graph.pdf "
                            f"with graphviz; print(model.ops) or export to ONNX and open it in a viewer instead")
    if scale_dict is not None:
        raise ArgumentError(f"{who}: scale_dict is not supported: PaddleSlim uses it to start the output-scale "
                            f"observers (OutScaleForTrainingPass), which refquant's QAT does not have; to start "
                            f"activation thresholds from known values use refquant.quant.quant_aware("
                            f"init_thresholds=...)")
    if model_type not in (None, "non-transformer"):
        raise ArgumentError(f"{who}: model_type={model_type!r} is not supported: PaddleSlim's transformer pattern "
                            f"analysis (multi-head attention / FFN patterns) is not reproduced")
    if not isinstance(calib_config, Mapping):
        raise ArgumentTypeError(f"{who}: calib_config must be a dict, got {type(calib_config).__name__}")
    model = load_model(program, who=who, name="program")
    cfg = _qat_config(who, config, model)
    q = qat.quant_aware(model, cfg, for_test=for_test)
    q.meta["qat"]["paddleslim_config"] = dict(config) if config is not None else None
    if return_scale_dict:
        return q, scale_dict, model_type, pattern_ops
    return q


def convert(program, place, config=None, scope=None, save_int8=False) -> Model:
    """PaddleSlim 2.6's ``convert``: freeze a trained :func:`quant_aware` model into its inference form
    (:func:`refquant.quant.convert`). ``config`` must be the one given to quant_aware, as PaddleSlim requires: an
    explicit config whose format keys (onnx_format, bits, weight_quantize_type) differ from the ones the model was
    built with is refused; None uses the model's own."""
    from .quant import qat

    who = "convert"
    _check_place(who, place)
    model = load_model(program, who=who, name="program")
    if _args.boolean(who, "save_int8", save_int8):
        raise ArgumentError(f"{who}: save_int8=True is not supported: PaddleSlim's int8 program only serves to "
                            f"measure the model size and cannot run; refquant.deploy.convert_to_int8(model) gives "
                            f"a runnable INT8 model")
    info = model.meta.get("qat")
    if not info:
        raise ArgumentError(f"{who}: program was not made by quant_aware (it has no QAT record)")
    if config is not None:
        wanted = _qat_config(who, config, None)
        built = info["config"]
        differ = [k for k in _CONVERT_KEYS if wanted[k] != built.get(k)]
        if differ:
            raise ArgumentError(f"{who}: config differs from the one quant_aware used in {differ} "
                                f"({ {k: wanted[k] for k in differ} } vs { {k: built.get(k) for k in differ} }); "
                                f"PaddleSlim requires the same config for both")
    return qat.convert(model)
