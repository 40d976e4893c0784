"""Is an INT8 runtime exact? Its quantized tensors, op by op, against refquant's exact integer reference of the
same quantized graph.

The foreign runtime (ONNX Runtime) runs the QDQ model at its default optimization level, so the fused kernels
(QLinearConv, QLinearMatMul, int8 MaxPool, ...) are what is measured, with the output of every QuantizeLinear
(the quantized tensors) added as a graph output. Only Q outputs are exposed: a DequantizeLinear output that is a
graph output would stop ONNX Runtime from fusing it into the op that follows. :func:`fused_ops` records the
optimized graph with and without the extra outputs, so the report can say that exposing them changed nothing.

The reference runs the imported QDQ graph (:mod:`refquant.ops.affine`) op by op:

* a conv2d / depthwise_conv2d / mul / matmul whose inputs are dequantized integers (a DequantizeLinear of a
  quantized tensor, a DequantizeLinear of an integer weight) is computed from the integers:
  ``acc = sum (q_x - zp_x)(q_w - zp_w)`` exactly (the products and every partial sum are integers below 2**53,
  so a float64 GEMM is exact; int64 otherwise), an int32 bias quantized with the scale ``s_x s_w`` is added to
  ``acc`` as integer kernels do, then ``y = acc * (s_x * s_w[c])`` in float64 (plus any float bias);
* the QuantizeLinear after it rounds ``y / s_y`` half to even in float64;
* every other op runs as the float graph.

Each quantized tensor is judged locally: the reference computes it from the *foreign* runtime's quantized inputs,
so one inexact op does not make every later tensor differ. Differences are in LSB units (integer steps); SQNR is
of the dequantized tensor against the FP32 model's tensor.

Likely causes are tested on the first failing tensor of each exact-path op, by recomputing it under a hypothesis
and seeing whether that reproduces the foreign integers within the tolerance:

* ``u8 x s8 pair saturation``: AVX2's ``vpmaddubsw`` multiplies unsigned activation bytes by signed weight bytes
  and adds adjacent pairs in int16 with saturation; ONNX Runtime's u8s8 kernels on AVX2 use it unless
  ``session.x64quantprecision`` is "1". Both K orders of a convolution (NCHW: channel, row, column; NHWC: row,
  column, channel) are tried.
* ``rounding half away from zero`` instead of half to even in the requantization;
* ``activation zero point ignored`` in the accumulator;
* ``per-tensor weight scale``: the first channel's scale used for every channel.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, UnsupportedOpError
from ..ops import OpContext, get_op
from ..ops.affine import INT_RANGES
from . import qdq

GEMM_OPS = ("conv2d", "depthwise_conv2d", "mul", "matmul")
_EXACT_F64 = 2.0 ** 53


@dataclass
class OpRow:
    """One quantized tensor of the foreign runtime against the reference."""
    tensor: str
    op: str
    op_type: str
    path: str                    # "exact integer" or "float"
    elements: int = 0
    max_lsb: int = 0
    frac_diff: float = 0.0
    sqnr_foreign: Optional[float] = None
    sqnr_reference: Optional[float] = None
    ok: bool = True
    cause: Optional[str] = None

    def to_json(self) -> dict:
        return asdict(self)


# ---- the foreign runtime -------------------------------------------------------------------------------------
def _session_options(session_options):
    import onnxruntime as ort
    if session_options is None:
        so = ort.SessionOptions()
    elif isinstance(session_options, dict):
        so = ort.SessionOptions()
        for k, v in session_options.items():
            so.add_session_config_entry(str(k), str(v))
    elif isinstance(session_options, ort.SessionOptions):
        return session_options
    else:
        raise ArgumentTypeError(f"check: session_options must be an onnxruntime.SessionOptions or a dict of "
                                f"session config entries, got {type(session_options).__name__}")
    so.log_severity_level = 3
    return so


def expose(proto, names: list[str], dtypes: dict):
    """A copy of ``proto`` with ``names`` added as graph outputs (element types from ``dtypes``)."""
    from onnx import helper
    out = type(proto)()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    for n in names:
        if n not in have:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[n]))
            out.graph.output.append(helper.make_tensor_value_info(n, elem, None))
    return out


def fused_ops(proto) -> dict:
    """Op type counts of the graph ONNX Runtime runs after its default optimizations."""
    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath)
    counts: dict = {}
    for n in opt.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def fp32_runner(proto):
    """``runner(feed, names) -> {name: array}``: the FP32 tensors as ONNX Runtime computes them with every graph
    optimization off, as its calibrators run the model (``onnxruntime/quantization/calibrate.py``)."""
    import onnxruntime as ort
    cache: dict = {}

    def runner(feed, names):
        key = tuple(names)
        if key not in cache:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            exposed = expose(proto, list(names), {n: np.float32 for n in names})
            cache.clear()
            cache[key] = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
        sess = cache[key]
        inputs = {i.name for i in sess.get_inputs()}
        vals = sess.run(list(names), {k: v for k, v in feed.items() if k in inputs})
        return dict(zip(names, vals))
    return runner


#: Op types that only move data; exposing a tensor may add one (a Transpose back to NCHW) without changing what
#: the quantized kernels compute.
LAYOUT_OPS = ("Transpose", "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze")


def kernel_ops(counts: dict) -> dict:
    """``fused_ops`` counts without the layout-only ops."""
    return {k: v for k, v in counts.items() if k not in LAYOUT_OPS}


def run_onnxruntime(proto, feeds, names: list[str], dtypes: dict, session_options=None) -> list[dict]:
    """``[{name: array}]`` per feed: every tensor of ``names`` as ONNX Runtime computes it."""
    import onnxruntime as ort
    exposed = expose(proto, names, dtypes)
    sess = ort.InferenceSession(exposed.SerializeToString(), _session_options(session_options),
                                providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    results = []
    for feed in feeds:
        vals = sess.run(outs, {k: v for k, v in feed.items() if k in inputs})
        results.append({n: v for n, v in zip(outs, vals) if n in set(names)})
    return results


# ---- the exact reference ---------------------------------------------------------------------------------------
@dataclass
class _IntSource:
    """A GEMM input as integers: ``q`` (from env at run time when ``const`` is None), scale, zero point."""
    qname: str
    const: Optional[np.ndarray]
    scale: np.ndarray       # float32, 1-D
    zero_point: np.ndarray  # int64, 1-D
    dtype: str
    axis: Optional[int]


def _int_sources(model, proto) -> tuple[dict, dict]:
    """``({tensor: _IntSource}, {param: float64 value})`` for every DequantizeLinear output of the model: its
    integer source, and (for constant ones) the dequantized value in float64."""
    consts = qdq.constants(proto)
    sources, exact = {}, {}
    for out, p in qdq.dequantize_nodes(proto).items():
        q = consts.get(p.input)
        if q is None and out in model.params:
            q = _recover(model.params[out], p)          # a quantized constant the importer folded
        if q is not None:
            q = np.asarray(q)
            if q.dtype.kind not in "iu":
                continue
            zp = p.zero_point
            if p.per_channel:
                shape = [1] * q.ndim
                shape[p.axis % q.ndim] = -1
                s64, zp_b = p.scale.astype(np.float64).reshape(shape), zp.reshape(shape)
            else:
                s64, zp_b = np.float64(p.scale[0]), zp[0]
            exact[out] = (q.astype(np.int64) - zp_b) * s64
        sources[out] = _IntSource(p.input, q, p.scale, p.zero_point, p.dtype, p.axis)
    return sources, exact


def _recover(value, p) -> Optional[np.ndarray]:
    """The integers behind a dequantized constant ``value = float32((q - zp) * s)``: ``rint(value / s) + zp``
    (exact for 8- and 16-bit q), or None when they do not dequantize back to ``value`` bit for bit."""
    value = np.asarray(value)
    if value.dtype != np.float32 or p.dtype not in ("uint8", "int8", "uint16", "int16"):
        return None
    s, zp = p.scale, p.zero_point
    if p.per_channel:
        if value.ndim == 0 or p.axis is None or value.shape[p.axis % value.ndim] != s.size:
            return None
        shape = [1] * value.ndim
        shape[p.axis % value.ndim] = -1
        s, zp = s.reshape(shape), zp.reshape(shape)
    else:
        s, zp = s[0], zp[0]
    lo, hi = INT_RANGES[p.dtype]
    q = np.clip(np.rint(value.astype(np.float64) / s) + zp, lo, hi).astype(p.dtype)
    back = ((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)
    return q if np.array_equal(back, value) else None


def _const_weight(src: _IntSource, param: np.ndarray) -> Optional[np.ndarray]:
    """The integer weight behind a folded parameter: ``src.const`` (or its transpose, for a Gemm with transB)
    when it dequantizes to exactly the parameter, else None."""
    p = np.asarray(param)
    for q, transposed in ((src.const, False), (src.const.T if src.const.ndim == 2 else None, True)):
        if q is None or q.shape != p.shape:
            continue
        s, zp = src.scale, src.zero_point
        if s.size > 1:
            axis = src.axis % q.ndim
            axis = (1 - axis) if transposed else axis
            shape = [1] * q.ndim
            shape[axis] = -1
            s, zp = s.reshape(shape), zp.reshape(shape)
        else:
            s, zp = s[0], zp[0]
        if np.array_equal(((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32), p):
            return q
    return None


def _patches(x, kh, kw, strides, pads, dilations, pad_value):
    """(N, OH, OW, C, kh, kw) windows of an NCHW array padded with ``pad_value`` (a view where possible)."""
    from numpy.lib.stride_tricks import sliding_window_view
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    span = ((kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1)
    win = sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    return win.transpose(0, 2, 3, 1, 4, 5)


class _Gemm:
    """One conv / matmul of the quantized graph as integers: ``a`` (M, G, K) and ``b`` (G, K, Ng) in raw integer
    values, their zero points, the per-output-column scale product and the output layout."""

    def __init__(self, op, x_src, qx, w_src, qw):
        self.op, self.x_src, self.w_src = op, x_src, w_src
        zx = int(x_src.zero_point[0])
        if op.type in ("conv2d", "depthwise_conv2d"):
            a = op.attrs
            g = int(a.get("groups", 1))
            cout, cg, kh, kw = qw.shape
            pads = list(a.get("paddings", [0, 0, 0, 0]))
            if len(pads) == 2:
                pads = [pads[0], pads[1], pads[0], pads[1]]
            p = _patches(qx, kh, kw, a.get("strides", [1, 1]), pads, a.get("dilations", [1, 1]), zx)
            n, oh, ow = p.shape[:3]
            self.shape_nhwc = (n, oh, ow, cout)
            self.patches = p.reshape(n * oh * ow, g, cg, kh, kw)           # order (C, kh, kw) per group
            self.weights = qw.reshape(g, cout // g, cg, kh, kw)
            self.kind = "conv"
            self.w_axis_size = cout
        else:
            if op.type == "mul":
                xc = int(op.attrs.get("x_num_col_dims", 1))
                self.out_lead = qx.shape[:xc]
                a2 = qx.reshape(int(np.prod(qx.shape[:xc])), -1)
                self.a = a2[:, None, :]
                self.b = qw.reshape(qw.shape[0], -1)[None]
            else:
                if qx.ndim != 2 or qw.ndim != 2:
                    raise UnsupportedOpError("batched matmul")
                xa = qx.T if op.attrs.get("trans_x") else qx
                wb = qw.T if op.attrs.get("trans_y") else qw
                self.out_lead = xa.shape[:1]
                self.a, self.b = xa[:, None, :], wb[None]
            self.kind = "gemm"
            self.w_axis_size = self.b.shape[2]

    def operands(self, order: str = "chw"):
        """``(a, b)``: (M, G, K) and (G, K, Ng) raw integers; for a conv, K in ``order`` "chw" or "hwc"."""
        if self.kind != "conv":
            return self.a, self.b
        p, w = self.patches, self.weights
        if order == "hwc":
            p, w = p.transpose(0, 1, 3, 4, 2), w.transpose(0, 1, 3, 4, 2)
        m, g = p.shape[:2]
        return p.reshape(m, g, -1), w.reshape(g, w.shape[1], -1).transpose(0, 2, 1)

    def accumulate(self, *, zx=None, saturate_order: Optional[str] = None) -> np.ndarray:
        """int64 (M, Nout): sum_k (a - zx)(b - zw), exactly; with ``saturate_order`` as AVX2's u8 x s8 path
        computes it (raw products summed in adjacent K pairs saturated to int16, then zero points corrected)."""
        zx = int(self.x_src.zero_point[0]) if zx is None else zx
        zw = self.w_src.zero_point.astype(np.int64)
        a, b = self.operands(saturate_order or "chw")
        g, k, ng = b.shape
        zw_cols = (zw if zw.size > 1 else np.full(g * ng, zw[0])).reshape(g, 1, ng)
        if saturate_order is None:
            ad = a.astype(np.int64) - zx
            bd = b.astype(np.int64) - zw_cols
            bound = k * int(np.abs(ad).max(initial=0)) * int(np.abs(bd).max(initial=0))
            if bound < _EXACT_F64:
                acc = np.rint(np.matmul(ad.transpose(1, 0, 2).astype(np.float64), bd.astype(np.float64)))
            else:
                acc = np.matmul(ad.transpose(1, 0, 2), bd)
            acc = acc.astype(np.int64)
        else:
            ai, bi = a.astype(np.int32), b.astype(np.int32)
            if k % 2:
                ai = np.concatenate([ai, np.zeros(ai.shape[:2] + (1,), np.int32)], axis=2)
                bi = np.concatenate([bi, np.zeros((g, 1, ng), np.int32)], axis=1)
            acc = np.zeros((g, a.shape[0], ng), np.int64)
            for j in range(0, ai.shape[2], 2):
                pair = (ai[:, :, j].T[:, :, None] * bi[:, j][:, None, :]
                        + ai[:, :, j + 1].T[:, :, None] * bi[:, j + 1][:, None, :])
                acc += np.clip(pair, -32768, 32767)
            # zero-point corrections: -zx * colsum(b) - zw * rowsum(a) + k zx zw
            colsum = b.astype(np.int64).sum(axis=1)[:, None, :]
            rowsum = a.astype(np.int64).sum(axis=2).T[:, :, None]
            acc = acc - zx * colsum - zw_cols * rowsum + k * zx * zw_cols
        return acc.transpose(1, 0, 2).reshape(acc.shape[1], -1)     # (M, G * Ng)

    def to_output(self, y2d: np.ndarray) -> np.ndarray:
        """(M, Nout) back to the op's output layout."""
        if self.kind == "conv":
            return y2d.reshape(self.shape_nhwc).transpose(0, 3, 1, 2)
        return y2d.reshape(tuple(self.out_lead) + (y2d.shape[1],))


