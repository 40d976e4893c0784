"""GraphBuilder: write a model layer by layer with Paddle-style names and deterministic initial weights.

Names follow Paddle's static-graph conventions, so a refquant graph reads like a Paddle program (and PaddleSlim's
op-type and tensor-name based configs apply): a layer with parameters is ``<kind>_<k>`` with parameters
``<kind>_<k>.w_0`` / ``.b_0`` and intermediate tensors ``<kind>_<k>.tmp_<j>``; a parameter-free op gets its own
counter (``relu_3.tmp_0``, ``pool2d_1.tmp_0``, ``elementwise_add_0.tmp_0``). Examples: ``conv2d_0.w_0``,
``conv2d_0.tmp_0``; ``batch_norm_0.w_0`` (scale), ``.b_0`` (bias), ``.w_1`` (running mean), ``.w_2`` (running
variance), output ``batch_norm_0.tmp_3``; ``fc_0.w_0`` (in, out), ``fc_0.b_0``, ``fc_0.tmp_0`` (mul),
``fc_0.tmp_1`` (+bias), ``fc_0.tmp_2`` (activation).

Initialisation follows Paddle's defaults: conv weights Kaiming-normal over the fan-in (``std = sqrt(2 / fan_in)``),
fc and embedding weights Xavier-uniform, biases zero, batch/layer norm scale one and shift zero, running
variance one. All draws come from one ``numpy.random.default_rng(seed)`` in build order, so a seed fixes the
model bit for bit. The builder also tracks every tensor's shape (batch as ``None``) so layers can size their
weights from their input.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..graph import Model, Op, TensorSpec
from ..reference.im2col import conv_out_size


def _pair(v) -> list[int]:
    return [int(v), int(v)] if np.isscalar(v) else [int(a) for a in v]


def _conv_out(size: Optional[int], k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1) -> Optional[int]:
    if size is None:
        return None
    out = conv_out_size(size, k, stride, pad_lo, pad_hi, dilation)
    if out <= 0:
        raise ValueError(f"spatial size {size} too small for kernel {k}, stride {stride}, padding {pad_lo}+{pad_hi}")
    return out


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round channels to a multiple of ``divisor``, never dropping more than 10% (the MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class GraphBuilder:
    """Accumulates ops and parameters; :meth:`build` returns the :class:`~refquant.graph.Model`."""

    def __init__(self, name: str = "model", seed: int = 0, dtype: str = "float32"):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.ops: list[Op] = []
        self.params: dict[str, np.ndarray] = {}
        self.frozen: set[str] = set()         # parameters the optimizer must not update
        self.inputs: list[TensorSpec] = []
        self.shapes: dict[str, tuple] = {}
        self._counters: dict[str, int] = {}

    # ---- naming & bookkeeping --------------------------------------------------------------------
    def unique(self, kind: str) -> str:
        """``kind_<k>`` with a per-kind counter, as Paddle's ``unique_name.generate``."""
        k = self._counters.get(kind, 0)
        self._counters[kind] = k + 1
        return f"{kind}_{k}"

    def input(self, name: str, shape: Sequence, dtype: str = "float32") -> str:
        shape = tuple(None if d is None else int(d) for d in shape)
        self.inputs.append(TensorSpec(name, shape, dtype))
        self.shapes[name] = shape
        return name

    def param(self, name: str, value: np.ndarray, trainable: bool = True) -> str:
        if name in self.params:
            raise ValueError(f"parameter {name!r} defined twice")
        value = np.ascontiguousarray(value)
        if value.dtype.kind == "f":
            value = value.astype(self.dtype, copy=False)
        self.params[name] = value
        self.shapes[name] = tuple(value.shape)
        if not trainable:
            self.frozen.add(name)
        return name

    def op(self, type: str, inputs: Sequence[str], outputs: Sequence[str], attrs: Optional[dict] = None,
           name: Optional[str] = None) -> None:
        self.ops.append(Op(type, list(inputs), list(outputs), dict(attrs or {}),
                           name or f"{type}_{len(self.ops)}"))

    def shape(self, name: str) -> tuple:
        return self.shapes[name]

    def channels(self, name: str) -> int:
        return int(self.shapes[name][1])

    # ---- initialisers ----------------------------------------------------------------------------
    def kaiming_normal(self, shape: Sequence[int], fan_in: int) -> np.ndarray:
        std = math.sqrt(2.0 / fan_in)
        return self.rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std)

    def xavier_uniform(self, shape: Sequence[int], fan_in: int, fan_out: int) -> np.ndarray:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        u = self.rng.random(tuple(shape), dtype=np.float32)
        return (u * np.float32(2 * limit) - np.float32(limit)).astype(np.float32)

    # ---- simple ops ------------------------------------------------------------------------------
    def _unary(self, type: str, x: str, attrs: Optional[dict] = None, shape=None) -> str:
        base = self.unique(type)
        out = f"{base}.tmp_0"
        self.op(type, [x], [out], attrs, name=base)
        self.shapes[out] = self.shapes[x] if shape is None else tuple(shape)
        return out

    def relu(self, x: str) -> str:
        return self._unary("relu", x)

    def relu6(self, x: str) -> str:
        return self._unary("relu6", x, {"threshold": 6.0})

    def gelu(self, x: str, approximate: bool = False) -> str:
        return self._unary("gelu", x, {"approximate": bool(approximate)})

    def activation(self, x: str, act: Optional[str]) -> str:
        if not act:
            return x
        if act == "relu":
            return self.relu(x)
        if act == "relu6":
            return self.relu6(x)
        if act == "gelu":
            return self.gelu(x)
        return self._unary(act, x)

    def softmax(self, x: str, axis: int = -1) -> str:
        return self._unary("softmax", x, {"axis": int(axis)})

    def scale(self, x: str, scale: float, bias: float = 0.0) -> str:
        return self._unary("scale", x, {"scale": float(scale), "bias": float(bias), "bias_after_scale": True})

    def dropout(self, x: str, p: float) -> str:
        if not p:
            return x
        return self._unary("dropout", x, {"dropout_prob": float(p),
                                          "dropout_implementation": "upscale_in_train"})

    def _binary(self, type: str, x: str, y: str, axis: int = -1) -> str:
        base = self.unique(type)
        out = f"{base}.tmp_0"
        self.op(type, [x, y], [out], {"axis": int(axis)}, name=base)
        self.shapes[out] = _broadcast(self.shapes[x], self.shapes[y]) if axis == -1 else self.shapes[x]
        return out

    def add(self, x: str, y: str, axis: int = -1) -> str:
        return self._binary("elementwise_add", x, y, axis)

    def mul_elementwise(self, x: str, y: str, axis: int = -1) -> str:
        return self._binary("elementwise_mul", x, y, axis)

    def div(self, x: str, y: str, axis: int = -1) -> str:
        return self._binary("elementwise_div", x, y, axis)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        shape = [int(s) for s in shape]
        src = self.shapes[x]
        out_shape = [src[i] if s == 0 else (None if s == -1 else s) for i, s in enumerate(shape)]
        if -1 in shape and None not in [src[i] for i, s in enumerate(shape) if s == 0] and None not in src:
            known = int(np.prod([d for d in out_shape if d is not None]))
            out_shape[shape.index(-1)] = int(np.prod(src)) // known
        return self._unary_named("reshape", "reshape2", x, {"shape": shape}, out_shape)

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        src = self.shapes[x]
        return self._unary_named("transpose", "transpose", x, {"perm": [int(p) for p in perm]},
                                 [src[p] for p in perm])

    def flatten(self, x: str, start_axis: int = 1, stop_axis: int = -1) -> str:
        src = self.shapes[x]
        stop = stop_axis % len(src)
        mid = src[start_axis:stop + 1]
        merged = None if any(d is None for d in mid) else int(np.prod(mid))
        out_shape = tuple(src[:start_axis]) + (merged,) + tuple(src[stop + 1:])
        return self._unary_named("flatten", "flatten", x, {"start_axis": int(start_axis),
                                                           "stop_axis": int(stop_axis)}, out_shape)

    def reduce(self, type: str, x: str, dim: Optional[Sequence[int]], keep_dim: bool = False) -> str:
        src = self.shapes[x]
        dims = list(range(len(src))) if dim is None else [d % len(src) for d in dim]
        out_shape = [1 if i in dims else d for i, d in enumerate(src)] if keep_dim else \
            [d for i, d in enumerate(src) if i not in dims]
        return self._unary(type, x, {"dim": None if dim is None else [int(d) for d in dim],
                                     "keep_dim": bool(keep_dim)}, out_shape)

    def _unary_named(self, type: str, kind: str, x: str, attrs: dict, out_shape) -> str:
        base = self.unique(kind)
        out = f"{base}.tmp_0"
        self.op(type, [x], [out], attrs, name=base)
        self.shapes[out] = tuple(out_shape)
        return out

    def matmul(self, x: str, y: str, trans_x: bool = False, trans_y: bool = False) -> str:
        base = self.unique("matmul")
        out = f"{base}.tmp_0"
        self.op("matmul", [x, y], [out], {"trans_x": bool(trans_x), "trans_y": bool(trans_y)}, name=base)
        a, b = list(self.shapes[x]), list(self.shapes[y])
        if trans_x:
            a[-2], a[-1] = a[-1], a[-2]
        if trans_y:
            b[-2], b[-1] = b[-1], b[-2]
        self.shapes[out] = _broadcast(tuple(a[:-2]), tuple(b[:-2])) + (a[-2], b[-1])
        return out

    # ---- layers with parameters ------------------------------------------------------------------
    def conv2d(self, x: str, out_channels: int, kernel, stride=1, padding=None, dilation=1, groups: int = 1,
               bias: bool = False, bias_style: str = "input") -> str:
        """Conv layer ``conv2d_<k>``; ``padding=None`` means "same" for odd kernels (k // 2).

        ``groups == in_channels`` (> 1) emits ``depthwise_conv2d``, as Paddle does. ``bias_style``: "input" passes
        the bias as the op's third input; "add" writes Paddle's older pattern reshape2 + elementwise_add (output
        ``conv2d_<k>.tmp_1``), which is how the oracle LeNet reads.
        """
        in_c = self.channels(x)
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        dh, dw = _pair(dilation)
        if padding is None:
            padding = [dh * (kh - 1) // 2, dw * (kw - 1) // 2]
        pads = _pair(padding) if np.isscalar(padding) or len(padding) == 2 else [int(p) for p in padding]
        if len(pads) == 2:
            pads = [pads[0], pads[1], pads[0], pads[1]]
        if in_c % groups or out_channels % groups:
            raise ValueError(f"channels {in_c}->{out_channels} not divisible by groups {groups}")
        base = self.unique("conv2d")
        fan_in = (in_c // groups) * kh * kw
        w = self.param(f"{base}.w_0", self.kaiming_normal((out_channels, in_c // groups, kh, kw), fan_in))
        inputs = [x, w]
        b = None
        if bias:
            b = self.param(f"{base}.b_0", np.zeros(out_channels, np.float32))
            if bias_style == "input":
                inputs.append(b)
            elif bias_style != "add":
                raise ValueError(f"bias_style must be 'input' or 'add', got {bias_style!r}")
        op_type = "depthwise_conv2d" if groups > 1 and groups == in_c else "conv2d"
        out = f"{base}.tmp_0"
        self.op(op_type, inputs, [out], {"strides": [sh, sw], "paddings": pads, "dilations": [dh, dw],
                                         "groups": int(groups)}, name=base)
        n, _, h, wd = self.shapes[x]
        self.shapes[out] = (n, out_channels, _conv_out(h, kh, sh, pads[0], pads[2], dh),
                            _conv_out(wd, kw, sw, pads[1], pads[3], dw))
        if bias and bias_style == "add":
            rb = self._unary_named("reshape", "reshape2", b, {"shape": [1, out_channels, 1, 1]},
                                   (1, out_channels, 1, 1))
            out1 = f"{base}.tmp_1"
            self.op("elementwise_add", [out, rb], [out1], {"axis": -1}, name=f"{base}.bias_add")
            self.shapes[out1] = self.shapes[out]
            out = out1
        return out

    def batch_norm(self, x: str, epsilon: float = 1e-5, momentum: float = 0.9, act: Optional[str] = None) -> str:
        """``batch_norm_<k>``: scale ``.w_0``, bias ``.b_0``, running mean ``.w_1`` and variance ``.w_2`` (the last
        two are state, not trainable), output ``.tmp_3``; ``act`` appends an activation op."""
        c = self.channels(x)
        base = self.unique("batch_norm")
        scale = self.param(f"{base}.w_0", np.ones(c, np.float32))
        bias = self.param(f"{base}.b_0", np.zeros(c, np.float32))
        mean = self.param(f"{base}.w_1", np.zeros(c, np.float32), trainable=False)
        var = self.param(f"{base}.w_2", np.ones(c, np.float32), trainable=False)
        out = f"{base}.tmp_3"
        self.op("batch_norm", [x, scale, bias, mean, var], [out, mean, var],
                {"epsilon": float(epsilon), "momentum": float(momentum)}, name=base)
        self.shapes[out] = self.shapes[x]
        return self.activation(out, act)

    def conv_bn(self, x: str, out_channels: int, kernel, stride=1, padding=None, groups: int = 1,
                act: Optional[str] = "relu") -> str:
        """conv (no bias) + batch_norm [+ activation], the unit of every BN network here."""
        y = self.conv2d(x, out_channels, kernel, stride, padding, groups=groups, bias=False)
        return self.batch_norm(y, act=act)

    def pool2d(self, x: str, pooling_type: str = "max", ksize=2, stride=None, padding=0,
               global_pooling: bool = False, ceil_mode: bool = False, exclusive: bool = True) -> str:
        n, c, h, w = self.shapes[x]
        if global_pooling:
            kh, kw = (h or 1), (w or 1)
            attrs = {"pooling_type": pooling_type, "ksize": [1, 1], "strides": [1, 1], "paddings": [0, 0, 0, 0],
                     "global_pooling": True, "ceil_mode": False, "exclusive": True}
            return self._unary_named("pool2d", "pool2d", x, attrs, (n, c, 1, 1))
        kh, kw = _pair(ksize)
        sh, sw = _pair(ksize if stride is None else stride)
        pads = _pair(padding) if np.isscalar(padding) or len(padding) == 2 else [int(p) for p in padding]
        if len(pads) == 2:
            pads = [pads[0], pads[1], pads[0], pads[1]]
        if ceil_mode:
            raise NotImplementedError("ceil_mode shapes are not tracked by the builder")
        attrs = {"pooling_type": pooling_type, "ksize": [kh, kw], "strides": [sh, sw], "paddings": pads,
                 "global_pooling": False, "ceil_mode": False, "exclusive": bool(exclusive)}
        out_shape = (n, c, _conv_out(h, kh, sh, pads[0], pads[2]), _conv_out(w, kw, sw, pads[1], pads[3]))
        return self._unary_named("pool2d", "pool2d", x, attrs, out_shape)

    def fc(self, x: str, out_features: int, act: Optional[str] = None, bias: bool = True,
           num_col_dims: int = 1) -> str:
        """Paddle's fc: ``mul`` (x flattened from ``num_col_dims``) + ``elementwise_add`` bias [+ activation].

        Names: ``fc_<k>.w_0`` (in, out), ``fc_<k>.b_0``; ``fc_<k>.tmp_0`` mul, ``.tmp_1`` bias add, ``.tmp_2`` act.
        """
        src = self.shapes[x]
        tail = src[num_col_dims:]
        if any(d is None for d in tail):
            raise ValueError(f"fc input {x!r} has unknown feature dims {src}")
        in_features = int(np.prod(tail))
        base = self.unique("fc")
        w = self.param(f"{base}.w_0", self.xavier_uniform((in_features, out_features), in_features, out_features))
        out = f"{base}.tmp_0"
        self.op("mul", [x, w], [out], {"x_num_col_dims": int(num_col_dims), "y_num_col_dims": 1}, name=base)
        self.shapes[out] = tuple(src[:num_col_dims]) + (out_features,)
        j = 1
        if bias:
            b = self.param(f"{base}.b_0", np.zeros(out_features, np.float32))
            out_b = f"{base}.tmp_{j}"
            self.op("elementwise_add", [out, b], [out_b], {"axis": -1}, name=f"{base}.bias_add")
            self.shapes[out_b] = self.shapes[out]
            out, j = out_b, j + 1
        if act:
            out_a = f"{base}.tmp_{j}"
            attrs = {"threshold": 6.0} if act == "relu6" else {}
            self.op(act, [out], [out_a], attrs, name=f"{base}.{act}")
            self.shapes[out_a] = self.shapes[out]
            out = out_a
        return out

    def embedding(self, ids: str, vocab_size: int, dim: int, padding_idx: Optional[int] = None) -> str:
        """``embedding_<k>``: a ``lookup_table`` over a Xavier-uniform (vocab, dim) table; padding row zero."""
        base = self.unique("embedding")
        table = self.xavier_uniform((vocab_size, dim), vocab_size, dim)
        if padding_idx is not None:
            table[padding_idx] = 0.0
        w = self.param(f"{base}.w_0", table)
        return self.lookup(w, ids, padding_idx, base=base)

    def lookup(self, table: str, ids: str, padding_idx: Optional[int] = None, base: Optional[str] = None) -> str:
        base = base or self.unique("embedding")
        out = f"{base}.tmp_0"
        self.op("lookup_table", [table, ids], [out], {"padding_idx": -1 if padding_idx is None else int(padding_idx)},
                name=base)
        self.shapes[out] = tuple(self.shapes[ids]) + (int(self.shapes[table][1]),)
        return out

    def layer_norm(self, x: str, begin_norm_axis: int = -1, epsilon: float = 1e-5) -> str:
        """``layer_norm_<k>`` over the axes from ``begin_norm_axis`` on: scale ``.w_0``, bias ``.b_0``, output
        ``.tmp_2``."""
        src = self.shapes[x]
        axis = begin_norm_axis % len(src)
        n = int(np.prod(src[axis:]))
        base = self.unique("layer_norm")
        scale = self.param(f"{base}.w_0", np.ones(n, np.float32))
        bias = self.param(f"{base}.b_0", np.zeros(n, np.float32))
        out = f"{base}.tmp_2"
        self.op("layer_norm", [x, scale, bias], [out], {"begin_norm_axis": int(axis), "epsilon": float(epsilon)},
                name=base)
        self.shapes[out] = src
        return out

    # ---- finish ----------------------------------------------------------------------------------
    def build(self, outputs: Sequence[str] | str, meta: Optional[dict] = None) -> Model:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        trainable = [k for k in self.params if k not in self.frozen]
        return Model(self.ops, self.params, self.inputs, outputs, name=self.name, meta=meta,
                     trainable=trainable)


def _broadcast(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for p, q in zip(a, b):
        if p is None or q is None:
            out.append(q if p == 1 else p if q == 1 else (p if p is not None else q))
        elif p == 1:
            out.append(q)
        elif q == 1 or p == q:
            out.append(p)
        else:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


def count_params(model: Model, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those the optimizer updates)."""
    names = model.trainable if trainable_only else model.params
    return int(sum(model.params[k].size for k in names))
