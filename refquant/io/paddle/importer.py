"""Import a saved Paddle inference model into a refquant :class:`~refquant.graph.Model`, without Paddle.

``import_paddle(path) -> Model`` reads the two files ``paddle.static.save_inference_model`` / ``paddle.jit.save``
write (``docs/paddle_import.md`` explains them):

* the *program*: a legacy ``ProgramDesc`` protobuf (``model.pdmodel``), read with the bounds-checked wire decoder
  of :mod:`.protowire`, or a PIR JSON program (``model.json``, Paddle 3.x), read with :mod:`json`;
* the *parameters* (``model.pdiparams``): every persistable tensor, **sorted by name** (Paddle's ``save_vars``
  and ``save_vars_pir`` both iterate ``sorted(names)``), each as Paddle's ``SerializeToStream`` writes a dense
  tensor: ``uint32`` version 0, ``uint64`` LoD level count (+ the levels), ``uint32`` tensor version 0, ``int32``
  size of a ``TensorDesc`` protobuf (dtype, dims), the desc, then the raw little-endian data.

Both programs become one neutral form (:class:`~.program.PaddleOp`: type, input / output slots of variable names,
attrs, in the legacy op vocabulary; PIR ops are translated on reading), which :mod:`.converters` convert to
refquant ops. Quantized programs (PTQ and QAT, both Paddle formats) import in the form
:func:`refquant.quant.quant_post_static` produces, with Paddle's scales as thresholds.

Everything read from the files is checked: sizes against what is left of the file, element counts, dtypes, names,
dims against the program's declared shapes; every problem is a :class:`refquant.ModelFormatError` (or
:class:`refquant.UnsupportedOpError` for an op refquant cannot express) naming the file and the tensor or op.

Names: refquant's graph is single-assignment, Paddle's may write a variable twice (in-place ops); every write
gets a fresh name when its variable already exists, and later readers follow :attr:`_Cx.alias`. Ops that only
forward their input (``assign``, ``dropout`` in upscale mode, the dequantize op after a frozen quantized conv) are
aliases, not ops.
"""
from __future__ import annotations

import math
import os
import re
from typing import Optional

import numpy as np

from ...errors import GraphError, ModelFormatError, RefquantError, UnsupportedOpError
from ...graph import INPUT_DTYPES, Model, Op, TensorSpec
from .converters import CONVERTERS, WEIGHT_OP_TYPES
from .converters.quantization import _mark_quantized
from .params import read_pdiparams
from .pdmodel import read_pdmodel
from .pir import read_pir
from .program import PaddleProgram, _resolve

_THRESHOLD_ATTR = re.compile(r"^([A-Za-z]+)(\d+)_threshold$")
_KEPT_QUANT_ATTRS = ("out_threshold", "with_quant_attr", "quantization_type")
_FOLDABLE = ("reshape", "squeeze", "unsqueeze", "flatten", "transpose", "cast", "scale")


