"""Dynamic INT8 matmul: int8 weights, activations quantized at run time from the batch itself (the scheme of
ONNX Runtime's ``DynamicQuantizeMatMul`` / PyTorch's ``quantize_dynamic``). Written by
:func:`refquant.quant.dynamic_activations.quantize_dynamic`; docs/bert.md. Forward only (inference).

``matmul_dynamic_int8(x, packed, col_sum, bias, w_scale) -> y``

* ``x``: float32 (..., K) (``x_num_col_dims`` -1, matmul) or any shape flattened as ``mul`` does
  (``x_num_col_dims`` k: rows ``prod(x.shape[:k])``); ``packed``: ``qgemm.pack_b(q)`` of the int8 (K, N) weights;
  ``col_sum``: int32 ``qgemm.col_sums(q)``; ``bias``: float32 (N) or ``""``; ``w_scale``: float32 (N), the weight
  step per output column (``q * w_scale[n]`` ~ W).
* Activation quantization, **asymmetric uint8 per tensor** (one scale and zero point for the whole input of
  this call, i.e. the batch: ONNX Runtime's ``DynamicQuantizeLinear``): ``lo = min(min(x), 0)``,
  ``hi = max(max(x), 0)`` (float32), ``s_x = (hi - lo) / 255``, ``a_zero = clamp(rint(-lo / s_x), 0, 255)``,
  ``a = clamp(rint(x * (255 / (hi - lo))) + a_zero, 0, 255)`` (float32 multiply, round half to even;
  ``qdirect.quantize_rows``). An all-zero input takes ``s_x = 1``, ``a_zero = 0``.
* ``acc[m, n] = sum_k (a[m, k] - a_zero) * q_w[k, n]`` in int32 (``qgemm.gemm_u8s8`` with ``col_sum``), then
  ``y = float32(acc) * float32(s_x * w_scale[n]) + bias[n]`` (float32 multiply, then float32 add: both in the
  GEMM's f32 epilogue, ``fbias``).

Why asymmetric rather than symmetric s8 (``s_x = max|x| / 127``, codes + 128): on all-MiniLM-L6-v2 the symmetric
scheme gives a mean cosine to FP32 of 0.984, the asymmetric one 0.994 (docs/bert.md): the GELU output feeding
the second FFN matmul is one-signed (>= -0.17), and symmetric codes waste half the range on it. The weights are
symmetric int8 (zero point 0), as in ORT and PyTorch. Both sides of every step (the quantizer and the GEMM) are
the compiled kernels or their NumPy twins, which agree bit for bit; the result does not depend on the thread
count (the per-tensor min / max are exact whatever the order).
"""
from __future__ import annotations

import math

import numpy as np

from .._dispatch import kernel
from ..errors import ShapeError
from ..reference.im2col import MAX_EXTENT
from .nn import _matmul_shape
from .registry import OpContext, attr_int, attr_spec, register

LEVELS = 255


def _kernels():
    """(qdirect, qgemm): the compiled kernels, or their NumPy twins."""
    return kernel("qdirect"), kernel("qgemm")


def _range(x: np.ndarray) -> tuple[float, float]:
    """(min, max) of a float32 array in one pass (``qgemm.range_f32``), (nan, nan) if it holds NaN or inf."""
    return kernel("qgemm").range_f32(np.ascontiguousarray(x, dtype=np.float32))


def activation_params(x2: np.ndarray) -> tuple[np.float32, np.float32, int]:
    """``(s_x, multiplier, a_zero)`` of the per-tensor asymmetric uint8 quantizer (module docstring):
    ``s_x = (hi - lo) / 255``, the quantizer's multiplier ``255 / (hi - lo)`` and the zero point."""
    if x2.size == 0:
        return np.float32(1), np.float32(1), 0
    lo, hi = _range(x2)
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("matmul_dynamic_int8: the input holds NaN or inf")
    span = np.float32(hi - lo)
    if not span > 0:
        return np.float32(1), np.float32(1), 0
    s_x = np.float32(span / np.float32(LEVELS))
    zero = int(np.clip(np.rint(-lo / s_x), 0, LEVELS))
    return s_x, np.float32(np.float32(LEVELS) / span), zero