def _requantize(y, qp) -> np.ndarray:
    """The QuantizeLinear of a float64 tensor in float64: saturate(round_half_even(y / s) + zp)."""
    s, zp, lo, hi = _q_args(qp, y.ndim)
    return np.clip(np.rint(y / s) + zp, lo, hi).astype(np.int64)


def _q_args(qp, ndim):
    lo, hi = INT_RANGES[qp.dtype]
    s = qp.scale.astype(np.float64)
    zp = qp.zero_point.astype(np.int64)
    if s.size > 1:
        shape = [1] * ndim
        shape[qp.axis % ndim] = -1
        return s.reshape(shape), zp.reshape(shape), lo, hi
    return s[0], zp[0], lo, hi


def _sqnr(ref, x) -> tuple[float, float]:
    ref = np.asarray(ref, np.float64)
    return float(np.sum(ref * ref)), float(np.sum((ref - np.asarray(x, np.float64)) ** 2))


def _db(signal: float, noise: float) -> Optional[float]:
    if signal == 0:
        return None
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise)


class Reference:
    """The exact reference of a QDQ model (module docstring); :meth:`compare` judges foreign tensors."""

    def __init__(self, qmodel, proto, tol_lsb: int = 1):
        self.model, self.proto, self.tol = qmodel, proto, tol_lsb
        self.sources, self.exact_params = _int_sources(qmodel, proto)
        self.qparams = {q.output: q for q in qdq.quantize_nodes(proto)}
        self.producer = {}
        for op in qmodel.ops:
            for o in op.outputs:
                self.producer[o] = op

    def _gemm(self, op, env) -> Optional[_Gemm]:
        if op.type not in GEMM_OPS or len(op.inputs) < 2:
            return None
        xs, ws = self.sources.get(op.inputs[0]), self.sources.get(op.inputs[1])
        if xs is None or ws is None or xs.scale.size != 1 or (xs.const is None and xs.qname not in env):
            return None
        qx = xs.const if xs.const is not None else env[xs.qname]
        if ws.const is not None:
            qw = _const_weight(ws, self.model.params.get(op.inputs[1], env.get(op.inputs[1])))
        else:
            qw = env.get(ws.qname)
        if qw is None or qx is None:
            return None
        try:
            return _Gemm(op, xs, np.asarray(qx), ws, np.asarray(qw))
        except UnsupportedOpError:
            return None

    def _scales(self, gemm: _Gemm) -> np.ndarray:
        sx = np.float64(gemm.x_src.scale[0])
        sw = gemm.w_src.scale.astype(np.float64)
        n = gemm.w_axis_size
        return sx * (sw if sw.size > 1 else np.full(n, sw[0]))

    def _exact_output(self, gemm: _Gemm, op, env, acc) -> np.ndarray:
        scales = self._scales(gemm)
        bias_int, bias_f = None, None
        if op.type in ("conv2d", "depthwise_conv2d") and len(op.inputs) > 2 and op.inputs[2]:
            bsrc = self.sources.get(op.inputs[2])
            if bsrc is not None and bsrc.const is not None and bsrc.dtype == "int32" and \
                    np.array_equal(np.broadcast_to(bsrc.scale, scales.shape), scales.astype(np.float32)) and \
                    not bsrc.zero_point.any():
                bias_int = bsrc.const.astype(np.int64).reshape(-1)
            else:
                bias_f = np.asarray(self.exact_params.get(op.inputs[2], env[op.inputs[2]]), np.float64)
        if bias_int is not None:
            acc = acc + bias_int
        y = acc * scales
        if bias_f is not None:
            y = y + bias_f.reshape(-1)
        return gemm.to_output(y)

    def compare(self, feed: dict, foreign: dict, fp32: dict, rows: dict, fp32_names: dict) -> None:
        """Run the reference on one feed, judging every quantized tensor ``foreign`` holds; accumulate into
        ``rows`` (by tensor). ``fp32``: the FP32 model's tensors by name; ``fp32_names``: Q output -> FP32 name."""
        from ..executor import _check_feeds
        env = dict(self.model.params)
        env.update(_check_feeds(self.model, feed))
        exact64 = set()
        gemms = {}
        for op in self.model.ops:
            opdef = get_op(op.type, op.name)
            gemm = self._gemm(op, env)
            if gemm is not None:
                acc = gemm.accumulate()
                out = self._exact_output(gemm, op, env, acc)
                env[op.outputs[0]] = out
                exact64.add(op.outputs[0])
                gemms[op.outputs[0]] = (gemm, acc)
                continue
            if op.type == "quantize_affine" and op.inputs[0] in exact64:
                qp = self.qparams.get(op.outputs[0])
                env[op.outputs[0]] = _requantize(env[op.inputs[0]], qp).astype(qp.dtype)
            else:
                args = [env[n] if n else None for n in op.inputs]
                if any(n in exact64 for n in op.inputs):
                    args = [self.exact_params.get(n, a) if a is not None and np.asarray(a).dtype == np.float32
                            else a for n, a in zip(op.inputs, args)]
                    args = [np.asarray(a, np.float64) if a is not None and np.asarray(a).dtype.kind == "f" else a
                            for a in args]
                res = opdef.forward(OpContext(False, None), op.attrs, *args)
                res = res if isinstance(res, tuple) else (res,)
                for name, v in zip(op.outputs, res):
                    if name:
                        env[name] = v
                        if any(n in exact64 for n in op.inputs) and np.asarray(v).dtype == np.float64:
                            exact64.add(name)
            if op.type == "quantize_affine" and op.outputs[0] in foreign:
                self._judge(op, env, foreign, fp32, rows, fp32_names, gemms)
                env[op.outputs[0]] = np.asarray(foreign[op.outputs[0]])  # later ops see the foreign tensor

    def _judge(self, op, env, foreign, fp32, rows, fp32_names, gemms):
        name = op.outputs[0]
        ref = np.asarray(env[name]).astype(np.int64)
        got = np.asarray(foreign[name]).astype(np.int64)
        src = self.producer.get(op.inputs[0])
        via = gemms.get(op.inputs[0])
        row = rows.get(name)
        if row is None:
            row = rows[name] = OpRow(name, src.name if src else op.inputs[0], src.type if src else "input",
                                     "exact integer" if via else "float")
            row._sig = [0.0, 0.0, 0.0]
        if ref.shape != got.shape:
            row.ok, row.cause = False, f"shape {got.shape} differs from the reference's {ref.shape}"
            return
        diff = np.abs(ref - got)
        mx = int(diff.max(initial=0))
        row.elements += ref.size
        row.max_lsb = max(row.max_lsb, mx)
        row._ndiff = getattr(row, "_ndiff", 0) + int(np.count_nonzero(diff))
        row.frac_diff = row._ndiff / row.elements
        ref_fp = fp32.get(fp32_names.get(name))
        qp = self.qparams[name]
        if ref_fp is not None and np.shape(ref_fp) == got.shape:
            s, zp, _, _ = _q_args(qp, got.ndim)
            sig, n_f = _sqnr(ref_fp, (got - zp) * s)
            _, n_r = _sqnr(ref_fp, (ref - zp) * s)
            row._sig[0] += sig
            row._sig[1] += n_f
            row._sig[2] += n_r
            row.sqnr_foreign, row.sqnr_reference = _db(row._sig[0], row._sig[1]), _db(row._sig[0], row._sig[2])
        if mx > self.tol:
            row.ok = False
            if via is not None and row.cause is None:
                row.cause = self._diagnose(via, op, env, got, qp)

    def _diagnose(self, via, op, env, got, qp) -> str:
        gemm, acc = via
        src_op = self.producer[op.inputs[0]]
        tries = []
        if gemm.x_src.dtype == "uint8" and gemm.w_src.dtype == "int8":
            for order in (("chw", "hwc") if gemm.kind == "conv" else ("chw",)):
                label = "u8 x s8 pair saturation (AVX2 vpmaddubsw" + (
                    f", K order {'channel, row, column' if order == 'chw' else 'row, column, channel'})"
                    if gemm.kind == "conv" else ")")
                tries.append((label, lambda o=order: self._exact_output(gemm, src_op, env,
                                                                        gemm.accumulate(saturate_order=o))))
        tries.append(("rounding half away from zero", None))
        tries.append(("activation zero point ignored",
                      lambda: self._exact_output(gemm, src_op, env, gemm.accumulate(zx=0))))
        if gemm.w_src.scale.size > 1:
            tries.append(("per-tensor weight scale (first channel's)", "per_tensor"))
        for label, make in tries:
            if make is None:
                y = self._exact_output(gemm, src_op, env, acc)
                s, zp, lo, hi = _q_args(qp, y.ndim)
                t = y / s
                q = np.clip(np.sign(t) * np.floor(np.abs(t) + 0.5) + zp, lo, hi).astype(np.int64)
            elif make == "per_tensor":
                y = self._exact_output(gemm, src_op, env, acc)
                ratio = gemm.w_src.scale[0].astype(np.float64) / gemm.w_src.scale.astype(np.float64)
                shape = [1] * y.ndim
                shape[1 if gemm.kind == "conv" else -1] = -1
                q = _requantize(y * ratio.reshape(shape), qp)
            else:
                q = _requantize(make(), qp)
            if q.shape == got.shape and int(np.abs(q - got).max(initial=0)) <= self.tol:
                return label
        return "not explained by saturation, rounding, zero point or per-tensor scale"