class _Cx:
    """What the converters share: the program, the parameters, the emitted ops and the quantization records."""

    def __init__(self, prog, params: dict):
        self.prog = prog
        self.params = dict(params)
        self.params.update(prog.constants)
        self.ops: list[Op] = []
        self.alias: dict[str, str] = {}
        self.written: set[str] = set(self.params) | set(prog.feeds)
        self.producer: dict[str, Op] = {}
        self.count = 0
        self.act_t: dict[str, float] = {}        # activation (FP32 name) -> threshold
        self.out_t: dict[str, float] = {}        # out_threshold attributes, by output name
        self.w_t: dict[str, list] = {}           # weight -> channel thresholds
        self.w_axis: dict[str, object] = {}      # weight -> channel axis or None
        self.qdq: dict[str, tuple] = {}          # quant-dequant output -> (input, threshold, bits)
        self.bits: set[int] = set()
        self.forms: set[str] = set()
        self.algos: set[str] = set()
        self.op: object = None                  # the Paddle op being converted

    # ---- names -------------------------------------------------------------------------------------
    def where(self, op=None) -> str:
        op = op or self.op
        return f"{self.prog.where}: op {op.index} ({op.type})"

    def get(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def new(self, name: str) -> str:
        """The refquant name of a variable the current op writes (fresh when the variable exists already)."""
        if name not in self.written:
            self.written.add(name)
            self.alias.pop(name, None)
            return name
        k = 1
        while f"{name}@{k}" in self.written:
            k += 1
        fresh = f"{name}@{k}"
        self.written.add(fresh)
        self.alias[name] = fresh
        return fresh

    def tmp(self, base: str) -> str:
        self.count += 1
        return self.new(f"{base}.tmp{self.count}")

    def set_alias(self, out: str, src: str) -> None:
        src = self.get(src)
        if out == src:
            return
        self.written.add(out)
        self.alias[out] = src

    # ---- slots and attributes ----------------------------------------------------------------------
    def inp(self, op, slot: str, required: bool = True, index: int = 0):
        names = op.ins(slot)
        if len(names) <= index or not names[index]:
            if required:
                raise ModelFormatError(f"{self.where(op)}: input slot {slot!r} is missing")
            return None
        name = self.get(names[index])
        if name not in self.written and name not in self.params:
            raise ModelFormatError(f"{self.where(op)}: reads {names[index]!r}, which no op, parameter or input "
                                   f"provides")
        return name

    def out(self, op, slot: str = "Out", required: bool = True, index: int = 0):
        names = op.outs(slot)
        if len(names) <= index or not names[index]:
            if required:
                raise ModelFormatError(f"{self.where(op)}: output slot {slot!r} is missing")
            return None
        return names[index]

    def dims(self, name: str):
        """Declared dims of a variable (by Paddle name or refquant name), -1 / None unknown; None if undeclared."""
        if name in self.params:
            return tuple(self.params[name].shape)
        base = name.split("@")[0] if name not in self.prog.vars else name
        v = self.prog.vars.get(base)
        return None if v is None or v.dims is None else tuple(v.dims)

    def const(self, name):
        """The value of a parameter or constant, or None when it is computed at run time."""
        return None if name is None else self.params.get(self.get(name))

    # ---- emitting ----------------------------------------------------------------------------------
    def emit(self, op_type: str, inputs: list, outputs: list, attrs: dict, name: str = "") -> Op:
        """Append a refquant op; ``outputs`` are Paddle names (renamed when written before) or ready names
        passed as ``("=", name)``."""
        outs = []
        for o in outputs:
            outs.append(o[1] if isinstance(o, tuple) else self.new(o) if o else "")
        paddle_op = self.op
        if paddle_op is not None:
            for k, v in paddle_op.attrs.items():
                if k in _KEPT_QUANT_ATTRS or _THRESHOLD_ATTR.match(k):
                    attrs.setdefault(k, v)
        op = Op(op_type, list(inputs), outs, attrs, name or (outs[0] if outs and outs[0] else f"{op_type}_{len(self.ops)}"))
        if self._fold(op):
            return op
        self._canonical_bias(op)
        self.ops.append(op)
        for o in outs:
            if o:
                self.producer[o] = op
        return op

    def _fold(self, op: Op) -> bool:
        """Evaluate a shape op whose inputs are all parameters (PIR reshapes each conv bias to (1, C, 1, 1)) and
        keep its output as a parameter."""
        if op.type not in _FOLDABLE or not op.inputs or any(n not in self.params for n in op.inputs if n) \
                or len(op.outputs) != 1:
            return False
        from ...ops import OpContext, get_op
        from ...ops.registry import check_op
        try:
            check_op(op)
        except GraphError as exc:
            raise ModelFormatError(f"{self.where()}: {exc}") from None
        args = [self.params[n] if n else None for n in op.inputs]
        if sum(np.asarray(a).nbytes for a in args if a is not None) > 1 << 28:
            return False
        self.params[op.outputs[0]] = np.asarray(get_op(op.type).forward(OpContext(), op.attrs, *args))
        return True

    def _canonical_bias(self, op: Op) -> None:
        """``elementwise_add(conv_out, b)`` with ``b`` of shape (1, C, 1, 1) and NumPy broadcasting (PIR's form) as
        Paddle's legacy form, a (C,) bias on axis 1 (what refquant's passes fuse into the conv)."""
        if op.type != "elementwise_add" or len(op.inputs) != 2 or op.inputs[1] not in self.params:
            return
        prod = self.producer.get(op.inputs[0])
        b = np.asarray(self.params[op.inputs[1]])
        if prod is None or prod.type not in ("conv2d", "depthwise_conv2d", "conv2d_transpose") or b.ndim != 4 \
                or b.shape[0] != 1 or b.shape[2:] != (1, 1) or op.attrs.get("axis", -1) != -1:
            return
        op.inputs[1] = self.param(f"{op.inputs[1]}.bias", b.reshape(-1))
        op.attrs["axis"] = 1

    def param(self, base: str, value) -> str:
        """A new parameter holding ``value`` (a constant the conversion needs)."""
        name = base
        k = 0
        while name in self.params or name in self.written:
            k += 1
            name = f"{base}.{k}"
        self.params[name] = np.asarray(value)
        self.written.add(name)
        return name


def _threshold_attrs(cx, op) -> None:
    """``out_threshold`` / ``<Slot><i>_threshold`` attributes (PTQ's and QAT's output scales) by output name."""
    for k, v in op.attrs.items():
        m = _THRESHOLD_ATTR.match(k)
        if m and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            names = op.outs(m.group(1))
            if int(m.group(2)) < len(names):
                cx.out_t.setdefault(cx.get(names[int(m.group(2))]), float(v))
    v = op.attrs.get("out_threshold")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        first = next((op.outputs[s][0] for s in ("Out", "Output", "Y") if op.outputs.get(s)), None)
        if first:
            cx.out_t.setdefault(cx.get(first), float(v))


def convert(prog, params: dict, *, name: str) -> Model:
    """Convert the neutral program ``prog`` with its ``params`` into a validated refquant Model."""
    cx = _Cx(prog, params)
    for op in prog.ops:
        fn = CONVERTERS.get(op.type)
        if fn is None:
            raise UnsupportedOpError(f"{prog.where}: op {op.index}: Paddle op type {op.type!r} has no refquant "
                                     f"equivalent (docs/paddle_import.md lists the supported ones)")
        cx.op = op
        try:
            fn(cx, op)
        except RefquantError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, ZeroDivisionError) as exc:
            raise ModelFormatError(f"{cx.where(op)}: {type(exc).__name__}: {exc}") from None
        _threshold_attrs(cx, op)
    specs = []
    for feed in prog.feeds:
        v = prog.vars.get(feed)
        if v is None or v.dtype is None:
            raise ModelFormatError(f"{prog.where}: the fed variable {feed!r} is not a declared tensor")
        if v.dtype not in INPUT_DTYPES:
            raise ModelFormatError(f"{prog.where}: input {feed!r} has the dtype {v.dtype}")
        specs.append(TensorSpec(feed, tuple(None if d < 0 else int(d) for d in v.dims), v.dtype))
    outputs = [cx.get(n) for n in prog.fetches]
    used = {n for op in cx.ops for n in op.inputs if n} | set(outputs)
    kept = {k: v for k, v in cx.params.items() if k in used or k.endswith("@scale")}
    meta = {"source": {"format": prog.format, "program": prog.where}}
    if cx.forms - {"dynamic"}:
        meta["quantization"] = _quant_meta(cx)
    trainable = [k for k, v in kept.items() if np.asarray(v).dtype.kind == "f" and not k.endswith("@scale")]
    try:
        return Model(cx.ops, kept, specs, outputs, name=name, meta=meta, trainable=trainable)
    except GraphError as exc:
        raise ModelFormatError(f"{prog.where}: the converted graph is invalid: {exc}") from None