def _rows(attrs, x):
    k = int(attrs["K"])
    xc = int(attrs.get("x_num_col_dims", -1))
    if xc < 0:
        if x.shape[-1] != k:
            raise ShapeError(f"matmul_dynamic_int8: input {x.shape} has last dim {x.shape[-1]}, weights K={k}")
        lead = tuple(x.shape[:-1])
    else:
        lead = tuple(x.shape[:xc])
        if math.prod(x.shape[xc:]) != k:
            raise ShapeError(f"matmul_dynamic_int8: input {x.shape} flattened from dim {xc} does not give K={k}")
    return lead, k


def matmul_dynamic(x, packed, col_sum, bias, w_scale, K, N, x_num_col_dims=-1):
    """The op's arithmetic (see the module docstring) as a function: (..., K) float32 -> (..., N) float32."""
    attrs = {"K": K, "N": N, "x_num_col_dims": x_num_col_dims}
    lead, k = _rows(attrs, x)
    n = int(N)
    m = math.prod(lead)
    x2 = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(m, k))
    if m == 0:
        return np.zeros(lead + (n,), np.float32)
    s_x, mult, a_zero = activation_params(x2)
    direct, gemm = _kernels()
    a = direct.quantize_rows(x2, float(mult), a_zero, 0, LEVELS)
    scale = (s_x * np.asarray(w_scale, dtype=np.float32)).astype(np.float32)
    y = gemm.gemm_u8s8(a, packed, k, n, a_zero=a_zero, col_sum=col_sum, scale=scale, out_dtype="f32",
                       fbias=None if bias is None else np.asarray(bias, dtype=np.float32))
    return y.reshape(lead + (n,))


def _shape(attrs, x, *rest):
    xc = int(attrs.get("x_num_col_dims", -1))
    lead = tuple(x[:-1]) if xc < 0 else tuple(x[:xc])
    return (lead + (int(attrs["N"]),),)


def _check(attrs, inputs):
    attr_int(attrs, "K", lo=1, hi=MAX_EXTENT)
    attr_int(attrs, "N", lo=1, hi=MAX_EXTENT)
    attr_int(attrs, "x_num_col_dims", -1, -1, 64)