def check_runtime(fp32_model, quant_model, proto, feeds, *, runtime: str = "onnxruntime", tol_lsb: int = 1,
                  session_options=None, fp32_names: Optional[dict] = None, fp32_runner=None
                  ) -> tuple[list[OpRow], dict]:
    """Rows of every quantized tensor (graph order) and notes (``fused_ops`` with and without the exposed
    tensors). ``fp32_names``: Q output -> FP32 tensor (for SQNR); ``fp32_runner(feed, names)`` computes them
    (default: refquant's executor on ``fp32_model``)."""
    if runtime != "onnxruntime":
        raise ArgumentError(f"check: unknown runtime {runtime!r}: the op-by-op check runs QDQ ONNX models on "
                            f"'onnxruntime' (a Paddle model's scales are checked with runtime 'none')")
    if isinstance(tol_lsb, bool) or not isinstance(tol_lsb, (int, np.integer)) or tol_lsb < 0:
        raise ArgumentError(f"check: tol_lsb must be an int >= 0, got {tol_lsb!r}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ArgumentError("check: the runtime check needs the onnxruntime package (pip install onnxruntime); "
                            "runtime=None (--runtime none) checks the scales only") from None
    qnodes = qdq.quantize_nodes(proto)
    names = [q.output for q in qnodes]
    dtypes = {q.output: q.dtype for q in qnodes}
    foreign = run_onnxruntime(proto, feeds, names, dtypes, session_options)
    notes = {"fused_ops": fused_ops(proto), "fused_ops_exposed": fused_ops(expose(proto, names, dtypes))}
    ref = Reference(quant_model, proto, tol_lsb)
    fp32_names = fp32_names or {}
    wanted = sorted({v for v in fp32_names.values() if v})
    rows: dict = {}
    for feed, got in zip(feeds, foreign):
        if not wanted:
            fp32 = {}
        elif fp32_runner is not None:
            fp32 = fp32_runner(feed, wanted)
        else:
            fp32 = fp32_model.run(feed, outputs=wanted)
        ref.compare(feed, got, fp32, rows, fp32_names)
    ordered = [rows[n] for n in names if n in rows]
    for r in ordered:
        for attr in ("_sig", "_ndiff"):
            if hasattr(r, attr):
                delattr(r, attr)
    return ordered, notes