def _quant_meta(cx) -> dict:
    w_t, act_t = dict(cx.w_t), dict(cx.act_t)
    # ONNX form: the weight ops read a dequantize_linear of an int weight; name them quantized
    weight_dq = {op.outputs[0]: op for op in cx.ops if op.type == "dequantize_linear" and op.inputs[0] in cx.params}
    for op in cx.ops:
        if op.type in WEIGHT_OP_TYPES and len(op.inputs) > 1 and op.inputs[1] in weight_dq:
            dq = weight_dq[op.inputs[1]]
            axis = int(dq.attrs.get("quant_axis", -1))
            _mark_quantized(cx, op, int(dq.attrs.get("bit_length", 8)), None if axis < 0 else axis)
    for x, t in cx.out_t.items():
        act_t.setdefault(x, t)
    quantized = [op for op in cx.ops if "quantization_type" in op.attrs and op.type in WEIGHT_OP_TYPES]
    wq_types = {op.attrs.get("weight_quantize_type") for op in quantized}
    ptypes = sorted({str(op.attrs["quantization_type"]) for op in quantized})
    algos = sorted({p[len("post_"):] for p in ptypes if p.startswith("post_")})
    bits = sorted(cx.bits) or [8]
    return {
        "method": "paddle_import", "source_format": cx.prog.format,
        "paddle_form": "onnx_format" if "onnx" in cx.forms else "freeze",
        "onnx_format": "onnx" in cx.forms,
        "algo": algos[0] if len(algos) == 1 else None,
        "paddle_quantization_type": ptypes,
        "weight_bits": bits[-1], "activation_bits": bits[-1],
        "weight_quantize_type": "channel_wise_abs_max" if "channel_wise_abs_max" in wq_types else "abs_max",
        "quantizable_op_type": sorted({op.type for op in quantized}),
        "quantized_ops": [op.name for op in cx.ops if "quantization_type" in op.attrs],
        "activation_thresholds": act_t,
        "weight_thresholds": {w: (t if len(t) > 1 or cx.w_axis.get(w) is not None else t[0]) for w, t in w_t.items()},
        "zero_size": [],
    }