def _memory_order(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(base, back)``: x's axes sorted by decreasing stride, ``base.transpose(back)`` is x. When x is a transposed
    view of a contiguous array (attention's heads) base is that array, so x is quantized without a float copy;
    otherwise base is a contiguous copy."""
    order = np.argsort([-st for st in x.strides], kind="stable")
    base = x.transpose(order)
    if not base.flags.c_contiguous:
        order, base = np.arange(x.ndim), np.ascontiguousarray(x)
    return base, np.argsort(order)


def _symmetric_int8(y: np.ndarray, qdirect) -> tuple[np.ndarray, np.float32]:
    """``(q int8, s_y)``, per tensor symmetric: ``t = max|y|``, ``s_y = t / 127``, ``q = clamp(rint(y * (127 / t)),
    -127, 127)`` (float32 multiply, half to even), computed as the uint8 codes ``q + 128`` (``quantize_rows`` with
    zero 128, range [1, 255]) whose top bit flipped is ``q``. An all-zero input takes ``s_y = 1``."""
    base, back = _memory_order(y)
    lo, hi = _range(base)
    t = np.float32(max(-lo, hi, 0.0))
    if not np.isfinite(t):
        raise ValueError("bmm_dynamic_int8: the input holds NaN or inf")
    if not t > 0:
        return np.zeros(y.shape, np.int8), np.float32(1)
    codes = qdirect.quantize_rows(base.reshape(-1, base.shape[-1]), float(np.float32(127) / t), 128, 1, 255)
    codes = np.bitwise_xor(codes, np.uint8(0x80), out=codes).view(np.int8)
    return codes.reshape(base.shape).transpose(back), np.float32(t / np.float32(127))


def bmm_dynamic(x, y, trans_y=False, alpha=1.0, add=None):
    """``alpha * matmul(x, y) + add`` (NumPy broadcasting of the batch dims, ``y`` transposed when ``trans_y``) of
    two float activations in INT8: x asymmetric uint8 per tensor (as ``matmul_dynamic``), y symmetric int8 per
    tensor (``_symmetric_int8``), ``acc = (a - a_zero) @ q_y`` per batch item in int32, ``out = float32(acc) *
    (float32(s_x * s_y) * float32(alpha))`` (``qgemm.gemm_u8s8_batch``), then ``+ add`` (float32, the
    ``elementwise_add`` (axis -1) it replaces: the attention mask, added in the kernel when it broadcasts into the
    output, else by that op)."""
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    trans_y = bool(trans_y) and y.ndim > 1
    xm, ym = (x[None] if x.ndim == 1 else x), (y[:, None] if y.ndim == 1 else y)
    (m, k), (kb, n) = xm.shape[-2:], (ym.shape[-1:-3:-1] if trans_y else ym.shape[-2:])
    if k != kb:
        raise ShapeError(f"bmm_dynamic_int8: x {x.shape} and y {y.shape} (trans_y={trans_y}) do not multiply")
    batch = np.broadcast_shapes(xm.shape[:-2], ym.shape[:-2])
    final = batch + (m,) * (x.ndim > 1) + (n,) * (y.ndim > 1)   # np.matmul drops the dim of a 1-D operand
    if 0 in batch + (m, k, n):
        return _add(np.zeros(final, np.float32), add)
    direct, gemm = _kernels()
    base, back = _memory_order(xm)
    s_x, mult, a_zero = activation_params(base)
    a = direct.quantize_rows(base.reshape(-1, base.shape[-1]), float(mult), a_zero, 0, LEVELS)
    a = a.reshape(base.shape).transpose(back)
    if k > 1 and a.strides[-1] != 1:
        a = np.ascontiguousarray(a)
    qy, s_y = _symmetric_int8(ym, direct)
    a = np.broadcast_to(a, batch + (m, k))
    qy = np.broadcast_to(qy, batch + ym.shape[-2:])
    step = np.float32(s_x * s_y) * np.float32(alpha)
    fused = (add is not None and add.dtype == np.float32 and x.ndim > 1 and y.ndim > 1
             and add.ndim <= len(final) and all(d in (1, e) for d, e in zip(add.shape[::-1], final[::-1])))
    out = gemm.gemm_u8s8_batch(a, qy, a_zero=a_zero, scale=float(step), trans_b=trans_y,
                               add=add if fused else None)
    return out.reshape(final) if fused else _add(out.reshape(final), add)


def _add(out, add):
    """``elementwise_add(out, add)`` (axis -1), or out when add is None."""
    if add is None:
        return out
    from .registry import get_op
    return get_op("elementwise_add").forward(OpContext(False, None), {"axis": -1}, out, add)


def _bmm_shape(attrs, x, y, add=None):
    (out,) = _matmul_shape(attrs, x, y)
    return (out,) if add is None else (tuple(np.broadcast_shapes(out, tuple(add))),)

@register("bmm_dynamic_int8", int8=True, shape=_bmm_shape, check=attr_spec(trans_y="bool", alpha="float"))
def bmm_dynamic_int8(ctx, attrs, x, y, add=None):
    """alpha * (float x (..., M, K) @ float y (..., K, N)) (y^T with trans_y) [+ add] -> float32 (..., M, N), both
    activations quantized per call (x asymmetric uint8, y symmetric int8, per tensor; ORT's DynamicQuantizeLinear
    + MatMulInteger on attention's Q K^T and P V), a batch of int8 GEMMs, the f32 epilogue s_x * s_y * alpha, and
    the optional addend (the attention mask) of a folded elementwise_add."""
    return bmm_dynamic(x, y, attrs.get("trans_y", False), attrs.get("alpha", 1.0), add)



@register("matmul_dynamic_int8", int8=True, shape=_shape, check=_check)
def matmul_dynamic_int8(ctx, attrs, x, packed, col_sum, bias=None, w_scale=None):
    """float (..., K) x int8 packed (K, N) -> float32 (..., N): the activations quantized per call (asymmetric
    uint8 per tensor with a zero point, ORT's DynamicQuantizeLinear), the int8 GEMM, the f32 epilogue
    s_x * w_scale[n], + bias."""
    if w_scale is None:
        raise ShapeError("matmul_dynamic_int8: needs w_scale (5th input)")
    return matmul_dynamic(x, packed, col_sum, bias, w_scale, int(attrs["K"]), int(attrs["N"]),
                          int(attrs.get("x_num_col_dims", -1)))
