"""Paddle op -> refquant op converters for :func:`refquant.io.import_paddle`.

Input is the neutral program of :mod:`refquant.io.paddle_import` (legacy op names and slots; PIR programs are
translated into it on reading). Each converter is one small function ``(cx, op)`` registered for one or more Paddle
op types in :data:`CONVERTERS`; it emits refquant ops with :meth:`_Cx.emit`. Most Paddle ops are refquant ops of
the same name with their attributes normalised (paddings to [top, left, bottom, right], ``padding_algorithm``
resolved); the others are written with existing ops (``leaky_relu`` as ``relu(x) - a * relu(-x)``, ``squeeze2``
as ``squeeze``, ``split`` as slices). An op type without a converter raises :class:`refquant.UnsupportedOpError`.

Names: refquant's graph is single-assignment, Paddle's may write a variable twice (in-place ops); every write
gets a fresh name when its variable already exists, and later readers follow :attr:`_Cx.alias`. Ops that only
forward their input (``assign``, ``dropout`` in upscale mode, the dequantize op after a frozen quantized conv) are
aliases, not ops.

Quantized programs (docs/paddle_import.md, "Quantized programs") become refquant's quantized form:

* freeze form (``onnx_format=False``): ``fake_quantize_*_abs_max(X, InScale) -> q`` becomes
  ``fake_quantize_dequantize_abs_max(X, <X>@scale)``; the integer weight of the conv / mul that reads it is
  multiplied back by its channel thresholds (``Scales[0]`` of the ``fake_channel_wise_dequantize_max_abs`` that
  follows, or ``quant_bits`` / ``max_range`` of ``fake_dequantize_max_abs``) and the dequantize op disappears;
* ONNX form: ``quantize_linear`` / ``dequantize_linear`` are refquant ops of the same name and meaning
  (thresholds as ``Scale``), int8 weights stay int8 behind their ``dequantize_linear``.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import numpy as np

from ..errors import GraphError, ModelFormatError, RefquantError, UnsupportedOpError
from ..graph import INPUT_DTYPES, Model, Op, TensorSpec
from ..ops.registry import op_types_with
from ..reference import rounding

CONVERTERS: dict[str, Callable] = {}
WEIGHT_OP_TYPES = op_types_with("weight_inputs")  # conv2d, depthwise_conv2d, conv2d_transpose, mul, matmul
#: Paddle's VarType.Type codes (the ``dtype`` / ``out_dtype`` attributes of cast, fill_constant, ...).
_VARTYPE_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64",
                   20: "uint8", 21: "int8"}
_THRESHOLD_ATTR = re.compile(r"^([A-Za-z]+)(\d+)_threshold$")
_KEPT_QUANT_ATTRS = ("out_threshold", "with_quant_attr", "quantization_type")
_FOLDABLE = ("reshape", "squeeze", "unsqueeze", "flatten", "transpose", "cast", "scale")


def converter(*types):
    def wrap(fn):
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return wrap


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
        from ..ops import OpContext, get_op
        from ..ops.registry import check_op
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


# ------------------------------------------------------------------------------------------------------
# attribute helpers
# ------------------------------------------------------------------------------------------------------
def _ints(cx, op, key, default=None, length=None) -> list:
    v = op.attrs.get(key, default)
    if v is None:
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} is missing")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (list, tuple, int, np.integer)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be ints, got {v!r}")
    v = [v] if isinstance(v, (int, np.integer)) else list(v)
    if any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) for e in v):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be ints, got {v!r}")
    if length is not None and len(v) not in length:
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must have {' or '.join(map(str, length))} "
                               f"entries, got {v!r}")
    return [int(e) for e in v]


def _int(cx, op, key, default=None) -> int:
    v = op.attrs.get(key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be an int, got {v!r}")
    return int(v)


def _float(cx, op, key, default=None) -> float:
    v = op.attrs.get(key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be a number, got {v!r}")
    return float(v)


def _bool(cx, op, key, default=False) -> bool:
    v = op.attrs.get(key, default)
    if not isinstance(v, (bool, np.bool_, int, np.integer)):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be a bool, got {v!r}")
    return bool(v)


def _str(cx, op, key, default="") -> str:
    v = op.attrs.get(key, default)
    if not isinstance(v, str):
        raise ModelFormatError(f"{cx.where(op)}: attribute {key!r} must be a string, got {v!r}")
    return v


def _unsupported(cx, op, why: str):
    return UnsupportedOpError(f"{cx.where(op)}: {why}")


def _nchw(cx, op, key="data_format"):
    fmt = op.attrs.get(key, "NCHW")
    if fmt not in ("NCHW", "AnyLayout", ""):
        raise _unsupported(cx, op, f"{key}={fmt!r} (only NCHW is supported)")


def _pads4(cx, op, key="paddings") -> list:
    """Paddle's paddings ([ph, pw] or [top, bottom, left, right]) as refquant's [top, left, bottom, right]."""
    p = _ints(cx, op, key, [0, 0], length=(2, 4))
    return [p[0], p[1], p[0], p[1]] if len(p) == 2 else [p[0], p[2], p[1], p[3]]


def _same_pads(cx, op, x: str, ksize, strides, dilations) -> list:
    """``padding_algorithm="SAME"``: Paddle's ``UpdatePaddingAndDilation`` (out = ceil(in / stride))."""
    d = cx.dims(x)
    if d is None or len(d) != 4 or min(d[2:]) < 0:
        raise _unsupported(cx, op, "padding_algorithm='SAME' needs a known input height and width")
    pads = [0, 0, 0, 0]
    for i, (n, k, s, dl) in enumerate(zip(d[2:], ksize, strides, dilations)):
        out = (n + s - 1) // s
        total = max((out - 1) * s + (k - 1) * dl + 1 - n, 0)
        pads[i], pads[i + 2] = total // 2, total - total // 2
    return pads