def read_program(program_path: str) -> PaddleProgram:
    """Either program format, chosen by the file's first byte (``{`` is PIR JSON)."""
    with open(program_path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        return read_pir(program_path)
    return read_pdmodel(program_path)


def import_paddle(path, *, model_filename=None, params_filename=None, name: Optional[str] = None) -> Model:
    """Import a Paddle inference model (legacy ``.pdmodel`` or PIR ``.json`` program, ``.pdiparams`` parameters).

    ``path``: a path prefix (``"dir/model"`` reads ``dir/model.pdmodel`` or ``dir/model.json`` and
    ``dir/model.pdiparams``), a directory holding one program (``model_filename`` / ``params_filename`` name the
    files inside it, as PaddleSlim's ``quant_post_static`` takes them), or the program file itself. ``name``: the
    model's name (default: the program file's stem). Quantized programs import in refquant's quantized form
    (``meta["quantization"]``, :func:`refquant.quant.thresholds`). Raises ModelFormatError for a damaged or
    inconsistent model, UnsupportedOpError for an op refquant cannot express, FileNotFoundError for a missing file.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"import_paddle: name must be a str or None, got {type(name).__name__}")
    program_path, params_path = _resolve(path, model_filename, params_filename)
    if not os.path.isfile(program_path):
        raise FileNotFoundError(f"import_paddle: program file {program_path!r} does not exist")
    prog = read_program(program_path)
    if prog.params and params_path is None:
        raise FileNotFoundError(f"import_paddle: {program_path} needs {len(prog.params)} parameters "
                                f"({prog.params[0]!r}, ...) but no .pdiparams file was found; pass "
                                f"params_filename=")
    params = read_pdiparams(params_path, prog.params, prog.vars) if prog.params else {}
    if not prog.params and params_path is not None and os.path.getsize(params_path):
        raise ModelFormatError(f"{params_path}: the program declares no parameters but the file is not empty")
    stem = os.path.splitext(os.path.basename(program_path))[0]
    return convert(prog, params, name=name or stem)