def _window(cx, op, x, ksize, strides, dilations):
    algo = _str(cx, op, "padding_algorithm", "EXPLICIT")
    if algo == "SAME":
        return _same_pads(cx, op, x, ksize, strides, dilations), [1, 1]
    if algo == "VALID":
        return [0, 0, 0, 0], dilations
    if algo not in ("EXPLICIT", ""):
        raise ModelFormatError(f"{cx.where(op)}: unknown padding_algorithm {algo!r}")
    return _pads4(cx, op), dilations


# ------------------------------------------------------------------------------------------------------
# converters
# ------------------------------------------------------------------------------------------------------
def _filter_dims(cx, op, w: str) -> tuple:
    ws = cx.dims(w)
    if ws is None or len(ws) != 4:
        raise ModelFormatError(f"{cx.where(op)}: the filter {w!r} must be 4-D, got {ws}")
    return ws


@converter("conv2d", "depthwise_conv2d")
def _conv(cx, op):
    _nchw(cx, op)
    x, w = cx.inp(op, "Input"), cx.inp(op, "Filter")
    ws = _filter_dims(cx, op, w)
    strides = _ints(cx, op, "strides", [1, 1], length=(2,))
    dilations = _ints(cx, op, "dilations", [1, 1], length=(2,))
    pads, dilations = _window(cx, op, x, ws[2:], strides, dilations)
    ins = [x, w]
    bias = cx.inp(op, "Bias", required=False)
    if bias is not None:
        ins.append(bias)
    cx.emit(op.type, ins, [cx.out(op, "Output")], {"strides": strides, "paddings": pads, "dilations": dilations,
                                                   "groups": _int(cx, op, "groups", 1)})


@converter("conv2d_transpose", "depthwise_conv2d_transpose")
def _conv_transpose(cx, op):
    _nchw(cx, op)
    x, w = cx.inp(op, "Input"), cx.inp(op, "Filter")
    ws = _filter_dims(cx, op, w)
    if _str(cx, op, "padding_algorithm", "EXPLICIT") not in ("EXPLICIT", "", "VALID"):
        raise _unsupported(cx, op, "padding_algorithm='SAME' for a transposed convolution")
    pads = [0, 0, 0, 0] if op.attrs.get("padding_algorithm") == "VALID" else _pads4(cx, op)
    strides = _ints(cx, op, "strides", [1, 1], length=(2,))
    dilations = _ints(cx, op, "dilations", [1, 1], length=(2,))
    out_pad = _ints(cx, op, "output_padding", [], length=(0, 2)) or [0, 0]
    out_size = _ints(cx, op, "output_size", [], length=(0, 2))
    if out_size or op.ins("OutputSize"):
        xd = cx.dims(x)
        if not out_size or xd is None or len(xd) != 4 or min(xd[2:]) < 0:
            raise _unsupported(cx, op, "an output_size that depends on the run-time input")
        out_pad = [o - ((n - 1) * s - p0 - p1 + d * (k - 1) + 1)
                   for o, n, s, p0, p1, d, k in zip(out_size, xd[2:], strides, pads[:2], pads[2:], dilations, ws[2:])]
        if min(out_pad) < 0 or any(p >= max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
            raise ModelFormatError(f"{cx.where(op)}: output_size {out_size} does not fit the input {list(xd)}")
    groups = _int(cx, op, "groups", 1)
    ins = [x, w] + ([b] if (b := cx.inp(op, "Bias", required=False)) else [])
    cx.emit("conv2d_transpose", ins, [cx.out(op, "Output")],
            {"strides": strides, "paddings": pads, "output_padding": out_pad, "dilations": dilations,
             "groups": groups})


@converter("batch_norm", "sync_batch_norm")
def _batch_norm(cx, op):
    fmt = op.attrs.get("data_layout", op.attrs.get("data_format", "NCHW"))
    if fmt not in ("NCHW", "AnyLayout"):
        raise _unsupported(cx, op, f"data_layout={fmt!r}")
    x = cx.inp(op, "X")
    scale, bias, mean, var = (cx.inp(op, s) for s in ("Scale", "Bias", "Mean", "Variance"))
    for n in (scale, bias, mean, var):
        if n not in cx.params:
            raise _unsupported(cx, op, f"{n!r} is computed at run time (a batch_norm needs stored statistics)")
    cx.emit("batch_norm", [x, scale, bias, mean, var], [cx.out(op, "Y"), ("=", mean), ("=", var)],
            {"epsilon": _float(cx, op, "epsilon", 1e-5), "momentum": _float(cx, op, "momentum", 0.9)})


@converter("layer_norm")
def _layer_norm(cx, op):
    x = cx.inp(op, "X")
    ins = [x, cx.inp(op, "Scale", required=False) or "", cx.inp(op, "Bias", required=False) or ""]
    while ins and not ins[-1]:
        ins.pop()
    cx.emit("layer_norm", ins, [cx.out(op, "Y")], {"begin_norm_axis": _int(cx, op, "begin_norm_axis", 1),
                                                   "epsilon": _float(cx, op, "epsilon", 1e-5)})


def _unary(refquant_type, **attr_map):
    def conv(cx, op):
        attrs = {}
        for ours, (theirs, default) in attr_map.items():
            attrs[ours] = _float(cx, op, theirs, default)
        cx.emit(refquant_type, [cx.inp(op, "X")], [cx.out(op)], attrs)
    return conv


for _t in ("relu", "sigmoid", "tanh", "exp", "sqrt", "log"):
    converter(_t)(_unary(_t))
converter("relu6")(_unary("relu6", threshold=("threshold", 6.0)))
converter("hard_sigmoid")(_unary("hard_sigmoid", slope=("slope", 0.2), offset=("offset", 0.5)))
converter("hard_swish")(_unary("hard_swish", threshold=("threshold", 6.0), scale=("scale", 6.0),
                               offset=("offset", 3.0)))


@converter("gelu")
def _gelu(cx, op):
    cx.emit("gelu", [cx.inp(op, "X")], [cx.out(op)], {"approximate": _bool(cx, op, "approximate", False)})


@converter("softmax", "log_softmax")
def _softmax(cx, op):
    cx.emit(op.type, [cx.inp(op, "X")], [cx.out(op)], {"axis": _int(cx, op, "axis", -1)})


def _scaled(cx, x: str, factor: float, base: str) -> str:
    out = cx.tmp(base)
    cx.emit("scale", [x], [("=", out)], {"scale": float(factor), "bias": 0.0, "bias_after_scale": True}, out)
    return out


@converter("leaky_relu", "prelu")
def _leaky_relu(cx, op):
    """``relu(x) - a * relu(-x)``: exact, as both terms are x or 0 where the other is 0 (``a * x`` rounded once)."""
    x, out = cx.inp(op, "X"), cx.out(op)
    pos = cx.tmp(out + ".pos")
    cx.emit("relu", [x], [("=", pos)], {}, pos)
    neg_x = _scaled(cx, x, -1.0, out + ".negx")
    neg = cx.tmp(out + ".neg")
    cx.emit("relu", [neg_x], [("=", neg)], {}, neg)
    if op.type == "leaky_relu":
        scaled = _scaled(cx, neg, _float(cx, op, "alpha", 0.02), out + ".aneg")
    else:
        alpha = cx.const(cx.inp(op, "Alpha"))
        if alpha is None:
            raise _unsupported(cx, op, "a prelu slope computed at run time")
        mode = _str(cx, op, "mode", "all")
        alpha = np.asarray(alpha, np.float32)
        if mode == "channel":
            if _str(cx, op, "data_format", "NCHW") != "NCHW":
                raise _unsupported(cx, op, "data_format NHWC")
            alpha = alpha.reshape(1, -1, 1, 1)
        elif mode == "all":
            alpha = alpha.reshape(-1)[:1] if alpha.size == 1 else None
            if alpha is None:
                raise ModelFormatError(f"{cx.where(op)}: mode 'all' needs one slope")
        elif mode == "element":
            xd = cx.dims(x)
            alpha = alpha.reshape((1,) + tuple(alpha.shape[-(len(xd) - 1):])) if xd and alpha.ndim < len(xd) \
                else alpha
        else:
            raise ModelFormatError(f"{cx.where(op)}: unknown prelu mode {mode!r}")
        a = cx.param(f"{out}.alpha", alpha)
        scaled = cx.tmp(out + ".aneg")
        cx.emit("elementwise_mul", [neg, a], [("=", scaled)], {"axis": -1}, scaled)
    cx.emit("elementwise_sub", [pos, scaled], [out], {"axis": -1})


@converter("swish", "silu")
def _swish(cx, op):
    x, out = cx.inp(op, "X"), cx.out(op)
    beta = _float(cx, op, "beta", 1.0) if op.type == "swish" else 1.0
    arg = x if beta == 1.0 else _scaled(cx, x, beta, out + ".bx")
    sig = cx.tmp(out + ".sigmoid")
    cx.emit("sigmoid", [arg], [("=", sig)], {}, sig)
    cx.emit("elementwise_mul", [x, sig], [out], {"axis": -1})


@converter("elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_div", "elementwise_pow",
           "elementwise_max", "elementwise_min")
def _binary(cx, op):
    cx.emit(op.type, [cx.inp(op, "X"), cx.inp(op, "Y")], [cx.out(op)], {"axis": _int(cx, op, "axis", -1)})


@converter("sum")
def _sum(cx, op):
    names = [cx.get(n) for n in op.ins("X")]
    if not names:
        raise ModelFormatError(f"{cx.where(op)}: sum of no inputs")
    acc = names[0]
    for k, n in enumerate(names[1:]):
        last = k == len(names) - 2
        out = cx.out(op) if last else cx.tmp(cx.out(op) + ".acc")
        cx.emit("elementwise_add", [acc, n], [out if last else ("=", out)], {"axis": -1})
        acc = cx.get(out) if last else out
    if len(names) == 1:
        cx.set_alias(cx.out(op), names[0])


@converter("scale")
def _scale(cx, op):
    factor = _float(cx, op, "scale", 1.0)
    st = cx.inp(op, "ScaleTensor", required=False)
    if st is not None:
        v = cx.const(st)
        if v is None or np.size(v) != 1:
            raise _unsupported(cx, op, "a ScaleTensor computed at run time")
        factor = float(np.asarray(v).reshape(-1)[0])
    cx.emit("scale", [cx.inp(op, "X")], [cx.out(op)],
            {"scale": factor, "bias": _float(cx, op, "bias", 0.0),
             "bias_after_scale": _bool(cx, op, "bias_after_scale", True)})


@converter("mul")
def _mul(cx, op):
    cx.emit("mul", [cx.inp(op, "X"), cx.inp(op, "Y")], [cx.out(op)],
            {"x_num_col_dims": _int(cx, op, "x_num_col_dims", 1), "y_num_col_dims": _int(cx, op, "y_num_col_dims", 1)})


@converter("matmul_v2", "matmul")
def _matmul(cx, op):
    if op.type == "matmul":
        tx, ty = _bool(cx, op, "transpose_X", False), _bool(cx, op, "transpose_Y", False)
        alpha = _float(cx, op, "alpha", 1.0)
    else:
        tx, ty, alpha = _bool(cx, op, "trans_x", False), _bool(cx, op, "trans_y", False), 1.0
    out = cx.out(op)
    mm_out = out if alpha == 1.0 else cx.tmp(out + ".mm")
    cx.emit("matmul", [cx.inp(op, "X"), cx.inp(op, "Y")], [mm_out if alpha == 1.0 else ("=", mm_out)],
            {"trans_x": tx, "trans_y": ty})
    if alpha != 1.0:
        cx.emit("scale", [mm_out], [out], {"scale": alpha, "bias": 0.0, "bias_after_scale": True})


@converter("fc")
def _fc(cx, op):
    act = _str(cx, op, "activation_type", "")
    if act not in ("", "relu"):
        raise _unsupported(cx, op, f"activation_type={act!r}")
    ins = [cx.inp(op, "Input"), cx.inp(op, "W")] + ([b] if (b := cx.inp(op, "Bias", required=False)) else [])
    cx.emit("fc", ins, [cx.out(op)], {"in_num_col_dims": _int(cx, op, "in_num_col_dims", 1),
                                      "activation_type": act})


@converter("pool2d")
def _pool(cx, op):
    _nchw(cx, op)
    x = cx.inp(op, "X")
    ptype = _str(cx, op, "pooling_type", "max")
    ksize = _ints(cx, op, "ksize", None, length=(2,))
    strides = _ints(cx, op, "strides", [1, 1], length=(2,))
    global_pool = _bool(cx, op, "global_pooling", False)
    attrs = {"pooling_type": ptype, "ceil_mode": _bool(cx, op, "ceil_mode", False),
             "exclusive": _bool(cx, op, "exclusive", True)}
    if _bool(cx, op, "adaptive", False) and not global_pool:
        if ksize == [1, 1]:
            global_pool = True
        else:
            d = cx.dims(x)
            if d is None or len(d) != 4 or min(d[2:]) < 1 or any(n % k for n, k in zip(d[2:], ksize)):
                raise _unsupported(cx, op, f"adaptive pooling to {ksize} (refquant pools adaptively only to 1x1 or "
                                           f"to an output that divides a known input size)")
            ksize = strides = [n // k for n, k in zip(d[2:], ksize)]
            attrs.update(ksize=ksize, strides=strides, paddings=[0, 0, 0, 0])
            cx.emit("pool2d", [x], [cx.out(op)], attrs)
            return
    if global_pool:
        attrs.update(global_pooling=True, ksize=ksize, strides=[1, 1], paddings=[0, 0, 0, 0])
    else:
        pads, _ = _window(cx, op, x, ksize, strides, [1, 1])
        attrs.update(ksize=ksize, strides=strides, paddings=pads)
    cx.emit("pool2d", [x], [cx.out(op)], attrs)


@converter("flatten_contiguous_range")
def _flatten(cx, op):
    cx.emit("flatten", [cx.inp(op, "X")], [cx.out(op)], {"start_axis": _int(cx, op, "start_axis", 1),
                                                          "stop_axis": _int(cx, op, "stop_axis", -1)})


@converter("flatten", "flatten2")
def _flatten2(cx, op):
    x, out = cx.inp(op, "X"), cx.out(op)
    axis = _int(cx, op, "axis", 1)
    if axis == 0:
        cx.emit("reshape", [x], [out], {"shape": [1, -1]})
        return
    head = cx.tmp(out + ".head")
    cx.emit("flatten", [x], [("=", head)], {"start_axis": 0, "stop_axis": axis - 1}, head)
    cx.emit("flatten", [head], [out], {"start_axis": 1, "stop_axis": -1})


def _int_list_input(cx, op, slot) -> list | None:
    """An int list given as a tensor input (a parameter or a constant), or None when absent."""
    names = op.ins(slot)
    if not names:
        return None
    values = []
    for n in names:
        v = cx.const(cx.get(n))
        if v is None:
            return ["dynamic", cx.get(n)]
        if np.asarray(v).dtype.kind not in "iu" or np.ndim(v) > 1:
            raise ModelFormatError(f"{cx.where(op)}: {slot} must be an int vector, got {np.asarray(v).dtype} "
                                   f"{np.shape(v)}")
        values += [int(e) for e in np.ravel(v)]
    return values


@converter("reshape2", "reshape")
def _reshape(cx, op):
    x, out = cx.inp(op, "X"), cx.out(op)
    shape = _int_list_input(cx, op, "ShapeTensor") or _int_list_input(cx, op, "Shape")
    if shape and shape[0] == "dynamic":
        pieces = op.ins("ShapeTensor")
        if len(pieces) > 1:   # [x.shape[0], 8, -1]: one-element int tensors, joined at run time
            if len(pieces) > 32:
                raise ModelFormatError(f"{cx.where(op)}: a ShapeTensor list of {len(pieces)} entries")
            ones = []
            for k, n in enumerate(pieces):
                one = cx.tmp(f"{out}.dim{k}")
                cx.emit("reshape", [cx.get(n)], [("=", one)], {"shape": [1]}, one)
                ones.append(one)
            target = cx.tmp(out + ".shape")
            cx.emit("concat", ones, [("=", target)], {"axis": 0}, target)
            shape = ["dynamic", target]
        cx.emit("reshape", [x, shape[1]], [out], {})
        return
    if shape is None:
        shape = _ints(cx, op, "shape")
    if len(shape) > 32 or shape.count(-1) > 1 or any(s < -1 for s in shape):
        raise ModelFormatError(f"{cx.where(op)}: invalid target shape {shape[:8]}")
    cx.emit("reshape", [x], [out], {"shape": shape})


@converter("transpose2", "transpose")
def _transpose(cx, op):
    cx.emit("transpose", [cx.inp(op, "X")], [cx.out(op)], {"perm": _ints(cx, op, "axis")})


@converter("pad3d")
def _pad3d(cx, op):
    pads = _int_list_input(cx, op, "Paddings") or _ints(cx, op, "paddings", length=(6,))
    if pads and pads[0] == "dynamic":
        raise _unsupported(cx, op, "paddings computed at run time")
    cx.emit("pad3d", [cx.inp(op, "X")], [cx.out(op)],
            {"paddings": pads, "mode": _str(cx, op, "mode", "constant"), "value": _float(cx, op, "value", 0.0),
             "data_format": _str(cx, op, "data_format", "NCDHW")})


@converter("stack")
def _stack(cx, op):
    names = [cx.get(n) for n in op.ins("X")]
    if not names:
        raise ModelFormatError(f"{cx.where(op)}: stack of no inputs")
    cx.emit("stack", names, [cx.out(op, "Y")], {"axis": _int(cx, op, "axis", 0)})


@converter("squeeze2", "squeeze")
def _squeeze(cx, op):
    axes = _int_list_input(cx, op, "AxesTensor") or _ints(cx, op, "axes", [])
    if axes and axes[0] == "dynamic":
        raise _unsupported(cx, op, "axes computed at run time")
    cx.emit("squeeze", [cx.inp(op, "X")], [cx.out(op)], {"axes": axes} if axes else {})


@converter("unsqueeze2", "unsqueeze")
def _unsqueeze(cx, op):
    axes = _int_list_input(cx, op, "AxesTensor") or _ints(cx, op, "axes", [])
    if axes and axes[0] == "dynamic":
        raise _unsupported(cx, op, "axes computed at run time")
    if not axes:
        raise ModelFormatError(f"{cx.where(op)}: unsqueeze without axes")
    # Paddle inserts the axes one after the other, each against the shape grown so far: the same as ONNX's
    # sorted insertion only for ascending non-negative axes, so insert them one at a time.
    x, out = cx.inp(op, "X"), cx.out(op)
    for k, a in enumerate(axes):
        last = k == len(axes) - 1
        dst = out if last else cx.tmp(out + ".unsq")
        cx.emit("unsqueeze", [x], [dst if last else ("=", dst)], {"axes": [a]})
        x = dst


@converter("concat")
def _concat(cx, op):
    axis = _int_list_input(cx, op, "AxisTensor")
    if axis and axis[0] == "dynamic":
        raise _unsupported(cx, op, "an axis computed at run time")
    axis = axis[0] if axis else _int(cx, op, "axis", 0)
    names = [cx.get(n) for n in op.ins("X")]
    if not names:
        raise ModelFormatError(f"{cx.where(op)}: concat of no inputs")
    cx.emit("concat", names, [cx.out(op)], {"axis": axis})


@converter("split")
def _split(cx, op):
    x = cx.inp(op, "X")
    axis = _int(cx, op, "axis", 0)
    outs = op.outs("Out")
    sections = _ints(cx, op, "sections", [])
    num = _int(cx, op, "num", 0)
    d = cx.dims(x)
    if d is None or not -len(d) <= axis < len(d):
        raise ModelFormatError(f"{cx.where(op)}: axis {axis} for the input dims {d}")
    n = d[axis]
    if not sections:
        if num <= 0 or num != len(outs) or n < 0 or n % num:
            raise _unsupported(cx, op, f"split into {num} parts of an axis of size {n}")
        sections = [n // num] * num
    if len(sections) != len(outs):
        raise ModelFormatError(f"{cx.where(op)}: {len(sections)} sections for {len(outs)} outputs")
    if -1 in sections:
        if n < 0 or sections.count(-1) > 1:
            raise _unsupported(cx, op, "a -1 section of an axis of unknown size")
        sections[sections.index(-1)] = n - (sum(sections) + 1)
    start = 0
    for o, s in zip(outs, sections):
        cx.emit("slice", [x], [o], {"axes": [axis], "starts": [start], "ends": [start + s], "steps": [1]})
        start += s


@converter("slice", "strided_slice")
def _slice(cx, op):
    x, out = cx.inp(op, "Input"), cx.out(op)
    for slot in ("StartsTensor", "EndsTensor", "StartsTensorList", "EndsTensorList", "StridesTensor",
                 "StridesTensorList"):
        if op.ins(slot):
            raise _unsupported(cx, op, f"{slot} (bounds computed at run time)")
    axes = _ints(cx, op, "axes")
    starts, ends = _ints(cx, op, "starts"), _ints(cx, op, "ends")
    steps = _ints(cx, op, "strides", [1] * len(axes)) if op.type == "strided_slice" else [1] * len(axes)
    if not len(axes) == len(starts) == len(ends) == len(steps):
        raise ModelFormatError(f"{cx.where(op)}: axes, starts, ends and strides differ in length")
    decrease = _ints(cx, op, "decrease_axis", [])
    attrs = {"axes": axes, "starts": starts, "ends": ends, "steps": steps}
    if not decrease:
        cx.emit("slice", [x], [out], attrs)
        return
    mid = cx.tmp(out + ".slice")
    cx.emit("slice", [x], [("=", mid)], attrs, mid)
    d = cx.dims(out)
    if d is not None and len(d) == 0:   # every axis decreased: Paddle keeps a 0-d tensor
        cx.emit("reshape", [mid], [out], {"shape": []})
    else:
        cx.emit("squeeze", [mid], [out], {"axes": decrease})


_INTERP = {"nearest_interp": "nearest", "nearest_interp_v2": "nearest", "bilinear_interp": "bilinear",
           "bilinear_interp_v2": "bilinear"}


@converter(*_INTERP)
def _interp(cx, op):
    _nchw(cx, op, "data_layout")
    x, out = cx.inp(op, "X"), cx.out(op)
    method = _INTERP[op.type]
    if _str(cx, op, "interp_method", method) != method:
        raise _unsupported(cx, op, f"interp_method {op.attrs.get('interp_method')!r}")
    align = _bool(cx, op, "align_corners", True)
    align_mode = _int(cx, op, "align_mode", 1)
    if method == "nearest":
        mode, nearest = ("align_corners", "round_prefer_ceil") if align else ("asymmetric", "floor")
    else:
        mode, nearest = ("align_corners" if align else "half_pixel" if align_mode == 0 else "asymmetric"), None
    attrs = {"align_corners": align, "coordinate_transformation_mode": mode}
    if nearest:
        attrs["nearest_mode"] = nearest
    for slot in ("SizeTensor", "Scale"):
        if op.ins(slot):
            v = _int_list_input(cx, op, slot) if slot == "SizeTensor" else cx.const(cx.inp(op, slot))
            if v is None or (isinstance(v, list) and v and v[0] == "dynamic"):
                raise _unsupported(cx, op, f"{slot} computed at run time")
            if slot == "SizeTensor":
                attrs["out_size"] = list(v)
            else:
                attrs["scale"] = [float(e) for e in np.ravel(v)]
    size_in = cx.inp(op, "OutSize", required=False)
    oh, ow = _int(cx, op, "out_h", -1), _int(cx, op, "out_w", -1)
    scale = op.attrs.get("scale", [])
    scale = [scale] if isinstance(scale, (int, float)) and not isinstance(scale, bool) else list(scale or [])
    if "out_size" not in attrs and "scale" not in attrs:
        if scale and all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scale):
            attrs["scale"] = [float(s) for s in scale[-2:]] if len(scale) > 1 else [float(scale[0])] * 2
        elif oh > 0 and ow > 0:
            attrs["out_size"] = [oh, ow]
    inputs = [x]
    if size_in is not None:
        v = cx.const(size_in)
        if v is not None:
            attrs["out_size"] = [int(e) for e in np.ravel(v)]
            attrs.pop("scale", None)
        else:
            inputs.append(size_in)
    cx.emit(f"{method}_interp", inputs, [out], attrs)


@converter("dropout")
def _dropout(cx, op):
    impl = _str(cx, op, "dropout_implementation", "downgrade_in_infer")
    x, out = cx.inp(op, "X"), cx.out(op)
    if impl == "upscale_in_train":
        cx.set_alias(out, x)
    elif impl == "downgrade_in_infer":
        cx.emit("scale", [x], [out], {"scale": 1.0 - _float(cx, op, "dropout_prob", 0.5), "bias": 0.0,
                                      "bias_after_scale": True})
    else:
        raise ModelFormatError(f"{cx.where(op)}: unknown dropout_implementation {impl!r}")


@converter("assign", "share_data", "memcpy", "memcpy_d2h", "memcpy_h2d")
def _assign(cx, op):
    cx.set_alias(cx.out(op), cx.inp(op, "X"))


@converter("cast")
def _cast(cx, op):
    code = _int(cx, op, "out_dtype", 5)
    dtype = _VARTYPE_DTYPES.get(code)
    if dtype is None:
        raise _unsupported(cx, op, f"out_dtype {code}")
    cx.emit("cast", [cx.inp(op, "X")], [cx.out(op)], {"dtype": dtype})


@converter("shape")
def _shape(cx, op):
    cx.emit("shape", [cx.inp(op, "Input")], [cx.out(op)], {})


@converter("clip")
def _clip(cx, op):
    lo, hi = _float(cx, op, "min", -math.inf), _float(cx, op, "max", math.inf)
    for slot in ("Min", "Max"):
        n = cx.inp(op, slot, required=False)
        if n is not None:
            v = cx.const(n)
            if v is None or np.size(v) != 1:
                raise _unsupported(cx, op, f"a {slot} bound computed at run time")
            if slot == "Min":
                lo = float(np.ravel(v)[0])
            else:
                hi = float(np.ravel(v)[0])
    cx.emit("clip", [cx.inp(op, "X")], [cx.out(op)], {"min": lo, "max": hi})


@converter("reduce_mean", "reduce_sum", "mean")
def _reduce(cx, op):
    x = cx.inp(op, "X")
    if op.type == "mean":
        cx.emit("mean", [x], [cx.out(op)], {})
        return
    attrs = {"keep_dim": _bool(cx, op, "keep_dim", False)}
    if not _bool(cx, op, "reduce_all", False):
        attrs["dim"] = _ints(cx, op, "dim", [])
    cx.emit(op.type, [x], [cx.out(op)], attrs)


@converter("lookup_table_v2", "lookup_table")
def _lookup(cx, op):
    ids = cx.inp(op, "Ids")
    if op.type == "lookup_table":   # (..., 1) ids: Paddle drops the trailing 1
        d = cx.dims(ids)
        if d is None or not d or d[-1] != 1:
            raise _unsupported(cx, op, f"lookup_table ids of dims {d} (a trailing 1 expected)")
        sq = cx.tmp(cx.out(op) + ".ids")
        cx.emit("squeeze", [ids], [("=", sq)], {"axes": [-1]}, sq)
        ids = sq
    cx.emit("lookup_table", [cx.inp(op, "W"), ids], [cx.out(op)],
            {"padding_idx": _int(cx, op, "padding_idx", -1)})


@converter("fill_constant")
def _fill_constant(cx, op):
    for slot in ("ShapeTensor", "ShapeTensorList", "ValueTensor"):
        if op.ins(slot):
            raise _unsupported(cx, op, f"{slot} (a value computed at run time)")
    dtype = _VARTYPE_DTYPES.get(_int(cx, op, "dtype", 5))
    if dtype is None:
        raise _unsupported(cx, op, f"dtype {op.attrs.get('dtype')}")
    shape = _ints(cx, op, "shape", [])
    if any(s < 0 for s in shape) or math.prod(shape) > 1 << 24:
        raise ModelFormatError(f"{cx.where(op)}: fill_constant of shape {shape[:8]}")
    text = _str(cx, op, "str_value", "")
    try:
        value = float(text) if text else _float(cx, op, "value", 0.0)
    except ValueError:
        raise ModelFormatError(f"{cx.where(op)}: str_value {text[:40]!r} is not a number") from None
    out = cx.out(op)
    cx.params[cx.new(out)] = np.full(shape, value, dtype=dtype)


# ---- quantization ops --------------------------------------------------------------------------------
def _scale_value(cx, op, name, what="scale") -> np.ndarray:
    v = cx.const(name)
    if v is None:
        raise _unsupported(cx, op, f"the {what} {name!r} is computed at run time (not a saved inference program)")
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ModelFormatError(f"{cx.where(op)}: the {what} {name!r} must be finite and >= 0, got {v[:4]}")
    return v


def _bits(cx, op, key="bit_length") -> int:
    b = _int(cx, op, key, 8)
    if not 2 <= b <= 16:
        raise ModelFormatError(f"{cx.where(op)}: {key} {b} is outside [2, 16]")
    return b


def _scale_param(cx, x: str, t: float) -> str:
    """``<x>@scale`` holding threshold ``t`` (refquant's name for an activation threshold)."""
    name = f"{x}@scale"
    if name in cx.params and np.asarray(cx.params[name]).reshape(-1).tolist() != [np.float32(t)]:
        return cx.param(name, np.array([t], np.float32))
    cx.params[name] = np.array([t], np.float32)
    cx.written.add(name)
    return name


@converter("fake_quantize_range_abs_max", "fake_quantize_moving_average_abs_max",
           "fake_quantize_dequantize_moving_average_abs_max", "fake_quantize_dequantize_range_abs_max")
def _fake_quant(cx, op):
    """Freeze-form activation quantization with a stored threshold (``InScale``): a quant-dequant here; the
    integer ``q`` of Paddle's quantize-only ops is divided back by the dequantize op that follows the conv."""
    x = cx.inp(op, "X")
    t = _scale_value(cx, op, cx.inp(op, "InScale"), "InScale")
    if t.size != 1:
        raise ModelFormatError(f"{cx.where(op)}: InScale holds {t.size} values, one expected")
    bits = _bits(cx, op)
    s = _scale_param(cx, x, float(t[0]))
    out = cx.out(op)
    emitted = cx.emit("fake_quantize_dequantize_abs_max", [x, s], [out],
                      {"bit_length": bits, "round_type": _int(cx, op, "round_type", 1)}, name=f"{out}")
    cx.qdq[emitted.outputs[0]] = (x, float(t[0]), bits)
    cx.act_t.setdefault(x, float(t[0]))
    cx.bits.add(bits)
    cx.forms.add("freeze")


@converter("fake_quantize_abs_max", "fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_abs_max",
           "fake_channel_wise_quantize_dequantize_abs_max")
def _dynamic_quant(cx, op):
    """Quantization whose threshold is max|x| of each run (QAT graphs before ``convert``): refquant's
    quant-dequant ops without a scale input compute the same."""
    x = cx.inp(op, "X")
    channel = "channel_wise" in op.type
    attrs = {"bit_length": _bits(cx, op), "round_type": _int(cx, op, "round_type", 1)}
    if channel:
        attrs["quant_axis"] = _int(cx, op, "quant_axis", 0)
    out = cx.out(op)
    cx.emit("fake_channel_wise_quantize_dequantize_abs_max" if channel else "fake_quantize_dequantize_abs_max",
            [x], [out], attrs)
    cx.forms.add("dynamic")


@converter("moving_average_abs_max_scale")
def _observer(cx, op):
    """An output-scale observer (QAT): forwards its input; its stored scale is that tensor's threshold."""
    x = cx.inp(op, "X")
    scale = op.outs("OutScale")
    if scale and scale[0] in cx.params:
        cx.out_t[x] = float(_scale_value(cx, op, scale[0], "OutScale")[0])
    out = cx.out(op, required=False)
    if out:
        cx.set_alias(out, x)


def _weight_op(cx, op, name: str):
    """The refquant weight op producing ``name`` and its weight parameter, for a dequantize op after it."""
    prod = cx.producer.get(name)
    if prod is None or prod.type not in WEIGHT_OP_TYPES or len(prod.inputs) < 2 or prod.inputs[1] not in cx.params:
        raise _unsupported(cx, op, f"a dequantize op after {prod.type if prod else 'no op'} (only after a conv, "
                                   f"mul or matmul with a stored weight)")
    return prod, prod.inputs[1]


def _rescale_weight(cx, op, prod, w: str, t: np.ndarray, axis, bits: int) -> None:
    """Turn the frozen integer weight ``w`` into refquant's stored form ``q * T_c / qmax``."""
    q = np.asarray(cx.params[w])
    if q.dtype.kind != "f":
        raise ModelFormatError(f"{cx.where(op)}: weight {w!r} is {q.dtype}, a frozen float weight was expected")
    if axis is not None and (axis >= q.ndim or q.shape[axis] != t.size):
        raise ModelFormatError(f"{cx.where(op)}: {t.size} weight scales for {w!r} of shape {q.shape} "
                               f"(axis {axis})")
    qm = rounding.qmax(bits)
    if w in cx.w_t:
        if list(map(float, t)) != cx.w_t[w]:
            raise _unsupported(cx, op, f"weight {w!r} is shared by two quantized ops with different scales")
    else:
        if not np.array_equal(q, np.rint(q)) or np.abs(q).max(initial=0) > qm:
            raise ModelFormatError(f"{cx.where(op)}: weight {w!r} is not {bits}-bit integer-valued (not a frozen "
                                   f"quantized weight)")
        cx.params[w] = rounding.dequantize_weight(q.astype(np.float32), t if axis is not None else t[0], axis,
                                                  bits).astype(np.float32)
        cx.params[f"{w}@scale"] = t.astype(np.float32)
        cx.written.add(f"{w}@scale")
        cx.w_t[w] = list(map(float, t))
        cx.w_axis[w] = axis
    _mark_quantized(cx, prod, bits, axis)


def _mark_quantized(cx, prod, bits, axis) -> None:
    from ..calibration import weight_channel_axis
    prod.attrs.setdefault("quantization_type", "paddle_import")
    prod.attrs["weight_bits"] = bits
    prod.attrs["activation_bits"] = bits
    prod.attrs["weight_quantize_type"] = "abs_max" if axis is None else "channel_wise_abs_max"
    if axis is not None:
        prod.attrs["weight_quant_axis"] = weight_channel_axis(prod.type)
    cx.bits.add(bits)


def _check_act_scale(cx, op, prod, t_act: float) -> None:
    x = prod.inputs[0]
    rec = cx.qdq.get(x)
    if rec is None:
        raise _unsupported(cx, op, f"the dequantize op names an activation scale but the input {x!r} of "
                                   f"{prod.name!r} is not quantized")
    if not math.isclose(rec[1], t_act, rel_tol=1e-6, abs_tol=0.0):
        raise ModelFormatError(f"{cx.where(op)}: the activation scale {t_act} differs from the threshold "
                               f"{rec[1]} that quantized {x!r}")


@converter("fake_channel_wise_dequantize_max_abs")
def _channel_dequant(cx, op):
    from ..calibration import weight_channel_axis
    x = cx.inp(op, "X")
    scales = [cx.get(n) for n in op.ins("Scales")]
    bits = _ints(cx, op, "quant_bits", [8] * len(scales))
    if not 1 <= len(scales) <= 2 or len(bits) != len(scales) or any(not 2 <= b <= 16 for b in bits):
        raise ModelFormatError(f"{cx.where(op)}: {len(scales)} Scales with quant_bits {bits}")
    prod, w = _weight_op(cx, op, x)
    t_w = _scale_value(cx, op, scales[0], "weight scale")
    axis = weight_channel_axis(prod.type)
    if len(scales) == 2:
        t_a = _scale_value(cx, op, scales[1], "activation scale")
        if t_a.size != 1:
            raise ModelFormatError(f"{cx.where(op)}: the activation scale holds {t_a.size} values")
        _check_act_scale(cx, op, prod, float(t_a[0]))
    _rescale_weight(cx, op, prod, w, t_w, axis if t_w.size > 1 or cx.dims(w)[axis] == 1 else None, bits[0])
    cx.set_alias(cx.out(op), x)
    cx.forms.add("freeze")


@converter("fake_dequantize_max_abs")
def _dequant(cx, op):
    x = cx.inp(op, "X")
    max_range = _float(cx, op, "max_range")
    t_a = _scale_value(cx, op, cx.inp(op, "Scale"))
    if t_a.size != 1 or not max_range > 0:
        raise ModelFormatError(f"{cx.where(op)}: Scale of {t_a.size} values, max_range {max_range}")
    rec = cx.qdq.get(x)
    if rec is not None:   # dequantize right after a quantize: the quant-dequant already did it
        if not math.isclose(max_range, rounding.qmax(rec[2]), rel_tol=1e-6):
            raise ModelFormatError(f"{cx.where(op)}: max_range {max_range} after a {rec[2]}-bit quantize")
        cx.set_alias(cx.out(op), x)
        return
    prod, w = _weight_op(cx, op, x)
    _check_act_scale(cx, op, prod, float(t_a[0]))
    bits = cx.qdq[prod.inputs[0]][2]
    qm = rounding.qmax(bits)
    t_w = np.array([qm * qm / max_range], np.float32)   # max_range = (qmax_w / T_w) * qmax_a
    _rescale_weight(cx, op, prod, w, t_w, None, bits)
    cx.set_alias(cx.out(op), x)
    cx.forms.add("freeze")


@converter("quantize_linear", "dequantize_linear")
def _linear(cx, op):
    x = cx.inp(op, "X")
    scale = cx.inp(op, "Scale")
    t = _scale_value(cx, op, scale)
    zp = cx.inp(op, "ZeroPoint", required=False)
    axis = _int(cx, op, "quant_axis", -1)
    bits = _bits(cx, op)
    attrs = {"quant_axis": axis, "bit_length": bits}
    if "round_type" in op.attrs:
        attrs["round_type"] = _int(cx, op, "round_type", 0)
    if _bool(cx, op, "only_observer", False):
        attrs["only_observer"] = True
    if axis < 0 and t.size != 1:
        raise ModelFormatError(f"{cx.where(op)}: a per-tensor {op.type} with {t.size} scales")
    if attrs.get("only_observer") and x in cx.params:    # an observer on a constant (a reshaped bias): identity
        cx.set_alias(cx.out(op, "Y"), x)
        return
    cx.params[scale] = t                                   # 0-d / (1, C) scales as refquant's 1-D ones
    ins = [x, scale]
    if zp is not None:
        z = cx.const(zp)
        if z is None or np.asarray(z).dtype.kind not in "iuf" or np.any(np.asarray(z) != 0):
            raise _unsupported(cx, op, f"zero point {zp!r} (Paddle's quantization is symmetric: zero points 0)")
        cx.params[zp] = np.zeros(np.size(z), np.int32)
        ins.append(zp)
    out = cx.out(op, "Y")
    cx.bits.add(bits)
    cx.forms.add("onnx")
    if x in cx.params and op.type == "quantize_linear":   # a float weight quantized at run time: do it now
        w = np.asarray(cx.params[x], np.float32)
        tt = rounding.channel_view(t, w.ndim, axis) if axis >= 0 else t[0]
        q = rounding.quantize_op(w, tt, bits, attrs.get("round_type", 0))
        cx.params[cx.new(out)] = q.astype(np.int8 if bits <= 8 else np.int16)
        cx.w_t.setdefault(x, list(map(float, t)))
        return
    if x in cx.params and op.type == "dequantize_linear":  # an int weight
        w = np.asarray(cx.params[x])
        if w.dtype.kind == "f":
            if not np.array_equal(w, np.rint(w)) or np.abs(w).max(initial=0) > rounding.qmax(bits) + 1:
                raise ModelFormatError(f"{cx.where(op)}: weight {x!r} is not {bits}-bit integer-valued")
            cx.params[x] = w.astype(np.int8 if bits <= 8 else np.int16)
        elif w.dtype.kind not in "iu":
            raise ModelFormatError(f"{cx.where(op)}: weight {x!r} of dtype {w.dtype}")
        if axis >= 0 and (axis >= w.ndim or w.shape[axis] != t.size):
            raise ModelFormatError(f"{cx.where(op)}: {t.size} scales for {x!r} of shape {w.shape} (axis {axis})")
        cx.w_t[x] = list(map(float, t))
        cx.w_axis[x] = axis if axis >= 0 else None
    elif op.type == "quantize_linear" and axis < 0 and not attrs.get("only_observer"):
        cx.act_t.setdefault(x, float(t[0]))
    elif op.type == "quantize_linear" and attrs.get("only_observer"):
        cx.out_t.setdefault(x, float(t[0]))
    cx.emit(op.type, ins, [out], attrs)


# ------------------------------------------------------------------------------------------------------
# the whole program
# ------------------------------------------------------------------------------------------------------
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
